"""The HTML report in a real headless browser (Debian's chromium): it loads without console errors, every
image decodes, every canvas draws, and hovering a qubit on the interactive map shows its id and β.

Skips when no chromium is installed (``.ci/run`` installs Debian's package when it can).
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import qasa
from qasa.fitting import fit
from qasa.report import build_report
from qasa.virtual import VirtualQPU

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]

#: Runs after the page's own scripts: decodes images, reads canvases back, hovers a qubit (the
#: same mousemove handler a user triggers), zooms with the wheel and hovers again.
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const out = {images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])};
  out.canvases = Array.from(document.querySelectorAll('canvas')).map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = new Set();
    for (let k = 0; k < d.length; k += 4 * 7) seen.add((d[k] << 16) | (d[k + 1] << 8) | d[k + 2]);
    return [c.width, c.height, seen.size];
  });
  const m = window.qasaMaps[0];
  const hover = () => {
    const p = m.screenOf(TARGET);
    m.canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: p.x, clientY: p.y, bubbles: true}));
    return [m.tip.getAttribute('data-qubit'), m.tip.textContent, m.tip.style.display, m.s];
  };
  out.hover = hover();
  const p = m.screenOf(TARGET);
  m.canvas.dispatchEvent(new WheelEvent('wheel', {deltaY: -600, clientX: p.x, clientY: p.y, bubbles: true,
                                                  cancelable: true}));
  out.zoomed = hover();
  document.title = 'PROBE' + JSON.stringify(out);
}, 50));
</script></body>"""


def test_report_opens_draws_and_shows_a_hovered_qubit(tmp_path):
    qpu = VirtualQPU(seed=1, topology_shape=[4], broken_nodes=[])
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=2000, seed=1), qpu)
    fits = fit(ds, "qasa")
    out = tmp_path / "report"
    build_report(ds, fits, out)
    good = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    target = int(good.index[len(good) // 2])
    page = (out / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE.replace("TARGET", str(target))))
    user = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user}", "--virtual-time-budget=5000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r"<title>PROBE(.*?)</title>", dom.stdout)
    assert match, "the page did not finish loading"
    res = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    # every figure decodes, every canvas (a map and a colour bar per mapped parameter) has drawn colours
    assert len(res["images"]) == page.count("<img ") >= 5
    assert all(done and w > 100 and h > 100 for done, w, h in res["images"])
    maps = page.count('class="qmap"')
    assert maps >= 1 and len(res["canvases"]) == 2 * maps and all(colours > 5 for _, _, colours in res["canvases"])
    # the hovered qubit's id and β (every parameter is in the hover), as the fit table has them
    for qubit, text, shown, _ in (res["hover"], res["zoomed"]):
        assert qubit == str(target) and shown == "block"
        assert text.startswith(f"qubit {target}\n")
        beta = float(re.search(r"β = ([0-9.]+) \[", text).group(1))
        assert beta == pytest.approx(good.loc[target, "beta"], abs=good.loc[target, "beta_stderr"] / 5)
        assert "quality: good" in text
    assert res["zoomed"][3] > 1.5 * res["hover"][3]                        # the wheel zoomed in
    # a screenshot of the rendered page is not blank
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user}", f"--screenshot={shot}", "--window-size=1100,2400",
                    (out / "index.html").as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels[..., :3].std() > 0.05
    assert np.isfinite(pixels).all()

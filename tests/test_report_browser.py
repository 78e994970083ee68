"""The HTML report in a real headless browser (Debian's chromium): it loads, its figures decode.

Skips when no chromium is installed (``.ci/run`` installs Debian's package when it can).
"""

import json
import re
import shutil
import subprocess

import pytest

import qasa
from qasa.virtual import VirtualQPU
from qasa.fitting import fit
from qasa.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.title = 'PROBE' + JSON.stringify(imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight]));
});
</script></body>"""


def test_report_loads_and_every_figure_decodes(tmp_path):
    qpu = VirtualQPU(seed=1, topology_shape=[4], broken_nodes=[])
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=2000, seed=1), qpu)
    out = tmp_path / "report"
    build_report(ds, fit(ds, "qasa"), out, truth=None)
    page = (out / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE))
    user = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user}", "--virtual-time-budget=5000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r"<title>PROBE(.*?)</title>", dom.stdout)
    assert match, "the page did not finish loading"
    images = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(images) == page.count("<img ")
    assert all(done and w > 100 and h > 100 for done, w, h in images)
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    # a screenshot of the rendered page is not blank
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user}", f"--screenshot={shot}", "--window-size=1100,2400",
                    (out / "index.html").as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels[..., :3].std() > 0.05

"""Screenshots of a qasa report for the README: its first screen and one interactive map with a hovered qubit.

Runs the reference grid on the virtual Advantage_system4.1-like QPU (Pegasus P16, or ``--shape``),
fits the qasa model, renders the report and photographs it with headless Chromium::

    python docs/screenshots.py                 # docs/img/report_first_screen.png, docs/img/report_map.png
    python docs/screenshots.py --shape 6       # a smaller device, faster

Needs ``chromium`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import qasa
from qasa.analysis import analyze
from qasa.fitting import fit
from qasa.report import render
from qasa.virtual import VirtualQPU

HERE = Path(__file__).parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

#: Shows only the first map, enlarged, and hovers the qubit nearest its centre (the tooltip shows).
MAP_ONLY = """<style>body>header,body>nav,body>section:not(#maps),body>footer{display:none}
#maps>h2,#maps>p{display:none}.qmap:not(:first-of-type){display:none}</style>
<script>window.addEventListener('load', () => {
  const m = window.qasaMaps[0], r = m.canvas.getBoundingClientRect();
  const x = r.left + r.width * 0.52, y = r.top + r.height * 0.48;
  m.zoom(2.2, r.width * 0.52, r.height * 0.48);
  m.canvas.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
});</script></body>"""


def shoot(chromium: str, page: Path, png: Path, size: str, profile: Path) -> None:
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}",
                    "--virtual-time-budget=3000", page.as_uri()], check=True, capture_output=True, timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=16, help="Pegasus size of the virtual device.")
    parser.add_argument("--out", default=str(HERE / "img"), help="Directory of the PNG files.")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("error: chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    # a planted smooth spatial structure in b (qasa.virtual.qpu.device_field): the map must show it
    qpu = VirtualQPU(seed=0, topology_shape=[args.shape], structure={"b": "smooth"})
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.025, reads_per_h=4000, seed=1), qpu)
    fits = fit(ds, "qasa")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        page = render(analyze(ds, fits), tmp / "report")
        shoot(chromium, page, out / "report_first_screen.png", "1280,900", tmp / "profile")
        only = tmp / "report" / "map_only.html"
        only.write_text(page.read_text().replace("</body>", MAP_ONLY))
        shoot(chromium, only, out / "report_map.png", "620,640", tmp / "profile")
    print(f"wrote {out / 'report_first_screen.png'} and {out / 'report_map.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Report speed (issue 5 target: the report of a full Pegasus P16 device in under 30 s).

Runs the reference protocol on the virtual Advantage-like P16 QPU (not timed), fits the qasa model,
then times `build_report` (device analysis with 499-permutation tests on every parameter and
coupler class, correlogram, figures, HTML, CSVs).

Run: ``python benchmarks/report_speed.py``.
"""

import tempfile
import time
from pathlib import Path

import qasa
from qasa.virtual import VirtualQPU
from qasa.fitting import fit
from qasa.report import build_report


def main() -> None:
    qpu = VirtualQPU(seed=0)
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.025, reads_per_h=4000, seed=1), qpu)
    fits = fit(ds, "qasa")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_report(ds, fits, Path(tmp) / "report")
        dt = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "report").iterdir())
    print(f"report of {len(fits)} qubits x {len(ds.response().h)} h values: {dt:.1f} s "
          f"(target < 30 s); {size / 1e6:.1f} MB written")


if __name__ == "__main__":
    main()

"""Dataset store speed on an Advantage-size dataset: load, no-op resume, and `qasa assess` end to end.

Targets (issue 11): loading an Advantage-size dataset with 10 000 reads per h (810 calls × 5 626
qubits, 4.6 M count rows) takes ≤ 1 s; a no-op resume of it (``qasa.run`` on the finished
directory) ≤ 2 s; ``qasa assess`` (default options) at least 2× faster than the code of a baseline
commit, measured in the same run (``--baseline-commit``, default 46e526e, the last commit before the
store and pipeline were rewritten), each timed ``--repeat`` times, the two alternating so that both
see the same machine load (the minimum is compared).

    python benchmarks/store_speed.py                 # everything (a few minutes)
    python benchmarks/store_speed.py --skip-assess   # load and resume only

Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import qasa  # noqa: E402
from qasa.store import DatasetStore  # noqa: E402


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def assess_once(source: Path, target: Path) -> float:
    """Wall time of ``qasa assess target`` run from the code in ``source`` (a fresh process)."""
    env = dict(os.environ, PYTHONPATH=str(source))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qasa.cli", "assess", str(target), "--quiet"], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=target.parent)     # not cwd=ROOT: -m would import ./qasa
    return time.perf_counter() - t0


def assess_times(sources: dict[str, Path], out: Path, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` runs of each source, the sources alternating (both see the same load)."""
    best = {name: float("inf") for name in sources}
    for i in range(repeat):
        for name, source in sources.items():
            best[name] = min(best[name], assess_once(source, out / f"{name}-{i}"))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-commit", default="46e526e")
    parser.add_argument("--skip-assess", action="store_true")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        qpu = qasa.get_sampler("emulator", preset="advantage4.1", seed=0)
        protocol = qasa.Protocol.grid(reads_per_h=10_000, reads_per_call=1_000, seed=1)
        t0 = time.perf_counter()
        ds = qasa.run(protocol, qpu, tmp / "adv")
        print(f"collected {len(ds.calls)} calls × {ds.counts['qubit'].nunique()} qubits "
              f"({len(ds.counts):,} rows) in {time.perf_counter() - t0:.1f} s")
        load = timed(lambda: DatasetStore(tmp / "adv").load(), args.repeat)
        resume = timed(lambda: qasa.run(protocol, qpu, tmp / "adv"), args.repeat)
        print(f"{'':<28}{'measured':>10}{'target':>10}")
        print(f"{'dataset load':<28}{load:>9.2f}s{1.0:>9.1f}s  {'ok' if load <= 1.0 else 'MISSED'}")
        print(f"{'no-op resume':<28}{resume:>9.2f}s{2.0:>9.1f}s  {'ok' if resume <= 2.0 else 'MISSED'}")
        ok &= load <= 1.0 and resume <= 2.0
        if not args.skip_assess:
            old = tmp / "baseline-src"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old),
                            args.baseline_commit], check=True)
            try:
                t = assess_times({"old": old, "new": ROOT}, tmp, args.repeat)
                t_old, t_new = t["old"], t["new"]
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
            ratio = t_old / t_new
            print(f"(load average {os.getloadavg()[0]:.2f} at the end; compare on a quiet machine, below ~1.5 on 2 cores)")
            print(f"{'qasa assess (' + args.baseline_commit + ')':<28}{t_old:>9.2f}s")
            print(f"{'qasa assess (this tree)':<28}{t_new:>9.2f}s{'':>10}  speed-up {ratio:.2f}× "
                  f"(target ≥ 2×) {'ok' if ratio >= 2.0 else 'MISSED'}")
            ok &= ratio >= 2.0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

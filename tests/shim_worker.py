"""Run a small seeded shim and SIGKILL itself at the K-th file commit (see test_shim.py).

Usage: ``python shim_worker.py OUT K``. Every ``os.replace`` (the commit of an atomic write: journal parts,
round plans, compactions, metadata, flux_biases.json) counts as a point before and after; at point ``K``
the process sends itself SIGKILL (no handler runs). ``K = 0`` runs to the end and prints, as JSON, the
number of points seen and the flux biases.
"""

import json
import os
import signal
import sys

from qasa.shim import shim
from qasa.virtual.qpu import VirtualQPU

POINTS = {"n": 0}


def _point(kill_at: int) -> None:
    POINTS["n"] += 1
    if POINTS["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def install(kill_at: int) -> None:
    real = os.replace

    def replace(src, dst, *a, **k):
        _point(kill_at)
        real(src, dst, *a, **k)
        _point(kill_at)

    os.replace = replace


if __name__ == "__main__":
    out, kill_at = sys.argv[1], int(sys.argv[2])
    install(kill_at)
    qpu = VirtualQPU("advantage4.1", topology_shape=[3], seed=5, flux_gain_spread=0.1, ideal=True)
    res = shim(qpu, out, reads_per_qubit=2_000, reads_per_call=100, seed=9)
    print(json.dumps({"points": POINTS["n"], "flux_biases": res.flux_biases, "rounds": res.rounds,
                      "reads_per_qubit": res.reads_per_qubit}))

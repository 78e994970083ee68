"""Run a dataset and SIGKILL itself at one chosen point of its writes (see test_kill_campaign.py).

Usage: ``python kill_worker.py OUT BACKEND K``. Points are counted over the whole process: just before
and just after every file commit (``os.replace`` of an atomic write: journal parts, samples,
``counts.parquet``, ``calls.parquet``, ``metadata.json``) and just after every removal (journal parts
removed by a compaction). At point ``K`` the process sends itself SIGKILL: no handler, no ``finally``,
exactly what a power cut or an OOM kill does at that instant. ``K = 0`` runs to the end and prints, as
JSON, the number of points seen and the points of the compaction's writes, so the test can draw ``K``
over a whole run and aim at the compaction window.
"""

import json
import os
import signal
import sys

import adaptive_worker
import resume_worker

import qasa

POINTS = {"n": 0}
NAMED: dict[str, int] = {}


def _point(kill_at: int, name: str = "") -> None:
    POINTS["n"] += 1
    if name == "unlink":                # the first removal of a journal part
        NAMED.setdefault(name, POINTS["n"])
    elif name in ("counts.parquet", "calls.parquet", "metadata.json"):     # the last (final compaction)
        NAMED[name] = POINTS["n"]
    if POINTS["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def install(kill_at: int) -> None:
    real_replace, real_unlink = os.replace, os.unlink

    def replace(src, dst, *a, **k):
        _point(kill_at, os.path.basename(dst))
        real_replace(src, dst, *a, **k)
        _point(kill_at)

    def unlink(path, *a, **k):
        real_unlink(path, *a, **k)
        if str(path).endswith(".arrow"):
            _point(kill_at, "unlink")

    os.replace, os.unlink = replace, unlink


def run(out: str, backend: str):
    if backend == "adaptive":
        return adaptive_worker.assess(out)
    return qasa.run(resume_worker.protocol(), resume_worker.sampler(backend), out)


if __name__ == "__main__":
    out, backend, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    install(kill_at)
    run(out, backend)
    print(json.dumps({"points": POINTS["n"], **NAMED}))

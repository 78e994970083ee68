"""Run a protocol through the real DWaveSampler against the test SAPI server at a given --in-flight
(interrupted by a test with SIGINT or SIGKILL, see test_leap_safety.py)."""

import sys

from dwave.system import DWaveSampler

import qasa


def protocol():
    """42 calls of 250 reads (21 h values, 2 gauges each)."""
    return qasa.Protocol.grid(1.0, 0.1, reads_per_h=500, reads_per_call=250, seed=5)


if __name__ == "__main__":
    endpoint, solver, out, in_flight = sys.argv[1:5]
    sampler = DWaveSampler(endpoint=endpoint, token="DEV-interrupt-worker-token", solver=solver)
    try:
        qasa.run(protocol(), sampler, out, in_flight=int(in_flight), max_qpu_seconds=3600.0)
    except KeyboardInterrupt:
        sys.exit(130)

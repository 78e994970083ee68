"""Run a protocol through the real DWaveSampler against the test SAPI server (killed by a test)."""

import sys

from dwave.system import DWaveSampler

import qasa


def protocol():
    return qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, reads_per_call=250, seed=3)


if __name__ == "__main__":
    endpoint, solver, out = sys.argv[1:4]
    sampler = DWaveSampler(endpoint=endpoint, token="DEV-worker-token", solver=solver)
    qasa.run(protocol(), sampler, out, in_flight=2, max_qpu_seconds=3600.0)

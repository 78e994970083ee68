"""Run an adaptive assessment slowly so that a test can SIGKILL it mid-round (see test_adaptive.py)."""

import sys
import time

from qasa_sampler import QASAModelCountSampler

from qasa import adaptive

TARGET = {"beta": "2%", "b": 0.004, "eta": 0.015}


class SlowCounts(QASAModelCountSampler):
    def __init__(self, delay, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def sample_counts(self, h, num_reads=1, seed=None, **kw):
        time.sleep(self.delay)
        return super().sample_counts(h, num_reads=num_reads, seed=seed, **kw)


def sampler(delay=0.0):
    return SlowCounts(delay, qubits=40, seed=4, eta=(0.04, 0.08), eta_zero_fraction=0.0)


def assess(out, delay=0.0):
    return adaptive.assess_adaptive(sampler(delay), out, TARGET,
                                    protocol=adaptive.pilot_protocol(5000, h_step=0.1, seed=17))


if __name__ == "__main__":
    assess(sys.argv[1], float(sys.argv[2]))

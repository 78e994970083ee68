"""Run a protocol slowly so that a test can SIGKILL it mid-run (see test_runner.py)."""

import sys
import time

import dimod

import qasa


class SlowSampler(dimod.Sampler, dimod.Structured):
    def __init__(self, child, delay):
        self.child, self.delay = child, delay

    nodelist = property(lambda self: self.child.nodelist)
    edgelist = property(lambda self: self.child.edgelist)
    properties = property(lambda self: self.child.properties)
    parameters = property(lambda self: self.child.parameters)
    qasa_settings = property(lambda self: getattr(self.child, "qasa_settings", None))   # same device

    def sample(self, bqm, **kwargs):
        time.sleep(self.delay)
        return self.child.sample(bqm, **kwargs)


class SlowCountsSampler(SlowSampler):
    """The same, for a sampler with qasa's count-level path (the virtual QPU)."""

    def sample_counts(self, h, **kwargs):
        time.sleep(self.delay)
        return self.child.sample_counts(h, **kwargs)


def protocol():
    return qasa.Protocol.grid(1.0, 0.1, reads_per_h=600, reads_per_call=200, seed=42)


def sampler(backend="sa"):
    if backend == "emulator":      # the default virtual QPU (Advantage-like P16), drift on by default
        return qasa.get_sampler("emulator", seed=2)
    return qasa.get_sampler("sa", topology_type="chimera", topology_shape=[4, 4, 4], beta=5.0)


if __name__ == "__main__":
    child = sampler(sys.argv[3] if len(sys.argv) > 3 else "sa")
    slow = SlowCountsSampler if hasattr(child, "sample_counts") else SlowSampler
    qasa.run(protocol(), slow(child, float(sys.argv[2])), sys.argv[1])

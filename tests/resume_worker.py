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

    def sample(self, bqm, **kwargs):
        time.sleep(self.delay)
        return self.child.sample(bqm, **kwargs)


def protocol():
    return qasa.Protocol.grid(1.0, 0.1, reads_per_h=600, reads_per_call=200, seed=42)


def sampler():
    return qasa.get_sampler("sa", topology_type="chimera", topology_shape=[4, 4, 4], beta=5.0)


if __name__ == "__main__":
    qasa.run(protocol(), SlowSampler(sampler(), float(sys.argv[2])), sys.argv[1])

"""Backend: the one owner of a sampler (qasa/backend.py).

Each test would fail if a question were asked of the sampler outside the Backend, if qasa attached
anything to a user's sampler, or if a Backend answered differently from the sampler it wraps.
"""

from __future__ import annotations

import dimod
import numpy as np
import pytest

import qasa
from qasa.backend import Backend, CountingSampler, as_backend
from qasa.errors import SamplerError
from qasa.samplers import get_backend

PROTOCOL = qasa.Protocol.grid(1.0, 0.5, reads_per_h=200, reads_per_call=100, seed=3)


class PlainSampler(dimod.Sampler):
    """A dimod sampler with no properties and no graph, accepting only num_reads (answers: all +1)."""

    properties: dict = {}
    parameters: dict = {"num_reads": []}

    def sample(self, bqm, num_reads=1):
        return dimod.SampleSet.from_samples_bqm(np.ones((num_reads, len(bqm.variables)), np.int8), bqm)


class CountingQuestions(dimod.Sampler, dimod.Structured):
    """An exact Gibbs sampler (β = 2) that counts how often qasa reads its description."""

    def __init__(self):
        self.asked = {"properties": 0, "parameters": 0, "nodelist": 0}

    @property
    def nodelist(self):
        self.asked["nodelist"] += 1
        return [0, 1, 2, 3]

    @property
    def edgelist(self):
        return []

    @property
    def properties(self):
        self.asked["properties"] += 1
        return {"h_range": [-2.0, 2.0], "num_reads_range": [1, 1000]}

    @property
    def parameters(self):
        self.asked["parameters"] += 1
        return {"num_reads": [], "seed": [], "label": []}

    def sample(self, bqm, num_reads=1, seed=None, label=None):
        rng = np.random.default_rng(seed)
        variables = list(bqm.variables)
        h = np.array([bqm.linear[v] for v in variables])
        spins = np.where(rng.random((num_reads, len(variables))) < 0.5 * (1 + np.tanh(2.0 * h)), -1, 1)
        return dimod.SampleSet.from_samples_bqm((spins.astype(np.int8), variables), bqm)


@pytest.mark.parametrize("name, options, counting, truth, timing", [
    ("sa", {"topology_type": "chimera", "topology_shape": [1], "beta": 2.0}, False, False, False),
    ("mock", {"topology_type": "chimera", "topology_shape": [1], "beta": 2.0}, False, False, False),
    ("emulator", {"topology_type": "pegasus", "topology_shape": [2], "seed": 4, "broken_nodes": []}, True, True, True),
])
def test_backend_answers_for_qasas_backends(name, options, counting, truth, timing):
    b = get_backend(name, **options)
    s = b.sampler
    assert b.recipe["backend"] == name and b.settings()["recipe"]["backend"] == name
    assert b.nodelist == list(s.nodelist) and b.edgelist == [tuple(e) for e in s.edgelist]
    assert b.parameters == frozenset(s.parameters) and b.accepts("num_reads")
    assert b.h_range == list(s.properties["h_range"]) and b.cloud_solver is None
    assert b.name == s.properties["chip_id"] and b.device_info()["solver"] == b.name
    assert (b.counting is s) == counting and isinstance(s, CountingSampler) == counting
    protocol = PROTOCOL.resolved(b.nodelist[:3])
    record = b.device_record(protocol)
    assert ("truth" in record) == truth and record["num_qubits"] == len(s.nodelist)
    if truth:
        assert [r["qubit"] for r in record["truth"]] == b.nodelist[:3]
    est = b.estimate_call(protocol, 3, 100)
    assert (est is not None) == timing and (est is None or est > 0)
    kept, ignored = b.filter({"num_reads": 5, "no_such_parameter": 1})
    assert kept == {"num_reads": 5} and ignored == ["no_such_parameter"]
    if name == "emulator":      # the recipe rebuilds the same device: same settings, same truth
        again = get_backend(**b.recipe)
        assert again.settings() == b.settings()


def test_backend_of_a_plain_sampler_without_properties():
    b = Backend(PlainSampler())
    assert b.recipe is None and b.nodelist is None and b.h_range is None and b.parameters == {"num_reads"}
    assert b.name == "PlainSampler" and b.counting is None and b.cloud_solver is None
    assert b.truth(PROTOCOL) is None and b.estimate_call(PROTOCOL.resolved([0]), 1, 10) is None
    assert b.filter({"num_reads": 3, "seed": 1, "label": "x"}) == ({"num_reads": 3}, ["label", "seed"])
    assert b.settings() == {"class": f"{__name__}.PlainSampler"}
    info = b.device_info()
    assert info["nodelist"] is None and info["num_qubits"] is None and info["parameters"] == ["num_reads"]
    ds = qasa.run(PROTOCOL.replace(qubits=(0, 1), spin_reversal=False), b.sampler, None)   # it has no graph
    assert (ds.counts["n_down"] == 0).all() and (ds.counts["n_up"] == 100).all()
    with pytest.raises(SamplerError, match="is not a dimod.Sampler"):
        Backend(object())
    assert as_backend(b) is b


@pytest.mark.parametrize("make", [
    lambda: qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1], beta=2.0),
    lambda: qasa.get_sampler("emulator", topology_type="pegasus", topology_shape=[2], seed=4, broken_nodes=[]),
    lambda: qasa.get_sampler("mock", topology_type="chimera", topology_shape=[1], beta=2.0),
    CountingQuestions,
])
def test_nothing_is_attached_to_the_users_sampler(make, tmp_path):
    sampler = make()
    if isinstance(sampler, dimod.Structured):
        assert sampler.adjacency   # dimod caches it on the sampler at the first structured call: not qasa's
    before = set(vars(sampler))
    qasa.run(PROTOCOL.replace(qubits=tuple(sorted(sampler.nodelist)[:4])), sampler, tmp_path / "ds")
    qasa.run(PROTOCOL.replace(qubits=tuple(sorted(sampler.nodelist)[:4])), sampler, None)
    assert set(vars(sampler)) == before
    assert not [k for k in vars(sampler) if "qasa" in k]


def test_get_sampler_recipe_is_recorded_without_an_attribute(tmp_path):
    sampler = qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1], beta=2.0)
    assert not hasattr(sampler, "qasa_recipe")
    ds = qasa.run(PROTOCOL, sampler, tmp_path / "ds")
    assert ds.metadata["sampler"]["recipe"]["backend"] == "sa" and ds.metadata["sampler"]["recipe"]["beta"] == 2.0


def test_the_sampler_is_described_once_per_run():
    """41 calls used to ask for the accepted parameters 82 times; the Backend asks once."""
    sampler = CountingQuestions()
    protocol = qasa.Protocol(h_values=tuple(np.round(np.linspace(-1, 1, 41), 3)), reads_per_h=100,
                             reads_per_call=100, seed=1)
    ds = qasa.run(protocol, sampler, None)
    assert len(ds.calls) == 41
    assert sampler.asked == {"properties": 1, "parameters": 1, "nodelist": 1}

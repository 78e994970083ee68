"""Inference on data from an independent QASA-model sampler run through the public ``qasa.run``."""

import sys
from pathlib import Path

import dimod
import numpy as np
import pytest

import qasa
from qasa.fitting import fit
from qasa.models import get_model

sys.path.insert(0, str(Path(__file__).parent))
from qasa_sampler import QASAModelCountSampler, QASAModelSampler  # noqa: E402


def test_qasa_sampler_draws_the_qasa_law_in_the_qubits_own_frame():
    s = QASAModelSampler(50, seed=4, eta_zero_fraction=0.5)
    t = s.truth
    assert list(t.columns) == ["qubit", "beta", "b", "gamma", "eta"] and (t["eta"] == 0).sum() > 10
    h = {q: (0.1 if q % 2 else -0.1) for q in s.nodelist}
    ss = s.sample_ising(h, {}, num_reads=4000, seed=1)
    assert isinstance(ss, dimod.SampleSet) and ss.record.sample.shape == (4000, 50)
    dimod.testing.assert_sampleset_energies(ss, dimod.BQM.from_ising(h, {}))
    assert ss.record.sample.tolist() == s.sample_ising(h, {}, num_reads=4000, seed=1).record.sample.tolist()
    x = np.array([h[q] for q in ss.variables])
    expected = s.p_down(list(ss.variables), x)
    observed = (ss.record.sample == -1).mean(0)
    z = (observed - expected) / np.sqrt(expected * (1 - expected) / 4000)
    assert np.all(np.abs(z) < 4.5)
    theta = t.set_index("qubit").loc[list(ss.variables)].to_numpy(float)
    assert np.allclose(expected, [get_model("qasa").p_down(np.array([xi]), th[None])[0, 0] for xi, th in zip(x, theta)])
    # the bias lives in the qubit's own frame: a gauge (program -x, flip the answer) does not mirror it
    gauge_flipped = 1 - s.p_down(list(ss.variables), -x)
    big = np.abs(theta[:, 1]) > 0.005
    assert np.all(np.sign(expected - gauge_flipped)[big] == np.sign(theta[big, 1]))
    with pytest.raises(ValueError, match="h_range"):
        s.sample_ising({0: 5.0}, {})
    with pytest.raises(ValueError, match="interaction"):
        s.sample_ising({0: 0.1, 1: 0.1}, {(0, 1): 0.5})


def test_default_gauges_through_qasa_run_identify_b():
    """Default protocol gauges, raw reads reduced by qasa: b recovered with its sign, β unbiased."""
    s = QASAModelSampler(60, seed=2)
    ds = qasa.run(qasa.Protocol(reads_per_h=4000, seed=5), s)
    assert set(np.unique(ds.counts["gauge"])) == {-1, 1}
    assert ds.metadata["device"]["truth"][0]["beta"] == s.truth.loc[0, "beta"]
    t = fit(ds, "qasa").table
    assert np.corrcoef(t["b"], s.truth["b"])[0, 1] > 0.99
    counts = qasa.run(qasa.Protocol(reads_per_h=4000, seed=5), QASAModelCountSampler(truth=s.truth))
    t2 = fit(counts, "qasa").table
    assert np.corrcoef(t2["b"], s.truth["b"])[0, 1] > 0.99

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


PARAMS = ("beta", "b", "gamma", "eta")


def coverage_table(t, truth) -> dict[str, dict[str, float]]:
    """Fraction of qubits whose 95 % profile interval holds the truth: all qubits, and those whose
    η̂ is on its bound (η̂ = 0), per parameter."""
    t = t.set_index("qubit").loc[truth["qubit"]]
    truth = truth.set_index("qubit")
    on = (t["eta"] == 0).to_numpy()
    out = {"n": {"all": len(t), "eta_on_bound": int(on.sum())}}
    for p in PARAMS:
        inside = ((t[f"{p}_lo"] <= truth[p]) & (truth[p] <= t[f"{p}_hi"])).to_numpy()
        out[p] = {"all": float(inside.mean()), "eta_on_bound": float(inside[on].mean())}
    return out


def _assess(n, seed, reads_per_h=10_000, reads_per_call=1000, sampler=QASAModelSampler):
    s = sampler(n, seed=seed)
    ds = qasa.run(qasa.Protocol(reads_per_h=reads_per_h, reads_per_call=reads_per_call, seed=seed + 1), s)
    return s.truth, fit(ds, "qasa").table


def _check_coverage(cov, lo, hi, lo_subset, hi_subset):
    print(cov)
    assert cov["n"]["eta_on_bound"] >= 0.15 * cov["n"]["all"], "the on-bound subset must be sizeable"
    for p in PARAMS:
        assert lo <= cov[p]["all"] <= hi, (p, cov[p])
    for p in ("beta", "b", "gamma"):
        assert lo_subset <= cov[p]["eta_on_bound"] <= hi_subset, (p, cov[p])
    # conditional on η̂ = 0 the interval is [0, η_hi]: a truth η = 0 is always inside, so the
    # conditional coverage of η is at least the nominal one
    assert lo_subset <= cov["eta"]["eta_on_bound"] <= 1.0


def test_intervals_cover_the_truth_with_default_gauges_fast():
    """400 qubits through qasa.run with the default protocol (10 gauges per h)."""
    truth, t = _assess(400, seed=11, sampler=QASAModelCountSampler)
    assert (t["quality"] != "failed").all()
    assert np.corrcoef(t["b"], truth["b"])[0, 1] >= 0.95
    # binomial sd of a 95 % coverage: 1.1 % over 400 qubits, 2.4 % over the ~80 on the bound
    _check_coverage(coverage_table(t, truth), 0.92, 0.98, 0.88, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22])
def test_intervals_cover_the_truth_with_default_gauges(seed):
    """2000 qubits per device: 95 % profile intervals cover 92–98 % of the truths of every
    parameter, on all qubits and on those with η̂ on its bound; b is identified."""
    truth, t = _assess(2000, seed=seed, sampler=QASAModelCountSampler)
    assert np.corrcoef(t["b"], truth["b"])[0, 1] >= 0.95
    _check_coverage(coverage_table(t, truth), 0.92, 0.98, 0.92, 0.98)


def test_one_gauge_per_h_gives_no_lack_of_fit():
    """reads_per_h == reads_per_call: every h has one gauge, so b flips sign between h values in the
    nominal frame; in the programmed frame the model fits (bad fraction near the nominal 0.1 %)."""
    truth, t = _assess(1000, seed=12, reads_per_h=1000, reads_per_call=1000, sampler=QASAModelCountSampler)
    lack = t["reason"].str.contains("lack of fit")
    assert lack.sum() <= 4           # expected 1 at p < 1e-3; P(≥ 5) ≈ 4e-3
    assert np.corrcoef(t["b"], truth["b"])[0, 1] >= 0.95


def test_no_qubit_stays_on_eta_zero_below_a_better_optimum():
    """Every qubit with η̂ = 0 is checked against refits started on a grid of βη ∈ (0, 1.5]: none
    is better by more than 1e-3 nats."""
    from qasa.fitting import maximize

    s = QASAModelCountSampler(600, seed=13)
    ds = qasa.run(qasa.Protocol(reads_per_h=4000, reads_per_call=1000, seed=14), s)
    r = ds.response()
    t = fit(r, "qasa").table
    on = np.flatnonzero(t["eta"].to_numpy() == 0)
    assert on.size >= 100
    theta = t.loc[on, list(PARAMS)].to_numpy()
    nd, nt = r.n_down[on].astype(float), r.n_total[on].astype(float)
    best = np.full(on.size, -np.inf)
    for c in (0.05, 0.1, 0.2, 0.4, 0.8, 1.5):
        start = theta.copy()
        start[:, 3] = c / theta[:, 0]
        start[:, 0] = theta[:, 0] * np.cosh(c) ** 2          # keep the slope at h = 0
        _, ll, _, _ = maximize("qasa", r.h, nd, nt, start)
        best = np.maximum(best, ll)
    assert np.all(best <= t.loc[on, "loglik"].to_numpy() + 1e-3)


def test_reference_case_intervals():
    """DESIGN.md §3 reference qubit (β 8, b 0.01, γ 0.1, η 0.05; 81 h, 10⁶ reads per h): every
    interval holds the truth, η's excludes 0, and the profile of η does not stop at 0."""
    from qasa.dataset import Response

    h = np.array(qasa.h_grid(1.0, 0.025))
    truth = np.array([[8.0, 0.01, 0.1, 0.05]])
    rng = np.random.default_rng(2021)
    nt = np.full((1, len(h)), 10**6)
    r = Response(np.arange(1), h, rng.binomial(nt, get_model("qasa").p_down(h, truth)), nt)
    row = fit(r, "qasa").table.iloc[0]
    assert row["quality"] == "good" and row["reason"] == ""
    for j, p in enumerate(PARAMS):
        assert row[f"{p}_lo"] < truth[0, j] < row[f"{p}_hi"], p
        # the profile interval agrees with the Wald one where the likelihood is regular
        assert row[f"{p}_hi"] - row[f"{p}_lo"] == pytest.approx(2 * 1.96 * row[f"{p}_stderr"], rel=0.05)
    assert row["eta_lo"] > 0.04

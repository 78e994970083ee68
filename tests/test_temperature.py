"""Effective temperature by D-Wave's definition: the same number as ``fast_effective_temperature``
on the same sampler (virtual QPU, mock, exact Gibbs), an interval that is honest under qubit
heterogeneity, and the whole-grid pooled fit shown with its lack of fit."""

import math
import sys
from pathlib import Path

import dimod
import numpy as np
import pytest
from dwave.system.temperatures import fast_effective_temperature

import qasa
from qasa.dataset import Response
from qasa.virtual import VirtualQPU
from qasa.fitting import fit
from qasa.temperature import FAST_H_WINDOW, effective_temperature, qubit_beta_distribution

sys.path.insert(0, str(Path(__file__).parent))
from qasa_sampler import QASAModelCountSampler  # noqa: E402


class Recorder(dimod.Sampler, dimod.Structured):
    """Passes calls to a sampler and keeps each (bqm, sampleset), to reuse D-Wave's own draws."""

    def __init__(self, child):
        self.child = child
        self.log = []

    nodelist = property(lambda self: self.child.nodelist)
    edgelist = property(lambda self: self.child.edgelist)
    properties = property(lambda self: self.child.properties)
    parameters = property(lambda self: self.child.parameters)

    def sample(self, bqm, **kwargs):
        # like qasa, send only what the sampler accepts (a test sampler may not take auto_scale)
        ss = self.child.sample(bqm, **{k: v for k, v in kwargs.items() if k in self.child.parameters})
        self.log.append((bqm, ss))
        return ss


def _response_of(bqm, ss) -> Response:
    """Counts of a sampleset of uncoupled qubits, each at its own field."""
    qubits = list(ss.variables)
    h = np.array([bqm.linear[q] for q in qubits])
    down = ((ss.record.sample == -1) * ss.record.num_occurrences[:, None]).sum(0)
    hu, col = np.unique(h, return_inverse=True)
    nd = np.zeros((len(qubits), len(hu)), int)
    nt = np.zeros_like(nd)
    nd[np.arange(len(qubits)), col] = down
    nt[np.arange(len(qubits)), col] = ss.record.num_occurrences.sum()
    return Response(np.array(qubits), hu, nd, nt)


def _fet(sampler, reads, seeds=(0, 1)):
    """D-Wave's estimate (mean over seeds) and its standard error (our sandwich on its own draws)."""
    rec = Recorder(sampler)
    values, ses = [], []
    for seed in seeds:
        T, _ = fast_effective_temperature(rec, num_reads=reads, seed=seed, sampler_params={"num_reads": reads})
        mine = effective_temperature(_response_of(*rec.log[-1]), None)
        # the same estimator on the same draws: D-Wave's number to rounding
        assert mine.T_eff == pytest.approx(T, rel=1e-8)
        values.append(T)
        ses.append(mine.T_eff_stderr)
    return float(np.mean(values)), float(np.sqrt(np.sum(np.square(ses)))) / len(seeds)


@pytest.fixture(scope="module")
def virtual():
    return VirtualQPU("advantage4.1", topology_shape=[4], seed=1, ideal=True)   # the estimator on qubits without per-call noise


@pytest.fixture(scope="module")
def virtual_data(virtual):
    return qasa.run(qasa.Protocol.grid(1.0, 0.025, reads_per_h=10_000, seed=1), virtual)


def test_virtual_qpu_agrees_with_fast_effective_temperature_and_the_published_value(virtual, virtual_data):
    e = effective_temperature(virtual_data)
    fet, fet_se = _fet(virtual, 10_000)
    combined = math.hypot(e.T_eff_stderr, fet_se)
    assert abs(e.T_eff - fet) < 2 * combined, (e.T_eff, fet, combined)
    # the emulator is calibrated to the published Advantage_system4.1 T_eff (DESIGN.md §2): a value for
    # the population of qubits, so the population interval covers it; this device's own T_eff is known
    # far better (measurement error, calls as clusters)
    assert e.T_eff_population_lo < 0.198 < e.T_eff_population_hi and e.T_eff == pytest.approx(0.198, rel=0.005)
    assert e.error == "measurement" and e.T_eff_stderr == e.T_eff_measurement_stderr
    assert e.T_eff_measurement_stderr < e.T_eff_population_stderr / 1.5 and e.measurement_df > 0   # 1.9x here
    assert e.beta_eff == pytest.approx(1 / e.T_eff) and e.h_window == pytest.approx(FAST_H_WINDOW)
    assert e.h_values == 13 and e.qubits == len(virtual.nodelist) and e.reads == 13 * 10_000 * e.qubits
    # heterogeneous qubits: the honest error is larger than the binomial one, and the small-|h|
    # window fits one tanh (deviance/df near 1) while the qubits are overdispersed
    assert e.design_effect > 2 and e.dispersion > 5 and e.deviance_per_df < 3
    # the old whole-grid pooled fit is another number with a huge lack of fit
    whole = effective_temperature(virtual_data, None)
    assert whole.h_window is None and whole.h_values == 81
    assert whole.T_eff > 1.05 * e.T_eff and whole.deviance_per_df > 1000
    assert "whole-grid" in whole.method and "sandwich" in e.method
    # a bootstrap over qubits gives about the same error
    boot = effective_temperature(virtual_data, bootstrap=200, seed=3)
    assert boot.T_eff == e.T_eff
    assert boot.beta_eff_population_stderr == pytest.approx(e.beta_eff_population_stderr, rel=0.25)
    assert boot.T_eff_population_lo < e.T_eff < boot.T_eff_population_hi
    assert boot.beta_eff_measurement_stderr == e.beta_eff_measurement_stderr          # not a qubit bootstrap


@pytest.mark.parametrize("backend", ["sa", "mock"])
def test_exact_gibbs_samplers_agree_with_fast_effective_temperature_and_the_truth(backend):
    sampler = qasa.get_sampler(backend, topology_shape=[3], beta=4.0)
    # the mock's simulated-annealing substitute draws its per-call seeds from numpy's global generator
    state = np.random.get_state()
    np.random.seed(11)
    try:
        ds = qasa.run(qasa.Protocol.grid(0.2, 0.025, reads_per_h=4000, reads_per_call=4000, seed=2), sampler)
        e = effective_temperature(ds)
        fet, fet_se = _fet(sampler, 4000)
    finally:
        np.random.set_state(state)
    assert abs(e.T_eff - fet) < 2 * math.hypot(e.T_eff_stderr, fet_se)
    assert e.T_eff_lo < 0.25 < e.T_eff_hi                                  # truth 1/β
    assert e.design_effect == pytest.approx(1.0, abs=0.3) and e.deviance_per_df < 2.5


def test_sandwich_interval_covers_the_device_value_under_heterogeneity_where_the_naive_one_does_not():
    """Qubits drawn from a population with β from 3 to 7 and biases: the pooled fit estimates the
    population's pooled β*; the sandwich interval covers it ~95 % of the time, the binomial one does not."""
    h = np.round(np.arange(-6, 7) * 0.025, 12)
    def draw(rng, n):
        return rng.uniform(3, 7, n), rng.normal(0, 0.03, n)
    rng = np.random.default_rng(0)
    beta, b = draw(rng, 200_000)
    m_pop = np.tanh(beta[:, None] * (h + b[:, None])).mean(0)
    # population value: Σ_j x_j (tanh(β* x_j) − E m(x_j)) = 0
    from scipy.optimize import brentq
    star = brentq(lambda B: float((h * (np.tanh(B * h) - m_pop)).sum()), 0.1, 50)
    cover, naive_cover = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed + 1)
        beta, b = draw(rng, 150)
        p = 0.5 * (1 + np.tanh(beta[:, None] * (h + b[:, None])))
        nt = np.full(p.shape, 2000)
        e = effective_temperature(Response(np.arange(150), h, rng.binomial(nt, p), nt))
        cover.append(e.beta_eff_lo < star < e.beta_eff_hi)
        naive_cover.append(abs(e.beta_eff - star) < 1.96 * e.naive_stderr)
    assert 0.92 <= np.mean(cover) <= 0.98, np.mean(cover)
    assert np.mean(naive_cover) < 0.7


def test_degenerate_and_bad_input():
    h = np.array([-1.0, 0.0, 1.0])
    r = Response(np.arange(2), h, np.array([[0, 5, 10], [0, 5, 10]]), np.full((2, 3), 10))
    with pytest.raises(ValueError, match=r"no reads at a nonzero h in the h window"):
        effective_temperature(r)                                     # only h = 0 in ±0.164
    with pytest.raises(ValueError, match="level"):
        effective_temperature(r, None, level=1.5)
    with pytest.raises(ValueError, match="lo < hi"):
        effective_temperature(r, (0.2, -0.2))
    e = effective_temperature(r, None)                               # every read aligned: T = 0, as D-Wave's
    assert e.beta_eff == math.inf and e.T_eff == 0.0


def test_qubit_beta_distribution_is_named_apart_from_t_eff(virtual_data):
    fits = fit(virtual_data, "qasa")
    d = qubit_beta_distribution(fits)
    assert "not the device T_eff" in d["label"] and d["qubits"] > 250
    assert d["q25"] < d["median"] < d["q75"] and 0 < d["sd_true"] < d["sd"]
    assert d["T_of_median"] == pytest.approx(1 / d["median"])


def test_qasa_model_sampler_agrees_with_fast_effective_temperature():
    """Independent per-qubit β ∈ [3, 10], b, γ, η (tests/qasa_sampler.py), default gauges."""
    sampler = QASAModelCountSampler(400, seed=4)
    ds = qasa.run(qasa.Protocol.grid(0.2, 0.025, reads_per_h=4000, seed=4), sampler)
    e = effective_temperature(ds)
    fet, fet_se = _fet(sampler, 4000)
    assert abs(e.T_eff - fet) < 2 * math.hypot(e.T_eff_stderr, fet_se), (e.T_eff, fet)
    # very heterogeneous qubits: the honest error is several times the binomial one
    assert e.design_effect > 10
    # the pooled small-|h| T_eff is not 1/mean β nor 1/median β of the qubits
    truth = sampler.truth
    assert abs(e.T_eff - 1 / truth["beta"].median()) > 3 * e.T_eff_stderr


def _repeat_runs(runs: int, qubits: int, sigma: float, first_seed: int, reads_per_h: int = 4000):
    """T_eff of ``runs`` independent repeat runs of one heterogeneous device (tests/noisy_sampler.py:
    independent per-qubit β ∈ [3, 10], b, γ, η; a fresh N(0, σ²) field offset per qubit per call)."""
    from noisy_sampler import NoisyQASASampler

    out = []
    for rep in range(runs):
        sampler = NoisyQASASampler(qubits, seed=3, sigma_call=sigma)
        ds = qasa.run(qasa.Protocol.grid(0.2, 0.025, reads_per_h=reads_per_h, reads_per_call=1000,
                                         seed=first_seed + rep), sampler)
        out.append(effective_temperature(ds))
    return out


def _z_sd(results) -> float:
    T = np.array([e.T_eff for e in results])
    se = np.array([e.T_eff_stderr for e in results])
    n = len(T)
    return float(np.std((T - T.mean()) / se * np.sqrt(n / (n - 1)), ddof=1))


def test_measurement_error_matches_the_scatter_of_repeat_runs_under_per_call_noise():
    """Repeat runs of one heterogeneous device with per-call field offsets σ = 0.01: the measurement
    error (calls as clusters) is what the runs scatter by; the binomial error is too small (the
    per-call noise), the population error far too large (the qubits' differences, which a repeat run
    does not redraw)."""
    res = _repeat_runs(24, 150, 0.01, first_seed=8000)
    assert all(e.error == "measurement" and e.T_eff_stderr == e.T_eff_measurement_stderr for e in res)
    assert 0.7 <= _z_sd(res) <= 1.45, _z_sd(res)
    T = np.array([e.T_eff for e in res])
    naive = np.array([e.naive_stderr / e.beta_eff**2 for e in res])
    assert np.std((T - T.mean()) / naive, ddof=1) > 1.4                          # binomial error too small
    assert np.mean([e.T_eff_population_stderr / e.T_eff_measurement_stderr for e in res]) > 5
    assert np.mean([e.measurement_dispersion for e in res]) > 2                  # noise beyond shots seen
    e = res[0]
    assert e.measurement_df == 12 and e.measurement_units == 24                  # 12 fields × 2 antithetic pairs
    assert e.T_eff_measurement_lo < e.T_eff < e.T_eff_measurement_hi
    assert "measurement error" in e.method and "Population error" in e.method


def test_measurement_error_is_not_estimable_without_repeated_calls():
    from qasa_sampler import QASAModelCountSampler

    sampler = QASAModelCountSampler(40, seed=1)
    ds = qasa.run(qasa.Protocol.grid(0.2, 0.025, reads_per_h=1000, reads_per_call=1000, spin_reversal=False,
                                     seed=1), sampler)
    e = effective_temperature(ds)
    assert e.error == "population" and math.isnan(e.T_eff_measurement_stderr)
    assert "two independent calls" in e.measurement_note and "not estimable" in e.method
    assert e.T_eff_stderr == e.T_eff_population_stderr and e.T_eff_lo == e.T_eff_population_lo
    r = effective_temperature(ds.response())
    assert r.error == "population" and "no calls" in r.measurement_note
    assert r.T_eff == e.T_eff


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_measurement_error_z_scores_of_forty_repeat_runs(sigma):
    """40 repeat runs of one 400-qubit device with the default 10 000 reads per h in calls of 1 000
    (48 df). Measured: sd 1.05 (σ = 0) and 1.12 (σ = 0.01); at 4 000 reads per h (12 df) 1.19 and 0.94."""
    res = _repeat_runs(40, 400, sigma, first_seed=5000, reads_per_h=10_000)
    assert res[0].measurement_df == 48
    assert 0.8 <= _z_sd(res) <= 1.25, _z_sd(res)


@pytest.mark.slow
@pytest.mark.parametrize("runs, reads_per_h, df, measured", [(24, 4000, 12, 1.03), (40, 10_000, 48, 1.16)])
def test_measurement_error_z_scores_of_repeat_runs_on_the_noisy_virtual_qpu(runs, reads_per_h, df, measured):
    """Repeat runs (run seeds 7000 +) of one virtual Advantage P4 device (263 qubits) with every noise
    source of a real QPU on (per-programming errors, 1/f flux noise on the device's clock, DAC, h scale,
    the pass walk): the z-scores of T_eff by its measurement error have sd in 0.8–1.25. Measured: 1.03
    (24 runs, 4 000 reads per h) and 1.16 (40 runs, 10 000; 1/f noise correlates a run's calls a little,
    which clusters of calls take as independent); the population error is 1.4–1.6× the measurement error.
    (1.01 and 1.20 with each pass in h order, before the shuffled run order.)"""
    T, se = [], []
    for rep in range(runs):
        qpu = VirtualQPU("advantage4.1", topology_shape=[4], seed=3)
        ds = qasa.run(qasa.Protocol.grid(0.2, 0.025, reads_per_h=reads_per_h, reads_per_call=1000, seed=7000 + rep), qpu)
        e = effective_temperature(ds)
        assert e.error == "measurement" and e.measurement_df == df
        T.append(e.T_eff)
        se.append(e.T_eff_stderr)
    T, se = np.array(T), np.array(se)
    z_sd = float(np.std((T - T.mean()) / se * np.sqrt(runs / (runs - 1)), ddof=1))
    assert 0.8 <= z_sd <= 1.25 and z_sd == pytest.approx(measured, abs=0.02), z_sd


def test_quick_temperature_agrees_with_fast_effective_temperature_in_two_programmings(tmp_path):
    """`qasa temperature`: D-Wave's design (each qubit its own random field in ±1/6.1), symmetrized by one
    spin-reversal pair, through the runner, the store and the same estimator: it agrees with D-Wave's
    fast_effective_temperature run on the same device within its error, and resumes as a dataset."""
    from dwave.system.temperatures import fast_effective_temperature

    from qasa.temperature import quick

    qpu = VirtualQPU("advantage4.1", topology_shape=[8], seed=3)
    e = quick(qpu, tmp_path / "q", num_reads=1000, seed=5)
    T, _ = fast_effective_temperature(qpu, num_reads=1000, seed=4, sampler_params={"num_reads": 1000})
    assert len(qasa.load(tmp_path / "q").calls) == 2 and len(qpu.nodelist) - 10 <= e.qubits <= len(qpu.nodelist)
    assert abs(e.T_eff - T) < 3 * e.T_eff_population_stderr, (e.T_eff, T, e.T_eff_population_stderr)
    assert e.T_eff == pytest.approx(0.198, rel=0.02)
    assert np.isfinite(e.T_eff_population_stderr) and e.T_eff_population_stderr > 0
    # the symmetrized pair programs each qubit at +x and −x: both signs are in the programmed frame
    r = qasa.load(tmp_path / "q").response()
    assert (r.h < 0).sum() > 100 and (r.h > 0).sum() > 100 and np.abs(r.h).max() <= 1 / 6.1 + 1e-12
    again = quick(qpu, tmp_path / "q", num_reads=1000)          # a finished dataset: nothing runs again
    assert again.T_eff == e.T_eff


@pytest.mark.parametrize("kwargs, match", [({"num_reads": 0}, r"num_reads=0 must be an integer in \[1, 100000\]"),
                                            ({"programmings": 11}, r"programmings=11 .* \[1, 10\]"),
                                            ({"num_reads": True}, "num_reads=True")])
def test_quick_temperature_refuses_bad_options_before_any_call(tmp_path, kwargs, match):
    from qasa.errors import ProtocolError
    from qasa.temperature import quick

    with pytest.raises(ProtocolError, match=match):
        quick(VirtualQPU("advantage4.1", topology_shape=[2], seed=1), tmp_path / "q", **kwargs)
    assert not (tmp_path / "q").exists()

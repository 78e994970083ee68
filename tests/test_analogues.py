"""Closed forms of the noisy quadratic model, the two-direction regression, SA and QPU analogues."""

import numpy as np
import pytest

from qasa import analogues as an
from qasa.schedules import shape


def test_constant_rate_floor_closed_form():
    assert an.constant_floor(2.0, 0.5, 0.1) == pytest.approx(0.0138889, abs=5e-8)
    m = an.nqm_moments(np.full(2000, 0.1), [2.0], [0.5], 1.0)
    assert m[-1, 0] == pytest.approx(0.05 / 3.6, rel=1e-10)            # the recursion reaches the floor


def test_optimal_schedule_closed_form_and_it_beats_every_constant_rate():
    lrs, m_T = an.optimal_schedule(2.0, 0.5, 1.0, 50)
    assert m_T == pytest.approx(0.0024937656, abs=1e-10)
    assert an.nqm_moments(lrs, [2.0], [0.5], 1.0)[-1, 0] == pytest.approx(m_T, rel=1e-12)
    constants = [an.nqm_moments(np.full(50, eta), [2.0], [0.5], 1.0)[-1, 0] for eta in np.linspace(0.001, 0.99, 500)]
    assert m_T < min(constants)


def test_monte_carlo_sgd_agrees_with_the_recursion():
    lrs = 0.3 * shape("cosine")(np.arange(60) / 60)
    exact = an.nqm_moments(lrs, [1.0, 0.2], [0.3, 0.1], 1.0)
    mc = an.nqm_monte_carlo(lrs, [1.0, 0.2], [0.3, 0.1], 1.0, runs=40_000, seed=3)
    assert np.allclose(mc, exact, rtol=0.03)


def test_two_direction_regression_halves_the_test_loss():
    res = an.two_direction_regression(train_loss=1e-4)
    assert res["train_small"] <= 1e-4 and res["train_large"] <= 1e-4
    assert abs(res["ratio"] - 2.0) < 0.01


def test_nqm_study_prefers_annealing_over_constant():
    table = an.nqm_study(shapes=[shape("constant"), shape("cosine"), shape("exponential", final=0.01)], steps=500)
    loss = table.set_index("shape")["final_loss"]
    assert loss["cosine"] < loss["constant"] and loss["exponential(final=0.01)"] < loss["constant"]
    assert (table["eta0_sensitivity"] >= 1).all()


def test_planted_instance_ground_state():
    bqm, ground, e0 = an.planted_instance(seed=3)
    assert bqm.energy(ground) == pytest.approx(e0)
    flipped = dict(ground)
    v = next(iter(flipped))
    flipped[v] = -flipped[v]
    assert bqm.energy(flipped) > e0


def test_sa_effective_beta_depends_on_the_schedule_tail():
    t = an.sa_study([shape("exponential", final=0.01), shape("linear")], num_sweeps=32, reads=100,
                    qasa_reads=600).set_index("shape")
    # all end at β = 5; random order leaves some spins last updated earlier, where a linear-in-T
    # schedule is much hotter than an exponential one
    assert (t["beta_final"] == 5.0).all()
    assert t.loc["linear", "beta_effective"] < t.loc["exponential(final=0.01)", "beta_effective"] < 5.0
    assert t.loc["exponential(final=0.01)", "ground_state_probability"] > 0


def test_qpu_study_follows_the_freezeout_physics_of_the_virtual_qpu():
    shapes = [shape("inverse-time", k=20.0), shape("cosine"), shape("linear"), shape("polynomial", power=2.0),
              shape("sgdr", cycles=2)]
    t = an.qpu_study(shapes, reads_per_h=2000, h_step=0.1).set_index("shape")
    ok = t.dropna(subset=["beta"])
    assert "non-monotone" in t.loc["sgdr(cycles=2)", "note"]
    # later freeze-out → larger β, in the fit as in the truth
    order_truth = ok["true_freezeout_s"].rank()
    assert (ok["beta"].rank() == order_truth).all()
    assert np.allclose(ok["beta"], ok["true_beta"], rtol=0.03)


# -- the measured device next to its analogues ------------------------------------------------------------
def test_sgd_end_temperature_constant_rate_floor():
    """A constant temperature is the constant-rate floor ηc/(h(2 − ηh)) (DESIGN.md §4): SGD stays on it."""
    for eta0, h in ((0.1, 1.0), (0.7, 2.0), (1.9, 1.0)):
        assert an.sgd_end_temperature(np.full(500, 0.3), eta0=eta0, curvature=h) == pytest.approx(0.3, rel=1e-12)


def test_sgd_end_temperature_inverse_time_closed_form():
    """η_t = 1/(h(t + a)) solves k² m_{t+1} = (k − 1)² m_t + c/h² (k = t + a): m_N = ((a−1)² m₀ + N c/h²)/(N + a − 1)²;
    with m₀ = c/(h² t₀), a = t₀ + 1 this is DESIGN.md §4's optimum c/(h²(N + t₀))."""
    h, c, a, N = 2.0, 0.5, 7.0, 400
    eta = 1.0 / (h * (np.arange(N) + a))
    temps = eta * c / (2.0 - eta * h)                    # the temperature whose floor rate is η_t
    m0 = temps[0] / h                                    # sgd_end_temperature starts on the floor
    expected = h * ((a - 1) ** 2 * m0 + N * c / h ** 2) / (N + a - 1) ** 2
    assert an.sgd_end_temperature(temps, eta0=eta[0], curvature=h) == pytest.approx(expected, rel=1e-10)
    # and the same closed form from the exact recursion of nqm_moments
    assert an.nqm_moments(eta, [h], [c], m0)[-1, 0] * h == pytest.approx(expected, rel=1e-10)


def test_sgd_freezes_out_and_more_steps_or_larger_rates_freeze_later():
    T = np.geomspace(5.0, 0.05, 2000)
    ends = [an.sgd_end_temperature(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, 2000), T), eta0=0.05)
            for n in (200, 1000, 5000, 20000)]
    assert all(b < a for a, b in zip(ends, ends[1:]))               # more steps: colder end
    assert all(e > 0.05 for e in ends)                              # never colder than the last temperature
    by_eta = [an.sgd_end_temperature(T, eta0=e) for e in (0.001, 0.01, 0.1, 1.0)]
    assert all(b < a for a, b in zip(by_eta, by_eta[1:]))
    with pytest.raises(ValueError, match=r"η₀·h must lie in \(0, 2\)"):
        an.sgd_end_temperature(T, eta0=2.5)


def test_device_analogue_units_and_freezeout_points():
    from qasa.virtual import physics

    s_star, mK = 0.6, 16.0
    B = physics.load_schedule("Advantage_system6.2").B_of
    beta = float(physics.freezeout_beta(B(s_star), mK))
    t = an.device_analogue(20.0, beta, 0.05, temperature_mK=mK).set_index("system")
    dev, sgd, sa = t.loc["device (measured)"], t.loc["SGD (noisy quadratic model)"], t.loc["SA (Gibbs, sequential)"]
    assert dev["end_temperature"] == pytest.approx(1 / beta) and dev["beta_stderr"] == 0.05
    assert dev["freezeout_s"] == pytest.approx(s_star, abs=1e-3) and dev["freezeout_fraction"] == pytest.approx(s_star, abs=1e-3)
    T_end = 2 * physics.kT_GHz(mK) / float(B(1.0))
    assert sa["end_temperature"] == pytest.approx(T_end, rel=1e-12) and sa["freezeout_s"] == 1.0
    assert T_end < sgd["end_temperature"] < 2 * physics.kT_GHz(mK) / float(B(0.0))
    assert (t["shape"] == "linear").all() and np.allclose(t["instantaneous_end_temperature"], T_end, rtol=1e-12)
    hot = an.device_analogue(20.0, 1.05 / T_end, temperature_mK=mK).set_index("system")   # colder than the schedule ends
    assert np.isnan(hot.loc["device (measured)", "freezeout_s"])
    assert "no point of the anneal" in hot.loc["device (measured)", "note"]
    with pytest.raises(ValueError, match="beta_eff=0"):
        an.device_analogue(20.0, 0)


def test_sa_analogue_end_temperature_is_what_dwave_samplers_gives():
    """Isolated spins, Gibbs acceptance, sequential order: SA ends exactly at its last β (DESIGN.md §5)."""
    import dimod
    from dwave.samplers import SimulatedAnnealingSampler

    t = an.device_analogue([(0.0, 0.0), (10.0, 0.7), (20.0, 1.0)], 4.0, sweeps=100)
    betas = t.attrs["sa_beta_schedule"]
    h = 0.05
    bqm = dimod.BinaryQuadraticModel.from_ising({i: h for i in range(2000)}, {})
    ss = SimulatedAnnealingSampler().sample(bqm, num_reads=20, beta_schedule_type="custom", beta_schedule=betas,
                                           proposal_acceptance_criteria="Gibbs", randomize_order=False, seed=4)
    m = ss.record.sample.mean()
    beta_measured = -np.arctanh(m) / h
    sa = t.set_index("system").loc["SA (Gibbs, sequential)"]
    assert beta_measured == pytest.approx(sa["beta"], rel=0.03)
    assert sa["shape"].startswith("piecewise(knots=((0.0, 1.0), (0.5, 0.3")


def test_analogue_trend_calibrates_on_the_first_run_and_predicts_the_virtual_qpu_trend():
    from qasa.virtual import VirtualQPU

    vq = VirtualQPU(seed=0, topology_shape=[4], broken_nodes=[])
    times = [20.0, 1.0, 5.0, 100.0, 500.0]
    runs = [{"anneal": ta, "beta": float(vq.truth_for(annealing_time=ta)["beta"].median()), "label": f"{ta:g} µs"}
            for ta in times]
    tr = an.analogue_trend(runs, temperature_mK=vq.preset.temperature_mK, schedule=vq.preset.schedule)
    assert tr.attrs["calibrated"] and tr["sgd_beta"].iloc[0] == pytest.approx(runs[0]["beta"], rel=1e-9)
    by_time = tr.sort_values("annealing_time")
    assert by_time["measured_beta"].is_monotonic_increasing and by_time["sgd_beta"].is_monotonic_increasing
    assert np.all(np.diff(by_time["sgd_beta"]) > 0)                      # longer anneals freeze later
    assert tr.attrs["rank_agreement"] == pytest.approx(1.0)
    assert np.allclose(tr["sa_beta"], tr["sa_beta"].iloc[0])             # SA has no freeze-out: flat
    assert list(tr["label"]) == [r["label"] for r in runs]
    assert tr["measured_trend"].iloc[0] == 1.0 and tr["sgd_trend"].iloc[0] == 1.0
    fixed = an.analogue_trend(runs[:2], eta0=0.01, steps_per_us=100.0)
    assert not fixed.attrs["calibrated"] and np.isnan(fixed.attrs["rank_agreement"])
    with pytest.raises(ValueError, match="outside what the SGD analogue reaches"):
        an.analogue_trend([{"anneal": 20.0, "beta": 1e3}])
    with pytest.raises(ValueError, match=r"run 0 lacks \['beta'\]"):
        an.analogue_trend([{"anneal": 20.0}])


def test_shape_of_anneal_round_trips_through_the_exporter():
    from dwave.system.testing import MockDWaveSampler

    from qasa.schedules import shape_of_anneal, to_anneal_schedule

    sched = [(0.0, 0.0), (5.0, 0.4), (15.0, 0.5), (20.0, 1.0)]
    sh = shape_of_anneal(sched)
    export = to_anneal_schedule(sh, MockDWaveSampler(), 20.0, points=4)
    assert np.allclose(export.schedule, sched, atol=1e-12) and export.max_error < 1e-12
    assert shape_of_anneal(20.0).label == "linear" == shape_of_anneal([(0, 0), (7.5, 1)]).label


def test_analogue_runs_from_assessed_datasets_feed_the_trend():
    import qasa
    from qasa.fitting import fit
    from qasa.virtual import VirtualQPU

    vq = VirtualQPU(seed=1, topology_shape=[2], broken_nodes=[])
    runs = {}
    for ta in (2.0, 50.0, 400.0):
        protocol = qasa.Protocol.grid(1.0, 0.1, reads_per_h=1500, annealing_time=ta, seed=2)
        ds = qasa.run(protocol, vq)
        runs[f"{ta:g} µs"] = (ds, fit(ds, "qasa"))
    records = an.analogue_runs(runs)
    assert [r["anneal"] for r in records] == [2.0, 50.0, 400.0] and all(r["beta_stderr"] > 0 for r in records)
    constants = an.device_constants(ds.device.get("solver"))          # the virtual Advantage_system4.1
    assert constants == {"temperature_mK": 15.4, "schedule": "Advantage_system6.2"}
    tr = an.analogue_trend(records, **constants)
    truth = [float(vq.truth_for(annealing_time=ta)["beta"].median()) for ta in (2.0, 50.0, 400.0)]
    assert np.allclose(tr["measured_beta"], truth, rtol=0.05)          # the fit recovers the device's β trend
    assert tr["measured_beta"].is_monotonic_increasing and tr["sgd_beta"].is_monotonic_increasing
    assert an.device_constants("Unknown_solver") == {}

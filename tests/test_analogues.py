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

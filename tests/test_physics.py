"""Single-qubit physics against independent references."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from qasa.virtual.physics import (bloch_equilibrium, calibrate_rate, evolve, freezeout_beta, freezeout_point,
                          kT_GHz, load_schedule, lowpass)

W = 2 * np.pi * 1e3   # GHz → rad/µs


def test_units_and_freezeout_beta_match_dwave_system():
    from dwave.system.temperatures import freezeout_effective_temperature

    assert kT_GHz(15.4) == pytest.approx(0.32088, rel=1e-4)
    for B, T in ((3.5, 15.4), (8.4, 20.0)):
        assert 1 / freezeout_beta(B, T) == pytest.approx(freezeout_effective_temperature(B, T), rel=1e-6)


def test_published_tables_load():
    s = load_schedule("Advantage_system6.2")
    assert len(s.s) >= 1000 and s.s[0] == 0 and s.s[-1] == pytest.approx(1.0)
    assert s.A_of(0.0) == pytest.approx(9.626948) and s.B_of(0.0) == pytest.approx(0.2316712)
    assert np.all(np.diff(s.B) >= 0)


@pytest.mark.parametrize("h", [0.05, pytest.param(-0.7, marks=pytest.mark.slow)])
def test_closed_dynamics_match_solve_ivp_to_1e6(h):
    sched = load_schedule("Advantage_system6.2")
    ta = 0.02

    def rhs(t, r):
        s = t / ta
        return np.cross(W * np.array([-sched.A_of(s), 0.0, sched.B_of(s) * h]), r)

    x0, z0 = bloch_equilibrium(np.array([-sched.A_of(0.0)]), np.array([sched.B_of(0.0) * h]), 0.0)
    ref = solve_ivp(rhs, (0, ta), [x0[0], 0.0, z0[0]], method="DOP853", rtol=1e-11, atol=1e-12).y[2, -1]
    t = np.linspace(0, ta, 10_001)
    z = evolve(t, -sched.A_of(t / ta), sched.B_of(t / ta), np.array([h]), kT=0.0)[0]
    assert abs(z - ref) < 1e-6


def test_landau_zener_formula():
    """H = ½(Δσˣ + v t σᶻ): diabatic probability exp(−π Δ² / (2 v)) (angular units)."""
    delta, v = 0.002, 0.01          # GHz and GHz/µs
    u = np.linspace(-1, 1, 40_001)
    t = 2000 * np.sinh(8 * u) / np.sinh(8)           # dense at the crossing, ±2000 µs wide
    z = evolve(t, np.full(t.size, delta), v * t, np.array([1.0]), kT=0.0)[0]
    p_diabatic = (1 + z) / 2
    expected = np.exp(-np.pi * (W * delta) ** 2 / (2 * W * v))
    assert p_diabatic == pytest.approx(expected, abs=5e-5)   # finite-time corrections ~ Δ/(v T)


def test_open_dynamics_relax_to_the_gibbs_state_when_held():
    """A long pause with strong relaxation ends in the Gibbs state of H(s_pause), transverse field included."""
    sched = load_schedule("Advantage_system6.2")
    kT = kT_GHz(15.4)
    s_p = 0.55
    h = np.array([-0.2, 0.01, 0.1, 0.4])
    t = np.linspace(0, 50, 20_001)
    A, B = sched.A_of(s_p), sched.B_of(s_p)
    z = evolve(t, np.full(t.size, -A), np.full(t.size, B), h, kT=kT, rate=np.full(t.size, 5.0),
               r0=(np.zeros(4), np.zeros(4), np.ones(4)))
    _, z_eq = bloch_equilibrium(np.full(4, -A), B * h, kT)
    assert np.allclose(z, z_eq, atol=1e-8)


def test_freezeout_moves_later_with_slower_anneals_and_pauses():
    sched = load_schedule("Advantage_system6.2")
    c = calibrate_rate(sched, 0.612, 20.0)
    assert freezeout_point(sched, c, 20.0) == pytest.approx(0.612, abs=1e-4)
    s_fast, s_slow = freezeout_point(sched, c, 1.0), freezeout_point(sched, c, 200.0)
    assert s_fast < 0.612 < s_slow
    # a 100 µs pause at s = 0.64 (after the 20 µs freeze-out) lets the qubit thermalize there
    paused = freezeout_point(sched, c, anneal_schedule=[(0, 0), (12.8, 0.64), (112.8, 0.64), (120, 1)])
    assert paused == pytest.approx(0.64, abs=0.01)
    # a quench from s = 0.5 to 1 in 0.5 µs freezes early in the quench, well before 0.612
    quench = freezeout_point(sched, c, anneal_schedule=[(0, 0), (10, 0.5), (10.5, 1)])
    assert 0.5 <= quench < 0.56


def test_lowpass_of_a_step_is_exponential():
    t = np.linspace(0, 1, 1001)
    g = np.where(t >= 0.2, 1.0, 0.0)
    g[200] = 0.0                                     # step between samples 200 and 201
    out = lowpass(t, np.interp(t, [0, 0.2, 0.201, 1], [0, 0, 1, 1]), 3.0)
    tau = 1 / (2 * np.pi * 3.0)
    later = t > 0.3
    assert np.allclose(out[later], 1 - np.exp(-(t[later] - 0.2005) / tau), atol=2e-3)

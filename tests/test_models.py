"""Closed forms and identities of DESIGN.md §3, and Jacobians against finite differences."""

import numpy as np
import pytest

from qasa.models import MODELS, get_model, m_qasa, with_readout

H = np.linspace(-1, 1, 81)


@pytest.mark.parametrize("name, theta", [
    ("gibbs", [5.0]), ("gibbs-bias", [5.0, 0.02]), ("gaussian-noise", [6.0, -0.01, 0.04]),
    ("qasa", [8.0, 0.01, 0.1, 0.05]), ("qasa", [8.0, 0.0, 0.0, 0.0]), ("qasa", [3.0, 0.2, 1.5, 0.3]),
    ("qasa+readout", [8.0, 0.01, 0.1, 0.05, 0.02]),
])
def test_jacobian_matches_central_differences(name, theta):
    model = get_model(name)
    theta = np.array([theta])
    _, jac = model.m_jac(H, theta)
    for j in range(theta.shape[1]):
        d = 1e-6 * max(1.0, abs(theta[0, j]))
        tp, tm = theta.copy(), theta.copy()
        tp[0, j] += d
        tm[0, j] -= d
        fd = (model.m(H, tp) - model.m(H, tm)) / (2 * d)
        assert np.allclose(jac[..., j], fd, atol=1e-7), (name, j)


def test_qasa_without_bias_and_noise_is_scaled_tanh():
    beta, gamma = 8.0, 0.1
    expected = np.tanh(beta * np.sqrt(1 + gamma**2) * H) / np.sqrt(1 + gamma**2)
    assert np.allclose(m_qasa(H, beta, 0, gamma, 0)[0], expected, atol=1e-14)


def test_qasa_saturates_at_inverse_sqrt_one_plus_gamma_squared():
    for gamma in (0.05, 0.3, 1.0):
        m = m_qasa(np.array([50.0]), 8.0, 0, gamma, 0)[0, 0]
        assert m == pytest.approx(1 / np.sqrt(1 + gamma**2), rel=1e-12)


def test_qasa_slope_at_zero_is_beta_sech2_beta_eta():
    # DESIGN.md §3: β = 8, η = 0.05 → 6.845
    eps = 1e-7
    m = m_qasa(np.array([-eps, eps]), 8.0, 0.0, 0.0, 0.05)[0]
    slope = (m[1] - m[0]) / (2 * eps)
    assert slope == pytest.approx(8 / np.cosh(0.4) ** 2, rel=1e-8)
    assert round(slope, 3) == 6.845


def test_qasa_at_origin_is_finite_and_zero():
    assert m_qasa(np.array([0.0]), 8.0, 0.0, 0.3, 0.0)[0, 0] == 0.0
    m, jac = MODELS["qasa"].m_jac(np.array([0.0]), np.array([[8.0, 0.0, 0.0, 0.0]]))
    assert np.isfinite(jac).all()
    assert jac[0, 0, 1] == pytest.approx(8.0)  # ∂m/∂b = β at the origin


def test_large_beta_h_does_not_overflow():
    m, jac = MODELS["qasa"].m_jac(np.array([-4.0, 4.0]), np.array([[1e4, 0.0, 0.1, 0.01]]))
    assert np.isfinite(m).all() and np.isfinite(jac).all()
    assert np.all(np.abs(m) <= 1)


def test_gauge_average_of_static_bias_is_qasa_mixture():
    """Averaging gauges +1 and -1 turns bias b0 into b = 0, η = |b0| exactly (γ = 0)."""
    beta, b0 = 6.0, 0.07
    p_plus = 0.5 * (1 + np.tanh(beta * (H + b0)))          # gauge +1
    p_minus = 1 - 0.5 * (1 + np.tanh(beta * (-H + b0)))    # gauge -1: program -h, flip the spin back
    average = 0.5 * (p_plus + p_minus)
    assert np.allclose(average, 0.5 * (1 + m_qasa(H, beta, 0.0, 0.0, abs(b0))[0]), atol=1e-14)


def test_gaussian_noise_matches_direct_integration():
    from scipy import integrate

    beta, b, sigma = 5.0, 0.02, 0.08
    m = MODELS["gaussian-noise"].m(np.array([0.1, -0.3]), np.array([[beta, b, sigma]]))[0]
    for h, value in zip((0.1, -0.3), m):
        exact, _ = integrate.quad(lambda d: np.tanh(beta * (h + b + d)) * np.exp(-d * d / (2 * sigma**2))
                                  / np.sqrt(2 * np.pi * sigma**2), -10 * sigma, 10 * sigma)
        assert value == pytest.approx(exact, abs=1e-10)


def test_readout_error_shrinks_the_magnetization():
    base = MODELS["qasa"]
    wrapped = with_readout(base)
    theta = np.array([[8.0, 0.01, 0.1, 0.05]])
    p = base.p_down(H, theta)
    pe = wrapped.p_down(H, np.column_stack([theta, [0.03]]))
    assert np.allclose(pe, 0.03 + (1 - 2 * 0.03) * p, atol=1e-15)


def test_starts_respect_bounds_and_unknown_model_is_rejected():
    model = get_model("qasa")
    nd = np.array([[0, 10, 50, 90, 100]], float)
    nt = np.full_like(nd, 100)
    for s in model.starts(np.linspace(-1, 1, 5), nd, nt):
        assert (s >= np.array(model.lower)).all()
    with pytest.raises(ValueError, match="unknown model"):
        get_model("lorentzian")


@pytest.mark.parametrize("name, theta", [
    ("qasa", [8.0, 0.01, 0.1, 0.05]), ("qasa", [8.0, 0.01, 0.0, 0.0]), ("qasa", [5.0, -0.02, 3e-5, 2e-5]),
    ("gaussian-noise", [6.0, -0.01, 0.0]), ("gaussian-noise", [6.0, -0.01, 0.04]),
    ("qasa+readout", [8.0, 0.01, 0.0, 0.0, 0.01]),
])
def test_internal_parametrization_is_regular_on_the_bound(name, theta):
    """On φ = θ² for the even parameters, ∂m/∂φ matches finite differences, also at θ = 0 where
    ∂m/∂θ vanishes identically (DESIGN.md §6)."""
    model = get_model(name)
    theta = np.array([theta])
    phi = model.to_internal(theta)
    assert np.allclose(model.from_internal(phi), theta)
    _, jac_theta = model.m_jac(H, theta)
    _, jac = model.internal.m_jac(H, phi)
    for j in np.flatnonzero(model.even_mask):
        d = 1e-9
        tp = phi.copy()
        tp[0, j] += d
        if phi[0, j] > d:
            tm = phi.copy()
            tm[0, j] -= d
            fd = (model.internal.m(H, tp) - model.internal.m(H, tm)) / (2 * d)
        else:
            fd = (model.internal.m(H, tp) - model.internal.m(H, phi)) / d
        assert np.allclose(jac[..., j], fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max()), (name, j)
        if theta[0, j] == 0.0:
            assert np.abs(jac_theta[..., j]).max() < 1e-15 and np.abs(jac[..., j]).max() > 0.1
    assert model.internal.lower[int(np.flatnonzero(model.even_mask)[0])] == 0.0
    assert get_model("gibbs").internal is get_model("gibbs")


def _awkward_qasa_rows(n: int = 400, seed: int = 3) -> np.ndarray:
    """QASA parameters with every special case: η = 0, γ = 0, both, tiny η (βη around 1e-4), β = 0."""
    rng = np.random.default_rng(seed)
    theta = np.column_stack([rng.uniform(0.5, 12, n), rng.normal(0, 0.02, n), rng.uniform(0, 0.3, n),
                             rng.uniform(0, 0.1, n)])
    theta[:60, 3] = 0.0
    theta[60:100, 2] = 0.0
    theta[100:120, 2:] = 0.0
    theta[120:180, 3] = 10 ** rng.uniform(-9, -3, 60) / theta[120:180, 0]
    theta[180:190, 0] = 0.0
    theta[190:195, 1] = 0.0
    return theta


@pytest.mark.parametrize("rows", [slice(None), slice(100, 400), slice(130, 400), slice(200, 400)])
def test_fused_qasa_model_equals_the_generic_internal_model(rows):
    """The fitter's fused QASA function on φ (scratch workspace, per-row factors applied after the
    sum over h) gives the same m and Jacobian as the generic θ² wrapper around the plain model, on
    rows with η = 0, γ = 0, tiny βη and β = 0, whether few or many rows need the η → 0 limit."""
    from qasa.fitting import _evaluate, _evaluate_block
    from qasa.models import _internal_fn, _qasa, _qasa_phi

    theta = _awkward_qasa_rows()[rows]
    phi = get_model("qasa").to_internal(theta)
    m0, dm0 = _internal_fn(_qasa, np.array([2, 3]))(H, phi, True)
    m1, dm1 = _qasa_phi(H, phi, True)
    assert np.allclose(m1, m0, rtol=0, atol=1e-15)
    for j in range(4):
        scale = np.abs(dm0[j]).max(1, keepdims=True) + 1e-300
        # the generic wrapper takes a secant (relative error ~ β²·1e-8) on the bound, the fused one the limit
        assert (np.abs(dm1[j] - dm0[j]) / scale).max() < 1e-6, j
    # the likelihood pieces through the scratch path equal those through the plain Jacobian (on rows
    # off the bounds: on them the score sums residuals against the secant's 1e-6 errors)
    regular = (theta[:, 0] > 0) & (theta[:, 2] > 1e-3) & (theta[:, 0] * theta[:, 3] > 1e-3)
    theta, phi, m0 = theta[regular], phi[regular], m0[regular]
    p = np.clip(0.5 * (1 + m0), 0.01, 0.99)
    nt = np.full(p.shape, 1000.0)
    nd = np.round(p * nt)
    ll_ws, s_ws, f_ws = _evaluate(get_model("qasa").internal, H, phi, nd, nt)
    plain = MODELS["qasa"].internal
    generic = type(plain)(plain.name, plain.params, plain.lower, plain.upper, plain.units, plain.scale,
                          _internal_fn(_qasa, np.array([2, 3])), plain._starts)
    ll_g, s_g, f_g = _evaluate_block(generic, H, phi, nd, nt, True)
    assert np.allclose(ll_ws, ll_g, rtol=1e-9)     # rounding of m near saturation (p ~ 1e-12)
    assert np.allclose(s_ws, s_g, rtol=1e-6, atol=1e-6 * np.abs(s_g).max())
    assert np.allclose(f_ws, f_g, rtol=1e-6, atol=1e-9 * np.abs(f_g).max())

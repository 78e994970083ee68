r"""The estimand: which QASA parameters a fit of a virtual device's data converges to.

A fit of the QASA model to data whose true response is *not* exactly a QASA curve (readout error,
flux drift, Gaussian field noise, the open-system dynamics) converges, as reads grow, to the
pseudo-true parameters θ* that minimize the Kullback–Leibler divergence from the true response to
the model over the design that was run (White, "Maximum likelihood estimation of misspecified
models", Econometrica 1982)::

    θ* = argmin_θ Σ_j N_j [ p_j log(p_j / P_j(θ)) + (1 − p_j) log((1 − p_j) / (1 − P_j(θ))) ]

with, per qubit, ``j`` running over the distinct programmed fields x_j of the protocol, ``N_j`` the
reads at x_j and ``p_j`` the true probability of −1 averaged over those reads (counts at the same
programmed field are exchangeable in the likelihood, so only their sum matters).

Why θ* is not the physical truth (docs/DESIGN.md §6):

- readout error ε: ``m_obs = (1 − 2ε) m``; at large |h| the model saturates at P(wrong) ≈ γ²/4 and ε
  adds to the same tail, so γ* > γ (closed form at saturation: 1 + γ*² = (1 + γ²)/(1 − 2ε)²), and β*
  shrinks by about 2ε;
- flux drift: each call sees b + d_c; b* ≈ b + the reads-and-information-weighted mean of d_c, and
  the spread of d_c adds in quadrature to η;
- the dynamics level: the response is whatever the Bloch equation gives; θ* is its projection.

The minimization is Fisher scoring (Gauss–Newton for the binomial likelihood with expected counts),
vectorized over qubits, with step halving and the bounds β, γ, η ≥ 0; on the bound η = 0, when the
full step points below it, the step is taken in (β, b, γ) alone (the active set: a full step cut off
at the bound stalls short of the minimum). The caller starts it near θ* (:meth:`qasa.virtual.VirtualQPU.estimand`
moves the truth by the closed forms above).
It is deterministic and runs on the true probabilities, not on sampled data; it shares nothing with
:mod:`qasa.fitting` except the model function of :mod:`qasa.models`.
"""

from __future__ import annotations

import numpy as np

from qasa.models import MODELS

__all__ = ["kl_projection", "readout_gamma"]

_LOWER = np.array([0.0, -np.inf, 0.0, 0.0])


def readout_gamma(gamma: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """γ* matching the saturated tail with readout error ε: 1 + γ*² = (1 + γ²)/(1 − 2ε)²."""
    gamma, eps = np.asarray(gamma, float), np.asarray(eps, float)
    return np.sqrt((1.0 + gamma**2) / (1.0 - 2.0 * eps) ** 2 - 1.0)


def _kl(p: np.ndarray, q: np.ndarray, n: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-300, 1 - 1e-16)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return (n * (a + b)).sum(1)


def kl_projection(x: np.ndarray, n: np.ndarray, p: np.ndarray, start: np.ndarray,
                  iterations: int = 60, tol: float = 1e-8) -> np.ndarray:
    """Pseudo-true QASA parameters per qubit (see the module docstring).

    Args:
        x: programmed fields, shape (q, k) (or (k,) shared by every qubit).
        n: reads at each field, shape (q, k); zero entries are ignored.
        p: true probability of −1 at each field, shape (q, k).
        start: starting (β, b, γ, η) per qubit, shape (q, 4) (the physical truth).
        iterations: most Fisher-scoring steps.
        tol: a qubit stops when its divergence improves by less than this (nats; 1e-8 nats moves θ
            by ~10⁻⁴ standard errors).

    Returns:
        θ* of shape (q, 4).
    """
    model = MODELS["qasa"]
    fused = model.internal            # the same m to rounding, on φ = (β, b, γ², η²): twice as fast

    def p_down(xs: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + fused.m(xs, model.to_internal(theta)))

    x = np.broadcast_to(np.asarray(x, float), np.shape(p))
    n, p = np.asarray(n, float), np.clip(np.asarray(p, float), 0.0, 1.0)
    phi = _to_phi(np.maximum(np.asarray(start, float), _LOWER))
    loss = _kl(p, p_down(x, _from_phi(phi)), n)
    active = np.arange(len(phi))
    for _ in range(iterations):
        xa, na, pa, ph = x[active], n[active], p[active], phi[active]
        m, jac = _m_jac_phi(model, xa, ph)                # (q, k), (q, k, 4)
        q = np.clip(0.5 * (1.0 + m), 1e-12, 1 - 1e-12)
        dq = 0.5 * jac
        w = na / (q * (1.0 - q))
        score = np.einsum("qk,qkp->qp", w * (pa - q), dq)
        info = np.einsum("qk,qka,qkb->qab", w, dq, dq) + 1e-12 * np.eye(4)
        step = np.linalg.solve(info, score[..., None])[..., 0]
        # on the bound v = η² = 0 with the step pointing below it: a step in (β, b, γ) alone (the
        # bound's active set), not the full step cut off at the bound, which stalls short of the minimum
        held = (ph[:, 3] <= 0.0) & (step[:, 3] < 0.0)
        if held.any():
            step[held, :3] = np.linalg.solve(info[held][:, :3, :3], score[held, :3, None])[..., 0]
            step[held, 3] = 0.0
        t = np.ones(len(active))
        pending = np.ones(len(active), bool)
        gain = np.zeros(len(active))
        for _ in range(12):                               # step halving, per qubit
            i = np.flatnonzero(pending)
            if i.size == 0:
                break
            cand = np.maximum(ph[i] + t[i, None] * step[i], _LOWER)
            cl = _kl(pa[i], p_down(xa[i], _from_phi(cand)), na[i])
            ok = cl <= loss[active[i]]
            phi[active[i[ok]]] = cand[ok]
            gain[i[ok]] = loss[active[i[ok]]] - cl[ok]
            loss[active[i[ok]]] = cl[ok]
            pending[i[ok]] = False
            t[i] *= 0.5
        active = active[gain > tol]
        if active.size == 0:
            break
    return _from_phi(phi)


def _to_phi(theta: np.ndarray) -> np.ndarray:
    """Solver coordinates (β, b, γ, v = η²): m depends on η only through η² (it is even in η), so
    ∂m/∂v stays finite at η = 0 and a step can leave the bound, unlike ∂m/∂η = 0 there."""
    out = theta.copy()
    out[:, 3] = theta[:, 3] ** 2
    return out


def _from_phi(phi: np.ndarray) -> np.ndarray:
    out = phi.copy()
    out[:, 3] = np.sqrt(np.maximum(phi[:, 3], 0.0))
    return out


def _m_jac_phi(model, x: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m and ∂m/∂(β, b, γ, v): ∂m/∂v = (∂m/∂η)/(2η), taken at η ≥ 10⁻⁶ (the limit ½ ∂²m/∂η² at 0)."""
    theta_j = _from_phi(phi)
    theta_j[:, 3] = np.maximum(theta_j[:, 3], 1e-6)       # m moves by O(10⁻¹²) there: one evaluation
    m, jac = model.m_jac(x, theta_j)
    jac[..., 3] = jac[..., 3] / (2.0 * theta_j[:, 3])[:, None]
    return m, jac

r"""Response models: the probability that a qubit reads -1 as a function of the field h.

Every model gives the magnetization ``m(h) = P(-1) - P(+1)``, so ``P(s = -1 | h) = (1 + m) / 2``
(a positive h favours -1 in D-Wave's convention ``E = Σ h_i s_i``). Models are pure vectorized
functions: ``h`` has shape ``(k,)`` and ``theta`` shape ``(n, p)``, one row per qubit;
:meth:`Model.m_jac` also returns the Jacobian ``∂m/∂θ`` of shape ``(n, k, p)`` (internally the
functions build it parameter-major, ``(p, n, k)``, which is faster to fill and contract).

Models (units: β in 1/h, all others in units of h unless stated):

``gibbs`` (β)
    Classical freeze-out, ``m = tanh(β h)``.
``gibbs-bias`` (β, b)
    ``m = tanh(β (h + b))``.
``gaussian-noise`` (β, b, σ)
    Gaussian field noise averaged exactly: ``m = E_{δ~N(0,σ²)} tanh(β (h + b + δ))``, evaluated by
    Gauss–Hermite quadrature with :data:`GH_NODES` nodes (Vuffray et al., PRX Quantum 2022).
``qasa`` (β, b, γ, η)
    The reference model of Nelson et al. (2021), a mixture of two single-qubit quantum Gibbs states::

        f(x, u) = x · tanh(√(x² + u²)) / √(x² + u²)      (f = x when x = u = 0)
        m(h)    = ½ [ f(β(h + b + η), βγh) + f(β(h + b − η), βγh) ]

    With ``b = η = 0``: ``m = tanh(β√(1+γ²) h)/√(1+γ²)``, saturating at ``1/√(1+γ²)``; with
    ``γ = 0`` the slope at ``h = 0`` is ``β sech²(βη)``.

Readout error (:func:`with_readout`): each read is flipped with probability ε, so
``P' = ε + (1 − 2ε) P`` and ``m' = (1 − 2ε) m``; ε ∈ [0, 0.5].

Evaluation is numerically safe: ``tanh`` never overflows, ``tanh(r)/r`` and its derivative use
their Taylor series for ``r < 1e-2``.

Even parameters and the internal parametrization
    ``m`` is an even function of γ and η (they enter through ``u²`` and the symmetric pair
    ``h + b ± η``) and of σ (the noise law is symmetric), so ``∂m/∂θ = 0`` at ``θ = 0``: on the
    bound the score in θ vanishes whatever the data, and a projected optimizer clipped onto
    ``θ = 0`` can never leave it (DESIGN.md §6). :attr:`Model.even` names these parameters and
    :attr:`Model.internal` is the same model on ``φ = θ²`` for them (``φ ≥ 0``), in which the
    likelihood is regular at the bound: ``∂m/∂φ = (∂m/∂θ)/(2θ) → ½ ∂²m/∂θ²`` as ``θ → 0``, which is
    not zero. For ``θ < 1e-4`` that limit is taken as the secant ``(m(φ + 1e-8) − m(φ))/1e-8``
    (relative error ~ β²·1e-8). Fits optimize in φ and report θ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping

import numpy as np

from qasa.parameters import PARAMETERS, ParameterInfo

__all__ = ["Model", "MODELS", "get_model", "with_readout", "GH_NODES", "m_qasa", "register_model",
           "unregister_model", "compared_models", "nested_pairs"]

#: Below this value an even parameter's φ-derivative is a secant (see module docstring).
EVEN_FLOOR = 1e-4

#: Gauss–Hermite nodes for the Gaussian-noise average.
GH_NODES = 40
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(GH_NODES)
_GH_Z = np.sqrt(2.0) * _GH_X          # standard normal nodes
_GH_W = _GH_W / np.sqrt(np.pi)        # weights sum to 1

_SMALL = 1e-2


def _sech2(x: np.ndarray) -> np.ndarray:
    """sech²(x) without overflow."""
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / (1.0 + e) ** 2


def _g_and_G(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return t = tanh(r), g(r) = tanh(r)/r and G(r) = g'(r)/r = (r sech²r − tanh r)/r³, safe at r → 0.

    Entries with ``r < 1e-2`` use the Taylor series ``g = 1 − r²/3 + 2r⁴/15`` and
    ``G = −2/3 + 8r²/15 − 34r⁴/105`` (the closed forms cancel catastrophically there).
    """
    t = np.tanh(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = t / r
        G = (r * (1.0 - t * t) - t) / (r * r * r)
    small = r < _SMALL
    if small.any():
        rs2 = r[small] ** 2
        g[small] = 1.0 - rs2 / 3.0 + 2.0 * rs2 * rs2 / 15.0
        G[small] = -2.0 / 3.0 + 8.0 * rs2 / 15.0 - 34.0 * rs2 * rs2 / 105.0
    return t, g, G


def _h2d(h: np.ndarray, n: int) -> np.ndarray:
    h = np.asarray(h, dtype=float)
    return np.broadcast_to(h, (n, h.shape[-1])) if h.ndim == 1 else h


def _cols(theta: np.ndarray) -> list[np.ndarray]:
    theta = np.asarray(theta, dtype=float)
    return [theta[:, j:j + 1] for j in range(theta.shape[1])]


# -- magnetization functions with Jacobians --------------------------------------------------------
def _gibbs(h, theta, jac):
    (beta,) = _cols(theta)
    h = _h2d(h, len(beta))
    m = np.tanh(beta * h)
    if not jac:
        return m, None
    return m, (h * (1.0 - m * m))[None]


def _gibbs_bias(h, theta, jac):
    beta, b = _cols(theta)
    x = _h2d(h, len(beta)) + b
    m = np.tanh(beta * x)
    if not jac:
        return m, None
    s = 1.0 - m * m
    return m, np.stack([x * s, beta * s])


def _gaussian(h, theta, jac):
    beta, b, sigma = _cols(theta)
    x = (_h2d(h, len(beta)) + b)[..., None] + sigma[..., None] * _GH_Z      # (n, k, q)
    t = np.tanh(beta[..., None] * x)
    m = t @ _GH_W
    if not jac:
        return m, None
    s = (1.0 - t * t)
    dbeta = (x * s) @ _GH_W
    db = beta * (s @ _GH_W)
    dsigma = beta * ((s * _GH_Z) @ _GH_W)
    return m, np.stack([dbeta, db, dsigma])


def m_qasa(h: np.ndarray, beta, b, gamma, eta) -> np.ndarray:
    """The reference QASA magnetization for scalar or broadcastable parameters (convenience)."""
    theta = np.column_stack([np.atleast_1d(v).astype(float) for v in np.broadcast_arrays(beta, b, gamma, eta)])
    return _qasa(np.atleast_1d(h), theta, False)[0]


def _qasa(h, theta, jac):
    beta, b, gamma, eta = _cols(theta)
    h = np.asarray(h, dtype=float)
    u = (beta * gamma) * h
    u2 = u * u
    hb = h + b
    parts = []
    for shift in (hb + eta, hb - eta):              # the two mixture components, h + b ± η
        x = beta * shift
        r = np.sqrt(x * x + u2)
        _, g, G = _g_and_G(r)
        xG = x * G
        parts.append((x * g, g + x * xG, xG, shift))  # f, ∂f/∂x, ∂f/∂u / u, h + b ± η
    (fp, fxp, xGp, sp), (fm, fxm, xGm, sm) = parts
    m = 0.5 * (fp + fm)
    if not jac:
        return np.broadcast_to(m, (len(beta), m.shape[-1])), None
    fu = (xGp + xGm) * u
    half_beta = 0.5 * beta
    dm = np.empty((4,) + m.shape)
    dm[0] = 0.5 * (fxp * sp + fxm * sm + fu * gamma * h)
    dm[1] = half_beta * (fxp + fxm)
    dm[2] = half_beta * fu * h
    dm[3] = half_beta * (fxp - fxm)
    return m, dm


#: Below this value of ``r`` the η-curvature term ``K(r) = G'(r)/r`` uses its Taylor series.
_SMALL_K = 3e-2
#: Below this half-separation ``d = βη`` of the two components, ∂m/∂(η²) uses its η → 0 limit
#: ``β²/4 · (f_xx(x₊) + f_xx(x₋))`` (at η = 0, the usual case, the components coincide and f_xx is
#: evaluated once).
_SMALL_D = 1e-4


def _buf(ws: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A scratch array of ``shape`` from the workspace ``ws`` (reused across calls)."""
    a = ws.get((name, shape))
    if a is None:
        a = ws[(name, shape)] = np.empty(shape)
    return a


def _qasa_phi(h, phi, jac, ws=None):
    r"""The QASA model on ``φ = (β, b, γ², η²)``, fused for speed (the fitter's inner loop).

    Same magnetization as :func:`_qasa`; its Jacobian is taken in φ directly (``x± = β(h + b ± η)``,
    ``u² = β²γ²h²``, ``f = x g(r)``, ``g = tanh(r)/r``, ``G = g'(r)/r``, ``f_x = g + x²G``):

    - ``∂m/∂β = 1/(2β) · Σ± (x± f_x(x±) + x± G(r±) u²)`` (f is a function of βs and βγh, so
      ``β ∂f/∂β = x f_x + u f_u`` with ``u f_u = x G u²``); rows with β = 0 use
      ``½ Σ± f_x(x±)(h + b ± η)`` (no u² term there);
    - ``∂m/∂b = β/2 · Σ± f_x(x±)``;
    - ``∂m/∂(γ²) = β²h²/4 · Σ± x± G(r±)`` (γ enters only through u² and ``∂f/∂(u²) = x G/2``),
      finite at γ = 0;
    - ``∂m/∂(η²) = β/(4η) · (f_x(x₊) − f_x(x₋))``, and for ``βη < 1e-4`` its limit
      ``β²/4 · (f_xx(x₊) + f_xx(x₋))`` (error O((βη)²)) with ``f_xx = 3xG + x³K``,
      ``K = G'(r)/r = −2 tanh(r) sech²(r)/r³ − 3G/r²`` (Taylor series ``16/15 − 136r²/105 + 992r⁴/945``
      for ``r < 0.03``).

    Every element-wise step writes into a scratch array of the workspace ``ws`` (a dict the caller
    keeps between calls): allocating a fresh ``(n, k)`` array costs several times the arithmetic on
    it, and so does multiplying by a per-row column. So with a workspace the function returns
    ``(m, dm, scale)``: ``dm`` without its per-row factors (1/(2β), β/2, β²/4, β/(4η) or β²/4), which
    ``scale`` ``(n, 4)`` holds, for the caller to apply after summing over h; ``m`` and ``dm`` are
    scratch arrays, valid until the next call with the same ``ws``. Without a workspace it returns
    ``(m, dm)`` with ``dm`` the Jacobian. Agrees with ``_internal_fn(_qasa)`` to rounding
    (tests/test_models.py).
    """
    scratch = ws is not None
    ws = {} if ws is None else ws
    phi = np.asarray(phi, dtype=float)
    h = np.asarray(h, dtype=float)
    shape = (len(phi), h.shape[-1])

    def B(name):
        return _buf(ws, name, shape)

    beta, b = phi[:, 0:1], phi[:, 1:2]
    pg = np.maximum(phi[:, 2:3], 0.0)
    eta = np.sqrt(np.maximum(phi[:, 3:4], 0.0))
    d = beta * eta
    h2 = h * h
    u2 = np.multiply(h2, beta * beta * pg, out=B("u2"))
    xp = np.multiply(h, beta, out=B("xp"))
    xm = np.add(xp, beta * b - d, out=B("xm"))
    xp += beta * b + d
    near = _NearZeroEta(d, jac)
    m, parts = _qasa_components(xp, xm, u2, near, B, jac)
    if not jac:
        return m, None
    dm = _buf(ws, "dm", (4,) + shape)
    scale = np.empty((shape[0], 4))
    _qasa_phi_jacobian(dm, scale, h, h2, beta, b, eta, xp, xm, u2, parts, B("r"))
    _eta2_derivative(dm, scale, beta, eta, parts, near, B)
    if scratch:
        return m, dm, scale
    dm = dm * scale.T[:, :, None]
    return m, dm


class _NearZeroEta:
    """The rows of :func:`_qasa_phi` with ``d = βη < _SMALL_D``, where ∂m/∂(η²) takes its η → 0 limit
    ``β²/4 · Σ± f_xx(x±)``: ``close`` (a mask), ``split`` (close but η > 0: both components' f_xx) and
    ``whole`` (more than a quarter of the rows are close: f_xx is evaluated on every row, in scratch
    arrays, which costs less than gathering them). ``fxx``, ``fxx_split``: the f_xx sums, filled by
    :func:`_qasa_components` (``fxx`` of the first component on the close rows unless ``whole``)."""

    def __init__(self, d: np.ndarray, jac: bool) -> None:
        self.close = (d < _SMALL_D)[:, 0]
        self.split = self.close & (d[:, 0] > 0)         # near η = 0 but not on it: both components' f_xx
        self.count = int(self.close.sum()) if jac else 0
        self.whole = self.count > 0.25 * len(self.close)
        self.any_split = bool(self.count and self.split.any())
        self.fxx: float | np.ndarray = 0.0
        self.fxx_split: float | np.ndarray = 0.0


def _qasa_components(xp, xm, u2, near: _NearZeroEta, B: Callable, jac: bool):
    """``m = ½ Σ± x± g(r±)`` into ``B("m")``; with ``jac`` also per component ``(f_x, x G)`` in scratch
    arrays (``f_x = g + x²G``) and, on the rows ``near`` η = 0, the curvature ``f_xx`` that ∂m/∂(η²)
    needs there (into ``B("fxx")`` or ``near.fxx``, and ``near.fxx_split``). Returns ``(m, parts)``."""
    m = B("m")
    close, split = near.close, near.split
    parts = []
    for i, x in enumerate((xp, xm)):
        g, G, r, t = _g_G_into(x, u2, B, jac)
        if i == 0 and near.whole:
            _fxx_into(x, r, t, G, B("fxx"), B("K"), add=False)
        elif i == 0 and near.count:
            near.fxx = _fxx(x[close], r[close], t[close], G[close])
        if near.any_split:
            near.fxx_split = near.fxx_split + _fxx(x[split], r[split], t[split], G[split])
        if i == 0:
            np.multiply(x, g, out=m)
        else:
            m += np.multiply(x, g, out=B("r"))
        if jac:
            xG = np.multiply(x, G, out=B("xG" + "pm"[i]))
            fx = np.multiply(x, xG, out=B("fx" + "pm"[i]))
            fx += g
            parts.append((fx, xG))
    m *= 0.5
    return m, parts


def _qasa_phi_jacobian(dm, scale, h, h2, beta, b, eta, xp, xm, u2, parts, tmp) -> None:
    """Rows 0–2 of the φ-Jacobian of :func:`_qasa_phi` (β, b, γ²) into ``dm`` without their per-row
    factors, which go into ``scale`` (``tmp``: a scratch array)."""
    (fxp, xGp), (fxm, xGm) = parts
    # ∂m/∂β · 2β = Σ x f_x + u² Σ xG
    np.multiply(fxp, xp, out=dm[0])
    dm[0] += np.multiply(fxm, xm, out=tmp)
    np.add(xGp, xGm, out=dm[2])
    dm[0] += np.multiply(dm[2], u2, out=tmp)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale[:, 0] = 0.5 / beta[:, 0]
    flat = beta[:, 0] == 0.0
    if flat.any():          # β = 0: ½ Σ f_x (h + b ± η), from the unscaled sums
        hb = h + b[flat]
        dm[0][flat] = (fxp[flat] + fxm[flat]) * hb + (fxp[flat] - fxm[flat]) * eta[flat]
        scale[flat, 0] = 0.5
    # ∂m/∂b = β/2 Σ f_x
    np.add(fxp, fxm, out=dm[1])
    scale[:, 1] = 0.5 * beta[:, 0]
    # ∂m/∂(γ²) = β²/4 · h² Σ xG
    dm[2] *= h2
    scale[:, 2] = 0.25 * beta[:, 0] ** 2


def _eta2_derivative(dm, scale, beta, eta, parts, near: _NearZeroEta, B: Callable) -> None:
    """Row 3 of the φ-Jacobian of :func:`_qasa_phi`: ∂m/∂(η²) = β/(4η) (f_x(x₊) − f_x(x₋)), or its
    limit β²/4 · Σ f_xx on the rows ``near`` η = 0 (per-row factors into ``scale``, as rows 0–2)."""
    (fxp, _), (fxm, _) = parts
    close, split = near.close, near.split
    np.subtract(fxp, fxm, out=dm[3])
    with np.errstate(divide="ignore", invalid="ignore"):
        scale[:, 3] = beta[:, 0] / (4.0 * eta[:, 0])
    if near.whole:
        fxx = B("fxx")
        fxx *= 2.0                      # f_xx(x₊) + f_xx(x₋) with x₊ = x₋ (η = 0)
        np.copyto(dm[3], fxx, where=close[:, None])
    elif near.count:
        dm[3][close] = 2.0 * near.fxx
    if near.any_split:
        dm[3][split] = near.fxx_split
    scale[close, 3] = scale[close, 2]


def _g_G_into(x: np.ndarray, u2: np.ndarray, B: Callable, jac: bool):
    """``(g, G, r, t)`` at ``r = √(x² + u²)``: ``g = tanh(r)/r``, ``G = g'(r)/r`` (if ``jac``), ``t = tanh r``,
    in the scratch arrays ``B("g")``, ``B("G")``, ``B("r")``, ``B("t")``; Taylor series for ``r < 1e-2``
    as in :func:`_g_and_G`."""
    r2 = np.multiply(x, x, out=B("r2"))
    r2 += u2
    r = np.sqrt(r2, out=B("r"))
    t = np.tanh(r, out=B("t"))
    G = None
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.divide(t, r, out=B("g"))
        if jac:
            G = np.multiply(t, t, out=B("G"))
            np.subtract(1.0, G, out=G)          # sech² r
            G -= g
            G /= r2                             # (sech² r − tanh r / r) / r² = g'(r)/r
    small = _where_small(r, _SMALL)
    if small.size:                          # flat indices: a boolean mask would scan the whole chunk 3 more times
        rs2 = r2.reshape(-1)[small]
        g.reshape(-1)[small] = 1.0 - rs2 / 3.0 + 2.0 * rs2 * rs2 / 15.0
        if jac:
            G.reshape(-1)[small] = -2.0 / 3.0 + 8.0 * rs2 / 15.0 - 34.0 * rs2 * rs2 / 105.0
    return g, G, r, t


def _where_small(r: np.ndarray, below: float) -> np.ndarray:
    """Flat indices of the entries of the contiguous array ``r`` below ``below`` (none: one reduction)."""
    if r.min(initial=below) >= below:
        return _NONE
    return np.flatnonzero(r.reshape(-1) < below)


_NONE = np.zeros(0, dtype=np.intp)


_qasa_phi.workspace = True   # the fitter passes a workspace (see :func:`qasa.fitting._evaluate`)


def _fxx(x: np.ndarray, r: np.ndarray, t: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``∂²f/∂x² = 3xG + x³K`` of ``f = x tanh(r)/r``, from ``r``, ``t = tanh r`` and ``G = g'(r)/r``
    (see :func:`_qasa_phi`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        K = (-2.0 * t * (1.0 - t * t) / r - 3.0 * G) / (r * r)
    small = r < _SMALL_K
    if small.any():
        rs2 = r[small] ** 2
        K[small] = 16.0 / 15.0 - 136.0 * rs2 / 105.0 + 992.0 * rs2 * rs2 / 945.0
    return x * (3.0 * G + x * x * K)


def _fxx_into(x, r, t, G, out, K, add: bool) -> None:
    """:func:`_fxx` on whole scratch arrays: writes (``add``: adds) ``3xG + x³K`` into ``out``."""
    np.multiply(t, t, out=K)
    np.subtract(1.0, K, out=K)
    K *= t
    with np.errstate(divide="ignore", invalid="ignore"):
        K /= r
        K *= -2.0
        K -= G
        K -= G
        K -= G
        K /= r
        K /= r
    small = _where_small(r, _SMALL_K)
    if small.size:
        rs2 = r.reshape(-1)[small] ** 2
        K.reshape(-1)[small] = 16.0 / 15.0 - 136.0 * rs2 / 105.0 + 992.0 * rs2 * rs2 / 945.0
    K *= x
    K *= x
    K += G
    K += G
    K += G
    K *= x
    if add:
        out += K
    else:
        out[...] = K


# -- model objects -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Model:
    """A response model: named parameters, bounds, units, magnetization and Jacobian.

    A model is one definition and one registry entry (:func:`register_model`): everything else in
    qasa (fitting, comparison, reports, the CLI) asks the model the questions below, never its name,
    and reads its parameters' names, units and definitions from :data:`qasa.parameters.PARAMETERS`.

    Attributes:
        name: registry name (``"qasa"``, ``"gibbs"``...).
        params: parameter names, in column order of ``theta``.
        lower, upper: bounds per parameter (``±inf`` when free).
        units: unit of each parameter.
        scale: typical magnitude of each parameter (finite-difference steps, reporting).
        _fn: ``_fn(h, theta, jac) → (m, dm)``: the magnetization ``(n, k)`` for ``h`` ``(k,)`` and
            ``theta`` ``(n, p)``, and with ``jac`` its Jacobian parameter-major ``(p, n, k)`` (else None).
        _starts: ``_starts(beta, b, sat) → [theta (n, p), ...]``: starting points from the weighted
            least-squares guess ``atanh(m̂) = β (h + b)`` per row and the observed saturation
            ``|m̂|`` at the grid's ends (:meth:`starts`; clipped to the bounds there).
        description: one line, shown in listings.
        even: per parameter, whether ``m`` is even in it (fitted internally on ``φ = θ²``).
        compared: fitted and compared by default (:func:`compared_models`: :func:`qasa.fitting.compare`,
            ``compare=True`` of :mod:`qasa.pipeline`, ``qasa fit --compare``).
        nested_in: registered models of which this one is a special case (a likelihood-ratio test
            compares it with each of them: :func:`nested_pairs`).
        between_calls: its fits add the between-call component ``sigma_call`` on data with per-call
            counts (:mod:`qasa.fitting`, "Between calls"). That likelihood is built on the QASA model's
            fused evaluation: only the built-in ``qasa`` model declares it.
        inverse_temperature: its first parameter is an inverse temperature β in 1/h (the coarse
            multi-start rejects a coarse fit with β·Δh beyond the coarse grid's resolution).
        reference_csv: its fits are also written as the reference ``model_parameters.csv``
            (columns spin, β, b, γ, η: the reference ``qasa`` model only).
    """

    name: str
    params: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    units: tuple[str, ...]
    scale: tuple[float, ...]
    _fn: Callable = field(repr=False, compare=False)
    _starts: Callable = field(repr=False, compare=False)
    description: str = ""
    even: tuple[bool, ...] = ()
    _phi_fn: Callable | None = field(default=None, repr=False, compare=False)
    compared: bool = False
    nested_in: tuple[str, ...] = ()
    between_calls: bool = False
    inverse_temperature: bool = False
    reference_csv: bool = False

    @property
    def num_params(self) -> int:
        return len(self.params)

    @property
    def even_mask(self) -> np.ndarray:
        """Boolean mask of the even parameters (all False when none are declared)."""
        return np.array(self.even, dtype=bool) if self.even else np.zeros(self.num_params, bool)

    def to_internal(self, theta: np.ndarray) -> np.ndarray:
        """θ → φ: even parameters squared (negative values count as 0)."""
        phi = np.array(theta, dtype=float, copy=True)
        ev = self.even_mask
        phi[..., ev] = np.maximum(phi[..., ev], 0.0) ** 2
        return phi

    def from_internal(self, phi: np.ndarray) -> np.ndarray:
        """φ → θ: square roots of the even parameters."""
        theta = np.array(phi, dtype=float, copy=True)
        ev = self.even_mask
        theta[..., ev] = np.sqrt(np.maximum(theta[..., ev], 0.0))
        return theta

    @cached_property
    def internal(self) -> "Model":
        """The same model on φ (even parameters squared), with bounds and scales to match."""
        ev = self.even_mask
        if not ev.any():
            return self
        sq = lambda v: tuple(float(x) ** 2 if e else float(x) for x, e in zip(v, ev))  # noqa: E731
        lower = tuple(0.0 if e else x for x, e in zip(self.lower, ev))
        return dataclasses.replace(self, name=self.name + "[φ]", lower=lower, upper=sq(self.upper), scale=sq(self.scale),
                                   _fn=self._phi_fn or _internal_fn(self._fn, np.flatnonzero(ev)), even=(),
                                   _phi_fn=None)

    def m(self, h: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Magnetization ``m(h)`` for each row of ``theta``: shape ``(n, k)``."""
        return self._fn(h, np.asarray(theta, dtype=float), False)[0]

    def m_jac(self, h: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Magnetization and its Jacobian ``∂m/∂θ`` of shape ``(n, k, p)``."""
        m, dm = self._fn(h, np.asarray(theta, dtype=float), True)
        return m, np.moveaxis(dm, 0, -1)

    def p_down(self, h: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """P(s = -1 | h) = (1 + m) / 2."""
        return 0.5 * (1.0 + self.m(h, theta))

    def guess(self, h: np.ndarray, n_down: np.ndarray, n_total: np.ndarray) -> np.ndarray:
        """A data-driven starting point per row (see :meth:`starts`)."""
        return self.starts(h, n_down, n_total)[0]

    def starts(self, h: np.ndarray, n_down: np.ndarray, n_total: np.ndarray) -> list[np.ndarray]:
        """Starting points for multi-start fits, each of shape ``(n, p)``, within bounds.

        All are derived from a weighted least-squares fit of ``atanh(m̂) = β (h + b)`` on the
        unsaturated points; the others trade slope for noise width (see the model docstrings).
        """
        beta, b, sat = _logistic_guess(np.asarray(h, float), np.asarray(n_down, float), np.asarray(n_total, float))
        out = [np.clip(s, self.lower, self.upper) for s in self._starts(beta, b, sat)]
        return out


def _internal_fn(inner: Callable, even: np.ndarray) -> Callable:
    """Magnetization and Jacobian in φ (even parameters squared; see module docstring)."""
    delta = EVEN_FLOOR ** 2

    def fn(h, phi, jac):
        phi = np.asarray(phi, dtype=float)
        theta = phi.copy()
        theta[:, even] = np.sqrt(np.maximum(phi[:, even], 0.0))
        m, dm = inner(h, theta, jac)
        if not jac:
            return m, None
        m = np.broadcast_to(m, dm.shape[1:])
        hh = np.asarray(h, dtype=float)
        for j in even:
            t = theta[:, j]
            small = t < EVEN_FLOOR
            with np.errstate(divide="ignore", invalid="ignore"):
                dm[j] = dm[j] / (2.0 * t[:, None])
            if small.any():
                rows = np.flatnonzero(small)
                shifted = theta[rows].copy()
                shifted[:, j] = np.sqrt(np.maximum(phi[rows, j], 0.0) + delta)
                h_rows = hh if hh.ndim == 1 else hh[rows]
                m_shift = np.broadcast_to(inner(h_rows, shifted, False)[0], (len(rows), dm.shape[-1]))
                dm[j][rows] = (m_shift - m[rows]) / delta
        return m, dm

    return fn


def _logistic_guess(h, n_down, n_total):
    """Vectorized WLS of atanh(m̂) on h: returns (β, b, |m| at the extremes)."""
    n = n_total
    p = (n_down + 0.5) / (n + 1.0)
    m = 2.0 * p - 1.0
    y = np.arctanh(np.clip(m, -0.999, 0.999))
    hh = np.broadcast_to(h, m.shape)
    w = np.where((n > 0) & (np.abs(m) < 0.95), n * (1.0 - m * m), 0.0)
    few = (w > 0).sum(1) < 2
    # too steep to see the transition: use every point, saturation included
    w = np.where(few[:, None], np.where(n > 0, n * (1.0 - m * m) + 1e-12, 0.0), w)
    sw = w.sum(1)
    sw = np.where(sw > 0, sw, 1.0)
    hbar = (w * hh).sum(1) / sw
    ybar = (w * y).sum(1) / sw
    sxx = (w * (hh - hbar[:, None]) ** 2).sum(1)
    sxy = (w * (hh - hbar[:, None]) * (y - ybar[:, None])).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = sxy / sxx
    hs = np.abs(h[h != 0]) if np.any(h != 0) else np.array([1.0])
    steep = 3.0 / hs.min()
    beta = np.where(np.isfinite(beta) & (beta > 0), beta, np.where(few, steep, 0.1))
    b = ybar / beta - hbar
    hmax = np.abs(h).max() if h.size else 1.0
    ext = (np.abs(hh) >= 0.5 * hmax) & (n > 0)
    sat = np.where(ext.any(1), np.where(ext, np.abs(m), 0).max(1), 1.0)
    return beta, b, np.clip(sat, 1e-3, 1.0)


def _starts_gibbs(beta, b, sat):
    return [beta[:, None]]


def _starts_gibbs_bias(beta, b, sat):
    return [np.column_stack([beta, b])]


def _starts_gaussian(beta, b, sat):
    out = []
    for c in (0.0, 0.5, 1.0):  # c = β σ; keep the slope at the centre
        slope_factor = _GH_W @ _sech2(c * _GH_Z)
        bt = beta / slope_factor
        out.append(np.column_stack([bt, b, np.full_like(beta, c) / bt]))
    return out


def _starts_qasa(beta, b, sat):
    gamma = np.sqrt(np.maximum(1.0 / sat**2 - 1.0, 0.0))
    gamma = np.minimum(gamma, 5.0)
    out = []
    for c in (0.0, 0.5, 1.0):  # c = β η; keep the slope β sech²(βη) at the centre
        bt = beta * np.cosh(c) ** 2
        out.append(np.column_stack([bt, b, gamma, np.full_like(beta, c) / bt]))
    return out


_INF = float("inf")
#: The registered models by name, in registration order (the order of comparisons). Change it through
#: :func:`register_model` and :func:`unregister_model` only.
MODELS: dict[str, Model] = {
    "gibbs": Model("gibbs", ("beta",), (0.0,), (_INF,), ("1/h",), (1.0,), _gibbs, _starts_gibbs,
                   "classical Gibbs freeze-out, m = tanh(βh)", compared=True, nested_in=("gibbs-bias",),
                   inverse_temperature=True),
    "gibbs-bias": Model("gibbs-bias", ("beta", "b"), (0.0, -_INF), (_INF, _INF), ("1/h", "h"), (1.0, 0.01),
                        _gibbs_bias, _starts_gibbs_bias, "m = tanh(β(h + b))", compared=True,
                        nested_in=("qasa", "gaussian-noise"), inverse_temperature=True),
    "gaussian-noise": Model("gaussian-noise", ("beta", "b", "sigma"), (0.0, -_INF, 0.0), (_INF, _INF, _INF),
                            ("1/h", "h", "h"), (1.0, 0.01, 0.01), _gaussian, _starts_gaussian,
                            "m = E tanh(β(h + b + δ)), δ ~ N(0, σ²)", (False, False, True), compared=True,
                            inverse_temperature=True),
    "qasa": Model("qasa", ("beta", "b", "gamma", "eta"), (0.0, -_INF, 0.0, 0.0), (_INF, _INF, _INF, _INF),
                  ("1/h", "h", "h", "h"), (1.0, 0.01, 0.01, 0.01), _qasa, _starts_qasa,
                  "QASA mixture of two single-qubit quantum Gibbs states (Nelson et al. 2021)",
                  (False, False, True, True), _qasa_phi, compared=True, between_calls=True,
                  inverse_temperature=True, reference_csv=True),
}
#: Parameter metadata added to :data:`qasa.parameters.PARAMETERS` by :func:`register_model`, by model.
_ADDED_PARAMETERS: dict[str, tuple[str, ...]] = {}
#: The parameters of the reference ``model_parameters.csv`` (:attr:`Model.reference_csv`).
_REFERENCE_PARAMS = ("beta", "b", "gamma", "eta")


def register_model(model: Model, parameters: Mapping[str, ParameterInfo] | None = None) -> Model:
    """Add ``model`` to the registry: from then on :func:`get_model` finds it by name, every fit,
    comparison (when :attr:`Model.compared`), report and CLI command can use it.

    Args:
        model: the model; its name must be new and must not contain ``"+"`` (``"+readout"`` is a suffix).
        parameters: metadata (symbol, name, unit, definition) of parameters that
            :data:`qasa.parameters.PARAMETERS` does not define yet; added there, removed again by
            :func:`unregister_model`. A parameter already defined keeps its definition.

    Returns:
        ``model``.

    Raises:
        ValueError: one line naming the problem: a name taken or malformed, bounds, units or scales
            not one per parameter, a lower bound above its upper one, a parameter without metadata or
            metadata contradicting an existing definition, ``nested_in`` naming an unregistered model
            or one without more parameters, or a between-call component or reference CSV that only
            the ``qasa`` model has.
    """
    parameters = dict(parameters or {})
    _check_model(model, parameters)
    added = tuple(p for p in parameters if p not in PARAMETERS)
    for p in added:
        PARAMETERS[p] = parameters[p]
    _ADDED_PARAMETERS[model.name] = added
    MODELS[model.name] = model
    return model


def _check_model(model: Model, parameters: Mapping[str, ParameterInfo]) -> None:
    """The checks of :func:`register_model` (ValueError with one line naming the problem)."""
    if not isinstance(model, Model):
        raise ValueError(f"register_model needs a qasa.models.Model, not {type(model).__name__}")
    name, k = model.name, len(model.params)
    if not name or "+" in name or "[" in name:
        raise ValueError(f"model name {name!r} must be non-empty without '+' or '[' ('+readout' is a suffix)")
    if name in MODELS:
        raise ValueError(f"a model named {name!r} is registered already; unregister_model({name!r}) first")
    for attr in ("lower", "upper", "units", "scale") + (("even",) if model.even else ()):
        if len(getattr(model, attr)) != k:
            raise ValueError(f"model {name!r}: {attr} has {len(getattr(model, attr))} entries for {k} parameters")
    for p, lo, hi in zip(model.params, model.lower, model.upper):
        if not lo <= hi:
            raise ValueError(f"model {name!r}: parameter {p!r} has lower bound {lo!r} above its upper bound {hi!r}")
    for p in model.params:
        if p not in PARAMETERS and p not in parameters:
            raise ValueError(f"model {name!r}: parameter {p!r} has no metadata; pass parameters={{{p!r}: ParameterInfo(...)}}")
    for p, info in parameters.items():
        if p not in model.params:
            raise ValueError(f"model {name!r}: metadata given for {p!r}, which is not one of its parameters {model.params}")
        if not isinstance(info, ParameterInfo):
            raise ValueError(f"model {name!r}: the metadata of {p!r} must be a qasa.parameters.ParameterInfo")
        if p in PARAMETERS and info != PARAMETERS[p]:
            raise ValueError(f"model {name!r}: parameter {p!r} is defined already as {PARAMETERS[p].name!r}; "
                             "use another name for another parameter")
    for big in model.nested_in:
        if big not in MODELS or len(MODELS[big].params) <= k:
            raise ValueError(f"model {name!r}: nested_in names {big!r}, which is not a registered model with more "
                             f"than {k} parameters")
    if model.between_calls:
        raise ValueError(f"model {name!r}: the between-call likelihood exists for the built-in qasa model only")
    if model.reference_csv and model.params != _REFERENCE_PARAMS:
        raise ValueError(f"model {name!r}: model_parameters.csv holds {_REFERENCE_PARAMS}, not {model.params}")


def unregister_model(name: str) -> None:
    """Remove a model added by :func:`register_model`, and the parameter metadata it added.

    Raises:
        ValueError: for a name that is not registered, or a built-in model.
    """
    if name not in MODELS:
        raise ValueError(f"no model named {name!r} is registered; registered: {sorted(MODELS)}")
    if name not in _ADDED_PARAMETERS:
        raise ValueError(f"{name!r} is a built-in model and stays registered")
    del MODELS[name]
    still = {p for m in MODELS.values() for p in m.params}
    for p in _ADDED_PARAMETERS.pop(name):
        if p not in still:
            PARAMETERS.pop(p, None)


def compared_models() -> tuple[str, ...]:
    """Names of the registered models compared by default (:attr:`Model.compared`), in registry order."""
    return tuple(name for name, m in MODELS.items() if m.compared)


def nested_pairs() -> tuple[tuple[str, str], ...]:
    """``(small, big)`` pairs of registered models for likelihood-ratio tests (:attr:`Model.nested_in`),
    in registry order of the smaller model."""
    return tuple((name, big) for name, m in MODELS.items() for big in m.nested_in if big in MODELS)


def with_readout(model: Model) -> Model:
    """Wrap ``model`` with a symmetric readout error ε (an extra last parameter, 0 ≤ ε ≤ 0.5)."""
    inner = model._fn

    def fn(h, theta, jac):
        eps = theta[:, -1:]
        m, dm = inner(h, theta[:, :-1], jac)
        scale = 1.0 - 2.0 * eps
        if not jac:
            return scale * m, None
        dm = np.concatenate([scale * dm, (-2.0 * m)[None]])
        return scale * m, dm

    def starts(beta, b, sat):
        return [np.column_stack([s, np.full(len(beta), 1e-3)]) for s in model._starts(beta, b, sat)]

    return Model(f"{model.name}+readout", model.params + ("epsilon",), model.lower + (0.0,),
                 model.upper + (0.5,), model.units + ("probability",), model.scale + (1e-3,),
                 fn, starts, model.description + ", with readout error ε", tuple(bool(e) for e in model.even_mask) + (False,),
                 inverse_temperature=model.inverse_temperature)


def get_model(model: str | Model) -> Model:
    """Look up a registered model by name (``"qasa"``, ``"gibbs"``, ``"gibbs-bias"``,
    ``"gaussian-noise"`` and any added by :func:`register_model`, each optionally suffixed
    ``"+readout"``), or pass a :class:`Model` through.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(model, Model):
        return model
    base, _, suffix = model.partition("+")
    if base not in MODELS or suffix not in ("", "readout"):
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)} (optionally '+readout')")
    return with_readout(MODELS[base]) if suffix else MODELS[base]

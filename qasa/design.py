r"""Information-optimal per-qubit designs: where to spend a qubit's reads to reach a precision target.

Fisher information
    A read at programmed field ``x`` returns −1 with probability ``p = (1 + m(x; θ))/2``. Its
    expected (Fisher) information about θ is, per read,

    .. math::  I(x; θ) = \frac{∂p/∂θ\,∂p/∂θ^T}{p(1-p)} = \frac{∇m\,∇m^T}{1 - m^2},

    a rank-one matrix; ``N(x)`` reads at each ``x`` give ``M = Σ_x N(x) I(x; θ)``, and the
    Cramér–Rao bound on the covariance of any unbiased estimator is ``M⁻¹``. Because
    ``∂p/∂m = 1/2``, this is the information matrix of the fitter's Fisher scoring
    (:mod:`qasa.fitting`). Qubits are independent, so everything here is per qubit (vectorized
    over rows of ``theta``).

Precision targets
    A target is a 95 % (``level``) confidence-interval half-width per parameter, absolute (``b``:
    0.003) or relative to the parameter (``beta``: ``"1%"``); it becomes a standard-deviation target
    ``t_j = half_width / z`` with ``z = Φ⁻¹(1 − (1 − level)/2)`` (1.96). Untargeted parameters are
    nuisance parameters: they are estimated, and their uncertainty inflates the others', but they
    set no requirement.

Criteria (over designs ``w``, a probability distribution of a qubit's reads over candidate fields)
    - ``"minimax"``: minimize ``max_j V_j(w)/t_j²`` with ``V = diag(M(w)⁻¹)`` — the reads needed for
      *every* targeted parameter to meet its target are ``N(w) = max_j V_j(w)/t_j²`` (per-read
      information ``M(w) = Σ_x w_x I(x)``), so this design needs the fewest reads. It is solved by the
      smooth surrogate ``Σ_j (V_j/t_j²)^q`` (convex in ``w``) with ``q`` raised in stages, by the
      multiplicative algorithm ``w_x ← w_x (d_x / Σ w d)^{1/2}``, ``d_x = tr(A M⁻¹ I(x) M⁻¹)``,
      ``A = diag((V_j/t_j²)^{q−1}/t_j²)`` (Silvey, Titterington & Torsney 1978; Yu 2010, "Monotonic
      convergence of a general algorithm for computing optimal designs", Ann. Stat. 38). The
      weights ``A`` put the reads where they reduce the uncertainty that still misses its target.
    - ``"c"``: the same with one targeted parameter (c-optimal for ``c = e_j``).
    - ``"D"``: maximize ``log det M(w)`` (all parameters), ``w_x ← w_x d_x / p`` with
      ``d_x = tr(M⁻¹ I(x))``.

    With earlier data (information ``M₀``) and ``N`` new reads the criteria use
    ``M = M₀ + N Σ w_x I(x)`` — the design of an adaptive round (:mod:`qasa.adaptive`).

Between calls
    Every call is a new programming, and the reads of one call share a field offset δ ~ N(0, σ²) of b
    (σ_call, :mod:`qasa.fitting` "Between calls"). A call of ``R`` reads at ``x`` counts ``n`` with mean
    ``R p`` and variance ``R (w + R s²)``, ``w = p(1 − p)``, ``s² = (∂p/∂b)² σ²``; as a Gaussian its
    information about ``(θ, σ²)`` is ``R P̃P̃ᵀ/(w + R s²) + ½ v vᵀ`` with ``P̃ = (∂p/∂θ, 0)`` and
    ``v = ((1 − 2p) ∂p/∂θ, R (∂p/∂b)²)/(w + R s²)`` — the fitter's information, σ² a nuisance
    parameter beside θ (``sigma_call`` and ``reads_per_call`` of :func:`information`,
    :func:`optimal_design`, :func:`required_reads`; the information is then ``(p + 1) × (p + 1)``,
    σ² last, never targeted). Two things follow: more reads per call buy nothing for b once
    ``R s² ≫ w`` (only more calls do), and η, which the mean response confounds with σ (both widen the
    transition), is told from it only by how the counts scatter between calls — so η needs far more
    reads than reads taken as independent would say.

Per-field errors
    A qubit programmed twice with the same value gets the same rounding error from the h DAC, in every
    call: an offset ε_x ~ N(0, τ²) per (qubit, programmed value) (``sigma_field`` of :mod:`qasa.fitting`).
    The mean of ``T`` reads in ``C`` calls at ``x`` then has variance ``w/T + g σ²/C + g τ²``
    (``g = (∂p/∂b)²``), so the information that mean carries about θ is ``T I_m/(1 + T ρ)`` with
    ``I_m = P̃P̃ᵀ/(w + R s²)`` the between-call information per read and ``ρ = g τ²/(w + R s²)``: it
    saturates at ``I_m/ρ`` however many reads the field gets, while the scatter between calls (the
    information about σ² and, through the variance law, a little about θ) does not depend on τ.
    ``sigma_field`` of :func:`information` applies this to each cell (``reads`` its total), and of
    :func:`required_reads` to the new reads, which join the reads already taken at the same field
    (``prior_reads``): there the predicted information is concave in the reads, so a target beyond
    what the design's fields can give needs ``inf`` reads instead of a finite number that the data
    never meet. :func:`optimal_design` with ``sigma_field`` designs for that concave information (the
    multiplicative algorithm's sensitivities are the marginal gains ``I_m/(1 + Tρ)²``), which spreads
    the reads over many fields; their candidates should lie one DAC step apart
    (:func:`field_candidates`, :data:`FIELD_SPACING`), since values within a step (2 × 0.008 at h = 0)
    share their rounding error and the model's independent error per value would overcount them, and
    :func:`allocate` then keeps them apart (``merge=False``).

Quantization
    An optimal design is concentrated on a few fields (for the QASA model at β = 5: near ±0.1,
    ±0.4 and the range ends, DESIGN.md §6). :func:`allocate` merges neighbouring candidates,
    quantizes the fields to a grid (0.005 by default, so that the union of all qubits' fields — the
    columns of :meth:`qasa.dataset.Dataset.response` — stays small) and apportions a whole number
    of calls to each field (largest remainders): qubits share calls, each call carries one field per
    qubit, so a qubit's reads come in units of one call's reads.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import stats

from qasa.models import Model, get_model

__all__ = ["fisher_per_read", "information", "parse_target", "sd_targets", "candidate_fields",
           "optimal_design", "required_reads", "cramer_rao", "allocate", "uniform_weights", "z_value",
           "field_candidates", "information_sd", "CRITERIA", "FIELD_SPACING"]

CRITERIA = ("minimax", "c", "D")
_CHUNK = 256
#: A candidate whose weight is below this on every row of a chunk is dropped from the multiplicative
#: algorithm (every 50 iterations): the algorithm only multiplies weights, so it would stay negligible.
_PRUNE = 1e-10
#: Spacing of the candidate fields of a design with a per-field error: at least one step of the h DAC
#: (D-Wave: rounding errors up to ±0.008 at h = 0, a step of 0.016, finer at larger |h|; DESIGN.md §7),
#: so that the model's independent error per programmed value is not fed values that share a DAC level.
FIELD_SPACING = 0.02


def z_value(level: float = 0.95) -> float:
    """Two-sided normal quantile of a ``level`` interval (1.96 at 95 %)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie strictly between 0 and 1")
    return float(stats.norm.ppf(0.5 + level / 2.0))


def fisher_per_read(model: Model | str, x: np.ndarray, theta: np.ndarray, *, sigma_call: Any = None,
                    reads_per_call: Any = 1) -> np.ndarray:
    """Fisher information of one read at each field: shape ``(n, k, p, p)``.

    Args:
        model: response model.
        x: programmed fields, shape ``(k,)`` (the same for every row) or ``(n, k)``.
        theta: parameters, shape ``(n, p)``.
        sigma_call: per-call offset sd per row (``(n,)`` or a scalar, h units; ``None``: reads independent).
        reads_per_call: reads of the call each read comes in (broadcastable to ``(n, k)``).
    """
    G = _factors(get_model(model), x, theta, sigma_call, reads_per_call)
    return np.einsum("nkpr,nkqr->nkpq", G, G)


def _grad_weight(model: Model, x, theta) -> tuple[np.ndarray, np.ndarray]:
    """∇m (n, k, p) and 1/(1 − m²) (n, k), clipped like the fitter's probabilities."""
    theta = np.asarray(theta, float)
    m, g = model.m_jac(np.asarray(x, float), theta)
    m = np.broadcast_to(m, g.shape[:2])
    return g, 1.0 / np.maximum(1.0 - m * m, 4e-15)


def _factors(model: Model, x, theta, sigma_call: Any = None, reads_per_call: Any = 1,
             field_rho: bool = False) -> np.ndarray:
    """Factors ``G`` (n, k, q, r) of the information per read, ``I(x) = Σ_r G_r G_rᵀ``: ``q = p``, ``r = 1``
    for independent reads; with ``sigma_call`` (per row) and ``reads_per_call`` (broadcastable to
    ``(n, k)``), ``q = p + 1`` (σ² last) and ``r = 2`` (module docstring, "Between calls").
    ``field_rho``: return ``(G, g/(w + R s²))`` — ``ρ`` per unit τ² of each (row, field) ("Per-field
    errors")."""
    m, g = model.m_jac(np.asarray(x, float), np.asarray(theta, float))
    m = np.broadcast_to(m, g.shape[:2])
    var = np.maximum(1.0 - m * m, 4e-15)                  # clipped like the fitter's probabilities
    if sigma_call is None:
        return (g / np.sqrt(var)[..., None])[..., None]
    if "b" not in model.params:
        raise ValueError(f"model {model.name!r} has no bias b: no between-call information")
    n, k, p = g.shape
    sig2 = np.nan_to_num(np.broadcast_to(np.asarray(sigma_call, float), (n,))) ** 2
    R = np.maximum(np.broadcast_to(np.asarray(reads_per_call, float), (n, k)), 1.0)    # (a cell without reads: 0)
    P = 0.5 * g                                           # ∂p/∂θ
    w = 0.25 * var                                        # p(1 − p) = (1 − m²)/4
    one_m2p = -m                                          # 1 − 2p
    gb2 = P[..., model.params.index("b")] ** 2
    wR = w + R * gb2 * sig2[:, None]
    G = np.zeros((n, k, p + 1, 2))
    G[..., :p, 0] = P / np.sqrt(wR)[..., None]
    G[..., :p, 1] = one_m2p[..., None] * P / wR[..., None] / np.sqrt(2 * R)[..., None]
    G[..., p, 1] = R * gb2 / wR / np.sqrt(2 * R)
    return (G, gb2 / wR) if field_rho else G


def _padded(t: np.ndarray, q: int) -> np.ndarray:
    """Targets ``(n, p)`` widened to ``q`` columns with ``inf`` (an untargeted nuisance, σ²)."""
    t = np.asarray(t, float)
    return t if t.shape[-1] >= q else np.concatenate([t, np.full(t.shape[:-1] + (q - t.shape[-1],), np.inf)], -1)


def information(model: Model | str, x: np.ndarray, reads: np.ndarray, theta: np.ndarray, *,
                sigma_call: Any = None, reads_per_call: Any = 1, sigma_field: float = 0.0) -> np.ndarray:
    """Expected information ``Σ_k reads_k I(x_k)`` of each row: shape ``(n, p, p)``.

    Args:
        x: fields ``(k,)`` or ``(n, k)``; reads: reads at each field, broadcastable to ``(n, k)``.
        sigma_call, reads_per_call: the between-call information (:func:`fisher_per_read`).
        sigma_field: the per-field error τ (h units; needs ``sigma_call``): each field's mean carries
            ``reads I_m/(1 + reads ρ)`` (module docstring, "Per-field errors").
    """
    model = get_model(model)
    theta = np.asarray(theta, float)
    q = model.num_params + (sigma_call is not None)
    out = np.empty((len(theta), q, q))
    x = np.asarray(x, float)
    reads = np.broadcast_to(np.asarray(reads, float), (len(theta), x.shape[-1]))
    sig = None if sigma_call is None else np.broadcast_to(np.asarray(sigma_call, float), (len(theta),))
    rpc = np.broadcast_to(np.asarray(reads_per_call, float), (len(theta), x.shape[-1]))
    tau = float(sigma_field) if _field_var(sigma_field, sig) else 0.0      # checked once, before any work
    for s in range(0, len(theta), _CHUNK):
        sl = slice(s, s + _CHUNK)
        xs = x if x.ndim == 1 else x[sl]
        coef = reads[sl]
        if tau > 0:
            G, rho = _factors(model, xs, theta[sl], sig[sl], rpc[sl], field_rho=True)
            coef = np.stack([_field_gain(0.0, coef, rho * tau**2), coef], -1)
        else:
            G = _factors(model, xs, theta[sl], None if sig is None else sig[sl], rpc[sl])
        out[sl] = _weighted_gram(G, coef)
    return out


def _field_var(sigma_field: Any, sigma_call: Any) -> bool:
    """Whether a per-field error enters (checked: one finite number τ ≥ 0, and only beside σ_call)."""
    if sigma_field is None:
        return False
    if isinstance(sigma_field, (bool, np.bool_)) or not isinstance(sigma_field, (int, float, np.integer, np.floating)):
        raise ValueError(f"sigma_field={sigma_field!r} must be one number: the device's field error in h units (≥ 0)")
    tau = float(sigma_field)
    if not (math.isfinite(tau) and tau >= 0.0):
        raise ValueError(f"sigma_field={sigma_field!r} must be a finite field error ≥ 0 (h units)")
    if tau > 0 and sigma_call is None:
        raise ValueError("sigma_field needs sigma_call (the per-field term is part of the between-call information)")
    return tau > 0


def _prior_reads(prior_reads: Any, n: int, k: int) -> np.ndarray:
    """Reads already at each candidate, ``(n, k)`` (checked: finite and ≥ 0); zeros for ``None``."""
    if prior_reads is None:
        return np.zeros((n, k))
    T0 = np.asarray(prior_reads, float)
    if T0.shape not in ((k,), (n, k)):
        raise ValueError(f"prior_reads has shape {T0.shape}; expected ({k},) or ({n}, {k}): reads per candidate field")
    if not (np.isfinite(T0).all() and (T0 >= 0).all()):
        raise ValueError("prior_reads must be finite and ≥ 0 (reads already taken at each candidate field)")
    return np.broadcast_to(T0, (n, k))


def _field_gain(T0: Any, T: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Reads' worth of a field's mean when its reads go from ``T0`` to ``T``: ``T/(1 + Tρ) − T0/(1 + T0ρ)``."""
    return T / (1.0 + T * rho) - T0 / (1.0 + T0 * rho)


def _weighted_gram(G: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``Σ_k Σ_r coef_kr G_kr G_krᵀ`` per row: ``coef`` (n, k) for every factor, or (n, k, r) per factor."""
    nn, kk, q, nr = G.shape
    c = np.broadcast_to(coef[..., None] if coef.ndim == 2 else coef, (nn, kk, nr))
    G2 = G.transpose(0, 1, 3, 2).reshape(nn, kk * nr, q)
    return np.matmul((G2 * c.reshape(nn, kk * nr)[..., None]).transpose(0, 2, 1), G2)


def cramer_rao(model: Model | str, x: np.ndarray, reads: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Cramér–Rao standard deviations ``sqrt(diag(M⁻¹))`` of each row for reads at fields ``x``: ``(n, p)``.

    Rows whose information is singular get ``inf`` (a parameter the design cannot identify).
    """
    return information_sd(information(model, x, reads, theta))


def information_sd(M: np.ndarray) -> np.ndarray:
    """Cramér–Rao standard deviations ``sqrt(diag(M⁻¹))`` of information matrices ``(n, p, p)``: ``(n, p)``
    (``inf`` on a parameter the information does not identify)."""
    return np.sqrt(np.maximum(_inv_diag(np.asarray(M, float)), 0.0))


def _inv(M: np.ndarray) -> np.ndarray:
    """Batched inverse; singular rows become pseudo-inverses with ``inf`` on the unidentified diagonal."""
    p = M.shape[-1]
    scale = np.sqrt(np.maximum(np.einsum("npp->np", M), 1e-300))
    Ms = M / scale[:, :, None] / scale[:, None, :]           # unit diagonal: better conditioned
    try:
        inv = np.linalg.inv(Ms + 1e-13 * np.eye(p))
    except np.linalg.LinAlgError:
        inv = np.stack([np.linalg.pinv(a) for a in Ms])
    bad = ~np.isfinite(inv).all((1, 2)) | (np.einsum("npp->np", inv) <= 0).any(1)
    with np.errstate(over="ignore", invalid="ignore"):      # an uninformed parameter: marked bad just above
        inv = inv / scale[:, :, None] / scale[:, None, :]
    if bad.any():
        inv[bad] = np.inf
    return inv


def _inv_diag(M: np.ndarray) -> np.ndarray:
    return np.einsum("npp->np", _inv(M))


def parse_target(target: str | Mapping[str, float | str], model: Model | str = "qasa") -> dict[str, float | str]:
    """Parse and check a precision target: ``"beta=1%,b=0.003,eta=0.01"`` or a dict.

    Values are 95 % interval half-widths: a number is absolute (units of the parameter), a string
    ending in ``%`` is relative to the parameter's value.

    Raises:
        ValueError: naming the bad entry, the model's parameters and the allowed form.
    """
    model = get_model(model)
    if isinstance(target, str):
        items: dict[str, str] = {}
        for part in target.replace(" ", "").split(","):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name or not value:
                raise ValueError(f"target entry {part!r} is not 'name=value' (e.g. beta=1%,b=0.003,eta=0.01)")
            if name in items:
                raise ValueError(f"target gives {name!r} twice")
            items[name] = value
        target = items
    if not target:
        raise ValueError(f"the target is empty; give at least one of {list(model.params)} (e.g. beta=1%,b=0.003)")
    out: dict[str, float | str] = {}
    for name, value in target.items():
        if name not in model.params:
            raise ValueError(f"target parameter {name!r} is not a parameter of model {model.name!r}; "
                             f"choose from {list(model.params)}")
        text = str(value).strip()
        rel = text.endswith("%")
        try:
            number = float(text[:-1] if rel else text)
        except ValueError:
            raise ValueError(f"target {name}={value!r} is not a number or a percentage (e.g. 0.003 or 1%)") from None
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"target {name}={value!r} must be a positive finite half-width")
        out[name] = f"{number:g}%" if rel else number
    return out


def sd_targets(model: Model | str, target: Mapping[str, float | str], theta: np.ndarray,
               level: float = 0.95) -> np.ndarray:
    """Standard-deviation targets per row and parameter, ``(n, p)``; ``inf`` where untargeted.

    A relative target is taken of ``|θ_j|`` of each row (NaN if that is 0 or not finite).
    """
    model = get_model(model)
    target = parse_target(target, model)
    theta = np.atleast_2d(np.asarray(theta, float))
    z = z_value(level)
    out = np.full(theta.shape, np.inf)
    for j, name in enumerate(model.params):
        if name not in target:
            continue
        value = target[name]
        if isinstance(value, str):
            hw = float(value[:-1]) / 100.0 * np.abs(theta[:, j])
            out[:, j] = np.where(hw > 0, hw / z, np.nan)
        else:
            out[:, j] = float(value) / z
    return out


def candidate_fields(h_range: tuple[float, float] | list[float] = (-1.0, 1.0), step: float = 0.005,
                     fine_max: float = 1.0, coarse_step: float = 0.05) -> np.ndarray:
    """Candidate programmed fields: every multiple of ``step`` with ``|x| ≤ fine_max``, then
    multiples of ``coarse_step`` out to the ends of ``h_range`` (ends included); zero excluded
    only if it lies outside the range."""
    lo, hi = float(h_range[0]), float(h_range[1])
    if not lo < hi:
        raise ValueError(f"h_range {h_range!r} must be an increasing pair")
    fine = np.arange(math.ceil(max(lo, -fine_max) / step - 1e-9), math.floor(min(hi, fine_max) / step + 1e-9) + 1) * step
    coarse = np.arange(math.ceil(lo / coarse_step - 1e-9), math.floor(hi / coarse_step + 1e-9) + 1) * coarse_step
    coarse = coarse[np.abs(coarse) > fine_max]
    x = np.unique(np.round(np.concatenate([fine, coarse, [lo, hi]]) / step) * step)
    return np.round(x[(x >= lo - 1e-12) & (x <= hi + 1e-12)], 10) + 0.0


def field_candidates(candidates: np.ndarray, spacing: float = FIELD_SPACING) -> np.ndarray:
    """The candidates on multiples of ``spacing`` (a design with a per-field error: one DAC step apart),
    keeping both ends of the range."""
    x = np.asarray(candidates, float)
    on = np.isclose(np.round(x / spacing) * spacing, x, rtol=0, atol=1e-9)
    on[[0, -1]] = True
    return x[on]


def uniform_weights(n: int, k: int) -> np.ndarray:
    """Equal weight on each of ``k`` fields for ``n`` rows."""
    return np.full((n, k), 1.0 / k)


def _criterion_value(V: np.ndarray, t: np.ndarray) -> np.ndarray:
    """max_j V_j / t_j² over targeted parameters (NaN target → NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isinf(t), 0.0, V / t**2)
    return r.max(1)


def optimal_design(model: Model | str, theta: np.ndarray, candidates: np.ndarray, target_sd: np.ndarray | None = None,
                   *, criterion: str = "minimax", prior: np.ndarray | None = None, reads: float | np.ndarray = 1.0,
                   iterations: int = 600, sigma_call: Any = None, reads_per_call: int = 1,
                   sigma_field: float = 0.0, prior_reads: np.ndarray | None = None) -> np.ndarray:
    """Optimal design weights over ``candidates`` for each row of ``theta``: shape ``(n, k)``.

    Args:
        model: response model.
        theta: parameters at which the information is evaluated (current estimates, or the truth
            for the oracle design), ``(n, p)``.
        candidates: candidate fields ``(k,)`` (e.g. :func:`candidate_fields` of the sampler's h_range).
        target_sd: standard-deviation targets ``(n, p)`` (:func:`sd_targets`; ``inf`` = untargeted).
            Needed for ``"minimax"`` and ``"c"``.
        criterion: ``"minimax"``, ``"c"`` or ``"D"`` (module docstring).
        prior: information already collected, ``(n, p, p)`` (adaptive rounds), or ``None``.
        reads: reads the design will spend per row (scales it against ``prior``).
        iterations: multiplicative-algorithm iterations.
        sigma_call, reads_per_call: per-row σ_call and the reads of the design's calls: the
            between-call information (module docstring); ``None``: reads independent.
        sigma_field, prior_reads: the per-field error τ and the reads already at each candidate
            (``(n, k)``): a field's information then saturates in its total reads (module docstring,
            "Per-field errors"), so the design for ``reads`` spreads them over more fields; the
            candidates should then lie at least one DAC step apart (:data:`FIELD_SPACING`).

    Raises:
        ValueError: unknown criterion, missing or unusable targets.
    """
    model = get_model(model)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}; choose one of {list(CRITERIA)}")
    theta = np.atleast_2d(np.asarray(theta, float))
    x = np.asarray(candidates, float)
    n, p = theta.shape
    if criterion != "D":
        if target_sd is None:
            raise ValueError(f"criterion {criterion!r} needs target_sd")
        t = np.broadcast_to(np.asarray(target_sd, float), theta.shape)
        targeted = np.isfinite(t).any(0) | np.isnan(t).any(0)
        if not targeted.any():
            raise ValueError("target_sd targets no parameter")
        if criterion == "c" and targeted.sum() != 1:
            raise ValueError("criterion 'c' needs exactly one targeted parameter")
    reads = np.broadcast_to(np.asarray(reads, float), (n,))
    sig = None if sigma_call is None else np.broadcast_to(np.asarray(sigma_call, float), (n,))
    w_out = np.empty((n, len(x)))
    tau = float(sigma_field) if _field_var(sigma_field, sig) else 0.0
    T0 = _prior_reads(prior_reads, n, len(x))
    for s in range(0, n, _CHUNK):
        sl = slice(s, s + _CHUNK)
        field = None
        if tau > 0:
            G, rho = _factors(model, x, theta[sl], sig[sl], reads_per_call, field_rho=True)
            field = (rho * tau**2, T0[sl])
        else:
            G = _factors(model, x, theta[sl], None if sig is None else sig[sl], reads_per_call)   # I(x) = Σ_r G Gᵀ
        P = None if prior is None else np.asarray(prior, float)[sl]
        tt = None if criterion == "D" else _padded(np.array(t[sl]), G.shape[2])
        w_out[sl] = _multiplicative(G, tt, P, reads[sl], criterion, iterations, field)
    return w_out


def _multiplicative(G, t, prior, reads, criterion, iterations, field=None):
    """The multiplicative algorithm (module docstring) on factors ``G``; ``field = (ρ, T0)`` (per row and
    candidate) makes each candidate's mean information concave in its reads: ``M`` holds each field's
    gain :func:`_field_gain` from ``T0`` to ``T0 + N w``, and the sensitivities ``d`` its derivative,
    ``I_m/(1 + Tρ)²`` — at the fixed point the marginal gains are equal on the support."""
    n, k, p, nr = G.shape
    w = np.full((n, k), 1.0 / k)
    ok = np.isfinite(G).all((1, 2, 3))
    G = np.where(ok[:, None, None, None], G, 0.0)
    G2 = np.ascontiguousarray(G.transpose(0, 1, 3, 2).reshape(n, k * nr, p))   # every factor a row (matmul)
    rho, T0 = (None, None) if field is None else (np.array(field[0], float), np.array(field[1], float))
    if t is not None:
        t = np.where(np.isnan(t), 1.0, t)                  # a NaN target (relative to 0) counts as 1
        active = np.isfinite(t)
        tinv2 = np.where(active, 1.0 / np.where(active, t, 1.0) ** 2, 0.0)
    stages = [1.0] if criterion == "D" else [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    per_stage = max(1, iterations // len(stages))
    full, cols = w, np.arange(k)
    for it in range(per_stage * len(stages)):
        q = stages[it // per_stage]
        if it and it % 50 == 0:          # candidates no row weighs any more are dropped (faster, same design)
            keep = (w > _PRUNE).any(0)
            if not keep.all():
                w = w[:, keep] / w[:, keep].sum(1, keepdims=True)
                cols, k = cols[keep], int(keep.sum())
                G2 = np.ascontiguousarray(G2.reshape(n, -1, nr, p)[:, keep].reshape(n, k * nr, p))
                if rho is not None:
                    rho, T0 = rho[:, keep], T0[:, keep]
        if rho is None:
            wr = np.repeat(w, nr, axis=1)[..., None]
            M = np.matmul((G2 * wr).transpose(0, 2, 1), G2) * reads[:, None, None]
            Gd = G2
        else:
            Nw = reads[:, None] * w
            T = T0 + Nw
            coef = np.stack([_field_gain(T0, T, rho), Nw], -1).reshape(n, k * nr, 1)
            M = np.matmul((G2 * coef).transpose(0, 2, 1), G2)
            Gd = G2 * np.stack([1.0 / (1.0 + T * rho), np.ones_like(T)], -1).reshape(n, k * nr, 1)
        if prior is not None:
            M = M + prior
        Minv = _inv(M)
        Minv = np.where(np.isfinite(Minv), Minv, 0.0)
        U = np.matmul(Gd, Minv)                           # (M⁻¹ g)ᵀ of every factor (M symmetric)
        if criterion == "D":
            d = (Gd * U).sum(-1).reshape(n, k, nr).sum(-1)
            new = w * d
        else:
            V = np.einsum("npp->np", Minv)
            r = V * tinv2
            rmax = np.maximum(r.max(1, keepdims=True), 1e-300)
            a = np.where(active, (r / rmax) ** (q - 1.0) * tinv2, 0.0)
            d = np.matmul(U * U, a[..., None])[..., 0].reshape(n, k, nr).sum(-1)
            new = w * np.sqrt(np.maximum(d, 0.0))
        total = new.sum(1, keepdims=True)
        w = np.where(total > 0, new / np.where(total > 0, total, 1.0), w)
    full = np.zeros_like(full)
    full[:, cols] = w
    return full


def required_reads(model: Model | str, theta: np.ndarray, x: np.ndarray, weights: np.ndarray,
                   target_sd: np.ndarray, prior: np.ndarray | None = None, *, sigma_call: Any = None,
                   reads_per_call: int = 1, sigma_field: float = 0.0, prior_reads: np.ndarray | None = None
                   ) -> np.ndarray:
    """Reads needed per row so that every targeted parameter meets its sd target, ``(n,)``.

    With reads spread over fields ``x`` by ``weights`` (``(k,)`` or ``(n, k)``, normalized here), the
    answer is ``max_j V_j / t_j²`` (``V = diag M(w)⁻¹`` per read); with ``prior`` information the
    smallest ``N`` with ``diag((prior + N M(w))⁻¹) ≤ t²`` (bisection; 0 if the prior already meets it).
    ``inf`` where the design cannot identify a targeted parameter; NaN where a target is NaN.
    ``sigma_call``, ``reads_per_call``: the between-call information (module docstring).
    ``sigma_field``: the per-field error τ; the new reads at ``x`` join ``prior_reads`` (reads already
    at each field, ``(n, k)``; ``None``: none) and their means' information saturates ("Per-field
    errors"): ``inf`` where even unlimited reads on this design miss the target (above 10¹³ reads).
    """
    model = get_model(model)
    theta = np.atleast_2d(np.asarray(theta, float))
    w = np.broadcast_to(np.asarray(weights, float), (len(theta), np.shape(x)[-1]))
    w = w / w.sum(1, keepdims=True)
    t = np.broadcast_to(np.asarray(target_sd, float), theta.shape)
    if _field_var(sigma_field, sigma_call):
        return _required_reads_field(model, theta, np.asarray(x, float), w, t, prior, sigma_call, reads_per_call,
                                     float(sigma_field), prior_reads)
    M1 = information(model, x, w, theta, sigma_call=sigma_call, reads_per_call=reads_per_call)
    t = _padded(t, M1.shape[-1])
    base = _criterion_value(_inv_diag(M1), t)
    nan = np.isnan(t).any(1)
    if prior is None:
        return np.where(nan, np.nan, base)
    prior = np.asarray(prior, float)
    lo = np.zeros(len(theta))
    hi = np.where(np.isfinite(base), base, np.inf)
    done = _criterion_value(_inv_diag(prior + 0 * M1), t) <= 1.0
    hi = np.where(done, 0.0, hi)
    finite = np.isfinite(hi) & ~done
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        ok = _criterion_value(_inv_diag(prior + mid[:, None, None] * M1), t) <= 1.0
        hi = np.where(finite & ok, mid, hi)
        lo = np.where(finite & ~ok, mid, lo)
    return np.where(nan, np.nan, hi)


#: The most reads :func:`required_reads` considers with a per-field error (beyond: ``inf``).
_MAX_FIELD_READS = 1e13


def _required_reads_field(model, theta, x, w, t, prior, sigma_call, reads_per_call, tau, prior_reads):
    """:func:`required_reads` with a per-field error: ``M(N) = prior + Σ_x [gain_x(N) I_m + N w_x I_v]``,
    ``gain_x`` = :func:`_field_gain` from ``T0_x`` to ``T0_x + N w_x`` — monotone in ``N``, so the
    smallest sufficient ``N`` is bracketed by doubling and then bisected (in log N, to 0.1 %)."""
    n, k = w.shape
    sig = np.broadcast_to(np.asarray(sigma_call, float), (n,))
    rpc = np.maximum(np.broadcast_to(np.asarray(reads_per_call, float), (n, k)), 1.0)   # as _factors takes it
    T0 = _prior_reads(prior_reads, n, k)
    out = np.empty(n)
    for s0 in range(0, n, _CHUNK):
        sl = slice(s0, s0 + _CHUNK)
        use = (w[sl] > 0).any(0)                      # fields no row of the chunk weighs add nothing
        xs = x[use] if x.ndim == 1 else x[sl][:, use]
        G, rho = _factors(model, xs, theta[sl], sig[sl], rpc[sl][:, use], field_rho=True)
        rho = rho * tau**2
        ws, T0s = w[sl][:, use], T0[sl][:, use]
        tt = _padded(np.array(t[sl]), G.shape[2])
        P = np.zeros((len(ws), G.shape[2], G.shape[2])) if prior is None else np.asarray(prior, float)[sl]

        def ok(N):
            add = N[:, None] * ws
            M = P + _weighted_gram(G, np.stack([_field_gain(T0s, T0s + add, rho), add], -1))
            return _criterion_value(_inv_diag(M), tt) <= 1.0

        done = ok(np.zeros(len(ws)))
        hi = np.full(len(ws), float(np.max(rpc[sl])) if np.isfinite(rpc[sl]).all() else 1.0)
        while True:                                   # bracket: double until met or beyond the cap (≤ 45 times)
            grow = ~done & ~ok(hi) & (hi <= _MAX_FIELD_READS)
            if not grow.any():
                break
            hi = np.where(grow, 2.0 * hi, hi)
        reach = done | ok(hi)
        lo = np.where(reach & ~done, 0.5 * hi, 0.0)
        lo = np.where(ok(lo) & ~done, 0.0, lo)        # the first doubling may already be enough
        for _ in range(40):
            if not (reach & ~done & (hi - lo > 1e-3 * hi)).any():
                break
            mid = np.where(lo > 0, np.sqrt(lo * np.maximum(hi, lo)), 0.5 * hi)
            good = ok(mid)
            hi = np.where(reach & ~done & good, mid, hi)
            lo = np.where(reach & ~done & ~good, mid, lo)
        out[sl] = np.where(done, 0.0, np.where(reach, hi, np.inf))
    return np.where(np.isnan(t).any(1), np.nan, out)


def allocate(candidates: np.ndarray, weights: np.ndarray, calls: int, step: float = 0.005,
             threshold: float = 2e-3, merge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Turn design weights into whole calls at quantized fields, per row.

    Neighbouring candidates with weight above ``threshold`` are merged into one field (their
    weighted mean, rounded to ``step``); the ``calls`` are then apportioned to the merged fields by
    largest remainders. ``merge=False`` keeps every such candidate a field of its own (a design with a
    per-field error spreads its reads over distinct programmed values on purpose).

    Returns:
        ``(fields, counts)``, both ``(n, s)`` with ``s`` the largest number of fields of any row:
        row ``i`` spends ``counts[i, j]`` calls at field ``fields[i, j]`` (unused slots: count 0,
        field NaN); every row's counts sum to ``calls``.
    """
    if not (isinstance(calls, (int, np.integer)) and calls >= 1):
        raise ValueError(f"calls={calls!r} must be a positive integer")
    x = np.asarray(candidates, float)
    w = np.atleast_2d(np.asarray(weights, float))
    rows_f, rows_c = [], []
    for wi in w:
        wi = wi / wi.sum()
        keep = wi > threshold
        if not keep.any():
            keep = wi >= wi.max()
        idx = np.flatnonzero(keep)
        breaks = np.flatnonzero(np.diff(idx) > 1) + 1 if merge else np.arange(1, len(idx))
        groups = np.split(idx, breaks)
        mass = np.array([wi[gr].sum() for gr in groups])
        where = np.array([np.dot(wi[gr], x[gr]) / wi[gr].sum() for gr in groups])
        where = np.round(np.round(where / step) * step, 10) + 0.0
        where = np.clip(where, x.min(), x.max())
        share = mass / mass.sum() * calls
        cnt = np.floor(share).astype(int)
        rest = calls - cnt.sum()
        if rest:
            cnt[np.argsort(-(share - cnt), kind="stable")[:rest]] += 1
        # merged groups may round onto the same field
        uniq, inv = np.unique(where, return_inverse=True)
        merged = np.bincount(inv, weights=cnt).astype(int)
        rows_f.append(uniq[merged > 0])
        rows_c.append(merged[merged > 0])
    s = max(len(f) for f in rows_f)
    fields = np.full((len(w), s), np.nan)
    counts = np.zeros((len(w), s), dtype=np.int64)
    for i, (f, c) in enumerate(zip(rows_f, rows_c)):
        fields[i, :len(f)] = f
        counts[i, :len(c)] = c
    return fields, counts

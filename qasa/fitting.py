r"""Maximum-likelihood fits of a response model to every qubit at once.

Likelihood
    For qubit ``i`` at field ``h_j`` with ``N_ij`` reads of which ``n_ij`` returned -1, the counts
    are binomial with ``p_ij = (1 + m(h_j; θ_i)) / 2``. The log-likelihood (up to the binomial
    coefficient, which no parameter changes) is ``ℓ_i = Σ_j n_ij log p_ij + (N_ij − n_ij) log(1 − p_ij)``,
    with ``p`` clipped to ``[1e-15, 1 − 1e-15]``.

Optimizer
    A projected Levenberg–Marquardt iteration on Fisher scoring, vectorized over rows: the score
    ``g = Σ_j (n − Np) / (p(1−p)) ∂p/∂φ`` and the expected information
    ``F = Σ_j N / (p(1−p)) ∂p/∂φ ∂p/∂φᵀ`` are arrays over (row × h); each row solves
    ``(F + λ diag F) δ = g`` with its own damping λ (÷10 on an accepted step, ×10 on a rejected one);
    parameters at a bound with the score pointing outward are held there. Every row of every start is
    one row of the same arrays, so a whole device with several starts is one batched problem.
    A row has converged when an accepted step gains less than ``tol`` nats or moves every parameter
    by less than ``step_tol`` of its conditional standard error — or, checked before spending an
    evaluation on it, when the next nearly undamped step is *predicted* by the quadratic model to do
    so (the Newton-decrement test; a step that would reach a bound is always taken). Starts of the
    same qubit that come within 0.5 conditional standard errors of a better one (every parameter)
    have reached its basin and are dropped.

    Evaluation of the ``qasa`` model runs on a fused function of φ (:func:`qasa.models._qasa_phi`)
    that writes into scratch arrays reused across row chunks and leaves per-row factors of the
    Jacobian to be applied after the sum over h.

    The iteration runs on the internal parameters φ of :attr:`qasa.models.Model.internal`: the
    parameters in which ``m`` is even (γ, η of ``qasa``, σ of ``gaussian-noise``) are fitted as
    ``φ = θ²``. In θ the score of such a parameter is exactly 0 at θ = 0 (DESIGN.md §6), so a step
    clipped onto the bound could never leave it; in φ the score there is ``½ ∂²ℓ/∂θ²``, so the fit
    leaves the bound whenever the likelihood rises off it. Results are reported in θ.

Multi-start and escape step
    The QASA likelihood has a spurious optimum at η = 0 (DESIGN.md §3), so each model supplies
    several starts (:meth:`qasa.models.Model.starts`); the best log-likelihood per qubit is kept.
    On a long grid (≥ 54 h values) the starts run first on every ``len(h) // 20``-th h value (a
    quarter of the cost per evaluation on the 81-value reference grid), to a loose tolerance, and
    only the best coarse basin (and any within 2 nats of it) is refined on all the data; a qubit
    left on η = 0 there also runs the start farthest from η = 0 on all the data. A qubit whose
    transition and tails the coarse grid does not sample (fewer than 3 coarse values with observed
    P(−1) in [0.1, 0.9], or fewer than 2 outside), whose coarse values hold under half their share of
    its reads, whose coarse fit
    steepens beyond the coarse grid's resolution (β·Δh > 1.5) or whose refinement does not converge
    runs every start on all the data instead (:func:`_multistart`).
    The profiles below explore every parameter away from the fit; if any profile point beats the
    fit by more than 1e-3 nats, the qubit is refitted from that point and its intervals recomputed
    (up to 3 rounds). A qubit left on η = 0 is therefore a maximum of the profile over the whole
    searched range, not a stuck start.

Uncertainty
    Standard errors are the square roots of the diagonal of the inverse *observed* information
    (the expected information under the between-call component, see "Between calls")
    ``−∂²ℓ/∂θ²`` (forward differences of the analytic score), over the parameters not at a bound;
    a parameter at a bound gets a NaN standard error (a Wald error conditional on the bound would be
    too small, DESIGN.md §6). ``cov_<a>_<b>`` are the matching covariances. ``bootstrap=B`` adds
    parametric-bootstrap standard errors (B data sets drawn from the fitted curve, each refitted in
    φ, so that replicates of a fit on η = 0 can leave it).

Profile-likelihood intervals (``<param>_lo``, ``<param>_hi``; :func:`profile_intervals`)
    For every parameter ``θ_j`` of every qubit, the profile ``ℓ_p(t) = max ℓ(θ)`` over all other
    parameters with ``θ_j = t`` — every other parameter free within its bounds: η is profiled over,
    never fixed at its estimate, so intervals of β, b, γ stay valid when η̂ = 0. The interval is
    ``{t : 2 (ℓ̂ − ℓ_p(t)) ≤ c}`` with ``c = χ²₁(level)`` (3.841 at 95 %). Endpoints are found on
    the signed root ``r(t) = √(2(ℓ̂ − ℓ_p(t)))``, which is nearly linear in the internal coordinate
    φ_j, by Newton steps (``dℓ_p/dt`` is the score of θ_j at the constrained optimum) or secant steps,
    kept inside the bracket once the cut-off has been crossed (bisection if neither is finite, or if
    the last step left more than half of a bracket whose outer point has r > 2√c), until
    ``|r − √c| < 0.01`` (the end to 1 % of a standard error), or until a quadratic model of ``r``
    through the estimate and the last point (value and slope) puts the end within half that
    tolerance of its Newton step (:func:`_quadratic_end`; not across a change of the parameters on
    their bounds);
    the first trial point is the Wald step ``φ̂_j ± √c·se_φ`` (observed information mapped to φ when
    no parameter is on a bound, else the expected information in φ, which is finite there), the
    other parameters warm-started from the previous point and moved by their first-order regression
    on φ_j (a parameter on its bound at the estimate stays there). The maximization over the other
    parameters at a point stops on the quadratic model's maximum when its predicted gain is below
    0.1 nats (:data:`_PROFILE_PREDICT_TOL`, measured error ≤ 0.0034 nats at the 99th percentile).
    A point reached by a long move (beyond 1.5 Wald steps) that lands far beyond the cut-off
    (2(ℓ̂ − ℓ_p) > 4c) is maximized again from the last point inside, unmoved, and the better maximum
    is kept: the first-order move over such a distance can lead the inner fit to a poor local
    maximum, which would end a profile that in fact levels off below the cut-off (β → ∞ when γ > 0).
    An end still bracketed after the last step is interpolated on r, or, when the outer point of
    the bracket is far beyond the cut-off (r > 2√c), is that outer point (conservative). A bracket
    over orders of magnitude of a parameter bounded below by 0 is bisected on a log scale. All (qubit, parameter, side)
    rows are one batched constrained maximization (:func:`maximize` with ``fixed``). Rules:

    - *one-sided*: a parameter whose estimate is on its bound gets that bound as one end (η̂ = 0 →
      ``[0, η_hi]``); if the profile stays below the cut-off all the way to the bound, that end is
      the bound. The same χ²₁ cut-off is used on both sides: when the truth is on the bound the
      likelihood-ratio law is ½χ²₀ + ½χ²₁ (Self & Liang 1987), so these intervals cover it with
      probability 97.5 % (conservative), and 95 % elsewhere, asymptotically. Conditional on η̂ = 0
      the coverage of η is higher still (a truth η = 0 is then always covered).
    - *unbounded*: a profile that has not crossed the cut-off after 14 evaluations (each expanding
      the search up to ×4) gives ±inf — the data do not bound the parameter on that side.
    - Invariance: the intervals do not depend on the parametrization (φ or θ) — endpoints are
      mapped back with ``θ = √φ``.
    - Limitation — a confidence set in two pieces: each end is the first crossing of the cut-off
      going out from the estimate. On weakly informative qubits the profile of η can dip below the
      cut-off and rise above it again towards η = 0 (a second region at small η with a smaller β);
      the reported ``[η_lo, η_hi]`` is then the piece around the estimate only. Measured by profiling
      every qubit at η = 0 (2 000-qubit QASA-model devices, β ~ U(1, 10), η ~ U(0, 0.3)): 0.9 % of
      the qubits with ``η_lo > 0`` at 30 reads per h, 0.2 % at 100, none at 1 000; η's coverage over
      all qubits stays 0.95–0.96 on those devices.

    Measured (tests/test_inference.py, QASA-model devices of 2 000 qubits run through
    :func:`qasa.run` with the default gauges): coverage 0.94–0.965 for each of β, b, γ, η over all
    qubits and 0.935–0.97 for β, b, γ on the ~22 % of qubits with η̂ = 0; the ends agree with a
    per-qubit scipy ``brentq`` on the same profile to ~2e-5 of the width (benchmarks/fit_speed.py).

Between calls (issue 20; DESIGN.md §7)
    Every call is a new programming of the QPU: the reads of one call share a field offset δ that
    changes from call to call. For the ``qasa`` model on data with per-call statistics
    (:class:`qasa.dataset.CallStats`, attached by :meth:`qasa.Dataset.response`), :func:`fit` adds a
    fifth parameter, ``sigma_call`` (σ, h units): δ ~ N(0, σ²) drawn afresh per call and qubit and
    acting as a per-call b (the qubit sees ``b + δ``). η stays the within-call noise and β, b, γ
    keep their meaning (b is the run's static bias). The per-call offsets are integrated out per
    cell (qubit × programmed field), from the cell's sufficient statistics — the number of calls
    ``C``, the summed counts ``S``, ``U = T − S``, ``Σ N_c²`` and the spread ``R0 = Σ (n_c − r N_c)²``
    about the cell's pooled fraction ``r`` — so the cost does not grow with the number of calls:

    - the mean response over the offsets is the two-node Gauss–Hermite rule at ``b ± σ``,
      ``p̄ = ½ (p₊ + p₋)`` (:func:`_mean_calls`; fourth-order error ≤ 2e-4 in m at σ = 0.02), and the
      between-call variance of a call's P(−1) is ``s² = g σ² + ½ h σ⁴`` (``Var_δ p(b + δ)`` to fourth
      order) with ``g = (∂p/∂b)²`` and ``h = (∂²p/∂b²)²`` of the binomial fit that starts this one
      (data: the fit is a pseudo-likelihood in g and h; without h, σ_call read 1 % high at
      σ = 0.02, β ≈ 8);
    - in a cell whose calls expect each outcome ≥ :data:`GAUSS_MIN_COUNT` times, the per-call counts
      are taken as Gaussian with the mean and variance of the model, ``n_c ~ N(N̄ p̄, V)``,
      ``V = N̄ (p̄q̄ + N̄ s²)``: ``ℓ = −(C/2) log V − Σ (n_c − N̄ p̄)² / (2V)`` — its estimating equations
      need only the first two moments, so they stay unbiased when each call's response
      ``p(b + δ)`` is skewed (β·σ ≳ 0.1: a Laplace step with a data-dependent curvature there biased
      β and η, coverage 0.84/0.74 at σ = 0.02);
    - in the other cells (the tails: few counts per call, little slope) each call's offset is
      integrated by a Laplace step on the binomial likelihood of the call with the observed
      curvature per unit variance ``K = (S/p̄² + U/q̄²)/C``:
      ``ℓ = ℓ_bin(p̄) + A R0 + min(A Σ N² (p̄ − r)², ℓ_sat − ℓ_bin) − (C/2) log D`` with
      ``D = 1 + s² K``, ``A = s² / (2 p̄² q̄² D)`` (the observed, not the expected, curvature makes
      the score's expectation vanish at the truth for a symmetric offset; with the expected one
      every cell's score in p̄ is off by ``C (q̄ − p̄) a/(2 w²)``). The reward of the pooled mean's
      misfit is capped at the binomial shortfall ``ℓ_sat − ℓ_bin``: without the cap a large σ
      bought thousands of nats far from the data (a quadratic step over a misfit);
    - a steep wall keeps ``β·σ ≤`` :data:`BETA_SIGMA_MAX` (0.4), the domain where one slope g per cell
      describes the offsets; a fit that ends there keeps its binomial fit with a reason, and
      σ ≤ :data:`SIGMA_CALL_MAX`.

    The fit runs after the binomial one (its estimates start it, σ² from moments), on the same
    optimizer and profile machinery (standard errors and ``cov_<a>_<b>`` from the expected
    information, within 3 % of the observed one on the fit_speed device); every ``<p>_lo/_hi`` is then a profile interval of the
    between-call likelihood (σ_call on its bound 0 gets ``[0, σ_hi]``, one-sided). ``deviance`` is
    each cell's binomial deviance divided by its inflation ``D``; ``aic``/``bic`` count σ_call.
    ``dispersion_p`` is a homogeneity test of the per-call counts at equal programmed field against the
    cell's pooled binomial, over the cells whose calls expect each outcome ≥ :data:`MIN_CALL_COUNT`
    times (``dispersion_df`` = Σ (C − 1) there): the score test of σ_call = 0 (:func:`_dispersion`),
    which weighs each cell's Pearson X² by what an offset of b does there (it flags a random walk
    of b on 0.75 of qubits at 1 000 reads per h in calls of 250 where Pearson's unweighted sum flags
    0.70, both at their level on clean data). With fewer than
    :data:`MIN_CALL_DF` such degrees of freedom (e.g. one call per h value) σ_call cannot be told
    from other misfit: ``sigma_call_identified`` is False, σ_call NaN, the qubit keeps the binomial
    fit, and its reason says so ("sigma_call not identified: ...; intervals assume no between-call
    noise"). A :class:`~qasa.dataset.Response` without per-call statistics, or
    ``between_calls=False``, gives the binomial fit of the summed counts (reads independent).

    Measured (independent sampler with a fresh N(0, σ²) offset of b per call, tests/qasa_sampler.py;
    the figures are in README "Parameters" and the slow tests of tests/test_between_calls.py).

Per-field errors (``sigma_field``; issue 20)
    A qubit programmed twice with the same value gets the same rounding error from the h DAC (up to
    ±0.008 at h = 0, DESIGN.md §7), in every call: an offset ``ε_x ~ N(0, τ²)`` per (qubit, programmed
    value x), shared by all the calls of a cell, on top of each call's own δ. Neither σ_call (which
    varies between calls) nor the QASA curve contains it, and once the shots resolve it the
    goodness-of-fit test flags the qubit (39 % "lack of fit" on the default virtual device at 40 000
    reads per h). With it, a cell's calls share ``N̄² t²`` of covariance, ``t² = g τ²``:

    - Gaussian cells: the cell mean has variance ``V_m = V + Σ N² t²`` over ``Σ N²`` and the spread
      about it keeps ``V`` (compound symmetry), ``ℓ = −½ [(C − 1) log V + log V_m + R0/V + M/V_m]``,
      ``M = Σ N² (p̄ − r)²`` — a closed form, at no cost;
    - Laplace cells (the tails, where ``g`` is small): the pooled mean's terms (binomial and misfit)
      are weighted by ``κ = 1/(1 + T t²/w₀)`` (``w₀`` at the binomial fit), a quasi-likelihood with
      the mean's variance inflated by the same amount;
    - ``deviance`` divides each cell's binomial deviance by ``1 + (s² + C t²) K``.

    τ² belongs to the device's DAC, not to one qubit, and a per-qubit τ would soak up any lack of fit
    (and leave the goodness-of-fit test blind): :func:`fit` estimates **one τ² per fit** (for every
    block of :data:`FIT_CHUNK` qubits alike), before the between-call fits, from the Gaussian cells of
    every qubit whose σ_call is identified (:func:`field_variance`): each cell's squared misfit of
    the pooled mean about the binomial fit, ``e = Σ N² (p̂ − r)²``, is taken as ``(1 − lev) V_m χ²₁``
    (``V`` from the qubit's moment estimate of σ_call, ``lev`` the cell's leverage in the qubit's
    weighted fit of the mean; standardized misfits winsorized at :data:`_FIELD_Z_MAX`). Each qubit's
    cells give a standardized score for τ², and τ² ≥ 0 solves the score equation
    over the qubits within :data:`_FIELD_REJECT` standard errors of it: a qubit whose cells scatter far
    beyond what the device's τ predicts — broken, or not described by the model — gets no weight, so it
    can neither set τ for the others nor hide its own lack of fit
    (``meta["sigma_field"]["outlying_qubits"]`` counts them). The interval inverts the score test. With fewer than
    :data:`FIELD_MIN_QUBITS` such qubits τ is not estimated (NaN; no per-field term). τ² is then held
    fixed: the profile intervals do not include its uncertainty (its relative error is ~3 % on a
    device of 200 qubits at 40 000 reads per h). ``meta["sigma_field"]`` holds the estimate, its
    interval, the numbers of cells and qubits and the score statistic ``z`` of τ² = 0; the table's
    ``sigma_field`` column repeats it on the rows it was applied to. A real DAC's error shrinks with
    |h| (±0.0005 at h = 2); one τ describes the transition region, where the cells carry weight.
    Measured in README "Per-field errors: σ_field" (tests/test_between_calls.py). A given
    ``sigma_field`` applies where the between-call fit runs (the ``qasa`` model with per-call
    statistics and σ_call identified); elsewhere there is nothing to hold it in.
    ``sigma_field=`` a number fixes τ instead; ``0`` is the likelihood without it.

Statistics and quality rule (:class:`QualityRule`)
    ``deviance`` = 2 (ℓ_saturated − ℓ), with ``df`` = (h values with reads) − (free parameters) and
    ``gof_pvalue`` = χ²_df survival of the deviance; ``aic = 2p − 2ℓ``, ``bic = p log N − 2ℓ`` (N the
    qubit's reads). Each qubit is

    - ``failed``: degenerate data (no reads; all reads −1 or all +1; fewer distinct h values than
      parameters; no nonzero h) or the optimizer ended non-finite or unconverged — parameters NaN;
    - ``bad``: lack of fit (``gof_pvalue < gof_alpha``, default 1e-3), or a free parameter with a
      non-finite standard error, or β's relative standard error above ``max_rel_stderr`` (0.5), or
      a parameter that the data do not identify (``"<p> not identified: interval unbounded"``);
    - ``good``: otherwise. ``reason`` says why a qubit is not good, and for good qubits it names
      every parameter that is only bounded on one side: ``"<p> on its bound: one-sided interval"``
      (estimate on the bound) or ``"<p> interval reaches its bound: one-sided"`` (estimate inside,
      bound not excluded). Such a value is an upper (or lower) limit, not a measurement: device
      statistics of that parameter must treat it as censored. An empty ``reason`` means every
      parameter has a two-sided, finite interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from qasa.dataset import Dataset, Response, atomic_write_bytes
from qasa.models import Model, _buf, compared_models, get_model, nested_pairs

__all__ = ["fit", "compare", "FitTable", "FitResult", "QualityRule", "maximize", "loglik",
           "profile_intervals", "NESTED_PAIRS"]  # noqa: F822 (NESTED_PAIRS: module __getattr__, from the registry)


def __getattr__(name: str) -> Any:
    """``NESTED_PAIRS``: the registry's nested pairs now (:func:`qasa.models.nested_pairs`)."""
    if name == "NESTED_PAIRS":
        return nested_pairs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_PCLIP = 1e-15


@dataclass(frozen=True)
class QualityRule:
    """Thresholds of the quality rule (see module docstring)."""

    gof_alpha: float = 1e-3
    max_rel_stderr: float = 0.5
    min_reads: int = 10


@dataclass(frozen=True)
class FitResult:
    """One qubit's fit as a plain record."""

    qubit: int
    model: str
    params: dict[str, float]
    stderr: dict[str, float]
    loglik: float
    success: bool
    message: str
    quality: str
    interval: dict[str, tuple[float, float]] | None = None


def _m(model: Model, h: np.ndarray, theta: np.ndarray, jac: bool, ws: dict | None = None):
    """Magnetization (n, k), parameter-major Jacobian (p, n, k) and its per-row factors (n, p) from the
    model's function. A function that accepts a scratch workspace ``ws`` returns ``dm`` without the
    factors (the caller applies them after summing over h, see :func:`qasa.models._qasa_phi`);
    otherwise the factors are ``None`` and ``dm`` is the Jacobian."""
    scale = None
    if ws is not None and getattr(model._fn, "workspace", False):
        m, dm, scale = model._fn(h, theta, jac, ws)
    else:
        m, dm = model._fn(h, theta, jac)
    return np.broadcast_to(m, (len(theta), len(h))), dm, scale


def loglik(model: Model | str, h: np.ndarray, theta: np.ndarray, n_down: np.ndarray,
           n_total: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood per row (without the binomial coefficient)."""
    model = get_model(model)
    m, _, _ = _m(model, np.asarray(h, float), np.asarray(theta, float), False)
    p_down, p_up = _probabilities(m)
    return (n_down * np.log(p_down) + (n_total - n_down) * np.log(p_up)).sum(-1)


def _probabilities(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(-1) = (1 + m)/2 and P(+1) = (1 − m)/2, each clipped to [1e-15, 1 − 1e-15]."""
    return (np.clip(0.5 * (1.0 + m), _PCLIP, 1 - _PCLIP), np.clip(0.5 * (1.0 - m), _PCLIP, 1 - _PCLIP))


#: (row, h) cells evaluated together, in one reused scratch workspace: small enough that the
#: scratch arrays stay in the CPU cache (the element-wise work is memory-bound), large enough that
#: the ~60 numpy calls per chunk cost little. Measured on the fit_speed device (5 640 × 81): chunks
#: of 128 rows 1.25 s, 192 1.21 s, 256 1.21 s, 384 1.14 s, 512 1.14 s (CPU time of a full fit, best
#: of 3); a chunk has ``CHUNK_CELLS // len(h)`` rows.
CHUNK_CELLS = 384 * 81


def _evaluate(model, h, theta, n_down, n_total, info=True):
    """Log-likelihood, score and (optionally) expected information per row, in row chunks that
    share one scratch workspace (see :func:`qasa.models._qasa_phi`). The between-call model
    (:data:`CALL_MODEL`) takes its packed per-cell statistics as ``n_down`` (:func:`_evaluate_calls`)."""
    n = len(theta)
    ws: dict = {}
    rows = max(1, CHUNK_CELLS // max(len(h), 1))
    block = _evaluate_calls if getattr(model._fn, "between_calls", False) else _evaluate_block
    if n <= rows:
        return block(model, h, theta, n_down, n_total, info, ws)
    k = theta.shape[1]
    ll, score = np.empty(n), np.empty((n, k))
    fisher = np.empty((n, k, k)) if info else None
    for i in range(0, n, rows):
        sl = slice(i, i + rows)
        out = block(model, h, theta[sl], n_down[sl], n_total[sl], info, ws)
        ll[sl], score[sl] = out[0], out[1]
        if info:
            fisher[sl] = out[2]
    return ll, score, fisher


def _evaluate_block(model, h, theta, n_down, n_total, info, ws=None):
    """One chunk: ``ℓ = Σ n log p + (N − n) log q``, score ``Σ (n − Np)/(2pq) ∂m/∂φ`` and expected
    information ``Σ N/(4pq) ∂m/∂φ ∂m/∂φᵀ`` (p = (1 + m)/2, q = 1 − p, both clipped)."""
    ws = {} if ws is None else ws
    m, dm, scale = _m(model, h, theta, True, ws)
    shape = m.shape
    # p = (1 + m)/2 and q = (1 − m)/2 clipped to [1e-15, 1 − 1e-15]: m clipped once (into p's array)
    p = np.clip(m, 2 * _PCLIP - 1, 1 - 2 * _PCLIP, out=_buf(ws, "p", shape))
    q = np.subtract(1.0, p, out=_buf(ws, "q", shape))
    q *= 0.5
    p += 1.0
    p *= 0.5
    lp = np.log(p, out=_buf(ws, "lp", shape))
    lq = np.log(q, out=_buf(ws, "lq", shape))
    # ℓ = Σ n log p + (N − n) log q as two row-wise dot products (terms of one sign: the form
    # Σ n log(p/q) + N log q cancels and loses a digit, 1.5e-7 nats at 10⁶ reads per h)
    ll = np.einsum("nk,nk->n", n_down, lp)
    ll += np.einsum("nk,nk->n", np.subtract(n_total, n_down, out=_buf(ws, "nu", shape)), lq)
    pq = np.multiply(p, q, out=q)
    res = np.multiply(n_total, p, out=p)
    np.subtract(n_down, res, out=res)
    res /= pq                                  # (n − Np)/(p q); the score is ½ Σ res ∂m/∂φ (∂p/∂m = ½)
    dmt = dm.transpose(1, 0, 2)                # (n, p, k) view
    score = np.matmul(dmt, res[..., None])[..., 0]
    score *= 0.5 if scale is None else 0.5 * scale
    if not info:
        return ll, score, None
    sw = np.divide(n_total, pq, out=lq)        # N/(pq); the information is ¼ Σ N/(pq) ∂m ∂mᵀ
    np.sqrt(sw, out=sw)
    if scale is not None:
        a = dmt
        a *= sw[:, None, :]                    # the model's scratch Jacobian, consumed here
        fisher = np.matmul(a, a.transpose(0, 2, 1))
        half = 0.5 * scale
        fisher *= half[:, :, None]
        fisher *= half[:, None, :]
        return ll, score, fisher
    a = dmt * sw[:, None, :]
    fisher = np.matmul(a, a.transpose(0, 2, 1))
    fisher *= 0.25
    return ll, score, fisher


# -- between-call (per-programming) likelihood ------------------------------------------------------
#: Features of the packed per-cell statistics of the between-call likelihood (axis 1 of its ``n_down``).
_S, _U, _C, _NN, _R, _R0, _G, _SC, _UC, _SAT, _GS, _H, _TF, _KAP = range(14)


def _pack_calls(r: Response, rows: np.ndarray, slope2: np.ndarray, curv2: np.ndarray | None = None,
                field_var: float = 0.0, p0: np.ndarray | None = None) -> np.ndarray:
    """The between-call likelihood's data of ``rows``: ``(n, 14, k)`` float, features ``S = Σn``,
    ``U = ΣN − Σn``, ``C`` (calls), ``Σ N²``, ``r``, ``Σ (n − rN)²`` (:class:`~qasa.dataset.CallStats`),
    ``g = (∂p/∂b)²`` at the first-stage estimate, ``S/C``, ``U/C``, the saturated binomial
    log-likelihood ``S log(S/T) + U log(U/T)``, the Gaussian-form mask, ``h = (∂²p/∂b²)²`` at the
    first-stage estimate (0 if not given), ``t² = g τ²``, the variance of P(−1) from the per-field
    offset shared by the cell's calls (``field_var`` = τ², module docstring "Per-field errors"), and
    the weight ``κ = 1/(1 + C N̄ t²/w₀)`` of the pooled mean in a Laplace cell (``w₀ = p₀q₀`` at the
    first-stage P(−1) ``p0``; 1 in the Gaussian cells and without a per-field offset)."""
    c = r.calls
    nd, nt = r.n_down[rows].astype(float), r.n_total[rows].astype(float)
    C = c.n_calls[rows].astype(float)
    out = np.empty((len(rows), 14, len(r.h)))
    out[:, _S], out[:, _U], out[:, _C] = nd, nt - nd, C
    out[:, _NN], out[:, _R], out[:, _R0] = c.reads_sq[rows], c.centre[rows], c.spread[rows]
    out[:, _G] = slope2
    out[:, _SC] = nd / np.maximum(C, 1.0)
    out[:, _UC] = (nt - nd) / np.maximum(C, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = nd / np.maximum(nt, 1.0)
        out[:, _SAT] = np.where(nd > 0, nd * np.log(frac), 0.0) + np.where(nt > nd, (nt - nd) * np.log1p(-frac), 0.0)
    # cells whose calls expect each outcome ≥ MIN_CALL_COUNT times: the Gaussian form (module docstring)
    out[:, _GS] = (C >= 1) & (np.minimum(out[:, _SC], out[:, _UC]) >= GAUSS_MIN_COUNT)
    out[:, _H] = 0.0 if curv2 is None else curv2
    return _set_field(out, field_var, p0)


def _set_field(D: np.ndarray, field_var: float, p0: np.ndarray | None) -> np.ndarray:
    """Fill the per-field features ``t² = g τ²`` and ``κ`` of packed cells ``D`` (:func:`_pack_calls`) for
    τ² = ``field_var`` at the first-stage P(−1) ``p0``, in place; returns ``D``."""
    D[:, _TF] = D[:, _G] * field_var
    D[:, _KAP] = 1.0
    if field_var > 0:
        w0 = np.maximum(p0 * (1.0 - p0), _PCLIP)
        D[:, _KAP] = np.where(D[:, _GS] > 0, 1.0, 1.0 / (1.0 + (D[:, _S] + D[:, _U]) * D[:, _TF] / w0))
    return D


#: Below this value of β·σ_call the mean response takes the per-call offsets as part of η
#: (``η_tot² = η² + σ²``, exact to second order; the fourth-order difference is below 1e-12 there).
_SMALL_BS = 1e-3


def _mean_calls(h, phi, ws):
    r"""The mean response over the per-call offsets and its Jacobian in φ = (β, b, γ², η², σ²), by
    the two-node Gauss–Hermite rule for the offset δ ~ N(0, σ²) on top of QASA's ±η:
    ``m̄ = ½ (m(b + σ) + m(b − σ))`` (exact to third order in the noise; the fourth-order error, ``2σ⁴``
    against ``3σ⁴``, was measured ≤ 2e-4 in m at β = 8–10, σ = 0.02, against ≤ 5e-3 for ``m(η_tot)``),
    ``∂m̄/∂(σ²) = (m_b(b + σ) − m_b(b − σ))/(4σ)``. Rows with ``βσ <`` :data:`_SMALL_BS` take
    ``m̄ = m(η_tot)``, ``η_tot² = η² + σ²`` (the same to second order). Returns ``(m̄, P)`` with
    ``P = ∂p̄/∂φ`` ``(5, n, k)``, ``p̄ = (1 + m̄)/2``."""
    sig = np.sqrt(np.maximum(phi[:, 4], 0.0))
    big = phi[:, 0] * sig >= _SMALL_BS
    base = phi[:, :4].copy()
    base[:, 3] += np.where(big, 0.0, phi[:, 4])
    up, down = base.copy(), base.copy()
    up[:, 1] += np.where(big, sig, 0.0)
    down[:, 1] -= np.where(big, sig, 0.0)
    mp, dmp, scale = _m(QASA_INTERNAL, h, up, True, ws.setdefault("plus", {}))
    shape = mp.shape
    P = _buf(ws, "c_P", (5,) + shape)
    sc = scale.T[:, :, None]
    if not big.any():
        np.multiply(dmp, 0.5 * sc, out=P[:4])
        P[4] = P[3]
        return mp, P
    mm, dmm, _ = _m(QASA_INTERNAL, h, down, True, ws.setdefault("minus", {}))
    m = np.add(mp, mm, out=_buf(ws, "mbar", shape))
    m *= 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_sig = np.where(big, 1.0 / np.where(big, sig, 1.0), 0.0)[:, None]
    # (dm± are the model's Jacobians without their per-row factors ``scale``, the same for both)
    np.subtract(dmp[1], dmm[1], out=P[4])
    P[4] *= (0.125 * scale[:, 1:2]) * inv_sig       # ½ (m_b₊ − m_b₋)/(4σ)
    np.add(dmp, dmm, out=P[:4])
    P[:4] *= 0.25 * sc                              # ∂p̄/∂φ = ¼ (J₊ + J₋)
    if not big.all():
        small = ~big
        P[4][small] = P[3][small]
    return m, P


def _evaluate_calls(model, h, phi, data, n_total, info, ws=None):
    r"""The between-call log-likelihood of a chunk, its score and expected information in
    ``φ = (β, b, γ², η², σ²)`` (module docstring, "Between calls"). Per cell, with ``p = p̄``
    (:func:`_mean_calls`), the between-call variance of P(−1) ``s² = g σ² + ½ h σ⁴`` (``g``, ``h`` of the
    first-stage fit, data), ``w = pq``, ``K = (S/p² + U/q²)/C``
    (the observed binomial curvature per call, per unit slope), ``D = 1 + s² K`` and
    ``R = Σ (n − pN)² = R0 + Σ N² (p − r)²``:

    ``ℓ = S log p + U log q + A R0 + min(A Σ N² (p − r)², ℓ_sat − ℓ_bin) − (C/2) log D``,
    ``A = s² / (2 w² D)`` (Laplace cells), or ``ℓ = −(C/2) log V − R/(2V)``, ``V = N̄ (w + N̄ s²)``, in
    the cells marked Gaussian by :func:`_pack_calls`.
    """
    ws = {} if ws is None else ws
    m, P = _mean_calls(h, phi, ws)
    c = _CallCells(data, phi, m, ws)
    cell = c.laplace()
    lp, ls = c.laplace_slopes()
    gauss = c.gs > 0
    if gauss.any():
        c.gaussian(gauss, cell, lp, ls)
    ll = cell.sum(1)
    Pt = P.transpose(1, 0, 2)
    score = np.matmul(Pt, lp[..., None])[..., 0]
    score[:, 4] += np.einsum("nk,nk->n", ls, c.ds2)        # ∂s²/∂(σ²) = g + h σ²
    # outside the approximation's domain (β·σ > BETA_SIGMA_MAX) a steep quadratic wall (module docstring)
    bs = phi[:, 0] * np.sqrt(np.maximum(phi[:, 4], 0.0))
    over = np.maximum(bs - BETA_SIGMA_MAX, 0.0)
    wall = over.any()
    if wall:
        with np.errstate(invalid="ignore", divide="ignore"):
            d_bs = np.column_stack([np.sqrt(np.maximum(phi[:, 4], 0.0)),
                                    np.where(phi[:, 4] > 0, 0.5 * phi[:, 0] / np.sqrt(np.maximum(phi[:, 4], 1e-300)), 0.0)])
        ll = ll - _WALL * over ** 2
        score[:, 0] -= 2.0 * _WALL * over * d_bs[:, 0]
        score[:, 4] -= 2.0 * _WALL * over * d_bs[:, 1]
    if not info:
        return ll, score, None
    fisher = c.information(Pt)
    if wall:
        hit = over > 0
        for i, a in ((0, 0), (1, 4)):
            for j, b in ((0, 0), (1, 4)):
                fisher[hit, a, b] += 2.0 * _WALL * d_bs[hit, i] * d_bs[hit, j]
    return ll, score, fisher


class _CallCells:
    """The cells (qubit × programmed field) of one chunk of the between-call likelihood
    (:func:`_evaluate_calls`): the packed statistics of :func:`_pack_calls`, the mean ``p = p̄`` and
    the between-call variance ``s²``, and the steps that turn them into each cell's log-likelihood
    and its slopes in ``p`` and ``s²``. Every array lives in the workspace's scratch arrays; the
    steps run in order (:meth:`laplace`, :meth:`laplace_slopes`, :meth:`gaussian`,
    :meth:`information`), each reusing the arrays of the one before."""

    def __init__(self, data: np.ndarray, phi: np.ndarray, m: np.ndarray, ws: dict) -> None:
        shape = m.shape
        self.B = lambda name: _buf(ws, name, shape)
        B = self.B
        (self.S, self.U, self.C, self.NN, self.rr, self.R0, g, self.Sc, self.Uc, self.sat, self.gs,
         hh, self.tf, self.kap) = (data[:, i] for i in range(14))
        self.has_field = bool(self.tf.any())
        # s² = Var_δ p(b + δ) = g σ² + ½ h σ⁴ (to fourth order), and its slope in σ²: g + h σ²
        v = phi[:, 4:5]
        ds2 = np.multiply(hh, v, out=B("c_ds2"))
        s2 = np.multiply(ds2, 0.5 * v, out=B("c_s2"))
        s2 += np.multiply(g, v, out=B("c_gv"))
        ds2 += g
        self.s2, self.ds2 = s2, ds2
        p = np.clip(m, 2 * _PCLIP - 1, 1 - 2 * _PCLIP, out=B("c_p"))
        q = np.subtract(1.0, p, out=B("c_q"))
        q *= 0.5
        p += 1.0
        p *= 0.5
        self.p, self.q = p, q

    def laplace(self) -> np.ndarray:
        """Each cell's log-likelihood in the Laplace form:
        ``S log p + U log q + A R0 + min(A Σ N² (p − r)², ℓ_sat − ℓ_bin) − (C/2) log D``."""
        B, p, q, s2 = self.B, self.p, self.q, self.s2
        ip = np.divide(1.0, p, out=B("c_ip"))
        iq = np.divide(1.0, q, out=B("c_iq"))
        t1 = np.multiply(self.Sc, ip, out=B("c_t1"))
        t1 *= ip                                   # Sc/p²
        t2 = np.multiply(self.Uc, iq, out=B("c_t2"))
        t2 *= iq                                   # Uc/q²
        self.K = np.add(t1, t2, out=B("c_K"))
        Kp = np.multiply(t2, iq, out=t2)
        Kp -= np.multiply(t1, ip, out=t1)
        Kp *= 2.0                                  # ∂K/∂p
        self.Kp = Kp
        Dc = np.multiply(s2, self.K, out=B("c_D"))
        Dc += 1.0
        self.iD = np.divide(1.0, Dc, out=B("c_iD"))
        self.dev = np.subtract(p, self.rr, out=B("c_dev"))
        M = np.multiply(self.dev, self.dev, out=B("c_M"))
        M *= self.NN
        if self.has_field:
            M *= self.kap                          # the pooled mean's misfit on κ (a per-field offset)
        self.M = M
        self.w = np.multiply(p, q, out=B("c_w"))
        iw = np.divide(1.0, self.w, out=B("c_iw"))
        A = np.multiply(s2, iw, out=B("c_A"))
        A *= iw
        A *= self.iD
        A *= 0.5
        self.iw, self.A = iw, A
        lD = np.log(Dc, out=B("c_lD"))
        lbin = np.multiply(self.S, np.log(p, out=B("c_lp")), out=B("c_lb"))
        lbin += np.multiply(self.U, np.log(q, out=B("c_lq")), out=B("c_lq"))
        AM = np.multiply(A, M, out=B("c_AM"))
        L = np.subtract(self.sat, lbin, out=B("c_L"))
        if self.has_field:
            L *= self.kap                          # ℓ_sat − κ (ℓ_sat − ℓ_bin): the binomial mean on κ
        self.capped = AM > L
        self.any_cap = bool(self.capped.any())
        np.minimum(AM, L, out=AM)
        if self.has_field:
            AM += self.sat
            AM -= L
        else:
            AM += lbin
        cell = AM
        cell += np.multiply(A, self.R0, out=B("c_AR0"))
        lD *= self.C
        lD *= 0.5
        cell -= lD
        return cell

    def laplace_slopes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(∂ℓ/∂p, ∂ℓ/∂(s²))`` of every cell in the Laplace form (after :meth:`laplace`).

        ∂ℓ/∂p: binomial ``(S − Tp)/w``; ``A·R`` with ``R = R0 + M``: ``A (2 NN dev)`` [M part]
        ``− A R (2(q − p)/w + Dp)`` [through A]; ``−(C/2) Dp`` [log D], ``Dp = s² Kp / D``. Capped
        cells: the M part is ``ℓ_sat − ℓ_bin``. ∂ℓ/∂(s²) ``= R / (2 w² D²) − C K / (2 D)``.
        """
        B, p, q, A, iw, iD, C = self.B, self.p, self.q, self.A, self.iw, self.iD, self.C
        capped, any_cap = self.capped, self.any_cap
        Dp = np.multiply(self.s2, self.Kp, out=self.Kp)
        Dp *= iD
        self.wp = wp = np.subtract(q, p, out=B("c_wp"))
        fac = np.multiply(wp, iw, out=B("c_in"))
        fac *= 2.0
        fac += Dp                                  # −∂ log A/∂p
        R = np.add(self.R0, self.M, out=self.M)
        if any_cap:
            np.copyto(R, self.R0, where=capped)
        lp = np.multiply(R, fac, out=fac)
        lp *= -1.0
        dev = self.dev
        np.multiply(self.NN, dev, out=dev)
        dev *= 2.0
        if self.has_field:
            dev *= self.kap
        if any_cap:
            dev[capped] = 0.0
        lp += dev
        lp *= A
        self.T = T = np.add(self.S, self.U, out=B("c_T"))
        res = np.multiply(T, p, out=dev)
        np.subtract(self.S, res, out=res)
        res *= iw
        if any_cap:
            res[capped] = 0.0
        if self.has_field:
            res *= self.kap
        lp += res
        np.multiply(C, Dp, out=res)
        res *= 0.5
        lp -= res
        ls = np.multiply(R, iw, out=R)
        ls *= iw
        ls *= iD
        ls *= iD
        ls *= 0.5
        CK = np.multiply(C, self.K, out=self.K)
        CK *= iD
        CK *= 0.5
        ls -= CK
        return lp, ls

    def gaussian(self, gauss: np.ndarray, cell: np.ndarray, lp: np.ndarray, ls: np.ndarray) -> None:
        """The cells marked Gaussian (``gauss``): ``n_c ~ N(N̄ p, V)``, ``V = N̄ (w + N̄ s²)``, and with a
        per-field offset (``t² > 0``) the calls of a cell share ``N̄² t²`` of covariance, so that the cell
        mean has variance ``V_m = V + Σ N² t²`` over ``Σ N²`` (compound symmetry):
        ``ℓ = −½ [(C − 1) log V + log V_m + R0/V + M/V_m]``, ``M = Σ N² (p − r)²`` (``t² = 0``: the form
        ``−(C/2) log V − R/(2V)``), with its slopes, written over ``cell``, ``lp``, ``ls`` there."""
        B, p, C, NN = self.B, self.p, self.C, self.NN
        with np.errstate(invalid="ignore", divide="ignore"):     # (cells without reads: masked out)
            Nb = np.add(self.Sc, self.Uc, out=B("c_Nb"))
            V = np.multiply(Nb, self.s2, out=B("c_V"))
            V += self.w
            V *= Nb
            iV = np.divide(1.0, V, out=V)
            d0 = np.subtract(p, self.rr, out=B("c_d0"))
            Rf = np.multiply(d0, d0, out=B("c_Rf"))
            Rf *= NN
            if self.has_field:
                # V_m = V + NN t²: the within part (R0, C − 1 calls) on V, the mean part (M) on V_m
                iVm = np.multiply(NN, self.tf, out=B("c_iVm"))
                iVm += np.divide(1.0, iV, out=B("c_Vx"))
                np.divide(1.0, iVm, out=iVm)
                MiV = np.multiply(Rf, iVm, out=Rf)                # M/V_m
                R0iV = np.multiply(self.R0, iV, out=B("c_R0iV"))  # R0/V
                lG = np.log(iV, out=B("c_lG"))
                lG *= C - 1.0
                lG += np.log(iVm, out=B("c_lGm"))
                lG -= R0iV
                lG -= MiV
                lG *= 0.5
                Q = np.subtract(R0iV, C - 1.0, out=R0iV)
                Q *= iV
                MiV -= 1.0
                MiV *= iVm
                Q += MiV                                          # (R0/V − (C−1))/V + (M/V_m − 1)/V_m
                d0 *= iVm
            else:
                iVm = iV
                Rf += self.R0
                RiV = np.multiply(Rf, iV, out=Rf)                 # R/V
                lG = np.log(iV, out=B("c_lG"))
                lG *= C
                lG -= RiV
                lG *= 0.5
                Q = np.subtract(RiV, C, out=RiV)
                Q *= iV                                           # (R/V − C)/V
                d0 *= iV
            np.copyto(cell, lG, where=gauss)
            # ∂/∂p: ½ Vp Q − NN (p − r)/V_m, Vp = N̄ (q − p)
            lpG = np.multiply(Nb, self.wp, out=B("c_lpG"))
            lpG *= Q
            lpG *= 0.5
            d0 *= NN
            lpG -= d0
            np.copyto(lp, lpG, where=gauss)
            # ∂/∂(s²): ½ N̄² Q
            lsG = np.multiply(Nb, Nb, out=lpG)
            lsG *= Q
            lsG *= 0.5
            np.copyto(ls, lsG, where=gauss)
            if self.has_field:                  # the mean part's information: NN/V_m, or κ (Laplace cells)
                self.mean_share = np.where(gauss, np.divide(iVm, iV, out=B("c_share")), self.kap)

    def information(self, Pt: np.ndarray) -> np.ndarray:
        """The expected information in φ of a Gaussian model of the per-call counts (a metric for the
        optimizer's steps), from ``Pt = ∂p̄/∂φ`` ``(n, 5, k)``:
        ``I_pp = T/(w + a) + C/2 ((q − p)/(w + a))²``, ``I_ps = C/2 (q − p) N̄/(w + a)²``,
        ``I_ss = C/2 (N̄/(w + a))²``, ``a = N̄ s²``; ``F = Σ_k I_pp P Pᵀ + I_ps g (P e₄ᵀ + e₄ Pᵀ)
        + I_ss g² e₄ e₄ᵀ`` with ``g = ∂s²/∂(σ²)``. Consumes the arrays of the steps before."""
        B, C, ds2 = self.B, self.C, self.ds2
        Nb = np.add(self.Sc, self.Uc, out=B("c_Ng"))
        wa = np.multiply(Nb, self.s2, out=B("c_wa"))
        wa += self.w
        iwa = np.divide(1.0, wa, out=wa)
        x = np.multiply(self.wp, iwa, out=self.wp)
        y = np.multiply(Nb, iwa, out=Nb)
        Ipp = np.multiply(self.T, iwa, out=self.T)
        if self.has_field:
            Ipp *= getattr(self, "mean_share", self.kap)   # the pooled mean informs on V_m, not V
        tmp = np.multiply(x, x, out=B("c_tmp"))
        tmp *= C
        tmp *= 0.5
        tmp *= self.gs                             # (the variance law informs p only in the Gaussian form)
        Ipp += tmp
        Ips = np.multiply(x, y, out=x)
        Ips *= C
        Ips *= 0.5
        Iss = np.multiply(y, y, out=y)
        Iss *= C
        Iss *= 0.5
        A2 = Pt * np.sqrt(Ipp, out=Ipp)[:, None, :]
        fisher = np.matmul(A2, A2.transpose(0, 2, 1))
        Ips *= ds2
        cross = np.matmul(Pt, Ips[..., None])[..., 0]
        fisher[:, :, 4] += cross
        fisher[:, 4, :] += cross
        Iss *= ds2
        Iss *= ds2
        fisher[:, 4, 4] += Iss.sum(1)
        return fisher


def _qasa_calls_theta(h, theta, jac):
    """Mean magnetization of the between-call model in θ = (β, b, γ, η, σ_call): the QASA ``m`` at
    ``η_tot = √(η² + σ²)`` (the per-call offsets average like η, to fourth order in the noise)."""
    theta = np.asarray(theta, float)
    eta_tot = np.sqrt(theta[:, 3] ** 2 + theta[:, 4] ** 2)
    th4 = np.column_stack([theta[:, :3], eta_tot])
    m, dm = get_model("qasa")._fn(h, th4, jac)
    if not jac:
        return m, None
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(eta_tot > 0, theta[:, 3:5] / eta_tot[:, None], 0.0)
    return m, np.stack([dm[0], dm[1], dm[2], dm[3] * share[:, 0:1], dm[3] * share[:, 1:2]])


def _qasa_calls_phi(h, phi, jac):
    """Marker: the internal between-call model is evaluated by :func:`_evaluate_calls` only."""
    raise NotImplementedError("the between-call model is evaluated by qasa.fitting._evaluate_calls")


_qasa_calls_phi.between_calls = True

_INF = float("inf")
#: The QASA model's internal (φ) form, whose fused evaluation the between-call likelihood reuses.
QASA_INTERNAL = get_model("qasa").internal
#: The between-call model: QASA's (β, b, γ, η) plus σ_call, the sd of a field offset drawn afresh for
#: every call (programming) and shared by its reads; even in γ, η and σ_call (fitted on their squares).
#: Upper bound of σ_call (h units): ten times D-Wave's published per-programming error (≈ 0.01,
#: DESIGN.md §7); the approximation behind the between-call likelihood holds for β·σ ≲ 0.3–0.5.
SIGMA_CALL_MAX = 0.1
#: The between-call likelihood is an approximation for small β·σ_call (the slope g is that of the
#: first-stage fit): beyond this value of β·σ it is walled off (a quadratic penalty of :data:`_WALL`
#: nats per unit², which no data outweigh), and a fit that ends on the wall is not reported (the
#: qubit keeps its binomial fit, with a reason). Without the wall, far from the first-stage
#: estimate the fixed slope lets a large σ absorb any misfit (measured: β 9.7 → 19, σ_call → 0.1,
#: 14 000 nats "better").
BETA_SIGMA_MAX = 0.4
_WALL = 1e8
CALL_MODEL = Model("qasa+calls", ("beta", "b", "gamma", "eta", "sigma_call"), (0.0, -_INF, 0.0, 0.0, 0.0),
                   (_INF,) * 4 + (SIGMA_CALL_MAX,), ("1/h", "h", "h", "h", "h"), (1.0, 0.01, 0.01, 0.01, 0.01), _qasa_calls_theta,
                   lambda beta, b, sat: [], "QASA with a per-call field offset δ ~ N(0, σ_call²)",
                   (False, False, True, True, True), _qasa_calls_phi)


def maximize(model: Model | str, h: np.ndarray, n_down: np.ndarray, n_total: np.ndarray,
             theta0: np.ndarray, *, max_iter: int = 200, tol: float = 1e-8, step_tol: float = 3e-3,
             fixed: np.ndarray | None = None, n_starts: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximize the likelihood of every row from ``theta0`` (see module docstring).

    The iteration runs on the model's internal parameters φ (even parameters squared,
    :attr:`qasa.models.Model.internal`), where the score does not vanish on the bound θ = 0;
    ``theta0`` and the result are in the public parameters θ.

    Args:
        model: the response model.
        h: fields, shape ``(k,)``.
        n_down, n_total: counts, shape ``(n, k)``.
        theta0: starts, shape ``(n, p)``.
        max_iter: iteration limit per row.
        tol: convergence threshold on the gain of an accepted step, in nats.
        step_tol: convergence threshold on an accepted step, in units of each parameter's
            conditional standard error ``1/sqrt(F_jj)`` (a step far below the statistical
            uncertainty changes no conclusion; this ends slow creeping along flat directions).
        fixed: optional ``(n, p)`` mask of parameters held at their ``theta0`` value (profiles).
        n_starts: the rows are ``n_starts`` stacked blocks of starting points for the same data
            (block ``s`` row ``i`` starts qubit ``i``); a start that reaches the basin of a better
            one (within 0.5 conditional standard errors in every parameter) is dropped and returns
            log-likelihood −inf and ``converged`` False.

    Returns:
        ``(theta, loglik, converged, iterations)`` per row.
    """
    model = get_model(model)
    phi, ll, conv, iters, _, _ = _maximize_phi(model.internal, h, n_down, n_total, model.to_internal(theta0),
                                         max_iter=max_iter, tol=tol, step_tol=step_tol, fixed=fixed,
                                         n_starts=n_starts)
    return model.from_internal(phi), ll, conv, iters


def _lm_step(F: np.ndarray, g: np.ndarray, held: np.ndarray, lam: np.ndarray,
             eye: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Levenberg–Marquardt step per row: ``(F + λ diag F) δ = g`` over the free parameters (held
    ones move by 0). Returns ``(step, sd, predicted)``: the step, ``√diag F`` (the inverse conditional
    standard errors) and the gain the quadratic model predicts for the step."""
    free = ~held
    d = np.einsum("npp->np", F)
    A = F * (free[:, :, None] & free[:, None, :]) \
        + eye * (lam[:, None] * np.where(free, d, 0.0) + np.where(free, 1e-12 * (1 + d), 1.0))[:, None, :]
    rhs = np.where(free, g, 0.0)
    try:
        step = np.linalg.solve(A, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        step = np.stack([np.linalg.lstsq(a, r, rcond=None)[0] for a, r in zip(A, rhs)])
    sd = np.sqrt(np.maximum(d, 0.0))
    # a nearly undamped step that would change nothing: converged without evaluating it
    predicted = np.einsum("np,np->n", rhs, step) - 0.5 * np.einsum("np,npq,nq->n", step, F, step)
    return step, sd, predicted


def _quadratic_maximum(theta, ll, score, idx, small, th, g, F, held, step, predicted, lo, hi, scale) -> np.ndarray:
    """Which of the rows ``idx`` (those ``small`` already predicted to gain little) may stop on the
    quadratic model's maximum (``predict > 0`` of :func:`_maximize_phi`): the point after the step,
    inside the bounds, with every ``held`` (not fixed) parameter still held by the linearized score
    ``g − F·δ`` and the step short. Those rows of ``theta``, ``ll`` and ``score`` take the model's
    maximum, in place."""
    # the model's maximum must be inside the bounds, and a parameter held on its bound must
    # still be held there by the linearized score (else the active set changes: evaluate)
    g_new = g - np.einsum("npq,nq->np", F, step)
    release = held & (((th <= lo) & (g_new > 0)) | ((th >= hi) & (g_new < 0)))
    inside = ((th + step >= lo) & (th + step <= hi)).all(1) & ~release.any(1)
    # ... and the step short (the quadratic model is trusted near the point only: a nearly
    # flat direction, e.g. b when β → 0, gives a huge step with a tiny predicted gain)
    short = (np.abs(step) <= _TRUST * (np.abs(th) + scale)).all(1)
    ok = small & inside & short
    if ok.any():
        rows = idx[ok]
        theta[rows] = th[ok] + step[ok]
        ll[rows] += np.maximum(predicted[ok], 0.0)
        score[rows] = g_new[ok]
    return ok


def _maximize_phi(model: Model, h, n_down, n_total, phi0, *, max_iter=200, tol=1e-8, step_tol=3e-3,
                  fixed=None, n_starts=1, merge_tol=0.5, predict=0.0, floor=None):
    """The projected Levenberg–Marquardt iteration on an (internal) model's own parameters.

    A row stops when its next (nearly undamped) step is predicted to gain less than ``tol`` or to
    move every parameter by less than ``step_tol`` conditional standard errors — without spending
    an evaluation on that step — or when an accepted step did so. With ``n_starts > 1`` the rows are
    that many stacked blocks of starts for the same data; a start that comes within ``merge_tol``
    conditional standard errors (every parameter) of a better start of the same row has reached the
    same basin and is dropped (log-likelihood −inf, not converged).

    With ``predict > 0`` (profiles, where the value of the maximum is what counts) the check before
    a step is on the predicted gain alone: below ``predict`` nats, with a short step (every
    parameter by less than 10 % of ``|φ| + scale``) inside the bounds and every held parameter
    still held by the linearized score, the row returns the quadratic
    model's maximum — the point after the step, ``ℓ`` plus the predicted gain and the linearized
    score ``g − F·δ`` (the model's error is a fraction of the predicted gain).

    ``floor`` (profiles): per row, a log-likelihood that the row's maximum is only needed above; a
    row stops when even four times its next step's predicted gain would leave it below ``floor``
    (a profile point far beyond the cut-off, whose inner fit may crawl along a flat direction for
    hundreds of iterations: the point is beyond the cut-off either way).
    """
    lo = np.array(model.lower)
    hi = np.array(model.upper)
    scale = np.array(model.scale)
    theta = np.clip(np.array(phi0, dtype=float), lo, hi)
    n, k = theta.shape
    fixed = np.zeros((n, k), bool) if fixed is None else np.asarray(fixed, bool)
    ll, score, info = _evaluate(model, h, theta, n_down, n_total)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, bool)
    dropped = np.zeros(n, bool)
    iters = np.zeros(n, int)
    active = np.isfinite(ll)
    eye = np.eye(k)
    for _ in range(max_iter):
        if n_starts > 1:
            _drop_merged(theta, ll, info, active, converged, dropped, n_starts, merge_tol)
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, g, F = theta[idx], score[idx], info[idx]
        # hold parameters at a bound whose score points outward, and fixed ones
        held = ((th <= lo) & (g < 0)) | ((th >= hi) & (g > 0)) | fixed[idx]
        step, sd, predicted = _lm_step(F, g, held, lam[idx], eye)
        if floor is not None:
            below = (ll[idx] + 4.0 * np.maximum(predicted, 0.0) < floor[idx]) & (lam[idx] <= 1e-2)
            if below.any():
                converged[idx[below]] = True
                active[idx[below]] = False
                keep = ~below
                idx, th, g, F, held, step, sd, predicted = (idx[keep], th[keep], g[keep], F[keep], held[keep],
                                                             step[keep], sd[keep], predicted[keep])
                if idx.size == 0:
                    break
        if predict > 0:
            small = (lam[idx] <= 1e-2) & (predicted < predict)
            small &= _quadratic_maximum(theta, ll, score, idx, small, th, g, F, held & ~fixed[idx], step, predicted,
                                        lo, hi, scale)
        else:       # (a step that would reach a bound is taken: the estimate lands on the bound)
            small = (lam[idx] <= 1e-2) & ((predicted < tol) | ((np.abs(step) * sd).max(1) < step_tol)) \
                & ((th + step > lo) & (th + step < hi) | (step == 0)).all(1)
        if small.any():
            converged[idx[small]] = True
            active[idx[small]] = False
            keep = ~small
            idx, th, step, sd = idx[keep], th[keep], step[keep], sd[keep]
            if idx.size == 0:
                break
        new = np.clip(th + step, lo, hi)
        ll_new, s_new, F_new = _evaluate(model, h, new, n_down[idx], n_total[idx])
        accept = np.isfinite(ll_new) & (ll_new >= ll[idx])
        gain = np.where(accept, ll_new - ll[idx], 0.0)
        # step size in units of the (conditional) standard error 1/sqrt(F_jj)
        moved = (np.abs(new - th) * sd).max(1)
        a_idx = idx[accept]
        theta[a_idx], ll[a_idx], score[a_idx], info[a_idx] = new[accept], ll_new[accept], s_new[accept], F_new[accept]
        lam[idx] = np.where(accept, np.maximum(lam[idx] / 10.0, 1e-12), lam[idx] * 10.0)
        iters[idx] += 1
        done = (accept & ((gain < tol) | (moved < step_tol))) | (lam[idx] > 1e12)
        converged[idx[done]] = True
        active[idx[done]] = False
    ll = np.where(dropped, -np.inf, ll)
    return theta, ll, converged & ~dropped, iters, score, info


#: Multi-start on a coarse grid: used when the grid has at least this many h values ...
_COARSE_MIN_H = 54
#: ... keeping every ``len(h) // _COARSE_H``-th value; the coarse fit converges to this gain (nats)
#: or step (conditional standard errors) ...
_COARSE_H, _COARSE_TOL, _COARSE_STEP_TOL = 20, 1e-3, 0.1
#: ... and merges starts within this many conditional standard errors of a better one (a basin
#: there is only a start for the refinement) ...
_COARSE_MERGE = 2.0
#: ... and every distinct basin it finds within this many nats of its best is refined on all data.
_COARSE_KEEP = 2.0
#: A row takes the coarse path if at least this many coarse h values see its transition (observed
#: P(−1) in [0.1, 0.9]; a Gibbs curve's transition is 2.2/β wide) ...
_COARSE_MIN_TRANSITION = 3
#: ... and keeps its coarse result only if the fitted β resolves the coarse grid: β·Δh ≤ this.
_COARSE_MAX_BETA_STEP = 1.5


def _multistart(model: Model, h, n_down, n_total, phi0, *, max_iter=200, tol=1e-8, trap=None):
    """The best of several starts per row: ``phi0`` is ``(S, n, p)``; returns ``(phi, loglik,
    converged, iterations, score, information)`` per row (iterations summed over starts and
    stages; score and expected information in φ at ``phi``, from the optimizer's last evaluation).
    ``model`` is the internal model (φ); ``trap`` marks its parameters whose lower bound is a trap:
    :func:`fit` passes the even parameters (:attr:`~qasa.models.Model.even_mask`) that the starts
    spread over (η for ``qasa``, σ for ``gaussian-noise``: the starts exist to leave their zero).

    With ``S > 1`` and a long grid, the starts of a row first run on every ``len(h) // 20``-th h
    value, where an evaluation costs a quarter as much (81 → 21 values), to a loose tolerance; starts
    that reach the same basin merge there. Only the best coarse basin — and any other one within
    :data:`_COARSE_KEEP` nats of it — is then refined on all the data. A row runs every start on all
    the data instead (:func:`_coarse_rows` says which rows may try the coarse path) when

    - the coarse values do not sample its transition or hold less than half their share of its reads;
    - its coarse fit steepens beyond the coarse grid's resolution (β·Δh > 1.5: a coarse fit running
      off to a step, seen with a spacing of 2/β);
    - its refinement does not converge.

    A row whose best coarse basin has a ``trap`` parameter on its lower bound (the η = 0 optimum the
    starts exist to avoid, docs/DESIGN.md §3: on the coarse data every start can fall into it while
    all the data have a better basin) also runs, on all the data, the start farthest from that bound.

    Measured: the same maximum as running every start on all the data to within 3e-5 nats (the
    convergence tolerance) on every qubit of the fit_speed device (3 × 5 640 qubits), with half the
    evaluations (9 instead of 18 per qubit, counted in all-data units); on the virtual Advantage
    (4 000 reads per h, η̂ = 0 on a third of the qubits) 0.64 s instead of 1.0 s of CPU.
    """
    S, n, k = phi0.shape
    out = (np.full((n, k), np.nan), np.full(n, -np.inf), np.zeros(n, bool), np.zeros(n, int),
           np.full((n, k), np.nan), np.full((n, k, k), np.nan))
    cols = np.arange(0, len(h), max(len(h) // _COARSE_H, 1))
    coarse = _coarse_rows(h, cols, n_down, n_total) if S > 1 and len(h) >= _COARSE_MIN_H else np.zeros(n, bool)
    if coarse.any():
        rows = np.flatnonzero(coarse)
        m = rows.size
        phc, llc, _, itc, _, _ = _maximize_phi(model, h[cols], np.tile(n_down[rows][:, cols], (S, 1)),
                                               np.tile(n_total[rows][:, cols], (S, 1)), phi0[:, rows].reshape(S * m, k),
                                               max_iter=max_iter, tol=_COARSE_TOL, step_tol=_COARSE_STEP_TOL,
                                               n_starts=S, merge_tol=_COARSE_MERGE)
        llc = np.where(np.isfinite(llc), llc, -np.inf)
        if model.inverse_temperature:     # a coarse fit that ran off to a step: β beyond the grid's resolution
            llc[phc[:, 0] * np.diff(h[cols]).max() > _COARSE_MAX_BETA_STEP] = -np.inf
        row = np.arange(S * m) % m
        best_at = llc.reshape(S, m).argmax(0) * m + np.arange(m)
        ok = np.isfinite(llc[best_at])
        keep = np.flatnonzero(ok[row] & np.isfinite(llc) & (llc >= llc[best_at][row] - _COARSE_KEEP))
        ref_rows, ref_phi = row[keep], phc[keep]
        if trap is not None:      # the η = 0 trap: also the start farthest from it, on all the data
            trap = np.asarray(trap, bool)
            trapped = np.flatnonzero(ok & (trap & (phc[best_at] <= np.array(model.lower))).any(1))
            far = phi0[:, rows[trapped]][:, :, trap].sum(2).argmax(0)
            ref_rows = np.r_[ref_rows, trapped]
            ref_phi = np.concatenate([ref_phi, phi0[far, rows[trapped]]])
        if ref_rows.size:
            sel = rows[ref_rows]
            res = _best_per_row(m, ref_rows, *_maximize_phi(model, h, n_down[sel], n_total[sel], ref_phi,
                                                            max_iter=max_iter, tol=tol))
            ok &= res[2]                                  # a refinement that did not converge: all data
            res[3][:] += itc.reshape(S, m).sum(0)
            for a, b in zip(out, res):
                a[rows[ok]] = b[ok]
        coarse[rows[~ok]] = False
    full = np.flatnonzero(~coarse)
    if full.size:
        res = _maximize_phi(model, h, np.tile(n_down[full], (S, 1)), np.tile(n_total[full], (S, 1)),
                            phi0[:, full].reshape(S * full.size, k), max_iter=max_iter, tol=tol, n_starts=S)
        for a, b in zip(out, _best_per_row(full.size, np.arange(S * full.size) % full.size, *res)):
            a[full] = b
    return out


def _spread(starts: Sequence[np.ndarray]) -> np.ndarray:
    """Parameters in which the starts differ (for some row)."""
    a = np.stack([np.asarray(x, float) for x in starts])
    return (np.nanmax(a, axis=0) > np.nanmin(a, axis=0)).any(0)


def _coarse_rows(h: np.ndarray, cols: np.ndarray, n_down: np.ndarray, n_total: np.ndarray) -> np.ndarray:
    """Rows that may try the coarse path: at least :data:`_COARSE_MIN_TRANSITION` coarse values whose
    observed P(−1) lies in [0.1, 0.9] (the transition is sampled) and two outside it (so are the
    saturated tails: a response that never leaves [0.1, 0.9], γ ≳ 2, let every coarse start end on
    η = 0, up to 77 000 nats short), and at least half their share of the row's reads on the coarse
    values (few reads there make spurious coarse optima)."""
    nd, nt = n_down[:, cols], n_total[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = nd / nt
        share = nt.sum(1) / n_total.sum(1)
    inside = (p >= 0.1) & (p <= 0.9)
    sampled = (inside.sum(1) >= _COARSE_MIN_TRANSITION) & ((~inside & (nt > 0)).sum(1) >= 2)
    return sampled & (share >= 0.5 * len(cols) / len(h))


def _best_per_row(n, row, phi, ll, cv, it, *per_entry):
    """Per row index ``0..n-1``, the entry of ``row`` with the highest finite log-likelihood:
    ``(phi, ll, converged, iterations summed over the row's entries, *per_entry)``; NaN, −inf and
    False for a row without entries."""
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    order = np.lexsort((-ll, row))                  # by row, best first
    first = order[np.r_[True, row[order][1:] != row[order][:-1]][:order.size]]
    pick = np.full(n, -1)
    pick[row[first]] = first
    got = pick >= 0
    iters = np.zeros(n, int)
    np.add.at(iters, row, it)

    def gather(a, fill):
        res = np.full((n,) + a.shape[1:], fill, dtype=a.dtype)
        res[got] = a[pick[got]]
        return res

    return (gather(phi, np.nan), gather(ll, -np.inf), gather(cv, False), iters,
            *(gather(a, np.nan) for a in per_entry))


def _drop_merged(theta, ll, info, active, converged, dropped, n_starts, merge_tol) -> None:
    """Drop, in place, every start that is within ``merge_tol`` conditional standard errors of a
    better live start of the same row (rows are ``n_starts`` stacked blocks)."""
    n, k = theta.shape
    m = n // n_starts
    th = theta.reshape(n_starts, m, k)
    lls = ll.reshape(n_starts, m)
    sd = np.sqrt(np.maximum(np.einsum("npp->np", info), 0.0)).reshape(n_starts, m, k)
    live = ((active | converged) & ~dropped).reshape(n_starts, m)
    for a in range(n_starts):
        for b in range(a + 1, n_starts):
            both = live[a] & live[b]
            if not both.any():
                continue
            close = both & ((np.abs(th[a] - th[b]) * np.maximum(sd[a], sd[b])).max(1) < merge_tol)
            if not close.any():
                continue
            worse = np.where(lls[a] < lls[b], a, b)
            rows = worse[close] * m + np.flatnonzero(close)
            dropped[rows], active[rows], converged[rows] = True, False, False
            live.reshape(-1)[rows] = False


#: Inner convergence of profile maximizations (gain in nats, step in conditional standard errors):
#: after a Newton step that gained < 1e-3 nats or moved < 0.1 se from a first-order warm start,
#: what remains is far below 1e-3 nats, i.e. < 5e-4 on the signed root.
_PROFILE_TOL, _PROFILE_STEP_TOL = 1e-3, 0.1
#: A profile point whose next step is predicted to gain less than this (nats) takes the quadratic
#: model's maximum instead of evaluating the step. Measured against converged profiles (3 000
#: qubits, 23 682 first points), 99th percentile of the model's error by predicted gain: 1.5e-4
#: nats below 0.02, 0.001 in [0.02, 0.05), 0.0034 in [0.05, 0.1) — at most 0.0017 on the signed
#: root, a sixth of the end tolerance.
_PROFILE_PREDICT_TOL = 0.1
#: ... and only when every parameter's step is below this fraction of ``|φ| + scale``.
_TRUST = 0.1
#: A profile point reached by a move of more than 1.5 Wald steps with 2(ℓ̂ − ℓ_p) above this multiple
#: of the cut-off is maximized a second time, from the last point inside the cut-off
#: (see :func:`profile_intervals`).
_PROFILE_RECHECK = 4.0
#: A profile point's inner fit stops once it is predicted to stay below ``ℓ̂ − _PROFILE_FLOOR·c``
#: (2(ℓ̂ − ℓ_p) > 8c: r > 2.8√c, far beyond the cut-off; see :func:`_maximize_phi`'s ``floor``).
_PROFILE_FLOOR = 4.0
#: Iteration limit of a profile point's inner fit under the between-call model (each evaluation of a
#: few straggling rows costs its fixed overhead; converged points take ≤ 5 at the 90th percentile).
_PROFILE_CALLS_ITER = 10
#: End tolerance on the signed root r of the between-call model's profiles (3 % of a standard error).
_PROFILE_CALLS_R_TOL = 3e-2
#: Accuracy of an interval end on the signed root r (in units of the standard error of the end).
_PROFILE_R_TOL = 1e-2


def _safe_inverse(F: np.ndarray) -> np.ndarray:
    """Batched inverse with a pseudo-inverse fallback; rows without a positive diagonal are NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        try:
            cov = np.linalg.inv(F)
        except np.linalg.LinAlgError:
            cov = np.stack([np.linalg.pinv(f) for f in F])
        bad = ~(np.isfinite(cov).all((1, 2)) & (np.einsum("npp->np", cov) > 0).all(1))
    cov[bad] = np.nan
    return cov


def profile_intervals(model: Model | str, h: np.ndarray, n_down: np.ndarray, n_total: np.ndarray,
                      theta: np.ndarray, ll: np.ndarray, level: float = 0.95, max_steps: int = 14,
                      cov: np.ndarray | None = None, information: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Profile-likelihood intervals of every parameter of every row (see module docstring).

    Args:
        model: the response model.
        h, n_down, n_total: the data (as for :func:`maximize`).
        theta, ll: the maximum-likelihood estimates and log-likelihoods of the rows.
        level: confidence level (cut-off ``χ²₁`` quantile of ``level``).
        max_steps: profile evaluations per endpoint.
        cov: optional covariance of θ from the observed information (as in :class:`FitTable`); where
            finite it sets the first trial points, otherwise the expected information in φ does.
        information: optional expected information in φ at ``theta`` ``(n, p, p)``, when the caller
            has it (the optimizer's last evaluation); rows that are not all finite are evaluated.

    Returns:
        ``(lower, upper, better_theta, better_ll)``: interval ends ``(n, p)`` (±inf when the profile
        never crosses the cut-off); and, for rows where some profile point beat ``ll`` by more than
        1e-3 nats (the fit had stopped at a local optimum), the best such point and its
        log-likelihood (NaN elsewhere).
    """
    model = get_model(model)
    search = _ProfileSearch(model, h, n_down, n_total, theta, ll, level, cov, information)
    for _ in range(max_steps):
        idx = search.rows[search.active]
        if idx.size == 0:
            break
        ph, lp, grad = search.maximize_at(idx)
        D, r, t = search.record(idx, ph, lp)
        still, newton = search.finish(idx, ph, D, r, t, grad)
        if still.any():
            search.next_points(idx[still], newton[still], r[still], t[still])
    search.unfinished()
    return search.result()


class _ProfileSearch:
    """The search for the ends of every profile interval at once (:func:`profile_intervals`): one
    search per (row, parameter, side), ``R = 2·n·k`` of them, all advanced by one batched constrained
    maximization per step. Per search: the row ``Q``, parameter ``J`` and side ``S`` (±1); the
    estimate ``start`` (φ) and the bound on that side; the bracket — the last point inside the
    cut-off ``(t_in, r_in)`` and the one before it ``(t_prev, r_prev)``, the first point beyond it
    ``(t_out, r_out)``, the bracket's width before the last step ``w_prev`` — on the signed root
    ``r = √(2(ℓ̂ − ℓ_p))``; the warm starts (``warm`` at ``t_last``, ``warm_in`` at the last point
    inside); the next trial point ``t_next``; the end once found (``ends``). Per row, the best profile
    point that beat the fit (``best_ll``, ``best_phi``: the escape step)."""

    def __init__(self, model: Model, h, n_down, n_total, theta, ll, level, cov, information) -> None:
        pm = self.pm = model.internal
        self.model, self.h, self.n_down, self.n_total, self.ll = model, h, n_down, n_total, ll
        # inner fits of the between-call model: at most _PROFILE_CALLS_ITER iterations (a point whose inner
        # fit has not converged by then keeps its lower bound on ℓ_p: conservative)
        between = getattr(pm._fn, "between_calls", False)
        self.inner_iter = _PROFILE_CALLS_ITER if between else 200
        # ... and their ends to _PROFILE_CALLS_R_TOL on the signed root (each evaluation costs ~3×)
        self.r_tol = _PROFILE_CALLS_R_TOL if between else _PROFILE_R_TOL
        theta = np.asarray(theta, float)
        n, k = self.n, self.k = theta.shape
        phi = model.to_internal(theta)
        self.c = c = float(stats.chi2.ppf(level, 1))
        self.z = z = np.sqrt(c)
        self.lo_b, self.hi_b = lo_b, hi_b = np.array(pm.lower), np.array(pm.upper)
        self.se, self.slope = _profile_metric(model, h, n_down, n_total, theta, phi, cov, information)
        # a parameter on its bound at the estimate stays there to first order (the bound is active)
        self.on_bound_hat = (phi <= lo_b) | (phi >= hi_b)
        self.slope[np.broadcast_to(self.on_bound_hat[:, :, None], self.slope.shape)] = 0.0
        self.slope[:, np.arange(k), np.arange(k)] = 1.0
        Q = self.Q = np.repeat(np.arange(n), 2 * k)
        J = self.J = np.tile(np.repeat(np.arange(k), 2), n)
        S = self.S = np.tile([-1.0, 1.0], n * k)
        R = len(Q)
        start = self.start = phi[Q, J]
        self.bound = np.where(S < 0, lo_b[J], hi_b[J])
        self.ends = np.full(R, np.nan)
        on_bound = S * (start - self.bound) >= 0
        self.ends[on_bound] = self.bound[on_bound]
        self.t_in, self.r_in = start.copy(), np.zeros(R)
        self.t_prev, self.r_prev = start.copy(), np.zeros(R)
        self.t_out, self.r_out = np.full(R, np.nan), np.full(R, np.nan)
        self.t_last = start.copy()
        self.w_prev = np.full(R, np.nan)              # bracket width before the last step (bisection rule)
        self.warm = phi[Q].copy()
        self.warm_in = phi[Q].copy()
        self.t_next = np.clip(start + S * z * self.se[Q, J], lo_b[J], hi_b[J])
        self.best_ll = np.where(np.isfinite(ll), ll, -np.inf).astype(float)
        self.best_phi = np.full((n, k), np.nan)
        self.active = ~on_bound & np.isfinite(ll[Q])
        self.rows = np.arange(R)

    def _inner(self, q, start, fixed):
        """The constrained maximization of the rows ``q`` from ``start`` (profile tolerances)."""
        ph, lp, _, _, grad, _ = _maximize_phi(self.pm, self.h, self.n_down[q], self.n_total[q], start, fixed=fixed,
                                              tol=_PROFILE_TOL, step_tol=_PROFILE_STEP_TOL,
                                              predict=_PROFILE_PREDICT_TOL,
                                              floor=self.ll[q] - _PROFILE_FLOOR * self.c, max_iter=self.inner_iter)
        return ph, lp, grad

    def maximize_at(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(φ, ℓ_p, score)`` at the trial points ``t_next`` of the searches ``idx``: the other
        parameters maximized from the warm start moved to first order (and, for a point far beyond
        the cut-off after a long move, from the last point inside, unmoved, keeping the better)."""
        q, j = self.Q[idx], self.J[idx]
        t_next, t_last = self.t_next[idx], self.t_last[idx]
        cand = self.warm[idx] + self.slope[q, :, j] * (t_next - t_last)[:, None]
        cand[np.arange(idx.size), j] = t_next
        cand = np.clip(cand, self.lo_b, self.hi_b)
        fixed = np.zeros((idx.size, self.k), bool)
        fixed[np.arange(idx.size), j] = True
        ph, lp, grad = self._inner(q, cand, fixed)
        lp = np.where(np.isfinite(lp), lp, -np.inf)
        # far beyond the cut-off after a long move (beyond 1.5 Wald steps): the warm start, moved to
        # first order over that distance, may have led the inner fit astray (a β profile levelling off
        # at r = 1.3 read r = 890 at one point); the point is maximized again from the last point
        # inside, unmoved, and the better maximum kept
        far = np.flatnonzero((2.0 * (self.ll[q] - lp) > _PROFILE_RECHECK * self.c)
                             & (np.abs(t_next - t_last) > 1.5 * self.z * self.se[q, j]))
        if far.size:
            again = self.warm_in[idx[far]].copy()
            again[np.arange(far.size), j[far]] = t_next[far]
            ph2, lp2, grad2 = self._inner(q[far], np.clip(again, self.lo_b, self.hi_b), fixed[far])
            better = np.isfinite(lp2) & (lp2 > lp[far])
            sel = far[better]
            ph[sel], lp[sel], grad[sel] = ph2[better], lp2[better], grad2[better]
        return ph, lp, grad

    def record(self, idx, ph, lp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keep the points of ``idx`` as warm starts (and any better than the fit); returns
        ``(D, r, t)``: ``2(ℓ̂ − ℓ_p)``, its signed root and the points."""
        q = self.Q[idx]
        self.warm[idx], self.t_last[idx] = ph, self.t_next[idx]
        # a profile point better than the fit: remember the best per row
        for i in np.flatnonzero(lp > self.best_ll[q] + 1e-3):
            if lp[i] > self.best_ll[q[i]]:
                self.best_ll[q[i]], self.best_phi[q[i]] = lp[i], ph[i]
        D = np.maximum(2.0 * (self.ll[q] - lp), 0.0)
        r = np.sqrt(D)
        t = self.t_next[idx]
        # a point beyond the cut-off is no warm start for the next one, which lies nearer the
        # estimate (its inner fit may have run far along a flat direction, e.g. b as β → 0): the next
        # point starts from the last point inside (at first the estimate), moved to first order
        inside = D < self.c
        ins, out = idx[inside], idx[D >= self.c]
        self.warm_in[ins] = ph[inside]
        self.warm[out], self.t_last[out] = self.warm_in[out], self.t_in[out]
        return D, r, t

    def finish(self, idx, ph, D, r, t, grad) -> tuple[np.ndarray, np.ndarray]:
        """Settle the searches of ``idx`` whose point is the end (on the cut-off within ``r_tol``, the
        bound inside it, or the quadratic model's end), and update the others' brackets. Returns
        ``(still, newton)``: which of ``idx`` are still open, and the Newton step of every point
        (envelope theorem: dℓ_p/dt is the score of the profiled parameter at the constrained optimum)."""
        q, j, z, start = self.Q[idx], self.J[idx], self.z, self.start[idx]
        g_j = grad[np.arange(idx.size), j]
        with np.errstate(invalid="ignore", divide="ignore"):
            newton = t - (z - r) * r / g_j
        inside = D < self.c
        hit = np.abs(r - z) < self.r_tol
        at_b = t == self.bound[idx]
        near, t_near = _quadratic_end(t - start, r, g_j, self.S[idx], z, self.lo_b[j] - start, self.hi_b[j] - start,
                                      self.r_tol)
        # the quadratic model needs a smooth profile between the estimate and t: no parameter may
        # have left (or reached) its bound on the way
        on_b = (ph <= self.lo_b) | (ph >= self.hi_b)
        near &= ~hit & ~at_b & ((on_b == self.on_bound_hat[q]) | (np.arange(self.k) == j[:, None])).all(1)
        finish = hit | (inside & at_b) | near
        self.ends[idx[finish]] = np.where(hit[finish], t[finish],
                                          np.where(near[finish], start[finish] + t_near[finish], self.bound[idx[finish]]))
        # bracket update
        ii, oo = idx[inside & ~finish], idx[~inside & ~finish]
        self.t_prev[ii], self.r_prev[ii] = self.t_in[ii], self.r_in[ii]
        self.t_in[ii], self.r_in[ii] = t[inside & ~finish], r[inside & ~finish]
        self.t_out[oo], self.r_out[oo] = t[~inside & ~finish], r[~inside & ~finish]
        self.active[idx[finish]] = False
        return ~finish, newton

    def next_points(self, still, nw, r, t) -> None:
        """The next trial point of the open searches ``still`` (``nw``, ``r``, ``t``: their Newton
        step, signed root and point): inside a bracket, Newton when its step points the right way,
        else the secant on ``r − z`` (kept 1 % inside the bracket; bisection — on a log scale over
        orders of magnitude of a parameter bounded below by 0 — when the last step left more than half
        of a bracket whose outer point has r > 2√c); before the cut-off is crossed, Newton or the
        secant through the last two points inside, moved out by 1.01–4 times the distance so far."""
        z, S, start, J = self.z, self.S[still], self.start[still], self.J[still]
        nw_ok = np.isfinite(nw) & (S * (nw - t) * np.sign(z - r) > 0)
        ti, ri, to, ro = self.t_in[still], self.r_in[still], self.t_out[still], self.r_out[still]
        bracketed = np.isfinite(to)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = to - ti                                   # signed bracket width
            sec = ti + (z - ri) * w / (ro - ri)           # secant on the signed root r(t) − z
            a, b = ti + 0.01 * w, to - 0.01 * w           # stay inside the bracket
            sec = np.where(nw_ok, nw, sec)                # Newton when its step points the right way
            sec = np.where(np.isfinite(sec), np.clip(sec, np.minimum(a, b), np.maximum(a, b)), ti + 0.5 * w)
            # ... but bisection when the last step left more than half the bracket and its outer point
            # is far beyond the cut-off (r > 2√c: a root far from linear in t, e.g. an η profile flat to
            # 0.55 and steep beyond crept by 1 % steps)
            slow = (np.abs(w) > 0.5 * np.abs(self.w_prev[still])) & (ro > 2.0 * z)
            # (a bracket over orders of magnitude of a parameter bounded below by 0 is bisected on a
            # log scale: from a runaway β̂ ≈ 1e31 down to 20 halving would take 100 steps)
            s_j = np.asarray(self.pm.scale)[J]
            lo_v, hi_v = np.maximum(np.minimum(ti, to), s_j), np.maximum(np.maximum(ti, to), s_j)
            wide = (self.lo_b[J] == 0.0) & (hi_v > 100.0 * lo_v)
            sec = np.where(slow, np.where(wide, np.sqrt(lo_v * hi_v), ti + 0.5 * w), sec)
            self.w_prev[still] = np.where(bracketed, w, np.nan)
            d_in = ti - start
            ext = ti + (z - ri) * (ti - self.t_prev[still]) / (ri - self.r_prev[still])
            ext = np.where(np.isfinite(ext) & (ri > self.r_prev[still]), ext, ti + 4.0 * d_in)
            ext = np.where(nw_ok, nw, ext)
            ext = start + S * np.clip(S * (ext - start), 1.01 * np.abs(d_in), 4.0 * np.abs(d_in))
        self.t_next[still] = np.where(bracketed, sec, np.clip(ext, self.lo_b[J], self.hi_b[J]))

    def unfinished(self) -> None:
        """Searches that ran out of steps: bracketed → interpolate on r (or, when the outer point is far
        beyond the cut-off, r > 2√c, and r is far from linear across the bracket, take that outer
        point: the interval is then conservative, not short); never crossed → unbounded (±inf)."""
        left = self.rows[self.active]
        if left.size:
            t_in, r_in, t_out, r_out = self.t_in[left], self.r_in[left], self.t_out[left], self.r_out[left]
            with np.errstate(invalid="ignore", divide="ignore"):
                interp = t_in + (self.z - r_in) * (t_out - t_in) / (r_out - r_in)
            interp = np.where(r_out > 2.0 * self.z, t_out, interp)
            self.ends[left] = np.where(np.isfinite(t_out) & np.isfinite(interp), interp, self.S[left] * np.inf)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lower, upper, better_theta, better_ll)`` in θ (see :func:`profile_intervals`)."""
        model, n, k = self.model, self.n, self.k
        ends = self.ends.reshape(n, k, 2)
        lower = model.from_internal(ends[..., 0])
        upper = model.from_internal(ends[..., 1])
        ev = model.even_mask
        upper[:, ev] = np.where(np.isinf(ends[..., 1][:, ev]), np.inf, upper[:, ev])
        better = np.isfinite(self.best_phi).all(1)
        better_theta = np.full((n, k), np.nan)
        better_theta[better] = model.from_internal(self.best_phi[better])
        return lower, upper, better_theta, np.where(better, self.best_ll, np.nan)


def _profile_metric(model: Model, h, n_down, n_total, theta, phi, cov, information) -> tuple[np.ndarray, np.ndarray]:
    """The Wald scale of the profiles in φ: ``(se, slope)``, the standard error of each φ_j (its first
    trial step is ``√c·se``) and ``slope[:, :, j] = ∂φ/∂φ_j``, how the other parameters move with
    φ_j to first order (their regression on it). From the observed information mapped to φ where
    ``cov`` is finite, else the expected information in φ (``information``, evaluated where missing)."""
    pm = model.internal
    n, k = theta.shape
    F = np.full((n, k, k), np.nan) if information is None else np.array(information, dtype=float)
    need = ~np.isfinite(F).all((1, 2))
    if need.any():
        F[need] = _evaluate(pm, h, phi[need], n_down[need], n_total[need])[2]
    sigma = _safe_inverse(F)
    if cov is not None:       # observed information, mapped to φ (dφ/dθ = 2θ for even parameters)
        d = np.where(model.even_mask, 2.0 * theta, 1.0)
        obs = cov * d[:, :, None] * d[:, None, :]
        use = np.isfinite(obs).all((1, 2)) & (np.einsum("npp->np", np.nan_to_num(obs)) > 0).all(1)
        sigma[use] = obs[use]
    se = np.sqrt(np.einsum("npp->np", sigma))
    fallback = 0.1 * np.abs(phi) + np.array(pm.scale)
    se = np.where(np.isfinite(se) & (se > 0), se, fallback)
    # how the other parameters move with the profiled one, to the first order
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.nan_to_num(sigma / np.einsum("npp->np", sigma)[:, None, :])   # [:, :, j]: ∂φ/∂φ_j
    return se, slope


def _quadratic_end(tau: np.ndarray, r: np.ndarray, grad: np.ndarray, side: np.ndarray, z: float,
                   lo: np.ndarray, hi: np.ndarray, r_tol: float = _PROFILE_R_TOL) -> tuple[np.ndarray, np.ndarray]:
    """An interval end from one profile point, when a quadratic model of the root pins it down.

    Along one side, with ``u = side·τ`` the distance from the estimate, the root ``r(u)`` is
    modelled as ``a u + c u²`` through ``r(0) = 0``, ``r(u₁) = r₁`` and ``r'(u₁) = s``, where
    ``s = −side·(dℓ_p/dt)/r₁`` (envelope theorem). The Newton step ``u_N = u₁ + (z − r₁)/s`` misses the
    model's root by ``|c|(u_N − u₁)²`` on ``r``; when that is below half the end tolerance the model's
    root (``u_N`` corrected by that term; the error left is of the next order) is the end, and no
    further profile point is evaluated. Returns ``(accepted, τ_end)`` with ``τ`` relative to the estimate.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u1 = side * tau
        s = -side * grad / r
        c2 = (s * u1 - r) / (u1 * u1)
        a = (2.0 * r - s * u1) / u1
        un = u1 + (z - r) / s
        miss = c2 * (un - u1) ** 2
        denom = a + 2.0 * c2 * un
        uq = un - miss / denom
        tq = side * uq
        ok = ((u1 > 0) & (r > 0) & (s > 0) & (denom > 0) & (uq > 0) & (np.abs(miss) < 0.5 * r_tol)
              & (tq > lo) & (tq < hi) & np.isfinite(tq))
    return ok, np.where(ok, tq, np.nan)


def _observed_info(model: Model, h, theta, n_down, n_total, score: np.ndarray | None = None) -> np.ndarray:
    """−∂²ℓ/∂θ² by forward differences of the analytic score (relative step 1e-6), symmetrized.

    The differences are taken in the internal parameters φ (the fitter's fast model) and mapped
    back: with ``J = dφ/dθ`` (``2θ`` for an even parameter, else 1),
    ``−∂²ℓ/∂θ² = J (−∂²ℓ/∂φ²) J − 2 diag(∂ℓ/∂φ)`` over the even parameters. ``score``: ``∂ℓ/∂φ`` at
    ``theta`` when the caller has it (the optimizer's last evaluation).
    """
    pm = model.internal
    phi = model.to_internal(theta)
    n, k = theta.shape
    H = np.zeros((n, k, k))
    scale = np.array(pm.scale)
    s0 = score if score is not None and np.isfinite(score).all() else _evaluate(pm, h, phi, n_down, n_total, info=False)[1]
    for j in range(k):
        step = 1e-6 * np.maximum(np.abs(phi[:, j]), scale[j])
        tp = phi.copy()
        tp[:, j] += step
        _, sp, _ = _evaluate(pm, h, tp, n_down, n_total, info=False)
        H[:, j, :] = -(sp - s0) / step[:, None]
    H = 0.5 * (H + np.transpose(H, (0, 2, 1)))
    ev = model.even_mask
    J = np.where(ev, 2.0 * theta, 1.0)
    H = H * J[:, :, None] * J[:, None, :]
    H[:, ev, ev] -= 2.0 * s0[:, ev]
    return H


def _covariance(model: Model, h, theta, n_down, n_total, score: np.ndarray | None = None,
                expected: bool = False, fisher: np.ndarray | None = None) -> np.ndarray:
    """Inverse observed (``expected``: Fisher) information over the free parameters; NaN rows/columns
    at bounds. ``score``, ``fisher``: ``∂ℓ/∂φ`` and the expected information in φ at ``theta``, when the
    caller has them (the optimizer's last evaluation)."""
    lo, hi = np.array(model.lower), np.array(model.upper)
    at_bound = (theta <= lo) | (theta >= hi)
    if expected:
        F = fisher if fisher is not None and np.isfinite(fisher).all() else \
            _evaluate(model.internal, h, model.to_internal(theta), n_down, n_total)[2]
        J = np.where(model.even_mask, 2.0 * theta, 1.0)          # dφ/dθ
        info = F * J[:, :, None] * J[:, None, :]
    else:
        info = _observed_info(model, h, theta, n_down, n_total, score)
    k = theta.shape[1]
    out = np.full((len(theta), k, k), np.nan)
    for pattern in {tuple(row) for row in at_bound}:
        rows = np.flatnonzero((at_bound == np.array(pattern)).all(1))
        free = np.flatnonzero(~np.array(pattern, dtype=bool))
        if free.size == 0:
            continue
        sub = info[rows][:, free][:, :, free]
        with np.errstate(invalid="ignore", divide="ignore"):
            try:
                cov = np.linalg.inv(sub)
            except np.linalg.LinAlgError:
                cov = np.stack([np.linalg.pinv(s) for s in sub])
            bad = ~(np.einsum("npp->np", cov) > 0).all(1)
            cov[bad] = np.nan
        block = out[rows]
        block[:, free[:, None], free[None, :]] = cov
        out[rows] = block
    return out


def _degenerate(model: Model, r: Response, rule: QualityRule) -> np.ndarray:
    """Reason string per row ('' if the data can be fitted)."""
    n_h = (r.n_total > 0).sum(1)
    total = r.n_total.sum(1)
    down = r.n_down.sum(1)
    nonzero = ((r.n_total > 0) & (r.h != 0)).sum(1)
    reasons = np.full(len(r.qubits), "", dtype=object)
    reasons[n_h < model.num_params] = f"fewer than {model.num_params} h values with reads"
    reasons[nonzero == 0] = "no reads at a nonzero h"
    reasons[down == total] = "all reads -1"
    reasons[down == 0] = "all reads +1"
    reasons[total < rule.min_reads] = f"fewer than {rule.min_reads} reads"
    reasons[total == 0] = "no reads"
    return reasons


class FitTable:
    """Per-qubit fit results of one model: a DataFrame plus the model it belongs to.

    Columns: ``qubit``, one column per parameter, ``<param>_stderr``, ``<param>_lo`` and
    ``<param>_hi`` (profile-likelihood interval; see module docstring), ``cov_<a>_<b>`` (the
    off-diagonal covariances), ``<param>_boot_stderr`` with a bootstrap, ``loglik``, ``deviance``,
    ``df``, ``gof_pvalue``, ``aic``, ``bic``, ``n_reads``, ``n_h``, ``converged``, ``iterations``,
    ``quality``, ``reason``. Tables of the ``qasa`` model also hold ``sigma_call``,
    ``sigma_call_stderr``, ``sigma_call_lo``, ``sigma_call_hi`` (h units; NaN where σ_call was not
    estimated), ``sigma_call_identified`` and ``dispersion_p``, ``dispersion_df`` (module docstring,
    "Between calls"), and ``sigma_field``: the device's per-field sd τ held fixed in that row's fit
    (module docstring, "Per-field errors"; NaN where the between-call fit did not run).
    """

    def __init__(self, table: pd.DataFrame, model: Model | str, meta: dict[str, Any] | None = None) -> None:
        self.table = table.reset_index(drop=True)
        self.model = get_model(model)
        self.meta = dict(meta or {})
        for p in self.model.params:   # tables saved before intervals existed: the columns, empty
            for col in (f"{p}_lo", f"{p}_hi"):
                if col not in self.table:
                    self.table[col] = np.nan
        if self.model.between_calls:  # ... and before the between-call component (issue 20)
            for col in ("sigma_call", "sigma_call_stderr", "sigma_call_lo", "sigma_call_hi", "dispersion_p",
                        "sigma_field"):
                if col not in self.table:
                    self.table[col] = np.nan
            if "sigma_call_identified" not in self.table:
                self.table["sigma_call_identified"] = False
            if "dispersion_df" not in self.table:
                self.table["dispersion_df"] = 0

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        from qasa.display import fits_repr

        return fits_repr(self)

    def _repr_html_(self) -> str:
        from qasa.display import fits_html

        return fits_html(self)

    def plot_map(self, param: str = "beta", device: dict[str, Any] | None = None, ax=None, good_only: bool = True):
        """Map of one parameter on the device layout (``device``: a dataset's ``device`` dict; by default
        the one recorded in :attr:`meta`, else a plain grid); returns the axes. See :func:`qasa.plots.layout_map`."""
        from qasa.parameters import parameter_info
        from qasa.plots import layout_map
        from qasa.topology import layout_table

        t = self.table.drop_duplicates("qubit").set_index("qubit")
        lay, _ = layout_table(device or self.meta.get("device") or {}, t.index.tolist())
        v = t.loc[lay.index, param].to_numpy(float)
        if good_only:
            v = np.where(t.loc[lay.index, "quality"].to_numpy() == "good", v, np.nan)
        signed = dict(zip(self.model.params, self.model.lower)).get(param, 0.0) < 0     # b: diverging, about 0
        m = float(np.nanpercentile(np.abs(v), 99)) if signed and np.isfinite(v).any() else None
        return layout_map(lay["x"], lay["y"], v, ax=ax, label=parameter_info(param).label,
                          cmap="RdBu_r" if signed else "viridis", vmin=-m if m else None, vmax=m)

    def plot_histogram(self, param: str = "beta", ax=None):
        """Histogram of one parameter over good qubits with its median, IQR and a typical 95% interval."""
        from qasa.parameters import parameter_info
        from qasa.plots import parameter_histogram

        good = self.table[self.table["quality"] == "good"]
        se = good[f"{param}_stderr"].to_numpy(float) if f"{param}_stderr" in good else None
        return parameter_histogram(good[param].to_numpy(float), param, ax=ax, stderr=se,
                                   label=parameter_info(param).label)

    @property
    def params(self) -> pd.DataFrame:
        """Parameters only, indexed by qubit."""
        return self.table.set_index("qubit")[list(self.model.params)]

    def result(self, qubit: int) -> FitResult:
        """The plain record of one qubit."""
        row = self.table.loc[self.table["qubit"] == qubit]
        if row.empty:
            raise KeyError(f"qubit {qubit} is not in this fit table")
        row = row.iloc[0]
        return FitResult(int(row["qubit"]), self.model.name,
                         {p: float(row[p]) for p in self.model.params},
                         {p: float(row[f"{p}_stderr"]) for p in self.model.params},
                         float(row["loglik"]), bool(row["converged"]) and row["quality"] != "failed",
                         str(row["reason"]) or "ok", str(row["quality"]),
                         {p: (float(row[f"{p}_lo"]), float(row[f"{p}_hi"])) for p in self.model.params})

    def covariance(self, qubit: int) -> np.ndarray:
        """The parameter covariance matrix of one qubit (NaN for parameters at a bound)."""
        row = self.table.loc[self.table["qubit"] == qubit].iloc[0]
        ps = self.model.params
        cov = np.diag([row[f"{p}_stderr"] ** 2 for p in ps]).astype(float)
        for i, a in enumerate(ps):
            for j in range(i + 1, len(ps)):
                cov[i, j] = cov[j, i] = row.get(f"cov_{a}_{ps[j]}", np.nan)
        return cov

    def band(self, qubit: int, h: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fitted P(−1) at ``h`` with a pointwise confidence band (delta method on the covariance).

        Parameters at a bound contribute no uncertainty. Returns ``(p, lower, upper)``.
        """
        row = self.table.loc[self.table["qubit"] == qubit].iloc[0]
        theta = row[list(self.model.params)].to_numpy(float)[None, :]
        m, jac = self.model.m_jac(np.asarray(h, float), theta)
        p, dp = 0.5 * (1 + m[0]), 0.5 * jac[0]
        cov = np.nan_to_num(self.covariance(qubit))
        sd = np.sqrt(np.maximum(np.einsum("kp,pq,kq->k", dp, cov, dp), 0.0))
        z = stats.norm.ppf(0.5 + level / 2)
        return p, np.clip(p - z * sd, 0, 1), np.clip(p + z * sd, 0, 1)

    def summary(self) -> dict[str, Any]:
        """Device-level summary: counts per quality and median/IQR of each parameter over good qubits (and of
        σ_call, with the device's σ_field, when the fit has the between-call component)."""
        good = self.table[self.table["quality"] == "good"]
        out: dict[str, Any] = {"model": self.model.name, "qubits": len(self),
                               "quality": {k: int(v) for k, v in self.table["quality"].value_counts().items()}}
        for p in self.model.params:
            v = good[p].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            out[p] = ({"median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
                       "q75": float(np.quantile(v, 0.75)), "mean": float(v.mean()), "std": float(v.std())}
                      if v.size else None)
        if self.model.between_calls and "sigma_call" in good:      # noise beyond shots, when fitted
            v = good["sigma_call"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size:
                out["sigma_call"] = {"median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
                                     "q75": float(np.quantile(v, 0.75)), "qubits": int(v.size)}
            if self.meta.get("sigma_field"):
                out["sigma_field"] = dict(self.meta["sigma_field"])
        return out

    def save(self, path: str | Path) -> Path:
        """Write the table as Parquet (model name and meta in the schema metadata), atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.table, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"qasa_fit": json.dumps({"model": self.model.name, **self.meta}).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FitTable":
        """Inverse of :meth:`save`."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"qasa_fit"])
        return cls(table.to_pandas(), meta.pop("model"), meta)

    def to_model_parameters_csv(self, path: str | Path) -> Path:
        """Write the reference ``model_parameters.csv`` (qasa model only).

        The columns of the reference (``spin, β, b, γ, η``) come first, so tools that read them by
        name keep working; ``quality`` and ``reason`` follow. Rule: one row per qubit that was
        fitted (quality ``good`` or ``bad``); qubits whose fit ``failed`` have no parameters and are
        left out, so that no row has empty parameter cells (they remain in the FitTable with
        their reason).
        """
        if not self.model.reference_csv:
            raise ValueError(f"model_parameters.csv holds the qasa model, not {self.model.name!r}")
        t = self.table[self.table["quality"] != "failed"]
        out = pd.DataFrame({"spin": t["qubit"], "β": t["beta"], "b": t["b"], "γ": t["gamma"], "η": t["eta"],
                            "quality": t["quality"], "reason": t["reason"]})
        path = Path(path)
        atomic_write_bytes(path, out.to_csv(index=False, float_format="%.17g").encode())
        return path

    @classmethod
    def from_model_parameters_csv(cls, path: str | Path) -> "FitTable":
        """Read a reference ``model_parameters.csv`` (parameters only; statistics are NaN)."""
        df = pd.read_csv(path)
        table = pd.DataFrame({"qubit": df["spin"].astype("int64"), "beta": df["β"], "b": df["b"],
                              "gamma": df["γ"], "eta": df["η"]})
        table["quality"] = df["quality"].astype(str) if "quality" in df else "good"
        table["reason"] = df["reason"].fillna("").astype(str) if "reason" in df else ""
        return cls(table, "qasa", {"source": str(Path(path).name)})


def _as_response(data: Dataset | Response) -> Response:
    return data.response() if isinstance(data, Dataset) else data


#: Most parametric-bootstrap replicates of :func:`fit` (``qasa fit --bootstrap``): standard errors need
#: 25–200 (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, §6.4); each replicate refits
#: every qubit and holds a copy of its counts, so 10⁸ would exhaust memory instead of finishing.
MAX_BOOTSTRAP = 10_000


def fit(data: Dataset | Response, model: Model | str = "qasa", *, starts: Sequence[np.ndarray] | None = None,
        max_iter: int = 200, tol: float = 1e-8, bootstrap: int = 0, seed: int | None = None,
        rule: QualityRule = QualityRule(), intervals: bool = True, level: float = 0.95,
        information: str = "observed", between_calls: bool = True,
        sigma_field: float | str = "auto") -> FitTable:
    """Fit ``model`` to every qubit of ``data`` by maximum likelihood (see module docstring).

    Args:
        data: a :class:`~qasa.dataset.Dataset` or a :class:`~qasa.dataset.Response`.
        model: model or model name (:func:`qasa.models.get_model`).
        starts: starting points, a sequence of ``(n_qubits, p)`` arrays (or one such array); default:
            the model's data-driven starts.
        max_iter, tol: optimizer limits (see :func:`maximize`).
        bootstrap: number of parametric-bootstrap replicates (0: none).
        seed: seed of the bootstrap draws.
        rule: the quality rule.
        intervals: compute profile-likelihood intervals (``<param>_lo``/``<param>_hi``; NaN if False).
        level: their confidence level.
        information: ``"observed"`` (default) — standard errors and covariances from the observed
            information ``−∂²ℓ/∂θ²`` (four more score evaluations per qubit); ``"expected"`` — from
            the expected (Fisher) information, one evaluation: asymptotically the same, for callers
            that need the estimates and only rough errors (the halves of
            :func:`qasa.device.split_half`).
        between_calls: for the ``qasa`` model on data with per-call statistics (a
            :class:`~qasa.dataset.Dataset`, or a :class:`~qasa.dataset.Response` with ``calls``), fit
            the between-call component σ_call and let every interval account for it (module
            docstring, "Between calls"); False: the binomial likelihood of the summed counts (reads
            independent), σ_call not estimated (``dispersion_p`` is still reported).
        sigma_field: the sd τ of the field error shared by every call at one programmed value of a
            qubit (the h DAC's rounding; module docstring, "Per-field errors"), held fixed in the
            between-call likelihood: ``"auto"`` (default) estimates it once for the whole device
            (``meta["sigma_field"]``, with its interval), a number in h units uses that value.

    Returns:
        A :class:`FitTable` with one row per qubit (degenerate qubits flagged, never raised).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise ValueError(f"bootstrap={bootstrap!r} must be an integer in [0, {MAX_BOOTSTRAP}] (replicates)")
    if information not in ("observed", "expected"):
        raise ValueError(f"information={information!r} must be 'observed' or 'expected'")
    model = get_model(model)
    field = _check_field(sigma_field)
    r = _as_response(data)
    n = len(r.qubits)
    if starts is not None:
        starts = _check_starts(model, starts, n)
    # qubits are fitted independently: in blocks, so that the working arrays (dozens per cell for the
    # between-call likelihood and the profiles) stay bounded whatever the device size; the per-field
    # variance is the device's, estimated from every block's binomial fits before the between-call fits
    blocks = ([np.arange(i, min(i + FIT_CHUNK, n)) for i in range(0, n, FIT_CHUNK)]
              if n > FIT_CHUNK and starts is None and not bootstrap else [None])
    stages = [_Stage.points(model, r if rows is None else r.subset(rows), starts, rule, max_iter, tol, between_calls)
              for rows in blocks]
    fmeta = None
    if any(st.calls is not None and st.calls["identified"].any() for st in stages):
        if field == "auto":
            fmeta = field_variance(np.concatenate([st.field_cells() for st in stages], axis=1), level)
        else:
            fmeta = {"sigma_field": float(field), "sigma_field_lo": float("nan"), "sigma_field_hi": float("nan"),
                     "cells": 0, "z": float("nan"), "given": True}
    tau2 = fmeta["sigma_field"] ** 2 if fmeta and np.isfinite(fmeta["sigma_field"]) else 0.0   # NaN: not estimable
    parts = [st.finish(rule, intervals, level, information, max_iter, tol, tau2) for st in stages]
    table = pd.concat([p.table for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].table
    meta = dict(parts[0].meta)
    if "likelihood" in meta:
        meta["likelihood"] = ("between-calls" if any(p.meta.get("likelihood") == "between-calls" for p in parts)
                              else "binomial")
    if model.between_calls:
        on = fmeta is not None and meta.get("likelihood") == "between-calls"
        if on:
            meta["sigma_field"] = fmeta
        table["sigma_field"] = np.where(table["sigma_call_identified"].to_numpy(bool) if on else False,
                                        fmeta["sigma_field"] if on else np.nan, np.nan)
    if bootstrap:
        _bootstrap(model, r, table, bootstrap, seed, max_iter, tol)
        meta.update(bootstrap=bootstrap, bootstrap_seed=seed)
    return FitTable(table, model, meta)


def _check_field(sigma_field: Any) -> float | str:
    """``sigma_field`` of :func:`fit`: ``"auto"`` or a number in [0, SIGMA_CALL_MAX]."""
    if isinstance(sigma_field, str) and sigma_field == "auto":
        return "auto"
    if (isinstance(sigma_field, (bool, np.bool_)) or not isinstance(sigma_field, (int, float, np.integer, np.floating))
            or not 0.0 <= float(sigma_field) <= SIGMA_CALL_MAX):
        raise ValueError(f"sigma_field={sigma_field!r} must be 'auto' or a number in [0, {SIGMA_CALL_MAX:g}] (h units)")
    return float(sigma_field) + 0.0          # (−0.0 → 0.0)


@dataclass
class _Stage:
    """One block of :func:`fit` between its two stages: the binomial multi-start fits
    (:meth:`points`), then — once the device's per-field variance is known — the between-call fits,
    covariances, intervals and the table (:meth:`finish`)."""

    model: Model
    r: Response
    reasons: np.ndarray
    theta: np.ndarray
    ll: np.ndarray
    conv: np.ndarray
    iters: np.ndarray
    score: np.ndarray
    fisher: np.ndarray
    fitted: np.ndarray
    calls: dict[str, Any] | None
    start: tuple | None = None

    @classmethod
    def points(cls, model: Model, r: Response, starts, rule: QualityRule, max_iter: int, tol: float,
               between_calls: bool) -> "_Stage":
        reasons = _degenerate(model, r, rule)
        theta, ll, conv, iters, score, fisher = _point_fits(model, r, np.flatnonzero(reasons == ""), starts,
                                                            max_iter, tol)
        calls = None
        if model.between_calls:
            calls = _dispersion(r, model, theta)
            if not between_calls:
                calls["identified"][:] = False
                calls["why"] = "fitted without the between-call component (between_calls=False)"
        return cls(model, r, reasons, theta, ll, conv, iters, score, fisher,
                   np.flatnonzero(np.isfinite(ll) & conv), calls)

    def field_cells(self) -> np.ndarray:
        """The Gaussian cells of the rows the between-call fit will take (:func:`_field_cells`)."""
        rows = self.fitted[self.calls["identified"][self.fitted]] if self.calls is not None else self.fitted[:0]
        if rows.size == 0:
            return np.empty((5, 0))
        start = _calls_start(self.r, rows, self.theta[rows])
        self.start = (rows, start)                  # the between-call fit of :meth:`finish` starts from it
        return _field_cells_of(self.r, rows, start)

    def finish(self, rule: QualityRule, intervals: bool, level: float, information: str, max_iter: int,
               tol: float, field_var: float) -> FitTable:
        model, r, theta, ll, conv, iters, calls = (self.model, self.r, self.theta, self.ll, self.conv, self.iters,
                                                   self.calls)
        n, k = len(r.qubits), model.num_params
        lower, upper = np.full((n, k), np.nan), np.full((n, k), np.nan)
        cov = np.full((n, k, k), np.nan)
        fitted = self.fitted
        if calls is not None and fitted.size:
            _fit_calls(r, calls, theta, ll, conv, iters, fitted, cov, lower, upper, level, intervals, max_iter, tol,
                       field_var, self.start)
            self.start = None
            fitted = fitted[~calls["fitted"][fitted]]        # the rest: the binomial fit as before
        if fitted.size:
            cov[fitted] = _covariance(model, r.h, theta[fitted], r.n_down[fitted].astype(float),
                                      r.n_total[fitted].astype(float), self.score[fitted],
                                      expected=information == "expected", fisher=self.fisher[fitted])
            if intervals:
                _intervals(model, r.h, r.n_down.astype(float), r.n_total.astype(float), theta, ll, cov, iters, lower,
                           upper, level, max_iter, tol, fitted, self.fisher)
        table = _statistics(model, r, theta, ll, conv, iters, self.reasons, rule, lower, upper, cov, calls)
        meta = {"max_iter": max_iter, "tol": tol, "intervals": "profile" if intervals else None, "level": level}
        if calls is not None:
            meta["likelihood"] = "between-calls" if calls["fitted"].any() else "binomial"
        return FitTable(table, model, meta)


def _point_fits(model: Model, r: Response, ok: np.ndarray, starts, max_iter: int, tol: float):
    """The multi-start maximum-likelihood fit of the rows ``ok`` of ``r`` (:func:`_multistart`), as
    arrays over every row (NaN, not converged elsewhere): ``(theta, loglik, converged, iterations,
    score, information)``; the score ``∂ℓ/∂φ`` and the expected information in φ at the estimate,
    which the covariance and the intervals reuse."""
    n, k = len(r.qubits), model.num_params
    theta = np.full((n, k), np.nan)
    ll = np.full(n, np.nan)
    conv = np.zeros(n, bool)
    iters = np.zeros(n, int)
    score = np.full((n, k), np.nan)          # ∂ℓ/∂φ at the estimate (reused by the covariance) ...
    fisher = np.full((n, k, k), np.nan)      # ... and the expected information in φ (by the intervals)
    if ok.size:
        h = r.h
        nd, nt = r.n_down[ok].astype(float), r.n_total[ok].astype(float)
        start_list = list(starts) if starts is not None else model.starts(h, nd, nt)
        if starts is not None:
            start_list = [np.asarray(s, float)[ok] for s in start_list]
        phi_ok, ll[ok], conv[ok], iters[ok], score[ok], fisher[ok] = _multistart(
            model.internal, h, nd, nt, model.to_internal(np.concatenate(start_list)).reshape(len(start_list), ok.size, k),
            max_iter=max_iter, tol=tol, trap=model.even_mask & _spread(start_list))
        theta[ok] = model.from_internal(phi_ok)
    return theta, ll, conv, iters, score, fisher


#: Qubits fitted at once by :func:`fit` (larger responses are fitted in blocks of this many rows):
#: bounds the working memory (the default assessment's fit peaked at 0.8 GB above its data in one block
#: of 5 626 qubits) at no cost in speed.
FIT_CHUNK = 1024

#: A cell (qubit, programmed field) enters the homogeneity test and the between-call degrees of
#: freedom when each outcome is expected at least this many times per call (Pearson χ² is then
#: close to its χ² law; fewer expected counts make it heavy-tailed).
MIN_CALL_COUNT = 5.0
#: A cell takes the Gaussian form of the between-call likelihood when each outcome is expected at
#: least this many times per call (module docstring): there the per-call counts are near-Gaussian;
#: below it (the saturated tails) the binomial Laplace form, whose mean information is the
#: binomial's (a Gaussian there reads information from the binomial variance law: γ's intervals
#: 2 % short on clean data at a threshold of 5).
GAUSS_MIN_COUNT = 20.0
#: σ_call is estimated for a qubit with at least this many between-call degrees of freedom
#: (Σ over such cells of calls − 1); below it the table says it is not identified.
MIN_CALL_DF = 20


def _dispersion(r: Response, model: Model | None = None, theta: np.ndarray | None = None) -> dict[str, Any]:
    """Between-call homogeneity per qubit, and whether σ_call can be separated (``df ≥`` :data:`MIN_CALL_DF`).

    Over the cells whose every call expects each outcome ≥ :data:`MIN_CALL_COUNT` times, each cell's
    Pearson statistic ``X²_k = Σ_c (n_c − r N_c)² / (N̄ r (1 − r))`` is ≈ χ² on ``d_k = C − 1`` degrees
    of freedom without between-call noise. The test is the score test of σ_call² = 0 in the
    random-effects likelihood (module docstring): a call's variance ``N̄ w + N̄² g σ²`` (``w = p(1 − p)``,
    ``g = (∂p/∂b)²``) makes its derivative at 0 ``½ Σ_k a_k (X²_k − d_k)`` with ``a_k = N̄ g / w`` — the
    cells where an offset of b moves the counts most count most (Dean 1992, "Testing for
    overdispersion in Poisson and binomial regression models", JASA 87). Its law ``Σ a_k χ²_{d_k}``
    is taken as ``c χ²_ν`` with the same mean and variance (Satterthwaite 1946): ``c = Σ a² d / Σ a d``,
    ``ν = (Σ a d)² / Σ a² d``. ``g`` and ``w`` come from the binomial fit ``theta`` of ``model``
    (the within-cell spread does not depend on the pooled counts the fit used); a qubit without one
    gets ``a_k = 1``, Pearson's ``X² = Σ X²_k`` on ``Σ d_k`` degrees of freedom.
    """
    n = len(r.qubits)
    out: dict[str, Any] = {"p": np.full(n, np.nan), "df": np.zeros(n, np.int64), "identified": np.zeros(n, bool),
                           "fitted": np.zeros(n, bool), "sigma": np.full(n, np.nan), "lo": np.full(n, np.nan),
                           "hi": np.full(n, np.nan), "se": np.full(n, np.nan), "deviance": np.full(n, np.nan),
                           "n_free": np.zeros(n, np.int64), "why": "no per-call counts (one pseudo-call per h)"}
    c = r.calls
    if c is None:
        return out
    C = c.n_calls.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        nbar = np.where(C > 0, r.n_total / np.maximum(C, 1), 0.0)
        ratio = c.centre
        use = (C >= 2) & (nbar * np.minimum(ratio, 1 - ratio) >= MIN_CALL_COUNT)
        x2 = np.where(use, c.spread / (nbar * ratio * (1 - ratio)), 0.0)
    d = np.where(use, C - 1, 0.0)
    a = np.where(use, 1.0, 0.0)
    if model is not None and theta is not None and "b" in model.params:
        rows = np.flatnonzero(np.isfinite(theta).all(1) & use.any(1))
        if rows.size:
            m, dm = model.m_jac(r.h, theta[rows])
            w = np.maximum(0.25 * (1 - np.broadcast_to(m, dm.shape[:2]) ** 2), _PCLIP)
            ak = nbar[rows] * (0.5 * dm[..., model.params.index("b")]) ** 2 / w
            ak = np.where(use[rows], ak, 0.0)
            scale = ak.max(1, keepdims=True)
            good = scale[:, 0] > 0
            a[rows[good]] = ak[good] / scale[good]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, var = (a * d).sum(1), (a * a * d).sum(1)
        cc, nu = var / mean, mean**2 / var
        p = stats.chi2.sf((a * x2).sum(1) / cc, nu)
    df = d.sum(1).astype(np.int64)
    out["p"] = np.where((df > 0) & (mean > 0), p, np.nan)
    out["df"] = df
    out["identified"] = df >= MIN_CALL_DF
    out["why"] = f"fewer than {MIN_CALL_DF} between-call degrees of freedom"
    return out


#: Convergence of the between-call fit (gain in nats, step in conditional standard errors): its
#: start is the binomial fit's, a few steps away; the profiles that follow re-maximize every point
#: and any point better than the fit by 1e-3 nats restarts it (the escape step).
_CALLS_TOL, _CALLS_STEP_TOL = 1e-4, 0.01


def _calls_start(r: Response, rows: np.ndarray, th0: np.ndarray, field_var: float = 0.0):
    """The between-call fit's data and start for ``rows`` from their binomial estimates ``th0``: the packed
    cells (:func:`_pack_calls`, slopes ``g = (∂p/∂b)²`` and curvatures at ``th0``), the reads per cell
    ``T``, the moment start of σ² (``E Σ(n − rN)² = (C − 1) N̄ (w + N̄ g σ²)`` for calls of equal size)
    and the binomial fit's ``p`` and ``∂p/∂θ`` per cell."""
    qasa = get_model("qasa")
    m, dm = qasa.m_jac(r.h, th0)
    g = (0.5 * dm[..., 1]) ** 2
    eps = 1e-5                                  # ∂²p/∂b² by a central difference of the analytic slope
    up, down = th0.copy(), th0.copy()
    up[:, 1] += eps
    down[:, 1] -= eps
    pbb = 0.5 * (qasa.m_jac(r.h, up)[1][..., 1] - qasa.m_jac(r.h, down)[1][..., 1]) / (2 * eps)
    p = np.clip(0.5 * (1 + m), _PCLIP, 1 - _PCLIP)
    D = _pack_calls(r, rows, g, pbb ** 2, field_var, p)
    T = D[:, _S] + D[:, _U]
    C = D[:, _C]
    with np.errstate(invalid="ignore", divide="ignore"):
        nbar = np.where(C > 0, T / np.maximum(C, 1), 0.0)
        num = np.where(C >= 2, D[:, _R0] / np.maximum(nbar, 1) - (C - 1) * p * (1 - p), 0.0).sum(1)
        den = np.where(C >= 2, (C - 1) * D[:, _G] * nbar, 0.0).sum(1)
        v0 = np.clip(np.where(den > 0, num / den, 0.0), 0.0, (0.3 / np.maximum(th0[:, 0], 1e-9)) ** 2)
    return D, T, v0, p, 0.5 * dm


def _field_cells(r: Response, rows: np.ndarray, th0: np.ndarray) -> np.ndarray:
    """The Gaussian cells of ``rows`` as the per-field variance needs them (module docstring, "Per-field
    errors"): ``(5, m)`` — the pooled mean's squared misfit ``e = Σ N² (p̂ − r)²`` (binomial fit ``p̂``),
    its weight ``a = Σ N² g``, its variance without a per-field offset ``V = N̄ (w + N̄ g σ₀²)`` (σ₀² the
    qubit's moment estimate), ``1 − leverage`` of the cell in the qubit's weighted fit of the mean, and
    the cell's qubit (label)."""
    return _field_cells_of(r, rows, _calls_start(r, rows, th0))


def _field_cells_of(r: Response, rows: np.ndarray, start: tuple) -> np.ndarray:
    """:func:`_field_cells` from the rows' :func:`_calls_start`."""
    D, T, v0, p, dp = start
    C, NN = D[:, _C], D[:, _NN]
    with np.errstate(invalid="ignore", divide="ignore"):
        nbar = np.where(C > 0, T / np.maximum(C, 1), 0.0)
        V = nbar * (p * (1 - p) + nbar * D[:, _G] * v0[:, None])
        wt = np.where(C > 0, NN / V, 0.0)
    F = np.einsum("nk,nki,nkj->nij", wt, dp, dp)
    lev = wt * np.einsum("nki,nij,nkj->nk", dp, np.linalg.pinv(F, hermitian=True), dp)
    use = (D[:, _GS] > 0) & (C >= 1) & (V > 0)
    e = NN * (p - D[:, _R]) ** 2
    qubit = np.broadcast_to(r.qubits[rows].astype(float)[:, None], e.shape)
    return np.stack([e[use], (NN * D[:, _G])[use], V[use], np.clip(1.0 - lev[use], 0.05, 1.0), qubit[use]])


#: Winsorizing bound on a cell's standardized squared misfit ``e/((1 − lev) V_m)`` in the per-field
#: variance (a χ²₁ variable exceeds it with probability 1.5e-6).
_FIELD_Z_MAX = 25.0
#: Rejection bound on each qubit's standardized score in the per-field variance: a qubit whose cells
#: scatter beyond ``_FIELD_REJECT`` standard errors of what the device's τ predicts gets no weight, so a
#: few broken qubits cannot set τ for all. A hard bound, not a smooth downweighting (a biweight read τ
#: 19 % low: a qubit's score is a sum of a few χ²₁ terms, skewed right, and smooth weights trim that
#: tail more than the left); a well-described qubit passes it with probability ≈ 0.999.
_FIELD_REJECT = 5.0
#: Fewest qubits (each with its cells) for a device-level τ; fewer give ``sigma_field`` NaN ("not estimable").
FIELD_MIN_QUBITS = 10


def _field_scores(tau2: float | np.ndarray, e, a, V, c, inv, nq) -> tuple[np.ndarray, np.ndarray]:
    """Per qubit: the score ``U_q = Σ (a/V_m)(z − 1)`` of τ² (z the cell's winsorized standardized
    misfit, ``V_m = V + a τ²``; τ² one value, or one per cell) and its information ``I_q = Σ (a/V_m)²``
    (both without the factor ½)."""
    Vm = V + a * tau2
    z = np.minimum(e / (c * Vm), _FIELD_Z_MAX)
    return np.bincount(inv, (a / Vm) * (z - 1.0), nq), np.bincount(inv, (a / Vm) ** 2, nq)


def field_variance(cells: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """The per-field variance τ² of a device from its Gaussian cells (:func:`_field_cells`, module docstring
    "Per-field errors").

    Each cell's squared misfit is taken as ``e ~ (1 − lev) V_m χ²₁``, ``V_m = V + a τ²``; each qubit's
    cells give a score ``U_q(τ²)`` with information ``I_q`` and a standardized score
    ``u_q = U_q/√(2 I_q)``. τ² ≥ 0 solves ``Σ_q w_q U_q = 0`` over the qubits with ``|u_q| ≤``
    :data:`_FIELD_REJECT` (``w_q`` 1, else 0), by Fisher scoring from the median of the qubits' own
    estimates, the set of qubits updated with τ² until it no longer changes: a qubit whose cells
    scatter far beyond the rest (a broken one, or one the model does not describe) gets no weight, and
    its lack of fit stays visible. The interval inverts the score test on those qubits,
    ``|Σ w U| ≤ z √(2 Σ w I)`` (so it holds 0 exactly when the test of τ = 0 does not reject).

    Returns:
        ``{"sigma_field", "sigma_field_lo", "sigma_field_hi", "cells", "qubits", "outlying_qubits", "z"}``
        (h units; ``z`` the weighted score statistic for τ² = 0; ``outlying_qubits`` those with no
        weight); NaN estimates with fewer than :data:`FIELD_MIN_QUBITS` qubits.
    """
    e, a, V, c, q = cells
    uq, inv = np.unique(q, return_inverse=True)
    nq = len(uq)
    out = {"sigma_field": float("nan"), "sigma_field_lo": float("nan"), "sigma_field_hi": float("nan"),
           "cells": int(e.size), "qubits": int(nq), "outlying_qubits": 0, "z": float("nan")}
    if nq < FIELD_MIN_QUBITS:
        return out
    # each qubit's own estimate (Fisher scoring, vectorized over qubits), their median the start
    own = np.zeros(nq)
    for _ in range(30):
        U, info = _field_scores(own[inv], e, a, V, c, inv, nq)
        new = np.maximum(own + np.where(info > 0, U / np.where(info > 0, info, 1.0), 0.0), 0.0)
        moved = np.abs(new - own) > 1e-6 * np.maximum(new, 1e-10)
        own = new
        if not moved.any():
            break
    tau2 = float(np.median(own))
    w = np.ones(nq)
    for _ in range(100):
        U, info = _field_scores(tau2, e, a, V, c, inv, nq)
        w_new = _inliers(U, info)
        den = float((w_new * info).sum())
        if den <= 0:
            break
        new = max(tau2 + float((w_new * U).sum()) / den, 0.0)
        done = abs(new - tau2) <= 1e-7 * max(tau2, 1e-10) and np.array_equal(w_new, w)
        tau2, w = new, w_new
        if done:
            break
    U, info = _field_scores(tau2, e, a, V, c, inv, nq)
    zq = stats.norm.ppf(0.5 + level / 2)

    def score(t2: float) -> float:
        Ut, It = _field_scores(t2, e, a, V, c, inv, nq)
        sd = np.sqrt(2.0 * float((w * It).sum()))
        return float((w * Ut).sum()) / sd if sd > 0 else 0.0

    def root(target: float) -> float:          # the τ² where the standardized score falls to ``target``
        lo, hi = 0.0, max(tau2, 1e-8)
        while score(hi) > target and hi < 1.0:
            lo, hi = hi, hi * 4.0
        if score(hi) > target:
            return hi
        if score(lo) <= target:
            return lo
        return float(optimize.brentq(lambda t2: score(t2) - target, lo, hi, xtol=1e-16, rtol=1e-8))

    z0 = score(0.0)
    lo2 = 0.0 if z0 <= zq else root(zq)
    out.update(sigma_field=float(np.sqrt(tau2)), sigma_field_lo=float(np.sqrt(lo2)),
               sigma_field_hi=float(np.sqrt(root(-zq))), z=float(z0), outlying_qubits=int((w == 0).sum()))
    return out


def _inliers(U: np.ndarray, info: np.ndarray) -> np.ndarray:
    """1 for a qubit whose standardized score ``|U/√(2 I)|`` is within :data:`_FIELD_REJECT`, else 0
    (and 0 without information)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(info > 0, U / np.sqrt(2.0 * np.where(info > 0, info, 1.0)), 0.0)
    return ((np.abs(u) <= _FIELD_REJECT) & (info > 0)).astype(float)


def _fit_calls(r, calls, theta, ll, conv, iters, rows, cov, lower, upper, level, intervals, max_iter, tol,
               field_var: float = 0.0, start: tuple | None = None) -> None:
    """The between-call fit of the ``rows`` whose σ_call is identified, in place (module docstring,
    "Between calls"): from the binomial estimates, the slope ``g = (∂p/∂b)²`` per cell, a
    moment start of σ², one maximization of the five parameters, covariance and profile intervals;
    ``field_var``: the per-field variance τ² (module docstring, "Per-field errors"), held fixed;
    ``start``: ``(rows, _calls_start(...))`` already computed for these rows (:meth:`_Stage.field_cells`)."""
    rows = rows[calls["identified"][rows]]
    if rows.size == 0:
        return
    th0 = theta[rows]
    if start is not None and np.array_equal(start[0], rows):
        D, T, v0, p0, _ = start[1]
        D = _set_field(D, field_var, p0)
    else:
        D, T, v0, _, _ = _calls_start(r, rows, th0, field_var)
    start = np.column_stack([th0[:, :3], np.sqrt(np.maximum(th0[:, 3] ** 2 - v0, 0.0)), np.sqrt(v0)])
    pm = CALL_MODEL.internal
    phi, l5, c5, i5, sc5, fi5 = _maximize_phi(pm, r.h, D, T, CALL_MODEL.to_internal(start), max_iter=max_iter,
                                              tol=max(tol, _CALLS_TOL), step_tol=_CALLS_STEP_TOL)
    th5 = CALL_MODEL.from_internal(phi)
    ok = c5 & np.isfinite(l5)
    calls["invalid"] = np.zeros(len(theta), bool)
    calls["unconverged"] = np.zeros(len(theta), bool)
    calls["unconverged"][rows[~ok]] = True
    if not ok.any():
        return
    rows, th5, l5, i5, sc5, fi5, D, T = rows[ok], th5[ok], l5[ok], i5[ok], sc5[ok], fi5[ok], D[ok], T[ok]
    m5 = len(rows)
    # standard errors from the expected information (the optimizer's last evaluation): five score
    # evaluations fewer than the observed one, from which it differs by ≤ 3 % (5–95 % of 400 qubits,
    # every parameter; benchmarks/fit_speed.py's device)
    cv5 = _covariance(CALL_MODEL, r.h, th5, D, T, sc5, expected=True, fisher=fi5)
    lo5, hi5 = np.full((m5, 5), np.nan), np.full((m5, 5), np.nan)
    it5 = iters[rows] + i5
    if intervals:
        _intervals(CALL_MODEL, r.h, D, T, th5, l5, cv5, it5, lo5, hi5, level, max_iter, tol, np.arange(m5), fi5)
    valid = th5[:, 0] * th5[:, 4] < 0.99 * BETA_SIGMA_MAX
    calls["invalid"][rows[~valid]] = True
    rows, th5, l5, it5, cv5, lo5, hi5, D, T = (a[valid] for a in (rows, th5, l5, it5, cv5, lo5, hi5, D, T))
    theta[rows], ll[rows], iters[rows] = th5[:, :4], l5, it5
    cov[rows] = cv5[:, :4, :4]
    lower[rows], upper[rows] = lo5[:, :4], hi5[:, :4]
    calls["fitted"][rows] = True
    calls["sigma"][rows], calls["lo"][rows], calls["hi"][rows] = th5[:, 4], lo5[:, 4], hi5[:, 4]
    with np.errstate(invalid="ignore"):
        calls["se"][rows] = np.sqrt(cv5[:, 4, 4])
    # lack of fit of the summed counts about the mean, each cell's binomial deviance divided by its
    # between-call inflation 1 + s² K (≈ 1 + N̄ s²/(pq)); the mean has (β, b, γ, η_tot) free
    pbar = np.clip(CALL_MODEL.p_down(r.h, th5), _PCLIP, 1 - _PCLIP)
    S, U = D[:, _S], D[:, _U]
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = 2.0 * (np.where(S > 0, S * np.log(S / (T * pbar)), 0.0) + np.where(U > 0, U * np.log(U / (T * (1 - pbar))), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        K = (S / pbar ** 2 + U / (1 - pbar) ** 2) / np.maximum(D[:, _C], 1.0)
    v = th5[:, 4:5] ** 2
    # (a per-field offset adds C t² to the pooled mean's variance per unit of binomial curvature)
    infl = 1.0 + (D[:, _G] * v + 0.5 * D[:, _H] * v * v + D[:, _C] * D[:, _TF]) * K
    calls["deviance"][rows] = np.maximum(dev / infl, 0.0).sum(1)
    eta_tot = np.hypot(th5[:, 3], th5[:, 4])
    calls["n_free"][rows] = (th5[:, 0] > 0).astype(int) + 1 + (th5[:, 2] > 0) + (eta_tot > 0)


def _check_starts(model: Model, starts: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    """User-given starting points as float arrays ``(n, p)``, finite and within the model's bounds.

    Raises:
        ValueError: naming the start, the offending value and the allowed shape or range.
    """
    out = []
    if isinstance(starts, np.ndarray) and starts.ndim == 2:
        starts = [starts]                          # one (n, p) array: one start
    starts = list(starts)
    if len(starts) == 0:
        raise ValueError("starts is empty: give at least one (n_qubits, p) array, or None for the model's starts")
    lo, hi = np.array(model.lower), np.array(model.upper)
    for i, s in enumerate(starts):
        a = np.asarray(s, dtype=float)
        if a.shape != (n, model.num_params):
            raise ValueError(f"starts[{i}] has shape {a.shape}; {model.name} needs ({n}, {model.num_params}): "
                             f"one row per qubit, columns {', '.join(model.params)}")
        bad = ~np.isfinite(a) | (a < lo) | (a > hi)
        if bad.any():
            q, j = np.argwhere(bad)[0]
            raise ValueError(f"starts[{i}][{q}, {j}] = {float(a[q, j])!r}: {model.params[j]} must be finite and lie in "
                             f"[{lo[j]:g}, {hi[j]:g}]")
        out.append(a)
    return out


def _intervals(model, h, n_down, n_total, theta, ll, cov, iters, lower, upper, level, max_iter, tol, rows,
               fisher=None, rounds: int = 3) -> None:
    """Profile intervals of ``rows`` (indices into every array: ``n_down``, ``n_total`` are the data of
    all rows, float), in place; a profile point that beats the fit restarts it (the
    escape step of the module docstring), and its covariance and intervals are recomputed. After
    the last escape round the moved rows get their intervals once more (around the final estimate:
    an interval is never left from an earlier one)."""
    for round_ in range(rounds + 1):
        if rows.size == 0:
            return
        nd, nt = n_down[rows], n_total[rows]
        lo, hi, better, better_ll = profile_intervals(model, h, nd, nt, theta[rows], ll[rows], level,
                                                      cov=cov[rows], information=None if fisher is None else fisher[rows])
        fisher = None               # (escaped rows have moved: their information is evaluated anew)
        lower[rows], upper[rows] = lo, hi
        esc = np.flatnonzero(np.isfinite(better_ll))
        if esc.size == 0 or round_ == rounds:
            return
        th2, ll2, cv2, it2 = maximize(model, h, nd[esc], nt[esc], better[esc], max_iter=max_iter, tol=tol)
        improved = cv2 & np.isfinite(ll2) & (ll2 > ll[rows[esc]])
        moved = rows[esc[improved]]
        theta[moved], ll[moved], iters[moved] = th2[improved], ll2[improved], iters[moved] + it2[improved]
        rows = moved
        if rows.size:
            cov[rows] = _covariance(model, h, theta[rows], n_down[rows], n_total[rows])


def _statistics(model, r, theta, ll, conv, iters, reasons, rule, lower, upper, cov, calls=None) -> pd.DataFrame:
    """The rows of a :class:`FitTable`: estimates, errors, intervals, goodness of fit and the quality
    rule's verdict with its reasons (module docstring, "Statistics and quality rule"); ``calls``: the
    between-call fit's per-qubit results (:func:`_dispersion`, :func:`_fit_calls`), when there is one."""
    n, k = theta.shape
    cov = cov.copy()
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.einsum("npp->np", cov))
    nd, nt = r.n_down.astype(float), r.n_total.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(nd > 0, nd * np.log(nd / np.maximum(nt, 1)), 0.0) \
            + np.where(nt - nd > 0, (nt - nd) * np.log((nt - nd) / np.maximum(nt, 1)), 0.0)
    ll_sat = sat.sum(1)
    lo, hi = np.array(model.lower), np.array(model.upper)
    n_free = np.where(np.isfinite(theta), ((theta > lo) & (theta < hi)), True).sum(1)
    n_h = (r.n_total > 0).sum(1)
    reads = r.n_total.sum(1)
    deviance = np.maximum(2.0 * (ll_sat - ll), 0.0)
    k_used = np.full(n, k)
    if calls is not None:          # between-call fits: their own deviance and free mean parameters
        on = calls["fitted"]
        deviance = np.where(on, calls["deviance"], deviance)
        n_free = np.where(on, calls["n_free"], n_free)
        k_used = np.where(on, k + 1, k)
    df = n_h - n_free
    gof = np.where(df > 0, stats.chi2.sf(deviance, np.maximum(df, 1)), np.nan)
    reasons = reasons.copy()
    fitted = reasons == ""
    failed = fitted & ~(np.isfinite(ll) & conv & np.isfinite(theta).all(1))
    reasons[failed] = "optimizer did not converge"
    quality = np.where(reasons == "", "good", "failed").astype(object)
    theta = theta.copy()
    theta[reasons != ""] = np.nan
    se[reasons != ""] = np.nan
    ll = np.where(reasons == "", ll, np.nan)
    live = reasons == ""
    free_mask = (theta > lo) & (theta < hi)
    bad_se = live & (free_mask & ~np.isfinite(se)).any(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = se[:, 0] / np.abs(theta[:, 0])
    bad_rel = live & ~bad_se & (rel > rule.max_rel_stderr)
    lack = live & (gof < rule.gof_alpha)
    lower, upper = lower.copy(), upper.copy()
    lower[~live], upper[~live] = np.nan, np.nan
    rules = [(lack, f"lack of fit (p < {rule.gof_alpha:g})", True),
             (bad_rel, f"relative stderr of {model.params[0]} > {rule.max_rel_stderr:g}", True),
             (bad_se, "a free parameter has no finite stderr", True)]
    rules += _parameter_rules(model, live, theta, lower, upper)
    if calls is not None:
        rules += _call_rules(calls, live, r.calls is not None)
    for mask, text, bad in rules:
        reasons[mask] = np.where(reasons[mask] == "", text, reasons[mask].astype(str) + "; " + text)
        if bad:
            quality[mask] = "bad"
    data = {"qubit": r.qubits.astype("int64")}
    for j, p in enumerate(model.params):
        data[p] = theta[:, j]
    for j, p in enumerate(model.params):
        data[f"{p}_stderr"] = se[:, j]
    for j, p in enumerate(model.params):
        data[f"{p}_lo"] = lower[:, j]
        data[f"{p}_hi"] = upper[:, j]
    if calls is not None:
        fitted_calls = live & calls["fitted"]
        for col, key in (("sigma_call", "sigma"), ("sigma_call_stderr", "se"), ("sigma_call_lo", "lo"),
                         ("sigma_call_hi", "hi")):
            data[col] = np.where(fitted_calls, calls[key], np.nan)
        data.update(sigma_call_identified=fitted_calls, dispersion_p=calls["p"], dispersion_df=calls["df"])
    cov[reasons != ""] = np.nan
    for i, a in enumerate(model.params):
        for j in range(i + 1, k):
            data[f"cov_{a}_{model.params[j]}"] = cov[:, i, j]
    data.update(loglik=ll, deviance=np.where(live, deviance, np.nan), df=df.astype("int64"),
                gof_pvalue=np.where(live, gof, np.nan), aic=2 * k_used - 2 * ll,
                bic=k_used * np.log(np.maximum(reads, 1)) - 2 * ll, n_reads=reads.astype("int64"),
                n_h=n_h.astype("int64"), converged=conv, iterations=iters.astype("int64"),
                quality=quality.astype(str), reason=reasons.astype(str))
    return pd.DataFrame(data)


def _parameter_rules(model: Model, live, theta, lower, upper) -> list[tuple[np.ndarray, str, bool]]:
    """Per parameter: ``(mask, reason, bad)`` for an unbounded interval (bad), an estimate on its
    bound and an interval that reaches its bound (one-sided, not bad)."""
    lo, hi = np.array(model.lower), np.array(model.upper)
    rules = []
    for j, p in enumerate(model.params):
        unbounded = live & ((np.isinf(lower[:, j]) & np.isinf(lo[j]) & (lower[:, j] < 0))
                            | (np.isinf(upper[:, j]) & np.isinf(hi[j]) & (upper[:, j] > 0)))
        on = live & ~unbounded & ((theta[:, j] <= lo[j]) | (theta[:, j] >= hi[j]))
        reaches = live & ~unbounded & ~on & ((lower[:, j] <= lo[j]) | (upper[:, j] >= hi[j]))
        rules += [(unbounded, f"{p} not identified: interval unbounded", True),
                  (on, f"{p} on its bound: one-sided interval", False),
                  (reaches, f"{p} interval reaches its bound: one-sided", False)]
    return rules


def _call_rules(calls: dict[str, Any], live: np.ndarray, has_calls: bool) -> list[tuple[np.ndarray, str, bool]]:
    """``(mask, reason, bad)`` of the between-call component: why σ_call was not estimated (not
    identified, not converged, beyond its approximation), unbounded (bad) or one-sided."""
    n = len(live)
    on = live & calls["fitted"]
    sig, slo, shi = calls["sigma"], calls["lo"], calls["hi"]
    unb = on & np.isinf(shi)
    invalid = live & calls.get("invalid", np.zeros(n, bool))
    unconv = live & calls.get("unconverged", np.zeros(n, bool))
    return [(live & ~calls["fitted"] & has_calls & ~invalid & ~unconv,
             f"sigma_call not identified: {calls['why']}; intervals assume no between-call noise", False),
            (unconv, "sigma_call not identified: the between-call fit did not converge; intervals assume no "
                     "between-call noise", False),
            (invalid, f"sigma_call not identified: the between-call fit reached beta*sigma_call > "
                      f"{BETA_SIGMA_MAX:g}, beyond its approximation; intervals assume no between-call noise", False),
            (unb, "sigma_call not identified: interval unbounded", True),
            (on & ~unb & (sig <= 0), "sigma_call on its bound: one-sided interval", False),
            (on & ~unb & (sig > 0) & (slo <= 0), "sigma_call interval reaches its bound: one-sided", False)]


def _bootstrap(model, r, table, B, seed, max_iter, tol) -> None:
    live = np.flatnonzero(table["quality"].to_numpy() != "failed")
    for p in model.params:
        table[f"{p}_boot_stderr"] = np.nan
    if live.size == 0:
        return
    theta = table.loc[live, list(model.params)].to_numpy(float)
    p_fit = model.p_down(r.h, theta)
    nt = r.n_total[live]
    rng = np.random.default_rng(seed)
    draws = rng.binomial(np.tile(nt, (B, 1)), np.tile(p_fit, (B, 1))).astype(float)
    th_b, ll_b, cv_b, _ = maximize(model, r.h, draws, np.tile(nt, (B, 1)).astype(float),
                                   np.tile(theta, (B, 1)), max_iter=max_iter, tol=tol)
    th_b = th_b.reshape(B, live.size, -1)
    ok = cv_b.reshape(B, live.size)
    th_b = np.where(ok[..., None], th_b, np.nan)
    sd = np.nanstd(th_b, axis=0, ddof=1)
    for j, p in enumerate(model.params):
        table.loc[live, f"{p}_boot_stderr"] = sd[:, j]


def compare(data: Dataset | Response | dict[str, FitTable], models: Iterable[str] | None = None,
            **fit_kwargs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Compare models per qubit (AIC, likelihood ratio) and for the whole device.

    Likelihood-ratio tests use χ² with the difference in parameter count as degrees of freedom;
    when the extra parameters of the bigger model sit on a bound under the smaller one (γ, η, σ = 0)
    the true null law is a χ² mixture, so these p-values are conservative.

    Args:
        data: counts, or fit tables by model name (then no fitting is done).
        models: model names to compare; default: the registered models compared by default
            (:func:`qasa.models.compared_models`). Likelihood-ratio tests are run for the pairs of
            :func:`qasa.models.nested_pairs` present.
        **fit_kwargs: passed to :func:`fit`.

    Returns:
        ``(per_qubit, device)``: a DataFrame with ``aic_<model>``, ``loglik_<model>``, ``best`` and
        ``lr_pvalue_<small>_vs_<big>`` columns; and a dict with, per model, the summed AIC and the
        number of qubits it fits best, plus the device-level (summed) likelihood-ratio tests.
    """
    if isinstance(data, dict):
        tables = data
    else:
        r = _as_response(data)
        # one likelihood for every model: the binomial of the summed counts (the between-call
        # component exists for qasa only, and its log-likelihood is not on the same footing)
        fit_kwargs.setdefault("between_calls", False)
        tables = {m: fit(r, m, **fit_kwargs) for m in (compared_models() if models is None else models)}
    names = list(tables)
    if not names:
        raise ValueError("compare needs at least one model")
    per = pd.DataFrame({"qubit": tables[names[0]].table["qubit"].to_numpy()})
    for m in names:
        t = tables[m].table.set_index("qubit")
        per[f"loglik_{m}"] = t.loc[per["qubit"], "loglik"].to_numpy()
        per[f"aic_{m}"] = t.loc[per["qubit"], "aic"].to_numpy()
    aic = per[[f"aic_{m}" for m in names]].to_numpy(float)
    has = np.isfinite(aic).any(1)
    best = np.where(has, np.array(names, dtype=object)[np.argmin(np.where(np.isfinite(aic), aic, np.inf), 1)], None)
    per["best"] = best
    device: dict[str, Any] = {"models": {}, "tests": []}
    complete = np.isfinite(aic).all(1)
    for m in names:
        device["models"][m] = {"aic_total": float(np.nansum(np.where(complete, per[f"aic_{m}"], np.nan))),
                               "best_for_qubits": int((per["best"] == m).sum())}
    for small, big in nested_pairs():
        if small in tables and big in tables:
            dk = tables[big].model.num_params - tables[small].model.num_params
            lr = np.maximum(2 * (per[f"loglik_{big}"] - per[f"loglik_{small}"]).to_numpy(float), 0)
            per[f"lr_pvalue_{small}_vs_{big}"] = stats.chi2.sf(lr, dk)
            total = float(np.nansum(np.where(complete, lr, np.nan)))
            n_used = int((complete & np.isfinite(lr)).sum())
            device["tests"].append({"small": small, "big": big, "lr_total": total, "df": dk * n_used,
                                    "pvalue": float(stats.chi2.sf(total, max(dk * n_used, 1))),
                                    "qubits_rejecting_small_at_0.01": int((per[f"lr_pvalue_{small}_vs_{big}"] < 0.01).sum())})
    device["qubits_compared"] = int(complete.sum())
    # with no qubit fitted by every model there is nothing to compare: no preferred model
    device["preferred"] = (min(names, key=lambda m: device["models"][m]["aic_total"]) if complete.any() else None)
    if not complete.any():
        for m in names:
            device["models"][m]["aic_total"] = None
    return per, device

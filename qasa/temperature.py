r"""The device's effective temperature as D-Wave defines it, with an honest uncertainty.

Definition
    ``dwave.system.temperatures.fast_effective_temperature`` programs every qubit with its own
    field drawn uniformly from the window ``|h| ≤ 1/6.1`` (≈ 0.164, the single-qubit freeze-out
    temperature of an Advantage processor), reads the qubits once per read, and solves the
    maximum-(pseudo)likelihood equation of the classical Boltzmann law of uncoupled spins,
    ``P(s = −1 | h) = (1 + tanh βh) / 2``, pooled over all qubits and reads; ``T_eff = 1/β``.
    The window keeps the fit in the linear-response (small-|h|) limit, where saturation (γ),
    field noise (η) and bias (b) hardly change the pooled slope (DESIGN.md §3, §6).

    :func:`effective_temperature` applies the same estimator to the counts of an assessment: the
    h values of the protocol that fall in the same window, in the *programmed* frame (the field
    each qubit was actually given and the spin it actually returned, as in D-Wave's function,
    which applies no gauges), all qubits pooled. For counts ``n_ij`` of −1 out of ``N_ij`` reads
    of qubit ``i`` at field ``x_j`` the score equation is::

        Σ_ij N_ij x_j tanh(β x_j) = Σ_ij x_j (2 n_ij − N_ij)

    (monotone in β, solved by Brent's method), with expected information
    ``I = Σ_ij N_ij x_j² sech²(β x_j)``.

Uncertainty: two errors that answer two questions
    *Measurement error* — how far would a repeat run on this device (same qubits, fresh reads,
    fresh gauges, fresh programmings) scatter? Each call is one programming, and its reads share
    that programming's field offsets and the flux noise of its moment (DESIGN.md §7), so the
    independent units are calls, not reads. With the score of call ``c`` (the rows of its qubits
    whose programmed field lies in the window)::

        U_c = Σ_i x_ic (2 n_ic − N_ic − N_ic tanh(β̂ x_ic))

    calls are grouped into units (a call with its antithetic gauge partner: together they do not
    depend on the gauge drawn) and units into strata of equal nominal field
    (:func:`qasa.device.call_units`). Within a stratum the units are exchangeable, so the stratified
    cluster-robust (sandwich) variance is::

        V = Σ_s m_s/(m_s − 1) Σ_{u ∈ s} (U_u − Ū_s)²,   Var(β̂) = V / I²

    with ``df = Σ_s (m_s − 1)`` degrees of freedom (Student-t intervals). The qubits' differences do
    not enter: a repeat run has the same qubits. The strata of the largest |x| carry most of ``V``,
    so a plain sum has far fewer effective degrees of freedom than ``df`` (z-scores of repeat runs
    with sd 1.26–1.8 where 1 is right); instead each stratum gives a dispersion
    ``φ_s = m_s/(m_s − 1) Σ_u (U_u − Ū_s)² / B_s`` over its binomial variance
    ``B_s = Σ N x² sech²(β̂x)``, and ``V = φ̄ Σ_s B_s`` with ``φ̄`` their mean weighted by
    ``m_s − 1`` (strata with a single unit get ``φ̄`` too). With no stratum of two units
    (one call per field value, or a :class:`~qasa.dataset.Response`, which has no calls) the
    measurement error is not estimable and is NaN, with the reason in ``measurement_note``.

    *Population error* — the qubits as a sample from a population of qubits (what another set of
    qubits of the same kind would give). Qubits differ (β, b, γ, η vary across the device), so
    the pooled counts are overdispersed with respect to one binomial curve; the population error is
    the cluster-robust error with the qubit as the cluster::

        U_i = Σ_j x_j (2 n_ij − N_ij − N_ij tanh(β̂ x_j)),   Var(β̂) = n/(n−1) Σ_i U_i² / I²

    ``bootstrap=B`` replaces it by a percentile bootstrap over qubits. (Before the measurement
    error existed this was the only error; over ten repeat runs of one heterogeneous device it was
    17.7× the runs' spread: it answers the other question.)

    ``T_eff_stderr``/``_lo``/``_hi`` and ``beta_eff_stderr``/``_lo``/``_hi`` hold the measurement
    error when it is estimable (``error == "measurement"``), else the population error
    (``error == "population"``); both are also kept under their own names. The interval of T_eff is
    the image of β's interval under 1/β.

Lack of fit
    ``deviance``/``df`` of the pooled counts against the fitted curve (does one tanh describe the
    device-average response in the window?) and ``dispersion`` = Pearson χ²/df over the
    (qubit × h) cells (how heterogeneous are the qubits?). ``design_effect`` is the ratio of the
    population (qubit-cluster) variance to the naive binomial one. With ``h_window=None`` the whole h grid is used: that is the
    old "pooled Gibbs" fit, whose deviance/df is huge on a QASA device because saturation and
    field noise bend the response at large |h| — it is not D-Wave's T_eff and is reported only
    with its lack-of-fit.

The per-qubit QASA β (each qubit's own freeze-out β from its QASA fit) is a different quantity:
:func:`qubit_beta_distribution` summarizes its spread over the device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from qasa.dataset import Dataset, Response

__all__ = ["FAST_H_WINDOW", "EffectiveTemperature", "effective_temperature", "qubit_beta_distribution", "quick",
           "quick_calls", "QUICK_STEP"]

#: The default h window of ``dwave.system.temperatures.fast_effective_temperature`` (±1/6.1).
FAST_H_WINDOW: tuple[float, float] = (-1 / 6.1, 1 / 6.1)


@dataclass(frozen=True)
class EffectiveTemperature:
    """The effective temperature of a device (see the module docstring).

    Attributes:
        T_eff: effective temperature, units of h (1/β_eff).
        T_eff_stderr: its standard error (delta method on β_eff's): the measurement error when
            ``error == "measurement"``, else the population error.
        T_eff_lo, T_eff_hi: confidence interval of T_eff at ``level`` (the same error).
        beta_eff: 1/T_eff, units of 1/h.
        beta_eff_stderr: standard error of β_eff (the same error as ``T_eff_stderr``).
        beta_eff_lo, beta_eff_hi: confidence interval of β_eff at ``level``.
        naive_stderr: the binomial standard error of β_eff ``1/√I`` (ignores heterogeneity and
            between-call noise).
        design_effect: (population error / naive error)² of β_eff (qubit heterogeneity).
        level: confidence level of the intervals.
        h_window: the h window ``(lo, hi)`` used, or ``None`` for the whole grid.
        h_values: distinct programmed fields used.
        qubits: qubits with reads in the window.
        reads: reads used (summed over qubits and fields).
        deviance, df, deviance_per_df: lack of fit of the pooled counts.
        dispersion: Pearson χ²/df over (qubit × h) cells.
        method: one-paragraph description of the estimate.
        error: which error ``T_eff_stderr`` and ``beta_eff_stderr`` are: ``"measurement"`` or
            ``"population"``.
        T_eff_measurement_stderr, T_eff_measurement_lo, T_eff_measurement_hi: the measurement error
            of this device's T_eff (what a repeat run on the same device would scatter by, between-call
            noise included; calls as clusters) and its interval; NaN when not estimable.
        beta_eff_measurement_stderr: the same for β_eff.
        measurement_df: degrees of freedom of the measurement error (units minus strata).
        measurement_units: independent units (calls or antithetic call pairs) it rests on.
        measurement_dispersion: its variance over the binomial one (1: no noise beyond shots).
        measurement_note: why the measurement error is not estimable ("" when it is).
        T_eff_population_stderr, T_eff_population_lo, T_eff_population_hi: the population error
            (qubits as a sample from a population of qubits) and its interval.
        beta_eff_population_stderr: the same for β_eff.
    """

    T_eff: float
    T_eff_stderr: float
    T_eff_lo: float
    T_eff_hi: float
    beta_eff: float
    beta_eff_stderr: float
    beta_eff_lo: float
    beta_eff_hi: float
    naive_stderr: float
    design_effect: float
    level: float
    h_window: tuple[float, float] | None
    h_values: int
    qubits: int
    reads: int
    deviance: float
    df: int
    deviance_per_df: float
    dispersion: float
    method: str
    error: str = "population"
    T_eff_measurement_stderr: float = math.nan
    T_eff_measurement_lo: float = math.nan
    T_eff_measurement_hi: float = math.nan
    beta_eff_measurement_stderr: float = math.nan
    measurement_df: int = 0
    measurement_units: int = 0
    measurement_dispersion: float = math.nan
    measurement_note: str = ""
    T_eff_population_stderr: float = math.nan
    T_eff_population_lo: float = math.nan
    T_eff_population_hi: float = math.nan
    beta_eff_population_stderr: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the h window as a list)."""
        out = asdict(self)
        out["h_window"] = None if self.h_window is None else list(self.h_window)
        return out


def _pooled_beta(x: np.ndarray, n_down: np.ndarray, n_total: np.ndarray) -> float:
    """Root of the pooled Gibbs score equation (``inf`` if every read is aligned with its field)."""
    Nt = n_total.sum(0).astype(float)
    y = float((x * (2.0 * n_down.sum(0) - Nt)).sum())
    top = float((Nt * np.abs(x)).sum())
    if y >= top:
        return math.inf
    if y <= -top:
        return -math.inf

    def score(beta: float) -> float:
        return float((Nt * x * np.tanh(beta * x)).sum()) - y

    hi = 1.0
    while score(hi) < 0:
        hi *= 2.0
    lo = -1.0
    while score(lo) > 0:
        lo *= 2.0
    return float(optimize.brentq(score, lo, hi, xtol=1e-14, rtol=1e-13, maxiter=500))


def effective_temperature(data: Dataset | Response, h_window: tuple[float, float] | None = FAST_H_WINDOW, *,
                          level: float = 0.95, bootstrap: int = 0, seed: int | None = 0) -> EffectiveTemperature:
    """Estimate T_eff as ``fast_effective_temperature`` defines it (see the module docstring).

    Args:
        data: a :class:`~qasa.dataset.Dataset` (its programmed-frame response is used, and its calls
            give the measurement error) or a :class:`~qasa.dataset.Response` (population error only).
        h_window: programmed fields used, ``(lo, hi)`` inclusive; default ±1/6.1 as D-Wave's
            function; ``None``: every h (the whole-grid pooled fit, with its lack of fit).
        level: confidence level of the intervals.
        bootstrap: number of bootstrap resamples of the qubits for the population error (0: sandwich).
        seed: seed of the bootstrap.

    Returns:
        An :class:`EffectiveTemperature` record.

    Raises:
        ValueError: if ``level`` is outside (0, 1), the window is empty or not increasing, or no
            qubit has reads at a nonzero field inside the window.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    if bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r} must be a non-negative integer")
    r = data.response() if isinstance(data, Dataset) else data
    x, nd, nt = _window_counts(r, h_window)
    beta = _pooled_beta(x, nd, nt)
    n = len(nd)
    Nt = nt.sum(0)
    z = stats.norm.ppf(0.5 + level / 2)
    pooled = _pooled_fit(beta, x, nd, nt)
    se, naive, deviance, df = pooled["se"], pooled["naive"], pooled["deviance"], pooled["df"]
    b_lo, b_hi = beta - z * se, beta + z * se
    if bootstrap and math.isfinite(beta):
        se, b_lo, b_hi = _bootstrap_beta(x, nd, nt, level, bootstrap, seed)
    window = None if h_window is None else (float(h_window[0]), float(h_window[1]))
    meas = _measurement_error(data, beta, pooled["info"], window, level)
    T = 1 / beta if beta != 0 else math.inf
    T_lo, T_hi = _t_interval(b_lo, b_hi)
    method, fields = _errors(beta, meas, se, b_lo, b_hi, window, n, bootstrap)
    T_mlo, T_mhi = _t_interval(meas["lo"], meas["hi"]) if math.isfinite(meas["se"]) else (math.nan, math.nan)
    return EffectiveTemperature(
        T_eff=T, beta_eff=beta, naive_stderr=float(naive),
        design_effect=float((se / naive) ** 2) if naive and math.isfinite(naive) else math.nan,
        level=level, h_window=window, h_values=int((Nt > 0).sum()), qubits=n, reads=int(Nt.sum()),
        deviance=deviance, df=df, deviance_per_df=deviance / df if df > 0 else math.nan,
        dispersion=pooled["dispersion"], method=method,
        T_eff_measurement_stderr=_t_se(meas["se"], beta), T_eff_measurement_lo=T_mlo, T_eff_measurement_hi=T_mhi,
        beta_eff_measurement_stderr=float(meas["se"]), measurement_df=int(meas["df"]),
        measurement_units=int(meas["units"]), measurement_dispersion=float(meas["dispersion"]),
        measurement_note=meas["note"], T_eff_population_stderr=_t_se(se, beta), T_eff_population_lo=T_lo,
        T_eff_population_hi=T_hi, beta_eff_population_stderr=float(se), **fields)


def _window_counts(r: Response, h_window: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fields ``x`` in the window and the counts ``(n_down, n_total)`` there of the qubits with
    reads at a nonzero field in it (ValueError when the window is not increasing or no qubit has)."""
    h = np.asarray(r.h, float)
    if h_window is None:
        cols = np.ones(len(h), bool)
    else:
        lo, hi = (float(v) for v in h_window)
        if not lo < hi:
            raise ValueError(f"h_window={h_window!r} must be (lo, hi) with lo < hi")
        cols = (h >= lo - 1e-12) & (h <= hi + 1e-12)
    nd, nt = r.n_down[:, cols].astype(float), r.n_total[:, cols].astype(float)
    x = h[cols]
    rows = nt[:, x != 0].sum(1) > 0
    nd, nt = nd[rows], nt[rows]
    if not rows.any():
        where = "the whole grid" if h_window is None else f"the h window [{h_window[0]:.4g}, {h_window[1]:.4g}]"
        span = f"[{h.min():.4g}, {h.max():.4g}]" if h.size else "none"
        raise ValueError(f"no reads at a nonzero h in {where}; the data's h values span {span}")
    return x, nd, nt


def _pooled_fit(beta: float, x: np.ndarray, nd: np.ndarray, nt: np.ndarray) -> dict[str, Any]:
    """At the pooled β: the expected information ``info``, the population (qubit-cluster sandwich)
    error ``se``, the naive binomial error, the deviance of the pooled counts with its ``df`` and
    Pearson's ``dispersion`` over the (qubit × h) cells (module docstring, "Lack of fit")."""
    Nt, Nd = nt.sum(0), nd.sum(0)
    n = len(nd)
    df = int((Nt > 0).sum()) - 1
    if not math.isfinite(beta):
        return {"info": math.nan, "se": math.nan, "naive": math.nan, "deviance": math.nan, "df": df,
                "dispersion": math.nan}
    t = np.tanh(beta * x)
    info = float((Nt * x**2 * (1 - t**2)).sum())
    u = (x * (2 * nd - nt - nt * t)).sum(1)
    se = math.sqrt(n / max(n - 1, 1) * float((u**2).sum())) / info if info > 0 else math.nan
    naive = 1 / math.sqrt(info) if info > 0 else math.nan
    p = np.clip(0.5 * (1 + t), 1e-15, 1 - 1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = 2 * (np.where(Nd > 0, Nd * np.log(Nd / (Nt * p)), 0)
                   + np.where(Nt - Nd > 0, (Nt - Nd) * np.log((Nt - Nd) / (Nt * (1 - p))), 0))
        cells = nt > 0
        chi2 = np.where(cells, (nd - nt * p) ** 2 / (nt * p * (1 - p)), 0.0).sum()
    return {"info": info, "se": se, "naive": naive, "deviance": float(dev[Nt > 0].sum()), "df": df,
            "dispersion": float(chi2 / max(int(cells.sum()) - 1, 1))}


def _bootstrap_beta(x, nd, nt, level: float, bootstrap: int, seed: int | None) -> tuple[float, float, float]:
    """Percentile bootstrap of the pooled β over qubits: ``(se, lo, hi)``."""
    n = len(nd)
    rng = np.random.default_rng(seed)
    reps = np.empty(bootstrap)
    for k in range(bootstrap):
        pick = rng.integers(0, n, n)
        reps[k] = _pooled_beta(x, nd[pick], nt[pick])
    reps = reps[np.isfinite(reps)]
    se = float(reps.std(ddof=1))
    b_lo, b_hi = (float(v) for v in np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2]))
    return se, b_lo, b_hi


def _t_interval(lo_b: float, hi_b: float) -> tuple[float, float]:
    """The interval of T = 1/β from β's interval (an end at β ≤ 0: NaN below, inf above)."""
    return (1 / hi_b if hi_b > 0 else math.nan), (1 / lo_b if lo_b > 0 else math.inf)


def _t_se(se_b: float, beta: float) -> float:
    """The standard error of T = 1/β from β's (delta method)."""
    return se_b / beta / beta if math.isfinite(beta) and beta != 0 else math.nan     # beta**2 overflows at h ≈ 1e-300


def _errors(beta, meas, se, b_lo, b_hi, window, n: int, bootstrap: int) -> tuple[str, dict[str, Any]]:
    """The ``method`` text and the headline error fields of :class:`EffectiveTemperature`: the
    measurement error when it is estimable, else the population error (module docstring)."""
    where = ("all h values (whole-grid pooled Gibbs fit; not D-Wave's T_eff when the response saturates)"
             if window is None else f"programmed fields in [{window[0]:.4g}, {window[1]:.4g}]")
    pop = (f"percentile bootstrap over qubits ({bootstrap} resamples)" if bootstrap else
           "cluster-robust (sandwich) error with the qubit as the cluster")
    method = (f"Pooled maximum-likelihood Gibbs fit P(-1|h) = (1 + tanh βh)/2 over {where}, all {n} qubits, "
              "as dwave.system.temperatures.fast_effective_temperature defines T_eff = 1/β. ")
    if math.isfinite(meas["se"]):
        m_lo, m_hi = meas["lo"], meas["hi"]
        T_mlo, T_mhi = _t_interval(m_lo, m_hi)
        fields = dict(error="measurement", T_eff_stderr=_t_se(meas["se"], beta), T_eff_lo=T_mlo, T_eff_hi=T_mhi,
                      beta_eff_stderr=meas["se"], beta_eff_lo=m_lo, beta_eff_hi=m_hi)
        method += (f"Error: the measurement error of this device's T_eff, ±{_t_se(meas['se'], beta):.2g} (what a "
                   f"repeat run on the same qubits would scatter by, between-call noise included: stratified sandwich "
                   f"over {meas['units']} call units, {meas['df']} df, {meas['dispersion']:.2g}× the binomial "
                   f"variance). Population error (the qubits as a sample from a population of qubits, {pop}): "
                   f"±{_t_se(se, beta):.2g}.")
    else:
        T_lo, T_hi = _t_interval(b_lo, b_hi)
        fields = dict(error="population", T_eff_stderr=_t_se(se, beta), T_eff_lo=T_lo, T_eff_hi=T_hi,
                      beta_eff_stderr=float(se), beta_eff_lo=float(b_lo), beta_eff_hi=float(b_hi))
        method += (f"Error: the population error (the qubits as a sample from a population of qubits, {pop}); "
                   f"the measurement error of this device's T_eff is not estimable: {meas['note']}.")
    return method, fields


def _call_scores(data: Dataset, beta: float, window: tuple[float, float] | None,
                 ncalls: int) -> tuple[np.ndarray, np.ndarray]:
    """Per call: the score of β_eff and its binomial information over the call's reads in the window,
    summed as the counts stream by (in row order: the sums of one pass over the whole table)."""
    score, binom = np.zeros(ncalls), np.zeros(ncalls)
    for b in data.batches(gauges=True):
        g = b.gauge.astype(float)
        x = g * b.h + 0.0
        down = np.where(g < 0, b.n_up.astype(float), b.n_down.astype(float))
        N = (b.n_down + b.n_up).astype(float)
        inside = np.ones(len(x), bool) if window is None else (x >= window[0] - 1e-12) & (x <= window[1] + 1e-12)
        inside &= x != 0
        t = np.tanh(beta * x)
        np.add.at(score, b.call, np.where(inside, x * (2 * down - N - N * t), 0.0))
        np.add.at(binom, b.call, np.where(inside, N * x**2 * (1 - t**2), 0.0))
    return score, binom


def _measurement_error(data: Dataset | Response, beta: float, info: float, window: tuple[float, float] | None,
                       level: float) -> dict[str, Any]:
    """Stratified call-cluster sandwich error of β_eff (module docstring): ``se``, ``lo``, ``hi``,
    ``df``, ``units``, ``dispersion`` and ``note`` (why not, when ``se`` is NaN)."""
    out: dict[str, Any] = {"se": math.nan, "lo": math.nan, "hi": math.nan, "df": 0, "units": 0,
                           "dispersion": math.nan, "note": ""}
    if not isinstance(data, Dataset):
        out["note"] = "the counts have no calls (a Response), so between-call noise cannot be measured"
        return out
    if not (math.isfinite(beta) and info > 0):
        out["note"] = "β_eff is not finite"
        return out
    from qasa.device import call_units

    units = call_units(data)
    if units is None:
        out["note"] = "no counts"
        return out
    names, groups, _ = units
    score, binom = _call_scores(data, beta, window, len(names))
    phis, dfs = [], []
    B_all = 0.0
    used = 0
    for group in groups:
        U = np.array([score[u].sum() for u in group])
        Bu = np.array([binom[u].sum() for u in group])
        keep = Bu > 0
        U, Bu = U[keep], Bu[keep]
        used += len(U)
        B_all += float(Bu.sum())
        if len(U) >= 2:
            phis.append(len(U) / (len(U) - 1) * float(((U - U.mean()) ** 2).sum()) / float(Bu.sum()))
            dfs.append(len(U) - 1)
    df = int(sum(dfs))
    if df == 0:
        out["note"] = ("no field value in the window has two independent calls (or antithetic call pairs), so "
                       "between-call noise cannot be told from the qubits' differences")
        out["units"] = used
        return out
    phi = float(np.dot(dfs, phis) / df)
    V = phi * B_all
    se = math.sqrt(V) / info
    q = stats.t.ppf(0.5 + level / 2, df)
    out.update(se=se, lo=beta - q * se, hi=beta + q * se, df=df, units=used, dispersion=phi)
    return out


def qubit_beta_distribution(fits, param: str = "beta") -> dict[str, Any]:
    """The distribution of the per-qubit β over good qubits (not T_eff: see the module docstring).

    Returns:
        ``median``, ``q25``, ``q75``, ``mean``, ``sd`` (observed spread of the estimates),
        ``sd_true`` (spread with the estimation noise removed, :func:`qasa.device.reliability`),
        ``reliability``, ``qubits``, ``T_of_median`` (1/median β) and a ``label``.
    """
    from qasa.device import reliability

    good = fits.table[fits.table["quality"] == "good"]
    v = good[param].to_numpy(float)
    v = v[np.isfinite(v)]
    rel = reliability(fits, [param], bootstrap=0)
    row = rel.loc[param] if param in rel.index else None
    med = float(np.median(v)) if v.size else math.nan
    return {"label": f"per-qubit {fits.model.name} {param} (each qubit's own fit; not the device T_eff)",
            "qubits": int(v.size), "median": med,
            "q25": float(np.quantile(v, 0.25)) if v.size else math.nan,
            "q75": float(np.quantile(v, 0.75)) if v.size else math.nan,
            "mean": float(v.mean()) if v.size else math.nan,
            "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "sd_true": float(row["sd_true"]) if row is not None else math.nan,
            "reliability": float(row["reliability"]) if row is not None else math.nan,
            "T_of_median": 1 / med if med > 0 else math.nan}


# -- a quick temperature: D-Wave's design through qasa's store and estimator ---------------------------
#: Fields of the quick design are multiples of this step (h units): D-Wave draws them from a continuous
#: uniform law; a 0.001 grid (329 values in ±1/6.1) keeps the response table small and changes nothing
#: the estimator can see.
QUICK_STEP = 0.001


def quick_calls(qubits, *, num_reads: int, programmings: int, seed: int) -> list:
    """The calls of the quick design: D-Wave's ``fast_effective_temperature`` design, symmetrized.

    Programming ``2k`` gives every qubit its own field drawn uniformly from ``FAST_H_WINDOW`` (seeded by
    ``(seed, k)``, on the :data:`QUICK_STEP` grid); programming ``2k + 1`` sends the same fields under
    the all-flipped spin-reversal gauge (each qubit programmed at minus its field, its answer flipped
    back), so a static bias cancels to first order in the pooled fit. Ids ``t001-c0000k``.
    """
    from qasa.protocol import Call, round_call_id, round_name

    n = len(qubits)
    calls = []
    for c in range(programmings):
        k, flipped = divmod(c, 2)
        u = np.random.default_rng([int(seed), 7, k]).uniform(*FAST_H_WINDOW, size=n)
        h = np.clip(np.round(u / QUICK_STEP) * QUICK_STEP, *FAST_H_WINDOW)
        flips = np.full(n, -1 if flipped else 1, dtype=np.int8)
        calls.append(Call(round_call_id(round_name("t", 1), c), 2_000_000 + c, -1, h, flipped, int(num_reads), flips))
    return calls


def quick(sampler, out=None, *, num_reads: int = 1000, programmings: int = 2, seed: int | None = None,
          qubits=None, max_qpu_seconds: float | None = None, level: float = 0.95) -> EffectiveTemperature:
    """The device's T_eff from one or two programmings, as ``fast_effective_temperature`` measures it.

    D-Wave's function programs every qubit with its own field uniform in ``|h| ≤ 1/6.1`` once and fits
    the pooled Boltzmann law (module docstring). ``quick`` runs that design through qasa's runner and
    store (:func:`quick_calls`: symmetrized with the spin-reversal gauge when ``programmings ≥ 2``;
    journaled, resumable, budgeted, ``out=None`` keeps it in memory) and applies
    :func:`effective_temperature` to the counts: the same point estimate as D-Wave's on the same
    reads, and both errors — the population error (qubits as clusters) and the measurement error
    (programmings as clusters; with so few programmings its degrees of freedom are few, and the
    record says when it falls back to the population error).

    Args:
        sampler: any :class:`dimod.Sampler` with a nodelist (the virtual QPU, a QPU, ``sa``).
        out: dataset directory, or None.
        num_reads: reads per programming, 1–100 000.
        programmings: 1 (D-Wave's design exactly) to 10; default 2 (one symmetrized pair).
        seed: seed of the fields (default: a fresh one, recorded).
        qubits: the qubits to use (default every active qubit).
        max_qpu_seconds: QPU-time budget.
        level: confidence level of the intervals.

    Raises:
        ProtocolError: a bad option, named with its allowed range (before any call).
    """
    from qasa.errors import ProtocolError
    from qasa.protocol import Protocol
    from qasa.runner import run

    for name, value, lo, hi in (("num_reads", num_reads, 1, 100_000), ("programmings", programmings, 1, 10)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise ProtocolError(f"{name}={value!r} must be an integer in [{lo}, {hi}]")
    from qasa.backend import as_backend
    from qasa.store import DatasetStore

    backend = as_backend(sampler)
    store = DatasetStore(out) if out is not None else None
    stored = (store.metadata().get("protocol") or {}) if store is not None and store.exists else {}
    if seed is None and stored.get("seed") is not None:       # a resume keeps the stored seed and qubits
        seed, qubits = stored["seed"], stored.get("qubits")
    protocol = Protocol(h_values=(0.0,), reads_per_h=int(num_reads), reads_per_call=int(num_reads),
                        spin_reversal=False, seed=seed, qubits=None if qubits is None else tuple(int(q) for q in qubits))
    nodes = protocol.qubits if protocol.qubits is not None else backend.nodelist
    if not nodes:
        raise ProtocolError("this sampler has no nodelist; give the qubits explicitly")
    protocol = protocol.resolved(nodes)
    calls = quick_calls(protocol.qubits, num_reads=int(num_reads), programmings=int(programmings),
                        seed=int(protocol.seed))
    ds = run(protocol, backend, out, calls=calls, max_qpu_seconds=max_qpu_seconds)
    ds.metadata["design"] = "quick-temperature"
    if store is not None:
        with store.writing():
            store.update_metadata(design="quick-temperature")
    return effective_temperature(ds, level=level)

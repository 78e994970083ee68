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

Uncertainty
    Qubits differ (β, b, γ, η vary across the device), so the pooled counts are overdispersed
    with respect to one binomial curve and the naive error ``1/√I`` is too small. The reported
    standard error of β is the cluster-robust (sandwich) error with the qubit as the cluster::

        U_i = Σ_j x_j (2 n_ij − N_ij − N_ij tanh(β̂ x_j)),   Var(β̂) = n/(n−1) Σ_i U_i² / I²

    It is valid whatever the qubit-to-qubit heterogeneity; ``bootstrap=B`` adds a percentile
    bootstrap over qubits. The interval of T_eff is the image of β's interval under 1/β.

Lack of fit
    ``deviance``/``df`` of the pooled counts against the fitted curve (does one tanh describe the
    device-average response in the window?) and ``dispersion`` = Pearson χ²/df over the
    (qubit × h) cells (how heterogeneous are the qubits?). ``design_effect`` is the ratio of the
    sandwich to the naive variance. With ``h_window=None`` the whole h grid is used: that is the
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

__all__ = ["FAST_H_WINDOW", "EffectiveTemperature", "effective_temperature", "qubit_beta_distribution"]

#: The default h window of ``dwave.system.temperatures.fast_effective_temperature`` (±1/6.1).
FAST_H_WINDOW: tuple[float, float] = (-1 / 6.1, 1 / 6.1)


@dataclass(frozen=True)
class EffectiveTemperature:
    """The effective temperature of a device (see the module docstring).

    Attributes:
        T_eff: effective temperature, units of h (1/β_eff).
        T_eff_stderr: its standard error (delta method on the sandwich error of β_eff).
        T_eff_lo, T_eff_hi: confidence interval of T_eff at ``level``.
        beta_eff: 1/T_eff, units of 1/h.
        beta_eff_stderr: cluster-robust (sandwich, or bootstrap over qubits) standard error.
        beta_eff_lo, beta_eff_hi: confidence interval of β_eff at ``level``.
        naive_stderr: the binomial standard error of β_eff ``1/√I`` (ignores heterogeneity).
        design_effect: (beta_eff_stderr / naive_stderr)².
        level: confidence level of the intervals.
        h_window: the h window ``(lo, hi)`` used, or ``None`` for the whole grid.
        h_values: distinct programmed fields used.
        qubits: qubits with reads in the window.
        reads: reads used (summed over qubits and fields).
        deviance, df, deviance_per_df: lack of fit of the pooled counts.
        dispersion: Pearson χ²/df over (qubit × h) cells.
        method: one-paragraph description of the estimate.
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
        data: a :class:`~qasa.dataset.Dataset` (its programmed-frame response is used) or a
            :class:`~qasa.dataset.Response`.
        h_window: programmed fields used, ``(lo, hi)`` inclusive; default ±1/6.1 as D-Wave's
            function; ``None``: every h (the whole-grid pooled fit, with its lack of fit).
        level: confidence level of the intervals.
        bootstrap: number of bootstrap resamples of the qubits (0: sandwich error only).
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
    beta = _pooled_beta(x, nd, nt)
    n = int(rows.sum())
    Nt, Nd = nt.sum(0), nd.sum(0)
    z = stats.norm.ppf(0.5 + level / 2)
    if math.isfinite(beta):
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
        deviance = float(dev[Nt > 0].sum())
        df = int((Nt > 0).sum()) - 1
        dispersion = float(chi2 / max(int(cells.sum()) - 1, 1))
    else:
        se = naive = deviance = dispersion = math.nan
        df = int((Nt > 0).sum()) - 1
    b_lo, b_hi = beta - z * se, beta + z * se
    if bootstrap and math.isfinite(beta):
        rng = np.random.default_rng(seed)
        reps = np.empty(bootstrap)
        for k in range(bootstrap):
            pick = rng.integers(0, n, n)
            reps[k] = _pooled_beta(x, nd[pick], nt[pick])
        reps = reps[np.isfinite(reps)]
        se = float(reps.std(ddof=1))
        b_lo, b_hi = (float(v) for v in np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2]))
    T = 1 / beta if beta != 0 else math.inf
    T_lo = 1 / b_hi if b_hi > 0 else math.nan
    T_hi = 1 / b_lo if b_lo > 0 else math.inf
    window = None if h_window is None else (float(h_window[0]), float(h_window[1]))
    where = ("all h values (whole-grid pooled Gibbs fit; not D-Wave's T_eff when the response saturates)"
             if window is None else f"programmed fields in [{window[0]:.4g}, {window[1]:.4g}]")
    err = (f"percentile bootstrap over qubits ({bootstrap} resamples)" if bootstrap else
           "cluster-robust (sandwich) standard error with the qubit as the cluster, valid under "
           "qubit-to-qubit heterogeneity")
    method = (f"Pooled maximum-likelihood Gibbs fit P(-1|h) = (1 + tanh βh)/2 over {where}, all {n} qubits, "
              "as dwave.system.temperatures.fast_effective_temperature defines T_eff = 1/β; " + err + ".")
    return EffectiveTemperature(
        T_eff=T, T_eff_stderr=se / beta / beta if math.isfinite(beta) and beta != 0 else math.nan,
        T_eff_lo=T_lo, T_eff_hi=T_hi, beta_eff=beta, beta_eff_stderr=float(se),
        beta_eff_lo=float(b_lo), beta_eff_hi=float(b_hi), naive_stderr=float(naive),
        design_effect=float((se / naive) ** 2) if naive and math.isfinite(naive) else math.nan,
        level=level, h_window=window, h_values=int((Nt > 0).sum()), qubits=n, reads=int(Nt.sum()),
        deviance=deviance, df=df, deviance_per_df=deviance / df if df > 0 else math.nan,
        dispersion=dispersion, method=method)


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

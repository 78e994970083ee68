r"""Drift over a run: per-call bias offsets, per-qubit b(t) trends and the device's flux-noise spectrum.

Every call is one programming of the device at one moment; a slowly varying flux offset (1/f flux
noise, uncorrected drift: DESIGN.md §7) shifts every read of a call by the same field. A fitted ``b``
is then the run average of the qubit's bias. This module returns data (plots take ``ax=None``).

Per-call offsets
    For qubit ``i`` in call ``c`` at programmed field ``x`` (the gauge applied; the qubit's own frame,
    in which a bias keeps its sign), with ``N`` reads of which ``n`` returned −1 and the qubit's fitted
    ``θ̂ = (β, b, γ, η)``, the bias of that call is estimated by one Fisher-scoring step from ``b̂``::

        m̂ = m(x; θ̂),  m' = ∂m/∂b (x; θ̂),  m_obs = (2n − N)/N
        b_ic = b̂_i + (m_obs − m̂) / m',        Var(b_ic) = (1 − m̂²) / (N m'²)   (binomial)

    Cells where ``m'`` carries little information (saturated responses) get a huge variance and so
    no weight below. Call times are the midpoints of the calls on the device's clock when every call
    records one (``device_time``: the virtual QPU's clock, SAPI's ``solved_on``), else the midpoints of
    the calls table's ``started``/``finished`` (the client's clock, :func:`call_clock`).

Per-qubit trend
    Weighted least squares of ``b_ic`` on time (weights ``1/Var(b_ic)``): the slope (h per hour) with a
    standard error scaled by ``√max(χ²/df, 1)`` (quasi-likelihood: between-call noise widens it), a
    two-sided p-value and the Benjamini–Hochberg q-value over qubits. A qubit *drifts* when
    ``q < fdr`` (default 0.01): its trend exceeds its interval after control of the false-discovery
    rate over all the qubits tested. ``b`` of the fit is the run average; its interval is the fit's.

Device spectrum
    Residual offsets ``r_ic = b_ic − b̂_i`` over call times; for each frequency ``f`` (log-spaced from
    3/T to 0.8× the Nyquist frequency of the median call spacing, leaving out frequencies within
    3/T of a sidelobe of the weights' spectral window: a grid protocol's h cycle gives the calls a
    periodic information, which would move the strong low-frequency power there) and qubit, a weighted least-squares fit
    of ``r`` on ``(1, cos 2πft, sin 2πft)`` gives amplitudes ``(a, s)`` and the periodogram
    ``P_i(f) = T (a² + s²) / 2`` (``T`` the span; a process with one-sided spectral density ``S``
    gives ``E P = S``; Lomb 1976, Scargle 1982, with weights), after removing each qubit's mean
    residual at each programmed field (the model's misfit there, which would repeat with the h
    cycle), with a Hann taper over the run and divided by the equivalent noise bandwidth of the
    weights. The device spectrum is the mean over
    qubits, and the model::

        S(f) = A² (f / 1 Hz)^(−α) + C

    (``A`` the flux-noise amplitude at 1 Hz in h/√Hz, ``α`` its exponent, ``C`` a white floor: the
    per-call estimation noise and per-programming errors) is fitted by least squares on log S.
    Intervals: percentile bootstrap over qubits (qubits' flux noise is independent). The spectrum is
    *not estimable* with fewer than :data:`MIN_CALLS` timed calls, a frequency range under a decade,
    or when the power-law term is not resolved above the floor; the record says which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from qasa.dataset import Dataset
from qasa.fitting import FitTable
from qasa.models import get_model

__all__ = ["call_offsets", "call_clock", "trends", "spectrum", "drift_summary", "mark_drifting", "plot_spectrum", "MIN_CALLS"]

#: Fewest timed calls for a spectrum.
MIN_CALLS = 32


def call_clock(data: Dataset) -> str:
    """Which clock places the calls: ``"device"`` when every call records its time on the solver's
    clock (``device_time``: the virtual QPU's clock, SAPI's ``solved_on``), else ``"client"`` (the
    midpoints of the client's ``started``/``finished``, which include queueing and network waits)."""
    calls = data.calls
    if len(calls) and "device_time" in calls and np.isfinite(calls["device_time"].to_numpy(float)).all():
        return "device"
    return "client"


def _call_times(data: Dataset) -> pd.Series:
    """Seconds from the first call to each call's midpoint, indexed by call id (NaN when unknown).

    On the device's clock when every call has one (:func:`call_clock`; the midpoint adds half the
    call's QPU access time), else the client's ``started``/``finished`` midpoints."""
    calls = data.calls
    if call_clock(data) == "device":
        t = calls["device_time"].to_numpy(float)
        if "qpu_access_time" in calls:
            t = t + 0.5e-6 * np.nan_to_num(calls["qpu_access_time"].to_numpy(float))
        return pd.Series(t - t.min(), index=calls["call_id"].astype(str).to_numpy())
    if not len(calls) or "started" not in calls:
        return pd.Series(dtype=float)
    start = pd.to_datetime(calls["started"], utc=True, errors="coerce", format="ISO8601")
    end = pd.to_datetime(calls["finished"], utc=True, errors="coerce", format="ISO8601") if "finished" in calls else start
    mid = start + (end.fillna(start) - start) / 2
    t = (mid - mid.min()).dt.total_seconds()
    return pd.Series(t.to_numpy(float), index=calls["call_id"].astype(str).to_numpy())


def call_offsets(data: Dataset, fits: FitTable) -> pd.DataFrame:
    """Per-call bias estimates of every good qubit (module docstring).

    Returns:
        One row per (call, qubit): ``call_id``, ``qubit``, ``t`` (s from the first call), ``h``
        (nominal field), ``x`` (programmed field), ``b_call``, ``b_call_var``, ``b_fit``.

    Raises:
        ValueError: if the model has no bias parameter ``b``.
    """
    model = get_model(fits.model.name)
    if "b" not in model.params:
        raise ValueError(f"model {model.name!r} has no bias parameter b; per-call offsets need one")
    good = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    c = data.counts
    keep = c["qubit"].isin(good.index).to_numpy()
    c = c[keep]
    g = data.gauges()[keep].astype(float)
    x = g * c["h"].to_numpy(float) + 0.0
    N = (c["n_down"] + c["n_up"]).to_numpy(float)
    down = np.where(g < 0, c["n_up"].to_numpy(float), c["n_down"].to_numpy(float))
    q = c["qubit"].to_numpy(np.int64)
    qubits = good.index.to_numpy(np.int64)
    qi = pd.Index(qubits).get_indexer(q)
    theta = good[list(model.params)].to_numpy(float)
    hv, hi = np.unique(x, return_inverse=True)
    j = model.params.index("b")
    eps = 1e-5
    tp, tm = theta.copy(), theta.copy()
    tp[:, j] += eps
    tm[:, j] -= eps
    m0 = 2 * model.p_down(hv, theta) - 1
    dm = (model.p_down(hv, tp) - model.p_down(hv, tm)) / eps        # 2 Δp / 2ε
    m_hat, slope = m0[qi, hi], dm[qi, hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        m_obs = (2 * down - N) / N
        b_call = theta[qi, j] + (m_obs - m_hat) / slope
        var = (1 - m_hat**2) / (N * slope**2)
    bad = ~(np.isfinite(b_call) & np.isfinite(var) & (var > 0) & (N > 0))
    b_call[bad], var[bad] = np.nan, np.inf
    times = _call_times(data)
    ids = c["call_id"].astype(str).to_numpy()
    t = times.reindex(ids).to_numpy(float) if len(times) else np.full(len(ids), np.nan)
    return pd.DataFrame({"call_id": ids, "qubit": q, "t": t, "h": c["h"].to_numpy(float), "x": x, "b_call": b_call,
                         "b_call_var": var, "b_fit": theta[qi, j]})


def trends(offsets: pd.DataFrame, fits: FitTable | None = None, fdr: float = 0.01, level: float = 0.95) -> pd.DataFrame:
    """Per-qubit linear trend of the per-call bias over the run (module docstring).

    Returns:
        Indexed by qubit: ``calls``, ``b`` (the fit's run average) with ``b_lo``/``b_hi`` (the fit's
        interval when ``fits`` has one), ``slope`` and ``slope_se`` (h per hour), ``slope_lo``,
        ``slope_hi``, ``dispersion`` (χ²/df about the trend), ``p``, ``q`` and ``drifts``.
    """
    o = offsets[np.isfinite(offsets["b_call"]) & np.isfinite(offsets["t"])]
    rows = []
    z = stats.norm.ppf(0.5 + level / 2)
    for qubit, d in o.groupby("qubit", sort=True):
        w = 1 / d["b_call_var"].to_numpy(float)
        t = d["t"].to_numpy(float) / 3600.0
        y = d["b_call"].to_numpy(float)
        n = len(y)
        sw = w.sum()
        if n < 3 or sw <= 0 or np.ptp(t) == 0:
            rows.append({"qubit": qubit, "calls": n})
            continue
        tb, yb = (w * t).sum() / sw, (w * y).sum() / sw
        sxx = (w * (t - tb) ** 2).sum()
        slope = (w * (t - tb) * (y - yb)).sum() / sxx
        resid = y - yb - slope * (t - tb)
        disp = float((w * resid**2).sum() / (n - 2))
        se = math.sqrt(max(disp, 1.0) / sxx)
        rows.append({"qubit": qubit, "calls": n, "slope": slope, "slope_se": se, "slope_lo": slope - z * se,
                     "slope_hi": slope + z * se, "dispersion": disp, "p": float(2 * stats.norm.sf(abs(slope / se)))})
    out = pd.DataFrame(rows, columns=["qubit", "calls", "slope", "slope_se", "slope_lo", "slope_hi", "dispersion", "p"])
    out = out.set_index("qubit")
    p = out["p"].to_numpy(float)
    qv = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        qv[ok] = stats.false_discovery_control(p[ok], method="bh")
    out["q"] = qv
    out["drifts"] = out["q"] < fdr
    if fits is not None:
        t = fits.table.set_index("qubit")
        out["b"] = t["b"].reindex(out.index)
        if "b_lo" in t and "b_hi" in t:
            out["b_lo"], out["b_hi"] = t["b_lo"].reindex(out.index), t["b_hi"].reindex(out.index)
        elif "b_stderr" in t:
            se = t["b_stderr"].reindex(out.index)
            out["b_lo"], out["b_hi"] = out["b"] - z * se, out["b"] + z * se
    return out


def mark_drifting(fits: FitTable, trend: pd.DataFrame) -> FitTable:
    """A copy of ``fits`` whose drifting qubits (``trend["drifts"]``) carry the quality reason ``"drifts"``."""
    t = fits.table.copy()
    drifting = set(trend.index[trend["drifts"].fillna(False).astype(bool)])
    hit = t["qubit"].isin(drifting).to_numpy()
    reason = t["reason"].fillna("").astype(str)
    t.loc[hit, "reason"] = [r + ("; " if r else "") + "drifts" for r in reason[hit]]
    return FitTable(t, fits.model.name, dict(fits.meta))


def _periodogram(t: np.ndarray, R: np.ndarray, W: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Weighted periodogram per qubit: R, W (qubits, calls) on shared times t → (qubits, freqs).

    A Hann taper ``τ`` over the run multiplies the weights (it stops the strong low-frequency power
    of a red spectrum leaking into the higher bins), and the periodogram is divided by the taper's
    equivalent noise bandwidth ``n Στ² / (Στ)²`` (≈ 1.5), so that a spectrum smooth on the scale of
    the calls' information pattern still gives ``E P ≈ S`` (the within-cycle pattern of the weights
    moves power only to its sidelobes, which :func:`spectrum` avoids)."""
    T = float(np.ptp(t))
    taper = np.sin(np.pi * (t - t.min()) / T) ** 2
    W = W * taper
    enbw = len(t) * float((taper**2).sum()) / float(taper.sum()) ** 2
    out = np.empty((R.shape[0], len(freqs)))
    for k, f in enumerate(freqs):
        X = np.stack([np.ones_like(t), np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)], 1)   # (C, 3)
        XtWX = np.einsum("qc,ci,cj->qij", W, X, X)
        XtWy = np.einsum("qc,ci,qc->qi", W, X, R)
        beta = np.linalg.solve(XtWX + 1e-12 * np.eye(3), XtWy[..., None])[..., 0]
        out[:, k] = T * (beta[:, 1] ** 2 + beta[:, 2] ** 2) / 2 / enbw
    return out


def _fit_power_law(freqs: np.ndarray, S: np.ndarray) -> tuple[float, float, float]:
    """Least squares on log S of ``A² f^−α + C``: ``(A, α, C)``."""
    def resid(p):
        la, alpha, lc = p
        return np.log(np.exp(2 * la) * freqs ** (-alpha) + np.exp(lc)) - np.log(S)

    lc0 = math.log(max(float(np.min(S)), 1e-30))
    la0 = 0.5 * math.log(max(float(S[0] * freqs[0]), 1e-30))
    r = optimize.least_squares(resid, [la0, 1.0, lc0], bounds=([-60, 0.0, -80], [10, 4.0, 10]))
    return float(math.exp(r.x[0])), float(r.x[1]), float(math.exp(r.x[2]))


def spectrum(offsets: pd.DataFrame, *, block: int | None = None, frequencies: int = 16, bootstrap: int = 200,
             seed: int | None = 0, level: float = 0.95) -> dict[str, Any]:
    """The device's flux-noise spectrum from per-call residual offsets (module docstring).

    Args:
        offsets: :func:`call_offsets`.
        block: calls per block (default: the number of distinct nominal h values, one h cycle).
        frequencies: log-spaced frequencies of the periodogram.
        bootstrap: resamples of the qubits for the intervals.
        seed: seed of the resamples.
        level: confidence level.

    Returns:
        ``estimable`` (bool), ``reason`` (when not), ``frequency`` (Hz) and ``power`` (mean
        periodogram, h²/Hz), ``amplitude_1Hz`` (h/√Hz) and ``exponent`` with ``_lo``/``_hi``,
        ``white`` (the fitted floor, h²/Hz), ``calls``, ``blocks``, ``block_calls``, ``qubits``,
        ``span_s``.
    """
    o = offsets[np.isfinite(offsets["b_call"]) & np.isfinite(offsets["t"])]
    out: dict[str, Any] = {"estimable": False, "reason": "", "calls": int(o["call_id"].nunique()),
                           "qubits": int(o["qubit"].nunique())}
    if out["calls"] < MIN_CALLS:
        out["reason"] = (f"not estimable: {out['calls']} timed calls (at least {MIN_CALLS} needed; "
                         "call times come from the calls table)")
        return out
    B = int(block) if block else max(int(o["h"].nunique()), 1)
    w = 1 / o["b_call_var"].to_numpy(float)
    R = (o["b_call"] - o["b_fit"]).to_numpy(float)
    # the model's misfit at each programmed field repeats in every call at that field: remove it
    key = pd.MultiIndex.from_arrays([o["qubit"].to_numpy(), o["x"].to_numpy()])
    cell = pd.DataFrame({"rw": R * w, "w": w}, index=key).groupby(level=[0, 1]).sum()
    R = R - (cell["rw"] / cell["w"]).reindex(key).to_numpy(float)
    times = o.groupby("call_id")["t"].first().sort_values()
    rank = pd.Series(np.arange(len(times)), index=times.index)
    nblocks = len(times) // B
    dt = float(np.median(np.diff(times.to_numpy()))) if len(times) > 1 else 0.0
    out.update(span_s=float(np.ptp(times.to_numpy())), blocks=nblocks, block_calls=B)
    if nblocks < 8 or not dt > 0:
        out["reason"] = f"not estimable: {nblocks} blocks of {B} calls (one h cycle each; at least 8 needed)"
        return out
    pos = rank.reindex(o["call_id"].to_numpy()).to_numpy()
    blk, within = pos // B, pos % B
    use = blk < nblocks
    tab = pd.DataFrame({"q": o["qubit"].to_numpy()[use], "k": blk[use], "j": within[use], "rw": (R * w)[use],
                        "w": w[use], "tw": (o["t"].to_numpy(float) * w)[use]})
    g = tab.groupby(["q", "k"])[["rw", "w", "tw"]].sum()
    Rm = (g["rw"] / g["w"]).unstack("k")
    Wm = g["w"].unstack("k").reindex_like(Rm)
    tb = times.to_numpy().reshape(-1)[: nblocks * B].reshape(nblocks, B).mean(1)
    Rv, Wv = np.nan_to_num(Rm.to_numpy(float)), np.nan_to_num(Wm.to_numpy(float))
    Rv = Rv - (Wv * Rv).sum(1, keepdims=True) / np.maximum(Wv.sum(1, keepdims=True), 1e-300)
    T = float(np.ptp(tb))
    # a block's mean is a filter: |Σ_j p_j e^{2πi f j dt}|² with p the mean weight profile in a block
    prof = tab.groupby("j")["w"].sum().reindex(range(B), fill_value=0.0).to_numpy(float).copy()
    prof /= prof.sum()
    fmax = 0.4 / (B * dt)
    if fmax / (3 / T) < 5:
        out["reason"] = "not estimable: the run spans less than a factor 5 of frequencies above its h cycle"
        return out
    freqs = np.geomspace(3 / T, fmax, frequencies)
    H = np.abs(np.exp(2j * np.pi * freqs[:, None] * np.arange(B)[None, :] * dt) @ prof) ** 2
    P = _periodogram(tb, Rv, Wv, freqs) / H
    S = P.mean(0)
    out.update(frequency=freqs, power=S)
    try:
        A, alpha, C = _fit_power_law(freqs, S)
    except (ValueError, FloatingPointError) as exc:       # pragma: no cover
        out["reason"] = f"not estimable: the fit failed ({exc})"
        return out
    if not A**2 * freqs[0] ** (-alpha) > 2 * C:
        out.update(white=C, reason="not estimable: no power-law component above the white floor at the lowest frequency")
        return out
    rng = np.random.default_rng(seed)
    n = P.shape[0]
    reps = []
    for _ in range(bootstrap):
        Sb = P[rng.integers(0, n, n)].mean(0)
        reps.append(_fit_power_law(freqs, Sb)[:2])
    reps = np.array(reps).reshape(-1, 2)
    qs = [0.5 - level / 2, 0.5 + level / 2]
    (a_lo, a_hi), (e_lo, e_hi) = ((np.quantile(reps[:, 0], qs), np.quantile(reps[:, 1], qs)) if len(reps)
                                  else ((np.nan, np.nan), (np.nan, np.nan)))
    out.update(estimable=True, amplitude_1Hz=A, amplitude_1Hz_lo=float(a_lo), amplitude_1Hz_hi=float(a_hi),
               exponent=alpha, exponent_lo=float(e_lo), exponent_hi=float(e_hi), white=C)
    return out


def drift_summary(data: Dataset, fits: FitTable, *, fdr: float = 0.01, bootstrap: int = 200,
                  seed: int | None = 0) -> dict[str, Any]:
    """Per-qubit trends and the device spectrum of one run: ``{"trends", "spectrum", "drifting", "offsets"}``."""
    off = call_offsets(data, fits)
    tr = trends(off, fits, fdr=fdr)
    return {"offsets": off, "trends": tr, "spectrum": spectrum(off, bootstrap=bootstrap, seed=seed),
            "drifting": [int(q) for q in tr.index[tr["drifts"].fillna(False).astype(bool)]]}


def plot_spectrum(spec: dict[str, Any], ax=None):
    """The mean periodogram of per-call offsets with the fitted ``A² f^−α + C`` (log-log); returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    if "frequency" not in spec:
        ax.text(0.5, 0.5, spec.get("reason", "no spectrum"), ha="center", va="center", transform=ax.transAxes, wrap=True)
        return ax
    f, S = spec["frequency"], spec["power"]
    ax.loglog(f, S, "o", ms=3, label="mean periodogram")
    if spec.get("estimable"):
        A, a, C = spec["amplitude_1Hz"], spec["exponent"], spec["white"]
        ax.loglog(f, A**2 * f ** (-a) + C, "-", label=f"A(1 Hz) = {A:.2g} h/√Hz, α = {a:.2f}")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("S (h²/Hz)")
    ax.legend(fontsize=8)
    return ax

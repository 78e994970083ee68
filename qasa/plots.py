"""Figures. Every function draws on ``ax`` (a new figure's axes when ``None``) and returns the axes.

Analysis lives elsewhere: these functions only draw data they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from qasa.dataset import Response

__all__ = ["response_curves", "response_spread", "parameter_histogram", "device_map", "layout_map", "recovery",
           "correlation_matrix", "correlogram", "parameter_vs_annealing_time"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.5))
    return ax


def response_curves(response: Response, fits=None, qubits: Sequence[int] | None = None, ax=None):
    """Observed P(−1) versus h (binomial 1σ bars) for a few qubits, with the fitted model curves and
    their 95% pointwise bands (delta method, :meth:`qasa.fitting.FitTable.band`).

    Args:
        response: counts as arrays.
        fits: optional :class:`~qasa.fitting.FitTable`; its model is drawn for each qubit shown.
        qubits: qubits to show (default: the first four).
    """
    ax = _axes(ax)
    qubits = list(qubits if qubits is not None else response.qubits[:4])
    rows = {int(q): i for i, q in enumerate(response.qubits)}
    hh = np.linspace(response.h.min(), response.h.max(), 400)
    params = fits.table.set_index("qubit") if fits is not None else None
    for q in qubits:
        i = rows[int(q)]
        p = response.p_down[i]
        n = np.maximum(response.n_total[i], 1)
        err = np.sqrt(np.clip(p * (1 - p), 0, None) / n)
        line = ax.errorbar(response.h, p, yerr=err, fmt="o", ms=2.5, lw=0.8, label=f"qubit {q}")
        if params is not None and q in params.index:
            theta = params.loc[q, list(fits.model.params)].to_numpy(float)[None, :]
            if np.isfinite(theta).all():
                p_fit, lo, hi = fits.band(int(q), hh)
                ax.plot(hh, p_fit, color=line[0].get_color(), lw=1)
                ax.fill_between(hh, lo, hi, color=line[0].get_color(), alpha=0.25, lw=0)
    ax.set_xlabel("h")
    ax.set_ylabel("P(s = −1)")
    ax.legend(fontsize=7, frameon=False)
    return ax


def response_spread(response: Response, fits, qubits: Sequence[int], median_curve: np.ndarray | None = None,
                    ax=None, residual_ax=None, labels: dict[int, str] | None = None):
    """The spread of the device: P(−1) minus the device's median response for a few qubits.

    Points are the observed P(−1) − median at each h (binomial 1σ bars), lines the fitted curve
    minus the median (interpolated between grid points), shaded the fit's 95% pointwise band
    (:meth:`qasa.fitting.FitTable.band`). ``residual_ax`` (optional) gets the Pearson residuals
    (observed − fitted)/√(p(1−p)/N) of the same qubits.

    Args:
        response: counts as arrays.
        fits: the :class:`~qasa.fitting.FitTable`.
        qubits: qubits to show.
        median_curve: the device's pointwise median P(−1) at ``response.h`` (default: of all rows).
        labels: legend text per qubit (default ``"qubit q"``).
    """
    ax = _axes(ax)
    rows = {int(q): i for i, q in enumerate(response.qubits)}
    if median_curve is None:
        median_curve = np.nanmedian(response.p_down, axis=0) if len(response.qubits) else np.zeros(len(response.h))
    med = np.asarray(median_curve, float)
    okm = np.isfinite(med)
    hh = np.linspace(response.h.min(), response.h.max(), 300) if len(response.h) else np.zeros(0)
    med_hh = np.interp(hh, response.h[okm], med[okm]) if okm.any() else np.zeros_like(hh)
    table = fits.table.set_index("qubit")
    for q in qubits:
        if int(q) not in rows:
            continue
        i = rows[int(q)]
        p = response.p_down[i]
        n = np.maximum(response.n_total[i], 1)
        err = np.sqrt(np.clip(p * (1 - p), 0, None) / n)
        label = (labels or {}).get(int(q), f"qubit {q}")
        line = ax.errorbar(response.h, p - med, yerr=err, fmt="o", ms=2.5, lw=0.7, label=label)
        colour = line[0].get_color()
        theta = table.loc[int(q), list(fits.model.params)].to_numpy(float) if int(q) in table.index else None
        if theta is not None and np.isfinite(theta).all():
            p_fit, lo, hi = fits.band(int(q), hh)
            ax.plot(hh, p_fit - med_hh, color=colour, lw=1)
            ax.fill_between(hh, lo - med_hh, hi - med_hh, color=colour, alpha=0.25, lw=0)
            if residual_ax is not None:
                at = fits.band(int(q), response.h)[0]
                with np.errstate(invalid="ignore", divide="ignore"):
                    res = (p - at) / np.sqrt(np.clip(at * (1 - at), 1e-12, None) / n)
                residual_ax.plot(response.h, res, "o-", ms=2.5, lw=0.6, color=colour)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("h")
    ax.set_ylabel("P(s = −1) − device median")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)
    if residual_ax is not None:
        residual_ax.axhline(0, color="k", lw=0.6)
        for y in (-2, 2):
            residual_ax.axhline(y, color="k", lw=0.4, ls=":")
        residual_ax.set_xlabel("h")
        residual_ax.set_ylabel("Pearson residual")
    return ax


def parameter_histogram(values: np.ndarray, name: str, ax=None, bins: int | str | None = None,
                        stderr: np.ndarray | None = None, label: str | None = None):
    """Histogram of one fitted parameter over qubits (non-finite values dropped; by default √n bins
    over the central 99 % of the values).

    The dashed line is the median, the shaded band the interquartile range; with ``stderr`` the
    bar at the top spans the median qubit's 95% interval (±1.96 × the median standard error), so
    the device spread can be compared with one qubit's uncertainty.
    """
    ax = _axes(ax)
    v = np.asarray(values, float)
    keep = np.isfinite(v)
    v = v[keep]
    if v.size:
        if bins is None:  # √n bins between the 0.5th and 99.5th percentiles: a few outliers do not squash the shape
            lo, hi = np.percentile(v, [0.5, 99.5]) if v.size > 20 else (v.min(), v.max())
            bins = np.linspace(lo, hi, int(np.clip(np.sqrt(v.size), 5, 60)) + 1) if hi > lo else 1
        ax.hist(v, bins=bins, color="#4c72b0", histtype="stepfilled")
        med = float(np.median(v))
        q25, q75 = np.quantile(v, [0.25, 0.75])
        ax.axvspan(q25, q75, color="#4c72b0", alpha=0.12, lw=0, label="IQR")
        ax.axvline(med, color="k", lw=0.8, ls="--", label="median")
        if stderr is not None:
            se = np.asarray(stderr, float)[keep]
            se = se[np.isfinite(se)]
            if se.size:
                half = 1.96 * float(np.median(se))
                top = ax.get_ylim()[1]
                ax.errorbar([med], [0.92 * top], xerr=[[half], [half]], fmt="|", color="#c44e52", capsize=3,
                            lw=1.2, label="typical 95% interval")
        ax.set_title(f"{label or name}: {v.size} qubits", fontsize=9)
        ax.legend(fontsize=6, frameon=False, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel(label or name)
    ax.set_ylabel("qubits")
    return ax


def device_map(values: dict[int, float] | Any, device: dict[str, Any], ax=None, name: str = "",
               cmap: str = "viridis", size: float | None = None):
    """Colour each qubit at its position in D-Wave's layout of the device (absent qubits grey).

    The colour scale spans the 1st to 99th percentile of the values.

    Args:
        values: mapping qubit → value (e.g. a pandas Series indexed by qubit).
        device: device info as recorded in a dataset (topology type and shape, nodelist).
    """
    from qasa.topology import positions

    ax = _axes(ax)
    values = dict(values.items()) if hasattr(values, "items") else dict(values)
    pos = positions(device)
    if not pos:
        ax.text(0.5, 0.5, "no layout", transform=ax.transAxes, ha="center", va="center")
        return ax
    nodes = np.array(sorted(pos))
    xy = np.array([pos[n] for n in nodes])
    v = np.array([values.get(int(n), np.nan) for n in nodes], float)
    s = size if size is not None else float(np.clip(25000.0 / max(len(nodes), 1), 4.0, 60.0))
    missing = ~np.isfinite(v)
    ax.scatter(xy[missing, 0], xy[missing, 1], s=s, c="#cccccc", linewidths=0, marker="s")
    # robust colour range: one outlier qubit should not wash out the map
    lo, hi = (np.percentile(v[~missing], [1, 99]) if (~missing).any() else (0.0, 1.0))
    sc = ax.scatter(xy[~missing, 0], xy[~missing, 1], s=s, c=v[~missing], cmap=cmap, linewidths=0,
                    marker="s", vmin=lo, vmax=hi)
    ax.figure.colorbar(sc, ax=ax, label=name, shrink=0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if name:
        ax.set_title(f"{name} on the device", fontsize=9)
    return ax


def layout_map(x: np.ndarray, y: np.ndarray, values: np.ndarray, ax=None, label: str = "", cmap: str = "viridis",
               vmin: float | None = None, vmax: float | None = None, size: float | None = None):
    """Colour qubits at layout positions ``(x, y)`` by ``values`` (NaN grey); returns the axes.

    The colour scale spans ``vmin``..``vmax`` (default: the 1st to 99th percentile of the values).
    """
    ax = _axes(ax)
    x, y, v = (np.asarray(a, float) for a in (x, y, values))
    s = size if size is not None else float(np.clip(25000.0 / max(len(x), 1), 1.0, 60.0))
    missing = ~np.isfinite(v)
    ax.scatter(x[missing], y[missing], s=s, c="#cccccc", linewidths=0, marker="s", rasterized=False)
    if (~missing).any():
        lo, hi = np.percentile(v[~missing], [1, 99])
        lo, hi = (vmin if vmin is not None else lo), (vmax if vmax is not None else hi)
        sc = ax.scatter(x[~missing], y[~missing], s=s, c=v[~missing], cmap=cmap, linewidths=0, marker="s",
                        vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
        ax.figure.colorbar(sc, ax=ax, label=label, shrink=0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


def recovery(true: np.ndarray, fitted: np.ndarray, stderr: np.ndarray | None = None, name: str = "", ax=None):
    """Fitted versus true values of a parameter (virtual QPU), with the identity line."""
    ax = _axes(ax)
    t, f = np.asarray(true, float), np.asarray(fitted, float)
    ok = np.isfinite(t) & np.isfinite(f)
    raster = int(ok.sum()) > 2000     # thousands of points: rasterized inside a vector file (small, fast)
    (points,) = ax.plot(t[ok], f[ok], "o", ms=1.5, alpha=0.5, rasterized=raster)
    if stderr is not None:
        # every qubit's 95% interval as one NaN-separated path under the points: one artist however
        # many qubits (an errorbar container makes a path object per qubit, seconds on a full device)
        half = 1.96 * np.asarray(stderr, float)[ok]
        gap = np.full(half.size, np.nan)
        ax.plot(np.column_stack([t[ok], t[ok], gap]).ravel(), np.column_stack([f[ok] - half, f[ok] + half, gap]).ravel(),
                "-", color=points.get_color(), lw=0.4, alpha=0.5, rasterized=raster, zorder=points.get_zorder() - 0.1)
    if ok.any():
        lo, hi = min(t[ok].min(), f[ok].min()), max(t[ok].max(), f[ok].max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        # the axes span the points (an unbounded interval would stretch them over −1…1 for values in
        # [0, 0.06]); interval bars leaving the panel are cut at its edge
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-3) * 0.05
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"fitted {name}")
    return ax


def correlation_matrix(corr: "pd.DataFrame", params: Sequence[str], ax=None, method: str = "spearman",
                       labels: Sequence[str] | None = None):
    """Heat map of pairwise correlations (a table from :func:`qasa.device.correlations`)."""
    ax = _axes(ax)
    k = len(params)
    m = np.eye(k)
    pos = {p: i for i, p in enumerate(params)}
    for _, r in corr.iterrows():
        if r["a"] in pos and r["b"] in pos:
            m[pos[r["a"]], pos[r["b"]]] = m[pos[r["b"]], pos[r["a"]]] = r[method]
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(k), labels or params)
    ax.set_yticks(range(k), labels or params)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{m[i, j]:.2f}" if np.isfinite(m[i, j]) else "—", ha="center", va="center", fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label=f"{method} correlation")
    if method == "corrected":
        ax.set_title("corrected for estimation error", fontsize=9)
    return ax


def correlogram(table: "pd.DataFrame", name: str = "", ax=None):
    """Moran's I versus graph distance (a table from :func:`qasa.device.correlogram`)."""
    ax = _axes(ax)
    if table is None or not len(table) or "distance" not in table:
        return ax
    ax.plot(table["distance"], table["morans_i"], "o-", label=name or None)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("graph distance (couplers)")
    ax.set_ylabel("Moran's I")
    if name:
        ax.legend(fontsize=7, frameon=False)
    return ax


def parameter_vs_annealing_time(levels: Sequence[dict], name: str = "beta", truth: Sequence[float] | None = None, ax=None):
    """Device median of a parameter (±1.96 se) against annealing time (log axis)."""
    ax = _axes(ax)
    t = np.array([lv["annealing_time"] for lv in levels], float)
    med = np.array([lv["median"] for lv in levels], float)
    se = np.array([lv["median_se"] for lv in levels], float)
    ax.errorbar(t, med, yerr=1.96 * se, fmt="o-", label="fitted median")
    if truth is not None:
        ax.plot(t, truth, "k--", lw=0.8, label="true median")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel("annealing time (µs)")
    ax.set_ylabel(name)
    return ax

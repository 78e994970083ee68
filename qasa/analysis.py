r"""Analysis of an assessment: every number a report shows, as plain data (no HTML, no figures).

:func:`analyze` turns a dataset and its fit table into an :class:`AssessmentReport`;
:func:`analyze_comparison` and :func:`analyze_analogues` do the same for ``qasa compare`` and
``qasa analogues``. :func:`qasa.report.render` turns any of them into one self-contained HTML page
with figures, CSV tables and a JSON summary; :meth:`AssessmentReport.to_dict` is that JSON.

Summaries per parameter (good qubits)
    median with its standard error ``1.2533 s/√n`` (the asymptotic sd of a sample median of a
    normal population, Kenney & Keeping 1962), quartiles, mean with ``s/√n``, sd ``s`` and count.
    Every number shown is rounded to its uncertainty (two significant digits of the standard error,
    :func:`round_to_uncertainty`).

Model comparison
    Totals over the qubits fitted by every model: ``AIC = Σ(2k − 2ℓ)``, ``BIC = Σ(k ln N − 2ℓ)``
    (N a qubit's reads), ΔAIC and ΔBIC against the lowest total, and the fraction of those qubits
    whose own AIC (BIC) is lowest under each model.

Degenerate data
    A report is always produced. With fewer than :data:`MIN_GOOD_QUBITS` well-fitted qubits the
    device-level statistics (distributions, correlations, spatial structure) are left out and
    :attr:`AssessmentReport.notes` says why; qubits whose ids are outside the recorded topology are
    reported and left off the maps.
"""

from __future__ import annotations

import json

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from qasa.dataset import Dataset, Response, json_safe, utcnow
from qasa.fitting import FitTable, fit
from qasa.parameters import PARAMETERS, ParameterInfo, format_value, parameter_info, round_to_uncertainty
from qasa.topology import layout_table

__all__ = [
    "collection_status", "noise_beyond_shots", "IMPORTED_NOISE", "ParameterInfo", "PARAMETERS", "parameter_info", "MIN_GOOD_QUBITS", "AssessmentReport", "ComparisonReport",
    "AnaloguesReport", "analyze", "analyze_comparison", "analyze_analogues", "provenance", "parameter_summary",
    "model_comparison", "recovery_table", "round_to_uncertainty", "format_value", "layout_table",
    "pooled_temperature",
]

#: Fewest good qubits for device-level statistics (correlations and spatial statistics need ≥ 4).
MIN_GOOD_QUBITS = 4


# -- pieces of the analysis -------------------------------------------------------------------------
def pooled_temperature(data: Dataset | Response) -> dict[str, float]:
    """Fit the ``gibbs`` model to the counts of all qubits summed: the device-wide β and T_eff = 1/β.

    This fits tanh(βh) over the whole h range; D-Wave's effective temperature uses only the
    small-|h| (linear-response) part and is lower when responses saturate (DESIGN.md §6).
    """
    r = data.response() if isinstance(data, Dataset) else data
    if r.n_total.sum() == 0 or len(r.h) == 0:
        return {"beta": math.nan, "beta_stderr": math.nan, "T_eff": math.nan, "T_eff_stderr": math.nan}
    table = fit(r.pooled(), "gibbs").table.iloc[0]
    beta, se = float(table["beta"]), float(table["beta_stderr"])
    ok = math.isfinite(beta) and beta > 0
    return {"beta": beta, "beta_stderr": se, "T_eff": 1.0 / beta if ok else math.nan,
            "T_eff_stderr": se / beta**2 if ok else math.nan}


def _temperature(r: Dataset | Response) -> dict[str, Any]:
    """The headline effective temperature: D-Wave's definition (:func:`qasa.temperature.effective_temperature`,
    the small-|h| window), or the whole-grid pooled fit when no h value falls in that window. From a
    dataset, its error is the measurement error (calls as clusters) beside the population error."""
    from qasa.temperature import effective_temperature

    for window in ("default", None):
        try:
            t = effective_temperature(r) if window == "default" else effective_temperature(r, None)
        except ValueError as exc:
            reason = str(exc)
            continue
        out = t.to_dict()
        out.update(beta=t.beta_eff, beta_stderr=t.beta_eff_stderr)
        if window is None:
            out["method"] = ("no h value lies in D-Wave's window |h| ≤ 1/6.1, so this is the whole-grid pooled fit, "
                             "not D-Wave's T_eff. " + out["method"])
        return out
    return {"T_eff": math.nan, "T_eff_stderr": math.nan, "beta": math.nan, "beta_stderr": math.nan,
            "method": f"no effective temperature: {reason}"}


def _versions(dataset: Dataset) -> dict[str, str]:
    return dict((dataset.device.get("versions") or dataset.metadata.get("versions") or {}))


def provenance(dataset: Dataset, response: Response | None = None) -> dict[str, Any]:
    """What was measured and how, with human labels, in display order.

    The annealing time is the one *used*: the protocol's, or the sampler's default (marked so)
    when the protocol left it to the sampler.
    """
    dev, meta = dataset.device, dataset.metadata
    proto = meta.get("protocol") or {}
    r = response if response is not None else dataset.response()
    shape = dev.get("topology_shape")
    topo = dev.get("topology_type")
    topo_text = (f"{topo.capitalize()} {'×'.join(str(s) for s in shape)}" if topo and shape else (topo or "none recorded"))
    h = np.asarray(proto.get("h_values") or (r.h.tolist() if len(r.h) else []), float)
    if h.size:
        steps = np.unique(np.round(np.diff(np.sort(h)), 9)) if h.size > 1 else np.array([])
        grid = (f"{h.size} values from {h.min():g} to {h.max():g}"
                + (f" in steps of {steps[0]:g}" if steps.size == 1 else ""))
    else:
        grid = "—"
    collection = collection_status(dataset)
    adaptive = collection["design"] == "adaptive"
    if adaptive:
        n_fields = len(dataset.totals()["h"])
        grid = (f"pilot: {grid}; then {collection['rounds']} adaptive round(s) of per-qubit fields — "
                f"{n_fields} distinct programmed fields in all")
    if proto:
        reads_per_h = proto.get("reads_per_h")
        calls_per_h = max(int(proto.get("gauges_per_h") or 1), -(-int(reads_per_h or 0) // int(proto.get("reads_per_call") or 1)))
        gauges = (f"spin-reversal, {calls_per_h} per h value (antithetic pairs)" if proto.get("spin_reversal")
                  else "none (identity gauge)")
    else:
        totals = r.n_total.sum(0) / max(len(r.qubits), 1) if len(r.qubits) else np.array([])
        reads_per_h = int(np.median(totals)) if totals.size else None
        gauges = "not recorded (imported data)"
    if proto.get("anneal_schedule"):
        anneal = "schedule " + ", ".join(f"({t:g} µs, s={s:g})" for t, s in proto["anneal_schedule"])
    elif proto.get("annealing_time") is not None:
        anneal = f"{proto['annealing_time']:g} µs"
    elif dev.get("default_annealing_time") is not None:
        anneal = f"{dev['default_annealing_time']:g} µs (the sampler's default)"
    elif proto:
        anneal = "the sampler's default (not reported by the sampler)"
    else:
        anneal = "not recorded"
    qpu_us = meta.get("qpu_access_time_total_us")
    if qpu_us is None and "qpu_access_time" in dataset.calls:
        qpu_us = float(np.nansum(dataset.calls["qpu_access_time"].to_numpy(float))) or None
    versions = _versions(dataset)
    ocean = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("qasa", "numpy", "scipy"))
    runs = meta.get("runs") or []
    out: dict[str, Any] = {
        "Device (solver)": dev.get("solver") or "not recorded",
        "Sampler": dev.get("sampler_class") or "—",
        "Topology": topo_text,
        "Qubits assessed": int(len(r.qubits)),
        "Active qubits of the device": dev.get("num_qubits"),
        "h grid": grid,
        "Design": ("adaptive (qasa.adaptive): a pilot grid, then per-qubit designed fields" if adaptive
                   else "h grid, the same field on every qubit" if proto else "not recorded (imported data)"),
        "Reads per h value": (f"pilot: {reads_per_h}; rounds: per qubit (reads per qubit "
                              f"{int(r.n_total.sum(1).max()) if len(r.qubits) else 0} in all)" if adaptive
                              else f"{reads_per_h} planned; {collection['reads_per_h_collected']} collected (partial)"
                              if collection["partial"] else reads_per_h),
        "Reads per call": proto.get("reads_per_call"),
        "Gauges": gauges,
        "Annealing": anneal,
        "h-gain schedule": (", ".join(f"({t:g} µs, g={g:g})" for t, g in proto["h_gain_schedule"])
                            if proto.get("h_gain_schedule") else "none" if proto else "not recorded"),
        "Flux-drift compensation": ("on" if proto.get("flux_drift_compensation") else "off") if proto
        else "not recorded",
        "Seed": proto.get("seed"),
        "Calls": (f"{collection['done']} of {collection['planned']} planned — partial: interrupted, stopped by its "
                  "budget, or still being written" if collection["partial"] else int(len(dataset.calls))),
        "Qubit-reads in all": int(r.n_total.sum()),
        "QPU access time spent": (f"{qpu_us / 1e6:.3f} s" if qpu_us else "none recorded"),
        "Collected": (f"{runs[0].get('started', '?')} → {runs[-1].get('finished', '?')}" if runs
                      else meta.get("created") or "—"),
        "qasa version": versions.get("qasa") or _qasa_version(),
        "Ocean versions": ocean or "not recorded",
    }
    flux = (proto.get("sampler_params") or {}).get("flux_biases")
    if flux is not None:                 # a shim applied with every call (qasa run/assess --flux-biases)
        f = np.asarray(flux, float)
        nz = f[f != 0]
        out["Shim applied"] = (f"flux biases on {nz.size} of {f.size} qubits (rms {np.sqrt(np.mean(nz ** 2)):.3g} Φ₀, "
                               "from qasa shim), sent with every call" if nz.size else "flux biases all zero")
    if (meta.get("source") or {}).get("spin_table"):
        out["Source"] = f"imported from {meta['source']['spin_table']}"
    return out


def collection_status(dataset: Dataset) -> dict[str, Any]:
    """How much of what was planned the dataset holds.

    Returns:
        ``design`` ("grid", "adaptive", "shim", "quick-temperature" or "imported"), ``planned`` and ``done`` calls (``planned`` is
        None for imported data), ``partial`` (fewer calls than planned: an interrupted run, a budget
        stop, or a run still writing), ``rounds`` (adaptive rounds recorded) and
        ``reads_per_h_collected`` (median over (qubit, h) of the reads collected, for a partial grid).
    """
    from qasa.protocol import Protocol

    meta = dataset.metadata
    rounds = meta.get("design_rounds") or {}
    if not meta.get("protocol"):
        return {"design": "imported", "planned": None, "done": int(len(dataset.calls)), "partial": False,
                "rounds": 0, "reads_per_h_collected": None}
    # a shim's or a quick temperature's protocol only carries the options of its explicit calls (rounds)
    carrier = meta.get("design") == "quick-temperature" or bool(meta.get("shim"))
    planned = (0 if carrier else Protocol.from_dict(meta["protocol"]).num_calls) + sum(int(v) for v in rounds.values())
    done = int(len(dataset.calls))
    collected = None
    if done < planned and dataset.num_rows:
        per = _reads_per_cell(dataset)
        collected = int(np.median(per.to_numpy())) if len(per) else 0
    design = ("quick-temperature" if meta.get("design") == "quick-temperature" else "shim" if meta.get("shim")
              else "adaptive" if rounds or meta.get("adaptive") else "grid")
    return {"design": design, "planned": int(planned), "done": done, "partial": done < planned,
            "rounds": len(rounds), "reads_per_h_collected": collected}


def _reads_per_cell(dataset: Dataset) -> pd.Series:
    """Reads collected per (qubit, h) cell that has rows, summed batch by batch (integers: exact).

    A cell is one signed h value: +h and −h are separate cells, each planned ``reads_per_h`` reads.
    """
    per = pd.Series(dtype=np.int64)
    for b in dataset.batches():
        part = pd.Series(b.n_down + b.n_up).groupby([b.qubit, b.h]).sum()
        per = part if not len(per) else per.add(part, fill_value=0).astype(np.int64)
    return per


#: What the report says of noise beyond shots for imported data (:func:`noise_beyond_shots` is ``None``).
IMPORTED_NOISE = ("An imported spin table holds the reads summed over calls at each h value, with no per-call "
                  "counts and no call times: the spread between calls (σ_call) and drift over the run cannot be "
                  "assessed from it, so the intervals count reads as independent and no qubit is tested for drift.")


def noise_beyond_shots(dataset: Dataset, fits: FitTable, *, seed: int = 0) -> dict[str, Any] | None:
    """What a real QPU adds to shot noise, as this run shows it (the report's "Noise beyond shots").

    Returns ``None`` for imported data (a spin table: no protocol, no per-call counts or times, so
    :data:`IMPORTED_NOISE`), without calls, or for a model without a between-call component
    (:attr:`qasa.models.Model.between_calls`: the QASA model only); else
    ``between_calls`` (the fit's ``sigma_call`` distribution over good qubits and the share of qubits
    whose between-call homogeneity test rejects at p < 0.01, when the fit has those columns),
    ``sigma_field`` (the device's per-field sd held in the fit, :mod:`qasa.fitting` "Per-field errors",
    when there is one),
    ``drift`` (:func:`qasa.drift.drift_summary`: per-qubit b(t) trends with the drifting qubits at a
    1 % false-discovery rate, and the device's flux-noise spectrum or why it is not estimable) and
    ``effects`` (sentences: what each does to the headline numbers).
    """
    from qasa import drift

    if not dataset.metadata.get("protocol") or not len(dataset.calls) or not fits.model.between_calls:
        return None
    t = fits.table[fits.table["quality"] == "good"]
    out: dict[str, Any] = {"between_calls": None, "sigma_field": None, "drift": None, "effects": []}
    if "sigma_call" in t and len(t):
        sc = t["sigma_call"].to_numpy(float)
        sc = sc[np.isfinite(sc)]
        disp = t["dispersion_p"].to_numpy(float) if "dispersion_p" in t else np.array([])
        disp = disp[np.isfinite(disp)]
        out["between_calls"] = {
            "qubits": int(sc.size),
            "sigma_call_median": float(np.median(sc)) if sc.size else math.nan,
            "sigma_call_q25": float(np.percentile(sc, 25)) if sc.size else math.nan,
            "sigma_call_q75": float(np.percentile(sc, 75)) if sc.size else math.nan,
            "dispersed_share": float(np.mean(disp < 0.01)) if disp.size else math.nan,
            "values": sc.tolist()}
        out["effects"].append(
            "Between calls: every call is a new programming whose field offsets all its reads share; the fit "
            "estimates their spread (σ_call, h units) per qubit beside the within-call η, and every interval "
            "of β, b, γ, η includes it.")
        sf = fits.meta.get("sigma_field")
        if sf and not math.isfinite(sf.get("sigma_field", math.nan)):
            out["effects"].append(
                f"Per field: the field error shared by the calls at one programmed value (the h DAC's rounding) "
                f"is a device-level estimate; this fit has {sf.get('qubits', 0)} qubits with a between-call fit, too "
                "few to estimate it, so the intervals leave it out.")
            sf = None
        if sf:
            out["sigma_field"] = {k: sf[k] for k in ("sigma_field", "sigma_field_lo", "sigma_field_hi", "cells",
                                                     "qubits", "outlying_qubits", "z", "given") if k in sf}
            out["effects"].append(
                f"Per field: the h DAC rounds each programmed value the same way in every call, an offset shared by "
                f"the calls at one field; its sd over the device, σ_field = {sf['sigma_field']:.2g} h "
                + ("(fixed by the caller)" if sf.get("given") else
                   f"[{sf['sigma_field_lo']:.2g}, {sf['sigma_field_hi']:.2g}]")
                + ", is held in the likelihood, so it widens the "
                "intervals instead of failing the goodness-of-fit test (a value near 0 means the run does not "
                "resolve it).")
    else:
        out["effects"].append("This fit has no between-call component (sigma_call): its intervals count reads as "
                              "independent, which per-programming field errors make too narrow.")
    try:
        d = drift.drift_summary(dataset, fits, seed=seed)
    except (KeyError, ValueError) as exc:        # no call times, or too few calls
        d = {"error": str(exc)}
    if "error" not in d:
        tr = d["trends"]
        out["drift"] = {"drifting": d["drifting"], "tested": int(tr["slope"].notna().sum()),
                        "spectrum": {k: v for k, v in d["spectrum"].items() if k not in ("frequency", "power")},
                        "trends": tr.sort_values("q").head(10).reset_index().to_dict("records"),
                        "_spectrum": d["spectrum"]}
        out["effects"].append(
            f"Drift: b is the run average of each qubit's bias (its interval is that average's); "
            f"{len(d['drifting'])} of {out['drift']['tested']} qubits drift beyond their interval over the run "
            "(b(t) slope, Benjamini–Hochberg q < 0.01), and those carry the reason 'drifts'.")
    else:
        out["effects"].append(f"Drift: not estimated ({d['error']}).")
    return out


def _pilot(dataset: Dataset) -> Dataset:
    """The calls of the stored protocol (an adaptive assessment's pilot grid), without the designed rounds."""
    from qasa.protocol import Protocol

    return dataset.select(Protocol.from_dict(dataset.metadata["protocol"]).call_ids())


def _qasa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qasa")
    except PackageNotFoundError:   # pragma: no cover - running from a source tree that is not installed
        return "?"


def parameter_summary(fits: FitTable, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Per parameter over good qubits: n, median (± se), q25, q75, IQR, mean (± se), sd (see module docstring)."""
    good = fits.table[fits.table["quality"] == "good"]
    rows = []
    for p in params or fits.model.params:
        v = good[p].to_numpy(float) if p in good else np.array([])
        v = v[np.isfinite(v)]
        n = int(v.size)
        sd = float(v.std(ddof=1)) if n > 1 else math.nan
        rows.append({"param": p, "n": n,
                     "median": float(np.median(v)) if n else math.nan,
                     "median_se": 1.2533 * sd / math.sqrt(n) if n > 1 else math.nan,
                     "q25": float(np.quantile(v, 0.25)) if n else math.nan,
                     "q75": float(np.quantile(v, 0.75)) if n else math.nan,
                     "mean": float(v.mean()) if n else math.nan,
                     "mean_se": sd / math.sqrt(n) if n > 1 else math.nan, "sd": sd})
    out = pd.DataFrame(rows, columns=["param", "n", "median", "median_se", "q25", "q75", "mean", "mean_se", "sd"])
    out["iqr"] = out["q75"] - out["q25"]
    return out.set_index("param")


def model_comparison(tables: Mapping[str, FitTable] | tuple[pd.DataFrame, dict[str, Any]]
                     ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Model comparison table (see module docstring) and the likelihood-ratio tests.

    Args:
        tables: fit tables by model name (preferred: gives BIC too), or the ``(per_qubit, device)``
            result of :func:`qasa.fitting.compare`.

    Returns:
        ``(table, tests)``: one row per model with ``params``, ``qubits``, ``aic_total``,
        ``delta_aic``, ``bic_total``, ``delta_bic``, ``prefer_aic``, ``prefer_bic`` (fractions of
        qubits), and the device-level likelihood-ratio tests of :func:`qasa.fitting.compare`.
    """
    from qasa.fitting import compare as _compare

    if isinstance(tables, tuple):
        per, device = tables
        names = [m for m in device["models"]]
        aic = per[[f"aic_{m}" for m in names]].to_numpy(float)
        bic = np.full_like(aic, np.nan)
        ks = [math.nan] * len(names)
        tests = device.get("tests", [])
    else:
        names = list(tables)
        qubits = tables[names[0]].table["qubit"].to_numpy()
        aic = np.column_stack([tables[m].table.set_index("qubit").reindex(qubits)["aic"].to_numpy(float) for m in names])
        bic = np.column_stack([tables[m].table.set_index("qubit").reindex(qubits)["bic"].to_numpy(float) for m in names])
        ks = [tables[m].model.num_params for m in names]
        tests = _compare(dict(tables))[1]["tests"] if len(names) > 1 else []
    complete = np.isfinite(aic).all(1)
    n = int(complete.sum())
    rows = []
    for j, m in enumerate(names):
        rows.append({"model": m, "params": ks[j], "qubits": n,
                     "aic_total": float(aic[complete, j].sum()) if n else math.nan,
                     "bic_total": float(bic[complete, j].sum()) if n and np.isfinite(bic[complete, j]).all() else math.nan})
    table = pd.DataFrame(rows)
    for crit, values in (("aic", aic), ("bic", bic)):
        total = table[f"{crit}_total"]
        table[f"delta_{crit}"] = total - total.min() if total.notna().any() else math.nan
        if n and np.isfinite(values[complete]).all():
            best = np.argmin(values[complete], axis=1)
            table[f"prefer_{crit}"] = [float(np.mean(best == j)) for j in range(len(names))]
        else:
            table[f"prefer_{crit}"] = math.nan
    return table, json_safe(tests)


def recovery_table(fits: FitTable, truth: pd.DataFrame, estimand: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fitted versus known values per parameter (good qubits; ``truth`` indexed by qubit).

    Columns: ``qubits``, ``coverage_95`` (share of 95% intervals — ``<p>_lo``/``<p>_hi`` when the
    fit has them, else ±1.96 standard errors — containing the true value), ``median_error``
    (fitted − true), ``median_abs_error``; with ``estimand`` (what the fit should converge to when
    the model is misspecified) also ``coverage_95_estimand`` and ``median_abs_error_estimand``.
    """
    t = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    rows = []
    for p in fits.model.params:
        if p not in truth:
            continue
        common = t.index.intersection(truth.index)
        est = t.loc[common, p].to_numpy(float)
        lo, hi = _interval(t.loc[common], p)
        row: dict[str, Any] = {"param": p}
        for suffix, ref in (("", truth), ("_estimand", estimand)):
            if ref is None or p not in ref:
                continue
            c = common.intersection(ref.index)
            sel = np.asarray(common.isin(c))
            tru = ref.loc[common[sel], p].to_numpy(float)
            e, l, h = est[sel], lo[sel], hi[sel]
            ok = np.isfinite(l) & np.isfinite(h) & np.isfinite(tru)
            err = e - tru
            if not suffix:
                row["qubits"] = int(ok.sum())
                row["median_error"] = float(np.median(err)) if err.size else math.nan
            row[f"coverage_95{suffix}"] = float(np.mean((l[ok] <= tru[ok]) & (tru[ok] <= h[ok]))) if ok.any() else math.nan
            row[f"median_abs_error{suffix}"] = float(np.median(np.abs(err))) if err.size else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("param") if rows else pd.DataFrame()


def _interval(t: pd.DataFrame, p: str) -> tuple[np.ndarray, np.ndarray]:
    """95% interval of parameter ``p``: profile-likelihood columns when present, else Wald."""
    if f"{p}_lo" in t and f"{p}_hi" in t:
        return t[f"{p}_lo"].to_numpy(float), t[f"{p}_hi"].to_numpy(float)
    v, se = t[p].to_numpy(float), t[f"{p}_stderr"].to_numpy(float) if f"{p}_stderr" in t else np.full(len(t), np.nan)
    return v - 1.96 * se, v + 1.96 * se


def _mapped_parameters(fits: FitTable, reliability: pd.DataFrame | None) -> list[str]:
    """Parameters worth a map: identified by the reliability rule of :func:`qasa.device.reliability`
    (at least half of the spread across qubits is the device, not estimation noise); without
    standard errors, every parameter that varies over good qubits."""
    good = fits.table[fits.table["quality"] == "good"]
    out = []
    for p in fits.model.params:
        v = good[p].to_numpy(float)
        if not (v.size and np.isfinite(v).mean() >= 0.5 and np.nanmax(v) > np.nanmin(v)):
            continue
        if reliability is not None and p in reliability.index and np.isfinite(reliability.loc[p, "reliability"]):
            if not bool(reliability.loc[p, "identified"]):
                continue
        out.append(p)
    return out


def _curve_qubits(fits: FitTable, count: int = 5) -> list[int]:
    """Good qubits at the 5, 25, 50, 75 and 95 % quantiles of the first parameter (β)."""
    good = fits.table[fits.table["quality"] == "good"]
    first = fits.model.params[0]
    ordered = good[np.isfinite(good[first].to_numpy(float))].sort_values(first)["qubit"].to_numpy()
    if not len(ordered):
        return [int(q) for q in fits.table["qubit"].to_numpy()[:min(count, len(fits.table))]]
    qs = np.linspace(0.05, 0.95, count) if len(ordered) >= count else np.linspace(0, 1, len(ordered))
    return list(dict.fromkeys(int(ordered[int(round(f * (len(ordered) - 1)))]) for f in qs))


def _device_median_curve(r: Response, fits: FitTable) -> np.ndarray:
    """Pointwise median over good qubits of the observed P(−1) at each h (NaN without data)."""
    good = set(fits.table.loc[fits.table["quality"] == "good", "qubit"].astype(int))
    rows = np.array([int(q) in good for q in r.qubits]) if len(r.qubits) else np.zeros(0, bool)
    p = r.p_down[rows] if rows.any() else r.p_down
    if p.size == 0:
        return np.full(len(r.h), np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(p, axis=0)


# -- device analysis --------------------------------------------------------------------------------
def _device_analysis(device: Mapping[str, Any], fits: FitTable, inside: Sequence[int], permutations: int,
                     seed: int, reliability: pd.DataFrame | None, bootstrap: int) -> dict[str, Any] | None:
    """Spatial autocorrelation, correlations, position association, outliers (data only)."""
    from qasa import device as dv
    from qasa.topology import edge_table, qubit_table

    if device.get("topology_type") is None:
        return None
    dev = dict(device, nodelist=sorted(int(q) for q in inside))
    if dev.get("edgelist") is not None:
        edges = np.asarray(dev["edgelist"], dtype=np.int64).reshape(-1, 2)
        dev["edgelist"] = edges[np.isin(edges, dev["nodelist"]).all(1)].tolist()
    edges = edge_table(dev)
    qubits = qubit_table(dev)
    params = list(fits.model.params)
    good = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    good = good[good.index.isin(list(inside))]
    rel = reliability if reliability is not None else pd.DataFrame()
    r = {p: (float(rel.loc[p, "reliability"]) if p in rel.index and "reliability" in rel else None) for p in params}
    spatial = {p: dv.spatial_autocorrelation(good[p], edges, permutations=permutations, seed=seed, reliability=r[p])
               for p in params}
    return {
        "spatial": spatial,
        "findings": [line for p in params for line in dv.spatial_findings(
            spatial[p], p, reliability=r[p],
            identified=bool(rel.loc[p, "identified"]) if p in rel.index and "identified" in rel else None)],
        "correlogram": {p: dv.correlogram(good[p], edges, seed=seed) for p in params},
        "correlations": dv.correlations(fits, bootstrap=bootstrap, seed=seed, reliability=reliability),
        "reliability": rel,
        "position": dv.position_association(fits, qubits),
        "outliers": dv.outliers(fits),
        "exclusion_list": dv.exclusion_list(fits),
        "couplers": int(len(edges)),
    }


def outcome_section(dataset: Dataset, dataset_path: str | Path) -> dict[str, Any] | None:
    """Outcome correlations at the h value closest to 0, when raw reads were kept."""
    from qasa import device as dv
    from qasa.topology import edge_table

    if not (Path(dataset_path) / "samples").is_dir() or dataset.device.get("topology_type") is None:
        return None
    h = dataset.calls["h"].to_numpy(float)
    h0 = float(h[np.argmin(np.abs(h))])
    from qasa.store import DatasetStore

    raw = DatasetStore(dataset_path).samples(h0, dataset.calls)
    res = dv.outcome_correlations(raw, dataset.protocol.qubits, edge_table(dataset.device))
    res["h"] = h0
    return res


#: Published physical temperatures of D-Wave solvers (mK; docs/DESIGN.md §2), matched by solver-name prefix.
PUBLISHED_TEMPERATURE_MK = {"Advantage_system4.1": 15.4, "Advantage_system6.4": 16.0, "Advantage2_system1": 20.0,
                            "Advantage2_system2.1": 16.7, "Advantage2_research1.5": 17.5}
_SCHEDULE_OF_TOPOLOGY = {"pegasus": "Advantage_system6.2", "zephyr": "Advantage2_research1.4", "chimera": "DW_2000Q_6"}


def _analogue(dataset: Dataset, temperature: Mapping[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """The measured device next to its SGD and SA analogues (:func:`qasa.analogues.device_analogue`),
    driven along the anneal that was run; ``(table, None)`` or ``(None, why not)``.

    The device's row is the report's headline effective temperature (``temperature``, from
    :func:`_temperature`): one device temperature per page, never 1/median(β) beside it.
    """
    from qasa import analogues as an
    from qasa.errors import QasaError

    proto = dataset.metadata.get("protocol") or {}
    dev = dataset.device
    anneal = proto.get("anneal_schedule") or proto.get("annealing_time") or dev.get("default_annealing_time")
    beta, beta_se = float(temperature.get("beta", math.nan)), temperature.get("beta_stderr")
    if anneal is None or not (np.isfinite(beta) and beta > 0):
        return None, "no annealing time or no effective temperature is known"
    solver = str(dev.get("solver") or "")
    temp = next((v for k, v in PUBLISHED_TEMPERATURE_MK.items() if solver.startswith(k)), None)
    schedule = _SCHEDULE_OF_TOPOLOGY.get(dev.get("topology_type"), "Advantage_system6.2")
    try:
        table = an.device_analogue(anneal, beta, None if beta_se is None else float(beta_se),
                                   temperature_mK=temp or 16.0, schedule=schedule)
    except (ValueError, QasaError) as exc:
        return None, str(exc)
    table.attrs["temperature_mK"] = temp or 16.0
    table.attrs["temperature_source"] = (f"published for {solver}" if temp else
                                         "assumed 16 mK (no published temperature for this solver)")
    table.attrs["schedule"] = schedule
    return table, None


# -- the report objects -----------------------------------------------------------------------------
@dataclass
class AssessmentReport:
    """Every number of an assessment report (see :func:`analyze`); render with :func:`qasa.report.render`.

    Attributes:
        created: UTC time of the analysis.
        provenance: label → value (device, protocol as used, versions, QPU time), display order.
        model: the fitted model's name; ``params`` its parameters.
        quality: qubits per fit quality (good / bad / failed).
        summary: :func:`parameter_summary`.
        temperature: the headline effective temperature (:func:`qasa.temperature.effective_temperature`:
            ``T_eff``, ``T_eff_stderr``, ``T_eff_lo``/``_hi``, ``beta``, ``beta_stderr``, ``method``...).
        pooled: the whole-grid pooled Gibbs fit (:func:`pooled_temperature`), kept for comparison.
        fits: the per-qubit fit table; ``response`` the counts as arrays.
        layout: per qubit ``x``, ``y`` (D-Wave layout) and ``cell`` label; ``outside`` qubits not in the topology.
        mapped: parameters worth a map (the reliability rule of :func:`qasa.device.reliability`).
        reliability: :func:`qasa.device.reliability` per parameter (``None`` without standard errors).
        curve_qubits: qubits shown in the response-curve figure; ``median_curve`` the device's
            pointwise median P(−1).
        comparison: :func:`model_comparison` table (or ``None``); ``tests`` its likelihood-ratio tests.
        device: device analysis (spatial statistics, correlogram, correlations, position, outliers).
        recovery: :func:`recovery_table` against the known truth (virtual QPU), or ``None``;
            ``truth`` the known per-qubit parameters themselves.
        outcome: outcome correlations within reads, or ``None``.
        analogue: the device next to its SGD and SA analogues along the same anneal
            (:func:`qasa.analogues.device_analogue`; its ``attrs`` hold the temperature profile), or ``None``.
        notes: sentences about degenerate or partial data (shown at the top of the report).
        collection: :func:`collection_status` of the dataset (planned and done calls, partial, design).
        noise: :func:`noise_beyond_shots` (between-call spread, drift, spectrum), or ``None``.
    """

    created: str
    provenance: dict[str, Any]
    model: str
    params: list[str]
    quality: dict[str, int]
    summary: pd.DataFrame
    temperature: dict[str, Any]
    fits: FitTable
    response: Response
    layout: pd.DataFrame
    outside: list[int] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    reliability: pd.DataFrame | None = None
    pooled: dict[str, float] = field(default_factory=dict)
    curve_qubits: list[int] = field(default_factory=list)
    median_curve: np.ndarray | None = None
    comparison: pd.DataFrame | None = None
    tests: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] | None = None
    recovery: pd.DataFrame | None = None
    truth: pd.DataFrame | None = field(default=None, repr=False)
    outcome: dict[str, Any] | None = None
    analogue: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    device_info: dict[str, Any] = field(default_factory=dict, repr=False)
    collection: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] | None = None

    kind = "assessment"

    @property
    def title(self) -> str:
        device = self.provenance.get("Device (solver)")
        if not device or device == "not recorded":
            source = str(self.provenance.get("Source", "")).removeprefix("imported from ")
            return f"QASA assessment of imported data ({source})" if source else "QASA assessment of an unnamed device"
        return f"QASA assessment of {device}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (``summary.json``): strict JSON, NaN as null."""
        dev = self.device_info
        r = self.response
        out: dict[str, Any] = {
            "created": self.created,
            "provenance": self.provenance,
            "device": {"solver": dev.get("solver"), "topology_type": dev.get("topology_type"),
                       "topology_shape": dev.get("topology_shape"), "active_qubits": dev.get("num_qubits")},
            "data": {"qubits": int(len(r.qubits)), "h_values": int(len(r.h)),
                     "h_min": float(r.h.min()) if len(r.h) else None, "h_max": float(r.h.max()) if len(r.h) else None,
                     "reads_total": int(r.n_total.sum()), "calls": int(self.collection.get("done", 0))},
            "collection": self.collection,
            "parameters": {p: {"symbol": parameter_info(p).symbol, "unit": parameter_info(p).unit,
                               "definition": parameter_info(p).definition} for p in self.params},
            "fit": self.fits.summary(),
            "summary": self.summary.reset_index().to_dict("records"),
            "pooled_gibbs": self.pooled,
            "effective_temperature": self.temperature,
            "mapped_parameters": self.mapped,
            "reliability": (self.reliability.reset_index().to_dict("records") if self.reliability is not None else None),
            "qubits_outside_topology": self.outside,
            "notes": self.notes,
        }
        if self.comparison is not None:
            out["model_comparison"] = {"models": self.comparison.to_dict("records"), "tests": self.tests,
                                       "preferred": (self.comparison.sort_values("aic_total")["model"].iloc[0]
                                                     if self.comparison["aic_total"].notna().any() else None)}
        if self.recovery is not None and len(self.recovery):
            out["recovery"] = {p: row.to_dict() for p, row in self.recovery.iterrows()}
        if self.device is not None:
            a = self.device
            pos = a["position"]
            out["device_analysis"] = {
                "findings": a["findings"],
                "spatial": {p: t.to_dict("records") for p, t in a["spatial"].items()},
                "correlations": a["correlations"].to_dict("records"),
                "position_significant": pos[pos["significant"]].to_dict("records") if len(pos) else [],
                "outliers": int(a["outliers"]["outlier"].sum()) if len(a["outliers"]) else 0,
                "exclusion_list": a["exclusion_list"],
            }
        if self.outcome is not None:
            out["outcome_correlations"] = self.outcome
        if self.analogue is not None:
            out["analogue"] = self.analogue.to_dict("records")
        if self.noise is not None:
            noise = {k: v for k, v in self.noise.items() if k != "drift"}
            if noise.get("between_calls"):
                noise["between_calls"] = {k: v for k, v in noise["between_calls"].items() if k != "values"}
            if self.noise.get("drift") is not None:
                noise["drift"] = {k: v for k, v in self.noise["drift"].items() if not k.startswith("_")}
            out["noise_beyond_shots"] = noise
        return json_safe(out)

    def __repr__(self) -> str:
        from qasa.display import report_repr

        return report_repr(self)

    def _repr_html_(self) -> str:
        from qasa.display import report_html

        return report_html(self)


def analyze(dataset: Dataset, fits: FitTable, comparison: Mapping[str, FitTable] | tuple | None = None, *,
            truth: pd.DataFrame | None = None, estimand: pd.DataFrame | None = None,
            dataset_path: str | Path | None = None, response: Response | None = None,
            permutations: int = 199, bootstrap: int = 199, seed: int = 0,
            split_half: bool = True) -> AssessmentReport:
    """Analyse an assessment: every number of its report, no rendering.

    Args:
        dataset: the counts and metadata.
        fits: the per-qubit fit table of the model to report.
        comparison: fit tables of several models by name (or :func:`qasa.fitting.compare`'s result)
            for the model-comparison section.
        truth: known per-qubit parameters indexed by qubit (virtual QPU); read from the dataset's
            metadata when ``None`` and recorded there.
        estimand: what each fitted parameter converges to under the fitted model (virtual QPU), if known.
        dataset_path: the dataset directory (enables outcome correlations when raw reads were kept).
        response: ``dataset.response()`` when the caller already has it.
        permutations: shuffles of each spatial permutation test (199: p-values resolve down to 0.005,
            below the 0.01 at which findings are stated, in a fraction of the time of 999).
        bootstrap: resamples of the qubits for the intervals of the reliabilities and corrected correlations.
        split_half: take the reliability verdicts from two independent halves of the counts
            (:func:`qasa.device.split_half`, the default: valid near bounds, where the fits'
            standard errors are not — the moment estimate gave η a reliability of −2.8 on the virtual
            Advantage at 4 000 reads per h, split halves 0.09). It costs two point fits of half the
            reads (~1.5 s for 5 626 qubits). ``False``: the method-of-moments reliability from the
            fits' standard errors (no extra fit).
        seed: seed of the permutation tests, bootstraps and the correlogram's sources.

    Returns:
        An :class:`AssessmentReport`. Degenerate data (few good qubits, qubits outside the topology)
        give a report whose ``notes`` say what is missing and why.
    """
    r = response if response is not None else dataset.response()
    notes: list[str] = []
    quality = {k: int(v) for k, v in fits.table["quality"].value_counts().items()} if len(fits) else {}
    n_good = quality.get("good", 0)
    if truth is None:
        truth = _recorded(dataset, "truth")
    if estimand is None and truth is not None:
        # the virtual QPU records what a fit of this run converges to beside the truth
        cols = {c: c[len("estimand_"):] for c in truth.columns if c.startswith("estimand_")}
        estimand = truth[list(cols)].rename(columns=cols) if cols else None
    collection = collection_status(dataset)
    if collection["partial"]:
        notes.append(f"Partial dataset: {collection['done']} of {collection['planned']} planned calls "
                     "(interrupted, stopped by its budget, or still being written); every number below is from "
                     "the calls collected so far. `qasa run DIR` resumes it.")
    if len(r.qubits) == 0:
        notes.append("The dataset holds no counts: nothing was measured, so nothing is analysed.")
    elif n_good < MIN_GOOD_QUBITS:
        reasons = fits.table.loc[fits.table["quality"] != "good", "reason"].value_counts()
        why = "; ".join(f"{k} ({v} qubits)" for k, v in reasons.head(3).items())
        notes.append(f"Only {n_good} of {len(fits)} qubits were fitted well (quality good); device-level "
                     f"statistics need at least {MIN_GOOD_QUBITS}, so distributions, correlations, maps and "
                     f"spatial statistics are left out. Most common reasons: {why or 'none recorded'}.")
    if 0 < len(r.h) < fits.model.num_params:
        notes.append(f"The data have {len(r.h)} h value(s); the {fits.model.name} model has "
                     f"{fits.model.num_params} parameters and cannot be identified from fewer h values.")
    layout, outside = layout_table(dataset.device, fits.table["qubit"].astype(int).tolist())
    if outside:
        shown = ", ".join(str(q) for q in outside[:8]) + (" …" if len(outside) > 8 else "")
        notes.append(f"{len(outside)} qubit id(s) are not in the recorded {dataset.device.get('topology_type')} "
                     f"topology ({shown}); they are analysed but not mapped.")
    summary = parameter_summary(fits)
    enough = n_good >= MIN_GOOD_QUBITS
    rel = _reliability(fits, dataset if split_half and dataset.num_rows else r if split_half else None,
                       bootstrap, seed) if enough else None
    device = None
    if enough and dataset.device.get("topology_type") is not None and len(layout) >= MIN_GOOD_QUBITS:
        device = _device_analysis(dataset.device, fits, layout.index.tolist(), permutations, seed, rel, bootstrap)
    if rel is not None and len(rel):
        skipped = [p for p in fits.model.params if p in rel.index and not bool(rel.loc[p, "identified"])
                   and np.isfinite(rel.loc[p, "reliability"])]
        notes.extend(f"Not mapped — {rel.loc[p, 'verdict']}" for p in skipped)
    comp, tests = (model_comparison(comparison) if comparison is not None else (None, []))
    rec = recovery_table(fits, truth, estimand) if truth is not None and n_good else None
    outcome = outcome_section(dataset, dataset_path) if dataset_path is not None else None
    temperature = _headline_temperature(dataset, r, collection)
    noise = noise_beyond_shots(dataset, fits, seed=seed) if enough else None
    if noise is not None and noise["drift"] is not None and noise["drift"]["drifting"]:
        from qasa.drift import mark_drifting

        fits = mark_drifting(fits, pd.DataFrame({"drifts": True}, index=noise["drift"]["drifting"]))
    analogue, _ = _analogue(dataset, temperature) if enough else (None, None)
    return AssessmentReport(
        created=utcnow(), provenance=provenance(dataset, r), model=fits.model.name, params=list(fits.model.params),
        quality=quality, summary=summary, temperature=temperature, pooled=pooled_temperature(r), fits=fits, response=r, layout=layout,
        outside=outside, mapped=_mapped_parameters(fits, rel) if enough else [], reliability=rel, curve_qubits=_curve_qubits(fits),
        median_curve=_device_median_curve(r, fits), comparison=comp, tests=tests, device=device,
        recovery=rec if rec is not None and len(rec) else None, truth=truth, analogue=analogue, outcome=json_safe(outcome) if outcome else None,
        notes=notes, collection=collection, noise=noise,
        device_info={k: v for k, v in dataset.device.items()
                     if k not in ("nodelist", "edgelist", "truth", "estimand", "properties", "parameters")})


def _headline_temperature(dataset: Dataset, r: Response, collection: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`_temperature` of the run: of its pilot grid's calls for an adaptive design (with why)."""
    if collection["design"] == "adaptive":
        temperature = _temperature(_pilot(dataset))
        temperature["method"] = ("From the pilot grid's calls only (the same field on every qubit, as D-Wave's "
                                 "estimator assumes); the adaptive rounds program each qubit at its own fields, and "
                                 "pooling qubits measured at different fields is not that estimator. "
                                 + str(temperature.get("method", "")))
        return temperature
    return _temperature(dataset if dataset.num_rows else r)


def _reliability(fits: FitTable, r: Dataset | Response | None, bootstrap: int, seed: int) -> pd.DataFrame | None:
    """:func:`qasa.device.reliability` when the fits have standard errors (split-half from the counts
    ``r`` when given — a dataset's calls are split, not its reads: two more fits of the model), else ``None``."""
    from qasa import device as dv

    if not all(f"{p}_stderr" in fits.table for p in fits.model.params):
        return None
    rel = dv.reliability(fits, bootstrap=bootstrap, seed=seed, data=r)
    return rel if "reliability" in rel else None


def _recorded(dataset: Dataset, key: str) -> pd.DataFrame | None:
    rows = (dataset.metadata.get("device") or {}).get(key)
    if not rows:
        return None
    return pd.DataFrame(rows).set_index("qubit")


# -- comparison of assessments ----------------------------------------------------------------------
@dataclass
class ComparisonReport:
    """Numbers of ``qasa compare``: paired per-qubit changes and the trend with annealing time.

    Attributes:
        labels: the assessments in order (the first is the reference).
        provenance: per label, the assessment's provenance (:func:`provenance`).
        pairs: ``"A -> B"`` → (per-qubit changes, summary per parameter) from :func:`qasa.device.compare_fits`.
        trends: per parameter the device trend with annealing time (:func:`qasa.device.annealing_time_trend`),
            when the annealing times differ.
        truth_medians: per parameter the true device median at each annealing time (virtual QPU).
        param: the parameter whose trend is drawn.
        analogue_trend: when the runs used different anneals, the measured β trend beside the trend
            its SGD and SA analogues predict (:func:`qasa.analogues.analogue_trend`).
    """

    created: str
    labels: list[str]
    provenance: dict[str, dict[str, Any]]
    params: list[str]
    pairs: dict[str, tuple[pd.DataFrame, dict[str, Any]]]
    trends: dict[str, dict[str, Any]] | None
    truth_medians: dict[str, list[float]] | None
    param: str = "beta"
    notes: list[str] = field(default_factory=list)
    analogue_trend: pd.DataFrame | None = None

    kind = "comparison"
    title = "Comparison of QASA assessments"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created, "runs": self.labels,
                               "pairs": {k: v[1] for k, v in self.pairs.items()}, "notes": self.notes,
                               "provenance": self.provenance}
        if self.trends is not None:
            out["annealing_time_trend"] = self.trends
        if self.analogue_trend is not None:
            out["analogue_trend"] = self.analogue_trend.to_dict("records")
        return json_safe(out)

    def __repr__(self) -> str:
        return f"ComparisonReport({len(self.labels)} assessments: {', '.join(self.labels)[:200]})"


def analyze_comparison(runs: Mapping[str, tuple[Dataset, FitTable]], param: str = "beta") -> ComparisonReport:
    """Compare assessments of the same device: paired per-qubit changes and, when the annealing
    times differ, the trend of each parameter with annealing time.

    Args:
        runs: label → (dataset, fit table), in the order to compare (the first is the reference).
        param: the parameter whose trend is drawn.

    Raises:
        ValueError: with fewer than two assessments.
    """
    from qasa import device as dv

    labels = list(runs)
    if len(labels) < 2:
        raise ValueError("a comparison needs at least two assessments")
    ref_label, ref_fit = labels[0], runs[labels[0]][1]
    notes = []
    pairs = {}
    for label in labels[1:]:
        pairs[f"{ref_label} -> {label}"] = dv.compare_fits(ref_fit, runs[label][1])
        if pairs[f"{ref_label} -> {label}"][1]["qubits"] == 0:
            notes.append(f"No qubit is good in both {ref_label} and {label}: nothing to compare.")
    times = {label: (ds.metadata.get("protocol") or {}).get("annealing_time") for label, (ds, _) in runs.items()}
    trends = truth = None
    if all(t is not None for t in times.values()) and len(set(times.values())) == len(times):
        by_time = {float(times[label]): f for label, (_, f) in runs.items()}
        try:
            trends = {p: dv.annealing_time_trend(by_time, p)[1] for p in ref_fit.model.params}
        except (ValueError, ZeroDivisionError, IndexError) as exc:
            notes.append(f"The trend with annealing time could not be computed: {exc}.")
        order = sorted(runs, key=lambda k: times[k])
        truth = {}
        for p in ref_fit.model.params:
            values = [_truth_median(runs[lbl][0], p) for lbl in order]
            if all(v is not None for v in values):
                truth[p] = values
    return ComparisonReport(created=utcnow(), labels=labels,
                            provenance={lbl: provenance(ds) for lbl, (ds, _) in runs.items()},
                            params=list(ref_fit.model.params), pairs=pairs, trends=trends,
                            truth_medians=truth or None, param=param, notes=notes,
                            analogue_trend=_analogue_trend(runs, notes))


def _analogue_trend(runs: Mapping[str, tuple[Dataset, FitTable]], notes: list[str]) -> pd.DataFrame | None:
    """The measured β trend across anneals beside its SGD/SA analogues' prediction (None if one anneal)."""
    from qasa import analogues as an

    if "beta" not in next(iter(runs.values()))[1].model.params:
        return None
    records = an.analogue_runs(runs)
    if len({json.dumps(r["anneal"]) for r in records}) < 2:
        return None
    solver = next(iter(runs.values()))[0].device.get("solver")
    try:
        return an.analogue_trend(records, **an.device_constants(solver))
    except (ValueError, ArithmeticError) as exc:
        notes.append(f"The analogue trend could not be computed: {exc}.")
        return None


def _truth_median(ds: Dataset, param: str) -> float | None:
    truth = (ds.metadata.get("device") or {}).get("truth")
    if not truth:
        return None
    values = [r[param] for r in truth if param in r]
    return float(np.median(values)) if values else None


# -- classical analogues ----------------------------------------------------------------------------
@dataclass
class AnaloguesReport:
    """Numbers of ``qasa analogues``: one row per schedule shape on SGD, SA and the (virtual) QPU.

    Attributes:
        table: :func:`qasa.analogues.combined` (one row per shape).
        sgd, sa, qpu: the three studies' own tables.
        sections: extra titled tables (title → DataFrame) from :mod:`qasa.analogues`, shown in order.
    """

    created: str
    table: pd.DataFrame
    sgd: pd.DataFrame
    sa: pd.DataFrame
    qpu: pd.DataFrame
    sections: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    kind = "analogues"
    title = "Annealing schedules on three systems"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"created": self.created, "combined": self.table.to_dict("records"),
                          "sgd": self.sgd.to_dict("records"), "sa": self.sa.to_dict("records"),
                          "qpu": self.qpu.drop(columns=["anneal_schedule"], errors="ignore").to_dict("records"),
                          "sections": {k: v.to_dict("records") for k, v in self.sections.items()}})

    def __repr__(self) -> str:
        return f"AnaloguesReport({len(self.table)} schedule shapes)"


def analyze_analogues(nqm: pd.DataFrame, sa: pd.DataFrame, qpu: pd.DataFrame,
                      sections: Mapping[str, pd.DataFrame] | None = None) -> AnaloguesReport:
    """Join the three studies of :mod:`qasa.analogues` into an :class:`AnaloguesReport`."""
    from qasa.analogues import combined

    return AnaloguesReport(created=utcnow(), table=combined(nqm, sa, qpu), sgd=nqm, sa=sa, qpu=qpu,
                           sections=dict(sections or {}))

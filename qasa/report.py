"""Reports: one self-contained HTML page (figures embedded as PNG), ``summary.json`` and CSV tables.

The report states what was measured: the device and protocol, the quality counts of the per-qubit
fits, the median and spread of each parameter over good qubits, the pooled (device-wide) Gibbs
temperature, response curves of a few qubits, parameter histograms and a map of β on the device
layout; and, when given, model comparison and recovered-versus-true parameters (virtual QPU).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qasa.dataset import Dataset, Response, atomic_write_bytes, atomic_write_json, json_safe, utcnow
from qasa.fitting import FitTable, fit

__all__ = ["summarize", "build_report", "pooled_temperature", "device_analysis", "build_comparison_report",
           "build_analogues_report", "json_safe"]


def pooled_temperature(data: Dataset | Response) -> dict[str, float]:
    """Fit the ``gibbs`` model to the counts of all qubits summed: the device-wide β and T_eff = 1/β."""
    r = data.response() if isinstance(data, Dataset) else data
    table = fit(r.pooled(), "gibbs").table.iloc[0]
    beta, se = float(table["beta"]), float(table["beta_stderr"])
    return {"beta": beta, "beta_stderr": se, "T_eff": 1.0 / beta if beta > 0 else math.nan,
            "T_eff_stderr": se / beta**2 if beta > 0 else math.nan}


def summarize(dataset: Dataset, fits: FitTable, comparison: dict[str, Any] | None = None,
              truth: pd.DataFrame | None = None, analysis: dict[str, Any] | None = None,
              response: Response | None = None) -> dict[str, Any]:
    """The numbers of a report as a JSON-able dict (``summary.json``); ``response`` saves
    summing the counts again when the caller has it."""
    dev = dataset.device
    proto = dataset.metadata.get("protocol") or {}
    r = response if response is not None else dataset.response()
    out: dict[str, Any] = {
        "created": utcnow(),
        "device": {"solver": dev.get("solver"), "topology_type": dev.get("topology_type"),
                   "topology_shape": dev.get("topology_shape"), "active_qubits": dev.get("num_qubits")},
        "data": {"qubits": int(len(r.qubits)), "h_values": int(len(r.h)),
                 "h_min": float(r.h.min()) if len(r.h) else None, "h_max": float(r.h.max()) if len(r.h) else None,
                 "reads_total": int(r.n_total.sum()), "calls": int(len(dataset.calls)),
                 "annealing_time_us": proto.get("annealing_time"),
                 "qpu_access_time_total_us": dataset.metadata.get("qpu_access_time_total_us")},
        "fit": fits.summary(),
        "pooled_gibbs": pooled_temperature(r),
    }
    if comparison is not None:
        out["model_comparison"] = comparison
    if truth is not None:
        out["recovery"] = recovery_summary(fits, truth)
    if analysis is not None:
        pos = analysis["position"]
        out["device_analysis"] = {
            "findings": analysis["findings"],
            "spatial": {p: t.to_dict("records") for p, t in analysis["spatial"].items()},
            "correlations": analysis["correlations"].to_dict("records"),
            "position_significant": pos[pos["significant"]].to_dict("records") if len(pos) else [],
            "outliers": int(analysis["outliers"]["outlier"].sum()),
            "exclusion_list": analysis["exclusion_list"],
        }
    return json_safe(out)


def recovery_summary(fits: FitTable, truth: pd.DataFrame) -> dict[str, Any]:
    """Per parameter: share of good qubits whose 95% interval covers the true value, and the
    median absolute error (``truth`` indexed by qubit with the model's parameter names)."""
    t = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    common = t.index.intersection(truth.index)
    out = {}
    for p in fits.model.params:
        if p not in truth:
            continue
        est, se, tru = t.loc[common, p], t.loc[common, f"{p}_stderr"], truth.loc[common, p]
        ok = np.isfinite(se)
        cover = (np.abs(est - tru) <= 1.96 * se)[ok]
        out[p] = {"qubits": int(ok.sum()), "coverage_95": float(cover.mean()) if ok.any() else None,
                  "median_abs_error": float(np.median(np.abs(est - tru))) if len(common) else None}
    return out


def device_analysis(dataset: Dataset, fits: FitTable, permutations: int = 499, seed: int = 0) -> dict[str, Any] | None:
    """Spatial autocorrelation, correlations, position association and outliers (data only).

    Returns ``None`` when the dataset has no topology (e.g. an imported table without one).
    """
    from qasa import device as dv
    from qasa.topology import edge_table, qubit_table

    dev = dataset.device
    if dev.get("topology_type") is None:
        return None
    edges = edge_table(dev)
    qubits = qubit_table(dev)
    params = list(fits.model.params)
    good = fits.table[fits.table["quality"] == "good"].set_index("qubit")
    spatial = {p: dv.spatial_autocorrelation(good[p], edges, permutations=permutations, seed=seed) for p in params}
    return {
        "spatial": spatial,
        "findings": [line for p in params for line in dv.spatial_findings(spatial[p], p)],
        "correlogram": {p: dv.correlogram(good[p], edges, seed=seed) for p in params},
        "correlations": dv.correlations(fits),
        "position": dv.position_association(fits, qubits),
        "outliers": dv.outliers(fits),
        "exclusion_list": dv.exclusion_list(fits),
        "robust": dv.summarize(fits),
    }


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figures(dataset: Dataset, r: Response, fits: FitTable, truth: pd.DataFrame | None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qasa import plots

    figs = []
    good = fits.table[fits.table["quality"] == "good"]
    # the qubits at the extremes and thirds of the first parameter (β): the spread of the device
    first = fits.model.params[0]
    ordered = good.sort_values(first)["qubit"].to_numpy()
    show = [int(ordered[int(round(f * (len(ordered) - 1)))]) for f in (0, 1 / 3, 2 / 3, 1)] if len(ordered) else []
    show = list(dict.fromkeys(show)) or list(r.qubits[:4])
    fig, ax = plt.subplots(figsize=(6, 4))
    plots.response_curves(r, fits, show, ax=ax)
    ax.set_title(f"lowest, ⅓, ⅔ and highest {first} ({fits.model.name} fit, 95% bands)", fontsize=9)
    figs.append(("Response curves", _png(fig)))
    k = fits.model.num_params
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 2.8), squeeze=False)
    for ax, p in zip(axes[0], fits.model.params):
        plots.parameter_histogram(good[p].to_numpy(float), p, ax=ax)
    fig.tight_layout()
    figs.append(("Parameter distributions (good qubits)", _png(fig)))
    dev = dataset.device
    if dev.get("topology_type") is not None or dev.get("nodelist") is not None:
        fig, ax = plt.subplots(figsize=(7, 6.5))
        plots.device_map(good.set_index("qubit")[fits.model.params[0]], dev, ax=ax, name=fits.model.params[0])
        figs.append((f"Map of {fits.model.params[0]}", _png(fig)))
    if truth is not None:
        t = good.set_index("qubit")
        common = t.index.intersection(truth.index)
        params = [p for p in fits.model.params if p in truth]
        if params and len(common):
            fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3), squeeze=False)
            for ax, p in zip(axes[0], params):
                plots.recovery(truth.loc[common, p], t.loc[common, p], t.loc[common, f"{p}_stderr"], p, ax=ax)
            fig.tight_layout()
            figs.append(("Recovered versus true parameters", _png(fig)))
    return figs


def _analysis_figures(fits: FitTable, analysis: dict[str, Any] | None) -> list[tuple[str, str]]:
    if analysis is None:
        return []
    import matplotlib.pyplot as plt

    from qasa import plots

    figs = []
    params = list(fits.model.params)
    if len(params) > 1 and len(analysis["correlations"]):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        plots.correlation_matrix(analysis["correlations"], params, ax=ax)
        figs.append(("Correlations between parameters (Spearman, good qubits)", _png(fig)))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for p in params:
        plots.correlogram(analysis["correlogram"][p], p, ax=ax)
    figs.append(("Correlogram on the coupler graph", _png(fig)))
    return figs


def _table_html(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return "—" if v is None else str(v)


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


def build_report(dataset: Dataset, fits: FitTable, out_dir: str | Path, *,
                 comparison: tuple[pd.DataFrame, dict[str, Any]] | None = None,
                 truth: pd.DataFrame | None = None, dataset_path: str | Path | None = None) -> dict[str, Any]:
    """Write ``index.html``, ``summary.json`` and CSV tables into ``out_dir``; return the summary.

    ``dataset_path`` (the dataset directory) enables the outcome-correlation section when raw
    reads were kept.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = device_analysis(dataset, fits)
    r = dataset.response()
    summary = summarize(dataset, fits, comparison[1] if comparison else None, truth, analysis, r)
    outcome = outcome_section(dataset, dataset_path) if dataset_path is not None else None
    if outcome is not None:
        summary["outcome_correlations"] = json_safe(outcome)
    if analysis is not None:
        for name in ("correlations", "position", "outliers", "robust"):
            atomic_write_bytes(out / f"{name}.csv", analysis[name].to_csv(index=name in ("outliers", "robust")).encode())
        spatial = pd.concat([t.assign(param=p) for p, t in analysis["spatial"].items()], ignore_index=True)
        atomic_write_bytes(out / "spatial.csv", spatial.to_csv(index=False).encode())
        atomic_write_bytes(out / "exclude_qubits.txt", "".join(f"{q}\n" for q in analysis["exclusion_list"]).encode())
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "fits.csv", fits.table.to_csv(index=False).encode())
    if comparison is not None:
        atomic_write_bytes(out / "model_comparison.csv", comparison[0].to_csv(index=False).encode())
    sections = []
    d, f, pooled = summary["device"], summary["fit"], summary["pooled_gibbs"]
    sections.append("<h2>Device and data</h2>" + _table_html(list(d.items()) + list(summary["data"].items())))
    rows = [("model", f["model"]), ("qubits fitted", f["qubits"]), ("quality", f["quality"])]
    rows += [(p, f[p]) for p in fits.model.params]
    rows += [("pooled Gibbs β", pooled["beta"]), ("pooled T_eff (units of h)", pooled["T_eff"])]
    sections.append("<h2>Fit summary</h2><p>Medians and quartiles over good qubits "
                    "(quality rule: see <code>qasa.fitting</code>).</p>" + _table_html(rows))
    if comparison is not None:
        dev = comparison[1]
        rows = [(m, v) for m, v in dev["models"].items()] + [("preferred (total AIC)", dev["preferred"])]
        rows += [(f"LR {t['small']} vs {t['big']}", {"p": t["pvalue"], "qubits rejecting at 0.01": t["qubits_rejecting_small_at_0.01"]})
                 for t in dev["tests"]]
        sections.append("<h2>Model comparison</h2>" + _table_html(rows))
    if analysis is not None:
        findings = "".join(f"<li>{html.escape(f)}</li>" for f in analysis["findings"])
        pos = analysis["position"]
        sig = pos[pos["significant"]] if len(pos) else pos
        pos_text = ("".join(f"<li>{html.escape(r['param'])} varies with {html.escape(r['feature'])} "
                            f"({r['test']}, statistic {r['statistic']:.3g}, p = {r['p']:.3g}, BH q = {r['q']:.3g})</li>"
                            for _, r in sig.iterrows()) or "<li>no association with position at FDR 0.05</li>")
        n_out = int(analysis["outliers"]["outlier"].sum())
        sections.append(
            "<h2>Device analysis</h2><h3>Spatial structure (Moran's I, Geary's C; permutation tests)</h3>"
            f"<ul>{findings}</ul><h3>Association with position (Benjamini–Hochberg, FDR 0.05)</h3><ul>{pos_text}</ul>"
            f"<h3>Outliers</h3><p>{n_out} good qubits have a robust z-score above 3.5 in some parameter; "
            f"{len(analysis['exclusion_list'])} qubits (failed, bad or outlier) are listed in "
            "<code>exclude_qubits.txt</code> for embeddings.</p>")
    if outcome is not None:
        rows = [("h", outcome["h"]), ("reads", outcome["reads"]),
                ("mean correlation, all pairs", {"r": outcome["mean_all"], "z": outcome["z_all"], "p": outcome["p_all"]})]
        rows += [(f"neighbours along {c} couplers", {"r": v["mean_r"], "z": v["z"], "p": v["p"]})
                 for c, v in outcome.items() if isinstance(v, dict)]
        sections.append("<h2>Outcome correlations within reads</h2><p>With J = 0, independent qubits give "
                        "correlations ~N(0, 1/reads); crosstalk or a global noise field shows here.</p>"
                        + _table_html(rows))
    if "recovery" in summary:
        sections.append(
            "<h2>Recovery of the hidden truth</h2><p>The data came from qasa's virtual QPU, whose per-qubit "
            "parameters are known. <em>coverage_95</em> is the share of good qubits whose 95% interval "
            "(±1.96 standard errors) contains the true value: about 0.95 when the model and protocol resolve "
            "the parameter. Lower values are findings, not failures: a readout error ε (≤ 0.001 on these "
            "devices) is absorbed by γ, a noise amplitude η close to 0 trades off against β beyond what a "
            "Wald interval shows, and with gauges only β and γ have a unique truth.</p>"
            + _table_html(list(summary["recovery"].items())))
    for title, png in _figures(dataset, r, fits, truth) + _analysis_figures(fits, analysis):
        sections.append(f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{png}\">")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qasa report — {html.escape(str(d.get('solver')))}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}
img{{max-width:100%}}</style></head>
<body><h1>QASA single-qubit assessment</h1>
<p>Generated {html.escape(summary['created'])} by qasa.</p>
{''.join(sections)}
</body></html>
"""
    atomic_write_bytes(out / "index.html", page.encode())
    return summary


def build_comparison_report(runs: dict[str, tuple[Dataset, FitTable]], out_dir: str | Path,
                            param: str = "beta") -> dict[str, Any]:
    """Compare assessments of the same device: paired per-qubit changes and, when the annealing
    times differ, the trend of each parameter with annealing time.

    Args:
        runs: label → (dataset, fit table), in the order to compare (the first is the reference).
        out_dir: where ``comparison.html``, ``comparison.json`` and per-pair CSVs are written.
        param: parameter whose trend is drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qasa import device as dv
    from qasa import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(runs)
    if len(labels) < 2:
        raise ValueError("a comparison needs at least two assessments")
    ref_label, ref_fit = labels[0], runs[labels[0]][1]
    summary: dict[str, Any] = {"created": utcnow(), "runs": labels, "pairs": {}}
    sections = []
    for label in labels[1:]:
        per, pair = dv.compare_fits(ref_fit, runs[label][1])
        summary["pairs"][f"{ref_label} -> {label}"] = pair
        atomic_write_bytes(out / f"changes_{_slug(ref_label)}_{_slug(label)}.csv", per.to_csv().encode())
        rows = [(p, v) for p, v in pair.items()]
        sections.append(f"<h2>{html.escape(ref_label)} → {html.escape(label)}</h2>"
                        "<p>Per-qubit change with standard error √(se_a² + se_b²); <em>changed</em> counts qubits "
                        "significant at FDR 0.05 (Benjamini–Hochberg); the Wilcoxon test is for a device-wide shift.</p>"
                        + _table_html(rows))
    times = {label: (ds.metadata.get("protocol") or {}).get("annealing_time") for label, (ds, _) in runs.items()}
    figs = []
    if all(t is not None for t in times.values()) and len(set(times.values())) == len(times):
        by_time = {float(times[label]): fit for label, (_, fit) in runs.items()}
        trends = {}
        for p in ref_fit.model.params:
            per, dev_trend = dv.annealing_time_trend(by_time, p)
            trends[p] = dev_trend
        summary["annealing_time_trend"] = trends
        truth = None
        truths = [_truth_median(ds, param) for ds, _ in (runs[lbl] for lbl in sorted(runs, key=lambda k: times[k]))]
        if all(v is not None for v in truths):
            truth = truths
        fig, ax = plt.subplots(figsize=(5, 3.5))
        plots.parameter_vs_annealing_time(trends[param]["levels"], param, truth, ax=ax)
        figs.append((f"{param} versus annealing time", _png(fig)))
        t = trends[param]
        sections.append("<h2>Trend with annealing time</h2><p>"
                        f"Median per-qubit slope of {html.escape(param)}: {t['median_slope_per_decade']:.4g} per decade of "
                        f"annealing time; {t['qubits_increasing']} of {t['qubits']} qubits increase "
                        f"(sign test p = {t['sign_test_p']:.3g}).</p>")
    for title, png in figs:
        sections.append(f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{png}\">")
    summary = json_safe(summary)
    atomic_write_json(out / "comparison.json", summary)
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>qasa comparison</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}img{max-width:100%}</style>"
            f"</head><body><h1>Comparison of QASA assessments</h1><p>{html.escape(', '.join(labels))}</p>"
            + "".join(sections) + "</body></html>\n")
    atomic_write_bytes(out / "comparison.html", page.encode())
    return summary


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


def _truth_median(ds: Dataset, param: str) -> float | None:
    truth = (ds.metadata.get("device") or {}).get("truth")
    if not truth:
        return None
    values = [r[param] for r in truth if param in r]
    return float(np.median(values)) if values else None


def build_analogues_report(nqm: pd.DataFrame, sa: pd.DataFrame, qpu: pd.DataFrame, out_dir: str | Path) -> pd.DataFrame:
    """Write ``analogues.html`` (table + figure), ``analogues.csv`` and ``analogues.json``; return the
    combined table (:func:`qasa.analogues.combined`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qasa.analogues import combined

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = combined(nqm, sa, qpu)
    atomic_write_bytes(out / "analogues.csv", table.to_csv(index=False).encode())
    atomic_write_json(out / "analogues.json", json_safe({"combined": table.to_dict("records"),
                                                      "sgd": nqm.to_dict("records"), "sa": sa.to_dict("records"),
                                                      "qpu": qpu.drop(columns=["anneal_schedule"], errors="ignore").to_dict("records")}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(table))
    for k, (col, name) in enumerate((("sgd_temperature", "SGD ηc/2"), ("sa_temperature", "SA 1/β_eff"),
                                     ("qpu_temperature", "QPU 1/β"))):
        if col in table:
            v = table[col].to_numpy(float)
            rel = v / np.nanmedian(v)
            axes[0].bar(x + (k - 1) * 0.27, rel, width=0.27, label=name)
    axes[0].set_xticks(x, [s.split("(")[0] for s in table["shape"]], rotation=60, ha="right", fontsize=8)
    axes[0].set_ylabel("end temperature / median over shapes")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, frameon=False)
    axes[1].scatter(table["sa_ground_state_probability"], table["sgd_final_loss"])
    for _, r in table.iterrows():
        axes[1].annotate(r["shape"].split("(")[0], (r["sa_ground_state_probability"], r["sgd_final_loss"]), fontsize=7)
    axes[1].set_xlabel("SA ground-state probability")
    axes[1].set_ylabel("SGD final excess loss (best η₀)")
    fig.tight_layout()
    png = _png(fig)
    shown = table.copy()
    shown["shape"] = shown["shape"].str.slice(0, 40)
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>qasa analogues</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;font-size:12px}"
            "th,td{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"
            "<h1>Annealing schedules on three systems</h1><p>Each row is one schedule shape used as an SGD learning "
            "rate (noisy quadratic model, best η₀), a simulated-annealing temperature (planted Ising instance; β_eff from "
            "a QASA fit on isolated spins) and a QPU anneal schedule (QASA on the virtual QPU). Temperatures: SGD ends in a "
            "Gibbs state at ηc/2; SA and QPU at 1/β of the fitted response.</p>"
            + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—")
            + f"<h2>End temperature and quality</h2><img alt=\"analogues\" src=\"data:image/png;base64,{png}\"></body></html>\n")
    atomic_write_bytes(out / "analogues.html", page.encode())
    return table

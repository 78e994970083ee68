"""Display helpers for Jupyter and terminals: short reprs, compact HTML snippets, progress bars.

Every ``__repr__`` here is a few lines (never a whole table, ≤ 2 kB) and every ``_repr_html_`` a
compact card (≤ 20 kB even for a 5 626-qubit device): sizes, ranges, medians and quality counts,
never per-qubit rows. :func:`progress` is a tqdm bar that renders as a widget in notebooks
(``tqdm.auto``) and as text in terminals; :func:`progress_callback` adapts it to the
``progress(done, total)`` callbacks of :func:`qasa.run` and the fitting pipeline.

This module imports no other qasa module at import time, so any class may use it for its reprs.
"""

from __future__ import annotations

import html
import math
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["progress", "progress_callback", "card", "protocol_repr", "protocol_html", "dataset_repr",
           "dataset_html", "fits_repr", "fits_html", "report_repr", "report_html", "sampler_repr", "sampler_html",
           "shorten"]


# -- progress ---------------------------------------------------------------------------------------------
class _NoBar:
    """Stand-in when progress is disabled: accepts the tqdm calls used here."""

    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    err = getattr(sys, "stderr", None)
    return bool(err is not None and hasattr(err, "isatty") and err.isatty())


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None, unit: str = "it"):
    """A progress bar: ``tqdm.auto`` (a widget in Jupyter, text on a terminal's stderr).

    Args:
        iterable: wrap an iterable (as ``tqdm(iterable)``), or ``None`` and call ``update``.
        total: number of steps.
        desc: label.
        disable: ``True`` hides it; ``None`` shows it only in a notebook or an interactive terminal.
        unit: unit label.
    """
    if disable is None:
        disable = not _interactive()
    if disable:
        return iterable if iterable is not None else _NoBar()
    import warnings

    try:
        with warnings.catch_warnings():     # no ipywidgets: tqdm.auto falls back to a text bar, which is fine
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable if iterable is not None else _NoBar()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True, mininterval=0.5)


def progress_callback(desc: str = "calls", disable: bool | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (as :func:`qasa.run` takes) drawing a :func:`progress` bar.

    The bar opens at the first call, follows ``done`` and closes when ``done == total``.
    """
    state: dict[str, Any] = {"bar": None}

    def update(done: int, total: int) -> None:
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = progress(total=total, desc=desc, disable=disable, unit="call" if desc == "calls" else "it")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# -- text helpers -----------------------------------------------------------------------------------------
def shorten(values: Sequence[float] | None, limit: int = 6) -> str:
    """A long list of numbers as ``"81 values in [-1, 1], step 0.025"`` (short lists in full)."""
    if values is None:
        return "None"
    vals = [float(v) for v in values]
    if len(vals) <= limit:
        return "[" + ", ".join(f"{v:g}" for v in vals) + "]"
    s = sorted(vals)
    steps = {round(b - a, 9) for a, b in zip(s, s[1:])}
    step = f", step {steps.pop():g}" if len(steps) == 1 else ""
    return f"{len(vals)} values in [{s[0]:g}, {s[-1]:g}]{step}"


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def card(title: str, rows: Sequence[tuple[str, Any]], footer: str = "") -> str:
    """A compact HTML card: a title and a two-column table (values escaped)."""
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em;font-weight:500'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape(_num(v) if not isinstance(v, str) else v)}</td></tr>"
                   for k, v in rows)
    foot = f"<div style='font-size:11px;color:#666'>{html.escape(footer)}</div>" if footer else ""
    return (f"<div style='border:1px solid #ddd;border-radius:4px;padding:6px 10px;display:inline-block;font-size:12px'>"
            f"<strong>{html.escape(title)}</strong><table style='border-collapse:collapse'>{body}</table>{foot}</div>")


# -- Protocol -----------------------------------------------------------------------------------------------
def _protocol_rows(p: Any) -> list[tuple[str, Any]]:
    if p.anneal_schedule is not None:
        anneal = "schedule " + ", ".join(f"({t:g}, {s:g})" for t, s in p.anneal_schedule[:6]) + (
            " …" if len(p.anneal_schedule) > 6 else "")
    else:
        anneal = f"{p.annealing_time:g} µs" if p.annealing_time is not None else "sampler default"
    return [("h", shorten(p.h_values)), ("reads per h", p.reads_per_h), ("reads per call", p.reads_per_call),
            ("calls per h", p.calls_per_h), ("gauges", "spin-reversal" if p.spin_reversal else "none"),
            ("annealing", anneal), ("h-gain schedule", "yes" if p.h_gain_schedule else "none"),
            ("qubits", "all active" if p.qubits is None else f"{len(p.qubits)} chosen"),
            ("seed", "drawn at run" if p.seed is None else p.seed)]


def protocol_repr(p: Any) -> str:
    """``Protocol(h: 81 values in [-1, 1], step 0.025, reads_per_h=10000, ...)``."""
    parts = [f"h: {shorten(p.h_values)}", f"reads_per_h={p.reads_per_h}", f"reads_per_call={p.reads_per_call}",
             f"gauges_per_h={p.gauges_per_h}", f"spin_reversal={p.spin_reversal}"]
    if p.annealing_time is not None:
        parts.append(f"annealing_time={p.annealing_time:g}")
    if p.anneal_schedule is not None:
        parts.append(f"anneal_schedule={len(p.anneal_schedule)} points")
    if p.h_gain_schedule is not None:
        parts.append(f"h_gain_schedule={len(p.h_gain_schedule)} points")
    parts.append("qubits=all" if p.qubits is None else f"qubits={len(p.qubits)}")
    parts.append(f"seed={p.seed}")
    if p.sampler_params:
        parts.append(f"sampler_params={sorted(p.sampler_params)}")
    return "Protocol(" + ", ".join(parts) + ")"


def protocol_html(p: Any) -> str:
    return card("qasa Protocol", _protocol_rows(p), f"{p.num_calls} calls")


# -- Dataset ------------------------------------------------------------------------------------------------
def _dataset_facts(ds: Any) -> dict[str, Any]:
    dev = ds.device
    totals = ds.totals()         # streamed once (and kept) for a loaded dataset
    n_q, hs, reads = len(totals["qubits"]), totals["h"], totals["reads"]
    topo = dev.get("topology_type")
    shape = dev.get("topology_shape")
    proto = ds.metadata.get("protocol") or {}
    return {"device": dev.get("solver") or "unknown device",
            "topology": f"{topo} {shape}" if topo else "none recorded", "qubits": n_q, "h values": len(hs),
            "calls": int(len(ds.calls)), "qubit-reads": reads,
            "reads per h": proto.get("reads_per_h", "—"),
            "QPU time": (f"{ds.metadata['qpu_access_time_total_us'] / 1e6:.3g} s"
                         if ds.metadata.get("qpu_access_time_total_us") else "—")}


def dataset_repr(ds: Any) -> str:
    """``Dataset(Advantage_system4.1-like, pegasus [16], 5610 qubits, 81 h values, 810 calls, ...)``."""
    f = _dataset_facts(ds)
    return (f"Dataset({f['device']}, {f['topology']}, {f['qubits']} qubits, {f['h values']} h values, "
            f"{f['calls']} calls, {f['qubit-reads']} qubit-reads)")


def dataset_html(ds: Any) -> str:
    return card("qasa Dataset", list(_dataset_facts(ds).items()),
                "counts: dataset.counts (tidy table); as arrays: dataset.response()")


# -- FitTable -----------------------------------------------------------------------------------------------
def _fits_rows(fits: Any) -> list[tuple[str, Any]]:
    import numpy as np

    t = fits.table
    q = t["quality"].value_counts().to_dict() if len(t) else {}
    rows: list[tuple[str, Any]] = [("model", fits.model.name), ("qubits", len(t)),
                                   ("quality", ", ".join(f"{k} {v}" for k, v in q.items()) or "—")]
    good = t[t["quality"] == "good"] if len(t) else t
    for p in fits.model.params:
        v = good[p].to_numpy(float) if len(good) else np.array([])
        v = v[np.isfinite(v)]
        rows.append((f"{p} median [IQR]", f"{np.median(v):.4g} [{np.quantile(v, .25):.4g}, {np.quantile(v, .75):.4g}]"
                     if v.size else "—"))
    return rows


def fits_repr(fits: Any) -> str:
    """``FitTable(model='qasa', qubits=5610, quality={'good': ...}, beta median 5.05, ...)``."""
    rows = dict(_fits_rows(fits))
    meds = "; ".join(f"{k.split()[0]} {v}" for k, v in rows.items() if k.endswith("[IQR]"))
    return f"FitTable(model={fits.model.name!r}, qubits={rows['qubits']}, quality: {rows['quality']}; medians [IQR]: {meds})"


def fits_html(fits: Any) -> str:
    return card("qasa FitTable", _fits_rows(fits), "per qubit: fits.table; plots: fits.plot_map(param), fits.plot_histogram(param)")


# -- analysis report ------------------------------------------------------------------------------------------
def report_repr(rep: Any) -> str:
    q = rep.quality
    t = rep.temperature.get("T_eff")
    return (f"AssessmentReport({rep.provenance.get('Device (solver)')}, {sum(q.values())} qubits "
            f"({q.get('good', 0)} good), model {rep.model}, T_eff {_num(t)}, "
            f"{len(rep.notes)} note(s); render with qasa.report.render(report, out_dir))")


def report_html(rep: Any) -> str:
    from qasa.parameters import format_value, parameter_info

    rows: list[tuple[str, Any]] = [(k, rep.provenance.get(k)) for k in
                                   ("Device (solver)", "Topology", "Qubits assessed", "h grid", "Reads per h value",
                                    "Annealing") if k in rep.provenance]
    rows = [(k, format_value(v) if not isinstance(v, str) else v) for k, v in rows]
    rows.append(("quality", ", ".join(f"{k} {v}" for k, v in rep.quality.items())))
    t = rep.temperature
    rows.append(("T_eff (units of h)", format_value(t.get("T_eff"), t.get("T_eff_stderr"), with_error=True)))
    for p, s in rep.summary.iterrows():
        rows.append((f"{parameter_info(p).symbol} median", format_value(s["median"], s["median_se"], with_error=True)))
    if rep.comparison is not None and rep.comparison["aic_total"].notna().any():
        rows.append(("preferred model (AIC)", str(rep.comparison.sort_values("aic_total")["model"].iloc[0])))
    html_rows = card("qasa assessment report", rows, "qasa.report.render(report, out_dir) writes the full page")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
    return html_rows + (f"<ul style='font-size:12px;color:#8a5a00'>{notes}</ul>" if notes else "")


# -- samplers (VirtualQPU) --------------------------------------------------------------------------------------
def _sampler_rows(s: Any) -> list[tuple[str, Any]]:
    props = getattr(s, "properties", {}) or {}
    topo = props.get("topology") or {}
    rows: list[tuple[str, Any]] = [("solver", props.get("chip_id") or type(s).__name__),
                                   ("topology", f"{topo.get('type')} {topo.get('shape')}" if topo else "—"),
                                   ("qubits", len(getattr(s, "nodelist", []) or [])),
                                   ("couplers", len(getattr(s, "edgelist", []) or []))]
    for key in ("preset", "physics", "seed"):
        v = getattr(s, key, None)
        if v is not None and not callable(v):
            rows.append((key, getattr(v, "name", v) if key == "preset" else v))
    return rows


def sampler_repr(s: Any) -> str:
    """``VirtualQPU(Advantage_system4.1-like, pegasus [16], 5627 qubits, ...)``."""
    return f"{type(s).__name__}(" + ", ".join(f"{k}={v}" for k, v in _sampler_rows(s)) + ")"


def sampler_html(s: Any, extra: Mapping[str, Any] | None = None) -> str:
    rows = _sampler_rows(s) + list((extra or {}).items())
    return card(f"qasa {type(s).__name__}", rows, "hidden per-qubit truth: .truth")

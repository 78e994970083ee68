"""Rendering: an analysis object (:mod:`qasa.analysis`) → one self-contained HTML page, figures, CSVs, JSON.

:func:`render` is the one entry point. Every page (assessment, comparison, analogues) is built from
one template (:data:`PAGE`): a header with provenance and parameter definitions, a table of
contents, sections of real HTML tables (each with a CSV link beside it) and figures. Figures are
drawn on :class:`matplotlib.figure.Figure` objects — never through ``pyplot`` and never with
``matplotlib.use`` — written beside the page as SVG (and PDF on request) for papers, and the same
SVG embedded in the page. Maps of each parameter are interactive in the page (a small canvas script: hover for the
qubit id, coordinates, every parameter with its 95% interval and the fit quality; wheel to zoom,
drag to pan, double-click to reset) and static vector SVG files beside it.

The page opens offline: everything it shows is inside the HTML file; small tables are linked as
``data:`` URIs, large ones (``fits.csv``) as files in the same directory. Every file is written
atomically (a reader never sees half a file) but not fsynced: a report can be made again from its
dataset.

:func:`build_report`, :func:`build_comparison_report` and :func:`build_analogues_report` are
thin wrappers (analysis + rendering) kept for callers of the earlier API.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from qasa.analysis import (
    AnaloguesReport,
    AssessmentReport,
    ComparisonReport,
    IMPORTED_NOISE,
    analyze,
    analyze_analogues,
    analyze_comparison,
    json_safe,
    pooled_temperature,
)
from qasa.dataset import Dataset, Response, atomic_write_bytes, atomic_write_json
from qasa.fitting import FitTable
from qasa.parameters import format_value, parameter_info, round_to_uncertainty

__all__ = ["check_report_dir", "render", "render_shim", "svg_map", "build_report", "build_comparison_report", "build_analogues_report", "json_safe",
           "pooled_temperature", "summarize", "PAGE"]

#: Tables at most this large (bytes of CSV) are linked as data: URIs inside the page.
INLINE_CSV_BYTES = 200_000

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em}.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.4em 0;font-size:13px}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
thead th{background:#f3f3f3}
.tbl{display:flex;align-items:flex-start;gap:.8em;flex-wrap:wrap;max-width:100%}.tbl .dl{font-size:12px;margin-top:.5em}
.tbl table{display:block;max-width:100%;overflow-x:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1em}
.prov td:first-child{width:15em;background:#fafafa}
.notes{background:#fff6e0;border:1px solid #f0d080;padding:.5em 1em;border-radius:4px}
figure{margin:.8em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#444}.links{font-size:12px}
nav ul{columns:3;font-size:13px;padding-left:1.2em}
.qmap{position:relative;display:inline-block;margin:.4em .8em .8em 0;vertical-align:top}
.qmap canvas.map{border:1px solid #ccc;cursor:crosshair;touch-action:none;background:#fff}
.qmap .bar{display:flex;align-items:center;gap:.4em;font-size:12px}
.qmap .tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #888;
padding:4px 6px;font-size:12px;white-space:pre;display:none;z-index:5;box-shadow:1px 1px 4px rgba(0,0,0,.2)}
.qmap button{font-size:12px;padding:0 .5em}
footer{margin-top:2em;font-size:12px;color:#666}
"""

#: The one page template of every report (assessment, comparison, analogues).
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
<header id="top"><h1>{title}</h1><p class="sub">{subtitle}</p>{notes}{header}</header>
<nav><h2>Contents</h2><ul>{toc}</ul></nav>
{sections}
<footer>Generated {created} by qasa {version}. Figures: vector SVG{pdf} beside this page and inside it;
tables: CSV links beside each table.</footer>
{script}
</body></html>
"""


# -- page helpers ---------------------------------------------------------------------------------------
class _Page:
    """Collects the sections, figures and tables of one page and writes their files."""

    def __init__(self, out: Path, formats: Sequence[str]):
        self.out = out
        self.formats = tuple(f for f in formats if f in ("svg", "pdf"))
        self.sections: list[tuple[str, str, str]] = []
        self.files: list[str] = []

    def section(self, key: str, title: str, body: str) -> None:
        self.sections.append((key, title, body))

    def csv(self, df: pd.DataFrame, name: str, index: bool = False) -> str:
        """Write ``name`` beside the page; return a link (a data: URI when small)."""
        data = df.to_csv(index=index).encode()
        atomic_write_bytes(self.out / name, data, durable=False)
        self.files.append(name)
        if len(data) <= INLINE_CSV_BYTES:
            href = "data:text/csv;charset=utf-8;base64," + base64.b64encode(data).decode()
        else:
            href = html.escape(name)
        return f'<a class="dl" href="{href}" download="{html.escape(name)}">⤓ {html.escape(name)}</a>'

    def table(self, rows: list[list[str]], header: Sequence[str], csv: pd.DataFrame | None = None,
              name: str | None = None, numeric: Sequence[bool] | None = None, index_csv: bool = False,
              css: str = "") -> str:
        """An HTML table of already formatted cells, with a CSV link beside it (raw numbers)."""
        numeric = list(numeric) if numeric is not None else [False] * len(header)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(
            f'<td class="n">{html.escape(c)}</td>' if numeric[i] else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(r)) + "</tr>" for r in rows)
        link = self.csv(csv, name, index=index_csv) if csv is not None and name else ""
        cls = f' class="{css}"' if css else ""
        return f'<div class="tbl"><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{link}</div>'

    def figure(self, fig, name: str, caption: str) -> str:
        """Write ``fig`` beside the page (SVG, and PDF on request) and embed the SVG as an image.

        The figure is drawn once per format; the page shows the same vector file it links to.
        """
        import matplotlib

        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):   # text stays text: small, fast, searchable
            fig.savefig(buf, format="svg")
        fig.set_layout_engine("none")          # keep the layout just computed for further formats
        svg = buf.getvalue()
        atomic_write_bytes(self.out / f"{name}.svg", svg, durable=False)
        self.files.append(f"{name}.svg")
        links = [f'<a href="{name}.svg">SVG</a>']
        if "pdf" in self.formats:
            fig.savefig(self.out / f"{name}.pdf", format="pdf")
            self.files.append(f"{name}.pdf")
            links.append(f'<a href="{name}.pdf">PDF</a>')
        data = base64.b64encode(svg).decode()
        return (f'<figure><img alt="{html.escape(caption)}" src="data:image/svg+xml;base64,{data}">'
                f'<figcaption>{html.escape(caption)} <span class="links">{" · ".join(links)}</span></figcaption></figure>')

    def write(self, filename: str, title: str, subtitle: str, created: str, header: str = "",
              notes: Sequence[str] = (), script: str = "") -> Path:
        from qasa.analysis import _qasa_version

        toc = "".join(f'<li><a href="#{k}">{html.escape(t)}</a></li>' for k, t, _ in self.sections)
        sections = "".join(f'<section id="{k}"><h2>{html.escape(t)}</h2>{b}</section>' for k, t, b in self.sections)
        note_html = ('<div class="notes"><strong>Note</strong><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul></div>") if notes else ""
        page = PAGE.format(title=html.escape(title), css=_CSS, subtitle=html.escape(subtitle), notes=note_html,
                           header=header, toc=toc, sections=sections, created=html.escape(created),
                           version=html.escape(_qasa_version()), pdf=" and PDF" if "pdf" in self.formats else "",
                           script=script)
        path = self.out / filename
        atomic_write_bytes(path, page.encode(), durable=False)
        return path


def _figure(width: float, height: float, margins: dict[str, float] | None = None):
    """A matplotlib Figure that belongs to no pyplot state (no backend switch).

    With ``margins`` (``subplots_adjust`` keywords) the layout is fixed, which draws a
    multi-panel figure about a third faster than the constrained layout used otherwise.
    """
    from matplotlib.figure import Figure

    if margins is None:
        return Figure(figsize=(width, height), layout="constrained")
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(**margins)
    return fig


#: Fixed margins of a row of small panels (histograms, recovery) and of the response-curve pair.
_ROW = {"left": 0.06, "right": 0.99, "bottom": 0.17, "top": 0.88, "wspace": 0.32}
_PAIR = {"left": 0.09, "right": 0.99, "bottom": 0.13, "top": 0.92, "wspace": 0.24}
#: Fixed margins of a single panel, and of one or two correlation matrices with their colour bars.
_SINGLE = {"left": 0.18, "right": 0.97, "bottom": 0.14, "top": 0.96}
_MATRIX = {"left": 0.1, "right": 0.97, "bottom": 0.08, "top": 0.93}
_MATRIX_PAIR = {"left": 0.05, "right": 0.97, "bottom": 0.08, "top": 0.93, "wspace": 0.2}


def _fmt(v: Any, se: Any = None, **kw: Any) -> str:
    return format_value(v, se, **kw)


def _p(v: float | None) -> str:
    """A p-value: two significant digits, '< 0.001' below."""
    if v is None or not np.isfinite(v):
        return "—"
    return "< 0.001" if v < 1e-3 else f"{v:#.2g}".rstrip(".")


def _pv(v: float | None) -> str:
    """``"= 0.012"`` or ``"< 0.001"`` after a "p"."""
    text = _p(v)
    return text if text.startswith("<") else f"= {text}"


def _label(p: str) -> str:
    info = parameter_info(p)
    return f"{info.symbol} — {info.name}" + (f" ({info.unit})" if info.unit else "")


def _progress(enabled: bool | None, total: int, desc: str):
    from qasa.display import progress

    return progress(total=total, desc=desc, disable=not enabled if enabled is not None else None)


# -- entry point ------------------------------------------------------------------------------------

def check_report_dir(out_dir: str | Path) -> Path:
    """A report directory that can be made: not an existing file, and not under one.

    Called before anything is fitted or written (``qasa report --out FILE`` would otherwise leave
    the fits cached in the dataset before failing on the directory).

    Raises:
        DatasetError: naming the path and what is allowed.
    """
    from qasa.errors import DatasetError

    out = Path(out_dir)
    if not str(out).strip():
        raise DatasetError("--out '' is empty: give a report directory (default DATASET/report)")
    for where in (out, *out.parents):
        if where.exists():
            if not where.is_dir():
                raise DatasetError(f"--out {out}: {where} is a file, not a directory; allowed: a directory "
                                   "that exists or can be created")
            break
    return out


def render(report: AssessmentReport | ComparisonReport | AnaloguesReport, out_dir: str | Path, *,
           formats: Sequence[str] = ("svg",), progress: bool | None = False) -> Path:
    """Write the report's page, figures, CSV tables and JSON summary into ``out_dir``.

    Args:
        report: from :func:`qasa.analysis.analyze`, :func:`~qasa.analysis.analyze_comparison` or
            :func:`~qasa.analysis.analyze_analogues`.
        out_dir: directory (created if needed).
        formats: vector formats written beside the page for every figure: ``"svg"``, ``"pdf"``.
        progress: show a progress bar (``None``: only in a notebook or terminal).

    Returns:
        The path of the HTML page (``index.html``, ``comparison.html`` or ``analogues.html``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(report, AssessmentReport):
        return _render_assessment(report, out, formats, progress)
    if isinstance(report, ComparisonReport):
        return _render_comparison(report, out, formats)
    if isinstance(report, AnaloguesReport):
        return _render_analogues(report, out, formats)
    raise TypeError(f"cannot render {type(report).__name__}; give an object from qasa.analysis")


# -- assessment ---------------------------------------------------------------------------------------
def _header(rep: AssessmentReport, page: _Page) -> str:
    prov_df = pd.DataFrame({"item": list(rep.provenance), "value": [_fmt(v) for v in rep.provenance.values()]})
    prov = page.table([[k, v] for k, v in prov_df.itertuples(index=False)], ["item", "value"], prov_df,
                      "provenance.csv", css="prov")
    defs_df = pd.DataFrame([{"parameter": p, "symbol": parameter_info(p).symbol, "name": parameter_info(p).name,
                             "unit": parameter_info(p).unit, "definition": parameter_info(p).definition}
                            for p in rep.params])
    defs = page.table(defs_df[["symbol", "name", "unit", "definition"]].values.tolist(),
                      ["symbol", "name", "unit", "definition"], defs_df, "parameters.csv")
    q = rep.quality
    t = rep.temperature
    teff = _fmt(t.get("T_eff"), t.get("T_eff_stderr"), with_error=True)
    ci = (f" (95% CI [{_fmt(t['T_eff_lo'], t.get('T_eff_stderr'))}, {_fmt(t['T_eff_hi'], t.get('T_eff_stderr'))}])"
          if t.get("T_eff_lo") is not None and np.isfinite(t.get("T_eff_lo", np.nan)) else "")
    headline = (f"<p><strong>{q.get('good', 0)}</strong> of {sum(q.values())} qubits fitted well by the "
                f"<code>{html.escape(rep.model)}</code> model ({q.get('bad', 0)} bad, {q.get('failed', 0)} failed; "
                "quality rule in <code>qasa.fitting</code>). Effective temperature T<sub>eff</sub> = "
                f"<strong>{html.escape(teff)}</strong>{html.escape(ci)} in units of h (β<sub>eff</sub> = "
                f"{html.escape(_fmt(t.get('beta'), t.get('beta_stderr'), with_error=True))}).</p>"
                f"<p class=\"sub\" style=\"font-size:13px\">{html.escape(str(t.get('method', '')))}</p>")
    return (headline + '<div class="grid"><div><h3>Provenance</h3>' + prov + "</div>"
            f'<div><h3>Parameters</h3>{defs}<p class="sub">Model: <code>{html.escape(rep.model)}</code>; '
            "P(s = −1 | h) = (1 + m(h))/2 with m from <code>qasa.models</code> (docs/DESIGN.md §3).</p></div></div>")


def _summary_section(rep: AssessmentReport, page: _Page) -> str:
    rows = []
    for p, s in rep.summary.iterrows():
        se = s["median_se"]
        _, dec = _round(s["median"], se)
        rows.append([_label(p), _fmt(int(s["n"])), _fmt(s["median"], se, with_error=True),
                     f"[{_fixed(s['q25'], dec)}, {_fixed(s['q75'], dec)}]", _fmt(s["mean"], s["mean_se"], with_error=True),
                     _fmt(s["sd"], s["sd"])])
    csv = rep.summary.reset_index()
    table = page.table(rows, ["parameter", "qubits", "median ± se", "IQR [q25, q75]", "mean ± se", "sd"], csv,
                       "summary.csv", numeric=[False, True, True, True, True, True])
    qual = pd.DataFrame({"quality": list(rep.quality), "qubits": list(rep.quality.values())})
    reasons = rep.fits.table.loc[rep.fits.table["quality"] != "good", "reason"].value_counts().head(8)
    rtable = page.table([[r, _fmt(int(n))] for r, n in reasons.items()], ["reason a qubit is not good", "qubits"],
                        reasons.rename_axis("reason").reset_index(name="qubits"), "not_good_reasons.csv",
                        numeric=[False, True]) if len(reasons) else ""
    fits_link = page.csv(rep.fits.table, "fits.csv")
    return ("<p>Over good qubits. The standard error of the median is 1.2533·sd/√n; every number is rounded to "
            "two significant digits of its uncertainty.</p>" + table
            + page.table([[k, _fmt(v)] for k, v in rep.quality.items()], ["fit quality", "qubits"], qual, "quality.csv",
                         numeric=[False, True])
            + rtable + f"<p>Every qubit's parameters, standard errors and statistics: {fits_link}</p>")


def _round(v: float, se: float) -> tuple[float, int]:

    return round_to_uncertainty(v, se)


def _fixed(v: float, decimals: int) -> str:
    if v is None or not np.isfinite(v):
        return "—"
    return f"{round(v, decimals):.{max(decimals, 0)}f}"


def _comparison_section(rep: AssessmentReport, page: _Page) -> str:
    c = rep.comparison
    rows = [[r["model"], _fmt(r["params"]) if np.isfinite(r["params"]) else "—", _fmt(int(r["qubits"])),
             _fmt(r["delta_aic"], 1.0), _fmt(r["delta_bic"], 1.0),
             _pct(r["prefer_aic"]), _pct(r["prefer_bic"]), _fmt(r["aic_total"], 1.0)]
            for _, r in c.iterrows()]
    table = page.table(rows, ["model", "parameters", "qubits", "ΔAIC", "ΔBIC", "qubits preferring (AIC)",
                              "qubits preferring (BIC)", "total AIC"], c, "model_comparison.csv",
                       numeric=[False, True, True, True, True, True, True, True])
    tests = "".join(f"<li>{html.escape(t['small'])} against {html.escape(t['big'])}: summed likelihood-ratio "
                    f"statistic {_fmt(t['lr_total'], 1.0)} on {t['df']} df, p {_pv(t['pvalue'])}; "
                    f"{t['qubits_rejecting_small_at_0.01']} qubits reject {html.escape(t['small'])} at 0.01</li>"
                    for t in rep.tests)
    return ("<p>Totals over the qubits fitted by every model; Δ is against the lowest total (0 = preferred). "
            "A difference above 10 is decisive. Likelihood-ratio p-values are conservative when the extra "
            "parameters sit on a bound.</p>" + table + (f"<ul>{tests}</ul>" if tests else ""))


def _pct(v: float) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.1f} %"


def _map_data(rep: AssessmentReport) -> dict[str, Any]:
    """Column arrays for the interactive maps (values rounded to 5 significant digits)."""
    from qasa.analysis import _interval

    lay = rep.layout
    t = rep.fits.table.set_index("qubit")
    t = t[~t.index.duplicated()]
    ids = [q for q in lay.index if q in t.index]
    t = t.loc[ids]
    lay = lay.loc[ids]

    def r5(a):
        a = np.asarray(a, float)
        ok = np.isfinite(a)
        # float(f"{x:.5g}") of every finite value, formatted in one call and parsed by numpy
        rounded = np.array(("%.5g " * int(ok.sum()) % tuple(a[ok].tolist())).split(), dtype=float)
        out: list[float | None] = [None] * len(a)
        for i, v in zip(np.flatnonzero(ok).tolist(), rounded.tolist()):
            out[i] = v
        return out

    params = {}
    good = (t["quality"] == "good").to_numpy()
    lower = dict(zip(rep.fits.model.params, rep.fits.model.lower))
    for p in rep.params:
        v = t[p].to_numpy(float)
        lo, hi = _interval(t, p)
        ok = good & np.isfinite(v)
        lo_c, hi_c = (np.percentile(v[ok], [1, 99]) if ok.any() else (0.0, 1.0))
        signed = bool(lower.get(p, 0.0) < 0)            # a signed parameter (b): a diverging scale centred on 0
        if signed:
            m = max(abs(lo_c), abs(hi_c)) or 1.0
            lo_c, hi_c = -m, m
        info = parameter_info(p)
        params[p] = {"v": r5(v), "lo": r5(lo), "hi": r5(hi), "range": [float(lo_c), float(hi_c)],
                     "symbol": info.symbol, "unit": info.unit, "signed": signed}
    x, y = lay["x"].to_numpy(float), lay["y"].to_numpy(float)
    return {"ids": [int(q) for q in ids], "x": [round(float(a), 5) for a in x], "y": [round(float(a), 5) for a in y],
            "coord": [list(c) for c in lay["coord"]], "coord_names": list(lay.attrs.get("coord_names", [])),
            "quality": t["quality"].tolist(), "reason": t["reason"].fillna("").tolist(),
            "cell": _cell_size(x, y), "params": params, "order": rep.params, "title": _map_title(rep)}


def _map_title(rep: AssessmentReport) -> str:
    """What a map shows, for its vector file: the run (device, collection dates) and the analysis date."""
    collected = str(rep.provenance.get("Collected", "—"))
    return f"{rep.title} · collected {collected} · analysed {rep.created[:10]}"


#: Width of an interactive map (CSS pixels); its height follows the device's aspect ratio.
MAP_WIDTH = 640


def _map_canvas(data: dict[str, Any]) -> tuple[int, int]:
    """Canvas size of a map: :data:`MAP_WIDTH` wide, as tall as the layout's aspect asks (within 0.3–1.5×)."""
    x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)
    if not len(x):
        return MAP_WIDTH, MAP_WIDTH
    w, h = np.ptp(x) + 2 * data["cell"], np.ptp(y) + 2 * data["cell"]
    return MAP_WIDTH, int(round(MAP_WIDTH * float(np.clip(h / max(w, 1e-12), 0.3, 1.5))))


def _cell_size(x: np.ndarray, y: np.ndarray) -> float:
    """Side of a qubit's square in layout units: 0.9 × the median nearest-neighbour distance."""
    if len(x) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    xy = np.column_stack([x, y])
    d, _ = cKDTree(xy).query(xy, k=2)
    nn = d[:, 1]
    nn = nn[nn > 0]
    return float(0.9 * np.median(nn)) if nn.size else 1.0


def _maps_section(rep: AssessmentReport, page: _Page, formats: Sequence[str]) -> tuple[str, str]:
    data = _map_data(rep)
    width, height = _map_canvas(data)
    blocks = []
    for p in rep.mapped:
        info = parameter_info(p)
        blocks.append(
            f'<div class="qmap" data-param="{html.escape(p)}"><div class="bar"><strong>{html.escape(info.symbol)}</strong>'
            f'<span>{html.escape(info.name)}{" (" + html.escape(info.unit) + ")" if info.unit else ""}</span>'
            '<button data-z="1.5">+</button><button data-z="0.667">−</button><button data-z="0">reset</button></div>'
            f'<canvas class="map" width="{width}" height="{height}"></canvas>'
            '<div class="bar"><span class="lo"></span><canvas class="cbar" width="200" height="10"></canvas>'
            '<span class="hi"></span><span>grey: not good</span></div><div class="tip"></div></div>')
    signed = [parameter_info(p).symbol for p in rep.mapped if data["params"][p]["signed"]]
    static = _static_maps(rep, page, formats, data)
    text = ("<p>Each square is a qubit at its place in D-Wave's layout of the device (dwave.graphs). Hover for the "
            "qubit's id, coordinates, every parameter with its 95% interval and its fit quality; scroll to zoom, "
            "drag to pan, double-click to reset; the hovered qubit is outlined, a clicked one is marked on every map. "
            "Each unit cell of the chip is a block of squares at its place in the cell grid (qasa.topology.tile_positions). "
            "Colours span the 1st–99th percentile of good qubits"
            + (f" ({', '.join(signed)}: a diverging scale symmetric about 0, red positive, blue negative)" if signed else "")
            + f"; qubits that are not good are grey. Vector versions: {static}</p>")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    script = (f'<script type="application/json" id="qasa-map-data">{payload}</script>'
              f"<script>{_MAP_JS}</script>")
    return text + "".join(blocks), script


def _static_maps(rep: AssessmentReport, page: _Page, formats: Sequence[str], data: dict[str, Any]) -> str:
    """One vector SVG map per mapped parameter (``map_<param>.svg``), PDF on request (matplotlib)."""
    links = []
    for p in rep.mapped:
        atomic_write_bytes(page.out / f"map_{p}.svg", svg_map(data, p).encode(), durable=False)
        page.files.append(f"map_{p}.svg")
        links.append(f'<a href="map_{p}.svg">map_{p}.svg</a>')
    if "pdf" in formats:
        from qasa import plots

        lay = rep.layout
        t = rep.fits.table.set_index("qubit")
        t = t[~t.index.duplicated()]
        ids = [q for q in lay.index if q in t.index]
        good = t.loc[ids, "quality"].to_numpy() == "good"
        for p in rep.mapped:
            fig = _figure(6, 5.4)
            v = np.where(good, t.loc[ids, p].to_numpy(float), np.nan)
            P = data["params"][p]
            ax = fig.subplots()
            plots.layout_map(lay.loc[ids, "x"], lay.loc[ids, "y"], v, ax=ax, label=parameter_info(p).label,
                             size=float(np.clip(9000.0 / max(len(ids), 1), 0.6, 40.0)),
                             cmap="RdBu_r" if P["signed"] else "viridis", vmin=P["range"][0], vmax=P["range"][1])
            ax.set_title(f"{parameter_info(p).label} per qubit\n{data['title']}", fontsize=8)
            fig.savefig(page.out / f"map_{p}.pdf", format="pdf")
            page.files.append(f"map_{p}.pdf")
            links.append(f'<a href="map_{p}.pdf">map_{p}.pdf</a>')
    return " · ".join(links) + "."


def svg_map(data: dict[str, Any], param: str, width: int = 640) -> str:
    """A standalone vector SVG map of one parameter from :func:`_map_data` (one square per qubit).

    Good qubits are coloured with viridis over the 1st–99th percentile of good qubits, the others
    grey; a colour bar with the range and the parameter's label is drawn below the map.
    """
    from matplotlib import colormaps

    x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)
    cell = float(data["cell"])
    P = data["params"][param]
    v = np.array([np.nan if a is None else a for a in P["v"]], float)
    good = np.array([q == "good" for q in data["quality"]]) & np.isfinite(v)
    lo, hi = P["range"]
    span = hi - lo if hi > lo else 1.0
    x0, x1, y0, y1 = x.min() - cell, x.max() + cell, y.min() - cell, y.max() + cell
    scale = width / max(x1 - x0, 1e-12)
    height = int(round((y1 - y0) * scale))
    cmap = colormaps["RdBu_r" if P.get("signed") else "viridis"]
    rgba = cmap(np.clip((v - lo) / span, 0, 1))
    rgb = (rgba[:, :3] * 255).astype(int)                   # int(c * 255), as the colour bar below
    hexes = ("#%02x%02x%02x " * len(rgb) % tuple(rgb.ravel().tolist())).split()
    fill = [h if g else "#c8c8c8" for h, g in zip(hexes, good.tolist())]
    side = cell * scale
    top = 34                                                   # the title lines above the map
    px, py = (x - x0) * scale - side / 2, (y1 - y) * scale - side / 2 + top
    rect = f'<rect x="%.2f" y="%.2f" width="{side:.2f}" height="{side:.2f}" fill="%s"><title>qubit %d</title></rect>'
    rects = rect * len(px) % tuple(v for row in zip(px.tolist(), py.tolist(), fill, data["ids"]) for v in row)
    stops = "".join(f'<stop offset="{t:.2f}" stop-color="#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"/>'
                    for t, (r, g, b, _) in zip(np.linspace(0, 1, 11), cmap(np.linspace(0, 1, 11))))
    label = f"{P['symbol']}" + (f" ({P['unit']})" if P["unit"] else "")
    bar_y = height + top + 18
    total = height + top + 60
    title = (f'<text x="6" y="14" font-size="13" font-weight="bold">{html.escape(label)} per qubit</text>'
             f'<text x="6" y="28" font-size="10">{html.escape(str(data.get("title", "")))}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
            f'viewBox="0 0 {width} {total}" font-family="sans-serif" font-size="12">'
            f'<defs><linearGradient id="cb">{stops}</linearGradient></defs>'
            f'<rect width="{width}" height="{total}" fill="#ffffff"/>{title}<g>{rects}</g>'
            f'<rect x="{width * 0.25:.1f}" y="{bar_y}" width="{width * 0.5:.1f}" height="10" fill="url(#cb)"/>'
            f'<text x="{width * 0.25 - 6:.1f}" y="{bar_y + 9}" text-anchor="end">{html.escape(_fmt(lo))}</text>'
            f'<text x="{width * 0.75 + 6:.1f}" y="{bar_y + 9}">{html.escape(_fmt(hi))}</text>'
            f'<text x="{width / 2:.1f}" y="{bar_y + 28}" text-anchor="middle">{html.escape(label)} — grey: not good</text>'
            "</svg>\n")


def _curves_section(rep: AssessmentReport, page: _Page) -> str:
    from qasa import plots

    first = rep.params[0]
    t = rep.fits.table.set_index("qubit")
    labels = {q: f"qubit {q}, {parameter_info(first).symbol} = {_fmt(t.loc[q, first], t.loc[q, f'{first}_stderr'])}"
              for q in rep.curve_qubits if q in t.index}
    fig = _figure(10, 3.8, _PAIR)
    ax, rax = fig.subplots(1, 2, width_ratios=[3, 2])
    plots.response_spread(rep.response, rep.fits, rep.curve_qubits, rep.median_curve, ax=ax, residual_ax=rax,
                          labels=labels)
    ax.set_title(f"qubits at the 5, 25, 50, 75, 95 % quantiles of {parameter_info(first).symbol}", fontsize=9)
    rax.set_title(f"residuals of the {rep.model} fit", fontsize=9)
    med = pd.DataFrame({"h": rep.response.h, "device_median_p_down": rep.median_curve})
    link = page.csv(med, "device_median_response.csv")
    return ("<p>The spread of the device: each qubit's observed P(s = −1) minus the device's median response "
            "(points with binomial 1σ bars), its fitted curve (line) and the fit's 95% pointwise band (shaded); right, "
            "the Pearson residuals (observed − fitted)/√(p(1−p)/N), within ±2 for a good fit. Device median: "
            f"{link}</p>" + page.figure(fig, "response_curves", "Response curves relative to the device median"))


def _distributions_section(rep: AssessmentReport, page: _Page) -> str:
    from qasa import plots

    good = rep.fits.table[rep.fits.table["quality"] == "good"]
    k = len(rep.params)
    fig = _figure(3.1 * k, 2.9, dict(_ROW, left=0.24 / k))
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, p in zip(axes, rep.params):
        plots.parameter_histogram(good[p].to_numpy(float), p, ax=ax, stderr=good[f"{p}_stderr"].to_numpy(float),
                                  label=parameter_info(p).label)
    return page.figure(fig, "distributions", "Distributions over good qubits: median (dashed), interquartile range "
                                             "(shaded) and a typical qubit's 95% interval (red bar)")


def _correlation_section(rep: AssessmentReport, page: _Page) -> str:
    from qasa import plots

    corr = rep.device["correlations"]
    if not len(corr):
        return "<p>Too few good qubits with two varying parameters for correlations.</p>"
    has = "corrected" in corr
    rows = []
    for _, r in corr.iterrows():
        row = [f"{parameter_info(r['a']).symbol} – {parameter_info(r['b']).symbol}", _fmt(int(r["n"])),
               f"{r['pearson']:.2f} [{r['pearson_lo']:.2f}, {r['pearson_hi']:.2f}]",
               f"{r['spearman']:.2f} [{r['spearman_lo']:.2f}, {r['spearman_hi']:.2f}]"]
        if has:
            c = r["corrected"]
            row += [f"{r['noise_corr']:.2f}" if np.isfinite(r["noise_corr"]) else "—",
                    (f"{c:.2f} [{r['corrected_lo']:.2f}, {r['corrected_hi']:.2f}]" if np.isfinite(c) else "undefined" if r["identified"] else "not mapped"),
                    "yes" if r["identified"] else "no"]
        rows.append(row)
    header = ["pair", "qubits", "Pearson r [95% CI]", "Spearman ρ [95% CI]"] + (
        ["estimation-error correlation", "corrected r [95% CI]", "both mapped"] if has else [])
    table = page.table(rows, header, corr, "correlations.csv", numeric=[False] + [True] * (len(header) - 1))
    fig = _figure(4.6 * (2 if has else 1), 3.9, _MATRIX_PAIR if has else _MATRIX)
    axes = fig.subplots(1, 2 if has else 1, squeeze=False)[0]
    labels = [parameter_info(p).symbol for p in rep.params]
    plots.correlation_matrix(corr, rep.params, ax=axes[0], method="pearson", labels=labels)
    axes[0].set_title("raw (fitted values)", fontsize=9)
    if has:
        plots.correlation_matrix(corr, rep.params, ax=axes[1], method="corrected", labels=labels)
        axes[1].set_title("corrected for estimation error", fontsize=9)
    text = ("<p>Across good qubits. One qubit's fitted parameters are correlated through its likelihood as well as "
            "through the device (docs/DESIGN.md §6). The corrected correlation removes the mean estimation "
            "covariance (errors in variables: from two halves of the calls, <code>qasa.device.split_half</code>, or "
            "from the fits' covariances, <code>qasa.device.corrected_correlations</code>; bootstrap interval over "
            "qubits); only pairs of mapped parameters (the maps' rule, <code>qasa.device.mapped</code>) have one.</p>")
    return text + table + page.figure(fig, "correlations", "Correlations between parameters: raw and corrected")


def _reliability_section(rep: AssessmentReport, page: _Page) -> str:
    rel = rep.reliability
    rows = []
    for p, r in rel.iterrows():
        rows.append([_label(p), f"{r['reliability']:.2f} [{r['reliability_lo']:.2f}, {r['reliability_hi']:.2f}]"
                     if np.isfinite(r.get("reliability_lo", np.nan)) else _fmt(r.get("reliability")),
                     _fmt(r.get("sd_true"), None), "yes" if r.get("identified") else "no", str(r.get("verdict", ""))])
    return ("<p>The reliability of a parameter is the share of its spread across qubits that is the device rather "
            "than estimation noise (<code>qasa.device.reliability</code>); parameters below 0.5 are not mapped and "
            "their correlations and spatial statistics are not device findings.</p>"
            + page.table(rows, ["parameter", "reliability [95% CI]", "sd of the true values", "mapped", "verdict"],
                         rel.reset_index(), "reliability.csv", numeric=[False, True, True, False, False]))


def _spatial_section(rep: AssessmentReport, page: _Page) -> str:
    from qasa import plots

    a = rep.device
    findings = "".join(f"<li>{html.escape(f)}</li>" for f in a["findings"])
    spatial = pd.concat([t.assign(param=p) for p, t in a["spatial"].items() if len(t)], ignore_index=True) \
        if any(len(t) for t in a["spatial"].values()) else pd.DataFrame()
    rows = [[parameter_info(r["param"]).symbol, r["couplers"], _fmt(int(r["n_couplers"])), f"{r['morans_i']:.3f}",
             _p(r["morans_p"]), f"{r['gearys_c']:.3f}", _p(r["gearys_p"])] for _, r in spatial.iterrows()]
    table = page.table(rows, ["parameter", "couplers", "count", "Moran's I", "p", "Geary's C", "p"], spatial,
                       "spatial.csv", numeric=[False, False, True, True, True, True, True]) if len(spatial) else ""
    body = (f"<p>Moran's I (> 0: neighbours alike) and Geary's C (< 1: neighbours alike) on the {a['couplers']} "
            f"working couplers, all and per coupler class, with two-sided permutation p-values.</p><ul>{findings}</ul>"
            + table)
    if any(len(t) for t in a["correlogram"].values()):
        fig = _figure(5.2, 3.4, _SINGLE)
        ax = fig.subplots()
        for p in rep.params:
            plots.correlogram(a["correlogram"][p], parameter_info(p).symbol, ax=ax)
        cg = pd.concat([t.assign(param=p) for p, t in a["correlogram"].items() if len(t)], ignore_index=True)
        body += page.figure(fig, "correlogram", "Correlogram: Moran's I between qubits at each graph distance") \
            + "<p>" + page.csv(cg, "correlogram.csv") + "</p>"
    pos = a["position"]
    if len(pos):
        sig = pos[pos["significant"]]
        items = "".join(f"<li>{html.escape(parameter_info(r['param']).symbol)} varies with {html.escape(r['feature'])} "
                        f"({r['test']}, statistic {r['statistic']:.3g}, p {_pv(r['p'])}, BH q {_pv(r['q'])})</li>"
                        for _, r in sig.iterrows()) or "<li>no association with position at FDR 0.05</li>"
        body += ("<h3>Association with position (Benjamini–Hochberg, FDR 0.05)</h3><ul>" + items + "</ul><p>"
                 + page.csv(pos, "position.csv") + "</p>")
    out = a["outliers"]
    n_out = int(out["outlier"].sum()) if len(out) else 0
    atomic_write_bytes(page.out / "exclude_qubits.txt", "".join(f"{q}\n" for q in a["exclusion_list"]).encode(),
                       durable=False)
    page.files.append("exclude_qubits.txt")
    body += (f"<h3>Outliers and qubits to avoid</h3><p>{n_out} good qubits have a robust z-score above 3.5 in some "
             f"parameter; {len(a['exclusion_list'])} qubits (failed, bad or outlier) are listed in "
             f"<a href=\"exclude_qubits.txt\">exclude_qubits.txt</a> for embeddings. "
             + page.csv(out, "outliers.csv", index=True) + "</p>")
    return body


def _outcome_section(rep: AssessmentReport, page: _Page) -> str:
    o = rep.outcome
    rows = [["all pairs", "—", f"{o['mean_all']:.2g}", f"{o['z_all']:.2f}", _p(o["p_all"])]]
    rows += [[f"neighbours along {c} couplers", _fmt(v["couplers"]), f"{v['mean_r']:.2g}", f"{v['z']:.2f}", _p(v["p"])]
             for c, v in o.items() if isinstance(v, dict)]
    df = pd.DataFrame(rows, columns=["pairs", "couplers", "mean r", "z", "p"])
    return (f"<p>At h = {o['h']:g} over {o['reads']} reads. With J = 0, independent qubits give correlations "
            "~N(0, 1/reads); crosstalk or a global noise field shows here.</p>"
            + page.table(rows, list(df.columns), df, "outcome_correlations.csv",
                         numeric=[False, True, True, True, True]))


def _recovery_section(rep: AssessmentReport, page: _Page) -> str:
    from qasa import plots

    rec = rep.recovery
    has_est = "coverage_95_estimand" in rec
    rows = []
    for p, r in rec.iterrows():
        row = [_label(p), _fmt(int(r["qubits"])), _pct(r["coverage_95"]), _fmt(r["median_error"], r["median_abs_error"] / 5),
               _fmt(r["median_abs_error"], r["median_abs_error"] / 5)]
        if has_est:
            row += [_pct(r.get("coverage_95_estimand", np.nan))]
        rows.append(row)
    header = ["parameter", "qubits", "95% coverage", "median error", "median |error|"] + (
        ["95% coverage of the estimand"] if has_est else [])
    table = page.table(rows, header, rec.reset_index(), "recovery.csv", numeric=[False] + [True] * (len(header) - 1))
    truth = rep.truth
    fig_html = ""
    if truth is not None:
        t = rep.fits.table[rep.fits.table["quality"] == "good"].set_index("qubit")
        common = t.index.intersection(truth.index)
        params = [p for p in rep.params if p in truth]
        if params and len(common):
            fig = _figure(3.1 * len(params), 3.0, dict(_ROW, left=0.24 / len(params)))
            for ax, p in zip(fig.subplots(1, len(params), squeeze=False)[0], params):
                plots.recovery(truth.loc[common, p], t.loc[common, p], t.loc[common, f"{p}_stderr"],
                               parameter_info(p).symbol, ax=ax)
            fig_html = page.figure(fig, "recovery", "Recovered versus true parameters (95% intervals)")
    return ("<p>The data came from qasa's virtual QPU, whose per-qubit parameters are known. The coverage is the share "
            "of good qubits whose 95% interval contains the true value: about 95 % when the model and protocol "
            "resolve the parameter. Lower values are findings, not failures: a readout error ε is absorbed by γ, "
            "η near 0 trades off against β beyond what a Wald interval shows, and with gauges only β and γ have a "
            "unique truth (docs/DESIGN.md §6).</p>" + table + fig_html)


def _analogue_section(rep: AssessmentReport, page: _Page) -> str:
    a = rep.analogue
    rows = [[r["system"], _fmt(r["end_temperature"], r["beta_stderr"] / r["beta"] ** 2 if np.isfinite(r["beta_stderr"]) else None),
             _fmt(r["beta"], r["beta_stderr"] if np.isfinite(r["beta_stderr"]) else None),
             _fmt(r["freezeout_s"], 0.001), _fmt(r["freezeout_fraction"], 0.001), str(r["note"])]
            for _, r in a.iterrows()]
    table = page.table(rows, ["system", "end temperature (units of h)", parameter_info("beta").label, "freeze-out s", "freeze-out t/t_end",
                              "note"], a, "analogue.csv", numeric=[False, True, True, True, True, False])
    prof = a.attrs.get("temperature_profile")
    fig_html = ""
    if prof is not None and len(prof):
        fig = _figure(6.4, 3.6, _SINGLE)
        ax = fig.subplots()
        ax.plot(prof["t"], prof["T"], color="k", lw=1, label="device's instantaneous T(t)")
        for (_, r), colour in zip(a.iterrows(), ("#c44e52", "#4c72b0", "#55a868")):
            ax.axhline(r["end_temperature"], color=colour, lw=1, ls="--", label=f"{r['system']}: end T")
        ax.set_yscale("log")
        ax.set_xlabel("time in the anneal (µs)")
        ax.set_ylabel("temperature (units of h)")
        ax.legend(fontsize=7, frameon=False)
        fig_html = page.figure(fig, "analogue", "The device's temperature along the anneal and where each system ends")
    return ("<p>The anneal that was run is a temperature schedule: the device's instantaneous temperature in units "
            f"of h is T(t) = 2k<sub>B</sub>T/B(s(t)) ({html.escape(a.attrs.get('temperature_source', ''))}; B(s) from "
            f"the {html.escape(a.attrs.get('schedule', ''))} table, which D-Wave says can be off by up to 30 %). SGD "
            "on the noisy quadratic model and simulated annealing driven along the same T(t) end at the "
            "temperatures below; the device ends at its effective temperature T<sub>eff</sub> (the headline above), "
            "and each end temperature is placed at the point of the anneal that was that hot (<code>qasa.analogues.device_analogue</code>).</p>"
            + table + fig_html)


def _noise_section(rep: AssessmentReport, page: _Page) -> str:
    """Between-call spread, drift and the flux-noise spectrum, and what each does to the headline numbers."""
    from qasa.drift import plot_spectrum

    n = rep.noise
    parts = ["<p>" + "</p><p>".join(html.escape(e) for e in n["effects"]) + "</p>"]
    bc = n.get("between_calls")
    fig = _figure(10, 3.4, _PAIR)
    ax1, ax2 = fig.subplots(1, 2)
    if bc and bc["values"]:
        ax1.hist(bc["values"], bins=40, color="#4c72b0")
        ax1.set_xlabel("σ_call (h), good qubits")
        ax1.set_ylabel("qubits")
        parts.append(f"<p>σ<sub>call</sub>: median {_fmt(bc['sigma_call_median'])}, IQR "
                     f"[{_fmt(bc['sigma_call_q25'])}, {_fmt(bc['sigma_call_q75'])}] over {bc['qubits']} good qubits; "
                     f"{_pct(bc['dispersed_share'])} of qubits fail the between-call homogeneity test at p &lt; 0.01 "
                     "(dispersion_p).</p>")
        sf = n.get("sigma_field")
        if sf:
            parts.append(f"<p>σ<sub>field</sub> (the field error shared by every call at one programmed value: the h "
                         f"DAC's rounding): {_fmt(sf['sigma_field'])} h [{_fmt(sf['sigma_field_lo'])}, "
                         f"{_fmt(sf['sigma_field_hi'])}], one value for the device from {sf.get('cells', 0)} cells of "
                         f"{sf.get('qubits', 0)} qubits, {sf.get('outlying_qubits', 0)} of them given no weight as "
                         "outliers (qasa.fitting, \"Per-field errors\"); a per-qubit value is not identified.</p>")
    else:
        ax1.text(0.5, 0.5, "no between-call component in this fit", ha="center", va="center", transform=ax1.transAxes)
        ax1.set_axis_off()
    d = n.get("drift")
    if d is not None:
        spec = d["_spectrum"]
        plot_spectrum(spec, ax=ax2)
        if spec.get("estimable"):
            parts.append(f"<p>Flux-noise spectrum of the per-call offsets: amplitude at 1 Hz "
                         f"{_fmt(spec['amplitude_1Hz'])} h/√Hz [{_fmt(spec['amplitude_1Hz_lo'])}, "
                         f"{_fmt(spec['amplitude_1Hz_hi'])}], exponent {_fmt(spec['exponent'], 0.01)} "
                         f"[{_fmt(spec['exponent_lo'], 0.01)}, {_fmt(spec['exponent_hi'], 0.01)}] "
                         "(qasa.drift.spectrum).</p>")
        else:
            parts.append(f"<p>Flux-noise spectrum: {html.escape(str(spec.get('reason', '')))}.</p>")
        if d["trends"]:
            tr = pd.DataFrame(d["trends"])
            rows = [[_fmt(int(r["qubit"])), _fmt(r["slope"], r["slope_se"]), _fmt(r["q"], 0.001), str(bool(r["drifts"]))]
                    for _, r in tr.iterrows()]
            parts.append(page.table(rows, ["qubit", "b slope (h per hour)", "q (BH)", "drifts"], tr, "drift_trends.csv",
                                    numeric=[True, True, True, False]))
    else:
        ax2.set_axis_off()
    parts.insert(1, page.figure(fig, "noise", "Between-call spread of the field (left) and spectrum of per-call offsets (right)"))
    return "".join(parts)


def _render_assessment(rep: AssessmentReport, out: Path, formats: Sequence[str], progress: bool | None) -> Path:
    page = _Page(out, formats)
    steps: list[tuple[str, str, Callable[[], str]]] = [("summary", "Summary", lambda: _summary_section(rep, page))]
    if rep.comparison is not None:
        steps.append(("models", "Model comparison", lambda: _comparison_section(rep, page)))
    script_holder: list[str] = []
    if rep.mapped and len(rep.layout):
        def maps() -> str:
            body, script = _maps_section(rep, page, formats)
            script_holder.append(script)
            return body
        steps.append(("maps", "Maps of the device", maps))
    if rep.curve_qubits and len(rep.response.h):
        steps.append(("curves", "Response curves", lambda: _curves_section(rep, page)))
    if rep.quality.get("good", 0) >= 1 and len(rep.summary) and rep.summary["n"].max() > 0:
        steps.append(("distributions", "Distributions", lambda: _distributions_section(rep, page)))
    if rep.reliability is not None and len(rep.reliability):
        steps.append(("identification", "Which parameters the data identify", lambda: _reliability_section(rep, page)))
    if rep.device is not None:
        steps.append(("correlations", "Correlations between parameters", lambda: _correlation_section(rep, page)))
        steps.append(("spatial", "Spatial structure", lambda: _spatial_section(rep, page)))
    if rep.noise is not None:
        steps.append(("noise", "Noise beyond shots", lambda: _noise_section(rep, page)))
    elif (rep.collection or {}).get("design") == "imported":
        steps.append(("noise", "Noise beyond shots", lambda: f"<p>{html.escape(IMPORTED_NOISE)}</p>"))
    if rep.outcome is not None:
        steps.append(("outcomes", "Outcome correlations within reads", lambda: _outcome_section(rep, page)))
    if rep.recovery is not None:
        steps.append(("recovery", "Recovery of the hidden truth", lambda: _recovery_section(rep, page)))
    if rep.analogue is not None:
        steps.append(("analogue", "The device next to its classical analogues", lambda: _analogue_section(rep, page)))
    bar = _progress(progress, len(steps) + 1, "report")
    try:
        for key, title, build in steps:
            page.section(key, title, build())
            bar.update(1)
        atomic_write_json(out / "summary.json", rep.to_dict(), durable=False)
        page.files.append("summary.json")
        files = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in dict.fromkeys(page.files))
        page.section("files", "Files", f"<p>Written beside this page:</p><ul>{files}</ul>")
        path = page.write("index.html", rep.title, "Single-qubit assessment (QASA protocol; Nelson et al., IEEE TQE 2021)",
                          rep.created, _header(rep, page), rep.notes, "".join(script_holder))
        bar.update(1)
    finally:
        bar.close()
    return path


# -- comparison -------------------------------------------------------------------------------------------
def _render_comparison(rep: ComparisonReport, out: Path, formats: Sequence[str]) -> Path:
    from qasa import plots

    page = _Page(out, formats)
    labels = rep.labels
    keys = ["Device (solver)", "Topology", "Qubits assessed", "Annealing", "Reads per h value", "Gauges", "Seed",
            "QPU access time spent", "Collected"]
    rows = [[k] + [_fmt(rep.provenance[lbl].get(k)) for lbl in labels] for k in keys]
    header = page.table(rows, ["", *labels], pd.DataFrame(rows, columns=["item", *labels]), "provenance.csv")
    for pair, (per, summ) in rep.pairs.items():
        a, b = pair.split(" -> ")
        trows = []
        for p in rep.params:
            v = summ.get(p)
            if not isinstance(v, dict):
                continue
            trows.append([_label(p), _fmt(v.get("median_change"), v.get("median_change_se"), with_error=True),
                          _fmt(v.get("changed")), _p(v.get("wilcoxon_p"))])
        name = f"changes_{_slug(a)}_{_slug(b)}.csv"
        table = page.table(trows, ["parameter", "median change ± se", "qubits changed (FDR 0.05)", "Wilcoxon p"],
                           per, name, numeric=[False, True, True, True], index_csv=True)
        page.section(f"pair-{_slug(pair)}", f"{a} → {b}",
                     f"<p>{summ['qubits']} qubits good in both. Per-qubit change with standard error √(se_a² + se_b²); "
                     "<em>changed</em> counts qubits significant at FDR 0.05 (Benjamini–Hochberg); the Wilcoxon test "
                     "is for a device-wide shift.</p>" + table)
    if rep.trends is not None and rep.param in rep.trends:
        t = rep.trends[rep.param]
        lv = pd.DataFrame(t["levels"])
        fig = _figure(5.2, 3.5)
        truth = (rep.truth_medians or {}).get(rep.param)
        plots.parameter_vs_annealing_time(t["levels"], parameter_info(rep.param).label, truth, ax=fig.subplots())
        trows = [[_label(p), _fmt(d.get("median_slope_per_decade"), None), f"{d.get('qubits_increasing')} of {d.get('qubits')}",
                  _p(d.get("sign_test_p"))] for p, d in rep.trends.items()]
        table = page.table(trows, ["parameter", "median slope per decade", "qubits increasing", "sign-test p"],
                           pd.DataFrame([{"param": p, **{k: v for k, v in d.items() if k != "levels"}}
                                         for p, d in rep.trends.items()]), "trends.csv",
                           numeric=[False, True, True, True])
        page.section("trend", "Trend with annealing time",
                     "<p>Per-qubit weighted least-squares slope against log10(annealing time) over qubits good at "
                     "every time; the device median ± 1.96 se at each time.</p>" + table
                     + "<p>" + page.csv(lv, "levels.csv") + "</p>"
                     + page.figure(fig, "trend", f"{parameter_info(rep.param).symbol} versus annealing time"))
    if rep.analogue_trend is not None:
        at = rep.analogue_trend
        cols = [c for c in ("label", "annealing_time", "measured_beta", "sgd_beta", "sa_beta", "measured_trend",
                            "sgd_trend") if c in at]
        trows = [[_fmt(r[c]) if not isinstance(r[c], str) else r[c] for c in cols] for _, r in at.iterrows()]
        rho = at.attrs.get("rank_agreement")
        page.section("analogue-trend", "Measured β trend beside its classical analogues",
                     "<p>For each anneal that was run, the device's measured median β next to the β its analogues "
                     "predict when driven along the same temperature profile (<code>qasa.analogues.analogue_trend</code>): "
                     "SGD on the noisy quadratic model, its one free rate calibrated on the first run, so the other rows "
                     "are predictions; SA, which never freezes out and follows the end temperature. Temperatures are in "
                     "units of h, as 1/β."
                     + (f" Rank agreement of measured and SGD-predicted trends (Spearman): {_fmt(rho)}." if rho is not None
                        else "") + "</p>"
                     + page.table(trows, [c.replace("_", " ") for c in cols], at, "analogue_trend.csv",
                                  numeric=[c != "label" for c in cols]))
    atomic_write_json(out / "comparison.json", rep.to_dict(), durable=False)
    return page.write("comparison.html", rep.title, ", ".join(labels), rep.created,
                      "<h3>Assessments</h3>" + header, rep.notes)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


# -- analogues --------------------------------------------------------------------------------------------
def _render_analogues(rep: AnaloguesReport, out: Path, formats: Sequence[str]) -> Path:
    page = _Page(out, formats)
    table = rep.table
    shown = table.drop(columns=[c for c in table.columns if table[c].dtype == object and c != "shape"])
    rows = [[str(r["shape"])[:48]] + [_fmt(float(r[c])) if np.isfinite(r[c]) else "—" for c in shown.columns if c != "shape"]
            for _, r in shown.iterrows()]
    cols = [c for c in shown.columns if c != "shape"]
    page.section("table", "Schedule shapes side by side",
                 "<p>Each row is one schedule shape used as an SGD learning rate (noisy quadratic model, best η₀), a "
                 "simulated-annealing temperature (planted Ising instance; β_eff from a QASA fit on isolated spins) and a "
                 "QPU anneal schedule (QASA on the virtual QPU). Temperatures: SGD ends in a Gibbs state at ηc/2; SA and "
                 "QPU at 1/β of the fitted response.</p>"
                 + page.table(rows, ["shape"] + [c.replace("_", " ") for c in cols], table, "analogues.csv",
                              numeric=[False] + [True] * len(cols)))
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2)
    x = np.arange(len(table))
    for k, (col, name) in enumerate((("sgd_temperature", "SGD ηc/2"), ("sa_temperature", "SA 1/β_eff"),
                                     ("qpu_temperature", "QPU 1/β"))):
        if col in table:
            v = table[col].to_numpy(float)
            axes[0].bar(x + (k - 1) * 0.27, v / np.nanmedian(v), width=0.27, label=name)
    axes[0].set_xticks(x, [str(s).split("(")[0] for s in table["shape"]], rotation=60, ha="right", fontsize=8)
    axes[0].set_ylabel("end temperature / median over shapes")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, frameon=False)
    if "sa_ground_state_probability" in table and "sgd_final_loss" in table:
        axes[1].scatter(table["sa_ground_state_probability"], table["sgd_final_loss"])
        for _, r in table.iterrows():
            axes[1].annotate(str(r["shape"]).split("(")[0], (r["sa_ground_state_probability"], r["sgd_final_loss"]),
                             fontsize=7)
        axes[1].set_xlabel("SA ground-state probability")
        axes[1].set_ylabel("SGD final excess loss (best η₀)")
    page.section("figure", "End temperature and quality", page.figure(fig, "analogues", "End temperature and quality"))
    for i, (title, df) in enumerate(rep.sections.items()):
        page.section(f"extra-{i}", title, page.table([[_fmt(v) for v in r] for r in df.itertuples(index=False)],
                                                     [str(c) for c in df.columns], df, f"analogues_{_slug(title)}.csv"))
    atomic_write_json(out / "analogues.json", rep.to_dict(), durable=False)
    return page.write("analogues.html", rep.title, "The same schedule shapes on SGD, simulated annealing and a QPU",
                      rep.created, "", rep.notes)


# -- the earlier API (thin wrappers) ---------------------------------------------------------------------
def summarize(dataset: Dataset, fits: FitTable, comparison=None, truth: pd.DataFrame | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """The JSON summary of :func:`qasa.analysis.analyze` (``summary.json``)."""
    return analyze(dataset, fits, comparison, truth=truth, **kwargs).to_dict()


def build_report(dataset: Dataset, fits: FitTable, out_dir: str | Path, *, comparison=None,
                 truth: pd.DataFrame | None = None, dataset_path: str | Path | None = None,
                 formats: Sequence[str] = ("svg",), progress: bool | None = False,
                 response: Response | None = None) -> dict[str, Any]:
    """Analyse and render in one go: ``index.html``, ``summary.json``, CSVs and figures in ``out_dir``.

    ``response`` is ``dataset.response()`` when the caller already has it (it is not summed again).
    Returns the summary (:meth:`qasa.analysis.AssessmentReport.to_dict`).
    """
    rep = analyze(dataset, fits, comparison, truth=truth, dataset_path=dataset_path, response=response)
    render(rep, out_dir, formats=formats, progress=progress)
    return rep.to_dict()


def build_comparison_report(runs: dict[str, tuple[Dataset, FitTable]], out_dir: str | Path,
                            param: str = "beta") -> dict[str, Any]:
    """Analyse and render a comparison (``comparison.html``, ``comparison.json``); return the summary."""
    rep = analyze_comparison(runs, param)
    render(rep, out_dir)
    return rep.to_dict()


def build_analogues_report(nqm: pd.DataFrame, sa: pd.DataFrame, qpu: pd.DataFrame, out_dir: str | Path) -> pd.DataFrame:
    """Analyse and render the analogue studies (``analogues.html``, ``.csv``, ``.json``); return the combined table."""
    rep = analyze_analogues(nqm, sa, qpu)
    render(rep, out_dir)
    return rep.table


#: The interactive map: canvas drawing, hover, zoom and pan (no external library).
_MAP_JS = r"""(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("qasa-map-data").textContent);
  var V = ["#440154","#481a6c","#472f7d","#414487","#39568c","#31688e","#2a788e","#23888e","#1f988b","#22a884",
           "#35b779","#54c568","#7ad151","#a5db36","#d2e21b","#fde725"];
  var RGB = V.map(function (h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; });
  var RDBU = ["#053061","#2166ac","#4393c3","#92c5de","#d1e5f0","#f7f7f7","#fddbc7","#f4a582","#d6604d","#b2182b",
              "#67001f"].map(function (h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; });
  function colour(t, signed) {
    var S = signed ? RDBU : RGB;
    if (!(t >= 0)) t = 0; if (t > 1) t = 1;
    var f = t * (S.length - 1), i = Math.min(Math.floor(f), S.length - 2), w = f - i, a = S[i], b = S[i + 1];
    return "rgb(" + Math.round(a[0] + w * (b[0] - a[0])) + "," + Math.round(a[1] + w * (b[1] - a[1])) + "," +
      Math.round(a[2] + w * (b[2] - a[2])) + ")";
  }
  function fmt(v, lo, hi) {
    if (v === null || v === undefined) return "—";
    var se = (lo !== null && hi !== null && hi > lo) ? (hi - lo) / 3.92 : null, d;
    if (se) d = Math.max(0, 1 - Math.floor(Math.log10(se))); else d = Math.max(0, 3 - Math.floor(Math.log10(Math.abs(v) || 1)));
    d = Math.min(d, 8);
    var s = v.toFixed(d);
    if (lo !== null && hi !== null) s += " [" + lo.toFixed(d) + ", " + hi.toFixed(d) + "]";
    return s;
  }
  var n = D.ids.length, xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  for (var i = 0; i < n; i++) {
    xmin = Math.min(xmin, D.x[i]); xmax = Math.max(xmax, D.x[i]); ymin = Math.min(ymin, D.y[i]); ymax = Math.max(ymax, D.y[i]);
  }
  var pad = D.cell;
  xmin -= pad; xmax += pad; ymin -= pad; ymax += pad;
  function QMap(el) {
    this.el = el; this.param = el.getAttribute("data-param"); this.P = D.params[this.param];
    this.canvas = el.querySelector("canvas.map"); this.tip = el.querySelector(".tip");
    this.dpr = window.devicePixelRatio || 1;
    var css = this.canvas.width;
    this.w = css; this.h = this.canvas.height;
    this.canvas.style.width = css + "px"; this.canvas.style.height = this.h + "px";
    this.canvas.width = Math.round(css * this.dpr); this.canvas.height = Math.round(this.h * this.dpr);
    this.reset(); this.colourbar(); this.bind(); this.draw();
  }
  QMap.prototype.reset = function () {
    var s = Math.min(this.w / (xmax - xmin), this.h / (ymax - ymin));
    this.s = s; this.tx = (this.w - s * (xmax - xmin)) / 2 - s * xmin; this.ty = (this.h - s * (ymax - ymin)) / 2 + s * ymax;
  };
  QMap.prototype.toCanvas = function (i) { return [this.tx + this.s * D.x[i], this.ty - this.s * D.y[i]]; };
  QMap.prototype.draw = function () {
    var c = this.canvas.getContext("2d"), P = this.P, lo = P.range[0], hi = P.range[1], span = hi > lo ? hi - lo : 1;
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    c.fillStyle = "#ffffff"; c.fillRect(0, 0, this.w, this.h);
    var side = Math.max(this.s * D.cell, 1.2), half = side / 2;
    for (var i = 0; i < n; i++) {
      var p = this.toCanvas(i);
      if (p[0] < -side || p[1] < -side || p[0] > this.w + side || p[1] > this.h + side) continue;
      var v = P.v[i];
      c.fillStyle = (D.quality[i] === "good" && v !== null) ? colour((v - lo) / span, P.signed) : "#c8c8c8";
      c.fillRect(p[0] - half, p[1] - half, side, side);
    }
    if (this.hov !== undefined) {
      var h = this.toCanvas(this.hov);
      c.strokeStyle = "#000000"; c.lineWidth = 1.5; c.strokeRect(h[0] - half - 1.5, h[1] - half - 1.5, side + 3, side + 3);
    }
    if (this.sel !== undefined) {
      var q = this.toCanvas(this.sel);
      c.strokeStyle = "#e41a1c"; c.lineWidth = 2; c.strokeRect(q[0] - half - 2, q[1] - half - 2, side + 4, side + 4);
    }
  };
  QMap.prototype.colourbar = function () {
    var cb = this.el.querySelector("canvas.cbar"), c = cb.getContext("2d");
    for (var k = 0; k < cb.width; k++) { c.fillStyle = colour(k / (cb.width - 1), this.P.signed); c.fillRect(k, 0, 1, cb.height); }
    this.el.querySelector(".lo").textContent = fmt(this.P.range[0], null, null);
    this.el.querySelector(".hi").textContent = fmt(this.P.range[1], null, null);
  };
  QMap.prototype.pick = function (mx, my) {
    var best = -1, bd = Infinity, lim = Math.max(this.s * D.cell, 6);
    for (var i = 0; i < n; i++) {
      var p = this.toCanvas(i), dx = p[0] - mx, dy = p[1] - my, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return (best >= 0 && Math.sqrt(bd) <= lim) ? best : -1;
  };
  QMap.prototype.describe = function (i) {
    var lines = ["qubit " + D.ids[i]];
    if (D.coord_names.length) lines.push("(" + D.coord_names.join(", ") + ") = (" + D.coord[i].join(", ") + ")");
    for (var k = 0; k < D.order.length; k++) {
      var P = D.params[D.order[k]];
      lines.push(P.symbol + " = " + fmt(P.v[i], P.lo[i], P.hi[i]) + (P.unit && P.unit !== "dimensionless" ? " " + P.unit : ""));
    }
    lines.push("quality: " + D.quality[i] + (D.reason[i] ? " (" + D.reason[i] + ")" : ""));
    return lines.join("\n");
  };
  QMap.prototype.hover = function (mx, my) {
    var i = this.pick(mx, my), prev = this.hov;
    this.hov = i >= 0 ? i : undefined;
    if (this.hov !== prev) this.draw();
    if (i < 0) { this.tip.style.display = "none"; this.tip.removeAttribute("data-qubit"); return; }
    this.tip.textContent = this.describe(i);
    this.tip.setAttribute("data-qubit", String(D.ids[i]));
    this.tip.style.display = "block";
    this.tip.style.left = (this.canvas.offsetLeft + mx + 14) + "px";
    this.tip.style.top = (this.canvas.offsetTop + my + 14) + "px";
  };
  QMap.prototype.zoom = function (f, mx, my) {
    this.tx = mx - f * (mx - this.tx); this.ty = my - f * (my - this.ty); this.s *= f; this.draw();
  };
  QMap.prototype.screenOf = function (qubit) {
    var i = D.ids.indexOf(qubit); if (i < 0) return null;
    var p = this.toCanvas(i), r = this.canvas.getBoundingClientRect();
    return {x: r.left + p[0], y: r.top + p[1]};
  };
  QMap.prototype.bind = function () {
    var self = this, cv = this.canvas, drag = null;
    function local(e) { var r = cv.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
    cv.addEventListener("mousemove", function (e) {
      var m = local(e);
      if (drag) { self.tx += m[0] - drag[0]; self.ty += m[1] - drag[1]; drag = m; self.draw(); return; }
      self.hover(m[0], m[1]);
    });
    cv.addEventListener("mouseleave", function () {
      self.tip.style.display = "none"; drag = null; if (self.hov !== undefined) { self.hov = undefined; self.draw(); }
    });
    cv.addEventListener("mousedown", function (e) { drag = local(e); });
    window.addEventListener("mouseup", function () { drag = null; });
    cv.addEventListener("wheel", function (e) {
      e.preventDefault(); var m = local(e); self.zoom(Math.exp(-e.deltaY * 0.0015), m[0], m[1]);
    }, {passive: false});
    cv.addEventListener("dblclick", function () { self.reset(); self.draw(); });
    cv.addEventListener("click", function (e) {
      var m = local(e), i = self.pick(m[0], m[1]);
      qasaMaps.forEach(function (q) { q.sel = i >= 0 ? i : undefined; q.draw(); });
    });
    this.el.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () {
        var z = parseFloat(b.getAttribute("data-z"));
        if (z === 0) { self.reset(); self.draw(); } else self.zoom(z, self.w / 2, self.h / 2);
      });
    });
  };
  var qasaMaps = [];
  document.querySelectorAll(".qmap").forEach(function (el) { qasaMaps.push(new QMap(el)); });
  window.qasaMaps = qasaMaps;
})();
"""


def render_shim(table: pd.DataFrame, device: dict[str, Any], summary: dict[str, Any], out_dir: str | Path) -> Path:
    """The shim's before/after page (``OUT/shim/report.html``): each qubit's estimated static bias before
    the shim and its static residual after it (with 95 % intervals), as histograms and tile maps, and what
    a static shim cannot remove: the between-call scatter σ_call and the slow flux noise σ_slow.

    Args:
        table: the shim's per-qubit table (``bias``, ``residual``, ``residual_lo/_hi``, ``sigma_call``,
            ``sigma_slow``, ``status``).
        device: the dataset's device record (topology, for the maps).
        summary: :meth:`qasa.shim.ShimResult.summary`.
        out_dir: the folder of the page.
    """
    from qasa import plots
    from qasa.dataset import utcnow
    from qasa.topology import layout_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out, ("svg",))
    ok = table["status"].isin(["ok", "clipped", "unresolved"]).to_numpy()
    t = table[ok]
    half = (t["residual_hi"] - t["residual_lo"]) / 2
    fig = _figure(10, 3.4, _PAIR)
    ax1, ax2 = fig.subplots(1, 2)
    m = float(np.nanmax(np.abs(t["bias"]))) if len(t) else 1.0
    bins = np.linspace(-m, m, 41)
    ax1.hist(t["bias"], bins=bins, color="#c44e52", alpha=0.6, label="static bias before (estimated)")
    ax1.hist(t["residual"], bins=bins, color="#4c72b0", alpha=0.8, label="static residual after (estimated)")
    ax1.set_xlabel("field (h)")
    ax1.set_ylabel("qubits")
    ax1.legend(fontsize=7, frameon=False)
    ax2.hist(half, bins=40, color="#55a868", alpha=0.8, label="95 % half-width of the static residual")
    if "sigma_call" in t and np.isfinite(t["sigma_call"]).any():
        ax2.hist(t["sigma_call"].dropna(), bins=40, color="#8172b2", alpha=0.6, label="σ_call: between-call scatter")
    ax2.set_xlabel("field (h)")
    ax2.set_ylabel("qubits")
    ax2.legend(fontsize=7, frameon=False)
    reads = f"{summary.get('reads_per_qubit', 0):,}".replace(",", " ")
    kind = "h offsets" if summary.get("offsets") == "h" else "flux biases"
    body = [f"<p>{summary.get('responding', 0)} of {summary.get('qubits', 0)} qubits shimmed ({kind}) with "
            f"{reads} reads per qubit in {summary.get('rounds', 0)} rounds (stopped on "
            f"{html.escape(str(summary.get('stopped')))}); rms static bias before {_fmt(summary.get('bias_rms'), 1e-5)} h, "
            f"rms 95 % half-width of the static residual after {_fmt(summary.get('residual_half_width_rms'), 1e-5)} h. "
            "The static residual is what the shim leaves of each qubit's static bias.</p>",
            "<p><b>What a static shim cannot remove.</b> Every call is a new programming: its reads share a field "
            "offset (per-programming errors, the flux noise between calls, the DAC's rounding of the dither) that "
            f"changes from call to call, with scatter σ_call = {_fmt(summary.get('sigma_call_median'), 1e-5)} h "
            "(median over qubits). A static flux bias or h offset cannot remove it: every later call draws a new "
            "offset. 1/f flux noise slower than the shim moved all its calls alike, by an amount the reads cannot "
            f"tell from the static bias: σ_slow = {_fmt(summary.get('sigma_slow_median'), 1e-5)} h (median, from "
            "the published flux-noise spectrum over the shim's duration); it is part of each residual's interval.</p>",
            page.figure(fig, "shim_histograms", "Static bias before and static residual after the shim; residual "
                        "interval widths and the between-call scatter σ_call")]
    lay = layout_table(device, t["qubit"].astype(int).tolist())[0] if len(t) else ()
    if len(lay):
        fig = _figure(10, 4.4, _PAIR)
        axes = fig.subplots(1, 2)
        v = t.set_index("qubit").loc[lay.index]
        for ax, col, title in zip(axes, ("bias", "residual"), ("static bias before", "static residual after")):
            plots.layout_map(lay["x"], lay["y"], v[col].to_numpy(float), ax=ax, label=f"{title} (h)", cmap="RdBu_r",
                             vmin=-m, vmax=m, size=float(np.clip(9000.0 / max(len(lay), 1), 0.6, 40.0)))
            ax.set_title(title, fontsize=9)
        body.append(page.figure(fig, "shim_maps", "Each qubit at its place in the cell grid, one colour scale for both"))
    body.append(page.csv(table, "table.csv"))
    page.section("shim", "Before and after the shim", "".join(body))
    title = "h-offset shim" if summary.get("offsets") == "h" else "Flux-bias shim"
    return page.write("report.html", title, "qasa shim: static bias before, static residual after", utcnow())

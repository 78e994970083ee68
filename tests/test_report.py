"""Analysis and rendering of reports: numbers, layout, degenerate data, reprs (qasa.analysis, qasa.report,
qasa.display)."""

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qasa
from qasa.analysis import (
    MIN_GOOD_QUBITS,
    analyze,
    format_value,
    model_comparison,
    parameter_summary,
    round_to_uncertainty,
)
from qasa.dataset import Dataset
from qasa.fitting import FitTable, fit
from qasa.models import get_model
from qasa.report import build_report, render, svg_map
from qasa.virtual import VirtualQPU

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def small():
    """A Pegasus P3 virtual device without gauges (every parameter has a truth), fitted by two models."""
    qpu = VirtualQPU(seed=3, topology_shape=[3], broken_nodes=[])
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=4000, spin_reversal=False, seed=2), qpu)
    tables = {m: fit(ds, m) for m in ("gibbs", "qasa")}
    return ds, tables


# -- numbers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, se, text", [
    (5.14283, 0.0312, "5.143 ± 0.031"), (5.14283, 0.31, "5.14 ± 0.31"), (1234.5, 27.0, "1234 ± 27"),
    (-8.04e-05, 0.00063, "-0.00008 ± 0.00063"), (0.21631, None, "0.2163"), (7503457.73, 1.0, "7503457.7 ± 1.0"),
    (float("nan"), 0.1, "—"), (12, None, "12"),
])
def test_numbers_are_rounded_to_their_uncertainty(value, se, text):
    assert format_value(value, se, with_error=se is not None) == text


def test_round_to_uncertainty_keeps_two_significant_digits_of_the_error():
    assert round_to_uncertainty(3.14159, 0.0123) == (3.142, 3)
    assert round_to_uncertainty(31415.9, 230.0) == (31420.0, -1)


def test_parameter_summary_matches_numpy_on_good_qubits(small):
    _, tables = small
    fits = tables["qasa"]
    s = parameter_summary(fits)
    good = fits.table[fits.table["quality"] == "good"]["beta"].to_numpy()
    assert s.loc["beta", "n"] == len(good)
    assert s.loc["beta", "median"] == pytest.approx(np.median(good))
    assert s.loc["beta", "iqr"] == pytest.approx(np.subtract(*np.quantile(good, [0.75, 0.25])))
    assert s.loc["beta", "median_se"] == pytest.approx(1.2533 * good.std(ddof=1) / np.sqrt(len(good)))


def test_model_comparison_prefers_the_true_model_with_deltas_and_fractions(small):
    _, tables = small
    table, tests = model_comparison(tables)
    row = table.set_index("model")
    assert row.loc["qasa", "delta_aic"] == 0 and row.loc["gibbs", "delta_aic"] > 100
    assert row.loc["qasa", "delta_bic"] == 0
    assert table["prefer_aic"].sum() == pytest.approx(1) and row.loc["qasa", "prefer_aic"] > 0.9
    # totals are sums of the per-qubit criteria over qubits fitted by both models
    both = tables["qasa"].table["aic"].notna() & tables["gibbs"].table["aic"].notna()
    assert row.loc["gibbs", "aic_total"] == pytest.approx(tables["gibbs"].table.loc[both, "aic"].sum())
    assert row.loc["gibbs", "bic_total"] == pytest.approx(tables["gibbs"].table.loc[both, "bic"].sum())
    assert tests == []          # gibbs vs qasa is not a registered nested pair


def test_report_recovers_the_virtual_truth_and_states_provenance(small, tmp_path):
    ds, tables = small
    rep = analyze(ds, tables["qasa"], tables)
    prov = rep.provenance
    assert prov["Reads per h value"] == 4000 and prov["Seed"] == 2 and prov["Gauges"].startswith("none")
    assert prov["Annealing"] == "20 µs (the sampler's default)"          # default used, not "—"
    assert prov["qasa version"] == qasa.__version__ and "dimod" in prov["Ocean versions"]
    assert set(rep.recovery.index) == {"beta", "b", "gamma", "eta"}
    assert rep.recovery.loc["beta", "coverage_95"] > 0.8
    assert rep.recovery.loc["b", "median_abs_error"] < 0.005
    # maps only for parameters the data identify (reliability rule); the others are named in a note
    rel = rep.reliability
    assert rep.mapped == [p for p in rep.params if rel.loc[p, "identified"]] and "b" in rep.mapped
    assert all(rel.loc[p, "verdict"] in " ".join(rep.notes) for p in rep.params if p not in rep.mapped)
    page = render(rep, tmp_path, formats=("svg", "pdf"))
    text = page.read_text()
    # one map per identified parameter, with its data; a CSV link beside every table
    assert text.count('class="qmap"') == len(rep.mapped)
    tables = re.findall(r'<div class="tbl">(.*?)</div>', text)
    assert len(tables) == text.count("<table") >= 8 and all('class="dl"' in t for t in tables)
    for name in ("summary.csv", "model_comparison.csv", "recovery.csv", "correlations.csv", "spatial.csv"):
        match = re.search(rf'href="data:text/csv;charset=utf-8;base64,([^"]+)" download="{name}"', text)
        assert match, name
        assert base64.b64decode(match.group(1)) == (tmp_path / name).read_bytes()
    assert 'href="fits.csv"' in text or 'download="fits.csv"' in text
    for p in rep.mapped:
        assert (tmp_path / f"map_{p}.svg").is_file() and (tmp_path / f"map_{p}.pdf").is_file()
    for fig in ("response_curves", "distributions", "correlations", "correlogram", "recovery"):
        ET.parse(tmp_path / f"{fig}.svg")                                 # well-formed vector files
        assert (tmp_path / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_comparison"]["preferred"] == "qasa"
    # the device next to its SGD and SA analogues along the anneal that was run (20 µs default)
    device_row = summary["analogue"][0]
    assert device_row["system"] == "device (measured)" and device_row["annealing_time"] == 20.0
    # one device temperature per page: the analogue row is the headline T_eff, not 1/median(β)
    assert device_row["end_temperature"] == pytest.approx(rep.temperature["T_eff"], rel=1e-9)
    assert abs(1 / rep.summary.loc["beta", "median"] - rep.temperature["T_eff"]) > 1e-3     # they differ here
    assert "The device next to its classical analogues" in text
    assert summary["parameters"]["eta"]["unit"] == "h"
    assert "β — inverse temperature (1/h)" in text and "Δ" in text


def test_interactive_map_data_and_static_svg_hold_every_qubit(small, tmp_path):
    ds, tables = small
    fits = tables["qasa"]
    rep = analyze(ds, fits)
    render(rep, tmp_path)
    text = (tmp_path / "index.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="qasa-map-data">(.*?)</script>', text).group(1))
    t = fits.table.set_index("qubit")
    assert sorted(data["ids"]) == sorted(t.index)
    i = 7
    q = data["ids"][i]
    assert data["params"]["beta"]["v"][i] == pytest.approx(t.loc[q, "beta"], rel=1e-4)
    # the fit's profile-likelihood interval (qasa.fitting), Wald only for tables without one
    lo = t.loc[q, "beta_lo"] if "beta_lo" in t else t.loc[q, "beta"] - 1.96 * t.loc[q, "beta_stderr"]
    assert data["params"]["beta"]["lo"][i] == pytest.approx(lo, rel=1e-4)
    assert data["coord_names"] == ["u", "w", "k", "z"] and len(data["coord"][i]) == 4
    root = ET.fromstring(svg_map(data, "beta"))
    rects = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("{http://www.w3.org/2000/svg}title") is not None]
    assert len(rects) == len(data["ids"])


def test_report_leaves_matplotlib_backend_alone(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("pdf")
import qasa
from qasa.virtual import VirtualQPU
from qasa.fitting import fit
from qasa.report import build_report
qpu = VirtualQPU(seed=1, topology_shape=[2], broken_nodes=[])
ds = qasa.run(qasa.Protocol.grid(1.0, 0.1, reads_per_h=500, seed=1), qpu)
build_report(ds, fit(ds, "gibbs"), {str(tmp_path)!r})
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
import sys
assert "matplotlib.pyplot" not in sys.modules, "the report imported pyplot"
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]


# -- degenerate data --------------------------------------------------------------------------------------
def _dataset(down_fraction, h_values, reads, qubits=8, device=None, rng_seed=0) -> Dataset:
    rng = np.random.default_rng(rng_seed)
    h = np.asarray(h_values, float)
    qs = np.arange(qubits)
    if callable(down_fraction):
        p = down_fraction(h)[None, :].repeat(qubits, 0)
    else:
        p = np.full((qubits, len(h)), float(down_fraction))
    down = rng.binomial(reads, p)
    ids = [f"g0000-h{j:05d}" for j in range(len(h))]
    counts = pd.DataFrame({"call_id": np.tile(ids, qubits), "qubit": np.repeat(qs, len(h)), "h": np.tile(h, qubits),
                           "gauge": 1, "n_down": down.ravel(), "n_up": (reads - down).ravel()})
    calls = pd.DataFrame({"call_id": pd.Series(ids, dtype="string"), "h": h, "num_reads": reads})
    dev = device or {"solver": "test", "topology_type": "chimera", "topology_shape": [2, 2, 4],
                     "nodelist": list(range(qubits))}
    return Dataset(counts, calls, {"protocol": None, "device": dev})


GRID = np.linspace(-1, 1, 21)
DEGENERATE = {
    "all -1": lambda: _dataset(1.0, GRID, 100),
    "all +1": lambda: _dataset(0.0, GRID, 100),
    "one h": lambda: _dataset(lambda h: 0.5 * (1 + np.tanh(5 * h)), [0.1], 100),
    "two h": lambda: _dataset(lambda h: 0.5 * (1 + np.tanh(5 * h)), [-0.1, 0.1], 100),
    "1 read per h": lambda: _dataset(lambda h: 0.5 * (1 + np.tanh(5 * h)), GRID, 1),
    "two good qubits": lambda: _dataset(lambda h: 0.5 * (1 + np.tanh(5 * h)), GRID, 2000, qubits=2),
    "ids outside the topology": lambda: _dataset(
        lambda h: 0.5 * (1 + np.tanh(5 * h)), GRID, 2000, qubits=40,
        device={"solver": None, "topology_type": "chimera", "topology_shape": [2, 2, 4], "nodelist": list(range(40))}),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_data_give_a_report_that_says_so(case, tmp_path):
    ds = DEGENERATE[case]()
    for model in ("gibbs", "qasa"):
        fits = fit(ds, model)
        summary = build_report(ds, fits, tmp_path / model)
        page = (tmp_path / model / "index.html").read_text()
        good = int((fits.table["quality"] == "good").sum())
        if good < MIN_GOOD_QUBITS:
            assert any(f"Only {good} of" in n for n in summary["notes"]), summary["notes"]
            assert "Only " in page and "device_analysis" not in summary
        if case == "ids outside the topology":
            assert summary["qubits_outside_topology"] == list(range(32, 40))
            assert any("not in the recorded chimera topology" in n for n in summary["notes"])
            maps = re.search(r'id="qasa-map-data">(.*?)</script>', page)   # only if a parameter is identified
            assert maps is None or max(json.loads(maps.group(1))["ids"]) == 31
        json.dumps(summary, allow_nan=False)


def test_empty_dataset_reports_nothing_measured(tmp_path):
    ds = Dataset(pd.DataFrame(columns=["call_id", "qubit", "h", "n_down", "n_up"]), metadata={"device": {}})
    fits = fit(ds, "gibbs")
    summary = build_report(ds, fits, tmp_path)
    assert any("no counts" in n for n in summary["notes"])


# -- reprs and progress -----------------------------------------------------------------------------------
def _advantage_size():
    """A synthetic Advantage-size dataset and fit table (5 626 qubits × 81 h): sizes only."""
    qubits = np.arange(5626)
    h = np.round(np.linspace(-1, 1, 81), 6)
    counts = pd.DataFrame({"call_id": np.repeat([f"g0000-h{j:05d}" for j in range(81)], len(qubits)),
                           "qubit": np.tile(qubits, 81), "h": np.repeat(h, len(qubits)), "gauge": 1,
                           "n_down": 500, "n_up": 500})
    device = {"solver": "Advantage_system4.1", "topology_type": "pegasus", "topology_shape": [16],
              "nodelist": qubits.tolist(), "edgelist": [[int(a), int(a) + 1] for a in qubits[:-1]]}
    ds = Dataset(counts, pd.DataFrame({"call_id": pd.Series([f"g0000-h{j:05d}" for j in range(81)], dtype="string")}),
                 {"protocol": qasa.Protocol.grid(seed=1).to_dict(), "device": device})
    model = get_model("qasa")
    table = pd.DataFrame({"qubit": qubits, **{p: 1.0 for p in model.params}, **{f"{p}_stderr": 0.1 for p in model.params},
                          "quality": "good", "reason": ""})
    return ds, FitTable(table, model)


def test_reprs_are_short_and_html_is_compact():
    ds, fits = _advantage_size()
    protocol = qasa.Protocol.grid(seed=1)
    for obj in (protocol, ds, fits):
        text, html = repr(obj), obj._repr_html_()
        assert len(text.encode()) <= 2000 and len(html.encode()) <= 20_000, type(obj).__name__
    assert "81 values in [-1, 1], step 0.025" in repr(protocol) and "-0.975" not in repr(protocol)
    assert "5626 qubits" in repr(ds) and "81 h values" in repr(ds)
    assert "quality: good 5626" in repr(fits)
    qpu = VirtualQPU(seed=0, topology_shape=[4])
    assert "object at 0x" not in repr(qpu) and len(repr(qpu)) <= 2000 and len(qpu._repr_html_()) <= 20_000
    assert "pegasus" in repr(qpu)


def test_report_object_repr_is_short(small):
    ds, tables = small
    rep = analyze(ds, tables["qasa"], tables)
    assert len(repr(rep)) <= 2000 and len(rep._repr_html_()) <= 20_000
    assert "qasa" in repr(rep) and "preferred model (AIC)" in rep._repr_html_()


def test_plot_methods_return_axes(small):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, tables = small
    fits = tables["qasa"]
    ax = fits.plot_map("beta")
    assert ax.collections and ax.figure is not None
    assert fits.plot_histogram("eta").patches
    q = int(fits.table["qubit"].iloc[0])
    ax = ds.plot_response(q, fits=fits)
    assert ax.lines
    plt.close("all")


def test_progress_callback_follows_the_runner():
    from qasa.display import progress_callback

    seen = []
    cb = progress_callback("calls", disable=True)
    qpu = VirtualQPU(seed=1, topology_shape=[2], broken_nodes=[])

    def both(done, total):
        seen.append((done, total))
        cb(done, total)

    qasa.run(qasa.Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1), qpu, progress=both)
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)


# -- comparison and analogues pages (the same template) -----------------------------------------------------
def test_comparison_page_shows_the_trend_with_annealing_time(tmp_path):
    from qasa.analysis import analyze_comparison

    qpu = VirtualQPU(seed=5, topology_shape=[2], broken_nodes=[], drift_sd=0.0)
    runs = {}
    for t in (5.0, 50.0, 500.0):
        ds = qasa.run(qasa.Protocol.grid(1.0, 0.1, reads_per_h=3000, annealing_time=t, seed=1), qpu)
        runs[f"{t:g} us"] = (ds, fit(ds, "qasa"))
    rep = analyze_comparison(runs)
    page = render(rep, tmp_path / "cmp")
    text = page.read_text()
    assert page.name == "comparison.html" and "Trend with annealing time" in text
    trend = rep.trends["beta"]
    # later freeze-out at longer anneals: β rises on the virtual QPU, as its truth does
    truth = rep.truth_medians["beta"]
    assert truth[0] < truth[-1] and trend["median_slope_per_decade"] > 0
    tables = re.findall(r'<div class="tbl">(.*?)</div>', text)
    assert len(tables) == text.count("<table") >= 3 and all('class="dl"' in t for t in tables)
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"] == list(runs)


def test_analogues_page_renders_every_shape_and_extra_sections(tmp_path):
    from qasa.analysis import analyze_analogues

    shapes = ["constant", "cosine", "linear"]
    nqm = pd.DataFrame({"shape": shapes, "final_loss": [1e-3, 2e-4, 3e-4], "eta0_sensitivity": [1.0, 0.5, 0.6],
                        "temperature": [0.1, 0.01, 0.02]})
    sa = pd.DataFrame({"shape": shapes, "ground_state_probability": [0.1, 0.6, 0.5], "residual_energy": [3.0, 0.5, 0.7],
                       "beta_effective": [1.0, 4.0, 3.0], "temperature": [1.0, 0.25, 0.33]})
    qpu = pd.DataFrame({"shape": shapes, "beta": [5.0, 5.5, 5.2], "temperature": [0.2, 0.18, 0.19]})
    extra = pd.DataFrame({"shape": shapes, "s_freeze": [0.61, 0.63, 0.62]})
    rep = analyze_analogues(nqm, sa, qpu, sections={"Freeze-out per shape": extra})
    page = render(rep, tmp_path / "ana")
    text = page.read_text()
    assert page.name == "analogues.html" and all(s in text for s in shapes)
    assert "Freeze-out per shape" in text and "0.63" in text
    assert (tmp_path / "ana" / "analogues.csv").is_file() and (tmp_path / "ana" / "analogues.svg").is_file()


@pytest.mark.parametrize("preset, most_white", [("advantage4.1", 0.20), ("2000q", 0.25), ("advantage2", 0.26)])
def test_the_tile_map_fills_its_canvas_with_one_square_per_qubit(preset, most_white):
    """Maps at Advantage size: every qubit gets its own square (no two at one place) and the map is at most
    ~20 % white (D-Wave's drawing layout left 85.5 % of the canvas white, a qubit ~2.6 px at 520 px)."""
    from qasa.topology import layout_table

    q = VirtualQPU(preset, seed=0)
    dev = {"topology_type": q.properties["topology"]["type"], "topology_shape": q.properties["topology"]["shape"]}
    lay, outside = layout_table(dev, q.nodelist)
    assert not outside and not lay[["x", "y"]].duplicated().any()
    area = (np.ptp(lay["x"]) + 1) * (np.ptp(lay["y"]) + 1)
    assert 1 - len(lay) / area <= most_white
    # neighbours in a unit cell are neighbours on the map: the qubits of one Chimera/Pegasus cell lie in one block
    if dev["topology_type"] == "pegasus":
        first = lay[[c[:1] == (0,) and c[3] == 0 and c[1] == 1 for c in lay["coord"]]]     # u = 0, w = 1, z = 0
        assert np.ptp(first["x"]) <= 5 and np.ptp(first["y"]) <= 3

import json

import numpy as np
import pandas as pd
import pytest

import qasa
from qasa.dataset import Dataset
from qasa.errors import DatasetError


@pytest.fixture
def dataset(chimera_sa, small_protocol):
    return qasa.run(small_protocol.replace(qubits=tuple(chimera_sa.nodelist[:20])), chimera_sa)


def test_save_load_round_trip_is_exact(dataset, tmp_path):
    dataset.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.equals(dataset)
    assert back.protocol == dataset.protocol


def test_spin_table_round_trip(dataset, tmp_path):
    path = dataset.to_spin_table(tmp_path / "spin_table.csv")
    table = pd.read_csv(path)
    assert list(table.columns[:2]) == ["h", "samples"]
    assert table.columns[2] == f"spin_{dataset.protocol.qubits[0]}"
    assert (table["samples"] == 400).all()
    imported = Dataset.from_spin_table(path)
    a, b = dataset.response(), imported.response()
    assert np.array_equal(a.qubits, b.qubits) and np.array_equal(a.h, b.h)
    assert np.array_equal(a.n_down, b.n_down) and np.array_equal(a.n_total, b.n_total)
    # and back again: the file is reproduced byte for byte
    again = imported.to_spin_table(tmp_path / "again.csv")
    assert again.read_bytes() == path.read_bytes()
    imported.save(tmp_path / "imported")
    assert Dataset.load(tmp_path / "imported").equals(imported)


def test_spin_table_reference_layout_is_read(tmp_path):
    (tmp_path / "spin_table.csv").write_text("h,samples,spin_30,spin_31\n-0.1,1000,120,130\n0.1,1000,880,860\n")
    r = Dataset.from_spin_table(tmp_path / "spin_table.csv").response()
    assert list(r.qubits) == [30, 31]
    assert r.n_down.tolist() == [[120, 880], [130, 860]]
    assert r.n_total.tolist() == [[1000, 1000], [1000, 1000]]


@pytest.mark.parametrize("text, match", [
    ("h,samples\n0.1,10\n", "need columns"),
    ("h,samples,spin_1\n0.1,10,11\n", r"\[0, samples\]"),
    ("h,samples,spin_x\n0.1,10,1\n", "bad spin column"),
])
def test_bad_spin_tables_are_refused(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DatasetError, match=match):
        Dataset.from_spin_table(tmp_path / "t.csv")


def test_load_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a qasa dataset"):
        Dataset.load(tmp_path)


def test_interrupted_compaction_loses_and_duplicates_nothing(dataset, tmp_path):
    """A journal part whose call is already compacted is taken once; calls and counts both."""
    path = tmp_path / "ds"
    first = dataset.counts["call_id"].iloc[0]
    dataset.save(path)
    record = dataset.calls[dataset.calls["call_id"] == first].iloc[0].to_dict()
    from qasa.store import DatasetStore

    store = DatasetStore(path)
    with store.writing():
        store.journal_call(record, dataset.counts[dataset.counts["call_id"] == first])
    back = Dataset.load(path)
    assert back.sorted().equals(dataset.sorted())


def _reference_response(counts: pd.DataFrame, frame: str) -> tuple:
    """The sums by a pandas groupby (the definition), for comparison with Dataset.response."""
    g = counts["gauge"].to_numpy()
    flip = (g < 0) if frame == "programmed" else np.zeros(len(g), bool)
    df = pd.DataFrame({"qubit": counts["qubit"].to_numpy(),
                       "h": np.where(flip, -counts["h"].to_numpy(), counts["h"].to_numpy()) + 0.0,
                       "down": np.where(flip, counts["n_up"], counts["n_down"]),
                       "total": counts["n_up"].to_numpy() + counts["n_down"].to_numpy()})
    wide = df.groupby(["qubit", "h"])[["down", "total"]].sum().unstack(fill_value=0)
    return wide.index.to_numpy(), wide["down"].columns.to_numpy(), wide["down"].to_numpy(), wide["total"].to_numpy()


@pytest.mark.parametrize("frame", ["programmed", "nominal"])
def test_response_sums_equal_a_groupby_with_gaps_repeats_and_gauges(frame):
    """Random calls (some (qubit, h) cells read twice, some never, mixed gauges, h = ±0.0) sum
    exactly as a groupby; a qubit subset keeps its rows and every h of the subset."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(40):
        h = float(rng.choice([-0.5, -0.0, 0.0, 0.25, 0.5]))
        qubits = np.sort(rng.choice(np.array([3, 7, 11, 400, 5000]), size=rng.integers(1, 6), replace=False))
        n = rng.integers(1, 50)
        down = rng.integers(0, n + 1, len(qubits))
        rows.append(pd.DataFrame({"call_id": f"c{c:03d}", "qubit": qubits, "h": h,
                                  "gauge": rng.choice([-1, 1], len(qubits)).astype(np.int8),
                                  "n_down": down, "n_up": n - down}))
    ds = Dataset(pd.concat(rows, ignore_index=True))
    r = ds.response(frame=frame)
    q, h, down, total = _reference_response(ds.counts, frame)
    assert np.array_equal(r.qubits, q) and np.array_equal(r.h, h)
    assert np.array_equal(r.n_down, down) and np.array_equal(r.n_total, total)
    assert r.n_down.dtype == np.int64 and r.qubits.dtype == np.int64 and not np.any((r.h == 0) & np.signbit(r.h))
    sub = ds.response([400, 3], frame=frame)
    keep = ds.counts["qubit"].isin([3, 400]).to_numpy()
    q, h, down, total = _reference_response(ds.counts[keep], frame)
    assert np.array_equal(sub.qubits, q) and np.array_equal(sub.h, h) and np.array_equal(sub.n_total, total)


def test_sorted_orders_counts_that_are_out_of_order_and_keeps_ordered_ones():
    counts = pd.DataFrame({"call_id": ["b", "a", "b", "a"], "qubit": [1, 2, 0, 1], "h": 0.1, "gauge": 1,
                           "n_down": [1, 2, 3, 4], "n_up": 0})
    s = Dataset(counts).sorted()
    assert s.counts["call_id"].astype(str).tolist() == ["a", "a", "b", "b"]
    assert s.counts["qubit"].tolist() == [1, 2, 0, 1] and s.counts["n_down"].tolist() == [4, 2, 3, 1]
    assert s.sorted().counts.equals(s.counts)


def test_json_text_is_the_same_json_with_long_lists_on_one_line():
    from qasa.dataset import LONG_LIST, json_text

    obj = {"b": list(range(LONG_LIST + 1)), "a": {"short": [1, 2], "records": [{"q": i, "x": 0.5} for i in range(100)]},
           "text": "qasa-long-list-0", "pairs": [[i, i + 1] for i in range(200)]}
    text = json_text(obj)
    assert json.loads(text) == obj
    lines = text.splitlines()
    assert any(line.strip().startswith('"b": [0,1,2,') for line in lines)          # one line
    assert any(line.strip() == "1," for line in lines)                               # short list indented
    assert list(json.loads(text)) == ["a", "b", "pairs", "text"]                      # keys sorted
    with pytest.raises(ValueError):
        json_text({"x": [float("nan")] * (LONG_LIST + 1)})


# -- import contract (issue 24) ------------------------------------------------------------------
def _table(tmp_path, text="h,samples,spin_0,spin_5\n-1,10,9,8\n1,10,1,2\n"):
    (tmp_path / "t.csv").write_text(text)
    return tmp_path / "t.csv"


def test_import_checks_the_device_shape_as_run_does(tmp_path):
    """``topology_shape=[16, 16, 4]`` for Pegasus was stored, and every later report failed."""
    with pytest.raises(DatasetError, match=r"shape '16,16,4' has 3 dimension\(s\); a pegasus shape is one number m \(e.g. 16 for P16\)"):
        Dataset.from_spin_table(_table(tmp_path), {"topology_type": "pegasus", "topology_shape": [16, 16, 4]})
    with pytest.raises(DatasetError, match=r"'spin_9': qubit 9 is not a qubit of a chimera 1,1,4 graph"):
        Dataset.from_spin_table(_table(tmp_path, "h,samples,spin_0,spin_9\n-1,10,9,8\n1,10,1,2\n"),
                                {"topology_type": "chimera", "topology_shape": [1]})      # qubits 0..7
    ds = Dataset.from_spin_table(_table(tmp_path), {"topology_type": "chimera", "topology_shape": [1]})
    assert ds.device["topology_shape"] == [1, 1, 4] and ds.device["nodelist"] == [0, 5]


@pytest.mark.parametrize("h", ["4.000001", "-5", "1e308", "-1e308"])
def test_imported_h_is_bounded_by_the_widest_published_h_range(tmp_path, h):
    """h = ±1e308 was imported, then every fit overflowed."""
    from qasa.dataset import MAX_IMPORTED_H

    assert MAX_IMPORTED_H == 4.0
    with pytest.raises(DatasetError, match=rf"line 3, column 'h': '{h}' is outside the allowed range \[-4, 4\]"):
        Dataset.from_spin_table(_table(tmp_path, f"h,samples,spin_0\n0,10,5\n{h},10,1\n"))
    ok = Dataset.from_spin_table(_table(tmp_path, "h,samples,spin_0\n-4,10,9\n4,10,1\n"))
    assert sorted(ok.calls["h"]) == [-4.0, 4.0]


def test_imported_qubit_ids_beyond_int64_are_refused_naming_the_column(tmp_path):
    with pytest.raises(DatasetError, match=r"spin column 'spin_99999999999999999999': qubit id out of range"):
        Dataset.from_spin_table(_table(tmp_path, "h,samples,spin_0,spin_99999999999999999999\n0,10,5,5\n"))
    ds = Dataset.from_spin_table(_table(tmp_path, f"h,samples,spin_{2**63 - 1}\n0,10,5\n"))
    assert ds.device["nodelist"] == [2**63 - 1]


def test_spin_table_has_one_row_per_h_value_and_round_trips(tmp_path):
    """linspace(-0.3, 0.3, 5) stores -0.15 and 0.14999999999999997: gauge-flipped reads programmed at
    −h are the grid's fields, not new ones, so the programmed frame and the exported table have the
    protocol's 5 h values, written as the shortest repr, and export → import → export is the same file."""
    import qasa

    sa = qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1, 1, 4], beta=4.0)
    grid = np.linspace(-0.3, 0.3, 5)
    protocol = qasa.Protocol(h_values=tuple(grid), reads_per_h=400, reads_per_call=100, gauges_per_h=2, seed=1)
    ds = qasa.run(protocol, sa, tmp_path / "DR")
    r = ds.response(frame="programmed")
    assert r.h.tolist() == sorted(grid.tolist()) and (r.n_total == 400).all()
    first = ds.to_spin_table(tmp_path / "a.csv")
    text = first.read_text()
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == [repr(float(h)) for h in grid]
    again = qasa.Dataset.from_spin_table(first).to_spin_table(tmp_path / "b.csv")
    assert again.read_text() == text
    on_grid = Dataset(pd.DataFrame({"call_id": ["c0"], "qubit": [0], "h": [-0.975], "gauge": [1],
                                    "n_down": [3], "n_up": [7]}))
    assert on_grid.to_spin_table(tmp_path / "g.csv").read_text().splitlines()[1].startswith("-0.975,10,")

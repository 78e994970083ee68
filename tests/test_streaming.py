"""Counts streamed, memory bounded (issue 22): a loaded Dataset's views read its counts batch by batch.

The views a large assessment uses — the response and its per-call statistics, the split halves, the
per-call scores of T_eff, the call units, drift — must give, streamed from disk in many small
batches, exactly what they give on the same counts held in memory; and they must not build the
whole counts table while doing so (a tracemalloc bound on the peak, far below the table's size).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import qasa
import qasa.dataset as dataset_mod
from qasa import device as dv
from qasa import drift, temperature
from qasa.dataset import Dataset
from qasa.store import DatasetStore


def _bits(a: np.ndarray) -> tuple:
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def _same_response(a, b) -> None:
    for f in ("qubits", "h", "n_down", "n_total"):
        assert _bits(getattr(a, f)) == _bits(getattr(b, f)), f
    for f in ("n_calls", "reads_sq", "centre", "spread"):
        assert _bits(getattr(a.calls, f)) == _bits(getattr(b.calls, f)), f


def _same_record(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


@pytest.fixture
def stored(tmp_path, chimera_sa, small_protocol):
    """A run whose calls are compacted but for every third one, which waits in the journal (an interrupted
    compaction's state, its journal's calls between the compacted ones), and the same counts in memory."""
    ds = qasa.run(small_protocol.replace(reads_per_h=800), chimera_sa)       # in memory: 4 calls per h
    ids = list(ds.calls["call_id"].astype(str))
    late = set(ids[1::3])
    out = tmp_path / "ds"
    store = DatasetStore(out)
    with store.writing():
        store.create({k: v for k, v in ds.metadata.items()})
        early = ~ds.counts["call_id"].astype(str).isin(late)
        store.save(Dataset(ds.counts[early], ds.calls[~ds.calls["call_id"].isin(late)], ds.metadata))
        for _, rec in ds.calls[ds.calls["call_id"].isin(late)].iterrows():
            record = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            store.journal_call(record, ds.counts[ds.counts["call_id"] == rec["call_id"]])
    return out, ds


def test_streamed_views_equal_the_in_memory_ones_in_any_batching(stored, monkeypatch):
    out, ds = stored
    mem = ds.response()
    halves = dv.half_calls(ds, 0)
    mem_halves = ds.responses([ds.call_index[halves], ds.call_index[~halves]])
    fits = dv.point_fit(ds)
    mem_drift = drift.drift_summary(ds, fits, bootstrap=0)
    mem_t = temperature.effective_temperature(ds).to_dict()
    assert np.isfinite(mem_t["T_eff_measurement_stderr"])               # the per-call scores are used
    for rows in (7, 1000, 1 << 20):
        monkeypatch.setattr(dataset_mod, "BATCH_ROWS", rows)
        disk = qasa.load(out)
        assert disk._counts is None and DatasetStore(out).has_journal()
        _same_response(disk.response(), mem)
        _same_response(disk.response(frame="nominal"), ds.response(frame="nominal"))
        assert (disk.call_index == ds.call_index).all()
        assert np.array_equal(dv.half_calls(disk, 0), halves)
        for a, b in zip(disk.responses([disk.call_index[halves], disk.call_index[~halves]]), mem_halves):
            _same_response(a, b)
        t = disk.totals()
        assert t["rows"] == len(ds.counts) and t["reads"] == int(ds.counts[["n_down", "n_up"]].to_numpy().sum())
        assert np.array_equal(t["qubits"], np.unique(ds.counts["qubit"]))
        assert np.array_equal(disk.sorted().gauges(), ds.gauges())         # (the journal after the compacted rows)
        assert _same_record(temperature.effective_temperature(disk).to_dict(), mem_t)
        d = drift.drift_summary(disk, fits, bootstrap=0)
        pd.testing.assert_frame_equal(d["trends"], mem_drift["trends"])
        assert disk._counts is None                      # no view read the whole table
        pd.testing.assert_frame_equal(disk.sorted().counts, ds.sorted().counts)   # journal merged in order


def test_a_compaction_streams_the_journal_into_the_same_sorted_table(stored, monkeypatch):
    out, ds = stored
    monkeypatch.setattr(dataset_mod, "BATCH_ROWS", 50)
    store = DatasetStore(out)
    with store.writing():
        saved = store.save(store.load().sorted())
    assert not store.has_journal() and saved._counts is None
    back = qasa.load(out)
    pd.testing.assert_frame_equal(back.counts, ds.sorted().counts)
    assert back.equals(saved) and saved.totals()["rows"] == len(ds.counts)
    _same_response(back.response(), ds.response())


def test_gauges_of_counts_stored_without_them_are_rebuilt_batch_by_batch(tmp_path, chimera_sa, small_protocol,
                                                                         monkeypatch):
    ds = qasa.run(small_protocol, chimera_sa)
    old = Dataset(ds.counts.drop(columns="gauge"), ds.calls, ds.metadata)     # written before gauges were stored
    old.save(tmp_path / "old")
    monkeypatch.setattr(dataset_mod, "BATCH_ROWS", 11)
    disk = qasa.load(tmp_path / "old")
    assert (disk.gauges() == ds.counts["gauge"].to_numpy()).all()
    _same_response(disk.response(), ds.response())


def _large(tmp_path, calls: int = 400, qubits: int = 500, fields: int = 10) -> tuple:
    """A dataset of ``calls × qubits`` rows (each field read by ``calls / fields`` calls) saved compacted."""
    rng = np.random.default_rng(1)
    h = np.linspace(-0.5, 0.5, fields)
    rows = []
    for c in range(calls):
        gauge = rng.choice(np.array([-1, 1], np.int8), qubits)
        p = 0.5 * (1 + np.tanh(4 * (gauge * h[c % fields] + 0.01)))
        down = rng.binomial(50, np.where(gauge < 0, 1 - p, p))
        rows.append(pd.DataFrame({"call_id": f"c{c:05d}", "qubit": np.arange(qubits), "h": h[c % fields],
                                  "gauge": gauge, "n_down": down, "n_up": 50 - down}))
    table = pd.DataFrame({"call_id": pd.Series([f"c{c:05d}" for c in range(calls)], dtype="string"),
                          "h": h[np.arange(calls) % fields], "num_reads": 50,
                          "started": [f"2025-01-01T00:{c // 60:02d}:{c % 60:02d}+00:00" for c in range(calls)],
                          "finished": [f"2025-01-01T00:{c // 60:02d}:{c % 60:02d}.5+00:00" for c in range(calls)]})
    ds = Dataset(pd.concat(rows, ignore_index=True), table, {"protocol": None, "device": {}})
    ds.save(tmp_path / "large")
    return tmp_path / "large", ds


def test_views_of_a_large_dataset_stay_far_below_its_table(tmp_path, monkeypatch):
    """Load (with validation), response, split halves, T_eff's call scores and drift of 480 000 rows in
    batches of 4 096: what each allocates beyond what it started with (tracemalloc's peak, which sees
    numpy's arrays) stays under a fifth of the in-memory table — less than one float64 per row, so a
    view that built the whole table again, or any array with one entry per (call, qubit), would fail."""
    path, ds = _large(tmp_path, calls=1200, qubits=400)
    rows = len(ds.counts)
    bound = int(ds.counts.memory_usage(index=False, deep=True).sum()) / 5          # ≈ 3.4 MB
    assert 8 * rows > bound
    fits = dv.point_fit(ds, "gibbs-bias")
    del ds
    monkeypatch.setattr(dataset_mod, "BATCH_ROWS", 4096)
    used = {}

    def measured(name, fn):
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        out = fn()
        used[name] = tracemalloc.get_traced_memory()[1] - start
        return out

    tracemalloc.start()
    try:
        disk = measured("load", lambda: qasa.load(path))
        r = measured("response", disk.response)
        half = measured("halves", lambda: dv.half_calls(disk, 0))
        measured("responses", lambda: disk.responses([disk.call_index[half], disk.call_index[~half]]))
        measured("call scores", lambda: temperature._call_scores(disk, 4.0, (-0.2, 0.2), len(disk.call_index)))
        d = measured("drift", lambda: drift.drift_summary(disk, fits, bootstrap=0))
    finally:
        tracemalloc.stop()
    assert r.n_total.sum() == rows * 50 and len(d["trends"]) > 300
    assert disk._counts is None
    assert max(used.values()) < bound, (used, bound)


def test_a_loaded_dataset_pickles_with_its_counts_in_memory(stored):
    import pickle

    out, ds = stored
    disk = qasa.load(out)
    back = pickle.loads(pickle.dumps(disk))
    assert back._counts is not None and back.equals(disk) and back.sorted().counts.equals(ds.sorted().counts)


def test_a_loaded_dataset_stays_its_snapshot_after_a_writer_compacts(tmp_path, chimera_sa, small_protocol):
    """Loaded mid-run (some calls compacted, some in the journal), then a writer journals more calls and
    compacts them all: the loaded Dataset still reads exactly its own calls — response, counts and
    ordered batches equal to before, the later calls absent — never "load it again"."""
    ds = qasa.run(small_protocol.replace(reads_per_h=800), chimera_sa)       # in memory
    ids = list(ds.calls["call_id"].astype(str))
    first, journaled, later = ids[: len(ids) // 3], ids[len(ids) // 3: 2 * len(ids) // 3], ids[2 * len(ids) // 3:]
    store = DatasetStore(tmp_path / "ds")

    def journal(some):
        for _, rec in ds.calls[ds.calls["call_id"].isin(some)].iterrows():
            record = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            store.journal_call(record, ds.counts[ds.counts["call_id"] == rec["call_id"]])

    with store.writing():
        store.create(dict(ds.metadata))
        keep = ds.counts["call_id"].astype(str).isin(first)
        store.save(Dataset(ds.counts[keep], ds.calls[ds.calls["call_id"].isin(first)], ds.metadata))
        journal(journaled)
    snapshot = qasa.load(tmp_path / "ds")
    fresh = qasa.load(tmp_path / "ds")
    before = fresh.response()
    before_sorted = fresh.sorted().counts
    with store.writing():
        journal(later)
        store.save(store.load())
    assert not store.has_journal()
    _same_response(snapshot.response(), before)
    assert sorted(snapshot.counts["call_id"].astype(str).unique()) == sorted(first + journaled)
    pd.testing.assert_frame_equal(snapshot.counts.reset_index(drop=True), fresh.counts.reset_index(drop=True))
    pd.testing.assert_frame_equal(snapshot.sorted().counts, before_sorted)
    assert len(qasa.load(tmp_path / "ds").calls) == len(ids)

"""The dataset directory's one owner (DatasetStore), the pipeline's rules, and resume provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import qasa
from qasa.cli import main
from qasa.errors import DatasetError
from qasa.store import DatasetStore

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FailingSampler  # noqa: E402

SA = ["--backend", "sa", "--topology", "chimera", "--shape", "2,2,4", "--h-step", "0.1", "--reads", "400",
      "--reads-per-call", "200", "--seed", "3", "--quiet"]
EMU = ["--shape", "2", "--h-step", "0.25", "--reads", "400", "--reads-per-call", "200", "--seed", "3", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file of a directory and the hash of its bytes (byte-identical check)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_with_one_line(tmp_path, chimera_sa, small_protocol):
    out = tmp_path / "ds"
    qasa.run(small_protocol, chimera_sa, out)
    before = tree_digest(out)
    store = DatasetStore(out)
    with store.writing():
        with pytest.raises(DatasetError, match="being written by another qasa process"):
            with DatasetStore(out).writing():
                pass
        with pytest.raises(DatasetError, match="being written by another qasa process"):
            qasa.run(small_protocol, chimera_sa, out)
        assert DatasetStore(out).load().equals(qasa.load(out))    # readers are never blocked out
    assert tree_digest(out) == before


def test_orphaned_temporary_files_are_removed_by_the_next_writer(tmp_path, chimera_sa, small_protocol):
    out = tmp_path / "ds"
    qasa.run(small_protocol, chimera_sa, out)
    orphan = out / "journal" / ".g0000-h00000.parquet.abc.tmp"
    orphan.write_bytes(b"half a file")
    qasa.run(small_protocol, chimera_sa, out)          # a no-op resume takes the writer lock
    assert not orphan.exists()


@pytest.mark.parametrize("corrupt, match", [
    (lambda c: c.assign(n_down=np.where(np.arange(len(c)) == 5, -3, c["n_down"])), "negative n_down"),
    (lambda c: c.assign(h=np.where(np.arange(len(c)) == 5, np.nan, c["h"])), "not finite"),
    (lambda c: c.assign(n_up=np.where(np.arange(len(c)) == 5, c["n_up"] + 1, c["n_up"])), "but the call recorded"),
    (lambda c: c.assign(gauge=np.where(np.arange(len(c)) == 5, 3, c["gauge"]).astype("int8")), "not ±1"),
])
def test_stored_data_are_validated_on_load(tmp_path, chimera_sa, small_protocol, corrupt, match):
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    bad = corrupt(ds.counts.copy())
    pq_bytes = __import__("qasa.dataset", fromlist=["table_bytes"]).table_bytes(bad)
    (out / "counts.parquet").write_bytes(pq_bytes)
    with pytest.raises(DatasetError, match=match):
        qasa.load(out)
    res = invoke("report", out)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and res.output.startswith("error:")


def _rewrite(path: Path, frame: pd.DataFrame) -> None:
    from qasa.dataset import table_bytes

    path.write_bytes(table_bytes(frame))


def test_call_ids_outside_the_protocol_and_missing_counts_are_refused(tmp_path, chimera_sa, small_protocol):
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    first = str(ds.calls["call_id"].iloc[0])
    calls = ds.calls.copy()
    calls.loc[0, "call_id"] = "g9999-h00000"          # a call id outside the protocol, with its counts
    counts = ds.counts.copy()
    counts["call_id"] = counts["call_id"].astype(str).replace({first: "g9999-h00000"})
    _rewrite(out / "calls.parquet", calls)
    _rewrite(out / "counts.parquet", counts)
    with pytest.raises(DatasetError, match="not a call of the stored protocol"):
        qasa.load(out)
    _rewrite(out / "calls.parquet", ds.calls)
    _rewrite(out / "counts.parquet", ds.counts[ds.counts["call_id"] != first])     # a listed call without counts
    with pytest.raises(DatasetError, match=f"call '{first}' is listed in calls.parquet but its counts"):
        qasa.load(out)
    (out / "counts.parquet").unlink()
    with pytest.raises(DatasetError, match="in neither counts.parquet nor journal"):
        qasa.load(out)
    _rewrite(out / "counts.parquet", ds.counts)
    (out / "calls.parquet").unlink()                   # counts that no call lists: never re-run silently
    with pytest.raises(DatasetError, match="no call record lists it"):
        qasa.load(out)
    res = invoke("run", out)                           # a resume refuses before running anything
    assert res.exit_code == 1 and "no call record lists it" in res.output
    assert not (out / "calls.parquet").exists() and not list((out / "journal").glob("*.arrow"))


@pytest.mark.parametrize("corrupt, match", [
    (lambda c, calls: (pd.concat([c, c.iloc[[3]]], ignore_index=True), calls), "has 2 rows; each call has one row"),
    (lambda c, calls: (c.assign(qubit=np.where(np.arange(len(c)) == 2, 99_999, c["qubit"])), calls),
     "qubit 99999 of call .* is not a qubit of the stored protocol"),
    (lambda c, calls: (c, calls.assign(qpu_access_time=np.where(np.arange(len(calls)) == 1, -1000.0,
                                                                 calls["qpu_access_time"].astype(float)))),
     "records qpu_access_time -1000.0"),
])
def test_duplicated_rows_foreign_qubits_and_negative_timing_are_refused(tmp_path, chimera_sa, small_protocol,
                                                                         corrupt, match):
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    counts, calls = corrupt(ds.counts.copy(), ds.calls.assign(qpu_access_time=1.0))
    _rewrite(out / "counts.parquet", counts)
    _rewrite(out / "calls.parquet", calls)
    with pytest.raises(DatasetError, match=match):
        qasa.load(out)


def test_design_rounds_of_absurd_size_are_refused_before_anything_is_built(tmp_path, chimera_sa, small_protocol):
    out = tmp_path / "ds"
    qasa.run(small_protocol, chimera_sa, out)
    meta = json.loads((out / "metadata.json").read_text())
    meta["design_rounds"] = {"a001": 300_000_000}
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="design_rounds.*in \\[0, 100000\\]"):
        qasa.load(out)


@pytest.mark.parametrize("stop_after", ["counts.parquet", "calls.parquet", "metadata.json", "one journal part"])
def test_a_compaction_interrupted_after_any_write_loads_and_resumes_identically(tmp_path, chimera_sa, small_protocol,
                                                                                monkeypatch, stop_after):
    """The first compaction writes counts, calls, metadata, then removes the journal; a stop (SIGKILL,
    Ctrl-C, a full disk) after any one of these writes leaves a dataset that loads to the same counts
    and that `qasa run DIR` finishes (issue: calls.parquet written before counts.parquet bricked it)."""
    import qasa.store as store_mod

    ref = qasa.run(small_protocol, chimera_sa, tmp_path / "ref")
    out = tmp_path / "ds"
    real_write, real_unlink = store_mod.atomic_write_bytes, Path.unlink
    if stop_after == "metadata.json":
        real_json = store_mod.atomic_write_json

        def write_json(path, obj):
            real_json(path, obj)
            if Path(path).name == "metadata.json" and any((out / "journal").glob("*.arrow")) \
                    and (out / "calls.parquet").exists():
                raise KeyboardInterrupt
        monkeypatch.setattr(store_mod, "atomic_write_json", write_json)
    elif stop_after == "one journal part":
        def unlink(self, *a, **k):
            real_unlink(self, *a, **k)
            if self.suffix == ".arrow":
                raise KeyboardInterrupt
        monkeypatch.setattr(Path, "unlink", unlink)
    elif stop_after == "counts.parquet":         # streamed into its file through atomic_writer
        real_writer = store_mod.atomic_writer

        @contextlib.contextmanager
        def writer(path, *a, **k):
            with real_writer(path, *a, **k) as fh:
                yield fh
            if Path(path).name == stop_after:
                raise KeyboardInterrupt
        monkeypatch.setattr(store_mod, "atomic_writer", writer)
    else:
        def write(path, data):
            real_write(path, data)
            if Path(path).name == stop_after:
                raise KeyboardInterrupt
        monkeypatch.setattr(store_mod, "atomic_write_bytes", write)
    with pytest.raises(KeyboardInterrupt):
        qasa.run(small_protocol.replace(seed=ref.protocol.seed), chimera_sa, out)
    monkeypatch.undo()
    half = qasa.load(out)
    pd.testing.assert_frame_equal(half.counts.reset_index(drop=True), ref.counts.reset_index(drop=True))
    res = invoke("run", out)
    assert res.exit_code == 0, res.output
    done = qasa.load(out)
    pd.testing.assert_frame_equal(done.counts.reset_index(drop=True), ref.counts.reset_index(drop=True))
    assert not list((out / "journal").glob("*.arrow"))


def test_a_dataset_bricked_by_the_old_compaction_order_is_recovered(tmp_path, chimera_sa, small_protocol):
    """calls.parquet listing every call, no counts.parquet, every count still in journal/ (the state the
    old order left): loads to the full counts."""
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    store = DatasetStore(out)
    with store.writing():
        for _, rec in ds.calls.iterrows():
            store.journal_call({k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                                for k, v in rec.items()},
                               ds.counts[ds.counts["call_id"] == rec["call_id"]])
    (out / "counts.parquet").unlink()
    again = qasa.load(out)
    pd.testing.assert_frame_equal(again.sorted().counts.reset_index(drop=True), ds.counts.reset_index(drop=True))


_ORIGINAL_LOAD = DatasetStore.load


def _real_load(self, validate, loads):
    loads.append(1)
    return _ORIGINAL_LOAD(self, validate)


def test_done_calls_are_read_without_loading_the_counts(tmp_path, chimera_sa, small_protocol, monkeypatch):
    """What a resume skips comes from calls.parquet and the journal's names, not from the counts;
    a journal left by a killed run is included."""
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    last = ds.calls.iloc[-1].to_dict()
    keep = ds.counts["call_id"] != last["call_id"]
    store = DatasetStore(out)
    with store.writing():       # compacted without the last call, which waits in the journal
        store.save(qasa.Dataset(ds.counts[keep], ds.calls.iloc[:-1], ds.metadata))
        store.journal_call(last, ds.counts[~keep])
    assert "calls.parquet" in {p.name for p in out.iterdir()} and store.has_journal()
    loads = []
    monkeypatch.setattr(DatasetStore, "load", lambda self, validate=True: _real_load(self, validate, loads))
    assert DatasetStore(out).done_call_ids() == small_protocol.replace(
        qubits=tuple(chimera_sa.nodelist)).call_ids()
    assert loads == []


def test_assess_loads_once_and_fits_each_model_once(tmp_path, monkeypatch):
    from qasa import fitting

    loads, fits = [], []
    monkeypatch.setattr(DatasetStore, "load", lambda self, validate=True: _real_load(self, validate, loads))
    real_fit = fitting.fit

    def counting_fit(data, model="qasa", **kw):
        # a fit of the whole dataset's counts (split-half reliability fits of half the reads and a
        # pooled one-row fit are other analyses, not refits of a model)
        if hasattr(data, "n_total") and len(data.qubits) > 1:
            fits.append((fitting.get_model(model).name, int(data.n_total.sum())))
        return real_fit(data, model, **kw)

    monkeypatch.setattr(fitting, "fit", counting_fit)
    res = invoke("assess", tmp_path / "a", *EMU, "--compare")
    assert res.exit_code == 0, res.output
    assert len(loads) == 1
    full = max(n for _, n in fits)
    assert sorted(m for m, n in fits if n == full) == sorted(qasa.pipeline.COMPARE_MODELS)
    # a second report reuses every cached fit: no fit at all, one load
    loads.clear(), fits.clear()
    assert invoke("report", tmp_path / "a", "--compare").exit_code == 0
    assert len(loads) == 1 and [m for m, n in fits if n == full] == []


def test_a_fit_made_from_other_counts_is_never_used(tmp_path):
    """Fit tables of another run of the same protocol copied into fits/: compare and report refit."""
    from qasa.device import compare_fits
    from qasa.fitting import FitTable

    # ideal: two runs of a device with per-call noise differ beyond the pooled fit's errors (issue 20)
    common = ["--shape", "2", "--h-step", "0.1", "--reads", "1000", "--reads-per-call", "500", "--quiet", "--ideal"]
    a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "other"
    assert invoke("run", a, *common, "--seed", "1").exit_code == 0
    assert invoke("run", b, *common, "--seed", "2").exit_code == 0
    # another device of the same topology (a warmer preset), same protocol as b
    assert invoke("run", other, *common, "--seed", "2", "--preset", "advantage6.4").exit_code == 0
    for d in (a, b, other):
        assert invoke("fit", d).exit_code == 0
    stale = FitTable.load(other / "fits" / "qasa.parquet")
    # the stale table would show a change that is not there (so this test can fail)
    _, wrong = compare_fits(FitTable.load(a / "fits" / "qasa.parquet"), stale)
    assert abs(wrong["beta"]["median_change"]) > 3 * wrong["beta"]["median_change_se"]
    (b / "fits" / "qasa.parquet").write_bytes((other / "fits" / "qasa.parquet").read_bytes())
    res = invoke("compare", a, b, "--out", tmp_path / "cmp", "--json")
    assert res.exit_code == 0, res.output
    pair = next(iter(json.loads(res.output)["pairs"].values()))
    assert pair["qubits"] >= 30
    for p in ("beta", "b", "gamma", "eta"):
        assert abs(pair[p]["median_change"]) <= 3 * pair[p]["median_change_se"], p
        # two independent runs: at 5 % FDR a qubit or two may test as changed by chance (b: 2 of 32 here,
        # z = 3.1, 3.4); the stale table changes beta's median by > 3 se
        assert pair[p]["changed"] <= 2, p
    refit = FitTable.load(b / "fits" / "qasa.parquet")
    assert not np.allclose(refit.table["beta"], stale.table["beta"])    # the cache now holds b's own fit
    # report refits too
    (b / "fits" / "qasa.parquet").write_bytes((other / "fits" / "qasa.parquet").read_bytes())
    summary = json.loads(invoke("report", b, "--json").output)
    own = FitTable.load(b / "fits" / "qasa.parquet")
    assert summary["fit"]["beta"]["median"] == pytest.approx(own.summary()["beta"]["median"])
    assert not np.allclose(own.table["beta"], stale.table["beta"])


def test_compare_refuses_datasets_of_different_topologies(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("run", a, *SA).exit_code == 0
    assert invoke("run", b, *[x if x != "2,2,4" else "3,3,4" for x in SA]).exit_code == 0
    res = invoke("compare", a, b, "--out", tmp_path / "cmp")
    assert res.exit_code == 1 and "differs" in res.output and "--allow-different-devices" in res.output
    assert res.output.count("\n") == 1
    res = invoke("compare", a, b, "--out", tmp_path / "cmp", "--allow-different-devices")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, option", [
    (["--beta", "4"], "--beta"),
    (["--topology", "pegasus", "--shape", "2"], "--topology"),
])
def test_resume_with_a_changed_sa_setting_is_refused_naming_it(tmp_path, args, option):
    out = tmp_path / "ds"
    assert invoke("run", out, *SA).exit_code == 0
    before = tree_digest(out)
    res = invoke("run", out, *SA, *args)
    assert res.exit_code == 1 and option in res.output and res.output.count("\n") == 1
    assert tree_digest(out) == before


@pytest.mark.parametrize("args, option", [
    (["--physics", "dynamics"], "--physics"),
    (["--preset", "advantage6.4"], "--preset"),
    (["--device-seed", "5"], "--device-seed"),
    (["--reads", "800"], "reads_per_h"),
    (["--no-gauges"], "spin_reversal"),
    (["--annealing-time", "50"], "annealing_time"),
])
def test_resume_with_a_changed_emulator_option_is_refused_naming_it(tmp_path, args, option):
    out = tmp_path / "ds"
    assert invoke("run", out, *EMU).exit_code == 0
    before = tree_digest(out)
    res = invoke("run", out, *args)
    assert res.exit_code == 1 and option in res.output and res.output.count("\n") == 1, res.output
    assert tree_digest(out) == before


def test_run_dir_alone_finishes_an_interrupted_run_identically(tmp_path, monkeypatch):
    """A CLI run interrupted after 12 calls (a crash); `qasa run DIR` with no options
    rebuilds the sampler from the stored recipe and finishes it; counts equal a clean run's.
    (The SIGKILL version of this test is in the slow lane.)"""
    from qasa.samplers import StructuredSASampler

    opts = ["--backend", "sa", "--topology", "chimera", "--shape", "2,2,4", "--h-step", "0.1", "--reads", "400",
            "--reads-per-call", "200", "--seed", "11", "--quiet"]
    out, ref = tmp_path / "cut", tmp_path / "ref"
    real, calls = StructuredSASampler.sample, []

    def lost_after_12(self, bqm, **kw):
        calls.append(1)
        if len(calls) > 12:
            raise RuntimeError("simulated crash")     # not retried (a lost connection would be)
        return real(self, bqm, **kw)

    monkeypatch.setattr(StructuredSASampler, "sample", lost_after_12)
    assert CliRunner().invoke(main, [str(a) for a in ("run", out, *opts)]).exit_code != 0
    monkeypatch.undo()
    assert len(qasa.load(out).calls) == 12
    res = invoke("run", out)
    assert res.exit_code == 0, res.output
    assert invoke("run", ref, *opts).exit_code == 0
    a, b = qasa.load(out), qasa.load(ref)
    assert len(a.calls) == 21 * 2 and a.counts.equals(b.counts)
    res = invoke("run", out, "--json")
    assert json.loads(res.output)["already_finished"] is True


@pytest.mark.slow
def test_run_dir_alone_finishes_a_killed_run_identically(tmp_path):
    """SIGKILL a CLI run midway; `qasa run DIR` with no options finishes it; counts equal a clean run."""
    from conftest import kill_worker_midway

    opts = ["--backend", "sa", "--topology", "chimera", "--shape", "3,3,4", "--h-step", "0.005", "--reads", "400",
            "--reads-per-call", "200", "--seed", "11", "--quiet"]
    out, ref = tmp_path / "killed", tmp_path / "ref"
    held = kill_worker_midway("cli_worker.py", ["run", out, *opts], out, calls=20)
    total = 401 * 2
    assert 0 < held < total
    res = invoke("run", out)
    assert res.exit_code == 0, res.output
    assert invoke("run", ref, *opts).exit_code == 0
    a, b = qasa.load(out), qasa.load(ref)
    assert a.counts.equals(b.counts)
    res = invoke("run", out, "--json")
    assert json.loads(res.output)["already_finished"] is True


def test_add_reads_extends_a_finished_dataset_keeping_every_call(tmp_path):
    out = tmp_path / "ds"
    assert invoke("run", out, *SA).exit_code == 0
    first = qasa.load(out)
    assert invoke("run", out, "--add-reads", "400", "--quiet").exit_code == 0
    grown = qasa.load(out)
    assert grown.protocol.reads_per_h == 800 and len(grown.calls) == 2 * len(first.calls)
    old = grown.counts[grown.counts["call_id"].isin(first.counts["call_id"])].reset_index(drop=True)
    assert old.astype({"call_id": str}).equals(first.counts.astype({"call_id": str}))
    res = invoke("run", out, "--add-reads", "300")
    assert res.exit_code == 1 and "add a multiple of 200" in res.output


def test_compare_across_annealing_times_shows_measured_and_predicted_trends(tmp_path):
    """qasa compare of one device at several annealing times: the measured β trend sits beside the
    trend its classical analogues predict (issue 14), on the comparison page and in its JSON."""
    common = ["--shape", "2", "--h-step", "0.1", "--reads", "2000", "--reads-per-call", "1000", "--seed", "4", "--quiet"]
    runs = []
    for t in ("2", "20", "200"):
        out = tmp_path / f"t{t}"
        assert invoke("run", out, *common, "--annealing-time", t).exit_code == 0
        runs.append(out)
    res = invoke("compare", *runs, "--out", tmp_path / "cmp", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["analogue_trend"]
    assert [r["annealing_time"] for r in rows] == [2.0, 20.0, 200.0]
    measured = [r["measured_beta"] for r in rows]
    predicted = [r["sgd_beta"] for r in rows]
    assert measured == sorted(measured)                       # later freeze-out: colder, on the device
    assert predicted == sorted(predicted)                     # and in the SGD analogue's prediction
    assert rows[0]["sgd_beta"] == pytest.approx(rows[0]["measured_beta"], rel=1e-6)   # calibrated on the first run
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "beside its classical analogues" in page and "analogue_trend.csv" in page


def test_journal_parts_of_either_format_are_read_and_resumed(tmp_path, chimera_sa, small_protocol):
    """A run journals Arrow IPC parts; Parquet parts left by an earlier qasa are read the same way
    (counts, call records, QPU time, the ids a resume skips), and compaction clears both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    ids = list(ds.calls["call_id"].astype(str))
    old, new = ids[-1], ids[-2]
    keep = ~ds.counts["call_id"].isin([old, new])
    store = DatasetStore(out)
    with store.writing():
        store.save(qasa.Dataset(ds.counts[keep], ds.calls[ds.calls["call_id"].isin(ids[:-2])], ds.metadata))
        record = ds.calls[ds.calls["call_id"] == new].iloc[0].to_dict()
        store.journal_call({k: (None if pd.isna(v) else v) for k, v in record.items()},
                           ds.counts[ds.counts["call_id"] == new])
    assert (out / "journal" / f"{new}.arrow").is_file()
    part = ds.counts[ds.counts["call_id"] == old]
    record = {k: (None if pd.isna(v) else v) for k, v in ds.calls[ds.calls["call_id"] == old].iloc[0].to_dict().items()}
    table = pa.Table.from_pandas(part.assign(call_id=part["call_id"].astype(str)), preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"qasa_call": json.dumps(record).encode()}),
                   out / "journal" / f"{old}.parquet")
    fresh = DatasetStore(out)
    assert fresh.done_call_ids() == set(ids)
    assert fresh.spent_qpu_us() == pytest.approx(float(np.nansum(ds.calls["qpu_access_time"].to_numpy(float))))
    assert fresh.has_journal() and len(list((out / "journal").iterdir())) == 2
    back = fresh.load()
    assert back.sorted().counts.equals(ds.sorted().counts)
    assert back.sorted().calls["call_id"].astype(str).tolist() == sorted(ids)
    again = qasa.run(small_protocol, chimera_sa, out)           # nothing to run: compacted
    assert again.counts.equals(ds.counts) and not list((out / "journal").iterdir())


def test_a_fit_made_by_other_fitting_code_is_refitted(tmp_path, monkeypatch):
    """The fingerprint includes the fitting engine's source: a cached fit of the same counts made by
    other code (same qasa version string, e.g. a source checkout at another commit) is not reused."""
    import qasa.pipeline
    import qasa.store

    out = tmp_path / "a"
    assert invoke("run", out, *SA).exit_code == 0
    first = qasa.pipeline.fit(out, "gibbs-bias")
    assert qasa.pipeline.fit(out, "gibbs-bias").meta["fingerprint"] == first.meta["fingerprint"]   # cached
    monkeypatch.setattr(qasa.store, "_engine_hash", lambda: "other fitting code")
    fits = []
    real = qasa.pipeline.fitting.fit
    monkeypatch.setattr(qasa.pipeline.fitting, "fit", lambda *a, **k: fits.append(1) or real(*a, **k))
    again = qasa.pipeline.fit(out, "gibbs-bias")
    assert fits == [1] and again.meta["fingerprint"] != first.meta["fingerprint"]


def test_a_reader_during_a_new_round_sees_the_round_with_its_metadata(tmp_path, chimera_sa, small_protocol,
                                                                       monkeypatch):
    """A writer records a design round in metadata.json, then journals its calls; a reader that lists the
    journal after that call was written must also read the metadata that allows it (it reads it last)."""
    out = tmp_path / "ds"
    ds = qasa.run(small_protocol, chimera_sa, out)
    last = ds.calls.iloc[-1]
    writer, reader = DatasetStore(out), DatasetStore(out)
    real_parts = DatasetStore._journal_parts
    state = {"done": False}

    def parts_after_a_round(self):
        if self is reader and not state["done"]:      # the writer acts between the reader's steps
            state["done"] = True
            with writer.writing():
                writer.update_metadata(design_rounds={"a001": 1})
                rec = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in last.items()}
                writer.journal_call({**rec, "call_id": "a001-c00000"},
                                    ds.counts[ds.counts["call_id"] == last["call_id"]])
        return real_parts(self)

    monkeypatch.setattr(DatasetStore, "_journal_parts", parts_after_a_round)
    got = reader.load()
    assert "a001-c00000" in set(got.calls["call_id"].astype(str)) and state["done"]


def test_a_second_writer_that_lost_the_race_resumes_the_first_ones_dataset(tmp_path, chimera_sa, small_protocol,
                                                                           monkeypatch):
    """`qasa run DIR` prepared while DIR did not exist yet, and another writer created it before this one took
    the lock: the protocol is resolved again under the lock, so it continues that dataset with its seed
    instead of adding calls (other gauges) of its own seed."""
    out = tmp_path / "ds"
    first = small_protocol.replace(seed=7)
    real_writing = DatasetStore.writing

    def writing_after_another_writer(self):
        monkeypatch.setattr(DatasetStore, "writing", real_writing)
        with pytest.raises(ConnectionError):              # the other writer wins the race, stops after 5 calls
            qasa.run(first, FailingSampler(chimera_sa, 5), out)
        return real_writing(self)

    monkeypatch.setattr(DatasetStore, "writing", writing_after_another_writer)
    ds = qasa.run(small_protocol.replace(seed=None), chimera_sa, out)
    assert ds.protocol.seed == 7
    ref = qasa.run(first, chimera_sa)
    pd.testing.assert_frame_equal(qasa.load(out).counts.reset_index(drop=True), ref.counts.reset_index(drop=True))


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_output_directory_is_refused_and_nothing_is_written(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    res = invoke("run", out, "--backend", "sa", "--topology", "chimera", "--shape", "2")
    assert res.exit_code == 1 and res.output.startswith("error:") and "non-empty path" in res.output
    assert list(tmp_path.iterdir()) == []


def _journaled(tmp_path, chimera_sa, small_protocol) -> Path:
    """A dataset directory with some calls compacted and the others in the journal."""
    from qasa.dataset import Dataset

    ds = qasa.run(small_protocol, chimera_sa)
    ids = list(ds.calls["call_id"].astype(str))
    out = tmp_path / "C"
    store = DatasetStore(out)
    with store.writing():
        store.create(dict(ds.metadata))
        keep = ds.counts["call_id"].astype(str).isin(ids[:2])
        store.save(Dataset(ds.counts[keep], ds.calls[ds.calls["call_id"].isin(ids[:2])], ds.metadata))
        for _, rec in ds.calls[~ds.calls["call_id"].isin(ids[:2])].iterrows():
            record = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            store.journal_call(record, ds.counts[ds.counts["call_id"] == rec["call_id"]])
    return out


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a table\n" * 8}[how])


@pytest.mark.parametrize("file", ["counts.parquet", "calls.parquet", "journal"])
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_a_damaged_file_is_named_in_the_one_line_error(tmp_path, chimera_sa, small_protocol, file, how):
    out = _journaled(tmp_path, chimera_sa, small_protocol)
    target = sorted((out / "journal").glob("*.arrow"))[0] if file == "journal" else out / file
    name = target.relative_to(out).as_posix()
    _damage(target, how)
    with pytest.raises(DatasetError, match=f"cannot read dataset .*: {name} is damaged"):
        qasa.load(out)
    res = invoke("report", out)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and f" {name} is damaged" in res.output


def test_a_journal_part_damaged_after_loading_is_named_when_streamed(tmp_path, chimera_sa, small_protocol):
    out = _journaled(tmp_path, chimera_sa, small_protocol)
    ds = qasa.load(out)
    part = sorted((out / "journal").glob("*.arrow"))[-1]
    _damage(part, "truncated")
    with pytest.raises(DatasetError, match=f": journal/{part.name} is damaged"):
        ds.response()

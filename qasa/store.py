"""The dataset directory and its one owner, :class:`DatasetStore`.

A dataset is a directory::

    metadata.json      protocol, sampler recipe and settings, device, versions, runs, failures
    counts.parquet     tidy counts (call_id, qubit, h, gauge, n_down, n_up), compacted
    calls.parquet      one row per finished call (reads, timing, problem id, timestamps)
    journal/           one Arrow IPC file per call finished since the last compaction (.arrow;
                       Parquet parts of earlier versions are read as well)
    samples/           optional raw reads per call (int8 .npy, nominal frame)
    fits/              cached fit tables, each keyed by a fingerprint of what it was made from
    in_flight.json     while a run submits to a cloud solver: SAPI problem ids of calls in flight

Locks (``flock``, released by the kernel when a process dies, and creating no file): the writer
holds the dataset directory itself exclusively for the whole run, so a second writer is refused;
``journal/`` is held exclusively while the journal is compacted and shared while reading.

Every write is atomic (temporary file, fsync, rename). The runner journals each call before the next
one starts, so a killed process loses at most the calls in flight and never corrupts a file; a
compaction writes ``calls.parquet``, then ``counts.parquet``, then removes the journal, and a reader
takes the union (a call id present twice is taken once) under the shared compaction lock, so it never
sees a half state.

Counts streamed, memory bounded: :meth:`DatasetStore.load` reads the metadata, the calls and the call
ids, and returns a :class:`~qasa.dataset.Dataset` whose counts stay on disk — ``counts.parquet`` held
open (a later compaction renames a new file over it; this one keeps reading the old) and the journal
parts whose calls it lacks, read when streamed. Its views (the response and per-call statistics that
fits need, split halves, drift, T_eff) read the rows in batches (:meth:`~qasa.dataset.Dataset.batches`),
and so do validation (one pass) and compaction (:meth:`DatasetStore.save` streams the rows, sorted
by call id and qubit as a run's final compaction writes them, into row groups of ``counts.parquet``):
no step of an assessment holds every (call, qubit) row. The per-call counts on disk are unchanged
(the same columns, :data:`qasa.reduce.COUNTS_SCHEMA`). The ids of finished calls (what a resume skips)
come from ``calls.parquet`` and the journal's file names alone, without reading the counts.

Stored data are validated on load (:meth:`DatasetStore.load`): counts are non-negative integers,
``n_down + n_up`` equals the reads of the call, h is finite, gauges are ±1 (or 0 = not recorded,
for datasets written before gauges were stored), call ids belong to the stored protocol (or to a
round of a per-qubit design listed in ``metadata["design_rounds"]``, see :mod:`qasa.adaptive`). A dataset
that fails is refused with one line naming the file and the first offending value; nothing is fitted
or reported from it.

Fit cache: :meth:`DatasetStore.cached_fit` returns a saved fit only if its fingerprint — a hash of
the fit's input arrays (the programmed-frame response), the model, the fit options, qasa's
version and the fitting engine's source — equals the one of this dataset now, and its values still
hash to what was saved. A fit table copied from another run, edited by hand or made by another qasa
version or other fitting code is refitted, never used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qasa.dataset import (FORMAT, FORMAT_VERSION, Axis, CountsBatch, Dataset, Response, Totals, atomic_write_bytes,
                          atomic_write_json, atomic_writer, table_bytes)
from qasa.errors import DatasetError
from qasa.protocol import parse_round_call_id
from qasa.reduce import COUNT_COLUMNS, COUNT_DTYPES, COUNTS_SCHEMA

__all__ = ["DatasetStore", "fit_fingerprint"]

IN_FLIGHT = "in_flight.json"
DESIGN_DIR = "design"
#: File suffix of a journal part (Arrow IPC); parts written as Parquet by earlier versions are read too.
JOURNAL_SUFFIX = ".arrow"


def fit_fingerprint(response: Response, model: str, options: dict[str, Any] | None = None) -> str:
    """Hash of everything a fit depends on: the response arrays (with its per-call statistics), the model,
    options and qasa's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        qv = version("qasa")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        qv = "unknown"
    h = hashlib.blake2b(digest_size=16)
    calls = response.calls       # the per-call statistics feed σ_call and σ_field: part of what is fitted
    extra = () if calls is None else (calls.n_calls, calls.reads_sq, calls.centre, calls.spread)
    h.update(b"calls" if calls is not None else b"summed")
    for arr in (response.qubits, response.h, response.n_down, response.n_total, *extra):
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    h.update(json.dumps({"model": model, "options": options or {}, "qasa": qv, "engine": _engine_hash()},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _engine_hash() -> str:
    """Hash of the fitting engine's source (``qasa/fitting.py``, ``qasa/models.py``): a fit made by other
    fitting code is not reused even when qasa's version string is the same (a source checkout)."""
    h = hashlib.blake2b(digest_size=8)
    for name in ("qasa.fitting", "qasa.models"):
        spec = importlib.util.find_spec(name)        # the file, without importing the module
        if spec is None or spec.origin is None:     # pragma: no cover - frozen installs
            h.update(name.encode())
            continue
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


class DatasetStore:
    """The one reader and writer of a dataset directory (see module docstring).

    Args:
        path: the dataset directory (need not exist yet).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._writer: int | None = None
        # call records of the journal parts this object wrote (call id -> record): reading the dataset
        # back after a run does not parse them again (their counts are read from the files, streamed)
        self._written: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"DatasetStore({str(self.path)!r})"

    # -- state ---------------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        """True if the directory holds a dataset (a ``metadata.json``)."""
        return (self.path / "metadata.json").is_file()

    @property
    def journal(self) -> Path:
        return self.path / "journal"

    # -- locks -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator["DatasetStore"]:
        """Hold the writer lock for the block: a second writer gets a one-line :class:`DatasetError`.

        Also removes temporary files orphaned by a killed writer (only a lock holder may).
        """
        if self._writer is not None:       # re-entrant within one store object
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DatasetError(f"{self.path} is being written by another qasa process; "
                                   "wait for it to finish (a dataset has one writer at a time)") from None
            raise
        self._writer = fd
        try:
            self._remove_orphans()
            yield self
        finally:
            self._writer = None
            self._written.clear()       # without the lock, the files on disk are the truth
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def _compaction_lock(self, exclusive: bool) -> Iterator[None]:
        if exclusive:
            self.journal.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.journal, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:        # no journal: nothing is being compacted
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_orphans(self) -> None:
        for folder in (self.path, self.journal, self.path / "samples", self.path / "fits"):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def _require_writer(self) -> None:
        if self._writer is None:
            raise RuntimeError("DatasetStore: writes need `with store.writing():`")

    # -- metadata ------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The validated ``metadata.json`` (without the format fields).

        Raises:
            DatasetError: not a qasa dataset, unreadable, or a field of the wrong type.
        """
        meta_path = self.path / "metadata.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.path} is not a qasa dataset (no metadata.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read {meta_path}: {exc}") from None
        if not isinstance(meta, dict) or meta.pop("format", None) != FORMAT:
            raise DatasetError(f"{meta_path} is not a qasa dataset (format field missing)")
        version = meta.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise DatasetError(f"{self.path}: dataset format version {version!r} is not supported "
                               f"(expected {FORMAT_VERSION})")
        for key, kind in (("protocol", dict), ("device", dict), ("runs", list), ("failures", list),
                          ("sampler", dict)):
            if meta.get(key) is not None and not isinstance(meta[key], kind):
                raise DatasetError(f"{meta_path}: field {key!r} must be a JSON {kind.__name__}, "
                                   f"not {type(meta[key]).__name__}")
        rounds = meta.get("design_rounds")
        if rounds is not None and not (isinstance(rounds, dict) and all(
                isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10**5
                for k, v in rounds.items())):
            raise DatasetError(f"{meta_path}: field 'design_rounds' must map round names to a number of calls in "
                               f"[0, 100000] (ids have 5 digits), not {json.dumps(rounds, default=str)[:80]}")
        if meta.get("protocol") is not None:
            from qasa.protocol import Protocol

            try:
                Protocol.from_dict(meta["protocol"]).check()
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"{meta_path}: stored protocol is invalid: {exc}") from None
        return meta

    def create(self, metadata: dict[str, Any]) -> None:
        """Start an empty dataset with ``metadata`` (needs the writer lock)."""
        self._require_writer()
        self.journal.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "metadata.json",
                          {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata})

    def update_metadata(self, **changes: Any) -> dict[str, Any]:
        """Atomically update top-level keys of ``metadata.json``; returns the new metadata."""
        self._require_writer()
        meta = self.metadata()
        meta.update(changes)
        atomic_write_json(self.path / "metadata.json", {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
        return meta

    def record_failure(self, call_id: str | None, error: str, time: str) -> None:
        """Append a failure record (``error`` must already be free of credentials)."""
        failures = list(self.metadata().get("failures", []))
        failures.append({"call_id": call_id, "time": time, "error": error})
        self.update_metadata(failures=failures)

    # -- journal -------------------------------------------------------------------------------
    def journal_call(self, record: dict[str, Any], counts: pd.DataFrame) -> None:
        """Atomically add one finished call (its record and counts) to the journal.

        The part is built straight from the columns' arrays (no pandas conversion on this hot path).
        """
        self._require_writer()
        self.journal.mkdir(parents=True, exist_ok=True)
        n = len(counts)
        columns = [pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([str(record["call_id"])]))]
        for c in COUNT_COLUMNS[1:]:
            values = counts[c].to_numpy() if c in counts or c != "gauge" else np.zeros(n)   # no gauge: 0 = not recorded
            columns.append(pa.array(np.asarray(values, COUNT_DTYPES[c])))
        table = pa.table(columns, schema=COUNTS_SCHEMA)
        text = json.dumps(record)
        table = table.replace_schema_metadata({b"qasa_call": text.encode()})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:     # a part lives until the next compaction:
            writer.write_table(table)                           # Arrow IPC, written 20× faster than Parquet
        atomic_write_bytes(self.journal / f"{record['call_id']}{JOURNAL_SUFFIX}", sink.getvalue().to_pybytes())
        self._written[str(record["call_id"])] = json.loads(text)

    def store_samples(self, call_id: str, samples: np.ndarray) -> None:
        """Atomically keep raw reads of one call (int8, reads × qubits, nominal frame)."""
        self._require_writer()
        folder = self.path / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, np.asarray(samples, dtype=np.int8))
        atomic_write_bytes(folder / f"{call_id}.npy", buf.getvalue())

    def samples(self, h: float, calls: pd.DataFrame | None = None) -> np.ndarray:
        """Raw reads kept at field ``h``, all calls stacked (columns follow the protocol's qubits).

        Raises:
            DatasetError: if no raw reads were kept for that h.
        """
        calls = self._calls_table() if calls is None else calls
        ids = calls.loc[np.isclose(calls["h"].to_numpy(float), h), "call_id"] if "h" in calls else []
        files = [f for f in (self.path / "samples" / f"{c}.npy" for c in ids) if f.is_file()]
        if not files:
            raise DatasetError(f"no raw reads kept at h={h:g} in {self.path} (run with keep_samples)")
        return np.concatenate([np.load(f) for f in files])

    def in_flight(self) -> dict[str, str | None]:
        """Call id → SAPI problem id of the problems in flight when the last run stopped (None: the call
        was on its way when the run stopped and its id is unknown; :mod:`qasa.leap` looks it up by label)."""
        path = self.path / IN_FLIGHT
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return ({str(k): (None if v is None else str(v)) for k, v in data.items()} if isinstance(data, dict)
                else {})

    def set_in_flight(self, mapping: dict[str, str]) -> None:
        """Record the problems in flight (an empty mapping removes the file)."""
        self._require_writer()
        path = self.path / IN_FLIGHT
        if mapping:
            atomic_write_json(path, mapping)
        else:
            path.unlink(missing_ok=True)

    def design_round(self, index: int) -> dict[str, Any] | None:
        """The stored plan of round ``index`` of a per-qubit design (``design/round-NNN.json``), or None."""
        path = self.path / DESIGN_DIR / f"round-{index:03d}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read the design round: {exc}") from None

    def save_design_round(self, index: int, plan: dict[str, Any]) -> None:
        """Write the plan of design round ``index`` atomically, before its calls run."""
        self._require_writer()
        (self.path / DESIGN_DIR).mkdir(exist_ok=True)
        atomic_write_json(self.path / DESIGN_DIR / f"round-{index:03d}.json", plan)

    # -- reading ---------------------------------------------------------------------------------
    def _journal_parts(self) -> list[Path]:
        """Journal parts in call-id order: Arrow IPC (``.arrow``), or Parquet from earlier versions."""
        if not self.journal.is_dir():
            return []
        return sorted((p for p in self.journal.iterdir() if p.suffix in (JOURNAL_SUFFIX, ".parquet")
                       and not p.name.startswith(".")), key=lambda p: (p.stem, p.suffix))

    def _calls_table(self) -> pd.DataFrame:
        path = self.path / "calls.parquet"
        if not path.is_file():
            return pd.DataFrame({"call_id": pd.Series([], dtype="string")})
        try:
            return pd.read_parquet(path)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(_unreadable(self.path, path, exc)) from None

    def has_journal(self) -> bool:
        """True if calls finished since the last compaction are waiting in the journal."""
        return bool(self._journal_parts())

    def spent_qpu_us(self) -> float:
        """QPU access time (µs) recorded by every stored call, journal included (no counts read)."""
        total = 0.0
        with self._compaction_lock(exclusive=False):
            seen = set()
            path = self.path / "calls.parquet"
            if path.is_file():
                calls = pq.read_table(path)
                if "qpu_access_time" in calls.column_names:
                    v = calls.column("qpu_access_time").to_numpy(zero_copy_only=False).astype(float)
                    total += float(np.nansum(v))
                seen.update(calls.column("call_id").to_pylist())
            for part in self._journal_parts():
                if part.stem in seen:
                    continue
                try:
                    record = json.loads(_part_schema(part).metadata[b"qasa_call"])
                except (OSError, pa.ArrowException, KeyError, json.JSONDecodeError) as exc:
                    raise DatasetError(f"cannot read {part}: {exc}") from None
                used = record.get("qpu_access_time")
                total += float(used) if used is not None else 0.0
        return total

    def done_call_ids(self) -> set[str]:
        """Ids of the calls already stored (what a resume skips), without reading any counts."""
        with self._compaction_lock(exclusive=False):
            done = set()
            path = self.path / "calls.parquet"
            if path.is_file():
                try:
                    done.update(pq.read_table(path, columns=["call_id"]).column(0).to_pylist())
                except (OSError, pa.ArrowException, KeyError) as exc:
                    raise DatasetError(f"cannot read {path}: {exc}") from None
            done.update(p.stem for p in self._journal_parts())
        return done

    def load(self, validate: bool = True) -> Dataset:
        """Read the dataset (compacted tables plus journal), validated (see module docstring).

        The calls are the union of ``calls.parquet`` and the journal's records, the counts the union of
        ``counts.parquet`` and the journal's counts (a call id present twice is taken once), so a
        compaction interrupted between any two of its writes loses nothing. ``metadata.json`` is read
        last, under the same shared lock: a call journaled by a writer that first recorded it in the
        metadata (an adaptive round, an extension) is never seen without its metadata.

        The counts stay on disk: the Dataset streams them for its views (:class:`~qasa.dataset.Dataset`);
        validation is one streamed pass over them.

        Raises:
            DatasetError: not a dataset, an unreadable file, or invalid data (one line).
        """
        if not self.exists:
            self.metadata()                 # raises the one-line "not a qasa dataset"
        with self._compaction_lock(exclusive=False):
            call_frames, records, parts = [], [], []
            counts_path = reading = self.path / "counts.parquet"
            try:
                calls = self._calls_table()
                handle, known_counts = None, set()
                if counts_path.is_file():
                    handle = pa.OSFile(str(counts_path))
                    known_counts = set(_parquet_call_ids(handle))
                known_calls = set(calls["call_id"].astype(str)) if len(calls) else set()
                call_frames.append(calls)
                for part in self._journal_parts():
                    reading = part
                    record = self._part_record(part)
                    cid = record["call_id"]
                    if cid not in known_counts:
                        parts.append(part)
                        known_counts.add(cid)
                    if cid not in known_calls:
                        records.append(record)
                        known_calls.add(cid)
            except DatasetError:
                raise
            except (OSError, pa.ArrowException, KeyError, ValueError, json.JSONDecodeError) as exc:
                raise DatasetError(_unreadable(self.path, reading, exc)) from None
            meta = self.metadata()
            _check_calls_have_counts(self.path, known_calls, known_counts)
            if records:
                call_frames.append(pd.DataFrame(records))
            frames = [c for c in call_frames if len(c)]
            calls = (pd.concat(frames, ignore_index=True) if frames
                     else pd.DataFrame({"call_id": pd.Series([], dtype="string")}))
            source = _StoredCounts(self.path, handle, parts, pd.Index(sorted(known_counts)))
            ds = Dataset(source, calls, meta)
            if validate:            # under the shared lock: the journal parts are not compacted meanwhile
                self.validate(ds)
        return ds

    def _part_record(self, part: Path) -> dict[str, Any]:
        """One journal part's call record (from memory when this object wrote it), without its counts."""
        if part.stem in self._written:
            return self._written[part.stem]
        return json.loads(_part_schema(part).metadata[b"qasa_call"])

    def validate(self, ds: Dataset) -> None:
        """Refuse stored data that cannot be right (see module docstring), in one streamed pass over the
        counts (whose totals ``ds`` then keeps: :meth:`~qasa.dataset.Dataset.totals`).

        Raises:
            DatasetError: naming the file, the column and the first offending value.
        """
        where = f"{self.path}/counts"
        tally = _Tally(ds)
        for b in ds.batches():
            tally.add(b)
        ids = ds.call_index
        for col in ("n_down", "n_up"):
            if tally.low[col] is not None:
                value, call = tally.low[col]
                raise DatasetError(f"{where}: negative {col} ({value}) for call {ids[call]}; counts must be ≥ 0")
        if tally.first["h"] is not None:
            raise DatasetError(f"{where}: h value {tally.first['h'][0]} is not finite")
        if tally.first["gauge"] is not None:
            raise DatasetError(f"{where}: gauge value {tally.first['gauge'][0]} is not ±1")
        if tally.first["reads"] is not None:
            call, reads, qubit, recorded = tally.first["reads"]
            raise DatasetError(f"{where}: call {ids[call]} has n_down + n_up = {reads} reads for "
                               f"qubit {qubit}, but the call recorded {recorded}")
        if tally.repeated():             # one row per (call, qubit): a duplicated row would count its reads twice
            call, qubit, rows = _repeated_rows(ds, tally.q)
            raise DatasetError(f"{where}: qubit {qubit} of call {ids[call]} has {rows} rows; each call has "
                               "one row per qubit")
        self._validate_calls(ds)
        if tally.first["foreign"] is not None:
            qubit, call = tally.first["foreign"]
            raise DatasetError(f"{where}: qubit {qubit} of call {ids[call]} is not a qubit of the stored protocol")
        self._validate_call_ids(ds)
        ds._remember_totals(tally.totals.result())

    def _validate_calls(self, ds: Dataset) -> None:
        calls = ds.calls
        if "qpu_access_time" in calls and len(calls):
            t = pd.to_numeric(calls["qpu_access_time"], errors="coerce").to_numpy(float)
            given = calls["qpu_access_time"].notna().to_numpy()
            bad = np.flatnonzero(given & ~(np.isfinite(t) & (t >= 0)))
            if bad.size:
                i = bad[0]
                raise DatasetError(f"{self.path}/calls: call {calls['call_id'].iloc[i]} records qpu_access_time "
                                   f"{_shown(calls['qpu_access_time'].iloc[i])}; it must be a finite number of µs ≥ 0")

    def _validate_call_ids(self, ds: Dataset) -> None:
        calls, protocol = ds.calls, ds.protocol
        if protocol is not None and protocol.qubits is not None and protocol.seed is not None and len(calls):
            allowed = protocol.call_ids()
            rounds = ds.metadata.get("design_rounds") or {}
            for cid in sorted(set(calls["call_id"].astype(str)) - allowed):
                # a round of a per-qubit design (qasa.adaptive): "<round>-c<5 digits>", below its count
                parsed = parse_round_call_id(cid)
                if not (parsed is not None and parsed[0] in rounds and parsed[1] < rounds[parsed[0]]):
                    raise DatasetError(f"{self.path}: call id {cid!r} is not a call of the stored protocol")

    # -- writing ---------------------------------------------------------------------------------
    def save(self, ds: Dataset) -> Dataset:
        """Write ``ds`` compacted (counts, then calls, then metadata) and clear the journal.

        Every state between two of these writes loads to the same dataset (:meth:`load` takes the
        union of the compacted tables and the journal, which is removed last): counts are written
        before the calls that list them, so no interruption leaves a listed call without counts.
        The counts are streamed into ``counts.parquet`` batch by batch (a loaded ``ds`` is read from
        its files as it is written, never held whole).

        Returns:
            The saved dataset, its counts read from the new ``counts.parquet`` (``ds``'s own journal
            parts are gone).
        """
        self._require_writer()
        self.path.mkdir(parents=True, exist_ok=True)
        counts_path = self.path / "counts.parquet"
        with self._compaction_lock(exclusive=True):
            totals = _write_counts(counts_path, ds)
            atomic_write_bytes(self.path / "calls.parquet", table_bytes(ds.calls))
            atomic_write_json(self.path / "metadata.json",
                              {"format": FORMAT, "format_version": FORMAT_VERSION, **ds.metadata})
            for part in self._journal_parts():
                part.unlink()
            self._written.clear()
            saved = Dataset(_StoredCounts(self.path, pa.OSFile(str(counts_path)), [], ds.call_index),
                            ds.calls, ds.metadata)
        saved._remember_totals(totals)
        return saved

    # -- fit cache -------------------------------------------------------------------------------
    def fit_path(self, model: str) -> Path:
        return self.path / "fits" / f"{model}.parquet"

    def cached_fit(self, model: str, fingerprint: str):
        """The saved fit of ``model`` if it was made from exactly this input, else ``None``."""
        from qasa.fitting import FitTable

        path = self.fit_path(model)
        if not path.is_file():
            return None
        try:
            saved = FitTable.load(path)
        except Exception:          # an unreadable cache entry is simply refitted
            return None
        if saved.meta.get("fingerprint") != fingerprint or saved.meta.get("table_hash") != _table_hash(saved.table):
            return None
        return saved

    def save_fit(self, fits, fingerprint: str) -> Path:
        """Save a fit table into ``fits/`` with the fingerprint of its input and a hash of its values."""
        fits.meta["fingerprint"] = fingerprint
        fits.meta["table_hash"] = _table_hash(fits.table)
        path = fits.save(self.fit_path(fits.model.name))
        if fits.model.reference_csv:
            fits.to_model_parameters_csv(self.path / "fits" / "model_parameters.csv")
        return path


def _shown(value: Any) -> str:
    """A stored value as a user typed it (``-1000.0``, ``'abc'``), not numpy's repr."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_calls_have_counts(path: Path, calls: set[str], counted: set[str]) -> None:
    """Every listed call has counts and every count belongs to a listed call (one-line error otherwise)."""
    missing = sorted(calls - counted)
    if missing:
        raise DatasetError(f"{path}: call {missing[0]!r} is listed in calls.parquet but its counts are in neither "
                           f"counts.parquet nor journal/ ({len(missing)} such calls); the dataset is damaged")
    orphans = sorted(counted - calls)
    if orphans:
        raise DatasetError(f"{path}: counts of call {orphans[0]!r} are stored but no call record lists it "
                           f"({len(orphans)} such calls; calls.parquet damaged or removed?)")


def _part_schema(part: Path) -> pa.Schema:
    """The schema (with the call record) of a journal part, without reading its counts."""
    if part.suffix == JOURNAL_SUFFIX:
        with pa.OSFile(str(part)) as fh:
            return pa.ipc.open_file(fh).schema
    return pq.read_schema(part)


def _table_hash(table: pd.DataFrame) -> str:
    """Hash of a fit table's values: a table edited after it was saved is not used."""
    values = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.blake2b(values.tobytes() + ",".join(map(str, table.columns)).encode(), digest_size=16).hexdigest()


def _call_ids_of(column: pa.ChunkedArray) -> list[str]:
    """Distinct call ids of a (possibly dictionary-encoded) column, without decoding every row."""
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):      # the ids that rows use (a dictionary may hold unused ones)
        used = set()
        for chunk in column.chunks:
            codes = np.unique(chunk.indices.to_numpy(zero_copy_only=False))
            used.update(chunk.dictionary.take(pa.array(codes)).to_pylist())
        return sorted(used)
    return pc.unique(column).to_pylist()


#: Rows per row group of ``counts.parquet`` (and per batch written by a compaction).
ROW_GROUP = 1 << 20


def _unreadable(path: Path, file: Path | None, exc: BaseException) -> str:
    """The one-line message of a dataset file that cannot be read, naming the file (relative to the dataset)."""
    if file is None:
        return f"cannot read dataset {path}: {exc}"
    try:
        name = file.relative_to(path).as_posix()
    except ValueError:
        name = str(file)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot read dataset {path}: {name} is damaged or not a qasa file ({detail})"


def _read_part(part: Path) -> pa.Table:
    """One journal part's counts (Arrow IPC, or Parquet from earlier versions).

    Raises:
        FileNotFoundError: the part is gone (a writer compacted it into ``counts.parquet``).
    """
    if part.suffix == JOURNAL_SUFFIX:
        with pa.OSFile(str(part)) as fh:
            return pa.ipc.open_file(fh).read_all()
    return pq.read_table(part)


def _compacted_calls(path: Path, call_ids: list[str]) -> dict[str, pa.Table]:
    """The rows of ``call_ids`` in the dataset's current ``counts.parquet`` (one table per call id).

    A compaction writes ``counts.parquet`` before it removes the journal parts it holds, so a part that
    is gone is there (and stays in every later compaction).

    Raises:
        DatasetError: a call is in neither (the dataset was replaced since it was loaded).
    """
    import pyarrow.compute as pc

    counts = path / "counts.parquet"
    table = pq.read_table(counts, filters=[("call_id", "in", list(call_ids))]) if counts.is_file() else None
    out = {}
    for cid in call_ids:
        rows = (table.filter(pc.equal(table.column("call_id").cast(pa.string()), cid))
                if table is not None else None)
        if rows is None or not rows.num_rows:
            raise DatasetError(f"{path}: call {cid} left the journal since this dataset was loaded but is not in "
                               "counts.parquet (the dataset was replaced?); load it again")
        out[cid] = rows
    return out


def _codes(column: pa.ChunkedArray | pa.Array, call_index: pd.Index) -> np.ndarray:
    """Each row's call id as its position in ``call_index`` (dictionary-encoded or plain strings)."""
    import pyarrow.compute as pc

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = []
    for chunk in chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk.cast(pa.string()))
        where = call_index.get_indexer(chunk.dictionary.cast(pa.string()).to_pylist())
        out.append(where[chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _counts_batch(table: pa.Table | pa.RecordBatch, call_index: pd.Index) -> CountsBatch:
    """Stored rows as a :class:`CountsBatch` (types of :data:`COUNTS_SCHEMA`; no gauge column: 0 = not recorded)."""
    names = table.schema.names
    cols = [_codes(table.column("call_id"), call_index)]
    for c in COUNT_COLUMNS[1:]:
        if c in names:
            col = table.column(c)
            if col.null_count and COUNT_DTYPES[c].kind != "f":
                raise KeyError(f"column {c!r} has empty cells")
            cols.append(np.asarray(col.to_numpy(zero_copy_only=False), dtype=COUNT_DTYPES[c]))
        elif c == "gauge":                 # written before gauges were stored
            cols.append(np.zeros(table.num_rows, np.int8))
        else:
            raise KeyError(c)
    return CountsBatch(*cols)


def _coalesced(pieces: Iterator[CountsBatch], rows: int) -> Iterator[CountsBatch]:
    """The rows of ``pieces`` in order, in batches of at least ``rows`` rows (the last may be smaller)."""
    held, n = [], 0
    for b in pieces:
        held.append(b)
        n += len(b)
        if n >= rows:
            yield CountsBatch.concat(held) if len(held) > 1 else held[0]
            held, n = [], 0
    if held:
        yield CountsBatch.concat(held) if len(held) > 1 else held[0]


def _in_order(b: CountsBatch, last: tuple[int, int] | None) -> bool:
    """Rows sorted by (call, qubit) within ``b`` and after the key ``last`` of the rows before it."""
    if not len(b):
        return True
    if last is not None and (int(b.call[0]), int(b.qubit[0])) < last:
        return False
    dc, dq = np.diff(b.call), np.diff(b.qubit)
    return bool((b.call >= 0).all() and np.all((dc > 0) | ((dc == 0) & (dq >= 0))))


class _StoredCounts:
    """The counts of a dataset directory as loaded (a :class:`~qasa.dataset.CountsSource`).

    ``counts.parquet`` is held open, so a later compaction (which renames a new file over it) does not
    change what this reads; the journal parts whose calls it lacks are read when streamed.
    ``ordered=True`` streams the rows sorted by (call id, qubit): the compacted table in its order
    (merged with the journal's calls) when it is sorted — as every compaction of a run writes it — and
    otherwise (a table saved unsorted) all the rows read and sorted in memory.
    """

    def __init__(self, path: Path, parquet: pa.NativeFile | None, parts: list[Path], call_index: pd.Index,
                 ordered: bool = False, moved: dict[str, pa.Table] | None = None) -> None:
        self.path, self._parquet, self._parts, self.call_index = path, parquet, list(parts), call_index
        self._ordered = ordered
        self._reading: Path | None = None          # the file last read from (named in an error)
        # rows of the snapshot's journal parts that a writer compacted since (read once, then kept)
        self._moved: dict[str, pa.Table] = {} if moved is None else moved

    def ordered(self) -> "_StoredCounts":
        return _StoredCounts(self.path, self._parquet, self._parts, self.call_index, ordered=True, moved=self._moved)

    def num_rows(self) -> int:
        try:
            self._reading = self.path / "counts.parquet"
            n = pq.ParquetFile(self._parquet).metadata.num_rows if self._parquet is not None else 0
            return n + sum(self._read(p).num_rows for p in self._parts)      # only a journal not yet compacted
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            raise DatasetError(_unreadable(self.path, self._reading, exc)) from None

    def _read(self, part: Path) -> pa.Table:
        """A journal part of the snapshot: from its file, or, once a writer compacted it, its call's rows
        in the current ``counts.parquet`` (every part gone by then read in one pass): the loaded Dataset
        keeps its snapshot's calls, exactly, whatever is compacted after it was loaded."""
        if part.stem in self._moved:
            return self._moved[part.stem]
        self._reading = part
        try:
            table = _read_part(part)
        except FileNotFoundError:
            gone = [p.stem for p in self._parts if p.stem not in self._moved and not p.exists()]
            self._reading = self.path / "counts.parquet"
            self._moved.update(_compacted_calls(self.path, sorted(set(gone) | {part.stem})))
            table = self._moved[part.stem]
        return table

    def batches(self, rows: int) -> Iterator[CountsBatch]:
        self._reading = None
        try:
            yield from _coalesced(self._merged(rows) if self._ordered else self._pieces(rows), rows)
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            raise DatasetError(_unreadable(self.path, self._reading, exc)) from None

    def _compacted(self, rows: int) -> Iterator[CountsBatch]:
        if self._parquet is None:
            return
        self._reading = self.path / "counts.parquet"
        table = pq.ParquetFile(self._parquet, read_dictionary=["call_id"])
        names = [c for c in COUNT_COLUMNS if c in table.schema_arrow.names]
        for rb in table.iter_batches(batch_size=rows, columns=names):
            yield _counts_batch(rb, self.call_index)
            self._reading = self.path / "counts.parquet"    # (the next batch is read from it)

    def _keys(self, rows: int) -> Iterator[CountsBatch]:
        """The compacted table's call and qubit columns alone (the other columns left empty)."""
        if self._parquet is None:
            return
        self._reading = self.path / "counts.parquet"
        table = pq.ParquetFile(self._parquet, read_dictionary=["call_id"])
        for rb in table.iter_batches(batch_size=rows, columns=["call_id", "qubit"]):
            empty = np.zeros(0)
            yield CountsBatch(_codes(rb.column(0), self.call_index),
                              np.asarray(rb.column(1).to_numpy(zero_copy_only=False), np.int64),
                              empty, empty, empty, empty)
            self._reading = self.path / "counts.parquet"

    def _journal(self) -> Iterator[CountsBatch]:
        for part in self._parts:
            b = _counts_batch(self._read(part), self.call_index)
            if not _in_order(b, None):
                b = b.take(np.lexsort((b.qubit, b.call)))
            yield b

    def _pieces(self, rows: int) -> Iterator[CountsBatch]:
        yield from self._compacted(rows)
        for part in self._parts:
            yield _counts_batch(self._read(part), self.call_index)

    def _merged(self, rows: int) -> Iterator[CountsBatch]:
        """Rows sorted by (call, qubit): the compacted table merged with the journal's calls."""
        last = None
        for b in self._keys(rows):
            if not _in_order(b, last):
                whole = CountsBatch.concat(list(self._pieces(rows)))
                whole = whole.take(np.lexsort((whole.qubit, whole.call)))
                yield from (whole.take(slice(i, i + rows)) for i in range(0, len(whole), rows))
                return
            last = (int(b.call[-1]), int(b.qubit[-1])) if len(b) else last
        journal = self._journal()
        part = next(journal, None)
        for b in self._compacted(rows):
            start = 0
            while part is not None and len(part):
                cut = int(np.searchsorted(b.call, part.call[0]))
                if cut == len(b):          # the part's call comes after every row of this batch
                    break
                if cut > start:
                    yield b.take(slice(start, cut))
                yield part
                start, part = cut, next(journal, None)
            if start < len(b):
                yield b.take(slice(start, None))
        while part is not None:
            yield part
            part = next(journal, None)


def _arrow_counts(b: CountsBatch, call_index: pd.Index) -> pa.Table:
    """A :class:`CountsBatch` as a table of :data:`COUNTS_SCHEMA` (the dictionary holds the batch's calls only)."""
    used, codes = np.unique(b.call, return_inverse=True)
    ids = pa.array(np.asarray(call_index[used], dtype=object).astype(str).tolist(), pa.string())
    return pa.table([pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), ids),
                     *(pa.array(a) for a in b.arrays()[1:])], schema=COUNTS_SCHEMA)


def _repeated_rows(ds: Dataset, qubits: Axis) -> tuple[int, int, int]:
    """The first (call, qubit) pair, in order of call and qubit, stored on more than one row, and the most
    rows any pair has (a damaged table: this error path reads it twice more)."""
    width, seen, repeated = len(qubits), np.zeros(len(ds.call_index) * len(qubits), bool), []
    for b in ds.batches():
        keys, counts = np.unique(b.call * width + qubits.positions(b.qubit), return_counts=True)
        repeated.append(keys[(counts > 1) | seen[keys]])
        seen[keys] = True
    keys = np.unique(np.concatenate(repeated))
    rows = np.zeros(len(keys), np.int64)
    for b in ds.batches():
        k = b.call * width + qubits.positions(b.qubit)
        k = k[np.isin(k, keys)]
        rows += np.bincount(np.searchsorted(keys, k), minlength=len(keys))
    call, column = divmod(int(keys[0]), width)
    return call, int(qubits.values[column]), int(rows.max())


class _Tally:
    """What a pass over the counts finds (:meth:`DatasetStore.validate`): the first offending row of
    each check, rows per (call, qubit), and the totals of :meth:`Dataset.totals`."""

    def __init__(self, ds: Dataset) -> None:
        self.call_index = ds.call_index
        calls = ds.calls
        self.expected = None
        if "num_reads" in calls and len(calls):
            reads = pd.Series(calls["num_reads"].to_numpy(float), index=calls["call_id"].astype(str).to_numpy())
            reads = reads[~reads.index.duplicated()]
            self.expected = reads.reindex([str(x) for x in self.call_index]).to_numpy()
        protocol = ds.protocol
        self.allowed = (np.asarray(protocol.qubits, np.int64) if protocol is not None and protocol.qubits is not None
                        else None)
        self.low: dict[str, tuple[int, int] | None] = {"n_down": None, "n_up": None}
        self.first: dict[str, tuple | None] = {"h": None, "gauge": None, "reads": None, "foreign": None}
        self.q = Axis(np.int64)
        self.seen = np.zeros((len(self.call_index), 0), bool)      # (call, qubit) pairs that have a row
        self.totals = Totals(len(self.call_index))

    def _note(self, check: str, bad: np.ndarray, what: Callable[[int], tuple]) -> None:
        if self.first[check] is None and bad.any():
            self.first[check] = what(int(np.argmax(bad)))

    def add(self, b: CountsBatch) -> None:
        for col in ("n_down", "n_up"):
            v = getattr(b, col)
            if v.size and v.min() < 0 and (self.low[col] is None or v.min() < self.low[col][0]):
                self.low[col] = (int(v.min()), int(b.call[int(np.argmin(v))]))
        self._note("h", ~np.isfinite(b.h), lambda i: (float(b.h[i]),))
        self._note("gauge", ~np.isin(b.gauge, (-1, 0, 1)), lambda i: (int(b.gauge[i]),))
        reads = b.n_down + b.n_up
        if self.expected is not None:
            per_row = self.expected[b.call]
            self._note("reads", np.isfinite(per_row) & (reads != per_row),
                       lambda i: (int(b.call[i]), int(reads[i]), int(b.qubit[i]), int(per_row[i])))
        if self.allowed is not None:
            self._note("foreign", ~np.isin(b.qubit, self.allowed), lambda i: (int(b.qubit[i]), int(b.call[i])))
        at = self.q.extend(b.qubit)
        if at is not None:
            grown = np.zeros((len(self.call_index), len(self.q)), bool)
            grown[:, at] = self.seen
            self.seen = grown
        self.seen.reshape(-1)[b.call * len(self.q) + self.q.positions(b.qubit)] = True
        self.totals.add(b)

    def repeated(self) -> bool:
        """Whether some (call, qubit) pair has more than one row (fewer pairs seen than rows)."""
        return int(np.count_nonzero(self.seen)) < self.totals.rows


def _parquet_call_ids(handle: pa.NativeFile) -> list[str]:
    """Distinct call ids of ``counts.parquet``, reading its ``call_id`` column alone, row group by row group."""
    table = pq.ParquetFile(handle, read_dictionary=["call_id"])
    if "call_id" not in table.schema_arrow.names:
        raise KeyError("call_id")
    ids: set[str] = set()
    for rb in table.iter_batches(batch_size=ROW_GROUP, columns=["call_id"]):
        ids.update(_call_ids_of(pa.chunked_array([rb.column(0)])))
    return sorted(ids)


def _write_counts(path: Path, ds: Dataset) -> dict[str, Any]:
    """Stream the counts of ``ds`` into ``path`` (Parquet, atomically) in row groups of :data:`ROW_GROUP`
    rows; returns the totals of :meth:`~qasa.dataset.Dataset.totals`, counted on the way."""
    totals = Totals(len(ds.call_index))
    with atomic_writer(path) as fh, pq.ParquetWriter(fh, COUNTS_SCHEMA) as writer:
        for b in ds.batches(rows=ROW_GROUP):
            writer.write_table(_arrow_counts(b, ds.call_index), row_group_size=ROW_GROUP)
            totals.add(b)
    return totals.result()

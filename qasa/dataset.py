"""Datasets: the counts of an assessment as a plain in-memory value.

A :class:`Dataset` holds three things:

- ``counts``: tidy table ``call_id, qubit, h, gauge, n_down, n_up`` (one row per call and qubit).
  ``gauge`` is the spin-reversal sign applied to that qubit in that call (the qubit was programmed
  with ``gauge·h``); ``n_down``/``n_up`` count reads returning -1/+1 in the frame of the nominal
  field ``h`` (the gauge undone). ``gauge == 0`` marks rows written before gauges were stored:
  :meth:`Dataset.gauges` reconstructs them from the protocol's seed.
- ``calls``: one row per finished call (ids, reads, timing, problem id, timestamps).
- ``metadata``: protocol, sampler recipe and settings, device, versions, runs.

:meth:`Dataset.response` sums the counts into (qubit × h) arrays for fitting, by default in the
*programmed* frame (the field each qubit actually saw and the spin it returned), where a static bias
keeps its sign under every gauge (docs/DESIGN.md §6).

On disk a dataset is a directory owned by :class:`qasa.store.DatasetStore` (layout, atomic
journal, locks, validation and the fit cache are described there); :meth:`Dataset.load` and
:meth:`Dataset.save` go through it. A loaded Dataset keeps its counts there (a :class:`CountsSource`):
its views — :meth:`Dataset.response` (with the per-call statistics of :class:`CallStats`),
:meth:`Dataset.responses`, :meth:`Dataset.totals`, :meth:`Dataset.batches` — stream them in batches
of :data:`BATCH_ROWS` rows, and ``counts`` reads the whole table only when asked for. A Dataset built
from a table in memory is the same value, its views computed by the same code (one batch or many:
the sums are the same to the bit). The store sits above this module (it builds Datasets), so this
module does not import it: ``qasa/__init__`` (which Python runs before any code of ``qasa.dataset``)
hands the class over with :func:`_register_store`, and the import graph keeps no circle.

The reference QASA scripts use ``spin_table.csv`` (columns ``h, samples, spin_<id>...``, each cell
the number of reads in which qubit ``<id>`` returned -1); :meth:`Dataset.from_spin_table` and
:meth:`Dataset.to_spin_table` convert both ways.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence
from typing import Protocol as _Interface

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qasa.errors import DatasetError
from qasa.reduce import COUNT_COLUMNS, COUNT_DTYPES

__all__ = ["read_spin_table", "Dataset", "Response", "CallStats", "CountsBatch", "CountsSource", "Totals", "Axis", "BATCH_ROWS",
           "COUNT_COLUMNS", "atomic_write_bytes", "atomic_writer",
           "atomic_write_json", "json_text", "utcnow", "normalize_counts", "normalize_calls", "table_bytes", "json_safe",
           "check_imported_device", "MAX_IMPORTED_H"]

FORMAT = "qasa-dataset"
FORMAT_VERSION = 1


#: The directory's owner, :class:`qasa.store.DatasetStore`, plugged in by ``qasa/__init__``.
_STORE: Callable[[str | os.PathLike], Any] | None = None


def _register_store(store_class: Callable[[str | os.PathLike], Any]) -> None:
    """Plug in the class that owns a dataset directory (called once, by ``qasa/__init__``)."""
    global _STORE
    _STORE = store_class


def _store(path: str | os.PathLike) -> Any:
    if _STORE is None:   # unreachable through any import of qasa: its __init__ registers the store first
        raise RuntimeError("qasa.dataset is used without qasa/__init__, which registers the dataset store")
    return _STORE(path)


_UMASK = os.umask(0)
os.umask(_UMASK)


def json_safe(obj: Any) -> Any:
    """Plain JSON types, NaN/inf replaced by None (so the JSON is strict); tuples become lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def utcnow() -> str:
    """Current UTC time, ISO 8601 with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` atomically when the block ends.

    The data go to a temporary file in the same directory, which is fsynced (unless ``durable=False``)
    and renamed over ``path``; if the block raises, the temporary file is removed and ``path`` is
    untouched. Large tables are written through it in pieces (:meth:`qasa.store.DatasetStore.save`).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:          # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, rename).

    ``durable=False`` skips the fsync, for files that can be made again (a report): a reader still
    never sees a half-written file, but a power cut may lose the newest version.
    """
    with atomic_writer(path, durable) as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, durable: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (long lists on one line, see :func:`json_text`)."""
    atomic_write_bytes(path, (json_text(obj) + "\n").encode(), durable)


#: Lists longer than this are written on one line by :func:`json_text`.
LONG_LIST = 64


def json_text(obj: Any) -> str:
    """Indented JSON (keys sorted, NaN refused) whose long lists each take one compact line.

    The short fields stay readable one per line, and the per-qubit lists (qubits, couplers, a
    virtual device's truth) are encoded by the json module's C encoder: ``json.dumps`` with an
    indent runs in pure Python, seconds for a full device's metadata. The text parses to the
    same value as ``json.dumps(obj, indent=1, sort_keys=True)``.
    """
    long: dict[str, str] = {}
    token = f"qasa-long-list-{uuid.uuid4().hex}-"

    def shorten(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: shorten(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            if len(o) <= LONG_LIST:
                return [shorten(v) for v in o]
            key = f"{token}{len(long)}"
            long[json.dumps(key)] = json.dumps(o, sort_keys=True, allow_nan=False, separators=(",", ":"))
            return key
        return o

    text = json.dumps(shorten(obj), indent=1, sort_keys=True, allow_nan=False)
    if not long:
        return text
    return re.sub(re.escape(json.dumps(token)[:-1]) + r'\d+"', lambda m: long[m.group(0)], text)


def table_bytes(df: pd.DataFrame, meta: dict[str, Any] | None = None) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"qasa_call": json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def normalize_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Counts with the standard columns and dtypes.

    ``call_id`` is categorical with its categories (the call ids present) sorted, so that equal
    counts compare equal whatever path built them; a few hundred calls × thousands of qubits then
    cost one small integer per row instead of a string.
    """
    if "gauge" not in df:          # written before gauges were stored: 0 = not recorded
        df = df.assign(gauge=0)
    df = df[COUNT_COLUMNS].astype(COUNT_DTYPES)
    cid = df["call_id"]
    if not isinstance(cid.dtype, pd.CategoricalDtype):
        cid = cid.astype("category")
    if len(cid.cat.categories) and not (np.bincount(cid.cat.codes.to_numpy()[cid.cat.codes.to_numpy() >= 0],
                                                    minlength=len(cid.cat.categories)) > 0).all():
        cid = cid.cat.remove_unused_categories()
    names = [str(c) for c in cid.cat.categories]
    order = sorted(names)
    if names != order or cid.cat.categories.dtype != pd.Index(order).dtype:
        cid = cid.cat.rename_categories(names).cat.reorder_categories(order) if names != order \
            else cid.cat.rename_categories(pd.Index(order))
        cid = cid.astype(pd.CategoricalDtype(pd.Index(order)))
    df["call_id"] = cid
    return df.reset_index(drop=True)


_CALL_DTYPES = {"call_id": "string", "problem_id": "string", "started": "string", "finished": "string",
                "timing": "string", "qpu_access_time": "float64", "device_time": "float64"}


def normalize_calls(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "call_id" not in df:
        df["call_id"] = pd.Series([], dtype="string")
    for col, dtype in _CALL_DTYPES.items():
        if col in df:
            df[col] = df[col].astype(dtype)
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class Response:
    """Counts arranged as arrays for fitting: row ``i`` is ``qubits[i]``, column ``j`` is ``h[j]``.

    Attributes:
        qubits: qubit labels, shape ``(n,)``.
        h: sorted distinct h values, shape ``(k,)``.
        n_down: reads returning -1, shape ``(n, k)``.
        n_total: all reads, shape ``(n, k)`` (0 where a qubit has no data at that h).
        calls: per-call statistics of each cell (:class:`CallStats`), or ``None`` when the counts
            are not kept per call (a hand-made or pooled response); :meth:`Dataset.response`
            attaches them (one counts row = one call of one qubit).
    """

    qubits: np.ndarray
    h: np.ndarray
    n_down: np.ndarray
    n_total: np.ndarray
    calls: "CallStats | None" = None

    @property
    def p_down(self) -> np.ndarray:
        """Observed fraction of -1 (NaN where there are no reads)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_total > 0, self.n_down / np.maximum(self.n_total, 1), np.nan)

    def pooled(self) -> "Response":
        """All qubits summed into one row (label -1), e.g. for a device-wide temperature."""
        return Response(np.array([-1]), self.h, self.n_down.sum(0, keepdims=True),
                        self.n_total.sum(0, keepdims=True))      # (no per-call statistics: calls of
                                                                 # different qubits are not one call)

    def subset(self, rows: Iterable[int] | np.ndarray) -> "Response":
        """Rows selected by index or boolean mask."""
        rows = np.asarray(rows)
        calls = None if self.calls is None else self.calls.subset(rows)
        return Response(self.qubits[rows], self.h, self.n_down[rows], self.n_total[rows], calls)


@dataclass(frozen=True)
class CallStats:
    """Per-call sufficient statistics of each (qubit, h) cell of a :class:`Response`.

    Every call is a new programming of the QPU, so reads within one call share that programming's
    field error while different calls do not (docs/DESIGN.md §7). The between-call part of the
    likelihood (:mod:`qasa.fitting`) needs, per cell, beyond the summed counts: the number of calls
    ``C``, ``Σ N_c²`` and the spread of the per-call counts ``n_c`` about the cell's pooled fraction
    ``r = Σ n_c N_c / Σ N_c²``, ``Σ (n_c − r N_c)²`` (computed from integers, without cancellation).

    Attributes:
        n_calls: calls with reads in the cell, shape ``(n, k)``.
        reads_sq: ``Σ_c N_c²``, shape ``(n, k)``.
        centre: ``r``, shape ``(n, k)`` (the pooled fraction of -1 when the calls are of equal size).
        spread: ``Σ_c (n_c − r N_c)²``, shape ``(n, k)`` (0 for a cell of one call).

    With them, ``Σ_c (n_c − p N_c)² = spread + reads_sq · (p − r)²`` for any ``p``.
    """

    n_calls: np.ndarray
    reads_sq: np.ndarray
    centre: np.ndarray
    spread: np.ndarray

    def subset(self, rows: np.ndarray) -> "CallStats":
        """Rows selected by index or boolean mask."""
        return CallStats(self.n_calls[rows], self.reads_sq[rows], self.centre[rows], self.spread[rows])


#: Rows per batch when counts are streamed (:meth:`Dataset.batches`): 10 MB of columns, and a view's
#: temporaries a few times that (larger batches were measured no faster).
BATCH_ROWS = 1 << 18


@dataclass(frozen=True)
class CountsBatch:
    """Consecutive rows of a counts table as arrays (what :meth:`Dataset.batches` yields).

    Attributes:
        call: each row's call as its position in :attr:`Dataset.call_index` (int64).
        qubit: qubit labels (int64).
        h: nominal fields (float64).
        gauge: spin-reversal signs (int8; 0 = not recorded, unless asked for with the gauges filled in).
        n_down: reads returning −1 in the nominal frame (int64).
        n_up: reads returning +1 in the nominal frame (int64).
    """

    call: np.ndarray
    qubit: np.ndarray
    h: np.ndarray
    gauge: np.ndarray
    n_down: np.ndarray
    n_up: np.ndarray

    def __len__(self) -> int:
        return len(self.qubit)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(call, qubit, h, gauge, n_down, n_up)``."""
        return self.call, self.qubit, self.h, self.gauge, self.n_down, self.n_up

    def take(self, rows: np.ndarray | slice) -> "CountsBatch":
        """The rows selected by a slice, an index array or a boolean mask."""
        return CountsBatch(*(a[rows] for a in self.arrays()))

    @staticmethod
    def empty() -> "CountsBatch":
        return CountsBatch(np.zeros(0, np.int64), *(np.zeros(0, COUNT_DTYPES[c]) for c in COUNT_COLUMNS[1:]))

    @staticmethod
    def concat(batches: Sequence["CountsBatch"]) -> "CountsBatch":
        """One batch of the rows of ``batches``, in order."""
        if not batches:
            return CountsBatch.empty()
        return CountsBatch(*(np.concatenate(cols) for cols in zip(*(b.arrays() for b in batches))))

    def frame(self, call_index: pd.Index) -> pd.DataFrame:
        """These rows as a counts table (:data:`COUNT_COLUMNS`; ``call_id`` categorical over ``call_index``)."""
        cid = pd.Categorical.from_codes(self.call, dtype=pd.CategoricalDtype(call_index))
        return pd.DataFrame({"call_id": cid, "qubit": self.qubit, "h": self.h, "gauge": self.gauge,
                             "n_down": self.n_down, "n_up": self.n_up})


class CountsSource(_Interface):
    """Counts kept outside memory and streamed (a dataset directory: :class:`qasa.store.DatasetStore`).

    A :class:`Dataset` built on a source reads its rows only when a view asks for them, batch by batch;
    ``Dataset.counts`` reads them all into one table (and keeps it).
    """

    @property
    def call_index(self) -> pd.Index:
        """Sorted distinct call ids that have rows (the batches' ``call`` codes are positions in it)."""

    def batches(self, rows: int) -> Iterator[CountsBatch]:
        """Every row in the table's order, in batches of about ``rows`` rows."""

    def ordered(self) -> "CountsSource":
        """The same rows sorted by (call id, qubit)."""

    def num_rows(self) -> int:
        """Number of rows."""


class _SelectedCalls:
    """The rows of some calls of a :class:`CountsSource` (``keep``: a mask over its ``call_index``)."""

    def __init__(self, source: CountsSource, keep: np.ndarray) -> None:
        self._source, self._keep = source, np.asarray(keep, bool)
        self._code = np.cumsum(self._keep) - 1
        self.call_index = source.call_index[self._keep]

    def batches(self, rows: int) -> Iterator[CountsBatch]:
        for b in self._source.batches(rows):
            kept = self._keep[b.call]
            if not kept.all():
                b = b.take(kept)
            if len(b):
                yield CountsBatch(self._code[b.call], *b.arrays()[1:])

    def ordered(self) -> "_SelectedCalls":
        return _SelectedCalls(self._source.ordered(), self._keep)

    def num_rows(self) -> int:
        return sum(len(b) for b in self.batches(BATCH_ROWS))


class Axis:
    """A sorted axis of distinct values that grows as batches bring new ones (qubits, fields).

    Positions of integer labels whose span is not much larger than their number (qubit ids) come
    from a dense table (a gather), others from a binary search.
    """

    def __init__(self, dtype: Any) -> None:
        self.values = np.zeros(0, dtype)
        self._table: np.ndarray | None = None
        self._lo = 0

    def __len__(self) -> int:
        return len(self.values)

    def _index(self) -> None:
        v, self._table = self.values, None
        if len(v) and v.dtype.kind == "i" and int(v[-1]) - int(v[0]) < 8 * len(v) + (1 << 16):
            self._lo = int(v[0])
            self._table = np.full(int(v[-1]) - self._lo + 1, -1, np.int64)
            self._table[v - self._lo] = np.arange(len(v))

    def found(self, values: np.ndarray) -> np.ndarray:
        """A mask: which ``values`` are on the axis."""
        if self._table is not None:
            off = values - self._lo
            inside = (off >= 0) & (off < len(self._table))
            out = np.zeros(len(values), bool)
            out[inside] = self._table[off[inside]] >= 0
            return out
        pos = np.minimum(np.searchsorted(self.values, values), max(len(self.values) - 1, 0))
        return (self.values[pos] == values) if len(self.values) else np.zeros(len(values), bool)

    def extend(self, values: np.ndarray) -> np.ndarray | None:
        """Add ``values``; if the axis grew, the new position of each old value (else ``None``)."""
        if len(self.values):
            found = self.found(values)
            if found.all():
                return None
            values = values[~found]
        new = np.union1d(self.values, values)
        at = np.searchsorted(new, self.values)
        self.values = new
        self._index()
        return at

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Positions of ``values``, which must be on the axis."""
        if self._table is not None:
            return self._table[values - self._lo]
        return np.searchsorted(self.values, values)


class _CellSums:
    """Counts summed per (group, qubit, h) cell as batches of rows stream by (:meth:`Dataset.responses`).

    Two passes over the same rows. The first sums integers (reads, −1 reads, calls, ``Σ N²``, ``Σ nN``:
    exact in any order) and grows the sorted qubit and h axes as values appear; the second sums each
    call's squared deviation from its cell's pooled fraction (:class:`CallStats`) with ``np.add.at``,
    which adds in row order as ``np.bincount`` does: the floats are those of one pass over the whole
    table, however the rows were batched.
    """

    _SUMS = ("n_down", "n_total", "n_calls", "reads_sq", "down_reads")

    def __init__(self, groups: int) -> None:
        self.q, self.h = Axis(np.int64), Axis(np.float64)
        self.ints = np.zeros((len(self._SUMS), groups, 0, 0), np.int64)
        self.has_q, self.has_h = np.zeros((groups, 0), bool), np.zeros((groups, 0), bool)
        self.centre: np.ndarray | None = None
        self.spread: np.ndarray | None = None

    def _grow(self, q: np.ndarray, h: np.ndarray) -> None:
        n_q, n_h = len(self.q), len(self.h)
        at_q, at_h = self.q.extend(q), self.h.extend(h)
        if at_q is None and at_h is None:
            return
        at_q = np.arange(n_q) if at_q is None else at_q
        at_h = np.arange(n_h) if at_h is None else at_h
        ints = np.zeros(self.ints.shape[:2] + (len(self.q), len(self.h)), np.int64)
        ints[:, :, at_q[:, None], at_h[None, :]] = self.ints
        has_q, has_h = np.zeros((len(self.has_q), len(self.q)), bool), np.zeros((len(self.has_h), len(self.h)), bool)
        has_q[:, at_q], has_h[:, at_h] = self.has_q, self.has_h
        self.ints, self.has_q, self.has_h = ints, has_q, has_h

    def _cells(self, group: np.ndarray, q: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qi, hi = self.q.positions(q), self.h.positions(h)
        return (group * len(self.q) + qi) * len(self.h) + hi, qi, hi

    def add(self, group: np.ndarray, q: np.ndarray, h: np.ndarray, down: np.ndarray, up: np.ndarray) -> None:
        """First pass: one batch of rows (``group`` of each row, qubit, h, −1 and +1 reads)."""
        self._grow(q, h)
        cell, qi, hi = self._cells(group, q, h)
        reads = down + up
        flat = self.ints.reshape(len(self._SUMS), -1)
        for k, v in enumerate((down, reads, None, reads * reads, down * reads)):
            if v is None:
                np.add.at(flat[k], cell[reads > 0], 1)
            else:
                np.add.at(flat[k], cell, v)
        self.has_q[group, qi] = True
        self.has_h[group, hi] = True

    def end_first_pass(self) -> None:
        nn, nd = self.ints[3].astype(float), self.ints[4].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.centre = np.where(nn > 0, nd / np.maximum(nn, 1.0), 0.0)
        self.spread = np.zeros(self.centre.shape)

    def add_spread(self, group: np.ndarray, q: np.ndarray, h: np.ndarray, down: np.ndarray, up: np.ndarray) -> None:
        """Second pass: the same rows again, in the same order."""
        cell = self._cells(group, q, h)[0]
        dev = down - self.centre.reshape(-1)[cell] * (down + up)          # n_c − r N_c per call: no cancellation
        np.add.at(self.spread.reshape(-1), cell, dev * dev)

    def responses(self) -> list["Response"]:
        """One :class:`Response` per group over the qubits and h values its rows have (sorted), with
        :class:`CallStats` if the second pass ran."""
        out = []
        for g in range(self.ints.shape[1]):
            cells = np.ix_(self.has_q[g], self.has_h[g])
            n_down, n_total, n_calls, reads_sq, _ = (a[g][cells] for a in self.ints)
            calls = None if self.spread is None else CallStats(
                n_calls.astype(np.int64), reads_sq.astype(float), self.centre[g][cells], self.spread[g][cells])
            out.append(Response(self.q.values[self.has_q[g]].astype(np.int64), self.h.values[self.has_h[g]].astype(float),
                                n_down, n_total, calls))
        return out


def _summed(qubit: np.ndarray, h: np.ndarray, down: np.ndarray, up: np.ndarray, per_call: bool = False) -> "Response":
    """Counts summed per (qubit, h) into dense arrays: sorted qubits × sorted h, 0 where no reads.

    ``per_call``: each element is one call of one qubit, and the :class:`CallStats` are attached."""
    sums = _CellSums(1)
    rows = (np.zeros(len(qubit), np.int64), np.asarray(qubit, np.int64), np.asarray(h, float),
            np.asarray(down).astype(np.int64), np.asarray(up).astype(np.int64))
    sums.add(*rows)
    if per_call:
        sums.end_first_pass()
        sums.add_spread(*rows)
    return sums.responses()[0]


#: Relative difference under which a programmed field ``−h`` is the nominal field it rounds away from.
H_MERGE_RTOL = 1e-12


def _snap(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``x`` with each value within :data:`H_MERGE_RTOL` (relative) of a value of the sorted ``grid``
    replaced by it: a grid's ``−h`` computed in floats (``−0.14999999999999997`` for the stored
    ``0.14999999999999997`` of ``linspace(−0.3, 0.3, 5)``) is the grid's ``−0.15``, one field, one cell.
    Values equal to a grid value are returned unchanged (bit for bit)."""
    if not len(grid) or not len(x):
        return x
    if np.array_equal(grid[np.minimum(np.searchsorted(grid, x), len(grid) - 1)], x):
        return x                                    # every value on the grid (a symmetric grid): nothing to snap
    j = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1) if len(grid) > 1 else np.zeros(len(x), np.int64)
    lo = grid[j - 1] if len(grid) > 1 else grid[j]
    hi = grid[j]
    near = np.where(np.abs(x - lo) <= np.abs(x - hi), lo, hi)
    with np.errstate(invalid="ignore"):
        close = np.abs(x - near) <= H_MERGE_RTOL * np.maximum(np.abs(x), np.abs(near))
    return np.where(close, near, x)


class Totals:
    """The totals of :meth:`Dataset.totals`, summed as batches of rows stream by."""

    def __init__(self, calls: int) -> None:
        self.q, self.h = Axis(np.int64), Axis(np.float64)
        self.rows = self.reads = 0
        self.call_reads = np.zeros(calls, np.int64)

    def add(self, b: CountsBatch) -> None:
        self.q.extend(b.qubit)
        if np.isfinite(b.h).all():          # (a stored table with another h is refused by its validation)
            self.h.extend(b.h + 0.0)
        reads = b.n_down + b.n_up
        np.add.at(self.call_reads, b.call, reads)
        self.rows += len(b)
        self.reads += int(reads.sum())

    def result(self) -> dict[str, Any]:
        return {"rows": self.rows, "qubits": self.q.values, "h": self.h.values, "reads": self.reads,
                "call_reads": self.call_reads}


_NO_CALLS = pd.DataFrame({"call_id": pd.Series([], dtype="string")})


class Dataset:
    """Counts of one assessment plus its metadata (see module docstring for the on-disk layout).

    A Dataset is a plain in-memory value (``Dataset(counts, calls, metadata)``), or, when loaded from
    a directory (:meth:`load`), a view of the counts kept there: its aggregated views —
    :meth:`response`, :meth:`responses`, :meth:`totals`, :meth:`batches` — stream them in batches of
    :data:`BATCH_ROWS` rows with bounded memory, and ``counts`` reads the whole table only when asked
    for (then it is kept). The counts are those of the directory when it was loaded, a consistent
    snapshot: journal parts a writer compacted since are read from the new ``counts.parquet`` (their
    calls' rows alone), so the Dataset keeps working with exactly the calls it was loaded with.

    Attributes:
        counts: tidy table with columns :data:`COUNT_COLUMNS`.
        calls: one row per finished call (``call_id`` first).
        metadata: protocol (as a dict), device info, versions, timestamps.
    """

    def __init__(self, counts: pd.DataFrame | CountsSource, calls: pd.DataFrame | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._cache: dict[str, Any] = {}
        self._source: CountsSource | None = None
        self._counts: pd.DataFrame | None = None
        if isinstance(counts, pd.DataFrame) or not hasattr(counts, "batches"):
            self._counts = normalize_counts(pd.DataFrame(counts))
        else:
            self._source = counts
        self.calls = normalize_calls(_NO_CALLS if calls is None else calls)
        self.metadata: dict[str, Any] = {} if metadata is None else metadata

    def __getstate__(self) -> dict[str, Any]:          # pickled (or deep-copied) with its counts in memory
        return {"counts": self.counts, "calls": self.calls, "metadata": self.metadata}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["counts"], state["calls"], state["metadata"])

    @property
    def counts(self) -> pd.DataFrame:
        """The tidy counts table (read whole from the directory the first time, for a loaded Dataset)."""
        if self._counts is None:
            assert self._source is not None
            batch = CountsBatch.concat(list(self._source.batches(BATCH_ROWS)))
            self._counts = normalize_counts(batch.frame(self._source.call_index))
        return self._counts

    @counts.setter
    def counts(self, value: pd.DataFrame) -> None:
        self._counts, self._source = normalize_counts(value), None
        self._cache.clear()

    def __repr__(self) -> str:
        from qasa.display import dataset_repr

        return dataset_repr(self)

    def _repr_html_(self) -> str:
        from qasa.display import dataset_html

        return dataset_html(self)

    def plot_response(self, qubit: int | list[int], fits=None, ax=None):
        """Observed P(−1) versus h of one or more qubits (with the fitted curves of ``fits``); returns the axes.

        See :func:`qasa.plots.response_curves`.
        """
        from qasa.plots import response_curves

        qubits = [int(qubit)] if np.isscalar(qubit) else [int(q) for q in qubit]
        return response_curves(self.response(qubits), fits, qubits, ax=ax)

    # -- views --------------------------------------------------------------------------------
    @property
    def protocol(self):
        """The :class:`~qasa.protocol.Protocol` of this dataset, or ``None`` (e.g. imported data)."""
        from qasa.protocol import Protocol

        data = self.metadata.get("protocol")
        return None if data is None else Protocol.from_dict(data)

    @property
    def device(self) -> dict[str, Any]:
        """Device information recorded at run time (may be empty for imported data)."""
        return self.metadata.get("device") or {}

    @property
    def call_ids(self) -> set[str]:
        """Ids of the calls whose counts are in the dataset."""
        return {str(c) for c in self.call_index}

    @property
    def call_index(self) -> pd.Index:
        """Sorted ids of the calls whose counts are in the dataset: :attr:`CountsBatch.call` codes index it."""
        if self._counts is not None:
            return self._counts["call_id"].cat.categories
        return self._source.call_index

    @property
    def num_rows(self) -> int:
        """Rows of the counts table (one per call and qubit)."""
        if self._counts is not None:
            return len(self._counts)
        if "totals" in self._cache:
            return self._cache["totals"]["rows"]
        if "rows" not in self._cache:
            self._cache["rows"] = self._source.num_rows()
        return self._cache["rows"]

    def _raw_batches(self, rows: int) -> Iterator[CountsBatch]:
        if self._counts is None:
            yield from self._source.batches(rows)
            return
        c = self._counts
        arrays = (c["call_id"].cat.codes.to_numpy().astype(np.int64),
                  *(c[col].to_numpy(COUNT_DTYPES[col]) for col in COUNT_COLUMNS[1:]))
        for start in range(0, len(c), rows):
            yield CountsBatch(*(a[start:start + rows] for a in arrays))

    def call_mask(self, calls: Iterable[str]) -> np.ndarray:
        """A boolean mask over :attr:`call_index`: the calls among ``calls``."""
        return np.asarray(self.call_index.isin([str(c) for c in calls]), bool)

    def batches(self, *, calls: Iterable[str] | None = None, qubits: Iterable[int] | None = None,
                gauges: bool = False, rows: int | None = None) -> Iterator[CountsBatch]:
        """The counts in their table's order, streamed in :class:`CountsBatch` es of about ``rows`` rows
        (default :data:`BATCH_ROWS`); memory stays bounded by a batch whatever the dataset's size.

        Args:
            calls: only the rows of these call ids.
            qubits: only the rows of these qubits.
            gauges: fill in the gauges of rows stored without them (as :meth:`gauges` does).
            rows: rows per batch.
        """
        keep_call = None if calls is None else self.call_mask(calls)
        keep_q = None if qubits is None else np.unique(np.fromiter((int(q) for q in qubits), np.int64))
        for b in self._raw_batches(int(rows or BATCH_ROWS)):
            mask = None if keep_call is None else keep_call[b.call]
            if keep_q is not None:
                inside = np.isin(b.qubit, keep_q)
                mask = inside if mask is None else mask & inside
            if mask is not None and not mask.all():
                b = b.take(mask)
            if len(b):
                yield self._with_gauges(b) if gauges else b

    def totals(self) -> dict[str, Any]:
        """``rows``, ``qubits`` (sorted distinct), ``h`` (sorted distinct nominal fields), ``reads`` (all
        qubit-reads) and ``call_reads`` (qubit-reads per call of :attr:`call_index`) of the counts, in
        one streamed pass (kept)."""
        totals = self._cache.get("totals")
        if totals is None:
            tally = Totals(len(self.call_index))
            for b in self.batches():
                tally.add(b)
            totals = tally.result()
            if self._counts is None:             # kept for counts on disk (a table in memory may be edited)
                self._cache["totals"] = totals
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in totals.items()}

    def _remember_totals(self, totals: dict[str, Any]) -> None:
        """Keep totals computed while the rows streamed past for another reason (the store's validation)."""
        if self._counts is None:
            self._cache["totals"] = totals

    def gauges(self) -> np.ndarray:
        """The gauge sign (±1) applied to each counts row.

        Datasets written before gauges were stored (``gauge == 0``) get them reconstructed from
        their protocol: the gauges are a function of the protocol's seed and the call position
        only (:meth:`qasa.protocol.Protocol.calls`). Imported data without a protocol were
        collected without client-side gauges (the reference scripts apply none): +1.
        """
        parts = [b.gauge for b in self.batches(gauges=True)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)

    def _with_gauges(self, b: CountsBatch) -> CountsBatch:
        """``b`` with the gauges of rows stored without them filled in (see :meth:`gauges`)."""
        unknown = b.gauge == 0
        if not unknown.any():
            return b
        g = b.gauge.copy()
        book = self._gauge_book()
        if book is None:
            g[unknown] = 1
            return CountsBatch(b.call, b.qubit, b.h, g, b.n_down, b.n_up)
        protocol_row, flips, qubits_sorted, columns = book
        rows = np.flatnonzero(unknown)
        p = protocol_row[b.call[rows]]
        q = b.qubit[rows]                  # column of each row's qubit, vectorized
        qpos = np.minimum(np.searchsorted(qubits_sorted, q), max(len(qubits_sorted) - 1, 0))
        qcol = np.where(qubits_sorted[qpos] == q, columns[qpos], -1) if len(qubits_sorted) else np.full(len(q), -1)
        ok = (p >= 0) & (qcol >= 0)
        g[rows[ok]] = flips[p[ok], qcol[ok]]
        g[rows[~ok]] = 1
        return CountsBatch(b.call, b.qubit, b.h, g, b.n_down, b.n_up)

    def _gauge_book(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The protocol's gauges: (each call's row in them or −1, flips, sorted qubits, their columns)."""
        if "gauge_book" not in self._cache or self._counts is not None:
            protocol, book = self.protocol, None
            if protocol is not None and protocol.qubits is not None and protocol.seed is not None:
                calls = protocol.calls()
                flips = np.stack([c.flips for c in calls]) if calls else np.zeros((0, 0), np.int8)
                row = pd.Index([c.call_id for c in calls]).get_indexer(self.call_index.astype(str))
                columns = np.argsort(np.asarray(protocol.qubits, np.int64))
                book = (row, flips, np.asarray(protocol.qubits, np.int64)[columns], columns)
            self._cache["gauge_book"] = book
        return self._cache["gauge_book"]

    def response(self, qubits: Iterable[int] | None = None, frame: str = "programmed",
                 calls: Iterable[str] | None = None) -> Response:
        """Sum the counts over calls into ``(qubit × h)`` arrays for fitting (streamed: two passes over
        the rows, memory bounded by a batch and the arrays; the whole-dataset response is kept).

        Args:
            qubits: restrict to these qubits.
            frame: ``"programmed"`` (default): the field each qubit was actually programmed with,
                ``x = g·h``, and the reads in which it *returned* -1 — the qubit's own frame, in
                which a static bias ``b`` keeps its sign whatever the gauge, so that fits identify
                ``b`` and ``η`` separately. ``"nominal"``: the nominal ``h`` and -1 counts with the
                gauge undone (a static bias appears as ±b across gauges).
            calls: restrict to these call ids.
        """
        if frame not in ("programmed", "nominal"):
            raise ValueError(f"frame={frame!r}; choose 'programmed' or 'nominal'")
        kept = qubits is None and calls is None and self._counts is None     # (a table in memory may be edited)
        if kept and ("response", frame) in self._cache:
            return self._cache[("response", frame)]
        r = self.responses([calls], qubits=qubits, frame=frame)[0]
        if kept:
            self._cache[("response", frame)] = r
        return r

    def responses(self, calls: Sequence[Iterable[str] | None], *, qubits: Iterable[int] | None = None,
                  frame: str = "programmed") -> list[Response]:
        """One :meth:`response` per collection of call ids (``None``: every call), summed in the same two
        passes over the rows (e.g. the two halves of :func:`qasa.device.split_half`).

        Raises:
            ValueError: if a call id is in two of the collections.
        """
        if frame not in ("programmed", "nominal"):
            raise ValueError(f"frame={frame!r}; choose 'programmed' or 'nominal'")
        group = np.full(len(self.call_index), -1, np.int64)
        for i, ids in enumerate(calls):
            mask = np.ones(len(group), bool) if ids is None else self.call_mask(ids)
            if (group[mask] >= 0).any():
                raise ValueError("Dataset.responses: the collections of call ids overlap")
            group[mask] = i
        sums = _CellSums(len(calls))
        nominal = None
        if frame == "programmed":        # the sorted distinct nominal fields (kept for counts on disk)
            nominal = (np.sort(pd.unique(self._counts["h"].to_numpy(float) + 0.0)) if self._counts is not None
                       else self.totals()["h"])
            nominal = nominal[np.isfinite(nominal)]

        def rows():
            for b in self.batches(qubits=qubits, gauges=frame == "programmed"):
                g = group[b.call]
                if not (g >= 0).all():
                    b, g = b.take(g >= 0), g[g >= 0]
                h, down, up = b.h, b.n_down, b.n_up
                if frame == "programmed":
                    flipped = b.gauge < 0
                    h = np.where(flipped, _snap(-h, nominal), h)
                    down, up = np.where(flipped, up, down), np.where(flipped, down, up)
                yield g, b.qubit, h + 0.0, down, up            # + 0.0: −0.0 and 0.0 are one field

        for args in rows():
            sums.add(*args)
        sums.end_first_pass()
        for args in rows():
            sums.add_spread(*args)
        return sums.responses()

    def select(self, calls: Iterable[str]) -> "Dataset":
        """The dataset of the calls ``calls`` only (counts and calls table; a loaded Dataset stays on disk)."""
        ids = {str(c) for c in calls}
        table = (self.calls[self.calls["call_id"].astype(str).isin(ids)] if "call_id" in self.calls
                 else self.calls).reset_index(drop=True)
        if self._counts is not None:
            counts = self._counts[self._counts["call_id"].astype(str).isin(ids)]
            return Dataset(counts.reset_index(drop=True), table, self.metadata)
        return Dataset(_SelectedCalls(self._source, self.call_mask(ids)), table, self.metadata)

    def equals(self, other: "Dataset") -> bool:
        """True if counts, calls and metadata are identical."""
        return (self.metadata == other.metadata
                and self.counts.equals(other.counts)
                and self.calls.reset_index(drop=True).equals(other.calls.reset_index(drop=True)))

    def sorted(self) -> "Dataset":
        """Counts sorted by (call_id, qubit); calls by call_id (a loaded Dataset is sorted as it streams)."""
        calls = self.calls.sort_values("call_id", kind="stable").reset_index(drop=True)
        if self._counts is None:
            return Dataset(self._source.ordered(), calls, self.metadata)
        counts = self._counts
        codes = counts["call_id"].cat.codes.to_numpy()
        dc, dq = np.diff(codes), np.diff(counts["qubit"].to_numpy())
        if (codes < 0).any() or not np.all((dc > 0) | ((dc == 0) & (dq >= 0))):   # in order: nothing would move
            counts = counts.sort_values(["call_id", "qubit"], kind="stable").reset_index(drop=True)
        return Dataset(counts, calls, self.metadata)

    # -- disk (the directory is owned by :class:`qasa.store.DatasetStore`) -------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset compacted to directory ``path`` through :class:`~qasa.store.DatasetStore`."""
        store = _store(path)
        with store.writing():
            store.save(self)
        return store.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dataset":
        """Read and validate a dataset directory (:meth:`qasa.store.DatasetStore.load`)."""
        return _store(path).load()

    # -- reference format -------------------------------------------------------------------
    def to_spin_table(self, path: str | os.PathLike, frame: str | None = None) -> Path:
        """Export the counts in the reference ``spin_table.csv`` layout (summed over calls).

        The reference scripts apply no gauges, so each cell counts the reads in which the qubit
        *returned* -1 at the field it was *programmed* with: the ``"programmed"`` frame of
        :meth:`response`, used by default. When gauges leave qubits with unequal reads at a
        programmed field (one gauge per h), the file has no exact programmed-frame form and the
        nominal frame (gauges undone) is written instead, with a warning: a static bias ``b`` is
        then averaged over ±b and is not identified from the exported file.

        Raises:
            DatasetError: if qubits were read a different number of times at the same h (the
                reference format has one ``samples`` column per h).
        """
        import warnings

        frames = [frame] if frame is not None else ["programmed", "nominal"]
        for i, fr in enumerate(frames):
            r = self.response(frame=fr)
            samples = r.n_total.max(axis=0)
            uneven = np.flatnonzero((r.n_total != samples).any(axis=0))
            if not uneven.size:
                break
            if i + 1 == len(frames):
                raise DatasetError(f"qubits have unequal read counts at h={r.h[uneven[0]]:g}; "
                                   "spin_table.csv needs one 'samples' value per h")
        if fr == "nominal" and frame is None:
            warnings.warn("gauges left unequal reads per programmed field: spin_table.csv is written in the "
                          "nominal frame (gauges undone), where a static bias b is not identified", stacklevel=2)
        table = pd.DataFrame({"h": [repr(float(x)) for x in r.h], "samples": samples})  # shortest round-trip
        spins = pd.DataFrame(r.n_down.T, columns=[f"spin_{q}" for q in r.qubits])
        table = pd.concat([table, spins], axis=1)
        path = Path(path)
        atomic_write_bytes(path, table.to_csv(index=False).encode())
        return path

    @classmethod
    def from_spin_table(cls, path: str | os.PathLike, device: dict[str, Any] | None = None) -> "Dataset":
        """Import a reference ``spin_table.csv`` (one pseudo-call per h row).

        Args:
            path: the CSV file.
            device: optional device info (e.g. ``{"topology_type": "pegasus", "topology_shape": [16]}``)
                so that maps can be drawn.

        Raises:
            DatasetError: naming the line, the column and the value, when the table is not one:
                see :func:`read_spin_table`.
        """
        device = check_imported_device(device)      # before the table is read, and before anything is written
        h, samples, qubits, down = read_spin_table(path)
        if device and device.get("topology_type") is not None:
            from qasa.topology import topology_graph

            graph, _ = topology_graph(device["topology_type"], device["topology_shape"])
            absent = [int(q) for q in qubits if int(q) not in graph]
            if absent:
                shape = ",".join(map(str, device["topology_shape"]))
                raise DatasetError(f"{Path(path).name}: column 'spin_{absent[0]}': qubit {absent[0]} is not a qubit "
                                   f"of a {device['topology_type']} {shape} graph ({len(absent)} of {len(qubits)} "
                                   f"qubits are not; its qubits are 0..{max(graph.nodes)}): check --topology/--shape")
        ids = [f"spin_table-h{i:05d}" for i in range(len(h))]
        counts = pd.DataFrame({
            "call_id": np.repeat(ids, len(qubits)),
            "qubit": np.tile(qubits, len(h)),
            "h": np.repeat(h, len(qubits)),
            "n_down": down.reshape(-1),
            "n_up": (samples[:, None] - down).reshape(-1),
        })
        calls = pd.DataFrame({"call_id": pd.Series(ids, dtype="string"), "h": h, "num_reads": samples})
        dev = {"solver": None, "topology_type": None, "topology_shape": None,
               "nodelist": sorted(int(q) for q in qubits), "edgelist": None, **(device or {})}
        meta = {"protocol": None, "device": dev, "source": {"spin_table": str(Path(path).name)},
                "created": utcnow()}
        return cls(counts, calls, meta)


#: Largest read count accepted in an imported table (exact in float64, far above any real count).
MAX_IMPORTED_COUNT = 2 ** 53
#: Largest |h| accepted in an imported table: 4, the widest ``h_range`` D-Wave publishes for its QPUs
#: (the solver property ``h_range`` in D-Wave's "QPU-Specific Physical Properties" documents: [-4, 4]
#: for the Advantage systems, e.g. Advantage_system4.1, and Advantage2; [-2, 2] for DW_2000Q_6 — the
#: values the presets of :mod:`qasa.virtual.qpu` use). A table beyond it cannot come from such a QPU.
MAX_IMPORTED_H = 4.0
#: Largest qubit id of an imported ``spin_<id>`` column (qubit ids are stored as int64).
MAX_QUBIT_ID = 2 ** 63 - 1


def check_imported_device(device: dict[str, Any] | None) -> dict[str, Any] | None:
    """The device of an imported table with its topology shape checked as ``qasa run`` checks it.

    ``topology_type`` must be chimera, pegasus or zephyr and ``topology_shape`` a shape of it
    (:func:`qasa.topology.check_shape`: e.g. Pegasus takes one dimension ``m``; ``16,16,4`` is a
    Chimera shape and is refused, never truncated), or None for the topology's default shape.

    Raises:
        DatasetError: naming the value and the allowed forms.
    """
    if not device or device.get("topology_type") is None:
        return device
    from qasa.errors import SamplerError
    from qasa.topology import check_shape

    try:
        shape = check_shape(device["topology_type"], device.get("topology_shape"))
    except SamplerError as exc:
        raise DatasetError(f"--topology {device['topology_type']} --shape: {exc}") from None
    return {**device, "topology_shape": shape}


def read_spin_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check a reference ``spin_table.csv``: ``(h, samples, qubits, n_down)``.

    Refused, with one line naming the line, the column and the value: an unreadable file; missing
    ``h``/``samples``/``spin_<id>`` columns; a column twice, or two columns naming the same qubit
    (``spin_5`` and ``spin_05``); a spin column whose name is not ``spin_<non-negative integer>``; a
    table without rows; an empty or non-numeric cell; a non-finite h or one outside
    ``[-MAX_IMPORTED_H, MAX_IMPORTED_H]``; a qubit id above :data:`MAX_QUBIT_ID`; the same h on two rows; a read
    count that is not a whole number in ``[0, 2^53]`` (``samples`` at least 1); a spin count above
    its row's ``samples``.
    """
    import csv
    import re

    name = Path(path).name
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:     # a spreadsheet's byte-order mark too
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read spin table {path}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DatasetError(f"{name} is empty: a spin_table.csv has a header h,samples,spin_<id>... and one row per h")
    header = [c.strip() for c in rows[0]]
    seen: dict[str, int] = {}
    for c in header:
        if c in seen:
            raise DatasetError(f"{name}: column {c!r} appears twice")
        seen[c] = 1
    spin_cols = [c for c in header if c.startswith("spin_")]
    if "h" not in header or "samples" not in header or not spin_cols:
        raise DatasetError(f"{name} is not a spin_table.csv: need columns h, samples, spin_<id>... (found {header[:5]})")
    owner: dict[int, str] = {}
    for c in spin_cols:
        m = re.fullmatch(r"spin_(\d+)", c)
        if m is None:
            raise DatasetError(f"{name}: bad spin column name {c!r}: expected spin_<qubit id> (a non-negative integer)")
        q = int(m.group(1))
        if q > MAX_QUBIT_ID:
            raise DatasetError(f"{name}: spin column {c[:40]!r}{'...' if len(c) > 40 else ''}: qubit id out of "
                               f"range; allowed: spin_<id> with 0 <= id <= 2^63 - 1")
        if q in owner:
            raise DatasetError(f"{name}: columns {owner[q]!r} and {c!r} both name qubit {q}")
        owner[q] = c
    body = rows[1:]
    if not body:
        raise DatasetError(f"{name} has a header but no rows: one row per h value is needed")
    index = {c: header.index(c) for c in ["h", "samples", *spin_cols]}
    values = np.empty((len(body), len(index)), dtype=float)
    for i, row in enumerate(body):
        line = i + 2
        if len(row) != len(header):
            raise DatasetError(f"{name} line {line}: {len(row)} cells for {len(header)} columns")
        for j, (c, k) in enumerate(index.items()):
            cell = row[k].strip()
            if not cell:
                raise DatasetError(f"{name} line {line}, column {c!r}: empty cell")
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DatasetError(f"{name} line {line}, column {c!r}: {cell!r} is not a number") from None
            if c != "h" and not (0 <= values[i, j] <= MAX_IMPORTED_COUNT and values[i, j] == int(values[i, j])):
                raise DatasetError(f"{name} line {line}, column {c!r}: {cell!r} is not a whole number of reads "
                                   f"in [0, 2^53]")
    h, samples, down = values[:, 0], values[:, 1], values[:, 2:]
    bad = np.flatnonzero(~np.isfinite(h))
    if bad.size:
        raise DatasetError(f"{name} line {bad[0] + 2}, column 'h': {body[bad[0]][index['h']].strip()!r} is not finite")
    bad = np.flatnonzero(np.abs(h) > MAX_IMPORTED_H)
    if bad.size:
        raise DatasetError(f"{name} line {bad[0] + 2}, column 'h': {body[bad[0]][index['h']].strip()!r} is outside "
                           f"the allowed range [-{MAX_IMPORTED_H:g}, {MAX_IMPORTED_H:g}] (the widest h_range of a "
                           "D-Wave QPU)")
    first: dict[float, int] = {}
    for i, v in enumerate(h):
        if v in first:
            raise DatasetError(f"{name}: h={v:g} appears on lines {first[v] + 2} and {i + 2}; each h value must "
                               "appear once (sum the reads into one row)")
        first[v] = i
    zero = np.flatnonzero(samples < 1)
    if zero.size:
        raise DatasetError(f"{name} line {zero[0] + 2}, column 'samples': {samples[zero[0]]:g} reads; at least 1")
    over = np.argwhere(down > samples[:, None])
    if over.size:
        i, j = over[0]
        raise DatasetError(f"{name} line {i + 2}, column {spin_cols[j]!r}: {down[i, j]:g} reads of -1 exceed "
                           f"samples={samples[i]:g}; spin counts must lie in [0, samples]")
    qubits = np.array([int(c[5:]) for c in spin_cols], dtype=np.int64)
    return h, samples.astype(np.int64), qubits, down.astype(np.int64)

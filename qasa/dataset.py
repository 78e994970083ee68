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
:meth:`Dataset.save` go through it. The store sits above this module (it builds Datasets), so this
module does not import it: ``qasa/__init__`` (which Python runs before any code of ``qasa.dataset``)
hands the class over with :func:`_register_store`, and the import graph keeps no circle.

The reference QASA scripts use ``spin_table.csv`` (columns ``h, samples, spin_<id>...``, each cell
the number of reads in which qubit ``<id>`` returned -1); :meth:`Dataset.from_spin_table` and
:meth:`Dataset.to_spin_table` convert both ways.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qasa.errors import DatasetError

__all__ = ["read_spin_table", "Dataset", "Response", "CallStats", "COUNT_COLUMNS", "atomic_write_bytes",
           "atomic_write_json", "json_text", "utcnow", "normalize_counts", "normalize_calls", "table_bytes", "json_safe",
           "check_imported_device", "MAX_IMPORTED_H"]

FORMAT = "qasa-dataset"
FORMAT_VERSION = 1
COUNT_COLUMNS = ["call_id", "qubit", "h", "gauge", "n_down", "n_up"]
_COUNT_DTYPES = {"qubit": "int64", "h": "float64", "gauge": "int8", "n_down": "int64",
                 "n_up": "int64"}


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, rename).

    ``durable=False`` skips the fsync, for files that can be made again (a report): a reader still
    never sees a half-written file, but a power cut may lose the newest version.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:          # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    df = df[COUNT_COLUMNS].astype(_COUNT_DTYPES)
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


def _sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each element's position among them (hashing, not a full sort)."""
    codes, uniques = pd.factorize(values, sort=False)
    uniques = np.asarray(uniques)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[codes]


def _summed(qubit: np.ndarray, h: np.ndarray, down: np.ndarray, up: np.ndarray, per_call: bool = False) -> "Response":
    """Counts summed per (qubit, h) into dense arrays: sorted qubits × sorted h, 0 where no reads.

    ``per_call``: each element is one call of one qubit, and the :class:`CallStats` are attached."""
    q, qi = _sorted_codes(qubit)
    hv, hi = _sorted_codes(h)
    cell = qi * len(hv) + hi
    size = len(q) * len(hv)
    shape = (len(q), len(hv))
    down = down.astype(np.int64)
    reads = down + up.astype(np.int64)
    n_down = np.bincount(cell, weights=down, minlength=size)
    n_total = np.bincount(cell, weights=reads, minlength=size)
    calls = None
    if per_call:
        live = reads > 0
        n_calls = np.bincount(cell[live], minlength=size)
        nn = np.bincount(cell, weights=(reads * reads).astype(float), minlength=size)
        nd = np.bincount(cell, weights=(down * reads).astype(float), minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(nn > 0, nd / np.maximum(nn, 1.0), 0.0)
        dev = down - r[cell] * reads                  # n_c − r N_c per call: no cancellation
        spread = np.bincount(cell, weights=dev * dev, minlength=size)
        calls = CallStats(n_calls.reshape(shape).astype(np.int64), nn.reshape(shape), r.reshape(shape),
                          spread.reshape(shape))
    return Response(q.astype(np.int64), hv.astype(float), np.rint(n_down).astype(np.int64).reshape(shape),
                    np.rint(n_total).astype(np.int64).reshape(shape), calls)


@dataclass
class Dataset:
    """Counts of one assessment plus its metadata (see module docstring for the on-disk layout).

    Attributes:
        counts: tidy table with columns :data:`COUNT_COLUMNS`.
        calls: one row per finished call (``call_id`` first).
        metadata: protocol (as a dict), device info, versions, timestamps.
    """

    counts: pd.DataFrame
    calls: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"call_id": pd.Series([], dtype="string")}))
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = normalize_counts(self.counts)
        self.calls = normalize_calls(self.calls)

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
        return set(self.counts["call_id"].unique())

    def gauges(self) -> np.ndarray:
        """The gauge sign (±1) applied to each counts row.

        Datasets written before gauges were stored (``gauge == 0``) get them reconstructed from
        their protocol: the gauges are a function of the protocol's seed and the call position
        only (:meth:`qasa.protocol.Protocol.calls`). Imported data without a protocol were
        collected without client-side gauges (the reference scripts apply none): +1.
        """
        g = self.counts["gauge"].to_numpy(np.int8)
        unknown = g == 0
        if not unknown.any():
            return g
        g = g.copy()
        protocol = self.protocol
        if protocol is None or protocol.qubits is None or protocol.seed is None:
            g[unknown] = 1
            return g
        calls = protocol.calls()
        ids = np.array([c.call_id for c in calls])
        flips = np.stack([c.flips for c in calls]) if calls else np.zeros((0, 0), np.int8)
        order = np.argsort(ids)
        pq_sorted = np.argsort(np.asarray(protocol.qubits, np.int64))
        qubits_sorted = np.asarray(protocol.qubits, np.int64)[pq_sorted]
        rows = np.flatnonzero(unknown)
        cid = self.counts["call_id"].to_numpy(str)[rows]
        pos = np.searchsorted(ids[order], cid)
        pos = np.minimum(pos, len(ids) - 1)
        found = ids[order][pos] == cid
        q = self.counts["qubit"].to_numpy(np.int64)[rows]        # column of each row's qubit, vectorized
        qpos = np.minimum(np.searchsorted(qubits_sorted, q), max(len(qubits_sorted) - 1, 0))
        qcol = np.where(qubits_sorted[qpos] == q, pq_sorted[qpos], -1) if len(qubits_sorted) else np.full(len(q), -1)
        ok = found & (qcol >= 0)
        g[rows[ok]] = flips[order[pos[ok]], qcol[ok]]
        g[rows[~ok]] = 1
        return g

    def response(self, qubits: Iterable[int] | None = None, frame: str = "programmed") -> Response:
        """Sum the counts over calls into ``(qubit × h)`` arrays for fitting.

        Args:
            qubits: restrict to these qubits.
            frame: ``"programmed"`` (default): the field each qubit was actually programmed with,
                ``x = g·h``, and the reads in which it *returned* -1 — the qubit's own frame, in
                which a static bias ``b`` keeps its sign whatever the gauge, so that fits identify
                ``b`` and ``η`` separately. ``"nominal"``: the nominal ``h`` and -1 counts with the
                gauge undone (a static bias appears as ±b across gauges).
        """
        if frame not in ("programmed", "nominal"):
            raise ValueError(f"frame={frame!r}; choose 'programmed' or 'nominal'")
        df = self.counts
        qubit = df["qubit"].to_numpy(np.int64)
        h = df["h"].to_numpy(float)
        down, up = df["n_down"].to_numpy(np.int64), df["n_up"].to_numpy(np.int64)
        if frame == "programmed":
            flipped = self.gauges() < 0
            h = np.where(flipped, -h, h)
            down, up = np.where(flipped, up, down), np.where(flipped, down, up)
        if qubits is not None:
            keep = np.isin(qubit, np.fromiter((int(q) for q in qubits), np.int64))
            qubit, h, down, up = qubit[keep], h[keep], down[keep], up[keep]
        return _summed(qubit, h + 0.0, down, up, per_call=True)      # + 0.0: −0.0 and 0.0 are one field

    def equals(self, other: "Dataset") -> bool:
        """True if counts, calls and metadata are identical."""
        return (self.metadata == other.metadata
                and self.counts.equals(other.counts)
                and self.calls.reset_index(drop=True).equals(other.calls.reset_index(drop=True)))

    def sorted(self) -> "Dataset":
        """Counts sorted by (call_id, qubit); calls by call_id."""
        counts = self.counts
        codes = counts["call_id"].cat.codes.to_numpy()
        dc, dq = np.diff(codes), np.diff(counts["qubit"].to_numpy())
        if (codes < 0).any() or not np.all((dc > 0) | ((dc == 0) & (dq >= 0))):   # in order: nothing would move
            counts = counts.sort_values(["call_id", "qubit"], kind="stable").reset_index(drop=True)
        calls = self.calls.sort_values("call_id", kind="stable").reset_index(drop=True)
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
        table = pd.DataFrame({"h": r.h, "samples": samples})
        spins = pd.DataFrame(r.n_down.T, columns=[f"spin_{q}" for q in r.qubits])
        table = pd.concat([table, spins], axis=1)
        path = Path(path)
        atomic_write_bytes(path, table.to_csv(index=False, float_format="%.17g").encode())
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

"""The one owner of a run's life: :class:`Session` over a store, with the resume, extend and finished rules.

A session is opened on a dataset directory (:class:`qasa.store.DatasetStore`) or, for ``out=None``,
on a :class:`MemoryStore` with the same interface, so that one run loop (:func:`qasa.runner.collect`)
serves both. :meth:`Session.open` applies the rules that ``qasa run DIR`` and ``qasa.assess(..., DIR)``
share:

- **Backend.** Given by name (or ``None``: the stored backend, else ``"emulator"``), it is rebuilt from
  the stored recipe (:func:`qasa.samplers.get_backend`); an option given explicitly overrides the
  recipe, and one that changes the data is refused naming it (``--device-seed: stored 0, requested
  5``). A sampler object is used as it is, and its settings (:meth:`qasa.backend.Backend.settings`)
  are checked against the stored ones.
- **Protocol.** On an existing dataset the stored protocol is continued, with the fields named in
  ``typed`` taken from the options; an explicit protocol must equal the stored one (its unset seed
  and qubits are filled in). ``add_reads`` extends a dataset by whole extra gauges; a protocol that
  differs otherwise is refused naming the field, before anything is written.
- **Finished.** :attr:`Session.finished` is true when every call of the protocol is stored: running
  it again is a no-op that returns the stored dataset.

The store is the directory's one writer: metadata, journal, ``in_flight.json`` and the design rounds
of :mod:`qasa.adaptive` are written only through its methods.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Iterable

import dimod
import numpy as np
import pandas as pd

from qasa.backend import Backend, as_backend
from qasa.dataset import COUNT_COLUMNS, Dataset
from qasa.errors import DatasetError, ProtocolError
from qasa.protocol import Protocol
from qasa.samplers import get_backend, validate
from qasa.store import DatasetStore

__all__ = ["Session", "MemoryStore", "open_backend", "OPTION_NAMES", "settings_difference", "protocol_difference"]

#: How a changed sampler setting is named in an error: the keyword, and the CLI option that sets it.
OPTION_NAMES = {"backend": "--backend", "topology_type": "--topology", "topology_shape": "--shape",
                "beta": "--beta", "seed": "--device-seed", "preset": "--preset", "physics": "--physics",
                "solver": "--solver", "profile": "--profile", "ideal": "--ideal", "class": "the sampler class"}

#: Recipe keys whose stored ``None`` is a choice (the preset's graph, the default solver), not "unset".
_NONE_IS_A_VALUE = ("topology_type", "topology_shape", "solver", "seed")


class MemoryStore:
    """A run kept in memory, with the part of :class:`~qasa.store.DatasetStore`'s interface a run uses.

    It has no path and no lock; ``keep_samples`` needs a directory. Its dataset lives as long as the object.
    """

    path = None

    def __init__(self) -> None:
        self._meta: dict[str, Any] | None = None
        self._records: list[dict[str, Any]] = []
        self._counts: list[pd.DataFrame] = []
        self._in_flight: dict[str, str] = {}
        self._rounds: dict[int, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} calls)"

    @property
    def exists(self) -> bool:
        """True once a run has created the dataset."""
        return self._meta is not None

    @contextlib.contextmanager
    def writing(self) -> Iterator["MemoryStore"]:
        """No lock is needed in memory."""
        yield self

    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata (``{}`` before the dataset exists)."""
        return copy.deepcopy(self._meta or {})

    def create(self, metadata: dict[str, Any]) -> None:
        self._meta = copy.deepcopy(metadata)

    def update_metadata(self, **changes: Any) -> dict[str, Any]:
        self._meta = {**(self._meta or {}), **copy.deepcopy(changes)}
        return self.metadata()

    def record_failure(self, call_id: str | None, error: str, time: str) -> None:
        failures = list(self.metadata().get("failures", []))
        self.update_metadata(failures=failures + [{"call_id": call_id, "time": time, "error": error}])

    def journal_call(self, record: dict[str, Any], counts: pd.DataFrame) -> None:
        self._records.append(dict(record))
        self._counts.append(counts)

    def store_samples(self, call_id: str, samples: np.ndarray) -> None:
        raise DatasetError("keep_samples needs an output directory (raw reads are kept on disk)")

    def in_flight(self) -> dict[str, str]:
        return dict(self._in_flight)

    def set_in_flight(self, mapping: dict[str, str]) -> None:
        self._in_flight = dict(mapping)

    def design_round(self, index: int) -> dict[str, Any] | None:
        return copy.deepcopy(self._rounds.get(index))

    def save_design_round(self, index: int, plan: Mapping[str, Any]) -> None:
        self._rounds[index] = copy.deepcopy(dict(plan))

    def has_journal(self) -> bool:
        return True

    def spent_qpu_us(self) -> float:
        used = [r.get("qpu_access_time") for r in self._records]
        return float(sum(u for u in used if u is not None and np.isfinite(u)))

    def done_call_ids(self) -> set[str]:
        return {str(r["call_id"]) for r in self._records}

    def load(self, validate: bool = True) -> Dataset:
        counts = pd.concat(self._counts, ignore_index=True) if self._counts else pd.DataFrame(columns=COUNT_COLUMNS)
        return Dataset(counts, pd.DataFrame(self._records), self.metadata())

    def save(self, ds: Dataset) -> Dataset:
        """Keep ``ds`` (sorted, with totals) as the stored state; returns it."""
        self._meta = copy.deepcopy(ds.metadata)
        self._records = ds.calls.to_dict("records")
        self._counts = [ds.counts]
        return ds


Store = DatasetStore | MemoryStore


def protocol_difference(stored: Protocol, requested: Protocol) -> str | None:
    """The first field in which two protocols differ, as ``"field: stored A, requested B"``, or None."""
    a, b = stored.to_dict(), requested.to_dict()
    for key in a:
        if a[key] != b[key]:
            shown_a, shown_b = a[key], b[key]
            if isinstance(shown_a, list) and len(shown_a) > 6:
                shown_a = f"{len(shown_a)} values"
            if isinstance(shown_b, list) and len(shown_b) > 6:
                shown_b = f"{len(shown_b)} values"
            return f"{key}: stored {shown_a}, requested {shown_b}"
    return None


def settings_difference(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first data-affecting sampler setting that differs (named by its CLI option), or None."""
    def flat(d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k in ("recipe", "settings", "options"):
                out.update(flat(v))
            else:
                out.setdefault(k, v)
        return out

    a, b = flat(stored), flat(current)
    order = list(OPTION_NAMES)
    keys = sorted(set(a) & set(b), key=lambda k: (order.index(k) if k in order else len(order), k))
    for key in keys:     # a setting one side does not record cannot be compared
        if key in ("profile", "class"):   # credentials, and wrappers around the same sampler, change no data
            continue
        if a.get(key) != b.get(key):
            name = OPTION_NAMES.get(key, key)
            return f"{name}: stored {a.get(key)!r}, requested {b.get(key)!r}"
    return None


def _check_out(out: str | os.PathLike | None) -> None:
    """An output directory is None (in memory) or a non-empty path (``""`` would mean the current directory)."""
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not str(os.fspath(out)).strip()):
        raise ProtocolError(f"output directory {out!r} must be a non-empty path (or None to keep the run in memory)")


Options = Mapping[str, Any] | Callable[[str], Mapping[str, Any]]


def open_backend(out: str | os.PathLike | None, sampler: dimod.Sampler | Backend | str | None = None,
                 options: Options | None = None, defaults: Options | None = None) -> Backend:
    """The backend of a session on ``out``: a sampler object as it is, or a name rebuilt over the stored recipe.

    Args:
        out: dataset directory (or None).
        sampler: a backend name, a sampler or Backend, or None (the stored backend, else ``"emulator"``).
        options: backend options given explicitly (or a function of the backend name returning them).
        defaults: options used where neither given nor stored (or a function of the backend name).
    """
    store = DatasetStore(out) if out is not None else None
    meta = store.metadata() if store is not None and store.exists else None
    return _open_backend(sampler, options or {}, defaults or {}, meta)


def _open_backend(sampler: dimod.Sampler | Backend | str | None, options: Options, defaults: Options,
                  meta: Mapping[str, Any] | None) -> Backend:
    if sampler is not None and not isinstance(sampler, str):
        if options:
            raise TypeError(f"sampler options {sorted(options)} need a backend name, not a sampler object")
        return as_backend(sampler)
    recipe = dict(((meta or {}).get("sampler") or {}).get("recipe") or {})
    if sampler is None and meta is not None and meta.get("protocol") is not None and not recipe:
        made_by = ((meta.get("sampler") or {}).get("class")) or "a sampler object"
        raise DatasetError(f"this dataset was collected with {made_by}, not a backend qasa can rebuild by "
                           "name; pass that sampler to resume it")
    name = sampler if sampler is not None else recipe.get("backend", "emulator")
    base = dict(defaults(name) if callable(defaults) else defaults)
    if recipe.get("backend") == name:      # resuming on the stored backend: the recipe fills what is not given
        base.update({k: v for k, v in recipe.items()
                     if k != "backend" and (v is not None or k in _NONE_IS_A_VALUE)})
    return get_backend(name, **{**base, **(options(name) if callable(options) else options)})


class Session:
    """One run's life over one store (see the module docstring); build it with :meth:`open`.

    Attributes:
        store: the dataset directory's :class:`~qasa.store.DatasetStore`, or a :class:`MemoryStore`.
        backend: the :class:`~qasa.backend.Backend` that collects.
        protocol: the resolved, validated protocol to run.
        extend: whether the protocol may ask for more reads per h than stored.
    """

    def __init__(self, store: Store, backend: Backend, requested: Protocol, *, extend: bool = False) -> None:
        self.store, self.backend, self.requested, self.extend = store, backend, requested, extend
        self.protocol = self.resolve()

    def __repr__(self) -> str:
        return f"Session({self.path or 'in memory'}, {self.backend!r}, finished={self.finished})"

    @property
    def path(self) -> Path | None:
        """The dataset directory, or None in memory."""
        return self.store.path

    @classmethod
    def open(cls, out: str | os.PathLike | None, sampler: dimod.Sampler | Backend | str | None = None,
             protocol: Protocol | None = None, *, options: Options | None = None, defaults: Options | None = None,
             default: Protocol | Callable[[Backend], Protocol] | None = None, typed: Iterable[str] = (),
             add_reads: int = 0, extend: bool = False) -> "Session":
        """Open the session of ``out`` (``None``: in memory) with the rules of the module docstring.

        Args:
            out: dataset directory, or ``None`` to keep the run in memory.
            sampler: a backend name, a :class:`dimod.Sampler`, a :class:`~qasa.backend.Backend`, or
                ``None`` (the stored backend, else ``"emulator"``).
            protocol: the protocol to run; on an existing dataset it must be the stored one.
            options: backend options given explicitly (override the stored recipe), or a function
                of the backend name returning them.
            defaults: backend options used where neither given nor stored (or a function of the
                backend name returning them).
            default: the protocol of a new dataset when ``protocol`` is None (or a function of the backend).
            typed: protocol fields given explicitly: taken from ``default`` over the stored protocol.
            add_reads: extend an existing dataset by this many reads per h (whole extra gauges).
            extend: allow a protocol with more reads per h than stored.

        Raises:
            ProtocolError, SamplerError: bad input, before anything is written.
            DatasetError: ``out`` holds a dataset of another protocol, sampler or device, or
                ``add_reads`` without a dataset.
        """
        _check_out(out)
        store: Store = DatasetStore(out) if out is not None else MemoryStore()
        meta = store.metadata() if store.exists else None
        if meta is not None and meta.get("protocol") is None:
            raise DatasetError(f"{out} holds a dataset without a protocol (imported data); choose another directory")
        backend = _open_backend(sampler, options or {}, defaults or {}, meta)
        fresh = default(backend) if callable(default) else default
        if meta is not None and meta.get("protocol") is not None and protocol is None:
            requested = Protocol.from_dict(meta["protocol"])
            typed = list(typed)
            if typed and fresh is not None:
                requested = requested.replace(**{f: getattr(fresh, f) for f in typed})
        else:
            requested = protocol if protocol is not None else fresh
        if requested is None:
            raise ProtocolError("no protocol given and none stored in the output directory")
        if add_reads:
            if isinstance(add_reads, bool) or not isinstance(add_reads, (int, np.integer)) or add_reads < 1:
                raise ProtocolError(f"add_reads={add_reads!r} must be a positive number of reads per h")
            if meta is None:
                raise DatasetError(f"add_reads extends an existing dataset; {out} holds none")
            requested = requested.replace(reads_per_h=requested.reads_per_h + int(add_reads))
            extend = True
        return cls(store, backend, requested, extend=extend)

    # -- the rules -------------------------------------------------------------------------------
    def resolve(self) -> Protocol:
        """Resolve and validate the requested protocol against the backend and the stored dataset.

        Called again under the writer lock: another writer may have created or extended the
        dataset since (its seed and qubits then fill in those left unset, as on any resume).
        """
        nodelist = self.backend.nodelist
        requested = self.requested
        if nodelist is None and requested.qubits is None:
            raise ProtocolError("this sampler has no nodelist; give the qubits to assess explicitly")
        if self.store.exists:
            requested = self._check_stored(self.store.metadata())
        else:
            requested = requested.resolved(nodelist or ())
        validate(requested, self.backend)
        self.backend.check_run_duration(requested)
        self.protocol = requested
        return requested

    def _check_stored(self, meta: dict[str, Any]) -> Protocol:
        """The requested protocol resolved against a stored dataset; any other difference refused."""
        out = self.path if self.path is not None else "the in-memory run"
        stored_dict = meta.get("protocol")
        if stored_dict is None:
            raise DatasetError(f"{out} holds a dataset without a protocol (imported data); choose another directory")
        stored = Protocol.from_dict(stored_dict)
        fill = {}
        if self.requested.seed is None:
            fill["seed"] = stored.seed
        if self.requested.qubits is None:
            fill["qubits"] = stored.qubits
        requested = self.requested.replace(**fill).resolved(self.backend.nodelist or ())
        if self.extend and requested.reads_per_h != stored.reads_per_h:
            problem = stored.extension_problem(requested)
            if problem is not None:
                raise DatasetError(f"cannot extend {out}: {problem}")
            diff = protocol_difference(stored.replace(reads_per_h=requested.reads_per_h), requested)
        else:
            diff = protocol_difference(stored, requested)
        if diff is not None:
            raise DatasetError(f"{out} holds a dataset of a different protocol ({diff}); "
                               "use another output directory or the same options")
        if meta.get("sampler") is not None:
            diff = settings_difference(meta["sampler"], self.backend.settings())
            if diff is not None:
                raise DatasetError(f"{out} was collected with other sampler settings ({diff}); "
                                   "resume with the stored settings (`qasa run DIR` alone uses them) "
                                   "or use another output directory")
        stored_solver = (meta.get("device") or {}).get("solver")
        if stored_solver is not None and stored_solver != self.backend.name:
            raise DatasetError(f"{out} holds data from solver {stored_solver!r}, not {self.backend.name!r}")
        return requested

    @property
    def finished(self) -> bool:
        """True if the store already holds every call of the protocol (running again changes nothing)."""
        return self.store.exists and self.protocol.call_ids() <= self.store.done_call_ids()

    # -- what is written through the store -------------------------------------------------------
    def design_round(self, index: int) -> dict[str, Any] | None:
        """The stored plan of design round ``index`` (:mod:`qasa.adaptive`), or None."""
        return self.store.design_round(index)

    def save_design_round(self, index: int, plan: Mapping[str, Any]) -> None:
        """Store the plan of design round ``index`` before its calls run (under the writer lock)."""
        with self.store.writing():
            self.store.save_design_round(index, plan)

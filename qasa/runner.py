"""Execute a protocol on a sampler, checkpointing every call.

For each call of :meth:`qasa.protocol.Protocol.calls` the runner programs ``{qubit: gauge * h}``
with no couplers, samples, reduces the SampleSet to per-qubit counts of -1 and +1 in the nominal
frame (each read weighted by ``num_occurrences``, the gauge undone), and journals the counts and the
call record (timing, problem id, timestamps) atomically before the next call starts. Running again
on the same directory resumes: calls already journaled are skipped, so nothing is counted twice and
a killed process loses at most the call in flight. Calls are seeded from ``(seed, call index)``
only, so a resumed run on a seeded sampler gives exactly the counts of an uninterrupted one.

A sampler that offers ``sample_counts(h, **params) -> (qubits, n_down, info)`` (qasa's virtual QPU)
is asked for counts directly instead of a SampleSet: the same numbers without materializing every
read. ``h`` is a read-only mapping ``{qubit: programmed field}`` whose ``qasa_arrays()`` also gives
the qubits and fields as two arrays.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Sequence

import dimod
import numpy as np
import pandas as pd

from qasa.cost import BudgetError, check_run_duration, estimate_call
from qasa.dataset import COUNT_COLUMNS, Dataset, json_safe, utcnow
from qasa.store import DatasetStore
from qasa.errors import AnswerError, DatasetError, ProtocolError
from qasa.protocol import Call, Protocol
from qasa.leap import (DEFAULT_CALL_TIMEOUT, IN_FLIGHT, LeapRun, async_results, charged_us, check_leap_options,
                        check_sampleset, cloud_solver, is_transient, redact, tag)
from qasa.redact import redact_obj
from qasa.reduce import counts_frame, reduce_sampleset, sampleset_columns, undo_gauge
from qasa.samplers import device_info, filter_parameters, solver_name, validate

__all__ = ["run", "prepare", "reduce_sampleset", "sampler_parameters", "sampler_settings", "check_budget_value",
           "is_transient", "redact", "QPU_SECONDS_WITHOUT_BUDGET"]

#: Parameters the protocol always asks for; silently skipped by samplers that do not know them.
_ALWAYS = ("auto_scale", "flux_drift_compensation", "answer_mode", "num_reads", "label", "seed")


def sampler_parameters(protocol: Protocol) -> dict[str, Any]:
    """Keyword arguments shared by every call of ``protocol`` (before filtering by the sampler)."""
    params: dict[str, Any] = {"auto_scale": False,
                              "flux_drift_compensation": protocol.flux_drift_compensation,
                              "answer_mode": "histogram"}
    if protocol.annealing_time is not None:
        params["annealing_time"] = protocol.annealing_time
    if protocol.anneal_schedule is not None:
        params["anneal_schedule"] = [list(p) for p in protocol.anneal_schedule]
    if protocol.h_gain_schedule is not None:
        params["h_gain_schedule"] = [list(p) for p in protocol.h_gain_schedule]
    params.update(protocol.sampler_params)
    return params


def _protocol_difference(stored: Protocol, requested: Protocol) -> str | None:
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


def sampler_settings(sampler: dimod.Sampler) -> dict[str, Any]:
    """Everything about ``sampler`` that changes the data, as plain JSON (recorded and checked on resume).

    The recipe :func:`qasa.samplers.get_sampler` attaches (backend, topology, β of ``sa``/``mock``,
    preset, physics level, device seed, solver...) and the sampler's own ``qasa_settings()`` when it
    has one (qasa's samplers do, also when built directly).
    """
    out: dict[str, Any] = {"class": f"{type(sampler).__module__}.{type(sampler).__qualname__}"}
    recipe = getattr(sampler, "qasa_recipe", None)
    if recipe is not None:
        out["recipe"] = json_safe(recipe)
    own = getattr(sampler, "qasa_settings", None)
    if callable(own):
        out["settings"] = json_safe(own())
    return out


#: How a changed sampler setting is named in an error (the CLI option that sets it).
OPTION_NAMES = {"backend": "--backend", "topology_type": "--topology", "topology_shape": "--shape",
                "beta": "--beta", "seed": "--device-seed", "preset": "--preset", "physics": "--physics",
                "solver": "--solver", "profile": "--profile", "ideal": "--ideal", "class": "the sampler class"}


def _settings_difference(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
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


def prepare(protocol: Protocol, sampler: dimod.Sampler, out: str | Path | None = None, *,
            extend: bool = False) -> Protocol:
    """Resolve and validate ``protocol`` for ``sampler`` and the output directory; no call is made.

    If ``out`` already holds a dataset, its seed and qubits fill in those left unset, and any other
    difference of the protocol or of a data-affecting sampler setting (:func:`sampler_settings`) is
    refused naming it (the dataset is left untouched). With ``extend=True`` the protocol may ask for
    more reads per h than stored, as long as every stored call keeps its id and reads (whole extra
    gauges: see :meth:`qasa.protocol.Protocol.extension_problem`).

    Raises:
        ProtocolError: the protocol cannot run on the sampler.
        DatasetError: ``out`` holds a dataset of another protocol, sampler or device.
    """
    nodelist = getattr(sampler, "nodelist", None)
    if nodelist is None and protocol.qubits is None:
        raise ProtocolError("this sampler has no nodelist; give the qubits to assess explicitly")
    store = DatasetStore(out) if out is not None else None
    if store is not None and store.exists:
        meta = store.metadata()
        stored_dict = meta.get("protocol")
        if stored_dict is None:
            raise DatasetError(f"{out} holds a dataset without a protocol (imported data); choose another directory")
        stored = Protocol.from_dict(stored_dict)
        fill = {}
        if protocol.seed is None:
            fill["seed"] = stored.seed
        if protocol.qubits is None:
            fill["qubits"] = stored.qubits
        requested = protocol.replace(**fill).resolved(nodelist or ())
        if extend and requested.reads_per_h != stored.reads_per_h:
            problem = stored.extension_problem(requested)
            if problem is not None:
                raise DatasetError(f"cannot extend {out}: {problem}")
            diff = _protocol_difference(stored.replace(reads_per_h=requested.reads_per_h), requested)
        else:
            diff = _protocol_difference(stored, requested)
        if diff is not None:
            raise DatasetError(f"{out} holds a dataset of a different protocol ({diff}); "
                               "use another output directory or the same options")
        if meta.get("sampler") is not None:
            diff = _settings_difference(meta["sampler"], sampler_settings(sampler))
            if diff is not None:
                raise DatasetError(f"{out} was collected with other sampler settings ({diff}); "
                                   "resume with the stored settings (`qasa run DIR` alone uses them) "
                                   "or use another output directory")
        solver = solver_name(sampler)
        stored_solver = (meta.get("device") or {}).get("solver")
        if stored_solver is not None and stored_solver != solver:
            raise DatasetError(f"{out} holds data from solver {stored_solver!r}, not {solver!r}")
        protocol = requested
    else:
        protocol = protocol.resolved(nodelist or ())
    validate(protocol, sampler)
    check_run_duration(protocol, sampler)
    return protocol


def check_budget_value(max_qpu_seconds: float | None) -> float | None:
    """A budget must be a finite positive number of seconds (``nan`` would switch the guard off).

    Any real number is accepted (``int``, ``float``, numpy numbers) and returned as ``float``; a
    string (``"5"``) or a bool is refused, as every other non-number, before anything is written.

    Raises:
        BudgetError: naming the value and the allowed range.
    """
    if max_qpu_seconds is None:
        return None
    if isinstance(max_qpu_seconds, (bool, np.bool_)) or not isinstance(max_qpu_seconds, numbers.Real):
        raise BudgetError(f"max_qpu_seconds={max_qpu_seconds!r} is not a number; give a finite number of seconds > 0 "
                          "(an int or a float, not a string or a bool)")
    value = float(max_qpu_seconds)
    if not (math.isfinite(value) and value > 0):
        raise BudgetError(f"max_qpu_seconds={max_qpu_seconds!r} must be a finite number of seconds > 0")
    return value


def _check_run_options(keep_samples: int, retries: int, in_flight: int, backoff: float) -> None:
    for name, value, low in (("keep_samples", keep_samples, 0), ("retries", retries, 0), ("in_flight", in_flight, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ProtocolError(f"{name}={value!r} must be an integer ≥ {low}")
    if isinstance(backoff, (bool, np.bool_)) or not isinstance(backoff, numbers.Real) or not (
            math.isfinite(backoff) and backoff >= 0):
        raise ProtocolError(f"backoff={backoff!r} must be a finite number of seconds ≥ 0")


def run(protocol: Protocol, sampler: dimod.Sampler, out: str | Path | None = None, *,
        progress: Callable[[int, int], None] | None = None, keep_samples: int = 0,
        max_qpu_seconds: float | None = None, retries: int = 3, backoff: float = 0.5,
        in_flight: int = 50, extend: bool = False, calls: Sequence[Call] | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Dataset:
    """Run ``protocol`` on ``sampler``, checkpointing each call into directory ``out``.

    Args:
        protocol: what to run; unresolved fields (qubits, seed) are filled in.
        sampler: any :class:`dimod.Sampler` (structured samplers are checked against their graph).
        out: dataset directory; ``None`` keeps everything in memory (no resume).
        progress: called as ``progress(done, total)`` after each call (and once at the start).
        keep_samples: also keep up to this many raw reads of every call (a random subset, in the
            nominal frame, as int8 in ``samples/<call_id>.npy``) for outcome-correlation analysis;
            needs ``out`` and takes the SampleSet path even on the virtual QPU (on a cloud solver
            the reads come from the answer matrix, through the same path as every cloud call).
        max_qpu_seconds: QPU-time budget for the whole dataset (earlier runs included), a finite
            number > 0. A run whose estimate exceeds it does not start; a run that reaches it stops
            before the call that would cross it, with everything collected saved
            (:class:`~qasa.cost.BudgetError`). Every answer paid for counts, also one discarded as
            bad (``metadata['discarded_answers']``); on a cloud solver the calls in flight count at
            their estimate scaled by the largest charged/estimated ratio seen, so what is spent
            stays within the budget plus one window of ``in_flight`` calls (:mod:`qasa.leap`). On a
            cloud solver (a real QPU) a run estimated above :data:`QPU_SECONDS_WITHOUT_BUDGET` needs
            an explicit budget.
        retries: attempts after a transient error (:func:`~qasa.leap.is_transient`) before giving
            up on a call; the call is then recorded in ``metadata['failures']`` and the error re-raised.
        backoff: first wait between attempts in seconds (doubled each time).
        in_flight: calls submitted at once to a cloud solver (``DWaveSampler``): their futures are
            reduced as they complete, in any order, straight from the answer matrix.
        extend: allow a larger ``reads_per_h`` than the stored dataset's (extra gauges).
        calls: run these calls instead of ``protocol.calls()`` (e.g. a round of a per-qubit design,
            :mod:`qasa.adaptive`), with the same journaling, resume and budget; ``protocol`` still
            supplies the qubits, the sampler parameters and the seed. Their ids must be unique, of
            the form ``<round>-c<5 digits>`` (recorded in ``metadata["design_rounds"]`` so that the
            dataset accepts them), and every programmed field within the sampler's ``h_range``.
        call_timeout: seconds a cloud problem may take before its answer is fetched again by its id
            (:mod:`qasa.leap`); a call still without an answer after ``retries`` such deadlines
            stops the run (its problem id is kept, so the next run fetches it without paying again).

    Returns:
        The complete :class:`~qasa.dataset.Dataset` (compacted on disk when ``out`` is given).

    Raises:
        ProtocolError, DatasetError: before any call, for bad input (nothing is written).
        BudgetError: over budget, before the first call or when the budget is reached.
    """
    max_qpu_seconds = check_budget_value(max_qpu_seconds)
    _check_run_options(keep_samples, retries, in_flight, backoff)
    check_leap_options(retries, in_flight, call_timeout)
    _check_out(out)
    requested, explicit = protocol, calls
    protocol = prepare(requested, sampler, out, extend=extend)
    rounds = None if explicit is None else _design_rounds(explicit)
    calls = protocol.calls() if explicit is None else _checked_calls(explicit, protocol, sampler)
    store = DatasetStore(out) if out is not None else None
    if store is None:
        return _run_in_memory(protocol, sampler, progress, max_qpu_seconds, retries, backoff, in_flight, calls,
                              call_timeout)
    if not store.exists:   # refuse an over-budget run before the directory is created
        _plan_budget(calls, protocol, sampler, 0.0, max_qpu_seconds)
    with store.writing():
        # again under the writer lock: another writer may have created or extended the dataset since
        # (its seed and qubits then fill in those left unset, as on any resume)
        protocol = prepare(requested, sampler, out, extend=extend)
        calls = protocol.calls() if explicit is None else _checked_calls(explicit, protocol, sampler)
        return _run_stored(protocol, sampler, store, progress, keep_samples, max_qpu_seconds, retries,
                           backoff, in_flight, calls, rounds, call_timeout)


def _check_out(out: str | Path | None) -> None:
    """An output directory is None (in memory) or a non-empty path (``""`` would mean the current directory)."""
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not str(os.fspath(out)).strip()):
        raise ProtocolError(f"output directory {out!r} must be a non-empty path (or None to keep the run in memory)")


#: Largest estimated QPU time (s) a run on a cloud solver (a real QPU) may use without an explicit budget.
QPU_SECONDS_WITHOUT_BUDGET = 10.0


def _plan_budget(todo: list[Call], protocol: Protocol, sampler: dimod.Sampler, spent: float,
                 max_qpu_seconds: float | None) -> dict[int, float | None]:
    """Estimated QPU time per call size; refuse before anything is submitted when over budget."""
    n = len(protocol.qubits or ())
    estimates = {r: estimate_call(sampler, protocol, n, r) for r in {c.num_reads for c in todo}}
    known = all(v is not None for v in estimates.values())
    needed = sum(estimates[c.num_reads] for c in todo) if known else None
    if max_qpu_seconds is None and cloud_solver(sampler) is not None and todo:
        if needed is None or needed > QPU_SECONDS_WITHOUT_BUDGET * 1e6:
            shown = "an unknown amount of" if needed is None else f"an estimated {needed / 1e6:.1f} s of"
            raise BudgetError(f"this run needs {shown} QPU time; pass --max-qpu-seconds (or set "
                              f"QASA_MAX_QPU_SECONDS, or max_qpu_seconds=) to allow it — runs over "
                              f"{QPU_SECONDS_WITHOUT_BUDGET:g} s on a QPU need an explicit budget. "
                              "Nothing was submitted.")
    if max_qpu_seconds is not None and todo and needed is not None and spent + needed > max_qpu_seconds * 1e6:
        raise BudgetError(f"the remaining {len(todo)} calls need an estimated {needed / 1e6:.2f} s of QPU time "
                          f"({spent / 1e6:.2f} s already spent); the budget is {max_qpu_seconds:g} s. "
                          "Nothing was submitted.")
    return estimates


def _device_record(protocol: Protocol, sampler: dimod.Sampler) -> dict[str, Any]:
    info = redact_obj(device_info(sampler))      # a solver's properties come from the server
    truth = getattr(sampler, "qasa_truth", None)
    if truth is not None:  # a virtual device knows what the assessment should find
        info["truth"] = truth(protocol)
    return info


def _ignored_parameters(sampler: dimod.Sampler, base: dict[str, Any], solver: str) -> list[str]:
    _, ignored = filter_parameters(sampler, base)
    requested_ignored = [k for k in ignored if k not in _ALWAYS]
    if requested_ignored:
        warnings.warn(f"{solver} does not accept {requested_ignored}; they are not sent", stacklevel=3)
    return requested_ignored


class _Budget:
    """QPU time spent so far (every answer paid for, kept or discarded) and the check before each submission.

    ``discarded`` lists the answers paid for but not counted (``metadata['discarded_answers']``);
    ``persist(discarded)``, when given, writes that list down as soon as it grows.
    """

    def __init__(self, spent: float, max_qpu_seconds: float | None, estimates: dict[int, float | None],
                 total: int, done_before: int, discarded: list[dict[str, Any]] | None = None,
                 persist: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.spent, self.limit, self.estimates = spent, max_qpu_seconds, estimates
        self.total, self.done = total, done_before
        self.discarded = list(discarded or [])
        self.persist = persist

    def check(self, call: Call, committed: float, scale: float = 1.0) -> None:
        """Raise :class:`BudgetError` if ``call`` (its estimate times ``scale``) on top of the time
        spent and ``committed`` (µs on its way) would pass the budget."""
        if self.limit is None:
            return
        if self.spent + committed + scale * (self.estimates.get(call.num_reads) or 0.0) > self.limit * 1e6:
            raise BudgetError(f"QPU-time budget reached: {self.spent / 1e6:.3f} s spent of {self.limit:g} s "
                              f"with {self.done} of {self.total} calls done; the collected data are "
                              "saved — run again with a larger budget to resume.")

    def add(self, call: Call, record: dict[str, Any]) -> None:
        used = record.get("qpu_access_time")
        self.spent += used if used is not None else (self.estimates.get(call.num_reads) or 0.0)
        self.done += 1

    def discard(self, call: Call, problem_id: str | None, us: float | None, reason: str) -> None:
        """Charge an answer paid for but not counted (``us`` None: the estimate)."""
        us = float(us) if us is not None else float(self.estimates.get(call.num_reads) or 0.0)
        self.spent += us
        self.discarded.append({"call_id": call.call_id, "problem_id": problem_id, "qpu_access_time": us,
                               "reason": reason, "time": utcnow()})
        if self.persist is not None:
            self.persist(self.discarded)


def _discarded_us(meta: dict[str, Any]) -> float:
    """QPU time (µs) of the answers paid for but not counted (``metadata['discarded_answers']``)."""
    total = 0.0
    for item in meta.get("discarded_answers") or []:
        value = item.get("qpu_access_time") if isinstance(item, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            total += float(value)
    return total


def _identity(store: DatasetStore | None) -> tuple[str, float]:
    """The dataset's random identity (made once, kept in ``metadata['dataset_id']``) and its
    creation time (epoch seconds); a fresh pair for an in-memory run or a new dataset."""
    import datetime as _dt
    import uuid

    if store is not None and store.exists:
        meta = store.metadata()
        ident = meta.get("dataset_id")
        try:
            created = _dt.datetime.fromisoformat(str(meta.get("created"))).timestamp()
        except ValueError:
            created = 0.0
        if isinstance(ident, str) and ident:
            return ident, created
        return uuid.uuid4().hex[:16], time.time()     # a dataset from before identities: one from now on
    return uuid.uuid4().hex[:16], time.time()


def _results(todo, protocol, sampler, qubits, base, budget, keep_samples, retries, backoff, in_flight,
             store: DatasetStore | None, run_record, call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
             identity: tuple[str, float] | None = None, done: set[str] | None = None):
    if cloud_solver(sampler) is not None:      # every cloud call, --in-flight 1 and --keep-samples too
        dataset_id, created = identity if identity is not None else _identity(store)
        return async_results(todo, LeapRun(
            protocol=protocol, sampler=sampler, qubits=qubits, base=base, budget=budget, dataset_id=dataset_id,
            created=created, in_flight=in_flight, retries=retries, backoff=backoff, call_timeout=call_timeout,
            in_flight_path=None if store is None else store.path / IN_FLIGHT, run_record=run_record,
            keep_samples=keep_samples, done=frozenset(done or ())))
    return _sequential_results(todo, protocol, sampler, qubits, base, keep_samples, retries, backoff, budget.check)


def _run_stored(protocol, sampler, store: DatasetStore, progress, keep_samples, max_qpu_seconds, retries,
                backoff, in_flight, calls: list[Call], rounds: dict[str, int] | None = None,
                call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Dataset:
    qubits = np.asarray(protocol.qubits, dtype=np.int64)
    existed = store.exists
    # stored data are read and validated before anything new is run (or paid for): a damaged dataset is
    # refused as it stands, and what a resume skips is exactly what loads
    stored = store.load().calls if existed else None
    done = set(stored["call_id"].astype(str)) if stored is not None else set()
    todo = [c for c in calls if c.call_id not in done]
    spent = _spent_us(stored, protocol, sampler) + _discarded_us(store.metadata()) if stored is not None else 0.0
    estimates = _plan_budget(todo, protocol, sampler, spent, max_qpu_seconds)
    base = sampler_parameters(protocol)
    if not todo and existed:           # nothing to do: a finished dataset, returned as stored
        if progress is not None:
            progress(len(calls), len(calls))
        ds = store.load()
        return _finish(store, ds, None) if store.has_journal() else ds
    run_record = {"started": utcnow(), "ignored_parameters": _ignored_parameters(sampler, base, solver_name(sampler))}
    identity = _identity(store)
    designed = {"dataset_id": identity[0]}
    if rounds:   # explicit calls: their ids become calls of this dataset (DatasetStore.validate)
        known = (store.metadata().get("design_rounds") or {}) if existed else {}
        designed["design_rounds"] = {**known, **{k: max(v, known.get(k, 0)) for k, v in rounds.items()}}
    if existed:   # the device record (and a virtual QPU's truth, which costs seconds) is made once,
        meta = store.metadata()       # again only when the protocol was extended
        extended = {"device": _device_record(protocol, sampler)} if meta.get("protocol") != protocol.to_dict() else {}
        store.update_metadata(protocol=protocol.to_dict(), runs=meta.get("runs", []) + [run_record],
                              **({} if meta.get("sampler") else {"sampler": sampler_settings(sampler)}), **designed,
                              **extended)
    else:
        store.create({"protocol": protocol.to_dict(), "sampler": sampler_settings(sampler),
                      "device": _device_record(protocol, sampler), "created": utcnow(), "runs": [run_record],
                      **designed})
    total = len(calls)
    if progress is not None:
        progress(total - len(todo), total)
    budget = _Budget(spent, max_qpu_seconds, estimates, total, total - len(todo),
                     store.metadata().get("discarded_answers"),
                     lambda discarded: store.update_metadata(discarded_answers=discarded))
    results = _results(todo, protocol, sampler, qubits, base, budget, keep_samples, retries, backoff, in_flight,
                       store, run_record, call_timeout, identity, done)
    try:
        for call, record, counts, samples in results:
            budget.add(call, record)
            if samples is not None:   # before the journal entry: a journaled call has its samples
                store.store_samples(call.call_id, samples)
            store.journal_call(record, counts)
            if progress is not None:
                progress(budget.done, total)
    except BudgetError:
        raise
    except Exception as exc:
        store.record_failure(getattr(exc, "qasa_call_id", None), redact(f"{type(exc).__name__}: {exc}"), utcnow())
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:     # an interrupted cloud run writes down its calls on their way now
            close()
    ds = store.load()
    return _finish(store, ds, run_record)


def _spent_us(calls: pd.DataFrame, protocol: Protocol, sampler: dimod.Sampler) -> float:
    """QPU time (µs) the stored calls cost: the recorded time, or the estimate where none was recorded
    (a call stored without a finite time, e.g. by an older version, was still paid for)."""
    if not len(calls):
        return 0.0
    t = (pd.to_numeric(calls["qpu_access_time"], errors="coerce").to_numpy(float) if "qpu_access_time" in calls
         else np.full(len(calls), np.nan))
    missing = ~np.isfinite(t)
    total = float(t[~missing].sum())
    if missing.any() and "num_reads" in calls:
        n = len(protocol.qubits or ())
        for reads, k in pd.Series(calls["num_reads"].to_numpy()[missing]).value_counts().items():
            total += int(k) * (estimate_call(sampler, protocol, n, int(reads)) or 0.0)
    return total


def _finish(store: DatasetStore, ds: Dataset, run_record: dict[str, Any] | None) -> Dataset:
    """Close the run record, add totals, sort and compact the dataset on disk."""
    if run_record is not None and ds.metadata.get("runs"):
        ds.metadata["runs"][-1]["finished"] = utcnow()
        for key in ("reattached_in_flight", "leap"):
            if key in run_record:
                ds.metadata["runs"][-1][key] = run_record[key]
    ds = _with_totals(ds).sorted()
    store.save(ds)
    return ds


def _run_in_memory(protocol, sampler, progress, max_qpu_seconds, retries, backoff, in_flight,
                   calls: list[Call], call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Dataset:
    qubits = np.asarray(protocol.qubits, dtype=np.int64)
    estimates = _plan_budget(calls, protocol, sampler, 0.0, max_qpu_seconds)
    base = sampler_parameters(protocol)
    info = _device_record(protocol, sampler)
    run_record = {"started": utcnow(), "ignored_parameters": _ignored_parameters(sampler, base, info["solver"])}
    budget = _Budget(0.0, max_qpu_seconds, estimates, len(calls), 0)
    if progress is not None:
        progress(0, len(calls))
    counts, records = [], []
    identity = _identity(None)
    for call, record, c, _ in _results(calls, protocol, sampler, qubits, base, budget, 0, retries, backoff,
                                       in_flight, None, run_record, call_timeout, identity):
        budget.add(call, record)
        counts.append(c)
        records.append(record)
        if progress is not None:
            progress(budget.done, len(calls))
    meta = {"protocol": protocol.to_dict(), "sampler": sampler_settings(sampler), "device": info,
            "created": run_record["started"], "dataset_id": identity[0], "runs": [{**run_record, "finished": utcnow()}],
            **({"discarded_answers": budget.discarded} if budget.discarded else {})}
    ds = Dataset(pd.concat(counts, ignore_index=True) if counts else pd.DataFrame(columns=COUNT_COLUMNS),
                 pd.DataFrame(records), meta)
    return _with_totals(ds).sorted()


def _design_rounds(calls: Sequence[Call]) -> dict[str, int]:
    """Explicit call ids are ``<round>-c<5 digits>``: the number of calls of each round."""
    rounds: dict[str, int] = {}
    for c in calls:
        prefix, sep, number = str(c.call_id).rpartition("-c")
        if not (sep and prefix and len(number) == 5 and number.isdigit()):
            raise ProtocolError(f"explicit call id {c.call_id!r} must have the form '<round>-c<5 digits>' "
                                "(e.g. 'a001-c00000')")
        rounds[prefix] = max(rounds.get(prefix, 0), int(number) + 1)
    return rounds


def _checked_calls(calls: Sequence[Call], protocol: Protocol, sampler: dimod.Sampler) -> list[Call]:
    """Explicit calls: unique ids, one flip (and field) per qubit, fields within ``h_range``."""
    calls = list(calls)
    ids = [c.call_id for c in calls]
    if len(set(ids)) != len(ids):
        raise ProtocolError("the calls to run have duplicate call ids")
    n = len(protocol.qubits or ())
    h_range = (getattr(sampler, "properties", {}) or {}).get("h_range")
    for c in calls:
        if len(c.flips) != n or (c.per_qubit and np.shape(c.h) != (n,)):
            raise ProtocolError(f"call {c.call_id} has {len(c.flips)} gauge signs and h of shape {np.shape(c.h)}; "
                                f"the protocol has {n} qubits")
        x = np.asarray(c.flips, float) * np.asarray(c.h, float)
        if not np.isfinite(x).all():
            raise ProtocolError(f"call {c.call_id} has a non-finite field")
        if h_range is not None and x.size and (x.min() < h_range[0] or x.max() > h_range[1]):
            bad = x.min() if x.min() < h_range[0] else x.max()
            raise ProtocolError(f"call {c.call_id} programs h={bad:g}, outside the sampler's h_range "
                                f"[{h_range[0]:g}, {h_range[1]:g}]")
    return calls


def _with_retries(fn: Callable[[], Any], retries: int, backoff: float) -> Any:
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            time.sleep(backoff * 2 ** attempt)
            attempt += 1


def _sequential_results(todo, protocol, sampler, qubits, base, keep_samples, retries, backoff, check_budget):
    for call in todo:
        check_budget(call, 0.0)
        try:
            record, counts, samples = _with_retries(
                lambda: _execute(call, protocol, sampler, qubits, base, keep_samples), retries, backoff)
        except Exception as exc:
            raise tag(exc, call) from None      # the same exception, with the call's id attached
        yield call, record, counts, samples


def _with_totals(ds: Dataset) -> Dataset:
    if "qpu_access_time" in ds.calls:
        ds.metadata["qpu_access_time_total_us"] = float(np.nansum(ds.calls["qpu_access_time"].to_numpy(dtype=float)))
    if ds.metadata.get("discarded_answers"):     # paid for, not counted: part of what the dataset cost
        ds.metadata["qpu_access_time_discarded_us"] = _discarded_us(ds.metadata)
    ds.metadata["num_calls"] = int(len(ds.calls))
    return ds


def _execute(call: Call, protocol: Protocol, sampler: dimod.Sampler, qubits: np.ndarray,
             base: dict[str, Any], keep_samples: int = 0) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray | None]:
    params = dict(base, **(call.params or {}), num_reads=call.num_reads,
                  label=f"qasa {call.call_id} seed {protocol.seed} call {call.index}",
                  seed=protocol.call_seed(call.index))
    params, _ = filter_parameters(sampler, params)
    started = utcnow()
    counts_path = getattr(sampler, "sample_counts", None)
    samples = None
    if counts_path is not None and not keep_samples:
        # count-level fast path (the virtual QPU): per-qubit numbers of -1 reads, no SampleSet
        variables, returned_down, info = counts_path(_Fields(qubits, call.flips * np.asarray(call.h, float)), **params)
        if not np.array_equal(variables, qubits):
            raise AnswerError("sample_counts returned qubits in another order than requested")
        returned_down = np.asarray(returned_down)
        if returned_down.shape != qubits.shape or (returned_down < 0).any() or (returned_down > call.num_reads).any():
            raise AnswerError(f"sample_counts returned counts outside [0, {call.num_reads}] or of another shape")
        n_down = undo_gauge(returned_down, call.num_reads, call.flips)
        n_up = call.num_reads - n_down
    else:
        sampleset = sampler.sample_ising(call.programmed_h(qubits), {}, **params)
        check_sampleset(sampleset, qubits, call.num_reads)
        n_down, n_up = reduce_sampleset(sampleset, qubits, call.flips)
        info = sampleset.info
        if keep_samples:
            samples = _subsample(sampleset, qubits, call.flips, keep_samples, protocol.call_seed(call.index))
    timing = info.get("timing") or {}
    record = {
        "call_id": call.call_id, "index": call.index, "h_index": call.h_index, "h": call.h_scalar,
        "gauge": call.gauge, "num_reads": call.num_reads,
        "problem_id": info.get("problem_id"),
        "started": started, "finished": utcnow(),
        "qpu_access_time": charged_us(timing, None)[0],       # a finite number ≥ 0, or None
        "timing": json.dumps(dict(timing) if isinstance(timing, Mapping) else {}, default=str),
    }
    counts = counts_frame(call, qubits, n_down, n_up + n_down)
    return record, counts, samples


class _Fields(Mapping):
    """``{qubit: programmed field}`` (what ``sample_counts`` is given), backed by two arrays.

    It is a read-only mapping like :meth:`qasa.protocol.Call.programmed_h`'s dict, built only if
    asked for; ``qasa_arrays()`` hands a sampler that knows it (qasa's virtual QPU) the arrays
    themselves, without a Python object per qubit.
    """

    __slots__ = ("_qubits", "_values", "_dict")

    def __init__(self, qubits: np.ndarray, values: np.ndarray) -> None:
        self._qubits = np.asarray(qubits, dtype=np.int64)
        self._values = np.broadcast_to(np.asarray(values, dtype=float), self._qubits.shape)
        self._dict: dict[int, float] | None = None

    def _as_dict(self) -> dict[int, float]:
        if self._dict is None:
            self._dict = dict(zip(self._qubits.tolist(), self._values.tolist()))
        return self._dict

    def __getitem__(self, qubit: int) -> float:
        return self._as_dict()[qubit]

    def __iter__(self) -> Iterator[int]:
        return iter(self._qubits.tolist())

    def __len__(self) -> int:
        return len(self._qubits)

    def qasa_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The qubits (int64) and their programmed fields (float), in the mapping's order."""
        return self._qubits, self._values


def _subsample(sampleset: dimod.SampleSet, qubits: np.ndarray, flips: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Up to ``k`` reads chosen at random (histogram rows expanded), nominal frame, int8 (reads × qubits)."""
    cols = sampleset_columns(sampleset, qubits)
    rows = np.repeat(np.arange(len(sampleset.record)), sampleset.record.num_occurrences)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(rows)[:k]
    return (sampleset.record.sample[pick][:, cols] * np.asarray(flips, dtype=np.int8)).astype(np.int8)

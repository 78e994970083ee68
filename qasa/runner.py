"""Execute a protocol on a sampler, checkpointing every call: the one run loop (:func:`collect`).

For each call of :meth:`qasa.protocol.Protocol.calls` the runner programs ``{qubit: gauge * h}``
with no couplers, samples, reduces the SampleSet to per-qubit counts of -1 and +1 in the nominal
frame (each read weighted by ``num_occurrences``, the gauge undone), and journals the counts and the
call record (timing, problem id, timestamps) atomically before the next call starts. Running again
on the same directory resumes: calls already journaled are skipped, so nothing is counted twice and
a killed process loses at most the call in flight. Calls are seeded from ``(seed, call index)``
only, so a resumed run on a seeded sampler gives exactly the counts of an uninterrupted one.

The run's life (which store, which backend and protocol, the resume and extend rules) belongs to
:class:`qasa.session.Session`; the sampler is asked everything through its
:class:`qasa.backend.Backend`. :func:`run` opens a session and calls :func:`collect`; an in-memory
run (``out=None``) goes through the same loop over a :class:`qasa.session.MemoryStore`.

A sampler that offers the counting fast path (:class:`qasa.backend.CountingSampler`:
``sample_counts(h, **params) -> (qubits, n_down, info)``, qasa's virtual QPU) is asked for counts
directly instead of a SampleSet: the same numbers without materializing every read. ``h`` is a
read-only mapping ``{qubit: programmed field}`` whose ``qasa_arrays()`` also gives the qubits and
fields as two arrays.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import warnings
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Sequence

import dimod
import numpy as np
import pandas as pd

from qasa.backend import Backend, as_backend
from qasa.cost import BudgetError
from qasa.dataset import Dataset, utcnow
from qasa.store import DatasetStore
from qasa.errors import AnswerError, ProtocolError
from qasa.protocol import Call, Protocol, call_label, parse_round_call_id
from qasa.leap import (DEFAULT_CALL_TIMEOUT, LeapRun, async_results, charged_us, check_leap_options, check_sampleset,
                        device_time, is_transient, redact, tag)
from qasa.reduce import counts_frame, reduce_sampleset, sampleset_columns, undo_gauge
from qasa.session import MemoryStore, Session

__all__ = ["run", "collect", "prepare", "reduce_sampleset", "sampler_parameters", "sampler_settings", "check_budget_value",
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


def sampler_settings(sampler: dimod.Sampler | Backend) -> dict[str, Any]:
    """Everything about ``sampler`` that changes the data (:meth:`qasa.backend.Backend.settings`)."""
    return as_backend(sampler).settings()


def prepare(protocol: Protocol, sampler: dimod.Sampler | Backend, out: str | Path | None = None, *,
            extend: bool = False) -> Protocol:
    """Resolve and validate ``protocol`` for ``sampler`` and the output directory; no call is made.

    The rules of :meth:`qasa.session.Session.open`: if ``out`` already holds a dataset, its seed and
    qubits fill in those left unset, and any other difference of the protocol or of a data-affecting
    sampler setting is refused naming it (the dataset is left untouched). With ``extend=True`` the
    protocol may ask for more reads per h than stored (whole extra gauges).

    Raises:
        ProtocolError: the protocol cannot run on the sampler.
        DatasetError: ``out`` holds a dataset of another protocol, sampler or device.
    """
    return Session.open(out, as_backend(sampler), protocol, extend=extend).protocol


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


def run(protocol: Protocol, sampler: dimod.Sampler | Backend | str, out: str | Path | None = None, *,
        progress: Callable[[int, int], None] | None = None, keep_samples: int = 0,
        max_qpu_seconds: float | None = None, retries: int = 3, backoff: float = 0.5,
        in_flight: int = 50, extend: bool = False, calls: Sequence[Call] | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Dataset:
    """Run ``protocol`` on ``sampler``, checkpointing each call into directory ``out``.

    Args:
        protocol: what to run; unresolved fields (qubits, seed) are filled in.
        sampler: any :class:`dimod.Sampler` (structured samplers are checked against their graph), a
            :class:`~qasa.backend.Backend`, or a backend name (rebuilt from the stored recipe on resume).
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
    session = Session.open(out, sampler, protocol, extend=extend)
    return collect(session, progress=progress, keep_samples=keep_samples, max_qpu_seconds=max_qpu_seconds,
                   retries=retries, backoff=backoff, in_flight=in_flight, calls=calls, call_timeout=call_timeout)


def collect(session: Session, *, progress: Callable[[int, int], None] | None = None, keep_samples: int = 0,
            max_qpu_seconds: float | None = None, retries: int = 3, backoff: float = 0.5, in_flight: int = 50,
            calls: Sequence[Call] | None = None, call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Dataset:
    """Run the calls of an open :class:`~qasa.session.Session` (arguments as :func:`run`): the one run loop.

    On a finished dataset nothing runs and the stored dataset is returned.
    """
    max_qpu_seconds = check_budget_value(max_qpu_seconds)
    _check_run_options(keep_samples, retries, in_flight, backoff)
    check_leap_options(retries, in_flight, call_timeout)
    explicit, store = calls, session.store
    rounds = None if explicit is None else _design_rounds(explicit)
    if not store.exists:   # refuse an over-budget run before the directory is created
        todo = session.protocol.calls() if explicit is None else _checked_calls(explicit, session)
        _plan_budget(todo, session, 0.0, max_qpu_seconds)
    with store.writing():
        session.resolve()   # again under the writer lock (another writer may have written since)
        todo = session.protocol.calls() if explicit is None else _checked_calls(explicit, session)
        ctx = _Run(session, keep_samples if store.path is not None else 0, retries, backoff, in_flight,
                   call_timeout, progress)
        return _run_calls(ctx, todo, max_qpu_seconds, rounds)


#: Largest estimated QPU time (s) a run on a cloud solver (a real QPU) may use without an explicit budget.
QPU_SECONDS_WITHOUT_BUDGET = 10.0


class _Run:
    """One run's context: the session (store, backend, protocol) and the run options, computed once."""

    def __init__(self, session: Session, keep_samples: int, retries: int, backoff: float, in_flight: int,
                 call_timeout: float | None, progress: Callable[[int, int], None] | None) -> None:
        self.session, self.store, self.backend = session, session.store, session.backend
        self.protocol = session.protocol
        self.keep_samples, self.retries, self.backoff = keep_samples, retries, backoff
        self.in_flight, self.call_timeout, self.progress = in_flight, call_timeout, progress
        self.qubits = np.asarray(self.protocol.qubits, dtype=np.int64)
        self.base = sampler_parameters(self.protocol)     # before filtering (the Leap path filters per call)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def _plan_budget(todo: list[Call], session: Session, spent: float,
                 max_qpu_seconds: float | None) -> dict[int, float | None]:
    """Estimated QPU time per call size; refuse before anything is submitted when over budget."""
    protocol, backend = session.protocol, session.backend
    n = len(protocol.qubits or ())
    estimates = {r: backend.estimate_call(protocol, n, r) for r in {c.num_reads for c in todo}}
    known = all(v is not None for v in estimates.values())
    needed = sum(estimates[c.num_reads] for c in todo) if known else None
    if max_qpu_seconds is None and backend.cloud_solver is not None and todo:
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


def _ignored_parameters(ctx: _Run) -> list[str]:
    _, ignored = ctx.backend.filter(ctx.base)
    requested_ignored = [k for k in ignored if k not in _ALWAYS]
    if requested_ignored:
        warnings.warn(f"{ctx.backend.name} does not accept {requested_ignored}; they are not sent", stacklevel=4)
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
        """Charge a finished call; a call that cost more than its estimate raises the estimate of
        every later call of its size to what it cost (the check before each call then uses it)."""
        used = record.get("qpu_access_time")
        estimate = self.estimates.get(call.num_reads)
        self.spent += used if used is not None else (estimate or 0.0)
        if used is not None and estimate is not None and used > estimate:
            self.estimates[call.num_reads] = float(used)
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


def _identity(store: DatasetStore | MemoryStore | None) -> tuple[str, float]:
    """The dataset's random identity (made once, kept in ``metadata['dataset_id']``) and its
    creation time (epoch seconds); a fresh pair for a new dataset (one per in-memory run)."""
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


def _spent_us(calls: pd.DataFrame, session: Session) -> float:
    """QPU time (µs) the stored calls cost: the recorded time, or the estimate where none was recorded
    (a call stored without a finite time, e.g. by an older version, was still paid for)."""
    if not len(calls):
        return 0.0
    t = (pd.to_numeric(calls["qpu_access_time"], errors="coerce").to_numpy(float) if "qpu_access_time" in calls
         else np.full(len(calls), np.nan))
    missing = ~np.isfinite(t)
    total = float(t[~missing].sum())
    if missing.any() and "num_reads" in calls:
        protocol = session.protocol
        n = len(protocol.qubits or ())
        for reads, k in pd.Series(calls["num_reads"].to_numpy()[missing]).value_counts().items():
            total += int(k) * (session.backend.estimate_call(protocol, n, int(reads)) or 0.0)
    return total


def _results(todo: list[Call], ctx: _Run, budget: _Budget, run_record: dict[str, Any],
             identity: tuple[str, float], done: set[str]):
    if ctx.backend.cloud_solver is not None:      # every cloud call, --in-flight 1 and --keep-samples too
        dataset_id, created = identity
        return async_results(todo, LeapRun(
            protocol=ctx.protocol, sampler=ctx.backend.sampler, qubits=ctx.qubits, base=ctx.base, budget=budget,
            dataset_id=dataset_id, created=created, in_flight=ctx.in_flight, retries=ctx.retries,
            backoff=ctx.backoff, call_timeout=ctx.call_timeout, store=ctx.store, run_record=run_record,
            keep_samples=ctx.keep_samples, done=frozenset(done), filter=ctx.backend.filter))
    return _sequential_results(todo, ctx, budget.check)


def _record_run(session: Session, run_record: dict[str, Any], rounds: dict[str, int] | None,
                dataset_id: str) -> None:
    """Create the dataset's metadata, or add this run (and an extended protocol's device record) to it."""
    store, protocol, backend = session.store, session.protocol, session.backend
    existed = store.exists
    designed: dict[str, Any] = {"dataset_id": dataset_id}
    if rounds:   # explicit calls: their ids become calls of this dataset (DatasetStore.validate)
        known = (store.metadata().get("design_rounds") or {}) if existed else {}
        designed["design_rounds"] = {**known, **{k: max(v, known.get(k, 0)) for k, v in rounds.items()}}
    if existed:   # the device record (and a virtual QPU's truth, which costs seconds) is made once,
        meta = store.metadata()       # again only when the protocol was extended
        extended = {"device": backend.device_record(protocol)} if meta.get("protocol") != protocol.to_dict() else {}
        store.update_metadata(protocol=protocol.to_dict(), runs=meta.get("runs", []) + [run_record],
                              **({} if meta.get("sampler") else {"sampler": backend.settings()}), **designed,
                              **extended)
    else:
        store.create({"protocol": protocol.to_dict(), "sampler": backend.settings(),
                      "device": backend.device_record(protocol), "created": utcnow(), "runs": [run_record],
                      **designed})


def _run_calls(ctx: _Run, calls: list[Call], max_qpu_seconds: float | None,
               rounds: dict[str, int] | None) -> Dataset:
    """The one run loop: skip stored calls, record the run, execute, journal each call, finish."""
    store = ctx.store
    existed = store.exists
    # stored data are read and validated before anything new is run (or paid for): a damaged dataset is
    # refused as it stands, and what a resume skips is exactly what loads
    stored = store.load().calls if existed else None
    done = set(stored["call_id"].astype(str)) if stored is not None else set()
    todo = [c for c in calls if c.call_id not in done]
    spent = _spent_us(stored, ctx.session) + _discarded_us(store.metadata()) if stored is not None else 0.0
    estimates = _plan_budget(todo, ctx.session, spent, max_qpu_seconds)
    total = len(calls)
    if not todo and existed:           # nothing to do: a finished dataset, returned as stored
        ctx.report(total, total)
        ds = store.load()
        return _finish(store, ds, None) if store.has_journal() else ds
    run_record = {"started": utcnow(), "ignored_parameters": _ignored_parameters(ctx)}
    identity = _identity(store)
    _record_run(ctx.session, run_record, rounds, identity[0])
    ctx.report(total - len(todo), total)
    budget = _Budget(spent, max_qpu_seconds, estimates, total, total - len(todo),
                     store.metadata().get("discarded_answers"),
                     lambda discarded: store.update_metadata(discarded_answers=discarded))
    results = _results(todo, ctx, budget, run_record, identity, done)
    try:
        for call, record, counts, samples in results:
            budget.add(call, record)
            if samples is not None:   # before the journal entry: a journaled call has its samples
                store.store_samples(call.call_id, samples)
            store.journal_call(record, counts)
            ctx.report(budget.done, total)
    except BudgetError:
        raise
    except Exception as exc:
        store.record_failure(getattr(exc, "qasa_call_id", None), redact(f"{type(exc).__name__}: {exc}"), utcnow())
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:     # an interrupted cloud run writes down its calls on their way now
            close()
    return _finish(store, store.load(), run_record)


def _finish(store: DatasetStore | MemoryStore, ds: Dataset, run_record: dict[str, Any] | None) -> Dataset:
    """Close the run record, add totals, sort and compact the dataset (on disk, or kept in memory)."""
    if run_record is not None and ds.metadata.get("runs"):
        ds.metadata["runs"][-1]["finished"] = utcnow()
        for key in ("reattached_in_flight", "leap"):
            if key in run_record:
                ds.metadata["runs"][-1][key] = run_record[key]
    return store.save(_with_totals(ds).sorted())      # on disk: streamed, and read back from the new file


def _design_rounds(calls: Sequence[Call]) -> dict[str, int]:
    """Explicit call ids are ``<round>-c<5 digits>``: the number of calls of each round."""
    rounds: dict[str, int] = {}
    for c in calls:
        parsed = parse_round_call_id(c.call_id)
        if parsed is None:
            raise ProtocolError(f"explicit call id {c.call_id!r} must have the form '<round>-c<5 digits>' "
                                "(e.g. 'a001-c00000')")
        prefix, number = parsed
        rounds[prefix] = max(rounds.get(prefix, 0), number + 1)
    return rounds


def _checked_calls(calls: Sequence[Call], session: Session) -> list[Call]:
    """Explicit calls: unique ids, one flip (and field) per qubit, fields within ``h_range``."""
    calls = list(calls)
    ids = [c.call_id for c in calls]
    if len(set(ids)) != len(ids):
        raise ProtocolError("the calls to run have duplicate call ids")
    n = len(session.protocol.qubits or ())
    h_range = session.backend.h_range
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


def _sequential_results(todo: list[Call], ctx: _Run, check_budget: Callable[[Call, float], None]):
    for call in todo:
        check_budget(call, 0.0)
        try:
            record, counts, samples = _with_retries(lambda: _execute(call, ctx), ctx.retries, ctx.backoff)
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


def _execute(call: Call, ctx: _Run) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray | None]:
    protocol, backend, qubits, keep_samples = ctx.protocol, ctx.backend, ctx.qubits, ctx.keep_samples
    params = dict(ctx.base, **(call.params or {}), num_reads=call.num_reads,
                  label=call_label(call, protocol.seed),
                  seed=protocol.call_seed(call.index))
    params, _ = backend.filter(params)
    started = utcnow()
    counting = backend.counting
    samples = None
    if counting is not None and not keep_samples:
        # count-level fast path (the virtual QPU): per-qubit numbers of -1 reads, no SampleSet
        variables, returned_down, info = counting.sample_counts(
            _Fields(qubits, call.flips * np.asarray(call.h, float)), **params)
        if not np.array_equal(variables, qubits):
            raise AnswerError("sample_counts returned qubits in another order than requested")
        returned_down = np.asarray(returned_down)
        if returned_down.shape != qubits.shape or (returned_down < 0).any() or (returned_down > call.num_reads).any():
            raise AnswerError(f"sample_counts returned counts outside [0, {call.num_reads}] or of another shape")
        n_down = undo_gauge(returned_down, call.num_reads, call.flips)
        n_up = call.num_reads - n_down
    else:
        sampleset = backend.sampler.sample_ising(call.programmed_h(qubits), {}, **params)
        check_sampleset(sampleset, qubits, call.num_reads)
        n_down, n_up = reduce_sampleset(sampleset, qubits, call.flips)
        info = sampleset.info
        if keep_samples:
            samples = _subsample(sampleset, qubits, call.flips, keep_samples, protocol.call_seed(call.index))
    timing = info.get("timing") or {}
    record = {
        "call_id": call.call_id, "index": call.index, "position": call.slot, "h_index": call.h_index, "h": call.h_scalar,
        "gauge": call.gauge, "num_reads": call.num_reads,
        "problem_id": info.get("problem_id"),
        "started": started, "finished": utcnow(),
        "qpu_access_time": charged_us(timing, None)[0],       # a finite number ≥ 0, or None
        "timing": json.dumps(dict(timing) if isinstance(timing, Mapping) else {}, default=str),
        "device_time": device_time(info),
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

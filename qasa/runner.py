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
read.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import dimod
import numpy as np
import pandas as pd

from qasa.cost import BudgetError, check_run_duration, estimate_call
from qasa.dataset import COUNT_COLUMNS, Dataset, utcnow
from qasa.errors import DatasetError, ProtocolError
from qasa.protocol import Call, Protocol
from qasa.leap import IN_FLIGHT, async_results, cloud_solver, is_transient, redact, tag
from qasa.reduce import counts_frame, reduce_sampleset, sampleset_columns, undo_gauge
from qasa.samplers import device_info, filter_parameters, validate

__all__ = ["run", "prepare", "reduce_sampleset", "sampler_parameters", "is_transient", "redact"]

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


def prepare(protocol: Protocol, sampler: dimod.Sampler, out: str | Path | None = None) -> Protocol:
    """Resolve and validate ``protocol`` for ``sampler`` and the output directory; no call is made.

    If ``out`` already holds a dataset, its seed and qubits fill in those left unset, and any other
    difference is an error (the dataset is left untouched).

    Raises:
        ProtocolError: the protocol cannot run on the sampler.
        DatasetError: ``out`` holds a dataset of another protocol or device.
    """
    nodelist = getattr(sampler, "nodelist", None)
    if nodelist is None and protocol.qubits is None:
        raise ProtocolError("this sampler has no nodelist; give the qubits to assess explicitly")
    if out is not None and (Path(out) / "metadata.json").is_file():
        meta = json.loads((Path(out) / "metadata.json").read_text())
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
        diff = _protocol_difference(stored, requested)
        if diff is not None:
            raise DatasetError(f"{out} holds a dataset of a different protocol ({diff}); "
                               "use another output directory or the same options")
        solver = device_info(sampler)["solver"]
        stored_solver = (meta.get("device") or {}).get("solver")
        if stored_solver is not None and stored_solver != solver:
            raise DatasetError(f"{out} holds data from solver {stored_solver!r}, not {solver!r}")
        protocol = requested
    else:
        protocol = protocol.resolved(nodelist or ())
    validate(protocol, sampler)
    check_run_duration(protocol, sampler)
    return protocol


def run(protocol: Protocol, sampler: dimod.Sampler, out: str | Path | None = None, *,
        progress: Callable[[int, int], None] | None = None, keep_samples: int = 0,
        max_qpu_seconds: float | None = None, retries: int = 3, backoff: float = 0.5,
        in_flight: int = 50, calls: Sequence[Call] | None = None) -> Dataset:
    """Run ``protocol`` on ``sampler``, checkpointing each call into directory ``out``.

    Args:
        protocol: what to run; unresolved fields (qubits, seed) are filled in.
        sampler: any :class:`dimod.Sampler` (structured samplers are checked against their graph).
        out: dataset directory; ``None`` keeps everything in memory (no resume).
        progress: called as ``progress(done, total)`` after each call (and once at the start).
        keep_samples: also keep up to this many raw reads of every call (a random subset, in the
            nominal frame, as int8 in ``samples/<call_id>.npy``) for outcome-correlation analysis;
            needs ``out`` and takes the SampleSet path even on the virtual QPU.
        max_qpu_seconds: QPU-time budget for the whole dataset (earlier runs included). A run whose
            estimate exceeds it does not start; a run that reaches it stops before the call that
            would cross it, with everything collected saved (:class:`~qasa.cost.BudgetError`).
        retries: attempts after a transient error (:func:`is_transient`) before giving up on a
            call; the call is then recorded in ``metadata['failures']`` and the error re-raised.
        backoff: first wait between attempts in seconds (doubled each time).
        in_flight: calls submitted at once to a cloud solver (``DWaveSampler``): their futures are
            reduced as they complete, in any order, straight from the answer matrix.
        calls: run these calls instead of ``protocol.calls()`` (e.g. a round of a per-qubit design,
            :mod:`qasa.adaptive`), with the same journaling, resume and budget; ``protocol`` still
            supplies the qubits, the sampler parameters and the seed. Their ids must be unique and
            every programmed field within the sampler's ``h_range``.

    Returns:
        The complete :class:`~qasa.dataset.Dataset` (compacted on disk when ``out`` is given).

    Raises:
        ProtocolError, DatasetError: before any call, for bad input (nothing is written).
        BudgetError: over budget, before the first call or when the budget is reached.
    """
    protocol = prepare(protocol, sampler, out)
    calls = protocol.calls() if calls is None else _checked_calls(calls, protocol, sampler)
    qubits = np.asarray(protocol.qubits, dtype=np.int64)
    existing = Dataset.load(out) if out is not None and (Path(out) / "metadata.json").is_file() else None
    done = existing.call_ids if existing is not None else set()
    spent = _spent_us(existing)
    todo = [c for c in calls if c.call_id not in done]
    estimates = {n: estimate_call(sampler, protocol, len(qubits), n) for n in {c.num_reads for c in todo}}
    if max_qpu_seconds is not None and todo and all(v is not None for v in estimates.values()):
        needed = sum(estimates[c.num_reads] for c in todo)
        if spent + needed > max_qpu_seconds * 1e6:
            raise BudgetError(f"the remaining {len(todo)} calls need an estimated {needed / 1e6:.2f} s of QPU time "
                              f"({spent / 1e6:.2f} s already spent); the budget is {max_qpu_seconds:g} s. "
                              "Nothing was submitted.")
    info = device_info(sampler)
    truth = getattr(sampler, "qasa_truth", None)
    if truth is not None:  # a virtual device knows what the assessment should find
        info["truth"] = truth(protocol)
    base = sampler_parameters(protocol)
    _, ignored = filter_parameters(sampler, base)
    requested_ignored = [k for k in ignored if k not in _ALWAYS]
    if requested_ignored:
        warnings.warn(f"{info['solver']} does not accept {requested_ignored}; they are not sent",
                      stacklevel=2)
    run_record = {"started": utcnow(), "ignored_parameters": requested_ignored}

    memory_counts: list[pd.DataFrame] = []
    memory_calls: list[dict[str, Any]] = []
    if out is not None:
        out = Path(out)
        if existing is not None:
            runs = existing.metadata.get("runs", [])
        else:
            runs = []
            Dataset.create(out, {"protocol": protocol.to_dict(), "device": info, "created": utcnow(),
                                 "runs": []})
        Dataset.update_metadata(out, runs=runs + [run_record])
    total = len(calls)
    if progress is not None:
        progress(total - len(todo), total)
    state = {"spent": spent}

    def check_budget(call: Call, committed: float) -> None:
        if max_qpu_seconds is None:
            return
        if state["spent"] + committed + (estimates.get(call.num_reads) or 0.0) > max_qpu_seconds * 1e6:
            raise BudgetError(f"QPU-time budget reached: {state['spent'] / 1e6:.3f} s spent of {max_qpu_seconds:g} s "
                              f"with {total - len(todo) + finished[0]} of {total} calls done; the collected data are "
                              "saved — run again with a larger budget to resume.")

    finished = [0]
    if cloud_solver(sampler) is not None and in_flight > 1 and not keep_samples:
        results = async_results(todo, protocol, sampler, qubits, base, in_flight, retries, backoff, check_budget,
                                 estimates, None if out is None else out / IN_FLIGHT, run_record)
    else:
        results = _sequential_results(todo, protocol, sampler, qubits, base, keep_samples if out else 0,
                                      retries, backoff, check_budget)
    try:
        for call, record, counts, samples in results:
            state["spent"] += (record["qpu_access_time"] if record["qpu_access_time"] is not None
                               else (estimates.get(call.num_reads) or 0.0))
            if out is not None:
                if samples is not None:   # before the journal entry: a journaled call has its samples
                    Dataset.store_samples(out, call.call_id, samples)
                Dataset.journal_call(out, record, counts)
            else:
                memory_counts.append(counts)
                memory_calls.append(record)
            finished[0] += 1
            if progress is not None:
                progress(total - len(todo) + finished[0], total)
    except BudgetError:
        raise
    except Exception as exc:
        if out is not None:
            failures = json.loads((out / "metadata.json").read_text()).get("failures", [])
            failures.append({"call_id": getattr(exc, "qasa_call_id", None), "time": utcnow(),
                             "error": redact(f"{type(exc).__name__}: {exc}")})
            Dataset.update_metadata(out, failures=failures)
        raise

    if out is None:
        meta = {"protocol": protocol.to_dict(), "device": info, "created": run_record["started"],
                "runs": [{**run_record, "finished": utcnow()}]}
        counts = pd.concat(memory_counts, ignore_index=True) if memory_counts else None
        ds = Dataset(counts if counts is not None else pd.DataFrame(columns=COUNT_COLUMNS),
                     pd.DataFrame(memory_calls), meta)
        return _with_totals(ds).sorted()
    ds = Dataset.load(out)
    ds.metadata["runs"][-1]["finished"] = utcnow()
    if "reattached_in_flight" in run_record:
        ds.metadata["runs"][-1]["reattached_in_flight"] = run_record["reattached_in_flight"]
    ds = _with_totals(ds).sorted()
    ds.save(out)
    return ds


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


def _spent_us(ds: Dataset | None) -> float:
    if ds is None or "qpu_access_time" not in ds.calls:
        return 0.0
    return float(np.nansum(ds.calls["qpu_access_time"].to_numpy(dtype=float)))


def _with_retries(fn: Callable[[], Any], retries: int, backoff: float) -> Any:
    import time

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
            raise tag(exc, call)
        yield call, record, counts, samples


def _with_totals(ds: Dataset) -> Dataset:
    if "qpu_access_time" in ds.calls:
        ds.metadata["qpu_access_time_total_us"] = float(np.nansum(ds.calls["qpu_access_time"].to_numpy(dtype=float)))
    ds.metadata["num_calls"] = int(len(ds.calls))
    return ds


def _execute(call: Call, protocol: Protocol, sampler: dimod.Sampler, qubits: np.ndarray,
             base: dict[str, Any], keep_samples: int = 0) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray | None]:
    params = dict(base, num_reads=call.num_reads, label=f"qasa {call.call_id}",
                  seed=protocol.call_seed(call.index))
    params, _ = filter_parameters(sampler, params)
    started = utcnow()
    counts_path = getattr(sampler, "sample_counts", None)
    samples = None
    if counts_path is not None and not keep_samples:
        # count-level fast path (the virtual QPU): per-qubit numbers of -1 reads, no SampleSet
        variables, returned_down, info = counts_path(call.programmed_h(qubits), **params)
        if not np.array_equal(variables, qubits):
            raise RuntimeError("sample_counts returned qubits in another order than requested")
        n_down = undo_gauge(returned_down, call.num_reads, call.flips)
        n_up = call.num_reads - n_down
    else:
        sampleset = sampler.sample_ising(call.programmed_h(qubits), {}, **params)
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
        "qpu_access_time": float(timing["qpu_access_time"]) if "qpu_access_time" in timing else None,
        "timing": json.dumps(timing, default=float),
    }
    counts = counts_frame(call, qubits, n_down, n_up + n_down)
    return record, counts, samples


def _subsample(sampleset: dimod.SampleSet, qubits: np.ndarray, flips: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Up to ``k`` reads chosen at random (histogram rows expanded), nominal frame, int8 (reads × qubits)."""
    cols = sampleset_columns(sampleset, qubits)
    rows = np.repeat(np.arange(len(sampleset.record)), sampleset.record.num_occurrences)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(rows)[:k]
    return (sampleset.record.sample[pick][:, cols] * np.asarray(flips, dtype=np.int8)).astype(np.int8)

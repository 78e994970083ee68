"""Asynchronous submission to a D-Wave cloud solver (Leap), with retries and re-attachment.

A ``DWaveSampler`` wraps a dwave-cloud-client solver; qasa submits up to ``in_flight`` problems at
once through it, reduces each answer straight from the answer matrix (``return_matrix``), retries
transient errors with backoff, and keeps the SAPI problem ids of the calls in flight in
``in_flight.json`` so that a crashed run re-attaches to them instead of paying again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dimod
import numpy as np

from qasa.cost import BudgetError
from qasa.dataset import atomic_write_json, utcnow
from qasa.protocol import Call
from qasa.reduce import count_down, counts_frame, undo_gauge
from qasa.samplers import filter_parameters

__all__ = ["cloud_solver", "async_results", "is_transient", "redact", "tag", "IN_FLIGHT"]


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: dropped connections, timeouts, and server-side (5xx) SAPI errors."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    code = getattr(exc, "error_code", None)
    if isinstance(code, int) and 500 <= code < 600:
        return True
    if type(exc).__name__ in ("RequestTimeout", "PollingTimeout", "ProblemUploadError"):
        return True
    try:
        import requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    except ImportError:  # pragma: no cover - requests comes with dwave-cloud-client
        return False


def redact(text: str) -> str:
    """Remove any configured Leap token from a message before it is stored or printed."""
    try:
        from dwave.cloud.config import load_config

        token = load_config().get("token")
    except Exception:
        token = None
    return text.replace(token, "<token>") if token else text


def cloud_solver(sampler: dimod.Sampler):
    """The dwave-cloud-client solver behind a ``DWaveSampler`` (asynchronous submission), or None."""
    solver = getattr(sampler, "solver", None)
    return solver if solver is not None and hasattr(solver, "sample_ising") and hasattr(solver, "client") else None


def tag(exc: BaseException, call: Call) -> BaseException:
    """Attach the failing call's id to an exception (recorded in ``metadata['failures']``)."""
    exc.qasa_call_id = call.call_id  # type: ignore[attr-defined]
    return exc


IN_FLIGHT = "in_flight.json"


def async_results(todo, protocol, sampler, qubits, base, in_flight, retries, backoff, check_budget, est,
                   in_flight_path: Path | None = None, run_record: dict | None = None):
    """Keep up to ``in_flight`` calls submitted; yield each as it completes (any order).

    Transient failures are resubmitted (same call id and label, nothing counted twice); when the
    budget allows no further submission, the calls in flight are finished first. The SAPI problem
    ids of the calls in flight are kept in ``in_flight.json`` (refreshed every 50 ms): after a crash,
    the next run fetches those answers by id (``Client.retrieve_answer``) instead of paying for the
    problems again, and resubmits only if that fails.
    """
    import time

    from dwave.cloud.computation import Future

    solver = cloud_solver(sampler)
    recovered: dict[str, str] = {}
    if in_flight_path is not None and in_flight_path.is_file():
        try:
            recovered = json.loads(in_flight_path.read_text())
        except (OSError, json.JSONDecodeError):
            recovered = {}
    reattached = 0
    written: dict[str, str] = {}

    def remember() -> None:
        if in_flight_path is None:
            return
        current = {c.call_id: f.id for f, (c, _, _) in pending.items() if getattr(f, "id", None)}
        if current != written:
            atomic_write_json(in_flight_path, current)
            written.clear()
            written.update(current)
    previous = solver.return_matrix
    solver.return_matrix = True           # answers as numpy matrices: no per-sample decoding
    queue = list(todo)
    pending: dict[Any, tuple[Call, int, str]] = {}
    budget_error: BudgetError | None = None

    def submit(call: Call, attempt: int) -> None:
        nonlocal reattached
        if attempt == 0 and call.call_id in recovered:
            fut = solver.client.retrieve_answer(recovered.pop(call.call_id))
            pending[fut] = (call, -1, utcnow())       # attempt -1: a re-attached answer
            reattached += 1
            return
        params = dict(base, num_reads=call.num_reads, label=f"qasa {call.call_id}")
        params, _ = filter_parameters(sampler, params)
        label = params.pop("label", None)
        fut = solver.sample_ising(call.programmed_h(qubits), {}, label=label, **params)
        pending[fut] = (call, attempt, utcnow())

    try:
        while queue or pending:
            while queue and len(pending) < in_flight and budget_error is None:
                committed = sum(est.get(c.num_reads) or 0.0 for c, _, _ in pending.values())
                try:
                    check_budget(queue[0], committed)
                except BudgetError as exc:
                    budget_error = exc
                    break
                submit(queue.pop(0), 0)
            if not pending:
                break
            done, _ = Future.wait_multiple(list(pending), min_done=1, timeout=0.05)
            remember()
            for fut in done:
                call, attempt, started = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:
                    if attempt < 0:                   # the old answer is gone: pay for it again
                        submit(call, 1)
                        continue
                    if attempt < retries and is_transient(exc):
                        time.sleep(backoff * 2 ** attempt)
                        submit(call, attempt + 1)
                        continue
                    raise tag(exc, call)
                # the answer matrix has one column per qubit label
                returned, reads = count_down(np.asarray(result["solutions"]), result.get("num_occurrences"), qubits)
                n_down = undo_gauge(returned, reads, call.flips)
                timing = dict(result.get("timing") or getattr(fut, "timing", {}) or {})
                record = {"call_id": call.call_id, "index": call.index, "h_index": call.h_index, "h": call.h_scalar,
                          "gauge": call.gauge, "num_reads": call.num_reads, "problem_id": fut.id,
                          "started": started, "finished": utcnow(),
                          "qpu_access_time": float(timing["qpu_access_time"]) if "qpu_access_time" in timing else None,
                          "timing": json.dumps(timing, default=float)}
                counts = counts_frame(call, qubits, n_down, reads)
                yield call, record, counts, None
    finally:
        solver.return_matrix = previous
        if run_record is not None:
            run_record["reattached_in_flight"] = reattached
        for fut in pending:
            try:
                fut.cancel()
            except Exception:
                pass
    if in_flight_path is not None and not pending and in_flight_path.is_file():
        in_flight_path.unlink()
    if budget_error is not None:
        raise budget_error

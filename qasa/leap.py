"""Asynchronous submission to a D-Wave cloud solver (Leap): checked answers, retries, re-attachment.

A ``DWaveSampler`` wraps a dwave-cloud-client solver; qasa submits up to ``in_flight`` problems at
once through it and reduces each answer straight from the answer matrix (``return_matrix``).

Nothing is counted before it is checked (:func:`check_answer`): the answer must hold exactly the
active qubits requested, ``num_reads`` reads (the sum of ``num_occurrences``) and values in
{-1, +1}. A bad answer is a failed call, never stored.

Failures and what they cost (every retry waits ``backoff · 2^k`` seconds, or the server's
``Retry-After`` when the client passes it on; at most ``retries`` retries per call):

- the problem has a SAPI id (it was accepted) and its answer did not arrive, arrived malformed, or
  did not arrive within ``call_timeout`` seconds: the answer is fetched again **by its id**
  (``Client.retrieve_answer``) — no QPU time is paid again;
- the submission itself failed without an id (dropped connection, a server slower than the
  request timeout, a malformed reply): the problem may still have been accepted, so it is looked
  up by its label (``qasa <call id> seed <protocol seed>``, submitted during this run and not yet
  counted) and re-attached if found; only if it is not found is the call submitted again;
- an answer whose content is wrong even when fetched again: the call is submitted again;
- 429 (rate limit), 408 and 5xx, timeouts and dropped connections are transient; 400, 401, 403,
  404 and a FAILED problem are not: the run stops with one clear error (:class:`LeapError`) after
  the calls still in flight have finished and been saved.

The SAPI ids of the calls in flight are kept in ``in_flight.json``; after a crash, or a call that
never completed, the next run fetches those answers by id instead of paying again.
"""

from __future__ import annotations

import binascii
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import dimod
import numpy as np

from qasa.cost import BudgetError
from qasa.dataset import utcnow
from qasa.errors import AnswerError, LeapError, ProtocolError, QasaError, SamplerError
from qasa.protocol import Call, filter_parameters
from qasa.redact import redact, register
from qasa.reduce import count_down, counts_frame, undo_gauge

__all__ = ["cloud_solver", "async_results", "is_transient", "redact", "tag", "IN_FLIGHT", "check_answer",
           "check_sampleset", "check_leap_options", "open_dwave_sampler", "retry_delay", "failure_kind",
           "DEFAULT_CALL_TIMEOUT", "MAX_RETRIES", "MAX_IN_FLIGHT"]

IN_FLIGHT = "in_flight.json"

#: Seconds a submitted problem may take before its answer is fetched again by id.
DEFAULT_CALL_TIMEOUT = 600.0
#: Bounds of the retry and concurrency options.
MAX_RETRIES = 100
MAX_IN_FLIGHT = 1000
#: Longest wait between two attempts, whatever a Retry-After header asks (seconds).
MAX_RETRY_WAIT = 300.0


# -- options --------------------------------------------------------------------------------------
def check_leap_options(retries: Any = 3, in_flight: Any = 50, call_timeout: Any = DEFAULT_CALL_TIMEOUT) -> None:
    """Refuse the bounds of the cloud options (the runner checks they are non-negative integers):
    ``retries`` at most :data:`MAX_RETRIES`, ``in_flight`` at most :data:`MAX_IN_FLIGHT`, and
    ``call_timeout`` None or a finite number of seconds > 0.

    Raises:
        ProtocolError: naming the option, the value and the allowed range.
    """
    if isinstance(retries, (int, np.integer)) and retries > MAX_RETRIES:
        raise ProtocolError(f"retries={retries!r} must be an integer in [0, {MAX_RETRIES}]")
    if isinstance(in_flight, (int, np.integer)) and in_flight > MAX_IN_FLIGHT:
        raise ProtocolError(f"in_flight={in_flight!r} must be an integer in [1, {MAX_IN_FLIGHT}]")
    if call_timeout is not None and not (isinstance(call_timeout, (int, float, np.integer, np.floating))
                                         and not isinstance(call_timeout, bool)
                                         and math.isfinite(call_timeout) and call_timeout > 0):
        raise ProtocolError(f"call_timeout={call_timeout!r} must be a finite number of seconds > 0")


# -- failures -------------------------------------------------------------------------------------
def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "error_code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: dropped connections, timeouts, rate limits (429, 408), server-side
    (5xx) SAPI errors, and answers that were malformed or did not hold what was asked."""
    if isinstance(exc, (ConnectionError, TimeoutError, AnswerError, _Deadline)):
        return True
    code = _error_code(exc)
    if isinstance(code, int) and (500 <= code < 600 or code in (408, 429)):
        return True
    if type(exc).__name__ in ("RequestTimeout", "PollingTimeout", "ProblemUploadError", "Timeout",
                              "ResourceLimitsExceededError", "InternalServerError"):
        return True
    try:
        import requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    except ImportError:  # pragma: no cover - requests comes with dwave-cloud-client
        return False


def failure_kind(exc: BaseException) -> str:
    """``"answer"`` (malformed or wrong answer), ``"transient"`` or ``"fatal"``."""
    if isinstance(exc, AnswerError):
        return "answer"
    if type(exc).__name__ in ("InvalidAPIResponseError", "ResourceBadResponseError") or isinstance(
            exc, (json.JSONDecodeError, binascii.Error)):
        return "answer"
    if is_transient(exc):
        return "transient"
    if isinstance(exc, (ValueError, KeyError, IndexError, TypeError)) and not isinstance(exc, QasaError):
        return "answer"                  # the answer could not be decoded
    return "fatal"


def retry_delay(exc: BaseException | None, backoff: float, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (from 1): ``backoff · 2^(attempt-1)``, or the server's
    ``Retry-After`` (seconds) when the exception carries the response, whichever is longer."""
    delay = backoff * 2 ** max(attempt - 1, 0)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    after = getattr(exc, "retry_after", None) or headers.get("Retry-After")
    try:
        if after is not None:
            delay = max(delay, float(after))
    except (TypeError, ValueError):
        pass
    return min(delay, MAX_RETRY_WAIT)


class _Deadline(TimeoutError):
    """A problem did not complete within ``call_timeout`` seconds."""


def tag(exc: BaseException, call: Call) -> BaseException:
    """Attach the failing call's id to an exception (recorded in ``metadata['failures']``)."""
    exc.qasa_call_id = call.call_id  # type: ignore[attr-defined]
    return exc


# -- answers --------------------------------------------------------------------------------------
def check_answer(result: dict, qubits: np.ndarray, num_reads: int, where: str = "the answer") -> tuple[np.ndarray, Any]:
    """Check a SAPI answer (``return_matrix`` form) and return ``(samples of the qubits, occurrences)``.

    Raises:
        AnswerError: the answer leaves out a requested qubit or holds one that was not requested,
            holds another number of reads than ``num_reads`` (the sum of ``num_occurrences``), or
            a value other than -1 and +1 on a requested qubit.
    """
    try:
        solutions = np.asarray(result["solutions"])
    except (KeyError, TypeError) as exc:
        raise AnswerError(f"{where} has no solutions ({type(exc).__name__})") from None
    if solutions.ndim != 2:
        raise AnswerError(f"{where} is not a matrix of reads (shape {solutions.shape})")
    qubits = np.asarray(qubits, dtype=np.int64)
    active = result.get("active_variables")
    if active is not None:
        active = set(np.asarray(active, dtype=np.int64).tolist())
        missing = sorted(set(qubits.tolist()) - active)
        if missing:
            raise AnswerError(f"{where} leaves out {len(missing)} of the {len(qubits)} requested qubits "
                              f"(first: qubit {missing[0]})")
        extra = sorted(active - set(qubits.tolist()))
        if extra:
            raise AnswerError(f"{where} holds {len(extra)} variables that were not requested (first: {extra[0]})")
    if len(qubits) and qubits.max() >= solutions.shape[1]:
        raise AnswerError(f"{where} has {solutions.shape[1]} columns; qubit {int(qubits.max())} is not among them")
    occurrences = result.get("num_occurrences")
    if occurrences is not None:
        occ = np.asarray(occurrences)
        if occ.shape != (solutions.shape[0],) or not np.issubdtype(occ.dtype, np.integer) or (occ < 1).any():
            raise AnswerError(f"{where} has malformed num_occurrences (shape {occ.shape}, "
                              f"{len(solutions)} rows; each must be a positive integer)")
        reads = int(occ.sum())
        if (occ == 1).all():
            occurrences = None
    else:
        reads = int(solutions.shape[0])
    if reads != num_reads:
        raise AnswerError(f"{where} holds {reads} reads; {num_reads} were requested")
    samples = solutions[:, qubits]
    bad = samples * samples != 1
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise AnswerError(f"{where} holds the value {int(samples[row, col])} for qubit {int(qubits[col])}; "
                          "spins must be -1 or +1")
    return samples, occurrences


def check_sampleset(sampleset: dimod.SampleSet, qubits: np.ndarray, num_reads: int,
                    where: str = "the sampler's answer") -> None:
    """The same checks as :func:`check_answer` on a :class:`dimod.SampleSet`."""
    if sampleset.vartype is not dimod.SPIN:
        raise AnswerError(f"{where} is {sampleset.vartype.name}, not SPIN, for an Ising problem")
    variables = sampleset.variables
    missing = [int(q) for q in qubits if int(q) not in variables]
    if missing:
        raise AnswerError(f"{where} leaves out {len(missing)} of the {len(qubits)} requested qubits "
                          f"(first: qubit {missing[0]})")
    reads = int(np.sum(sampleset.record.num_occurrences))
    if reads != num_reads:
        raise AnswerError(f"{where} holds {reads} reads; {num_reads} were requested")
    values = sampleset.record.sample
    if values.size and not np.isin(values, (-1, 1)).all():
        raise AnswerError(f"{where} holds values other than -1 and +1")


# -- opening the solver ---------------------------------------------------------------------------
def open_dwave_sampler(solver: Any = None, profile: str | None = None, retries: int = 3, backoff: float = 0.5,
                       **config: Any):
    """A ``DWaveSampler``, retrying transient errors (5xx, 429, timeouts) while the solver is opened.

    Raises:
        SamplerError: the solver does not exist, or the service refused or kept failing.
    """
    from dwave.cloud.exceptions import SolverNotFoundError
    from dwave.system import DWaveSampler

    attempt = 0
    while True:
        try:
            sampler = DWaveSampler(solver=solver, profile=profile, **config)
        except SolverNotFoundError as exc:
            raise SamplerError(f"solver {solver!r} not found or not available to this account: "
                               f"{redact(exc)}") from None
        except Exception as exc:
            if attempt < retries and is_transient(exc):
                attempt += 1
                time.sleep(retry_delay(exc, backoff, attempt))
                continue
            tried = f" after {attempt} retries" if attempt else ""
            which = f"solver {solver!r}" if solver is not None else "the default solver of the configuration"
            raise SamplerError(f"cannot open the QPU {which}{tried}: {type(exc).__name__}: "
                               f"{redact(exc)}") from None
        register(getattr(getattr(sampler.solver.client, "config", None), "token", None))
        return sampler


def cloud_solver(sampler: dimod.Sampler):
    """The dwave-cloud-client solver behind a ``DWaveSampler`` (asynchronous submission), or None."""
    solver = getattr(sampler, "solver", None)
    return solver if solver is not None and hasattr(solver, "sample_ising") and hasattr(solver, "client") else None


def _find_by_label(solver, label: str, since: float, exclude: set[str]) -> str | None:
    """The id of a problem submitted with ``label`` during this run (not failed, cancelled or already
    counted; submitted at most an hour before ``since``, a margin for clock skew), or None."""
    from dwave.cloud.api import Problems

    try:
        with Problems.from_config(solver.client.config) as api:
            found = api.list_problems(label=label, max_results=10)
    except Exception as exc:
        if is_transient(exc):
            raise
        return None                     # listing not supported or refused: resubmit
    usable = [p for p in found if p.label == label and p.id not in exclude
              and str(getattr(p.status, "value", p.status)) not in ("FAILED", "CANCELLED")
              and p.submitted_on.timestamp() >= since - 3600]
    usable.sort(key=lambda p: (str(getattr(p.status, "value", p.status)) != "COMPLETED", -p.submitted_on.timestamp()))
    return usable[0].id if usable else None


# -- the asynchronous loop ------------------------------------------------------------------------
@dataclass
class _Job:
    """One call on its way: attempts used, how its current future was obtained, its problem id."""

    call: Call
    started: str
    attempt: int = 0
    how: str = "submit"          # submit | refetch | lookup | recovered
    since: float = 0.0
    problem_id: str | None = None
    submitted: int = 0


def async_results(todo, protocol, sampler, qubits, base, in_flight, retries, backoff, check_budget, est,
                  store: Any = None, run_record: dict | None = None,
                  call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Iterator[tuple]:
    """Keep up to ``in_flight`` calls submitted; yield each as it completes (any order), checked.

    See the module docstring for what is retried and how. When the budget allows no further
    submission, or a call failed for good, the calls in flight are finished (and saved) first; then
    :class:`~qasa.cost.BudgetError` or :class:`~qasa.errors.LeapError` is raised.
    """
    from dwave.cloud.computation import Future

    solver = cloud_solver(sampler)
    register(getattr(getattr(solver.client, "config", None), "token", None))
    run_started = time.time()
    counted: set[str] = set()
    recovered: dict[str, str] = {}
    if store is not None:          # the dataset's store (or a MemoryStore) owns in_flight.json
        recovered = store.in_flight()
    stats = {"reattached_in_flight": 0, "retries": 0, "fetched_again_by_id": 0, "found_by_label": 0,
             "submissions": 0}
    written: dict[str, str] = {}
    keep: dict[str, str] = {}                  # calls given up whose problem may still complete
    pending: dict[Any, _Job] = {}
    waiting: list[tuple[float, _Job, str]] = []
    queue = list(todo)
    state: dict[str, BaseException | None] = {"fatal": None, "budget": None}

    def remember() -> None:
        if store is None:
            return
        current = dict(keep)
        for fut, job in pending.items():
            pid = getattr(fut, "id", None) or job.problem_id
            if pid:
                current[job.call.call_id] = pid
        for _, job, _ in waiting:
            if job.problem_id:
                current[job.call.call_id] = job.problem_id
        if current != written:
            store.set_in_flight(current)
            written.clear()
            written.update(current)

    def committed() -> float:
        """Estimated QPU time of the calls submitted or about to be retried (not yet counted)."""
        return sum(est.get(j.call.num_reads) or 0.0 for j in [*pending.values(), *(w[1] for w in waiting)])

    def label(call: Call) -> str:
        return f"qasa {call.call_id} seed {protocol.seed}"

    def start(job: _Job, action: str) -> None:
        if action == "lookup":
            pid = _find_by_label(solver, label(job.call), run_started, counted)
            if pid is not None:
                job.problem_id = pid
                stats["found_by_label"] += 1
                action = "refetch"
            else:
                action = "submit"
        if action in ("refetch", "recovered"):
            fut = solver.client.retrieve_answer(job.problem_id)
            if action == "refetch":
                stats["fetched_again_by_id"] += 1
        else:
            params = dict(base, num_reads=job.call.num_reads)
            params, _ = filter_parameters(sampler, params)
            params.pop("label", None)
            job.problem_id = None
            fut = solver.sample_ising(job.call.programmed_h(qubits), {}, label=label(job.call), **params)
            job.submitted += 1
            stats["submissions"] += 1
        job.how, job.since = action, time.monotonic()
        pending[fut] = job

    def give_up(job: _Job, exc: BaseException, kind: str) -> None:
        call = job.call
        pid = job.problem_id
        if kind == "deadline" and pid:
            keep[call.call_id] = pid
            message = (f"call {call.call_id}: problem {pid} did not complete within {call_timeout:g} s "
                       f"(fetched again by its id {job.attempt} times); its id is kept in {IN_FLIGHT}: run "
                       "again to fetch its answer without paying again")
        elif kind == "fatal":
            message = (f"call {call.call_id}: the QPU service refused "
                       f"{'problem ' + pid if pid else 'the submission'}: {type(exc).__name__}: {redact(exc)}")
        else:
            message = (f"call {call.call_id} failed after {job.attempt} retries ({job.submitted} submissions); "
                       f"last error: {type(exc).__name__}: {redact(exc)}")
        if state["fatal"] is None:
            state["fatal"] = tag(LeapError(message), call)

    def failed(job: _Job, exc: BaseException, fut: Any = None) -> None:
        pid = getattr(fut, "id", None) if fut is not None else None
        if pid:
            job.problem_id = pid
        kind = "deadline" if isinstance(exc, _Deadline) else failure_kind(exc)
        if job.how == "recovered" and kind == "fatal":   # the old problem is gone (failed, cancelled,
            job.problem_id = None                        # unknown): pay for the call again
            waiting.append((time.monotonic(), job, "submit"))
            return
        if state["fatal"] is not None:          # draining: no more retries
            if job.problem_id:
                keep[job.call.call_id] = job.problem_id
            return
        if kind == "fatal" or job.attempt >= retries:
            give_up(job, exc, kind)
            return
        job.attempt += 1
        stats["retries"] += 1
        if job.problem_id and not (isinstance(exc, AnswerError) and job.how == "refetch"):
            action = "refetch"                  # accepted by SAPI: fetch it again by id, pay nothing
        elif job.problem_id:
            action = "submit"                   # its content is wrong even fetched again
        else:
            action = "lookup"                   # it may have been accepted: find it by label first
        waiting.append((time.monotonic() + retry_delay(exc, backoff, job.attempt), job, action))

    previous = solver.return_matrix
    solver.return_matrix = True           # answers as numpy matrices: no per-sample decoding
    try:
        while queue or pending or waiting:
            now = time.monotonic()
            for item in sorted((w for w in waiting if w[0] <= now), key=lambda w: w[0]):
                waiting.remove(item)
                _, job, action = item
                if state["fatal"] is not None or state["budget"] is not None:
                    if job.problem_id:
                        keep[job.call.call_id] = job.problem_id
                    continue
                if action in ("submit", "lookup"):         # may cost QPU time again: within the budget?
                    try:
                        check_budget(job.call, committed())
                    except BudgetError as exc:
                        state["budget"] = exc
                        continue
                try:
                    start(job, action)
                except Exception as exc:
                    failed(job, exc)
            while (queue and len(pending) + len(waiting) < in_flight and state["budget"] is None
                   and state["fatal"] is None):
                try:
                    check_budget(queue[0], committed())
                except BudgetError as exc:
                    state["budget"] = exc
                    break
                call = queue.pop(0)
                job = _Job(call, utcnow())
                if call.call_id in recovered:
                    job.problem_id = recovered.pop(call.call_id)
                    stats["reattached_in_flight"] += 1
                    action = "recovered"
                else:
                    action = "submit"
                try:
                    start(job, action)
                except Exception as exc:
                    failed(job, exc)
            if not pending:
                if waiting:
                    time.sleep(max(0.0, min(0.05, min(w[0] for w in waiting) - time.monotonic())))
                    continue
                break
            done, _ = Future.wait_multiple(list(pending), min_done=1, timeout=0.05)
            remember()
            for fut in done:
                job = pending.pop(fut)
                try:
                    result = fut.result()
                    samples, occurrences = check_answer(result, qubits, job.call.num_reads,
                                                        f"the answer of problem {fut.id}")
                except Exception as exc:
                    failed(job, exc, fut)
                    continue
                call = job.call
                counted.add(fut.id)
                returned, reads = count_down(samples, occurrences, np.arange(len(qubits)))
                n_down = undo_gauge(returned, reads, call.flips)
                timing = dict(result.get("timing") or getattr(fut, "timing", {}) or {})
                record = {"call_id": call.call_id, "index": call.index, "h_index": call.h_index, "h": call.h_scalar,
                          "gauge": call.gauge, "num_reads": reads, "problem_id": fut.id,
                          "started": job.started, "finished": utcnow(),
                          "qpu_access_time": float(timing["qpu_access_time"]) if "qpu_access_time" in timing else None,
                          "timing": redact(json.dumps(timing, default=float))}
                yield call, record, counts_frame(call, qubits, n_down, reads), None
            if call_timeout is not None:
                now = time.monotonic()
                for fut, job in list(pending.items()):
                    if now - job.since > call_timeout:
                        del pending[fut]
                        failed(job, _Deadline(f"no answer within {call_timeout:g} s"), fut)
            remember()
    finally:
        solver.return_matrix = previous
        if run_record is not None:
            run_record["reattached_in_flight"] = stats["reattached_in_flight"]
            run_record["leap"] = dict(stats)
        for fut in pending:
            try:
                fut.cancel()
            except Exception:
                pass
    if store is not None:
        store.set_in_flight(keep)
    if state["fatal"] is not None:
        raise state["fatal"]
    if state["budget"] is not None:
        raise state["budget"]

"""Asynchronous submission to a D-Wave cloud solver (Leap): checked answers, retries, re-attachment.

A ``DWaveSampler`` wraps a dwave-cloud-client solver; qasa submits up to ``in_flight`` problems at
once through it (``--in-flight 1`` and ``--keep-samples`` too: every call to a cloud solver takes
this path) and reduces each answer straight from the answer matrix (``return_matrix``).

Nothing is counted before it is checked (:func:`check_answer`): the answer must hold exactly the
active qubits requested, ``num_reads`` reads (the sum of ``num_occurrences``) and values in
{-1, +1}. A bad answer is a failed call, never stored.

Identity. Every problem carries the label ``qasa <call id> seed <seed> d=<dataset id> c=<digest>``:
the dataset's random identity (``metadata['dataset_id']``, made once when the dataset is created;
one per in-memory run) and 12 hex digits of SHA-256 over the call's content (the programmed h with
its gauge, ``num_reads``, the annealing time or schedule and every other parameter sent). A
problem found by its label is counted only if it carries exactly that label, was submitted within
the dataset's life (from its creation, less :data:`CLOCK_SKEW`, to now) and its record on the
server (``Problems.get_problem_info``) holds the call's h, ``num_reads``, annealing time and other
parameters; another dataset's problem, or this dataset's with other content, is never counted.

Failures and what they cost (every retry waits ``backoff · 2^k`` seconds, or the server's
``Retry-After`` when the client passes it on; at most ``retries`` retries per call):

- the problem has a SAPI id (it was accepted) and its answer did not arrive, arrived malformed, or
  did not arrive within ``call_timeout`` seconds: the answer is fetched again **by its id**
  (``Client.retrieve_answer``) — no QPU time is paid again;
- the submission itself failed without an id (dropped connection, a server slower than the
  request timeout, a malformed reply): the problem may still have been accepted, so it is looked
  up by its label (checked as above) and re-attached if found; only if it is not found is the call
  submitted again;
- an answer whose content is wrong even when fetched again: the call is submitted again;
- 429 (rate limit), 408 and 5xx, timeouts and dropped connections are transient; 400, 401, 403,
  404 and a FAILED problem are not: the run stops with one clear error (:class:`LeapError`) after
  the calls still in flight have finished and been saved.

``in_flight.json`` records every call on its way *before* its submission request leaves (call id →
problem id, or ``null`` while the id is unknown), and the id as soon as SAPI gives it; it is also
written when the run is interrupted (Ctrl-C). The next run fetches the recorded ids' answers by id
and looks up every ``null`` call by its label before submitting anything again, so neither a crash,
SIGKILL nor Ctrl-C pays twice for a call. A problem id that holds a credential (a server echoing
the token) is never written: the call is then recorded as ``null`` and found again by its label.

Budget. Every answer received is charged — also one discarded as bad (``metadata['discarded_answers']``)
— at the server's ``timing.qpu_access_time`` when that is a finite number ≥ 0, else at the
estimate (recorded with ``qpu_access_time_source = "estimate"``; a malformed timing field is never
an error). Before each submission the calls on their way are counted at their estimate times the
largest ratio of charged to estimated time seen so far, so a solver slower than its timing model
stops the run within one window of ``in_flight`` calls past the budget; under a budget the window
opens only after the first answer has been charged (a slow start), so a solver uniformly slower than
its model costs one call past the budget.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator

import dimod
import numpy as np

from qasa.cost import BudgetError
from qasa.dataset import utcnow
from qasa.errors import AnswerError, LeapError, ProtocolError, QasaError, SamplerError
from qasa.protocol import Call, Protocol, call_label, filter_parameters
from qasa.redact import redact, register, tokens
from qasa.reduce import count_down, counts_frame, undo_gauge

__all__ = ["cloud_solver", "async_results", "is_transient", "redact", "tag", "IN_FLIGHT", "check_answer",
           "check_sampleset", "check_leap_options", "open_dwave_sampler", "retry_delay", "failure_kind",
           "DEFAULT_CALL_TIMEOUT", "MAX_RETRIES", "MAX_IN_FLIGHT", "LeapRun", "Submission", "submission",
           "content_digest", "charged_us", "device_time", "subsample_matrix", "CLOCK_SKEW"]

IN_FLIGHT = "in_flight.json"

#: Seconds a submitted problem may take before its answer is fetched again by id.
DEFAULT_CALL_TIMEOUT = 600.0
#: Bounds of the retry and concurrency options.
MAX_RETRIES = 100
MAX_IN_FLIGHT = 1000
#: Longest wait between two attempts, whatever a Retry-After header asks (seconds).
MAX_RETRY_WAIT = 300.0
#: Margin (seconds) for the clocks of this machine and of SAPI when a found problem's submission
#: time is compared with the dataset's life.
CLOCK_SKEW = 300.0
#: Problems carrying a call's label examined by a look-up.
MAX_FOUND = 10


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


# -- identity of a call ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    """What is sent to SAPI for one call: its label, the programmed h and the parameters.

    Attributes:
        label: ``qasa <call id> seed <seed> d=<dataset id> c=<content digest>``.
        h: ``{qubit: gauge · h}`` as programmed (no couplers).
        params: the solver parameters sent (after filtering), ``num_reads`` included, without the label.
    """

    label: str
    h: dict[int, float]
    params: dict[str, Any]


def content_digest(h: dict[int, float], params: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the programmed h (qubits and float64 values) and the parameters."""
    digest = hashlib.sha256()
    digest.update(np.asarray(list(h), dtype="<i8").tobytes())
    digest.update(np.asarray(list(h.values()), dtype="<f8").tobytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def submission(call: Call, run: "LeapRun") -> Submission:
    """The :class:`Submission` of ``call`` in ``run`` (its label names the dataset and the content)."""
    params = dict(run.base, **(call.params or {}), num_reads=call.num_reads)     # a shim's per-call flux biases
    params, _ = run.filter(params)
    params.pop("label", None)
    h = call.programmed_h(run.qubits)
    label = f"{call_label(call, run.protocol.seed)} d={run.dataset_id} c={content_digest(h, params)}"
    return Submission(label, h, params)


def charged_us(timing: Any, estimate: float | None) -> tuple[float | None, str]:
    """QPU access time (µs) to charge for one answer, and where it comes from.

    The server's ``timing['qpu_access_time']`` when it is a finite number ≥ 0 (``"server"``), else
    the estimate (``"estimate"``; None when there is none).
    """
    value = timing.get("qpu_access_time") if isinstance(timing, Mapping) else None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value) and value >= 0:
        return float(value), "server"
    return estimate, "estimate"


def device_time(info: Any) -> float | None:
    """The call's time on the solver's own clock (seconds), from an answer's ``info``, or None.

    Drift analysis (:mod:`qasa.drift`) places calls on this clock when every call has it: the
    virtual QPU reports where on its clock the call started (``info['device_time']``, where its 1/f
    flux noise was sampled); a Leap answer gives the time SAPI solved it (``solved_on``, POSIX
    seconds), from which the call's QPU access time is taken to place its start.
    Wall-clock times of the client include queueing and network waits.
    """
    value = info.get("device_time") if isinstance(info, Mapping) else None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _solved_on(fut: Any) -> float | None:
    """POSIX seconds at which SAPI solved the problem of ``fut`` (dwave-cloud-client's ``time_solved``), or None."""
    when = getattr(fut, "time_solved", None)
    try:
        return float(when.timestamp()) if when is not None else None
    except (AttributeError, TypeError, ValueError, OverflowError, OSError):
        return None


# -- finding a problem again ----------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Equal parameter values (numbers within 1e-9 relative, lists element by element)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _content_mismatch(solver: Any, info: Any, sub: Submission) -> str | None:
    """Why the problem ``info`` (``Problems.get_problem_info``) is not ``sub``'s content, or None."""
    import base64

    data = getattr(info.data, "root", info.data)
    lin = np.frombuffer(base64.b64decode(data.lin), dtype="<f8")
    qubits = list(solver._encoding_qubits)
    if len(lin) != len(qubits):
        return f"it has {len(lin)} linear terms for {len(qubits)} qubits"
    active = {q: v for q, v in zip(qubits, lin.tolist()) if not math.isnan(v)}
    if set(active) != set(sub.h):
        return "it programs other qubits"
    if any(not math.isclose(active[q], v, rel_tol=0.0, abs_tol=1e-12) for q, v in sub.h.items()):
        return "it programs other fields h"
    quad = np.frombuffer(base64.b64decode(data.quad or b""), dtype="<f8")
    if np.any(quad != 0):
        return "it has couplings"
    params = dict(info.params or {})
    for key, value in sub.params.items():
        if key in _FLAGS and key not in params:     # flags a server may leave out of its record
            continue
        if key not in params or not _same(params[key], value):
            return f"its {key} is {params.get(key)!r}, the call's is {value!r}"
    return None


#: Parameters compared only when the server's record of a problem holds them.
_FLAGS = ("auto_scale", "flux_drift_compensation", "answer_mode")


def _problem_mismatch(api: Any, solver: Any, pid: str, sub: Submission, since: float,
                      check_label: bool = True) -> str | None:
    """Why problem ``pid`` must not be counted for ``sub`` (label, solver, submission time within
    ``[since - CLOCK_SKEW, now + CLOCK_SKEW]``, h and parameters), or None if it is the call's."""
    info = api.get_problem_info(pid)
    meta = info.metadata
    if check_label:
        if meta.label != sub.label:
            return f"its label is {meta.label!r}"
        submitted = meta.submitted_on.timestamp()
        if not since - CLOCK_SKEW <= submitted <= time.time() + CLOCK_SKEW:
            return "it was submitted outside this dataset's life"
    name = getattr(meta.solver, "name", None)
    if name is not None and name != getattr(solver, "name", name):
        return f"it ran on solver {name!r}"
    return _content_mismatch(solver, info, sub)


def _status(problem: Any) -> str:
    return str(getattr(problem.status, "value", problem.status))


def _find_by_label(solver: Any, sub: Submission, since: float, exclude: set[str]) -> str | None:
    """The id of a problem that is this call's, found by its label, or None.

    Candidates (``list_problems(label=...)``) must carry exactly the label, not be failed, cancelled
    or already counted, and have been submitted within this dataset's life; the newest is taken
    whose content (``get_problem_info``: h, num_reads, annealing time and every other parameter)
    is the call's. A listing or info the server refuses (not transient) finds nothing: the call is
    submitted again rather than counted unchecked.

    Raises:
        Exception: a transient error (the look-up is retried).
    """
    from dwave.cloud.api import Problems

    try:
        with Problems.from_config(solver.client.config) as api:
            found = api.list_problems(label=sub.label, max_results=MAX_FOUND)
            usable = [p for p in found if p.label == sub.label and p.id not in exclude
                      and _status(p) not in ("FAILED", "CANCELLED")
                      and since - CLOCK_SKEW <= p.submitted_on.timestamp() <= time.time() + CLOCK_SKEW]
            usable.sort(key=lambda p: -p.submitted_on.timestamp())
            for p in usable:
                if _problem_mismatch(api, solver, p.id, sub, since) is None:
                    return p.id
    except Exception as exc:
        if is_transient(exc):
            raise
    return None


def _recorded_problem_is_other(solver: Any, pid: str, sub: Submission) -> bool:
    """True when the problem ``pid`` kept in ``in_flight.json`` holds other content than the call
    (checked where the server gives the problem's data; otherwise the record is trusted)."""
    from dwave.cloud.api import Problems

    try:
        with Problems.from_config(solver.client.config) as api:
            return _problem_mismatch(api, solver, pid, sub, 0.0, check_label=False) is not None
    except Exception as exc:
        if is_transient(exc):
            raise
        return False


# -- the asynchronous pump ------------------------------------------------------------------------
@dataclass
class LeapRun:
    """What the pump needs of a run (one context instead of a dozen arguments).

    Attributes:
        protocol: the resolved protocol (its seed goes into the labels).
        sampler: the ``DWaveSampler``.
        qubits: the protocol's qubits.
        base: the sampler parameters shared by every call (:func:`qasa.runner.sampler_parameters`).
        budget: ``check(call, committed, scale)`` raising :class:`~qasa.cost.BudgetError`,
            ``estimates`` (µs per ``num_reads``) and ``discard(call, problem_id, us, reason)`` for
            an answer paid for but not kept.
        dataset_id: random identity of the dataset (``metadata['dataset_id']``; one per in-memory run).
        created: epoch seconds when the dataset was created: no problem submitted before (minus
            :data:`CLOCK_SKEW`) is taken for one of its calls.
        store: the dataset's store (:class:`~qasa.store.DatasetStore`, or a
            :class:`~qasa.session.MemoryStore`): the one writer of ``in_flight.json``, where the calls
            on their way are recorded (None: not recorded).
        run_record: receives the run's statistics (``leap``, ``reattached_in_flight``).
        keep_samples: also return up to this many raw reads of every call.
        done: the calls the dataset holds already (their entries in ``in_flight.json`` are dropped;
            those of calls neither done nor run now, e.g. of another design round, are kept).
        filter: splits a call's parameters into those the sampler accepts and the names of the
            others (:meth:`qasa.backend.Backend.filter`, which computes the split once per set of
            names); default: :func:`~qasa.protocol.filter_parameters` on ``sampler``.
    """

    protocol: Protocol
    sampler: Any
    qubits: np.ndarray
    base: dict[str, Any]
    budget: Any
    dataset_id: str
    created: float
    in_flight: int = 50
    retries: int = 3
    backoff: float = 0.5
    call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    store: Any = None
    run_record: dict | None = None
    keep_samples: int = 0
    done: frozenset[str] = frozenset()
    filter: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[str]]] | None = None

    def __post_init__(self) -> None:
        if self.filter is None:
            self.filter = partial(filter_parameters, self.sampler)


@dataclass
class _Job:
    """One call on its way: attempts used, how its current future was obtained, its problem id,
    and the problems of this call answered but not counted (id → µs charged)."""

    call: Call
    started: str
    sub: Submission
    attempt: int = 0
    how: str = "submit"          # submit | refetch | lookup | recovered
    since: float = 0.0
    problem_id: str | None = None
    submitted: int = 0
    paid: dict[str, float] = field(default_factory=dict)


def async_results(todo: Sequence[Call], run: LeapRun) -> Iterator[tuple]:
    """Keep up to ``run.in_flight`` calls submitted; yield ``(call, record, counts, samples)`` for
    each as it completes (any order), checked.

    See the module docstring for what is retried and how. When the budget allows no further
    submission, or a call failed for good, the calls in flight are finished (and saved) first; then
    :class:`~qasa.cost.BudgetError` or :class:`~qasa.errors.LeapError` is raised.
    """
    return _Pump(todo, run).results()


class _Pump:
    """The loop of :func:`async_results`: start what is due, fill the window, collect answers,
    expire the late ones, keep ``in_flight.json`` up to date."""

    def __init__(self, todo: Sequence[Call], run: LeapRun) -> None:
        self.run = run
        self.solver = cloud_solver(run.sampler)
        register(getattr(getattr(self.solver.client, "config", None), "token", None))
        self.secrets = tokens()
        self.queue = deque(todo)
        self.pending: dict[Any, _Job] = {}
        self.waiting: list[tuple[float, _Job, str]] = []
        self.counted: set[str] = set()
        wanted = {c.call_id for c in todo}
        book = {c: p for c, p in self._read_book().items() if c not in run.done}
        self.recovered = {c: p for c, p in book.items() if c in wanted}
        self.book: dict[str, str | None] = book      # call id -> problem id (None: unknown)
        self.written: dict[str, str | None] | None = None
        self.stats = {"reattached_in_flight": 0, "retries": 0, "fetched_again_by_id": 0, "found_by_label": 0,
                      "submissions": 0, "discarded_answers": 0}
        self.fatal: BaseException | None = None
        self.over_budget: BaseException | None = None
        self.scale = 1.0          # largest ratio of charged to estimated QPU time seen (at least 1)
        self.observed = getattr(run.budget, "limit", None) is None     # False: one call until an answer is charged

    # -- in_flight.json ----------------------------------------------------------------------------
    def _read_book(self) -> dict[str, str | None]:
        if self.run.store is None:
            return {}
        return {str(k): (str(v) if v else None) for k, v in self.run.store.in_flight().items()}

    def _save_book(self) -> None:
        """Write ``in_flight.json`` if it changed (before any submission it records)."""
        if self.run.store is None or self.book == self.written:
            return
        self.run.store.set_in_flight(dict(self.book))    # an empty book removes the file
        self.written = dict(self.book)

    def _safe_id(self, pid: Any) -> str | None:
        """A problem id fit to be written down (None if it holds a token)."""
        pid = str(pid) if pid else None
        return pid if pid is not None and redact(pid, self.secrets) == pid else None

    def _note_ids(self) -> None:
        for fut, job in self.pending.items():
            pid = self._safe_id(getattr(fut, "id", None))
            if pid is not None and self.book.get(job.call.call_id) != pid:
                self.book[job.call.call_id] = pid

    # -- budget ------------------------------------------------------------------------------------
    def _estimate(self, call: Call) -> float:
        return self.run.budget.estimates.get(call.num_reads) or 0.0

    def _committed(self, extra: Sequence[_Job] = ()) -> float:
        """QPU time (µs) of the calls on their way (estimated, scaled by the largest ratio seen) and
        of their answers received but not counted (charged when the call moves on)."""
        jobs = [*self.pending.values(), *(w[1] for w in self.waiting), *extra]
        return sum(self.scale * self._estimate(j.call) + sum(j.paid.values()) for j in jobs)

    def _affordable(self, call: Call, extra: Sequence[_Job] = (), paid: float = 0.0) -> bool:
        try:
            self.run.budget.check(call, self._committed(extra) + paid, self.scale)
        except BudgetError as exc:
            self.over_budget = exc
            return False
        return True

    def _discard_paid(self, job: _Job, keep: str | None = None) -> None:
        """Charge the problems of ``job`` that were answered but not counted (all but ``keep``)."""
        for pid, us in job.paid.items():
            if pid != keep:
                self.run.budget.discard(job.call, redact(pid, self.secrets), us, "answer not counted")
                self.stats["discarded_answers"] += 1
        job.paid.clear()

    # -- starting ----------------------------------------------------------------------------------
    def _excluded(self, job: _Job) -> set[str]:
        """Problems a look-up must not take: counted already, or answered wrongly (this run or before)."""
        discarded = {str(d.get("problem_id")) for d in getattr(self.run.budget, "discarded", None) or []
                     if isinstance(d, Mapping)}
        return self.counted | set(job.paid) | discarded

    def _new_job(self, call: Call) -> tuple[_Job, str]:
        job = _Job(call, utcnow(), submission(call, self.run))
        if call.call_id in self.recovered:
            job.problem_id = self.recovered.pop(call.call_id)
            self.stats["reattached_in_flight"] += job.problem_id is not None
            return job, ("recovered" if job.problem_id is not None else "lookup")
        self.book[call.call_id] = None
        return job, "submit"

    def _fill(self) -> None:
        """Start new calls up to the window, within the budget (recorded before they are sent).

        Under a budget the window opens only once an answer has been charged (a slow start): a
        solver uniformly slower than its timing model then costs one call past the budget, not a
        window."""
        batch: list[tuple[_Job, str]] = []
        window = self.run.in_flight if self.observed else 1
        while (self.queue and len(self.pending) + len(self.waiting) + len(batch) < window
               and self.fatal is None and self.over_budget is None
               and self._affordable(self.queue[0], [j for j, _ in batch])):
            batch.append(self._new_job(self.queue.popleft()))
        self._launch(batch)

    def _start_due(self) -> None:
        """Start the retries whose wait is over (a resubmission only within the budget)."""
        now = time.monotonic()
        due = sorted((w for w in self.waiting if w[0] <= now), key=lambda w: w[0])
        ready: list[tuple[_Job, str]] = []
        for item in due:
            self.waiting.remove(item)
            _, job, action = item
            if self.fatal is not None or self.over_budget is not None:
                self._drop(job)
                continue
            if action in ("submit", "lookup"):         # may cost QPU time again: within the budget?
                if not self._affordable(job.call, [j for j, _ in ready], sum(job.paid.values())):
                    self._drop(job)
                    continue
                self.book[job.call.call_id] = None
            ready.append((job, action))
        self._launch(ready)

    def _launch(self, items: Sequence[tuple[_Job, str]]) -> None:
        if not items:
            return
        self._save_book()                  # every call is recorded before its submission leaves
        for job, action in items:
            try:
                self._start(job, action)
            except Exception as exc:
                self._failed(job, exc)

    def _start(self, job: _Job, action: str) -> None:
        if action == "recovered" and _recorded_problem_is_other(self.solver, job.problem_id, job.sub):
            job.problem_id, action = None, "lookup"
        if action == "lookup":
            pid = _find_by_label(self.solver, job.sub, self.run.created, self._excluded(job))
            if pid is not None:
                job.problem_id = pid
                self.stats["found_by_label"] += 1
                action = "refetch"
            else:
                action = "submit"
        if action in ("refetch", "recovered"):
            fut = self.solver.client.retrieve_answer(job.problem_id)
            self.stats["fetched_again_by_id"] += action == "refetch"
        else:
            job.problem_id = None
            if self.book.get(job.call.call_id, "") is not None:    # recorded as on its way, id unknown,
                self.book[job.call.call_id] = None                 # before the request leaves
                self._save_book()
            fut = self.solver.sample_ising(job.sub.h, {}, label=job.sub.label, **job.sub.params)
            job.submitted += 1
            self.stats["submissions"] += 1
        job.how, job.since = action, time.monotonic()
        self.pending[fut] = job

    # -- failures ----------------------------------------------------------------------------------
    def _drop(self, job: _Job) -> None:
        """A call left unfinished (draining): its answers received but not counted are charged; its
        problem id (one still to be answered), or its unknown marker, stays recorded."""
        if job.problem_id and job.problem_id not in job.paid:
            self.book[job.call.call_id] = self._safe_id(job.problem_id)
        elif job.problem_id:                        # answered wrongly: the next run submits it afresh
            self.book[job.call.call_id] = None
        self._discard_paid(job)

    def _give_up(self, job: _Job, exc: BaseException, kind: str) -> None:
        call, pid = job.call, job.problem_id
        shown = redact(pid, self.secrets) if pid else None
        if kind == "deadline" and pid:
            message = (f"call {call.call_id}: problem {shown} did not complete within {self.run.call_timeout:g} s "
                       f"(fetched again by its id {job.attempt} times); its id is kept in {IN_FLIGHT}: run "
                       "again to fetch its answer without paying again")
        elif kind == "fatal":
            message = (f"call {call.call_id}: the QPU service refused "
                       f"{'problem ' + shown if shown else 'the submission'}: {type(exc).__name__}: "
                       f"{redact(exc, self.secrets)}")
        else:
            message = (f"call {call.call_id} failed after {job.attempt} retries ({job.submitted} submissions); "
                       f"last error: {type(exc).__name__}: {redact(exc, self.secrets)}")
        self._drop(job)
        if self.fatal is None:
            self.fatal = tag(LeapError(message), call)

    def _failed(self, job: _Job, exc: BaseException, fut: Any = None) -> None:
        pid = getattr(fut, "id", None) if fut is not None else None
        if pid:
            job.problem_id = str(pid)
        kind = "deadline" if isinstance(exc, _Deadline) else failure_kind(exc)
        if job.how == "recovered" and kind == "fatal":   # the old problem is gone (failed, cancelled,
            job.problem_id = None                        # unknown): pay for the call again
            self.waiting.append((time.monotonic(), job, "submit"))
            return
        if self.fatal is not None:          # draining: no more retries
            self._drop(job)
            return
        if kind == "fatal" or job.attempt >= self.run.retries:
            self._give_up(job, exc, kind)
            return
        job.attempt += 1
        self.stats["retries"] += 1
        if job.problem_id and not (isinstance(exc, AnswerError) and job.how == "refetch"):
            action = "refetch"                  # accepted by SAPI: fetch it again by id, pay nothing
        elif job.problem_id:
            action = "submit"                   # its content is wrong even fetched again
        else:
            action = "lookup"                   # it may have been accepted: find it by label first
        self.waiting.append((time.monotonic() + retry_delay(exc, self.run.backoff, job.attempt), job, action))

    # -- answers -----------------------------------------------------------------------------------
    def _take(self, fut: Any, job: _Job) -> tuple | None:
        """The checked result of a completed future, or None (the failure handled)."""
        try:
            result = fut.result()
        except Exception as exc:
            self._failed(job, exc, fut)
            return None
        pid = str(fut.id)
        timing = result.get("timing") if isinstance(result, Mapping) else None
        timing = timing if isinstance(timing, Mapping) else getattr(fut, "timing", None) or {}
        estimate = self._estimate(job.call) or None
        us, source = charged_us(timing, estimate)
        try:
            samples, occurrences = check_answer(result, self.run.qubits, job.call.num_reads,
                                                f"the answer of problem {redact(pid, self.secrets)}")
        except Exception as exc:        # answered, so paid for: charged unless counted later
            job.paid[pid] = us or 0.0
            self.observed = True
            self._failed(job, exc if isinstance(exc, AnswerError) else AnswerError(f"{type(exc).__name__}: "
                                                                                  f"{redact(exc, self.secrets)}"),
                         fut)
            return None
        self.counted.add(pid)
        self._discard_paid(job, keep=pid)
        if us is not None and estimate:
            self.scale = max(self.scale, us / estimate)
        self.observed = True
        return self._output(job, pid, samples, occurrences, timing, us, source, _solved_on(fut))

    def _output(self, job: _Job, pid: str, samples: np.ndarray, occurrences: Any, timing: Mapping,
                us: float | None, source: str, solved: float | None = None) -> tuple:
        call = job.call
        returned, reads = count_down(samples, occurrences, np.arange(len(self.run.qubits)))
        n_down = undo_gauge(returned, reads, call.flips)
        record = {"call_id": call.call_id, "index": call.index, "position": call.slot, "h_index": call.h_index, "h": call.h_scalar,
                  "gauge": call.gauge, "num_reads": reads, "problem_id": redact(pid, self.secrets),
                  "started": job.started, "finished": utcnow(), "qpu_access_time": us,
                  "qpu_access_time_source": source,
                  "timing": redact(json.dumps(dict(timing), default=str), self.secrets),
                  # the call's start on SAPI's clock, as the virtual QPU records it: solved_on less its access time
                  "device_time": None if solved is None else solved - (us or 0.0) * 1e-6}
        kept = None
        if self.run.keep_samples:
            kept = subsample_matrix(samples, occurrences, call.flips, self.run.keep_samples,
                                    self.run.protocol.call_seed(call.index))
        return call, record, counts_frame(call, self.run.qubits, n_down, reads), kept

    def _collect(self) -> Iterator[tuple]:
        from dwave.cloud.computation import Future

        done, _ = Future.wait_multiple(list(self.pending), min_done=1, timeout=0.05)
        self._note_ids()
        self._save_book()
        for fut in done:
            job = self.pending.pop(fut)
            out = self._take(fut, job)
            if out is not None:
                yield out                       # journaled by the caller when this returns
                self.book.pop(job.call.call_id, None)

    def _expire(self) -> None:
        if self.run.call_timeout is None:
            return
        now = time.monotonic()
        for fut, job in list(self.pending.items()):
            if now - job.since > self.run.call_timeout:
                del self.pending[fut]
                self._failed(job, _Deadline(f"no answer within {self.run.call_timeout:g} s"), fut)

    # -- the loop ----------------------------------------------------------------------------------
    def results(self) -> Iterator[tuple]:
        previous = self.solver.return_matrix
        self.solver.return_matrix = True           # answers as numpy matrices: no per-sample decoding
        try:
            while self.queue or self.pending or self.waiting:
                self._start_due()
                self._fill()
                if not self.pending:
                    if not self.waiting:
                        break
                    time.sleep(max(0.0, min(0.05, min(w[0] for w in self.waiting) - time.monotonic())))
                    continue
                yield from self._collect()
                self._expire()
                self._save_book()
        finally:
            self._stop(previous)
        if self.fatal is not None:
            raise self.fatal
        if self.over_budget is not None:
            raise self.over_budget

    def _stop(self, previous: bool) -> None:
        """Close the run: statistics, the ids of the problems still on their way written down
        (an interruption included), the unsent submissions cancelled."""
        self.solver.return_matrix = previous
        if self.run.run_record is not None:
            self.run.run_record["reattached_in_flight"] = self.stats["reattached_in_flight"]
            self.run.run_record["leap"] = dict(self.stats)
        self._note_ids()
        with contextlib.suppress(Exception):
            for job in [*self.pending.values(), *(w[1] for w in self.waiting)]:
                self._drop(job)            # their ids written down, their wrong answers charged
            self._save_book()
        for fut in self.pending:
            with contextlib.suppress(Exception):
                fut.cancel()


def subsample_matrix(samples: np.ndarray, occurrences: Any, flips: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Up to ``k`` reads of an answer matrix chosen at random (histogram rows expanded), nominal
    frame, int8 (reads × qubits)."""
    rows = np.arange(len(samples)) if occurrences is None else np.repeat(np.arange(len(samples)), occurrences)
    pick = np.random.default_rng(seed).permutation(rows)[:k]
    return (np.asarray(samples)[pick] * np.asarray(flips, dtype=np.int8)).astype(np.int8)

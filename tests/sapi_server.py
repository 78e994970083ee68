"""A small SAPI-compatible test server on 127.0.0.1, backed by qasa's virtual QPU.

It answers the endpoints the real ``dwave-cloud-client`` uses — solver listing and definition,
problem submission (``qp`` encoding, deflate-compressed JSON), status polling and answer download —
so that the *real* ``DWaveSampler`` and ``Client`` (encoding, HTTP, polling, decoding) run against it
through their normal endpoint configuration::

    with SAPIServer(VirtualQPU(...)) as server:
        sampler = DWaveSampler(endpoint=server.endpoint, token="dummy", solver=server.solver_name)

Faults can be injected (all seeded): ``fail_rate`` (a share of requests answered 503),
``drop_rate`` (connections closed without an answer), ``drop_after_rate`` and ``drop_after_posts``
(submissions processed — and paid for — but the connection dropped before the answer: at random,
or for the given submission requests, counted from 1), ``pending_polls`` (answers withheld for that
many status polls: slow problems), and :meth:`SAPIServer.crash` / :meth:`SAPIServer.restart`.
Every problem accepted is counted in ``server.solved`` so tests can check for double submission.

Faults of content and timing, keyed by the number of the problem (counted from 1 in the order the
server accepts them), ``answer_faults={n: kind}``:

- ``"missing_variable"``: the answer leaves out one active qubit (the client fills it with 0);
- ``"fewer_reads"``: one read fewer than requested (``num_occurrences`` of the first row lowered);
- ``"bad_value"``: the answer is declared a QUBO answer, so the client decodes values 0/1;
- ``"malformed_json"``: the first response carrying this answer is not JSON;
- ``"never_complete"``: the problem stays PENDING until :meth:`SAPIServer.complete_all`;
- ``"failed"``: the problem ends with status FAILED.

``post_delay`` (seconds) makes every submission reply late — after the problem is accepted and
paid — as a server slower than the client's request timeout; ``malformed_posts`` answers those
submission requests (counted from 1) with a body that is not JSON, after accepting the problems;
``status_faults={n: code}`` answers request number ``n`` (counted from 1, every endpoint) and
``post_faults={n: code}`` submission request number ``n`` with that HTTP error, before anything is
accepted (``Retry-After: retry_after`` on 429 and 503); ``solver_failures`` answers that many first
solver requests with 503; ``echo_token_status`` answers every submission with that error code and a
message that echoes the request's token. ``GET problems/?label=`` lists problems by label and
``GET problems/<id>/info`` gives a problem's data, parameters and metadata (what
``dwave.cloud.api.Problems.get_problem_info`` reads).

Timing faults (every problem): ``timing_fault`` replaces ``qpu_access_time`` in the answer's timing
with ``"nan"`` (NaN), ``"negative"`` (−1000 s), ``"abc"`` (a string), ``"token"`` (the request's
token), or leaves it out (``"missing"``); ``timing_scale`` multiplies every time of the answer's
timing (a solver slower than its timing model). ``server.paid_us`` sums the true QPU access time
(the scaled one, before any fault) of every problem accepted. ``echo_token_ids`` puts the request's
token into every problem id.

The virtual QPU draws a problem's reads from its label; the server hands it the label without the
``d=<dataset id> c=<digest>`` suffix qasa adds (:mod:`qasa.leap`), so that two datasets of the same
protocol seed get the same reads at the same h and gauge (their counts differ only by their
physics: annealing time, schedule...) and a dataset's counts do not depend on its random identity.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import socket
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import orjson

PREFIX = "/sapi/v2/"
#: The dataset identity and content digest qasa appends to a label (dropped for the virtual QPU's randomness).
_IDENTITY = re.compile(r" d=\S+ c=\S+$")


def solver_data(qpu, name: str) -> dict:
    """Solver definition in SAPI's format from a virtual QPU's properties."""
    from qasa.topology import topology_graph

    props = dict(qpu.properties)
    full, _ = topology_graph(props["topology"]["type"], props["topology"]["shape"])
    props["num_qubits"] = max(full.nodes) + 1
    props["qubits"] = list(qpu.nodelist)
    props["couplers"] = [list(e) for e in qpu.edgelist]
    props["parameters"] = {k: "" for k in qpu.parameters}
    props["anneal_offset_ranges"] = [[-0.5, 0.5]] * props["num_qubits"]
    return {"identity": {"name": name}, "status": "ONLINE", "description": "qasa virtual QPU behind a test SAPI server",
            "properties": props, "avg_load": 0.0}


def encode_answer(sampleset, variables: list[int], num_qubits: int, timing: dict, fault: str | None = None) -> dict:
    """A SampleSet as SAPI's ``qp`` answer (the inverse of ``dwave.cloud.coders.decode_qp_numpy``),
    optionally damaged (``fault``: ``"missing_variable"``, ``"fewer_reads"``; see the module docstring)."""
    active = np.asarray(sorted(variables), dtype="<i4")
    if fault == "missing_variable":
        active = active[1:]
    cols = [sampleset.variables.index(int(v)) for v in active]
    spins = sampleset.record.sample[:, cols]
    occurrences = np.asarray(sampleset.record.num_occurrences, dtype="<i4").copy()
    energies = np.asarray(sampleset.record.energy, dtype="<f8")
    if fault == "fewer_reads":
        if occurrences[0] > 1:
            occurrences[0] -= 1
        else:
            spins, occurrences, energies = spins[1:], occurrences[1:], energies[1:]
    bits = np.packbits((spins > 0).astype(np.uint8), axis=1)
    return {"format": "qp", "num_variables": int(num_qubits),
            "active_variables": base64.b64encode(active.tobytes()).decode(),
            "energies": base64.b64encode(np.ascontiguousarray(energies).tobytes()).decode(),
            "num_occurrences": base64.b64encode(occurrences.tobytes()).decode(),
            "solutions": base64.b64encode(bits.tobytes()).decode(), "timing": timing}


class SAPIServer:
    """Threaded test SAPI server (see module docstring)."""

    def __init__(self, qpu, *, name: str = "Advantage_virtual", fail_rate: float = 0.0, drop_rate: float = 0.0,
                 drop_after_rate: float = 0.0, drop_after_posts: tuple[int, ...] = (), pending_polls: int = 0,
                 seed: int = 0, answer_faults: dict[int, str] | None = None, post_delay: float = 0.0,
                 malformed_posts: tuple[int, ...] = (), status_faults: dict[int, int] | None = None,
                 retry_after: float | None = None, solver_failures: int = 0, post_faults: dict[int, int] | None = None,
                 echo_token_status: int | None = None, timing_fault: str | None = None, timing_scale: float = 1.0,
                 echo_token_ids: bool = False) -> None:
        self.qpu = qpu
        self.solver_name = name
        self.data = solver_data(qpu, name)
        self.fail_rate, self.drop_rate, self.pending_polls = fail_rate, drop_rate, pending_polls
        self.drop_after_rate = drop_after_rate
        self.drop_after_posts = set(drop_after_posts)
        self.posts = 0
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.problems: dict[str, dict] = {}
        self.solved = 0
        self.requests = 0
        self.tokens_seen: set[str] = set()
        self.handler_errors = 0
        self.answer_faults = dict(answer_faults or {})
        self.post_delay = post_delay
        self.malformed_posts = set(malformed_posts)
        self.status_faults = dict(status_faults or {})
        self.post_faults = dict(post_faults or {})
        self.post_requests = 0
        self.retry_after = retry_after
        self.solver_failures = solver_failures
        self.echo_token_status = echo_token_status
        self.timing_fault, self.timing_scale, self.echo_token_ids = timing_fault, timing_scale, echo_token_ids
        self.paid_us = 0.0
        self.accepted = 0                      # problems accepted (numbering of answer_faults)
        self.malformed_served: set[str] = set()
        self.httpd: ThreadingHTTPServer | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "SAPIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

            def do_DELETE(self):
                server._handle(self, "DELETE")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up (e.g. timed out): quiet,
                server.handler_errors += 1                     # as the output of the code under test is checked

        self.httpd = Server(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def crash(self) -> None:
        """Stop answering (as a server that went down); the port stays reserved for :meth:`restart`."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def restart(self) -> None:
        self.start()

    def __enter__(self) -> "SAPIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.crash()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    # -- requests --------------------------------------------------------------------------------
    def _drop(self, h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body, media: str | None = None,
               raw: bytes | None = None) -> None:
        accept = h.headers.get("Accept", "")
        media_type = media or (accept.split(";")[0].strip() if accept and "*" not in accept else "application/json")
        payload = raw if raw is not None else orjson.dumps(body)
        h.send_response(code)
        h.send_header("Content-Type", f"{media_type}; version=3.0.0")
        h.send_header("Content-Length", str(len(payload)))
        if code in (429, 503) and self.retry_after is not None:
            h.send_header("Retry-After", f"{self.retry_after:g}")
        h.end_headers()
        h.wfile.write(payload)

    def complete_all(self) -> None:
        """Let every problem held by ``"never_complete"`` complete."""
        with self.lock:
            for rec in self.problems.values():
                rec["hold"] = False

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.requests += 1
            number = self.requests
            token = h.headers.get("X-Auth-Token")
            if token:
                self.tokens_seen.add(token)
            roll = self.rng.random()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if number in self.status_faults:
            code = self.status_faults[number]
            return self._reply(h, code, {"error_code": code, "error_msg": f"injected {code}"}, "application/json")
        if roll < self.drop_rate:
            return self._drop(h)
        if roll < self.drop_rate + self.fail_rate:
            self._reply(h, 503, {"error_code": 503, "error_msg": "Service Unavailable (injected)"}, "application/json")
            return
        url = urlparse(h.path)
        path = url.path[len(PREFIX):] if url.path.startswith(PREFIX) else url.path.lstrip("/")
        query = parse_qs(url.query)
        if method == "GET" and path.startswith("solvers/"):
            with self.lock:
                fail = self.solver_failures > 0
                self.solver_failures -= fail
            if fail:
                return self._reply(h, 503, {"error_code": 503, "error_msg": "solver listing unavailable (injected)"},
                                   "application/json")
        if method == "GET" and path in ("solvers/remote/", "solvers/remote"):
            return self._reply(h, 200, [self.data])
        if method == "GET" and path.startswith("solvers/remote/"):
            name = path[len("solvers/remote/"):].strip("/")
            if name != self.solver_name:
                return self._reply(h, 404, {"error_code": 404, "error_msg": f"solver {name} not found"}, "application/json")
            return self._reply(h, 200, self.data)
        if method == "POST" and path in ("problems/", "problems"):
            if self.echo_token_status is not None:
                code = self.echo_token_status
                return self._reply(h, code, {"error_code": code, "error_msg": f"token {token} is not valid here"},
                                   "application/json")
            with self.lock:
                self.post_requests += 1
                code = self.post_faults.get(self.post_requests)
            if code is not None:
                return self._reply(h, code, {"error_code": code, "error_msg": f"injected {code}"}, "application/json")
            if h.headers.get("Content-Encoding") == "deflate":
                raw = zlib.decompress(raw)
            answers = [self._submit(p, token) for p in json.loads(raw)]
            with self.lock:
                self.posts += 1
                post = self.posts
                drop = self.rng.random() < self.drop_after_rate or post in self.drop_after_posts
            if self.post_delay:             # accepted and paid for, but the reply comes late
                time.sleep(self.post_delay)
            if drop:                        # solved and paid for, but the answer is lost on the way
                return self._drop(h)
            if post in self.malformed_posts:
                return self._reply(h, 200, None, raw=b'[{"id": "truncated')
            return self._answer(h, answers)
        if method == "GET" and path in ("problems/", "problems") and "label" in query:
            label = query["label"][0]
            with self.lock:
                found = [pid for pid, rec in self.problems.items() if rec.get("label") == label]
            return self._reply(h, 200, [self._status(pid, poll=False, listing=True) for pid in found])
        if method == "GET" and path in ("problems/", "problems") and "id" in query:
            ids = [i for part in query["id"] for i in part.split(",") if i]
            return self._answer(h, [self._status(i, poll=True) for i in ids])
        if method == "GET" and path.startswith("problems/") and path.rstrip("/").endswith("/info"):
            return self._info(h, path.split("/")[1])
        if method == "GET" and path.startswith("problems/") and path.rstrip("/").endswith("/answer"):
            pid = path.split("/")[1]
            return self._answer(h, self._status(pid, poll=False, force=True))
        if method == "GET" and path.startswith("problems/"):
            pid = path.split("/")[1]
            return self._answer(h, self._status(pid, poll=False, force=True))
        if method == "DELETE":
            return self._reply(h, 200, [])
        self._reply(h, 404, {"error_code": 404, "error_msg": f"unknown endpoint {method} {path}"}, "application/json")

    def _answer(self, h: BaseHTTPRequestHandler, body) -> None:
        """Reply with problem statuses; an answer marked ``"malformed_json"`` is garbled once."""
        items = body if isinstance(body, list) else [body]
        with self.lock:
            garble = [b["id"] for b in items if "answer" in b and b["id"] not in self.malformed_served
                      and self.problems.get(b["id"], {}).get("fault") == "malformed_json"]
            self.malformed_served.update(garble)
        if garble:
            return self._reply(h, 200, None, raw=orjson.dumps(body)[:-7])
        return self._reply(h, 200, body)

    def _timing(self, timing: dict, token: str | None) -> dict:
        """The answer's timing: scaled by ``timing_scale``, then damaged by ``timing_fault``."""
        timing = {k: v * self.timing_scale if isinstance(v, (int, float)) else v for k, v in timing.items()}
        with self.lock:
            self.paid_us += float(timing.get("qpu_access_time", 0.0))
        fault = self.timing_fault
        if fault == "missing":
            timing.pop("qpu_access_time", None)
        elif fault is not None:
            timing["qpu_access_time"] = {"nan": math.nan, "negative": -1e9, "abc": "abc", "token": token}[fault]
        return timing

    def _info(self, h: BaseHTTPRequestHandler, pid: str) -> None:
        """``GET problems/<id>/info``: the problem as submitted and its metadata."""
        with self.lock:
            rec = self.problems.get(pid)
        if rec is None:
            return self._reply(h, 404, {"error_code": 404, "error_msg": f"problem {pid} not found"},
                               "application/json")
        status = self._status(pid, poll=False, listing=True)
        meta = {k: status[k] for k in ("solver", "type", "label", "status", "submitted_on", "solved_on")
                if k in status}
        return self._reply(h, 200, {"id": pid, "data": rec["data"], "params": rec["params"],
                                    "metadata": {**meta, "submitted_by": "qasa-test", "messages": []}})

    def _submit(self, problem: dict, token: str | None = None) -> dict:
        pid = str(uuid.UUID(int=int(self.rng.integers(0, 2**62))))
        if self.echo_token_ids:
            pid = f"{pid}-{token}"
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        try:
            h, J = decode_problem(self.data, problem["data"])
            params = dict(problem.get("params") or {})
            label = problem.get("label")
            if label is not None:
                params["label"] = _IDENTITY.sub("", label)
            ss = self.qpu.sample_ising(h, J, **params)
            with self.lock:
                self.solved += 1
                self.accepted += 1
                fault = self.answer_faults.get(self.accepted)
            timing = ss.info.get("timing", {})                 # a FAILED problem is not paid for
            answer = encode_answer(ss, list(h), self.data["properties"]["num_qubits"],
                                   timing if fault == "failed" else self._timing(timing, token), fault)
            record = {"id": pid, "status": "COMPLETED", "type": problem.get("type", "ising"), "label": label,
                      "submitted_on": now, "solved_on": now,
                      "answer": answer, "polls_left": self.pending_polls,
                      "solver": {"name": self.solver_name}, "fault": fault, "hold": fault == "never_complete"}
            if fault == "bad_value":
                record["type"] = "qubo"
            if fault == "failed":
                record.update(status="FAILED", error_message="injected failure of the problem")
                del record["answer"]
        except Exception as exc:  # the QPU refused the problem (bad parameter...)
            record = {"id": pid, "status": "FAILED", "type": problem.get("type", "ising"),
                      "label": problem.get("label"), "submitted_on": now, "solver": {"name": self.solver_name},
                      "error_message": f"{type(exc).__name__}: {exc}", "polls_left": 0}
        record["data"], record["params"] = problem.get("data"), dict(problem.get("params") or {})
        with self.lock:
            self.problems[pid] = record
        return self._status(pid, poll=False)

    def _status(self, pid: str, poll: bool, force: bool = False, listing: bool = False) -> dict:
        with self.lock:
            rec = self.problems.get(pid)
            if rec is None:
                return {"id": pid, "status": "FAILED", "error_message": "problem not found"}
            if poll and rec["polls_left"] > 0:
                rec["polls_left"] -= 1
            pending = (rec["polls_left"] > 0 and not force) or rec.get("hold", False)
        out = {k: v for k, v in rec.items() if k not in ("polls_left", "answer", "fault", "hold", "data", "params")}
        if pending or listing:
            if listing and not pending:
                return out
            out["status"] = "PENDING"
            out.pop("solved_on", None)
        elif "answer" in rec:
            out["answer"] = rec["answer"]
        return out


def decode_problem(data: dict, qp: dict) -> tuple[dict[int, float], dict[tuple[int, int], float]]:
    """Inverse of ``dwave.cloud.coders.encode_problem_as_qp``: linear biases over the solver's
    qubits in order (NaN for inactive ones), quadratic biases over the couplers whose two qubits are
    active."""
    props = data["properties"]
    lin = np.frombuffer(base64.b64decode(qp["lin"]), dtype="<f8")
    quad = np.frombuffer(base64.b64decode(qp["quad"]), dtype="<f8")
    lin = dict(zip(props["qubits"], lin))
    active = {q for q, v in lin.items() if not np.isnan(v)}
    couplers = [tuple(c) for c in props["couplers"] if c[0] in active and c[1] in active]
    h = {q: float(lin[q]) for q in sorted(active)}
    J = {c: float(v) for c, v in zip(couplers, quad) if v}
    return h, J

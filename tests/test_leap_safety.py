"""Issue 24 on the Leap path, against the loopback SAPI server (tests/sapi_server.py) driven by the
real DWaveSampler: another dataset's answers are never counted, an interrupted run never pays twice,
the budget holds whatever the server reports, a malformed timing field never blocks a dataset, and
no token reaches any output or file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import qasa
from qasa.backend import plan
from qasa.cost import BudgetError
from qasa.dataset import Dataset
from qasa.errors import LeapError

sys.path.insert(0, str(Path(__file__).parent))
import leap_interrupt_worker  # noqa: E402
from sapi_server import SAPIServer  # noqa: E402

TOKEN = "DEV-0000-qasa-safety-secret"
BUDGET = 3600.0
#: 10 calls of 250 reads (5 h values, 2 gauges).
PROTOCOL = qasa.Protocol.grid(1.0, 0.5, reads_per_h=500, reads_per_call=250, seed=3)


def _sampler(server, **config):
    from dwave.system import DWaveSampler

    return DWaveSampler(endpoint=server.endpoint, token=TOKEN, solver=server.solver_name, **config)


def _recorded_us(ds: Dataset) -> float:
    """QPU time the dataset records: its calls' and the answers paid for but discarded."""
    discarded = sum(d["qpu_access_time"] for d in ds.metadata.get("discarded_answers") or [])
    return float(np.sum(ds.calls["qpu_access_time"].to_numpy(float))) + discarded


def _estimate_us(protocol, sampler) -> float:
    """Estimated QPU time of one call of ``protocol`` (all its calls have the same reads)."""
    table, _ = plan(protocol.resolved(sampler.nodelist), sampler)
    return float(table["est_qpu_access_time_us"].max())


# -- item 2: another dataset's answers ---------------------------------------------------------------
def test_two_datasets_with_one_seed_never_exchange_answers(qpu, isolated, tmp_path):
    """The README's run-1us / run-20us workflow on one account: the second dataset loses replies
    (found again by label) while its own problems are still PENDING and the first dataset's, with the
    same call ids and seed, are COMPLETED; yet it holds only its own problems and the counts of its
    own physics."""
    fast = qasa.Protocol.grid(1.0, 0.5, reads_per_h=1000, reads_per_call=250, seed=3, annealing_time=1.0)
    slow = qasa.Protocol.grid(1.0, 0.5, reads_per_h=1000, reads_per_call=250, seed=3, annealing_time=20.0)
    with SAPIServer(qpu) as clean_server:                       # what the 20 µs dataset must hold
        reference = qasa.run(slow, _sampler(clean_server), in_flight=4, max_qpu_seconds=BUDGET)
    with SAPIServer(qpu, pending_polls=2) as server:
        first = qasa.run(fast, _sampler(server), tmp_path / "run-1us", in_flight=4, max_qpu_seconds=BUDGET)
        before, posts = server.solved, server.posts
        server.drop_after_posts = {posts + 1, posts + 2, posts + 3}   # the second run's first replies are lost
        second = qasa.run(slow, _sampler(server), tmp_path / "run-20us", in_flight=4, max_qpu_seconds=BUDGET)
        paid = server.solved - before
    assert second.metadata["runs"][-1]["leap"]["found_by_label"] >= 3
    assert not set(first.calls["problem_id"]) & set(second.calls["problem_id"])
    assert paid == len(second.calls) == 20
    assert second.counts.equals(reference.counts)
    assert not second.counts.equals(first.counts)     # the two physics differ: a swap would show
    assert first.metadata["dataset_id"] != second.metadata["dataset_id"]


def test_a_found_problem_is_checked_against_the_call(qpu, isolated):
    """The look-up takes a problem only with the call's exact label, h and parameters, submitted
    within the dataset's life."""
    from qasa.leap import LeapRun, _find_by_label, submission

    from qasa.runner import sampler_parameters

    with SAPIServer(qpu) as server:
        sampler = _sampler(server)
        protocol = PROTOCOL.resolved(sampler.nodelist)
        run = LeapRun(protocol=protocol, sampler=sampler, qubits=np.asarray(protocol.qubits), budget=None,
                      base=sampler_parameters(protocol), dataset_id="feedbeef", created=time.time() - 10)
        call, other = protocol.calls()[:2]
        sub = submission(call, run)
        solver = sampler.solver
        wrong = solver.sample_ising(submission(other, run).h, {}, label=sub.label, **sub.params)   # other h
        wrong.result()
        assert _find_by_label(solver, sub, run.created, set()) is None
        fewer = solver.sample_ising(sub.h, {}, label=sub.label, **dict(sub.params, num_reads=100))
        fewer.result()
        assert _find_by_label(solver, sub, run.created, set()) is None
        right = solver.sample_ising(sub.h, {}, label=sub.label, **sub.params)
        right.result()
        assert _find_by_label(solver, sub, run.created, set()) == right.id
        assert _find_by_label(solver, sub, run.created, {right.id}) is None           # counted already
        assert _find_by_label(solver, sub, time.time() + 3600, set()) is None        # before the dataset


def test_a_recorded_id_of_other_content_is_not_counted(qpu, isolated, tmp_path):
    """``in_flight.json`` naming a problem whose h is another call's (a damaged or copied file): the
    problem is checked before it is counted, and the call is run afresh."""
    out = tmp_path / "d"
    with SAPIServer(qpu) as clean_server:
        reference = qasa.run(PROTOCOL, _sampler(clean_server), in_flight=4, max_qpu_seconds=BUDGET)
    with SAPIServer(qpu, answer_faults={3: "failed"}) as server:
        with pytest.raises(LeapError):
            qasa.run(PROTOCOL, _sampler(server), out, in_flight=1, max_qpu_seconds=BUDGET)
        stored = Dataset.load(out)
        done = set(stored.call_ids)
        todo = [c.call_id for c in PROTOCOL.resolved(_sampler(server).nodelist).calls() if c.call_id not in done]
        foreign = stored.calls["problem_id"].iloc[0]               # an answer of another call
        (out / "in_flight.json").write_text(json.dumps({todo[0]: foreign}))
        ds = qasa.run(PROTOCOL, _sampler(server), out, in_flight=4, max_qpu_seconds=BUDGET)
    assert ds.calls["problem_id"].is_unique
    assert ds.counts.equals(reference.counts)


def test_labels_name_the_dataset_and_the_content(qpu, isolated, tmp_path):
    from qasa.leap import LeapRun, submission
    from qasa.runner import sampler_parameters

    with SAPIServer(qpu) as server:
        sampler = _sampler(server)
        p1 = PROTOCOL.resolved(sampler.nodelist)
        p20 = qasa.Protocol.grid(1.0, 0.5, reads_per_h=500, reads_per_call=250, seed=3,
                                 annealing_time=20.0).resolved(sampler.nodelist)

        def label(p, ident):
            run = LeapRun(protocol=p, sampler=sampler, qubits=np.asarray(p.qubits), base=sampler_parameters(p),
                          budget=None, dataset_id=ident, created=0.0)
            return submission(p.calls()[0], run).label

        assert label(p1, "a") != label(p1, "b")                  # another dataset
        assert label(p1, "a") != label(p20, "a")                 # another annealing time
        assert label(p1, "a") == label(p1, "a")
        ds = qasa.run(PROTOCOL, sampler, tmp_path / "d", in_flight=4, max_qpu_seconds=BUDGET)
        labels = {rec["label"] for rec in server.problems.values()}
    ident = ds.metadata["dataset_id"]
    assert json.loads((tmp_path / "d" / "metadata.json").read_text())["dataset_id"] == ident
    assert all(f"d={ident} c=" in lab for lab in labels) and len(labels) == 10


# -- item 4: lost replies and interruptions ----------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"in_flight": 1}, {"keep_samples": 20}])
def test_sequential_settings_do_not_resubmit_a_lost_reply(qpu, isolated, tmp_path, kwargs):
    with SAPIServer(qpu) as clean_server:
        reference = qasa.run(PROTOCOL, _sampler(clean_server), in_flight=4, max_qpu_seconds=BUDGET)
    with SAPIServer(qpu, drop_after_posts=(2, 5)) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), tmp_path / "seq", backoff=0.01, max_qpu_seconds=BUDGET,
                      **kwargs)
        paid = server.solved
    assert paid == len(ds.calls) == 10
    assert ds.counts.equals(reference.counts)
    if "keep_samples" in kwargs:
        first = ds.calls.sort_values("call_id")["call_id"].iloc[0]
        kept = np.load(tmp_path / "seq" / "samples" / f"{first}.npy")
        assert kept.shape == (20, len(ds.metadata["protocol"]["qubits"])) and set(np.unique(kept)) <= {-1, 1}


#: Problems after the tenth stay pending until the test lets them complete: the signal, sent once five
#: calls are journaled, then always finds calls unanswered. (Without it, with 50 calls in flight every
#: answer could have come before the signal on a loaded CI machine: the run drained its paid calls and
#: ended complete, exit 0.)
_HELD = {n: "never_complete" for n in range(11, 1000)}


def _release(server) -> None:
    """Let the held problems complete, and hold no later one (the resumed run's)."""
    server.answer_faults = {}
    server.complete_all()


def _interrupt(server, out: Path, in_flight: int, sig: int, calls: int = 5) -> int:
    """Run leap_interrupt_worker.py, send ``sig`` once ``calls`` calls are journaled; its exit code."""
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(Path(qasa.__file__).parent.parent)]))
    proc = subprocess.Popen([sys.executable, str(here / "leap_interrupt_worker.py"), server.endpoint,
                             server.solver_name, str(out), str(in_flight)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "journal").glob("*.arrow")) if (out / "journal").is_dir() else []) >= calls:
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)       # Ctrl-C must end the run by itself
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def interrupt_reference(qpu):
    with SAPIServer(qpu) as server:
        return qasa.run(leap_interrupt_worker.protocol(), _sampler(server), in_flight=50, max_qpu_seconds=BUDGET)


@pytest.mark.parametrize("sig, in_flight", [
    pytest.param(signal.SIGINT, 50, id="ctrl-c-50"),
    pytest.param(signal.SIGINT, 1, id="ctrl-c-1", marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, 1000, id="ctrl-c-1000", marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, 1, id="kill-1", marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, 50, id="kill-50", marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, 1000, id="kill-1000", marks=pytest.mark.slow),
])
def test_interrupted_run_pays_each_call_once(qpu, isolated, tmp_path, interrupt_reference, sig, in_flight):
    """Ctrl-C or SIGKILL with calls in flight, then resume: problems paid = calls kept, the counts of
    an uninterrupted run."""
    out = tmp_path / "run"
    with SAPIServer(qpu, pending_polls=2, answer_faults=_HELD) as server:
        code = _interrupt(server, out, in_flight, sig)
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
        assert 5 <= len(Dataset.load(out).call_ids) < len(interrupt_reference.calls)
        path = out / "in_flight.json"    # every problem paid for is journaled or written down as on its way
        on_the_way = json.loads(path.read_text()) if path.is_file() else {}
        assert server.solved <= len(Dataset.load(out).call_ids) + len(on_the_way)
        _release(server)
        resumed = qasa.run(leap_interrupt_worker.protocol(), _sampler(server), out, in_flight=in_flight,
                           max_qpu_seconds=BUDGET)
        paid, paid_us = server.solved, server.paid_us
    assert paid == len(resumed.calls) == len(interrupt_reference.calls)
    assert _recorded_us(resumed) == pytest.approx(paid_us, rel=1e-9)
    assert resumed.counts.equals(interrupt_reference.counts)
    assert not (out / "in_flight.json").exists()


@pytest.mark.slow
def test_random_interruptions_with_lost_replies_pay_each_call_once(qpu, isolated, tmp_path, interrupt_reference):
    """A campaign (``QASA_LEAP_KILL_TRIALS``, default 6): SIGKILL or Ctrl-C at a random moment of a run
    at a random ``--in-flight`` (1, 50, 1000) on a server losing 10 % of its submission replies, then
    resume: problems paid = calls kept and the counts of an uninterrupted run, in every trial."""
    rng = np.random.default_rng(24)
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(Path(qasa.__file__).parent.parent)]))
    for trial in range(int(os.environ.get("QASA_LEAP_KILL_TRIALS", "6"))):
        out = tmp_path / f"t{trial}"
        in_flight = int(rng.choice([1, 50, 1000]))
        sig = signal.SIGKILL if rng.random() < 0.7 else signal.SIGINT
        with SAPIServer(qpu, pending_polls=int(rng.integers(0, 3)), drop_after_rate=0.1, seed=trial) as server:
            proc = subprocess.Popen([sys.executable, str(here / "leap_interrupt_worker.py"), server.endpoint,
                                     server.solver_name, str(out), str(in_flight)], env=env, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while not (out / "metadata.json").exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(float(rng.uniform(0.0, 1.2)))          # from the dataset's creation
            proc.send_signal(sig)
            proc.wait(timeout=60)
            ds = qasa.run(leap_interrupt_worker.protocol(), _sampler(server), out, in_flight=in_flight,
                          backoff=0.01, max_qpu_seconds=BUDGET)
            paid, paid_us = server.solved, server.paid_us
        assert paid == len(ds.calls) == len(interrupt_reference.calls), (trial, in_flight, sig)
        assert _recorded_us(ds) == pytest.approx(paid_us, rel=1e-9), (trial, in_flight, sig)
        assert ds.counts.equals(interrupt_reference.counts), (trial, in_flight, sig)


# -- items 3 and 6: the budget -----------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["nan", "negative", "missing", "abc"])
def test_bad_timing_is_charged_at_the_estimate_and_resumes(qpu, isolated, tmp_path, fault):
    """A timing field that is NaN, negative, missing or not a number: the call is counted, charged at
    the estimate (recorded as such), and a dataset stopped midway resumes (charged the same way)."""
    out = tmp_path / fault
    with SAPIServer(qpu, timing_fault=fault, answer_faults={6: "failed"}) as server:
        with pytest.raises(LeapError, match="the QPU service refused problem"):
            qasa.run(PROTOCOL, _sampler(server), out, in_flight=2, max_qpu_seconds=BUDGET)
        stopped = Dataset.load(out)
        assert 0 < len(stopped.calls) < 10 and (stopped.calls["qpu_access_time"] > 0).all()
        ds = qasa.run(PROTOCOL, _sampler(server), out, in_flight=2, max_qpu_seconds=BUDGET)
        paid_us = server.paid_us
        estimate = _estimate_us(PROTOCOL, _sampler(server))
    assert len(ds.calls) == 10 and (ds.calls["qpu_access_time_source"] == "estimate").all()
    assert np.allclose(ds.calls["qpu_access_time"].to_numpy(float), estimate, rtol=1e-9)
    assert _recorded_us(ds) == pytest.approx(paid_us, rel=1e-6)
    assert ds.metadata["qpu_access_time_total_us"] == pytest.approx(paid_us, rel=1e-6)


def test_server_timing_is_recorded_when_it_is_sound(qpu, isolated):
    with SAPIServer(qpu) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), in_flight=4, max_qpu_seconds=BUDGET)
        paid_us = server.paid_us
    assert (ds.calls["qpu_access_time_source"] == "server").all()
    assert _recorded_us(ds) == pytest.approx(paid_us, rel=1e-12)
    # SAPI's solved_on places each call on the solver's clock (drift analysis reads it)
    from qasa import drift

    t = ds.calls["device_time"].to_numpy(float)
    end = t + 1e-6 * ds.calls["qpu_access_time"].to_numpy(float)         # the start, solved_on less the access time
    assert np.isfinite(t).all() and (end > t).all() and abs(end.max() - time.time()) < 600
    assert drift.call_clock(ds) == "device"


@pytest.mark.parametrize("problem, in_flight", [(1, 4), (10, 1)])
def test_a_short_answer_is_charged_and_the_budget_holds(qpu, isolated, tmp_path, problem, in_flight):
    """An answer one read short is paid for but discarded: charged, so a budget that fits the 10
    calls exactly stops the run before an 11th problem is paid (the collected data are kept) —
    whether another call (the first answer short) or the short call's own resubmission (the last)
    is the one refused."""
    out = tmp_path / "short"
    with SAPIServer(qpu, answer_faults={problem: "fewer_reads"}) as server:
        sampler = _sampler(server)
        estimate = _estimate_us(PROTOCOL, sampler)
        budget_s = 10 * estimate * (1 + 1e-9) / 1e6
        with pytest.raises(BudgetError, match="budget reached"):
            qasa.run(PROTOCOL, sampler, out, in_flight=in_flight, backoff=0.01, max_qpu_seconds=budget_s)
        paid_us, paid = server.paid_us, server.solved
    ds = Dataset.load(out)
    assert len(ds.metadata["discarded_answers"]) == 1
    assert paid == len(ds.calls) + 1 and paid <= 10
    assert _recorded_us(ds) == pytest.approx(paid_us, rel=1e-6)
    assert _recorded_us(ds) <= budget_s * 1e6 + in_flight * estimate * (1 + 1e-6)     # budget + one window


def test_a_solver_slower_than_its_model_stops_within_one_window(qpu, isolated, tmp_path):
    """Every call really takes 100× its estimate: the run stops after the first answer (the window
    opens only once an answer has been charged); what is recorded is what was paid, at most the
    budget plus that one call."""
    out = tmp_path / "slow"
    with SAPIServer(qpu, timing_scale=100.0) as server:
        sampler = _sampler(server)
        estimate = _estimate_us(PROTOCOL, sampler)
        budget_s = 10 * estimate * (1 + 1e-9) / 1e6               # the estimate of the whole run fits
        with pytest.raises(BudgetError, match="budget reached"):
            qasa.run(PROTOCOL, sampler, out, in_flight=2, max_qpu_seconds=budget_s)
        paid_us, paid = server.paid_us, server.solved
    ds = Dataset.load(out)
    assert paid == len(ds.calls) == 1
    assert _recorded_us(ds) == pytest.approx(paid_us, rel=1e-6)
    assert _recorded_us(ds) <= budget_s * 1e6 + 100 * estimate * (1 + 1e-6)


def test_a_resumed_run_counts_what_was_spent(qpu, isolated, tmp_path):
    """Timing missing from every answer: on resume the calls already stored count at their estimate,
    not 0, so a budget for 10 calls is not stretched to 10 more."""
    out = tmp_path / "resume"
    with SAPIServer(qpu, timing_fault="missing") as server:
        sampler = _sampler(server)
        estimate = _estimate_us(PROTOCOL, sampler)
        budget_s = 10 * estimate * (1 + 1e-9) / 1e6
        qasa.run(PROTOCOL, sampler, out, in_flight=4, max_qpu_seconds=budget_s)
        bigger = qasa.Protocol.grid(1.0, 0.5, reads_per_h=1000, reads_per_call=250, seed=3)
        with pytest.raises(BudgetError):
            qasa.run(bigger, sampler, out, extend=True, in_flight=4, max_qpu_seconds=budget_s)
        assert server.solved == 10


# -- item 5: tokens ----------------------------------------------------------------------------------
def test_a_server_echoing_the_token_gets_it_stored_nowhere(qpu, isolated, tmp_path):
    """Problem ids and timing that hold the token: the counts are kept, the token is in no file."""
    out = tmp_path / "echo"
    with SAPIServer(qpu, echo_token_ids=True, timing_fault="token", drop_after_posts=(2,)) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), out, in_flight=2, backoff=0.01, max_qpu_seconds=BUDGET)
        paid = server.solved
    assert len(ds.calls) == paid == 10
    assert ds.calls["problem_id"].str.endswith("<token>").all()
    for f in out.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


@pytest.mark.slow
def test_a_killed_run_against_an_echoing_server_writes_no_token_in_flight(qpu, isolated, tmp_path):
    out = tmp_path / "echo-kill"
    with SAPIServer(qpu, echo_token_ids=True, pending_polls=3, answer_faults=_HELD) as server:
        code = _interrupt(server, out, 50, signal.SIGINT)
        assert code == 130
        text = (out / "in_flight.json").read_text()
        assert "DEV-interrupt-worker-token" not in text and json.loads(text)
        assert all(v is None for v in json.loads(text).values())      # unknown: found again by label
        _release(server)
        ds = qasa.run(leap_interrupt_worker.protocol(), _sampler(server), out, in_flight=50, max_qpu_seconds=BUDGET)
        paid = server.solved
    assert paid == len(ds.calls) == 42


@pytest.mark.parametrize("level", ["TRACE", pytest.param("DEBUG", marks=pytest.mark.slow),
                                   pytest.param("INFO", marks=pytest.mark.slow)])
def test_no_token_in_any_output_at_any_log_level(qpu, tmp_path, level):
    """`qasa run --backend qpu` in a subprocess with DWAVE_LOG_LEVEL: the token authenticates, and
    shows up in neither stdout, stderr nor any file of the dataset."""
    out = tmp_path / "out"
    with SAPIServer(qpu, drop_after_posts=(1,)) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DWAVE")}
        env.update(DWAVE_LOG_LEVEL=level, DWAVE_API_TOKEN=TOKEN, DWAVE_API_ENDPOINT=server.endpoint,
                   HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), QASA_TRACEBACK="1",
                   PYTHONPATH=str(Path(qasa.__file__).parent.parent))
        proc = subprocess.run([sys.executable, "-m", "qasa.cli", "run", str(out), "--backend", "qpu", "--solver",
                               server.solver_name, "--h-step", "0.5", "--reads", "500", "--reads-per-call", "250",
                               "--seed", "3", "--max-qpu-seconds", "100", "--quiet"],
                              env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert TOKEN in server.tokens_seen
    assert proc.returncode == 0, proc.stderr[-2000:]
    if level == "TRACE":
        assert "TRACE" in proc.stderr and "<token>" in proc.stderr     # the config was logged, redacted
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f

"""The real-QPU path, tested without a QPU: the real DWaveSampler and dwave-cloud-client talk HTTP
to a SAPI-compatible test server on 127.0.0.1 backed by the virtual QPU (tests/sapi_server.py)."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import qasa
from qasa.cli import main
from qasa.backend import plan
from qasa.cost import BudgetError
from qasa.dataset import Dataset
from qasa.virtual import VirtualQPU

sys.path.insert(0, str(Path(__file__).parent))
import leap_worker  # noqa: E402
from conftest import kill_worker_midway  # noqa: E402
from sapi_server import SAPIServer  # noqa: E402

#: QPU-time budget for runs on the test server (runs above 10 s of estimated QPU time need one).
BUDGET = 3600.0

TOKEN = "DEV-0000-qasa-test-secret"


@pytest.fixture(scope="module")
def qpu():
    return VirtualQPU(seed=1, topology_shape=[4], broken_nodes=[], drift_sd=0.0)


@pytest.fixture
def isolated(monkeypatch):
    from dwave.cloud.testing import isolated_environ

    with isolated_environ(remove_dwave=True):
        yield monkeypatch


def _sampler(server):
    from dwave.system import DWaveSampler

    return DWaveSampler(endpoint=server.endpoint, token=TOKEN, solver=server.solver_name)


@pytest.mark.slow   # 8 s: a fault storm; test_faults and test_leap_safety keep each fault in the lane
def test_faults_lose_nothing_and_count_nothing_twice(qpu, isolated):
    protocol = qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, reads_per_call=500, seed=3)
    with SAPIServer(qpu) as server:
        clean = qasa.run(protocol, _sampler(server), in_flight=20, max_qpu_seconds=BUDGET)
    with SAPIServer(qpu, fail_rate=0.2, drop_rate=0.05, drop_after_rate=0.1, drop_after_posts=(1, 3),
                    pending_polls=2, seed=7) as server:
        faulty = qasa.run(protocol, _sampler(server), in_flight=20, retries=10, backoff=0.01, max_qpu_seconds=BUDGET)
        # answers lost after the problems were accepted are found again by label, not paid twice...
        assert server.solved == len(faulty.calls)
    assert faulty.metadata["runs"][-1]["leap"]["found_by_label"] >= 2
    assert faulty.counts.equals(clean.counts)             # ...and nothing is counted twice or lost
    assert faulty.calls["problem_id"].notna().all() and faulty.calls["problem_id"].is_unique


@pytest.mark.slow
def test_client_killed_once_resumes_to_the_same_counts(qpu, isolated, tmp_path):
    with SAPIServer(qpu, pending_polls=3) as server:
        reference = qasa.run(leap_worker.protocol(), _sampler(server), in_flight=5, max_qpu_seconds=BUDGET)
        solved_before = server.solved
        out = tmp_path / "killed"
        done = kill_worker_midway("leap_worker.py", [server.endpoint, server.solver_name, out], out, calls=15,
                                  until=_call_in_flight)
        assert 15 <= done < len(reference.calls)
        in_flight = json.loads((out / "in_flight.json").read_text()) if (out / "in_flight.json").is_file() else {}
        in_flight = {c: pid for c, pid in in_flight.items() if c not in Dataset.load(out).call_ids}
        assert in_flight, "a call was in flight at the kill"
        resumed = qasa.run(leap_worker.protocol(), _sampler(server), out, in_flight=5, max_qpu_seconds=BUDGET)
        paid = server.solved - solved_before
    assert resumed.counts.equals(reference.counts)
    # problems in flight at the kill are fetched by id (or, recorded before their id was known, found
    # by label), never paid for again
    assert resumed.metadata["runs"][-1]["reattached_in_flight"] == sum(1 for p in in_flight.values() if p)
    assert paid == len(reference.calls)
    assert not (out / "in_flight.json").exists()


def _call_in_flight(out: Path) -> bool:
    """True when in_flight.json names a problem whose call is not journaled yet."""
    try:
        pending = json.loads((out / "in_flight.json").read_text())
    except (OSError, ValueError):
        return False
    journaled = {p.stem for p in (out / "journal").glob("*.arrow")}
    return any(c not in journaled for c in pending)


def test_estimate_matches_what_the_solver_reports_and_budget_holds(qpu, isolated, tmp_path):
    protocol = qasa.Protocol.grid(1.0, 0.25, reads_per_h=1000, reads_per_call=500, seed=1, annealing_time=10.0)
    with SAPIServer(qpu) as server:
        sampler = _sampler(server)
        table, totals = plan(protocol.resolved(sampler.nodelist), sampler)     # solver.estimate_qpu_access_time
        ds = qasa.run(protocol, sampler, max_qpu_seconds=BUDGET)
        reported = ds.calls.set_index("call_id")["qpu_access_time"]
        assert (abs(reported.loc[table["call_id"]].to_numpy() - table["est_qpu_access_time_us"].to_numpy())
                <= 1e-6 * reported.max()).all()
        with pytest.raises(BudgetError, match="Nothing was submitted"):
            qasa.run(protocol, sampler, tmp_path / "b", max_qpu_seconds=totals["qpu_access_time_s"] / 2)
        before = server.solved
    assert not (tmp_path / "b").exists() and server.solved == before


@pytest.mark.slow   # 4 s: test_leap_safety checks the token at TRACE in the lane
def test_cli_against_the_server_keeps_the_token_out_of_everything(qpu, isolated, tmp_path):
    with SAPIServer(qpu) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        runner = CliRunner()
        res = runner.invoke(main, ["info", "--backend", "qpu", "--solver", server.solver_name, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["solver"] == server.solver_name
        res = runner.invoke(main, ["info", "--backend", "qpu", "--solver", '{"topology__type": "pegasus"}', "--json"])
        assert res.exit_code == 0 and json.loads(res.output)["solver"] == server.solver_name   # chosen by features
        out = tmp_path / "qpu-run"
        big = runner.invoke(main, ["run", str(tmp_path / "big"), "--backend", "qpu", "--solver", server.solver_name])
        assert big.exit_code == 1 and "pass --max-qpu-seconds" in big.output      # ~230 s estimated: refused
        assert not (tmp_path / "big").exists()
        res = runner.invoke(main, ["assess", str(out), "--backend", "qpu", "--solver", server.solver_name,
                                   "--h-step", "0.25", "--reads", "1000", "--json", "--quiet"])
        assert res.exit_code == 0, res.output
        res2 = runner.invoke(main, ["info", "--backend", "qpu", "--solver", "no_such_solver"])
        assert res2.exit_code == 1 and "not found" in res2.output
        assert TOKEN in server.tokens_seen                  # the token was used to authenticate...
    for text in (res.output, res2.output):
        assert TOKEN not in text
    for f in out.rglob("*"):                                # ...and written nowhere
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
    ds = Dataset.load(out)
    assert ds.device["solver"] == server.solver_name and ds.device["properties"]["problem_timing_data"]


def test_a_run_splits_its_parameters_once_through_the_backend():
    """The Leap path filters every call's parameters through the run's ``filter`` (the runner passes
    :meth:`qasa.backend.Backend.filter`): the sampler's accepted names are read once per run, not
    once per submission, and the submissions are those of the per-call filter."""
    import numpy as np

    from qasa.backend import Backend
    from qasa.leap import LeapRun, submission
    from qasa.runner import sampler_parameters

    class Counted:
        reads = 0

        @property
        def parameters(self):
            Counted.reads += 1
            return {"num_reads": [], "annealing_time": [], "answer_mode": [], "auto_scale": [],
                    "flux_drift_compensation": [], "label": []}

        def sample_ising(self, h, J, **kw):        # never called: only the submissions are built
            raise AssertionError

    sampler = Counted()
    protocol = qasa.Protocol.grid(0.5, 0.25, reads_per_h=20, reads_per_call=10, seed=2).resolved([0, 1, 2])
    base = dict(sampler_parameters(protocol), seed=5)            # seed: not accepted, dropped
    kw = dict(protocol=protocol, sampler=sampler, qubits=np.asarray(protocol.qubits), base=base, budget=None,
              dataset_id="feedbeef", created=0.0)
    Counted.reads = 0
    backend = Backend(sampler)
    run = LeapRun(**kw, filter=backend.filter)
    subs = [submission(c, run) for c in protocol.calls()]
    assert Counted.reads == 1 and len(subs) == 10
    plain = [submission(c, LeapRun(**kw)) for c in protocol.calls()]      # default: filter_parameters per call
    assert subs == plain
    assert all("seed" not in s.params and "label" not in s.params for s in subs)
    assert subs[3].label.startswith(f"qasa {protocol.calls()[3].call_id} seed 2 call 3 d=feedbeef c=")

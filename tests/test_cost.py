"""QPU-time estimates, the budget guard, retries of transient faults, solver snapshots."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import qasa
from qasa.cli import main
from qasa.backend import plan
from qasa.cost import BudgetError, timing_model
from qasa.dataset import Dataset
from qasa.virtual import VirtualQPU
from qasa.errors import ProtocolError


@pytest.fixture(scope="module")
def qpu():
    return VirtualQPU(seed=1, topology_shape=[4], broken_nodes=[], drift_sd=0.0)


def test_timing_model_matches_dwave_cloud(qpu):
    from dwave.cloud.solver import StructuredSolver
    from dwave.cloud.testing.mocks import qpu_pegasus_solver_data

    data = qpu.properties["problem_timing_data"]
    solver = StructuredSolver(client=None, data=qpu_pegasus_solver_data(4, problem_timing_data=data))
    for n, reads, ta, rt in ((264, 1000, 20.0, None), (5640, 10_000, 1.0, 50.0), (10, 1, 2000.0, None)):
        mine = timing_model(data, n, reads, ta, readout_thermalization=rt)["qpu_access_time"]
        theirs = solver.estimate_qpu_access_time(num_qubits=n, num_reads=reads, annealing_time=ta, readout_thermalization=rt)
        assert mine == pytest.approx(theirs, rel=1e-9)


def test_estimate_agrees_with_what_the_solver_reports(qpu):
    protocol = qasa.Protocol.grid(1.0, 0.25, reads_per_h=2500, reads_per_call=1000, seed=1, annealing_time=5.0)
    table, totals = plan(protocol.resolved(qpu.nodelist), qpu)
    ds = qasa.run(protocol, qpu)
    reported = ds.calls.set_index("call_id")["qpu_access_time"]
    estimated = table.set_index("call_id")["est_qpu_access_time_us"]
    assert np.allclose(reported.loc[estimated.index], estimated, rtol=1e-9)
    assert totals["qpu_access_time_s"] == pytest.approx(ds.metadata["qpu_access_time_total_us"] / 1e6)
    assert totals["calls"] == 27 and totals["reads"] == 9 * 2500


def test_over_budget_run_never_starts(qpu, tmp_path):
    protocol = qasa.Protocol.grid(1.0, 0.25, reads_per_h=2000, seed=1)
    with pytest.raises(BudgetError, match=r"need an estimated .* s of QPU time .* budget is 1 s. Nothing was submitted"):
        qasa.run(protocol, qpu, tmp_path / "ds", max_qpu_seconds=1.0)
    assert not (tmp_path / "ds").exists()


def test_budget_reached_midway_stops_cleanly_and_resumes(qpu, tmp_path):
    """The solver spends 3× its estimate: the run passes the pre-run check, then stops at the budget."""
    protocol = qasa.Protocol.grid(1.0, 0.25, reads_per_h=2000, reads_per_call=1000, seed=1)
    _, totals = plan(protocol.resolved(qpu.nodelist), qpu)
    reference = qasa.run(protocol, qpu)
    out = tmp_path / "ds"
    with pytest.raises(BudgetError, match="budget reached: .* the collected data are saved"):
        qasa.run(protocol, _Overspending(qpu, factor=3.0), out, max_qpu_seconds=totals["qpu_access_time_s"] * 1.01)
    partial = Dataset.load(out)
    spent = partial.calls["qpu_access_time"].sum() / 1e6
    assert 0 < len(partial.call_ids) < totals["calls"] and spent <= totals["qpu_access_time_s"] * 1.01
    resumed = qasa.run(protocol, qpu, out)          # same device, budget lifted: completes
    assert resumed.counts.equals(reference.counts)


class _Overspending:
    """Reports three times the estimated QPU time (a solver slower than its model)."""

    def __init__(self, child, factor):
        self.child, self.factor = child, factor

    def __getattr__(self, name):
        return getattr(self.child, name)

    def sample_counts(self, h, **kw):
        q, n, info = self.child.sample_counts(h, **kw)
        info = dict(info, timing={**info["timing"], "qpu_access_time": info["timing"]["qpu_access_time"] * self.factor})
        return q, n, info


class _Flaky:
    """Fails 20% of calls with a transient error (seeded), like a 503 or a dropped connection."""

    def __init__(self, child, seed=0):
        self.child = child
        self.rng = np.random.default_rng(seed)
        self.failures = 0

    def __getattr__(self, name):
        return getattr(self.child, name)

    def sample_counts(self, h, **kw):
        if self.rng.random() < 0.2:
            self.failures += 1
            raise ConnectionError("503 Service Unavailable (injected)")
        return self.child.sample_counts(h, **kw)


def test_transient_faults_are_retried_without_double_counting(qpu):
    protocol = qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, seed=4)
    clean = qasa.run(protocol, qpu)
    flaky = _Flaky(qpu)
    faulty = qasa.run(protocol, flaky, retries=8, backoff=0.0)
    assert flaky.failures > 5
    assert faulty.counts.equals(clean.counts)


def test_run_duration_outside_range_is_refused(qpu):
    protocol = qasa.Protocol(h_values=(0.1,), reads_per_h=10_000, reads_per_call=10_000, annealing_time=2000.0)
    with pytest.raises(ProtocolError, match="problem run duration .* outside problem_run_duration_range"):
        qasa.run(protocol, qpu)


class _Recording:
    """Keeps the keyword arguments of every call."""

    def __init__(self, child):
        self.child, self.kwargs = child, []

    def __getattr__(self, name):
        return getattr(self.child, name)

    def sample_counts(self, h, **kw):
        self.kwargs.append(kw)
        return self.child.sample_counts(h, **kw)


def test_dataset_keeps_a_solver_snapshot_and_call_times(qpu):
    recording = _Recording(qpu)
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1), recording)
    props = ds.device["properties"]
    assert props["chip_id"] == "Advantage_system4.1-like" and "qubits" not in props
    assert props["problem_timing_data"]["typical_programming_time"] > 0
    assert (ds.calls["finished"] >= ds.calls["started"]).all()
    # drift compensation off and no rescaling on every call, as recorded in the protocol
    assert all(kw["flux_drift_compensation"] is False and kw["auto_scale"] is False for kw in recording.kwargs)
    assert ds.metadata["protocol"]["flux_drift_compensation"] is False and len(recording.kwargs) == 5


def test_cli_plan_and_dry_run_submit_nothing(tmp_path):
    res = CliRunner().invoke(main, ["plan", "--shape", "4", "--reads", "10000", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["calls"] == 810 and data["qpu_access_time_s"] > 0
    res = CliRunner().invoke(main, ["run", str(tmp_path / "x"), "--shape", "4", "--dry-run"])
    assert res.exit_code == 0 and "estimated QPU access time" in res.output
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(main, ["run", str(tmp_path / "x"), "--shape", "4", "--max-qpu-seconds", "0.5"])
    assert res.exit_code == 1 and "Nothing was submitted" in res.output and not (tmp_path / "x").exists()


def test_no_token_is_ever_written(tmp_path, monkeypatch):
    """A dummy token in the environment appears in nothing qasa writes or prints."""
    token = "DEV-0123456789abcdef-secret-token"
    monkeypatch.setenv("DWAVE_API_TOKEN", token)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["assess", str(out), "--shape", "3", "--h-step", "0.25", "--reads", "1000",
                                    "--json", "--quiet"])
    assert res.exit_code == 0 and token not in res.output, (res.output[-2000:], repr(res.exception))
    for f in out.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f

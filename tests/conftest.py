"""Shared fixtures: small, seeded samplers so that every test is fast and reproducible."""

from __future__ import annotations

import warnings

import dimod
import numpy as np
import pytest

import qasa


class BiasedGibbsSampler(dimod.Sampler, dimod.Structured):
    """Exact Boltzmann draws for isolated spins with a static per-qubit bias ``b0``.

    Each qubit i returns -1 with probability ``(1 + tanh(β (h_i + b0_i))) / 2``: the truth is the
    ``gibbs-bias`` model. Seeded per call. Used to test gauge handling end to end.
    """

    def __init__(self, nodes, beta, b0):
        self._nodes = list(nodes)
        self.beta = beta
        self.b0 = dict(zip(self._nodes, b0))

    nodelist = property(lambda self: self._nodes)
    edgelist = property(lambda self: [])
    properties = property(lambda self: {"h_range": [-4.0, 4.0], "num_reads_range": [1, 100_000]})
    parameters = property(lambda self: {"num_reads": [], "seed": []})

    def sample(self, bqm, num_reads=1, seed=None):
        rng = np.random.default_rng(seed)
        variables = list(bqm.variables)
        h = np.array([bqm.linear[v] + self.b0[v] for v in variables])
        p_down = 0.5 * (1 + np.tanh(self.beta * h))
        spins = np.where(rng.random((num_reads, len(variables))) < p_down, -1, 1).astype(np.int8)
        return dimod.SampleSet.from_samples_bqm((spins, variables), bqm)


class FailingSampler(dimod.Sampler, dimod.Structured):
    """Wraps a sampler and raises after ``fail_after`` calls (a real interruption of a run)."""

    def __init__(self, child, fail_after):
        self.child = child
        self.fail_after = fail_after
        self.calls = 0

    nodelist = property(lambda self: self.child.nodelist)
    edgelist = property(lambda self: self.child.edgelist)
    properties = property(lambda self: self.child.properties)
    parameters = property(lambda self: self.child.parameters)
    qasa_settings = property(lambda self: getattr(self.child, "qasa_settings", None))   # the same device

    def sample(self, bqm, **kwargs):
        if self.calls >= self.fail_after:
            raise ConnectionError("simulated lost connection")
        self.calls += 1
        return self.child.sample(bqm, **kwargs)


@pytest.fixture
def chimera_sa():
    """Exact Gibbs sampler at β = 5 on a Chimera C4 graph (128 qubits)."""
    return qasa.get_sampler("sa", topology_type="chimera", topology_shape=[4, 4, 4], beta=5.0)


@pytest.fixture
def small_protocol():
    return qasa.Protocol.grid(1.0, 0.1, reads_per_h=400, reads_per_call=200, seed=7)


@pytest.fixture(autouse=True)
def _no_dwave_networkx_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def kill_worker_midway(script: str, args: list[str], out, calls: int, timeout: float = 90.0, until=None) -> int:
    """Run ``tests/<script>`` in a subprocess, SIGKILL it once ``calls`` calls are journaled in
    ``out`` (and ``until(out)`` holds, if given), and return the number of calls the dataset then
    holds (a real interruption)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(here / script), *map(str, args)], env=env)
    journal = Path(out) / "journal"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(journal.glob("*.arrow")) if journal.is_dir() else []) >= calls:   # journal parts
            proc.send_signal(signal.SIGSTOP)          # freeze it, then decide: no race with its next write
            if until is None or until(out):
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(qasa.Dataset.load(out).call_ids)


# -- the Leap tests' device and isolation (tests/test_faults.py, tests/test_leap_safety.py) ---------------
@pytest.fixture(scope="module")
def qpu():
    """A small fully yielded virtual QPU without drift, served by tests/sapi_server.py."""
    from qasa.virtual import VirtualQPU

    return VirtualQPU(seed=1, topology_shape=[3], broken_nodes=[], drift_sd=0.0)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No D-Wave configuration, environment or user files of this machine reach the test; cwd is tmp_path."""
    from dwave.cloud.testing import isolated_environ

    with isolated_environ(remove_dwave=True):
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.chdir(tmp_path)
        yield monkeypatch

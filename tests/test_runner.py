"""End-to-end runs: thermal truth recovered, gauges undone, resume after real interruptions."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

import qasa
from qasa.dataset import Dataset
from qasa.errors import DatasetError, ProtocolError
from qasa.fitting import fit
from qasa.report import pooled_temperature

sys.path.insert(0, str(Path(__file__).parent))
from conftest import BiasedGibbsSampler, FailingSampler, kill_worker_midway  # noqa: E402
import resume_worker  # noqa: E402


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_sa_gibbs_beta_recovered_for_every_qubit(chimera_sa):
    protocol = qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, reads_per_call=1000, seed=5)
    ds = qasa.run(protocol, chimera_sa)
    t = fit(ds, "gibbs").table
    # the lack-of-fit test at p < 1e-3 flags 0.1% of correct qubits: at most 2 of 128 (P(≥3) ≈ 3e-4)
    assert (t["quality"] != "good").sum() <= 2
    z = (t["beta"] - 5.0) / t["beta_stderr"]
    assert 0.92 <= np.mean(np.abs(z) < 1.96) <= 0.985     # each within its uncertainty, ~95% of qubits
    assert abs(z.mean()) < 4 / np.sqrt(len(z))              # no bias
    # the pooled estimate agrees with D-Wave's own estimator run on the same sampler
    from dwave.system.temperatures import fast_effective_temperature

    pooled = pooled_temperature(ds)
    t_fast, _ = fast_effective_temperature(chimera_sa, num_reads=5000, seed=3,
                                           sampler_params={"num_reads": 5000, "seed": 3})
    assert pooled["T_eff"] == pytest.approx(0.2, abs=3 * pooled["T_eff_stderr"])
    assert t_fast == pytest.approx(pooled["T_eff"], rel=0.01)


def test_mock_backend_runs_through_mock_dwave_sampler():
    from dwave.system.testing import MockDWaveSampler

    mock = qasa.get_sampler("mock", topology_type="chimera", topology_shape=[2, 2, 4], beta=4.0)
    assert type(mock) is MockDWaveSampler
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, seed=1, annealing_time=20.0), mock)
    assert ds.metadata["qpu_access_time_total_us"] == pytest.approx(8550.28 * 42)  # mock's fake timing, 2 calls per h
    again = qasa.run(qasa.Protocol.grid(1.0, 0.1, reads_per_h=2000, seed=1, annealing_time=20.0), mock)
    assert again.counts.equals(ds.counts)          # each call is seeded: the mock is reproducible
    s = fit(ds, "gibbs").summary()
    assert s["quality"].get("good", 0) >= 31         # lack of fit at p < 1e-3 flags ~0.1 % of correct qubits
    assert s["beta"]["median"] == pytest.approx(4.0, rel=0.03)


def test_gauges_are_recorded_so_a_static_bias_stays_identified():
    rng = np.random.default_rng(0)
    nodes = list(range(40))
    b0 = rng.choice([-1, 1], 40) * rng.uniform(0.03, 0.08, 40)
    sampler = BiasedGibbsSampler(nodes, beta=6.0, b0=b0)
    base = qasa.Protocol.grid(1.0, 0.05, reads_per_h=4000, reads_per_call=200, seed=3)
    # without gauges the static bias is seen as b
    plain = fit(qasa.run(base.replace(spin_reversal=False), sampler), "gibbs-bias").table
    assert np.all(np.abs(plain["b"] - b0) < 4 * plain["b_stderr"])
    # with gauges (20 per h) the programmed frame (the default) still sees b: each call's gauge is kept
    ds = qasa.run(base, sampler)
    assert set(np.unique(ds.counts["gauge"])) == {-1, 1}
    gauged = fit(ds, "gibbs-bias").table
    assert np.all(np.abs(gauged["b"] - b0) < 4 * gauged["b_stderr"])
    # in the nominal frame (gauges undone and summed) it becomes b ≈ 0 and η ≈ |b0| (the confusion
    # a gauge-blind fit makes)
    nominal = fit(ds.response(frame="nominal"), "qasa", between_calls=False).table
    assert np.all(np.abs(nominal["eta"] - np.abs(b0)) < 4 * nominal["eta_stderr"])
    assert np.median(np.abs(nominal["b"])) < 0.2 * np.median(np.abs(b0))
    # ... which the default fit reads as what it is in that frame, a per-call offset ±b0: σ_call ≈ |b0|
    calls = fit(ds.response(frame="nominal"), "qasa").table
    on = calls["sigma_call_identified"].to_numpy()
    assert on.mean() > 0.7 and np.corrcoef(calls["sigma_call"][on], np.abs(b0)[on])[0, 1] > 0.9
    # a dataset written before gauges were stored gets them back from its protocol seed
    old = qasa.Dataset(ds.counts.drop(columns="gauge"), ds.calls, ds.metadata)
    assert (old.gauges() == ds.counts["gauge"].to_numpy()).all()


def test_resume_after_an_exception_equals_an_uninterrupted_run(chimera_sa, small_protocol, tmp_path):
    reference = qasa.run(small_protocol, chimera_sa, tmp_path / "ref")
    flaky = FailingSampler(chimera_sa, fail_after=7)
    with pytest.raises(ConnectionError):
        qasa.run(small_protocol, flaky, tmp_path / "run", retries=0)
    partial = Dataset.load(tmp_path / "run")
    assert len(partial.call_ids) == 7 and len(partial.calls) == 7
    assert partial.metadata["failures"][0]["error"] == "ConnectionError: simulated lost connection"
    resumed = qasa.run(small_protocol, chimera_sa, tmp_path / "run")
    assert resumed.counts.equals(reference.counts)
    assert len(resumed.metadata["runs"]) == 2
    assert not list((tmp_path / "run" / "journal").glob("*.*"))   # compacted


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    done = kill_worker_midway("resume_worker.py", [out, "0.05"], out, calls=10)
    total = resume_worker.protocol().calls_per_h * 21
    assert 10 <= done < total, "the worker must be killed mid-run"
    resumed = qasa.run(resume_worker.protocol(), resume_worker.sampler(), out)
    reference = qasa.run(resume_worker.protocol(), resume_worker.sampler())
    assert resumed.counts.equals(reference.counts)


def test_other_protocol_in_the_same_directory_is_refused_and_nothing_changes(chimera_sa, small_protocol, tmp_path):
    out = tmp_path / "ds"
    qasa.run(small_protocol, FailingSampler(chimera_sa, 1000), out)
    before = _digest(out)
    with pytest.raises(DatasetError, match=r"different protocol \(reads_per_h: stored 400, requested 800\)"):
        qasa.run(small_protocol.replace(reads_per_h=800), chimera_sa, out)
    with pytest.raises(DatasetError, match="different protocol"):
        qasa.run(small_protocol.replace(seed=8), chimera_sa, out)
    assert _digest(out) == before


@pytest.mark.parametrize("change, error", [
    ({"h_values": (-3.0, 3.0)}, ProtocolError),
    ({"reads_per_call": 20_000, "reads_per_h": 20_000}, ProtocolError),
    ({"qubits": (0, 1, 123456)}, ProtocolError),
])
def test_bad_input_fails_before_any_call(chimera_sa, small_protocol, tmp_path, change, error):
    out = tmp_path / "fresh"
    counting = FailingSampler(chimera_sa, 0)   # any call would raise ConnectionError
    with pytest.raises(error):
        qasa.run(small_protocol.replace(**change), counting, out)
    assert not out.exists()


def test_seed_is_recorded_and_reused_on_resume(chimera_sa, tmp_path):
    p = qasa.Protocol.grid(1.0, 0.5, reads_per_h=100, qubits=(0, 1, 2))
    ds = qasa.run(p, chimera_sa, tmp_path / "ds")
    assert ds.protocol.seed is not None
    again = qasa.run(p, chimera_sa, tmp_path / "ds")           # no seed given: the stored one is used
    assert again.counts.equals(ds.counts)


def test_reduction_weights_occurrences_and_undoes_gauges():
    import dimod

    from qasa.runner import reduce_sampleset

    ss = dimod.SampleSet.from_samples(([[1, -1], [-1, -1], [1, 1]], [7, 3]), "SPIN", energy=[0, 0, 0],
                                      num_occurrences=[5, 2, 1])
    n_down, n_up = reduce_sampleset(ss, [3, 7], np.array([1, -1]))
    # qubit 3 (flip +1): returned -1, -1, +1 with weights 5, 2, 1 → down = 7
    # qubit 7 (flip -1): returned +1, -1, +1 → nominal -1, +1, -1 → down = 5 + 1 = 6
    assert n_down.tolist() == [7, 6] and n_up.tolist() == [1, 2]

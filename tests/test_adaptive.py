"""Adaptive assessment: unbiased estimates on two different samplers, the stopping rule, the budget,
resume after SIGKILL equal to an uninterrupted run, settings and target checks, expected cost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from adaptive_worker import assess
from conftest import kill_worker_midway
from qasa_sampler import CallNoiseSampler, QASAModelCountSampler

import qasa
from qasa import adaptive as A
from qasa import design as D
from qasa.cost import BudgetError
from qasa.errors import DatasetError

PARAMS = ["beta", "b", "gamma", "eta"]


def _unbiased(ds, truth, qubits):
    """Mean error over qubits within 3.5 standard errors of zero, for every parameter."""
    f = A.fit_with_restarts(ds.response(qubits=qubits), "qasa").table.set_index("qubit").loc[list(qubits)]
    for p in PARAMS:
        err = f[p].to_numpy(float) - truth.loc[list(qubits), p].to_numpy(float)
        assert np.isfinite(err).all()
        se = err.std(ddof=1) / np.sqrt(len(err))
        assert abs(err.mean()) < 3.5 * se, (p, err.mean(), se)
    return f


def _check_result(ds, target, fraction=0.95):
    res = ds.metadata["adaptive"]["result"]
    assert res["stopped"] == "target" and res["fraction_met"] >= fraction
    st = A.precision_status(A.fit_with_restarts(ds.response(), "qasa"), target)
    assert st.fraction == pytest.approx(res["fraction_met"])
    return res


@pytest.mark.slow
def test_adaptive_estimates_are_unbiased_on_the_qasa_model_sampler(tmp_path):
    """A sampler that is not the virtual QPU: independent per-qubit truth, β 3–10, |b| ~ 0.02."""
    s = QASAModelCountSampler(qubits=150, seed=8, eta=(0.04, 0.08), eta_zero_fraction=0.0)
    target = {"beta": "2%", "b": 0.004, "eta": 0.015}
    ds = A.assess_adaptive(s, tmp_path / "a", target, protocol=A.pilot_protocol(5000, h_step=0.1, seed=2))
    res = _check_result(ds, target)
    truth = s.truth.set_index("qubit")
    _unbiased(ds, truth, tuple(s.nodelist))
    # per-qubit fields on the 0.005 grid, recorded per (call, qubit); each round's plan on disk
    designed = ds.counts[ds.counts["call_id"].str.startswith("a")]
    assert designed.groupby("call_id")["h"].nunique().max() > 1
    assert np.allclose(designed["h"] / 0.005, np.round(designed["h"] / 0.005))
    plans = sorted((tmp_path / "a" / "design").glob("round-*.json"))
    assert len(plans) == res["rounds"] >= 1
    # cheaper than the reference grid would be for the same Cramér–Rao precision at the truth
    theta = truth.loc[list(s.nodelist), PARAMS].to_numpy()
    t = D.sd_targets("qasa", target, theta)
    grid = np.array(qasa.h_grid(1.0, 0.025))
    need_ref = np.quantile(D.required_reads("qasa", theta, grid, np.ones(len(grid)), t), 0.95)
    assert res["reads_per_qubit"] < need_ref


@pytest.mark.slow   # 25 s: a statistical study; the adaptive path keeps fast resume/budget/feasibility tests
def test_adaptive_estimates_are_unbiased_on_the_virtual_qpu(tmp_path):
    # ideal: the design's information is the QASA model's, without the per-call errors of a real QPU
    # (under those, rounds of few calls cannot reach b 0.004: a known limit of the design, see the README)
    s = qasa.get_sampler("emulator", topology_type="pegasus", topology_shape=[4], seed=3, drift_sd=0.0,
                         readout_error_max=0.0, eta_mean=0.05, ideal=True)
    qubits = tuple(sorted(s.nodelist)[:120])
    target = {"beta": "1.5%", "b": 0.004, "eta": 0.015}
    ds = A.assess_adaptive(s, tmp_path / "v", target, protocol=A.pilot_protocol(10_000, seed=5, qubits=qubits))
    res = _check_result(ds, target)
    assert res["qpu_access_time_s"] == pytest.approx(np.nansum(ds.calls["qpu_access_time"]) / 1e6)
    _unbiased(ds, s.truth, qubits)
    # the report's T_eff comes from the pilot grid (the same field on every qubit): within 3σ of the
    # device's T_eff, where pooling the rounds' per-qubit fields is biased (0.1917 vs 0.1985, 4.9σ)
    from qasa.analysis import _temperature, analyze

    expected = s.pooled_teff(s.truth.loc[list(qubits)])
    t = analyze(ds, qasa.fit(ds, "qasa"), split_half=False).temperature
    assert abs(t["T_eff"] - expected) < 3 * t["T_eff_stderr"], (t["T_eff"], expected)
    pooled_all = _temperature(ds.response())
    assert abs(pooled_all["T_eff"] - expected) > 3 * pooled_all["T_eff_stderr"]
    assert "pilot grid" in t["method"]
    # per-qubit fields on the 0.005 grid, recorded per (call, qubit); each round's plan on disk
    designed = ds.counts[ds.counts["call_id"].str.startswith("a")]
    assert designed.groupby("call_id")["h"].nunique().max() > 1
    assert np.allclose(designed["h"] / 0.005, np.round(designed["h"] / 0.005))
    assert len(sorted((tmp_path / "v" / "design").glob("round-*.json"))) == res["rounds"] >= 1
    # cheaper than the reference grid would be for the same Cramér–Rao precision at the truth
    theta = s.truth.loc[list(qubits), PARAMS].to_numpy()
    grid = np.array(qasa.h_grid(1.0, 0.025))
    need_ref = np.quantile(D.required_reads("qasa", theta, grid, np.ones(len(grid)), D.sd_targets("qasa", target, theta)),
                           0.95)
    assert res["reads_per_qubit"] < need_ref


def test_budget_stops_the_adaptive_assessment_within_it(tmp_path):
    s = qasa.get_sampler("emulator", topology_type="pegasus", topology_shape=[4], seed=3)
    qubits = tuple(sorted(s.nodelist)[:30])
    pilot = A.pilot_protocol(2000, seed=1, qubits=qubits)
    # the feasibility bound lifted: this test is about the budget binding first
    ds = A.assess_adaptive(s, tmp_path / "b", "beta=0.5%,b=0.001,eta=0.005", protocol=pilot, max_qpu_seconds=40.0,
                           max_reads_per_qubit=1e13)
    res = ds.metadata["adaptive"]["result"]
    assert res["stopped"] == "budget"
    assert 20.0 < res["qpu_access_time_s"] <= 40.0
    assert res["fraction_met"] < 0.95
    # a budget below the pilot: nothing is submitted
    with pytest.raises(BudgetError):
        A.assess_adaptive(s, tmp_path / "c", "beta=1%", protocol=pilot, max_qpu_seconds=1.0)
    assert not (tmp_path / "c" / "metadata.json").exists()


def test_bad_target_or_options_fail_before_any_call_and_other_settings_are_refused(tmp_path):
    s = QASAModelCountSampler(qubits=10, seed=1)
    for target, msg in (("beta=1%,tau=2", "not a parameter"), ({"b": -1}, "positive"), ("", "empty")):
        with pytest.raises(ValueError, match=msg):
            A.assess_adaptive(s, tmp_path / "x", target)
    with pytest.raises(ValueError, match="fraction"):
        A.assess_adaptive(s, tmp_path / "x", "beta=1%", fraction=1.5)
    with pytest.raises(ValueError, match="output directory"):
        A.assess_adaptive(s, None, "beta=1%")
    assert not (tmp_path / "x").exists()
    pilot = A.pilot_protocol(2000, h_step=0.1, seed=3)
    A.assess_adaptive(s, tmp_path / "y", "beta=20%", protocol=pilot)
    before = qasa.Dataset.load(tmp_path / "y")
    with pytest.raises(DatasetError, match="other settings"):
        A.assess_adaptive(s, tmp_path / "y", "beta=10%", protocol=pilot)
    assert qasa.Dataset.load(tmp_path / "y").counts.equals(before.counts)


def test_resume_after_an_interruption_mid_round_gives_the_data_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """The client crashes in the middle of the designed round (in process, on a small device: the
    SIGKILL version is in the slow lane); assessing the directory again finishes it with the counts
    and plan of an uninterrupted run, and once finished submits nothing."""
    from adaptive_worker import SlowCounts

    def small(out):
        s = SlowCounts(0.0, qubits=20, seed=4, eta=(0.04, 0.08), eta_zero_fraction=0.0)
        return A.assess_adaptive(s, out, {"beta": "3%", "b": 0.006},
                                 protocol=A.pilot_protocol(5000, h_step=0.1, seed=17))

    whole = small(tmp_path / "whole")
    pilot = int((~whole.calls["call_id"].str.startswith("a")).sum())
    designed = len(whole.calls) - pilot
    assert designed >= 10
    real, calls = SlowCounts.sample_counts, []

    def lost_mid_round(self, h, **kw):
        calls.append(1)
        if len(calls) > pilot + designed // 2:
            raise RuntimeError("simulated crash")     # not retried (a lost connection would be)
        return real(self, h, **kw)

    monkeypatch.setattr(SlowCounts, "sample_counts", lost_mid_round)
    with pytest.raises(RuntimeError, match="simulated crash"):
        small(tmp_path / "cut")
    monkeypatch.undo()
    assert (tmp_path / "cut" / "design" / "round-001.json").is_file()
    assert len(qasa.Dataset.load(tmp_path / "cut").calls) == pilot + designed // 2
    resumed = small(tmp_path / "cut")
    assert resumed.sorted().counts.equals(whole.sorted().counts)
    plans = sorted((tmp_path / "whole" / "design").glob("round-*.json"))
    assert plans
    for p in plans:
        x, y = json.loads(p.read_text()), json.loads((tmp_path / "cut" / "design" / p.name).read_text())
        x.pop("created"), y.pop("created")
        assert x == y
    calls.clear()
    monkeypatch.setattr(SlowCounts, "sample_counts", lost_mid_round)
    assert small(tmp_path / "cut").sorted().counts.equals(whole.sorted().counts) and not calls


@pytest.mark.slow
def test_resume_after_sigkill_mid_round_gives_the_data_of_an_uninterrupted_run(tmp_path):
    whole = assess(tmp_path / "whole")
    res = whole.metadata["adaptive"]["result"]
    assert res["stopped"] == "target" and res["rounds"] >= 2

    def mid_round(out):
        return (out / "design" / "round-001.json").is_file()

    done = kill_worker_midway("adaptive_worker.py", [tmp_path / "killed", 0.02], tmp_path / "killed", 3,
                              until=mid_round)
    assert done < len(whole.calls)
    resumed = assess(tmp_path / "killed")
    a, b = whole.sorted(), resumed.sorted()
    assert a.counts.equals(b.counts)
    for p in sorted((tmp_path / "whole" / "design").glob("round-*.json")):
        x, y = json.loads(p.read_text()), json.loads((tmp_path / "killed" / "design" / p.name).read_text())
        x.pop("created"), y.pop("created")
        assert x == y
    res_b = resumed.metadata["adaptive"]["result"]
    assert {k: res_b[k] for k in ("stopped", "rounds", "fraction_met", "reads_per_qubit", "calls")} == \
        {k: res[k] for k in ("stopped", "rounds", "fraction_met", "reads_per_qubit", "calls")}
    # running again on a finished assessment submits nothing
    again = assess(tmp_path / "killed")
    assert again.sorted().counts.equals(b.counts)


def test_expected_cost_of_the_adaptive_plan_is_a_fraction_of_the_reference_grid():
    s = qasa.get_sampler("emulator", topology_type="pegasus", topology_shape=[4], seed=3)
    cost = A.expected_cost(s, "beta=1%,b=0.003,eta=0.01", protocol=A.pilot_protocol(qubits=tuple(s.nodelist[:50])))
    assert 2.0 < cost["ratio"] < 3.5
    assert cost["adaptive"]["qpu_access_time_s"] < cost["reference"]["qpu_access_time_s"]
    assert cost["adaptive"]["calls"] >= cost["adaptive"]["pilot_calls"] == 41


@pytest.mark.slow
def test_cli_adaptive_assess(tmp_path):
    from click.testing import CliRunner

    from qasa.cli import main

    out = tmp_path / "run"
    # --ideal: the design does not know a real QPU's per-call errors yet (README, adaptive design)
    r = CliRunner().invoke(main, ["assess", str(out), "--design", "adaptive", "--target", "beta=2%,b=0.005",
                                  "--num-qubits", "20", "--ideal", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["adaptive"]["stopped"] == "target" and data["adaptive"]["qpu_access_time_s"] > 0
    # `qasa run DIR` on it points to the adaptive command, not to --add-reads (which would extend the pilot)
    r = CliRunner().invoke(main, ["run", str(out)])
    assert r.exit_code == 0 and "--design adaptive" in r.output and "would extend only its pilot" in r.output


@pytest.mark.slow   # 15 s
def test_cli_adaptive_on_the_noisy_virtual_qpu_stops_where_the_dac_caps_the_target(tmp_path):
    """The default virtual QPU (its h DAC rounds every programmed value: σ̂_field 0.002–0.004), 120 qubits,
    β 1.5 %, b 0.004, η 0.015: the plan after the first round holds the fitted σ_field, finds the target
    beyond what the fields can tell and stops as infeasible, saying why (measured: after one round and
    455 s of QPU time; the design without σ_field: two rounds and 1 819 s, and with a feasibility bound of
    10⁹ six rounds and 32 097 s to "stalled")."""
    from click.testing import CliRunner

    from qasa.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["assess", str(out), "--design", "adaptive", "--target", "beta=1.5%,b=0.004,eta=0.015",
                                  "--num-qubits", "120", "--quiet"])
    assert r.exit_code == 0, r.output
    res = qasa.Dataset.load(out).metadata["adaptive"]["result"]
    assert res["stopped"] == "infeasible" and res["rounds"] <= 2 and 0.001 < res["sigma_field"] < 0.006
    assert res["qpu_access_time_s"] < 2000
    assert "per-field error σ_field" in r.output and "relax the target" in r.output


def test_cli_adaptive_target_errors_and_plan(tmp_path):
    from click.testing import CliRunner

    from qasa.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["assess", str(tmp_path / "z"), "--design", "adaptive", "--target", "beta=two"])
    assert r.exit_code != 0 and "--target" in r.output and "not a number" in r.output
    assert not (tmp_path / "z").exists()
    r = runner.invoke(main, ["assess", str(tmp_path / "z"), "--design", "adaptive"])
    assert r.exit_code != 0 and "needs --target" in r.output
    r = runner.invoke(main, ["plan", "--design", "adaptive", "--target", "beta=1%,b=0.003,eta=0.01",
                             "--num-qubits", "50"])
    assert r.exit_code == 0 and "reference/adaptive" in r.output, r.output


@pytest.mark.parametrize("kwargs, match", [
    ({"step": 1e-9}, "step=1e-09 gives .* candidate fields"),
    ({"h_range": (0, 0)}, r"h_range=\(0, 0\) must be an increasing pair"),
    ({"h_range": (0, float("nan"))}, "must be an increasing pair of finite numbers"),
    ({"max_reads_per_qubit": 0}, "max_reads_per_qubit=0 must be a finite number > 0"),
])
def test_bad_design_options_are_refused_before_the_pilot_runs(tmp_path, kwargs, match):
    out = tmp_path / "a"
    with pytest.raises(ValueError, match=match):
        A.assess_adaptive(QASAModelCountSampler(qubits=4, seed=1), out, "beta=2%",
                          protocol=A.pilot_protocol(2000, h_step=0.2, seed=1), **kwargs)
    assert not out.exists()


def test_an_unreachable_target_stops_as_infeasible_after_the_pilot(tmp_path):
    """β to 0.001 % needs ~10¹² reads per qubit: the design says so after the pilot and stops, instead of
    growing rounds (each up to 3× the reads so far) towards it."""
    out = tmp_path / "a"
    ds = A.assess_adaptive(QASAModelCountSampler(qubits=6, seed=1), out, "beta=0.001%",
                           protocol=A.pilot_protocol(2000, h_step=0.2, seed=1))
    res = ds.metadata["adaptive"]["result"]
    assert res["stopped"] == "infeasible" and res["rounds"] == 0
    assert res["qpu_access_time_s"] is None          # a sampler without timing: none recorded, not 0.0
    assert res["predicted_reads_per_qubit"] is None or res["predicted_reads_per_qubit"] > 1e10
    pilot_calls = A.pilot_protocol(2000, h_step=0.2, seed=1).num_calls
    assert len(ds.calls) == pilot_calls                 # nothing beyond the pilot was spent


def test_a_one_sided_interval_meets_a_target_only_if_it_reaches_no_farther_than_the_target():
    """η̂ = 0 with η ∈ [0, 0.02] does not meet ±0.01 (the old rule took (hi − lo)/2 = 0.01 and said it did);
    a two-sided [0.04, 0.06] around 0.05 does."""
    import pandas as pd

    from qasa.fitting import FitTable

    t = pd.DataFrame({"qubit": [1, 2, 3], "beta": 5.0, "b": 0.0, "gamma": 0.1, "eta": [0.0, 0.05, 0.0],
                      "eta_lo": [0.0, 0.041, 0.0], "eta_hi": [0.02, 0.059, 0.0099], "quality": "good"})
    for p in ("beta", "b", "gamma"):
        t[f"{p}_stderr"] = 0.001
    st = A.precision_status(FitTable(t, "qasa"), {"eta": 0.01})
    assert st.met.tolist() == [False, True, True]
    np.testing.assert_allclose(st.half_width[:, 3], [0.02, 0.009, 0.0099])


def test_an_interval_that_assumes_no_between_call_noise_meets_no_target_and_the_plan_repeats_calls():
    """The pilot (one call per field) does not identify σ_call, so its intervals assume none: on a sampler
    with σ_call = 0.01 they meet b 0.01 on most qubits yet are too short. A fit that had per-call counts
    (meta "likelihood") counts such qubits as missing the target, a hand-made table does not, and the next
    plan gives them at least MIN_CALL_DF + 8 calls (the repeats that identify σ_call)."""
    from qasa.fitting import MIN_CALL_DF

    s = CallNoiseSampler(30, seed=41, sigma_call=0.01)
    ds = qasa.run(A.pilot_protocol(10_000, seed=42), s)
    r = ds.response()
    fits = A.fit_with_restarts(r, "qasa")
    assert "likelihood" in fits.meta and not fits.table["sigma_call_identified"].any()
    target = {"b": 0.01}
    assert A.precision_status(fits, target).fraction == 0.0
    bare = type(fits)(fits.table, "qasa")                              # no meta: nothing says σ_call was checked
    assert A.precision_status(bare, target).fraction > 0.5
    plan = A.plan_round("qasa", r, fits, target, D.candidate_fields((-1.0, 1.0)), reads_per_call=10_000)
    assert plan["calls"] >= MIN_CALL_DF + 8


def test_the_rounds_calls_follow_the_pilots_on_the_run_order(tmp_path):
    """A round's calls take the next positions of the run (the virtual QPU's clock places a call at its
    position: with the index's 10⁶ per round a round ran a month after the pilot, under another 1/f offset)."""
    ds = A.assess_adaptive(QASAModelCountSampler(qubits=12, seed=3), tmp_path / "p", "beta=3%",
                           protocol=A.pilot_protocol(2000, h_step=0.2, seed=3), max_rounds=2)
    assert ds.metadata["adaptive"]["result"]["rounds"] >= 1
    pos = np.sort(ds.calls["position"].to_numpy())
    np.testing.assert_array_equal(pos, np.arange(len(ds.calls)))


def test_a_target_is_tightened_by_how_much_the_fits_interval_exceeds_the_information():
    """An unmet qubit whose b interval is 1.5× the Cramér–Rao half-width of its data designs for b's target
    ÷ 1.5; one 5× wider for ÷ 2 (the cap); a met qubit and an untargeted parameter keep theirs."""
    prior = np.tile(np.diag([1e4, 1e6, 1e4, 1e4, 1.0]), (3, 1, 1))            # sd of b: 0.001
    z = D.z_value(0.95)
    hw = np.full((3, 4), np.nan)
    hw[:, 1] = z * 0.001 * np.array([1.5, 5.0, 1.5])
    goal = np.full((3, 4), np.inf)
    goal[:, 1] = 0.001
    st = A.PrecisionStatus(np.array([7, 8, 9]), hw, goal, np.array([False, False, True]))
    t = np.full((3, 4), np.inf)
    t[:, 1] = 0.001 / z
    got = A._calibrated_targets(t, prior, st, st.met, np.array([7, 8, 9]), 0.95)
    np.testing.assert_allclose(got[:, 1], t[:, 1] / np.array([1.5, A.CALIBRATION_MAX, 1.0]))
    assert np.isinf(got[:, [0, 2, 3]]).all()


def test_the_plan_designs_with_the_fitted_sigma_call():
    """Calls that repeat their fields identify σ_call (planted 0.01 per call, 10 000 reads per h in calls of
    1 000: median within 20 %), and a round planned from that fit designs with it: a b target needs more
    reads than a plan that takes reads as independent predicts (the σ-blind plan: σ_call dropped)."""
    s = CallNoiseSampler(40, seed=21, sigma_call=0.01)
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=10_000, reads_per_call=1000, seed=22), s)
    r = ds.response()
    fits = A.fit_with_restarts(r, "qasa")
    t = fits.table
    assert t["sigma_call_identified"].mean() >= 0.9 and abs(t["sigma_call"].median() / 0.01 - 1) < 0.2
    target = D.parse_target("beta=2%,b=0.003")
    cand = D.candidate_fields((-1.0, 1.0))
    plan = A.plan_round("qasa", r, fits, target, cand, reads_per_call=1000)
    blind = A.plan_round("qasa", r, type(fits)(t.assign(sigma_call=np.nan), "qasa"), target, cand,
                         reads_per_call=1000)
    assert plan["sigma_call_median"] == pytest.approx(t["sigma_call"].median()) and blind["sigma_call_median"] == 0
    assert plan["predicted_reads"] > 1.5 * blind["predicted_reads"]


def test_the_plan_holds_the_fitted_per_field_error_spreads_its_fields_and_says_when_it_caps_the_target():
    """A per-field offset τ = 0.004 (the h DAC's rounding) beside σ_call = 0.01: the fit estimates τ, and the
    plan from that fit knows that a field's mean carries at most ``I_m/ρ``. It therefore spreads each
    qubit's calls over many programmed values one DAC step apart (measured: median 41 fields per qubit
    against 1 for the τ-blind plan, all on the 0.02 grid); b to 0.002 needs several times the reads the
    τ-blind plan predicts (measured 665 k against 203 k, the τ-blind plan's targets tightened by how much
    its fits' intervals exceed its information), and b to 0.0005 more than the feasibility bound (10⁸),
    where the τ-blind plan promises it within 10⁷."""
    s = CallNoiseSampler(40, seed=21, sigma_call=0.01, sigma_field=0.004)
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=10_000, reads_per_call=1000, seed=22), s)
    r = ds.response()
    fits = A.fit_with_restarts(r, "qasa")
    tau = fits.meta["sigma_field"]["sigma_field"]
    assert 0.003 < tau < 0.0055
    blind = type(fits)(fits.table, "qasa", {**fits.meta, "sigma_field": {**fits.meta["sigma_field"],
                                                                          "sigma_field": float("nan")}})
    cand = D.candidate_fields((-1.0, 1.0))
    plans = {}
    for target in ("b=0.002", "b=0.0005"):
        plans[target] = [A.plan_round("qasa", r, f, D.parse_target(target), cand, reads_per_call=1000)
                         for f in (fits, blind)]
    (held, no_tau), (held1, no_tau1) = plans["b=0.002"], plans["b=0.0005"]
    assert held["sigma_field"] == pytest.approx(tau) and no_tau["sigma_field"] == 0.0
    assert held["predicted_reads"] > 2 * no_tau["predicted_reads"]
    assert np.median([len(f) for f in held["fields"]]) >= 10 >= np.median([len(f) for f in no_tau["fields"]])
    assert all(abs(v / D.FIELD_SPACING - round(v / D.FIELD_SPACING)) < 1e-9 for f in held["fields"] for v in f)
    assert all(sum(c) == held["calls"] for c in held["counts"])
    assert held1["predicted_reads"] is None or held1["predicted_reads"] > A.MAX_READS_PER_QUBIT
    assert no_tau1["predicted_reads"] < 1e7


def test_a_design_that_says_met_while_the_fits_say_not_stops_as_stalled(tmp_path, monkeypatch):
    """When three plans in a row predict that no more reads are needed (the design's information) while the
    fits' intervals still miss the target and do not improve, the assessment stops as "stalled" after
    two such rounds instead of running rounds of min_step to max_rounds (what the noisy virtual
    device's per-field errors did: 26 rounds, β and η never met)."""
    s = QASAModelCountSampler(20, seed=31)
    real = A.plan_round

    def says_met(*args, **kwargs):
        plan = real(*args, **kwargs)
        return None if plan is None else {**plan, "predicted_reads": 0.0}

    monkeypatch.setattr(A, "plan_round", says_met)
    ds = A.assess_adaptive(s, tmp_path / "s", "beta=0.1%", protocol=A.pilot_protocol(2000, h_step=0.2, seed=4),
                           max_reads_per_qubit=1e13)
    res = ds.metadata["adaptive"]["result"]
    assert res["stopped"] == "stalled" and res["rounds"] == 2 and res["fraction_met"] < 0.95
    assert len(list((tmp_path / "s" / "design").glob("round-*.json"))) == 2

"""Adding a response model is one definition and one registry entry (qasa.models.register_model).

A toy model defined here only — a logistic response ``P(−1) = 1/(1 + exp(−k(h − h₀)))`` with two
parameters, its own starting guess, bounds and parameter metadata — is registered and then fitted,
compared and reported by the unchanged package. It is the Gibbs-with-bias curve in other coordinates
(``k = 2β``, ``h₀ = −b``), which gives closed-form checks: on the same counts its maximum likelihood is
the ``gibbs-bias`` one, and it is nested in ``qasa`` (γ = η = 0). The data come from a QASA-model
sampler with γ = η = 0 and no gauges, so each qubit's logistic truth is known exactly.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qasa
from qasa import models, parameters
from qasa.fitting import compare, fit
from qasa.models import Model, compared_models, get_model, nested_pairs, register_model, unregister_model
from qasa.parameters import ParameterInfo

sys.path.insert(0, str(Path(__file__).parent))
from qasa_sampler import QASAModelCountSampler  # noqa: E402

BUILT_IN = ("gibbs", "gibbs-bias", "gaussian-noise", "qasa")


def _logistic(h, theta, jac):
    """m = 2P(−1) − 1 = tanh(k(h − h₀)/2) and its Jacobian, parameter-major (2, n, k)."""
    k, c = theta[:, 0:1], theta[:, 1:2]
    x = np.asarray(h, float) - c
    m = np.tanh(0.5 * k * x)
    if not jac:
        return m, None
    s = 0.5 * (1.0 - m * m)
    return m, np.stack([s * x, -s * k])


def _guess(beta, b, sat):
    """One start from the package's least-squares guess atanh(m̂) = β(h + b): k = 2β, h₀ = −b."""
    return [np.column_stack([2.0 * beta, -b])]


TOY = Model("logistic", ("slope", "centre"), (0.0, -np.inf), (np.inf, np.inf), ("1/h", "h"), (1.0, 0.01),
            _logistic, _guess, "logistic response P(−1) = 1/(1 + exp(−k(h − h₀)))", compared=True,
            nested_in=("qasa",))
INFO = {"slope": ParameterInfo("k", "logistic slope", "1/h", "Slope of the logit of P(−1) in h (k = 2β)."),
        "centre": ParameterInfo("h₀", "transition centre", "h", "Field at which P(−1) = 1/2 (h₀ = −b).")}


@pytest.fixture
def toy():
    register_model(TOY, INFO)
    try:
        yield TOY
    finally:
        unregister_model(TOY.name)


class LogisticSampler(QASAModelCountSampler):
    """QASA-model qubits with γ = η = 0 (a logistic response); the truth recorded with the run also
    holds the toy model's parameters, so the report's recovery section checks them."""

    def qasa_truth(self, protocol):
        rows = super().qasa_truth(protocol)
        return [dict(r, slope=2.0 * r["beta"], centre=-r["b"]) for r in rows]


def _sampler(n: int = 24, seed: int = 5) -> LogisticSampler:
    rng = np.random.default_rng(seed)
    truth = pd.DataFrame({"qubit": np.arange(n), "beta": rng.uniform(3.0, 8.0, n), "b": rng.normal(0.0, 0.03, n),
                          "gamma": 0.0, "eta": 0.0})
    return LogisticSampler(truth=truth)


PROTOCOL = qasa.Protocol.grid(1.0, 0.05, reads_per_h=2000, reads_per_call=1000, spin_reversal=False, seed=7)


def test_a_registered_model_is_fitted_compared_and_reported(toy, tmp_path):
    sampler = _sampler()
    ds = qasa.run(PROTOCOL, sampler, tmp_path / "d")
    truth = sampler.truth.set_index("qubit")
    # fitted: every qubit good, the known truth inside its profile interval (closed form: k = 2β, h₀ = −b)
    fits = fit(ds, "logistic")
    t = fits.table.set_index("qubit")
    assert fits.model is get_model("logistic") and (t["quality"] == "good").all()
    k_true, c_true = 2.0 * truth["beta"], -truth["b"]
    for p, true in (("slope", k_true), ("centre", c_true)):
        inside = (t[f"{p}_lo"] <= true) & (true <= t[f"{p}_hi"])
        assert inside.mean() >= 0.8, p                               # 95 % intervals, 24 qubits
        assert (np.abs(t[p] - true) < 5 * t[f"{p}_stderr"]).all(), p
    # ... at the maximum of the same likelihood as gibbs-bias, in its coordinates
    gb = fit(ds, "gibbs-bias", between_calls=False).table.set_index("qubit")
    assert np.allclose(t["slope"], 2.0 * gb["beta"], rtol=1e-3) and np.allclose(t["centre"], -gb["b"], atol=1e-4)
    assert np.allclose(t["loglik"], gb["loglik"], atol=1e-3)
    # compared: in the default comparison, with its likelihood-ratio test against qasa, in which it is nested
    assert compared_models() == BUILT_IN + ("logistic",) and qasa.pipeline.COMPARE_MODELS == compared_models()
    assert ("logistic", "qasa") in nested_pairs() and ("logistic", "qasa") in qasa.fitting.NESTED_PAIRS
    per, device = compare(ds)
    assert list(device["models"]) == list(compared_models())
    assert np.allclose(per["aic_logistic"], per["aic_gibbs-bias"], atol=2e-3)   # same k and maximum
    assert "lr_pvalue_logistic_vs_qasa" in per
    assert any(x["small"] == "logistic" and x["big"] == "qasa" for x in device["tests"])
    # reported: the pipeline's default comparison and the report, with the toy's rows and labels
    result = qasa.pipeline.report(tmp_path / "d", "logistic", compare=True)
    summary = result.summary
    assert [r["param"] for r in summary["summary"]] == ["slope", "centre"]
    assert summary["parameters"]["slope"]["symbol"] == "k" and summary["parameters"]["centre"]["unit"] == "h"
    assert "logistic" in {r["model"] for r in summary["model_comparison"]["models"]}
    assert set(summary["recovery"]) == {"slope", "centre"}
    assert summary["recovery"]["slope"]["coverage_95"] >= 0.8
    html = (result.report_dir / "index.html").read_text()
    for text in ("<td>k</td><td>logistic slope</td><td>1/h</td>", "<td>h₀</td><td>transition centre</td><td>h</td>",
                 "Slope of the logit of P(−1)"):
        assert text in html, text
    assert (result.report_dir / "map_slope.svg").exists() and (result.report_dir / "recovery.csv").exists()
    assert (tmp_path / "d" / "fits" / "logistic.parquet").exists()
    # the same numbers straight from the analysis
    rep = qasa.analysis.analyze(ds, fits, split_half=False)
    assert list(rep.summary.index) == ["slope", "centre"]
    assert rep.summary.loc["slope", "median"] == pytest.approx(float(np.median(t["slope"])))


def test_unregistering_restores_the_registry_and_the_parameter_metadata():
    before_models, before_params = dict(models.MODELS), dict(parameters.PARAMETERS)
    register_model(TOY, INFO)
    try:
        assert get_model("logistic+readout").params == ("slope", "centre", "epsilon")
        assert parameters.parameter_info("slope").label == "k (1/h)"
    finally:
        unregister_model("logistic")
    assert models.MODELS == before_models and parameters.PARAMETERS == before_params
    assert compared_models() == BUILT_IN and "logistic" not in {s for s, _ in nested_pairs()}
    with pytest.raises(ValueError, match="unknown model 'logistic'"):
        get_model("logistic")
    with pytest.raises(ValueError, match="built-in"):
        unregister_model("qasa")


@pytest.mark.parametrize("change, info, needle", [
    ({"name": "qasa"}, INFO, "registered already"),
    ({"name": "a+b"}, INFO, "without '\\+'"),
    ({"units": ("1/h",)}, INFO, "units has 1 entries for 2 parameters"),
    ({"lower": (1.0, 2.0), "upper": (np.inf, 1.0)}, INFO, "lower bound 2.0 above its upper bound 1.0"),
    ({}, {}, "parameter 'slope' has no metadata"),
    ({"params": ("beta", "centre")}, {"centre": INFO["centre"], "beta": ParameterInfo("β", "other", "", "")},
     "'beta' is defined already"),
    ({}, {**INFO, "gamma": INFO["slope"]}, "'gamma', which is not one of its parameters"),
    ({"nested_in": ("gibbs",)}, INFO, "not a registered model with more than 2 parameters"),
    ({"nested_in": ("nope",)}, INFO, "'nope'"),
    ({"between_calls": True}, INFO, "built-in qasa model only"),
    ({"reference_csv": True}, INFO, "model_parameters.csv holds"),
])
def test_register_model_refuses_a_bad_definition_in_one_line(change, info, needle):
    import dataclasses

    before_models, before_params = dict(models.MODELS), dict(parameters.PARAMETERS)
    bad = dataclasses.replace(TOY, **change)
    try:
        with pytest.raises(ValueError, match=needle) as err:
            register_model(bad, info)
    finally:
        if models.MODELS.get(bad.name) is bad:          # (a check that let it through: leave no trace)
            unregister_model(bad.name)
    assert "\n" not in str(err.value)
    assert models.MODELS == before_models and parameters.PARAMETERS == before_params


def test_the_built_in_registry_answers_what_the_special_cases_asked():
    """The questions that fitting, store and analysis used to answer by name."""
    m = models.MODELS
    assert compared_models() == BUILT_IN
    assert nested_pairs() == (("gibbs", "gibbs-bias"), ("gibbs-bias", "qasa"), ("gibbs-bias", "gaussian-noise"))
    assert [n for n in m if m[n].between_calls] == ["qasa"] and [n for n in m if m[n].reference_csv] == ["qasa"]
    assert all(x.inverse_temperature and x.params[0] == "beta" for x in m.values())
    ro = get_model("qasa+readout")
    assert ro.inverse_temperature and not (ro.between_calls or ro.reference_csv or ro.compared)
    inner = get_model("qasa").internal
    assert inner.between_calls and inner.inverse_temperature and inner.even == ()

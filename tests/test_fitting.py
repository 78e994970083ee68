"""Recovery of known truth, coverage of the reported intervals, degenerate data, model comparison."""

import numpy as np
import pytest

from qasa.dataset import Response
from qasa.fitting import FitTable, _evaluate, compare, fit, loglik, maximize
from qasa.models import get_model
from qasa.protocol import h_grid

H81 = np.array(h_grid(1.0, 0.025))


def _draw(model, theta, reads, seed, h=H81):
    rng = np.random.default_rng(seed)
    p = get_model(model).p_down(h, theta)
    nt = np.full(p.shape, reads)
    return Response(np.arange(len(theta)), h, rng.binomial(nt, p), nt)


def test_reference_case_comes_back_not_at_the_eta_zero_optimum():
    """DESIGN.md §3: truth (8, 0.01, 0.1, 0.05), 81 h values, 10^6 reads per h."""
    r = _draw("qasa", np.array([[8.0, 0.01, 0.1, 0.05]]), 10**6, seed=2021)
    row = fit(r, "qasa").table.iloc[0]
    assert row["quality"] == "good"
    truth = {"beta": 8.0, "b": 0.01, "gamma": 0.1, "eta": 0.05}
    for p, v in truth.items():
        assert abs(row[p] - v) < 4 * row[f"{p}_stderr"], p
    assert row["eta"] > 0.045 and 7.9 < row["beta"] < 8.1


def test_a_start_at_eta_zero_is_not_trapped():
    """m is even in η, so the score in η vanishes at η = 0 and a fit on η would stay there
    (DESIGN.md §6); on the internal φ = η² the score is positive and the same start escapes."""
    r = _draw("qasa", np.array([[8.0, 0.01, 0.1, 0.05]]), 10**6, seed=2021)
    model = get_model("qasa")
    nd, nt = r.n_down.astype(float), r.n_total.astype(float)
    start = model.starts(r.h, nd, nt)[0]
    assert start[0, 3] == 0.0
    _, score_theta, _ = _evaluate(model, r.h, start, nd, nt, info=False)
    _, score_phi, _ = _evaluate(model.internal, r.h, model.to_internal(start), nd, nt, info=False)
    assert score_theta[0, 3] == 0.0 and abs(score_phi[0, 3]) > 1e5
    # held at η = 0 (what a projected step on η did) the best is β ≈ 7.2, thousands of nats worse
    trapped, ll_trapped, conv, _ = maximize(model, r.h, nd, nt, start, fixed=np.array([[False] * 3 + [True]]))
    assert conv[0] and trapped[0, 3] == 0.0 and 7.1 < trapped[0, 0] < 7.4
    free, ll_free, conv, _ = maximize(model, r.h, nd, nt, start)
    best = fit(r, "qasa").table.iloc[0]
    assert conv[0] and abs(ll_free[0] - best["loglik"]) < 1e-3 and abs(free[0, 3] - 0.05) < 0.002
    assert best["loglik"] - ll_trapped[0] > 1000


def _qasa_truth(rng, n, beta=(5.0, 10.0), gamma=(0.05, 0.2), eta=(0.04, 0.1)):
    """Per-qubit QASA parameters: β, γ, η uniform in the ranges given, b ~ N(0, 0.01)."""
    return np.column_stack([rng.uniform(*beta, n), rng.normal(0, 0.01, n), rng.uniform(*gamma, n),
                            rng.uniform(*eta, n)])


@pytest.mark.parametrize("model, sampler", [
    ("gibbs", lambda rng, n: np.column_stack([rng.uniform(3, 10, n)])),
    ("gibbs-bias", lambda rng, n: np.column_stack([rng.uniform(3, 10, n), rng.normal(0, 0.02, n)])),
    ("gaussian-noise", lambda rng, n: np.column_stack([rng.uniform(4, 10, n), rng.normal(0, 0.02, n),
                                                       rng.uniform(0.05, 0.12, n)])),
    ("qasa", lambda rng, n: _qasa_truth(rng, n)),
])
def test_intervals_cover_the_truth_95_percent_of_the_time(model, sampler):
    """Wald (stderr) and profile (lo, hi) intervals, with every parameter away from its bound."""
    rng = np.random.default_rng(len(model))
    n = 600 if model == "gaussian-noise" else 2000      # 40 quadrature nodes per point: slower model
    theta = sampler(rng, n)
    r = _draw(model, theta, 20_000, seed=len(model) + 1)
    ft = fit(r, model)
    t = ft.table
    assert (t["quality"] != "failed").all()
    for j, p in enumerate(get_model(model).params):
        z = (t[p].to_numpy() - theta[:, j]) / t[f"{p}_stderr"].to_numpy()
        coverage = np.mean(np.abs(z) < 1.96)
        assert 0.925 <= coverage <= 0.975, (model, p, coverage)
        profile = np.mean((t[f"{p}_lo"] <= theta[:, j]) & (theta[:, j] <= t[f"{p}_hi"]))
        assert 0.925 <= profile <= 0.975, (model, p, profile)


def test_degenerate_qubits_get_flagged_rows_not_exceptions():
    h = np.array([-0.5, 0.0, 0.5])
    nd = np.array([[100, 100, 100],    # all -1
                   [0, 0, 0],          # all +1
                   [0, 0, 0],          # no reads
                   [3, 50, 97],        # fine for gibbs
                   [2, 5, 9]])         # few reads
    nt = np.array([[100] * 3, [100] * 3, [0] * 3, [100] * 3, [2, 5, 9]])
    nt[4] = [3, 3, 3]
    nd[4] = [1, 2, 2]
    r = Response(np.arange(5), h, nd, nt)
    t = fit(r, "gibbs").table.set_index("qubit")
    assert t.loc[0, "reason"] == "all reads -1" and np.isnan(t.loc[0, "beta"])
    assert t.loc[1, "reason"] == "all reads +1"
    assert t.loc[2, "reason"] == "no reads"
    assert t.loc[4, "reason"].startswith("fewer than 10 reads")
    assert t.loc[3, "quality"] == "good"
    assert (t.loc[[0, 1, 2, 4], "quality"] == "failed").all()
    # a single h value or only h = 0 cannot identify the qasa model: flagged too
    only_zero = Response(np.arange(1), np.array([0.0]), np.array([[40]]), np.array([[100]]))
    assert fit(only_zero, "qasa").table.iloc[0]["quality"] == "failed"
    one_h = Response(np.arange(1), np.array([0.2]), np.array([[40]]), np.array([[100]]))
    row = fit(one_h, "gibbs-bias").table.iloc[0]
    assert row["quality"] == "failed" and "fewer than 2 h values" in row["reason"]


def test_lack_of_fit_is_marked_bad():
    # data from qasa with strong saturation fitted by plain gibbs: deviance far above df
    r = _draw("qasa", np.array([[6.0, 0.0, 0.6, 0.0]]), 20_000, seed=5)
    row = fit(r, "gibbs").table.iloc[0]
    assert row["quality"] == "bad" and "lack of fit" in row["reason"]


def test_bootstrap_stderr_agrees_with_fisher_stderr():
    theta = np.tile([[6.0, 0.01]], (40, 1))
    r = _draw("gibbs-bias", theta, 5000, seed=9)
    t = fit(r, "gibbs-bias", bootstrap=60, seed=1).table
    ratio = t["beta_boot_stderr"] / t["beta_stderr"]
    assert 0.8 < ratio.median() < 1.2


def test_compare_prefers_the_true_model_and_rejects_the_smaller_one():
    rng = np.random.default_rng(3)
    n = 60
    theta = _qasa_truth(rng, n, beta=(6, 9), gamma=(0.1, 0.2), eta=(0.05, 0.08))
    r = _draw("qasa", theta, 20_000, seed=4)
    per, device = compare(r)
    assert device["preferred"] == "qasa"
    assert (per["best"] == "qasa").mean() > 0.9
    test = next(t for t in device["tests"] if t["big"] == "qasa")
    assert test["pvalue"] < 1e-10


def test_gibbs_data_do_not_reject_gibbs():
    rng = np.random.default_rng(8)
    r = _draw("gibbs", rng.uniform(3, 8, 300)[:, None], 5000, seed=8)
    per, device = compare(r, models=("gibbs", "gibbs-bias"))
    p = per["lr_pvalue_gibbs_vs_gibbs-bias"]
    assert 0.02 < np.mean(p < 0.05) < 0.09   # nominal level under the null


def test_fit_table_save_load_and_reference_csv(tmp_path):
    r = _draw("qasa", np.array([[8.0, 0.01, 0.1, 0.05], [6.0, -0.01, 0.2, 0.07]]), 50_000, seed=1)
    ft = fit(r, "qasa")
    back = FitTable.load(ft.save(tmp_path / "fit.parquet"))
    assert back.model.name == "qasa" and back.table.equals(ft.table)
    ref = FitTable.from_model_parameters_csv(ft.to_model_parameters_csv(tmp_path / "model_parameters.csv"))
    assert np.array_equal(ref.params.to_numpy(), ft.params.to_numpy())
    header = (tmp_path / "model_parameters.csv").read_text().splitlines()[0]
    assert header.startswith("spin,β,b,γ,η,")
    rec = ft.result(1)
    assert rec.success and rec.params["eta"] == ft.table.loc[1, "eta"]
    assert rec.interval["eta"] == (ft.table.loc[1, "eta_lo"], ft.table.loc[1, "eta_hi"])


def test_hostile_extremes_stay_finite():
    """10^9 reads, |βh| up to 200, exact zeros and saturation: finite rows, sensible answers."""
    h = np.linspace(-4, 4, 33)
    theta = np.array([[50.0, 0.001], [0.5, 0.0], [8.0, -0.02]])
    p = get_model("gibbs-bias").p_down(h, theta)
    nt = np.full(p.shape, 10**9)
    r = Response(np.arange(3), h, np.round(p * nt).astype(np.int64), nt)
    with np.errstate(all="raise"):
        t = fit(r, "gibbs-bias").table
    assert np.isfinite(t["loglik"]).all()
    # β = 50 jumps from 0 to 1 between grid points (step 0.25): only β·b is identified → flagged
    assert t.loc[0, "quality"] == "bad" and "no finite stderr" in t.loc[0, "reason"]
    assert (t.loc[1:, "quality"] == "good").all()
    assert np.allclose(t.loc[1:, "beta"], theta[1:, 0], rtol=1e-3)
    assert np.isfinite(t.loc[1:, ["beta_stderr", "b_stderr"]].to_numpy()).all()


def test_fitted_curve_bands_cover_the_true_curve():
    """The delta-method band of P(−1) (full covariance) covers the true curve ~95% of the time."""
    rng = np.random.default_rng(12)
    n = 400
    theta = _qasa_truth(rng, n, beta=(5, 9))
    r = _draw("qasa", theta, 20_000, seed=13)
    ft = fit(r, "qasa")
    h = np.array([-0.2, 0.05, 0.3])
    truth = get_model("qasa").p_down(h, theta)
    inside = []
    for i in range(n):
        _, lo, hi = ft.band(i, h)
        inside.append((lo <= truth[i]) & (truth[i] <= hi))
    coverage = np.mean(inside, axis=0)
    assert np.all((coverage > 0.91) & (coverage < 0.985)), coverage
    cov = ft.covariance(0)
    assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)


def test_profile_interval_of_gibbs_beta_is_the_likelihood_ratio_interval_on_a_grid():
    """One parameter: the profile is the likelihood; compare with a brute-force root on a fine grid."""
    from scipy import optimize, stats

    r = _draw("gibbs", np.array([[5.0], [0.8], [12.0]]), 3000, seed=31, h=np.linspace(-1, 1, 21))
    t = fit(r, "gibbs").table
    c = stats.chi2.ppf(0.95, 1)
    for i in range(3):
        nd, nt = r.n_down[i:i + 1], r.n_total[i:i + 1]
        def ll(b):
            return loglik("gibbs", r.h, np.array([[b]]), nd, nt)[0]
        grid = np.linspace(0.01, 30, 30001)
        vals = loglik("gibbs", r.h, grid[:, None], np.repeat(nd, len(grid), 0), np.repeat(nt, len(grid), 0))
        best = grid[vals.argmax()]
        assert abs(best - t.loc[i, "beta"]) < 2e-3
        ll_hat = ll(t.loc[i, "beta"])
        crossing = np.flatnonzero(np.diff(np.sign(2 * (ll_hat - vals) - c)))
        lo = optimize.brentq(lambda b: 2 * (ll_hat - ll(b)) - c, grid[crossing[0]], grid[crossing[0] + 1])
        hi = optimize.brentq(lambda b: 2 * (ll_hat - ll(b)) - c, grid[crossing[-1]], grid[crossing[-1] + 1])
        assert t.loc[i, "beta_lo"] == pytest.approx(lo, rel=2e-3 / np.sqrt(c))
        assert t.loc[i, "beta_hi"] == pytest.approx(hi, rel=2e-3 / np.sqrt(c))
        assert t.loc[i, "beta_lo"] < t.loc[i, "beta"] < t.loc[i, "beta_hi"]


def test_profile_interval_of_b_maximizes_over_beta():
    """gibbs-bias: the profile of b (β re-maximized at each b by scipy) crosses the cut-off at (lo, hi)."""
    from scipy import optimize, stats

    r = _draw("gibbs-bias", np.array([[4.0, 0.03]]), 2000, seed=32, h=np.linspace(-0.5, 0.5, 11))
    row = fit(r, "gibbs-bias").table.iloc[0]
    c = stats.chi2.ppf(0.95, 1)

    def profile(b):
        res = optimize.minimize_scalar(lambda beta: -loglik("gibbs-bias", r.h, np.array([[beta, b]]), r.n_down,
                                                            r.n_total)[0], bounds=(0.1, 20), method="bounded",
                                       options={"xatol": 1e-10})
        return -res.fun
    for end in ("b_lo", "b_hi"):
        assert 2 * (row["loglik"] - profile(row[end])) == pytest.approx(c, abs=0.03)
    assert row["b_lo"] < 0.03 < row["b_hi"]


@pytest.mark.parametrize("model, theta, param", [
    ("gibbs", [0.0], "beta"),
    ("gibbs-bias", [0.0, 0.1], "beta"),
    ("gaussian-noise", [6.0, 0.01, 0.0], "sigma"),
    ("qasa", [6.0, 0.01, 0.1, 0.0], "eta"),
    ("qasa", [6.0, 0.01, 0.0, 0.04], "gamma"),
    ("qasa+readout", [6.0, 0.01, 0.1, 0.03, 0.0], "epsilon"),
])
def test_a_parameter_on_its_bound_gets_a_one_sided_interval(model, theta, param):
    """Truth on the bound: qubits whose estimate lands there get [bound, hi] with a finite hi,
    every other parameter keeps a finite two-sided interval, and reason says so."""
    n = 40
    r = _draw(model, np.tile(theta, (n, 1)), 5000, seed=33)
    m = get_model(model)
    t = fit(r, model).table
    j = m.params.index(param)
    on = t[param] == m.lower[j]
    if model == "gibbs-bias":
        # coin flips fitted by tanh(β(h + b)): the likelihood can rise towards β → 0+, |b| → ∞ (a
        # constant offset βb), so many qubits end just off the bound — with b flagged unidentified
        off = ~on & (t["beta_lo"] == 0.0)
        assert on.sum() >= 1 and off.sum() >= 5
        assert t.loc[off, "reason"].str.contains("b not identified: interval unbounded").all()
        assert (t.loc[off, "quality"] == "bad").all()
    else:
        assert on.sum() >= 5, "the test needs qubits on the bound"
    assert (t.loc[on, f"{param}_lo"] == m.lower[j]).all()
    assert (np.isfinite(t.loc[on, f"{param}_hi"]) & (t.loc[on, f"{param}_hi"] > m.lower[j])).all()
    assert t.loc[on, "reason"].str.contains(f"{param} on its bound: one-sided interval").all()
    assert t.loc[on, f"{param}_stderr"].isna().all()
    for other in m.params:
        if other == param or (other == "b" and model == "gibbs-bias"):
            continue     # with β = 0, b is not identified (m = 0 whatever b)
        lo, hi = t.loc[on, f"{other}_lo"], t.loc[on, f"{other}_hi"]
        assert (np.isfinite(lo) & np.isfinite(hi) & (lo <= t.loc[on, other]) & (t.loc[on, other] <= hi)).all(), other
    # the truth (on the bound) is inside every one-sided interval, and ~97.5 % of all intervals
    # (χ²₁ cut-off, truth on the bound); not so for gibbs-bias at β = 0, where b is not identified
    # under the truth and the likelihood ratio is not χ² (a supremum over b)
    inside = (t[f"{param}_lo"] <= theta[j]) & (theta[j] <= t[f"{param}_hi"])
    assert inside[on].all()
    if model != "gibbs-bias":
        assert inside.mean() >= 0.9


def test_a_parameter_the_data_do_not_bound_is_flagged_not_good():
    """gibbs-bias with β = 0 (pure coin flips): b has no effect, its profile is flat → unbounded."""
    r = _draw("gibbs-bias", np.tile([0.0, 0.1], (20, 1)), 5000, seed=34)
    t = fit(r, "gibbs-bias").table
    flat = np.isinf(t["b_lo"]) | np.isinf(t["b_hi"])
    assert flat.sum() >= 5
    assert (t.loc[flat, "quality"] == "bad").all()
    assert t.loc[flat, "reason"].str.contains("b not identified: interval unbounded").all()


def test_bootstrap_replicates_leave_eta_zero():
    """A fit on η = 0: bootstrap refits start there, and (fitted in φ = η²) they can leave it."""
    r = _draw("qasa", np.tile([[6.0, 0.0, 0.1, 0.0]], (30, 1)), 5000, seed=35)
    t = fit(r, "qasa", bootstrap=40, seed=2).table
    on = t["eta"] == 0
    assert on.sum() >= 5
    assert (t.loc[on, "eta_boot_stderr"] > 0).all()


def test_compare_with_no_fitted_qubit_names_no_preferred_model():
    h = np.array([-0.5, 0.0, 0.5])
    r = Response(np.arange(2), h, np.array([[100] * 3, [0] * 3]), np.full((2, 3), 100))
    per, device = compare(r, models=("gibbs", "gibbs-bias"))
    assert device["preferred"] is None and device["qubits_compared"] == 0
    assert all(v["aic_total"] is None for v in device["models"].values())
    assert per["best"].isna().all()


def test_model_parameters_csv_flags_quality_and_leaves_out_failed_qubits(tmp_path):
    r = _draw("qasa", np.array([[8.0, 0.01, 0.1, 0.05], [6.0, -0.01, 0.2, 0.0]]), 20_000, seed=36)
    r = Response(np.arange(3), r.h, np.vstack([r.n_down, np.zeros(len(r.h), int)]),
                 np.vstack([r.n_total, np.full(len(r.h), 20_000)]))            # qubit 2: all +1 → failed
    ft = fit(r, "qasa")
    path = ft.to_model_parameters_csv(tmp_path / "model_parameters.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "spin,β,b,γ,η,quality,reason"
    assert len(lines) == 3 and not any(",,," in ln for ln in lines)
    back = FitTable.from_model_parameters_csv(path)
    assert back.table["qubit"].tolist() == [0, 1]
    assert back.table["quality"].tolist() == ft.table["quality"][:2].tolist()
    assert back.table["reason"].tolist() == ft.table["reason"][:2].tolist()


def test_qasa_interval_ends_on_eta_bound_qubits_match_an_independent_profile():
    """Qubits with η̂ = 0: along γ (and β) the profile can pull η off its bound, into another local
    maximum of the inner problem. Each reported end must sit on the cut-off of the profile computed
    independently (scipy, the other three parameters re-maximized from two starts: η on the bound
    and η at the estimate of the end's own inner fit)."""
    from scipy import optimize, stats

    rng = np.random.default_rng(0)
    n = 300
    theta = np.column_stack([rng.uniform(4, 10, n), rng.normal(0, 0.01, n), rng.uniform(0.0, 0.2, n),
                             rng.uniform(0.0, 0.1, n)])
    r = _draw("qasa", theta, 10_000, seed=40, h=np.linspace(-1, 1, 81))
    t = fit(r, "qasa").table
    rows = np.flatnonzero((t["eta"] == 0).to_numpy() & (t["quality"] == "good").to_numpy())
    assert len(rows) >= 20
    c = stats.chi2.ppf(0.95, 1)
    bounds = [(1e-6, None), (None, None), (0.0, None), (0.0, None)]

    def profile(i, j, v):
        nd, nt = r.n_down[i:i + 1], r.n_total[i:i + 1]
        free = [q for q in range(4) if q != j]
        est = t.loc[i, ["beta", "b", "gamma", "eta"]].to_numpy(float)
        best = -np.inf
        for eta0 in (0.0, 0.05):
            x0 = est[free].copy()
            if 3 in free:
                x0[free.index(3)] = eta0

            def nll(x):
                full = est.copy()
                full[j], full[free] = v, x
                return -loglik("qasa", r.h, full[None, :], nd, nt)[0]
            res = optimize.minimize(nll, x0, method="L-BFGS-B", bounds=[bounds[q] for q in free],
                                    options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 2000})
            best = max(best, -res.fun)
        return best

    for i in rows:
        for j, p in ((0, "beta"), (2, "gamma")):
            for end in ("hi",):
                v = t.loc[i, f"{p}_{end}"]
                if not np.isfinite(v) or v <= 0:
                    continue
                D = 2 * (t.loc[i, "loglik"] - profile(i, j, v))
                assert D == pytest.approx(c, abs=0.08), (i, p, end, D)     # |r − 1.96| < 0.02


def test_no_interval_side_collapses_onto_the_estimate_on_weak_qubits():
    """β ≈ 0.5 with large η and γ on its bound: profile points near β → 0 let b run off along a flat
    direction; that point must not warm-start the next one (which lies nearer the estimate), or the
    search collapses the side onto the estimate. Every side of every good qubit stays away from its
    estimate (the old fitter collapsed 13 of these sides, an intermediate version 114)."""
    rng = np.random.default_rng(21)
    n = 300
    theta = np.column_stack([np.full(n, 0.5), rng.normal(0, 0.02, n), np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0, .3, n)),
                             np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0, .15, n))])
    r = _draw("qasa", theta, 1000, seed=22, h=np.round(np.arange(-1, 1 + 1e-9, 0.025), 12))
    t = fit(r, "qasa").table
    good = t["quality"] == "good"
    assert good.sum() > 200
    collapsed = 0
    for p, lower in (("beta", 0.0), ("b", -np.inf), ("gamma", 0.0), ("eta", 0.0)):
        w = t[f"{p}_hi"] - t[f"{p}_lo"]
        on = t[p] <= lower
        collapsed += int((good & ~on & ((t[p] - t[f"{p}_lo"]) <= 1e-6 * w)).sum())
        collapsed += int((good & ((t[f"{p}_hi"] - t[p]) <= 1e-6 * w)).sum())
    assert collapsed == 0


def test_expected_information_errors_agree_with_observed_ones():
    """information='expected' (one evaluation) gives the same standard errors as the observed
    information to a few per cent on well-fitted qubits; an unknown choice is refused."""
    rng = np.random.default_rng(8)
    theta = np.column_stack([rng.uniform(4, 10, 200), rng.normal(0, 0.01, 200), rng.uniform(0.05, 0.2, 200),
                             rng.uniform(0.03, 0.1, 200)])
    r = _draw("qasa", theta, 4000, seed=9)
    obs = fit(r, "qasa", intervals=False).table
    exp = fit(r, "qasa", intervals=False, information="expected").table
    assert np.array_equal(obs[["beta", "b", "gamma", "eta"]].to_numpy(), exp[["beta", "b", "gamma", "eta"]].to_numpy())
    for p in ("beta", "b", "gamma", "eta"):
        ratio = (exp[f"{p}_stderr"] / obs[f"{p}_stderr"]).dropna()
        assert len(ratio) > 150 and abs(ratio.median() - 1) < 0.01 and ratio.between(0.8, 1.25).mean() > 0.97, p
        assert not np.allclose(ratio, 1.0, rtol=1e-9, atol=0.0), p     # a different information was used
    with pytest.raises(ValueError, match="information"):
        fit(r, "qasa", information="fisher")


def test_coarse_grid_starts_reach_the_maximum_of_every_start_on_all_data(monkeypatch):
    """The starts run first on every 4th h value and only the best basin is refined (qasa.fitting._multistart).
    Same maxima as every start on all data, on qubits the coarse grid resolves (β·Δh ≤ 1) and on
    sharp ones it does not (β = 25–40: β·Δh up to 4, where a coarse fit runs off to a step and the
    row must fall back to all data)."""
    import qasa.fitting as fitting

    rng = np.random.default_rng(11)
    n = 300
    beta = np.r_[rng.uniform(4, 10, n - 60), rng.uniform(25, 40, 60)]
    theta = np.column_stack([beta, rng.normal(0, 0.02, n), rng.uniform(0, 0.2, n), rng.uniform(0, 0.1, n)])
    r = _draw("qasa", theta, 2000, seed=12)
    cols = np.arange(0, 81, 81 // fitting._COARSE_H)
    resolved = fitting._coarse_rows(H81, cols, r.n_down.astype(float), r.n_total.astype(float))
    assert resolved[:n - 60].mean() > 0.9 and resolved[n - 60:].mean() < 0.3   # (a wide η staircase can pass)
    calls = []
    real = fitting._maximize_phi
    monkeypatch.setattr(fitting, "_maximize_phi", lambda model, h, *a, **k: calls.append(len(h)) or real(model, h, *a, **k))
    coarse = fit(r, "qasa", intervals=False).table
    assert len(cols) in calls                     # the coarse path ran
    monkeypatch.setattr(fitting, "_COARSE_MIN_H", 10**9)
    full = fit(r, "qasa", intervals=False).table
    assert (coarse["loglik"] - full["loglik"]).min() > -1e-3
    assert (coarse["quality"] == full["quality"]).mean() > 0.99
    sharp = coarse.iloc[n - 60:]
    assert (sharp["quality"] == "good").all()
    assert np.all(np.abs(sharp["beta"] - beta[n - 60:]) < 5 * sharp["beta_stderr"])


def test_a_coarse_fit_that_runs_off_to_a_step_falls_back_to_all_data(monkeypatch):
    """A grid too coarse for the transition let a coarse fit run off to β ≈ 7 800 and the refinement
    stay there, 5 500 nats short: qubit 4237 of the fit_speed device (benchmarks/fit_speed.py,
    seed 2: β = 7.6, η = 0.068) with every 8th h value (Δh = 0.2, β·Δh ≈ 1.5). The β·Δh check alone
    (the data check switched off here) sends the row back to all data."""
    import qasa.fitting as fitting

    rng = np.random.default_rng(2)            # benchmarks/fit_speed.py: device_data(5640, 10_000, 2)
    theta = np.column_stack([rng.uniform(4, 10, 5640), rng.normal(0, 0.01, 5640), rng.uniform(0.0, 0.2, 5640),
                             rng.uniform(0.0, 0.1, 5640)])
    model = get_model("qasa")
    nt = np.full((5640, len(H81)), 10_000)
    nd = rng.binomial(nt, model.p_down(H81, theta))[4237:4238].astype(float)
    nt = nt[:1].astype(float)
    phi0 = model.to_internal(np.concatenate(model.starts(H81, nd, nt))).reshape(3, 1, 4)
    monkeypatch.setattr(fitting, "_COARSE_H", 10)      # every 8th value
    monkeypatch.setattr(fitting, "_coarse_rows", lambda h, cols, nd, nt: np.ones(len(nd), bool))
    phi, ll, conv, *_ = fitting._multistart(model.internal, H81, nd, nt, phi0)
    assert conv.all()
    assert abs(phi[0, 0] - theta[4237, 0]) < 0.2


@pytest.mark.parametrize("starts, message", [
    ([np.full((3, 4), np.nan)], r"starts\[0\]\[0, 0\] = nan: beta must be finite and lie in \[0, inf\]"),
    ([np.array([[8.0, 0.0, 0.1, -0.1]] * 3)], r"starts\[0\]\[0, 3\] = -0.1: eta must .* \[0, inf\]"),
    ([np.zeros((2, 4))], r"starts\[0\] has shape \(2, 4\); qasa needs \(3, 4\)"),
    ([], "starts is empty"),
])
def test_bad_starts_are_refused_naming_the_value(starts, message):
    r = _draw("qasa", np.array([[8.0, 0.01, 0.1, 0.05]] * 3), 1000, seed=5)
    with pytest.raises(ValueError, match=message):
        fit(r, "qasa", starts=starts)


def test_given_starts_are_used():
    """One start at the truth: the fit reaches the same maximum as the model's own three starts, in
    fewer iterations (one start near the optimum, not three from the data-driven guesses — so the
    given start is what ran)."""
    theta = np.array([[8.0, 0.01, 0.1, 0.05]] * 3)
    r = _draw("qasa", theta, 10_000, seed=6)
    own = fit(r, "qasa", intervals=False).table
    for same in ([theta], theta, (s for s in [theta])):        # a list, one bare (n, p) array, a generator
        given = fit(r, "qasa", starts=same, intervals=False).table
        assert np.allclose(given["loglik"], own["loglik"], atol=1e-4)
        assert (given["iterations"] < own["iterations"]).all()


def test_loglik_is_summed_without_cancellation():
    """ℓ at 10⁶ reads per h (|ℓ| ~ 10⁷ nats) to within a few ulps of an exactly rounded sum: the form
    Σ n log(p/q) + N log q cancels and was off by 1.5e-7 nats, above the optimizer's tol = 1e-8 gain."""
    import math

    model = get_model("qasa")
    rng = np.random.default_rng(5)
    theta = np.column_stack([np.exp(rng.uniform(0, np.log(200), 400)), rng.uniform(-.5, .5, 400),
                             rng.uniform(0, 1, 400), rng.uniform(0, .3, 400)])
    nt = np.full((400, 81), 1e6)
    nd = np.round(nt * model.p_down(H81, theta))
    ll, _, _ = _evaluate(model.internal, H81, model.to_internal(theta), nd, nt, info=False)
    m = model.m(H81, theta)
    p, q = np.clip(0.5 * (1 + m), 1e-15, 1 - 1e-15), np.clip(0.5 * (1 - m), 1e-15, 1 - 1e-15)
    exact = np.array([math.fsum(np.r_[nd[i] * np.log(p[i]), (nt[i] - nd[i]) * np.log(q[i])]) for i in range(400)])
    assert np.abs(ll - exact).max() < 5e-8

"""Per-qubit designs: Fisher information, optimal designs and their Cramér–Rao gain, permuted grids,
per-qubit calls through the runner into the counts table and the fit."""

from __future__ import annotations

import numpy as np
import pytest

import qasa
from qasa import design as D
from qasa.errors import ProtocolError
from qasa.fitting import fit
from qasa.models import get_model
from qasa.protocol import Call, h_grid

THETA = np.array([[5.0, 0.0, 0.1, 0.03]])
SD_TARGET = np.array([[0.05, 0.003, 0.02, 0.01]])      # DESIGN.md §6: β 1 %, b 0.003, γ 0.02, η 0.01


def _loglik_one_read(model, x, theta, s):
    """Log-likelihood of one read s (+1 → −1 returned) at field x: log p or log(1 − p)."""
    p = model.p_down(np.array([x]), theta[None])[0, 0]
    return np.log(p) if s else np.log(1 - p)


@pytest.mark.parametrize("name,theta", [("qasa", [5.0, 0.01, 0.1, 0.03]), ("gibbs-bias", [3.0, -0.02]),
                                        ("gaussian-noise", [4.0, 0.01, 0.05]), ("qasa+readout", [6.0, 0.0, 0.2, 0.05, 0.01])])
def test_fisher_information_equals_the_variance_of_a_finite_difference_score(name, theta):
    """I(x) = E[score scoreᵀ], with the score of one read by central differences of log p."""
    model = get_model(name)
    theta = np.array(theta)
    for x in (-0.3, 0.05, 0.4, 1.0):
        info = D.fisher_per_read(model, np.array([x]), theta[None])[0, 0]
        p = model.p_down(np.array([x]), theta[None])[0, 0]
        score = {}
        for s in (0, 1):
            g = np.zeros(len(theta))
            for j in range(len(theta)):
                e = np.zeros(len(theta))
                e[j] = 1e-6 * max(abs(theta[j]), 1e-2)
                g[j] = (_loglik_one_read(model, x, theta + e, s) - _loglik_one_read(model, x, theta - e, s)) / (2 * e[j])
            score[s] = g
        expected = p * np.outer(score[1], score[1]) + (1 - p) * np.outer(score[0], score[0])
        np.testing.assert_allclose(info, expected, rtol=2e-5, atol=1e-9 * np.abs(expected).max())


def test_gibbs_fisher_information_has_its_closed_form():
    """m = tanh(βh): I_ββ = h² sech²(βh) per read (∇m = h sech², 1 − m² = sech²)."""
    h = np.linspace(-1, 1, 9)
    info = D.fisher_per_read("gibbs", h, np.array([[4.0]]))[0, :, 0, 0]
    np.testing.assert_allclose(info, h**2 / np.cosh(4.0 * h) ** 2, rtol=1e-12)


def test_optimal_design_beats_the_uniform_grid_by_the_cramer_rao_ratio_of_design_md():
    """DESIGN.md §6: 2.3× fewer reads at (5, 0, 0.1, 0.03) for sd targets β 1 %, b 0.003, γ 0.02,
    η 0.01 on ±1 (2.1× at β = 3, 3.1× at β = 3 with ±2, 3.9× at β = 10); weight near ±0.1, ±0.4."""
    grid = np.array(h_grid(1.0, 0.025))
    cases = [((5.0, 0.0, 0.1, 0.03), (-1, 1), 2.3), ((3.0, 0.0, 0.1, 0.03), (-1, 1), 2.1),
             ((3.0, 0.0, 0.1, 0.03), (-2, 2), 3.1), ((10.0, 0.0, 0.1, 0.03), (-1, 1), 3.9)]
    for theta, h_range, ratio in cases:
        th = np.array([theta])
        t = np.array([[0.01 * theta[0], 0.003, 0.02, 0.01]])
        uniform = D.required_reads("qasa", th, grid, np.ones(len(grid)), t)[0]
        cand = D.candidate_fields(h_range)
        w = D.optimal_design("qasa", th, cand, t)
        best = D.required_reads("qasa", th, cand, w, t)[0]
        assert uniform / best == pytest.approx(ratio, abs=0.06), (theta, h_range)
        # the quantized design (40 calls on 0.005 fields) keeps the gain
        fields, counts = D.allocate(cand, w, 40)
        keep = counts[0] > 0
        assert np.allclose(fields[0, keep] / 0.005, np.round(fields[0, keep] / 0.005))
        quantized = D.required_reads("qasa", th, fields[0, keep], counts[0, keep], t)[0]
        assert quantized <= 1.03 * best
        if theta[0] == 5.0:
            support = np.abs(fields[0, keep])
            assert np.any(np.abs(support - 0.1) < 0.02) and np.any(np.abs(support - 0.4) < 0.03)


def test_no_design_beats_the_optimum_and_criteria_agree_with_their_definitions():
    cand = D.candidate_fields((-1, 1))
    w = D.optimal_design("qasa", THETA, cand, SD_TARGET)
    best = D.required_reads("qasa", THETA, cand, w, SD_TARGET)[0]
    rng = np.random.default_rng(3)
    for _ in range(20):   # random sparse designs never need fewer reads (equivalence theorem)
        other = np.zeros(len(cand))
        other[rng.choice(len(cand), 8, replace=False)] = rng.random(8)
        assert D.required_reads("qasa", THETA, cand, other, SD_TARGET)[0] >= 0.999 * best
    # c-optimal for β alone needs fewer reads for β than the minimax design
    t_beta = np.array([[0.05, np.inf, np.inf, np.inf]])
    wc = D.optimal_design("qasa", THETA, cand, t_beta, criterion="c")
    assert D.required_reads("qasa", THETA, cand, wc, t_beta)[0] < D.required_reads("qasa", THETA, cand, w, t_beta)[0]
    # D-optimal has the largest log det among these designs
    wd = D.optimal_design("qasa", THETA, cand, criterion="D")
    logdet = [np.linalg.slogdet(D.information("qasa", cand, ww, THETA))[1][0] for ww in (wd, w, wc)]
    assert logdet[0] >= max(logdet[1:]) - 1e-6
    with pytest.raises(ValueError, match="criterion"):
        D.optimal_design("qasa", THETA, cand, SD_TARGET, criterion="E")


def test_prior_information_lowers_the_reads_still_needed():
    grid = np.array(h_grid(1.0, 0.05))
    cand = D.candidate_fields((-1, 1))
    w = D.optimal_design("qasa", THETA, cand, SD_TARGET)
    alone = D.required_reads("qasa", THETA, cand, w, SD_TARGET)[0]
    prior = D.information("qasa", grid, np.full(len(grid), 0.3 * alone / len(grid)), THETA)
    rest = D.required_reads("qasa", THETA, cand, w, SD_TARGET, prior=prior)[0]
    assert 0.6 * alone < rest < alone
    sd = np.sqrt(np.diag(np.linalg.inv(prior[0] + rest * D.information("qasa", cand, w / w.sum(), THETA)[0])))
    assert np.all(sd <= SD_TARGET[0] * (1 + 1e-6)) and np.isclose((sd / SD_TARGET[0]).max(), 1, rtol=1e-4)
    # enough prior data: nothing more to read
    big = prior * 100
    assert D.required_reads("qasa", THETA, cand, w, SD_TARGET, prior=big)[0] == 0


def test_cramer_rao_is_the_spread_of_maximum_likelihood_estimates():
    """Known truth, many replicate qubits on the optimal design: the sd of the fits is the CR bound."""
    theta = np.array([[5.0, 0.01, 0.1, 0.05]])
    cand = D.candidate_fields((-1, 1))
    w = D.optimal_design("qasa", theta, cand, SD_TARGET)
    fields, counts = D.allocate(cand, w, 20)
    keep = counts[0] > 0
    x, reads = fields[0, keep], counts[0, keep] * 20_000
    cr = D.cramer_rao("qasa", x, reads, theta)[0]
    rng = np.random.default_rng(11)
    n = 400
    p = get_model("qasa").p_down(x, theta)[0]
    down = rng.binomial(reads, p, size=(n, len(x)))
    r = qasa.Response(np.arange(n), x, down, np.broadcast_to(reads, (n, len(x))).copy())
    f = fit(r, "qasa").table
    est = f[["beta", "b", "gamma", "eta"]].to_numpy()
    spread = est.std(0, ddof=1)
    np.testing.assert_allclose(spread, cr, rtol=0.15)
    assert (np.abs(est.mean(0) - theta[0]) < 3.5 * cr / np.sqrt(n)).all()


def test_targets_parse_and_bad_targets_are_refused():
    assert D.parse_target("beta=1%,b=0.003,eta=0.01") == {"beta": "1%", "b": 0.003, "eta": 0.01}
    t = D.sd_targets("qasa", {"beta": "1%", "b": 0.003}, np.array([[5.0, 0, 0.1, 0.02]]))
    np.testing.assert_allclose(t[0, :2], [0.05 / 1.959964, 0.003 / 1.959964], rtol=1e-5)
    assert np.isinf(t[0, 2:]).all()
    for bad, msg in (("beta=1%,tau=2", "not a parameter"), ("beta", "name=value"), ("b=-1", "positive"),
                     ("b=x", "not a number"), ("", "empty"), ("b=1,b=2", "twice")):
        with pytest.raises(ValueError, match=msg):
            D.parse_target(bad)


def test_candidate_fields_stay_in_h_range_on_the_quantization_grid():
    x = D.candidate_fields((-4, 4))
    assert x.min() == -4 and x.max() == 4 and 0.0 in x
    assert np.allclose(x / 0.005, np.round(x / 0.005))
    assert np.all(np.diff(x[(x > -1) & (x < 1)]) == pytest.approx(0.005))
    with pytest.raises(ValueError, match="increasing"):
        D.candidate_fields((1, -1))


def test_allocate_spends_exactly_the_calls_on_merged_fields():
    cand = D.candidate_fields((-1, 1))
    theta = np.array([[5.0, 0.0, 0.1, 0.03], [8.0, 0.01, 0.1, 0.02], [3.0, -0.01, 0.2, 0.04]])
    t = D.sd_targets("qasa", {"beta": "1%", "b": 0.003, "eta": 0.01}, theta)
    w = D.optimal_design("qasa", theta, cand, t)
    for calls in (1, 7, 30):
        fields, counts = D.allocate(cand, w, calls)
        assert (counts.sum(1) == calls).all()
        assert np.isfinite(fields[counts > 0]).all()
        assert (np.abs(fields[counts > 0]) <= 1).all()


# -- protocol: permuted grids and per-qubit calls ----------------------------------------------------
def test_permuted_grid_gives_every_qubit_every_value_once_per_round_in_its_own_order():
    p = qasa.Protocol.grid(1.0, 0.25, reads_per_h=40, reads_per_call=10, design="permuted",
                           qubits=tuple(range(30)), seed=5)
    calls = sorted(p.calls(), key=lambda c: c.index)          # (run order: shuffled within a pass)
    H = np.stack([c.h for c in calls])                        # (calls, qubits)
    k = len(p.h_values)
    for gauge in range(p.calls_per_h):
        block = H[gauge * k:(gauge + 1) * k]
        assert all(sorted(block[:, q]) == sorted(p.h_values) for q in range(30))
    # different qubits, different orders; antithetic partners share the order and flip the gauge
    assert len({tuple(H[:k, q]) for q in range(30)}) > 25
    np.testing.assert_array_equal(H[:k], H[k:2 * k])
    np.testing.assert_array_equal(calls[0].flips, -calls[k].flips)
    assert not np.array_equal(H[:k], H[2 * k:3 * k])          # a fresh order for the next pair
    # deterministic in the seed
    again = sorted(qasa.Protocol.from_dict(p.to_dict()).calls(), key=lambda c: c.index)
    np.testing.assert_array_equal(np.stack([c.h for c in again]), H)
    with pytest.raises(ProtocolError, match="design"):
        qasa.Protocol(design="random").check()


def test_permuted_run_fits_like_the_grid_and_response_builds_the_union_of_fields(chimera_sa):
    p = qasa.Protocol.grid(1.0, 0.1, reads_per_h=800, reads_per_call=400, design="permuted", seed=3)
    ds = qasa.run(p, chimera_sa)
    r = ds.response()
    assert list(r.h) == sorted(set(p.h_values) | {-h for h in p.h_values})
    # every qubit has all its reads, split over ±h by the gauges, and nothing twice
    assert (r.n_total.sum(1) == 800 * len(p.h_values)).all()
    rows = ds.counts.groupby("call_id")["h"].nunique()
    assert (rows > 1).all()                                    # one field per qubit in each call
    f = fit(ds, "gibbs").table
    assert abs(f["beta"].mean() - 5.0) < 4 * f["beta_stderr"].mean() / np.sqrt(len(f)) + 0.02


def test_explicit_per_qubit_calls_reach_the_counts_table_and_the_fit(chimera_sa, tmp_path):
    p = qasa.Protocol(h_values=(0.0,), reads_per_h=1, reads_per_call=500, spin_reversal=False, seed=9,
                      qubits=tuple(chimera_sa.nodelist[:40]))
    n = 40
    rng = np.random.default_rng(0)
    own = np.round(rng.uniform(-0.6, 0.6, size=(6, n)) / 0.005) * 0.005
    calls = [Call(f"x001-c{c:05d}", 1000 + c, -1, own[c], 0, 500, np.ones(n, np.int8)) for c in range(6)]
    ds = qasa.run(p, chimera_sa, tmp_path / "d", calls=calls)
    r = ds.response()
    assert set(np.round(r.h, 10)) == set(np.round(own.ravel(), 10))
    for i, q in enumerate(r.qubits):
        col = list(p.qubits).index(q)
        expected = {round(v, 10) for v in own[:, col]}
        assert {round(h, 10) for h in r.h[r.n_total[i] > 0]} == expected
        assert r.n_total[i].sum() == 6 * 500
    assert ds.calls["h"].isna().all()                          # no common h in the calls table
    f = fit(ds, "gibbs").table
    assert abs(np.median(f["beta"]) - 5.0) < 0.5
    # same calls again: nothing new (resume skips journaled ids)
    again = qasa.run(p, chimera_sa, tmp_path / "d", calls=calls)
    assert again.counts.equals(ds.counts)
    bad = [Call("y001-c00000", 2000, -1, np.full(n, 9.0), 0, 10, np.ones(n, np.int8))]
    with pytest.raises(ProtocolError, match="h_range"):
        qasa.run(p, chimera_sa, tmp_path / "e", calls=bad)
    assert not (tmp_path / "e").exists()
    with pytest.raises(ProtocolError, match="form"):
        qasa.run(p, chimera_sa, tmp_path / "e", calls=[Call("free-name", 1, -1, 0.1, 0, 10, np.ones(n, np.int8))])
    assert qasa.Dataset.load(tmp_path / "d").metadata["design_rounds"] == {"x001": 6}


# -- between calls: the information of reads that share a call's offset ----------------------------------
def test_between_call_information_has_its_closed_form_and_caps_what_reads_per_call_buy():
    """With a per-call offset δ ~ N(0, σ²) of b, a call of R reads counts n ~ N(R p, R (w + R s²)),
    s² = (∂p/∂b)² σ²: its Gaussian information about (θ, σ²) is R P̃P̃ᵀ/(w + R s²) + ½ v vᵀ,
    v = ((1 − 2p) ∂p/∂θ, R (∂p/∂b)²)/(w + R s²) — checked against the Gaussian Fisher information
    ∂μ∂μᵀ/V + ½ ∂V∂Vᵀ/V² and, as correlations, against the Monte Carlo outer product of its score. At one field on the transition, C calls of R reads give b a variance
    (others known) that tends to σ²/C as R grows: reads beyond that buy nothing, calls do. η, which the
    mean confounds with σ, costs far more reads once σ is a nuisance."""
    model = get_model("qasa")
    theta = np.array([[5.0, 0.01, 0.1, 0.02]])
    x = np.array([-0.3, -0.05, 0.0, 0.05, 0.4])
    R, sig = 1000, 0.012
    got = D.information(model, x, np.full(5, R), theta, sigma_call=sig, reads_per_call=R)[0]   # one call each
    # the Gaussian score of each call, sampled: E[score scoreᵀ] = information
    m, g = model.m_jac(x, theta)
    p, P = 0.5 * (1 + m[0]), 0.5 * g[0]
    gb2 = P[:, 1] ** 2
    mu, V = R * p, R * (p * (1 - p) + R * gb2 * sig ** 2)
    dmu = np.concatenate([R * P, np.zeros((5, 1))], 1)                       # ∂μ/∂(θ, σ²)
    dV = np.concatenate([R * (1 - 2 * p)[:, None] * P, (R * R * gb2)[:, None]], 1)
    exact = np.einsum("ki,kj,k->ij", dmu, dmu, 1 / V) + 0.5 * np.einsum("ki,kj,k->ij", dV, dV, 1 / V ** 2)
    np.testing.assert_allclose(got, exact, rtol=1e-9)
    n = mu + np.sqrt(V) * np.random.default_rng(3).standard_normal((200_000, 5))
    score = ((n - mu) / V)[..., None] * dmu + (0.5 * ((n - mu) ** 2 / V - 1) / V)[..., None] * dV
    mc = np.einsum("ski,skj->ij", score, score) / len(n)
    d = np.diag(exact)
    np.testing.assert_allclose(mc / np.sqrt(np.outer(d, d)), exact / np.sqrt(np.outer(d, d)), atol=0.03)
    # without σ the information of independent reads, as before
    np.testing.assert_allclose(D.information(model, x, np.ones(5), theta),
                               np.einsum("kp,kq,k->pq", g[0], g[0], 1 / (1 - m[0] ** 2))[None], rtol=1e-12)
    # b alone at its transition field: variance per call → σ² as R → ∞ (others known)
    xb = np.array([-0.01])
    for C in (10, 40):
        var = [1.0 / D.information(model, xb, C * r, theta, sigma_call=sig, reads_per_call=r)[0, 1, 1]
               for r in (1e3, 1e5, 1e7)]
        assert var[0] > var[1] > var[2] > 0.99 * sig ** 2 / C
        assert var[2] == pytest.approx(sig ** 2 / C, rel=0.01)
    # the design: a b target near σ/√(calls) and an η target cost more than for independent reads
    cand = D.candidate_fields((-1, 1))
    for target, factor in (({"b": 0.002}, 3.0), ({"eta": 0.01}, 1.5)):     # (measured 4.5× and 2.0×)
        t = D.sd_targets(model, target, theta)
        w = D.optimal_design(model, theta, cand, t, sigma_call=sig, reads_per_call=R)
        assert D.required_reads(model, theta, cand, w, t, sigma_call=sig, reads_per_call=R)[0] > \
            factor * D.required_reads(model, theta, cand, D.optimal_design(model, theta, cand, t), t)[0], target


# -- per-field errors: the information of a field's mean saturates ---------------------------------------
def test_per_field_error_caps_a_fields_information_with_its_closed_form():
    """An offset ε_x ~ N(0, τ²) shared by every call at x: C calls of R reads count n ~ N(R p 1,
    R (w + R s²) I + R² g τ² 11ᵀ), whose mean carries R² P Pᵀ 1ᵀΣ⁻¹1 about θ (checked against the explicit
    inverse): ``T I_m/(1 + T ρ)``, at most ``I_m/ρ``. With the others known, b at the field where p = ½
    (no variance-law information about b there) needs exactly ``T = (w + R g σ²)/(g (t² − τ²))`` reads
    for an sd target t > τ, and no number of reads for t < τ; τ → 0 gives the between-call answer."""
    from scipy import optimize

    model = get_model("qasa")
    theta = np.array([[5.0, 0.01, 0.1, 0.02]])
    sig, tau, R, C = 0.012, 0.004, 1000, 4
    x = np.array([-0.3, -0.05, 0.05, 0.4])
    T = np.full(4, C * R)
    m, g = model.m_jac(x, theta)
    p, P = 0.5 * (1 + m[0]), 0.5 * g[0]
    gb2 = P[:, 1] ** 2
    exact = np.zeros((5, 5))
    for k in range(4):
        S = R * (p[k] * (1 - p[k]) + R * gb2[k] * sig**2) * np.eye(C) + R * R * gb2[k] * tau**2 * np.ones((C, C))
        dmu = np.concatenate([R * P[k], [0.0]])
        exact += np.outer(dmu, dmu) * np.linalg.inv(S).sum()
    got = D.information(model, x, T, theta, sigma_call=sig, reads_per_call=R, sigma_field=tau)[0]
    # τ → ∞: the means carry nothing, what is left is the scatter between calls, which τ does not touch
    scatter = D.information(model, x, T, theta, sigma_call=sig, reads_per_call=R, sigma_field=1e6)[0]
    np.testing.assert_allclose(got - scatter, exact, rtol=1e-6, atol=1e-9 * np.abs(exact).max())
    # b alone at p = ½: the closed form of the reads it needs, and no reads when the target is below τ
    x0 = optimize.brentq(lambda h: model.m_jac(np.array([h]), theta)[0][0, 0], -0.5, 0.5, xtol=1e-14)
    _, g0 = model.m_jac(np.array([x0]), theta)
    gb = (0.5 * g0[0, 0, 1]) ** 2
    known = np.diag([1e15, 0.0, 1e15, 1e15, 1e15])[None]            # β, γ, η and σ² known
    for t_sd in (0.006, 0.0045):
        t = np.array([[np.inf, t_sd, np.inf, np.inf]])
        need = D.required_reads(model, theta, np.array([x0]), np.ones(1), t, prior=known, sigma_call=sig,
                                reads_per_call=R, sigma_field=tau)[0]
        assert need == pytest.approx((0.25 + R * gb * sig**2) / (gb * (t_sd**2 - tau**2)), rel=2e-3), t_sd
    t = np.array([[np.inf, 0.0039, np.inf, np.inf]])
    assert D.required_reads(model, theta, np.array([x0]), np.ones(1), t, prior=known, sigma_call=sig,
                            reads_per_call=R, sigma_field=tau)[0] == np.inf
    # τ → 0: the between-call answer; earlier reads at the same field count against the cap
    cand = D.candidate_fields((-1, 1))
    tt = D.sd_targets(model, {"beta": "2%", "b": 0.004}, theta)
    w = D.optimal_design(model, theta, cand, tt, sigma_call=sig, reads_per_call=R)
    plain = D.required_reads(model, theta, cand, w, tt, sigma_call=sig, reads_per_call=R)[0]
    tiny = D.required_reads(model, theta, cand, w, tt, sigma_call=sig, reads_per_call=R, sigma_field=1e-9)[0]
    assert tiny == pytest.approx(plain, rel=2e-3)
    capped = D.required_reads(model, theta, cand, w, tt, sigma_call=sig, reads_per_call=R, sigma_field=0.002)[0]
    assert capped > 1.05 * plain
    with pytest.raises(ValueError, match="sigma_field"):
        D.information(model, x, T, theta, sigma_field=0.004)                 # needs sigma_call
    with pytest.raises(ValueError, match="sigma_field"):
        D.information(model, x, T, theta, sigma_call=sig, sigma_field=float("nan"))


def test_a_design_that_knows_the_per_field_error_spreads_its_reads_and_beats_the_grid():
    """With τ = 0.0036 (the virtual device's fitted σ_field) and σ_call 0.0144 at typical Advantage-like
    parameters, β 2 % and b 0.005: the τ-blind design concentrates on a few fields, which then saturate
    (measured: 1.6 × 10¹² reads by the τ-aware count), the uniform ±1 grid in steps of 0.025 needs 1.5 × 10⁷,
    and the τ-aware design — fields one DAC step apart, designed for the reads it will spend — 8.4 × 10⁶ on
    52 fields. allocate(merge=False) keeps those fields apart."""
    model = get_model("qasa")
    theta = np.array([[5.05, 0.0, 0.1, 0.02]])
    t = D.sd_targets(model, "beta=2%,b=0.005", theta)
    kw = dict(sigma_call=0.0144, reads_per_call=10_000)
    tau = 0.0036
    cand = D.field_candidates(D.candidate_fields((-1, 1)))
    assert np.allclose(np.diff(cand), D.FIELD_SPACING)
    grid = np.arange(-40, 41) * 0.025
    ref = D.required_reads(model, theta, grid, np.ones(len(grid)), t, sigma_field=tau, **kw)[0]
    blind_w = D.optimal_design(model, theta, cand, t, **kw)
    blind = D.required_reads(model, theta, cand, blind_w, t, sigma_field=tau, **kw)[0]
    need = blind
    for _ in range(3):
        w = D.optimal_design(model, theta, cand, t, reads=min(need, 1e8), sigma_field=tau, **kw)
        need = D.required_reads(model, theta, cand, w, t, sigma_field=tau, **kw)[0]
    assert need < 0.8 * ref < 0.8 * blind
    assert (w > 2e-3).sum() >= 3 * (blind_w > 2e-3).sum()              # measured 52 fields against 10
    fields, counts = D.allocate(cand, w, 200, merge=False)
    merged, _ = D.allocate(cand, w, 200)
    assert np.isfinite(fields).sum() > 2 * np.isfinite(merged).sum() and counts.sum() == 200
    # τ → 0: the design of the between-call information, as before
    w0 = D.optimal_design(model, theta, cand, t, reads=1e7, sigma_field=1e-9, **kw)
    np.testing.assert_allclose(w0, D.optimal_design(model, theta, cand, t, reads=1e7, **kw), atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (True, "must be one number"), ("0.01", "must be one number"), (np.array([0.004]), "must be one number"),
    (-0.001, "finite field error ≥ 0"), (float("inf"), "finite field error ≥ 0")])
def test_a_bad_per_field_error_is_refused_naming_it(bad, match):
    with pytest.raises(ValueError, match=match):
        D.information("qasa", np.array([0.0]), np.ones(1), np.array([[5.0, 0.0, 0.1, 0.02]]), sigma_call=0.01,
                      sigma_field=bad)


def test_required_reads_with_a_per_field_error_checks_prior_reads_and_ends_on_any_reads_per_call():
    """reads_per_call ≤ 0 is taken as 1 (as without τ) instead of doubling 0 for ever; prior reads must be
    finite, ≥ 0 and one per candidate."""
    theta = np.array([[5.0, 0.0, 0.1, 0.02]])
    x = np.array([-0.1, 0.0, 0.1])
    t = D.sd_targets("qasa", {"b": 0.005}, theta)
    for rpc in (0, -5):
        need = D.required_reads("qasa", theta, x, np.ones(3), t, sigma_call=0.01, reads_per_call=rpc, sigma_field=0.003)
        assert np.isfinite(need).all() and need[0] > 0
    for bad in (np.full(3, -500.0), np.full(3, np.nan), np.ones(4)):
        with pytest.raises(ValueError, match="prior_reads"):
            D.required_reads("qasa", theta, x, np.ones(3), t, sigma_call=0.01, reads_per_call=100, sigma_field=0.003,
                             prior_reads=bad)

"""Hard cases of the coarse-grid multistart and of the profile intervals (found by a tester).

Each test states the correct behaviour with the data that broke it (all fixed since).
The reference ("every start on all data") is :func:`qasa.fit` with ``_COARSE_MIN_H`` above the grid
length (docs/DESIGN.md §3: the η = 0 optimum the multistart exists to avoid).
"""

import numpy as np
import pytest

from qasa import fitting
from qasa.dataset import Response
from qasa.fitting import fit, maximize
from qasa.models import get_model
from qasa.protocol import h_grid

H81 = np.array(h_grid(1.0, 0.025))


def _deviance_at_beta(row, h, nd, nt, beta: float) -> float:
    """2(ℓ̂ − ℓ_p(β)) of one fitted qubit: the other parameters re-maximized from the estimate."""
    at = row[["beta", "b", "gamma", "eta"]].to_numpy(float)[None]
    at[0, 0] = beta
    fixed = np.array([[True, False, False, False]])
    _, ll, _, _ = maximize("qasa", h, np.asarray(nd, float)[None], np.asarray(nt, float)[None], at, fixed=fixed,
                           tol=1e-10)
    return 2 * (row["loglik"] - ll[0])


def _both(monkeypatch, r, model="qasa"):
    """The fit with the coarse path (default) and with every start on all data."""
    coarse = fit(r, model).table.iloc[0]
    monkeypatch.setattr(fitting, "_COARSE_MIN_H", 10**9)
    full = fit(r, model).table.iloc[0]
    return coarse, full


def test_few_reads_on_the_coarse_columns_do_not_decide_the_basin(monkeypatch):
    """The coarse columns (every 4th of 81) have 3 reads, the others 10⁴: the coarse data have a spurious
    optimum (β 9.4, γ 0, η 0.52) that passes the β·Δh check; refined on all data it runs off to
    β ≈ 1e6, 1 524 nats below the fit of every start on all data (β 1.11 against a truth of 1.03)."""
    rng = np.random.default_rng(41)
    n = 2000
    theta = np.column_stack([np.exp(rng.uniform(np.log(0.5), np.log(30), n)), rng.uniform(-.3, .3, n),
                             rng.uniform(0, 1, n), rng.uniform(0, .3, n)])
    nt = np.full((n, 81), 10_000)
    nt[:, ::4] = 3
    nd = rng.binomial(nt, get_model("qasa").p_down(H81, theta))
    q = 995
    coarse, full = _both(monkeypatch, Response(np.array([q]), H81, nd[q:q + 1], nt[q:q + 1]))
    assert abs(full["beta"] - theta[q, 0]) < 0.2 and full["quality"] == "good"
    assert coarse["loglik"] > full["loglik"] - 1e-3


def test_coarse_starts_do_not_end_on_the_eta_zero_optimum(monkeypatch):
    """linspace(-1, 1, 60), 1 000 reads per h, truth (0.731, 0.118, 0.385, 0.097): every start on all
    data reaches ℓ = −36 855.286 (η̂ = 0.65); the coarse path stops on η = 0, 0.70 nats lower, and
    reports the qubit good with 'eta on its bound'."""
    h = np.linspace(-1, 1, 60)
    nd = np.array([200, 252, 231, 238, 271, 230, 294, 274, 279, 315, 316, 330, 313, 345, 324, 375, 404, 415, 428,
                   401, 435, 443, 450, 488, 474, 496, 504, 548, 533, 528, 549, 548, 567, 606, 571, 604, 607, 596,
                   645, 653, 667, 677, 698, 704, 692, 728, 735, 732, 763, 724, 775, 791, 777, 808, 788, 793, 824,
                   804, 822, 817])
    coarse, full = _both(monkeypatch, Response(np.array([0]), h, nd[None], np.full((1, 60), 1000)))
    assert full["eta"] > 0.5
    assert coarse["loglik"] > full["loglik"] - 1e-3


def test_a_slow_refinement_does_not_fail_a_qubit_the_reference_fits(monkeypatch):
    """Virtual QPU (advantage4.1, 81 values, 20 reads per h; `qasa assess --device-seed 1004 --seed 2004
    --reads 20 --num-qubits 1000`, qubit 620): the refinement of the coarse basin (γ on its bound)
    creeps for 251 iterations and the qubit is 'failed: optimizer did not converge' — 2e-5 nats from
    the optimum that every start on all data reaches in ≤ 147 iterations per start."""
    nd = np.array([0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 3, 2, 6,
                   5, 3, 5, 7, 4, 5, 17, 11, 0, 13, 16, 16, 15, 15, 0, 0, 17, 20, 19, 19, 0, 20, 40, 20, 0, 40, 40,
                   20, 40, 0, 0, 20, 20, 20, 20, 20, 40, 20, 20, 20, 20, 20, 20, 40, 20, 0, 20, 20])
    nt = np.array([20, 20, 40, 20, 0, 20, 20, 20, 20, 20, 20, 0, 20, 20, 20, 20, 20, 40, 40, 0, 20, 0, 0, 40, 20, 0,
                   20, 40, 20, 20, 20, 20, 40, 40, 20, 20, 20, 20, 20, 40, 20, 0, 20, 20, 20, 20, 20, 0, 0, 20, 20,
                   20, 20, 0, 20, 40, 20, 0, 40, 40, 20, 40, 0, 0, 20, 20, 20, 20, 20, 40, 20, 20, 20, 20, 20, 20,
                   40, 20, 0, 20, 20])
    coarse, full = _both(monkeypatch, Response(np.array([620]), H81, nd[None], nt[None]))
    assert full["quality"] == "good"
    assert coarse["quality"] != "failed"


def test_a_beta_profile_that_never_crosses_the_cut_off_is_unbounded():
    """54 values on [−1, 1], 10⁴ reads per h, truth (59.2, −0.435, 0.553, 0.064): the profile of β
    levels off at r = √(2(ℓ̂ − ℓ_p)) ≈ 1.27 < 1.96 for every β ≥ 50 (checked to 1e8), so β is not
    bounded above; the fit reports β_hi ≈ 3 200 and quality 'good' with an empty reason."""
    h = np.linspace(-1, 1, 54)
    nd = np.array([346, 323, 322, 303, 281, 268, 278, 275, 278, 253, 263, 235, 233, 206, 194, 166, 181, 163, 128,
                   125, 91, 72, 55, 31, 21, 6, 1, 4, 13, 62, 142, 335, 684, 1155, 1730, 2521, 3387, 4277, 5006,
                   5722, 6177, 6652, 7016, 7364, 7581, 7715, 7927, 8062, 8148, 8267, 8344, 8455, 8551, 8551])
    nt = np.full(54, 10_000)
    row = fit(Response(np.array([0]), h, nd[None], nt[None]), "qasa").table.iloc[0]
    assert _deviance_at_beta(row, h, nd, nt, 1e8) < 3.84      # the data do not exclude β = 1e8 ...
    assert row["beta_hi"] == np.inf                     # ... so the interval must not end below it


def test_profile_intervals_of_eta_are_nested_in_the_level():
    """Reference grid, 1 000 reads per h, truth (0.884, −0.086, 0.484, 0.294), η̂ ≈ 0.01: the profile of η
    has r = 0.19 at the reported 95 % end 0.351 (cut-off 1.96; it crosses between 0.5 and 0.6), and
    ``level=0.5`` gives η_hi = 0.508 — a 95 % interval must contain the 50 % one."""
    nd = np.array([147, 133, 176, 168, 167, 198, 182, 201, 171, 177, 210, 212, 202, 222, 225, 253, 253, 263, 283,
                   278, 253, 266, 314, 308, 314, 352, 333, 349, 365, 357, 376, 376, 387, 404, 400, 390, 433, 432,
                   448, 430, 447, 456, 523, 478, 510, 500, 528, 528, 532, 568, 522, 579, 587, 610, 632, 605, 638,
                   624, 643, 662, 678, 699, 694, 690, 708, 699, 713, 697, 734, 700, 719, 771, 753, 753, 796, 773,
                   782, 803, 811, 827, 786])
    r = Response(np.array([0]), H81, nd[None], np.full((1, 81), 1000))
    wide = fit(r, "qasa", level=0.95).table.iloc[0]
    narrow = fit(r, "qasa", level=0.5).table.iloc[0]
    assert wide["eta_lo"] <= narrow["eta_lo"] and wide["eta_hi"] >= narrow["eta_hi"]


def test_a_response_that_never_saturates_does_not_take_the_coarse_path(monkeypatch):
    """γ 2.5–4.3 keeps P(−1) inside [0.1, 0.9] on the whole grid: every coarse value looked like the
    transition, every coarse start ended on η = 0 and the fit was up to 77 000 nats short (10⁶ reads
    per h). Such rows now run every start on all the data."""
    rng = np.random.default_rng(7)
    n = 40
    theta = np.column_stack([rng.uniform(17, 30, n), rng.uniform(-0.2, 0.2, n), rng.uniform(2.5, 4.3, n),
                             rng.uniform(0.27, 0.41, n)])
    nt = np.full((n, 81), 10**6)
    r = Response(np.arange(n), H81, rng.binomial(nt, get_model("qasa").p_down(H81, theta)), nt)
    coarse = fit(r, "qasa", intervals=False).table
    monkeypatch.setattr(fitting, "_COARSE_MIN_H", 10**9)
    full = fit(r, "qasa", intervals=False).table
    assert (coarse["loglik"] - full["loglik"]).min() > -1e-3


def test_the_lower_end_of_an_unbounded_beta_profile_is_on_the_cut_off():
    """Reference grid, 100 reads per h, truth (23.8, 0.012, 0.534, 0.298): β̂ runs off to ~1e31 (the profile
    of β is flat above β ≈ 15), correctly 'beta not identified' with β_hi = inf, but β_lo ≈ 1e27, where
    2(ℓ̂ − ℓ_p) ≈ 0: the data do not exclude the truth (2(ℓ̂ − ℓ_p(23.8)) = 0.054), the interval did. The
    end is now bisected on a log scale and, left far beyond the cut-off, the conservative outer point."""
    nd = np.array([9, 8, 8, 10, 7, 8, 9, 6, 5, 7, 3, 11, 9, 7, 7, 6, 13, 16, 10, 11, 13, 12, 20, 12, 16, 13, 18, 24,
                   31, 24, 47, 47, 43, 45, 45, 50, 47, 46, 52, 45, 45, 43, 52, 53, 44, 55, 54, 54, 55, 69, 66, 75,
                   88, 76, 83, 90, 91, 84, 91, 85, 92, 90, 89, 89, 88, 94, 91, 91, 93, 91, 91, 87, 93, 93, 95, 91,
                   98, 96, 92, 91, 92])
    nt = np.full(81, 100)
    row = fit(Response(np.array([0]), H81, nd[None], nt[None]), "qasa").table.iloc[0]
    assert _deviance_at_beta(row, H81, nd, nt, 23.8) < 3.84        # the data do not exclude β = 23.8 ...
    assert row["beta_lo"] <= 23.8                         # ... so the interval must contain it


def test_a_coarse_eta_zero_trap_at_large_gamma_is_escaped(monkeypatch):
    """Reference grid, 10⁶ reads per h, truth (28.5, 0.182, 2.77, 0.323): every coarse start ends on η = 0, and
    the start farthest from the bound, run alone on all the data, ends there too (β 1.29, γ 2.78, η 0: lack of
    fit), 77 274 nats below every start on all the data (β 23.0, γ 2.77, η 0.323, good). A response that
    never leaves [0.1, 0.9] now runs every start on all the data."""
    nd = np.array([360568, 362298, 362563, 362574, 365239, 364723, 365699, 367788, 370416, 370588, 372263, 373153,
                   375612, 377202, 379100, 381118, 383530, 386604, 389939, 392608, 396363, 399350, 403376, 409058,
                   413708, 420417, 425933, 433964, 442596, 451992, 463608, 476837, 490178, 504895, 518758, 532661,
                   542459, 545356, 536981, 517399, 500631, 534290, 605571, 659631, 690593, 708089, 717190, 721980,
                   723448, 723380, 723233, 722950, 720896, 719948, 718207, 716686, 715256, 713930, 712229, 711370,
                   709272, 709035, 707406, 706167, 705932, 703275, 703134, 701941, 701031, 700531, 699590, 698876,
                   698455, 697573, 696670, 695995, 695597, 695030, 694478, 693999, 694362])
    r = Response(np.array([261]), H81, nd[None], np.full((1, 81), 10**6))
    coarse, full = _both(monkeypatch, r)
    assert full["eta"] > 0.3 and full["quality"] == "good"       # the reference finds the truth's basin ...
    assert coarse["loglik"] >= full["loglik"] - 1e-3              # ... so must the default fit


@pytest.mark.xfail(strict=True, reason="the inner maximization of a large-β profile point ends on a poor local "
                                       "maximum (tester, round 2)")
def test_a_beta_profile_that_stays_inside_at_large_beta_is_unbounded():
    """Reference grid, 100 reads per h, truth (52.4, 0.011, 0.972, 0.016): fit β̂ 34.4, η̂ = 0, reported 'good'
    with β ∈ [24.9, 1 093]. At β = 1 093, 10⁴ and 10⁵ the profile's inner maximization has two local maxima
    in (b, η) (the response is nearly a step between grid points): from the warm start 2(ℓ̂ − ℓ_p) = 6.05, from
    (γ̂ + 1, η = 0.05) 0.57–0.65 — the data do not exclude β = 10⁴, the interval ends at 1 093."""
    nd = np.array([16, 15, 15, 14, 13, 20, 21, 15, 9, 14, 13, 12, 22, 7, 16, 22, 18, 14, 13, 14, 15, 14, 11, 12, 13,
                   19, 18, 17, 10, 16, 9, 17, 18, 15, 14, 13, 14, 19, 16, 30, 62, 87, 93, 87, 84, 87, 85, 91, 85, 82,
                   88, 87, 94, 86, 83, 85, 92, 87, 87, 93, 88, 88, 84, 92, 86, 82, 86, 82, 85, 89, 84, 88, 85, 85, 80,
                   79, 85, 87, 85, 92, 88])
    nt = np.full(81, 100)
    row = fit(Response(np.array([0]), H81, nd[None], nt[None]), "qasa").table.iloc[0]
    far = row[["beta", "b", "gamma", "eta"]].to_numpy(float)[None]
    far[0, 0], far[0, 2], far[0, 3] = 1e4, far[0, 2] + 1.0, 0.05
    fixed = np.array([[True, False, False, False]])
    _, ll_far, _, _ = maximize("qasa", H81, nd[None].astype(float), nt[None].astype(float), far, fixed=fixed,
                               max_iter=500, tol=1e-10)
    assert 2 * (row["loglik"] - ll_far[0]) < 3.84      # the data do not exclude β = 10⁴ ...
    assert row["beta_hi"] >= 1e4                        # ... so the interval must reach it

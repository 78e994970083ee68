r"""Classical analogues of annealing: the same schedule shapes on SGD, simulated annealing and a QPU.

Every study takes a list of :class:`qasa.schedules.Shape` and returns one tidy table (one row per
shape); :func:`combined` joins them with each system's end-of-schedule temperature side by side.

Noisy quadratic model (SGD; DESIGN.md §4)
    Per eigen-direction with curvature h and gradient-noise variance c, SGD with learning rate η_t
    has second moment ``m_{t+1} = (1 − η_t h)² m_t + η_t² c`` exactly; the expected excess loss is
    ``½ Σ h m``. A constant rate has the floor ``m∞ = ηc / (h(2 − ηh))`` — a Gibbs state at
    temperature ηc/2 — and the optimal 1-D schedule is ``η_t = 1/(h(t + t₀ + 1))``,
    ``t₀ = c/(h² m₀)``, giving ``m_T = c/(h²(T + t₀))``. :func:`nqm_study` runs each shape over a grid
    of η₀ on a skewed spectrum and reports the best final loss, the loss at budgets and the
    sensitivity to η₀; :func:`nqm_monte_carlo` cross-checks the recursion with simulated SGD.

Two-direction regression (after Nakkiran 2020)
    Train loss ``½ Σ λ_i e_i²`` and test loss ``½ Σ μ_i e_i²`` over the error e = w − w*. Small
    steps remove the stiff direction first, so the train loss that is left sits in the soft one
    (test/train ratio μ₂/λ₂); a large first step (ηλ₁ = 2) leaves the stiff direction oscillating
    while the soft one converges, and annealing then removes the stiff one last (ratio μ₁/λ₁). With
    μ₂/λ₂ = 2 μ₁/λ₁ the small-step run has twice the test loss at the same train loss
    (:func:`two_direction_regression`).

Simulated annealing (dwave-samplers)
    A planted Ising instance (a ferromagnet in a random gauge on a Chimera graph, ground state
    known) annealed with each shape as its β schedule (Metropolis, random order — the standard SA;
    DESIGN.md §5: random order or Gibbs acceptance is needed for correct marginals): ground-state
    probability and residual energy. On isolated spins the same schedule is measured by a QASA fit:
    with random order some spins are last updated before the final sweep, so the effective β is set
    by the schedule's tail — SA's own freeze-out.

QPU / virtual QPU
    QASA run with each monotone shape as the anneal schedule (:func:`qasa.schedules.to_anneal_schedule`):
    median fitted β and η, share of good qubits, and on the virtual QPU the true freeze-out point.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from qasa.schedules import Shape, shape, to_anneal_schedule, to_beta_schedule

__all__ = [
    "DEFAULT_SHAPES", "nqm_moments", "nqm_loss", "nqm_monte_carlo", "constant_floor", "optimal_schedule",
    "nqm_study", "two_direction_regression", "planted_instance", "sa_study", "qpu_study", "combined",
]

DEFAULT_SHAPES: tuple[Shape, ...] = (
    shape("constant"), shape("step", milestones=(0.5, 0.75), gamma=0.1), shape("exponential", final=0.01),
    shape("inverse-time", k=20.0), shape("linear"), shape("polynomial", power=2.0), shape("cosine"),
    shape("rex"), shape("sigmoid", k=10.0), shape("sgdr", cycles=3), shape("onecycle"),
    shape("eigencurve", spectrum=(1.0, 0.1, 0.01), eta0_lambda_max=0.02, horizon=1000),
)


# -- noisy quadratic model ----------------------------------------------------------------------------
def nqm_moments(lrs: np.ndarray, h: np.ndarray, c: np.ndarray, m0: np.ndarray | float) -> np.ndarray:
    """Second moments per step and direction, shape (T + 1, d), by the exact recursion."""
    lrs = np.asarray(lrs, float)
    h, c = np.atleast_1d(np.asarray(h, float)), np.atleast_1d(np.asarray(c, float))
    m = np.empty((len(lrs) + 1, len(h)))
    m[0] = np.broadcast_to(np.asarray(m0, float), h.shape)
    for t, eta in enumerate(lrs):
        m[t + 1] = (1.0 - eta * h) ** 2 * m[t] + eta * eta * c
    return m


def nqm_loss(lrs: np.ndarray, h: np.ndarray, c: np.ndarray, m0: np.ndarray | float) -> np.ndarray:
    """Expected excess loss ½ Σ h m per step, shape (T + 1,)."""
    return 0.5 * nqm_moments(lrs, h, c, m0) @ np.atleast_1d(np.asarray(h, float))


def nqm_monte_carlo(lrs: np.ndarray, h: np.ndarray, c: np.ndarray, m0: float, runs: int = 20_000,
                    seed: int | None = 0) -> np.ndarray:
    """Mean x² per step from simulated SGD ``x ← x − η (h x + √c ξ)``, x₀ ~ N(0, m0), shape (T + 1, d)."""
    rng = np.random.default_rng(seed)
    h, c = np.atleast_1d(np.asarray(h, float)), np.atleast_1d(np.asarray(c, float))
    x = rng.normal(0.0, np.sqrt(m0), (runs, len(h)))
    out = [np.mean(x * x, 0)]
    for eta in lrs:
        x = x - eta * (h * x + np.sqrt(c) * rng.standard_normal(x.shape))
        out.append(np.mean(x * x, 0))
    return np.array(out)


def constant_floor(h: float, c: float, eta: float) -> float:
    """Stationary second moment of constant-rate SGD, ηc / (h(2 − ηh))."""
    return eta * c / (h * (2.0 - eta * h))


def optimal_schedule(h: float, c: float, m0: float, T: int) -> tuple[np.ndarray, float]:
    """The optimal 1-D schedule ``η_t = 1/(h(t + t₀ + 1))`` and its final moment ``c/(h²(T + t₀))``."""
    t0 = c / (h * h * m0)
    lrs = 1.0 / (h * (np.arange(T) + t0 + 1.0))
    return lrs, c / (h * h * (T + t0))


def skewed_spectrum(d: int = 50, alpha: float = 1.5, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Power-law curvatures h_i = i^(−α) and gradient noise c_i = noise · h_i (noise ∝ curvature)."""
    h = np.arange(1, d + 1, dtype=float) ** -alpha
    return h, noise * h


def nqm_study(shapes: Sequence[Shape] = DEFAULT_SHAPES, steps: int = 1000,
              spectrum: tuple[np.ndarray, np.ndarray] | None = None, m0: float = 1.0,
              eta0_grid: Iterable[float] | None = None, budgets: Sequence[float] = (0.25, 0.5)) -> pd.DataFrame:
    """Each shape on the noisy quadratic model, η₀ tuned over a grid.

    Columns: ``shape``, ``eta0`` (best), ``final_loss``, ``loss_at_<b>`` for each budget fraction,
    ``eta0_sensitivity`` (median over the grid of final loss / best final loss, among the η₀ that
    do not diverge), ``temperature`` (η_T c̄ / 2 at the final rate: the Gibbs temperature SGD ends at).
    """
    h, c = spectrum if spectrum is not None else skewed_spectrum()
    grid = np.array(list(eta0_grid)) if eta0_grid is not None else np.geomspace(0.05, 1.9, 16) / h.max()
    rows = []
    for sh in shapes:
        base = sh(np.arange(steps) / steps)
        finals, curves = [], []
        for eta0 in grid:
            loss = nqm_loss(eta0 * base, h, c, m0)
            finals.append(loss[-1])
            curves.append(loss)
        finals = np.array(finals)
        ok = np.isfinite(finals) & (finals < 1e6)
        best = int(np.nanargmin(np.where(ok, finals, np.inf)))
        row = {"shape": sh.label, "eta0": float(grid[best]), "final_loss": float(finals[best]),
               "eta0_sensitivity": float(np.median(finals[ok] / finals[best])),
               "temperature": float(grid[best] * base[-1] * np.mean(c) / 2.0)}
        for b in budgets:
            row[f"loss_at_{b:g}"] = float(curves[best][int(b * steps)])
        rows.append(row)
    return pd.DataFrame(rows)


# -- two-direction regression (after Nakkiran 2020) ------------------------------------------------------
def two_direction_regression(train_loss: float = 1e-4, lam: tuple[float, float] = (1.0, 0.01),
                             mu: tuple[float, float] = (1.0, 0.02), e0: tuple[float, float] = (1.0, 1.0),
                             small_lr: float = 0.5, large_steps: int = 2000, max_steps: int = 10**6) -> dict[str, float]:
    """Test loss at equal train loss: small steps versus a large first step then annealing.

    Both runs are full-batch gradient descent on ``½ Σ λ_i e_i²`` stopped at the first step whose
    train loss is ≤ ``train_loss``. The large run uses η = 2/λ₁ for ``large_steps`` steps (the stiff
    direction oscillates without decaying) and then ``small_lr``.
    """
    lam_a, mu_a = np.asarray(lam, float), np.asarray(mu, float)

    def descend(e, lr_at):
        for t in range(max_steps):
            train = 0.5 * np.sum(lam_a * e * e)
            if train <= train_loss:
                return e, t, train
            e = e * (1.0 - lr_at(t) * lam_a)
        raise RuntimeError("did not reach the train loss")

    e_small, t_small, tr_small = descend(np.asarray(e0, float), lambda t: small_lr)
    e_large, t_large, tr_large = descend(np.asarray(e0, float),
                                         lambda t: 2.0 / lam_a[0] if t < large_steps else small_lr)
    test_small = 0.5 * np.sum(mu_a * e_small * e_small)
    test_large = 0.5 * np.sum(mu_a * e_large * e_large)
    return {"train_small": tr_small, "train_large": tr_large, "test_small": test_small, "test_large": test_large,
            "steps_small": t_small, "steps_large": t_large, "ratio": test_small / test_large * tr_large / tr_small}


# -- simulated annealing -------------------------------------------------------------------------------
def planted_instance(topology_shape: Sequence[int] = (4, 4, 4), seed: int = 0):
    """A ferromagnet in a random gauge on a Chimera graph: ``(bqm, ground_state, ground_energy)``.

    Couplings ``J_ij = −g_i g_j w_ij`` with w ~ U(0.5, 1): frustration-free, so ``s = g`` is the
    ground state with energy ``−Σ w``.
    """
    import dimod
    import dwave.graphs as dg

    g = dg.chimera_graph(*topology_shape)
    rng = np.random.default_rng(seed)
    gauge = {v: int(x) for v, x in zip(sorted(g.nodes), rng.choice([-1, 1], g.number_of_nodes()))}
    J = {(u, v): -gauge[u] * gauge[v] * float(rng.uniform(0.5, 1.0)) for u, v in g.edges}
    bqm = dimod.BinaryQuadraticModel.from_ising({}, J)
    return bqm, gauge, -sum(abs(x) for x in J.values())


def sa_study(shapes: Sequence[Shape] = DEFAULT_SHAPES, beta_range: tuple[float, float] = (0.1, 5.0),
             num_sweeps: int = 64, reads: int = 200, seed: int = 0, qasa_reads: int = 1000) -> pd.DataFrame:
    """Each shape as the β schedule of SA on a planted instance and on isolated spins.

    Columns: ``shape``, ``ground_state_probability``, ``residual_energy`` (mean, per spin),
    ``beta_final``, ``beta_effective`` (pooled Gibbs fit of a QASA run on isolated spins with the
    same schedule), ``beta_effective_stderr``, ``temperature`` (1/β_effective).
    """
    from dwave.samplers import SimulatedAnnealingSampler

    import qasa
    from qasa.fitting import fit
    from qasa.samplers import StructuredSASampler

    bqm, ground, e0 = planted_instance(seed=seed)
    variables = list(bqm.variables)
    target = np.array([ground[v] for v in variables])
    sa = SimulatedAnnealingSampler()
    rows = []
    for k, sh in enumerate(shapes):
        betas = to_beta_schedule(sh, beta_range, num_sweeps)
        ss = sa.sample(bqm, num_reads=reads, beta_schedule_type="custom", beta_schedule=betas,
                       proposal_acceptance_criteria="Metropolis", randomize_order=True, seed=seed + k)
        samples = ss.record.sample[:, [ss.variables.index(v) for v in variables]]
        occ = ss.record.num_occurrences
        gs = (np.all(samples == target, 1) | np.all(samples == -target, 1))
        residual = (ss.record.energy - e0) / len(variables)
        single = StructuredSASampler("chimera", [4, 4, 4], beta_schedule=list(betas), acceptance="Metropolis",
                                     randomize_order=True)
        protocol = qasa.Protocol.grid(1.0, 0.2, reads_per_h=qasa_reads, reads_per_call=min(qasa_reads, 10_000),
                                      seed=seed)
        ds = qasa.run(protocol, single)
        pooled = fit(ds.response().pooled(), "gibbs").table.iloc[0]
        rows.append({"shape": sh.label, "ground_state_probability": float(np.sum(gs * occ) / occ.sum()),
                     "residual_energy": float(np.sum(residual * occ) / occ.sum()), "beta_final": float(betas[-1]),
                     "beta_effective": float(pooled["beta"]), "beta_effective_stderr": float(pooled["beta_stderr"]),
                     "temperature": 1.0 / float(pooled["beta"])})
    return pd.DataFrame(rows)


# -- QPU / virtual QPU ---------------------------------------------------------------------------------
def qpu_study(shapes: Sequence[Shape] = DEFAULT_SHAPES, sampler=None, annealing_time: float = 20.0,
              reads_per_h: int = 2000, h_step: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """QASA with each monotone shape as the anneal schedule (non-monotone or constant shapes: a row
    of NaN with a ``note``).

    Columns: ``shape``, ``anneal_schedule``, ``approximation_error`` (max and mean), ``beta``, ``eta``,
    ``good_fraction``, ``temperature`` (1/β), and on the virtual QPU ``true_beta`` and
    ``true_freezeout_s`` (medians).
    """
    import qasa
    from qasa.errors import ProtocolError
    from qasa.fitting import fit

    if sampler is None:
        from qasa.virtual import VirtualQPU

        sampler = VirtualQPU(seed=seed, topology_shape=[4], broken_nodes=[])
    rows = []
    for sh in shapes:
        row: dict[str, Any] = {"shape": sh.label}
        try:
            if not sh.is_monotone():
                raise ProtocolError("non-monotone: a reverse anneal, which needs an initial state")
            export = to_anneal_schedule(sh, sampler, annealing_time)
        except ProtocolError as exc:
            row["note"] = str(exc)
            rows.append(row)
            continue
        protocol = qasa.Protocol.grid(1.0, h_step, reads_per_h=reads_per_h, anneal_schedule=export.schedule, seed=seed)
        ds = qasa.run(protocol, sampler)
        t = fit(ds, "qasa").table
        good = t[t["quality"] == "good"]
        row.update(anneal_schedule=export.schedule, approximation_error=export.max_error,
                   mean_approximation_error=export.mean_error,
                   beta=float(good["beta"].median()), eta=float(good["eta"].median()),
                   good_fraction=float(len(good) / len(t)), temperature=1.0 / float(good["beta"].median()))
        truth_for = getattr(sampler, "truth_for", None)
        if truth_for is not None:
            truth = truth_for(anneal_schedule=export.schedule)
            row.update(true_beta=float(truth["beta"].median()), true_freezeout_s=float(truth["freezeout_s"].median()))
        rows.append(row)
    return pd.DataFrame(rows)


def combined(nqm: pd.DataFrame, sa: pd.DataFrame, qpu: pd.DataFrame) -> pd.DataFrame:
    """One row per shape: each system's quality and end-of-schedule temperature side by side."""
    a = nqm.set_index("shape")[["final_loss", "eta0_sensitivity", "temperature"]].add_prefix("sgd_")
    b = sa.set_index("shape")[["ground_state_probability", "residual_energy", "beta_effective", "temperature"]].add_prefix("sa_")
    cols = [c for c in ("beta", "eta", "good_fraction", "temperature", "true_freezeout_s") if c in qpu]
    c = qpu.set_index("shape")[cols].add_prefix("qpu_")
    return a.join(b, how="outer").join(c, how="outer").reset_index()

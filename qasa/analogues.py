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

The measured device next to its analogues (data for the assessment report)
    All temperatures in units of the programmed field h, the unit of the measured T_eff = 1/β. The
    anneal that was run fixes the device's instantaneous temperature ``T(t) = 2 k_B T_phys/B(s(t))``
    (DESIGN.md §2); SA driven along it ends at the last T (isolated spins equilibrate every Gibbs
    sweep, DESIGN.md §5), while SGD on the noisy quadratic model with the rate whose Gibbs floor is
    T(t) — an exponential moving average ``h m_{t+1} = (1 − η_t h)² h m_t + (1 − (1 − η_t h)²) T_t`` —
    falls behind as the rate falls and ends at a freeze-out temperature, like the device.
    :func:`device_analogue` gives one row per system for one run; :func:`analogue_trend` calibrates the
    SGD rate on one run and predicts the β trend across anneals next to the measured one.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from qasa.schedules import Shape, shape, to_anneal_schedule, to_beta_schedule

__all__ = [
    "DEFAULT_SHAPES", "nqm_moments", "nqm_loss", "nqm_monte_carlo", "constant_floor", "optimal_schedule",
    "nqm_study", "two_direction_regression", "planted_instance", "sa_study", "qpu_study", "combined",
    "temperature_profile", "sgd_end_temperature", "device_analogue", "analogue_trend", "analogue_runs",
    "device_constants", "DEVICE_CONSTANTS",
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

    from qasa.fitting import fit
    from qasa.protocol import Protocol
    from qasa.runner import run
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
        protocol = Protocol.grid(1.0, 0.2, reads_per_h=qasa_reads, reads_per_call=min(qasa_reads, 10_000),
                                      seed=seed)
        ds = run(protocol, single)
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
    from qasa.errors import ProtocolError
    from qasa.fitting import fit
    from qasa.protocol import Protocol
    from qasa.runner import run

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
        protocol = Protocol.grid(1.0, h_step, reads_per_h=reads_per_h, anneal_schedule=export.schedule, seed=seed)
        ds = run(protocol, sampler)
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


# -- the measured device next to its classical analogues ---------------------------------------------------
def temperature_profile(anneal: float | Sequence[Sequence[float]], temperature_mK: float = 16.0,
                        schedule: str = "Advantage_system6.2", points: int = 1001) -> pd.DataFrame:
    """The device's instantaneous temperature in units of h along an anneal.

    ``T(t) = 2 k_B T_phys / B(s(t))`` (DESIGN.md §2: a qubit frozen at s has β = B(s)/(2 k_B T)), on
    ``points`` equally spaced times plus the schedule's breakpoints; columns ``t`` (µs), ``s``,
    ``B_GHz``, ``T`` (units of h).

    Raises:
        ProtocolError: a malformed anneal (see :func:`qasa.schedules.shape_of_anneal`) or a
            non-positive temperature.
    """
    from qasa.errors import ProtocolError
    from qasa.schedules import shape_of_anneal
    from qasa.virtual import physics

    shape_of_anneal(anneal)                                   # validates the anneal
    if not temperature_mK > 0:
        raise ProtocolError(f"temperature_mK={temperature_mK!r} must be positive")
    is_time = isinstance(anneal, (int, float, np.integer, np.floating))
    t_pts, s_pts = physics.anneal_path(float(anneal) if is_time else None, None if is_time else anneal)
    t = np.unique(np.concatenate([np.linspace(0.0, float(t_pts[-1]), int(points)), t_pts]))   # keep the breakpoints
    s = np.interp(t, t_pts, s_pts)
    B = physics.load_schedule(schedule).B_of(s)
    return pd.DataFrame({"t": t, "s": s, "B_GHz": B, "T": 2.0 * physics.kT_GHz(temperature_mK) / B})


def sgd_end_temperature(temperatures: np.ndarray, eta0: float = 0.1, curvature: float = 1.0) -> float:
    """End temperature of SGD on the noisy quadratic model driven along a temperature profile.

    One SGD step per entry of ``temperatures`` (T_0, …, T_{N−1}, units of h). The loss is
    ``½ h x²`` with h = ``curvature`` in units of the programmed field, so the SGD temperature and the
    device's T_eff share one unit. The gradient-noise variance c is set by ``eta0`` (the learning rate
    at the start; η₀h in (0, 2)) through the constant-rate floor of DESIGN.md §4, ``h m∞ = η c/(2 − η h)``:
    ``c = T_0 (2/η₀ − h)``; each step then takes the rate whose floor is the current temperature,
    ``η_t = 2 T_t / (c + h T_t)``, and SGD starts in that floor (``m_0 = T_0/h``). The exact moment
    recursion ``m_{t+1} = (1 − η_t h)² m_t + η_t² c`` is then exactly an exponential moving average of
    the temperature, ``h m_{t+1} = a_t h m_t + (1 − a_t) T_t`` with ``a_t = (1 − η_t h)²`` (the floor is
    T_t by construction), solved in closed form with suffix products. The end temperature ``h m_N``
    equals the last T while SGD keeps up and stays higher once the falling rate can no longer follow
    the falling temperature (SGD's freeze-out). For η₀h ≤ 1 every η_t h ≤ 1, so a larger η₀ gives
    smaller weights a_t and, on a falling temperature, a lower end temperature (monotone in η₀).

    Raises:
        ValueError: ``eta0`` outside (0, 2/curvature), non-positive temperatures or curvature.
    """
    T = np.asarray(temperatures, float)
    h = float(curvature)
    if not h > 0:
        raise ValueError(f"curvature={curvature!r} must be positive")
    if not 0 < eta0 * h < 2:
        raise ValueError(f"eta0={eta0!r}: η₀·h must lie in (0, 2) for SGD to be stable (h = {h:g})")
    if T.size == 0 or not np.all(T > 0):
        raise ValueError("temperatures must be a non-empty array of positive values")
    c = T[0] * (2.0 / eta0 - h)
    eta = 2.0 * T / (c + h * T)
    a = (1.0 - eta * h) ** 2
    b = eta * eta * c
    suffix = np.concatenate([np.cumprod(a[::-1])[::-1], [1.0]])    # Π_{j ≥ k} a_j, then 1
    m_end = suffix[0] * (T[0] / h) + float(np.sum(b * suffix[1:]))
    return h * m_end


def _freezeout_on(profile: pd.DataFrame, temperature: float) -> tuple[float, float]:
    """(s, t/t_end) of the last point of the anneal where the device's temperature is still ≥ ``temperature``
    (the freeze-out point an end temperature corresponds to); NaN when the anneal never gets that cold or hot."""
    T = profile["T"].to_numpy()
    if not (T.min() <= temperature <= T.max()):
        return math.nan, math.nan
    above = np.nonzero(T >= temperature)[0]
    i = int(above[-1])
    if i == len(T) - 1:
        return float(profile["s"].iloc[-1]), 1.0
    # interpolate between i (T ≥ target) and i + 1 (T < target)
    w = (T[i] - temperature) / (T[i] - T[i + 1])
    s = profile["s"].iloc[i] + w * (profile["s"].iloc[i + 1] - profile["s"].iloc[i])
    t = profile["t"].iloc[i] + w * (profile["t"].iloc[i + 1] - profile["t"].iloc[i])
    return float(s), float(t / profile["t"].iloc[-1])


def _sgd_temperatures(profile: pd.DataFrame, steps_per_us: float) -> np.ndarray:
    t_end = float(profile["t"].iloc[-1])
    n = max(2, int(round(t_end * steps_per_us)))
    if n > 20_000_000:
        raise ValueError(f"steps_per_us={steps_per_us:g} gives {n} SGD steps for a {t_end:g} µs anneal (max 2e7)")
    return np.interp(np.arange(n) * t_end / n, profile["t"], profile["T"])


def device_analogue(anneal: float | Sequence[Sequence[float]], beta_eff: float, beta_stderr: float | None = None, *,
                    temperature_mK: float = 16.0, schedule: str = "Advantage_system6.2", eta0: float = 0.1,
                    steps_per_us: float = 50.0, sweeps: int = 1000) -> pd.DataFrame:
    r"""The measured device next to its classical analogues, all temperatures in units of h.

    Unit mapping. The device's measured ``beta_eff`` is the QASA/Gibbs β of P(s) ∝ exp(−β h s), so
    ``T_eff = 1/β_eff`` is in units of the programmed field h (the Ising energy unit). Along the anneal
    the device's own instantaneous temperature in that unit is ``T(t) = 2 k_B T_phys / B(s(t))``
    (DESIGN.md §2), which falls as B grows: this is the temperature schedule that was run
    (:func:`temperature_profile`). Both analogues are driven along that same T(t):

    - SA: a simulated-annealing run on the same Ising problem with β schedule
      ``β_k = B(s(t_k))/(2 k_B T_phys)`` at ``sweeps`` equally spaced times. Isolated spins under Gibbs
      updates in sequential order are sampled exactly at the last β (DESIGN.md §5), so SA's end
      temperature is the schedule's last T: SA never freezes out on isolated spins.
    - SGD on the noisy quadratic model with loss ½ h x² in units of h (:func:`sgd_end_temperature`):
      the learning rate at each step is the one whose Gibbs floor ``η c/(2 − η h)`` (DESIGN.md §4) is
      T(t), with ``steps_per_us`` steps per µs. SGD relaxes at a rate ∝ η, so as the temperature (and
      with it the rate) falls it stops following: its end temperature is a freeze-out temperature,
      the analogue of the device's T_eff.

    Each end temperature is also placed on the anneal: ``freezeout_s`` is the last s at which the
    device's instantaneous temperature was still that high (for the device, s* with
    B(s*) = 2 k_B T_phys β_eff). The published B(s) tables are D-Wave's mean behaviour and can be off
    by up to 30 % (DESIGN.md §2); a β_eff above the schedule's end value has no freeze-out point (NaN).

    Args:
        anneal: annealing time in µs (a linear forward anneal) or the ``[(t µs, s), ...]`` schedule run.
        beta_eff: the measured effective β (units of 1/h), e.g. the median QASA β of the good qubits.
        beta_stderr: its standard error, if known.
        temperature_mK: the device's physical temperature (DESIGN.md §2 table).
        schedule: the bundled A(s)/B(s) table (:data:`qasa.virtual.physics.SCHEDULES`).
        eta0: the SGD analogue's learning rate at the start of the anneal (curvature 1, so in (0, 2)).
        steps_per_us: SGD steps per µs of anneal.
        sweeps: SA sweeps.

    Returns:
        One row per system — ``device (measured)``, ``SGD (noisy quadratic model)``,
        ``SA (Gibbs, sequential)`` — with columns ``system``, ``shape`` (the anneal as a
        :class:`qasa.schedules.Shape` label), ``annealing_time``, ``end_temperature`` (units of h),
        ``beta`` (1/end_temperature), ``beta_stderr``, ``freezeout_s``, ``freezeout_fraction``
        (t*/t_end), ``instantaneous_end_temperature`` (the schedule's last T) and ``note``.
        ``attrs["temperature_profile"]`` holds the T(t) table, ``attrs["sa_beta_schedule"]`` the SA β per sweep.

    Raises:
        ValueError / ProtocolError: non-positive β, bad analogue parameters or a malformed anneal.
    """
    from qasa.schedules import shape_of_anneal

    if not (beta_eff > 0 and math.isfinite(beta_eff)):
        raise ValueError(f"beta_eff={beta_eff!r} must be a positive finite number")
    if sweeps < 1:
        raise ValueError(f"sweeps={sweeps!r} must be at least 1")
    if not steps_per_us > 0:
        raise ValueError(f"steps_per_us={steps_per_us!r} must be positive")
    label = shape_of_anneal(anneal).label
    profile = temperature_profile(anneal, temperature_mK, schedule)
    t_end = float(profile["t"].iloc[-1])
    T_last = float(profile["T"].iloc[-1])
    sgd_T = sgd_end_temperature(_sgd_temperatures(profile, steps_per_us), eta0)
    sweep_T = np.interp(np.linspace(0.0, t_end, int(sweeps)), profile["t"], profile["T"])
    sa_T = float(sweep_T[-1])
    rows = []
    for system, T_end, err, note in (
            ("device (measured)", 1.0 / beta_eff, beta_stderr, "T_eff = 1/β_eff"),
            ("SGD (noisy quadratic model)", sgd_T, None,
             f"η follows T(t): η₀h = {eta0:g}, {steps_per_us:g} steps/µs"),
            ("SA (Gibbs, sequential)", sa_T, None, f"{int(sweeps)} sweeps at β = B(s(t))/(2k_BT); ends at the last β")):
        s_star, u_star = _freezeout_on(profile, T_end)
        rows.append({"system": system, "shape": label, "annealing_time": t_end, "end_temperature": float(T_end),
                     "beta": 1.0 / float(T_end), "beta_stderr": math.nan if err is None else float(err),
                     "freezeout_s": s_star, "freezeout_fraction": u_star, "instantaneous_end_temperature": T_last,
                     "note": note if math.isfinite(s_star) else note + "; no point of the anneal is this cold/hot"})
    out = pd.DataFrame(rows)
    out.attrs["temperature_profile"] = profile
    out.attrs["sa_beta_schedule"] = 1.0 / sweep_T
    return out


def analogue_trend(runs: pd.DataFrame | Sequence[Mapping[str, Any]], *, temperature_mK: float = 16.0,
                   schedule: str = "Advantage_system6.2", eta0: float | None = None,
                   steps_per_us: float | None = None, sweeps: int = 1000) -> pd.DataFrame:
    """Measured β across runs at several anneals beside the trend the classical analogues predict.

    Each run is a mapping (or DataFrame row) with ``anneal`` (annealing time in µs or a
    ``[(t, s), ...]`` schedule) and ``beta`` (measured), optionally ``beta_stderr`` and ``label``.
    All runs share one SGD step density (``steps_per_us``; default: at least 2 000 steps for the
    shortest run and 50 per µs). With ``eta0=None`` the SGD analogue's one free rate is calibrated on
    the first run — bisection on η₀ in (0, 1], where the SGD end temperature falls monotonically with
    η₀ (see :func:`sgd_end_temperature`) — so that run's SGD β equals the measured one and the
    other runs are predictions. SA on isolated spins ends at the schedule's last β whatever the
    anneal's duration (no freeze-out), so its trend is flat for anneals that end at the same s.
    Units and mapping: :func:`device_analogue`.

    Returns:
        One row per run: ``label``, ``shape``, ``annealing_time``, ``measured_beta``,
        ``measured_beta_stderr``, ``measured_freezeout_s``, ``sgd_beta``, ``sgd_freezeout_s``,
        ``sa_beta``, ``measured_trend`` and ``sgd_trend`` (β over the first run's β), and ``attrs``
        ``eta0``, ``steps_per_us``, ``calibrated`` (bool) and ``rank_agreement`` (Spearman
        correlation of measured and SGD-predicted β; NaN with fewer than three runs).

    Raises:
        ValueError: no runs, a run without ``anneal`` or ``beta``, or a first run whose β no SGD rate
            reproduces (outside the range between the schedule's first and last instantaneous β).
    """
    records = runs.to_dict("records") if isinstance(runs, pd.DataFrame) else [dict(r) for r in runs]
    if not records:
        raise ValueError("analogue_trend needs at least one run")
    for i, r in enumerate(records):
        missing = {"anneal", "beta"} - set(r)
        if missing:
            raise ValueError(f"run {i} lacks {sorted(missing)}; each run needs 'anneal' and 'beta'")
    if steps_per_us is None:
        shortest = min(float(temperature_profile(r["anneal"], temperature_mK, schedule, points=2)["t"].iloc[-1])
                       for r in records)
        steps_per_us = max(50.0, 2000.0 / shortest)
    calibrated = eta0 is None
    if calibrated:
        eta0 = _calibrate_eta0(records[0]["anneal"], float(records[0]["beta"]), temperature_mK, schedule, steps_per_us)
    rows = []
    for i, r in enumerate(records):
        t = device_analogue(r["anneal"], float(r["beta"]), r.get("beta_stderr"), temperature_mK=temperature_mK,
                            schedule=schedule, eta0=eta0, steps_per_us=steps_per_us, sweeps=sweeps)
        dev, sgd, sa = t.iloc[0], t.iloc[1], t.iloc[2]
        rows.append({"label": r.get("label", f"run {i}"), "shape": dev["shape"], "annealing_time": dev["annealing_time"],
                     "measured_beta": dev["beta"], "measured_beta_stderr": dev["beta_stderr"],
                     "measured_freezeout_s": dev["freezeout_s"], "sgd_beta": sgd["beta"],
                     "sgd_freezeout_s": sgd["freezeout_s"], "sa_beta": sa["beta"]})
    out = pd.DataFrame(rows)
    out["measured_trend"] = out["measured_beta"] / out["measured_beta"].iloc[0]
    out["sgd_trend"] = out["sgd_beta"] / out["sgd_beta"].iloc[0]
    rho = math.nan
    if len(out) >= 3:
        from scipy.stats import spearmanr

        rho = float(spearmanr(out["measured_beta"], out["sgd_beta"]).statistic)
    out.attrs.update(eta0=float(eta0), steps_per_us=float(steps_per_us), calibrated=calibrated, rank_agreement=rho)
    return out


def _calibrate_eta0(anneal, beta: float, temperature_mK: float, schedule: str, steps_per_us: float) -> float:
    """η₀ at which the SGD analogue's end β equals ``beta`` for ``anneal`` (bisection in log η₀ on (0, 1])."""
    profile = temperature_profile(anneal, temperature_mK, schedule)
    temps = _sgd_temperatures(profile, steps_per_us)
    target = 1.0 / beta
    lo, hi = 1e-9, 1.0
    T_lo, T_hi = sgd_end_temperature(temps, lo), sgd_end_temperature(temps, hi)
    if not T_hi <= target <= T_lo:
        raise ValueError(f"measured β = {beta:g} of the first run is outside what the SGD analogue reaches for that "
                         f"anneal at {steps_per_us:g} steps/µs (β from {1 / T_lo:.4g} to {1 / T_hi:.4g}); check "
                         "temperature_mK and schedule, or raise steps_per_us")
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if sgd_end_temperature(temps, mid) > target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-13:
            break
    return math.sqrt(lo * hi)


DEVICE_CONSTANTS: dict[str, tuple[float, str]] = {
    "Advantage_system4.1": (15.4, "Advantage_system6.2"),
    "Advantage_system6.4": (16.0, "Advantage_system6.2"),
    "Advantage2_system1": (20.0, "Advantage2_research1.4"),
    "Advantage2_system2.1": (16.7, "Advantage2_research1.4"),
    "Advantage2_research1.5": (17.5, "Advantage2_research1.4"),
}
"""Published temperature (mK, DESIGN.md §2 table) and the closest bundled A(s)/B(s) table per solver."""


def device_constants(solver: str | None) -> dict[str, Any]:
    """``{"temperature_mK": ..., "schedule": ...}`` for a solver of :data:`DEVICE_CONSTANTS` (a virtual
    QPU's ``"<solver>-like"`` name counts as that solver), else ``{}`` so the analogue defaults apply."""
    name = (solver or "").removesuffix("-like")
    if name not in DEVICE_CONSTANTS:
        return {}
    mK, table = DEVICE_CONSTANTS[name]
    return {"temperature_mK": mK, "schedule": table}


def analogue_runs(runs: Mapping[str, tuple[Any, Any]], default_annealing_time: float = 20.0) -> list[dict[str, Any]]:
    """Records for :func:`analogue_trend` from assessed runs ``{label: (Dataset, FitTable)}``.

    ``anneal`` is the protocol's anneal schedule, else its annealing time, else the device's recorded
    ``default_annealing_time``, else ``default_annealing_time`` (D-Wave's default is 20 µs);
    ``beta`` is the median β of the qubits of quality "good" (all qubits if none is good) and
    ``beta_stderr`` that median's standard error, √(π/2)·sd/√n.
    """
    records = []
    for label, (ds, fits) in runs.items():
        protocol = ds.protocol
        anneal = None
        if protocol is not None:
            anneal = protocol.anneal_schedule if protocol.anneal_schedule is not None else protocol.annealing_time
        if anneal is None:
            anneal = float(ds.device.get("default_annealing_time") or default_annealing_time)
        table = fits.table
        good = table[table["quality"] == "good"] if "quality" in table else table
        beta = (good if len(good) else table)["beta"].dropna()
        stderr = math.sqrt(math.pi / 2) * float(beta.std(ddof=1)) / math.sqrt(len(beta)) if len(beta) > 1 else math.nan
        records.append({"label": str(label), "anneal": [tuple(p) for p in anneal] if not np.isscalar(anneal) else
                        float(anneal), "beta": float(beta.median()), "beta_stderr": stderr})
    return records

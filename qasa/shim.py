r"""Flux-bias shimming at the statistical floor: every qubit's static bias cancelled by a flux-bias offset.

A qubit's static bias ``b`` (units of h) can be cancelled by a flux bias Φ (units of Φ₀, the QPU
parameter ``flux_biases``): near the freeze-out point the flux adds a field ``kΦ`` to the qubit, with
``k`` its flux→field conversion. D-Wave publishes the conversion (``dwave.system.temperatures.
fluxbias_to_h``: ``h = −2 I_p(s) Φ / B(s)``, ``I_p = √(B/(2 M_AFM))``, at the freeze-out point); real
qubits differ from it, so here it is only the prior's centre and each qubit's ``k`` is learned.

Model (per qubit, every read of every round pooled in one likelihood)
    A read at programmed field ``x`` (units of h) and flux bias Φ returns −1 with probability

        P(−1 | x, Φ) = ½ [1 + tanh(β (x + b + kΦ))] = σ(2(βx + a + c·u)),  u = k₀Φ,

    the single-qubit freeze-out (Boltzmann) law of docs/DESIGN.md §2, with ``a = βb``,
    ``c = βk/k₀`` (``k₀`` the published conversion, so ``c ≈ β``) and σ the logistic function. In
    ``(β, a, c)`` it is a logistic regression: the log-likelihood is concave and Newton's method
    converges from any start. Weak Gaussian priors (β and c: mean β₀, sd β₀/2; a: sd 10) keep
    the first round defined; β₀ is the published single-qubit β = 1/T_eff of the device (docs/DESIGN.md §2).
    The residual field at flux Φ is ``r = b + kΦ = (a + c·k₀Φ)/β``; its 95 % interval is the delta
    method on the Laplace posterior covariance (inverse observed information plus prior precision).

Design (each round; a deterministic function of the seed and the data of earlier rounds)
    Every qubit's flux is set at its current estimate of the zero crossing, ``Φ̂ = −â/(ĉ k₀)``
    (the likelihood's zero crossing), clipped to the flux-bias range. Reads at the crossing carry
    the most information about it: ``β²`` per read, so ``n`` reads give the floor
    ``sd(r) = 1/(β√n)``. To learn β and k from the same reads at almost no cost, calls come in
    antithetic pairs with a small dither on each qubit: programmed ``x = g δ`` with a spin-reversal
    gauge ``g = ±1`` (the gauge's partner call has ``−g``) and flux ``Φ̂ + g′Δ`` (``−g′`` in the
    partner), with ``βδ = |c|k₀Δ = ρ`` (``dither``, default 0.1). The tanh argument is then 0 or
    ±2ρ, costing ``1 − ½(1 + sech²2ρ) ≈ 2 %`` of the information about the crossing (1 % in sd)
    while giving β and k to ``1/(ρ√n)`` relative each. Round sizes double the reads so far
    (the first round is one pair), capped by the read budget and by the reads the target predicts.

Stop
    When the 95 % half-width of every responding qubit's residual is within ``target`` (units of
    h), when the read budget ``reads_per_qubit`` is spent, or when the QPU-time budget
    ``max_qpu_seconds`` is reached (:class:`qasa.cost.BudgetError` from the runner).

Qubits that do not respond
    A qubit whose reads are almost all one value (outside [1 %, 99 %] −1) is *saturated*; one
    whose flux slope is not distinguishable from 0 (``ĉ`` below 4 data-only standard errors) does
    *not respond*. Both keep flux bias 0 and a one-line reason in the table, never an extrapolated
    value; a crossing beyond the flux-bias range is clipped to it, with its reason.

Flux-bias range
    The solver's own ``flux_bias_range`` property when it publishes one; otherwise the flux
    equivalent of its published ``h_range`` through the conversion: ``|Φ| ≤ max|h_range| / |k₀|``
    (≈ 2.7 mΦ₀ on Advantage_system4.1: h_range [−4, 4], D-Wave's published conversion at s* = 0.612). A
    larger flux would stand for a field the solver does not allow as h.

Checkpoints
    Each round's plan (per-qubit flux, dither amplitudes, calls and reads) is written atomically to
    ``OUT/shim/round-NNN.json`` before its calls run; its calls have ids ``sNNN-cNNNNN`` and carry
    their ``flux_biases`` as a per-call sampler parameter (:attr:`qasa.protocol.Call.params`); they
    are run by :func:`qasa.runner.run` (journaled one by one, budget-checked, resumable). A killed
    shim resumes from exactly the data an uninterrupted one had, so it ends at identical flux biases.
    The result is ``OUT/flux_biases.json`` (the list for ``DWaveSampler().sample(..., flux_biases=...)``)
    and ``OUT/shim/table.csv``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import dimod
import numpy as np
import pandas as pd

from qasa.backend import as_backend
from qasa.cost import BudgetError
from qasa.dataset import atomic_write_bytes, atomic_write_json, utcnow
from qasa.errors import DatasetError, QasaError
from qasa.protocol import Call, Protocol
from qasa.store import DatasetStore

__all__ = ["shim", "ShimResult", "ShimError", "load_flux_biases", "published_conversion", "published_beta",
           "flux_bias_range", "fit_shim", "MAX_READS_PER_QUBIT", "DEFAULT_READS_PER_QUBIT"]

#: Default read budget per qubit (D-Wave's shim: 20 steps of 1 024 reads).
DEFAULT_READS_PER_QUBIT = 20_480
#: Largest read budget per qubit a shim accepts (a bound on a mistyped value).
MAX_READS_PER_QUBIT = 100_000_000
#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054
#: A qubit whose flux slope is below this many data-only standard errors does not respond.
MIN_RESPONSE_Z = 4.0
#: Fraction of −1 reads outside [SATURATED, 1 − SATURATED]: saturated.
SATURATED = 0.01
_DIR = "shim"

#: Published single-qubit T_eff (units of h) by solver (docs/DESIGN.md §2, D-Wave per-QPU documentation).
_PUBLISHED_TEFF = {"Advantage_system4.1": 0.198, "Advantage_system6.4": 0.221, "Advantage2_system1": 0.112,
                   "Advantage2_system2.1": 0.119, "Advantage2_research1.5": 0.102}


class ShimError(QasaError, ValueError):
    """A shim cannot run as asked (sampler without flux biases, bad budget or target...)."""


@dataclass
class ShimResult:
    """The outcome of :func:`shim`.

    Attributes:
        flux_biases: one flux bias (Φ₀) per qubit of the chip (``properties["num_qubits"]``), indexed by
            qubit id — usable as ``DWaveSampler().sample(bqm, flux_biases=result.flux_biases)``.
        table: per shimmed qubit: ``qubit``, ``flux_bias``, ``residual`` (estimated residual field at that
            flux, units of h) with ``residual_lo``/``residual_hi`` (95 %), ``residual_sd``, ``bias`` (the
            static bias b̂ without flux) with ``bias_sd``, ``conversion`` (fitted k, h per Φ₀) with
            ``conversion_sd``, ``beta`` (1/h) with ``beta_sd``, ``reads``, ``status`` (``ok``,
            ``clipped``, ``saturated``, ``no response``) and ``reason``.
        reads_per_qubit: reads each shimmed qubit took part in.
        stopped: ``"target"``, ``"reads"`` (the read budget is spent) or ``"budget"`` (QPU time).
        rounds: rounds run.
        path: the dataset directory.
    """

    flux_biases: list[float]
    table: pd.DataFrame
    reads_per_qubit: int
    stopped: str
    rounds: int
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain-JSON summary (what ``qasa shim --json`` prints)."""
        ok = self.table["status"].isin(["ok", "clipped"])
        half = (self.table["residual_hi"] - self.table["residual_lo"]) / 2
        return {"path": str(self.path), "stopped": self.stopped, "rounds": self.rounds,
                "reads_per_qubit": self.reads_per_qubit, "qubits": int(len(self.table)),
                "responding": int(ok.sum()),
                "status": {k: int(v) for k, v in self.table["status"].value_counts().items()},
                "bias_rms": _rms(self.table.loc[ok, "bias"]),
                "residual_half_width_rms": _rms(half[ok]),
                "residual_half_width_max": float(half[ok].max()) if ok.any() else None,
                "flux_biases": str(self.path / "flux_biases.json")}


def _rms(x: Any) -> float | None:
    x = np.asarray(x, float)
    return float(np.sqrt(np.mean(x ** 2))) if x.size else None


# -- published figures ----------------------------------------------------------------------------------
def published_conversion(sampler: dimod.Sampler) -> float:
    """The published flux→field conversion k₀ (units of h per Φ₀) for ``sampler``.

    ``dwave.system.temperatures.fluxbias_to_h(1)`` at the device's freeze-out point: for qasa's virtual QPU
    with its preset's published M_AFM and B(s*) from its schedule table; otherwise D-Wave's defaults of that
    function (Advantage_system4.1: M_AFM 1.647 pH, B = 1.391 GHz at s = 0.612). Negative: a positive flux
    favours +1.
    """
    from dwave.system.temperatures import fluxbias_to_h

    preset = getattr(sampler, "preset", None)
    schedule = getattr(sampler, "_schedule", None)
    if preset is not None and getattr(preset, "mafm_pH", None) and schedule is not None:
        B = float(schedule.B_of(np.array([preset.freezeout_s]))[0])
        return float(fluxbias_to_h(1.0, B=B, MAFM=preset.mafm_pH))
    return float(fluxbias_to_h(1.0))


def published_beta(sampler: dimod.Sampler) -> float:
    """The prior's β₀ = 1/T_eff: the device's published single-qubit T_eff (docs/DESIGN.md §2), 1/0.198 when
    the solver is not in that table (Advantage_system4.1)."""
    preset = getattr(sampler, "preset", None)
    if preset is not None and getattr(preset, "teff", None):
        return 1.0 / float(preset.teff)
    props = getattr(sampler, "properties", {}) or {}
    name = str(props.get("chip_id") or getattr(getattr(sampler, "solver", None), "name", ""))
    return 1.0 / _PUBLISHED_TEFF.get(name, 0.198)


def flux_bias_range(sampler: dimod.Sampler, conversion: float) -> tuple[float, float]:
    """The flux biases a shim may set (Φ₀): the solver's ``flux_bias_range`` property, else the flux equivalent
    of its ``h_range`` (module docstring)."""
    props = getattr(sampler, "properties", {}) or {}
    if props.get("flux_bias_range") is not None:
        lo, hi = (float(v) for v in props["flux_bias_range"])
        return lo, hi
    h = max(abs(float(v)) for v in (props.get("h_range") or (-4.0, 4.0)))
    m = h / abs(conversion)
    return -m, m


# -- the model ------------------------------------------------------------------------------------------
def fit_shim(x: np.ndarray, u: np.ndarray, n_down: np.ndarray, n: np.ndarray, beta0: float,
             iterations: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum a posteriori (β, a, c) of every qubit (module docstring), by damped Newton.

    Args:
        x, u, n_down, n: ``(qubits, cells)``: programmed field, flux in published field units
            (``k₀Φ``), reads returning −1, reads (a cell with ``n = 0`` adds nothing).
        beta0: the prior's β₀.
        iterations: most Newton steps.

    Returns:
        ``theta (Q, 3)``, the posterior covariance ``(Q, 3, 3)`` and the data-only information ``(Q, 3, 3)``.
    """
    Q = x.shape[0]
    X = np.stack([x, np.ones_like(x), u], axis=-1)                   # (Q, C, 3)
    prior_mean = np.array([beta0, 0.0, beta0])
    prior_prec = np.diag([1.0 / (0.5 * beta0) ** 2, 1.0 / 10.0 ** 2, 1.0 / (0.5 * beta0) ** 2])
    theta = np.tile(prior_mean, (Q, 1))
    nd, nn = n_down.astype(float), n.astype(float)

    def objective(th: np.ndarray) -> np.ndarray:
        z = 2.0 * np.einsum("qck,qk->qc", X, th)
        ll = nd * -np.logaddexp(0.0, -z) + (nn - nd) * -np.logaddexp(0.0, z)
        d = th - prior_mean
        return ll.sum(1) - 0.5 * np.einsum("qi,ij,qj->q", d, prior_prec, d)

    current = objective(theta)
    for _ in range(iterations):
        z = 2.0 * np.einsum("qck,qk->qc", X, theta)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        grad = 2.0 * np.einsum("qc,qck->qk", nd - nn * p, X) - (theta - prior_mean) @ prior_prec
        info = 4.0 * np.einsum("qc,qck,qcl->qkl", nn * p * (1 - p), X, X) + prior_prec
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        t = np.ones(Q)
        for _ in range(30):                                            # step halving (concave: rarely needed)
            trial = theta + t[:, None] * step
            value = objective(trial)
            worse = value < current - 1e-12
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        theta, current = trial, np.maximum(value, current)
        if np.max(np.abs(step * t[:, None])) < 1e-10:
            break
    z = 2.0 * np.einsum("qck,qk->qc", X, theta)
    p = 0.5 * (1.0 + np.tanh(0.5 * z))
    data_info = 4.0 * np.einsum("qc,qck,qcl->qkl", nn * p * (1 - p), X, X)
    cov = np.linalg.inv(data_info + prior_prec)
    return theta, cov, data_info


def _estimates(theta: np.ndarray, cov: np.ndarray, data_info: np.ndarray, k0: float, flux: np.ndarray,
               frac_down: np.ndarray, flux_range: tuple[float, float]) -> pd.DataFrame:
    """Per qubit: the crossing, the flux to set (clipped, or 0 with a reason), the residual there and its sd."""
    beta, a, c = theta.T
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = -a / (c * k0)
        data_cov = np.linalg.pinv(data_info)
        c_sd_data = np.sqrt(np.maximum(data_cov[:, 2, 2], 0.0))
        z_c = np.where(c_sd_data > 0, c / c_sd_data, 0.0)
    lo, hi = flux_range
    status = np.full(len(beta), "ok", dtype=object)
    reason = np.full(len(beta), "", dtype=object)
    target = np.clip(np.where(np.isfinite(crossing), crossing, 0.0), lo, hi)
    clipped = np.isfinite(crossing) & ((crossing < lo) | (crossing > hi))
    for i in np.flatnonzero(clipped):
        status[i] = "clipped"
        reason[i] = (f"zero crossing at {crossing[i]:.3g} Φ₀ is outside the flux-bias range "
                     f"[{lo:.3g}, {hi:.3g}] Φ₀; clipped")
    saturated = (frac_down < SATURATED) | (frac_down > 1 - SATURATED)
    silent = ~saturated & ~(z_c >= MIN_RESPONSE_Z)
    for i in np.flatnonzero(saturated):
        status[i] = "saturated"
        reason[i] = (f"saturated: {100 * frac_down[i]:.1f} % of its reads returned −1 at every flux applied; "
                     "flux bias left at 0")
    for i in np.flatnonzero(silent):
        status[i] = "no response"
        reason[i] = (f"does not respond to flux: slope {c[i]:.3g} is {z_c[i]:.1f} standard errors from 0 "
                     f"(at least {MIN_RESPONSE_Z:g} needed); flux bias left at 0")
    target = np.where(saturated | silent, 0.0, target)
    # residual field at the flux `flux` (h units): r = (a + c k0 Φ)/β, delta method on (β, a, c)
    u = k0 * flux
    r = (a + c * u) / beta
    g = np.stack([-r / beta, 1.0 / beta, u / beta], axis=1)
    r_sd = np.sqrt(np.maximum(np.einsum("qi,qij,qj->q", g, cov, g), 0.0))
    gb = np.stack([-(a / beta) / beta, 1.0 / beta, np.zeros_like(beta)], axis=1)
    b_sd = np.sqrt(np.maximum(np.einsum("qi,qij,qj->q", gb, cov, gb), 0.0))
    k = k0 * c / beta
    gk = np.stack([-k / beta, np.zeros_like(beta), k0 / beta], axis=1)
    k_sd = np.sqrt(np.maximum(np.einsum("qi,qij,qj->q", gk, cov, gk), 0.0))
    return pd.DataFrame({"next_flux": target, "crossing": crossing, "residual": r, "residual_sd": r_sd,
                         "bias": a / beta, "bias_sd": b_sd, "conversion": k, "conversion_sd": k_sd,
                         "beta": beta, "beta_sd": np.sqrt(np.maximum(cov[:, 0, 0], 0.0)), "flux_slope_z": z_c,
                         "status": status, "reason": reason})


# -- rounds ---------------------------------------------------------------------------------------------
def _round_signs(seed: int, round_index: int, calls: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauge ``g`` and flux-dither sign ``g′`` of every (call, qubit) of a round: antithetic pairs (call
    ``2j + 1`` has minus call ``2j``'s signs); ``g`` drawn from ``(seed, 7, round)`` only and
    ``g′ = (−1)^(j + round) g``, so that the two dithers are orthogonal over consecutive pairs (β and k
    separately identified for every qubit, never confounded by chance)."""
    rng = np.random.default_rng([seed, 7, round_index])
    pairs = (calls + 1) // 2
    half = rng.choice(np.array([-1, 1], dtype=np.int8), size=(pairs, n))
    alt = np.where((np.arange(pairs) + round_index) % 2 == 0, 1, -1).astype(np.int8)[:, None]
    g = np.repeat(half, 2, axis=0)[:calls]
    gp = np.repeat(half * alt, 2, axis=0)[:calls]
    g[1::2] *= -1
    gp[1::2] *= -1
    return g, gp


def _round_fields(plan: Mapping[str, Any], seed: int, round_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flips, programmed x, flux Φ)`` of a planned round, each ``(calls, qubits)``."""
    C = int(plan["calls"])
    g, gp = _round_signs(seed, round_index, C, len(plan["qubits"]))
    delta = np.asarray(plan["delta_h"], float)
    flux = np.asarray(plan["flux"], float) + gp * np.asarray(plan["delta_flux"], float)
    return g, g * delta, flux


def _round_calls(plan: Mapping[str, Any], protocol: Protocol, round_index: int, num_qubits: int) -> list[Call]:
    """The calls of a planned round; each carries its full-chip ``flux_biases`` list."""
    qubits = np.asarray(protocol.qubits, dtype=np.int64)
    if list(map(int, plan["qubits"])) != qubits.tolist():
        raise DatasetError("the stored shim round plan is for other qubits than the dataset's protocol")
    g, _, flux = _round_fields(plan, int(protocol.seed), round_index)
    delta = np.asarray(plan["delta_h"], float)
    out = []
    for c in range(int(plan["calls"])):
        chip = np.zeros(num_qubits)
        chip[qubits] = flux[c]
        out.append(Call(f"s{round_index:03d}-c{c:05d}", round_index * 1_000_000 + c, -1, delta, 0,
                        int(plan["reads_per_call"]), g[c], params={"flux_biases": chip.tolist()}))
    return out


def _pooled(store: DatasetStore, plans: list[dict[str, Any]], qubits: np.ndarray, seed: int
            ) -> tuple[np.ndarray, ...]:
    """Every collected read, per qubit and call: ``(x, Φ, returned −1, reads)``, each ``(Q, calls)``."""
    ds = store.load()
    counts = ds.counts
    pos = {int(q): i for i, q in enumerate(qubits)}
    blocks = []
    for r, plan in enumerate(plans, start=1):
        _, x, flux = _round_fields(plan, seed, r)
        for c in range(int(plan["calls"])):
            blocks.append((f"s{r:03d}-c{c:05d}", x[c], flux[c]))
    done = {cid: grp for cid, grp in counts.groupby("call_id", sort=False)} if len(counts) else {}
    Q, C = len(qubits), len(blocks)
    X, F, D, N = (np.zeros((Q, C)) for _ in range(4))
    for j, (cid, x, flux) in enumerate(blocks):
        grp = done.get(cid)
        if grp is None:
            continue
        rows = np.fromiter((pos[int(q)] for q in grp["qubit"]), dtype=np.int64, count=len(grp))
        gauge = grp["gauge"].to_numpy()
        returned = np.where(gauge == 1, grp["n_down"].to_numpy(), grp["n_up"].to_numpy())
        X[:, j], F[:, j] = x, flux
        D[rows, j] = returned
        N[rows, j] = grp["n_down"].to_numpy() + grp["n_up"].to_numpy()
    return X, F, D, N


def _check_options(sampler: dimod.Sampler, out: Any, reads_per_qubit: Any, target: Any, dither: Any,
                   reads_per_call: Any) -> None:
    if out is None or not str(out).strip():
        raise ShimError("a shim needs an output directory: its rounds are checkpointed there")
    params = getattr(sampler, "parameters", {}) or {}
    props = getattr(sampler, "properties", {}) or {}
    if "flux_biases" not in params:
        raise ShimError(f"{type(sampler).__name__} does not accept flux_biases (not in its parameters); "
                        "a shim needs a QPU or qasa's virtual QPU")
    if "num_qubits" not in props:
        raise ShimError(f"{type(sampler).__name__} has no properties['num_qubits']: flux_biases lists need one value "
                        "per qubit of the chip")
    for name, value, low in (("reads_per_qubit", reads_per_qubit, 2), ("reads_per_call", reads_per_call, 1)):
        if value is None and name == "reads_per_call":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= MAX_READS_PER_QUBIT:
            raise ShimError(f"{name}={value!r} must be an integer in [{low}, {MAX_READS_PER_QUBIT}]")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float, np.floating))
                               or not (math.isfinite(target) and target > 0)):
        raise ShimError(f"target={target!r} must be a finite residual half-width > 0 (units of h)")
    if isinstance(dither, bool) or not isinstance(dither, (int, float)) or not (0 <= dither <= 0.5):
        raise ShimError(f"dither={dither!r} must lie in [0, 0.5] (tanh-argument units)")


def _next_round(spent: int, budget: int, R: int, half_width: float, target: float | None) -> tuple[int, int]:
    """``(calls, reads per call)`` of the next round: one pair first, then double the reads so far, within the
    read budget and the reads the target predicts; ``(0, 0)`` when the budget is spent."""
    left = budget - spent
    if left < 2:
        return 0, 0
    want = 2 * R if spent == 0 else spent
    if target is not None and spent > 0 and math.isfinite(half_width):
        need = math.ceil(spent * (half_width / target) ** 2 * 1.05) - spent
        want = max(2, min(want, need))
    want = min(want, left)
    if want >= 2 * R:
        return 2 * (want // (2 * R)), R
    return 2, max(1, want // 2)


def shim(sampler: dimod.Sampler, out: str | Path, *, reads_per_qubit: int = DEFAULT_READS_PER_QUBIT,
         qubits: list[int] | None = None, target: float | None = None, max_qpu_seconds: float | None = None,
         seed: int | None = None, reads_per_call: int | None = None, dither: float = 0.1,
         flux_drift_compensation: bool = True, annealing_time: float | None = None,
         conversion: float | None = None, max_rounds: int = 40,
         progress: Callable[[int, int], None] | None = None,
         on_round: Callable[[int, dict[str, Any]], None] | None = None) -> ShimResult:
    """Find the flux biases that cancel each qubit's static bias (module docstring).

    Args:
        sampler: a sampler that accepts ``flux_biases`` (a ``DWaveSampler``, qasa's virtual QPU).
        out: dataset directory (rounds are checkpointed there; running again resumes).
        reads_per_qubit: read budget: every qubit takes part in at most this many reads in all.
        qubits: qubits to shim (default every active qubit); the others keep flux bias 0.
        target: stop once every responding qubit's residual 95 % half-width is within this (units of h).
        max_qpu_seconds: QPU-time budget of the dataset.
        seed: seed of the gauges and dithers (drawn when ``None``; stored, so a resume reuses it).
        reads_per_call: reads per call (default ``min(1024, num_reads_range max)``).
        dither: ρ of the antithetic h and flux dithers (tanh-argument units; 0 for none: β and k then
            come from the priors, and no qubit can be told not to respond).
        flux_drift_compensation: D-Wave's hourly drift correction during the shim (on: the shim then
            applies on top of it, as most runs use it).
        annealing_time: µs (default the solver's).
        conversion: k₀, the prior's flux→field conversion (h per Φ₀; default :func:`published_conversion`).
        max_rounds: most rounds.
        progress: ``progress(done, total)`` within each round's calls.
        on_round: ``on_round(round, info)`` after each fit.

    Returns:
        :class:`ShimResult`; also ``OUT/flux_biases.json`` and ``OUT/shim/table.csv``.

    Raises:
        ShimError: bad options, or a sampler without ``flux_biases`` (before anything is written or spent).
        DatasetError: ``out`` holds a dataset of another kind or other shim settings.
        BudgetError: the first round alone is over the QPU-time budget (nothing was submitted).
    """
    from qasa.runner import check_budget_value, prepare, run

    backend = as_backend(sampler)          # runs go through the Backend (its recipe is recorded)
    sampler = backend.sampler              # the sampler's own attributes (preset, schedule) are read
    _check_options(sampler, out, reads_per_qubit, target, dither, reads_per_call)
    check_budget_value(max_qpu_seconds)
    props = getattr(sampler, "properties", {}) or {}
    num_qubits = int(props["num_qubits"])
    R = int(reads_per_call or min(1024, int((props.get("num_reads_range") or [1, 10_000])[1])))
    k0 = float(conversion) if conversion is not None else published_conversion(sampler)
    if not (math.isfinite(k0) and k0 != 0):
        raise ShimError(f"conversion={conversion!r} must be a finite non-zero field per Φ₀")
    beta0 = published_beta(sampler)
    frange = flux_bias_range(sampler, k0)
    protocol = Protocol(h_values=(0.0,), reads_per_h=R, reads_per_call=R, spin_reversal=True,
                        annealing_time=annealing_time, flux_drift_compensation=flux_drift_compensation,
                        qubits=None if qubits is None else tuple(int(q) for q in qubits), seed=seed)
    protocol = prepare(protocol, backend, out)
    settings = {"dither": float(dither), "reads_per_call": R, "conversion_prior": k0, "beta_prior": beta0,
                "flux_bias_range": list(frange), "model": "tanh(β(x + b + kΦ)), priors β,c ~ N(β₀, (β₀/2)²)"}
    out = Path(out)
    store = DatasetStore(out)
    if store.exists:
        meta = store.metadata()
        stored = (meta.get("shim") or {}).get("settings")
        rounds = list((meta.get("design_rounds") or {}))
        if stored is None and not (rounds and all(re.fullmatch(r"s\d{3}", r) for r in rounds)):
            raise DatasetError(f"{out} holds a dataset that is not a shim; use another directory")
        if stored is not None and json.loads(json.dumps(stored)) != json.loads(json.dumps(settings)):
            diff = ", ".join(k for k in settings if stored.get(k) != settings[k])
            raise DatasetError(f"{out} holds a shim with other settings ({diff}); use another directory or the same options")
    qarr = np.asarray(protocol.qubits, dtype=np.int64)
    seed = int(protocol.seed)
    folder = out / _DIR
    plans: list[dict[str, Any]] = []
    reason = None
    rnd = 1
    est = None
    while True:
        path = folder / f"round-{rnd:03d}.json"
        if path.is_file():
            plan = json.loads(path.read_text())
        else:
            spent = sum(int(p["calls"]) * int(p["reads_per_call"]) for p in plans)
            est, half = _fit_state(store, plans, qarr, seed, k0, beta0, frange) if plans else (None, math.inf)
            if on_round is not None and est is not None:
                on_round(rnd - 1, {"reads_per_qubit": spent, "half_width_max": half,
                                   "qpu_access_time_s": store.spent_qpu_us() / 1e6})
            if target is not None and half <= target:
                reason = "target"
                break
            if rnd > max_rounds:
                reason = "max_rounds"
                break
            C, Rr = _next_round(spent, reads_per_qubit, R, half, target)
            if C == 0:
                reason = "reads"
                break
            if max_qpu_seconds is not None:
                per = backend.estimate_call(protocol, len(qarr), Rr)
                if per and store.exists and store.spent_qpu_us() + 2 * per > max_qpu_seconds * 1e6:
                    reason = "budget"
                    break
                if per:
                    C = max(2, min(C, 2 * int((max_qpu_seconds * 1e6 - store.spent_qpu_us()) // (2 * per))))
            plan = _plan(est, qarr, C, Rr, k0, beta0, dither)
            if store.exists:
                with store.writing():
                    folder.mkdir(exist_ok=True)
                    atomic_write_json(path, plan)
        try:
            run(protocol, backend, out, progress=progress, max_qpu_seconds=max_qpu_seconds,
                calls=_round_calls(plan, protocol, rnd, num_qubits))
        except BudgetError:
            if not store.exists:
                raise
            plans.append(plan)
            reason = "budget"
            break
        if not path.is_file():                      # the first round: the store exists only now
            with store.writing():
                folder.mkdir(exist_ok=True)
                atomic_write_json(path, plan)
                meta = store.metadata()     # a shim killed before this point is recognized by its call ids
                store.update_metadata(shim={**(meta.get("shim") or {}), "settings": settings})
        plans.append(plan)
        rnd += 1
    if not store.exists:
        raise ShimError("no reads were collected (reads_per_qubit or the budget allow no call)")
    return _finish(store, sampler, protocol, plans, qarr, seed, k0, beta0, frange, reason, settings, num_qubits)


def _plan(est: pd.DataFrame | None, qubits: np.ndarray, calls: int, R: int, k0: float, beta0: float,
          dither: float) -> dict[str, Any]:
    """A round: every qubit's flux at its crossing estimate, with dither amplitudes from its β̂ and ĉ."""
    if est is None:
        flux = np.zeros(len(qubits))
        beta = np.full(len(qubits), beta0)
        slope = np.full(len(qubits), beta0)
    else:
        responding = est["status"].isin(["ok", "clipped"]).to_numpy()
        flux = np.where(responding, est["next_flux"].to_numpy(), est["flux_now"].to_numpy())
        # dither amplitudes from the estimates, kept within a factor 3 of the prior's (a silent qubit's β̂ ≈ 0)
        beta = np.clip(est["beta"].to_numpy(), beta0 / 3, 3 * beta0)
        slope = np.clip(np.abs(est["beta"].to_numpy() * est["conversion"].to_numpy() / k0), beta0 / 3, 3 * beta0)
    return {"calls": int(calls), "reads_per_call": int(R), "qubits": [int(q) for q in qubits],
            "flux": [float(v) for v in flux], "delta_h": [float(v) for v in dither / beta],
            "delta_flux": [float(v) for v in dither / (slope * abs(k0))], "created": utcnow()}


def _fit_state(store: DatasetStore, plans: list[dict[str, Any]], qubits: np.ndarray, seed: int, k0: float,
               beta0: float, frange: tuple[float, float]) -> tuple[pd.DataFrame, float]:
    """Fit all data so far; the estimates at the flux of the next round and the largest residual half-width."""
    X, F, D, N = _pooled(store, plans, qubits, seed)
    theta, cov, info = fit_shim(X, k0 * F, D, N, beta0)
    frac = D.sum(1) / np.maximum(N.sum(1), 1)
    first = _estimates(theta, cov, info, k0, np.zeros(len(qubits)), frac, frange)
    est = _estimates(theta, cov, info, k0, first["next_flux"].to_numpy(), frac, frange)
    est["flux_now"] = np.asarray(plans[-1]["flux"], float)
    est["reads"] = N.sum(1)
    ok = est["status"].isin(["ok", "clipped"]).to_numpy()
    half = float((Z95 * est.loc[ok, "residual_sd"]).max()) if ok.any() else math.inf
    return est, half


def _finish(store, sampler, protocol, plans, qubits, seed, k0, beta0, frange, reason, settings, num_qubits
            ) -> ShimResult:
    est, _ = _fit_state(store, plans, qubits, seed, k0, beta0, frange)
    flux = est["next_flux"].to_numpy()
    half = Z95 * est["residual_sd"].to_numpy()
    table = pd.DataFrame({"qubit": qubits, "flux_bias": flux, "residual": est["residual"].to_numpy(),
                          "residual_lo": est["residual"].to_numpy() - half,
                          "residual_hi": est["residual"].to_numpy() + half,
                          "residual_sd": est["residual_sd"].to_numpy(), "bias": est["bias"].to_numpy(),
                          "bias_sd": est["bias_sd"].to_numpy(), "conversion": est["conversion"].to_numpy(),
                          "conversion_sd": est["conversion_sd"].to_numpy(), "beta": est["beta"].to_numpy(),
                          "beta_sd": est["beta_sd"].to_numpy(), "reads": est["reads"].to_numpy().astype(np.int64),
                          "status": est["status"].to_numpy(), "reason": est["reason"].to_numpy()})
    chip = np.zeros(num_qubits)
    chip[qubits] = flux
    reads = int(table["reads"].max()) if len(table) else 0
    result = ShimResult([float(v) for v in chip], table, reads, reason or "reads", len(plans), store.path, settings)
    from qasa.samplers import solver_name

    doc = {"flux_biases": result.flux_biases, "solver": solver_name(sampler), "num_qubits": num_qubits,
           "qubits": [int(q) for q in qubits], "reads_per_qubit": reads, "stopped": result.stopped,
           "rounds": result.rounds, "flux_drift_compensation": protocol.flux_drift_compensation,
           "annealing_time": protocol.annealing_time, "settings": settings, "created": utcnow(),
           "not_shimmed": {str(int(q)): r for q, r, s in zip(table["qubit"], table["reason"], table["status"])
                           if s in ("saturated", "no response", "clipped")},
           "summary": {k: v for k, v in result.summary().items() if k not in ("path", "flux_biases")}}
    with store.writing():
        (store.path / _DIR).mkdir(exist_ok=True)
        atomic_write_bytes(store.path / _DIR / "table.csv", table.to_csv(index=False).encode())
        from qasa.report import render_shim

        render_shim(table, store.metadata().get("device") or {}, result.summary(), store.path / _DIR)
        atomic_write_json(store.path / "flux_biases.json", doc)
        meta = store.metadata()
        store.update_metadata(shim={**(meta.get("shim") or {}), "settings": settings,
                                    "result": {k: v for k, v in doc.items() if k not in ("flux_biases", "not_shimmed")}})
    return result


def load_flux_biases(path: str | Path, num_qubits: int | None = None) -> list[float]:
    """Flux biases from a ``flux_biases.json`` written by :func:`shim` (or a plain JSON list).

    Raises:
        ShimError: unreadable file, non-finite values, or a length other than ``num_qubits``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ShimError(f"cannot read flux biases from {path}: {exc}") from None
    values = data.get("flux_biases") if isinstance(data, dict) else data
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ShimError(f"{path}: flux_biases must be a list of numbers") from None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise ShimError(f"{path}: flux_biases must be a flat list of finite numbers (Φ₀)")
    if num_qubits is not None and len(arr) != num_qubits:
        raise ShimError(f"{path} has {len(arr)} flux biases; this solver has {num_qubits} qubits")
    return [float(v) for v in arr]

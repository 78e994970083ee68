r"""Flux-bias shimming at the statistical floor: every qubit's static bias cancelled by a flux-bias offset.

A qubit's static bias ``b`` (units of h) can be cancelled by a flux bias Φ (units of Φ₀, the QPU
parameter ``flux_biases``): near the freeze-out point the flux adds a field ``kΦ`` to the qubit, with
``k`` its flux→field conversion. D-Wave publishes the conversion (``dwave.system.temperatures.
fluxbias_to_h``: ``h = −2 I_p(s) Φ / B(s)``, ``I_p = √(B/(2 M_AFM))``, at the freeze-out point); real
qubits differ from it, so here it is only the prior's centre and each qubit's ``k`` is learned. On a
sampler without ``flux_biases`` (``offsets="h"``, CLI ``--offsets h``) the same design returns a per-qubit
h offset instead (below).

Model (per qubit, every read of every round pooled in one likelihood)
    A read at programmed field ``x`` (units of h) and flux bias Φ returns −1 with probability

        P(−1 | x, Φ) = ½ [1 + tanh(β (x + b + kΦ))] = σ(2(βx + a + c·u)),  u = k₀Φ,

    the single-qubit freeze-out (Boltzmann) law of docs/DESIGN.md §2, with ``a = βb``,
    ``c = βk/k₀`` (``k₀`` the published conversion, so ``c ≈ β``) and σ the logistic function. In
    ``(β, a, c)`` it is a logistic regression: the log-likelihood is concave and Newton's method
    converges from any start. Weak Gaussian priors (β and c: mean β₀, sd β₀/2; a: sd 10) keep
    the first round defined; β₀ is the published single-qubit β = 1/T_eff of the device (docs/DESIGN.md §2).
    The residual field at flux Φ is ``r = b + kΦ = (a + c·k₀Φ)/β``; its interval is the delta method
    on the posterior covariance (below).

Estimand: the static residual ``b + kΦ``
    What a static flux bias can cancel is the part of the qubit's field that stays: its static bias
    ``b`` (on qasa's virtual QPU ``truth["b"]``; the residual after the shim is ``truth["b"] +
    flux_field(flux_biases)``). The rest of what a read sees is not a property of the qubit's field
    and is not part of the estimand: each programming adds its own offset (integrated control errors,
    the 1/f flux noise averaged over the call) with mean zero over calls; the h DAC rounds each
    *programmed value* (up to ±0.008 at h = 0 on Advantage), an error of that value and not a bias of
    the qubit; the qubit's h scale (~1 %) multiplies programmed fields only, so the residual is in the
    units of h as this qubit realizes it (within ~1 % of field units). Design and intervals are built
    so that each of them is either averaged out or counted in the interval:

    - *Between calls.* Every call is a new programming; the reads of one call share an offset
      δ ~ N(0, σ_call²) acting as a per-call ``b`` (as in the assessment's between-call fit,
      :mod:`qasa.fitting` "Between calls": the between-call variance of a call's P(−1) is
      ``g σ²``, ``g = (∂p/∂b)²``). A call of ``N`` reads then has the binomial variance times
      ``φ = 1 + (N − 1)·4β²pq·σ_call²``. A qubit has few calls (20 at the default budget), so its
      dispersion is estimated by quasi-likelihood with empirical-Bayes pooling over the chip: each
      responding qubit's Pearson statistic over its calls (cells expecting both outcomes
      ≥ :data:`qasa.fitting.MIN_CALL_COUNT` times) gives ``φ̂_q`` on ``d_q = calls − 3`` degrees of freedom; the
      chip's prior (``φ₀``, ``ν₀``) comes from the spread of ``log φ̂_q`` beyond its sampling spread
      (Smyth 2004, the moderated variance of limma), ``φ_q = (ν₀φ₀ + d_qφ̂_q)/(ν₀ + d_q)``, never
      below 1 (binomial). The fit is redone with every count divided by ``φ_q`` (the quasi-likelihood),
      whose covariance carries the scatter; ``σ_call = √((φ_q − 1)/κ_q)`` (``κ_q`` the mean of
      ``(N − 1)·4β²pq`` over the calls) is reported: no static shim removes it. With fewer than
      4 usable calls on every qubit σ_call is not identified (the reason says so, intervals are binomial).
    - *Slow flux noise.* 1/f flux noise slower than the whole shim moves every call of the run
      alike; no data of one run separate it from ``b``. Its variance — the variance of the mean of
      the published spectrum over the run, ``∫ S_Φ(f) sinc²(πfT_run) df`` with ``T_run`` the run's QPU
      access time (a lower bound on its duration, so the term is conservative) — times ``k̂²`` is
      ``σ_slow²``, added to the interval. The spectrum is D-Wave's published one (√S_Φ(1 Hz) = 2 µΦ₀/√Hz,
      exponent 0.9, flat below 1 mHz with ``flux_drift_compensation``; docs/DESIGN.md §7, the closed
      forms of :class:`qasa.virtual.noise.FluxNoise`), the virtual QPU's own when it runs there (none on
      an ideal device), none on a software sampler.
    - *DAC.* The h dither's magnitude is drawn afresh for every pair of calls (``w ~ U(0.25, 1.75)``
      times its nominal size), so the DAC's rounding of the dither is a different error in every call:
      part of σ_call, averaged out (a fixed dither's rounding biased ``b̂`` by up to ±0.004, rms 0.002).

    The 95 % interval is ``r̂ ± t·√(sd² + σ_slow²)``: ``sd`` from the quasi-likelihood covariance,
    ``t`` Student's with the moderated degrees of freedom ``d_q + ν₀`` (Welch–Satterthwaite with the
    slow term), the normal quantile when the binomial floor holds.

Design (each round; a deterministic function of the seed and the data of earlier rounds)
    Every qubit's flux is set at its current estimate of the zero crossing, ``Φ̂ = −â/(ĉ k₀)``
    (the likelihood's zero crossing), clipped to the flux-bias range. Reads at the crossing carry
    the most information about it: ``β²`` per read, so ``n`` reads give the floor
    ``sd(r) = 1/(β√n)``. To learn β and k from the same reads at almost no cost, calls come in
    antithetic pairs with a small dither on each qubit: programmed ``x = g w δ`` with a spin-reversal
    gauge ``g = ±1`` (the gauge's partner call has ``−g``, the same ``w``) and flux ``Φ̂ + g′Δ`` (``−g′``
    in the partner), with ``βδ = |c|k₀Δ = ρ`` (``dither``, default 0.1). The tanh argument is then
    ``±ρ(w ± 1)``, costing ``≈ (1 + E w²) ρ² ≈ 2 %`` of the information about the crossing (1 % in sd)
    while giving β and k to ``≈ 1/(ρ√n)`` relative each. Round sizes double the reads so far
    (the first round is one pair), capped by the read budget and by the reads the target predicts.
    Calls are numbered through the whole shim (one device clock: on the virtual QPU the 1/f noise
    of consecutive rounds is correlated as on a QPU that runs them back to back).

h offsets (``offsets="h"``)
    For a sampler without ``flux_biases`` the correction is a per-qubit h offset ``o`` added to the
    programmed field: the same rounds with ``x = o + g w δ`` and no flux (β and ``a`` are fitted, ``c``
    keeps its prior), ``o`` set at the crossing ``−â/β̂`` and kept inside ``h_range`` less the dither.
    The result, ``ShimResult.h_offsets`` and ``OUT/h_offsets.json``, lists one offset per qubit id (0 off
    the shimmed qubits), to be added to a problem's h. Unlike a flux bias an h offset goes through the h
    DAC: on a QPU the realized shift at any one programmed value is ``o`` plus the difference of two
    rounding errors (up to ±0.008 each near h = 0), ``o`` only on average over programmed values.

Stop
    When the 95 % half-width of every responding qubit's residual is within ``target`` (units of
    h), when the read budget ``reads_per_qubit`` is spent, or when the QPU-time budget
    ``max_qpu_seconds`` is reached (:class:`qasa.cost.BudgetError` from the runner). A target below
    what the slow flux noise allows is not reached by more reads: the shim then runs to its budget.

Qubits that do not respond
    A qubit whose reads are almost all one value (outside [1 %, 99 %] −1) is *saturated*; one
    whose flux slope (h slope with ``offsets="h"``) is not distinguishable from 0 (below 4 standard
    errors) does *not respond*. Both end with flux bias 0 and a one-line reason in the table, never an
    extrapolated value; a crossing beyond the flux-bias range is clipped to it, with its reason. Between
    rounds every qubit is moved to the crossing of its posterior (priors included, clipped to the range),
    so that a qubit saturated at flux 0 but within reach, or one whose slope is weak, is resolved by the
    next rounds (measured: a qubit with b = 3 h is shimmed, one with b = 10 h stays saturated, one with a
    conversion 50× below the published one ends clipped at the range's edge).

Unresolved: a correction only where it is expected to help
    Setting a qubit's flux at its estimated crossing replaces its static bias ``b`` by the estimate's error:
    the expected squared residual is ``Var b̂ + E[b²] Var k̂/k̂²`` (``Var b̂`` the interval's full variance: the
    quasi-likelihood's, with the dispersion, plus σ_slow²), while leaving it at 0 keeps ``b²``. Its expectation
    given ``b̂`` is taken under the chip's spread of static biases, ``b ~ N(0, τ²)`` with ``τ² = max(mean b̂² −
    mean Var b̂, 0)`` over the responding qubits (empirical Bayes): ``E[b² | b̂] = s²b̂² + s Var b̂``,
    ``s = τ²/(τ² + Var b̂)``. A responding qubit is set only where ``E[b² | b̂](1 − Var k̂/k̂²) > Var b̂`` and its
    between-call scatter is identified (without it ``Var b̂`` lacks that part); the others end at 0 with status
    ``unresolved`` ("bias not resolved at this budget"). Where the reads resolve every bias (``Var b̂ ≪ τ²``)
    every qubit is set, as before. So a small budget does not make the expected bias worse (measured on the
    virtual QPU ``VirtualQPU("advantage4.1", seed=3)``, first 200 active qubits, shim seed 7: true rms 0.0095
    before, after 0.0095/0.0095/0.0090/0.0073 at 1 024/4 096/8 192/20 480 reads; without the rule
    0.0123/0.0096/0.0089/0.0069). The
    summary's ``bias_rms`` is the rms static bias of the responding qubits with the estimates' noise removed,
    ``√max(mean b̂² − mean Var b̂, 0)``; an upper bound (``bias_rms_upper_bound``) when the between-call
    scatter is not identified.

Flux-bias range
    The solver's ``flux_bias_range`` property when it publishes one (the name D-Wave's own code reads:
    ``dwave.system.composites.LinearAncillaComposite``, ``dwave/system/composites/linear_ancilla.py`` of
    dwave-system, https://github.com/dwavesystems/dwave-system/pull/530, read in dwave-system 1.36.0:
    ``qpu_properties.get("flux_bias_range", default_flux_bias_range)``);
    otherwise the range D-Wave documents there for its QPUs, ``default_flux_bias_range = (−0.005, 0.005)``
    Φ₀ ("Flux-bias range ... supported by the QPU"; the code notes that solvers do not publish the
    property yet). D-Wave's QPU documentation (docs.dwavesys.com/docs/latest/c_fd_flux.html, "Flux-Bias
    Offsets") lists the ``flux_biases`` parameter with the properties ``extended_j_range`` and
    ``per_qubit_coupling_range`` and states no flux-bias range; ``dwave.experimental.shimming.
    shim_flux_biases`` clips nothing (its docstring warns that a large learning rate can "exceed the
    bounds of allowed values for the flux-bias offsets"). 0.005 Φ₀ is a field of ≈ 7.5 h on
    Advantage_system4.1 (D-Wave's conversion at s* = 0.612), beyond ``h_range``.

Checkpoints
    Each round's plan (per-qubit flux or offset, dither amplitudes, calls and reads) is written atomically
    to ``OUT/shim/round-NNN.json`` before its calls run; its calls have ids ``sNNN-cNNNNN`` and carry
    their ``flux_biases`` as a per-call sampler parameter (:attr:`qasa.protocol.Call.params`); they
    are run by :func:`qasa.runner.run` (journaled one by one, budget-checked, resumable). A killed
    shim resumes from exactly the data an uninterrupted one had, so it ends at identical flux biases.
    The result is ``OUT/flux_biases.json`` (the list for ``DWaveSampler().sample(..., flux_biases=...)``)
    or ``OUT/h_offsets.json``, ``OUT/shim/table.csv`` and ``OUT/shim/report.html``.
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
from scipy import special, stats

from qasa.backend import as_backend
from qasa.cost import BudgetError
from qasa.dataset import atomic_write_bytes, atomic_write_json, utcnow
from qasa.errors import DatasetError, QasaError
from qasa.fitting import MIN_CALL_COUNT
from qasa.protocol import Call, Protocol, round_call_id, round_name
from qasa.samplers import DEFAULT_FLUX_BIAS_RANGE, check_flux_biases, ignores_flux_biases
from qasa.store import DatasetStore
from qasa.virtual.noise import FluxNoise

__all__ = ["shim", "ShimResult", "ShimError", "load_flux_biases", "published_conversion", "published_beta",
           "published_flux_noise", "flux_bias_range", "fit_shim", "MAX_READS_PER_QUBIT", "DEFAULT_READS_PER_QUBIT",
           "DEFAULT_FLUX_BIAS_RANGE", "OFFSETS"]

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
#: What a shim sets: flux biases (``flux_biases``) or h offsets added to the programmed field.
OFFSETS = ("flux", "h")
#: D-Wave's documented flux-bias range (Φ₀) for a solver that publishes none (module docstring).
#: D-Wave's published 1/f flux noise of a QPU: √S_Φ(1 Hz) (µΦ₀/√Hz) and exponent (docs/DESIGN.md §7).
PUBLISHED_FLUX_NOISE = (2.0, 0.9)
#: Range of the dither magnitude factor w, drawn per pair of calls (module docstring, "DAC").
_W = (0.25, 1.75)
_DIR = "shim"
_OK = ("ok", "clipped")
_RESPONDING = ("ok", "clipped", "unresolved")

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
            qubit id — usable as ``DWaveSampler().sample(bqm, flux_biases=result.flux_biases)``; ``None``
            with ``offsets="h"``.
        table: per shimmed qubit: ``qubit``, ``flux_bias`` (or ``h_offset``), ``residual`` (estimated static
            residual field there, units of h) with ``residual_lo``/``residual_hi`` (95 %) and
            ``residual_sd`` (slow flux noise included), ``sigma_call`` (between-call scatter, h: no static
            shim removes it), ``sigma_slow`` (slow flux noise over the run, h), ``dispersion`` (φ) and
            ``df``, ``bias`` (the static bias b̂ without correction) with ``bias_sd``, ``conversion``
            (fitted k, h per Φ₀; NaN for h offsets) with ``conversion_sd``, ``beta`` (1/h) with
            ``beta_sd``, ``reads``, ``status`` (``ok``, ``clipped``, ``unresolved``, ``saturated``, ``no response``) and
            ``reason``.
        reads_per_qubit: reads each shimmed qubit took part in.
        stopped: ``"target"``, ``"reads"`` (the read budget is spent), ``"budget"`` (QPU time) or
            ``"max_rounds"``.
        rounds: rounds run.
        path: the dataset directory.
        settings: the shim's settings (as stored).
        h_offsets: with ``offsets="h"``: one h offset per qubit id (0 off the shimmed qubits), to add to a
            problem's h; else ``None``.
        offsets: ``"flux"`` or ``"h"``.
    """

    flux_biases: list[float] | None
    table: pd.DataFrame
    reads_per_qubit: int
    stopped: str
    rounds: int
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    h_offsets: list[float] | None = None
    offsets: str = "flux"

    def summary(self) -> dict[str, Any]:
        """Plain-JSON summary (what ``qasa shim --json`` prints)."""
        t = self.table
        ok = t["status"].isin(_OK)
        resp = t["status"].isin(_RESPONDING)
        half = (t["residual_hi"] - t["residual_lo"]) / 2
        out = {"path": str(self.path), "offsets": self.offsets, "stopped": self.stopped, "rounds": self.rounds,
               "reads_per_qubit": self.reads_per_qubit, "qubits": int(len(t)), "responding": int(ok.sum()),
               "status": {k: int(v) for k, v in t["status"].value_counts().items()},
               "bias_rms": _noise_free_rms(t.loc[resp, "bias"], t.loc[resp, "bias_sd"], t.loc[resp, "sigma_slow"]),
               "bias_rms_upper_bound": bool(resp.any() and t.loc[resp, "sigma_call"].isna().all()),
               "residual_half_width_rms": _rms(half[ok]),
               "residual_half_width_max": float(half[ok].max()) if ok.any() else None,
               "sigma_call_median": _median(t.loc[ok, "sigma_call"]),
               "sigma_slow_median": _median(t.loc[ok, "sigma_slow"])}
        name = "flux_biases" if self.offsets == "flux" else "h_offsets"
        out[name] = str(self.path / f"{name}.json")
        return out


def _rms(x: Any) -> float | None:
    x = np.asarray(x, float)
    return float(np.sqrt(np.mean(x ** 2))) if x.size else None


def _noise_free_rms(bias: Any, sd: Any, slow: Any) -> float | None:
    """The rms static bias of the responding qubits with the estimates' noise removed:
    ``√max(mean b̂² − mean Var b̂, 0)`` (``Var b̂ = bias_sd² + σ_slow²``): the rms of b̂ alone overstates it by
    its noise, several-fold at small budgets. Without the between-call scatter identified (too few calls) ``Var b̂``
    lacks it and the figure is an upper bound (``bias_rms_upper_bound`` in the summary)."""
    b, v = np.asarray(bias, float), np.asarray(sd, float) ** 2 + np.asarray(slow, float) ** 2
    return float(np.sqrt(max(np.mean(b ** 2) - np.mean(v), 0.0))) if b.size else None


def _median(x: Any) -> float | None:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


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


def published_flux_noise(sampler: Any) -> FluxNoise:
    """The 1/f flux noise a shim's interval allows for (module docstring, "Slow flux noise"): the virtual
    QPU's own model (amplitude 0 on an ideal device or without a published M_AFM), D-Wave's published
    spectrum (:data:`PUBLISHED_FLUX_NOISE`) on a cloud QPU, none (amplitude 0) on any other sampler."""
    backend = as_backend(sampler)
    model = getattr(backend.sampler, "flux_noise_model", None)
    if isinstance(model, FluxNoise):
        return model
    if backend.cloud_solver is not None:
        return FluxNoise(*PUBLISHED_FLUX_NOISE)
    return FluxNoise(0.0, PUBLISHED_FLUX_NOISE[1])


def flux_bias_range(sampler: dimod.Sampler) -> tuple[float, float]:
    """The flux biases a shim may set (Φ₀): the solver's ``flux_bias_range`` property, else D-Wave's documented
    :data:`DEFAULT_FLUX_BIAS_RANGE` (module docstring, "Flux-bias range").

    Raises:
        ShimError: a published range that is not two finite numbers ``lo < 0 < hi``.
    """
    props = getattr(sampler, "properties", {}) or {}
    value = props.get("flux_bias_range")
    if value is None:
        return DEFAULT_FLUX_BIAS_RANGE
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ShimError(f"the solver's flux_bias_range {value!r} is not a pair of numbers (Φ₀)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0 < hi):
        raise ShimError(f"the solver's flux_bias_range {value!r} must satisfy lo < 0 < hi (Φ₀)")
    return lo, hi


def _offset_range(sampler: dimod.Sampler, dither: float, beta0: float) -> tuple[float, float]:
    """The h offsets a shim may set: ``h_range`` less the largest dither (β ≥ β₀/3, w ≤ 1.75)."""
    props = getattr(sampler, "properties", {}) or {}
    lo, hi = (float(v) for v in (props.get("h_range") or (-4.0, 4.0)))
    room = _W[1] * dither * 3.0 / beta0
    return lo + room, hi - room


# -- the model ------------------------------------------------------------------------------------------
def fit_shim(x: np.ndarray, u: np.ndarray, n_down: np.ndarray, n: np.ndarray, beta0: float,
             iterations: int = 50, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum a posteriori (β, a, c) of every qubit (module docstring), by damped Newton.

    Args:
        x, u, n_down, n: ``(qubits, cells)``: programmed field, flux in published field units
            (``k₀Φ``), reads returning −1, reads (a cell with ``n = 0`` adds nothing). Counts may be
            fractional (the quasi-likelihood divides them by a dispersion).
        beta0: the prior's β₀.
        iterations: most Newton steps.
        start: ``(qubits, 3)`` starting point (default the prior's mean).

    Returns:
        ``theta (Q, 3)``, the posterior covariance ``(Q, 3, 3)`` and the data-only information ``(Q, 3, 3)``.
    """
    Q = x.shape[0]
    X = np.stack([x, np.ones_like(x), u], axis=-1)                   # (Q, C, 3)
    prior_mean = np.array([beta0, 0.0, beta0])
    prior_prec = np.diag([1.0 / (0.5 * beta0) ** 2, 1.0 / 10.0 ** 2, 1.0 / (0.5 * beta0) ** 2])
    theta = np.tile(prior_mean, (Q, 1)) if start is None else np.array(start, dtype=float)
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


def _trigamma_inverse(x: float) -> float:
    """y with ψ′(y) = x (Newton from y = ½ + 1/x, Smyth 2004's algorithm)."""
    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        dif = tri * (1.0 - tri / x) / float(special.polygamma(2, y))
        y += dif
        if -dif / y < 1e-8:
            break
    return y


def _moderate(phi: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """The chip's prior (φ₀, ν₀) of the per-qubit dispersions ``phi`` on ``d`` degrees of freedom: a scaled
    inverse χ² fitted to ``log φ̂`` by moments (Smyth 2004, limma's ``fitFDist``); ν₀ = ∞ when the spread
    is no more than sampling spread (one dispersion for the chip), 0 with fewer than two qubits."""
    if phi.size < 2:
        return (float(phi[0]) if phi.size else 1.0), 0.0
    e = np.log(np.maximum(phi, 1e-12)) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(np.var(e, ddof=1) - np.mean(special.polygamma(1, d / 2)))
    if excess <= 0:
        return float(np.exp(np.mean(e))), math.inf
    nu0 = 2.0 * _trigamma_inverse(excess)
    return float(np.exp(np.mean(e) + special.digamma(nu0 / 2) - math.log(nu0 / 2))), nu0


def _dispersion(X: np.ndarray, U: np.ndarray, D: np.ndarray, N: np.ndarray, theta: np.ndarray,
                pool: np.ndarray, n_free: int) -> dict[str, np.ndarray]:
    """Per qubit: the moderated dispersion φ (≥ 1), its degrees of freedom (∞ where φ is the binomial 1),
    σ_call (h units) and whether σ_call is identified (module docstring, "Between calls")."""
    beta = theta[:, :1]
    p = 0.5 * (1.0 + np.tanh(beta * X + theta[:, 1:2] + theta[:, 2:3] * U))
    pq = p * (1.0 - p)
    use = (N > 0) & (N * np.minimum(p, 1.0 - p) >= MIN_CALL_COUNT)
    with np.errstate(invalid="ignore", divide="ignore"):
        x2 = np.where(use, (D - N * p) ** 2 / np.maximum(N * pq, 1e-300), 0.0).sum(1)
        d = use.sum(1) - n_free
        phi_hat = np.where(d >= 1, x2 / np.maximum(d, 1), np.nan)
        kappa = np.where(use, (N - 1.0) * 4.0 * beta ** 2 * pq, 0.0).sum(1) / np.maximum(use.sum(1), 1)
    pool = pool & (d >= 1)
    phi0, nu0 = _moderate(phi_hat[pool], d[pool].astype(float))
    own = d >= 1
    if not pool.any():                                  # no qubit has between-call degrees of freedom
        identified, phi, df = np.zeros(len(d), bool), np.ones(len(d)), np.full(len(d), math.inf)
    elif math.isinf(nu0):                   # one dispersion for the chip: the pooled ratio, on the pooled df
        phi0 = float(x2[pool].sum() / d[pool].sum())
        identified, phi, df = np.ones(len(d), bool), np.full(len(d), phi0), np.full(len(d), float(d[pool].sum()))
    else:
        identified = own | (nu0 > 0)
        phi = np.where(own, (nu0 * phi0 + d * np.nan_to_num(phi_hat)) / (nu0 + np.maximum(d, 0)), phi0)
        phi = np.where(identified, phi, 1.0)
        df = np.where(own, nu0 + d, nu0).astype(float)
    binomial = ~identified | (phi <= 1.0)               # never below the binomial variance
    phi = np.maximum(phi, 1.0)
    df = np.where(binomial, math.inf, df)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(identified & (kappa > 0), np.sqrt((phi - 1.0) / np.where(kappa > 0, kappa, 1.0)), np.nan)
    return {"phi": phi, "df": df, "sigma_call": sigma, "identified": identified, "phi0": phi0, "nu0": nu0}


# -- one shim's setup -----------------------------------------------------------------------------------
@dataclass
class _Shim:
    """What every step of one shim needs (resolved once by :func:`_setup`)."""

    backend: Any
    sampler: Any
    protocol: Protocol
    store: DatasetStore
    out: Path
    qubits: np.ndarray
    seed: int
    length: int                       # entries of the output list (qubit ids 0 .. length − 1)
    R: int
    k0: float
    beta0: float
    limits: tuple[float, float]       # flux-bias range (Φ₀), or the h-offset range
    mode: str
    noise: FluxNoise
    dither: float
    settings: dict[str, Any]

    @property
    def flux(self) -> bool:
        """True when the shim sets flux biases (``offsets="flux"``)."""
        return self.mode == "flux"

    @property
    def setting(self) -> str:
        """The per-qubit quantity a round sets (key of the plan and column of the table)."""
        return "flux_bias" if self.flux else "h_offset"


def _setup(sampler: dimod.Sampler, out: str | Path, *, offsets: str, reads_per_qubit: Any, target: Any,
           dither: Any, reads_per_call: Any, max_qpu_seconds: Any, qubits: list[int] | None, seed: int | None,
           annealing_time: float | None, flux_drift_compensation: bool, conversion: float | None) -> _Shim:
    """Check every option (nothing written or spent on a refusal), resolve the protocol, check a stored shim."""
    from qasa.runner import check_budget_value, prepare

    backend = as_backend(sampler)          # runs go through the Backend (its recipe is recorded)
    sampler = backend.sampler              # the sampler's own attributes (preset, schedule) are read
    _check_options(sampler, out, offsets, reads_per_qubit, target, dither, reads_per_call)
    check_budget_value(max_qpu_seconds)
    props = getattr(sampler, "properties", {}) or {}
    R = int(reads_per_call or min(1024, int((props.get("num_reads_range") or [1, 10_000])[1])))
    k0 = float(conversion) if conversion is not None else published_conversion(sampler)
    if not (math.isfinite(k0) and k0 != 0):
        raise ShimError(f"conversion={conversion!r} must be a finite non-zero field per Φ₀")
    beta0 = published_beta(sampler)
    limits = flux_bias_range(sampler) if offsets == "flux" else _offset_range(sampler, float(dither), beta0)
    noise = published_flux_noise(backend)
    protocol = Protocol(h_values=(0.0,), reads_per_h=R, reads_per_call=R, spin_reversal=True,
                        annealing_time=annealing_time, flux_drift_compensation=flux_drift_compensation,
                        qubits=None if qubits is None else tuple(int(q) for q in qubits), seed=seed)
    protocol = prepare(protocol, backend, out)
    settings = {"offsets": offsets, "dither": float(dither), "dither_magnitude": list(_W), "reads_per_call": R,
                "conversion_prior": k0, "beta_prior": beta0,
                ("flux_bias_range" if offsets == "flux" else "h_offset_range"): list(limits),
                "flux_noise": [noise.amplitude, noise.alpha],
                "model": "tanh(β(x + b + kΦ)), priors β,c ~ N(β₀, (β₀/2)²); calls: quasi-likelihood, "
                         "dispersion pooled over the chip; slow flux noise from the published spectrum"}
    out = Path(out)
    store = DatasetStore(out)
    _check_stored(store, settings, out)
    qarr = np.asarray(protocol.qubits, dtype=np.int64)
    nodes = getattr(sampler, "nodelist", None) or qarr.tolist()
    length = int(props["num_qubits"]) if "num_qubits" in props else int(max(nodes)) + 1
    return _Shim(backend, sampler, protocol, store, out, qarr, int(protocol.seed), length, R, k0, beta0, limits,
                 offsets, noise, float(dither), settings)


def _check_stored(store: DatasetStore, settings: Mapping[str, Any], out: Path) -> None:
    """Refuse a directory that holds another kind of dataset, or a shim with other settings."""
    if not store.exists:
        return
    meta = store.metadata()
    stored = (meta.get("shim") or {}).get("settings")
    rounds = list((meta.get("design_rounds") or {}))
    if stored is None and not (rounds and all(re.fullmatch(r"s\d{3}", r) for r in rounds)):
        raise DatasetError(f"{out} holds a dataset that is not a shim; use another directory")
    if stored is not None and json.loads(json.dumps(stored)) != json.loads(json.dumps(settings)):
        diff = ", ".join(k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k])))
        raise DatasetError(f"{out} holds a shim with other settings ({diff or 'format'}); use another directory "
                           "or the same options")


def _check_options(sampler: dimod.Sampler, out: Any, offsets: Any, reads_per_qubit: Any, target: Any, dither: Any,
                   reads_per_call: Any) -> None:
    if out is None or not str(out).strip():
        raise ShimError("a shim needs an output directory: its rounds are checkpointed there")
    if offsets not in OFFSETS:
        raise ShimError(f"offsets={offsets!r} must be one of {list(OFFSETS)}")
    params = getattr(sampler, "parameters", {}) or {}
    props = getattr(sampler, "properties", {}) or {}
    preset = getattr(sampler, "preset", None)
    if offsets == "flux" and ("flux_biases" not in params or (preset is not None and not getattr(preset, "mafm_pH", 1))):
        raise ShimError(f"{type(sampler).__name__} does not accept flux_biases; a flux shim needs a QPU or qasa's "
                        "virtual QPU (offsets='h', --offsets h, returns per-qubit h offsets instead)")
    if offsets == "flux" and ignores_flux_biases(sampler):
        raise ShimError(f"{type(getattr(sampler, 'sampler', sampler)).__name__} accepts flux_biases but ignores them "
                        "(a mock): a flux shim there would report biases it never applied; use a QPU or qasa's "
                        "virtual QPU, or offsets='h' (--offsets h)")
    if offsets == "flux" and "num_qubits" not in props:
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


# -- estimates ------------------------------------------------------------------------------------------
def _decide(ctx: _Shim, theta: np.ndarray, data_info: np.ndarray, frac_down: np.ndarray) -> pd.DataFrame:
    """Per qubit: the crossing, the setting that ends the shim (the crossing clipped to the range, or 0 with a
    reason when the qubit is saturated or does not respond), the one the next round explores (the crossing of
    the posterior, priors included, clipped: a saturated or weakly responding qubit is moved towards where it
    would respond, so that more reads can resolve it), status and reason."""
    beta, a, c = theta.T
    slope = 2 if ctx.flux else 0                               # the parameter that moves the crossing
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = -a / (c * ctx.k0) if ctx.flux else -a / beta
        data_cov = np.linalg.pinv(data_info)
        sd = np.sqrt(np.maximum(data_cov[:, slope, slope], 0.0))
        z = np.where(sd > 0, theta[:, slope] / sd, 0.0)
    lo, hi = ctx.limits
    unit = "Φ₀" if ctx.flux else "h"
    what = "flux-bias range" if ctx.flux else "h-offset range (h_range less the dither)"
    status = np.full(len(beta), "ok", dtype=object)
    reason = np.full(len(beta), "", dtype=object)
    nxt = np.clip(np.where(np.isfinite(crossing), crossing, 0.0), lo, hi)
    clipped = np.isfinite(crossing) & ((crossing < lo) | (crossing > hi))
    for i in np.flatnonzero(clipped):
        status[i] = "clipped"
        reason[i] = f"zero crossing at {crossing[i]:.3g} {unit} is outside the {what} [{lo:.3g}, {hi:.3g}] {unit}; clipped"
    saturated = (frac_down < SATURATED) | (frac_down > 1 - SATURATED)
    silent = ~saturated & ~(z >= MIN_RESPONSE_Z)
    applied = "flux bias" if ctx.flux else "h offset"
    for i in np.flatnonzero(saturated):
        status[i] = "saturated"
        reason[i] = (f"saturated: {100 * frac_down[i]:.1f} % of its reads returned −1 at every {applied} applied; "
                     f"{applied} left at 0")
    for i in np.flatnonzero(silent):
        status[i] = "no response"
        reason[i] = (f"does not respond to {'flux' if ctx.flux else 'h'} (or needs more reads): slope "
                     f"{theta[i, slope]:.3g} is {z[i]:.1f} standard errors from 0 (at least {MIN_RESPONSE_Z:g} needed); "
                     f"{applied} left at 0")
    return pd.DataFrame({"next": np.where(saturated | silent, 0.0, nxt), "explore": nxt, "crossing": crossing,
                         "slope_z": z, "status": status, "reason": reason})


def _delta(grad: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Delta-method sd of a function with gradient ``grad (Q, 3)`` of (β, a, c)."""
    return np.sqrt(np.maximum(np.einsum("qi,qij,qj->q", grad, cov, grad), 0.0))


def _residual(ctx: _Shim, theta: np.ndarray, cov: np.ndarray, setting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The estimated static residual (h) at ``setting`` (flux Φ₀ or h offset) and its sd from ``cov``."""
    beta, a, c = theta.T
    if ctx.flux:
        u = ctx.k0 * setting
        r = (a + c * u) / beta
        return r, _delta(np.stack([-r / beta, 1.0 / beta, u / beta], axis=1), cov)
    r = a / beta + setting
    return r, _delta(np.stack([-(a / beta) / beta, 1.0 / beta, np.zeros_like(beta)], axis=1), cov)


def _slow_sd(ctx: _Shim, k: np.ndarray) -> np.ndarray:
    """σ_slow per qubit (h): the sd of the published 1/f flux noise averaged over the run so far (its QPU access
    time), times |k| (module docstring, "Slow flux noise")."""
    fn = ctx.noise
    if not fn.amplitude:
        return np.zeros(len(k))
    props = getattr(ctx.sampler, "properties", {}) or {}
    anneal = float(ctx.protocol.annealing_time or props.get("default_annealing_time") or 20.0)
    compensated = bool(ctx.protocol.flux_drift_compensation)
    T = ctx.store.spent_qpu_us() * 1e-6 if ctx.store.exists else 0.0
    f_max = 1e6 / anneal
    var = fn.total_variance(f_max, compensated) - (fn.within_variance(T, f_max, compensated) if T > 0 else 0.0)
    return np.abs(k) * 1e-6 * math.sqrt(max(var, 0.0))


def _unresolved(ctx: _Shim, est: pd.DataFrame, bias: np.ndarray, var_sd: np.ndarray, k: np.ndarray,
                k_sd: Any, identified: np.ndarray) -> None:
    """Leave at 0 every responding qubit whose correction is not expected to reduce its squared bias (module
    docstring, "Unresolved"): status ``unresolved``, the setting that ends the shim 0 (``explore`` unchanged, so
    that more reads can resolve it)."""
    V = var_sd ** 2                                              # Var b̂: dispersion, slow flux noise included
    with np.errstate(divide="ignore", invalid="ignore"):
        vk = np.nan_to_num((np.asarray(k_sd) / k) ** 2, nan=0.0) if ctx.flux else np.zeros(len(bias))
    resp = (est["status"] == "ok").to_numpy() & np.isfinite(bias) & np.isfinite(V)
    tau2 = max(float(np.mean(bias[resp] ** 2 - V[resp])), 0.0) if resp.any() else 0.0   # the chip's spread of b
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(tau2 + V > 0, tau2 / (tau2 + V), 0.0)
    b2 = shrink ** 2 * bias ** 2 + shrink * V                    # E[b² | b̂] under the chip's N(0, τ²)
    keep = (b2 * (1 - vk) > V) & np.asarray(identified, bool)  # E b² without it > E residual² with it
    ok = (est["status"] == "ok").to_numpy() & ~keep
    applied = "flux bias" if ctx.flux else "h offset"
    est.loc[ok, "next"] = 0.0
    est.loc[ok, "status"] = "unresolved"
    est.loc[ok, "reason"] = [f"bias not resolved at this budget: b̂ = {b:.3g} ± {s:.2g} h (a correction is expected "
                             f"to reduce b² only when E[b² | b̂](1 − Var k̂/k̂²) > Var b̂, E under the chip's spread "
                             f"of b, τ = {math.sqrt(tau2):.2g} h, and with the between-call scatter identified"
                             f"{'' if i else ': it is not, too few calls'}); {applied} left at 0"
                             for b, s, i in zip(bias[ok], var_sd[ok], np.asarray(identified, bool)[ok])]


def _estimate(ctx: _Shim, plans: list[dict[str, Any]]) -> pd.DataFrame:
    """Fit every read so far (binomial, then quasi-likelihood with the pooled dispersion) and estimate, per
    qubit, the setting to apply next and the static residual there with its interval's parts."""
    X, F, D, N = _pooled(ctx, plans)
    U = ctx.k0 * F
    frac = D.sum(1) / np.maximum(N.sum(1), 1)
    theta, _, info = fit_shim(X, U, D, N, ctx.beta0)
    first = _decide(ctx, theta, info, frac)
    disp = _dispersion(X, U, D, N, theta, first["status"].isin(_OK).to_numpy(), 3 if ctx.flux else 2)
    phi = disp["phi"][:, None]
    theta, cov, info = fit_shim(X, U, D / phi, N / phi, ctx.beta0, start=theta)    # the quasi-likelihood
    est = _decide(ctx, theta, info, frac)
    beta, a, c = theta.T
    k = ctx.k0 * c / beta if ctx.flux else np.full(len(beta), np.nan)
    slow = _slow_sd(ctx, k if ctx.flux else np.full(len(beta), ctx.k0))
    bias_sd = _delta(np.stack([-(a / beta) / beta, 1.0 / beta, np.zeros_like(beta)], axis=1), cov)
    k_sd = _delta(np.stack([-k / beta, np.zeros_like(beta), ctx.k0 / beta], axis=1), cov) if ctx.flux else np.nan
    _unresolved(ctx, est, a / beta, np.sqrt(bias_sd ** 2 + slow ** 2), k, k_sd, disp["identified"])
    r, sd = _residual(ctx, theta, cov, est["next"].to_numpy())
    total = np.sqrt(sd ** 2 + slow ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):     # Welch–Satterthwaite: the slow term is known
        df = np.where(sd > 0, total ** 4 / (sd ** 4 / disp["df"]), math.inf)
    t = np.where(np.isfinite(df), stats.t.ppf(0.975, np.where(np.isfinite(df), df, 1.0)), Z95)
    est["residual"], est["residual_sd"], est["stat_sd"], est["t"] = r, total, sd, t
    est["residual_lo"], est["residual_hi"] = r - t * total, r + t * total
    est["sigma_call"], est["sigma_slow"], est["dispersion"], est["df"] = disp["sigma_call"], slow, disp["phi"], df
    est["bias"], est["bias_sd"] = a / beta, bias_sd
    est["conversion"], est["conversion_sd"] = k, k_sd
    est["beta"], est["beta_sd"] = beta, np.sqrt(np.maximum(cov[:, 0, 0], 0.0))
    est["reads"] = N.sum(1)
    if not disp["identified"].any():
        why = "sigma_call not identified: fewer than 4 calls with enough reads; the interval assumes no between-call noise"
        est["reason"] = [f"{r}; {why}" if r else why for r in est["reason"]]
    return est


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


def _round_magnitudes(seed: int, round_index: int, calls: int, n: int) -> np.ndarray:
    """The h dither's magnitude factor ``w ~ U(0.25, 1.75)`` of every (call, qubit), one per pair of calls,
    drawn from ``(seed, 8, round)`` only (module docstring, "DAC")."""
    rng = np.random.default_rng([seed, 8, round_index])
    return np.repeat(rng.uniform(_W[0], _W[1], size=((calls + 1) // 2, n)), 2, axis=0)[:calls]


def _round_fields(plan: Mapping[str, Any], seed: int, round_index: int, flux: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flips, programmed x, flux Φ)`` of a planned round, each ``(calls, qubits)`` (Φ = 0 for h offsets)."""
    C, Q = int(plan["calls"]), len(plan["qubits"])
    g, gp = _round_signs(seed, round_index, C, Q)
    dx = _round_magnitudes(seed, round_index, C, Q) * np.asarray(plan["delta_h"], float)
    if flux:
        return g, g * dx, np.asarray(plan["flux_bias"], float) + gp * np.asarray(plan["delta_flux"], float)
    return g, np.asarray(plan["h_offset"], float) + g * dx, np.zeros((C, Q))


def _round_calls(ctx: _Shim, plan: Mapping[str, Any], round_index: int, first: int) -> list[Call]:
    """The calls of a planned round, numbered on from ``first`` (one device clock for the whole shim); each
    carries its full-chip ``flux_biases`` list (flux shims) or its per-qubit field (the h offset)."""
    if list(map(int, plan["qubits"])) != ctx.qubits.tolist():
        raise DatasetError("the stored shim round plan is for other qubits than the dataset's protocol")
    g, x, flux = _round_fields(plan, ctx.seed, round_index, ctx.flux)
    out = []
    for c in range(int(plan["calls"])):
        params = None
        if ctx.flux:
            chip = np.zeros(ctx.length)
            chip[ctx.qubits] = flux[c]
            params = {"flux_biases": chip.tolist()}
        # the call's nominal field is g·x: the runner programs flips × nominal = x
        out.append(Call(round_call_id(round_name("s", round_index), c), first + c, -1, g[c] * x[c], 0, int(plan["reads_per_call"]),
                        g[c], params=params))
    return out


def _pooled(ctx: _Shim, plans: list[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """Every collected read, per qubit and call: ``(x, Φ, returned −1, reads)``, each ``(Q, calls)``."""
    counts = ctx.store.load().counts
    pos = {int(q): i for i, q in enumerate(ctx.qubits)}
    blocks = []
    for r, plan in enumerate(plans, start=1):
        _, x, flux = _round_fields(plan, ctx.seed, r, ctx.flux)
        for c in range(int(plan["calls"])):
            blocks.append((round_call_id(round_name("s", r), c), x[c], flux[c]))
    done = {cid: grp for cid, grp in counts.groupby("call_id", sort=False)} if len(counts) else {}
    Q, C = len(ctx.qubits), len(blocks)
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


def _plan(ctx: _Shim, est: pd.DataFrame | None, calls: int, R: int) -> dict[str, Any]:
    """A round: every qubit at its crossing estimate, with dither amplitudes from its β̂ and ĉ."""
    n = len(ctx.qubits)
    if est is None:
        setting, beta, slope = np.zeros(n), np.full(n, ctx.beta0), np.full(n, ctx.beta0)
    else:
        setting = est["explore"].to_numpy()
        # dither amplitudes from the estimates, kept within a factor 3 of the prior's (a silent qubit's β̂ ≈ 0)
        beta = np.clip(est["beta"].to_numpy(), ctx.beta0 / 3, 3 * ctx.beta0)
        k = est["conversion"].to_numpy() if ctx.flux else np.full(n, ctx.k0)
        slope = np.clip(np.abs(est["beta"].to_numpy() * k / ctx.k0), ctx.beta0 / 3, 3 * ctx.beta0)
    delta_flux = ctx.dither / (slope * abs(ctx.k0)) if ctx.flux else np.zeros(n)
    return {"calls": int(calls), "reads_per_call": int(R), "qubits": [int(q) for q in ctx.qubits],
            ctx.setting: [float(v) for v in setting], "delta_h": [float(v) for v in ctx.dither / beta],
            "delta_flux": [float(v) for v in delta_flux], "created": utcnow()}


def _next_round(spent: int, budget: int, R: int, need: float | None) -> tuple[int, int]:
    """``(calls, reads per call)`` of the next round: one pair first, then double the reads so far, within the
    read budget and ``need`` (the reads in all that the target predicts); ``(0, 0)`` when the budget is spent."""
    left = budget - spent
    if left < 2:
        return 0, 0
    want = 2 * R if spent == 0 else spent
    if need is not None and spent > 0 and math.isfinite(need):
        want = max(2, min(want, math.ceil(need) - spent))
    want = min(want, left)
    if want >= 2 * R:
        return 2 * (want // (2 * R)), R
    return 2, max(1, want // 2)


def _progress_state(est: pd.DataFrame, spent: int, target: float | None) -> tuple[float, float | None]:
    """The largest residual half-width of the responding qubits and the reads in all the target predicts
    (the statistical part shrinks as 1/reads, the slow flux noise does not; ``inf`` when the target is
    below what the slow flux noise allows)."""
    ok = est["status"].isin(_RESPONDING).to_numpy()
    if not ok.any():
        return math.inf, None
    t, stat, slow = (est.loc[ok, c].to_numpy() for c in ("t", "stat_sd", "sigma_slow"))
    half = float((t * est.loc[ok, "residual_sd"].to_numpy()).max())
    if target is None:
        return half, None
    room = (target / t) ** 2 - slow ** 2
    if np.any(room <= 0):
        return half, math.inf
    return half, float(1.05 * spent * np.max(stat ** 2 / room))


# -- the shim -------------------------------------------------------------------------------------------
def shim(sampler: dimod.Sampler, out: str | Path, *, reads_per_qubit: int = DEFAULT_READS_PER_QUBIT,
         qubits: list[int] | None = None, target: float | None = None, max_qpu_seconds: float | None = None,
         seed: int | None = None, reads_per_call: int | None = None, dither: float = 0.1, offsets: str = "flux",
         flux_drift_compensation: bool = True, annealing_time: float | None = None,
         conversion: float | None = None, max_rounds: int = 40,
         progress: Callable[[int, int], None] | None = None,
         on_round: Callable[[int, dict[str, Any]], None] | None = None) -> ShimResult:
    """Find the flux biases (or h offsets) that cancel each qubit's static bias (module docstring).

    Args:
        sampler: a sampler that accepts ``flux_biases`` (a ``DWaveSampler``, qasa's virtual QPU); any sampler
            with ``offsets="h"``.
        out: dataset directory (rounds are checkpointed there; running again resumes).
        reads_per_qubit: read budget: every qubit takes part in at most this many reads in all.
        qubits: qubits to shim (default every active qubit); the others keep flux bias 0.
        target: stop once every responding qubit's residual 95 % half-width is within this (units of h).
        max_qpu_seconds: QPU-time budget of the dataset.
        seed: seed of the gauges and dithers (drawn when ``None``; stored, so a resume reuses it).
        reads_per_call: reads per call (default ``min(1024, num_reads_range max)``).
        dither: ρ of the antithetic h and flux dithers (tanh-argument units; 0 for none: β and k then
            come from the priors, and no qubit can be told not to respond).
        offsets: ``"flux"`` (flux biases) or ``"h"`` (per-qubit h offsets, for a sampler without ``flux_biases``).
        flux_drift_compensation: D-Wave's hourly drift correction during the shim (on: the shim then
            applies on top of it, as most runs use it).
        annealing_time: µs (default the solver's).
        conversion: k₀, the prior's flux→field conversion (h per Φ₀; default :func:`published_conversion`).
        max_rounds: most rounds.
        progress: ``progress(done, total)`` within each round's calls.
        on_round: ``on_round(round, info)`` after each fit.

    Returns:
        :class:`ShimResult`; also ``OUT/flux_biases.json`` (or ``OUT/h_offsets.json``), ``OUT/shim/table.csv``
        and ``OUT/shim/report.html``.

    Raises:
        ShimError: bad options, or a flux shim on a sampler without ``flux_biases`` (before anything is written
            or spent).
        DatasetError: ``out`` holds a dataset of another kind or other shim settings.
        BudgetError: the first round alone is over the QPU-time budget (nothing was submitted).
    """
    ctx = _setup(sampler, out, offsets=offsets, reads_per_qubit=reads_per_qubit, target=target, dither=dither,
                 reads_per_call=reads_per_call, max_qpu_seconds=max_qpu_seconds, qubits=qubits, seed=seed,
                 annealing_time=annealing_time, flux_drift_compensation=flux_drift_compensation,
                 conversion=conversion)
    plans, reason = _run_rounds(ctx, reads_per_qubit, target, max_qpu_seconds, max_rounds, progress, on_round)
    if not ctx.store.exists:
        raise ShimError("no reads were collected (reads_per_qubit or the budget allow no call)")
    return _finish(ctx, plans, reason)


def _run_rounds(ctx: _Shim, budget: int, target: float | None, max_qpu_seconds: float | None, max_rounds: int,
                progress: Callable[[int, int], None] | None,
                on_round: Callable[[int, dict[str, Any]], None] | None) -> tuple[list[dict[str, Any]], str]:
    """Plan (or reload), checkpoint and run round after round until a stopping rule holds; ``(plans, reason)``."""
    from qasa.runner import run

    plans: list[dict[str, Any]] = []
    while True:
        rnd = len(plans) + 1
        path = ctx.out / _DIR / f"round-{rnd:03d}.json"
        if path.is_file():
            plan = json.loads(path.read_text())
        else:
            plan, reason = _next_plan(ctx, plans, budget, target, max_qpu_seconds, max_rounds, on_round)
            if plan is None:
                return plans, reason
            if ctx.store.exists:
                _save_plan(ctx, path, plan)
        first = sum(int(p["calls"]) for p in plans)
        try:
            run(ctx.protocol, ctx.backend, ctx.out, progress=progress, max_qpu_seconds=max_qpu_seconds,
                calls=_round_calls(ctx, plan, rnd, first))
        except BudgetError:
            if not ctx.store.exists:
                raise
            plans.append(plan)
            return plans, "budget"
        if not path.is_file():                      # the first round: the store exists only now
            _save_plan(ctx, path, plan, settings=True)
        plans.append(plan)


def _save_plan(ctx: _Shim, path: Path, plan: Mapping[str, Any], settings: bool = False) -> None:
    """Write a round's plan atomically (and, after the first round's calls, the shim's settings: a shim killed
    before that point is recognized by its call ids)."""
    with ctx.store.writing():
        path.parent.mkdir(exist_ok=True)
        atomic_write_json(path, plan)
        if settings:
            meta = ctx.store.metadata()
            ctx.store.update_metadata(shim={**(meta.get("shim") or {}), "settings": ctx.settings})


def _next_plan(ctx: _Shim, plans: list[dict[str, Any]], budget: int, target: float | None,
               max_qpu_seconds: float | None, max_rounds: int,
               on_round: Callable[[int, dict[str, Any]], None] | None) -> tuple[dict[str, Any] | None, str]:
    """Fit the data so far and plan the next round, or ``(None, reason)`` when the shim stops."""
    spent = sum(int(p["calls"]) * int(p["reads_per_call"]) for p in plans)
    est, half, need = None, math.inf, None
    if plans:
        est = _estimate(ctx, plans)
        half, need = _progress_state(est, spent, target)
        if on_round is not None:
            on_round(len(plans), {"reads_per_qubit": spent, "half_width_max": half,
                                  "qpu_access_time_s": ctx.store.spent_qpu_us() / 1e6})
    if target is not None and half <= target:
        return None, "target"
    if len(plans) >= max_rounds:
        return None, "max_rounds"
    C, R = _next_round(spent, budget, ctx.R, need)
    if C == 0:
        return None, "reads"
    if max_qpu_seconds is not None:
        per = ctx.backend.estimate_call(ctx.protocol, len(ctx.qubits), R)
        used = ctx.store.spent_qpu_us() if ctx.store.exists else 0.0
        if per and ctx.store.exists and used + 2 * per > max_qpu_seconds * 1e6:
            return None, "budget"
        if per:
            C = max(2, min(C, 2 * int((max_qpu_seconds * 1e6 - used) // (2 * per))))
    return _plan(ctx, est, C, R), ""


_COLUMNS = ("residual", "residual_lo", "residual_hi", "residual_sd", "sigma_call", "sigma_slow", "dispersion", "df",
            "bias", "bias_sd", "conversion", "conversion_sd", "beta", "beta_sd")


def _finish(ctx: _Shim, plans: list[dict[str, Any]], reason: str) -> ShimResult:
    """The final fit, the result files (list, table, report page) and the metadata record."""
    from qasa.report import render_shim
    from qasa.samplers import solver_name

    est = _estimate(ctx, plans)
    setting = est["next"].to_numpy()
    table = pd.DataFrame({"qubit": ctx.qubits, ctx.setting: setting,
                          **{c: est[c].to_numpy(float) for c in _COLUMNS},
                          "reads": est["reads"].to_numpy().astype(np.int64),
                          "status": est["status"].to_numpy(), "reason": est["reason"].to_numpy()})
    chip = np.zeros(ctx.length)
    chip[ctx.qubits] = setting
    values = [float(v) for v in chip]
    reads = int(table["reads"].max()) if len(table) else 0
    result = ShimResult(values if ctx.flux else None, table, reads, reason or "reads", len(plans), ctx.store.path,
                        ctx.settings, None if ctx.flux else values, ctx.mode)
    name = "flux_biases" if ctx.flux else "h_offsets"
    doc = {name: values, "solver": solver_name(ctx.sampler), "num_qubits": ctx.length,
           "qubits": [int(q) for q in ctx.qubits], "reads_per_qubit": reads, "stopped": result.stopped,
           "rounds": result.rounds, "flux_drift_compensation": ctx.protocol.flux_drift_compensation,
           "annealing_time": ctx.protocol.annealing_time, "settings": ctx.settings, "created": utcnow(),
           "not_shimmed": {str(int(q)): r for q, r, s in zip(table["qubit"], table["reason"], table["status"])
                           if s in ("saturated", "no response", "clipped")},
           "summary": {k: v for k, v in result.summary().items() if k not in ("path", name)}}
    if not ctx.flux:
        doc["usage"] = "add h_offsets[q] to the h of qubit q (units of h); subject to the h DAC's rounding"
    store = ctx.store
    with store.writing():
        (store.path / _DIR).mkdir(exist_ok=True)
        atomic_write_bytes(store.path / _DIR / "table.csv", table.to_csv(index=False).encode())
        render_shim(table, store.metadata().get("device") or {}, result.summary(), store.path / _DIR)
        atomic_write_json(store.path / f"{name}.json", doc)
        meta = store.metadata()
        store.update_metadata(shim={**(meta.get("shim") or {}), "settings": ctx.settings,
                                    "result": {k: v for k, v in doc.items() if k not in (name, "not_shimmed")}})
    return result


def load_flux_biases(path: str | Path, num_qubits: int | None = None, sampler: Any = None) -> list[float]:
    """Flux biases from a ``flux_biases.json`` written by :func:`shim` (or a plain JSON list).

    With ``sampler``: also refused on a sampler that ignores or does not accept flux biases and outside its
    flux-bias range (:func:`qasa.samplers.check_flux_biases`).

    Raises:
        ShimError: unreadable file, booleans, strings or non-finite values, a length other than ``num_qubits``,
            or (with ``sampler``) values it cannot apply — naming the first offending qubit and value.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ShimError(f"cannot read flux biases from {path}: {exc}") from None
    if isinstance(data, dict) and "flux_biases" not in data and "h_offsets" in data:
        raise ShimError(f"{path} holds h offsets (a shim with --offsets h), not flux biases: add them to h instead")
    values = data.get("flux_biases") if isinstance(data, dict) else data
    if isinstance(values, list):
        for q, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ShimError(f"{path}: qubit {q} has flux bias {v!r}, not a number (Φ₀)")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ShimError(f"{path}: flux_biases must be a list of numbers") from None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise ShimError(f"{path}: flux_biases must be a flat list of finite numbers (Φ₀)")
    if num_qubits is not None and len(arr) != num_qubits:
        raise ShimError(f"{path} has {len(arr)} flux biases; this solver has {num_qubits} qubits")
    if sampler is not None:
        try:
            check_flux_biases([float(v) for v in arr], sampler, str(path))
        except QasaError as exc:
            raise ShimError(str(exc)) from None
    return [float(v) for v in arr]

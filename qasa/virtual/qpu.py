r"""The virtual QPU: a D-Wave-like sampler for single-qubit experiments with known per-qubit truth.

:class:`VirtualQPU` subclasses :class:`dwave.system.testing.MockDWaveSampler` (as D-Wave's own
shimming mock does): it has a QPU's ``properties`` and ``parameters`` for a Chimera, Pegasus or
Zephyr device with absent qubits, rejects unknown keyword arguments, checks ranges like the QPU's
server would, and returns ``sampleset.info['timing']`` following D-Wave's timing model. Unlike the
mock it is thermal and physical, and its hidden truth is public (:attr:`VirtualQPU.truth`), so an
assessment can be checked against it.

Hidden truth per qubit (seeded, drawn on the device graph, see :func:`device_field`):

- ``rate`` — c_q of the relaxation rate Γ = c_q A(s)² (log-normal around the preset's c), which
  sets the qubit's freeze-out point s* for any anneal (:func:`qasa.virtual.physics.freezeout_point`);
- ``beta`` — B(s*) / (2 k_B T) × ``b_scale`` (the preset's published temperature). ``b_scale``
  is calibrated so that the device reproduces the published *average single-qubit T_eff*: the
  Gibbs temperature of all qubits' expected responses pooled over h ∈ [−0.164, 0.164] (the h range
  of ``dwave.system.temperatures.fast_effective_temperature``) equals the published value. For
  the Advantage_system4.1 preset the correction is a few percent, well within the 30% that
  D-Wave allows for its tables;
- ``b`` — static bias (units of h); ``eta`` — field-noise amplitude (the ±η mixture of the QASA
  model, or the σ of Gaussian noise); ``gamma`` — saturation; ``readout_error`` — ε.

Physics levels (``physics=``):

``"freezeout"`` (default)
    Each read is drawn from the QASA model with the qubit's parameters at its freeze-out point for
    the requested anneal (``annealing_time``, ``anneal_schedule``): P(−1) = ε + (1 − 2ε)(1 + m)/2,
    ``m = ½[f(β(gh + b' + η), βγgh) + f(β(gh + b' − η), βγgh)]`` with ``g`` the h-gain at the
    qubit's freeze-out time and ``b' = b + drift``.
``"dynamics"``
    The single-qubit open-system Bloch equation is integrated through the schedule with the
    published A(s), B(s) (:func:`qasa.virtual.physics.evolve`), relaxing at Γ = c_q A(s)² toward the
    instantaneous Gibbs state, for the two field-noise values h + b' ± η; the h-gain schedule is
    low-pass filtered at the preset's control-line bandwidth. This level shows the h-gain quench
    signatures of Morrell et al. (2022): with ``rate_scale=0`` (closed system) P(−1) oscillates with
    the quench point, with the bath the oscillation is damped.

Noise beyond shots (docs/DESIGN.md §7; the closed forms and D-Wave's sources are in
:mod:`qasa.virtual.noise`). A real QPU programs the chip anew for every call, and each call's reads
share errors that change between calls. On by default, with the preset's published figures:

- per-programming field error (ICE): each call adds N(0, σ_ice²) per qubit, σ_ice = 0.025 → 0.010
  for s* = 0.28 → 0.75 (D-Wave, "Errors and Error Correction"; 0.0144 at Advantage_system4.1's
  s* = 0.612); ``ice_scale`` (0 turns it off);
- 1/f flux noise: √S_Φ(1 Hz) = 2 µΦ₀/√Hz (``flux_noise``), α = 0.9 (``flux_noise_alpha``, published
  0.75–1), flat below 1 mHz when the call asks for ``flux_drift_compensation=True``, converted to h
  with D-Wave's ``fluxbias_to_h`` at the qubit's freeze-out point with the preset's published M_AFM
  (presets without one have no flux noise). The device has a clock: a call's window starts at its
  position in the run times its QPU access time (D-Wave's timing model, :meth:`VirtualQPU._timing`)
  and lasts that long; the noise's mean over the window is the call's offset, its expected variance
  about the mean (up to 1/annealing time) is within-call Gaussian field noise, independent per read,
  on top of the QASA model's ±η (freeze-out level only);
- h-DAC quantization: a deterministic error per qubit and programmed value, up to ±0.008 at h = 0 and
  ±0.0005 at h = 2 (``dac_q0``, ``dac_q2``; the qubit's grid phase is ``truth['dac_phase']``);
- h scale: the qubit realizes g_q·h, g_q ~ N(1, 0.01²) (``gain_sd``; ``truth['h_scale']``);
- the pass walk of qasa ≤ 9f8ad1f (kept, ``drift_sd``): without drift compensation a qubit's bias
  carries a seeded Gaussian random walk over the passes of a run (pass G of the call id sees the
  walk after G + 1 steps).

``ideal=True`` turns the first four off (a source named explicitly, e.g. ``ideal=True, dac_q0=0.008``,
stays on): the device of qasa ≤ 9f8ad1f, whose counts for the same labelled call it reproduces bit for bit.

Calibration with the noise: ``b_scale`` makes the *pooled* small-h slope of the device equal the
published T_eff with every source averaged in (:meth:`VirtualQPU.pooled_teff`: the slope
E[g_q (1 − 2ε) β sech²(β(b ± η + δ))] with δ Gaussian of the variance of the per-programming error,
the whole 1/f noise up to 1/(20 µs) with drift compensation, D-Wave's defaults, and the DAC error at
h ≈ 0, q₀²/3), so ``dwave.system.temperatures.fast_effective_temperature`` measures 0.198 on the
Advantage_system4.1 preset with the noise on (its β is 1.2 % larger than the ideal device's).

Randomness and identity of a call. A labelled call draws its reads (and problem id) from a generator
seeded by ``(seed, SHA-256 of the label)``, as in qasa ≤ 9f8ad1f. Its noise draws depend on the call's
identity parsed from the label (:class:`CallKey`): the call id ``gGGGG-hHHHHH``, the run seed
``seed N`` and the position ``call N`` — the runner labels calls ``qasa <call id> seed <protocol
seed> call <index>`` (the Leap path's ``qasa <call id> seed <protocol seed>`` gives the same
per-programming errors; without ``call N`` the position is G·81 + H, qasa's default grid). So every
draw of a call is a function of (device seed, run seed, call) only: SIGKILL and resume give the counts
of an uninterrupted run, and two run seeds give independent reads. An unlabelled call has no identity
and draws from the instance's own stream (numbered calls).

Other QPU parameters: ``flux_biases`` (Φ₀, one per qubit of the chip) shift each qubit's field by
D-Wave's published conversion at its freeze-out point (:meth:`VirtualQPU._flux_field`; refused on
presets without a published M_AFM), times a per-qubit factor uniform in 1 ± ``flux_gain_spread``
(default 0; :attr:`VirtualQPU.flux_gain`, :meth:`VirtualQPU.flux_field`); non-zero ``anneal_offsets`` and ``fast_anneal=True`` are refused
(not emulated), never accepted without effect.

Estimand: :meth:`VirtualQPU.estimand` gives the parameters a fit of a protocol's data converges to,
computed from the very draws the run's calls get: b plus the run-average drift, β, γ, η
the KL projection of the response without the offsets' spread (readout error folded into γ,
within-call noise into η; :mod:`qasa.virtual.estimand`), and ``sigma_call``, the spread of the run's
per-call offsets (h units) that a random-effects fit estimates; ``pooled=True`` gives the target of a
fit that pools reads across calls instead. :meth:`VirtualQPU.qasa_truth` records the physical truth
(with the expected ``sigma_call``) and the estimand in a dataset.

Preset scales: temperatures, s* and T_eff are D-Wave's published figures (docs/DESIGN.md §2). The spreads
of the per-qubit parameters are illustrative choices, not published values: ``eta_mean`` = 0.1/β
follows the ratio of low-frequency flux noise (~10 µΦ₀) to the thermal transition width (~100 µΦ₀)
from D-Wave's calibration notes; the readout error is uniform below the published bound 0.001.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

import dimod
import numpy as np
import pandas as pd
from dwave.system.testing import MockDWaveSampler

from qasa.topology import coupler_classes, positions, topology_graph
from qasa.virtual import noise as qnoise
from qasa.virtual import physics as qphys
from qasa.models import MODELS
from qasa.protocol import parse_label

__all__ = ["Preset", "PRESETS", "VirtualQPU", "device_field", "STRUCTURES", "check_anneal_schedule",
           "check_h_gain_schedule", "CallKey", "IDEAL"]

STRUCTURES = ("independent", "internal", "external", "odd", "smooth")
_PARAMS = ("rate", "beta", "b", "gamma", "eta", "readout_error")


@dataclass(frozen=True)
class Preset:
    """Configuration of a virtual device (see the module docstring for which values are published)."""

    name: str
    topology_type: str
    topology_shape: tuple[int, ...]
    schedule: str
    temperature_mK: float
    freezeout_s: float
    teff: float | None
    h_range: tuple[float, float]
    h_filter_MHz: float
    reference_annealing_time: float = 20.0
    broken_fraction: float = 0.0025
    rate_sd: float = 0.3
    bias_sd: float = 0.01
    eta_mean: float | None = None       # default 0.1 / β
    gamma_mean: float = 0.1
    readout_error_max: float = 0.001
    drift_sd: float = 0.001             # per pass over the h grid (see the module docstring)
    mafm_pH: float | None = None        # M_AFM for the flux-bias conversion (None: flux_biases refused)
    # noise beyond shots (docs/DESIGN.md §7, qasa.virtual.noise); 0 turns a source off
    ice_scale: float = 1.0              # × D-Wave's per-programming σ(s*) (0.025 at s = 0.28 → 0.010 at 0.75)
    flux_noise: float = 2.0             # √S_Φ(1 Hz), µΦ₀/√Hz (applied only with a published M_AFM)
    flux_noise_alpha: float = 0.9       # S_Φ ∝ 1/f^α, published range 0.75–1
    dac_q0: float = 0.008               # largest h-DAC quantization error at h = 0
    dac_q2: float = 0.0005              # ... and at h = 2
    gain_sd: float = 0.01               # per-qubit h-scale spread (relative)
    flux_gain_spread: float = 0.0       # per-qubit flux→field conversion factor, uniform in 1 ± this (illustrative)

    @property
    def rate(self) -> float:
        """The calibrated c of Γ = c A(s)² (1/(µs·GHz²))."""
        return qphys.calibrate_rate(qphys.load_schedule(self.schedule), self.freezeout_s,
                                      self.reference_annealing_time)



PRESETS: dict[str, Preset] = {
    # D-Wave per-QPU documentation (docs/DESIGN.md §2); A/B from the Advantage_system6.2 table
    # M_AFM 1.647 pH: dwave.system.temperatures' published Advantage_system4.1 value
    "advantage4.1": Preset("Advantage_system4.1-like", "pegasus", (16,), "Advantage_system6.2", 15.4, 0.612, 0.198,
                           (-4.0, 4.0), 3.0, mafm_pH=1.647),
    "advantage6.4": Preset("Advantage_system6.4-like", "pegasus", (16,), "Advantage_system6.2", 16.0, 0.616, 0.221,
                           (-4.0, 4.0), 3.0),
    # Advantage2_system1: A/B from the Advantage2_research1.4 table
    # M_AFM 2.113 pH: the Advantage2 value of dwave.system.temperatures.Ip_in_units_of_B's example
    "advantage2": Preset("Advantage2_system1-like", "zephyr", (12, 4), "Advantage2_research1.4", 20.0, 0.684, 0.112,
                         (-4.0, 4.0), 30.0, mafm_pH=2.113),
    # 2000Q-like: the DW_2000Q_6 table and h_range [-2, 2] are published; the temperature and s*
    # here are illustrative (no published single-qubit figures in our sources), T_eff not calibrated
    "2000q": Preset("DW_2000Q-like", "chimera", (16, 16, 4), "DW_2000Q_6", 13.0, 0.60, None, (-2.0, 2.0), 3.0),
}


def device_field(structure: str, nodes: list[int], edges: list[tuple[int, int]], classes: list[str],
                 positions: Mapping[int, np.ndarray], rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A unit-variance random field on the qubits with the given spatial structure.

    - ``independent``: i.i.d. N(0, 1);
    - ``internal`` / ``external`` / ``odd``: ``z_i + ρ Σ_{j ~ i} z_j`` over couplers of that class
      (ρ = ``strength``), so qubits joined by such a coupler are positively correlated;
    - ``smooth``: a sum of random low-frequency plane waves over the chip layout.

    The result is standardized (mean 0, variance 1 over the device).
    """
    n = len(nodes)
    z = rng.standard_normal(n)
    if structure == "independent":
        field = z
    elif structure in ("internal", "external", "odd"):
        index = {q: i for i, q in enumerate(nodes)}
        field = z.copy()
        sel = [(index[u], index[v]) for (u, v), c in zip(edges, classes) if c == structure]
        if not sel:
            raise ValueError(f"this topology has no {structure!r} couplers")
        a, b = np.array(sel).T
        np.add.at(field, a, strength * z[b])
        np.add.at(field, b, strength * z[a])
    elif structure == "smooth":
        xy = np.array([positions[q] for q in nodes])
        xy = (xy - xy.min(0)) / np.maximum(np.ptp(xy, 0), 1e-12)
        field = np.zeros(n)
        for _ in range(6):
            k = rng.normal(0, 2.0, 2)
            field += np.cos(2 * np.pi * xy @ k + rng.uniform(0, 2 * np.pi))
        field += 0.2 * z   # a little independent variation on top
    else:
        raise ValueError(f"unknown structure {structure!r}; choose one of {list(STRUCTURES)}")
    return (field - field.mean()) / (field.std() or 1.0)


class _MemberList(list):
    """A list with O(1) membership tests (a frozen copy of its items as a set); never mutated."""

    def __init__(self, items: Any) -> None:
        super().__init__(items)
        self._members = frozenset(self)

    def __contains__(self, item: object) -> bool:
        return item in self._members


class VirtualQPU(MockDWaveSampler):
    """A physics-aware virtual D-Wave QPU with public per-qubit truth (see the module docstring).

    Args:
        preset: a key of :data:`PRESETS` or a :class:`Preset`.
        topology_type, topology_shape: override the preset's graph (e.g. a small Pegasus P4).
        seed: seed of the hidden truth, the absent qubits and every call.
        broken_nodes: absent qubits; ``None`` draws ``broken_fraction`` of them, ``[]`` for none.
        structure: spatial structure of the per-qubit variation, one of :data:`STRUCTURES`, or a
            dict ``{parameter: structure}`` (parameters: rate, b, gamma, eta, readout_error).
        structure_strength: ρ of :func:`device_field`.
        physics: ``"freezeout"`` or ``"dynamics"``.
        noise: ``"telegraph"`` (the ±η mixture of the QASA model) or ``"gaussian"`` (σ = η).
        dynamics_steps: time steps of the dynamics level over the part of the anneal integrated.
        rate_scale: multiplies every qubit's relaxation rate in the dynamics level (0: closed system).
        ideal: no noise beyond shots (:data:`IDEAL`; see the module docstring).
        **overrides: fields of the preset to change (e.g. ``bias_sd=0``, ``drift_sd=0``).
    """

    def __init__(self, preset: str | Preset = "advantage4.1", *, topology_type: str | None = None,
                 topology_shape: list[int] | None = None, seed: int | None = None,
                 broken_nodes: list[int] | None = None, structure: str | dict[str, str] = "independent",
                 structure_strength: float = 1.0, physics: str = "freezeout", noise: str = "telegraph",
                 dynamics_steps: int = 400, rate_scale: float = 1.0, ideal: bool = False, **overrides: Any) -> None:
        if ideal:          # every noise source beyond shots off (docs/DESIGN.md §7): the device of qasa ≤ 9f8ad1f
            overrides = {**IDEAL, **overrides}          # a source named explicitly stays on
        preset, graph = _resolve_preset(preset, topology_type, topology_shape, overrides)
        if physics not in ("freezeout", "dynamics"):
            raise ValueError(f"physics={physics!r}: choose 'freezeout' or 'dynamics'")
        if noise not in ("telegraph", "gaussian"):
            raise ValueError(f"noise={noise!r}: choose 'telegraph' or 'gaussian'")
        self.preset = preset
        self.seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
        self.physics = physics
        self.noise = noise
        self.dynamics_steps = int(dynamics_steps)
        self.rate_scale = float(rate_scale)
        self.ideal = bool(ideal)
        self._structure = structure
        self._structure_strength = float(structure_strength)
        if broken_nodes is None:
            all_nodes = sorted(graph.nodes)
            k = int(round(preset.broken_fraction * len(all_nodes)))
            rng = np.random.default_rng([self.seed, 0])
            broken_nodes = sorted(rng.choice(all_nodes, size=k, replace=False).tolist()) if k else []
        self.__dict__["_building"] = True         # see the nodelist property
        super().__init__(topology_type=preset.topology_type, topology_shape=list(preset.topology_shape),
                         broken_nodes=set(broken_nodes), parameter_warnings=False)   # a set: the mock tests every coupler against it
        del self.__dict__["_building"]
        self.nodelist = list(self.nodelist)
        self._schedule = qphys.load_schedule(preset.schedule)
        self.properties.update(_qpu_properties(preset))
        self.properties.pop("fast_anneal_time_range", None)      # fast_anneal is refused (not emulated)
        self._truth = self._draw_truth(structure, self._structure_strength)
        n_active = len(self.nodelist)            # static noise of the chip: own streams, the truth's draws unchanged
        self._truth["h_scale"] = 1.0 + preset.gain_sd * np.random.default_rng([self.seed, 5, 0]).standard_normal(n_active)
        self._truth["dac_phase"] = np.random.default_rng([self.seed, 5, 1]).random(n_active)
        self._col = {c: self._truth[c].to_numpy() for c in self._truth.columns}
        self._freeze_cache: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.b_scale = 1.0
        if preset.teff is not None:                               # calibrate to the published T_eff
            self.b_scale = self._teff_scale()
            self._truth["beta"] *= self.b_scale
        self._index = {q: i for i, q in enumerate(self.nodelist)}
        self._rows_cache: tuple[list, np.ndarray, np.ndarray] | None = None
        self._unlabelled_calls = 0
        self._walks: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._flux_runs: dict[tuple[int, ...], tuple[np.ndarray, dict[bool, np.ndarray], list]] = {}
        self._freeze_cache = {}
        self._scale_cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self._gain_cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self._col = {c: self._truth[c].to_numpy() for c in self._truth.columns}   # hot-path views
        # each qubit's flux→field conversion relative to the published one (its own stream: the truth is unchanged)
        self.flux_gain = 1.0 + preset.flux_gain_spread * np.random.default_rng([self.seed, 4]).uniform(
            -1.0, 1.0, len(self.nodelist))

    @property
    def nodelist(self) -> list[int]:  # type: ignore[override]
        """The active qubits (sorted), as MockDWaveSampler sets them."""
        return self.__dict__.get("_nodelist")

    @nodelist.setter
    def nodelist(self, value: list[int]) -> None:
        # while MockDWaveSampler.__init__ runs, membership tests against the list are O(1): it tests
        # every qubit index against it (O(n²) on a plain list, 0.1 s for an Advantage-size device)
        self.__dict__["_nodelist"] = _MemberList(value) if self.__dict__.get("_building") else value

    def _draw_truth(self, structure: str | dict[str, str], strength: float) -> pd.DataFrame:
        """The hidden per-qubit parameters (β before the T_eff calibration; see the module docstring)."""
        from scipy.stats import norm

        preset = self.preset
        structures = structure if isinstance(structure, dict) else {p: structure for p in _PARAMS}
        bad = set(structures) - set(_PARAMS)
        if bad:
            raise ValueError(f"structure given for unknown parameter(s) {sorted(bad)}; allowed {list(_PARAMS)}")
        nodes = list(self.nodelist)
        edges = [tuple(e) for e in self.edgelist]
        ttype, shape = preset.topology_type, list(preset.topology_shape)
        classes = coupler_classes(ttype, shape, edges)
        pos = positions({"topology_type": ttype, "topology_shape": shape}) if "smooth" in structures.values() else {}
        fields = {p: device_field(structures.get(p, "independent"), nodes, edges, classes, pos,
                                  np.random.default_rng([self.seed, 1, i]), strength)
                  for i, p in enumerate(_PARAMS) if p != "beta"}
        rate = preset.rate * np.exp(preset.rate_sd * fields["rate"])
        s_star = qphys.freezeout_point(self._schedule, rate, preset.reference_annealing_time)
        beta = qphys.freezeout_beta(self._schedule.B_of(s_star), preset.temperature_mK)
        # η's scale: 0.1/β with β the mean that alone would give the published T_eff
        mean_beta = 1.0 / preset.teff if preset.teff is not None else float(np.mean(beta))
        eta_mean = preset.eta_mean if preset.eta_mean is not None else 0.1 / mean_beta
        return pd.DataFrame({
            "qubit": np.array(nodes, dtype=np.int64),
            "rate": rate,
            "freezeout_s": s_star,
            "beta": beta,
            "b": preset.bias_sd * fields["b"],
            "gamma": preset.gamma_mean * np.exp(0.3 * fields["gamma"]),
            "eta": eta_mean * np.exp(0.3 * fields["eta"]),
            "readout_error": preset.readout_error_max * norm.cdf(fields["readout_error"]),
        }).set_index("qubit")

    def qasa_settings(self) -> dict[str, Any]:
        """Every setting that changes this device's data, as plain JSON (recorded by the runner)."""
        return {"seed": self.seed, "physics": self.physics, "noise": self.noise, "ideal": self.ideal,
                "structure": self._structure, "structure_strength": self._structure_strength,
                "dynamics_steps": self.dynamics_steps, "rate_scale": self.rate_scale,
                "preset_config": dataclasses.asdict(self.preset)}

    def __repr__(self) -> str:
        from qasa.display import sampler_repr

        return sampler_repr(self)

    def _repr_html_(self) -> str:
        from qasa.display import sampler_html

        return sampler_html(self, {"T_eff (published)": self.preset.teff if self.preset.teff else "—"})

    def expected_p_down(self, h: np.ndarray, truth: pd.DataFrame | None = None) -> np.ndarray:
        """Expected P(−1) of every qubit at fields ``h`` (freeze-out level, no drift, no gauge, no noise beyond shots)."""
        t = self._truth if truth is None else truth
        theta = t[["beta", "b", "gamma", "eta"]].to_numpy()
        if self.noise == "telegraph":
            p = MODELS["qasa"].p_down(h, theta)
        else:
            p = MODELS["gaussian-noise"].p_down(h, theta[:, [0, 1, 3]])
        eps = t["readout_error"].to_numpy()[:, None]
        return eps + (1 - 2 * eps) * p

    def pooled_teff(self, truth: pd.DataFrame | None = None) -> float:
        """Effective temperature of the device by D-Wave's definition, in closed form.

        ``dwave.system.temperatures.fast_effective_temperature`` fits ``tanh(h/T)`` to the response of
        all qubits pooled at small |h| (docs/DESIGN.md §6): its limit is ``T_eff = 1/S`` with ``S`` the
        mean over qubits of the slope of the expected response ``m = 2 P(−1) − 1`` at h = 0. For the
        QASA model with readout error ε (freeze-out level)::

            S = mean_q (1 − 2ε) β · ½ [sech²(β(b + η)) + sech²(β(b − η))]

        (γ does not enter: f(x, u) is even in u); for Gaussian field noise the bracket is
        ``E_δ sech²(β(b + δ))``, δ ~ N(0, η²) (8-node Gauss–Hermite). Over |h| ≤ 0.164 the pooled fit
        differs from this limit by < 0.1 % (docs/DESIGN.md §6). With noise beyond shots the bracket is
        also averaged over a Gaussian field offset of the noise's variance and the slope multiplied
        by the qubit's h scale (:meth:`_teff_noise`, the module docstring).
        """
        t = self._truth if truth is None else truth
        return 1.0 / float(np.mean(_small_h_slope(t["beta"].to_numpy(), t["b"].to_numpy(), t["eta"].to_numpy(),
                                                  t["readout_error"].to_numpy(), self.noise, *self._teff_noise(t))))

    def _teff_noise(self, t: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(h scale, σ of the field noise beyond shots) per qubit of ``t`` as a pooled T_eff measurement
        sees them (default 20 µs anneal, drift compensation on, D-Wave's defaults): the per-programming
        error, the whole 1/f variance up to 1/(20 µs) and the DAC error at h ≈ 0 (uniform, variance q₀²/3).
        (None, None) on an ideal device."""
        preset = self.preset
        flux = self.flux_noise_model
        if not (preset.ice_scale or flux.amplitude or preset.dac_q0 or preset.gain_sd):
            return None, None
        s_star = t["freezeout_s"].to_numpy()
        var = qnoise.ice_sd(s_star, preset.ice_scale) ** 2 + preset.dac_q0 ** 2 / 3.0
        if flux.amplitude:
            var = var + self._h_per_uphi0(s_star) ** 2 * flux.total_variance(1e6 / 20.0, True)
        return t["h_scale"].to_numpy(), np.sqrt(var)

    def _teff_scale(self) -> float:
        """Factor on every β that makes :meth:`pooled_teff` equal the preset's published T_eff."""
        from scipy.optimize import brentq

        t = self._truth
        base, b, eta, eps = (t[c].to_numpy() for c in ("beta", "b", "eta", "readout_error"))
        target = 1.0 / self.preset.teff
        gain, extra = self._teff_noise(t)

        def gap(k: float) -> float:
            return float(np.mean(_small_h_slope(k * base, b, eta, eps, self.noise, gain, extra))) - target

        # the slope rises with k, then falls once kβη ≳ 1 (noise washes the response out): take the
        # smallest root, bracketed on a geometric grid
        grid = np.geomspace(0.05, 20.0, 120)
        above = np.flatnonzero([gap(k) >= 0 for k in grid])
        if above.size == 0 or above[0] == 0:
            raise ValueError(f"no β scale gives the published T_eff={self.preset.teff} with these noise settings")
        return float(brentq(gap, grid[above[0] - 1], grid[above[0]], xtol=1e-12))

    # -- truth ---------------------------------------------------------------------------------
    @property
    def truth(self) -> pd.DataFrame:
        """Per-qubit hidden parameters at the default anneal (20 µs), indexed by qubit."""
        return self._truth.copy()

    def truth_for(self, annealing_time: float | None = None, anneal_schedule=None,
                  h_gain_schedule=None) -> pd.DataFrame:
        """Per-qubit truth for a given anneal: freeze-out point, β and the h-gain at freeze-out."""
        s_star, t_star, beta = self._freezeout(annealing_time, anneal_schedule)
        out = self._truth.copy()
        out["freezeout_s"] = s_star
        out["beta"] = beta
        out["gain"] = self._gain(h_gain_schedule, t_star)
        return out

    def estimand(self, protocol: Any, pooled: bool = False) -> pd.DataFrame:
        """The QASA parameters a fit of ``protocol``'s data from this device converges to.

        A fit that knows calls are programmings (a per-call field offset δ_c ~ N(0, σ_call²) beside
        the within-call η) estimates: ``b`` = static b plus the run-average drift (the reads-weighted
        average over this run's calls of the pass walk and the call means of the 1/f flux noise; the
        per-programming errors have mean 0 and are the between-call noise such a fit's interval
        accounts for); ``eta``, ``beta``, ``gamma``: the KL projection of the device's response
        *without* the offsets' spread — the response at the run-average drift, with the within-call
        flux noise, the qubit's h scale, readout error,
        flux biases and the h gain (:mod:`qasa.virtual.estimand`; readout error is folded into γ and
        β, within-call noise into η) — but not the DAC's rounding, which is the same in every call at one
        programmed value and which such a fit takes as a per-field offset of mean 0 (its device-level
        ``sigma_field``, :mod:`qasa.fitting` "Per-field errors"); ``sigma_call``: the reads-weighted spread (h units) of this
        run's per-call offsets about their run average. Everything is computed in the programmed
        (qubit's own) frame, with the calls' exact draws (each call's identity is the run seed and
        its call id, :class:`CallKey`). At the dynamics level the response is the Bloch-equation
        simulation the device itself samples from, evaluated once per distinct programmed field at
        the run-average drift (its infinite-reads limit; within-call noise is not simulated there).

        With ``pooled=True``: what a fit that treats all reads as independent (qasa ≤ 9f8ad1f's
        likelihood) converges to instead — each call's response at its own offset, so the offsets'
        spread folds into η (η*² ≈ η² + σ_call², docs/DESIGN.md §7) and β, and the DAC rounds every field.

        Args:
            protocol: a resolved :class:`qasa.protocol.Protocol` (qubits and seed set: the gauges
                and every draw of a call depend on them).
            pooled: the target of a pooled-reads fit instead (see above).

        Returns:
            DataFrame indexed by qubit with columns ``beta``, ``b``, ``gamma``, ``eta`` (NaN when the
            protocol has fewer distinct fields than the model has parameters: nothing identifies them)
            and ``sigma_call``.

        Raises:
            ValueError: if the protocol is not resolved.
        """
        from qasa.virtual.estimand import kl_projection, readout_gamma

        if protocol.qubits is None or protocol.seed is None:
            raise ValueError("estimand needs a resolved protocol (qubits and seed set): protocol.resolved(qpu.nodelist)")
        qubits = [q for q in protocol.qubits if q in self._index]
        rows = np.array([self._index[q] for q in qubits], dtype=np.int64)
        pos = {q: i for i, q in enumerate(protocol.qubits)}
        keep = np.array([pos[q] for q in qubits], dtype=np.int64)
        kw = {**dict(protocol.sampler_params), "annealing_time": protocol.annealing_time,
              "anneal_schedule": protocol.anneal_schedule, "h_gain_schedule": protocol.h_gain_schedule,
              "flux_drift_compensation": protocol.flux_drift_compensation}
        hv = np.asarray(protocol.h_values, float)
        fields = np.unique(np.concatenate([hv, -hv]) if protocol.spin_reversal else hv)
        calls = protocol.calls()
        mean_off, sigma_call, within = self._run_offsets(rows, protocol, calls, kw)
        N, K = self._expected_counts(rows, keep, fields, protocol, calls, kw, mean_off, within, pooled)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_true = np.where(N > 0, K / np.maximum(N, 1e-300), 0.0)
        t = self.truth_for(protocol.annealing_time, protocol.anneal_schedule, protocol.h_gain_schedule).iloc[rows]
        # start from the truth moved by the closed forms of docs/DESIGN.md §6: readout error shrinks β by
        # 1 − 2ε and widens γ (readout_gamma), the run-average drift adds to b, within-call noise to η.
        # From the plain truth, the scoring stopped short of the minimum on the η = 0 bound for ~0.5% of
        # the qubits (up to 0.4 nats)
        eps = t["readout_error"].to_numpy()
        w = np.mean([v for v in within.values() if v is not None], axis=0) if any(
            v is not None for v in within.values()) else 0.0
        start = np.column_stack([t["beta"] * t["gain"].abs() * t["h_scale"] * (1.0 - 2.0 * eps), t["b"] + mean_off,
                                 readout_gamma(t["gamma"].to_numpy(), eps), np.sqrt(t["eta"] ** 2 + w ** 2)])
        params = MODELS["qasa"].params
        if np.unique(np.asarray(fields)).size < len(params):
            # fewer distinct fields than QASA parameters: no fit of this run identifies them, so there is
            # no estimand (NaN, and recovery sections show none) — the projection's system is singular
            theta = np.full((len(qubits), len(params)), np.nan)
        else:
            theta = kl_projection(np.broadcast_to(fields, N.shape), N, p_true, start)
        out = pd.DataFrame(theta, columns=list(params), index=pd.Index(np.asarray(qubits, dtype=np.int64), name="qubit"))
        out["sigma_call"] = sigma_call
        return out

    def _expected_counts(self, rows, keep, fields, protocol, calls, kw, mean_off, within, pooled: bool):
        """Reads ``N`` and expected −1 reads ``K`` per qubit (``rows``; ``keep``: their positions in the
        protocol's qubits) and distinct programmed field (``fields``) over the ``calls`` of a run
        (:meth:`estimand`): each call at its own offsets (``pooled``, :meth:`_call_offset`), else at the run-average
        drift ``mean_off`` (one evaluation per gauge pass); at the dynamics level, the Bloch-equation
        response once per field."""
        N = np.zeros((len(rows), len(fields)))
        K = np.zeros_like(N)
        r = np.arange(len(rows))
        if self.physics == "freezeout" and pooled:
            for c in calls:
                x = (c.flips[keep] * c.h).astype(float)
                p = self._p_down(rows, x, self._call_offset(rows, protocol, c, kw)[0], kw, within=within[c.gauge])
                cell = np.searchsorted(fields, x)
                N[r, cell] += c.num_reads
                K[r, cell] += c.num_reads * p
        elif self.physics == "freezeout":
            for gauge in sorted({c.gauge for c in calls}):      # one evaluation per pass (same reads per call)
                group = [c for c in calls if c.gauge == gauge]
                x = np.stack([c.flips[keep] * c.h for c in group]).astype(float)        # (calls, qubits)
                p = self._p_down(rows, x.T, mean_off, kw, fused=True, within=within[gauge], dac=False).T
                reads = np.array([c.num_reads for c in group], float)[:, None]
                cell = (r * len(fields) + np.searchsorted(fields, x)).ravel()
                N += np.bincount(cell, np.broadcast_to(reads, x.shape).ravel(), N.size).reshape(N.shape)
                K += np.bincount(cell, (reads * p).ravel(), N.size).reshape(N.shape)
        else:
            for call in calls:
                x = (call.flips[keep] * call.h).astype(float)
                N[r, np.searchsorted(fields, x)] += call.num_reads
            xs = np.broadcast_to(fields, N.shape)
            P = self._p_down(np.repeat(rows, len(fields)), xs.ravel(), np.repeat(mean_off, len(fields)),
                             kw, dac=False).reshape(N.shape)
            K = N * P
        return N, K

    def _expected_sigma_call(self, protocol: Any, s_star: np.ndarray) -> np.ndarray:
        """Expected spread of the per-call offsets about the run average (see :meth:`qasa_truth`)."""
        preset = self.preset
        calls = protocol.calls_per_h * len(protocol.h_values)
        kw = {**dict(protocol.sampler_params), "annealing_time": protocol.annealing_time,
              "anneal_schedule": protocol.anneal_schedule}
        T = 1e-6 * self._timing(len(self.nodelist), protocol.reads_of_gauge(0), protocol.annealing_time,
                                protocol.anneal_schedule, kw)["qpu_access_time"]
        var = qnoise.ice_sd(s_star, preset.ice_scale) ** 2
        flux = self.flux_noise_model
        if flux.amplitude:
            t_path, _ = qphys.anneal_path(protocol.annealing_time, protocol.anneal_schedule)
            var = var + self._h_per_uphi0(s_star) ** 2 * flux.between_variance(
                T, calls * T, 1e6 / float(t_path[-1]), protocol.flux_drift_compensation)
        if not protocol.flux_drift_compensation and preset.drift_sd:
            passes = protocol.calls_per_h
            var = var + preset.drift_sd ** 2 * (passes ** 2 - 1) / (6.0 * passes)
        return np.sqrt(var)

    def _call_offset(self, rows: np.ndarray, protocol: Any, call: Any, kw: Mapping[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One call's field offset per qubit (rows), its within-call σ (None without flux noise) and its
        per-programming error: the draws the runner's call gets (:meth:`call_noise`, :meth:`CallKey.of`)."""
        duration = self._timing(len(self.nodelist), call.num_reads, protocol.annealing_time, protocol.anneal_schedule,
                                kw)["qpu_access_time"]
        key = CallKey.of(protocol.seed, call)
        off, within = self.call_noise(rows, key, kw, duration)
        ice = self.call_noise(rows, key, kw, duration, ice_part=True)[0]
        shape = (len(rows),)
        return np.broadcast_to(np.asarray(off, float), shape), within, np.broadcast_to(np.asarray(ice, float), shape)

    def _run_offsets(self, rows: np.ndarray, protocol: Any, calls: list, kw: Mapping[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray | None]]:
        """Per qubit (rows): the run-average drift (the reads-weighted mean of the per-call offsets
        without the per-programming errors, whose mean is 0), the reads-weighted spread of the whole
        per-call offsets about their mean, and each pass's within-call σ (None without flux noise).

        The run-average drift is ``reads @ (offsets − errors) / Σ reads`` over a calls × qubits matrix (the
        product every earlier version took, so the estimand it feeds is the same to the bit); the
        offsets themselves are summed call by call (:meth:`_call_offset`): their spread is taken about
        the first call's offsets and moved to the mean, ``Σw(o − m)² = Σw(o − s)² − W(m − s)²`` (with
        ``s`` an offset, not zero, there is no cancellation to speak of)."""
        within: dict[int, np.ndarray | None] = {}
        drift_part = np.zeros((len(calls), len(rows)))
        weight, shift = 0.0, None
        total, square = np.zeros(len(rows)), np.zeros(len(rows))
        for k, c in enumerate(calls):
            off, within[c.gauge], ice = self._call_offset(rows, protocol, c, kw)
            drift_part[k] = off - ice
            shift = off.copy() if shift is None else shift
            w = float(c.num_reads)
            weight += w
            total += w * off
            square += w * (off - shift) ** 2
        reads = np.array([c.num_reads for c in calls], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / weight
            spread = np.sqrt(np.maximum(square / weight - (mean - (0.0 if shift is None else shift)) ** 2, 0.0))
            return reads @ drift_part / reads.sum(), spread, within

    def qasa_truth(self, protocol: Any) -> list[dict[str, Any]]:
        """Per-qubit truth recorded in a dataset's ``metadata['device']['truth']`` (one record per qubit).

        ``beta, b, gamma, eta``: the physical truth (β at the qubit's freeze-out point times |h gain|
        times the qubit's h scale; at the dynamics level only β, the other three are not parameters
        of that simulation). ``sigma_call``: the expected spread (h units) of a call's field offset
        about the run average for a run of this protocol's length (per-programming error, the 1/f
        flux noise between calls ∫ S(f) sinc²(πfT)[1 − sinc²(πfT_run)] df, the pass walk's
        d²(P² − 1)/(6P) without drift compensation). ``estimand_beta, estimand_b, estimand_gamma,
        estimand_eta, estimand_sigma_call``: what a fit of this run should recover (:meth:`estimand`):
        compare fits with these.
        """
        t = self.truth_for(protocol.annealing_time, protocol.anneal_schedule, protocol.h_gain_schedule)
        if protocol.qubits is not None:
            t = t.loc[[q for q in protocol.qubits if q in t.index]]
        t["beta"] = t["beta"] * t["gain"].abs() * t["h_scale"]    # the fit sees β times the h gain and scale
        cols = ["beta"] if self.physics == "dynamics" else ["beta", "b", "gamma", "eta"]
        out = t[cols].copy()
        out["sigma_call"] = self._expected_sigma_call(protocol, t["freezeout_s"].to_numpy())
        est = self.estimand(protocol)
        if est.drop(columns="sigma_call").notna().any().any():       # none when the protocol cannot identify the model
            for c in est.columns:
                out[f"estimand_{c}"] = est[c].reindex(out.index)
        return out.reset_index().to_dict("records")

    # -- sampling --------------------------------------------------------------------------------
    @dimod.bqm_structured
    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        """Sample uncoupled qubits like a QPU (see the module docstring).

        The SampleSet has the vartype of ``bqm`` (BINARY samples for a QUBO) and the energies of
        ``bqm`` itself, as dimod's contract asks.

        Raises:
            ValueError: unknown keyword, couplers present, or a value outside the QPU's ranges.
        """
        spin = bqm.change_vartype(dimod.SPIN, inplace=False)
        if spin.num_interactions:
            raise ValueError(f"the virtual QPU simulates uncoupled qubits only (J = 0); "
                             f"got {spin.num_interactions} couplers")
        variables = list(spin.variables)
        h = np.array([spin.linear[v] for v in variables], dtype=float)
        num_reads = int(kwargs.get("num_reads", 1))
        p, info, rng = self._prepare(self._rows(variables)[0], h, num_reads, kwargs)
        spins = np.where(rng.random((num_reads, len(variables))) < p, -1, 1).astype(np.int8)
        values = spins if bqm.vartype is dimod.SPIN else ((spins + 1) // 2).astype(np.int8)
        ss = dimod.SampleSet.from_samples_bqm((values, variables), bqm)
        if kwargs.get("answer_mode", "histogram") == "histogram":
            ss = ss.aggregate()
        ss.info.update(info)
        return ss

    def sample_counts(self, h: Mapping[int, float], num_reads: int = 1, **kwargs: Any
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Fast count-level sampling of uncoupled qubits: ``(qubits, n_down, info)``.

        The same physics and checks as :meth:`sample`, but each qubit's number of −1 reads is one
        binomial draw, so a full-device call costs O(qubits), not O(qubits × reads).
        """
        arrays = getattr(h, "qasa_arrays", None)      # qasa's runner: the qubits and fields as arrays
        if arrays is not None:
            given, hv = arrays()
            idx, qubits = self._rows_of(np.asarray(given))
            hv = np.asarray(hv, dtype=float)
        else:
            variables = list(h)
            idx, qubits = self._rows(variables)
            hv = np.fromiter(h.values(), dtype=float, count=len(variables))
        p, info, rng = self._prepare(idx, hv, int(num_reads), dict(kwargs, num_reads=num_reads))
        return qubits.copy(), rng.binomial(int(num_reads), p), info

    # -- internals -------------------------------------------------------------------------------
    def _check(self, h: np.ndarray, kwargs: Mapping[str, Any]) -> None:
        for kw in kwargs:
            if kw not in self.parameters:
                raise ValueError(f"kwarg {kw!r} invalid for {self.preset.name} (virtual QPU)")
        props = self.properties
        lo, hi = props["num_reads_range"]
        n = int(kwargs.get("num_reads", 1))
        if not lo <= n <= hi:
            raise ValueError(f"num_reads={n} is outside num_reads_range [{lo}, {hi}]")
        if not kwargs.get("auto_scale", True):
            hlo, hhi = props["h_range"]
            if h.size and (h.min() < hlo or h.max() > hhi):
                raise ValueError(f"h value {h.min() if h.min() < hlo else h.max():g} is outside h_range [{hlo}, {hhi}]")
        if kwargs.get("fast_anneal"):
            raise ValueError("fast_anneal is not emulated by the virtual QPU (its fast-anneal schedule is not "
                             "modelled); use annealing_time or anneal_schedule")
        offsets = kwargs.get("anneal_offsets")
        if offsets is not None and np.any(np.nan_to_num(np.asarray(offsets, float)) != 0):
            raise ValueError("non-zero anneal_offsets are not emulated by the virtual QPU; "
                             "send zeros or leave anneal_offsets out")
        if kwargs.get("flux_biases") is not None:
            self._flux_values(kwargs["flux_biases"])
        if "annealing_time" in kwargs and "anneal_schedule" in kwargs:
            raise ValueError("annealing_time and anneal_schedule are mutually exclusive")
        if "annealing_time" in kwargs:
            a, b = props["annealing_time_range"]
            if not a <= float(kwargs["annealing_time"]) <= b:
                raise ValueError(f"annealing_time={kwargs['annealing_time']} is outside [{a}, {b}] µs")
        if "anneal_schedule" in kwargs:
            check_anneal_schedule(kwargs["anneal_schedule"], props, reverse_state="initial_state" in kwargs)
        if "h_gain_schedule" in kwargs:
            check_h_gain_schedule(kwargs["h_gain_schedule"], props)

    def _flux_values(self, flux_biases: Any) -> np.ndarray:
        """Flux biases (Φ₀) of the active qubits, checked: one finite value per qubit of the chip."""
        if self.preset.mafm_pH is None:
            raise ValueError(f"flux_biases are not emulated on {self.preset.name}: no published M_AFM for it")
        values = np.asarray(flux_biases, dtype=float)
        n = self.properties["num_qubits"]
        if values.shape != (n,):
            raise ValueError(f"flux_biases must list one value per qubit ({n}), got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("flux_biases must be finite")
        return values[np.asarray(self.nodelist)]

    def _rng(self, label: str | None) -> np.random.Generator:
        """The generator of one call: a function of (device seed, label) only (see the module docstring)."""
        if label is None:       # an unlabelled call has no identity: the instance's own stream
            self._unlabelled_calls += 1
            return np.random.default_rng([self.seed, 2, 1, self._unlabelled_calls])
        words = np.frombuffer(hashlib.sha256(str(label).encode()).digest()[:16], dtype=np.uint32)
        return np.random.default_rng([self.seed, 2, 0, *words.tolist()])

    def _walk_at(self, step: int, run: tuple[int, ...] = (0,)) -> np.ndarray:
        """Flux drift of every active qubit after ``step`` + 1 steps of the seeded random walk of run ``run``
        (``(0,)``: calls without a run seed, the walk of qasa ≤ 9f8ad1f; ``(1, s)``: run seed ``s``)."""
        if self.preset.drift_sd == 0:
            return np.zeros(len(self.nodelist))
        walk = self._walks.setdefault(tuple(run), [])
        extra = [] if tuple(run) == (0,) else list(run)
        while len(walk) <= step:
            k = len(walk)
            prev = walk[-1] if walk else 0.0
            walk.append(prev + np.random.default_rng([self.seed, 3, k, *extra]).normal(
                0.0, self.preset.drift_sd, len(self.nodelist)))
        return walk[step]

    def _flux_run(self, run: tuple[int, ...]) -> tuple[np.ndarray, dict[bool, np.ndarray], list]:
        """The 1/f components of run ``run``: frequency sets (64 × K), their weights a_k by drift
        compensation, and per set its active qubits (rows) with their [X | Y] (rows × 2K)."""
        if run not in self._flux_runs:
            rng = np.random.default_rng([self.seed, 7, *run])
            n = len(self.nodelist)
            flux = self.flux_noise_model
            f, df = flux.frequencies(rng, 64)
            a = {c: flux.weights(f, df, c) for c in (False, True)}
            sets = rng.integers(0, 64, n)
            X, Y = rng.standard_normal((n, f.shape[1])), rng.standard_normal((n, f.shape[1]))
            blocks = [(rows, np.hstack([X[rows], Y[rows]])) for rows in (np.flatnonzero(sets == k) for k in range(64))]
            self._flux_runs = dict(list(self._flux_runs.items())[-1:])       # keep at most two runs
            self._flux_runs[run] = (f, a, blocks)
        return self._flux_runs[run]

    def _noise_scales(self, annealing_time, anneal_schedule) -> tuple[np.ndarray, np.ndarray]:
        """Per active qubit, cached per anneal: σ of the per-programming error and |δh| per µΦ₀."""
        key = (annealing_time, None if anneal_schedule is None else tuple(map(tuple, anneal_schedule)))
        if key not in self._scale_cache:
            s_star = self._freezeout(annealing_time, anneal_schedule)[0]
            per = self._h_per_uphi0(s_star) if self.flux_noise_model.amplitude else np.zeros_like(s_star)
            self._scale_cache[key] = (qnoise.ice_sd(s_star, self.preset.ice_scale), per)
        return self._scale_cache[key]

    @property
    def flux_noise_model(self) -> qnoise.FluxNoise:
        """The preset's 1/f flux noise (amplitude 0 when off or without a published M_AFM)."""
        amp = self.preset.flux_noise if self.preset.mafm_pH is not None else 0.0
        return qnoise.FluxNoise(amp, self.preset.flux_noise_alpha)

    def _h_per_uphi0(self, s_star: np.ndarray) -> np.ndarray:
        """|δh| of a flux of 1 µΦ₀ at each freeze-out point (D-Wave's conversion, :meth:`_flux_field`)."""
        return np.abs(self._flux_field(np.full(np.shape(s_star), 1e-6), s_star))

    def call_noise(self, idx: np.ndarray, key: "CallKey", kwargs: Mapping[str, Any], duration_us: float,
                   ice_part: bool = False) -> tuple[np.ndarray | float, np.ndarray | None]:
        """The field offset of one call and its within-call flux-noise σ, per qubit (rows ``idx``), in h units.

        Offset: the pass walk (without drift compensation) + the per-programming error + the mean of
        the 1/f flux noise over the call, at the call's time ``position × duration`` on the device's
        clock; within-call σ: the expected 1/f variance about the call mean (module docstrings of
        this module and :mod:`qasa.virtual.noise`). Every draw depends on (device seed, run seed, call) only.
        ``ice_part=True`` returns the per-programming error alone in place of the offset (for the estimand).
        """
        preset = self.preset
        compensated = bool(kwargs.get("flux_drift_compensation", True))
        offset: np.ndarray | float = 0.0
        if not compensated:
            offset = self._walk_at(key.gauge or 0, key.run)[idx]
        flux = self.flux_noise_model
        if preset.ice_scale == 0 and flux.amplitude == 0:
            return (0.0 if ice_part else offset), None
        ice, per = self._noise_scales(kwargs.get("annealing_time"), kwargs.get("anneal_schedule"))
        if preset.ice_scale:
            z = np.random.default_rng([self.seed, 6, *key.stream]).standard_normal(len(self.nodelist))[idx]
            if ice_part:
                return ice[idx] * z, None
            offset = offset + ice[idx] * z
        elif ice_part:
            return 0.0, None
        within = None
        if flux.amplitude:
            T = duration_us * 1e-6
            f, a, blocks = self._flux_run(key.run)
            u, v = qnoise.call_mean_basis(f, key.position * T, T)
            coef = np.hstack([a[compensated] * u, a[compensated] * v])          # (sets, 2K)
            phi = np.empty(len(self.nodelist))
            for k, (rows, xy) in enumerate(blocks):
                phi[rows] = xy @ coef[k]
            offset = offset + per[idx] * phi[idx]
            t_path, _ = qphys.anneal_path(kwargs.get("annealing_time"), kwargs.get("anneal_schedule"))
            within = per[idx] * np.sqrt(flux.within_variance(T, 1e6 / float(t_path[-1]), compensated))
        return offset, within

    def _freezeout(self, annealing_time, anneal_schedule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per qubit, cached per anneal: freeze-out point s*, its time t*, and β there."""
        key = (annealing_time, None if anneal_schedule is None else tuple(map(tuple, anneal_schedule)))
        if key not in self._freeze_cache:
            s_star = qphys.freezeout_point(self._schedule, self._col["rate"], annealing_time, anneal_schedule)
            t, s = qphys.anneal_path(annealing_time, anneal_schedule)
            # time of freeze-out: the last time the path is at s* (forward anneals: monotone)
            t_star = np.interp(s_star, s, t) if np.all(np.diff(s) >= 0) else np.full_like(s_star, t[-1])
            beta = self.b_scale * qphys.freezeout_beta(self._schedule.B_of(s_star), self.preset.temperature_mK)
            self._freeze_cache[key] = (s_star, t_star, beta)
        return self._freeze_cache[key]

    def _gain(self, h_gain_schedule, t_star: np.ndarray) -> np.ndarray:
        if h_gain_schedule is None:
            return np.ones_like(t_star)
        t, g = self._gain_curve(h_gain_schedule, float(np.max(t_star)) + 1.0)
        return np.interp(t_star, t, g)

    def _gain_curve(self, h_gain_schedule, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        """The low-pass-filtered h gain on a fine time grid (cached: every call of a protocol asks)."""
        key = (tuple(map(tuple, h_gain_schedule)), float(t_end))
        if key not in self._gain_cache:
            self._gain_cache[key] = self._filtered_gain(h_gain_schedule, t_end)
        return self._gain_cache[key]

    def _filtered_gain(self, h_gain_schedule, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(h_gain_schedule, dtype=float)
        t_last = max(float(pts[-1, 0]), t_end)
        tau = 1.0 / (2 * np.pi * self.preset.h_filter_MHz)
        t = np.unique(np.concatenate([np.linspace(0, t_last, 2001), pts[:, 0],
                                      (pts[:, 0][:, None] + np.linspace(0, 8 * tau, 41)).ravel()]))
        t = t[t <= t_last]
        g = np.interp(t, pts[:, 0], pts[:, 1])
        return t, qphys.lowpass(t, g, self.preset.h_filter_MHz)

    def _rows(self, variables: list) -> tuple[np.ndarray, np.ndarray]:
        """Row of the truth of each qubit, and the qubits as int64 labels.

        The last list asked for is remembered (a run sends the same qubits in every call), so a
        call costs one list comparison instead of a dictionary look-up per qubit.

        Raises:
            ValueError: naming the first qubit that is not an active qubit of the device.
        """
        cached = self._rows_cache
        if cached is not None and cached[0] == variables:
            return cached[1], cached[2]
        missing = [q for q in variables if q not in self._index]
        if missing:
            raise ValueError(f"qubit {missing[0]} is not an active qubit of {self.preset.name}")
        idx = np.fromiter((self._index[v] for v in variables), dtype=np.int64, count=len(variables))
        qubits = np.asarray(self.nodelist, dtype=np.int64)[idx]
        self._rows_cache = (list(variables), idx, qubits)
        return idx, qubits

    def _rows_of(self, qubits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_rows` of an array of qubit labels (compared as an array with the last one asked for)."""
        cached = self._rows_cache
        if cached is not None and cached[2].shape == qubits.shape and np.array_equal(cached[2], qubits):
            return cached[1], cached[2]
        return self._rows(qubits.tolist())

    def _prepare(self, idx: np.ndarray, h: np.ndarray, num_reads: int, kwargs: Mapping[str, Any]):
        self._check(h, kwargs)
        label = kwargs.get("label")
        rng = self._rng(label)
        if kwargs.get("auto_scale", True) and h.size and np.abs(h).max() > 0:
            h = h * (max(abs(x) for x in self.properties["h_range"]) / np.abs(h).max())
        timing = self._timing(len(self.nodelist), num_reads, kwargs.get("annealing_time"),
                              kwargs.get("anneal_schedule"), kwargs)
        key = CallKey.parse(label, self._unlabelled_calls)
        offset, within = self.call_noise(idx, key, kwargs, timing["qpu_access_time"])
        p = self._p_down(idx, h, offset, kwargs, within=within)
        info = {"problem_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)))),
                "timing": timing,
                # the call's start on the device's clock (s): where its 1/f flux noise was sampled
                "device_time": key.position * timing["qpu_access_time"] * 1e-6}
        if label is not None:
            info["problem_label"] = label
        return p, info, rng

    def _p_down(self, idx: np.ndarray, h: np.ndarray, offset: np.ndarray | float,
                kwargs: Mapping[str, Any], fused: bool = False, within: np.ndarray | None = None,
                dac: bool = True) -> np.ndarray:
        """Observed P(−1) of qubits ``idx`` (rows of the truth) at programmed fields ``h``.

        ``h`` holds one field per qubit (shape ``(n,)``) or several (shape ``(n, k)``: the result has
        that shape). ``offset`` adds to each qubit's static bias (flux drift); flux biases, the anneal
        and the h gain come from ``kwargs`` as in a call. Readout error included. ``fused`` evaluates
        the QASA model with its fused form on φ (:attr:`qasa.models.Model.internal`: the same values
        to rounding, 10⁻¹⁶, twice as fast; for the estimand, never for the reads). The h DAC's
        quantization and the qubit's h scale act on ``h``; ``within`` (σ per qubit, h units) is
        Gaussian field noise independent per read (the within-call flux noise; freeze-out level
        only, 7-node Gauss–Hermite). ``dac=False`` leaves the DAC's rounding out (the estimand of a fit
        that takes it as per-field noise, :meth:`estimand`).
        """
        annealing_time = kwargs.get("annealing_time")
        anneal_schedule = kwargs.get("anneal_schedule")
        h_gain_schedule = kwargs.get("h_gain_schedule")
        col = {c: v[idx] for c, v in self._col.items()}
        s_star, t_star, beta = (v[idx] for v in self._freezeout(annealing_time, anneal_schedule))
        grid = np.ndim(h) == 2
        if self.preset.dac_q0 and dac:
            phase = col["dac_phase"][:, None] if grid else col["dac_phase"]
            h = qnoise.quantize(h, phase, self.preset.dac_q0, self.preset.dac_q2)
        if self.preset.gain_sd:
            h = (col["h_scale"][:, None] if grid else col["h_scale"]) * h
        bias = col["b"] + offset
        if kwargs.get("flux_biases") is not None:
            bias = bias + self.flux_gain[idx] * self._flux_field(self._flux_values(kwargs["flux_biases"])[idx], s_star)
        bias = np.broadcast_to(bias, np.shape(idx))
        if self.physics == "freezeout":
            gain = self._gain(h_gain_schedule, t_star)
            field = gain[:, None] * h if grid else (gain * h)[:, None]

            def response(b: np.ndarray) -> np.ndarray:
                if self.noise == "telegraph":
                    theta = np.column_stack([beta, b, col["gamma"], col["eta"]])
                    model = MODELS["qasa"]
                    return model.internal.m(field, model.to_internal(theta)) if fused else model.m(field, theta)
                return MODELS["gaussian-noise"].m(field, np.column_stack([beta, b, col["eta"]]))

            if within is not None and np.any(within > 0):
                x, w = np.polynomial.hermite.hermgauss(7)
                m = sum(wk / np.sqrt(np.pi) * response(bias + np.sqrt(2.0) * xk * within) for xk, wk in zip(x, w))
            else:
                m = response(bias)
            p = 0.5 * (1.0 + (m if grid else m[:, 0]))
        else:
            rep = np.shape(h)[1] if grid else 1
            p = self.dynamics_p_down(np.ravel(h), *(np.repeat(v, rep) for v in (bias, col["rate"], col["eta"])),
                                     annealing_time, anneal_schedule, h_gain_schedule).reshape(np.shape(h))
        eps = col["readout_error"][:, None] if grid else col["readout_error"]
        return np.clip(eps + (1.0 - 2.0 * eps) * p, 0.0, 1.0)

    def _flux_field(self, flux: np.ndarray, s_star: np.ndarray) -> np.ndarray:
        """Field (units of h) of flux biases Φ (Φ₀) at each qubit's freeze-out point.

        D-Wave's published conversion, ``dwave.system.temperatures.fluxbias_to_h``: the flux term
        ``−I_p(s) Φ₀ Φ σᶻ`` equals the problem term ``B(s)/2 h σᶻ`` for ``h = −2 I_p(s) Φ₀ Φ / B(s)`` with
        ``I_p(s) = √(B(s)/(2 M_AFM))``, evaluated at the freeze-out point (the quasi-static hypothesis
        under which D-Wave states the equivalence) with the preset's published M_AFM.
        """
        from dwave.system.temperatures import fluxbias_to_h

        B = self._schedule.B_of(s_star)
        return np.asarray(fluxbias_to_h(flux, B=B, MAFM=self.preset.mafm_pH), float)

    def flux_field(self, flux_biases: Any, annealing_time: float | None = None, anneal_schedule=None) -> pd.Series:
        """True field (units of h) that ``flux_biases`` (one Φ₀ value per qubit of the chip) add to each
        active qubit's bias at its freeze-out point, this qubit's conversion spread included
        (``flux_gain_spread``): the residual of a shim is ``truth["b"] + flux_field(...)``."""
        s_star = self._freezeout(annealing_time, anneal_schedule)[0]
        field = self.flux_gain * self._flux_field(self._flux_values(flux_biases), s_star)
        return pd.Series(field, index=pd.Index(np.asarray(self.nodelist, dtype=np.int64), name="qubit"))

    def dynamics_p_down(self, h: np.ndarray, bias: np.ndarray, rate: np.ndarray, eta: np.ndarray,
                        annealing_time=None, anneal_schedule=None, h_gain_schedule=None) -> np.ndarray:
        """P(−1) from the open-system dynamics for per-trajectory fields (the dynamics level).

        Args:
            h: programmed field per trajectory; bias: static offset (not scaled by the h gain);
            rate: c of Γ = c A(s)² per trajectory (times ``rate_scale``); eta: noise amplitude
            (telegraph: the two values ±η are averaged; gaussian: 8-node Gauss–Hermite).
        """
        sched = self._schedule
        t_path, s_path = qphys.anneal_path(annealing_time, anneal_schedule)
        c = np.asarray(rate, float) * self.rate_scale
        kT = qphys.kT_GHz(self.preset.temperature_mK)
        # start where even the slowest-relaxing trajectory has ≥ 30 events left: equilibrium there
        t_start = t_path[0]
        if self.rate_scale > 0 and anneal_schedule is None and np.all(c > 0):
            grid, sg, after1 = qphys.events_after(sched, t_path, s_path, 1.0)
            ok = after1 * c.min() >= 30.0
            if ok.any():
                t_start = grid[np.flatnonzero(ok)[-1]]
        t = np.linspace(t_start, t_path[-1], self.dynamics_steps + 1)
        if h_gain_schedule is not None:
            tg, g = self._gain_curve(h_gain_schedule, t_path[-1])
            tau = 1.0 / (2 * np.pi * self.preset.h_filter_MHz)
            fine = np.concatenate([np.arange(tk, tk + 10 * tau, tau / 20) for tk in np.asarray(h_gain_schedule)[:, 0]])
            t = np.unique(np.concatenate([t, fine[(fine > t_start) & (fine < t_path[-1])]]))
            gain = np.interp(t, tg, g)
        else:
            gain = np.ones_like(t)
        s = np.interp(t, t_path, s_path)
        A, B = sched.A_of(s), sched.B_of(s) * self.b_scale
        if self.noise == "telegraph":
            offsets, weights = np.array([1.0, -1.0]), np.array([0.5, 0.5])
        else:
            x, w = np.polynomial.hermite.hermgauss(8)
            offsets, weights = np.sqrt(2.0) * x, w / np.sqrt(np.pi)
        nd = len(offsets)
        hh = np.repeat(np.asarray(h, float), nd)
        off = (np.asarray(bias, float)[:, None] + np.asarray(eta, float)[:, None] * offsets).ravel()
        rz = qphys.evolve(t, -A, B * gain, hh, kT, rate=A * A, offsets=off, bo=B,
                            rate_scale=np.repeat(c, nd))
        return (0.5 * (1.0 - rz)).reshape(-1, nd) @ weights

    def _timing(self, num_qubits: int, num_reads: int, annealing_time, anneal_schedule,
                kwargs: Mapping[str, Any]) -> dict[str, float]:
        """D-Wave's QPU timing model (:func:`qasa.cost.timing_model`), in µs."""
        from qasa.cost import timing_model

        d = self.properties["problem_timing_data"]
        anneal = annealing_time if annealing_time is not None else (
            anneal_schedule[-1][0] if anneal_schedule is not None else d["default_annealing_time"])
        return timing_model(d, num_qubits, num_reads, float(anneal), kwargs.get("readout_thermalization"),
                            kwargs.get("programming_thermalization"))


#: qasa's default grid has 81 fields: the pass length assumed when a label gives no call index
DEFAULT_PASS = 81

#: Overrides of :class:`VirtualQPU` ``ideal=True``: every noise source beyond shots off.
IDEAL = {"ice_scale": 0.0, "flux_noise": 0.0, "dac_q0": 0.0, "gain_sd": 0.0}


@dataclass(frozen=True)
class CallKey:
    """Identity of one call, parsed from its label (see the module docstring).

    ``gauge``, ``h_index``: the call id ``gGGGG-hHHHHH`` anywhere in the label; ``run_seed``:
    ``seed N`` in the label (the runner's ``qasa <call id> seed <protocol seed> call <index>``,
    :func:`qasa.protocol.call_label`, to which the Leap path appends the dataset and a digest);
    ``index``: ``call N``, the call's position in its run. The label is read by
    :func:`qasa.protocol.parse_label`, the parser of the labels qasa writes. Unlabelled calls are
    numbered per instance (``unlabelled``).
    """

    label: str | None
    gauge: int | None = None
    h_index: int | None = None
    run_seed: int | None = None
    index: int | None = None
    unlabelled: int = 0

    @classmethod
    def parse(cls, label: str | None, unlabelled: int = 0) -> "CallKey":
        """The key of a call with ``label`` (``unlabelled``: the instance's count of unlabelled calls)."""
        if label is None:
            return cls(None, unlabelled=unlabelled)
        key = parse_label(label)          # the one parser of qasa's labels (qasa.protocol)
        return cls(str(label), key.gauge, key.h_index, key.run_seed, key.index)

    @classmethod
    def of(cls, run_seed: int | None, call: Any) -> "CallKey":
        """The key of a protocol's :class:`qasa.protocol.Call` in the run with ``run_seed``."""
        return cls(f"qasa {call.call_id}", call.gauge, int(call.h_index), run_seed, int(call.slot))

    @property
    def run(self) -> tuple[int, ...]:
        """Seed material of the call's run: ``(0,)`` without a run seed, ``(1, seed)`` with one."""
        return (0,) if self.run_seed is None else (1, int(self.run_seed))

    @property
    def stream(self) -> list[int]:
        """Seed material of the call's own draws: (run, call id) for a qasa call, whatever the label's
        form; the label's SHA-256 for other labels; the instance's count for unlabelled calls."""
        if self.gauge is not None:
            return [0, *self.run, self.gauge, int(self.h_index)]
        if self.label is not None:
            return [1, *np.frombuffer(hashlib.sha256(self.label.encode()).digest()[:16], dtype=np.uint32).tolist()]
        return [2, self.unlabelled]

    @property
    def position(self) -> int:
        """The call's position in its run (its slot on the device's clock)."""
        if self.index is not None:
            return self.index
        if self.gauge is not None:
            return self.gauge * DEFAULT_PASS + int(self.h_index)
        return self.unlabelled


def _resolve_preset(preset: str | Preset, topology_type: str | None, topology_shape: list[int] | None,
                    overrides: Mapping[str, Any]) -> tuple[Preset, Any]:
    """The preset with the graph and overrides applied, and the full topology graph."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Preset)}
    if unknown:
        raise ValueError(f"unknown emulator option(s) {sorted(unknown)}")
    ttype = topology_type or preset.topology_type
    shape = topology_shape if topology_shape is not None else (
        list(preset.topology_shape) if ttype == preset.topology_type else None)
    graph, shape = topology_graph(ttype, shape)
    return dataclasses.replace(preset, topology_type=ttype, topology_shape=tuple(shape), **overrides), graph


def _qpu_properties(preset: Preset) -> dict[str, Any]:
    """The QPU properties the virtual device advertises (on top of MockDWaveSampler's)."""
    return {
        "chip_id": preset.name,
        "h_range": list(preset.h_range),
        "num_reads_range": [1, 10_000],
        "annealing_time_range": [0.5, 2000.0],
        "default_annealing_time": 20.0,
        "h_gain_schedule_range": [-4.0, 4.0],
        "max_anneal_schedule_points": 12,
        "max_h_gain_schedule_points": 20,
        "problem_timing_data": _timing_data(),
        "problem_run_duration_range": [0.0, 1_000_000.0],
        "vendor": "qasa virtual QPU",
    }


def _points(name: str, schedule: Any) -> np.ndarray:
    try:
        pts = np.asarray(schedule, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of (t, value) pairs, got {schedule!r}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"{name} must be a list of at least 2 (t, value) pairs, got {schedule!r}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name} has a non-finite value: {schedule!r}")
    t = pts[:, 0]
    if t[0] != 0:
        raise ValueError(f"{name} must start at t=0 µs, got t={t[0]:g} µs")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"{name} times {t.tolist()} must be strictly increasing")
    return pts


def check_anneal_schedule(schedule: Any, props: Mapping[str, Any], reverse_state: bool) -> None:
    """The QPU server's rules for ``anneal_schedule`` (D-Wave solver-parameter documentation).

    Times start at 0 µs and strictly increase, every s lies in [0, 1], the last point is at s = 1, the
    total time is within ``annealing_time_range``, and no segment is steeper than
    1/min(``annealing_time_range``) per µs. A forward anneal starts at s = 0 and has at most
    ``max_anneal_schedule_points`` points; a reverse anneal starts at s = 1, needs an
    ``initial_state`` and may use one point more (D-Wave allows the extra point for reverse anneals;
    dwave-system's client-side ``validate_anneal_schedule`` does not know this, docs/DESIGN.md §5).

    Raises:
        ValueError: naming the offending value and the allowed range.
    """
    pts = _points("anneal_schedule", schedule)
    t, s = pts[:, 0], pts[:, 1]
    bad = s[(s < 0) | (s > 1)]
    if bad.size:
        raise ValueError(f"anneal_schedule s={bad[0]:g} is outside [0, 1]")
    lo, hi = props["annealing_time_range"]
    if t[-1] > hi:
        raise ValueError(f"anneal_schedule lasts {t[-1]:g} µs; the maximum is {hi:g} µs")
    if s[-1] != 1:
        raise ValueError(f"anneal_schedule must end at s=1, got s={s[-1]:g}")
    reverse = s[0] == 1
    if not reverse and s[0] != 0:
        raise ValueError(f"anneal_schedule must start at s=0 (forward) or s=1 (reverse), got s={s[0]:g}")
    max_points = int(props["max_anneal_schedule_points"]) + (1 if reverse else 0)
    if len(pts) > max_points:
        kind = "a reverse anneal" if reverse else "a forward anneal"
        raise ValueError(f"anneal_schedule has {len(pts)} points; {kind} allows at most {max_points}")
    slope = np.abs(np.diff(s) / np.diff(t))
    if slope.max() > 1.0 / lo + 1e-9:
        raise ValueError(f"anneal_schedule slope {slope.max():g}/µs exceeds the maximum slope {1.0 / lo:g}/µs "
                         f"(1/min(annealing_time_range))")
    if reverse and not reverse_state:
        raise ValueError("a reverse anneal (starting at s = 1) needs an initial_state")


def check_h_gain_schedule(schedule: Any, props: Mapping[str, Any]) -> None:
    """The QPU server's rules for ``h_gain_schedule``: times from 0 µs strictly increasing, at most
    ``max_h_gain_schedule_points`` points, every gain within ``h_gain_schedule_range``.

    Raises:
        ValueError: naming the offending value and the allowed range.
    """
    pts = _points("h_gain_schedule", schedule)
    if len(pts) > props["max_h_gain_schedule_points"]:
        raise ValueError(f"h_gain_schedule has {len(pts)} points; at most {props['max_h_gain_schedule_points']}")
    lo, hi = props["h_gain_schedule_range"]
    bad = pts[(pts[:, 1] < lo) | (pts[:, 1] > hi), 1]
    if bad.size:
        raise ValueError(f"h_gain_schedule gain {bad[0]:g} is outside h_gain_schedule_range [{lo:g}, {hi:g}]")


def _small_h_slope(beta: np.ndarray, b: np.ndarray, eta: np.ndarray, eps: np.ndarray, noise: str,
                   gain: np.ndarray | None = None, extra_sd: np.ndarray | None = None) -> np.ndarray:
    """d m/dh at h = 0 per qubit of the observed response (see :meth:`VirtualQPU.pooled_teff`).

    ``gain``: the qubit's h scale; ``extra_sd``: σ of further Gaussian field noise (the noise beyond
    shots, averaged over calls; 9-node Gauss–Hermite). Without both, the closed form of qasa ≤ 9f8ad1f.
    """
    if noise == "telegraph":
        offsets, weights = np.array([1.0, -1.0]), np.array([0.5, 0.5])
    else:
        x, w = np.polynomial.hermite.hermgauss(8)
        offsets, weights = np.sqrt(2.0) * x, w / np.sqrt(np.pi)
    if extra_sd is None or not np.any(extra_sd > 0):
        arg = beta[:, None] * (b[:, None] + eta[:, None] * offsets)
        slope = (1.0 - 2.0 * eps) * beta * (weights / np.cosh(arg) ** 2).sum(1)
    else:
        z, wz = np.polynomial.hermite.hermgauss(9)
        shift = eta[:, None, None] * offsets[None, :, None] + np.sqrt(2.0) * extra_sd[:, None, None] * z
        arg = beta[:, None, None] * (b[:, None, None] + shift)
        slope = (1.0 - 2.0 * eps) * beta * np.einsum("qkz,k,z->q", 1.0 / np.cosh(arg) ** 2, weights, wz / np.sqrt(np.pi))
    return slope if gain is None else gain * slope


def _timing_data() -> dict[str, Any]:
    from dwave.cloud.testing.mocks import qpu_problem_timing_data

    return qpu_problem_timing_data("advantage")

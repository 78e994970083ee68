r"""Noise beyond shots of a real annealer: per-programming field errors, 1/f flux noise, DAC quantization, h gain.

Every call to a D-Wave QPU is a new programming of the chip, and the field a qubit sees in that call
differs from the programmed ``h`` in ways that are shared by all the call's reads. D-Wave documents
these as *integrated control errors* (ICE) in its QPU documentation, "Errors and Error Correction"
(docs.dwavequantum.com, quantum_research/errors: ICE1 background susceptibility, ICE2 flux noise,
ICE3 DAC quantization, ICE4 I/O effects, ICE5 h-scale distribution) and gives per-solver constants
(M_AFM, schedules) in "QPU-Specific Physical Properties"; docs/DESIGN.md §7 collects the figures.
This module holds the closed forms the virtual QPU (:mod:`qasa.virtual.qpu`) draws from:

**Per-programming field error** (:func:`ice_sd`). Each programming realizes ``h_i + δh_i`` with
``δh_i ~ N(0, σ_ice²)`` independent per qubit and per call. D-Wave gives σ falling from ≈ 0.025 at
s ≈ 0.28 to ≈ 0.010 at s ≈ 0.75 (a 2X-era figure, the only s-resolved one published); the virtual
QPU interpolates linearly in the qubit's freeze-out point s* (clamped to the end values): 0.0144 at
s* = 0.612 (Advantage_system4.1), 0.0121 at 0.684 (Advantage2_system1).

**1/f flux noise** (:class:`FluxNoise`). Flux spectral density ``S_Φ(f) = A² (1 Hz / f)^α`` with
``A = √S_Φ(1 Hz) ≈ 2 µΦ₀/√Hz`` and ``α`` between 0.75 and 1 (D-Wave's published range; the presets
use 0.9). A flux δΦ acts on the qubit like the field
``δh = −2 I_p(s*) Φ₀ δΦ / B(s*)``, ``I_p = √(B/(2 M_AFM))`` — D-Wave's own conversion
(``dwave.system.temperatures.fluxbias_to_h``) at the freeze-out point, with the preset's published
M_AFM: 1.50·10⁻³ per µΦ₀ for Advantage_system4.1 (M_AFM 1.647 pH, B(0.612) = 3.50 GHz). With
hourly drift correction (``flux_drift_compensation=True``, D-Wave's default) the spectrum is flat
below ``f_c`` = 1 mHz; without it, 1/f continues down to ``f_min`` = 10⁻⁶ Hz (11 days; for α < 1 the
variance converges as f_min → 0). Noise faster than one anneal is averaged by the anneal itself:
the spectrum is cut at ``f_max`` = 1/annealing time.

The process is synthesized as a sum of sinusoids with Gaussian amplitudes (a Gaussian process
with the given spectrum, evaluable at any time, so a call's value needs no earlier call)::

    δΦ(t) = Σ_k a_k [X_k cos(2π f_k t) + Y_k sin(2π f_k t)],   X_k, Y_k ~ N(0, 1),
    a_k² = S_Φ(f_k) Δf_k

on 20 log-spaced bins per decade from f_min to 10³ Hz, each qubit's frequency jittered inside its
bin independently (64 sets of frequencies, a qubit draws its set; one qubit's process is a sum of
lines, pooled over qubits the spectrum is smooth;
content above 10³ Hz moves a call mean by < 3 % of its amplitude for calls ≥ 10 ms, the programming
time alone, and enters only the within-call variance). A call occupies ``[t₀, t₀ + T]`` on the device's clock; the part of
the spectrum slower than the call appears as the call's *offset*, the mean of δΦ over the call
(exactly: component k contributes ``a_k [X_k (sin ω(t₀+T) − sin ωt₀) − Y_k (cos ω(t₀+T) − cos ωt₀)]/(ωT)``,
ω = 2π f_k), the faster part as *within-call* noise with expected variance
``∫ S_Φ(f) [1 − sinc²(π f T)] df`` (f_min to f_max, sinc x = sin x / x; independent per read, an
addition to the η-like noise of the QASA model, drawn as Gaussian).

**DAC quantization** (:func:`quantize`). The h DAC realizes the programmed value rounded to a
per-qubit grid whose spacing is finest at large |h|: D-Wave gives errors up to ±0.008 at h = 0 and
≈ ±0.0005 at h = 2. The virtual QPU uses the grid ``u(h) ∈ ℤ + φ_q`` with
``u(h) = sign(h) (e^{κ|h|} − 1)/(2 q₀ κ)``, ``κ = ln(q₀/q₂)/2``, so the local half-step is
``q(h) = q₀ e^{−κ|h|}`` (q₀ = 0.008 at h = 0, q₂ = 0.0005 at h = 2) and the realized value is
``u⁻¹(round(u(h) − φ_q) + φ_q)`` with ``u⁻¹(v) = sign(v) ln(1 + 2 q₀ κ |v|)/κ``: a deterministic
error per qubit and programmed value, within ±q(h) up to the curvature of u over one step, uniform
over a qubit's phase φ_q ~ U(0, 1).

**h-scale spread**: each qubit realizes ``g_q h`` with ``g_q ~ N(1, 0.01²)`` (D-Wave: ~1 %), fixed per
device.

The order on the chip: programmed x → DAC → gain → plus the call's offsets (ICE, flux) → plus the
within-call flux noise; offsets are not scaled by the h gain (they are flux, not h-DAC, errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ice_sd", "quantize", "dac_half_step", "FluxNoise", "flux_spectrum", "call_mean_basis", "ICE_POINTS"]

#: D-Wave's s-resolved per-programming field error: (s, σ) at the two ends (2X-era figure, DESIGN.md §7).
ICE_POINTS = ((0.28, 0.025), (0.75, 0.010))
_PER_DECADE = 20
_F_TOP = 1e3          # highest synthesized frequency (Hz); the rest enters as within-call variance only


def ice_sd(s_star: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """σ of the per-programming field error at freeze-out points ``s_star`` (linear in s, clamped)."""
    (s0, v0), (s1, v1) = ICE_POINTS
    return scale * np.interp(np.asarray(s_star, float), [s0, s1], [v0, v1])


def _kappa(q0: float, q2: float) -> float:
    return float(np.log(q0 / q2) / 2.0)


def dac_half_step(h: np.ndarray, q0: float, q2: float) -> np.ndarray:
    """q(h) = q₀ e^{−κ|h|}: the largest DAC error at programmed ``h`` (0 when q₀ = 0)."""
    if q0 == 0:
        return np.zeros_like(np.asarray(h, float))
    return q0 * np.exp(-_kappa(q0, q2) * np.abs(np.asarray(h, float)))


def quantize(h: np.ndarray, phase: np.ndarray, q0: float, q2: float) -> np.ndarray:
    """The value the h DAC realizes for programmed ``h`` on a qubit with grid phase ``phase`` (see above).

    Args:
        h: programmed fields (any shape); phase: per-qubit φ in [0, 1), broadcast against ``h``.
        q0, q2: the largest error at h = 0 and at h = 2 (q₀ > q₂ > 0; q₀ = 0 turns quantization off).
    """
    h = np.asarray(h, float)
    if q0 == 0:
        return h
    k = _kappa(q0, q2)
    u = np.sign(h) * np.expm1(k * np.abs(h)) / (2.0 * q0 * k)
    v = np.round(u - phase) + phase
    return np.sign(v) * np.log1p(2.0 * q0 * k * np.abs(v)) / k


def flux_spectrum(f: np.ndarray, amplitude: float, alpha: float, f_c: float = 0.0) -> np.ndarray:
    """S_Φ(f) = A² (1 Hz / max(f, f_c))^α (Φ² per Hz in the units of A²)."""
    return amplitude**2 * np.maximum(np.asarray(f, float), f_c) ** (-alpha)


@dataclass(frozen=True)
class FluxNoise:
    """1/f flux noise (in µΦ₀) of ``n`` qubits for one run, evaluable at any time (see the module docstring).

    Args:
        amplitude: √S_Φ(1 Hz) in µΦ₀/√Hz; alpha: the exponent.
        f_min: lowest frequency (Hz); f_c: drift-correction corner (Hz) when compensated.
    """

    amplitude: float
    alpha: float
    f_min: float = 1e-6
    f_c: float = 1e-3

    def frequencies(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sets of component frequencies, each jittered inside its bin independently per set
        (so the spectrum pooled over qubits of different sets has no comb), and the bin widths (Hz):
        both ``(n, K)``."""
        edges = np.logspace(np.log10(self.f_min), np.log10(_F_TOP),
                            int(round(_PER_DECADE * np.log10(_F_TOP / self.f_min))) + 1)
        lo, hi = edges[:-1], edges[1:]
        f = lo * (hi / lo) ** rng.random((n, lo.size))
        return f, np.broadcast_to(hi - lo, f.shape)

    def weights(self, f: np.ndarray, df: np.ndarray, compensated: bool) -> np.ndarray:
        """a_k of each component (µΦ₀)."""
        return np.sqrt(flux_spectrum(f, self.amplitude, self.alpha, self.f_c if compensated else 0.0) * df)

    def within_variance(self, duration_s: float, f_max: float, compensated: bool) -> float:
        """Expected variance (µΦ₀²) of δΦ about its call mean: ∫ S(f)[1 − sinc²(πfT)] df, f_min..f_max."""
        return _integral(self.amplitude, self.alpha, self.f_min, self.f_c if compensated else 0.0,
                         float(f_max), float(duration_s), 0.0)

    def between_variance(self, duration_s: float, run_s: float, f_max: float, compensated: bool) -> float:
        """Expected variance (µΦ₀²) of the call means about their run mean (calls of length T in a run
        of length T_run): ∫ S(f) sinc²(πfT) [1 − sinc²(πfT_run)] df."""
        return _integral(self.amplitude, self.alpha, self.f_min, self.f_c if compensated else 0.0,
                         float(f_max), float(duration_s), float(run_s))

    def total_variance(self, f_max: float, compensated: bool) -> float:
        """Variance (µΦ₀²) of δΦ itself: ∫ S(f) df from f_min to f_max."""
        return _integral(self.amplitude, self.alpha, self.f_min, self.f_c if compensated else 0.0,
                         float(f_max), np.inf, -1.0)


@lru_cache(maxsize=256)
def _integral(amplitude: float, alpha: float, f_min: float, f_c: float, f_max: float, T: float,
              T_run: float) -> float:
    """∫ S(f) w(f) df on a log grid: w = 1 − sinc²(πfT) (T_run = 0), sinc²(πfT)(1 − sinc²(πfT_run))
    (T_run > 0), or 1 (T_run < 0)."""
    if amplitude == 0 or f_max <= f_min:
        return 0.0
    x = np.linspace(np.log(f_min), np.log(f_max), 8001)
    f = np.exp(x)
    if T_run < 0:
        w = np.ones_like(f)
    elif T_run == 0:
        w = 1.0 - np.sinc(f * T) ** 2               # numpy's sinc is sin(πx)/(πx)
    else:
        w = np.sinc(f * T) ** 2 * (1.0 - np.sinc(f * T_run) ** 2)
    y = flux_spectrum(f, amplitude, alpha, f_c) * w * f
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def call_mean_basis(f: np.ndarray, t0: float, T: float) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) with the mean of cos(2πf t), sin(2πf t) over [t₀, t₀ + T] (closed form)."""
    w = 2.0 * np.pi * np.asarray(f, float)
    damp = np.sinc(np.asarray(f, float) * T)        # sin(πfT)/(πfT): the average over the call
    mid = w * (t0 + 0.5 * T)
    return np.cos(mid) * damp, np.sin(mid) * damp

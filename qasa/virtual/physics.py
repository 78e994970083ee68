r"""Single-qubit physics of a quantum annealer: schedules, units, freeze-out and dynamics.

Hamiltonian (D-Wave convention, docs/DESIGN.md §2), in frequency units (GHz, Planck's h = 1)::

    H(s) = −A(s)/2 σˣ + B(s)/2 · g(t) h σᶻ ,     s = s(t) the anneal fraction

with the published A(s), B(s) tables shipped in ``qasa/data/annealing-schedules`` (D-Wave documents
09-1216A-A, 09-1273A-B, 09-1317A-D; they describe mean behaviour, real curves differ by up to 30%).
Write ``H = ½ Ω·σ`` with ``Ω = (−A, 0, B g h)``; the Bloch vector ``r = ⟨σ⟩`` obeys
``dr/dt = 2π·10³ Ω × r`` (t in µs). The spin reads −1 with probability ``(1 − r_z)/2``.

Thermal state (the Gibbs state of H(s) at temperature T): ``r_eq = −tanh(|Ω|/(2 k_B T)) Ω/|Ω|``.
With ``A → 0`` this is the classical law ``P(−1) = (1 + tanh(β h))/2`` with
``β = B(s)/(2 k_B T)`` in units of 1/h (:func:`freezeout_beta`, identical to
:func:`dwave.system.temperatures.freezeout_effective_temperature`, T_eff = 1/β).

Bath and freeze-out. Transitions that change σᶻ are incoherent tunnelling events with a
golden-rule rate ``Γ(s) = c · A(s)²`` (a broad noise spectrum makes the rate scale with the square of
the tunnelling amplitude). Going backwards from the end of the schedule, the qubit freezes where the
expected number of remaining events reaches one::

    ∫_{t*}^{t_end} Γ(s(t)) dt = 1 ,    s* = s(t*)

so slower anneals, and pauses after the freeze-out point, freeze later (larger B, larger β); a
schedule that quenches s quickly freezes at the quench. The constant c is calibrated so that a
linear anneal of a reference duration freezes at a published s* (:func:`calibrate_rate`).

Dynamics (:func:`evolve`). The Bloch equation with relaxation toward the instantaneous Gibbs state,
``dr/dt = Ω × r − Γ(s) (r − r_eq(s))``, integrated in the frame that rotates with the field
direction: each step is an exact rotation about the (midpoint) effective axis
``(0, −Δθ, ∫|Ω|dt)`` followed and preceded by half-steps of exact exponential relaxation (Strang
splitting), so the fast Larmor precession costs nothing and the step only has to resolve how fast
the field *direction* changes (the anneal, or an h-gain quench). With c = 0 it is the closed-system
Schrödinger evolution of a spin-½ (checked against ``scipy.integrate.solve_ivp`` and the
Landau–Zener formula in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

__all__ = [
    "H_PLANCK", "K_BOLTZMANN", "kT_GHz", "freezeout_beta", "Schedule", "load_schedule",
    "SCHEDULES", "schedule_path", "anneal_path", "events_after", "freezeout_point", "calibrate_rate",
    "lowpass", "evolve", "bloch_equilibrium",
]

#: Planck constant (J s) and Boltzmann constant (J/K), exact SI values (2019 redefinition).
H_PLANCK = 6.62607015e-34
K_BOLTZMANN = 1.380649e-23
_TWO_PI_PER_US = 2.0 * np.pi * 1e3     # GHz → rad/µs

SCHEDULES = ("DW_2000Q_6", "Advantage_system6.2", "Advantage2_research1.4", "Advantage2_research1.4_fast")


def kT_GHz(temperature_mK: float) -> float:
    """k_B T / h in GHz for a temperature in mK (15.4 mK → 0.3209 GHz)."""
    return K_BOLTZMANN * temperature_mK * 1e-3 / H_PLANCK / 1e9


def freezeout_beta(B_GHz: float | np.ndarray, temperature_mK: float) -> float | np.ndarray:
    """β = B(s*) / (2 k_B T) in units of 1/h (the inverse of dwave-system's freezeout T_eff)."""
    return np.asarray(B_GHz) / (2.0 * kT_GHz(temperature_mK))


@dataclass(frozen=True)
class Schedule:
    """A published annealing schedule: A(s), B(s) in GHz on a grid of s."""

    name: str
    s: np.ndarray
    A: np.ndarray
    B: np.ndarray

    def A_of(self, s: np.ndarray | float) -> np.ndarray:
        """A(s) in GHz, linear interpolation of the table."""
        return np.interp(s, self.s, self.A)

    def B_of(self, s: np.ndarray | float) -> np.ndarray:
        """B(s) in GHz, linear interpolation of the table."""
        return np.interp(s, self.s, self.B)


def schedule_path(name: str):
    """Path of a bundled schedule table."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; bundled: {list(SCHEDULES)}")
    return resources.files("qasa") / "data" / "annealing-schedules" / f"{name}.csv"


@lru_cache(maxsize=None)
def load_schedule(name: str) -> Schedule:
    """Load a bundled published schedule (columns s, A_GHz, B_GHz)."""
    data = np.genfromtxt(str(schedule_path(name)), delimiter=",", names=True)
    return Schedule(name, np.asarray(data["s"]), np.asarray(data["A_GHz"]), np.asarray(data["B_GHz"]))


def anneal_path(annealing_time: float | None = None,
                anneal_schedule: Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints ``(t µs, s)`` of a piecewise-linear anneal (a linear forward anneal by default)."""
    if anneal_schedule is not None:
        pts = np.asarray(anneal_schedule, dtype=float)
        return pts[:, 0], pts[:, 1]
    ta = 20.0 if annealing_time is None else float(annealing_time)
    return np.array([0.0, ta]), np.array([0.0, 1.0])


def events_after(schedule: Schedule, t: np.ndarray, s: np.ndarray, rate: float, n: int = 4001):
    """Expected number of relaxation events (Γ = rate · A(s)²) from each time of a fine grid to the
    end of the anneal: ``(grid, s on the grid, events after)``."""
    grid = np.unique(np.concatenate([np.linspace(t[0], t[-1], n), t]))
    sg = np.interp(grid, t, s)
    gam = rate * schedule.A_of(sg) ** 2
    seg = 0.5 * (gam[1:] + gam[:-1]) * np.diff(grid)
    after = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])
    return grid, sg, after


def freezeout_point(schedule: Schedule, rate: float | np.ndarray, annealing_time: float | None = None,
                    anneal_schedule: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Freeze-out s* where the expected number of remaining relaxation events falls to one.

    Args:
        schedule: A(s), B(s) tables.
        rate: c in ``Γ = c A(s)²`` (1/(µs·GHz²)); an array gives one s* per value.
        annealing_time, anneal_schedule: the anneal (see :func:`anneal_path`).

    Returns:
        s* per rate value (for a schedule that never accumulates one event after its start: s of
        the start, i.e. the qubit never thermalizes).
    """
    t, s = anneal_path(annealing_time, anneal_schedule)
    rates = np.atleast_1d(np.asarray(rate, dtype=float))
    _, sg, after1 = events_after(schedule, t, s, 1.0)
    # events scale linearly with the rate: s where rate · after1 falls to 1 (after1 decreases in time);
    # a rate too small to reach one event gets the start of the path (np.interp clamps to it)
    out = np.interp(1.0 / rates, after1[::-1], sg[::-1])
    return out if np.ndim(rate) else out[0]


def calibrate_rate(schedule: Schedule, s_star: float, annealing_time: float = 20.0) -> float:
    """c such that a linear anneal of ``annealing_time`` µs freezes at ``s_star``."""
    t, s = anneal_path(annealing_time)
    _, sg, after1 = events_after(schedule, t, s, 1.0)
    events = np.interp(s_star, sg, after1)
    return 1.0 / events


def lowpass(t: np.ndarray, values: np.ndarray, cutoff_MHz: float | None) -> np.ndarray:
    """First-order low-pass filter (time constant 1/(2π f_c)) of a signal sampled on grid ``t`` (µs)."""
    if not cutoff_MHz:
        return values
    tau = 1.0 / (2.0 * np.pi * cutoff_MHz)
    out = np.empty_like(values, dtype=float)
    out[0] = values[0]
    for i in range(1, len(t)):
        a = np.exp(-(t[i] - t[i - 1]) / tau)
        # exact for a linear segment between the two samples
        dt = t[i] - t[i - 1]
        slope = (values[i] - values[i - 1]) / dt if dt > 0 else 0.0
        out[i] = values[i] - slope * tau + a * (out[i - 1] - values[i - 1] + slope * tau)
    return out


def bloch_equilibrium(ox: np.ndarray, oz: np.ndarray, kT: float) -> tuple[np.ndarray, np.ndarray]:
    """Gibbs-state Bloch vector (x, z) of H = ½(ox σˣ + oz σᶻ) at k_B T = ``kT`` (same units)."""
    e = np.sqrt(ox * ox + oz * oz)
    with np.errstate(invalid="ignore", divide="ignore"):
        pol = np.where(e > 0, np.tanh(e / (2.0 * kT)) / e, 0.0) if kT > 0 else np.where(e > 0, 1.0 / e, 0.0)
    return -pol * ox, -pol * oz


def evolve(t: np.ndarray, ox: np.ndarray, bz: np.ndarray, fields: np.ndarray, kT: float,
           rate: np.ndarray | float = 0.0, r0: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
           chunk: int = 16384, offsets: np.ndarray | None = None, bo: np.ndarray | None = None,
           rate_scale: np.ndarray | None = None) -> np.ndarray:
    """Integrate the single-qubit Bloch equation on grid ``t`` for many fields at once.

    The Hamiltonian at time ``t[i]`` for trajectory ``n`` is
    ``½ (ox[i] σˣ + (bz[i] · fields[n] + bo[i] · offsets[n]) σᶻ)`` (GHz), with relaxation rate
    ``rate[i] · rate_scale[n]`` (1/µs) toward its Gibbs state at ``kT`` (GHz).

    Args:
        t: time grid (µs), shape (T,); the step is resolved by this grid.
        ox: transverse field per time (GHz), e.g. ``−A(s(t))``.
        bz: longitudinal scale per time (GHz), e.g. ``B(s(t)) · g(t)``.
        fields: per-trajectory field multiplying ``bz`` (units of h), shape (N,).
        kT: temperature in GHz (only used with a nonzero rate).
        rate: relaxation rate per time (1/µs), scalar or shape (T,).
        r0: initial Bloch vector (x, y, z), each (N,); default: the ground state at ``t[0]``
            (or the Gibbs state if the rate is nonzero).
        chunk: trajectories integrated together (bounded memory, cache-friendly).
        offsets, bo: an optional second longitudinal term (e.g. a static bias, which an h-gain
            schedule does not scale: ``bo = B(s(t))``).
        rate_scale: per-trajectory multiplier of the rate (default 1).

    Returns:
        ``r_z`` at ``t[-1]`` per trajectory; P(−1) = (1 − r_z)/2.
    """
    t = np.asarray(t, float)
    ox = np.asarray(ox, float)
    bz = np.asarray(bz, float)
    fields = np.asarray(fields, float)
    rate = np.broadcast_to(np.asarray(rate, float), t.shape)
    offsets = np.zeros_like(fields) if offsets is None else np.broadcast_to(np.asarray(offsets, float), fields.shape)
    bo = np.zeros_like(t) if bo is None else np.asarray(bo, float)
    rate_scale = np.ones_like(fields) if rate_scale is None else np.broadcast_to(np.asarray(rate_scale, float), fields.shape)
    out = np.empty(fields.shape)
    for start in range(0, len(fields), chunk):
        sl = slice(start, start + chunk)
        init = None if r0 is None else tuple(np.asarray(c, float)[sl] for c in r0)
        out[sl] = _evolve_block(t, ox, bz, fields[sl], kT, rate, init, offsets[sl], bo, rate_scale[sl])
    return out


def _evolve_block(t, ox, bz, f, kT, rate, r0, off, bo, scale):
    n = len(f)
    dt = np.diff(t)
    # field direction angle θ (from +z toward +x) and magnitude at the grid points
    oz0 = bz[0] * f + bo[0] * off
    theta = np.arctan2(ox[0], oz0)
    if r0 is None:
        if rate[0] > 0 and kT > 0:
            x, z = bloch_equilibrium(np.full(n, ox[0]), oz0, kT)
        else:
            x, z = bloch_equilibrium(np.full(n, ox[0]), oz0, 0.0)
        y = np.zeros(n)
    else:
        x, y, z = (c.copy() for c in r0)
    # rotate the lab vector into the field frame: component along the field direction (par)
    # and the two perpendicular ones (y, and perp = in-plane perpendicular)
    ct, st = np.cos(theta), np.sin(theta)
    par = st * x + ct * z
    perp = ct * x - st * z
    yy = y
    for i in range(len(dt)):
        h = dt[i]
        if h <= 0:
            continue
        oz_a, oz_b = bz[i] * f + bo[i] * off, bz[i + 1] * f + bo[i + 1] * off
        theta_b = np.arctan2(ox[i + 1], oz_b)
        dtheta = np.angle(np.exp(1j * (theta_b - theta)))          # unwrapped increment
        e_a = np.sqrt(ox[i] ** 2 + oz_a ** 2)
        e_b = np.sqrt(ox[i + 1] ** 2 + oz_b ** 2)
        phi = _TWO_PI_PER_US * 0.5 * (e_a + e_b) * h                 # ∫|Ω| dt (trapezoid)
        g = 0.5 * (rate[i] + rate[i + 1]) * h
        if g > 0:
            eq_a = -np.tanh(e_a / (2 * kT)) if kT > 0 else -np.ones(n)
            eq_b = -np.tanh(e_b / (2 * kT)) if kT > 0 else -np.ones(n)
            decay = np.exp(-0.5 * g * scale)
            par = eq_a + (par - eq_a) * decay
            perp *= decay
            yy = yy * decay
        # exact rotation about w = (w_perp, w_y, w_par) = (0, −Δθ, φ) in the field frame
        # (the frame turns by Δθ about y while the spin precesses by φ about the field)
        par, perp, yy = _rotate(par, perp, yy, phi, -dtheta)
        if g > 0:
            par = eq_b + (par - eq_b) * decay
            perp *= decay
            yy = yy * decay
        theta = theta_b
    ct, st = np.cos(theta), np.sin(theta)
    return ct * par - st * perp


def _rotate(par, perp, y, phi, wy):
    """Rotate the vector (perp, y, par) about the axis (0, wy, phi) by its norm (Rodrigues)."""
    norm = np.sqrt(phi * phi + wy * wy)
    safe = np.where(norm > 0, norm, 1.0)
    ky, kp = wy / safe, phi / safe               # unit axis components (y, par); perp component 0
    c, s = np.cos(norm), np.sin(norm)
    # v = (perp, y, par); k = (0, ky, kp)
    kdotv = ky * y + kp * par
    cross_perp = ky * par - kp * y               # (k × v)_perp
    cross_y = kp * perp                          # (k × v)_y   = kp*perp - 0*par
    cross_par = -ky * perp                       # (k × v)_par = 0*y - ky*perp
    one_c = 1.0 - c
    new_perp = perp * c + cross_perp * s
    new_y = y * c + cross_y * s + ky * kdotv * one_c
    new_par = par * c + cross_par * s + kp * kdotv * one_c
    return new_par, new_perp, new_y

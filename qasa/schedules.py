r"""Schedule shapes defined once, exported as QPU anneal schedules, SA β schedules and learning rates.

A :class:`Shape` is a pure function ``f(u)`` of normalized time ``u = t/T ∈ [0, 1]`` describing a
*temperature-like* control that starts high and is annealed: a learning rate η(t) = η₀ f(t/T), a
simulated-annealing temperature, or the quantum driver (the QPU's tunnelling A(s) falls as s rises,
so a shape maps to the anneal fraction ``s = 1 − (1 − s_min) f̃(u)``, f̃ normalized to [0, 1]).

Shapes (``SHAPES``): constant, step / multistep, exponential, inverse-time, linear, polynomial,
cosine (with power), SGDR (cosine with warm restarts), OneCycle, REX, sigmoid, Eigencurve,
piecewise-linear (:func:`shape_of_anneal` turns an anneal that was run into one), and linear
warm-up in front of any of them.

Exporters:

- :func:`to_anneal_schedule`: a piecewise-linear ``[(t µs, s), ...]`` for a D-Wave solver's
  properties (at most ``max_anneal_schedule_points``, slope ≤ 1/min(annealing_time_range), 0.01 µs
  time resolution; forward anneal for monotone shapes, reverse anneal starting and ending at s = 1
  for non-monotone ones), with the approximation error reported, checked by
  :meth:`dwave.system.DWaveSampler.validate_anneal_schedule`.
- :func:`to_beta_schedule`: an inverse-temperature schedule for ``dwave.samplers`` with
  ``beta_schedule_type='custom'``: ``T(u) = T₁ + (T₀ − T₁) f̃(u)``, ``β = 1/T``. With this map a
  linear-in-β schedule *is* inverse-time temperature decay and a geometric-β schedule *is*
  exponential decay (the exporter sets their rate from the β range; DESIGN.md §4).
- :func:`lr_schedule`: a learning-rate schedule (:class:`LRSchedule`, a callable ``step → lr``)
  that reproduces the PyTorch ``lr_scheduler`` class or the optax schedule of the same name, with
  every argument of the library (:data:`TORCH_SIGNATURES`, :data:`OPTAX_SIGNATURES`; unknown or
  missing arguments are refused with the library's own signature). Neither library is imported.

Learning-rate step convention
    PyTorch: ``lr(t)`` is ``optimizer.param_groups[0]["lr"]`` after ``t`` calls of
    ``scheduler.step()`` on a fresh ``torch.optim.SGD([p], lr=base_lr)`` (``t = 0``: right after the
    scheduler was built, the rate of the first ``optimizer.step()``). The classes are *ported*
    (torch 2.13 ``torch/optim/lr_scheduler.py``): the recursive ("chainable") updates PyTorch applies
    are replayed step by step on a simulated parameter group, so recursive round-off, the
    not-clamped ``CosineAnnealingLR`` after ``T_max``, ``SequentialLR``'s switch to the closed form at
    a milestone and ``ChainedScheduler``'s products match PyTorch bit for bit; ``OneCycleLR`` and
    ``CyclicLR`` also expose the momentum they set (:meth:`LRSchedule.momentum`). Where PyTorch
    raises at some step (``OneCycleLR`` past ``total_steps``, ``ConstantLR(factor=0)`` at
    ``total_iters``, a nested composite at a milestone) the schedule raises ``ValueError`` at the
    same step; ``last_epoch`` other than −1 (resuming) is refused.
    optax: ``lr(t)`` is ``schedule(count)`` with ``count = t`` the number of updates already applied
    (0 for the first), evaluated in float64 (optax's own float32 default differs by ~1e-7) and as
    optax evaluates it eagerly. Under ``jax.jit``/``vmap`` XLA divides by a constant as a
    multiplication by its reciprocal, so a compiled ``exponential_decay(..., staircase=True)`` can
    step one count late at exact multiples of ``transition_steps`` (``417·(1/417) < 1``); qasa
    follows the eager value, which is optax's documented formula.
    Composition: ``SequentialLR``/``ChainedScheduler`` take :class:`LRSchedule` objects of PyTorch
    classes, which share one optimizer as in PyTorch; ``LambdaLR``/``MultiplicativeLR``/``CyclicLR``
    take any ``step → factor`` callable, and optax's ``join_schedules`` any ``step → value``
    callables — e.g. a :class:`Shape` as a learning rate (``lr_schedule(shape("rex"), horizon=1000)``).
    Parity: ``tests/test_lr_parity.py`` (pinned sequences; the real libraries when installed) and
    ``python tests/data/gen_lr_reference.py --check`` (randomized, per-family table).

Eigencurve (Pan, Ye, Zhang 2021) is implemented here as the piecewise inverse-time decay its paper
motivates: for a Hessian spectrum sorted in decreasing order, the horizon is split into phases of
geometrically growing length, and phase i decays as ``1/(1 + λ_i η₀ (t − t_i))`` from the rate
reached at its start, so the schedule follows the largest curvatures first and the smallest last.
It is a construction after that paper, not a reproduction of its code.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from qasa.errors import ProtocolError

__all__ = ["Shape", "SHAPES", "shape", "shape_of_anneal", "to_anneal_schedule", "to_beta_schedule", "lr_schedule",
           "LRSchedule", "AnnealExport", "TORCH_SCHEDULERS", "OPTAX_SCHEDULES", "TORCH_SIGNATURES",
           "OPTAX_SIGNATURES"]


def _u(u) -> np.ndarray:
    return np.clip(np.asarray(u, dtype=float), 0.0, 1.0)


def _constant(u, **_):
    return np.ones_like(_u(u))


def _step(u, milestones=(0.5,), gamma=0.1, **_):
    u = _u(u)
    k = np.zeros_like(u)
    for m in milestones:
        k += u >= m
    return gamma ** k


def _exponential(u, final=0.01, **_):
    return final ** _u(u)


def _inverse_time(u, k=10.0, **_):
    return 1.0 / (1.0 + k * _u(u))


def _linear(u, final=0.0, **_):
    return 1.0 - (1.0 - final) * _u(u)


def _polynomial(u, power=2.0, final=0.0, **_):
    return final + (1.0 - final) * (1.0 - _u(u)) ** power


def _cosine(u, final=0.0, power=1.0, **_):
    return final + (1.0 - final) * (0.5 * (1.0 + np.cos(np.pi * _u(u)))) ** power


def _sgdr(u, cycles=3, mult=1.0, final=0.0, **_):
    u = _u(u)
    lengths = np.array([mult ** i for i in range(int(cycles))], float)
    edges = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    i = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, len(lengths) - 1)
    local = (u - edges[i]) / (edges[i + 1] - edges[i])
    return final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * local))


def _onecycle(u, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, **_):
    u = _u(u)
    start, low = 1.0 / div_factor, 1.0 / div_factor / final_div_factor
    up = 0.5 * (1 - np.cos(np.pi * np.clip(u / pct_start, 0, 1)))
    down = 0.5 * (1 + np.cos(np.pi * np.clip((u - pct_start) / (1 - pct_start), 0, 1)))
    return np.where(u <= pct_start, start + (1 - start) * up, low + (1 - low) * down)


def _rex(u, final=0.0, **_):
    z = 1.0 - _u(u)
    return final + (1.0 - final) * z / (0.5 + 0.5 * z)


def _sigmoid(u, k=10.0, center=0.5, **_):
    u = _u(u)
    s = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    top, bottom = s(k * center), s(-k * (1 - center))
    return (s(-k * (u - center)) - bottom) / (top - bottom)


def _eigencurve(u, spectrum=(1.0, 0.1, 0.01), eta0_lambda_max=1.0, horizon=1000, **_):
    u = _u(u)
    lam = np.sort(np.asarray(spectrum, float))[::-1]
    lam = lam / lam[0]
    n = len(lam)
    # phases of geometrically growing length (∝ 1/λ_i), normalized to the horizon
    lengths = 1.0 / lam
    edges = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    steps = u * horizon
    start_value = 1.0
    out = np.empty_like(u)
    for i in range(n):
        a, b = edges[i] * horizon, edges[i + 1] * horizon
        mask = (steps >= a) & ((steps < b) if i < n - 1 else (steps <= b))
        out[mask] = start_value / (1.0 + lam[i] * eta0_lambda_max * start_value * (steps[mask] - a))
        start_value = start_value / (1.0 + lam[i] * eta0_lambda_max * start_value * (b - a))
    return out


def _piecewise(u, knots=((0.0, 1.0), (1.0, 0.0)), **_):
    k = np.asarray(knots, float)
    return np.interp(_u(u), k[:, 0], k[:, 1])


_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "constant": _constant, "step": _step, "exponential": _exponential, "inverse-time": _inverse_time,
    "linear": _linear, "polynomial": _polynomial, "cosine": _cosine, "sgdr": _sgdr, "onecycle": _onecycle,
    "rex": _rex, "sigmoid": _sigmoid, "eigencurve": _eigencurve, "piecewise": _piecewise,
}


@dataclass(frozen=True)
class Shape:
    """A schedule shape: ``f(u)`` on normalized time, optionally after a linear warm-up.

    Args:
        name: a key of :data:`SHAPES`.
        params: the shape's parameters (see the module's functions; e.g. ``final``, ``k``).
        warmup: fraction of the horizon spent rising linearly from 0 to f(0) first.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in _FUNCS:
            raise ValueError(f"unknown shape {self.name!r}; choose one of {sorted(_FUNCS)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup={self.warmup} must lie in [0, 1)")

    def __call__(self, u) -> np.ndarray:
        u = _u(u)
        if self.warmup == 0:
            return _FUNCS[self.name](u, **self.params)
        w = self.warmup
        inner = _FUNCS[self.name](np.clip((u - w) / (1 - w), 0, 1), **self.params)
        head = _FUNCS[self.name](np.zeros(1), **self.params)[0]
        return np.where(u < w, head * u / w, inner)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items())
        name = f"{self.name}({extra})" if extra else self.name
        return f"warmup{self.warmup:g}+{name}" if self.warmup else name

    def normalized(self, u) -> np.ndarray:
        """f rescaled so that its largest value is 1 and its value at u = 1 is 0 (monotone shapes)
        or its smallest value is 0 (others)."""
        grid = np.linspace(0, 1, 2001)
        values = self(grid)
        top = values.max()
        bottom = self(np.ones(1))[0] if self.is_monotone() else values.min()
        if top == bottom:
            return np.ones_like(_u(u))
        return (self(u) - bottom) / (top - bottom)

    def is_monotone(self) -> bool:
        """True if f never increases on [0, 1] (a forward anneal can follow it)."""
        v = self(np.linspace(0, 1, 4001))
        return bool(np.all(np.diff(v) <= 1e-12))


SHAPES = tuple(_FUNCS)


def shape(name: str, warmup: float = 0.0, **params: Any) -> Shape:
    """Convenience constructor: ``shape("cosine", final=0.01)``."""
    return Shape(name, dict(params), warmup)


def shape_of_anneal(anneal: float | Sequence[Sequence[float]]) -> Shape:
    """The shape of an anneal that was run: the driver ``f(u) = 1 − s(u)`` on ``u = t/t_end``.

    ``anneal`` is an annealing time (a linear forward anneal, which is the ``linear`` shape) or a
    piecewise-linear ``[(t µs, s), ...]`` schedule (a ``piecewise`` shape through its breakpoints;
    :func:`to_anneal_schedule` of it with ``s_min=0`` gives the forward schedule back).

    Raises:
        ProtocolError: fewer than two points, times not increasing from 0, or s outside [0, 1].
    """
    if isinstance(anneal, (int, float, np.integer, np.floating)):
        if not anneal > 0:
            raise ProtocolError(f"annealing_time={anneal!r} µs must be positive")
        return shape("linear")
    pts = np.asarray(anneal, float)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ProtocolError(f"anneal schedule {anneal!r} must be a list of at least two (t µs, s) points")
    t, s = pts[:, 0], pts[:, 1]
    if t[0] != 0 or np.any(np.diff(t) <= 0):
        raise ProtocolError(f"anneal schedule times {t.tolist()} must start at 0 and increase")
    if np.any((s < 0) | (s > 1)):
        raise ProtocolError(f"anneal schedule s values {s.tolist()} must lie in [0, 1]")
    knots = tuple((float(a), float(1.0 - b)) for a, b in zip(t / t[-1], s))
    if knots == ((0.0, 1.0), (1.0, 0.0)):
        return shape("linear")
    return shape("piecewise", knots=knots)


# -- QPU anneal schedules ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnealExport:
    """A shape exported as a D-Wave anneal schedule.

    Attributes:
        schedule: ``[(t µs, s), ...]``.
        reverse: True for a reverse anneal (needs an ``initial_state``).
        max_error: largest |s_pwl(t) − s_shape(t)| on a fine grid.
        mean_error: mean |s_pwl(t) − s_shape(t)| over the anneal.
    """

    schedule: list[tuple[float, float]]
    reverse: bool
    max_error: float
    mean_error: float


def _properties(sampler_or_properties) -> Mapping[str, Any]:
    return getattr(sampler_or_properties, "properties", sampler_or_properties)


def to_anneal_schedule(sh: Shape, sampler_or_properties, annealing_time: float = 20.0,
                       s_min: float = 0.0, points: int | None = None) -> AnnealExport:
    """Export ``sh`` as a legal anneal schedule for a solver (see the module docstring).

    The s-path is ``s(u) = 1 − (1 − s_min) f̃(u)``. It is sampled on a grid of times that are
    multiples of the QPU's 0.01 µs resolution (at most ~4 000 intervals), slope-limited there to the
    solver's maximum |ds/dt| (a jump, as in a step shape or the start of a reverse anneal, becomes the
    steepest legal ramp), and approximated piecewise-linearly with breakpoints chosen greedily among
    those grid times where the approximation is worst. Because every breakpoint is a grid time, no
    two points round to the same time and the end points are exact: a forward anneal starts at
    (0, 0), a reverse anneal at (0, 1), and both end at (annealing_time, 1). A chord between grid
    points of a slope-limited path is itself within the slope limit. ``max_error``/``mean_error``
    compare the result with the unlimited shape, so a shape the solver cannot follow is visible
    rather than hidden.

    Args:
        sh: the shape.
        sampler_or_properties: a sampler (its ``properties``) or the properties dict.
        annealing_time: total duration in µs, a multiple of 0.01 µs.
        s_min: lowest anneal fraction reached (reverse anneals: the turning depth), in [0, 1).
        points: number of points (default: the solver's maximum).

    Raises:
        ProtocolError: a shape that never decreases (not an anneal), an annealing time outside
            the solver's range, not on the 0.01 µs grid or too short to reach s = 1, a bad ``s_min``
            or a bad number of points.
    """
    props = _properties(sampler_or_properties)
    tmin, tmax = props["annealing_time_range"]
    max_points = int(props["max_anneal_schedule_points"])
    npts = max_points if points is None else int(points)
    if not 2 <= npts <= max_points:
        raise ProtocolError(f"points={npts} must lie in [2, {max_points}] (max_anneal_schedule_points)")
    if not tmin <= annealing_time <= tmax:
        raise ProtocolError(f"annealing_time={annealing_time:g} µs is outside annealing_time_range [{tmin:g}, {tmax:g}]")
    centi = int(round(annealing_time * 100))
    if abs(centi - annealing_time * 100) > 1e-6:
        raise ProtocolError(f"annealing_time={annealing_time!r} µs is not a multiple of the QPU's 0.01 µs time resolution")
    if not 0.0 <= s_min < 1.0:
        raise ProtocolError(f"s_min={s_min!r} must lie in [0, 1)")
    fine = np.linspace(0, 1, 4001)
    if np.ptp(sh(fine)) == 0:
        raise ProtocolError(f"shape {sh.label} never changes: it is not an anneal")
    reverse = not sh.is_monotone()
    # the time grid, in units of 0.01 µs: every exported time is one of these integers / 100
    stride = max(1, -(-centi // 4000))
    grid = np.unique(np.concatenate([np.arange(0, centi, stride), [centi]]))
    t_full = grid / 100.0
    u_full = grid / centi
    s_target = 1.0 - (1.0 - s_min) * sh.normalized(u_full)
    # a forward anneal starts at s = 0, a reverse anneal at s = 1 (the initial state is read in there);
    # both end at s = 1. Jumps to or from the shape become the steepest legal ramps below.
    s_target[0] = 1.0 if reverse else 0.0
    s_target[-1] = 1.0
    limit = 1.0 / tmin
    s_lim = _slope_limited(t_full, s_target, limit, both_ways=reverse)
    if s_lim[-1] != 1.0:
        raise ProtocolError(f"annealing_time={annealing_time:g} µs is too short for the {sh.label} schedule to "
                            f"reach s = 1 at the solver's maximum slope {limit:g}/µs")
    knots = _greedy_knots(u_full, s_lim, npts, forced=[0, len(u_full) - 1])
    t = grid[knots] / 100.0
    s = np.clip(s_lim[knots], 0.0, 1.0)
    schedule = [(float(a), float(b)) for a, b in zip(t, s)]
    approx = np.interp(t_full, t, s)
    err = np.abs(approx - s_target)
    return AnnealExport(schedule, reverse, float(err.max()), float(err.mean()))


def _slope_limited(t: np.ndarray, s: np.ndarray, limit: float, both_ways: bool) -> np.ndarray:
    """Follow ``s`` as closely as a path with |ds/dt| ≤ limit can (monotone paths only rise)."""
    out = np.empty_like(s)
    out[0] = s[0]
    for i in range(1, len(s)):
        step = limit * (t[i] - t[i - 1])
        lo = out[i - 1] - step if both_ways else out[i - 1]
        out[i] = min(max(s[i], lo), out[i - 1] + step)
    return out


def _greedy_knots(x: np.ndarray, y: np.ndarray, n: int, forced: Sequence[int]) -> np.ndarray:
    knots = sorted(set(forced))
    while len(knots) < n:
        approx = np.interp(x, x[knots], y[knots])
        err = np.abs(approx - y)
        err[knots] = -1
        best = int(np.argmax(err))
        if err[best] <= 1e-12:
            break
        knots = sorted(knots + [best])
    return np.array(knots)


# -- simulated-annealing β schedules ------------------------------------------------------------------
def to_beta_schedule(sh: Shape, beta_range: tuple[float, float], num_sweeps: int) -> np.ndarray:
    """β for each sweep: ``T(u) = T₁ + (T₀ − T₁) f̃(u)``, u = k/(num_sweeps − 1).

    For ``inverse-time`` and ``exponential`` shapes the rate is set from the range
    (k = β₁/β₀ − 1, final = β₀/β₁), so they reproduce dwave-samplers' ``linear`` and
    ``geometric`` β schedules exactly.

    Raises:
        ValueError: for a non-positive β range or fewer than one sweep.
    """
    b0, b1 = map(float, beta_range)
    if not (0 < b0 and 0 < b1):
        raise ValueError(f"beta_range={beta_range} must be positive")
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps={num_sweeps} must be at least 1")
    if sh.name == "inverse-time" and sh.warmup == 0:
        sh = Shape("inverse-time", {"k": b1 / b0 - 1.0})
    elif sh.name == "exponential" and sh.warmup == 0:
        sh = Shape("exponential", {"final": b0 / b1})
    u = np.linspace(0, 1, num_sweeps) if num_sweeps > 1 else np.ones(1)
    T0, T1 = 1.0 / b0, 1.0 / b1
    T = T1 + (T0 - T1) * sh.normalized(u)
    return 1.0 / T


# -- learning-rate schedules with library conventions -------------------------------------------------
_REQUIRED = object()

TORCH_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "LambdaLR": (("lr_lambda", _REQUIRED), ("last_epoch", -1)),
    "MultiplicativeLR": (("lr_lambda", _REQUIRED), ("last_epoch", -1)),
    "StepLR": (("step_size", _REQUIRED), ("gamma", 0.1), ("last_epoch", -1)),
    "MultiStepLR": (("milestones", _REQUIRED), ("gamma", 0.1), ("last_epoch", -1)),
    "ConstantLR": (("factor", 1.0 / 3), ("total_iters", 5), ("last_epoch", -1)),
    "LinearLR": (("start_factor", 1.0 / 3), ("end_factor", 1.0), ("total_iters", 5), ("last_epoch", -1)),
    "ExponentialLR": (("gamma", _REQUIRED), ("last_epoch", -1)),
    "SequentialLR": (("schedulers", _REQUIRED), ("milestones", _REQUIRED), ("last_epoch", -1)),
    "PolynomialLR": (("total_iters", 5), ("power", 1.0), ("last_epoch", -1)),
    "CosineAnnealingLR": (("T_max", _REQUIRED), ("eta_min", 0.0), ("last_epoch", -1)),
    "ChainedScheduler": (("schedulers", _REQUIRED), ("optimizer", None)),
    "CyclicLR": (("base_lr", _REQUIRED), ("max_lr", _REQUIRED), ("step_size_up", 2000), ("step_size_down", None),
                 ("mode", "triangular"), ("gamma", 1.0), ("scale_fn", None), ("scale_mode", "cycle"),
                 ("cycle_momentum", True), ("base_momentum", 0.8), ("max_momentum", 0.9), ("last_epoch", -1)),
    "CosineAnnealingWarmRestarts": (("T_0", _REQUIRED), ("T_mult", 1), ("eta_min", 0.0), ("last_epoch", -1)),
    "OneCycleLR": (("max_lr", _REQUIRED), ("total_steps", None), ("epochs", None), ("steps_per_epoch", None),
                   ("pct_start", 0.3), ("anneal_strategy", "cos"), ("cycle_momentum", True), ("base_momentum", 0.85),
                   ("max_momentum", 0.95), ("div_factor", 25.0), ("final_div_factor", 1e4), ("three_phase", False),
                   ("last_epoch", -1)),
}
"""Keyword arguments of every supported ``torch.optim.lr_scheduler`` class (torch 2.13), after ``optimizer``."""

OPTAX_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "constant_schedule": (("value", _REQUIRED),),
    "polynomial_schedule": (("init_value", _REQUIRED), ("end_value", _REQUIRED), ("power", _REQUIRED),
                            ("transition_steps", _REQUIRED), ("transition_begin", 0)),
    "linear_schedule": (("init_value", _REQUIRED), ("end_value", _REQUIRED), ("transition_steps", _REQUIRED),
                        ("transition_begin", 0)),
    "piecewise_constant_schedule": (("init_value", _REQUIRED), ("boundaries_and_scales", None)),
    "exponential_decay": (("init_value", _REQUIRED), ("transition_steps", _REQUIRED), ("decay_rate", _REQUIRED),
                          ("transition_begin", 0), ("staircase", False), ("end_value", None)),
    "cosine_decay_schedule": (("init_value", _REQUIRED), ("decay_steps", _REQUIRED), ("alpha", 0.0),
                              ("exponent", 1.0)),
    "piecewise_interpolate_schedule": (("interpolate_type", _REQUIRED), ("init_value", _REQUIRED),
                                       ("boundaries_and_scales", None)),
    "linear_onecycle_schedule": (("transition_steps", _REQUIRED), ("peak_value", _REQUIRED), ("pct_start", 0.3),
                                 ("pct_final", 0.85), ("div_factor", 25.0), ("final_div_factor", 1e4)),
    "cosine_onecycle_schedule": (("transition_steps", _REQUIRED), ("peak_value", _REQUIRED), ("pct_start", 0.3),
                                 ("div_factor", 25.0), ("final_div_factor", 1e4)),
    "warmup_constant_schedule": (("init_value", _REQUIRED), ("peak_value", _REQUIRED), ("warmup_steps", _REQUIRED)),
    "warmup_cosine_decay_schedule": (("init_value", _REQUIRED), ("peak_value", _REQUIRED), ("warmup_steps", _REQUIRED),
                                     ("decay_steps", _REQUIRED), ("end_value", 0.0), ("exponent", 1.0)),
    "warmup_exponential_decay_schedule": (("init_value", _REQUIRED), ("peak_value", _REQUIRED),
                                          ("warmup_steps", _REQUIRED), ("transition_steps", _REQUIRED),
                                          ("decay_rate", _REQUIRED), ("transition_begin", 0), ("staircase", False),
                                          ("end_value", None)),
    "sgdr_schedule": (("cosine_kwargs", _REQUIRED),),
    "join_schedules": (("schedules", _REQUIRED), ("boundaries", _REQUIRED)),
}
"""Arguments of every supported optax schedule (optax 0.2.8)."""

TORCH_SCHEDULERS = tuple(TORCH_SIGNATURES)
OPTAX_SCHEDULES = tuple(OPTAX_SIGNATURES)


def _signature_text(name: str, sig: Sequence[tuple[str, Any]]) -> str:
    return f"{name}(" + ", ".join(k if d is _REQUIRED else f"{k}={d!r}" for k, d in sig) + ")"


def _bind(name: str, sig: Sequence[tuple[str, Any]], params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check keyword arguments against a library signature; return them with the defaults filled in."""
    names = [k for k, _ in sig]
    unknown = [k for k in params if k not in names]
    if unknown:
        raise TypeError(f"{where} {name}() got unexpected argument(s) {unknown}; it takes {_signature_text(name, sig)}")
    missing = [k for k, d in sig if d is _REQUIRED and k not in params]
    if missing:
        raise TypeError(f"{where} {name}() is missing required argument(s) {missing}; it takes "
                        f"{_signature_text(name, sig)}")
    return {k: _plain(params[k]) if k in params else d for k, d in sig}


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers (torch checks ``isinstance(x, int)``; JSON gives plain numbers)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class LRSchedule:
    """A learning-rate schedule ``step → lr`` with the conventions of the library it is named after.

    Built by :func:`lr_schedule`; call it with a step ``t`` (an integer ≥ 0), or take
    :meth:`values`. For PyTorch schedulers ``t`` is the number of ``scheduler.step()`` calls made so
    far and the value is the optimizer's ``param_groups[0]["lr"]`` at that moment (``t = 0``: right
    after construction). For optax schedules ``t`` is optax's ``count`` (0 for the first update).
    For shapes ``lr = base_lr · f(t / horizon)``.

    Attributes:
        library: ``"torch"``, ``"optax"`` or ``"shape"``.
        name: the class / function name, or the shape's label.
        params: the library's arguments with its defaults filled in.
        base_lr: the optimizer's initial learning rate (PyTorch; ``None`` when not given).
    """

    def __init__(self, library: str, name: str, params: Mapping[str, Any], base_lr: float | None,
                 fn: Callable[[int], float] | None = None) -> None:
        self.library, self.name, self.params, self.base_lr = library, name, dict(params), base_lr
        self._fn = fn
        self._values: list[float] = []
        self._momenta: list[float | None] = []
        self._sim: Any = None
        if library == "torch":
            self._start_torch()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        lr = f"base_lr={self.base_lr!r}, " if self.base_lr is not None else ""
        return f"lr_schedule({self.name!r}, {lr}{args})"

    # -- evaluation ---------------------------------------------------------------------------------
    def __call__(self, t: int) -> float:
        t = _step_index(t)
        if self.library != "torch":
            return float(self._fn(t))
        self._advance(t)
        return self._values[t]

    def values(self, n: int) -> np.ndarray:
        """``lr(0), …, lr(n − 1)`` as a float64 array."""
        if self.library == "torch":
            if n > 0:
                self._advance(n - 1)
            return np.array(self._values[:n], float)
        return np.array([self._fn(t) for t in range(n)], float)

    def momentum(self, t: int) -> float | None:
        """The momentum PyTorch's ``OneCycleLR``/``CyclicLR`` set at step ``t`` when ``cycle_momentum``
        is on (``param_groups[0]["momentum"]`` of an SGD optimizer); ``None`` for other schedules."""
        if self.library != "torch":
            return None
        t = _step_index(t)
        self._advance(t)
        return self._momenta[t]

    # -- PyTorch simulation -------------------------------------------------------------------------
    def _start_torch(self) -> None:
        opt = _TorchOptimizer(_torch_optimizer_lr(self))
        try:
            self._sim = _torch_build(self, opt)
        except (ZeroDivisionError, NotImplementedError) as exc:
            raise ValueError(f"{self!r} fails on construction as in PyTorch: {type(exc).__name__}: {exc}") from None
        self._opt = opt
        self._values = [opt.group["lr"]]
        self._momenta = [opt.group.get("momentum") if opt.momentum_set else None]

    def _advance(self, t: int) -> None:
        while len(self._values) <= t:
            try:
                self._sim.step()
            except (ZeroDivisionError, NotImplementedError, ValueError) as exc:
                kind = type(exc).__name__
                raise ValueError(f"{self!r} cannot reach step {len(self._values)}: PyTorch raises {kind} there "
                                 f"({exc})") from None
            self._values.append(self._opt.group["lr"])
            self._momenta.append(self._opt.group.get("momentum") if self._opt.momentum_set else None)


def _step_index(t: Any) -> int:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or t < 0:
        if isinstance(t, (float, np.floating)) and float(t).is_integer() and t >= 0:
            return int(t)
        raise ValueError(f"step={t!r} must be an integer ≥ 0")
    return int(t)


# -- PyTorch: a port of torch/optim/lr_scheduler.py (torch 2.13, BSD-3) on a one-group SGD optimizer -------
class _TorchOptimizer:
    """The one parameter group of ``torch.optim.SGD([p], lr=base_lr)`` that schedulers read and write."""

    def __init__(self, lr: float) -> None:
        self.group: dict[str, Any] = {"lr": lr, "momentum": 0.0}
        self.momentum_set = False


class _TorchScheduler:
    closed_form = False

    def __init__(self, opt: _TorchOptimizer, last_epoch: int = -1) -> None:
        opt.group.setdefault("initial_lr", opt.group["lr"])
        self.optimizer = opt
        self.base_lr = opt.group["initial_lr"]
        self.last_epoch = last_epoch
        self._initial_step()

    @property
    def lr(self) -> float:
        return self.optimizer.group["lr"]

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            value = self.get_lr()
        else:
            self.last_epoch = epoch
            value = self.get_closed_form_lr() if self.closed_form else self.get_lr()
        self.optimizer.group["lr"] = value

    def get_lr(self) -> float:
        raise NotImplementedError

    def get_closed_form_lr(self) -> float:
        raise NotImplementedError


class _LambdaLR(_TorchScheduler):
    def __init__(self, opt, lr_lambda, last_epoch=-1):
        self.f = lr_lambda
        super().__init__(opt, last_epoch)

    def get_lr(self):
        return self.base_lr * self.f(self.last_epoch)


class _MultiplicativeLR(_LambdaLR):
    def get_lr(self):
        return self.lr if self._is_initial else self.lr * self.f(self.last_epoch)


class _StepLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(opt, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.lr
        return self.lr * self.gamma

    def get_closed_form_lr(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class _MultiStepLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(opt, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self.lr
        return self.lr * self.gamma ** self.milestones[self.last_epoch]

    def get_closed_form_lr(self):
        return self.base_lr * self.gamma ** bisect_right(sorted(self.milestones.elements()), self.last_epoch)


class _ConstantLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError(f"ConstantLR factor={factor!r} must lie in [0, 1] (PyTorch: 'Constant multiplicative "
                             "factor expected to be between 0 and 1.')")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(opt, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return self.lr * self.factor
        if self.last_epoch != self.total_iters:
            return self.lr
        return self.lr * (1.0 / self.factor)

    def get_closed_form_lr(self):
        return self.base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))


class _LinearLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(f"LinearLR start_factor={start_factor!r} must lie in (0, 1]")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError(f"LinearLR end_factor={end_factor!r} must lie in [0, 1]")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(opt, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return self.lr * self.start_factor
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.lr
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return self.lr * (1.0 + (b - a) / (n * a + (self.last_epoch - 1) * (b - a)))

    def get_closed_form_lr(self):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return self.base_lr * (a + (b - a) * min(n, self.last_epoch) / n)


class _ExponentialLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(opt, last_epoch)

    def get_lr(self):
        return self.lr if self._is_initial else self.lr * self.gamma

    def get_closed_form_lr(self):
        return self.base_lr * self.gamma ** self.last_epoch


class _PolynomialLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters, self.power = total_iters, power
        super().__init__(opt, last_epoch)

    def get_lr(self):
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.lr
        n = self.total_iters
        return self.lr * ((1.0 - self.last_epoch / n) / (1.0 - (self.last_epoch - 1) / n)) ** self.power

    def get_closed_form_lr(self):
        return self.base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power


class _CosineAnnealingLR(_TorchScheduler):
    closed_form = True

    def __init__(self, opt, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(opt, last_epoch)

    def get_lr(self):
        e, T = self.last_epoch, self.T_max
        if self._is_initial:
            return self.lr
        if self._step_count == 1 and e > 0:
            return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(e * math.pi / T)) / 2
        if (e - 1 - T) % (2 * T) == 0:
            return self.lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (self.lr - self.eta_min) + self.eta_min)

    def get_closed_form_lr(self):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class _CyclicLR(_TorchScheduler):
    def __init__(self, opt, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular", gamma=1.0,
                 scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8, max_momentum=0.9,
                 last_epoch=-1):
        opt.group["lr"] = base_lr
        self.max_lr = max_lr
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"CyclicLR mode={mode!r} is not one of 'triangular', 'triangular2', 'exp_range' and "
                             "scale_fn is None")
        self.mode, self.gamma, self.custom, self.scale_mode = mode, gamma, scale_fn, scale_mode
        if scale_fn is None:
            self.scale_mode = {"triangular": "cycle", "triangular2": "cycle", "exp_range": "iterations"}[mode]
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.base_momentum, self.max_momentum = base_momentum, max_momentum
            opt.group["momentum"] = max_momentum
            opt.momentum_set = True
        super().__init__(opt, last_epoch)
        self.base_lr = base_lr

    def scale_fn(self, x):
        if self.custom is not None:
            return self.custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / 2.0 ** (x - 1)
        return self.gamma ** x

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        scale = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        arg = cycle if self.scale_mode == "cycle" else self.last_epoch
        lr = self.base_lr + (self.max_lr - self.base_lr) * scale * self.scale_fn(arg)
        if self.cycle_momentum:
            height = (self.max_momentum - self.base_momentum) * scale
            self.optimizer.group["momentum"] = self.max_momentum - height * self.scale_fn(arg)
        return lr


class _CosineAnnealingWarmRestarts(_TorchScheduler):
    def __init__(self, opt, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"CosineAnnealingWarmRestarts T_0={T_0!r} must be a positive integer")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"CosineAnnealingWarmRestarts T_mult={T_mult!r} must be an integer ≥ 1")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"CosineAnnealingWarmRestarts eta_min={eta_min!r} must be a float or int")
        self.T_0 = self.T_i = T_0
        self.T_mult, self.eta_min, self.T_cur = T_mult, eta_min, last_epoch
        super().__init__(opt, last_epoch)

    def get_lr(self):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2

    def step(self):
        if self.last_epoch < 0:
            epoch = 0
            self.T_i, self.T_cur = self.T_0, epoch
        else:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        self.last_epoch = math.floor(epoch)
        self.optimizer.group["lr"] = self.get_lr()


class _OneCycleLR(_TorchScheduler):
    def __init__(self, opt, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"OneCycleLR total_steps={total_steps!r} must be a positive integer")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"OneCycleLR epochs={epochs!r} must be a positive integer")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"OneCycleLR steps_per_epoch={steps_per_epoch!r} must be a positive integer")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("OneCycleLR needs total_steps or (epochs and steps_per_epoch)")
        n = self.total_steps
        if three_phase:
            self.phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                           (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self.phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"OneCycleLR pct_start={pct_start!r} must be a float in [0, 1] (PyTorch refuses ints)")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR anneal_strategy={anneal_strategy!r} must be 'cos' or 'linear'")
        self.anneal = self._cos if anneal_strategy == "cos" else self._linear
        g = opt.group
        g["initial_lr"] = max_lr / div_factor
        g["max_lr"] = max_lr
        g["min_lr"] = g["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            g["momentum"], g["max_momentum"], g["base_momentum"] = max_momentum, max_momentum, base_momentum
            opt.momentum_set = True
        super().__init__(opt, last_epoch)

    @staticmethod
    def _cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    @staticmethod
    def _linear(start, end, pct):
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is {self.total_steps}")
        g = self.optimizer.group
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                lr = self.anneal(g[lr0], g[lr1], pct)
                if self.cycle_momentum:
                    g["momentum"] = self.anneal(g[m0], g[m1], pct)
                return lr
            start = end
        raise AssertionError("unreachable")


class _SequentialLR(_TorchScheduler):
    def __init__(self, opt, schedulers, milestones, last_epoch=-1):
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR takes one milestone fewer than schedulers: {len(schedulers)} schedulers, "
                             f"{len(milestones)} milestones")
        self._schedulers, self._milestones = schedulers, list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = opt
        opt.group["lr"] = opt.group["initial_lr"]
        self._undo(self)
        self._schedulers[bisect_right(self._milestones, 0)]._initial_step()

    @classmethod
    def _undo(cls, sched) -> None:
        for s in sched._schedulers:
            if hasattr(s, "_schedulers"):
                cls._undo(s)
            elif hasattr(s, "last_epoch"):
                s.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()


class _ChainedScheduler(_TorchScheduler):
    def __init__(self, opt, schedulers, optimizer=None):
        if len(schedulers) < 1:
            raise ValueError("ChainedScheduler expects at least one scheduler")
        self._schedulers, self.optimizer = schedulers, opt

    def step(self):
        for s in self._schedulers:
            s.step()


_TORCH_CLASSES: dict[str, type] = {
    "LambdaLR": _LambdaLR, "MultiplicativeLR": _MultiplicativeLR, "StepLR": _StepLR, "MultiStepLR": _MultiStepLR,
    "ConstantLR": _ConstantLR, "LinearLR": _LinearLR, "ExponentialLR": _ExponentialLR, "SequentialLR": _SequentialLR,
    "PolynomialLR": _PolynomialLR, "CosineAnnealingLR": _CosineAnnealingLR, "ChainedScheduler": _ChainedScheduler,
    "CyclicLR": _CyclicLR, "CosineAnnealingWarmRestarts": _CosineAnnealingWarmRestarts, "OneCycleLR": _OneCycleLR,
}
_TORCH_COMPOSITES = ("SequentialLR", "ChainedScheduler")


def _torch_check(name: str, p: dict[str, Any]) -> None:
    """Refusals where PyTorch itself would fail (at construction or at a later step), with the reason."""
    if "last_epoch" in p and p["last_epoch"] != -1:
        raise ValueError(f"{name} last_epoch={p['last_epoch']!r}: only -1 (a new scheduler) is supported; PyTorch "
                         "needs a restored optimizer state for other values. Index the schedule by step instead.")
    if name == "ChainedScheduler" and p["optimizer"] is not None:
        raise ValueError("ChainedScheduler optimizer: the schedulers share one simulated optimizer; leave it None")
    for key in ("lr_lambda", "scale_fn"):
        if key not in p:
            continue
        f = p[key]
        if isinstance(f, (list, tuple)):
            if len(f) != 1:
                raise ValueError(f"{name} {key}: one parameter group is simulated, so give one callable, not {len(f)}")
            p[key] = f = f[0]
        if key == "lr_lambda" and not callable(f):
            raise TypeError(f"{name} lr_lambda should be a function, but got {type(f).__name__}")
        if key == "scale_fn" and f is not None and not callable(f):
            raise TypeError(f"{name} scale_fn should be a function or None, but got {type(f).__name__}")
    for key in ("max_lr", "base_lr", "base_momentum", "max_momentum"):
        if isinstance(p.get(key), (list, tuple)):
            if len(p[key]) != 1:
                raise ValueError(f"{name} {key}: one parameter group is simulated, so give one value")
            p[key] = _plain(p[key][0])
    if name == "StepLR" and p["step_size"] == 0:
        raise ValueError("StepLR step_size=0: PyTorch raises ZeroDivisionError at the first step; use a step_size ≠ 0")
    if name == "CosineAnnealingLR" and p["T_max"] == 0:
        raise ValueError("CosineAnnealingLR T_max=0: PyTorch divides by T_max and raises ZeroDivisionError")
    if name in _TORCH_COMPOSITES:
        scheds = p["schedulers"]
        if not isinstance(scheds, (list, tuple)):
            raise TypeError(f"{name} schedulers must be a list of PyTorch schedules made by lr_schedule()")
        for i, s in enumerate(scheds):
            if not (isinstance(s, LRSchedule) and s.library == "torch"):
                raise TypeError(f"{name} schedulers[{i}] is {s!r}, not a PyTorch schedule made by lr_schedule(); wrap "
                                "any other step → factor callable in lr_schedule('LambdaLR', lr_lambda=...)")


def _torch_optimizer_lr(sched: LRSchedule) -> float:
    """The optimizer's lr: the schedule's own ``base_lr``, else the one its parts agree on, else 1.0."""
    if sched.base_lr is not None:
        return sched.base_lr
    found = {s.base_lr for s in _torch_leaves(sched) if s.base_lr is not None}
    if len(found) > 1:
        raise ValueError(f"{sched.name}: its schedulers were given different base_lr {sorted(found)}; they share one "
                         "optimizer, so give the composite one base_lr")
    return found.pop() if found else 1.0


def _torch_leaves(sched: LRSchedule) -> list[LRSchedule]:
    if sched.name not in _TORCH_COMPOSITES:
        return [sched]
    return [leaf for s in sched.params["schedulers"] for leaf in _torch_leaves(s)]


def _torch_build(sched: LRSchedule, opt: _TorchOptimizer) -> _TorchScheduler:
    """Construct the simulated scheduler on ``opt`` in the order a user would (children first)."""
    p = dict(sched.params)
    if sched.name in _TORCH_COMPOSITES:
        p["schedulers"] = [_torch_build(s, opt) for s in p["schedulers"]]
    return _TORCH_CLASSES[sched.name](opt, **p)


# -- optax: a port of optax/schedules (optax 0.2.8, Apache-2.0) in float64 ------------------------------------
def _pow(x: float, p: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(x), np.float64(p)))


def _ox_constant(value):
    return lambda count: value


def _ox_polynomial(init_value, end_value, power, transition_steps, transition_begin=0):
    if transition_steps <= 0:
        return lambda count: init_value
    begin = max(transition_begin, 0)

    def schedule(count):
        c = min(max(count - begin, 0), transition_steps)
        return (init_value - end_value) * _pow(1 - c / transition_steps, power) + end_value
    return schedule


def _ox_linear(init_value, end_value, transition_steps, transition_begin=0):
    return _ox_polynomial(init_value, end_value, 1, transition_steps, transition_begin)


def _check_scales(name, boundaries_and_scales):
    if boundaries_and_scales is not None and not all(s >= 0.0 for s in boundaries_and_scales.values()):
        raise ValueError(f"{name} expects non-negative scale factors, got {boundaries_and_scales!r}")


def _ox_piecewise_constant(init_value, boundaries_and_scales=None):
    _check_scales("piecewise_constant_schedule", boundaries_and_scales)
    items = sorted(boundaries_and_scales.items()) if boundaries_and_scales is not None else []

    def schedule(count):
        v = init_value
        for threshold, scale in items:
            indicator = max(0.0, float(np.sign(threshold - count)))
            v = v * indicator + (1 - indicator) * scale * v
        return v
    return schedule


def _ox_exponential(init_value, transition_steps, decay_rate, transition_begin=0, staircase=False, end_value=None):
    if transition_steps <= 0 or decay_rate == 0:
        return lambda count: init_value
    begin = max(transition_begin, 0)
    clip = (max if decay_rate < 1.0 else min) if end_value is not None else None

    def schedule(count):
        dc = count - begin
        p = dc / transition_steps
        if staircase:
            p = math.floor(p)
        v = init_value if dc <= 0 else init_value * _pow(decay_rate, p)
        return clip(v, end_value) if clip is not None else v
    return schedule


def _ox_cosine(init_value, decay_steps, alpha=0.0, exponent=1.0):
    if not decay_steps > 0:
        raise ValueError(f"cosine_decay_schedule requires positive decay_steps, got decay_steps={decay_steps!r}")
    n = float(decay_steps)

    def schedule(count):
        c = min(float(count), n)
        return init_value * ((1 - alpha) * _pow(0.5 * (1 + math.cos(math.pi * c / n)), exponent) + alpha)
    return schedule


def _ox_piecewise_interpolate(interpolate_type, init_value, boundaries_and_scales=None):
    if interpolate_type == "linear":
        def interp(a, b, pct):
            return (b - a) * pct + a
    elif interpolate_type == "cosine":
        def interp(a, b, pct):
            return b + (a - b) / 2.0 * (np.cos(np.pi * pct) + 1)
    else:
        raise ValueError(f"interpolate_type={interpolate_type!r} must be either 'cosine' or 'linear'")
    _check_scales("piecewise_interpolate_schedule", boundaries_and_scales)
    if boundaries_and_scales:
        boundaries, scales = zip(*sorted(boundaries_and_scales.items()))
    else:
        boundaries, scales = (), ()
    bounds = np.array((0,) + tuple(boundaries))
    values = np.cumprod(np.array((init_value,) + tuple(scales), float))
    sizes = np.maximum(bounds[1:] - bounds[:-1], 1)

    def schedule(count):
        indicator = (bounds[:-1] <= count) & (count < bounds[1:])
        pct = (count - bounds[:-1]) / sizes
        return float(indicator.astype(float) @ interp(values[:-1], values[1:], pct)
                     + (bounds[-1] <= count) * values[-1])
    return schedule


def _ox_linear_onecycle(transition_steps, peak_value, pct_start=0.3, pct_final=0.85, div_factor=25.0,
                        final_div_factor=1e4):
    if transition_steps <= 0:
        raise ValueError(f"linear_onecycle_schedule transition_steps={transition_steps!r} must be positive")
    return _ox_piecewise_interpolate("linear", peak_value / div_factor, {
        int(pct_start * transition_steps): div_factor, int(pct_final * transition_steps): 1.0 / div_factor,
        transition_steps: 1.0 / final_div_factor})


def _ox_cosine_onecycle(transition_steps, peak_value, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    if transition_steps <= 0:
        raise ValueError(f"cosine_onecycle_schedule transition_steps={transition_steps!r} must be positive")
    return _ox_piecewise_interpolate("cosine", peak_value / div_factor, {
        int(pct_start * transition_steps): div_factor, int(transition_steps): 1.0 / (div_factor * final_div_factor)})


def _ox_warmup_constant(init_value, peak_value, warmup_steps):
    return _ox_linear(init_value, peak_value, warmup_steps)


def _ox_join(schedules, boundaries):
    pairs = list(zip(boundaries, schedules[1:]))

    def schedule(count):
        f, offset = schedules[0], 0
        for boundary, s in pairs:
            if not count < boundary:
                f, offset = s, boundary
        return f(count - offset)
    return schedule


def _ox_warmup_cosine(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0, exponent=1.0):
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return _ox_join([_ox_linear(init_value, peak_value, warmup_steps),
                     _ox_cosine(peak_value, decay_steps - warmup_steps, alpha, exponent)], [warmup_steps])


def _ox_warmup_exponential(init_value, peak_value, warmup_steps, transition_steps, decay_rate, transition_begin=0,
                           staircase=False, end_value=None):
    return _ox_join([_ox_linear(init_value, peak_value, warmup_steps),
                     _ox_exponential(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)],
                    [warmup_steps])


def _ox_sgdr(cosine_kwargs):
    boundaries, schedules, step = [], [], 0
    for i, kwargs in enumerate(cosine_kwargs):
        bound = _bind("warmup_cosine_decay_schedule", OPTAX_SIGNATURES["warmup_cosine_decay_schedule"], kwargs,
                      f"sgdr_schedule cosine_kwargs[{i}]:")
        schedules.append(_ox_warmup_cosine(**bound))
        boundaries.append(step + bound["decay_steps"])
        step += bound["decay_steps"]
    if not schedules:
        raise ValueError("sgdr_schedule needs at least one cycle in cosine_kwargs")
    return _ox_join(schedules, boundaries[:-1])


_OPTAX_FUNCS: dict[str, Callable[..., Callable[[int], float]]] = {
    "constant_schedule": _ox_constant, "polynomial_schedule": _ox_polynomial, "linear_schedule": _ox_linear,
    "piecewise_constant_schedule": _ox_piecewise_constant, "exponential_decay": _ox_exponential,
    "cosine_decay_schedule": _ox_cosine, "piecewise_interpolate_schedule": _ox_piecewise_interpolate,
    "linear_onecycle_schedule": _ox_linear_onecycle, "cosine_onecycle_schedule": _ox_cosine_onecycle,
    "warmup_constant_schedule": _ox_warmup_constant, "warmup_cosine_decay_schedule": _ox_warmup_cosine,
    "warmup_exponential_decay_schedule": _ox_warmup_exponential, "sgdr_schedule": _ox_sgdr,
    "join_schedules": _ox_join,
}


def lr_schedule(name: str | Shape, base_lr: float | None = None, horizon: int | None = None, **params: Any
                ) -> LRSchedule:
    """A learning-rate schedule ``step → lr`` (see :class:`LRSchedule` for the step convention).

    Args:
        name: a PyTorch scheduler class name (:data:`TORCH_SCHEDULERS`), an optax schedule name
            (:data:`OPTAX_SCHEDULES`), or a :class:`Shape` (then ``lr = base_lr · f(step / horizon)``).
        base_lr: PyTorch: the optimizer's initial learning rate (default 1.0; for a composite, the
            one its parts were given); ``CyclicLR`` takes it as its own ``base_lr``. Shapes: η₀.
            optax schedules take no base_lr (their values are absolute).
        horizon: number of steps a shape spans (shapes only).
        **params: the library's own arguments (:data:`TORCH_SIGNATURES`, :data:`OPTAX_SIGNATURES`);
            callables where the library takes them (``lr_lambda``, ``scale_fn``, ``schedules`` of
            ``join_schedules`` — any ``step → value`` callable, e.g. another :class:`LRSchedule`), and
            :class:`LRSchedule` objects for the ``schedulers`` of ``SequentialLR``/``ChainedScheduler``.

    Raises:
        TypeError: an unknown or missing argument (the message lists the library's signature).
        ValueError: an unknown name, or a value the library refuses (or fails on at construction).
    """
    if isinstance(name, Shape):
        if params:
            raise TypeError(f"a shape takes base_lr and horizon only, not {sorted(params)}")
        if not horizon or horizon <= 0:
            raise ValueError(f"horizon={horizon!r}: a shape needs a positive number of steps")
        sh, eta0, n = name, 1.0 if base_lr is None else float(base_lr), horizon
        return LRSchedule("shape", sh.label, {"horizon": n}, eta0,
                          lambda t: float(eta0 * sh(np.array([t / n]))[0]))
    if horizon is not None:
        raise TypeError(f"horizon is for shapes; {name!r} takes its own arguments")
    if name in TORCH_SIGNATURES:
        if name == "CyclicLR" and base_lr is not None:
            params = {"base_lr": base_lr, **params}
            base_lr = None
        p = _bind(name, TORCH_SIGNATURES[name], params, "PyTorch")
        _torch_check(name, p)
        if base_lr is not None and base_lr < 0:
            raise ValueError(f"base_lr={base_lr!r}: torch.optim.SGD refuses a negative learning rate")
        return LRSchedule("torch", name, p, None if base_lr is None else float(base_lr))
    if name in OPTAX_SIGNATURES:
        if base_lr is not None:
            raise TypeError(f"optax's {name} takes no base_lr; its values are absolute (e.g. init_value)")
        p = _bind(name, OPTAX_SIGNATURES[name], params, "optax")
        if name == "join_schedules":
            if not all(callable(s) for s in p["schedules"]):
                raise TypeError("join_schedules schedules must be callables step → value")
            p["schedules"], p["boundaries"] = list(p["schedules"]), list(p["boundaries"])
        if name == "sgdr_schedule":
            p["cosine_kwargs"] = [dict(k) for k in p["cosine_kwargs"]]
        return LRSchedule("optax", name, p, None, _OPTAX_FUNCS[name](**p))
    raise ValueError(f"unknown schedule {name!r}; PyTorch: {TORCH_SCHEDULERS}; optax: {OPTAX_SCHEDULES}")

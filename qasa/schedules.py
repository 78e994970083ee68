r"""Schedule shapes defined once, exported as QPU anneal schedules, SA β schedules and learning rates.

A :class:`Shape` is a pure function ``f(u)`` of normalized time ``u = t/T ∈ [0, 1]`` describing a
*temperature-like* control that starts high and is annealed: a learning rate η(t) = η₀ f(t/T), a
simulated-annealing temperature, or the quantum driver (the QPU's tunnelling A(s) falls as s rises,
so a shape maps to the anneal fraction ``s = 1 − (1 − s_min) f̃(u)``, f̃ normalized to [0, 1]).

Shapes (``SHAPES``): constant, step / multistep, exponential, inverse-time, linear, polynomial,
cosine (with power), SGDR (cosine with warm restarts), OneCycle, REX, sigmoid, Eigencurve, and
linear warm-up in front of any of them.

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
- :func:`lr_schedule`: a learning-rate callable ``step → lr`` following the conventions of the
  PyTorch ``lr_scheduler`` class or optax schedule of the same name (values pinned in the tests
  against those libraries; neither is imported here).

Eigencurve (Pan, Ye, Zhang 2021) is implemented here as the piecewise inverse-time decay its paper
motivates: for a Hessian spectrum sorted in decreasing order, the horizon is split into phases of
geometrically growing length, and phase i decays as ``1/(1 + λ_i η₀ (t − t_i))`` from the rate
reached at its start, so the schedule follows the largest curvatures first and the smallest last.
It is a construction after that paper, not a reproduction of its code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from qasa.errors import ProtocolError

__all__ = ["Shape", "SHAPES", "shape", "to_anneal_schedule", "to_beta_schedule", "lr_schedule",
           "AnnealExport", "TORCH_SCHEDULERS", "OPTAX_SCHEDULES"]


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


_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "constant": _constant, "step": _step, "exponential": _exponential, "inverse-time": _inverse_time,
    "linear": _linear, "polynomial": _polynomial, "cosine": _cosine, "sgdr": _sgdr, "onecycle": _onecycle,
    "rex": _rex, "sigmoid": _sigmoid, "eigencurve": _eigencurve,
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


# -- learning-rate callables with library conventions ------------------------------------------------
def _torch(name: str, base_lr: float, **kw: Any) -> Callable[[int], float]:
    if name == "StepLR":
        return lambda t: base_lr * kw.get("gamma", 0.1) ** (t // kw["step_size"])
    if name == "MultiStepLR":
        return lambda t: base_lr * kw.get("gamma", 0.1) ** sum(t >= m for m in kw["milestones"])
    if name == "ExponentialLR":
        return lambda t: base_lr * kw["gamma"] ** t
    if name == "ConstantLR":
        return lambda t: base_lr * (kw.get("factor", 1 / 3) if t < kw.get("total_iters", 5) else 1.0)
    if name == "LinearLR":
        a, b, n = kw.get("start_factor", 1 / 3), kw.get("end_factor", 1.0), kw.get("total_iters", 5)
        return lambda t: base_lr * (a + (b - a) * min(t, n) / n)
    if name == "PolynomialLR":
        n, p = kw.get("total_iters", 5), kw.get("power", 1.0)
        return lambda t: base_lr * (1 - min(t, n) / n) ** p
    if name == "CosineAnnealingLR":
        tmax, emin = kw["T_max"], kw.get("eta_min", 0.0)
        # PyTorch's recursive update equals this closed form and is not clamped after T_max
        return lambda t: emin + (base_lr - emin) * (1 + math.cos(math.pi * t / tmax)) / 2
    if name == "CosineAnnealingWarmRestarts":
        t0, mult, emin = kw["T_0"], kw.get("T_mult", 1), kw.get("eta_min", 0.0)

        def sgdr(t: int) -> float:
            ti, tcur = t0, t
            if mult == 1:
                tcur = t % t0
            else:
                while tcur >= ti:
                    tcur -= ti
                    ti *= mult
            return emin + (base_lr - emin) * (1 + math.cos(math.pi * tcur / ti)) / 2
        return sgdr
    if name == "OneCycleLR":
        total = kw["total_steps"]
        max_lr = kw.get("max_lr", base_lr)
        pct, div, fdiv = kw.get("pct_start", 0.3), kw.get("div_factor", 25.0), kw.get("final_div_factor", 1e4)
        initial, low = max_lr / div, max_lr / div / fdiv
        end_up = pct * total - 1
        end_down = total - 1

        def cos_anneal(a, b, frac):
            return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))

        def onecycle(t: int) -> float:
            if t <= end_up:
                return cos_anneal(initial, max_lr, t / end_up)
            return cos_anneal(max_lr, low, (t - end_up) / (end_down - end_up))
        return onecycle
    raise ValueError(f"unknown PyTorch scheduler {name!r}; known: {TORCH_SCHEDULERS}")


def _optax(name: str, **kw: Any) -> Callable[[int], float]:
    if name == "cosine_decay_schedule":
        v0, n, alpha, p = kw["init_value"], kw["decay_steps"], kw.get("alpha", 0.0), kw.get("exponent", 1.0)
        return lambda t: v0 * ((1 - alpha) * (0.5 * (1 + math.cos(math.pi * min(t, n) / n))) ** p + alpha)
    if name == "exponential_decay":
        v0, n, r = kw["init_value"], kw["transition_steps"], kw["decay_rate"]
        begin, stair, end = kw.get("transition_begin", 0), kw.get("staircase", False), kw.get("end_value")

        def expd(t: int) -> float:
            c = max(t - begin, 0) / n
            v = v0 * r ** (math.floor(c) if stair else c)
            if end is not None:
                v = max(v, end) if r < 1 else min(v, end)
            return v
        return expd
    if name == "polynomial_schedule":
        v0, v1, p, n = kw["init_value"], kw["end_value"], kw["power"], kw["transition_steps"]
        begin = kw.get("transition_begin", 0)
        return lambda t: (v0 - v1) * (1 - min(max(t - begin, 0), n) / n) ** p + v1
    if name == "warmup_cosine_decay_schedule":
        v0, peak, w, n, end = kw["init_value"], kw["peak_value"], kw["warmup_steps"], kw["decay_steps"], kw.get("end_value", 0.0)

        def wcd(t: int) -> float:
            if t < w:
                return v0 + (peak - v0) * t / w
            c = min(t - w, n - w) / (n - w)
            return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * c))
        return wcd
    raise ValueError(f"unknown optax schedule {name!r}; known: {OPTAX_SCHEDULES}")


TORCH_SCHEDULERS = ("StepLR", "MultiStepLR", "ExponentialLR", "ConstantLR", "LinearLR", "PolynomialLR",
                    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR")
OPTAX_SCHEDULES = ("cosine_decay_schedule", "exponential_decay", "polynomial_schedule", "warmup_cosine_decay_schedule")


def lr_schedule(name: str | Shape, base_lr: float = 1.0, horizon: int | None = None, **params: Any
                ) -> Callable[[int], float]:
    """A learning-rate callable ``step → lr``.

    Args:
        name: a PyTorch scheduler class name (:data:`TORCH_SCHEDULERS`, e.g. ``"CosineAnnealingLR"``
            with ``T_max``), an optax schedule name (:data:`OPTAX_SCHEDULES`, with its own
            arguments), or a :class:`Shape` (then ``lr = base_lr · f(step / horizon)``).
        base_lr: the optimizer's initial learning rate (PyTorch) or η₀ (shapes).
        horizon: number of steps a shape spans.
        **params: the library's arguments.
    """
    if isinstance(name, Shape):
        if not horizon:
            raise ValueError("a shape needs a horizon (number of steps)")
        sh = name
        return lambda t: float(base_lr * sh(np.array([t / horizon]))[0])
    if name in TORCH_SCHEDULERS:
        return _torch(name, base_lr, **params)
    if name in OPTAX_SCHEDULES:
        return _optax(name, **params)
    raise ValueError(f"unknown schedule {name!r}; PyTorch: {TORCH_SCHEDULERS}; optax: {OPTAX_SCHEDULES}")

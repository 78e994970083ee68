"""Learning-rate parity cases shared by ``gen_lr_reference.py`` and ``tests/test_lr_parity.py``.

A case is a JSON-able *spec* ``{"lib": "torch"|"optax", "name": ..., "base_lr": ..., "params": {...}}``.
Inside ``params``: ``{"fn": [kind, arg]}`` is a named step → value callable (:data:`CALLABLES`, plain
Python so both sides use the very same function), a nested spec is a schedule (``schedulers`` of
``SequentialLR``/``ChainedScheduler``, ``schedules`` of ``join_schedules``), and ``{"dict": [[k, v], ...]}``
is a dict with integer keys (``boundaries_and_scales``). :func:`build_qasa`, :func:`build_torch` and
:func:`build_optax` turn a spec into the qasa schedule and the real library's, and :func:`reference`
runs the real library (``t`` = number of ``scheduler.step()`` calls for PyTorch, optax's ``count``).
:func:`random_case` draws a random configuration of a family, edge cases included.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable

import numpy as np

CALLABLES: dict[str, Callable[[float], Callable[[int], float]]] = {
    "exp": lambda g: (lambda t: g ** t),
    "inv": lambda k: (lambda t: 1.0 / (1.0 + k * t)),
    "cos": lambda T: (lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, T) / T))),
    "const": lambda c: (lambda t: c),
    "warm": lambda w: (lambda t: min(1.0, (t + 1) / w)),
}

TORCH_FAMILIES = ("LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                  "SequentialLR", "PolynomialLR", "CosineAnnealingLR", "ChainedScheduler", "CyclicLR",
                  "CosineAnnealingWarmRestarts", "OneCycleLR")
OPTAX_FAMILIES = ("constant_schedule", "polynomial_schedule", "linear_schedule", "piecewise_constant_schedule",
                  "exponential_decay", "cosine_decay_schedule", "piecewise_interpolate_schedule",
                  "linear_onecycle_schedule", "cosine_onecycle_schedule", "warmup_constant_schedule",
                  "warmup_cosine_decay_schedule", "warmup_exponential_decay_schedule", "sgdr_schedule",
                  "join_schedules")


# -- decoding specs -------------------------------------------------------------------------------------
def _decode(value: Any, build: Callable[[dict], Any]) -> Any:
    if isinstance(value, dict):
        if "fn" in value:
            kind, arg = value["fn"]
            return CALLABLES[kind](arg)
        if "dict" in value:
            return {int(k): v for k, v in value["dict"]}
        if "lib" in value:
            return build(value)
        return {k: _decode(v, build) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, build) for v in value]
    return value


def build_qasa(spec: dict):
    from qasa.schedules import lr_schedule

    params = {k: _decode(v, build_qasa) for k, v in spec["params"].items()}
    return lr_schedule(spec["name"], base_lr=spec.get("base_lr"), **params)


def build_optax(spec: dict):
    import optax

    params = {k: _decode(v, build_optax) for k, v in spec["params"].items()}
    return getattr(optax, spec["name"])(**params)


def _torch_leaf_lr(spec: dict) -> float:
    if spec.get("base_lr") is not None:
        return spec["base_lr"]
    for s in spec["params"].get("schedulers", []):
        if s["lib"] == "torch":
            return _torch_leaf_lr(s)
    return 1.0


def build_torch(spec: dict):
    """``(optimizer, scheduler)``: SGD on one parameter, schedulers built children first."""
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=_torch_leaf_lr(spec))

    def make(s):
        params = {k: _decode(v, make) for k, v in s["params"].items()}
        if s["name"] == "CyclicLR" and s.get("base_lr") is not None:
            params["base_lr"] = s["base_lr"]
        return getattr(torch.optim.lr_scheduler, s["name"])(opt, **params) if s["name"] != "ChainedScheduler" \
            else torch.optim.lr_scheduler.ChainedScheduler(**params)
    return opt, make(spec)


def reference(spec: dict, steps: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The real library's values at t = 0..steps−1 (and the momentum for PyTorch, NaN where unset)."""
    if spec["lib"] == "torch":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt, sched = build_torch(spec)
            lrs, moms = [], []
            for t in range(steps):
                lrs.append(float(opt.param_groups[0]["lr"]))
                moms.append(float(opt.param_groups[0]["momentum"]))
                if t == steps - 1:
                    break
                opt.step()
                try:
                    sched.step()
                except (NotImplementedError, ZeroDivisionError, ValueError) as exc:
                    raise LibraryError(t + 1, exc) from None
        return np.array(lrs), np.array(moms)
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    f = build_optax(spec)
    if '"staircase": true' in json.dumps(spec):
        # compiled (vmap/jit) code divides by a constant as a multiplication by its reciprocal, so
        # floor(417/417) becomes floor(0.99999…) = 0: the staircase steps one count late at exact
        # multiples of transition_steps. The reference is optax's eager value, its documented formula.
        return np.array([float(f(c)) for c in range(steps)]), None
    counts = jnp.arange(steps)
    try:
        out = np.asarray(jax.vmap(lambda c: jnp.asarray(f(c), jnp.float64))(counts), float)
    except Exception:   # noqa: BLE001 - schedules jax cannot trace: evaluate count by count
        out = np.array([float(f(int(c))) for c in range(steps)])
    return np.broadcast_to(out, (steps,)).copy(), None


class LibraryError(Exception):
    """The real library raised at step ``step`` (qasa must refuse that step too)."""

    def __init__(self, step: int, exc: Exception) -> None:
        super().__init__(f"step {step}: {type(exc).__name__}: {exc}")
        self.step = step


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours − ref| / |ref| (a zero reference must be met exactly; NaN must meet NaN)."""
    ours, ref = np.asarray(ours, float), np.asarray(ref, float)
    both_nan = np.isnan(ours) & np.isnan(ref)
    same = (ours == ref) | both_nan
    with np.errstate(all="ignore"):
        rel = np.abs(ours - ref) / np.abs(ref)
    rel = np.where(same, 0.0, rel)
    rel = np.where(np.isnan(rel), np.inf, rel)
    return float(rel.max()) if rel.size else 0.0


# -- random configurations --------------------------------------------------------------------------------
def _fn(rng, kinds=("exp", "inv", "cos", "const", "warm")) -> dict:
    kind = str(rng.choice(kinds))
    arg = {"exp": float(rng.uniform(0.995, 1.0005)), "inv": float(rng.uniform(0.0, 0.05)),
           "cos": int(rng.integers(50, 1500)), "const": float(rng.uniform(0.995, 1.0)),
           "warm": int(rng.integers(1, 300))}[kind]
    return {"fn": [kind, arg]}


def _u(rng, a, b) -> float:
    return float(rng.uniform(a, b))


def _i(rng, a, b) -> int:
    return int(rng.integers(a, b + 1))


def _maybe(rng, p=0.5) -> bool:
    return bool(rng.random() < p)


def _dict(rng, lo, hi, n_max, scale=(0.0, 2.0)) -> dict:
    keys = sorted(set(int(k) for k in rng.integers(lo, hi, _i(rng, 0, n_max))))
    return {"dict": [[k, _u(rng, *scale)] for k in keys]}


def _exponential_args(rng, p: dict, n: int, start: str) -> None:
    """exponential_decay's arguments (transition_steps ≤ 0 and decay_rate = 0 included), added to ``p``."""
    p["transition_steps"] = _i(rng, 1, n // 2) if _maybe(rng, 0.85) else _i(rng, -3, 0)
    p["decay_rate"] = 0.0 if _maybe(rng, 0.1) else _u(rng, 0.05, 1.3)
    if _maybe(rng, 0.7):
        p["transition_begin"] = _i(rng, -50, n // 3)
    if _maybe(rng):
        p["staircase"] = True
    if _maybe(rng):
        p["end_value"] = _u(rng, 0.0, 2.0) * p[start]


def random_case(family: str, rng: np.random.Generator, steps: int, depth: int = 0) -> dict:
    """A random spec of ``family`` valid for ``steps`` values (t = 0..steps−1)."""
    lib = "torch" if family in TORCH_FAMILIES else "optax"
    base_lr = _u(rng, 0.01, 2.0) if lib == "torch" else None
    p: dict[str, Any]
    n = steps
    if family == "LambdaLR":
        p = {"lr_lambda": _fn(rng)}
    elif family == "MultiplicativeLR":
        p = {"lr_lambda": _fn(rng, ("exp", "const", "warm"))}
        if p["lr_lambda"]["fn"][0] == "exp":
            p["lr_lambda"]["fn"][1] = _u(rng, 0.9999, 1.0)
    elif family == "StepLR":
        p = {"step_size": _i(rng, 1, n // 3) if _maybe(rng, 0.9) else -_i(rng, 1, 50)}
        if _maybe(rng, 0.8):
            p["gamma"] = _u(rng, 0.3, 1.2)
    elif family == "MultiStepLR":
        p = {"milestones": sorted(int(x) for x in rng.integers(0, n, _i(rng, 0, 6)))}
        if _maybe(rng, 0.8):
            p["gamma"] = _u(rng, 0.2, 1.2)
    elif family == "ConstantLR":
        p = {}
        if _maybe(rng, 0.8):
            p["factor"] = 1.0 if _maybe(rng, 0.1) else _u(rng, 0.01, 1.0)
        if _maybe(rng, 0.8):
            p["total_iters"] = _i(rng, 0, n)
    elif family == "LinearLR":
        p = {}
        if _maybe(rng, 0.8):
            p["start_factor"] = _u(rng, 0.01, 1.0)
        if _maybe(rng, 0.8):
            p["end_factor"] = _u(rng, 0.0, 1.0)
        if _maybe(rng, 0.8):
            p["total_iters"] = _i(rng, 0, n)
    elif family == "ExponentialLR":
        p = {"gamma": _u(rng, 0.99, 1.001)}
    elif family == "PolynomialLR":
        p = {}
        if _maybe(rng, 0.8):
            p["total_iters"] = _i(rng, 0, n)
        if _maybe(rng, 0.8):
            p["power"] = _u(rng, 0.0, 3.0)
    elif family == "CosineAnnealingLR":
        p = {"T_max": _i(rng, 1, n)}
        if _maybe(rng, 0.7):
            p["eta_min"] = _u(rng, 0.0, base_lr)
    elif family == "CosineAnnealingWarmRestarts":
        p = {"T_0": _i(rng, 1, n // 2)}
        if _maybe(rng, 0.7):
            p["T_mult"] = _i(rng, 1, 3)
        if _maybe(rng, 0.7):
            p["eta_min"] = _u(rng, 0.0, base_lr)
    elif family == "CyclicLR":
        base_lr = _u(rng, 0.001, 0.5)
        p = {"max_lr": base_lr + _u(rng, 0.0, 1.0), "step_size_up": _i(rng, 1, n // 3)}
        if _maybe(rng):
            p["step_size_down"] = _i(rng, 1, n // 3)
        mode = str(rng.choice(["triangular", "triangular2", "exp_range", "custom"]))
        if mode == "custom":
            p["scale_fn"] = _fn(rng, ("exp", "inv", "const"))
            p["scale_mode"] = str(rng.choice(["cycle", "iterations"]))
            p["mode"] = "custom"
        else:
            p["mode"] = mode
        if mode == "exp_range" or _maybe(rng, 0.3):
            p["gamma"] = _u(rng, 0.995, 1.0)
        if _maybe(rng, 0.3):
            p["cycle_momentum"] = False
        elif _maybe(rng):
            p["base_momentum"], p["max_momentum"] = _u(rng, 0.5, 0.85), _u(rng, 0.85, 0.99)
    elif family == "OneCycleLR":
        p = {"max_lr": _u(rng, 0.01, 2.0)}
        if _maybe(rng):
            p["total_steps"] = _i(rng, n - 1, 2 * n)
        else:
            spe = _i(rng, 1, 50)
            p["epochs"], p["steps_per_epoch"] = -(-(n - 1) // spe) + _i(rng, 0, 3), spe
        for key, draw in (("pct_start", lambda: _u(rng, 0.02, 0.6)), ("anneal_strategy", lambda: "linear"),
                          ("cycle_momentum", lambda: False), ("base_momentum", lambda: _u(rng, 0.5, 0.85)),
                          ("max_momentum", lambda: _u(rng, 0.85, 0.99)), ("div_factor", lambda: _u(rng, 2.0, 100.0)),
                          ("final_div_factor", lambda: _u(rng, 10.0, 1e5)), ("three_phase", lambda: True)):
            if _maybe(rng):
                p[key] = draw()
        if p.get("three_phase") and p.get("pct_start", 0.3) > 0.48:
            p["pct_start"] = 0.45
    elif family in ("SequentialLR", "ChainedScheduler"):
        simple = [f for f in TORCH_FAMILIES if f not in ("SequentialLR", "ChainedScheduler", "CyclicLR")]
        if depth == 0 and _maybe(rng, 0.2):
            simple = simple + ["SequentialLR", "ChainedScheduler"]
        k = _i(rng, 2, 3)
        parts = [random_case(str(rng.choice(simple)), rng, 2 * n + 2, depth + 1) for _ in range(k)]
        for part in parts:
            part["base_lr"] = None
        p = {"schedulers": parts}
        if family == "SequentialLR":
            p["milestones"] = sorted(int(x) for x in rng.integers(1, n, k - 1))
    elif family == "constant_schedule":
        p = {"value": _u(rng, -1.0, 2.0)}
    elif family in ("polynomial_schedule", "linear_schedule"):
        p = {"init_value": _u(rng, 0.0, 2.0), "end_value": _u(rng, 0.0, 2.0),
             "transition_steps": _i(rng, 1, n) if _maybe(rng, 0.85) else _i(rng, -5, 0)}
        if family == "polynomial_schedule":
            p["power"] = _u(rng, 0.2, 4.0) if _maybe(rng, 0.8) else _i(rng, 1, 3)
        if _maybe(rng, 0.7):
            p["transition_begin"] = _i(rng, -50, n // 3)
    elif family == "piecewise_constant_schedule":
        p = {"init_value": _u(rng, 0.01, 2.0)}
        if _maybe(rng, 0.9):
            p["boundaries_and_scales"] = _dict(rng, 0, n, 5)
    elif family == "exponential_decay":
        p = {"init_value": _u(rng, 0.01, 2.0)}
        _exponential_args(rng, p, n, "init_value")
    elif family == "cosine_decay_schedule":
        p = {"init_value": _u(rng, 0.01, 2.0), "decay_steps": _i(rng, 1, n)}
        if _maybe(rng, 0.7):
            p["alpha"] = _u(rng, 0.0, 0.5)
        if _maybe(rng, 0.7):
            p["exponent"] = _u(rng, 0.3, 3.0)
    elif family == "piecewise_interpolate_schedule":
        p = {"interpolate_type": str(rng.choice(["linear", "cosine"])), "init_value": _u(rng, 0.01, 2.0)}
        if _maybe(rng, 0.9):
            p["boundaries_and_scales"] = _dict(rng, 0, n, 5)
    elif family in ("linear_onecycle_schedule", "cosine_onecycle_schedule"):
        p = {"transition_steps": _i(rng, 1, n), "peak_value": _u(rng, 0.01, 2.0)}
        if _maybe(rng, 0.7):
            p["pct_start"] = _u(rng, 0.0, 0.6)
        if family == "linear_onecycle_schedule" and _maybe(rng, 0.7):
            p["pct_final"] = _u(rng, p.get("pct_start", 0.3), 1.0)
        if _maybe(rng, 0.7):
            p["div_factor"] = _u(rng, 2.0, 100.0)
        if _maybe(rng, 0.7):
            p["final_div_factor"] = _u(rng, 10.0, 1e5)
    elif family == "warmup_constant_schedule":
        p = {"init_value": _u(rng, 0.0, 1.0), "peak_value": _u(rng, 0.01, 2.0), "warmup_steps": _i(rng, -2, n)}
    elif family == "warmup_cosine_decay_schedule":
        w = _i(rng, 0, n // 3)
        p = {"init_value": _u(rng, 0.0, 1.0), "peak_value": _u(rng, 0.01, 2.0), "warmup_steps": w,
             "decay_steps": w + _i(rng, 1, n)}
        if _maybe(rng, 0.7):
            p["end_value"] = _u(rng, 0.0, 0.5)
        if _maybe(rng, 0.7):
            p["exponent"] = _u(rng, 0.3, 3.0)
    elif family == "warmup_exponential_decay_schedule":
        p = {"init_value": _u(rng, 0.0, 1.0), "peak_value": _u(rng, 0.01, 2.0), "warmup_steps": _i(rng, 0, n // 3)}
        _exponential_args(rng, p, n, "peak_value")
    elif family == "sgdr_schedule":
        cycles = []
        for _ in range(_i(rng, 1, 4)):
            w = _i(rng, 0, n // 8)
            c = {"init_value": _u(rng, 0.0, 1.0), "peak_value": _u(rng, 0.01, 2.0), "warmup_steps": w,
                 "decay_steps": w + _i(rng, 1, n // 2)}
            if _maybe(rng):
                c["end_value"] = _u(rng, 0.0, 0.5)
            if _maybe(rng):
                c["exponent"] = _u(rng, 0.3, 3.0)
            cycles.append(c)
        p = {"cosine_kwargs": cycles}
    elif family == "join_schedules":
        parts = [random_case(str(rng.choice([f for f in OPTAX_FAMILIES if f != "join_schedules"])), rng, n, depth + 1)
                 for _ in range(_i(rng, 2, 4))]
        p = {"schedules": parts, "boundaries": sorted(int(x) for x in rng.integers(0, n, len(parts) - 1))}
    else:
        raise ValueError(family)
    return {"lib": lib, "name": family, "base_lr": base_lr, "params": p}


"""Learning-rate schedules against PyTorch and optax: pinned long sequences (always), the real libraries
(when the ``parity`` extra is installed), argument checking and composition.

Pinned data: tests/data/lr_reference.json, written by ``python tests/data/gen_lr_reference.py --write``
with torch 2.13.0 and optax 0.2.8 (float64). Per-family randomized table:
``python tests/data/gen_lr_reference.py --check``.
"""
import json
import math
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import gen_lr_reference as gen  # noqa: E402
import lr_cases as lc  # noqa: E402

from qasa.schedules import (OPTAX_SCHEDULES, OPTAX_SIGNATURES, TORCH_SCHEDULERS, TORCH_SIGNATURES,  # noqa: E402
                            lr_schedule, shape)

REFERENCE = json.loads((DATA / "lr_reference.json").read_text())
CASES = REFERENCE["cases"]


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['spec']['name']}" for i, c in enumerate(CASES)])
def test_pinned_sequences(case):
    """Every pinned value (float64 from the real library) reproduced to 1e-9 relative."""
    s = lc.build_qasa(case["spec"])
    values = s.values(case["steps"])
    assert lc.rel_error(values[case["t"]], case["lr"]) <= 1e-9
    if "momentum" in case:
        assert lc.rel_error([s.momentum(t) for t in case["t"]], case["momentum"]) <= 1e-9


def test_pinned_data_cover_every_family_and_every_argument():
    by_family: dict[str, list] = {}
    for c in CASES:
        by_family.setdefault(c["spec"]["name"], []).append(c)
    assert set(by_family) == set(TORCH_SCHEDULERS) | set(OPTAX_SCHEDULES)
    for fam, cases in by_family.items():
        assert max(c["steps"] for c in cases) >= 1000, fam
        given = set().union(*(c["spec"]["params"] for c in cases))
        if fam == "CyclicLR":
            given.add("base_lr")
        sig = TORCH_SIGNATURES.get(fam) or OPTAX_SIGNATURES[fam]
        missing = {k for k, _ in sig if (fam, k) not in gen.UNPINNABLE} - given
        assert not missing, f"{fam}: no pinned case sets {missing}"
    # the edge cases of issue 14 are in the file
    edge = [json.dumps(c["spec"], sort_keys=True) for c in CASES]
    for e in gen.EDGE_CASES:
        assert json.dumps(e, sort_keys=True) in edge


def test_unknown_or_missing_arguments_are_refused_with_the_library_signature():
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['gama'\]; it takes StepLR\(step_size, "
                                        r"gamma=0.1, last_epoch=-1\)"):
        lr_schedule("StepLR", step_size=3, gama=0.5)
    with pytest.raises(TypeError, match=r"missing required argument\(s\) \['T_max'\]"):
        lr_schedule("CosineAnnealingLR")
    with pytest.raises(TypeError, match=r"it takes warmup_cosine_decay_schedule\(init_value, peak_value, "
                                        r"warmup_steps, decay_steps, end_value=0.0, exponent=1.0\)"):
        lr_schedule("warmup_cosine_decay_schedule", init_value=0.0, peak_value=1.0, warmup_steps=10,
                    decay_steps=100, exponant=2.0)
    with pytest.raises(TypeError, match=r"sgdr_schedule cosine_kwargs\[1\]: warmup_cosine_decay_schedule\(\) got"):
        lr_schedule("sgdr_schedule", cosine_kwargs=[dict(init_value=0, peak_value=1, warmup_steps=0, decay_steps=10),
                                                    dict(init_value=0, peak_value=1, warmup_steps=0, decay_step=10)])
    with pytest.raises(TypeError, match="takes no base_lr"):
        lr_schedule("cosine_decay_schedule", base_lr=0.1, init_value=1.0, decay_steps=10)
    with pytest.raises(ValueError, match="unknown schedule 'CosineLR'"):
        lr_schedule("CosineLR")


def test_library_errors_become_clear_refusals():
    with pytest.raises(ValueError, match="last_epoch=5: only -1"):
        lr_schedule("StepLR", step_size=3, last_epoch=5)
    with pytest.raises(ValueError, match="StepLR step_size=0"):
        lr_schedule("StepLR", step_size=0)
    with pytest.raises(ValueError, match=r"pct_start=1 must be a float"):
        lr_schedule("OneCycleLR", max_lr=1.0, total_steps=10, pct_start=1)
    with pytest.raises(ValueError, match="anneal_strategy='cosine'"):
        lr_schedule("OneCycleLR", max_lr=1.0, total_steps=10, anneal_strategy="cosine")
    one = lr_schedule("OneCycleLR", max_lr=1.0, total_steps=10)
    low = 1.0 / 25 / 1e4                                                   # step == total_steps is allowed: the
    assert one(10) == pytest.approx(low + (1 - low) / 2 * (math.cos(math.pi * 8 / 7) + 1), rel=1e-12)  # cosine runs on
    with pytest.raises(ValueError, match="cannot reach step 11: PyTorch raises ValueError"):
        one(11)
    zero = lr_schedule("ConstantLR", factor=0.0, total_iters=3)           # PyTorch: 1/factor at total_iters
    assert zero(2) == 0.0
    with pytest.raises(ValueError, match="cannot reach step 3: PyTorch raises ZeroDivisionError"):
        zero(3)
    with pytest.raises(ValueError, match="requires positive decay_steps, got decay_steps=0"):
        lr_schedule("warmup_cosine_decay_schedule", init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10)
    with pytest.raises(ValueError, match="non-negative scale factors"):
        lr_schedule("piecewise_constant_schedule", init_value=1.0, boundaries_and_scales={10: -0.1})
    with pytest.raises(ValueError, match=r"step=-1 must be an integer ≥ 0"):
        lr_schedule("StepLR", step_size=2)(-1)


def test_optax_edge_cases_behave_as_optax():
    """Issue 14: transition_steps ≤ 0 and decay_rate = 0 give a constant init_value; transition_begin < 0 is 0."""
    for n in (0, -3):
        f = lr_schedule("exponential_decay", init_value=0.5, transition_steps=n, decay_rate=0.5, end_value=0.7)
        assert [f(t) for t in (0, 1, 1000)] == [0.5, 0.5, 0.5]          # no end_value clip either
    f = lr_schedule("exponential_decay", init_value=0.5, transition_steps=10, decay_rate=0.0)
    assert f(0) == f(500) == 0.5
    f = lr_schedule("exponential_decay", init_value=1.0, transition_steps=10, decay_rate=0.5, transition_begin=-30)
    assert f(10) == 0.5 and f(0) == 1.0
    f = lr_schedule("exponential_decay", init_value=1.0, transition_steps=10, decay_rate=0.5, end_value=2.0)
    assert f(0) == 2.0                                                  # optax clips the initial value too
    f = lr_schedule("exponential_decay", init_value=1.0, transition_steps=417, decay_rate=1.06, staircase=True)
    assert (f(416), f(417)) == (1.0, 1.06)            # optax's eager value (a jitted optax steps at 418)
    g = lr_schedule("warmup_cosine_decay_schedule", init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=110,
                    exponent=2.0)
    assert g(60) == pytest.approx(0.25, rel=1e-15)                        # (½(1 + cos π/2))² = ¼


def test_onecycle_three_phase_and_linear_follow_pytorch_closed_forms():
    n, top = 1000, 1.0
    lin = lr_schedule("OneCycleLR", max_lr=top, total_steps=n, anneal_strategy="linear", pct_start=0.3)
    end_up = 0.3 * n - 1
    assert lin(150) == pytest.approx(top / 25 + (top - top / 25) * 150 / end_up, rel=1e-12)
    three = lr_schedule("OneCycleLR", max_lr=top, total_steps=n, three_phase=True, pct_start=0.25)
    assert three(249) == pytest.approx(top, rel=1e-12) and three(498) == pytest.approx(top / 25, rel=1e-12)
    assert three(999) == pytest.approx(top / 25 / 1e4, rel=1e-9)
    assert three.momentum(249) == pytest.approx(0.85) and three.momentum(498) == pytest.approx(0.95)


def test_composition_of_qasa_schedules():
    warm = lr_schedule("LinearLR", start_factor=0.1, total_iters=100)
    cos = lr_schedule("CosineAnnealingLR", T_max=900, eta_min=0.001)
    seq = lr_schedule("SequentialLR", base_lr=0.5, schedulers=[warm, cos], milestones=[100])
    assert seq(0) == pytest.approx(0.05) and seq(100) == pytest.approx(0.5) and seq(1000) == pytest.approx(0.001)
    chained = lr_schedule("ChainedScheduler", base_lr=1.0,
                          schedulers=[lr_schedule("ExponentialLR", gamma=0.99), lr_schedule("StepLR", step_size=10)])
    assert chained(25) == pytest.approx(0.99 ** 25 * 0.1 ** 2, rel=1e-12)
    with pytest.raises(ValueError, match=r"different base_lr \[0.1, 0.2\]"):
        lr_schedule("SequentialLR", schedulers=[lr_schedule("StepLR", base_lr=0.1, step_size=2),
                                                lr_schedule("StepLR", base_lr=0.2, step_size=2)], milestones=[5])
    with pytest.raises(TypeError, match="wrap any other step → factor callable in lr_schedule\\('LambdaLR'"):
        lr_schedule("SequentialLR", schedulers=[warm, lambda t: 1.0], milestones=[5])
    # a qasa shape inside PyTorch's LambdaLR and optax's join_schedules
    rex = lr_schedule(shape("rex"), horizon=1000)
    lam = lr_schedule("LambdaLR", base_lr=0.3, lr_lambda=rex)
    assert all(lam(t) == 0.3 * rex(t) for t in (0, 1, 500, 999))
    joined = lr_schedule("join_schedules", schedules=[lr_schedule("linear_schedule", init_value=0.0, end_value=1.0,
                                                                    transition_steps=50), rex], boundaries=[50])
    assert joined(25) == 0.5 and joined(50) == rex(0) and joined(550) == rex(500)


def test_shapes_as_learning_rates():
    f = lr_schedule(shape("cosine"), base_lr=0.2, horizon=100)
    assert f(0) == pytest.approx(0.2) and f(50) == pytest.approx(0.1) and f(100) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="horizon=None"):
        lr_schedule(shape("cosine"))
    with pytest.raises(TypeError, match="horizon is for shapes"):
        lr_schedule("StepLR", horizon=10, step_size=3)


# -- against the real libraries (the `parity` extra) ------------------------------------------------------------
def test_signatures_match_the_installed_libraries():
    import inspect

    torch = pytest.importorskip("torch")
    optax = pytest.importorskip("optax")
    for name, sig in TORCH_SIGNATURES.items():
        params = list(inspect.signature(getattr(torch.optim.lr_scheduler, name)).parameters.values())
        theirs = [(p.name, p.default) for p in params if p.name != "optimizer" or name == "ChainedScheduler"]
        assert [(k, None if d is inspect.Parameter.empty else d) for k, d in theirs] == \
            [(k, None if d is not None and type(d) is object else d) for k, d in sig], name
    for name, sig in OPTAX_SIGNATURES.items():
        params = inspect.signature(getattr(optax, name)).parameters
        assert list(params) == [k for k, _ in sig], name


def test_randomized_parity_against_the_real_libraries():
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    table = gen.check(n_configs=2, seed=11, out=lambda *_: None)
    for fam, row in table.items():
        assert row["max_rel_error"] <= 1e-9 and row["max_rel_error_momentum"] <= 1e-9, (fam, row)
        assert row["steps"] >= 1000 * row["configs"]

"""Schedule shapes and their exports: closed forms, library parity, legal QPU schedules, SA equivalences."""

import numpy as np
import pytest

from qasa.errors import ProtocolError
from qasa.schedules import SHAPES, lr_schedule, shape, to_anneal_schedule, to_beta_schedule


def test_documented_values():
    cos = lr_schedule("CosineAnnealingLR", base_lr=1.0, T_max=10)
    assert cos(11) == pytest.approx(0.024472, abs=5e-7)                  # continues past T_max
    optax_cos = lr_schedule("cosine_decay_schedule", init_value=1.0, decay_steps=10)
    assert optax_cos(11) == 0.0                                          # optax clamps
    one = lr_schedule("OneCycleLR", max_lr=1.0, total_steps=10)
    assert [round(one(t), 6) for t in (0, 1, 2, 3)] == [0.04, 0.52, 1.0, 0.950485] and one(9) == pytest.approx(4e-6)
    assert shape("rex")(np.array([0.5]))[0] == pytest.approx(2 / 3)     # REX η(T/2) = ⅔ η₀


def test_linear_beta_is_inverse_time_and_geometric_beta_is_exponential():
    assert np.allclose(to_beta_schedule(shape("inverse-time"), (0.1, 5.0), 50), np.linspace(0.1, 5.0, 50), rtol=1e-12)
    assert np.allclose(to_beta_schedule(shape("exponential"), (0.1, 5.0), 50), np.geomspace(0.1, 5.0, 50), rtol=1e-12)


def test_custom_beta_schedule_runs_identically_to_dwave_samplers_linear():
    import dimod
    from dwave.samplers import SimulatedAnnealingSampler

    bqm = dimod.generators.ran_r(1, 30, seed=1)
    sa = SimulatedAnnealingSampler()
    mine = sa.sample(bqm, num_reads=20, seed=5, beta_schedule_type="custom",
                     beta_schedule=to_beta_schedule(shape("inverse-time"), (0.2, 3.0), 40))
    theirs = sa.sample(bqm, num_reads=20, seed=5, beta_schedule_type="linear", beta_range=(0.2, 3.0), num_sweeps=40)
    assert np.array_equal(mine.record.sample, theirs.record.sample)


@pytest.mark.parametrize("name", [s for s in SHAPES if s != "constant"])
def test_every_shape_exports_a_schedule_dwave_accepts(name):
    from dwave.system import DWaveSampler
    from dwave.system.testing import MockDWaveSampler

    mock = MockDWaveSampler()
    export = to_anneal_schedule(shape(name), mock, 20.0)
    DWaveSampler.validate_anneal_schedule(mock, export.schedule)     # raises if illegal
    assert len(export.schedule) <= mock.properties["max_anneal_schedule_points"]
    assert all(abs(round(t, 2) - t) < 1e-12 for t, _ in export.schedule)
    assert export.schedule[0][1] == (1.0 if export.reverse else 0.0) and export.schedule[-1][1] == 1.0
    assert export.reverse == (not shape(name).is_monotone())


def test_export_error_is_reported_and_smooth_shapes_follow_closely():
    from dwave.system.testing import MockDWaveSampler

    mock = MockDWaveSampler()
    assert to_anneal_schedule(shape("linear"), mock, 20.0).max_error < 1e-12
    assert to_anneal_schedule(shape("cosine"), mock, 20.0).max_error < 0.01
    step = to_anneal_schedule(shape("step", milestones=(0.5,), gamma=0.01), mock, 20.0)
    assert step.max_error > 0.5 and step.mean_error < 0.05            # a jump is a ramp: visible in max_error


def test_illegal_exports_are_refused_clearly():
    from dwave.system.testing import MockDWaveSampler

    mock = MockDWaveSampler()
    with pytest.raises(ProtocolError, match="never changes"):
        to_anneal_schedule(shape("constant"), mock)
    with pytest.raises(ProtocolError, match=r"annealing_time=0.1 µs is outside"):
        to_anneal_schedule(shape("cosine"), mock, 0.1)
    with pytest.raises(ProtocolError, match=r"points=20 must lie in \[2, 12\]"):
        to_anneal_schedule(shape("cosine"), mock, 20.0, points=20)
    with pytest.raises(ProtocolError, match="too short"):
        to_anneal_schedule(shape("step", milestones=(0.9,), gamma=0.01), mock, 0.6)


def test_warmup_and_normalization():
    sh = shape("cosine", warmup=0.1)
    v = sh(np.array([0.0, 0.05, 0.1, 1.0]))
    assert np.allclose(v, [0.0, 0.5, 1.0, 0.0])
    assert not sh.is_monotone() and shape("cosine").is_monotone()
    with pytest.raises(ValueError, match="unknown shape"):
        shape("triangle")


@pytest.mark.parametrize("annealing_time", [0.5, 0.65, 0.73, 0.9, 1.0, 1.37, 20.0, 2000.0])
@pytest.mark.parametrize("name, s_min", [("sgdr", 0.6), ("onecycle", 0.8), ("cosine", 0.0), ("step", 0.3),
                                         ("sigmoid", 0.9), ("eigencurve", 0.5)])
def test_exported_schedules_start_and_end_exactly_where_they_must(annealing_time, name, s_min):
    """Issue 12 item 12: short reverse anneals used to end at s ≈ 0.9998 (two points rounded to one time)."""
    from dwave.system import DWaveSampler
    from dwave.system.testing import MockDWaveSampler

    mock = MockDWaveSampler()
    sh = shape(name, warmup=0.2) if name == "cosine" else shape(name)
    try:
        export = to_anneal_schedule(sh, mock, annealing_time, s_min=s_min)
    except ProtocolError as exc:
        assert "too short" in str(exc) and annealing_time < 2
        return
    schedule = export.schedule
    assert schedule[0] == (0.0, 1.0 if export.reverse else 0.0)
    assert schedule[-1] == (annealing_time, 1.0)
    times = [t for t, _ in schedule]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(round(t * 100) == t * 100 or abs(round(t * 100) - t * 100) < 1e-9 for t in times)
    DWaveSampler.validate_anneal_schedule(mock, schedule)


def test_the_reported_short_reverse_anneal_now_ends_at_one():
    from dwave.system import DWaveSampler
    from dwave.system.testing import MockDWaveSampler

    mock = MockDWaveSampler()
    export = to_anneal_schedule(shape("sgdr"), mock, 0.65, s_min=0.6)   # ended at (0.65, 0.99965) before
    assert export.reverse and export.schedule[-1] == (0.65, 1.0) and export.schedule[0] == (0.0, 1.0)
    DWaveSampler.validate_anneal_schedule(mock, export.schedule)
    with pytest.raises(ProtocolError, match="not a multiple of the QPU's 0.01 µs"):
        to_anneal_schedule(shape("cosine"), mock, 20.005)
    with pytest.raises(ProtocolError, match=r"s_min=1.0 must lie in \[0, 1\)"):
        to_anneal_schedule(shape("cosine"), mock, 20.0, s_min=1.0)

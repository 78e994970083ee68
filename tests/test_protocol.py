import numpy as np
import pytest

from qasa.errors import ProtocolError
from qasa.protocol import Protocol, h_grid


def test_reference_grid_has_81_values():
    g = h_grid(1.0, 0.025)
    assert len(g) == 81
    assert g[0] == -1.0 and g[-1] == 1.0 and g[40] == 0.0
    assert np.allclose(np.diff(g), 0.025)
    assert len(h_grid(2.0, 0.025)) == 161  # the reference code default


def test_default_protocol_uses_the_reference_h_grid():
    p = Protocol()
    assert p.h_values == h_grid(1.0, 0.025)
    assert p.flux_drift_compensation is False


def test_reference_script_preset_has_the_collection_script_defaults():
    """lanl-ansi/QASA collect_spin_table.py: ±2.0 step 0.025, 100 000 reads per h in calls of
    10 000, 1 µs, no spin-reversal transform, flux drift compensation off."""
    p = Protocol.reference_script()
    assert p.h_values == h_grid(2.0, 0.025) and len(p.h_values) == 161
    assert (p.reads_per_h, p.reads_per_call, p.annealing_time) == (100_000, 10_000, 1.0)
    assert p.spin_reversal is False and p.flux_drift_compensation is False
    assert p.calls_per_h == 10 and p.num_calls == 1610
    p.check()
    calls = p.replace(qubits=(0, 1, 2), seed=0).calls()
    assert all((c.flips == 1).all() and c.num_reads == 10_000 for c in calls)   # identity gauges
    # the preset differs from the default grid, and overrides pass through
    assert p != Protocol() and Protocol.reference_script(seed=5, reads_per_h=20_000).reads_per_h == 20_000
    assert Protocol.from_dict(p.to_dict()) == p


def test_dict_round_trip_is_exact():
    p = Protocol.grid(0.5, 0.1, reads_per_h=3000, reads_per_call=700, gauges_per_h=2,
                      anneal_schedule=((0, 0), (5, 1)), h_gain_schedule=((0, 1), (5, 1)),
                      qubits=(3, 1, 2), seed=11, sampler_params={"readout_thermalization": 10.0})
    d = p.to_dict()
    import json
    assert Protocol.from_dict(json.loads(json.dumps(d))) == p


def test_a_protocol_recorded_before_run_orders_reads_back_in_h_order():
    """Metadata without ``order`` (datasets written before it existed) read back as ``"sequential"``,
    the order they ran in, so their calls keep their slots on the clock; a new protocol is shuffled;
    an unknown order is refused before any call."""
    p = Protocol.grid(0.5, 0.25, reads_per_h=20, reads_per_call=10, qubits=(0, 1), seed=3)
    old = {k: v for k, v in p.to_dict().items() if k != "order"}
    assert p.order == "shuffled" and Protocol.from_dict(p.to_dict()) == p
    back = Protocol.from_dict(old)
    assert back.order == "sequential" and [c.index for c in back.calls()] == [c.slot for c in back.calls()]
    assert [c.slot for c in back.calls()] == list(range(back.num_calls))
    with pytest.raises(ProtocolError, match=r"order='random'; choose one of \['shuffled', 'sequential'\]"):
        p.replace(order="random").check()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ProtocolError, match="unknown protocol field"):
        Protocol.from_dict({"h_values": [0.1], "num_reads": 10})


def test_calls_split_reads_and_have_stable_ids():
    p = Protocol(h_values=(-0.5, 0.0, 0.5), reads_per_h=2500, reads_per_call=1000, qubits=(0, 1, 2, 3), seed=3)
    calls = p.calls()
    assert p.calls_per_h == 3 and len(calls) == 9
    for j in range(3):
        assert sum(c.num_reads for c in calls if c.h_index == j) == 2500
    assert max(c.num_reads for c in calls) <= 1000
    # gauge-major order: every h once before any h twice, each pass in its own seeded order (run order)
    assert sorted(c.h_index for c in calls[:3]) == [0, 1, 2] and [c.slot for c in calls] == list(range(9))
    assert [c.h_index for c in p.replace(order="sequential").calls()[:3]] == [0, 1, 2]
    assert len({tuple(c.h_index for c in p.replace(seed=s).calls()[:3]) for s in range(20)}) == 6
    again = p.calls()
    assert [c.call_id for c in calls] == [c.call_id for c in again]
    assert all(np.array_equal(a.flips, b.flips) for a, b in zip(calls, again))
    assert len({c.call_id for c in calls}) == 9
    other = p.replace(seed=4).calls()
    assert not all(np.array_equal(a.flips, b.flips) for a, b in zip(calls, other))


def test_gauges_per_h_forces_more_calls():
    p = Protocol(h_values=(0.1,), reads_per_h=100, reads_per_call=1000, gauges_per_h=4, qubits=(0,), seed=0)
    assert [c.num_reads for c in p.calls()] == [25, 25, 25, 25]


def test_programmed_h_applies_the_gauge():
    p = Protocol(h_values=(0.3,), reads_per_h=10, qubits=tuple(range(50)), seed=1)
    call = p.calls()[0]
    h = call.programmed_h(p.qubits)
    assert set(np.round(list(h.values()), 12)) == {0.3, -0.3}
    assert all(h[q] == pytest.approx(0.3 * f) for q, f in zip(p.qubits, call.flips))
    flat = p.replace(spin_reversal=False).calls()[0]
    assert (flat.flips == 1).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"h_values": ()}, "empty"),
    ({"h_values": (0.1, 0.1)}, "duplicates"),
    ({"h_values": (float("nan"),)}, "not finite"),
    ({"reads_per_h": 0}, "reads_per_h=0"),
    ({"reads_per_call": -5}, "reads_per_call=-5"),
    ({"annealing_time": -1.0}, "annealing_time=-1.0"),
    ({"annealing_time": 5.0, "anneal_schedule": ((0, 0), (5, 1))}, "either"),
    ({"seed": -2}, "seed=-2"),
])
def test_check_names_the_bad_value(kwargs, match):
    with pytest.raises(ProtocolError, match=match):
        Protocol(**kwargs).check()


def test_grid_rejects_bad_step():
    with pytest.raises(ProtocolError, match="h_step=0"):
        h_grid(1.0, 0)


def test_gauges_come_in_antithetic_pairs():
    p = Protocol(h_values=(-0.2, 0.2), reads_per_h=400, reads_per_call=100, qubits=tuple(range(30)), seed=2)
    calls = p.calls()
    for h_index in (0, 1):
        flips = np.array([c.flips for c in calls if c.h_index == h_index])
        assert len(flips) == 4 and (flips.sum(0) == 0).all()      # each qubit: 2 × (+1), 2 × (-1)
        assert np.array_equal(flips[1], -flips[0]) and not np.array_equal(flips[2], flips[0])


def test_reference_script_preset_validates_on_a_2000q_like_and_an_advantage_like_device():
    from qasa.virtual import VirtualQPU
    from qasa.samplers import validate

    for preset, shape in (("2000q", [2, 2, 4]), ("advantage4.1", [2])):
        qpu = VirtualQPU(preset, topology_shape=shape, seed=0)
        validate(Protocol.reference_script().resolved(qpu.nodelist), qpu)   # ±2 within h_range, 1 µs allowed


# -- types: numpy numbers accepted, bools and strings refused, before anything is created (issue 24) --
def test_numpy_numbers_are_accepted_and_stored_as_python_numbers(tmp_path, chimera_sa):
    """``reads_per_h=np.int64(100)`` created the directory, then failed writing metadata.json (int64 is not
    JSON); np.float32 fields failed the same way."""
    import json

    import qasa

    p = Protocol(h_values=np.array([-0.5, 0.5], dtype=np.float32), reads_per_h=np.int64(100),
                 reads_per_call=np.int32(50), gauges_per_h=np.uint8(2), seed=np.int64(7),
                 annealing_time=np.float32(20.0), qubits=np.arange(3), spin_reversal=np.bool_(True))
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d and Protocol.from_dict(d) == p
    assert type(p.reads_per_h) is int and p.reads_per_h == 100 and type(p.annealing_time) is float
    assert p.h_values == (-0.5, 0.5) and p.seed == 7 and p.gauges_per_h == 2
    ds = qasa.run(p.replace(annealing_time=None, qubits=None), chimera_sa, tmp_path / "x")
    assert json.loads((tmp_path / "x" / "metadata.json").read_text())["protocol"]["reads_per_h"] == 100
    assert int(ds.counts.groupby("h")[["n_down", "n_up"]].sum().sum(axis=1).iloc[0]) == 100 * 128


@pytest.mark.parametrize("kwargs, needle", [
    ({"reads_per_h": True}, "reads_per_h=True must be an integer"),
    ({"reads_per_h": 100.0}, "reads_per_h=100.0 must be an integer"),
    ({"reads_per_h": "100"}, "reads_per_h='100' must be an integer"),
    ({"seed": False}, "seed=False must be an integer"),
    ({"annealing_time": True}, "annealing_time: True is not a number"),
    ({"annealing_time": "20"}, "annealing_time: '20' is not a number"),
    ({"h_values": (True, False)}, "h_values: True is not a number"),
    ({"h_values": "0.5"}, "h_values='0.5' must be a sequence of numbers"),
    ({"qubits": (1, 2.0)}, "qubits=2.0 must be an integer"),
    ({"anneal_schedule": ((0, 0), (True, 1))}, "anneal_schedule: True is not a number"),
    ({"spin_reversal": 1}, "spin_reversal=1 must be True or False"),
    ({"sampler_params": {"auto_scale": True}}, "sampler_params sets 'auto_scale'"),
    ({"sampler_params": {"auto_scale": False}}, "sampler_params sets 'auto_scale'"),
    ({"sampler_params": {"num_reads": 5}}, "sampler_params sets 'num_reads'"),
])
def test_wrong_types_are_refused_when_the_protocol_is_made(kwargs, needle):
    """Bools were taken for numbers (``annealing_time=True`` became 1.0 µs) and ``sampler_params={"auto_scale":
    True}`` was sent although qasa always programs h with auto_scale=False."""
    with pytest.raises(ProtocolError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Protocol(**kwargs)


def test_auto_scale_is_never_sent_as_true(chimera_sa):
    from qasa.runner import sampler_parameters

    assert sampler_parameters(Protocol(sampler_params={"readout_thermalization": 10.0}))["auto_scale"] is False


@pytest.mark.parametrize("value, needle", [("5", "max_qpu_seconds='5' is not a number"),
                                           (True, "max_qpu_seconds=True is not a number"),
                                           ([5], "is not a number")])
def test_run_refuses_a_budget_that_is_not_a_number_before_writing(tmp_path, chimera_sa, value, needle):
    """``max_qpu_seconds="5"`` passed the check (float("5")) and failed mid-run with a TypeError."""
    import qasa
    from qasa.cost import BudgetError

    with pytest.raises(BudgetError, match=needle):
        qasa.run(Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1), chimera_sa, tmp_path / "x", max_qpu_seconds=value)
    assert not (tmp_path / "x").exists()
    ds = qasa.run(Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1), chimera_sa, tmp_path / "y",
                  max_qpu_seconds=np.float32(5.0))              # numpy numbers are budgets too
    assert len(ds.calls) == 5


def test_h_grid_that_would_overflow_is_refused():
    """``h_grid(1e308, 1e-308)`` was an OverflowError (h_max/h_step = inf)."""
    with pytest.raises(ProtocolError, match=r"more than 100 001 h values; allowed: at most 100 001"):
        h_grid(1e308, 1e-308)
    assert len(h_grid(1.0, 1.0 / 50_000)) == 100_001


def test_sa_beta_accepts_numpy_numbers_and_refuses_bools():
    import qasa
    from qasa.errors import SamplerError

    s = qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1], beta=np.float32(4.0))
    assert s.qasa_settings()["beta"] == 4.0 and type(s.beta) is float      # was refused (not int/float)
    with pytest.raises(SamplerError, match="beta=True must be a finite number > 0"):
        qasa.get_sampler("sa", topology_type="chimera", topology_shape=[1], beta=True)


def test_call_ids_and_labels_have_one_formatter_and_one_parser():
    """Every id and label qasa writes reads back to what made it (qasa.protocol is their one home)."""
    from qasa.protocol import (LabelKey, call_id, call_label, parse_call_id, parse_label, parse_round_call_id,
                               round_call_id, round_name)

    assert call_id(3, 40) == "g0003-h00040" and parse_call_id("g0003-h00040") == (3, 40)
    assert parse_call_id("qasa g12345-h00001 seed 2") == (12345, 1)          # anywhere in a label, any width
    assert parse_call_id("a001-c00007") is None and parse_call_id("xg0001-h00002") is None
    assert round_call_id(round_name("a", 1), 7) == "a001-c00007"
    assert parse_round_call_id("a001-c00007") == ("a001", 7) and parse_round_call_id("s012-c00000") == ("s012", 0)
    for bad in ("a001-c7", "-c00007", "g0001-h00002", "a001-c0000x", "a001c00007"):
        assert parse_round_call_id(bad) is None, bad
    p = Protocol.grid(0.5, 0.25, reads_per_h=40, reads_per_call=20, seed=11).resolved([0, 3, 5])
    calls = p.calls()
    assert {c.call_id for c in calls} == p.call_ids()
    for c in calls:
        assert parse_call_id(c.call_id) == (c.gauge, c.h_index)
        label = call_label(c, p.seed)
        assert label == f"qasa {c.call_id} seed 11 call {c.slot}"        # its slot in the run order
        assert parse_label(label) == LabelKey(c.gauge, c.h_index, 11, c.slot)
        assert parse_label(label + " d=feedbeef c=0123456789ab") == parse_label(label)     # the Leap label
    assert parse_label("my own label") == LabelKey()
    assert parse_label("seed=4 call #9") == LabelKey(None, None, 4, 9)

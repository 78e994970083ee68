import numpy as np
import pytest

import qasa
from qasa.errors import CredentialsError, ProtocolError, SamplerError
from qasa.protocol import Protocol
from qasa.samplers import device_info, filter_parameters, get_sampler, validate


@pytest.fixture
def mock():
    return get_sampler("mock", topology_type="chimera", topology_shape=[2, 2, 4])


def test_mock_is_the_real_mock_dwave_sampler(mock):
    from dwave.system.testing import MockDWaveSampler

    assert isinstance(mock, MockDWaveSampler)
    info = device_info(mock)
    assert info["topology_type"] == "chimera" and info["num_qubits"] == 32
    assert info["h_range"] == [-4.0, 4.0]


def test_sa_backend_imitates_qpu_ranges():
    s = get_sampler("sa", topology_type="chimera", topology_shape=[2, 2, 4])
    assert s.properties["h_range"] == [-2.0, 2.0]      # 2000Q generation
    z = get_sampler("sa", topology_type="zephyr", topology_shape=[1, 4])
    assert z.properties["h_range"] == [-4.0, 4.0] and len(z.nodelist) == 48
    p = get_sampler("sa", topology_type="pegasus", topology_shape=[3], broken_nodes=[40, 41])
    assert len(p.nodelist) == 8 * 2 * 8 - 2 and 40 not in p.nodelist   # P_m fabric: 8 (m - 1)(3m - 1) qubits


def test_filter_parameters_keeps_only_accepted_names(chimera_sa):
    kept, ignored = filter_parameters(chimera_sa, {"num_reads": 5, "annealing_time": 20, "seed": 1})
    assert kept == {"num_reads": 5, "seed": 1} and ignored == ["annealing_time"]


@pytest.mark.parametrize("protocol, match", [
    (Protocol(h_values=(-1.0, 2.5), spin_reversal=False), r"h=2.5 is outside the sampler's h_range \[-2, 2\]"),
    (Protocol(h_values=(-2.5, 1.0), spin_reversal=True), r"h=-2.5 .*h_range.*gauges program both"),
    (Protocol(h_values=(0.1,), reads_per_h=20000, reads_per_call=20000), r"num_reads per call=20000 .*\[1, 10000\]"),
    (Protocol(h_values=(0.1,), qubits=(0, 99999)), "qubit 99999 is not an active qubit"),
])
def test_validate_names_the_offending_value(chimera_sa, protocol, match):
    with pytest.raises(ProtocolError, match=match):
        validate(protocol, chimera_sa)


@pytest.mark.parametrize("schedule, match", [
    (((0, 0), (0.2, 1)), "maximum slope"),                         # steeper than 1/0.5 µs
    (((0, 0), (5, 0.5)), "anneal fraction s must equal 1"),
    (((0, 0.3), (5, 1)), "s must equal 0 for forward"),
    (tuple((float(i), i / 20) for i in range(21)), "at most 12"),
    (((0, 0), (5.005, 1)), "0.01 µs resolution"),
])
def test_illegal_anneal_schedules_are_refused(mock, schedule, match):
    with pytest.raises(ProtocolError, match=match):
        validate(Protocol(h_values=(0.1,), anneal_schedule=schedule), mock)


def test_legal_anneal_schedule_and_h_gain_pass(mock):
    validate(Protocol(h_values=(0.1,), anneal_schedule=((0, 0), (5, 0.4), (15, 0.4), (16, 1))), mock)
    with pytest.raises(ProtocolError, match=r"gain=4 is outside .*\[-3, 3\]"):
        validate(Protocol(h_values=(0.1,), h_gain_schedule=((0, 1), (5, 4))), mock)
    with pytest.raises(ProtocolError, match=r"annealing_time=0.1 µs is outside"):
        validate(Protocol(h_values=(0.1,), annealing_time=0.1), mock)


def test_unknown_backend_and_topology():
    with pytest.raises(SamplerError, match="unknown backend 'quantum'"):
        get_sampler("quantum")
    with pytest.raises(SamplerError, match="unknown topology 'hexagon'"):
        get_sampler("sa", topology_type="hexagon")


def test_qpu_without_credentials_is_a_clear_error():
    from dwave.cloud.testing import isolated_environ

    with isolated_environ(remove_dwave=True):
        with pytest.raises(CredentialsError, match="no Leap API token"):
            get_sampler("qpu")


def test_unknown_solver_is_a_clear_error(monkeypatch):
    """With a token, a solver name the cloud does not know gives a SamplerError (client faked: no network)."""
    from dwave.cloud.exceptions import SolverNotFoundError
    from dwave.cloud.testing import isolated_environ

    import dwave.system

    def fake(*args, **kwargs):
        raise SolverNotFoundError("Solver with the requested features not available")

    monkeypatch.setattr(dwave.system, "DWaveSampler", fake)
    with isolated_environ(remove_dwave=True):
        monkeypatch.setenv("DWAVE_API_TOKEN", "DEV-0000-secret")
        with pytest.raises(SamplerError, match="solver 'Advantage_system99' not found") as info:
            get_sampler("qpu", solver="Advantage_system99")
    assert "secret" not in str(info.value)


def test_any_dimod_sampler_passes_through(chimera_sa):
    assert qasa.get_sampler(chimera_sa) is chimera_sa


# -- the dimod contract, for every backend (issue 12 item 12) ---------------------------------------

def _backends():
    from qasa.virtual import VirtualQPU

    return {"emulator": VirtualQPU(seed=3, topology_shape=[2], broken_nodes=[]),
            "sa": get_sampler("sa", topology_type="chimera", topology_shape=[2, 2, 4], beta=2.0),
            "mock": get_sampler("mock", topology_type="chimera", topology_shape=[2, 2, 4], beta=2.0)}


@pytest.mark.parametrize("backend", ["emulator", "sa", "mock"])
@pytest.mark.parametrize("auto_scale", [True, False])
def test_energies_and_vartype_follow_the_problem_given(backend, auto_scale):
    """dimod's own assert_sampleset_energies holds through sample_ising, sample_qubo and sample, and a
    BINARY problem gets BINARY samples, whatever auto_scale does to the problem on the device."""
    import dimod
    from dimod.testing.asserts import assert_sampleset_energies

    sampler = _backends()[backend]
    q = sampler.nodelist[:6]
    h = {v: 0.7 * (-1) ** i * (i + 1) / 6 for i, v in enumerate(q)}
    kw = {"num_reads": 50, "auto_scale": auto_scale}
    ising = dimod.BinaryQuadraticModel.from_ising(h, {}, offset=0.25)
    qubo = {(v, v): 1.5 * (-1) ** i for i, v in enumerate(q)}
    cases = [(sampler.sample_ising(h, {}, **kw), dimod.BinaryQuadraticModel.from_ising(h, {})),
             (sampler.sample_qubo(qubo, **kw), dimod.BinaryQuadraticModel.from_qubo(qubo)),
             (sampler.sample(ising, **kw), ising),
             (sampler.sample(ising.change_vartype(dimod.BINARY, inplace=False), **kw),
              ising.change_vartype(dimod.BINARY, inplace=False))]
    if backend != "emulator":              # couplers: the virtual QPU refuses them (single-qubit device)
        u, v = sampler.edgelist[0]
        coupled = dimod.BinaryQuadraticModel({u: 0.3, v: -0.2}, {(u, v): -0.8}, 0.0, dimod.SPIN)
        cases.append((sampler.sample(coupled, **kw), coupled))
    for ss, bqm in cases:
        assert ss.vartype is bqm.vartype
        assert set(np.unique(ss.record.sample)) <= ({-1, 1} if bqm.vartype is dimod.SPIN else {0, 1})
        assert_sampleset_energies(ss, bqm)


def _shipped_samplers():
    """Every sampler qasa ships: the exact Gibbs "sa" backend, its SA-schedule form (the analogue
    studies), the mock backend, and the virtual QPU ("emulator") with each physics and noise law."""
    from qasa.virtual import VirtualQPU

    return {
        "sa": lambda: get_sampler("sa", topology_type="chimera", topology_shape=[2, 2, 4]),
        "sa-schedule": lambda: get_sampler("sa", topology_type="zephyr", topology_shape=[1, 4],
                                           beta_schedule=[0.1, 1.0, 5.0], acceptance="Metropolis",
                                           randomize_order=True),
        "mock": lambda: get_sampler("mock", topology_type="chimera", topology_shape=[2, 2, 4]),
        "emulator": lambda: get_sampler("emulator", topology_type="pegasus", topology_shape=[2], seed=1),
        "emulator-gaussian": lambda: VirtualQPU(topology_type="zephyr", topology_shape=[1, 4], seed=2,
                                                noise="gaussian"),
        "emulator-dynamics": lambda: VirtualQPU(topology_type="pegasus", topology_shape=[2], seed=3,
                                                physics="dynamics"),
    }


@pytest.mark.parametrize("name", list(_shipped_samplers()))
def test_every_shipped_sampler_meets_the_dimod_sampler_and_structured_api(name):
    """dimod's own API checks, then real samples: energies those of the model as given (in SPIN and
    BINARY), every read counted, variables outside the structure refused; the virtual QPU, which
    simulates uncoupled qubits, refuses couplers naming them."""
    import dimod
    from dimod.testing import assert_sampler_api, assert_sampleset_energies, assert_structured_api

    s = _shipped_samplers()[name]()
    assert_sampler_api(s)
    assert_structured_api(s)
    assert isinstance(s, dimod.Sampler) and isinstance(s, dimod.Structured)
    u, v = s.edgelist[0]
    w = s.nodelist[-1]
    coupled = not name.startswith("emulator")          # the virtual QPU simulates uncoupled qubits only
    quad = {(u, v): -0.5} if coupled else {}
    bqm = dimod.BinaryQuadraticModel({u: 0.3, v: -0.2, w: 0.1}, quad, 0.25, "SPIN")
    ss = s.sample(bqm, num_reads=20)
    assert_sampleset_energies(ss, bqm)
    assert ss.vartype is dimod.SPIN and set(ss.variables) == {u, v, w} and ss.record.num_occurrences.sum() == 20
    qubo = {(u, u): 1.0, (w, w): -0.5} | ({(u, v): -2.0} if coupled else {})
    ss = s.sample_qubo(qubo, num_reads=5)
    assert_sampleset_energies(ss, dimod.BQM.from_qubo(qubo))
    assert ss.vartype is dimod.BINARY and ss.record.num_occurrences.sum() == 5
    with pytest.raises(dimod.exceptions.BinaryQuadraticModelStructureError):
        s.sample_ising({max(s.nodelist) + 10**6: 0.1}, {}, num_reads=1)
    if not coupled:
        with pytest.raises(ValueError, match="J = 0"):
            s.sample_ising({u: 0.1}, {(u, v): -0.5}, num_reads=1)

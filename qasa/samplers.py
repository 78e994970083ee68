"""Samplers: one way to get each backend, device information, and protocol validation.

Backends (:func:`get_sampler`):

- ``"qpu"``: :class:`dwave.system.DWaveSampler` through Leap. Credentials come only from
  dwave-cloud-client's own configuration (``dwave config create``, ``DWAVE_API_TOKEN``, profiles).
- ``"mock"``: :class:`dwave.system.testing.MockDWaveSampler` with a thermal substitute, a
  :class:`dwave.samplers.SimulatedAnnealingSampler` doing one sequential Gibbs sweep at fixed β. For
  a problem without couplers, one Gibbs sweep samples every spin exactly from the Boltzmann law
  ``P(s) ∝ exp(-β h s)`` (DESIGN.md §5), so the response is a known logistic curve rather than
  MockDWaveSampler's default steepest descent.
- ``"sa"``: :class:`StructuredSASampler`, the same exact Gibbs sampler on a Chimera, Pegasus or
  Zephyr graph from dwave-networkx (``dwave.graphs``), seeded per call.
- ``"emulator"``: qasa's virtual QPU (:mod:`qasa.virtual`).

Any other :class:`dimod.Sampler` can be passed to the runner directly. :func:`get_backend` returns
the sampler inside a :class:`qasa.backend.Backend` with the recipe that built it (nothing is attached
to the sampler). Only keyword arguments listed in a sampler's ``parameters`` are sent to it
(:meth:`qasa.backend.Backend.filter`; :func:`filter_parameters` for a single question).

:func:`validate` checks a protocol against a sampler's ``properties`` before any call: the client
of the real QPU checks almost none of these (DESIGN.md §5), so an illegal value would otherwise cost
QPU time or fail late.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import dimod
import numpy as np

from qasa.backend import Backend, as_backend, remember_recipe
from qasa.errors import CredentialsError, ProtocolError, SamplerError
from qasa.protocol import Protocol, filter_parameters
from qasa.topology import DEFAULT_SHAPES, topology_graph

__all__ = [
    "BACKENDS",
    "DEFAULT_SHAPES",
    "StructuredSASampler",
    "get_sampler",
    "get_backend",
    "device_info",
    "solver_name",
    "filter_parameters",
    "validate",
    "check_credentials",
    "check_flux_biases",
    "ignores_flux_biases",
    "DEFAULT_FLUX_BIAS_RANGE",
]

#: D-Wave's documented flux-bias range (Φ₀) for solvers that publish no ``flux_bias_range`` property
#: (``dwave.system.composites.LinearAncillaComposite``; module docstring of :mod:`qasa.shim`).
DEFAULT_FLUX_BIAS_RANGE = (-0.005, 0.005)

BACKENDS = ("emulator", "sa", "mock", "qpu")

#: h ranges by topology generation (DESIGN.md §2: [-2, 2] on 2000Q, [-4, 4] on Advantage/Advantage2).
H_RANGES: dict[str, list[float]] = {"chimera": [-2.0, 2.0], "pegasus": [-4.0, 4.0], "zephyr": [-4.0, 4.0]}


class StructuredSASampler(dimod.Sampler, dimod.Structured):
    """Exact single-spin Gibbs sampler on a D-Wave topology (the ``"sa"`` backend).

    It runs :class:`dwave.samplers.SimulatedAnnealingSampler` with Gibbs acceptance, sequential
    order and a constant schedule at ``beta``: for isolated spins each read is an exact Boltzmann
    draw at inverse temperature ``beta``, whatever ``num_sweeps`` is (DESIGN.md §5). With couplers it
    is ordinary simulated annealing. Its properties imitate the QPU of the same topology
    (``h_range``, ``j_range``, ``num_reads_range``) so protocols validate the same way.

    Args:
        topology_type: ``"chimera"``, ``"pegasus"`` or ``"zephyr"``.
        topology_shape: shape list as in ``properties['topology']['shape']``; default full size.
        beta: inverse temperature of the final sweep (units of 1/h).
        num_sweeps: sweeps per read.
        beta_schedule: optional explicit β schedule (overrides ``beta`` and ``num_sweeps``).
        broken_nodes: qubits to remove, as absent qubits of a real device.
        acceptance: ``"Gibbs"`` (default, exact for isolated spins) or ``"Metropolis"``.
        randomize_order: visit spins in random order (``True``: some spins are not updated in the
            last sweep, so the schedule's tail matters: a single-qubit "freeze-out" for SA).
    """

    def __init__(self, topology_type: str = "pegasus", topology_shape: list[int] | None = None,
                 beta: float = 5.0, num_sweeps: int = 1, beta_schedule: list[float] | None = None,
                 broken_nodes: list[int] | None = None, acceptance: str = "Gibbs",
                 randomize_order: bool = False) -> None:
        from dwave.samplers import SimulatedAnnealingSampler

        graph, shape = topology_graph(topology_type, topology_shape)
        broken = set(broken_nodes or ())
        self._nodelist = sorted(n for n in graph.nodes if n not in broken)
        self._edgelist = sorted(tuple(sorted(e)) for e in graph.edges
                                if e[0] not in broken and e[1] not in broken)
        self._child = SimulatedAnnealingSampler()
        self.beta = float(beta)
        self.num_sweeps = int(num_sweeps)
        self.beta_schedule = None if beta_schedule is None else [float(b) for b in beta_schedule]
        if acceptance not in ("Gibbs", "Metropolis"):
            raise SamplerError(f"acceptance={acceptance!r}: choose 'Gibbs' or 'Metropolis'")
        self.acceptance = acceptance
        self.randomize_order = bool(randomize_order)
        self._properties = {
            "chip_id": f"sa-{topology_type}-{'x'.join(map(str, shape))}",
            "topology": {"type": topology_type, "shape": shape},
            "h_range": list(H_RANGES[topology_type]),
            "j_range": [-1.0, 1.0],
            "num_reads_range": [1, 10_000],
            "qubits": list(self._nodelist),
            "couplers": [list(e) for e in self._edgelist],
            "category": "software",
        }

    def qasa_settings(self) -> dict[str, Any]:
        """Every setting that changes this sampler's data, as plain JSON (recorded by the runner)."""
        topology = self._properties["topology"]
        return {"topology_type": topology["type"], "topology_shape": list(topology["shape"]),
                "beta": self.beta, "num_sweeps": self.num_sweeps, "beta_schedule": self.beta_schedule,
                "acceptance": self.acceptance, "randomize_order": self.randomize_order,
                "num_active_qubits": len(self._nodelist)}

    @property
    def nodelist(self) -> list[int]:
        return self._nodelist

    @property
    def edgelist(self) -> list[tuple[int, int]]:
        return self._edgelist

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    @property
    def parameters(self) -> dict[str, list]:
        return {"num_reads": [], "seed": [], "label": [], "auto_scale": []}

    @dimod.bqm_structured
    def sample(self, bqm: dimod.BinaryQuadraticModel, num_reads: int = 1, seed: int | None = None,
               label: str | None = None, auto_scale: bool = True) -> dimod.SampleSet:
        """Sample ``num_reads`` states at inverse temperature ``beta`` (see class docstring).

        ``auto_scale=True`` (the QPU's default) divides h and J by the factor that makes the problem
        just fill ``h_range`` and ``j_range``, as the QPU does; single-qubit work uses ``False``. The
        energies reported are those of ``bqm`` as given (dimod's contract), not of the rescaled problem.
        """
        given = bqm
        if auto_scale:
            h_lim = max(abs(x) for x in self._properties["h_range"])
            j_lim = max(abs(x) for x in self._properties["j_range"])
            lin = np.abs(np.fromiter(bqm.linear.values(), float, len(bqm.linear)))
            quad = np.abs(np.fromiter(bqm.quadratic.values(), float, len(bqm.quadratic)))
            factor = max(lin.max(initial=0) / h_lim, quad.max(initial=0) / j_lim)
            if factor > 0:
                bqm = bqm.copy()
                bqm.scale(1.0 / factor)
        if self.beta_schedule is not None:
            schedule = np.asarray(self.beta_schedule, dtype=float)
        else:
            schedule = np.full(self.num_sweeps, self.beta)
        ss = self._child.sample(bqm, num_reads=num_reads, seed=seed,
                                beta_schedule_type="custom", beta_schedule=schedule,
                                proposal_acceptance_criteria=self.acceptance, randomize_order=self.randomize_order)
        if bqm is not given:
            ss.record.energy[:] = given.energies((ss.record.sample, ss.variables))
        if label is not None:
            ss.info["problem_label"] = label
        return ss


def check_credentials(profile: str | None = None) -> None:
    """Raise :class:`CredentialsError` unless dwave-cloud-client's configuration has a token.

    The token itself is never read into qasa's records or messages.
    """
    from dwave.cloud.config import load_config

    try:
        config = load_config(profile=profile)
    except Exception as exc:  # ConfigFileError and friends: message carries no token
        raise CredentialsError(f"cannot read the D-Wave cloud configuration: {type(exc).__name__}: {exc}") from None
    if not config.get("token"):
        raise CredentialsError(
            "no Leap API token configured for the qpu backend: run `dwave config create` "
            "or set DWAVE_API_TOKEN (see `dwave setup --help`)")


#: β of the ``sa`` and ``mock`` backends when none is given (the CLI's ``--beta`` default).
DEFAULT_BETA = 5.0


def get_backend(backend: "str | dimod.Sampler | Backend" = "emulator", *, topology_type: str | None = None,
                topology_shape: list[int] | None = None, solver: str | dict | None = None,
                profile: str | None = None, beta: float | None = None, seed: int | None = None,
                broken_nodes: list[int] | None = None, **options: Any) -> Backend:
    """Build a sampler by backend name and return it as a :class:`~qasa.backend.Backend` holding its recipe.

    A :class:`dimod.Sampler` (or a Backend) is wrapped as it is (no recipe). The recipe (backend name,
    the graph actually built, β of ``sa``/``mock``, the device seed of ``emulator``, solver and
    profile of ``qpu``, further options) is recorded with the data, checked on resume and rebuilt by
    ``qasa run DIR`` (``get_backend(**recipe)``). Arguments as :func:`get_sampler`.
    """
    if isinstance(backend, (dimod.Sampler, Backend)):
        if any(v is not None for v in (topology_type, topology_shape, solver, profile, seed, broken_nodes)) or options:
            raise SamplerError("backend options need a backend name, not a sampler object")
        return as_backend(backend)
    if backend in ("sa", "mock") and beta is None:
        beta = DEFAULT_BETA
    sampler = _make_sampler(backend, topology_type=topology_type, topology_shape=topology_shape, solver=solver,
                            profile=profile, beta=beta, seed=seed, broken_nodes=broken_nodes, **options)
    built = Backend(sampler)
    topology = built.properties.get("topology") or {}
    if backend != "qpu" and topology.get("type"):
        # the graph actually built (a preset's default included), so that naming it on resume matches
        topology_type, topology_shape = topology["type"], list(topology.get("shape") or []) or topology_shape
    recipe = {"backend": backend, "topology_type": topology_type, "topology_shape": topology_shape,
              "solver": solver, "broken_nodes": broken_nodes, **options}
    if backend in ("sa", "mock"):
        recipe["beta"] = beta
    if backend == "emulator":
        recipe["seed"] = (built.settings().get("settings") or {}).get("seed", seed)
    if backend == "qpu":
        recipe["profile"] = profile
    built.recipe = recipe
    return built


def get_sampler(backend: str | dimod.Sampler = "emulator", **options: Any) -> dimod.Sampler:
    """Return a sampler by backend name (or pass a :class:`dimod.Sampler` through).

    Args:
        backend: one of :data:`BACKENDS`, or a sampler instance.
        topology_type, topology_shape: device graph for the software backends (default: Pegasus
            P16 for ``sa``/``mock``, the preset's device for ``emulator``).
        solver: for ``"qpu"``, a solver name or a dwave-cloud-client feature filter
            (e.g. ``{"topology__type": "pegasus"}``).
        profile: dwave-cloud-client configuration profile for ``"qpu"``.
        beta: inverse temperature of the ``"sa"`` and ``"mock"`` backends (default
            :data:`DEFAULT_BETA`); refused for the others.
        seed: seed of the virtual QPU's hidden truth (``"emulator"``).
        broken_nodes: qubits to remove from the software backends.
        **options: further backend-specific options (``"emulator"``: preset, structure, physics...;
            see :class:`qasa.virtual.VirtualQPU`).

    Nothing is attached to the sampler: its recipe is remembered by :mod:`qasa.backend` (weakly), so
    that a run on it records how to rebuild it; :func:`get_backend` returns it with its recipe.

    Raises:
        SamplerError: unknown backend or solver; :class:`CredentialsError` without a Leap token.
    """
    if isinstance(backend, dimod.Sampler):
        return backend
    built = get_backend(backend, **options)
    remember_recipe(built.sampler, built.recipe or {})    # held by qasa.backend, not attached to the sampler
    return built.sampler


def _make_sampler(backend: str, *, topology_type: str | None, topology_shape: list[int] | None,
                  solver: str | dict | None, profile: str | None, beta: float | None, seed: int | None,
                  broken_nodes: list[int] | None, **options: Any) -> dimod.Sampler:
    if topology_shape is not None and not isinstance(topology_shape, str):
        try:                                    # 16 for [16]; a shape is a list of integers
            values = np.atleast_1d(np.asarray(topology_shape, dtype=object)).tolist()
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) or
                       isinstance(v, float) and v.is_integer() for v in values):
                raise ValueError
            topology_shape = [int(v) for v in values]
        except (TypeError, ValueError):
            raise SamplerError(f"topology_shape={topology_shape!r} must be a list of positive integers, "
                               "e.g. [16] (Pegasus), [16, 16, 4] (Chimera), [12, 4] (Zephyr)") from None
    if backend not in ("sa", "mock") and beta is not None:
        raise SamplerError(f"beta={beta!r} does not apply to the {backend} backend (a device's β per qubit is "
                           "measured, not set); beta is an option of sa and mock")
    if backend in ("sa", "mock") and topology_type is None:
        topology_type = "pegasus"
    if backend in ("sa", "mock") and (isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real)
                                      or not (math.isfinite(beta) and beta > 0)):
        raise SamplerError(f"beta={beta!r} must be a finite number > 0 (inverse temperature, 1/h; not a bool)")
    if backend in ("sa", "mock"):
        beta = float(beta)          # numpy numbers too
    if backend == "sa":
        return StructuredSASampler(topology_type, topology_shape, beta=beta,
                                   broken_nodes=broken_nodes, **options)
    if backend == "mock":
        from dwave.samplers import SimulatedAnnealingSampler
        from dwave.system.testing import MockDWaveSampler

        _, shape = topology_graph(topology_type, topology_shape)
        mock = MockDWaveSampler(
            topology_type=topology_type, topology_shape=shape, broken_nodes=broken_nodes,
            substitute_sampler=SimulatedAnnealingSampler(),
            substitute_kwargs=dict(beta_schedule_type="custom", beta_schedule=[float(beta)],
                                   proposal_acceptance_criteria="Gibbs", randomize_order=False),
            parameter_warnings=False)
        # the mock passes keyword arguments it lists on to its substitute: listing `seed` lets the
        # runner seed every call (otherwise the SA substitute draws from numpy's global generator
        # and a resumed run differs from an uninterrupted one)
        mock.parameters["seed"] = []
        return mock
    if backend == "emulator":
        from qasa.virtual import VirtualQPU

        return VirtualQPU(topology_type=topology_type, topology_shape=topology_shape, seed=seed,
                          broken_nodes=broken_nodes, **options)
    if backend == "qpu":
        check_credentials(profile)
        from qasa.leap import open_dwave_sampler   # retries transient errors; messages redacted

        return open_dwave_sampler(solver, profile, **options)
    raise SamplerError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)} or pass a dimod.Sampler")


def solver_name(sampler: dimod.Sampler | Backend) -> str:
    """The solver's name (a QPU's, or the chip id of a software sampler, or its class name)."""
    return as_backend(sampler).name


def device_info(sampler: dimod.Sampler | Backend) -> dict[str, Any]:
    """Summarize a sampler as plain JSON-able data (no credentials): :meth:`qasa.backend.Backend.device_info`.

    Keys: ``solver``, ``sampler_class``, ``topology_type``, ``topology_shape``, ``nodelist``,
    ``edgelist``, ``num_qubits``, ``h_range``, ``j_range``, ``num_reads_range``,
    ``annealing_time_range``, ``default_annealing_time``, ``parameters``, ``properties`` (a
    snapshot of the solver's properties without the per-qubit lists), ``versions``.
    """
    return as_backend(sampler).device_info()


def _check_range(name: str, value: float, allowed: list[float] | None, unit: str = "") -> None:
    if allowed is None:
        return
    lo, hi = allowed
    if not (lo <= value <= hi):
        raise ProtocolError(f"{name}={value:g}{unit} is outside the sampler's allowed range [{lo:g}, {hi:g}]{unit}")


def _check_schedule_points(name: str, schedule: tuple[tuple[float, float], ...], max_points: int | None) -> None:
    if len(schedule) < 2:
        raise ProtocolError(f"{name} needs at least 2 points, got {len(schedule)}")
    if max_points is not None and len(schedule) > max_points:
        raise ProtocolError(f"{name} has {len(schedule)} points; the sampler allows at most {max_points}")
    times = [t for t, _ in schedule]
    if any(not math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise ProtocolError(f"{name} times {times} must be finite and strictly increasing")
    if times[0] != 0:
        raise ProtocolError(f"{name} must start at t=0, got t={times[0]:g} µs")
    off_grid = [t for t in times if abs(round(t * 100) - t * 100) > 1e-6]
    if off_grid:
        raise ProtocolError(f"{name} time {off_grid[0]!r} µs is not a multiple of the 0.01 µs resolution")


def ignores_flux_biases(sampler: Any) -> bool:
    """True for a sampler known to accept ``flux_biases`` and do nothing with them: dwave-system's
    ``MockDWaveSampler`` (and qasa's ``mock`` backend built on it) that is not qasa's virtual QPU."""
    sampler = as_backend(sampler).sampler
    try:
        from dwave.system.testing import MockDWaveSampler
    except ImportError:                                          # pragma: no cover - dwave-system is a dependency
        return False
    from qasa.virtual.qpu import VirtualQPU

    return isinstance(sampler, MockDWaveSampler) and not isinstance(sampler, VirtualQPU)


def check_flux_biases(values: Any, sampler: Any, what: str = "flux_biases") -> list[float]:
    """``values`` as a list of floats if they can be sent to ``sampler`` as ``flux_biases``.

    Checks: a flat list of numbers (no booleans or strings), one per qubit of the chip when the sampler
    publishes ``num_qubits``, each within the sampler's flux-bias range (its ``flux_bias_range`` property,
    else :data:`DEFAULT_FLUX_BIAS_RANGE`), on a sampler that accepts ``flux_biases`` and does not ignore them.

    Raises:
        ProtocolError: naming the first offending qubit and value and the allowed range.
    """
    backend = as_backend(sampler)
    name = type(backend.sampler).__name__
    if ignores_flux_biases(backend):
        raise ProtocolError(f"{what}: {name} accepts flux_biases but ignores them (a mock); apply a shim on a QPU "
                            "or qasa's virtual QPU (--backend emulator)")
    if not backend.accepts("flux_biases"):
        raise ProtocolError(f"{what}: {name} does not accept flux_biases")
    if not isinstance(values, (list, tuple, np.ndarray)) or np.ndim(values) != 1:
        raise ProtocolError(f"{what} must be a flat list of numbers (Φ₀), one per qubit id")
    rng = backend.properties.get("flux_bias_range") or DEFAULT_FLUX_BIAS_RANGE
    lo, hi = float(rng[0]), float(rng[1])
    for q, v in enumerate(values):
        ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
        if not ok or not (math.isfinite(float(v)) and lo <= float(v) <= hi):
            raise ProtocolError(f"{what}: qubit {q} has flux bias {v!r}, outside the sampler's flux-bias range "
                                f"[{lo:g}, {hi:g}] Φ₀" if ok else f"{what}: qubit {q} has flux bias {v!r}, not a number")
    n = backend.properties.get("num_qubits")
    if n is not None and len(values) != n:
        raise ProtocolError(f"{what} has {len(values)} values; this solver has {n} qubits")
    return [float(v) for v in values]


def validate(protocol: Protocol, sampler: dimod.Sampler | Backend) -> None:
    """Check that ``protocol`` can run on ``sampler``, before any call is made.

    Checks: the protocol on its own (:meth:`Protocol.check`); every programmed field (±h under
    gauges) within ``h_range``; reads per call within ``num_reads_range``; qubits present in the
    sampler's ``nodelist``; annealing time within ``annealing_time_range``; the anneal schedule by
    :meth:`dwave.system.DWaveSampler.validate_anneal_schedule` plus the 0.01 µs time resolution; the
    h-gain schedule's points, start and ``h_gain_schedule_range``.

    Raises:
        ProtocolError: naming the offending value and the allowed range.
    """
    protocol.check()
    backend = as_backend(sampler)
    props, params = backend.properties, backend.parameters
    if "flux_biases" in protocol.sampler_params:
        check_flux_biases(protocol.sampler_params["flux_biases"], backend, "sampler_params['flux_biases']")
    h_range = props.get("h_range")
    if h_range is not None:
        fields = list(protocol.h_values)
        if protocol.spin_reversal:
            fields += [-h for h in protocol.h_values]
        gain = 1.0
        if protocol.h_gain_schedule is not None:
            gain = max(abs(g) for _, g in protocol.h_gain_schedule)
        for h in fields:
            if not (h_range[0] <= h * gain <= h_range[1]):
                what = "h" if gain == 1.0 else f"h*max|gain| ({h:g}*{gain:g})"
                extra = " (gauges program both +h and -h)" if protocol.spin_reversal else ""
                raise ProtocolError(f"{what}={h * gain:g} is outside the sampler's h_range "
                                    f"[{h_range[0]:g}, {h_range[1]:g}]{extra}")
    reads_range = props.get("num_reads_range")
    largest = protocol.reads_of_gauge(0)
    smallest = protocol.reads_of_gauge(protocol.calls_per_h - 1)
    _check_range("num_reads per call", largest, reads_range)
    _check_range("num_reads per call", smallest, reads_range)
    nodelist = backend.nodelist
    if protocol.qubits is not None and nodelist is not None:
        present = set(nodelist)
        missing = [q for q in protocol.qubits if q not in present]
        if missing:
            raise ProtocolError(f"qubit {missing[0]} is not an active qubit of this sampler "
                                f"({len(missing)} of {len(protocol.qubits)} requested qubits are absent; "
                                f"active qubits: {len(present)})")
    if protocol.annealing_time is not None:
        _check_range("annealing_time", protocol.annealing_time, props.get("annealing_time_range"), " µs")
    if protocol.anneal_schedule is not None:
        if "anneal_schedule" not in params:
            raise ProtocolError("this sampler does not accept anneal_schedule")
        schedule = [tuple(p) for p in protocol.anneal_schedule]
        outside = [s for _, s in schedule if not (0.0 <= s <= 1.0)]
        if outside:
            raise ProtocolError(f"anneal_schedule value s={outside[0]:g} is outside the allowed range [0, 1]")
        _check_schedule_points("anneal_schedule", protocol.anneal_schedule, props.get("max_anneal_schedule_points"))
        if "annealing_time_range" in props and "max_anneal_schedule_points" in props:
            from dwave.system import DWaveSampler

            try:
                DWaveSampler.validate_anneal_schedule(backend.sampler, schedule)
            except (ValueError, TypeError, RuntimeError) as exc:
                raise ProtocolError(f"illegal anneal_schedule {schedule}: {exc}") from None
    if protocol.h_gain_schedule is not None:
        if "h_gain_schedule" not in params:
            raise ProtocolError("this sampler does not accept h_gain_schedule")
        _check_schedule_points("h_gain_schedule", protocol.h_gain_schedule, props.get("max_h_gain_schedule_points"))
        g_range = props.get("h_gain_schedule_range")
        for _, g in protocol.h_gain_schedule:
            _check_range("h_gain_schedule gain", g, g_range)
    _check_applied(protocol, backend)


#: Protocol fields that change the physics, by the sampler parameter that carries them.
_PHYSICS_FIELDS = ("annealing_time", "anneal_schedule", "h_gain_schedule")


def _check_applied(protocol: Protocol, backend: Backend) -> None:
    """Refuse an annealing parameter the sampler does not accept: it would not be sent, yet the
    protocol stored with the data would say it had been applied. (``MockDWaveSampler`` accepts them
    like a QPU and uses them in its timing, though its reads do not depend on them.)"""
    accepted = backend.parameters
    for name in _PHYSICS_FIELDS:
        value = getattr(protocol, name)
        if value is not None and name not in accepted:
            shown = f"{value:g} µs" if name == "annealing_time" else "given"
            raise ProtocolError(f"{name} ({shown}) is not accepted by {type(backend.sampler).__name__}, so it would not "
                                "be applied; leave it unset for this backend")

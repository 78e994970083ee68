"""The QASA protocol: a pure, serializable description of one single-qubit assessment.

Every qubit of the device is given the Ising problem ``E(s) = h s`` (no couplers), all qubits in
parallel in one call; the value of ``h`` is swept over a grid and the number of reads in which each
qubit returns ``s = -1`` is counted (Nelson, Vuffray, Lokhov, Coffrin, "Single-Qubit Fidelity
Assessment of Quantum Annealing Hardware", IEEE TQE 2021; reference scripts lanl-ansi/QASA).

Spin-reversal gauges are applied client side. For a problem without couplers a gauge is a vector
``g`` of ±1: qubit ``i`` is programmed with ``g_i h`` and its returned spin is multiplied by ``g_i``.
Averaging over gauges removes any static bias that does not change sign with the programmed field
(it turns a bias ``b0`` into a symmetric two-component mixture, the η of the QASA model). Gauges
come in antithetic pairs (the second of a pair is minus the first), so with an even number of
equal-sized calls per h value every qubit spends exactly half its reads under each sign and the
average is the equal-weight mixture of the QASA model; an odd number leaves one unpaired gauge.

A :class:`Protocol` only stores configuration. :meth:`Protocol.calls` expands it, for a given list
of qubits, into the list of :class:`Call` objects to submit; each call has a stable id, so a run can
be resumed by skipping the ids already on disk. Each h value is read ``reads_per_h`` times, split
into ``gauges_per_h`` (or more, if ``reads_per_call`` demands it) calls of as equal size as possible,
each under its own gauge. Calls are ordered gauge-major (every h once, then every h again...) so that
slow drift of the device is spread over the whole h grid instead of aliasing onto it; with
``order="shuffled"`` (the default) each gauge pass also takes its h values in its own seeded order, so
that drift *within* a pass does not alias onto h either: 1/f flux noise slower than a pass is smooth in
time, and in h order it bends the response curve the same way in every pass (on the default virtual
device, 300 qubits at 4 000 reads per h, b's 95 % interval covered 0.905 of its estimand in h order,
0.96 shuffled or permuted, 0.945 with the flux noise off). The order is a function of the seed and the
pass only (:meth:`Protocol.calls`; :attr:`Call.position`), so a resumed run keeps it. A protocol
recorded before the option existed reads back as ``order="sequential"`` (h order), as it was run.

Per-qubit designs. Qubits are independent and each can get its own field in the same call, so a
call's ``h`` may be an array with one value per qubit (:attr:`Call.h`); the counts table keeps
one row per (call, qubit) with that qubit's own ``h``, so any later fit sees the right fields.
``design="permuted"`` is the permuted grid: every qubit still sees every value of ``h_values`` once
per gauge round, but each qubit in its own seeded order (a fresh order per antithetic gauge pair),
which decorrelates slow drift and neighbour effects from h. Information-optimal per-qubit designs
are built by :mod:`qasa.design` and run by :mod:`qasa.adaptive`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from qasa.errors import ProtocolError

if TYPE_CHECKING:
    import dimod

__all__ = ["Protocol", "Call", "h_grid", "DESIGNS", "MAX_CALLS", "filter_parameters", "MANAGED_PARAMETERS",
           "call_id", "parse_call_id", "round_name", "round_call_id", "parse_round_call_id", "call_label",
           "parse_label", "LabelKey"]

#: h designs of a :class:`Protocol`: the same h on every qubit, or a per-qubit permuted grid.
DESIGNS = ("grid", "permuted")
#: Run orders of a :class:`Protocol`'s calls within each gauge pass (module docstring).
ORDERS = ("shuffled", "sequential")

#: Most calls one protocol may expand into (the reference protocol makes 810): a bound that keeps a
#: mistyped read count from expanding for ever.
MAX_CALLS = 100_000


#: Sampler parameters qasa sets itself, refused in ``sampler_params`` (with what sets them instead).
MANAGED_PARAMETERS = {
    "auto_scale": "always False: h is programmed as given, never rescaled",
    "flux_drift_compensation": "the protocol's flux_drift_compensation field",
    "annealing_time": "the protocol's annealing_time field",
    "anneal_schedule": "the protocol's anneal_schedule field",
    "h_gain_schedule": "the protocol's h_gain_schedule field",
    "answer_mode": "always 'histogram'",
    "label": "one label per call, naming the dataset and the call",
    "num_reads": "reads_per_h and reads_per_call",
    "seed": "each call's seed, drawn from the protocol's seed",
}


def _sequence(name: str, value: Any) -> list[Any]:
    """``value`` as a list, or :class:`ProtocolError` if it is not a sequence (a string is not one)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ProtocolError(f"{name}={value!r} must be a sequence of numbers")
    return list(value)


def _number(name: str, value: Any) -> float:
    """A real number (Python or numpy) as ``float``; a bool, a string or anything else is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ProtocolError(f"{name}: {value!r} is not a number (a bool or a string is refused; give an int or a float)")
    return float(value)


def _integer(name: str, value: Any) -> int:
    """An integer (Python or numpy) as ``int``; a bool, a float or anything else is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ProtocolError(f"{name}={value!r} must be an integer (a bool, a float or a string is refused)")
    return int(value)


def h_grid(h_max: float = 1.0, h_step: float = 0.025) -> tuple[float, ...]:
    """Return the symmetric grid ``-h_max, -h_max + h_step, ..., h_max`` (rounded to 1e-12).

    The default, ``h_grid(1.0, 0.025)`` (81 values), is the *reference h grid*: the grid of the
    QASA paper and of the example command in lanl-ansi/QASA's README. The collection script's own
    defaults are wider (``h_grid(2.0, 0.025)``, 161 values; :meth:`Protocol.reference_script`).

    Raises:
        ProtocolError: if ``h_max`` or ``h_step`` is not positive, or the grid exceeds 100 001 values.
    """
    if not (h_max > 0 and math.isfinite(h_max)):
        raise ProtocolError(f"h_max={h_max!r} must be a positive finite number")
    if not (h_step > 0 and math.isfinite(h_step)):
        raise ProtocolError(f"h_step={h_step!r} must be a positive finite number")
    ratio = h_max / h_step        # may overflow to inf (h_max=1e308, h_step=1e-308): refused, not converted
    if not ratio <= 50_000:
        raise ProtocolError(f"h_max={h_max:g} in steps of h_step={h_step:g} makes more than 100 001 h values; "
                            "allowed: at most 100 001 (h_max/h_step <= 50 000)")
    n = int(math.floor(ratio + 1e-9))
    values = np.round(np.arange(-n, n + 1) * h_step, 12) + 0.0  # +0.0 turns -0.0 into 0.0
    return tuple(float(v) for v in values)


# -- call ids and labels: formatted and parsed here only ---------------------------------------------
def call_id(gauge: int, h_index: int) -> str:
    """The id of a protocol's call: ``g<gauge, 4 digits>-h<h index, 5 digits>`` (e.g. ``g0003-h00040``)."""
    return f"g{gauge:04d}-h{h_index:05d}"


_CALL_ID = re.compile(r"\bg(\d+)-h(\d+)\b")


def parse_call_id(text: str) -> tuple[int, int] | None:
    """``(gauge, h_index)`` of the first protocol call id (:func:`call_id`) anywhere in ``text``
    (a label, say), or None when it holds none."""
    found = _CALL_ID.search(str(text))
    return (int(found.group(1)), int(found.group(2))) if found else None


def round_name(prefix: str, index: int) -> str:
    """The name of round ``index`` of a per-qubit design: ``<prefix><index, 3 digits>`` (``"a001"``:
    :mod:`qasa.adaptive`; ``"s"``: :mod:`qasa.shim`; ``"t"``: :mod:`qasa.temperature`)."""
    return f"{prefix}{index:03d}"


def round_call_id(round_: str, c: int) -> str:
    """The id of call ``c`` of a designed round (explicit calls): ``<round>-c<c, 5 digits>``."""
    return f"{round_}-c{c:05d}"


def parse_round_call_id(cid: str) -> tuple[str, int] | None:
    """``(round, c)`` of an explicit call id (:func:`round_call_id`), or None if ``cid`` is not one."""
    prefix, sep, number = str(cid).rpartition("-c")
    if not (sep and prefix and len(number) == 5 and number.isdigit()):
        return None
    return prefix, int(number)


def call_label(call: "Call", seed: int | None) -> str:
    """The label a run gives a call: ``qasa <call id> seed <run seed> call <index>`` (:mod:`qasa.leap`
    appends the dataset and a content digest). A label is all a real sampler gets of a call's
    identity; :func:`parse_label` reads it back."""
    return f"qasa {call.call_id} seed {seed} call {call.slot}"


_RUN_SEED = re.compile(r"\bseed[\s=:]*(\d+)\b")
_INDEX = re.compile(r"\bcall[\s=:#]*(\d+)\b")


@dataclass(frozen=True)
class LabelKey:
    """What a call's label says of it (:func:`parse_label`); None where the label does not say."""

    gauge: int | None = None
    h_index: int | None = None
    run_seed: int | None = None
    index: int | None = None


def parse_label(label: str) -> LabelKey:
    """The identity in a label: the protocol call id anywhere in it (:func:`parse_call_id`), the run's
    seed (``seed N``) and the call's position (``call N``), each when present. Labels other than
    :func:`call_label`'s are read the same way (``seed=N``, ``call #N`` are accepted too)."""
    text = str(label)
    ids, seed, index = parse_call_id(text), _RUN_SEED.search(text), _INDEX.search(text)
    return LabelKey(ids[0] if ids else None, ids[1] if ids else None,
                    int(seed.group(1)) if seed else None, int(index.group(1)) if index else None)


@dataclass(frozen=True)
class Call:
    """One sampler call of a protocol.

    Attributes:
        call_id: stable identifier, :func:`call_id` (``"g{gauge:04d}-h{h_index:05d}"``) for a protocol's
            calls, :func:`round_call_id` for the explicit calls of a designed round.
        index: position in the protocol's call list (seeds the call, see :meth:`Protocol.call_seed`).
        h_index: index of the h value in ``Protocol.h_values`` (the slot of a permuted grid; -1
            for a designed call).
        h: the nominal field (before the gauge): one float for every qubit, or an array with one
            value per qubit of the call's qubit list (a per-qubit design).
        gauge: index of this call's gauge among the calls of the same h value.
        num_reads: reads of this call.
        flips: the gauge, one ±1 per qubit of the call's qubit list (all +1 without gauges).
        params: extra sampler parameters of this call only (e.g. the per-call ``flux_biases`` of
            :mod:`qasa.shim`), sent on top of the protocol's; ``None`` for none.
        position: the call's slot in its run's order (the ``call N`` of its label, its place on the
            device's clock); ``None``: its ``index``.
    """

    call_id: str
    index: int
    h_index: int
    h: float | np.ndarray = field(compare=False)
    gauge: int
    num_reads: int
    flips: np.ndarray = field(repr=False, compare=False)
    params: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    position: int | None = field(default=None, compare=False)

    @property
    def slot(self) -> int:
        """The call's place in its run: :attr:`position`, or :attr:`index` when none is set."""
        return self.index if self.position is None else self.position

    def programmed_h(self, qubits: Sequence[int]) -> dict[int, float]:
        """Return the h dict to send: ``{qubit: flip * h}`` (a dict, see DESIGN.md §5)."""
        values = self.flips * np.asarray(self.h, dtype=float)
        return dict(zip(np.asarray(qubits, dtype=np.int64).tolist(), np.broadcast_to(values, np.shape(qubits)).tolist()))

    @property
    def per_qubit(self) -> bool:
        """True when the call carries one field per qubit."""
        return np.ndim(self.h) > 0

    @property
    def h_scalar(self) -> float:
        """The common field of the call, or NaN for a per-qubit call (the calls table's ``h``)."""
        return float("nan") if self.per_qubit else float(self.h)


@dataclass(frozen=True)
class Protocol:
    """Configuration of a single-qubit assessment (pure data; see module docstring).

    Args:
        h_values: the fields to sweep (units of h, with ``auto_scale=False``); default the
            reference h grid ±1 in steps of 0.025 (:func:`h_grid`). Use :meth:`Protocol.grid` for
            another ±h_max grid and :meth:`Protocol.reference_script` for the reference
            collection script's defaults.
        reads_per_h: total reads of every qubit at each h value.
        reads_per_call: the largest number of reads in one call (bounded by the sampler's
            ``num_reads_range``).
        gauges_per_h: the least number of calls (one gauge each) per h value.
        spin_reversal: apply a random gauge to each call (``False``: identity gauges).
        annealing_time: annealing time in µs, or ``None`` for the sampler's default.
        anneal_schedule: piecewise-linear ``((t_µs, s), ...)`` schedule, or ``None``.
        h_gain_schedule: piecewise-linear ``((t_µs, g), ...)`` schedule, or ``None``.
        flux_drift_compensation: D-Wave's hourly flux-drift correction; QASA switches it off.
        qubits: qubits to assess; ``None`` means every active qubit of the sampler.
        seed: seed of the gauges (and of seeded samplers); ``None`` draws one when the run starts.
        sampler_params: extra keyword arguments for the sampler (sent only if it accepts them); the
            parameters qasa sets itself (:data:`MANAGED_PARAMETERS`: ``auto_scale``, which is always
            False, ``num_reads``, ``seed``...) are refused.

    Raises:
        ProtocolError: when constructed with a value of the wrong type (a bool or a string where a
            number is meant, a float where an integer is meant; numpy numbers are accepted) or a
            managed sampler parameter; the ranges are checked by :meth:`check`.
        design: ``"grid"`` (the same h on every qubit in each call) or ``"permuted"`` (every qubit
            sees every h value once per gauge round, in its own seeded order; see module docstring).
        order: ``"shuffled"`` (default: each gauge pass takes its h values in a seeded order of its own)
            or ``"sequential"`` (in the order of ``h_values``); module docstring.
    """

    h_values: tuple[float, ...] = field(default_factory=h_grid)
    reads_per_h: int = 10_000
    reads_per_call: int = 1_000
    gauges_per_h: int = 1
    spin_reversal: bool = True
    annealing_time: float | None = None
    anneal_schedule: tuple[tuple[float, float], ...] | None = None
    h_gain_schedule: tuple[tuple[float, float], ...] | None = None
    flux_drift_compensation: bool = False
    qubits: tuple[int, ...] | None = None
    seed: int | None = None
    sampler_params: dict[str, Any] = field(default_factory=dict, hash=False)
    design: str = "grid"
    order: str = "shuffled"

    def __post_init__(self) -> None:
        # types are checked and normalized here, before anything is created from the protocol: numpy
        # numbers become Python numbers (equality and JSON serialization are exact), a bool or a
        # string where a number is meant is refused; the ranges are checked by :meth:`check`
        object.__setattr__(self, "h_values", tuple(_number("h_values", h) for h in _sequence("h_values", self.h_values)))
        for name in ("reads_per_h", "reads_per_call", "gauges_per_h"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        for name in ("seed", "annealing_time"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, (_integer if name == "seed" else _number)(name, value))
        for name in ("anneal_schedule", "h_gain_schedule"):
            value = getattr(self, name)
            if value is not None:
                try:
                    points = tuple((t, x) for t, x in _sequence(name, value))
                except (TypeError, ValueError):
                    raise ProtocolError(f"{name}={value!r} must be a sequence of (t_µs, value) pairs") from None
                object.__setattr__(self, name, tuple((_number(name, t), _number(name, x)) for t, x in points))
        if self.qubits is not None:
            object.__setattr__(self, "qubits", tuple(_integer("qubits", q) for q in _sequence("qubits", self.qubits)))
        for name in ("spin_reversal", "flux_drift_compensation"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ProtocolError(f"{name}={getattr(self, name)!r} must be True or False")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if not isinstance(self.sampler_params, Mapping):
            raise ProtocolError(f"sampler_params={self.sampler_params!r} must be a dict of sampler keyword arguments")
        object.__setattr__(self, "sampler_params", dict(self.sampler_params))
        managed = sorted(set(self.sampler_params) & set(MANAGED_PARAMETERS))
        if managed:
            raise ProtocolError(f"sampler_params sets {managed[0]!r}, which qasa sets itself "
                                f"({MANAGED_PARAMETERS[managed[0]]}); remove it from sampler_params")

    def __repr__(self) -> str:
        from qasa.display import protocol_repr

        return protocol_repr(self)

    def _repr_html_(self) -> str:
        from qasa.display import protocol_html

        return protocol_html(self)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def grid(cls, h_max: float = 1.0, h_step: float = 0.025, **kwargs: Any) -> "Protocol":
        """Build a protocol on the symmetric grid :func:`h_grid` ``(h_max, h_step)``."""
        return cls(h_values=h_grid(h_max, h_step), **kwargs)

    @classmethod
    def reference_script(cls, **kwargs: Any) -> "Protocol":
        """The defaults of the reference collection script, lanl-ansi/QASA ``collect_spin_table.py``.

        Read from that script (``build_cli_parser`` and constants, commit 2fb4cf3c): ``--h-range``
        2.0 and ``--h-step`` 0.025 (h from −2 to 2, 161 values), ``--num-reads`` 100 000 reads per
        h value in calls of ``CALL_NUM_READS`` = 10 000, ``--annealing-time`` 1 µs, no spin-reversal
        transform (``--spin-reversal-transform-rate`` unset), ``auto_scale=False`` and
        ``flux_drift_compensation=False`` (DESIGN.md §3, §6). The script rescales the grid when it
        exceeds the solver's ``h_range``; qasa instead rejects such a protocol before any call
        (±2 fits the h_range of every current solver).

        Args:
            **kwargs: fields to override (e.g. ``qubits``, ``seed``).
        """
        base: dict[str, Any] = dict(reads_per_h=100_000, reads_per_call=10_000, gauges_per_h=1,
                                    spin_reversal=False, annealing_time=1.0, flux_drift_compensation=False)
        base.update(kwargs)
        return cls.grid(2.0, 0.025, **base)

    def replace(self, **changes: Any) -> "Protocol":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` inverts it exactly."""
        out = dataclasses.asdict(self)
        out["h_values"] = list(self.h_values)
        for name in ("anneal_schedule", "h_gain_schedule"):
            if out[name] is not None:
                out[name] = [list(p) for p in out[name]]
        if out["qubits"] is not None:
            out["qubits"] = list(out["qubits"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Protocol":
        """Inverse of :meth:`to_dict`.

        Raises:
            ProtocolError: on unknown keys.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ProtocolError(f"unknown protocol field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**{"order": "sequential", **data})     # recorded before run orders existed: h order

    # -- checks -------------------------------------------------------------------------------
    def check(self) -> None:
        """Check the protocol on its own (the sampler-specific checks are in :mod:`qasa.samplers`).

        Raises:
            ProtocolError: naming the offending value and the allowed range.
        """
        if len(self.h_values) == 0:
            raise ProtocolError("h_values is empty; give at least one h value")
        bad = [h for h in self.h_values if not math.isfinite(h)]
        if bad:
            raise ProtocolError(f"h value {bad[0]!r} is not finite")
        if len(set(self.h_values)) != len(self.h_values):
            raise ProtocolError("h_values contains duplicates; each h value must appear once")
        for name in ("reads_per_h", "reads_per_call", "gauges_per_h"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ProtocolError(f"{name}={value!r} must be a positive integer")
        if self.num_calls > MAX_CALLS:
            raise ProtocolError(
                f"reads_per_h={self.reads_per_h} in calls of at most {self.reads_per_call} reads over "
                f"{len(self.h_values)} h values makes {self.num_calls} calls; at most {MAX_CALLS} are allowed "
                "(use fewer reads or more reads per call)")
        if self.gauges_per_h > self.reads_per_h:
            raise ProtocolError(
                f"gauges_per_h={self.gauges_per_h} exceeds reads_per_h={self.reads_per_h}; "
                "every gauge needs at least one read")
        if self.annealing_time is not None and not (self.annealing_time > 0 and math.isfinite(self.annealing_time)):
            raise ProtocolError(f"annealing_time={self.annealing_time!r} must be a positive finite number (µs)")
        if self.annealing_time is not None and self.anneal_schedule is not None:
            raise ProtocolError("give either annealing_time or anneal_schedule, not both")
        if self.qubits is not None and len(set(self.qubits)) != len(self.qubits):
            raise ProtocolError("qubits contains duplicates")
        if self.seed is not None and not (isinstance(self.seed, (int, np.integer)) and self.seed >= 0):
            raise ProtocolError(f"seed={self.seed!r} must be a non-negative integer or None")
        if self.design not in DESIGNS:
            raise ProtocolError(f"design={self.design!r}; choose one of {list(DESIGNS)}")
        if self.order not in ORDERS:
            raise ProtocolError(f"order={self.order!r}; choose one of {list(ORDERS)}")

    # -- expansion ----------------------------------------------------------------------------
    @property
    def calls_per_h(self) -> int:
        """Number of calls (gauges) per h value."""
        return max(self.gauges_per_h, -(-self.reads_per_h // self.reads_per_call))

    @property
    def num_calls(self) -> int:
        """Total number of sampler calls."""
        return self.calls_per_h * len(self.h_values)

    def reads_of_gauge(self, gauge: int) -> int:
        """Reads of the ``gauge``-th call of an h value (the first calls take the remainder)."""
        base, extra = divmod(self.reads_per_h, self.calls_per_h)
        return base + (1 if gauge < extra else 0)

    def resolved(self, nodelist: Iterable[int]) -> "Protocol":
        """Return a copy with ``qubits`` and ``seed`` fixed (every active qubit; a fresh seed)."""
        qubits = self.qubits if self.qubits is not None else tuple(sorted(int(q) for q in nodelist))
        seed = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        return self.replace(qubits=qubits, seed=seed)

    def calls(self) -> list[Call]:
        """Expand a resolved protocol into its calls, in run order (gauge-major; within a pass in the
        seeded order of :meth:`pass_order`), with stable ids.

        The gauge of a call depends only on the seed and its index (``gauge · len(h_values) + h_index``,
        which also seeds a seeded sampler), so any subset of calls can be regenerated identically when
        a run resumes; its :attr:`Call.position` is its slot in the run order. Gauges come in
        antithetic pairs (gauge ``2k + 1`` is minus gauge ``2k`` of the same h value).

        Raises:
            ProtocolError: if the protocol is not resolved (see :meth:`resolved`) or fails :meth:`check`.
        """
        self.check()
        if self.qubits is None or self.seed is None:
            raise ProtocolError("protocol must be resolved (qubits and seed set) before expansion")
        n = len(self.qubits)
        out = []
        values = np.asarray(self.h_values, dtype=float)
        orders = None
        for gauge in range(self.calls_per_h):
            if self.design == "permuted" and gauge % 2 == 0:
                orders = self.permutation(gauge // 2)
            slots = self.pass_order(gauge)
            for h_index, h in enumerate(self.h_values):
                if orders is not None:
                    h = values[orders[:, h_index]]
                index = gauge * len(self.h_values) + h_index
                if self.spin_reversal:
                    pair_index = (gauge - gauge % 2) * len(self.h_values) + h_index
                    rng = np.random.default_rng([self.seed, pair_index])
                    flips = rng.choice(np.array([-1, 1], dtype=np.int8), size=n)
                    if gauge % 2:
                        flips = -flips  # antithetic partner of the previous gauge
                else:
                    flips = np.ones(n, dtype=np.int8)
                out.append(Call(call_id=call_id(gauge, h_index), index=index,
                                h_index=h_index, h=h, gauge=gauge,
                                num_reads=self.reads_of_gauge(gauge), flips=flips,
                                position=gauge * len(self.h_values) + int(slots[h_index])))
        return sorted(out, key=lambda c: c.slot)

    def pass_order(self, gauge: int) -> np.ndarray:
        """The slot of each h value (by index) in gauge pass ``gauge``: a seeded permutation of
        ``range(len(h_values))`` with ``order="shuffled"`` (depends on seed and pass only), the identity
        with ``"sequential"``."""
        k = len(self.h_values)
        if self.order == "sequential":
            return np.arange(k)
        if self.seed is None:
            raise ProtocolError("protocol must be resolved before its run order is drawn")
        return np.argsort(np.random.default_rng([self.seed, 3, gauge]).permutation(k), kind="stable")

    def permutation(self, round_index: int) -> np.ndarray:
        """Per-qubit order of the h values in gauge round pair ``round_index`` of a permuted grid:
        ``(qubits, len(h_values))`` indices, each row a permutation (depends on seed and round only)."""
        if self.qubits is None or self.seed is None:
            raise ProtocolError("protocol must be resolved (qubits and seed set) before expansion")
        rng = np.random.default_rng([self.seed, 2, round_index])
        return np.argsort(rng.random((len(self.qubits), len(self.h_values))), axis=1, kind="stable")

    def extension_problem(self, larger: "Protocol") -> str | None:
        """Why ``larger`` (more reads per h) cannot extend data collected with this protocol, or None.

        An extension keeps every existing call: the same id and the same reads. That holds when the
        extra reads come as whole extra gauges, i.e. when both protocols split their reads per h into
        calls of the same size (e.g. reads_per_h a multiple of reads_per_call in both).
        """
        if larger.reads_per_h <= self.reads_per_h:
            return f"reads_per_h={larger.reads_per_h} does not exceed the stored {self.reads_per_h}"
        for g in range(self.calls_per_h):
            if larger.reads_of_gauge(g) != self.reads_of_gauge(g):
                return (f"the stored calls have {self.reads_of_gauge(g)} reads each, but {larger.reads_per_h} reads "
                        f"per h in calls of at most {larger.reads_per_call} would change them; add a multiple of "
                        f"{self.reads_of_gauge(0)} reads per h")
        return None

    def call_ids(self) -> set[str]:
        """Ids of every call of the protocol (without expanding the gauges).

        Raises:
            ProtocolError: if the protocol fails :meth:`check` (e.g. more than :data:`MAX_CALLS` calls).
        """
        self.check()
        return {call_id(g, j) for g in range(self.calls_per_h) for j in range(len(self.h_values))}

    def call_seed(self, index: int) -> int:
        """Seed handed to a seeded sampler for call ``index`` (depends only on seed and index)."""
        if self.seed is None:
            raise ProtocolError("protocol must be resolved before calls are seeded")
        return int(np.random.SeedSequence([self.seed, index, 1]).generate_state(1)[0] % 2**31)


def filter_parameters(sampler: dimod.Sampler, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split a call's ``params`` into those the sampler accepts (its ``parameters``) and the names it does not.

    Lives here, below both :mod:`qasa.samplers` (which re-exports it) and :mod:`qasa.leap`, which
    filter every call's parameters before sending it.

    Args:
        sampler: any ``dimod.Sampler``; one without ``parameters`` accepts none.
        params: the call's sampler parameters.

    Returns:
        ``(accepted, ignored)``: the accepted parameters and the sorted names of the others.
    """
    accepted_names = set(getattr(sampler, "parameters", {}) or {})
    accepted = {k: v for k, v in params.items() if k in accepted_names}
    ignored = sorted(k for k in params if k not in accepted_names)
    return accepted, ignored

"""The one owner of a sampler: every question qasa asks a :class:`dimod.Sampler` goes through :class:`Backend`.

A :class:`Backend` is built once per run from any :class:`dimod.Sampler` (``Backend(sampler)``) or,
with the recipe that built it, by :func:`qasa.samplers.get_backend` (``qasa run DIR`` rebuilds the
stored recipe). It reads the sampler's ``properties``, ``parameters``, ``nodelist`` and
``edgelist`` once and answers from them:

- the accepted parameters (:meth:`Backend.filter`, computed once per set of parameter names),
- the data-affecting settings recorded with a dataset and checked on resume (:meth:`Backend.settings`:
  the recipe and the sampler's own ``qasa_settings()``),
- the device record (:meth:`Backend.device_info`, :meth:`Backend.device_record` with a virtual QPU's
  truth, :attr:`Backend.name`),
- QPU-time estimates (:meth:`Backend.estimate_call`, :meth:`Backend.plan`, D-Wave's timing model of
  :mod:`qasa.cost`),
- the cloud solver behind a ``DWaveSampler`` (:attr:`Backend.cloud_solver`),
- the counting fast path (:class:`CountingSampler`, a declared :class:`typing.Protocol`: a sampler with
  ``sample_counts(h, **params) -> (qubits, n_down, info)`` is asked for counts, not a SampleSet).

Nothing is attached to the user's sampler object: the recipe lives in the Backend.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Protocol as TypingProtocol, runtime_checkable

import dimod
import numpy as np
import pandas as pd

from qasa.cost import check_run_duration, estimate_call
from qasa.dataset import json_safe
from qasa.errors import SamplerError
from qasa.protocol import Protocol
from qasa.redact import redact_obj

__all__ = ["Backend", "CountingSampler", "TruthSampler", "as_backend", "plan", "remember_recipe", "versions"]


@runtime_checkable
class CountingSampler(TypingProtocol):
    """A sampler that returns per-qubit counts of -1 reads directly (qasa's virtual QPU).

    ``h`` is a read-only mapping ``{qubit: programmed field}``; the result is ``(qubits, n_down,
    info)`` with ``qubits`` in the mapping's order and ``info`` like a SampleSet's (``timing``...).
    """

    def sample_counts(self, h: Mapping[int, float], num_reads: int = 1,
                      **kwargs: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]: ...


@runtime_checkable
class TruthSampler(TypingProtocol):
    """A sampler that knows what an assessment should find (qasa's virtual QPU)."""

    def qasa_truth(self, protocol: Any) -> list[dict[str, Any]]: ...


def versions() -> dict[str, str]:
    """Installed versions of qasa and the Ocean packages it uses (recorded with every dataset)."""
    import importlib.metadata

    out = {}
    for pkg in ("qasa", "dimod", "dwave-system", "dwave-samplers", "dwave-cloud-client", "numpy", "scipy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class Backend:
    """A sampler and what qasa knows about it (see the module docstring).

    Args:
        sampler: any :class:`dimod.Sampler` (or an object with its ``sample_ising``, or a
            :class:`CountingSampler`).
        recipe: how :func:`qasa.samplers.get_backend` built it (backend name, topology, β, seed...),
            recorded with the data and reused by ``qasa run DIR``; ``None`` for a sampler passed in.

    Raises:
        SamplerError: ``sampler`` is not a :class:`dimod.Sampler`.
    """

    def __init__(self, sampler: dimod.Sampler, recipe: Mapping[str, Any] | None = None) -> None:
        if isinstance(sampler, Backend):
            recipe = sampler.recipe if recipe is None else recipe
            sampler = sampler.sampler
        if not (isinstance(sampler, dimod.Sampler) or callable(getattr(sampler, "sample_ising", None))
                or isinstance(sampler, CountingSampler)):     # duck-typed wrappers of a sampler are welcome
            raise SamplerError(f"{type(sampler).__name__} is not a dimod.Sampler; pass a sampler or a backend name")
        self.sampler = sampler
        if recipe is None:
            recipe = _recipe_of(sampler)
        self.recipe: dict[str, Any] | None = None if recipe is None else dict(recipe)
        self.properties: Mapping[str, Any] = getattr(sampler, "properties", None) or {}
        self.parameters: frozenset[str] = frozenset(getattr(sampler, "parameters", None) or {})
        nodelist = getattr(sampler, "nodelist", None)
        edgelist = getattr(sampler, "edgelist", None)
        self.nodelist: list[int] | None = None if nodelist is None else list(nodelist)
        self.edgelist: list[tuple[int, int]] | None = None if edgelist is None else [tuple(e) for e in edgelist]
        self._solver = getattr(sampler, "solver", None)
        self._kept: dict[frozenset[str], tuple[frozenset[str], list[str]]] = {}

    def __repr__(self) -> str:
        recipe = "" if self.recipe is None else f", backend={self.recipe.get('backend')!r}"
        return f"Backend({self.name!r}{recipe})"

    # -- what the sampler is ---------------------------------------------------------------------
    @property
    def sampler_class(self) -> str:
        """Module-qualified class name of the sampler."""
        return f"{type(self.sampler).__module__}.{type(self.sampler).__qualname__}"

    @property
    def name(self) -> str:
        """The solver's name (a QPU's, or the chip id of a software sampler, or its class name)."""
        return getattr(self._solver, "name", None) or self.properties.get("chip_id") or type(self.sampler).__name__

    @property
    def h_range(self) -> list[float] | None:
        """The programmable field range, if the sampler states one."""
        h = self.properties.get("h_range")
        return None if h is None else [float(h[0]), float(h[1])]

    @property
    def cloud_solver(self) -> Any:
        """The dwave-cloud-client solver behind a ``DWaveSampler`` (asynchronous submission), or None."""
        s = self._solver
        return s if s is not None and hasattr(s, "sample_ising") and hasattr(s, "client") else None

    @property
    def counting(self) -> CountingSampler | None:
        """The sampler itself when it offers the counting fast path (:class:`CountingSampler`), else None."""
        return self.sampler if isinstance(self.sampler, CountingSampler) else None

    def accepts(self, name: str) -> bool:
        """True if the sampler lists keyword argument ``name`` in its ``parameters``."""
        return name in self.parameters

    def filter(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Split ``params`` into those the sampler accepts and the sorted names of the others.

        The split is computed once per set of parameter names (a run asks it once per call).
        """
        names = frozenset(params)
        if names not in self._kept:
            self._kept[names] = (names & self.parameters, sorted(names - self.parameters))
        kept, ignored = self._kept[names]
        return {k: v for k, v in params.items() if k in kept}, list(ignored)

    # -- what is recorded with the data ----------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Everything about the sampler that changes the data, as plain JSON (recorded and checked on resume).

        The recipe (backend, topology, β of ``sa``/``mock``, preset, physics level, device seed,
        solver...) and the sampler's own ``qasa_settings()`` when it has one (qasa's samplers do,
        also when built directly).
        """
        out: dict[str, Any] = {"class": self.sampler_class}
        if self.recipe is not None:
            out["recipe"] = json_safe(self.recipe)
        own = getattr(self.sampler, "qasa_settings", None)
        if callable(own):
            out["settings"] = json_safe(own())
        return out

    def device_info(self) -> dict[str, Any]:
        """The sampler as plain JSON-able data (no credentials); keys as :func:`qasa.samplers.device_info`."""
        props = self.properties
        topology = props.get("topology", {}) or {}
        nodes, edges = self.nodelist, self.edgelist

        def listed(key: str) -> list | None:
            return list(props[key]) if key in props else None

        return {
            "solver": self.name,
            "sampler_class": self.sampler_class,
            "topology_type": topology.get("type"),
            "topology_shape": list(topology["shape"]) if "shape" in topology else None,
            "nodelist": np.asarray(nodes, dtype=np.int64).tolist() if nodes is not None else None,
            "edgelist": np.asarray(edges, dtype=np.int64).reshape(-1, 2).tolist() if edges is not None else None,
            "num_qubits": len(nodes) if nodes is not None else None,
            "h_range": listed("h_range"), "j_range": listed("j_range"),
            "num_reads_range": listed("num_reads_range"), "annealing_time_range": listed("annealing_time_range"),
            "default_annealing_time": props.get("default_annealing_time"),
            "parameters": sorted(self.parameters),
            "properties": _snapshot(props),
            "versions": versions(),
        }

    def truth(self, protocol: Protocol) -> list[dict[str, Any]] | None:
        """Per-qubit values an assessment of ``protocol`` should find, when the sampler knows them."""
        return self.sampler.qasa_truth(protocol) if isinstance(self.sampler, TruthSampler) else None

    def device_record(self, protocol: Protocol) -> dict[str, Any]:
        """:meth:`device_info` (redacted: a solver's properties come from the server) with the truth, if any."""
        info = redact_obj(self.device_info())
        truth = self.truth(protocol)
        if truth is not None:  # a virtual device knows what the assessment should find
            info["truth"] = truth
        return info

    # -- QPU time --------------------------------------------------------------------------------
    def estimate_call(self, protocol: Protocol, num_qubits: int, num_reads: int) -> float | None:
        """Estimated QPU access time (µs) of one call (:func:`qasa.cost.estimate_call`), or None."""
        return estimate_call(self.properties, protocol, num_qubits, num_reads, solver=self._solver)

    def check_run_duration(self, protocol: Protocol) -> None:
        """Refuse calls outside the solver's ``problem_run_duration_range`` (:func:`qasa.cost.check_run_duration`)."""
        check_run_duration(protocol, self.properties)

    def plan(self, protocol: Protocol) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Every call of a resolved protocol with its estimated QPU access time, and the totals.

        Returns:
            ``(calls, totals)`` with columns ``call_id, h, gauge, num_reads, est_qpu_access_time_us``;
            totals: ``calls``, ``qubits``, ``reads``, ``qpu_access_time_s`` (None without a timing model).
        """
        n = len(protocol.qubits or self.nodelist or [])
        calls = protocol.calls()
        cache = {r: self.estimate_call(protocol, n, r) for r in {c.num_reads for c in calls}}
        table = pd.DataFrame([{"call_id": c.call_id, "h": c.h_scalar, "gauge": c.gauge, "num_reads": c.num_reads,
                               "est_qpu_access_time_us": cache[c.num_reads]} for c in calls])
        est = table["est_qpu_access_time_us"]
        known = est.notna().all() and len(est) > 0
        totals = {"calls": len(calls), "qubits": n, "reads": int(table["num_reads"].sum()),
                  "qpu_access_time_s": float(est.sum()) / 1e6 if known else None}
        return table, totals


#: Recipes of the samplers :func:`qasa.samplers.get_sampler` built, by sampler (held weakly; nothing is
#: attached to the sampler object), so that ``Backend(sampler)`` of such a sampler records how to rebuild it.
_RECIPES: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def remember_recipe(sampler: Any, recipe: Mapping[str, Any]) -> None:
    """Remember how ``sampler`` was built (see :data:`_RECIPES`); a sampler without weak references is skipped."""
    try:
        _RECIPES[sampler] = dict(recipe)
    except TypeError:  # pragma: no cover - a sampler class with __slots__ and no __weakref__
        pass


def _recipe_of(sampler: Any) -> dict[str, Any] | None:
    try:
        recipe = _RECIPES.get(sampler)
    except TypeError:  # pragma: no cover - unhashable or not weakly referenceable
        return None
    return None if recipe is None else dict(recipe)


def as_backend(sampler: dimod.Sampler | Backend) -> Backend:
    """``sampler`` itself if it is a :class:`Backend`, else a new Backend around it (no recipe)."""
    return sampler if isinstance(sampler, Backend) else Backend(sampler)


def plan(protocol: Protocol, sampler: dimod.Sampler | Backend) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:meth:`Backend.plan` of ``sampler`` (a sampler or a Backend)."""
    return as_backend(sampler).plan(protocol)


def _snapshot(props: Mapping[str, Any]) -> dict[str, Any]:
    """The solver's properties as plain JSON, without the per-qubit lists (kept as nodelist/edgelist)."""
    import json

    skip = {"qubits", "couplers", "anneal_offset_ranges", "parameters"}
    return json.loads(json.dumps({k: v for k, v in props.items() if k not in skip}, default=str))

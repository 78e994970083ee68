"""QPU time: D-Wave's timing model, protocol cost estimates, run-duration checks and the budget guard.

Timing model (``problem_timing_data`` version 1.0.x; the same formula as
``dwave.cloud.solver.StructuredSolver.estimate_qpu_access_time``), all in µs::

    programming = typical_programming_time + programming_thermalization
    per read    = anneal_time + readout_time(num_qubits) + delay_per_sample + readout_thermalization
    qpu_access_time = programming + num_reads × per read

with readout_time interpolated piecewise-linearly in log–log space over the number of qubits. A
solver that offers ``estimate_qpu_access_time`` (a real ``DWaveSampler``'s solver) is asked
directly; samplers without timing data (the ``sa`` and ``mock`` backends) have no estimate. The
sampler is asked through :class:`qasa.backend.Backend` (``Backend.estimate_call``, ``Backend.plan``).

Problem run duration (D-Wave's limit ``problem_run_duration_range``)::

    (anneal_time + readout_thermalization) × num_reads + programming_thermalization
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from qasa.errors import ProtocolError, QasaError
from qasa.protocol import Protocol

__all__ = ["timing_model", "estimate_call", "check_run_duration", "BudgetError", "anneal_duration"]


class BudgetError(QasaError):
    """A run would exceed, or has reached, its QPU-time budget (collected data stay on disk)."""


def anneal_duration(protocol: Protocol, properties: Mapping[str, Any]) -> float:
    """Anneal time per read in µs: the schedule's end, the annealing time, or the solver default."""
    if protocol.anneal_schedule is not None:
        return float(protocol.anneal_schedule[-1][0])
    if protocol.annealing_time is not None:
        return float(protocol.annealing_time)
    return float(properties.get("default_annealing_time") or 20.0)


def timing_model(data: Mapping[str, Any], num_qubits: int, num_reads: int, anneal_time: float,
                 readout_thermalization: float | None = None,
                 programming_thermalization: float | None = None) -> dict[str, float]:
    """D-Wave's QPU timing breakdown for one problem (see module docstring), in µs."""
    version = str(data.get("version", "1.0.0"))
    if not version.startswith("1.0."):
        raise ValueError(f"timing model version {version} is not supported (1.0.x)")
    params = data["readout_time_model_parameters"]
    n = len(params) // 2
    q, t = params[:n], params[n:]
    if data.get("readout_time_model", "pwl_log_log") == "pwl_log_log":
        readout = float(10 ** np.interp(np.log10(max(num_qubits, 1)), q, t))
    else:
        readout = float(np.interp(num_qubits, q, t))
    programming = data["typical_programming_time"] + float(
        programming_thermalization if programming_thermalization else data["default_programming_thermalization"])
    delay = data["qpu_delay_time_per_sample"] + float(
        readout_thermalization if readout_thermalization else data["default_readout_thermalization"])
    sampling = num_reads * (anneal_time + readout + delay)
    return {"qpu_programming_time": programming, "qpu_anneal_time_per_sample": float(anneal_time),
            "qpu_readout_time_per_sample": readout, "qpu_delay_time_per_sample": delay,
            "qpu_sampling_time": sampling, "qpu_access_time": programming + sampling,
            "qpu_access_overhead_time": 0.0, "total_post_processing_time": 0.0,
            "post_processing_overhead_time": 0.0}


def estimate_call(properties: Mapping[str, Any], protocol: Protocol, num_qubits: int, num_reads: int,
                  solver: Any = None) -> float | None:
    """Estimated QPU access time (µs) of one call, or ``None`` without a timing model.

    Args:
        properties: the solver's properties (``problem_timing_data``, ``default_annealing_time``).
        protocol, num_qubits, num_reads: what the call programs.
        solver: a dwave-cloud-client solver; when it offers ``estimate_qpu_access_time`` it is asked.
    """
    extra = protocol.sampler_params
    if solver is not None and hasattr(solver, "estimate_qpu_access_time"):
        try:
            return float(solver.estimate_qpu_access_time(
                num_qubits=num_qubits, num_reads=num_reads, annealing_time=protocol.annealing_time,
                anneal_schedule=[list(p) for p in protocol.anneal_schedule] if protocol.anneal_schedule else None,
                readout_thermalization=extra.get("readout_thermalization"),
                programming_thermalization=extra.get("programming_thermalization")))
        except (ValueError, KeyError):
            pass
    data = properties.get("problem_timing_data")
    if not data:
        return None
    return timing_model(data, num_qubits, num_reads, anneal_duration(protocol, properties),
                        extra.get("readout_thermalization"), extra.get("programming_thermalization"))["qpu_access_time"]


def check_run_duration(protocol: Protocol, properties: Mapping[str, Any]) -> None:
    """Refuse calls whose problem run duration falls outside the solver's ``problem_run_duration_range``."""
    props = properties
    allowed = props.get("problem_run_duration_range")
    if not allowed:
        return
    extra = protocol.sampler_params
    anneal = anneal_duration(protocol, props)
    rt = float(extra.get("readout_thermalization") or props.get("default_readout_thermalization") or 0.0)
    pt = float(extra.get("programming_thermalization") or props.get("default_programming_thermalization") or 0.0)
    for reads in {protocol.reads_of_gauge(0), protocol.reads_of_gauge(protocol.calls_per_h - 1)}:
        duration = (anneal + rt) * reads + pt
        if not allowed[0] <= duration <= allowed[1]:
            raise ProtocolError(f"problem run duration {duration:g} µs of a {reads}-read call is outside "
                                f"problem_run_duration_range [{allowed[0]:g}, {allowed[1]:g}] µs; use fewer reads per call")

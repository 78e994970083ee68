r"""Adaptive assessment: the least QPU time for a requested precision, round by round, resumable.

Stages
    1. **Pilot**: a short permuted grid (:class:`~qasa.protocol.Protocol` with ``design="permuted"``;
       by default ±1 in steps of 0.05, one call per h value) gives every qubit a first fit. It has
       one call per programmed field, so σ_call is not identified there (two calls per field without
       gauges would identify it, but D-Wave's T_eff estimator, which the report takes from the pilot,
       needs the gauges: without them it read 0.1966 against 0.1985, 12σ); the designed rounds repeat
       their fields with identity gauges, so σ_call is identified from the first round on.
    2. **Rounds**: fit every qubit (maximum likelihood in the programmed frame, restarted away from
       the spurious η = 0 optimum, :func:`fit_with_restarts`); check the stopping rule;
       plan the next round; run it. A round is ``C`` calls of ``R`` reads (``R`` the protocol's
       ``reads_per_call``), each call carrying one field per qubit. Qubits are independent but share
       calls, so every qubit gets the same ``C`` calls per round and its design is *where* they go:
       a whole number of calls at each of a few quantized fields (:func:`qasa.design.allocate`).

Stopping rule
    Every targeted parameter's 95 % interval half-width is within its target (``target``, e.g.
    ``{"beta": "1%", "b": 0.003, "eta": 0.01}``) on at least ``fraction`` of the qubits, counting only
    qubits whose σ_call is identified (an interval that assumes no between-call noise — the pilot's,
    one call per field — is too short on a real QPU: on the noisy virtual device the pilot alone
    "met" β 5 %, b 0.01 on 99 % of qubits) — or the
    QPU-time budget ``max_qpu_seconds`` is spent, or ``max_rounds`` rounds have run, or the design is
    ``infeasible`` (it predicts more than ``max_reads_per_qubit``, or no number of reads at all when the
    h DAC's per-field error caps what the design's fields can tell), or ``stalled``: three plans in a
    row predict that the data already meet the target (their Cramér–Rao information) while the fits'
    intervals do not, and the two rounds between them did not raise the fraction within target — the
    data then hold noise the design does not model, and further rounds would not close the gap (a backstop:
    the design models σ_call and the per-field error, below). Half-widths are
    taken from the fit's interval columns ``<p>_lo``/``<p>_hi`` when the fit provides them (profile
    likelihood) as the interval's reach from the estimate on its wider side, ``max(hi − θ̂, θ̂ − lo)``
    (a one-sided interval ``[0, hi]`` of an estimate on its bound reaches ``hi``), otherwise
    ``z · stderr``; a parameter without a finite interval misses its target.

Planning a round (a deterministic function of the seed and the data of earlier rounds)
    At the current estimates θ̂ (NaN rows take the median; parameters bounded below by 0 are floored
    at half their median, since at η = 0 the information about η vanishes and a design would ask
    for infinitely many reads), with ``M₀`` the expected information of each qubit's data so far:

    - ``N_q`` = reads qubit q still needs on its own optimal design (:func:`qasa.design.required_reads`
      with prior ``M₀``; 0 for qubits already within target);
    - the round reads ``N`` = the ``fraction`` quantile of ``N_q`` — the reads that bring that fraction
      of qubits to target if the Cramér–Rao prediction holds — kept between ``min_step`` and
      ``growth`` times the reads so far (early estimates are rough) and within the budget;
    - each qubit's design for those ``N`` reads is optimal *given* ``M₀`` (``minimax`` criterion,
      :func:`qasa.design.optimal_design`), so reads go where they reduce the uncertainty that still
      misses its target;
    - every information above is the between-call one (:mod:`qasa.design`, "Between calls") at the
      qubit's σ̂_call (the fit's, where identified; elsewhere the median of the identified ones; 0
      when none is — after the pilot): a call's reads share its offset, so past
      ``R (∂m/∂b)² σ² ≈ 1 − m²`` only more calls shrink b's interval, and η, which the mean confounds
      with σ, costs what the scatter between calls can tell; ``N_q`` says so. ``M₀`` takes each
      cell's reads per call from its per-call statistics; a qubit whose σ_call is not yet identified
      needs at least ``MIN_CALL_DF + 8`` calls (:mod:`qasa.fitting`), enough repeats to identify it;
    - a qubit that misses its target is designed for that target divided by how much its fit's interval
      exceeds the Cramér–Rao half-width of its data (1 to :data:`CALIBRATION_MAX`): near a bound or with
      few calls the profile interval is wider than the bound, and a plan that took the bound at its word
      said "0 more reads" for qubits a few per cent short (:func:`_calibrated_targets`);
    - both ``M₀`` and ``N_q`` hold the device's per-field error τ (the fit's ``sigma_field``, 0 until ten
      qubits have σ_call identified): a field's mean carries at most ``I_m/ρ`` however many reads it gets,
      and new reads at a field already read join its earlier reads (:mod:`qasa.design`, "Per-field
      errors"). The design then spreads each qubit's calls over fields one DAC step apart
      (:func:`qasa.design.field_candidates`, designed for the reads it predicts, twice over), and a
      target those fields cannot reach needs more reads than the feasibility bound: the run stops as
      ``infeasible`` before paying for rounds that could not meet it. (Measured, virtual Advantage, 120
      qubits, β 1.5 %, b 0.004, η 0.015, ``max_reads_per_qubit=1e9``: ``infeasible`` after one round and
      455 s of QPU time, where the design without τ ran six rounds, 32 097 s, to ``stalled``.)

Checkpoints
    Before a round runs, its plan (per-qubit fields and numbers of calls, with the figures it was
    derived from) is written atomically to ``OUT/design/round-NNN.json``; its calls have ids
    ``aNNN-cNNNNN``, fields shuffled by ``(seed, round)`` and seeds ``(seed, index)``, and are run by
    :func:`qasa.runner.run` (journaled one by one, budget-checked). A killed run resumes: finished
    rounds are skipped, a round whose plan exists is completed from that plan, and the next plan is
    computed from exactly the data an uninterrupted run would have had — so resume gives the same
    data. ``metadata["adaptive"]`` holds the settings (a resume with other settings is refused) and,
    at the end, the result: rounds, stop reason, fraction within target, reads per qubit, QPU time.

The design lives in the programmed frame (the field each qubit is actually given), which is the frame
of the fit; designed calls therefore carry identity gauges — a gauge would only relabel the field.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import dimod
import numpy as np
import pandas as pd

from qasa import design as D
from qasa.backend import Backend, as_backend
from qasa.cost import BudgetError
from qasa.dataset import Dataset, Response, utcnow
from qasa.errors import DatasetError, ProtocolError
from qasa.models import Model, get_model
from qasa.protocol import MAX_CALLS, Call, Protocol, round_call_id, round_name
from qasa.store import DESIGN_DIR, DatasetStore

__all__ = ["assess_adaptive", "fit_with_restarts", "precision_status", "plan_round", "round_calls", "expected_cost",
           "pilot_protocol", "pilot_from", "TYPICAL", "TYPICAL_SIGMA_CALL", "PrecisionStatus", "MAX_READS_PER_QUBIT", "read_round_plan"]

#: Typical Advantage-like single-qubit parameters (β of Advantage_system4.1's published T_eff 0.198,
#: DESIGN.md §2; γ ≈ 0.1 and η ≈ 0.1/β as the virtual QPU's preset), used by :func:`expected_cost`.
TYPICAL = {"beta": 5.05, "b": 0.0, "gamma": 0.1, "eta": 0.02, "sigma": 0.02, "epsilon": 5e-4}
#: Typical per-programming field error σ_call (h units) for :func:`expected_cost`: D-Wave's published
#: s-resolved figure, σ ≈ 0.025 at s ≈ 0.28 to 0.010 at s ≈ 0.75 ("Errors and Error Correction", ICE;
#: DESIGN.md §7), interpolated at Advantage_system4.1's freeze-out s* = 0.612 (as the virtual QPU does).
TYPICAL_SIGMA_CALL = 0.0144



def pilot_protocol(reads_per_call: int = 10_000, h_max: float = 1.0, h_step: float = 0.05, **kwargs: Any) -> Protocol:
    """The default pilot: a permuted ±``h_max`` grid, one call of ``reads_per_call`` reads per h value."""
    return Protocol.grid(h_max, h_step, reads_per_h=reads_per_call, reads_per_call=reads_per_call,
                         design="permuted", **kwargs)


def pilot_from(protocol: Protocol, sampler: dimod.Sampler | Backend) -> Protocol:
    """The default pilot with ``protocol``'s qubits, seed, run order, anneal, gauge and sampler settings (the
    CLI's options); a protocol that already is a permuted pilot is returned unchanged (resume)."""
    if protocol.design == "permuted":
        return protocol
    props = as_backend(sampler).properties
    R = min(10_000, int((props.get("num_reads_range") or [1, 10_000])[1]))
    return pilot_protocol(R).replace(
        qubits=protocol.qubits, seed=protocol.seed, order=protocol.order, spin_reversal=protocol.spin_reversal,
        annealing_time=protocol.annealing_time, anneal_schedule=protocol.anneal_schedule,
        h_gain_schedule=protocol.h_gain_schedule, flux_drift_compensation=protocol.flux_drift_compensation,
        sampler_params=protocol.sampler_params)


# -- precision status --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionStatus:
    """Interval half-widths against the targets, per qubit.

    Attributes:
        qubits: qubit labels ``(n,)``.
        half_width: 95 % half-widths ``(n, p)`` (NaN: no finite interval; untargeted columns too).
        target: half-width targets ``(n, p)`` (``inf`` = untargeted).
        met: all targeted parameters within target, ``(n,)``.
    """

    qubits: np.ndarray
    half_width: np.ndarray
    target: np.ndarray
    met: np.ndarray

    @property
    def fraction(self) -> float:
        """Fraction of qubits within every target."""
        return float(self.met.mean()) if len(self.met) else 0.0


def _qpu_seconds(ds: Dataset, store: DatasetStore) -> float | None:
    """QPU access time spent (s), or None when no call recorded one (a sampler without timing: not 0.0)."""
    t = pd.to_numeric(ds.calls["qpu_access_time"], errors="coerce") if "qpu_access_time" in ds.calls else None
    if t is None or not np.isfinite(t.to_numpy(float)).any():
        return None
    return store.spent_qpu_us() / 1e6


def precision_status(fits, target: Mapping[str, float | str], level: float = 0.95) -> PrecisionStatus:
    """Which qubits of a :class:`~qasa.fitting.FitTable` meet the precision ``target`` (module docstring)."""
    model = fits.model
    target = D.parse_target(target, model)
    table = fits.table
    z = D.z_value(level)
    theta = table[list(model.params)].to_numpy(float)
    hw = np.full(theta.shape, np.nan)
    goal = np.full(theta.shape, np.inf)
    for j, p in enumerate(model.params):
        if p not in target:
            continue
        if f"{p}_lo" in table and f"{p}_hi" in table:
            # the interval's reach from the estimate on its wider side: a one-sided interval [0, hi] of an
            # estimate on its bound (η̂ = 0) reaches hi, not (hi − lo)/2, so η ∈ [0, 0.02] does not meet ±0.01
            est, lo, hi = theta[:, j], table[f"{p}_lo"].to_numpy(float), table[f"{p}_hi"].to_numpy(float)
            hw[:, j] = np.maximum(hi - est, est - lo)
        else:
            hw[:, j] = z * table[f"{p}_stderr"].to_numpy(float)
        value = target[p]
        goal[:, j] = (float(value[:-1]) / 100.0 * np.abs(theta[:, j])) if isinstance(value, str) else float(value)
    targeted = np.isfinite(goal).any(0) | np.isnan(goal).any(0)
    with np.errstate(invalid="ignore"):
        ok = (hw <= goal) & np.isfinite(hw)
    met = ok[:, targeted].all(1) & (table["quality"].to_numpy() != "failed")
    # an interval that assumes no between-call noise (σ_call not identified: one call per field, as in the
    # pilot) is too short on a real QPU, so it meets no target
    met &= ~_sigma_call_unknown(fits, table)
    return PrecisionStatus(table["qubit"].to_numpy(np.int64), hw, goal, met)


# -- planning ----------------------------------------------------------------------------------------
def _design_theta(model: Model, theta: np.ndarray) -> np.ndarray:
    """Parameters to design at: NaN rows → medians; parameters bounded below by 0 floored at half their median."""
    theta = np.array(theta, float)
    finite = np.isfinite(theta).all(1)
    med = np.nanmedian(theta[finite], axis=0) if finite.any() else np.array(
        [TYPICAL.get(p, s) for p, s in zip(model.params, model.scale)])
    theta[~finite] = med
    for j, lo in enumerate(model.lower):
        if lo == 0.0:
            theta[:, j] = np.maximum(theta[:, j], 0.5 * abs(med[j]) if med[j] != 0 else model.scale[j])
    return theta


def _design_sigma(table: pd.DataFrame) -> np.ndarray:
    """σ_call to design at, per row of a fit table: the fit's where identified, elsewhere the median of the
    identified ones, 0 when none is (or the table has no between-call component)."""
    if "sigma_call" not in table:
        return np.zeros(len(table))
    sig = table["sigma_call"].to_numpy(float)
    ok = np.isfinite(sig)
    return np.where(ok, sig, float(np.median(sig[ok])) if ok.any() else 0.0)


def _sigma_call_unknown(fits, table: pd.DataFrame) -> np.ndarray:
    """Per row of ``table``: the fit had per-call counts (``meta["likelihood"]``) and still did not identify
    σ_call, so the row's intervals assume no between-call noise (a hand-made table says nothing)."""
    if "likelihood" in (getattr(fits, "meta", None) or {}) and "sigma_call_identified" in table:
        return ~table["sigma_call_identified"].to_numpy(bool)
    return np.zeros(len(table), bool)


#: Most a target is tightened by :func:`_calibrated_targets`.
CALIBRATION_MAX = 2.0


def _calibrated_targets(t: np.ndarray, prior: np.ndarray, status: PrecisionStatus, met: np.ndarray,
                        qubits: np.ndarray, level: float) -> np.ndarray:
    """The sd targets to design for: for a qubit that misses its target, each targeted parameter's target
    divided by how much its fit's interval is wider than the information so far predicts (the
    Cramér–Rao half-width ``z √(M₀⁻¹)_jj``), between 1 and :data:`CALIBRATION_MAX`. Profile intervals near
    a bound or with few calls are wider than the bound; without this the plan says "met" (0 more reads)
    for a qubit whose interval is a few per cent too wide, and the run crawls by ``min_step`` rounds
    (measured: the ideal virtual device at 0.94 of qubits within target for two rounds, then "stalled")."""
    rows = pd.Series(np.arange(len(status.qubits)), index=status.qubits).loc[qubits].to_numpy()
    hw, goal = status.half_width[rows], status.target[rows]
    p = t.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        cr = D.z_value(level) * D.information_sd(prior)[:, :p]
        ratio = np.where(np.isfinite(goal) & np.isfinite(hw) & (cr > 0) & np.isfinite(cr), hw / cr, 1.0)
    scale = np.where(met[:, None], 1.0, np.clip(ratio, 1.0, CALIBRATION_MAX))
    return t / scale


def _design_field(fits) -> float:
    """The per-field error τ to design at: the fit's device estimate (``meta["sigma_field"]``), 0 where it
    has none (fewer than 10 qubits with σ_call identified — after the pilot — or a fit without it)."""
    sf = (getattr(fits, "meta", None) or {}).get("sigma_field") or {}
    tau = float(sf.get("sigma_field", math.nan))
    return tau if math.isfinite(tau) and tau > 0 else 0.0


def _reads_at(response: Response, candidates: np.ndarray) -> np.ndarray:
    """Reads each row already has at each candidate field (programmed frame; 0 where it has none)."""
    out = np.zeros((len(response.qubits), len(candidates)))
    h = np.round(np.asarray(response.h, float), 9)
    c = np.round(np.asarray(candidates, float), 9)
    pos = np.searchsorted(c, h)
    hit = (pos < len(c)) & (c[np.minimum(pos, len(c) - 1)] == h)
    np.add.at(out.T, pos[hit], response.n_total[:, hit].T.astype(float))
    return out


def plan_round(model: Model | str, response: Response, fits, target: Mapping[str, float | str],
               candidates: np.ndarray, *, reads_per_call: int, fraction: float = 0.95, level: float = 0.95,
               criterion: str = "minimax", growth: float = 3.0, min_step: float = 0.05,
               max_calls: int | None = None, step: float = 0.005) -> dict[str, Any] | None:
    """The next round's design (module docstring), or ``None`` when no call fits ``max_calls``.

    Args:
        model: the model fitted.
        response: the data so far (programmed frame), rows in the order of the round's qubits.
        fits: the fit of ``response`` (same rows).
        target: precision target (:func:`qasa.design.parse_target`).
        candidates: candidate fields (:func:`qasa.design.candidate_fields` of the sampler's h_range).
        reads_per_call: reads of each call.
        fraction, level: stopping rule (module docstring).
        criterion: design criterion (:data:`qasa.design.CRITERIA`).
        growth, min_step: a round's reads are kept within ``[min_step, growth]`` times the reads so far.
        max_calls: the most calls the budget allows (``None``: no limit).
        step: quantization of the fields.

    Returns:
        A JSON-compatible dict: ``calls``, ``reads_per_call``, ``fields`` and ``counts`` (per qubit,
        lists), ``predicted_reads`` (the quantile of ``N_q``), ``reads_so_far``, ``fraction_met``.
    """
    model = get_model(model)
    table = fits.table.set_index("qubit").loc[response.qubits]
    status_met = precision_status(fits, target, level)
    met = pd.Series(status_met.met, index=status_met.qubits).loc[response.qubits].to_numpy()
    theta = _design_theta(model, table[list(model.params)].to_numpy(float))
    t = D.sd_targets(model, target, theta, level)
    sig = _design_sigma(table)
    tau = _design_field(fits)
    noise = dict(sigma_call=sig, reads_per_call=reads_per_call)
    with np.errstate(invalid="ignore", divide="ignore"):      # each cell's reads per call so far
        per_call = (response.n_total / np.maximum(response.calls.n_calls, 1) if response.calls is not None
                    else float(reads_per_call))
    prior = D.information(model, response.h, response.n_total.astype(float), theta, sigma_call=sig,
                          reads_per_call=per_call, sigma_field=tau)
    if tau > 0:                  # fields one DAC step apart, each its own (module docstring)
        candidates = D.field_candidates(candidates)
    t = _calibrated_targets(t, prior, status_met, met, response.qubits, level)
    field = dict(sigma_field=tau, prior_reads=_reads_at(response, candidates))
    w_alone = D.optimal_design(model, theta, candidates, t, criterion=criterion, **noise)
    need = D.required_reads(model, theta, candidates, w_alone, t, prior=prior, **field, **noise)
    for _ in range(2 if tau > 0 else 0):
        # with a per-field error the best spread depends on how many reads there are: design for the
        # reads just predicted (a finite number near the feasibility bound where none suffices), again
        at = np.where(np.isfinite(need) & (need > 0), need, MAX_READS_PER_QUBIT)
        w_alone = D.optimal_design(model, theta, candidates, t, criterion=criterion, prior=prior, reads=at,
                                   **field, **noise)
        need = D.required_reads(model, theta, candidates, w_alone, t, prior=prior, **field, **noise)
    need = np.where(met, 0.0, np.where(np.isnan(need), np.inf, need))
    # a qubit whose σ_call is not identified meets no target (precision_status) whatever its information:
    # it needs repeated calls first — MIN_CALL_DF between-call degrees of freedom, on a few fields
    from qasa.fitting import MIN_CALL_DF

    unknown = ~met & _sigma_call_unknown(fits, table)
    need = np.where(unknown, np.maximum(need, (MIN_CALL_DF + 8) * float(reads_per_call)), need)
    predicted = float(np.quantile(need, fraction, method="higher")) if len(need) else 0.0
    so_far = float(response.n_total.sum(1).max()) if response.n_total.size else 0.0
    reads = min(max(predicted, min_step * so_far, reads_per_call), max(growth * so_far, reads_per_call))
    calls = int(math.ceil(reads / reads_per_call - 1e-9))
    if max_calls is not None:
        calls = min(calls, int(max_calls))
    if calls < 1:
        return None
    w = D.optimal_design(model, theta, candidates, t, criterion=criterion, prior=prior,
                         reads=float(calls * reads_per_call), **field, **noise)
    fields, counts = D.allocate(candidates, w, calls, step=step, merge=tau == 0)
    keep = counts > 0
    return {"calls": calls, "reads_per_call": int(reads_per_call),
            "qubits": [int(q) for q in response.qubits],
            "fields": [[float(v) for v in f[k]] for f, k in zip(fields, keep)],
            "counts": [[int(v) for v in c[k]] for c, k in zip(counts, keep)],
            "predicted_reads": predicted if math.isfinite(predicted) else None,
            "reads_so_far": so_far, "fraction_met": float(met.mean()) if len(met) else 0.0,
            "sigma_call_median": float(np.median(sig)) if len(sig) else 0.0, "sigma_field": tau,
            "criterion": criterion, "created": utcnow()}


def round_calls(plan: Mapping[str, Any], protocol: Protocol, round_index: int, start: int | None = None) -> list[Call]:
    """The calls of a planned round, in a seeded order (a function of the plan, seed and round only).

    Each qubit's fields (``counts`` calls at each) are shuffled over the round's calls with a
    generator seeded by ``(seed, 3, round, qubit position)``; gauges are the identity (the design is
    in the programmed frame). ``start``: the calls' first position in the run (the calls before them),
    so that they follow the earlier calls on a device's clock; ``None``: their index (10⁶ per round).
    """
    if protocol.qubits is None or protocol.seed is None:
        raise ProtocolError("protocol must be resolved (qubits and seed set) before a round is expanded")
    qubits = [int(q) for q in protocol.qubits]
    row = {int(q): j for j, q in enumerate(plan["qubits"])}
    if sorted(row) != sorted(qubits):
        raise DatasetError("the stored round plan is for other qubits than the dataset's protocol")
    C = int(plan["calls"])
    H = np.empty((C, len(qubits)))
    for i, q in enumerate(qubits):
        f, c = plan["fields"][row[q]], plan["counts"][row[q]]
        seq = np.repeat(np.asarray(f, float), np.asarray(c, int))
        if len(seq) != C:
            raise DatasetError(f"round {round_index} plan gives qubit {qubits[i]} {len(seq)} calls, not {C}")
        H[:, i] = seq[np.random.default_rng([protocol.seed, 3, round_index, i]).permutation(C)]
    ones = np.ones(len(qubits), dtype=np.int8)
    R = int(plan["reads_per_call"])
    name = round_name("a", round_index)
    return [Call(round_call_id(name, c), round_index * 1_000_000 + c, -1, H[c], 0, R, ones,
                 position=None if start is None else int(start) + c)
            for c in range(C)]



def read_round_plan(path: str | Path, protocol: Protocol) -> dict[str, Any]:
    """Read a stored round plan (``OUT/design/round-NNN.json``) and check what :func:`round_calls` uses.

    A plan holds ``calls`` (an integer >= 1), ``reads_per_call`` (the protocol's), ``qubits`` (the
    protocol's qubits) and per qubit ``fields`` (finite numbers) and ``counts`` (non-negative
    integers, as many as its fields, summing to ``calls``).

    Raises:
        DatasetError: naming the file, what is wrong and what is allowed (bad JSON, a missing key, a
            value of the wrong type or range).
    """
    path = Path(path)
    hint = ("a round plan is written by qasa before its calls run; restore it, or delete it if no call "
            f"{path.stem.replace('round-', 'a')}-c... is stored yet (the round is then planned again)")

    def bad(what: str) -> DatasetError:
        return DatasetError(f"damaged round plan {path}: {what}; {hint}")

    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(plan, dict):
        raise bad(f"a JSON {type(plan).__name__}, not an object")
    missing = [k for k in ("calls", "reads_per_call", "qubits", "fields", "counts") if k not in plan]
    if missing:
        raise bad(f"missing key(s) {missing}")

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    calls, R, qubits = plan["calls"], plan["reads_per_call"], plan["qubits"]
    if not integer(calls) or not 1 <= calls <= MAX_CALLS:
        raise bad(f"calls={calls!r}; allowed: an integer in [1, {MAX_CALLS}]")
    if not integer(R) or R != protocol.reads_per_call:
        raise bad(f"reads_per_call={R!r}; allowed: the protocol's {protocol.reads_per_call}")
    if not isinstance(qubits, list) or not all(integer(q) for q in qubits) \
            or sorted(qubits) != sorted(int(q) for q in protocol.qubits or ()):
        raise bad("qubits are not the protocol's qubits")
    for key in ("fields", "counts"):
        if not isinstance(plan[key], list) or len(plan[key]) != len(qubits) \
                or not all(isinstance(row, list) for row in plan[key]):
            raise bad(f"{key!r} must hold one list per qubit ({len(qubits)})")
    for q, f, c in zip(qubits, plan["fields"], plan["counts"]):
        if len(f) != len(c) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in f):
            raise bad(f"qubit {q}: fields must be finite numbers, one per count")
        if not all(integer(v) and v >= 0 for v in c) or sum(c) != calls:
            raise bad(f"qubit {q}: counts must be non-negative integers summing to calls={calls}")
    return plan


# -- the loop ----------------------------------------------------------------------------------------
def _settings(model: Model, target, fraction, level, criterion, h_range, step, max_rounds, growth, min_step):
    return {"model": model.name, "target": D.parse_target(target, model), "fraction": fraction, "level": level,
            "criterion": criterion, "h_range": [float(h_range[0]), float(h_range[1])], "step": step,
            "max_rounds": max_rounds, "growth": growth, "min_step": min_step}


#: Default feasibility bound of an adaptive assessment (reads per qubit): 10⁸, above the 8.1·10⁷ of the
#: QASA paper's example design (81 fields × 10⁶ reads).
MAX_READS_PER_QUBIT = 1e8
#: Most candidate fields a design may weigh (a finer ``step`` would exhaust memory, not improve the design).
MAX_CANDIDATES = 20_000


def _check_max_reads(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_reads_per_qubit={value!r} must be a finite number > 0")


def _checked_candidates(h_range: Any, step: Any) -> np.ndarray:
    """The design's candidate fields, or a one-line ValueError naming ``h_range``/``step`` (before the pilot)."""
    try:
        lo, hi = (float(v) for v in h_range)
    except (TypeError, ValueError):
        raise ValueError(f"h_range={h_range!r} must be a pair of numbers (lo, hi)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"h_range={h_range!r} must be an increasing pair of finite numbers")
    if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(step) and step > 0):
        raise ValueError(f"step={step!r} must be a finite number > 0")
    n = (min(hi, 1.0) - max(lo, -1.0)) / step
    if n > MAX_CANDIDATES:
        raise ValueError(f"step={step!r} gives {n:.3g} candidate fields in h_range {[lo, hi]}; at most "
                         f"{MAX_CANDIDATES} (step ≥ {(min(hi, 1.0) - max(lo, -1.0)) / MAX_CANDIDATES:.2g})")
    return D.candidate_fields((lo, hi), step=step)


def _check_options(fraction, level, criterion, growth, min_step, max_rounds, step):
    for name, value in (("fraction", fraction), ("level", level), ("growth", growth), ("min_step", min_step),
                        ("step", step), ("max_rounds", max_rounds)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}={value!r} is not a number (an int or a float; not a bool or a string)")
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must lie in (0, 1]")
    D.z_value(level)
    if criterion not in D.CRITERIA:
        raise ValueError(f"criterion={criterion!r}; choose one of {list(D.CRITERIA)}")
    if not (growth >= 1.0 and math.isfinite(growth)):
        raise ValueError(f"growth={growth!r} must be a finite number ≥ 1")
    if not (0.0 < min_step <= growth):
        raise ValueError(f"min_step={min_step!r} must lie in (0, growth]")
    if not (isinstance(max_rounds, numbers.Integral) and max_rounds >= 1):
        raise ValueError(f"max_rounds={max_rounds!r} must be a positive integer")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step={step!r} must be a positive number")


def fit_with_restarts(response: Response, model: Model | str = "qasa"):
    """Fit every qubit, then refit with one more start per qubit (:func:`_restart`: its first estimate
    with the parameters bounded below by 0 raised to the median of their positive estimates over
    qubits); the better log-likelihood per qubit is kept.

    The fit already optimizes the even parameters on φ = θ², where the bound at 0 no longer traps the optimizer
    (qasa.models), and from several starts; this one more start, placed from the whole device, is
    for the qubits whose own starts still ended in the likelihood's spurious optimum near η = 0
    (DESIGN.md §3), where the next round's design would ask for no information about η. Both
    passes depend on the data only, so a resumed assessment plans from the same fits.
    """
    from qasa.fitting import fit

    model = get_model(model)
    first = fit(response, model)
    theta = first.table.set_index("qubit").loc[response.qubits, list(model.params)].to_numpy(float)
    extra = _restart(model, theta)
    if np.array_equal(extra, theta):
        return first
    nd, nt = response.n_down.astype(float), response.n_total.astype(float)
    return fit(response, model, starts=list(model.starts(response.h, nd, nt)) + [extra])


def _restart(model: Model, theta: np.ndarray) -> np.ndarray:
    """A start per qubit away from the bounds at 0: each such parameter at least the median of its
    positive estimates over qubits (or :data:`TYPICAL`); for the QASA model β is raised to keep the
    slope at the centre, β sech²(βη) (DESIGN.md §3), as the model's own starts do."""
    theta = np.array(theta, float)
    finite = np.isfinite(theta).all(1)
    out = _design_theta(model, theta)
    for j, (name, lo) in enumerate(zip(model.params, model.lower)):
        if lo != 0.0 or j == 0:
            continue
        col = theta[finite, j]
        pos = col[col > 0]
        level = float(np.median(pos)) if pos.size else TYPICAL.get(name, model.scale[j])
        out[:, j] = np.maximum(out[:, j], level)
    if model.name.startswith("qasa"):
        c_old = theta[:, 0] * np.where(np.isfinite(theta[:, 3]), theta[:, 3], 0.0)
        c_new = out[:, 0] * out[:, 3]
        out[:, 0] = np.where(finite, out[:, 0] * np.cosh(c_new) ** 2 / np.cosh(c_old) ** 2, out[:, 0])
    return out


def assess_adaptive(sampler: dimod.Sampler, out: str | Path, target: Mapping[str, float | str] | str, *,
                    protocol: Protocol | None = None, model: Model | str = "qasa", fraction: float = 0.95,
                    level: float = 0.95, max_qpu_seconds: float | None = None,
                    progress: Callable[[int, int], None] | None = None, criterion: str = "minimax",
                    h_range: tuple[float, float] | None = None, step: float = 0.005, max_rounds: int = 30,
                    growth: float = 3.0, min_step: float = 0.05,
                    on_round: Callable[[int, dict[str, Any]], None] | None = None,
                    max_reads_per_qubit: float = MAX_READS_PER_QUBIT) -> Dataset:
    """Adaptive assessment of every qubit to a precision target (module docstring) — what
    ``qasa assess OUT --design adaptive --target ...`` runs.

    Args:
        sampler: any :class:`dimod.Sampler` (the virtual QPU, a QPU, a test sampler).
        out: dataset directory (required: every round is checkpointed there; re-running resumes).
        target: 95 % half-width per parameter, e.g. ``{"beta": "1%", "b": 0.003, "eta": 0.01}`` or
            ``"beta=1%,b=0.003,eta=0.01"``.
        protocol: the pilot (default :func:`pilot_protocol`); its qubits, seed, anneal settings and
            ``reads_per_call`` apply to every round.
        model: the model whose parameters are targeted.
        fraction: fraction of qubits that must meet every target.
        level: interval level of the targets.
        max_qpu_seconds: QPU-time budget of the whole dataset; the assessment stops before exceeding it.
        progress: ``progress(done, total)`` within each run of calls.
        criterion: design criterion (``"minimax"``; ``"D"`` ignores the targets' balance).
        h_range: fields the design may use (default: the sampler's ``h_range``, divided by the
            largest |h gain| of the protocol's h-gain schedule).
        step: quantization of designed fields.
        max_rounds: the most adaptive rounds.
        growth, min_step: bounds on a round's reads relative to the reads so far.
        max_reads_per_qubit: feasibility bound: when the reads the design predicts for the target
            (its ``fraction`` quantile over qubits) exceed it, the assessment stops with reason
            ``"infeasible"`` before the next round (default :data:`MAX_READS_PER_QUBIT`).
        on_round: called as ``on_round(round, info)`` after each fit (info: fraction within target,
            reads per qubit, QPU seconds so far) — for progress displays and benchmarks.

    Returns:
        The :class:`~qasa.dataset.Dataset`; ``metadata["adaptive"]["result"]`` reports the rounds,
        the stop reason (``"target"``, ``"budget"``, ``"max_rounds"``, ``"infeasible"`` with the
        predicted reads per qubit), the fraction of qubits within
        target, reads per qubit and QPU access time spent.

    Raises:
        ValueError: bad options or target (before any call).
        DatasetError: ``out`` holds a dataset of other adaptive settings.
    """
    model = get_model(model)
    if out is None:
        raise ValueError("an adaptive assessment needs an output directory: its rounds are checkpointed there")
    target = D.parse_target(target, model)
    _check_options(fraction, level, criterion, growth, min_step, max_rounds, step)
    job = _AdaptiveRun(as_backend(sampler), DatasetStore(out), model, target, fraction=fraction, level=level,
                       criterion=criterion, step=step, max_rounds=max_rounds, growth=growth, min_step=min_step,
                       max_reads_per_qubit=max_reads_per_qubit, max_qpu_seconds=max_qpu_seconds,
                       progress=progress, on_round=on_round)
    pilot = job.start(protocol, h_range)
    reason = job.pilot(pilot)
    protocol = Protocol.from_dict(job.store.metadata()["protocol"])
    with job.store.writing():
        meta = job.store.metadata()
        job.store.update_metadata(adaptive={**(meta.get("adaptive") or {}), "settings": job.settings})
    reason, rounds, status = job.rounds(protocol, reason)
    return job.finish(protocol, reason, rounds, status)


@dataclass
class _AdaptiveRun:
    """One adaptive assessment: the backend and store it runs on, what it targets, and its options."""

    backend: Backend
    store: DatasetStore
    model: Model
    target: dict[str, Any]
    fraction: float
    level: float
    criterion: str
    step: float
    max_rounds: int
    growth: float
    min_step: float
    max_reads_per_qubit: float
    max_qpu_seconds: float | None
    progress: Callable[[int, int], None] | None
    on_round: Callable[[int, dict[str, Any]], None] | None
    settings: dict[str, Any] = field(default_factory=dict)
    candidates: np.ndarray | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    infeasible: float | None = None
    infeasible_field: float = 0.0

    def start(self, protocol: Protocol | None, h_range: tuple[float, float] | None) -> Protocol:
        """Every check before any call: the pilot, the design's fields, stored settings of a resumed run."""
        from qasa.runner import prepare

        props = self.backend.properties
        pilot = protocol if protocol is not None else pilot_protocol(
            min(10_000, int((props.get("num_reads_range") or [1, 10_000])[1])))
        pilot = prepare(pilot, self.backend, self.store.path)
        if h_range is None:
            largest = max(abs(h) for h in pilot.h_values)
            h_range = tuple(props.get("h_range") or (-largest, largest))
            if pilot.h_gain_schedule is not None:
                gain = max(abs(g) for _, g in pilot.h_gain_schedule) or 1.0
                h_range = (h_range[0] / gain, h_range[1] / gain)
        self.candidates = _checked_candidates(h_range, self.step)            # before the pilot spends anything
        _check_max_reads(self.max_reads_per_qubit)
        self.settings = _settings(self.model, self.target, self.fraction, self.level, self.criterion, h_range,
                                  self.step, self.max_rounds, self.growth, self.min_step)
        if self.store.exists:
            stored = (self.store.metadata().get("adaptive") or {}).get("settings")
            settings = json.loads(json.dumps(self.settings))
            if stored is not None and json.loads(json.dumps(stored)) != settings:
                diff = [k for k in settings if stored.get(k) != settings[k]]
                raise DatasetError(f"{self.store.path} holds an adaptive assessment with other settings "
                                   f"({', '.join(diff)}); use another directory or the same options")
            for path in sorted((self.store.path / DESIGN_DIR).glob("round-*.json")):   # stored plans: checked
                read_round_plan(path, pilot)                                  # before anything is written or run
        return pilot

    def _stored_plan(self, rnd: int, protocol: Protocol) -> dict[str, Any] | None:
        """The stored plan of round ``rnd``, checked (:func:`read_round_plan`), or None."""
        path = self.store.path / DESIGN_DIR / f"round-{rnd:03d}.json"
        return read_round_plan(path, protocol) if path.is_file() else None

    def _run(self, protocol: Protocol, calls: list[Call] | None = None) -> None:
        from qasa.runner import run

        run(protocol, self.backend, self.store.path, progress=self.progress, max_qpu_seconds=self.max_qpu_seconds,
            calls=calls)

    def pilot(self, pilot: Protocol) -> str | None:
        """Run (or finish) the pilot; ``"budget"`` if the budget stopped it after something was collected."""
        try:
            self._run(pilot)
        except BudgetError:
            if not self.store.exists:        # the pilot alone is over budget: nothing was submitted
                raise
            return "budget"
        return None

    def rounds(self, protocol: Protocol, reason: str | None) -> tuple[str, int, PrecisionStatus | None]:
        """Plan (or reload) and run rounds until the target, the budget, the round limit or infeasibility."""
        store = self.store
        R = int(protocol.reads_per_call)
        per_call = self.backend.estimate_call(protocol, len(protocol.qubits), R)
        rnd, status = 1, None
        start = protocol.num_calls              # the rounds' calls follow the pilot's on the device's clock
        while reason is None:
            plan = self._stored_plan(rnd, protocol)
            if plan is None:
                reason, status, plan = self._plan(protocol, rnd, per_call)
                if reason is not None:
                    break
                with store.writing():
                    store.save_design_round(rnd, plan)
            try:
                self._run(protocol, round_calls(plan, protocol, rnd, start))
            except BudgetError:
                reason = "budget"
            start += int(plan["calls"])
            rnd += 1
        return reason, rnd - 1, status

    def _plan(self, protocol: Protocol, rnd: int, per_call: float | None):
        """Fit what is stored and plan round ``rnd``: ``(stop reason or None, status, plan)``."""
        store = self.store
        response = store.load().response(qubits=protocol.qubits)
        fits = fit_with_restarts(response, self.model)
        status = precision_status(fits, self.target, self.level)
        info = {"round": rnd, "fraction_met": status.fraction,
                "reads_per_qubit": float(response.n_total.sum(1).max()),
                "qpu_access_time_s": store.spent_qpu_us() / 1e6}
        self.history.append(info)
        if self.on_round is not None:
            self.on_round(rnd, info)
        if status.fraction >= self.fraction:
            return "target", status, None
        if rnd > self.max_rounds:
            return "max_rounds", status, None
        max_calls = None
        if self.max_qpu_seconds is not None and per_call:
            max_calls = int((self.max_qpu_seconds * 1e6 - store.spent_qpu_us()) // per_call)
        plan = plan_round(self.model, response, fits, self.target, self.candidates,
                          reads_per_call=int(protocol.reads_per_call), fraction=self.fraction, level=self.level,
                          criterion=self.criterion, growth=self.growth, min_step=self.min_step,
                          max_calls=max_calls, step=self.step)
        if plan is None:
            return "budget", status, None
        if plan.get("predicted_reads") is None or plan["predicted_reads"] > self.max_reads_per_qubit:
            # the target is out of reach: stop before paying for rounds that cannot meet it
            self.infeasible = plan.get("predicted_reads")
            self.infeasible_field = float(plan.get("sigma_field") or 0.0)
            return "infeasible", status, None
        earlier = [self._stored_plan(rnd - k, protocol) if rnd > k else None for k in (1, 2)]
        if (plan["predicted_reads"] == 0 and all(e is not None and e.get("predicted_reads") == 0 for e in earlier)
                and status.fraction <= float(earlier[1].get("fraction_met", 0.0))):
            # three times the design's information says the data meet the target while the fits'
            # intervals do not, and the two rounds in between did not raise the fraction within target:
            # the data hold noise the design does not model (per-field errors, module docstring); rounds
            # of min_step would run to max_rounds without meeting it
            return "stalled", status, None
        return None, status, plan

    def finish(self, protocol: Protocol, reason: str, rounds: int, status: PrecisionStatus | None) -> Dataset:
        """Record the result (stop reason, rounds, precision reached, reads, QPU time) and return the dataset."""
        store = self.store
        ds = store.load()
        if status is None or reason != "target":
            response = ds.response(qubits=protocol.qubits)
            status = precision_status(fit_with_restarts(response, self.model), self.target, self.level)
        reads = ds.response(qubits=protocol.qubits).n_total.sum(1)
        result = {"stopped": reason, "rounds": rounds, "fraction_met": status.fraction,
                  "reads_per_qubit": int(reads.max()) if reads.size else 0,
                  "calls": int(len(ds.calls)), "qpu_access_time_s": _qpu_seconds(ds, store),
                  "finished": utcnow()}
        if reason == "infeasible":
            result["predicted_reads_per_qubit"] = self.infeasible
            result["max_reads_per_qubit"] = self.max_reads_per_qubit
            result["sigma_field"] = self.infeasible_field
        with store.writing():
            meta = store.metadata()
            store.update_metadata(adaptive={**(meta.get("adaptive") or {}), "settings": self.settings,
                                            "result": result})
        ds.metadata["adaptive"] = {"settings": self.settings, "result": result}
        return ds


# -- expected cost (qasa plan) -----------------------------------------------------------------------
def expected_cost(sampler: dimod.Sampler, target: Mapping[str, float | str] | str, *, model: Model | str = "qasa",
                  theta: Mapping[str, float] | None = None, protocol: Protocol | None = None,
                  reference: Protocol | None = None, level: float = 0.95,
                  h_range: tuple[float, float] | None = None,
                  max_reads_per_qubit: float = MAX_READS_PER_QUBIT) -> dict[str, Any]:
    """Expected reads and QPU time of the adaptive plan and of the reference grid for ``target``.

    Both come from the Cramér–Rao bound at one set of *typical* parameters ``theta`` (default
    :data:`TYPICAL`, Advantage-like, with the per-programming error ``sigma_call`` =
    :data:`TYPICAL_SIGMA_CALL` unless ``theta`` gives one; its between-call information,
    :mod:`qasa.design`), not from the device: the reference grid (the same h on every
    qubit, ``reference`` default the ±1 step-0.025 grid) needs ``max_j V_j/t_j²`` reads spread
    uniformly; the adaptive plan spends the pilot, then the optimal design's remaining reads given
    the pilot's information. Qubits worse than typical need more under either design.

    Returns:
        ``{"theta": ..., "reference": {...}, "adaptive": {...}, "ratio": reference/adaptive QPU time}``
        where each part gives ``reads_per_qubit``, ``calls`` and ``qpu_access_time_s`` (None without a
        timing model; the reference grid's figures and the ratio are None when it can never meet the
        target).

    Raises:
        ValueError: a target the adaptive design cannot meet within ``max_reads_per_qubit`` reads per
            qubit (the feasibility bound of :func:`assess_adaptive`), naming it.
    """
    from qasa.runner import prepare

    model = get_model(model)
    target = D.parse_target(target, model)
    _check_max_reads(max_reads_per_qubit)
    values = dict(TYPICAL, **(theta or {}))
    missing = [p for p in model.params if p not in values]
    if missing:
        raise ValueError(f"give typical values for {missing}")
    th = np.array([[values[p] for p in model.params]], float)
    t = D.sd_targets(model, target, th, level)
    sampler = as_backend(sampler)
    props = sampler.properties
    pilot = prepare(protocol if protocol is not None else pilot_protocol(
        min(10_000, int((props.get("num_reads_range") or [1, 10_000])[1]))), sampler)
    R = pilot.reads_per_call
    ref = reference if reference is not None else Protocol.grid(1.0, 0.025, reads_per_call=R)
    ref_x = np.array(ref.h_values)
    n_ref = float(D.required_reads(model, th, ref_x, np.ones(len(ref_x)), t, sigma_call=float(
        values.get("sigma_call", TYPICAL_SIGMA_CALL)), reads_per_call=ref.reads_per_call)[0])
    h_range = h_range or tuple(props.get("h_range") or (-1.0, 1.0))
    cand = D.candidate_fields(h_range)
    noise = dict(sigma_call=float(values.get("sigma_call", TYPICAL_SIGMA_CALL)), reads_per_call=R)
    prior = D.information(model, np.array(pilot.h_values), np.full(len(pilot.h_values), float(pilot.reads_per_h)), th,
                          **noise)
    w = D.optimal_design(model, th, cand, t, **noise)
    rest = float(D.required_reads(model, th, cand, w, t, prior=prior, **noise)[0])
    if not (math.isfinite(rest) and pilot.reads_per_h * len(pilot.h_values) + rest <= max_reads_per_qubit):
        shown = ",".join(f"{k}={v}" for k, v in target.items())
        need = "unboundedly many" if not math.isfinite(rest) else f"{pilot.reads_per_h * len(pilot.h_values) + rest:.3g}"
        raise ValueError(f"--target {shown} is out of reach: the adaptive design needs {need} reads per qubit at "
                         f"typical parameters; allowed: targets needing at most {max_reads_per_qubit:.3g} reads per "
                         "qubit (the feasibility bound max_reads_per_qubit); relax the target")
    # the reference grid may need more than the bound (it is the comparison, never run), but a finite number
    ref_reads_per_h = int(math.ceil(n_ref / len(ref_x))) if math.isfinite(n_ref) else None
    ref_calls = None if ref_reads_per_h is None else len(ref_x) * int(math.ceil(ref_reads_per_h / R))
    ada_calls = pilot.num_calls + int(math.ceil(rest / R))
    n = len(pilot.qubits or ())
    per_call = sampler.estimate_call(pilot, n, R)
    ref_per_call = sampler.estimate_call(ref.replace(qubits=pilot.qubits, seed=0), n, R)

    def seconds(calls, per):
        return None if per is None or calls is None else calls * per / 1e6

    out = {"theta": values, "target": target, "qubits": n, "bound": "Cramér–Rao at typical parameters",
           "reference": {"reads_per_qubit": None if ref_calls is None else ref_calls * R, "calls": ref_calls,
                         "qpu_access_time_s": seconds(ref_calls, ref_per_call)},
           "adaptive": {"reads_per_qubit": ada_calls * R, "calls": ada_calls,
                        "pilot_calls": pilot.num_calls, "qpu_access_time_s": seconds(ada_calls, per_call)}}
    a, r = out["adaptive"]["qpu_access_time_s"], out["reference"]["qpu_access_time_s"]
    out["ratio"] = (r / a) if a and r else (None if ref_calls is None else ref_calls / ada_calls)
    return out

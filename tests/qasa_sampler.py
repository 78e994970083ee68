"""A QASA-model sampler for tests: independent per-qubit truth, exact draws in each qubit's own frame.

Every qubit ``i`` has its own hidden parameters ``(β_i, b_i, γ_i, η_i)`` drawn once from a seeded
generator, Advantage-like (DESIGN.md §2–§3, §6): ``β ~ U(3, 10)``, ``b ~ N(0, 0.02)``,
``γ ~ U(0.05, 0.2)``, ``η ~ U(0, 0.06)`` with a fraction ``eta_zero_fraction`` of qubits at
``η = 0`` exactly (so that a fit's η̂ often lands on its bound). The four are independent.

A read of qubit ``i`` programmed with field ``x`` (the value the sampler receives, i.e. after any
client-side gauge: the sampler knows nothing about gauges) returns ``-1`` with probability
``(1 + m(x))/2``, where ``m`` is the QASA mixture of DESIGN.md §3: with probability ½ each, the
component field is ``x + b ± η`` and the single-qubit quantum-Gibbs magnetization is
``f(β(x + b ± η), βγx)``. Reads are independent, so a read's mixture component need not be drawn
separately: each read is a Bernoulli draw with the mixture's ``P(-1)``. A static bias in the
qubit's own frame therefore keeps its sign under every gauge, as on hardware.

:class:`QASAModelSampler` returns a :class:`dimod.SampleSet` of raw reads (``num_occurrences`` all
1), exactly like a QPU in ``answer_mode='raw'``; :class:`QASAModelCountSampler` adds the runner's
count-level fast path ``sample_counts`` (binomial draws of the same law), for large devices.

Seeding: ``seed`` fixes the truth; each call is seeded by its ``seed`` keyword (qasa's runner
passes one per call), so runs are reproducible.

Noise beyond shots (:class:`CallNoiseSampler`, DESIGN.md §7): every call is a new programming, so
each call draws a fresh field offset ``δ ~ N(0, σ²)`` per qubit, added to the qubit's bias
(``b + δ``; optionally to the programmed field in both QASA terms) and shared by all reads of that
call; optionally a random walk of the offset across calls (``drift_step`` per call, in the
order the calls arrive), the slow part of 1/f flux noise. The offsets of every call are recorded.
Optionally a per-field offset (``sigma_field``): ``ε(q, x) ~ N(0, τ²)`` drawn once per qubit and
programmed value ``x`` and added in every call at that value, as the h DAC's rounding does.
"""

from __future__ import annotations

from typing import Any, Iterable

import dimod
import numpy as np
import pandas as pd

from qasa.models import get_model

__all__ = ["QASAModelSampler", "QASAModelCountSampler", "CallNoiseSampler", "draw_truth"]


def draw_truth(qubits: Iterable[int], seed: int, *, beta=(3.0, 10.0), b_sd: float = 0.02,
               gamma=(0.05, 0.2), eta=(0.0, 0.06), eta_zero_fraction: float = 0.15) -> pd.DataFrame:
    """Independent per-qubit QASA parameters (columns ``qubit, beta, b, gamma, eta``)."""
    qubits = np.asarray(list(qubits), dtype=np.int64)
    n = len(qubits)
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"qubit": qubits, "beta": rng.uniform(*beta, n), "b": rng.normal(0.0, b_sd, n),
                      "gamma": rng.uniform(*gamma, n), "eta": rng.uniform(*eta, n)})
    zero = rng.random(n) < eta_zero_fraction
    t.loc[zero, "eta"] = 0.0
    return t


class QASAModelSampler(dimod.Sampler, dimod.Structured):
    """Uncoupled qubits that follow the QASA model exactly, each with its own truth (module docstring).

    Args:
        qubits: number of qubits (labelled ``0..n-1``) or the qubit labels.
        seed: seed of the truth.
        truth: explicit truth (columns ``qubit, beta, b, gamma, eta``); overrides ``qubits``/``seed``.
        **ranges: passed to :func:`draw_truth` (``beta``, ``b_sd``, ``gamma``, ``eta``,
            ``eta_zero_fraction``).
    """

    def __init__(self, qubits: int | Iterable[int] = 2000, seed: int = 0, *, truth: pd.DataFrame | None = None,
                 **ranges: Any) -> None:
        if truth is None:
            labels = range(qubits) if isinstance(qubits, (int, np.integer)) else qubits
            truth = draw_truth(labels, seed, **ranges)
        self.truth = truth[["qubit", "beta", "b", "gamma", "eta"]].reset_index(drop=True)
        self._nodes = [int(q) for q in self.truth["qubit"]]
        self._row = {q: i for i, q in enumerate(self._nodes)}
        self._theta = self.truth[["beta", "b", "gamma", "eta"]].to_numpy(float)
        self._model = get_model("qasa")

    nodelist = property(lambda self: self._nodes)
    edgelist = property(lambda self: [])
    properties = property(lambda self: {"h_range": [-4.0, 4.0], "j_range": [-1.0, 1.0],
                                        "num_reads_range": [1, 10_000], "chip_id": "QASA-model"})
    parameters = property(lambda self: {"num_reads": [], "seed": []})

    def qasa_truth(self, protocol) -> list[dict[str, Any]]:
        """The truth of the qubits a protocol assesses (recorded in the dataset by :func:`qasa.run`)."""
        t = self.truth.set_index("qubit")
        if protocol.qubits is not None:
            t = t.loc[[q for q in protocol.qubits if q in t.index]]
        return t.reset_index().to_dict("records")

    def p_down(self, variables: list[int], x: np.ndarray) -> np.ndarray:
        """P(-1) of each variable at its programmed field ``x`` (own frame)."""
        rows = np.fromiter((self._row[v] for v in variables), dtype=np.int64, count=len(variables))
        theta = self._theta[rows]
        # one h per row: evaluate the model row by row through a diagonal
        m = _m_diag(self._model, x, theta)
        return 0.5 * (1.0 + m)

    def _check(self, variables, x, num_reads):
        missing = [v for v in variables if v not in self._row]
        if missing:
            raise ValueError(f"variables {missing[:5]} are not qubits of this sampler")
        lo, hi = self.properties["h_range"]
        if np.any((x < lo) | (x > hi)):
            raise ValueError(f"h outside h_range [{lo}, {hi}]")
        if not 1 <= num_reads <= self.properties["num_reads_range"][1]:
            raise ValueError(f"num_reads={num_reads} outside [1, {self.properties['num_reads_range'][1]}]")

    @dimod.bqm_structured
    def sample(self, bqm: dimod.BinaryQuadraticModel, num_reads: int = 1, seed: int | None = None) -> dimod.SampleSet:
        """Raw reads of every variable of ``bqm`` (uncoupled; SPIN answers)."""
        bqm = bqm.change_vartype(dimod.SPIN, inplace=False)
        if bqm.num_interactions:
            raise ValueError("the QASA-model sampler has uncoupled qubits only (J = 0)")
        variables = list(bqm.variables)
        x = np.array([bqm.linear[v] for v in variables], dtype=float)
        self._check(variables, x, int(num_reads))
        p = self.p_down(variables, x)
        rng = np.random.default_rng(seed)
        spins = np.where(rng.random((int(num_reads), len(variables)), dtype=np.float32) < p.astype(np.float32),
                         np.int8(-1), np.int8(1))
        energy = spins @ x + bqm.offset
        return dimod.SampleSet.from_samples((spins, variables), dimod.SPIN, energy=energy)


class QASAModelCountSampler(QASAModelSampler):
    """:class:`QASAModelSampler` plus the runner's count-level path (binomial counts, no SampleSet)."""

    def sample_counts(self, h: dict[int, float], num_reads: int = 1, seed: int | None = None,
                      **_: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Per-qubit numbers of returned -1 reads at programmed fields ``h``."""
        variables = np.fromiter(h.keys(), dtype=np.int64, count=len(h))
        x = np.fromiter(h.values(), dtype=float, count=len(h))
        self._check(list(variables), x, int(num_reads))
        p = self.p_down(list(variables), x)
        return variables, np.random.default_rng(seed).binomial(int(num_reads), p), {}


class CallNoiseSampler(QASAModelCountSampler):
    """:class:`QASAModelCountSampler` with a per-call field offset per qubit (module docstring).

    Args:
        sigma_call: sd of the independent offset drawn per call and qubit (h units), a scalar or one
            value per qubit.
        drift_step: sd of the random walk's step per call (h units; 0: no drift). The walk starts at 0.
        sigma_field: sd τ of the per-field offset (h units; 0: none), fixed per (qubit, programmed
            value) and seeded by ``seed`` and the value.
        broken: ``{truth row: shift}`` — broken qubits, whose b is shifted by ``shift`` at about 30 % of
            their programmed values (those with ``round(1000 |x|) mod 7 < 2``), in every call there.
        on: ``"bias"`` (default): the offset adds to b (a per-call b: the between-call component of
            qasa's fit); ``"field"``: it adds to the programmed field in both the longitudinal and the
            transverse term (``u = βγ(x + δ)``), whose slope in the field is smaller than in b by
            O(γ²): a fit then reads σ_call about 1 % low (measured at 10⁵ reads per h).
        qubits, seed, truth, ranges: as :class:`QASAModelSampler`.

    Attributes:
        offsets: one array per call made (in order), the total offset of each qubit (truth order).
    """

    def __init__(self, qubits: int | Iterable[int] = 2000, seed: int = 0, *, sigma_call: float | np.ndarray = 0.0,
                 drift_step: float = 0.0, on: str = "bias", truth: pd.DataFrame | None = None,
                 sigma_field: float = 0.0, broken: dict[int, float] | None = None, **ranges: Any) -> None:
        super().__init__(qubits, seed, truth=truth, **ranges)
        self.sigma_field = float(sigma_field)
        self.broken = dict(broken or {})
        self._seed = int(seed)
        self._fields: dict[float, np.ndarray] = {}
        self.sigma_call = np.broadcast_to(np.asarray(sigma_call, float), (len(self._nodes),)).copy()
        self.drift_step = float(drift_step)
        self.on = on
        self._walk = np.zeros(len(self._nodes))
        self.offsets: list[np.ndarray] = []

    def sample_counts(self, h: dict[int, float], num_reads: int = 1, seed: int | None = None,
                      **_: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Counts of -1 at programmed fields ``h`` plus this call's offsets."""
        variables = np.fromiter(h.keys(), dtype=np.int64, count=len(h))
        x = np.fromiter(h.values(), dtype=float, count=len(h))
        self._check(list(variables), x, int(num_reads))
        rng = np.random.default_rng(seed)
        self._walk = self._walk + self.drift_step * rng.standard_normal(len(self._nodes))
        offset = self._walk + self.sigma_call * rng.standard_normal(len(self._nodes))
        self.offsets.append(offset)
        rows = np.fromiter((self._row[v] for v in variables), dtype=np.int64, count=len(variables))
        offset = offset[rows]
        if self.sigma_field:
            offset = offset + self.field_offsets(x, rows)
        if self.broken:
            shift = np.array([self.broken.get(int(r), 0.0) for r in rows])
            offset = offset + np.where(np.round(1000 * np.abs(x)).astype(np.int64) % 7 < 2, shift, 0.0)
        if self.on == "field":
            p = 0.5 * (1.0 + _m_diag(self._model, x + offset, self._theta[rows]))
        else:
            theta = self._theta[rows].copy()
            theta[:, 1] += offset
            p = 0.5 * (1.0 + _m_diag(self._model, x, theta))
        return variables, rng.binomial(int(num_reads), p), {}


    def field_offsets(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The per-field offset of truth rows ``rows`` programmed with ``x`` (fixed per qubit and value)."""
        out = np.empty(len(rows))
        for value in np.unique(x):
            if value not in self._fields:
                key = int(round(float(value) * 1e9)) % 2**63
                self._fields[value] = self.sigma_field * np.random.default_rng([self._seed, 7, key]).standard_normal(
                    len(self._nodes))
            at = x == value
            out[at] = self._fields[value][rows[at]]
        return out


def _m_diag(model, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``m(x_i; θ_i)`` for paired rows (each row its own field)."""
    out = model._fn(x[:, None], theta, False)[0]
    return np.asarray(out)[:, 0]

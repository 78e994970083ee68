"""The QASA-model sampler of ``qasa_sampler.py`` with noise beyond shots: per-call field offsets and drift.

Each call is one programming of the device (DESIGN.md §7). On top of the qubit's static truth
``(β, b, γ, η)`` this sampler adds, per qubit and per call ``k``, a field offset

    δ_ik = σ_call · z_ik  +  w_ik,        z_ik ~ N(0, 1) independent over qubits and calls,

where ``w_ik`` is a slow component that is the same for every read of the call: a random walk
(``w_ik = w_i,k−1 + σ_walk · z'_ik``) and/or a power-law (1/f^α) process sampled at the call times
``t_k = k · dt`` (one-sided spectral density ``S(f) = A² (f / 1 Hz)^(−α)`` in h²/Hz, synthesized by
the FFT method on a grid of ``max_calls`` calls: Timmer & König, A&A 300, 707 (1995), without the
random amplitudes, which is enough here). The offset enters the field in the qubit's own frame,
``x + b + δ ± η`` (the transverse term keeps ``βγx``), as a flux offset would.

Calls are numbered in the order they arrive (``qasa.run`` issues them in protocol order, so call
``k`` is the protocol's call of index ``k``); :attr:`NoisyQASASampler.calls` records each call's
``seed``. The per-call draw ``z`` depends on (truth seed, call seed) only; the slow component on
the call number.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from qasa_sampler import QASAModelCountSampler, _m_diag

__all__ = ["NoisyQASASampler", "call_times"]


class NoisyQASASampler(QASAModelCountSampler):
    """Count-level QASA sampler with per-call offsets (module docstring).

    Args:
        qubits, seed, truth, **ranges: as :class:`qasa_sampler.QASAModelSampler`.
        sigma_call: sd of the independent per-call offset (h units).
        sigma_walk: sd of the random-walk step per call (h units).
        flicker: ``(A, α)``: amplitude at 1 Hz (h/√Hz) and exponent of a power-law offset, or None.
        dt: seconds between calls (the clock of the power-law component).
        max_calls: calls the slow components are drawn for.
    """

    def __init__(self, qubits: int | Iterable[int] = 400, seed: int = 0, *, truth: pd.DataFrame | None = None,
                 sigma_call: float = 0.0, sigma_walk: float = 0.0, flicker: tuple[float, float] | None = None,
                 dt: float = 1.0, max_calls: int = 8192, **ranges: Any) -> None:
        super().__init__(qubits, seed, truth=truth, **ranges)
        self.sigma_call, self.sigma_walk, self.flicker, self.dt = float(sigma_call), float(sigma_walk), flicker, float(dt)
        self.seed = int(seed)
        n = len(self._nodes)
        rng = np.random.default_rng([self.seed, 7])
        slow = np.zeros((max_calls, n))
        if self.sigma_walk > 0:
            slow += np.cumsum(rng.normal(0.0, self.sigma_walk, (max_calls, n)), axis=0)
        if flicker is not None:
            slow += power_law_noise(max_calls, n, self.dt, *flicker, rng)
        self.slow = slow
        self.calls: list[int] = []

    def offsets(self, k: int, seed: int | None) -> np.ndarray:
        """The field offset of every qubit (in node order) in call number ``k`` with call seed ``seed``."""
        z = np.random.default_rng([self.seed, 11, 0 if seed is None else int(seed)]).standard_normal(len(self._nodes))
        return self.sigma_call * z + self.slow[k]

    def sample_counts(self, h: dict[int, float], num_reads: int = 1, seed: int | None = None,
                      **_: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        variables = np.fromiter(h.keys(), dtype=np.int64, count=len(h))
        x = np.fromiter(h.values(), dtype=float, count=len(h))
        self._check(list(variables), x, int(num_reads))
        k = len(self.calls)
        self.calls.append(seed)
        rows = np.fromiter((self._row[int(v)] for v in variables), dtype=np.int64, count=len(variables))
        theta = self._theta[rows].copy()
        theta[:, 1] += self.offsets(k, seed)[rows]
        p = 0.5 * (1.0 + _m_diag(self._model, x, theta))
        return variables, np.random.default_rng(seed).binomial(int(num_reads), p), {}

    def sample(self, *args, **kwargs):  # pragma: no cover - the count path is the one under test
        raise NotImplementedError("NoisyQASASampler offers the count path (sample_counts) only")


def power_law_noise(length: int, n: int, dt: float, amplitude: float, alpha: float,
                    rng: np.random.Generator) -> np.ndarray:
    """(length, n) series sampled every ``dt`` s with one-sided PSD ``amplitude² f^−alpha`` (f in Hz).

    FFT synthesis: Fourier coefficients of variance ``S(f_j) · length / (2 dt)`` per real and
    imaginary part give a periodogram ``(2 dt / length) |X_j|²`` with mean ``S(f_j)``.
    """
    f = np.fft.rfftfreq(length, dt)
    s = np.zeros_like(f)
    s[1:] = amplitude**2 * f[1:] ** (-alpha)
    scale = np.sqrt(s * length / (4 * dt))
    coef = (rng.standard_normal((len(f), n)) + 1j * rng.standard_normal((len(f), n))) * scale[:, None]
    coef[0] = 0.0
    if length % 2 == 0:
        coef[-1] = coef[-1].real * np.sqrt(2)
    return np.fft.irfft(coef, n=length, axis=0)


def call_times(ds, sampler: NoisyQASASampler, start: str = "2026-01-01T00:00:00+00:00") -> pd.DataFrame:
    """The dataset's calls table with ``started``/``finished`` on the sampler's clock (call ``k`` at ``k·dt``)."""
    protocol = ds.protocol
    order = {protocol.call_seed(i): i for i in range(len(protocol.calls()))}
    number = {order[s]: k for k, s in enumerate(sampler.calls)}
    calls = ds.calls.copy()
    t0 = pd.Timestamp(start)
    k = np.array([number[int(i)] for i in calls["index"]])
    calls["started"] = [(t0 + pd.Timedelta(seconds=float(v) * sampler.dt)).isoformat() for v in k]
    calls["finished"] = [(t0 + pd.Timedelta(seconds=float(v) * sampler.dt + 0.01)).isoformat() for v in k]
    return calls

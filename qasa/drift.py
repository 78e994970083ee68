r"""Drift over a run: per-call bias offsets, per-qubit b(t) trends and the device's flux-noise spectrum.

Every call is one programming of the device at one moment; a slowly varying flux offset (1/f flux
noise, uncorrected drift: DESIGN.md §7) shifts every read of a call by the same field. A fitted ``b``
is then the run average of the qubit's bias. This module returns data (plots take ``ax=None``).

Per-call offsets
    For qubit ``i`` in call ``c`` at programmed field ``x`` (the gauge applied; the qubit's own frame,
    in which a bias keeps its sign), with ``N`` reads of which ``n`` returned −1 and the qubit's fitted
    ``θ̂ = (β, b, γ, η)``, the bias of that call is estimated by one Fisher-scoring step from ``b̂``::

        m̂ = m(x; θ̂),  m' = ∂m/∂b (x; θ̂),  m_obs = (2n − N)/N
        b_ic = b̂_i + (m_obs − m̂) / m',        Var(b_ic) = (1 − m̂²) / (N m'²)   (binomial)

    Cells where ``m'`` carries little information (saturated responses) get a huge variance and so
    no weight below. Call times are the midpoints of the calls on the device's clock when every call
    records one (``device_time``: the virtual QPU's clock, SAPI's ``solved_on``), else the midpoints of
    the calls table's ``started``/``finished`` (the client's clock, :func:`call_clock`).

Per-qubit trend
    Weighted least squares of ``b_ic`` on time (weights ``1/Var(b_ic)``): the slope (h per hour) with a
    standard error scaled by ``√max(χ²/df, 1)`` (quasi-likelihood: between-call noise widens it), a
    two-sided p-value and the Benjamini–Hochberg q-value over qubits. A qubit *drifts* when
    ``q < fdr`` (default 0.01): its trend exceeds its interval after control of the false-discovery
    rate over all the qubits tested. ``b`` of the fit is the run average; its interval is the fit's.

Device spectrum
    Residual offsets ``r_ic = b_ic − b̂_i`` over call times; for each frequency ``f`` (log-spaced from
    3/T to 0.8× the Nyquist frequency of the median call spacing, leaving out frequencies within
    3/T of a sidelobe of the weights' spectral window: a grid protocol's h cycle gives the calls a
    periodic information, which would move the strong low-frequency power there) and qubit, a weighted least-squares fit
    of ``r`` on ``(1, cos 2πft, sin 2πft)`` gives amplitudes ``(a, s)`` and the periodogram
    ``P_i(f) = T (a² + s²) / 2`` (``T`` the span; a process with one-sided spectral density ``S``
    gives ``E P = S``; Lomb 1976, Scargle 1982, with weights), after removing each qubit's mean
    residual at each programmed field (the model's misfit there, which would repeat with the h
    cycle), with a Hann taper over the run and divided by the equivalent noise bandwidth of the
    weights. Residuals are averaged per (qubit, block) first: a block is one h cycle when the run took
    its h values in order (a grid's periodic information would otherwise alias), one call when each
    pass was shuffled (:mod:`qasa.protocol`; the information then has no cycle). Each block mean sits
    at its weighted time and is divided by its filter ``exp(−(2πf)² v)`` (``v`` the weights' time
    variance in the block), averaged over blocks; at most :data:`SPECTRUM_QUBITS` qubits and
    :data:`SPECTRUM_CELLS` (qubit, block) sums (evenly spread qubits) enter. The device spectrum is the
    mean over qubits, and the model::

        S(f) = A² (f / 1 Hz)^(−α) + C

    (``A`` the flux-noise amplitude at 1 Hz in h/√Hz, ``α`` its exponent, ``C`` a white floor: the
    per-call estimation noise and per-programming errors) is fitted by least squares on log S.

    With blocks of one call the weights jump from call to call (a qubit's information depends on the
    field of each call), and a weighted fit at ``f`` then also picks up the power of every other
    frequency: for a 1/f signal, 1.3–5.8× S above a tenth of the calls' Nyquist frequency, which read
    the exponent ≈ 1.1 for a planted 1.0 and the amplitude ≈ 25 % low. There the fit is of what the
    periodogram expects instead: ``E P_k = A² ∫ K_k(f) f^−α df + C v_k + N_k``, with ``K_k`` the
    estimator's spectral window (:func:`_window`, from the fits' coefficients, exact to the time grid),
    ``v_k`` that of a white noise of unit density and ``N_k`` the offsets' own estimation noise
    (variance ``b_call_var``), the noise integrated up to the calls' Nyquist frequency. Measured with
    planted 1/f noise (tests/test_drift.py): amplitude and exponent both covered on 10 of 10 devices
    of 40 qubits in h order, 18 of 20 shuffled (medians A 0.00508 for 0.005, α 0.993 for 1.0; before
    the window 17 of 20, 0.0038 and 1.08), 6 of 6 devices of 100 qubits. On the virtual QPU (every
    noise source on, 15 000 calls of 100 reads, shuffled) 3 of 4 seeds; seed 0 reads α 0.69 [0.63,
    0.86] for 0.9, its high frequencies above the estimation noise that the fit leaves in the law.
    Intervals: percentile bootstrap over qubits (qubits' flux noise is independent). The spectrum is
    *not estimable* with fewer than :data:`MIN_CALLS` timed calls, a frequency range under a decade,
    or when the power-law term is not resolved above the floor; the record says which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from qasa.dataset import Axis, Dataset
from qasa.fitting import FitTable
from qasa.models import get_model

__all__ = ["call_offsets", "call_clock", "trends", "spectrum", "drift_summary", "mark_drifting", "plot_spectrum", "MIN_CALLS"]

#: Fewest timed calls for a spectrum.
MIN_CALLS = 32
#: Most qubits the spectrum averages (evenly spread over the qubits with offsets; its intervals
#: resample them) ...
SPECTRUM_QUBITS = 500
#: ... and most (qubit, block) sums it keeps (0.25 MB an array): fewer qubits when blocks are many (a
#: block is one call in a shuffled run), so its memory does not grow with the run.
SPECTRUM_CELLS = 1 << 15
_PERIODOGRAM_ROWS = 16


def call_clock(data: Dataset) -> str:
    """Which clock places the calls: ``"device"`` when every call records its time on the solver's
    clock (``device_time``: the virtual QPU's clock, SAPI's ``solved_on``), else ``"client"`` (the
    midpoints of the client's ``started``/``finished``, which include queueing and network waits) when
    some call has those, else ``"none"`` (no call has a time: an imported spin table)."""
    calls = data.calls
    if len(calls) and "device_time" in calls and np.isfinite(calls["device_time"].to_numpy(float)).all():
        return "device"
    if len(calls) and "started" in calls and \
            pd.to_datetime(calls["started"], utc=True, errors="coerce", format="ISO8601").notna().any():
        return "client"
    return "none"


def _call_times(data: Dataset) -> pd.Series:
    """Seconds from the first call to each call's midpoint, indexed by call id (NaN when unknown).

    On the device's clock when every call has one (:func:`call_clock`; the midpoint adds half the
    call's QPU access time), else the client's ``started``/``finished`` midpoints."""
    calls = data.calls
    if call_clock(data) == "device":
        t = calls["device_time"].to_numpy(float)
        if "qpu_access_time" in calls:
            t = t + 0.5e-6 * np.nan_to_num(calls["qpu_access_time"].to_numpy(float))
        return pd.Series(t - t.min(), index=calls["call_id"].astype(str).to_numpy())
    if not len(calls) or "started" not in calls:
        return pd.Series(dtype=float)
    start = pd.to_datetime(calls["started"], utc=True, errors="coerce", format="ISO8601")
    end = pd.to_datetime(calls["finished"], utc=True, errors="coerce", format="ISO8601") if "finished" in calls else start
    mid = start + (end.fillna(start) - start) / 2
    t = (mid - mid.min()).dt.total_seconds()
    return pd.Series(t.to_numpy(float), index=calls["call_id"].astype(str).to_numpy())


def mark_drifting(fits: FitTable, trend: pd.DataFrame) -> FitTable:
    """A copy of ``fits`` whose drifting qubits (``trend["drifts"]``) carry the quality reason ``"drifts"``."""
    t = fits.table.copy()
    drifting = set(trend.index[trend["drifts"].fillna(False).astype(bool)])
    hit = t["qubit"].isin(drifting).to_numpy()
    reason = t["reason"].fillna("").astype(str)
    t.loc[hit, "reason"] = [r + ("; " if r else "") + "drifts" for r in reason[hit]]
    return FitTable(t, fits.model.name, dict(fits.meta))


def _periodogram(t: np.ndarray, R: np.ndarray, W: np.ndarray, freqs: np.ndarray,
                 tq: np.ndarray | None = None, window_rows: np.ndarray | None = None):
    """Weighted periodogram per qubit: R, W (qubits, calls) on shared times t → (qubits, freqs); ``tq``
    (qubits, calls): each value's own time, when it is not ``t`` (the taper stays on ``t``).

    A Hann taper ``τ`` over the run multiplies the weights (it stops the strong low-frequency power
    of a red spectrum leaking into the higher bins), and the periodogram is divided by the taper's
    equivalent noise bandwidth ``n Στ² / (Στ)²`` (≈ 1.5), so that a spectrum smooth on the scale of
    the calls' information pattern still gives ``E P ≈ S`` (the within-cycle pattern of the weights
    moves power only to its sidelobes, which :func:`spectrum` avoids).

    ``window_rows`` (blocks of one call, :func:`_spectrum_of`): also return, per qubit and frequency, the
    expected periodogram of the values' own estimation noise (variance ``1/W``) and of a white noise of
    unit one-sided density (per-value variance ``1/(2 dt)`` is left to the caller: here ``Σ c²``), and for
    those rows the linear maps of the data onto the cosine and sine amplitudes, scaled so that
    ``P = (c_cos·R)² + (c_sin·R)²``, shape ``(freqs, 2, rows, calls)`` (:func:`_window`)."""
    T = float(np.ptp(t))
    taper = np.sin(np.pi * (t - t.min()) / T) ** 2
    w0, W = W, W * taper
    enbw = len(t) * float((taper**2).sum()) / float(taper.sum()) ** 2
    scale2 = T / 2 / enbw
    out = np.empty((R.shape[0], len(freqs)))
    more = window_rows is not None
    if more:
        noise, white = np.empty_like(out), np.empty_like(out)
        coefs = np.empty((len(freqs), 2, len(window_rows), R.shape[1]))
        with np.errstate(invalid="ignore", divide="ignore"):
            Wvar = np.where(w0 > 0, W * W / w0, 0.0)              # W² · var with var = 1/w (the value's)
    def design(rows, f):
        """(1, cos 2πft, sin 2πft) at the rows' times, (rows, calls, 3), and its weighted Gram matrix."""
        tt = np.broadcast_to(t, W[rows].shape) if tq is None else tq[rows]
        X = np.stack([np.ones_like(tt), np.cos(2 * np.pi * f * tt), np.sin(2 * np.pi * f * tt)], -1)
        return X, np.einsum("qc,qci,qcj->qij", W[rows], X, X) + 1e-12 * np.eye(3)

    for k, f in enumerate(freqs):
        for q in range(0, R.shape[0], _PERIODOGRAM_ROWS):          # (rows in chunks: bounded temporaries)
            sl = slice(q, q + _PERIODOGRAM_ROWS)
            X, XtWX = design(sl, f)
            XtWy = np.einsum("qc,qci,qc->qi", W[sl], X, R[sl])
            beta = np.linalg.solve(XtWX, XtWy[..., None])[..., 0]
            out[sl, k] = scale2 * (beta[:, 1] ** 2 + beta[:, 2] ** 2)
            if more:                      # Σ c² v = diag[(XᵀWX)⁻¹ (Xᵀ W v W X) (XᵀWX)⁻¹], v = 1/w and v = 1
                inv = np.linalg.inv(XtWX)
                for acc, wv in ((noise, Wvar[sl]), (white, W[sl] ** 2)):
                    mid = np.einsum("qc,qci,qcj->qij", wv, X, X)
                    acc[sl, k] = np.maximum(scale2 * np.einsum("qii->qi", inv @ mid @ inv)[:, 1:].sum(1), 0.0)
        if more:
            X, XtWX = design(window_rows, f)
            c = np.linalg.solve(XtWX, (X * W[window_rows][..., None]).transpose(0, 2, 1))       # (rows, 3, calls)
            coefs[k] = math.sqrt(scale2) * c[:, 1:].transpose(1, 0, 2)
    return (out, noise, white, coefs) if more else out


#: Rows (qubits) whose coefficients make the window: the weights' pattern (which fields inform a qubit)
#: is alike across qubits (the run order is the same for all), and the cost grows with rows.
_WINDOW_ROWS = 16
#: The window's time grid: the calls' median spacing over this (their times are put on it).
_WINDOW_SUBSTEPS = 8
#: Most log bins (1 % wide) of the window's frequencies.
_WINDOW_BINS = 4096
#: Longest time grid of the window (a run whose calls span more than 2¹⁷ median spacings — e.g. rounds
#: placed days apart — is fitted without it, and its record says so).
_WINDOW_MAX = 1 << 18


def _window(t: np.ndarray, coefs: np.ndarray, dt: float, f_hi: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The periodogram's spectral window: ``E P_k = ∫ S(f) K_k(f) df`` for a stationary signal with
    one-sided density ``S`` sampled at the calls' times ``t`` (``Cov(y_i, y_j) = ∫ S(f) cos 2πf(t_i − t_j) df``),
    so ``K_k(f) = mean over rows of |c_cos·e^{2πift}|² + |c_sin·e^{2πift}|²`` (``coefs`` of :func:`_periodogram`).

    ``K`` varies on the scale 1/T (T the span), so it is sampled exactly by a zero-padded FFT with the
    times put on a grid of ``dt /`` :data:`_WINDOW_SUBSTEPS` (a phase error of at most π/20 at the highest
    frequency used), for the frequencies ``0 < f ≤ f_hi``, summed as ``K Δf`` over bins 1 % wide in f, each
    at its K-weighted log-mean frequency: ``(g, KΔf)``, both ``(freqs, bins)``; ``None`` when the grid
    would be longer than :data:`_WINDOW_MAX`. The
    intercept of each fit makes the coefficients sum to zero, so ``K`` vanishes like f² at 0 and a power
    law with α < 3 has a finite integral."""
    step = dt / _WINDOW_SUBSTEPS
    idx = np.round((t - t[0]) / step).astype(np.int64)
    L = 1 << int(math.ceil(math.log2(2 * (idx[-1] + 1))))               # zero-padded: Δf = 1/(L step) ≤ 1/(2T)
    if L > _WINDOW_MAX:
        return None
    nf, two, rows, n = coefs.shape
    f = np.fft.rfftfreq(L, step)
    keep = (f > 0) & (f <= f_hi)
    K = np.empty((nf, int(keep.sum())))
    for k in range(nf):                                 # one frequency at a time: 2·rows sequences of L
        seq = np.zeros((two * rows, L))
        np.add.at(seq.T, idx, coefs[k].reshape(two * rows, n).T)
        K[k] = (np.abs(np.fft.rfft(seq, axis=1)[:, keep]) ** 2).sum(0) / rows
    K *= f[1] - f[0]
    # a power law varies little across 1 % in f: sum K over log bins and put each bin at its K-weighted
    # log-mean frequency (exact to second order), so that a fit's evaluations cost bins, not the grid
    fk = f[keep]
    b = np.minimum((np.log(fk / fk[0]) / math.log(1.01)).astype(np.int64), _WINDOW_BINS - 1)
    b = np.unique(b, return_inverse=True)[1].ravel()
    Kb = np.zeros((nf, b.max() + 1))
    lg = np.zeros_like(Kb)
    for k in range(nf):
        Kb[k] = np.bincount(b, K[k], Kb.shape[1])
        lg[k] = np.bincount(b, K[k] * np.log(fk), Kb.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.exp(np.where(Kb > 0, lg / Kb, np.log(fk[0])))
    return g, Kb


def _fit_power_law(freqs: np.ndarray, S: np.ndarray, window: tuple | None = None) -> tuple[float, float, float]:
    """Least squares on log S of ``A² f^−α + C``: ``(A, α, C)``; with ``window = (g, KΔf, v, N)``, of the
    periodogram's expectation ``A² Σ_g KΔf g^−α + C v + N`` instead (:func:`_spectrum_of`)."""
    def resid(p):
        la, alpha, lc = p
        if window is None:
            return np.log(np.exp(2 * la) * freqs ** (-alpha) + np.exp(lc)) - np.log(S)
        g, K, v, N = window
        return np.log(np.exp(2 * la) * (K * g ** (-alpha)).sum(-1) + np.exp(lc) * v + N) - np.log(S)

    lc0 = math.log(max(float(np.min(S)), 1e-30))
    la0 = 0.5 * math.log(max(float(S[0] * freqs[0]), 1e-30))
    r = optimize.least_squares(resid, [la0, 1.0, lc0], bounds=([-60, 0.0, -80], [10, 4.0, 10]))
    return float(math.exp(r.x[0])), float(r.x[1]), float(math.exp(r.x[2]))


class _Offsets:
    """Per-call bias estimates (module docstring) of the good qubits' rows, one batch of counts at a time.

    The model's ``m`` and ``∂m/∂b`` are evaluated once per good qubit on the sorted programmed fields
    ``fields``; each row looks its cell up.
    """

    def __init__(self, fits: FitTable, fields: np.ndarray) -> None:
        model = get_model(fits.model.name)
        if "b" not in model.params:
            raise ValueError(f"model {model.name!r} has no bias parameter b; per-call offsets need one")
        good = fits.table[fits.table["quality"] == "good"].set_index("qubit").sort_index()
        self.qubits = good.index.to_numpy(np.int64)
        self._axis = Axis(np.int64)
        self._axis.extend(self.qubits)
        self.fields = np.asarray(fields, float)
        theta = good[list(model.params)].to_numpy(float)
        j = model.params.index("b")
        eps = 1e-5
        tp, tm = theta.copy(), theta.copy()
        tp[:, j] += eps
        tm[:, j] -= eps
        self.m0 = 2 * model.p_down(self.fields, theta) - 1
        self.dm = (model.p_down(self.fields, tp) - model.p_down(self.fields, tm)) / eps        # 2 Δp / 2ε
        self.b_fit = theta[:, j]

    def rows(self, call: np.ndarray, qubit: np.ndarray, h: np.ndarray, gauge: np.ndarray, n_down: np.ndarray,
             n_up: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """The offsets of the good qubits' rows among these: ``qi`` (position in :attr:`qubits`), ``call``,
        ``t``, ``h``, ``x``, ``b_call``, ``b_call_var``, ``b_fit`` (``times``: seconds of each call code)."""
        keep = self._axis.found(qubit)
        qi, call, h = self._axis.positions(qubit[keep]), call[keep], h[keep]
        g = gauge[keep].astype(float)
        x = g * h + 0.0
        N = (n_down[keep] + n_up[keep]).astype(float)
        down = np.where(g < 0, n_up[keep].astype(float), n_down[keep].astype(float))
        hi = np.searchsorted(self.fields, x)
        m_hat, slope = self.m0[qi, hi], self.dm[qi, hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            m_obs = (2 * down - N) / N
            b_call = self.b_fit[qi] + (m_obs - m_hat) / slope
            var = (1 - m_hat**2) / (N * slope**2)
        bad = ~(np.isfinite(b_call) & np.isfinite(var) & (var > 0) & (N > 0))
        b_call[bad], var[bad] = np.nan, np.inf
        return {"qi": qi, "call": call, "t": times[call] if len(times) else np.full(len(call), np.nan), "h": h,
                "x": x, "b_call": b_call, "b_call_var": var, "b_fit": self.b_fit[qi]}


def _dataset_offsets(data: Dataset, fits: FitTable):
    """``(offsets, times, rows)``: the :class:`_Offsets` of ``fits``, each call's time (s, by call code)
    and a function streaming the offsets of the dataset's batches (memory bounded by a batch)."""
    if "b" not in get_model(fits.model.name).params:      # before anything is read
        raise ValueError(f"model {fits.model.name!r} has no bias parameter b; per-call offsets need one")
    off = _Offsets(fits, data.response().h)
    t = _call_times(data)
    times = (t.reindex(np.asarray(data.call_index, dtype=object).astype(str)).to_numpy(float) if len(t)
             else np.zeros(0))

    def rows():
        for b in data.batches(qubits=off.qubits, gauges=True):
            yield off.rows(*b.arrays(), times)

    return off, times, rows


def call_offsets(data: Dataset, fits: FitTable) -> pd.DataFrame:
    """Per-call bias estimates of every good qubit (module docstring): one row per (call, qubit) — the
    whole table in memory (:func:`drift_summary` streams them instead).

    Returns:
        One row per (call, qubit): ``call_id``, ``qubit``, ``t`` (s from the first call), ``h``
        (nominal field), ``x`` (programmed field), ``b_call``, ``b_call_var``, ``b_fit``.

    Raises:
        ValueError: if the model has no bias parameter ``b``.
    """
    off, _, rows = _dataset_offsets(data, fits)
    parts = list(rows())
    cols = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in
            ("qi", "call", "t", "h", "x", "b_call", "b_call_var", "b_fit")}
    ids = np.asarray(data.call_index, dtype=object).astype(str)
    out = pd.DataFrame({"call_id": ids[cols["call"].astype(np.int64)], "qubit": off.qubits[cols["qi"].astype(np.int64)],
                        **{k: cols[k].astype(float) for k in ("t", "h", "x", "b_call", "b_call_var", "b_fit")}})
    out.attrs["shuffled"] = _shuffled(data)
    return out


def _shuffled(data: Dataset) -> bool:
    """Whether the run took each pass's h values in a shuffled order (:mod:`qasa.protocol`)."""
    protocol = data.protocol
    return protocol is not None and protocol.order == "shuffled"


class _DriftSums:
    """What :func:`trends` and :func:`spectrum` need, summed over the offsets in two passes.

    The first pass (:meth:`first`) sums, per qubit, the weights and weighted times and offsets of its
    finite offsets (and their extreme times), and per (qubit, programmed field) the weighted residuals
    (the model's misfit there); it marks the calls and nominal fields that have finite offsets. After
    :meth:`plan` (the calls in time order, their blocks of one h cycle), the second pass
    (:meth:`second`) sums the centred products of the trend fits and the weighted residuals per (qubit,
    block). Sums are exact sums in row order: memory grows with qubits × fields and qubits × blocks,
    never with the rows.
    """

    def __init__(self, qubits: int, call_times: np.ndarray, fields: np.ndarray) -> None:
        self.call_times, self.fields = np.asarray(call_times, float), np.asarray(fields, float)
        self.n = np.zeros(qubits, np.int64)
        self.sw, self.swt, self.swy = np.zeros(qubits), np.zeros(qubits), np.zeros(qubits)
        self.tmin, self.tmax = np.full(qubits, np.inf), np.full(qubits, -np.inf)
        self.cell_rw, self.cell_w = np.zeros((qubits, len(self.fields))), np.zeros((qubits, len(self.fields)))
        self.finite_call = np.zeros(len(self.call_times), bool)
        self.h = np.zeros(0)
        self.sxx, self.sxy, self.syy = np.zeros(qubits), np.zeros(qubits), np.zeros(qubits)
        self.rank: np.ndarray | None = None

    @staticmethod
    def _finite(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.isfinite(o["b_call"]) & np.isfinite(o["t"])
        return o if ok.all() else {k: v[ok] for k, v in o.items()}

    def first(self, o: dict[str, np.ndarray]) -> None:
        o = self._finite(o)
        qi, w, t, y = o["qi"], 1 / o["b_call_var"], o["t"] / 3600.0, o["b_call"]
        np.add.at(self.n, qi, 1)
        for acc, v in ((self.sw, w), (self.swt, w * t), (self.swy, w * y)):
            np.add.at(acc, qi, v)
        np.minimum.at(self.tmin, qi, t)
        np.maximum.at(self.tmax, qi, t)
        xi = np.searchsorted(self.fields, o["x"])
        np.add.at(self.cell_rw, (qi, xi), (y - o["b_fit"]) * w)
        np.add.at(self.cell_w, (qi, xi), w)
        self.finite_call[o["call"]] = True
        self.h = _axis(self.h, o["h"] + 0.0)

    def plan(self, block: int | None, shuffled: bool = False) -> dict[str, Any]:
        """The calls in time order and their blocks (``spectrum``'s record so far; ``reason`` when not
        estimable): ``block`` calls each, by default one h cycle — or one call when the run order was
        shuffled within each pass (``shuffled``; the calls' information then has no h cycle to alias)."""
        calls = np.flatnonzero(self.finite_call)
        out: dict[str, Any] = {"estimable": False, "reason": "", "calls": int(len(calls)), "qubits": int((self.n > 0).sum())}
        if out["calls"] < MIN_CALLS:
            out["reason"] = (f"not estimable: {out['calls']} timed calls (at least {MIN_CALLS} needed; "
                             "call times come from the calls table)")
            return out
        B = int(block) if block else (1 if shuffled else max(len(self.h), 1))
        order = calls[np.argsort(self.call_times[calls], kind="stable")]
        self.times = self.call_times[order]
        self.rank = np.full(len(self.call_times), -1, np.int64)
        self.rank[order] = np.arange(len(order))
        self.B, self.nblocks = B, len(order) // B
        dt = float(np.median(np.diff(self.times))) if len(order) > 1 else 0.0
        self.dt = dt
        out.update(span_s=float(np.ptp(self.times)), blocks=self.nblocks, block_calls=B)
        if self.nblocks < 8 or not dt > 0:
            out["reason"] = f"not estimable: {self.nblocks} blocks of {B} calls (at least 8 needed)"
            self.rank = None
            return out
        # the spectrum is a mean over qubits: at most SPECTRUM_QUBITS of them, and at most SPECTRUM_CELLS
        # (qubit, block) sums, evenly spread over the qubits (memory stays bounded when a block is a call)
        have = np.flatnonzero(self.n > 0)
        most = min(SPECTRUM_QUBITS, max(32, SPECTRUM_CELLS // self.nblocks))
        pick = have[np.unique(np.linspace(0, len(have) - 1, min(len(have), most)).round().astype(np.int64))] \
            if len(have) else have
        self.spec = np.full(len(self.n), -1, np.int64)
        self.spec[pick] = np.arange(len(pick))
        m = len(pick)
        self.rw = np.zeros((m, self.nblocks))
        self.w = np.zeros((m, self.nblocks))
        # Σ w t and Σ w t² per (qubit, block) (t from the run's start): a block's weighted time and spread
        self.wt = np.zeros((m, self.nblocks)) if B > 1 else None
        self.wt2 = np.zeros((m, self.nblocks)) if B > 1 else None
        self.used = np.zeros((m, self.nblocks), bool)
        return out

    def second(self, o: dict[str, np.ndarray]) -> None:
        o = self._finite(o)
        qi, w, t, y = o["qi"], 1 / o["b_call_var"], o["t"] / 3600.0, o["b_call"]
        with np.errstate(invalid="ignore", divide="ignore"):
            dt, dy = t - self.swt[qi] / self.sw[qi], y - self.swy[qi] / self.sw[qi]
        for acc, v in ((self.sxx, w * dt * dt), (self.sxy, w * dt * dy), (self.syy, w * dy * dy)):
            np.add.at(acc, qi, v)
        if self.rank is None:
            return
        xi = np.searchsorted(self.fields, o["x"])
        R = (y - o["b_fit"]) - self.cell_rw[qi, xi] / self.cell_w[qi, xi]
        pos = self.rank[o["call"]]
        blk = pos // self.B
        use = (blk < self.nblocks) & (self.spec[qi] >= 0)
        qi, blk, R, w = self.spec[qi[use]], blk[use], R[use], w[use]
        np.add.at(self.rw, (qi, blk), R * w)
        np.add.at(self.w, (qi, blk), w)
        if self.wt is not None:
            tc = self.call_times[o["call"]][use] - self.times[0]
            np.add.at(self.wt, (qi, blk), w * tc)
            np.add.at(self.wt2, (qi, blk), w * tc * tc)
        self.used[qi, blk] = True


def _axis(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.union1d(axis, pd.unique(values)) if len(values) else axis


def _trend_table(sums: _DriftSums, qubits: np.ndarray, fits: FitTable | None, fdr: float,
                 level: float) -> pd.DataFrame:
    """:func:`trends`' table from the sums of both passes."""
    z = stats.norm.ppf(0.5 + level / 2)
    tested = (sums.n >= 3) & (sums.sw > 0) & (sums.tmax > sums.tmin)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(tested, sums.sxy / sums.sxx, np.nan)
        disp = np.where(tested, (sums.syy - slope * sums.sxy) / np.maximum(sums.n - 2, 1), np.nan)
        se = np.sqrt(np.maximum(disp, 1.0) / sums.sxx)
        p = 2 * stats.norm.sf(np.abs(slope / se))
    out = pd.DataFrame({"qubit": qubits, "calls": sums.n, "slope": slope, "slope_se": se, "slope_lo": slope - z * se,
                        "slope_hi": slope + z * se, "dispersion": disp, "p": p})[sums.n > 0].set_index("qubit")
    p = out["p"].to_numpy(float)
    qv = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        qv[ok] = stats.false_discovery_control(p[ok], method="bh")
    out["q"] = qv
    out["drifts"] = out["q"] < fdr
    if fits is not None:
        t = fits.table.set_index("qubit")
        out["b"] = t["b"].reindex(out.index)
        if "b_lo" in t and "b_hi" in t:
            out["b_lo"], out["b_hi"] = t["b_lo"].reindex(out.index), t["b_hi"].reindex(out.index)
        elif "b_stderr" in t:
            se = t["b_stderr"].reindex(out.index)
            out["b_lo"], out["b_hi"] = out["b"] - z * se, out["b"] + z * se
    return out


def _frame_sums(offsets: pd.DataFrame) -> tuple[_DriftSums, np.ndarray, dict[str, np.ndarray]]:
    """The :class:`_DriftSums` of an offsets table after its first pass, its qubits and its rows as arrays."""
    qubits, qi = np.unique(offsets["qubit"].to_numpy(np.int64), return_inverse=True)
    ids, call = np.unique(offsets["call_id"].astype(str).to_numpy(), return_inverse=True)
    t = offsets["t"].to_numpy(float)
    call_t = np.full(len(ids), np.nan)
    finite = np.isfinite(offsets["b_call"].to_numpy(float)) & np.isfinite(t)
    call_t[call[finite][::-1]] = t[finite][::-1]                # each call's first time
    o = {"qi": qi, "call": call, **{k: offsets[k].to_numpy(float) for k in
                                    ("t", "h", "x", "b_call", "b_call_var", "b_fit")}}
    sums = _DriftSums(len(qubits), call_t, np.unique(o["x"]))
    sums.first(o)
    return sums, qubits, o


def trends(offsets: pd.DataFrame, fits: FitTable | None = None, fdr: float = 0.01, level: float = 0.95) -> pd.DataFrame:
    """Per-qubit linear trend of the per-call bias over the run (module docstring).

    Returns:
        Indexed by qubit: ``calls``, ``b`` (the fit's run average) with ``b_lo``/``b_hi`` (the fit's
        interval when ``fits`` has one), ``slope`` and ``slope_se`` (h per hour), ``slope_lo``,
        ``slope_hi``, ``dispersion`` (χ²/df about the trend), ``p``, ``q`` and ``drifts``.
    """
    sums, qubits, o = _frame_sums(offsets)
    sums.second(o)
    return _trend_table(sums, qubits, fits, fdr, level)


def _spectrum_of(sums: _DriftSums, out: dict[str, Any], *, frequencies: int = 16, bootstrap: int = 200,
                 seed: int | None = 0, level: float = 0.95) -> dict[str, Any]:
    """:func:`spectrum`'s record from the sums of both passes (``out``: :meth:`_DriftSums.plan`)."""
    if sums.rank is None:
        return out
    B, nblocks = sums.B, sums.nblocks
    # qubits with offsets in enough blocks: one with a handful has a near-singular fit at every frequency,
    # and one sampled far more sparsely than the rest has another window than the few rows that make it
    # (one qubit of 40 kept to 60 of 900 calls read A 60 % low); a qubit needs half the median count
    count = sums.used.sum(1)
    typical = float(np.median(count[count > 0])) if (count > 0).any() else 0.0
    live = count >= max(MIN_CALLS if B == 1 else 8, 0.5 * typical)
    with np.errstate(invalid="ignore", divide="ignore"):
        Rv = np.nan_to_num(np.where(sums.used, sums.rw / sums.w, np.nan)[live])
    Wv = np.where(sums.used, sums.w, 0.0)[live]
    Rv = Rv - (Wv * Rv).sum(1, keepdims=True) / np.maximum(Wv.sum(1, keepdims=True), 1e-300)
    tb = sums.times[: nblocks * B].reshape(nblocks, B).mean(1)
    T = float(np.ptp(tb))
    # each (qubit, block) mean sits at its weighted time t_qb: with a shuffled run order the informative
    # calls fall anywhere in a block, so the plain block time would jitter by a fraction of the block.
    # Its mean over the block's calls is a filter |Σ_j p_j e^{2πi f (t_j − t_qb)}|², taken as
    # exp(−(2πf)² v_qb) (v_qb the weights' time variance in the block; within 2 % of the exact value for
    # uniform weights at the highest frequency used) averaged over (qubit, block)
    used = sums.used[live]
    if sums.wt is None:                          # blocks of one call: each value at its call's time
        tq, vq = None, np.zeros(1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            tq = np.where(used, sums.wt[live] / sums.w[live], tb[None, :] - sums.times[0]) + sums.times[0]
            vq = np.where(used, np.maximum(sums.wt2[live] / sums.w[live] - (tq - sums.times[0]) ** 2, 0.0), 0.0)[used]
    fmax = 0.4 / (B * sums.dt)
    if fmax / (3 / T) < 5:
        out["reason"] = "not estimable: the run spans less than a factor 5 of frequencies above its h cycle"
        return out
    freqs = np.geomspace(3 / T, fmax, frequencies)
    n = Rv.shape[0]
    if B == 1:
        # one call per block (a shuffled run): each qubit's weights follow its fields' information, which
        # jumps from call to call, and a weighted fit at f then also picks up the power of every other
        # frequency (a white-like floor from the strong low frequencies: measured 1.3–5.8× S above
        # 0.1 Hz, which read α ≈ 1.08 and A ≈ 25 % low for a planted 1/f). The fit therefore models what
        # the periodogram expects through its window: E P_k = A² ∫ K_k f^−α df + C v_k + N_k, with N_k
        # the values' own estimation noise and v_k a white noise of unit density (:func:`_window`).
        rows = np.unique(np.linspace(0, n - 1, min(_WINDOW_ROWS, n)).round().astype(np.int64))
        P, noise, white, coefs = _periodogram(tb, Rv, Wv, freqs, None, window_rows=rows)
        win = _window(tb, coefs, sums.dt, 0.5 / sums.dt)
        if win is None:
            out["note"] = (f"fitted without the periodogram's window: the calls span {T:.3g} s at a median spacing of "
                           f"{sums.dt:.3g} s (the fit may read the exponent high and the amplitude low)")
        else:
            g, K = win
        white = white / (2 * sums.dt)                 # white noise of unit one-sided density: variance 1/(2 dt)
    else:
        H = np.array([np.exp(-(2 * np.pi * f) ** 2 * vq).mean() for f in freqs])
        P = _periodogram(tb, Rv, Wv, freqs, tq) / H

    def parts(idx):
        """The window terms of :func:`_fit_power_law` for the qubits ``idx`` (None: fit S itself)."""
        return (g, K, white[idx].mean(0), noise[idx].mean(0)) if B == 1 and "note" not in out else None

    S = P.mean(0)
    out.update(frequency=freqs, power=S)
    everyone = np.arange(n)
    try:
        A, alpha, C = _fit_power_law(freqs, S, parts(everyone))
    except (ValueError, FloatingPointError) as exc:       # pragma: no cover
        out["reason"] = f"not estimable: the fit failed ({exc})"
        return out
    win = parts(everyone)
    law0 = A**2 * (win[1][0] * win[0][0] ** (-alpha)).sum() if win else A**2 * freqs[0] ** (-alpha)
    floor0 = C * win[2][0] + win[3][0] if win else C
    if not law0 > 2 * floor0:
        out.update(white=C, reason="not estimable: no power-law component above the white floor at the lowest frequency")
        return out
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        reps.append(_fit_power_law(freqs, P[idx].mean(0), parts(idx))[:2])
    reps = np.array(reps).reshape(-1, 2)
    qs = [0.5 - level / 2, 0.5 + level / 2]
    (a_lo, a_hi), (e_lo, e_hi) = ((np.quantile(reps[:, 0], qs), np.quantile(reps[:, 1], qs)) if len(reps)
                                  else ((np.nan, np.nan), (np.nan, np.nan)))
    out.update(estimable=True, amplitude_1Hz=A, amplitude_1Hz_lo=float(a_lo), amplitude_1Hz_hi=float(a_hi),
               exponent=alpha, exponent_lo=float(e_lo), exponent_hi=float(e_hi), white=C)
    return out


def spectrum(offsets: pd.DataFrame, *, block: int | None = None, frequencies: int = 16, bootstrap: int = 200,
             seed: int | None = 0, level: float = 0.95) -> dict[str, Any]:
    """The device's flux-noise spectrum from per-call residual offsets (module docstring).

    Args:
        offsets: :func:`call_offsets`.
        block: calls per block (default: the number of distinct nominal h values, one h cycle; one
            call when the run order was shuffled, ``offsets.attrs["shuffled"]`` of :func:`call_offsets`).
        frequencies: log-spaced frequencies of the periodogram.
        bootstrap: resamples of the qubits for the intervals.
        seed: seed of the resamples.
        level: confidence level.

    Returns:
        ``estimable`` (bool), ``reason`` (when not), ``frequency`` (Hz) and ``power`` (mean
        periodogram, h²/Hz), ``amplitude_1Hz`` (h/√Hz) and ``exponent`` with ``_lo``/``_hi``,
        ``white`` (the fitted floor, h²/Hz), ``calls``, ``blocks``, ``block_calls``, ``qubits``,
        ``span_s``.
    """
    sums, _, o = _frame_sums(offsets)
    out = sums.plan(block, bool(offsets.attrs.get("shuffled", False)))
    sums.second(o)
    return _spectrum_of(sums, out, frequencies=frequencies, bootstrap=bootstrap, seed=seed, level=level)


def drift_summary(data: Dataset, fits: FitTable, *, fdr: float = 0.01, bootstrap: int = 200,
                  seed: int | None = 0) -> dict[str, Any]:
    """Per-qubit trends and the device spectrum of one run: ``{"trends", "spectrum", "drifting"}``.

    The same numbers as :func:`trends` and :func:`spectrum` of :func:`call_offsets`, with the offsets
    computed batch by batch as the counts stream by, twice: never a table of every (call, qubit).
    """
    off, times, rows = _dataset_offsets(data, fits)
    sums = _DriftSums(len(off.qubits), times, off.fields)
    for o in rows():
        sums.first(o)
    out = sums.plan(None, _shuffled(data))
    for o in rows():
        sums.second(o)
    tr = _trend_table(sums, off.qubits, fits, fdr, 0.95)
    return {"trends": tr, "spectrum": _spectrum_of(sums, out, bootstrap=bootstrap, seed=seed),
            "drifting": [int(q) for q in tr.index[tr["drifts"].fillna(False).astype(bool)]]}


def plot_spectrum(spec: dict[str, Any], ax=None):
    """The mean periodogram of per-call offsets with the fitted ``A² f^−α + C`` (log-log); returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    if "frequency" not in spec:
        ax.text(0.5, 0.5, spec.get("reason", "no spectrum"), ha="center", va="center", transform=ax.transAxes, wrap=True)
        return ax
    f, S = spec["frequency"], spec["power"]
    ax.loglog(f, S, "o", ms=3, label="mean periodogram")
    if spec.get("estimable"):
        A, a, C = spec["amplitude_1Hz"], spec["exponent"], spec["white"]
        ax.loglog(f, A**2 * f ** (-a) + C, "-", label=f"A(1 Hz) = {A:.2g} h/√Hz, α = {a:.2f}")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("S (h²/Hz)")
    ax.legend(fontsize=8)
    return ax

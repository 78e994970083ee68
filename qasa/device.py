r"""Device-level statistics of per-qubit assessments. Everything here returns data; nothing draws.

Distributions and outliers
    Robust summaries (median, MAD, quartiles) of each fitted parameter over good qubits; a qubit is
    an outlier in a parameter when its robust z-score ``0.6745 (x − median) / MAD`` exceeds 3.5 in
    absolute value (Iglewicz & Hoaglin). :func:`rank_qubits` orders qubits from worst to best and
    :func:`exclusion_list` gives the qubits to leave out of embeddings.

Reliability: how much of a parameter's spread is the device, not the fit
    Each fitted value is the truth plus estimation error, ``θ̂_i = θ_i + e_i`` with
    ``Cov(e_i) ≈ Σ̂_i`` (the fit's covariance: ``<p>_stderr`` and ``cov_<a>_<b>`` columns of
    :class:`~qasa.fitting.FitTable`). Across qubits, by the method of moments (errors in variables)::

        Cov_true = Cov(θ̂) − mean_i Σ̂_i          reliability_p = Cov_true[p, p] / Var(θ̂_p)

    The reliability is the share of the across-qubit variance of a parameter that is not
    estimation noise (1: a map of θ̂ is a map of the device; ≤ 0: the spread is all noise).
    Qubits whose covariance entry is not finite (a parameter on its bound) do not enter the mean
    of Σ̂ for that entry. Rule (:data:`RELIABILITY_MIN`): a parameter is *identified well enough to
    map* when its reliability is at least 0.5; below, its maps, correlations and spatial
    statistics describe mostly the fit's noise and are not reported as device findings.
    The moment estimate needs trustworthy standard errors. Near a bound they are not: a Wald
    error grows like 1/η̂ as η̂ → 0, so a few qubits with tiny η̂ can dominate mean Σ̂ (measured on
    one draw of 400 qubits at 10⁶ reads per h: 5 qubits carried 94 % of Σ se² of η and the moment
    reliability came out −0.56 where the truth is 0.89). :func:`split_half` needs no standard
    error: it fits two independent halves of the calls (whole calls: per-call field offsets must not
    repeat between the halves) and divides their covariance by the spread of the whole-data
    estimates, and is the estimate to use for η (split halves of the reads with Spearman–Brown, before
    the calls were split, against the truth at βη ≈ 0.1 on the reference h grid, 300 qubits: 0.03 vs
    0.11 at 4 000 reads per h, 0.52 vs 0.39 at 10⁵, 0.90 vs 0.82 at 10⁶;
    ``docs/figures_device_statistics.py``; with calls split under σ_call = 0.01 at 10 000 reads per h:
    −0.09 from the truth on average over 10 devices). On Linux with a spare core, when no other thread of the
    process runs, the two halves are fitted at the same time, one in a forked child process that dies
    with its parent (the result is the same; ``QASA_WORKERS=1`` turns it off; if the child fails or
    hangs, its half is fitted in the parent).

Correlations between parameters
    Raw Pearson and Spearman coefficients of the fitted values with 95% confidence intervals from
    Fisher's z transform (standard error ``1/√(n−3)``, and ``√(1.06/(n−3))`` for Spearman, Fieller
    et al. 1957). They mix in the estimation covariance: one qubit's β̂ and η̂ are correlated
    through the likelihood even when the true β and η are independent. The *corrected*
    correlation (:func:`corrected_correlations`, from the fits' covariances; :func:`split_half` gives
    the same quantity from two halves of the calls, which the report uses) is
    ``Cov_true[a, b] / √(Cov_true[a, a] Cov_true[b, b])`` (errors-in-variables),
    with a percentile bootstrap interval over qubits (the whole estimate, Σ̂ included, recomputed
    on each resample). One rule, :func:`mapped` (reliability ≥ :data:`RELIABILITY_MIN`), decides
    for maps, spatial findings and correlations alike: a pair with an unmapped parameter gets no
    corrected correlation (NaN, interval [−1, 1]); a pair of mapped parameters gets one, with the
    percentile interval of the resamples where it is defined (measured, split halves, 10⁵ reads per
    h, 300 qubits: the interval covers a planted corr(β, η) of 0 on 46 and of 0.5 on 45 of 50
    devices, 0.88 and 0.90 of 60; mean estimates 0.045 and 0.523 — the halves share an estimator
    bias of η̂ that depends on β).

Spatial autocorrelation on the coupler graph
    With binary weights ``w_ij = 1`` for every working coupler of a class (or of all classes),
    ``z = x − x̄``, ``W = Σ w_ij``::

        Moran's I = (n / W) Σ_ij w_ij z_i z_j / Σ_i z_i²
        Geary's C = (n − 1) / (2W) Σ_ij w_ij (x_i − x_j)² / Σ_i z_i²

    I > E[I] = −1/(n−1) (C < 1) means neighbours are alike. p-values are two-sided permutation
    tests (values shuffled over the qubits, ``(1 + #{|T* − E| ≥ |T − E|}) / (1 + permutations)``).
    :func:`correlogram` gives Moran's I between qubits at each graph distance. Independent
    estimation noise adds to the denominators only, so it attenuates both statistics toward their
    null values by the reliability r: given r, the table also holds the disattenuated
    ``morans_i_true = E + (I − E)/r`` and ``gearys_c_true = 1 + (C − 1)/r``, and
    :func:`spatial_findings` reports no structure for a parameter below the reliability rule.

Association with position
    Each parameter against each position feature of :func:`qasa.topology.qubit_table`: Spearman's
    rank correlation for ordered features (row, column, distance from centre, degree) and a
    Kruskal–Wallis test for categorical ones (orientation, index in the cell), with the
    Benjamini–Hochberg false-discovery-rate correction over all tests of the call.

Outcome correlations
    When raw reads are kept, the Pearson correlation of two qubits' outcomes in the same reads
    (gauges undone). With J = 0 and independent qubits every correlation is ~N(0, 1/reads);
    crosstalk or a global noise field shows as positive correlation, along couplers or everywhere.

Comparisons
    Two assessments of the same qubits: per-qubit differences with standard error
    ``√(se_a² + se_b²)``, z-tests and BH control; several annealing times: per-qubit weighted
    least-squares slope of a parameter against log10(annealing time) and the device trend.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import select
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.sparse import csgraph

from qasa.fitting import FitTable

__all__ = [
    "summarize", "robust_z", "outliers", "rank_qubits", "exclusion_list", "correlations",
    "morans_i", "gearys_c", "spatial_autocorrelation", "correlogram", "position_association",
    "benjamini_hochberg", "outcome_correlations", "compare_fits", "annealing_time_trend",
    "spatial_findings", "mapping_status", "RELIABILITY_MIN", "reliability", "corrected_correlations", "identification_findings", "split_half", "point_fit", "mapped", "call_halves", "half_calls", "call_units",
]

OUTLIER_Z = 3.5

#: The mapping rule: a parameter whose reliability (share of its across-qubit variance that is not
#: estimation noise) is below this is not identified well enough to map, correlate or test spatially.
RELIABILITY_MIN = 0.5


def _good(fits: FitTable) -> pd.DataFrame:
    return fits.table[fits.table["quality"] == "good"].set_index("qubit")


def summarize(fits: FitTable, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Robust summaries of each parameter over good qubits (one row per parameter)."""
    good = _good(fits)
    rows = []
    for p in params or fits.model.params:
        v = good[p].to_numpy(float)
        v = v[np.isfinite(v)]
        med = np.median(v) if v.size else np.nan
        rows.append({"param": p, "n": int(v.size), "median": med,
                     "mad": float(np.median(np.abs(v - med))) if v.size else np.nan,
                     "q05": np.quantile(v, 0.05) if v.size else np.nan, "q25": np.quantile(v, 0.25) if v.size else np.nan,
                     "q75": np.quantile(v, 0.75) if v.size else np.nan, "q95": np.quantile(v, 0.95) if v.size else np.nan,
                     "mean": v.mean() if v.size else np.nan, "std": v.std(ddof=1) if v.size > 1 else np.nan})
    return pd.DataFrame(rows).set_index("param")


def robust_z(values: pd.Series) -> pd.Series:
    """0.6745 (x − median) / MAD (NaN where the MAD is 0 or the value missing)."""
    v = values.astype(float)
    med = np.nanmedian(v)
    mad = np.nanmedian(np.abs(v - med))
    if not mad > 0:
        return pd.Series(np.nan, index=values.index)
    return 0.6745 * (v - med) / mad


def outliers(fits: FitTable, params: Sequence[str] | None = None, threshold: float = OUTLIER_Z) -> pd.DataFrame:
    """Robust z-scores of every good qubit and parameter, with ``outlier`` and ``outlier_in`` columns."""
    good = _good(fits)
    params = list(params or fits.model.params)
    z = pd.DataFrame({f"z_{p}": robust_z(good[p]) for p in params})
    flags = z.abs() > threshold
    z["outlier"] = flags.any(axis=1)
    z["outlier_in"] = [", ".join(p for p, f in zip(params, row) if f) for row in flags.to_numpy()]
    return z


def rank_qubits(fits: FitTable, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Qubits from worst to best: failed, then bad, then good ordered by their largest |robust z|.

    Columns: ``quality``, ``reason``, ``score`` (largest |z|; inf for failed/bad), ``rank`` (1 = worst).
    """
    t = fits.table.set_index("qubit")
    z = outliers(fits, params)
    zcols = [c for c in z.columns if c.startswith("z_")]
    score = z[zcols].abs().max(axis=1).reindex(t.index)
    order_key = t["quality"].map({"failed": 0, "bad": 1, "good": 2})
    out = pd.DataFrame({"quality": t["quality"], "reason": t["reason"],
                        "score": score.where(t["quality"] == "good", np.inf)})
    out["_k"] = order_key
    out = out.sort_values(["_k", "score"], ascending=[True, False]).drop(columns="_k")
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def exclusion_list(fits: FitTable, params: Sequence[str] | None = None, threshold: float = OUTLIER_Z) -> list[int]:
    """Qubits to leave out of embeddings: failed, bad, and outliers (sorted qubit labels).

    Use it with the sampler's graph, e.g. ``G.remove_nodes_from(exclusion_list(fits))`` before
    ``minorminer.find_embedding``.
    """
    t = fits.table.set_index("qubit")
    z = outliers(fits, params, threshold)
    bad = set(t.index[t["quality"] != "good"]) | set(z.index[z["outlier"]])
    return sorted(int(q) for q in bad)


def _fisher_ci(r: float, se: float, level: float = 0.95) -> tuple[float, float]:
    q = stats.norm.ppf(0.5 + level / 2)
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return float(np.tanh(z - q * se)), float(np.tanh(z + q * se))


def _estimates(fits: FitTable, params: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Good qubits with every parameter finite: ``(qubits, θ̂ (n, k), Σ̂ (n, k, k))`` (NaN where unknown)."""
    good = _good(fits)
    X = good[list(params)].to_numpy(float)
    keep = np.isfinite(X).all(1)
    good, X = good[keep], X[keep]
    k = len(params)
    S = np.full((len(good), k, k), np.nan)
    for i, a in enumerate(params):
        if f"{a}_stderr" in good:
            S[:, i, i] = good[f"{a}_stderr"].to_numpy(float) ** 2
        for j in range(i + 1, k):
            for name in (f"cov_{a}_{params[j]}", f"cov_{params[j]}_{a}"):
                if name in good:
                    S[:, i, j] = S[:, j, i] = good[name].to_numpy(float)
                    break
    return good.index.to_numpy(), X, S


@functools.lru_cache(maxsize=4)
def _resample_weights(n: int, bootstrap: int, seed: int | None) -> np.ndarray:
    """Row 0: equal weights (the estimate); rows 1..B: multinomial bootstrap weights, each summing to 1.

    Drawn once per (n, B, seed) — a report's statistics resample the same qubits — and read-only.
    """
    rng = np.random.default_rng(seed)
    W = np.ones((1 + bootstrap, n))
    if bootstrap:
        W[1:] = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap)
    W /= n
    W.flags.writeable = False
    return W


def _true_covariance(X: np.ndarray, S: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per weight row: observed covariance C, mean estimation covariance Σ̄ and C − Σ̄ (B, k, k)."""
    n, k = X.shape
    mu = W @ X
    C = (W @ np.einsum("ni,nj->nij", X, X).reshape(n, k * k)).reshape(-1, k, k) - np.einsum("bi,bj->bij", mu, mu)
    C *= n / (n - 1)
    finite = np.isfinite(S).reshape(n, k * k)
    with np.errstate(invalid="ignore", divide="ignore"):
        Sbar = ((W @ np.where(finite, S.reshape(n, k * k), 0.0)) / (W @ finite)).reshape(-1, k, k)
    return C, Sbar, C - Sbar


def reliability(fits: FitTable, params: Sequence[str] | None = None, *, bootstrap: int = 999,
                seed: int | None = 0, level: float = 0.95, data=None) -> pd.DataFrame:
    """Share of each parameter's across-qubit variance that is not estimation noise (module docstring).

    Args:
        fits: per-qubit fits with ``<p>_stderr`` columns (good qubits used).
        params: parameters (default: the model's).
        bootstrap: resamples of the qubits for the interval (0: none).
        seed: seed of the resamples.
        level: confidence level.
        data: the counts the fits were made from (Dataset or Response). When given, the
            reliability, its interval, ``identified`` and ``verdict`` come from :func:`split_half`
            (no standard errors needed; robust near bounds), ``var_true``/``var_noise``/``sd_true``
            follow from it, and the moment estimate is kept as ``reliability_moment``; a
            :class:`~qasa.dataset.Dataset` is split by calls (:func:`split_half`). The split-half
            corrected correlations are kept in ``attrs["correlations"]`` (read by
            :func:`correlations`).

    Returns:
        One row per parameter (index ``param``): ``qubits``, ``qubits_with_stderr``,
        ``var_observed``, ``var_noise`` (mean squared standard error), ``var_true``, ``sd_true``,
        ``reliability`` with ``reliability_lo``/``reliability_hi``, ``identified``
        (reliability ≥ :data:`RELIABILITY_MIN`), ``method`` and ``verdict`` (a sentence).
    """
    out = _moment_reliability(fits, params, bootstrap=bootstrap, seed=seed, level=level)
    out["method"] = "moments"
    if data is None or "reliability" not in out:
        return out
    both = split_half(data, fits.model.name, seed=seed, bootstrap=bootstrap, level=level, fits=fits)
    half = both["reliability"]
    common = out.index.intersection(half.index)
    out["reliability_moment"] = out["reliability"]
    for col in ("reliability", "reliability_lo", "reliability_hi", "identified", "verdict", "split"):
        out.loc[common, col] = half.loc[common, col]
    out.loc[common, "method"] = "split-half"
    r = out.loc[common, "reliability"].astype(float)
    out.loc[common, "var_true"] = r * out.loc[common, "var_observed"]
    out.loc[common, "var_noise"] = (1 - r) * out.loc[common, "var_observed"]
    out.loc[common, "sd_true"] = np.sqrt(np.maximum(out.loc[common, "var_true"].astype(float), 0.0))
    out["identified"] = out["identified"].astype(bool)
    out.attrs["correlations"] = both["correlations"]
    return out


def _moment_reliability(fits: FitTable, params: Sequence[str] | None, *, bootstrap: int, seed: int | None,
                        level: float) -> pd.DataFrame:
    """The method-of-moments reliability (standard errors of the fits); see :func:`reliability`."""
    params = list(params or fits.model.params)
    _, X, S = _estimates(fits, params)
    n = len(X)
    rows = []
    if n >= 3:
        W = _resample_weights(n, bootstrap, seed)
        C, Sbar, T = _true_covariance(X, S, W)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.einsum("bii->bi", T) / np.einsum("bii->bi", C)
    for j, p in enumerate(params):
        if n < 3:
            rows.append({"param": p, "qubits": n})
            continue
        r = float(rel[0, j])
        lo = hi = np.nan
        if bootstrap and np.isfinite(rel[1:, j]).any():
            lo, hi = np.nanquantile(rel[1:, j], [0.5 - level / 2, 0.5 + level / 2])
        var_true = float(T[0, j, j])
        rows.append({"param": p, "qubits": n, "qubits_with_stderr": int(np.isfinite(S[:, j, j]).sum()),
                     "var_observed": float(C[0, j, j]), "var_noise": float(Sbar[0, j, j]),
                     "var_true": var_true, "sd_true": float(np.sqrt(var_true)) if var_true > 0 else 0.0 if np.isfinite(var_true) else np.nan,
                     "reliability": r, "reliability_lo": float(lo), "reliability_hi": float(hi),
                     "identified": mapped(r, lo, hi), "status": mapping_status(r, lo, hi)})
    out = pd.DataFrame(rows).set_index("param")
    out["verdict"] = [_verdict(p, row) for p, row in out.iterrows()]
    return out


def _verdict(param: str, row: pd.Series) -> str:
    r = row.get("reliability", np.nan)
    if not np.isfinite(r):
        return f"{param}: reliability unknown (no standard errors or fewer than 3 good qubits)."
    ci = (f" (95% CI {row['reliability_lo']:.2f} to {row['reliability_hi']:.2f})"
          if np.isfinite(row.get("reliability_lo", np.nan)) else "")
    noise = min(max(1 - r, 0.0), 1.0)
    status = row.get("status") if isinstance(row.get("status"), str) else mapping_status(
        r, row.get("reliability_lo"), row.get("reliability_hi"))
    if status == "borderline":
        return (f"{param}: reliability {r:.2f}{ci}, borderline: the interval straddles the mapping rule "
                f"({RELIABILITY_MIN:g}), so these data cannot tell whether its spread across qubits is device structure; "
                "not mapped (more reads per h would decide).")
    if status == "mapped":
        return (f"{param}: reliability {r:.2f}{ci}; {100 * noise:.0f}% of its spread across qubits is estimation "
                f"noise: identified well enough to map.")
    excess = " (the fits' standard errors exceed the observed spread)" if r < 0 else ""
    return (f"{param}: reliability {r:.2f}{ci}; {100 * noise:.0f}% of its spread across qubits is estimation noise"
            f"{excess}: not identified well enough to map (rule: reliability ≥ {RELIABILITY_MIN:g}); its map, correlations "
            "and spatial statistics are not device findings.")


def point_fit(data, model: str = "qasa") -> FitTable:
    """:func:`qasa.fitting.fit` for point estimates and Wald covariances only: profile-likelihood
    intervals are skipped — device statistics here do not read them, and they cost more than the
    fit."""
    from qasa.fitting import fit

    return fit(data, model, intervals=False)


def _spare_core() -> bool:
    """A forked child may run beside this process: Linux, this the only Python thread, more than one
    usable core, not switched off by ``QASA_WORKERS=1``.

    Only one thread: OpenBLAS's pre-fork handler joins its worker threads, and blocks for ever while
    another thread is inside a numpy/BLAS call (a tester's hang, 5 of 8 attempts with a busy thread)."""
    if sys.platform != "linux" or os.environ.get("QASA_WORKERS", "").strip() == "1":
        return False
    if threading.active_count() > 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):  # pragma: no cover
        return (os.cpu_count() or 1) > 1


def _die_with_parent(parent: int) -> None:
    """In a forked child: be killed when the parent dies (Linux ``PR_SET_PDEATHSIG``), so a killed
    ``qasa`` leaves no orphan computing on; exits at once if the parent is already gone."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


class _Concurrently:
    """``fn(*args)`` started in a forked child when a core is spare (see :func:`_spare_core`).

    :meth:`result` waits for it; the result comes back pickled through a pipe, and if the child fails,
    or sends nothing within the timeout (then it is killed), or no core is spare, ``fn`` runs in this
    process instead, so the result never depends on the child. :meth:`cancel` kills and reaps the child
    (the caller was interrupted: a child left blocked on the pipe would hold its memory).
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args, self.pid, self.fd = fn, args, None, None
        if not _spare_core():
            return
        sys.stdout.flush(), sys.stderr.flush()
        rfd, wfd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:                               # the child: compute, send, leave without cleanup
            code = 1
            try:
                _die_with_parent(parent)
                os.close(rfd)
                data = pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(wfd, "wb") as f:
                    f.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(wfd)
        self.pid, self.fd = pid, rfd

    def result(self, timeout: float | None = None) -> Any:
        """The value of ``fn(*args)``, from the child if it delivers within ``timeout`` seconds."""
        if self.pid is None:
            return self.fn(*self.args)
        chunks, end = [], None if timeout is None else time.monotonic() + timeout
        with os.fdopen(self.fd, "rb", buffering=0) as f:
            self.fd = None
            while True:
                wait = None if end is None else max(end - time.monotonic(), 0.0)
                if not select.select([f], [], [], wait)[0]:          # no word from the child in time
                    os.kill(self.pid, signal.SIGKILL)
                    break
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if status == 0 and chunks:
            return pickle.loads(b"".join(chunks))
        return self.fn(*self.args)

    def cancel(self) -> None:
        """Kill and reap the child, close the pipe (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None


def call_units(data) -> tuple[pd.Index, list[list[list[int]]], np.ndarray] | None:
    """The calls of a dataset as exchangeable units grouped by field pattern (for split halves and
    call-level errors).

    Calls are grouped by their field pattern (the nominal h of a grid call; the per-qubit h vector of
    a per-qubit design), groups in order of their mean h. Inside a group, a call and its antithetic
    partner (the call whose gauge is minus its own, :class:`qasa.protocol.Protocol`) form one unit:
    together every qubit spends half its reads under each sign, so the pair does not depend on which
    gauge was drawn; calls without a partner (no gauges, an odd count) are units alone.

    The counts are streamed (:meth:`~qasa.dataset.Dataset.batches`), never held whole.

    Returns:
        ``(calls, groups, reads)``: the call ids (:attr:`~qasa.dataset.Dataset.call_index`; a call's
        number is its position there, the ``call`` code of the counts' batches); per group, its units
        as lists of call numbers; the reads of each call. ``None`` for empty counts.
    """
    names = data.call_index
    if not len(names) or not data.num_rows:
        return None
    ncalls = len(names)
    reads = data.totals()["call_reads"].astype(float)
    fast = _protocol_units(data, pd.Index(np.asarray(names, dtype=object).astype(str)), ncalls)
    if fast is not None:
        return names, fast, reads
    hkey, gkey, gneg = (np.zeros(ncalls, np.uint64) for _ in range(3))
    hsum, rows = np.zeros(ncalls), np.zeros(ncalls, np.int64)
    for b in data.batches(gauges=True):        # per call: XOR of hashes of its (qubit, h) and (qubit, gauge)
        qh = pd.util.hash_array(b.qubit)
        with np.errstate(over="ignore"):
            hh = pd.util.hash_array(b.h + 0.0) * np.uint64(0x9E3779B97F4A7C15) + qh
            g = b.gauge.astype(np.int64)
            gp = pd.util.hash_array(g) + qh * np.uint64(31)
            gm = pd.util.hash_array(-g) + qh * np.uint64(31)
        for key, v in ((hkey, hh), (gkey, gp), (gneg, gm)):
            np.bitwise_xor.at(key, b.call, v)
        np.add.at(hsum, b.call, b.h)
        np.add.at(rows, b.call, 1)
    present = np.flatnonzero(rows > 0)
    hmean = hsum / np.maximum(rows, 1)
    groups: dict[int, list[int]] = {}
    for c in present:
        groups.setdefault(int(hkey[c]), []).append(int(c))
    out: list[list[list[int]]] = []
    for calls in sorted(groups.values(), key=lambda cs: (float(np.mean(hmean[cs])), cs[0])):
        units, waiting = [], {}
        for c in calls:                                   # pair each call with its antithetic partner
            partner = waiting.get(int(gneg[c]))
            if partner:
                units.append([partner.pop(0), c])
            else:
                waiting.setdefault(int(gkey[c]), []).append(c)
        units += [[c] for rest in waiting.values() for c in rest]
        out.append(units)
    return names, out, reads


def _protocol_units(data, names: pd.Index, ncalls: int) -> list[list[list[int]]] | None:
    """:func:`call_units` from the calls table of a protocol run (O(calls), no pass over the counts).

    A protocol's call ``g{gauge}-h{h_index}`` has the field pattern of its ``h_index`` (grid design)
    or of its ``(h_index, gauge // 2)`` (per-qubit designs draw a fresh order per antithetic pair), and
    gauges ``2k`` and ``2k + 1`` of one field pattern are antithetic (:meth:`qasa.protocol.Protocol.calls`)
    when spin reversal is on. ``None`` when the table or the protocol does not say so for every call.
    """
    proto = data.metadata.get("protocol") if isinstance(data.metadata, dict) else None
    calls = data.calls
    if not isinstance(proto, dict) or not {"call_id", "h_index", "gauge"} <= set(calls.columns):
        return None
    pos = names.get_indexer(calls["call_id"].astype(str))
    keep = pos >= 0
    if int(keep.sum()) != ncalls or len(set(pos[keep])) != ncalls:
        return None
    hidx = pd.to_numeric(calls["h_index"], errors="coerce").to_numpy(float)[keep]
    gauge = pd.to_numeric(calls["gauge"], errors="coerce").to_numpy(float)[keep]
    h = pd.to_numeric(calls["h"], errors="coerce").to_numpy(float)[keep] if "h" in calls else np.full(len(hidx), np.nan)
    if not (np.isfinite(hidx).all() and np.isfinite(gauge).all()):
        return None
    pos, hidx, gauge = pos[keep], hidx.astype(np.int64), gauge.astype(np.int64)
    per_qubit = proto.get("design", "grid") != "grid" or not np.isfinite(h).all()
    paired = bool(proto.get("spin_reversal", True))
    key = np.stack([hidx, gauge // 2 if per_qubit else np.zeros_like(hidx)], 1)
    groups: dict[tuple[int, int], dict[int, list[int]]] = {}
    for (hi, gp), g, c in zip(map(tuple, key), gauge, pos):
        unit = g // 2 if paired else g
        groups.setdefault((int(hi), int(gp)), {}).setdefault(int(unit), []).append(int(c))
    order = sorted(groups, key=lambda k: (k[0] if per_qubit else float(np.mean(h[hidx == k[0]])), k[1]))
    return [[sorted(u) for _, u in sorted(groups[k].items())] for k in order]


def half_calls(data, seed: int | None = 0) -> np.ndarray | None:
    """Split the calls of a dataset into two halves balanced over h and gauge (for :func:`split_half`).

    The units of :func:`call_units` (antithetic gauge pairs kept whole) of each field pattern go
    alternately to the halves in a seeded order, each group starting with the half that has fewer
    reads so far; groups are taken in order of h, so a protocol with one unit per h value gives the
    halves alternate h values.

    Args:
        data: a :class:`~qasa.dataset.Dataset`.
        seed: seed of the order of units inside each group.

    Returns:
        A boolean array over the calls (:attr:`~qasa.dataset.Dataset.call_index`): ``True`` for the
        first half; ``None`` when the dataset has fewer than two units (no split by calls exists).
    """
    units = call_units(data)
    if units is None:
        return None
    _, groups, reads = units
    if sum(len(u) for u in groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    half = np.zeros(len(reads), bool)
    total = [0.0, 0.0]
    start = int(rng.integers(2))
    for group in groups:
        start = int(total[1] < total[0]) if total[0] != total[1] else 1 - start     # ties: alternate
        side = start
        for i in rng.permutation(len(group)):
            half[group[i]] = side == 0
            total[side] += float(reads[group[i]].sum())
            side = 1 - side
    return half


def call_halves(data, seed: int | None = 0) -> np.ndarray | None:
    """:func:`half_calls` over the rows of ``data.counts`` (the whole table: for small datasets):
    ``True`` for the rows of the first half's calls; ``None`` when no split by calls exists."""
    half = half_calls(data, seed)
    return None if half is None else half[data.counts["call_id"].cat.codes.to_numpy()]


def split_half(data, model: str = "qasa", *, seed: int | None = 0, bootstrap: int = 499,
               level: float = 0.95, fits: FitTable | None = None) -> dict[str, pd.DataFrame]:
    """Reliability and corrected correlations from two independent halves of the data (model-free).

    A dataset's *calls* are split in two (:func:`call_halves`: disjoint calls, balanced over h and
    gauge). Each call is one programming of the device, and its reads share that programming's
    field offset and the flux noise of its moment (DESIGN.md §7); with whole calls in each half, the
    halves' estimation errors are independent even then. (Splitting the reads *within* calls would
    give both halves the same per-call offsets: that shared noise would repeat between the halves and
    count as device spread — measured: η reliability 0.55 against 0.12 from the truth at
    σ_call = 0.01.) A :class:`~qasa.dataset.Response` has no calls: every (qubit, h) count is then
    split by drawing half of its reads without replacement (hypergeometric thinning: exact only for
    reads that are independent given the qubit's truth), and so is a dataset of a single call.

    The model is fitted to each half, and over the qubits good in both halves and in the fit of all
    the data ``θ̂``::

        K = ½ [Cov(θ̂_A, θ̂_B) + Cov(θ̂_B, θ̂_A)]      (estimation errors of the halves are independent)
        reliability_p = K_pp / Var θ̂_p,   half_r_p = K_pp / √(Var θ̂_A,p Var θ̂_B,p)
        corrected_ab = K_ab / √(K_aa K_bb)

    ``K_pp`` estimates the variance of what repeats between independent data (the device), and
    ``Var θ̂_p`` is the observed spread of the estimates being mapped, so their ratio is the
    reliability of those estimates directly. (Spearman–Brown, ``2 half_r / (1 + half_r)``, instead
    assumes the halves' error variance is twice the whole data's; an estimator whose bias grows as
    data shrink — η̂ near its bound — breaks that, and it read η's reliability ~0.1 above the truth
    at σ_call = 0.01, 10 000 reads per h.)

    No standard error enters the reliability (the halves' own errors, from the expected information,
    only decide which qubits pass the quality rule), so this stays valid where Wald errors fail — near a bound (η̂ = 0),
    where one qubit with a tiny η̂ can carry an enormous Wald error and make the moment estimate of
    :func:`reliability` meaningless. It measures the share of the spread of the estimates that
    repeats between independent data, i.e. that is the device — or a bias of the estimator that
    both halves share (e.g. one that depends on each qubit's gauge pattern), which it cannot tell
    from the device; with few qubits its point estimate is noisy (read the interval). Intervals:
    percentile bootstrap over qubits.

    Corrected correlations take ``K`` of the halves with their shared O(1/n) estimator bias removed
    (half-sample jackknife, :func:`_jackknifed`): η̂'s bias depends on β, and repeating in both halves
    it read as a correlation of the device (60 devices, 10⁵ reads per h, planted 0 and 0.5: coverage
    0.88 and 0.88 → 0.92 and 0.93). The reliabilities keep the plain ``K``. A corrected correlation is defined where both parameters are
    mapped (:func:`mapped`); resamples in which a true variance is not positive are left out of its
    interval (with both parameters mapped they are rare), and the correlation of a pair with an
    unmapped parameter is NaN with interval [−1, 1].

    Args:
        data: a :class:`~qasa.dataset.Dataset` (split by calls) or :class:`~qasa.dataset.Response`
            (split by reads).
        model: model fitted to each half.
        seed: seed of the split and of the bootstrap.
        bootstrap: resamples of the qubits.
        level: confidence level.
        fits: the fit of all the data (refitted when ``None`` or of another model).

    Returns:
        ``{"reliability": ..., "correlations": ...}``: the first indexed by ``param`` with
        ``qubits``, ``half_r``, ``reliability``, ``reliability_lo``, ``reliability_hi``,
        ``identified``, ``split`` (``"calls"`` or ``"reads"``) and ``verdict`` (the columns of
        :func:`reliability` that :func:`identification_findings` reads); the second with ``a``,
        ``b``, ``n``, ``corrected``, ``corrected_lo``, ``corrected_hi``, ``identified``,
        ``bias_corrected``.
    """
    from qasa.dataset import Dataset, Response
    from qasa.fitting import fit

    # each half from the model's own starts: started from the whole-data estimate, both halves stay
    # near it along flat directions and their errors correlate (measured: β's split-half reliability
    # 0.31 against 0.12 from cold starts on 3-cell devices with 1 000 reads per h, truth ≈ 0.02)
    def half_fit(d):
        ft = fit(d, model, intervals=False, information="expected")
        return ft.table, ft.model.name, ft.meta

    rng = np.random.default_rng(seed)
    in_a = half_calls(data, seed) if isinstance(data, Dataset) else None
    if in_a is not None:          # each half's response summed from its calls' rows, streamed in one sweep
        split = "calls"
        da, db = data.responses([data.call_index[in_a], data.call_index[~in_a]])
    else:
        split = "reads"
        r = data.response() if isinstance(data, Dataset) else data
        nd, nt = r.n_down.astype(np.int64), r.n_total.astype(np.int64)
        half = nt // 2
        nd_a = rng.hypergeometric(nd, nt - nd, half) if nt.size else nd
        da, db = Response(r.qubits, r.h, nd_a, half), Response(r.qubits, r.h, nd - nd_a, nt - half)
    other = _Concurrently(half_fit, da)
    try:
        t0 = time.monotonic()
        fb = FitTable(*half_fit(db))
        fa = FitTable(*other.result(10.0 + 5.0 * (time.monotonic() - t0)))    # the other half's work, with room
    finally:
        other.cancel()
    params = list(fa.model.params)
    if fits is None or list(fits.model.params) != params:
        fits = FitTable(*half_fit(data))
    return _half_agreement(fa, fb, fits, params, split, seed=seed, bootstrap=bootstrap, level=level)


def _half_agreement(fa: FitTable, fb: FitTable, fits: FitTable, params: list[str], split: str, *,
                    seed: int | None, bootstrap: int, level: float) -> dict[str, pd.DataFrame]:
    """:func:`split_half`'s statistics from the fits of the two halves and of all the data."""
    ga, gb, gf = _good(fa)[params], _good(fb)[params], _good(fits)[params]
    common = ga.index.intersection(gb.index).intersection(gf.index)
    A, B, F = ga.loc[common].to_numpy(float), gb.loc[common].to_numpy(float), gf.loc[common].to_numpy(float)
    keep = np.isfinite(A).all(1) & np.isfinite(B).all(1) & np.isfinite(F).all(1)
    A, B, F = A[keep], B[keep], F[keep]
    n, k = A.shape
    rel_rows, corr_rows = [], []
    q = [0.5 - level / 2, 0.5 + level / 2]
    if n >= 4:
        W = _resample_weights(n, bootstrap, None if seed is None else seed + 1)
        mA, mB = W @ A, W @ B
        K = _cross_covariance(W, A, B)
        vA = W @ (A * A) - mA**2
        vB = W @ (B * B) - mB**2
        vF = W @ (F * F) - (W @ F) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            half_r = np.einsum("bii->bi", K) / np.sqrt(vA * vB)
            rel = np.einsum("bii->bi", K) / vF
        dK = np.einsum("bii->bi", K)
        for j, p in enumerate(params):
            lo, hi = (np.nanquantile(rel[1:, j], q) if bootstrap and np.isfinite(rel[1:, j]).any()
                      else (np.nan, np.nan))
            rel_rows.append({"param": p, "qubits": n, "half_r": float(half_r[0, j]), "reliability": float(rel[0, j]),
                             "reliability_lo": float(lo), "reliability_hi": float(hi),
                             "identified": mapped(rel[0, j], lo, hi), "status": mapping_status(rel[0, j], lo, hi),
                             "method": "split-half", "split": split})
        ident = [row["identified"] for row in rel_rows[-k:]]
        Kj, jack = _jackknifed(W, A, B, F, K)
        for i in range(k):
            for j in range(i + 1, k):
                Kp = Kj if jack[i] and jack[j] else K
                dK = np.einsum("bii->bi", Kp)
                with np.errstate(invalid="ignore", divide="ignore"):
                    c = Kp[:, i, j] / np.sqrt(dK[:, i] * dK[:, j])
                defined = (dK[:, i] > 0) & (dK[:, j] > 0) & np.isfinite(c)
                c = np.clip(c, -1.0, 1.0)
                both = bool(ident[i] and ident[j])
                lo, hi = _correlation_interval(c[1:], defined[1:], both, q) if bootstrap else (np.nan, np.nan)
                corr_rows.append({"a": params[i], "b": params[j], "n": n,
                                  "corrected": float(c[0]) if defined[0] and both else np.nan,
                                  "corrected_lo": lo, "corrected_hi": hi, "identified": both,
                                  "bias_corrected": bool(jack[i] and jack[j])})
    else:
        rel_rows = [{"param": p, "qubits": n, "half_r": np.nan, "reliability": np.nan, "reliability_lo": np.nan,
                     "reliability_hi": np.nan, "identified": False, "status": "not mapped", "method": "split-half",
                     "split": split}
                    for p in params]
    rel_df = pd.DataFrame(rel_rows).set_index("param")
    rel_df["verdict"] = [_verdict(p, row) for p, row in rel_df.iterrows()]
    return {"reliability": rel_df,
            "correlations": pd.DataFrame(corr_rows, columns=["a", "b", "n", "corrected", "corrected_lo", "corrected_hi",
                                                             "identified", "bias_corrected"])}


#: Largest shared noise the half-sample jackknife may add to a parameter's device variance, as a share of it.
JACKKNIFE_MAX_NOISE = 0.5


def _jackknifed(W: np.ndarray, A: np.ndarray, B: np.ndarray, F: np.ndarray, K: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``K`` of the halves with their shared bias removed, and per parameter whether it may be used.

    An estimator's bias of order 1/n (n the reads) is twice as large in a half as in the whole data
    and repeats in both halves, so it enters ``K`` like device spread; where it depends on another
    parameter it reads as a correlation of the device. The half-sample jackknife (Quenouille 1956)
    removes it to O(1/n²). Measured on 60 devices of 300 qubits at 10⁵ reads per h with a planted
    corr(β, η) of 0 and 0.5: mean estimate 0.048 → 0.026 and 0.524 → 0.499; on the 50 devices of
    the slow test, coverage 0.92 and 0.94. A bias the halves share is what a repeat run shows too, so
    the reliabilities (the maps' rule) keep the plain ``K``.

    ``θ̃_A = θ̂_A − 2D = 2θ̂ − θ̂_B`` (and ``θ̃_B = 2θ̂ − θ̂_A``), ``D = (θ̂_A + θ̂_B)/2 − θ̂`` (:func:`split_half`).
    Where the estimator is nearly linear, ``θ̂`` is the halves' mean up to its bias and ``D`` is that
    bias; where it is not (a parameter poorly identified, near a bound), ``D`` carries noise that
    both corrected halves share, adding up to ``4 Var D`` to ``K``. A parameter is corrected only
    when ``4 Var D_p ≤`` :data:`JACKKNIFE_MAX_NOISE` ``· K_pp`` (measured: 0.03–0.07, once 0.46, for a mapped
    η at 10⁵ reads per h; 0.8–1.3 for η at 10⁴ reads per h with σ_call = 0.01, where it is not mapped).
    """
    D = (A + B) / 2 - F
    Kj = _cross_covariance(W, A - 2 * D, B - 2 * D)
    with np.errstate(invalid="ignore", divide="ignore"):
        jack = 4 * D.var(0) <= JACKKNIFE_MAX_NOISE * np.diagonal(K[0])
    return Kj, jack


def _cross_covariance(W: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``½ [Cov(A, B) + Cov(B, A)]`` over qubits (rows), one ``(k, k)`` matrix per row of weights ``W``."""
    n, k = A.shape
    cross = (W @ np.einsum("ni,nj->nij", A, B).reshape(n, k * k)).reshape(-1, k, k) - np.einsum("bi,bj->bij", W @ A, W @ B)
    return 0.5 * (cross + cross.transpose(0, 2, 1))


def mapping_status(reliability: float | None, lo: float | None = None, hi: float | None = None) -> str:
    """``"mapped"``, ``"borderline"`` or ``"not mapped"``: the one mapping rule (see :func:`mapped`).

    With a 95 % interval ``[lo, hi]`` of the reliability: mapped when the whole interval is at or above
    :data:`RELIABILITY_MIN`, not mapped when it is wholly below, and **borderline** when it straddles the
    rule — then the data cannot tell, and the parameter is not mapped, so the verdict does not flip
    between repeat runs whose point estimates fall either side of the rule (the default assessment's β:
    0.475–0.505 over four seeds). Without a finite interval the point estimate decides.
    """
    r = float(reliability) if reliability is not None else np.nan
    if not np.isfinite(r):
        return "not mapped"
    lo = float(lo) if lo is not None else np.nan
    hi = float(hi) if hi is not None else np.nan
    if np.isfinite(lo) and np.isfinite(hi):
        if lo >= RELIABILITY_MIN:
            return "mapped"
        return "borderline" if hi >= RELIABILITY_MIN else "not mapped"
    return "mapped" if r >= RELIABILITY_MIN else "not mapped"


def mapped(reliability: float | None, lo: float | None = None, hi: float | None = None) -> bool:
    """The one mapping rule: a parameter is identified well enough to map, correlate and test spatially
    when :func:`mapping_status` says ``"mapped"`` (the maps, the corrected correlations, the spatial
    findings and the report's notes all ask this function)."""
    return mapping_status(reliability, lo, hi) == "mapped"


def _correlation_interval(c: np.ndarray, defined: np.ndarray, both_mapped: bool, q: Sequence[float]) -> tuple[float, float]:
    """Percentile interval of a corrected correlation over bootstrap resamples ``c``.

    Both parameters mapped: the quantiles of the resamples where the correlation is defined (a true
    variance that is not positive in a resample is then a rare accident of that resample, not a sign
    that a parameter is noise). Otherwise the pair is not a device finding and the interval is
    [−1, 1]."""
    if not both_mapped:
        return -1.0, 1.0
    ok = defined & np.isfinite(c)
    if ok.sum() < max(10, 0.5 * len(c)):
        return -1.0, 1.0
    lo, hi = np.quantile(c[ok], q)
    return float(lo), float(hi)


def identification_findings(rel: pd.DataFrame, reads_per_h: int | None = None) -> list[str]:
    """Sentences saying which parameters the protocol identified well enough to map (from :func:`reliability`)."""
    suffix = f" at {reads_per_h:,} reads per h".replace(",", " ") if reads_per_h else ""
    out = [v[:-1] + suffix + "." if suffix else v for v in rel["verdict"]]
    return out


def corrected_correlations(fits: FitTable, params: Sequence[str] | None = None, *, bootstrap: int = 999,
                           seed: int | None = 0, level: float = 0.95,
                           reliability: pd.DataFrame | None = None) -> pd.DataFrame:
    """Correlations between parameters across qubits with the estimation covariance removed (moments).

    Args:
        fits: per-qubit fits with standard-error and covariance columns (good qubits used).
        params: parameters (default: the model's).
        bootstrap: resamples of the qubits for the intervals.
        seed: seed of the resamples.
        level: confidence level.
        reliability: the reliability table that decides which parameters are mapped (e.g. the
            split-half one of :func:`reliability` with ``data``); default: the moment reliability.

    Returns:
        One row per pair: ``a``, ``b``, ``n``, ``raw`` (Pearson of the fitted values),
        ``noise_corr`` (the correlation of the estimation errors, mean Σ̂ normalized), ``corrected``
        (NaN unless both parameters are mapped, :func:`mapped`, and both true variances are
        positive), ``corrected_lo``, ``corrected_hi`` ([−1, 1] unless both are mapped),
        ``reliability_a``, ``reliability_b`` and ``identified`` (both mapped).
    """
    params = list(params or fits.model.params)
    _, X, S = _estimates(fits, params)
    n, k = X.shape
    if n < 4:
        return pd.DataFrame(columns=["a", "b", "n", "raw", "noise_corr", "corrected", "corrected_lo",
                                     "corrected_hi", "reliability_a", "reliability_b", "identified"])
    W = _resample_weights(n, bootstrap, seed)
    C, Sbar, T = _true_covariance(X, S, W)
    dT = np.einsum("bii->bi", T)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = dT / np.einsum("bii->bi", C)
    rel0 = {p: float(rel[0, i]) for i, p in enumerate(params)}
    ident0 = {p: mapped(v) for p, v in rel0.items()}
    if reliability is not None and "reliability" in reliability:
        rel0.update({p: float(reliability.loc[p, "reliability"]) for p in params if p in reliability.index})
        ident0.update({p: bool(reliability.loc[p, "identified"]) if "identified" in reliability else mapped(rel0[p])
                       for p in params if p in reliability.index})
    rows = []
    q = [0.5 - level / 2, 0.5 + level / 2]
    for i in range(k):
        for j in range(i + 1, k):
            with np.errstate(invalid="ignore", divide="ignore"):
                r = T[:, i, j] / np.sqrt(dT[:, i] * dT[:, j])
                raw = C[0, i, j] / np.sqrt(C[0, i, i] * C[0, j, j])
                noise = Sbar[0, i, j] / np.sqrt(Sbar[0, i, i] * Sbar[0, j, j])
            defined = (dT[:, i] > 0) & (dT[:, j] > 0) & np.isfinite(r)
            r = np.clip(r, -1.0, 1.0)
            both = ident0[params[i]] and ident0[params[j]]
            lo, hi = _correlation_interval(r[1:], defined[1:], both, q) if bootstrap else (np.nan, np.nan)
            rows.append({"a": params[i], "b": params[j], "n": n, "raw": float(raw), "noise_corr": float(noise),
                         "corrected": float(r[0]) if defined[0] and both else np.nan, "corrected_lo": lo,
                         "corrected_hi": hi, "reliability_a": rel0[params[i]], "reliability_b": rel0[params[j]],
                         "identified": both})
    return pd.DataFrame(rows)


def correlations(fits: FitTable, params: Sequence[str] | None = None, *, corrected: bool = True,
                 bootstrap: int = 999, seed: int | None = 0, reliability: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw Pearson and Spearman correlations between every pair of parameters over good qubits and,
    when the fits have standard errors, the corrected correlation of :func:`corrected_correlations`
    (columns ``corrected``, ``corrected_lo``, ``corrected_hi``, ``noise_corr``, ``reliability_a``,
    ``reliability_b``, ``identified``). Only the corrected correlation of mapped parameters
    describes the device; the raw ones include the estimation covariance.

    With ``reliability`` (:func:`reliability`), the mapping rule reads its reliabilities, and when it
    holds split-half correlations (``attrs["correlations"]``, from the counts) those are the
    ``corrected`` columns (``corrected_method`` says which): the maps and this table then come from
    the same two halves and the same rule."""
    good = _good(fits)
    params = list(params or fits.model.params)
    rows = []
    for i, a in enumerate(params):
        for b in params[i + 1:]:
            d = good[[a, b]].dropna()
            n = len(d)
            if n < 4 or d[a].nunique() < 2 or d[b].nunique() < 2:
                continue
            r, p = stats.pearsonr(d[a], d[b])
            rho, ps = stats.spearmanr(d[a], d[b])
            lo, hi = _fisher_ci(r, 1 / np.sqrt(n - 3))
            slo, shi = _fisher_ci(rho, np.sqrt(1.06 / (n - 3)))
            rows.append({"a": a, "b": b, "n": n, "pearson": r, "pearson_lo": lo, "pearson_hi": hi, "pearson_p": p,
                         "spearman": rho, "spearman_lo": slo, "spearman_hi": shi, "spearman_p": ps})
    out = pd.DataFrame(rows)
    has_se = all(f"{p}_stderr" in good for p in params)
    if corrected and len(out) and has_se:
        cc = corrected_correlations(fits, params, bootstrap=bootstrap, seed=seed,
                                    reliability=reliability).drop(columns=["n", "raw"])
        cc["corrected_method"] = "moments"
        half = reliability.attrs.get("correlations") if reliability is not None else None
        if half is not None and len(half):
            h = half.set_index(["a", "b"])
            key = list(zip(cc["a"], cc["b"]))
            present = [kk in h.index for kk in key]
            for col in ("corrected", "corrected_lo", "corrected_hi", "identified"):
                cc.loc[present, col] = [h.loc[kk, col] for kk, ok in zip(key, present) if ok]
            cc.loc[present, "corrected_method"] = "split-half"
            cc["identified"] = cc["identified"].astype(bool)
        out = out.merge(cc, on=["a", "b"], how="left")
    return out


def _prepare(values: pd.Series, edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = values.dropna().astype(float)
    index = pd.Index(v.index)
    ui = index.get_indexer(edges["u"])
    vi = index.get_indexer(edges["v"])
    keep = (ui >= 0) & (vi >= 0)
    return v.to_numpy(), ui[keep], vi[keep]


def morans_i(x: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Moran's I with binary symmetric weights on edges (u, v); ``x`` may be (n,) or (P, n)."""
    z = x - x.mean(-1, keepdims=True)
    n, W = x.shape[-1], 2.0 * len(u)
    return (n / W) * 2.0 * (z[..., u] * z[..., v]).sum(-1) / (z * z).sum(-1)


def gearys_c(x: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Geary's C with binary symmetric weights on edges (u, v); ``x`` may be (n,) or (P, n)."""
    z = x - x.mean(-1, keepdims=True)
    n, W = x.shape[-1], 2.0 * len(u)
    return (n - 1) / (2.0 * W) * 2.0 * ((x[..., u] - x[..., v]) ** 2).sum(-1) / (z * z).sum(-1)


def _permutation_p(observed: float, null: np.ndarray, centre: float) -> float:
    return float((1 + np.sum(np.abs(null - centre) >= abs(observed - centre) - 1e-12)) / (1 + len(null)))


def spatial_autocorrelation(values: pd.Series, edges: pd.DataFrame, *, permutations: int = 999,
                            seed: int | None = 0, by_class: bool = True,
                            reliability: float | None = None) -> pd.DataFrame:
    """Moran's I and Geary's C over all couplers and per coupler class, with permutation p-values.

    Args:
        values: per-qubit values indexed by qubit (NaN ignored).
        edges: :func:`qasa.topology.edge_table` (columns u, v, cls).
        permutations: shuffles of the values for the null distribution (0: statistics only, NaN p-values).
        seed: seed of the shuffles.
        by_class: also test each coupler class separately.
        reliability: the parameter's reliability (:func:`reliability`); adds the columns
            ``reliability``, ``morans_i_true`` and ``gearys_c_true`` (disattenuated, NaN when the
            reliability is not positive).

    Returns:
        One row per edge set (``all`` and each class): ``couplers``, ``qubits``, ``morans_i``,
        ``expected_i``, ``morans_p``, ``gearys_c``, ``gearys_p``.
    """
    rng = np.random.default_rng(seed)
    sets = [("all", edges)]
    if by_class:
        sets += [(c, edges[edges["cls"] == c]) for c in sorted(edges["cls"].unique())]
    prepared = []
    for name, e in sets:
        x, u, v = _prepare(values, e)
        n = len(x)
        if len(u) == 0 or n < 3 or np.ptp(x) == 0:
            continue
        # Σ over edges of z_u z_v for many permuted z at once, as a sparse product (memory-friendly)
        adj = sparse.csr_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
        deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
        prepared.append((name, x, u, v, adj, deg))
    if not prepared:
        return pd.DataFrame()
    x = prepared[0][1]                      # the same qubits in every edge set
    n = len(x)
    nulls: dict[str, list[np.ndarray]] = {name: [] for name, *_ in prepared}
    for start in range(0, permutations, 100):
        k = min(100, permutations - start)
        xp = rng.permuted(np.broadcast_to(x, (k, n)), axis=1)      # shared by every edge set
        zt = np.ascontiguousarray((xp - xp.mean(1, keepdims=True)).T)
        ss = np.einsum("ij,ij->j", zt, zt)
        crosses = {}
        for name, _, u, v, adj, deg in prepared[::-1]:             # classes first, then "all"
            if name == "all" and len(prepared) > 1 and sum(len(p[2]) for p in prepared[1:]) == len(u):
                cross = sum(crosses[p[0]] for p in prepared[1:])    # the classes partition the couplers
            else:
                cross = np.einsum("ij,ij->j", adj @ zt, zt)        # Σ_edges z_u z_v
            crosses[name] = cross
            W = 2.0 * len(u)
            i_null = (n / W) * 2.0 * cross / ss
            c_null = (n - 1) / (2.0 * W) * 2.0 * (deg @ (zt * zt) - 2.0 * cross) / ss
            nulls[name].append((i_null, c_null))
    rows = []
    for name, _, u, v, adj, deg in prepared:
        i_obs, c_obs = float(morans_i(x, u, v)), float(gearys_c(x, u, v))
        expected = -1.0 / (n - 1)
        if permutations > 0:
            null_i = np.concatenate([a for a, _ in nulls[name]])
            null_c = np.concatenate([c for _, c in nulls[name]])
            p_i, p_c = _permutation_p(i_obs, null_i, expected), _permutation_p(c_obs, null_c, 1.0)
        else:
            p_i = p_c = np.nan
        rows.append({"couplers": name, "n_couplers": int(len(u)), "qubits": n, "morans_i": i_obs,
                     "expected_i": expected, "morans_p": p_i, "gearys_c": c_obs, "gearys_p": p_c})
    out = pd.DataFrame(rows)
    if reliability is not None and len(out):
        r = float(reliability)
        ok = np.isfinite(r) and r > 0
        out["reliability"] = r
        out["morans_i_true"] = out["expected_i"] + (out["morans_i"] - out["expected_i"]) / r if ok else np.nan
        out["gearys_c_true"] = 1 + (out["gearys_c"] - 1) / r if ok else np.nan
    return out


def correlogram(values: pd.Series, edges: pd.DataFrame, max_distance: int = 6, sources: int = 400,
                seed: int | None = 0, reliability: float | None = None) -> pd.DataFrame:
    """Moran's I between qubits at each shortest-path distance 1..max_distance on the coupler graph.

    Pairs are all pairs from ``sources`` randomly chosen qubits (all qubits if fewer). With the
    parameter's ``reliability`` the table also holds ``reliability`` and the disattenuated
    ``morans_i_true = I / r`` (NaN when r is not positive; see the module docstring).
    """
    v = values.dropna().astype(float)
    src, a, b, dd = _pairs_by_distance(pd.Index(v.index), edges, max_distance, sources, seed)
    x = v.to_numpy()
    z = x - x.mean()
    rows = []
    for d in range(1, max_distance + 1):
        at = dd == d
        if not at.any():
            continue
        i_val = len(z) * np.sum(z[src[a[at]]] * z[b[at]]) / (int(at.sum()) * np.sum(z * z))
        rows.append({"distance": d, "pairs": int(at.sum()), "morans_i": float(i_val)})
    out = pd.DataFrame(rows)
    if reliability is not None and len(out):
        r = float(reliability)
        out["reliability"] = r
        out["morans_i_true"] = out["morans_i"] / r if np.isfinite(r) and r > 0 else np.nan
    return out


_PAIRS_CACHE: dict[str, tuple[np.ndarray, ...]] = {}


def _pairs_by_distance(index: pd.Index, edges: pd.DataFrame, max_distance: int, sources: int,
                       seed: int | None) -> tuple[np.ndarray, ...]:
    """``(src, a, b, d)``: the pairs (source ``src[a]``, qubit ``b``) at graph distance ``d`` ≤ max_distance.

    The shortest paths run once per (qubits, couplers, sources, seed): a report's parameters share
    them (the last result is kept, keyed by a hash of its inputs).
    """
    import hashlib

    key = hashlib.blake2b(np.ascontiguousarray(index.to_numpy(np.int64)).tobytes()
                          + np.ascontiguousarray(edges[["u", "v"]].to_numpy(np.int64)).tobytes()
                          + repr((max_distance, sources, seed)).encode(), digest_size=16).hexdigest()
    if key in _PAIRS_CACHE:
        return _PAIRS_CACHE[key]
    ui, vi = index.get_indexer(edges["u"]), index.get_indexer(edges["v"])
    keep = (ui >= 0) & (vi >= 0)
    n = len(index)
    adj = sparse.coo_matrix((np.ones(keep.sum()), (ui[keep], vi[keep])), shape=(n, n)).tocsr()
    adj = adj + adj.T
    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(n, size=min(sources, n), replace=False))
    dist = csgraph.dijkstra(adj, unweighted=True, indices=src, limit=max_distance + 0.5)
    a, b = np.nonzero((dist >= 1) & (dist <= max_distance))     # row-major, as np.nonzero(dist == d)
    _PAIRS_CACHE.clear()
    _PAIRS_CACHE[key] = out = (src, a, b, dist[a, b].astype(np.int64))
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


ORDERED_FEATURES = ("row", "col", "distance", "degree")
CATEGORICAL_FEATURES = ("orientation", "index")


def position_association(fits: FitTable, qubits: pd.DataFrame, params: Sequence[str] | None = None,
                         fdr: float = 0.05) -> pd.DataFrame:
    """Test every parameter against every position feature (see module docstring).

    Args:
        fits: per-qubit fits (good qubits used).
        qubits: :func:`qasa.topology.qubit_table` of the device.

    Returns:
        One row per (param, feature): ``test``, ``statistic``, ``p``, ``q`` (BH), ``significant``.
    """
    good = _good(fits)
    rows = []
    for p in params or fits.model.params:
        d = good[[p]].join(qubits, how="inner").dropna(subset=[p])
        if len(d) < 4:
            continue
        for f in ORDERED_FEATURES:
            if d[f].nunique() > 1:
                rho, pv = stats.spearmanr(d[p], d[f])
                rows.append({"param": p, "feature": f, "test": "spearman", "statistic": rho, "p": pv})
        for f in CATEGORICAL_FEATURES:
            groups = [g[p].to_numpy() for _, g in d.groupby(f) if len(g) > 1]
            if len(groups) > 1:
                h, pv = stats.kruskal(*groups)
                rows.append({"param": p, "feature": f, "test": "kruskal", "statistic": h, "p": pv})
    out = pd.DataFrame(rows)
    if len(out):
        out["q"] = benjamini_hochberg(out["p"])
        out["significant"] = out["q"] < fdr
    return out


def outcome_correlations(samples: np.ndarray, qubits: Sequence[int], edges: pd.DataFrame) -> dict[str, Any]:
    """Correlation of outcomes in the same reads (raw samples, gauges undone).

    Args:
        samples: (reads, qubits) of ±1 for one h value (or several calls stacked).
        qubits: qubit labels of the columns.
        edges: :func:`qasa.topology.edge_table`.

    Returns:
        ``mean_all`` (mean correlation over all pairs) with its z-score under independence, and per
        coupler class the mean neighbour correlation, its z-score and two-sided p-value.
    """
    s = np.asarray(samples, float)
    reads = s.shape[0]
    s = s - s.mean(0)
    sd = s.std(0)
    live = sd > 0
    s, q = s[:, live] / sd[live], np.asarray(qubits)[live]
    n = s.shape[1]
    total = s.sum(1)
    # mean over pairs i<j of r_ij = (Σ_t (Σ_i s_ti)² − Σ_t Σ_i s_ti²) / (2 · reads · pairs)
    pairs = n * (n - 1) / 2
    mean_all = float(((total ** 2).sum() - (s ** 2).sum()) / (2 * reads * pairs))
    out: dict[str, Any] = {"reads": reads, "qubits": int(n), "mean_all": mean_all,
                           "z_all": mean_all * np.sqrt(reads * pairs)}
    out["p_all"] = float(2 * stats.norm.sf(abs(out["z_all"])))
    index = pd.Index(q)
    for cls in sorted(edges["cls"].unique()):
        e = edges[edges["cls"] == cls]
        ui, vi = index.get_indexer(e["u"]), index.get_indexer(e["v"])
        keep = (ui >= 0) & (vi >= 0)
        if not keep.any():
            continue
        r = (s[:, ui[keep]] * s[:, vi[keep]]).mean(0)
        z = r.mean() * np.sqrt(reads * keep.sum())
        out[cls] = {"couplers": int(keep.sum()), "mean_r": float(r.mean()), "z": float(z),
                    "p": float(2 * stats.norm.sf(abs(z)))}
    return out


def compare_fits(a: FitTable, b: FitTable, params: Sequence[str] | None = None, fdr: float = 0.05) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-qubit changes from assessment ``a`` to ``b`` (good in both), with z-tests and BH control.

    Returns:
        ``(per_qubit, summary)``: columns ``<p>_a``, ``<p>_b``, ``<p>_diff``, ``<p>_se``, ``<p>_z``,
        ``<p>_q``, ``<p>_changed`` per parameter; and per parameter the median change, its
        bootstrap-free standard error (1.253 σ/√n), the number of qubits changed and a paired
        Wilcoxon p-value.
    """
    ga, gb = _good(a), _good(b)
    common = ga.index.intersection(gb.index)
    params = [p for p in (params or a.model.params) if p in b.model.params]
    per = pd.DataFrame(index=pd.Index(common, name="qubit"))
    summary: dict[str, Any] = {"qubits": int(len(common))}
    for p in params:
        da, db = ga.loc[common, p], gb.loc[common, p]
        se = np.sqrt(ga.loc[common, f"{p}_stderr"] ** 2 + gb.loc[common, f"{p}_stderr"] ** 2)
        diff = db - da
        z = diff / se
        pv = 2 * stats.norm.sf(np.abs(z))
        q = benjamini_hochberg(pv)
        per[f"{p}_a"], per[f"{p}_b"], per[f"{p}_diff"], per[f"{p}_se"] = da, db, diff, se
        per[f"{p}_z"], per[f"{p}_q"], per[f"{p}_changed"] = z, q, q < fdr
        d = diff.dropna()
        summary[p] = {"median_change": float(d.median()) if len(d) else None,
                      "median_change_se": float(1.253 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
                      "changed": int(np.nansum(q < fdr)),
                      "wilcoxon_p": float(stats.wilcoxon(d).pvalue) if len(d) > 10 and d.abs().sum() > 0 else None}
    return per, summary


def annealing_time_trend(fits_by_time: Mapping[float, FitTable], param: str = "beta") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Trend of a parameter with annealing time across assessments of the same device.

    Returns:
        ``(per_qubit, device)``: per qubit the weighted least-squares slope of ``param`` against
        log10(annealing time) with its standard error (qubits good at every time); per annealing
        time the device median and its standard error, and the median slope with a sign-test
        p-value for "no trend".
    """
    times = sorted(fits_by_time)
    goods = [_good(fits_by_time[t]) for t in times]
    common = goods[0].index
    for g in goods[1:]:
        common = common.intersection(g.index)
    x = np.log10(np.array(times, float))
    y = np.column_stack([g.loc[common, param].to_numpy(float) for g in goods])
    se = np.column_stack([g.loc[common, f"{param}_stderr"].to_numpy(float) for g in goods])
    w = 1.0 / np.where(np.isfinite(se) & (se > 0) & np.isfinite(y), se, np.inf) ** 2
    y = np.where(np.isfinite(y), y, 0.0)
    usable = (w > 0).sum(1) >= 2          # a slope needs two annealing times with a finite stderr
    with np.errstate(invalid="ignore", divide="ignore"):
        sw = w.sum(1)
        xbar = (w * x).sum(1) / sw
        ybar = (w * y).sum(1) / sw
        sxx = (w * (x - xbar[:, None]) ** 2).sum(1)
        slope = np.where(usable, (w * (x - xbar[:, None]) * (y - ybar[:, None])).sum(1) / sxx, np.nan)
        slope_se = np.where(usable, 1 / np.sqrt(sxx), np.nan)
    per = pd.DataFrame({"slope": slope, "slope_se": slope_se}, index=pd.Index(common, name="qubit"))
    levels = []
    for t, g in zip(times, goods):
        v = g[param].dropna().to_numpy(float)
        levels.append({"annealing_time": t, "median": float(np.median(v)),
                       "median_se": float(1.253 * v.std(ddof=1) / np.sqrt(len(v))), "qubits": int(len(v))})
    finite = slope[np.isfinite(slope)]
    positive = int((finite > 0).sum())
    device = {"param": param, "levels": levels,
              "median_slope_per_decade": float(np.median(finite)) if finite.size else None,
              "qubits": int(finite.size), "qubits_increasing": positive,
              "sign_test_p": float(stats.binomtest(positive, finite.size).pvalue) if finite.size else None}
    return per, device


def spatial_findings(table: pd.DataFrame, param: str, alpha: float = 0.01,
                     reliability: float | None = None, identified: bool | None = None) -> list[str]:
    """Sentences stating the significant results of :func:`spatial_autocorrelation` for ``param``.

    With ``reliability`` below :data:`RELIABILITY_MIN` (or not finite) no structure is reported: one
    sentence says the parameter is mostly estimation noise; otherwise the sentences give the
    reliability and the disattenuated Moran's I.
    """
    if reliability is not None and not (mapped(reliability) if identified is None else identified):
        return [f"{param} is not identified well enough to map (reliability {reliability:.2f}; rule "
                f"{RELIABILITY_MIN:g} over its whole 95 % interval): its spatial statistics describe mostly estimation "
                "noise and are not reported as structure."]
    out = []
    for _, r in table.iterrows():
        if r["morans_p"] < alpha:
            sign = "positively" if r["morans_i"] > r["expected_i"] else "negatively"
            where = "all couplers" if r["couplers"] == "all" else f"{r['couplers']} couplers"
            out.append(f"{param} is {sign} autocorrelated along {where}: Moran's I = {r['morans_i']:.3f} "
                       f"(expected {r['expected_i']:.4f}), p = {r['morans_p']:.3g}; "
                       f"Geary's C = {r['gearys_c']:.3f}, p = {r['gearys_p']:.3g} ({r['n_couplers']} couplers).")
            if reliability is not None:
                out[-1] = out[-1][:-1] + (f"; reliability {reliability:.2f}, disattenuated Moran's I ≈ "
                                          f"{r['expected_i'] + (r['morans_i'] - r['expected_i']) / reliability:.3f}.")
    if not out:
        out.append(f"No spatial autocorrelation of {param} at p < {alpha:g} along any coupler class.")
    return out

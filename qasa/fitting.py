r"""Maximum-likelihood fits of a response model to every qubit at once.

Likelihood
    For qubit ``i`` at field ``h_j`` with ``N_ij`` reads of which ``n_ij`` returned -1, the counts
    are binomial with ``p_ij = (1 + m(h_j; θ_i)) / 2``. The log-likelihood (up to the binomial
    coefficient, which no parameter changes) is ``ℓ_i = Σ_j n_ij log p_ij + (N_ij − n_ij) log(1 − p_ij)``,
    with ``p`` clipped to ``[1e-15, 1 − 1e-15]``.

Optimizer
    A projected Levenberg–Marquardt iteration on Fisher scoring, vectorized over rows: the score
    ``g = Σ_j (n − Np) / (p(1−p)) ∂p/∂θ`` and the expected information
    ``F = Σ_j N / (p(1−p)) ∂p/∂θ ∂p/∂θᵀ`` are arrays over (row × h); each row solves
    ``(F + λ diag F) δ = g`` with its own damping λ (÷10 on an accepted step, ×10 on a rejected one);
    parameters at a bound with the score pointing outward are held there. Every row of every start is
    one row of the same arrays, so a whole device with several starts is one batched problem.
    A row has converged when an accepted step gains less than ``tol`` nats or moves every parameter
    by less than ``step_tol`` of its conditional standard error.

Multi-start
    The QASA likelihood has a spurious optimum at η = 0 (DESIGN.md §3), so each model supplies
    several starts (:meth:`qasa.models.Model.starts`); the best log-likelihood per qubit is kept.

Uncertainty
    Standard errors are the square roots of the diagonal of the inverse *observed* information
    ``−∂²ℓ/∂θ²`` (forward differences of the analytic score), over the parameters not at a bound;
    a parameter at a bound gets a NaN standard error. ``bootstrap=B`` adds parametric-bootstrap
    standard errors (B data sets drawn from the fitted curve, each refitted).

Statistics and quality rule (:class:`QualityRule`)
    ``deviance`` = 2 (ℓ_saturated − ℓ), with ``df`` = (h values with reads) − (free parameters) and
    ``gof_pvalue`` = χ²_df survival of the deviance; ``aic = 2p − 2ℓ``, ``bic = p log N − 2ℓ`` (N the
    qubit's reads). Each qubit is

    - ``failed``: degenerate data (no reads; all reads −1 or all +1; fewer distinct h values than
      parameters; no nonzero h) or the optimizer ended non-finite or unconverged — parameters NaN;
    - ``bad``: lack of fit (``gof_pvalue < gof_alpha``, default 1e-3), or a free parameter with a
      non-finite standard error, or β's relative standard error above ``max_rel_stderr`` (0.5);
    - ``good``: otherwise. The reason column says why a qubit is not good.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from qasa.dataset import Dataset, Response, atomic_write_bytes
from qasa.models import Model, get_model

__all__ = ["fit", "compare", "FitTable", "FitResult", "QualityRule", "maximize", "loglik",
           "NESTED_PAIRS"]

_PCLIP = 1e-15


@dataclass(frozen=True)
class QualityRule:
    """Thresholds of the quality rule (see module docstring)."""

    gof_alpha: float = 1e-3
    max_rel_stderr: float = 0.5
    min_reads: int = 10


@dataclass(frozen=True)
class FitResult:
    """One qubit's fit as a plain record."""

    qubit: int
    model: str
    params: dict[str, float]
    stderr: dict[str, float]
    loglik: float
    success: bool
    message: str
    quality: str


def _m(model: Model, h: np.ndarray, theta: np.ndarray, jac: bool):
    """Magnetization (n, k) and parameter-major Jacobian (p, n, k) from the model's function."""
    m, dm = model._fn(h, theta, jac)
    return np.broadcast_to(m, (len(theta), len(h))), dm


def loglik(model: Model | str, h: np.ndarray, theta: np.ndarray, n_down: np.ndarray,
           n_total: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood per row (without the binomial coefficient)."""
    model = get_model(model)
    m, _ = _m(model, np.asarray(h, float), np.asarray(theta, float), False)
    p_down, p_up = _probabilities(m)
    return (n_down * np.log(p_down) + (n_total - n_down) * np.log(p_up)).sum(-1)


def _probabilities(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(-1) = (1 + m)/2 and P(+1) = (1 − m)/2, each clipped to [1e-15, 1 − 1e-15]."""
    return (np.clip(0.5 * (1.0 + m), _PCLIP, 1 - _PCLIP), np.clip(0.5 * (1.0 - m), _PCLIP, 1 - _PCLIP))


#: Rows evaluated together: small enough that the temporaries stay in the CPU cache, which makes
#: the memory-bound elementwise work several times faster than one pass over all rows.
CHUNK_ROWS = 192


def _evaluate(model, h, theta, n_down, n_total, info=True):
    """Log-likelihood, score and (optionally) expected information per row, in row chunks."""
    n = len(theta)
    if n <= CHUNK_ROWS:
        return _evaluate_block(model, h, theta, n_down, n_total, info)
    k = theta.shape[1]
    ll, score = np.empty(n), np.empty((n, k))
    fisher = np.empty((n, k, k)) if info else None
    for i in range(0, n, CHUNK_ROWS):
        sl = slice(i, i + CHUNK_ROWS)
        out = _evaluate_block(model, h, theta[sl], n_down[sl], n_total[sl], info)
        ll[sl], score[sl] = out[0], out[1]
        if info:
            fisher[sl] = out[2]
    return ll, score, fisher


def _evaluate_block(model, h, theta, n_down, n_total, info):
    m, dm = _m(model, h, theta, True)
    p, q = _probabilities(m)
    ll = (n_down * np.log(p) + (n_total - n_down) * np.log(q)).sum(-1)
    w = 0.5 / (p * q)                        # 1/(p(1−p)) times ∂p/∂m = 1/2
    dmt = dm.transpose(1, 0, 2)              # (n, p, k) view
    score = np.matmul(dmt, ((n_down - n_total * p) * w)[..., None])[..., 0]
    if not info:
        return ll, score, None
    a = dmt * np.sqrt(0.5 * n_total * w)[:, None, :]
    return ll, score, np.matmul(a, a.transpose(0, 2, 1))


def maximize(model: Model | str, h: np.ndarray, n_down: np.ndarray, n_total: np.ndarray,
             theta0: np.ndarray, *, max_iter: int = 200, tol: float = 1e-8, step_tol: float = 3e-3,
             fixed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximize the likelihood of every row from ``theta0`` (see module docstring).

    The iteration runs on the model's internal parameters φ (even parameters squared,
    :attr:`qasa.models.Model.internal`), where the score does not vanish on the bound θ = 0;
    ``theta0`` and the result are in the public parameters θ.

    Args:
        model: the response model.
        h: fields, shape ``(k,)``.
        n_down, n_total: counts, shape ``(n, k)``.
        theta0: starts, shape ``(n, p)``.
        max_iter: iteration limit per row.
        tol: convergence threshold on the gain of an accepted step, in nats.
        step_tol: convergence threshold on an accepted step, in units of each parameter's
            conditional standard error ``1/sqrt(F_jj)`` (a step far below the statistical
            uncertainty changes no conclusion; this ends slow creeping along flat directions).
        fixed: optional ``(n, p)`` mask of parameters held at their ``theta0`` value (profiles).

    Returns:
        ``(theta, loglik, converged, iterations)`` per row.
    """
    model = get_model(model)
    phi, ll, conv, iters = _maximize_phi(model.internal, h, n_down, n_total, model.to_internal(theta0),
                                         max_iter=max_iter, tol=tol, step_tol=step_tol, fixed=fixed)
    return model.from_internal(phi), ll, conv, iters


def _maximize_phi(model: Model, h, n_down, n_total, phi0, *, max_iter=200, tol=1e-8, step_tol=3e-3,
                  fixed=None):
    """The projected Levenberg–Marquardt iteration on an (internal) model's own parameters."""
    lo = np.array(model.lower)
    hi = np.array(model.upper)
    theta = np.clip(np.array(phi0, dtype=float), lo, hi)
    n, k = theta.shape
    fixed = np.zeros((n, k), bool) if fixed is None else np.asarray(fixed, bool)
    ll, score, info = _evaluate(model, h, theta, n_down, n_total)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, bool)
    iters = np.zeros(n, int)
    active = np.isfinite(ll)
    eye = np.eye(k)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, g, F = theta[idx], score[idx], info[idx]
        # hold parameters at a bound whose score points outward, and fixed ones
        held = ((th <= lo) & (g < 0)) | ((th >= hi) & (g > 0)) | fixed[idx]
        free = ~held
        d = np.einsum("npp->np", F)
        A = F * (free[:, :, None] & free[:, None, :]) \
            + eye * (lam[idx, None] * np.where(free, d, 0.0) + np.where(free, 1e-12 * (1 + d), 1.0))[:, None, :]
        rhs = np.where(free, g, 0.0)
        try:
            step = np.linalg.solve(A, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(a, r, rcond=None)[0] for a, r in zip(A, rhs)])
        new = np.clip(th + step, lo, hi)
        ll_new, s_new, F_new = _evaluate(model, h, new, n_down[idx], n_total[idx])
        accept = np.isfinite(ll_new) & (ll_new >= ll[idx])
        gain = np.where(accept, ll_new - ll[idx], 0.0)
        # step size in units of the (conditional) standard error 1/sqrt(F_jj)
        moved = (np.abs(new - th) * np.sqrt(np.maximum(d, 0.0))).max(1)
        a_idx = idx[accept]
        theta[a_idx], ll[a_idx], score[a_idx], info[a_idx] = new[accept], ll_new[accept], s_new[accept], F_new[accept]
        lam[idx] = np.where(accept, np.maximum(lam[idx] / 10.0, 1e-12), lam[idx] * 10.0)
        iters[idx] += 1
        done = (accept & ((gain < tol) | (moved < step_tol))) | (lam[idx] > 1e12)
        converged[idx[done]] = True
        active[idx[done]] = False
    return theta, ll, converged, iters


def _observed_info(model: Model, h, theta, n_down, n_total) -> np.ndarray:
    """−∂²ℓ/∂θ² by forward differences of the analytic score (relative step 1e-6), symmetrized."""
    n, k = theta.shape
    H = np.zeros((n, k, k))
    scale = np.array(model.scale)
    _, s0, _ = _evaluate(model, h, theta, n_down, n_total, info=False)
    for j in range(k):
        step = 1e-6 * np.maximum(np.abs(theta[:, j]), scale[j])
        tp = theta.copy()
        tp[:, j] += step
        _, sp, _ = _evaluate(model, h, tp, n_down, n_total, info=False)
        H[:, j, :] = -(sp - s0) / step[:, None]
    return 0.5 * (H + np.transpose(H, (0, 2, 1)))


def _covariance(model: Model, h, theta, n_down, n_total) -> np.ndarray:
    """Inverse observed information over the free parameters; NaN rows/columns at bounds."""
    lo, hi = np.array(model.lower), np.array(model.upper)
    at_bound = (theta <= lo) | (theta >= hi)
    info = _observed_info(model, h, theta, n_down, n_total)
    k = theta.shape[1]
    out = np.full((len(theta), k, k), np.nan)
    for pattern in {tuple(row) for row in at_bound}:
        rows = np.flatnonzero((at_bound == np.array(pattern)).all(1))
        free = np.flatnonzero(~np.array(pattern, dtype=bool))
        if free.size == 0:
            continue
        sub = info[rows][:, free][:, :, free]
        with np.errstate(invalid="ignore", divide="ignore"):
            try:
                cov = np.linalg.inv(sub)
            except np.linalg.LinAlgError:
                cov = np.stack([np.linalg.pinv(s) for s in sub])
            bad = ~(np.einsum("npp->np", cov) > 0).all(1)
            cov[bad] = np.nan
        block = out[rows]
        block[:, free[:, None], free[None, :]] = cov
        out[rows] = block
    return out


def _degenerate(model: Model, r: Response, rule: QualityRule) -> np.ndarray:
    """Reason string per row ('' if the data can be fitted)."""
    n_h = (r.n_total > 0).sum(1)
    total = r.n_total.sum(1)
    down = r.n_down.sum(1)
    nonzero = ((r.n_total > 0) & (r.h != 0)).sum(1)
    reasons = np.full(len(r.qubits), "", dtype=object)
    reasons[n_h < model.num_params] = f"fewer than {model.num_params} h values with reads"
    reasons[nonzero == 0] = "no reads at a nonzero h"
    reasons[down == total] = "all reads -1"
    reasons[down == 0] = "all reads +1"
    reasons[total < rule.min_reads] = f"fewer than {rule.min_reads} reads"
    reasons[total == 0] = "no reads"
    return reasons


class FitTable:
    """Per-qubit fit results of one model: a DataFrame plus the model it belongs to.

    Columns: ``qubit``, one column per parameter, ``<param>_stderr``, ``cov_<a>_<b>`` (the
    off-diagonal covariances), ``<param>_boot_stderr`` with a bootstrap, ``loglik``, ``deviance``,
    ``df``, ``gof_pvalue``, ``aic``, ``bic``, ``n_reads``, ``n_h``, ``converged``, ``iterations``,
    ``quality``, ``reason``.
    """

    def __init__(self, table: pd.DataFrame, model: Model | str, meta: dict[str, Any] | None = None) -> None:
        self.table = table.reset_index(drop=True)
        self.model = get_model(model)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        q = self.table["quality"].value_counts().to_dict()
        return f"FitTable(model={self.model.name!r}, qubits={len(self)}, quality={q})"

    @property
    def params(self) -> pd.DataFrame:
        """Parameters only, indexed by qubit."""
        return self.table.set_index("qubit")[list(self.model.params)]

    def result(self, qubit: int) -> FitResult:
        """The plain record of one qubit."""
        row = self.table.loc[self.table["qubit"] == qubit]
        if row.empty:
            raise KeyError(f"qubit {qubit} is not in this fit table")
        row = row.iloc[0]
        return FitResult(int(row["qubit"]), self.model.name,
                         {p: float(row[p]) for p in self.model.params},
                         {p: float(row[f"{p}_stderr"]) for p in self.model.params},
                         float(row["loglik"]), bool(row["converged"]) and row["quality"] != "failed",
                         str(row["reason"]) or "ok", str(row["quality"]))

    def covariance(self, qubit: int) -> np.ndarray:
        """The parameter covariance matrix of one qubit (NaN for parameters at a bound)."""
        row = self.table.loc[self.table["qubit"] == qubit].iloc[0]
        ps = self.model.params
        cov = np.diag([row[f"{p}_stderr"] ** 2 for p in ps]).astype(float)
        for i, a in enumerate(ps):
            for j in range(i + 1, len(ps)):
                cov[i, j] = cov[j, i] = row.get(f"cov_{a}_{ps[j]}", np.nan)
        return cov

    def band(self, qubit: int, h: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fitted P(−1) at ``h`` with a pointwise confidence band (delta method on the covariance).

        Parameters at a bound contribute no uncertainty. Returns ``(p, lower, upper)``.
        """
        row = self.table.loc[self.table["qubit"] == qubit].iloc[0]
        theta = row[list(self.model.params)].to_numpy(float)[None, :]
        m, jac = self.model.m_jac(np.asarray(h, float), theta)
        p, dp = 0.5 * (1 + m[0]), 0.5 * jac[0]
        cov = np.nan_to_num(self.covariance(qubit))
        sd = np.sqrt(np.maximum(np.einsum("kp,pq,kq->k", dp, cov, dp), 0.0))
        z = stats.norm.ppf(0.5 + level / 2)
        return p, np.clip(p - z * sd, 0, 1), np.clip(p + z * sd, 0, 1)

    def summary(self) -> dict[str, Any]:
        """Device-level summary: counts per quality and median/IQR of each parameter over good qubits."""
        good = self.table[self.table["quality"] == "good"]
        out: dict[str, Any] = {"model": self.model.name, "qubits": len(self),
                               "quality": {k: int(v) for k, v in self.table["quality"].value_counts().items()}}
        for p in self.model.params:
            v = good[p].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            out[p] = ({"median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
                       "q75": float(np.quantile(v, 0.75)), "mean": float(v.mean()), "std": float(v.std())}
                      if v.size else None)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the table as Parquet (model name and meta in the schema metadata), atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.table, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"qasa_fit": json.dumps({"model": self.model.name, **self.meta}).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FitTable":
        """Inverse of :meth:`save`."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"qasa_fit"])
        return cls(table.to_pandas(), meta.pop("model"), meta)

    def to_model_parameters_csv(self, path: str | Path) -> Path:
        """Write the reference ``model_parameters.csv`` (columns ``spin, β, b, γ, η``; qasa model only)."""
        if self.model.name != "qasa":
            raise ValueError(f"model_parameters.csv holds the qasa model, not {self.model.name!r}")
        out = pd.DataFrame({"spin": self.table["qubit"], "β": self.table["beta"], "b": self.table["b"],
                            "γ": self.table["gamma"], "η": self.table["eta"]})
        path = Path(path)
        atomic_write_bytes(path, out.to_csv(index=False, float_format="%.17g").encode())
        return path

    @classmethod
    def from_model_parameters_csv(cls, path: str | Path) -> "FitTable":
        """Read a reference ``model_parameters.csv`` (parameters only; statistics are NaN)."""
        df = pd.read_csv(path)
        table = pd.DataFrame({"qubit": df["spin"].astype("int64"), "beta": df["β"], "b": df["b"],
                              "gamma": df["γ"], "eta": df["η"]})
        table["quality"] = "good"
        table["reason"] = ""
        return cls(table, "qasa", {"source": str(Path(path).name)})


def _as_response(data: Dataset | Response) -> Response:
    return data.response() if isinstance(data, Dataset) else data


def fit(data: Dataset | Response, model: Model | str = "qasa", *, starts: Sequence[np.ndarray] | None = None,
        max_iter: int = 200, tol: float = 1e-8, bootstrap: int = 0, seed: int | None = None,
        rule: QualityRule = QualityRule()) -> FitTable:
    """Fit ``model`` to every qubit of ``data`` by maximum likelihood (see module docstring).

    Args:
        data: a :class:`~qasa.dataset.Dataset` or a :class:`~qasa.dataset.Response`.
        model: model or model name (:func:`qasa.models.get_model`).
        starts: starting points, each ``(n_qubits, p)``; default: the model's data-driven starts.
        max_iter, tol: optimizer limits (see :func:`maximize`).
        bootstrap: number of parametric-bootstrap replicates (0: none).
        seed: seed of the bootstrap draws.
        rule: the quality rule.

    Returns:
        A :class:`FitTable` with one row per qubit (degenerate qubits flagged, never raised).
    """
    model = get_model(model)
    r = _as_response(data)
    n, k = len(r.qubits), model.num_params
    reasons = _degenerate(model, r, rule)
    ok = np.flatnonzero(reasons == "")
    theta = np.full((n, k), np.nan)
    ll = np.full(n, np.nan)
    conv = np.zeros(n, bool)
    iters = np.zeros(n, int)
    if ok.size:
        h = r.h
        nd, nt = r.n_down[ok].astype(float), r.n_total[ok].astype(float)
        start_list = list(starts) if starts is not None else model.starts(h, nd, nt)
        if starts is not None:
            start_list = [np.asarray(s, float)[ok] for s in start_list]
        S = len(start_list)
        th_all, ll_all, cv_all, it_all = maximize(model, h, np.tile(nd, (S, 1)), np.tile(nt, (S, 1)),
                                                  np.concatenate(start_list), max_iter=max_iter, tol=tol)
        ll_s = np.where(np.isfinite(ll_all), ll_all, -np.inf).reshape(S, ok.size)
        best = ll_s.argmax(0)
        pick = best * ok.size + np.arange(ok.size)
        theta[ok], ll[ok], conv[ok] = th_all[pick], ll_all[pick], cv_all[pick]
        iters[ok] = it_all.reshape(S, ok.size).sum(0)
    table = _statistics(model, r, theta, ll, conv, iters, reasons, rule)
    meta = {"max_iter": max_iter, "tol": tol}
    if bootstrap:
        _bootstrap(model, r, table, bootstrap, seed, max_iter, tol)
        meta.update(bootstrap=bootstrap, bootstrap_seed=seed)
    return FitTable(table, model, meta)


def _statistics(model, r, theta, ll, conv, iters, reasons, rule) -> pd.DataFrame:
    n, k = theta.shape
    cov = np.full((n, k, k), np.nan)
    good_rows = np.flatnonzero(np.isfinite(ll) & conv)
    if good_rows.size:
        cov[good_rows] = _covariance(model, r.h, theta[good_rows], r.n_down[good_rows].astype(float),
                                     r.n_total[good_rows].astype(float))
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.einsum("npp->np", cov))
    nd, nt = r.n_down.astype(float), r.n_total.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(nd > 0, nd * np.log(nd / np.maximum(nt, 1)), 0.0) \
            + np.where(nt - nd > 0, (nt - nd) * np.log((nt - nd) / np.maximum(nt, 1)), 0.0)
    ll_sat = sat.sum(1)
    lo, hi = np.array(model.lower), np.array(model.upper)
    n_free = np.where(np.isfinite(theta), ((theta > lo) & (theta < hi)), True).sum(1)
    n_h = (r.n_total > 0).sum(1)
    reads = r.n_total.sum(1)
    deviance = np.maximum(2.0 * (ll_sat - ll), 0.0)
    df = n_h - n_free
    gof = np.where(df > 0, stats.chi2.sf(deviance, np.maximum(df, 1)), np.nan)
    reasons = reasons.copy()
    fitted = reasons == ""
    failed = fitted & ~(np.isfinite(ll) & conv & np.isfinite(theta).all(1))
    reasons[failed] = "optimizer did not converge"
    quality = np.where(reasons == "", "good", "failed").astype(object)
    theta = theta.copy()
    theta[reasons != ""] = np.nan
    se[reasons != ""] = np.nan
    ll = np.where(reasons == "", ll, np.nan)
    live = reasons == ""
    free_mask = (theta > lo) & (theta < hi)
    bad_se = live & (free_mask & ~np.isfinite(se)).any(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = se[:, 0] / np.abs(theta[:, 0])
    bad_rel = live & ~bad_se & (rel > rule.max_rel_stderr)
    lack = live & (gof < rule.gof_alpha)
    for mask, text in ((lack, f"lack of fit (p < {rule.gof_alpha:g})"),
                       (bad_rel, f"relative stderr of {model.params[0]} > {rule.max_rel_stderr:g}"),
                       (bad_se, "a free parameter has no finite stderr")):
        reasons[mask] = np.where(reasons[mask] == "", text, reasons[mask].astype(str) + "; " + text)
        quality[mask] = "bad"
    data = {"qubit": r.qubits.astype("int64")}
    for j, p in enumerate(model.params):
        data[p] = theta[:, j]
    for j, p in enumerate(model.params):
        data[f"{p}_stderr"] = se[:, j]
    cov[reasons != ""] = np.nan
    for i, a in enumerate(model.params):
        for j in range(i + 1, k):
            data[f"cov_{a}_{model.params[j]}"] = cov[:, i, j]
    data.update(loglik=ll, deviance=np.where(live, deviance, np.nan), df=df.astype("int64"),
                gof_pvalue=np.where(live, gof, np.nan), aic=2 * k - 2 * ll,
                bic=k * np.log(np.maximum(reads, 1)) - 2 * ll, n_reads=reads.astype("int64"),
                n_h=n_h.astype("int64"), converged=conv, iterations=iters.astype("int64"),
                quality=quality.astype(str), reason=reasons.astype(str))
    return pd.DataFrame(data)


def _bootstrap(model, r, table, B, seed, max_iter, tol) -> None:
    live = np.flatnonzero(table["quality"].to_numpy() != "failed")
    for p in model.params:
        table[f"{p}_boot_stderr"] = np.nan
    if live.size == 0:
        return
    theta = table.loc[live, list(model.params)].to_numpy(float)
    p_fit = model.p_down(r.h, theta)
    nt = r.n_total[live]
    rng = np.random.default_rng(seed)
    draws = rng.binomial(np.tile(nt, (B, 1)), np.tile(p_fit, (B, 1))).astype(float)
    th_b, ll_b, cv_b, _ = maximize(model, r.h, draws, np.tile(nt, (B, 1)).astype(float),
                                   np.tile(theta, (B, 1)), max_iter=max_iter, tol=tol)
    th_b = th_b.reshape(B, live.size, -1)
    ok = cv_b.reshape(B, live.size)
    th_b = np.where(ok[..., None], th_b, np.nan)
    sd = np.nanstd(th_b, axis=0, ddof=1)
    for j, p in enumerate(model.params):
        table.loc[live, f"{p}_boot_stderr"] = sd[:, j]


#: Nested model pairs (small, big) for likelihood-ratio tests.
NESTED_PAIRS: tuple[tuple[str, str], ...] = (("gibbs", "gibbs-bias"), ("gibbs-bias", "qasa"),
                                             ("gibbs-bias", "gaussian-noise"))


def compare(data: Dataset | Response | dict[str, FitTable],
            models: Iterable[str] = ("gibbs", "gibbs-bias", "gaussian-noise", "qasa"),
            **fit_kwargs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Compare models per qubit (AIC, likelihood ratio) and for the whole device.

    Likelihood-ratio tests use χ² with the difference in parameter count as degrees of freedom;
    when the extra parameters of the bigger model sit on a bound under the smaller one (γ, η, σ = 0)
    the true null law is a χ² mixture, so these p-values are conservative.

    Args:
        data: counts, or fit tables by model name (then no fitting is done).
        models: model names to compare.
        **fit_kwargs: passed to :func:`fit`.

    Returns:
        ``(per_qubit, device)``: a DataFrame with ``aic_<model>``, ``loglik_<model>``, ``best`` and
        ``lr_pvalue_<small>_vs_<big>`` columns; and a dict with, per model, the summed AIC and the
        number of qubits it fits best, plus the device-level (summed) likelihood-ratio tests.
    """
    if isinstance(data, dict):
        tables = data
    else:
        r = _as_response(data)
        tables = {m: fit(r, m, **fit_kwargs) for m in models}
    names = list(tables)
    per = pd.DataFrame({"qubit": tables[names[0]].table["qubit"].to_numpy()})
    for m in names:
        t = tables[m].table.set_index("qubit")
        per[f"loglik_{m}"] = t.loc[per["qubit"], "loglik"].to_numpy()
        per[f"aic_{m}"] = t.loc[per["qubit"], "aic"].to_numpy()
    aic = per[[f"aic_{m}" for m in names]].to_numpy(float)
    has = np.isfinite(aic).any(1)
    best = np.where(has, np.array(names, dtype=object)[np.argmin(np.where(np.isfinite(aic), aic, np.inf), 1)], None)
    per["best"] = best
    device: dict[str, Any] = {"models": {}, "tests": []}
    complete = np.isfinite(aic).all(1)
    for m in names:
        device["models"][m] = {"aic_total": float(np.nansum(np.where(complete, per[f"aic_{m}"], np.nan))),
                               "best_for_qubits": int((per["best"] == m).sum())}
    for small, big in NESTED_PAIRS:
        if small in tables and big in tables:
            dk = tables[big].model.num_params - tables[small].model.num_params
            lr = np.maximum(2 * (per[f"loglik_{big}"] - per[f"loglik_{small}"]).to_numpy(float), 0)
            per[f"lr_pvalue_{small}_vs_{big}"] = stats.chi2.sf(lr, dk)
            total = float(np.nansum(np.where(complete, lr, np.nan)))
            n_used = int((complete & np.isfinite(lr)).sum())
            device["tests"].append({"small": small, "big": big, "lr_total": total, "df": dk * n_used,
                                    "pvalue": float(stats.chi2.sf(total, max(dk * n_used, 1))),
                                    "qubits_rejecting_small_at_0.01": int((per[f"lr_pvalue_{small}_vs_{big}"] < 0.01).sum())})
    device["preferred"] = min(names, key=lambda m: device["models"][m]["aic_total"])
    return per, device

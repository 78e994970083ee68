"""One assessment pipeline for the command line and Python alike.

The CLI parses options and calls these functions; a notebook calls the same ones, so both get the
same rules:

- **Fit caching** (:func:`fit`): a fit saved in a dataset's ``fits/`` is reused only if its
  fingerprint — a hash of the fit's input arrays, the model, the fit options and qasa's version
  (:func:`qasa.store.fit_fingerprint`) — matches; anything else (another run's table copied in, an
  edited table, new counts, another qasa) is refitted and the cache replaced.
- **Resume** (:class:`qasa.session.Session`): ``assess(..., DIR)`` on an existing dataset behaves as
  ``qasa run DIR``: stored recipe and protocol, typed differences refused, finished runs returned as stored.
- **Budget** (:func:`qasa.runner.run`): budgets must be finite and positive; on a cloud solver a run
  estimated above 10 s of QPU time needs an explicit budget.
- **Models compared** (:data:`COMPARE_MODELS`): the registered models that declare themselves
  compared (:attr:`qasa.models.Model.compared`, :func:`qasa.models.compared_models`).
- **One load, one fit per model per command**: :func:`assess` and :func:`report` read the dataset
  once and fit each model at most once, passing the values on to the report.

Entry points: :func:`assess` (run + fit + report), :func:`fit`, :func:`report`,
:func:`compare_runs`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import dimod
import pandas as pd

from qasa import fitting
from qasa.dataset import Dataset, Response
from qasa.errors import DatasetError
from qasa.fitting import FitTable
from qasa.models import compared_models
from qasa.protocol import Protocol
from qasa.runner import collect
from qasa.store import DatasetStore, fit_fingerprint

__all__ = ["COMPARE_MODELS", "ASSESS_READS_PER_H", "Assessment", "assess", "fit", "fit_models", "report",  # noqa: F822
           "compare_runs", "load", "same_device"]     # (COMPARE_MODELS: module __getattr__, from the registry)

def __getattr__(name: str) -> Any:
    """``COMPARE_MODELS``: the models fitted and compared by ``compare=True`` (``qasa fit --compare``),
    read from the registry when asked (:func:`qasa.models.compared_models`)."""
    if name == "COMPARE_MODELS":
        return compared_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Reads per h of :func:`assess`'s default protocol (the reference h grid; ``qasa run`` uses 10 000).
ASSESS_READS_PER_H = 4000


def load(path: str | Path) -> Dataset:
    """Read and validate a dataset directory (:meth:`qasa.store.DatasetStore.load`)."""
    return DatasetStore(path).load()


def _options(model: str, fit_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": model, **{k: v for k, v in sorted(fit_kwargs.items())}}


def fit(data: Dataset | Response | str | Path, model: str = "qasa", *, store: DatasetStore | str | Path | None = None,
        cache: bool = True, response: Response | None = None, **fit_kwargs: Any) -> FitTable:
    """Fit ``model`` to every qubit, reusing a saved fit only if it was made from exactly this input.

    Args:
        data: a dataset directory, a :class:`~qasa.dataset.Dataset` or a :class:`~qasa.dataset.Response`.
        model: model name (:func:`qasa.models.get_model`).
        store: where to cache the fit (default: the directory when ``data`` is a path).
        cache: read and write the fit cache.
        response: the dataset's response if already computed (saves summing the counts again).
        **fit_kwargs: passed to :func:`qasa.fitting.fit` (they are part of the fingerprint).

    Returns:
        The :class:`~qasa.fitting.FitTable` (from the cache when it matches).
    """
    if isinstance(data, (str, Path)):
        store = DatasetStore(data) if store is None else store
        data = DatasetStore(data).load()
    if isinstance(store, (str, Path)):
        store = DatasetStore(store)
    r = response if response is not None else (data.response() if isinstance(data, Dataset) else data)
    name = fitting.get_model(model).name
    if store is None or not cache:
        return fitting.fit(r, name, **fit_kwargs)
    fingerprint = fit_fingerprint(r, name, _options(name, fit_kwargs))
    cached = store.cached_fit(name, fingerprint)
    if cached is not None:
        return cached
    fits = fitting.fit(r, name, **fit_kwargs)
    try:
        with store.writing():
            store.save_fit(fits, fingerprint)
    except (DatasetError, OSError) as exc:   # busy or read-only: the fit is still returned
        warnings.warn(f"fit not cached in {store.path}: {exc}", stacklevel=2)
    return fits


def fit_models(data: Dataset, models: Iterable[str], *, store: DatasetStore | None = None,
               cache: bool = True, response: Response | None = None, **fit_kwargs: Any) -> dict[str, FitTable]:
    """Fit several models to one dataset, summing the counts once (cache rule of :func:`fit`)."""
    r = response if response is not None else data.response()
    return {m: fit(data, m, store=store, cache=cache, response=r, **fit_kwargs) for m in dict.fromkeys(models)}


@dataclass
class Assessment:
    """What an assessment produced: the data, the fits and where the report went.

    Attributes:
        dataset: the counts and metadata.
        fits: fit tables by model name.
        model: the main model (``fits[model]`` is what the report describes).
        comparison: ``(per_qubit, device)`` from :func:`qasa.fitting.compare`, when models were compared.
        path: the dataset directory (``None`` for an in-memory run).
        report_dir: the report directory (``None`` if no report was written).
        summary: the report's summary (as in ``summary.json``).
    """

    dataset: Dataset
    fits: dict[str, FitTable]
    model: str = "qasa"
    comparison: tuple[pd.DataFrame, dict[str, Any]] | None = None
    path: Path | None = None
    report_dir: Path | None = None
    summary: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def fit(self) -> FitTable:
        """The main model's fit table."""
        return self.fits[self.model]

    def __repr__(self) -> str:
        q = self.fit.table["quality"].value_counts().to_dict() if self.model in self.fits else {}
        return (f"Assessment(path={str(self.path) if self.path else None!r}, model={self.model!r}, "
                f"qubits={len(self.dataset.totals()['qubits'])}, quality={q}, "
                f"report={str(self.report_dir / 'index.html') if self.report_dir else None!r})")


def _truth(ds: Dataset) -> pd.DataFrame | None:
    """Per-qubit truth recorded by a virtual QPU, if the dataset came from one."""
    truth = ds.device.get("truth")
    return None if truth is None else pd.DataFrame(truth).set_index("qubit")


def _analyse(ds: Dataset, path: Path | None, *, model: str, compare: bool, write_report: bool,
             report_dir: str | Path | None, cache: bool) -> Assessment:
    store = DatasetStore(path) if path is not None else None
    models = list(compared_models()) + [model] if compare else [model]
    r = ds.response()              # summed once: the fits and the report share it
    fits = fit_models(ds, models, store=store, cache=cache, response=r)
    comparison = fitting.compare({m: fits[m] for m in dict.fromkeys(models)}) if compare else None
    out = Assessment(ds, fits, model, comparison, path)
    if write_report:
        from qasa.report import build_report

        where = Path(report_dir) if report_dir is not None else (
            path / "report" if path is not None else Path("qasa-report"))
        tables = {m: fits[m] for m in dict.fromkeys(models)} if compare else None   # the report adds BIC
        out.summary = build_report(ds, fits[model], where, comparison=tables, truth=_truth(ds),
                                   dataset_path=path, response=r)
        out.report_dir = where
    return out


def assess(sampler: dimod.Sampler | str | None = None, out: str | Path | None = "qasa-run",
           protocol: Protocol | None = None, *, model: str = "qasa", compare: bool = False,
           report: bool = True, report_dir: str | Path | None = None, max_qpu_seconds: float | None = None,
           progress: Callable[[int, int], None] | None = None, keep_samples: int = 0, retries: int = 3,
           in_flight: int = 50, extend: bool = False, cache: bool = True, design: str = "grid",
           target: Mapping[str, float | str] | None = None, **sampler_options: Any) -> Assessment:
    """Run, fit and report in one call — what ``qasa assess`` does.

    Args:
        sampler: a :class:`dimod.Sampler`, or a backend name for :func:`qasa.samplers.get_backend`, or
            ``None``: the stored backend of ``out``, else ``"emulator"``
            (``sampler_options`` go to it).
        out: dataset directory; ``None`` keeps everything in memory. On an existing dataset the
            rules of ``qasa run DIR`` apply (:class:`qasa.session.Session`): the stored backend recipe
            and protocol are used, an option given that differs from them is refused naming it, an
            interrupted run resumes and a finished one is returned as stored (fits from the cache).
        protocol: what to run; default the stored protocol, else the reference h grid with
            :data:`ASSESS_READS_PER_H` reads per h.
            With ``design="adaptive"`` it is the pilot stage (default
            :func:`qasa.adaptive.pilot_protocol`; :func:`qasa.adaptive.pilot_from` turns a grid
            protocol's settings into one).
        model: the main model of the report.
        compare: also fit the models compared by default (:func:`qasa.models.compared_models`) and
            compare them.
        report: write the HTML report (``out/report`` by default, or ``report_dir``).
        max_qpu_seconds: QPU-time budget (see :func:`qasa.runner.run`).
        progress: ``progress(done, total)`` after each call.
        keep_samples, retries, in_flight, extend: see :func:`qasa.runner.run`.
        cache: use the fit cache of the dataset directory.
        design: ``"grid"`` (the protocol as given) or ``"adaptive"`` (:mod:`qasa.adaptive`, needs ``target``).
        target: precision targets for the adaptive design, e.g. ``{"beta": "1%", "b": 0.003}``.

    Returns:
        An :class:`Assessment`.
    """
    from qasa.session import Session, open_backend

    if design not in ("grid", "adaptive"):
        raise ValueError(f"design={design!r}; choose 'grid' or 'adaptive'")
    if report and report_dir is not None:       # before anything is collected
        from qasa.report import check_report_dir

        check_report_dir(report_dir)
    if design == "adaptive":
        from qasa import adaptive

        backend = open_backend(out, sampler, sampler_options)
        ds = adaptive.assess_adaptive(backend, out, target=target, protocol=protocol, model=model,
                                      max_qpu_seconds=max_qpu_seconds, progress=progress)
    else:
        session = Session.open(out, sampler, protocol, options=sampler_options, extend=extend,
                               default=Protocol.grid(reads_per_h=ASSESS_READS_PER_H))
        ds = collect(session, progress=progress, keep_samples=keep_samples, max_qpu_seconds=max_qpu_seconds,
                     retries=retries, in_flight=in_flight)
    return _analyse(ds, Path(out) if out is not None else None, model=model, compare=compare,
                    write_report=report, report_dir=report_dir, cache=cache)


def report(dataset: str | Path | Dataset, model: str = "qasa", *, out: str | Path | None = None,
           compare: bool = False, cache: bool = True) -> Assessment:
    """Fit (or reuse matching cached fits) and write the report of a dataset — ``qasa report``."""
    if out is not None:          # before anything is fitted or cached
        from qasa.report import check_report_dir

        check_report_dir(out)
    if isinstance(dataset, Dataset):
        return _analyse(dataset, None, model=model, compare=compare, write_report=True, report_dir=out,
                        cache=False)
    path = Path(dataset)
    return _analyse(load(path), path, model=model, compare=compare, write_report=True, report_dir=out,
                    cache=cache)


def same_device(a: Dataset, b: Dataset) -> str | None:
    """Why two datasets are not from the same device (solver, topology, qubits), or None."""
    da, db = a.device, b.device
    for key in ("solver", "topology_type", "topology_shape"):
        if da.get(key) != db.get(key):
            return f"{key} differs ({da.get(key)!r} vs {db.get(key)!r})"
    qa, qb = set(a.totals()["qubits"].tolist()), set(b.totals()["qubits"].tolist())
    if not qa & qb:
        return "no qubit in common"
    return None


def compare_runs(datasets: Sequence[str | Path], model: str = "qasa", *, out: str | Path = "qasa-comparison",
                 allow_different_devices: bool = False, cache: bool = True) -> dict[str, Any]:
    """Compare assessments of one device (two dates, several annealing times) — ``qasa compare``.

    Each dataset is loaded once and fitted under the cache rule of :func:`fit`, so a fit table that
    was not made from that dataset's counts is never used.

    Raises:
        DatasetError: fewer than two datasets, or datasets of different devices (unless
            ``allow_different_devices``).
    """
    from qasa.report import build_comparison_report

    if len(datasets) < 2:
        raise DatasetError("give at least two dataset directories to compare")
    loaded = {str(p): load(p) for p in datasets}
    names = list(loaded)
    if not allow_different_devices:
        for other in names[1:]:
            why = same_device(loaded[names[0]], loaded[other])
            if why is not None:
                raise DatasetError(f"{other} is not from the same device as {names[0]}: {why}; "
                                   "pass --allow-different-devices to compare anyway")
    runs = {p: (ds, fit(ds, model, store=DatasetStore(p), cache=cache)) for p, ds in loaded.items()}
    return build_comparison_report(runs, out)

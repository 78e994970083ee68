"""qasa: Quantum Annealing Single-qubit Assessment of every qubit of a quantum annealer.

The data flow is one way: :class:`Protocol` → :func:`run` on a sampler → :class:`Dataset` →
:func:`fit` → :class:`FitTable` → report. :func:`assess` does all of it, exactly as ``qasa assess``
does (:mod:`qasa.pipeline`); :class:`Backend` owns a sampler, :class:`Session` a run's life and
:class:`DatasetStore` a dataset directory. See the README for the CLI.
"""

from qasa.dataset import Dataset, Response
from qasa.errors import CredentialsError, DatasetError, ProtocolError, QasaError, SamplerError
from qasa.protocol import Protocol, h_grid
from qasa.runner import run
from qasa.backend import Backend
from qasa.samplers import device_info, get_backend, get_sampler, validate
from qasa.store import DatasetStore
from qasa.session import Session
from qasa.pipeline import Assessment, assess, compare_runs, fit, load
from qasa.shim import ShimResult, shim
from qasa import dataset as _dataset

_dataset._register_store(DatasetStore)   # Dataset.load/save go through the store, which sits above qasa.dataset

__version__ = "0.1.0"

__all__ = [
    "Protocol", "h_grid", "run", "get_sampler", "get_backend", "Backend", "Session", "device_info", "validate",
    "Dataset", "Response", "QasaError", "ProtocolError", "SamplerError", "CredentialsError",
    "DatasetError", "DatasetStore", "Assessment", "assess", "fit", "load", "compare_runs", "shim", "ShimResult",
    "__version__",
]

r"""Parameter metadata and number formatting: how a response-model parameter is named, measured and shown.

One low module, just below :mod:`qasa.models`, so that everything that labels or prints a parameter
(:mod:`qasa.display` for Jupyter reprs, :mod:`qasa.fitting`'s plotting methods, :mod:`qasa.analysis`
and :mod:`qasa.report`) reads the same definitions without importing the analysis above it. A model
added with :func:`qasa.models.register_model` brings the definitions of its new parameters here.

Units
    The fields h, b, η, σ are in units of the programmed h (``auto_scale=False``); β is in 1/h, so
    βh is dimensionless; γ is a ratio of fields and ε a probability (docs/DESIGN.md §3).

Rounding
    A number is shown to the decimal place of the ``digits``-th significant digit of its
    uncertainty (two by default): ``5.1437 ± 0.0312 → "5.144 ± 0.031"``. Without a finite positive
    uncertainty it keeps four significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ParameterInfo", "PARAMETERS", "parameter_info", "round_to_uncertainty", "format_value"]


@dataclass(frozen=True)
class ParameterInfo:
    """How a parameter is shown: symbol, name, unit and one-sentence definition."""

    symbol: str
    name: str
    unit: str
    definition: str

    @property
    def label(self) -> str:
        """``"β (1/h)"``-style axis label."""
        return f"{self.symbol} ({self.unit})" if self.unit else self.symbol


#: Definitions of the response-model parameters (qasa.models; DESIGN.md §3). Fields h, b, η, σ are
#: in units of the programmed h (``auto_scale=False``); β in 1/h. :func:`qasa.models.register_model`
#: adds those of a registered model's new parameters (and :func:`~qasa.models.unregister_model` removes them).
PARAMETERS: dict[str, ParameterInfo] = {
    "beta": ParameterInfo("β", "inverse temperature", "1/h",
                          "Effective inverse temperature of the qubit at freeze-out, β = B(s*)/(2 k_B T) in units "
                          "of the programmed field: P(−1) = (1 + tanh β(h + b))/2 for a classical Gibbs qubit."),
    "b": ParameterInfo("b", "static bias", "h",
                       "Field offset: the qubit responds to h + b (in the qubit's programmed frame)."),
    "gamma": ParameterInfo("γ", "saturation", "dimensionless",
                           "Ratio of the transverse to the longitudinal field at freeze-out: |m| saturates at "
                           "1/√(1 + γ²), so P(−1) never reaches 0 or 1."),
    "eta": ParameterInfo("η", "field-noise amplitude", "h",
                         "Half-width of the two-point field noise: the response is the mean of the Gibbs "
                         "responses at h + b + η and h + b − η."),
    "sigma": ParameterInfo("σ", "Gaussian field noise", "h",
                           "Standard deviation of a Gaussian field noise averaged into the response."),
    "epsilon": ParameterInfo("ε", "readout error", "probability",
                             "Probability that a read returns the opposite spin."),
}


def parameter_info(name: str) -> ParameterInfo:
    """The :class:`ParameterInfo` of a parameter (a plain fallback for unknown names).

    Args:
        name: the parameter's name in the model (``"beta"``, ``"eta"``, ...).

    Returns:
        Its entry in :data:`PARAMETERS`, or one that uses the name as symbol and name, with no unit.
    """
    return PARAMETERS.get(name, ParameterInfo(name, name, "", ""))


def round_to_uncertainty(value: float, uncertainty: float | None, digits: int = 2) -> tuple[float, int]:
    """Round ``value`` to the decimal place of the ``digits``-th significant digit of ``uncertainty``.

    Args:
        value: the number to round.
        uncertainty: its standard error (``None``, NaN or ≤ 0: unknown).
        digits: significant digits of the uncertainty that are kept.

    Returns:
        ``(rounded value, decimals)``; decimals may be negative (rounding to tens...). Without a
        finite positive uncertainty the value keeps four significant digits.
    """
    if value is None or not math.isfinite(value):
        return (math.nan, 0)
    if uncertainty is None or not math.isfinite(uncertainty) or uncertainty <= 0:
        decimals = 3 - int(math.floor(math.log10(abs(value)))) if value != 0 else 3
    else:
        decimals = digits - 1 - int(math.floor(math.log10(uncertainty)))
    return (round(value, decimals), decimals)


def format_value(value: Any, uncertainty: float | None = None, *, digits: int = 2, with_error: bool = False) -> str:
    """A number as text, rounded to its uncertainty (``"5.14 ± 0.03"`` with ``with_error``).

    Integers print as integers (thin-space thousands), booleans as yes/no, ``None``/NaN as an em
    dash, other objects with ``str``.

    Args:
        value: the number (or any object).
        uncertainty: its standard error, which sets the rounding (:func:`round_to_uncertainty`).
        digits: significant digits of the uncertainty.
        with_error: append ``" ± uncertainty"``.
    """
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", "\u2009")
    if not isinstance(value, (float, np.floating)):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return "—"
    rounded, decimals = round_to_uncertainty(v, uncertainty, digits)
    known = uncertainty is not None and math.isfinite(uncertainty) and uncertainty > 0
    if not known and (abs(rounded) >= 1e6 or (abs(rounded) < 1e-4 and rounded != 0)):
        text = f"{rounded:.4g}"
    else:
        text = f"{rounded:.{min(max(decimals, 0), 12)}f}"
    if with_error and uncertainty is not None and math.isfinite(uncertainty) and uncertainty > 0:
        err, _ = round_to_uncertainty(uncertainty, uncertainty, digits)
        text += f" ± {err:.{max(decimals, 0)}f}"
    return text

"""Reduce sampler answers to per-qubit counts in the nominal frame (the gauge undone).

One helper serves the three answer paths: a :class:`dimod.SampleSet`, the count-level path of the
virtual QPU, and the answer matrix of a cloud solver.

The counts table these rows make — one row per call and qubit — is declared once, here (the lowest
module that builds it): :data:`COUNTS_SCHEMA` gives its columns and their stored (Arrow) types;
:data:`COUNT_COLUMNS` and :data:`COUNT_DTYPES` (pandas) follow from it. The dataset, its store and
the runner use these and no list of their own.
"""

from __future__ import annotations

import dimod
import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["reduce_sampleset", "count_down", "undo_gauge", "sampleset_columns", "counts_frame", "COUNTS_SCHEMA",
           "COUNT_COLUMNS", "COUNT_DTYPES"]

#: The counts table: ``call_id`` (dictionary-encoded strings), ``qubit``, ``h`` (the nominal field),
#: ``gauge`` (the spin-reversal sign; 0 = not recorded), ``n_down``/``n_up`` (reads returning −1/+1 in
#: the nominal frame). The types are those stored in ``counts.parquet`` and the journal's parts.
COUNTS_SCHEMA = pa.schema([("call_id", pa.dictionary(pa.int32(), pa.string())), ("qubit", pa.int64()),
                           ("h", pa.float64()), ("gauge", pa.int8()), ("n_down", pa.int64()), ("n_up", pa.int64())])
#: Column names of the counts table, in order.
COUNT_COLUMNS: list[str] = list(COUNTS_SCHEMA.names)
#: pandas dtypes of the counts table's numeric columns (``call_id`` is categorical).
COUNT_DTYPES: dict[str, np.dtype] = {f.name: np.dtype(f.type.to_pandas_dtype()) for f in COUNTS_SCHEMA
                                     if not pa.types.is_dictionary(f.type)}


def reduce_sampleset(sampleset: dimod.SampleSet, qubits: np.ndarray | list[int],
                     flips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(n_down, n_up)`` per qubit from a SampleSet, undoing the gauge ``flips``.

    Each row is weighted by its ``num_occurrences`` (histogram answers).
    """
    returned, reads = count_down(sampleset.record.sample, sampleset.record.num_occurrences,
                                  sampleset_columns(sampleset, qubits))
    n_down = undo_gauge(returned, reads, flips)
    return n_down, reads - n_down


def sampleset_columns(sampleset: dimod.SampleSet, qubits) -> np.ndarray:
    """Column of each qubit in the SampleSet's sample matrix."""
    variables = sampleset.variables
    return np.fromiter((variables.index(int(q)) for q in qubits), dtype=np.int64, count=len(qubits))


def count_down(samples: np.ndarray, occurrences, cols: np.ndarray) -> tuple[np.ndarray, int]:
    """Reads returning -1 in columns ``cols`` (returned frame), weighted by ``occurrences``
    (None or all ones: raw reads), and the number of reads."""
    down = samples == -1                         # every column at once: cheaper than gathering first
    if occurrences is None or np.all(np.asarray(occurrences) == 1):
        return np.count_nonzero(down, axis=0)[cols].astype(np.int64), int(len(samples))
    occ = np.asarray(occurrences, dtype=np.float64)
    return np.rint(occ @ down[:, cols]).astype(np.int64), int(occ.sum())


def undo_gauge(returned_down: np.ndarray, reads: int, flips: np.ndarray) -> np.ndarray:
    """-1 counts in the nominal frame: a flipped qubit's returned +1 is a nominal -1."""
    return np.where(np.asarray(flips) == 1, returned_down, reads - np.asarray(returned_down))


def counts_frame(call, qubits: np.ndarray, n_down: np.ndarray, reads: int | np.ndarray) -> pd.DataFrame:
    """The counts rows of one call (:data:`COUNT_COLUMNS`): nominal-frame ``n_down``/``n_up`` and the gauge
    sign of each qubit."""
    frame = pd.DataFrame({"call_id": call.call_id, "qubit": qubits, "h": call.h, "gauge": call.flips,
                          "n_down": n_down, "n_up": reads - np.asarray(n_down)})
    return frame[COUNT_COLUMNS].astype(COUNT_DTYPES)

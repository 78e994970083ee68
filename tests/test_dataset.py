import numpy as np
import pandas as pd
import pytest

import qasa
from qasa.dataset import Dataset
from qasa.errors import DatasetError


@pytest.fixture
def dataset(chimera_sa, small_protocol):
    return qasa.run(small_protocol.replace(qubits=tuple(chimera_sa.nodelist[:20])), chimera_sa)


def test_save_load_round_trip_is_exact(dataset, tmp_path):
    dataset.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.equals(dataset)
    assert back.protocol == dataset.protocol


def test_spin_table_round_trip(dataset, tmp_path):
    path = dataset.to_spin_table(tmp_path / "spin_table.csv")
    table = pd.read_csv(path)
    assert list(table.columns[:2]) == ["h", "samples"]
    assert table.columns[2] == f"spin_{dataset.protocol.qubits[0]}"
    assert (table["samples"] == 400).all()
    imported = Dataset.from_spin_table(path)
    a, b = dataset.response(), imported.response()
    assert np.array_equal(a.qubits, b.qubits) and np.array_equal(a.h, b.h)
    assert np.array_equal(a.n_down, b.n_down) and np.array_equal(a.n_total, b.n_total)
    # and back again: the file is reproduced byte for byte
    again = imported.to_spin_table(tmp_path / "again.csv")
    assert again.read_bytes() == path.read_bytes()
    imported.save(tmp_path / "imported")
    assert Dataset.load(tmp_path / "imported").equals(imported)


def test_spin_table_reference_layout_is_read(tmp_path):
    (tmp_path / "spin_table.csv").write_text("h,samples,spin_30,spin_31\n-0.1,1000,120,130\n0.1,1000,880,860\n")
    r = Dataset.from_spin_table(tmp_path / "spin_table.csv").response()
    assert list(r.qubits) == [30, 31]
    assert r.n_down.tolist() == [[120, 880], [130, 860]]
    assert r.n_total.tolist() == [[1000, 1000], [1000, 1000]]


@pytest.mark.parametrize("text, match", [
    ("h,samples\n0.1,10\n", "need columns"),
    ("h,samples,spin_1\n0.1,10,11\n", r"\[0, samples\]"),
    ("h,samples,spin_x\n0.1,10,1\n", "bad spin column"),
])
def test_bad_spin_tables_are_refused(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DatasetError, match=match):
        Dataset.from_spin_table(tmp_path / "t.csv")


def test_load_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a qasa dataset"):
        Dataset.load(tmp_path)


def test_interrupted_compaction_loses_and_duplicates_nothing(dataset, tmp_path):
    """A journal part whose call is already compacted is taken once; calls and counts both."""
    path = tmp_path / "ds"
    first = dataset.counts["call_id"].iloc[0]
    dataset.save(path)
    record = dataset.calls[dataset.calls["call_id"] == first].iloc[0].to_dict()
    from qasa.store import DatasetStore

    store = DatasetStore(path)
    with store.writing():
        store.journal_call(record, dataset.counts[dataset.counts["call_id"] == first])
    back = Dataset.load(path)
    assert back.sorted().equals(dataset.sorted())

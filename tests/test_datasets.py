"""loadtune.datasets: RecordFile reads what RecordWriter wrote, without copies, in any process."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from loadtune import DataFormatError, DataLoader
from loadtune.datasets import RecordFile, RecordWriter


def records(n: int = 37) -> np.ndarray:
    return np.arange(n * 12, dtype=np.float32).reshape(n, 3, 4) / 7


def test_writer_round_trip_one_record_or_many(tmp_path: Path) -> None:
    data = records()
    path = tmp_path / "x.rec"
    with RecordWriter(path, (3, 4), np.float32) as writer:
        writer.append(data[0])  # one record
        writer.append(torch.from_numpy(data[1:5]))  # several, as a tensor
        writer.append(data[5:])
        assert not path.exists()  # nothing visible until the writer closes
    assert writer.count == len(data)
    assert os.path.getsize(path) == data.nbytes
    assert np.array_equal(np.fromfile(path, dtype=np.float32).reshape(data.shape), data)
    ds = RecordFile(path, (3, 4), torch.float32)
    assert len(ds) == len(data)
    for i in (0, 17, len(data) - 1, -1):
        sample = ds[i]
        assert sample.dtype == torch.float32 and sample.shape == (3, 4)
        assert torch.equal(sample, torch.from_numpy(data[i]))
    with pytest.raises(IndexError, match="out of range"):
        ds[len(data)]
    assert [p.name for p in tmp_path.iterdir()] == ["x.rec"]  # no temporary file left


def test_samples_view_the_map_without_a_copy_or_a_warning(tmp_path: Path) -> None:
    data = records()
    ds = RecordFile.write(tmp_path / "x.rec", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" warning included
        sample = ds[5]
        scalar = RecordFile.write(tmp_path / "s.rec", np.arange(4, dtype=np.int64))[2]
    assert np.shares_memory(sample.numpy(), ds.array)
    assert sample.numpy().ctypes.data == ds.array.ctypes.data + 5 * ds.record_bytes
    assert scalar.shape == () and scalar.item() == 2
    # The map is copy-on-write: writing into a sample changes neither the file nor others.
    sample.zero_()
    assert torch.equal(RecordFile(tmp_path / "x.rec", (3, 4), np.float32)[5], torch.tensor(data[5]))
    assert np.array_equal(np.fromfile(tmp_path / "x.rec", dtype=np.float32)[60:72], data[5].ravel())


@pytest.mark.parametrize("loader_cls", [DataLoader, torch.utils.data.DataLoader])
def test_loader_with_two_workers_returns_the_written_array(
    loader_cls: type, tmp_path: Path
) -> None:
    data = records(50)
    ds = RecordFile.write(tmp_path / "x.rec", data)
    _ = ds.array  # mapped here first: each worker notices the new pid and maps it again
    loader = loader_cls(ds, batch_size=8, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), torch.from_numpy(data))


def test_dataset_pickles_without_its_map_and_spawns(tmp_path: Path) -> None:
    data = records(10)
    ds = RecordFile.write(tmp_path / "x.rec", data)
    _ = ds.array
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._map is None  # the map stays behind: each process opens its own
    assert torch.equal(copy[3], ds[3])
    loader = DataLoader(ds, batch_size=5, num_workers=1, multiprocessing_context="spawn")
    assert torch.equal(torch.cat(list(loader)), torch.from_numpy(data))


def test_failed_or_abandoned_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.rec"
    RecordFile.write(path, records(3))
    with pytest.raises(KeyError), RecordWriter(path, (3, 4), np.float32) as writer:
        writer.append(records(5))
        raise KeyError("stop")
    writer = RecordWriter(path, (3, 4), np.float32)
    writer.append(records(2))
    del writer  # never closed
    assert [p.name for p in tmp_path.iterdir()] == ["x.rec"]
    assert len(RecordFile(path, (3, 4), np.float32)) == 3


def test_shapes_sizes_and_dtypes_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.rec"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(DataFormatError, match="10 bytes is not a whole number of 8-byte"):
        RecordFile(path, (2,), np.float32)
    with RecordWriter(tmp_path / "y.rec", (2,), np.int32) as writer:
        with pytest.raises(ValueError, match="records of shape"):
            writer.append(np.zeros((4, 3)))
        with pytest.raises(TypeError):
            writer.append(np.zeros(2, dtype=np.float64))  # float into int: not same_kind
    with pytest.raises(TypeError, match="numpy"):
        RecordFile(path, (2,), torch.bfloat16)
    empty = RecordFile.write(tmp_path / "e.rec", np.zeros((0, 2), dtype=np.uint8))
    assert len(empty) == 0 and list(DataLoader(empty, batch_size=2)) == []

"""Fault injection: samples that raise, under each on_error policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import loadtune
from loadtune import DataLoader

BAD = {7, 23, 64, 99, 150, 151}  # about 1% of 500 samples, two of them adjacent


class Flaky(Dataset):
    """Raises ValueError for indices in BAD; with ``heal_after``, succeeds on that try."""

    def __init__(self, n: int = 500, heal_after: int | None = None, marks: Path | None = None):
        self.n, self.heal_after, self.marks = n, heal_after, marks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i in BAD:
            if self.heal_after is not None:
                mark = self.marks / str(i)
                tries = len(mark.read_text()) if mark.exists() else 0
                mark.write_text("x" * (tries + 1))
                if tries + 1 >= self.heal_after:
                    return i
            raise ValueError(f"sample {i} is broken")
        return i


class AllBad(Dataset):
    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int) -> int:
        if i in (3, 4, 5):
            raise OSError(f"gone: {i}")
        return i


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_leaves_out_exactly_the_bad_samples(workers: int) -> None:
    loader = DataLoader(Flaky(), batch_size=10, num_workers=workers, on_error="skip")
    seen = [i for b in loader for i in b.tolist()]
    assert seen == [i for i in range(500) if i not in BAD]
    failures = sorted(loader.failures, key=lambda f: f.index)
    assert [f.index for f in failures] == sorted(BAD)
    assert {f.exc_type for f in failures} == {"ValueError"}
    assert failures[0].message == "sample 7 is broken" and failures[0].batch == 0
    assert {f.worker_id for f in failures} == ({-1} if workers == 0 else {0, 1})
    assert all(f.attempts == 1 for f in failures)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_with_nothing_left_is_skipped(workers: int) -> None:
    loader = DataLoader(AllBad(), batch_size=3, num_workers=workers, on_error="skip")
    assert [b.tolist() for b in loader] == [[0, 1, 2], [6, 7, 8]]
    assert sorted(f.index for f in loader.failures) == [3, 4, 5]


def test_retry_succeeds_within_the_budget(tmp_path: Path) -> None:
    loader = DataLoader(
        Flaky(200, heal_after=3, marks=tmp_path),
        batch_size=10,
        num_workers=2,
        on_error="retry",
        max_retries=3,
        retry_backoff=0.001,
    )
    assert [i for b in loader for i in b.tolist()] == list(range(200))
    assert loader.failures == []
    assert all((tmp_path / str(i)).read_text() == "xxx" for i in BAD if i < 200)


@pytest.mark.parametrize("exhausted", ["skip", "raise"])
def test_retry_exhausted(tmp_path: Path, exhausted: str) -> None:
    loader = DataLoader(
        Flaky(100, heal_after=10, marks=tmp_path),
        batch_size=10,
        num_workers=2,
        on_error="retry",
        max_retries=2,
        retry_backoff=0.001,
        retry_exhausted=exhausted,
    )
    if exhausted == "skip":
        assert [i for b in loader for i in b.tolist()] == [i for i in range(100) if i not in BAD]
        assert [(f.index, f.attempts) for f in sorted(loader.failures, key=lambda f: f.index)] == [
            (7, 3),
            (23, 3),
            (64, 3),
            (99, 3),
        ]
    else:
        with pytest.raises(ValueError, match="sample 7 is broken") as info:
            list(loader)
        assert "while loading dataset index 7" in str(info.value)
        assert (tmp_path / "7").read_text() == "xxx"


def test_raise_keeps_the_type_index_worker_and_traceback() -> None:
    loader = DataLoader(Flaky(), batch_size=10, num_workers=2)
    with pytest.raises(ValueError) as info:
        list(loader)
    text = str(info.value)
    assert text.startswith("Caught ValueError in DataLoader worker process 0 (pid ")
    assert "while loading dataset index 7." in text
    assert "Traceback (most recent call last)" in text and "sample 7 is broken" in text


class Unbuildable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


class RaisesUnbuildable(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        raise Unbuildable(i, os.getpid())


def test_an_exception_that_cannot_be_rebuilt_becomes_data_loading_error() -> None:
    with pytest.raises(loadtune.DataLoadingError) as info:
        list(DataLoader(RaisesUnbuildable(), batch_size=2, num_workers=1))
    assert info.value.index == 0 and info.value.worker_id == 0
    assert "Caught Unbuildable" in str(info.value)


def test_invalid_policies() -> None:
    ds = torch.arange(3)
    with pytest.raises(ValueError, match="on_error should be one of"):
        DataLoader(ds, on_error="ignore")
    with pytest.raises(ValueError, match="retry_exhausted should be one of"):
        DataLoader(ds, retry_exhausted="retry")
    with pytest.raises(ValueError, match="on_worker_death should be one of"):
        DataLoader(ds, on_worker_death="ignore")

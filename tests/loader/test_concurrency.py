"""fetch_concurrency and per_sample_seed: k samples at once, same batches, same errors.

Nothing here times the loader: latency hiding is checked by counting how many fetches are
in flight at once (a counter in shared memory that every fetch bumps), never by a stopwatch.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from loadtune import DataLoader
from loadtune.targets import clone
from tests.loader.datasets import GetItemsDataset, ShardedIterable


def _delay(i: int) -> float:
    """0 to 3 ms, scattered over the indices, so fetches finish out of order."""
    return (i * 7919 % 13) / 4000


class Jittery(Dataset):
    """Sample i is the int i, after a short sleep that varies with i."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        time.sleep(_delay(i))
        return i


class AsyncJittery(Jittery):
    """Jittery with ``aget``; ``__getitem__`` counts its calls (it should not be used)."""

    def __init__(self, n: int, calls: Any = None) -> None:
        super().__init__(n)
        self.calls = calls

    def __getitem__(self, i: int) -> int:
        if self.calls is not None:
            with self.calls.get_lock():
                self.calls.value += 1
        return super().__getitem__(i)

    async def aget(self, i: int) -> int:
        await asyncio.sleep(_delay(i))
        return i


class Failing(Dataset):
    """Raises for the indices in ``bad``; index ``slow_bad`` fails only after a sleep."""

    def __init__(self, n: int, bad: tuple[int, ...], slow_bad: int = -1) -> None:
        self.n, self.bad, self.slow_bad = n, bad, slow_bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i == self.slow_bad:
            time.sleep(0.05)
        if i in self.bad:
            raise ValueError(f"sample {i} is broken")
        return i


class AsyncFailing(Failing):
    """Failing through ``aget``."""

    async def aget(self, i: int) -> int:
        await asyncio.sleep(0.05 if i == self.slow_bad else 0.001)
        if i in self.bad:
            raise KeyError(i)
        return i


class InFlight(Dataset):
    """Every fetch sleeps ``delay_s``; ``counters`` (shared) holds [in flight now, peak]."""

    def __init__(self, n: int, delay_s: float, counters: Any) -> None:
        self.n, self.delay_s, self.counters = n, delay_s, counters

    def __len__(self) -> int:
        return self.n

    def _enter(self) -> None:
        with self.counters.get_lock():
            self.counters[0] += 1
            self.counters[1] = max(self.counters[1], self.counters[0])

    def _leave(self) -> None:
        with self.counters.get_lock():
            self.counters[0] -= 1

    def __getitem__(self, i: int) -> int:
        self._enter()
        try:
            time.sleep(self.delay_s)
        finally:
            self._leave()
        return i


class AsyncInFlight(InFlight):
    """InFlight through ``aget``."""

    async def aget(self, i: int) -> int:
        self._enter()
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self._leave()
        return i


class Augmented(Dataset):
    """A random augmentation drawing from torch, ``random`` and numpy, in two steps."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def _draw(self, i: int) -> torch.Tensor:
        return torch.cat(
            [
                torch.rand(2),
                torch.tensor([random.random(), float(np.random.rand())]),
                torch.tensor([float(i)]),
            ]
        )

    def __getitem__(self, i: int) -> torch.Tensor:
        first = self._draw(i)
        time.sleep(_delay(i))  # another sample's draws may come in between
        return torch.cat([first, self._draw(i)])


class AsyncAugmented(Augmented):
    """Augmented through ``aget``: the coroutines interleave at the awaits between draws."""

    async def aget(self, i: int) -> torch.Tensor:
        first = self._draw(i)
        await asyncio.sleep(_delay(i))
        second = self._draw(i)
        await asyncio.sleep(0)
        return torch.cat([first, second])


class KillOnce(Dataset):
    """SIGKILLs its worker the first time index ``at`` is fetched (a marker file says so)."""

    def __init__(self, n: int, at: int, marker: Path) -> None:
        self.n, self.at, self.marker = n, at, marker

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        time.sleep(_delay(i))
        if i == self.at and not self.marker.exists():
            self.marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return i


class KillOnceAugmented(Augmented):
    """Augmented, but SIGKILLs its worker the first time index ``at`` is fetched."""

    def __init__(self, n: int, at: int, marker: Path) -> None:
        super().__init__(n)
        self.at, self.marker = at, marker

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == self.at and not self.marker.exists():
            self.marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


def _batches(loader: DataLoader) -> list[list[int]]:
    return [b.tolist() for b in loader]


def _loader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    """A loader with the per_sample_seed/threads warning silenced (tested on its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return DataLoader(dataset, **kwargs)


# --------------------------------------------------------------------------- the batches


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_every_index_once_in_sampler_order(k: int, workers: int) -> None:
    dataset = Jittery(101)
    expected = _batches(
        torch.utils.data.DataLoader(
            dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(1)
        )
    )
    loader = DataLoader(
        dataset,
        batch_size=5,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
        num_workers=workers,
        fetch_concurrency=k,
    )
    got = _batches(loader)
    assert got == expected
    assert sorted(i for b in got for i in b) == list(range(101))
    assert [e.samples for e in loader.events] == [len(b) for b in expected]


@pytest.mark.parametrize("workers", [0, 2])
def test_getitems_and_unbatched_datasets(workers: int) -> None:
    loader = DataLoader(GetItemsDataset(23), batch_size=4, num_workers=workers, fetch_concurrency=4)
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [
        list(range(i, min(i + 4, 23))) for i in range(0, 23, 4)
    ]
    assert all(b["batched"].all() for b in batches)  # __getitems__ was used
    unbatched = DataLoader(Jittery(17), batch_size=None, num_workers=workers, fetch_concurrency=4)
    assert [int(x) for x in unbatched] == list(range(17))


@pytest.mark.parametrize("workers", [0, 2])
def test_aget_is_used_with_k_above_one(workers: int) -> None:
    calls = mp.Value("i", 0)
    dataset = AsyncJittery(61, calls)
    loader = DataLoader(dataset, batch_size=6, num_workers=workers, fetch_concurrency=8)
    assert _batches(loader) == [list(range(i, min(i + 6, 61))) for i in range(0, 61, 6)]
    assert calls.value == 0
    one = DataLoader(dataset, batch_size=6, num_workers=workers)  # k = 1: __getitem__
    assert sum(len(b) for b in _batches(one)) == 61
    assert calls.value == 61


def test_persistent_workers_across_epochs_and_an_early_break() -> None:
    loader = DataLoader(
        Jittery(40), batch_size=4, num_workers=2, persistent_workers=True, fetch_concurrency=4
    )
    it = iter(loader)
    for _ in range(3):  # leaves tasks of epoch 0 in flight
        next(it)
    for _ in range(2):
        assert _batches(loader) == [list(range(i, i + 4)) for i in range(0, 40, 4)]


def test_a_dead_worker_is_replaced_without_losing_a_sample(tmp_path: Path) -> None:
    loader = DataLoader(
        KillOnce(48, at=21, marker=tmp_path / "killed"),
        batch_size=4,
        num_workers=2,
        fetch_concurrency=4,
    )
    with pytest.warns(RuntimeWarning, match="died"):
        got = _batches(loader)
    assert got == [list(range(i, i + 4)) for i in range(0, 48, 4)]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("workers", [0, 2])
def test_raise_reports_the_first_failing_sample_in_order(workers: int) -> None:
    # 13 and 17 both fail in batch 1; 17 fails first in time, 13 comes first in order
    loader = DataLoader(
        Failing(40, bad=(13, 17), slow_bad=13),
        batch_size=10,
        num_workers=workers,
        fetch_concurrency=8,
    )
    it = iter(loader)
    assert next(it).tolist() == list(range(10))
    with pytest.raises(ValueError, match="sample 13 is broken") as info:
        next(it)
    if workers:
        assert "while loading dataset index 13" in str(info.value)


def test_raise_from_aget_keeps_type_and_index() -> None:
    loader = DataLoader(
        AsyncFailing(30, bad=(4, 8), slow_bad=4), batch_size=10, num_workers=1, fetch_concurrency=8
    )
    with pytest.raises(KeyError) as info:
        list(loader)
    assert "while loading dataset index 4" in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("dataset", [Failing(30, bad=(7, 25)), AsyncFailing(30, bad=(7, 25))])
def test_skip_and_retry_record_the_same_failures(dataset: Dataset, workers: int) -> None:
    skip = DataLoader(
        dataset, batch_size=10, num_workers=workers, fetch_concurrency=4, on_error="skip"
    )
    assert [len(b) for b in skip] == [9, 10, 9]
    assert [(f.index, f.batch, f.attempts) for f in skip.failures] == [(7, 0, 1), (25, 2, 1)]
    exc_type = "KeyError" if isinstance(dataset, AsyncFailing) else "ValueError"
    assert {f.exc_type for f in skip.failures} == {exc_type}
    assert {f.worker_id for f in skip.failures} == ({-1} if workers == 0 else {0})
    retry = DataLoader(
        dataset,
        batch_size=10,
        num_workers=workers,
        fetch_concurrency=4,
        on_error="retry",
        max_retries=2,
        retry_backoff=0.0,
        retry_exhausted="skip",
    )
    assert sum(len(b) for b in retry) == 28
    assert [(f.index, f.attempts) for f in retry.failures] == [(7, 3), (25, 3)]


def test_validate_runs_on_every_sample() -> None:
    def no_fives(sample: int) -> None:
        if sample % 5 == 0:
            raise ValueError("multiple of 5")

    loader = DataLoader(
        Jittery(20), batch_size=4, fetch_concurrency=4, on_error="skip", validate=no_fives
    )
    assert [i for b in loader for i in b.tolist()] == [i for i in range(20) if i % 5]
    assert [f.index for f in loader.failures] == [0, 5, 10, 15]


# --------------------------------------------------------------------------- latency hiding


@pytest.mark.parametrize("cls", [InFlight, AsyncInFlight])
def test_k_fetches_overlap_within_and_across_batches(cls: type) -> None:
    def peak(k: int) -> int:
        counters = mp.Array("i", 2)
        loader = DataLoader(
            cls(48, 0.01, counters), batch_size=4, num_workers=1, fetch_concurrency=k
        )
        assert sum(len(b) for b in loader) == 48
        assert counters[0] == 0
        return counters[1]

    assert peak(1) == 1
    assert peak(2) == 2  # never more than k
    # batches of 4 with k = 8: more than 4 at once means the next batch started while the
    # current one was still out
    assert 4 < peak(8) <= 8


def test_k_fetches_overlap_in_the_main_process() -> None:
    counters = mp.Array("i", 2)
    loader = DataLoader(InFlight(24, 0.01, counters), batch_size=8, fetch_concurrency=8)
    assert sum(len(b) for b in loader) == 24
    assert 1 < counters[1] <= 8


# --------------------------------------------------------------------------- randomness


def _augmentations(dataset: Dataset, workers: int, k: int, **kwargs: Any) -> torch.Tensor:
    loader = _loader(
        dataset,
        batch_size=6,
        shuffle=True,
        num_workers=workers,
        fetch_concurrency=k,
        per_sample_seed=True,
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    )
    return torch.cat(list(loader))


@pytest.mark.parametrize("cls", [Augmented, AsyncAugmented])
def test_per_sample_seed_is_reproducible_whatever_k_and_workers(cls: type) -> None:
    dataset = cls(30)
    reference = _augmentations(dataset, workers=1, k=1)
    rows = sorted(reference.tolist(), key=lambda row: row[4])
    assert [row[4] for row in rows] == list(range(30))
    assert len({tuple(row[:4]) for row in rows}) == 30  # every sample drew its own numbers
    assert all(row[:4] != row[5:9] for row in rows)  # its two steps did not restart the stream
    for workers, k in [(1, 8), (2, 8), (2, 1), (0, 8), (2, 8)]:
        assert torch.equal(_augmentations(dataset, workers, k), reference), (workers, k)
    assert torch.equal(_augmentations(dataset, 2, 8, dispatch="balanced"), reference)


def test_per_sample_seed_follows_the_epoch_and_spares_the_callers_rng() -> None:
    loader = DataLoader(
        Augmented(12),
        batch_size=4,
        per_sample_seed=True,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    first, second = torch.cat(list(loader)), torch.cat(list(loader))
    assert not torch.equal(first[:, :4], second[:, :4])  # a new epoch, new draws
    after = (torch.rand(1).item(), random.random(), float(np.random.rand()))
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    assert after == (torch.rand(1).item(), random.random(), float(np.random.rand()))


def test_per_sample_seed_survives_a_worker_restart(tmp_path: Path) -> None:
    reference = _augmentations(Augmented(30), workers=2, k=1)
    with pytest.warns(RuntimeWarning, match="died"):
        restarted = _augmentations(
            KillOnceAugmented(30, at=11, marker=tmp_path / "killed"), workers=2, k=4
        )
    assert torch.equal(restarted, reference)


def test_per_sample_seed_makes_a_resumed_epoch_identical() -> None:
    def make() -> DataLoader:
        return _loader(
            Augmented(36),
            batch_size=4,
            shuffle=True,
            num_workers=2,
            fetch_concurrency=4,
            per_sample_seed=True,
            generator=torch.Generator().manual_seed(3),
        )

    full = list(make())
    loader = make()
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    del it
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(rest, full[3:], strict=True))


# --------------------------------------------------------------------------- arguments


def test_arguments_are_checked_and_carried_by_clone() -> None:
    with pytest.raises(ValueError, match="fetch_concurrency should be a positive integer"):
        DataLoader(Jittery(4), fetch_concurrency=0)
    stream = ShardedIterable(8)
    with pytest.raises(ValueError, match="map-style dataset"):
        DataLoader(stream, fetch_concurrency=2)
    with pytest.warns(RuntimeWarning, match="no latency is hidden"):
        DataLoader(Augmented(4), fetch_concurrency=4, per_sample_seed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = DataLoader(AsyncAugmented(4), fetch_concurrency=4, per_sample_seed=True)
    copy = clone(loader, num_workers=1)
    assert (copy.fetch_concurrency, copy.per_sample_seed, copy.num_workers) == (4, True, 1)

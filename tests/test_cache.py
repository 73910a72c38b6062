"""loadtune.datasets.SharedCache: exact counts, the byte bound, the same batches, nothing left.

Datasets and transforms are at module top level so that spawned workers can import them.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from loadtune import DataLoader
from loadtune.datasets import VIEW_MIN_BYTES, CacheStats, SharedCache

Point = namedtuple("Point", ["x", "y"])
BIG = VIEW_MIN_BYTES // 4 + 100  # float32 elements: a sample returned as views
SMALL = 64  # a sample copied out


class Squares(Dataset):
    """Sample i is (``width`` float32 copies of i*i, i); counts its calls in this process."""

    def __init__(self, n: int = 24, width: int = BIG, sleep_s: float = 0.0) -> None:
        self.n = n
        self.width = width
        self.sleep_s = sleep_s
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return torch.full((self.width,), float(i * i)), int(i)


class AsyncSquares(Squares):
    """Squares with ``async def aget``; each call of either path counted in shared memory."""

    def __init__(self, n: int, calls: Any, width: int = SMALL) -> None:
        super().__init__(n, width)
        self.shared_calls = calls  # [__getitem__ calls, aget calls]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with self.shared_calls.get_lock():
            self.shared_calls[0] += 1
        return super().__getitem__(i)

    async def aget(self, i: int) -> tuple[torch.Tensor, int]:
        with self.shared_calls.get_lock():
            self.shared_calls[1] += 1
        await asyncio.sleep(0.002)
        return torch.full((self.width,), float(i * i)), int(i)


class Transformed(Dataset):
    """The uncached reference: ``transform(dataset[i])``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.dataset[i])


class Opaque:
    """A sample type the cache does not store."""

    def __init__(self, i: int) -> None:
        self.i = i


class Opaques(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Opaque:
        return Opaque(i)


class Stream(IterableDataset):
    def __iter__(self) -> Any:
        return iter(range(3))


def scale(sample: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
    """Deterministic, out of place."""
    x, y = sample
    return x * 0.5 + 1, y


def jitter(sample: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
    """Random (torch's RNG, seeded per worker by the loader), out of place."""
    x, y = sample
    return x + torch.rand(x.shape), y


def jitter_in_place(sample: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
    """Random and in place: writes into what the cache returned."""
    x, y = sample
    return x.mul_(2).add_(torch.rand(x.shape)), y


# --------------------------------------------------------------------------- helpers


def _children() -> set[int]:
    """Child processes, less multiprocessing's resource tracker (started by the first spawn,
    it lives as long as the test session)."""
    children = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                children.add(p.pid)
        except psutil.Error:
            pass
    return children


def _cache_mappings(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return sum("loadtune-cache" in line for line in f)
    except OSError:  # the process is gone
        return 0


def _shm_entries() -> set[str]:
    me = str(os.getpid())
    return {n for n in os.listdir("/dev/shm") if me in n or "loadtune" in n}


@pytest.fixture
def clean() -> Any:
    """Assert that a test leaves no process, /dev/shm entry or mapping of a cache behind."""
    gc.collect()
    before_children, before_shm = _children(), _shm_entries()
    assert _cache_mappings() == 0
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while _children() - before_children and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before_children == set()
    assert _shm_entries() - before_shm == set()
    assert _cache_mappings() == 0


def _delta(after: CacheStats, before: CacheStats) -> dict[str, int]:
    return {
        k: v - before.to_dict()[k]
        for k, v in after.to_dict().items()
        if k not in ("bytes_held", "max_bytes")
    }


def _counts(hits: int = 0, misses: int = 0, admitted: int = 0, **rest: int) -> dict[str, int]:
    return {
        "hits": hits,
        "misses": misses,
        "admitted": admitted,
        "refused": rest.get("refused", 0),
        "uncacheable": rest.get("uncacheable", 0),
        "raced": rest.get("raced", 0),
    }


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    assert torch.equal(x, (y.double() ** 2).float()[:, None].expand_as(x))


def _run_epoch(loader: Any) -> list[int]:
    labels = []
    for x, y in loader:
        _check_batch(x, y)
        labels += y.tolist()
    return labels


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "loader_cls, workers, persistent",
    [
        (DataLoader, 0, False),
        (DataLoader, 2, False),
        (DataLoader, 2, True),
        (torch.utils.data.DataLoader, 2, True),
    ],
)
def test_first_epoch_misses_every_sample_and_the_second_hits_every_one(
    clean: None, loader_cls: type, workers: int, persistent: bool
) -> None:
    data = Squares()
    cache = SharedCache(data, max_bytes=1 << 22)
    loader = loader_cls(
        cache,
        batch_size=5,
        shuffle=True,
        num_workers=workers,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(0),
    )
    before = cache.stats()
    assert sorted(_run_epoch(loader)) == list(range(24))
    first = cache.stats()
    assert _delta(first, before) == _counts(misses=24, admitted=24)
    assert sorted(_run_epoch(loader)) == list(range(24))
    second = cache.stats()
    assert _delta(second, first) == _counts(hits=24)
    assert second.bytes_held == first.bytes_held > 24 * BIG * 4
    if workers == 0:
        assert data.calls == 24  # the wrapped dataset was not asked again


def test_aget_passes_through_the_cache(clean: None) -> None:
    calls = mp.Array("i", 2)
    cache = SharedCache(AsyncSquares(24, calls), max_bytes=1 << 20)
    assert inspect.iscoroutinefunction(cache.aget)
    assert getattr(SharedCache(Squares(4), max_bytes=1 << 20), "aget", None) is None
    loader = DataLoader(cache, batch_size=5, num_workers=2, fetch_concurrency=4)
    before = cache.stats()
    assert _run_epoch(loader) == list(range(24))
    first = cache.stats()
    assert _delta(first, before) == _counts(misses=24, admitted=24)
    assert list(calls) == [0, 24]  # every miss went through aget, none through __getitem__
    assert _run_epoch(loader) == list(range(24))
    assert _delta(cache.stats(), first) == _counts(hits=24)
    assert list(calls) == [0, 24]
    x, y = asyncio.run(cache.aget(3))  # a hit needs no event loop of the dataset's
    assert y == 3 and torch.equal(x, torch.full((SMALL,), 9.0))


@pytest.mark.slow
def test_spawned_persistent_workers_share_the_cache(clean: None) -> None:
    cache = SharedCache(Squares(16), max_bytes=1 << 22)
    loader = DataLoader(
        cache, batch_size=4, num_workers=2, persistent_workers=True, multiprocessing_context="spawn"
    )
    assert _run_epoch(loader) == list(range(16))
    assert _delta(cache.stats(), CacheStats.from_dict({})) == _counts(misses=16, admitted=16)
    assert _run_epoch(loader) == list(range(16))
    assert cache.stats().hits == 16 and cache.stats().misses == 16
    assert len({e.pid for e in loader.events}) == 2


def test_main_process_reads_what_workers_stored(clean: None) -> None:
    data = Squares(12, SMALL)
    cache = SharedCache(data, max_bytes=1 << 20)
    assert _run_epoch(DataLoader(cache, batch_size=4, num_workers=2)) == list(range(12))
    for i in range(12):
        x, y = cache[i]
        assert y == i and torch.equal(x, torch.full((SMALL,), float(i * i)))
    assert data.calls == 0  # every sample came from the workers' stores
    assert cache.stats().hits == 12


def test_same_index_in_two_workers_at_once_is_stored_once(clean: None) -> None:
    """Batches 2j and 2j+1 both hold index j and go to different workers at the same time."""
    cache = SharedCache(Squares(8, BIG, sleep_s=0.02), max_bytes=1 << 22)
    sampler = [j for j in range(8) for _ in range(2)]
    loader = DataLoader(cache, batch_size=1, sampler=sampler, num_workers=2)
    assert _run_epoch(loader) == sampler
    s = cache.stats()
    # the second fetch of each index is a hit, or a miss that found the first one storing
    assert s.admitted == 8 and s.hits + s.raced == 8 and s.misses == 8 + s.raced
    assert _run_epoch(loader) == sampler
    assert cache.stats().hits == s.hits + 16


def _hammer(cache: SharedCache, seed: int) -> None:
    torch.set_num_threads(1)  # as in a DataLoader worker: torch's pool does not survive fork
    rng = np.random.default_rng(seed)
    for i in np.concatenate([rng.permutation(len(cache)), rng.permutation(len(cache))]):
        x, y = cache[int(i)]
        if y != i or not torch.equal(x, torch.full_like(x, float(i * i))):
            os._exit(1)
    os._exit(0)


@pytest.mark.parametrize("width", [SMALL, BIG])
def test_concurrent_processes_never_see_a_torn_sample(clean: None, width: int) -> None:
    cache = SharedCache(Squares(48, width), max_bytes=1 << 23)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(cache, seed), daemon=True) for seed in range(3)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            p.kill()
            p.join()
    s = cache.stats()
    assert s.admitted == 48 and s.hits + s.misses == 3 * 96
    assert s.misses == s.admitted + s.raced and s.refused == s.uncacheable == 0


def test_a_store_abandoned_by_a_dead_process_is_taken_over(clean: None) -> None:
    cache = SharedCache(Squares(4, BIG), max_bytes=1 << 20)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    table = cache._attached().table
    table[1] = (1, 0, 0, dead.pid)  # FILLING, owner gone
    table[2] = (1, 0, 0, os.getppid())  # FILLING by a live process: left to it
    x, y = cache[1]
    assert y == 1 and torch.equal(x, torch.full((BIG,), 1.0))
    assert cache[2][1] == 2
    s = cache.stats()
    assert (s.misses, s.admitted, s.raced) == (2, 1, 1)
    assert cache[1][1] == 1 and cache.stats().hits == 1


# --------------------------------------------------------------------------- the bound


@pytest.mark.parametrize("width", [SMALL, BIG])
def test_admission_stops_at_max_bytes(clean: None, width: int) -> None:
    probe = SharedCache(Squares(1, width), max_bytes=1 << 20)
    probe[0]
    per_sample = probe.stats().bytes_held  # one sample's reservation, alignment included
    del probe
    cache = SharedCache(Squares(20, width), max_bytes=5 * per_sample + per_sample // 2)
    loader = DataLoader(cache, batch_size=4, num_workers=2)
    assert _run_epoch(loader) == list(range(20))
    first = cache.stats()
    assert _delta(first, CacheStats.from_dict({})) == _counts(misses=20, admitted=5, refused=15)
    assert first.bytes_held == 5 * per_sample <= first.max_bytes
    assert _run_epoch(loader) == list(range(20))  # refused samples still come out right
    second = cache.stats()
    assert _delta(second, first) == _counts(hits=5, misses=15, refused=15)
    assert second.bytes_held == first.bytes_held


def test_a_smaller_sample_still_fits_after_a_refusal(clean: None) -> None:
    class Sizes(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> np.ndarray:
            return np.full([4096, 1 << 20, 1024][i], i, dtype=np.uint8)

    cache = SharedCache(Sizes(), max_bytes=64 * 1024)
    for i in range(3):
        assert np.array_equal(cache[i], np.full(len(cache[i]), i, dtype=np.uint8))
    s = cache.stats()
    assert (s.admitted, s.refused) == (2, 2)  # index 1 is refused on each read
    assert s.bytes_held <= 64 * 1024


# --------------------------------------------------------------------------- same batches


@pytest.mark.parametrize(
    "transform, workers",
    [(scale, 2), (jitter, 2), (jitter_in_place, 0), (jitter_in_place, 2)],
)
def test_epochs_are_those_of_the_uncached_loader(
    clean: None, transform: Callable, workers: int
) -> None:
    def epochs(dataset: Dataset) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        torch.manual_seed(0)  # the main process's RNG, for workers == 0
        loader = DataLoader(
            dataset,
            batch_size=4,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(1),
        )
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(3)]

    cache = SharedCache(Squares(16), max_bytes=1 << 22, transform=transform)
    cached = epochs(cache)
    plain = epochs(Transformed(Squares(16), transform))
    assert cache.stats().hits == 32 and cache.stats().misses == 16
    for got, want in zip(cached, plain, strict=True):
        assert len(got) == len(want) == 4
        for (x, y), (x0, y0) in zip(got, want, strict=True):
            assert torch.equal(y, y0) and torch.equal(x, x0)
    if transform is not scale:  # the transform ran after the cache: new noise every epoch
        assert not torch.equal(cached[0][0][0], cached[1][0][0])


def test_in_place_writes_never_reach_the_cache(clean: None) -> None:
    cache = SharedCache(Squares(4, BIG), max_bytes=1 << 20)
    nine = torch.full((BIG,), 9.0)
    cache[3]  # stored
    a, _ = cache[3]  # a view of the cache
    a.fill_(-1)
    b, _ = cache[3]  # a is alive: b is a copy of the cached bytes, not a's memory
    assert torch.equal(b, nine) and a[0] == -1
    b.fill_(-2)
    assert a[0] == -1
    del a, b
    c, _ = cache[3]  # a view again; the pages a wrote were dropped
    assert torch.equal(c, nine)
    del c
    pid = os.fork()
    if pid == 0:  # another process reads the untouched bytes
        os._exit(0 if torch.equal(cache[3][0], nine) else 1)
    assert os.waitpid(pid, 0)[1] == 0


# --------------------------------------------------------------------------- types


def test_supported_sample_types_come_back_equal(clean: None) -> None:
    big = torch.arange(BIG * 2, dtype=torch.float64).view(2, BIG)
    sample = {
        "image": big.t(),  # not contiguous: comes back contiguous
        "parts": [
            torch.tensor(3.5),
            torch.zeros(0, 3),
            torch.tensor([True, False]),
            torch.arange(6, dtype=torch.bfloat16),
            torch.tensor([1 + 2j], dtype=torch.complex64).conj(),
            torch.arange(4, dtype=torch.int16).neg(),
        ],
        "arrays": (np.arange(5, dtype=">f4"), np.zeros((2, 0)), np.float32(1.5)),
        "point": Point(torch.ones(2), 7),
        "meta": ("name", b"raw", None, 3, 2.5, 1j, True),
        7: "int keys too",
    }

    class One(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> Any:
            return sample

    cache = SharedCache(One(), max_bytes=1 << 22)
    assert cache[0] is sample  # a miss returns the dataset's own sample
    got = cache[0]
    assert cache.stats().hits == 1
    assert got.keys() == sample.keys() and got["meta"] == sample["meta"]
    assert torch.equal(got["image"], big.t()) and got["image"].is_contiguous()
    for g, w in zip(got["parts"], sample["parts"], strict=True):
        assert type(g) is torch.Tensor and g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w.resolve_conj().resolve_neg())
    for g, w in zip(got["arrays"], sample["arrays"], strict=True):
        assert type(g) is type(w) and g.dtype == w.dtype and np.array_equal(g, w)
    assert type(got["point"]) is Point and torch.equal(got["point"].x, torch.ones(2))
    assert got[7] == "int keys too"


def test_other_types_pass_through_uncached_and_are_counted(clean: None) -> None:
    cache = SharedCache(Opaques(), max_bytes=1 << 20)
    assert [cache[i].i for i in range(6)] + [cache[2].i] == [0, 1, 2, 3, 4, 5, 2]
    s = cache.stats()
    assert (s.hits, s.misses, s.uncacheable, s.admitted, s.bytes_held) == (0, 7, 7, 0, 0)

    class Grad(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.ones(3, requires_grad=True)

    grads = SharedCache(Grad(), max_bytes=1 << 20)
    assert grads[np.int64(1)].requires_grad and grads.stats().uncacheable == 1


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes should be a positive int"):
        SharedCache(Squares(), max_bytes=0)
    with pytest.raises(ValueError, match="max_bytes should be a positive int"):
        SharedCache(Squares(), max_bytes=1.5e9)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map-style"):
        SharedCache(Stream(), max_bytes=1 << 20)


def test_stats_round_trip_and_pickled_copies_share_the_memory(clean: None) -> None:
    cache = SharedCache(Squares(3, SMALL), max_bytes=1 << 20)
    cache[0]
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.stats() == cache.stats()
    copy[0]
    assert cache.stats().hits == 1
    stats = cache.stats()
    assert CacheStats.from_dict(stats.to_dict()) == stats


# --------------------------------------------------------------------------- lifetime


def test_normal_end_and_break_release_everything(clean: None) -> None:
    cache = SharedCache(Squares(), max_bytes=1 << 22)
    loader = DataLoader(cache, batch_size=4, num_workers=2)
    _run_epoch(loader)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    held = cache[5]  # a view: keeps this process's mapping until it is dropped
    assert _cache_mappings() > 0
    del cache, loader
    gc.collect()
    assert _cache_mappings() > 0 and torch.equal(held[0], torch.full((BIG,), 25.0))
    del held


_KILLED_SCRIPT = textwrap.dedent(
    """
    import os, time, torch
    from loadtune import DataLoader
    from loadtune.datasets import SharedCache

    class DS(torch.utils.data.Dataset):
        def __len__(self): return 10**4
        def __getitem__(self, i):
            time.sleep(0.002)
            return torch.full((20000,), float(i))

    cache = SharedCache(DS(), max_bytes=1 << 26)
    it = iter(DataLoader(cache, batch_size=4, num_workers=2))
    for _ in range(5):
        next(it)
    print(" ".join(str(w.pid) for w in it._workers), flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_nothing_survives_a_killed_main_process(clean: None) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        assert all(_cache_mappings(p) > 0 for p in [proc.pid, *workers])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) for p in workers)
    # every process that had the memory file open or mapped is gone, so the kernel freed it
    assert not [
        p.pid for p in psutil.process_iter() if p.pid != os.getpid() and _cache_mappings(p.pid)
    ]

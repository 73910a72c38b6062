"""CacheProbe: exact window counts from a fake cache, and a real profile over a SharedCache."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.data import Dataset, Subset

from loadtune import DataLoader
from loadtune.datasets import SharedCache
from loadtune.profiling import find_cache, profile
from probes.base import Watch
from probes.cache import CacheProbe


@dataclass
class Counts:
    hits: int = 0
    misses: int = 0
    admitted: int = 0
    refused: int = 0
    uncacheable: int = 0
    raced: int = 0
    bytes_held: int = 0
    max_bytes: int = 1000

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class FakeCache:
    """A cache whose counters the test sets by hand."""

    def __init__(self) -> None:
        self.counts = Counts(hits=5, misses=10, admitted=10, bytes_held=400)

    def stats(self) -> Counts:
        return Counts(**self.counts.__dict__)


def test_counts_are_those_of_the_window() -> None:
    cache = FakeCache()
    probe = CacheProbe()
    probe.start(Watch(options={"cache": cache}))  # 5 hits and 10 misses before: not counted
    probe.sample(100.0)
    cache.counts.hits, cache.counts.misses, cache.counts.admitted = 8, 11, 11
    cache.counts.bytes_held = 440
    probe.sample(100.5)  # 3 hits, 1 miss: 75%
    probe.sample(101.0)  # nothing read: no hit-rate point
    cache.counts.hits, cache.counts.refused = 14, 2
    cache.counts.misses = 13
    result = probe.stop()  # 6 hits, 2 misses since the last sample, read at stop
    assert result.available
    assert result.summary == {
        "hits": 9.0,
        "misses": 3.0,
        "admitted": 1.0,
        "refused": 2.0,
        "hit_rate_pct": 75.0,
        "bytes_held": 440.0,
        "max_bytes": 1000.0,
    }
    rate, held = result.series
    assert (rate.t, rate.values) == ((0.5,), (75.0,))
    assert (held.t, held.values) == ((0.0, 0.5, 1.0), (400.0, 440.0, 440.0))


def test_without_a_cache_it_says_so() -> None:
    probe = CacheProbe()
    probe.start(Watch())
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available and not result.summary
    assert result.reason == "the loader's dataset has no loadtune.datasets.SharedCache"


class Broken:
    def stats(self) -> Counts:
        raise OSError("the cache is gone")


def test_unreadable_counters_are_unavailable_with_the_reason() -> None:
    probe = CacheProbe()
    probe.start(Watch(options={"cache": Broken()}))
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available and not result.summary
    assert result.reason == "cannot read the cache's counters: OSError: the cache is gone"


class Rows(Dataset):
    def __len__(self) -> int:
        return 4000

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((16,), float(i))


def test_find_cache_looks_through_wrappers() -> None:
    cache = SharedCache(Rows(), max_bytes=1 << 20)
    assert find_cache(cache) is cache
    assert find_cache(Subset(cache, [1, 2])) is cache
    assert find_cache(torch.utils.data.ConcatDataset([Rows(), Subset(cache, [3])])) is cache
    assert find_cache(Rows()) is None


@pytest.mark.parametrize("warm", [False, True])
def test_profile_reports_the_hit_rate_and_memory_held(warm: bool) -> None:
    cache = SharedCache(Rows(), max_bytes=8 << 20)
    if warm:
        for i in range(len(cache)):
            cache[i]
    loader = DataLoader(cache, batch_size=8, num_workers=2)
    result = profile(loader, batches=40, warmup=2, probes=["stages", "cache"])
    found = result.probes["cache"]
    after = cache.stats()
    assert found.available
    s = found.summary
    assert s["hits"] + s["misses"] > 0
    if warm:  # every read in the window came from the cache
        assert (s["misses"], s["hit_rate_pct"]) == (0.0, 100.0)
    else:  # every read was a first read of its index, and each fitted
        assert (s["hits"], s["hit_rate_pct"], s["refused"]) == (0.0, 0.0, 0.0)
        # A miss is counted before its store and admitted after it: at either end of the
        # window each of the 2 workers may be between the two, one sample at a time.
        assert abs(s["misses"] - s["admitted"]) <= 2
    assert s["max_bytes"] == 8 << 20
    if warm:
        assert s["bytes_held"] == after.bytes_held
    else:  # read when the window closed; the workers stored a few more before they stopped
        assert 0 < s["bytes_held"] <= after.bytes_held


def test_profile_without_a_cache_leaves_the_probe_out() -> None:
    loader = DataLoader(Rows(), batch_size=8, num_workers=0)
    result = profile(loader, batches=10, warmup=1, probes=["stages", "cache"])
    assert "cache" not in result.probes

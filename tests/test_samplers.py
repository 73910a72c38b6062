"""loadtune.samplers: exactly once, stratified, bucketed, sharded, deterministic, resumable."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, get_worker_info

from loadtune import DataLoader
from loadtune.samplers import (
    BucketBatchSampler,
    ChunkShuffleSampler,
    PaddingReport,
    ShardedSampler,
    ShuffleBuffer,
    StratifiedBatchSampler,
)

from .faults.resume_check import check_resume

SIZES = [0, 1, 7, 64, 101]
BATCH_SIZES = [1, 3, 8]


def skewed_labels(n: int, seed: int = 0) -> np.ndarray:
    """Labels with shares 0.6 / 0.25 / 0.1 / 0.05: the minority classes are what strata keep."""
    return np.random.default_rng(seed).choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05])


def long_tailed_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Lognormal token counts: most short, a few very long (as text is)."""
    rng = np.random.default_rng(seed)
    return np.maximum(1, rng.lognormal(mean=3.0, sigma=1.0, size=n)).astype(np.int64)


def flat(items: list[Any]) -> list[int]:
    """The indices a sampler yielded, whether it yields indices or batches."""
    return [i for item in items for i in (item if isinstance(item, list) else [item])]


# Factories (n, batch size, drop_last) -> a sampler; the ids say which one failed.
FACTORIES: dict[str, Callable[[int, int, bool], Any]] = {
    "stratified": lambda n, bs, dl: StratifiedBatchSampler(
        skewed_labels(n), bs, drop_last=dl, seed=5
    ),
    "chunk": lambda n, bs, dl: ChunkShuffleSampler(n, bs, seed=5),
    "bucket": lambda n, bs, dl: BucketBatchSampler(
        long_tailed_lengths(n), bs, bucket_size=4 * bs, drop_last=dl, seed=5
    ),
    "sharded": lambda n, bs, dl: ShardedSampler(n, 1, 0, seed=5),
}
BATCHED = {"stratified", "bucket"}


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize("n", SIZES)
def test_every_index_exactly_once_per_epoch(kind: str, n: int) -> None:
    for bs, epoch in itertools.product(BATCH_SIZES, (0, 3)):
        sampler = FACTORIES[kind](n, bs, False)
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert sorted(flat(items)) == list(range(n)), (bs, epoch)
        assert len(items) == len(sampler)
        if kind in BATCHED:  # only the last batch may be short
            assert all(len(b) == bs for b in items[:-1]) and all(0 < len(b) for b in items)


@pytest.mark.parametrize("kind", sorted(BATCHED))
@pytest.mark.parametrize("n", SIZES)
def test_drop_last_drops_only_the_short_batch(kind: str, n: int) -> None:
    for bs in BATCH_SIZES:
        items = list(FACTORIES[kind](n, bs, True))
        indices = flat(items)
        assert len(items) == n // bs and all(len(b) == bs for b in items)
        assert len(set(indices)) == len(indices) == (n // bs) * bs
        assert set(indices) <= set(range(n))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ranks", [1, 2, 3, 5])
def test_shards_are_contiguous_slices_that_cover_the_epoch_once(n: int, ranks: int) -> None:
    for epoch in (0, 1):
        shards = []
        for rank in range(ranks):
            sampler = ShardedSampler(n, ranks, rank, seed=9)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        common = ShardedSampler(n, 1, 0, seed=9)
        common.set_epoch(epoch)
        assert [i for shard in shards for i in shard] == list(common)
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize("ranks", [2, 3, 5])
def test_sharding_a_sampler_splits_what_it_yields(kind: str, ranks: int) -> None:
    for n, bs in [(7, 3), (64, 8), (101, 3)]:
        inner = FACTORIES[kind](n, bs, False)
        inner.set_epoch(2)
        whole = list(inner)
        shards = []
        for rank in range(ranks):
            sharded = ShardedSampler(FACTORIES[kind](n, bs, False), ranks, rank)
            sharded.set_epoch(2)
            shards.append(list(sharded))
            assert len(shards[-1]) == len(sharded)
        assert [item for shard in shards for item in shard] == whole, (n, bs)
        assert sorted(flat(whole)) == list(range(n))


@pytest.mark.parametrize("batch_size", [10, 32, 50, 97])
def test_every_batch_keeps_the_class_proportions(batch_size: int) -> None:
    labels = skewed_labels(1000, seed=1)
    share = np.bincount(labels) / len(labels)
    sampler = StratifiedBatchSampler(labels, batch_size, seed=2)
    for _ in range(3):  # epochs
        batches = list(sampler)
        for batch in batches:
            counts = np.bincount(labels[batch], minlength=4)
            assert np.all(np.abs(counts - len(batch) * share) < 1), (counts, len(batch) * share)
        assert sorted(flat(batches)) == list(range(1000))
    # The truth the test measures against: random batches of the same size do not keep them.
    perm = np.random.default_rng(0).permutation(1000)
    random_counts = [np.bincount(labels[perm[i : i + 32]], minlength=4) for i in range(0, 992, 32)]
    assert any(np.any(np.abs(c - 32 * share) >= 1) for c in random_counts)


def test_stratified_accepts_string_and_tensor_labels() -> None:
    names = ["cat", "dog", "dog", "cat", "eel", "dog"] * 5
    sampler = StratifiedBatchSampler(names, 6, seed=0)
    for batch in sampler:
        assert sorted(names[i] for i in batch) == ["cat", "cat", "dog", "dog", "dog", "eel"]
    tensor = torch.tensor([0, 1, 1, 0, 2, 1] * 5)
    assert list(StratifiedBatchSampler(tensor, 6, seed=0)) == list(
        StratifiedBatchSampler(names, 6, seed=0)
    )


def test_chunk_shuffle_keeps_items_in_their_chunk_and_chunks_together() -> None:
    sampler = ChunkShuffleSampler(100, 8, seed=4)
    order = list(sampler)
    chunk_runs = [k for k, _ in itertools.groupby(i // 8 for i in order)]
    assert sorted(chunk_runs) == list(range(13))  # each chunk is read in one run
    assert chunk_runs != sorted(chunk_runs)  # chunk order shuffled
    assert (
        order != sorted(order)
        and any(  # order inside a chunk shuffled
            order[j : j + 8] != sorted(order[j : j + 8]) for j in range(0, 96, 8)
        )
    )


def batch_padding(lengths: np.ndarray, batches: list[list[int]]) -> int:
    return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)


def test_bucketing_pads_less_than_random_batching() -> None:
    lengths = long_tailed_lengths(4000, seed=3)
    sampler = BucketBatchSampler(lengths, 32, seed=1)
    for epoch in (0, 1):
        report = sampler.padding_saved()
        batches = list(sampler)  # this epoch's batches, measured independently
        assert report.tokens == int(lengths.sum())
        assert report.bucketed_padding == batch_padding(lengths, batches)
        perm = np.random.default_rng(epoch).permutation(len(lengths)).tolist()
        random_pad = batch_padding(lengths, [perm[i : i + 32] for i in range(0, 4000, 32)])
        # Lognormal(3, 1) lengths: a random batch of 32 pads to roughly its largest of 32
        # draws (~e^5), a sorted bucket's batch to its neighbour's; bucketing removes most.
        assert report.bucketed_padding < 0.2 * random_pad
        assert report.bucketed_padding < 0.2 * report.random_padding
        assert report.saved == report.random_padding - report.bucketed_padding
        assert 0.8 < report.saved_fraction < 1
    assert PaddingReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_bucket_size_trades_padding_for_randomness() -> None:
    lengths = long_tailed_lengths(4000, seed=3)
    small = BucketBatchSampler(lengths, 32, bucket_size=64, seed=1).padding_saved(0)
    large = BucketBatchSampler(lengths, 32, bucket_size=2048, seed=1).padding_saved(0)
    assert large.bucketed_padding < small.bucketed_padding < small.random_padding


def all_factories() -> dict[str, Callable[[], Any]]:
    """One small instance of everything that claims to resume, by name."""
    labels, lengths = skewed_labels(53), long_tailed_lengths(53)
    return {
        "stratified": lambda: StratifiedBatchSampler(labels, 6, seed=3),
        "stratified-drop": lambda: StratifiedBatchSampler(labels, 6, seed=3, drop_last=True),
        "chunk": lambda: ChunkShuffleSampler(53, 5, seed=3),
        "bucket": lambda: BucketBatchSampler(lengths, 4, bucket_size=16, seed=3),
        "sharded": lambda: ShardedSampler(53, 3, 1, seed=3),
        "sharded-bucket": lambda: ShardedSampler(
            BucketBatchSampler(lengths, 4, bucket_size=16, seed=3), 2, 1
        ),
        "buffer": lambda: ShuffleBuffer(range(53), 8, seed=3),
    }


@pytest.mark.parametrize("name", all_factories())
def test_same_seed_and_epoch_same_order_other_epoch_or_seed_another(name: str) -> None:
    make = all_factories()[name]

    def epoch_of(obj: Any, epoch: int) -> list[Any]:
        obj.set_epoch(epoch)
        return list(obj)

    assert epoch_of(make(), 0) == epoch_of(make(), 0)
    assert epoch_of(make(), 4) == epoch_of(make(), 4)
    assert epoch_of(make(), 0) != epoch_of(make(), 1)
    other = make()
    other.load_state_dict({"epoch": 0, "seed": 4, "yielded": 0})
    assert list(other) != epoch_of(make(), 0)
    # A plain loop over epochs advances the epoch by itself, consistently with set_epoch.
    looped = make()
    assert [list(looped) for _ in range(3)] == [epoch_of(make(), e) for e in range(3)]


@pytest.mark.parametrize("name", all_factories())
def test_resumes_mid_epoch(name: str) -> None:
    check_resume(all_factories()[name], epochs=2, points=[(0, 0), (0, 1), (0, 5), (1, 3)])


def test_state_counts_what_the_iterator_yielded() -> None:
    sampler = ChunkShuffleSampler(20, 4, seed=1)
    it = iter(sampler)
    head = [next(it) for _ in range(3)]
    assert sampler.state_dict() == {"epoch": 0, "seed": 1, "yielded": 3}
    resumed = ChunkShuffleSampler(20, 4, seed=1)
    resumed.load_state_dict(sampler.state_dict())
    rest = list(resumed)  # continues once...
    assert head + rest == list(ChunkShuffleSampler(20, 4, seed=1))
    assert resumed.state_dict() == {"epoch": 1, "seed": 1, "yielded": 0}
    assert len(list(resumed)) == 20  # ...and the next iter() is a whole epoch
    # Only the newest iterator moves the state.
    old = iter(sampler)
    next(old)
    new = iter(sampler)
    next(old), next(old)
    assert sampler.state_dict()["yielded"] == 0
    next(new)
    assert sampler.state_dict()["yielded"] == 1


def test_load_state_dict_rejects_what_is_not_a_sampler_state() -> None:
    sampler = ChunkShuffleSampler(10, 2)
    for bad in (None, [], {"epoch": 0, "seed": 0}, {"epoch": "0", "seed": 0, "yielded": 0}):
        with pytest.raises(ValueError, match="sampler state"):
            sampler.load_state_dict(bad)  # type: ignore[arg-type]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        StratifiedBatchSampler([0, 1], 0)
    with pytest.raises(ValueError, match="bucket_size"):
        BucketBatchSampler([1, 2, 3], 4, bucket_size=2)
    with pytest.raises(ValueError, match="rank"):
        ShardedSampler(10, 2, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkShuffleSampler(10, -1)
    with pytest.raises(ValueError, match="one-dimensional"):
        StratifiedBatchSampler(np.zeros((2, 2)), 2)


def test_loadtune_loader_resumes_through_the_stratified_batch_sampler() -> None:
    labels = skewed_labels(61, seed=4)

    def make() -> DataLoader:
        sampler = StratifiedBatchSampler(labels, 8, seed=3)
        return DataLoader(torch.arange(61), batch_sampler=sampler, num_workers=2)

    loader = make()
    it = iter(loader)
    next(it)
    # The loader keeps the sampler's own state from the start of the epoch and counts
    # handed-out batches itself (its workers read ahead of the consumer).
    assert loader.state_dict()["sampler"] == {"epoch": 0, "seed": 3, "yielded": 0}
    assert loader.state_dict()["done_prefix"] == 1
    del it
    check_resume(make, epochs=2, points=[(0, 2), (1, 3)])


def test_loadtune_loader_resumes_a_shuffle_buffer_in_workers() -> None:
    check_resume(
        lambda: DataLoader(ShuffleBuffer(list(range(40)), 5, seed=1), batch_size=3, num_workers=2),
        epochs=2,
        points=[(0, 1), (1, 4)],
    )


class SelfSharding(IterableDataset):
    """Yields only this worker's share of range(n), as a reader of per-worker files would."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return iter(range(worker, self.n, workers))


@pytest.mark.parametrize("loader_cls", [DataLoader, torch.utils.data.DataLoader])
@pytest.mark.parametrize("workers", [0, 2])
def test_shuffle_buffer_output_is_a_permutation_of_its_input(
    loader_cls: type, workers: int
) -> None:
    n = 250
    for source, shards in [(list(range(n)), False), (SelfSharding(n), True)]:
        stream = ShuffleBuffer(source, 16, seed=2, source_shards=shards)
        loader = loader_cls(stream, batch_size=7, num_workers=workers)
        out = [i for batch in loader for i in batch.tolist()]
        assert sorted(out) == list(range(n))
        assert out != list(range(n))


def test_shuffle_buffer_shards_over_ranks_and_workers_and_stays_bounded() -> None:
    n, size = 300, 10
    out = []
    for rank in range(2):
        stream = ShuffleBuffer(range(n), size, seed=7, rank=rank, world_size=2)
        for batch in DataLoader(stream, batch_size=None, num_workers=2):
            out.append(int(batch))
    assert sorted(out) == list(range(n))
    # Bounded buffer: the item at input position p comes out no earlier than p - size.
    alone = list(ShuffleBuffer(range(n), size, seed=7))
    where = {x: i for i, x in enumerate(alone)}
    assert sorted(alone) == list(range(n))
    assert all(where[p] >= p - size for p in range(n))
    assert any(where[p] < p for p in range(n))  # and it does reorder


def torch_cases() -> dict[str, tuple[dict[str, Any], list[int]]]:
    """DataLoader arguments for each sampler, and the indices one epoch must cover."""
    labels, lengths = skewed_labels(40), long_tailed_lengths(40)
    common = ShardedSampler(40, 1, 0, seed=1)
    return {
        "stratified": ({"batch_sampler": StratifiedBatchSampler(labels, 8, seed=1)}, [*range(40)]),
        "chunk": ({"sampler": ChunkShuffleSampler(40, 5, seed=1), "batch_size": 8}, [*range(40)]),
        "bucket": ({"batch_sampler": BucketBatchSampler(lengths, 8, seed=1)}, [*range(40)]),
        # rank 1 of 2: the second half of the common permutation
        "sharded": ({"sampler": ShardedSampler(40, 2, 1, seed=1), "batch_size": 8}, [*common][20:]),
    }


@pytest.mark.parametrize("name", torch_cases())
def test_each_works_with_torch_dataloader(name: str) -> None:
    kwargs, expected = torch_cases()[name]
    data = torch.arange(40)
    sampler = kwargs.get("batch_sampler") or kwargs["sampler"]
    torch_out = [b.tolist() for b in torch.utils.data.DataLoader(data, num_workers=2, **kwargs)]
    got = flat(torch_out)
    assert (got if name == "sharded" else sorted(got)) == expected
    sampler.set_epoch(0)  # the same epoch again, through loadtune's loader: the same batches
    assert [b.tolist() for b in DataLoader(data, **kwargs)] == torch_out
    assert [b.tolist() for b in torch.utils.data.DataLoader(data, **kwargs)] != torch_out  # epoch 1


def test_shuffle_buffer_works_with_torch_dataloader() -> None:
    stream = ShuffleBuffer(range(40), 8, seed=1)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    got = [int(x) for x in loader]
    assert sorted(got) == list(range(40)) and got != list(range(40))

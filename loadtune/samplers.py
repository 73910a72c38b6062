"""The order samples are read in: stratified, chunked, bucketed, sharded and stream-buffered.

Every sampler here works with ``torch.utils.data.DataLoader`` and ``loadtune.DataLoader``
(as ``sampler=`` or, for the batch samplers, ``batch_sampler=``), is a pure function of
(seed, epoch), and resumes mid-epoch through ``state_dict()``/``load_state_dict()``.
:class:`ShuffleBuffer` does the same for a stream (an ``IterableDataset``).

# NOTE [ Sampler state ]
A sampler's order for an epoch depends only on its arguments, ``seed`` and ``epoch``, so
its state is three plain ints: ``{"epoch", "seed", "yielded"}``, where ``yielded`` counts
the items (indices, or batches for a batch sampler) its current iterator has handed out
in that epoch. The rules:

* ``iter(sampler)`` starts epoch ``sampler.epoch`` from the beginning, except right after
  ``load_state_dict()``: that one ``iter()`` continues after the ``yielded`` items.
* An iterator that runs to its end advances ``epoch`` by one, so plain ``for`` loops over
  epochs get a new order each time; ``set_epoch(e)`` sets the next epoch explicitly (as
  ``DistributedSampler.set_epoch``) and is idempotent with that rule.
* Only the newest iterator counts: a new ``iter()`` or ``set_epoch()`` detaches the older
  one, which keeps yielding its order but no longer moves the state.

``loadtune.DataLoader`` takes the sampler's state at the start of each epoch (the batch
sampler's, or that of the sampler it wraps) and fast-forwards past the batches it handed
out itself, because its workers read ahead of the consumer (NOTE [ Resume ] in
loadtune/loader/_resume.py); a sampler's own ``yielded`` matters when it is used alone.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, Sampler, get_worker_info

__all__ = [
    "BucketBatchSampler",
    "ChunkShuffleSampler",
    "PaddingReport",
    "ShardedSampler",
    "ShuffleBuffer",
    "StratifiedBatchSampler",
]

_MASK64 = (1 << 64) - 1
_BLOCK = 4096  # indices converted to Python ints this many at a time


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} should be a positive integer, but got {name}={value!r}")
    return int(value)


def _as_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} should be one-dimensional, got shape {array.shape}")
    return array


def _share(total: int, parts: int, part: int) -> tuple[int, int]:
    """[start, end) of ``part``'s contiguous share; the first ``total % parts`` get one more."""
    base, extra = divmod(total, parts)
    start = part * base + min(part, extra)
    return start, start + base + (part < extra)


def _ints(array: np.ndarray) -> Iterator[int]:
    for lo in range(0, len(array), _BLOCK):
        yield from array[lo : lo + _BLOCK].tolist()


class _EpochState:
    """Epoch, seed and position with the rules of NOTE [ Sampler state ].

    A subclass implements ``_stream(epoch, start)``: the epoch's items after the first
    ``start``, as an iterator.
    """

    seed: int
    epoch: int

    def _init_state(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed should be an int, but got seed={seed!r}")
        self.seed = int(seed)
        self.epoch = 0
        self._yielded = 0
        self._resume = False
        self._token: object | None = None

    def _stream(self, epoch: int, start: int) -> Iterator[Any]:
        raise NotImplementedError

    def _rng(self, epoch: int, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & _MASK64, epoch & _MASK64, *salt])

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``'s order from its start.

        Args:
            epoch: The epoch number; each gives a different order (for a given seed).
        """
        self.epoch = int(epoch)
        self._yielded = 0
        self._resume = False
        self._token = None

    def state_dict(self) -> dict[str, int]:
        """Where this sampler stands, as plain data (NOTE [ Sampler state ]).

        Returns:
            ``{"epoch", "seed", "yielded"}``: the epoch in progress (or the next one) and
            how many items of it the current iterator has yielded.
        """
        return {"epoch": self.epoch, "seed": self.seed, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next ``iter()`` resumes that epoch.

        Args:
            state: What :meth:`state_dict` returned (possibly through JSON or torch.save).

        Raises:
            ValueError: ``state`` is not a dict of the three ints.
        """
        if not isinstance(state, dict):
            raise ValueError(f"a sampler state is a dict, got {type(state).__name__}")
        for key in ("epoch", "seed", "yielded"):
            if isinstance(state.get(key), bool) or not isinstance(state.get(key), int):
                raise ValueError(f"sampler state needs an int {key!r}, got {state.get(key)!r}")
        if state["yielded"] < 0:
            raise ValueError(f"sampler state has negative 'yielded': {state['yielded']}")
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self._yielded = state["yielded"]
        self._resume = True
        self._token = None

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        start = self._yielded if self._resume else 0
        self._resume = False
        self._yielded = start
        token = self._token = object()
        return self._counted(self._stream(epoch, start), epoch, token)

    def _counted(self, items: Iterator[Any], epoch: int, token: object) -> Iterator[Any]:
        for item in items:
            if self._token is token:
                self._yielded += 1  # counted before handing out: state_dict() includes it
            yield item
        if self._token is token:
            self.epoch, self._yielded, self._token = epoch + 1, 0, None


class StratifiedBatchSampler(_EpochState, Sampler[list[int]]):
    """Batches that each keep the class proportions of the whole dataset.

    With ``p_c`` the share of class ``c`` in ``labels``, every full batch holds
    ``floor(batch_size * p_c)`` or ``ceil(batch_size * p_c)`` samples of class ``c`` (the
    short last batch of size ``t`` likewise of ``t * p_c``), and every index appears exactly
    once per epoch (``drop_last`` leaves out the short batch). The remainders are dealt by
    largest remainder and wrap-around: each batch takes ``batch_size - sum(floor)`` extras,
    one per class at most, and a class's extras go to consecutive (then shuffled) batches,
    so they spread evenly over the epoch. Which samples of a class fill which batch, the
    batch order and the order inside a batch are shuffled per (seed, epoch) when
    ``shuffle``; the short batch stays last.

    Args:
        labels: One class label per dataset index (ints, strings, a tensor or an array).
        batch_size: Samples per batch.
        drop_last: Leave out the short last batch (its samples differ per epoch).
        seed: The seed of every shuffle.
        shuffle: Shuffle; without it batch ``k`` holds each class's next indices in order.

    Example:
        >>> labels = [0] * 6 + [1] * 3
        >>> sampler = StratifiedBatchSampler(labels, batch_size=3, seed=1)
        >>> [sorted(labels[i] for i in batch) for batch in sampler]
        [[0, 0, 1], [0, 0, 1], [0, 0, 1]]
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        drop_last: bool = False,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.batch_size = _positive("batch_size", batch_size)
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self._init_state(seed)
        array = _as_array(labels, "labels")
        self.classes, inverse = np.unique(array, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self._counts = np.bincount(inverse, minlength=len(self.classes)).astype(np.int64)
        self._members = np.split(order, np.cumsum(self._counts)[:-1]) if len(array) else []
        self._n = len(array)
        self._plan()

    def _plan(self) -> None:
        """Per class: samples in every full batch, extras (start, count), samples in the tail.

        The table "batch x class" with entries ``size_b * p_c`` has integer margins, so it
        rounds to floors and ceilings with its margins kept; with all full batches alike
        only the tail row is a choice, and it is feasible iff each class's remaining extras
        fit in ``[0, full batches]``.
        """
        n, bs, counts = self._n, self.batch_size, self._counts
        full, tail = divmod(n, bs)
        floor_q = (bs * counts) // max(n, 1)
        ceil_q = floor_q + ((bs * counts) % max(n, 1) != 0)
        t_floor = (tail * counts) // max(n, 1)
        t_ceil = t_floor + ((tail * counts) % max(n, 1) != 0)
        lo = np.maximum(t_floor, counts - full * ceil_q)
        hi = np.minimum(t_ceil, counts - full * floor_q)
        need = tail - int(lo.sum())
        open_ = np.flatnonzero(hi > lo)
        if need < 0 or need > len(open_) or np.any(hi < lo):  # cannot happen: see above
            raise AssertionError(f"no stratified rounding for counts {counts.tolist()}")
        remainder = (tail * counts) % max(n, 1)
        chosen = open_[np.lexsort((open_, -remainder[open_]))[:need]]
        in_tail = lo.copy()
        in_tail[chosen] += 1
        extras = counts - in_tail - full * floor_q
        self._full, self._tail = full, tail
        self._base, self._in_tail, self._extras = floor_q, in_tail, extras
        self._extra_start = np.cumsum(extras) - extras

    def __len__(self) -> int:
        return self._full + (self._tail > 0 and not self.drop_last)

    def _stream(self, epoch: int, start: int) -> Iterator[list[int]]:
        rng = self._rng(epoch) if self.shuffle else None
        full = self._full
        row_of = rng.permutation(full) if rng is not None else np.arange(full)
        items, rows = [], []
        for c, members in enumerate(self._members):
            if rng is not None:
                members = rng.permutation(members)
            base_rows = np.repeat(np.arange(full), self._base[c])
            extra_rows = (self._extra_start[c] + np.arange(self._extras[c])) % max(full, 1)
            full_rows = row_of[np.concatenate([base_rows, extra_rows]).astype(np.int64)]
            rows.append(np.concatenate([full_rows, np.full(self._in_tail[c], full)]))
            items.append(members)
        if not items:
            return iter(())
        item, row = np.concatenate(items), np.concatenate(rows)
        inside = rng.random(len(item)) if rng is not None else item
        order = np.lexsort((inside, row))
        sizes = np.bincount(row, minlength=full + 1)
        batches = np.split(item[order], np.cumsum(sizes)[:-1])[: len(self)]
        return (b.tolist() for b in batches[start:])


class ChunkShuffleSampler(_EpochState, Sampler[int]):
    """Shuffle the order of contiguous chunks of indices, and the order inside each chunk.

    What it gives up: an index never leaves its chunk ``[k * chunk_size, (k + 1) *
    chunk_size)``, so indices that are neighbours in storage are read close together in
    time and a batch mixes only a few chunks. Why: storage that is read in runs (a file
    of records, a tar shard, an object store, a spinning disk, a cold page cache) serves a
    chunk with one sequential read and read-ahead, where a full permutation pays one random
    access per sample. Pick ``chunk_size`` so that a chunk is one efficient read (a few MB);
    a batch then draws on about ``batch_size / chunk_size + 1`` chunks, so where neighbours
    are alike (frames of one video, rows of one source) keep it well below ``batch_size``.

    Args:
        n: Dataset length.
        chunk_size: Indices per chunk (the last chunk may be shorter).
        seed: The seed of both shuffles.

    Example:
        >>> list(ChunkShuffleSampler(9, 3, seed=0))  # chunks 1, 2, 0, each shuffled
        [5, 4, 3, 8, 6, 7, 2, 0, 1]
    """

    def __init__(self, n: int, chunk_size: int, *, seed: int = 0) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n should be a non-negative integer, but got n={n!r}")
        self.n = int(n)
        self.chunk_size = _positive("chunk_size", chunk_size)
        self._init_state(seed)

    def __len__(self) -> int:
        return self.n

    def _stream(self, epoch: int, start: int) -> Iterator[int]:
        rng = self._rng(epoch)
        size = self.chunk_size
        full = self.n // size
        # Full chunks are rows shuffled in place (fast for many small chunks); the short last
        # chunk, if any, takes its place in the chunk order like any other.
        rows = rng.permuted(np.arange(full * size).reshape(full, size), axis=1)
        chunks = list(rows)
        if self.n > full * size:
            chunks.append(rng.permutation(np.arange(full * size, self.n)))
        if not chunks:
            return iter(())
        order = np.concatenate([chunks[k] for k in rng.permutation(len(chunks))])
        return _ints(order[start:])


@dataclass(frozen=True, slots=True)
class PaddingReport:
    """Padding of one epoch's batches: bucketed against random batching of the same lengths.

    A batch padded to its longest sample costs ``len(batch) * max(length)`` tokens; the
    padding is that minus the real tokens.

    Attributes:
        tokens: Real tokens in the epoch's batches.
        bucketed_padding: Padded tokens with :class:`BucketBatchSampler`'s batches.
        random_padding: Padded tokens with random batches of the same sizes.
    """

    tokens: int
    bucketed_padding: int
    random_padding: int

    @property
    def saved(self) -> int:
        """Padded tokens that bucketing avoids."""
        return self.random_padding - self.bucketed_padding

    @property
    def saved_fraction(self) -> float:
        """Share of random batching's padded tokens that bucketing avoids (0 if none)."""
        return self.saved / self.random_padding if self.random_padding else 0.0

    def to_dict(self) -> dict[str, int]:
        """Plain data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaddingReport:
        """The inverse of :meth:`to_dict`."""
        return cls(int(data["tokens"]), int(data["bucketed_padding"]), int(data["random_padding"]))


def _padding(lengths: np.ndarray, batches: Sequence[np.ndarray]) -> tuple[int, int]:
    tokens = padded = 0
    for batch in batches:
        if len(batch):
            got = lengths[batch]
            tokens += int(got.sum())
            padded += int(got.max()) * len(batch)
    return tokens, padded - tokens


class BucketBatchSampler(_EpochState, Sampler[list[int]]):
    """Batches of samples of similar length, from shuffled buckets, to cut padding.

    Each epoch the indices are shuffled and cut into buckets of ``bucket_size``; each
    bucket is sorted by length and the concatenation cut into batches of ``batch_size``,
    whose order is shuffled (the short last batch stays last). Larger buckets give less
    padding and less randomness: a batch holds samples of one bucket (two at a boundary).

    Args:
        lengths: The length (e.g. tokens) of each dataset index.
        batch_size: Samples per batch.
        bucket_size: Indices per bucket; defaults to ``50 * batch_size``.
        drop_last: Leave out the short last batch.
        seed: The seed of every shuffle.
        shuffle: Shuffle; without it buckets are index ranges and batches keep their order.

    Example:
        >>> sampler = BucketBatchSampler([1, 9, 2, 8], batch_size=2, shuffle=False)
        >>> list(sampler)
        [[0, 2], [3, 1]]
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        bucket_size: int | None = None,
        drop_last: bool = False,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.lengths = _as_array(lengths, "lengths").astype(np.int64)
        self.batch_size = _positive("batch_size", batch_size)
        self.bucket_size = _positive(
            "bucket_size", 50 * self.batch_size if bucket_size is None else bucket_size
        )
        if self.bucket_size < self.batch_size:
            raise ValueError(
                f"bucket_size ({self.bucket_size}) should be at least batch_size "
                f"({self.batch_size}): a bucket holds whole batches of similar length"
            )
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self._init_state(seed)

    def __len__(self) -> int:
        full, tail = divmod(len(self.lengths), self.batch_size)
        return full + (tail > 0 and not self.drop_last)

    def _cut(self, order: np.ndarray, rng: np.random.Generator | None) -> list[np.ndarray]:
        full = len(order) // self.batch_size
        batches = np.split(order, np.arange(1, full + 1) * self.batch_size)
        head, tail = batches[:full], [b for b in batches[full:] if len(b)]
        if rng is not None:
            head = [head[i] for i in rng.permutation(full)]
        return head + ([] if self.drop_last else tail)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = self._rng(epoch) if self.shuffle else None
        shuffled = rng.permutation(n) if rng is not None else np.arange(n)
        bucket = np.arange(n) // self.bucket_size
        return self._cut(shuffled[np.lexsort((self.lengths[shuffled], bucket))], rng)

    def _stream(self, epoch: int, start: int) -> Iterator[list[int]]:
        return (b.tolist() for b in self._batches(epoch)[start:])

    def padding_saved(self, epoch: int | None = None) -> PaddingReport:
        """The padding of an epoch's batches against random batching of the same lengths.

        Args:
            epoch: Which epoch; the sampler's current ``epoch`` by default.

        Returns:
            A :class:`PaddingReport`; the random batches are a seeded permutation cut the
            same way (same sizes, same ``drop_last``), so the report is deterministic.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        tokens, bucketed = _padding(self.lengths, self._batches(epoch))
        rng = self._rng(epoch, 1)
        _, random_pad = _padding(self.lengths, self._cut(rng.permutation(len(self.lengths)), rng))
        return PaddingReport(tokens, bucketed, random_pad)


class ShardedSampler(_EpochState, Sampler[Any]):
    """One rank's contiguous share of an epoch's order; all ranks together see it once.

    Given ``n``, the common order is a permutation of ``range(n)`` per (seed, epoch) (or
    ``range(n)`` without ``shuffle``). Given a sampler, it is what that sampler yields for
    the epoch (after ``set_epoch(epoch)`` when it has one): its indices or, for a batch
    sampler, its batches, so this can shard any sampler in this module. Rank ``r`` gets
    the ``r``-th contiguous slice, the first ``len % num_replicas`` ranks one item more.
    Nothing is padded or dropped, so ranks may differ by one item (or batch): a
    data-parallel loop whose steps synchronise must stop at the shortest rank or use
    ``torch.distributed.algorithms.Join``.

    Args:
        n_or_sampler: The dataset length, or a sampler that yields the same order on every
            rank for a given epoch (the samplers here do, with the same seed).
        num_replicas: Number of ranks.
        rank: This rank, in ``[0, num_replicas)``.
        shuffle: Shuffle ``range(n)`` (ignored when wrapping a sampler: its order is used).
        seed: The seed of that shuffle (the same on every rank). When wrapping a sampler
            with an int ``seed`` attribute (all of this module's), that seed is used and
            shown in ``state_dict()``, and a loaded state's seed is set on it.

    Example:
        >>> [list(ShardedSampler(5, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
        [[0, 1, 2], [3, 4]]
    """

    def __init__(
        self,
        n_or_sampler: int | Iterable[Any],
        num_replicas: int,
        rank: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.num_replicas = _positive("num_replicas", num_replicas)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise ValueError(f"rank should be an integer, but got rank={rank!r}")
        if not 0 <= rank < self.num_replicas:
            raise ValueError(
                f"Invalid rank {rank}, rank should be in the interval [0, {self.num_replicas - 1}]"
            )
        self.rank = int(rank)
        if isinstance(n_or_sampler, (int, np.integer)) and not isinstance(n_or_sampler, bool):
            if n_or_sampler < 0:
                raise ValueError(f"n should be non-negative, but got {n_or_sampler}")
            self.n: int | None = int(n_or_sampler)
            self.sampler: Iterable[Any] | None = None
        else:
            self.n, self.sampler = None, n_or_sampler
        self.shuffle = bool(shuffle)
        self._init_state(getattr(self.sampler, "seed", seed) if self._seeded_inner() else seed)

    def _seeded_inner(self) -> bool:
        seed = getattr(self.sampler, "seed", None)
        return isinstance(seed, int) and not isinstance(seed, bool)

    def __len__(self) -> int:
        total = self.n if self.n is not None else len(self.sampler)  # type: ignore[arg-type]
        start, end = _share(total, self.num_replicas, self.rank)
        return end - start

    def _stream(self, epoch: int, start: int) -> Iterator[Any]:
        if self.sampler is None:
            assert self.n is not None
            common = self._rng(epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
            lo, hi = _share(self.n, self.num_replicas, self.rank)
            return _ints(common[lo:hi][start:])
        if self._seeded_inner():
            self.sampler.seed = self.seed  # type: ignore[union-attr]  # a loaded state's seed
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        items = list(self.sampler)
        lo, hi = _share(len(items), self.num_replicas, self.rank)
        return iter(items[lo:hi][start:])


class ShuffleBuffer(_EpochState, IterableDataset):
    """Shuffle a stream through a buffer of ``size`` items; shards across workers and ranks.

    The buffer fills with the first ``size`` items of this shard; then each new item
    replaces a uniformly chosen one, which is yielded; at the end the rest is yielded in
    random order. The output is a permutation of the shard, and an item can come out at
    most ``size`` positions before where it went in (memory is bounded; randomness too).

    Sharding: by default the buffer itself shards: with ``W`` DataLoader workers (from
    ``get_worker_info()``) and ``world_size`` ranks, worker ``w`` of rank ``r`` takes the
    items ``i`` of the source with ``i % (world_size * W) == r * W + w``, so all workers of
    all ranks together see every item once. Every shard reads (and skips) the whole source,
    so for a source that is expensive to read, let it shard itself (e.g. assign files by
    ``get_worker_info()`` and rank) and pass ``source_shards=True``: the buffer then takes
    every item it is given. Either way the shuffle is seeded per (seed, epoch, shard).

    Epochs and resume follow NOTE [ Sampler state ]. Inside DataLoader workers each worker
    holds a copy, so with non-persistent workers call ``set_epoch(e)`` in the main process
    before each epoch for a new order (a source with ``set_epoch`` gets the call too). The
    state is ``{"epoch", "seed", "yielded"}``, not the buffer's contents: a resume re-reads
    the source from the epoch's start and discards the ``yielded`` items already handed
    out. That keeps the state small enough for ``loadtune.DataLoader`` to carry with every
    batch and needs no serializable samples, at the price of re-reading the consumed part
    of the source; it needs a source that yields the same items in the same order each time
    it is iterated for an epoch (a list, a file reader; not a live feed). The source's own
    state is not used.

    Args:
        source: An iterable (e.g. an ``IterableDataset``) re-iterable per epoch.
        size: Buffer capacity, in items.
        seed: The seed of the shuffle.
        rank: This rank, in ``[0, world_size)``.
        world_size: Number of ranks.
        source_shards: The source already yields only this worker's and rank's share.

    Example:
        >>> stream = ShuffleBuffer(range(10), size=4, seed=0)
        >>> sorted(stream) == list(range(10))
        True
    """

    def __init__(
        self,
        source: Iterable[Any],
        size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        source_shards: bool = False,
    ) -> None:
        self.source = source
        self.size = _positive("size", size)
        self.world_size = _positive("world_size", world_size)
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank should be in [0, {self.world_size - 1}], but got {rank!r}")
        self.rank = int(rank)
        self.source_shards = bool(source_shards)
        self._init_state(seed)

    def _shard(self) -> tuple[int, int]:
        """(this shard, number of shards) over ranks and DataLoader workers."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def _stream(self, epoch: int, start: int) -> Iterator[Any]:
        shard, shards = self._shard()
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        # random.Random: one draw per item, and the stdlib's is several times cheaper than
        # numpy's scalar draws; its seed is a 64-bit value from numpy's SeedSequence.
        entropy = [self.seed & _MASK64, epoch & _MASK64, shard, shards]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        items = iter(self.source)
        if not self.source_shards and shards > 1:
            items = itertools.islice(items, shard, None, shards)
        return itertools.islice(_buffered(items, self.size, random.Random(seed)), start, None)


def _buffered(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        out, buffer[j] = buffer[j], item
        yield out
    rng.shuffle(buffer)
    yield from buffer

"""Datasets, samplers and callables shared by the loader tests.

Everything here is at module top level so that it pickles for the ``spawn`` and
``forkserver`` start methods (a worker imports this module by name).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

Point = namedtuple("Point", ["x", "y"])


class Pair(NamedTuple):
    """A typing.NamedTuple sample type."""

    left: Any
    right: Any


class CollateResult(NamedTuple):
    """What :func:`custom_collate` returns."""

    indices: list[int]
    stacked: torch.Tensor
    meta: dict[str, Any]


def _info() -> tuple[int, int, int]:
    """(worker id, num_workers, seed) from get_worker_info(), or -1s in the main process."""
    info = get_worker_info()
    if info is None:
        return -1, -1, -1
    return info.id, info.num_workers, info.seed


class IndexDataset(Dataset[int]):
    """Sample ``i`` is the int ``i``; ``slow`` maps indices to a sleep in seconds."""

    def __init__(self, n: int, slow: dict[int, float] | None = None) -> None:
        self.n = n
        self.slow = slow or {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i in self.slow:
            time.sleep(self.slow[i])
        return i


class GetItemsDataset(Dataset[dict]):
    """A dataset with ``__getitems__`` (torch's batched fetch)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "value": torch.full((2,), float(i))}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [{"index": i, "value": torch.full((2,), float(i)), "batched": True} for i in indices]


class RowViewDataset(Dataset[tuple]):
    """Each sample views one row (or a strided column) of one big tensor."""

    def __init__(self, n: int) -> None:
        self.data = torch.arange(n * 8, dtype=torch.float32).reshape(n, 8)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple:
        row = self.data[i]
        return row, self.data[:, i % 8], row  # the same tensor twice


class TransportDataset(Dataset[dict]):
    """Odd tensors for the shared-memory transport: growing sizes, strided/expanded views."""

    SIZES = (10, 200_000, 10, 400_000, 50)

    def __init__(self, n: int, exotic: bool = False) -> None:
        self.n = n
        self.exotic = exotic  # leaves default_collate cannot stack (batch_size=None only)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        base = torch.arange(40, dtype=torch.float64)
        sample: dict[str, Any] = {
            "grow": torch.full((self.SIZES[(i // 3) % len(self.SIZES)],), float(i)),
            "expanded": torch.tensor([float(i)]).expand(50),
            "strided": base[i % 3 : i % 3 + 12 : 3],
            "int8_offset": torch.arange(7, dtype=torch.int8)[1:] + i,
            "numpy_strided": np.arange(12).reshape(3, 4)[:, ::2] * i,
        }
        if self.exotic:
            sample["sparse"] = torch.sparse_coo_tensor([[0, i % 3]], [1.0, 2.0], (4,))
            sample["parameter"] = torch.nn.Parameter(torch.ones(2) * i)
            sample["conj"] = torch.tensor([1 + 2j * i]).conj()
        return sample


class ProbeDataset(Dataset[dict]):
    """Random augmentation from torch, random and numpy, plus what get_worker_info() says."""

    def __init__(self, n: int, slow: dict[int, float] | None = None) -> None:
        self.n = n
        self.slow = slow or {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i in self.slow:
            time.sleep(self.slow[i])
        info = get_worker_info()
        worker, num_workers, seed = _info()
        return {
            "index": i,
            "torch": torch.rand(3),
            "random": random.random(),
            "numpy": np.random.rand(2),
            "worker": worker,
            "num_workers": num_workers,
            "seed": seed,
            "same_dataset": info is not None and info.dataset is self,
            # a string: dispatch="balanced" seeds torch with up to 64 bits, too big for int64
            "initial_seed": str(torch.initial_seed() if info is not None else -1),
        }


INIT_CALLS: list[int] = []


def record_worker_init(worker_id: int) -> None:
    """A worker_init_fn that records its argument in the worker's module global."""
    INIT_CALLS.append(worker_id)


def failing_worker_init(worker_id: int) -> None:
    """A worker_init_fn that fails."""
    raise ValueError(f"init failed in worker {worker_id}")


class InitProbeDataset(Dataset[tuple]):
    """Sample: (index, worker id, last worker_init_fn argument, number of init calls)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        return i, _info()[0], INIT_CALLS[-1] if INIT_CALLS else -1, len(INIT_CALLS)


class TwoArgError(Exception):
    """An exception whose constructor cannot take the loader's single message argument."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)


class FailingDataset(Dataset[int]):
    """Raises ``exc_type`` at index ``bad``; the message does not mention the index."""

    def __init__(self, n: int, bad: int, exc_type: str = "ValueError") -> None:
        self.n = n
        self.bad = bad
        self.exc_type = exc_type

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i == self.bad:
            if self.exc_type == "ValueError":
                raise ValueError("broken sample")
            if self.exc_type == "KeyError":
                raise KeyError("broken sample")
            raise TwoArgError(3, "broken sample")
        return i


def collate_sample(kind: str, i: int) -> Any:
    """One sample of the given kind, for the default_collate tests."""
    if kind == "tensor":
        return torch.full((2, 3), float(i))
    if kind == "tensor_dtypes":
        return (
            torch.tensor([i, i + 1], dtype=torch.uint8),
            torch.tensor([i], dtype=torch.int32),
            torch.tensor([i / 2], dtype=torch.float16),
            torch.tensor([i % 2 == 0]),
            torch.tensor(i),  # 0-dim
            torch.arange(6, dtype=torch.float64).reshape(2, 3).t() + i,  # non-contiguous
            torch.empty(0, 3),
            torch.tensor([complex(i, 1)], dtype=torch.complex64),
        )
    if kind == "numpy":
        return (
            np.arange(6).reshape(2, 3) * i,
            np.full((2,), i, dtype=np.float32),
            np.float32(i),
            np.int16(i),
        )
    if kind == "int":
        return i
    if kind == "float":
        return i / 4
    if kind == "bool":
        return i % 3 == 0
    if kind == "str":
        return f"s{i}"
    if kind == "bytes":
        return f"b{i}".encode()
    if kind == "dict":
        return {"z": i, "a": i / 2, "m": f"m{i}"}
    if kind == "ordereddict":
        return OrderedDict([("y", i), ("b", torch.tensor([i]))])
    if kind == "list":
        return [i, i / 2, torch.tensor([i, -i])]
    if kind == "tuple":
        return (i, f"t{i}", torch.ones(2) * i)
    if kind == "namedtuple":
        return Point(i, torch.tensor([i, i]))
    if kind == "typed_namedtuple":
        return Pair(left=f"l{i}", right=np.array([i, i + 1]))
    if kind == "nested":
        return {
            "points": [Point(i, i / 2), Point(torch.tensor([i]), f"p{i}")],
            "pair": Pair(left={"k": i, "s": f"s{i}"}, right=(i % 2 == 0, np.int64(i))),
            "meta": OrderedDict([("name", f"n{i}"), ("tensor", torch.full((2, 2), float(i)))]),
        }
    raise ValueError(kind)


COLLATE_KINDS = [
    "tensor",
    "tensor_dtypes",
    "numpy",
    "int",
    "float",
    "bool",
    "str",
    "bytes",
    "dict",
    "ordereddict",
    "list",
    "tuple",
    "namedtuple",
    "typed_namedtuple",
    "nested",
]


class CollateDataset(Dataset[Any]):
    """Samples of one kind from :func:`collate_sample`."""

    def __init__(self, kind: str, n: int) -> None:
        self.kind = kind
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return collate_sample(self.kind, i)


class NoneDataset(Dataset[Any]):
    """Samples default_collate cannot handle (None)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> Any:
        return None


def custom_collate(batch: list[Any]) -> CollateResult:
    """A collate_fn with its own output type, a shared-storage view and a plain dict."""
    stacked = torch.stack([torch.as_tensor(sample[0], dtype=torch.float32) for sample in batch])
    return CollateResult(
        indices=[int(sample[0]) for sample in batch],
        stacked=stacked,
        meta={"n": len(batch), "names": tuple(str(s[1]) for s in batch), "view": stacked[1:]},
    )


class EvensThenOdds(Sampler[int]):
    """A custom sampler: the even indices, then the odd ones, descending."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        yield from range(0, self.n, 2)
        yield from reversed(range(1, self.n, 2))


class GrowingBatches(Sampler[list[int]]):
    """A custom batch sampler: batches of 1, 2, 3, ... indices, in a fixed permutation."""

    def __init__(self, n: int) -> None:
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()

    def __len__(self) -> int:
        count, size, used = 0, 1, 0
        while used < len(self.order):
            used += size
            size += 1
            count += 1
        return count

    def __iter__(self) -> Iterator[list[int]]:
        start, size = 0, 1
        while start < len(self.order):
            yield self.order[start : start + size]
            start += size
            size += 1


class ShardedIterable(IterableDataset):
    """Worker w yields (i, w) for i in range(w, n, num_workers); the main process yields all."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        worker, num_workers, _ = _info()
        if worker < 0:
            worker, num_workers = 0, 1
        for i in range(worker, self.n, num_workers):
            yield i, worker


class UnevenShards(IterableDataset):
    """Worker w yields ``lengths[w]`` samples (100 * w + k, w); the main process yields all."""

    def __init__(self, lengths: tuple[int, ...]) -> None:
        self.lengths = lengths

    def __iter__(self) -> Iterator[tuple[int, int]]:
        worker, _, _ = _info()
        workers = range(len(self.lengths)) if worker < 0 else [worker]
        for w in workers:
            for k in range(self.lengths[w]):
                yield 100 * w + k, w


class UnshardedIterable(IterableDataset):
    """Yields range(n) in every worker (so each worker duplicates the stream)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[dict]:
        worker, _, seed = _info()
        for i in range(self.n):
            yield {"i": i, "worker": worker, "seed": seed, "torch": torch.rand(1)}


class SizedUnsharded(UnshardedIterable):
    """An UnshardedIterable that reports ``n`` as its length (too few with workers)."""

    def __len__(self) -> int:
        return self.n

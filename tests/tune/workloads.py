"""Datasets and settings the autotune tests share.

The workloads sleep per sample, so their truth is known: n workers deliver about n times
the samples of one (sleeping takes no CPU, so this holds on 2 cores), and a trial takes a
few tenths of a second.
"""

from __future__ import annotations

import time

import torch

from loadtune import DataLoader
from loadtune.targets import LoaderFactory, resolve


class Sleepy(torch.utils.data.Dataset):
    """Each sample sleeps ``delay`` seconds: throughput grows with the worker count."""

    def __init__(self, delay: float = 0.002, n: int = 100_000) -> None:
        self.delay, self.n = delay, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.zeros(8)


class FailsWithManyWorkers(Sleepy):
    """Raises in any worker of a loader with more than one worker."""

    def __getitem__(self, i: int) -> torch.Tensor:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError(f"cannot share the handle among {info.num_workers} workers")
        return super().__getitem__(i)


def fast(**kw: object) -> dict[str, object]:
    """Small windows, one short A/B, an in-memory study: a whole run in a few seconds."""
    return {"storage": None, "batches": 20, "warmup": 3, "rounds": 2, "finalists": 1, **kw}


def sleepy_factory(delay: float = 0.002, batch_size: int = 4) -> LoaderFactory:
    """A factory of loadtune loaders over :class:`Sleepy`."""
    return resolve(DataLoader(Sleepy(delay), batch_size=batch_size))

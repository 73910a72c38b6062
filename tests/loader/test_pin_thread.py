"""The pin-memory thread's receive path, exercised without an accelerator.

On a CPU-only machine pinning itself cannot run, so ``loader._pin_thread = True`` starts
the same thread with pinning off: it receives and rebuilds batches while the consumer
works, and everything else (order, epochs, crashes, shutdown) must behave as without it.
"""

from __future__ import annotations

import gc
import threading

import psutil
import pytest
import torch

import loadtune
from loadtune import DataLoader

from .test_lifecycle import ExitAt, Squares


def _threaded(*args: object, **kwargs: object) -> DataLoader:
    loader = DataLoader(*args, **kwargs)
    loader._pin_thread = True
    return loader


def test_batches_and_epochs_match_the_direct_path() -> None:
    ds = Squares(40, 8)
    gen_kwargs = {"batch_size": 3, "shuffle": True, "num_workers": 2, "persistent_workers": True}
    direct = DataLoader(ds, generator=torch.Generator().manual_seed(3), **gen_kwargs)
    threaded = _threaded(ds, generator=torch.Generator().manual_seed(3), **gen_kwargs)
    for _ in range(2):
        a = [y.tolist() for _, y in direct]
        b = [y.tolist() for _, y in threaded]
        assert a == b and len(a) == 14
    it, it_direct = iter(threaded), iter(direct)
    assert any(t.name == "loadtune-pin-memory" for t in threading.enumerate())
    assert torch.equal(next(it)[1], next(it_direct)[1])
    # a new epoch after a break drops the stale answers of the old one
    assert [y.tolist() for _, y in threaded] == [y.tolist() for _, y in direct]
    del it, it_direct


def test_worker_crash_is_reported_through_the_thread() -> None:
    loader = _threaded(ExitAt(5, "exit"), batch_size=2, num_workers=2, on_worker_death="raise")
    with pytest.raises(loadtune.WorkerCrashError, match="exited with code 3"):
        for _ in loader:
            pass


def test_thread_and_workers_end_with_the_iterator() -> None:
    before = {p.pid for p in psutil.Process().children()}
    it = iter(_threaded(Squares(40, 8), batch_size=4, num_workers=2))
    next(it)
    del it
    gc.collect()
    assert not any(t.name == "loadtune-pin-memory" for t in threading.enumerate())
    assert {p.pid for p in psutil.Process().children()} - before == set()

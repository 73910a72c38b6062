"""num_workers="auto" under stress: resizes mid-sample, killed workers, leaks, resume."""

from __future__ import annotations

import gc
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from torch.utils.data import Dataset

from loadtune import DataLoader
from loadtune.loader._autopool import PoolSettings

from .resume_check import check_resume

QUIET = PoolSettings(window_s=1e9)  # the controller never decides: sizes come from the test


def _children() -> dict[int, str]:
    return {p.pid: p.status() for p in psutil.Process().children(recursive=True)}


def _shm_entries() -> set[str]:
    me = str(os.getpid())
    return {n for n in os.listdir("/dev/shm") if me in n or "loadtune" in n}


def _block_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum("loadtune-block" in line for line in f)


@pytest.fixture
def clean() -> Iterator[None]:
    """The test leaves no process, /dev/shm entry or block mapping behind."""
    gc.collect()
    before, before_shm = set(_children()), _shm_entries()
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while set(_children()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_children()) - before == set()
    assert _shm_entries() - before_shm == set()
    assert _block_mappings() == 0


class Marked(Dataset):
    """Sample i is i; fetching it takes ``delay`` s between an 'in-i' and an 'out-i' file."""

    def __init__(self, n: int, delay: float, marks: Path) -> None:
        self.n, self.delay, self.marks = n, delay, marks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        (self.marks / f"in-{i}").touch()
        time.sleep(self.delay)
        (self.marks / f"out-{i}").touch()
        return i


def _inside(marks: Path, worker: Any) -> bool:
    """Whether ``worker`` is inside ``__getitem__`` now (batch_size 1: batch k is index k)."""
    if not worker.outstanding:
        return False
    k = min(worker.outstanding)
    return (marks / f"in-{k}").exists() and not (marks / f"out-{k}").exists()


def _auto(dataset: Dataset, hook: Callable[[int], int | None], **kw: Any) -> DataLoader:
    loader = DataLoader(dataset, num_workers="auto", **kw)
    loader._pool_settings = QUIET
    loader._pool_hook = hook
    return loader


def test_resize_while_the_worker_is_inside_getitem(clean: None, tmp_path: Path) -> None:
    state: dict[str, Any] = {"it": None, "done": False}

    def hook(taken: int) -> int | None:
        # retire worker 1 (the highest id) at a moment it is inside __getitem__
        it = state["it"]
        if state["done"] or taken < 2 or not _inside(tmp_path, it._workers[1]):
            return None
        state["done"] = True
        state["held"] = sorted(it._workers[1].outstanding)
        return 1

    loader = _auto(Marked(16, 0.15, tmp_path), hook, batch_size=1, max_workers=2)
    it = state["it"] = iter(loader)
    got = []
    deadline = time.monotonic() + 60
    for batch in it:
        got.append(int(batch))
        if not state["done"] and time.monotonic() < deadline:
            time.sleep(0.01)  # let the hook find worker 1 mid-sample
    del it
    assert got == list(range(16))
    (shrink,) = loader.worker_history
    assert (shrink.before, shrink.after) == (2, 1)
    from_one = [e for e in loader.events if e.worker_id == 1]
    held = [e for e in from_one if e.batch in state["held"]]
    assert held and held[0].fetch_start < shrink.time < held[0].sent  # it finished that one
    assert {e.batch for e in from_one} >= set(state["held"])
    assert [e.batch for e in from_one if e.batch > max(state["held"])] == []  # and no more


def test_a_retired_worker_killed_mid_sample_hands_its_batches_back(
    clean: None, tmp_path: Path
) -> None:
    state: dict[str, Any] = {"it": None, "done": False, "killed": None}

    def hook(taken: int) -> int | None:
        it = state["it"]
        if state["done"] or taken < 2 or not _inside(tmp_path, it._workers[1]):
            return None
        state["done"] = True
        return 1

    loader = _auto(Marked(14, 0.3, tmp_path), hook, batch_size=1, max_workers=2)
    it = state["it"] = iter(loader)
    got = []
    with pytest.warns(RuntimeWarning, match="died after it was retired") as record:
        for batch in it:
            got.append(int(batch))
            retired = it._workers[1]
            if state["done"] and state["killed"] is None and retired.retiring:
                if not retired.stopping and _inside(tmp_path, retired):
                    state["killed"] = (retired.pid, sorted(retired.outstanding))
                    os.kill(retired.pid, signal.SIGKILL)
            elif not state["done"]:
                time.sleep(0.01)
    del it
    assert state["killed"] is not None, "worker 1 was never caught mid-sample"
    assert got == list(range(14))
    pid, held = state["killed"]
    (warning,) = [w for w in record if "died after it was retired" in str(w.message)]
    assert str(warning.message) == (
        f"DataLoader worker (pid {pid}) died after it was retired: worker 1 was killed by "
        f"SIGKILL while holding batches {held}; dispatched those batches to the other workers"
    )
    events = {e.batch: e for e in loader.events}
    assert all(events[k].worker_id == 0 for k in held)  # worker 0 made them after all


class DieAt(Dataset):
    """Sample i is i; the first worker to fetch an index in ``at`` is SIGKILLed (once)."""

    def __init__(self, n: int, at: list[int], marks: Path) -> None:
        self.n, self.at, self.marks = n, at, marks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i in self.at:
            try:
                fd = os.open(self.marks / f"died-{i}", os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return i
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.002)
        return i


def test_resizes_and_killed_workers_every_index_once_in_order(clean: None, tmp_path: Path) -> None:
    sizes = [3, 1, 4, 2]

    def hook(taken: int) -> int | None:
        return sizes[(taken // 4) % len(sizes)] if taken % 4 == 0 else None

    loader = _auto(DieAt(150, [20, 61, 62, 100], tmp_path), hook, batch_size=3, max_workers=4)
    with pytest.warns(RuntimeWarning) as record:
        batches = [b.tolist() for b in loader]
    assert batches == [list(range(s, s + 3)) for s in range(0, 150, 3)]
    deaths = [str(w.message) for w in record if "died" in str(w.message)]
    assert len(deaths) == 4  # one per killed index, restarted or handed back
    assert len(loader.worker_history) >= 20


def test_retired_workers_exit_and_are_reaped_mid_epoch(clean: None) -> None:
    before = set(_children())  # other tests' processes may still be on their way out

    def mine() -> dict[int, str]:
        return {pid: status for pid, status in _children().items() if pid not in before}

    loader = _auto(
        torch.utils.data.TensorDataset(torch.arange(200)),
        lambda taken: {1: 4, 5: 1}.get(taken),
        batch_size=2,
        max_workers=4,
    )
    it = iter(loader)
    for k, _ in enumerate(it):
        if k == 2:
            assert sum(s != psutil.STATUS_ZOMBIE for s in mine().values()) == 4
        if k == 60:
            deadline = time.monotonic() + 10
            while len(mine()) > 1 and time.monotonic() < deadline:
                next(it)  # each batch handed out reaps what has exited
            assert list(mine()) == [it._workers[0].pid]
            break
    assert [(e.before, e.after) for e in loader.worker_history] == [
        (2, 3),
        (3, 4),
        (4, 3),
        (3, 2),
        (2, 1),
    ]
    del it


def test_persistent_pool_keeps_its_size_across_epochs(clean: None) -> None:
    loader = _auto(
        torch.arange(40),
        lambda taken: 3 if taken == 2 else None,
        batch_size=4,
        max_workers=4,
        persistent_workers=True,
    )
    first = [b.tolist() for b in loader]
    loader._pool_hook = None
    second = [b.tolist() for b in loader]
    assert first == second == [list(range(s, s + 4)) for s in range(0, 40, 4)]
    assert loader.num_workers == 3
    assert {e.worker_id for e in loader.events if e.epoch == 1} <= {0, 1, 2}
    del loader


class Draws(Dataset):
    """Sample i: (i, a torch draw, a random draw, a numpy draw), as one float64 tensor."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, i: int) -> torch.Tensor:
        values = [i, float(torch.rand(1)), random.random(), float(np.random.rand())]
        return torch.tensor(values, dtype=torch.float64)


def test_resume_mid_epoch_with_auto() -> None:
    def make() -> DataLoader:
        return _auto(
            Draws(),
            lambda taken: [1, 3, 2][taken % 3],
            batch_size=4,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
            max_workers=3,
        )

    check_resume(make, epochs=2, points=[(0, 1), (0, 4), (1, 3)])


def test_resume_starts_from_the_size_the_run_reached(clean: None) -> None:
    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(5)

    loader = _auto(
        Draws(),
        lambda taken: 3 if taken == 1 else None,
        batch_size=2,
        max_workers=4,
        generator=gen(),
    )
    it = iter(loader)
    head = [next(it) for _ in range(4)]
    state = loader.state_dict()
    assert state["pool"] == {"num_workers": 3, "prefetch_factor": 2}
    del it
    resumed = DataLoader(Draws(), batch_size=2, num_workers="auto", max_workers=4, generator=gen())
    resumed._pool_settings = QUIET
    resumed.load_state_dict(state)
    assert resumed.num_workers == 3
    it = iter(resumed)
    assert sum(1 for w in it._workers if w.active) == 3
    rest = list(it)
    reference = list(
        DataLoader(Draws(), batch_size=2, num_workers=1, dispatch="balanced", generator=gen())
    )
    assert all(torch.equal(a, b) for a, b in zip(head + rest, reference, strict=True))
    assert resumed.worker_history == ()
    small = DataLoader(Draws(), batch_size=2, num_workers="auto", max_workers=2)
    small.load_state_dict(state)
    assert small.num_workers == 2  # within this loader's own bound
    with pytest.raises(ValueError, match="'pool' field should be"):
        small.load_state_dict(state | {"pool": {"num_workers": 0, "prefetch_factor": 2}})
    del it

"""Lifetime of what the loader creates: processes, shared-memory blocks, batches, events."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import torch
from torch.utils.data import Dataset

import loadtune
from loadtune import DataLoader


class Squares(Dataset):
    """Sample i is a float tensor of ``width`` copies of i*i, plus the label i."""

    def __init__(self, n: int = 64, width: int = 1024) -> None:
        self.n = n
        self.width = width

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((self.width,), float(i * i)), i


class ExitAt(Squares):
    """Exits the worker process (or kills it) when asked for index ``at``."""

    def __init__(self, at: int, how: str) -> None:
        super().__init__(32, 4)
        self.at = at
        self.how = how

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.at:
            if self.how == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


class Slow(Squares):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == 3:
            time.sleep(3)
        return super().__getitem__(i)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _block_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum("loadtune-block" in line for line in f)


def _shm_entries() -> set[str]:
    """Entries this process (or loadtune anywhere) made; other tenants' entries are ignored."""
    me = str(os.getpid())
    return {n for n in os.listdir("/dev/shm") if me in n or "loadtune" in n}


@pytest.fixture
def clean():
    """Assert that a test leaves no new process, /dev/shm entry or block mapping."""
    gc.collect()
    before_children, before_shm = _children(), _shm_entries()
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while _children() - before_children and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before_children == set()
    assert _shm_entries() - before_shm == set()
    assert _block_mappings() == 0


def _expected(ds: Squares, batch: int) -> list[list[int]]:
    return [list(range(s, min(s + batch, len(ds)))) for s in range(0, len(ds), batch)]


def test_full_epoch_delivers_every_index_once_and_cleans_up(clean: None) -> None:
    ds = Squares()
    loader = DataLoader(ds, batch_size=5, num_workers=2)
    labels = []
    for x, y in loader:
        assert torch.equal(x, (y.float() ** 2)[:, None].expand(-1, ds.width))
        labels.append(y.tolist())
    assert labels == _expected(ds, 5)


def test_break_mid_epoch(clean: None) -> None:
    loader = DataLoader(Squares(), batch_size=4, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break


def test_exception_in_the_loop(clean: None) -> None:
    loader = DataLoader(Squares(), batch_size=4, num_workers=2)
    with pytest.raises(ZeroDivisionError):
        for _ in loader:
            1 / 0  # noqa: B018


def test_many_iterators_created_and_dropped(clean: None) -> None:
    loader = DataLoader(Squares(16, 8), batch_size=4, num_workers=2)
    for _ in range(25):
        it = iter(loader)
        next(it)
        del it


def test_persistent_workers_released_with_the_loader(clean: None) -> None:
    loader = DataLoader(Squares(16, 8), batch_size=4, num_workers=2, persistent_workers=True)
    for _ in range(2):
        assert sum(len(y) for _, y in loader) == 16
    pids = {e.pid for e in loader.events}
    assert len(pids) == 2  # the same two workers served both epochs
    del loader
    gc.collect()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_held_batch_stays_valid_while_blocks_are_reused(clean: None) -> None:
    """A batch the user keeps must not be overwritten by later batches."""
    ds = Squares(400, 256)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    it = iter(loader)
    first_x, first_y = next(it)
    kept = first_x.clone()
    seen = 1
    for _, _ in it:
        seen += 1
    assert seen == 100
    assert torch.equal(first_x, kept)
    assert first_y.tolist() == [0, 1, 2, 3]
    del it, first_x, first_y


def test_blocks_are_reused_when_batches_are_dropped() -> None:
    loader = DataLoader(Squares(400, 256), batch_size=4, num_workers=2, persistent_workers=True)
    it = iter(loader)
    peak = 0
    for batch in it:
        peak = max(peak, _block_mappings())
        del batch
    # each worker keeps at most prefetch_factor + 2 idle blocks, plus what is in flight
    assert 0 < peak <= 2 * (2 + 2) + 2 * 2
    del it, loader
    gc.collect()
    assert _block_mappings() == 0


def test_holding_more_batches_than_blocks_falls_back_and_stays_correct(clean: None) -> None:
    ds = Squares(150, 16)
    batches = list(DataLoader(ds, batch_size=1, num_workers=1))
    assert [int(y) for _, y in batches] == list(range(150))
    assert all(
        torch.equal(x[0], torch.full((16,), float(i * i))) for i, (x, _) in enumerate(batches)
    )
    del batches


@pytest.mark.parametrize("how, detail", [("exit", "exited with code 3"), ("kill", "SIGKILL")])
def test_worker_death_is_reported(clean: None, how: str, detail: str) -> None:
    loader = DataLoader(ExitAt(9, how), batch_size=2, num_workers=2, on_worker_death="raise")
    with pytest.raises(loadtune.WorkerCrashError) as info:
        for _ in loader:
            pass
    err = info.value
    assert isinstance(err, RuntimeError)
    assert str(err).startswith(f"DataLoader worker (pid(s) {err.pid}) exited unexpectedly")
    assert detail in str(err)
    assert err.worker_id == 0  # batch 4 (indices 8, 9) goes to worker 0 round-robin
    assert [8, 9] in err.indices


def test_timeout_names_the_worker_and_batch(clean: None) -> None:
    loader = DataLoader(Slow(8, 2), batch_size=2, num_workers=2, timeout=0.5)
    with pytest.raises(loadtune.LoaderTimeoutError) as info:
        for _ in loader:
            pass
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RuntimeError)
    text = str(info.value)
    assert text.startswith("DataLoader timed out after 0.5 seconds")
    assert "worker 1 " in text and "held batch 1 (dataset indices [2, 3])" in text
    assert info.value.worker_id == 1 and info.value.index == [2, 3]


def test_events_account_for_every_batch() -> None:
    ds = Squares(30, 100)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    for _ in loader:
        pass
    events = list(loader.events)
    assert [e.batch for e in events] == list(range(8))
    assert {e.worker_id for e in events} == {0, 1}
    assert [e.worker_id for e in events] == [i % 2 for i in range(8)]
    assert [e.samples for e in events] == [4] * 7 + [2]
    # 4 samples x 100 float32, plus 4 int64 labels
    assert events[0].nbytes == 4 * 100 * 4 + 4 * 8
    for e in events:
        assert e.dispatch <= e.fetch_start <= e.fetch_end <= e.collate_end <= e.sent
        assert e.sent <= e.ready <= e.taken
        assert e.wait >= 0 and e.epoch == 0


def test_events_in_the_main_process() -> None:
    loader = DataLoader(Squares(10, 4), batch_size=4)
    assert sum(len(y) for _, y in loader) == 10
    events = list(loader.events)
    assert [(e.batch, e.worker_id, e.samples) for e in events] == [
        (0, -1, 4),
        (1, -1, 4),
        (2, -1, 2),
    ]
    assert all(e.pid == os.getpid() for e in events)


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, torch
    from loadtune import DataLoader

    class DS(torch.utils.data.Dataset):
        def __len__(self): return 10**6
        def __getitem__(self, i):
            time.sleep(0.01)
            return torch.zeros(1000)

    it = iter(DataLoader(DS(), batch_size=4, num_workers=2))
    next(it)
    print(" ".join(str(w.pid) for w in it._workers), flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_workers_exit_when_the_main_process_is_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) for p in pids)

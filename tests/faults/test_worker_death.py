"""Fault injection: workers that die mid-epoch, with exact index accounting."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import psutil
import pytest
import torch
from torch.utils.data import Dataset

import loadtune
from loadtune import DataLoader


class DieOnce(Dataset):
    """Sample i is i; the first worker to fetch an index in ``at`` dies, once per index.

    A marker file per index makes "once" hold across processes (a replacement worker sees
    the marker and serves the index normally).
    """

    def __init__(self, n: int, at: list[int], how: str, marks: Path) -> None:
        self.n, self.at, self.how, self.marks = n, at, how, marks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i in self.at:
            mark = self.marks / str(i)
            try:
                fd = os.open(mark, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return i
            os.close(fd)
            if self.how == "exit":
                os._exit(7)
            if self.how == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            os.kill(os.getpid(), signal.SIGKILL)
        return i


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("how", ["kill", "exit", "segv"])
@pytest.mark.parametrize("at", [[0], [13], [39], [5, 22]])
def test_every_index_once_in_order_after_deaths(tmp_path: Path, how: str, at: list[int]) -> None:
    before = _children()
    loader = DataLoader(DieOnce(40, at, how, tmp_path), batch_size=3, num_workers=2)
    with pytest.warns(RuntimeWarning, match="restarted it as pid") as record:
        batches = [b.tolist() for b in loader]
    assert batches == [list(range(s, min(s + 3, 40))) for s in range(0, 40, 3)]
    deaths = [w for w in record if "restarted it as pid" in str(w.message)]
    assert len(deaths) == len(at)
    text = str(deaths[0].message)
    batch = at[0] // 3
    assert f"worker {batch % 2} " in text and str(batch) in text
    gc.collect()
    assert _children() - before == set()


def test_balanced_dispatch_survives_a_death(tmp_path: Path) -> None:
    loader = DataLoader(
        DieOnce(30, [10], "kill", tmp_path), batch_size=2, num_workers=2, dispatch="balanced"
    )
    with pytest.warns(RuntimeWarning):
        assert [i for b in loader for i in b.tolist()] == list(range(30))


def test_persistent_workers_restart_and_keep_serving(tmp_path: Path) -> None:
    loader = DataLoader(
        DieOnce(20, [7], "kill", tmp_path), batch_size=4, num_workers=2, persistent_workers=True
    )
    with pytest.warns(RuntimeWarning):
        first = [b.tolist() for b in loader]
    second = [b.tolist() for b in loader]
    assert first == second == [list(range(s, s + 4)) for s in range(0, 20, 4)]


def test_raise_policy_names_pid_signal_and_indices(tmp_path: Path) -> None:
    loader = DataLoader(
        DieOnce(20, [9], "kill", tmp_path), batch_size=2, num_workers=2, on_worker_death="raise"
    )
    with pytest.raises(loadtune.WorkerCrashError) as info:
        list(loader)
    err = info.value
    assert err.signal == "SIGKILL" and err.exitcode is None
    assert [8, 9] in err.indices and err.worker_id == 0
    assert f"pid(s) {err.pid}" in str(err)


def test_restart_limit(tmp_path: Path) -> None:
    at = [1, 5, 9, 13]
    loader = DataLoader(
        DieOnce(20, at, "exit", tmp_path), batch_size=2, num_workers=2, max_worker_restarts=2
    )
    with pytest.warns(RuntimeWarning), pytest.raises(loadtune.WorkerCrashError) as info:
        list(loader)
    assert "max_worker_restarts=2 reached" in str(info.value)
    assert info.value.exitcode == 7


class IterDie(torch.utils.data.IterableDataset):
    def __iter__(self) -> object:
        yield 1
        os._exit(5)


def test_iterable_worker_death_raises() -> None:
    with pytest.raises(loadtune.WorkerCrashError, match="cannot be replayed"):
        list(DataLoader(IterDie(), batch_size=2, num_workers=2))

"""Nothing survives the main process: normal end, signals, exceptions, many iterators."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from loadtune import DataLoader

ROOT = str(Path(__file__).resolve().parents[2])

_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, torch
    sys.path.insert(0, {root!r})
    from loadtune import DataLoader

    class DS(torch.utils.data.Dataset):
        def __len__(self): return 10**6
        def __getitem__(self, i):
            time.sleep(0.005)
            return torch.zeros(256)

    loader = DataLoader(DS(), batch_size=4, num_workers=2, persistent_workers={persistent})
    it = iter(loader)
    next(it)
    print(" ".join(str(w.pid) for w in it._workers), flush=True)
    {action}
    """
)

ACTIONS = {
    "sigterm": "time.sleep(60)",
    "sigkill": "time.sleep(60)",
    "exception": "raise RuntimeError('boom in the training loop')",
    "keyboard_interrupt": "signal.raise_signal(signal.SIGINT)",
    "exit_mid_epoch": "sys.exit(0)",
}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


CASES = [(how, False) for how in sorted(ACTIONS)] + [("sigterm", True), ("exception", True)]


@pytest.mark.slow
@pytest.mark.parametrize("how, persistent", CASES)
def test_workers_do_not_outlive_the_main_process(how: str, persistent: bool) -> None:
    code = _CHILD.format(root=ROOT, persistent=persistent, action=ACTIONS[how])
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, proc.stderr.read()
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigkill":
            proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # orderly ends stop workers at once; a killed main leaves them to notice within ~0.5 s
    # (the bound is generous: this machine is shared and can be slow to schedule them)
    assert _gone(pids, 10.0), f"workers {pids} outlived the main process ({how})"
    assert not [n for n in os.listdir("/dev/shm") if str(proc.pid) in n or "loadtune" in n]


def test_hundreds_of_iterators_created_and_dropped() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    loader = DataLoader(torch.arange(64), batch_size=8, num_workers=1)
    for _ in range(200):
        it = iter(loader)
        assert next(it).tolist() == list(range(8))
        del it
    gc.collect()
    assert _gone(list({p.pid for p in psutil.Process().children(recursive=True)} - before), 5.0)


def test_garbage_collected_persistent_iterator_stops_its_workers() -> None:
    loader = DataLoader(torch.arange(16), batch_size=4, num_workers=2, persistent_workers=True)
    assert [b.tolist() for b in loader] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
        [12, 13, 14, 15],
    ]
    pids = [w.pid for w in loader._iterator._workers]
    loader._iterator = None  # the loader lets go of its iterator: GC must stop the workers
    gc.collect()
    assert _gone(pids, 5.0)

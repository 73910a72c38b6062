"""Under memory pressure the loader keeps fewer batches in flight, and says so once."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

import loadtune.loader._iterator as iterator_module
from loadtune import DataLoader


class Slowish(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 120

    def __getitem__(self, i: int) -> int:
        time.sleep(0.001)
        return i


def _in_flight_peaks(loader: DataLoader, low_between: tuple[int, int]) -> list[int]:
    """Iterate; memory is 'low' while the batch number is in [a, b). Return window sizes."""
    state = {"batch": 0}
    a, b = low_between
    iterator_module.available_memory = lambda: 10 if a <= state["batch"] < b else 10**12
    windows = []
    it = iter(loader)
    for state["batch"], _ in enumerate(it):
        windows.append(it._window)
        it._mem_checked = -1e9  # check at every dispatch in this test, not every 0.25 s
    return windows


def test_window_shrinks_while_memory_is_low_and_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iterator_module, "available_memory", iterator_module.available_memory)
    loader = DataLoader(
        Slowish(), batch_size=2, num_workers=2, prefetch_factor=4, min_available_memory=1000
    )
    with pytest.warns(RuntimeWarning, match="lowering the batches in flight from 8 to 2") as rec:
        windows = _in_flight_peaks(loader, (10, 30))
    assert len([w for w in rec if "min_available_memory" in str(w.message)]) == 1
    assert max(windows[:8]) == 8
    assert max(windows[17:30]) <= 2  # in-flight batches drain one per hand-out from 8
    assert max(windows[36:50]) == 8


def test_off_when_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iterator_module, "available_memory", lambda: 0)
    loader = DataLoader(Slowish(), batch_size=2, num_workers=2, min_available_memory=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(len(b) for b in loader) == 120


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="min_available_memory should be"):
        DataLoader(Slowish(), min_available_memory=-1)

"""Fault injection: a sample that hangs is reported by worker and indices."""

from __future__ import annotations

import time

import pytest
from torch.utils.data import Dataset

import loadtune
from loadtune import DataLoader


class HangAt(Dataset):
    def __init__(self, n: int, at: int) -> None:
        self.n, self.at = n, at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        time.sleep(30 if i == self.at else 0.002)
        return i


def test_hung_worker_is_named_while_the_other_keeps_producing() -> None:
    # with in_order=False the other worker keeps delivering while one hangs on index 60
    loader = DataLoader(HangAt(400, 60), batch_size=2, num_workers=2, timeout=1.0, in_order=False)
    seen = []
    with pytest.raises(loadtune.LoaderTimeoutError) as info:
        for batch in loader:
            seen.extend(batch.tolist())
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.index == [60, 61] and err.worker_id in (0, 1)
    text = str(err)
    assert f"worker {err.worker_id} (pid {err.pid})" in text
    assert "held batch 30 (dataset indices [60, 61])" in text
    assert 60 not in seen and len(seen) > 60

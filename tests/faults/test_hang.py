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
    # batch 30 (index 60) goes to worker 0; with in_order=False worker 1 keeps delivering
    loader = DataLoader(HangAt(400, 60), batch_size=2, num_workers=2, timeout=1.0, in_order=False)
    seen = []
    with pytest.raises(loadtune.LoaderTimeoutError) as info:
        for batch in loader:
            seen.extend(batch.tolist())
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.worker_id == 0 and err.index == [60, 61]
    assert "worker 0 " in str(err) and "held batch 30 (dataset indices [60, 61])" in str(err)
    assert 60 not in seen and len(seen) > 60

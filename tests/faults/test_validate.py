"""validate=: a check on every sample whose failures follow on_error."""

from __future__ import annotations

import pytest
import torch

import loadtune
from loadtune import DataLoader


def no_sevens(sample: torch.Tensor) -> None:
    if int(sample) % 7 == 0:
        raise loadtune.DataFormatError(f"value {int(sample)} is a multiple of 7")


DATA = torch.arange(1, 31)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_invalid_samples(workers: int) -> None:
    loader = DataLoader(
        DATA, batch_size=4, num_workers=workers, on_error="skip", validate=no_sevens
    )
    assert [int(x) for b in loader for x in b] == [v for v in range(1, 31) if v % 7]
    failed = sorted(loader.failures, key=lambda f: f.index)
    assert [(f.index, f.exc_type) for f in failed] == [
        (6, "DataFormatError"),
        (13, "DataFormatError"),
        (20, "DataFormatError"),
        (27, "DataFormatError"),
    ]
    assert failed[0].message == "value 7 is a multiple of 7"


def test_raise_names_the_index() -> None:
    loader = DataLoader(DATA, batch_size=4, num_workers=2, validate=no_sevens)
    with pytest.raises(loadtune.DataFormatError) as info:
        list(loader)
    assert "while loading dataset index 6" in str(info.value)
    assert (info.value.index, info.value.worker_id) == (6, 1)  # batch 1 -> worker 1
    assert "value 7 is a multiple of 7" in str(info.value)


def test_validate_must_be_callable() -> None:
    with pytest.raises(TypeError, match="validate should be a callable"):
        DataLoader(DATA, validate=3)

"""The one resume check applied to everything that claims to resume (loaders, samplers)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import torch


def as_lists(batch: Any) -> Any:
    """A batch as plain nested lists, for exact comparison."""
    if isinstance(batch, torch.Tensor):
        return batch.tolist()
    if isinstance(batch, (list, tuple)):
        return [as_lists(b) for b in batch]
    if isinstance(batch, dict):
        return {k: as_lists(v) for k, v in batch.items()}
    return batch


def run_epochs(loader: Iterable, epochs: int) -> list[list[Any]]:
    return [[as_lists(b) for b in loader] for _ in range(epochs)]


def check_resume(
    make: Callable[[], Any],
    *,
    epochs: int = 2,
    points: Iterable[tuple[int, int]] = ((0, 0), (0, 1), (0, 3), (1, 2)),
    ordered: bool = True,
) -> None:
    """Stop at (epoch, batches taken) and resume in a fresh object; compare with one run.

    ``make()`` builds the object under test the same way every time (same seeds). The
    state goes through JSON and ``torch.save`` on the way, as a checkpoint would.
    """
    reference = run_epochs(make(), epochs)
    for epoch, taken in points:
        original = make()
        for _ in range(epoch):
            for _ in original:
                pass
        it = iter(original)
        head = [as_lists(next(it)) for _ in range(taken)]
        state = original.state_dict()
        del it
        state = json.loads(json.dumps(state))
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        resumed = make()
        resumed.load_state_dict(state)
        rest = run_epochs(resumed, epochs - epoch)
        expected_rest = reference[epoch][taken:]
        if ordered:
            assert head == reference[epoch][:taken], (epoch, taken)
            assert rest[0] == expected_rest, (epoch, taken)
            assert rest[1:] == reference[epoch + 1 :], (epoch, taken)
        else:  # arrival order is timing: compare each epoch as a multiset of batches
            got = [head + rest[0], *rest[1:]]
            for mine, theirs in zip(got, reference[epoch:], strict=True):
                assert sorted(map(json.dumps, mine)) == sorted(map(json.dumps, theirs))

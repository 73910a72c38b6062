"""Mid-epoch resume through state_dict/load_state_dict, in this process and a new one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from loadtune import DataLoader

from .resume_check import as_lists, check_resume, run_epochs


class Augmented(Dataset):
    """Sample i is i: the order of indices is what a resume must reproduce."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int) -> int:
        return i


class Counting(IterableDataset):
    """Each worker streams its share of range(n) and can say where it is."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pos = 0

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = list(range(wid, self.n, nw))
        while self.pos < len(shard):
            self.pos += 1
            yield shard[self.pos - 1]
        self.pos = 0  # the next epoch starts over

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


@pytest.mark.parametrize("workers, persistent", [(0, False), (2, False), (2, True)])
def test_shuffled_map_dataset(workers: int, persistent: bool) -> None:
    check_resume(
        lambda: DataLoader(
            Augmented(),
            batch_size=3,
            shuffle=True,
            num_workers=workers,
            persistent_workers=persistent,
            generator=torch.Generator().manual_seed(11),
        ),
        epochs=3,
        points=[(0, 0), (0, 1), (0, 4), (1, 7), (2, 8)],
    )


def test_global_rng_when_there_is_no_generator() -> None:
    def make() -> DataLoader:
        torch.manual_seed(5)
        return DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=2)

    check_resume(make, epochs=1, points=[(0, 2)])


def test_custom_batch_sampler_and_drop_last() -> None:
    batches = [[5, 1], [0, 9, 3], [2], [8, 7, 6, 4]]
    check_resume(lambda: DataLoader(Augmented(), batch_sampler=batches, num_workers=2))
    check_resume(
        lambda: DataLoader(Augmented(), batch_size=5, drop_last=True, num_workers=2),
        points=[(0, 2), (1, 3)],
    )


def test_out_of_order_loader_resumes_the_rest() -> None:
    check_resume(
        lambda: DataLoader(Augmented(), batch_size=2, num_workers=2, in_order=False),
        ordered=False,
        points=[(0, 3), (0, 7)],
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_iterable_dataset(workers: int) -> None:
    check_resume(
        lambda: DataLoader(Counting(20), batch_size=3, num_workers=workers),
        points=[(0, 0), (0, 1), (0, 3), (1, 2)],
    )


def test_state_is_plain_data_and_rejects_foreign_input() -> None:
    loader = DataLoader(Augmented(), batch_size=4, shuffle=True)
    state = loader.state_dict()
    assert state["format"] == "loadtune.DataLoader/1" and state["done_prefix"] == 0
    assert json.loads(json.dumps(state)) == state
    with pytest.raises(ValueError, match="unknown DataLoader state format"):
        loader.load_state_dict({"format": "something else"})
    with pytest.raises(ValueError, match="is a dict"):
        loader.load_state_dict([1, 2])


_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from tests.faults.test_resume import Augmented
    from loadtune import DataLoader
    loader = DataLoader(Augmented(), batch_size=3, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(11))
    loader.load_state_dict(json.load(open({state!r})))
    print(json.dumps([[b.tolist() for b in loader] for _ in range(2)]))
    """
)


def test_resume_in_a_new_process(tmp_path: Path) -> None:
    def make() -> DataLoader:
        return DataLoader(
            Augmented(),
            batch_size=3,
            shuffle=True,
            num_workers=2,
            generator=torch.Generator().manual_seed(11),
        )

    reference = run_epochs(make(), 2)
    loader = make()
    it = iter(loader)
    [as_lists(next(it)) for _ in range(5)]
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(loader.state_dict()))
    del it
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=root, state=str(state_file))],
        capture_output=True,
        text=True,
        check=True,
    )
    rest = json.loads(out.stdout)
    assert rest[0] == reference[0][5:]
    assert rest[1] == reference[1]

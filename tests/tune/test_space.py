"""The search space: its forms, its defaults, fetch_concurrency, the grid, memory sizes."""

from __future__ import annotations

import pytest

from loadtune import ConfigError, LoaderConfig
from loadtune.tune import Dim, build_space, grid, parse_memory, parse_space


def test_space_forms_agree() -> None:
    text = parse_space("num_workers=1..6, prefetch_factor=2, batch_size=64|128, pin_memory=true")
    as_json = parse_space(
        '{"num_workers": "1..6", "prefetch_factor": 2, "batch_size": [128, 64], "pin_memory": true}'
    )
    as_python = parse_space(
        {"num_workers": (1, 6), "prefetch_factor": 2, "batch_size": [64, 128], "pin_memory": True}
    )
    assert text == as_json == as_python
    assert text["num_workers"].values() == (1, 2, 3, 4, 5, 6)
    assert text["prefetch_factor"].fixed and text["batch_size"].values() == (64, 128)
    # a saved space reads back as it was
    saved = {k: v.to_dict() for k, v in text.items()}
    assert parse_space(saved) == text


def test_default_space_follows_the_machine_and_the_arguments() -> None:
    base = LoaderConfig(num_workers=0, batch_size=32)
    space = build_space(base, accelerator=False, cores=3)
    assert space["num_workers"].values() == tuple(range(7))
    assert space["prefetch_factor"].values() == tuple(range(1, 17))
    assert space["pin_memory"].values() == (False,)  # no accelerator: not searched
    assert space["batch_size"].values() == (32,)  # no batch sizes given: kept
    assert "fetch_concurrency" not in space  # torch's loader has no such setting
    space = build_space(base, accelerator=True, batch_sizes=[128, 64], max_workers=2)
    assert space["pin_memory"].values() == (False, True)
    assert space["batch_size"].values() == (64, 128)
    assert space["num_workers"].values() == (0, 1, 2)


def test_fetch_concurrency_is_searched_on_our_loader_only() -> None:
    ours = LoaderConfig(batch_size=8, fetch_concurrency=1)
    space = build_space(ours, accelerator=False, cores=2, concurrency=True)
    assert space["fetch_concurrency"] == Dim(low=1, high=32, log=True)
    # fixed or narrowed like the others
    fixed = build_space(ours, space="fetch_concurrency=4", accelerator=False, concurrency=True)
    assert fixed["fetch_concurrency"].values() == (4,)
    narrow = build_space(ours, space="fetch_concurrency=2..8", accelerator=False, concurrency=True)
    assert narrow["fetch_concurrency"] == Dim(low=2, high=8, log=True)
    # not searched (an IterableDataset, per_sample_seed without aget): the loader's own value
    kept = build_space(ours.with_(fetch_concurrency=3), accelerator=False, concurrency=False)
    assert kept["fetch_concurrency"].values() == (3,)
    # torch's loader: 1 is what it does anyway, more is refused
    theirs = LoaderConfig(batch_size=8)
    assert "fetch_concurrency" not in build_space(theirs, space="fetch_concurrency=1")
    with pytest.raises(ConfigError) as info:
        build_space(theirs, space="fetch_concurrency=1..8", accelerator=False)
    assert str(info.value) == (
        "space: fetch_concurrency is searched only on loadtune's DataLoader with a map-style "
        "dataset (use --backend loadtune; an IterableDataset is read one sample at a time)"
    )


def test_grid_counts_every_config_once() -> None:
    space = parse_space(
        "num_workers=0..2,prefetch_factor=1|4,persistent_workers=false,pin_memory=false,"
        "batch_size=8,fetch_concurrency=1|8"
    )
    configs = grid(space)
    # nw=0: one config per fetch_concurrency; nw=1, 2: 2 prefetch x 2 fetch_concurrency
    assert len(configs) == 2 + 2 * 2 * 2 == len(set(configs))
    assert LoaderConfig(num_workers=0, batch_size=8, fetch_concurrency=8) in configs
    assert LoaderConfig(2, 4, 8, fetch_concurrency=1) in configs
    assert all(c.prefetch_factor is None for c in configs if c.num_workers == 0)
    # without fetch_concurrency in the space (torch's loader) it is left unset
    space.pop("fetch_concurrency")
    assert {c.fetch_concurrency for c in grid(space)} == {None} and len(grid(space)) == 5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("num_workers=0..x", "space: num_workers='x' is not a whole number or true/false"),
        ("threads=4", "space: unknown setting 'threads'"),
        ("num_workers=4..2", "space: num_workers range 4..2 is empty"),
        ("prefetch_factor=0", "space: prefetch_factor must be >= 1, got 0"),
        ("fetch_concurrency=0..4", "space: fetch_concurrency must be >= 1, got 0"),
        ("fetch_concurrency=true", "space: fetch_concurrency takes whole numbers, got True"),
        ("pin_memory=0..1", "space: pin_memory is true or false, not a range"),
        ("num_workers", "space entry 'num_workers' must look like name=value"),
        ('{"num_workers": ', "space is not valid JSON"),
    ],
)
def test_bad_space_is_a_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_memory_sizes() -> None:
    assert parse_memory("2GiB") == 2 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5GB") == 1.5e9
    assert parse_memory(1000) == 1000.0
    with pytest.raises(ConfigError, match="not a size"):
        parse_memory("lots")

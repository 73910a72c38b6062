"""Whole autotune runs: the files written, apply, fetch_concurrency, a time budget.

The datasets sleep per sample, so more workers or more fetches in flight are faster.
(`loadtune autotune` on the command line is tested in tests/test_tune.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import loadtune
from loadtune import ConfigError, DataLoader, LoaderConfig, TuneResult, autotune
from loadtune.results import load
from loadtune.tune import snippet

from .workloads import Sleepy, fast

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def test_apply_round_trips_the_tuned_file(tmp_path: Path) -> None:
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=0)
    calls = []
    result = autotune(
        loader,
        **fast(
            space="num_workers=0..2,prefetch_factor=2,persistent_workers=false,fetch_concurrency=1",
            trials=3,
        ),
        out=tmp_path / "tuned.toml",
        progress=lambda *args: calls.append(args),
    )
    assert isinstance(result, TuneResult) and result.verdict in ("apply", "keep")
    assert {t.config.num_workers for t in result.trials} == {0, 1, 2}
    # one progress call per trial: (trial, config, samples/s, best so far)
    assert [c[0] for c in calls] == list(result.trials)
    assert [c[1] for c in calls] == [t.config for t in result.trials]
    best = [
        max((c[2] for c in calls[: i + 1] if c[0].state == "complete"), default=None)
        for i in range(3)
    ]
    assert [c[3] for c in calls] == best
    tuned = loadtune.apply(tmp_path / "tuned.toml", loader)
    assert LoaderConfig.from_loader(tuned) == result.tuned
    assert type(tuned) is DataLoader and tuned.dataset is loader.dataset
    saved = load(tmp_path / "tune.json")
    assert isinstance(saved, TuneResult) and saved.to_dict() == result.to_dict()
    text = (tmp_path / "tuned.toml").read_text()
    assert "[measurement]" in text and f'verdict = "{result.verdict}"' in text
    # fixed by the space, fetch_concurrency was not tuned: the file leaves it to the loader
    assert "fetch_concurrency" not in text


def test_fetch_concurrency_is_tuned_on_our_loader(tmp_path: Path) -> None:
    # 3 ms of waiting per sample, no CPU: 8 fetches in flight are about 8 times faster
    loader = DataLoader(Sleepy(0.003), batch_size=8)
    result = autotune(
        loader,
        **fast(space="num_workers=0,fetch_concurrency=1|8", finalists=2),
        out=tmp_path / "tuned.json",
        model=False,
    )
    assert result.space["fetch_concurrency"] == {"choices": [1, 8]}
    assert [t.config.fetch_concurrency for t in result.trials] == [1, 8]
    assert result.verdict == "apply" and result.tuned.fetch_concurrency == 8, result.reason
    assert result.reason.startswith("apply fetch_concurrency=8: faster by ")
    data = json.loads((tmp_path / "tuned.json").read_text())
    assert data["fetch_concurrency"] == 8 and data["num_workers"] == 0
    assert loadtune.apply(tmp_path / "tuned.json", loader).fetch_concurrency == 8
    assert "    fetch_concurrency=8,\n" in snippet(result)
    # torch's loader has no such setting: nothing in the space, the file or the snippet
    theirs = torch.utils.data.DataLoader(Sleepy(0.001), batch_size=4)
    plain = autotune(theirs, **fast(space="num_workers=0"), model=False)
    assert "fetch_concurrency" not in plain.space and plain.tuned.fetch_concurrency is None
    assert "fetch_concurrency" not in snippet(plain)


def test_a_time_budget_ends_the_search() -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = autotune(loader, **fast(time_budget=3.0), model=False, patience=None)
    assert result.stopped == "time budget spent" and result.trials
    with pytest.raises(ConfigError, match="resume needs a storage"):
        autotune(loader, storage=None, resume=True)
    with pytest.raises(ConfigError) as info:
        autotune(loader, storage=None, patience=0)
    assert str(info.value) == "patience must be >= 1 trial (or None), got 0"

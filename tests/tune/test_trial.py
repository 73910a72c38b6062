"""Trials: a failing config, a config over the memory limit, a clear loser stopped early."""

from __future__ import annotations

import re
import statistics

import pytest

from loadtune import DataLoader, LoaderConfig, autotune

from .workloads import FailsWithManyWorkers, Sleepy, fast

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

NO_THREADS = "persistent_workers=false,prefetch_factor=2,fetch_concurrency=1"


def test_a_failing_config_is_recorded_and_the_study_goes_on() -> None:
    loader = DataLoader(FailsWithManyWorkers(), batch_size=4)
    result = autotune(loader, **fast(space=f"num_workers=0..3,{NO_THREADS}"), patience=None)
    by_workers = {t.config.num_workers: t for t in result.trials}
    assert set(by_workers) == {0, 1, 2, 3}  # the space was exhausted, failures and all
    for n in (2, 3):
        assert by_workers[n].state == "failed"
        assert by_workers[n].reason.startswith("ValueError: Caught ValueError in DataLoader")
        assert by_workers[n].samples_per_s is None
    assert by_workers[0].state == by_workers[1].state == "complete"
    # the model's profile ran two workers, which fail: the model says so and is not used
    assert result.model["reason"].startswith("the profile failed: ValueError")
    assert result.tuned.num_workers in (0, 1)


def test_a_config_over_the_memory_limit_is_infeasible() -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = autotune(
        loader,
        **fast(space=f"num_workers=1..2,{NO_THREADS}"),
        memory_limit="4MiB",
        model=False,
    )
    workers = [t for t in result.trials if t.config.num_workers > 0]
    assert len(workers) == 2
    for t in workers:  # a forked worker alone adds well over 4 MiB (about 8 MiB measured)
        assert t.state == "infeasible" and t.peak_memory_bytes > 4 * 2**20
        assert "over the 4 MiB limit" in t.reason
    assert result.memory_limit == 4 * 2**20
    assert result.tuned.num_workers == 0  # only the incumbent ran within the limit


def test_a_clear_loser_is_pruned() -> None:
    loader = DataLoader(Sleepy(0.003), batch_size=2, num_workers=2)
    base = LoaderConfig(num_workers=2, batch_size=2, fetch_concurrency=1)
    initial = [base.with_(prefetch_factor=p) for p in (1, 3)] + [base.with_(num_workers=0)]
    result = autotune(
        loader,
        **fast(
            space="num_workers=0..2,persistent_workers=false,fetch_concurrency=1",
            trials=4,
            batches=25,
        ),
        initial=initial,
        model=False,
    )
    states = {t.config: t for t in result.trials}
    loser = states[base.with_(num_workers=0)]
    # three finished trials with two workers, then one at about half their rate
    assert [t.state for t in result.trials[:3]] == ["complete"] * 3
    assert loser.state == "pruned"
    # stopped at a report (every fifth of the window) before the end
    assert re.fullmatch(
        r"stopped after (5|10|15|20) of 25 batches at [0-9,]+ samples/s, under 60% of the best "
        r"finished trial's [0-9,]+ samples/s at that point: a clear loser",
        loser.reason,
    ), loser.reason
    # judged on its first fifth, against the others' at that point; their median is a
    # robust stand-in for those on a noisy machine (the true gap is 2x)
    assert loser.samples_per_s < statistics.median(t.samples_per_s for t in result.trials[:3])

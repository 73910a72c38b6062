"""The A/B tests: measure.interleave (two configs) and interleave_all (the finalists at once).

Sleepy samples make the truth known: k workers, or k fetches in flight, deliver about k
times the samples of the main process alone; the same settings deliver the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from loadtune import LoaderConfig
from loadtune.measure import interleave, log_t_interval, t_quantile
from loadtune.results import ABResult
from loadtune.tune.ab import _needed, interleave_all, surely_faster

from .workloads import sleepy_factory

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

INC = LoaderConfig(num_workers=0, batch_size=4, fetch_concurrency=1)


def test_t_quantiles_match_the_tables() -> None:
    table = {(1, 0.975): 12.706, (4, 0.975): 2.776, (30, 0.975): 2.042, (2, 0.995): 9.925}
    for (df, p), value in table.items():
        assert t_quantile(df, p) == pytest.approx(value, abs=5e-4)
    # logs 0, 0.1, 0.2: mean 0.1, sd 0.1, n 3 -> 0.1 +- t(2) * 0.1 / sqrt(3)
    low, high = log_t_interval([1.0, math.exp(0.1), math.exp(0.2)])
    half = t_quantile(2) * 0.1 / 3**0.5
    assert (low, high) == (pytest.approx(math.exp(0.1 - half)), pytest.approx(math.exp(0.1 + half)))


def test_interleave_keeps_when_nothing_differs() -> None:
    ab = interleave(sleepy_factory(), INC, INC, rounds=4, batches=15, warmup=3)
    assert ab.verdict == "keep" and "keep the current settings" in ab.reason
    # looks after rounds 3 and 4, each at 97.5%; it stops at 3 only if 1.05 is ruled out
    assert ab.rounds in (3, 4) and len(ab.ratios) == len(ab.incumbent_samples_per_s) == ab.rounds
    assert ab.method == "t-interval on log ratios; 2 looks at 97.5% each (Bonferroni: 95% overall)"
    assert ab.interval == log_t_interval(list(ab.ratios), 0.975)


def test_interleave_applies_a_real_gain() -> None:
    b = INC.with_(num_workers=3)
    ab = interleave(sleepy_factory(), INC, b, rounds=5, batches=15, warmup=3)
    # three sleeping workers fetch about three times as fast as the main process alone
    assert ab.verdict == "apply" and 2.0 < ab.speedup < 4.0, ab
    assert ab.interval[0] > 1.05
    assert ab.rounds == 3  # that clear a gain is settled at the first look
    again = ABResult.from_dict(json.loads(json.dumps(ab.to_dict())))
    assert again == ab


def _recording(
    calls: list[LoaderConfig], fail: LoaderConfig | None = None
) -> Callable[[LoaderConfig], Any]:
    """A factory that records the config of every loader it builds, and fails for one."""
    factory = sleepy_factory()

    def build(cfg: LoaderConfig) -> Any:
        calls.append(cfg)
        if cfg == fail:
            raise ValueError("cannot open the handle")
        return factory(cfg)

    return build


def test_interleave_all_times_every_config_in_the_same_palindromic_rounds() -> None:
    # fetches overlapping in the main process: no worker to start, so the test is quick
    workers = INC.with_(fetch_concurrency=4)  # about 4x
    threads = INC.with_(fetch_concurrency=2)  # about 2x
    calls: list[LoaderConfig] = []
    results, errors = interleave_all(
        _recording(calls), INC, [workers, threads], rounds=4, batches=8, warmup=2
    )
    assert errors == []
    # both gains are clear: settled at the first look (round 3), or on a very noisy
    # machine at the second; a settled candidate is measured no more
    even = [INC, workers, threads, threads, workers, INC]
    odd = [threads, workers, INC, INC, workers, threads]
    rounds = [r.rounds for r in results]
    assert [r.candidate for r in results] == [workers, threads]
    assert calls[:18] == even + odd + even and len(calls) in (18, 22, 24), rounds
    for r in results:
        assert r.verdict == "apply" and r.rounds in (3, 4) and r.interval[0] > 1.05, r
        assert r.method == (
            "t-interval on log ratios; 2 looks at 97.5% each (Bonferroni: 95% overall); "
            "interleaved with 1 other candidate"
        )
        # the incumbent's windows are shared: the same rates, round by round
        n = min(rounds)
        assert r.incumbent_samples_per_s[:n] == results[0].incumbent_samples_per_s[:n]
        assert r.ratios == tuple(
            b / a for a, b in zip(r.incumbent_samples_per_s, r.candidate_samples_per_s, strict=True)
        )
        assert r.interval == log_t_interval(list(r.ratios), 0.975)


def test_interleave_all_with_one_candidate_is_the_abba_design() -> None:
    same = INC.with_(batch_size=8)  # about the same samples/s: no gain to find
    calls: list[LoaderConfig] = []
    (result,), errors = interleave_all(_recording(calls), INC, [same], rounds=3, batches=8)
    assert errors == [] and result.rounds == 3
    abba, baab = [INC, same, same, INC], [same, INC, INC, same]
    assert calls == abba + baab + abba
    assert result.method == "t-interval on log ratios"
    assert result.interval == log_t_interval(list(result.ratios), 0.95)
    assert "over 3 interleaved rounds" in result.reason


def test_a_candidate_that_fails_is_dropped_and_the_others_go_on() -> None:
    good, bad = INC.with_(fetch_concurrency=2), INC.with_(fetch_concurrency=3)
    calls: list[LoaderConfig] = []
    results, errors = interleave_all(
        _recording(calls, fail=bad), INC, [bad, good], rounds=3, batches=8
    )
    assert errors == ["fetch_concurrency=3: ValueError: cannot open the handle"]
    assert [r.candidate for r in results] == [good] and results[0].rounds == 3
    assert calls.count(bad) == 1  # tried once, in the first round, then left out
    assert calls[:3] == [INC, bad, good]


def test_surely_faster_needs_the_whole_interval_above_the_gain() -> None:
    def ab(rates: tuple[float, ...]) -> ABResult:
        n = len(rates)
        return ABResult(INC, INC, n, (1.0,) * n, rates, rates, 1.0, (1.0, 1.0), 0.05, "keep", "")

    slow = ab((1.0, 1.0, 1.0))
    assert surely_faster(ab((1.2, 1.2, 1.2)), slow, 0.05)
    assert not surely_faster(ab((1.04, 1.04, 1.04)), slow, 0.05)  # exact, but under 5%
    assert not surely_faster(ab((1.5, 1.0, 1.2)), slow, 0.05)  # faster, not surely
    assert not surely_faster(ab((1.5,)), ab((1.0,)), 0.05)  # one round: no interval


def test_a_costlier_candidate_stops_when_a_cheaper_one_has_won() -> None:
    cheap = INC.with_(fetch_concurrency=4)  # about 4x: settled at the first look
    costly = INC.with_(batch_size=8)  # no gain: its interval straddles 1.05 for a while
    rank = {cheap: 0, costly: 1}.__getitem__
    calls: list[LoaderConfig] = []
    results, _ = interleave_all(
        _recording(calls), INC, [cheap, costly], rounds=5, batches=8, rank=rank
    )
    by = {r.candidate: r for r in results}
    assert by[cheap].verdict == "apply" and by[cheap].rounds == 3
    # it could win only by beating the winner surely, in rounds the winner no longer runs
    assert by[costly].rounds == 3 and len(calls) == 18


def test_a_pair_is_measured_on_only_while_the_costlier_may_be_surely_faster() -> None:
    cheap, dear = INC.with_(num_workers=1), INC.with_(num_workers=2)
    rank = {cheap: 1, dear: 2}.__getitem__

    def needed(verdicts: dict, dear_rates: list[float]) -> set:
        return _needed(verdicts, {cheap: [100.0, 100.0, 100.0], dear: dear_rates}, rank, 0.05)

    both = {cheap: "pass", dear: "pass"}
    # 20% faster on average, but not surely beyond 5% yet: another round could tell
    assert needed(both, [110.0, 140.0, 115.0]) == {cheap, dear}
    assert needed(both, [130.0, 131.0, 129.0]) == set()  # surely faster: decided
    assert needed(both, [101.0, 99.0, 104.0]) == set()  # as fast within 5%: the cheap one
    # a costlier config with as many workers and threads (a deeper prefetch) is not worth
    # more rounds
    deeper = INC.with_(num_workers=1, prefetch_factor=8)
    deeper_rank = {cheap: 1, deeper: 2}.__getitem__
    assert (
        _needed(
            {cheap: "pass", deeper: "pass"},
            {cheap: [100.0, 100.0, 100.0], deeper: [110.0, 140.0, 115.0]},
            deeper_rank,
            0.05,
        )
        == set()
    )
    # an open interval matters when no cheaper candidate has won
    assert needed({cheap: "fail", dear: "open"}, [120.0, 90.0, 150.0]) == {dear}
    assert needed({cheap: "pass", dear: "open"}, [101.0, 99.0, 104.0]) == set()

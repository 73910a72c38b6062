"""The decision, with fake A/B tests: the finalists, the cheapest equivalent, the verdicts.

A fake A/B test gives each candidate (known by its num_workers) a fixed speedup, round
after round, so every interval is exact and so is every decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtune import LoaderConfig
from loadtune.results import ABResult, TrialResult
from loadtune.tune.decide import Compare, _cost, _decide, _finalists

INC = LoaderConfig(batch_size=8)


def _trial(
    number: int, workers: int, rate: float, memory: float = 50e6, fetch: int | None = None
) -> TrialResult:
    cfg = LoaderConfig(num_workers=workers, batch_size=8, fetch_concurrency=fetch)
    return TrialResult(number, cfg, "complete", samples_per_s=rate, peak_memory_bytes=memory)


def _fake_ab(
    speedups: dict[int, Sequence[float]], base: float = 100.0
) -> tuple[Compare, list[list[int]]]:
    """compare() for _decide: per-round speedups by num_workers, as an A/B test would report
    them (apply when the interval, here the range of the rounds, clears 1.05)."""
    asked: list[list[int]] = []

    def compare(
        configs: Sequence[LoaderConfig], rate: float | None, rank: object
    ) -> tuple[list[ABResult], list[str]]:
        asked.append([c.num_workers for c in configs])
        out = []
        for cfg in configs:
            ratios = tuple(speedups[cfg.num_workers])
            low, high = min(ratios), max(ratios)
            rates = tuple(base * r for r in ratios)
            ok = min(rates) >= rate if rate is not None else low > 1.05
            out.append(
                ABResult(
                    incumbent=INC,
                    candidate=cfg,
                    rounds=len(ratios),
                    incumbent_samples_per_s=(base,) * len(ratios),
                    candidate_samples_per_s=rates,
                    ratios=ratios,
                    speedup=sorted(ratios)[len(ratios) // 2],
                    interval=(low, high),
                    min_gain=0.05,
                    verdict="apply" if ok else "keep",
                    reason=f"fake {cfg.num_workers}",
                    target_rate=rate,
                    candidate_interval=(min(rates), max(rates)),
                )
            )
        return out, []

    return compare, asked


def test_finalists_put_the_cheapest_equivalent_first() -> None:
    trials = [
        _trial(0, 0, 100.0),
        _trial(1, 8, 400.0),
        _trial(2, 4, 390.0),
        _trial(3, 2, 200.0),
        _trial(4, 6, 395.0),
    ]
    picks = _finalists(trials, INC, 3, 0.05)
    # within 5% of 400: 8, 4 and 6 workers; 4 is the cheapest; then the fastest, the next
    assert [t.config.num_workers for t in picks] == [4, 8, 6]
    assert [t.config.num_workers for t in _finalists(trials, INC, 1, 0.05)] == [4]
    assert _finalists(trials, INC, 0, 0.05) == []


def test_cost_counts_workers_before_memory_and_threads() -> None:
    few_workers_many_threads = _trial(0, 1, 1.0, memory=40e6, fetch=32)
    more_workers = _trial(1, 2, 1.0, memory=40e6, fetch=1)
    more_memory = _trial(2, 1, 1.0, memory=80e6, fetch=1)
    assert _cost(few_workers_many_threads) < _cost(more_workers)
    assert _cost(few_workers_many_threads) < _cost(more_memory)  # memory before threads
    # 16 MiB steps: a few MiB of difference is noise, and threads then decide
    assert _cost(_trial(3, 1, 1.0, memory=41e6, fetch=2)) < _cost(few_workers_many_threads)


def test_the_cheapest_config_within_min_gain_on_the_ab_rates_wins() -> None:
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 4, 390.0)]
    # in the A/B, 8 workers are 3% faster than 4, round by round: not surely 5%
    compare, asked = _fake_ab({8: (4.0, 4.1, 4.0), 4: (3.9, 3.95, 3.9)})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert asked == [[4, 8]]  # one A/B test for both finalists
    assert d.verdict == "apply" and d.tuned.num_workers == 4 and d.ab.candidate.num_workers == 4
    assert d.reason == (
        "apply num_workers=4, prefetch_factor=2: fake 4; num_workers=8, prefetch_factor=2 "
        "measured 4.00x, not surely more than 5% faster than this, which needs 4 workers "
        "instead of 8"
    )
    assert [ab.candidate.num_workers for ab in d.finalists] == [8, 4]  # fastest first


def test_a_config_surely_faster_than_the_cheap_one_wins() -> None:
    # the search said 4 workers were within 5% of 8; the A/B says 8 are surely 25% faster
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 4, 390.0)]
    compare, _ = _fake_ab({8: (5.0, 5.1, 5.0), 4: (4.0, 4.0, 4.1)})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert d.verdict == "apply" and d.tuned.num_workers == 8
    assert d.reason == "apply num_workers=8, prefetch_factor=2: fake 8"


def test_the_cheap_config_failing_its_ab_leaves_the_fast_one() -> None:
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 4, 390.0)]
    compare, _ = _fake_ab({8: (1.3, 1.4, 1.35), 4: (1.0, 1.1, 1.02)})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert d.verdict == "apply" and d.tuned.num_workers == 8


def test_decide_keeps_when_no_interval_clears_the_gain() -> None:
    trials = [_trial(0, 0, 100.0), _trial(1, 2, 103.0)]
    compare, _ = _fake_ab({2: (1.01, 1.03, 1.06)})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert d.verdict == "keep" and d.tuned == INC
    assert d.reason == (
        "keep the current settings: the best candidate (num_workers=2, prefetch_factor=2) was "
        "1.03x, 95% interval 1.01x to 1.06x over 3 interleaved rounds: not surely more than "
        "5% faster"
    )


def test_decide_replaces_an_incumbent_that_fails_without_an_ab() -> None:
    failed = TrialResult(0, INC, "failed", reason="ValueError: boom")
    trials = [failed, _trial(1, 4, 400.0), _trial(2, 2, 395.0)]
    compare, asked = _fake_ab({})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert asked == []  # nothing to compare with
    assert d.verdict == "apply" and d.tuned.num_workers == 2  # the cheaper of the two
    assert d.reason == (
        "apply num_workers=2, prefetch_factor=2: the current config fails (ValueError: boom)"
    )
    assert d.ab is None


def test_a_pruned_incumbent_is_still_compared() -> None:
    pruned = TrialResult(0, INC, "pruned", samples_per_s=50.0, reason="a clear loser")
    trials = [pruned, _trial(1, 4, 400.0)]
    compare, asked = _fake_ab({4: (4.0, 4.0, 4.0)})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert asked == [[4]] and d.verdict == "apply" and d.reason.endswith("fake 4")


def test_decide_with_a_target_rate_takes_the_cheapest_that_reaches_it() -> None:
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 3, 260.0), _trial(3, 2, 190.0)]
    compare, asked = _fake_ab({8: (4.0,) * 3, 3: (2.6,) * 3, 2: (1.9,) * 3})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=250.0)
    assert asked == [[3, 8]] and d.verdict == "apply" and d.tuned.num_workers == 3
    # the incumbent reaches the rate already and nothing cheaper exists: keep, no A/B
    compare, asked = _fake_ab({})
    d = _decide(trials, INC, compare, finalists=2, min_gain=0.05, target_rate=50.0)
    assert asked == [] and d.verdict == "keep"


def test_an_ab_that_cannot_run_keeps_the_incumbent() -> None:
    trials = [_trial(0, 0, 100.0), _trial(1, 4, 400.0)]

    def broken(
        configs: Sequence[LoaderConfig], rate: float | None, rank: object
    ) -> tuple[list[ABResult], list[str]]:
        return [], ["the current settings: OSError: gone"]

    d = _decide(trials, INC, broken, finalists=2, min_gain=0.05, target_rate=None)
    assert d.verdict == "keep" and d.reason == (
        "keep the current settings: the A/B test could not run (the current settings: "
        "OSError: gone)"
    )


def test_the_second_finalist_is_the_fastest_step_up_in_workers() -> None:
    deep = TrialResult(
        2,
        LoaderConfig(num_workers=3, prefetch_factor=8, batch_size=8),
        "complete",
        samples_per_s=398.0,
        peak_memory_bytes=50e6,
    )
    # the search's windows put 3 workers first; 4 read slower (on a busy machine, maybe
    # only by chance): whether the step up is worth it is for the A/B test to say
    trials = [_trial(0, 0, 100.0), _trial(1, 3, 400.0), deep, _trial(3, 4, 360.0)]
    picks = _finalists(trials, INC, 2, 0.05)
    assert [(t.config.num_workers, t.config.prefetch_factor) for t in picks] == [(3, 2), (4, 2)]
    # at the most workers there is no step up, and the cheapest is the fastest: no second
    # finalist unless three are asked for (then the next fastest)
    top = [_trial(0, 0, 100.0), _trial(1, 4, 400.0), _trial(2, 3, 300.0)]
    assert [t.config.num_workers for t in _finalists(top, INC, 2, 0.05)] == [4]
    assert [t.config.num_workers for t in _finalists(top, INC, 3, 0.05)] == [4, 3]

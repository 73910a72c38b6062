"""The A/B test of the finalists: all of them against the incumbent in the same rounds.

:func:`interleave_all` is ``measure.interleave`` for one incumbent and several candidates at
once. Each round times a fresh loader per window in a palindrome, ``I C1 C2 C2 C1 I`` on
even rounds and ``C2 C1 I I C1 C2`` on odd ones, so that a drift in the machine's speed
during a round falls on every config alike; the round's rate of a config is the mean of its
two windows. Every candidate's ratio to the incumbent is then a paired measurement of the
same round, and so is the ratio of two candidates: that is what lets the decision judge
"the cheapest config within ``min_gain`` of the fastest" on interval-backed rates
(:func:`surely_faster`) at the cost of two more windows a round instead of a second A/B
test. With one candidate it is ``measure.interleave``'s ABBA/BAAB design, and its ABResult
reads the same.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from ..config import LoaderConfig
from ..errors import UsageError
from ..measure import Step, ab_result, log_t_interval, steady_warmup, time_window
from ..results import ABResult
from .trial import _reason

_LEVEL = 0.95


def interleave_all(
    factory: Callable[[LoaderConfig], Any],
    incumbent: LoaderConfig,
    candidates: Sequence[LoaderConfig],
    *,
    rounds: int = 5,
    min_rounds: int = 3,
    batches: int = 40,
    seconds: float | None = None,
    warmup: int = 5,
    step: Step = None,
    min_gain: float = 0.05,
    target_rate: float | None = None,
    rank: Callable[[LoaderConfig], Any] | None = None,
) -> tuple[list[ABResult], list[str]]:
    """A/B-test every candidate against the incumbent in the same interleaved rounds.

    From ``min_rounds`` on, every round is a look that may end the test, as in
    ``measure.interleave``: a candidate wins once its interval lies wholly above
    ``1 + min_gain`` (with ``target_rate``: its own interval of samples/s above the rate),
    and loses once its estimate (the interval's geometric middle) is not above it, a
    futility stop that ``measure.interleave`` does not make (it waits for the whole
    interval): it only ever turns an undecided test into "keep". A settled candidate is
    measured no more; the test ends when all are settled. Each interval is taken at
    ``1 - 0.05 / looks`` (Bonferroni), so the looks keep 95% together.

    Args:
        factory: Builds a fresh loader for a config.
        incumbent: Config A.
        candidates: The configs B to compare with it (distinct, not the incumbent).
        rounds: The most rounds (at least 2).
        min_rounds: Rounds before the first look.
        batches: Batches per timed window.
        seconds: A window also ends after this long (a slow incumbent's then holds fewer
            batches: its rate is as good a measure, and the test does not wait for it).
        warmup: Batches before each window, on top of those the config holds in flight.
        step: The consumer's per-batch work.
        min_gain: The least speedup worth a change.
        target_rate: Judge each candidate by this samples/s instead of by speedup.
        rank: A candidate's cost (lower is cheaper). With it the test also goes on while
            a costlier candidate measures more than ``min_gain`` faster than a cheaper
            winner but not surely yet, and stops measuring a candidate the decision no
            longer depends on (see ``_needed``; NOTE [ Search and decision ]).

    Returns:
        One ABResult per candidate that ran to the end, in the order given, and one line
        for each candidate whose loader failed (it is left out of the rest of the test).

    Raises:
        UsageError: fewer than 2 rounds; the incumbent's loader ended during warm-up.
        Exception: whatever the incumbent's loader raised (the test cannot go on).
    """
    if rounds < 2:
        raise UsageError(f"an A/B test needs at least 2 rounds, got {rounds}")
    first = max(2, min(min_rounds, rounds))
    looks = rounds - first + 1
    level = 1.0 - (1.0 - _LEVEL) / looks
    goal = 1.0 + min_gain if target_rate is None else target_rate
    live = list(dict.fromkeys(candidates))
    a_rates: list[float] = []
    b_rates: dict[LoaderConfig, list[float]] = {c: [] for c in live}
    settled: dict[LoaderConfig, int] = {}  # candidate -> rounds it took part in
    errors: list[str] = []
    for r in range(rounds):
        active = [c for c in live if c not in settled]
        if not active:
            break
        half = [incumbent, *active]
        order = half + half[::-1] if r % 2 == 0 else half[::-1] + half
        seen: dict[LoaderConfig, list[float]] = {c: [] for c in half}
        for cfg in order:
            if cfg != incumbent and cfg not in live:
                continue  # failed earlier in this round
            try:
                run = time_window(
                    factory(cfg),
                    batches=batches,
                    seconds=seconds,
                    warmup=steady_warmup(cfg, warmup),
                    step=step,
                )
                if run.window_batches == 0 or run.window_s <= 0:
                    raise UsageError(
                        f"the loader ended during warm-up ({warmup} batches): nothing to "
                        "compare; use fewer warm-up batches or a larger dataset"
                    )
            except Exception as exc:
                if cfg == incumbent:
                    raise
                errors.append(f"{_changed(cfg, incumbent)}: {_reason(exc)}")
                live.remove(cfg)
                continue
            seen[cfg].append(run.samples_per_s)
        a_rates.append(statistics.fmean(seen[incumbent]))
        for c in active:
            if c in live:
                b_rates[c].append(statistics.fmean(seen[c]))
        if r + 1 < first:
            continue
        verdicts = {}
        for c in active:
            if c in live:
                low, high = _interval(a_rates, b_rates[c], level, target_rate)
                # Futility: when even the estimate misses the goal, more rounds would only
                # narrow an interval around a "keep".
                mid = math.sqrt(low * high)
                verdicts[c] = "pass" if low > goal else "fail" if mid <= goal else "open"
        needed = (
            {c for c, v in verdicts.items() if v == "open"}
            if rank is None or target_rate is not None
            else _needed(verdicts, b_rates, rank, min_gain)
        )
        for c in verdicts:
            if c not in needed or r + 1 == rounds:
                settled[c] = r + 1
    results = []
    for c in dict.fromkeys(candidates):
        if c not in live:
            continue
        n = settled.get(c, len(b_rates[c]))
        results.append(
            ab_result(
                incumbent,
                c,
                a_rates[:n],
                b_rates[c][:n],
                rounds=rounds,
                looks=looks,
                level=level,
                min_gain=min_gain,
                target_rate=target_rate,
                others=len(live) - 1,
            )
        )
    return results, errors


def _needed(
    verdicts: dict[LoaderConfig, str],
    rates: dict[LoaderConfig, list[float]],
    rank: Callable[[LoaderConfig], Any],
    min_gain: float,
) -> set[LoaderConfig]:
    """The candidates another round could still change the decision about.

    One whose interval against the incumbent is still open, unless a candidate as cheap has
    won already; and the two of a pair where the costlier one (passing or open), with more
    workers or fetch threads, measures more than ``min_gain`` faster than a cheaper winner,
    but not surely yet. Otherwise the cheaper one is chosen whatever more rounds show, so
    they stop: a pair as fast as each other within ``min_gain`` is not run to the last round
    to prove it, nor one that differs in prefetch depth only (a little memory).
    """
    goal = math.log(1.0 + min_gain)
    winners = [c for c, v in verdicts.items() if v == "pass"]
    out = set()
    for c, v in verdicts.items():
        if v == "fail":
            continue
        cheaper = [w for w in winners if w != c and rank(w) <= rank(c)]
        if v == "open" and not cheaper:
            out.add(c)
        for w in cheaper:
            if _size(c) <= _size(w):
                continue
            n = min(len(rates[c]), len(rates[w]))
            logs = [math.log(y / x) for x, y in zip(rates[w][:n], rates[c][:n], strict=True)]
            if n == len(rates[c]) and statistics.fmean(logs) > goal:
                low, _ = log_t_interval([math.exp(x) for x in logs], _LEVEL)
                if low <= 1.0 + min_gain:
                    out |= {c, w}
    return out


def _size(config: LoaderConfig) -> tuple[int, int]:
    """Processes, then threads."""
    return (config.num_workers, config.fetch_concurrency or 1)


def _interval(
    a: list[float], b: list[float], level: float, target_rate: float | None
) -> tuple[float, float]:
    """The interval that settles a candidate: of its speedup, or of its own samples/s."""
    if target_rate is not None:
        return log_t_interval(b, level)
    return log_t_interval([y / x for x, y in zip(a, b, strict=False)], level)


def _changed(config: LoaderConfig, incumbent: LoaderConfig) -> str:
    values, base = config.to_dict(), incumbent.to_dict()
    return ", ".join(f"{k}={v}" for k, v in values.items() if base.get(k, object()) != v) or (
        "the same settings"
    )


def surely_faster(fast: ABResult, slow: ABResult, min_gain: float) -> bool:
    """Whether ``fast`` beats ``slow`` by more than ``min_gain``, from their shared rounds.

    Both must come from the same :func:`interleave_all` run: round by round the two
    candidates were timed beside the same incumbent windows, so the ratio of their rates in
    a round is a paired measurement. True when the lower end of the 95% interval of that
    ratio (a t-interval on the logs, one look) exceeds ``1 + min_gain``; with fewer than
    two shared rounds nothing is sure.

    Example:
        >>> from loadtune import LoaderConfig
        >>> a = LoaderConfig()
        >>> def ab(rates):
        ...     return ABResult(a, a, 3, (1.0,) * 3, rates, rates, 1.0, (1.0, 1.0), 0.05,
        ...                     "keep", "")
        >>> surely_faster(ab((1.3, 1.31, 1.29)), ab((1.0, 1.01, 0.99)), 0.05)
        True
    """
    pairs = list(zip(fast.candidate_samples_per_s, slow.candidate_samples_per_s, strict=False))
    if len(pairs) < 2:
        return False
    low, _ = log_t_interval([f / s for f, s in pairs], _LEVEL)
    return low > 1.0 + min_gain

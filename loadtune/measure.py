"""The only stopwatch: time a loader's first batch and a steady window; A/B-test two configs.

A window starts after ``warmup`` batches, so worker start-up (measured apart, as time to
first batch) does not read as slowness, and it counts every ``next()`` call's wait, so the
stall fraction is the share of the window the consumer spent blocked on data. An optional
training step (a callable, or milliseconds of sleep) runs on every batch, as a training
loop would. :func:`interleave` times two configs in alternation and says whether one is
faster than the other by more than the noise.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import LoaderConfig
from .errors import UsageError
from .results import ABResult, Measurement

__all__ = [
    "WindowRun",
    "ab_result",
    "batch_samples",
    "interleave",
    "log_t_interval",
    "make_step",
    "measure",
    "steady_warmup",
    "summarize",
    "t_quantile",
    "time_window",
]

Step = Callable[[Any], Any] | None


def batch_samples(batch: Any) -> int:
    """How many samples a batch holds: the leading size of its first tensor (else 1)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, (torch.Tensor, list, tuple, dict)):
            return batch_samples(first)
        return len(batch)
    if isinstance(batch, dict) and batch:
        return batch_samples(next(iter(batch.values())))
    return 1


def make_step(step_ms: float | None = None, step: Step = None) -> Step:
    """The consumer's per-batch work: a callable, a sleep of ``step_ms``, or nothing."""
    if step is not None:
        return step
    if step_ms:
        seconds = step_ms / 1000.0

        def sleep_step(batch: Any) -> None:
            time.sleep(seconds)

        return sleep_step
    return None


@dataclass
class WindowRun:
    """One timed pass: time to first batch, then a steady window.

    Attributes:
        time_to_first_batch_s: From ``iter()`` to the first batch.
        window_s: Length of the steady window.
        window_batches, window_samples: What the window delivered.
        wait_s: Total time ``next()`` blocked inside the window.
        total_s, total_samples: The whole pass, start-up included.
        waits: ``(taken time, wait seconds)`` per window batch (NOTE [ Event clock ]).
        exhausted: The epoch ended before the window was full.
    """

    time_to_first_batch_s: float = 0.0
    window_s: float = 0.0
    window_batches: int = 0
    window_samples: int = 0
    wait_s: float = 0.0
    total_s: float = 0.0
    total_samples: int = 0
    waits: list[tuple[float, float]] = field(default_factory=list)
    exhausted: bool = False

    @property
    def samples_per_s(self) -> float:
        return self.window_samples / self.window_s if self.window_s > 0 else 0.0

    @property
    def stall_fraction(self) -> float:
        return min(1.0, self.wait_s / self.window_s) if self.window_s > 0 else 0.0


def time_window(
    loader: Any,
    *,
    batches: int | None = 50,
    seconds: float | None = None,
    warmup: int = 5,
    step: Step = None,
    on_iter: Callable[[Any], None] | None = None,
    on_first_batch: Callable[[Any], None] | None = None,
    on_window_start: Callable[[], None] | None = None,
    on_window_end: Callable[[WindowRun], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    settle: int = 0,
    on_clock_start: Callable[[], None] | None = None,
) -> WindowRun:
    """Iterate ``loader`` once: first batch, ``warmup`` batches, then the window.

    The window ends after ``batches`` batches, or ``seconds`` seconds, whichever comes
    first (at least one must be given), or at the end of the epoch.

    Args:
        on_iter: Called with the iterator right after ``iter(loader)`` (profiling uses it to
            find the worker processes).
        on_first_batch: Called with the first batch (the GPU probe measures its transfer).
        on_window_start: Called when the window opens (probes start counting there).
        on_window_end: Called with the run when the window closes, while the iterator
            and its workers are still alive (probes stop there).
    """
    if batches is None and seconds is None:
        raise UsageError("give a number of batches or seconds to measure")
    run = WindowRun()
    t0 = time.monotonic()
    it = iter(loader)
    if on_iter is not None:
        on_iter(it)
    try:
        batch = next(it)
    except StopIteration:
        raise UsageError("the loader yielded no batch at all") from None
    run.time_to_first_batch_s = time.monotonic() - t0
    run.total_samples += batch_samples(batch)
    if on_first_batch is not None:
        on_first_batch(batch)
    if step is not None:
        step(batch)
    del batch
    start: float | None = None
    try:
        for _ in range(max(0, warmup - 1)):
            batch = next(it)
            run.total_samples += batch_samples(batch)
            if step is not None:
                step(batch)
            del batch
        if on_window_start is not None:
            on_window_start()
            for _ in range(settle):
                batch = next(it)
                run.total_samples += batch_samples(batch)
                if step is not None:
                    step(batch)
                del batch
        if on_clock_start is not None:
            on_clock_start()
        start = time.monotonic()
        limit = start + seconds if seconds is not None else float("inf")
        while batches is None or run.window_batches < batches:
            before = time.monotonic()
            if before >= limit:
                break
            batch = next(it)
            taken = time.monotonic()
            run.wait_s += taken - before
            run.waits.append((taken, taken - before))
            n = batch_samples(batch)
            run.window_batches += 1
            run.window_samples += n
            run.total_samples += n
            if step is not None:
                step(batch)
            del batch
            if on_batch is not None:
                on_batch(run.window_batches)
    except StopIteration:
        run.exhausted = True
    end = time.monotonic()
    if start is None:  # the epoch ended during warm-up: an empty window
        start = end
    run.window_s = end - start
    run.total_s = end - t0
    if on_window_end is not None:
        on_window_end(run)
    del it
    gc.collect()
    return run


def measure(
    factory: Callable[[LoaderConfig], Any],
    config: LoaderConfig | None = None,
    *,
    batches: int = 50,
    warmup: int = 5,
    repeats: int = 3,
    step: Step = None,
) -> Measurement:
    """Throughput of one config: ``repeats`` fresh loaders, each timed by :func:`time_window`.

    Returns:
        A Measurement whose throughput is the median over repeats, with its spread.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader
        >>> data = torch.utils.data.TensorDataset(torch.zeros(64, 2))
        >>> m = measure(lambda cfg: DataLoader(data, batch_size=8), batches=4, warmup=2, repeats=1)
        >>> m.window_batches
        4
    """
    runs = [
        time_window(factory(config), batches=batches, warmup=warmup, step=step)
        for _ in range(repeats)
    ]
    return summarize(runs, warmup=warmup)


def steady_warmup(config: LoaderConfig, warmup: int) -> int:
    """Warm-up batches for a window that times the steady state of ``config``.

    Workers fill up to ``num_workers x prefetch_factor`` batches while the loader starts;
    a window that opens before those are taken drains a backlog made before it and reads
    too fast (measured: 16 batches of a CPU-bound loader with 4 workers x 8 on 2 cores ran
    at 8x its steady rate). So the window opens only after that many more batches.

    Example:
        >>> steady_warmup(LoaderConfig(num_workers=4, prefetch_factor=8), 5)
        37
    """
    return warmup + config.num_workers * (config.prefetch_factor or 0)


def summarize(runs: list[WindowRun], *, warmup: int) -> Measurement:
    """A Measurement from one or more timed windows of the same config (medians, spread)."""
    if not runs:
        raise UsageError("no window was timed")
    rates = [r.samples_per_s for r in runs]
    return Measurement(
        samples_per_s=statistics.median(rates),
        samples_per_s_min=min(rates),
        samples_per_s_max=max(rates),
        batches_per_s=statistics.median(
            r.window_batches / r.window_s if r.window_s > 0 else 0.0 for r in runs
        ),
        repeats=len(runs),
        window_batches=min(r.window_batches for r in runs),
        warmup_batches=warmup,
        time_to_first_batch_s=statistics.median(r.time_to_first_batch_s for r in runs),
        stall_fraction=statistics.median(r.stall_fraction for r in runs),
        overall_samples_per_s=statistics.median(
            r.total_samples / r.total_s if r.total_s > 0 else 0.0 for r in runs
        ),
    )


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    a, b = df / 2.0, 0.5
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tail = (
        front * _betacf(a, b, x) / a
        if x < (a + 1) / (a + b + 2)
        else 1.0 - front * _betacf(b, a, 1.0 - x) / b
    )
    return 1.0 - 0.5 * tail if t >= 0 else 0.5 * tail


def t_quantile(df: int, p: float = 0.975) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    Computed from the incomplete beta function and bisection (no scipy): the 0.975
    quantile gives a two-sided 95% interval.

    Example:
        >>> round(t_quantile(4), 3), round(t_quantile(2, 0.995), 3)
        (2.776, 9.925)
    """
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {df}")
    if not 0.5 < p < 1.0:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(100):
        mid = (low + high) / 2.0
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2.0


def log_t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Interval of the geometric mean of positive ``values``: a t-interval on their logs.

    Ratios and rates are multiplicative: a log makes 0.8 and 1.25 equally far from 1, and
    the interval, mapped back, can never go below zero.

    Example:
        >>> low, high = log_t_interval([1.0, 1.0, 1.0])
        >>> (round(low, 6), round(high, 6))
        (1.0, 1.0)
    """
    logs = [math.log(v) for v in values]
    n = len(logs)
    if n < 2:
        raise ValueError("an interval needs at least two values")
    mean = statistics.fmean(logs)
    half = t_quantile(n - 1, 0.5 + level / 2) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(mean - half), math.exp(mean + half)


def interleave(
    factory: Callable[[LoaderConfig], Any],
    a_config: LoaderConfig,
    b_config: LoaderConfig,
    *,
    rounds: int = 5,
    min_rounds: int = 3,
    batches: int = 50,
    warmup: int = 5,
    step: Step = None,
    min_gain: float = 0.05,
    target_rate: float | None = None,
    on_round: Callable[[int, float], None] | None = None,
) -> ABResult:
    """A/B-test config B against config A, interleaved, and give the verdict.

    Each round times four fresh loaders, A B B A in even rounds and B A A B in odd ones, so
    that the machine getting slower or faster during a round falls on both configs alike;
    the round's ratio is B's mean samples/s over A's. The speedup is the median ratio; its
    confidence interval is a Student t-interval on the mean of the log ratios (rounds are
    independent pairs; a bootstrap needs many more rounds than these to be trusted).

    From ``min_rounds`` on, every round is a look at the data that may end the test: the
    verdict is settled once the interval lies wholly above ``1 + min_gain`` ("apply") or
    wholly below it ("keep": the gain cannot be reached). So that the looks together keep
    a 95% guarantee, each interval is taken at 1 - 0.05 / looks (Bonferroni; 98.3% for 3
    looks): a clear result stops after ``min_rounds``, a close one runs all ``rounds``.

    Verdict: ``"apply"`` when the interval's lower end exceeds ``1 + min_gain``, otherwise
    ``"keep"``. With ``target_rate`` the same is asked of B's own interval of samples/s
    against the rate (the caller asks that only of a B cheaper than A, or when A misses
    the rate).

    Args:
        factory: Builds a fresh loader for a config (a LoaderFactory).
        a_config: The incumbent.
        b_config: The candidate.
        rounds: The most rounds to measure (at least 2: the interval needs a spread).
        min_rounds: Rounds before the first look (at most ``rounds``).
        batches: Batches per timed window.
        warmup: Batches before each window, not timed, on top of the batches a config
            can hold in flight (see :func:`steady_warmup`).
        step: The consumer's per-batch work (see :func:`make_step`).
        min_gain: The least speedup worth a change (0.05: 5%).
        target_rate: Judge by this samples/s instead of by speedup.
        on_round: Called with (round number from 1, that round's ratio).

    Returns:
        The ABResult.

    Raises:
        UsageError: fewer than 2 rounds, or a negative min_gain.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader, LoaderConfig
        >>> data = torch.utils.data.TensorDataset(torch.zeros(512, 2))
        >>> make = lambda cfg: DataLoader(data, batch_size=cfg.batch_size)
        >>> cfg = LoaderConfig(batch_size=8)
        >>> interleave(make, cfg, cfg, rounds=3, batches=8, warmup=2, min_gain=0.5).verdict
        'keep'
    """
    if rounds < 2:
        raise UsageError(f"an A/B test needs at least 2 rounds, got {rounds}")
    if min_gain < 0:
        raise UsageError(f"min_gain must be >= 0, got {min_gain}")
    first = max(2, min(min_rounds, rounds))
    looks = rounds - first + 1
    level = 1.0 - 0.05 / looks
    goal = 1.0 + min_gain if target_rate is None else target_rate
    a_rates: list[float] = []
    b_rates: list[float] = []
    ratios: list[float] = []
    low = high = b_low = b_high = 0.0
    for r in range(rounds):
        seen: dict[str, list[float]] = {"A": [], "B": []}
        for side in "ABBA" if r % 2 == 0 else "BAAB":
            cfg = a_config if side == "A" else b_config
            run = time_window(
                factory(cfg), batches=batches, warmup=steady_warmup(cfg, warmup), step=step
            )
            if run.window_batches == 0 or run.window_s <= 0:
                raise UsageError(
                    f"the loader ended during warm-up ({warmup} batches): nothing to compare; "
                    "use fewer warm-up batches or a larger dataset"
                )
            seen[side].append(run.samples_per_s)
        a, b = statistics.fmean(seen["A"]), statistics.fmean(seen["B"])
        a_rates.append(a)
        b_rates.append(b)
        ratios.append(b / a)
        if on_round is not None:
            on_round(r + 1, b / a)
        if r + 1 < first:
            continue
        low, high = log_t_interval(ratios, level)
        b_low, b_high = log_t_interval(b_rates, level)
        judged = (low, high) if target_rate is None else (b_low, b_high)
        if judged[0] > goal or judged[1] < goal:
            break
    return ab_result(
        a_config,
        b_config,
        a_rates,
        b_rates,
        rounds=rounds,
        looks=looks,
        level=level,
        min_gain=min_gain,
        target_rate=target_rate,
    )


def ab_result(
    incumbent: LoaderConfig,
    candidate: LoaderConfig,
    a_rates: list[float],
    b_rates: list[float],
    *,
    rounds: int,
    looks: int,
    level: float,
    min_gain: float,
    target_rate: float | None,
    others: int = 0,
) -> ABResult:
    """The ABResult of one candidate from its interleaved rounds: the speedup, its interval
    and the verdict in words (see :func:`interleave`).

    Args:
        incumbent: A, the current settings.
        candidate: B.
        a_rates: A's samples/s, one per round.
        b_rates: B's, the same rounds.
        rounds: The most rounds the test could have run.
        looks: How many times the test looked at the data (Bonferroni).
        level: The confidence level of each look's interval.
        min_gain: The least speedup worth a change.
        target_rate: The samples/s wanted instead of a speedup, or None.
        others: Other candidates measured in the same rounds (said in ``method``).

    Returns:
        The ABResult; intervals are (0, 0) with fewer than 2 rounds.
    """
    ratios = [b / a for a, b in zip(a_rates, b_rates, strict=True)]
    n = len(ratios)
    low, high = log_t_interval(ratios, level) if n >= 2 else (0.0, 0.0)
    b_low, b_high = log_t_interval(b_rates, level) if n >= 2 else (0.0, 0.0)
    speedup = statistics.median(ratios)
    goal = 1.0 + min_gain
    method = "t-interval on log ratios" + (
        f"; {looks} looks at {level:.1%} each (Bonferroni: 95% overall)" if looks > 1 else ""
    )
    if others:
        method += f"; interleaved with {others} other candidate{'s' if others > 1 else ''}"
    span = f"{n} interleaved rounds" + (f", of at most {rounds}" if n < rounds else "")
    if target_rate is None:
        verdict = "apply" if low > goal else "keep"
        if verdict == "apply":
            reason = (
                f"faster by {speedup - 1:.0%} (95% interval {low:.2f}x to {high:.2f}x over "
                f"{span}), more than the {min_gain:.0%} minimum gain"
            )
        elif low > 1.0:
            reason = (
                f"faster by {speedup - 1:.0%}, but the 95% interval ({low:.2f}x to "
                f"{high:.2f}x over {span}) does not clear the {min_gain:.0%} minimum gain: "
                "keep the current settings"
            )
        else:
            reason = (
                f"no gain beyond the noise: speedup {speedup:.2f}x, 95% interval {low:.2f}x "
                f"to {high:.2f}x over {span}: keep the current settings"
            )
    else:
        verdict = "apply" if b_low >= target_rate else "keep"
        reason = (
            f"reaches {target_rate:,.0f} samples/s: 95% interval {b_low:,.0f} to "
            f"{b_high:,.0f} over {span}"
            if verdict == "apply"
            else f"does not surely reach {target_rate:,.0f} samples/s: 95% interval "
            f"{b_low:,.0f} to {b_high:,.0f} over {span}"
        )
    return ABResult(
        incumbent=incumbent,
        candidate=candidate,
        rounds=n,
        incumbent_samples_per_s=tuple(a_rates),
        candidate_samples_per_s=tuple(b_rates),
        ratios=tuple(ratios),
        speedup=speedup,
        interval=(low, high),
        min_gain=min_gain,
        verdict=verdict,
        reason=reason,
        method=method,
        target_rate=target_rate,
        candidate_interval=(b_low, b_high),
    )

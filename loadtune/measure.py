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
    "batch_samples",
    "interleave",
    "log_t_interval",
    "make_step",
    "measure",
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


# Two-sided 95% quantiles of Student's t, degrees of freedom 1 to 30.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (for a 95% interval).

    Tabulated up to 30; beyond, the Cornish-Fisher expansion around the normal quantile
    (within 0.001 of the exact value there).

    Example:
        >>> t_quantile(4)
        2.776
    """
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def log_t_interval(values: list[float]) -> tuple[float, float]:
    """95% interval of the geometric mean of positive ``values``: a t-interval on their logs.

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
    half = t_quantile(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(mean - half), math.exp(mean + half)


def interleave(
    factory: Callable[[LoaderConfig], Any],
    a_config: LoaderConfig,
    b_config: LoaderConfig,
    *,
    rounds: int = 5,
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
    the round's ratio is B's mean samples/s over A's. The speedup is the median ratio and
    its 95% confidence interval a Student t-interval on the mean of the log ratios (rounds
    are independent pairs; a bootstrap would need many more rounds to be trusted).

    Verdict: ``"apply"`` when the interval's lower end exceeds ``1 + min_gain`` (B is faster
    by more than the minimum gain, beyond the noise); otherwise ``"keep"``. With
    ``target_rate``, ``"apply"`` when the lower end of B's own 95% interval of samples/s
    reaches the rate (the caller only asks that of a B that is cheaper than A, or when A
    misses the rate).

    Args:
        factory: Builds a fresh loader for a config (a LoaderFactory).
        a_config: The incumbent.
        b_config: The candidate.
        rounds: Rounds to measure (at least 2: the interval needs a spread).
        batches: Batches per timed window.
        warmup: Batches before each window, not timed.
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
    a_rates: list[float] = []
    b_rates: list[float] = []
    ratios: list[float] = []
    for r in range(rounds):
        order = "ABBA" if r % 2 == 0 else "BAAB"
        seen: dict[str, list[float]] = {"A": [], "B": []}
        for side in order:
            cfg = a_config if side == "A" else b_config
            run = time_window(factory(cfg), batches=batches, warmup=warmup, step=step)
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
    speedup = statistics.median(ratios)
    low, high = log_t_interval(ratios)
    b_low, b_high = log_t_interval(b_rates)
    if target_rate is None:
        verdict = "apply" if low > 1.0 + min_gain else "keep"
        if verdict == "apply":
            reason = (
                f"faster by {speedup - 1:.0%} (95% interval {low:.2f}x to {high:.2f}x over "
                f"{rounds} interleaved rounds), more than the {min_gain:.0%} minimum gain"
            )
        elif low > 1.0:
            reason = (
                f"faster by {speedup - 1:.0%}, but the 95% interval ({low:.2f}x to "
                f"{high:.2f}x) does not clear the {min_gain:.0%} minimum gain: keep the "
                "current settings"
            )
        else:
            reason = (
                f"no gain beyond the noise: speedup {speedup:.2f}x, 95% interval {low:.2f}x "
                f"to {high:.2f}x over {rounds} rounds: keep the current settings"
            )
    else:
        verdict = "apply" if b_low >= target_rate else "keep"
        reason = (
            f"reaches {target_rate:,.0f} samples/s: 95% interval {b_low:,.0f} to {b_high:,.0f}"
            if verdict == "apply"
            else f"does not surely reach {target_rate:,.0f} samples/s: 95% interval "
            f"{b_low:,.0f} to {b_high:,.0f}"
        )
    return ABResult(
        incumbent=a_config,
        candidate=b_config,
        rounds=rounds,
        incumbent_samples_per_s=tuple(a_rates),
        candidate_samples_per_s=tuple(b_rates),
        ratios=tuple(ratios),
        speedup=speedup,
        interval=(low, high),
        min_gain=min_gain,
        verdict=verdict,
        reason=reason,
        target_rate=target_rate,
        candidate_interval=(b_low, b_high),
    )

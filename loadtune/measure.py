"""The only stopwatch: time a loader's first batch and a steady window of batches.

A window starts after ``warmup`` batches, so worker start-up (measured apart, as time to
first batch) does not read as slowness, and it counts every ``next()`` call's wait, so the
stall fraction is the share of the window the consumer spent blocked on data. An optional
training step (a callable, or milliseconds of sleep) runs on every batch, as a training
loop would.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import LoaderConfig
from .errors import UsageError
from .results import Measurement

__all__ = ["WindowRun", "batch_samples", "make_step", "measure", "time_window"]

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
    rates = [r.samples_per_s for r in runs]
    return Measurement(
        samples_per_s=statistics.median(rates),
        samples_per_s_min=min(rates),
        samples_per_s_max=max(rates),
        batches_per_s=statistics.median(
            r.window_batches / r.window_s if r.window_s > 0 else 0.0 for r in runs
        ),
        repeats=repeats,
        window_batches=min(r.window_batches for r in runs),
        warmup_batches=warmup,
        time_to_first_batch_s=statistics.median(r.time_to_first_batch_s for r in runs),
        stall_fraction=statistics.median(r.stall_fraction for r in runs),
        overall_samples_per_s=statistics.median(
            r.total_samples / r.total_s if r.total_s > 0 else 0.0 for r in runs
        ),
    )

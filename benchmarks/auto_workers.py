"""Benchmark: ``num_workers="auto"`` against every fixed ``num_workers``, one epoch each.

What it measures
----------------
Workloads whose best fixed ``num_workers`` differs (batch_size 16, prefetch_factor 2,
``loadtune.DataLoader`` throughout):

* ``latency``    every sample sleeps 4 ms (remote storage) and costs almost no CPU: more
  workers than cores pay;
* ``cpu``        every sample spins in Python for 1.5 ms: the cores are the limit;
* ``transport``  every sample is a fresh 1 MiB float32 tensor (a copy of part of a
  buffer): copying, collating and packing 16 MiB batches are the work; the step reads
  one value per sample (the rest would go to an accelerator);
* ``consumer``   samples are cheap and the training step takes 20 ms: the loader is not
  the bottleneck, so one worker is enough;
* ``phase``      the first half of the epoch is ``transport``'s samples (fewest workers
  best), the second half sleeps 4 ms per sample (most workers best): the best pool
  changes mid-epoch, and every fixed setting is wrong for one half.

The training step is a 1 ms sleep (20 ms for ``consumer``), standing in for work on an
accelerator. One *run* builds a loader and iterates one full epoch; its throughput is the
epoch's samples over its wall time from ``iter()`` to the last batch, so worker start-up
and, for "auto", the whole ramp-up are included. The settings are ``auto`` and every fixed
``num_workers`` from 0 to ``--max-fixed`` (default: twice the usable cores, at most 4).
One warm-up run of each setting on a short epoch is excluded. Then ``--rounds`` rounds run
every setting of a workload once, in an order that reverses each round (A B C, C B A, ...),
so a shared machine's drift hits every setting alike.

How to read the output
----------------------
Per workload: each setting's samples/s, median [min-max] over the rounds; the best fixed
setting (highest median); "auto"'s paired ratio against it (per round, auto over that
round's run of the best fixed setting; median [min-max]), and the workers "auto" used
(time-weighted mean over the epoch and the final size, medians over the rounds). Targets:
ratio >= 0.9 (ramp-up included), fewer workers than cores on ``consumer``, and on
``phase`` a ratio above 1 against every fixed setting (the margin is printed). The last
line is the median of all paired ratios (auto over the best fixed setting) across the
stable workloads.

"auto" may use up to its default bound (4 workers per core: 8 on 2 cores), more than the
largest fixed setting here: where more workers than cores pay (``latency``, ``phase``),
part of its margin is that it may go where the fixed range stops.

Usage::

    python benchmarks/auto_workers.py            # 3 rounds, full epochs: about 6 minutes on 2 cores
    python benchmarks/auto_workers.py --quick    # 1 round, shorter epochs: about 2 minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtune import DataLoader

BATCH_SIZE = 16


# --------------------------------------------------------------------------- workloads


def spin(seconds: float) -> None:
    """Burn CPU in Python for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Latency(torch.utils.data.Dataset):
    """Each sample sleeps ``delay_s`` (a remote read), then returns a small tensor."""

    def __init__(self, length: int, delay_s: float = 0.004) -> None:
        self.length = length
        self.delay_s = delay_s

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.delay_s)
        return torch.full((64,), float(index))


class Cpu(torch.utils.data.Dataset):
    """Each sample spins in Python for ``cost_s`` (decoding, augmenting)."""

    def __init__(self, length: int, cost_s: float = 0.0015) -> None:
        self.length = length
        self.cost_s = cost_s

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        spin(self.cost_s)
        return torch.full((64,), float(index))


class Large(torch.utils.data.Dataset):
    """Each sample is a fresh 1 MiB float32 copy of part of one buffer: memory traffic."""

    def __init__(self, length: int, floats: int = 256 * 1024) -> None:
        self.length = length
        self.buffer = torch.randn(16 * floats)
        self.floats = floats

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        start = (index % 16) * self.floats
        return self.buffer[start : start + self.floats].clone()


class Phase(torch.utils.data.Dataset):
    """Large samples before ``switch`` (a batch boundary), sleeping ones after it."""

    def __init__(self, length: int, slow_s: float = 0.004) -> None:
        self.length = length
        self.switch = length // 2 // BATCH_SIZE * BATCH_SIZE
        self.large = Large(length)
        self.slow = Latency(length, slow_s)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.large[index] if index < self.switch else self.slow[index]


@dataclass(frozen=True)
class Workload:
    name: str
    make: Callable[[int], torch.utils.data.Dataset]
    batches: int  # per epoch (full form)
    step_s: float  # the training step's sleep
    stable: bool = True  # counted in the overall median (phase is reported apart)


WORKLOADS = [
    Workload("latency", lambda n: Latency(n), 250, 0.001),
    Workload("cpu", lambda n: Cpu(n), 250, 0.001),
    Workload("transport", lambda n: Large(n), 600, 0.001),
    Workload("consumer", lambda n: Cpu(n, 0.0002), 250, 0.020),
    Workload("phase", lambda n: Phase(n), 600, 0.001, stable=False),
]


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    samples_per_s: float
    mean_workers: float | None  # "auto": time-weighted pool size over the epoch
    final_workers: int | None


def touch(batch: Any) -> None:
    """Read one value per sample (a step on an accelerator would copy the rest)."""
    if isinstance(batch, torch.Tensor):
        float(batch[:, 0].sum())


def run_once(work: Workload, setting: int | str, batches: int) -> Run:
    dataset = work.make(batches * BATCH_SIZE)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=setting)
    samples = 0
    start = time.monotonic()
    for batch in loader:
        touch(batch)
        samples += len(batch)
        time.sleep(work.step_s)
    end = time.monotonic()
    if setting != "auto":
        return Run(samples / (end - start), None, None)
    history = loader.worker_history
    size = history[0].before if history else loader.num_workers
    last, area = start, 0.0
    for change in history:
        area += size * (change.time - last)
        size, last = change.after, change.time
    area += size * (end - last)
    return Run(samples / (end - start), area / (end - start), loader.num_workers)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, epochs x0.5")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--max-fixed", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated workload names")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", "This DataLoader will create")  # fixed > cores: on purpose
    cores = len(os.sched_getaffinity(0))
    rounds = args.rounds or (1 if args.quick else 3)
    scale = 0.5 if args.quick else 1.0
    max_fixed = args.max_fixed if args.max_fixed is not None else min(2 * cores, 4)
    settings: list[int | str] = ["auto", *range(max_fixed + 1)]
    chosen = [w for w in WORKLOADS if args.only is None or w.name in args.only.split(",")]
    print(
        f"auto_workers: {cores} usable cores, batch_size {BATCH_SIZE}, fixed num_workers "
        f"0..{max_fixed}, {rounds} round(s), epochs x{scale:g}; torch {torch.__version__}"
    )
    summary: list[str] = []
    ratios_all: list[float] = []
    for work in chosen:
        batches = max(20, int(work.batches * scale))
        for setting in settings:  # warm-up, excluded: imports, page cache, allocator
            run_once(work, setting, max(10, batches // 10))
        runs: dict[Any, list[Run]] = {s: [] for s in settings}
        for r in range(rounds):
            order = settings if r % 2 == 0 else list(reversed(settings))
            for setting in order:
                runs[setting].append(run_once(work, setting, batches))
        print(f"\n{work.name}: {batches} batches per epoch, step {work.step_s * 1e3:g} ms")
        for setting in settings:
            rates = [x.samples_per_s for x in runs[setting]]
            extra = ""
            if setting == "auto":
                means = [x.mean_workers or 0.0 for x in runs[setting]]
                finals = [x.final_workers or 0 for x in runs[setting]]
                extra = (
                    f"   workers: mean {statistics.median(means):.1f}, "
                    f"final {statistics.median(finals):g}"
                )
            print(f"  {setting!s:>5}  samples/s {fmt(rates)}{extra}")
        fixed = [s for s in settings if s != "auto"]
        medians = {s: statistics.median(x.samples_per_s for x in runs[s]) for s in fixed}
        best = max(fixed, key=lambda s: medians[s])
        paired = [
            a.samples_per_s / b.samples_per_s for a, b in zip(runs["auto"], runs[best], strict=True)
        ]
        ratio = statistics.median(paired)
        means = [x.mean_workers or 0.0 for x in runs["auto"]]
        finals = [x.final_workers or 0 for x in runs["auto"]]
        line = (
            f"{work.name:<9}: auto / best fixed ({best}) = {ratio:.2f} "
            f"[{min(paired):.2f}-{max(paired):.2f}], workers mean "
            f"{statistics.median(means):.1f}, final {statistics.median(finals):g}"
        )
        if work.name == "consumer":
            used = statistics.median(finals)
            line += f" ({'fewer than' if used < cores else 'not fewer than'} {cores} cores)"
        if work.stable:
            ratios_all.extend(paired)
            line += "  (target >= 0.90: " + ("met" if ratio >= 0.9 else "NOT met") + ")"
        else:
            worst_margin = min(
                statistics.median(
                    a.samples_per_s / b.samples_per_s
                    for a, b in zip(runs["auto"], runs[s], strict=True)
                )
                for s in fixed
            )
            line += (
                f"; against every fixed setting auto is {worst_margin - 1:+.0%} or better"
                f" (target > 0: {'met' if worst_margin > 1 else 'NOT met'})"
            )
        summary.append(line)
        print("  " + line)
    print("\nsummary")
    for line in summary:
        print("  " + line)
    if ratios_all:
        print(
            "median of paired ratios, auto / best fixed, over "
            f"{', '.join(w.name for w in chosen if w.stable)}: "
            f"{statistics.median(ratios_all):.2f} "
            f"[{min(ratios_all):.2f}-{max(ratios_all):.2f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: what worker deaths cost ``loadtune.DataLoader`` (``on_worker_death="restart"``).

What it measures
----------------
One latency-bound map-style dataset: every sample sleeps 0.8 ms (about 0.9 ms in
practice) and does a few tiny tensor ops, about 19 ms per batch of 16 of which a tenth is
CPU. It is loaded with ``num_workers=2``, ``prefetch_factor=2``, no shuffle. One *run*
creates the loader, drains one whole epoch and drops it, so every run includes worker
start-up and shutdown.

* Side A (``no faults``): nothing happens to the workers.
* Side B (``faults``): after every N-th batch it receives (``--every``, default 25) the
  consumer SIGKILLs a live worker, alternating worker 0, 1, 0, ... The loader notices the
  death, starts a replacement with the same worker id, dispatches again the batches the dead
  worker held, and warns with a RuntimeWarning; the benchmark records and counts those
  warnings instead of printing them. No kill is made in the last few batches of an epoch,
  where the replacement would have nothing left to do.

Runs are interleaved in pairs, alternating which side goes first (A B, B A, ...), after one
excluded warm-up run of each, so slow drift of a shared machine hits both sides alike.

Every run, warm-ups included, checks exactly-once delivery: the dataset indices of all
batches, in the order received, must be 0, 1, ..., n-1, and each sample's values must be its
own index. Any violation (or a restart warning in side A, or a kill without exactly one
restart warning) is printed as a FAILURE line and the exit status is 1. A run that takes
far longer than it should (a hang) is ended by ``faulthandler``, which prints every thread's
stack and exits with status 1.

How to read the output
----------------------
* ``samples/s [min-max]``  whole drained run, samples / time from ``iter()`` to exhaustion;
  median over the measured runs of each side.
* ``faults/no-faults``  the median of the *paired* ratios B/A (each pair = the two runs
  adjacent in time) with their min-max. 1.00 means deaths cost nothing; 0.90 means the
  faulty runs delivered 10% fewer samples per second.
* ``kills per run``, ``batches re-dispatched per kill`` (parsed from the warnings).
* Restart time, per kill, all measured runs of side B pooled, measured from
  ``time.monotonic()`` just before ``os.kill``:

  - ``replacement started``: when the loader's restart warning was issued; the loader warns
    right after the replacement process has started and taken the dead one's place in
    ``it._workers``, so this is when the replacement exists.
  - ``new pid seen in it._workers``: the first time the consumer, polling right after each
    batch it receives, finds a new pid at that worker's slot. An upper bound on the above,
    coarse by up to one batch interval.
  - ``first batch from replacement``: the ``ready`` time (NOTE [ Event clock ]) of the first
    BatchEvent whose pid is the replacement's: detection, process start and one batch of
    work (which is about one batch time, ~19 ms here, by itself).

The last line is the median paired ratio.

Usage::

    python benchmarks/faults.py            # full form, about a minute
    python benchmarks/faults.py --quick    # under a minute on 2 cores (about 15 s)
    python benchmarks/faults.py --every 10 --pairs 7
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import multiprocessing as mp
import os
import platform
import re
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.utils.data

import loadtune

DIM = 32
BATCH_SIZE = 16
PREFETCH = 2
FULL_SAMPLES = 6400  # 400 batches: about 4 s per run on 2 workers
QUICK_SAMPLES = 1600  # 100 batches
HANG_FACTOR = 20.0  # a run taking this many times its expected time is a hang
_RESTART = re.compile(
    r"worker \(pid (?P<old>\d+)\) died: .*?while holding batches \[(?P<held>[^\]]*)\].*?"
    r"restarted it as pid (?P<new>\d+)",
    re.DOTALL,
)


# --------------------------------------------------------------------------- dataset


class SleepyDataset(torch.utils.data.Dataset):
    """Sample i is ``(a DIM-vector filled with i, i)``, after ``delay_s`` of sleep and some work.

    The sleep stands in for storage latency and keeps the workload CPU-light, so two workers
    and the consumer fit on two cores; the tensor work (``reps`` tiny ops) makes a worker
    actually run Python and torch, as a real pipeline's would.
    """

    def __init__(self, length: int, delay_s: float = 0.0008, reps: int = 6) -> None:
        self.length = length
        self.delay_s = delay_s
        self.reps = reps

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.delay_s)
        acc = torch.linspace(0.0, 1.0, DIM)
        for _ in range(self.reps):
            acc = torch.tanh(acc * 1.5 + 0.1)
        return torch.full((DIM,), float(index)), index


# --------------------------------------------------------------------------- one run


@dataclass
class Kill:
    """One SIGKILL sent by the consumer, and what followed (times are time.monotonic())."""

    worker_id: int
    old_pid: int
    at: float
    new_pid: int | None = None  # from the restart warning
    held: int = 0  # batches the dead worker held, re-dispatched (from the warning)
    started: float | None = None  # when the restart warning was issued
    seen: float | None = None  # first poll after a batch that found a new pid in the slot
    seen_pid: int | None = None
    first_ready: float | None = None  # first BatchEvent from new_pid: its ready time


@dataclass
class Run:
    """What one drained run measured and checked."""

    side: str
    samples: int
    seconds: float
    kills: list[Kill]
    restart_warnings: int
    other_warnings: list[str]
    failures: list[str]

    @property
    def throughput(self) -> float:
        """Samples per second over the whole drained run."""
        return self.samples / self.seconds


class WarningRecorder:
    """Stands in for ``warnings.showwarning``: stamps each warning with time.monotonic()."""

    def __init__(self) -> None:
        self.restarts: list[tuple[float, int, int, int]] = []  # (time, old pid, new pid, held)
        self.other: list[str] = []

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        now = time.monotonic()
        text = str(message)
        match = _RESTART.search(text)
        if match is None or not issubclass(category, RuntimeWarning):
            self.other.append(f"{category.__name__}: {text}")
            return
        held = len([s for s in match["held"].split(",") if s.strip()])
        self.restarts.append((now, int(match["old"]), int(match["new"]), held))


def run_once(
    dataset: SleepyDataset, every: int | None, args: argparse.Namespace, label: str
) -> Run:
    """Create a loader, drain one epoch (killing a worker every ``every`` batches), check it."""
    gc.collect()
    n = len(dataset)
    n_batches = -(-n // BATCH_SIZE)
    # No kill this close to the end: the replacement must still get a batch to produce.
    last_kill = n_batches - 2 * args.workers * PREFETCH
    loader = loadtune.DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=False,
        num_workers=args.workers,
        prefetch_factor=PREFETCH,
        persistent_workers=False,
        max_worker_restarts=1_000_000,
    )
    recorder = WarningRecorder()
    kills: list[Kill] = []
    pending: list[Kill] = []
    indices: list[int] = []
    bad_values = 0
    received = 0
    faulthandler.dump_traceback_later(args.hang_s, exit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = recorder
            start = time.perf_counter()
            it = iter(loader)
            for values, idx in it:
                received += 1
                if pending:
                    now = time.monotonic()
                    for kill in pending:
                        pid = it._workers[kill.worker_id].pid
                        if pid != kill.old_pid:
                            kill.seen, kill.seen_pid = now, pid
                    pending = [k for k in pending if k.seen is None]
                expected = idx.to(values.dtype).unsqueeze(1).expand_as(values)
                if not torch.equal(values, expected):
                    bad_values += 1
                indices.extend(idx.tolist())
                del values, idx
                if every is not None and received % every == 0 and received <= last_kill:
                    worker_id = len(kills) % args.workers
                    pid = it._workers[worker_id].pid
                    kill = Kill(worker_id, pid, time.monotonic())
                    os.kill(pid, signal.SIGKILL)
                    kills.append(kill)
                    pending.append(kill)
            end = time.perf_counter()
            del it
    except Exception as exc:
        print(f"FAILURE: {label}: the loader raised {type(exc).__name__}: {exc}", flush=True)
        raise
    finally:
        faulthandler.cancel_dump_traceback_later()
    events = list(loader.events)
    del loader
    gc.collect()

    failures: list[str] = []
    if indices != list(range(n)):
        failures.append(
            f"{label}: delivery is not every index exactly once in order: " + _diff(n, indices)
        )
    if bad_values:
        failures.append(f"{label}: {bad_values} batch(es) held values that are not their indices")
    by_old = {old: (t, new, held) for t, old, new, held in recorder.restarts}
    if every is None and recorder.restarts:
        failures.append(f"{label}: {len(recorder.restarts)} worker restart(s) with no fault")
    if len(recorder.restarts) != len(kills) or any(k.old_pid not in by_old for k in kills):
        failures.append(
            f"{label}: {len(kills)} kill(s) but {len(recorder.restarts)} restart warning(s)"
        )
    first_ready: dict[int, float] = {}
    for ev in events:
        if ev.pid not in first_ready or ev.ready < first_ready[ev.pid]:
            first_ready[ev.pid] = ev.ready
    for kill in kills:
        if kill.old_pid in by_old:
            kill.started, kill.new_pid, kill.held = by_old[kill.old_pid]
            kill.first_ready = first_ready.get(kill.new_pid)
        if kill.seen_pid is not None and kill.new_pid is not None and kill.seen_pid != kill.new_pid:
            failures.append(
                f"{label}: worker {kill.worker_id}'s slot holds pid {kill.seen_pid}, but the "
                f"warning named pid {kill.new_pid} as its replacement"
            )
    for failure in failures:
        print(f"FAILURE: {failure}", flush=True)
    return Run(
        side="faults" if every is not None else "no faults",
        samples=len(indices),
        seconds=end - start,
        kills=kills,
        restart_warnings=len(recorder.restarts),
        other_warnings=recorder.other,
        failures=failures,
    )


def _diff(n: int, got: list[int]) -> str:
    """Say how ``got`` differs from 0..n-1: counts of missing and repeated, first divergence."""
    counts: dict[int, int] = {}
    for i in got:
        counts[i] = counts.get(i, 0) + 1
    missing = [i for i in range(n) if i not in counts]
    repeated = sorted(i for i, c in counts.items() if c > 1)
    pairs = zip(got, range(n), strict=False)  # the shorter one ends the comparison
    first = next((p for p, (a, b) in enumerate(pairs) if a != b), min(len(got), n))
    return (
        f"{len(got)} delivered of {n}; {len(missing)} missing {missing[:10]}, "
        f"{len(repeated)} repeated {repeated[:10]}; first out of place at position {first}"
    )


def children_alive() -> list[psutil.Process]:
    """Child processes of this one that are alive (zombies are not)."""
    alive = []
    for kid in psutil.Process().children(recursive=True):
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                alive.append(kid)
        except psutil.Error:
            continue
    return alive


def reap_check(label: str, wait_s: float = 3.0) -> int:
    """Warn about child processes still alive ``wait_s`` after a run; return how many."""
    deadline = time.monotonic() + wait_s
    kids = children_alive()
    while kids and time.monotonic() < deadline:
        time.sleep(0.05)
        kids = children_alive()
    if kids:
        pids = ", ".join(str(k.pid) for k in kids)
        print(f"WARNING: {label}: {len(kids)} child process(es) still alive: {pids}", flush=True)
    return len(kids)


# --------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout holds the report only."""
    print(msg, file=sys.stderr, flush=True)


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``median [min-max]``, or ``n/a`` for no values."""
    if not values:
        return "n/a"
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def rate(x: float) -> str:
    return f"{x:.0f}"


def ratio(x: float) -> str:
    return f"{x:.2f}"


def ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def count(x: float) -> str:
    return f"{x:g}"


def report(
    pairs: list[tuple[Run, Run]],
    warmups: list[Run],
    args: argparse.Namespace,
    n: int,
    leftover: int,
    wall_s: float,
) -> float:
    """Print the results; return the median paired ratio (printed last)."""
    clean = [a for a, _ in pairs]
    faulty = [b for _, b in pairs]
    paired = [b.throughput / a.throughput for a, b in pairs]
    kills = [k for run in faulty for k in run.kills]
    print()
    print(
        f"loadtune {loadtune.__version__} worker-death recovery; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {mp.get_start_method()}"
    )
    print(
        f"{n} samples/run ({-(-n // BATCH_SIZE)} batches of {BATCH_SIZE}; sample = "
        f"{args.delay_ms:g} ms sleep + {args.reps} rounds of tiny ops), "
        f"num_workers={args.workers} prefetch_factor={PREFETCH}"
    )
    print(
        f"faults: SIGKILL worker 0, 1, ... in turn every {args.every} batches; "
        f"{args.pairs} pair{'s' if args.pairs != 1 else ''} (+1 warm-up each), alternating; "
        f"{'quick' if args.quick else 'full'} form"
    )
    rows = [
        ("side", "samples/s [min-max]", "run time [min-max]"),
        (
            "no faults",
            spread([r.throughput for r in clean], rate),
            spread([r.seconds for r in clean], ratio) + " s",
        ),
        (
            "faults",
            spread([r.throughput for r in faulty], rate),
            spread([r.seconds for r in faulty], ratio) + " s",
        ),
        ("faults/no-faults", spread(paired, ratio) + " (paired)", ""),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    rule = "-" * (sum(widths) + 4)
    print(rule)
    for i, row in enumerate(rows):
        cells = (row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]))
        print("  ".join(cells).rstrip())
        if i == 0:
            print(rule)
    print(rule)
    print(
        f"kills per run: {spread([len(r.kills) for r in faulty], count)}; restart warnings: "
        f"{sum(r.restart_warnings for r in faulty)} for {len(kills)} kills; batches "
        f"re-dispatched per kill: {spread([k.held for k in kills if k.new_pid], count)}"
    )
    started = [k.started - k.at for k in kills if k.started is not None]
    seen = [k.seen - k.at for k in kills if k.seen is not None]
    ready = [k.first_ready - k.at for k in kills if k.first_ready is not None]
    print(f"restart time after the kill, ms, median [min-max] over {len(kills)} kills:")
    print(f"  replacement started (restart warning)        {spread(started, ms)}  n={len(started)}")
    print(f"  new pid seen in it._workers (after a batch)  {spread(seen, ms)}  n={len(seen)}")
    print(f"  first batch from replacement ready           {spread(ready, ms)}  n={len(ready)}")
    runs = warmups + [r for pair in pairs for r in pair]
    failures = [f for r in runs for f in r.failures]
    other = sorted({w for r in runs for w in r.other_warnings})
    for text in other:
        print(f"WARNING: other warning during a run: {text}")
    if leftover:
        print(f"WARNING: {leftover} worker process(es) outlived a run")
    if failures:
        print(f"FAILURE: {len(failures)} check(s) failed (see the FAILURE lines above)")
    else:
        print(
            f"delivery: every index exactly once, in order, with its own values, in all "
            f"{len(runs)} runs (warm-ups included)"
        )
    print(f"time: {wall_s:.0f} s in all")
    overall = statistics.median(paired)
    print(f"median ratio faults/no-faults: {overall:.2f}")
    return overall


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; fill in the quick or full defaults."""
    parser = argparse.ArgumentParser(
        description="Throughput of loadtune.DataLoader with and without killed workers, "
        "and how long a restart takes.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short epochs and 3 pairs (under a minute)"
    )
    parser.add_argument(
        "--every", type=int, default=25, help="kill a worker every N batches (default 25)"
    )
    parser.add_argument("--pairs", type=int, default=None, help="measured pairs (5; quick: 3)")
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"samples per run ({FULL_SAMPLES}; quick: {QUICK_SAMPLES})",
    )
    parser.add_argument("--workers", type=int, default=2, help="num_workers (default 2)")
    parser.add_argument(
        "--delay-ms", type=float, default=0.8, help="sleep per sample (default 0.8 ms)"
    )
    parser.add_argument(
        "--reps", type=int, default=6, help="tiny tensor op rounds per sample (default 6)"
    )
    args = parser.parse_args(argv)
    if args.pairs is None:
        args.pairs = 3 if args.quick else 5
    if args.samples is None:
        args.samples = QUICK_SAMPLES if args.quick else FULL_SAMPLES
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if args.every < 1:
        parser.error("--every must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.samples < BATCH_SIZE * (2 * args.workers * PREFETCH + 1):
        parser.error("--samples is too small to kill anything")
    if args.delay_ms < 0 or args.reps < 0:
        parser.error("--delay-ms and --reps must be non-negative")
    # A hang is a run HANG_FACTOR times slower than the sleeps alone would make it.
    batches = -(-args.samples // BATCH_SIZE)
    args.hang_s = max(60.0, HANG_FACTOR * batches * BATCH_SIZE * args.delay_ms / 1e3)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the warm-ups and the pairs, print the report; 1 if any check failed, else 0."""
    args = parse_args(argv)
    wall = time.perf_counter()
    dataset = SleepyDataset(args.samples, delay_s=args.delay_ms / 1e3, reps=args.reps)
    leftover = 0
    log(f"{args.samples} samples/run, kill every {args.every} batches: warm-up")
    warmups = [
        run_once(dataset, None, args, "warm-up no faults"),
        run_once(dataset, args.every, args, "warm-up faults"),
    ]
    leftover += reap_check("warm-up")
    pairs: list[tuple[Run, Run]] = []
    for i in range(args.pairs):
        order = (None, args.every) if i % 2 == 0 else (args.every, None)
        runs = {
            every: run_once(
                dataset, every, args, f"pair {i + 1} {'faults' if every else 'no faults'}"
            )
            for every in order
        }
        leftover += reap_check(f"pair {i + 1}")
        clean, faulty = runs[None], runs[args.every]
        pairs.append((clean, faulty))
        log(
            f"pair {i + 1}/{args.pairs} ({'A B' if i % 2 == 0 else 'B A'}): "
            f"{clean.throughput:.0f} vs {faulty.throughput:.0f} samples/s, "
            f"{len(faulty.kills)} kills"
        )
    report(pairs, warmups, args, args.samples, leftover, time.perf_counter() - wall)
    kids = children_alive()
    if kids:
        pids = ", ".join(str(k.pid) for k in kids)
        print(f"WARNING: {len(kids)} child process(es) alive at exit: {pids}", file=sys.stderr)
    failed = any(r.failures for pair in pairs for r in pair) or any(r.failures for r in warmups)
    return 1 if failed or leftover or kids else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: hiding per-sample latency with ``fetch_concurrency`` instead of more processes.

What it measures
----------------
One workload: simulated remote storage. Every sample waits 5 to 20 ms (a fixed latency per
index, 12.5 ms on average, spent in ``time.sleep`` as a network read would be), then is
decoded lightly (zlib-decompress a 3x32x32 uint8 image, to float in [0, 1]). The loaders:

* ``loadtune 2x16``  ``loadtune.DataLoader``, 2 workers, ``fetch_concurrency=16``;
* ``torch 2``        ``torch.utils.data.DataLoader``, 2 workers;
* ``torch 16``       ``torch.utils.data.DataLoader``, 16 workers.

All use batch_size 32, prefetch_factor 2, no shuffle. One *run* creates a loader, takes
batches for a fixed time (``--seconds``), then drops the loader (workers shut down). The
first ``--warm`` seconds after the first batch are excluded (the pipeline filling); the
throughput is the samples delivered after that over the time they took. One warm-up run
of each loader is excluded too. Runs are interleaved in rounds whose order alternates
(A B C, C B A, ...), so a shared machine's drift hits every loader alike.

Memory: a separate sampler process (a fresh interpreter, niced) sums USS and PSS
(``psutil.Process.memory_full_info``) over the benchmark's process and all the loader's
workers, one sweep every ~20 ms or as fast as the sweeps go (reading one process's
``smaps_rollup`` costs a few ms, so 17 processes take longer than 20 ms: the achieved
interval is printed). ``peak PSS`` is the highest PSS sum minus the sum just before the run:
PSS counts every page once across the processes, so this is what the loader costs in RAM.
``workers' USS`` is the highest sum of the workers' USS (pages private to one process): it
leaves out what they still share with the main process (copy-on-write pages, batches in
shared memory), so it is a lower bound; it shows where PSS grows.

How to read the output
----------------------
One row per loader: throughput median [min-max] over the rounds, peak PSS and USS medians.
Then the paired ratios (each from the runs of one round) with their min-max. The last line
is the key comparison: loadtune with 2 workers against torch with 16, throughput ratio
(> 1: loadtune is faster) and memory ratio (peak PSS; < 1: loadtune uses less). The target
is throughput >= 1 at memory <= 1/3.

Usage::

    python benchmarks/latency_hiding.py            # 5 rounds of 4 s runs, about 2 minutes
    python benchmarks/latency_hiding.py --quick    # 3 rounds of 2 s runs, under a minute
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import platform
import select
import statistics
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import torch
import torch.utils.data

import loadtune

MiB = 1024 * 1024
SAMPLE_INTERVAL_S = 0.02
BATCH_SIZE = 32
PREFETCH = 2


# --------------------------------------------------------------------------- the workload


def latency_s(index: int) -> float:
    """5 to 20 ms, fixed per index, spread evenly (mean 12.5 ms)."""
    return 0.005 + 0.015 * (((index * 2654435761) & 0xFFFF) / 0xFFFF)


class RemoteImages(torch.utils.data.Dataset):
    """Simulated remote storage: wait ``latency_s(i)``, then decode a small image."""

    def __init__(self, length: int, blobs: Sequence[bytes]) -> None:
        self.length = length
        self.blobs = list(blobs)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(latency_s(index))  # the read: waiting, not computing
        raw = zlib.decompress(self.blobs[index % len(self.blobs)])
        image = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(3, 32, 32)
        return image.to(torch.float32).div_(255.0), index


def make_blobs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` zlib-compressed 3x32x32 images (smooth gradients plus noise)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:32, 0:32]
    blobs = []
    for _ in range(count):
        base = rng.uniform(0, 200, size=(3, 1, 1))
        image = base + 1.5 * (xs + ys)[None] + rng.normal(0, 6, size=(3, 32, 32))
        blobs.append(zlib.compress(np.clip(image, 0, 255).astype(np.uint8).tobytes(), 6))
    return blobs


@dataclass(frozen=True)
class Contender:
    """One loader configuration."""

    name: str
    make: Callable[[torch.utils.data.Dataset], Any]


def contenders() -> list[Contender]:
    """loadtune 2 workers x 16 fetches, torch at 2 and at 16 workers."""

    def ours(ds: torch.utils.data.Dataset) -> Any:
        return loadtune.DataLoader(
            ds, batch_size=BATCH_SIZE, num_workers=2, prefetch_factor=PREFETCH, fetch_concurrency=16
        )

    def torch_loader(workers: int) -> Callable[[torch.utils.data.Dataset], Any]:
        def make(ds: torch.utils.data.Dataset) -> Any:
            return torch.utils.data.DataLoader(
                ds, batch_size=BATCH_SIZE, num_workers=workers, prefetch_factor=PREFETCH
            )

        return make

    return [
        Contender("loadtune 2x16", ours),
        Contender("torch 2", torch_loader(2)),
        Contender("torch 16", torch_loader(16)),
    ]


# --------------------------------------------------------------------------- memory


def _sweep(procs: list[psutil.Process]) -> tuple[int, int] | None:
    """(USS summed over ``procs[1:]``, PSS summed over all); None if one exited meanwhile."""
    uss = pss = 0
    for n, proc in enumerate(procs):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            return None
        uss += info.uss if n else 0
        pss += info.pss
    return uss, pss


def _tree(root: psutil.Process, me: int, known: dict[int, psutil.Process]) -> list[psutil.Process]:
    """``root`` and its descendants but the sampler, reusing known Process objects."""
    try:
        kids = [k for k in root.children(recursive=True) if k.pid != me]
    except psutil.Error:
        return []
    for kid in kids:
        known.setdefault(kid.pid, kid)
    return [root, *(known[k.pid] for k in kids)]


def _sampler_loop(root_pid: int, interval_s: float) -> None:
    """The sampler process: on "begin", sweep until "end", then print the peaks.

    Commands come one per line on stdin; answers go one per line to stdout. A sweep counts
    only if the set of processes is the same before and after it: while a worker forks or
    exits, the pages it shares would be counted at two different share counts.
    """
    os.nice(10)  # it must not take CPU the loaders need
    me = os.getpid()
    root = psutil.Process(root_pid)
    for line in sys.stdin:
        if line.strip() != "begin":
            return
        known: dict[int, psutil.Process] = {}
        base = None
        while base is None:
            base = _sweep(_tree(root, me, known))
        print("ready", flush=True)
        peak = base
        stamps = [time.monotonic()]
        while not select.select([sys.stdin], [], [], interval_s)[0]:
            procs = _tree(root, me, known)
            sums = _sweep(procs)
            after = [p.pid for p in _tree(root, me, known)]
            if sums is not None and after == [p.pid for p in procs]:
                peak = (max(peak[0], sums[0]), max(peak[1], sums[1]))
                stamps.append(time.monotonic())
        sys.stdin.readline()  # "end"
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        gap = statistics.median(gaps) if gaps else 0.0
        print(peak[0], peak[1] - base[1], gap, flush=True)


class MemorySampler:
    """A sampler process that is not a fork of this one.

    A forked sampler would share this process's pages, and as either side writes to them
    this process's PSS would grow by itself and be counted as the loader's. So the sampler
    is a fresh interpreter that imports only psutil, running the three functions above.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        source = "\n".join(
            [
                "from __future__ import annotations",
                "import itertools, os, select, statistics, sys, time",
                "import psutil",
                *(inspect.getsource(fn) for fn in (_sweep, _tree, _sampler_loop)),
                f"_sampler_loop({os.getpid()}, {interval_s!r})",
            ]
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        """The sampler's process id."""
        return self._proc.pid

    def _ask(self, command: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError("the memory sampler exited")
        return answer

    def begin(self) -> None:
        """Take the baseline sweep and start sampling."""
        self._ask("begin")

    def end(self) -> tuple[int, int, float]:
        """Stop; return (peak workers' USS, peak PSS - base, median sweep interval s)."""
        uss, pss, gap = self._ask("end").split()
        return int(uss), int(pss), float(gap)

    def close(self) -> None:
        """Stop the sampler process."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(5)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """What one run measured."""

    throughput: float  # samples/s after the warm-up window
    samples: int
    workers_uss: int
    peak_pss: int
    sweep_s: float  # the memory sampler's achieved interval


def run_once(
    contender: Contender,
    dataset: torch.utils.data.Dataset,
    sampler: MemorySampler,
    args: argparse.Namespace,
) -> Run:
    """Take batches from a fresh loader for ``args.seconds``; measure and drop it."""
    wait_for_workers_to_exit(sampler)
    loader = contender.make(dataset)
    sampler.begin()
    stamps: list[float] = []
    counts: list[int] = []
    start = time.perf_counter()
    it = iter(loader)
    expected = 0
    for images, labels in it:
        now = time.perf_counter()
        if labels[0] != expected or images.shape != (len(labels), 3, 32, 32):
            raise RuntimeError(f"{contender.name}: batch {len(stamps)} is not the one expected")
        expected += len(labels)
        stamps.append(now)
        counts.append(len(labels))
        del images, labels
        if now - start >= args.seconds + args.warm:
            break
    del it, loader
    workers_uss, peak_pss, sweep_s = sampler.end()
    window_start = stamps[0] + args.warm
    measured = [(t, c) for t, c in zip(stamps, counts, strict=True) if t > window_start]
    if len(measured) < 2:
        raise RuntimeError(f"{contender.name}: too few batches after the warm-up window")
    first = max(t for t in stamps if t <= window_start)
    throughput = sum(c for _, c in measured) / (measured[-1][0] - first)
    return Run(throughput, sum(counts), workers_uss, peak_pss, sweep_s)


def wait_for_workers_to_exit(sampler: MemorySampler, timeout_s: float = 5.0) -> None:
    """Wait until the last run's workers are gone, so they are not in the next baseline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = [k for k in psutil.Process().children(recursive=True) if k.pid != sampler.pid]
        if not any(_alive(k) for k in kids):
            return
        time.sleep(0.02)
    raise RuntimeError(f"loader processes outlived their run: {[k.pid for k in kids]}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def measure(args: argparse.Namespace) -> dict[str, list[Run]]:
    """One warm-up run each, then ``args.rounds`` rounds in alternating order."""
    dataset = RemoteImages(1_000_000, make_blobs(256))
    sampler = MemorySampler()
    runs: dict[str, list[Run]] = {}
    try:
        cons = contenders()
        log("warm-up: " + ", ".join(c.name for c in cons))
        for con in cons:
            run_once(con, dataset, sampler, args)
        for r in range(args.rounds):
            order = cons if r % 2 == 0 else cons[::-1]
            for con in order:
                run = run_once(con, dataset, sampler, args)
                runs.setdefault(con.name, []).append(run)
            log(
                f"round {r + 1}/{args.rounds} ({' '.join(c.name for c in order)}): "
                + ", ".join(f"{c.name} {runs[c.name][-1].throughput:.0f}/s" for c in cons)
            )
    finally:
        sampler.close()
    return runs


# --------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def rate(x: float) -> str:
    return f"{x:.0f}"


def mib(x: float) -> str:
    return f"{x / MiB:.0f}"


def ratio(x: float) -> str:
    return f"{x:.2f}"


def report(runs: dict[str, list[Run]], args: argparse.Namespace, wall_s: float) -> None:
    """The table, the paired ratios and, last, the key ratio line."""
    rows = [
        ["loader", "samples/s [min-max]", "peak PSS MiB [min-max]", "workers' USS MiB", "sweep"]
    ]
    for name, rs in runs.items():
        rows.append(
            [
                name,
                spread([r.throughput for r in rs], rate),
                spread([r.peak_pss for r in rs], mib),
                mib(statistics.median([r.workers_uss for r in rs])),
                f"{statistics.median([r.sweep_s for r in rs]) * 1e3:.0f} ms",
            ]
        )
    ours, t2, t16 = runs["loadtune 2x16"], runs["torch 2"], runs["torch 16"]
    vs16 = [o.throughput / t.throughput for o, t in zip(ours, t16, strict=True)]
    vs2 = [o.throughput / t.throughput for o, t in zip(ours, t2, strict=True)]
    mem16 = [o.peak_pss / t.peak_pss for o, t in zip(ours, t16, strict=True)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    print()
    print(
        f"loadtune {loadtune.__version__} vs torch {torch.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; latency 5-20 ms per sample "
        f"(mean 12.5), batch {BATCH_SIZE}, prefetch_factor {PREFETCH}"
    )
    print(
        f"{args.rounds} rounds (+1 warm-up run each) of {args.seconds:g} s after a "
        f"{args.warm:g} s warm-up window, order alternating; {'quick' if args.quick else 'full'}"
    )
    for i, row in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print()
    print(f"paired ratios, median [min-max] over {args.rounds} rounds:")
    print(f"  throughput loadtune 2x16 / torch 16: {spread(vs16, ratio)}")
    print(f"  throughput loadtune 2x16 / torch 2:  {spread(vs2, ratio)}")
    print(f"  peak PSS   loadtune 2x16 / torch 16: {spread(mem16, ratio)}")
    print(
        "memory: peak of the PSS summed over the main process and the workers, minus the sum "
        "before the run; workers' USS: peak of their summed USS; sweep: the sampler's "
        "achieved interval"
    )
    met = statistics.median(vs16) >= 1.0 and statistics.median(mem16) <= 1 / 3
    print(
        f"time: {wall_s:.0f} s; target (throughput >= 1x at <= 1/3 memory): "
        f"{'met' if met else 'NOT met'}"
    )
    print(
        f"key ratio loadtune 2 workers x fetch_concurrency 16 / torch 16 workers: throughput "
        f"{statistics.median(vs16):.2f}x at {statistics.median(mem16):.2f}x the memory"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s (under a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (5; quick: 3)")
    parser.add_argument("--seconds", type=float, default=None, help="measured s per run (4; 2)")
    parser.add_argument("--warm", type=float, default=0.5, help="warm-up window per run, s")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 4.0
    if args.rounds < 1 or args.seconds <= 0 or args.warm < 0:
        parser.error("--rounds must be >= 1, --seconds > 0 and --warm >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    start = time.perf_counter()
    runs = measure(args)
    report(runs, args, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

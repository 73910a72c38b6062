"""Benchmark: what profiling costs, as a loader's throughput with every probe on against none.

What it measures
----------------
Two locally generated workloads, each on ``loadtune.DataLoader`` with 2 workers:

* ``cpu``      CPU-bound: decode generated 256x256 JPEGs with Pillow, crop to 224, to float.
* ``latency``  latency-bound: every sample sleeps 5 ms (simulated remote storage).

One *run* builds a fresh loader and times one window of batches after a warm-up, on one
of two sides:

* ``probes``  ``loadtune.profile(loader, probes=...)`` with every default probe (``gpu``
  left out when CUDA is unavailable: that probe only reports itself unavailable then). Its
  throughput is the profile's own measurement, so the probes' sampler thread, the py-spy
  recorders and everything else the probes run are live during the window.
* ``none``    ``loadtune.measure.time_window`` on an identical fresh loader: the same
  stopwatch, warm-up, settle (the ``num_workers x prefetch_factor`` batches profile()
  takes after starting its probes, so that both windows open on a drained queue) and
  window, with nothing watching.

The first batch and the warm-up batches are excluded on both sides (the probes start when
the window opens, so their start-up and shut-down are outside it). Runs are interleaved in
pairs, alternating which side goes first (probes/none, then none/probes, ...), after one
excluded warm-up pair, so slow drift of a shared machine hits both sides alike.

Two throughputs per run:

* ``window``  the window's samples over its length, as ``profile()`` and ``time_window``
  report it.
* ``steady``  the same window without its first ``num_workers x prefetch_factor`` batches
  (from each batch's ``taken`` time: the stages probe's ``wait`` series on the probes side,
  ``WindowRun.waits`` on the other). Whatever the workers got ahead while a side prepared
  its window (py-spy attaching, the first probe readings) comes out of the queue in those
  first batches, so ``steady`` is the fair comparison and the one the verdict uses;
  ``window`` is the cross-check.

The probes' own CPU (NOTE [ Probe overhead ] in loadtune/profiling.py): per probes run,
the CPU seconds the py-spy recorders (separate processes) and the sampler thread (in the
main process, each probe's ``sample()``) used inside the window, per second of window.
This does not depend on how busy the machine is, so it is the noise-free side of the
figures: on the CPU-bound workload, where the workers keep every core busy, the throughput
should fall by about the probes' share of the cores, and no more. And, end to end, the CPU
seconds of the main process and all its children (workers, py-spy) per sample from the
window's first batch to its last, read the same way on both sides: what the probes add
to it, their own CPU or any they cause in the loader's processes, is what a CPU-bound
loader on busy cores pays in throughput. (On a shared virtual machine CPU time swells with
contention too, so this ratio is steadier than throughput, not free of noise.)

How to read the output
----------------------
Per workload, one row per side: the median samples/s over the measured runs with its
[min-max], window and steady; then the median of the *paired* ratios probes/none (each pair
= the two runs adjacent in time) with their [min-max]: 1.00 means the probes cost nothing,
0.97 means they cost 3% of the throughput; then a distribution-free 95% interval of the
steady median (order statistics; its exact coverage is printed, and it is [min-max] with
fewer than 6 pairs); then how much of the cores other processes used (the machine is
shared) and the steady ratios of the quiet pairs, in whose two runs they used under 10%;
then the ``probe CPU`` line: the median [min-max] CPU seconds per window second of py-spy
(and the rate it sampled at) and of the sampler (split per probe), their sum as a share of
the usable cores, and the throughput ratio a CPU-bound loader would show if that CPU were
all the probes cost; then the paired none/probes ratio of CPU per sample (a throughput
estimate only where the workers are CPU-bound: elsewhere the loader's own CPU per sample is
small and the probes' fixed cost looms large in it). Probes that were unavailable on this
machine are listed, since what they would cost is then not measured. The last lines are the
medians, over the workloads run, of the per-workload median paired ratios (window, then
steady), the CPU-per-sample and quiet-pair medians, and the verdict: every workload's
steady median at least 0.97.

Usage::

    python benchmarks/probe_overhead.py            # full form, 15 pairs, about 6 minutes
    python benchmarks/probe_overhead.py --quick    # 5 pairs, about 1-2 minutes on 2 cores
    python benchmarks/probe_overhead.py --workloads latency --pairs 11
    python benchmarks/probe_overhead.py --quick --probes stages,cpu,io,numa   # which costs?
    python benchmarks/probe_overhead.py --quick --workloads cpu --verbose     # every pair
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.utils.data
from PIL import Image

import loadtune
from loadtune.measure import time_window
from loadtune.profiling import DEFAULT_PROBES, profile
from probes.pyspy import cpu_seconds

WORKERS = 2
WARMUP_BATCHES = 5
PREFETCH = 2  # the loaders' prefetch_factor (torch's default)
HEAD_START = WORKERS * PREFETCH  # batches that may be queued when a window opens


# --------------------------------------------------------------------------- datasets


class JpegDataset(torch.utils.data.Dataset):
    """JPEG files decoded with Pillow, center-cropped, as float CHW in [0, 1]."""

    def __init__(self, paths: Sequence[str], length: int, crop: int = 224) -> None:
        self.paths = list(paths)
        self.length = length
        self.crop = crop

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index % len(self.paths)]) as img:
            rgb = img.convert("RGB")
        width, height = rgb.size
        left, top = (width - self.crop) // 2, (height - self.crop) // 2
        rgb = rgb.crop((left, top, left + self.crop, top + self.crop))
        hwc = torch.from_numpy(np.array(rgb))
        return hwc.permute(2, 0, 1).to(torch.float32).div_(255.0)


class SleepDataset(torch.utils.data.Dataset):
    """Each sample waits ``delay_s`` off-CPU and is a small tensor."""

    def __init__(self, length: int, delay_s: float = 0.005) -> None:
        self.length = length
        self.delay_s = delay_s

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.delay_s)
        return torch.full((64,), float(index))


def make_jpegs(folder: Path, count: int = 32, size: int = 256, seed: int = 0) -> list[str]:
    """Write ``count`` size x size RGB JPEGs (smooth gradients plus noise); return paths."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    paths = []
    for i in range(count):
        base = rng.uniform(40, 215, size=3)
        image = np.stack([base[c] + 30 * np.sin(xs / (9 + c) + ys / (13 + i)) for c in range(3)])
        image = image + rng.normal(0, 12, size=image.shape)
        pixels = np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True, slots=True)
class Workload:
    """A named loader factory and the window length (in batches) for quick and full runs.

    ``cpu_bound``: the workers keep the cores busy, so CPU per sample predicts throughput.
    """

    name: str
    make: Callable[[], loadtune.DataLoader]
    batch_size: int
    quick_batches: int
    full_batches: int
    cpu_bound: bool


def workloads(folder: Path) -> dict[str, Workload]:
    """The two workloads; each window lasts about 1 s (quick) or 2.5 s (full) on 2 cores."""
    paths = make_jpegs(folder)
    length = 100_000  # never exhausted: the sampler is sequential and a run stops early

    def cpu() -> loadtune.DataLoader:
        dataset = JpegDataset(paths, length)
        return loadtune.DataLoader(
            dataset, batch_size=16, num_workers=WORKERS, prefetch_factor=PREFETCH
        )

    def latency() -> loadtune.DataLoader:
        dataset = SleepDataset(length)
        return loadtune.DataLoader(
            dataset, batch_size=8, num_workers=WORKERS, prefetch_factor=PREFETCH
        )

    return {
        "cpu": Workload("cpu", cpu, 16, quick_batches=150, full_batches=375, cpu_bound=True),
        "latency": Workload(
            "latency", latency, 8, quick_batches=50, full_batches=125, cpu_bound=False
        ),
    }


# --------------------------------------------------------------------------- runs

TARGET = 0.97  # the verdict: a profile keeps at least 97% of the unwatched throughput
# A pair is "quiet" when other processes used less than this share of the cores in both runs.
QUIET = 0.10


def probe_names() -> list[str]:
    """Every default probe, less ``gpu`` when CUDA is unavailable (it cannot measure then)."""
    return [p for p in DEFAULT_PROBES if p != "gpu" or torch.cuda.is_available()]


def steady_rate(taken: Sequence[float], batch_size: int) -> float:
    """Samples/s from the window's batch ``HEAD_START`` to its last (see the docstring)."""
    t = sorted(taken)
    return (len(t) - 1 - HEAD_START) * batch_size / (t[-1] - t[HEAD_START])


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run: window and steady samples/s, what the probes cost, what was missing.

    ``cost`` is CPU seconds per window second: ``pyspy`` (the recorders), ``sampler`` (the
    sampler thread) and ``sample.<probe>`` (its split), inside the window; empty for ``none``.
    ``cpu_per_sample`` is the CPU seconds of the main process and its children (the
    workers, and the py-spy recorders on the probes side) per sample, from the window's
    first batch to its last, and ``others`` the share of the cores that other processes
    used meanwhile (see :class:`CpuMeter`).
    """

    window: float
    steady: float
    missing: dict[str, str]
    cost: dict[str, float]
    pyspy_rate: float | None = None
    cpu_per_sample: float = 0.0
    others: float = 0.0


class CpuMeter:
    """CPU seconds of this process and its children between the window's first and last batch.

    Called after every batch of the window (``on_batch`` of ``time_window``, ``progress``
    of ``profile``): it reads at batch 1 and again at batch ``batches``, the same way on both
    sides, from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; see probes.pyspy.cpu_seconds).
    The children are the workers and, on the probes side, the py-spy recorders; the sampler
    thread is one of this process's threads. It also reads the machine's busy CPU time
    (``/proc/stat``, steal included), so that what other processes used in between is known:
    ``others`` is that share of the usable cores.
    """

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.pids: list[int] = []
        self.start = (0.0, 0.0, 0.0)  # (our CPU s, the machine's busy CPU s, monotonic s)
        self.used: float | None = None
        self.others = 0.0

    def __call__(self, done: int) -> None:
        if done == 1:
            self.pids = [os.getpid(), *(c.pid for c in psutil.Process().children())]
            self.start = self._read()
        elif done == self.batches:
            ours, busy, now = self._read()
            self.used = ours - self.start[0]
            elapsed = (now - self.start[2]) * len(os.sched_getaffinity(0))
            others = (busy - self.start[1]) - self.used
            self.others = max(0.0, others / elapsed) if elapsed > 0 else 0.0

    def _read(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        busy -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        ours = sum(cpu_seconds(pid) or 0.0 for pid in self.pids)
        return ours, busy, time.monotonic()

    def per_sample(self, batch_size: int) -> float:
        """CPU seconds per sample over the batches after the first of the window."""
        if self.used is None:
            raise RuntimeError("the window ended before its last batch")
        return self.used / ((self.batches - 1) * batch_size)


def run_probes(work: Workload, batches: int, names: Sequence[str]) -> Run:
    """One profiled run."""
    meter = CpuMeter(batches)
    result = profile(
        work.make(),
        batches=batches,
        warmup=WARMUP_BATCHES,
        probes=names,
        progress=lambda phase, done: meter(done) if phase == "window" else None,
    )
    missing = {n: p.reason for n, p in result.probes.items() if not p.available}
    stages = result.probes["stages"]
    if not stages.available:
        raise RuntimeError(f"the stages probe is unavailable: {stages.reason}")
    taken = next(s.t for s in stages.series if s.name == "wait")
    overhead = result.overhead
    span = overhead["probes_window_s"]
    cost = {"sampler": overhead["sampler_window_cpu_s"] / span}
    for key, value in overhead.items():
        if key.startswith("sample_cpu_s."):
            cost["sample." + key.split(".", 1)[1]] = value / span
    rate = None
    if "pyspy_cpu_s" in overhead:
        cost["pyspy"] = overhead["pyspy_cpu_s"] / span
        rate = result.probes["pyspy"].summary["rate_per_s"]
    steady = steady_rate(taken, work.batch_size)
    per_sample = meter.per_sample(work.batch_size)
    window = result.measurement.samples_per_s
    return Run(window, steady, missing, cost, rate, per_sample, meter.others)


def run_none(work: Workload, batches: int) -> Run:
    """One unwatched run of the same window, with the same settle as profile()'s."""
    meter = CpuMeter(batches)
    run = time_window(
        work.make(),
        batches=batches,
        warmup=WARMUP_BATCHES,
        on_window_start=lambda: None,
        settle=HEAD_START,
        on_batch=meter,
    )
    taken = [t for t, _ in run.waits]
    steady = steady_rate(taken, work.batch_size)
    per_sample = meter.per_sample(work.batch_size)
    return Run(run.samples_per_s, steady, {}, {}, None, per_sample, meter.others)


@dataclass(frozen=True, slots=True)
class Sides:
    """The measured runs of one workload, in pair order."""

    probes: list[Run]
    none: list[Run]
    missing: dict[str, str]

    def ratios(self, kind: str) -> list[float]:
        """Paired probes/none ratios of ``kind`` ("window" or "steady")."""
        return [
            getattr(p, kind) / getattr(n, kind) for p, n in zip(self.probes, self.none, strict=True)
        ]

    def quiet_ratios(self) -> list[float]:
        """Steady probes/none ratios of the pairs whose runs both had the machine to themselves.

        That is, other processes used less than ``QUIET`` of the cores in each.
        """
        return [
            p.steady / n.steady
            for p, n in zip(self.probes, self.none, strict=True)
            if p.others < QUIET and n.others < QUIET
        ]

    def cpu_kept(self) -> list[float]:
        """Paired none/probes ratios of CPU per sample.

        The throughput a CPU-bound loader on busy cores would keep, were CPU all that
        limits it: the probes' own CPU and whatever they add to the loader's.
        """
        return [
            n.cpu_per_sample / p.cpu_per_sample for p, n in zip(self.probes, self.none, strict=True)
        ]


def bench(work: Workload, batches: int, pairs: int, names: Sequence[str]) -> Sides:
    """``pairs`` interleaved pairs after one excluded warm-up pair."""
    sides = Sides([], [], {})
    for k in range(pairs + 1):
        order = ("probes", "none") if k % 2 == 0 else ("none", "probes")
        got: dict[str, Run] = {}
        for side in order:
            if side == "probes":
                got[side] = run_probes(work, batches, names)
                sides.missing.update(got[side].missing)
            else:
                got[side] = run_none(work, batches)
        if k == 0:
            continue  # the warm-up pair: first fork, imports, page cache, py-spy's first start
        sides.probes.append(got["probes"])
        sides.none.append(got["none"])
    return sides


def spread(values: Sequence[float], fmt: str) -> str:
    """``median [min-max]`` in the given format."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} [{lo:{fmt}}-{hi:{fmt}}]"


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median: (low, high, its exact coverage).

    The k-th smallest and k-th largest values, for the largest k whose binomial tail
    P(Bin(n, 1/2) < k) is at most (1 - level) / 2; [min, max] when even k = 1 is short
    of the level (n < 6 for 95%).

    Example:
        >>> median_interval([float(v) for v in range(1, 10)])  # n = 9: 2nd and 8th
        (2.0, 8.0, 0.9609375)
    """
    x = sorted(values)
    n = len(x)

    def below(k: int) -> float:  # P(Bin(n, 1/2) < k)
        return sum(math.comb(n, j) for j in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and below(k + 1) <= (1.0 - level) / 2:
        k += 1
    return x[k - 1], x[n - k], 1.0 - 2.0 * below(k)


def cost_line(runs: Sequence[Run], cores: int) -> str:
    """The ``probe CPU`` line of one workload (medians [min-max] over the probes runs)."""
    costs = [r.cost for r in runs]
    parts = []
    if all("pyspy" in c for c in costs):
        rates = sorted({r.pyspy_rate for r in runs if r.pyspy_rate is not None})
        at = "/".join(f"{rate:g}" for rate in rates)
        parts.append(f"py-spy {spread([c['pyspy'] for c in costs], '.4f')} at {at} Hz")
    split = ", ".join(
        f"{key.split('.', 1)[1]} {statistics.median(c[key] for c in costs):.4f}"
        for key in sorted(costs[0], key=lambda k: -statistics.median(c[k] for c in costs))
        if key.startswith("sample.")
    )
    parts.append(f"sampler {spread([c['sampler'] for c in costs], '.4f')} ({split})")
    total = statistics.median(c["sampler"] + c.get("pyspy", 0.0) for c in costs)
    return (
        f"  probe CPU, s per window s: {'; '.join(parts)}\n"
        f"  probe CPU together {total:.4f} s/s = {100 * total / cores:.2f}% of {cores} cores: "
        f"a CPU-bound loader would keep about {1 - total / cores:.3f} of its throughput"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, 5 pairs")
    parser.add_argument("--pairs", type=int, default=None, help="measured pairs per workload")
    parser.add_argument("--workloads", default="cpu,latency", help="comma-separated names")
    parser.add_argument("--probes", default=None, help="comma-separated (default: all)")
    parser.add_argument("--verbose", action="store_true", help="print every pair")
    args = parser.parse_args(argv)
    pairs = args.pairs if args.pairs is not None else (5 if args.quick else 15)
    if pairs < 1:
        parser.error(f"--pairs must be at least 1, got {pairs}")
    names = probe_names()
    if args.probes is not None:
        names = [p.strip() for p in args.probes.split(",") if p.strip()]
        if "stages" not in names:
            parser.error("--probes must include stages (the steady rate is read from it)")
    left_out = [p for p in DEFAULT_PROBES if p not in names]
    cores = len(os.sched_getaffinity(0))

    print(
        f"probe overhead: loadtune.DataLoader, {WORKERS} workers, {pairs} pairs per workload "
        f"after 1 warm-up pair, {WARMUP_BATCHES} warm-up batches per run"
    )
    print(f"probes: {','.join(names)}" + (f" (left out: {','.join(left_out)})" if left_out else ""))
    print(
        f"machine: {cores} usable cores, {platform.machine()}, "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    window_ratios: dict[str, float] = {}
    steady_ratios: dict[str, float] = {}
    kept_ratios: dict[str, float] = {}
    quiet_ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="loadtune-probe-overhead-") as tmp:
        known = workloads(Path(tmp))
        chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in known]
        if unknown:
            parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for name in chosen:
            work = known[name]
            batches = work.quick_batches if args.quick else work.full_batches
            started = time.monotonic()
            sides = bench(work, batches, pairs, names)
            took = time.monotonic() - started
            print(f"\n{name} ({batches} batches a window, {took:.0f} s)")
            print(f"  {'samples/s':<24}{'window':<24}steady")
            for side, runs in (("none", sides.none), ("probes", sides.probes)):
                window = spread([r.window for r in runs], ".0f")
                steady = spread([r.steady for r in runs], ".0f")
                print(f"  {side:<24}{window:<24}{steady}")
            window = spread(sides.ratios("window"), ".3f")
            steady = spread(sides.ratios("steady"), ".3f")
            print(f"  {'probes/none paired':<24}{window:<24}{steady}")
            if args.verbose:
                for k, (p, n) in enumerate(zip(sides.probes, sides.none, strict=True), 1):
                    first = "none first" if k % 2 else "probes first"
                    print(
                        f"    pair {k:>2} ({first:<12}) steady probes {p.steady:7.0f} "
                        f"none {n.steady:7.0f} ratio {p.steady / n.steady:.3f}; "
                        f"others used {100 * p.others:3.0f}% / {100 * n.others:3.0f}% "
                        "of the cores"
                    )
            lo, hi, coverage = median_interval(sides.ratios("steady"))
            print(
                f"  steady median's interval: [{lo:.3f}-{hi:.3f}] "
                f"({100 * coverage:.1f}% coverage, order statistics of {pairs} pairs)"
            )
            quiet = sides.quiet_ratios()
            others = statistics.median(r.others for r in [*sides.probes, *sides.none])
            print(
                f"  other processes used {100 * others:.0f}% of the cores (median run); "
                f"quiet pairs (under {100 * QUIET:.0f}% in both runs): {len(quiet)} of {pairs}"
                + (f", steady ratio {spread(quiet, '.3f')}" if quiet else "")
            )
            if quiet:
                quiet_ratios[name] = statistics.median(quiet)
            print(cost_line(sides.probes, cores))
            kept = sides.cpu_kept()
            note = "" if work.cpu_bound else " (not CPU-bound: not a throughput estimate)"
            print(f"  CPU per sample, none/probes paired: {spread(kept, '.3f')}{note}")
            if work.cpu_bound:
                kept_ratios[name] = statistics.median(kept)
            for probe, reason in sorted(sides.missing.items()):
                print(f"  unavailable: {probe}: {reason}")
            window_ratios[name] = statistics.median(sides.ratios("window"))
            steady_ratios[name] = statistics.median(sides.ratios("steady"))
    window = statistics.median(window_ratios.values())
    steady = statistics.median(steady_ratios.values())
    print(f"\noverall median paired ratio probes/none (over workloads), window: {window:.3f}")
    print(f"overall median paired ratio probes/none (over workloads), steady: {steady:.3f}")
    if kept_ratios:
        each = ", ".join(f"{name} {ratio:.3f}" for name, ratio in kept_ratios.items())
        print(f"CPU per sample, median paired ratio none/probes (CPU-bound workloads): {each}")
    if quiet_ratios:
        each = ", ".join(f"{name} {ratio:.3f}" for name, ratio in quiet_ratios.items())
        print(f"quiet pairs only, median steady ratio probes/none: {each}")
    each = ", ".join(f"{name} {ratio:.3f}" for name, ratio in steady_ratios.items())
    met = all(ratio >= TARGET for ratio in steady_ratios.values())
    print(
        f"verdict: steady median paired ratio probes/none {each}; "
        f"target >= {TARGET:.2f} on every workload: {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

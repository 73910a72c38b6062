"""Benchmark: what profiling costs, as a loader's throughput with every probe on against none.

What it measures
----------------
Two locally generated workloads, each on ``loadtune.DataLoader`` with 2 workers:

* ``cpu``      CPU-bound: decode generated 256x256 JPEGs with Pillow, crop to 224, to float.
* ``latency``  latency-bound: every sample sleeps 5 ms (simulated remote storage).

One *run* builds a fresh loader and times one steady window of batches after a warm-up,
on one of two sides:

* ``probes``  ``loadtune.profile(loader, probes=...)`` with every default probe (``gpu``
  left out when CUDA is unavailable: that probe only reports itself unavailable then). Its
  throughput is the profile's own measurement, so the probes' sampler thread, the py-spy
  recorders and everything else the probes run are live during the window.
* ``none``    ``loadtune.measure.time_window`` on an identical fresh loader: the same
  stopwatch, warm-up and window, with nothing watching.

The first batch and the warm-up batches are excluded on both sides (the probes start when
the window opens, so their start-up and shut-down are outside it). Runs are interleaved in
pairs, alternating which side goes first (probes/none, then none/probes, ...), after one
excluded warm-up pair, so slow drift of a shared machine hits both sides alike.

Two throughputs per run:

* ``window``  the window's samples over its length, as ``profile()`` and ``time_window``
  report it.
* ``steady``  the same window without its first ``num_workers x prefetch_factor`` batches
  (from each batch's ``taken`` time: the stages probe's ``wait`` series on the probes side,
  ``WindowRun.waits`` on the other). profile() starts its probes between the warm-up and
  the window (tens of ms with py-spy); meanwhile the workers fill their prefetch queue, and
  those batches come free at the start of the window, which flatters the probes side by up
  to 4 batches a window. ``steady`` is the fair comparison and the one the verdict uses.

How to read the output
----------------------
Per workload, one row per side: the median samples/s over the measured runs with its
[min-max], window and steady; then the median of the *paired* ratios probes/none (each
pair = the two runs adjacent in time) with their [min-max]: 1.00 means the probes cost
nothing, 0.97 means they cost 3% of the throughput. Probes that were unavailable on this
machine are listed, since what they would cost is then not measured. The last line is the
median, over the workloads run, of the per-workload median steady paired ratios (target:
>= 0.97); the line above it is the same for the window ratios.

Usage::

    python benchmarks/probe_overhead.py            # full form, a few minutes
    python benchmarks/probe_overhead.py --quick    # under a minute on 2 cores
    python benchmarks/probe_overhead.py --workloads latency --pairs 11
    python benchmarks/probe_overhead.py --quick --probes stages,cpu,io,numa   # which costs?
"""

from __future__ import annotations

import argparse
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
import torch
import torch.utils.data
from PIL import Image

import loadtune
from loadtune.measure import time_window
from loadtune.profiling import DEFAULT_PROBES, profile

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
    """A named loader factory and the window length (in batches) for quick and full runs."""

    name: str
    make: Callable[[], loadtune.DataLoader]
    batch_size: int
    quick_batches: int
    full_batches: int


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
        "cpu": Workload("cpu", cpu, 16, quick_batches=150, full_batches=375),
        "latency": Workload("latency", latency, 8, quick_batches=50, full_batches=125),
    }


# --------------------------------------------------------------------------- runs


def probe_names() -> list[str]:
    """Every default probe, less ``gpu`` when CUDA is unavailable (it cannot measure then)."""
    return [p for p in DEFAULT_PROBES if p != "gpu" or torch.cuda.is_available()]


def steady_rate(taken: Sequence[float], batch_size: int) -> float:
    """Samples/s from the window's batch ``HEAD_START`` to its last (see the docstring)."""
    t = sorted(taken)
    return (len(t) - 1 - HEAD_START) * batch_size / (t[-1] - t[HEAD_START])


@dataclass
class Run:
    """One measured run: window and steady samples/s, and the probes that were unavailable."""

    window: float
    steady: float
    missing: dict[str, str]


def run_probes(work: Workload, batches: int, names: Sequence[str]) -> Run:
    """One profiled run."""
    result = profile(work.make(), batches=batches, warmup=WARMUP_BATCHES, probes=names)
    missing = {n: p.reason for n, p in result.probes.items() if not p.available}
    stages = result.probes["stages"]
    if not stages.available:
        raise RuntimeError(f"the stages probe is unavailable: {stages.reason}")
    taken = next(s.t for s in stages.series if s.name == "wait")
    return Run(result.measurement.samples_per_s, steady_rate(taken, work.batch_size), missing)


def run_none(work: Workload, batches: int) -> Run:
    """One unwatched run of the same window."""
    run = time_window(work.make(), batches=batches, warmup=WARMUP_BATCHES)
    taken = [t for t, _ in run.waits]
    return Run(run.samples_per_s, steady_rate(taken, work.batch_size), {})


@dataclass
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, 3 pairs")
    parser.add_argument("--pairs", type=int, default=None, help="measured pairs per workload")
    parser.add_argument("--workloads", default="cpu,latency", help="comma-separated names")
    parser.add_argument("--probes", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    pairs = args.pairs if args.pairs is not None else (3 if args.quick else 9)
    names = probe_names()
    if args.probes is not None:
        names = [p.strip() for p in args.probes.split(",") if p.strip()]
        if "stages" not in names:
            parser.error("--probes must include stages (the steady rate is read from it)")
    left_out = [p for p in DEFAULT_PROBES if p not in names]

    print(
        f"probe overhead: loadtune.DataLoader, {WORKERS} workers, {pairs} pairs per workload "
        f"after 1 warm-up pair, {WARMUP_BATCHES} warm-up batches per run"
    )
    print(f"probes: {','.join(names)}" + (f" (left out: {','.join(left_out)})" if left_out else ""))
    print(
        f"machine: {len(os.sched_getaffinity(0))} usable cores, {platform.machine()}, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )
    window_ratios: list[float] = []
    steady_ratios: list[float] = []
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
            for probe, reason in sorted(sides.missing.items()):
                print(f"  unavailable: {probe}: {reason}")
            window_ratios.append(statistics.median(sides.ratios("window")))
            steady_ratios.append(statistics.median(sides.ratios("steady")))
    window = statistics.median(window_ratios)
    steady = statistics.median(steady_ratios)
    print(f"\noverall median paired ratio probes/none (over workloads), window: {window:.3f}")
    print(f"overall median paired ratio probes/none (over workloads), steady: {steady:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

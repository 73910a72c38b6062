"""Benchmark: ``loadtune.DataLoader`` against ``torch.utils.data.DataLoader``, same config.

What it measures
----------------
Five locally generated workloads, each limited by something different:

* ``jpeg``     CPU-bound: decode generated JPEGs with Pillow, random crop + flip, to float.
* ``latency``  latency-bound: every sample sleeps a few ms (simulated remote storage).
* ``large``    transport-bound: 3x512x512 float32 samples (3 MiB each), batch_size 16.
* ``tiny``     overhead-bound: a 16-float tensor and an int label, batch_size 512.
* ``tokens``   variable-length int64 sequences (16..512) padded by a custom collate_fn.

For each workload both loaders get the same arguments (num_workers, prefetch_factor,
batch_size, shuffle with a freshly seeded generator, collate_fn). One *run* creates the
loader, drains one whole epoch and drops the loader, so every run includes worker start-up
and shutdown. Each batch is consumed by reading one element per memory page of every
tensor (lazily mapped shared memory is really faulted in) and is then dropped.

Runs are interleaved in pairs, alternating which loader goes first (ours/torch, then
torch/ours, ...), after one excluded warm-up run of each, so slow drift of a shared machine
hits both loaders alike.

How to read the output
----------------------
Per workload, one row per loader (medians over the measured runs):

* ``samples/s [min-max]``  whole drained run: samples / time from ``iter()`` to exhaustion.
* ``steady/s``  samples/s after the initial prefetch window (num_workers x prefetch_factor
  batches) up to the last batch: a cross-check that excludes start-up and shutdown.
* ``1st batch``  time from ``iter()`` until the first batch is in hand.
* ``peak USS``  peak, sampled every 20 ms, of the summed USS of this process and all its
  children, minus the value just before the run (RSS instead if USS is not readable).
  USS leaves out pages that two processes share (fork's copy-on-write pages, and
  shared-memory blocks mapped by both a worker and the main process), so it can miss the
  transport buffers entirely; ``peak PSS`` (same sampling, proportional set size) counts
  every page once across the process tree and is the better total.

The ``ours/torch`` row gives the median of the *paired* ratios (each pair = the two runs
adjacent in time) with their min-max: above 1 for throughput means loadtune is faster;
below 1 for the first-batch time means loadtune starts faster. The last line is the median,
over the workloads run, of the per-workload throughput ratios.

A mismatch in the data checksum (the sum of what was read from the batches) between the two
loaders is reported: with the same seed both must deliver the same samples.

Usage::

    python benchmarks/loader_vs_torch.py            # full form, a few minutes
    python benchmarks/loader_vs_torch.py --quick    # under a minute on 2 cores
    python benchmarks/loader_vs_torch.py --workloads jpeg,tiny --pairs 7 --workers 4
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.utils.data
from PIL import Image

import loadtune

MiB = 1024 * 1024
SAMPLE_INTERVAL_S = 0.02
PAGE = 4096
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# --------------------------------------------------------------------------- datasets


class JpegDataset(torch.utils.data.Dataset):
    """JPEG files decoded with Pillow, random crop + horizontal flip, normalized float CHW."""

    def __init__(self, paths: Sequence[str], length: int, crop: int) -> None:
        self.paths = list(paths)
        self.length = length
        self.crop = crop

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index % len(self.paths)]) as img:
            rgb = img.convert("RGB")
        width, height = rgb.size
        left = int(torch.randint(0, width - self.crop + 1, ()).item())
        top = int(torch.randint(0, height - self.crop + 1, ()).item())
        rgb = rgb.crop((left, top, left + self.crop, top + self.crop))
        if torch.rand(()).item() < 0.5:
            rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        hwc = torch.from_numpy(np.array(rgb))
        chw = hwc.permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format)
        return chw.div_(255.0).sub_(_MEAN).div_(_STD), index % 10


class LatencyDataset(torch.utils.data.Dataset):
    """Simulated remote storage: each sample waits ``delay_s`` and is a small tensor."""

    def __init__(self, length: int, delay_s: float, dim: int = 256) -> None:
        self.length = length
        self.delay_s = delay_s
        self.dim = dim

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.delay_s)
        return torch.full((self.dim,), float(index)), index


class LargeDataset(torch.utils.data.Dataset):
    """Large samples (default 3x512x512 float32, 3 MiB): the cost is moving the bytes."""

    def __init__(self, length: int, shape: tuple[int, ...] = (3, 512, 512)) -> None:
        self.length = length
        self.shape = shape

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full(self.shape, float(index % 251)), index


class TinyDataset(torch.utils.data.Dataset):
    """Tiny samples: a row of a precomputed feature matrix and an int label."""

    def __init__(self, length: int, dim: int = 16, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.features = torch.randn(length, dim, generator=gen)
        self.labels = torch.randint(0, 10, (length,), generator=gen).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], self.labels[index]


class TokenDataset(torch.utils.data.Dataset):
    """Variable-length int64 token sequences, lengths uniform in [min_len, max_len]."""

    def __init__(
        self, length: int, min_len: int = 16, max_len: int = 512, vocab: int = 32000, seed: int = 0
    ) -> None:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(min_len, max_len + 1, size=length)
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).tolist()
        gen = torch.Generator().manual_seed(seed)
        self.pool = torch.randint(0, vocab, (int(lengths.sum()),), generator=gen)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> torch.Tensor:
        # clone: a sample must own its storage, not view the whole pool
        return self.pool[self.offsets[index] : self.offsets[index + 1]].clone()


def pad_collate(batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-pad sequences with 0; also return the lengths and an attention mask."""
    lengths = torch.tensor([len(seq) for seq in batch], dtype=torch.int64)
    longest = int(lengths.max())
    ids = torch.zeros(len(batch), longest, dtype=torch.int64)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = seq
    mask = torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)
    return {"input_ids": ids, "attention_mask": mask, "lengths": lengths}


# --------------------------------------------------------------------------- workloads


def make_jpegs(folder: Path, count: int, size: int, seed: int) -> list[str]:
    """Write ``count`` size x size RGB JPEGs (gradients, waves and noise); return paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    paths = []
    for i in range(count):
        base = rng.uniform(40, 215, size=3).astype(np.float32)
        fx, fy = rng.uniform(0.01, 0.08, size=(2, 3)).astype(np.float32)
        wave = 60.0 * np.sin(xs[..., None] * fx + ys[..., None] * fy)
        noise = rng.normal(0.0, 18.0, size=(size, size, 3)).astype(np.float32)
        pixels = np.clip(base + wave + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(pixels, "RGB").save(path, quality=90)
        paths.append(str(path))
    return paths


@dataclass(frozen=True)
class Workload:
    """One workload: how to build its dataset and how to load it."""

    name: str
    bound: str
    batch_size: int
    shuffle: bool
    samples: int  # per epoch (one run), full form
    quick_samples: int
    build: Callable[[Path, int, bool], torch.utils.data.Dataset]
    collate_fn: Callable[[list[Any]], Any] | None = None


def build_jpeg(root: Path, samples: int, quick: bool) -> torch.utils.data.Dataset:
    paths = make_jpegs(root / "jpeg", count=64 if quick else 256, size=256, seed=0)
    return JpegDataset(paths, length=samples, crop=224)


def build_latency(root: Path, samples: int, quick: bool) -> torch.utils.data.Dataset:
    return LatencyDataset(samples, delay_s=0.004)


def build_large(root: Path, samples: int, quick: bool) -> torch.utils.data.Dataset:
    return LargeDataset(samples)


def build_tiny(root: Path, samples: int, quick: bool) -> torch.utils.data.Dataset:
    return TinyDataset(samples)


def build_tokens(root: Path, samples: int, quick: bool) -> torch.utils.data.Dataset:
    return TokenDataset(samples)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("jpeg", "CPU", 32, True, 1536, 384, build_jpeg),
        Workload("latency", "latency", 16, False, 768, 256, build_latency),
        Workload("large", "transport", 16, False, 1024, 192, build_large),
        Workload("tiny", "overhead", 512, False, 327680, 49152, build_tiny),
        Workload("tokens", "collate", 64, True, 32768, 6144, build_tokens, pad_collate),
    )
}


# --------------------------------------------------------------------------- measuring


class MemorySampler:
    """Samples summed USS and PSS of this process and its children in a background thread."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.fallback_rss = False
        self._me = psutil.Process()
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)
        self.base = (0, 0)
        self.peak = (0, 0)

    def _children(self) -> list[psutil.Process]:
        try:
            kids = self._me.children(recursive=True)
        except psutil.Error:
            return list(self._procs.values())
        procs = {}
        for kid in kids:  # reuse Process objects: cheaper, and they remember create_time
            procs[kid.pid] = self._procs.get(kid.pid, kid)
        self._procs = procs
        return list(procs.values())

    def sample(self, refresh: bool = True) -> tuple[int, int]:
        """(USS sum, PSS sum) in bytes over this process and its children."""
        uss = pss = 0
        procs = [self._me, *(self._children() if refresh else self._procs.values())]
        for proc in procs:
            try:
                if self.fallback_rss:
                    rss = proc.memory_info().rss
                    uss, pss = uss + rss, pss + rss
                    continue
                info = proc.memory_full_info()
                uss, pss = uss + info.uss, pss + info.pss
            except psutil.AccessDenied:
                self.fallback_rss = True
                rss = proc.memory_info().rss
                uss, pss = uss + rss, pss + rss
            except psutil.Error:  # exited between listing and reading
                continue
        return uss, pss

    def _update(self, refresh: bool) -> None:
        uss, pss = self.sample(refresh)
        self.peak = (max(self.peak[0], uss), max(self.peak[1], pss))

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval_s):
            tick += 1
            # listing children scans /proc (~1.5 ms): do it every third sample only
            self._update(refresh=tick % 3 == 1)

    def start(self) -> None:
        self.base = self.peak = self.sample()
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        """Stop sampling; return (peak USS - base, peak PSS - base) in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak[0] - self.base[0], self.peak[1] - self.base[1]


def touch(data: Any) -> float:
    """Read one element per memory page of every tensor in ``data``; return their sum."""
    if isinstance(data, torch.Tensor):
        flat = data.reshape(-1)
        if flat.numel() == 0:
            return 0.0
        step = max(1, PAGE // flat.element_size())
        return float(flat[::step].sum(dtype=torch.float64))
    if isinstance(data, dict):
        return sum(touch(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return sum(touch(v) for v in data)
    return 0.0


def batch_len(data: Any) -> int:
    """Samples in a batch: the length of its first tensor (or first element's)."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0])
    if isinstance(data, dict):
        return batch_len(next(iter(data.values())))
    if isinstance(data, (list, tuple)):
        return batch_len(data[0])
    return 1


@dataclass(frozen=True)
class Run:
    """What one drained run measured."""

    samples: int
    seconds: float
    first_batch_s: float
    steady: float  # samples/s after the first `skip` batches
    peak_uss: int  # bytes above the value before the run
    peak_pss: int
    checksum: float

    @property
    def throughput(self) -> float:
        return self.samples / self.seconds


def run_once(
    loader_cls: type, dataset: torch.utils.data.Dataset, work: Workload, args: argparse.Namespace
) -> Run:
    """Create a loader, drain one epoch, drop it; measure throughput, latency and memory."""
    gc.collect()
    loader = loader_cls(
        dataset,
        batch_size=work.batch_size,
        shuffle=work.shuffle,
        num_workers=args.workers,
        collate_fn=work.collate_fn,
        generator=torch.Generator().manual_seed(args.seed),
        prefetch_factor=args.prefetch,
        persistent_workers=False,
    )
    sampler = MemorySampler()
    sampler.start()
    stamps: list[float] = []
    counts: list[int] = []
    checksum = 0.0
    start = time.perf_counter()
    it = iter(loader)
    for batch in it:
        stamps.append(time.perf_counter())
        counts.append(batch_len(batch))
        checksum += touch(batch)
        del batch
    end = time.perf_counter()
    del it, loader
    peak_uss, peak_pss = sampler.stop()
    gc.collect()
    if not stamps:
        raise RuntimeError(f"{loader_cls.__module__} delivered no batch for {work.name}")
    skip = min(args.workers * args.prefetch, len(stamps) // 2)
    window = stamps[-1] - stamps[skip]
    steady = sum(counts[skip + 1 :]) / window if window > 0 else float("nan")
    return Run(
        samples=sum(counts),
        seconds=end - start,
        first_batch_s=stamps[0] - start,
        steady=steady,
        peak_uss=peak_uss,
        peak_pss=peak_pss,
        checksum=checksum,
    )


def reap_check(label: str) -> int:
    """Warn about child processes still alive after a run; return how many."""
    deadline = time.monotonic() + 3.0
    kids: list[psutil.Process] = []
    while time.monotonic() < deadline:
        kids = [k for k in psutil.Process().children(recursive=True) if _alive(k)]
        if not kids:
            return 0
        time.sleep(0.05)
    pids = ", ".join(str(k.pid) for k in kids)
    print(f"WARNING: {label}: {len(kids)} child process(es) still alive: {pids}", file=sys.stderr)
    return len(kids)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Result:
    """All measured runs of one workload; ``pairs[i]`` = (ours, torch) adjacent in time."""

    work: Workload
    pairs: list[tuple[Run, Run]] = field(default_factory=list)
    checksum_mismatch: bool = False
    leftover: int = 0
    seconds: float = 0.0


LOADERS: dict[str, type] = {"ours": loadtune.DataLoader, "torch": torch.utils.data.DataLoader}


def measure(work: Workload, root: Path, args: argparse.Namespace) -> Result:
    """Warm up each loader once, then run ``args.pairs`` pairs in alternating order."""
    t0 = time.perf_counter()
    samples = work.quick_samples if args.quick else work.samples
    dataset = work.build(root, samples, args.quick)
    result = Result(work)
    log(f"[{work.name}] {samples} samples/run, batch {work.batch_size}: warm-up")
    for name in ("ours", "torch"):
        run_once(LOADERS[name], dataset, work, args)
    result.leftover += reap_check(f"{work.name} warm-up")
    for i in range(args.pairs):
        order = ("ours", "torch") if i % 2 == 0 else ("torch", "ours")
        runs = {name: run_once(LOADERS[name], dataset, work, args) for name in order}
        result.leftover += reap_check(f"{work.name} pair {i + 1}")
        ours, ref = runs["ours"], runs["torch"]
        if ours.samples != ref.samples:
            raise RuntimeError(
                f"{work.name}: loadtune delivered {ours.samples} samples, torch {ref.samples}"
            )
        if not _same(ours.checksum, ref.checksum):
            result.checksum_mismatch = True
        result.pairs.append((ours, ref))
        log(
            f"[{work.name}] pair {i + 1}/{args.pairs} ({'/'.join(order)}): "
            f"{ours.throughput:.0f} vs {ref.throughput:.0f} samples/s"
        )
    del dataset
    gc.collect()
    result.seconds = time.perf_counter() - t0
    return result


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


# --------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_rate(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def fmt_mib(nbytes: float) -> str:
    return f"{nbytes / MiB:+.1f} MiB"


def fmt_spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def ratio(value: float) -> str:
    return f"{value:.2f}"


def report(results: list[Result], args: argparse.Namespace, wall_s: float) -> None:
    """Print the aligned table, the notes and, last, the overall median ratio."""
    rows: list[list[str]] = [
        [
            "workload",
            "loader",
            "samples/s [min-max]",
            "steady/s",
            "1st batch",
            "peak USS",
            "peak PSS",
        ]
    ]
    for res in results:
        w = res.work
        for idx, name in enumerate(("loadtune", "torch")):
            runs = [pair[idx] for pair in res.pairs]
            rows.append(
                [
                    f"{w.name} ({w.bound})" if idx == 0 else "",
                    name,
                    fmt_spread([r.throughput for r in runs], fmt_rate),
                    fmt_rate(median([r.steady for r in runs])),
                    f"{median([r.first_batch_s for r in runs]) * 1e3:.0f} ms",
                    fmt_mib(median([r.peak_uss for r in runs])),
                    fmt_mib(median([r.peak_pss for r in runs])),
                ]
            )
        paired = [o.throughput / t.throughput for o, t in res.pairs]
        steady = [o.steady / t.steady for o, t in res.pairs]
        first = [o.first_batch_s / t.first_batch_s for o, t in res.pairs]
        rows.append(
            [
                "",
                "ours/torch",
                fmt_spread(paired, ratio),
                ratio(median(steady)),
                fmt_spread(first, ratio),
                "",
                "",
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    right = {2, 3, 4, 5, 6}
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def line(row: list[str]) -> str:
        cells = [
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c])
            for c, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    print()
    print(
        f"loadtune.DataLoader {loadtune.__version__} vs torch.utils.data.DataLoader "
        f"{torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, start method {mp.get_start_method()}"
    )
    print(
        f"num_workers={args.workers} prefetch_factor={args.prefetch}, "
        f"{args.pairs} pair{'s' if args.pairs != 1 else ''} "
        f"(+1 warm-up each), alternating order; {'quick' if args.quick else 'full'} form"
    )
    print(rule)
    print(line(rows[0]))
    print(rule)
    for i, row in enumerate(rows[1:]):
        print(line(row))
        if i % 3 == 2:
            print(rule)
    for res in results:
        if res.checksum_mismatch:
            print(f"WARNING: {res.work.name}: the loaders delivered different data (checksum)")
        if res.leftover:
            print(f"WARNING: {res.work.name}: {res.leftover} worker process(es) outlived a run")
    print(
        "ratios: median of paired runs [min-max]; throughput > 1 and 1st batch < 1 "
        "mean loadtune is better"
    )
    print(
        "peak USS leaves out pages shared between processes (copy-on-write, shared blocks); "
        "peak PSS counts each page once"
    )
    per_workload = ", ".join(f"{r.work.name} {r.seconds:.0f} s" for r in results)
    print(f"time: {wall_s:.0f} s in all ({per_workload})")
    overall = median([median([o.throughput / t.throughput for o, t in r.pairs]) for r in results])
    print(f"median ratio ours/torch: {overall:.2f}")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare loadtune.DataLoader with torch's DataLoader on local workloads.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small epochs and 3 pairs (under a minute)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of: {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--pairs", type=int, default=None, help="measured pairs (5; quick: 3)")
    parser.add_argument("--workers", type=int, default=2, help="num_workers (default 2)")
    parser.add_argument("--prefetch", type=int, default=2, help="prefetch_factor (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the loaders' generator")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.workloads = names
    if args.pairs is None:
        args.pairs = 3 if args.quick else 5
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1 (the comparison is of worker processes)")
    if args.prefetch < 1:
        parser.error("--prefetch must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="loadtune-bench-") as tmp:
        for name in args.workloads:
            results.append(measure(WORKLOADS[name], Path(tmp), args))
    report(results, args, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what ``loadtune.datasets.SharedCache`` saves on a decode-bound image dataset.

What it measures
----------------
Generated JPEGs (Pillow, in a temporary folder) are decoded and resized to ``--size``
squared in ``__getitem__`` (the expensive, deterministic part, a uint8 CHW tensor); a
random crop and flip follow as the transform (the cheap, random part). Two setups load the
same epochs with torch's ``DataLoader`` (same batch size, workers, shuffle seed):

* ``torch``  no cache: ``Transformed(decoded, augment)``; every epoch decodes every image.
* ``cached`` ``SharedCache(decoded, transform=augment)``: epoch 1 decodes and stores each
  image in shared memory, epoch 2 reads it from there.

Each round makes both loaders afresh (persistent workers) and runs two epochs of each; the
setups alternate which goes first from round to round, so drift on a shared machine hits
both alike. Epoch times exclude worker start-up (the loaders' first batch of epoch 1
includes it for both, so it counts alike). Each batch is consumed by reading one byte per
memory page. The batches' checksum must match between the setups: with the same seeds the
augmentations are identical, cache or not.

How to read the output
----------------------
One row per (setup, epoch): the median epoch time and samples/s over the rounds, with the
min-max of the epoch time. ``epoch-2 speedup`` is the median over rounds of torch's epoch-2
time divided by the cached epoch-2 time (each pair from the same round), with its min-max;
``epoch-1 cost`` is the cached epoch 1 over torch's epoch 1 (storing should cost little).
The last line is the epoch-2 speedup; the target is 3x or more.

Usage::

    python benchmarks/cache.py            # full form, about a minute on 2 cores
    python benchmarks/cache.py --quick    # under a minute
    python benchmarks/cache.py --images 512 --rounds 7 --workers 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from loadtune.datasets import SharedCache

PAGE = 4096


class DecodedJpegs(torch.utils.data.Dataset):
    """Decode a JPEG and resize it: a uint8 CHW tensor and a label. The part worth caching."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as img:
            rgb = img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous(), index % 10


class Augment:
    """Random crop of ``crop`` pixels and a horizontal flip: the part to redo every epoch."""

    def __init__(self, crop: int) -> None:
        self.crop = crop

    def __call__(self, sample: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
        image, label = sample
        top, left = (int(v) for v in torch.randint(0, image.shape[1] - self.crop + 1, (2,)))
        image = image[:, top : top + self.crop, left : left + self.crop]
        if torch.rand(()) < 0.5:
            image = image.flip(2)
        return image, label


class Transformed(torch.utils.data.Dataset):
    """``transform(dataset[i])``: the uncached pipeline."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.dataset[index])


def make_jpegs(folder: Path, count: int, width: int, height: int, seed: int) -> list[str]:
    """Write ``count`` photo-like JPEGs (gradients, waves and noise); return their paths."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        base = rng.uniform(40, 215, size=3).astype(np.float32)
        fx, fy = rng.uniform(0.01, 0.08, size=(2, 3)).astype(np.float32)
        wave = 60.0 * np.sin(xs[..., None] * fx + ys[..., None] * fy)
        noise = rng.normal(0.0, 18.0, size=(height, width, 3)).astype(np.float32)
        pixels = np.clip(base + wave + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(pixels, "RGB").save(path, quality=90)
        paths.append(str(path))
    return paths


def consume(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Read one byte per page of the images (so lazily mapped memory is really read)."""
    images, labels = batch
    flat = images.reshape(-1)
    return int(flat[::PAGE].sum()) + int(labels.sum())


def run_epochs(loader: torch.utils.data.DataLoader, epochs: int) -> tuple[list[float], int]:
    """Time each epoch; return the times and the checksum of everything read."""
    times, checksum = [], 0
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            checksum += consume(batch)
        times.append(time.perf_counter() - start)
    return times, checksum


def one_round(
    decoded: DecodedJpegs, args: argparse.Namespace, seed: int, cached: bool
) -> tuple[list[float], int, Any]:
    augment = Augment(args.crop)
    if cached:
        dataset: Any = SharedCache(decoded, max_bytes=args.max_mib << 20, transform=augment)
    else:
        dataset = Transformed(decoded, augment)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    times, checksum = run_epochs(loader, 2)
    stats = dataset.stats() if cached else None
    del loader, dataset
    return times, checksum, stats


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):7.3f} [{min(values):.3f}-{max(values):.3f}]"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (<60 s)")
    parser.add_argument("--images", type=int, help="JPEGs, one epoch (default 768; quick 320)")
    parser.add_argument("--rounds", type=int, help="paired rounds (default 7; quick 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=160, help="resized side, pixels")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--max-mib", type=int, default=1024, help="the cache's max_bytes, MiB")
    args = parser.parse_args(argv)
    args.images = args.images or (320 if args.quick else 768)
    args.rounds = args.rounds or (3 if args.quick else 7)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    print(
        f"SharedCache benchmark: {args.images} JPEGs 500x375 -> decode + resize {args.size}, "
        f"random crop {args.crop} + flip after the cache; torch DataLoader, batch "
        f"{args.batch_size}, {args.workers} workers, {args.rounds} rounds",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="loadtune-cache-bench-") as tmp:
        paths = make_jpegs(Path(tmp), args.images, 500, 375, seed=0)
        decoded = DecodedJpegs(paths, args.size)
        times: dict[tuple[str, int], list[float]] = {}
        speedups, costs, mismatches = [], [], 0
        stats = None
        for r in range(args.rounds):
            order = [False, True] if r % 2 == 0 else [True, False]
            got = {cached: one_round(decoded, args, seed=r, cached=cached) for cached in order}
            for cached, (epoch_times, _, round_stats) in got.items():
                name = "cached" if cached else "torch"
                for e, t in enumerate(epoch_times, 1):
                    times.setdefault((name, e), []).append(t)
                stats = round_stats or stats
            mismatches += got[False][1] != got[True][1]
            speedups.append(got[False][0][1] / got[True][0][1])
            costs.append(got[True][0][0] / got[False][0][0])
            print(
                f"  round {r + 1}: torch {got[False][0][0]:.2f}/{got[False][0][1]:.2f} s, "
                f"cached {got[True][0][0]:.2f}/{got[True][0][1]:.2f} s (epoch 1/2)",
                file=sys.stderr,
                flush=True,
            )
    print()
    print(f"{'setup':<8} {'epoch':>5}  {'time s, median [min-max]':>26}  {'samples/s':>10}")
    for (name, epoch), values in sorted(times.items(), key=lambda kv: (kv[0][0] != "torch", kv[0])):
        rate = args.images / statistics.median(values)
        print(f"{name:<8} {epoch:>5}  {spread(values):>26}  {rate:>10.0f}")
    print()
    if stats is not None:
        print(
            f"cache, last round: {stats.hits} hits, {stats.misses} misses, {stats.admitted} "
            f"admitted, {stats.refused} refused, {stats.bytes_held / 2**20:.1f} MiB held"
        )
    if mismatches:
        print(f"WARNING: {mismatches} round(s) delivered different data with and without cache")
    print(f"epoch-1 cost (cached/torch): {spread(costs).strip()}")
    print(f"time: {time.perf_counter() - wall:.0f} s in all")
    print(
        f"epoch-2 speedup with SharedCache (torch/cached, median [min-max] of "
        f"{args.rounds} paired rounds): {spread(speedups).strip()}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

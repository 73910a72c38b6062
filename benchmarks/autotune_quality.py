"""Benchmark: how good is autotune's pick, and what does it cost, against two other searches.

What it measures
----------------
Per workload (each limited by something different, so the best config differs):

* ``latency``  every sample sleeps (remote storage): more workers keep helping.
* ``cpu``      every sample burns CPU in Python: more workers than cores do not help.
* ``large``    768 KiB float32 samples with little work: moving bytes between processes.
* ``mixed``    half sleep, half CPU.

three searches over the same space (num_workers 0..2 x cores, prefetch_factor, and in the
full form persistent_workers), starting from the default loader (``num_workers=0``):

* ``grid``      every config in the space, one timed window each (the reference).
* ``autotune``  ``loadtune.autotune`` with its default budget (20 trials, 2 finalists,
                5 A/B rounds), in-memory storage, the same window length as the others.
* ``tpe``       a plain Optuna loop: default TPESampler, one window per trial, no seeding,
                no pruning, no A/B, given twice autotune's wall time; its best trial wins.

Then the configs they picked and the default are measured again, interleaved (rotating
order, several rounds, one window each), and compared by their median samples/s.

How to read the output
----------------------
One row per search: the config it picked; ``samples/s`` re-measured; ``x grid``, that over
the grid's pick (1.00 = as good as exhaustive search; noise is a few percent either way);
``time s``, the search's wall time; ``x grid time``; ``peak MiB``, the most memory the
picked config's loader added (PSS of this process and its children over the value before
the loader, sampled every 20 ms). The ``default`` row is the untuned loader, and
``tuned/default`` is autotune's pick over it. The last line is the summary: geometric means
over the workloads of autotune's and TPE's ratios to the grid, of their time ratios, and of
autotune's gain over the default.

Usage::

    python benchmarks/autotune_quality.py            # full form: 4 workloads, full space
    python benchmarks/autotune_quality.py --quick    # latency and cpu, a narrower space
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import torch

import loadtune
from loadtune import DataLoader, LoaderConfig
from loadtune.measure import steady_warmup, time_window
from loadtune.tune import build_space, grid

MiB = 2**20


class Latency(torch.utils.data.Dataset):
    """Each sample waits ``delay`` seconds, using no CPU."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.zeros(64)


class Cpu(torch.utils.data.Dataset):
    """Each sample runs a Python loop of ``n`` steps (about 1 ms per 20k on this machine)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> torch.Tensor:
        acc = 0
        for k in range(self.n):
            acc += k * k
        return torch.full((64,), float(acc % 7))


class Large(torch.utils.data.Dataset):
    """3x256x256 float32 samples (768 KiB), filled: the cost is moving them."""

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((3, 256, 256), float(i % 5))


class Mixed(torch.utils.data.Dataset):
    """Half waiting, half computing."""

    def __init__(self, delay: float, n: int) -> None:
        self.latency, self.cpu = Latency(delay), Cpu(n)

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> torch.Tensor:
        self.latency[i]
        return self.cpu[i]


WORKLOADS: dict[str, tuple[Callable[[], torch.utils.data.Dataset], int]] = {
    "latency": (lambda: Latency(0.0015), 8),
    "cpu": (lambda: Cpu(20_000), 8),
    "large": (lambda: Large(), 8),
    "mixed": (lambda: Mixed(0.001, 10_000), 8),
}


class PeakPss:
    """Peak PSS of this process and its children, over the value at start, every 20 ms."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.base = self._total()
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> float:
        total = 0.0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._total() - self.base)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def window(loader_for: Callable[[LoaderConfig], Any], cfg: LoaderConfig, batches: int) -> float:
    """Samples/s of one timed window, as autotune times one (start-up and warm-up excluded)."""
    warmup = steady_warmup(cfg, 5)
    return time_window(loader_for(cfg), batches=batches, warmup=warmup).samples_per_s


def grid_search(
    loader_for: Callable[[LoaderConfig], Any], space: dict, batches: int
) -> tuple[LoaderConfig, float]:
    best, best_rate = None, -1.0
    for cfg in grid(space):
        rate = window(loader_for, cfg, batches)
        if rate > best_rate:
            best, best_rate = cfg, rate
    assert best is not None
    return best, best_rate


def tpe_search(
    loader_for: Callable[[LoaderConfig], Any],
    space: dict,
    batch_size: int,
    batches: int,
    seconds: float,
) -> tuple[LoaderConfig, int]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    nw, pf, pw = (
        space[k].values() for k in ("num_workers", "prefetch_factor", "persistent_workers")
    )
    configs: dict[int, LoaderConfig] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        trial = study.ask()
        workers = trial.suggest_int("num_workers", nw[0], nw[-1])
        cfg = LoaderConfig(num_workers=workers, batch_size=batch_size)
        if workers:
            cfg = cfg.with_(
                prefetch_factor=trial.suggest_int("prefetch_factor", pf[0], pf[-1]),
                persistent_workers=trial.suggest_categorical("persistent_workers", list(pw)),
            )
        configs[trial.number] = cfg
        study.tell(trial, window(loader_for, cfg, batches))
    return configs[study.best_trial.number], len(study.trials)


def remeasure(
    loader_for: Callable[[LoaderConfig], Any],
    picks: dict[str, LoaderConfig],
    batches: int,
    rounds: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median samples/s and peak memory of each distinct config, interleaved in rotation."""
    distinct = list(dict.fromkeys(picks.values()))
    rates: dict[LoaderConfig, list[float]] = {c: [] for c in distinct}
    peaks: dict[LoaderConfig, float] = dict.fromkeys(distinct, 0.0)
    for r in range(rounds):
        order = distinct[r % len(distinct) :] + distinct[: r % len(distinct)]
        if r % 2:
            order.reverse()
        for cfg in order:
            with PeakPss() as pss:
                rates[cfg].append(window(loader_for, cfg, batches))
            peaks[cfg] = max(peaks[cfg], pss.peak)
    return (
        {name: statistics.median(rates[c]) for name, c in picks.items()},
        {name: peaks[c] for name, c in picks.items()},
    )


def short(cfg: LoaderConfig) -> str:
    if not cfg.num_workers:
        return "nw=0"
    return f"nw={cfg.num_workers} pf={cfg.prefetch_factor}" + (
        " persistent" if cfg.persistent_workers else ""
    )


@dataclass
class Row:
    workload: str
    autotune_x: float
    tpe_x: float
    autotune_time_x: float
    tpe_time_x: float
    gain: float


def run(name: str, args: argparse.Namespace) -> Row:
    make, batch_size = WORKLOADS[name]
    dataset = make()

    def loader_for(cfg: LoaderConfig) -> Any:
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
            persistent_workers=cfg.persistent_workers,
        )

    default = LoaderConfig(batch_size=batch_size)
    space = build_space(default, space=args.space, accelerator=False)

    t0 = time.monotonic()
    tuned = loadtune.autotune(  # its default budget; the window is the same for all three
        DataLoader(dataset, batch_size=batch_size),
        space=args.space,
        storage=None,
        seed=0,
        batches=args.batches,
    )
    t_auto = time.monotonic() - t0

    t0 = time.monotonic()
    grid_best, _ = grid_search(loader_for, space, args.batches)
    t_grid = time.monotonic() - t0

    t0 = time.monotonic()
    tpe_best, tpe_trials = tpe_search(loader_for, space, batch_size, args.batches, 2 * t_auto)
    t_tpe = time.monotonic() - t0

    picks = {"grid": grid_best, "autotune": tuned.tuned, "tpe": tpe_best, "default": default}
    rates, peaks = remeasure(loader_for, picks, args.batches, args.rounds)
    times = {"grid": t_grid, "autotune": t_auto, "tpe": t_tpe}
    notes = {
        "grid": f"{len(grid(space))} configs",
        "autotune": f"{len(tuned.trials)} trials, {tuned.verdict}",
        "tpe": f"{tpe_trials} trials",
        "default": "",
    }
    for method in ("grid", "autotune", "tpe", "default"):
        t = times.get(method)
        print(
            f"{name if method == 'grid' else '':<8} {method:<9} {short(picks[method]):<20} "
            f"{rates[method]:>10,.0f} {rates[method] / rates['grid']:>7.2f} "
            + (f"{t:>7.1f} {t / t_grid:>11.2f}" if t is not None else f"{'':>7} {'':>11}")
            + f" {peaks[method] / MiB:>9.0f}  {notes[method]}",
            flush=True,
        )
    return Row(
        name,
        rates["autotune"] / rates["grid"],
        rates["tpe"] / rates["grid"],
        t_auto / t_grid,
        t_tpe / t_grid,
        rates["autotune"] / rates["default"],
    )


def gmean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 workloads, a narrower space")
    parser.add_argument("--workloads", help=f"comma-separated: {', '.join(WORKLOADS)}")
    args = parser.parse_args(argv)
    names = (
        [w.strip() for w in args.workloads.split(",")]
        if args.workloads
        else (["latency", "cpu"] if args.quick else list(WORKLOADS))
    )
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    # quick: no persistent_workers (it cannot change a one-window measurement) and prefetch
    # 1..6, so the grid has 1 + 4 x 6 configs on 2 cores instead of 1 + 4 x 32.
    args.space = "persistent_workers=false,prefetch_factor=1..6" if args.quick else None
    args.batches = 12 if args.quick else 40
    args.rounds = 3 if args.quick else 5
    cores = len(psutil.Process().cpu_affinity() or [])
    print(
        f"autotune quality: {cores} cores, torch {torch.__version__}, "
        f"{'quick' if args.quick else 'full'} form, {args.batches} batches per window, "
        f"{args.rounds} re-measure rounds"
    )
    print(
        f"{'workload':<8} {'method':<9} {'config':<20} {'samples/s':>10} {'x grid':>7} "
        f"{'time s':>7} {'x grid time':>11} {'peak MiB':>9}"
    )
    started = time.monotonic()
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        for name in names:
            rows.append(run(name, args))
    print(
        f"summary ({len(rows)} workloads, {time.monotonic() - started:.0f} s): autotune "
        f"{gmean([r.autotune_x for r in rows]):.2f}x of the grid optimum in "
        f"{gmean([r.autotune_time_x for r in rows]):.2f}x its time; plain TPE "
        f"{gmean([r.tpe_x for r in rows]):.2f}x in {gmean([r.tpe_time_x for r in rows]):.2f}x; "
        f"tuned/default {gmean([r.gain for r in rows]):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

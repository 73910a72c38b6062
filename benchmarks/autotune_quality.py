"""Benchmark: how good is autotune's pick, and what does it cost, against two other searches.

What it measures
----------------
Per workload (each limited by something different, so the best config differs):

* ``latency``  every sample sleeps 1.5 ms (remote storage): more workers keep helping.
* ``cpu``      every sample burns CPU in Python: more workers than cores do not help, so
               several worker counts are equally fast and the cheapest of them should win.
* ``large``    768 KiB float32 samples with little work: moving bytes between processes.
* ``mixed``    half sleep, half CPU.
* ``remote``   every sample sleeps 2 ms, then computes for 0.2 ms, and the space holds
               ``fetch_concurrency`` too (1, 2, 4, ..., 32 samples in flight per worker):
               threads hide the wait as well as processes do, for less memory, until one
               process's interpreter lock is busy; batches of 64, so that a window of the
               fastest configs is still long enough to time.

three searches over the same space (num_workers 0..2 x cores, prefetch_factor, in the full
form persistent_workers, and for ``remote`` fetch_concurrency; elsewhere fetch_concurrency
is fixed at 1, as the grid has it), starting from the default loader (``num_workers=0``):

* ``grid``      every config in the space, one timed window each (the reference).
* ``autotune``  ``loadtune.autotune`` with its defaults (the profile model's seeds, at
                most 20 trials with a convergence stop, the A/B test of 2 finalists in at
                most 5 rounds), in-memory storage, the same window length as the others.
* ``tpe``       a plain Optuna loop: default TPESampler, one window per trial, no seeding,
                no pruning, no A/B, given twice autotune's wall time; its best trial wins.

A window is what autotune times: a fresh loader, start-up and warm-up (the batches the
config holds in flight too) excluded, then ``--batches`` batches. The searches run one
after another; their order alternates from one workload to the next, so a machine that
grows busier does not always fall on the same one.

Then the picks are measured again, interleaved: every distinct config once per round in a
rotating order (reversed every other round), one window each, several rounds. Besides the
three picks and the default, ``cheapest`` is the grid's cheapest config (fewest workers,
then fewest fetch threads, then the shallowest prefetch) among those whose window was
within ``min_gain`` (5%) of the grid's best window: what autotune should pick where
several configs are equally fast.

How to read the output
----------------------
One row per pick: the config; ``samples/s``, the median over the re-measure rounds;
``x grid``, the median over the rounds of that round's ratio to the grid's pick (a paired
ratio: 1.00 = as good as exhaustive search), with its min-max; ``time s``, the search's
wall time; ``x grid time``; ``peak MiB``, the most memory the config's loader added (PSS of
this process and its children over the value before the loader, sampled every 20 ms).
After each workload a line checks the targets: autotune >= 0.97x of the grid's pick, in
<= 10% of its time, not below TPE (its paired ratio >= 0.97: the noise), and the cheapest
equivalent: within 5% of the grid's pick and as cheap as the grid's cheapest equivalent
(no more workers, and no more fetch threads at as many workers) unless more than 5%
faster than it.

The last lines summarise: geometric means over the workloads of the paired ratios and of
the time ratios, how many workloads met each target, and last the median of all paired
ratios autotune/grid.

Usage::

    python benchmarks/autotune_quality.py            # full form: 5 workloads, full space
    python benchmarks/autotune_quality.py --quick    # latency, cpu, remote; a narrow space
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
MIN_GAIN = 0.05  # autotune's default
QUALITY, TIME_SHARE, NOISE = 0.97, 0.10, 0.97  # the targets


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


@dataclass(frozen=True)
class Workload:
    """A dataset, its batch size, and the space every search gets (None: the default)."""

    make: Callable[[], torch.utils.data.Dataset]
    batch_size: int
    space: str  # full form; fetch_concurrency=1 unless the workload searches it
    quick_space: str


_NO_THREADS = "fetch_concurrency=1"
_QUICK = "persistent_workers=false,prefetch_factor=1..6,fetch_concurrency=1"
_FETCH = "fetch_concurrency=1|2|4|8|16|32"

WORKLOADS: dict[str, Workload] = {
    "latency": Workload(lambda: Latency(0.0015), 8, _NO_THREADS, _QUICK),
    "cpu": Workload(lambda: Cpu(20_000), 8, _NO_THREADS, _QUICK),
    "large": Workload(Large, 8, _NO_THREADS, _QUICK),
    "mixed": Workload(lambda: Mixed(0.001, 10_000), 8, _NO_THREADS, _QUICK),
    "remote": Workload(
        lambda: Mixed(0.002, 4_000),
        64,
        f"persistent_workers=false,prefetch_factor=1..4,{_FETCH}",
        f"persistent_workers=false,prefetch_factor=2,{_FETCH}",
    ),
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


def cost(cfg: LoaderConfig) -> tuple[int, int, int]:
    """Cheaper first: fewer workers, then fewer fetch threads, then a shallower prefetch."""
    return (cfg.num_workers, cfg.fetch_concurrency or 1, cfg.prefetch_factor or 0)


def grid_search(
    loader_for: Callable[[LoaderConfig], Any], space: dict, batches: int
) -> tuple[LoaderConfig, LoaderConfig, int]:
    """The grid's fastest config, its cheapest within MIN_GAIN of that, and its size."""
    rates = {cfg: window(loader_for, cfg, batches) for cfg in grid(space)}
    best = max(rates, key=rates.__getitem__)
    near = [c for c, r in rates.items() if r * (1 + MIN_GAIN) >= rates[best]]
    return best, min(near, key=cost), len(rates)


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
    fc = space["fetch_concurrency"].values()
    configs: dict[int, LoaderConfig] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        trial = study.ask()
        workers = trial.suggest_int("num_workers", nw[0], nw[-1])
        fetch = trial.suggest_categorical("fetch_concurrency", list(fc)) if len(fc) > 1 else fc[0]
        cfg = LoaderConfig(num_workers=workers, batch_size=batch_size, fetch_concurrency=fetch)
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
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Samples/s per round and peak memory of each pick, the distinct configs interleaved.

    Round r times every distinct config once, in an order rotated by r and reversed on odd
    rounds; a config two picks share is timed once and counts for both.
    """
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
        {name: rates[c] for name, c in picks.items()},
        {name: peaks[c] for name, c in picks.items()},
    )


def short(cfg: LoaderConfig) -> str:
    fetch = f" fc={cfg.fetch_concurrency}" if (cfg.fetch_concurrency or 1) > 1 else ""
    if not cfg.num_workers:
        return "nw=0" + fetch
    return (
        f"nw={cfg.num_workers} pf={cfg.prefetch_factor}"
        + (" pers" if cfg.persistent_workers else "")
        + fetch
    )


def paired(a: list[float], b: list[float]) -> list[float]:
    """Per-round ratios a/b (both timed in the same rounds)."""
    return [x / y for x, y in zip(a, b, strict=True)]


@dataclass
class Row:
    workload: str
    autotune_x: float
    tpe_x: float
    autotune_time_x: float
    tpe_time_x: float
    vs_tpe: float
    gain: float
    cheapest: bool
    ratios: list[float]


def run(name: str, index: int, args: argparse.Namespace) -> Row:
    w = WORKLOADS[name]
    dataset = w.make()
    space_text = w.quick_space if args.quick else w.space

    def loader_for(cfg: LoaderConfig) -> Any:
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
            persistent_workers=cfg.persistent_workers,
            fetch_concurrency=cfg.fetch_concurrency or 1,
        )

    default = LoaderConfig(batch_size=w.batch_size, fetch_concurrency=1)
    space = build_space(default, space=space_text, accelerator=False, concurrency=True)
    times: dict[str, float] = {}

    def run_autotune() -> loadtune.TuneResult:
        t0 = time.monotonic()
        result = loadtune.autotune(  # its defaults; the window is the same for all three
            DataLoader(dataset, batch_size=w.batch_size),
            space=space_text,
            storage=None,
            seed=0,
            batches=args.batches,
        )
        times["autotune"] = time.monotonic() - t0
        return result

    def run_grid() -> tuple[LoaderConfig, LoaderConfig, int]:
        t0 = time.monotonic()
        found = grid_search(loader_for, space, args.batches)
        times["grid"] = time.monotonic() - t0
        return found

    if index % 2 == 0:
        tuned = run_autotune()
        grid_best, grid_cheap, size = run_grid()
    else:
        grid_best, grid_cheap, size = run_grid()
        tuned = run_autotune()
    t0 = time.monotonic()
    tpe_best, tpe_trials = tpe_search(
        loader_for, space, w.batch_size, args.batches, 2 * times["autotune"]
    )
    times["tpe"] = time.monotonic() - t0

    picks = {
        "grid": grid_best,
        "cheapest": grid_cheap,
        "autotune": tuned.tuned,
        "tpe": tpe_best,
        "default": default,
    }
    rates, peaks = remeasure(loader_for, picks, args.batches, args.rounds)
    notes = {
        "grid": f"{size} configs",
        "cheapest": f"within {MIN_GAIN:.0%} of the grid's best window",
        "autotune": f"{len(tuned.trials)} trials, {tuned.verdict}; {tuned.stopped}",
        "tpe": f"{tpe_trials} trials",
        "default": "",
    }
    x = {m: paired(rates[m], rates["grid"]) for m in picks}
    for method in picks:
        t = times.get(method)
        print(
            f"{name if method == 'grid' else '':<8} {method:<9} {short(picks[method]):<20} "
            f"{statistics.median(rates[method]):>10,.0f} {statistics.median(x[method]):>6.2f} "
            f"[{min(x[method]):.2f}-{max(x[method]):.2f}]"
            + (f"{t:>7.1f} {t / times['grid']:>11.2f}" if t is not None else f"{'':>7} {'':>11}")
            + f" {peaks[method] / MiB:>9.0f}  {notes[method]}",
            flush=True,
        )
    auto_x = statistics.median(x["autotune"])
    vs_tpe = statistics.median(paired(rates["autotune"], rates["tpe"]))
    vs_cheap = statistics.median(paired(rates["autotune"], rates["cheapest"]))
    auto_cost, cheap_cost = cost(tuned.tuned), cost(grid_cheap)
    # The cheapest equivalent: as fast as the grid's pick (within min_gain), and as cheap
    # as the grid's cheapest equivalent (no more workers, and no more fetch threads at as
    # many workers) unless faster than it beyond min_gain.
    as_cheap = auto_x * (1 + MIN_GAIN) >= 1 and (
        auto_cost[:2] <= cheap_cost[:2] or vs_cheap > 1 + MIN_GAIN
    )
    time_x = times["autotune"] / times["grid"]
    print(
        f"{'':<8} targets: quality {auto_x:.2f} {'ok' if auto_x >= QUALITY else 'MISSED'}, "
        f"time {time_x:.2f} {'ok' if time_x <= TIME_SHARE else 'MISSED'}, "
        f"vs TPE {vs_tpe:.2f} {'ok' if vs_tpe >= NOISE else 'MISSED'}, "
        f"cheapest {short(tuned.tuned)} vs {short(grid_cheap)} ({vs_cheap:.2f}x) "
        f"{'ok' if as_cheap else 'MISSED'}",
        flush=True,
    )
    return Row(
        name,
        auto_x,
        statistics.median(x["tpe"]),
        time_x,
        times["tpe"] / times["grid"],
        vs_tpe,
        statistics.median(paired(rates["autotune"], rates["default"])),
        as_cheap,
        x["autotune"],
    )


def gmean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 workloads, a narrower space")
    parser.add_argument("--workloads", help=f"comma-separated: {', '.join(WORKLOADS)}")
    args = parser.parse_args(argv)
    names = (
        [w.strip() for w in args.workloads.split(",")]
        if args.workloads
        else (["latency", "cpu", "remote"] if args.quick else list(WORKLOADS))
    )
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    # quick: no persistent_workers (it cannot change a one-window measurement) and prefetch
    # 1..6, so the grid has 1 + 4 x 6 configs on 2 cores instead of 1 + 4 x 32; remote has
    # prefetch 2 and 6 fetch_concurrency values: 5 x 6.
    args.batches = 12 if args.quick else 40
    args.rounds = 5 if args.quick else 7
    cores = len(psutil.Process().cpu_affinity() or [])
    print(
        f"autotune quality: {cores} cores, torch {torch.__version__}, "
        f"{'quick' if args.quick else 'full'} form, {args.batches} batches per window, "
        f"{args.rounds} re-measure rounds"
    )
    print(
        f"{'workload':<8} {'method':<9} {'config':<20} {'samples/s':>10} {'x grid':>6} "
        f"{'[min-max]':<11}{'time s':>7} {'x grid time':>11} {'peak MiB':>9}"
    )
    started = time.monotonic()
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        for i, name in enumerate(names):
            rows.append(run(name, i, args))
    n = len(rows)
    print(
        f"summary ({n} workloads, {time.monotonic() - started:.0f} s): autotune "
        f"{gmean([r.autotune_x for r in rows]):.2f}x of the grid optimum "
        f"[{min(r.autotune_x for r in rows):.2f}-{max(r.autotune_x for r in rows):.2f}] in "
        f"{gmean([r.autotune_time_x for r in rows]):.2f}x its time "
        f"[{min(r.autotune_time_x for r in rows):.2f}-"
        f"{max(r.autotune_time_x for r in rows):.2f}]; plain TPE "
        f"{gmean([r.tpe_x for r in rows]):.2f}x in {gmean([r.tpe_time_x for r in rows]):.2f}x; "
        f"autotune/TPE {gmean([r.vs_tpe for r in rows]):.2f}x; "
        f"tuned/default {gmean([r.gain for r in rows]):.2f}x"
    )
    print(
        f"targets met: quality >= {QUALITY:.2f}x in "
        f"{sum(r.autotune_x >= QUALITY for r in rows)} of {n}; time <= {TIME_SHARE:.0%} in "
        f"{sum(r.autotune_time_x <= TIME_SHARE for r in rows)} of {n}; not below TPE in "
        f"{sum(r.vs_tpe >= NOISE for r in rows)} of {n}; cheapest equivalent in "
        f"{sum(r.cheapest for r in rows)} of {n}"
    )
    every = [v for r in rows for v in r.ratios]
    print(
        f"median of paired ratios autotune/grid: {statistics.median(every):.2f} "
        f"[{min(every):.2f}-{max(every):.2f}] over {len(every)} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

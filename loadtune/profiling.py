"""profile(): run a loader under the probes and save what was seen as a ProfileResult.

One sampler thread drives every probe (NOTE [ Probe contract ] in probes/base.py): the
probes start when the steady window opens (after the first batch and the warm-up, so
worker start-up is measured apart as time to first batch) and stop when it closes, while
the workers are still alive.

# NOTE [ Probe overhead ]
On a machine whose cores the workers keep busy, every CPU millisecond a probe spends is
taken from a worker: on 2 cores, 3% of the throughput is about 60 ms of CPU per second
for everything the probes do. So the probes' CPU is measured, not guessed, and saved in
``ProfileResult.overhead``: ``sampler_cpu_s`` (the sampler thread, which runs every
probe's ``sample()`` in the main process; ``diagnose`` takes it off the main process's
CPU), ``sampler_window_cpu_s`` (the same without the first tick, which runs before the
stopwatch starts, and the last, after it stops), ``sample_cpu_s.<probe>`` (that, per
probe), ``pyspy_cpu_s`` (the py-spy recorders, separate processes, from the window's
opening to their stop), ``pyspy_start_cpu_s`` (their start-up, before it) and
``probes_window_s`` (the first tick to the last). The window figures divided by
``probes_window_s`` are the probes' CPU seconds per second of window. The two dear costs
are budgeted where they arise: NOTE [ py-spy recorder settings ] in probes/pyspy.py and
NOTE [ Memory probe budget ] in probes/memory.py. ``benchmarks/probe_overhead.py`` prints
these figures beside the throughput ratio they explain.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from probes.base import Probe, ProbeResult, Watch

from . import system
from .errors import UsageError
from .measure import Step, make_step, time_window
from .results import Measurement, ProfileResult, save
from .targets import resolve

__all__ = ["DEFAULT_PROBES", "expected_window", "make_probes", "profile"]

# "cache" runs only when the loader's dataset is (or wraps) a SharedCache.
DEFAULT_PROBES = ("stages", "cpu", "io", "memory", "numa", "gpu", "pyspy", "cache")


def make_probes(names: Sequence[str]) -> list[Probe]:
    """Instances of the named probes (imported only when asked for)."""
    from probes.cache import CacheProbe
    from probes.cpu import CpuProbe
    from probes.gpu import GpuProbe
    from probes.io import IoProbe
    from probes.memory import MemoryProbe
    from probes.numa import NumaProbe
    from probes.pyspy import PySpyProbe
    from probes.stages import StagesProbe

    known: dict[str, Callable[[], Probe]] = {
        "stages": StagesProbe,
        "cpu": CpuProbe,
        "io": IoProbe,
        "memory": MemoryProbe,
        "numa": NumaProbe,
        "gpu": GpuProbe,
        "pyspy": PySpyProbe,
        "cache": CacheProbe,
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n]() for n in names]


class _Sampler(threading.Thread):
    """Calls every probe's ``sample(now)`` every ``interval`` seconds until stopped."""

    def __init__(self, probes: list[Probe], interval: float) -> None:
        super().__init__(name="loadtune-probe-sampler", daemon=True)
        self.probes = probes
        self.interval = interval
        self.failed: dict[str, str] = {}
        self.cpu_s = 0.0  # CPU time the probes spent in this process (the sampler's cost)
        # The same, for the ticks inside the window only (not the first and the last), per
        # probe: see NOTE [ Probe overhead ]
        self.window_cpu_s: dict[str, float] = {probe.name: 0.0 for probe in probes}
        self.first: float | None = None  # monotonic times of the first and last tick
        self.last: float | None = None
        self._done = threading.Event()

    def tick(self, edge: bool = False) -> None:
        """Sample every probe once; ``edge``: the tick that opens or closes the window."""
        cpu0 = time.thread_time()
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        for probe in self.probes:
            if probe.name in self.failed:
                continue
            before = time.thread_time()
            try:
                probe.sample(now)
            except Exception as exc:  # a broken probe is reported, and the others go on
                self.failed[probe.name] = f"failed while sampling: {type(exc).__name__}: {exc}"
            if not edge:
                self.window_cpu_s[probe.name] += time.thread_time() - before
        self.cpu_s += time.thread_time() - cpu0

    def overhead(self, results: dict[str, ProbeResult]) -> dict[str, float]:
        """What the probes cost: see NOTE [ Probe overhead ]."""
        out = {"sampler_cpu_s": self.cpu_s}
        out["sampler_window_cpu_s"] = sum(self.window_cpu_s.values())
        for name, cpu_s in self.window_cpu_s.items():
            out[f"sample_cpu_s.{name}"] = cpu_s
        pyspy = results.get("pyspy")
        if pyspy is not None and "recorder_cpu_s" in pyspy.summary:
            out["pyspy_cpu_s"] = pyspy.summary["recorder_cpu_s"]
            out["pyspy_start_cpu_s"] = pyspy.summary.get("recorder_start_cpu_s", 0.0)
        if self.first is not None and self.last is not None:
            out["probes_window_s"] = self.last - self.first
        return out

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.tick()

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.tick(edge=True)  # one last reading at the end of the window


def find_cache(dataset: Any, depth: int = 4) -> Any:
    """The SharedCache that ``dataset`` is or wraps (``.dataset``, ``.datasets``), or None."""
    from .datasets import SharedCache

    if isinstance(dataset, SharedCache):
        return dataset
    if depth == 0 or dataset is None:
        return None
    inner = [getattr(dataset, "dataset", None), *(getattr(dataset, "datasets", None) or ())]
    return next((c for c in (find_cache(d, depth - 1) for d in inner) if c is not None), None)


def expected_window(
    batches: int | None,
    seconds: float | None,
    warmup: int,
    first_batch_at: float | None,
    now: float,
) -> float | None:
    """How long the window will last, in seconds, as far as can be told when it opens.

    ``seconds`` when given (at most that); for a window of ``batches``, the warm-up's pace
    (its ``warmup - 1`` batches after the first, from ``first_batch_at`` to ``now``) times
    ``batches``. Batches prefetched during start-up make a warm-up look fast, so this errs
    short, which only keeps the py-spy rate at its CPU budget (probes.pyspy.choose_rate).

    Args:
        batches: Batches in the window, or None.
        seconds: The window's length limit, or None.
        warmup: Warm-up batches, the first batch included.
        first_batch_at: Monotonic time the first batch arrived, or None.
        now: Monotonic time now, when the warm-up is over.

    Returns:
        The estimate, or None when there is nothing to go on.

    Example:
        >>> expected_window(200, None, 5, 10.0, 10.5)  # 4 warm-up batches in 0.5 s
        25.0
        >>> expected_window(200, 5.0, 5, 10.0, 10.5), expected_window(200, None, 1, 10.0, 10.0)
        (5.0, None)
    """
    estimate = None
    if batches is not None and warmup >= 2 and first_batch_at is not None:
        pace = (now - first_batch_at) / (warmup - 1)
        if pace > 0:
            estimate = pace * batches
    if seconds is not None:
        return seconds if estimate is None else min(seconds, estimate)
    return estimate


def _worker_pids(it: Any) -> list[int]:
    pids = []
    for worker in getattr(it, "_workers", None) or []:
        pid = getattr(worker, "pid", None)
        if pid is not None:
            pids.append(pid)
    return pids


def profile(
    target: Any,
    *,
    batches: int | None = 200,
    seconds: float | None = None,
    warmup: int = 5,
    step_ms: float | None = None,
    step: Step = None,
    probes: Sequence[str] = DEFAULT_PROBES,
    interval: float = 0.1,
    out_dir: str | os.PathLike | None = None,
    backend: str = "auto",
    shuffle: bool = False,
    progress: Callable[[str, int], None] | None = None,
    **overrides: Any,
) -> ProfileResult:
    """Profile a loader: throughput, stall, every probe, and the diagnosis.

    Args:
        target: A DataLoader, Dataset or callable, or a TARGET string (see targets.resolve).
        batches: Batches in the measured window (None: use ``seconds``).
        seconds: Length of the measured window instead of (or as well as) ``batches``.
        warmup: Batches taken before the window opens.
        step_ms: Simulated training step per batch, in milliseconds.
        step: A callable run on every batch instead (the real training step).
        probes: Which probes to run.
        interval: Seconds between probe samples.
        out_dir: If given, ``profile.json``, ``trace.json`` and the speedscope file go here.
        progress: Called with (phase, batches measured so far): "start", "window", "done".
        backend, shuffle, **overrides: As in :func:`loadtune.targets.resolve`.

    Returns:
        The ProfileResult (also saved as ``out_dir/profile.json`` when out_dir is given).

    Example:
        >>> import torch
        >>> from loadtune import DataLoader, profile
        >>> data = torch.utils.data.TensorDataset(torch.zeros(256, 4))
        >>> result = profile(DataLoader(data, batch_size=8), batches=10, probes=["stages"])
        >>> result.measurement.window_batches
        10
    """
    factory = resolve(target, backend=backend, shuffle=shuffle, **overrides)
    loader = factory()
    if progress is not None:
        progress("start", 0)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    events = getattr(loader, "events", None)
    if events is not None:
        events.clear()
    holder: dict[str, Any] = {}
    options: dict[str, Any] = {"wait_times": []}
    if out is not None:
        options["pyspy_out"] = str(out / "profile.speedscope.json")
    watch = Watch(
        main_pid=os.getpid(),
        worker_pids=lambda: _worker_pids(holder.get("it")),
        events=events,
        options=options,
    )
    cache = find_cache(getattr(loader, "dataset", None))
    if cache is not None:
        options["cache"] = cache
    instances = make_probes([n for n in probes if n != "cache" or cache is not None])
    sampler = _Sampler(instances, interval)
    results: dict[str, ProbeResult] = {}

    def on_first_batch(batch: Any) -> None:
        options["sample_batch"] = batch
        holder["first_batch_at"] = time.monotonic()

    def on_window_start() -> None:
        window_s = expected_window(
            batches, seconds, warmup, holder.get("first_batch_at"), time.monotonic()
        )
        if window_s is not None:
            options["window_s"] = window_s  # the py-spy probe's rate rule reads it
        for probe in instances:
            try:
                probe.start(watch)
            except Exception as exc:  # reported as unavailable, never a made-up number
                sampler.failed[probe.name] = f"failed to start: {type(exc).__name__}: {exc}"

    def on_clock_start() -> None:
        # the probes' first sample opens their window: the same moment as the stopwatch's
        sampler.tick(edge=True)
        sampler.start()

    def on_window_end(run: Any) -> None:
        options["wait_times"].extend(run.waits)
        sampler.stop()
        for probe in instances:
            if probe.name in sampler.failed:
                results[probe.name] = ProbeResult.unavailable(
                    probe.name, sampler.failed[probe.name]
                )
            else:
                results[probe.name] = probe.stop()

    run = time_window(
        loader,
        batches=batches,
        seconds=seconds,
        warmup=warmup,
        step=make_step(step_ms, step),
        on_iter=lambda it: holder.__setitem__("it", it),
        on_first_batch=on_first_batch,
        on_window_start=on_window_start,
        on_window_end=on_window_end,
        on_batch=(lambda n: progress("window", n)) if progress is not None else None,
        settle=(loader.prefetch_factor or 0) * loader.num_workers,
        on_clock_start=on_clock_start,
    )
    if progress is not None:
        progress("done", run.window_batches)
    options.pop("sample_batch", None)
    if run.window_batches == 0:
        raise UsageError(
            f"the loader ended during warm-up ({warmup} batches): nothing was measured; "
            "use fewer warm-up batches or a larger dataset"
        )
    rate = run.samples_per_s
    measurement = Measurement(
        samples_per_s=rate,
        samples_per_s_min=rate,
        samples_per_s_max=rate,
        batches_per_s=run.window_batches / run.window_s,
        repeats=1,
        window_batches=run.window_batches,
        warmup_batches=warmup,
        time_to_first_batch_s=run.time_to_first_batch_s,
        stall_fraction=run.stall_fraction,
        overall_samples_per_s=run.total_samples / run.total_s if run.total_s > 0 else None,
    )
    step_text = f"{step_ms:g} ms" if step_ms else getattr(step, "__qualname__", None)
    result = ProfileResult(
        target=factory.target,
        backend=factory.backend,
        config=factory.baseline,
        machine=system.collect(),
        measurement=measurement,
        probes=results,
        step=step_text,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        overhead=sampler.overhead(results),
    )
    from .diagnose import diagnose

    result = _with(result, diagnosis=diagnose(result))
    if out is not None:
        result = _write_artifacts(result, out, events)
    return result


def _with(result: ProfileResult, **changes: Any) -> ProfileResult:
    from dataclasses import replace

    return replace(result, **changes)


def _write_artifacts(result: ProfileResult, out: Path, events: Any) -> ProfileResult:
    artifacts = dict(result.artifacts)
    if events is not None and len(events):
        from probes.stages import export_chrome_trace

        export_chrome_trace(events, out / "trace.json")
        artifacts["trace"] = "trace.json"
    speedscope = results_detail(result, "pyspy", "speedscope")
    if speedscope:
        artifacts["speedscope"] = os.path.relpath(speedscope, out)
    artifacts["profile"] = "profile.json"
    result = _with(result, artifacts=artifacts)
    save(result, out / "profile.json")
    return result


def results_detail(result: ProfileResult, probe: str, key: str) -> Any:
    """A probe's detail entry, or None when the probe did not run or has none."""
    found = result.probes.get(probe)
    return found.detail.get(key) if found is not None and found.available else None

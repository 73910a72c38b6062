"""One trial: time one config's loader in a fresh window, watching its memory; never raises.

A trial reports its running throughput as it goes, so that a clear loser can be stopped
early, and stops itself when the loader goes over the memory limit.

# NOTE [ Loader memory ]
A trial's memory is what its loader adds: the sum of PSS over the main process and the
workers, minus the main process's PSS just before the loader was built, plus the growth of
/dev/shm. PSS splits each shared page among its sharers, so the sum counts the pages a
forked worker shares with its parent once, and a shared-memory batch block mapped by two
processes once; the sum over the process group is conserved by a fork, so subtracting the
main process's PSS from before leaves what the loader costs. Read every 0.1 s by a thread
(``/proc/<pid>/smaps_rollup``, a few microseconds each) and once at the first batch. Threads
(``fetch_concurrency``) live in the processes already counted: their stacks count as they
are touched.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from ..config import LoaderConfig
from ..measure import Step, batch_samples, steady_warmup, summarize, time_window
from ..targets import LoaderFactory

CHUNKS = 5  # intermediate reports per window
_MEM_INTERVAL_S = 0.1


class _Stop(Exception):
    """Ends a trial early: ``state`` is "pruned" or "infeasible"."""

    def __init__(self, state: str, reason: str, rate: float | None = None) -> None:
        super().__init__(reason)
        self.state, self.reason, self.rate = state, reason, rate


def _pss(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return float(proc.memory_info().rss)


def _shm_used() -> float:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0.0
    return float((st.f_blocks - st.f_bfree) * st.f_frsize)


class _MemoryWatch:
    """Peak memory a loader adds (NOTE [ Loader memory ]), read by a thread and on demand."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.me = psutil.Process()
        self.base = _pss(self.me)
        self.shm_base = _shm_used()
        self.peak = 0.0
        self.it: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadtune-memory", daemon=True)

    def start(self, it: Any) -> None:
        self.it = it
        self._thread.start()

    def read(self) -> float:
        pids = [w.pid for w in getattr(self.it, "_workers", None) or () if getattr(w, "pid", None)]
        total = _pss(self.me) - self.base + max(0.0, _shm_used() - self.shm_base)
        for pid in pids:
            try:
                total += _pss(psutil.Process(pid))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        with self._lock:
            self.peak = max(self.peak, total)
        return total

    @property
    def over(self) -> bool:
        return self.limit is not None and self.peak > self.limit

    def _run(self) -> None:
        while not self._done.wait(_MEM_INTERVAL_S):
            try:
                self.read()
            except psutil.Error:
                pass

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True, slots=True)
class _Outcome:
    state: str
    reason: str = ""
    rate: float | None = None
    measurement: Any = None
    peak: float | None = None
    duration: float = 0.0


def _shutdown(it: Any) -> None:
    """Stop an iterator's workers now (a trial stopped early must not leave them running)."""
    for name in ("_shutdown", "_shutdown_workers"):
        fn = getattr(it, name, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass
            return


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _measure_trial(
    factory: LoaderFactory,
    config: LoaderConfig,
    *,
    batches: int,
    warmup: int,
    step: Step,
    memory_limit: float | None,
    seconds: float | None,
    report: Callable[[int, float], str | None] | None,
) -> _Outcome:
    """Time one config; stop it when pruned or over the memory limit; never raises.

    ``report(k, samples_per_s)`` is called after each fifth of the window (k = 1..5) with
    the window's running rate; what it returns, if anything, is why the trial is stopped
    there (pruned).
    """
    t0 = time.monotonic()
    warmup = steady_warmup(config, warmup)
    watch = _MemoryWatch(memory_limit)
    chunk = max(1, batches // CHUNKS)
    window = {"open": False, "samples": 0, "t0": 0.0}
    holder: dict[str, Any] = {}

    def check() -> None:
        if watch.over:
            raise _Stop(
                "infeasible",
                f"the loader used {watch.peak / 2**20:,.0f} MiB, over the "
                f"{memory_limit / 2**20:,.0f} MiB limit",  # type: ignore[operator]
            )

    def counted(batch: Any) -> None:
        if window["open"]:
            window["samples"] += batch_samples(batch)
        elif "first" not in holder:
            holder["first"] = True
            watch.read()
        check()
        if step is not None:
            step(batch)

    def on_window_start() -> None:
        window["open"], window["t0"] = True, time.monotonic()

    def on_batch(n: int) -> None:
        if report is None or n % chunk:
            return
        rate = window["samples"] / max(1e-9, time.monotonic() - window["t0"])
        why = report(n // chunk, rate)
        if why:
            raise _Stop(
                "pruned",
                f"stopped after {n} of {batches} batches at {rate:,.0f} samples/s, {why}",
                rate,
            )

    def on_iter(it: Any) -> None:
        holder["it"] = it
        watch.start(it)

    def on_window_end(run: Any) -> None:
        watch.read()

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            loader = factory(config)
            run = time_window(
                loader,
                batches=batches,
                seconds=seconds,
                warmup=warmup,
                step=counted,
                on_iter=on_iter,
                on_window_start=on_window_start,
                on_window_end=on_window_end,
                on_batch=on_batch,
            )
        check()
    except _Stop as stop:
        _shutdown(holder.get("it"))
        watch.stop()
        return _Outcome(stop.state, stop.reason, stop.rate, None, watch.peak, time.monotonic() - t0)
    except Exception as exc:  # a failed config is a result, and the study goes on
        _shutdown(holder.get("it"))
        watch.stop()
        return _Outcome("failed", _reason(exc), None, None, watch.peak, time.monotonic() - t0)
    finally:
        holder.pop("it", None)
        watch.stop()
    if run.window_batches == 0:
        return _Outcome(
            "failed",
            f"the loader ended during warm-up ({warmup} batches): nothing was measured",
            None,
            None,
            watch.peak,
            time.monotonic() - t0,
        )
    m = summarize([run], warmup=warmup)
    return _Outcome("complete", "", m.samples_per_s, m, watch.peak, time.monotonic() - t0)

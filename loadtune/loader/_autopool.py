"""The adaptive worker pool's controller: ``num_workers="auto"`` and ``prefetch_factor="auto"``.

:class:`PoolController` is pure: it is fed one observation per batch handed out (the
batch's :class:`probes.events.BatchEvent`) and, now and then, the machine's idle CPU time
and available memory, all stamped by the caller's clock; :meth:`PoolController.decide`
returns the changes to make as :class:`probes.events.PoolEvent` records. It starts no
process and reads no clock, so tests drive it with synthetic streams and a fake clock. The
iterator applies its decisions to the real pool (``PoolResizing`` in _resize.py).

# NOTE [ Adaptive worker pool ]
``num_workers="auto"`` sizes the pool while the loader runs, from the loader's own events.

Signals, per window of at least ``window_s`` seconds and ``min_batches`` batches:

* the consumer's stall: the time it was blocked in ``__next__`` (``BatchEvent.wait``,
  clipped to the window) over the window's length;
* the workers' busy time: each batch's fetch, collate and pack (``fetch_start`` to
  ``sent``), summed, over the window's length: how many workers' worth of work was done;
* how much of that busy time was CPU demand: each worker reports with every batch its
  process CPU time and how long it has waited for a CPU so far (``BatchEvent.worker_cpu``,
  ``worker_runq``, from ``/proc/self/schedstat``); the differences between a worker's
  consecutive batches over their busy time are its CPU share and run-queue share. Waiting
  for a CPU is CPU demand, not I/O: on a shared machine busy workers are often runnable
  and not running. A low demand (CPU + run queue < ``io_share``) means the workers mostly
  wait (storage, network, sleeps): there more workers than cores pay;
* idle cores: the idle and iowait time of the CPUs this process may run on
  (``os.sched_getaffinity``, ``psutil.cpu_times``), whoever else uses the machine.

Rules (one verdict per window):

* grow by one while the consumer waits (stall >= ``grow_stall``), the workers are busy
  (>= ``busy_to_grow`` of the pool) and either cores are idle (>= ``idle_cores``) or the
  workers mostly wait on I/O;
* shrink by one when the consumer does not wait (<= ``shrink_stall``) and one worker
  fewer would still be at most ``busy_to_shrink`` busy, or when the workers compute (CPU
  demand >= ``compute_share``) with no core idle and either outnumber the cores or wait
  for a CPU longer than they run (other processes hold the cores: fewer workers get as
  much done, and leave the main process a core);
* otherwise hold.

Hysteresis: a change needs ``grow_agree`` (growing) or ``shrink_agree`` (shrinking)
consecutive windows agreeing; a hold in between starts the count again. Changes are one
worker at a time. After a change nothing is measured for ``cooldown_s`` (a new worker
forks and warms up, a retired one finishes its batches), and the change's effect is then
measured over ``grow_agree`` windows before anything else may change (those windows also
count towards the next verdict): a grow that did not raise the throughput by
``gain_fraction`` of what one more worker could give (1/n, or the stall removed when that
is less), or a shrink after which the consumer waits and the throughput fell by more than
``shrink_loss``, is measured as long again and, if the whole still says so, undone; the
same step is then not tried again for ``retry_s`` seconds, unless the samples change
(their work per batch, waiting for a CPU left out, moves by more than 1.5x). A change
during which the samples changed is kept: its before and after do not compare. So a noisy
neighbour that makes one window look different changes nothing, and a step that does not
pay is taken back once instead of oscillating.

Bounds: the pool stays in [1, ``max_workers``]. ``max_workers`` defaults to
:func:`loadtune.loader._resize.default_max_workers` (four workers per usable core, at
most 64, and no more than half the available memory allows at 128 MiB per worker). Once
batches are seen, the pool also keeps its batches in flight (``prefetch_factor`` + 2 blocks
per worker, of the largest batch seen) plus ``worker_bytes`` per worker within
``memory_fraction`` of the available memory, shrinking at once when that bound falls
below the pool.

The starting size is 2 (or ``max_workers`` if smaller): two workers overlap one batch with
the next and are rarely wrong by much; a consumer-bound run shrinks to 1, a starved one
grows. A resumed run starts from the size its state recorded.

``prefetch_factor="auto"`` adapts the batches in flight per worker the same way: it grows
by one (to at most ``max_prefetch``) while the consumer waits although the workers are
not busy (slow batches hold the ones behind them, so a deeper buffer lets the others run
ahead), and only while the batches in flight fit ``prefetch_budget`` bytes; it shrinks at
once when they no longer fit (larger batches, more workers). It starts at 2, torch's
default.

The pool changes only the number of processes, never what a batch contains: with "auto"
dispatch is "balanced" and every batch seeds ``random``, torch and numpy from (base seed,
epoch, batch number) (NOTE [ Seed scheme ] in _worker.py), so a batch's content does not
depend on which worker, or how many, produced it. A retired worker takes no new batch,
finishes the ones it holds (at most two) and exits; if it dies first, what it held is
dispatched to the others. A worker added takes the lowest free id; ids stay in
[0, max_workers) and ``get_worker_info().num_workers`` is ``max_workers``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from probes.events import BatchEvent, PoolEvent

__all__ = ["PREFETCH", "WORKERS", "PoolController", "PoolSettings"]

WORKERS = "num_workers"
PREFETCH = "prefetch_factor"
_MIB = 2**20
_GROW, _SHRINK, _HOLD = 1, -1, 0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The controller's thresholds and timings; see NOTE [ Adaptive worker pool ].

    Attributes:
        window_s: Shortest window one verdict is drawn from.
        min_batches: Fewest batches in a window.
        cooldown_s: Nothing is measured for this long after a change.
        grow_agree: Consecutive windows that must agree to grow (and that measure a
            change's effect).
        shrink_agree: Consecutive windows that must agree to shrink.
        grow_stall: The consumer's stall (fraction of the window) that asks for more.
        shrink_stall: The stall at or below which fewer workers may do.
        busy_to_grow: The pool's busy fraction needed to blame the workers for a stall.
        busy_to_shrink: How busy one worker fewer may be after shrinking.
        io_share: Below this CPU demand (CPU + run-queue wait) over their busy time
            workers wait on I/O.
        compute_share: At or above it workers compute.
        idle_cores: Idle cores that make room for one more computing worker.
        gain_fraction: Fraction of the ideal gain a grow must show to be kept.
        shrink_loss: Throughput a shrink may lose, while the consumer waits, and be kept.
        retry_s: How long an undone step is not tried again.
        max_prefetch: Upper bound of ``prefetch_factor="auto"``.
        worker_bytes: Memory assumed per worker process (bounds).
        memory_fraction: Share of available memory the pool's workers and batches may use.
    """

    window_s: float = 0.15
    min_batches: int = 4
    cooldown_s: float = 0.15
    grow_agree: int = 2
    shrink_agree: int = 4
    grow_stall: float = 0.10
    shrink_stall: float = 0.03
    busy_to_grow: float = 0.7
    busy_to_shrink: float = 0.6
    io_share: float = 0.5
    compute_share: float = 0.8
    idle_cores: float = 0.6
    gain_fraction: float = 0.25
    shrink_loss: float = 0.05
    retry_s: float = 5.0
    max_prefetch: int = 16
    worker_bytes: int = 128 * _MIB
    memory_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class _Window:
    """One window's measurements."""

    start: float
    end: float
    batches: int
    stall: float  # fraction of the window the consumer was blocked
    busy: float  # workers' worth of fetch + collate + pack
    cpu_share: float | None  # worker CPU over worker busy time
    runq_share: float | None  # worker run-queue wait over worker busy time
    idle: float | None  # idle cores, measured
    work: float | None  # seconds of fetch work per batch, waiting for a CPU left out
    workers: int
    prefetch: int

    @property
    def rate(self) -> float:
        return self.batches / (self.end - self.start)

    @property
    def demand(self) -> float | None:
        """CPU demand over busy time: CPU plus waiting for a CPU."""
        if self.cpu_share is None:
            return None
        return self.cpu_share + (self.runq_share or 0.0)

    def cpu_text(self) -> str:
        text = f"CPU {self.cpu_share:.0%}"
        if self.runq_share is not None:
            text += f", waiting for a CPU {self.runq_share:.0%}"
        return text + " of their busy time"

    def measured(self) -> dict[str, float]:
        out = {
            "window_s": round(self.end - self.start, 4),
            "batches_per_s": round(self.rate, 3),
            "stall": round(self.stall, 4),
            "busy_workers": round(self.busy, 3),
        }
        if self.cpu_share is not None:
            out["cpu_share"] = round(self.cpu_share, 3)
        if self.runq_share is not None:
            out["runq_share"] = round(self.runq_share, 3)
        if self.idle is not None:
            out["idle_cores"] = round(self.idle, 3)
        return out


@dataclass(slots=True)
class _Check:
    """A change whose effect is being measured."""

    grew: bool
    before: int
    rate_before: float
    stall_before: float
    work_before: float | None
    windows: list[_Window] = field(default_factory=list)
    second: bool = False  # the first look failed: measuring as long again before undoing


class PoolController:
    """Decides, batch by batch, how many workers and how deep a buffer the loader needs.

    A pure object: it reads no clock and touches no process. The caller passes every
    handed-out batch to :meth:`observe`, the machine's state to :meth:`observe_system`
    (a few times a second), and asks :meth:`decide` what to change; it then applies the
    returned :class:`probes.events.PoolEvent` records (or tells :meth:`set_workers` about
    a size it chose itself). NOTE [ Adaptive worker pool ] describes the rules.

    Args:
        workers: The pool's size now.
        max_workers: Upper bound of the pool.
        prefetch: Batches in flight per worker now.
        now: The caller's clock at start (workers are starting: nothing is measured for
            ``settings.cooldown_s``).
        cores: Usable cores.
        auto_workers: Whether the pool size is the controller's to change.
        auto_prefetch: Whether ``prefetch`` is.
        prefetch_budget: Bytes the batches in flight may take (``prefetch_factor="auto"``),
            None for no bound.
        settings: Thresholds and timings.

    Example:
        >>> ctl = PoolController(workers=2, max_workers=4, prefetch=2, now=0.0, cores=2)
        >>> ctl.decide(0.1)
        []
    """

    def __init__(
        self,
        *,
        workers: int,
        max_workers: int,
        prefetch: int,
        now: float,
        cores: float,
        auto_workers: bool = True,
        auto_prefetch: bool = False,
        prefetch_budget: int | None = None,
        settings: PoolSettings | None = None,
    ) -> None:
        self.settings = settings if settings is not None else PoolSettings()
        self.workers = workers
        self.max_workers = max_workers
        self.prefetch = prefetch
        self.cores = cores
        self.auto_workers = auto_workers
        self.auto_prefetch = auto_prefetch
        self.prefetch_budget = prefetch_budget
        self._last_cpu: dict[int, tuple[float, float | None]] = {}
        self._nbytes = 0
        self._available: int | None = None
        self._system: deque[tuple[float, float]] = deque(maxlen=256)
        self._streak = (_HOLD, 0)
        self._streak_windows: list[_Window] = []
        self._prefetch_streak = 0
        self._check: _Check | None = None
        # (size, until, work per batch then): do not grow past / shrink below that size
        self._no_grow: tuple[int, float, float | None] | None = None
        self._no_shrink: tuple[int, float, float | None] | None = None
        self._restart_window(now + self.settings.cooldown_s)

    # ------------------------------------------------------------------ observations

    def _restart_window(self, start: float) -> None:
        self._start = start
        self._batches = 0
        self._wait = 0.0
        self._busy = 0.0
        self._cpu = 0.0
        self._runq = 0.0
        self._runq_known = True
        self._cpu_busy = 0.0
        self._cpu_batches = 0

    def observe(self, event: BatchEvent) -> None:
        """Take in one batch handed out to the consumer."""
        busy = max(0.0, event.sent - event.fetch_start)
        delta = runq = None
        if event.worker_cpu is not None:
            last = self._last_cpu.get(event.pid)
            self._last_cpu[event.pid] = (event.worker_cpu, event.worker_runq)
            if last is not None and event.worker_cpu >= last[0]:
                delta = event.worker_cpu - last[0]
                if event.worker_runq is not None and last[1] is not None:
                    runq = max(0.0, event.worker_runq - last[1])
        self._nbytes = max(self._nbytes, event.nbytes)
        if event.taken < self._start:
            return  # before the window: the change it belongs to is still settling
        self._batches += 1
        self._wait += min(event.wait, event.taken - self._start)
        self._busy += busy
        if delta is not None:
            self._cpu += delta
            self._cpu_busy += busy
            self._cpu_batches += 1
            if runq is None:
                self._runq_known = False
            else:
                self._runq += runq

    def observe_system(self, now: float, idle_core_s: float | None, available: int | None) -> None:
        """Take in the machine's state: idle core-seconds so far and available memory.

        Args:
            now: The caller's clock.
            idle_core_s: A running total of idle CPU seconds (:func:`idle_core_seconds`),
                or None when unknown.
            available: Available memory in bytes, or None when unknown.
        """
        if idle_core_s is not None:
            self._system.append((now, idle_core_s))
        if available is not None:
            self._available = available

    def set_workers(self, now: float, workers: int) -> None:
        """The pool was resized by the caller (a forced size): start measuring afresh."""
        self.workers = workers
        self._changed(now, None)

    # ------------------------------------------------------------------ decisions

    def memory_bound(self) -> int | None:
        """The most workers whose batches in flight fit the available memory, if known."""
        if self._available is None:
            return None
        s = self.settings
        per_worker = s.worker_bytes + (self.prefetch + 2) * self._nbytes
        return max(1, int(self._available * s.memory_fraction // per_worker))

    def bound(self) -> int:
        """The pool's upper bound now: ``max_workers``, lowered by memory when known."""
        memory = self.memory_bound()
        return self.max_workers if memory is None else max(1, min(self.max_workers, memory))

    def decide(self, now: float) -> list[PoolEvent]:
        """The changes to make now (usually none; at most one).

        Args:
            now: The caller's clock, the same one the observations were stamped with.

        Returns:
            PoolEvent records, already reflected in :attr:`workers` and :attr:`prefetch`.
        """
        s = self.settings
        if self.auto_workers and self.workers > self.bound():
            return [self._memory_shrink(now)]
        if now - self._start < s.window_s or self._batches < s.min_batches:
            return []
        window = self._close_window(now)
        if self._check is not None:
            self._check.windows.append(window)
            needed = s.grow_agree * (2 if self._check.second else 1)
            undo = self._judge(now) if len(self._check.windows) >= needed else None
            if undo is not None:
                return [undo]
            if self._check is not None:  # still measuring (or taking a second look)
                if self.auto_workers:  # the window counts towards the next verdict too
                    self._workers_step(now, window, act=False)
                return []
        if self.auto_workers:
            change = self._workers_step(now, window)
            if change is not None:
                return [change]
        if self.auto_prefetch:
            change = self._prefetch_step(now, window)
            if change is not None:
                return [change]
        return []

    def _close_window(self, now: float) -> _Window:
        elapsed = now - self._start
        share = runq = None
        work = self._busy / self._batches
        if self._cpu_busy > 0:
            share = self._cpu / self._cpu_busy
            runq = self._runq / self._cpu_busy if self._runq_known else None
            if runq is not None:  # waiting for a CPU stretches batches: it is not work
                work = max(0.0, self._cpu_busy - self._runq) / self._cpu_batches
        window = _Window(
            start=self._start,
            end=now,
            batches=self._batches,
            stall=min(1.0, self._wait / elapsed),
            busy=self._busy / elapsed,
            cpu_share=share,
            runq_share=runq,
            idle=self._idle_cores(self._start, now),
            work=work,
            workers=self.workers,
            prefetch=self.prefetch,
        )
        self._restart_window(now)
        return window

    def _idle_cores(self, start: float, end: float) -> float | None:
        """Idle cores between the system readings nearest ``start`` and ``end``."""
        first = last = None
        for t, value in self._system:
            if t <= start or first is None:
                first = (t, value)
            if t <= end:
                last = (t, value)
        if first is None or last is None or last[0] - first[0] < 0.5 * (end - start):
            return None
        return max(0.0, (last[1] - first[1]) / (last[0] - first[0]))

    def _workers_step(self, now: float, w: _Window, act: bool = True) -> PoolEvent | None:
        verdict, reason = self._verdict(now, w)
        kind, count = self._streak
        if verdict != kind:
            self._streak, self._streak_windows = (verdict, 0), []
            kind, count = verdict, 0
        if verdict == _HOLD:
            return None
        count += 1
        self._streak = (kind, count)
        self._streak_windows.append(w)
        need = self.settings.grow_agree if verdict == _GROW else self.settings.shrink_agree
        if count < need or not act:
            return None
        # the effect is measured against the windows that asked for the change
        windows = self._streak_windows
        span = sum(x.end - x.start for x in windows)
        rate = sum(x.batches for x in windows) / span
        stall = sum(x.stall * (x.end - x.start) for x in windows) / span
        before = self.workers
        self.workers += verdict
        event = PoolEvent(now, WORKERS, before, self.workers, reason, w.measured())
        self._changed(now, _Check(verdict == _GROW, before, rate, stall, _work(windows)))
        return event

    def _verdict(self, now: float, w: _Window) -> tuple[int, str]:
        """Grow, shrink or hold for one window, with the reason in measured numbers."""
        s = self.settings
        n = self.workers
        demand = w.demand
        io_bound = demand is not None and demand < s.io_share
        computes = demand is None or demand >= s.compute_share
        idle = w.idle
        if idle is None:  # no system reading: assume each busy worker holds a core
            idle = max(0.0, self.cores - w.busy * (min(1.0, demand) if demand is not None else 1.0))
        waited = f"the consumer waited {w.stall:.0%} of {w.end - w.start:.2f} s"
        busy = f"{w.busy:.1f} of {n} workers were busy"
        if (
            w.stall >= s.grow_stall
            and w.busy >= s.busy_to_grow * n
            and n < self.bound()
            and not self._blocked(now, w, grow=True)
        ):
            if io_bound:
                return _GROW, (
                    f"{waited} while {busy}, mostly waiting ({w.cpu_text()}): on I/O more "
                    "workers than cores pay"
                )
            if idle >= s.idle_cores:
                return _GROW, f"{waited} while {busy} and {idle:.1f} cores were idle"
        if n > 1 and not self._blocked(now, w, grow=False):
            if w.stall <= s.shrink_stall and w.busy <= s.busy_to_shrink * (n - 1):
                return _SHRINK, (
                    f"workers idle: {busy} and {waited}; {n - 1} would be "
                    f"{w.busy / (n - 1):.0%} busy"
                )
            if computes and not io_bound and idle < s.idle_cores:
                cpu = w.cpu_text() if w.cpu_share is not None else "CPU-bound"
                if n > self.cores:
                    return _SHRINK, (
                        f"{n} workers on {self.cores:g} cores compute ({cpu}) with "
                        f"{idle:.1f} cores idle: more workers than cores do not pay"
                    )
                if (w.runq_share or 0.0) > (w.cpu_share or 0.0):
                    return _SHRINK, (
                        f"{n} workers wait for a CPU longer than they run ({cpu}) with "
                        f"{idle:.1f} cores idle: the pool has more workers than the cores it gets"
                    )
        return _HOLD, ""

    def _blocked(self, now: float, w: _Window, *, grow: bool) -> bool:
        """Whether an undone step is still barred (for retry_s, while the work is alike)."""
        block = self._no_grow if grow else self._no_shrink
        if block is None or now >= block[1] or not _alike(block[2], w.work):
            return False
        return self.workers >= block[0] if grow else self.workers <= block[0]

    def _judge(self, now: float) -> PoolEvent | None:
        """Keep the change just made, undo it if its effect did not show, or look again.

        A first look that fails is not trusted alone (one slow window on a shared machine
        would do it): the check goes on for as long again and is judged over both.
        """
        check = self._check
        assert check is not None
        self._check = None
        s = self.settings
        windows = check.windows
        span = sum(x.end - x.start for x in windows)
        rate = sum(x.batches for x in windows) / span
        stall = sum(x.stall * (x.end - x.start) for x in windows) / span
        work = _work(windows)
        if not _alike(check.work_before, work):
            return None  # the samples changed meanwhile: the rates do not compare; keep it
        before, after = check.before, self.workers
        if check.grew:
            ideal = min(1.0 / before, check.stall_before / max(1e-9, 1.0 - check.stall_before))
            need = s.gain_fraction * ideal
            if stall < s.grow_stall or rate >= check.rate_before * (1.0 + need):
                return None
            if not check.second:
                check.second, self._check = True, check
                return None
            self._no_grow = (before, now + s.retry_s, work)
            reason = (
                f"growing {before} -> {after} did not pay: {check.rate_before:.1f} -> "
                f"{rate:.1f} batches/s (needed +{need:.0%}); back to {before} for "
                f"{s.retry_s:g} s"
            )
        else:
            if stall < s.grow_stall or rate >= (1.0 - s.shrink_loss) * check.rate_before:
                return None
            if not check.second:
                check.second, self._check = True, check
                return None
            self._no_shrink = (before, now + s.retry_s, work)
            reason = (
                f"shrinking {before} -> {after} made the consumer wait {stall:.0%}: "
                f"{check.rate_before:.1f} -> {rate:.1f} batches/s; back to {before} for "
                f"{s.retry_s:g} s"
            )
        self.workers = before
        measured = windows[-1].measured() | {"batches_per_s_before": round(check.rate_before, 3)}
        event = PoolEvent(now, WORKERS, after, before, reason, measured)
        self._changed(now, None)
        return event

    def _memory_shrink(self, now: float) -> PoolEvent:
        before = self.workers
        bound = self.bound()
        self.workers -= 1
        assert self._available is not None
        reason = (
            f"batches of {self._nbytes / _MIB:.1f} MiB, {self.prefetch} + 2 in flight per "
            f"worker, and {self._available / _MIB:.0f} MiB available allow {bound} workers"
        )
        measured = {"available_bytes": float(self._available), "batch_bytes": float(self._nbytes)}
        event = PoolEvent(now, WORKERS, before, self.workers, reason, measured)
        self._changed(now, None)
        return event

    def _prefetch_step(self, now: float, w: _Window) -> PoolEvent | None:
        s = self.settings
        d = self.prefetch
        budget = self.prefetch_budget

        def in_flight(depth: int) -> int:
            return depth * self.workers * self._nbytes

        if budget is not None and d > 1 and in_flight(d) > budget:
            self._prefetch_streak = 0
            self.prefetch = d - 1
            reason = (
                f"{d} batches per worker x {self.workers} workers x "
                f"{self._nbytes / _MIB:.1f} MiB exceed the {budget / _MIB:.0f} MiB budget"
            )
            event = PoolEvent(now, PREFETCH, d, d - 1, reason, w.measured())
            self._changed(now, None)
            return event
        fits = budget is None or in_flight(d + 1) <= budget
        if (
            w.stall >= s.grow_stall
            and w.busy < s.busy_to_grow * self.workers
            and d < s.max_prefetch
            and fits
        ):
            self._prefetch_streak += 1
        else:
            self._prefetch_streak = 0
            return None
        if self._prefetch_streak < s.grow_agree:
            return None
        self._prefetch_streak = 0
        self.prefetch = d + 1
        reason = (
            f"the consumer waited {w.stall:.0%} though only {w.busy:.1f} of {self.workers} "
            "workers were busy: a deeper buffer lets the others run ahead of a slow batch"
        )
        event = PoolEvent(now, PREFETCH, d, d + 1, reason, w.measured())
        self._changed(now, None)
        return event

    def _changed(self, now: float, check: _Check | None) -> None:
        self._check = check
        self._streak, self._streak_windows = (_HOLD, 0), []
        self._prefetch_streak = 0
        self._restart_window(now + self.settings.cooldown_s)


def _alike(a: float | None, b: float | None, factor: float = 1.5) -> bool:
    """Whether two per-batch work figures are within ``factor`` of each other (or unknown)."""
    if a is None or b is None or a <= 0 or b <= 0:
        return True
    return max(a, b) / min(a, b) <= factor


def _work(windows: list[_Window]) -> float | None:
    """Seconds of fetch work per batch over ``windows`` (those where it is known)."""
    known = [(x.work, x.batches) for x in windows if x.work is not None]
    batches = sum(b for _, b in known)
    return sum(w * b for w, b in known) / batches if batches else None

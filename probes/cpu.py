"""CpuProbe: CPU time, utilisation, context switches and affinity of the loader's processes.

Per watched process (role from ``Watch.pids()``: ``main``, ``worker-0``, ...) the probe
reads ``psutil`` ``cpu_times()``, ``num_ctx_switches()`` and ``cpu_affinity()`` at every
sample, and on Linux the run-queue wait of its main thread (``/proc/<pid>/schedstat``);
system-wide it reads ``cpu_times()`` (total and per CPU) and the load average. Everything
is a difference from a baseline, so only the observed window counts.

# NOTE [ Process baselines ]
A process that already existed when the probe started is measured from its first reading.
A process born after the probe started (a worker created by ``iter(loader)`` or a dead
worker's replacement) is measured from zero, since counters such as CPU time and I/O start
at zero in a new process: what it did before the sampler first saw it still counts, and its
window begins at its birth (clamped to the previous sample). Birth is
``psutil.Process.create_time()``, compared on that function's own clock (boot time plus time
since boot), because ``time.time()`` can differ from it by up to a second. A process that
disappears keeps its last reading and stays attributed to its role. ``probes.io`` follows
the same rule.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

import psutil

from .base import ProbeResult, Series, Watch

__all__ = ["CpuProbe"]

# A tick of /proc's start time is 1/100 s: a process created in the tick before start() may
# read as born just before it.
_TICK_S = 0.011


def process_clock() -> float:
    """Now, on the clock of ``psutil.Process.create_time()`` (see NOTE [ Process baselines ])."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        # create_time() is /proc/stat's btime (whole seconds) plus the start in ticks since
        # boot, which is CLOCK_BOOTTIME; adding the same btime makes the two comparable.
        return psutil.boot_time() + time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time()


def born_at(
    handle: psutil.Process, start_clock: float, t: float, previous: float | None
) -> float | None:
    """When a process first seen at probe time ``t`` was born, in probe time.

    See NOTE [ Process baselines ]. Returns None when it existed before ``start_clock`` (a
    :func:`process_clock` reading taken at ``start()``); else its birth, clamped to
    ``[previous, t]`` (``previous`` is the sample before, when it was not yet listed; at the
    first sample, the time of ``start()``).
    """
    try:
        created = handle.create_time()
        if created < start_clock - _TICK_S:
            return None
        now = process_clock()
        earliest = previous if previous is not None else t - (now - start_clock)
        return min(t, max(earliest, t - (now - created)))
    except (psutil.Error, OSError):
        return None


def watched_pids(watch: Watch) -> dict[str, int]:
    """``watch.pids()``, or just the main process when the worker callable fails.

    A sampler must not raise, and the callable reads a live iterator that may be shutting
    down while the sampler thread calls it.
    """
    try:
        return watch.pids()
    except Exception:
        return {"main": watch.main_pid}


@dataclass(frozen=True, slots=True)
class _Reading:
    """One process's counters at one sample (all zero at a process's birth)."""

    user: float = 0.0
    system: float = 0.0
    invol: int = 0
    wait: float | None = 0.0  # None where /proc/<pid>/schedstat cannot be read

    @property
    def cpu(self) -> float:
        return self.user + self.system


def _run_delay(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` spent runnable but waiting for a CPU, or None.

    The second field of ``/proc/<pid>/schedstat`` (nanoseconds, Linux only). CPU time
    alone cannot tell a worker that needs little CPU from one the machine is starving: a
    process that is runnable the whole time either runs or waits here.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass(slots=True)
class _Proc:
    """Mutable tracking state of one watched pid: its baseline and its last reading."""

    role: str
    pid: int
    handle: psutil.Process
    t0: float
    base: _Reading
    t: float
    last: _Reading
    affinity: list[int] | None
    samples: int = 1
    alive: bool = True

    def delta(self) -> _Reading:
        """The counters over the window this pid was watched."""
        wait = None
        if self.last.wait is not None and self.base.wait is not None:
            wait = self.last.wait - self.base.wait
        return _Reading(
            self.last.user - self.base.user,
            self.last.system - self.base.system,
            self.last.invol - self.base.invol,
            wait,
        )


@dataclass(slots=True)
class _SystemReading:
    """One system-wide reading."""

    t: float
    busy: float
    total: float
    per_cpu: list[tuple[float, float]]  # (busy, total) per CPU


def _busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) seconds from a psutil ``scputimes``, as ``psutil.cpu_percent`` counts."""
    fields = times._asdict()
    total = sum(fields.values())
    # Linux counts guest time inside user and nice already.
    total -= fields.get("guest", 0.0) + fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


class CpuProbe:
    """CPU time and utilisation per process and for the machine.

    Utilisation of a process is in % of one core (200 means two cores busy); the machine's
    ``system_cpu_pct`` is in % of all its CPUs (100 means every CPU busy).

    CPU wait is the time a process's main thread was ready to run but had no CPU: on a
    shared or oversubscribed machine a CPU-bound worker shows a low ``cpu_pct`` and a high
    ``cpu_wait_pct``, and the two add up to about 100.

    Summary (present only when measured): ``main_cpu_pct`` and ``main_cpu_wait_pct``;
    ``workers_cpu_pct`` (the workers' CPU seconds over the window, so the sum of their
    utilisations); ``workers_cpu_per_worker_pct`` and ``workers_cpu_wait_pct`` (means over
    worker roles, each over the time it was watched); ``system_cpu_pct``;
    ``involuntary_ctx_switches`` (all watched processes); ``cores`` (CPUs the main process
    may run on); ``load_avg_1m_peak``; ``window_s``. A role whose pid was replaced counts
    every pid it had. Series: ``<role>_cpu_pct`` per role, ``system_cpu_pct`` and
    ``load_avg_1m``. Detail: ``processes`` (one row per pid: role, pid, user_s, system_s,
    cpu_pct, cpu_wait_s, cpu_wait_pct, involuntary_ctx_switches, affinity, alive, samples),
    ``per_cpu_pct`` (each CPU's utilisation over the window) with its min, mean and max, and
    ``unreadable`` (pids that could not be read, with why).

    Example:
        >>> probe = CpuProbe()
        >>> probe.start(Watch())
        >>> probe.sample(0.0)
        >>> probe.sample(0.5)
        >>> probe.stop().summary["cores"] >= 1
        True
    """

    name: str = "cpu"

    def __init__(self) -> None:
        self._watch = Watch()
        self._reset()

    def start(self, watch: Watch) -> None:
        """Begin observing ``watch``; forgets anything seen before."""
        self._watch = watch
        self._reset()

    def _reset(self) -> None:
        self._start_clock = process_clock()
        self._t0: float | None = None
        self._times: list[float] = []
        self._procs: dict[int, _Proc] = {}
        self._role_series: dict[str, tuple[list[float], list[float]]] = {}
        self._system: list[_SystemReading] = []
        self._load: list[tuple[float, float]] = []
        self._unreadable: dict[int, str] = {}

    def sample(self, now: float) -> None:
        """Read every watched process and the machine at monotonic time ``now``; never raises."""
        if self._t0 is None:
            self._t0 = now
        t = now - self._t0
        previous = self._times[-1] if self._times else None
        self._times.append(t)
        self._sample_system(t)
        listed = watched_pids(self._watch)
        seen = set(listed.values())
        for proc in self._procs.values():
            if proc.pid not in seen:
                proc.alive = False
        for role, pid in listed.items():
            self._sample_process(role, pid, t, previous)

    def _sample_system(self, t: float) -> None:
        try:
            busy, total = _busy_total(psutil.cpu_times())
            per_cpu = [_busy_total(c) for c in psutil.cpu_times(percpu=True)]
        except (OSError, psutil.Error, AttributeError):
            return
        self._system.append(_SystemReading(t, busy, total, per_cpu))
        with contextlib.suppress(OSError, AttributeError):
            self._load.append((t, psutil.getloadavg()[0]))

    def _sample_process(self, role: str, pid: int, t: float, previous: float | None) -> None:
        proc = self._procs.get(pid)
        try:
            handle = proc.handle if proc is not None else psutil.Process(pid)
            with handle.oneshot():
                times = handle.cpu_times()
                invol = handle.num_ctx_switches().involuntary
                try:
                    affinity: list[int] | None = sorted(handle.cpu_affinity())
                except (AttributeError, psutil.AccessDenied):  # not on every platform
                    affinity = None
        except psutil.AccessDenied as exc:
            self._unreadable[pid] = f"{role}: access denied ({exc})"
            return
        except (psutil.Error, OSError):  # vanished: keep its last reading
            if proc is not None:
                proc.alive = False
            return
        reading = _Reading(times.user, times.system, invol, _run_delay(pid))
        if proc is None:
            born = born_at(handle, self._start_clock, t, previous)
            if born is None:  # existed before the probe: measure from this reading
                proc = _Proc(role, pid, handle, t, reading, t, reading, affinity)
            else:  # born while watched: its counters started at zero
                proc = _Proc(role, pid, handle, born, _Reading(), t, reading, affinity)
                if previous is not None and born < t:  # an interval within the window
                    self._point(role, t, reading.cpu / (t - born))
            self._procs[pid] = proc
            return
        if t > proc.t:
            self._point(role, t, (reading.cpu - proc.last.cpu) / (t - proc.t))
        proc.role, proc.t, proc.last = role, t, reading
        proc.affinity = affinity if affinity is not None else proc.affinity
        proc.samples += 1
        proc.alive = True

    def _point(self, role: str, t: float, cores: float) -> None:
        ts, values = self._role_series.setdefault(role, ([], []))
        ts.append(t)
        values.append(100.0 * cores)

    def stop(self) -> ProbeResult:
        """Return what was seen; unavailable when fewer than two samples were taken."""
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return ProbeResult.unavailable(
                self.name, "fewer than two samples: the run was shorter than one interval"
            )
        procs = sorted(self._procs.values(), key=lambda p: (p.t0, p.pid))
        # A process born between start() and the first sample is counted from its birth.
        window = self._times[-1] - min([self._times[0], *(p.t0 for p in procs)])
        summary: dict[str, float] = {"window_s": window, **_process_summary(procs, window)}
        cores = self._cores()
        if cores is not None:
            summary["cores"] = float(cores)
        detail: dict[str, Any] = {"processes": [_row(p) for p in procs]}
        series = [
            Series(f"{role}_cpu_pct", "%", tuple(ts), tuple(vs))
            for role, (ts, vs) in sorted(self._role_series.items())
        ]
        if len(self._system) >= 2:
            self._system_summary(summary, series, detail)
        else:
            detail["system"] = "psutil.cpu_times() could not be read"
        if self._load:
            summary["load_avg_1m_peak"] = max(v for _, v in self._load)
            load_t, load = zip(*self._load, strict=True)
            series.append(Series("load_avg_1m", "", tuple(load_t), tuple(load)))
        if self._unreadable:
            detail["unreadable"] = {str(pid): why for pid, why in sorted(self._unreadable.items())}
        return ProbeResult(self.name, summary=summary, series=tuple(series), detail=detail)

    def _system_summary(
        self, summary: dict[str, float], series: list[Series], detail: dict[str, Any]
    ) -> None:
        """The machine's utilisation over the window, per CPU, and as a series."""
        first, last = self._system[0], self._system[-1]
        if last.total > first.total:
            summary["system_cpu_pct"] = _pct(last.busy - first.busy, last.total - first.total)
        per_cpu = [
            _pct(b1 - b0, t1 - t0) if t1 > t0 else 0.0
            for (b0, t0), (b1, t1) in zip(first.per_cpu, last.per_cpu, strict=False)
        ]
        if per_cpu:
            detail["per_cpu_pct"] = per_cpu
            detail["per_cpu_min_pct"] = min(per_cpu)
            detail["per_cpu_mean_pct"] = sum(per_cpu) / len(per_cpu)
            detail["per_cpu_max_pct"] = max(per_cpu)
        ts, vs = [], []
        for a, b in itertools.pairwise(self._system):
            if b.total > a.total:
                ts.append(b.t)
                vs.append(_pct(b.busy - a.busy, b.total - a.total))
        series.append(Series("system_cpu_pct", "%", tuple(ts), tuple(vs)))

    def _cores(self) -> int | None:
        """CPUs the main process may run on (its affinity), else every logical CPU."""
        main = self._procs.get(self._watch.main_pid)
        if main is not None and main.affinity:
            return len(main.affinity)
        try:
            return len(psutil.Process(self._watch.main_pid).cpu_affinity())
        except (AttributeError, psutil.Error, OSError):
            return psutil.cpu_count()


def _pct(part: float, whole: float) -> float:
    """``part`` in % of ``whole``, kept in [0, 100] against float rounding of the sums."""
    return min(100.0, max(0.0, 100.0 * part / whole))


def _row(p: _Proc) -> dict[str, Any]:
    """One process's detail row."""
    span = p.t - p.t0
    d = p.delta()
    return {
        "role": p.role,
        "pid": p.pid,
        "user_s": d.user,
        "system_s": d.system,
        "cpu_pct": 100.0 * d.cpu / span if span > 0 else None,
        "cpu_wait_s": d.wait,
        "cpu_wait_pct": 100.0 * d.wait / span if span > 0 and d.wait is not None else None,
        "involuntary_ctx_switches": d.invol,
        "affinity": p.affinity,
        "alive": p.alive,
        "samples": p.samples,
    }


def _process_summary(procs: list[_Proc], window: float) -> dict[str, float]:
    """Per-role and per-group numbers; a pid replaced mid-run adds to its role."""
    roles: dict[str, list[_Proc]] = {}
    for p in procs:
        roles.setdefault(p.role, []).append(p)

    def pct(members: list[_Proc], wait: bool) -> float | None:
        span = sum(p.t - p.t0 for p in members)
        deltas = [p.delta() for p in members]
        if span <= 0 or (wait and any(d.wait is None for d in deltas)):
            return None
        return 100.0 * sum((d.wait or 0.0) if wait else d.cpu for d in deltas) / span

    summary: dict[str, float] = {}
    if "main" in roles:
        for key, wait in (("main_cpu_pct", False), ("main_cpu_wait_pct", True)):
            value = pct(roles["main"], wait)
            if value is not None:
                summary[key] = value
    workers = [members for role, members in roles.items() if role.startswith("worker-")]
    if workers:
        cpu_s = sum(p.delta().cpu for members in workers for p in members)
        summary["workers_cpu_pct"] = 100.0 * cpu_s / window
        for key, wait in (
            ("workers_cpu_per_worker_pct", False),
            ("workers_cpu_wait_pct", True),
        ):
            values = [pct(members, wait) for members in workers]
            if values and all(v is not None for v in values):
                summary[key] = sum(v for v in values if v is not None) / len(values)
    if procs:
        summary["involuntary_ctx_switches"] = float(sum(p.delta().invol for p in procs))
    return summary

"""MemoryProbe: RSS, USS and PSS of the loader's processes, /dev/shm, and workers' growth.

Per watched process the probe reads ``psutil.Process.memory_full_info()`` at every sample
(``/proc/<pid>/smaps_rollup`` on Linux: one file, cheap); where that is denied it falls back
to ``memory_info()`` and reports RSS only, saying so. System-wide it reads the used space of
the shared-memory file system (``os.statvfs`` of ``Watch.options["shm_path"]``, default
``/dev/shm``) and ``psutil.virtual_memory().available``.

# NOTE [ Copy-on-read ]
A forked worker shares its parent's pages until one is written. CPython writes to an object
whenever it is merely read, because taking a reference increments its refcount; so a worker
that walks a dataset's big list of Python objects (file names, labels, dicts) turns the
pages holding them from shared into private, one by one, over the epoch, and every worker
ends up with its own copy. The signature, per worker: USS (private memory) grows steadily
while the worker runs, but RSS barely moves, because those pages were resident (and
counted in RSS) since the fork; only who owns them changes. A worker that allocates grows
RSS and USS together instead. The cure is data that is not a Python object per item
(numpy arrays, torch tensors, one bytes blob with offsets).

# NOTE [ Memory probe budget ]
USS and PSS come from ``memory_full_info()``, for which the kernel walks every page table
entry of the process (``/proc/<pid>/smaps_rollup``): about 5 ms for a worker that imported
torch (200 MiB resident), 14 ms for a process holding 800 MiB of Python objects (in small
pages; huge pages walk faster), so about 0.2 s for a training process holding 10 GiB of
them. That CPU is the sampler thread's, in the main process, and on a busy machine it is
taken from the loader. So USS and PSS are read at the first sample, then again no sooner
than ``memory_full_interval`` seconds (1) and no sooner than the last reading's CPU cost
divided by ``memory_full_budget`` (0.005, half a percent of one core; 0 turns the budget
off): a 15 ms reading of three processes waits 3 s. RSS, which is cheap, is read at every
sample. ``stop()``, which runs after the window has closed, reads USS and PSS once more
when the last sample did not, so growth and copy-on-read are judged over the whole window;
being steady takes four readings, so a window of about three gaps (9 s for those three
processes). ``detail`` has ``uss_pss_readings`` and ``uss_pss_cpu_s`` (their CPU seconds,
stop()'s included).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from .base import ProbeResult, Series, Watch

# The pid bookkeeping is the CPU probe's (the workers' pids change on restart).
from .cpu import watched_pids

__all__ = ["MemoryProbe", "growth"]

_MIB = 1 << 20
# Growth below this is noise for this probe: allocator arenas, the first batches' buffers.
_MIN_GROWTH_BYTES = 8 * _MIB
# "Steadily": no single interval brings more than this share of the growth (a jump at
# start-up is not growth), and at least _MIN_STEPS intervals each bring _STEP_SHARE of it.
# A flat tail (the worker done with its share of the epoch) does not count against it.
_MAX_JUMP_SHARE = 0.5
_STEP_SHARE = 0.05
_MIN_STEPS = 3
# Copy-on-read: RSS grew by at most this share of the USS growth (see NOTE [ Copy-on-read ]).
_COW_RSS_SHARE = 0.5
# Share of one core that USS/PSS readings may use on average (NOTE [ Memory probe budget ]).
FULL_BUDGET = 0.005


@dataclass(slots=True)
class _Proc:
    """Readings of one watched pid: times and (rss, uss or None, pss or None) per sample."""

    role: str
    pid: int
    handle: psutil.Process
    t: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)  # empty when memory_full_info was denied
    pss: list[float] = field(default_factory=list)
    full_t: list[float] = field(default_factory=list)  # times of the USS/PSS readings
    full_rss: list[float] = field(default_factory=list)  # anonymous RSS at those times
    alive: bool = True


def growth(t: list[float], uss: list[float], rss: list[float]) -> dict[str, Any]:
    """USS growth of one process from its samples: size, slope, and whether it is steady.

    Args:
        t: Sample times in seconds, increasing.
        uss: USS in bytes at each time.
        rss: Anonymous RSS in bytes at each time (RSS less file and shared-memory pages),
            to tell copy-on-read from allocation.

    Returns:
        ``uss_first_bytes``, ``uss_last_bytes``, ``uss_growth_bytes`` (last minus first),
        ``uss_slope_bytes_per_s`` (least squares; None with fewer than two distinct times),
        ``rss_growth_bytes``, ``steady_growth`` (grew by at least 8 MiB with a positive
        slope, over at least three intervals, none of which brought half of it) and
        ``copy_on_read``
        (steady growth of USS while RSS grew by at most half as much: see
        NOTE [ Copy-on-read ]).

    Example:
        >>> g = growth([0.0, 1.0, 2.0, 3.0], [0.0, 10e6, 20e6, 30e6], [50e6] * 4)
        >>> g["uss_slope_bytes_per_s"], g["steady_growth"], g["copy_on_read"]
        (10000000.0, True, True)
    """
    n = len(t)
    first, last = uss[0], uss[-1]
    grew = last - first
    rss_grew = rss[-1] - rss[0]
    slope = None
    if n >= 2:
        mean_t = sum(t) / n
        mean_u = sum(uss) / n
        var = sum((x - mean_t) ** 2 for x in t)
        if var > 0:
            slope = sum((x - mean_t) * (y - mean_u) for x, y in zip(t, uss, strict=True)) / var
    steps = [b - a for a, b in itertools.pairwise(uss)]
    steady = (
        n >= 4
        and grew >= _MIN_GROWTH_BYTES
        and slope is not None
        and slope > 0
        and max(steps) <= _MAX_JUMP_SHARE * grew
        and sum(1 for d in steps if d >= _STEP_SHARE * grew) >= _MIN_STEPS
    )
    return {
        "uss_first_bytes": first,
        "uss_last_bytes": last,
        "uss_growth_bytes": grew,
        "uss_slope_bytes_per_s": slope,
        "rss_growth_bytes": rss_grew,
        "steady_growth": steady,
        "copy_on_read": steady and rss_grew <= _COW_RSS_SHARE * grew,
    }


def _shm_used(path: str) -> tuple[float, float]:
    """(used, total) bytes of the file system holding ``path``."""
    st = os.statvfs(path)
    return float((st.f_blocks - st.f_bfree) * st.f_frsize), float(st.f_blocks * st.f_frsize)


class MemoryProbe:
    """Memory per process over time, shared memory, available memory, workers' growth.

    Summary (present only when measured): ``peak_total_rss_bytes`` and
    ``peak_total_pss_bytes`` (largest sum over the watched processes at one sample; PSS
    splits shared pages among their sharers, so its sum is the loader's real footprint),
    ``peak_workers_uss_bytes``, ``peak_shm_used_bytes``, ``shm_total_bytes``,
    ``min_available_bytes``, and per worker role ``<role>_uss_growth_bytes`` and
    ``<role>_uss_slope_bytes_per_s`` (for the pid of that role with the most samples).
    Series: ``<role>_rss_bytes``, ``<role>_uss_bytes``, ``<role>_pss_bytes`` per role,
    ``total_pss_bytes``, ``shm_used_bytes``, ``available_bytes``. Detail: ``processes`` (one
    row per pid: role, pid, samples, peak RSS/USS/PSS, alive), ``growth`` (one row per worker
    pid, see :func:`growth`), ``copy_on_read`` (True when any worker shows it),
    ``copy_on_read_workers``, ``shm_path``, ``uss_pss_readings`` and ``uss_pss_cpu_s``, and
    ``uss_pss`` or ``shm`` when those could not be read, with why.

    Options read from ``Watch.options``: ``shm_path`` (default ``/dev/shm``),
    ``memory_full_interval`` (seconds, default 1) and ``memory_full_budget`` (share of one
    core, default 0.005): how often USS and PSS are read, see NOTE [ Memory probe budget ].

    Example:
        >>> probe = MemoryProbe()
        >>> probe.start(Watch())
        >>> probe.sample(0.0)
        >>> probe.stop().summary["peak_total_rss_bytes"] > 0
        True
    """

    name: str = "memory"

    def __init__(self, *, cpu_clock: Callable[[], float] = time.thread_time) -> None:
        """Make a probe.

        Args:
            cpu_clock: The CPU clock that prices USS/PSS readings (see NOTE [ Memory
                probe budget ]); this thread's CPU time, or a fake one in tests.
        """
        self._watch = Watch()
        self._cpu_clock = cpu_clock
        self._reset()

    def start(self, watch: Watch) -> None:
        """Begin observing ``watch``; forgets anything seen before."""
        self._watch = watch
        self._reset()

    def _reset(self) -> None:
        options = self._watch.options
        self._shm_path = str(options.get("shm_path", "/dev/shm"))
        self._full_interval = float(options.get("memory_full_interval", 1.0))
        self._full_budget = float(options.get("memory_full_budget", FULL_BUDGET))
        self._last_full: float | None = None
        self._full_gap = self._full_interval  # seconds from one USS/PSS reading to the next
        self._full_cpu_s = 0.0  # CPU spent on USS/PSS readings, in sample() and stop()
        self._full_readings = 0
        self._last_t: float | None = None
        self._last_t_full = False
        self._t0: float | None = None
        self._procs: dict[int, _Proc] = {}
        # Per sample: (t, total rss, total pss or None, workers' uss or None)
        self._totals: list[tuple[float, float, float | None, float | None]] = []
        self._shm: list[tuple[float, float]] = []
        self._shm_total: float | None = None
        self._shm_error = ""
        self._available: list[tuple[float, float]] = []
        self._denied: dict[int, str] = {}
        self._unreadable: dict[int, str] = {}

    def sample(self, now: float) -> None:
        """Read every watched process and the machine at monotonic time ``now``; never raises."""
        if self._t0 is None:
            self._t0 = now
        t = now - self._t0
        try:
            used, total = _shm_used(self._shm_path)
            self._shm.append((t, used))
            self._shm_total = total
        except OSError as exc:
            self._shm_error = f"statvfs({self._shm_path!r}) failed: {exc}"
        try:
            self._available.append((t, float(psutil.virtual_memory().available)))
        except (OSError, psutil.Error):
            pass
        full = self._last_full is None or now - self._last_full >= self._full_gap
        if full:
            self._last_full = now
        self._read_all(t, full)

    def _read_all(self, t: float, full: bool, again: bool = False) -> None:
        """Read every watched process at probe time ``t``; ``again``: replace that reading."""
        cpu0 = self._cpu_clock() if full else 0.0
        listed = watched_pids(self._watch)
        seen = set(listed.values())
        for proc in self._procs.values():
            if proc.pid not in seen:
                proc.alive = False
        rss_sum, pss_sum, workers_uss = 0.0, 0.0, 0.0
        pss_complete, uss_complete, any_read, any_worker = True, True, False, False
        for role, pid in listed.items():
            reading = self._read(role, pid, t, full, again)
            if reading is None:
                continue
            any_read = True
            rss, uss, pss = reading
            rss_sum += rss
            if pss is None:
                pss_complete = False
            else:
                pss_sum += pss
            if role.startswith("worker-"):
                any_worker = True
                if uss is None:
                    uss_complete = False
                else:
                    workers_uss += uss
        if any_read:
            if again and self._totals and self._totals[-1][0] == t:
                self._totals.pop()
            self._totals.append(
                (
                    t,
                    rss_sum,
                    pss_sum if pss_complete else None,
                    workers_uss if any_worker and uss_complete else None,
                )
            )
        self._last_t, self._last_t_full = t, full
        if full:
            cost = max(0.0, self._cpu_clock() - cpu0)
            self._full_cpu_s += cost
            self._full_readings += 1
            # NOTE [ Memory probe budget ]: the next reading waits until this one's cost
            # is at most the budgeted share of the time between them.
            gap = cost / self._full_budget if self._full_budget > 0 else 0.0
            self._full_gap = max(self._full_interval, gap)

    def _read(
        self, role: str, pid: int, t: float, full: bool = True, again: bool = False
    ) -> tuple[float, float | None, float | None] | None:
        """(rss, uss, pss) of ``pid`` now, recorded; None when it is gone or unreadable.

        ``again``: this reading replaces one already recorded at ``t`` (stop()'s last one).
        """
        proc = self._procs.get(pid)
        uss: float | None = None
        pss: float | None = None
        anon = 0.0
        try:
            handle = proc.handle if proc is not None else psutil.Process(pid)
            if pid in self._denied or not full:
                rss = float(handle.memory_info().rss)
            else:
                try:
                    full = handle.memory_full_info()
                    rss, uss = float(full.rss), float(full.uss)
                    pss = float(full.pss) if hasattr(full, "pss") else None
                    # resident memory that is not file- or shmem-backed: shared-memory
                    # batch blocks a worker writes grow RSS but are not copy-on-read
                    anon = float(full.rss - full.shared) if hasattr(full, "shared") else rss
                except psutil.AccessDenied as exc:
                    self._denied[pid] = f"{role}: memory_full_info() denied ({exc}); RSS only"
                    rss = float(handle.memory_info().rss)
        except psutil.AccessDenied as exc:
            self._unreadable[pid] = f"{role}: access denied ({exc})"
            return None
        except (psutil.Error, OSError):  # vanished (or a zombie): keep its last readings
            if proc is not None:
                proc.alive = False
            return None
        if rss == 0:  # a zombie's mm is gone: that is not a reading of the worker
            return None
        if proc is None:
            proc = self._procs[pid] = _Proc(role, pid, handle)
        proc.role = role
        proc.alive = True
        if again and proc.t and proc.t[-1] == t:
            proc.t.pop()
            proc.rss.pop()
        proc.t.append(t)
        proc.rss.append(rss)
        if uss is not None:
            proc.full_t.append(t)
            proc.full_rss.append(anon)
            proc.uss.append(uss)
        if pss is not None:
            proc.pss.append(pss)
        return rss, uss, pss

    def stop(self) -> ProbeResult:
        """Return what was seen; unavailable when no process could be read.

        When the last sample read RSS only, USS and PSS are read once more and stand for
        that sample, so growth spans the whole window (NOTE [ Memory probe budget ]).
        """
        if self._last_t is not None and not self._last_t_full:
            self._read_all(self._last_t, full=True, again=True)
        if not self._procs:
            if self._unreadable:
                reasons = "; ".join(sorted(set(self._unreadable.values())))
                return ProbeResult.unavailable(self.name, f"cannot read memory: {reasons}")
            return ProbeResult.unavailable(self.name, "no sample was taken")
        summary: dict[str, float] = {}
        detail: dict[str, Any] = {"shm_path": self._shm_path}
        series: list[Series] = []
        procs = sorted(self._procs.values(), key=lambda p: (p.t[0], p.pid))
        rows = []
        for p in procs:
            row: dict[str, Any] = {"role": p.role, "pid": p.pid, "samples": len(p.t)}
            row["peak_rss_bytes"] = max(p.rss)
            if p.uss:
                row["peak_uss_bytes"] = max(p.uss)
            if p.pss:
                row["peak_pss_bytes"] = max(p.pss)
            row["alive"] = p.alive
            rows.append(row)
        detail["processes"] = rows

        summary["peak_total_rss_bytes"] = max(r for _, r, _, _ in self._totals)
        pss_totals = [(t, p) for t, _, p, _ in self._totals if p is not None]
        if pss_totals:
            summary["peak_total_pss_bytes"] = max(p for _, p in pss_totals)
            series.append(_series("total_pss_bytes", pss_totals))
        uss_totals = [u for _, _, _, u in self._totals if u is not None]
        if uss_totals:
            summary["peak_workers_uss_bytes"] = max(uss_totals)
        if self._denied:
            detail["uss_pss"] = {str(pid): why for pid, why in sorted(self._denied.items())}
        detail["uss_pss_readings"] = self._full_readings
        detail["uss_pss_cpu_s"] = self._full_cpu_s

        growths = []
        best: dict[str, tuple[int, dict[str, Any]]] = {}  # role -> (samples, growth row)
        for p in procs:
            if not p.role.startswith("worker-") or len(p.uss) != len(p.full_t):
                continue
            row = {
                "role": p.role,
                "pid": p.pid,
                "samples": len(p.t),
                **growth(p.full_t, p.uss, p.full_rss),
            }
            growths.append(row)
            if p.role not in best or len(p.t) > best[p.role][0]:
                best[p.role] = (len(p.t), row)
        for role, (_, row) in sorted(best.items()):
            summary[f"{role}_uss_growth_bytes"] = row["uss_growth_bytes"]
            if row["uss_slope_bytes_per_s"] is not None:
                summary[f"{role}_uss_slope_bytes_per_s"] = row["uss_slope_bytes_per_s"]
        flagged = sorted({row["role"] for row in growths if row["copy_on_read"]})
        detail["growth"] = growths
        detail["copy_on_read"] = bool(flagged)
        detail["copy_on_read_workers"] = flagged

        if self._shm:
            summary["peak_shm_used_bytes"] = max(u for _, u in self._shm)
            if self._shm_total is not None:
                summary["shm_total_bytes"] = self._shm_total
            series.append(_series("shm_used_bytes", self._shm))
        if self._shm_error:
            detail["shm"] = self._shm_error
        if self._available:
            summary["min_available_bytes"] = min(a for _, a in self._available)
            series.append(_series("available_bytes", self._available))

        for role in sorted({p.role for p in procs}):
            members = [p for p in procs if p.role == role]
            for kind in ("rss", "uss", "pss"):
                points: list[tuple[float, float]] = []
                for p in members:
                    # USS and PSS have their own, sparser, times: NOTE [ Memory probe budget ]
                    times, values = (p.t if kind == "rss" else p.full_t), getattr(p, kind)
                    if len(values) == len(times):
                        points.extend(zip(times, values, strict=True))
                if points:
                    series.append(_series(f"{role}_{kind}_bytes", sorted(points)))
        if self._unreadable:
            detail["unreadable"] = {str(pid): why for pid, why in sorted(self._unreadable.items())}
        return ProbeResult(self.name, summary=summary, series=tuple(series), detail=detail)


def _series(name: str, points: list[tuple[float, float]]) -> Series:
    return Series(name, "B", tuple(t for t, _ in points), tuple(v for _, v in points))

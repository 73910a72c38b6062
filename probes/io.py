"""IoProbe: bytes and operations read and written by the loader's processes, and iowait.

Per watched process the probe reads ``psutil.Process.io_counters()`` (``/proc/<pid>/io`` on
Linux) at every sample and reports differences from a baseline chosen as in
NOTE [ Process baselines ] (probes/cpu.py); system-wide it reads the CPUs' iowait.

Which bytes: the headline ``read_bytes``/``write_bytes`` of this probe are the kernel's
``read_chars``/``write_chars``, the bytes that passed through ``read()``/``write()``-family
system calls, whether the page cache served them or the disk did. That is what a dataset
asked for, and it is the same number on a warm and a cold cache, so it is comparable run to
run. ``device_read_bytes``/``device_write_bytes`` are the kernel's ``read_bytes``/
``write_bytes``: only what reached the block layer (a cache hit counts zero, readahead
counts more than was asked for). Both miss reads of memory-mapped files (``np.load(...,
mmap_mode=...)``, ``torch.load(..., mmap=True)``), which are page faults, not system calls;
and ``read_chars`` also counts pipes and sockets (the loader's task and result pipes, a
few hundred bytes per batch with its shared-memory transport).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import psutil

from .base import ProbeResult, Series, Watch

# The pid bookkeeping is the CPU probe's; both probes follow one NOTE [ Process baselines ].
from .cpu import born_at, process_clock, watched_pids

__all__ = ["IoProbe"]

# Our name -> psutil's field; the order is the order of the detail rows.
_FIELDS = {
    "read_bytes": "read_chars",
    "write_bytes": "write_chars",
    "device_read_bytes": "read_bytes",
    "device_write_bytes": "write_bytes",
    "read_ops": "read_count",
    "write_ops": "write_count",
}


def _counters(raw: Any) -> dict[str, float]:
    """Our counters from a psutil ``pio``; a field this platform lacks is left out."""
    return {
        ours: float(getattr(raw, theirs))
        for ours, theirs in _FIELDS.items()
        if hasattr(raw, theirs)
    }


@dataclass(slots=True)
class _Proc:
    """Mutable tracking state of one watched pid."""

    role: str
    pid: int
    handle: psutil.Process
    t0: float
    base: dict[str, float]
    t: float
    last: dict[str, float]
    samples: int = 1
    alive: bool = True

    def delta(self, key: str) -> float | None:
        if key not in self.last:
            return None
        return self.last[key] - self.base.get(key, 0.0)


class IoProbe:
    """Bytes and operations per process, their rates over time, and the CPUs' iowait.

    Summary (present only when measured), for ``main`` and ``workers`` (all worker pids
    together): ``<group>_read_bytes``, ``<group>_write_bytes``, ``<group>_device_read_bytes``,
    ``<group>_device_write_bytes``, ``<group>_read_ops``, ``<group>_write_ops``; and
    ``workers_read_bytes_per_s`` (over the window), ``iowait_pct`` (share of all CPU time
    spent idle waiting for I/O over the window), ``iowait_peak_pct``, ``window_s``.
    Series: ``<role>_read_bytes_per_s`` and ``<role>_write_bytes_per_s`` per role,
    ``iowait_pct``. Detail: ``processes`` (one row per pid with the counters above, alive,
    samples), ``counters`` (which kernel counters the names mean), ``iowait`` (why it is
    missing, when it is), ``unreadable`` (pids that could not be read, with why).

    Unavailable when no watched process's counters could be read (for example
    ``/proc/<pid>/io`` denied, or a platform where psutil has no ``io_counters``).

    Example:
        >>> probe = IoProbe()
        >>> probe.start(Watch())
        >>> probe.sample(0.0)
        >>> probe.sample(0.5)
        >>> "main_read_bytes" in probe.stop().summary
        True
    """

    name: str = "io"

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
        self._rates: dict[str, tuple[list[float], list[float], list[float]]] = {}
        self._cpu: list[tuple[float, float, float]] = []  # (t, iowait, total) seconds
        self._iowait_missing = ""
        self._unreadable: dict[int, str] = {}

    def sample(self, now: float) -> None:
        """Read every watched process's counters at monotonic time ``now``; never raises."""
        if self._t0 is None:
            self._t0 = now
        t = now - self._t0
        previous = self._times[-1] if self._times else None
        self._times.append(t)
        self._sample_iowait(t)
        listed = watched_pids(self._watch)
        seen = set(listed.values())
        for proc in self._procs.values():
            if proc.pid not in seen:
                proc.alive = False
        for role, pid in listed.items():
            self._sample_process(role, pid, t, previous)

    def _sample_iowait(self, t: float) -> None:
        try:
            times = psutil.cpu_times()
        except (OSError, psutil.Error):
            self._iowait_missing = "psutil.cpu_times() could not be read"
            return
        fields = times._asdict()
        if "iowait" not in fields:
            self._iowait_missing = "this system does not report iowait (psutil.cpu_times())"
            return
        # Linux counts guest time inside user and nice already.
        total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
        self._cpu.append((t, fields["iowait"], total))

    def _sample_process(self, role: str, pid: int, t: float, previous: float | None) -> None:
        proc = self._procs.get(pid)
        try:
            handle = proc.handle if proc is not None else psutil.Process(pid)
            counters = _counters(handle.io_counters())
        except (psutil.AccessDenied, AttributeError, NotImplementedError) as exc:
            why = "access denied" if isinstance(exc, psutil.AccessDenied) else "not supported"
            self._unreadable[pid] = f"{role}: io_counters() {why} ({exc or type(exc).__name__})"
            return
        except (psutil.Error, OSError):  # vanished: keep its last reading
            if proc is not None:
                proc.alive = False
            return
        if proc is None:
            born = born_at(handle, self._start_clock, t, previous)
            if born is None:  # existed before the probe: measure from this reading
                proc = _Proc(role, pid, handle, t, dict(counters), t, counters)
            else:  # born during the run: its counters started at zero
                proc = _Proc(role, pid, handle, born, {}, t, counters)
                if previous is not None:  # an interval within the window
                    self._rate(role, t, counters, {}, t - born)
            self._procs[pid] = proc
            return
        self._rate(role, t, counters, proc.last, t - proc.t)
        proc.role, proc.t, proc.last = role, t, counters
        proc.samples += 1
        proc.alive = True

    def _rate(
        self, role: str, t: float, now: dict[str, float], before: dict[str, float], dt: float
    ) -> None:
        if dt <= 0 or "read_bytes" not in now:
            return
        ts, reads, writes = self._rates.setdefault(role, ([], [], []))
        ts.append(t)
        reads.append((now["read_bytes"] - before.get("read_bytes", 0.0)) / dt)
        writes.append((now.get("write_bytes", 0.0) - before.get("write_bytes", 0.0)) / dt)

    def stop(self) -> ProbeResult:
        """Return what was seen; unavailable when no process's counters could be read."""
        if not self._procs:
            if self._unreadable:
                reasons = "; ".join(sorted(set(self._unreadable.values())))
                return ProbeResult.unavailable(self.name, f"cannot read I/O counters: {reasons}")
            return ProbeResult.unavailable(self.name, "no process was sampled")
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return ProbeResult.unavailable(
                self.name, "fewer than two samples: the run was shorter than one interval"
            )
        procs = sorted(self._procs.values(), key=lambda p: (p.t0, p.pid))
        # A process born between start() and the first sample is counted from its birth.
        window = self._times[-1] - min([self._times[0], *(p.t0 for p in procs)])
        rows = []
        for p in procs:
            row: dict[str, Any] = {"role": p.role, "pid": p.pid}
            for key in _FIELDS:
                value = p.delta(key)
                if value is not None:
                    row[key] = int(value)
            row.update(alive=p.alive, samples=p.samples)
            rows.append(row)
        summary: dict[str, float] = {"window_s": window}
        groups = {
            "main": [p for p in procs if p.role == "main"],
            "workers": [p for p in procs if p.role.startswith("worker-")],
        }
        for group, members in groups.items():
            if not members:
                continue
            for key in _FIELDS:
                values = [p.delta(key) for p in members]
                if values and all(v is not None for v in values):
                    summary[f"{group}_{key}"] = float(sum(v for v in values if v is not None))
        if "workers_read_bytes" in summary:
            summary["workers_read_bytes_per_s"] = summary["workers_read_bytes"] / window
        series = []
        for role, (ts, reads, writes) in sorted(self._rates.items()):
            series.append(Series(f"{role}_read_bytes_per_s", "B/s", tuple(ts), tuple(reads)))
            series.append(Series(f"{role}_write_bytes_per_s", "B/s", tuple(ts), tuple(writes)))
        detail: dict[str, Any] = {
            "processes": rows,
            "counters": {ours: theirs for ours, theirs in _FIELDS.items()},
        }
        if len(self._cpu) >= 2 and self._cpu[-1][2] > self._cpu[0][2]:
            (_, w0, c0), (_, w1, c1) = self._cpu[0], self._cpu[-1]
            summary["iowait_pct"] = _pct(w1 - w0, c1 - c0)
            ts, values = [], []
            for (_, wa, ca), (tb, wb, cb) in itertools.pairwise(self._cpu):
                if cb > ca:
                    ts.append(tb)
                    values.append(_pct(wb - wa, cb - ca))
            if values:
                summary["iowait_peak_pct"] = max(values)
            series.append(Series("iowait_pct", "%", tuple(ts), tuple(values)))
        else:
            detail["iowait"] = self._iowait_missing or "fewer than two readings of cpu_times()"
        if self._unreadable:
            detail["unreadable"] = {str(pid): why for pid, why in sorted(self._unreadable.items())}
        return ProbeResult(self.name, summary=summary, series=tuple(series), detail=detail)


def _pct(part: float, whole: float) -> float:
    """``part`` in % of ``whole``, kept in [0, 100] against float rounding of the sums."""
    return min(100.0, max(0.0, 100.0 * part / whole))

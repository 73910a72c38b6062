"""The stages probe (where each batch's time went) and the Chrome trace export of BatchEvents.

``StagesProbe`` reads the loader's :class:`probes.events.EventLog` and splits every batch
taken during the probe's window into its stages; ``export_chrome_trace`` writes the same
events as a timeline that Perfetto (ui.perfetto.dev) or chrome://tracing opens.
Times follow NOTE [ Event clock ] in probes/events.py.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .base import ProbeResult, Series, Watch
from .events import BatchEvent, EventLog, PoolEvent

__all__ = ["StagesProbe", "export_chrome_trace", "trace_events"]

#: The per-batch stages the summary reports, in pipeline order, with how each is computed.
STAGES: dict[str, Callable[[BatchEvent], float]] = {
    "queue": lambda e: e.fetch_start - e.dispatch,
    "fetch": lambda e: e.fetch_end - e.fetch_start,
    "collate": lambda e: e.collate_end - e.fetch_end,
    "pack": lambda e: e.pack,
    "transport": lambda e: e.ready - e.collate_end,
    "unpack": lambda e: e.unpack,
    "wait": lambda e: e.wait,
}


class StagesProbe:
    """Where each batch's time went: queue, fetch, collate, pack, transport, unpack, wait.

    The probe counts the batches whose ``taken`` time lies in its window, from the first
    ``sample(now)`` to ``stop()`` (read from ``clock``). It reads ``watch.events`` a piece
    at a time (``EventLog.since``) at every sample and once more at stop, so it holds
    only the events of the window, and a log that dropped events is not read twice.

    Per batch (seconds): ``queue`` (dispatch to fetch start), ``fetch``, ``collate``,
    ``pack`` (worker side, into shared memory), ``transport`` (end of collate until the
    batch was usable in the main process: pack, pipe and unpack), ``unpack`` and ``wait``
    (how long the consumer was blocked in ``__next__``: the data stall). ``transport``
    includes the time a finished batch sat in its pipe until the main process read it, so
    behind a slow consumer it is large and costs nothing: it is on the critical path only
    for batches that were waited for. ``pin`` (page-locking in the pin-memory thread) and
    ``to_device`` (the side-stream copy, by CUDA event timing) are reported only for the
    batches that had them, and absent otherwise, never zero-filled.

    Summary: ``batches``, ``samples``, ``window_s``, ``samples_per_s``, ``batches_per_s``,
    ``bytes_per_s``, ``stall_fraction`` (time blocked in ``__next__`` within the window,
    over the window), ``<stage>_mean_s``, ``<stage>_median_s`` and ``<stage>_p95_s`` for
    every stage, ``workers`` and ``worker_idle_fraction_mean``. Detail: ``mode`` ("events"),
    one row per worker id (``busy_s``: its batches' fetch, collate and pack clipped to the
    window, ``idle_fraction`` = 1 - busy/window, ``processes``: distinct pids, 2 after one
    restart), each worker's busy intervals (seconds since the window began, for a timeline)
    and ``events_dropped``; ``worker_history``: the adaptive pool's size changes
    (``num_workers="auto"``) up to stop, as ``{"time_s", "from", "to", "reason"}`` with
    ``time_s`` in seconds since the window began (negative: before it, during warm-up),
    empty for a fixed pool. Series: ``wait`` per batch, at its ``taken`` time.

    Only workers that produced a batch in the window are known to the probe. A batch still
    in flight at stop is not counted, and neither is the consumer's wait for it, so a run
    that ends blocked understates its stall by at most one batch's wait. Time to first
    batch is the profiler's to measure, not this probe's.

    With ``watch.events`` None (torch's own DataLoader, seen from outside) the probe reads
    ``watch.options["wait_times"]``, a list the profiling loop appends
    ``(taken_time, wait_seconds)`` to, and reports only ``batches``, ``window_s``,
    ``batches_per_s``, ``stall_fraction`` and the wait statistics, with ``mode``
    "external"; without that list it is unavailable.

    Args:
        clock: Returns the time at ``stop()`` (``time.monotonic`` in a real run, a fake
            clock in tests, so that the window's end matches the ``now`` of the samples).

    Example:
        >>> from probes.base import Watch
        >>> from probes.events import EventLog
        >>> probe = StagesProbe(clock=lambda: 12.0)
        >>> probe.start(Watch(events=EventLog()))
        >>> probe.sample(10.0)
        >>> result = probe.stop()
        >>> result.summary["batches"], result.summary["window_s"]
        (0.0, 2.0)
    """

    name = "stages"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._log: EventLog | None = None
        self._waits: Sequence[tuple[float, float]] | None = None
        self._t0: float | None = None
        self._seen = 0
        self._last: BatchEvent | None = None
        self._events: list[BatchEvent] = []
        self._external: list[tuple[float, float]] = []

    def start(self, watch: Watch) -> None:
        """Begin observing ``watch.events`` (or ``watch.options["wait_times"]``)."""
        self._log = watch.events
        self._waits = watch.options.get("wait_times") if watch.events is None else None
        self._t0 = None
        self._seen = 0
        self._last = None
        self._events = []
        self._external = []

    def sample(self, now: float) -> None:
        """Collect the events written since the last sample; the first one opens the window."""
        if self._t0 is None:
            self._t0 = now
        try:
            self._collect()
        except Exception:  # a sample must never raise (NOTE [ Probe contract ])
            pass

    def stop(self) -> ProbeResult:
        """Collect the last events and summarize the window [first sample, now]."""
        t1 = self._clock()
        if self._log is None and self._waits is None:
            return ProbeResult.unavailable(
                self.name,
                "no event log (the loader is not loadtune's) and no wait_times list in "
                "Watch.options to time the consumer from outside",
            )
        if self._t0 is None:
            return ProbeResult.unavailable(
                self.name, "no sample was taken: the run ended before the first interval"
            )
        self._collect()
        t0 = self._t0
        window = t1 - t0
        if window <= 0:
            return ProbeResult.unavailable(self.name, f"empty window ({window:.6f} s)")
        if self._log is None:
            waits = [(t, w) for t, w in self._external if t0 <= t <= t1]
            return _external_result(self.name, waits, t0, t1)
        events = [e for e in self._events if e.taken <= t1]
        history = [
            {"time_s": e.time - t0, "from": e.before, "to": e.after, "reason": e.reason}
            for e in self._log.pool_events()
            if e.setting == "num_workers" and e.time <= t1
        ]
        return _events_result(self.name, events, t0, t1, self._log.dropped, history)

    def _collect(self) -> None:
        """Move what was written since the last call into the probe's buffers."""
        t0 = self._t0 if self._t0 is not None else -math.inf
        if self._log is None:
            if self._waits is not None:
                fresh = list(self._waits[self._seen :])
                self._seen += len(fresh)
                self._external.extend((t, w) for t, w in fresh if t >= t0)
            return
        log = self._log
        if log.total < self._seen:  # the log was cleared: start over with the new events
            self._seen, self._last = 0, None
        fresh = log.since(self._seen)
        self._seen += len(fresh)
        # When the log dropped events, ``since`` starts at the oldest one held, so
        # ``_seen`` runs behind the true count and the next read repeats events already
        # taken; they are the very objects already read, so cut up to the last one seen.
        for i in range(len(fresh) - 1, -1, -1):
            if fresh[i] is self._last:
                fresh = fresh[i + 1 :]
                break
        if fresh:
            self._last = fresh[-1]
        self._events.extend(e for e in fresh if e.taken >= t0)


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    """Mean, median and 95th percentile of one stage, keyed ``<name>_mean_s`` and so on."""
    return {
        f"{name}_mean_s": statistics.fmean(values),
        f"{name}_median_s": statistics.median(values),
        f"{name}_p95_s": _percentile(values, 95),
    }


def _clipped(start: float, end: float, t0: float, t1: float) -> float:
    """Length of [start, end] inside [t0, t1]."""
    return max(0.0, min(end, t1) - max(start, t0))


def _stall(waits: Iterable[tuple[float, float]], t0: float, t1: float) -> float:
    """Seconds of the window spent blocked; a wait that began before the window is clipped."""
    return sum(_clipped(taken - wait, taken, t0, t1) for taken, wait in waits)


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping union of ``intervals`` (so busy time is never counted twice)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _events_result(
    name: str,
    events: list[BatchEvent],
    t0: float,
    t1: float,
    dropped: int,
    history: list[dict] | None = None,
) -> ProbeResult:
    """The summary of the batches taken in [t0, t1], from their BatchEvents."""
    window = t1 - t0
    events = sorted(events, key=lambda e: e.taken)
    summary: dict[str, float] = {
        "batches": float(len(events)),
        "samples": float(sum(e.samples for e in events)),
        "window_s": window,
        "batches_per_s": len(events) / window,
        "samples_per_s": sum(e.samples for e in events) / window,
        "bytes_per_s": sum(e.nbytes for e in events) / window,
    }
    detail: dict[str, Any] = {"mode": "events", "events_dropped": dropped, "workers": []}
    detail["worker_history"] = list(history or [])
    if not events:
        detail["note"] = "no batch was taken in the window"
        return ProbeResult(name=name, summary=summary, detail=detail)
    summary["stall_fraction"] = _stall(((e.taken, e.wait) for e in events), t0, t1) / window
    for stage, of in STAGES.items():
        summary.update(_stats(stage, [of(e) for e in events]))
    pinned = [e.pin for e in events if e.pin > 0]
    if pinned:  # only batches that were pinned (pin_memory with an accelerator)
        summary.update(_stats("pin", pinned))
    copies = [e.to_device for e in events if e.to_device is not None]
    if copies:  # only copies whose CUDA timing had finished when the batch was handed out
        summary.update(_stats("to_device", copies))

    by_worker: dict[int, list[BatchEvent]] = {}
    for e in events:
        by_worker.setdefault(e.worker_id, []).append(e)
    busy_intervals: dict[str, list[list[float]]] = {}
    idle: list[float] = []
    for worker_id in sorted(by_worker):
        own = by_worker[worker_id]
        # Busy is fetch + collate + pack: from fetch_start until the worker handed it off.
        spans = [
            (max(e.fetch_start, t0), min(e.sent, t1))
            for e in own
            if _clipped(e.fetch_start, e.sent, t0, t1) > 0
        ]
        spans = _merge(spans)
        busy = sum(end - start for start, end in spans)
        pids = sorted({e.pid for e in own})
        row = {
            "worker_id": worker_id,
            "batches": len(own),
            "busy_s": busy,
            "idle_fraction": 1.0 - busy / window,
            "processes": len(pids),
            "pids": pids,
        }
        detail["workers"].append(row)
        busy_intervals[str(worker_id)] = [[start - t0, end - t0] for start, end in spans]
        if worker_id >= 0:  # -1 is the main process itself (num_workers=0)
            idle.append(row["idle_fraction"])
    detail["busy_intervals"] = busy_intervals
    if idle:
        summary["workers"] = float(len(idle))
        summary["worker_idle_fraction_mean"] = statistics.fmean(idle)
    series = (
        Series(
            "wait",
            "s",
            tuple(e.taken - t0 for e in events),
            tuple(e.wait for e in events),
        ),
    )
    return ProbeResult(name=name, summary=summary, series=series, detail=detail)


def _external_result(
    name: str, waits: list[tuple[float, float]], t0: float, t1: float
) -> ProbeResult:
    """The summary of what a consumer saw of a loader without events: its waits."""
    window = t1 - t0
    waits = sorted(waits)
    summary: dict[str, float] = {
        "batches": float(len(waits)),
        "window_s": window,
        "batches_per_s": len(waits) / window,
    }
    detail: dict[str, Any] = {"mode": "external"}
    if not waits:
        detail["note"] = "no batch was taken in the window"
        return ProbeResult(name=name, summary=summary, detail=detail)
    summary["stall_fraction"] = _stall(waits, t0, t1) / window
    summary.update(_stats("wait", [w for _, w in waits]))
    series = (Series("wait", "s", tuple(t - t0 for t, _ in waits), tuple(w for _, w in waits)),)
    return ProbeResult(name=name, summary=summary, series=series, detail=detail)


# --------------------------------------------------------------------------- Chrome trace

_PID = 1  # one trace process for the whole loader; its processes are tracks (threads)
_MAIN_TID = 0


def _us(seconds: float) -> float:
    """Seconds to trace microseconds, kept to the nanosecond."""
    return round(seconds * 1e6, 3)


def trace_events(
    events: Iterable[BatchEvent],
    *,
    t0: float | None = None,
    pool_events: Iterable[PoolEvent] = (),
) -> list[dict]:
    """The Chrome trace events (Trace Event Format) for ``events``; pure, for tests.

    One track per loader worker ("worker N", thread id N + 1) with complete events
    ("ph": "X") ``fetch``, ``collate`` and ``pack`` per batch (args: epoch, batch, samples,
    bytes, pid); with ``num_workers=0`` those are on an "in-process fetch" track. One
    track "main" holds the consumer's ``wait`` for each batch and instant markers
    ``ready`` and ``taken``. ``ts`` and ``dur`` are microseconds since ``t0``. Each change
    of the adaptive pool is a global instant event ("ph": "i", "s": "g", category "pool")
    named ``num_workers 2 -> 3`` (or ``prefetch_factor ...``) with the reason in its args.

    Args:
        events: The batches, in any order.
        t0: The time that becomes ``ts`` 0 (NOTE [ Event clock ]); defaults to the
            earliest moment in ``events`` and ``pool_events``, so that no ``ts`` is negative.
        pool_events: The adaptive pool's decisions (``EventLog.pool_events()``).

    Returns:
        Metadata events ("ph": "M": process and thread names, thread order) first, then
        the batches' events.

    Example:
        >>> trace_events([])[0]["args"]
        {'name': 'loadtune loader'}
    """
    events = list(events)
    pool_events = list(pool_events)
    if t0 is None:
        t0 = min(
            [min(e.dispatch, e.fetch_start, e.taken - e.wait) for e in events]
            + [p.time for p in pool_events],
            default=0.0,
        )
    worker_ids = sorted({e.worker_id for e in events if e.worker_id >= 0})
    in_process_tid = (max(worker_ids) + 2) if worker_ids else 1
    tracks = {_MAIN_TID: "main"} | {w + 1: f"worker {w}" for w in worker_ids}
    if any(e.worker_id < 0 for e in events):
        tracks[in_process_tid] = "in-process fetch"
    out: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": _PID, "args": {"name": "loadtune loader"}}
    ]
    for tid, label in sorted(tracks.items()):
        out.append(
            {"ph": "M", "name": "thread_name", "pid": _PID, "tid": tid, "args": {"name": label}}
        )
        out.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": _PID,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )

    def at(t: float) -> float:
        return _us(t - t0)

    for e in sorted(events, key=lambda e: (e.epoch, e.batch, e.taken)):
        tid = e.worker_id + 1 if e.worker_id >= 0 else in_process_tid
        args = {
            "epoch": e.epoch,
            "batch": e.batch,
            "samples": e.samples,
            "bytes": e.nbytes,
            "pid": e.pid,
        }
        for stage, start, end in (
            ("fetch", e.fetch_start, e.fetch_end),
            ("collate", e.fetch_end, e.collate_end),
            ("pack", e.collate_end, e.sent),
        ):
            out.append(
                {
                    "ph": "X",
                    "name": stage,
                    "cat": "worker",
                    "pid": _PID,
                    "tid": tid,
                    "ts": at(start),
                    # Both ends are rounded the same way, so adjacent slices never overlap.
                    "dur": max(0.0, at(end) - at(start)),
                    "args": args,
                }
            )
        marker = {"epoch": e.epoch, "batch": e.batch}
        out.append(
            {
                "ph": "X",
                "name": "wait",
                "cat": "main",
                "pid": _PID,
                "tid": _MAIN_TID,
                "ts": at(e.taken - e.wait),
                "dur": _us(e.wait),
                "args": marker | {"worker": e.worker_id, "unpack_us": _us(e.unpack)},
            }
        )
        for name, t in (("ready", e.ready), ("taken", e.taken)):
            out.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": name,
                    "cat": "main",
                    "pid": _PID,
                    "tid": _MAIN_TID,
                    "ts": at(t),
                    "args": marker,
                }
            )
    for p in sorted(pool_events, key=lambda p: p.time):
        out.append(
            {
                "ph": "i",
                "s": "g",
                "name": f"{p.setting} {p.before} -> {p.after}",
                "cat": "pool",
                "pid": _PID,
                "tid": _MAIN_TID,
                "ts": at(p.time),
                "args": {"setting": p.setting, "from": p.before, "to": p.after, "reason": p.reason},
            }
        )
    return out


def export_chrome_trace(
    events: Iterable[BatchEvent],
    path: str | os.PathLike[str],
    *,
    t0: float | None = None,
    pool_events: Iterable[PoolEvent] | None = None,
) -> None:
    """Write ``events`` as a Chrome trace JSON file (open it in ui.perfetto.dev).

    The file is ``{"traceEvents": trace_events(events, t0=t0), "displayTimeUnit": "ms"}``,
    written atomically: to a temporary file beside ``path``, then renamed over it, so a
    failure leaves no partial file (and an existing file untouched).

    Args:
        events: The batches, for example ``loader.events``.
        path: Where to write; its directory must exist.
        t0: The time that becomes ``ts`` 0; see :func:`trace_events`.
        pool_events: The adaptive pool's decisions, drawn as instant events; by default
            those of ``events`` when it is an EventLog (``loader.events``).

    Raises:
        OSError: The file could not be written (``path`` is unchanged).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "trace.json")
        >>> export_chrome_trace([], path)
        >>> os.path.exists(path)
        True
    """
    target = Path(path)
    if pool_events is None:
        pool_events = events.pool_events() if isinstance(events, EventLog) else ()
    trace = trace_events(events, t0=t0, pool_events=pool_events)
    text = json.dumps({"traceEvents": trace, "displayTimeUnit": "ms"})
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a trace is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

"""The numbers behind every figure of a report, computed apart from drawing them.

Each function reads a saved result and returns a small frozen dataclass of plain numbers
(already in the unit the axis shows), or None when there is nothing to draw. plots.py
draws them; tests check these numbers rather than pixels.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadtune.results import ProfileResult
from probes.base import ProbeResult, Series

from .compare import Comparison
from .views import STAGES

__all__ = [
    "BarSeries",
    "Bars",
    "Curve",
    "Line",
    "LineChart",
    "Timeline",
    "Track",
    "byte_scale",
    "coalesce",
    "compare_stages",
    "io_rates",
    "iowait",
    "load_average",
    "machine_cpu",
    "memory",
    "prediction",
    "stage_bars",
    "thin",
    "timeline",
    "worker_cpu",
]

#: Most points a line keeps; more are reduced bucket by bucket (a figure is a few hundred
#: pixels wide, and every point is bytes in the HTML file).
MAX_POINTS = 600
#: Most bars a timeline track keeps; beyond it, gaps shorter than a pixel are closed.
MAX_SPANS = 1500

WINDOW_AXIS = "seconds since the window opened"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a chart: ``x`` and ``y`` of equal length; dashed for a reference line."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    dashed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LineChart:
    """Lines over time sharing one axis."""

    title: str
    ylabel: str
    lines: tuple[Line, ...]
    xlabel: str = WINDOW_AXIS
    ymax: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Track:
    """A row of the batch timeline: spans as (start, length) in seconds.

    ``kind`` is ``"wait"`` (the consumer blocked for data) or ``"busy"`` (a worker on its
    batches).
    """

    label: str
    kind: str
    spans: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The batch timeline: each batch's wait (ms, at the time it was taken) and the tracks.

    ``changes`` marks where the worker pool changed size (``num_workers="auto"``) inside
    the window: (seconds since it opened, ``"2→3"``).
    """

    window_s: float
    wait_t: tuple[float, ...]
    wait_ms: tuple[float, ...]
    tracks: tuple[Track, ...]
    changes: tuple[tuple[float, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BarSeries:
    """One value per bar; ``marks`` (optional) is a second value drawn as a tick (p95)."""

    label: str
    values: tuple[float, ...]
    marks: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Bars:
    """Horizontal bars, one group per label and one bar per series in each group.

    ``highlight`` names the label whose bar stands out (the wait: the one stage that is
    time the training loop lost).
    """

    title: str
    unit: str
    labels: tuple[str, ...]
    series: tuple[BarSeries, ...]
    highlight: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Curve:
    """Predicted samples/s against num_workers, and the measured point.

    Attributes:
        workers: The worker counts.
        samples_per_s: The prediction at each.
        bounds: What limits each prediction (``workers``, ``cores``, ``consumer``).
        measured_workers: The worker count that was measured, or None.
        measured_samples_per_s: What was measured there.
    """

    workers: tuple[int, ...]
    samples_per_s: tuple[float, ...]
    bounds: tuple[str, ...]
    measured_workers: int | None
    measured_samples_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def thin(
    x: Sequence[float],
    y: Sequence[float],
    limit: int = MAX_POINTS,
    reduce: Callable[[Sequence[float]], float] = statistics.fmean,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """At most ``limit`` points: consecutive buckets, each at its last x, ``reduce`` of y.

    Use ``max`` where a spike must stay visible (a wait), the mean where the level matters.
    """
    n = len(x)
    if n <= limit:
        return tuple(x), tuple(y)
    size = -(-n // limit)  # ceil
    xs, ys = [], []
    for i in range(0, n, size):
        xs.append(x[min(i + size, n) - 1])
        ys.append(reduce(y[i : i + size]))
    return tuple(xs), tuple(ys)


def coalesce(
    spans: Sequence[tuple[float, float]], min_gap: float
) -> tuple[tuple[float, float], ...]:
    """Spans (start, length) with every gap shorter than ``min_gap`` closed; sorted."""
    merged: list[list[float]] = []
    for start, length in sorted(spans):
        end = start + length
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e - s) for s, e in merged)


def byte_scale(peak: float) -> tuple[float, str]:
    """(divisor, unit) that shows ``peak`` bytes as a number between 1 and 1024."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if peak >= size:
            return float(size), unit
    return 1.0, "B"


def _probe(result: ProfileResult, name: str) -> ProbeResult | None:
    found = result.probes.get(name)
    return found if found is not None and found.available else None


def _series(probe: ProbeResult, name: str) -> Series | None:
    return next((s for s in probe.series if s.name == name), None)


def _role_key(role: str) -> tuple[int, int]:
    """main first, then workers by number."""
    if role == "main":
        return (0, 0)
    number = role.removeprefix("worker-")
    return (1, int(number)) if number.lstrip("-").isdigit() else (2, 0)


def _role_series(probe: ProbeResult, suffix: str) -> list[tuple[str, Series]]:
    """(role, series) for every series named ``<role><suffix>``, main first."""
    found = [
        (s.name[: -len(suffix)], s)
        for s in probe.series
        if s.name.endswith(suffix) and (s.name.startswith("worker-") or s.name.startswith("main"))
    ]
    return sorted(found, key=lambda rs: _role_key(rs[0]))


# --------------------------------------------------------------------------- figures


def timeline(result: ProfileResult) -> Timeline | None:
    """The consumer's waits and each worker's busy spans over the window (stages probe).

    The wait series gives, per batch, the time it was taken (seconds since the window
    opened) and how long the consumer waited for it, so each wait spans
    ``[taken - wait, taken]``; busy intervals are the stages probe's, on the same clock.
    """
    stages = _probe(result, "stages")
    if stages is None:
        return None
    waits = _series(stages, "wait")
    if waits is None or not waits.t:
        return None
    window = float(stages.summary.get("window_s") or max(waits.t))
    spans = [(max(0.0, t - w), min(w, t)) for t, w in zip(waits.t, waits.values, strict=True)]
    tracks = [Track("waiting for data", "wait", _fit(spans, window))]
    intervals = stages.detail.get("busy_intervals") or {}
    for key in sorted(intervals, key=int):
        label = f"worker {key}" if int(key) >= 0 else "in-process loading"
        busy = [(s, e - s) for s, e in intervals[key]]
        tracks.append(Track(label, "busy", _fit(busy, window)))
    wait_t, wait_ms = thin(waits.t, [w * 1e3 for w in waits.values], reduce=max)
    changes = tuple(
        (float(c["time_s"]), f"{c['from']}→{c['to']}")
        for c in stages.detail.get("worker_history") or ()
        if 0.0 <= float(c["time_s"]) <= window
    )
    return Timeline(window, wait_t, wait_ms, tuple(tracks), changes)


def _fit(spans: list[tuple[float, float]], window: float) -> tuple[tuple[float, float], ...]:
    """The spans as they are, or with sub-pixel gaps closed when there are too many."""
    if len(spans) <= MAX_SPANS:
        return tuple(sorted(spans))
    return coalesce(spans, window / MAX_SPANS)


def stage_bars(result: ProfileResult) -> Bars | None:
    """Mean time per batch in each stage (ms), p95 as the mark; the wait first, highlighted."""
    stages = _probe(result, "stages")
    if stages is None:
        return None
    s = stages.summary
    names = [n for n in STAGES if f"{n}_mean_s" in s]
    if not names:
        return None
    return Bars(
        title="time per batch by stage",
        unit="ms",
        labels=tuple(names),
        series=(
            BarSeries(
                "mean",
                tuple(s[f"{n}_mean_s"] * 1e3 for n in names),
                tuple(s.get(f"{n}_p95_s", s[f"{n}_mean_s"]) * 1e3 for n in names),
            ),
        ),
        highlight="wait",
    )


def worker_cpu(result: ProfileResult) -> LineChart | None:
    """Each process's CPU use over time, % of one core; the main process dashed."""
    cpu = _probe(result, "cpu")
    if cpu is None:
        return None
    lines = []
    for role, s in _role_series(cpu, "_cpu_pct"):
        x, y = thin(s.t, s.values)
        lines.append(Line(role, x, y, dashed=role == "main"))
    if not lines:
        return None
    return LineChart("CPU per process", "% of one core", tuple(lines))


def machine_cpu(result: ProfileResult) -> LineChart | None:
    """The whole machine's CPU use over time, % of all CPUs."""
    cpu = _probe(result, "cpu")
    s = _series(cpu, "system_cpu_pct") if cpu is not None else None
    if s is None or not s.t:
        return None
    x, y = thin(s.t, s.values)
    return LineChart("machine CPU", "% of all CPUs", (Line("all CPUs", x, y),), ymax=100.0)


def load_average(result: ProfileResult) -> LineChart | None:
    """The 1-minute load average over time, with the usable cores as a dashed line."""
    cpu = _probe(result, "cpu")
    s = _series(cpu, "load_avg_1m") if cpu is not None else None
    if cpu is None or s is None or not s.t:
        return None
    x, y = thin(s.t, s.values)
    lines = [Line("load average", x, y)]
    cores = cpu.summary.get("cores")
    if cores:
        lines.append(Line("usable cores", (x[0], x[-1]), (cores, cores), dashed=True))
    return LineChart("load average (1 min)", "runnable tasks", tuple(lines))


_MIN_USS_POINTS = 5


def memory(result: ProfileResult) -> LineChart | None:
    """Each process's own memory (USS, else RSS), the total PSS and /dev/shm in use.

    USS is read every few seconds at most (it walks the page tables; NOTE [ Memory probe
    budget ] in probes/memory.py) and RSS at every sample: with fewer than
    ``_MIN_USS_POINTS`` USS readings per process the lines are RSS, which shows the shape.
    """
    probe = _probe(result, "memory")
    if probe is None:
        return None
    picked: list[tuple[str, Series, bool]] = []
    uss = _role_series(probe, "_uss_bytes")
    if any(len(s.values) < _MIN_USS_POINTS for _, s in uss):
        uss = []
    for role, s in uss or _role_series(probe, "_rss_bytes"):
        picked.append((f"{role} {'USS' if uss else 'RSS'}", s, False))
    for name, label in (("total_pss_bytes", "total PSS"), ("shm_used_bytes", "/dev/shm used")):
        s = _series(probe, name)
        if s is not None:
            picked.append((label, s, True))
    if not picked:
        return None
    peak = max((max(s.values) for _, s, _ in picked if s.values), default=0.0)
    div, unit = byte_scale(peak)
    lines = []
    for label, s, dashed in picked:
        x, y = thin(s.t, [v / div for v in s.values], reduce=max)
        lines.append(Line(label, x, y, dashed))
    return LineChart("memory", unit, tuple(lines))


def io_rates(result: ProfileResult) -> LineChart | None:
    """Bytes read per second by each process (through read(): cache or disk)."""
    io = _probe(result, "io")
    if io is None:
        return None
    found = _role_series(io, "_read_bytes_per_s")
    if not found:
        return None
    peak = max((max(s.values) for _, s in found if s.values), default=0.0)
    div, unit = byte_scale(peak)
    lines = []
    for role, s in found:
        x, y = thin(s.t, [v / div for v in s.values])
        lines.append(Line(role, x, y, dashed=role == "main"))
    return LineChart("read rate per process", f"{unit}/s", tuple(lines))


def iowait(result: ProfileResult) -> LineChart | None:
    """The share of CPU time spent idle waiting for I/O, machine-wide."""
    io = _probe(result, "io")
    s = _series(io, "iowait_pct") if io is not None else None
    if s is None or not s.t:
        return None
    x, y = thin(s.t, s.values)
    return LineChart("iowait", "% of CPU time", (Line("iowait", x, y),))


def prediction(result: ProfileResult) -> Curve | None:
    """The diagnosis's predicted samples/s against num_workers, and the measured point."""
    d = result.diagnosis
    if d is None or not d.prediction:
        return None
    # One point per worker count: the model predicts the same rate for every prefetch.
    points = {p.num_workers: p for p in sorted(d.prediction, key=lambda p: p.num_workers)}
    measured = result.config.num_workers
    return Curve(
        workers=tuple(points),
        samples_per_s=tuple(p.samples_per_s for p in points.values()),
        bounds=tuple(p.bound for p in points.values()),
        measured_workers=measured,
        measured_samples_per_s=result.measurement.samples_per_s,
    )


def compare_stages(c: Comparison) -> Bars | None:
    """Mean time per batch in each stage (ms), A beside B."""
    sa, sb = _probe(c.before, "stages"), _probe(c.after, "stages")
    if sa is None and sb is None:
        return None
    names = [
        n for n in STAGES if any(p is not None and f"{n}_mean_s" in p.summary for p in (sa, sb))
    ]
    if not names:
        return None

    def values(p: ProbeResult | None) -> tuple[float, ...]:
        return tuple(
            (p.summary.get(f"{n}_mean_s", 0.0) if p is not None else 0.0) * 1e3 for n in names
        )

    return Bars(
        title="mean time per batch by stage",
        unit="ms",
        labels=tuple(names),
        series=(BarSeries(c.before_name, values(sa)), BarSeries(c.after_name, values(sb))),
    )

"""The Probe protocol, Watch (what to observe) and ProbeResult (what was observed).

# NOTE [ Probe contract ]
A probe is passive: ``start(watch)`` once, then ``sample(now)`` whenever the one sampler
thread of a profiling run calls it (at a fixed interval, with ``now`` from
``time.monotonic()``; tests call it with a fake clock), then ``stop()`` once, which returns
a JSON-ready :class:`ProbeResult`. ``Watch.pids()`` is read at every sample because the
set of worker processes changes (a dead worker is replaced). A probe that cannot measure
here returns ``ProbeResult(available=False, reason=...)``: it never raises for that, and it
never reports a number it did not measure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .events import EventLog

__all__ = ["Probe", "ProbeResult", "Series", "Watch"]


@dataclass(frozen=True)
class Watch:
    """What a profiling run observes.

    Attributes:
        main_pid: The process that iterates the loader.
        worker_pids: Returns the live worker pids at the time of the call (they change on
            restart); an empty list with ``num_workers=0``.
        events: The loader's EventLog, or None when the loader is torch's (only what can be
            seen from outside is then measured).
        options: Probe-specific settings (for example ``{"numa_root": "/tmp/fake"}``).
    """

    main_pid: int = field(default_factory=os.getpid)
    worker_pids: Callable[[], list[int]] = field(default=lambda: [])
    events: EventLog | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        """Role -> pid for every process to watch now: ``main`` and ``worker-<n>``."""
        roles = {"main": self.main_pid}
        for n, pid in enumerate(self.worker_pids()):
            roles[f"worker-{n}"] = pid
        return roles


@dataclass(frozen=True, slots=True)
class Series:
    """A time series: ``t`` in seconds since the probe started, one value per ``t``."""

    name: str
    unit: str
    t: tuple[float, ...]
    values: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "unit": self.unit,
            "t": list(self.t),
            "values": list(self.values),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Series:
        return cls(data["name"], data["unit"], tuple(data["t"]), tuple(data["values"]))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe observed.

    Attributes:
        name: The probe's name ("cpu", "io", ...).
        available: False when the probe could not measure on this machine.
        reason: Why not, when ``available`` is False ("" otherwise).
        summary: Named numbers (units in the name: ``_s``, ``_bytes``, ``_pct``, ``_per_s``).
        series: Time series, for the report's figures.
        detail: Probe-specific plain data (per process rows, top functions, topology, ...).
    """

    name: str
    available: bool = True
    reason: str = ""
    summary: dict[str, float] = field(default_factory=dict)
    series: tuple[Series, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "available": self.available,
            "reason": self.reason,
            "summary": dict(self.summary),
            "series": [s.to_dict() for s in self.series],
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ProbeResult:
        return cls(
            name=data["name"],
            available=data.get("available", True),
            reason=data.get("reason", ""),
            summary=dict(data.get("summary", {})),
            series=tuple(Series.from_dict(s) for s in data.get("series", [])),
            detail=dict(data.get("detail", {})),
        )

    @classmethod
    def unavailable(cls, name: str, reason: str) -> ProbeResult:
        """The result of a probe that cannot measure here."""
        return cls(name=name, available=False, reason=reason)


@runtime_checkable
class Probe(Protocol):
    """One measurement; see NOTE [ Probe contract ]."""

    name: str

    def start(self, watch: Watch) -> None:
        """Begin observing; called once before the first ``sample``."""

    def sample(self, now: float) -> None:
        """Take one reading at monotonic time ``now``; must be cheap and must not raise."""

    def stop(self) -> ProbeResult:
        """End observing and return what was seen; called once."""

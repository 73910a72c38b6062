"""CacheProbe: what a shared-memory sample cache did during the profile window.

The cache is ``loadtune.datasets.SharedCache``, but probes import nothing from loadtune:
the probe reads any object given as ``Watch.options["cache"]`` whose ``stats()`` returns
counters with ``to_dict()`` (``hits``, ``misses``, ``admitted``, ``refused``, ``bytes_held``,
``max_bytes``). The counters are exact and summed over every process that used the cache
(they live in the cache's own shared memory), so the probe reads them in the main process
only: once when it starts, at every sample, and once when it stops.

Summary (over the window, except the two byte counts, read at its end): ``hits``,
``misses``, ``hit_rate_pct`` (hits over hits + misses), ``admitted``, ``refused``,
``bytes_held`` and ``max_bytes``. Series: the hit rate of each sampling interval, in %
(intervals without a read are left out), and the bytes held.
"""

from __future__ import annotations

from typing import Any

from .base import ProbeResult, Series, Watch

__all__ = ["CacheProbe"]

_COUNTS = ("hits", "misses", "admitted", "refused")


class CacheProbe:
    """Hit rate and memory held of the dataset's shared-memory cache.

    Unavailable, with the reason, when the run has no cache (``options["cache"]`` missing)
    or its counters cannot be read.

    Example:
        >>> from probes.base import Watch
        >>> probe = CacheProbe()
        >>> probe.start(Watch())
        >>> probe.sample(0.0)
        >>> probe.stop().reason
        "the loader's dataset has no loadtune.datasets.SharedCache"
    """

    name = "cache"

    def __init__(self) -> None:
        self._cache: Any = None
        self._reason = ""
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._t0: float | None = None
        self._t: list[float] = []
        self._rate: list[tuple[float, float]] = []
        self._held: list[float] = []

    def _read(self) -> dict[str, int] | None:
        try:
            return {k: int(v) for k, v in self._cache.stats().to_dict().items()}
        except Exception as exc:  # a closed or foreign cache: say so, report nothing made up
            self._reason = f"cannot read the cache's counters: {type(exc).__name__}: {exc}"
            self._cache = None
            return None

    def start(self, watch: Watch) -> None:
        """Find the cache in ``watch.options["cache"]`` and read its counters once."""
        self._cache = watch.options.get("cache")
        if self._cache is None:
            self._reason = "the loader's dataset has no loadtune.datasets.SharedCache"
            return
        first = self._read()
        if first is not None:
            self._first = self._last = first

    def sample(self, now: float) -> None:
        """Read the counters; record the hit rate since the last reading and bytes held."""
        if self._cache is None:
            return
        if self._t0 is None:
            self._t0 = now
        now_counts = self._read()
        if now_counts is None:
            return
        t = now - self._t0
        reads = (now_counts["hits"] - self._last["hits"]) + (
            now_counts["misses"] - self._last["misses"]
        )
        if reads > 0:
            self._rate.append((t, 100.0 * (now_counts["hits"] - self._last["hits"]) / reads))
        self._t.append(t)
        self._held.append(float(now_counts["bytes_held"]))
        self._last = now_counts

    def stop(self) -> ProbeResult:
        """The counts over the window and the series."""
        if self._cache is not None:
            last = self._read()
            if last is not None:
                self._last = last
        if self._cache is None or not self._first:
            return ProbeResult.unavailable(self.name, self._reason)
        d = {k: self._last[k] - self._first[k] for k in _COUNTS}
        reads = d["hits"] + d["misses"]
        summary: dict[str, float] = {k: float(v) for k, v in d.items()}
        if reads:
            summary["hit_rate_pct"] = 100.0 * d["hits"] / reads
        summary["bytes_held"] = float(self._last["bytes_held"])
        summary["max_bytes"] = float(self._last["max_bytes"])
        series = (
            Series(
                "hit_rate", "%", tuple(t for t, _ in self._rate), tuple(v for _, v in self._rate)
            ),
            Series("bytes_held", "bytes", tuple(self._t), tuple(self._held)),
        )
        return ProbeResult(self.name, summary=summary, series=series)

"""BatchEvent, PoolEvent and EventLog: what the loader records about every batch, always on.

# NOTE [ Event clock ]
Every timestamp in a BatchEvent is ``time.monotonic()`` read in the process where the
step happened. On Linux that is CLOCK_MONOTONIC, one clock for the whole machine, so a
worker's ``fetch_start`` and the main process's ``ready`` are directly comparable and
their difference is a real duration. Durations are seconds, as floats.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

__all__ = ["BatchEvent", "EventLog", "PoolEvent"]


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One batch's life, from dispatch to the moment the consumer took it.

    Times follow NOTE [ Event clock ]. With ``num_workers=0`` the worker fields describe
    the main process, ``worker_id`` is -1 and the transport fields are zero.

    Attributes:
        epoch: The iterator's epoch number (0 for the first ``iter(loader)``).
        batch: The batch number within the epoch (the order the sampler gave).
        worker_id: The loader worker that produced it, -1 for the main process.
        pid: That process's id.
        dispatch: When the main process sent the task.
        fetch_start: When the worker started fetching its samples.
        fetch_end: When the last sample was fetched.
        collate_end: When collate_fn returned.
        sent: When the worker finished packing and handed the batch to the pipe.
        ready: When the main process had the batch unpacked and usable.
        taken: When ``__next__`` returned it to the consumer.
        wait: How long the consumer was blocked in ``__next__`` for this batch.
        nbytes: Tensor bytes carried (shared memory, or the pipe for fallbacks).
        samples: Number of samples in the batch (1 without automatic batching).
        pack: Seconds the worker spent putting the batch into shared memory.
        unpack: Seconds the main process spent turning it back into tensors.
        pin: Seconds spent copying it into page-locked memory (0 when not pinned).
        to_device: Seconds the side-stream copy to the device took (CUDA event timing), or
            None when there was no device copy or it had not finished when handed out.
        worker_cpu: The worker process's CPU seconds (user + system, all its threads) when
            it sent the batch, or None (main process, older records). The difference
            between one pid's consecutive batches is its CPU use in between.
        worker_runq: Seconds the worker's main thread had waited for a CPU (runnable, not
            running) when it sent the batch, or None where unknown; differences as above.
    """

    epoch: int
    batch: int
    worker_id: int
    pid: int
    dispatch: float
    fetch_start: float
    fetch_end: float
    collate_end: float
    sent: float
    ready: float
    taken: float
    wait: float
    nbytes: int
    samples: int
    pack: float
    unpack: float
    pin: float = 0.0
    to_device: float | None = None
    worker_cpu: float | None = None
    worker_runq: float | None = None

    @property
    def fetch(self) -> float:
        """Seconds spent fetching samples in the worker."""
        return self.fetch_end - self.fetch_start

    @property
    def collate(self) -> float:
        """Seconds spent in collate_fn."""
        return self.collate_end - self.fetch_end

    @property
    def transport(self) -> float:
        """Seconds from the end of collate until the batch was usable in the main process."""
        return self.ready - self.collate_end

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BatchEvent:
        """Inverse of :meth:`to_dict`."""
        optional = {"pin", "to_device", "worker_cpu", "worker_runq"}
        return cls(
            **{f: data[f] for f in cls.__dataclass_fields__ if f in data or f not in optional}
        )


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One change the adaptive pool made (``num_workers="auto"``, ``prefetch_factor="auto"``).

    Attributes:
        time: When it was decided (NOTE [ Event clock ]).
        setting: ``"num_workers"`` or ``"prefetch_factor"``.
        before: The value before.
        after: The value after (one step away: changes are one at a time).
        reason: Why, with the measured numbers, in a sentence.
        measured: Those numbers by name (``stall``, ``busy_workers``, ``cpu_share``,
            ``idle_cores``, ``batches_per_s``, ``window_s``, ...); which ones depends on
            the rule that fired.

    Example:
        >>> PoolEvent(3.5, "num_workers", 2, 3, "the consumer waited").to_dict()["after"]
        3
    """

    time: float
    setting: str
    before: int
    after: int
    reason: str
    measured: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PoolEvent:
        """Inverse of :meth:`to_dict` (``measured`` may be missing)."""
        return cls(
            time=data["time"],
            setting=data["setting"],
            before=data["before"],
            after=data["after"],
            reason=data["reason"],
            measured=dict(data.get("measured", {})),
        )


class EventLog:
    """A bounded, append-only record of BatchEvents, readable while it grows.

    The loader appends from the thread that iterates it; readers (the stages probe's
    sampler thread) call :meth:`since` with the count they have seen. When more than
    ``capacity`` events were written the oldest are dropped and ``dropped`` says how many.
    The adaptive pool's decisions are kept beside the batches, as :class:`PoolEvent`
    records (:meth:`append_pool`, :meth:`pool_events`), with the same capacity.

    Example:
        >>> log = EventLog(capacity=2)
        >>> log.total, log.dropped
        (0, 0)
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._events: deque[BatchEvent] = deque(maxlen=capacity)
        self._pool: deque[PoolEvent] = deque(maxlen=capacity)
        self._total = 0
        self._lock = threading.Lock()

    def append(self, event: BatchEvent) -> None:
        """Record one event."""
        with self._lock:
            self._events.append(event)
            self._total += 1

    def append_pool(self, event: PoolEvent) -> None:
        """Record one pool decision."""
        with self._lock:
            self._pool.append(event)

    def pool_events(self) -> list[PoolEvent]:
        """The pool decisions held, oldest first."""
        with self._lock:
            return list(self._pool)

    @property
    def total(self) -> int:
        """Events written since the log was made, dropped ones included."""
        return self._total

    @property
    def dropped(self) -> int:
        """Events no longer held because the log was full."""
        return self._total - len(self._events)

    def since(self, count: int) -> list[BatchEvent]:
        """The events written after the first ``count`` (those still held)."""
        with self._lock:
            held_from = self._total - len(self._events)
            skip = max(0, count - held_from)
            if skip >= len(self._events):
                return []
            return list(self._events)[skip:]

    def clear(self) -> None:
        """Forget every event, pool decisions included (the total restarts at zero)."""
        with self._lock:
            self._events.clear()
            self._pool.clear()
            self._total = 0

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[BatchEvent]:
        with self._lock:
            return iter(list(self._events))

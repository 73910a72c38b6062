"""The adaptive pool's side of the iterator: read the machine, apply the controller's decisions.

The controller (_autopool.py) is pure; this module holds what touches the machine: the
default bound of ``num_workers="auto"``, the idle-CPU reading, the pool's state shared
with the DataLoader, and ``PoolResizing``, mixed into ``MultiProcessIter``: it grows the
pool with the same
``_start_worker`` that replaces a dead worker, retires a worker by taking it out of
dispatch until it has answered what it holds, reaps it, and hands back the batches of a
retired worker that died. NOTE [ Adaptive worker pool ] in _autopool.py has the rules;
NOTE [ Loader shutdown ] in _iterator.py covers what is left at the end.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from typing import Any

from probes.events import BatchEvent, EventLog, PoolEvent

from ._autopool import WORKERS, PoolController
from ._pipes import WorkerHandle
from ._shm import BlockMaps

__all__ = ["PoolResizing", "PoolState", "default_max_workers", "idle_core_seconds", "usable_cores"]

_SYS_CHECK_S = 0.1  # how often the adaptive pool reads idle CPU time and available memory
_RELEASE_JOIN_S = 1.0
_MIB = 2**20


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_max_workers(cores: int, available: int | None, worker_bytes: int = 128 * _MIB) -> int:
    """The default bound of ``num_workers="auto"``, before any batch is seen.

    Args:
        cores: Usable cores (:func:`usable_cores`).
        available: Available memory in bytes, or None when unknown.
        worker_bytes: Memory assumed per worker process.

    Returns:
        ``min(4 * cores, 64)``, and no more than half of ``available`` at ``worker_bytes``
        each; at least 1.

    Example:
        >>> default_max_workers(2, None)
        8
        >>> default_max_workers(8, 2 * 2**30)
        8
    """
    bound = min(4 * max(1, cores), 64)
    if available is not None:
        bound = min(bound, int(available * 0.5 // worker_bytes))
    return max(1, bound)


def idle_core_seconds(cpus: set[int] | None = None) -> float | None:
    """Idle plus iowait seconds, summed over ``cpus`` (all when None), since boot.

    The difference of two readings over the time between them is the number of idle
    cores; None where psutil cannot tell.
    """
    import psutil

    try:
        per_cpu = psutil.cpu_times(percpu=True)
    except (OSError, AttributeError):
        return None
    total = 0.0
    for index, times in enumerate(per_cpu):
        if cpus is None or index in cpus:
            total += times.idle + getattr(times, "iowait", 0.0)
    return total


class PoolState:
    """What the loader keeps of its pool between iterators: sizes now, and every decision.

    Shared by the DataLoader and its iterator (which holds no reference to the loader).
    """

    __slots__ = ("history", "prefetch", "workers")

    def __init__(self, workers: int, prefetch: int | None) -> None:
        self.workers = workers
        self.prefetch = prefetch
        self.history: list[PoolEvent] = []


class PoolResizing:
    """Grow and shrink a running MultiProcessIter's pool, one worker at a time.

    The iterator provides: ``_workers`` (handles; list position == worker id; positions
    below ``_num_workers`` are the active pool, the ones above are retiring or gone),
    ``_num_workers``, ``_max_workers``, ``_prefetch``, ``_maps``, ``_events``,
    ``_pool_state``, ``_requeue``, ``_released``, ``_num_yielded``, ``_start_worker``,
    ``_stop_worker``, ``_retire`` (let go of a dead worker), ``_fill`` and
    ``_available_memory``.
    """

    _workers: list[WorkerHandle]
    _num_workers: int
    _max_workers: int
    _prefetch: int
    _maps: BlockMaps
    _events: EventLog
    _pool_state: PoolState
    _requeue: deque[tuple[int, Any]]
    _released: list[WorkerHandle]
    _num_yielded: int
    _auto_workers: bool
    _auto_prefetch: bool
    _pool_hook: Any
    _controller: PoolController | None
    _sys_checked: float
    _cpus: set[int] | None

    def _make_controller(self, loader: Any) -> PoolController | None:
        """The controller of ``num_workers="auto"`` / ``prefetch_factor="auto"``, or None."""
        if not (self._auto_workers or self._auto_prefetch):
            return None
        budget = None
        if self._auto_prefetch:
            budget = int(loader._prefetch_budget or 0.1 * self._available_memory())
        return PoolController(
            workers=self._num_workers,
            max_workers=self._max_workers,
            prefetch=self._prefetch,
            now=time.monotonic(),
            cores=usable_cores(),
            auto_workers=self._auto_workers,
            auto_prefetch=self._auto_prefetch,
            prefetch_budget=budget,
            settings=loader._pool_settings,
        )

    def _control(self, event: BatchEvent) -> None:
        """Feed the adaptive pool one batch and apply what it decides.

        See NOTE [ Adaptive worker pool ] in _autopool.py; called after every batch
        handed out, so the pool changes only between batches, never inside one.
        """
        now = event.taken
        self._reap_released()
        ctl = self._controller
        if ctl is not None:
            ctl.observe(event)
            if now - self._sys_checked >= _SYS_CHECK_S:
                self._sys_checked = now
                ctl.observe_system(now, idle_core_seconds(self._cpus), self._available_memory())
            for change in ctl.decide(now):
                self._record(change)
                if change.setting == WORKERS:
                    self._step_to(change.after)
                else:
                    self._prefetch = self._pool_state.prefetch = change.after
        if self._pool_hook is not None:
            size = self._pool_hook(self._num_yielded)
            if size is not None and size != self._num_workers:
                self._force(size, now, "forced by the pool hook")
        self._fill()

    def _record(self, change: PoolEvent) -> None:
        self._pool_state.history.append(change)
        self._events.append_pool(change)

    def _force(self, size: int, now: float, why: str) -> None:
        """Resize to ``size`` (clamped to [1, max_workers]), one recorded step at a time."""
        size = max(1, min(self._max_workers, size))
        while self._num_workers != size:
            before = self._num_workers
            after = before + (1 if size > before else -1)
            self._record(PoolEvent(now, WORKERS, before, after, why))
            self._step_to(after)
        if self._controller is not None:
            self._controller.set_workers(now, size)

    def _step_to(self, size: int) -> None:
        """Add or retire one worker so the pool has ``size`` (one away from now)."""
        if size > self._num_workers:
            self._grow_pool()
        elif size < self._num_workers:
            self._shrink_pool()
        self._pool_state.workers = self._num_workers

    def _grow_pool(self) -> None:
        """One more worker, with the lowest free id: a retiring one kept, or a new process."""
        worker_id = self._num_workers
        if worker_id < len(self._workers):
            old = self._workers[worker_id]
            if old.retiring and not old.stopping:
                old.retiring, old.active = False, True  # still running: keep it
                self._num_workers += 1
                return
            self._reap_now(old)
            self._workers[worker_id] = self._start_worker(worker_id)
        else:
            self._workers.append(self._start_worker(worker_id))
        self._num_workers += 1

    def _shrink_pool(self) -> None:
        """Retire the highest-id worker: no new batches; it goes once it holds none."""
        self._num_workers -= 1
        worker = self._workers[self._num_workers]
        worker.retiring, worker.active = True, False
        if not worker.outstanding:
            self._release(worker)

    def _release(self, worker: WorkerHandle) -> None:
        """A retired worker holds nothing any more: ask it to exit, reap it later."""
        self._stop_worker(worker)
        self._released.append(worker)

    def _reap_released(self) -> None:
        """Collect released workers that have exited (a zombie lasts one batch at most)."""
        pending = []
        for worker in self._released:
            if worker.process.is_alive():
                pending.append(worker)
                continue
            worker.tasks.close()
            worker.results.close()
            self._maps.drop_worker(worker.pid)
        self._released = pending

    def _reap_now(self, worker: WorkerHandle) -> None:
        """Free a retired worker's slot for a new process: wait for it (or kill it)."""
        worker.process.join(_RELEASE_JOIN_S)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.tasks.close()
        worker.results.close()
        self._maps.drop_worker(worker.pid)
        if worker in self._released:
            self._released.remove(worker)
        worker.process.close()

    def _hand_back(self, worker: WorkerHandle, how: str, seqs: list[int], indices: list) -> None:
        """A retired worker died before finishing: the others take what it held."""
        self._retire(worker)
        warnings.warn(
            f"DataLoader worker (pid {worker.pid}) died after it was retired: {how}; "
            "dispatched those batches to the other workers",
            RuntimeWarning,
            stacklevel=4,
        )
        self._requeue.extend(zip(seqs, indices, strict=True))
        self._fill()

"""The main process's side of each worker's pipes: handles, messages, polling, decoding.

A worker answers every task with one message on its own result pipe: a pickled header
(kind, batch number, epoch, ...; see _worker.py) followed by the batch's pickle, whose
tensors refer to a shared-memory block (NOTE [ Shared-memory block lifetime ] in _shm.py).
"""

from __future__ import annotations

import io
import pickle
import select
import time
from typing import Any

from ..errors import DataLoadingError
from . import _worker as W
from ._shm import BlockMaps, unpack

__all__ = [
    "DEAD",
    "FAILED",
    "LOST",
    "MISSING",
    "Item",
    "Msg",
    "Poller",
    "Pool",
    "WorkerHandle",
    "decode",
]


class WorkerHandle:
    """The main process's handle on one worker process."""

    __slots__ = (
        "active",
        "id",
        "last_answer",
        "outstanding",
        "pid",
        "process",
        "results",
        "retiring",
        "states",
        "stopping",
        "tasks",
    )

    def __init__(self, worker_id: int, process: Any, tasks: Any, results: Any, states: Any):
        self.id = worker_id
        self.process = process
        self.pid: int = process.pid
        self.tasks = tasks
        self.results = results
        self.states = states
        self.active = True  # takes tasks this epoch (False once its iterable stream ended)
        self.outstanding: dict[int, Any] = {}  # seq -> indices sent and not yet answered
        self.stopping = False  # asked to exit: its end is not a crash
        self.retiring = False  # the adaptive pool let it go: no new tasks, finishes its own
        self.last_answer = 0.0  # when its last answer arrived (hang detection)


class Item:
    """A received answer to one task, waiting to be handed out in order."""

    __slots__ = ("copy_events", "data", "error", "header", "pin", "ready", "unpack", "worker")

    def __init__(
        self,
        worker: WorkerHandle,
        header: tuple,
        data: Any,
        error: Any,
        ready: float,
        unpack: float,
        pin: float = 0.0,
        copy_events: Any = None,
    ):
        self.worker = worker
        self.header = header
        self.data = data
        self.error = error
        self.ready = ready
        self.unpack = unpack
        self.pin = pin
        self.copy_events = copy_events


MISSING = object()
DEAD = -1  # pseudo message kinds made on this side
LOST = -2
FAILED = -3


class Msg:
    """One decoded message from a worker (or news of its death)."""

    __slots__ = ("copy_events", "data", "header", "kind", "pin", "ready", "start", "worker")

    def __init__(
        self, kind: int, worker: Any, header: tuple, data: Any, start: float, ready: float
    ) -> None:
        self.kind = kind
        self.worker = worker
        self.header = header
        self.data = data
        self.start = start
        self.ready = ready
        self.pin = 0.0  # seconds spent pinning (pin-memory thread)
        self.copy_events: Any = None  # (start, end) CUDA events of the side-stream copy


class Pool:
    """The worker list and a version that changes whenever the set to watch changes."""

    __slots__ = ("version", "workers")

    def __init__(self) -> None:
        self.workers: list[WorkerHandle] = []
        self.version = 0


class Poller:
    """Waits on every watched worker's result pipe and process sentinel."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._keys: dict[int, tuple[str, WorkerHandle]] = {}
        self._version = -1

    def poll(self, pool: Pool, timeout: float) -> list[tuple[str, WorkerHandle]]:
        if self._version != pool.version:
            self._poll = select.poll()
            self._keys = {}
            for worker in pool.workers:
                if worker.results.closed or worker.stopping:
                    continue
                for kind, fd in (
                    ("results", worker.results.fileno()),
                    ("sentinel", worker.process.sentinel),
                ):
                    self._poll.register(fd, select.POLLIN)
                    self._keys[fd] = (kind, worker)
            self._version = pool.version
        events = self._poll.poll(max(0.0, timeout) * 1000)
        found = [self._keys[fd] for fd, _ in events if fd in self._keys]
        # results first: a worker that answered and then exited is not a crash
        return sorted(found, key=lambda kw: kw[0] != "results")


def decode(worker: WorkerHandle, maps: BlockMaps) -> Msg:
    """Read one message from a worker's pipe and rebuild its batch (zero-copy)."""
    start = time.monotonic()
    f = io.BytesIO(worker.results.recv_bytes())
    header = pickle.load(f)
    kind = header[0]
    data = None
    if kind == W.BATCH:
        block_id = header[3]
        try:
            maps.update(worker.pid, header[4], header[5])
        except OSError as exc:
            worker.process.join(0.5)
            if worker.process.exitcode is None:
                raise DataLoadingError(str(exc), worker_id=worker.id, pid=worker.pid) from exc
            return Msg(LOST, worker, header, None, start, start)
        mapping = maps.get(worker.pid, block_id) if block_id >= 0 else None
        data = unpack(f, mapping, worker.states, block_id)
    return Msg(kind, worker, header, data, start, time.monotonic())

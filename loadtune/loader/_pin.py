"""The pin-memory step: copy batches into page-locked memory, on a thread of its own.

With an accelerator and ``pin_memory=True`` the iterator starts a Receiver: it takes over
the result pipes, rebuilds each batch and pins it while the training step runs, and hands
the main thread decoded messages through a queue (the main thread keeps all bookkeeping).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import torch

from ._pipes import DEAD, FAILED, Msg, Poller, Pool, decode
from ._shm import BlockMaps

__all__ = ["Receiver", "finish_copy", "map_tensors", "pin", "to_device"]


def map_tensors(data: Any, fn: Any, other: Any = None) -> Any:
    """Apply ``fn`` to every tensor of a nested batch (``other`` to other leaves)."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, dict):
        items = {k: map_tensors(v, fn, other) for k, v in data.items()}
        try:
            return type(data)(items)
        except TypeError:
            return items
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(map_tensors(v, fn, other) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(map_tensors(v, fn, other) for v in data)
    return other(data) if other is not None else data


def to_device(data: Any, device: torch.device, stream: Any) -> tuple[Any, tuple]:
    """Start copying a (pinned) batch to ``device`` on ``stream``; return it and its events.

    The copy runs asynchronously; :func:`finish_copy` makes the consumer's stream wait for
    it before the batch is used, so the copy overlaps whatever runs on that stream now.
    """
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(stream):
        start.record(stream)
        moved = map_tensors(data, lambda t: t.to(device, non_blocking=True))
        end.record(stream)
    return moved, (start, end)


def finish_copy(data: Any, events: tuple) -> float | None:
    """Make the current stream wait for a batch's copy; return its duration if known."""
    start, end = events
    current = torch.cuda.current_stream()
    current.wait_event(end)

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.is_cuda:  # allocated on the side stream, used on this one
            t.record_stream(current)
        return t

    map_tensors(data, keep)
    return start.elapsed_time(end) / 1000.0 if end.query() else None


def pin(data: Any, device: str | None = None) -> Any:
    """Copy every tensor of a batch into page-locked memory, keeping the structure.

    Objects of other types that have a ``pin_memory()`` method are pinned by it, as torch
    does for custom batch types.
    """

    def other(leaf: Any) -> Any:
        return leaf.pin_memory() if hasattr(leaf, "pin_memory") else leaf

    return map_tensors(data, lambda t: t.pin_memory(), other)


class Receiver(threading.Thread):
    """The pin-memory thread: receives, rebuilds and pins batches while the consumer works.

    It owns the result pipes and the block mappings while it runs and hands the main
    thread decoded messages through ``queue``; the main thread keeps all bookkeeping. It
    holds no reference to the iterator, so dropping the iterator still shuts it down.
    """

    def __init__(
        self, pool: Pool, maps: BlockMaps, pin_device: str | None, device: Any = None
    ) -> None:
        super().__init__(name="loadtune-pin-memory", daemon=True)
        self.queue: queue.Queue[Msg] = queue.Queue()
        self._pool = pool
        self._maps = maps
        self._pin_device = pin_device
        self._done = threading.Event()
        self._poller = Poller()
        self._device = device
        self._stream = torch.cuda.Stream(device) if device is not None else None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the main thread, which raises it
            self.queue.put(Msg(FAILED, None, (), exc, 0.0, 0.0))

    def _loop(self) -> None:
        if self._device is not None:
            torch.cuda.set_device(self._device)
        elif self._pin_device == "cuda":
            torch.cuda.set_device(torch.cuda.current_device())
        reported: set[int] = set()
        while not self._done.is_set():
            for kind, worker in self._poller.poll(self._pool, 0.1):
                if worker.stopping or worker.pid in reported:
                    continue
                while not worker.results.closed and worker.results.poll(0):
                    try:
                        msg = decode(worker, self._maps)
                        if msg.data is not None:
                            self._prepare(msg)
                        self.queue.put(msg)
                    except (EOFError, ConnectionResetError):
                        break
                if kind == "sentinel" and not worker.stopping:
                    reported.add(worker.pid)
                    self.queue.put(Msg(DEAD, worker, (), None, 0.0, 0.0))

    def _prepare(self, msg: Msg) -> None:
        """Pin the batch, then start its copy to the device on the side stream."""
        if self._pin_device is not None:
            start = time.monotonic()
            msg.data = pin(msg.data, self._pin_device)
            msg.pin = time.monotonic() - start
        if self._device is not None:
            msg.data, msg.copy_events = to_device(msg.data, self._device, self._stream)
        msg.ready = time.monotonic()

    def stop(self) -> None:
        self._done.set()
        if self is not threading.current_thread():
            self.join()

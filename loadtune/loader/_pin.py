"""The pin-memory step: copy batches into page-locked memory, on a thread of its own.

With an accelerator and ``pin_memory=True`` the iterator starts a Receiver: it takes over
the result pipes, rebuilds each batch and pins it while the training step runs, and hands
the main thread decoded messages through a queue (the main thread keeps all bookkeeping).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from ._pipes import DEAD, FAILED, Msg, Poller, Pool, decode
from ._shm import BlockMaps

__all__ = ["Receiver", "pin"]


def pin(data: Any, device: str | None = None) -> Any:
    """Copy every tensor of a batch into page-locked memory, keeping the structure."""
    if isinstance(data, torch.Tensor):
        return data.pin_memory(device) if device else data.pin_memory()
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, dict):
        try:
            out = type(data)({k: pin(v, device) for k, v in data.items()})
        except TypeError:
            return {k: pin(v, device) for k, v in data.items()}
        return out
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(pin(v, device) for v in data))
    if isinstance(data, tuple):
        return tuple(pin(v, device) for v in data)
    if isinstance(data, list):
        return [pin(v, device) for v in data]
    if hasattr(data, "pin_memory"):
        return data.pin_memory()
    return data


class Receiver(threading.Thread):
    """The pin-memory thread: receives, rebuilds and pins batches while the consumer works.

    It owns the result pipes and the block mappings while it runs and hands the main
    thread decoded messages through ``queue``; the main thread keeps all bookkeeping. It
    holds no reference to the iterator, so dropping the iterator still shuts it down.
    """

    def __init__(self, pool: Pool, maps: BlockMaps, pin_device: str | None) -> None:
        super().__init__(name="loadtune-pin-memory", daemon=True)
        self.queue: queue.Queue[Msg] = queue.Queue()
        self._pool = pool
        self._maps = maps
        self._pin_device = pin_device
        self._done = threading.Event()
        self._poller = Poller()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the main thread, which raises it
            self.queue.put(Msg(FAILED, None, (), exc, 0.0, 0.0))

    def _loop(self) -> None:
        if self._pin_device == "cuda":
            torch.cuda.set_device(torch.cuda.current_device())
        reported: set[int] = set()
        while not self._done.is_set():
            for kind, worker in self._poller.poll(self._pool, 0.1):
                if worker.stopping or worker.pid in reported:
                    continue
                while not worker.results.closed and worker.results.poll(0):
                    try:
                        msg = decode(worker, self._maps)
                        if msg.data is not None and self._pin_device is not None:
                            msg.data = pin(msg.data, self._pin_device)
                        self.queue.put(msg)
                    except (EOFError, ConnectionResetError):
                        break
                if kind == "sentinel" and not worker.stopping:
                    reported.add(worker.pid)
                    self.queue.put(Msg(DEAD, worker, (), None, 0.0, 0.0))

    def stop(self) -> None:
        self._done.set()
        if self is not threading.current_thread():
            self.join()

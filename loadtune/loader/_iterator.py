"""The main-process side: dispatch tasks, receive and reorder batches, record events, shut down.

# NOTE [ Loader shutdown ]
Nothing may outlive the loader: no worker process and no shared memory.

* Blocks are anonymous memory files (NOTE [ Shared-memory block lifetime ] in _shm.py):
  the kernel frees them with the last mapping, so they cannot leak whatever dies first.
* Workers are daemonic and are stopped by ``_shutdown``: a ``None`` task asks each to
  return, then ``join`` with a deadline, then SIGTERM, then SIGKILL. ``_shutdown`` runs
  when a non-persistent epoch ends, when an iterator is garbage collected (``break``, an
  exception in the user's loop, ``del loader``), on a worker crash, and at interpreter
  exit for every iterator still alive (persistent workers).
* A worker whose main process dies without any of that (SIGKILL) sees its parent change
  within ``_PARENT_POLL_S`` (0.5) seconds and returns (see _worker.worker_loop).
* SIGINT is ignored in workers: Ctrl-C is the main process's to handle, and a worker
  must not die of it while the main process decides to go on.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from typing import Any

import psutil
import torch
from torch._utils import KeyErrorMessage

from probes.events import BatchEvent, EventLog
from probes.gpu import cuda_unavailable_reason

from ..errors import DataLoadingError, LoaderTimeoutError, WorkerCrashError
from . import _resume
from . import _worker as W
from ._fetch import Empty, make_fetcher
from ._pin import Receiver, finish_copy, map_tensors, pin
from ._pipes import (
    DEAD,
    FAILED,
    LOST,
    MISSING,
    Item,
    Msg,
    Poller,
    Pool,
    WorkerHandle,
    decode,
)
from ._resize import PoolResizing
from ._shm import MAX_BLOCKS, BlockMaps

__all__ = ["MultiProcessIter", "SingleProcessIter"]

_POLL_S = 1.0
_JOIN_S = 2.0
_BALANCED_DEPTH = 2
_MEM_CHECK_S = 0.25


def _plan_affinity(mode: str | None, num_workers: int) -> list[set[int]] | None:
    """The CPU set of each worker for ``numa="spread"|"compact"`` (see probes.numa)."""
    if mode is None:
        return None
    from probes.numa import plan_affinity, read_topology

    return plan_affinity(read_topology(), num_workers, mode)


def _resolve_device(device: Any) -> torch.device | None:
    """The CUDA device batches go to, or None (with a warning when CUDA is missing)."""
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"device should be a CUDA device or None, but got device={device!r}")
    reason = cuda_unavailable_reason()
    if reason is not None:
        warnings.warn(
            f"device={str(device)!r} was asked for but CUDA is not available ({reason}); "
            "batches stay on the CPU",
            RuntimeWarning,
            stacklevel=5,
        )
        return None
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def _preload_numpy_random() -> None:
    """Import numpy.random here once, so forked workers do not each pay ~30 ms to seed it."""
    if "numpy.random" not in sys.modules and importlib.util.find_spec("numpy") is not None:
        importlib.import_module("numpy.random")


def available_memory() -> int:
    """System memory available to new allocations, in bytes (tests replace this)."""
    return psutil.virtual_memory().available


def _affinity_set() -> set[int] | None:
    """The CPUs this process may run on, or None where the platform cannot say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


_live: weakref.WeakSet = weakref.WeakSet()
_atexit_registered = False
_atexit_lock = threading.Lock()


def _shutdown_all_at_exit() -> None:
    for it in list(_live):
        it._shutdown()


def _register(it: MultiProcessIter) -> None:
    global _atexit_registered
    with _atexit_lock:
        _live.add(it)
        if not _atexit_registered:
            atexit.register(_shutdown_all_at_exit)
            _atexit_registered = True


def _accelerator() -> str | None:
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        if not acc.is_available():
            return None
        current = acc.current_accelerator()
        return current.type if current is not None else None
    return "cuda" if torch.cuda.is_available() else None


class _BaseIter:
    """State shared by both iterators, set up in torch's order (see NOTE [ Seed scheme ])."""

    def __init__(self, loader: Any) -> None:
        self._dataset = loader.dataset
        self._iterable = loader._dataset_kind == 1
        self._len_called = loader._IterableDataset_len_called
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._num_workers = loader.num_workers
        if loader.pin_memory and loader.pin_memory_device:
            warnings.warn(
                "pin_memory_device is deprecated, the current accelerator will be used as the "
                f"device,ignore pin_memory_device='{loader.pin_memory_device}'.",
                stacklevel=3,
            )
        device = _accelerator()
        if loader.pin_memory and device is None:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=3,
            )
        self._pin_device = device if loader.pin_memory and device not in (None, "mps") else None
        if loader.pin_memory and device == "mps":
            warnings.warn(
                "'pin_memory' argument is set as true but not supported on MPS now, "
                "device pinned memory won't be used.",
                stacklevel=3,
            )
        self._device = _resolve_device(loader.device)
        if self._device is not None and self._pin_device is None:
            self._pin_device = self._device.type  # a device copy starts from pinned memory
        self._timeout = loader.timeout
        self._collate_fn = loader.collate_fn
        self._persistent = loader.persistent_workers
        self._events: EventLog = loader.events
        self._failures: list = loader.failures
        self._policy = loader._error_policy
        self._validate = loader.validate
        self._fetch_concurrency = loader.fetch_concurrency
        self._per_sample_seed = loader.per_sample_seed
        self._auto_workers = loader.auto_workers
        self._auto_prefetch = loader.auto_prefetch
        self._pool_state = loader._pool_state
        self._finished = False

    def __iter__(self) -> _BaseIter:
        return self

    def __len__(self) -> int:
        return len(self._index_sampler)

    def __getstate__(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot be pickled")

    def _begin_epoch(self, loader: Any, first: bool) -> None:
        """Start an epoch in torch's order, or where a loaded state says (NOTE [ Resume ])."""
        pending = loader._pending_state
        loader._pending_state = None
        if pending is not None:
            _resume.restore_rngs(loader, pending)
            self._epoch = loader._set_epoch(pending["epoch"])
        else:
            self._epoch = loader._next_epoch()
        self._sampler_iter = iter(self._index_sampler)
        if first:
            if pending is not None and pending["base_seed"] is not None:
                self._base_seed = int(pending["base_seed"])
            else:
                self._base_seed = int(
                    torch.empty((), dtype=torch.int64).random_(generator=loader.generator).item()
                )
        self._epoch_start = _resume.capture_rngs(loader)
        self._skip_prefix = pending["done_prefix"] if pending is not None else 0
        self._skip_extra = set(pending["done_extra"]) if pending is not None else set()
        self._ds_states: dict[str, Any] = dict(pending["dataset"]) if pending is not None else {}
        self._num_yielded = self._skip_prefix
        self._len_called = loader._IterableDataset_len_called
        self._finished = False

    def _state(self, done_prefix: int, done_extra: list[int]) -> dict:
        return {
            "format": _resume.FORMAT,
            "epoch": self._epoch,
            "done_prefix": done_prefix,
            "done_extra": done_extra,
            "base_seed": self._base_seed,
            **self._epoch_start,
            "dataset": dict(self._ds_states),
        }

    def _count_yield(self) -> None:
        self._num_yielded += 1
        if self._iterable and self._len_called is not None and self._num_yielded > self._len_called:
            msg = (
                f"Length of IterableDataset {self._dataset} was reported to be "
                f"{self._len_called}(when accessing len(dataloader)), but {self._num_yielded} "
                "samples have been fetched. "
            )
            if self._num_workers > 0:
                msg += (
                    "For multiprocessing data-loading, this could be caused by not properly "
                    "configuring the IterableDataset replica at each worker. Please see "
                    "https://pytorch.org/docs/stable/data.html#torch.utils.data.IterableDataset "
                    "for examples."
                )
            warnings.warn(msg, stacklevel=3)


class SingleProcessIter(_BaseIter):
    """``num_workers=0``: fetch in the calling thread, still recording events."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        if self._timeout != 0:  # torch refuses this combination with exactly this error
            raise AssertionError("_SingleProcessDataLoaderIter requires timeout == 0")
        self._reset(loader, first_iter=True)

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        self._begin_epoch(loader, first_iter)
        state = self._ds_states.get("main")
        if self._iterable and state is not None:
            self._dataset.load_state_dict(state)
        self._fetcher = make_fetcher(
            self._iterable,
            self._dataset,
            self._auto_collation,
            self._collate_fn,
            self._drop_last,
            self._policy,
            validate=self._validate,
            concurrency=self._fetch_concurrency,
            per_sample_seed=self._per_sample_seed,
            base_seed=self._base_seed,
        )
        self._batch = 0
        for _ in range(self._skip_prefix):
            next(self._sampler_iter, None)
            self._batch += 1

    def state_dict(self) -> dict:
        """Where this epoch stands (see NOTE [ Resume ])."""
        if self._iterable and hasattr(self._dataset, "state_dict"):
            self._ds_states["main"] = self._dataset.state_dict()
        return self._state(self._batch, [])

    def __next__(self) -> Any:
        start = time.monotonic()
        fetcher = self._fetcher
        while True:
            try:
                index = next(self._sampler_iter)
            except StopIteration:
                self._finished = True
                raise
            fetcher.epoch, fetcher.batch = self._epoch, self._batch
            try:
                data, count = fetcher.fetch(index)
            except StopIteration:
                self._finished = True
                raise
            except Empty:  # every sample of this batch was skipped: on to the next
                self._failures.extend(fetcher.failures)
                self._batch += 1
                continue
            self._failures.extend(fetcher.failures)
            break
        collate_end = time.monotonic()
        if self._pin_device is not None:
            data = pin(data, self._pin_device)
        pinned = time.monotonic()
        if self._device is not None:  # no thread to overlap with here: a plain copy
            data = map_tensors(data, lambda t: t.to(self._device))
        taken = time.monotonic()
        self._events.append(
            BatchEvent(
                epoch=self._epoch,
                batch=self._batch,
                worker_id=-1,
                pid=os.getpid(),
                dispatch=start,
                fetch_start=start,
                fetch_end=self._fetcher.fetch_end,
                collate_end=collate_end,
                sent=collate_end,
                ready=taken,
                taken=taken,
                wait=taken - start,
                nbytes=0,
                samples=count,
                pack=0.0,
                unpack=0.0,
                pin=pinned - collate_end,
                to_device=taken - pinned if self._device is not None else None,
            )
        )
        self._batch += 1
        self._count_yield()
        return data


class MultiProcessIter(PoolResizing, _BaseIter):
    """Worker processes, per-worker pipes, a prefetch window of prefetch_factor x num_workers."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        self._prefetch = loader.prefetch_factor
        self._in_order = loader.in_order
        self._balanced = loader.dispatch == "balanced"
        self._on_death = loader.on_worker_death
        self._max_restarts = loader.max_worker_restarts
        self._restarts = 0
        self._min_available = loader._min_available_bytes()
        self._mem_checked = -math.inf
        self._mem_low = False
        self._mem_warned = False
        ctx = loader.multiprocessing_context
        self._ctx = ctx if ctx is not None else mp.get_context()
        self._worker_init_fn = loader.worker_init_fn
        self._maps = BlockMaps()
        self._workers: list[WorkerHandle] = []
        self._pool = Pool()
        self._workers = self._pool.workers
        self._poller = Poller()
        self._receiver: Receiver | None = None
        # With "auto" worker ids run up to max_workers, and workers are told that bound
        # (NOTE [ Adaptive worker pool ] in _autopool.py).
        self._max_workers = loader.max_workers if self._auto_workers else self._num_workers
        self._affinity = _plan_affinity(loader.numa, self._max_workers)
        self._released: list[WorkerHandle] = []  # retired, asked to exit, not yet reaped
        self._requeue: deque[tuple[int, Any]] = deque()  # a dead retired worker's batches
        self._pool_hook = loader._pool_hook  # tests: force pool sizes
        self._sys_checked = -math.inf
        self._cpus = _affinity_set()
        self._controller = self._make_controller(loader)
        self._shut = False  # from here on, _shutdown has everything it needs
        _preload_numpy_random()
        self._begin_epoch(loader, first=True)
        _register(self)
        try:
            for worker_id in range(self._num_workers):
                self._workers.append(self._start_worker(worker_id))
            if self._pin_device is not None or loader._pin_thread:
                self._receiver = Receiver(self._pool, self._maps, self._pin_device, self._device)
                self._receiver.start()
        except BaseException:
            self._shutdown()
            raise
        self._reset_dispatch(first=True)

    # ------------------------------------------------------------------ workers

    def _start_worker(self, worker_id: int) -> WorkerHandle:
        ctx = self._ctx
        tasks_r, tasks_w = ctx.Pipe(duplex=False)
        results_r, results_w = ctx.Pipe(duplex=False)
        states = ctx.RawArray("b", MAX_BLOCKS)
        spec = W.WorkerSpec(
            worker_id=worker_id,
            num_workers=self._max_workers,
            iterable=self._iterable,
            dataset=self._dataset,
            auto_collation=self._auto_collation,
            collate_fn=self._collate_fn,
            drop_last=self._drop_last,
            base_seed=self._base_seed,
            worker_init_fn=self._worker_init_fn,
            per_batch_seed=self._balanced,
            keep_blocks=1,
            policy=self._policy,
            dataset_state=self._ds_states.get(str(worker_id)) if self._iterable else None,
            cpus=tuple(sorted(self._affinity[worker_id])) if self._affinity else None,
            validate=self._validate,
            fetch_concurrency=self._fetch_concurrency,
            per_sample_seed=self._per_sample_seed,
        )
        process = ctx.Process(
            target=W.worker_loop,
            args=(spec, tasks_r, results_w, states),
            name=f"loadtune-worker-{worker_id}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            tasks_r.close()
            results_w.close()
        self._pool.version += 1
        return WorkerHandle(worker_id, process, tasks_w, results_r, states)

    # ------------------------------------------------------------------ epochs

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        """A new epoch on the same (persistent) workers."""
        self._begin_epoch(loader, first_iter)
        if self._auto_workers and self._pool_state.workers != self._num_workers:
            # load_state_dict between epochs: go on with the size the saved run had
            self._force(self._pool_state.workers, time.monotonic(), "the loaded state's size")
        self._reset_dispatch(first_iter)

    def _reset_dispatch(self, first: bool) -> None:
        skip = self._skip_prefix
        self._sent = skip  # next sequence number to dispatch
        self._rcvd = skip  # next sequence number to hand out (in order)
        self._done_prefix = skip  # every batch number below it is handed out or dropped
        self._done: set[int] = set()  # handed out or dropped at or above _done_prefix
        self._window = 0  # dispatched and not yet handed out or dropped
        self._ready: dict[int, Item] = {}
        self._arrivals: deque[int] = deque()
        self._dropped: set[int] = set()
        self._dispatched_at: dict[int, float] = {}
        self._requeue = deque()
        self._rr = skip % self._num_workers
        self._sampler_done = False
        for _ in range(skip):  # resume: these batches were handed out before the state was taken
            if next(self._sampler_iter, MISSING) is MISSING:
                self._sampler_done = True
                break
        for worker in self._workers:
            worker.active = not worker.retiring
        if not first:
            # Answers still in flight belong to the last epoch: _accept drops them by their
            # epoch field; the ack says a worker has nothing older left to send.
            self._acks: set[int] = set()
            live = [w for w in self._workers if not w.stopping]
            for worker in live:
                worker.outstanding.clear()
                self._send(worker, (W.RESET, self._epoch))
            while len(self._acks) < len(live):
                self._pump(_POLL_S)
            for worker in live:
                if worker.retiring and not worker.stopping:
                    self._release(worker)
        self._fill()

    def _mark_done(self, seq: int) -> None:
        self._done.add(seq)
        while self._done_prefix in self._done:
            self._done.discard(self._done_prefix)
            self._done_prefix += 1

    def state_dict(self) -> dict:
        """Where this epoch stands (see NOTE [ Resume ]), and the adaptive pool's sizes."""
        state = self._state(self._done_prefix, sorted(self._done))
        if self._auto_workers or self._auto_prefetch:
            state["pool"] = {"num_workers": self._num_workers, "prefetch_factor": self._prefetch}
        return state

    # ------------------------------------------------------------------ dispatch

    def _choose_worker(self) -> WorkerHandle | None:
        active = [w for w in self._workers if w.active]
        if not active:
            return None
        if self._balanced:
            best = min(active, key=lambda w: (len(w.outstanding), w.id))
            return best if len(best.outstanding) < _BALANCED_DEPTH else None
        limit = None if self._in_order else (self._prefetch * self._num_workers) // len(active)
        n = self._num_workers
        for step in range(n):
            worker = self._workers[(self._rr + step) % n]
            if worker.active and (limit is None or len(worker.outstanding) < limit):
                self._rr = (self._rr + step + 1) % n
                return worker
        return None

    def _available_memory(self) -> int:
        return available_memory()  # looked up here at each call, so tests can replace it

    def _window_cap(self) -> int:
        """Batches allowed in flight: prefetch_factor x num_workers, or one per worker while
        available memory is below ``min_available_memory`` (checked every quarter second;
        back to full once it is 25% above the threshold, so the cap does not flap)."""
        full = self._prefetch * self._num_workers
        if self._min_available is None:
            return full
        now = time.monotonic()
        if now - self._mem_checked >= _MEM_CHECK_S:
            self._mem_checked = now
            available = available_memory()
            if not self._mem_low and available < self._min_available:
                self._mem_low = True
                if not self._mem_warned:
                    self._mem_warned = True
                    warnings.warn(
                        f"available memory {available / 2**20:.0f} MiB is below "
                        f"min_available_memory ({self._min_available / 2**20:.0f} MiB): lowering "
                        f"the batches in flight from {full} to {self._num_workers} until it "
                        "recovers",
                        RuntimeWarning,
                        stacklevel=5,
                    )
            elif self._mem_low and available > 1.25 * self._min_available:
                self._mem_low = False
        return self._num_workers if self._mem_low else full

    def _fill(self) -> None:
        """Dispatch tasks until the prefetch window is full or the sampler is done."""
        while self._requeue:  # already counted in the window: they go first, in order
            worker = self._choose_worker()
            if worker is None:
                return
            seq, index = self._requeue.popleft()
            worker.outstanding[seq] = index
            self._dispatched_at[seq] = time.monotonic()
            self._send(worker, (W.TASK, seq, self._epoch, index))
        max_tasks = self._window_cap()
        while not self._sampler_done and self._window < max_tasks:
            worker = self._choose_worker()
            if worker is None:
                return
            try:
                index = next(self._sampler_iter)
            except StopIteration:
                self._sampler_done = True
                return
            seq = self._sent
            self._sent += 1
            if seq in self._skip_extra:  # resume: handed out before the state was taken
                self._dropped.add(seq)
                self._mark_done(seq)
                continue
            self._window += 1
            worker.outstanding[seq] = index
            self._dispatched_at[seq] = time.monotonic()
            self._send(worker, (W.TASK, seq, self._epoch, index))

    def _send(self, worker: WorkerHandle, msg: Any) -> None:
        try:
            worker.tasks.send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._crash(worker)

    # ------------------------------------------------------------------ receiving

    def _pump(self, timeout: float) -> None:
        """Take in whatever arrives within ``timeout`` seconds."""
        if self._receiver is not None:
            try:
                msgs = [self._receiver.queue.get(timeout=timeout)]
            except queue.Empty:
                return
            while not self._receiver.queue.empty():
                msgs.append(self._receiver.queue.get_nowait())
            for msg in msgs:
                self._accept(msg)
            return
        for kind, worker in self._poller.poll(self._pool, timeout):
            if worker.stopping:
                continue
            self._receive_all(worker)
            if kind == "sentinel" and not worker.stopping:
                self._crash(worker)

    def _receive_all(self, worker: WorkerHandle) -> None:
        """Take every message waiting in a worker's pipe (a dying worker's last words count)."""
        while not worker.results.closed and worker.results.poll(0):
            try:
                msg = decode(worker, self._maps)
            except (EOFError, ConnectionResetError):
                self._crash(worker)  # restarts it (or raises): this pipe is done
                return
            self._accept(msg)

    def _accept(self, msg: Msg) -> None:
        kind, worker, header = msg.kind, msg.worker, msg.header
        if kind == FAILED:
            self._shutdown()
            raise msg.data
        if kind == DEAD:
            if not worker.stopping:
                self._crash(worker)
            return
        if kind == LOST:
            return  # it died holding the block: the batch stays outstanding
        if header[2] != self._epoch:
            return  # a persistent worker's answer to an epoch already over
        if kind == W.RESET_ACK:
            self._acks.add(worker.id)
            return
        if kind == W.STOP:
            self._stream_ended(worker, header[1])
            return
        seq = header[1]
        if worker.outstanding.pop(seq, MISSING) is MISSING:
            return  # not this worker's task (any more): a restarted worker's late answer
        worker.last_answer = msg.ready
        if worker.retiring and not worker.outstanding:
            self._release(worker)  # its last batch is in: it may go
        if kind == W.SKIPPED:  # every sample failed and was skipped: no batch
            self._failures.extend(header[3])
            self._dropped.add(seq)
            self._mark_done(seq)
            self._dispatched_at.pop(seq, None)
            self._window -= 1
            self._fill()
            return
        if kind == W.BATCH:
            self._failures.extend(header[12])
        error = header[3] if kind == W.ERROR else None
        self._ready[seq] = Item(
            worker,
            header,
            msg.data,
            error,
            msg.ready,
            msg.ready - msg.start - msg.pin,
            msg.pin,
            msg.copy_events,
        )
        self._arrivals.append(seq)
        if self._balanced:
            self._fill()  # the worker that answered may take the next task now

    def _stream_ended(self, worker: WorkerHandle, seq: int) -> None:
        """An iterable worker's stream is over: its pending tasks will never be answered."""
        worker.active = False
        for pending in worker.outstanding:
            self._dropped.add(pending)
            self._mark_done(pending)
            self._dispatched_at.pop(pending, None)
            self._window -= 1
        worker.outstanding.clear()
        if not self._persistent:
            self._stop_worker(worker)
        self._fill()

    def _stop_worker(self, worker: WorkerHandle) -> None:
        """Ask one worker to exit; it leaves the poll set."""
        worker.stopping = True
        self._pool.version += 1
        try:
            worker.tasks.send(None)
        except OSError:
            pass  # it is gone already, which is what was asked

    # ------------------------------------------------------------------ handing out

    def __next__(self) -> Any:
        start = time.monotonic()
        item, seq = self._next_item(start)
        taken = time.monotonic()
        self._window -= 1
        self._fill()
        if item.error is not None:
            self._raise(item.error)
        h = item.header
        to_device = finish_copy(item.data, item.copy_events) if item.copy_events else None
        self._mark_done(seq)
        if h[13] is not None:
            self._ds_states[str(item.worker.id)] = h[13]
        event = BatchEvent(
            epoch=self._epoch,
            batch=seq,
            worker_id=item.worker.id,
            pid=item.worker.pid,
            dispatch=self._dispatched_at.pop(seq, h[6]),
            fetch_start=h[6],
            fetch_end=h[7],
            collate_end=h[8],
            sent=h[9],
            ready=item.ready,
            taken=taken,
            wait=taken - start,
            nbytes=h[10],
            samples=h[11],
            pack=h[9] - h[8],
            unpack=item.unpack,
            pin=item.pin,
            to_device=to_device,
            worker_cpu=h[14],
            worker_runq=h[15],
        )
        self._events.append(event)
        self._count_yield()
        if self._controller is not None or self._pool_hook is not None or self._released:
            self._control(event)
        return item.data

    def _next_item(self, start: float) -> tuple[Item, int]:
        deadline = start + self._timeout if self._timeout > 0 else math.inf
        while True:
            if self._in_order:
                while self._rcvd in self._dropped:
                    self._dropped.discard(self._rcvd)
                    self._rcvd += 1
                item = self._ready.pop(self._rcvd, None)
                if item is not None:
                    seq = self._rcvd
                    self._rcvd += 1
                    return item, seq
            else:
                while self._arrivals:
                    seq = self._arrivals.popleft()
                    item = self._ready.pop(seq, None)
                    if item is not None:
                        return item, seq
            if self._window == 0:
                self._fill()
                if self._window == 0:
                    self._end_epoch()
            now = time.monotonic()
            if self._timeout > 0:
                self._check_hung(now)  # the more precise report goes first
            if now >= deadline:
                self._timed_out()
            if self._shut:
                raise StopIteration
            self._pump(min(_POLL_S, deadline - now, self._timeout or _POLL_S))

    def _end_epoch(self) -> None:
        self._finished = True
        if not self._persistent:
            self._shutdown()
        raise StopIteration

    def _raise(self, info: W.ErrorInfo) -> None:
        msg = f"Caught {info.type_name} {info.where()}.\nOriginal {info.traceback}"
        exc_type = info.exc_type
        if exc_type is KeyError:
            exc: BaseException = KeyError(KeyErrorMessage(msg))  # readable str(), as torch does
        else:
            try:
                exc = exc_type(msg) if exc_type is not None else None
            except Exception:
                exc = None
            if exc is None:
                exc = DataLoadingError(msg)
        if isinstance(exc, DataLoadingError):  # ours: say where in attributes too
            exc.index, exc.worker_id, exc.pid = info.index, info.worker_id, info.pid
        raise exc

    def _check_hung(self, now: float) -> None:
        """A worker that has held one batch for longer than ``timeout`` is hung.

        It started that batch no earlier than the batch's dispatch and no earlier than the
        arrival of its previous answer; this catches it even while other workers produce.
        """
        for worker in self._workers:
            if not worker.outstanding or worker.stopping:
                continue
            seq = min(worker.outstanding)
            started = max(self._dispatched_at.get(seq, now), worker.last_answer)
            if now - started > self._timeout:
                raise LoaderTimeoutError(
                    f"DataLoader timed out after {self._timeout} seconds: worker {worker.id} "
                    f"(pid {worker.pid}) has held batch {seq} (dataset indices "
                    f"{worker.outstanding[seq]!r}) for {now - started:.1f} s",
                    index=worker.outstanding[seq],
                    worker_id=worker.id,
                    pid=worker.pid,
                )

    def _timed_out(self) -> None:
        held = [
            f"worker {w.id} (pid {w.pid}) holds batches {sorted(w.outstanding)}"
            for w in self._workers
            if w.outstanding
        ]
        detail = ("; " + "; ".join(held)) if held else ""
        raise LoaderTimeoutError(f"DataLoader timed out after {self._timeout} seconds{detail}")

    def _crash(self, worker: WorkerHandle) -> None:
        """A worker died: replace it and dispatch its batches again, or raise."""
        worker.process.join(0.1)
        code = worker.process.exitcode
        seqs = sorted(worker.outstanding)
        indices = [worker.outstanding[s] for s in seqs]
        how = f"worker {worker.id} {_how(code)} while holding batches {seqs}"
        refuse = None
        if self._on_death == "raise":
            refuse = ""
        elif self._iterable:
            refuse = " (an IterableDataset's stream cannot be replayed, so it is not restarted)"
        elif worker.retiring:
            self._hand_back(worker, how, seqs, indices)
            return
        elif self._restarts >= self._max_restarts:
            refuse = f" (max_worker_restarts={self._max_restarts} reached)"
        if refuse is not None:
            err = WorkerCrashError(
                f"DataLoader worker (pid(s) {worker.pid}) exited unexpectedly: {how}{refuse}",
                worker_id=worker.id,
                pid=worker.pid,
                exitcode=code,
                indices=indices,
            )
            self._shutdown()
            raise err
        self._restarts += 1
        self._retire(worker)
        replacement = self._start_worker(worker.id)
        self._workers[worker.id] = replacement
        warnings.warn(
            f"DataLoader worker (pid {worker.pid}) died: {how}; restarted it as pid "
            f"{replacement.pid} and dispatched those batches again",
            RuntimeWarning,
            stacklevel=4,
        )
        for seq, index in zip(seqs, indices, strict=True):
            replacement.outstanding[seq] = index
            self._send(replacement, (W.TASK, seq, self._epoch, index))

    def _retire(self, worker: WorkerHandle) -> None:
        """Let go of a dead worker: its pipes, its process and its block mappings."""
        worker.stopping = True
        worker.outstanding.clear()
        self._pool.version += 1
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.tasks.close()
        worker.results.close()
        self._maps.drop_worker(worker.pid)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        """Stop every worker; see NOTE [ Loader shutdown ]. Idempotent."""
        if getattr(self, "_shut", True):  # done already, or __init__ failed before workers
            return
        self._shut = True
        if self._receiver is not None:
            self._receiver.stop()
        workers = self._workers
        for worker in workers:
            if not worker.stopping:
                self._stop_worker(worker)
        deadline = time.monotonic() + _JOIN_S
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(0.5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.tasks.close()
            worker.results.close()
            worker.process.close()
        self._maps.clear()
        _live.discard(self)

    def __del__(self) -> None:
        if not sys.is_finalizing():
            self._shutdown()


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"

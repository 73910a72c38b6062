"""The worker side: the loop that fetches, collates and packs batches, and the seed scheme.

Everything here is top level so that it pickles under ``spawn`` and ``forkserver``.
The main process talks to each worker over two one-way pipes of its own (tasks in,
results out): a worker that dies can corrupt only its own pipes, never another's.

# NOTE [ Seed scheme ]
A worker is seeded exactly as torch seeds it: ``seed = base_seed + worker_id`` for
``random`` and torch, numpy's legacy global RNG from torch's ``_generate_state(base_seed,
worker_id)``, and ``get_worker_info().seed == seed``. ``base_seed`` is drawn from the
loader's generator (or torch's global RNG) when the iterator is made, before the sampler
draws its own seed, as torch does. With ``dispatch="round_robin"`` (the default) batch k
goes to worker ``k % num_workers`` as in torch, so random augmentations give the same
samples as torch's loader. With ``dispatch="balanced"`` a batch goes to whichever worker is
free, so each batch instead reseeds the three RNGs from ``(base_seed, epoch, batch
number)``: the samples are then reproducible whatever worker runs them, but they are not
torch's. ``num_workers="auto"`` always dispatches this way, so a batch's samples do not
depend on how many workers the pool had when it ran (NOTE [ Adaptive worker pool ] in
_autopool.py); there ``get_worker_info().num_workers`` is ``max_workers``.

With ``fetch_concurrency`` k > 1 a worker's samples run in k threads (or interleave on one
event loop) that share these process-global RNGs, so which sample gets which draw depends
on timing: neither scheme above is reproducible then. ``per_sample_seed=True`` seeds every
sample from (base seed, epoch, dataset index) instead, which is reproducible whatever k, the
number of workers and the dispatch (NOTE [ Per-sample seeds ] in _fetch.py).

With k > 1 a worker also reads its next task while the slowest samples of the current one
are still out (``_serve_concurrently``); it still answers its tasks in the order it got them.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

import torch
from torch.utils.data._utils import worker as _torch_worker

from ._fetch import Empty, ErrorPolicy, make_fetcher
from ._shm import WorkerBlocks

__all__ = ["ErrorInfo", "WorkerSpec", "batch_seed", "cpu_clock", "seed_worker", "worker_loop"]

# Message kinds, worker -> main (first element of the header).
BATCH, ERROR, STOP, RESET_ACK, SKIPPED = 0, 1, 2, 3, 4
# Task kinds, main -> worker.
TASK, RESET = 0, 1

_PARENT_POLL_S = 0.5
_EPOCH_MIX = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, in one picklable value."""

    worker_id: int
    num_workers: int
    iterable: bool
    dataset: Any
    auto_collation: bool
    collate_fn: Any
    drop_last: bool
    base_seed: int
    worker_init_fn: Any
    per_batch_seed: bool
    keep_blocks: int
    policy: ErrorPolicy
    dataset_state: Any = None  # resume: an IterableDataset's state to load before iter()
    cpus: tuple[int, ...] | None = None  # numa="spread"|"compact": the CPUs to run on
    validate: Any = None  # called on every sample; what it raises follows the policy
    fetch_concurrency: int = 1  # samples fetched at once (map-style datasets)
    per_sample_seed: bool = False  # see NOTE [ Per-sample seeds ] in _fetch.py


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception from a worker, with where it happened, ready to cross the pipe."""

    exc_type: type | None
    type_name: str
    message: str
    traceback: str
    worker_id: int
    pid: int
    index: Any

    @classmethod
    def capture(cls, exc: BaseException, worker_id: int, index: Any) -> ErrorInfo:
        exc_type: type | None = type(exc)
        try:
            pickle.dumps(exc_type)
        except Exception:
            exc_type = None
        return cls(
            exc_type=exc_type,
            type_name=type(exc).__name__,
            message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            worker_id=worker_id,
            pid=os.getpid(),
            index=index,
        )

    def where(self) -> str:
        where = f"in DataLoader worker process {self.worker_id} (pid {self.pid})"
        if self.index is not None:
            where += f" while loading dataset index {self.index!r}"
        return where


def seed_worker(base_seed: int, worker_id: int) -> int:
    """Seed ``random``, torch and numpy as torch seeds a worker; return the seed."""
    seed = base_seed + worker_id
    random.seed(seed)
    torch.manual_seed(seed)
    np = sys.modules.get("numpy")
    if np is None:
        try:
            import numpy as np
        except ImportError:
            return seed
    np.random.seed(_torch_worker._generate_state(base_seed, worker_id))
    return seed


def batch_seed(base_seed: int, epoch: int, batch: int) -> list[int]:
    """The four 32-bit words that seed one batch under ``dispatch="balanced"``."""
    mixed = (base_seed + epoch * _EPOCH_MIX) & _MASK64
    return _torch_worker._generate_state(mixed, batch)


def _seed_batch(base_seed: int, epoch: int, batch: int) -> None:
    words = batch_seed(base_seed, epoch, batch)
    seed = words[0] | (words[1] << 32)
    random.seed(seed)
    torch.manual_seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(words)


_schedstat: tuple[int, int] | None = None  # (pid, fd) of this process's /proc/self/schedstat


def cpu_clock() -> tuple[float, float | None]:
    """(CPU seconds of this process, seconds its main thread waited for a CPU) so far.

    The second is None where ``/proc/self/schedstat`` is missing (not Linux, or no
    scheduler statistics); it is read with one ``pread`` on a descriptor kept open.
    """
    global _schedstat
    runq = None
    try:
        pid = os.getpid()
        if _schedstat is None or _schedstat[0] != pid:  # first call, or a forked child
            _schedstat = (pid, os.open("/proc/self/schedstat", os.O_RDONLY | os.O_CLOEXEC))
        runq = int(os.pread(_schedstat[1], 128, 0).split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return time.process_time(), runq


def _send(conn: Connection, header: tuple, payload: bytes = b"") -> None:
    conn.send_bytes(pickle.dumps(header, pickle.HIGHEST_PROTOCOL) + payload)


def worker_loop(spec: WorkerSpec, tasks: Connection, results: Connection, states: Any) -> None:
    """Serve tasks until told to stop or until the main process is gone.

    See NOTE [ Loader shutdown ] in _iterator.py for how this loop ends.
    """
    # Ctrl-C goes to the whole process group; the main process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.cpus is not None:
        os.sched_setaffinity(0, spec.cpus)
    torch.set_num_threads(1)
    seed = seed_worker(spec.base_seed, spec.worker_id)
    _torch_worker._worker_info = _torch_worker.WorkerInfo(
        id=spec.worker_id, num_workers=spec.num_workers, seed=seed, dataset=spec.dataset
    )
    parent = os.getppid()
    init_error: ErrorInfo | None = None
    fetcher = None

    def new_fetcher() -> Any:
        return make_fetcher(
            spec.iterable,
            spec.dataset,
            spec.auto_collation,
            spec.collate_fn,
            spec.drop_last,
            spec.policy,
            spec.worker_id,
            spec.validate,
            concurrency=spec.fetch_concurrency,
            per_sample_seed=spec.per_sample_seed,
            base_seed=spec.base_seed,
        )

    try:
        if spec.worker_init_fn is not None:
            spec.worker_init_fn(spec.worker_id)
        if spec.dataset_state is not None:
            spec.dataset.load_state_dict(spec.dataset_state)
        fetcher = new_fetcher()
    except Exception as exc:
        init_error = ErrorInfo.capture(exc, spec.worker_id, None)
    blocks = WorkerBlocks(states, keep=spec.keep_blocks)
    if spec.fetch_concurrency > 1 and init_error is None and not spec.iterable:
        try:
            _serve_concurrently(spec, fetcher, new_fetcher, blocks, tasks, results, parent)
        finally:
            blocks.close()
        return
    ended = False
    try:
        while True:
            if not tasks.poll(_PARENT_POLL_S):
                if os.getppid() != parent:
                    return  # the main process is gone
                continue
            try:
                msg = tasks.recv()
            except EOFError:
                return
            if msg is None:
                return
            if msg[0] == RESET:
                ended = False
                if init_error is None:
                    try:
                        fetcher = new_fetcher()
                    except Exception as exc:
                        init_error = ErrorInfo.capture(exc, spec.worker_id, None)
                _send(results, (RESET_ACK, -1, msg[1]))
                continue
            _, seq, epoch, index = msg
            if ended:
                continue  # the stream is over; the main process knows and skips this task
            if init_error is not None:
                _send(results, (ERROR, seq, epoch, init_error))
                continue
            if spec.per_batch_seed:
                _seed_batch(spec.base_seed, epoch, seq)
            ended = _serve(spec, fetcher, blocks, results, seq, epoch, index)
    finally:
        blocks.close()


def _serve(
    spec: WorkerSpec,
    fetcher: Any,
    blocks: WorkerBlocks,
    results: Connection,
    seq: int,
    epoch: int,
    index: Any,
    pending: Any = None,
    fetch_start: float | None = None,
) -> bool:
    """Fetch, collate, pack and send one batch. Returns True when the stream has ended.

    With ``pending`` (a batch the fetcher has started, begun at ``fetch_start``), wait for
    it and collate it instead of fetching.
    """
    if fetch_start is None:
        fetch_start = time.monotonic()
    arena = blocks.arena()
    fetcher.epoch, fetcher.batch = epoch, seq
    try:
        if pending is None:
            batch, count = fetcher.fetch(index, arena)
        else:
            batch, count = fetcher.finish(pending, arena)
    except Empty:
        blocks.release(arena.block)
        _send(results, (SKIPPED, seq, epoch, tuple(fetcher.failures)))
        return False
    except StopIteration:
        blocks.release(arena.block)
        if spec.iterable:
            _send(results, (STOP, seq, epoch))
            return True
        _send(results, (ERROR, seq, epoch, _capture_stop(spec, fetcher)))
        return False
    except Exception as exc:
        blocks.release(arena.block)
        _send(
            results,
            (ERROR, seq, epoch, ErrorInfo.capture(exc, spec.worker_id, fetcher.current_index)),
        )
        return False
    collate_end = time.monotonic()
    try:
        packed = blocks.pack(batch, arena)
    except Exception as exc:
        blocks.release(arena.block)
        _send(results, (ERROR, seq, epoch, ErrorInfo.capture(exc, spec.worker_id, None)))
        return False
    del batch
    sent = time.monotonic()
    header = (
        BATCH,
        seq,
        epoch,
        packed.block_id,
        packed.new_blocks,
        packed.retired,
        fetch_start,
        fetcher.fetch_end,
        collate_end,
        sent,
        packed.nbytes,
        count,
        tuple(fetcher.failures),
        spec.dataset.state_dict()
        if spec.iterable and hasattr(spec.dataset, "state_dict")
        else None,
        *cpu_clock(),  # CPU and run-queue time so far (NOTE [ Adaptive worker pool ])
    )
    _send(results, header, packed.payload)
    return False


def _serve_concurrently(
    spec: WorkerSpec,
    fetcher: Any,
    new_fetcher: Callable[[], Any],
    blocks: WorkerBlocks,
    tasks: Connection,
    results: Connection,
    parent: int,
) -> None:
    """The loop of ``worker_loop`` for fetch_concurrency k > 1 (map-style datasets).

    The fetcher runs up to k samples at once. Whenever fewer than k of its samples are
    unfinished, the worker takes its next task from the pipe (the main process keeps
    ``prefetch_factor`` tasks queued there) and starts it, so the slowest samples of one
    batch overlap the next batch's. Batches are collated, packed and sent from this thread
    only, oldest first: in the order their tasks arrived.
    """
    # Pool threads say "a batch is done or a slot is free" by writing a byte here, so one
    # wait covers both the task pipe and the fetches. The fds stay open until the process
    # exits: a late write from a straggling thread must never land in a reused fd.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def wake() -> None:
        try:
            os.write(wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake already

    fetcher.on_progress = wake
    limit = spec.fetch_concurrency
    inflight: deque[tuple[int, int, Any, float]] = deque()  # (seq, epoch, pending, start)
    init_error: ErrorInfo | None = None
    try:
        while True:
            while inflight and inflight[0][2].done():
                seq, epoch, pending, started = inflight.popleft()
                _serve(spec, fetcher, blocks, results, seq, epoch, pending.index, pending, started)
            take = not inflight or fetcher.in_flight < limit
            ready = wait_ready(
                ([tasks] if take else []) + ([wake_r] if inflight else []), _PARENT_POLL_S
            )
            if wake_r in ready:
                _drain(wake_r)
            if not ready:
                if os.getppid() != parent:
                    return  # the main process is gone
                continue
            if tasks not in ready:
                continue
            try:
                msg = tasks.recv()
            except EOFError:
                return
            if msg is None:
                return
            if msg[0] == RESET:
                # what is in flight belongs to the epoch that ended: the main process drops
                # those answers, so drop them here without waiting for them
                for _, _, pending, _ in inflight:
                    pending.abandon()
                inflight.clear()
                fetcher.close()
                try:
                    fetcher = new_fetcher()
                    fetcher.on_progress = wake
                except Exception as exc:
                    init_error = ErrorInfo.capture(exc, spec.worker_id, None)
                _send(results, (RESET_ACK, -1, msg[1]))
                continue
            _, seq, epoch, index = msg
            if init_error is not None:
                _send(results, (ERROR, seq, epoch, init_error))
                continue
            started = time.monotonic()
            fetcher.epoch, fetcher.batch = epoch, seq
            inflight.append((seq, epoch, fetcher.start(index), started))
    finally:
        for _, _, pending, _ in inflight:
            pending.abandon()
        if fetcher is not None:
            fetcher.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _capture_stop(spec: WorkerSpec, fetcher: Any) -> ErrorInfo:
    try:
        raise StopIteration
    except StopIteration as exc:
        return ErrorInfo.capture(exc, spec.worker_id, fetcher.current_index)

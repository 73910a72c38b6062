"""Fetchers: turn one task (a list of indices) into one collated batch, in a worker or inline.

The map and iterable fetchers follow torch's semantics exactly (``__getitems__`` when a
dataset has it, drop_last on the last short batch of an iterable stream). When collate_fn
is torch's ``default_collate`` and a shared-memory arena is at hand, tensors are stacked
straight into the arena (see NOTE [ Shared-memory block lifetime ] in _shm.py) instead of
into the fresh shared segment torch's collate would make in a worker.

A map fetcher with ``concurrency`` k > 1 (the loader's ``fetch_concurrency``) fetches up to
k samples at once: :meth:`MapFetcher.start` hands a batch's samples to a thread pool (or,
for a dataset with ``async def aget``, to one asyncio event loop) and returns a
:class:`PendingBatch`; :meth:`MapFetcher.finish` waits for it and collates. The worker
starts its next batch while the slowest samples of the current one are still out (see
_worker.py). Everything a sample's fetch produces (its value, its SampleFailure records,
its error) stays in that sample's :class:`_Outcome` until ``finish`` puts them in sampler
order, so the batch, its failures and its error are those of k = 1. ``per_sample_seed``
seeds each sample's RNGs: see NOTE [ Per-sample seeds ].
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import operator
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch.utils.data import default_collate
from torch.utils.data._utils import collate as _torch_collate

from ._shm import Arena

__all__ = [
    "Empty",
    "ErrorPolicy",
    "IterableFetcher",
    "MapFetcher",
    "PendingBatch",
    "SampleFailure",
    "SampleSeeder",
    "make_fetcher",
    "sample_seeds",
]

ON_ERROR = ("raise", "skip", "retry")
RETRY_EXHAUSTED = ("raise", "skip")


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What a fetcher does when a sample raises (the loader's ``on_error`` arguments).

    ``raise`` re-raises in the main process; ``skip`` leaves the sample out of its batch and
    records it; ``retry`` tries again ``max_retries`` times, sleeping ``backoff`` seconds and
    doubling it each time, then follows ``retry_exhausted`` ("raise" or "skip").
    """

    on_error: str = "raise"
    max_retries: int = 3
    backoff: float = 0.05
    retry_exhausted: str = "raise"

    @property
    def skips(self) -> bool:
        return self.on_error == "skip" or (
            self.on_error == "retry" and self.retry_exhausted == "skip"
        )


@dataclass(frozen=True, slots=True)
class SampleFailure:
    """One sample that failed and was left out (``loader.failures``).

    Attributes:
        index: The dataset index (None for an IterableDataset's stream position).
        worker_id: The worker that tried it (-1: the main process).
        pid: That process's id.
        exc_type: The exception's class name.
        message: ``str()`` of the exception.
        attempts: How many times it was tried.
        epoch: The loader epoch.
        batch: The batch number within the epoch.
    """

    index: Any
    worker_id: int
    pid: int
    exc_type: str
    message: str
    attempts: int
    epoch: int
    batch: int

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class Empty(Exception):
    """Every sample of a batch failed and was skipped: there is no batch to send."""


class _Fetcher:
    """Common part: collate, with the arena when collate_fn is torch's default_collate."""

    def __init__(
        self,
        dataset: Any,
        auto_collation: bool,
        collate_fn: Callable,
        drop_last: bool,
        policy: ErrorPolicy | None = None,
        worker_id: int = -1,
        validate: Callable[[Any], Any] | None = None,
        concurrency: int = 1,
        seeder: SampleSeeder | None = None,
    ):
        self.dataset = dataset
        self.concurrency = concurrency
        self.seeder = seeder
        self.validate = validate
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.policy = policy or ErrorPolicy()
        self.worker_id = worker_id
        self.current_index: Any = None  # the index being fetched, for error reports
        self.failures: list[SampleFailure] = []  # this fetch's skipped samples
        self.epoch = 0
        self.batch = 0
        self.fetch_end = 0.0
        self._arena: Arena | None = None
        self._collate_map: dict | None = None
        base_map = _torch_collate.default_collate_fn_map
        if collate_fn is default_collate and base_map.get(torch.Tensor) is (
            _torch_collate.collate_tensor_fn
        ):
            self._collate_map = dict(base_map)
            self._collate_map[torch.Tensor] = self._collate_tensor

    def _collate_tensor(self, batch: list, *, collate_fn_map: dict | None = None) -> torch.Tensor:
        elem = batch[0]
        arena = self._arena
        if arena is None or elem.is_nested or elem.layout != torch.strided or elem.is_cuda:
            # torch's own function, for its errors and its non-CPU handling
            return _torch_collate.collate_tensor_fn(batch, collate_fn_map=collate_fn_map)
        out = arena.alloc(elem.dtype, (len(batch), *elem.shape))
        if out is None:
            out = elem.new_empty((len(batch), *elem.shape))
        return torch.stack(batch, 0, out=out)

    def collate(self, data: Any, arena: Arena | None) -> Any:
        if self._collate_map is None or arena is None:
            return self.collate_fn(data)
        self._arena = arena
        try:
            return _torch_collate.collate(data, collate_fn_map=self._collate_map)
        finally:
            self._arena = None

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
        """Return (batch, number of samples); sets ``fetch_end``.

        Raises:
            StopIteration: an iterable dataset's stream is over.
            Empty: every sample failed under a skipping policy (``failures`` says why).
        """
        raise NotImplementedError

    def _checked(self, sample: Any) -> Any:
        """Run ``validate`` on a sample; what it raises is the sample's error."""
        if self.validate is not None:
            self.validate(sample)
        return sample

    def _attempt(self, get: Callable[[], Any], index: Any) -> Any:
        """Call ``get`` under the retry policy; record and return _SKIP if it is skipped."""
        try:
            return self._try(get, index, self.failures, self.epoch, self.batch)
        except StopIteration:
            raise
        except Exception:
            self.current_index = index
            raise

    def _try(
        self, get: Callable[[], Any], index: Any, failures: list, epoch: int, batch: int
    ) -> Any:
        """``_attempt`` without shared state: safe in any thread (failures go to ``failures``)."""
        policy = self.policy
        tries = 1 + (policy.max_retries if policy.on_error == "retry" else 0)
        delay = policy.backoff
        for attempt in range(1, tries + 1):
            try:
                return get()
            except StopIteration:
                raise
            except Exception as exc:
                if attempt < tries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                if not policy.skips:
                    raise
                failures.append(self._failure(exc, index, attempt, epoch, batch))
        return _SKIP

    async def _atry(
        self,
        get: Callable[[], Awaitable[Any]],
        index: Any,
        failures: list,
        epoch: int,
        batch: int,
    ) -> Any:
        """``_try`` for a coroutine: the backoff sleeps without blocking the event loop."""
        policy = self.policy
        tries = 1 + (policy.max_retries if policy.on_error == "retry" else 0)
        delay = policy.backoff
        for attempt in range(1, tries + 1):
            try:
                return await get()
            except StopIteration:
                raise
            except Exception as exc:
                if attempt < tries:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                if not policy.skips:
                    raise
                failures.append(self._failure(exc, index, attempt, epoch, batch))
        return _SKIP

    def _failure(
        self, exc: BaseException, index: Any, attempts: int, epoch: int, batch: int
    ) -> SampleFailure:
        return SampleFailure(
            index=index,
            worker_id=self.worker_id,
            pid=os.getpid(),
            exc_type=type(exc).__name__,
            message=str(exc),
            attempts=attempts,
            epoch=epoch,
            batch=batch,
        )


# NOTE [ Per-sample seeds ]
# With ``per_sample_seed=True`` a sample's randomness depends on (base seed, epoch, dataset
# index) only: not on fetch_concurrency, num_workers, dispatch, which worker fetches it or
# when. Right before a sample's ``__getitem__`` (or ``aget``; again before each retry),
# ``random``, torch's default CPU generator and numpy's legacy global RNG are seeded from
# ``sample_seeds(base_seed, epoch, index)``; ``validate`` runs in the same context. Before
# collate_fn (and a ``__getitems__`` call, which fetches a whole batch) the three are seeded
# from the batch number instead, so a random collate is reproducible too.
#
# Those three RNGs are process-global: torch has no per-thread default generator, and
# ``torch.random.fork_rng`` saves and restores the same global state. So two samples must
# never draw from them at the same time in one process, and how that is kept depends on how
# the samples run:
#
# * one at a time (fetch_concurrency 1): seeding is all it takes;
# * threads (fetch_concurrency k > 1, a plain ``__getitem__``): each sample holds the
#   seeder's lock from seeding until its ``__getitem__`` returns. Correct whatever the
#   dataset does, but a worker then runs one ``__getitem__`` at a time: no fetch overlaps
#   another, so nothing of the latency is hidden (the DataLoader warns). Threads cannot
#   be given separate global RNGs, and releasing the lock around the dataset's I/O would
#   need the dataset to say where its I/O is: that is what ``aget`` says;
# * asyncio (``aget``): coroutines interleave only at their awaits, in one thread, so each
#   step of a sample's coroutine runs with that sample's own RNG state swapped in (seeded at
#   its first step, saved when it awaits, restored when it resumes), under the same lock.
#   Fully concurrent and exactly reproducible, for about 0.1 ms of state copying per await.
#
# In the main process (num_workers=0) the caller's RNG state is saved before each batch and
# restored after it, so per_sample_seed leaves the training loop's randomness alone. CUDA
# generators are not seeded per sample (a worker should not touch CUDA).

_SAMPLE = b"loadtune-sample"
_BATCH = b"loadtune-batch"


def sample_seeds(base_seed: int, epoch: int, key: Any, domain: bytes = _SAMPLE) -> tuple[int, int]:
    """The seeds of one sample (or, with ``domain=_BATCH``, one batch's collate).

    Returns:
        (a 64-bit seed for ``random`` and torch, a 32-bit seed for numpy's legacy RNG), a
        hash of (base seed, epoch, key): the same in every process, thread and run.
    """
    try:
        key = operator.index(key)  # numpy integers and ints hash alike
    except TypeError:
        pass
    text = f"{base_seed}/{epoch}/{key!r}".encode()
    digest = hashlib.blake2b(text, digest_size=12, person=domain).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


class SampleSeeder:
    """Seeds the process-global RNGs per sample (see NOTE [ Per-sample seeds ]).

    Args:
        base_seed: The iterator's base seed.
        restore: Give the caller its RNG state back after each batch (the main process).
    """

    def __init__(self, base_seed: int, restore: bool) -> None:
        self.base_seed = base_seed
        self.restore = restore
        self.lock = threading.Lock()
        try:
            import numpy

            self._np: Any = numpy.random
        except ImportError:
            self._np = None

    def seed(self, epoch: int, key: Any, domain: bytes = _SAMPLE) -> None:
        """Seed ``random``, torch's CPU generator and numpy for one sample (or batch)."""
        seed64, seed32 = sample_seeds(self.base_seed, epoch, key, domain)
        random.seed(seed64)
        # torch.manual_seed would also reach every accelerator backend: 80x slower
        torch.default_generator.manual_seed(seed64)
        if self._np is not None:
            self._np.seed(seed32)

    def call(self, fn: Callable[[], Any], epoch: int, key: Any, domain: bytes = _SAMPLE) -> Any:
        """Run ``fn`` seeded for ``key``, holding the lock so no other sample draws meanwhile."""
        with self.lock:
            self.seed(epoch, key, domain)
            return fn()

    def get_state(self) -> tuple:
        """The three RNGs' states."""
        np_state = self._np.get_state() if self._np is not None else None
        return random.getstate(), torch.get_rng_state(), np_state

    def set_state(self, state: tuple) -> None:
        """Restore what :meth:`get_state` returned."""
        random.setstate(state[0])
        torch.set_rng_state(state[1])
        if state[2] is not None:
            self._np.set_state(state[2])

    def drive(self, coro: Coroutine[Any, Any, Any], epoch: int, key: Any) -> Awaitable[Any]:
        """Await ``coro`` with its own RNG state swapped in at every step."""
        return _Swapped(coro, self, epoch, key)


class _Swapped:
    """An awaitable that steps a coroutine with a sample's RNG state in the globals."""

    __slots__ = ("_coro", "_epoch", "_key", "_seeder")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], seeder: SampleSeeder, epoch: int, key: Any
    ) -> None:
        self._coro, self._seeder, self._epoch, self._key = coro, seeder, epoch, key

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, seeder = self._coro, self._seeder
        state: tuple | None = None  # this sample's RNG state between its steps
        value: Any = None
        error: BaseException | None = None
        while True:
            with seeder.lock:
                if state is None:
                    seeder.seed(self._epoch, self._key)
                else:
                    seeder.set_state(state)
                try:
                    yielded = coro.send(value) if error is None else coro.throw(error)
                except StopIteration as stop:
                    return stop.value
                state = seeder.get_state()
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, passed on to the coroutine
                value, error = None, exc


class _Inline:
    """fetch_concurrency 1 with per_sample_seed: each call runs at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))  # unit functions report errors in their outcome
        return fut

    def shutdown(self) -> None:
        pass


class _Threads:
    """k threads, made on first use; queued calls run first in, first out."""

    def __init__(self, k: int) -> None:
        self._pool = ThreadPoolExecutor(k, thread_name_prefix="loadtune-fetch")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        # do not wait: a hung __getitem__ must not hang the worker's exit
        self._pool.shutdown(wait=False, cancel_futures=True)


class _EventLoop:
    """One asyncio event loop in one thread, running at most ``k`` coroutines at once."""

    def __init__(self, k: int) -> None:
        self._k = k
        self._loop = asyncio.new_event_loop()
        self._limit: asyncio.Semaphore | None = None
        self._thread = threading.Thread(target=self._run, name="loadtune-aget", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            loop.close()

    async def _limited(self, fn: Callable[..., Awaitable[Any]], args: tuple) -> Any:
        if self._limit is None:  # made in the loop's thread, bound to the loop
            self._limit = asyncio.Semaphore(self._k)
        async with self._limit:  # waiters are woken first in, first out
            return await fn(*args)

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Future:
        return asyncio.run_coroutine_threadsafe(self._limited(fn, args), self._loop)

    def shutdown(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:
            pass  # closed already


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What fetching one unit (a sample, or a ``__getitems__`` batch) gave, kept apart
    until ``finish`` puts the batch together in sampler order."""

    values: Any  # a list of samples (_SKIP where skipped), or what __getitems__ returned
    failures: list
    error: BaseException | None = None
    error_index: Any = None  # the index an error is reported with
    end: float = 0.0  # time.monotonic() when it finished


_ABANDONED = _Outcome([], [])  # not started: an earlier sample failed, or the batch was dropped


@dataclass(slots=True, eq=False)
class _Countdown:
    """Units of a batch not finished yet. Apart from the batch on purpose: the futures'
    done-callbacks hold it, and a callback holding the batch (which holds the futures) would
    make a reference cycle that keeps every sample of the batch alive until a full garbage
    collection, which can be hundreds of batches away (tens of MiB per worker)."""

    remaining: int


@dataclass(slots=True, eq=False)
class PendingBatch:
    """A batch whose samples are being fetched (:meth:`MapFetcher.start`).

    Attributes:
        index: The task's indices.
        epoch: The loader epoch.
        batch: The batch number.
        kind: ``"sample"`` (no auto-collation), ``"samples"`` or ``"items"`` (one
            ``__getitems__`` call).
        left: How many units are not finished yet.
        futures: One future per unit, in sampler order; each gives an ``_Outcome``.
        cut: Units after this position are not started (an earlier one failed, or the batch
            was abandoned); those before it always run, so the first error in sampler order
            is the one raised, as with one sample at a time.
    """

    index: Any
    epoch: int
    batch: int
    kind: str
    left: _Countdown
    futures: list = field(default_factory=list)
    cut: float = float("inf")

    def done(self) -> bool:
        """Every unit has finished (or will not start)."""
        return self.left.remaining == 0

    def abandon(self) -> None:
        """Start none of the units still queued; their results will not be used."""
        self.cut = -1


def _close_executor(executor: Any) -> None:
    executor.shutdown()


class MapFetcher(_Fetcher):
    """Fetch from a map-style dataset by index.

    With ``concurrency`` k > 1, up to k samples are fetched at once (threads, or one event
    loop for a dataset with ``async def aget``); :meth:`start` and :meth:`finish` let the
    caller work on several batches at a time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        aget = getattr(self.dataset, "aget", None)
        self._aget = self.concurrency > 1 and inspect.iscoroutinefunction(aget)
        self._pipelined = self.concurrency > 1 or self.seeder is not None
        self._executor: Any = None
        self._lock = threading.Lock()
        self.in_flight = 0  # units submitted and not finished, over every pending batch
        self.on_progress: Callable[[], None] | None = None  # a batch is done or a slot freed

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
        if self._pipelined:
            return self._fetch_pipelined(index, arena)
        self.failures = []
        if self.policy.on_error != "raise" or self.validate is not None:
            return self._fetch_guarded(index, arena)
        dataset = self.dataset
        if self.auto_collation:
            getitems = getattr(dataset, "__getitems__", None)
            if getitems:
                self.current_index = index
                data = getitems(index)
            else:
                data = []
                append = data.append
                i = None
                try:
                    for i in index:
                        append(dataset[i])
                except BaseException:
                    self.current_index = i  # the loop variable names the sample that failed
                    raise
            count = len(index)
        else:
            self.current_index = index
            data = dataset[index]
            count = 1
        self.current_index = None
        self.fetch_end = time.monotonic()
        return self.collate(data, arena), count

    def _fetch_guarded(self, index: Any, arena: Arena | None) -> tuple[Any, int]:
        """The skip/retry path: one sample at a time, so one bad sample costs only itself."""
        dataset = self.dataset
        if not self.auto_collation:
            sample = self._attempt(lambda: self._checked(dataset[index]), index)
            if sample is _SKIP:
                raise Empty
            self.fetch_end = time.monotonic()
            return self.collate(sample, arena), 1
        getitems = getattr(dataset, "__getitems__", None)
        data = None
        if getitems:
            try:
                data = [self._checked(d) for d in getitems(index)]
            except Exception:
                data = None  # find the bad samples one by one below
        if data is None:
            data = [self._attempt(lambda i=i: self._checked(dataset[i]), i) for i in index]
            data = [d for d in data if d is not _SKIP]
        if not data:
            raise Empty
        self.current_index = None
        self.fetch_end = time.monotonic()
        return self.collate(data, arena), len(data)

    # ---------------------------------------------------------------- k samples at once

    def _fetch_pipelined(self, index: Any, arena: Arena | None) -> tuple[Any, int]:
        seeder = self.seeder
        saved = seeder.get_state() if seeder is not None and seeder.restore else None
        try:
            return self.finish(self.start(index), arena)
        finally:
            if saved is not None:
                seeder.set_state(saved)  # type: ignore[union-attr]

    def _pool(self) -> Any:
        if self._executor is None:
            if self.concurrency == 1:
                self._executor = _Inline()
            elif self._aget:
                self._executor = _EventLoop(self.concurrency)
            else:
                self._executor = _Threads(self.concurrency)
            weakref.finalize(self, _close_executor, self._executor)
        return self._executor

    def start(self, index: Any) -> PendingBatch:
        """Begin fetching one batch (for epoch ``self.epoch``, batch ``self.batch``).

        Its samples queue behind those of batches started earlier, so the oldest batch is
        always served first.
        """
        if not self.auto_collation:
            kind, unit, keys = "sample", self._sample_unit, [index]
        elif self._aget:
            kind, unit, keys = "samples", self._aget_unit, list(index)
        elif getattr(self.dataset, "__getitems__", None):
            kind, unit, keys = "items", self._items_unit, [index]
        else:
            kind, unit, keys = "samples", self._sample_unit, list(index)
        left = _Countdown(len(keys))
        pending = PendingBatch(index, self.epoch, self.batch, kind, left)
        pool = self._pool()
        with self._lock:
            self.in_flight += len(keys)
        done = partial(self._unit_done, left)
        for pos, key in enumerate(keys):
            fut = pool.submit(unit, pending, pos, key)
            pending.futures.append(fut)
            fut.add_done_callback(done)
        return pending

    def _unit_done(self, left: _Countdown, _fut: Future) -> None:
        with self._lock:
            left.remaining -= 1
            self.in_flight -= 1
            wake = left.remaining == 0 or self.in_flight == self.concurrency - 1
        if wake and self.on_progress is not None:
            self.on_progress()

    def finish(self, pending: PendingBatch, arena: Arena | None = None) -> tuple[Any, int]:
        """Wait for a started batch and collate it, exactly as :meth:`fetch` would have.

        Raises:
            Empty: every sample failed under a skipping policy.
            Exception: the first failing sample's error, in sampler order, under a raising
                policy (``current_index`` names it); the batch's other samples are not
                started or are waited for, and dropped.
        """
        futures, pending.futures = pending.futures, []  # the samples go when this returns
        if not pending.done():
            wait_all(futures)
        failures: list[SampleFailure] = []
        values: Any = []
        end = 0.0
        for fut in futures:
            outcome: _Outcome = fut.result()
            failures.extend(outcome.failures)
            if outcome.error is not None:
                self.failures = failures
                self.current_index = outcome.error_index
                raise outcome.error
            end = max(end, outcome.end)
            if pending.kind == "items":
                values = outcome.values
            else:
                values.extend(outcome.values)
        self.failures = failures
        self.current_index = None
        guarded = self.policy.on_error != "raise" or self.validate is not None
        if pending.kind == "sample":
            if values[0] is _SKIP:
                raise Empty
            data, count = values[0], 1
        else:
            data = [v for v in values if v is not _SKIP] if guarded else values
            if guarded and not data:
                raise Empty
            count = len(data) if guarded else len(pending.index)
        self.fetch_end = end
        if self.seeder is None:
            return self.collate(data, arena), count
        with self.seeder.lock:
            self.seeder.seed(pending.epoch, pending.batch, _BATCH)
            return self.collate(data, arena), count

    def close(self) -> None:
        """Stop the threads or the event loop (queued samples are dropped)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def _get(self, i: Any) -> Any:
        return self._checked(self.dataset[i])

    def _sample_unit(self, pending: PendingBatch, pos: int, i: Any) -> _Outcome:
        """Fetch one sample under the policy (in a pool thread, or inline)."""
        if pos > pending.cut:
            return _ABANDONED
        failures: list[SampleFailure] = []
        get: Callable[[], Any] = partial(self._get, i)
        if self.seeder is not None:
            get = partial(self.seeder.call, get, pending.epoch, i)
        try:
            value = self._try(get, i, failures, pending.epoch, pending.batch)
        except Exception as exc:
            pending.cut = min(pending.cut, pos)
            return _Outcome([], failures, exc, i, time.monotonic())
        return _Outcome([value], failures, end=time.monotonic())

    def _items_unit(self, pending: PendingBatch, pos: int, index: Any) -> _Outcome:
        """One ``__getitems__`` call for the whole batch, as :meth:`fetch` makes it."""
        getitems = self.dataset.__getitems__
        seeder, epoch, batch = self.seeder, pending.epoch, pending.batch

        def call(fn: Callable[[], Any]) -> Any:
            return fn() if seeder is None else seeder.call(fn, epoch, batch, _BATCH)

        if self.policy.on_error == "raise" and self.validate is None:
            try:
                data = call(partial(getitems, index))
            except Exception as exc:
                return _Outcome([], [], exc, index, time.monotonic())
            return _Outcome(data, [], end=time.monotonic())
        try:
            data = call(lambda: [self._checked(d) for d in getitems(index)])
        except Exception:
            data = None  # find the bad samples one by one below
        failures: list[SampleFailure] = []
        if data is None:
            data = []
            for i in index:
                get: Callable[[], Any] = partial(self._get, i)
                if seeder is not None:
                    get = partial(seeder.call, get, epoch, i)
                try:
                    data.append(self._try(get, i, failures, epoch, batch))
                except Exception as exc:
                    return _Outcome([], failures, exc, i, time.monotonic())
        return _Outcome(data, failures, end=time.monotonic())

    async def _aget_unit(self, pending: PendingBatch, pos: int, i: Any) -> _Outcome:
        """Fetch one sample with the dataset's ``aget`` (on the event loop)."""
        if pos > pending.cut:
            return _ABANDONED
        failures: list[SampleFailure] = []
        seeder = self.seeder

        async def checked() -> Any:
            return self._checked(await self.dataset.aget(i))

        def get() -> Awaitable[Any]:
            if seeder is None:
                return checked()
            return seeder.drive(checked(), pending.epoch, i)

        try:
            value = await self._atry(get, i, failures, pending.epoch, pending.batch)
        except Exception as exc:
            pending.cut = min(pending.cut, pos)
            return _Outcome([], failures, exc, i, time.monotonic())
        return _Outcome([value], failures, end=time.monotonic())


class IterableFetcher(_Fetcher):
    """Fetch the next samples of an iterable dataset's stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._it: Iterator = iter(self.dataset)
        self.ended = False

    def _next(self) -> Any:
        if self.policy.on_error == "raise" and self.validate is None:
            return next(self._it)
        while True:  # a skipped sample is replaced by the stream's next one
            sample = self._attempt(lambda: self._checked(next(self._it)), None)
            if sample is not _SKIP:
                return sample

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
        self.failures = []
        if self.ended:
            raise StopIteration
        if self.auto_collation:
            data = []
            for _ in index:
                try:
                    data.append(self._next())
                except StopIteration:
                    self.ended = True
                    break
            if not data or (self.drop_last and len(data) < len(index)):
                raise StopIteration
            count = len(data)
        else:
            data = self._next()
            count = 1
        self.fetch_end = time.monotonic()
        return self.collate(data, arena), count


_SKIP = object()


def make_fetcher(
    iterable: bool,
    dataset: Any,
    auto_collation: bool,
    collate_fn: Callable,
    drop_last: bool,
    policy: ErrorPolicy | None = None,
    worker_id: int = -1,
    validate: Callable[[Any], Any] | None = None,
    concurrency: int = 1,
    per_sample_seed: bool = False,
    base_seed: int = 0,
) -> _Fetcher:
    """The fetcher for a dataset kind.

    ``concurrency`` and ``per_sample_seed`` apply to map-style datasets (the DataLoader
    refuses them for an IterableDataset, whose stream is one iterator).
    """
    if iterable:
        return IterableFetcher(
            dataset, auto_collation, collate_fn, drop_last, policy, worker_id, validate
        )
    seeder = SampleSeeder(base_seed, restore=worker_id < 0) if per_sample_seed else None
    return MapFetcher(
        dataset,
        auto_collation,
        collate_fn,
        drop_last,
        policy,
        worker_id,
        validate,
        concurrency=concurrency,
        seeder=seeder,
    )

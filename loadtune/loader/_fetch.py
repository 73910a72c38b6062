"""Fetchers: turn one task (a list of indices) into one collated batch, in a worker or inline.

The map and iterable fetchers follow torch's semantics exactly (``__getitems__`` when a
dataset has it, drop_last on the last short batch of an iterable stream). When collate_fn
is torch's ``default_collate`` and a shared-memory arena is at hand, tensors are stacked
straight into the arena (see NOTE [ Shared-memory block lifetime ] in _shm.py) instead of
into the fresh shared segment torch's collate would make in a worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    "SampleFailure",
    "make_fetcher",
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
    ):
        self.dataset = dataset
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
                    self.current_index = index
                    raise
                self.failures.append(
                    SampleFailure(
                        index=index,
                        worker_id=self.worker_id,
                        pid=os.getpid(),
                        exc_type=type(exc).__name__,
                        message=str(exc),
                        attempts=attempt,
                        epoch=self.epoch,
                        batch=self.batch,
                    )
                )
        return _SKIP


class MapFetcher(_Fetcher):
    """Fetch from a map-style dataset by index."""

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
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
) -> _Fetcher:
    """The fetcher for a dataset kind."""
    cls = IterableFetcher if iterable else MapFetcher
    return cls(dataset, auto_collation, collate_fn, drop_last, policy, worker_id, validate)

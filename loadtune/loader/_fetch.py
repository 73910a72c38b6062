"""Fetchers: turn one task (a list of indices) into one collated batch, in a worker or inline.

The map and iterable fetchers follow torch's semantics exactly (``__getitems__`` when a
dataset has it, drop_last on the last short batch of an iterable stream). When collate_fn
is torch's ``default_collate`` and a shared-memory arena is at hand, tensors are stacked
straight into the arena (see NOTE [ Shared-memory block lifetime ] in _shm.py) instead of
into the fresh shared segment torch's collate would make in a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import default_collate
from torch.utils.data._utils import collate as _torch_collate

from ._shm import Arena

__all__ = ["IterableFetcher", "MapFetcher", "make_fetcher"]


class _Fetcher:
    """Common part: collate, with the arena when collate_fn is torch's default_collate."""

    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool):
        self.dataset = dataset
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.current_index: Any = None  # the index being fetched, for error reports
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
        """Return (batch, number of samples); sets ``fetch_end``. Raises StopIteration at end."""
        raise NotImplementedError


class MapFetcher(_Fetcher):
    """Fetch from a map-style dataset by index."""

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
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


class IterableFetcher(_Fetcher):
    """Fetch the next samples of an iterable dataset's stream."""

    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool):
        super().__init__(dataset, auto_collation, collate_fn, drop_last)
        self._it: Iterator = iter(dataset)
        self.ended = False

    def fetch(self, index: Any, arena: Arena | None = None) -> tuple[Any, int]:
        if self.ended:
            raise StopIteration
        if self.auto_collation:
            data = []
            for _ in index:
                try:
                    data.append(next(self._it))
                except StopIteration:
                    self.ended = True
                    break
            if not data or (self.drop_last and len(data) < len(index)):
                raise StopIteration
            count = len(data)
        else:
            data = next(self._it)
            count = 1
        self.fetch_end = time.monotonic()
        return self.collate(data, arena), count


def make_fetcher(
    iterable: bool, dataset: Any, auto_collation: bool, collate_fn: Callable, drop_last: bool
) -> _Fetcher:
    """The fetcher for a dataset kind."""
    cls = IterableFetcher if iterable else MapFetcher
    return cls(dataset, auto_collation, collate_fn, drop_last)

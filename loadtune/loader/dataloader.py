"""DataLoader: torch's arguments, defaults, attributes and errors, with loadtune's iterator.

``loadtune.DataLoader`` subclasses ``torch.utils.data.DataLoader`` for its *configuration*
only: torch's ``__init__`` validates the arguments, so the defaults, the attributes
(``dataset``, ``batch_size``, ``sampler``, ``batch_sampler``, ...), ``len()`` and every
error for an invalid combination are torch's own, and ``isinstance(loader,
torch.utils.data.DataLoader)`` holds for code (trainers, wrappers) that checks it. The
iteration is ours: :mod:`loadtune.loader._iterator` and :mod:`loadtune.loader._worker`
implement the worker processes, dispatch, the result pipes, the prefetch window, shared
memory transport and the pin-memory step; no part of torch's iterator is used.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.utils.data

from probes.events import EventLog

from ._iterator import MultiProcessIter, SingleProcessIter

__all__ = ["DataLoader"]

T_co = TypeVar("T_co", covariant=True)

_DISPATCH = ("round_robin", "balanced")


class DataLoader(torch.utils.data.DataLoader[T_co]):
    """A drop-in for ``torch.utils.data.DataLoader``: same arguments, batches and seeds.

    Every argument of torch's DataLoader is accepted with the same default and meaning.
    What differs is how batches travel and what is recorded:

    * batches cross from the workers through reused shared-memory blocks and arrive in
      the main process without a copy (a batch stays valid while anything refers to it);
    * every batch leaves a :class:`probes.events.BatchEvent` in ``loader.events``
      (dispatch, worker, fetch and collate time, bytes, transport, wait);
    * each worker has its own pipes, so one worker cannot block another.

    Args:
        dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
        pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context,
        generator, prefetch_factor, persistent_workers, pin_memory_device, in_order:
            As in ``torch.utils.data.DataLoader``.
        dispatch: ``"round_robin"`` (default) sends batch k to worker ``k % num_workers``
            exactly as torch does, so random augmentations give torch's samples.
            ``"balanced"`` hands the next batch to the worker with the least work, so a
            slow sample does not hold the batches queued behind it; each batch then seeds
            ``random``, torch and numpy from (base seed, epoch, batch number), which keeps
            runs reproducible but differs from torch's per-worker streams (NOTE [ Seed
            scheme ] in _worker.py).
        event_capacity: How many BatchEvents ``loader.events`` keeps (oldest dropped).

    Raises:
        ValueError, TypeError: Exactly where torch's DataLoader raises them, plus
            ``ValueError`` for an unknown ``dispatch``.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader
        >>> data = torch.utils.data.TensorDataset(torch.arange(10.0))
        >>> [b[0].tolist() for b in DataLoader(data, batch_size=4)]
        [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset[T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int = 0,
        collate_fn: Any = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Any = None,
        multiprocessing_context: Any = None,
        generator: Any = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        dispatch: str = "round_robin",
        event_capacity: int = 100_000,
    ) -> None:
        if dispatch not in _DISPATCH:
            raise ValueError(
                f"dispatch should be one of {_DISPATCH}, but got dispatch={dispatch!r}"
            )
        # Set before torch's __init__ (which freezes some attributes once initialized).
        self.dispatch = dispatch
        self.events = EventLog(event_capacity)
        self._epochs = 0
        self._pin_thread = False  # tests: run the pin-memory thread without an accelerator
        super().__init__(
            dataset,
            batch_size,
            shuffle,
            sampler,
            batch_sampler,
            num_workers,
            collate_fn,
            pin_memory,
            drop_last,
            timeout,
            worker_init_fn,
            multiprocessing_context,
            generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )

    def _next_epoch(self) -> int:
        epoch = self._epochs
        self._epochs += 1
        return epoch

    def _get_iterator(self) -> SingleProcessIter | MultiProcessIter:
        if self.num_workers == 0:
            return SingleProcessIter(self)
        self.check_worker_number_rationality()
        return MultiProcessIter(self)

    def __repr__(self) -> str:
        return (
            f"loadtune.DataLoader(dataset={type(self.dataset).__name__}, "
            f"batch_size={self.batch_size}, num_workers={self.num_workers}, "
            f"prefetch_factor={self.prefetch_factor}, pin_memory={self.pin_memory}, "
            f"persistent_workers={self.persistent_workers}, dispatch={self.dispatch!r})"
        )

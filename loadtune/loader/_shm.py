"""The shared-memory block pool: pack a batch into a reused block, unpack it zero-copy.

# NOTE [ Shared-memory block lifetime ]
Each worker owns up to ``MAX_BLOCKS`` blocks. A block is an anonymous memory file
(``memfd_create``), so it never has a name in /dev/shm and the kernel frees it when the
last process that maps it lets go: nothing can leak, whatever dies first. The main process
opens a new block once through ``/proc/<worker pid>/fd/<fd>`` and keeps it mapped, so on
reuse neither side pays page faults again (torch creates, maps and faults in a fresh
segment for every tensor of every batch).

One byte per block in a shared ``states`` array says who may touch it:

* ``FREE`` (0): the worker may write it. Set by the main process when the last tensor
  that views the block is gone (a ``weakref.finalize`` on the batch's lease object, which
  every tensor of the batch keeps alive through its storage), or when the main process
  drops a batch without handing it out.
* ``HELD`` (1): set by the worker just before it sends a batch that lives in the block.

Only the worker moves FREE -> HELD and only the main process moves HELD -> FREE, so a
byte store on each side is all the synchronisation needed. A batch handed to the user
therefore stays valid for as long as anything refers to it: the block is reused only
after that. The worker retires (unmaps) only FREE blocks and tells the main process in
the next message, so the main process drops its mapping of a block nobody uses.

When every block is HELD (the user keeps many batches alive) the worker does not wait:
the batch travels by torch's own tensor pickling instead (slower, never wrong).
"""

from __future__ import annotations

import ctypes
import io
import mmap
import os
import pickle
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
import torch.multiprocessing  # registers torch's tensor reductions with ForkingPickler
from torch.multiprocessing.reductions import reduce_tensor as _reduce_tensor

__all__ = [
    "FREE",
    "HELD",
    "MAX_BLOCKS",
    "Arena",
    "BlockMaps",
    "Packed",
    "WorkerBlocks",
    "unpack",
]

FREE = 0
HELD = 1
MAX_BLOCKS = 64
ALIGN = 64
_SLACK = 1.125


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _block_size(nbytes: int) -> int:
    page = mmap.PAGESIZE
    want = max(int(nbytes * _SLACK), page)
    return (want + page - 1) // page * page


class _Block:
    """One worker-side block: the memfd, its mapping and a uint8 tensor over it."""

    __slots__ = ("capacity", "fd", "id", "mm", "ptr", "tensor")

    def __init__(self, block_id: int, capacity: int) -> None:
        self.id = block_id
        self.capacity = capacity
        self.fd = os.memfd_create(f"loadtune-block-{block_id}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, capacity)
        self.mm = mmap.mmap(self.fd, capacity)
        self.tensor = torch.frombuffer(self.mm, dtype=torch.uint8)
        self.ptr = self.tensor.data_ptr()

    def view(self, offset: int, dtype: torch.dtype, size: tuple, stride: tuple) -> torch.Tensor:
        return torch.empty(0, dtype=dtype).set_(
            self.tensor.untyped_storage(), offset // dtype.itemsize, size, stride
        )

    def close(self) -> None:
        del self.tensor
        self.mm.close()
        os.close(self.fd)


class _NoRoom(Exception):
    """The chosen block cannot hold the batch; measure and pack again."""


class Arena:
    """Bump allocator over one block, used by collate to stack straight into shared memory.

    The block is taken from the pool at the first allocation, sized for the larger of the
    batches seen so far and that first tensor, so even a worker's first batch is collated
    in place instead of being copied into a block afterwards.
    """

    __slots__ = ("_expect", "_pool", "block", "cursor")

    def __init__(self, block: _Block | None, pool: WorkerBlocks | None = None, expect: int = 0):
        self.block = block
        self.cursor = 0
        self._pool = pool
        self._expect = expect

    def alloc(self, dtype: torch.dtype, size: tuple) -> torch.Tensor | None:
        """A contiguous tensor in the block, or None when it does not fit."""
        numel = 1
        for s in size:
            numel *= s
        nbytes = numel * dtype.itemsize
        if self.block is None:
            if self._pool is None:
                return None
            self.block = self._pool.acquire(max(self._expect, nbytes))
            self._pool = None  # one try per batch
            if self.block is None:
                return None
        start = _align(self.cursor)
        end = start + nbytes
        if end > self.block.capacity:
            return None
        self.cursor = end
        return self.block.view(start, dtype, tuple(size), _contiguous_stride(size))


def _contiguous_stride(size: tuple) -> tuple:
    stride, acc = [], 1
    for s in reversed(size):
        stride.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(stride))


def _placeable(t: Any) -> bool:
    return (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not t.requires_grad
        and not t.is_quantized
        and not t.is_conj()
        and not t.is_neg()
    )


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The element range [lo, hi) of t's storage that t views."""
    lo = t.storage_offset()
    if t.numel() == 0:
        return lo, lo
    return lo, lo + sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) + 1


class _Placer:
    """Decides where each tensor of a batch goes while the batch is pickled."""

    def __init__(self, arena: Arena, measure_only: bool = False) -> None:
        self.arena = arena
        self.measure_only = measure_only
        self.needed = arena.cursor
        self.nbytes = 0
        self._copied: dict[tuple[int, int, int], int] = {}

    def place(self, t: torch.Tensor) -> tuple | None:
        if not _placeable(t):
            return None
        block = self.arena.block
        isz = t.element_size()
        in_arena = block is not None and t.untyped_storage().data_ptr() == block.ptr
        if in_arena and not self.measure_only:
            self.nbytes += t.numel() * isz
            return (t.storage_offset() * isz, t.dtype, tuple(t.shape), t.stride())
        lo, hi = _span(t)
        if (hi - lo) > 2 * t.numel() + 16:
            t = t.contiguous()  # a sparse view of a big storage: copy just its elements
            lo, hi = _span(t)
        nbytes = (hi - lo) * isz
        self.nbytes += t.numel() * isz
        key = (t.untyped_storage().data_ptr(), lo * isz, nbytes)
        start = self._copied.get(key)
        if start is None:
            start = _align(self.needed)
            self.needed = start + nbytes
            if self.measure_only:
                self._copied[key] = start
                return None
            if block is None or self.needed > block.capacity:
                raise _NoRoom
            if nbytes:
                src = torch.empty(0, dtype=torch.uint8).set_(
                    t.untyped_storage(), lo * isz, (nbytes,), (1,)
                )
                block.tensor[start : start + nbytes].copy_(src)
            self._copied[key] = start
        return (start, t.dtype, tuple(t.shape), t.stride())


class _BatchPickler(ForkingPickler):
    """torch's ForkingPickler, except that placeable tensors become block references."""

    def __init__(self, file: io.BytesIO, placer: _Placer) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._placer = placer

    clone_from: _Block | None = None

    def persistent_id(self, obj: Any) -> tuple | None:
        if type(obj) is torch.Tensor:
            return self._placer.place(obj)
        return None

    def reducer_override(self, obj: Any) -> Any:
        # Tensors collated into a block that is about to be given back cannot be shared by
        # torch's reduction (their storage is our mapping): send a private copy instead.
        block = self.clone_from
        if block is not None and isinstance(obj, torch.Tensor):
            if obj.untyped_storage().data_ptr() == block.ptr:
                return _reduce_tensor(obj.clone())
        return NotImplemented


@dataclass(frozen=True, slots=True)
class Packed:
    """A batch ready to send: its pickle and what the main process must know first."""

    payload: bytes
    block_id: int  # -1 when the batch used no block
    new_blocks: tuple[tuple[int, int, int], ...]  # (block id, fd, capacity)
    retired: tuple[int, ...]
    nbytes: int


class WorkerBlocks:
    """The worker side of the pool: acquire, pack, and hand blocks to the main process.

    Args:
        states: The shared one-byte-per-block array (see NOTE [ Shared-memory block lifetime ]).
        keep: How many idle blocks to keep mapped; extra idle blocks are retired.
    """

    def __init__(self, states: Any, keep: int) -> None:
        self._states = states
        self._keep = keep
        self._blocks: dict[int, _Block] = {}
        self._reserved: set[int] = set()
        self._new: list[tuple[int, int, int]] = []
        self._retired: list[int] = []
        self._expect = 0
        self.enabled = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")

    def _idle(self) -> list[_Block]:
        return [
            b
            for b in self._blocks.values()
            if b.id not in self._reserved and self._states[b.id] == FREE
        ]

    def _retire(self, block: _Block) -> None:
        del self._blocks[block.id]
        block.close()
        self._retired.append(block.id)
        self._new = [n for n in self._new if n[0] != block.id]

    def acquire(self, nbytes: int, exclude: _Block | None = None) -> _Block | None:
        """A block of at least ``nbytes`` reserved for this process, or None."""
        if not self.enabled:
            return None
        idle = [b for b in self._idle() if b is not exclude]
        fits = [b for b in idle if b.capacity >= nbytes]
        if fits:
            block = min(fits, key=lambda b: b.capacity)
        else:
            if idle:
                self._retire(min(idle, key=lambda b: b.capacity))
            free_ids = [i for i in range(MAX_BLOCKS) if i not in self._blocks]
            if not free_ids:
                return None
            block = _Block(free_ids[0], _block_size(nbytes))
            self._blocks[block.id] = block
            self._new.append((block.id, block.fd, block.capacity))
        self._reserved.add(block.id)
        return block

    def release(self, block: _Block | None) -> None:
        """Give back a reserved block that was not sent."""
        if block is not None:
            self._reserved.discard(block.id)

    def arena(self) -> Arena:
        """An arena that takes a block when collate first asks for room."""
        return Arena(None, self, self._expect)

    def pack(self, batch: Any, arena: Arena) -> Packed:
        """Pickle ``batch``, placing its tensors in a block; mark the block HELD."""
        if arena.block is None and self._expect:
            arena = Arena(self.acquire(self._expect))  # collate made no tensor: copy them in
        block = arena.block
        try:
            placer = _Placer(arena)
            payload = _dumps(batch, placer)
        except _NoRoom:
            measure = _Placer(Arena(block), measure_only=True)
            _dumps(batch, measure)
            bigger = self.acquire(measure.needed, exclude=block)
            if bigger is not None:
                placer = _Placer(Arena(bigger))
                payload = _dumps(batch, placer)
            else:  # every block is held by the consumer: torch's pickling carries it
                placer = _Placer(Arena(None), measure_only=True)
                payload = _dumps(batch, placer, clone_from=block)
            self.release(block)
            block = bigger
        used = placer.needed if block is not None else 0
        if block is not None and used == 0:  # nothing went into the block
            self.release(block)
            block = None
        if block is not None:
            self._expect = max(used, 1)
            self._reserved.discard(block.id)
            self._states[block.id] = HELD
        packed = Packed(
            payload=payload,
            block_id=block.id if block is not None else -1,
            new_blocks=tuple(self._new),
            retired=tuple(self._retired),
            nbytes=placer.nbytes,
        )
        self._new.clear()
        self._retired.clear()
        idle = self._idle()
        for extra in sorted(idle, key=lambda b: b.capacity)[: max(0, len(idle) - self._keep)]:
            self._retire(extra)
        return packed

    def close(self) -> None:
        """Unmap every block (the main process may still map them; the kernel frees last)."""
        for block in list(self._blocks.values()):
            block.close()
        self._blocks.clear()


def _dumps(batch: Any, placer: _Placer, clone_from: _Block | None = None) -> bytes:
    buf = io.BytesIO()
    pickler = _BatchPickler(buf, placer)
    if clone_from is not None:
        pickler.clone_from = clone_from
    pickler.dump(batch)
    return buf.getvalue()


class BlockMaps:
    """The main process's mappings of the workers' blocks, keyed by (worker pid, block id)."""

    def __init__(self) -> None:
        self._maps: dict[tuple[int, int], mmap.mmap] = {}

    def update(self, pid: int, new_blocks: tuple, retired: tuple) -> None:
        """Apply a message's block changes: drop retired mappings, map new blocks."""
        for block_id in retired:
            # The block was FREE, so no tensor views it; the mapping goes with the object.
            self._maps.pop((pid, block_id), None)
        for block_id, fd, capacity in new_blocks:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                handle = os.open(path, os.O_RDWR)
            except OSError as exc:
                raise OSError(
                    f"cannot open worker {pid}'s shared-memory block {block_id} at {path}: "
                    f"{exc.strerror}"
                ) from exc
            try:
                self._maps[(pid, block_id)] = mmap.mmap(handle, capacity)
            finally:
                os.close(handle)

    def get(self, pid: int, block_id: int) -> mmap.mmap:
        return self._maps[(pid, block_id)]

    def drop_worker(self, pid: int) -> None:
        """Forget a dead or retired worker's blocks (live batches keep their own mapping)."""
        for key in [k for k in self._maps if k[0] == pid]:
            del self._maps[key]

    def clear(self) -> None:
        self._maps.clear()


def _mark_free(states: Any, block_id: int) -> None:
    states[block_id] = FREE


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, storage_fn: Callable[[], torch.UntypedStorage]) -> None:
        super().__init__(file)
        self._storage_fn = storage_fn
        self._storage: torch.UntypedStorage | None = None

    def persistent_load(self, pid: tuple) -> torch.Tensor:
        if self._storage is None:
            self._storage = self._storage_fn()
        offset, dtype, size, stride = pid
        return torch.empty(0, dtype=dtype).set_(
            self._storage, offset // dtype.itemsize, size, stride
        )


def unpack(payload: io.BytesIO, mapping: mmap.mmap | None, states: Any, block_id: int) -> Any:
    """Rebuild a batch in the main process; its tensors view ``mapping`` without a copy.

    The block returns to FREE when the last tensor (or view of one) is gone. If the batch
    used a block but no tensor ended up referring to it, the block is freed at once.
    """
    leases: list[Any] = []

    def storage() -> torch.UntypedStorage:
        lease = (ctypes.c_ubyte * len(mapping)).from_buffer(mapping)
        weakref.finalize(lease, _mark_free, states, block_id)
        leases.append(lease)
        return torch.frombuffer(lease, dtype=torch.uint8).untyped_storage()

    try:
        batch = _BatchUnpickler(payload, storage).load()
    finally:
        if block_id >= 0 and not leases:
            states[block_id] = FREE
        leases.clear()
    return batch

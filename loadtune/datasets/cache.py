"""SharedCache: a map-style dataset's samples kept in one shared-memory file for every process.

:class:`SharedCache` wraps any map-style dataset: the first time a sample is produced (by
any DataLoader worker or the main process) it is copied into one anonymous shared-memory
file, and every later read, in any process and any epoch, comes from there instead of the
wrapped dataset. See NOTE [ Shared cache ] below for its layout and locking.
"""

from __future__ import annotations

import ctypes
import inspect
import io
import mmap
import os
import pickle
import struct
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

_MISSING = object()  # SharedCache._lookup: not in the cache (a sample may be None)

__all__ = ["VIEW_MIN_BYTES", "CacheStats", "SharedCache"]


# NOTE [ Shared cache ]
# One anonymous memory file (``memfd_create``; it shows as "/memfd:loadtune-cache" in
# /proc/<pid>/maps and nowhere in /dev/shm) holds everything, so there is nothing to unlink:
# the kernel frees it when the last process that has it open or mapped lets go, however the
# processes end (normally, by an exception, or SIGKILL). Layout:
#
#   [0, PAGE)             header, int64 words: magic, slots, max_bytes, cursor, and the
#                         counters hits, misses, admitted, refused, uncacheable, raced
#   [PAGE, arena)         the slot table, one row per dataset index, int64:
#                         (state, offset, reserved, owner pid); state EMPTY, FILLING or READY
#   [arena, +max_bytes)   the arena: samples, bump-allocated from ``cursor``; never moved,
#                         never freed, never overwritten once READY (nothing is evicted)
#
# A slot's bytes: [u64 n][n bytes: the sample's pickle, every tensor and array in it replaced
# by (offset, nbytes, dtype, shape)][padding to 64][the arrays, C-contiguous, 64-aligned].
#
# One lock guards the header and the table: an open-file-description lock (F_OFD_SETLKW) on
# byte 0 of the file, through a descriptor each process opens for itself (a forked child must
# not share its parent's open file description, or they would not exclude each other), plus a
# threading.Lock for the threads of one process. Why this lock: the kernel releases it when
# its process dies, so a worker killed inside the critical section cannot wedge the others
# (a multiprocessing.Lock would stay taken); it needs no name (a spawn-context semaphore is a
# /dev/shm entry); and unlike a classic fcntl lock, closing some other descriptor of the file
# (every mmap object holds one) does not drop it.
#
# The protocol, for dataset index i:
#   look up  lock; if READY: hits += 1 and note (offset, reserved); unlock. A READY slot is
#            immutable, so the sample is then read outside the lock.
#   miss     call the wrapped dataset; measure the sample; lock; misses += 1 and exactly one of
#            - uncacheable += 1: a type the cache does not store (see SharedCache);
#            - raced += 1: the slot is READY, or FILLING by a live process (another worker
#              got the same index at the same time); this sample is used as it is;
#            - refused += 1: it does not fit in what is left of max_bytes (first come, first
#              served; a later, smaller sample may still fit);
#            - reserve: bump the cursor (page-aligned from VIEW_MIN_BYTES up), mark the slot
#              FILLING with our pid.
#            unlock; copy the sample into the reserved range (only the owner writes it);
#            lock; mark READY and admitted += 1 (EMPTY again if the copy raised); unlock.
#   The lock's release after the copy and its acquire before a read order the data before
#   the READY state on any CPU, so no reader sees a torn sample. A FILLING slot whose owner
#   is dead (or a failed earlier try of this process) is taken over by the next miss, reusing
#   its reservation when the sample fits. Every counter changes only under the lock, so
#   stats() in any process is exact: every returned sample was one hit or one miss, and
#   misses == admitted + refused + uncacheable + raced, plus stores in progress.
#
# Reads: a sample of VIEW_MIN_BYTES or more comes back as views of this process's
# copy-on-write (MAP_PRIVATE) mapping of the arena: no copy, and an in-place write to it (an
# augmentation that modifies its input) makes a private copy of that page in this process
# only; neither the cache nor another process sees it. When the last view of a slot is gone,
# pages this process wrote are dropped (/proc/self/pagemap says which; MADV_DONTNEED), so
# the next read sees the cached bytes again. While a view of a slot is alive, reading that
# slot again in the same process copies, so two samples never share memory. Such a slot
# owns whole pages, so a private page never holds another slot's bytes (which would go stale
# once copied). A smaller sample is packed 64-byte aligned and copied out of the shared
# mapping: copying a few KiB costs about what the views' bookkeeping would.
#
# Attaching: each process attaches once, lazily, after fork or unpickling: a forked child
# through its inherited descriptor (/proc/self/fd/N), a spawned one through
# /proc/<creator pid>/fd/N, as loader blocks are (NOTE [ Shared-memory block lifetime ]).

VIEW_MIN_BYTES = 32 * 1024
_PAGE = mmap.PAGESIZE
_ALIGN = 64
_MAGIC = 0x4C54434143480001  # "LTCACH", version 1
_EMPTY, _FILLING, _READY = 0, 1, 2
_ROW = 4  # slot table columns: state, offset, reserved, owner
_H_MAGIC, _H_SLOTS, _H_MAX_BYTES, _H_CURSOR = 0, 1, 2, 3
_H_HITS, _H_MISSES, _H_ADMITTED, _H_REFUSED, _H_UNCACHEABLE, _H_RACED = 4, 5, 6, 7, 8, 9
_HEADER_WORDS = 16
_MAX_DEPTH = 64
# struct flock for byte 0 (x86-64 and arm64 layout: short, short, pad, off_t, off_t, pid_t, pad)
_FLOCK = "hhxxxxqqixxxx"
_SCALARS = (bool, int, float, complex, str, bytes, type(None))
# Serialises attaching within a process; replaced in a forked child, in case a thread of the
# parent held it at the fork.
_ATTACH_LOCK = threading.Lock()
# Per memory file (device, inode): the slots this process is storing now. Per file, not per
# attachment, so that two handles on one cache in one process (a pickled copy) agree on
# which FILLING slots of this pid are live. Changed only under the cache's lock.
_IN_PROGRESS: dict[tuple[int, int], set[int]] = {}


def _after_fork_in_child() -> None:
    global _ATTACH_LOCK
    _ATTACH_LOCK = threading.Lock()
    _IN_PROGRESS.clear()  # the parent's stores are not this process's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a :class:`SharedCache` has done so far, summed over every process that used it.

    Every ``cache[i]`` that returned was one hit or one miss, and every miss had one outcome:
    ``misses == admitted + refused + uncacheable + raced`` once no store is in progress (a
    worker killed while storing a sample leaves its miss without an outcome).

    Attributes:
        hits: Samples read from the cache.
        misses: Samples produced by the wrapped dataset.
        admitted: Misses stored in the cache (each index at most once).
        refused: Misses not stored because they did not fit in what was left of
            ``max_bytes`` (counted each time).
        uncacheable: Misses of a type the cache does not store (see :class:`SharedCache`).
        raced: Misses whose index another process was storing, or had just stored.
        bytes_held: Bytes of the arena in use, alignment included; at most ``max_bytes``.
        max_bytes: The bound.
    """

    hits: int
    misses: int
    admitted: int
    refused: int
    uncacheable: int
    raced: int
    bytes_held: int
    max_bytes: int

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheStats:
        """The inverse of :meth:`to_dict`; a missing counter is 0."""
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


def _cacheable_tensor(t: torch.Tensor) -> bool:
    return (
        t.device.type == "cpu"
        and t.layout == torch.strided
        and not t.requires_grad
        and not t.is_quantized
        and all(n is None for n in getattr(t, "names", ()))  # named tensors, where they exist
    )


class _Plan:
    """A sample ready to store: its skeleton pickle and where each array goes."""

    __slots__ = ("arrays", "data_start", "nbytes", "skeleton")

    def __init__(self, skeleton: bytes, arrays: list[tuple[Any, int, int]], data: int) -> None:
        self.skeleton = skeleton
        self.arrays = arrays  # (tensor or ndarray, offset in the data area, nbytes)
        self.data_start = _round_up(8 + len(skeleton), _ALIGN)
        self.nbytes = self.data_start + data

    def write(self, arena: np.ndarray, offset: int) -> None:
        n = len(self.skeleton)
        arena[offset : offset + 8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
        arena[offset + 8 : offset + 8 + n] = np.frombuffer(self.skeleton, np.uint8)
        base = offset + self.data_start
        for obj, rel, nbytes in self.arrays:
            if nbytes == 0:
                continue
            dst = arena[base + rel : base + rel + nbytes]
            if isinstance(obj, torch.Tensor):
                obj = obj.resolve_conj().resolve_neg().contiguous().view(-1).view(torch.uint8)
                obj = obj.numpy()
            # numpy's copy, not torch's copy_: torch's may use its thread pool, which hangs
            # in a process forked from one that used it
            dst[:] = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)


class _SkeletonPickler(pickle.Pickler):
    """Pickles a sample's structure; its tensors and arrays become persistent ids."""

    def __init__(self, file: Any, ids: dict[int, tuple]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._ids = ids

    def persistent_id(self, obj: Any) -> tuple | None:
        if type(obj) is torch.Tensor or type(obj) is np.ndarray:
            return self._ids[id(obj)]
        return None


def _plan(sample: Any) -> _Plan | None:
    """Lay out ``sample`` for the arena, or None when it holds a type the cache cannot store."""
    arrays: list[tuple[Any, int, int]] = []
    ids: dict[int, tuple] = {}
    end = 0

    def visit(obj: Any, depth: int) -> bool:
        nonlocal end
        kind = type(obj)
        if kind in _SCALARS:
            return True
        if depth > _MAX_DEPTH:
            return False
        if kind is torch.Tensor or kind is np.ndarray:
            if id(obj) in ids:
                return True
            if kind is torch.Tensor:
                if not _cacheable_tensor(obj):
                    return False
                nbytes, key = obj.numel() * obj.element_size(), ("t", obj.dtype)
            else:
                if obj.dtype.hasobject:
                    return False
                nbytes, key = obj.nbytes, ("n", obj.dtype)
            start = _round_up(end, _ALIGN)
            ids[id(obj)] = (key[0], start, nbytes, key[1], tuple(obj.shape))
            arrays.append((obj, start, nbytes))
            end = start + nbytes
            return True
        if isinstance(obj, np.generic):
            return not obj.dtype.hasobject
        if kind is list or kind is tuple or (isinstance(obj, tuple) and hasattr(kind, "_fields")):
            return all(visit(x, depth + 1) for x in obj)
        if kind is dict:
            return all(visit(k, depth + 1) and visit(v, depth + 1) for k, v in obj.items())
        return False

    if not visit(sample, 0):
        return None
    buf = io.BytesIO()
    try:
        _SkeletonPickler(buf, ids).dump(sample)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None  # e.g. a namedtuple class that cannot be imported by name
    return _Plan(buf.getvalue(), arrays, end)


class _Unpickler(pickle.Unpickler):
    """Rebuilds a sample around ``base``, the bytes of its data area."""

    def __init__(self, data: bytes, base: np.ndarray) -> None:
        super().__init__(io.BytesIO(data))
        self._base = base

    def persistent_load(self, pid: tuple) -> Any:
        kind, rel, nbytes, dtype, shape = pid
        raw = self._base[rel : rel + nbytes]
        if kind == "t":
            return torch.from_numpy(raw).view(dtype).reshape(shape)
        return raw.view(dtype).reshape(shape)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _close_fds(pid: int, fds: list[int]) -> None:
    if os.getpid() != pid:  # a forked child's copy: the descriptors are not its to close
        return
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Attachment:
    """One process's handles on a cache's memory file: lock, mappings, views it handed out.

    Used as a context manager, it is the lock of NOTE [ Shared cache ].
    """

    def __init__(self, path: str, inode: tuple[int, int], arena: int, max_bytes: int) -> None:
        import fcntl

        self._fcntl = fcntl
        self.pid = os.getpid()
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        fds = [self.fd]
        self._closer = weakref.finalize(self, _close_fds, self.pid, fds)
        st = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) != inode:
            raise RuntimeError(f"{path} is not this SharedCache's memory file")
        capacity = _round_up(max_bytes, _PAGE)
        self.shared = mmap.mmap(self.fd, arena + capacity)
        self.header = np.frombuffer(self.shared, np.int64, _HEADER_WORDS, 0)
        slots = (arena - _PAGE) // (8 * _ROW)
        self.table = np.frombuffer(self.shared, np.int64, slots * _ROW, _PAGE).reshape(-1, _ROW)
        self.arena = np.frombuffer(self.shared, np.uint8, capacity, arena)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self.private = mmap.mmap(self.fd, capacity, flags=mmap.MAP_PRIVATE, prot=prot, offset=arena)
        probe = ctypes.c_ubyte.from_buffer(self.private)
        self.private_addr = ctypes.addressof(probe)
        del probe
        try:
            self.pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(self.pagemap)
        except OSError:
            self.pagemap = -1  # then every released view's pages are dropped
        self.thread_lock = threading.Lock()
        self.live: dict[int, weakref.ref] = {}
        self.filling = _IN_PROGRESS.setdefault(inode, set())

    def __enter__(self) -> _Attachment:
        self.thread_lock.acquire()
        try:
            lock = struct.pack(_FLOCK, self._fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
            self._fcntl.fcntl(self.fd, self._fcntl.F_OFD_SETLKW, lock)
        except BaseException:
            self.thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            unlock = struct.pack(_FLOCK, self._fcntl.F_UNLCK, os.SEEK_SET, 0, 1, 0)
            self._fcntl.fcntl(self.fd, self._fcntl.F_OFD_SETLK, unlock)
        finally:
            self.thread_lock.release()

    def abandoned(self, slot: int, owner: int) -> bool:
        """Whether a FILLING slot's owner will never finish it (call under the lock)."""
        if owner == self.pid:
            return slot not in self.filling
        return not _alive(owner)

    def read(self, slot: int, offset: int, reserved: int) -> Any:
        """Rebuild the READY sample at ``offset``: views where it owns its pages, else a copy."""
        arena = self.arena
        n = int.from_bytes(arena[offset : offset + 8].tobytes(), "little")
        skeleton = arena[offset + 8 : offset + 8 + n].tobytes()
        start = _round_up(8 + n, _ALIGN)
        ref = self.live.get(slot)
        owns_pages = offset % _PAGE == 0 and reserved % _PAGE == 0
        if reserved >= VIEW_MIN_BYTES and owns_pages and (ref is None or ref() is None):
            lease = (ctypes.c_ubyte * reserved).from_buffer(self.private, offset)
            done = weakref.finalize(lease, self._released, slot, offset, reserved)
            done.atexit = False
            self.live[slot] = weakref.ref(lease)
            base = np.frombuffer(lease, np.uint8)[start:]
        else:
            base = arena[offset + start : offset + reserved].copy()
        return _Unpickler(skeleton, base).load()

    def _released(self, slot: int, offset: int, reserved: int) -> None:
        """The last view of a slot is gone: forget it and drop the pages this process wrote."""
        ref = self.live.get(slot)
        if ref is not None and ref() is None:
            del self.live[slot]
        try:
            if self.pagemap >= 0:
                pages = reserved // _PAGE
                first = (self.private_addr + offset) // _PAGE
                entries = np.frombuffer(os.pread(self.pagemap, 8 * pages, 8 * first), np.uint64)
                # bit 63 present, 62 swapped, 61 file page: present or swapped and not the
                # file's page means a private copy made by a write
                written = ((entries >> np.uint64(62)) != 0) & ((entries >> np.uint64(61)) & 1 == 0)
                if not written.any():
                    return
            self.private.madvise(mmap.MADV_DONTNEED, offset, reserved)
        except (OSError, ValueError):
            pass  # the process is going away (mapping closed): nothing left to restore


class SharedCache(Dataset):
    """Cache a map-style dataset's samples in shared memory, for every worker and epoch.

    The first time index ``i`` is produced, by any DataLoader worker or the main process,
    the sample is copied into shared memory; every later ``cache[i]``, in any process (forked
    or spawned workers, persistent or not) and any epoch, reads it from there instead of
    calling the wrapped dataset. Cache what is expensive and the same every epoch (read and
    decode), and pass the random part as ``transform``: it runs on the way out, in the worker,
    after the cached read, so every epoch gets fresh augmentations.

    What is stored: tensors (CPU, dense, without autograd) and numpy arrays (without Python
    objects), and tuples (named too), lists and dicts of them, with numbers, strings, bytes
    and None among them. Anything else (a PIL image, a custom object) is passed through
    uncached and counted as ``uncacheable``; so is an index that is not an int.

    How a sample comes back: a sample of ``VIEW_MIN_BYTES`` (32 KiB) or more as views of the
    shared memory (no copy; writing to them in place is safe: the write stays private to
    that tensor and never reaches the cache or another worker); a smaller one as a copy.
    Tensors come back contiguous, with the same dtype, shape and values.

    The bound: samples are admitted first come, first served while they fit in what is
    left of ``max_bytes`` (large samples are page-aligned, so a few KiB each of alignment
    counts too); one that does not fit is refused and counted, and nothing is ever evicted,
    so which samples are cached does not change mid-epoch. The slot table adds 32 bytes
    per index.

    Lifetime: the memory is one anonymous memory file (``memfd_create``), never a /dev/shm
    entry; it is freed when this object, the loader's workers and every returned view are
    gone, also when the main process is killed. See NOTE [ Shared cache ] for the layout and
    the locking. Linux only.

    Args:
        dataset: A map-style dataset with ``__len__``; index ``i`` must give the same sample
            every time (or the first one is what the cache keeps).
        max_bytes: The most bytes of samples to hold.
        transform: Called on every sample on the way out, cached or not.

    Raises:
        TypeError: ``dataset`` is iterable-style or has no ``__len__``.
        ValueError: ``max_bytes`` is not a positive int.
        RuntimeError: Not on Linux (no ``memfd_create`` or ``/proc``).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(12.0).view(6, 2), torch.arange(6))
        >>> cache = SharedCache(data, max_bytes=1 << 20, transform=lambda s: (s[0] * 2, s[1]))
        >>> [cache[i][1].item() for i in range(6)]
        [0, 1, 2, 3, 4, 5]
        >>> cache[5][0].tolist()
        [20.0, 22.0]
        >>> s = cache.stats()
        >>> s.hits, s.misses, s.admitted
        (1, 6, 6)

        With a DataLoader (decode once, augment every epoch)::

            cache = SharedCache(DecodedImages(paths), max_bytes=8 << 30, transform=augment)
            loader = DataLoader(cache, batch_size=64, shuffle=True, num_workers=8)
            for epoch in range(90):
                for images, labels in loader:  # epoch 1 decodes; later epochs read memory
                    ...
            print(cache.stats())
    """

    def __init__(
        self,
        dataset: Dataset,
        max_bytes: int,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise TypeError("SharedCache wraps a map-style dataset, got an IterableDataset")
        try:
            slots = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise TypeError(
                f"SharedCache needs a dataset with __len__, got {type(dataset).__name__}"
            ) from exc
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
            raise ValueError(f"max_bytes should be a positive int, got {max_bytes!r}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes should be a positive int, got {max_bytes}")
        if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
            raise RuntimeError("SharedCache needs Linux (memfd_create and /proc)")
        self.dataset = dataset
        self.transform = transform
        self.max_bytes = int(max_bytes)
        self._slots = slots
        self._arena = _PAGE + _round_up(max(slots, 1) * 8 * _ROW, _PAGE)
        fd = os.memfd_create("loadtune-cache", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, self._arena + _round_up(self.max_bytes, _PAGE))
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._creator = os.getpid()
        self._inode = (st.st_dev, st.st_ino)
        self._att: _Attachment | None = None
        weakref.finalize(self, _close_fds, self._creator, [fd])
        att = self._attached()
        att.header[[_H_MAGIC, _H_SLOTS, _H_MAX_BYTES]] = [_MAGIC, slots, self.max_bytes]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_att"] = None  # each process attaches itself (see NOTE [ Shared cache ])
        return state

    def __len__(self) -> int:
        return self._slots

    def __repr__(self) -> str:
        return f"SharedCache({self.dataset!r}, max_bytes={self.max_bytes})"

    def _attached(self) -> _Attachment:
        att = self._att
        if att is not None and att.pid == os.getpid():
            return att
        with _ATTACH_LOCK:
            att = self._att
            if att is None or att.pid != os.getpid():
                att = self._att = self._attach()
        return att

    def _attach(self) -> _Attachment:
        path = f"/proc/{self._creator}/fd/{self._fd}"
        if os.getpid() == self._creator:
            path = f"/proc/self/fd/{self._fd}"
        else:
            try:  # a forked child holds the creator's descriptor itself
                st = os.fstat(self._fd)
                if (st.st_dev, st.st_ino) == self._inode:
                    path = f"/proc/self/fd/{self._fd}"
            except OSError:
                pass
        try:
            att = _Attachment(path, self._inode, self._arena, self.max_bytes)
        except OSError as exc:
            raise RuntimeError(
                f"cannot open the SharedCache memory of process {self._creator} at {path}: "
                f"{exc.strerror}; the process that made the cache must still be running and "
                "this process must be allowed to read its /proc entries"
            ) from exc
        if att.header[_H_MAGIC] not in (0, _MAGIC) or (
            att.header[_H_MAGIC] == _MAGIC and att.header[_H_SLOTS] != self._slots
        ):
            raise RuntimeError(f"{path} does not hold this SharedCache's layout")
        return att

    def _slot(self, index: Any) -> int | None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            return None
        i = int(index)
        if i < 0:
            i += self._slots
        return i if 0 <= i < self._slots else None

    def _lookup(self, att: _Attachment, slot: int | None) -> Any:
        """The cached sample at ``slot`` (a hit, counted), or ``_MISSING``."""
        if slot is None:
            return _MISSING
        with att:
            state, offset, reserved, _ = att.table[slot].tolist()
            if state != _READY:
                return _MISSING
            att.header[_H_HITS] += 1
        return att.read(slot, offset, reserved)

    def __getitem__(self, index: int) -> Any:
        att = self._attached()
        slot = self._slot(index)
        sample = self._lookup(att, slot)
        if sample is _MISSING:
            sample = self.dataset[index]
            self._admit(att, slot, sample)
        return sample if self.transform is None else self.transform(sample)

    @property
    def aget(self) -> Callable[[int], Awaitable[Any]]:
        """``await cache.aget(i)``: present only when the wrapped dataset has ``async def aget``.

        A hit is read from shared memory without awaiting anything; a miss awaits the wrapped
        dataset's ``aget`` and is admitted like a miss of ``cache[i]``. So a DataLoader with
        ``fetch_concurrency`` > 1 keeps the dataset's requests on its event loop with the
        cache in front. Without an ``aget`` on the wrapped dataset this attribute does not
        exist (``getattr(cache, "aget", None)`` is None), and the loader uses ``cache[i]``.

        Raises:
            AttributeError: The wrapped dataset has no ``async def aget``.
        """
        if not inspect.iscoroutinefunction(getattr(self.dataset, "aget", None)):
            raise AttributeError(f"{type(self.dataset).__name__} has no async def aget")
        return self._aget

    async def _aget(self, index: int) -> Any:
        att = self._attached()
        slot = self._slot(index)
        sample = self._lookup(att, slot)
        if sample is _MISSING:
            sample = await self.dataset.aget(index)  # type: ignore[attr-defined]
            self._admit(att, slot, sample)
        return sample if self.transform is None else self.transform(sample)

    def _admit(self, att: _Attachment, slot: int | None, sample: Any) -> None:
        """Count a miss and store ``sample`` if it can be (NOTE [ Shared cache ])."""
        plan = _plan(sample) if slot is not None else None
        with att:
            header = att.header
            header[_H_MISSES] += 1
            if plan is None or slot is None:
                header[_H_UNCACHEABLE] += 1
                return
            state, offset, reserved, owner = att.table[slot].tolist()
            if state == _READY or (state == _FILLING and not att.abandoned(slot, owner)):
                header[_H_RACED] += 1
                return
            if plan.nbytes > reserved:
                align = _PAGE if plan.nbytes >= VIEW_MIN_BYTES else _ALIGN
                start = _round_up(int(header[_H_CURSOR]), align)
                end = start + _round_up(plan.nbytes, align)
                if end > self.max_bytes:
                    header[_H_REFUSED] += 1
                    att.table[slot, 0] = _EMPTY
                    return
                header[_H_CURSOR] = end
                offset, reserved = start, end - start
            att.table[slot] = (_FILLING, offset, reserved, att.pid)
            att.filling.add(slot)
        stored = False
        try:
            plan.write(att.arena, offset)
            stored = True
        finally:
            with att:
                att.table[slot, 0] = _READY if stored else _EMPTY
                if stored:
                    att.header[_H_ADMITTED] += 1
                att.filling.discard(slot)

    def stats(self) -> CacheStats:
        """The counters, exact and summed over every process (see :class:`CacheStats`)."""
        att = self._attached()
        with att:
            h = att.header.tolist()
        return CacheStats(
            hits=h[_H_HITS],
            misses=h[_H_MISSES],
            admitted=h[_H_ADMITTED],
            refused=h[_H_REFUSED],
            uncacheable=h[_H_UNCACHEABLE],
            raced=h[_H_RACED],
            bytes_held=h[_H_CURSOR],
            max_bytes=self.max_bytes,
        )

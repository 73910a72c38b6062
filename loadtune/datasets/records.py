"""RecordFile and RecordWriter: a dataset over a file of fixed-size records, read through a map.

:class:`RecordFile` is a map-style dataset over a file of ``n`` records, each an array of
``record_shape`` and ``dtype`` stored back to back with no header (what
``array.tofile(path)`` writes, so numpy can read it too). :class:`RecordWriter` writes such
a file atomically.

Why a memory map: a sample is a view of the page cache, so reading it costs no system call
and no copy; the only copy is the one that collates it into the batch. The map is opened
lazily in each process (and dropped when the dataset is pickled), so the dataset forks and
spawns into DataLoader workers cleanly and no worker shares a file offset with another.

Why ``mode="c"`` (copy-on-write, ``MAP_PRIVATE``): ``torch.from_numpy`` warns on a
read-only array because a tensor is writable. A copy-on-write map is writable without a
copy: reads share the page cache, and a write by user code (an in-place augmentation, say)
gets a private copy of that page in that process only. The file is never modified.
"""

from __future__ import annotations

import math
import os
import secrets
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataFormatError

__all__ = ["RecordFile", "RecordWriter"]


def _numpy_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype that torch can view, from a numpy or torch dtype."""
    if isinstance(dtype, torch.dtype):
        try:
            return torch.empty(0, dtype=dtype).numpy().dtype
        except TypeError as exc:
            raise TypeError(f"dtype {dtype} has no numpy equivalent to store records in") from exc
    np_dtype = np.dtype(dtype)
    try:
        torch.from_numpy(np.empty(0, dtype=np_dtype))
    except TypeError as exc:
        raise TypeError(f"dtype {np_dtype} cannot be viewed as a torch tensor") from exc
    return np_dtype


def _shape(record_shape: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (record_shape,) if isinstance(record_shape, int) else tuple(record_shape)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise ValueError(f"record_shape should be non-negative ints, got {record_shape!r}")
    return tuple(int(d) for d in shape)


class RecordFile(Dataset):
    """A map-style dataset of fixed-size records in one file, read through ``numpy.memmap``.

    ``dataset[i]`` is a tensor of ``record_shape`` that views the mapped file: no copy is
    made until the DataLoader collates it into a batch. The tensor stays valid as long as
    it is referenced (it keeps the map alive). Writing to it changes only this process's
    private copy of the page, never the file (see the module docstring).

    Args:
        path: The file.
        record_shape: The shape of one record (``()`` for scalars).
        dtype: Its numpy or torch dtype.

    Raises:
        DataFormatError: The file's size is not a whole number of records.
        FileNotFoundError: There is no such file.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/x.rec"
        >>> data = RecordFile.write(path, np.arange(6, dtype=np.float32).reshape(3, 2))
        >>> len(data), data[2].tolist()
        (3, [4.0, 5.0])
    """

    def __init__(
        self, path: str | os.PathLike, record_shape: int | tuple[int, ...], dtype: Any
    ) -> None:
        self.path = Path(path)
        self.record_shape = _shape(record_shape)
        self.dtype = _numpy_dtype(dtype)
        self.record_bytes = math.prod(self.record_shape) * self.dtype.itemsize
        if self.record_bytes == 0:
            raise ValueError(f"a record of shape {self.record_shape} holds no bytes")
        size = self.path.stat().st_size
        if size % self.record_bytes:
            raise DataFormatError(
                f"{self.path}: {size} bytes is not a whole number of {self.record_bytes}-byte "
                f"records of shape {self.record_shape} and dtype {self.dtype}; check the shape "
                "and dtype it was written with"
            )
        self._len = size // self.record_bytes
        self._map: np.ndarray | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_map"], state["_pid"] = None, -1  # each process maps the file itself
        return state

    def __len__(self) -> int:
        return self._len

    @property
    def array(self) -> np.ndarray:
        """The whole file as a ``(len, *record_shape)`` array, mapped in this process."""
        if self._map is None or self._pid != os.getpid():
            if self._len == 0:  # mmap refuses an empty file
                self._map = np.empty((0, *self.record_shape), dtype=self.dtype)
            else:
                self._map = np.memmap(
                    self.path, dtype=self.dtype, mode="c", shape=(self._len, *self.record_shape)
                )
            self._pid = os.getpid()
        return self._map

    def __getitem__(self, index: int) -> torch.Tensor:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"RecordFile indices are ints, got {type(index).__name__}")
        i = int(index) + self._len if index < 0 else int(index)
        if not 0 <= i < self._len:
            raise IndexError(f"record {index} out of range for {self.path} ({self._len} records)")
        # A slice, not array[i]: a 0-d record would come back as a numpy scalar (a copy);
        # np.asarray drops the memmap subclass without copying.
        view = np.asarray(self.array[i : i + 1]).reshape(self.record_shape)
        return torch.from_numpy(view)

    @classmethod
    def write(cls, path: str | os.PathLike, array: Any) -> RecordFile:
        """Write ``array``'s rows as records (atomically) and open the file.

        Args:
            path: Where to write.
            array: ``(n, *record_shape)`` data: a numpy array or a tensor.

        Returns:
            The :class:`RecordFile` over the new file.
        """
        data = (
            array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        )
        if data.ndim == 0:
            raise ValueError("array should have a leading records dimension, got a scalar")
        with RecordWriter(path, data.shape[1:], data.dtype) as writer:
            writer.append(data)
        return cls(path, data.shape[1:], data.dtype)


def _discard(path: str, file: Any) -> None:
    file.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class RecordWriter:
    """Append fixed-size records to a file that appears only when complete.

    Records go to a temporary file in the target's folder; :meth:`close` (or leaving the
    ``with`` block normally) flushes, syncs and renames it over ``path`` in one step, so a
    reader sees the old file or the whole new one. An exception inside the ``with`` block,
    :meth:`abort`, or dropping an unclosed writer removes the temporary file instead.

    Args:
        path: The file to create or replace.
        record_shape: The shape of one record.
        dtype: Its numpy or torch dtype; appended data is cast to it (``same_kind``).

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/y.rec"
        >>> with RecordWriter(path, (2,), np.int64) as writer:
        ...     writer.append([1, 2])
        ...     writer.append(np.array([[3, 4], [5, 6]]))
        >>> RecordFile(path, (2,), np.int64)[1].tolist()
        [3, 4]
    """

    def __init__(
        self, path: str | os.PathLike, record_shape: int | tuple[int, ...], dtype: Any
    ) -> None:
        self.path = Path(path)
        self.record_shape = _shape(record_shape)
        self.dtype = _numpy_dtype(dtype)
        self.count = 0
        # Not mkstemp: its 0600 mode would survive the rename; os.open applies the umask.
        self._tmp = str(self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._file = os.fdopen(fd, "wb")
        self._cleanup = weakref.finalize(self, _discard, self._tmp, self._file)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def append(self, records: Any) -> None:
        """Append one record (shape ``record_shape``) or several (``(k, *record_shape)``).

        Raises:
            ValueError: The shape fits neither, or the writer is closed.
        """
        if self._file.closed:
            raise ValueError(f"RecordWriter for {self.path} is closed")
        if isinstance(records, torch.Tensor):
            records = records.detach().cpu().numpy()
        data = np.asarray(records)
        if data.shape == self.record_shape:
            data = data[None]
        if data.shape[1:] != self.record_shape:
            raise ValueError(
                f"records of shape {self.record_shape} expected, got an array of {data.shape}"
            )
        data = np.ascontiguousarray(data.astype(self.dtype, casting="same_kind", copy=False))
        if data.size:
            self._file.write(data.reshape(-1).view(np.uint8).data)
        self.count += len(data)

    def close(self) -> Path:
        """Finish: sync and rename the temporary file to ``path``; returns ``path``."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
            self._cleanup.detach()
        return self.path

    def abort(self) -> None:
        """Give up: remove the temporary file; ``path`` is left as it was."""
        self._cleanup()

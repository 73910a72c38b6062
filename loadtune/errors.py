"""The exceptions loadtune raises, in one tree.

::

    LoadtuneError
    ├── UsageError                bad input: the CLI prints str(exc) on one line and exits 2
    │   ├── TargetError           TARGET missing, not importable, or not a loader/dataset/callable
    │   ├── ConfigError           bad config file, search space or storage URL (also a ValueError)
    │   └── ResultFormatError     unknown schema version or missing field (names file, field)
    └── DataLoadingError          raised while iterating (also a RuntimeError, as torch's are)
        ├── DataCorruptionError
        ├── DataNotFoundError
        ├── DataFormatError
        ├── WorkerCrashError      .pid, .exitcode or .signal, .indices
        └── LoaderTimeoutError    (also a TimeoutError)

``DataLoadingError`` derives from ``RuntimeError`` because torch's DataLoader raises
``RuntimeError`` for a dead worker and for a timeout: code written against torch that
catches ``RuntimeError`` keeps working with ``loadtune.DataLoader``.

Argument validation in :class:`loadtune.DataLoader` keeps torch's exception types and
wording (the drop-in promise), so it raises ``ValueError``/``TypeError``, not these.
"""

from __future__ import annotations

import signal as _signal

__all__ = [
    "ConfigError",
    "DataCorruptionError",
    "DataFormatError",
    "DataLoadingError",
    "DataNotFoundError",
    "LoaderTimeoutError",
    "LoadtuneError",
    "ResultFormatError",
    "TargetError",
    "UsageError",
    "WorkerCrashError",
]


class LoadtuneError(Exception):
    """Base of every exception loadtune defines."""


class UsageError(LoadtuneError):
    """Bad input from the user; the CLI prints it on one line and exits 2."""


class TargetError(UsageError):
    """A TARGET that is missing, does not import, or is not a loader, dataset or callable."""


class ConfigError(UsageError, ValueError):
    """A bad config file, search space or storage URL."""


class ResultFormatError(UsageError):
    """A saved result with an unknown schema version or a missing field."""


class DataLoadingError(LoadtuneError, RuntimeError):
    """An error while iterating a loader.

    Attributes:
        index: The dataset index concerned, where known.
        worker_id: The loader worker id concerned, where known.
        pid: The worker's process id, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        index: object = None,
        worker_id: int | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.worker_id = worker_id
        self.pid = pid

    def __reduce__(self) -> tuple:
        # Keep the keyword attributes when the exception crosses a process boundary.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type, args: tuple, state: dict) -> DataLoadingError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class DataCorruptionError(DataLoadingError):
    """A sample's bytes are there but do not decode (truncated file, bad checksum)."""


class DataNotFoundError(DataLoadingError):
    """A sample's source does not exist."""


class DataFormatError(DataLoadingError):
    """A sample decoded but has the wrong shape, type or fields."""


class WorkerCrashError(DataLoadingError):
    """A worker process died.

    Attributes:
        exitcode: The process exit code, or None when a signal killed it.
        signal: The name of the signal that killed it (``"SIGKILL"``), or None.
        indices: The dataset indices of the batches the worker held when it died.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: int | None = None,
        pid: int | None = None,
        exitcode: int | None = None,
        indices: list | None = None,
    ) -> None:
        super().__init__(message, worker_id=worker_id, pid=pid)
        self.exitcode = exitcode if exitcode is None or exitcode >= 0 else None
        self.signal = _signal_name(exitcode)
        self.indices = list(indices or [])


def _signal_name(exitcode: int | None) -> str | None:
    """``multiprocessing`` reports death by signal N as exit code -N."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class LoaderTimeoutError(DataLoadingError, TimeoutError):
    """No batch arrived within the loader's ``timeout``."""

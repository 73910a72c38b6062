"""loadtune: why is this PyTorch input pipeline slow, and what makes it faster.

The public API is what ``__all__`` lists. Heavy libraries (optuna, matplotlib, py-spy)
are imported only inside the functions that use them, so ``import loadtune`` stays fast.
"""

from __future__ import annotations

from .config import LoaderConfig, apply
from .errors import (
    ConfigError,
    DataCorruptionError,
    DataFormatError,
    DataLoadingError,
    DataNotFoundError,
    LoaderTimeoutError,
    LoadtuneError,
    ResultFormatError,
    TargetError,
    UsageError,
    WorkerCrashError,
)
from .loader import DataLoader
from .profiling import profile
from .results import ProfileResult, TuneResult
from .tune import autotune

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataCorruptionError",
    "DataFormatError",
    "DataLoader",
    "DataLoadingError",
    "DataNotFoundError",
    "LoaderConfig",
    "LoaderTimeoutError",
    "LoadtuneError",
    "ProfileResult",
    "ResultFormatError",
    "TargetError",
    "TuneResult",
    "UsageError",
    "WorkerCrashError",
    "apply",
    "autotune",
    "profile",
]

"""Dataset building blocks: record files read through a memory map, and a shared sample cache.

:class:`RecordFile` (with :class:`RecordWriter`) is a map-style dataset over a file of
fixed-size records, read zero-copy through a memory map (``records.py``).
:class:`SharedCache` wraps any map-style dataset and keeps its samples in one shared-memory
file that every worker and epoch reads (``cache.py``, NOTE [ Shared cache ]).
"""

from __future__ import annotations

from .cache import VIEW_MIN_BYTES, CacheStats, SharedCache
from .records import RecordFile, RecordWriter

__all__ = ["VIEW_MIN_BYTES", "CacheStats", "RecordFile", "RecordWriter", "SharedCache"]

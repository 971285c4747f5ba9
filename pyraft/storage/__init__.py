"""Durable storage of a node's hard state and Raft log (see ``base.Storage``)."""

from pyraft.storage.base import (
    MAX_RECORD_BYTES,
    RecoveryReport,
    Storage,
    StorageClosed,
    StorageCorrupt,
    StorageError,
    StorageLocked,
)
from pyraft.storage.file import DirLock, FileStorage
from pyraft.storage.memory import MemoryStorage

__all__ = [
    "MAX_RECORD_BYTES",
    "DirLock",
    "FileStorage",
    "MemoryStorage",
    "RecoveryReport",
    "Storage",
    "StorageClosed",
    "StorageCorrupt",
    "StorageError",
    "StorageLocked",
]

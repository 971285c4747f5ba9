"""Durable storage of a node's hard state, Raft log and snapshots (see ``base.Storage``)."""

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
from pyraft.storage.snapshot import SnapshotCorrupt, SnapshotMeta

__all__ = [
    "MAX_RECORD_BYTES",
    "DirLock",
    "FileStorage",
    "MemoryStorage",
    "RecoveryReport",
    "SnapshotCorrupt",
    "SnapshotMeta",
    "Storage",
    "StorageClosed",
    "StorageCorrupt",
    "StorageError",
    "StorageLocked",
]

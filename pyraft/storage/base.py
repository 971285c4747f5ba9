"""The durable-storage seam of a Raft node: what must survive a crash, and the rules for it.

The Raft core hands its effects to the caller as data (see ``pyraft.core.ready``);
the storage actor makes the hard state and the log durable through a ``Storage``.
Everything here is synchronous so the actor may run it on a worker thread. A
``Storage`` serves one caller at a time; it is not safe to share between threads.

The checks in this module are shared by every implementation so that the
in-memory twin used by actor tests fails exactly where the file storage does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pyraft.core.messages import Entry, EntryKind, HardState

# One record may hold at most this many payload bytes. Recovery treats a larger
# length field as corruption (a torn or garbled header), so append() refuses to
# write anything that load() would later refuse to read back.
MAX_RECORD_BYTES = 64 * 1024 * 1024

_KINDS = frozenset(EntryKind)


class StorageError(Exception):
    """Base class for errors reported by a storage backend."""


class StorageCorrupt(StorageError):
    """Durable data cannot be trusted and must not be guessed at.

    Raised (instead of repairing) when the damage is not a torn tail the node
    itself could have produced, e.g. a garbled hard-state file: treating that as
    term 0 could let the node vote twice in one term."""


class StorageLocked(StorageError):
    """Another process (or another open storage in this one) holds the data directory."""


class StorageClosed(StorageError):
    """The storage was used after close()."""


@dataclass(frozen=True)
class RecoveryReport:
    """What load() found and repaired.

    ``truncated_bytes`` counts the bytes of torn or corrupt log tail that were
    removed; ``first_bad_offset`` is the file offset where they started and
    ``reason`` says why the scan stopped there. All three are empty/zero for a
    clean log."""

    entries_loaded: int
    truncated_bytes: int
    first_bad_offset: int | None
    reason: str | None

    @property
    def repaired(self) -> bool:
        return self.truncated_bytes > 0 or self.reason is not None


@runtime_checkable
class Storage(Protocol):
    """Durable home of a node's ``HardState`` and log.

    Entries are numbered from 1 without gaps. Every mutating call is durable
    when it returns, so the caller may then send messages that depend on it."""

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        """Recover: return the hard state and the contiguous log from index 1."""
        ...

    def save_hard_state(self, hs: HardState) -> None:
        """Replace the hard state; durable on return."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Drop stored entries with index >= ``entries[0].index``, then append; durable on return."""
        ...

    def close(self) -> None:
        """Release the storage; further calls raise ``StorageClosed``. Idempotent."""
        ...


def check_batch(entries: Sequence[Entry], last_index: int, prev_term: int) -> None:
    """Raise ValueError unless ``entries`` may be appended to a log ending at ``last_index``.

    ``prev_term`` is the term of the entry just before ``entries[0]`` (0 when
    there is none). Terms must not decrease along a Raft log; a batch that would
    break that is a caller bug, and recovery would cut the log there anyway."""
    first = entries[0].index
    if first < 1 or first > last_index + 1:
        raise ValueError(f"append at index {first} would leave a gap after last index {last_index}")
    expected = first
    term = prev_term
    for e in entries:
        if e.index != expected:
            raise ValueError(f"entries not contiguous: expected index {expected}, got {e.index}")
        if type(e.term) is not int or e.term < term:
            raise ValueError(f"entry {e.index} has term {e.term!r} below the preceding term {term}")
        if e.kind not in _KINDS or not isinstance(e.data, bytes):
            raise ValueError(f"entry {e.index} has an invalid kind {e.kind!r} or non-bytes data")
        expected += 1
        term = e.term


def check_hard_state(old: HardState, new: HardState) -> None:
    """Raise ValueError if ``new`` would undo a durable promise made by ``old``.

    The term never goes back, and a vote cast in a term is never changed or
    withdrawn in that term. The core is responsible for this; checking it at
    the last line before the disk turns a core bug into an error, not a double vote."""
    if type(new.term) is not int or new.term < 0:
        raise ValueError(f"invalid term {new.term!r}")
    if new.voted_for is not None and type(new.voted_for) is not int:
        raise ValueError(f"invalid voted_for {new.voted_for!r}")
    if new.term < old.term:
        raise ValueError(f"term would go back from {old.term} to {new.term}")
    if new.term == old.term and old.voted_for is not None and new.voted_for != old.voted_for:
        raise ValueError(f"vote in term {new.term} would change from {old.voted_for} to {new.voted_for}")

"""The durable-storage seam of a Raft node: what must survive a crash, and the rules for it.

The Raft core hands its effects to the caller as data (see ``pyraft.core.ready``);
the storage actor makes the hard state, the log and snapshots durable through a
``Storage``. Everything here is synchronous so the actor may run it on a worker
thread. A ``Storage`` serves one caller at a time; it is not safe to share
between threads, except ``prepare_snapshot``, which may run beside any call
but ``close`` and another ``prepare_snapshot``.

The checks in this module are shared by every implementation so that the
in-memory twin used by actor tests fails exactly where the file storage does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pyraft.core.messages import Entry, EntryKind, HardState

if TYPE_CHECKING:
    from pyraft.storage.snapshot import SnapshotMeta

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
    removed; ``first_bad_offset`` is the file offset (in the last log segment)
    where they started and ``reason`` says why the scan stopped there. All three
    are empty/zero for a clean log. ``notes`` lists what else load() had to
    decide: snapshots it skipped and why, a log it discarded to finish an
    interrupted snapshot install. An operator wants to see those even though
    nothing acknowledged was lost."""

    entries_loaded: int
    truncated_bytes: int
    first_bad_offset: int | None
    reason: str | None
    notes: tuple[str, ...] = ()

    @property
    def repaired(self) -> bool:
        return self.truncated_bytes > 0 or self.reason is not None


@dataclass(frozen=True)
class PreparedSnapshot:
    """A snapshot whose bytes are durable but not yet in effect (``Storage.prepare_snapshot``).

    ``meta`` has its size and CRC filled in; ``staged`` is where the backend
    keeps the bytes until ``save_prepared_snapshot`` (a temp file, a buffer)."""

    meta: SnapshotMeta
    staged: Any


@runtime_checkable
class Storage(Protocol):
    """Durable home of a node's ``HardState``, log and snapshots.

    Entries are numbered from 1 without gaps; a snapshot stands in for every
    entry up to its ``last_index``. Every mutating call is durable when it
    returns, so the caller may then send messages that depend on it.

    On Python 3.11 ``isinstance(x, Storage)`` reads the two properties, which
    makes a ``FileStorage`` recover its log (and raise once closed): rely on
    static typing rather than a runtime check."""

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        """Recover: the hard state and the log after the latest valid snapshot.

        The entries are contiguous from ``snapshot().last_index + 1`` (from 1
        without a snapshot); entries the snapshot covers are not returned."""
        ...

    def snapshot(self) -> SnapshotMeta | None:
        """The latest durable valid snapshot: what load found, or what was saved or installed since."""
        ...

    def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """Meta and payload of ``snapshot()`` (to restore a state machine or serve a fetch)."""
        ...

    def save_hard_state(self, hs: HardState) -> None:
        """Replace the hard state; durable on return."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Drop stored entries with index >= ``entries[0].index``, then append; durable on return.

        ``entries[0].index`` must lie in [``first_index``, ``last_index + 1``]."""
        ...

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
        """Durably store a snapshot of the state machine at ``meta.last_index``; returns the completed meta.

        Requires ``snapshot index <= meta.last_index <= last_index`` and the log
        (or the current snapshot) to hold (``meta.last_index``, ``meta.last_term``).
        Compaction lags one snapshot: the log keeps everything after the
        previous snapshot, which is kept too, so a damaged newest snapshot
        still leaves a snapshot the log connects to.

        The same as ``save_prepared_snapshot(prepare_snapshot(meta, data))``."""
        ...

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> PreparedSnapshot:
        """The slow half of ``save_snapshot``: make the bytes durable where nothing reads them yet.

        The one call that may run while another call is in progress (in another
        thread; not ``close`` nor a second ``prepare_snapshot``): it touches nothing
        the others use. Writing and syncing a snapshot
        takes 0.3 s for 55 MB (100,000 brokers) on this project's machine when
        nothing else writes, longer when every node writes its own at once, as they
        do; holding every append back meanwhile stalled the quorum (fsync on)."""
        ...

    def save_prepared_snapshot(self, prepared: PreparedSnapshot) -> SnapshotMeta:
        """The quick half: check the point as ``save_snapshot`` does, put the snapshot in
        effect and compact the log. A refused snapshot's staged bytes are dropped."""
        ...

    def read_snapshot_chunk(
        self, last_index: int, last_term: int, offset: int, size: int
    ) -> tuple[bytes, bool] | None:
        """Bytes [offset, offset + size) of that snapshot's whole file and whether they reach its end.

        None if this storage no longer holds that snapshot."""
        ...

    def receive_chunk(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> tuple[int, SnapshotMeta | None]:
        """Take one InstallSnapshot chunk: (offset wanted next, the meta once a snapshot was installed)."""
        ...

    def close(self) -> None:
        """Release the storage; further calls raise ``StorageClosed``. Idempotent."""
        ...

    @property
    def first_index(self) -> int:
        """The lowest index ``append`` accepts: the snapshot's last index + 1 (1 without one)."""
        ...

    @property
    def syncs(self) -> bool:
        """Whether ``append`` and ``save_hard_state`` wait for the disk (fsync).

        Only then are they worth a worker thread: a write that ends in the page
        cache (fsync off) or in memory takes less time than the hop to the thread
        and back, which sits on every replication round's path."""
        ...

    @property
    def last_index(self) -> int:
        """The last index the storage holds, in the log or, after an install, in the snapshot."""
        ...


def check_batch(entries: Sequence[Entry], last_index: int, prev_term: int, first_index: int = 1) -> None:
    """Raise ValueError unless ``entries`` may be appended to a log ending at ``last_index``.

    ``prev_term`` is the term of the entry just before ``entries[0]`` (0 when
    there is none). Terms must not decrease along a Raft log; a batch that would
    break that is a caller bug, and recovery would cut the log there anyway.
    Nothing may be written at or below a snapshot (``first_index`` is the
    lowest index allowed): the snapshot already holds committed entries there."""
    first = entries[0].index
    if first < first_index and first >= 1:
        raise ValueError(f"append at index {first} is at or below the snapshot (first index {first_index})")
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


def check_snapshot_point(
    last_index: int, last_term: int, snapshot_index: int, log_last: int, term_at: Callable[[int], int]
) -> None:
    """Raise ValueError unless a snapshot at (``last_index``, ``last_term``) may be saved.

    It must not go behind the current snapshot nor beyond what is durable, and
    the entry it ends at must be the one stored there, or the state machine the
    caller captured and the log that continues after it are of two histories."""
    if not snapshot_index <= last_index <= log_last:
        raise ValueError(
            f"snapshot at index {last_index} outside [{snapshot_index}, {log_last}] "
            "(current snapshot, last durable index)"
        )
    stored = term_at(last_index)
    if stored != last_term:
        raise ValueError(f"snapshot at ({last_index}, {last_term}) but the log has term {stored} there")


def why_log_does_not_follow(
    snapshot_index: int, snapshot_term: int, log_last: int, term_at: Callable[[int], int], log_first: int
) -> str | None:
    """Why the stored log cannot continue after this snapshot (None when it can).

    The log continues a snapshot when it ends at or after it and holds the same
    entry there (or starts right after it). Otherwise it is the log an
    interrupted install was about to discard: its entries at and after the
    snapshot belong to another history and must not be replayed on top of it."""
    if log_last < snapshot_index:
        return f"log ends at {log_last}, below snapshot ({snapshot_index}, {snapshot_term})"
    if log_first <= snapshot_index:
        term = term_at(snapshot_index)
        if term != snapshot_term:
            return f"log has term {term} at index {snapshot_index}, snapshot has {snapshot_term}"
    return None


def missing_before_log(log_start: int, snapshot_index: int, notes: Sequence[str]) -> str:
    """Say which entries neither the log nor any valid snapshot holds, and what load skipped."""
    found = f"the newest valid snapshot ends at {snapshot_index}" if snapshot_index else "no valid snapshot"
    skipped = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"the log starts at index {log_start} and {found}: entries {snapshot_index + 1}..{log_start - 1} "
        f"are missing{skipped}"
    )

"""An in-memory ``Storage`` with the same rules as the file storage, for tests.

Everything it holds counts as durable, so a simulated crash is simply a new
``MemoryStorage`` built from the old one's contents (see ``crash()``).
Snapshots are kept as the exact bytes a snapshot file would hold, and load()
verifies them the same way, so a test can damage one and watch the twin fall
back exactly where ``FileStorage`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pyraft.core.messages import Entry, HardState
from pyraft.storage.base import (
    PreparedSnapshot,
    RecoveryReport,
    StorageClosed,
    StorageCorrupt,
    check_batch,
    check_hard_state,
    check_snapshot_point,
    missing_before_log,
    why_log_does_not_follow,
)
from pyraft.storage.snapshot import (
    BytesSink,
    SnapshotCorrupt,
    SnapshotMeta,
    TransferSlot,
    check_chunk_request,
    decode_snapshot,
    encode_snapshot,
)

logger = logging.getLogger("pyraft.storage")


class MemoryStorage:
    """The in-memory twin of ``FileStorage``: same validation, same errors, no disk.

    Like the file storage, it stores the log from just after the previous
    snapshot (so a damaged newest snapshot has a fallback), and the same
    snapshots: the current one and the one before it."""

    def __init__(self, hard_state: HardState | None = None, entries: Sequence[Entry] = ()) -> None:
        """Start empty, or pre-seeded with a durable state (validated like an append)."""
        self._hs = HardState()
        self._files: dict[tuple[int, int], bytes] = {}  # snapshot id -> the snapshot file's bytes
        self._log: list[Entry] = []  # stored entries, contiguous from _log_first
        self._log_first = 1
        self._snapshot: SnapshotMeta | None = None
        self._fallback: SnapshotMeta | None = None
        self._recovered = True  # a fresh storage has nothing to recover; a crashed twin does
        self._transfer = TransferSlot(lambda index, term: BytesSink())
        self._closed = False
        if hard_state is not None:
            self.save_hard_state(hard_state)
        if entries:
            self.append(entries)

    # ----------------------------------------------------------------- Storage API

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        self._check_open()
        notes = self._recover()
        entries = self._log[self._base_index + 1 - self._log_first :]
        return self._hs, entries, RecoveryReport(len(entries), 0, None, None, tuple(notes))

    def snapshot(self) -> SnapshotMeta | None:
        self._ensure()
        return self._snapshot

    def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        meta = self.snapshot()
        if meta is None:
            return None
        try:
            return decode_snapshot(self._files[meta.id])
        except SnapshotCorrupt as exc:
            raise StorageCorrupt(f"current snapshot damaged since it was checked: {exc}") from exc

    def save_hard_state(self, hs: HardState) -> None:
        self._check_open()
        check_hard_state(self._hs, hs)
        self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        self._check_open()
        if not entries:
            return
        self._ensure()
        first, last, base = entries[0].index, self.last_index, self._base_index
        prev_term = self._term_at(first - 1) if base < first <= last + 1 else 0
        check_batch(entries, last, prev_term, base + 1)
        del self._log[first - self._log_first :]
        self._log.extend(entries)

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
        self._ensure()
        self._check_snapshot_point(meta)
        return self.save_prepared_snapshot(self.prepare_snapshot(meta, data))

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> PreparedSnapshot:
        self._ensure()
        meta, file = encode_snapshot(meta, data)
        return PreparedSnapshot(meta, file)

    def save_prepared_snapshot(self, prepared: PreparedSnapshot) -> SnapshotMeta:
        self._ensure()
        meta = prepared.meta
        self._check_snapshot_point(meta)
        self._files[meta.id] = prepared.staged
        self._adopt(meta, log_follows=True)
        return meta

    def _check_snapshot_point(self, meta: SnapshotMeta) -> None:
        check_snapshot_point(
            meta.last_index, meta.last_term, self._base_index, self.last_index, self._term_at
        )

    def read_snapshot_chunk(
        self, last_index: int, last_term: int, offset: int, size: int
    ) -> tuple[bytes, bool] | None:
        self._ensure()
        check_chunk_request(offset, size)
        known = any(m and m.id == (last_index, last_term) for m in (self._snapshot, self._fallback))
        file = self._files.get((last_index, last_term))
        if not known or file is None:
            return None
        data = file[offset : offset + size]
        return data, offset + len(data) >= len(file)

    def receive_chunk(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> tuple[int, SnapshotMeta | None]:
        self._ensure()
        next_offset, completed = self._transfer.offer(last_index, last_term, offset, data, done)
        if completed is None:
            return next_offset, None
        meta, sink = completed
        if self._snapshot is None or meta.last_index > self._snapshot.last_index:
            follows = self._holds(meta.last_index, meta.last_term)
            self._files[meta.id] = bytes(sink.data)
            self._adopt(meta, log_follows=follows)
        return next_offset, meta

    def close(self) -> None:
        self._transfer.cancel()
        self._closed = True

    @property
    def syncs(self) -> bool:
        return False

    @property
    def first_index(self) -> int:
        self._ensure()
        return self._base_index + 1

    @property
    def last_index(self) -> int:
        self._ensure()
        return self._log_first + len(self._log) - 1

    # ----------------------------------------------------------------- crashes and damage (tests)

    def durable(self) -> tuple[HardState, tuple[Entry, ...]]:
        """The hard state and stored log a crash right now would leave behind (all of it, by definition).

        The log may start at or below the snapshot: entries kept for the fallback."""
        return self._hs, tuple(self._log)

    def durable_snapshots(self) -> dict[tuple[int, int], bytes]:
        """The snapshot files a crash right now would leave behind, by (last_index, last_term)."""
        return dict(self._files)

    def damage_snapshot(self, last_index: int, last_term: int, data: bytes) -> None:
        """Replace a stored snapshot's bytes, as a bad disk would; the next load decides what to trust."""
        if (last_index, last_term) not in self._files:
            raise KeyError((last_index, last_term))
        self._files[(last_index, last_term)] = data

    def crash(self) -> MemoryStorage:
        """Simulate a crash and restart: close this storage, return a fresh one with its durable contents.

        The old object refuses further use, like the file handle of a dead
        process; a transfer in progress is lost, like a temp file removed at startup."""
        self.close()
        twin = MemoryStorage()
        twin._hs = self._hs
        twin._files = dict(self._files)
        twin._log = list(self._log)
        twin._log_first = self._log_first
        twin._recovered = False
        return twin

    # ----------------------------------------------------------------- internals

    @property
    def _base_index(self) -> int:
        return self._snapshot.last_index if self._snapshot else 0

    def _term_at(self, index: int) -> int:
        """Term at ``index`` in [snapshot index, last index]; the snapshot answers for its own index."""
        if self._snapshot is not None and index == self._snapshot.last_index:
            return self._snapshot.last_term
        if index == 0:
            return 0
        return self._log[index - self._log_first].term

    def _stored_term(self, index: int) -> int:
        return self._log[index - self._log_first].term

    def _holds(self, index: int, term: int) -> bool:
        position = index - self._log_first
        return 0 <= position < len(self._log) and self._log[position].term == term

    def _ensure(self) -> None:
        self._check_open()
        if not self._recovered:
            self._recover()

    def _recover(self) -> list[str]:
        """Decide as FileStorage.load does on the same contents: the snapshot, and whether the log follows."""
        notes: list[str] = []
        chosen, damaged = self._choose_snapshot(notes)
        base = chosen.id if chosen else (0, 0)
        log_last = self._log_first + len(self._log) - 1
        why = None
        if self._log:
            why = why_log_does_not_follow(*base, log_last, self._stored_term, self._log_first)
        held = base[0] if why or not self._log else max(base[0], log_last)
        if damaged and max(damaged) > held:
            raise StorageCorrupt(
                f"snapshot at index {max(damaged)} is damaged and the log and older snapshots reach "
                f"only index {held}; refusing to start with less than was durable ({'; '.join(notes)})"
            )
        if why is not None:
            note = f"discarded the log ({why}): an interrupted snapshot install left it"
            logger.warning("memory storage: %s", note)
            notes.append(note)
        if why is not None or not self._log:
            self._log, self._log_first = [], base[0] + 1
        self._snapshot, self._fallback, self._recovered = chosen, None, True
        return notes

    def _choose_snapshot(self, notes: list[str]) -> tuple[SnapshotMeta | None, list[int]]:
        damaged: list[int] = []
        newest_valid = 0  # of the valid snapshots the log does not connect to
        for index, term in sorted(self._files, reverse=True):
            try:
                meta, _ = decode_snapshot(self._files[(index, term)])
                if meta.id != (index, term):
                    raise SnapshotCorrupt("snapshot", f"header is for {meta.id}, not its name")
            except SnapshotCorrupt as exc:
                self._skip(notes, f"skipped snapshot ({index}, {term}): {exc.reason}")
                damaged.append(index)
                continue
            if self._log_first > index + 1:
                self._skip(notes, f"skipped snapshot ({index}, {term}): the log starts at {self._log_first}")
                newest_valid = max(newest_valid, index)
                continue
            return meta, damaged
        if self._log_first > newest_valid + 1:
            raise StorageCorrupt(missing_before_log(self._log_first, newest_valid, notes))
        return None, damaged

    @staticmethod
    def _skip(notes: list[str], note: str) -> None:
        logger.warning("memory storage: %s", note)
        notes.append(note)

    def _adopt(self, meta: SnapshotMeta, *, log_follows: bool) -> None:
        """Make ``meta`` current and compact one snapshot behind it, as ``FileStorage._adopt`` does."""
        previous = self._snapshot
        fallback = previous if previous and previous.last_index < meta.last_index else self._fallback
        if log_follows:
            if fallback is not None:
                drop = max(0, fallback.last_index + 1 - self._log_first)
                del self._log[:drop]
                self._log_first += drop
        else:
            fallback = None
            self._log, self._log_first = [], meta.last_index + 1
        self._snapshot, self._fallback = meta, fallback
        keep = {meta.id} | ({fallback.id} if fallback else set())
        self._files = {key: file for key, file in self._files.items() if key in keep}

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("memory storage is closed")

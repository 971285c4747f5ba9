"""The simulation's snapshots: a state machine whose state is the applied prefix itself.

A simulated node's state machine is the list of entries it has applied, so
its snapshot at index i *is* entries 1..i. That makes State Machine Safety of
a restore checkable entry by entry, and lets the invariants keep seeing whole
logs (snapshot prefix + the log after it) however much was compacted.

The "file" is the snapshot msgpacked, so InstallSnapshot streams real bytes in
chunks; ``Receiver`` mirrors the storage's rules (in order, one transfer at a
time, offset 0 of another snapshot restarts).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from pyraft.core.membership import Membership
from pyraft.core.messages import Entry, EntryKind
from pyraft.core.ready import SnapshotRef


@dataclass(frozen=True, slots=True)
class SimSnapshot:
    index: int
    term: int
    entries: tuple[Entry, ...]  # the applied prefix 1..index: the state it restores
    membership: Membership | None = None  # the configuration at ``index`` (None: the bootstrap one)

    @property
    def ref(self) -> SnapshotRef:
        return SnapshotRef(self.index, self.term)

    def encode(self) -> bytes:
        rows = [[e.index, e.term, int(e.kind), e.data] for e in self.entries]
        config = self.membership.encode() if self.membership else b""
        packed: bytes = msgpack.packb([self.index, self.term, rows, config], use_bin_type=True)
        return packed

    @staticmethod
    def decode(data: bytes) -> SimSnapshot:
        index, term, rows, config = msgpack.unpackb(data)
        entries = tuple(Entry(i, t, EntryKind(k), d) for i, t, k, d in rows)
        return SimSnapshot(index, term, entries, Membership.decode(config) if config else None)


class Receiver:
    """A follower's partial transfer (lost on a crash, like a temp file removed at restart)."""

    def __init__(self) -> None:
        self.ref: SnapshotRef | None = None
        self.data = bytearray()

    def accept(
        self, ref: SnapshotRef, offset: int, data: bytes, done: bool
    ) -> tuple[int, SimSnapshot | None]:
        """Returns (offset wanted next, the snapshot when this chunk completed it)."""
        if offset == 0 and ref != self.ref:
            self.ref, self.data = ref, bytearray()
        if ref != self.ref:
            return 0, None
        if offset != len(self.data):
            return len(self.data), None
        self.data += data
        if not done:
            return len(self.data), None
        snapshot = SimSnapshot.decode(bytes(self.data))
        self.ref, self.data = None, bytearray()
        if snapshot.ref != ref:
            raise AssertionError(f"snapshot bytes say {snapshot.ref}, the transfer said {ref}")
        return 0, snapshot

"""The snapshot actor: snapshots the state machine now and then so the log can be compacted.

The applier is paused only for ``capture`` (copying references); encoding runs
in a worker thread while applies go on, then the storage writes the file,
fsyncs and renames it. Only then is the log compacted, and one snapshot behind
(thesis 5.1.1 leaves the policy open): if the newest snapshot file is ever
found damaged, the previous one plus the log still rebuild the state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from pyraft.actors.events import SnapshotSaved
from pyraft.actors.heap import freeze_heap
from pyraft.core.log import LogError
from pyraft.core.ready import SnapshotRef
from pyraft.storage.snapshot import SnapshotMeta

if TYPE_CHECKING:
    from pyraft.actors.node import RaftNode

log = logging.getLogger("pyraft.snapshot")

DEFAULT_SNAPSHOT_ENTRIES = 100_000
DEFAULT_SNAPSHOT_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When to snapshot (whichever comes first) and how big InstallSnapshot chunks are."""

    entries: int = DEFAULT_SNAPSHOT_ENTRIES  # applied entries since the last snapshot; 0: never
    bytes: int = DEFAULT_SNAPSHOT_BYTES  # applied command bytes since the last snapshot
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.entries < 0 or self.bytes < 1 or not 1 <= self.chunk_bytes <= 8 << 20:
            raise ValueError("snapshot entries >= 0, bytes >= 1 and chunk size in 1 B..8 MiB")


class Snapshotter:
    def __init__(
        self, node: RaftNode, policy: SnapshotPolicy, latest: SnapshotRef | None, *, offload: bool = True
    ) -> None:
        self.node = node
        self.policy = policy
        self.latest = latest  # the newest snapshot in storage (ours or installed)
        self.taken = 0
        self.installs = 0
        self._offload = offload
        self._bytes_at_latest = 0
        self._due = trio.Event()
        node.applier.after_batch = self.poke

    def poke(self) -> None:
        """Called by the applier after each batch: wakes the actor once a snapshot is due."""
        if self._is_due():
            self._due.set()

    def installed(self, snapshot: SnapshotRef) -> None:
        """A snapshot from the leader replaced our log: it counts as our latest."""
        self.latest = snapshot
        self.installs += 1
        self._bytes_at_latest = self.node.applier.applied_bytes

    def _is_due(self) -> bool:
        if not self.policy.entries:
            return False
        applier = self.node.applier
        since = applier.applied_index - (self.latest.index if self.latest else 0)
        return since >= self.policy.entries or (
            since > 0 and applier.applied_bytes - self._bytes_at_latest >= self.policy.bytes
        )

    async def run(self, inbox: trio.MemorySendChannel[object]) -> None:
        while True:
            await self._due.wait()
            await self.take(inbox)
            # Re-armed only now: applies during the write were measured against the old
            # snapshot and would ask for another one a few entries later.
            self._due = trio.Event()
            self.poke()

    async def take(self, inbox: trio.MemorySendChannel[object]) -> SnapshotRef | None:
        """Snapshot the state as applied right now; None when it cannot be taken yet."""
        node = self.node
        index, log_ = node.applier.applied_index, node.core.log
        if index <= (self.latest.index if self.latest else 0) or index > log_.stable_index:
            return None  # nothing new, or not durable here yet: the next batch pokes again
        try:
            term = log_.term_at(index)
        except LogError:
            return None  # an installed snapshot is about to move the applier past this point
        # Read now, with the capture: while the state is encoded in the thread below, an
        # installed snapshot can move the log's base past ``index``, and membership_at would
        # then raise (it took a restarted node down in a fault test); the save refuses the
        # overtaken snapshot instead.
        membership = node.core.membership_at(index)
        encode = node.state_machine.capture()
        applied_bytes = node.applier.applied_bytes
        data = await trio.to_thread.run_sync(encode) if self._offload else encode()
        meta = SnapshotMeta(index, term, tuple(sorted(membership.voter_ids)), config=membership.encode())
        storage = node.storage.storage
        # Written and synced outside the storage actor's lock: that takes 0.3 s or more for
        # the 55 MB of 100,000 brokers, and every node snapshots at about the same index,
        # so appends waiting behind it stalled the whole quorum (fsync on, 1024 in flight).
        if self._offload:
            prepared = await trio.to_thread.run_sync(storage.prepare_snapshot, meta, data)
        else:
            prepared = storage.prepare_snapshot(meta, data)
        try:
            await node.storage.call(storage.save_prepared_snapshot, prepared)
        except ValueError as exc:
            log.info("snapshot at %d skipped: %s", index, exc)  # e.g. an installed snapshot overtook it
            return None
        previous = self.latest.index if self.latest else 0
        self.latest = SnapshotRef(index, term)
        self._bytes_at_latest = applied_bytes
        self.taken += 1
        node.state_machine.compact(index)
        freeze_heap()
        await inbox.send(SnapshotSaved(index, term, compact_to=previous))
        log.info(
            "node %d: snapshot at index %d (%d bytes), log compacted to %d",
            node.node_id,
            index,
            len(data),
            previous,
        )
        return self.latest

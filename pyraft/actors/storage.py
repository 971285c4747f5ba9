"""The storage actor: makes entries durable with one fsync per batch (group commit).

While one batch is being written, new entries queue up and go out together in
the next write, so the fsync rate stays bounded however fast proposals come.
The blocking write runs in trio's worker thread (as trio's own file API does)
so the raft loop keeps sending and receiving while the disk works; a write
that does not fsync (``Storage.syncs``) runs inline, as the hop would cost more.
When such a write finds the actor idle, the raft loop makes it itself
(``append_now``): the entries are then durable as far as this storage promises
within the same step, and a follower's acknowledgement leaves before anything
else runs (its apply of the previous batch, above all).

InstallSnapshot chunks travel through the same queue as entry batches: a
snapshot that replaces the log must land after every batch handed out before
it and before every batch after it, exactly as the core saw them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from pyraft.actors.events import Persisted, SnapshotStored
from pyraft.channels import hand_over
from pyraft.core.membership import Membership
from pyraft.core.messages import Entry, HardState, InstallSnapshot
from pyraft.storage.base import Storage
from pyraft.storage.snapshot import SnapshotMeta

T = TypeVar("T")

DiskItem = list[Entry] | InstallSnapshot


class StorageActor:
    def __init__(self, storage: Storage, *, offload: bool = True) -> None:
        self.storage = storage
        # In-memory storage never blocks; running it inline keeps trio's MockClock from
        # jumping ahead while a worker thread runs, so actor tests stay in zero wall time.
        self._offload = offload
        self._lock = trio.Lock()  # one user of the storage object at a time
        self._submit, self._items = trio.open_memory_channel[DiskItem](math.inf)
        self.fsyncs = 0
        self.entries_written = 0

    def submit(self, item: DiskItem) -> None:
        """Queue an entry batch or a snapshot chunk; ``run`` stores them in this order."""
        self._submit.send_nowait(item)

    def close(self) -> None:
        """No more items: ``run`` returns once it has stored those already queued."""
        self._submit.close()

    def append_now(self, entries: list[Entry]) -> bool:
        """Append ``entries`` here and now if that keeps every promise of the queue: the storage
        does not fsync, nothing is queued or being written before them, and no other operation
        (a snapshot save, a chunk read in the worker thread) holds the storage. False: submit."""
        queue = self._submit.statistics()
        idle = queue.tasks_waiting_receive and not queue.current_buffer_used  # ``run`` holds nothing
        if self.storage.syncs or not idle or self._lock.locked():
            return False
        self.storage.append(entries)
        self._count(entries)
        return True

    def _count(self, entries: list[Entry]) -> None:
        self.fsyncs += 1
        self.entries_written += len(entries)

    async def save_hard_state(self, hard_state: HardState) -> None:
        await self.call(self.storage.save_hard_state, hard_state, blocks=self.storage.syncs)

    async def call(self, fn: Callable[..., T], *args: Any, blocks: bool = True) -> T:
        """Run one storage operation: in the worker thread if it ``blocks`` (reads, fsyncs)
        and the storage is not in memory, else inline."""
        async with self._lock:
            if self._offload and blocks:
                return await trio.to_thread.run_sync(fn, *args)
            result = fn(*args)
            await trio.lowlevel.checkpoint()
            return result

    async def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return await self.call(self.storage.read_snapshot)

    async def run(self, inbox: trio.MemorySendChannel[object]) -> None:
        items = self._items
        carry: DiskItem | None = None
        while True:
            if carry is None:
                try:
                    carry = await items.receive()
                except trio.EndOfChannel:
                    return
            item, carry = carry, None
            if isinstance(item, InstallSnapshot):
                await inbox.send(await self._store_chunk(item))
                continue
            pending = item
            while True:  # group commit: merge entry batches queued meanwhile, up to a chunk
                try:
                    later = items.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if isinstance(later, InstallSnapshot):
                    carry = later
                    break
                pending = merge(pending, later)
            await self.call(self.storage.append, pending, blocks=self.storage.syncs)
            self._count(pending)
            await hand_over(inbox, Persisted(pending[-1].index, pending[-1].term))

    async def _store_chunk(self, chunk: InstallSnapshot) -> SnapshotStored:
        args = (chunk.last_index, chunk.last_term, chunk.offset, chunk.data, chunk.done)
        next_offset, installed = await self.call(self.storage.receive_chunk, *args)
        return SnapshotStored(chunk, next_offset, None if installed is None else membership_of(installed))


def membership_of(meta: SnapshotMeta) -> Membership:
    """The quorum configuration a snapshot holds (older files carry only the voter ids)."""
    return Membership.decode(meta.config) if meta.config else Membership.of_ids(meta.voters)


def merge(pending: list[Entry], later: list[Entry]) -> list[Entry]:
    """Join two batches in order; a later batch that starts lower replaces the overlap."""
    if not later:
        return pending
    first = later[0].index
    if not pending or first <= pending[0].index:
        return later
    return pending[: first - pending[0].index] + later

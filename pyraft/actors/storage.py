"""The storage actor: makes entries durable with one fsync per batch (group commit).

While one batch is being written, new entries queue up and go out together in
the next write, so the fsync rate stays bounded however fast proposals come.
The blocking write runs in trio's worker thread (as trio's own file API does)
so the raft loop keeps sending and receiving while the disk works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from pyraft.actors.events import Persisted
from pyraft.core.messages import Entry, HardState
from pyraft.storage.base import Storage

T = TypeVar("T")


class StorageActor:
    def __init__(self, storage: Storage, *, offload: bool = True) -> None:
        self.storage = storage
        # In-memory storage never blocks; running it inline keeps trio's MockClock from
        # jumping ahead while a worker thread runs, so actor tests stay in zero wall time.
        self._offload = offload
        self._lock = trio.Lock()  # one writer of the storage object at a time
        self.fsyncs = 0
        self.entries_written = 0

    async def save_hard_state(self, hard_state: HardState) -> None:
        async with self._lock:
            await self._call(self.storage.save_hard_state, hard_state)

    async def run(
        self, batches: trio.MemoryReceiveChannel[list[Entry]], inbox: trio.MemorySendChannel[object]
    ) -> None:
        async for batch in batches:
            pending = batch
            while True:
                try:
                    pending = merge(pending, batches.receive_nowait())
                except trio.WouldBlock:
                    break
            async with self._lock:
                await self._call(self.storage.append, pending)
            self.fsyncs += 1
            self.entries_written += len(pending)
            await inbox.send(Persisted(pending[-1].index, pending[-1].term))

    async def _call(self, fn: Callable[[T], None], arg: T) -> None:
        if self._offload:
            await trio.to_thread.run_sync(fn, arg)
        else:
            fn(arg)
            await trio.lowlevel.checkpoint()


def merge(pending: list[Entry], later: list[Entry]) -> list[Entry]:
    """Join two batches in order; a later batch that starts lower replaces the overlap."""
    if not later:
        return pending
    first = later[0].index
    if not pending or first <= pending[0].index:
        return later
    return pending[: first - pending[0].index] + later

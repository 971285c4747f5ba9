"""The applier actor: applies committed entries in order and wakes whoever waits on them.

It is the only writer of the state machine, so reads that wait for
``applied_index`` see every entry up to it and nothing half-applied.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from pyraft.actors.heap import freeze_heap
from pyraft.core.messages import Entry, EntryKind
from pyraft.core.ready import SnapshotRef
from pyraft.statemachine import StateMachine
from pyraft.storage.snapshot import SnapshotMeta

SnapshotLoader = Callable[[], Awaitable[tuple[SnapshotMeta, bytes] | None]]

RECENT_RESULTS = 4096  # results kept for a proposer that learns its index after the apply
# The applier shares the trio thread with the raft loop: a long run of applies
# (a state machine costs ~50-100 us per entry, a burst can hold thousands) would
# hold back heartbeats and votes, and on a loaded machine long enough for the
# followers' election timers to fire. So it yields after this much work.
APPLY_SLICE_SECONDS = 0.002
# Applied entries between two heap freezes (heap.freeze_heap). Every applied record stays
# alive in the state machine, so without freezing each full collection of the cyclic GC
# walks all of them again: at 100k-200k brokers a pass took 140-230 ms and came every 3 s,
# a leader silent for that long loses its followers. Frozen every 20k entries, a pass
# walks at most the objects made since.
FREEZE_EVERY = 20_000


@dataclass(slots=True)
class Applied:
    index: int
    result: bytes


class ProposalLost(Exception):
    """The index a proposal was accepted at now holds another term's entry: it was never applied."""


class ProposalInSnapshot(Exception):
    """The proposal's index arrived inside an installed snapshot: it may or may not be in it."""


class ProposalWaiter:
    """One proposal's outcome. ``then``, if set before it settles, is called when it does: a
    proposer can count a batch's settled proposals without a wake-up per proposal."""

    __slots__ = ("error", "event", "result", "then")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Applied | None = None
        self.error: Exception | None = None
        self.then: Callable[[], None] | None = None

    def settle(self, result: Applied | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.event.set()
        if self.then is not None:
            self.then()


class Applier:
    def __init__(
        self,
        state_machine: StateMachine,
        load_snapshot: SnapshotLoader | None = None,
        *,
        offload: bool = True,
    ) -> None:
        self.state_machine = state_machine
        self._load_snapshot = load_snapshot
        self._offload = offload
        self.applied_index = 0
        self.applied_bytes = 0  # command bytes applied since start, for the snapshot trigger
        self.after_batch: Callable[[], None] = _nothing
        self._recent: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._proposals: dict[int, tuple[int, ProposalWaiter]] = {}
        self._index_waiters: list[tuple[int, int, trio.Event]] = []
        self._order = itertools.count()
        self._unfrozen = 0  # entries applied since the heap was last frozen

    async def run(self, committed: trio.MemoryReceiveChannel[list[Entry] | SnapshotRef]) -> None:
        clock = time.perf_counter
        async for batch in committed:
            if isinstance(batch, SnapshotRef):
                await self.restore(batch)
                continue
            yield_at = clock() + APPLY_SLICE_SECONDS
            for entry in batch:
                self._apply(entry)
                if clock() >= yield_at:
                    self._wake_index_waiters()
                    await trio.lowlevel.checkpoint()
                    yield_at = clock() + APPLY_SLICE_SECONDS
            self._wake_index_waiters()
            self.after_batch()
            self._unfrozen += len(batch)
            if self._unfrozen >= FREEZE_EVERY:
                self._unfrozen = 0
                freeze_heap()
            await trio.lowlevel.checkpoint()

    def _apply(self, entry: Entry) -> None:
        result = b""
        if entry.kind is EntryKind.COMMAND:
            result = self.state_machine.apply(entry.index, entry.data)
        else:
            self.state_machine.apply_noop(entry.index)
        self.applied_index = entry.index
        self.applied_bytes += len(entry.data)
        self._recent[entry.index] = (entry.term, result)
        if len(self._recent) > RECENT_RESULTS:
            self._recent.popitem(last=False)
        waiting = self._proposals.pop(entry.index, None)
        if waiting is not None:
            self._settle(waiting[1], waiting[0], entry.index, entry.term, result)

    async def restore(self, snapshot: SnapshotRef) -> None:
        """Load an installed snapshot in place of applying the entries it covers (Ready.restore)."""
        if self._load_snapshot is None:
            raise RuntimeError("a snapshot was installed but this applier cannot load snapshots")
        loaded = await self._load_snapshot()
        if loaded is None or (loaded[0].last_index, loaded[0].last_term) != (snapshot.index, snapshot.term):
            found = None if loaded is None else (loaded[0].last_index, loaded[0].last_term)
            raise RuntimeError(f"storage holds snapshot {found}, the core installed {snapshot}")
        if self._offload:
            install = await trio.to_thread.run_sync(self.state_machine.restore, loaded[1])
        else:
            install = self.state_machine.restore(loaded[1])
        install()
        freeze_heap()
        self.applied_index = snapshot.index
        self._recent.clear()
        for index in [i for i in self._proposals if i <= snapshot.index]:
            waiter = self._proposals.pop(index)[1]
            waiter.settle(error=ProposalInSnapshot(f"index {index} arrived inside snapshot {snapshot.index}"))
        self._wake_index_waiters()

    def watch_proposal(self, index: int, term: int) -> ProposalWaiter:
        """A waiter settled when ``index`` is applied: with its result if it holds ``term``."""
        waiter = ProposalWaiter()
        if index <= self.applied_index:
            seen = self._recent.get(index)
            if seen is None:
                waiter.settle(error=ProposalInSnapshot(f"index {index} was applied too long ago to know"))
            else:
                self._settle(waiter, term, index, *seen)
            return waiter
        previous = self._proposals.get(index)
        if previous is not None:  # an older proposal at the same index was overwritten
            previous[1].settle(error=ProposalLost(f"index {index} was taken over by a newer leader"))
        self._proposals[index] = (term, waiter)
        return waiter

    @staticmethod
    def _settle(waiter: ProposalWaiter, term: int, index: int, entry_term: int, result: bytes) -> None:
        if entry_term == term:
            waiter.settle(Applied(index, result))
        else:
            lost = ProposalLost(f"entry {index} of term {term} was overwritten by term {entry_term}")
            waiter.settle(error=lost)

    async def wait_applied(self, index: int) -> None:
        if index <= self.applied_index:
            return
        event = trio.Event()
        heapq.heappush(self._index_waiters, (index, next(self._order), event))
        await event.wait()

    def _wake_index_waiters(self) -> None:
        while self._index_waiters and self._index_waiters[0][0] <= self.applied_index:
            heapq.heappop(self._index_waiters)[2].set()


def _nothing() -> None:
    pass

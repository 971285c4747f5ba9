"""What a leader knows about one follower's log (nextIndex and matchIndex, Figure 2).

A follower is either being *probed* (one AppendEntries at a time until the
leader finds where their logs agree), *replicated to* (pipelined: several
AppendEntries in flight, nextIndex advanced optimistically as they are sent),
or sent a *snapshot* (one chunk in flight) because the entries it needs next
were compacted away.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    probing: bool = True
    # In probe mode: a probe is outstanding; cleared by its answer or the next heartbeat.
    paused: bool = False
    # In replicate mode: last index carried by each AppendEntries still in flight.
    inflight: deque[int] = field(default_factory=deque)
    # Ticks since the follower last acknowledged progress, to detect a lost pipeline.
    stalled_ticks: int = 0
    # Heard from in the current CheckQuorum window.
    recent_active: bool = False
    # Highest heartbeat round (seq) the follower has answered in this term.
    acked_seq: int = 0
    # Highest commit index sent to this follower.
    sent_commit: int = 0
    # Snapshot mode: (index, term) of the snapshot being sent and the offset of the next chunk.
    snapshot: tuple[int, int] | None = None
    snapshot_offset: int = 0
    # Rejections of rounds below this are stale: they predate an installed snapshot.
    floor_seq: int = 0

    def become_probe(self, next_index: int) -> None:
        self.snapshot = None
        self.probing = True
        self.paused = False
        self.next = max(next_index, self.match + 1)
        self.inflight.clear()

    def become_snapshot(self, snapshot: tuple[int, int]) -> None:
        self.snapshot = snapshot
        self.snapshot_offset = 0
        self.probing = True  # nothing is pipelined while a snapshot is on its way
        self.paused = False
        self.stalled_ticks = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.snapshot = None
        self.probing = False
        self.paused = False
        self.next = self.match + 1
        self.inflight.clear()

    def acknowledge(self, match: int) -> bool:
        """Record a successful answer; True when it moved matchIndex forward."""
        if match <= self.match:
            return False
        self.stalled_ticks = 0
        self.match = match
        self.next = max(self.next, match + 1)
        while self.inflight and self.inflight[0] <= match:
            self.inflight.popleft()
        return True

    def sent(self, last_index: int) -> None:
        """An AppendEntries carrying entries up to ``last_index`` left."""
        if self.probing:
            self.paused = True
            return
        self.next = last_index + 1
        self.inflight.append(last_index)

    def can_send(self, max_inflight: int) -> bool:
        if self.probing:
            return not self.paused
        return len(self.inflight) < max_inflight

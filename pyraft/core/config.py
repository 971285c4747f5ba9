"""Static configuration of one Raft core, in ticks (the core has no clock)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    node_id: int
    # The bootstrap configuration, used until the log or a snapshot holds one. A node
    # outside it starts as an observer: it follows, never campaigns, until it is added.
    voters: tuple[int, ...]
    # Election timeout is drawn uniformly from [election_ticks, 2 * election_ticks).
    election_ticks: int = 15
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    # Pipelining: AppendEntries messages carrying entries in flight per follower.
    max_inflight: int = 32
    # Batching: upper bounds for the entries of one AppendEntries.
    max_entries_per_message: int = 4096
    max_bytes_per_message: int = 1 << 20

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"duplicate voter ids in {self.voters}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight < 1 or self.max_entries_per_message < 1:
            raise ValueError("max_inflight and max_entries_per_message must be >= 1")

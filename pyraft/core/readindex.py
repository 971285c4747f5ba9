"""The leader's queue of linearizable reads (ReadIndex, thesis 6.4), after etcd's read_only.go.

A read may be answered at the commit index it arrived at once two things hold:
the leader has committed an entry of its own term (otherwise its commit index
may lag what an earlier leader committed), and a quorum has answered a
heartbeat round started after the read arrived (otherwise a newer leader may
exist). Rounds are numbered (``seq``) so one round confirms every read queued
before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    request_id: int
    origin: int  # the node that asked; the leader's own id for a local read
    index: int  # commitIndex when the read was admitted
    seq: int  # the heartbeat round a quorum must answer


@dataclass(slots=True)
class ReadQueue:
    before_commit: list[PendingRead] = field(default_factory=list)  # step 1: wait for our no-op
    pending: list[PendingRead] = field(default_factory=list)  # step 2: wait for a quorum round
    round_wanted: bool = False  # a new round must start at the next flush

    def admit(self, read: PendingRead, committed_in_term: bool) -> None:
        if not committed_in_term:
            self.before_commit.append(read)
            return
        self.pending.append(read)
        self.round_wanted = True

    def admit_waiting(self, commit_index: int, next_seq: int) -> None:
        """Our first entry is committed: reads that waited for it can start their round."""
        waiting, self.before_commit = self.before_commit, []
        for read in waiting:
            read.index, read.seq = commit_index, next_seq
            self.admit(read, committed_in_term=True)

    def confirmed(self, seq: int) -> list[PendingRead]:
        """Remove and return the reads whose round (or a later one) a quorum answered."""
        done = [read for read in self.pending if read.seq <= seq]
        if done:
            self.pending = [read for read in self.pending if read.seq > seq]
        return done

    def take_all(self) -> list[PendingRead]:
        """Remove every read (leadership was lost: none of them may be answered)."""
        reads = self.pending + self.before_commit
        self.pending, self.before_commit, self.round_wanted = [], [], False
        return reads

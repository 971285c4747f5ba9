"""The closed set of values the Raft core consumes and produces.

Everything that crosses a node boundary is one of the message classes below;
the wire codec refuses anything else. Names follow the Raft paper (Figure 2)
and Ongaro's thesis. Every message carries ``src``, ``dst`` and ``term`` so
the core can route and apply the term rules uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class EntryKind(IntEnum):
    """What a log entry holds; the core interprets NOOP and CONFIG, never COMMAND."""

    COMMAND = 0
    NOOP = 1  # appended by a new leader so it can commit entries of its term
    CONFIG = 2  # a Membership (pyraft.core.membership), in effect once appended


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.COMMAND
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before any message that depends on it leaves."""

    term: int = 0
    voted_for: int | None = None


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: int
    dst: int
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False  # thesis 9.6: a trial election that changes no state
    transfer: bool = False  # sent after TimeoutNow: voters ignore leader stickiness


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: int
    dst: int
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    seq: int = 0  # leader's heartbeat round, echoed back; confirms leadership for ReadIndex


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """On success ``match_index`` is the highest index the follower holds durably
    and knows to match the leader. On failure ``match_index`` echoes the rejected
    ``prev_log_index`` (so the leader can tell a stale rejection from a fresh one)
    and ``conflict_index``/``conflict_term`` let the leader skip a whole term of
    mismatching entries at once (thesis 5.4.2)."""

    src: int
    dst: int
    term: int
    success: bool
    match_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer (thesis 3.10): start an election right now."""

    src: int
    dst: int
    term: int


@dataclass(frozen=True, slots=True)
class ProposeRequest:
    """A follower forwarding a client's command to the leader.

    Term-neutral: the receiver never changes term because of it; the sender
    checks the entry's term when it applies the returned index."""

    src: int
    dst: int
    term: int
    request_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ProposeResponse:
    src: int
    dst: int
    term: int
    request_id: int
    ok: bool
    index: int = 0
    entry_term: int = 0
    leader_hint: int | None = None


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asking the leader for a linearizable read index (thesis 6.4). Term-neutral."""

    src: int
    dst: int
    term: int
    request_id: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    src: int
    dst: int
    term: int
    request_id: int
    ok: bool
    read_index: int = 0
    leader_hint: int | None = None


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot file (section 7, thesis 5.3).

    ``data`` is the file's bytes from ``offset``; ``done`` marks the last chunk.
    The leader keeps one chunk in flight per follower, so a slow follower is
    never buried under a whole snapshot's worth of frames."""

    src: int
    dst: int
    term: int
    last_index: int
    last_term: int
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """``installed``: the follower now holds the snapshot durably (its matchIndex is
    ``last_index``). Otherwise ``next_offset`` says which chunk it wants next."""

    src: int
    dst: int
    term: int
    last_index: int
    last_term: int
    next_offset: int
    installed: bool


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | TimeoutNow
    | ProposeRequest
    | ProposeResponse
    | ReadIndexRequest
    | ReadIndexResponse
    | InstallSnapshot
    | InstallSnapshotResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    TimeoutNow,
    ProposeRequest,
    ProposeResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
)

# Messages that never move the receiver's term (requests routed through the leader).
TERM_NEUTRAL: tuple[type, ...] = (ProposeRequest, ProposeResponse, ReadIndexRequest, ReadIndexResponse)

"""The effects a core step produces, handed to the caller as data (etcd's Ready)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyraft.core.messages import Entry, HardState, InstallSnapshot, Message


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once lastApplied >= ``index``."""

    request_id: int
    index: int


@dataclass(frozen=True, slots=True)
class ProposalAccepted:
    """The leader appended the proposal at ``index`` in ``term``.

    It is committed and applied only if the entry found at ``index`` when it is
    applied still has ``term``; otherwise it was overwritten and never applied."""

    request_id: int
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A forwarded proposal or read that will not complete; the caller should retry elsewhere."""

    request_id: int
    reason: str
    leader_hint: int | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A snapshot, named by the last log entry it covers."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotSend:
    """Read the chunk of snapshot ``snapshot`` at ``offset`` and send it to ``peer`` as an
    InstallSnapshot of ``term``. The core has no files, so the caller fills in the bytes."""

    peer: int
    term: int
    snapshot: SnapshotRef
    offset: int


@dataclass(slots=True)
class Ready:
    """One batch of effects, to be handled in this order:

    1. ``hard_state`` (if not None): make durable (fsync) before sending any message.
    2. ``messages``: send (loss is tolerated by the protocol).
    3. ``entries``: append durably, first truncating any stored entries at or
       after ``entries[0].index``; then call ``core.persisted(last.index, last.term)``.
       This may run in parallel with 2 (thesis 10.2.1): the core never counts or
       acknowledges an entry before ``persisted`` says so.
    4. ``committed``: apply in order.
    5. ``read_states`` / ``proposals`` / ``failed``: complete waiting requests.

    Snapshots (follower): ``snapshot_writes`` are chunks to store, in order
    after ``entries``; report each with ``snapshot_chunk_stored``. ``restore``
    (if not None) names an installed snapshot the state machine must load
    before it applies ``committed``. Leader: ``snapshot_sends`` are chunks to
    read and send (best effort, like messages).
    """

    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    proposals: list[ProposalAccepted] = field(default_factory=list)
    failed: list[RequestFailed] = field(default_factory=list)
    snapshot_sends: list[SnapshotSend] = field(default_factory=list)
    snapshot_writes: list[InstallSnapshot] = field(default_factory=list)
    restore: SnapshotRef | None = None

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.messages
            or self.entries
            or self.committed
            or self.read_states
            or self.proposals
            or self.failed
            or self.snapshot_sends
            or self.snapshot_writes
            or self.restore is not None
        )

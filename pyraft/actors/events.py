"""What other actors put into the raft loop's inbox besides peer messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyraft.core.membership import Membership
from pyraft.core.messages import InstallSnapshot

if TYPE_CHECKING:
    from pyraft.core.raft import RaftCore


@dataclass(frozen=True, slots=True)
class TimerWake:
    """The timer's deadline passed: credit the ticks due, timers included (see actors/timer.py).
    ``late``: the timer itself woke more than a tick interval after its deadline (a stall)."""

    late: bool


@dataclass(frozen=True, slots=True)
class Persisted:
    """The storage actor made entries up to ``index`` durable."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotStored:
    """The storage actor took an InstallSnapshot chunk; ``installed`` is the membership of the
    snapshot it completed and installed, if it did."""

    chunk: InstallSnapshot
    next_offset: int
    installed: Membership | None


@dataclass(frozen=True, slots=True)
class SnapshotSaved:
    """This node's own snapshot up to (index, term) is durable; the log may be compacted to ``compact_to``."""

    index: int
    term: int
    compact_to: int


@dataclass(frozen=True, slots=True)
class ProposeCmd:
    request_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ProposeManyCmd:
    """Several proposals in one inbox event: ``(request_id, data)`` pairs, in order."""

    items: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class ReadCmd:
    request_id: int


@dataclass(frozen=True, slots=True)
class MembershipCmd:
    """Run one membership change on the leader's core; it returns (index, term) of the entry."""

    request_id: int
    change: Callable[[RaftCore], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class TransferCmd:
    request_id: int
    target: int | None

"""A node's event log: a bounded ring of timestamped, significant events, for operators.

It is observability, not state: nothing here is replicated or read back by the
metadata store, so losing it on restart (or to the ring's bound) changes nothing.
Events are numbered per node (``seq``), so ``GET /events?since=N`` pages forward
without gaps or repeats while the ring holds them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from pyraft.actors.node import RaftNode

DEFAULT_CAPACITY = 2048

# Event kinds (the ``kind`` field); the docs and the OpenAPI schema list the same set.
ROLE_CHANGED = "role_changed"
TERM_CHANGED = "term_changed"
LEADER_CHANGED = "leader_changed"
ELECTION_STARTED = "election_started"
API_WRITE = "api_write"
PEER_CONNECTED = "peer_connected"
PEER_SILENT = "peer_silent"
PEER_HEARD = "peer_heard"
NODE_STARTED = "node_started"
EVENT_KINDS = (
    NODE_STARTED,
    ROLE_CHANGED,
    TERM_CHANGED,
    LEADER_CHANGED,
    ELECTION_STARTED,
    API_WRITE,
    PEER_CONNECTED,
    PEER_SILENT,
    PEER_HEARD,
)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float  # wall clock, seconds since the epoch
    kind: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "detail": self.detail}


class EventLog:
    """The ring. ``clock`` is injectable so tests on trio's fake clock need not read wall time."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("the event log needs room for at least one event")
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next_seq = 1
        self._clock = clock

    def record(self, kind: str, **detail: Any) -> Event:
        event = Event(self._next_seq, self._clock(), kind, detail)
        self._next_seq += 1
        self._events.append(event)
        return event

    def since(self, seq: int = 0, limit: int = 100) -> list[Event]:
        """Events numbered above ``seq``, oldest first, at most ``limit`` of them."""
        out: list[Event] = []
        for event in self._events:
            if event.seq > seq:
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def __len__(self) -> int:
        return len(self._events)


class NodeWatcher:
    """Turns changes of a RaftNode's role, term and leader, and its peers' traffic, into events.

    Role changes come from ``node.role_changed`` (set by the raft loop on every
    change); peer traffic is sampled from ``node.transport.stats`` at a fixed
    interval, which is cheap and needs no hook in the transport. Silence is only
    judged while leader: a follower legitimately hears nothing from other followers.
    """

    def __init__(self, node: RaftNode, events: EventLog, *, peer_interval: float | None = None) -> None:
        self.node = node
        self.events = events
        timeout = node.timing.election_timeout_ms / 1000
        self.peer_interval = peer_interval if peer_interval is not None else timeout
        self._last = _snapshot(node)
        self._received: dict[int, int] = {}
        self._connects: dict[int, int] = {}
        self._silent: set[int] = set()

    async def run(self) -> None:
        self.events.record(NODE_STARTED, nodeId=self.node.node_id, **self._last)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_roles)
            nursery.start_soon(self._watch_peers)

    async def _watch_roles(self) -> None:
        while True:
            changed = self.node.role_changed
            await changed.wait()
            self.note_status()

    def note_status(self) -> None:
        """Record what changed since the last look (changes in between coalesce)."""
        now = _snapshot(self.node)
        before, self._last = self._last, now
        if now["term"] != before["term"]:
            self.events.record(TERM_CHANGED, term=now["term"], previous=before["term"])
        if now["role"] != before["role"]:
            self.events.record(ROLE_CHANGED, role=now["role"], previous=before["role"], term=now["term"])
            if now["role"] == "candidate":
                self.events.record(ELECTION_STARTED, term=now["term"])
        if now["leaderId"] != before["leaderId"]:
            self.events.record(
                LEADER_CHANGED, leaderId=now["leaderId"], previous=before["leaderId"], term=now["term"]
            )

    async def _watch_peers(self) -> None:
        while True:
            await trio.sleep(self.peer_interval)
            self.sample_peers()

    def sample_peers(self) -> None:
        stats = self.node.transport.stats
        leading = self._last["role"] == "leader"
        members = self.node.core.membership.ids - {self.node.node_id}  # the live configuration
        self._silent &= members
        for peer in sorted(members):
            connects, received = stats.connects[peer], stats.received[peer]
            if connects > self._connects.get(peer, 0):
                self.events.record(PEER_CONNECTED, peer=peer, connects=connects)
            heard = received > self._received.get(peer, 0)
            if heard and peer in self._silent:
                self._silent.discard(peer)
                self.events.record(PEER_HEARD, peer=peer)
            elif not heard and leading and peer not in self._silent:
                self._silent.add(peer)
                self.events.record(PEER_SILENT, peer=peer, seconds=self.peer_interval)
            self._connects[peer], self._received[peer] = connects, received


def _snapshot(node: RaftNode) -> dict[str, Any]:
    status = node.status()
    return {"role": status["role"], "term": status["term"], "leaderId": status["leaderId"]}

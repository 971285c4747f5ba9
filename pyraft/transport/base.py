"""The seam between a node and its network.

The node hands messages to ``send`` and reads them from the inbox it passes to
``run``; it never learns whether they went over TCP or through the in-memory
test network. ``send`` is synchronous and never blocks because Raft tolerates
loss but not a leader stalled behind one slow follower.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import trio

from pyraft.core.messages import Message
from pyraft.wire.client_protocol import ClientRequest, ClientResponse


class ClientHandler(Protocol):
    """Answers one client request; called concurrently for requests in flight."""

    async def __call__(self, request: ClientRequest) -> ClientResponse: ...


@runtime_checkable
class BatchClientHandler(ClientHandler, Protocol):
    """A handler that can also take a burst of proposals at once.

    The transport hands it every proposal that arrived in one read from a client
    connection, so the burst reaches the raft loop as one event, shares one wakeup
    and is answered with one write. The answers are in the order of ``requests``."""

    async def handle_batch(self, requests: Sequence[ClientRequest]) -> list[ClientResponse]: ...


class Transport(Protocol):
    def send(self, msg: Message) -> None:
        """Enqueue ``msg`` for ``msg.dst`` without blocking.

        Dropped (and counted in ``stats``) when the destination is unknown or its
        outbox is full. Raises CodecError for a message that cannot be encoded,
        since that is a bug in the caller rather than a network condition.
        """
        ...

    async def run(
        self,
        inbox: trio.MemorySendChannel[Message],
        client_handler: ClientHandler | None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver incoming messages to ``inbox`` until cancelled; ``started()`` once reachable."""
        ...

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """The quorum changed: ``peers`` maps every other member's id to its "host:port".

        Links to new members open, links to departed ones close; the node calls
        this whenever a configuration takes effect (on append, thesis 4.1)."""
        ...

    @property
    def stats(self) -> TransportStats: ...


@dataclass
class TransportStats:
    """Counters for operators and tests; keys of the per-peer counters are node ids."""

    sent: Counter[int] = field(default_factory=Counter)  # messages handed to the network
    dropped: Counter[int] = field(default_factory=Counter)  # outbox full, unknown dst, too big, lost
    received: Counter[int] = field(default_factory=Counter)  # messages delivered to the inbox
    rejected: Counter[str] = field(default_factory=Counter)  # connections closed, by reason code
    connects: Counter[int] = field(default_factory=Counter)  # outbound handshakes that succeeded

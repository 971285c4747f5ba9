"""An in-process network for actor and simulation tests.

It behaves like TcpTransport where the node can tell (bounded per-destination
outboxes with drop-oldest, per-pair FIFO order, loss under faults) and it
pushes every message through the real codec, so a message the wire would
refuse fails here too, at the ``send`` call that produced it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any

import trio

from pyraft.channels import hand_over
from pyraft.core.messages import Message
from pyraft.transport.base import ClientHandler, TransportStats
from pyraft.transport.tcp import DEFAULT_OUTBOX_SIZE
from pyraft.wire.client_protocol import BAD_REQUEST, OPS, ClientRequest, ClientResponse
from pyraft.wire.codec import decode, encode, is_raft_message
from pyraft.wire.frames import DEFAULT_MAX_FRAME_SIZE


class MemoryNetwork:
    """The hub all MemoryTransports of one test share, and the knobs for faults.

    Faults are checked both when a message is sent and when it is delivered, so
    a partition also swallows messages already in flight, as a real one would.
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        drop_rate: float = 0.0,
        outbox_size: int = DEFAULT_OUTBOX_SIZE,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(0)
        self.outbox_size = outbox_size
        self.max_frame_size = max_frame_size
        self.drop_rate = 0.0
        self.set_drop_rate(drop_rate)
        self.transports: dict[int, MemoryTransport] = {}
        self._group_of: dict[int, int] | None = None
        self._isolated: set[int] = set()
        self._down: set[int] = set()

    def _register(self, transport: MemoryTransport) -> None:
        if transport.node_id in self.transports:
            raise ValueError(f"node {transport.node_id} is already on this network")
        self.transports[transport.node_id] = transport

    def set_drop_rate(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"drop rate must be within [0, 1], got {probability}")
        self.drop_rate = probability

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Only nodes within one group can talk; nodes named in no group talk to nobody."""
        group_of: dict[int, int] = {}
        for number, group in enumerate(groups):
            for node in group:
                if node in group_of:
                    raise ValueError(f"node {node} is in two partition groups")
                group_of[node] = number
        self._group_of = group_of

    def isolate(self, node: int) -> None:
        """Cut one node off from all others (it keeps running; see ``disconnect``)."""
        self._isolated.add(node)

    def heal(self) -> None:
        """Undo ``partition`` and ``isolate``; crashed nodes stay down until ``reconnect``."""
        self._group_of = None
        self._isolated.clear()

    def disconnect(self, node: int) -> None:
        """Treat ``node`` as crashed: everything to or from it is lost, including what it had queued."""
        self._down.add(node)
        transport = self.transports.get(node)
        if transport is not None:
            transport._discard_queued()

    def reconnect(self, node: int) -> None:
        self._down.discard(node)

    def can_reach(self, src: int, dst: int) -> bool:
        if src in self._down or dst in self._down:
            return False
        if src == dst:
            return True
        if src in self._isolated or dst in self._isolated:
            return False
        if self._group_of is None:
            return True
        group = self._group_of.get(src)
        return group is not None and group == self._group_of.get(dst)

    def _lose(self) -> bool:
        return self.drop_rate > 0.0 and self.rng.random() < self.drop_rate


class MemoryTransport:
    """Implements the Transport protocol on a MemoryNetwork."""

    def __init__(self, network: MemoryNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id
        self.stats = TransportStats()
        self._outboxes: dict[
            int, tuple[trio.MemorySendChannel[Message], trio.MemoryReceiveChannel[Message]]
        ] = {}
        self._inbox: trio.MemorySendChannel[Message] | None = None
        self._handler: ClientHandler | None = None
        self._nursery: trio.Nursery | None = None
        network._register(self)

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """The in-memory network routes by node id alone: nothing to dial or close."""
        del peers

    def send(self, msg: Message) -> None:
        """Raises CodecError (from the real codec) for a message the wire would refuse."""
        payload = encode(msg)
        copy = decode(payload)
        assert is_raft_message(copy)
        dst = msg.dst
        network = self.network
        if (
            dst not in network.transports
            or len(payload) > network.max_frame_size
            or not network.can_reach(self.node_id, dst)
            or network._lose()
        ):
            self.stats.dropped[dst] += 1
            return
        tx, rx = self._outbox(dst)
        try:
            tx.send_nowait(copy)
        except trio.WouldBlock:
            with suppress(trio.WouldBlock):
                rx.receive_nowait()  # drop-oldest, as TcpTransport does
                self.stats.dropped[dst] += 1
            tx.send_nowait(copy)

    def _outbox(self, dst: int) -> tuple[trio.MemorySendChannel[Message], trio.MemoryReceiveChannel[Message]]:
        outbox = self._outboxes.get(dst)
        if outbox is None:
            outbox = self._outboxes[dst] = trio.open_memory_channel[Message](self.network.outbox_size)
            if self._nursery is not None:
                self._nursery.start_soon(self._deliver, dst, outbox[1])
        return outbox

    def _discard_queued(self) -> None:
        for dst, (_, rx) in self._outboxes.items():
            while True:
                try:
                    rx.receive_nowait()
                except trio.WouldBlock:
                    break
                self.stats.dropped[dst] += 1

    async def run(
        self,
        inbox: trio.MemorySendChannel[Message],
        client_handler: ClientHandler | None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._nursery is not None:
            raise RuntimeError(f"transport of node {self.node_id} is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._inbox = inbox
                self._handler = client_handler
                for dst, (_, rx) in self._outboxes.items():
                    nursery.start_soon(self._deliver, dst, rx)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._inbox = None
            self._handler = None

    async def _deliver(self, dst: int, rx: trio.MemoryReceiveChannel[Message]) -> None:
        """One task per destination, so a destination that stops reading only stalls itself."""
        while True:
            msg = await rx.receive()
            target = self.network.transports[dst]
            inbox = target._inbox
            if inbox is None or not self.network.can_reach(self.node_id, dst):
                self.stats.dropped[dst] += 1
                continue
            try:
                await hand_over(inbox, msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.stats.dropped[dst] += 1
                continue
            self.stats.sent[dst] += 1
            target.stats.received[self.node_id] += 1

    async def request(self, request: ClientRequest) -> ClientResponse:
        """What a client connection to this node would get, without the socket.

        Raises ConnectionRefusedError when the node is not running or is down.
        """
        if self._nursery is None or self.node_id in self.network._down:
            raise ConnectionRefusedError(f"node {self.node_id} is not reachable")
        copy = decode(encode(request))
        assert isinstance(copy, ClientRequest)
        if self._handler is None or copy.op not in OPS:
            return ClientResponse.failure(copy.request_id, BAD_REQUEST)
        response = decode(encode(await self._handler(copy)))
        assert isinstance(response, ClientResponse)
        return response

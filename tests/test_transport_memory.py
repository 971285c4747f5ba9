from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from pyraft.core.messages import AppendEntries, Entry, Message, TimeoutNow
from pyraft.transport.base import ClientHandler
from pyraft.transport.memory import MemoryNetwork, MemoryTransport
from pyraft.wire.client_protocol import ClientRequest, ClientResponse
from pyraft.wire.codec import CodecError

Inboxes = dict[int, trio.MemoryReceiveChannel[Message]]


@asynccontextmanager
async def cluster(
    network: MemoryNetwork, ids: tuple[int, ...] = (1, 2, 3), handler: ClientHandler | None = None
) -> AsyncIterator[tuple[dict[int, MemoryTransport], Inboxes]]:
    transports = {i: MemoryTransport(network, i) for i in ids}
    inboxes: Inboxes = {}
    async with trio.open_nursery() as nursery:
        for i, transport in transports.items():
            tx, inboxes[i] = trio.open_memory_channel[Message](10_000)
            await nursery.start(transport.run, tx, handler)
        yield transports, inboxes
        nursery.cancel_scope.cancel()


def drain(rx: trio.MemoryReceiveChannel[Message]) -> list[Message]:
    out = []
    while True:
        try:
            out.append(rx.receive_nowait())
        except trio.WouldBlock:
            return out


async def settle() -> None:
    """Every delivery that can happen has happened."""
    await trio.testing.wait_all_tasks_blocked()


async def test_round_trip_through_the_codec() -> None:
    async with cluster(MemoryNetwork()) as (nodes, inboxes):
        msg = AppendEntries(1, 2, 3, 0, 0, (Entry(1, 3, data=b"x"),), 0)
        nodes[1].send(msg)
        nodes[1].send(TimeoutNow(1, 3, 4))
        got = await inboxes[2].receive()
        assert got == msg
        assert got is not msg  # a decoded copy, as off the wire
        assert await inboxes[3].receive() == TimeoutNow(1, 3, 4)
        await settle()
        assert nodes[1].stats.sent == {2: 1, 3: 1}
        assert nodes[2].stats.received == {1: 1}


async def test_unencodable_message_fails_at_send() -> None:
    network = MemoryNetwork()
    node = MemoryTransport(network, 1)
    MemoryTransport(network, 2)
    with pytest.raises(CodecError, match=r"TimeoutNow\.term"):
        node.send(TimeoutNow(1, 2, -1))


async def test_unknown_destination_is_dropped() -> None:
    async with cluster(MemoryNetwork(), (1, 2)) as (nodes, _):
        nodes[1].send(TimeoutNow(1, 9, 1))
        assert nodes[1].stats.dropped[9] == 1


async def test_partition_and_heal() -> None:
    network = MemoryNetwork()
    async with cluster(network) as (nodes, inboxes):
        network.partition([[1, 2], [3]])
        nodes[1].send(TimeoutNow(1, 2, 1))
        nodes[1].send(TimeoutNow(1, 3, 1))
        nodes[3].send(TimeoutNow(3, 1, 1))
        await settle()
        assert drain(inboxes[2]) == [TimeoutNow(1, 2, 1)]
        assert drain(inboxes[3]) == []
        assert drain(inboxes[1]) == []
        network.heal()
        nodes[1].send(TimeoutNow(1, 3, 2))
        nodes[3].send(TimeoutNow(3, 1, 2))
        await settle()
        assert drain(inboxes[3]) == [TimeoutNow(1, 3, 2)]
        assert drain(inboxes[1]) == [TimeoutNow(3, 1, 2)]


async def test_partition_swallows_messages_in_flight() -> None:
    network = MemoryNetwork()
    async with cluster(network) as (nodes, inboxes):
        nodes[1].send(TimeoutNow(1, 2, 1))  # queued, not yet delivered
        network.partition([[1], [2, 3]])
        await settle()
        assert drain(inboxes[2]) == []
        assert nodes[1].stats.dropped[2] == 1


async def test_unlisted_nodes_are_cut_off_by_a_partition() -> None:
    network = MemoryNetwork()
    network.partition([[1, 2]])
    assert network.can_reach(1, 2)
    assert not network.can_reach(1, 3)
    assert not network.can_reach(3, 2)
    with pytest.raises(ValueError, match="two partition groups"):
        network.partition([[1], [1, 2]])


async def test_isolate() -> None:
    network = MemoryNetwork()
    async with cluster(network) as (nodes, inboxes):
        network.isolate(3)
        for src in (1, 2):
            nodes[src].send(TimeoutNow(src, 3, 1))
        nodes[3].send(TimeoutNow(3, 1, 1))
        nodes[1].send(TimeoutNow(1, 2, 1))
        await settle()
        assert drain(inboxes[3]) == []
        assert drain(inboxes[1]) == []
        assert drain(inboxes[2]) == [TimeoutNow(1, 2, 1)]


async def test_drop_rate_is_seeded_and_roughly_right() -> None:
    async def run_once() -> list[int]:
        network = MemoryNetwork(rng=random.Random(42), drop_rate=0.3)
        async with cluster(network, (1, 2)) as (nodes, inboxes):
            for term in range(1000):
                nodes[1].send(TimeoutNow(1, 2, term))
            await settle()
            got = [m.term for m in drain(inboxes[2])]
            assert nodes[1].stats.dropped[2] == 1000 - len(got)
            return got

    first, second = await run_once(), await run_once()
    assert first == second
    assert 600 < len(first) < 800
    assert first == sorted(first)  # loss, never reordering


async def test_disconnect_drops_everything_including_queued() -> None:
    network = MemoryNetwork()
    transports = {i: MemoryTransport(network, i) for i in (1, 2)}
    transports[1].send(TimeoutNow(1, 2, 1))  # queued: node 1 is not running yet
    network.disconnect(1)  # crash: the queue is lost
    assert transports[1].stats.dropped[2] == 1
    tx1, rx1 = trio.open_memory_channel[Message](100)
    tx2, rx2 = trio.open_memory_channel[Message](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(transports[1].run, tx1, None)
        await nursery.start(transports[2].run, tx2, None)
        transports[1].send(TimeoutNow(1, 2, 2))
        transports[2].send(TimeoutNow(2, 1, 2))
        await settle()
        assert drain(rx1) == drain(rx2) == []
        network.reconnect(1)
        transports[1].send(TimeoutNow(1, 2, 3))
        await settle()
        assert drain(rx2) == [TimeoutNow(1, 2, 3)]
        nursery.cancel_scope.cancel()


async def test_stopped_node_receives_nothing_and_can_restart() -> None:
    network = MemoryNetwork()
    a, b = MemoryTransport(network, 1), MemoryTransport(network, 2)
    tx_a, _ = trio.open_memory_channel[Message](100)
    async with trio.open_nursery() as outer:
        await outer.start(a.run, tx_a, None)
        a.send(TimeoutNow(1, 2, 1))  # node 2 is not running: lost
        await settle()
        assert a.stats.dropped[2] == 1
        tx_b, rx_b = trio.open_memory_channel[Message](100)
        async with trio.open_nursery() as inner:
            await inner.start(b.run, tx_b, None)
            a.send(TimeoutNow(1, 2, 2))
            assert await rx_b.receive() == TimeoutNow(1, 2, 2)
            inner.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_slow_destination_overflows_drop_oldest_without_blocking_others() -> None:
    network = MemoryNetwork(outbox_size=4)
    a, b, c = (MemoryTransport(network, i) for i in (1, 2, 3))
    tx_a, _ = trio.open_memory_channel[Message](0)
    tx_b, rx_b = trio.open_memory_channel[Message](0)  # node 2 never reads
    tx_c, rx_c = trio.open_memory_channel[Message](100)
    async with trio.open_nursery() as nursery:
        for transport, tx in ((a, tx_a), (b, tx_b), (c, tx_c)):
            await nursery.start(transport.run, tx, None)
        for term in range(20):
            a.send(TimeoutNow(1, 2, term))
            a.send(TimeoutNow(1, 3, term))
            await settle()
        assert [m.term for m in drain(rx_c)] == list(range(20))  # node 3 never waited on node 2
        # node 2's delivery task holds term 0; the outbox kept the newest four
        with trio.fail_after(1):
            got = [(await rx_b.receive()).term for _ in range(5)]
        assert got == [0, 16, 17, 18, 19]
        assert a.stats.dropped[2] == 15
        nursery.cancel_scope.cancel()


async def test_client_request_goes_through_the_handler() -> None:
    async def handler(request: ClientRequest) -> ClientResponse:
        return ClientResponse(request.request_id, True, request.data[::-1], index=3)

    network = MemoryNetwork()
    async with cluster(network, (1,), handler) as (nodes, _):
        assert await nodes[1].request(ClientRequest(7, "propose", b"abc")) == ClientResponse(
            7, True, b"cba", 3
        )
        bad = await nodes[1].request(ClientRequest(8, "nope", b""))
        assert bad == ClientResponse.failure(8, "bad_request")
        network.disconnect(1)
        with pytest.raises(ConnectionRefusedError):
            await nodes[1].request(ClientRequest(9, "read", b""))

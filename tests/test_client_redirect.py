from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from pyraft.client import ClientError, RaftClient
from pyraft.core.messages import Message
from pyraft.localcluster import free_port
from pyraft.transport.tcp import TcpTransport
from pyraft.wire.client_protocol import ClientRequest, ClientResponse

CLUSTER = "client-test"
HOST = "127.0.0.1"
Handler = Callable[[ClientRequest], Awaitable[ClientResponse]]


@asynccontextmanager
async def nodes(handlers: dict[int, Handler]) -> AsyncIterator[dict[int, tuple[str, int]]]:
    """Nodes that only serve clients; their Raft links are irrelevant here."""
    addresses = {node: (HOST, free_port()) for node in handlers}
    async with trio.open_nursery() as nursery:
        for node, handler in handlers.items():
            peers = {other: address for other, address in addresses.items() if other != node}
            transport = TcpTransport(node, CLUSTER, HOST, addresses[node][1], peers, backoff_max=0.05)
            await nursery.start(transport.run, trio.open_memory_channel[Message](10)[0], handler)
        yield addresses
        nursery.cancel_scope.cancel()


def follower_of(leader: int, calls: list[int], me: int) -> Handler:
    async def handler(request: ClientRequest) -> ClientResponse:
        calls.append(me)
        return ClientResponse.failure(request.request_id, "not_leader", leader)

    return handler


def leader(calls: list[int], me: int) -> Handler:
    async def handler(request: ClientRequest) -> ClientResponse:
        calls.append(me)
        return ClientResponse(
            request.request_id, True, b"done:" + request.data, index=request.request_id + 100
        )

    return handler


@pytest.mark.parametrize("as_mapping", [False, True])
async def test_client_follows_leader_hint(as_mapping: bool) -> None:
    calls: list[int] = []
    async with nodes({1: follower_of(2, calls, 1), 2: leader(calls, 2)}) as addresses:
        targets = addresses if as_mapping else [addresses[1], addresses[2]]
        async with await RaftClient.connect(targets, cluster_id=CLUSTER, timeout=5) as client:
            assert client.node_id == 1
            index, result = await client.propose(b"x")
            assert result == b"done:x"
            assert index > 100
            assert client.node_id == 2
            assert await client.read(b"q") == b"done:q"
        assert calls == [1, 2, 2]


async def test_many_requests_in_flight_on_one_connection() -> None:
    calls: list[int] = []
    async with (
        nodes({1: leader(calls, 1)}) as addresses,
        await RaftClient.connect([addresses[1]], cluster_id=CLUSTER) as client,
    ):
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = (await client.propose(str(i).encode()))[1]

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        assert results == {i: b"done:" + str(i).encode() for i in range(100)}


async def test_no_leader_until_timeout_gives_client_error() -> None:
    async def no_leader(request: ClientRequest) -> ClientResponse:
        return ClientResponse.failure(request.request_id, "no_leader")

    async with (
        nodes({1: no_leader, 2: no_leader}) as addresses,
        await RaftClient.connect(addresses, cluster_id=CLUSTER, timeout=0.3) as client,
    ):
        with pytest.raises(ClientError) as info:
            await client.propose(b"x")
        assert info.value.code == "timeout"
        assert "no_leader" in info.value.message


async def test_unreachable_cluster_fails_to_connect() -> None:
    with pytest.raises(ClientError, match="timeout") as info:
        await RaftClient.connect([(HOST, free_port())], cluster_id=CLUSTER, timeout=0.2)
    assert "cannot connect" in info.value.message


async def test_wrong_cluster_id_is_reported() -> None:
    calls: list[int] = []
    async with nodes({1: leader(calls, 1)}) as addresses:
        with pytest.raises(ClientError, match="refused the connection: cluster id 'other'"):
            await RaftClient.connect(addresses, cluster_id="other", timeout=0.2)


async def test_non_retryable_error_is_raised_at_once() -> None:
    async def bad(request: ClientRequest) -> ClientResponse:
        return ClientResponse.failure(request.request_id, "bad_request")

    async with (
        nodes({1: bad}) as addresses,
        await RaftClient.connect(addresses, cluster_id=CLUSTER) as client,
    ):
        with pytest.raises(ClientError) as info:
            await client.propose(b"x")
        assert info.value.code == "bad_request"


async def test_connection_lost_after_sending() -> None:
    """A proposal's outcome is unknown then, so it is not retried; a read is."""
    failures = [RuntimeError("first call breaks the connection"), RuntimeError("so does the second")]

    async def flaky(request: ClientRequest) -> ClientResponse:
        if failures:
            raise failures.pop(0)  # the transport closes the connection on a handler failure
        return ClientResponse(request.request_id, True, b"ok")

    async with (
        nodes({1: flaky}) as addresses,
        await RaftClient.connect(addresses, cluster_id=CLUSTER, timeout=5) as client,
    ):
        with pytest.raises(ClientError) as info:
            await client.propose(b"x")
        assert info.value.code == "unknown"
        assert await client.read(b"q") == b"ok"  # failed once more, retried, answered
        assert not failures
        assert await client.propose(b"y") == (0, b"ok")


async def test_use_outside_async_with_is_refused() -> None:
    calls: list[int] = []
    async with nodes({1: leader(calls, 1)}) as addresses:
        client = await RaftClient.connect(addresses, cluster_id=CLUSTER)
        with pytest.raises(ClientError, match="closed"):
            await client.read(b"")
        await client.aclose()

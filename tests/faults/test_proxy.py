"""The fault proxy: delay on trio's mock clock over in-memory streams; forward, cut, black hole
and heal over real loopback TCP (what the cluster tests depend on)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from pyraft.testing.conditions import wait_until
from pyraft.testing.proxy import LinkProxy, ProxyNetwork, tcp_connector

# ------------------------------------------------------------------ mock clock, memory streams


async def _memory_proxy(
    nursery: trio.Nursery, proxy_rng: int = 0
) -> tuple[LinkProxy, trio.abc.Stream, trio.abc.Stream]:
    """A proxy between two in-memory stream ends: (proxy, client end, server end)."""
    client_end, proxy_side = trio.testing.memory_stream_pair()
    upstream_side, server_end = trio.testing.memory_stream_pair()

    async def connect() -> trio.abc.Stream:
        return upstream_side

    proxy = LinkProxy("test", connect, random.Random(proxy_rng))
    nursery.start_soon(proxy.handle, proxy_side)
    return proxy, client_end, server_end


async def test_delay_holds_each_chunk_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        proxy, client, server = await _memory_proxy(nursery)
        proxy.slow(0.25)
        start = trio.current_time()
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        assert trio.current_time() - start == pytest.approx(0.25)
        await server.send_all(b"reply")
        assert await client.receive_some() == b"reply"
        assert trio.current_time() - start == pytest.approx(0.5)
        nursery.cancel_scope.cancel()


async def test_jitter_never_reorders_chunks(autojump_clock: trio.testing.MockClock) -> None:
    delay, jitter = 0.1, 0.08
    async with trio.open_nursery() as nursery:
        proxy, client, server = await _memory_proxy(nursery, proxy_rng=7)
        proxy.slow(delay, jitter)
        sent: dict[int, float] = {}

        async def sender() -> None:
            for i in range(30):
                sent[i] = trio.current_time()
                await client.send_all(bytes([i]))
                await trio.sleep(0.01)

        nursery.start_soon(sender)
        received = bytearray()
        while len(received) < 30:
            chunk = await server.receive_some()
            now = trio.current_time()
            for b in chunk:
                assert sent[b] + delay <= now + 1e-9 < sent[b] + delay + jitter
            received += chunk
        assert list(received) == list(range(30))
        nursery.cancel_scope.cancel()


async def test_lossy_link_resets_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        proxy, client, server = await _memory_proxy(nursery)
        proxy.lossy(1.0)
        await client.send_all(b"doomed")
        assert await server.receive_some() == b""  # the server sees the reset, never the bytes
        assert proxy.stats.resets == 1 and proxy.stats.bytes_forwarded == 0
        nursery.cancel_scope.cancel()


def test_bad_fault_parameters_are_refused() -> None:
    proxy = LinkProxy("x", tcp_connector("127.0.0.1", 1))
    with pytest.raises(ValueError):
        proxy.lossy(1.5)
    with pytest.raises(ValueError):
        proxy.slow(-1)


# ------------------------------------------------------------------ real loopback


class EchoServer:
    def __init__(self) -> None:
        self.received = 0
        self.port = 0

    async def handler(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some():
                    self.received += len(data)
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass


@pytest.fixture
async def echo_proxy(nursery: trio.Nursery) -> AsyncIterator[tuple[LinkProxy, EchoServer]]:
    echo = EchoServer()
    listeners = await nursery.start(trio.serve_tcp, echo.handler, 0)
    echo.port = listeners[0].socket.getsockname()[1]
    proxy = LinkProxy("echo", tcp_connector("127.0.0.1", echo.port))
    await nursery.start(proxy.serve)
    yield proxy, echo


async def _connect(proxy: LinkProxy) -> trio.SocketStream:
    assert proxy.port is not None
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def _round_trip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    got = b""
    with trio.fail_after(5):
        while len(got) < len(data):
            chunk = await stream.receive_some()
            if not chunk:
                break
            got += chunk
    return got


async def _closed_by_peer(stream: trio.SocketStream) -> bool:
    with trio.fail_after(5):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True


async def test_forwards_over_loopback(echo_proxy: tuple[LinkProxy, EchoServer]) -> None:
    proxy, _ = echo_proxy
    async with await _connect(proxy) as stream:
        assert await _round_trip(stream, b"x" * 200_000) == b"x" * 200_000
    assert proxy.stats.accepted == 1


async def test_cut_closes_and_refuses_then_heal_restores(echo_proxy: tuple[LinkProxy, EchoServer]) -> None:
    proxy, _ = echo_proxy
    stream = await _connect(proxy)
    assert await _round_trip(stream, b"ping") == b"ping"
    proxy.cut()
    assert await _closed_by_peer(stream)
    refused = await _connect(proxy)
    assert await _closed_by_peer(refused)
    assert proxy.stats.refused == 1
    proxy.heal()
    async with await _connect(proxy) as fresh:
        assert await _round_trip(fresh, b"again") == b"again"


async def test_black_hole_swallows_bytes_and_heal_resets_tainted_connections(
    echo_proxy: tuple[LinkProxy, EchoServer],
) -> None:
    proxy, echo = echo_proxy
    stream = await _connect(proxy)
    assert await _round_trip(stream, b"ping") == b"ping"
    proxy.cut("blackhole")
    await stream.send_all(b"lost")
    late = await _connect(proxy)
    await late.send_all(b"also lost")
    await wait_until("the proxy to swallow both", lambda: proxy.stats.bytes_discarded >= 13, 5)
    assert echo.received == 4  # only the first ping ever reached the server
    proxy.heal()
    assert await _closed_by_peer(stream)
    assert await _closed_by_peer(late)
    async with await _connect(proxy) as fresh:
        assert await _round_trip(fresh, b"healed") == b"healed"


async def test_slow_link_over_loopback(echo_proxy: tuple[LinkProxy, EchoServer]) -> None:
    proxy, _ = echo_proxy
    proxy.slow(0.1)
    async with await _connect(proxy) as stream:
        start = trio.current_time()
        assert await _round_trip(stream, b"slow") == b"slow"
        assert trio.current_time() - start >= 0.2  # 0.1 s each way


async def test_network_gives_each_node_its_own_voters_and_cuts_partitions(nursery: trio.Nursery) -> None:
    network = ProxyNetwork({i: ("127.0.0.1", 1000 + i) for i in (1, 2, 3, 4, 5)}, seed=1)
    await network.serve(nursery)
    voters = network.voters_for(2, 1002)
    parts = dict(item.split("@") for item in voters.split(","))
    assert parts["2"] == "127.0.0.1:1002"
    assert parts["1"] == f"127.0.0.1:{network.port(2, 1)}" and parts["3"] == f"127.0.0.1:{network.port(2, 3)}"
    assert len({network.port(i, j) for (i, j) in network.links}) == 20

    network.partition([[1, 2, 3], [4, 5]])
    assert _cut(network) == {(i, j) for i in (1, 2, 3) for j in (4, 5)} | {
        (j, i) for i in (1, 2, 3) for j in (4, 5)
    }
    network.heal()
    network.bridge([1, 2], 3, [4, 5])
    assert _cut(network) == {(1, 4), (1, 5), (2, 4), (2, 5), (4, 1), (5, 1), (4, 2), (5, 2)}
    network.heal()
    network.isolate(3)
    assert _cut(network) == {(3, j) for j in (1, 2, 4, 5)} | {(j, 3) for j in (1, 2, 4, 5)}
    network.heal()
    assert network.faults() == {}


def _cut(network: ProxyNetwork) -> set[tuple[int, int]]:
    return {link for link, proxy in network.links.items() if proxy.faults.cut is not None}

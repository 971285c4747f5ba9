from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pyraft.core.messages import AppendEntries, Entry, Message, TimeoutNow
from pyraft.localcluster import free_port
from pyraft.transport import tcp
from pyraft.transport.base import ClientHandler
from pyraft.transport.framed import FramedStream
from pyraft.transport.tcp import TcpTransport
from pyraft.wire.client_protocol import ClientRequest, ClientResponse
from pyraft.wire.codec import WireMessage, encode
from pyraft.wire.frames import encode_frame
from pyraft.wire.handshake import PROTOCOL_VERSION, Hello, HelloReply

CLUSTER = "test-cluster"
HOST = "127.0.0.1"
MAX_FRAME = 1 << 20


def make(node_id: int, ports: dict[int, int], **kwargs: Any) -> TcpTransport:
    peers = {peer: (HOST, port) for peer, port in ports.items() if peer != node_id}
    kwargs = {"max_frame_size": MAX_FRAME, "backoff_max": 0.05, **kwargs}
    return TcpTransport(node_id, CLUSTER, HOST, ports[node_id], peers, **kwargs)


@asynccontextmanager
async def running(
    transport: TcpTransport, handler: ClientHandler | None = None
) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
    tx, rx = trio.open_memory_channel[Message](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run, tx, handler)
        yield rx
        nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


async def receive(rx: trio.MemoryReceiveChannel[Message], timeout: float = 5.0) -> Message:
    with trio.fail_after(timeout):
        return await rx.receive()


async def wait_closed(stream: trio.SocketStream) -> None:
    """The remote end hung up: reads hit EOF or a reset."""
    with trio.fail_after(5):
        try:
            while await stream.receive_some(1024):
                pass
        except trio.BrokenResourceError:
            pass


@asynccontextmanager
async def two_nodes(
    **kwargs: object,
) -> AsyncIterator[
    tuple[TcpTransport, TcpTransport, trio.MemoryReceiveChannel[Message], trio.MemoryReceiveChannel[Message]]
]:
    ports = {1: free_port(), 2: free_port()}
    a, b = make(1, ports, **kwargs), make(2, ports, **kwargs)
    async with running(a) as rx_a, running(b) as rx_b:
        yield a, b, rx_a, rx_b


async def test_two_nodes_exchange_both_ways() -> None:
    async with two_nodes() as (a, b, rx_a, rx_b):
        entries = tuple(Entry(i, 1, data=b"x" * 10) for i in range(1, 101))
        for term in range(50):
            a.send(TimeoutNow(1, 2, term))
        a.send(AppendEntries(1, 2, 50, 0, 0, entries, 0))
        for term in range(50):
            b.send(TimeoutNow(2, 1, term))
        assert [await receive(rx_b) for _ in range(50)] == [TimeoutNow(1, 2, t) for t in range(50)]
        assert await receive(rx_b) == AppendEntries(1, 2, 50, 0, 0, entries, 0)
        assert [await receive(rx_a) for _ in range(50)] == [TimeoutNow(2, 1, t) for t in range(50)]
        await wait_for(lambda: a.stats.sent[2] == 51 and b.stats.received[1] == 51)
        assert a.stats.dropped[2] == 0


async def test_idle_link_writes_inside_send() -> None:
    """The raft loop's message leaves in its own step: no checkpoint, no hop to the link task."""
    async with two_nodes() as (a, _b, _rx_a, rx_b):
        a.send(TimeoutNow(1, 2, 1))  # dials, handshakes and sends through the link
        assert await receive(rx_b) == TimeoutNow(1, 2, 1)
        await wait_for(lambda: 2 in a._idle)
        with trio.testing.assert_no_checkpoints():
            a.send(TimeoutNow(1, 2, 2))
            assert a.stats.sent[2] == 2
        assert await receive(rx_b) == TimeoutNow(1, 2, 2)


async def test_half_written_frame_is_finished_before_later_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that takes part of a frame: its tail and the frames queued after it follow in order."""
    async with two_nodes() as (a, _b, _rx_a, rx_b):
        a.send(TimeoutNow(1, 2, 1))
        assert await receive(rx_b) == TimeoutNow(1, 2, 1)
        await wait_for(lambda: 2 in a._idle)
        monkeypatch.setattr(tcp, "write_fd", lambda fd, data: os.write(fd, data[:7]))
        entries = tuple(Entry(i, 1, data=b"y" * 100) for i in range(1, 4))
        a.send(AppendEntries(1, 2, 1, 0, 0, entries, 0))
        monkeypatch.undo()
        assert a._unsent[2]
        a.send(TimeoutNow(1, 2, 3))  # the link is busy with the tail: this one queues behind it
        assert await receive(rx_b) == AppendEntries(1, 2, 1, 0, 0, entries, 0)
        assert await receive(rx_b) == TimeoutNow(1, 2, 3)
        await wait_for(lambda: a.stats.sent[2] == 3)
        assert a.stats.dropped[2] == 0


async def test_send_to_unknown_node_is_dropped_and_counted() -> None:
    ports = {1: free_port()}
    a = make(1, ports)
    a.send(TimeoutNow(1, 7, 1))
    assert a.stats.dropped[7] == 1


async def test_message_larger_than_max_frame_is_dropped() -> None:
    async with two_nodes() as (a, _b, _rx_a, rx_b):
        a.send(AppendEntries(1, 2, 1, 0, 0, (Entry(1, 1, data=b"x" * MAX_FRAME),), 0))
        assert a.stats.dropped[2] == 1
        a.send(TimeoutNow(1, 2, 9))
        assert await receive(rx_b) == TimeoutNow(1, 2, 9)


def _hello(node_id: int | None, cluster: str = CLUSTER, version: int = PROTOCOL_VERSION) -> bytes:
    return encode_frame(encode(Hello(version, cluster, node_id)))


def _frame(msg: WireMessage) -> bytes:
    return encode_frame(encode(msg))


STRANGERS = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad_frame", False),
    "oversized_length": (b"\x7f\xff\xff\xff" + b"x" * 100, "bad_frame", False),
    "zero_length": (b"\x00\x00\x00\x00", "bad_frame", False),
    "not_msgpack": (encode_frame(b"\xc1\xc1\xc1"), "bad_message", False),
    "truncated_frame": (_hello(2)[:-3], "bad_frame", False),
    "not_hello_first": (_frame(TimeoutNow(2, 1, 1)), "bad_handshake", False),
    "wrong_cluster": (_hello(2, cluster="other"), "wrong_cluster", True),
    "wrong_version": (_hello(2, version=PROTOCOL_VERSION + 1), "bad_version", True),
    "unknown_node": (_hello(99), "unknown_node", True),
    "spoofed_src": (_hello(2) + _frame(TimeoutNow(3, 1, 1)), "wrong_src", False),
    "wrong_dst": (_hello(2) + _frame(TimeoutNow(2, 5, 1)), "wrong_dst", False),
    "client_message_on_peer_link": (
        _hello(2) + _frame(ClientRequest(1, "read", b"")),
        "unexpected_message",
        False,
    ),
    "garbage_after_handshake": (_hello(2) + b"\xff\xff\xff\xff", "bad_frame", False),
}


@pytest.mark.parametrize("name", sorted(STRANGERS))
async def test_stranger_is_disconnected_and_node_keeps_working(name: str) -> None:
    data, reason, expect_refusal = STRANGERS[name]
    async with two_nodes() as (a, b, rx_a, _rx_b):
        assert a.port is not None
        stranger = await trio.open_tcp_stream(HOST, a.port)
        async with stranger:
            await stranger.send_all(data)
            if name == "truncated_frame":
                await stranger.send_eof()
            if expect_refusal:
                reply = await FramedStream(stranger, MAX_FRAME).receive()
                assert isinstance(reply, HelloReply)
                assert not reply.ok
                assert reply.node_id == 1
                assert reply.reason
            await wait_closed(stranger)
        await wait_for(lambda: a.stats.rejected[reason] == 1)
        b.send(TimeoutNow(2, 1, 42))
        assert await receive(rx_a) == TimeoutNow(2, 1, 42)  # nothing from the stranger came first
        assert sum(a.stats.rejected.values()) == 1


async def test_silent_stranger_times_out() -> None:
    async with two_nodes(hello_timeout=0.1) as (a, _b, _rx_a, _rx_b):
        assert a.port is not None
        async with await trio.open_tcp_stream(HOST, a.port) as stranger:
            await wait_closed(stranger)
        await wait_for(lambda: a.stats.rejected["hello_timeout"] == 1)


async def test_down_peer_does_not_block_other_peers() -> None:
    ports = {1: free_port(), 2: free_port(), 3: free_port()}  # nobody listens on node 2's port
    a, c = make(1, ports, outbox_size=16), make(3, ports)
    async with running(a), running(c) as rx_c:
        for round_ in range(10):
            for term in range(100):
                a.send(TimeoutNow(1, 2, term))
            a.send(TimeoutNow(1, 3, round_))
            assert await receive(rx_c) == TimeoutNow(1, 3, round_)
        assert a.stats.dropped[2] == 1000 - 16
        assert a.stats.sent[2] == 0


async def test_drop_oldest_keeps_the_newest_messages() -> None:
    ports = {1: free_port(), 2: free_port()}
    a, b = make(1, ports, outbox_size=4), make(2, ports)
    for term in range(10):  # queued before the transport runs: nothing drains the outbox yet
        a.send(TimeoutNow(1, 2, term))
    assert a.stats.dropped[2] == 6
    async with running(a), running(b) as rx_b:
        assert [await receive(rx_b) for _ in range(4)] == [TimeoutNow(1, 2, t) for t in range(6, 10)]


async def test_reconnects_after_peer_restart() -> None:
    ports = {1: free_port(), 2: free_port()}
    a = make(1, ports)
    async with running(a):
        async with running(make(2, ports)) as rx_b:
            a.send(TimeoutNow(1, 2, 1))
            assert await receive(rx_b) == TimeoutNow(1, 2, 1)
        # node 2 is gone; its replacement listens on the same port
        async with running(make(2, ports)) as rx_b:
            with trio.fail_after(5):
                term = 2
                while True:  # messages sent while the link is down may be lost: keep sending
                    a.send(TimeoutNow(1, 2, term))
                    with trio.move_on_after(0.02):
                        got = await rx_b.receive()
                        break
                    term += 1
            assert isinstance(got, TimeoutNow)
            assert got.term >= 2
        assert a.stats.connects[2] >= 2


async def _raw_client(port: int) -> FramedStream:
    framed = FramedStream(await trio.open_tcp_stream(HOST, port), MAX_FRAME)
    await framed.send(Hello(PROTOCOL_VERSION, CLUSTER, None))
    assert await framed.receive() == HelloReply(True, "", 1)
    return framed


async def test_client_requests_complete_out_of_order() -> None:
    fast_done = trio.Event()

    async def handler(request: ClientRequest) -> ClientResponse:
        if request.data == b"slow":
            await fast_done.wait()
        else:
            fast_done.set()
        return ClientResponse(request.request_id, True, request.data.upper(), index=request.request_id)

    ports = {1: free_port()}
    async with running(make(1, ports), handler) as _:
        port = ports[1]
        framed = await _raw_client(port)
        await framed.send(ClientRequest(1, "propose", b"slow"))
        await framed.send(ClientRequest(2, "read", b"fast"))
        with trio.fail_after(5):
            first, second = await framed.receive(), await framed.receive()
        assert first == ClientResponse(2, True, b"FAST", index=2)
        assert second == ClientResponse(1, True, b"SLOW", index=1)
        await framed.aclose()


async def test_client_many_requests_in_flight() -> None:
    async def handler(request: ClientRequest) -> ClientResponse:
        await trio.sleep(0.001 * (request.request_id % 7))
        return ClientResponse(request.request_id, True, request.data)

    ports = {1: free_port()}
    async with running(make(1, ports, max_client_inflight=8), handler):
        framed = await _raw_client(ports[1])
        for i in range(200):
            await framed.send(ClientRequest(i, "propose", str(i).encode()))
        with trio.fail_after(5):
            responses = [await framed.receive() for _ in range(200)]
        assert sorted(r.request_id for r in responses if isinstance(r, ClientResponse)) == list(range(200))
        assert all(
            isinstance(r, ClientResponse) and r.result == str(r.request_id).encode() for r in responses
        )
        await framed.aclose()


async def test_client_without_handler_or_with_bad_op_gets_bad_request() -> None:
    ports = {1: free_port()}
    async with running(make(1, ports)):
        framed = await _raw_client(ports[1])
        await framed.send(ClientRequest(5, "read", b""))
        assert await framed.receive() == ClientResponse.failure(5, "bad_request")
        await framed.aclose()

    async def handler(request: ClientRequest) -> ClientResponse:
        raise AssertionError("not called for an unknown op")

    async with running(make(1, ports), handler):
        framed = await _raw_client(ports[1])
        await framed.send(ClientRequest(6, "delete", b""))
        assert await framed.receive() == ClientResponse.failure(6, "bad_request")
        await framed.aclose()


async def test_failing_handler_closes_only_that_connection() -> None:
    async def handler(request: ClientRequest) -> ClientResponse:
        if request.data == b"boom":
            raise RuntimeError("handler bug")
        return ClientResponse(request.request_id, True, b"fine")

    ports = {1: free_port()}
    node = make(1, ports)
    async with running(node, handler):
        doomed = await _raw_client(ports[1])
        await doomed.send(ClientRequest(1, "propose", b"boom"))
        await wait_closed(doomed.stream)
        healthy = await _raw_client(ports[1])
        await healthy.send(ClientRequest(2, "read", b""))
        assert await healthy.receive() == ClientResponse(2, True, b"fine")
        await healthy.aclose()
        assert not node.stats.rejected  # a handler failure is not a transport failure


async def test_cancelling_run_closes_listener_and_connections() -> None:
    started = trio.Event()

    async def handler(request: ClientRequest) -> ClientResponse:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    ports = {1: free_port(), 2: free_port()}
    async with running(make(1, ports), handler):
        framed = await _raw_client(ports[1])
        await framed.send(ClientRequest(1, "propose", b""))
        await started.wait()
    await wait_closed(framed.stream)
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, ports[1])


async def test_bind_failure_is_a_plain_oserror() -> None:
    ports = {1: free_port()}
    async with running(make(1, ports)):
        with pytest.raises(OSError):
            await make(1, ports).run(trio.open_memory_channel[Message](1)[0], None)

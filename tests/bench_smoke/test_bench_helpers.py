"""The benchmarks' own pieces: the lean HTTP client (against a tiny trio server that splits its
writes), the REST mix, and the fast payload builder."""

from __future__ import annotations

import pytest
import trio

from bench.http_load import Connection, HttpError, _parse_head, request_bytes

pytest.importorskip("hdrh")  # bench.rest reports through bench.common's histograms

from bench.rest import ClientRequests


def test_the_head_gives_status_length_and_close() -> None:
    assert _parse_head(b"HTTP/1.1 200 OK\r\nContent-Length : 12\r\nConnection: Close") == (200, 12, True)
    assert _parse_head(b"HTTP/1.1 204 No Content\r\nserver: x") == (204, 0, False)
    for bad in (b"HTTP/1.1 2xx OK", b"SSH-2.0", b"HTTP/1.1 200 OK\r\nContent-Length: -1"):
        with pytest.raises(HttpError):
            _parse_head(bad)
    with pytest.raises(HttpError, match="chunked"):
        _parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked")
    with pytest.raises(HttpError, match="Content-Length"):
        _parse_head(b"HTTP/1.1 200 OK\r\nserver: x")


def test_writes_alternate_status_in_every_mix() -> None:
    r = ClientRequests(b"A", b"F", b"R")
    assert b"".join(r.nth(n, 0.5) for n in range(1, 9)) == b"RARFRARF"
    assert b"".join(r.nth(n, 1.0) for n in range(1, 5)) == b"AFAF"


async def test_responses_split_across_reads_and_a_polite_close() -> None:
    """Each response arrives in three pieces; the server closes after every second one, saying
    so: the client reads whole bodies and reconnects without an error."""
    connections = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        for i in range(2):
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(4096)
            body = f"answer {i}".encode()
            close = b"Connection: close\r\n" if i == 1 else b""
            head = b"HTTP/1.1 200 OK\r\n" + close + f"content-length: {len(body)}\r\n\r\n".encode()
            for piece in (head[:10], head[10:] + body[:3], body[3:]):
                await stream.send_all(piece)
                await trio.sleep(0.001)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, serve, 0)
        port = listeners[0].socket.getsockname()[1]
        connection = await Connection.open("127.0.0.1", port)
        request = request_bytes("GET", "/x", "127.0.0.1")
        answers = [await connection.call(request) for _ in range(4)]
        await connection.aclose()
        nursery.cancel_scope.cancel()
    assert answers == [(200, b"answer 0"), (200, b"answer 1")] * 2
    assert connections == 2


def test_the_fast_payload_is_the_record_command() -> None:
    """bench.common.broker_payload packs the template's wire form directly; it must be byte for
    byte the RegisterBrokerRecord command the record classes encode."""
    from bench.common import broker_payload, slow_broker_payload

    for broker_id in (1, 2, 255, 65_536, 10**6, 2**31 - 1):
        assert broker_payload(broker_id) == slow_broker_payload(broker_id)

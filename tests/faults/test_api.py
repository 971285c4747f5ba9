"""How REST answers become history outcomes: ok, fail (definitely not applied) or info (unknown)."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from pyraft.testing.api import _parse, classify, request
from pyraft.testing.harness import free_ports


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"outcome": "ok"}, "ok"),
        (201, {"outcome": "created"}, "ok"),
        (404, {"error": "not_found"}, "fail"),
        (409, {"error": "conflict"}, "fail"),
        (422, {"error": "invalid"}, "fail"),
        (503, {"error": "no_leader"}, "fail"),
        (503, {"error": "not_applied"}, "fail"),
        (503, {"error": "timeout"}, "fail"),
        (503, {"error": "leader_changed"}, "fail"),
        (503, {"error": "outcome_unknown"}, "info"),
        (503, {"error": "unavailable"}, "info"),  # an engine error we cannot rule out
        (500, "Internal Server Error", "info"),
    ],
)
def test_classify(status: int, body: object, outcome: str) -> None:
    assert classify(status, body) == outcome


def test_parse_plain_and_chunked_answers() -> None:
    plain = _parse(b'HTTP/1.1 503 \r\ncontent-length: 27\r\n\r\n{"error":"outcome_unknown"}')
    assert (plain.outcome, plain.status, plain.code) == ("info", 503, "outcome_unknown")
    chunked = _parse(
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    assert (chunked.outcome, chunked.body) == ("ok", {"a": 1})
    assert _parse(b"garbage").outcome == "info"


async def test_refused_connection_is_a_definite_fail_and_silence_is_info() -> None:
    (port,) = free_ports(1)
    refused = await request(port, "GET", "/status", timeout=1.0)
    assert refused.outcome == "fail" and refused.error == "connect refused"

    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await trio.sleep_forever()  # like a SIGSTOPped node: the kernel accepted, nobody answers

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        silent_port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5):
            reply = await request(silent_port, "POST", "/register_topic/", {"name": "t"}, timeout=0.2)
        assert reply.outcome == "info" and "no answer" in reply.error
        nursery.cancel_scope.cancel()


def test_an_answer_cut_short_is_info_even_with_an_ok_status() -> None:
    """A node killed between writing its headers and its body: the 200 is real, the value is lost.

    Found by a 10-minute run (seed 1004): two reads that ended at the instant the leader was
    killed were recorded as ok reads of nothing, and the checker called them lost writes.
    """
    headers_only = _parse(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 120\r\n\r\n")
    assert (headers_only.outcome, headers_only.status) == ("info", 200)
    assert "cut short" in headers_only.error
    half_body = _parse(b'HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n{"brokerHost": "h1')
    assert half_body.outcome == "info"
    unterminated = _parse(b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n')
    assert unterminated.outcome == "info"
    assert _parse(b"HTTP/1.1 200 OK\r\ncontent-le").outcome == "info"  # cut inside the headers


async def test_a_server_dying_after_its_headers_gives_info() -> None:
    async def dies_midway(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n"
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, dies_midway, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        reply = await request(port, "GET", "/get_broker/1", timeout=2.0)
        assert reply.outcome == "info" and reply.status == 200
        nursery.cancel_scope.cancel()

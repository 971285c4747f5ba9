"""A lean HTTP/1.1 keep-alive client for load drivers: one connection, one request at a time.

The REST benchmark shares two cores with the three nodes it measures, so its
client must cost little per request: httpx spent more CPU per request than the
server did (64 httpx clients measured 40-62 writes/s where wrk, a C driver,
measured 420 on the same cluster). This client writes prebuilt request bytes and
reads one response by its Content-Length (none for 1xx, 204 and 304). When the
server says ``Connection: close`` (hypercorn does after 1000 requests on one
connection), the next call opens a new connection. Nothing else of HTTP is
supported: chunked bodies, a dropped connection or a garbled header are errors
(``HttpError``).
"""

from __future__ import annotations

import json
from typing import Any

import trio

_HEADER_END = b"\r\n\r\n"
_MAX_HEADER = 64 * 1024


class HttpError(Exception):
    """The server broke the connection or answered in a way this client does not read."""


def request_bytes(method: str, path: str, host: str, body: dict[str, Any] | None = None) -> bytes:
    """One HTTP/1.1 request, ready to send again and again on a keep-alive connection."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body, separators=(",", ":")).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


class Connection:
    """One keep-alive connection to ``host:port``, reopened when the server closes it politely."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        connection = cls(host, port)
        connection.stream = await trio.open_tcp_stream(host, port)
        return connection

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None
        self.buffer.clear()

    async def call(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` and return the response's status and body."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        await self.stream.send_all(request)
        end = await self._fill_until_header_end()
        status, length, close = _parse_head(bytes(self.buffer[:end]))
        total = end + len(_HEADER_END) + length
        while len(self.buffer) < total:
            await self._receive()
        body = bytes(self.buffer[end + len(_HEADER_END) : total])
        del self.buffer[:total]
        if close:
            await self.aclose()
        return status, body

    async def _fill_until_header_end(self) -> int:
        while (end := self.buffer.find(_HEADER_END)) < 0:
            if len(self.buffer) > _MAX_HEADER:
                raise HttpError("response header too large")
            await self._receive()
        return end

    async def _receive(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("the server closed the connection")
        self.buffer += data


_NO_BODY = frozenset({204, 304})


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, body length, whether the server closes the connection after this response)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise HttpError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            raise HttpError("chunked responses are not supported")
        elif name == b"connection":
            close = value.lower() == b"close"
    if status < 200 or status in _NO_BODY:
        return status, 0, close
    if length is None:
        raise HttpError("response without Content-Length")
    return status, length, close

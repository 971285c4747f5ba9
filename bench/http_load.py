"""A lean HTTP/1.1 keep-alive client for load drivers: one connection, one request at a time.

The REST benchmark shares two cores with the three nodes it measures, so its
client must cost little per request: httpx spent more CPU per request than the
server did (64 httpx clients measured 40-62 writes/s where wrk, a C driver,
measured 420 on the same cluster). This client writes prebuilt request bytes and
reads one response by its Content-Length; nothing else of HTTP is supported,
and anything else (chunked bodies, a closed connection) is an error.
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
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(await trio.open_tcp_stream(host, port))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def call(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` and return the response's status and body."""
        await self.stream.send_all(request)
        end = await self._fill_until_header_end()
        head = bytes(self.buffer[:end])
        status, length = _parse_head(head)
        total = end + len(_HEADER_END) + length
        while len(self.buffer) < total:
            await self._receive()
        body = bytes(self.buffer[end + len(_HEADER_END) : total])
        del self.buffer[:total]
        return status, body

    async def _fill_until_header_end(self) -> int:
        while (end := self.buffer.find(_HEADER_END)) < 0:
            if len(self.buffer) > _MAX_HEADER:
                raise HttpError("response header too large")
            await self._receive()
        return end

    async def _receive(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("the server closed the connection")
        self.buffer += data


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            raise HttpError("chunked responses are not supported")
    if length is None:
        raise HttpError("response without Content-Length")
    return int(parts[1]), length

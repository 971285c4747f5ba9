"""A minimal HTTP/1.1 client for the metadata REST API, and how its answers map onto history outcomes.

One TCP connection per request (``Connection: close``): no pool, no hidden retry, so
each recorded operation is exactly one request the server may or may not have seen.
Every request runs under a deadline; the caller learns which of three things happened:

``ok``
    a 2xx answer: the operation took effect (a write is committed and applied).
``fail``
    the operation definitely did not take effect: the connection was refused before
    a byte was sent, a 4xx answer, or a 503 whose error code says nothing changed
    (``no_leader``, ``not_applied``, ``timeout``, ``leader_changed``; see
    :mod:`pyraft.metadata.service`).
``info``
    unknown: a timeout, a connection broken after the request was sent, a 503
    ``outcome_unknown`` (or any error code we do not know to be harmless), a 5xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

import trio

HOST: Final = "127.0.0.1"
# 503 error codes that mean the service changed nothing (pyraft.metadata.service).
NOTHING_CHANGED: Final = frozenset({"no_leader", "not_applied", "timeout", "leader_changed"})

Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True)
class Reply:
    """What one request came to: ``status`` 0 when no HTTP answer arrived (see ``error``)."""

    outcome: Outcome
    status: int = 0
    body: Any = None
    error: str = ""

    @property
    def code(self) -> str:
        """The ``error`` field of an error body, or ``error`` for transport failures."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return self.error


def classify(status: int, body: Any) -> Outcome:
    """The history outcome of an HTTP answer (module docstring)."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "fail"
    code = body.get("error") if isinstance(body, dict) else None
    if status == 503 and code in NOTHING_CHANGED:
        return "fail"
    return "info"


async def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request to ``127.0.0.1:port`` under ``timeout`` seconds, classified (never raises on I/O)."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    sent = False
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            # Nothing was sent: the server cannot have acted on this request.
            return Reply("fail", error="connect refused")  # (trio's message names the port)
        try:
            async with stream:
                sent = True
                await stream.send_all(raw)
                data = bytearray()
                while chunk := await stream.receive_some():
                    data += chunk
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return Reply("info", error=f"connection broken: {exc}")
        return _parse(bytes(data))
    if not sent:  # timed out while connecting: nothing reached the server
        return Reply("fail", error=f"could not connect within {timeout:g}s")
    return Reply("info", error=f"no answer within {timeout:g}s")


def _parse(data: bytes) -> Reply:
    """An answer read to EOF. One cut short (the server was killed between writing its headers
    and its body, so the connection ended with a FIN) is ``info``: its status line may be a
    real 200, but a read's value is gone, so nothing certain can be recorded."""
    head, sep, payload = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        return Reply("info", error=f"no HTTP answer: {data[:80]!r}")
    status = int(status_line[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        dechunked = _dechunk(payload)
        if dechunked is None:
            return Reply("info", status, error="answer cut short (chunked body unterminated)")
        payload = dechunked
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(payload) < length:
            return Reply("info", status, error=f"answer cut short ({len(payload)} of {length} body bytes)")
        payload = payload[:length]
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = payload.decode(errors="replace")
    return Reply(classify(status, body), status, body)


def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked answer, or None if it ends before its last (empty) chunk."""
    out = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return None
        if size == 0:
            return bytes(out)
        if len(rest) < size + 2:
            return None
        out += rest[:size]
        data = rest[size + 2 :]

"""A trio stream carrying framed wire messages, shared by transport and client."""

from __future__ import annotations

import socket
from collections import deque

import trio

from pyraft.wire.codec import WireMessage, decode, encode
from pyraft.wire.frames import FrameDecoder, encode_frame

RECEIVE_CHUNK = 64 * 1024


class FramedStream:
    """Reads and writes whole messages.

    Errors are left to the caller, which knows whether a broken stream means
    "drop this stranger" or "reconnect": FrameError and CodecError for bad
    bytes, trio.BrokenResourceError / OSError for a dead connection.
    Writes are not serialized here; callers with concurrent writers hold a lock.
    """

    def __init__(self, stream: trio.SocketStream, max_frame_size: int) -> None:
        self.stream = stream
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)
        self._ready: deque[bytes] = deque()
        # Raft round trips are latency bound: never let Nagle hold a heartbeat back.
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)

    async def receive(self) -> WireMessage | None:
        """The next message, or None when the peer closed cleanly between frames."""
        while not self._ready:
            data = await self.stream.receive_some(RECEIVE_CHUNK)
            if not data:
                self._decoder.eof()
                return None
            self._ready.extend(self._decoder.feed(data))
        return decode(self._ready.popleft())

    def receive_buffered(self) -> WireMessage | None:
        """The next message if it already arrived in an earlier read, else None (never waits)."""
        return decode(self._ready.popleft()) if self._ready else None

    async def send(self, msg: WireMessage) -> None:
        await self.stream.send_all(encode_frame(encode(msg), self.max_frame_size))

    def peer_name(self) -> str:
        try:
            host, port, *_ = self.stream.socket.getpeername()
        except OSError:
            return "<disconnected>"
        return f"{host}:{port}"

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

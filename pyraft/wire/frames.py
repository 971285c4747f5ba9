"""Length-prefixed framing, sans I/O.

A frame is a 4-byte big-endian payload length followed by the payload. The
decoder owns no socket, so it can be tested byte by byte and reused by the
TCP transport and the client alike.
"""

from __future__ import annotations

import struct
from typing import Final

DEFAULT_MAX_FRAME_SIZE: Final = 16 << 20
_HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size


class FrameError(ValueError):
    """The byte stream cannot be framed: the connection carrying it is unusable."""


def encode_frame(payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Refuse what the peer's decoder would refuse, so the sender learns first."""
    size = len(payload)
    if size == 0 or size > max_frame_size:
        raise FrameError(f"cannot frame a payload of {size} bytes (allowed 1..{max_frame_size})")
    return _HEADER.pack(size) + payload


class FrameDecoder:
    """Collects bytes as they arrive and hands out whole payloads.

    Consumed bytes are tracked with an offset and only compacted once they make
    up most of the buffer, so a stream of small frames is not copied over and
    over (which would be quadratic in the bytes buffered).

    After a FrameError the decoder stays broken: the stream has lost its frame
    boundaries and nothing later in it can be trusted.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 1:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._offset = 0
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a payload."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> list[bytes]:
        """Raise FrameError on a zero or oversized length; earlier frames of the same
        ``data`` are discarded with it, since the connection is going away anyway."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        frames: list[bytes] = []
        buffer, offset, end = self._buffer, self._offset, len(self._buffer)
        while end - offset >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if size == 0 or size > self.max_frame_size:
                self._error = FrameError(
                    f"frame length {size} outside the allowed range 1..{self.max_frame_size}"
                )
                raise self._error
            if end - offset - HEADER_SIZE < size:
                break
            start = offset + HEADER_SIZE
            frames.append(bytes(buffer[start : start + size]))
            offset = start + size
        self._compact(offset)
        return frames

    def _compact(self, offset: int) -> None:
        if offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        elif offset > len(self._buffer) // 2:
            del self._buffer[:offset]
            self._offset = 0
        else:
            self._offset = offset

    def eof(self) -> None:
        """Call when the stream ends; raise FrameError if it ended inside a frame."""
        if self._error is None and self.buffered:
            self._error = FrameError(f"stream ended inside a frame ({self.buffered} bytes pending)")
            raise self._error

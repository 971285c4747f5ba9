"""msgpack for very large values, packed a slice at a time so the event loop keeps running.

A snapshot of a million brokers is encoded in a worker thread, but one
``msgpack.packb`` call over the whole image holds the GIL from start to end:
measured 2.2 s during which the node's event loop could not run, so a leader
sent no heartbeat and its followers elected another (the timer's stall rule cannot help:
it is the leader that is silent). Packing each list of more than ``SLICE``
items a slice at a time lets the interpreter hand the GIL over between slices,
every few milliseconds. The bytes are exactly ``msgpack.packb(value,
use_bin_type=True)``: a list's header says how many items follow, and the items
of a packed slice are the packed slice without its own header.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

SLICE: Final = 16384  # items per packb call: a few milliseconds of GIL at most


def sliced_packb(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, holding the GIL a slice at a time."""
    packer = msgpack.Packer(use_bin_type=True)
    parts: list[bytes] = []
    _emit(value, packer, parts)
    return b"".join(parts)


def _emit(value: Any, packer: msgpack.Packer, parts: list[bytes]) -> None:
    if _is_list(value):
        if len(value) > SLICE:
            _emit_slices(value, packer, parts)
            return
        if _holds_long_list(value):
            parts.append(packer.pack_array_header(len(value)))
            for v in value:
                _emit(v, packer, parts)
            return
    parts.append(packer.pack(value))


def _is_list(value: Any) -> bool:
    return type(value) is list or type(value) is tuple


def _holds_long_list(value: list[Any] | tuple[Any, ...]) -> bool:
    """Whether a list longer than SLICE is inside ``value``, at any depth."""
    return any(_is_list(v) and (len(v) > SLICE or _holds_long_list(v)) for v in value)


def _emit_slices(items: list[Any] | tuple[Any, ...], packer: msgpack.Packer, parts: list[bytes]) -> None:
    """A long list's header, then its items packed ``SLICE`` at a time (items nested inside
    the items are not sliced again: a column's values are small)."""
    parts.append(packer.pack_array_header(len(items)))
    for start in range(0, len(items), SLICE):
        chunk = items[start : start + SLICE]
        packed: bytes = packer.pack(chunk)
        parts.append(packed[len(packer.pack_array_header(len(chunk))) :])

from __future__ import annotations

import pytest

from pyraft.wire.frames import FrameDecoder, FrameError, encode_frame

PAYLOADS = [b"a", b"hello world", bytes(range(256)) * 3, b"\x00" * 5]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def test_encode_frame_prefixes_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_many_frames_in_one_chunk() -> None:
    assert FrameDecoder().feed(STREAM) == PAYLOADS


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert got == PAYLOADS, cut
        assert decoder.buffered == 0
        decoder.eof()


def test_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        got += decoder.feed(STREAM[i : i + 1])
    assert got == PAYLOADS


def test_oversized_length_is_refused_before_payload_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(FrameError, match=r"frame length 11 outside the allowed range 1\.\.10"):
        decoder.feed(b"\x00\x00\x00\x0b")
    with pytest.raises(FrameError):  # stays broken
        decoder.feed(encode_frame(b"ok"))


def test_zero_length_is_refused() -> None:
    with pytest.raises(FrameError, match="frame length 0"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_huge_length_prefix() -> None:
    with pytest.raises(FrameError, match="frame length 4294967295"):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_truncated_stream_detected_at_eof() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"abcdef")[:-2]) == []
    with pytest.raises(FrameError, match=r"stream ended inside a frame \(8 bytes pending\)"):
        decoder.eof()


def test_encode_frame_refuses_what_decoder_would() -> None:
    with pytest.raises(FrameError):
        encode_frame(b"")
    with pytest.raises(FrameError):
        encode_frame(b"x" * 11, max_frame_size=10)


def test_large_stream_of_small_frames_is_linear() -> None:
    frame = encode_frame(b"x" * 10)
    decoder = FrameDecoder()
    total = 0
    chunk = frame * 1000 + frame[:7]
    for _ in range(200):
        total += len(decoder.feed(chunk))
        chunk = frame[7:] + frame * 999 + frame[:7]
    assert total == 200 * 1000
    assert decoder.buffered == 7

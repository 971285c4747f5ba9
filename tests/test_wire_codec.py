from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest

from pyraft.core.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    ProposeRequest,
    ProposeResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from pyraft.wire.client_protocol import ClientRequest, ClientResponse
from pyraft.wire.codec import TAGS, CodecError, WireMessage, decode, encode
from pyraft.wire.handshake import Hello, HelloReply

BIG = 2**63


def _entries(rng: random.Random, n: int) -> tuple[Entry, ...]:
    kinds = list(EntryKind)
    return tuple(
        Entry(i + 1, rng.randrange(5), rng.choice(kinds), rng.randbytes(rng.randrange(8))) for i in range(n)
    )


SAMPLES: list[WireMessage] = [
    RequestVote(1, 2, 3, 4, 5),
    RequestVote(0, BIG, BIG, 0, 0, pre_vote=True, transfer=True),
    RequestVoteResponse(2, 1, 3, granted=True),
    RequestVoteResponse(2, 1, 0, granted=False, pre_vote=True),
    AppendEntries(1, 2, 7, 10, 6, (), 9),
    AppendEntries(1, 2, 7, 10, 6, _entries(random.Random(1), 50), 9, seq=12),
    AppendEntries(1, 2, 7, 0, 0, (Entry(1, 7, EntryKind.NOOP),), 0),
    AppendEntriesResponse(2, 1, 7, True, match_index=60, seq=3),
    AppendEntriesResponse(2, 1, 7, False, conflict_index=4, conflict_term=2),
    TimeoutNow(1, 3, 9),
    ProposeRequest(3, 1, 9, 44, b"set x=1"),
    ProposeRequest(3, 1, 9, 0, b""),
    ProposeResponse(1, 3, 9, 44, True, index=100, entry_term=9),
    ProposeResponse(1, 3, 9, 44, False, leader_hint=2),
    ReadIndexRequest(3, 1, 9, 45),
    ReadIndexResponse(1, 3, 9, 45, True, read_index=99),
    ReadIndexResponse(1, 3, 9, 45, False, leader_hint=None),
    InstallSnapshot(1, 3, 9, 1000, 8, 0, b"PYRAFTSN\x00", False),
    InstallSnapshot(1, 3, 9, BIG, BIG, BIG, b"", True),
    InstallSnapshotResponse(3, 1, 9, 1000, 8, 1 << 20, False),
    InstallSnapshotResponse(3, 1, 9, 1000, 8, 0, True),
    Hello(1, "cluster-a", 3),
    Hello(1, "", None),
    HelloReply(True, "", 1),
    HelloReply(False, "wrong cluster id 'x'", 2),
    ClientRequest(1, "propose", b"\x00\xff"),
    ClientRequest(2, "read", b""),
    ClientResponse(1, True, b"ok", 17),
    ClientResponse.failure(2, "not_leader", 3),
    ClientResponse(3, False, b"", 0, "no_leader", None),
]


def test_samples_cover_every_class() -> None:
    assert {type(m) for m in SAMPLES} == set(TAGS)
    assert set(MESSAGE_TYPES) <= set(TAGS)


def test_tags_are_stable() -> None:
    # The table is a wire promise: this test changes only with PROTOCOL_VERSION.
    assert {cls.__name__: tag for cls, tag in TAGS.items()} == {
        "RequestVote": 1,
        "RequestVoteResponse": 2,
        "AppendEntries": 3,
        "AppendEntriesResponse": 4,
        "TimeoutNow": 5,
        "ProposeRequest": 6,
        "ProposeResponse": 7,
        "ReadIndexRequest": 8,
        "ReadIndexResponse": 9,
        "InstallSnapshot": 10,
        "InstallSnapshotResponse": 11,
        "Hello": 32,
        "HelloReply": 33,
        "ClientRequest": 40,
        "ClientResponse": 41,
    }


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: WireMessage) -> None:
    decoded = decode(encode(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)


def test_entry_kinds_decode_as_enum() -> None:
    msg = decode(encode(AppendEntries(1, 2, 3, 0, 0, (Entry(1, 3, EntryKind.NOOP, b""),), 0)))
    assert isinstance(msg, AppendEntries)
    assert msg.entries[0].kind is EntryKind.NOOP
    assert isinstance(msg.entries, tuple)


def test_entry_layout_on_the_wire() -> None:
    raw = msgpack.unpackb(encode(AppendEntries(1, 2, 3, 4, 5, (Entry(5, 3, EntryKind.NOOP, b"d"),), 6, 7)))
    assert raw == [3, 1, 2, 3, 4, 5, [[5, 3, 1, b"d"]], 6, 7]


def test_random_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(200):
        msg = AppendEntries(
            rng.randrange(9),
            rng.randrange(9),
            rng.randrange(BIG),
            rng.randrange(100),
            rng.randrange(100),
            _entries(rng, rng.randrange(20)),
            rng.randrange(100),
            rng.randrange(100),
        )
        assert decode(encode(msg)) == msg


def _raw(*items: Any) -> bytes:
    return bytes(msgpack.packb(list(items), use_bin_type=True))


def _ae(entries: Any) -> bytes:
    return _raw(3, 1, 2, 3, 4, 5, entries, 6, 7)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_raw(99, 1, 2, 3), "unknown type tag 99"),
        (_raw(True, 1, 2, 3), "expected an int type tag, got bool"),
        (_raw("RequestVote", 1), "expected an int type tag, got str"),
        (_raw(), "expected a non-empty array"),
        (msgpack.packb(5), "expected a non-empty array, got int"),
        (msgpack.packb({"a": 1}), "malformed msgpack"),
        (_raw(5, 1, 2), r"TimeoutNow: expected 3 fields, got 2"),
        (_raw(5, 1, 2, 3, 4), r"TimeoutNow: expected 3 fields, got 4"),
        (_raw(5, True, 2, 3), r"TimeoutNow.src: expected a non-negative int, got bool True"),
        (_raw(5, 1, 2, -1), r"TimeoutNow.term: expected a non-negative int, got int -1"),
        (_raw(5, 1, 2, 1.5), r"TimeoutNow.term: expected a non-negative int, got float"),
        (_raw(5, 1, None, 3), r"TimeoutNow.dst: expected a non-negative int, got NoneType"),
        (_raw(2, 1, 2, 3, 1, False), r"RequestVoteResponse.granted: expected bool, got int 1"),
        (_raw(6, 1, 2, 3, 4, "text"), r"ProposeRequest.data: expected bytes, got str"),
        (_raw(32, 1, b"cluster", None), r"Hello.cluster_id: expected str, got bytes"),
        (_raw(32, 1, "c", -2), r"Hello.node_id: expected a non-negative int or None, got int -2"),
        (_raw(7, 1, 3, 9, 44, False, 0, 0, False), r"ProposeResponse.leader_hint: expected a non-negative"),
        (_raw(3, 1, 2, 3, 4, 5, "x", 6, 7), r"AppendEntries.entries: expected an array of entries, got str"),
        (_ae([[1, 1, 0, b""], 7]), r"entries\[1\]: expected an entry array, got int"),
        (_ae([[1, 1, 0]]), r"entries\[0\]: expected 4 entry fields, got 3"),
        (_ae([[-1, 1, 0, b""]]), r"entries\[0\].index: expected a non-negative int"),
        (_ae([[1, False, 0, b""]]), r"entries\[0\].term: expected a non-negative int"),
        (_ae([[1, 1, 9, b""]]), r"entries\[0\].kind: unknown EntryKind 9"),
        (_ae([[1, 1, True, b""]]), r"entries\[0\].kind: expected int, got bool"),
        (_ae([[1, 1, 0, "s"]]), r"entries\[0\].data: expected bytes, got str"),
        (b"", "malformed msgpack"),
        (b"\xc1", "malformed msgpack"),
        (_raw(5, 1, 2, 3)[:-1], "malformed msgpack"),
        (_raw(5, 1, 2, 3) + b"\x00", "malformed msgpack"),
        (b"\x93" * 5000, "malformed msgpack"),
        (msgpack.packb([5, 1, 2, msgpack.ExtType(1, b"x")]), "malformed msgpack"),
    ],
)
def test_rejections(payload: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode(payload)


def test_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(3)
    valid = [encode(m) for m in SAMPLES]
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(CodecError):
            decode(bytes(data))


def test_encode_rejects_foreign_values() -> None:
    with pytest.raises(CodecError, match="cannot encode Entry: not a wire message"):
        encode(Entry(1, 1))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="cannot encode ProposeRequest"):
        encode(ProposeRequest(1, 2, 3, 4, object()))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="cannot encode TimeoutNow"):
        encode(TimeoutNow(1, 2, 2**64))

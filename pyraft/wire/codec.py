"""msgpack encoding of every value that crosses a connection.

A value is a msgpack array ``[tag, field1, field2, ...]``; an ``Entry`` inside
AppendEntries is ``[index, term, kind, data]``. Tags are written out in TAGS
rather than derived from MESSAGE_TYPES, so reordering or adding a class can't
silently change what a byte on the wire means.

Decoding trusts nothing: the bytes may come from a stranger, a buggy build or
a corrupted stream. Every field is checked with exact ``type(x) is`` tests
(msgpack gives plain int/bool/bytes/str/None/list, and bool must not pass for
int) and every failure surfaces as ``CodecError`` naming the offending field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, Final, TypeGuard

import msgpack

from pyraft.core.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ProposeRequest,
    ProposeResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from pyraft.wire.client_protocol import ClientRequest, ClientResponse
from pyraft.wire.handshake import Hello, HelloReply

WireMessage = Message | Hello | HelloReply | ClientRequest | ClientResponse


class CodecError(ValueError):
    """The bytes are not a valid encoding, or the value cannot be encoded."""


# Never renumber: a tag is a promise to every other build. Retire, don't reuse.
TAGS: Final[Mapping[type, int]] = {
    RequestVote: 1,
    RequestVoteResponse: 2,
    AppendEntries: 3,
    AppendEntriesResponse: 4,
    TimeoutNow: 5,
    ProposeRequest: 6,
    ProposeResponse: 7,
    ReadIndexRequest: 8,
    ReadIndexResponse: 9,
    InstallSnapshot: 10,
    InstallSnapshotResponse: 11,
    Hello: 32,
    HelloReply: 33,
    ClientRequest: 40,
    ClientResponse: 41,
}
assert set(MESSAGE_TYPES) <= set(TAGS), "every Raft message needs a wire tag"

# Kinds of field; each maps to a checker below. "uint" is a non-negative int.
_FIELDS: Final[Mapping[type, tuple[tuple[str, str], ...]]] = {
    RequestVote: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("last_log_index", "uint"),
        ("last_log_term", "uint"),
        ("pre_vote", "bool"),
        ("transfer", "bool"),
    ),
    RequestVoteResponse: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("granted", "bool"),
        ("pre_vote", "bool"),
    ),
    AppendEntries: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("prev_log_index", "uint"),
        ("prev_log_term", "uint"),
        ("entries", "entries"),
        ("leader_commit", "uint"),
        ("seq", "uint"),
    ),
    AppendEntriesResponse: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("success", "bool"),
        ("match_index", "uint"),
        ("conflict_index", "uint"),
        ("conflict_term", "uint"),
        ("seq", "uint"),
    ),
    TimeoutNow: (("src", "uint"), ("dst", "uint"), ("term", "uint")),
    ProposeRequest: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("request_id", "uint"),
        ("data", "bytes"),
    ),
    ProposeResponse: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("request_id", "uint"),
        ("ok", "bool"),
        ("index", "uint"),
        ("entry_term", "uint"),
        ("leader_hint", "opt_uint"),
    ),
    ReadIndexRequest: (("src", "uint"), ("dst", "uint"), ("term", "uint"), ("request_id", "uint")),
    ReadIndexResponse: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("request_id", "uint"),
        ("ok", "bool"),
        ("read_index", "uint"),
        ("leader_hint", "opt_uint"),
    ),
    InstallSnapshot: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("last_index", "uint"),
        ("last_term", "uint"),
        ("offset", "uint"),
        ("data", "bytes"),
        ("done", "bool"),
    ),
    InstallSnapshotResponse: (
        ("src", "uint"),
        ("dst", "uint"),
        ("term", "uint"),
        ("last_index", "uint"),
        ("last_term", "uint"),
        ("next_offset", "uint"),
        ("installed", "bool"),
    ),
    Hello: (("protocol_version", "uint"), ("cluster_id", "str"), ("node_id", "opt_uint")),
    HelloReply: (("ok", "bool"), ("reason", "str"), ("node_id", "uint")),
    ClientRequest: (("request_id", "uint"), ("op", "str"), ("data", "bytes")),
    ClientResponse: (
        ("request_id", "uint"),
        ("ok", "bool"),
        ("result", "bytes"),
        ("index", "uint"),
        ("error", "str"),
        ("leader_hint", "opt_uint"),
    ),
}


def _check_field_tables() -> None:
    """Fail at import, not on the wire, if a message class and its field list drift apart."""
    for cls, fields in _FIELDS.items():
        declared = tuple(f.name for f in dataclasses.fields(cls))
        listed = tuple(name for name, _ in fields)
        if declared != listed:
            raise RuntimeError(f"codec field list for {cls.__name__} is {listed}, class declares {declared}")


_check_field_tables()

# Unpacking limits: no single string or array may claim more than this, so a
# hostile length header can't make the unpacker allocate wildly. Maps and ext
# types never appear in a valid encoding.
MAX_BIN_LEN: Final = 64 << 20
MAX_STR_LEN: Final = 1 << 20
MAX_ARRAY_LEN: Final = 1 << 22


def _describe(value: object) -> str:
    if type(value) in (int, bool):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _uint(value: object, where: str) -> int:
    if type(value) is int and value >= 0:
        return value
    raise CodecError(f"{where}: expected a non-negative int, got {_describe(value)}")


def _opt_uint(value: object, where: str) -> int | None:
    if value is None:
        return None
    if type(value) is int and value >= 0:
        return value
    raise CodecError(f"{where}: expected a non-negative int or None, got {_describe(value)}")


def _bool(value: object, where: str) -> bool:
    if type(value) is bool:
        return value
    raise CodecError(f"{where}: expected bool, got {_describe(value)}")


def _bytes(value: object, where: str) -> bytes:
    if type(value) is bytes:
        return value
    raise CodecError(f"{where}: expected bytes, got {_describe(value)}")


def _str(value: object, where: str) -> str:
    if type(value) is str:
        return value
    raise CodecError(f"{where}: expected str, got {_describe(value)}")


_KINDS: Final[Mapping[int, EntryKind]] = {kind.value: kind for kind in EntryKind}


def _entry_factory() -> Callable[[int, int, EntryKind, bytes], Entry]:
    """Build Entries by filling their slots directly: 2-3x cheaper than the frozen
    dataclass __init__, which matters for 1000-entry AppendEntries. Falls back to
    the constructor if Entry ever grows validation or changes its layout."""
    slots = getattr(Entry, "__slots__", ())
    if hasattr(Entry, "__post_init__") or tuple(slots) != ("index", "term", "kind", "data"):
        return Entry  # pragma: no cover
    set_index, set_term, set_kind, set_data = (Entry.__dict__[name].__set__ for name in slots)
    new = object.__new__

    def make(index: int, term: int, kind: EntryKind, data: bytes) -> Entry:
        entry: Entry = new(Entry)
        set_index(entry, index)
        set_term(entry, term)
        set_kind(entry, kind)
        set_data(entry, data)
        return entry

    return make


_make_entry: Final = _entry_factory()


def _entries(value: object, where: str) -> tuple[Entry, ...]:
    """The hot path of the codec: stays a tight loop and only diagnoses on failure."""
    if type(value) is not list:
        raise CodecError(f"{where}: expected an array of entries, got {_describe(value)}")
    out: list[Entry] = []
    append = out.append
    kinds = _KINDS
    make = _make_entry
    for item in value:
        if type(item) is list and len(item) == 4:
            index, term, kind, data = item
            if (
                type(index) is int
                and index >= 0
                and type(term) is int
                and term >= 0
                and type(kind) is int
                and kind in kinds
                and type(data) is bytes
            ):
                append(make(index, term, kinds[kind], data))
                continue
        _entry_error(item, f"{where}[{len(out)}]")
    return tuple(out)


def _entry_error(item: object, where: str) -> None:
    if type(item) is not list:
        raise CodecError(f"{where}: expected an entry array, got {_describe(item)}")
    if len(item) != 4:
        raise CodecError(f"{where}: expected 4 entry fields, got {len(item)}")
    _uint(item[0], f"{where}.index")
    _uint(item[1], f"{where}.term")
    kind = item[2]
    if type(kind) is not int:
        raise CodecError(f"{where}.kind: expected int, got {_describe(kind)}")
    if kind not in _KINDS:
        raise CodecError(f"{where}.kind: unknown EntryKind {kind}")
    _bytes(item[3], f"{where}.data")
    raise AssertionError(f"{where}: entry rejected without a diagnosis")  # pragma: no cover


_CHECKERS: Final[Mapping[str, Callable[[Any, str], Any]]] = {
    "uint": _uint,
    "opt_uint": _opt_uint,
    "bool": _bool,
    "bytes": _bytes,
    "str": _str,
    "entries": _entries,
}

_Decoder = Callable[[list[Any]], WireMessage]
_Encoder = Callable[[Any], tuple[Any, ...]]


def _make_decoder(cls: type, fields: tuple[tuple[str, str], ...]) -> _Decoder:
    arity = len(fields) + 1
    plan = tuple((_CHECKERS[kind], f"{cls.__name__}.{name}") for name, kind in fields)
    name = cls.__name__

    def decode_fields(items: list[Any]) -> WireMessage:
        if len(items) != arity:
            raise CodecError(f"{name}: expected {arity - 1} fields, got {len(items) - 1}")
        args = [check(value, where) for (check, where), value in zip(plan, items[1:], strict=True)]
        result: WireMessage = cls(*args)
        return result

    return decode_fields


def _make_encoder(cls: type, fields: tuple[tuple[str, str], ...]) -> _Encoder:
    tag = TAGS[cls]
    names = [name for name, _ in fields]
    if "entries" in names:
        at = names.index("entries")
        get = attrgetter(*names)

        def encode_with_entries(msg: Any) -> tuple[Any, ...]:
            values = list(get(msg))
            values[at] = [(e.index, e.term, e.kind, e.data) for e in values[at]]
            return (tag, *values)

        return encode_with_entries
    if len(names) == 1:  # attrgetter of one name returns the bare value
        single = attrgetter(names[0])
        return lambda msg: (tag, single(msg))
    many = attrgetter(*names)
    return lambda msg: (tag, *many(msg))


_DECODERS: Final[Mapping[int, _Decoder]] = {TAGS[cls]: _make_decoder(cls, f) for cls, f in _FIELDS.items()}
_ENCODERS: Final[Mapping[type, _Encoder]] = {cls: _make_encoder(cls, f) for cls, f in _FIELDS.items()}


_RAFT_TYPES: Final = frozenset(MESSAGE_TYPES)


def is_raft_message(msg: object) -> TypeGuard[Message]:
    """True for the messages nodes exchange, false for handshake and client traffic."""
    return type(msg) in _RAFT_TYPES


def encode(msg: WireMessage) -> bytes:
    """Raise CodecError for a value outside the closed set or with unencodable fields."""
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise CodecError(f"cannot encode {type(msg).__name__}: not a wire message")
    try:
        packed: bytes = msgpack.packb(encoder(msg), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {type(msg).__name__}: {exc}") from exc
    return packed


def decode(payload: bytes) -> WireMessage:
    """Raise CodecError for anything but one complete, well-typed wire message."""
    try:
        items = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_BIN_LEN,
            max_str_len=MAX_STR_LEN,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise CodecError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc
    if type(items) is not list or not items:
        raise CodecError(f"expected a non-empty array, got {_describe(items)}")
    tag = items[0]
    if type(tag) is not int:
        raise CodecError(f"expected an int type tag, got {_describe(tag)}")
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise CodecError(f"unknown type tag {tag}")
    return decoder(items)

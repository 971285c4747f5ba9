"""Snapshots of the metadata store: its complete replicated state at ``applied_index`` as bytes.

A snapshot replaces the log prefix up to ``applied_index``, so it must hold
everything a later command's outcome can depend on:

* the current records, as KRaft snapshots hold them: FeatureLevelRecord,
  RegisterBrokerRecord (with the fenced / controlled-shutdown flags it has now),
  TopicRecord, PartitionRecord (as changed so far) and ProducerIdsRecord;
* the idempotency memory (Raft thesis 6.3): key → encoded outcome, oldest first,
  and its capacity. Without it a client retrying a write whose answer it lost
  could apply the write twice after a restart, and the nodes that restored from
  a snapshot would disagree with those that replayed the log about which old
  key has been evicted.

It does **not** hold the effective-record log that ``MetadataStore.fetch`` serves.
KRaft answers a fetch below the log start with the snapshot's id and the
fetcher loads the snapshot instead; keeping the log would make every snapshot
as large as the log it is meant to replace. A restored store's log therefore
starts empty, after ``applied_index``: whoever serves ``fetch`` must answer an
offset below the snapshot with the snapshot id rather than with the records it
no longer has.

Deterministic: every section is sorted by its key, so two nodes with the same
state write identical bytes, whatever order their dicts were filled in (a node
that restored from a snapshot and one that replayed the log fill them
differently). The idempotency memory keeps its apply order, which is the same
on every node and decides eviction.

Payload (msgpack)::

    [FORMAT, applied_index,
     [[apiKey, version, [[field...], ...]], ...],   # one section per record type, fixed order
     [capacity, [[key, outcome], ...]]]             # idempotency memory, oldest first

Fields are in the record's ``FIELDS`` order with Kafka's wire kinds (endpoints
as ``[name, host, port, securityProtocol]``). Decoding builds the records
directly without the per-field checks of ``record_from_wire``: those cost ~60 µs
a record (a minute for a million) and the bytes were written by pyraft and
checksummed by the snapshot file. ``restore_store(data, check=True)`` runs the
full checks, for tools and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, Final, TypeVar

import msgpack

from pyraft.metadata.records import (
    BrokerEndpoint,
    FeatureLevelRecord,
    PartitionRecord,
    ProducerIdsRecord,
    Record,
    RecordError,
    RegisterBrokerRecord,
    TopicRecord,
    record_from_wire,
)
from pyraft.metadata.store import MetadataStore
from pyraft.metadata.store_state import MetadataState

FORMAT: Final = 1

# Section order is also the install order: nothing refers to a later section.
SECTION_TYPES: Final[tuple[type[Record], ...]] = (
    FeatureLevelRecord,
    RegisterBrokerRecord,
    TopicRecord,
    PartitionRecord,
    ProducerIdsRecord,
)

_Row = Sequence[Any]
_R = TypeVar("_R", bound=Record)


class SnapshotFormatError(RecordError):
    """Bytes that are not a metadata snapshot this version of pyraft can restore."""


# --------------------------------------------------------------------------- writing


def snapshot_store(store: MetadataStore) -> bytes:
    """The store's replicated state at ``store.applied_index`` as deterministic msgpack bytes."""
    st = store.state
    sections = [
        _section(FeatureLevelRecord, (FeatureLevelRecord(n, st.features[n]) for n in sorted(st.features))),
        _section(RegisterBrokerRecord, (st.brokers[b] for b in sorted(st.brokers))),
        _section(TopicRecord, (st.topics[t] for t in sorted(st.topics))),
        _section(PartitionRecord, (st.partitions[k] for k in sorted(st.partitions))),
        _section(ProducerIdsRecord, (st.producers[k] for k in sorted(st.producers))),
    ]
    memory = [store.idempotency_capacity, store.remembered_outcomes()]
    packed: bytes = msgpack.packb([FORMAT, store.applied_index, sections, memory], use_bin_type=True)
    return packed


def _section(cls: type[Record], records: Iterable[Record]) -> list[Any]:
    """``[apiKey, version, rows]``; attrgetter yields tuples, which msgpack packs as arrays."""
    row = attrgetter(*(f.attr for f in cls.FIELDS))
    if cls is RegisterBrokerRecord:
        rows: list[Any] = [_broker_row(r) for r in records]
    else:
        rows = [row(r) for r in records]
    return [cls.API_KEY, cls.VERSION, rows]


def _broker_row(r: Record) -> list[Any]:
    assert isinstance(r, RegisterBrokerRecord)
    wire = r.to_wire()  # the few brokers go through the generic codec for their endpoints
    return wire[2:]


# --------------------------------------------------------------------------- reading


def restore_store(data: bytes, *, check: bool = False) -> MetadataStore:
    """A store in exactly the state ``snapshot_store`` captured, with an empty fetchable log.

    ``check`` validates every field as ``record_from_wire`` does (slow); without
    it only the structure is checked. Raises ``SnapshotFormatError`` (a
    RecordError) on anything that is not a snapshot of this format."""
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:
        raise SnapshotFormatError(f"metadata snapshot is not valid msgpack: {exc}") from exc
    if not isinstance(wire, tuple) or len(wire) != 4 or wire[0] != FORMAT or type(wire[0]) is not int:
        head = wire[0] if isinstance(wire, tuple) and wire else wire
        raise SnapshotFormatError(f"not a metadata snapshot of format {FORMAT} (starts with {head!r:.80})")
    _, applied_index, sections, memory = wire
    if type(applied_index) is not int or applied_index < 0:
        raise SnapshotFormatError(f"snapshot applied index must be an int >= 0, got {applied_index!r}")
    records = _records(sections, check)
    capacity, remembered = _memory(memory)
    store = MetadataStore(idempotency_keys=capacity)
    store.state = _state(records)
    store.applied_index = applied_index
    store.remember_outcomes(remembered)
    return store


def _records(sections: object, check: bool) -> list[list[Record]]:
    """Each section's records, in SECTION_TYPES order."""
    if not isinstance(sections, tuple) or len(sections) != len(SECTION_TYPES):
        raise SnapshotFormatError(f"snapshot needs {len(SECTION_TYPES)} record sections")
    out = []
    for cls, section in zip(SECTION_TYPES, sections, strict=True):
        if not isinstance(section, tuple) or len(section) != 3 or not isinstance(section[2], tuple):
            raise SnapshotFormatError(f"{cls.NAME} section must be [apiKey, version, rows]")
        if section[0] != cls.API_KEY or section[1] != cls.VERSION:
            raise SnapshotFormatError(
                f"expected a {cls.NAME} v{cls.VERSION} section (apiKey {cls.API_KEY}), "
                f"got apiKey {section[0]!r} v{section[1]!r}"
            )
        out.append(_rows(cls, section[2], check))
    return out


def _rows(cls: type[Record], rows: tuple[_Row, ...], check: bool) -> list[Record]:
    if check:
        return [record_from_wire([cls.API_KEY, cls.VERSION, *_listed(row)]) for row in rows]
    build = _builder(cls)
    try:
        return [build(row) for row in rows]
    except (TypeError, ValueError) as exc:
        raise SnapshotFormatError(f"malformed {cls.NAME} row in snapshot: {exc}") from exc


def _builder(cls: type[Record]) -> Callable[[_Row], Record]:
    """Positional construction in FIELDS order (tests pin that it matches the dataclass order)."""
    if cls is RegisterBrokerRecord:
        return _broker_from_row

    def build(row: _Row) -> Record:
        return cls(*row)

    return build


def _broker_from_row(row: _Row) -> Record:
    broker_id, incarnation, epoch, end_points, rack, fenced, shutdown = row
    endpoints = tuple(BrokerEndpoint(*e) for e in end_points)
    return RegisterBrokerRecord(broker_id, incarnation, epoch, endpoints, rack, fenced, shutdown)


def _listed(value: Any) -> Any:
    """Tuples back to lists, the shape ``record_from_wire`` expects from msgpack."""
    if isinstance(value, tuple | list):
        return [_listed(v) for v in value]
    return value


def _state(sections: list[list[Record]]) -> MetadataState:
    """Fill the state's dicts directly; a duplicate key means the snapshot is not one we wrote."""
    features, brokers, topics, partitions, producers = sections
    st = MetadataState()
    st.features = {r.name: r.feature_level for r in _typed(features, FeatureLevelRecord)}
    st.brokers = {r.broker_id: r for r in _typed(brokers, RegisterBrokerRecord)}
    st.topics = {r.topic_id: r for r in _typed(topics, TopicRecord)}
    st.topic_ids = {r.name: r.topic_id for r in _typed(topics, TopicRecord)}
    st.partitions = {(r.topic_id, r.partition_id): r for r in _typed(partitions, PartitionRecord)}
    st.producers = {(r.broker_id, r.next_producer_id): r for r in _typed(producers, ProducerIdsRecord)}
    sizes = [len(st.features), len(st.brokers), len(st.topics), len(st.partitions), len(st.producers)]
    if sizes != [len(s) for s in sections] or len(st.topic_ids) != len(st.topics):
        raise SnapshotFormatError("snapshot has duplicate keys in a section")
    if any(t not in st.topics for (t, _) in st.partitions):
        raise SnapshotFormatError("snapshot has a partition of a topic it does not hold")
    return st


def _typed(records: list[Record], cls: type[_R]) -> list[_R]:
    """Narrow a section's records for the type checker (the builder made them all ``cls``)."""
    return records  # type: ignore[return-value]


def _memory(memory: object) -> tuple[int, list[tuple[str, bytes]]]:
    if not isinstance(memory, tuple) or len(memory) != 2 or not isinstance(memory[1], tuple):
        raise SnapshotFormatError("snapshot idempotency memory must be [capacity, [[key, outcome]...]]")
    capacity, pairs = memory
    if type(capacity) is not int or capacity < 0:
        raise SnapshotFormatError(f"idempotency capacity must be an int >= 0, got {capacity!r}")
    remembered: list[tuple[str, bytes]] = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise SnapshotFormatError(f"idempotency entry must be [key, outcome], got {pair!r:.80}")
        if not isinstance(pair[1], bytes):
            raise SnapshotFormatError(f"idempotency outcome for {pair[0]!r} must be bytes")
        remembered.append((pair[0], pair[1]))
    return capacity, remembered

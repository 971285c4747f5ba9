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
     [[apiKey, version, [column, ...]], ...],       # one section per record type, fixed order
     [capacity, [[key, outcome], ...]]]             # idempotency memory, oldest first

A section stores its records column by column, one column per entry of the
record's ``FIELDS`` (Kafka's wire kinds), because columns can be filled in by
C-level loops (see ``_build``). Format 2 writes a column in one of three ways:

* ``[value, ...]``, one per record;
* ``[[distinct value, ...], [code, ...]]`` for the columns whose values repeat
  (uuid, int lists and optional strings, except a broker's incarnation and a
  topic's id): each value once, then an index into them per record, so
  decoding makes one object per distinct value and shares it (all of a
  topic's partitions hold one topicId, all brokers one rack);
* endpoints flat over the whole section: ``[[count per record, ...], names
  (coded), [host, ...], ports (coded), [securityProtocol, ...]]``.

Format 1 (still read) wrote every column as ``[value, ...]`` and endpoints as
``[[name, host, port, securityProtocol], ...]`` per record.

Decoding skips the per-field checks of ``record_from_wire``: they
cost ~60 µs a record (a minute for a million) and the bytes were written by
pyraft and checksummed by the snapshot file; only the structure is checked.
``restore_store(data, check=True)`` runs the full checks, for tools and tests.

The work is split for ``MetadataStore.capture`` / ``restore``: ``Image`` is
what a snapshot holds, taken by ``capture`` in the event loop (cheap copies,
see store_tables) and encoded by ``encode_image`` in a worker thread;
``decode_image`` builds a new state in a worker thread for ``restore`` to swap
in. ``snapshot_records`` decodes only the records, for serving a snapshot to
fetching brokers (snapshot_serving).

Measured on a 2-core machine shared at load average ~10: 1,000,000 partitions
in 1,000 topics plus 100,000 idempotency keys give a 78 MB payload; encoding
takes 2.2 s of CPU and restoring 2.4 s (wall time was about twice that under
the load). With the copy-on-write tables (store_tables), 1,000,000 partitions
of 3 replicas in 1,000 topics plus 100,000 keys (a 56 MB payload): ``capture``
holds the event loop ~20 µs, encoding takes 1.2-1.6 s of CPU, decoding for
``restore`` 2.5-3.2 s and installing it ~20 µs (load average 4-9).

bench.recovery's snapshot (950,000 brokers with one listener each, 100,000
idempotency keys): ``MetadataStore.restore`` took 5.3-8.7 s of CPU, a third of
it in collections over the new objects after the GC pause ended (now frozen
first, see ``_GcPause``) and 1.8 s in building endpoints one call each; now
2.2-2.7 s (format 2, 136 MB; format 1 held the same in 170 MB), encoding
1.2-1.5 s (load average 2-3). What is left is mostly msgpack making the
strings and ints (~0.7 s) and ``_build`` making ~2 million slotted objects.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice, repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgpack

from pyraft.metadata.records import (
    BrokerEndpoint,
    FeatureLevelRecord,
    Field,
    PartitionRecord,
    ProducerIdsRecord,
    Record,
    RecordError,
    RegisterBrokerRecord,
    TopicRecord,
    record_from_wire,
)
from pyraft.metadata.sliced_pack import sliced_packb
from pyraft.metadata.store_state import MetadataState
from pyraft.metadata.store_tables import PartitionTable

if TYPE_CHECKING:
    from pyraft.metadata.store import MetadataStore

FORMAT: Final = 2  # what encode_image writes
READABLE_FORMATS: Final = (1, 2)  # what decode_image reads: format 1 files from before stay loadable

# Section order is also the install order: nothing refers to a later section.
SECTION_TYPES: Final[tuple[type[Record], ...]] = (
    FeatureLevelRecord,
    RegisterBrokerRecord,
    TopicRecord,
    PartitionRecord,
    ProducerIdsRecord,
)

_R = TypeVar("_R", bound=Record)
_T = TypeVar("_T")
_K = TypeVar("_K")


class SnapshotFormatError(RecordError):
    """Bytes that are not a metadata snapshot this version of pyraft can restore."""


@dataclass(frozen=True, slots=True)
class Image:
    """What a snapshot holds: the replicated state at ``applied_index`` and the idempotency memory.

    ``remembered`` is ``(key, outcome)`` oldest first; ``capacity`` is part of
    the image because it decides which key is forgotten next."""

    applied_index: int
    state: MetadataState
    remembered: Iterable[tuple[str, bytes]]
    capacity: int


class _GcPause:
    """Pause the cyclic GC while building a million objects that all stay alive.

    Otherwise the allocations trigger full collections that free nothing and
    cost over a third of a restore (measured: 5.4 s of CPU against 3.4 s). The
    switch is process-wide and encodes and decodes run in worker threads,
    possibly two at once, so it is counted: the last one out turns it back on.

    ``freeze=True`` (a restore: what was built is the new long-lived state)
    also moves every object alive when the last holder leaves into the
    permanent generation (``gc.freeze``, as ``pyraft.actors.heap.freeze_heap``
    does after every restore) *before* the collector is back on. Without it
    the first allocation after the pause finds millions of objects in the
    youngest generation and walks them all, then again in the older ones
    (measured: 0.6-0.8 s after decoding a million brokers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False
        self._freeze = False

    @contextmanager
    def __call__(self, *, freeze: bool = False) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                self._freeze = False
                gc.disable()
            self._holders += 1
        try:
            yield
            if freeze:
                with self._lock:
                    self._freeze = True
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    if self._freeze:
                        gc.freeze()
                    if self._resume:
                        gc.enable()


gc_paused = _GcPause()
"""``with gc_paused():`` pauses the cyclic GC (counted across threads); see ``_GcPause``."""


# --------------------------------------------------------------------------- the store's view


def snapshot_store(store: MetadataStore) -> bytes:
    """The store's replicated state at ``store.applied_index`` as deterministic msgpack bytes."""
    return store.capture()()


def restore_store(data: bytes, *, check: bool = False) -> MetadataStore:
    """A store in exactly the state ``snapshot_store`` captured, with an empty fetchable log.

    ``check`` validates every field as ``record_from_wire`` does (slow); without
    it only the structure is checked. Raises ``SnapshotFormatError`` (a
    RecordError) on anything that is not a snapshot of this format."""
    from pyraft.metadata.store import MetadataStore  # store.py imports this module

    store = MetadataStore()
    store.install_image(decode_image(data, check=check))
    return store


# --------------------------------------------------------------------------- writing


def encode_image(image: Image) -> bytes:
    """``image`` as deterministic msgpack bytes; reads only the image (safe in a worker thread)."""
    with gc_paused():
        st = image.state
        features = [FeatureLevelRecord(n, st.features[n]) for n in sorted(st.features)]
        sections = [
            _section(FeatureLevelRecord, features),
            _section(RegisterBrokerRecord, [st.brokers[b] for b in sorted(st.brokers)]),
            _section(TopicRecord, [st.topics[t] for t in sorted(st.topics)]),
            _section(PartitionRecord, st.partitions.sorted_records()),
            _section(ProducerIdsRecord, [st.producers[k] for k in sorted(st.producers)]),
        ]
        memory = [image.capacity, list(image.remembered)]
        # A slice at a time: one packb over a million records held the GIL for 2.2 s (sliced_pack).
        packed: bytes = sliced_packb([FORMAT, image.applied_index, sections, memory])
        return packed


def _section(cls: type[Record], listed: Sequence[Record]) -> list[Any]:
    """``[apiKey, version, [column per field]]``: one C-level pass per field (see ``_build``)."""
    columns: list[Any] = []
    for f in cls.FIELDS:
        values = list(map(attrgetter(f.attr), listed))
        if f.kind == "endpoints":
            columns.append(_endpoints_wire(values))
        elif _repeats(cls, f):
            columns.append(_coded(values))
        else:
            columns.append(values)
    return [cls.API_KEY, cls.VERSION, columns]


def _coded(values: list[Any]) -> list[list[Any]]:
    """``[distinct values in first-seen order, code per value]``: each repeated value written once."""
    try:
        distinct = list(dict.fromkeys(values))
    except TypeError:  # a list where records hold tuples (a record built by hand): coded by its items
        values = [tuple(v) if isinstance(v, list) else v for v in values]
        distinct = list(dict.fromkeys(values))
    code = {value: i for i, value in enumerate(distinct)}
    return [distinct, list(map(code.__getitem__, values))]


def _endpoints_wire(per_record: list[tuple[BrokerEndpoint, ...]]) -> list[Any]:
    """Every record's endpoints as ``[count per record, names, hosts, ports, protocols]`` (flat)."""
    flat = list(chain.from_iterable(per_record))
    names, hosts, ports, protocols = (list(map(attrgetter(a), flat)) for a in _ENDPOINT_ATTRS)
    return [list(map(len, per_record)), _coded(names), hosts, _coded(ports), protocols]


# --------------------------------------------------------------------------- reading


def decode_image(data: bytes, *, check: bool = False) -> Image:
    """A new state (sharing nothing with any store) from ``encode_image`` bytes; see ``restore_store``."""
    with gc_paused():
        version, applied_index, sections, memory = _parts(data)
        capacity, remembered = _memory(memory)
        return Image(applied_index, _state(_records(version, sections, check)), remembered, capacity)


def snapshot_records(data: bytes) -> tuple[int, list[Record]]:
    """The snapshot's applied index and its records in install order, without building a state.

    For serving a snapshot to fetching brokers: they install these records as
    they come, in this order (features, brokers, topics, partitions, producers)."""
    with gc_paused():
        version, applied_index, sections, _ = _parts(data)
        return applied_index, list(chain.from_iterable(_records(version, sections, False)))


def _parts(data: bytes) -> tuple[int, int, object, object]:
    """``(format, applied_index, sections, memory)`` of a snapshot whose envelope is checked."""
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:
        raise SnapshotFormatError(f"metadata snapshot is not valid msgpack: {exc}") from exc
    if (
        not isinstance(wire, tuple)
        or len(wire) != 4
        or type(wire[0]) is not int
        or wire[0] not in READABLE_FORMATS
    ):
        head = wire[0] if isinstance(wire, tuple) and wire else wire
        raise SnapshotFormatError(
            f"not a metadata snapshot of format {' or '.join(map(str, READABLE_FORMATS))} "
            f"(starts with {head!r:.80})"
        )
    version, applied_index, sections, memory = wire
    if type(applied_index) is not int or applied_index < 0:
        raise SnapshotFormatError(f"snapshot applied index must be an int >= 0, got {applied_index!r}")
    return version, applied_index, sections, memory


def _records(version: int, sections: object, check: bool) -> list[list[Record]]:
    """Each section's records, in SECTION_TYPES order."""
    if not isinstance(sections, tuple) or len(sections) != len(SECTION_TYPES):
        raise SnapshotFormatError(f"snapshot needs {len(SECTION_TYPES)} record sections")
    out = []
    for cls, section in zip(SECTION_TYPES, sections, strict=True):
        if not isinstance(section, tuple) or len(section) != 3 or not isinstance(section[2], tuple):
            raise SnapshotFormatError(f"{cls.NAME} section must be [apiKey, version, columns]")
        if section[0] != cls.API_KEY or section[1] != cls.VERSION:
            raise SnapshotFormatError(
                f"expected a {cls.NAME} v{cls.VERSION} section (apiKey {cls.API_KEY}), "
                f"got apiKey {section[0]!r} v{section[1]!r}"
            )
        out.append(_rows(cls, version, section[2], check))
    return out


def _rows(cls: type[Record], version: int, columns: tuple[Any, ...], check: bool) -> list[Record]:
    if len(columns) != len(cls.FIELDS) or not all(isinstance(col, tuple) for col in columns):
        raise SnapshotFormatError(f"{cls.NAME} section needs {len(cls.FIELDS)} columns")
    native = _native if version == FORMAT else _native_v1
    try:
        natives = [native(cls, f, col) for f, col in zip(cls.FIELDS, columns, strict=True)]
        count = len(natives[0]) if natives else 0
        if any(len(col) != count for col in natives):
            raise SnapshotFormatError(f"{cls.NAME} columns differ in length")
        if check:
            rows = zip(*natives, strict=True)
            return [record_from_wire([cls.API_KEY, cls.VERSION, *_listed(row)]) for row in rows]
        return _build(cls, count, [f.attr for f in cls.FIELDS], natives)
    except (TypeError, ValueError, IndexError) as exc:
        raise SnapshotFormatError(f"malformed {cls.NAME} column in snapshot: {exc}") from exc


_SHARED_KINDS: Final = frozenset({"uuid", "int32[]", "int32[]?", "str?"})
# Columns whose values are each record's own (a broker's incarnation, a topic's id): coding
# or sharing them would only cost time and space.
_DISTINCT: Final = frozenset({(RegisterBrokerRecord, "incarnation_id"), (TopicRecord, "topic_id")})
_ENDPOINT_ATTRS: Final = ("name", "host", "port", "security_protocol")


def _repeats(cls: type[Record], f: Field) -> bool:
    """Whether a column's values repeat across records (a topicId over its partitions, a rack)."""
    return f.kind in _SHARED_KINDS and (cls, f.attr) not in _DISTINCT


def _native(cls: type[Record], f: Field, column: tuple[Any, ...]) -> tuple[Any, ...]:
    """A format-2 column as the record attributes hold it: repeated values decoded once and shared.

    A coded column ``[distinct, codes]`` is expanded by one C-level pass
    (``map(distinct.__getitem__, codes)``), so every record gets the same
    object for the same value without msgpack making a million strings
    first: all of a topic's partitions share one topicId and one replica list,
    all brokers one listener name and rack."""
    if f.kind == "endpoints":
        return _endpoints(column)
    if _repeats(cls, f):
        return _decoded(column)
    return column


def _decoded(column: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(column) != 2 or type(column[0]) is not tuple or type(column[1]) is not tuple:
        raise SnapshotFormatError("a coded column must be [distinct values, codes]")
    distinct: tuple[Any, ...] = column[0]
    codes: tuple[Any, ...] = column[1]
    if len(distinct) == 1 and codes.count(0) == len(codes):
        return distinct * len(codes)  # one value throughout (one rack, one listener name): no lookups
    if codes and min(codes) < 0:
        raise SnapshotFormatError("a coded column has a negative code")
    return tuple(map(distinct.__getitem__, codes))


def _endpoints(column: tuple[Any, ...]) -> tuple[tuple[BrokerEndpoint, ...], ...]:
    """``[count per record, names, hosts, ports, protocols]`` back to each record's endpoints.

    All endpoints of the section are built at once through the slot
    descriptors (``_build``), then handed back per record: a million brokers
    cost no generator step and no dataclass ``__init__`` each (1.8 s of a
    restore, measured)."""
    if len(column) != 5 or type(column[0]) is not tuple or type(column[2]) is not tuple:
        raise SnapshotFormatError("endpoints must be [counts, names, hosts, ports, protocols]")
    counts, names, hosts, ports, protocols = column
    values = [_decoded(names), hosts, _decoded(ports), protocols]
    total = sum(counts)
    if (counts and min(counts) < 0) or any(len(v) != total for v in values):
        raise SnapshotFormatError("endpoint columns do not add up to the counts per record")
    return _grouped(_build(BrokerEndpoint, len(hosts), _ENDPOINT_ATTRS, values), counts)


def _grouped(flat: list[BrokerEndpoint], counts: Sequence[int]) -> tuple[tuple[BrokerEndpoint, ...], ...]:
    """``flat`` cut into consecutive tuples of ``counts[i]`` endpoints."""
    if counts.count(1) == len(counts):  # the usual case: one listener per broker
        return tuple(zip(flat))
    rest = iter(flat)
    return tuple(tuple(islice(rest, n)) for n in counts)


def _native_v1(cls: type[Record], f: Field, column: tuple[Any, ...]) -> tuple[Any, ...]:
    """A format-1 column as the record attributes hold it (msgpack already gives tuples for int lists).

    Format 1 wrote every value in full and endpoints as ``[name, host, port,
    securityProtocol]`` per endpoint: equal values are shared here through a
    memo dict instead (measured on a million partitions in 1,000 topics: 349
    MB of live records became 137 MB)."""
    if f.kind == "endpoints":
        return _endpoints_v1(column)
    if _repeats(cls, f):
        memo: dict[Any, Any] = {}
        return tuple(map(memo.setdefault, column, column))
    return column


def _endpoints_v1(column: tuple[Any, ...]) -> tuple[tuple[BrokerEndpoint, ...], ...]:
    """Each record's ``[[name, host, port, securityProtocol], ...]`` as BrokerEndpoint tuples.

    The shape is checked explicitly, since ``zip`` would silently cut a list that is too short."""
    if not set(map(type, column)) <= {tuple}:
        raise SnapshotFormatError("endpoints must be a list per broker")
    flat = list(chain.from_iterable(column))
    if not set(map(type, flat)) <= {tuple} or not set(map(len, flat)) <= {4}:
        raise SnapshotFormatError("an endpoint must be [name, host, port, securityProtocol]")
    values = [list(map(itemgetter(i), flat)) for i in range(4)]
    return _grouped(_build(BrokerEndpoint, len(flat), _ENDPOINT_ATTRS, values), list(map(len, column)))


def _build(cls: type[_T], count: int, attrs: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[_T]:
    """``count`` instances of the slotted dataclass ``cls``, filled column by column.

    The dataclass ``__init__`` (one Python call and a frozen ``object.__setattr__``
    per field) was most of a restore's time; ``map`` over a slot setter runs
    the loop in C. It skips ``__init__``, so tests pin that the classes built
    here have no ``__post_init__`` and that ``attrs`` covers every dataclass field."""
    built: list[_T] = list(map(object.__new__, repeat(cls, count)))
    for attr, column in zip(attrs, columns, strict=True):
        deque(map(vars(cls)[attr].__set__, built, column), maxlen=0)
    return built


def _listed(value: Any) -> Any:
    """Tuples (and endpoints) back to lists, the shape ``record_from_wire`` expects from msgpack."""
    if isinstance(value, tuple | list):
        return [_listed(v) for v in value]
    if isinstance(value, BrokerEndpoint):
        return [value.name, value.host, value.port, value.security_protocol]
    return value


def _state(sections: list[list[Record]]) -> MetadataState:
    """Fill the state's tables directly; a duplicate key means the snapshot is not one we wrote."""
    features, brokers, topics, partitions, producers = sections
    st = MetadataState()
    st.features = {r.name: r.feature_level for r in _typed(features, FeatureLevelRecord)}
    st.brokers = _keyed(attrgetter("broker_id"), _typed(brokers, RegisterBrokerRecord))
    st.topics = _keyed(attrgetter("topic_id"), _typed(topics, TopicRecord))
    st.topic_ids = {r.name: r.topic_id for r in _typed(topics, TopicRecord)}
    st.partitions = PartitionTable.of_records(_typed(partitions, PartitionRecord))
    st.producers = _keyed(attrgetter("broker_id", "next_producer_id"), _typed(producers, ProducerIdsRecord))
    sizes = [len(st.features), len(st.brokers), len(st.topics), len(st.partitions), len(st.producers)]
    if sizes != [len(s) for s in sections] or len(st.topic_ids) != len(st.topics):
        raise SnapshotFormatError("snapshot has duplicate keys in a section")
    if any(t not in st.topics for t in st.partitions.topic_ids()):
        raise SnapshotFormatError("snapshot has a partition of a topic it does not hold")
    return st


def _keyed(key: Callable[[_R], _K], records: list[_R]) -> dict[_K, _R]:
    """``{key(r): r}`` in one C-level pass (a million brokers: no comprehension step each)."""
    return dict(zip(map(key, records), records, strict=True))


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
    if len({key for key, _ in remembered}) != len(remembered):
        raise SnapshotFormatError("snapshot idempotency memory holds a key twice")
    return capacity, remembered

"""The metadata store: the KRaft-style state machine the Raft log is applied to.

Deterministic by construction: no clocks, no randomness (UUIDs come in the
records), every list output sorted by id. Validation happens at apply time
against the committed state, so every node accepts or rejects a command the
same way; a rejected command changes nothing (not even the fetchable log) and
returns an Outcome with status conflict / not_found / invalid.

The store keeps the log of *effective* records with their offsets (accepted
records, a NoOpRecord per leader no-op), which ``fetch`` serves KRaft-style and
``replay`` turns back into an identical store. Identical repeats of a create
("ok", existing record returned) change nothing and are not logged either.

Snapshots (the StateMachine's ``capture`` / ``restore`` / ``compact``): once a
durable snapshot covers the log up to some offset, ``compact`` drops the
records it covers, so the log held in memory is bounded by the snapshot
interval. A fetch from below that point is answered, as KRaft's Fetch is, with
the offset the snapshot ends at instead of records: the fetcher loads the
snapshot (snapshot_serving) and fetches on after it. A restored store's log
likewise starts after its snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import msgpack

from pyraft.metadata.commands import (
    INVALID,
    MetadataCommand,
    Outcome,
    decode_command_parts,
    decode_outcome,
    encode_outcome,
    pack_outcome,
)
from pyraft.metadata.records import (
    BrokerRegistrationChangeRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    Record,
    RecordError,
    RegisterBrokerRecord,
    TopicRecord,
    record_from_json,
)
from pyraft.metadata.snapshot import Image, decode_image, encode_image, gc_paused
from pyraft.metadata.store_rules import decide
from pyraft.metadata.store_state import MetadataState
from pyraft.metadata.store_tables import IdempotencyMemory
from pyraft.statemachine import CommandError

IDEMPOTENCY_KEYS = 100_000  # remembered outcomes, evicted in apply order


class MetadataStore:
    """KRaft-style metadata state machine (implements pyraft.statemachine.StateMachine)."""

    def __init__(self, idempotency_keys: int = IDEMPOTENCY_KEYS) -> None:
        self.applied_index = 0
        self.state = MetadataState()
        self._log_offsets: list[int] = []  # effective records after _snapshot_end, in log order
        self._log_records: list[Record] = []
        self._snapshot_end = 0  # the last offset covered by the snapshot that replaced the log before it
        self._memory = IdempotencyMemory(idempotency_keys)

    # --- StateMachine -----------------------------------------------------------------------
    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed command; returns an encoded Outcome and never raises on bad input.

        An undecodable command is answered "invalid" and changes nothing: a
        committed entry must apply the same way everywhere and never stop the applier."""
        self.applied_index = index
        try:
            record, key = decode_command_parts(command)
        except RecordError as exc:
            return encode_outcome(Outcome(INVALID, {}, index, str(exc)))
        return self._apply_remembered(index, record, key)

    def apply_noop(self, index: int) -> None:
        """A leader's no-op: logged as a NoOpRecord at ``index``, no state change."""
        self.applied_index = index
        self._append(index, NoOpRecord())

    def query(self, query: bytes) -> bytes:
        """msgpack ``[name, *args]`` → msgpack result of the accessor ``name``; CommandError if unknown."""
        try:
            request = msgpack.unpackb(query, raw=False)
        except Exception as exc:
            raise CommandError(f"query is not msgpack: {exc}") from exc
        if not isinstance(request, list) or not request or request[0] not in _QUERIES:
            raise CommandError(
                f"unknown query {request!r}; expected [name, *args] with name in {sorted(_QUERIES)}"
            )
        try:
            result = _QUERIES[request[0]](self, *request[1:])
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad arguments for query {request[0]!r}: {exc}") from exc
        packed: bytes = msgpack.packb(result, use_bin_type=True)
        return packed

    # --- direct use ---------------------------------------------------------------------------
    def apply_command(self, index: int, command: MetadataCommand) -> Outcome:
        """``apply`` without the byte codec (tests, in-process use)."""
        self.applied_index = index
        return decode_outcome(self._apply_remembered(index, command.record, command.idempotency_key))

    def replay_record(self, offset: int, record: Record) -> None:
        """Install an already-effective record (from ``fetch``) without validation, as a KRaft broker does."""
        self._append(offset, record)
        self.state.install(record)
        self.applied_index = max(self.applied_index, offset)

    def load_snapshot(self, records: Iterable[Record], end_offset: int) -> None:
        """Become the state a snapshot's records describe at ``end_offset``, as a fetching broker does.

        The records are a snapshot's (snapshot_serving pages them out);
        whatever this store held is replaced, its log starts after
        ``end_offset`` and the idempotency memory starts empty (it is the
        controller's, not part of what brokers fetch)."""
        state = MetadataState()
        for record in records:
            state.install(record)
        self._install(end_offset, state, IdempotencyMemory(self._memory.capacity))

    def capture(self) -> Callable[[], bytes]:
        """Freeze the state at ``applied_index``; the returned function encodes it (worker thread).

        Runs in the event loop, so it copies references only: the state's dicts
        and the copy-on-write tables (store_tables) cost O(topics + brokers),
        not O(partitions). The encoder reads nothing but that copy, so applies
        may go on while it runs."""
        image = Image(self.applied_index, self.state.copy(), self._memory.frozen(), self._memory.capacity)
        return partial(encode_image, image)

    def restore(self, data: bytes) -> Callable[[], None]:
        """Decode a snapshot into new objects (worker thread); the returned function swaps them in.

        Raises CommandError for bytes that are not a metadata snapshot."""
        try:
            with gc_paused(freeze=True):  # the new state is long-lived: see _GcPause
                image = decode_image(data)
                memory = IdempotencyMemory.of(image.capacity, image.remembered)
        except RecordError as exc:
            raise CommandError(f"not a metadata snapshot: {exc}") from exc
        return partial(self._install, image.applied_index, image.state, memory)

    def compact(self, index: int) -> None:
        """A durable snapshot covers the log up to ``index``: drop the records at or before it.

        A fetch after an offset below ``index`` is then answered with
        ``snapshotEndOffset`` (see ``fetch``). An older snapshot than one
        already compacted to changes nothing."""
        if index > self.applied_index:
            raise ValueError(f"a snapshot cannot cover {index}: only {self.applied_index} is applied")
        if index <= self._snapshot_end:
            return
        cut = bisect.bisect_right(self._log_offsets, index)
        del self._log_offsets[:cut]
        del self._log_records[:cut]
        self._snapshot_end = index

    def install_image(self, image: Image) -> None:
        """Become the state ``image`` holds (``restore`` without the byte codec)."""
        memory = IdempotencyMemory.of(image.capacity, image.remembered)
        self._install(image.applied_index, image.state, memory)

    def _install(self, applied_index: int, state: MetadataState, memory: IdempotencyMemory) -> None:
        self.applied_index, self.state, self._memory = applied_index, state, memory
        self._log_offsets, self._log_records = [], []
        self._snapshot_end = applied_index

    @property
    def snapshot_end_offset(self) -> int:
        """The last offset the snapshot that replaced the log's beginning covers (0: nothing replaced)."""
        return self._snapshot_end

    @property
    def log_start_offset(self) -> int:
        """The first offset whose record (if it has one) the log still holds, KRaft's logStartOffset."""
        return self._snapshot_end + 1

    @property
    def idempotency_capacity(self) -> int:
        """How many idempotency keys are remembered; part of a snapshot, as it decides eviction."""
        return self._memory.capacity

    def remembered_outcomes(self) -> list[tuple[str, bytes]]:
        """The idempotency memory oldest first (the eviction order)."""
        return self._memory.items()

    def _apply_remembered(self, index: int, record: Record, key: str | None) -> bytes:
        """Thesis 6.3: a key seen before gets its first outcome back and changes nothing."""
        if key is not None:
            remembered = self._memory.get(key)
            if remembered is not None:
                return remembered
        result = self._decide_and_install(index, record)
        if key is not None:
            self._memory.remember(key, result)
        return result

    def _decide_and_install(self, index: int, record: Record) -> bytes:
        """The encoded Outcome of ``record`` at ``index``, after installing what it changes."""
        status, effective, body, message = decide(self.state, index, record)
        if effective is not None:
            self.state.install(effective)
            self._append(index, effective)
            if body is None:
                body = self._view_after(effective)
        return pack_outcome(status, body or {}, index, message)

    def _view_after(self, record: Record) -> dict[str, Any]:
        """The JSON view of what ``record`` created or changed, read from the new state.

        A lookup by type, not a chain of isinstance tests (each ``A | B`` built a union per call)."""
        view = _VIEWS_AFTER.get(type(record))
        return record.to_json() if view is None else view(self.state, record)

    def _append(self, offset: int, record: Record) -> None:
        last = self._log_offsets[-1] if self._log_offsets else self._snapshot_end
        if offset <= last:
            raise ValueError(f"log offset {offset} is not after {last}")
        self._log_offsets.append(offset)
        self._log_records.append(record)

    # --- reads ---------------------------------------------------------------------------------
    def brokers(self) -> list[dict[str, Any]]:
        """All brokers, sorted by brokerId."""
        return [self.state.broker_view(self.state.brokers[b]) for b in sorted(self.state.brokers)]

    def broker(self, broker_id: int) -> dict[str, Any] | None:
        """One broker's view: the registration fields plus ``internal_uuid`` and ``status``."""
        found = self.state.brokers.get(broker_id)
        return None if found is None else self.state.broker_view(found)

    def topics(self) -> list[dict[str, Any]]:
        """All topics, sorted by name."""
        ids = self.state.topic_ids
        return [self.state.topic_view(self.state.topics[ids[name]]) for name in sorted(ids)]

    def topic(self, name: str) -> dict[str, Any] | None:
        """One topic by name: ``{name, topicId, topicUUID, partitions: [partitionId...]}``."""
        topic_id = self.state.topic_ids.get(name)
        return None if topic_id is None else self.state.topic_view(self.state.topics[topic_id])

    def topic_by_id(self, topic_id: str) -> dict[str, Any] | None:
        """One topic by topicId."""
        found = self.state.topics.get(topic_id)
        return None if found is None else self.state.topic_view(found)

    def partitions(
        self, partition_id: int | None = None, topic_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Partitions matching the filters, sorted by (topicId, partitionId).

        Several topics may use one partitionId: callers naming only a
        partitionId get all of them and must say so rather than guess."""
        table = self.state.partitions
        topics = table.topic_ids() if topic_id is None else [topic_id]
        if partition_id is None:
            found = [p for t in topics for p in table.of_topic(t)]
        else:
            found = [p for t in topics if (p := table.find((t, partition_id))) is not None]
        return [self.state.partition_view(p) for p in found]

    def producers(self) -> list[dict[str, Any]]:
        """All producer registrations, sorted by (brokerId, producerId)."""
        return [self.state.producer_view(self.state.producers[k]) for k in sorted(self.state.producers)]

    def producer(self, broker_id: int, producer_id: int) -> dict[str, Any] | None:
        """One producer registration."""
        found = self.state.producers.get((broker_id, producer_id))
        return None if found is None else self.state.producer_view(found)

    def client_metadata(self) -> dict[str, Any]:
        """``{brokers, topics, partitions}`` for clients."""
        return {"brokers": self.brokers(), "topics": self.topics(), "partitions": self.partitions()}

    def fetch(self, offset: int, max_records: int | None = None) -> dict[str, Any]:
        """Effective records after ``offset`` in log order, ``highWatermark`` and ``more``.

        Each record is ``{offset, apiKey, version, type, record}``; page by
        fetching again from the last returned offset while ``more`` is true.
        When records after ``offset`` were compacted away the answer has no
        records, ``more`` true and ``snapshotEndOffset``: load the snapshot
        that ends there, then fetch again after that offset."""
        if type(offset) is not int or (
            max_records is not None and (type(max_records) is not int or max_records < 0)
        ):
            raise ValueError("offset must be an int and maxRecords a non-negative int or None")
        if offset < self._snapshot_end:
            return {
                "records": [],
                "highWatermark": self.applied_index,
                "more": True,
                "snapshotEndOffset": self._snapshot_end,
            }
        start = bisect.bisect_right(self._log_offsets, offset)
        end = (
            len(self._log_offsets)
            if max_records is None
            else min(len(self._log_offsets), start + max_records)
        )
        records = [_fetched(self._log_offsets[i], self._log_records[i]) for i in range(start, end)]
        return {"records": records, "highWatermark": self.applied_index, "more": end < len(self._log_offsets)}

    def has_feature_level(self) -> bool:
        """True once a metadata.version FeatureLevelRecord has been applied."""
        return "metadata.version" in self.state.features

    def features(self) -> dict[str, int]:
        """Finalized feature levels by name."""
        return dict(sorted(self.state.features.items()))

    def dump(self) -> dict[str, Any]:
        """The whole replicated state and the log held (not the idempotency memory), for comparing stores."""
        return {
            "appliedIndex": self.applied_index,
            "features": self.features(),
            "producers": self.producers(),
            "log": [_fetched(o, r) for o, r in zip(self._log_offsets, self._log_records, strict=True)],
            **self.client_metadata(),
        }


def replay(
    records: Iterable[Mapping[str, Any]],
    high_watermark: int | None = None,
    store: MetadataStore | None = None,
) -> MetadataStore:
    """A store built from fetched records (``{offset, apiKey, record}``), as a KRaft broker would.

    ``high_watermark`` (the fetch's) restores ``applied_index`` past trailing
    rejected commands. Into a fresh store, or into ``store`` (one that loaded
    a snapshot with ``replay_snapshot`` goes on with the records after it)."""
    store = MetadataStore() if store is None else store
    for item in records:
        offset = item.get("offset")
        if type(offset) is not int:
            raise RecordError(f"fetched record needs an int offset, got {offset!r}")
        api_key = item.get("apiKey")
        if type(api_key) is not int:
            raise RecordError(f"fetched record needs an int apiKey, got {api_key!r}")
        store.replay_record(offset, record_from_json(api_key, item.get("record", {})))
    if high_watermark is not None:
        store.applied_index = max(store.applied_index, high_watermark)
    return store


def replay_snapshot(records: Iterable[Mapping[str, Any]], end_offset: int) -> MetadataStore:
    """A store holding the state of a fetched snapshot (its ``{apiKey, record}`` pages, in order)."""
    parsed = []
    for item in records:
        api_key = item.get("apiKey")
        if type(api_key) is not int:
            raise RecordError(f"snapshot record needs an int apiKey, got {api_key!r}")
        parsed.append(record_from_json(api_key, item.get("record", {})))
    store = MetadataStore()
    store.load_snapshot(parsed, end_offset)
    return store


def _broker_after(state: MetadataState, record: Any) -> dict[str, Any]:
    return state.broker_view(state.brokers[record.broker_id])


def _partition_after(state: MetadataState, record: Any) -> dict[str, Any]:
    return state.partition_view(state.partitions[(record.topic_id, record.partition_id)])


_VIEWS_AFTER: dict[type[Record], Callable[[MetadataState, Any], dict[str, Any]]] = {
    RegisterBrokerRecord: _broker_after,
    BrokerRegistrationChangeRecord: _broker_after,
    TopicRecord: MetadataState.topic_view,
    PartitionRecord: _partition_after,
    PartitionChangeRecord: _partition_after,
    ProducerIdsRecord: lambda state, record: state.producer_view(record),
}
"""MetadataStore._view_after per record type; the others answer with the record itself."""


def _fetched(offset: int, record: Record) -> dict[str, Any]:
    return {
        "offset": offset,
        "apiKey": record.API_KEY,
        "version": record.VERSION,
        "type": record.NAME,
        "record": record.to_json(),
    }


_QUERIES: dict[str, Callable[..., Any]] = {
    "brokers": MetadataStore.brokers,
    "broker": MetadataStore.broker,
    "topics": MetadataStore.topics,
    "topic": MetadataStore.topic,
    "topic_by_id": MetadataStore.topic_by_id,
    "partitions": MetadataStore.partitions,
    "producers": MetadataStore.producers,
    "producer": MetadataStore.producer,
    "client_metadata": MetadataStore.client_metadata,
    "fetch": MetadataStore.fetch,
    "has_feature_level": MetadataStore.has_feature_level,
    "features": MetadataStore.features,
    "applied_index": lambda store: store.applied_index,
    "dump": MetadataStore.dump,
}

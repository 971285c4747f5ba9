"""The two big tables of the metadata store, built so that copying one for a snapshot is cheap.

``MetadataStore.capture`` runs in the event loop between two applies. A plain
``dict`` copy touches the reference count of every key and value: measured
~60 ms for a million partitions and ~35 ms for 100,000 idempotency keys, a
pause every snapshot would add to every request in flight. These tables are
split into blocks that a copy shares with the original:

* ``PartitionTable`` keeps partitions per topic in blocks of 1024 partition
  ids. A copy shares every block; whichever side writes a shared block first
  copies that block (copy-on-write), so a copy costs one reference per topic
  and a later write at most one block. Grouping by topic also makes a topic's
  partitions (its view, its removal) a lookup instead of a scan of them all.
* ``IdempotencyMemory`` keeps outcomes in apply order in append-only chunks.
  Forgetting the oldest moves a head position instead of changing a chunk, and
  a copy seals the newest chunk, so no chunk a copy holds ever changes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, MutableMapping
from itertools import chain, islice

from pyraft.metadata.records import PartitionRecord

PartitionKey = tuple[str, int]  # (topicId, partitionId), Kafka's identity
Block = dict[int, PartitionRecord]  # partitionId -> record, ids sharing id >> BLOCK_BITS
BLOCK_BITS = 10
CHUNK = 1024  # idempotency outcomes per chunk


class PartitionTable(MutableMapping[PartitionKey, PartitionRecord]):
    """``(topicId, partitionId) -> PartitionRecord`` with an O(topics) ``copy`` (module docstring)."""

    __slots__ = ("_len", "_owned_blocks", "_owned_topics", "_topics")

    def __init__(self, items: Iterable[tuple[PartitionKey, PartitionRecord]] = ()) -> None:
        self._topics: dict[str, dict[int, Block]] = {}  # topicId -> block number -> block
        self._owned_topics: set[str] = set()  # block maps this table may change in place
        self._owned_blocks: set[tuple[str, int]] = set()  # blocks this table may change in place
        self._len = 0
        for key, record in items:
            self[key] = record

    @classmethod
    def of_records(cls, records: Iterable[PartitionRecord]) -> PartitionTable:
        """A table of ``records`` (a later one replaces an earlier with the same key).

        Restoring a snapshot fills a million partitions: this loop keeps to
        local lookups (~0.3 µs a record) instead of ``__setitem__``'s
        copy-on-write bookkeeping, which a new table does not need."""
        table = cls()
        topics = table._topics
        for record in records:
            number = record.partition_id >> BLOCK_BITS
            blocks = topics.get(record.topic_id)
            if blocks is None:
                blocks = topics[record.topic_id] = {}
            block = blocks.get(number)
            if block is None:
                block = blocks[number] = {}
            block[record.partition_id] = record
        table._len = sum(len(b) for blocks in topics.values() for b in blocks.values())
        return table

    # --- reads ------------------------------------------------------------------------------------
    def __getitem__(self, key: PartitionKey) -> PartitionRecord:
        found = self.find(key)
        if found is None:
            raise KeyError(key)
        return found

    def find(self, key: PartitionKey) -> PartitionRecord | None:
        """The partition or None, without the exception ``Mapping.get`` would raise and catch."""
        topic_id, partition_id = key
        blocks = self._topics.get(topic_id)
        block = None if blocks is None else blocks.get(partition_id >> BLOCK_BITS)
        return None if block is None else block.get(partition_id)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.find(key) is not None

    def __iter__(self) -> Iterator[PartitionKey]:
        for topic_id, blocks in self._topics.items():
            for block in blocks.values():
                for partition_id in block:
                    yield (topic_id, partition_id)

    def __len__(self) -> int:
        return self._len

    def topic_ids(self) -> list[str]:
        """The topics that have at least one partition, sorted."""
        return sorted(self._topics)

    def of_topic(self, topic_id: str) -> list[PartitionRecord]:
        """One topic's partitions sorted by partitionId, without looking at other topics."""
        blocks = self._topics.get(topic_id, {})
        return [blocks[n][p] for n in sorted(blocks) for p in sorted(blocks[n])]

    def ids_of_topic(self, topic_id: str) -> list[int]:
        """One topic's partition ids, sorted."""
        blocks = self._topics.get(topic_id, {})
        return [p for n in sorted(blocks) for p in sorted(blocks[n])]

    def sorted_records(self) -> list[PartitionRecord]:
        """Every partition sorted by (topicId, partitionId): sorts topics and small blocks, not all keys."""
        return list(chain.from_iterable(self.of_topic(t) for t in sorted(self._topics)))

    # --- writes -----------------------------------------------------------------------------------
    def __setitem__(self, key: PartitionKey, record: PartitionRecord) -> None:
        topic_id, partition_id = key
        block = self._writable_block(topic_id, partition_id >> BLOCK_BITS)
        if partition_id not in block:
            self._len += 1
        block[partition_id] = record

    def __delitem__(self, key: PartitionKey) -> None:
        if key not in self:
            raise KeyError(key)
        topic_id, partition_id = key
        number = partition_id >> BLOCK_BITS
        block = self._writable_block(topic_id, number)
        del block[partition_id]
        self._len -= 1
        if not block:
            blocks = self._topics[topic_id]  # writable: _writable_block made it so
            del blocks[number]
            self._owned_blocks.discard((topic_id, number))
            if not blocks:
                self.remove_topic(topic_id)

    def remove_topic(self, topic_id: str) -> None:
        """Drop all of a topic's partitions at once (Kafka's RemoveTopicRecord cascade)."""
        blocks = self._topics.pop(topic_id, None)
        if blocks is None:
            return
        self._len -= sum(len(b) for b in blocks.values())
        self._owned_topics.discard(topic_id)
        for number in blocks:
            self._owned_blocks.discard((topic_id, number))

    def copy(self) -> PartitionTable:
        """An independent copy in O(topics): both sides now share every block and copy before writing."""
        twin = PartitionTable()
        twin._topics = dict(self._topics)
        twin._len = self._len
        self._owned_topics = set()
        self._owned_blocks = set()
        return twin

    def _writable_block(self, topic_id: str, number: int) -> Block:
        blocks = self._topics.get(topic_id)
        if blocks is None or topic_id not in self._owned_topics:
            blocks = self._topics[topic_id] = {} if blocks is None else dict(blocks)
            self._owned_topics.add(topic_id)
        block = blocks.get(number)
        if block is None or (topic_id, number) not in self._owned_blocks:
            block = blocks[number] = {} if block is None else dict(block)
            self._owned_blocks.add((topic_id, number))
        return block


class IdempotencyMemory:
    """Outcomes by idempotency key, at most ``capacity``, the oldest forgotten first (apply order).

    Every node forgets the same keys because it remembers in log order; a
    snapshot keeps the order so a restored node goes on forgetting the same ones."""

    __slots__ = ("_chunks", "_head", "_outcomes", "_sealed", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._outcomes: dict[str, bytes] = {}
        self._chunks: deque[list[tuple[str, bytes]]] = deque()  # oldest first, append-only lists
        self._head = 0  # entries at the front of the oldest chunk that are already forgotten
        self._sealed = False  # the newest chunk is shared with a frozen copy: append to a new one

    @classmethod
    def of(cls, capacity: int, remembered: Iterable[tuple[str, bytes]]) -> IdempotencyMemory:
        """A memory that remembered ``remembered`` in that order (the newest kept on overflow)."""
        memory = cls(capacity)
        listed = list(remembered)
        if len(listed) > capacity:  # a capacity lowered since: forget the oldest one by one
            for key, outcome in listed:
                memory.remember(key, outcome)
            return memory
        outcomes = dict(listed)  # what ``remember`` builds, without a Python call per key
        if len(outcomes) != len(listed):
            counts = Counter(key for key, _ in listed)
            repeated = next(key for key, n in counts.items() if n > 1)
            raise ValueError(f"idempotency key {repeated!r} is already remembered")
        memory._outcomes = outcomes
        memory._chunks.extend(listed[i : i + CHUNK] for i in range(0, len(listed), CHUNK))
        return memory

    def get(self, key: str) -> bytes | None:
        return self._outcomes.get(key)

    def __len__(self) -> int:
        return len(self._outcomes)

    def remember(self, key: str, outcome: bytes) -> None:
        """Remember a key's first outcome; a key is remembered once (a repeat is answered, not stored)."""
        outcomes, chunks = self._outcomes, self._chunks  # locals: this runs for every keyed command
        if key in outcomes:
            raise ValueError(f"idempotency key {key!r} is already remembered")
        if self._sealed or not chunks or len(chunks[-1]) >= CHUNK:
            chunks.append([])
            self._sealed = False
        chunks[-1].append((key, outcome))
        outcomes[key] = outcome
        while len(outcomes) > self.capacity:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        oldest = self._chunks[0]
        del self._outcomes[oldest[self._head][0]]
        self._head += 1
        if self._head == len(oldest):
            self._chunks.popleft()
            self._head = 0

    def frozen(self) -> FrozenOutcomes:
        """The remembered outcomes as of now, oldest first, unaffected by later changes; O(chunks)."""
        self._sealed = True
        return FrozenOutcomes(tuple(self._chunks), self._head)

    def items(self) -> list[tuple[str, bytes]]:
        """``(key, outcome)`` oldest first."""
        return list(islice(chain.from_iterable(self._chunks), self._head, None))


class FrozenOutcomes:
    """An idempotency memory's contents at one moment, for encoding a snapshot in another thread."""

    __slots__ = ("_chunks", "_head")

    def __init__(self, chunks: tuple[list[tuple[str, bytes]], ...], head: int) -> None:
        self._chunks = chunks
        self._head = head

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """``(key, outcome)`` oldest first."""
        return islice(chain.from_iterable(self._chunks), self._head, None)

"""The copy-on-write tables behind the store: each behaves like the plain structure it replaces,
and a copy never sees a change made on either side after it was taken."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from pyraft.metadata.records import PartitionRecord
from pyraft.metadata.store_tables import BLOCK_BITS, CHUNK, IdempotencyMemory, PartitionTable

TOPICS = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(4)]
BLOCK = 1 << BLOCK_BITS


def partition(topic: str, pid: int, leader_epoch: int = 0) -> PartitionRecord:
    return PartitionRecord(pid, topic, (1,), (1,), leader=1, leader_epoch=leader_epoch)


def sorted_items(table: PartitionTable) -> list[tuple[tuple[str, int], PartitionRecord]]:
    return sorted(table.items())


def random_step(
    rng: random.Random, table: PartitionTable, model: dict[tuple[str, int], PartitionRecord]
) -> None:
    """One random write on both: ids straddle block edges, whole topics go away."""
    topic = rng.choice(TOPICS)
    pid = rng.choice([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7, rng.randrange(4 * BLOCK)])
    roll = rng.random()
    if roll < 0.6:
        record = partition(topic, pid, rng.randrange(100))
        table[(topic, pid)] = model[(topic, pid)] = record
    elif roll < 0.9:
        if (topic, pid) in model:
            del table[(topic, pid)], model[(topic, pid)]
        else:
            with pytest.raises(KeyError):
                del table[(topic, pid)]
    else:
        table.remove_topic(topic)
        for key in [k for k in model if k[0] == topic]:
            del model[key]


@pytest.mark.parametrize("seed", range(5))
def test_partition_table_acts_like_a_dict_and_copies_stay_frozen(seed: int) -> None:
    rng = random.Random(seed)
    table, model = PartitionTable(), dict[tuple[str, int], PartitionRecord]()
    copies: list[tuple[PartitionTable, list[tuple[tuple[str, int], PartitionRecord]]]] = []
    for step in range(3000):
        random_step(rng, table, model)
        if step % 97 == 0:
            copies.append((table.copy(), sorted(model.items())))
        if step % 331 == 0 and copies:  # a copy is a table too: writing it must not leak back
            twin, _ = copies.pop(0)
            before = sorted(model.items())
            twin_model = dict(twin.items())
            for _ in range(50):
                random_step(rng, twin, twin_model)
            assert sorted(twin.items()) == sorted(twin_model.items())
            assert sorted(table.items()) == before
        assert len(table) == len(model)
    assert sorted_items(table) == sorted(model.items())
    for copy, expected in copies:
        assert sorted_items(copy) == expected and len(copy) == len(expected)


def test_partition_table_reads() -> None:
    table = PartitionTable()
    for pid in (BLOCK + 2, 0, BLOCK - 1, 5 * BLOCK):
        table[(TOPICS[1], pid)] = partition(TOPICS[1], pid)
    table[(TOPICS[0], 3)] = partition(TOPICS[0], 3)
    assert table.ids_of_topic(TOPICS[1]) == [0, BLOCK - 1, BLOCK + 2, 5 * BLOCK]
    assert [p.partition_id for p in table.of_topic(TOPICS[1])] == table.ids_of_topic(TOPICS[1])
    assert table.ids_of_topic(TOPICS[3]) == [] and table.topic_ids() == TOPICS[:2]
    assert [(p.topic_id, p.partition_id) for p in table.sorted_records()] == sorted(table)
    assert table.find((TOPICS[1], BLOCK)) is None and table.get((TOPICS[1], BLOCK)) is None
    assert (TOPICS[0], 3) in table and (TOPICS[2], 3) not in table
    assert not table.__contains__("not a key")
    with pytest.raises(KeyError):
        table[(TOPICS[2], 0)]
    for pid in table.ids_of_topic(TOPICS[1]):
        del table[(TOPICS[1], pid)]
    assert table.topic_ids() == [TOPICS[0]] and len(table) == 1


def test_partition_table_of_records_equals_inserting_one_by_one() -> None:
    rng = random.Random(3)
    records = [partition(rng.choice(TOPICS), rng.randrange(3 * BLOCK), i) for i in range(2000)]
    one_by_one = PartitionTable(((r.topic_id, r.partition_id), r) for r in records)
    bulk = PartitionTable.of_records(records)
    assert sorted_items(bulk) == sorted_items(one_by_one) and len(bulk) == len(one_by_one)
    bulk[(TOPICS[0], 1)] = partition(TOPICS[0], 1, 999)  # a bulk-built table is writable as usual
    assert bulk[(TOPICS[0], 1)].leader_epoch == 999


def reference_remember(model: OrderedDict[str, bytes], capacity: int, key: str, outcome: bytes) -> None:
    """The OrderedDict the memory replaced: insert at the end, forget from the front."""
    model[key] = outcome
    while len(model) > capacity:
        model.popitem(last=False)


@pytest.mark.parametrize("capacity", [0, 1, 7, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
def test_idempotency_memory_forgets_like_an_ordered_dict(capacity: int) -> None:
    rng = random.Random(capacity)
    memory, model = IdempotencyMemory(capacity), OrderedDict[str, bytes]()
    frozen = []
    for i in range(5 * CHUNK):
        key = f"k{i}"
        memory.remember(key, key.encode())
        reference_remember(model, capacity, key, key.encode())
        if rng.random() < 0.01:
            frozen.append((memory.frozen(), list(model.items())))
    assert memory.items() == list(model.items()) and len(memory) == len(model)
    assert all(memory.get(k) == v for k, v in model.items())
    assert memory.get("k0") is None  # every capacity here is below the keys remembered
    for snapshot, expected in frozen:  # taken earlier, read after everything they held was forgotten
        assert list(snapshot) == expected


def test_idempotency_memory_refuses_a_key_twice_and_rebuilds_from_items() -> None:
    memory = IdempotencyMemory(3)
    memory.remember("a", b"1")
    with pytest.raises(ValueError):
        memory.remember("a", b"2")
    for key in "bcde":
        memory.remember(key, key.encode())
    rebuilt = IdempotencyMemory.of(3, memory.items())
    assert rebuilt.items() == memory.items() == [("c", b"c"), ("d", b"d"), ("e", b"e")]
    assert IdempotencyMemory.of(2, memory.items()).items() == [("d", b"d"), ("e", b"e")]


@pytest.mark.parametrize(("capacity", "keys"), [(0, 0), (1, 1), (3, 2), (5, 5), (1500, 1100), (3000, 3000)])
def test_idempotency_memory_built_at_once_acts_like_one_built_key_by_key(capacity: int, keys: int) -> None:
    """``of`` fills the memory in bulk when everything fits; it must remember and forget the same."""
    remembered = [(f"k{n}", str(n).encode()) for n in range(keys)]
    bulk, one_by_one = IdempotencyMemory.of(capacity, remembered), IdempotencyMemory(capacity)
    for key, outcome in remembered:
        one_by_one.remember(key, outcome)
    assert bulk.items() == one_by_one.items() == remembered
    view = bulk.frozen()
    for n in range(keys, keys + capacity + 2):  # until every bulk-built key is forgotten
        for memory in (bulk, one_by_one):
            memory.remember(f"k{n}", b"new")
        if n % 97 == 0 or n >= keys + capacity:
            assert bulk.items() == one_by_one.items()
            assert [bulk.get(k) for k, _ in remembered] == [one_by_one.get(k) for k, _ in remembered]
    assert list(view) == remembered  # a frozen view of the bulk-built memory did not change


def test_idempotency_memory_of_a_key_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'b' is already remembered"):
        IdempotencyMemory.of(5, [("a", b"1"), ("b", b"2"), ("b", b"3")])

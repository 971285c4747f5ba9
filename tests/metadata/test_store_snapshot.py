"""Metadata snapshots: a restored store acts exactly like one that never snapshotted; canonical bytes."""

from __future__ import annotations

import dataclasses
import gc
import random
from typing import Any

import msgpack
import pytest

from pyraft.metadata import commands as c
from pyraft.metadata.commands import MetadataCommand
from pyraft.metadata.fields import to_wire_value
from pyraft.metadata.records import BrokerEndpoint, FeatureLevelRecord, Record, RecordError
from pyraft.metadata.snapshot import (
    _ENDPOINT_ATTRS,
    SECTION_TYPES,
    SnapshotFormatError,
    _repeats,
    restore_store,
    snapshot_store,
)
from pyraft.metadata.store import MetadataStore
from pyraft.metadata.store_tables import PartitionTable
from pyraft.statemachine import CommandError

Entry = bytes | None  # a command's bytes, or None for a leader no-op

TOPIC_IDS = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(6)]


def incarnation(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


class Generator:
    """Seeded commands that hit every rule, decided against a reference store so many succeed."""

    def __init__(self, seed: int, store: MetadataStore) -> None:
        self.rng = random.Random(seed)
        self.store = store
        self.keys: list[str] = []
        self.serial = 0

    def record(self) -> Record:
        rng, st = self.rng, self.store
        broker = rng.randint(1, 5)
        topic = rng.randrange(len(TOPIC_IDS))
        current = st.broker(broker)
        epoch = current["brokerEpoch"] if current and rng.random() < 0.9 else rng.randint(-1, 50)
        self.serial += 1
        choices: list[Any] = [
            lambda: c.metadata_version(rng.randint(1, 3)),
            lambda: c.register_broker(
                broker, f"h{broker}", 9092, "PLAINTEXT", None, incarnation(self.serial)
            ),
            lambda: c.broker_status_change(
                broker, epoch, rng.choice(["ALIVE", "FENCED", "CONTROLLED_SHUTDOWN"])
            ),
            lambda: c.unregister_broker(broker, rng.choice([-1, epoch])),
            lambda: c.create_topic(f"t{topic}", TOPIC_IDS[topic]),
            lambda: c.create_topic(f"t{topic}", TOPIC_IDS[(topic + 1) % len(TOPIC_IDS)]),
            lambda: c.remove_topic(TOPIC_IDS[topic]),
            lambda: c.create_partition(TOPIC_IDS[topic], rng.randint(0, 3), rng.sample(range(1, 6), 2)),
            lambda: c.change_partition(TOPIC_IDS[topic], rng.randint(0, 3), isr=[], leader=-1),
            lambda: c.change_partition(
                TOPIC_IDS[topic], rng.randint(0, 3), replicas=rng.sample(range(1, 6), 3)
            ),
            lambda: c.remove_partition(TOPIC_IDS[topic], rng.randint(0, 3)),
            lambda: c.register_producer(broker, rng.randint(0, 20), epoch),
        ]
        weights = [1, 4, 3, 1, 3, 1, 1, 6, 3, 3, 1, 2]
        made: Record = rng.choices(choices, weights)[0]()
        return made

    def entry(self) -> Entry:
        """A no-op, garbage, or a command with a fresh, a repeated or no idempotency key."""
        roll = self.rng.random()
        if roll < 0.05:
            return None
        if roll < 0.07:
            return b"\xc1 not a command"
        key = None
        if self.rng.random() < 0.5:
            if self.keys and self.rng.random() < 0.3:
                key = self.rng.choice(self.keys[-20:])  # a retry, maybe of an evicted key
            else:
                key = f"k{len(self.keys)}"
                self.keys.append(key)
        return c.encode_command(MetadataCommand(self.record(), key))


def feed(store: MetadataStore, entries: list[Entry], first_index: int) -> list[bytes | None]:
    """Apply ``entries`` at consecutive indexes from ``first_index``; the outcomes (None for no-ops)."""
    out: list[bytes | None] = []
    for i, entry in enumerate(entries, start=first_index):
        if entry is None:
            store.apply_noop(i)
            out.append(None)
        else:
            out.append(store.apply(i, entry))
    return out


def history(seed: int, n: int, keys: int = 8) -> tuple[list[Entry], list[bytes | None], MetadataStore]:
    """``n`` entries generated against a reference store (which ends having applied them all)."""
    store = MetadataStore(idempotency_keys=keys)
    gen = Generator(seed, store)
    entries: list[Entry] = []
    outcomes: list[bytes | None] = []
    for i in range(1, n + 1):
        entry = gen.entry()
        entries.append(entry)
        outcomes += feed(store, [entry], i)
    return entries, outcomes, store


def state_of(store: MetadataStore) -> dict[str, Any]:
    """Everything but the fetchable log, which a restored store only has from its snapshot on."""
    dump = store.dump()
    del dump["log"]
    return dump


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restore_then_continue_equals_never_snapshotting(seed: int) -> None:
    n = 300
    entries, outcomes, reference = history(seed, n)
    statuses = {msgpack.unpackb(o)[0] for o in outcomes if o is not None}
    assert {"created", "ok", "conflict", "not_found", "invalid"} <= statuses  # the rules were exercised
    for split in range(0, n + 1, 23):
        before = MetadataStore(idempotency_keys=8)
        feed(before, entries[:split], 1)
        restored = restore_store(snapshot_store(before))
        assert state_of(restored) == state_of(before)
        assert feed(restored, entries[split:], split + 1) == outcomes[split:], f"split {split}"
        assert state_of(restored) == state_of(reference)
        assert restored.fetch(split) == reference.fetch(split)
        assert restored.remembered_outcomes() == reference.remembered_outcomes()
        assert snapshot_store(restored) == snapshot_store(reference)


def test_idempotency_memory_survives_a_snapshot() -> None:
    """A retried write after a restart gets its first answer back and changes nothing."""
    store = MetadataStore()
    first = store.apply(1, c.encode_command(MetadataCommand(c.create_topic("t", TOPIC_IDS[0]), "key-1")))
    store.apply(2, c.encode_command(MetadataCommand(c.remove_topic(TOPIC_IDS[0]), "key-2")))
    restored = restore_store(snapshot_store(store))
    retry = restored.apply(3, c.encode_command(MetadataCommand(c.create_topic("t", TOPIC_IDS[0]), "key-1")))
    assert retry == first
    assert restored.topics() == []
    assert restored.idempotency_capacity == store.idempotency_capacity


def test_same_commands_give_identical_bytes_on_every_node() -> None:
    entries, _, reference = history(7, 200)
    other = MetadataStore(idempotency_keys=8)
    feed(other, entries, 1)
    assert snapshot_store(other) == snapshot_store(reference)
    assert snapshot_store(reference) == snapshot_store(restore_store(snapshot_store(reference)))


def test_bytes_do_not_depend_on_dict_order() -> None:
    _, _, store = history(11, 200)
    before = snapshot_store(store)
    st = store.state
    for name in ("brokers", "topics", "topic_ids", "producers", "features"):
        setattr(st, name, dict(reversed(list(getattr(st, name).items()))))
    st.partitions = PartitionTable(reversed(list(st.partitions.items())))
    assert snapshot_store(store) == before


def test_restored_log_is_empty_and_starts_after_the_snapshot() -> None:
    _, _, store = history(5, 100)
    restored = restore_store(snapshot_store(store))
    assert restored.applied_index == 100 and restored.log_start_offset == 101
    below = {"records": [], "highWatermark": 100, "more": True, "snapshotEndOffset": 100}
    assert restored.fetch(0) == restored.fetch(99) == below
    assert restored.fetch(100) == {"records": [], "highWatermark": 100, "more": False}
    restored.apply_noop(101)
    assert [r["offset"] for r in restored.fetch(100)["records"]] == [101]
    assert restored.fetch(0) == {**below, "highWatermark": 101}


def test_checked_restore_agrees_with_the_fast_path() -> None:
    _, _, store = history(9, 300)
    data = snapshot_store(store)
    assert state_of(restore_store(data, check=True)) == state_of(restore_store(data))


def test_empty_store_round_trips() -> None:
    restored = restore_store(snapshot_store(MetadataStore()))
    assert restored.dump() == MetadataStore().dump()


def test_fields_order_matches_the_dataclass_the_fast_path_builds() -> None:
    for cls in SECTION_TYPES:
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert [f.attr for f in cls.FIELDS] == names, cls.NAME
        assert not hasattr(cls, "__post_init__"), f"{cls.NAME}: restore skips __init__"


def section(wire: Any, position: int, columns: list[Any]) -> list[Any]:
    """The snapshot's sections with those at ``position`` given ``columns`` instead."""
    sections = list(wire[2])
    sections[position] = [sections[position][0], sections[position][1], columns]
    return sections


def format1(store: MetadataStore) -> list[Any]:
    """The store as a format-1 payload (before coded columns), written from its documentation."""
    st = store.state
    listed: list[list[Any]] = [
        [FeatureLevelRecord(n, st.features[n]) for n in sorted(st.features)],
        [st.brokers[b] for b in sorted(st.brokers)],
        [st.topics[t] for t in sorted(st.topics)],
        st.partitions.sorted_records(),
        [st.producers[k] for k in sorted(st.producers)],
    ]
    sections = [
        [
            cls.API_KEY,
            cls.VERSION,
            [[to_wire_value(f.kind, getattr(r, f.attr)) for r in rs] for f in cls.FIELDS],
        ]
        for cls, rs in zip(SECTION_TYPES, listed, strict=True)
    ]
    memory = [store.idempotency_capacity, [list(pair) for pair in store.remembered_outcomes()]]
    return [1, store.applied_index, sections, memory]


def wire_of(store: MetadataStore, fmt: int) -> Any:
    return msgpack.unpackb(snapshot_store(store)) if fmt == 2 else format1(store)


def twice(wire: Any, position: int) -> list[Any]:
    """The section's records all written twice (duplicate keys), in the wire's own format."""
    cls = SECTION_TYPES[position]
    columns = []
    for f, col in zip(cls.FIELDS, wire[2][position][2], strict=True):
        if wire[0] == 2 and f.kind == "endpoints":
            counts, names, hosts, ports, protocols = col
            coded_twice = [[names[0], names[1] * 2], [ports[0], ports[1] * 2]]
            columns.append([counts * 2, coded_twice[0], hosts * 2, coded_twice[1], protocols * 2])
        elif wire[0] == 2 and _repeats(cls, f):
            columns.append([col[0], col[1] * 2])
        else:
            columns.append(col * 2)
    return section(wire, position, columns)


def bad_endpoints(wire: Any) -> list[Any]:
    """An endpoints column whose endpoints lack their security protocol."""
    if wire[0] == 1:
        return [[["x", "h", 1]] for _ in wire[2][1][2][3]]
    counts, names, hosts, ports, _ = wire[2][1][2][3]
    return [counts, names, hosts, ports, []]


def broker_columns(wire: Any, position: int, column: Any) -> list[Any]:
    """The sections with the broker column at ``position`` replaced."""
    columns = list(wire[2][1][2])
    columns[position] = column
    return section(wire, 1, columns)


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: [3, *w[1:]],  # unknown format
        lambda w: [0, *w[1:]],  # unknown format
        lambda w: w[:3],  # missing part
        lambda w: [w[0], -1, w[2], w[3]],  # bad applied index
        lambda w: [w[0], w[1], w[2][:4], w[3]],  # a missing section
        lambda w: [w[0], w[1], [w[2][1], w[2][0], *w[2][2:]], w[3]],  # sections swapped
        lambda w: [w[0], w[1], [[12, 9, w[2][0][2]], *w[2][1:]], w[3]],  # unknown section version
        lambda w: [w[0], w[1], section(w, 3, [[0]]), w[3]],  # missing columns
        lambda w: [w[0], w[1], section(w, 3, [c[:-1] for c in w[2][3][2][:1]] + w[2][3][2][1:]), w[3]],
        lambda w: [w[0], w[1], twice(w, 3), w[3]],  # duplicate keys
        lambda w: [w[0], w[1], twice(w, 1), w[3]],  # duplicate keys
        lambda w: [w[0], w[1], section(w, 2, [[], []]), w[3]],  # partitions without their topic
        lambda w: [w[0], w[1], broker_columns(w, 3, bad_endpoints(w)), w[3]],
        lambda w: [w[0], w[1], w[2], [-1, []]],  # bad capacity
        lambda w: [w[0], w[1], w[2], [8, [["k", "not bytes"]]]],  # bad outcome
        lambda w: [w[0], w[1], w[2], [8, [[1, b""]]]],  # bad key
    ],
)
def test_malformed_snapshots_are_refused(mutate: Any, fmt: int) -> None:
    _, _, store = history(3, 150)
    wire = wire_of(store, fmt)
    assert wire[2][3][2][0] and wire[2][1][2][0], "the history must leave partitions and brokers"
    restore_store(msgpack.packb(wire, use_bin_type=True))  # unchanged, it restores
    with pytest.raises(SnapshotFormatError):
        restore_store(msgpack.packb(mutate(wire), use_bin_type=True))


@pytest.mark.parametrize(
    ("position", "column"),
    [
        (4, [["r0"], [0, -1]]),  # a negative code
        (4, [["r0"], [0, 1]]),  # a code past the distinct values
        (4, [["r0"], ["0", 0]]),  # a code that is not an int
        (4, ["r0", "r1"]),  # a coded column written plain
        (4, [["r0"], [0, 0], [0]]),  # a coded column with a third part
        (3, [[1, 1], [["L"], [0]], ["h1", "h2"], [[1], [0, 0]], [0, 0]]),  # counts and names disagree
        (3, [[1, -1, 2], [["L"], [0, 0]], ["h1", "h2"], [[1], [0, 0]], [0, 0]]),  # a negative count
        (3, [[1, 1], [["L"], [0, 0]], ["h1", "h2"], [[1], [0, 0]]]),  # a part missing
        (3, [[1, 1], [["L"], [0, 0]], ["h1", "h2"], [[1], [0, 0]], [0, 0], []]),  # a part too many
    ],
)
def test_malformed_coded_columns_are_refused(position: int, column: list[Any]) -> None:
    wire = msgpack.unpackb(snapshot_store(brokers_with_endpoints(1, 1)))
    assert wire[0] == 2
    good = wire[2][1][2][position]
    restore_store(msgpack.packb([*wire[:2], broker_columns(wire, position, good), wire[3]]))
    for check in (False, True):
        with pytest.raises(SnapshotFormatError):
            restore_store(
                msgpack.packb([*wire[:2], broker_columns(wire, position, column), wire[3]]), check=check
            )


@pytest.mark.parametrize("seed", range(4))
def test_format_1_snapshots_still_restore(seed: int) -> None:
    """Snapshot files written before coded columns restore to the same state, and re-snapshot as format 2."""
    _, _, store = history(seed, 200)
    for old in (store, brokers_with_endpoints(0, 1, 3, 1)):
        data = msgpack.packb(format1(old), use_bin_type=True)
        for restored in (restore_store(data), restore_store(data, check=True)):
            assert state_of(restored) == state_of(old)
            assert restored.state.brokers == old.state.brokers
            assert snapshot_store(restored) == snapshot_store(old)


def test_not_msgpack_is_refused() -> None:
    with pytest.raises(RecordError):
        restore_store(b"\xc1")


# --------------------------------------------------------------------------- the StateMachine protocol


@pytest.mark.parametrize("seed", [4, 5])
def test_in_place_restore_then_continue_equals_never_snapshotting(seed: int) -> None:
    """restore() into a live store that was elsewhere: afterwards it is the never-snapshotted store."""
    n = 300
    entries, outcomes, reference = history(seed, n)
    other_entries, _, _ = history(seed + 100, 50)
    for split in (0, 1, 150, n):
        source = MetadataStore(idempotency_keys=8)
        feed(source, entries[:split], 1)
        target = MetadataStore(idempotency_keys=3)  # another capacity and another state, to be replaced
        feed(target, other_entries, 1)
        install = target.restore(source.capture()())
        install()
        assert target.applied_index == split and target.log_start_offset == split + 1
        assert target.idempotency_capacity == 8
        assert feed(target, entries[split:], split + 1) == outcomes[split:], f"split {split}"
        assert state_of(target) == state_of(reference)
        assert target.fetch(split) == reference.fetch(split)
        assert target.remembered_outcomes() == reference.remembered_outcomes()
        assert snapshot_store(target) == snapshot_store(reference)


def test_capture_is_frozen_while_applies_continue() -> None:
    """The encoder reads only what capture() copied: later applies (including partition changes,
    topic removals and forgotten idempotency keys) do not leak into the bytes."""
    entries, _, _ = history(21, 600)
    for split in (0, 100, 250, 400):
        store = MetadataStore(idempotency_keys=8)
        feed(store, entries[:split], 1)
        expected = snapshot_store(store)
        encode = store.capture()
        feed(store, entries[split:], split + 1)
        assert encode() == expected, f"split {split}"
        assert encode() == expected  # and encoding twice gives the same bytes


def test_captures_taken_one_after_another_are_each_frozen() -> None:
    entries, _, reference = history(22, 400)
    store = MetadataStore(idempotency_keys=8)
    pending = []
    for i, entry in enumerate(entries, start=1):
        feed(store, [entry], i)
        if i % 37 == 0:
            pending.append((store.capture(), snapshot_store(store)))
    assert all(encode() == expected for encode, expected in pending)
    assert snapshot_store(store) == snapshot_store(reference)


def test_restore_does_not_touch_the_live_store_until_installed() -> None:
    _, _, snapshotted = history(23, 200)
    entries, _, _ = history(24, 100)
    store = MetadataStore(idempotency_keys=8)
    feed(store, entries, 1)
    before = store.dump()
    install = store.restore(snapshot_store(snapshotted))
    assert store.dump() == before
    install()
    assert state_of(store) == state_of(snapshotted)


@pytest.mark.parametrize("data", [b"\xc1", msgpack.packb([2, 0, [], []]), b""])
def test_restore_of_other_bytes_is_a_command_error(data: bytes) -> None:
    store = MetadataStore()
    with pytest.raises(CommandError):
        store.restore(data)


def test_a_snapshot_with_a_key_remembered_twice_is_refused() -> None:
    store = MetadataStore()
    store.apply(1, c.encode_command(MetadataCommand(c.create_topic("t", TOPIC_IDS[0]), "k")))
    wire = msgpack.unpackb(snapshot_store(store))
    wire[3][1] = wire[3][1] * 2
    with pytest.raises(SnapshotFormatError):
        restore_store(msgpack.packb(wire, use_bin_type=True))


def test_restored_partitions_share_equal_values() -> None:
    """Decoding shares repeated topicIds and replica lists instead of holding a copy per partition."""
    store = MetadataStore()
    feed(store, [c.encode_command(MetadataCommand(c.register_broker(1, "h", 9092, "PLAINTEXT")))], 1)
    feed(store, [c.encode_command(MetadataCommand(c.create_topic("t", TOPIC_IDS[0])))], 2)
    entries: list[Entry] = [
        c.encode_command(MetadataCommand(c.create_partition(TOPIC_IDS[0], p, [1]))) for p in range(5)
    ]
    feed(store, entries, 3)
    parts = restore_store(snapshot_store(store)).state.partitions.of_topic(TOPIC_IDS[0])
    assert len(parts) == 5
    assert all(p.topic_id is parts[0].topic_id and p.replicas is parts[0].replicas for p in parts)


def brokers_with_endpoints(*counts: int) -> MetadataStore:
    """A store whose brokers have ``counts[i]`` listeners each (the API registers one)."""
    store = MetadataStore()
    for broker_id, count in enumerate(counts, 1):
        template = c.register_broker(broker_id, f"h{broker_id}", 9092, "PLAINTEXT", rack=f"r{broker_id % 2}")
        listeners = tuple(BrokerEndpoint(f"L{n}", f"h{broker_id}.{n}", 9000 + n, n % 4) for n in range(count))
        store.state.install(
            dataclasses.replace(template, incarnation_id=incarnation(broker_id), end_points=listeners)
        )
    store.applied_index = 7
    return store


@pytest.mark.parametrize("counts", [(1, 1, 1), (0, 1, 2), (3, 0, 0, 1), (2,), (0,)])
def test_brokers_with_any_number_of_listeners_round_trip(counts: tuple[int, ...]) -> None:
    """Endpoints are built for the whole section at once, then handed back per broker."""
    store = brokers_with_endpoints(*counts)
    data = snapshot_store(store)
    for restored in (restore_store(data), restore_store(data, check=True)):
        assert restored.state.brokers == store.state.brokers
        assert [len(b.end_points) for b in restored.state.brokers.values()] == list(counts)
        for broker in restored.state.brokers.values():
            assert type(broker.end_points) is tuple
            assert all(type(e) is BrokerEndpoint for e in broker.end_points)


def test_endpoint_fields_match_the_dataclass_the_fast_path_builds() -> None:
    assert [f.name for f in dataclasses.fields(BrokerEndpoint)] == list(_ENDPOINT_ATTRS)
    assert not hasattr(BrokerEndpoint, "__post_init__"), "restore skips __init__"


@pytest.mark.parametrize(
    "endpoints",
    [
        [["x", "h", 1, 0, "extra"]],  # too many fields
        ["xh10"],  # not a list
        [7],
    ],
)
def test_malformed_format_1_endpoints_are_refused(endpoints: list[Any]) -> None:
    wire = format1(brokers_with_endpoints(1, 2))
    column = wire[2][1][2][3]
    for bad in ([column[0], endpoints], "not a list of endpoints"):
        for check in (False, True):
            with pytest.raises(SnapshotFormatError):
                restore_store(msgpack.packb([*wire[:2], broker_columns(wire, 3, bad), wire[3]]), check=check)


def test_restored_brokers_share_repeated_listener_values_but_not_their_own() -> None:
    restored = restore_store(snapshot_store(brokers_with_endpoints(1, 1, 1, 1)))
    brokers = list(restored.state.brokers.values())
    first = brokers[0].end_points[0]
    assert all(b.end_points[0].name is first.name and b.end_points[0].port is first.port for b in brokers)
    assert brokers[0].rack is brokers[2].rack and brokers[1].rack is brokers[3].rack


def test_restore_leaves_the_collector_as_it_was_and_the_restored_state_frozen() -> None:
    """The new state is frozen before the collector runs again (no walk over millions of new objects)."""
    data = snapshot_store(brokers_with_endpoints(1, 2, 3))

    def collectable(obj: object) -> bool:  # in a generation the collector walks (not the frozen one)
        return any(o is obj for o in gc.get_objects())

    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            store = MetadataStore()
            store.restore(data)()
            assert gc.isenabled() is enabled
            assert not collectable(store.state.brokers[3]) and not collectable(
                store.state.brokers[3].end_points[2]
            )
            gc.unfreeze()
            assert collectable(store.state.brokers[3])
            assert collectable(restore_store(data).state.brokers[3])  # tools and tests: not frozen
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_replica_list_held_as_a_list_is_written_like_a_tuple() -> None:
    """Records hold int lists as tuples; one built by hand with a list still snapshots (format 1 did)."""
    store = MetadataStore()
    feed(store, [c.encode_command(MetadataCommand(c.create_topic("t", TOPIC_IDS[0])))], 1)
    by_hand = dataclasses.replace(c.create_partition(TOPIC_IDS[0], 0, [1, 2]), replicas=[1, 2])  # type: ignore[arg-type]
    store.state.install(by_hand)
    store.state.install(c.create_partition(TOPIC_IDS[0], 1, [1, 2]))
    restored = restore_store(snapshot_store(store))
    parts = restored.state.partitions.of_topic(TOPIC_IDS[0])
    assert [p.replicas for p in parts] == [(1, 2), (1, 2)] and parts[0].replicas is parts[1].replicas

"""MetadataStore: every validation rule, cascades, idempotency, determinism, fetch and replay."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from pyraft.metadata import commands as c
from pyraft.metadata.commands import MetadataCommand, Outcome
from pyraft.metadata.records import NoOpRecord, Record
from pyraft.metadata.store import MetadataStore, replay
from pyraft.statemachine import CommandError, StateMachine

T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"


class Log:
    """A store fed at consecutive log indexes, as the applier would."""

    def __init__(self, store: MetadataStore | None = None) -> None:
        self.store = store or MetadataStore()
        self.index = 0

    def apply(self, record: Record, key: str | None = None) -> Outcome:
        self.index += 1
        data = c.encode_command(MetadataCommand(record, key))
        return c.decode_outcome(self.store.apply(self.index, data))

    def noop(self) -> None:
        self.index += 1
        self.store.apply_noop(self.index)


def incarnation(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def log() -> Log:
    return Log()


def cluster(log: Log, brokers: int = 3) -> None:
    """metadata.version, brokers 1..n, topic t1 (id T1)."""
    assert log.apply(c.metadata_version()).status == "created"
    for b in range(1, brokers + 1):
        assert (
            log.apply(c.register_broker(b, f"h{b}", 9092, "PLAINTEXT", None, incarnation(b))).status
            == "created"
        )
    assert log.apply(c.create_topic("t1", T1)).status == "created"


def test_is_a_state_machine() -> None:
    machine: StateMachine = MetadataStore()
    assert machine.query(msgpack.packb(["applied_index"])) == msgpack.packb(0)


# --- brokers -------------------------------------------------------------------------------------
def test_broker_epoch_is_the_registration_offset(log: Log) -> None:
    log.noop()
    out = log.apply(c.register_broker(7, "h", 9092, "SSL", "r1", incarnation(7)))
    assert (out.status, out.offset, out.body["brokerEpoch"]) == ("created", 2, 2)
    assert out.body["internal_uuid"] == incarnation(7)
    assert out.body["status"] == "FENCED"  # a new registration is fenced, as in KRaft (INIT)
    assert log.store.broker(7) == out.body


def test_identical_registration_is_ok_and_not_logged(log: Log) -> None:
    first = log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", None, incarnation(1)))
    again = log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", None, incarnation(2)))
    assert again.status == "ok" and again.body == first.body and again.offset == 2
    assert [r["offset"] for r in log.store.fetch(0)["records"]] == [1]


def test_different_registration_of_a_taken_id_conflicts(log: Log) -> None:
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", None, incarnation(1)))
    assert (
        log.apply(c.register_broker(1, "other", 9092, "PLAINTEXT", None, incarnation(2))).status == "conflict"
    )
    assert (
        log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", "rack", incarnation(1))).status == "conflict"
    )
    assert log.store.broker(1)["brokerHost"] == "h"  # type: ignore[index]


@pytest.mark.parametrize(
    "bad",
    [
        c.register_broker(-1, "h", 1, 0),
        c.register_broker(1, "", 1, 0),
        c.register_broker(1, "h", 0, 0),
        c.register_broker(1, "h", 1, 0, rack=""),
    ],
)
def test_malformed_registration_is_invalid(log: Log, bad: Record) -> None:
    out = log.apply(bad)
    assert out.status == "invalid" and out.message and out.body == {}
    assert log.store.brokers() == []


def test_reregistration_gets_a_new_epoch(log: Log) -> None:
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", None, incarnation(1)))
    current = log.store.broker(1)
    assert current is not None
    out = log.apply(c.change_broker(current, "h2", 9093, "SSL", "ALIVE", incarnation(2)))
    assert out.status == "ok" and out.body["brokerEpoch"] == 2 and out.body["incarnationId"] == incarnation(2)
    assert out.body["status"] == "UNFENCED" and out.body["brokerHost"] == "h2"
    # replaying the same re-registration: its expected epoch is stale now
    stale = c.reregister_broker(current, "h3", 1, 0, None, incarnation(3))
    assert log.apply(stale).status == "conflict"
    same_incarnation = c.reregister_broker(out.body, "h3", 1, 0, None, incarnation(2))
    assert log.apply(same_incarnation).status == "conflict"
    unknown = c.reregister_broker({**out.body, "brokerId": 9}, "h", 1, 0)
    assert log.apply(unknown).status == "not_found"


def test_status_changes_and_stale_epoch(log: Log) -> None:
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT", None, incarnation(1)))
    current = log.store.broker(1)
    assert current is not None
    out = log.apply(c.change_broker(current, "h", 9092, "PLAINTEXT", "ALIVE"))
    assert out.status == "ok" and out.body["status"] == "UNFENCED" and out.body["brokerEpoch"] == 1
    out = log.apply(c.broker_status_change(1, 1, "CONTROLLED_SHUTDOWN"))
    assert out.body["status"] == "CONTROLLED_SHUTDOWN" and out.body["inControlledShutdown"] is True
    assert log.apply(c.broker_status_change(1, 0, "INIT")).status == "conflict"
    assert log.apply(c.broker_status_change(2, 1, "INIT")).status == "not_found"
    # leaving controlled shutdown takes a re-registration (new incarnation, new epoch)
    shut = log.store.broker(1)
    assert shut is not None
    leave = c.change_broker(shut, "h", 9092, "PLAINTEXT", "ALIVE")
    assert type(leave).__name__ == "RegisterBrokerRecord"
    out = log.apply(leave)
    assert out.body["status"] == "UNFENCED" and out.body["brokerEpoch"] == 6


def test_change_record_flags_are_checked(log: Log) -> None:
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT"))
    from pyraft.metadata.records import BrokerRegistrationChangeRecord

    assert log.apply(BrokerRegistrationChangeRecord(1, 1, 2, 0)).status == "invalid"


def test_unregister(log: Log) -> None:
    assert log.apply(c.unregister_broker(1)).status == "not_found"
    registered = log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT")).body
    assert log.apply(c.unregister_broker(1, 99)).status == "conflict"
    out = log.apply(c.unregister_broker(1))
    assert out.status == "ok" and out.body == registered
    assert log.store.broker(1) is None
    logged = log.store.fetch(0)["records"][-1]
    assert logged["type"] == "UnregisterBrokerRecord" and logged["record"]["brokerEpoch"] == 2


# --- producers -----------------------------------------------------------------------------------
def test_producers(log: Log) -> None:
    assert log.apply(c.register_producer(1, 100, 1)).status == "not_found"
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT"))  # epoch 2
    log.apply(c.register_broker(2, "h2", 9092, "PLAINTEXT"))  # epoch 3
    assert log.apply(c.register_producer(1, 100, 3)).status == "conflict"  # stale epoch
    assert log.apply(c.register_producer(1, -5, 2)).status == "invalid"
    out = log.apply(c.register_producer(1, 100, 2))
    assert out.status == "created"
    assert out.body == {"brokerId": 1, "brokerEpoch": 2, "nextProducerId": 100, "producerId": 100}
    assert log.apply(c.register_producer(1, 100, 2)).status == "ok"
    assert log.apply(c.register_producer(2, 100, 3)).status == "conflict"  # ids are never reissued
    assert log.store.producer(1, 100) == out.body and log.store.producer(2, 100) is None
    assert log.store.producers() == [out.body]


# --- topics and partitions ------------------------------------------------------------------------
def test_topics(log: Log) -> None:
    out = log.apply(c.create_topic("orders", T1))
    assert out.status == "created" and out.body["topicUUID"] == T1
    again = log.apply(c.create_topic("orders", T2))  # the REST layer makes a new id per request
    assert again.status == "ok" and again.body["topicId"] == T1
    assert log.apply(c.create_topic("other", T1)).status == "conflict"
    for bad in ("", "..", "a/b", "x" * 250):
        assert log.apply(c.create_topic(bad, T2)).status == "invalid"
    assert [t["name"] for t in log.store.topics()] == ["orders"]
    assert log.store.topic("orders") == log.store.topic_by_id(T1) == out.body


def test_remove_topic_cascades_to_partitions(log: Log) -> None:
    cluster(log)
    log.apply(c.create_topic("t2", T2))
    log.apply(c.create_partition(T1, 0, [1, 2], leader=1))
    log.apply(c.create_partition(T1, 1, [2, 3], leader=2))
    log.apply(c.create_partition(T2, 0, [1]))
    out = log.apply(c.remove_topic(T1))
    assert out.status == "ok" and out.body["name"] == "t1"
    assert [p["partitionId"] for p in out.body["deletedPartitions"]] == [0, 1]
    assert log.store.topic("t1") is None
    assert [(p["topicId"], p["partitionId"]) for p in log.store.partitions()] == [(T2, 0)]
    assert log.apply(c.remove_topic(T1)).status == "not_found"
    assert log.apply(c.create_topic("t1", T1)).status == "created"  # the name is free again


def test_partition_rules(log: Log) -> None:
    cluster(log)
    assert log.apply(c.create_partition(T2, 0, [1])).status == "not_found"
    invalid = [
        c.create_partition(T1, -1, [1]),
        c.create_partition(T1, 0, []),
        c.create_partition(T1, 0, [1, 1]),
        c.create_partition(T1, 0, [1, 2], [1, 3]),
        c.create_partition(T1, 0, [1, 2], [1], leader=2),
        c.create_partition(T1, 0, [1, 2], [1, 1]),
        c.create_partition(T1, 0, [1, 2], removing_replicas=[2], adding_replicas=[2]),
        c.create_partition(T1, 0, [1, 2], adding_replicas=[4]),
        c.create_partition(T1, 0, [1, 9]),  # broker 9 is not registered
        c.create_partition(T1, 0, [1], partition_epoch=-1),
    ]
    for record in invalid:
        out = log.apply(record)
        assert out.status == "invalid", record
        assert out.message
    assert log.store.partitions() == []
    out = log.apply(c.create_partition(T1, 0, [1, 2], leader=1))
    assert out.status == "created" and out.body["topicName"] == "t1" and out.body["isr"] == [1, 2]
    assert log.apply(c.create_partition(T1, 0, [1, 2], leader=1)).status == "ok"
    assert log.apply(c.create_partition(T1, 0, [1, 2], leader=2)).status == "conflict"
    assert log.apply(c.create_partition(T1, 0, [3])).status == "conflict"


def test_partition_identity_is_topic_and_id(log: Log) -> None:
    cluster(log)
    log.apply(c.create_topic("t2", T2))
    log.apply(c.create_partition(T1, 0, [1]))
    assert log.apply(c.create_partition(T2, 0, [2])).status == "created"
    assert [p["topicId"] for p in log.store.partitions(partition_id=0)] == [T1, T2]
    assert [p["replicas"] for p in log.store.partitions(partition_id=0, topic_id=T2)] == [[2]]
    assert log.store.topic("t1")["partitions"] == [0]  # type: ignore[index]


def test_partition_change(log: Log) -> None:
    cluster(log)
    log.apply(c.create_partition(T1, 0, [1, 2], leader=1))
    out = log.apply(c.change_partition(T1, 0, isr=[1]))
    assert out.status == "ok" and out.body["isr"] == [1]
    assert (out.body["partitionEpoch"], out.body["leaderEpoch"]) == (1, 0)
    out = log.apply(c.change_partition(T1, 0, isr=[1, 2], leader=2))
    assert (out.body["leader"], out.body["partitionEpoch"], out.body["leaderEpoch"]) == (2, 2, 1)
    assert log.apply(c.change_partition(T1, 0, leader=3)).status == "invalid"  # not in the ISR
    assert log.apply(c.change_partition(T1, 0, replicas=[1])).status == "invalid"  # ISR outside replicas
    assert log.apply(c.change_partition(T1, 0, leader=-3)).status == "invalid"
    assert log.apply(c.change_partition(T1, 0, replicas=[1, 2, 9])).status == "invalid"
    assert log.apply(c.change_partition(T1, 5, leader=-1)).status == "not_found"
    assert log.apply(c.change_partition(T2, 0, leader=-1)).status == "not_found"
    out = log.apply(c.change_partition(T1, 0, replicas=[1, 2, 3], adding_replicas=[3], leader=-1))
    assert out.status == "ok" and out.body["leader"] == -1 and out.body["addingReplicas"] == [3]


def test_partition_change_keeps_replicas_of_departed_brokers(log: Log) -> None:
    cluster(log)
    log.apply(c.create_partition(T1, 0, [1, 2], leader=1))
    log.apply(c.unregister_broker(2))
    assert log.apply(c.change_partition(T1, 0, isr=[1])).status == "ok"


def test_remove_partition(log: Log) -> None:
    cluster(log)
    created = log.apply(c.create_partition(T1, 0, [1])).body
    assert log.apply(c.remove_partition(T1, 1)).status == "not_found"
    assert log.apply(c.remove_partition(T2, 0)).status == "not_found"
    out = log.apply(c.remove_partition(T1, 0))
    assert out.status == "ok" and out.body == created
    assert log.store.partitions() == []


# --- features, no-ops, idempotency ---------------------------------------------------------------
def test_feature_levels(log: Log) -> None:
    assert not log.store.has_feature_level()
    assert log.apply(c.metadata_version(1)).status == "created"
    assert log.store.has_feature_level()
    assert log.apply(c.metadata_version(1)).status == "ok"
    assert log.apply(c.metadata_version(3)).status == "ok"
    assert log.apply(c.metadata_version(2)).status == "conflict"
    assert log.apply(c.metadata_version(0)).status == "invalid"
    assert log.store.features() == {"metadata.version": 3}
    assert [r["offset"] for r in log.store.fetch(0)["records"]] == [1, 3]


def test_noops_are_logged(log: Log) -> None:
    log.noop()
    assert log.apply(NoOpRecord()).status == "ok"
    records = log.store.fetch(0)["records"]
    assert [(r["offset"], r["apiKey"], r["type"]) for r in records] == [
        (1, 20, "NoOpRecord"),
        (2, 20, "NoOpRecord"),
    ]


def test_idempotency_returns_the_first_outcome(log: Log) -> None:
    first = log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT"), key="k1")
    log.apply(c.unregister_broker(1))
    retry = log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT"), key="k1")
    assert retry == first  # same status, body and offset; nothing applied again
    assert log.store.broker(1) is None
    rejected = log.apply(c.unregister_broker(1), key="k2")
    log.apply(c.register_broker(1, "h", 9092, "PLAINTEXT"))
    assert log.apply(c.unregister_broker(1), key="k2") == rejected
    assert log.store.broker(1) is not None


def test_idempotency_memory_is_bounded_in_apply_order() -> None:
    log = Log(MetadataStore(idempotency_keys=2))
    outs = [log.apply(c.create_topic(f"t{i}"), key=f"k{i}") for i in range(3)]
    log.apply(c.remove_topic(outs[0].body["topicId"]))
    assert log.apply(c.create_topic("t0"), key="k0").offset == 5  # k0 was evicted: applied again
    assert log.apply(c.create_topic("t2"), key="k2") == outs[2]


def test_undecodable_command_is_invalid_and_changes_nothing(log: Log) -> None:
    out = c.decode_outcome(log.store.apply(1, b"\x93\x00\x92\x63\x00\xc0"))
    assert out.status == "invalid" and "unknown record apiKey 99" in out.message and out.offset == 1
    assert log.store.applied_index == 1 and log.store.fetch(0) == {
        "records": [],
        "highWatermark": 1,
        "more": False,
    }


# --- reads ---------------------------------------------------------------------------------------
def test_reads_are_sorted(log: Log) -> None:
    for b in (3, 1, 2):
        log.apply(c.register_broker(b, "h", 9092, "PLAINTEXT"))
    for name, tid in (("zeta", T2), ("alpha", T1)):
        log.apply(c.create_topic(name, tid))
    log.apply(c.create_partition(T2, 1, [1]))
    log.apply(c.create_partition(T1, 2, [1]))
    log.apply(c.create_partition(T2, 0, [1]))
    meta = log.store.client_metadata()
    assert [b["brokerId"] for b in meta["brokers"]] == [1, 2, 3]
    assert [t["name"] for t in meta["topics"]] == ["alpha", "zeta"]
    assert [(p["topicId"], p["partitionId"]) for p in meta["partitions"]] == [(T1, 2), (T2, 0), (T2, 1)]


def test_query_protocol(log: Log) -> None:
    cluster(log, brokers=1)

    def ask(*request: Any) -> Any:
        return msgpack.unpackb(log.store.query(msgpack.packb(list(request))))

    assert ask("broker", 1) == log.store.broker(1)
    assert ask("topic", "t1") == log.store.topic("t1")
    assert ask("partitions", None, T1) == []
    assert ask("fetch", 0, 1)["more"] is True
    assert ask("has_feature_level") is True and ask("applied_index") == 3
    for bad in (["nope"], [], "brokers", ["broker", 1, 2, 3], ["fetch", "x"]):
        with pytest.raises(CommandError):
            log.store.query(msgpack.packb(bad))
    with pytest.raises(CommandError, match="not msgpack"):
        log.store.query(b"\xc1")


def test_fetch_pages_after_offset(log: Log) -> None:
    cluster(log)
    page = log.store.fetch(2, max_records=2)
    assert [r["offset"] for r in page["records"]] == [3, 4] and page["more"] is True
    assert page["highWatermark"] == 5
    assert log.store.fetch(5)["records"] == []
    with pytest.raises(ValueError):
        log.store.fetch(0, -1)


# --- determinism and replay ----------------------------------------------------------------------
def random_record(rng: random.Random, topic_ids: list[str]) -> Record:
    """A command that is valid or not depending on the state it meets."""
    broker = rng.randint(1, 4)
    topic = rng.choice(topic_ids)
    replicas = rng.sample(range(1, 6), rng.randint(1, 3))
    isr = replicas[: rng.randint(0, len(replicas))]
    epoch = rng.randint(-1, 40)
    choices: list[Callable[[], Record]] = [
        lambda: c.register_broker(broker, rng.choice("ab"), 9092, 0, None, incarnation(rng.randint(0, 99))),
        lambda: c.broker_status_change(broker, epoch, rng.choice(list(c.BROKER_STATUSES))),
        lambda: c.unregister_broker(broker, rng.choice([-1, epoch])),
        lambda: c.create_topic(rng.choice(["a", "b", "c", "a/"]), topic),
        lambda: c.remove_topic(topic),
        lambda: c.create_partition(topic, rng.randint(0, 2), replicas, isr, leader=rng.choice([-1, *isr])),
        lambda: c.change_partition(topic, rng.randint(0, 2), isr=isr, leader=rng.choice([-2, -1, *replicas])),
        lambda: c.remove_partition(topic, rng.randint(0, 2)),
        lambda: c.register_producer(broker, rng.randint(0, 5), epoch),
        lambda: c.metadata_version(rng.randint(0, 3)),
        NoOpRecord,
    ]
    return rng.choice(choices)()


def random_run(seed: int, store: MetadataStore) -> list[bytes]:
    """Apply a seeded random command sequence (with noops, keys and garbage); returns the raw outcomes."""
    rng = random.Random(seed)
    topic_ids = [incarnation(1000 + i) for i in range(3)]
    outcomes = []
    for index in range(1, 301):
        roll = rng.random()
        if roll < 0.05:
            store.apply_noop(index)
            continue
        if roll < 0.08:
            outcomes.append(store.apply(index, bytes(rng.randbytes(5))))
            continue
        key = f"k{rng.randint(0, 30)}" if rng.random() < 0.3 else None
        record = random_record(rng, topic_ids)
        outcomes.append(store.apply(index, c.encode_command(MetadataCommand(record, key))))
    return outcomes


@pytest.mark.parametrize("seed", range(6))
def test_same_log_same_state_and_outcomes(seed: int) -> None:
    a, b = MetadataStore(), MetadataStore()
    outcomes = random_run(seed, a)
    assert outcomes == random_run(seed, b)
    assert a.dump() == b.dump()
    statuses = {c.decode_outcome(o).status for o in outcomes}
    assert {"created", "ok", "invalid"} <= statuses  # the run exercised several paths


@pytest.mark.parametrize("seed", range(6))
def test_fetch_paging_then_replay_reproduces_the_store(seed: int) -> None:
    store = MetadataStore()
    random_run(seed, store)
    fetched: list[dict[str, Any]] = []
    offset, high_watermark = 0, 0
    while True:
        page = store.fetch(offset, max_records=7)
        fetched.extend(page["records"])
        high_watermark = page["highWatermark"]
        if not page["more"]:
            break
        offset = page["records"][-1]["offset"]
    copy = replay(fetched, high_watermark)
    assert copy.dump() == store.dump()
    assert copy.brokers() == store.brokers() and copy.partitions() == store.partitions()

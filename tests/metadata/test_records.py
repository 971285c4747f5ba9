"""Record and command codecs: round trips, Kafka's apiKeys, and precise rejections."""

from __future__ import annotations

import dataclasses
import uuid

import msgpack
import pytest

from pyraft.metadata import commands as c
from pyraft.metadata.fields import to_json_value, to_wire_value
from pyraft.metadata.records import (
    RECORD_TYPES,
    NoOpRecord,
    Record,
    RecordError,
    decode_record,
    encode_record,
    is_uuid,
    record_from_json,
    replaced,
)

TOPIC = "3f2a8d1e-7c4b-4e8a-9f10-2b3c4d5e6f70"
INCARNATION = "0b5e9c1a-1111-4222-8333-444455556666"


def sample_records() -> list[Record]:
    return [
        c.register_broker(1, "h1", 9092, "PLAINTEXT", "rack-a", INCARNATION),
        c.unregister_broker(1, 5),
        c.broker_status_change(1, 5, "ALIVE"),
        c.create_topic("orders", TOPIC),
        c.remove_topic(TOPIC),
        c.create_partition(TOPIC, 0, [1, 2], [1], removing_replicas=[2], leader=1),
        c.change_partition(TOPIC, 0, isr=[1, 2], leader=2),
        c.change_partition(TOPIC, 0),
        c.register_producer(1, 1000, 5),
        c.metadata_version(),
        NoOpRecord(),
        c.remove_partition(TOPIC, 3),
    ]


def pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


@pytest.mark.parametrize("record", sample_records(), ids=lambda r: type(r).__name__)
def test_round_trips(record: Record) -> None:
    assert decode_record(encode_record(record)) == record
    assert record_from_json(record.API_KEY, record.to_json()) == record
    cmd = c.MetadataCommand(record, "key-1")
    assert c.decode_command(c.encode_command(cmd)) == cmd


def test_kafka_api_keys_and_versions() -> None:
    """apiKeys as in apache/kafka metadata/src/main/resources/common/metadata/*.json."""
    expected = {
        0: ("RegisterBrokerRecord", 1),
        1: ("UnregisterBrokerRecord", 0),
        2: ("TopicRecord", 0),
        3: ("PartitionRecord", 0),
        5: ("PartitionChangeRecord", 0),
        9: ("RemoveTopicRecord", 0),
        12: ("FeatureLevelRecord", 0),
        15: ("ProducerIdsRecord", 0),
        17: ("BrokerRegistrationChangeRecord", 1),
        20: ("NoOpRecord", 0),
        10000: ("RemovePartitionRecord", 0),
    }
    assert {k: (v.NAME, v.VERSION) for k, v in RECORD_TYPES.items()} == expected
    for cls in RECORD_TYPES.values():
        assert cls.__name__ == cls.NAME
        assert [f.attr for f in cls.FIELDS] == [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def test_json_views_use_kafka_camel_case() -> None:
    view = c.register_broker(1, "h1", 9092, "SSL", None, INCARNATION).to_json()
    assert list(view) == [
        "brokerId",
        "incarnationId",
        "brokerEpoch",
        "endPoints",
        "rack",
        "fenced",
        "inControlledShutdown",
    ]
    assert view["endPoints"] == [{"name": "SSL", "host": "h1", "port": 9092, "securityProtocol": 1}]
    part = c.create_partition(TOPIC, 0, [1]).to_json()
    assert {"removingReplicas", "addingReplicas", "leaderEpoch", "partitionEpoch", "isr"} <= set(part)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ([99, 0], "unknown record apiKey 99"),
        (["0", 1], "unknown record apiKey '0'"),
        ([True, 0], "unknown record apiKey True"),
        ([2, 1, "t", TOPIC], "TopicRecord version 1 is not supported"),
        ([2, 0, "t"], "TopicRecord v0 has 2 fields, got 1"),
        ([2, 0, "t", TOPIC, "extra"], "has 2 fields, got 3"),
        ([2, 0, 5, TOPIC], "TopicRecord.name: expected string"),
        ([2, 0, "t", "not-a-uuid"], "TopicRecord.topicId: expected a canonical lowercase UUID"),
        ([2, 0, "t", TOPIC.upper()], "canonical lowercase UUID"),
        ([1, 0, True, 3], "UnregisterBrokerRecord.brokerId: expected int32"),
        ([1, 0, 2**31, 3], "UnregisterBrokerRecord.brokerId: expected int32"),
        ([12, 0, "metadata.version", 2**15], "FeatureLevelRecord.featureLevel: expected int16"),
        ([3, 0, 0, TOPIC, [1, "2"], [], [], [], -1, 0, 0], r"PartitionRecord.replicas[1]: expected int32"),
        ([3, 0, 0, TOPIC, None, [], [], [], -1, 0, 0], "PartitionRecord.replicas: expected a list"),
        ([0, 1, 1, INCARNATION, -1, [["n", "h", 70000, 0]], None, True, False], "endPoints[0].port"),
        ([0, 1, 1, INCARNATION, -1, [["n", "h", 1]], None, True, False], "endPoints[0]: expected [name"),
        ([0, 1, 1, INCARNATION, -1, [], None, 1, False], "RegisterBrokerRecord.fenced: expected bool"),
        (
            [0, 1, 1, INCARNATION, -1, [["a", "h", 1, 0], ["b", 7, 1, 0]], None, True, False],
            "endPoints[1].host",
        ),
        ([0, 1, 1, INCARNATION, -1, [["n", "h", True, 0]], None, True, False], "endPoints[0].port"),
        ([0, 1, 1, INCARNATION, -1, [["n", "h", 1, 2**15]], None, True, False], "securityProtocol: expected"),
        ("nope", "a record must be a list"),
    ],
)
def test_decode_rejects_precisely(wire: object, message: str) -> None:
    with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_record(pack(wire))


def test_decode_rejects_garbage_bytes() -> None:
    with pytest.raises(RecordError, match="not valid msgpack"):
        decode_record(b"\xc1")
    with pytest.raises(RecordError, match="not valid msgpack"):
        c.decode_command(b"\x92\x00")


def test_command_envelope_rejections() -> None:
    record = c.create_topic("t", TOPIC).to_wire()
    with pytest.raises(RecordError, match="command format 7 is not supported"):
        c.decode_command(pack([7, record, None]))
    with pytest.raises(RecordError, match="idempotency key must be a string"):
        c.decode_command(pack([0, record, 5]))
    with pytest.raises(RecordError, match="a command must be a list"):
        c.decode_command(pack([0, record]))
    with pytest.raises(RecordError, match="unknown record apiKey 4"):
        c.decode_command(pack([0, [4, 0], None]))


def test_record_from_json_rejections() -> None:
    with pytest.raises(RecordError, match="fields must be exactly"):
        record_from_json(2, {"name": "t"})
    with pytest.raises(RecordError, match="endPoints\\[0\\]: expected an object"):
        body = c.register_broker(1, "h", 1, 0, None, INCARNATION).to_json()
        body["endPoints"] = [{"host": "h"}]
        record_from_json(0, body)
    with pytest.raises(RecordError, match="unknown record apiKey 42"):
        record_from_json(42, {})


def test_outcome_round_trip_and_rejections() -> None:
    outcome = c.Outcome("created", {"brokerId": 1, "endPoints": [{"port": 1}]}, 7, "")
    assert c.decode_outcome(c.encode_outcome(outcome)) == outcome
    with pytest.raises(RecordError, match="malformed outcome"):
        c.decode_outcome(pack(["weird", {}, 1, ""]))
    with pytest.raises(RecordError, match="an outcome must be a list"):
        c.decode_outcome(pack({"status": "ok"}))
    assert c.HTTP_STATUS == {"created": 201, "ok": 200, "not_found": 404, "conflict": 409, "invalid": 422}


def test_builders_type_check_their_arguments() -> None:
    with pytest.raises(RecordError, match="port"):
        c.register_broker(1, "h", 70000, "PLAINTEXT")
    with pytest.raises(RecordError, match="unknown securityProtocol"):
        c.register_broker(1, "h", 1, "CARRIER_PIGEON")
    with pytest.raises(RecordError, match="brokerId: expected int32"):
        c.unregister_broker("1")  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="topicId"):
        c.create_topic("t", "x")
    assert c.create_partition(TOPIC, 0, [3, 1]).isr == (3, 1)  # ISR defaults to the replicas
    assert c.register_broker(1, "h", 1, 3).end_points[0].name == "SASL_SSL"


@pytest.mark.parametrize(
    ("status", "fenced", "shutdown"),
    [
        ("INIT", 1, 0),
        ("fenced", 1, 0),
        ("ALIVE", -1, 0),
        ("Unfenced", -1, 0),
        ("CONTROLLED_SHUTDOWN", 0, 1),
        ("controlled shutdown", 0, 1),
        ("controlled-shutdown", 0, 1),
    ],
)
def test_broker_status_table(status: str, fenced: int, shutdown: int) -> None:
    record = c.broker_status_change(4, 9, status)
    assert (record.broker_id, record.broker_epoch, record.fenced, record.in_controlled_shutdown) == (
        4,
        9,
        fenced,
        shutdown,
    )


def test_unknown_broker_status() -> None:
    with pytest.raises(RecordError, match="unknown brokerStatus 'DEAD'"):
        c.parse_broker_status("DEAD")


def test_fields_list_every_dataclass_field_in_order() -> None:
    """Records are built positionally from FIELDS (records._Codec), so the orders must agree."""
    for cls in RECORD_TYPES.values():
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert [f.attr for f in cls.FIELDS] == names, cls.NAME


@pytest.mark.parametrize("record", sample_records(), ids=lambda r: type(r).__name__)
def test_precomputed_codecs_equal_the_field_by_field_definition(record: Record) -> None:
    fields = record.FIELDS
    assert record.to_json() == {f.json: to_json_value(f.kind, getattr(record, f.attr)) for f in fields}
    expected = [
        record.API_KEY,
        record.VERSION,
        *(to_wire_value(f.kind, getattr(record, f.attr)) for f in fields),
    ]
    assert record.to_wire() == expected
    for f in fields:
        value = getattr(record, f.attr)
        assert replaced(record, **{f.attr: value}) == dataclasses.replace(record, **{f.attr: value})  # type: ignore[type-var]


def test_replaced_changes_only_what_it_is_given() -> None:
    broker = c.register_broker(1, "h1", 9092, "PLAINTEXT", "rack-a", INCARNATION)
    changed = replaced(broker, broker_epoch=7, fenced=False)
    assert changed == dataclasses.replace(broker, broker_epoch=7, fenced=False)
    assert broker.broker_epoch == -1 and broker.fenced is True


NOT_QUITE_UUIDS = [
    INCARNATION.upper(),
    "{" + INCARNATION + "}",
    INCARNATION.replace("-", ""),
    "urn:uuid:" + INCARNATION,
    INCARNATION[:-1] + "g",
    INCARNATION[:-1] + "\u0663",  # an Arabic-Indic digit: int() takes it, the canonical form has none
    " " + INCARNATION[1:],
    INCARNATION.replace("-", "_"),
    INCARNATION[:8] + "_" + INCARNATION[9:],
    "",
]


@pytest.mark.parametrize("text", [INCARNATION, *NOT_QUITE_UUIDS])
def test_is_uuid_accepts_exactly_the_canonical_form(text: str) -> None:
    try:
        canonical = str(uuid.UUID(text)) == text
    except ValueError:
        canonical = False
    assert is_uuid(text) is canonical

"""What a Raft log entry of the metadata quorum holds, what applying it returns, and record builders.

A log entry's data is ``encode_command(MetadataCommand(record, idempotency_key))``:
msgpack ``[COMMAND_FORMAT, [apiKey, version, field...], key-or-nil]``. Applying it
returns ``encode_outcome(Outcome(...))``. The builders are how the REST layer and
the tests make records: they fill Kafka's defaults, generate UUIDs on the
proposer side (the store must stay deterministic, so it never generates any)
and type-check the result (``RecordError``, a ValueError, means a 422).

brokerStatus mapping (REST ``brokerStatus`` → record), case-insensitive, spaces
or dashes as underscores:

=====================  =================================================  ======================
brokerStatus           BrokerRegistrationChangeRecord                      state afterwards
=====================  =================================================  ======================
INIT, FENCED           fenced=1, inControlledShutdown=0                    fenced
ALIVE, UNFENCED        fenced=-1, inControlledShutdown=0                   unfenced
CONTROLLED_SHUTDOWN    fenced=0, inControlledShutdown=1                    in controlled shutdown
=====================  =================================================  ======================

A new registration (RegisterBrokerRecord) starts fenced, as in KRaft (INIT).
``change_broker`` (REST ``register_broker_change``) re-registers the broker — a
RegisterBrokerRecord with a new incarnationId, whose epoch becomes the new
record's offset — when the endpoint changes or when an ALIVE/UNFENCED/INIT/FENCED
status asks a broker to leave controlled shutdown (KRaft only leaves controlled
shutdown by re-registering); the re-registration's fenced / inControlledShutdown
flags come from the same table. Otherwise it is a BrokerRegistrationChangeRecord.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from pyraft.metadata.records import (
    SECURITY_PROTOCOLS,
    BrokerEndpoint,
    BrokerRegistrationChangeRecord,
    FeatureLevelRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    Record,
    RecordError,
    RegisterBrokerRecord,
    RemovePartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
    record_from_wire,
)

R = TypeVar("R", bound=Record)

COMMAND_FORMAT = 0
METADATA_VERSION = "metadata.version"
METADATA_VERSION_LEVEL = 1  # pyraft's first metadata.version

CREATED = "created"
OK = "ok"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
INVALID = "invalid"
STATUSES = (CREATED, OK, NOT_FOUND, CONFLICT, INVALID)
HTTP_STATUS: dict[str, int] = {CREATED: 201, OK: 200, NOT_FOUND: 404, CONFLICT: 409, INVALID: 422}


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """One row of the brokerStatus table: the change record's fenced / inControlledShutdown values."""

    fenced: int  # -1 unfence, 1 fence, 0 unchanged
    in_controlled_shutdown: int  # 1 enter controlled shutdown, 0 unchanged


BROKER_STATUSES: dict[str, BrokerStatus] = {
    "INIT": BrokerStatus(1, 0),
    "FENCED": BrokerStatus(1, 0),
    "ALIVE": BrokerStatus(-1, 0),
    "UNFENCED": BrokerStatus(-1, 0),
    "CONTROLLED_SHUTDOWN": BrokerStatus(0, 1),
}


@dataclass(frozen=True, slots=True)
class MetadataCommand:
    """One record to apply, with the client's idempotency key (Raft thesis 6.3) if it sent one."""

    record: Record
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of applying one command; ``offset`` is the log index it was committed at."""

    status: str
    body: dict[str, Any] = field(default_factory=dict)
    offset: int = 0
    message: str = ""


def encode_command(cmd: MetadataCommand) -> bytes:
    """The bytes a log entry holds for ``cmd``."""
    return _pack([COMMAND_FORMAT, cmd.record.to_wire(), cmd.idempotency_key])


def decode_command(data: bytes) -> MetadataCommand:
    """Parse a log entry's data; raises RecordError for anything but a well-formed command."""
    record, key = decode_command_parts(data)
    return MetadataCommand(record, key)


def decode_command_parts(data: bytes) -> tuple[Record, str | None]:
    """``decode_command`` as ``(record, idempotency key)``: the store's apply path, which
    has no use for the MetadataCommand (a frozen dataclass costs ~1 us to build)."""
    wire = _unpack(data, "command")
    if not isinstance(wire, list) or len(wire) != 3:
        raise RecordError("a command must be a list [format, record, idempotencyKey]")
    form, record, key = wire
    if type(form) is not int or form != COMMAND_FORMAT:
        raise RecordError(f"command format {form!r} is not supported (only {COMMAND_FORMAT})")
    if key is not None and not isinstance(key, str):
        raise RecordError(f"idempotency key must be a string or nil, got {key!r}")
    return record_from_wire(record), key


def encode_outcome(outcome: Outcome) -> bytes:
    """The bytes ``StateMachine.apply`` returns to the proposer."""
    return pack_outcome(outcome.status, outcome.body, outcome.offset, outcome.message)


def pack_outcome(status: str, body: dict[str, Any], offset: int, message: str) -> bytes:
    """``encode_outcome`` without building the Outcome first (the store's apply path)."""
    return _pack([status, body, offset, message])


def decode_outcome(data: bytes) -> Outcome:
    """Parse ``encode_outcome`` output; raises RecordError if it is not one."""
    wire = _unpack(data, "outcome")
    if not isinstance(wire, list) or len(wire) != 4:
        raise RecordError("an outcome must be a list [status, body, offset, message]")
    status, body, offset, message = wire
    if status not in STATUSES or not isinstance(body, dict) or type(offset) is not int:
        raise RecordError(f"malformed outcome {wire!r}")
    if not isinstance(message, str):
        raise RecordError(f"outcome message must be a string, got {message!r}")
    return Outcome(status, body, offset, message)


def new_uuid() -> str:
    """A fresh random UUID in pyraft's canonical form; only ever called on the proposer side."""
    return str(uuid.uuid4())


def parse_broker_status(status: str) -> BrokerStatus:
    """Look up a REST brokerStatus (INIT, ALIVE, FENCED, UNFENCED, CONTROLLED_SHUTDOWN) or RecordError."""
    key = status.strip().upper().replace(" ", "_").replace("-", "_") if isinstance(status, str) else ""
    if key not in BROKER_STATUSES:
        raise RecordError(f"unknown brokerStatus {status!r}; expected one of {sorted(BROKER_STATUSES)}")
    return BROKER_STATUSES[key]


def security_protocol_id(protocol: str | int) -> int:
    """Kafka's SecurityProtocol id for a name (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a known id."""
    if isinstance(protocol, str) and protocol.upper() in SECURITY_PROTOCOLS:
        return SECURITY_PROTOCOLS[protocol.upper()]
    if type(protocol) is int and protocol in SECURITY_PROTOCOLS.values():
        return protocol
    raise RecordError(f"unknown securityProtocol {protocol!r}; expected one of {sorted(SECURITY_PROTOCOLS)}")


def metadata_version(level: int = METADATA_VERSION_LEVEL) -> FeatureLevelRecord:
    """The FeatureLevelRecord a new log starts with."""
    return _checked(FeatureLevelRecord(METADATA_VERSION, level))


def register_broker(
    broker_id: int,
    host: str,
    port: int,
    security_protocol: str | int,
    rack: str | None = None,
    incarnation_id: str | None = None,
) -> RegisterBrokerRecord:
    """A first registration (expected previous epoch -1): fenced, one listener named after its protocol."""
    return _checked(
        RegisterBrokerRecord(
            broker_id=broker_id,
            incarnation_id=incarnation_id or new_uuid(),
            broker_epoch=-1,
            end_points=(_endpoint(host, port, security_protocol),),
            rack=rack,
        )
    )


def reregister_broker(
    current: Mapping[str, Any],
    host: str,
    port: int,
    security_protocol: str | int,
    status: str | None = None,
    incarnation_id: str | None = None,
) -> RegisterBrokerRecord:
    """A re-registration of the broker ``current`` (a store broker view) with a new incarnation.

    It carries the current epoch as the expected previous epoch, so a racing
    change makes it a conflict; the rack is kept. ``status`` picks the flags
    (None keeps fenced, leaves controlled shutdown)."""
    fenced = bool(current["fenced"])
    shutdown = False
    if status is not None:
        row = parse_broker_status(status)
        fenced = row.fenced == 1 or (row.fenced == 0 and fenced)
        shutdown = row.in_controlled_shutdown == 1
    return _checked(
        RegisterBrokerRecord(
            broker_id=current["brokerId"],
            incarnation_id=incarnation_id or new_uuid(),
            broker_epoch=current["brokerEpoch"],
            end_points=(_endpoint(host, port, security_protocol),),
            rack=current.get("rack"),
            fenced=fenced,
            in_controlled_shutdown=shutdown,
        )
    )


def broker_status_change(broker_id: int, broker_epoch: int, status: str) -> BrokerRegistrationChangeRecord:
    """The BrokerRegistrationChangeRecord for a REST brokerStatus (see the module table)."""
    row = parse_broker_status(status)
    return _checked(
        BrokerRegistrationChangeRecord(broker_id, broker_epoch, row.fenced, row.in_controlled_shutdown)
    )


def change_broker(
    current: Mapping[str, Any],
    host: str,
    port: int,
    security_protocol: str | int,
    status: str,
    incarnation_id: str | None = None,
) -> Record:
    """REST ``register_broker_change``: a re-registration or a status change (module docstring)."""
    row = parse_broker_status(status)
    endpoint = _endpoint(host, port, security_protocol)
    moved = [endpoint.to_json()] != list(current["endPoints"])
    leaves_shutdown = bool(current["inControlledShutdown"]) and row.in_controlled_shutdown == 0
    if moved or leaves_shutdown:
        return reregister_broker(current, host, port, security_protocol, status, incarnation_id)
    return broker_status_change(current["brokerId"], current["brokerEpoch"], status)


def unregister_broker(broker_id: int, broker_epoch: int = -1) -> UnregisterBrokerRecord:
    """Unregister a broker; ``broker_epoch`` -1 accepts whatever epoch is current."""
    return _checked(UnregisterBrokerRecord(broker_id, broker_epoch))


def create_topic(name: str, topic_id: str | None = None) -> TopicRecord:
    """A TopicRecord with a proposer-generated topicId (the REST ``topicUUID``)."""
    return _checked(TopicRecord(name, topic_id or new_uuid()))


def remove_topic(topic_id: str) -> RemoveTopicRecord:
    """Remove a topic and its partitions."""
    return _checked(RemoveTopicRecord(topic_id))


def create_partition(
    topic_id: str,
    partition_id: int,
    replicas: Iterable[int],
    isr: Iterable[int] | None = None,
    removing_replicas: Iterable[int] = (),
    adding_replicas: Iterable[int] = (),
    leader: int = -1,
    leader_epoch: int = 0,
    partition_epoch: int = 0,
) -> PartitionRecord:
    """A PartitionRecord; the ISR defaults to all replicas (as Kafka creates partitions)."""
    replicas = tuple(replicas)
    return _checked(
        PartitionRecord(
            partition_id=partition_id,
            topic_id=topic_id,
            replicas=replicas,
            isr=replicas if isr is None else tuple(isr),
            removing_replicas=tuple(removing_replicas),
            adding_replicas=tuple(adding_replicas),
            leader=leader,
            leader_epoch=leader_epoch,
            partition_epoch=partition_epoch,
        )
    )


def change_partition(
    topic_id: str,
    partition_id: int,
    *,
    isr: Iterable[int] | None = None,
    leader: int = -2,
    replicas: Iterable[int] | None = None,
    removing_replicas: Iterable[int] | None = None,
    adding_replicas: Iterable[int] | None = None,
) -> PartitionChangeRecord:
    """A PartitionChangeRecord: None / leader -2 leave a field unchanged, leader -1 means no leader."""
    return _checked(
        PartitionChangeRecord(
            partition_id=partition_id,
            topic_id=topic_id,
            isr=_opt(isr),
            leader=leader,
            replicas=_opt(replicas),
            removing_replicas=_opt(removing_replicas),
            adding_replicas=_opt(adding_replicas),
        )
    )


def remove_partition(topic_id: str, partition_id: int) -> RemovePartitionRecord:
    """Remove one partition (pyraft's RemovePartitionRecord; Kafka has none)."""
    return _checked(RemovePartitionRecord(topic_id, partition_id))


def register_producer(broker_id: int, producer_id: int, broker_epoch: int) -> ProducerIdsRecord:
    """REST ``register_producer``: producerId is carried as Kafka's nextProducerId."""
    return _checked(ProducerIdsRecord(broker_id, broker_epoch, producer_id))


def _endpoint(host: str, port: int, security_protocol: str | int) -> BrokerEndpoint:
    protocol = security_protocol_id(security_protocol)
    name = {v: k for k, v in SECURITY_PROTOCOLS.items()}[protocol]
    return BrokerEndpoint(name, host, port, protocol)


def _opt(values: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(values)


def _checked(record: R) -> R:
    """Round-trip through the wire checks, so a mistyped argument fails here (422), not at apply."""
    record_from_wire(record.to_wire())
    return record


_local = threading.local()


def _pack(value: object) -> bytes:
    """``msgpack.packb`` without its cost of a new Packer per call (~1 µs of every apply, which
    packs the outcome). A Packer is not thread-safe, so each thread keeps its own."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(value)
    return packed


def _unpack(data: bytes, what: str) -> object:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise RecordError(f"{what} is not valid msgpack: {exc}") from exc

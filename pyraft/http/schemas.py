"""JSON schemas of the metadata API: request bodies (validated strictly) and responses (documented).

Request schemas are closed (``additionalProperties: false``) and typed to
Kafka's field widths; the validator in ``validation.py`` enforces them and
``openapi.py`` publishes them, so the documented contract is the enforced one.
Response schemas name every field the store's views carry and leave room for
more (a new field is not a breaking change for a client).
"""

from __future__ import annotations

from typing import Any

from pyraft.metadata.commands import BROKER_STATUSES
from pyraft.metadata.events import EVENT_KINDS
from pyraft.metadata.records import SECURITY_PROTOCOLS

Schema = dict[str, Any]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def integer(minimum: int, maximum: int, description: str = "") -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if description:
        schema["description"] = description
    return schema


def closed(properties: dict[str, Schema], required: list[str], description: str = "") -> Schema:
    """A request object: exactly these fields, the ``required`` ones present."""
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def shown(properties: dict[str, Schema], required: list[str] | None = None, description: str = "") -> Schema:
    """A response object: these fields (``required`` always present), possibly more."""
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required if required is not None else list(properties),
    }


BROKER_ID = integer(0, INT32_MAX, "the broker's id (Kafka's node.id)")
PARTITION_ID = integer(0, INT32_MAX, "the partition's index within its topic")
PRODUCER_ID = integer(0, INT64_MAX, "the producer id (Kafka's nextProducerId of the block)")
BROKER_EPOCH = integer(0, INT64_MAX, "the offset of the broker's current registration record")
PORT = integer(1, 65535)
HOST: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
UUID: Schema = {"type": "string", "format": "uuid", "description": "canonical lowercase UUID"}
NULLABLE_UUID: Schema = {**UUID, "nullable": True}
SECURITY_PROTOCOL: Schema = {"type": "string", "enum": sorted(SECURITY_PROTOCOLS)}
BROKER_STATUS: Schema = {
    "type": "string",
    "enum": sorted(BROKER_STATUSES) + sorted(s.lower() for s in BROKER_STATUSES),
    "description": "INIT/FENCED fence the broker, ALIVE/UNFENCED unfence it, CONTROLLED_SHUTDOWN "
    "starts a controlled shutdown (upper or lower case)",
}
TOPIC_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 249,
    "pattern": "^[a-zA-Z0-9._-]+$",
    "description": "Kafka's legal topic names: 1-249 of [a-zA-Z0-9._-], not '.' or '..'",
}
BROKER_LIST: Schema = {
    "type": "array",
    "items": integer(0, INT32_MAX),
    "maxItems": 1024,
    "uniqueItems": True,
}

# ------------------------------------------------------------------------------------------ requests

REGISTER_BROKER = closed(
    {
        "brokerId": BROKER_ID,
        "brokerHost": HOST,
        "brokerPort": PORT,
        "securityProtocol": SECURITY_PROTOCOL,
        "rackId": {"type": "string", "minLength": 1, "maxLength": 255, "nullable": True},
    },
    ["brokerId", "brokerHost", "brokerPort", "securityProtocol"],
    "A new broker; it starts fenced (KRaft's INIT). rackId is optional.",
)
BROKER_CHANGE = closed(
    {
        "brokerId": BROKER_ID,
        "brokerHost": HOST,
        "brokerPort": PORT,
        "securityProtocol": SECURITY_PROTOCOL,
        "brokerStatus": BROKER_STATUS,
    },
    ["brokerId", "brokerHost", "brokerPort", "securityProtocol", "brokerStatus"],
    "A new endpoint re-registers the broker (new incarnation, the epoch becomes the new record's offset); "
    "the same endpoint with a new status is a BrokerRegistrationChangeRecord.",
)
REGISTER_TOPIC = closed({"name": TOPIC_NAME}, ["name"], "A new topic; the server picks its topicUUID.")
REGISTER_PARTITION = closed(
    {
        "partitionId": PARTITION_ID,
        "topicUUID": UUID,
        "replicas": {**BROKER_LIST, "minItems": 1, "description": "registered broker ids"},
        "ISR": {**BROKER_LIST, "description": "in-sync replicas, within replicas (default: all replicas)"},
        "removingReplicas": {**BROKER_LIST, "description": "within replicas (default: [])"},
        "addingReplicas": {**BROKER_LIST, "description": "within replicas (default: [])"},
        "leader": integer(-1, INT32_MAX, "a member of the ISR, or -1 for none (default: -1)"),
        "partitionEpoch": integer(0, INT32_MAX, "default: 0"),
    },
    ["partitionId", "topicUUID", "replicas"],
    "A partition of an existing topic; identity is (topicUUID, partitionId) as in Kafka.",
)
REGISTER_PRODUCER = closed(
    {"brokerId": BROKER_ID, "producerId": PRODUCER_ID, "brokerEpoch": BROKER_EPOCH},
    ["brokerId", "producerId", "brokerEpoch"],
    "A producer id for a registered broker; brokerEpoch must be the broker's current epoch.",
)
GET_PRODUCER = closed({"brokerId": BROKER_ID, "producerId": PRODUCER_ID}, ["brokerId", "producerId"])
METADATA_FETCH = closed(
    {
        "offset": integer(0, INT64_MAX, "return the records after this log offset (0: from the start)"),
        "maxRecords": integer(1, 10_000, "at most this many records (default: all)"),
    },
    ["offset"],
)

# ----------------------------------------------------------------------------------------- responses

ERROR = shown(
    {
        "error": {"type": "string", "description": "a stable machine-readable code"},
        "message": {"type": "string", "description": "what went wrong, for people"},
    },
    description="Every 4xx and 5xx answer.",
)
_WRITE_FIELDS: dict[str, Schema] = {
    "outcome": {
        "type": "string",
        "enum": ["created", "ok"],
        "description": "created, or ok (changed / repeat)",
    },
    "offset": integer(0, INT64_MAX, "the log offset the command was committed at"),
}
_INT32: Schema = {"type": "integer"}
_INT_LIST: Schema = {"type": "array", "items": _INT32}
ENDPOINT = shown(
    {"name": {"type": "string"}, "host": {"type": "string"}, "port": _INT32, "securityProtocol": _INT32}
)
BROKER = shown(
    {
        "brokerId": _INT32,
        "incarnationId": UUID,
        "internal_uuid": {**UUID, "description": "the original API's name for incarnationId"},
        "brokerEpoch": {"type": "integer", "description": "offset of the broker's registration record"},
        "endPoints": {"type": "array", "items": ENDPOINT},
        "rack": {"type": "string", "nullable": True},
        "fenced": {"type": "boolean"},
        "inControlledShutdown": {"type": "boolean"},
        "status": {"type": "string", "enum": ["FENCED", "UNFENCED", "CONTROLLED_SHUTDOWN"]},
        "brokerHost": {"type": "string", "nullable": True},
        "brokerPort": {"type": "integer", "nullable": True},
        "securityProtocol": {"type": "string", "nullable": True},
        "rackId": {"type": "string", "nullable": True},
    },
    description="A registered broker: Kafka's RegisterBrokerRecord fields plus the original API's.",
)
TOPIC = shown(
    {
        "name": {"type": "string"},
        "topicId": UUID,
        "topicUUID": UUID,
        "partitions": {"type": "array", "items": _INT32, "description": "the topic's partition ids"},
    }
)
PARTITION = shown(
    {
        "partitionId": _INT32,
        "topicId": UUID,
        "topicUUID": UUID,
        "topicName": {"type": "string", "nullable": True},
        "replicas": _INT_LIST,
        "isr": _INT_LIST,
        "removingReplicas": _INT_LIST,
        "addingReplicas": _INT_LIST,
        "leader": _INT32,
        "leaderEpoch": _INT32,
        "partitionEpoch": _INT32,
    }
)
DELETED_TOPIC = shown(
    {**TOPIC["properties"], "deletedPartitions": {"type": "array", "items": PARTITION}},
    description="The deleted topic and the partitions deleted with it.",
)
PRODUCER = shown(
    {"brokerId": _INT32, "producerId": {"type": "integer"}, "brokerEpoch": {"type": "integer"}},
    description="A producer id of a broker (Kafka's ProducerIdsRecord; nextProducerId = producerId).",
)
FEATURE = shown({"name": {"type": "string"}, "featureLevel": _INT32})


def write_result(record: Schema) -> Schema:
    """A write's answer: the record's view plus ``outcome`` and ``offset`` (and a ``message`` when useful)."""
    properties = {**record["properties"], **_WRITE_FIELDS, "message": {"type": "string"}}
    return shown(properties, [*record["required"], "outcome", "offset"], record.get("description", ""))


def listing(name: str, item: Schema) -> Schema:
    return shown({name: {"type": "array", "items": item}})


BROKERS = listing("brokers", BROKER)
TOPICS = listing("topics", TOPIC)
PARTITIONS = listing("partitions", PARTITION)
PRODUCERS = listing("producers", PRODUCER)
CLIENT_METADATA = shown(
    {
        "brokers": {"type": "array", "items": BROKER},
        "topics": {"type": "array", "items": TOPIC},
        "partitions": {"type": "array", "items": PARTITION},
    },
    description="What a Kafka client needs: brokers, topics and partitions.",
)
FETCHED_RECORD = shown(
    {
        "offset": integer(1, INT64_MAX, "the record's log offset"),
        "apiKey": {"type": "integer", "description": "Kafka's metadata record apiKey"},
        "version": {"type": "integer", "description": "the record's version"},
        "type": {"type": "string", "description": "the record's name, e.g. TopicRecord"},
        "record": {"type": "object", "description": "the record's fields under Kafka's names"},
    }
)
SNAPSHOT_ID = shown(
    {
        "endOffset": integer(0, INT64_MAX, "the last log offset the snapshot covers (last included index)"),
        "epoch": integer(0, INT64_MAX, "the epoch (Raft term) of that offset"),
    },
    description="KRaft's SnapshotId: which snapshot, named by where it ends.",
)
FETCH_RESULT = shown(
    {
        "records": {"type": "array", "items": FETCHED_RECORD},
        "highWatermark": {"type": "integer", "description": "the last applied offset"},
        "more": {"type": "boolean", "description": "true when records after the last one returned remain"},
        "snapshotId": {
            **SNAPSHOT_ID,
            "description": "only when the records after the offset were compacted into a snapshot: "
            "records is empty; load this snapshot (GET snapshotPath), then fetch from offset endOffset",
        },
        "snapshotPath": {
            "type": "string",
            "description": "with snapshotId: its first page (GET /metadata_snapshot/?endOffset=&epoch=)",
        },
    },
    ["records", "highWatermark", "more"],
    description="Committed records after the requested offset, in log order, or the snapshot to load first.",
)
SNAPSHOT_RECORD = shown(
    {key: FETCHED_RECORD["properties"][key] for key in ("apiKey", "version", "type", "record")},
    description="A record of the snapshot, as fetched records look but without an offset: the snapshot "
    "as a whole holds at its endOffset.",
)
SNAPSHOT_PAGE = shown(
    {
        "snapshotId": SNAPSHOT_ID,
        "position": integer(0, INT64_MAX, "the position of the first record returned"),
        "records": {"type": "array", "items": SNAPSHOT_RECORD},
        "nextPosition": integer(0, INT64_MAX, "the position to ask for next"),
        "totalRecords": integer(0, INT64_MAX, "how many records the snapshot has"),
        "more": {"type": "boolean", "description": "true while records after this page remain"},
        "nextFetchOffset": integer(
            0,
            INT64_MAX,
            "after the last page, the offset to fetch from (the snapshot's endOffset)",
        ),
    },
    description="Records of a snapshot from position on, in install order: features, brokers (with their "
    "current fenced / controlled-shutdown flags), topics, partitions (as changed so far), producers.",
)
EVENT = shown(
    {
        "seq": integer(1, INT64_MAX),
        "time": {"type": "number", "description": "seconds since the epoch"},
        "kind": {"type": "string", "enum": list(EVENT_KINDS)},
        "detail": {"type": "object"},
    }
)
EVENTS = shown(
    {"events": {"type": "array", "items": EVENT}, "lastSeq": {"type": "integer"}},
    description="This node's events after ``since``, oldest first.",
)
STATUS = shown(
    {
        "nodeId": _INT32,
        "role": {"type": "string", "enum": ["leader", "follower", "candidate"]},
        "term": {"type": "integer"},
        "leaderId": {"type": "integer", "nullable": True},
        "commitIndex": {"type": "integer"},
        "lastApplied": {"type": "integer"},
        "lastLogIndex": {"type": "integer"},
        "durableIndex": {"type": "integer"},
        "votedFor": {"type": "integer", "nullable": True},
    }
)

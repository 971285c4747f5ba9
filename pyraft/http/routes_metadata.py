"""The metadata endpoints of the original PyRaft API, on every node of the quorum.

Writes go through ``MetadataService`` (a follower forwards to the leader and
answers once the record is applied here); reads are linearizable unless
``?consistency=stale``. Answers are JSON objects: a write returns the record's
view with ``outcome`` (created / ok) and the log ``offset``; a rejection returns
``{"error", "message", "offset"}`` with 404, 409 or 422.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pyraft.http import schemas as s
from pyraft.http.operations import (
    CONSISTENCY_PARAM,
    IDEMPOTENCY_PARAM,
    Operation,
    Param,
    Reply,
    body_of,
    consistency,
    error_response,
    idempotency_key,
    path_int,
    query_int,
    query_str,
    required_query_int,
)
from pyraft.metadata.commands import HTTP_STATUS, Outcome
from pyraft.metadata.service import MetadataService
from pyraft.metadata.snapshot_serving import DEFAULT_PAGE, MAX_PAGE, SnapshotId
from pyraft.metadata.store import MetadataStore

UNAVAILABLE = Reply(
    503,
    "No leader or no quorum within the request deadline, or a write whose outcome is unknown "
    "(error outcome_unknown: retry with the same Idempotency-Key). Retry after Retry-After seconds.",
    headers=("Retry-After",),
)
INVALID = Reply(422, "Malformed or mistyped body or parameter, or a record the store refuses as invalid.")
NOT_FOUND = Reply(404, "No such broker, topic, partition or producer.")
CONFLICT = Reply(409, "Conflicts with the current state (another registration, a stale broker epoch, ...).")
READ_REPLIES = (INVALID, UNAVAILABLE)
WRITE_ERRORS = (NOT_FOUND, CONFLICT, INVALID, UNAVAILABLE)
TOPIC_UUID_PARAM = Param(
    "topic_uuid", "query", s.UUID, "the partition's topic, needed when several topics have this partition id"
)
POSITION = s.integer(0, s.INT64_MAX, "a position in the snapshot's records")
PAGE_SIZE = s.integer(1, MAX_PAGE, "records per page")


def outcome_response(outcome: Outcome) -> JSONResponse:
    """The HTTP answer for an applied command's Outcome."""
    status = HTTP_STATUS[outcome.status]
    if status >= 400:
        body: dict[str, Any] = {"error": outcome.status, "message": outcome.message, "offset": outcome.offset}
    else:
        body = {**outcome.body, "outcome": outcome.status, "offset": outcome.offset}
        if outcome.message:
            body["message"] = outcome.message
    return JSONResponse(body, status_code=status)


def found(value: dict[str, Any] | None, what: str) -> JSONResponse:
    if value is None:
        return error_response(404, "not_found", f"no {what}")
    return JSONResponse(value)


def created_replies(record: s.Schema, what: str) -> tuple[Reply, ...]:
    result = s.write_result(record)
    return (
        Reply(201, f"{what} created; the body is the committed record", result),
        Reply(200, "an identical earlier create, or a repeat of an applied Idempotency-Key", result),
        *WRITE_ERRORS,
    )


def changed_replies(record: s.Schema, what: str) -> tuple[Reply, ...]:
    return (Reply(200, what, s.write_result(record)), *WRITE_ERRORS)


def metadata_operations(service: MetadataService) -> list[Operation]:
    """Every metadata endpoint, bound to ``service``."""
    return [*_broker_operations(service), *_topic_operations(service), *_partition_operations(service)]


def _read(service: MetadataService) -> Callable[[Request, Callable[[MetadataStore], Any]], Any]:
    async def read(request: Request, query: Callable[[MetadataStore], Any]) -> Any:
        return await service.read(consistency(request), query)

    return read


# ------------------------------------------------------------------------------------- brokers


def _broker_operations(service: MetadataService) -> list[Operation]:
    read = _read(service)

    async def register(request: Request) -> Response:
        body = await body_of(request, s.REGISTER_BROKER)
        return outcome_response(await service.register_broker(body, idempotency_key(request)))

    async def list_or_one(request: Request) -> Response:
        broker_id = query_int(request, "broker_id", s.BROKER_ID)
        if broker_id is not None:
            return found(await read(request, lambda st: st.broker(broker_id)), f"broker {broker_id}")
        return JSONResponse({"brokers": await read(request, lambda st: st.brokers())})

    async def one(request: Request) -> Response:
        broker_id = path_int(request, "broker_id", s.BROKER_ID)
        return found(await read(request, lambda st: st.broker(broker_id)), f"broker {broker_id}")

    async def delete(request: Request) -> Response:
        broker_id = path_int(request, "broker_id", s.BROKER_ID)
        return outcome_response(await service.delete_broker(broker_id, idempotency_key(request)))

    async def change(request: Request) -> Response:
        body = await body_of(request, s.BROKER_CHANGE)
        return outcome_response(await service.change_broker(body, idempotency_key(request)))

    broker_id_path = Param("broker_id", "path", s.BROKER_ID)
    return [
        Operation(
            "POST",
            "/register_broker/",
            "registerBroker",
            "Register a broker (RegisterBrokerRecord); returns it with internal_uuid and brokerEpoch",
            register,
            created_replies(s.BROKER, "broker"),
            (IDEMPOTENCY_PARAM,),
            s.REGISTER_BROKER,
            "brokers",
            "A second registration of the same brokerId with the same endpoint and rack returns the existing "
            "broker (200); with a different one it is a conflict (409).",
        ),
        Operation(
            "GET",
            "/get_broker/",
            "getBrokers",
            "All brokers, or one with ?broker_id=",
            list_or_one,
            (
                Reply(
                    200, "{brokers: [...]}, or one broker with ?broker_id=", {"anyOf": [s.BROKERS, s.BROKER]}
                ),
                NOT_FOUND,
                *READ_REPLIES,
            ),
            (Param("broker_id", "query", s.BROKER_ID, "return only this broker"), CONSISTENCY_PARAM),
            tag="brokers",
        ),
        Operation(
            "GET",
            "/get_broker/{broker_id}",
            "getBroker",
            "One broker",
            one,
            (Reply(200, "the broker", s.BROKER), NOT_FOUND, *READ_REPLIES),
            (broker_id_path, CONSISTENCY_PARAM),
            tag="brokers",
        ),
        Operation(
            "DELETE",
            "/delete_broker/{broker_id}",
            "deleteBroker",
            "Unregister a broker (UnregisterBrokerRecord); returns the deleted registration",
            delete,
            changed_replies(s.BROKER, "the broker as it was before it was unregistered"),
            (broker_id_path, IDEMPOTENCY_PARAM),
            tag="brokers",
        ),
        Operation(
            "POST",
            "/register_broker_change/",
            "changeBroker",
            "Change a broker's endpoint or status; its epoch grows on re-registration",
            change,
            changed_replies(s.BROKER, "the broker after the change"),
            (IDEMPOTENCY_PARAM,),
            s.BROKER_CHANGE,
            "brokers",
            "brokerStatus INIT/FENCED: fenced=1; ALIVE/UNFENCED: fenced=-1; CONTROLLED_SHUTDOWN: "
            "inControlledShutdown=1 (BrokerRegistrationChangeRecord). A different endpoint, or leaving "
            "controlled shutdown, re-registers the broker instead (RegisterBrokerRecord with a new "
            "incarnationId; the new brokerEpoch is that record's offset).",
        ),
    ]


# -------------------------------------------------------------------------------------- topics


def _topic_operations(service: MetadataService) -> list[Operation]:
    read = _read(service)

    async def register(request: Request) -> Response:
        body = await body_of(request, s.REGISTER_TOPIC)
        return outcome_response(await service.register_topic(body["name"], idempotency_key(request)))

    async def list_or_one(request: Request) -> Response:
        name = query_str(request, "topic_name", {"type": "string"})
        if name is not None:
            return found(await read(request, lambda st: st.topic(name)), f"topic named {name!r}")
        return JSONResponse({"topics": await read(request, lambda st: st.topics())})

    async def one(request: Request) -> Response:
        name = request.path_params["topicName"]
        return found(await read(request, lambda st: st.topic(name)), f"topic named {name!r}")

    async def delete(request: Request) -> Response:
        name = request.path_params["topicName"]
        return outcome_response(await service.delete_topic(name, idempotency_key(request)))

    name_path = Param("topicName", "path", {"type": "string", "minLength": 1}, "the topic's name")
    return [
        Operation(
            "POST",
            "/register_topic/",
            "registerTopic",
            "Create a topic (TopicRecord); returns it with its topicUUID",
            register,
            created_replies(s.TOPIC, "topic"),
            (IDEMPOTENCY_PARAM,),
            s.REGISTER_TOPIC,
            "topics",
            "Creating a topic that exists returns the existing topic (200).",
        ),
        Operation(
            "GET",
            "/get_topic/",
            "getTopics",
            "All topics, or one with ?topic_name=",
            list_or_one,
            (
                Reply(200, "{topics: [...]}, or one topic with ?topic_name=", {"anyOf": [s.TOPICS, s.TOPIC]}),
                NOT_FOUND,
                *READ_REPLIES,
            ),
            (Param("topic_name", "query", {"type": "string"}, "return only this topic"), CONSISTENCY_PARAM),
            tag="topics",
        ),
        Operation(
            "GET",
            "/get_topic/{topicName}",
            "getTopic",
            "One topic by name",
            one,
            (Reply(200, "the topic", s.TOPIC), NOT_FOUND, *READ_REPLIES),
            (name_path, CONSISTENCY_PARAM),
            tag="topics",
        ),
        Operation(
            "DELETE",
            "/delete_topic/{topicName}",
            "deleteTopic",
            "Delete a topic and all its partitions (RemoveTopicRecord)",
            delete,
            changed_replies(s.DELETED_TOPIC, "the deleted topic with deletedPartitions"),
            (name_path, IDEMPOTENCY_PARAM),
            tag="topics",
        ),
    ]


# -------------------------------------------------------------------- partitions and producers


def _partition_operations(service: MetadataService) -> list[Operation]:
    read = _read(service)

    async def register(request: Request) -> Response:
        body = await body_of(request, s.REGISTER_PARTITION)
        return outcome_response(await service.register_partition(body, idempotency_key(request)))

    async def matching(request: Request, partition_id: int | None) -> Response:
        topic_uuid = query_str(request, "topic_uuid", s.UUID)
        found_partitions = await read(request, lambda st: st.partitions(partition_id, topic_uuid))
        if partition_id is not None and not found_partitions:
            return error_response(404, "not_found", f"no partition {partition_id}")
        return JSONResponse({"partitions": found_partitions})

    async def list_partitions(request: Request) -> Response:
        return await matching(request, query_int(request, "partition_id", s.PARTITION_ID))

    async def by_id(request: Request) -> Response:
        return await matching(request, path_int(request, "partitionId", s.PARTITION_ID))

    async def delete(request: Request) -> Response:
        partition_id = path_int(request, "partition_id", s.PARTITION_ID)
        topic_uuid = query_str(request, "topic_uuid", s.UUID)
        return outcome_response(
            await service.delete_partition(partition_id, topic_uuid, idempotency_key(request))
        )

    partitions = Reply(200, "{partitions: [...]}, sorted by (topicUUID, partitionId)", s.PARTITIONS)
    return [
        Operation(
            "POST",
            "/register_partition/",
            "registerPartition",
            "Create a partition of a topic (PartitionRecord)",
            register,
            created_replies(s.PARTITION, "partition"),
            (IDEMPOTENCY_PARAM,),
            s.REGISTER_PARTITION,
            "partitions",
            "The topic must exist (404), the replicas must be registered brokers and ISR, "
            "removingReplicas and addingReplicas within replicas, leader in the ISR or -1 (422); the same "
            "partitionId with different fields in that topic is a conflict (409), with the same fields it "
            "returns the existing one (200).",
        ),
        Operation(
            "GET",
            "/get_partition/",
            "getPartitions",
            "All partitions, or those with ?partition_id= (and/or ?topic_uuid=)",
            list_partitions,
            (partitions, NOT_FOUND, *READ_REPLIES),
            (Param("partition_id", "query", s.PARTITION_ID), TOPIC_UUID_PARAM, CONSISTENCY_PARAM),
            tag="partitions",
        ),
        Operation(
            "GET",
            "/get_partition/{partitionId}",
            "getPartition",
            "Every partition with this id, in whichever topics have one",
            by_id,
            (partitions, NOT_FOUND, *READ_REPLIES),
            (Param("partitionId", "path", s.PARTITION_ID), TOPIC_UUID_PARAM, CONSISTENCY_PARAM),
            tag="partitions",
        ),
        Operation(
            "DELETE",
            "/delete_partition/{partition_id}",
            "deletePartition",
            "Delete one partition (pyraft's RemovePartitionRecord)",
            delete,
            (
                Reply(200, "the deleted partition", s.write_result(s.PARTITION)),
                Reply(404, "no such partition"),
                Reply(
                    409,
                    "error ambiguous_partition: several topics have this partition id (their topicUUIDs are "
                    "listed); repeat with ?topic_uuid=",
                ),
                INVALID,
                UNAVAILABLE,
            ),
            (Param("partition_id", "path", s.PARTITION_ID), TOPIC_UUID_PARAM, IDEMPOTENCY_PARAM),
            tag="partitions",
            description="A partition's identity is (topicUUID, partitionId). When only one topic has the "
            "partition id it is deleted; when several do, nothing is deleted and the answer is 409 "
            "ambiguous_partition naming them.",
        ),
        *_producer_operations(service),
        *_fetch_operations(service),
    ]


def _producer_operations(service: MetadataService) -> list[Operation]:
    read = _read(service)

    async def register(request: Request) -> Response:
        body = await body_of(request, s.REGISTER_PRODUCER)
        return outcome_response(await service.register_producer(body, idempotency_key(request)))

    async def list_all(request: Request) -> Response:
        return JSONResponse({"producers": await read(request, lambda st: st.producers())})

    async def one(request: Request) -> Response:
        body = await body_of(request, s.GET_PRODUCER)
        broker_id, producer_id = body["brokerId"], body["producerId"]
        value = await read(request, lambda st: st.producer(broker_id, producer_id))
        return found(value, f"producer {producer_id} of broker {broker_id}")

    return [
        Operation(
            "POST",
            "/register_producer/",
            "registerProducer",
            "Register a producer id for a broker (ProducerIdsRecord)",
            register,
            created_replies(s.PRODUCER, "producer"),
            (IDEMPOTENCY_PARAM,),
            s.REGISTER_PRODUCER,
            "producers",
            "The broker must be registered (404) and brokerEpoch must be its current epoch (409); a "
            "producerId already given out is a conflict (409) unless the request is identical (200).",
        ),
        Operation(
            "GET",
            "/get_producer/",
            "getProducers",
            "All producers",
            list_all,
            (Reply(200, "{producers: [...]}", s.PRODUCERS), *READ_REPLIES),
            (CONSISTENCY_PARAM,),
            tag="producers",
        ),
        Operation(
            "POST",
            "/get_producer/",
            "getProducer",
            "One producer, named by {brokerId, producerId} in the body (a read: nothing is written)",
            one,
            (Reply(200, "the producer", s.PRODUCER), NOT_FOUND, *READ_REPLIES),
            (CONSISTENCY_PARAM,),
            s.GET_PRODUCER,
            "producers",
        ),
    ]


def _fetch_operations(service: MetadataService) -> list[Operation]:
    read = _read(service)

    async def client(request: Request) -> Response:
        return JSONResponse(await read(request, lambda st: st.client_metadata()))

    async def fetch(request: Request) -> Response:
        body = await body_of(request, s.METADATA_FETCH)
        answer = await service.fetch(consistency(request), body["offset"], body.get("maxRecords"))
        if "snapshotId" in answer:
            answer["snapshotPath"] = snapshot_path(answer["snapshotId"])
        return JSONResponse(answer)

    return [
        Operation(
            "GET",
            "/metadata_fetch_client/",
            "fetchClientMetadata",
            "Brokers, topics and partitions, for clients",
            client,
            (Reply(200, "the cluster's metadata", s.CLIENT_METADATA), *READ_REPLIES),
            (CONSISTENCY_PARAM,),
            tag="fetch",
        ),
        Operation(
            "POST",
            "/metadata_fetch/",
            "fetchRecords",
            "KRaft-style fetch: the committed records after an offset, in log order, and the high watermark",
            fetch,
            (
                Reply(200, "records after the offset, or the snapshot to load first", s.FETCH_RESULT),
                INVALID,
                Reply(
                    503,
                    UNAVAILABLE.description + " Also error snapshot_unavailable: the records after the "
                    "offset are compacted and no snapshot covering them can be named yet.",
                    headers=UNAVAILABLE.headers,
                ),
            ),
            (CONSISTENCY_PARAM,),
            s.METADATA_FETCH,
            "fetch",
            "Page through the log by passing the last offset you received; replaying every record in order "
            "rebuilds the store exactly. Once a snapshot has replaced the log up to some offset, a fetch "
            "from below it answers, as KRaft's Fetch does, with no records, more: true and snapshotId "
            "{endOffset, epoch}: load that snapshot from snapshotPath (GET /metadata_snapshot/, paged) into "
            "an empty store, then fetch on from offset endOffset.",
        ),
        _snapshot_operation(service),
    ]


def snapshot_path(snapshot_id: dict[str, int]) -> str:
    """Where the first page of the snapshot ``snapshot_id`` (its JSON form) is served."""
    return f"/metadata_snapshot/?endOffset={snapshot_id['endOffset']}&epoch={snapshot_id['epoch']}&position=0"


def _snapshot_operation(service: MetadataService) -> Operation:
    async def page(request: Request) -> Response:
        wanted = SnapshotId(
            required_query_int(request, "endOffset", s.SNAPSHOT_ID["properties"]["endOffset"]),
            required_query_int(request, "epoch", s.SNAPSHOT_ID["properties"]["epoch"]),
        )
        position = query_int(request, "position", POSITION, 0)
        max_records = query_int(request, "maxRecords", PAGE_SIZE, DEFAULT_PAGE)
        assert position is not None and max_records is not None  # they have defaults
        return JSONResponse(await service.snapshot_page(wanted, position, max_records))

    return Operation(
        "GET",
        "/metadata_snapshot/",
        "fetchSnapshot",
        "KRaft-style FetchSnapshot: a page of the records of the snapshot a fetch named",
        page,
        (
            Reply(200, "records from position on", s.SNAPSHOT_PAGE),
            Reply(
                404,
                "error snapshot_not_found: this node no longer serves that snapshot (a newer one replaced "
                "it); discard what was loaded from it and fetch again from offset 0. Error no_snapshot: "
                "this node has no snapshot.",
            ),
            Reply(422, "A missing or malformed parameter, or a position past the snapshot's last record."),
            Reply(
                503,
                "error snapshot_unavailable: the snapshot's bytes cannot be read as one; retry later.",
                headers=UNAVAILABLE.headers,
            ),
        ),
        (
            Param("endOffset", "query", s.SNAPSHOT_ID["properties"]["endOffset"], "from snapshotId", True),
            Param("epoch", "query", s.SNAPSHOT_ID["properties"]["epoch"], "from snapshotId", True),
            Param("position", "query", POSITION, "the first record to return (default 0)"),
            Param("maxRecords", "query", PAGE_SIZE, f"at most this many records (default {DEFAULT_PAGE})"),
        ),
        tag="fetch",
        description="Pages through the snapshot by position (pass nextPosition while more is true), in "
        "install order, so applying each record to an empty store as it arrives rebuilds the state at "
        "endOffset. Then continue with /metadata_fetch/ from offset endOffset (nextFetchOffset). Ask the "
        "node that named the snapshot: each node takes its own. The first page of a new snapshot may take "
        "seconds (it is decoded once, then kept).",
    )

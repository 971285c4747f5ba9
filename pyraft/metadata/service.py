"""The in-process seam between the HTTP API and the Raft node that keeps the metadata.

Writes: build a record on *this* node (fresh ``incarnationId`` / ``topicUUID``
UUIDs are generated here, carried in the record, so applying it stays
deterministic everywhere), wrap it with the client's idempotency key, propose
it, and decode the store's Outcome. Reads: linearizable by default (ReadIndex
through the leader, then the local store), or ``stale`` straight from the local
store. Every request runs under one deadline, so without a leader or a quorum a
caller gets a ServiceError within bounded time instead of hanging.

Failure semantics, which the HTTP layer turns into 503 + ``Retry-After``:

- ``no_leader`` / ``not_applied``: the engine refused or dropped the request
  before it could be applied (NoLeader, NotLeader, RequestLost): nothing changed.
- ``outcome_unknown``: a proposal was handed to the engine and then the leader
  changed or the deadline passed (OutcomeUnknown, timeout): it may or may not be
  applied. A retry with the same ``Idempotency-Key`` is safe, because the store
  remembers applied keys and answers a repeat with the first outcome.
- ``timeout``: a read (or a write's preparatory read) found no quorum in time;
  nothing changed.

Fetching the record log (``fetch``) from below the point the store compacted
it to answers with the id of the node's latest snapshot, which ``snapshot_page``
then serves in pages (snapshot_serving); the snapshot bytes come from the node
through the ``read_snapshot`` source it is given.

Test-only: ``PYRAFT_UNSAFE_ACK_BEFORE_COMMIT=1`` in a node's environment breaks all of
this on purpose (writes answered before they commit), for the fault suite's self-test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from pyraft.actors.node import OutcomeUnknown, RaftNode
from pyraft.core.errors import NotLeader, RaftError, RequestLost, TransferInProgress
from pyraft.core.raft import Role
from pyraft.metadata import commands as build
from pyraft.metadata.commands import HTTP_STATUS, MetadataCommand, Outcome, decode_outcome, encode_command
from pyraft.metadata.events import API_WRITE, EventLog
from pyraft.metadata.records import Record, RecordError
from pyraft.metadata.snapshot_serving import (
    NoSnapshot,
    PositionOutOfRange,
    SnapshotError,
    SnapshotId,
    SnapshotNotFound,
    SnapshotPages,
    SnapshotSource,
)
from pyraft.metadata.store import MetadataStore

log = logging.getLogger("pyraft.metadata")

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 1
STALE = "stale"
LINEARIZABLE = "linearizable"
CONSISTENCY_LEVELS = (LINEARIZABLE, STALE)
BOOTSTRAP_KEY = "pyraft:bootstrap:metadata.version"
# A UUID no topic is ever given (topic ids are uuid4): a keyed retry whose target is gone still
# goes through the log, so the store can answer it with the first attempt's remembered outcome.
NIL_UUID = "00000000-0000-0000-0000-000000000000"


# TEST-ONLY, UNSAFE: when this environment variable is "1", every write is answered with a
# made-up success *before* it is committed (its proposal runs on in the background, and may
# fail or be lost). It exists so the fault-injection suite (pyraft.testing) can prove that
# its checkers catch acknowledged writes that are lost or not linearizable. Never set it
# anywhere else: a node in this mode lies to its clients. Logged loudly at startup.
UNSAFE_ACK_ENV = "PYRAFT_UNSAFE_ACK_BEFORE_COMMIT"


def unsafe_ack_before_commit() -> bool:
    return os.environ.get(UNSAFE_ACK_ENV) == "1"


class ServiceError(Exception):
    """A request the service could not carry out; ``status`` is the HTTP status it maps to."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.detail = detail or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.detail}


def unavailable(code: str, message: str, **detail: Any) -> ServiceError:
    """503: no leader, no quorum, or an unknown outcome; the client should retry after a pause."""
    return ServiceError(503, code, message, retry_after=RETRY_AFTER_SECONDS, detail=detail)


class MetadataService:
    def __init__(
        self,
        node: RaftNode,
        store: MetadataStore,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        events: EventLog | None = None,
        read_snapshot: SnapshotSource | None = None,
    ) -> None:
        """``read_snapshot`` returns the node's latest snapshot (meta and ``MetadataStore.capture``
        payload) or None; without it, fetches below the compacted log cannot be served."""
        self.node = node
        self.store = store
        self.timeout = timeout
        self.events = events
        self.snapshots = SnapshotPages(read_snapshot)
        self.unsafe_ack = unsafe_ack_before_commit()
        if self.unsafe_ack:
            log.critical(
                "node %d: %s=1: TEST-ONLY BROKEN MODE, writes are acknowledged BEFORE they are "
                "committed and may be lost; never run this outside the fault-injection suite",
                node.node_id,
                UNSAFE_ACK_ENV,
            )

    # ------------------------------------------------------------------ reads

    async def read(self, consistency: str, query: Callable[[MetadataStore], T]) -> T:
        """``query`` the store after a ReadIndex barrier (linearizable) or right away (stale)."""
        if consistency not in CONSISTENCY_LEVELS:
            raise ServiceError(
                422, "invalid_value", f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}"
            )
        if consistency == LINEARIZABLE:
            with self._deadline(proposed=False):
                await self._barrier()
        return query(self.store)

    async def fetch(self, consistency: str, offset: int, max_records: int | None) -> dict[str, Any]:
        """The store's ``fetch`` read; below its compacted log, the id of the snapshot to load instead.

        The store knows where it compacted to, the node's snapshot knows the
        epoch: the answer names the latest snapshot, which covers at least that
        far, as ``snapshotId`` {endOffset, epoch}."""
        answer = await self.read(consistency, lambda st: st.fetch(offset, max_records))
        compacted_to = answer.pop("snapshotEndOffset", None)
        if compacted_to is None:
            return answer
        try:
            snapshot_id = await self.snapshots.covering(compacted_to)
        except SnapshotError as exc:
            raise _snapshot_error(exc) from exc
        return {**answer, "snapshotId": snapshot_id.to_json()}

    async def snapshot_page(self, wanted: SnapshotId, position: int, max_records: int) -> dict[str, Any]:
        """A page of the latest snapshot (snapshot_serving); no read barrier: a snapshot never changes."""
        try:
            return await self.snapshots.page(wanted, position, max_records, self.store.snapshot_end_offset)
        except SnapshotError as exc:
            raise _snapshot_error(exc) from exc

    async def _barrier(self) -> None:
        try:
            await self.node.read_barrier()
        except RaftError as exc:
            raise _engine_error(exc, proposed=False) from exc

    # ----------------------------------------------------------------- writes

    async def register_broker(self, body: dict[str, Any], key: str | None) -> Outcome:
        record = _built(
            lambda: build.register_broker(
                body["brokerId"],
                body["brokerHost"],
                body["brokerPort"],
                body["securityProtocol"],
                body.get("rackId"),
            )
        )
        return await self.write(record, key, ("register_broker", body))

    async def change_broker(self, body: dict[str, Any], key: str | None) -> Outcome:
        """Re-register or change the status of a broker; needs its current view to pick which."""
        with self._deadline(proposed=False):
            await self._barrier()
        current = self.store.broker(body["brokerId"])
        if current is None:
            if key is None:
                raise ServiceError(404, "not_found", f"broker {body['brokerId']} is not registered")
            # Still through the log: a retry of an applied change gets its remembered outcome.
            record: Record = _built(
                lambda: build.broker_status_change(body["brokerId"], -1, body["brokerStatus"])
            )
        else:
            record = _built(
                lambda: build.change_broker(
                    current,
                    body["brokerHost"],
                    body["brokerPort"],
                    body["securityProtocol"],
                    body["brokerStatus"],
                )
            )
        return await self.write(record, key, ("change_broker", body))

    async def delete_broker(self, broker_id: int, key: str | None) -> Outcome:
        return await self.write(
            _built(lambda: build.unregister_broker(broker_id)), key, ("delete_broker", broker_id)
        )

    async def register_topic(self, name: str, key: str | None) -> Outcome:
        return await self.write(_built(lambda: build.create_topic(name)), key, ("register_topic", name))

    async def delete_topic(self, name: str, key: str | None) -> Outcome:
        """Remove a topic (and so its partitions) by name: resolved to its topicId first."""
        with self._deadline(proposed=False):
            await self._barrier()
        topic = self.store.topic(name)
        if topic is None and key is None:
            raise ServiceError(404, "not_found", f"no topic named {name!r}")
        topic_id = topic["topicId"] if topic is not None else NIL_UUID
        return await self.write(_built(lambda: build.remove_topic(topic_id)), key, ("delete_topic", name))

    async def register_partition(self, body: dict[str, Any], key: str | None) -> Outcome:
        record = _built(
            lambda: build.create_partition(
                body["topicUUID"],
                body["partitionId"],
                body["replicas"],
                body.get("ISR"),
                body.get("removingReplicas", ()),
                body.get("addingReplicas", ()),
                leader=body.get("leader", -1),
                partition_epoch=body.get("partitionEpoch", 0),
            )
        )
        return await self.write(record, key, ("register_partition", body))

    async def delete_partition(self, partition_id: int, topic_uuid: str | None, key: str | None) -> Outcome:
        """Remove partition ``partition_id``; when several topics have one, ``topic_uuid`` must pick it."""
        if topic_uuid is None:
            topic_uuid = await self._only_topic_with(partition_id, key)
        chosen = topic_uuid
        return await self.write(
            _built(lambda: build.remove_partition(chosen, partition_id)),
            key,
            ("delete_partition", partition_id, topic_uuid),
        )

    async def _only_topic_with(self, partition_id: int, key: str | None) -> str:
        with self._deadline(proposed=False):
            await self._barrier()
        owners: list[str] = sorted({p["topicId"] for p in self.store.partitions(partition_id=partition_id)})
        if len(owners) > 1:
            raise ServiceError(
                409,
                "ambiguous_partition",
                f"partition {partition_id} exists in {len(owners)} topics; "
                "name one with ?topic_uuid= (a partition's identity is its topic and its id)",
                detail={"topicUUIDs": owners},
            )
        if not owners:
            if key is None:
                raise ServiceError(404, "not_found", f"no topic has a partition {partition_id}")
            return NIL_UUID
        return owners[0]

    async def register_producer(self, body: dict[str, Any], key: str | None) -> Outcome:
        record = _built(
            lambda: build.register_producer(body["brokerId"], body["producerId"], body["brokerEpoch"])
        )
        return await self.write(record, key, ("register_producer", body))

    async def write(self, record: Record, key: str | None, request: tuple[Any, ...] = ()) -> Outcome:
        """Propose ``record`` under the request deadline and return the store's decision.

        The key the store remembers is the client's key scoped by ``request`` (the
        operation and the client's inputs): a retry of the same request finds the
        first outcome, while the same key sent with a different request is a
        different request, never answered with another operation's result."""
        data = encode_command(MetadataCommand(record, scoped_key(key, request)))
        if self.unsafe_ack:
            return self._ack_before_commit(record, data)
        with self._deadline(proposed=True, key=key):
            try:
                applied = await self.node.propose(data)
            except RaftError as exc:
                raise _engine_error(exc, proposed=True, key=key) from exc
        outcome = decode_outcome(applied.result)
        self._note_write(record, outcome, key)
        return outcome

    def _ack_before_commit(self, record: Record, data: bytes) -> Outcome:
        """The broken mode (see ``UNSAFE_ACK_ENV``): propose in the background, claim success now."""

        async def propose_in_background() -> None:
            try:
                with trio.move_on_after(self.timeout):
                    await self.node.propose(data)
            except Exception as exc:  # a system task must not raise; the lie is already told
                log.warning("unsafe early-acknowledged write did not commit: %r", exc)

        trio.lowlevel.spawn_system_task(propose_in_background)
        return Outcome(build.OK, {**record.to_json(), "unsafeAckBeforeCommit": True}, 0)

    def _note_write(self, record: Record, outcome: Outcome, key: str | None) -> None:
        if self.events is not None:
            self.events.record(
                API_WRITE,
                record=record.NAME,
                outcome=outcome.status,
                offset=outcome.offset,
                idempotencyKey=key,
                message=outcome.message,
            )

    # -------------------------------------------------------------- deadline

    @contextmanager
    def _deadline(self, *, proposed: bool, key: str | None = None) -> Iterator[None]:
        """``fail_after`` whose timeout becomes the right 503 for what was in flight."""
        try:
            with trio.fail_after(self.timeout):
                yield
        except trio.TooSlowError:
            if proposed:
                raise _unknown(f"no answer within {self.timeout:g} s", key) from None
            raise unavailable(
                "timeout", f"no leader with a quorum answered within {self.timeout:g} s; nothing was changed"
            ) from None

    # ------------------------------------------------------------- bootstrap

    async def bootstrap_features(self) -> None:
        """Whenever this node becomes leader of a log without metadata.version, propose it once.

        The record goes in with a fixed idempotency key and the store keeps the
        first level it sees, so two leaders racing (an old one not yet deposed)
        still yield exactly one effective FeatureLevelRecord."""
        while True:
            if self.node.core.role is Role.LEADER:
                await self._bootstrap_once()
            await self.node.role_changed.wait()

    async def _bootstrap_once(self) -> None:
        try:
            with trio.fail_after(self.timeout):
                await self.node.read_barrier()  # apply everything committed before deciding
                if self.store.has_feature_level():
                    return
                applied = await self.node.propose(
                    encode_command(MetadataCommand(build.metadata_version(), BOOTSTRAP_KEY))
                )
            log.info("node %d: bootstrap %s", self.node.node_id, decode_outcome(applied.result))
        except (RaftError, trio.TooSlowError) as exc:
            # Lost leadership meanwhile; whoever leads next tries again.
            log.info("node %d: metadata.version bootstrap did not finish: %r", self.node.node_id, exc)


def _engine_error(exc: RaftError, *, proposed: bool, key: str | None = None) -> ServiceError:
    """Map an engine error to a 503, saying whether the request may have been applied."""
    if isinstance(exc, OutcomeUnknown):
        if proposed:
            return _unknown("the leader changed while the write was in flight", key)
        return unavailable(
            "leader_changed", "the leader changed before the read finished; nothing was changed"
        )
    if isinstance(exc, NotLeader):
        where = f"node {exc.leader_id} leads" if exc.leader_id is not None else "no leader is known"
        return unavailable("no_leader", f"{where}; nothing was changed", leaderId=exc.leader_id)
    if isinstance(exc, TransferInProgress):
        return unavailable("no_leader", "leadership is being handed over; nothing was changed")
    if isinstance(exc, RequestLost):
        return unavailable("not_applied", f"the request was dropped and not applied: {exc}")
    return unavailable("unavailable", f"{type(exc).__name__}: {exc}")


def _snapshot_error(exc: SnapshotError) -> ServiceError:
    """404 when there is no such snapshot (start over from offset 0), 422 for a bad position, else 503."""
    if isinstance(exc, NoSnapshot):
        return ServiceError(404, "no_snapshot", str(exc))
    if isinstance(exc, SnapshotNotFound):
        return ServiceError(404, "snapshot_not_found", str(exc))
    if isinstance(exc, PositionOutOfRange):
        return ServiceError(422, "out_of_range", str(exc))
    return unavailable("snapshot_unavailable", str(exc))


def _unknown(why: str, key: str | None) -> ServiceError:
    advice = (
        "retrying with the same Idempotency-Key is safe: it is applied at most once"
        if key is not None
        else "it may or may not have been applied; read before retrying, or send an Idempotency-Key"
    )
    return unavailable("outcome_unknown", f"{why}: the outcome is unknown; {advice}", idempotencyKey=key)


def scoped_key(key: str | None, request: tuple[Any, ...]) -> str | None:
    """``key`` bound to one request: ``<operation>:<digest of its inputs>:<key>``."""
    if key is None:
        return None
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{request[0] if request else 'write'}:{digest}:{key}"


def _built(make: Callable[[], T]) -> T:
    """Run a record builder; a value the record cannot hold (RecordError) is the client's 422."""
    try:
        return make()
    except RecordError as exc:
        raise ServiceError(422, "invalid", str(exc)) from exc


def outcome_status(outcome: Outcome) -> int:
    """The HTTP status for an Outcome (201 created, 200 ok, 404, 409, 422)."""
    return HTTP_STATUS[outcome.status]

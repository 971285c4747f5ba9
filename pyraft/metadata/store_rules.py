"""Apply-time validation: a command's record against the committed state → a Decision.

Pure functions of (state, index, record), so every node decides the same. A
Decision either carries the effective record to install at ``index`` (the
proposer's record, with what only the log knows filled in: a broker's epoch is
its registration offset) or none, when nothing changes (a rejection, or an
identical repeat of a create, which answers "ok" with the existing record).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pyraft.metadata.commands import CONFLICT, CREATED, INVALID, METADATA_VERSION, NOT_FOUND, OK
from pyraft.metadata.records import (
    BrokerRegistrationChangeRecord,
    FeatureLevelRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    Record,
    RegisterBrokerRecord,
    RemovePartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
    replacer,
)
from pyraft.metadata.store_state import MetadataState, changed_partition

TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")  # Kafka's legal topic names

_replace_registration = replacer(RegisterBrokerRecord)
_replace_unregistration = replacer(UnregisterBrokerRecord)


class Decision(NamedTuple):
    """What applying a record does: install ``record`` (or nothing) and answer ``status``.

    ``body`` None means "the view of what was installed", computed after the install.
    A NamedTuple rather than a frozen dataclass: one is built per applied command, and
    the dataclass's ``__init__`` cost more than twice as much (0.8 us against 0.3)."""

    status: str
    record: Record | None = None
    body: dict[str, Any] | None = None
    message: str = ""


def reject(status: str, message: str) -> Decision:
    return Decision(status, None, {}, message)


def decide(state: MetadataState, index: int, record: Record) -> Decision:
    """Validate ``record`` against ``state`` as the command committed at ``index``."""
    return _RULES[type(record)](state, index, record)


# --- brokers -----------------------------------------------------------------------------------
def _register(state: MetadataState, index: int, rec: Record) -> Decision:
    """First registration (expected epoch -1) or re-registration with a new incarnation (current epoch)."""
    assert isinstance(rec, RegisterBrokerRecord)
    problem = _registration_problem(rec)
    if problem:
        return reject(INVALID, problem)
    old = state.brokers.get(rec.broker_id)
    if rec.broker_epoch == -1:
        if old is None:
            return Decision(CREATED, _replace_registration(rec, broker_epoch=index))
        if old.end_points == rec.end_points and old.rack == rec.rack:
            return Decision(OK, None, state.broker_view(old), "broker already registered identically")
        return reject(
            CONFLICT, f"broker {rec.broker_id} is already registered with a different endpoint or rack"
        )
    if old is None:
        return reject(NOT_FOUND, f"broker {rec.broker_id} is not registered, cannot re-register it")
    if old.broker_epoch != rec.broker_epoch:
        return _stale(rec.broker_id, rec.broker_epoch, old.broker_epoch)
    if old.incarnation_id == rec.incarnation_id:
        return reject(CONFLICT, f"re-registration of broker {rec.broker_id} needs a new incarnationId")
    return Decision(OK, _replace_registration(rec, broker_epoch=index))


def _registration_problem(rec: RegisterBrokerRecord) -> str:
    if rec.broker_id < 0:
        return f"brokerId must be >= 0, got {rec.broker_id}"
    if rec.broker_epoch < -1:
        return f"brokerEpoch of a registration is the expected previous one (>= -1), got {rec.broker_epoch}"
    endpoints = rec.end_points
    if not endpoints:
        return "a broker needs at least one endpoint"
    if len(endpoints) > 1:  # one name is unique: skip the list and set most registrations would make
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            return f"endpoint names must be unique, got {names}"
    for e in endpoints:  # a loop rather than any(generator): this runs for every registration
        if not e.host or e.port == 0 or not e.name:
            return "every endpoint needs a name, a host and a port in 1..65535"
    if rec.rack == "":
        return "rack must be null or a non-empty string"
    return ""


def _stale(broker_id: int, given: int, current: int) -> Decision:
    return reject(CONFLICT, f"stale brokerEpoch {given}: broker {broker_id} is at epoch {current}")


def _broker_change(state: MetadataState, index: int, rec: Record) -> Decision:
    assert isinstance(rec, BrokerRegistrationChangeRecord)
    if rec.fenced not in (-1, 0, 1) or rec.in_controlled_shutdown not in (0, 1):
        return reject(INVALID, "fenced must be -1, 0 or 1 and inControlledShutdown 0 or 1")
    old = state.brokers.get(rec.broker_id)
    if old is None:
        return reject(NOT_FOUND, f"broker {rec.broker_id} is not registered")
    if old.broker_epoch != rec.broker_epoch:
        return _stale(rec.broker_id, rec.broker_epoch, old.broker_epoch)
    return Decision(OK, rec)


def _unregister(state: MetadataState, index: int, rec: Record) -> Decision:
    """``brokerEpoch`` -1 unregisters whatever is current; the logged record carries the real epoch."""
    assert isinstance(rec, UnregisterBrokerRecord)
    old = state.brokers.get(rec.broker_id)
    if old is None:
        return reject(NOT_FOUND, f"broker {rec.broker_id} is not registered")
    if rec.broker_epoch not in (-1, old.broker_epoch):
        return _stale(rec.broker_id, rec.broker_epoch, old.broker_epoch)
    return Decision(OK, _replace_unregistration(rec, broker_epoch=old.broker_epoch), state.broker_view(old))


def _producer(state: MetadataState, index: int, rec: Record) -> Decision:
    """A producer id block for a live registration; ids are never handed out twice."""
    assert isinstance(rec, ProducerIdsRecord)
    if rec.next_producer_id < 0:
        return reject(INVALID, f"producerId must be >= 0, got {rec.next_producer_id}")
    broker = state.brokers.get(rec.broker_id)
    if broker is None:
        return reject(NOT_FOUND, f"broker {rec.broker_id} is not registered")
    if broker.broker_epoch != rec.broker_epoch:
        return _stale(rec.broker_id, rec.broker_epoch, broker.broker_epoch)
    existing = state.producers.get((rec.broker_id, rec.next_producer_id))
    if existing == rec:
        return Decision(OK, None, state.producer_view(rec), "producer already registered identically")
    if any(pid == rec.next_producer_id for (_, pid) in state.producers):
        return reject(CONFLICT, f"producerId {rec.next_producer_id} is already registered")
    return Decision(CREATED, rec)


# --- topics and partitions -------------------------------------------------------------------------
def _topic(state: MetadataState, index: int, rec: Record) -> Decision:
    assert isinstance(rec, TopicRecord)
    if not TOPIC_NAME.fullmatch(rec.name) or rec.name in (".", ".."):
        return reject(INVALID, f"illegal topic name {rec.name!r}: 1-249 of [a-zA-Z0-9._-], not '.' or '..'")
    existing = state.topic_ids.get(rec.name)
    if existing is not None:
        return Decision(OK, None, state.topic_view(state.topics[existing]), "topic already exists")
    if rec.topic_id in state.topics:
        return reject(CONFLICT, f"topicId {rec.topic_id} is already used by another topic")
    return Decision(CREATED, rec)


def _remove_topic(state: MetadataState, index: int, rec: Record) -> Decision:
    """The body is the deleted topic with its deleted partitions (``deletedPartitions``)."""
    assert isinstance(rec, RemoveTopicRecord)
    topic = state.topics.get(rec.topic_id)
    if topic is None:
        return reject(NOT_FOUND, f"no topic with topicId {rec.topic_id}")
    body = state.topic_view(topic)
    body["deletedPartitions"] = [state.partition_view(p) for p in state.topic_partitions(rec.topic_id)]
    return Decision(OK, rec, body)


def _partition(state: MetadataState, index: int, rec: Record) -> Decision:
    assert isinstance(rec, PartitionRecord)
    problem = partition_problem(rec)
    if problem:
        return reject(INVALID, problem)
    if rec.topic_id not in state.topics:
        return reject(NOT_FOUND, f"no topic with topicId {rec.topic_id}")
    existing = state.partitions.find((rec.topic_id, rec.partition_id))
    if existing == rec:
        return Decision(OK, None, state.partition_view(rec), "partition already exists identically")
    if existing is not None:
        return reject(CONFLICT, f"partition {rec.partition_id} of topic {rec.topic_id} already exists")
    unknown = sorted(set(rec.replicas) - set(state.brokers))
    if unknown:
        return reject(INVALID, f"replicas {unknown} are not registered brokers")
    return Decision(CREATED, rec)


def _partition_change(state: MetadataState, index: int, rec: Record) -> Decision:
    """Validated on the resulting partition; only newly added replicas must be registered brokers."""
    assert isinstance(rec, PartitionChangeRecord)
    if rec.leader < -2:
        return reject(INVALID, f"leader must be -2 (unchanged), -1 (none) or a broker id, got {rec.leader}")
    old = _find_partition(state, rec.topic_id, rec.partition_id)
    if isinstance(old, Decision):
        return old
    new = changed_partition(old, rec)
    problem = partition_problem(new)
    if problem:
        return reject(INVALID, problem)
    unknown = sorted(set(new.replicas) - set(old.replicas) - set(state.brokers))
    if unknown:
        return reject(INVALID, f"replicas {unknown} are not registered brokers")
    return Decision(OK, rec)


def _remove_partition(state: MetadataState, index: int, rec: Record) -> Decision:
    assert isinstance(rec, RemovePartitionRecord)
    old = _find_partition(state, rec.topic_id, rec.partition_id)
    if isinstance(old, Decision):
        return old
    return Decision(OK, rec, state.partition_view(old))


def _find_partition(state: MetadataState, topic_id: str, partition_id: int) -> PartitionRecord | Decision:
    if topic_id not in state.topics:
        return reject(NOT_FOUND, f"no topic with topicId {topic_id}")
    found = state.partitions.find((topic_id, partition_id))
    if found is None:
        return reject(NOT_FOUND, f"topic {topic_id} has no partition {partition_id}")
    return found


def partition_problem(p: PartitionRecord) -> str:
    """Kafka's shape rules for a partition; "" when it is well-formed."""
    if p.partition_id < 0:
        return f"partitionId must be >= 0, got {p.partition_id}"
    if not p.replicas:
        return "a partition needs at least one replica"
    lists = {"replicas": p.replicas, "isr": p.isr, "removingReplicas": p.removing_replicas}
    lists["addingReplicas"] = p.adding_replicas
    dup = [name for name, ids in lists.items() if _has_duplicates(ids)]
    if dup:
        return f"duplicate broker ids in {', '.join(dup)}"
    outside = [name for name, ids in lists.items() if not set(ids) <= set(p.replicas)]
    if outside:
        return f"{', '.join(outside)} must be within replicas {list(p.replicas)}"
    if set(p.removing_replicas) & set(p.adding_replicas):
        return "a replica cannot be both removing and adding"
    if p.leader != -1 and p.leader not in p.isr:
        return f"leader {p.leader} must be in the ISR {list(p.isr)} or -1"
    if p.leader_epoch < 0 or p.partition_epoch < 0:
        return "leaderEpoch and partitionEpoch must be >= 0"
    return ""


def _has_duplicates(ids: Sequence[int]) -> bool:
    return len(set(ids)) != len(ids)


# --- features and no-ops -------------------------------------------------------------------------
def _feature(state: MetadataState, index: int, rec: Record) -> Decision:
    """New level: created; same: ok, nothing logged; higher: ok (upgrade); lower: conflict (no downgrades)."""
    assert isinstance(rec, FeatureLevelRecord)
    lowest = 1 if rec.name == METADATA_VERSION else 0
    if not rec.name or rec.feature_level < lowest:
        return reject(INVALID, f"feature {rec.name!r} needs a name and a level >= {lowest}")
    current = state.features.get(rec.name)
    body = rec.to_json()
    if current is None:
        return Decision(CREATED, rec, body)
    if current == rec.feature_level:
        return Decision(OK, None, body, "feature level already set")
    if rec.feature_level < current:
        return reject(CONFLICT, f"{rec.name} is at {current}; downgrades are not supported")
    return Decision(OK, rec, body)


def _noop(state: MetadataState, index: int, rec: Record) -> Decision:
    return Decision(OK, rec, {})


_RULES: dict[type[Record], Callable[[MetadataState, int, Record], Decision]] = {
    RegisterBrokerRecord: _register,
    UnregisterBrokerRecord: _unregister,
    BrokerRegistrationChangeRecord: _broker_change,
    TopicRecord: _topic,
    RemoveTopicRecord: _remove_topic,
    PartitionRecord: _partition,
    PartitionChangeRecord: _partition_change,
    RemovePartitionRecord: _remove_partition,
    ProducerIdsRecord: _producer,
    FeatureLevelRecord: _feature,
    NoOpRecord: _noop,
}

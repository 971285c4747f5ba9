"""The replicated metadata state, how an effective record changes it, and its JSON views.

``install`` is the only mutator and trusts its record: validation already
happened (store_rules) or the record comes from another store's effective log
(``replay``), exactly as a KRaft broker replays what the controller wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyraft.metadata.records import (
    SECURITY_PROTOCOL_NAMES,
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
from pyraft.metadata.store_tables import PartitionKey, PartitionTable

__all__ = ["MetadataState", "PartitionKey", "ProducerKey", "broker_status", "changed_partition"]

ProducerKey = tuple[int, int]  # (brokerId, producerId)

_replace_broker = replacer(RegisterBrokerRecord)
_replace_partition = replacer(PartitionRecord)


@dataclass(slots=True)
class MetadataState:
    """Current brokers, topics, partitions, producer id blocks and feature levels."""

    brokers: dict[int, RegisterBrokerRecord] = field(default_factory=dict)
    topics: dict[str, TopicRecord] = field(default_factory=dict)  # by topicId
    topic_ids: dict[str, str] = field(default_factory=dict)  # name -> topicId
    partitions: PartitionTable = field(default_factory=PartitionTable)
    producers: dict[ProducerKey, ProducerIdsRecord] = field(default_factory=dict)
    features: dict[str, int] = field(default_factory=dict)

    def install(self, record: Record) -> None:
        """Apply an effective record's change (dispatch on its type)."""
        _INSTALLERS[type(record)](self, record)

    def copy(self) -> MetadataState:
        """An independent copy, cheap enough to take in the event loop between two applies.

        Records are frozen, so sharing them is safe; the dicts are copied
        (brokers, topics and producers number thousands, not millions) and the
        partition table, which does reach millions, shares its blocks until
        either side changes one (store_tables)."""
        return MetadataState(
            dict(self.brokers),
            dict(self.topics),
            dict(self.topic_ids),
            self.partitions.copy(),
            dict(self.producers),
            dict(self.features),
        )

    # --- views ----------------------------------------------------------------------------------
    def broker_view(self, broker: RegisterBrokerRecord) -> dict[str, Any]:
        """The registration plus ``internal_uuid`` (= incarnationId), ``status`` and the original's fields."""
        view = broker.to_json()
        view["internal_uuid"] = broker.incarnation_id
        view["status"] = broker_status(broker)
        if broker.end_points:  # one test, not one per key: this view is in every broker write's answer
            first = broker.end_points[0]
            view["brokerHost"] = first.host
            view["brokerPort"] = first.port
            view["securityProtocol"] = SECURITY_PROTOCOL_NAMES.get(first.security_protocol)
        else:
            view.update(brokerHost=None, brokerPort=None, securityProtocol=None)
        view["rackId"] = broker.rack
        return view

    def topic_view(self, topic: TopicRecord) -> dict[str, Any]:
        """``{name, topicId, topicUUID, partitions}`` with the topic's partition ids sorted."""
        ids = self.partitions.ids_of_topic(topic.topic_id)
        return {"name": topic.name, "topicId": topic.topic_id, "topicUUID": topic.topic_id, "partitions": ids}

    def partition_view(self, partition: PartitionRecord) -> dict[str, Any]:
        """The PartitionRecord fields plus ``topicUUID`` and ``topicName``."""
        view = partition.to_json()
        view["topicUUID"] = partition.topic_id
        topic = self.topics.get(partition.topic_id)
        view["topicName"] = topic.name if topic else None
        return view

    @staticmethod
    def producer_view(producer: ProducerIdsRecord) -> dict[str, Any]:
        """``{brokerId, producerId, brokerEpoch, nextProducerId}`` (producerId is nextProducerId)."""
        view = producer.to_json()
        view["producerId"] = producer.next_producer_id
        return view

    def topic_partitions(self, topic_id: str) -> list[PartitionRecord]:
        """A topic's partitions, sorted by partitionId."""
        return self.partitions.of_topic(topic_id)


def broker_status(broker: RegisterBrokerRecord) -> str:
    """CONTROLLED_SHUTDOWN, FENCED or UNFENCED (in that precedence)."""
    if broker.in_controlled_shutdown:
        return "CONTROLLED_SHUTDOWN"
    return "FENCED" if broker.fenced else "UNFENCED"


def changed_partition(old: PartitionRecord, change: PartitionChangeRecord) -> PartitionRecord:
    """The partition after ``change``: partitionEpoch always +1, leaderEpoch +1 when the leader changes."""
    leader = old.leader if change.leader == -2 else change.leader
    return _replace_partition(
        old,
        isr=old.isr if change.isr is None else change.isr,
        leader=leader,
        replicas=old.replicas if change.replicas is None else change.replicas,
        removing_replicas=old.removing_replicas
        if change.removing_replicas is None
        else change.removing_replicas,
        adding_replicas=old.adding_replicas if change.adding_replicas is None else change.adding_replicas,
        leader_epoch=old.leader_epoch + (1 if leader != old.leader else 0),
        partition_epoch=old.partition_epoch + 1,
    )


def _register(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, RegisterBrokerRecord)
    state.brokers[rec.broker_id] = rec


def _unregister(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, UnregisterBrokerRecord)
    state.brokers.pop(rec.broker_id, None)


def _broker_change(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, BrokerRegistrationChangeRecord)
    old = state.brokers[rec.broker_id]
    fenced = old.fenced if rec.fenced == 0 else rec.fenced == 1
    shutdown = old.in_controlled_shutdown or rec.in_controlled_shutdown == 1
    state.brokers[rec.broker_id] = _replace_broker(old, fenced=fenced, in_controlled_shutdown=shutdown)


def _topic(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, TopicRecord)
    state.topics[rec.topic_id] = rec
    state.topic_ids[rec.name] = rec.topic_id


def _remove_topic(state: MetadataState, rec: Record) -> None:
    """Removes the topic and, as Kafka's RemoveTopicRecord does, all its partitions."""
    assert isinstance(rec, RemoveTopicRecord)
    topic = state.topics.pop(rec.topic_id)
    del state.topic_ids[topic.name]
    state.partitions.remove_topic(rec.topic_id)


def _partition(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, PartitionRecord)
    state.partitions[(rec.topic_id, rec.partition_id)] = rec


def _partition_change(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, PartitionChangeRecord)
    key = (rec.topic_id, rec.partition_id)
    state.partitions[key] = changed_partition(state.partitions[key], rec)


def _remove_partition(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, RemovePartitionRecord)
    del state.partitions[(rec.topic_id, rec.partition_id)]


def _producer(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, ProducerIdsRecord)
    state.producers[(rec.broker_id, rec.next_producer_id)] = rec


def _feature(state: MetadataState, rec: Record) -> None:
    assert isinstance(rec, FeatureLevelRecord)
    state.features[rec.name] = rec.feature_level


def _noop(state: MetadataState, rec: Record) -> None:
    """A NoOpRecord changes nothing; it is only in the log."""


_INSTALLERS = {
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

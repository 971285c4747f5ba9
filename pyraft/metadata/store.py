"""The metadata store: the KRaft-style state machine the Raft log is applied to.

Deterministic by construction: no clocks, no randomness (UUIDs come in the
records), every list output sorted by id. Validation happens at apply time
against the committed state, so every node accepts or rejects a command the
same way; a rejected command changes nothing (not even the fetchable log) and
returns an Outcome with status conflict / not_found / invalid.

The store keeps the log of *effective* records with their offsets (accepted
records, a NoOpRecord per leader no-op), which ``fetch`` serves KRaft-style and
``replay`` turns back into an identical store. Identical repeats of a create
("ok", existing record returned) change nothing and are not logged either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyraft.metadata.commands import MetadataCommand, Outcome
from pyraft.metadata.records import Record

IDEMPOTENCY_KEYS = 100_000  # remembered outcomes, evicted in apply order


class MetadataStore:
    """KRaft-style metadata state machine (implements pyraft.statemachine.StateMachine)."""

    def __init__(self, idempotency_keys: int = IDEMPOTENCY_KEYS) -> None:
        self.applied_index = 0

    # --- StateMachine -----------------------------------------------------------------------
    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed command; returns an encoded Outcome and never raises."""
        raise NotImplementedError

    def apply_noop(self, index: int) -> None:
        """A leader's no-op: logged as a NoOpRecord at ``index``, no state change."""
        raise NotImplementedError

    def query(self, query: bytes) -> bytes:
        """msgpack ``[name, *args]`` → msgpack result of the accessor ``name``; CommandError if unknown."""
        raise NotImplementedError

    # --- direct use ---------------------------------------------------------------------------
    def apply_command(self, index: int, command: MetadataCommand) -> Outcome:
        """``apply`` without the byte codec (tests, in-process use)."""
        raise NotImplementedError

    def replay_record(self, offset: int, record: Record) -> None:
        """Install an already-effective record (from ``fetch``) without validation, as a KRaft broker does."""
        raise NotImplementedError

    # --- reads ---------------------------------------------------------------------------------
    def brokers(self) -> list[dict[str, Any]]:
        """All brokers, sorted by brokerId."""
        raise NotImplementedError

    def broker(self, broker_id: int) -> dict[str, Any] | None:
        """One broker's view: the registration fields plus ``internal_uuid`` and ``status``."""
        raise NotImplementedError

    def topics(self) -> list[dict[str, Any]]:
        """All topics, sorted by name."""
        raise NotImplementedError

    def topic(self, name: str) -> dict[str, Any] | None:
        """One topic by name: ``{name, topicId, topicUUID, partitions: [partitionId...]}``."""
        raise NotImplementedError

    def topic_by_id(self, topic_id: str) -> dict[str, Any] | None:
        """One topic by topicId."""
        raise NotImplementedError

    def partitions(
        self, partition_id: int | None = None, topic_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Partitions matching the filters, sorted by (topicId, partitionId)."""
        raise NotImplementedError

    def producers(self) -> list[dict[str, Any]]:
        """All producer registrations, sorted by (brokerId, producerId)."""
        raise NotImplementedError

    def producer(self, broker_id: int, producer_id: int) -> dict[str, Any] | None:
        """One producer registration."""
        raise NotImplementedError

    def client_metadata(self) -> dict[str, Any]:
        """``{brokers, topics, partitions}`` for clients."""
        raise NotImplementedError

    def fetch(self, offset: int, max_records: int | None = None) -> dict[str, Any]:
        """Effective records after ``offset`` in log order, and ``highWatermark`` (the applied index)."""
        raise NotImplementedError

    def has_feature_level(self) -> bool:
        """True once a metadata.version FeatureLevelRecord has been applied."""
        raise NotImplementedError

    def features(self) -> dict[str, int]:
        """Finalized feature levels by name."""
        raise NotImplementedError

    def dump(self) -> dict[str, Any]:
        """The whole replicated state (not the idempotency memory), for comparing stores."""
        raise NotImplementedError


def replay(records: Iterable[Mapping[str, Any]], high_watermark: int | None = None) -> MetadataStore:
    """A fresh store built from fetched records (``{offset, apiKey, record}``), as a KRaft broker would."""
    raise NotImplementedError

"""Serving this node's latest snapshot to fetching brokers in pages, after KRaft's FetchSnapshot.

Once ``MetadataStore.compact`` has dropped a log prefix, a broker fetching
from before it is told the id of a snapshot instead (KRaft's Fetch answers
with a SnapshotId): its ``endOffset`` (the last log offset it covers) and
``epoch`` (that offset's term). The broker pages through the snapshot's records
by position, installs them, and fetches the log on after ``endOffset``.

The snapshot bytes come from the node (``SnapshotSource``, the snapshot file's
payload as ``MetadataStore.capture`` encoded it). Decoding a million records
takes seconds, so the latest snapshot is decoded once, in a worker thread, and
its records kept for the pages that follow; only the latest is served, and a
broker holding an older id is told to start over (``SnapshotNotFound``), as a
KRaft follower is on SNAPSHOT_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from pyraft.metadata.records import Record, RecordError
from pyraft.metadata.snapshot import snapshot_records
from pyraft.storage.snapshot import SnapshotMeta

SnapshotSource = Callable[[], Awaitable[tuple[SnapshotMeta, bytes] | None]]
"""The node's latest snapshot (its meta and payload), or None when it has none."""

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000


@dataclass(frozen=True, slots=True, order=True)
class SnapshotId:
    """KRaft's snapshot id: the last log offset the snapshot covers and that offset's epoch (term)."""

    end_offset: int
    epoch: int

    def to_json(self) -> dict[str, int]:
        return {"endOffset": self.end_offset, "epoch": self.epoch}


class SnapshotError(Exception):
    """Why a snapshot cannot be served; the service turns each kind into its HTTP answer."""


class NoSnapshot(SnapshotError):
    """This node has no snapshot (none taken yet, or no source wired in)."""


class SnapshotNotFound(SnapshotError):
    """The asked-for snapshot is not the one served any more: the fetcher must start over."""


class SnapshotUnavailable(SnapshotError):
    """No snapshot covers the compacted log (yet), or its bytes cannot be read as one."""


class PositionOutOfRange(SnapshotError):
    """A page position past the snapshot's last record."""


class SnapshotPages:
    """The latest snapshot's records, decoded once, served in pages (module docstring).

    One lock covers reading the source, decoding and paging, so a page is
    always cut from the snapshot whose id was checked, even when a newer one
    replaces it meanwhile."""

    def __init__(self, source: SnapshotSource | None) -> None:
        self._source = source
        self._lock = trio.Lock()
        self._latest: SnapshotId | None = None
        self._payload: bytes | None = None  # read, not yet decoded
        self._records: list[Record] | None = None  # decoded

    async def covering(self, compacted_to: int) -> SnapshotId:
        """The id of the latest snapshot, which must cover the log up to ``compacted_to`` at least.

        A snapshot ending earlier would send the fetcher back below the log
        start once it had loaded it; so would none at all: both are
        SnapshotUnavailable (the node compacts only after its snapshot is
        durable, so this is a wiring fault or a moment's race, not the client's)."""
        async with self._lock:
            if self._latest is None or self._latest.end_offset < compacted_to:
                await self._refresh()
            if self._latest is None or self._latest.end_offset < compacted_to:
                have = (
                    "no snapshot" if self._latest is None else f"a snapshot up to {self._latest.end_offset}"
                )
                raise SnapshotUnavailable(
                    f"the log is compacted up to {compacted_to} but this node has {have}"
                )
            return self._latest

    async def page(
        self, wanted: SnapshotId, position: int, max_records: int, compacted_to: int
    ) -> dict[str, Any]:
        """Records ``[position, position + max_records)`` of snapshot ``wanted``, with where to go next.

        ``compacted_to`` is the store's compaction point: a snapshot ending
        before it is no longer useful to load (the log after it is gone too)."""
        async with self._lock:
            if self._may_be_newer(wanted, compacted_to):
                await self._refresh()
            if self._latest is None:
                raise NoSnapshot("this node has no snapshot to serve")
            if self._latest != wanted or wanted.end_offset < compacted_to:
                raise SnapshotNotFound(
                    f"snapshot endOffset {wanted.end_offset} epoch {wanted.epoch} is not served here (the "
                    f"latest is endOffset {self._latest.end_offset} epoch {self._latest.epoch}): discard "
                    "what you loaded from it and fetch again from offset 0"
                )
            records = await self._decoded()
        if position > len(records):
            raise PositionOutOfRange(f"position must be at most {len(records)}, the snapshot's record count")
        chunk = records[position : position + max_records]
        after = position + len(chunk)
        return {
            "snapshotId": wanted.to_json(),
            "position": position,
            "records": [snapshot_record_json(r) for r in chunk],
            "nextPosition": after,
            "totalRecords": len(records),
            "more": after < len(records),
            "nextFetchOffset": wanted.end_offset,
        }

    def _may_be_newer(self, wanted: SnapshotId, compacted_to: int) -> bool:
        """Whether the node may have a snapshot other than the cached one that the request needs.

        A request for an id older than the cached one is stale without asking
        (the node's snapshots only move forward), so repeats cost no reads."""
        latest = self._latest
        return latest is None or latest.end_offset < compacted_to or wanted > latest

    async def _refresh(self) -> None:
        """Ask the node for its latest snapshot; a new id replaces what is cached."""
        found = None if self._source is None else await self._source()
        if found is None:
            self._latest, self._payload, self._records = None, None, None
            return
        meta, payload = found
        latest = SnapshotId(meta.last_index, meta.last_term)
        if latest != self._latest:
            self._latest, self._payload, self._records = latest, payload, None

    async def _decoded(self) -> list[Record]:
        """The latest snapshot's records, decoded in a worker thread the first time they are asked for."""
        if self._records is not None:
            return self._records
        assert self._latest is not None and self._payload is not None
        try:
            end, records = await trio.to_thread.run_sync(snapshot_records, self._payload)
        except RecordError as exc:
            raise SnapshotUnavailable(f"the snapshot's payload is not a metadata snapshot: {exc}") from exc
        if end != self._latest.end_offset:
            raise SnapshotUnavailable(
                f"the snapshot file says it ends at {self._latest.end_offset}, its payload at {end}"
            )
        self._records, self._payload = records, None
        return records


def snapshot_record_json(record: Record) -> dict[str, Any]:
    """A snapshot record as ``fetch`` shows a record, without ``offset``: the whole snapshot holds at
    its ``endOffset``, no single record has one of its own."""
    return {
        "apiKey": record.API_KEY,
        "version": record.VERSION,
        "type": record.NAME,
        "record": record.to_json(),
    }

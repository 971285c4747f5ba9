"""Prometheus metrics of one node, observed from outside the engine.

The raft loop, storage actor and transport are not instrumented themselves (they
are hot paths, owned by the engine). Instead a node is assembled from thin
wrappers that watch what crosses its seams:

- ``TimedStorage`` times every ``append`` (write + fsync of one batch) and every
  hard-state save: the WAL fsync histograms.
- ``ObservedTransport`` notes when an AppendEntries of heartbeat round ``seq``
  first leaves for a peer and when that peer's answer for the same round comes
  back: the peer round-trip histogram, and the last time each follower answered
  (KIP-595's lastFetchTimestamp) and was caught up (lastCaughtUpTimestamp).
- ``MeteredRaftNode`` counts proposals the engine refused or lost.
- Everything else (term, indexes, has_leader, per-peer lag, transport counters)
  is read from the node when Prometheus scrapes, by ``NodeCollector``.

Each node has its own ``CollectorRegistry`` so several in-process nodes (tests)
never share counters. Names follow etcd's where one applies, with a ``pyraft_``
prefix instead of ``etcd_``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyraft.actors.applier import Applied
from pyraft.actors.node import RaftNode
from pyraft.core.errors import RaftError
from pyraft.core.messages import AppendEntries, AppendEntriesResponse, Entry, HardState, Message
from pyraft.core.raft import Role
from pyraft.storage.base import PreparedSnapshot, RecoveryReport, Storage
from pyraft.storage.snapshot import SnapshotMeta
from pyraft.transport.base import ClientHandler, Transport, TransportStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DISK_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024)
NET_BUCKETS = (0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_ROUNDS_IN_FLIGHT = 1024  # (peer, seq) send times kept; older unanswered rounds are forgotten


class NodeMetrics:
    """The registry of one node and the metrics that are pushed to it as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.wal_fsync = Histogram(
            "pyraft_disk_wal_fsync_duration_seconds",
            "Time to append one batch of log entries durably (write + fsync)",
            buckets=DISK_BUCKETS,
            registry=r,
        )
        self.hard_state_fsync = Histogram(
            "pyraft_disk_hard_state_fsync_duration_seconds",
            "Time to save term and vote durably (write + fsync + rename)",
            buckets=DISK_BUCKETS,
            registry=r,
        )
        self.snapshot_save = Histogram(
            "pyraft_disk_snapshot_save_duration_seconds",
            "Time to write one metadata snapshot's file durably (write + fsync); appends go on meanwhile",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.peer_rtt = Histogram(
            "pyraft_network_peer_round_trip_time_seconds",
            "AppendEntries to its AppendEntriesResponse, per peer (first answer of each heartbeat round)",
            ["To"],
            buckets=NET_BUCKETS,
            registry=r,
        )
        self.http = Histogram(
            "pyraft_http_request_duration_seconds",
            "HTTP request handling time by route template",
            ["method", "route", "code"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.leader_changes = Counter(
            "pyraft_server_leader_changes_seen", "Leader changes this node has seen", registry=r
        )
        self.events = Counter(
            "pyraft_events", "Events recorded in this node's event log", ["kind"], registry=r
        )

    def attach(self, node: RaftNode, peers: PeerTracker | None = None) -> None:
        """Read the node's state at every scrape."""
        self.registry.register(NodeCollector(node, peers))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """Gauges and counters computed from the node when scraped, so nothing is kept in sync."""

    def __init__(self, node: RaftNode, peers: PeerTracker | None) -> None:
        self.node = node
        self.peers = peers

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._raft()
        yield from self._replication()
        yield from _transport(self.node.transport.stats)

    def _server(self) -> Iterator[Metric]:
        core = self.node.core
        yield _gauge(
            "pyraft_server_has_leader", "1 when this node knows a leader", core.leader_id is not None
        )
        yield _gauge("pyraft_server_is_leader", "1 when this node is the leader", core.role is Role.LEADER)
        yield _counter(
            "pyraft_server_proposals_committed", "Entries committed (the commit index)", core.commit_index
        )
        yield _counter(
            "pyraft_server_proposals_applied", "Entries applied here", self.node.applier.applied_index
        )
        pending = core.log.last_index - core.commit_index if core.role is Role.LEADER else 0
        yield _gauge(
            "pyraft_server_proposals_pending", "Leader only: entries appended, not yet committed", pending
        )
        failed = self.node.failed_proposals if isinstance(self.node, MeteredRaftNode) else 0
        yield _counter("pyraft_server_proposals_failed", "Proposals refused or lost by the engine", failed)

    def _raft(self) -> Iterator[Metric]:
        core = self.node.core
        yield _gauge("pyraft_server_term", "Current Raft term", core.term)
        yield _gauge("pyraft_raft_commit_index", "Highest log index known committed", core.commit_index)
        yield _gauge(
            "pyraft_raft_applied_index", "Highest log index applied", self.node.applier.applied_index
        )
        yield _gauge("pyraft_raft_log_end_index", "Last index in this node's log", core.log.last_index)
        yield _gauge(
            "pyraft_raft_durable_index", "Last fsynced index in this node's log", core.log.stable_index
        )

    def _replication(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "pyraft_server_peer_replication_lag_entries",
            "Leader only: entries the peer is behind the leader's log end",
            labels=["To"],
        )
        match = GaugeMetricFamily(
            "pyraft_server_peer_match_index", "Leader only: highest index known replicated", labels=["To"]
        )
        for peer, index in match_indexes(self.node).items():
            lag.add_metric([str(peer)], max(0, self.node.core.log.last_index - index))
            match.add_metric([str(peer)], index)
        yield lag
        yield match


def _transport(stats: TransportStats) -> Iterator[Metric]:
    for name, help_text, counts in (
        ("pyraft_network_messages_sent", "Messages handed to the network, per peer", stats.sent),
        ("pyraft_network_messages_received", "Messages received, per peer", stats.received),
        (
            "pyraft_network_messages_dropped",
            "Messages dropped (full outbox, unknown peer, lost)",
            stats.dropped,
        ),
        ("pyraft_network_peer_connects", "Outbound peer handshakes that succeeded", stats.connects),
    ):
        family = CounterMetricFamily(name, help_text, labels=["To"])
        for peer, value in sorted(counts.items()):
            family.add_metric([str(peer)], value)
        yield family


def _gauge(name: str, help_text: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=float(value))


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def match_indexes(node: RaftNode) -> dict[int, int]:
    """The leader's matchIndex per follower; empty unless this node leads."""
    return node.core.match_indexes()


# ------------------------------------------------------------------------ storage


class TimedStorage:
    """A ``Storage`` that times its durable writes; everything else is passed through."""

    def __init__(self, inner: Storage, metrics: NodeMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        return self.inner.load()

    def save_hard_state(self, hs: HardState) -> None:
        with self.metrics.hard_state_fsync.time():
            self.inner.save_hard_state(hs)

    def append(self, entries: Sequence[Entry]) -> None:
        with self.metrics.wal_fsync.time():
            self.inner.append(entries)

    def snapshot(self) -> SnapshotMeta | None:
        return self.inner.snapshot()

    def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return self.inner.read_snapshot()

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
        with self.metrics.snapshot_save.time():
            return self.inner.save_snapshot(meta, data)

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> PreparedSnapshot:
        with self.metrics.snapshot_save.time():  # the write and fsync: nearly all of a save
            return self.inner.prepare_snapshot(meta, data)

    def save_prepared_snapshot(self, prepared: PreparedSnapshot) -> SnapshotMeta:
        return self.inner.save_prepared_snapshot(prepared)

    def read_snapshot_chunk(
        self, last_index: int, last_term: int, offset: int, size: int
    ) -> tuple[bytes, bool] | None:
        return self.inner.read_snapshot_chunk(last_index, last_term, offset, size)

    def receive_chunk(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> tuple[int, SnapshotMeta | None]:
        return self.inner.receive_chunk(last_index, last_term, offset, data, done)

    @property
    def syncs(self) -> bool:
        return self.inner.syncs

    @property
    def first_index(self) -> int:
        return self.inner.first_index

    @property
    def last_index(self) -> int:
        return self.inner.last_index

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------------- transport


class PeerTracker:
    """Per follower: when it last answered the leader, and when it last was caught up.

    In KRaft followers fetch, so the leader knows when each last fetched; here the
    leader pushes, so an AppendEntriesResponse is the equivalent of a fetch."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.last_fetch: dict[int, float] = {}
        self.last_caught_up: dict[int, float] = {}
        self.log_end: Callable[[], int] = lambda: 0

    def answered(self, msg: AppendEntriesResponse) -> None:
        now = self.wall()
        self.last_fetch[msg.src] = now
        if msg.success and msg.match_index >= self.log_end():
            self.last_caught_up[msg.src] = now


class ObservedTransport:
    """A ``Transport`` that times AppendEntries rounds and notes answers, delegating the rest."""

    def __init__(
        self,
        inner: Transport,
        metrics: NodeMetrics,
        peers: PeerTracker,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.peers = peers
        self.clock = clock or time.perf_counter
        self._sent: OrderedDict[tuple[int, int], float] = OrderedDict()

    @property
    def stats(self) -> TransportStats:
        return self.inner.stats

    def send(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            key = (msg.dst, msg.seq)
            if key not in self._sent:
                self._sent[key] = self.clock()
                if len(self._sent) > MAX_ROUNDS_IN_FLIGHT:
                    self._sent.popitem(last=False)
        self.inner.send(msg)

    def update_peers(self, peers: Mapping[int, str]) -> None:
        self.inner.update_peers(peers)

    async def run(
        self,
        inbox: trio.MemorySendChannel[Message],
        client_handler: ClientHandler | None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        tap = cast(trio.MemorySendChannel[Message], _InboxTap(inbox, self._received))
        await self.inner.run(tap, client_handler, task_status=task_status)

    def _received(self, msg: Message) -> None:
        if isinstance(msg, AppendEntriesResponse):
            started = self._sent.pop((msg.src, msg.seq), None)
            if started is not None:
                self.metrics.peer_rtt.labels(str(msg.src)).observe(self.clock() - started)
            self.peers.answered(msg)


class _InboxTap:
    """Looks at each message on its way into the raft loop's inbox (transports only ``hand_over``
    to it, which calls ``send_nowait`` and, when the inbox is full, ``send``)."""

    def __init__(self, inbox: trio.MemorySendChannel[Message], seen: Callable[[Message], None]) -> None:
        self.inbox = inbox
        self.seen = seen

    async def send(self, msg: Message) -> None:
        self.seen(msg)
        await self.inbox.send(msg)

    def send_nowait(self, msg: Message) -> None:
        self.inbox.send_nowait(msg)  # WouldBlock before anything is seen: send() sees it then
        self.seen(msg)


# --------------------------------------------------------------------------- node


class MeteredRaftNode(RaftNode):
    """A RaftNode that counts proposals the engine refused or lost (etcd's proposals_failed)."""

    failed_proposals = 0

    async def propose(self, command: bytes) -> Applied:
        try:
            return await super().propose(command)
        except RaftError:
            self.failed_proposals += 1
            raise

    async def propose_many(
        self, commands: Sequence[bytes], out: list[Applied | Exception | None] | None = None
    ) -> list[Applied | Exception | None]:
        results = await super().propose_many(commands, out)
        self.failed_proposals += sum(1 for r in results if isinstance(r, Exception))
        return results

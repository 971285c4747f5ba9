"""A 3-node in-memory quorum running the metadata store, with an httpx client on each node's app.

Runs on trio's autojump clock: the in-memory transport and storage make every
wait a virtual one, so elections and request deadlines take no wall time.
httpx's ASGITransport calls the Starlette app in the test's own trio loop.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from pyraft.actors.node import RaftNode, Timing
from pyraft.core.raft import Role
from pyraft.http.app import build_app
from pyraft.metadata.events import EventLog, NodeWatcher
from pyraft.metadata.service import MetadataService
from pyraft.metadata.store import MetadataStore
from pyraft.storage.memory import MemoryStorage
from pyraft.storage.snapshot import SnapshotMeta
from pyraft.transport.memory import MemoryNetwork, MemoryTransport

VOTERS = (1, 2, 3)
REQUEST_TIMEOUT = 5.0


class NodeSnapshots:
    """Stands in for the node's snapshotting (pyraft/node.py wires the real one): the latest
    snapshot as the service's ``read_snapshot`` source sees it, and ``take`` to make one."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.latest: tuple[SnapshotMeta, bytes] | None = None
        self.reads = 0

    async def read(self) -> tuple[SnapshotMeta, bytes] | None:
        self.reads += 1
        return self.latest

    async def take(self, node: RaftNode) -> SnapshotMeta:
        """As the node does: capture between two applies, encode in a worker thread, then compact."""
        index = self.store.applied_index
        meta = SnapshotMeta(index, node.core.log.term_at(index), VOTERS)
        data = await trio.to_thread.run_sync(self.store.capture())
        self.latest = (meta, data)
        self.store.compact(index)
        return meta


class ApiNode:
    def __init__(
        self,
        node: RaftNode,
        store: MetadataStore,
        service: MetadataService,
        events: EventLog,
        snapshots: NodeSnapshots,
    ) -> None:
        self.node = node
        self.store = store
        self.service = service
        self.events = events
        self.snapshots = snapshots
        self.app = build_app(node, service, events)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://pyraft")

    @property
    def node_id(self) -> int:
        return self.node.node_id


class ApiCluster:
    def __init__(self, nursery: trio.Nursery, network: MemoryNetwork) -> None:
        self.nursery = nursery
        self.network = network
        self.storages = {i: MemoryStorage() for i in VOTERS}
        self.transports = {i: MemoryTransport(network, i) for i in VOTERS}  # one per id on a network
        self.nodes: dict[int, ApiNode] = {}
        self.scopes: dict[int, trio.CancelScope] = {}

    async def start(self, node_id: int) -> ApiNode:
        store = MetadataStore()
        transport = self.transports[node_id]
        node = RaftNode(
            node_id,
            VOTERS,
            self.storages[node_id],
            transport,
            store,
            timing=Timing(),
            rng=random.Random(node_id),
            offload_io=False,
        )
        events = EventLog(clock=trio.current_time)
        snapshots = NodeSnapshots(store)
        service = MetadataService(
            node, store, timeout=REQUEST_TIMEOUT, events=events, read_snapshot=snapshots.read
        )
        api = ApiNode(node, store, service, events, snapshots)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    nursery.start_soon(NodeWatcher(node, events).run)
                    nursery.start_soon(api.service.bootstrap_features)
                    task_status.started()

        self.network.reconnect(node_id)
        await self.nursery.start(run)
        self.nodes[node_id], self.scopes[node_id] = api, scope
        return api

    def crash(self, node_id: int) -> None:
        """Stop the node's tasks; only its storage survives (a restart replays it)."""
        self.network.disconnect(node_id)
        self.scopes.pop(node_id).cancel()
        self.nodes.pop(node_id)

    def leader(self) -> ApiNode | None:
        leaders = [n for n in self.nodes.values() if n.node.core.role is Role.LEADER]
        return max(leaders, key=lambda n: n.node.core.term) if leaders else None

    async def wait_ready(self) -> ApiNode:
        """A leader every node knows, and metadata.version bootstrapped everywhere."""

        def ready() -> bool:
            leader = self.leader()
            return (
                leader is not None
                and all(n.node.core.leader_id == leader.node_id for n in self.nodes.values())
                and all(n.store.has_feature_level() for n in self.nodes.values())
            )

        await wait_until(ready)
        leader = self.leader()
        assert leader is not None
        return leader

    def follower(self) -> ApiNode:
        return next(n for n in self.nodes.values() if n.node.core.role is Role.FOLLOWER)

    async def settle(self) -> None:
        """Wait until every running node has applied everything the leader committed."""
        leader = self.leader()
        assert leader is not None
        top = leader.node.core.commit_index
        await wait_until(lambda: all(n.node.applier.applied_index >= top for n in self.nodes.values()))


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


@asynccontextmanager
async def api_cluster() -> AsyncIterator[ApiCluster]:
    async with trio.open_nursery() as nursery:
        cluster = ApiCluster(nursery, MemoryNetwork())
        for node_id in VOTERS:
            await cluster.start(node_id)
        yield cluster
        nursery.cancel_scope.cancel()


BROKER = {"brokerId": 1, "brokerHost": "kafka-1", "brokerPort": 9092, "securityProtocol": "PLAINTEXT"}


def broker_body(broker_id: int, **changes: Any) -> dict[str, Any]:
    return {**BROKER, "brokerId": broker_id, "brokerHost": f"kafka-{broker_id}", **changes}


async def post(api: ApiNode, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await api.http.post(path, json=body, headers=headers)


async def created(api: ApiNode, path: str, body: Any) -> dict[str, Any]:
    response = await post(api, path, body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def brokers(api: ApiNode, *ids: int) -> None:
    for broker_id in ids:
        await created(api, "/register_broker/", broker_body(broker_id))


async def topic(api: ApiNode, name: str) -> str:
    return str((await created(api, "/register_topic/", {"name": name}))["topicUUID"])

"""A 3-node in-memory quorum wired as ``pyraft.node`` wires a real one (observed storage and transport).

Runs on trio's autojump clock. Each node's ``ClusterView`` fetches from the other
nodes' apps through httpx's ASGITransport, so a follower's /quorum really asks
the leader's app, with no sockets. Nodes 1-3 bootstrap the quorum; a node started
with another id is an observer waiting to be added, and the view's probe of a
raft address finds it in-process (address ``127.0.0.1:9000+id``).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from pyraft.actors.node import Timing
from pyraft.core.raft import Role
from pyraft.http.app import build_app
from pyraft.http.cluster import ClusterView, PeerUnreachable
from pyraft.logs import ObservedEventLog
from pyraft.metadata.events import NodeWatcher
from pyraft.metadata.service import MetadataService
from pyraft.metadata.store import MetadataStore
from pyraft.metrics import MeteredRaftNode, NodeMetrics, ObservedTransport, PeerTracker, TimedStorage
from pyraft.storage.memory import MemoryStorage
from pyraft.transport.memory import MemoryNetwork, MemoryTransport

VOTERS = (1, 2, 3)
KNOWN_IDS = range(1, 10)  # every node's view knows these nodes' HTTP URLs


def url(node_id: int) -> str:
    return f"http://node{node_id}"


def address(node_id: int) -> str:
    return f"127.0.0.1:{9000 + node_id}"


class OpNode:
    def __init__(self, cluster: OpCluster, node_id: int) -> None:
        metrics = NodeMetrics()
        tracker = PeerTracker(wall=trio.current_time)
        transport = ObservedTransport(MemoryTransport(cluster.network, node_id), metrics, tracker)
        self.store = MetadataStore()
        self.node = MeteredRaftNode(
            node_id,
            VOTERS,
            TimedStorage(MemoryStorage(), metrics),
            transport,
            self.store,
            timing=Timing(),
            rng=random.Random(node_id),
            offload_io=False,
            addresses={v: address(v) for v in VOTERS},
        )
        tracker.log_end = lambda: self.node.core.log.last_index
        metrics.attach(self.node, tracker)
        self.events = ObservedEventLog(metrics, clock=trio.current_time)
        self.service = MetadataService(self.node, self.store, timeout=5.0, events=self.events)
        self.view = ClusterView(
            node_id,
            "pyraft",
            {v: address(v) for v in (*VOTERS, node_id)},
            {i: url(i) for i in KNOWN_IDS},
            metrics,
            tracker,
            fetch=cluster.fetch,
            probe=cluster.probe,
        )
        self.app = build_app(self.node, self.service, self.events, self.view)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=url(node_id))


class OpCluster:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.network = MemoryNetwork()
        self.nodes: dict[int, OpNode] = {}
        self.http_down: set[int] = set()  # nodes whose HTTP does not answer peers

    async def start(self, node_id: int) -> None:
        op = OpNode(self, node_id)
        self.nodes[node_id] = op
        await self.nursery.start(op.node.run)
        self.nursery.start_soon(NodeWatcher(op.node, op.events).run)
        self.nursery.start_soon(op.service.bootstrap_features)

    async def fetch(
        self, method: str, target: str, body: dict[str, Any] | None, timeout: float
    ) -> tuple[int, dict[str, Any]]:
        """The ClusterView's HTTP client, answered by the target node's app in-process."""
        node_id = int(target.removeprefix("http://node").split("/", 1)[0])
        node = self.nodes.get(node_id)
        if node is None or node_id in self.http_down:
            raise PeerUnreachable(target)
        with trio.fail_after(timeout):
            response = await node.http.request(method, target, json=body)
        answer: dict[str, Any] = response.json()
        return response.status_code, answer

    async def probe(self, raft_address: str, cluster_id: str, timeout: float) -> int:
        """The ClusterView's probe of a raft port: the running node with that address answers."""
        await trio.lowlevel.checkpoint()
        for node_id in self.nodes:
            if address(node_id) == raft_address:
                return node_id
        raise PeerUnreachable(f"nothing answered at {raft_address}")

    def leader(self) -> OpNode | None:
        leaders = [n for n in self.nodes.values() if n.node.core.role is Role.LEADER]
        return max(leaders, key=lambda n: n.node.core.term) if leaders else None

    def follower(self) -> OpNode:
        return next(n for n in self.nodes.values() if n.node.core.role is Role.FOLLOWER)

    async def wait_ready(self) -> OpNode:
        def ready() -> bool:
            leader = self.leader()
            return (
                leader is not None
                and all(n.node.core.leader_id == leader.node.node_id for n in self.nodes.values())
                and all(n.store.has_feature_level() for n in self.nodes.values())
            )

        await wait_until(ready)
        leader = self.leader()
        assert leader is not None
        return leader


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


@asynccontextmanager
async def op_cluster() -> AsyncIterator[OpCluster]:
    async with trio.open_nursery() as nursery:
        cluster = OpCluster(nursery)
        for node_id in VOTERS:
            await cluster.start(node_id)
        yield cluster
        nursery.cancel_scope.cancel()

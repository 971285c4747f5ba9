"""What a node knows about the quorum beyond Raft: addresses, HTTP URLs, metrics, peer timestamps.

The engine knows each member by id and raft address (the live configuration);
operators and the dashboard also need HTTP URLs. ``ClusterView`` carries them
into the HTTP layer, together with the node's metrics registry, a bounded HTTP
client used to ask the leader for what only the leader knows (its /quorum, a
leadership transfer, a membership change), and a probe that checks a would-be
member answers on its raft port before the leader adds it.

A member that joined after this node started has no ``--peer-http`` entry here,
so its HTTP URL is derived from its raft address by the convention the local
cluster and the examples follow (HTTP port = raft port - 1000).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from pyraft.actors.node import RaftNode
from pyraft.core.membership import Member
from pyraft.metrics import NodeMetrics, PeerTracker
from pyraft.transport.framed import FramedStream
from pyraft.wire.codec import CodecError
from pyraft.wire.frames import DEFAULT_MAX_FRAME_SIZE, FrameError
from pyraft.wire.handshake import PROTOCOL_VERSION, Hello, HelloReply

# (method, url, JSON body or None, timeout seconds) -> (status, JSON object)
Fetch = Callable[[str, str, dict[str, Any] | None, float], Awaitable[tuple[int, dict[str, Any]]]]
# (raft "host:port", cluster id, timeout seconds) -> the node id that answered there
Probe = Callable[[str, str, float], Awaitable[int]]
LEADER_TIMEOUT = 1.0  # bound on asking the leader on a client's behalf
PROBE_TIMEOUT = 2.0  # bound on reaching a would-be member's raft port
# Bound on committing one configuration entry. A leader cut off from its quorum steps down
# (CheckQuorum) well within it, but its uncommitted entry then settles only when a later
# leader commits or overwrites that index: past the bound the answer is "outcome unknown".
CHANGE_TIMEOUT = 10.0
HTTP_PORT_OFFSET = 1000  # convention: a node's HTTP port is its raft port minus this


class PeerUnreachable(Exception):
    """The other node did not answer with JSON in time."""


async def fetch_json(
    method: str, url: str, body: dict[str, Any] | None, timeout: float
) -> tuple[int, dict[str, Any]]:
    """One HTTP request with a hard deadline, on a worker thread (urllib is blocking, and small)."""

    def call() -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), _object(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), _object(exc.read())

    try:
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
    except (OSError, ValueError, trio.TooSlowError) as exc:
        raise PeerUnreachable(f"{method} {url}: {exc or type(exc).__name__}") from exc


async def probe_raft_port(address: str, cluster_id: str, timeout: float) -> int:
    """Connect to ``address`` as a client and return the node id its handshake reports.

    Raises PeerUnreachable when nothing answers there in time, or the listener refuses
    us (another cluster id). Checking this before adding a member turns a typo in an
    address into an immediate error instead of a catch-up that can only time out."""
    host, _, port = address.rpartition(":")
    try:
        with trio.fail_after(timeout):
            framed = FramedStream(await trio.open_tcp_stream(host, int(port)), DEFAULT_MAX_FRAME_SIZE)
            try:
                await framed.send(Hello(PROTOCOL_VERSION, cluster_id, None))
                reply = await framed.receive()
            finally:
                await framed.aclose()
    except (OSError, ValueError, trio.TooSlowError, trio.BrokenResourceError, FrameError, CodecError) as exc:
        raise PeerUnreachable(f"nothing answered at {address}: {exc or type(exc).__name__}") from exc
    if not isinstance(reply, HelloReply):
        raise PeerUnreachable(f"{address} is not a pyraft raft port (no handshake reply)")
    if not reply.ok:
        raise PeerUnreachable(f"{address} refused us: {reply.reason}")
    return reply.node_id


def _object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


@dataclass
class ClusterView:
    node_id: int
    cluster_id: str = "pyraft"
    raft_addresses: dict[int, str] = field(default_factory=dict)  # id -> "host:port"
    http_urls: dict[int, str] = field(default_factory=dict)  # id -> "http://host:port"
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    peers: PeerTracker | None = None
    fetch: Fetch = fetch_json
    probe: Probe = probe_raft_port
    leader_timeout: float = LEADER_TIMEOUT
    probe_timeout: float = PROBE_TIMEOUT
    change_timeout: float = CHANGE_TIMEOUT

    def leader_url(self, node: RaftNode) -> str | None:
        """The HTTP URL of the leader this node knows of, unless that is itself or unknown."""
        leader = node.core.leader_id
        if leader is None or leader == self.node_id:
            return None
        return self.http_url(node, leader)

    def raft_address(self, node: RaftNode, node_id: int) -> str | None:
        """A member's raft address from the live configuration, else the one we were started with."""
        return node.core.membership.addresses().get(node_id) or self.raft_addresses.get(node_id)

    def http_url(self, node: RaftNode, node_id: int) -> str | None:
        """A node's HTTP URL: the one we were given, else derived from its raft address."""
        known = self.http_urls.get(node_id)
        if known is not None:
            return known
        return _derived_http_url(self.raft_address(node, node_id))

    def nodes(self, node: RaftNode) -> list[dict[str, Any]]:
        """Every member of the live configuration (voters, then observers), for the dashboard;
        a node not yet added lists itself as an observer too, so its own page shows it."""
        membership = node.core.membership
        observers = list(membership.learners)
        if node.node_id not in membership.ids:
            observers.append(Member(node.node_id))
        return [self._node_entry(node, m, voter=True) for m in membership.voters] + [
            self._node_entry(node, m, voter=False) for m in sorted(observers, key=lambda m: m.node_id)
        ]

    def _node_entry(self, node: RaftNode, member: Member, *, voter: bool) -> dict[str, Any]:
        return {
            "id": member.node_id,
            "voter": voter,
            "raftAddress": self.raft_address(node, member.node_id),
            "httpUrl": self.http_url(node, member.node_id),
        }


def _derived_http_url(raft_address: str | None) -> str | None:
    if not raft_address:
        return None
    host, _, port = raft_address.rpartition(":")
    if not host or not port.isdigit() or int(port) <= HTTP_PORT_OFFSET:
        return None
    return f"http://{host}:{int(port) - HTTP_PORT_OFFSET}"


def default_view(node: RaftNode) -> ClusterView:
    """A view with no addresses (in-process tests): the node answers from its own state only."""
    view = ClusterView(node.node_id)
    view.metrics.attach(node)
    return view

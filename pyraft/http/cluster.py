"""What a node knows about the quorum beyond Raft: addresses, HTTP URLs, metrics, peer timestamps.

The engine knows peers only by id; operators and the dashboard need each voter's
raft address and HTTP URL. ``ClusterView`` carries them into the HTTP layer,
together with the node's metrics registry and a bounded HTTP client used to ask
the leader for what only the leader knows (its /quorum, a leadership transfer).
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
from pyraft.metrics import NodeMetrics, PeerTracker

# (method, url, JSON body or None, timeout seconds) -> (status, JSON object)
Fetch = Callable[[str, str, dict[str, Any] | None, float], Awaitable[tuple[int, dict[str, Any]]]]
LEADER_TIMEOUT = 1.0  # bound on asking the leader on a client's behalf


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
    leader_timeout: float = LEADER_TIMEOUT

    def leader_url(self, node: RaftNode) -> str | None:
        """The HTTP URL of the leader this node knows of, unless that is itself or unknown."""
        leader = node.core.leader_id
        if leader is None or leader == self.node_id:
            return None
        return self.http_urls.get(leader)

    def nodes(self, voters: tuple[int, ...]) -> list[dict[str, Any]]:
        return [
            {"id": v, "raftAddress": self.raft_addresses.get(v), "httpUrl": self.http_urls.get(v)}
            for v in sorted(voters)
        ]


def default_view(node: RaftNode) -> ClusterView:
    """A view with no addresses (in-process tests): the node answers from its own state only."""
    view = ClusterView(node.node_id)
    view.metrics.attach(node)
    return view

"""Operator endpoints: quorum status, health, metrics, the cluster's addresses, leadership transfer.

``GET /quorum`` has the shape of KIP-595's DescribeQuorum. Replication progress
(log end, lag, fetch times) exists only on the leader, so a follower asks the
leader for its view (``/quorum?local=true``, bounded by one second) and relays
it; when it knows no leader, has no URL for it, or the leader does not answer,
it answers with its own view (``"source": "local"``): its own log end, the leader
id and term it knows, and ``null`` for what only a leader could tell.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pyraft.actors.node import RaftNode
from pyraft.core.errors import NotLeader, RaftError, TransferInProgress
from pyraft.core.raft import Role
from pyraft.http import schemas as s
from pyraft.http.cluster import ClusterView, PeerUnreachable
from pyraft.http.operations import Operation, Param, Reply, error_response
from pyraft.http.validation import InvalidBody, check, parse_json_object
from pyraft.metrics import CONTENT_TYPE, match_indexes

_NULL_INT: s.Schema = {"type": "integer", "nullable": True}
VOTER = s.shown(
    {
        "id": {"type": "integer"},
        "address": {"type": "string", "nullable": True, "description": "raft host:port"},
        "httpUrl": {"type": "string", "nullable": True},
        "logEndOffset": {
            **_NULL_INT,
            "description": "last log index (the leader's matchIndex for followers)",
        },
        "lag": {**_NULL_INT, "description": "entries behind the leader's log end; null off the leader"},
        "lastFetchTimestamp": {**_NULL_INT, "description": "ms since epoch of the last answer to the leader"},
        "lastCaughtUpTimestamp": {**_NULL_INT, "description": "ms since epoch it last held the leader's log"},
    }
)
QUORUM = s.shown(
    {
        "clusterId": {"type": "string"},
        "answeredBy": {"type": "integer"},
        "source": {"type": "string", "enum": ["leader", "local"]},
        "leaderId": _NULL_INT,
        "leaderEpoch": {"type": "integer", "description": "the term"},
        "highWatermark": {"type": "integer", "description": "the commit index"},
        "voters": {"type": "array", "items": VOTER},
        "observers": {"type": "array", "items": VOTER},
    }
)
HEALTH = s.shown({"status": {"type": "string"}}, description="plus the /status fields")
CLUSTER = s.shown(
    {
        "clusterId": {"type": "string"},
        "nodeId": {"type": "integer"},
        "nodes": {"type": "array", "items": {"type": "object"}},
    }
)
TRANSFER_BODY = s.closed(
    {"targetId": {**s.integer(0, s.INT32_MAX, "the voter to hand leadership to"), "nullable": True}},
    [],
    "omit targetId (or send no body) to pick the most caught-up follower",
)
TRANSFERRED = s.shown(
    {"previousLeaderId": {"type": "integer"}, "leaderId": _NULL_INT, "term": {"type": "integer"}}
)
LOCAL: s.Schema = {"type": "string", "enum": ["true", "false", "1", "0"]}


def operator_operations(node: RaftNode, view: ClusterView) -> list[Operation]:
    return [
        _quorum_operation(node, view),
        _livez_operation(node),
        _readyz_operation(node),
        _metrics_operation(view),
        _cluster_operation(node, view),
        _transfer_operation(node, view),
    ]


# --------------------------------------------------------------------------- quorum


def local_quorum(node: RaftNode, view: ClusterView) -> dict[str, Any]:
    """This node's DescribeQuorum answer; complete only on the leader."""
    core = node.core
    leading = core.role is Role.LEADER
    return {
        "clusterId": view.cluster_id,
        "answeredBy": node.node_id,
        "source": "leader" if leading else "local",
        "leaderId": core.leader_id,
        "leaderEpoch": core.term,
        "highWatermark": core.commit_index,
        "voters": [_voter(node, view, v, leading) for v in sorted(core.config.voters)],
        "observers": [],
    }


def _voter(node: RaftNode, view: ClusterView, voter: int, leading: bool) -> dict[str, Any]:
    core = node.core
    entry: dict[str, Any] = {
        "id": voter,
        "address": view.raft_addresses.get(voter),
        "httpUrl": view.http_urls.get(voter),
        "logEndOffset": None,
        "lag": None,
        "lastFetchTimestamp": None,
        "lastCaughtUpTimestamp": None,
    }
    now = _ms(time.time())
    if voter == node.node_id:
        entry["logEndOffset"] = core.log.last_index
        if leading:
            entry.update(lag=0, lastFetchTimestamp=now, lastCaughtUpTimestamp=now)
    elif leading:
        match = match_indexes(node).get(voter, 0)
        tracker = view.peers
        entry["logEndOffset"] = match
        entry["lag"] = max(0, core.log.last_index - match)
        if tracker is not None:
            entry["lastFetchTimestamp"] = _ms(tracker.last_fetch.get(voter))
            entry["lastCaughtUpTimestamp"] = _ms(tracker.last_caught_up.get(voter))
    return entry


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _quorum_operation(node: RaftNode, view: ClusterView) -> Operation:
    async def quorum(request: Request) -> Response:
        local = request.query_params.get("local")
        if local is not None:
            check(LOCAL, local, "local")
        url = view.leader_url(node)
        if local in ("true", "1") or url is None:
            return JSONResponse(local_quorum(node, view))
        try:
            status, body = await view.fetch("GET", f"{url}/quorum?local=true", None, view.leader_timeout)
        except PeerUnreachable:
            return JSONResponse(local_quorum(node, view))
        if status != 200 or body.get("source") != "leader":
            return JSONResponse(local_quorum(node, view))
        return JSONResponse({**body, "answeredBy": node.node_id})

    return Operation(
        "GET",
        "/quorum",
        "describe_quorum",
        "The quorum as KIP-595's DescribeQuorum: leader, epoch, high watermark, each voter's progress",
        quorum,
        (
            Reply(200, "the leader's view (source=leader), or this node's own (source=local)", QUORUM),
            Reply(422, "a bad value of local"),
        ),
        (Param("local", "query", LOCAL, "true: answer from this node's state without asking the leader"),),
        tag="operator",
        description="Lag and fetch times are known only to the leader. A follower relays the leader's "
        "view (asked over HTTP, at most 1 s); without a reachable leader it answers with its own view, "
        "where other voters' progress is null.",
    )


# --------------------------------------------------------------------------- health


def _livez_operation(node: RaftNode) -> Operation:
    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "live", "nodeId": node.node_id})

    return Operation(
        "GET",
        "/livez",
        "livez",
        "Liveness: the process serves HTTP",
        livez,
        (Reply(200, "always, while the process runs", HEALTH),),
        tag="operator",
    )


def readiness(node: RaftNode) -> str | None:
    """Why this node is not ready, or None: it must know a leader and have applied its commit index."""
    status = node.status()
    if status["leaderId"] is None:
        return "no leader is known"
    if status["lastApplied"] < status["commitIndex"]:
        return f"applied {status['lastApplied']} of commit index {status['commitIndex']}"
    return None


def _readyz_operation(node: RaftNode) -> Operation:
    async def readyz(request: Request) -> Response:
        why = readiness(node)
        if why is None:
            return JSONResponse({"status": "ready", **node.status()})
        return JSONResponse({"error": "not_ready", "message": why, **node.status()}, status_code=503)

    return Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: knows a leader and has applied up to the commit index it last heard",
        readyz,
        (Reply(200, "ready, with the /status fields", HEALTH), Reply(503, "not ready, and why")),
        tag="operator",
    )


# -------------------------------------------------------------------------- metrics


def _metrics_operation(view: ClusterView) -> Operation:
    async def metrics(request: Request) -> Response:
        return Response(view.metrics.render(), media_type=CONTENT_TYPE)

    return Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics in the text exposition format",
        metrics,
        (Reply(200, "metrics", {"type": "string"}, media_type="text/plain"),),
        tag="operator",
    )


def _cluster_operation(node: RaftNode, view: ClusterView) -> Operation:
    async def cluster(request: Request) -> Response:
        voters = node.core.config.voters
        return JSONResponse(
            {"clusterId": view.cluster_id, "nodeId": node.node_id, "nodes": view.nodes(tuple(voters))}
        )

    return Operation(
        "GET",
        "/cluster",
        "cluster",
        "Every voter's raft address and HTTP URL (the dashboard polls each node from this list)",
        cluster,
        (Reply(200, "the voters", CLUSTER),),
        tag="operator",
    )


# ------------------------------------------------------------------------- transfer


def _transfer_operation(node: RaftNode, view: ClusterView) -> Operation:
    async def transfer(request: Request) -> Response:
        raw = await request.body()
        body = parse_json_object(raw, TRANSFER_BODY) if raw.strip() else {}
        target = body.get("targetId")
        url = view.leader_url(node)
        if node.core.role is not Role.LEADER and url is not None:
            return await _forward_transfer(view, url, body)
        return await transfer_here(node, target)

    return Operation(
        "POST",
        "/leader/transfer",
        "transfer_leadership",
        "Hand leadership to another voter (TimeoutNow), on any node",
        transfer,
        (
            Reply(200, "leadership moved; the new leader if already known", TRANSFERRED),
            Reply(409, "a single-node quorum, or a transfer already running"),
            Reply(422, "a bad body or an unknown target"),
            Reply(503, "no leader, or the transfer did not finish within the election timeout", headers=()),
        ),
        body=TRANSFER_BODY,
        tag="operator",
        description="A follower forwards the request to the leader it knows. The leader stops taking "
        "proposals, brings the target up to date, sends it TimeoutNow and answers once it has stepped down.",
    )


async def _forward_transfer(view: ClusterView, url: str, body: dict[str, Any]) -> Response:
    try:
        status, answer = await view.fetch("POST", f"{url}/leader/transfer", body, 2 * view.leader_timeout + 2)
    except PeerUnreachable as exc:
        return error_response(503, "no_leader", f"the leader did not answer: {exc}")
    return JSONResponse(answer, status_code=status)


async def transfer_here(node: RaftNode, target: int | None) -> Response:
    """Run the transfer on this node (the leader) and wait, bounded, until it has stepped down."""
    voters = node.core.config.voters
    if target is not None and target not in voters:
        raise InvalidBody("invalid_value", f"targetId {target} is not a voter ({sorted(voters)})")
    if len(voters) == 1:
        return error_response(409, "single_node", "a single-node quorum has nobody to hand leadership to")
    previous = node.node_id
    if target == previous and node.core.role is Role.LEADER:
        return JSONResponse({"previousLeaderId": previous, "leaderId": previous, "term": node.core.term})
    try:
        await node.transfer_leadership(target)
    except TransferInProgress as exc:
        return error_response(409, "transfer_in_progress", str(exc))
    except NotLeader as exc:
        return error_response(503, "no_leader", str(exc))
    except (RaftError, ValueError) as exc:
        raise InvalidBody("invalid_value", str(exc)) from exc
    return await _await_new_leader(node, previous)


async def _await_new_leader(node: RaftNode, previous: int) -> Response:
    """Wait for this node to step down and learn the new leader; the core aborts after a timeout."""
    with trio.move_on_after(4 * node.timing.election_timeout_ms / 1000):
        while node.core.role is Role.LEADER or node.core.leader_id in (None, previous):
            await node.role_changed.wait()
    if node.core.role is Role.LEADER:
        return error_response(503, "transfer_timeout", "the target did not take over in time; still leader")
    return JSONResponse(
        {"previousLeaderId": previous, "leaderId": node.core.leader_id, "term": node.core.term}
    )

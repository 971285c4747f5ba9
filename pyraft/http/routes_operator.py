"""Operator endpoints: quorum status, health, metrics, the cluster's addresses, leadership
transfer, and membership changes.

``GET /quorum`` has the shape of KIP-595's DescribeQuorum, read from the live
configuration (voters, and learners as observers). Replication progress (log
end, lag, fetch times) exists only on the leader, so a follower asks the leader
for its view (``/quorum?local=true``, bounded by one second) and relays it; when
it knows no leader, has no URL for it, or the leader does not answer, it answers
with its own view (``"source": "local"``): its own log end, the leader id and term
it knows, and ``null`` for what only a leader could tell.

``POST /quorum/voters`` and ``DELETE /quorum/voters/{id}`` are KIP-853's
AddRaftVoter and RemoveRaftVoter. Like a leadership transfer they run on the
leader: a follower forwards them to the leader it knows, or answers 503 with the
leader hint when it cannot.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pyraft.actors.node import CatchUpTimeout, OutcomeUnknown, RaftNode
from pyraft.core.errors import (
    ConfigChangeInProgress,
    NoLeader,
    NotLeader,
    RaftError,
    RequestLost,
    TransferInProgress,
)
from pyraft.core.membership import Member, MembershipError
from pyraft.core.raft import Role
from pyraft.http import schemas as s
from pyraft.http.cluster import ClusterView, PeerUnreachable
from pyraft.http.operations import Operation, Param, Reply, error_response, path_int
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
OBSERVER = s.shown(
    dict(VOTER["properties"]),
    description="a learner: replicates the log, does not vote (KIP-595's observer)",
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
        "observers": {"type": "array", "items": OBSERVER},
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
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
RAFT_ADDRESS: s.Schema = {
    "type": "string",
    "minLength": 3,
    "maxLength": 261,
    "pattern": f"^[A-Za-z0-9]([A-Za-z0-9.-]{{0,253}}[A-Za-z0-9])?:{_PORT}$",
    "description": "HOST:PORT of the new voter's raft port (a hostname or IPv4 address, port 1-65535)",
}
NODE_ID = s.integer(0, s.INT32_MAX, "a node id (the node's --id)")
DEFAULT_CATCH_UP_MS = 30_000
ADD_VOTER_BODY = s.closed(
    {
        "id": NODE_ID,
        "address": RAFT_ADDRESS,
        "timeoutMs": s.integer(
            1, 3_600_000, f"how long the leader waits for it to catch up (default {DEFAULT_CATCH_UP_MS})"
        ),
    },
    ["id", "address"],
    "the node must already run as an observer (python -m pyraft.node with an --id outside --voters)",
)
RETRY_AFTER = {"Retry-After": "1"}


def operator_operations(node: RaftNode, view: ClusterView) -> list[Operation]:
    return [
        _quorum_operation(node, view),
        _add_voter_operation(node, view),
        _remove_voter_operation(node, view),
        _livez_operation(node),
        _readyz_operation(node),
        _metrics_operation(view),
        _cluster_operation(node, view),
        _transfer_operation(node, view),
    ]


# --------------------------------------------------------------------------- quorum


def local_quorum(node: RaftNode, view: ClusterView) -> dict[str, Any]:
    """This node's DescribeQuorum answer from the configuration in effect; complete only on the
    leader. A node outside the configuration (waiting to be added) lists itself as an observer."""
    core = node.core
    leading = core.role is Role.LEADER
    membership = core.membership
    observers = [m.node_id for m in membership.learners]
    if node.node_id not in membership.ids:
        observers.append(node.node_id)
    return {
        "clusterId": view.cluster_id,
        "answeredBy": node.node_id,
        "source": "leader" if leading else "local",
        "leaderId": core.leader_id,
        "leaderEpoch": core.term,
        "highWatermark": core.commit_index,
        "voters": [_member(node, view, m.node_id, leading) for m in membership.voters],
        "observers": [_member(node, view, i, leading) for i in sorted(observers)],
    }


def _member(node: RaftNode, view: ClusterView, member: int, leading: bool) -> dict[str, Any]:
    core = node.core
    entry: dict[str, Any] = {
        "id": member,
        "address": view.raft_address(node, member),
        "httpUrl": view.http_url(node, member),
        "logEndOffset": None,
        "lag": None,
        "lastFetchTimestamp": None,
        "lastCaughtUpTimestamp": None,
    }
    now = _ms(time.time())
    if member == node.node_id:
        entry["logEndOffset"] = core.log.last_index
        if leading:
            entry.update(lag=0, lastFetchTimestamp=now, lastCaughtUpTimestamp=now)
    elif leading:
        match = match_indexes(node).get(member, 0)
        tracker = view.peers
        entry["logEndOffset"] = match
        entry["lag"] = max(0, core.log.last_index - match)
        if tracker is not None:
            entry["lastFetchTimestamp"] = _ms(tracker.last_fetch.get(member))
            entry["lastCaughtUpTimestamp"] = _ms(tracker.last_caught_up.get(member))
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
        "The quorum as KIP-595's DescribeQuorum: leader, epoch, high watermark, each member's progress",
        quorum,
        (
            Reply(200, "the leader's view (source=leader), or this node's own (source=local)", QUORUM),
            Reply(422, "a bad value of local"),
        ),
        (Param("local", "query", LOCAL, "true: answer from this node's state without asking the leader"),),
        tag="operator",
        description="Voters and observers (learners) come from the configuration in effect, so they "
        "follow POST/DELETE /quorum/voters. Lag and fetch times are known only to the leader. A follower "
        "relays the leader's view (asked over HTTP, at most 1 s); without a reachable leader it answers "
        "with its own view, where other members' progress is null.",
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
        return JSONResponse({"clusterId": view.cluster_id, "nodeId": node.node_id, "nodes": view.nodes(node)})

    return Operation(
        "GET",
        "/cluster",
        "cluster",
        "Every member's raft address and HTTP URL (the dashboard polls each node from this list)",
        cluster,
        (Reply(200, "voters, then observers (learners), each with voter true or false", CLUSTER),),
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
    voters = node.core.membership.voter_ids
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


# ----------------------------------------------------------------------- membership


def _add_voter_operation(node: RaftNode, view: ClusterView) -> Operation:
    async def add_voter(request: Request) -> Response:
        body = _add_voter_body(await request.body())
        catch_up = body.get("timeoutMs", DEFAULT_CATCH_UP_MS) / 1000
        if node.core.role is not Role.LEADER:
            bound = catch_up + 2 * view.change_timeout + view.probe_timeout + 2
            return await _forward_change(node, view, "POST", "/quorum/voters", body, bound)
        return await add_voter_here(node, view, Member(body["id"], body["address"]), catch_up)

    return Operation(
        "POST",
        "/quorum/voters",
        "add_voter",
        "Add a voter (KIP-853's AddRaftVoter): observer first, then voter once it has caught up",
        add_voter,
        (
            Reply(201, "the node is a voter; the quorum as GET /quorum shows it", QUORUM),
            Reply(409, "already a voter, its address or id conflicts with a member, or another change runs"),
            Reply(422, "a bad body, nothing answers at the address, or another node does"),
            Reply(503, "no leader, the leader changed, or the outcome is unknown", headers=("Retry-After",)),
            Reply(504, "it did not catch up within timeoutMs: it stays an observer (error catch_up_timeout)"),
        ),
        body=ADD_VOTER_BODY,
        tag="operator",
        description="Start the node first: python -m pyraft.node with its --id outside --voters runs it as "
        "an observer. The leader checks that this node answers at the address, adds it as a learner "
        "(an observer: it replicates, takes a snapshot if the log was compacted, but does not vote), waits "
        "until it holds everything committed, then makes it a voter. Each step is one committed "
        "configuration change; one change runs at a time. A follower forwards the request to the leader. "
        "Repeating a request that timed out continues with the observer already added.",
    )


def _remove_voter_operation(node: RaftNode, view: ClusterView) -> Operation:
    async def remove_voter(request: Request) -> Response:
        node_id = path_int(request, "id", NODE_ID)
        if node.core.role is not Role.LEADER:
            path = f"/quorum/voters/{node_id}"
            return await _forward_change(node, view, "DELETE", path, None, view.change_timeout + 2)
        return await remove_voter_here(node, view, node_id)

    return Operation(
        "DELETE",
        "/quorum/voters/{id}",
        "remove_voter",
        "Remove a voter or an observer (KIP-853's RemoveRaftVoter); the leader may remove itself",
        remove_voter,
        (
            Reply(200, "removed; the quorum as GET /quorum shows it", QUORUM),
            Reply(404, "no member has this id"),
            Reply(409, "the last voter, or another change runs"),
            Reply(422, "a bad id"),
            Reply(503, "no leader, the leader changed, or the outcome is unknown", headers=("Retry-After",)),
        ),
        (Param("id", "path", NODE_ID, "the node to remove"),),
        tag="operator",
        description="A follower forwards the request to the leader. A leader that removes itself answers "
        "once the change is committed, then hands leadership to a caught-up voter (TimeoutNow) and stops "
        "voting. Stop the removed node's process afterwards; it no longer counts toward any majority.",
    )


def _add_voter_body(raw: bytes) -> dict[str, Any]:
    """The validated body; a bad address gets a message that says what an address looks like."""
    try:
        return parse_json_object(raw, ADD_VOTER_BODY)
    except InvalidBody as exc:
        if exc.code == "invalid_value" and exc.message.startswith("body.address "):
            raise InvalidBody(exc.code, f"body.address: {RAFT_ADDRESS['description']}") from None
        raise


async def _forward_change(
    node: RaftNode, view: ClusterView, method: str, path: str, body: dict[str, Any] | None, bound: float
) -> Response:
    """Relay a membership change to the leader and its answer back; 503 with the hint otherwise."""
    url = view.leader_url(node)
    if url is None:
        return _not_leader(NotLeader(node.core.leader_id) if node.core.leader_id is not None else NoLeader())
    try:
        status, answer = await view.fetch(method, url + path, body, bound)
    except PeerUnreachable as exc:
        return error_response(
            503,
            "leader_unreachable",
            f"the leader (node {node.core.leader_id}) did not answer: {exc}; the change may or may not "
            "have taken effect: GET /quorum shows the configuration",
            headers=RETRY_AFTER,
        )
    headers = RETRY_AFTER if status == 503 else None
    return JSONResponse(answer, status_code=status, headers=headers)


async def add_voter_here(node: RaftNode, view: ClusterView, member: Member, catch_up: float) -> Response:
    """On the leader: check the request against the configuration, probe the node, run AddRaftVoter."""
    refused = _add_conflict(node, member)
    if refused is not None:
        return refused
    try:
        answered = await view.probe(member.address, view.cluster_id, view.probe_timeout)
    except PeerUnreachable as exc:
        raise InvalidBody(
            "unreachable",
            f"{exc}; start node {member.node_id} first (python -m pyraft.node --id {member.node_id} "
            "with this quorum's --voters) and repeat the request",
        ) from None
    if answered != member.node_id:
        where = f"node {answered} answers at {member.address}"
        raise InvalidBody("wrong_node", f"{where}, not node {member.node_id}")
    with trio.move_on_after(catch_up + 2 * view.change_timeout):
        try:
            await node.add_voter(member, catch_up_timeout=catch_up)
        except CatchUpTimeout as exc:
            return _catch_up_timeout(member, exc)
        except (RaftError, MembershipError) as exc:
            return _change_failed(exc)
        return JSONResponse(local_quorum(node, view), status_code=201)
    return _change_unknown(f"adding node {member.node_id} did not finish in time")


def _add_conflict(node: RaftNode, member: Member) -> Response | None:
    """A 409 when the new member clashes with the configuration in effect, else None."""
    membership = node.core.membership
    if member.node_id in membership.voter_ids:
        return error_response(409, "already_voter", f"node {member.node_id} is already a voter")
    for other, address in membership.addresses().items():
        if other == member.node_id and address != member.address:
            return error_response(
                409,
                "address_mismatch",
                f"node {other} is already an observer at {address}; remove it first to change its address",
            )
        if other != member.node_id and address == member.address:
            return error_response(409, "address_in_use", f"node {other} already has the address {address}")
    return None


async def remove_voter_here(node: RaftNode, view: ClusterView, node_id: int) -> Response:
    """On the leader: RemoveRaftVoter, answered once the new configuration is committed."""
    membership = node.core.membership
    if node_id not in membership.ids:
        return error_response(
            404,
            "not_found",
            f"node {node_id} is not a member (voters {sorted(membership.voter_ids)}, "
            f"observers {sorted(membership.learner_ids)})",
        )
    with trio.move_on_after(view.change_timeout):
        try:
            await node.remove_voter(node_id)
        except (RaftError, MembershipError) as exc:
            return _change_failed(exc)
        return JSONResponse(local_quorum(node, view))
    return _change_unknown(f"removing node {node_id} did not commit in time")


def _catch_up_timeout(member: Member, exc: CatchUpTimeout) -> Response:
    return error_response(
        504,
        "catch_up_timeout",
        f"{exc}; it is an observer now, not a voter: repeat the request to keep waiting, or "
        f"DELETE /quorum/voters/{member.node_id} to drop it",
    )


def _change_failed(exc: Exception) -> Response:
    """The status an engine error maps to: 409 for a refused change, 503 for a lost leader."""
    match exc:
        case ConfigChangeInProgress():
            return error_response(409, "change_in_progress", str(exc))
        case TransferInProgress():
            return error_response(409, "transfer_in_progress", str(exc))
        case MembershipError():
            return error_response(409, "invalid_change", str(exc))
        case NotLeader():
            return _not_leader(exc)
        case RequestLost():
            return error_response(503, "not_applied", f"{exc}; nothing changed", headers=RETRY_AFTER)
        case OutcomeUnknown():
            return _change_unknown(str(exc))
    return _change_unknown(f"{type(exc).__name__}: {exc}")


def _not_leader(exc: NotLeader) -> Response:
    code = "no_leader" if exc.leader_id is None else "not_leader"
    return JSONResponse(
        {"error": code, "message": f"{exc}; membership changes run on the leader", "leaderId": exc.leader_id},
        status_code=503,
        headers=RETRY_AFTER,
    )


def _change_unknown(why: str) -> Response:
    return error_response(
        503,
        "outcome_unknown",
        f"{why}; the change may or may not take effect: GET /quorum shows the configuration",
        headers=RETRY_AFTER,
    )

"""Node endpoints: ``/status`` (unchanged from the engine) and ``/events`` (this node's event log)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pyraft.actors.node import RaftNode
from pyraft.http import schemas as s
from pyraft.http.operations import Operation, Param, Reply, query_int
from pyraft.metadata.events import EventLog

SINCE = s.integer(0, s.INT64_MAX, "return events numbered above this (default 0: the oldest kept)")
LIMIT = s.integer(1, 1000, "at most this many events (default 100)")


def node_operations(node: RaftNode, events: EventLog) -> list[Operation]:
    async def status(request: Request) -> Response:
        return JSONResponse(node.status())

    async def list_events(request: Request) -> Response:
        since = query_int(request, "since", SINCE, 0)
        limit = query_int(request, "limit", LIMIT, 100)
        assert since is not None and limit is not None
        found = events.since(since, limit)
        return JSONResponse({"events": [e.to_json() for e in found], "lastSeq": events.last_seq})

    return [
        Operation(
            "GET",
            "/status",
            "status",
            "This node's Raft status: role, term, leader, commit and apply progress",
            status,
            (Reply(200, "the node's status", s.STATUS),),
            tag="node",
        ),
        Operation(
            "GET",
            "/events",
            "events",
            "This node's recent events: elections, role, term and leader changes, API writes, peers",
            list_events,
            (Reply(200, "events after ?since=, oldest first", s.EVENTS), Reply(422, "a bad since or limit")),
            (Param("since", "query", SINCE), Param("limit", "query", LIMIT)),
            tag="node",
            description="Observability only: a bounded in-memory ring per node, lost on restart, never "
            "replicated. Page forward with ?since=<lastSeq of the previous page>.",
        ),
    ]

"""The node's HTTP surface: a Starlette app served by hypercorn's trio worker in the node's event loop.

``build_app(node)`` alone serves the engine's ``/status``, the operator
endpoints (``/quorum``, ``/livez``, ``/readyz``, ``/metrics``, ``/cluster``,
``/leader/transfer``) and the dashboard at ``/``; with a ``MetadataService`` it
serves the whole metadata API and ``/events`` too, and always the OpenAPI
document and its HTML rendering. Every JSON answer is an object, errors
included (unknown paths and methods too), so clients never parse bare strings.
Every operation's handling time is observed under its route template; CORS is
open so the dashboard served by one node can poll the others.
"""

from __future__ import annotations

import dataclasses
import re
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import pyraft
from pyraft.actors.node import RaftNode
from pyraft.http.cluster import ClusterView, default_view
from pyraft.http.docs import render_docs
from pyraft.http.openapi import build_openapi
from pyraft.http.operations import Handler, Operation, Reply, error_response, guarded
from pyraft.http.routes_dashboard import dashboard_operations
from pyraft.http.routes_metadata import metadata_operations
from pyraft.http.routes_node import node_operations
from pyraft.http.routes_operator import operator_operations
from pyraft.metadata.events import EventLog
from pyraft.metadata.service import MetadataService
from pyraft.metrics import NodeMetrics

HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_app(
    node: RaftNode,
    service: MetadataService | None = None,
    events: EventLog | None = None,
    view: ClusterView | None = None,
) -> Starlette:
    """``view`` carries addresses and metrics; without one, a view of this node alone is made."""
    events = events if events is not None else (service.events if service is not None else None) or EventLog()
    view = view if view is not None else default_view(node)
    operations = node_operations(node, events) + operator_operations(node, view)
    if service is not None:
        operations += metadata_operations(service)
    operations += dashboard_operations()
    operations += _document_operations(operations)
    timed = [dataclasses.replace(op, handler=_timed(op, view.metrics)) for op in operations]
    routes: list[Route] = [route for op in timed for route in op.routes()]
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE"])
    return Starlette(
        routes=routes,
        middleware=[cors, Middleware(ControlCharacterGuard)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ControlCharacterGuard:
    """Answers 404 to a path holding a control character, before any route sees it.

    Starlette matches routes with ``$``, which also matches before a final newline:
    ``GET /get_topic/%0A`` (a topic named "\\n") was served by ``/get_topic/`` and
    answered with every topic. No name or id this API serves can hold one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _CONTROL.search(scope["path"]):
            response = error_response(404, "not_found", "no resource has a control character in its path")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _timed(op: Operation, metrics: NodeMetrics) -> Handler:
    """The operation's handler, observed in the HTTP duration histogram under its route template."""
    handler, method, route = guarded(op.handler), op.method, op.path  # errors answered, so counted
    histogram = metrics.http

    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        code = "500"
        try:
            response = await handler(request)
            code = str(response.status_code)
            return response
        finally:
            histogram.labels(method, route, code).observe(time.perf_counter() - started)

    return handle


def _document_operations(operations: list[Operation]) -> list[Operation]:
    """``/openapi.json`` and ``/docs``, describing ``operations`` and themselves."""
    document: dict[str, object] = {}

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    own = [
        Operation(
            "GET",
            "/openapi.json",
            "openapi",
            "This OpenAPI document",
            openapi,
            (Reply(200, "the OpenAPI 3.0 document", {"type": "object"}),),
            tag="docs",
        ),
        Operation(
            "GET",
            "/docs",
            "docs",
            "The API documentation as a readable HTML page",
            docs,
            (Reply(200, "an HTML page", {"type": "string"}, media_type="text/html"),),
            tag="docs",
        ),
    ]
    document.update(build_openapi([*operations, *own], pyraft.__version__))
    page = render_docs(document)
    return own


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", f"{type(exc).__name__}: the server failed to answer")

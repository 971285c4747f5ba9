"""The node's HTTP surface: a Starlette app served by hypercorn's trio worker in the node's event loop.

``build_app(node)`` alone serves the engine's ``/status``; with a
``MetadataService`` it serves the whole metadata API, ``/events``, the OpenAPI
document and its HTML rendering. Every answer is a JSON object, errors
included (unknown paths and methods too), so clients never parse bare strings.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

import pyraft
from pyraft.actors.node import RaftNode
from pyraft.http.docs import render_docs
from pyraft.http.openapi import build_openapi
from pyraft.http.operations import Operation, Reply, error_response
from pyraft.http.routes_metadata import metadata_operations
from pyraft.http.routes_node import node_operations
from pyraft.metadata.events import EventLog
from pyraft.metadata.service import MetadataService

HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_app(
    node: RaftNode, service: MetadataService | None = None, events: EventLog | None = None
) -> Starlette:
    events = events if events is not None else (service.events if service is not None else None) or EventLog()
    operations = node_operations(node, events)
    if service is not None:
        operations += metadata_operations(service)
    operations += _document_operations(operations)
    routes: list[Route] = [route for op in operations for route in op.routes()]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})


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

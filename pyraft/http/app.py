"""The node's HTTP surface: a Starlette app served by hypercorn's trio worker in the node's event loop."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pyraft.actors.node import RaftNode


def build_app(node: RaftNode) -> Starlette:
    async def status(request: Request) -> JSONResponse:
        return JSONResponse(node.status())

    return Starlette(routes=[Route("/status", status, methods=["GET"])])

"""The REST benchmark's ceiling: the same stack (Starlette on hypercorn's trio worker) with no Raft.

    python -m bench.hello_app --port 26500

``POST /register_broker_change/`` parses the JSON body and echoes it back;
``GET /get_broker/{id}`` answers a small JSON object. No middleware, no
validation, no consensus: what the HTTP stack alone serves on this machine,
measured in the same command as pyraft's REST API.
"""

from __future__ import annotations

import argparse

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pyraft.http.server import serve_http


async def echo(request: Request) -> Response:
    return JSONResponse(await request.json())


async def broker(request: Request) -> Response:
    return JSONResponse({"brokerId": int(request.path_params["broker_id"]), "status": "ALIVE"})


APP = Starlette(
    routes=[
        Route("/register_broker_change/", echo, methods=["POST"]),
        Route("/get_broker/{broker_id:int}", broker),
    ]
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    trio.run(serve_http, APP, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()

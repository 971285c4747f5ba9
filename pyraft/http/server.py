"""Serves an ASGI app with hypercorn on trio, inside the caller's nursery."""

from __future__ import annotations

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.types import ASGIApp


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``started()`` hands back the bound URLs, so ``port=0`` (any free port) is usable."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

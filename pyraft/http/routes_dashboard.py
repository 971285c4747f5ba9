"""The live dashboard: three static files (HTML, CSS, JS) from ``pyraft/dashboard/``, no build step.

They are read once when the app is built, so serving them costs nothing and a
broken install fails at start rather than on the first page view.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from pyraft.http.operations import Operation, Reply

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
FILES = (
    ("/", "index.html", "text/html", "The live cluster dashboard (polls every node's /status)"),
    ("/dashboard/app.js", "app.js", "text/javascript", "The dashboard's script"),
    ("/dashboard/style.css", "style.css", "text/css", "The dashboard's style sheet"),
)


def dashboard_operations() -> list[Operation]:
    return [_static(path, name, media, summary) for path, name, media, summary in FILES]


def _static(path: str, name: str, media_type: str, summary: str) -> Operation:
    content = (DASHBOARD_DIR / name).read_bytes()

    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    op_name = "dashboard_" + name.replace(".", "_")
    reply = Reply(200, summary, {"type": "string"}, media_type=media_type)
    return Operation("GET", path, op_name, summary, serve, (reply,), tag="dashboard")

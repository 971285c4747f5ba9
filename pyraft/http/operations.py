"""One table of operations drives both the Starlette routes and the OpenAPI document.

An ``Operation`` names its method, canonical path, parameters, body schema and
every status it can answer; ``routes()`` mounts it at the path with and without
the trailing slash, and ``openapi.py`` describes it from the same fields, so the
two cannot drift apart. Handlers raise ``InvalidBody`` (422) or ``ServiceError``
(its own status); the wrapper turns both into ``{"error", "message"}`` bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pyraft.http.schemas import ERROR, Schema
from pyraft.http.validation import InvalidBody, check, parse_int_param, parse_json_object
from pyraft.metadata.service import CONSISTENCY_LEVELS, LINEARIZABLE, ServiceError

Handler = Callable[[Request], Awaitable[Response]]

IDEMPOTENCY_KEY: Schema = {"type": "string", "pattern": "^[!-~]{1,128}$"}


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter, as OpenAPI describes it."""

    name: str
    where: str  # path | query | header
    schema: Schema
    description: str = ""
    required: bool = False

    def to_openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "description": self.description,
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Reply:
    """One documented answer: status, what it means, its body schema and headers."""

    status: int
    description: str
    schema: Schema = field(default_factory=lambda: ERROR)
    headers: tuple[str, ...] = ()
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # canonical form, as in the table
    name: str  # operationId
    summary: str
    handler: Handler
    replies: tuple[Reply, ...]
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    tag: str = "metadata"
    description: str = ""

    def routes(self) -> list[Route]:
        """The operation at its path with and without the trailing slash."""
        other = self.path[:-1] if self.path.endswith("/") else self.path + "/"
        paths = [p for p in (self.path, other) if p]  # "/" has no form without its slash
        endpoint = guarded(self.handler)
        return [
            Route(p, endpoint, methods=[self.method], name=f"{self.name}{i}") for i, p in enumerate(paths)
        ]


def guarded(handler: Handler) -> Handler:
    """Turn the errors a handler may raise into JSON error responses with their status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidBody as exc:
            return error_response(422, exc.code, exc.message)
        except ServiceError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
            return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)

    return endpoint


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


# ------------------------------------------------------------------------ request helpers


async def body_of(request: Request, schema: Schema) -> dict[str, Any]:
    """The request's JSON body, validated against ``schema`` (422 when it does not fit)."""
    return parse_json_object(await request.body(), schema)


def path_int(request: Request, name: str, schema: Schema) -> int:
    return parse_int_param(request.path_params[name], schema, name)


def query_int(request: Request, name: str, schema: Schema, default: int | None = None) -> int | None:
    text = request.query_params.get(name)
    return default if text is None else parse_int_param(text, schema, name)


def required_query_int(request: Request, name: str, schema: Schema) -> int:
    """A query integer the operation cannot do without (422 missing_field when absent)."""
    value = query_int(request, name, schema)
    if value is None:
        raise InvalidBody("missing_field", f"query parameter {name} is required")
    return value


def query_str(request: Request, name: str, schema: Schema) -> str | None:
    text = request.query_params.get(name)
    if text is not None:
        check(schema, text, name)
    return text


def consistency(request: Request) -> str:
    return query_str(request, "consistency", CONSISTENCY) or LINEARIZABLE


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None:
        check(IDEMPOTENCY_KEY, key, "Idempotency-Key")
    return key


CONSISTENCY: Schema = {"type": "string", "enum": list(CONSISTENCY_LEVELS)}
CONSISTENCY_PARAM = Param(
    "consistency",
    "query",
    CONSISTENCY,
    "linearizable (default): ReadIndex through the leader, sees every write acknowledged before the "
    "request; stale: this node's store as it is, answered without a quorum",
)
IDEMPOTENCY_PARAM = Param(
    "Idempotency-Key",
    "header",
    IDEMPOTENCY_KEY,
    "makes a retry safe: the same request (operation, path and body) with a key already applied returns "
    "the first result and changes nothing; a key is scoped to its request, so reusing it for a different "
    "request does not return another request's result",
)

"""The OpenAPI 3.0 document, built from the same Operation table that mounts the routes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyraft.http.operations import Operation, Reply

TITLE = "pyraft metadata API"
DESCRIPTION = (
    "KRaft-style cluster metadata (brokers, topics, partitions, producer ids) kept by a Raft quorum. "
    "Every node serves every endpoint: a write on a follower is forwarded to the leader and answered once "
    "it is committed and applied on the node that took it; reads are linearizable unless "
    "?consistency=stale. Every path also answers with the trailing slash added or removed. Errors are "
    '{"error": code, "message": text}; 503 carries Retry-After.'
)


def build_openapi(operations: Iterable[Operation], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "paths": paths,
    }


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": {str(r.status): _reply(r) for r in op.replies},
    }
    if op.description:
        doc["description"] = op.description
    if op.params:
        doc["parameters"] = [p.to_openapi() for p in op.params]
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    return doc


def _reply(reply: Reply) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "description": reply.description,
        "content": {reply.media_type: {"schema": reply.schema}},
    }
    if reply.headers:
        doc["headers"] = {
            name: {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
            for name in reply.headers
        }
    return doc

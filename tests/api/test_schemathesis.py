"""Schemathesis against ``/openapi.json`` of a live node: no 5xx, every answer matches the schema.

Generated requests (valid and deliberately invalid) exercise every operation;
the checks are the contract ones: no server error, documented status codes,
content types and headers, response bodies valid against their schemas, and
schema-invalid requests rejected.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .live import live_node

EXAMPLES = 12  # per operation and mode: about 650 requests in all

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def _seed(base: str) -> None:
    """Some state, so that generated ids sometimes hit and 200s get checked too."""
    for broker_id in (0, 1):
        body = {"brokerId": broker_id, "brokerHost": "h", "brokerPort": 9092, "securityProtocol": "PLAINTEXT"}
        _post(base, "/register_broker/", body)
    topic = _post(base, "/register_topic/", {"name": "0"})
    _post(base, "/register_partition/", {"partitionId": 0, "topicUUID": topic["topicUUID"], "replicas": [0]})


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with live_node() as url:
        _seed(url)
        yield url


MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def operations(url: str) -> list[Any]:
    found = []
    for result in schemathesis.openapi.from_url(f"{url}/openapi.json").get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"schemathesis cannot read an operation of our document: {result.err()}")
        found.append(result.ok())
    return found


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_api_matches_its_schema(live_url: str, mode: GenerationMode) -> None:
    """Each operation gets its own bounded hypothesis run (schemathesis' pytest plugin predates pytest 9)."""
    for operation in operations(live_url):
        if (
            mode is GenerationMode.NEGATIVE
            and not operation.definition.raw.get("parameters")
            and not operation.body
        ):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=live_url, checks=CHECKS)

        check()

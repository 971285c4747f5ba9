"""Strict validation: a malformed or mistyped request is a 422 {"error", "message"} and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .harness import BROKER, api_cluster, post, topic

UUID = "0b5e2c9e-8f1d-4f7a-9c35-0123456789ab"
PARTITION = {"partitionId": 0, "topicUUID": UUID, "replicas": [1]}
PRODUCER = {"brokerId": 1, "producerId": 1, "brokerEpoch": 1}
CHANGE = {**BROKER, "brokerStatus": "ALIVE"}

# (path, body, error code): one row per rule.
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("/register_broker/", [BROKER], "invalid_type"),  # not an object
    ("/register_broker/", "broker", "invalid_type"),
    ("/register_broker/", {**BROKER, "brokerId": True}, "invalid_type"),  # bool is not an int
    ("/register_broker/", {**BROKER, "brokerId": 1.0}, "invalid_type"),
    ("/register_broker/", {**BROKER, "brokerId": "1"}, "invalid_type"),
    ("/register_broker/", {**BROKER, "brokerId": -1}, "out_of_range"),
    ("/register_broker/", {**BROKER, "brokerId": 2**31}, "out_of_range"),
    ("/register_broker/", {**BROKER, "brokerPort": 0}, "out_of_range"),
    ("/register_broker/", {**BROKER, "brokerPort": 65536}, "out_of_range"),
    ("/register_broker/", {**BROKER, "brokerHost": ""}, "invalid_value"),
    ("/register_broker/", {**BROKER, "securityProtocol": "TLS"}, "invalid_value"),
    ("/register_broker/", {**BROKER, "rackId": ""}, "invalid_value"),
    ("/register_broker/", {**BROKER, "rackId": 3}, "invalid_type"),
    ("/register_broker/", {k: v for k, v in BROKER.items() if k != "brokerHost"}, "missing_field"),
    ("/register_broker/", {**BROKER, "brokerEpoch": 3}, "unknown_field"),
    ("/register_broker_change/", {**CHANGE, "brokerStatus": "SLEEPING"}, "invalid_value"),
    ("/register_broker_change/", BROKER, "missing_field"),
    ("/register_broker_change/", {**CHANGE, "rackId": "r"}, "unknown_field"),
    ("/register_topic/", {}, "missing_field"),
    ("/register_topic/", {"name": ""}, "invalid_value"),
    ("/register_topic/", {"name": "has space"}, "invalid_value"),
    ("/register_topic/", {"name": "x" * 250}, "invalid_value"),
    ("/register_topic/", {"name": None}, "invalid_type"),
    ("/register_topic/", {"name": "t", "partitions": 3}, "unknown_field"),
    ("/register_partition/", {**PARTITION, "topicUUID": "not-a-uuid"}, "invalid_value"),
    ("/register_partition/", {**PARTITION, "replicas": []}, "invalid_value"),
    ("/register_partition/", {**PARTITION, "replicas": [1, 1]}, "invalid_value"),
    ("/register_partition/", {**PARTITION, "replicas": [1, "2"]}, "invalid_type"),
    ("/register_partition/", {**PARTITION, "replicas": 1}, "invalid_type"),
    ("/register_partition/", {**PARTITION, "ISR": [True]}, "invalid_type"),
    ("/register_partition/", {**PARTITION, "leader": -2}, "out_of_range"),
    ("/register_partition/", {**PARTITION, "partitionEpoch": -1}, "out_of_range"),
    ("/register_partition/", {**PARTITION, "isr": [1]}, "unknown_field"),  # the field is ISR
    ("/register_producer/", {**PRODUCER, "producerId": -1}, "out_of_range"),
    ("/register_producer/", {**PRODUCER, "brokerEpoch": False}, "invalid_type"),
    ("/register_producer/", {"brokerId": 1, "producerId": 1}, "missing_field"),
    ("/get_producer/", {"brokerId": 1}, "missing_field"),
    ("/get_producer/", {"brokerId": 1, "producerId": 1, "brokerEpoch": 1}, "unknown_field"),
    ("/metadata_fetch/", {}, "missing_field"),
    ("/metadata_fetch/", {"offset": -1}, "out_of_range"),
    ("/metadata_fetch/", {"offset": 0, "maxRecords": 0}, "out_of_range"),
    ("/metadata_fetch/", {"offset": "0"}, "invalid_type"),
]


async def test_bad_bodies_are_422_and_change_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        before = leader.store.dump()
        for path, body, code in BAD_BODIES:
            response = await post(leader, path, body)
            assert response.status_code == 422, (path, body, response.text)
            assert response.json()["error"] == code, (path, body, response.json())
            assert response.json()["message"]
        assert leader.store.dump() == before


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"NaN", b'{"offset": Infinity}', b"\xff\xfe"])
async def test_malformed_json_is_422(autojump_clock: trio.abc.Clock, raw: bytes) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        response = await leader.http.post("/metadata_fetch/", content=raw)
        assert response.status_code == 422
        assert response.json()["error"] == "malformed_json"


BAD_PARAMS = [
    ("GET", "/get_broker/abc"),
    ("GET", "/get_broker/-1"),
    ("GET", "/get_broker/1.5"),
    ("GET", "/get_broker/?broker_id=true"),
    ("GET", "/get_broker/99999999999999999999"),
    ("DELETE", "/delete_broker/x"),
    ("GET", "/get_partition/x"),
    ("GET", "/get_partition/?partition_id=-3"),
    ("GET", "/get_partition/?topic_uuid=nope"),
    ("DELETE", "/delete_partition/1?topic_uuid=nope"),
    ("GET", "/get_topic/?consistency=strong"),
    ("GET", "/events?since=-1"),
    ("GET", "/events?limit=0"),
    ("GET", "/events?limit=ten"),
]


async def test_bad_parameters_are_422(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        for method, path in BAD_PARAMS:
            response = await leader.http.request(method, path)
            assert response.status_code == 422, (method, path, response.text)
            assert set(response.json()) >= {"error", "message"}


async def test_bad_idempotency_key_is_422(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        for key in ("", "x" * 129, "has space"):
            response = await post(leader, "/register_topic/", {"name": "t"}, key=key)
            assert response.status_code == 422, key
        assert leader.store.topics() == []


async def test_unknown_paths_and_methods_answer_json(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        missing = await leader.http.get("/register_brokers/")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        wrong = await leader.http.put("/register_topic/", json={"name": "t"})
        assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
        assert "POST" in wrong.headers["allow"]


CONTROL_CHARACTER_PATHS = [
    ("GET", "/get_topic/%0A"),  # was answered by /get_topic/ with every topic (Starlette's "$")
    ("GET", "/get_broker/%0A"),
    ("GET", "/get_partition/%0A"),
    ("GET", "/events%0A"),
    ("GET", "/get_topic/a%00b"),
    ("DELETE", "/delete_topic/%7F"),
    ("POST", "/register_topic/%0D%0A"),
]


async def test_a_path_with_a_control_character_is_404(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await topic(leader, "t")
        for method, path in CONTROL_CHARACTER_PATHS:
            response = await leader.http.request(method, path, headers={"Origin": "http://elsewhere"})
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not_found"
            assert response.headers["access-control-allow-origin"] == "*"
        assert [t["name"] for t in (await leader.http.get("/get_topic/")).json()["topics"]] == ["t"]

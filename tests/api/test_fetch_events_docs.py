"""``/metadata_fetch/`` paging, the event log, and the OpenAPI document and docs page."""

from __future__ import annotations

from typing import Any

import trio
from starlette.routing import Route

from pyraft.metadata.events import (
    API_WRITE,
    LEADER_CHANGED,
    PEER_HEARD,
    PEER_SILENT,
    ROLE_CHANGED,
    TERM_CHANGED,
)
from pyraft.metadata.store import replay

from .harness import ApiNode, api_cluster, broker_body, brokers, created, post, topic, wait_until


async def build_history(api: ApiNode) -> None:
    """A log with every kind of record: registrations, changes, deletes and cascades."""
    await brokers(api, 1, 2, 3)
    a, b = await topic(api, "a"), await topic(api, "b")
    for pid in range(3):
        await created(api, "/register_partition/", {"partitionId": pid, "topicUUID": a, "replicas": [1, 2]})
    await created(api, "/register_partition/", {"partitionId": 0, "topicUUID": b, "replicas": [3]})
    await post(api, "/register_broker_change/", broker_body(2, brokerStatus="ALIVE"))
    await post(api, "/register_broker_change/", broker_body(3, brokerPort=1234, brokerStatus="INIT"))
    epoch = (await api.http.get("/get_broker/3")).json()["brokerEpoch"]
    await created(api, "/register_producer/", {"brokerId": 3, "producerId": 7, "brokerEpoch": epoch})
    await api.http.delete(f"/delete_partition/1?topic_uuid={a}")
    await api.http.delete("/delete_topic/b")
    await api.http.delete("/delete_broker/1")


async def fetch_all(api: ApiNode, page: int) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    offset, high = 0, 0
    while True:
        response = await post(api, "/metadata_fetch/", {"offset": offset, "maxRecords": page})
        assert response.status_code == 200
        body = response.json()
        assert len(body["records"]) <= page
        records += body["records"]
        high = body["highWatermark"]
        if not body["more"]:
            return records, high
        offset = body["records"][-1]["offset"]


async def test_paging_through_the_whole_log_reproduces_the_store(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(c.follower())
        await c.settle()
        dumps = [n.store.dump() for n in c.nodes.values()]
        assert dumps[0] == dumps[1] == dumps[2]  # the same log gives the same store everywhere
        for api in c.nodes.values():
            records, high = await fetch_all(api, page=3)
            offsets = [r["offset"] for r in records]
            assert offsets == sorted(set(offsets))
            assert replay(records, high).dump() == leader.store.dump()
        tail = (await post(leader, "/metadata_fetch/", {"offset": offsets[-1]})).json()
        assert tail["records"] == [] and tail["more"] is False


async def test_events_record_elections_writes_and_peers(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await created(leader, "/register_topic/", {"name": "t"})
        kinds = [e["kind"] for e in (await leader.http.get("/events?limit=1000")).json()["events"]]
        for kind in (TERM_CHANGED, ROLE_CHANGED, LEADER_CHANGED, API_WRITE):
            assert kind in kinds
        write = next(e for e in (await leader.http.get("/events")).json()["events"] if e["kind"] == API_WRITE)
        assert write["detail"]["record"] == "TopicRecord" and write["detail"]["outcome"] == "created"

        peer = c.follower().node_id
        c.network.isolate(peer)

        def seen(kind: str) -> bool:
            return any(e.kind == kind and e.detail["peer"] == peer for e in leader.events.since(0, 10_000))

        await wait_until(lambda: seen(PEER_SILENT))
        c.network.heal()
        await wait_until(lambda: seen(PEER_HEARD))

        first = (await leader.http.get("/events?since=0&limit=2")).json()
        assert [e["seq"] for e in first["events"]] == [1, 2]
        following = (await leader.http.get("/events/?since=2&limit=2")).json()
        assert [e["seq"] for e in following["events"]] == [3, 4]
        assert first["lastSeq"] >= 4


async def test_openapi_lists_every_route_and_docs_render_it(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        api = await c.wait_ready()
        document = (await api.http.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        documented = {(path.rstrip("/"), m.upper()) for path, ops in document["paths"].items() for m in ops}
        mounted = {
            (route.path.rstrip("/"), method)
            for route in api.app.routes
            if isinstance(route, Route)
            for method in (route.methods or ())
            if method != "HEAD"
        }
        assert mounted == documented
        issue_table = {
            ("/register_broker", "POST"), ("/get_broker", "GET"), ("/get_broker/{broker_id}", "GET"),
            ("/delete_broker/{broker_id}", "DELETE"), ("/register_broker_change", "POST"),
            ("/register_topic", "POST"), ("/get_topic", "GET"), ("/get_topic/{topicName}", "GET"),
            ("/delete_topic/{topicName}", "DELETE"), ("/register_partition", "POST"),
            ("/get_partition", "GET"), ("/get_partition/{partitionId}", "GET"),
            ("/delete_partition/{partition_id}", "DELETE"), ("/register_producer", "POST"),
            ("/get_producer", "GET"), ("/get_producer", "POST"), ("/metadata_fetch_client", "GET"),
            ("/metadata_fetch", "POST"), ("/events", "GET"), ("/status", "GET"),
        }  # fmt: skip
        assert issue_table <= documented
        for path, ops in document["paths"].items():
            for op in ops.values():
                codes = set(op["responses"])
                assert codes, path
                if "requestBody" in op or any(p["in"] in ("query", "path") for p in op.get("parameters", [])):
                    assert "422" in codes, path
        page = await api.http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<script" not in page.text and "https://" not in page.text  # nothing fetched from a CDN
        for path in document["paths"]:
            assert path in page.text

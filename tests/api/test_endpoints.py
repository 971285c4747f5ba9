"""Every metadata endpoint, on the leader and on a follower, with the statuses the issue names."""

from __future__ import annotations

import pytest
import trio

from .harness import ApiCluster, ApiNode, api_cluster, broker_body, brokers, created, post, topic

ROLES = ["leader", "follower"]


def pick(cluster: ApiCluster, leader: ApiNode, role: str) -> ApiNode:
    return leader if role == "leader" else cluster.follower()


@pytest.mark.parametrize("role", ROLES)
async def test_broker_lifecycle(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        first = await created(api, "/register_broker/", broker_body(1, rackId="rack-a"))
        assert first["outcome"] == "created"
        assert first["brokerEpoch"] == first["offset"]  # KRaft: the epoch is the registration's offset
        assert first["internal_uuid"] == first["incarnationId"]
        assert (first["status"], first["rackId"]) == ("FENCED", "rack-a")

        repeat = await post(api, "/register_broker", broker_body(1, rackId="rack-a"))
        assert repeat.status_code == 200
        assert repeat.json()["internal_uuid"] == first["internal_uuid"]
        clash = await post(api, "/register_broker/", broker_body(1, brokerHost="elsewhere"))
        assert clash.status_code == 409 and clash.json()["error"] == "conflict"

        for path in (
            "/get_broker/1",
            "/get_broker/1/",
            "/get_broker/?broker_id=1",
            "/get_broker?broker_id=1",
        ):
            got = await api.http.get(path)
            assert got.status_code == 200 and got.json()["internal_uuid"] == first["internal_uuid"], path
        listing = (await api.http.get("/get_broker/")).json()
        assert [b["brokerId"] for b in listing["brokers"]] == [1]
        assert (await api.http.get("/get_broker/7")).status_code == 404
        assert (await api.http.get("/get_broker/?broker_id=7")).status_code == 404

        deleted = await api.http.delete("/delete_broker/1")
        assert deleted.status_code == 200 and deleted.json()["internal_uuid"] == first["internal_uuid"]
        assert (await api.http.get("/get_broker/1")).status_code == 404
        assert (await api.http.delete("/delete_broker/1/")).status_code == 404


@pytest.mark.parametrize("role", ROLES)
async def test_broker_change_status_and_endpoint(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        first = await created(api, "/register_broker/", broker_body(2))
        alive = await post(api, "/register_broker_change/", broker_body(2, brokerStatus="ALIVE"))
        assert alive.status_code == 200, alive.text
        assert alive.json()["status"] == "UNFENCED"
        assert alive.json()["brokerEpoch"] == first["brokerEpoch"]  # a status change keeps the epoch

        moved = await post(
            api, "/register_broker_change", broker_body(2, brokerPort=9093, brokerStatus="alive")
        )
        assert moved.status_code == 200
        after = moved.json()
        assert after["brokerEpoch"] > first["brokerEpoch"]  # re-registration: the epoch grows
        assert after["internal_uuid"] != first["internal_uuid"] and after["brokerPort"] == 9093

        shutdown = await post(
            api,
            "/register_broker_change/",
            broker_body(2, brokerPort=9093, brokerStatus="CONTROLLED_SHUTDOWN"),
        )
        assert shutdown.json()["status"] == "CONTROLLED_SHUTDOWN"
        missing = await post(api, "/register_broker_change/", broker_body(9, brokerStatus="INIT"))
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


@pytest.mark.parametrize("role", ROLES)
async def test_topic_lifecycle_and_delete_cascade(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await brokers(api, 1, 2, 3)
        made = await created(api, "/register_topic/", {"name": "orders"})
        assert made["topicUUID"] == made["topicId"] and made["partitions"] == []
        again = await post(api, "/register_topic", {"name": "orders"})
        assert again.status_code == 200 and again.json()["topicUUID"] == made["topicUUID"]
        for pid in (0, 1):
            body = {
                "partitionId": pid,
                "topicUUID": made["topicUUID"],
                "replicas": [1, 2, 3],
                "ISR": [1, 2],
                "leader": 1,
            }
            await created(api, "/register_partition/", body)

        for path in ("/get_topic/orders", "/get_topic/orders/", "/get_topic/?topic_name=orders"):
            got = await api.http.get(path)
            assert got.status_code == 200 and got.json()["partitions"] == [0, 1], path
        assert [t["name"] for t in (await api.http.get("/get_topic")).json()["topics"]] == ["orders"]
        assert (await api.http.get("/get_topic/nope")).status_code == 404
        assert (await api.http.get("/get_topic/?topic_name=nope")).status_code == 404

        deleted = await api.http.delete("/delete_topic/orders")
        assert deleted.status_code == 200
        assert [p["partitionId"] for p in deleted.json()["deletedPartitions"]] == [0, 1]
        assert (await api.http.get("/get_partition/")).json() == {"partitions": []}  # cascaded
        assert (await api.http.get("/get_topic/orders")).status_code == 404
        assert (await api.http.delete("/delete_topic/orders/")).status_code == 404


@pytest.mark.parametrize("role", ROLES)
async def test_partitions(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await brokers(api, 1, 2)
        a, b = await topic(api, "a"), await topic(api, "b")
        body = {
            "partitionId": 0,
            "topicUUID": a,
            "replicas": [1, 2],
            "ISR": [1, 2],
            "removingReplicas": [],
            "addingReplicas": [],
            "leader": 1,
            "partitionEpoch": 0,
        }
        made = await created(api, "/register_partition/", body)
        assert (made["topicUUID"], made["topicName"], made["isr"], made["leader"]) == (a, "a", [1, 2], 1)
        assert (await post(api, "/register_partition", body)).status_code == 200  # identical repeat
        clash = await post(api, "/register_partition/", {**body, "leader": 2})
        assert clash.status_code == 409

        defaults = await created(
            api, "/register_partition/", {"partitionId": 0, "topicUUID": b, "replicas": [2]}
        )
        assert (defaults["isr"], defaults["leader"], defaults["partitionEpoch"]) == ([2], -1, 0)

        both = (await api.http.get("/get_partition/0")).json()["partitions"]
        assert sorted(p["topicUUID"] for p in both) == sorted([a, b])
        only_a = (await api.http.get(f"/get_partition/?partition_id=0&topic_uuid={a}")).json()["partitions"]
        assert [p["topicUUID"] for p in only_a] == [a]
        assert len((await api.http.get("/get_partition")).json()["partitions"]) == 2
        assert (await api.http.get("/get_partition/5")).status_code == 404

        ambiguous = await api.http.delete("/delete_partition/0")
        assert ambiguous.status_code == 409 and ambiguous.json()["error"] == "ambiguous_partition"
        assert sorted(ambiguous.json()["topicUUIDs"]) == sorted([a, b])
        gone = await api.http.delete(f"/delete_partition/0?topic_uuid={a}")
        assert gone.status_code == 200 and gone.json()["topicUUID"] == a
        last = await api.http.delete("/delete_partition/0/")  # now only topic b has partition 0
        assert last.status_code == 200 and last.json()["topicUUID"] == b
        assert (await api.http.delete("/delete_partition/0")).status_code == 404


async def test_partition_rules_follow_kafka(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        api = await c.wait_ready()
        await brokers(api, 1, 2)
        t = await topic(api, "t")
        base = {"partitionId": 0, "topicUUID": t, "replicas": [1, 2]}
        unknown_topic = await post(
            api, "/register_partition/", {**base, "topicUUID": "0b5e2c9e-8f1d-4f7a-9c35-111111111111"}
        )
        assert unknown_topic.status_code == 404
        cases = [
            {**base, "replicas": [1, 5]},  # not a registered broker
            {**base, "ISR": [3]},  # ISR outside replicas
            {**base, "ISR": [1], "leader": 2},  # leader outside the ISR
            {**base, "addingReplicas": [1], "removingReplicas": [1]},
        ]
        for body in cases:
            response = await post(api, "/register_partition/", body)
            assert response.status_code == 422, body
            assert response.json()["error"] == "invalid"
        assert (await api.http.get("/get_partition/")).json() == {"partitions": []}


@pytest.mark.parametrize("role", ROLES)
async def test_producers(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        broker = await created(api, "/register_broker/", broker_body(1))
        body = {"brokerId": 1, "producerId": 1000, "brokerEpoch": broker["brokerEpoch"]}
        made = await created(api, "/register_producer/", body)
        assert (made["brokerId"], made["producerId"]) == (1, 1000)
        assert (await post(api, "/register_producer", body)).status_code == 200
        stale = await post(
            api,
            "/register_producer/",
            {**body, "producerId": 1001, "brokerEpoch": broker["brokerEpoch"] + 100},
        )
        assert stale.status_code == 409
        no_broker = await post(api, "/register_producer/", {**body, "brokerId": 4})
        assert no_broker.status_code == 404
        taken = await created(api, "/register_broker/", broker_body(2))
        reused = await post(
            api,
            "/register_producer/",
            {"brokerId": 2, "producerId": 1000, "brokerEpoch": taken["brokerEpoch"]},
        )
        assert reused.status_code == 409

        assert [p["producerId"] for p in (await api.http.get("/get_producer/")).json()["producers"]] == [1000]
        one = await post(api, "/get_producer/", {"brokerId": 1, "producerId": 1000})
        assert one.status_code == 200 and one.json()["brokerEpoch"] == broker["brokerEpoch"]
        assert (await post(api, "/get_producer", {"brokerId": 1, "producerId": 5})).status_code == 404


@pytest.mark.parametrize("role", ROLES)
async def test_client_metadata_and_consistency_levels(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with api_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await brokers(api, 1)
        t = await topic(api, "events")
        await created(api, "/register_partition/", {"partitionId": 0, "topicUUID": t, "replicas": [1]})
        meta = (await api.http.get("/metadata_fetch_client/")).json()
        assert [len(meta[k]) for k in ("brokers", "topics", "partitions")] == [1, 1, 1]
        await c.settle()
        stale = await api.http.get("/metadata_fetch_client?consistency=stale")
        assert stale.json() == meta
        bad = await api.http.get("/metadata_fetch_client/?consistency=eventual")
        assert bad.status_code == 422


async def test_status_is_unchanged(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        body = (await leader.http.get("/status")).json()
        assert body == leader.node.status()
        assert body["role"] == "leader"

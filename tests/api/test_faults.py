"""Idempotent retries, writes across a leader crash, and bounded 503s without a quorum."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from pyraft.actors.applier import Applied

from .harness import REQUEST_TIMEOUT, ApiCluster, ApiNode, api_cluster, broker_body, created, post, wait_until


def log_types(api: ApiNode) -> list[str]:
    return [r["type"] for r in api.store.fetch(0)["records"]]


async def test_same_key_twice_returns_the_first_result_and_applies_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        follower = c.follower()
        await created(leader, "/register_broker/", broker_body(1))
        move = broker_body(1, brokerPort=9999, brokerStatus="ALIVE")
        first = await post(follower, "/register_broker_change/", move, key="move-1")
        again = await post(leader, "/register_broker_change/", move, key="move-1")  # retried on another node
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert log_types(leader).count("RegisterBrokerRecord") == 2  # the registration and one move

        deleted = await leader.http.delete("/delete_broker/1", headers={"Idempotency-Key": "del-1"})
        repeat = await follower.http.delete("/delete_broker/1/", headers={"Idempotency-Key": "del-1"})
        assert deleted.status_code == repeat.status_code == 200  # without the key it would be 404
        assert repeat.json() == deleted.json()
        assert (await leader.http.delete("/delete_broker/1")).status_code == 404


async def test_keyed_retry_of_delete_by_name_returns_the_first_result(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await created(leader, "/register_topic/", {"name": "t"})
        first = await leader.http.delete("/delete_topic/t", headers={"Idempotency-Key": "drop-t"})
        retry = await c.follower().http.delete("/delete_topic/t", headers={"Idempotency-Key": "drop-t"})
        assert first.status_code == retry.status_code == 200
        assert retry.json() == first.json()
        assert log_types(leader).count("RemoveTopicRecord") == 1


async def keep_trying(
    c: ApiCluster, start: int, path: str, body: dict[str, Any], key: str, refusals: list[str]
) -> httpx.Response:
    """A client that retries 503s with the same request on the next live node, after Retry-After."""
    turn = start
    while True:
        live = sorted(c.nodes)
        response = await post(c.nodes[live[turn % len(live)]], path, body, key=key)
        if response.status_code != 503:
            return response
        assert response.headers["Retry-After"] == "1"
        refusals.append(response.json()["error"] + ":" + response.json()["message"])
        turn += 1
        await trio.sleep(float(response.headers["Retry-After"]))


async def crash_inside_next_proposal(c: ApiCluster, victim: ApiNode) -> None:
    """Crash ``victim`` as soon as its service hands the next proposal to the engine.

    Whether the entry already reached a follower (and will commit under the next
    leader) or not, the client cannot know: it must get outcome_unknown."""
    original = victim.node.propose

    async def propose_then_crash(command: bytes) -> Applied:
        c.nursery.start_soon(lambda: _crash(c, victim.node_id))
        return await original(command)

    victim.node.propose = propose_then_crash  # type: ignore[method-assign]


async def _crash(c: ApiCluster, node_id: int) -> None:
    c.crash(node_id)


async def test_writes_across_leader_crashes_survive_and_apply_once(autojump_clock: trio.abc.Clock) -> None:
    """Each write re-registers broker 1 at a new port (a fresh incarnation): a write applied twice
    would add a RegisterBrokerRecord, so the log shows exactly how often each was applied."""
    async with api_cluster() as c:
        await created(await c.wait_ready(), "/register_broker/", broker_body(1))
        acked: list[dict[str, Any]] = []
        refusals: list[str] = []
        for i in range(30):
            crashed = None
            if i in (10, 20):
                leader = await c.wait_ready()
                crashed = leader.node_id
                await crash_inside_next_proposal(c, leader)
            body = broker_body(1, brokerPort=10_000 + i, brokerStatus="ALIVE")
            first = crashed - 1 if crashed is not None else i  # the first try goes to the doomed leader
            response = await keep_trying(c, first, "/register_broker_change/", body, f"w{i}", refusals)
            assert response.status_code == 200, response.text
            acked.append(response.json())
            if crashed is not None:
                await c.start(crashed)
        assert sum(r.startswith("outcome_unknown") for r in refusals) == 2, refusals
        survivor = await c.wait_ready()
        await c.settle()
        for api in c.nodes.values():
            assert log_types(api).count("RegisterBrokerRecord") == 31  # none applied twice
        final = (await survivor.http.get("/get_broker/1")).json()
        assert final["brokerPort"] == 10_029 and final["brokerEpoch"] == acked[-1]["brokerEpoch"]
        epochs = [a["brokerEpoch"] for a in acked]
        assert epochs == sorted(set(epochs))  # every acknowledged write is its own committed record


async def test_no_quorum_fails_fast_with_503_and_changes_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        survivor = c.follower()
        for node_id in [n for n in list(c.nodes) if n != survivor.node_id]:
            c.crash(node_id)
        await wait_until(lambda: survivor.node.core.leader_id is None)
        before = survivor.store.dump()
        started = trio.current_time()
        write = await post(survivor, "/register_topic/", {"name": "t"})
        read = await survivor.http.get("/get_topic/")
        assert trio.current_time() - started <= 2 * REQUEST_TIMEOUT
        for response in (write, read):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
        assert write.json()["error"] == "no_leader" and "nothing was changed" in write.json()["message"]
        stale = await survivor.http.get("/get_topic/?consistency=stale")
        assert stale.status_code == 200 and stale.json() == {"topics": []}
        assert survivor.store.dump() == before
        del leader


async def test_write_to_a_leader_losing_its_quorum_is_bounded_and_says_outcome_unknown(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        for node_id in [n for n in list(c.nodes) if n != leader.node_id]:
            c.crash(node_id)
        started = trio.current_time()
        response = await post(leader, "/register_topic/", {"name": "t"}, key="t-1")
        assert trio.current_time() - started <= REQUEST_TIMEOUT + 0.01
        assert response.status_code == 503
        body = response.json()
        # Appended to the old leader's log, it may still commit later: the answer must not claim otherwise.
        assert body["error"] in ("outcome_unknown", "no_leader", "not_applied")
        if body["error"] == "outcome_unknown":
            assert "same Idempotency-Key is safe" in body["message"] and body["idempotencyKey"] == "t-1"


async def test_every_record_survives_a_restart_of_all_nodes(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await created(leader, "/register_broker/", broker_body(1))
        made = await created(leader, "/register_topic/", {"name": "kept"})
        await created(
            leader,
            "/register_partition/",
            {"partitionId": 0, "topicUUID": made["topicUUID"], "replicas": [1]},
        )
        await c.settle()
        before = leader.store.dump()
        for node_id in list(c.nodes):
            c.crash(node_id)
        for node_id in (1, 2, 3):
            await c.start(node_id)
        again = await c.wait_ready()
        await c.settle()
        dumps = [n.store.dump() for n in c.nodes.values()]
        assert dumps[0] == dumps[1] == dumps[2]
        assert dumps[0]["log"][: len(before["log"])] == before["log"]  # new terms only add no-ops
        got = (await again.http.get("/get_topic/kept")).json()
        assert got["topicUUID"] == made["topicUUID"] and got["partitions"] == [0]

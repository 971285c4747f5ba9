"""POST /quorum/voters and DELETE /quorum/voters/{id} on an in-memory quorum (autojump clock).

Nodes 1-3 bootstrap the quorum; node 4 (and 5) start as observers outside it.
Each test checks what the answer says against what the nodes' live
configurations then are, so an answer that lies about a change fails.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from op_harness import OpCluster, OpNode, address, op_cluster, wait_until

from pyraft.core.raft import Role

ROLES = ["leader", "follower"]


def pick(cluster: OpCluster, leader: OpNode, role: str) -> OpNode:
    return leader if role == "leader" else cluster.follower()


def ids(members: list[dict[str, Any]]) -> list[int]:
    return [m["id"] for m in members]


def voters_everywhere(cluster: OpCluster, expected: set[int]) -> bool:
    return all(n.node.core.membership.voter_ids == expected for n in cluster.nodes.values())


async def add(api: OpNode, node_id: int, **extra: Any) -> httpx.Response:
    body = {"id": node_id, "address": address(node_id), **extra}
    return await api.http.post("/quorum/voters", json=body)


@pytest.mark.parametrize("role", ROLES)
async def test_add_voter_from_any_node_makes_an_observer_a_voter(
    autojump_clock: trio.abc.Clock, role: str
) -> None:
    async with op_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await c.start(4)
        before = (await c.nodes[4].http.get("/quorum")).json()
        assert ids(before["voters"]) == [1, 2, 3] and ids(before["observers"]) == [4]
        changed = c.nodes[4].node.membership_changed

        added = await add(api, 4)

        assert added.status_code == 201, added.text
        quorum = added.json()
        assert quorum["source"] == "leader" and ids(quorum["voters"]) == [1, 2, 3, 4]
        assert quorum["observers"] == []
        new = next(v for v in quorum["voters"] if v["id"] == 4)
        assert new["address"] == address(4) and new["httpUrl"] == "http://node4"
        await wait_until(lambda: voters_everywhere(c, {1, 2, 3, 4}))
        assert changed.is_set()  # what announce_membership waits on
        calm = c.nodes[4].node.membership_changed
        for _ in range(5):
            await c.nodes[4].node.progressed.wait()  # Readies go on (ticks, heartbeats)...
        assert not calm.is_set()  # ...without a membership change
        leader = c.leader()
        assert leader is not None
        await wait_until(lambda: c.nodes[4].node.applier.applied_index >= leader.node.core.commit_index)
        relayed = (await c.nodes[4].http.get("/quorum")).json()
        assert relayed["source"] == "leader" and ids(relayed["voters"]) == [1, 2, 3, 4]
        nodes = (await c.nodes[4].http.get("/cluster")).json()["nodes"]
        assert [(n["id"], n["voter"]) for n in nodes] == [(1, True), (2, True), (3, True), (4, True)]


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"{", "malformed_json"),
    (b"[]", "invalid_type"),
    (b'{"id": "4", "address": "127.0.0.1:9004"}', "invalid_type"),
    (b'{"id": true, "address": "127.0.0.1:9004"}', "invalid_type"),
    (b'{"id": 4.0, "address": "127.0.0.1:9004"}', "invalid_type"),
    (b'{"id": -1, "address": "127.0.0.1:9004"}', "out_of_range"),
    (b'{"address": "127.0.0.1:9004"}', "missing_field"),
    (b'{"id": 4}', "missing_field"),
    (b'{"id": 4, "address": 9004}', "invalid_type"),
    (b'{"id": 4, "address": "127.0.0.1:9004", "role": "voter"}', "unknown_field"),
    (b'{"id": 4, "address": "127.0.0.1:9004", "timeoutMs": 0}', "out_of_range"),
    (b'{"id": 4, "address": "127.0.0.1:9004", "timeoutMs": "5"}', "invalid_type"),
]
BAD_ADDRESSES = ["", "127.0.0.1", "127.0.0.1:", ":9004", "host:0", "host:65536", "host:port", "a b:1"]
BAD_ADDRESSES += ["[::1]:9004", "-host:9004", "host:9004/x", "http://host:9004"]


@pytest.mark.parametrize("role", ROLES)
async def test_malformed_requests_are_422_and_change_nothing(
    autojump_clock: trio.abc.Clock, role: str
) -> None:
    async with op_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await c.start(4)
        headers = {"Content-Type": "application/json"}
        for raw, code in BAD_BODIES:
            answer = await api.http.post("/quorum/voters", content=raw, headers=headers)
            assert (answer.status_code, answer.json()["error"]) == (422, code), raw
        for bad in BAD_ADDRESSES:
            answer = await api.http.post("/quorum/voters", json={"id": 4, "address": bad})
            assert answer.status_code == 422, bad
            assert answer.json()["error"] == "invalid_value" and "HOST:PORT" in answer.json()["message"]
        for path in ("/quorum/voters/abc", "/quorum/voters/-1", "/quorum/voters/1.5"):
            assert (await api.http.delete(path)).status_code == 422, path
        assert voters_everywhere(c, {1, 2, 3})
        assert all(not n.node.core.membership.learner_ids for n in c.nodes.values())


async def test_nothing_answering_or_another_node_answering_is_422(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        await c.start(4)
        absent = await leader.http.post("/quorum/voters", json={"id": 5, "address": address(5)})
        assert absent.status_code == 422 and absent.json()["error"] == "unreachable"
        assert "start node 5 first" in absent.json()["message"]
        wrong = await leader.http.post("/quorum/voters", json={"id": 5, "address": address(4)})
        assert wrong.status_code == 422 and wrong.json()["error"] == "wrong_node"
        assert "node 4 answers" in wrong.json()["message"]
        assert leader.node.core.membership.ids == {1, 2, 3}


@pytest.mark.parametrize("role", ROLES)
async def test_conflicting_additions_are_409(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        await c.start(4)
        voter = await api.http.post("/quorum/voters", json={"id": 2, "address": address(2)})
        assert voter.status_code == 409 and voter.json()["error"] == "already_voter"
        taken = await api.http.post("/quorum/voters", json={"id": 4, "address": address(2)})
        assert taken.status_code == 409 and taken.json()["error"] == "address_in_use"
        assert voters_everywhere(c, {1, 2, 3})


async def test_catch_up_timeout_leaves_an_observer_and_a_repeat_finishes_the_join(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        await c.start(4)
        c.network.disconnect(4)  # it answers the probe but receives no entries

        slow = await add(leader, 4, timeoutMs=500)

        assert slow.status_code == 504 and slow.json()["error"] == "catch_up_timeout"
        assert "observer" in slow.json()["message"]
        quorum = (await leader.http.get("/quorum")).json()
        assert ids(quorum["voters"]) == [1, 2, 3] and ids(quorum["observers"]) == [4]
        observer = quorum["observers"][0]
        assert observer["address"] == address(4) and observer["lag"] > 0
        assert observer["lastFetchTimestamp"] is None  # it never answered the leader
        moved = await leader.http.post("/quorum/voters", json={"id": 4, "address": "127.0.0.1:9999"})
        assert moved.status_code == 409 and moved.json()["error"] == "address_mismatch"

        c.network.reconnect(4)
        done = await add(leader, 4)

        assert done.status_code == 201, done.text
        assert ids(done.json()["voters"]) == [1, 2, 3, 4] and done.json()["observers"] == []


async def test_one_change_at_a_time(autojump_clock: trio.abc.Clock) -> None:
    """A change that cannot commit (the leader is cut off) blocks the next one with 409; the
    first ends 503 once the leader steps down, and no answer claims a change happened."""
    async with op_cluster() as c:
        leader = await c.wait_ready()
        await c.start(4)
        await c.start(5)
        leader.view.change_timeout = 1.0  # the cut-off leader's entry never settles: do not wait 10 s
        answers: dict[int, httpx.Response] = {}

        async def first() -> None:
            answers[4] = await add(leader, 4)

        async with trio.open_nursery() as nursery:
            c.network.isolate(leader.node.node_id)
            nursery.start_soon(first)
            await wait_until(lambda: 4 in leader.node.core.membership.learner_ids)
            answers[5] = await add(leader, 5)
        assert answers[5].status_code == 409 and answers[5].json()["error"] == "change_in_progress"
        assert answers[4].status_code == 503, answers[4].text
        assert answers[4].json()["error"] == "outcome_unknown"
        assert answers[4].headers["retry-after"] == "1"
        assert leader.node.core.role is not Role.LEADER


@pytest.mark.parametrize("role", ROLES)
async def test_remove_a_follower_from_any_node(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        api = pick(c, leader, role)
        gone = next(i for i in (1, 2, 3) if i not in (leader.node.node_id, api.node.node_id))
        unknown = await api.http.delete("/quorum/voters/9")
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

        removed = await api.http.delete(f"/quorum/voters/{gone}")

        assert removed.status_code == 200, removed.text
        remaining = sorted({1, 2, 3} - {gone})
        assert ids(removed.json()["voters"]) == remaining and removed.json()["observers"] == []
        stayed = [n for i, n in c.nodes.items() if i != gone]
        await wait_until(lambda: all(n.node.core.membership.voter_ids == set(remaining) for n in stayed))
        again = await api.http.delete(f"/quorum/voters/{gone}")
        assert again.status_code == 404


async def test_the_leader_removes_itself_and_another_takes_over(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        old = leader.node.node_id

        removed = await leader.http.delete(f"/quorum/voters/{old}")

        assert removed.status_code == 200, removed.text
        answer = removed.json()
        assert old not in ids(answer["voters"]) and answer["answeredBy"] == old
        assert answer["source"] == "local" and answer["leaderId"] is None  # it stepped down first
        await wait_until(lambda: (new := c.leader()) is not None and new.node.node_id != old)
        new = c.leader()
        assert new is not None and new.node.core.membership.voter_ids == {1, 2, 3} - {old}
        written = await new.http.post("/register_topic/", json={"name": "after"})
        assert written.status_code == 201
        assert leader.node.core.role is not Role.LEADER


async def test_the_last_voter_cannot_be_removed(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        for _ in range(2):
            follower = next(i for i in leader.node.core.membership.voter_ids if i != leader.node.node_id)
            assert (await leader.http.delete(f"/quorum/voters/{follower}")).status_code == 200
        last = await leader.http.delete(f"/quorum/voters/{leader.node.node_id}")
        assert last.status_code == 409 and last.json()["error"] == "invalid_change"
        assert leader.node.core.membership.voter_ids == {leader.node.node_id}


async def test_without_a_leader_changes_are_503_with_the_hint(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        await c.start(4)  # never added: it knows no leader
        for answer in (await add(c.nodes[4], 4), await c.nodes[4].http.delete("/quorum/voters/1")):
            assert answer.status_code == 503 and answer.json()["error"] == "no_leader"
            assert answer.json()["leaderId"] is None and answer.headers["retry-after"] == "1"
        follower = c.follower()
        c.http_down.add(leader.node.node_id)
        relayed = await add(follower, 4)
        assert relayed.status_code == 503 and relayed.json()["error"] == "leader_unreachable"
        assert relayed.headers["retry-after"] == "1"
        assert voters_everywhere(c, {1, 2, 3})


async def test_membership_routes_are_documented(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        api = await c.wait_ready()
        paths = (await api.http.get("/openapi.json")).json()["paths"]
        post = paths["/quorum/voters"]["post"]
        assert set(post["responses"]) == {"201", "409", "422", "503", "504"}
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"] == ["id", "address"] and body["additionalProperties"] is False
        delete = paths["/quorum/voters/{id}"]["delete"]
        assert set(delete["responses"]) == {"200", "404", "409", "422", "503"}
        assert [p["name"] for p in delete["parameters"]] == ["id"]
        observers = paths["/quorum"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "address" in json.dumps(observers["properties"]["observers"])

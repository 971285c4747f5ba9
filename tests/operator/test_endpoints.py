"""Operator endpoints on the leader and on a follower of an in-memory quorum (autojump clock)."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from op_harness import OpCluster, OpNode, op_cluster, wait_until
from prometheus_client.parser import text_string_to_metric_families

from pyraft.core.raft import Role
from pyraft.logs import JsonFormatter, NodeContext

ROLES = ["leader", "follower"]
METRIC_NAMES = {
    "pyraft_server_has_leader",
    "pyraft_server_is_leader",
    "pyraft_server_leader_changes_seen",
    "pyraft_server_proposals_committed",
    "pyraft_server_proposals_applied",
    "pyraft_server_proposals_pending",
    "pyraft_server_proposals_failed",
    "pyraft_server_term",
    "pyraft_raft_commit_index",
    "pyraft_raft_applied_index",
    "pyraft_raft_log_end_index",
    "pyraft_raft_durable_index",
    "pyraft_disk_wal_fsync_duration_seconds",
    "pyraft_disk_hard_state_fsync_duration_seconds",
    "pyraft_network_peer_round_trip_time_seconds",
    "pyraft_server_peer_replication_lag_entries",
    "pyraft_server_peer_match_index",
    "pyraft_network_messages_sent",
    "pyraft_network_messages_received",
    "pyraft_network_messages_dropped",
    "pyraft_network_peer_connects",
    "pyraft_http_request_duration_seconds",
    "pyraft_events",
}


def pick(cluster: OpCluster, leader: OpNode, role: str) -> OpNode:
    return leader if role == "leader" else cluster.follower()


@pytest.mark.parametrize("role", ROLES)
async def test_quorum_is_the_leaders_view_on_any_node(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        api = pick(c, leader, role)
        await api.http.post("/register_topic/", json={"name": "orders"})
        quorum = (await api.http.get("/quorum")).json()
        assert quorum["source"] == "leader" and quorum["answeredBy"] == api.node.node_id
        assert quorum["leaderId"] == leader.node.node_id
        assert quorum["leaderEpoch"] == leader.node.core.term
        assert quorum["highWatermark"] == leader.node.core.commit_index
        voters = {v["id"]: v for v in quorum["voters"]}
        assert set(voters) == {1, 2, 3} and voters[2]["address"] == "127.0.0.1:9002"
        for voter in voters.values():
            assert voter["lag"] is not None and voter["lag"] >= 0
            assert voter["logEndOffset"] <= leader.node.core.log.last_index
            assert voter["lastFetchTimestamp"] is not None


async def test_follower_answers_its_own_view_without_the_leader(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        follower = c.follower()
        c.http_down.add(leader.node.node_id)
        quorum = (await follower.http.get("/quorum")).json()
        assert quorum["source"] == "local" and quorum["leaderId"] == leader.node.node_id
        mine = next(v for v in quorum["voters"] if v["id"] == follower.node.node_id)
        assert mine["logEndOffset"] == follower.node.core.log.last_index
        assert all(v["lag"] is None for v in quorum["voters"])
        local = (await follower.http.get("/quorum?local=true")).json()
        assert local["source"] == "local"
        assert (await follower.http.get("/quorum?local=maybe")).status_code == 422


@pytest.mark.parametrize("role", ROLES)
async def test_health(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        api = pick(c, await c.wait_ready(), role)
        assert (await api.http.get("/livez")).json()["status"] == "live"
        ready = await api.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        c.network.isolate(api.node.node_id)
        await wait_until(lambda: api.node.core.leader_id is None, timeout=30)
        not_ready = await api.http.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["error"] == "not_ready"
        assert (await api.http.get("/livez")).status_code == 200


@pytest.mark.parametrize("role", ROLES)
async def test_metrics_parse_and_name_everything(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        api = pick(c, leader, role)
        await leader.http.post("/register_topic/", json={"name": "orders"})
        await api.http.get("/status")
        response = await api.http.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        if role == "leader":
            assert set(families) >= METRIC_NAMES
        samples = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
        assert samples["pyraft_server_has_leader"] == 1
        assert samples["pyraft_server_is_leader"] == (role == "leader")
        assert samples["pyraft_server_term"] == api.node.core.term
        assert samples["pyraft_server_leader_changes_seen_total"] >= 1
        assert samples["pyraft_disk_wal_fsync_duration_seconds_count"] >= 1
        routes = {s.labels.get("route") for s in families["pyraft_http_request_duration_seconds"].samples}
        assert "/status" in routes


async def test_peer_round_trip_and_lag_on_the_leader(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        await trio.sleep(0.5)
        text = (await leader.http.get("/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = families["pyraft_network_peer_round_trip_time_seconds"].samples
        rtt = [s for s in samples if s.name.endswith("_count")]
        assert {s.labels["To"] for s in rtt} == {str(p) for p in (1, 2, 3) if p != leader.node.node_id}
        assert all(s.value > 0 for s in rtt)
        lags = families["pyraft_server_peer_replication_lag_entries"].samples
        assert len(lags) == 2 and all(s.value == 0 for s in lags)


@pytest.mark.parametrize("role", ROLES)
async def test_leader_transfer_from_any_node(autojump_clock: trio.abc.Clock, role: str) -> None:
    async with op_cluster() as c:
        leader = await c.wait_ready()
        api = pick(c, leader, role)
        target = next(n for n in (1, 2, 3) if n not in (leader.node.node_id, api.node.node_id))
        moved = await api.http.post("/leader/transfer", json={"targetId": target})
        assert moved.status_code == 200, moved.text
        assert moved.json()["previousLeaderId"] == leader.node.node_id
        await wait_until(lambda: c.nodes[target].node.core.role is Role.LEADER)
        again = await c.nodes[target].http.post("/leader/transfer")  # no body: most caught up
        assert again.status_code == 200 and again.json()["leaderId"] != target
        bad = await c.nodes[target].http.post("/leader/transfer", json={"targetId": 9})
        assert bad.status_code in (422, 503)


async def test_dashboard_and_cluster_routes_are_served_and_documented(autojump_clock: trio.abc.Clock) -> None:
    async with op_cluster() as c:
        api = await c.wait_ready()
        page = await api.http.get("/")
        assert page.status_code == 200 and "pyraft quorum" in page.text
        assert (await api.http.get("/dashboard/app.js")).headers["content-type"].startswith("text/javascript")
        nodes = (await api.http.get("/cluster")).json()["nodes"]
        assert [n["httpUrl"] for n in nodes] == ["http://node1", "http://node2", "http://node3"]
        paths = (await api.http.get("/openapi.json")).json()["paths"]
        for path in ("/quorum", "/livez", "/readyz", "/metrics", "/cluster", "/leader/transfer", "/"):
            assert path in paths
        cors = await api.http.get("/status", headers={"Origin": "http://elsewhere"})
        assert cors.headers["access-control-allow-origin"] == "*"


async def test_events_become_log_lines_with_node_term_and_role(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyraft.events")
    async with op_cluster() as c:
        leader = await c.wait_ready()
        context = NodeContext(leader.node.node_id)
        context.node = leader.node
        records = [r for r in caplog.records if r.name == "pyraft.events"]
        assert any(getattr(r, "event", None) == "leader_changed" for r in records)
        record = records[-1]
        context.filter(record)
        line = json.loads(JsonFormatter().format(record))
        assert line["node"] == leader.node.node_id and line["role"] == "leader"
        assert line["term"] == leader.node.core.term and "event" in line

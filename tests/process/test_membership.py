"""Membership changes on real ``python -m pyraft.node`` processes: join, remove, remove the leader.

A joining node is started with an ``--id`` outside ``--voters`` and added over
REST or the CLI. Every wait polls a condition with a deadline; every write a
test counts on was acknowledged by the cluster and is read back afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pyraft.client import RaftClient
from pyraft.localcluster import LocalCluster, NodeProcess, free_port_block

from .test_cluster_processes import CLUSTER_ID, _register, applied_everywhere, assert_all_present, write_many

# Snapshot every 50 records, so that a node joining after a few hundred must install one.
SMALL_SNAPSHOTS = ["--snapshot-entries", "50"]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    size = getattr(request, "param", 3)
    base = free_port_block(2 * size)
    c = LocalCluster(tmp_path, size, base, base + size, list(SMALL_SNAPSHOTS))
    c.start_all()
    try:
        c.wait_settled()
        yield c
    finally:
        c.stop_all(signal.SIGKILL)


def write_concurrently(c: LocalCluster, node_id: int, brokers: list[int], width: int = 32) -> int:
    """Register brokers through one node with ``width`` proposals in flight; the highest index."""

    async def run() -> int:
        top = 0
        limit = trio.Semaphore(width)
        address = ("127.0.0.1", c.nodes[node_id].raft_port)
        async with await RaftClient.connect([address], cluster_id=CLUSTER_ID) as client:

            async def one(broker_id: int) -> None:
                nonlocal top
                async with limit:
                    index, _ = await client.propose(_register(broker_id))
                top = max(top, index)

            async with trio.open_nursery() as nursery:
                for broker_id in brokers:
                    nursery.start_soon(one, broker_id)
        return top

    return trio.run(run)


def quorum(c: LocalCluster, node_id: int) -> dict[str, Any]:
    status, body = c.nodes[node_id].call("GET", "/quorum")
    assert status == 200, body
    return body


def voter_ids(c: LocalCluster, node_id: int) -> list[int]:
    return [v["id"] for v in quorum(c, node_id)["voters"]]


def leader_commit(c: LocalCluster) -> int:
    leader = c.wait_for_leader()
    status = c.wait_for("the leader's status", c.nodes[leader].status)
    return int(status["commitIndex"])


def caught_up(node: NodeProcess, index: int) -> bool:
    status = node.status()
    return status is not None and status["lastApplied"] >= index


def join(c: LocalCluster, node_id: int) -> NodeProcess:
    """Start a node outside the bootstrap quorum and wait until it serves HTTP."""
    node = c.add_node(node_id)
    c.start(node_id)
    c.wait_for(f"node {node_id} to serve", node.status)
    return node


def test_a_new_node_joins_by_snapshot_and_becomes_a_voter(cluster: LocalCluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    before = list(range(1, 301))
    write_concurrently(c, leader, before)
    leader = c.wait_settled()  # an election may have moved it meanwhile on a loaded machine
    follower = next(i for i in c.nodes if i != leader)
    joiner = join(c, 4)
    assert voter_ids(c, 4) == [1, 2, 3] and [o["id"] for o in quorum(c, 4)["observers"]] == [4]
    log = joiner.log_path.read_text()
    assert "observer waiting to be added" in log
    assert f"quorum add-voter --id 4 --address {joiner.raft_address}" in log

    status, added = c.nodes[follower].call(
        "POST", "/quorum/voters", {"id": 4, "address": joiner.raft_address}, timeout=60
    )

    assert status == 201, added
    assert [v["id"] for v in added["voters"]] == [1, 2, 3, 4] and added["observers"] == []
    top = leader_commit(c)
    c.wait_for("node 4 to apply what was committed", lambda: caught_up(joiner, top))
    status_4 = joiner.status()
    assert status_4 is not None and status_4["snapshotIndex"] > 0 and status_4["logStartIndex"] > 1
    shown = quorum(c, 4)
    assert shown["source"] == "leader" and [v["id"] for v in shown["voters"]] == [1, 2, 3, 4]
    assert next(v for v in shown["voters"] if v["id"] == 4)["address"] == joiner.raft_address

    after = list(range(301, 351))
    indexes = write_many(c, 4, after)  # through the new voter: forwarded to the leader
    c.wait_for("every node to apply the new writes", lambda: applied_everywhere(c, max(indexes.values())))
    assert_all_present(c, 4, before + after)
    assert "node 4 is now a voter" in joiner.log_path.read_text()


def pyraft_cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    servers = ",".join(f"127.0.0.1:{n.http_port}" for n in c.nodes.values() if n.running)
    cmd = [sys.executable, "-m", "pyraft.cli", "--server", servers, "--json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("cluster", [4], indirect=True)
def test_a_removed_follower_no_longer_counts_toward_the_majority(cluster: LocalCluster) -> None:
    """Four voters need three for a majority; after removing one, two of the remaining three
    commit. Writing with only two voters up proves the smaller configuration is in effect."""
    c = cluster
    leader = c.wait_for_leader()
    removed, other = [i for i in c.nodes if i != leader][:2]

    done = pyraft_cli(c, "quorum", "remove-voter", "--id", str(removed))

    assert done.returncode == 0, done.stderr
    assert removed not in [v["id"] for v in json.loads(done.stdout)["voters"]]
    # The removed node itself may never hear of it (the leader stops replicating to it at once).
    staying = [i for i in c.nodes if i != removed]
    c.wait_for("the others to drop it", lambda: all(removed not in voter_ids(c, i) for i in staying))
    c.kill(removed, signal.SIGTERM)
    c.kill(other, signal.SIGKILL)
    new_leader = c.wait_for_leader()
    keys = list(range(1, 21))
    write_many(c, new_leader, keys)
    assert_all_present(c, new_leader, keys)
    assert len(voter_ids(c, new_leader)) == 3


# Thesis 4.2.2: the leader manages the cluster until the configuration without it commits, so
# followers keep their link to it (RaftNode._note_membership) although it is no longer a member.
def test_the_leader_removes_itself_and_the_rest_elect_a_leader_at_once(cluster: LocalCluster) -> None:
    c = cluster
    old = c.wait_for_leader()
    write_many(c, old, [1, 2, 3])
    old = c.wait_settled()  # the two that stay must both be up to commit the change without it

    started = time.monotonic()
    answer = _call_or_none(c.nodes[old], "DELETE", f"/quorum/voters/{old}", timeout=5)

    assert answer is not None and answer[0] == 200, f"DELETE answered {answer}"
    new = c.wait_for("a leader among the others", lambda: _other_leader(c, old), timeout=10)
    took = time.monotonic() - started
    assert took < 3.0, f"the rest took {took:.1f} s to elect a leader; the removed leader hands over"
    assert sorted(voter_ids(c, new)) == sorted(set(c.nodes) - {old})
    write_many(c, new, [4, 5])
    c.kill(old, signal.SIGTERM)
    write_many(c, new, [6])
    assert_all_present(c, new, [1, 2, 3, 4, 5, 6])


def _call_or_none(
    node: NodeProcess, method: str, path: str, timeout: float
) -> tuple[int, dict[str, Any]] | None:
    """The answer, or None when none came within ``timeout`` (a change that should take ms)."""
    try:
        return node.call(method, path, timeout=timeout)
    except TimeoutError:
        return None


def _other_leader(c: LocalCluster, old: int) -> int | None:
    leader = c.leader()
    return leader if leader is not None and leader != old else None


def test_a_joiner_killed_during_catch_up_still_joins_after_a_restart(cluster: LocalCluster) -> None:
    c = cluster
    write_concurrently(c, c.wait_for_leader(), list(range(1, 501)))
    leader = c.wait_settled()
    joiner = join(c, 4)
    answer: dict[str, Any] = {}
    body = {"id": 4, "address": joiner.raft_address, "timeoutMs": 30000}

    def add() -> None:
        try:
            answer["result"] = c.nodes[leader].call("POST", "/quorum/voters", body, timeout=60)
        except Exception as exc:  # reported below, in the test's thread
            answer["error"] = exc

    adding = threading.Thread(target=add)
    adding.start()
    try:
        # Stopped the moment it is seen as an observer: a catch-up of 500 entries takes one round
        # of a few ms, and the add could otherwise promote it between that check and the kill.
        c.wait_for("node 4 to be an observer", lambda: answer or _stop_if_observer(c, leader, joiner))
        c.kill(4, signal.SIGKILL)
        assert not answer, f"the add ended before node 4 was killed: {answer}"
        assert _is_observer(c, leader, 4)
        c.start(4)
    finally:
        adding.join(timeout=60)
    assert "result" in answer, answer
    status, added = answer["result"]
    assert status == 201, added
    assert [v["id"] for v in added["voters"]] == [1, 2, 3, 4]
    top = leader_commit(c)
    c.wait_for("node 4 to apply what was committed", lambda: caught_up(joiner, top))
    write_many(c, 4, [501])
    assert_all_present(c, 4, [1, 250, 500, 501])


def _stop_if_observer(c: LocalCluster, leader: int, node: NodeProcess) -> bool:
    if not _is_observer(c, leader, node.node_id):
        return False
    assert node.proc is not None
    node.proc.send_signal(signal.SIGSTOP)
    return True


def _is_observer(c: LocalCluster, leader: int, node_id: int) -> bool:
    status, body = c.nodes[leader].call("GET", "/quorum?local=true")
    return status == 200 and node_id in [o["id"] for o in body["observers"]]

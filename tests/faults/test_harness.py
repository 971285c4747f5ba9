"""The harness: real node processes whose every peer link runs through a fault proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pyraft.testing.harness import FaultCluster, open_cluster
from pyraft.testing.nemesis import Action


async def test_leader_over_proxies_then_isolated_leader_is_replaced_and_rejoins(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 3) as cluster:
        # Healthy means every follower names the leader, so each has heard from it; a leader
        # backed by a bare majority may not have reached the third node yet.
        await cluster.wait_healthy()
        old = await cluster.wait_for_leader()
        # Raft traffic really goes through the proxies: the leader dialled each follower's proxy.
        for follower in (n for n in cluster.nodes if n != old):
            assert cluster.network.links[(old, follower)].stats.accepted >= 1
        cluster.network.isolate(old)
        new = await cluster.wait_for_leader(exclude=[old])
        assert new != old
        cluster.network.heal()
        await cluster.wait_healthy()
        statuses = await cluster.statuses()
        assert statuses[old]["role"] == "follower" and statuses[old]["term"] >= statuses[new]["term"]


async def test_nemesis_actions_kill_pause_and_damage_then_everything_heals(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, 3) as cluster:
        await cluster.wait_healthy()
        faults = [
            ("kill", {"target": "leader", "pick": 0}),
            ("pause", {"target": "leader", "pick": 0}),
            ("disk-truncate", {"target": "follower", "pick": 0, "bytes": 7}),
            ("disk-flip", {"target": "follower", "pick": 1, "from_end": 3, "mask": 0x40}),
        ]
        for window, (fault, args) in enumerate(faults):
            node = (await cluster.apply(Action(0, "start", fault, window, args)))["node"]
            assert cluster.nodes[node].paused if fault == "pause" else not cluster.nodes[node].running
            if args["target"] == "leader":
                assert await cluster.wait_for_leader(exclude=[node]) != node
            await cluster.apply(Action(0, "stop", fault, window, args))
            await cluster.wait_healthy()
            if fault.startswith("disk"):
                assert "recovered log" in cluster.nodes[node].log_path.read_text()
        assert [e["fault"] for e in cluster.nemesis_log] == [f for f, _ in faults for _ in (0, 1)]


async def test_every_process_is_killed_on_error(tmp_path: Path) -> None:
    holder: list[FaultCluster] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with open_cluster(tmp_path, 3) as cluster:
            holder.append(cluster)
            cluster.pause(1)
            raise RuntimeError("boom")
    assert all(n.proc is not None and n.proc.poll() is not None for n in holder[0].nodes.values())


async def test_every_process_is_killed_on_cancellation(tmp_path: Path) -> None:
    holder: list[FaultCluster] = []
    with trio.CancelScope() as scope:
        async with open_cluster(tmp_path, 3) as cluster:
            holder.append(cluster)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert all(n.proc is not None and n.proc.poll() is not None for n in holder[0].nodes.values())

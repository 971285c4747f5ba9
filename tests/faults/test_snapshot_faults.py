"""Snapshots under faults, made to happen rather than left to a random schedule, on real processes.

The short nemesis run (test_workloads.py) kills nodes during a snapshot write, or keeps
one away until the leader compacts past its log, only when its random faults happen to
line up with a snapshot. Here, on one cluster under a steady stream of topic creations:

1. a node is frozen (SIGSTOP) while its snapshot's temp file exists and, if the file is
   still there once it is frozen, killed: a crash in the middle of writing a snapshot;
2. a follower is killed and the others compact their logs far past its log, so it can
   only come back through InstallSnapshot, which it must then receive while every link
   to and from it drops chunks and resets connections.

Then the set and log checks judge the whole history as in a fault run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import trio

from pyraft.testing.conditions import wait_until_async
from pyraft.testing.harness import FaultCluster, open_cluster
from pyraft.testing.history import HistoryRecorder
from pyraft.testing.workload import ProcessIds
from pyraft.testing.workloads import AckLedger, ClientOptions, LogWorkload, SetWorkload, snapshots_taken

SNAPSHOT_ENTRIES = 20
NODE_ARGS = ("--request-timeout", "1.5", "--snapshot-entries", str(SNAPSHOT_ENTRIES))
CLIENTS = ClientOptions(request_timeout=2.5, check_timeout=60.0)
LOSS = 0.2  # per chunk read on each link to and from the rejoining node: drop it and reset
# The leader keeps sending a silent follower new entries until 32 messages are in flight
# (pyraft.core.config max_inflight), and its transport queues them for the follower's
# return: they arrive late but valid. Compacting this far past the follower's log puts
# the leader's log start beyond whatever those messages can carry.
PIPELINE_MARGIN = 150
WATCH_INTERVAL = 0.001  # how often the data directories are scanned for a snapshot being written


async def test_crash_while_writing_a_snapshot_then_long_absence_and_install_over_lossy_links(
    tmp_path: Path,
) -> None:
    acks = AckLedger()
    topics = SetWorkload(clients=4, seed=7, options=CLIENTS, acks=acks)
    log = LogWorkload(CLIENTS, acks)
    recorder, ids = HistoryRecorder(None), ProcessIds()
    async with open_cluster(tmp_path, 3, NODE_ARGS, seed=7) as cluster:
        await cluster.wait_healthy(60)
        async with trio.open_nursery() as nursery:
            for _ in range(topics.clients):
                nursery.start_soon(topics.client, cluster, recorder, ids, math.inf)
            crashed, temp = await _kill_while_writing_a_snapshot(cluster)
            log.watch.note_cut_writes(cluster)  # what a fault run's watcher reports for such a kill
            assert log.watch.cut == {crashed: {temp.name}}
            cluster.start(crashed)
            await cluster.wait_healthy(60)
            assert not temp.exists(), "the restarted node left the interrupted snapshot's temp file"
            down, lossy = await _keep_a_follower_away_until_compacted_past(cluster, log)
            nursery.cancel_scope.cancel()

        cluster.network.lossy(lossy, LOSS)
        cluster.start(down)

        async def rejoined() -> bool:
            log.watch.note(await cluster.statuses())
            return await cluster.caught_up()

        await wait_until_async("the rejoining node caught up over lossy links", rejoined, 120)
        resets = sum(cluster.network.links[link].stats.resets for link in lossy)
        cluster.network.heal()
        await cluster.wait_healthy(60)
        await topics.final(cluster, recorder, ids)
        await log.final(cluster, recorder, ids)

    stats = log.snapshots[str(down)]
    assert stats["installed"], f"node {down} caught up without a snapshot: {log.snapshots}"
    assert not set(stats["installed"]) & snapshots_taken(cluster.nodes[down].log_path, down)
    assert resets > 0  # the links really did cut connections while it caught up
    assert all(s["taken"] >= 2 for n, s in log.snapshots.items() if int(n) != down), log.snapshots
    verdicts = {**topics.check(recorder.events), **log.check(recorder.events)}
    assert {name: v.verdict.value for name, v in verdicts.items()} == {
        "set": "ok",
        "prefix": "ok",
        "state": "ok",
        "acknowledged-durable": "ok",
    }, "\n".join(v.render() for v in verdicts.values())
    assert log.nodes[down].snapshot is not None  # it was read as snapshot + log tail
    assert log.snapshots[str(crashed)]["cutByKill"] == [temp.name]


async def _kill_while_writing_a_snapshot(cluster: FaultCluster) -> tuple[int, Path]:
    """Freeze the first node seen with a snapshot temp file; kill it if the file outlived the freeze.

    The freeze makes the crash point certain: a frozen process writes nothing more, so a
    temp file still there after SIGSTOP means the kill lands before the rename."""
    deadline = trio.current_time() + 60
    while trio.current_time() < deadline:
        for node_id, node in cluster.nodes.items():
            temp = _snapshot_temp_file(node.data_dir)
            if temp is None or not node.running:
                continue
            cluster.pause(node_id)
            if temp.exists():
                await cluster.kill(node_id)
                assert temp.exists()
                return node_id, temp
            cluster.resume(node_id)  # renamed before the freeze: try the next snapshot
        await trio.sleep(WATCH_INTERVAL)
    raise AssertionError("no snapshot write was caught in progress within 60 s")


def _snapshot_temp_file(data_dir: Path) -> Path | None:
    """A snapshot being written (pyraft.storage.snapshot writes ``.snapshot-*.tmp``, then renames it)."""
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".snapshot-") and entry.name.endswith(".tmp"):
                return Path(entry.path)
    return None


async def _keep_a_follower_away_until_compacted_past(
    cluster: FaultCluster, log: LogWorkload
) -> tuple[int, list[tuple[int, int]]]:
    """Kill a follower; return once every other node's log starts well after the follower's ends."""
    leader = await cluster.wait_for_leader()
    down = min(n for n in cluster.nodes if n != leader)
    await cluster.kill(down)
    up = [n for n in cluster.nodes if n != down]
    # Writes go on, but none can reach the down node's log once it is dead.
    behind = max(s["lastLogIndex"] for s in (await cluster.statuses()).values())

    async def compacted_past_it() -> bool:
        statuses = await cluster.statuses()
        log.watch.note(statuses)
        return all(n in statuses and statuses[n]["logStartIndex"] > behind + PIPELINE_MARGIN for n in up)

    await wait_until_async("every live node compacted far past the down node's log", compacted_past_it, 120)
    return down, [(i, down) for i in up] + [(down, i) for i in up]

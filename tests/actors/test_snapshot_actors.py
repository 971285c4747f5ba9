"""Snapshots through the real actors: taking them, compacting, InstallSnapshot, restart from one.

Same harness as test_node_actors (autojump clock, in-memory transport and storage),
with a snapshot every few entries and tiny chunks so transfers take many rounds.
"""

from __future__ import annotations

import random
import threading

import trio

from pyraft.actors.node import RaftNode
from pyraft.actors.snapshots import SnapshotPolicy
from pyraft.core.raft import Role
from pyraft.statemachine import KVStore, set_command
from pyraft.storage.base import PreparedSnapshot
from pyraft.storage.memory import MemoryStorage
from pyraft.storage.snapshot import SnapshotMeta
from pyraft.transport.memory import MemoryNetwork, MemoryTransport

from .test_node_actors import cluster, value_of, wait_until

EVERY = 20
POLICY = SnapshotPolicy(entries=EVERY, chunk_bytes=64)


async def write(node: RaftNode, start: int, count: int) -> int:
    last = 0
    for i in range(start, start + count):
        last = (await node.propose(set_command(f"k{i}", str(i).encode()))).index
    return last


async def test_snapshots_are_taken_and_the_log_compacted(autojump_clock: trio.abc.Clock) -> None:
    async with cluster(POLICY) as c:
        leader = await c.wait_leader()
        last = await write(leader, 0, 5 * EVERY)
        await wait_until(lambda: all(n.applier.applied_index >= last for n in c.nodes.values()))
        await wait_until(lambda: all(n.snapshotter.taken >= 3 for n in c.nodes.values()))
        for node in c.nodes.values():
            snapshot = node.storage.storage.snapshot()
            assert snapshot is not None and snapshot.last_index >= 3 * EVERY
            # compaction lags one snapshot: the log starts after the previous one
            assert 0 < node.core.log.snapshot_index < snapshot.last_index
            assert node.status()["logStartIndex"] == node.core.log.snapshot_index + 1
            # one snapshot per EVERY entries, not a second one right after each
            assert node.snapshotter.taken <= last // EVERY


async def test_a_follower_far_behind_catches_up_by_install_snapshot(autojump_clock: trio.abc.Clock) -> None:
    async with cluster(POLICY) as c:
        leader = await c.wait_leader()
        await write(leader, 0, 3)
        lagging = c.follower()
        c.network.isolate(lagging.node_id)
        last = await write(leader, 3, 6 * EVERY)
        await wait_until(lambda: leader.core.log.snapshot_index > lagging.core.log.last_index)
        c.network.heal()
        await wait_until(lambda: lagging.applier.applied_index >= last, timeout=60)
        assert lagging.snapshotter.installs >= 1, "it must have caught up by InstallSnapshot"
        assert leader.snapshotter.installs == 0
        for i in (0, 2, 3, 6 * EVERY + 2):
            assert value_of(lagging, f"k{i}") == value_of(leader, f"k{i}") == str(i).encode()
        # and replication goes on normally afterwards
        more = await write(leader, 1000, 3)
        await wait_until(lambda: lagging.applier.applied_index >= more)
        assert value_of(lagging, "k1002") == b"1002"


async def test_restart_loads_the_snapshot_then_replays_the_tail(autojump_clock: trio.abc.Clock) -> None:
    async with cluster(POLICY) as c:
        leader = await c.wait_leader()
        last = await write(leader, 0, 3 * EVERY + 7)
        victim = c.follower()
        await wait_until(lambda: victim.applier.applied_index >= last and victim.snapshotter.taken >= 2)
        c.crash(victim.node_id)
        c.storages[victim.node_id] = c.storages[victim.node_id].crash()
        restarted = await c.start(victim.node_id)
        snapshot = restarted.storage.storage.snapshot()
        assert snapshot is not None and restarted.core.log.snapshot_index == snapshot.last_index
        # the state is all there before a single entry is replayed from the log
        assert value_of(restarted, "k0") == b"0"
        await wait_until(lambda: restarted.applier.applied_index >= last)
        assert value_of(restarted, f"k{3 * EVERY + 6}") == str(3 * EVERY + 6).encode()


class _SlowSnapshotStorage(MemoryStorage):
    """Writing a snapshot's bytes blocks (in the worker thread) until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.finish = threading.Event()

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> PreparedSnapshot:
        self.writing.set()
        if not self.finish.wait(timeout=30):
            raise RuntimeError("the test never let the snapshot write finish")
        return super().prepare_snapshot(meta, data)


async def test_writes_commit_while_a_snapshot_is_being_written() -> None:
    """A snapshot's write and fsync run beside the log's appends, not ahead of them: at a million
    records it takes seconds, and every node snapshots at about the same index."""
    storage = _SlowSnapshotStorage()
    node = RaftNode(
        1,
        (1,),
        storage,
        MemoryTransport(MemoryNetwork(), 1),
        KVStore(),
        rng=random.Random(1),
        offload_io=True,  # real worker threads, as in a running node
        snapshots=SnapshotPolicy(entries=5),
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await wait_until(lambda: node.core.role is Role.LEADER)
            await write(node, 0, 5)
            # the snapshot is being written (a worker thread ignores cancellation: bound the wait)
            assert await trio.to_thread.run_sync(storage.writing.wait, 10.0)
            last = await write(node, 5, 20)  # durable and applied meanwhile
            assert node.snapshotter.taken == 0 and storage.snapshot() is None
            storage.finish.set()
            await wait_until(lambda: node.snapshotter.taken >= 1)
            snapshot = storage.snapshot()
            assert snapshot is not None and 5 <= snapshot.last_index <= last
            nursery.cancel_scope.cancel()

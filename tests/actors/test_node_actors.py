"""RaftNode actors on trio's autojump clock with the in-memory transport and storage.

Every wait polls a condition under a deadline (``wait_until``), so timeouts run
in zero wall time and a test fails instead of hanging.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from pyraft.actors.applier import Applied
from pyraft.actors.node import RaftNode, Timing
from pyraft.actors.snapshots import SnapshotPolicy
from pyraft.core.errors import NoLeader, RequestLost
from pyraft.core.raft import Role
from pyraft.statemachine import KVStore, get_query, set_command
from pyraft.storage.memory import MemoryStorage
from pyraft.transport.memory import MemoryNetwork, MemoryTransport

VOTERS = (1, 2, 3)


class Harness:
    def __init__(
        self, nursery: trio.Nursery, network: MemoryNetwork, snapshots: SnapshotPolicy | None = None
    ) -> None:
        self.nursery = nursery
        self.network = network
        self.snapshots = snapshots
        self.storages = {i: MemoryStorage() for i in VOTERS}
        self.transports = {i: MemoryTransport(network, i) for i in VOTERS}
        self.nodes: dict[int, RaftNode] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.stopped: dict[int, trio.Event] = {}

    async def start(self, node_id: int) -> RaftNode:
        node = RaftNode(
            node_id,
            VOTERS,
            self.storages[node_id],
            self.transports[node_id],
            KVStore(),
            timing=Timing(),
            rng=random.Random(node_id),
            offload_io=False,
            snapshots=self.snapshots,
        )
        scope = trio.CancelScope()
        previous = self.stopped.get(node_id)
        if previous is not None:
            await previous.wait()  # a crashed incarnation's tasks must be gone before its twin starts
        stopped = self.stopped[node_id] = trio.Event()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await node.run(task_status=task_status)
            finally:
                stopped.set()

        self.network.reconnect(node_id)
        await self.nursery.start(run)
        self.nodes[node_id], self.scopes[node_id] = node, scope
        return node

    def crash(self, node_id: int) -> None:
        """Stop the node's tasks; only what its storage holds survives."""
        self.network.disconnect(node_id)
        self.scopes.pop(node_id).cancel()
        self.nodes.pop(node_id)

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes.values() if n.core.role is Role.LEADER]
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    async def wait_leader(self) -> RaftNode:
        await wait_until(lambda: self.leader() is not None and self.all_know_leader())
        leader = self.leader()
        assert leader is not None
        return leader

    def all_know_leader(self) -> bool:
        leader = self.leader()
        return leader is not None and all(n.core.leader_id == leader.node_id for n in self.nodes.values())

    def follower(self) -> RaftNode:
        return next(n for n in self.nodes.values() if n.core.role is Role.FOLLOWER)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


@asynccontextmanager
async def cluster(snapshots: SnapshotPolicy | None = None) -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery, MemoryNetwork(), snapshots)
        for node_id in VOTERS:
            await harness.start(node_id)
        yield harness
        nursery.cancel_scope.cancel()


def value_of(node: RaftNode, key: str) -> bytes:
    return node.state_machine.query(get_query(key))


async def test_three_nodes_elect_exactly_one_leader(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        others = [n for n in c.nodes.values() if n is not leader]
        assert all(n.core.role is Role.FOLLOWER for n in others)
        assert {n.core.term for n in c.nodes.values()} == {leader.core.term}


async def test_write_on_follower_is_applied_on_every_node(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        await c.wait_leader()
        follower = c.follower()
        applied = await follower.propose(set_command("broker-1", b"alive"))
        assert applied.index > 0
        await wait_until(lambda: all(n.applier.applied_index >= applied.index for n in c.nodes.values()))
        assert {value_of(n, "broker-1") for n in c.nodes.values()} == {b"alive"}


async def test_linearizable_read_on_follower_sees_acknowledged_write(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        await leader.propose(set_command("k", b"v1"))
        follower = c.follower()
        # The follower may not have heard of the commit yet; ReadIndex makes it wait.
        assert await follower.read(get_query("k")) == b"v1"


async def test_many_concurrent_proposals_all_apply_in_one_order(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        await c.wait_leader()
        results: dict[int, int] = {}

        async def propose(i: int) -> None:
            node = c.nodes[VOTERS[i % 3]]
            results[i] = (await node.propose(set_command(f"k{i}", b"%d" % i))).index

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(propose, i)
        assert len(set(results.values())) == 200  # each at its own index
        top = max(results.values())
        await wait_until(lambda: all(n.applier.applied_index >= top for n in c.nodes.values()))
        stores = [n.state_machine.data for n in c.nodes.values()]  # type: ignore[attr-defined]
        assert stores[0] == stores[1] == stores[2]
        assert len(stores[0]) == 200


async def test_new_leader_after_crash_keeps_acknowledged_writes(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        acked = [await leader.propose(set_command(f"k{i}", b"x")) for i in range(20)]
        old = leader.node_id
        c.crash(old)
        new = await c.wait_leader()
        assert new.node_id != old
        applied = await new.propose(set_command("after", b"y"))
        assert applied.index > acked[-1].index
        for i in range(20):
            assert value_of(new, f"k{i}") == b"x"


async def test_restarted_node_recovers_from_storage_and_catches_up(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        victim = c.follower().node_id
        await leader.propose(set_command("before", b"1"))
        c.crash(victim)
        last = await leader.propose(set_command("while-down", b"2"))
        restarted = await c.start(victim)
        await wait_until(lambda: restarted.applier.applied_index >= last.index)
        assert value_of(restarted, "before") == b"1"
        assert value_of(restarted, "while-down") == b"2"


async def test_proposal_without_quorum_fails_fast_with_no_leader(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        survivor = c.follower()
        for node_id in [n for n in VOTERS if n != survivor.node_id]:
            c.crash(node_id)
        del leader
        # CheckQuorum-free follower: it loses its leader after an election timeout and
        # then cannot elect anyone; proposals must fail at once, not hang.
        await wait_until(lambda: survivor.core.leader_id is None)
        with trio.fail_after(0.1), pytest.raises(NoLeader):
            await survivor.propose(set_command("k", b"v"))


async def test_leader_isolated_by_partition_steps_down(autojump_clock: trio.abc.Clock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        c.network.isolate(leader.node_id)
        await wait_until(lambda: leader.core.role is not Role.LEADER)  # CheckQuorum
        with pytest.raises((NoLeader, RequestLost)):
            await leader.propose(set_command("k", b"v"))
        c.network.heal()
        new = await c.wait_leader()
        assert (await new.propose(set_command("k", b"v"))).index > 0


async def test_leadership_transfer_moves_leader_without_waiting_a_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        target = c.follower().node_id
        start = trio.current_time()
        await leader.transfer_leadership(target)
        await wait_until(lambda: c.nodes[target].core.role is Role.LEADER)
        assert trio.current_time() - start < 0.15  # well under one election timeout
        assert leader.core.role is Role.FOLLOWER


class _StepCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_propose_many_wakes_its_caller_once_all_are_applied(autojump_clock: trio.abc.Clock) -> None:
    """Accepted, committed and applied: the proposer hears of it once, with every outcome."""
    async with cluster() as c:
        leader = await c.wait_leader()
        commands = [set_command(f"k{i}", b"v") for i in range(8)]
        counter = _StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            outcomes = await leader.propose_many(commands)
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert counter.steps == 1  # the resumption after the one wait
        indexes = [o.index for o in outcomes if isinstance(o, Applied)]
        assert len(indexes) == 8 and indexes == list(range(indexes[0], indexes[0] + 8))
        assert leader.applier.applied_index >= indexes[-1]
        assert value_of(leader, "k7") == b"v"


async def test_propose_many_cut_short_without_a_quorum_reports_none(autojump_clock: trio.abc.Clock) -> None:
    """A caller that gives up before anything commits gets None for every command (not an
    exception, not a guess), and the commands still commit once the quorum is back."""
    async with cluster() as c:
        leader = await c.wait_leader()
        for node_id in VOTERS:
            if node_id != leader.node_id:
                c.network.disconnect(node_id)
        untouched = Exception("not written")
        out: list[Applied | Exception | None] = [untouched] * 3
        with trio.move_on_after(0.1):
            await leader.propose_many([set_command(f"k{i}", b"v") for i in range(3)], out)
        assert out == [None, None, None]
        for node_id in VOTERS:
            c.network.reconnect(node_id)
        await wait_until(lambda: value_of(leader, "k2") == b"v")

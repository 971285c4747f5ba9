"""Tickless time (actors/timer.py): the credit rule on its own, the timer task on trio's
MockClock, and whole nodes on the autojump clock with the in-memory transport."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

import trio
import trio.testing

from pyraft.actors.events import TimerWake
from pyraft.actors.node import RaftNode, Timing
from pyraft.actors.timer import TickClock, Timer
from pyraft.core.config import Config
from pyraft.core.messages import AppendEntries, Message
from pyraft.core.raft import RaftCore, Role

from .test_node_actors import cluster, wait_until

TICK_S = 0.01  # the tick interval of Timing() (tick_ms=10)
TIMING = Timing()
ELECTION_S = TIMING.election_timeout_ms / 1000
HEARTBEAT_S = TIMING.heartbeat_ms / 1000


def follower_core(seed: int = 1) -> RaftCore:
    return RaftCore(Config(1, (1, 2, 3), election_ticks=15, heartbeat_ticks=5), random.Random(seed))


def follower_and_clock() -> tuple[RaftCore, int, TickClock]:
    """A fresh follower, the tick its election timeout falls on, and a clock starting at 0."""
    core = follower_core()
    due = core.ticks_until_due()
    assert due is not None
    return core, due, TickClock(TICK_S, 0.0)


def role(core: RaftCore) -> Role:
    """Read through a call, so the type checker does not carry a narrowed role across a tick."""
    return core.role


def heartbeat_for(core: RaftCore, leader: int, term: int) -> AppendEntries:
    prev = core.log.last_index
    return AppendEntries(leader, core.node_id, term, prev, core.log.term_at(prev), (), core.commit_index, 1)


async def settled(nodes: Iterable[RaftNode], leader: RaftNode) -> None:
    """Every node applied the leader's no-op: no entry is left to replicate, only heartbeats."""
    nodes = list(nodes)
    await wait_until(lambda: all(n.applier.applied_index >= leader.core.commit_index > 0 for n in nodes))


# ------------------------------------------------------------------ the credit rule


def test_input_credit_stops_one_tick_short_and_drops_the_rest() -> None:
    core, _due, clock = follower_and_clock()
    clock.credit(core, 100.0)  # a long stall, then an input
    assert core.role is Role.FOLLOWER
    assert core.ticks_until_due() == 1
    assert clock.next_at > 100.0  # the stall's ticks are gone, not owed
    core.step(heartbeat_for(core, 2, 1))  # the heartbeat that waited through the stall
    assert core.ticks_until_due() == core._randomized_timeout  # it counts from here


def test_only_the_timer_fires_and_it_gets_a_held_back_tick() -> None:
    core, due, clock = follower_and_clock()
    at_due = due * TICK_S + TICK_S / 2
    clock.credit(core, at_due)  # the raft loop handled some input just before the timer's wake-up
    assert core.role is Role.FOLLOWER
    clock.wake(core, at_due, late=False)  # the timer was on time: the timeout fires
    assert role(core) is Role.PRE_CANDIDATE


def test_wake_on_time_credits_all_that_is_due() -> None:
    core, due, clock = follower_and_clock()
    assert clock.deadline(core) == due * TICK_S
    clock.wake(core, due * TICK_S, late=False)
    assert role(core) is Role.PRE_CANDIDATE


def test_late_wake_ups_give_one_tick_each_and_inputs_none() -> None:
    """Running late, time moves as the old ticker moved it: a 10 s stall is one tick."""
    core, due, clock = follower_and_clock()
    clock.wake(core, 10.0, late=True)
    assert core.ticks_until_due() == due - 1
    clock.credit(core, 20.0)  # an input while running late: no time passes for the core
    assert core.ticks_until_due() == due - 1
    assert clock.deadline(core) == clock.next_at  # it wakes every tick meanwhile
    now = 20.0
    for _ in range(due - 2):  # each late wake-up gives one tick...
        now += 1.0
        clock.wake(core, now, late=True)
    assert core.role is Role.FOLLOWER and core.ticks_until_due() == 1
    clock.wake(core, now + 1.0, late=True)  # ...so sustained overload delays a timeout, never stops it
    assert role(core) is Role.PRE_CANDIDATE


def test_a_first_late_wake_before_the_due_tick_waits_for_the_queued_heartbeat() -> None:
    core, due, clock = follower_and_clock()
    clock.credit(core, (due - 1) * TICK_S + TICK_S / 2)  # inputs brought it to the tick before
    assert core.ticks_until_due() == 1
    clock.wake(core, 10.0, late=True)  # stalled across the deadline: not even one tick yet
    assert core.role is Role.FOLLOWER and core.ticks_until_due() == 1
    planned = clock.deadline(core)
    assert planned == 10.0 + TICK_S
    core.step(heartbeat_for(core, 2, 1))  # read within that interval
    clock.wake(core, planned, late=False)  # on time again: the clock counts from here
    assert core.role is Role.FOLLOWER and core.leader_id == 2
    assert core.ticks_until_due() == core._randomized_timeout - 1


def test_an_on_time_wake_returns_to_the_clock() -> None:
    core = follower_core()
    clock = TickClock(TICK_S, 0.0)
    clock.wake(core, 10.0, late=True)
    before = core._election_elapsed
    clock.wake(core, clock.deadline(core), late=False)
    assert core._election_elapsed == before + 1
    clock.credit(core, clock.next_at + 4 * TICK_S)  # inputs credit the clock's ticks again
    assert core._election_elapsed == before + 6


def test_an_observer_counts_without_a_timer_up_to_two_timeouts() -> None:
    core = RaftCore(Config(4, (1, 2, 3)), random.Random(1))
    clock = TickClock(TICK_S, 0.0)
    assert clock.deadline(core) == float("inf")
    clock.credit(core, 0.1)
    assert core._election_elapsed == 10  # its leader lease runs out as time passes
    clock.credit(core, 86_400.0)  # a day without input: not 8.6 million calls of tick()
    assert core._election_elapsed == 10 + 2 * core.config.election_ticks


# ------------------------------------------------------------------ the timer task


async def test_timer_wakes_at_the_plan_and_moves_earlier_not_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer(TICK_S)
    send, receive = trio.open_memory_channel[TimerWake](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run, send)
        start = trio.current_time()
        timer.plan(start + 1.0)
        await trio.sleep(0.1)
        timer.plan(start + 0.5)  # earlier: taken while it sleeps
        timer.plan(start + 2.0)  # later: ignored (it wakes at 0.5 and is planned again)
        assert await receive.receive() == TimerWake(late=False)
        assert trio.current_time() - start == 0.5
        with trio.move_on_after(100):  # unplanned: it sleeps until planned
            await receive.receive()
            raise AssertionError("woke without a plan")
        assert timer.wakes == 1
        nursery.cancel_scope.cancel()


async def test_timer_reports_a_wake_more_than_an_interval_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer(TICK_S)
    send, receive = trio.open_memory_channel[TimerWake](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run, send)
        timer.plan(trio.current_time() + TICK_S)
        autojump_clock.jump(1.0)  # nothing runs for a second
        assert await receive.receive() == TimerWake(late=True)
        timer.plan(trio.current_time() + TICK_S)
        assert await receive.receive() == TimerWake(late=False)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ whole nodes


def record_steps(node: RaftNode, keep: Callable[[Message], bool]) -> list[float]:
    """Times at which the node's core handles messages matching ``keep``."""
    times: list[float] = []
    step = node.core.step

    def recording(msg: Message) -> None:
        if keep(msg):
            times.append(trio.current_time())
        step(msg)

    node.core.step = recording  # type: ignore[method-assign]
    return times


def record_campaigns(node: RaftNode) -> list[float]:
    times: list[float] = []
    campaign = node.core._campaign

    def recording(transfer: bool = False) -> None:
        times.append(trio.current_time())
        campaign(transfer)

    node.core._campaign = recording  # type: ignore[method-assign]
    return times


async def test_followers_that_hear_heartbeats_never_campaign(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        term = leader.core.term
        campaigns = [record_campaigns(n) for n in c.nodes.values() if n is not leader]
        await trio.sleep(30.0)
        assert campaigns == [[], []]
        assert {(n.core.term, n.core.leader_id) for n in c.nodes.values()} == {(term, leader.node_id)}


async def test_leader_heartbeats_every_heartbeat_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        await settled(c.nodes.values(), leader)  # only heartbeats go out from here on
        follower = c.follower()
        beats = record_steps(follower, lambda m: isinstance(m, AppendEntries) and not m.entries)
        await trio.sleep(2.0)
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert len(beats) >= 2.0 / HEARTBEAT_S - 1
        assert all(abs(gap - HEARTBEAT_S) < 1e-6 for gap in gaps), gaps
        assert leader.core.role is Role.LEADER


async def test_a_silent_leaders_followers_campaign_after_an_election_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        await settled(c.nodes.values(), leader)
        followers = [n for n in c.nodes.values() if n is not leader]
        heard = [record_steps(n, lambda m: isinstance(m, AppendEntries)) for n in followers]
        campaigns = [record_campaigns(n) for n in followers]
        await trio.sleep(0.2)
        c.crash(leader.node_id)
        c.network.partition([[n.node_id] for n in followers])  # nobody wins: each keeps campaigning
        await wait_until(lambda: all(len(times) >= 3 for times in campaigns))
        for last_heard, campaigned in zip(heard, campaigns, strict=True):
            # A timeout of T ticks, drawn from [15, 30), fires at the T-th tick of the grid after
            # the last heartbeat (or the last campaign): between T - 1 and T intervals after it.
            starts = [last_heard[-1], *campaigned]
            for start, fired in zip(starts, campaigned, strict=False):
                assert ELECTION_S - TICK_S - 1e-9 <= fired - start < 2 * ELECTION_S, (start, fired)


async def test_a_node_stalled_across_its_deadline_reads_queued_heartbeats_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        await settled(c.nodes.values(), leader)
        term = leader.core.term
        followers = [n for n in c.nodes.values() if n is not leader]
        campaigns = [record_campaigns(n) for n in followers]
        # The whole process stalls for a second (no task runs) across every timer's deadline.
        # The timers' late wake-ups are handled first (all tasks run until blocked, at the same
        # instant); the leader's heartbeats that waited through the stall come in after them,
        # and must still be read before any timeout fires.
        autojump_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        for follower in followers:
            follower._inbox_send.send_nowait(heartbeat_for(follower.core, leader.node_id, term))
        await trio.sleep(1.0)
        assert campaigns == [[], []]
        assert {(n.core.term, n.core.leader_id) for n in c.nodes.values()} == {(term, leader.node_id)}


async def test_a_stalled_node_without_heartbeats_still_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The control: the same stall with the leader gone, so no heartbeat is queued. The stall's
    second is not counted (as with the old ticker): the follower campaigns once the rest of its
    timeout has run after the stall, not at once."""
    async with cluster() as c:
        leader = await c.wait_leader()
        await settled(c.nodes.values(), leader)
        follower = c.follower()
        campaigns = record_campaigns(follower)
        c.crash(leader.node_id)
        autojump_clock.jump(1.0)
        resumed = trio.current_time()
        await wait_until(lambda: bool(campaigns))
        # It had heard a heartbeat at most one heartbeat interval before the stall.
        assert ELECTION_S - HEARTBEAT_S - 2 * TICK_S <= campaigns[0] - resumed < 2 * ELECTION_S


async def test_an_idle_cluster_wakes_far_less_than_every_tick(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.wait_leader()
        await settled(c.nodes.values(), leader)
        before = {i: n._timer.wakes for i, n in c.nodes.items()}
        seconds = 10.0
        await trio.sleep(seconds)
        rates = {i: (n._timer.wakes - before[i]) / seconds for i, n in c.nodes.items()}
        # The leader wakes once per heartbeat (20/s); a follower when its election timer's stale
        # plan runs out (every 100-300 ms). The ticker woke every node 100 times a second.
        assert rates[leader.node_id] <= 1 / HEARTBEAT_S + 0.1, rates
        assert all(rate <= 10 for i, rate in rates.items() if i != leader.node_id), rates
        assert leader.core.role is Role.LEADER

"""``ticks_until_due()``: how many ticks a node may sleep through, checked against ``tick()`` itself.

The actor sleeps until the tick it names, and a tick it credits late for a message never
reaches it, so the answer must be exact: every tick before it does nothing but count,
and the tick it names acts (campaigns, heartbeats, checks the quorum, aborts a transfer).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pyraft.core.membership import Member, Membership
from pyraft.core.raft import RaftCore, Role

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config


def observe(core: RaftCore) -> tuple[Any, ...]:
    """Everything a tick can change that matters outside the tick counters."""
    progress = tuple(sorted((p, pr.recent_active) for p, pr in core._progress.items()))
    return (
        core.role,
        core.term,
        core.leader_id,
        core.voted_for,
        core._transferee,
        core.has_ready(),
        progress if core.role is Role.LEADER else (),
    )


def check_due(c: Cluster, node_id: int) -> int | None:
    """Tick one node through its due tick; the ticks before do nothing, the due one acts."""
    c.collect()  # queue everything already said, so has_ready() only shows what ticks add
    core = c[node_id]
    due = core.ticks_until_due()
    before = observe(core)
    assert not before[5]
    if due is None:
        for _ in range(4 * core.config.election_ticks):
            core.tick()
            assert observe(core) == before
        return None
    assert due >= 1
    for n in range(due - 1):
        core.tick()
        assert observe(core) == before, f"tick {n + 1} of {due - 1} acted"
    core.tick()
    assert observe(core) != before, f"the due tick ({due}) did nothing"
    return due


@pytest.mark.parametrize("seed", range(40))
def test_due_tick_is_exactly_the_first_that_acts(seed: int) -> None:
    """A seeded random walk through elections, partitions, proposals and transfers; at random
    moments one node is ticked through its due tick."""
    rng = random.Random(seed)
    size = rng.choice([1, 3, 3, 5])
    c = Cluster(size, seed=seed, check_quorum=rng.random() < 0.8, pre_vote=rng.random() < 0.7)
    roles: set[Role] = set()
    for _ in range(80):
        action = rng.random()
        if action < 0.35:
            c.deliver_queue(lambda _m: rng.random() < 0.8)
        elif action < 0.42:
            c.queue.clear()  # lost
        elif action < 0.47:
            c.heal() if c.cut else c.isolate(rng.choice(c.ids))
        elif action < 0.55 and c.leaders():
            leader = c[c.leaders()[0]]
            if leader._transferee is None:
                leader.propose(b"x")
        elif action < 0.6 and c.leaders():
            leader = c[c.leaders()[0]]
            if leader._transferee is None and len(c.ids) > 1:
                target = rng.choice([i for i in c.ids if i != leader.node_id])
                leader.transfer_leadership(target)
        else:
            node_id = rng.choice(c.ids)
            roles.add(c[node_id].role)
            check_due(c, node_id)
        c.collect()
    assert roles  # the walk checked someone


def test_follower_is_due_at_its_randomized_timeout() -> None:
    c = Cluster(3, seed=5)
    core = c[1]
    assert core.ticks_until_due() == core._randomized_timeout
    assert ELECTION <= (core.ticks_until_due() or 0) < 2 * ELECTION
    assert check_due(c, 1) is not None
    assert core.role is Role.PRE_CANDIDATE


def test_candidates_are_due_at_their_next_election() -> None:
    for pre_vote, role in ((True, Role.PRE_CANDIDATE), (False, Role.CANDIDATE)):
        c = Cluster(3, seed=6, pre_vote=pre_vote)
        c.campaign(1)
        c.queue.clear()  # no answers: it stays a (pre-)candidate
        assert c[1].role is role
        timeout = c[1]._randomized_timeout
        assert check_due(c, 1) == timeout  # it campaigns again: new requests go out
        assert c[1].role is role


def test_leader_is_due_at_heartbeat_then_check_quorum_then_transfer_abort() -> None:
    c = Cluster(3, seed=7)
    c.elect(1)
    leader = c[1]
    assert leader.ticks_until_due() == HEARTBEAT
    c.tick_all(HEARTBEAT)  # heartbeats answered: the quorum is active
    assert check_due(c, 1) == HEARTBEAT
    c.isolate(1)
    leader.transfer_leadership(2)
    # A transfer that never completes is aborted after an election timeout (if check-quorum
    # does not depose the leader first, which here it does at the same tick at the latest).
    for _ in range(3 * ELECTION):
        if leader.role is not Role.LEADER:
            break
        check_due(c, 1)
    assert leader.role is Role.FOLLOWER


def test_transfer_abort_is_due_without_check_quorum() -> None:
    c = Cluster(3, seed=8, check_quorum=False)
    c.elect(1)
    leader = c[1]
    c.isolate(1)
    leader.transfer_leadership(2)
    ticks = 0
    while leader._transferee is not None:
        ticks += check_due(c, 1) or 0
    assert ticks == ELECTION  # heartbeats came due before, the abort exactly at the timeout


def test_sole_voter_is_due_at_once_and_then_never() -> None:
    c = Cluster(1, seed=9)
    core = c[1]
    assert core.ticks_until_due() == 1
    assert check_due(c, 1) == 1
    c.stabilize()
    assert core.role is Role.LEADER
    assert core.ticks_until_due() is None  # alone: no heartbeat to send, no quorum to lose
    core.add_learner(Member(2, "b"))
    c.collect()
    assert core.ticks_until_due() == HEARTBEAT  # now someone must hear from it
    assert check_due(c, 1) is not None


def test_observer_and_learner_are_never_due() -> None:
    observer = Node.create(config(4, (1, 2, 3)), seed=1)
    assert observer.core.ticks_until_due() is None
    with_learner = Membership.of_ids((1, 2, 3)).with_learner(Member(4, "d"))
    learner = RaftCore(config(4, (1, 2, 3)), random.Random(1), membership=with_learner)
    assert learner.ticks_until_due() is None
    voter = RaftCore(config(1, (1, 2, 3)), random.Random(1), membership=with_learner)
    assert voter.ticks_until_due() is not None


def test_snapshot_install_suspends_the_election_timer() -> None:
    c = Cluster(3, seed=11)
    follower = c[2]
    assert follower.ticks_until_due() is not None
    follower._installing = follower.log.snapshot_index, 0  # type: ignore[assignment]
    assert follower.ticks_until_due() is None
    follower._installing = None
    assert follower.ticks_until_due() is not None

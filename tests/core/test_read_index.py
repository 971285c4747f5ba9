"""Linearizable reads without log writes: ReadIndex (thesis 6.4)."""

from __future__ import annotations

import pytest

from pyraft.core.errors import NoLeader
from pyraft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    ReadIndexRequest,
    ReadIndexResponse,
)
from pyraft.core.raft import Role
from pyraft.core.ready import ReadState

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, of_type


def steady(size: int = 3, **cfg: object) -> Cluster:
    c = Cluster(size, seed=11, **cfg)  # type: ignore[arg-type]
    c.elect(1)
    c.propose(1, b"a")
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c[1].commit_index == 2
    return c


def test_leader_read_waits_until_entry_of_its_term_is_committed() -> None:
    """Thesis 6.4 step 1: a new leader does not know the commit index until its no-op commits."""
    c = Cluster(3, seed=11)
    c.campaign(1)
    c.stabilize(persist=False)
    assert c[1].role is Role.LEADER and c[1].commit_index == 0
    c[1].read_index(7)
    c.stabilize(persist=False)
    c.tick_all(2 * HEARTBEAT, stabilize=False)
    c.stabilize(persist=False)
    assert c.nodes[1].read_states == []  # heartbeats were answered, but nothing of term 1 committed
    for i in c.ids:
        c.nodes[i].persist()
    c.stabilize()
    assert c.nodes[1].read_states == [ReadState(7, 1)]


def test_read_index_is_commit_index_not_last_index() -> None:
    c = steady()
    c.propose(1, b"uncommitted")
    c[1].read_index(1)
    c.collect([1], persist=False)
    c.deliver_queue()
    c.collect([2, 3], persist=False)  # followers answer the round but do not persist the entry
    c.deliver_queue()
    c.collect([1], persist=False)
    assert c.nodes[1].read_states == [ReadState(1, 2)]


def test_read_released_only_after_quorum_answers_round_started_after_read() -> None:
    c = steady(5)
    old_answers = [m for m in c.delivered if isinstance(m, AppendEntriesResponse) and m.dst == 1]
    c[1].read_index(1)
    for m in old_answers[-8:]:
        c[1].step(m)  # answers to rounds sent before the read: they confirm nothing
    out = c.collect([1])
    round_msgs = of_type(out, AppendEntries)
    assert sorted(m.dst for m in round_msgs) == [2, 3, 4, 5]  # the read starts a heartbeat round
    c.queue.clear()
    c.deliver([m for m in round_msgs if m.dst in (2, 3)])
    answers = of_type(c.collect([2, 3]), AppendEntriesResponse)
    c.queue.clear()
    c.deliver(answers[:1])
    c.collect([1])
    assert c.nodes[1].read_states == []  # leader + 1 of 5
    c.deliver(answers[1:])
    c.collect([1])
    assert c.nodes[1].read_states == [ReadState(1, 2)]  # leader + 2 of 5


def test_reads_share_a_round() -> None:
    c = steady()
    c[1].read_index(1)
    c[1].read_index(2)
    sent = of_type(c.collect([1]), AppendEntries)
    assert len(sent) == 2
    c.stabilize()
    assert c.nodes[1].read_states == [ReadState(1, 2), ReadState(2, 2)]


def test_deposed_leader_never_releases_a_read() -> None:
    c = steady()
    c.isolate(1)
    for _ in range(4 * ELECTION):
        c.tick(2)
        c.tick(3)
        c.stabilize()
        if c.leaders() != [1]:
            break
    assert c[2].role is Role.LEADER or c[3].role is Role.LEADER
    c[1].read_index(5)
    c.collect([1])
    c.heal()
    c.deliver_queue()  # the old leader's round reaches nodes of a newer term ...
    c.stabilize()
    assert c[1].role is Role.FOLLOWER  # ... whose answers depose it
    assert c.nodes[1].read_states == []
    assert [f.request_id for f in c.nodes[1].failed] == [5]


def test_read_fails_when_leader_steps_down_by_check_quorum() -> None:
    c = steady()
    c.isolate(1)
    c[1].read_index(3)
    for _ in range(3 * ELECTION):
        c.tick(1)
        c.stabilize()
    assert c[1].role is Role.FOLLOWER
    assert c.nodes[1].read_states == []
    assert [f.request_id for f in c.nodes[1].failed] == [3]


def test_follower_read_round_trips_through_leader() -> None:
    c = steady()
    c[2].read_index(42)
    (req,) = of_type(c.collect([2]), ReadIndexRequest)
    assert (req.dst, req.request_id) == (1, 42)
    c.deliver_queue()
    # The leader confirms its leadership with a round before answering.
    assert of_type(c.collect([1]), ReadIndexResponse) == []
    c.stabilize()
    answered = [m for m in c.delivered if isinstance(m, ReadIndexResponse)]
    assert [(m.dst, m.ok, m.read_index) for m in answered] == [(2, True, 2)]
    assert c.nodes[2].read_states == [ReadState(42, 2)]


def test_follower_read_fails_when_leader_is_deposed_meanwhile() -> None:
    c = steady()
    c[2].read_index(42)
    c.collect([2])
    c.deliver_queue()  # the leader holds the read, its round not yet sent
    c[1].step(AppendEntriesResponse(3, 1, c[1].term + 1, False))
    c.stabilize()
    assert c.nodes[2].read_states == []
    assert [f.request_id for f in c.nodes[2].failed] == [42]


def test_read_with_no_leader_raises() -> None:
    n = Node.create(config(1, (1, 2, 3)))
    with pytest.raises(NoLeader):
        n.core.read_index(1)


def test_single_node_serves_reads_at_once() -> None:
    n = Node.create(config(1, (1,)))
    while n.core.role is not Role.LEADER:
        n.core.tick()
    n.ready()
    n.core.read_index(1)
    rd = n.core.ready()
    assert rd.read_states == [ReadState(1, 1)]
    assert rd.messages == []


def test_restarted_single_node_read_waits_for_its_no_op() -> None:
    """6.4 step 1 holds for a quorum of one too: after a restart the commit index starts at 0,
    so a read answered at once would miss entries committed before the restart."""
    before = [Entry(1, 1), Entry(2, 1, data=b"x")]
    n = Node.create(config(1, (1,)), HardState(1, 1), before)
    while n.core.role is not Role.LEADER:
        n.core.tick()
    n.core.read_index(1)
    rd = n.core.ready()
    assert rd.read_states == []  # our no-op (index 3) is not durable, so not committed, yet
    n.core.persisted(rd.entries[-1].index, rd.entries[-1].term)
    assert n.core.ready().read_states == [ReadState(1, 3)]

"""Restarting from durable state (Figure 2 "Persistent state on all servers")."""

from __future__ import annotations

from pyraft.core.messages import HardState, RequestVote, RequestVoteResponse
from pyraft.core.raft import Role

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, log_of, of_type


def test_restart_keeps_term_and_vote_and_never_votes_twice_in_a_term() -> None:
    n = Node.create(config(1, (1, 2, 3), pre_vote=False))
    n.core.step(RequestVote(2, 1, 5, 0, 0))
    n.ready()
    assert n.hard_state == HardState(5, 2)
    n.restart()
    assert (n.core.term, n.core.voted_for, n.core.role) == (5, 2, Role.FOLLOWER)
    n.core.step(RequestVote(3, 1, 5, 9, 4))
    n.core.step(RequestVote(2, 1, 5, 0, 0))
    answers = [(r.dst, r.granted) for r in of_type(n.ready(), RequestVoteResponse)]
    assert answers == [(3, False), (2, True)]


def test_restart_keeps_durable_log_and_forgets_commit() -> None:
    n = Node.create(config(1, (1, 2, 3)), HardState(2, None), log_of(1, 2, 2))
    assert n.core.log.last_index == 3 and n.core.log.last_term == 2
    assert n.core.commit_index == 0  # volatile: relearned from the leader
    assert n.core.ready().entries == []  # recovered entries are already durable


def test_restarted_follower_loses_unpersisted_entries_and_catches_up() -> None:
    c = Cluster(3, seed=41)
    c.elect(1)
    c.tick_all(HEARTBEAT)
    for k in range(3):
        c.propose(1, b"%d" % k)
    c.collect([1, 2])
    c.deliver_queue()
    c.collect([3], persist=False)  # node 3 got the entries but crashes before fsync
    c.nodes[3].restart()
    assert c[3].log.last_index == 1
    c.stabilize()
    c.tick_all(3 * HEARTBEAT)
    assert c.nodes[3].log == c.nodes[1].log
    assert c[3].commit_index == c[1].commit_index == 4


def test_whole_cluster_restart_keeps_committed_entries() -> None:
    c = Cluster(3, seed=42)
    c.elect(2)
    for k in range(4):
        c.propose(2, b"%d" % k)
    c.stabilize()
    c.tick_all(HEARTBEAT)
    committed = c.nodes[2].log[: c[2].commit_index]
    term = c[2].term
    for i in c.ids:
        c.nodes[i].restart()
    assert c.leaders() == []
    for _ in range(4 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    (leader,) = c.leaders()
    assert c[leader].term > term
    c.tick_all(HEARTBEAT)
    assert c.nodes[leader].committed[: len(committed)] == committed
    assert all(c.nodes[i].log[: len(committed)] == committed for i in c.ids)


def test_restarted_leader_is_a_follower_and_rejoins() -> None:
    c = Cluster(3, seed=43)
    c.elect(1)
    c.propose(1, b"x")
    c.stabilize()
    c.nodes[1].restart()
    assert c[1].role is Role.FOLLOWER and c[1].leader_id is None
    for _ in range(6 * ELECTION):
        c.tick_all()
    assert len(c.leaders()) == 1
    assert all(c.nodes[i].log == c.nodes[c.leaders()[0]].log for i in c.ids)


def test_single_node_restart_commits_its_log_again() -> None:
    n = Node.create(config(1, (1,)), HardState(3, 1), log_of(1, 2, 3))
    while n.core.role is not Role.LEADER:
        n.core.tick()
    assert n.core.term == 4
    n.ready()  # hands out the no-op; persisting it commits everything
    assert n.core.commit_index == 4
    n.ready()
    assert [e.term for e in n.committed] == [1, 2, 3, 4]

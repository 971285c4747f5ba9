"""PreVote (thesis 9.6), leader stickiness (thesis 4.2.3) and CheckQuorum (thesis 6.2)."""

from __future__ import annotations

from pyraft.core.messages import AppendEntries, HardState, RequestVote, RequestVoteResponse
from pyraft.core.raft import Role

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, log_of, of_type, role_of


def test_pre_candidate_does_not_increment_term() -> None:
    n = Node.create(config(1, (1, 2, 3)), HardState(3, 2), log_of(1, 3))
    while n.core.role is Role.FOLLOWER:
        n.core.tick()
    assert n.core.role is Role.PRE_CANDIDATE
    assert n.core.term == 3
    rd = n.core.ready()
    assert rd.hard_state is None  # nothing changed that must be durable
    votes = of_type(rd.messages, RequestVote)
    assert [(v.dst, v.term, v.pre_vote, v.last_log_index, v.last_log_term) for v in votes] == [
        (2, 4, True, 2, 3),
        (3, 4, True, 2, 3),
    ]


def test_pre_vote_grant_changes_no_voter_state() -> None:
    n = Node.create(config(1, (1, 2, 3)), HardState(3, 3))
    n.core.step(RequestVote(2, 1, 4, 0, 0, pre_vote=True))
    rd = n.core.ready()
    (resp,) = of_type(rd.messages, RequestVoteResponse)
    assert resp.granted and resp.pre_vote and resp.term == 4
    assert rd.hard_state is None
    assert (n.core.term, n.core.voted_for) == (3, 3)
    # The real vote is still refused: it already voted for 3 in term 3, and in term 4 it
    # is free again.
    n.core.step(RequestVote(2, 1, 3, 0, 0))
    n.core.step(RequestVote(2, 1, 4, 0, 0))
    grants = [(r.term, r.granted) for r in of_type(n.ready(), RequestVoteResponse)]
    assert grants == [(3, False), (4, True)]


def test_pre_vote_rejected_when_log_less_up_to_date() -> None:
    n = Node.create(config(1, (1, 2, 3)), HardState(2, None), log_of(1, 2, 2))
    n.core.step(RequestVote(2, 1, 3, 3, 1, pre_vote=True))
    (resp,) = of_type(n.ready(), RequestVoteResponse)
    assert not resp.granted and resp.term == 2


def test_pre_candidate_with_stale_log_never_disturbs_term() -> None:
    """A node whose log is behind keeps failing pre-votes without raising anyone's term."""
    c = Cluster(3, seed=2, logs={1: log_of(1), 2: log_of(1, 1), 3: log_of(1, 1)})
    for _ in range(5):
        c.campaign(1)
        c.stabilize()
        assert c[1].role is Role.FOLLOWER
    assert [c[i].term for i in c.ids] == [0, 0, 0]


def test_pre_vote_succeeds_when_leader_is_gone() -> None:
    c = Cluster(3, seed=3)
    c.elect(1)
    term = c[1].term
    c.down.add(1)
    for _ in range(4 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    (leader,) = c.leaders()
    assert leader in (2, 3)
    # One real election: the pre-vote phase did not burn terms.
    assert c[leader].term == term + 1


def test_partitioned_node_rejoining_does_not_disrupt_leader() -> None:
    """Thesis 9.6: a node cut off keeps its term (pre-votes fail) and, once back, its
    pre-votes are refused by nodes still hearing from the leader."""
    c = Cluster(3, seed=4)
    c.elect(1)
    term = c[1].term
    c.isolate(3)
    c.tick_all(6 * ELECTION)
    assert c[3].term == term  # pre-candidate only, never a real candidate
    assert c[3].role is Role.PRE_CANDIDATE
    c.heal()
    # Its next pre-vote reaches the others while they hear from the leader.
    c.campaign(3)
    votes = c.collect([3])
    c.queue.clear()
    assert all(v.pre_vote for v in of_type(votes, RequestVote))
    c.deliver(votes)
    assert of_type(c.collect([1, 2]), RequestVoteResponse) == []  # refused silently
    c.queue.clear()
    c.tick_all(2 * HEARTBEAT)
    assert c.leaders() == [1]
    assert [c[i].term for i in c.ids] == [term] * 3
    assert role_of(c[3]) is Role.FOLLOWER and c[3].leader_id == 1


def test_vote_request_with_higher_term_ignored_while_in_lease() -> None:
    """Thesis 4.2.3: within the minimum election timeout of hearing from a leader a server
    neither updates its term nor grants its vote; once the lease has lapsed, it does."""
    n = Node.create(config(1, (1, 2, 3)))
    n.core.step(AppendEntries(2, 1, 1, 0, 0, (), 0))
    n.ready()
    n.core.step(RequestVote(3, 1, 2, 5, 1))
    assert n.core.term == 1 and n.core.voted_for is None
    assert n.ready() == []
    for _ in range(ELECTION):
        n.core.tick()  # (pre_vote=True: ticking to E - 1 never starts a campaign before 2E)
    n.core.step(RequestVote(3, 1, 2, 5, 1))
    (resp,) = of_type(n.ready(), RequestVoteResponse)
    assert resp.granted and n.core.term == 2


def test_leader_steps_down_without_quorum_within_election_timeout() -> None:
    """CheckQuorum: a leader that hears from no majority for an election timeout steps down."""
    c = Cluster(3, seed=5)
    c.elect(1)
    c.tick_all(3 * ELECTION)  # steady state: acknowledged by both followers
    assert c.leaders() == [1]
    c.isolate(1)
    elapsed = 0
    while c[1].role is Role.LEADER and elapsed < 3 * ELECTION:
        c.tick(1)
        c.stabilize()
        elapsed += 1
    assert c[1].role is Role.FOLLOWER and c[1].leader_id is None
    assert ELECTION - HEARTBEAT <= elapsed <= 2 * ELECTION
    assert c[1].term == c[2].term  # stepping down changes no term


def test_leader_with_quorum_stays_leader() -> None:
    c = Cluster(3, seed=6)
    c.elect(1)
    c.down.add(3)
    c.tick_all(6 * ELECTION)
    assert c.leaders() == [1]


def test_without_check_quorum_isolated_leader_stays_leader() -> None:
    c = Cluster(3, seed=6, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    c.tick(1, 6 * ELECTION)
    assert c[1].role is Role.LEADER


def test_new_leader_that_hears_from_nobody_steps_down_after_one_election_timeout() -> None:
    """CheckQuorum: the votes came before the leader's first window; if no follower answers
    within that window (here: they crash right after voting) the leader must step down.
    Regression: new leaders used to start with every follower marked recent_active."""
    c = Cluster(3, seed=5)
    c.campaign(1)
    while c[1].role is not Role.LEADER:
        c.collect()
        c.deliver_queue()
    c.queue.clear()
    c.down.update({2, 3})  # they never see the leader's first AppendEntries
    c.tick(1, ELECTION)
    assert role_of(c[1]) is Role.FOLLOWER

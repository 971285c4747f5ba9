"""Leader election, message by message (Raft paper 5.1, 5.2, 5.4.1; Figure 2 "RequestVote RPC")."""

from __future__ import annotations

import pytest

from pyraft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from pyraft.core.raft import Role

from .helpers import ELECTION, Cluster, Node, config, log_of, of_type, role_of


def ticks_until_campaign(node: Node) -> int:
    for n in range(1, 4 * ELECTION):
        node.core.tick()
        if node.core.role is not Role.FOLLOWER:
            return n
    raise AssertionError("never campaigned")


def test_follower_starts_election_after_randomized_timeout() -> None:
    """5.2: a follower that hears nothing campaigns after a timeout drawn from [E, 2E)."""
    seen = set()
    for seed in range(40):
        node = Node.create(config(1, (1, 2, 3), pre_vote=False), seed=seed)
        n = ticks_until_campaign(node)
        assert ELECTION <= n < 2 * ELECTION
        seen.add(n)
        votes = of_type(node.ready(), RequestVote)
        assert sorted(v.dst for v in votes) == [2, 3]
        assert all(v.term == 1 and not v.pre_vote for v in votes)
    # Randomized: different seeds give different timeouts, covering much of the range.
    assert len(seen) >= ELECTION // 2


def test_same_seed_gives_same_timeout() -> None:
    a = Node.create(config(1, (1, 2, 3)), seed=7)
    b = Node.create(config(1, (1, 2, 3)), seed=7)
    assert ticks_until_campaign(a) == ticks_until_campaign(b)


def test_election_timer_reset_by_append_entries() -> None:
    """5.2: a follower that keeps hearing from a leader never campaigns."""
    c = Cluster(3, seed=1)
    c.elect(1)
    for _ in range(5 * ELECTION):
        c.tick_all()
    assert c[1].role is Role.LEADER
    assert c[2].role is Role.FOLLOWER and c[3].role is Role.FOLLOWER
    assert c[2].term == c[3].term == c[1].term


def test_candidate_votes_for_itself_and_persists_term_and_vote() -> None:
    """Figure 2: on conversion to candidate increment currentTerm and vote for self;
    the Ready carrying the RequestVotes also carries that hard state (to persist first)."""
    node = Node.create(config(1, (1, 2, 3), pre_vote=False), HardState(4, None))
    ticks_until_campaign(node)
    assert node.core.role is Role.CANDIDATE
    rd = node.core.ready()
    assert rd.hard_state == HardState(5, 1)
    votes = of_type(rd.messages, RequestVote)
    assert len(votes) == 2 and all(v.term == 5 for v in votes)
    # The hard state is emitted once only.
    assert node.core.ready().hard_state is None


def test_candidate_request_carries_last_log_index_and_term() -> None:
    node = Node.create(config(1, (1, 2, 3), pre_vote=False), HardState(3, None), log_of(1, 2, 3, 3))
    ticks_until_campaign(node)
    (vote, _) = of_type(node.ready(), RequestVote)
    assert (vote.last_log_index, vote.last_log_term, vote.term) == (4, 3, 4)


def test_vote_granted_at_most_once_per_term() -> None:
    """5.2: each server votes for at most one candidate in a given term (first come first served)."""
    n = Node.create(config(1, (1, 2, 3), pre_vote=False))
    n.core.step(RequestVote(2, 1, 1, 0, 0))
    n.core.step(RequestVote(3, 1, 1, 0, 0))
    n.core.step(RequestVote(2, 1, 1, 0, 0))  # a retransmission from the same candidate
    rd = n.core.ready()
    assert rd.hard_state == HardState(1, 2)
    answers = [(r.dst, r.granted, r.term) for r in of_type(rd.messages, RequestVoteResponse)]
    assert answers == [(2, True, 1), (3, False, 1), (2, True, 1)]


@pytest.mark.parametrize(
    ("voter_log", "cand_last_index", "cand_last_term", "granted"),
    [
        # 5.4.1: the log with the later last term is more up to date ...
        (log_of(1, 2), 5, 1, False),
        (log_of(1, 2), 1, 3, True),
        # ... and with equal last terms the longer log is more up to date.
        (log_of(1, 2, 2), 2, 2, False),
        (log_of(1, 2, 2), 3, 2, True),
        (log_of(1, 2, 2), 4, 2, True),
    ],
)
def test_vote_rejected_when_candidate_log_is_less_up_to_date(
    voter_log: list[Entry], cand_last_index: int, cand_last_term: int, granted: bool
) -> None:
    n = Node.create(config(1, (1, 2, 3), pre_vote=False), HardState(3, None), voter_log)
    n.core.step(RequestVote(2, 1, 4, cand_last_index, cand_last_term))
    rd = n.core.ready()
    (resp,) = of_type(rd.messages, RequestVoteResponse)
    assert resp.granted is granted
    assert resp.term == 4  # the higher term is adopted whether or not the vote is granted
    assert rd.hard_state == HardState(4, 2 if granted else None)


def test_candidate_becomes_leader_on_majority() -> None:
    """5.2: a candidate wins with votes from a majority; it then sends AppendEntries at once."""
    c = Cluster(5, seed=3, pre_vote=False)
    c.campaign(1)
    votes = c.collect()
    assert len(of_type(votes, RequestVote)) == 4
    # Only nodes 2 and 3 answer: with its own vote that is 3 of 5.
    c.deliver_queue(lambda m: m.dst in (2, 3))
    c.queue.clear()
    c.collect([2, 3])
    c.deliver_queue(lambda m: isinstance(m, RequestVoteResponse) and m.src == 2)
    assert c[1].role is Role.CANDIDATE  # 2 of 5 is not enough
    c.deliver_queue()
    assert role_of(c[1]) is Role.LEADER
    assert c[1].leader_id == 1
    out = c.collect([1])
    assert sorted(m.dst for m in of_type(out, AppendEntries)) == [2, 3, 4, 5]


def test_candidate_steps_down_when_majority_rejects() -> None:
    c = Cluster(3, seed=1, pre_vote=False, logs={2: log_of(1, 1), 3: log_of(1, 1)})
    c.campaign(1)
    c.stabilize()
    assert c[1].role is Role.FOLLOWER
    assert c[1].term == 1 and c[1].leader_id is None


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    """5.2: a candidate that receives AppendEntries from a leader of its term returns to follower."""
    n = Node.create(config(1, (1, 2, 3), pre_vote=False))
    ticks_until_campaign(n)
    n.ready()
    assert n.core.role is Role.CANDIDATE and n.core.term == 1
    n.core.step(AppendEntries(2, 1, 1, 0, 0, (), 0))
    assert role_of(n.core) is Role.FOLLOWER
    assert n.core.leader_id == 2 and n.core.term == 1
    (resp,) = of_type(n.ready(), AppendEntriesResponse)
    assert resp.success


def test_candidate_ignores_append_from_older_term() -> None:
    n = Node.create(config(1, (1, 2, 3), pre_vote=False), HardState(2, None))
    ticks_until_campaign(n)
    n.ready()
    n.core.step(AppendEntries(2, 1, 2, 0, 0, (), 0))
    assert n.core.role is Role.CANDIDATE and n.core.term == 3


def test_split_vote_then_new_election_in_higher_term() -> None:
    """5.2: with a split vote each candidate times out and starts a new election, term + 1."""
    c = Cluster(4, seed=2, pre_vote=False)
    c.campaign(1)
    c.campaign(2)
    c.collect()
    # 3 votes for 1, 4 votes for 2: two votes each, no majority of 4.
    c.deliver_queue(lambda m: (m.src, m.dst) in {(1, 3), (2, 4)})
    c.queue.clear()
    c.stabilize()
    assert c[1].role is Role.CANDIDATE and c[2].role is Role.CANDIDATE
    c.campaign(1)
    assert c[1].term == 2
    c.stabilize()
    assert c.leaders() == [1]
    assert all(c[i].term == 2 for i in c.ids)


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
@pytest.mark.parametrize("kind", ["append", "append_response", "vote", "vote_response", "timeout_now"])
def test_higher_term_in_any_message_makes_node_follower(role: str, kind: str) -> None:
    """5.1: if a message carries a term greater than currentTerm, adopt it and become follower."""
    c = Cluster(3, seed=5, pre_vote=False, check_quorum=False)
    if role == "leader":
        c.elect(1)
    elif role == "candidate":
        c.campaign(1)
        c.collect()
        c.queue.clear()
    node = c[1]
    term = node.term
    high = term + 3
    messages: dict[str, Message] = {
        "append": AppendEntries(2, 1, high, 0, 0, (), 0),
        "append_response": AppendEntriesResponse(2, 1, high, False),
        "vote": RequestVote(2, 1, high, 0, 0),
        "vote_response": RequestVoteResponse(2, 1, high, False),
        "timeout_now": TimeoutNow(2, 1, high),
    }
    node.step(messages[kind])
    if kind == "timeout_now":
        # TimeoutNow from the leader of that term: adopt it, then campaign at once.
        assert node.role is Role.CANDIDATE and node.term == high + 1
        return
    assert node.term == high
    assert node.role is Role.FOLLOWER
    assert node.leader_id == (2 if kind == "append" else None)
    c.nodes[1].ready()
    assert c.nodes[1].hard_state.term == high  # the new term is handed out to persist


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_stale_term_message_rejected_and_answered_with_current_term(role: str) -> None:
    """5.1: a request with a stale term is rejected; the answer carries our term so the
    sender (e.g. a deposed leader) learns it is behind."""
    start = {i: HardState(5) for i in (1, 2, 3)}
    c = Cluster(3, seed=5, pre_vote=False, check_quorum=False, hard_states=start)
    c.elect(2)
    if role == "candidate":
        c.campaign(1)
        c.nodes[1].ready()
    elif role == "leader":
        c.elect(1)
    c.collect()
    c.queue.clear()
    node = c[1]
    term = node.term
    old_role = node.role
    node.step(AppendEntries(3, 1, term - 1, 0, 0, (), 0))
    node.step(RequestVote(3, 1, term - 1, 100, term - 1))
    assert node.term == term and node.role is old_role
    out = c.nodes[1].ready()
    (ae,) = of_type(out, AppendEntriesResponse)
    (rv,) = of_type(out, RequestVoteResponse)
    assert not ae.success and ae.term == term
    assert not rv.granted and rv.term == term


def test_deposed_leader_steps_down_on_stale_answer() -> None:
    """A leader cut off while the others elected a new one learns of it from their answers."""
    c = Cluster(3, seed=4, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    for _ in range(3 * ELECTION):
        c.tick(2)
        c.tick(3)
        c.stabilize()
    new = next(i for i in (2, 3) if c[i].role is Role.LEADER)
    assert sorted(c.leaders()) == sorted([1, new])  # two leaders, of different terms
    assert c[1].term < c[new].term
    c.heal()
    c.tick(1, 2)  # the old leader heartbeats at its stale term
    c.stabilize()
    assert c.leaders() == [new]
    assert c[1].term == c[new].term
    c.tick(new, 2)
    c.stabilize()
    assert c[1].leader_id == new


def test_the_only_voter_campaigns_at_its_first_tick() -> None:
    """No one to wait for or to split a vote with: a restarted single-node quorum serves at once."""
    n = Node.create(config(1, (1,)), HardState(3, 1), log_of(1, 3))
    n.core.tick()
    assert n.core.role is Role.LEADER and n.core.term == 4


def test_a_voter_with_peers_still_waits_out_its_timeout() -> None:
    n = Node.create(config(1, (1, 2, 3)))
    n.core.tick()
    assert n.core.role is Role.FOLLOWER
    ticks_until_campaign(n)
    assert n.core.role is not Role.FOLLOWER


def test_a_node_outside_the_quorum_never_campaigns() -> None:
    """Only the one voter of the configuration in effect campaigns at once."""
    n = Node.create(config(2, (1,)))  # node 2 is outside the bootstrap quorum {1}: an observer
    for _ in range(5 * ELECTION):
        n.core.tick()
    assert n.core.role is Role.FOLLOWER


def test_single_node_elects_itself_and_commits_after_persisted() -> None:
    n = Node.create(config(1, (1,)))
    ticks_until_campaign(n)
    assert n.core.role is Role.LEADER and n.core.term == 1
    n.ready(persist=False)
    assert n.core.commit_index == 0  # the no-op is not durable yet
    index, term = n.core.propose(b"x")
    n.ready(persist=False)
    assert n.core.commit_index == 0
    n.persist(batches=1)
    assert n.core.commit_index == 1
    n.persist()
    assert n.core.commit_index == index == 2 and term == 1
    n.ready()
    assert [e.data for e in n.committed] == [b"", b"x"]

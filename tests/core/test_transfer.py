"""Leadership transfer (thesis 3.10)."""

from __future__ import annotations

import pytest

from pyraft.core.errors import NotLeader, TransferInProgress
from pyraft.core.messages import ProposeRequest, ProposeResponse, RequestVote, TimeoutNow
from pyraft.core.raft import Role

from .helpers import ELECTION, HEARTBEAT, Cluster, of_type


def steady(**cfg: object) -> Cluster:
    c = Cluster(3, seed=31, **cfg)  # type: ignore[arg-type]
    c.elect(1)
    c.tick_all(HEARTBEAT)
    return c


def test_transfer_to_up_to_date_follower() -> None:
    c = steady()
    term = c[1].term
    c[1].transfer_leadership(2)
    (tn,) = of_type(c.collect([1]), TimeoutNow)
    assert (tn.dst, tn.term) == (2, term)
    c.deliver_queue()
    assert c[2].role is Role.CANDIDATE and c[2].term == term + 1  # no pre-vote round
    votes = of_type(c.collect([2]), RequestVote)
    assert all(v.transfer and not v.pre_vote for v in votes)
    c.deliver_queue()
    c.stabilize()
    # Node 3 still heard from node 1 recently, but a transfer vote bypasses stickiness.
    assert c.leaders() == [2]
    assert c[1].role is Role.FOLLOWER and c[1].leader_id == 2
    assert [c[i].term for i in c.ids] == [term + 1] * 3


def test_transfer_catches_target_up_first() -> None:
    c = steady()
    c.down.add(3)
    for k in range(5):
        c.propose(1, b"%d" % k)
    c.stabilize()
    c[1].transfer_leadership(3)
    assert of_type(c.collect([1]), TimeoutNow) == []  # node 3 is behind
    c.queue.clear()
    c.down.clear()
    sent_timeout_now = False
    for _ in range(ELECTION - 1):  # the pipeline to node 3 was lost: repaired within a few heartbeats
        c.tick_all(1, stabilize=False)
        while not sent_timeout_now:
            out = c.collect()
            if of_type(out, TimeoutNow):
                sent_timeout_now = True
                # Only once node 3 holds (durably) the leader's whole log.
                assert c.nodes[3].stored == c.nodes[1].log
            if not c.queue:
                break
            c.deliver_queue()
    assert sent_timeout_now
    c.stabilize()
    assert c.leaders() == [3]


def test_leader_refuses_proposals_during_transfer() -> None:
    c = steady()
    c.down.add(2)
    c[1].transfer_leadership(2)
    with pytest.raises(TransferInProgress):
        c[1].propose(b"x")
    with pytest.raises(TransferInProgress):
        c[1].forward(1, b"x")
    c[1].step(ProposeRequest(3, 1, c[1].term, 4, b"x"))
    (resp,) = of_type(c.collect([1]), ProposeResponse)
    assert not resp.ok


def test_transfer_aborted_after_an_election_timeout() -> None:
    c = steady()
    c.down.add(2)
    c[1].transfer_leadership(2)
    for _ in range(ELECTION):
        c.tick(1)
        c.stabilize()
    assert c[1].role is Role.LEADER
    c[1].propose(b"accepted again")


def test_transfer_not_aborted_before_an_election_timeout() -> None:
    """Regression: the abort used to fire at the next CheckQuorum boundary, however soon."""
    c = steady()
    c.tick_all(ELECTION - 1 - HEARTBEAT)  # the leader is late in its CheckQuorum window
    c.down.add(2)
    c[1].transfer_leadership(2)
    c.tick(1, 2)
    with pytest.raises(TransferInProgress):
        c[1].propose(b"too early")


def test_transfer_requires_leader_and_another_voter() -> None:
    c = steady()
    with pytest.raises(NotLeader):
        c[2].transfer_leadership(3)
    with pytest.raises(ValueError):
        c[1].transfer_leadership(1)


def test_timeout_now_from_non_leader_is_ignored() -> None:
    c = steady()
    c[2].step(TimeoutNow(3, 2, c[2].term))
    assert c[2].role is Role.FOLLOWER
    assert c.collect([2]) == []


def test_transfer_without_pre_vote_bypasses_but_respects_log() -> None:
    """A transfer vote ignores stickiness, never the up-to-date check (5.4.1)."""
    c = steady()
    c.down.add(3)
    c.propose(1, b"x")
    c.stabilize()
    c.down.clear()
    c[3].step(TimeoutNow(1, 3, c[1].term))  # as if node 1 sent it too early
    c.stabilize()
    assert c[3].role is not Role.LEADER  # 1 and 2 refuse: their logs are longer
    for _ in range(6 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    (leader,) = c.leaders()
    assert leader in (1, 2)
    c.tick_all(HEARTBEAT)
    assert all(b"x" in [e.data for e in c.nodes[i].log] for i in c.ids)

"""Proposals from any node: forwarded to the leader (ProposeRequest/ProposeResponse)."""

from __future__ import annotations

import pytest

from pyraft.core.errors import NoLeader, NotLeader
from pyraft.core.messages import AppendEntries, ProposeRequest, ProposeResponse
from pyraft.core.ready import ProposalAccepted

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, of_type


def steady() -> Cluster:
    c = Cluster(3, seed=21)
    c.elect(1)
    c.tick_all(HEARTBEAT)
    return c


def test_forward_goes_to_leader_and_comes_back_as_proposal() -> None:
    c = steady()
    c[2].forward(9, b"cmd")
    (req,) = of_type(c.collect([2]), ProposeRequest)
    assert (req.dst, req.request_id, req.data) == (1, 9, b"cmd")
    c.deliver_queue()
    (resp,) = of_type(c.collect([1]), ProposeResponse)
    assert resp.ok and (resp.index, resp.entry_term) == (2, 1)
    c.stabilize()
    assert c.nodes[2].proposals == [ProposalAccepted(9, 2, 1)]
    entry = c.nodes[2].committed[-1]
    assert (entry.index, entry.term, entry.data) == (2, 1, b"cmd")


def test_forward_on_leader_is_a_local_proposal() -> None:
    c = steady()
    c[1].forward(3, b"x")
    assert c[1].ready().proposals == [ProposalAccepted(3, 2, 1)]


def test_forward_with_no_leader_raises() -> None:
    n = Node.create(config(1, (1, 2, 3)))
    with pytest.raises(NoLeader):
        n.core.forward(1, b"x")


def test_propose_on_follower_names_the_leader() -> None:
    c = steady()
    with pytest.raises(NotLeader) as info:
        c[2].propose(b"x")
    assert info.value.leader_id == 1


def test_pending_forward_fails_when_leader_changes() -> None:
    c = steady()
    c[2].forward(5, b"x")
    c.collect([2])
    c.queue.clear()  # the request is lost
    c.down.add(1)
    for _ in range(4 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    assert c.nodes[2].proposals == []
    (failed,) = c.nodes[2].failed
    assert failed.request_id == 5


def test_forward_to_node_that_is_no_longer_leader_is_refused_with_hint() -> None:
    c = steady()
    c[3].step(ProposeRequest(2, 3, 1, 8, b"x"))
    (resp,) = of_type(c.collect([3]), ProposeResponse)
    assert not resp.ok and resp.leader_hint == 1
    c.queue.clear()
    # The follower only takes answers for requests it has pending.
    c[2].forward(8, b"x")
    c.collect([2])
    c.queue.clear()
    c[2].step(resp)
    c.collect([2])
    (failed,) = c.nodes[2].failed
    assert (failed.request_id, failed.leader_hint) == (8, 1)
    c[2].step(resp)  # a duplicate answer is ignored
    assert c[2].ready().failed == []


def test_pending_forward_fails_at_once_when_a_new_leader_appears() -> None:
    c = steady()
    c[2].forward(5, b"x")
    c[2].read_index(6)
    c.collect([2])
    c.queue.clear()
    c[2].step(AppendEntries(3, 2, c[2].term + 1, 0, 0, (), 0))
    rd = c[2].ready()
    assert sorted((f.request_id, f.reason) for f in rd.failed) == [
        (5, "leader_changed"),
        (6, "leader_changed"),
    ]
    assert c[2].leader_id == 3
    # A late answer from the old leader is ignored.
    c[2].step(ProposeResponse(1, 2, 1, 5, True, 3, 1))
    assert c[2].ready().proposals == []

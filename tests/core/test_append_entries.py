"""AppendEntries on the follower side and log repair by the leader (paper 5.3, Figure 2, Figure 7)."""

from __future__ import annotations

import pytest

from pyraft.core.messages import AppendEntries, AppendEntriesResponse, Entry, HardState
from pyraft.core.raft import Role

from .helpers import Cluster, Node, config, log_of, of_type, terms_of


def follower(terms: tuple[int, ...], term: int = 5) -> Node:
    n = Node.create(config(1, (1, 2, 3)), HardState(term, None), log_of(*terms))
    return n


def ae(prev: int, prev_term: int, entries: list[Entry], commit: int = 0, term: int = 5) -> AppendEntries:
    return AppendEntries(2, 1, term, prev, prev_term, tuple(entries), commit)


def entries(first: int, *terms: int) -> list[Entry]:
    return [Entry(first + k, t, data=f"{first + k}@{t}".encode()) for k, t in enumerate(terms)]


def test_consistency_check_rejects_when_prev_term_differs() -> None:
    """Figure 2, receiver step 2; the answer names the conflicting term and its first index."""
    n = follower((1, 1, 2, 2, 2))
    n.core.step(ae(5, 3, entries(6, 5)))
    (resp,) = of_type(n.ready(), AppendEntriesResponse)
    assert not resp.success
    assert (resp.match_index, resp.conflict_term, resp.conflict_index) == (5, 2, 3)
    assert terms_of(n.log) == [1, 1, 2, 2, 2]  # nothing changed
    assert n.core.leader_id == 2  # a rejection still recognises the leader


def test_consistency_check_rejects_when_prev_missing() -> None:
    n = follower((1, 1))
    n.core.step(ae(5, 3, entries(6, 5)))
    (resp,) = of_type(n.ready(), AppendEntriesResponse)
    assert not resp.success
    assert (resp.match_index, resp.conflict_term, resp.conflict_index) == (5, 0, 3)


def test_conflicting_entries_truncated_and_matching_kept() -> None:
    """Figure 2, receiver steps 3-4: delete a conflicting entry and all that follow it."""
    n = follower((1, 1, 2, 2, 2))
    n.core.step(ae(1, 1, entries(2, 1, 2, 4)))
    n.ready()
    assert terms_of(n.log) == [1, 1, 2, 4]
    assert n.stored == log_of(1, 1, 2) + entries(4, 4)  # storage truncated and rewritten
    assert n.log[1].data == b"2@1"  # entry 2 (same term) was kept, not rewritten


def test_duplicated_or_reordered_older_append_never_truncates() -> None:
    n = follower((), term=1)
    first = ae(0, 0, entries(1, 1, 1), term=1)
    second = ae(2, 1, entries(3, 1, 1, 1), term=1)
    n.core.step(second)  # arrives first: rejected (gap)
    n.core.step(first)
    n.core.step(second)
    n.core.step(first)  # a late duplicate of an older message
    n.ready()
    assert [e.index for e in n.log] == [1, 2, 3, 4, 5]
    assert len(n.stored) == 5


def test_follower_commit_is_min_of_leader_commit_and_verified_index() -> None:
    """The follower holds index 3 of a stale term: a heartbeat anchored at 2 with leaderCommit 3
    must not commit the follower's own entry 3, which the leader never verified."""
    n = follower((1, 1, 2))
    n.core.step(ae(2, 1, [], commit=3))
    n.ready()
    assert n.core.commit_index == 2
    n.core.step(ae(2, 1, entries(3, 5), commit=3))
    n.ready()
    assert n.core.commit_index == 3
    assert terms_of(n.committed) == [1, 1, 5]


def test_follower_commit_never_decreases() -> None:
    n = follower((1, 1, 1))
    n.core.step(ae(3, 1, [], commit=3))
    n.core.step(ae(1, 1, [], commit=1))
    assert n.core.commit_index == 3


def test_follower_never_acknowledges_entries_before_persisted() -> None:
    n = follower((1,), term=1)
    n.core.step(ae(1, 1, entries(2, 1, 1), term=1))
    rd_msgs = n.ready(persist=False)
    assert of_type(rd_msgs, AppendEntriesResponse) == []
    assert [e.index for e in n.pending[0]] == [2, 3]
    # A heartbeat meanwhile is answered with the durable prefix only.
    n.core.step(ae(3, 1, [], term=1))
    (hb,) = of_type(n.ready(persist=False), AppendEntriesResponse)
    assert hb.success and hb.match_index == 1
    n.persist(upto=2)
    (ack,) = of_type(n.ready(persist=False), AppendEntriesResponse)
    assert ack.success and ack.match_index == 2
    n.persist()
    (ack,) = of_type(n.ready(persist=False), AppendEntriesResponse)
    assert ack.success and ack.match_index == 3


def test_persisted_for_overwritten_entries_is_ignored() -> None:
    """An fsync that completes for entries since replaced must not make the new ones count."""
    n = follower((1,), term=2)
    n.core.step(AppendEntries(2, 1, 2, 1, 1, tuple(entries(2, 2, 2)), 0))
    n.ready(persist=False)
    n.core.step(AppendEntries(3, 1, 3, 1, 1, tuple(entries(2, 3)), 0))
    n.ready(persist=False)
    n.core.persisted(3, 2)  # the old batch's fsync: entry 3@2 no longer exists
    assert of_type(n.ready(persist=False), AppendEntriesResponse) == []
    n.pending.pop(0)
    n.persist()
    (ack,) = of_type(n.ready(), AppendEntriesResponse)
    assert ack.dst == 3 and ack.match_index == 2


# Figure 7: the leader for term 8 and followers (a)-(f).
LEADER_LOG = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7 = {
    "a": (1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 1, 4),
    "c": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 1, 4, 4, 4, 4),
    "f": (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE_7))
def test_leader_brings_follower_log_into_agreement(case: str) -> None:
    """5.3 / Figure 7: whatever the follower's log, the leader's overwrites it."""
    logs = {1: log_of(*LEADER_LOG), 2: log_of(*FIGURE_7[case]), 3: log_of(*LEADER_LOG)}
    c = Cluster(3, seed=1, logs=logs, hard_states={i: HardState(7) for i in (1, 2, 3)})
    c.elect(1)
    assert c[1].term == 8
    c.tick_all(3)
    assert terms_of(c.nodes[2].log) == [*LEADER_LOG, 8]
    assert terms_of(c.nodes[2].stored) == [*LEADER_LOG, 8]
    assert c[2].commit_index == 11


def test_fast_backtracking_takes_round_trips_per_term_not_per_entry() -> None:
    """Thesis 5.4.2 (conflict term/index): a follower whose log diverges over 200 entries in
    a few terms is repaired in a handful of probes."""
    leader_log = (1,) * 10 + (2,) * 100 + (5,) * 100
    follower_log = (1,) * 10 + (3,) * 100 + (4,) * 100 + (4,) * 50
    logs = {1: log_of(*leader_log), 2: log_of(*follower_log), 3: log_of(*leader_log)}
    c = Cluster(3, seed=1, logs=logs, hard_states={i: HardState(5) for i in (1, 2, 3)})
    c.drop = lambda m: m.dst == 2 or m.src == 2
    c.elect(1)
    c.drop = None
    c.tick_all(2)  # heartbeat: starts probing node 2
    rejections = [
        m for m in c.delivered if isinstance(m, AppendEntriesResponse) and m.src == 2 and not m.success
    ]
    assert terms_of(c.nodes[2].log) == [*leader_log, 6]
    assert 1 <= len(rejections) <= 3  # O(terms): far fewer than the 250 diverging entries


def test_lost_append_is_detected_and_resent() -> None:
    c = Cluster(3, seed=2)
    c.elect(1)
    c.tick_all(3)
    c.drop = lambda m: isinstance(m, AppendEntries) and m.dst == 3 and bool(m.entries)
    c.propose(1, b"lost")
    c.stabilize()
    c.drop = None
    c.propose(1, b"next")
    c.stabilize()
    c.tick_all(6)
    assert [e.data for e in c.nodes[3].log][-2:] == [b"lost", b"next"]
    assert c[3].commit_index == c[1].commit_index == 3
    assert c[1].role is Role.LEADER

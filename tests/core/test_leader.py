"""The leader: no-op on election, commitment rules (5.3, 5.4.2, Figure 8), thesis 10.2.1,
pipelining and batching."""

from __future__ import annotations

from pyraft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    EntryKind,
    HardState,
    RequestVote,
)
from pyraft.core.raft import Role

from .helpers import HEARTBEAT, Cluster, log_of, of_type, terms_of


def test_leader_appends_noop_on_election() -> None:
    c = Cluster(
        3, seed=1, logs={i: log_of(1, 1) for i in (1, 2, 3)}, hard_states={i: HardState(1) for i in (1, 2, 3)}
    )
    c.campaign(1)
    c.stabilize(persist=False)
    assert c[1].role is Role.LEADER and c[1].term == 2
    noop = c.nodes[1].log[-1]
    assert (noop.index, noop.term, noop.kind) == (3, 2, EntryKind.NOOP)
    assert c[1].commit_index == 0  # nothing durable anywhere yet
    for i in c.ids:
        c.nodes[i].persist()
    c.stabilize()
    # Committing the no-op commits the entries of term 1 (5.4.2, indirectly).
    assert c[1].commit_index == 3
    assert terms_of(c.nodes[1].committed) == [1, 1, 2]


def test_leader_sends_entries_before_persisting_them() -> None:
    """Thesis 10.2.1: the same Ready carries the entries to persist and the AppendEntries."""
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(2)
    c.propose(1, b"x")
    rd = c[1].ready()
    assert [e.data for e in rd.entries] == [b"x"]
    sent = of_type(rd.messages, AppendEntries)
    assert sorted(m.dst for m in sent) == [2, 3]
    assert all([e.data for e in m.entries] == [b"x"] for m in sent)


def test_leader_own_entry_counts_only_after_persisted() -> None:
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(2)
    base = c[1].commit_index
    index, _ = c.propose(1, b"x")
    c.collect([1], persist=False)
    # Only follower 2 answers: 2 acknowledgements are needed, the leader's is not durable yet.
    c.deliver_queue(lambda m: m.dst == 2)
    c.queue.clear()
    c.collect([2])
    c.deliver_queue()
    assert c[1].commit_index == base
    c.nodes[1].persist()
    assert c[1].commit_index == index


def test_leader_commits_on_followers_acks_alone() -> None:
    """The leader's own fsync may lag: a majority of followers is a majority."""
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(2)
    index, _ = c.propose(1, b"x")
    c.collect([1], persist=False)
    c.deliver_queue()
    c.collect([2, 3])
    c.deliver_queue()
    assert c[1].commit_index == index


def test_figure_8_old_term_entry_on_majority_not_committed_until_current_term_entry_is() -> None:
    """Figure 8: S1 leads term 4 with (2, term 2) and S5 holds (2, term 3). Replicating (2, 2)
    to a majority does not commit it: S5 could still be elected and overwrite it. Only when an
    entry of term 4 reaches a majority are both committed."""
    logs = {1: log_of(1, 2), 2: log_of(1, 2), 3: log_of(1), 4: log_of(1), 5: log_of(1, 3)}
    hs = {1: HardState(3), 2: HardState(3), 3: HardState(3), 4: HardState(3), 5: HardState(3, 5)}
    c = Cluster(5, seed=8, logs=logs, hard_states=hs, max_entries_per_message=1, check_quorum=False)
    c.down.add(5)
    c.campaign(1)
    # S1 crashes (in the paper) before (3, term 4) leaves it: here, that entry is lost in transit.
    # (A probe at prev 2 to a node lacking index 2 is let through: it is rejected anyway.)
    c.drop = lambda m: (
        isinstance(m, AppendEntries) and any(e.index == 3 for e in m.entries) and c[m.dst].log.last_index >= 2
    )
    c.stabilize()
    c.tick_all(3)
    assert c[1].role is Role.LEADER and c[1].term == 4
    assert terms_of(c.nodes[1].stored) == [1, 2, 4]
    # (2, term 2) is durable on S1, S2, S3 (and S4): a majority of 5 ...
    assert [terms_of(c.nodes[i].stored) for i in (2, 3, 4)] == [[1, 2]] * 3
    # ... and still not committed: it is not of the leader's term.
    assert c[1].commit_index == 0
    assert all(c[i].commit_index == 0 for i in (2, 3, 4))
    # Why it must not be: S5 (last term 3) can still win the votes of S2, S3 and S4 ...
    for voter in (2, 3, 4):
        c[voter].step(RequestVote(5, voter, 5, 2, 3))
    grants = [m for i in (2, 3, 4) for m in c.nodes[i].ready() if getattr(m, "granted", False)]
    assert len(grants) == 3  # ... and then overwrite index 2 with its (2, term 3).
    # In the run where S1 stays leader instead, committing (3, 4) commits (2, 2) with it.


def test_figure_8_entry_committed_once_current_term_entry_on_majority() -> None:
    logs = {1: log_of(1, 2), 2: log_of(1, 2), 3: log_of(1), 4: log_of(1), 5: log_of(1, 3)}
    hs = {i: HardState(3) for i in (1, 2, 3, 4, 5)}
    c = Cluster(5, seed=8, logs=logs, hard_states=hs, pre_vote=False)
    c.down.update({4, 5})
    c.campaign(1)
    c.stabilize(persist=False)
    c.nodes[1].persist()
    c.nodes[2].persist()
    s3 = c.nodes[3]
    s3.persist(upto=2)
    c.stabilize(persist=False)
    assert c[1].commit_index == 0
    s3.persist()
    c.stabilize()
    assert c[1].commit_index == 3
    assert terms_of(c.nodes[1].committed) == [1, 2, 4]


def test_pipelining_keeps_up_to_max_inflight_appends_in_flight() -> None:
    c = Cluster(2, seed=1, max_inflight=3, max_entries_per_message=1)
    c.elect(1)
    c.tick_all(2)
    for k in range(5):
        c.propose(1, b"%d" % k)
    first = of_type(c.collect([1]), AppendEntries)
    assert [len(m.entries) for m in first] == [1, 1, 1]  # three in flight, unanswered
    assert [m.prev_log_index for m in first] == [1, 2, 3]
    assert of_type(c.collect([1]), AppendEntries) == []  # window full
    c.deliver_queue()
    c.collect([2])
    c.deliver_queue(lambda m: isinstance(m, AppendEntriesResponse))
    # Acks free the window: the last two entries go out.
    rest = of_type(c.collect([1]), AppendEntries)
    assert [m.prev_log_index for m in rest if m.entries] == [4, 5]


def test_batching_many_proposals_in_one_append() -> None:
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(2)
    for k in range(50):
        c.propose(1, b"%d" % k)
    sent = of_type(c.collect([1]), AppendEntries)
    assert sorted(m.dst for m in sent) == [2, 3]
    assert all(len(m.entries) == 50 for m in sent)


def test_batches_respect_max_entries_and_bytes() -> None:
    c = Cluster(2, seed=1, max_entries_per_message=4, max_bytes_per_message=200)
    c.elect(1)
    c.tick_all(2)
    for _ in range(10):
        c.propose(1, b"a" * 10)
    for _ in range(3):
        c.propose(1, b"b" * 150)
    sizes = [len(m.entries) for m in of_type(c.collect([1]), AppendEntries)]
    assert sizes == [4, 4, 2, 1, 1, 1]
    c.stabilize()
    assert c[2].commit_index == c[1].commit_index == 14


def test_commit_index_reaches_followers_without_new_entries() -> None:
    c = Cluster(3, seed=1)
    c.elect(1)
    c.propose(1, b"x")
    c.stabilize()
    assert c[1].commit_index == 2
    assert c[2].commit_index == c[3].commit_index == 2
    assert [e.data for e in c.nodes[3].committed] == [b"", b"x"]


def test_stale_rejection_does_not_undo_replication_progress() -> None:
    """A duplicated old rejection (for an index below what the follower has since
    acknowledged) must be ignored, as a duplicated old AppendEntries is on the follower.
    Regression: the core used to lower matchIndex and re-probe (fixed in 52422af)."""
    logs = {1: log_of(1, 1, 1), 2: log_of(1, 1, 1), 3: log_of(1, 2)}
    hs = {1: HardState(2), 2: HardState(2), 3: HardState(2)}
    c = Cluster(3, seed=3, logs=logs, hard_states=hs)
    c.elect(1)
    c.tick_all(3 * HEARTBEAT)
    c.propose(1, b"x")
    c.stabilize()
    assert c.nodes[3].log[-1].data == b"x"
    stale = next(
        m for m in c.delivered if isinstance(m, AppendEntriesResponse) and m.src == 3 and not m.success
    )
    mark = len(c.delivered)
    c[1].step(stale)  # delivered a second time, much later
    assert of_type(c.collect([1]), AppendEntries) == []  # nothing to resend
    c.tick_all(2 * HEARTBEAT)
    resent = [m for m in c.delivered[mark:] if isinstance(m, AppendEntries) and m.dst == 3 and m.entries]
    assert resent == []

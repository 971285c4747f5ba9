"""Log compaction (paper section 7, thesis chapter 5): the log after a snapshot.

A snapshot replaces the log's prefix up to its last included entry, whose
index and term survive as the log's base (``snapshot_index``/``snapshot_term``)
so the AppendEntries consistency check still works at the boundary. These
tests drive ``RaftLog`` directly and the core's ``compact``/recovery API.
"""

from __future__ import annotations

import random

import pytest

from pyraft.core.log import Compacted, LogError, RaftLog
from pyraft.core.messages import AppendEntries, AppendEntriesResponse, Entry, HardState
from pyraft.core.raft import RaftCore, Role
from pyraft.core.ready import SnapshotRef

from .helpers import HEARTBEAT, Cluster, Node, config, log_of, of_type


def entries(first: int, *terms: int) -> list[Entry]:
    return [Entry(first + k, t, data=f"{first + k}@{t}".encode()) for k, t in enumerate(terms)]


def compacted_log() -> RaftLog:
    """A log whose snapshot covers 1..5 (last included term 2) followed by 6..9 of terms 2, 3, 3, 4."""
    return RaftLog(entries(6, 2, 3, 3, 4), snapshot_index=5, snapshot_term=2)


# ------------------------------------------------------------------ lookups


def test_term_at_the_snapshot_index_is_the_last_included_term() -> None:
    log = compacted_log()
    assert (log.first_index, log.last_index, log.last_term) == (6, 9, 4)
    assert log.term_at(5) == 2
    assert [log.term_at(i) for i in range(6, 10)] == [2, 3, 3, 4]


def test_term_below_the_snapshot_raises_compacted() -> None:
    log = compacted_log()
    for index in (0, 1, 4):
        with pytest.raises(Compacted):
            log.term_at(index)


def test_term_past_the_end_is_a_log_error_but_not_compacted() -> None:
    log = compacted_log()
    with pytest.raises(LogError) as info:
        log.term_at(10)
    assert not isinstance(info.value, Compacted)


def test_entry_at_the_snapshot_index_is_gone() -> None:
    """Only the last included entry's index and term survive, not its contents."""
    log = compacted_log()
    with pytest.raises(Compacted):
        log.entry(5)
    assert log.entry(6) == Entry(6, 2, data=b"6@2")


def test_matches_at_the_base_and_never_below_it() -> None:
    """The consistency check (Figure 2, receiver step 2) holds at the snapshot's last entry."""
    log = compacted_log()
    assert log.matches(5, 2)
    assert not log.matches(5, 1)
    assert log.matches(7, 3)
    assert not log.matches(7, 2)
    # Below the base the log cannot tell, and past the end there is nothing: no match, no error.
    assert not log.matches(4, 2)
    assert not log.matches(10, 4)


def test_slice_and_batch_refuse_compacted_ranges() -> None:
    log = compacted_log()
    with pytest.raises(Compacted):
        log.slice(5, 7)
    with pytest.raises(Compacted):
        log.slice(1, 10)
    with pytest.raises(Compacted):
        log.batch(5, 10, 1 << 20)
    with pytest.raises(Compacted):
        log.batch(1, 10, 1 << 20)
    assert log.slice(5, 5) == []  # an empty range asks for nothing compacted
    assert [e.index for e in log.slice(6, 8)] == [6, 7]
    assert [e.index for e in log.batch(6, 10, 1 << 20)] == [6, 7, 8, 9]


def test_first_index_of_term_counts_from_the_first_entry_after_the_snapshot() -> None:
    log = compacted_log()
    assert log.first_index_of_term(2) == 6  # term 2 began inside the snapshot: 6 is the first left
    assert log.first_index_of_term(1) == 6
    assert log.first_index_of_term(3) == 7
    assert log.first_index_of_term(4) == 9
    assert log.first_index_of_term(5) == 10  # no such term yet: past the end


def test_last_index_of_term_reaches_down_to_the_snapshot_but_not_below() -> None:
    log = compacted_log()
    assert log.last_index_of_term(2, upto=9) == 6
    assert log.last_index_of_term(3, upto=9) == 8
    assert log.last_index_of_term(3, upto=7) == 7
    assert log.last_index_of_term(2, upto=5) == 5  # the snapshot's last included entry
    assert log.last_index_of_term(3, upto=5) is None
    assert log.last_index_of_term(1, upto=9) is None  # term 1 exists only inside the snapshot
    assert log.last_index_of_term(2, upto=4) is None  # below the base: unknown


def test_last_index_of_term_of_an_empty_log_after_a_snapshot() -> None:
    log = RaftLog((), snapshot_index=7, snapshot_term=3)
    assert (log.first_index, log.last_index, log.last_term) == (8, 7, 3)
    assert log.last_index_of_term(3, upto=20) == 7
    assert log.last_index_of_term(2, upto=20) is None
    assert log.is_up_to_date(7, 3) and not log.is_up_to_date(6, 3)


# --------------------------------------------------------------- compaction


def test_compact_moves_the_base_and_keeps_the_rest() -> None:
    log = RaftLog(log_of(1, 1, 2, 2, 3))
    log.compact(3)
    assert (log.snapshot_index, log.snapshot_term, log.first_index, log.last_index) == (3, 2, 4, 5)
    assert log.slice(4, 6) == log_of(1, 1, 2, 2, 3)[3:]
    assert log.matches(3, 2)
    with pytest.raises(Compacted):
        log.term_at(2)


def test_compact_at_or_below_the_base_is_a_no_op() -> None:
    log = RaftLog(log_of(1, 1, 2, 2, 3))
    log.compact(3)
    log.compact(2)
    log.compact(3)
    assert (log.snapshot_index, log.snapshot_term, log.last_index) == (3, 2, 5)


def test_compact_only_up_to_the_stable_index() -> None:
    """Entries not yet durable cannot be dropped: nothing else would hold them after a crash."""
    log = RaftLog(log_of(1, 1))
    log.append(entries(3, 1, 1))
    assert log.stable_index == 2
    with pytest.raises(LogError):
        log.compact(3)
    assert (log.snapshot_index, log.last_index) == (0, 4)  # a refused compaction changes nothing
    assert log.stable_to(3, 1)
    log.compact(3)
    assert (log.snapshot_index, log.snapshot_term, log.last_index) == (3, 1, 4)
    assert log.take_unpersisted() == entries(4, 1)  # compacting never drops an unpersisted entry


# ----------------------------------------------------------------- restore


def test_restore_keeps_the_suffix_when_the_log_holds_the_snapshots_last_entry() -> None:
    """Figure 13, receiver step 6: an existing entry with the snapshot's index and term keeps
    the entries that follow it."""
    log = RaftLog(log_of(1, 1, 2, 2, 3))
    log.restore(3, 2)
    assert (log.snapshot_index, log.snapshot_term, log.first_index, log.last_index) == (3, 2, 4, 5)
    assert [(e.index, e.term) for e in log.slice(4, 6)] == [(4, 2), (5, 3)]
    assert (log.stable_index, log.handed_out_index) == (5, 5)


def test_restore_discards_a_log_that_disagrees_with_the_snapshot() -> None:
    """Figure 13, receiver step 7: otherwise the whole log is discarded."""
    log = RaftLog(log_of(1, 1, 2, 2, 3))
    log.restore(3, 4)
    assert (log.snapshot_index, log.snapshot_term, log.last_index, log.last_term) == (3, 4, 3, 4)
    assert log.slice(4, 10) == []
    assert (log.stable_index, log.handed_out_index) == (3, 3)
    assert log.take_unpersisted() == []


def test_restore_past_the_end_discards_the_log() -> None:
    log = RaftLog(log_of(1, 1))
    log.restore(10, 3)
    assert (log.first_index, log.last_index, log.last_term) == (11, 10, 3)
    assert (log.stable_index, log.handed_out_index) == (10, 10)


def test_restore_watermarks_when_the_kept_suffix_is_not_yet_durable() -> None:
    """The snapshot makes everything up to its index durable; the entries after it stay exactly
    as durable (or as unhanded) as they were."""
    log = RaftLog(log_of(1, 1))
    log.append(entries(3, 2, 2, 2))
    assert log.take_unpersisted() == entries(3, 2, 2, 2)
    log.append(entries(6, 2))  # not handed out yet
    log.restore(4, 2)
    assert (log.snapshot_index, log.last_index) == (4, 6)
    assert log.stable_index == 4  # 5 was handed out but is not durable yet
    assert log.handed_out_index == 5
    assert log.take_unpersisted() == entries(6, 2)
    assert log.stable_to(6, 2)


def test_restore_watermarks_when_the_discarded_log_was_not_yet_durable() -> None:
    log = RaftLog(log_of(1))
    log.append(entries(2, 1, 1))
    log.take_unpersisted()
    log.restore(5, 3)
    assert (log.stable_index, log.handed_out_index) == (5, 5)
    assert not log.stable_to(3, 1)  # the old write finishing later counts for nothing
    assert log.stable_index == 5


def test_restore_of_an_older_snapshot_is_ignored() -> None:
    log = RaftLog(entries(6, 2, 3), snapshot_index=5, snapshot_term=2)
    log.restore(4, 2)
    log.restore(5, 2)
    assert (log.snapshot_index, log.first_index, log.last_index) == (5, 6, 7)


# -------------------------------------------------------------- try_append


def test_try_append_skips_entries_inside_the_snapshot_and_appends_the_rest() -> None:
    """A leader probing below our snapshot sends entries we compacted: they are committed, so
    they match ours and only those after the base are taken."""
    log = compacted_log()
    assert log.try_append(3, 1, entries(4, 1, 2, 2, 3, 3, 4, 4), committed=5)
    assert (log.snapshot_index, log.last_index) == (5, 10)
    assert [(e.index, e.term) for e in log.slice(6, 11)] == [(6, 2), (7, 3), (8, 3), (9, 4), (10, 4)]
    assert log.entry(6).data == b"6@2"  # the matching entry was kept, not rewritten


def test_try_append_below_the_snapshot_onto_a_log_that_ends_there() -> None:
    """Just after an install the log is only its base: the first entry taken is base + 1."""
    log = RaftLog((), snapshot_index=5, snapshot_term=2)
    assert log.try_append(3, 1, entries(4, 1, 2, 2, 3), committed=5)
    assert [(e.index, e.term) for e in log.slice(6, 8)] == [(6, 2), (7, 3)]
    assert log.take_unpersisted() == entries(6, 2, 3)


def test_try_append_entirely_inside_the_snapshot_changes_nothing() -> None:
    log = compacted_log()
    assert log.try_append(1, 1, entries(2, 1, 1, 2), committed=5)
    assert (log.snapshot_index, log.last_index) == (5, 9)
    assert log.handed_out_index == 9


def test_try_append_below_the_snapshot_still_truncates_a_conflicting_suffix() -> None:
    log = compacted_log()
    assert log.try_append(4, 2, entries(5, 2, 2, 5), committed=5)
    assert [(e.index, e.term) for e in log.slice(6, 10)] == [(6, 2), (7, 5)]
    assert log.stable_index == 6


def test_try_append_at_the_snapshot_checks_its_term() -> None:
    log = compacted_log()
    assert not log.try_append(5, 1, entries(6, 2), committed=5)
    assert log.try_append(5, 2, entries(6, 2), committed=5)


# ----------------------------------------------------------- the core on top


def test_core_recovered_from_a_snapshot_starts_committed_and_applied_there() -> None:
    core = RaftCore(
        config(1, (1, 2, 3)),
        random.Random(0),
        hard_state=HardState(3, None),
        entries=entries(11, 3, 3),
        snapshot=SnapshotRef(10, 2),
    )
    assert (core.commit_index, core.applied_index) == (10, 10)
    assert (core.log.snapshot_index, core.log.snapshot_term, core.log.last_index) == (10, 2, 12)
    rd = core.ready()
    assert rd.committed == [] and rd.restore is None and rd.entries == []  # already loaded, durable


def test_follower_recovered_from_a_snapshot_accepts_appends_anchored_at_it() -> None:
    n = Node.create(config(1, (1, 2, 3)), HardState(3, None))
    n.core = RaftCore(n.config, random.Random(0), HardState(3, None), (), snapshot=SnapshotRef(10, 2))
    n.core.step(AppendEntries(2, 1, 3, 10, 2, tuple(entries(11, 3)), 11))
    msgs = n.ready()  # entries handed out and made durable ...
    msgs += n.ready()  # ... and only then acknowledged
    (ack,) = of_type(msgs, AppendEntriesResponse)
    assert ack.success and ack.match_index == 11
    assert [e.index for e in n.committed] == [11]  # only what follows the snapshot is applied


def test_compact_refuses_without_a_saved_snapshot() -> None:
    c = Cluster(3, seed=1)
    c.elect(1)
    c.propose(1, b"x")
    c.stabilize()
    assert c[1].applied_index == 2
    with pytest.raises(ValueError):
        c[1].compact(1)
    assert c[1].log.snapshot_index == 0


def test_compact_refuses_an_index_above_the_saved_snapshot() -> None:
    c = Cluster(3, seed=1)
    c.elect(1)
    for k in range(4):
        c.propose(1, b"%d" % k)
    c.stabilize()
    leader = c[1]
    assert leader.applied_index == 5
    leader.snapshot_saved(3, leader.log.term_at(3))
    with pytest.raises(ValueError):
        leader.compact(4)
    assert leader.log.snapshot_index == 0
    leader.compact(3)
    assert (leader.log.snapshot_index, leader.log.first_index) == (3, 4)


def test_compact_refuses_an_index_above_applied_index() -> None:
    """Committed but not yet handed out in ``committed`` is not applied: a snapshot cannot hold it."""
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(HEARTBEAT)
    for k in range(3):
        c.propose(1, b"%d" % k)
    c.collect([1])
    c.deliver_queue()
    c.collect([2, 3])
    c.deliver_queue()  # the acknowledgements commit 2..4 on the leader; no Ready drained since
    leader = c[1]
    assert (leader.commit_index, leader.applied_index) == (4, 1)
    leader.snapshot_saved(4, leader.term)
    with pytest.raises(ValueError):
        leader.compact(2)
    c.collect([1])
    assert leader.applied_index == 4
    leader.compact(4)
    assert leader.log.snapshot_index == 4
    assert leader.role is Role.LEADER


def test_compact_refuses_entries_the_leader_has_not_made_durable() -> None:
    """A leader commits on its followers' acknowledgements alone (thesis 10.2.1), so it may apply
    entries its own storage has not synced: they cannot be compacted before they are durable."""
    c = Cluster(3, seed=1)
    c.elect(1)
    c.tick_all(HEARTBEAT)
    for k in range(2):
        c.propose(1, b"%d" % k)
    c.collect([1], persist=False)
    c.deliver_queue()
    c.collect([2, 3])
    c.deliver_queue()
    c.nodes[1].ready(persist=False)
    leader = c[1]
    assert (leader.applied_index, leader.log.stable_index) == (3, 1)
    leader.snapshot_saved(3, leader.term)
    with pytest.raises((ValueError, LogError)):
        leader.compact(3)
    assert (leader.log.snapshot_index, leader.log.first_index) == (0, 1)
    c.nodes[1].persist()
    leader.compact(3)
    assert leader.log.snapshot_index == 3

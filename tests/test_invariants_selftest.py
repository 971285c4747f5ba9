"""The simulation's safety checkers, fed hand-made histories (no Raft core involved).

A checker that never fires proves nothing: each one must reject a history
that breaks its property and accept a valid one.
"""

from __future__ import annotations

import pytest

# tests/ is not a package, so pytest puts tests/ itself on sys.path and the simulator is ``sim``.
from sim import invariants as inv

from pyraft.core.messages import Entry, EntryKind, HardState, RequestVote, RequestVoteResponse


def E(index: int, term: int, data: bytes = b"") -> Entry:
    """An entry whose data defaults to a name unique to (index, term), so mismatches are visible."""
    return Entry(index, term, EntryKind.COMMAND, data or f"{index}@{term}".encode())


def log(*terms: int) -> list[Entry]:
    """A log given by the term of each index."""
    return [E(i, t) for i, t in enumerate(terms, start=1)]


def violates(invariant: str) -> pytest.RaisesExc[inv.InvariantViolation]:
    return pytest.raises(inv.InvariantViolation, match=invariant)


# ---------------------------------------------------------------- Election Safety


def test_two_leaders_in_one_term_is_caught() -> None:
    leaders: dict[int, int] = {}
    inv.check_election_safety(leaders, node=1, term=3)
    with violates("Election Safety"):
        inv.check_election_safety(leaders, node=2, term=3)


def test_leaders_in_different_terms_and_repeats_pass() -> None:
    leaders: dict[int, int] = {}
    for node, term in [(1, 1), (1, 1), (2, 2), (1, 3), (3, 5)]:
        inv.check_election_safety(leaders, node, term)
    assert leaders == {1: 1, 2: 2, 3: 1, 5: 3}


def test_election_safety_remembers_the_whole_history() -> None:
    monitor = inv.SafetyMonitor(quorum=2)
    monitor.new_leader(1, 4, log(1, 4))
    monitor.leader(2, 5)  # node 1 is long gone, node 2 leads term 5...
    with violates("Election Safety"):
        monitor.new_leader(3, 4, log(1, 4))  # ...and a late leader of term 4 is still a second one


# ---------------------------------------------------------------- Log Matching


def test_diverging_logs_are_caught() -> None:
    a = log(1, 1, 2, 3)
    b = [E(1, 1), E(2, 1, b"other"), E(3, 2), E(4, 3)]  # same (4, 3) but a different index 2
    with violates("Log Matching"):
        inv.check_log_matching({1: a, 2: b})


def test_logs_that_differ_only_after_their_last_common_entry_pass() -> None:
    inv.check_log_matching({1: log(1, 1, 2, 2), 2: log(1, 1, 3), 3: log(1), 4: []})


def test_lineage_catches_one_index_term_with_two_contents() -> None:
    lineage: dict[tuple[int, int], tuple[Entry, int]] = {}
    inv.check_lineage(lineage, node=1, entries=[E(1, 1), E(2, 2)], prev_term=0)
    with violates("Log Matching"):
        inv.check_lineage(lineage, node=2, entries=[E(2, 2, b"forged")], prev_term=1)


def test_lineage_catches_same_entry_after_different_predecessors() -> None:
    lineage: dict[tuple[int, int], tuple[Entry, int]] = {}
    inv.check_lineage(lineage, node=1, entries=[E(1, 1), E(2, 3)], prev_term=0)
    with violates("Log Matching"):
        inv.check_lineage(lineage, node=2, entries=[E(2, 3)], prev_term=2)


def test_lineage_accepts_replication_and_overwrite_by_newer_terms() -> None:
    lineage: dict[tuple[int, int], tuple[Entry, int]] = {}
    inv.check_lineage(lineage, 1, [E(1, 1), E(2, 1), E(3, 2)], prev_term=0)
    inv.check_lineage(lineage, 2, [E(1, 1), E(2, 1)], prev_term=0)
    inv.check_lineage(lineage, 2, [E(3, 4)], prev_term=1)  # a different entry at index 3, newer term
    inv.check_lineage(lineage, 1, [E(3, 4)], prev_term=1)


def test_log_shape_catches_gaps_and_falling_terms() -> None:
    with violates("Log Shape"):
        inv.check_log_shape(1, [E(1, 1), E(3, 1)])
    with violates("Log Shape"):
        inv.check_log_shape(1, log(2, 1))
    inv.check_log_shape(1, log(1, 1, 2, 5))


# ---------------------------------------------------------------- Leader Completeness


def committed_prefix(entries: list[Entry], term: int) -> dict[int, inv.Observed]:
    return {e.index: inv.Observed(e, term) for e in entries}


def test_committed_entry_missing_from_a_later_leader_is_caught() -> None:
    committed = committed_prefix(log(1, 1, 2), term=2)
    with violates("Leader Completeness"):
        inv.check_leader_completeness(3, term=3, log=log(1, 1), committed=committed)
    with violates("Leader Completeness"):
        inv.check_leader_completeness(3, term=3, log=[E(1, 1), E(2, 1), E(3, 2, b"x")], committed=committed)


def test_later_leader_holding_everything_committed_passes() -> None:
    committed = committed_prefix(log(1, 1, 2), term=2)
    inv.check_leader_completeness(3, term=3, log=log(1, 1, 2, 3), committed=committed)


def test_a_stale_leader_of_an_older_term_may_lack_a_newer_commit() -> None:
    """Delayed votes can crown a leader of term 2 after term 3 committed; it can commit nothing."""
    committed = committed_prefix(log(1, 3), term=3)
    inv.check_leader_completeness(2, term=2, log=log(1), committed=committed)


def test_overwriting_a_committed_entry_is_caught_but_stale_terms_may_differ() -> None:
    committed = committed_prefix(log(1, 2), term=2)
    with violates("Leader Completeness"):
        inv.check_no_overwrite(1, [E(2, 3)], committed)
    inv.check_no_overwrite(1, [E(2, 1, b"stale leader")], committed)
    inv.check_no_overwrite(1, [E(2, 2), E(3, 3)], committed)


def test_monitor_checks_new_leaders_against_commits() -> None:
    monitor = inv.SafetyMonitor(quorum=2)
    entries = log(1, 1)
    monitor.commit(1, term=1, entries=entries, durable={1: entries, 2: entries, 3: []})
    monitor.new_leader(2, 2, entries)
    with violates("Leader Completeness"):
        monitor.new_leader(3, 3, log(1))


# ---------------------------------------------------------------- State Machine Safety


def test_two_different_entries_applied_at_one_index_are_caught() -> None:
    applied: dict[int, Entry] = {}
    inv.check_apply(applied, node=1, applied_count=0, entry=E(1, 1))
    with violates("State Machine Safety"):
        inv.check_apply(applied, node=2, applied_count=0, entry=E(1, 1, b"different"))


def test_applying_with_a_gap_is_caught() -> None:
    with violates("State Machine Safety"):
        inv.check_apply({}, node=1, applied_count=0, entry=E(2, 1))


def test_reapplying_the_same_entries_after_restart_passes() -> None:
    applied: dict[int, Entry] = {}
    for count, entry in enumerate(log(1, 1, 2)):
        inv.check_apply(applied, 1, count, entry)
    for count, entry in enumerate(log(1, 1, 2, 2)):  # the restarted node rebuilds from index 1
        inv.check_apply(applied, 1, count, entry)


def test_commit_disagreeing_with_an_earlier_commit_is_caught() -> None:
    committed = committed_prefix(log(1, 2), term=2)
    with violates("State Machine Safety"):
        inv.check_commit(3, [E(1, 1), E(2, 2, b"x")], committed)
    inv.check_commit(3, log(1, 2), committed)


def test_monitor_refuses_applying_what_was_never_committed() -> None:
    monitor = inv.SafetyMonitor(quorum=1)
    with violates("State Machine Safety"):
        monitor.apply(1, 0, E(1, 1))


# ---------------------------------------------------------------- durability, acks, reads


def test_commit_durable_on_a_minority_is_caught() -> None:
    entries = log(1, 1)
    with violates("No Lost Commits"):
        inv.check_durable_majority(E(2, 1), {1: entries, 2: entries[:1], 3: []}, quorum=2)
    inv.check_durable_majority(E(2, 1), {1: entries, 2: entries, 3: []}, quorum=2)


def test_monitor_catches_a_committed_entry_losing_its_quorum() -> None:
    stores: dict[int, list[Entry]] = {1: log(1, 1), 2: log(1, 1), 3: []}
    monitor = inv.SafetyMonitor(quorum=2)
    monitor.commit(1, 1, log(1, 1), stores)
    stores[2] = [E(1, 1), E(2, 2)]  # node 2 truncated the committed entry 2 away
    with violates("No Lost Commits"):
        monitor.durable_changed(2, stores)


def test_acknowledged_proposal_missing_from_a_later_leader_is_caught() -> None:
    acked = {2: inv.Observed(E(2, 1, b"set x"), term=1)}
    with violates("Acknowledged Proposals"):
        inv.check_acknowledged(2, term=2, log=log(1, 2), acked=acked)
    inv.check_acknowledged(2, term=2, log=[E(1, 1), E(2, 1, b"set x"), E(3, 2)], acked=acked)


def test_stale_read_index_is_caught() -> None:
    with violates("Linearizable Read"):
        inv.check_read_index(1, request_id=7, read_index=4, floor=5)
    inv.check_read_index(1, request_id=7, read_index=5, floor=5)


def test_full_check_catches_a_current_leader_missing_a_commit() -> None:
    monitor = inv.SafetyMonitor(quorum=1)
    monitor.commit(1, 1, log(1, 1), {1: log(1, 1)})
    monitor.full_check({1: log(1, 1), 2: log(1, 1, 2)}, leaders={2: 2})
    with violates("Leader Completeness"):
        monitor.full_check({1: log(1, 1), 2: log(1)}, leaders={2: 2})


def test_message_before_its_term_or_vote_is_durable_is_caught() -> None:
    vote = RequestVoteResponse(src=2, dst=1, term=3, granted=True)
    with violates("Durable Before Send"):
        inv.check_durable_before_send(vote, HardState(term=2, voted_for=None))
    with violates("Durable Before Send"):
        inv.check_durable_before_send(vote, HardState(term=3, voted_for=None))
    inv.check_durable_before_send(vote, HardState(term=3, voted_for=1))
    pre = RequestVote(src=1, dst=2, term=4, last_log_index=0, last_log_term=0, pre_vote=True)
    inv.check_durable_before_send(pre, HardState(term=3))

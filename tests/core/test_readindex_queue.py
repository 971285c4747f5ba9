"""The leader's ReadIndex queue on its own (pyraft/core/readindex.py)."""

from __future__ import annotations

from pyraft.core.readindex import PendingRead, ReadQueue


def test_read_before_first_commit_waits_then_takes_the_next_round() -> None:
    q = ReadQueue()
    q.admit(PendingRead(1, 1, 0, 1), committed_in_term=False)
    assert q.confirmed(99) == [] and not q.round_wanted
    q.admit_waiting(commit_index=5, next_seq=4)
    assert q.round_wanted
    assert q.confirmed(3) == []  # a round started before the read was admitted proves nothing
    assert q.confirmed(4) == [PendingRead(1, 1, 5, 4)]


def test_one_round_confirms_every_read_queued_before_it() -> None:
    q = ReadQueue()
    for rid in (1, 2):
        q.admit(PendingRead(rid, 2, 7, 3), committed_in_term=True)
    q.admit(PendingRead(3, 2, 8, 4), committed_in_term=True)
    assert [r.request_id for r in q.confirmed(3)] == [1, 2]
    assert [r.request_id for r in q.take_all()] == [3]
    assert q.pending == [] and not q.round_wanted

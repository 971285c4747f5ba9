"""InstallSnapshot (Figure 13 of the extended Raft paper, section 7; thesis 5.3), message by message.

The core has no files: a leader asks for chunks to be read and sent
(``Ready.snapshot_sends``), a follower hands chunks to storage
(``Ready.snapshot_writes``) and hears back through ``snapshot_chunk_stored``.
Here a tiny in-test ``Receiver`` plays the follower's storage (chunks
concatenated in order) and ``chunk_of`` plays the leader's file reader.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyraft.core.membership import Membership
from pyraft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from pyraft.core.raft import RaftCore, Role
from pyraft.core.ready import Ready, SnapshotRef, SnapshotSend

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, log_of, of_type

CHUNK = 16
SNAPSHOT_FILE = bytes(range(40))  # three chunks of CHUNK bytes: 0, 16 and 32 (the last, 8 bytes)


# ------------------------------------------------------------------ plumbing


@dataclass
class Receiver:
    """Follower-side snapshot storage, as small as it gets: chunks of one snapshot concatenated
    in order; a chunk out of order is answered with the offset wanted instead."""

    ref: SnapshotRef | None = None
    data: bytearray = field(default_factory=bytearray)
    installed: tuple[SnapshotRef, bytes] | None = None

    def store(self, chunk: InstallSnapshot) -> tuple[int, bool]:
        ref = SnapshotRef(chunk.last_index, chunk.last_term)
        if ref != self.ref:
            if chunk.offset != 0:
                return 0, False  # a chunk of a snapshot we have not started: begin at 0
            self.ref, self.data = ref, bytearray()
        if chunk.offset != len(self.data):
            return len(self.data), False
        self.data += chunk.data
        if not chunk.done:
            return len(self.data), False
        self.installed = (ref, bytes(self.data))
        self.ref, self.data = None, bytearray()
        return len(self.installed[1]), True


MEMBERS = Membership.of_ids((1, 2, 3))


def chunk_stored(core: RaftCore, chunk: InstallSnapshot, next_offset: int, installed: bool) -> None:
    """Storage reports a chunk it took; an installed snapshot comes with the membership it holds."""
    core.snapshot_chunk_stored(chunk, next_offset, MEMBERS if installed else None)


def chunk_of(send: SnapshotSend, src: int, data: bytes, size: int = CHUNK) -> InstallSnapshot:
    """What a leader's caller does with a SnapshotSend: read the chunk at its offset and send it."""
    piece = data[send.offset : send.offset + size]
    done = send.offset + len(piece) >= len(data)
    snap = send.snapshot
    return InstallSnapshot(src, send.peer, send.term, snap.index, snap.term, send.offset, piece, done)


def readies_since(node: Node, mark: int) -> list[Ready]:
    return node.readies[mark:]


def sends_since(node: Node, mark: int) -> list[SnapshotSend]:
    return [s for rd in readies_since(node, mark) for s in rd.snapshot_sends]


def writes_since(node: Node, mark: int) -> list[InstallSnapshot]:
    return [w for rd in readies_since(node, mark) for w in rd.snapshot_writes]


def delivered_since(c: Cluster, mark: int) -> list[Message]:
    return c.delivered[mark:]


def hand_over(
    c: Cluster, send: SnapshotSend, receiver: Receiver, data: bytes = SNAPSHOT_FILE, src: int = 1
) -> InstallSnapshot:
    """Carry one SnapshotSend to its follower, whose storage (``receiver``) takes the chunk it
    hands out; the follower's answer is left in its Ready for the next collect."""
    chunk = chunk_of(send, src, data)
    follower = c.nodes[send.peer]
    mark = len(follower.readies)
    c.deliver([chunk])
    c.collect([send.peer])
    assert writes_since(follower, mark) == [chunk]
    next_offset, installed = receiver.store(chunk)
    chunk_stored(follower.core, chunk, next_offset, installed)
    return chunk


def install_chunk(
    offset: int, data: bytes, done: bool, *, last_index: int = 10, last_term: int = 2, term: int = 2
) -> InstallSnapshot:
    """A chunk from node 1 to node 3, by default of the snapshot (10, 2) in term 2."""
    return InstallSnapshot(1, 3, term, last_index, last_term, offset, data, done)


def follower(terms: Sequence[int] = (1, 1, 1), term: int = 2, **cfg: Any) -> Node:
    """Node 3 (of 1, 2, 3) in ``term`` with a durable log of the given terms; node 1 leads."""
    return Node.create(config(3, (1, 2, 3), **cfg), HardState(term, None), log_of(*terms))


def status(n: Node) -> tuple[int, int | None, Role]:
    return n.core.term, n.core.leader_id, n.core.role


def drain(n: Node) -> Ready:
    n.ready()
    return n.readies[-1]


def entries(first: int, *terms: int) -> tuple[Entry, ...]:
    return tuple(
        Entry(first + k, t, EntryKind.COMMAND, f"{first + k}@{t}".encode()) for k, t in enumerate(terms)
    )


SNAP = SnapshotRef(4, 1)


def lagging_cluster(compact: bool = True) -> Cluster:
    """Node 1 leads term 1 with entries 1..6 committed and applied with node 2; node 3 was down
    all along (its log is empty). The leader saved a snapshot up to (4, 1) and, unless told
    otherwise, compacted its log to it. Node 3 is back up but has heard nothing yet."""
    c = Cluster(3, seed=7)
    c.down.add(3)
    c.elect(1)
    for k in range(5):
        c.propose(1, b"c%d" % k)
    c.stabilize()
    c.tick_all(HEARTBEAT)
    leader = c[1]
    assert (leader.term, leader.commit_index, leader.applied_index) == (1, 6, 6)
    leader.snapshot_saved(SNAP.index, SNAP.term)
    if compact:
        leader.compact(SNAP.index)
    c.down.discard(3)
    return c


def start_transfer(c: Cluster) -> SnapshotSend:
    """One heartbeat interval: the leader meets node 3 and asks for the snapshot's first chunk."""
    mark = len(c.nodes[1].readies)
    c.tick_all(HEARTBEAT)
    (send,) = sends_since(c.nodes[1], mark)
    return send


# -------------------------------------------------------------------- leader


def test_follower_needing_compacted_entries_gets_the_snapshot_instead_of_append_entries() -> None:
    c = lagging_cluster()
    assert c[1].log.first_index == 5
    mark, dmark = len(c.nodes[1].readies), len(c.delivered)
    c.tick_all(HEARTBEAT)
    assert sends_since(c.nodes[1], mark) == [SnapshotSend(3, 1, SNAP, 0)]
    to_3 = of_type([m for m in delivered_since(c, dmark) if m.dst == 3], AppendEntries)
    assert to_3, "the heartbeat still goes to node 3"
    assert all(m.entries == () for m in to_3)
    assert all((m.prev_log_index, m.prev_log_term) == (4, 1) for m in to_3)  # anchored at the snapshot
    assert c[3].leader_id == 1 and c[3].term == 1


def test_without_compaction_the_same_follower_is_sent_entries() -> None:
    """The control for the test above: the snapshot is used only because entries are gone."""
    c = lagging_cluster(compact=False)
    mark, dmark = len(c.nodes[1].readies), len(c.delivered)
    c.tick_all(HEARTBEAT)
    assert sends_since(c.nodes[1], mark) == []
    assert c.nodes[3].log == c.nodes[1].log
    assert c[3].commit_index == 6
    assert not of_type(delivered_since(c, dmark), InstallSnapshot)


def test_only_one_chunk_is_in_flight_per_follower() -> None:
    c = lagging_cluster()
    start_transfer(c)
    mark = len(c.nodes[1].readies)
    c.tick_all(HEARTBEAT)  # a heartbeat later, node 3 has still not answered the chunk
    c[1].step(AppendEntriesResponse(3, 1, 1, False, 4, 1, 0))  # a rejected heartbeat, once more
    c.collect([1])
    assert sends_since(c.nodes[1], mark) == []


def test_next_offset_in_the_answer_moves_the_transfer_on() -> None:
    c = lagging_cluster()
    receiver = Receiver()
    send = start_transfer(c)
    offsets = []
    for _ in range(3):
        mark = len(c.nodes[1].readies)
        hand_over(c, send, receiver)
        c.stabilize()  # node 3's answer reaches the leader
        sent = sends_since(c.nodes[1], mark)
        if receiver.installed is not None:
            assert sent == []
            break
        (send,) = sent
        offsets.append(send.offset)
    assert offsets == [16, 32]
    assert receiver.installed == (SNAP, SNAPSHOT_FILE)


def test_answer_about_another_snapshot_does_not_move_the_transfer() -> None:
    c = lagging_cluster()
    start_transfer(c)
    mark = len(c.nodes[1].readies)
    c[1].step(InstallSnapshotResponse(3, 1, 1, 3, 1, 16, False))  # a snapshot we are not sending
    c.collect([1])
    assert sends_since(c.nodes[1], mark) == []


def test_installed_snapshot_sets_match_index_and_replication_resumes_after_it() -> None:
    c = lagging_cluster()
    send = start_transfer(c)
    c.down.add(2)  # from now on the leader's only possible quorum partner is node 3
    index, _ = c.propose(1, b"after")
    c.collect([1])
    assert c[1].commit_index == 6
    receiver = Receiver()
    chunk = hand_over(c, send, receiver, data=b"state")  # one chunk holds it all
    assert chunk.done and receiver.installed == (SNAP, b"state")
    answers = of_type(c.collect([3]), InstallSnapshotResponse)
    assert answers == [InstallSnapshotResponse(3, 1, 1, 4, 1, 5, True)]
    c.deliver_queue(lambda m: isinstance(m, InstallSnapshotResponse))
    assert c[1].match_indexes()[3] == 4
    appends = of_type(c.collect([1]), AppendEntries)
    (probe,) = [m for m in appends if m.dst == 3]
    assert (probe.prev_log_index, probe.prev_log_term) == (4, 1)
    assert [e.index for e in probe.entries] == [5, 6, index]
    c.stabilize()
    assert c[1].match_indexes()[3] == index
    assert c[1].commit_index == index  # node 3's acknowledgement made the quorum
    assert c[3].commit_index == index
    assert [e.data for e in c.nodes[3].committed] == [b"c3", b"c4", b"after"]
    assert c.nodes[3].readies[-1].restore is None
    assert any(rd.restore == SNAP for rd in c.nodes[3].readies)


def test_heartbeats_reach_a_follower_receiving_a_snapshot_and_its_rejections_keep_the_transfer() -> None:
    c = lagging_cluster()
    receiver = Receiver()
    send = start_transfer(c)
    mark = len(c.nodes[1].readies)
    hand_over(c, send, receiver)
    c.stabilize()
    (second,) = sends_since(c.nodes[1], mark)
    assert second.offset == 16
    mark, dmark = len(c.nodes[1].readies), len(c.delivered)
    c.tick_all(HEARTBEAT)
    delivered = delivered_since(c, dmark)
    heartbeats = [m for m in of_type(delivered, AppendEntries) if m.dst == 3]
    rejections = [m for m in of_type(delivered, AppendEntriesResponse) if m.src == 3]
    assert heartbeats and all(m.entries == () for m in heartbeats)
    assert rejections and not any(m.success for m in rejections)
    assert sends_since(c.nodes[1], mark) == []  # neither a restart nor a second chunk in flight
    hand_over(c, second, receiver)
    c.stabilize()
    (third,) = sends_since(c.nodes[1], mark)
    assert third == SnapshotSend(3, 1, SNAP, 32)


@pytest.mark.parametrize("answered", [0, 1])
def test_unanswered_chunk_is_resent_after_two_heartbeat_intervals(answered: int) -> None:
    c = lagging_cluster()
    receiver = Receiver()
    send = start_transfer(c)
    for _ in range(answered):
        mark = len(c.nodes[1].readies)
        hand_over(c, send, receiver)
        c.stabilize()
        (send,) = sends_since(c.nodes[1], mark)
    # ``send`` is lost: its chunk never reaches node 3.
    mark = len(c.nodes[1].readies)
    c.tick_all(HEARTBEAT)
    assert sends_since(c.nodes[1], mark) == []
    c.tick_all(HEARTBEAT)
    assert sends_since(c.nodes[1], mark) == [send]
    assert send.offset == CHUNK * answered


def test_stalled_transfer_restarts_with_a_newer_snapshot() -> None:
    """The chunk at 16 of the old snapshot is lost, and meanwhile the leader saved a newer
    snapshot (the old file may be deleted): the resend starts over with the newer one."""
    c = lagging_cluster()
    receiver = Receiver()
    send = start_transfer(c)
    mark = len(c.nodes[1].readies)
    hand_over(c, send, receiver)
    c.stabilize()
    (lost,) = sends_since(c.nodes[1], mark)
    assert lost.offset == 16
    for k in range(2):
        c.propose(1, b"more%d" % k)
    c.stabilize()
    assert c[1].applied_index == 8
    newer = SnapshotRef(8, 1)
    c[1].snapshot_saved(newer.index, newer.term)
    c[1].compact(newer.index)
    mark = len(c.nodes[1].readies)
    c.tick_all(2 * HEARTBEAT)
    (restart,) = sends_since(c.nodes[1], mark)
    assert restart == SnapshotSend(3, 1, newer, 0)
    # A late answer about the old snapshot does not move the new transfer.
    mark = len(c.nodes[1].readies)
    c[1].step(InstallSnapshotResponse(3, 1, 1, 4, 1, 32, False))
    c.collect([1])
    assert sends_since(c.nodes[1], mark) == []
    # The newer snapshot goes through from its first chunk and node 3 catches up after it.
    new_file = b"newer snapshot, still in two chunks"
    send = restart
    while receiver.installed is None or receiver.installed[0] != newer:
        mark = len(c.nodes[1].readies)
        hand_over(c, send, receiver, data=new_file)
        c.stabilize()
        sent = sends_since(c.nodes[1], mark)
        if sent:
            (send,) = sent
    assert receiver.installed == (newer, new_file)
    assert c[3].log.snapshot_index == 8
    assert c[3].commit_index == c[1].commit_index == 8
    assert c[1].match_indexes()[3] == 8


def test_late_heartbeat_rejection_does_not_undo_an_installed_snapshot() -> None:
    """A heartbeat rejection node 3 sent before it installed the snapshot, delivered after its
    installed answer, looks like the answer to the probe at the snapshot index. It is stale:
    matchIndex must not drop below the installed snapshot, nor the transfer restart.
    (The core used to lower matchIndex to 0 here and send the snapshot again.)"""
    c = lagging_cluster()
    send = start_transfer(c)
    stale = next(
        m for m in c.delivered if isinstance(m, AppendEntriesResponse) and m.src == 3 and not m.success
    )
    assert stale.match_index == 4  # node 3 rejected the heartbeat anchored at the snapshot
    hand_over(c, send, Receiver(), data=b"state")
    c.collect([3])
    c.deliver_queue(lambda m: isinstance(m, InstallSnapshotResponse))
    assert c[1].match_indexes()[3] == 4
    c.collect([1])  # the probe after the snapshot (prev 4) leaves; its answer is still on the way
    mark = len(c.nodes[1].readies)
    c[1].step(stale)  # the network reordered node 3's messages
    c.collect([1])
    assert c[1].match_indexes()[3] == 4  # matchIndex only grows (Figure 2)
    assert sends_since(c.nodes[1], mark) == []  # node 3 holds the snapshot durably already


def test_installed_snapshot_becomes_the_one_a_new_leader_sends() -> None:
    """A follower that installed a snapshot and then wins an election serves that snapshot to
    a follower whose entries it never had."""
    n = follower(check_quorum=False)
    done = install_chunk(0, b"state", True)
    n.core.step(done)
    n.ready()
    chunk_stored(n.core, done, 5, True)
    n.ready()
    assert n.core.log.first_index == 11
    for _ in range(2 * ELECTION):
        n.core.tick()
        if n.core.role is not Role.FOLLOWER:
            break
    for pre_vote in (True, False):
        (req,) = [m for m in of_type(n.ready(), RequestVote) if m.dst == 1]
        assert req.pre_vote is pre_vote and (req.last_log_index, req.last_log_term) == (10, 2)
        n.core.step(RequestVoteResponse(1, 3, req.term, True, pre_vote))
    assert n.core.role is Role.LEADER and n.core.term == 3
    n.ready()
    n.core.step(AppendEntriesResponse(2, 3, 3, False, 10, 4, 0))  # node 2 holds only 1..3
    mark = len(n.readies)
    n.ready()
    assert sends_since(n, mark) == [SnapshotSend(2, 3, SnapshotRef(10, 2), 0)]


# ------------------------------------------------------------------ follower


@pytest.mark.parametrize("last_index", [4, 5])
def test_snapshot_within_the_commit_index_is_acknowledged_at_once(last_index: int) -> None:
    """Committed entries are in every leader's log, ours included: nothing to install."""
    n = follower((1, 1, 1, 1, 1))
    n.core.step(AppendEntries(1, 3, 2, 5, 1, (), 5))
    n.ready()
    assert n.core.commit_index == 5
    n.core.step(install_chunk(0, b"abc", False, last_index=last_index, last_term=1))
    rd = drain(n)
    assert rd.snapshot_writes == [] and rd.restore is None
    assert of_type(rd.messages, InstallSnapshotResponse) == [
        InstallSnapshotResponse(3, 1, 2, last_index, 1, 0, True)
    ]
    assert (n.core.log.snapshot_index, n.core.log.last_index) == (0, 5)


def test_snapshot_beyond_the_commit_index_goes_to_storage_chunk_by_chunk() -> None:
    n = follower()
    first = install_chunk(0, b"abc", False)
    n.core.step(first)
    rd = drain(n)
    assert rd.snapshot_writes == [first]
    assert of_type(rd.messages, InstallSnapshotResponse) == []  # storage answers, not the core
    assert n.core.leader_id == 1
    assert (n.core.log.snapshot_index, n.core.commit_index) == (0, 0)


def test_stored_chunk_answers_the_offset_storage_wants_next() -> None:
    n = follower()
    first = install_chunk(0, b"abc", False)
    n.core.step(first)
    n.ready()
    chunk_stored(n.core, first, 3, False)
    rd = drain(n)
    assert of_type(rd.messages, InstallSnapshotResponse) == [
        InstallSnapshotResponse(3, 1, 2, 10, 2, 3, False)
    ]
    assert rd.restore is None and n.core.log.snapshot_index == 0


def test_follower_installing_ignores_append_entries_and_does_not_campaign() -> None:
    """While storage rewrites the log with a snapshot, the log the core holds is about to be
    replaced: it must neither accept entries into it nor ask for votes with it."""
    n = follower()
    first = install_chunk(0, b"abc", False)
    n.core.step(first)
    n.ready()
    chunk_stored(n.core, first, 3, False)
    n.core.step(AppendEntries(1, 3, 2, 3, 1, (), 3, seq=1))
    (ack,) = of_type(n.ready(), AppendEntriesResponse)  # a chunk before the last blocks nothing
    assert ack.success and ack.match_index == 3
    last = install_chunk(3, b"def", True)
    n.core.step(last)
    assert drain(n).snapshot_writes == [last]
    n.core.step(AppendEntries(1, 3, 2, 3, 1, entries(4, 2), 4, seq=2))
    n.core.step(install_chunk(0, b"abc", False))  # one install at a time
    rd = drain(n)
    assert rd.messages == [] and rd.entries == [] and rd.snapshot_writes == []
    assert (n.core.log.last_index, n.core.commit_index) == (3, 3)
    for _ in range(4 * ELECTION):
        n.core.tick()
    assert status(n) == (2, 1, Role.FOLLOWER)
    assert of_type(n.ready(), RequestVote) == []
    chunk_stored(n.core, last, 6, True)
    n.ready()
    n.core.step(AppendEntries(1, 3, 2, 10, 2, entries(11, 2), 11, seq=3))
    n.ready()
    assert n.core.log.last_index == 11
    for _ in range(2 * ELECTION):
        n.core.tick()
    assert status(n)[2] is Role.PRE_CANDIDATE  # the election timer runs again


def test_last_chunk_stored_without_install_releases_the_follower() -> None:
    """Storage may refuse to install (it misses a chunk): the follower goes back to normal and
    asks for what it needs."""
    n = follower()
    last = install_chunk(3, b"def", True)
    n.core.step(last)
    n.ready()
    chunk_stored(n.core, last, 0, False)
    rd = drain(n)
    assert of_type(rd.messages, InstallSnapshotResponse) == [
        InstallSnapshotResponse(3, 1, 2, 10, 2, 0, False)
    ]
    assert rd.restore is None
    n.core.step(AppendEntries(1, 3, 2, 3, 1, entries(4, 2), 3, seq=1))
    n.ready()
    assert n.core.log.last_index == 4
    first = install_chunk(0, b"abc", False)
    n.core.step(first)
    assert drain(n).snapshot_writes == [first]


def test_installed_snapshot_restores_the_state_and_moves_the_log_base() -> None:
    """Figure 13, receiver steps 5-8: the follower's log (1..3, shorter than the snapshot) is
    discarded, the state machine is reset from the snapshot, and only entries after it are
    applied afterwards."""
    n = follower()
    receiver = Receiver()
    for chunk in (install_chunk(0, b"abc", False), install_chunk(3, b"def", True)):
        n.core.step(chunk)
        (write,) = drain(n).snapshot_writes
        chunk_stored(n.core, write, *receiver.store(write))
    assert receiver.installed == (SnapshotRef(10, 2), b"abcdef")
    rd = drain(n)
    assert rd.restore == SnapshotRef(10, 2)
    assert rd.committed == [] and rd.entries == []
    assert of_type(rd.messages, InstallSnapshotResponse)[-1] == InstallSnapshotResponse(
        3, 1, 2, 10, 2, 6, True
    )
    log = n.core.log
    assert (log.snapshot_index, log.snapshot_term, log.first_index, log.last_index) == (10, 2, 11, 10)
    assert (n.core.commit_index, n.core.applied_index) == (10, 10)
    n.core.step(AppendEntries(1, 3, 2, 10, 2, entries(11, 2, 2), 12))
    rd = drain(n)
    assert rd.restore is None
    assert [e.index for e in rd.entries] == [11, 12]
    assert [e.index for e in rd.committed] == [11, 12]
    (ack,) = of_type(n.ready(), AppendEntriesResponse)
    assert ack.success and ack.match_index == 12


def test_installed_snapshot_keeps_the_entries_after_it_when_the_log_holds_its_last_entry() -> None:
    """Figure 13, receiver step 6: entries after a matching last included entry are retained,
    and committed (so applied) only after the snapshot has been loaded."""
    n = follower((1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2))
    done = install_chunk(0, b"state", True)
    n.core.step(done)
    n.ready()
    chunk_stored(n.core, done, 5, True)
    rd = drain(n)
    assert rd.restore == SnapshotRef(10, 2) and rd.committed == []
    log = n.core.log
    assert (log.snapshot_index, log.last_index, log.last_term) == (10, 12, 2)
    assert [e.data for e in log.slice(11, 13)] == [b"11@2", b"12@2"]
    n.core.step(AppendEntries(1, 3, 2, 12, 2, (), 12, seq=1))
    rd = drain(n)
    assert [e.index for e in rd.committed] == [11, 12]
    (ack,) = of_type(rd.messages, AppendEntriesResponse)
    assert ack.success and ack.match_index == 12


def test_installed_snapshot_replaces_a_log_that_disagrees_with_it() -> None:
    """Figure 13, receiver step 7: an entry at the snapshot's index of another term means the
    whole log goes, including the entries after it."""
    n = follower((1,) * 12)
    done = install_chunk(0, b"state", True)
    n.core.step(done)
    n.ready()
    chunk_stored(n.core, done, 5, True)
    rd = drain(n)
    assert rd.restore == SnapshotRef(10, 2)
    log = n.core.log
    assert (log.snapshot_index, log.last_index, log.last_term) == (10, 10, 2)
    n.core.step(AppendEntries(1, 3, 2, 12, 2, (), 12, seq=1))
    (reject,) = of_type(n.ready(), AppendEntriesResponse)
    assert not reject.success and reject.conflict_index == 11


def test_snapshot_stored_after_the_term_moved_on_restores_but_does_not_answer() -> None:
    n = follower()
    done = install_chunk(0, b"state", True)
    n.core.step(done)
    n.ready()
    n.core.step(AppendEntries(2, 3, 4, 3, 1, (), 0))  # node 2 leads term 4 while storage works
    n.ready()
    assert (n.core.term, n.core.leader_id) == (4, 2)
    chunk_stored(n.core, done, 5, True)
    rd = drain(n)
    assert rd.restore == SnapshotRef(10, 2)  # committed state is good whoever leads
    assert of_type(rd.messages, InstallSnapshotResponse) == []  # node 1 no longer leads
    assert n.core.commit_index == 10 and n.core.term == 4


@pytest.mark.parametrize("pre_vote", [True, False])
def test_candidate_receiving_install_snapshot_of_its_term_follows_the_sender(pre_vote: bool) -> None:
    n = follower(pre_vote=pre_vote)
    for _ in range(2 * ELECTION):
        n.core.tick()
        if n.core.role is not Role.FOLLOWER:
            break
    n.ready()
    expected = Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE
    assert n.core.role is expected
    term = n.core.term
    assert term == (2 if pre_vote else 3)
    chunk = install_chunk(0, b"abc", False, term=term)
    n.core.step(chunk)
    rd = drain(n)
    assert n.core.role is Role.FOLLOWER and n.core.leader_id == 1 and n.core.term == term
    assert rd.snapshot_writes == [chunk]


def test_install_snapshot_of_a_newer_term_is_followed_and_of_an_older_term_ignored() -> None:
    n = follower(term=2)
    old = install_chunk(0, b"abc", False, term=1)
    n.core.step(old)
    rd = drain(n)
    assert rd.snapshot_writes == [] and status(n) == (2, None, Role.FOLLOWER)
    new = install_chunk(0, b"abc", False, term=4)
    n.core.step(new)
    rd = drain(n)
    assert rd.snapshot_writes == [new]
    assert status(n) == (4, 1, Role.FOLLOWER)
    assert rd.hard_state == HardState(4, None)


# ---------------------------------------------------------------- end to end


def encode(state: list[bytes]) -> bytes:
    return json.dumps([command.decode() for command in state]).encode()


def decode(data: bytes) -> list[bytes]:
    return [command.encode() for command in json.loads(data)]


class SnapshotCluster(Cluster):
    """A Cluster whose nodes do with snapshots what a real node's caller does: the leader reads
    chunks of its snapshot file and sends them, a follower stores them in a Receiver and loads
    an installed snapshot into its state machine (the list of commands it applied)."""

    def __init__(self, size: int, seed: int, chunk_size: int, **cfg: Any) -> None:
        super().__init__(size, seed, **cfg)
        self.chunk_size = chunk_size
        self.files: dict[int, tuple[SnapshotRef, bytes]] = {}
        self.receivers = {i: Receiver() for i in self.ids}
        self.state: dict[int, list[bytes]] = {i: [] for i in self.ids}
        self.chunks_sent: list[InstallSnapshot] = []
        self._handled = dict.fromkeys(self.ids, 0)

    def collect(self, ids: Iterable[int] | None = None, persist: bool = True) -> list[Message]:
        chosen = self.ids if ids is None else list(ids)
        out: list[Message] = []
        for _ in range(100):
            out.extend(super().collect(chosen, persist))
            chunks = self._handle_snapshots(chosen)
            self.queue.extend(chunks)
            out.extend(chunks)
            if not any(self[i].has_ready() for i in chosen if i not in self.down):
                return out
        raise AssertionError("snapshot handling did not settle")

    def _handle_snapshots(self, ids: Sequence[int]) -> list[InstallSnapshot]:
        chunks: list[InstallSnapshot] = []
        for i in ids:
            node = self.nodes[i]
            for rd in node.readies[self._handled[i] :]:
                for send in rd.snapshot_sends:
                    ref, data = self.files[i]
                    if ref == send.snapshot:  # else the file was replaced: the core restarts
                        chunks.append(chunk_of(send, i, data, self.chunk_size))
                        self.chunks_sent.append(chunks[-1])
                for chunk in rd.snapshot_writes:
                    receiver = self.receivers[i]
                    next_offset, installed = receiver.store(chunk)
                    if installed and receiver.installed is not None:
                        self.files[i] = receiver.installed
                    chunk_stored(node.core, chunk, next_offset, installed)
                if rd.restore is not None:
                    ref, data = self.files[i]
                    assert ref == rd.restore
                    self.state[i] = decode(data)
                self.state[i].extend(e.data for e in rd.committed if e.kind is EntryKind.COMMAND)
            self._handled[i] = len(node.readies)
        return chunks

    def snapshot(self, node_id: int) -> SnapshotRef:
        """Snapshot what ``node_id`` applied, save it, and compact its log up to it."""
        self.collect([node_id])
        core = self[node_id]
        ref = SnapshotRef(core.applied_index, core.log.term_at(core.applied_index))
        self.files[node_id] = (ref, encode(self.state[node_id]))
        core.snapshot_saved(ref.index, ref.term)
        core.compact(ref.index)
        return ref


def test_cut_off_follower_catches_up_through_a_chunked_snapshot() -> None:
    c = SnapshotCluster(3, seed=5, chunk_size=16)
    c.elect(1)
    early = [b"early%d" % k for k in range(3)]
    for command in early:
        c.propose(1, command)
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c.state[3] == early
    c.isolate(3)
    missed = [b"missed%d" % k for k in range(6)]
    for command in missed:
        c.propose(1, command)
    c.stabilize()
    ref = c.snapshot(1)  # the leader snapshots all it applied and compacts its log
    assert ref == SnapshotRef(10, 1) and c[1].log.first_index == 11
    c.propose(1, b"after-snapshot")
    c.stabilize()
    assert c[3].log.last_index == 4  # node 3 missed everything since the early commands

    c.heal()
    mark = len(c.delivered)
    c.tick_all(HEARTBEAT)
    delivered = delivered_since(c, mark)
    chunks = of_type(delivered, InstallSnapshot)
    _, file = c.files[1]
    assert len(chunks) == -(-len(file) // 16) >= 3
    assert [m.offset for m in chunks] == list(range(0, len(file), 16))  # each chunk exactly once
    assert [m.done for m in chunks] == [False] * (len(chunks) - 1) + [True]
    assert c.files[3] == (ref, file)
    log = c[3].log
    assert (log.snapshot_index, log.snapshot_term) == (10, 1)
    appends = [m for m in of_type(delivered, AppendEntries) if m.dst == 3 and m.entries]
    assert appends and min(e.index for m in appends for e in m.entries) == 11  # nothing compacted
    assert c.state[3] == c.state[1] == [*early, *missed, b"after-snapshot"]

    c.propose(1, b"new")
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c.state[3] == c.state[2] == c.state[1] == [*early, *missed, b"after-snapshot", b"new"]
    assert c[3].commit_index == c[1].commit_index == 12
    assert c[1].match_indexes() == {2: 12, 3: 12}


def test_snapshot_transfer_survives_lost_chunks_and_lost_answers() -> None:
    """Chunks and answers are lost at random: unanswered chunks are resent after two heartbeat
    intervals, storage asks again for what it is missing, and the follower still installs the
    snapshot exactly as the leader saved it."""
    c = SnapshotCluster(3, seed=9, chunk_size=8)
    c.elect(1)
    for k in range(3):
        c.propose(1, b"early%d" % k)
    c.stabilize()
    c.down.add(3)
    for k in range(10):
        c.propose(1, b"missed%d" % k)
    c.stabilize()
    ref = c.snapshot(1)
    c.down.discard(3)
    rng = random.Random(3)
    c.drop = lambda m: isinstance(m, InstallSnapshot | InstallSnapshotResponse) and rng.random() < 0.4
    for _ in range(40 * ELECTION):
        c.tick_all()
        if c[3].log.snapshot_index == ref.index and c[3].commit_index == c[1].commit_index:
            break
    else:
        raise AssertionError("node 3 never caught up")
    delivered = [m for m in c.delivered if isinstance(m, InstallSnapshot)]
    assert len(c.chunks_sent) > len(delivered) > len(c.files[1][1]) // 8  # some were lost, all arrived
    assert c.files[3] == c.files[1]
    assert (
        c.state[3]
        == c.state[1]
        == [*(b"early%d" % k for k in range(3)), *(b"missed%d" % k for k in range(10))]
    )
    assert c[1].role is Role.LEADER and c[1].term == 1

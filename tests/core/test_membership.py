"""Membership changes, one server at a time (thesis chapter 4).

The rules: a configuration is a CONFIG entry in effect on every server as soon
as it is in its log, committed or not, and reverted if the entry is truncated
(4.1); a leader changes it only once its own term has committed an entry and
the previous change has committed (4.1, the fix of the single-server bug);
learners replicate but never vote, campaign or count toward a quorum; a leader
that removed itself keeps leading until the change commits, counting a
majority that excludes itself, then hands over and steps down (4.2.2); a
removed server cannot disrupt the cluster (4.2.3).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import msgpack
import pytest

from pyraft.core.errors import ConfigChangeInProgress, NoLeader, NotLeader
from pyraft.core.membership import Member, Membership, MembershipError
from pyraft.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from pyraft.core.raft import RaftCore, Role
from pyraft.core.ready import ReadState, SnapshotRef

from .helpers import ELECTION, HEARTBEAT, Cluster, Node, config, of_type, role_of

FULL = Membership.of_ids((1, 2, 3))

Change = Callable[[], tuple[int, int]]


def steady(size: int = 3, seed: int = 71, **cfg: object) -> Cluster:
    """A cluster whose leader, node 1, has committed its no-op everywhere."""
    c = Cluster(size, seed=seed, **cfg)  # type: ignore[arg-type]
    c.elect(1)
    c.tick_all(HEARTBEAT)
    return c


def add_observer(c: Cluster, node_id: int) -> None:
    """Start a node outside the bootstrap voters (it knows them, they do not know it)."""
    cfg = dataclasses.replace(c.nodes[1].config, node_id=node_id)
    c.nodes[node_id] = Node.create(cfg, seed=1000 + node_id)


def with_learner(c: Cluster, node_id: int, leader: int = 1) -> int:
    """Add ``node_id`` as a learner through ``leader``, commit and catch it up; the change's index."""
    add_observer(c, node_id)
    index, _ = c[leader].add_learner(Member(node_id, f"host{node_id}:7000"))
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c[leader].commit_index >= index
    assert c.nodes[node_id].log == c.nodes[leader].log
    return index


def sent_since(c: Cluster, start: int) -> list[Message]:
    return list(c.delivered[start:])


def await_leader(c: Cluster) -> int:
    """Tick everyone until some node leads (the old leader is down, leases must run out)."""
    for _ in range(6 * ELECTION):
        c.tick_all()
        if c.leaders():
            (leader,) = c.leaders()
            return leader
    raise AssertionError("no leader was elected")


# ---------------------------------------------------------------- Membership values


def test_membership_encodes_and_decodes_with_addresses_and_learners() -> None:
    m = Membership((Member(3, "c:1"), Member(1, "a:1")), (Member(7, "g:1"),))
    decoded = Membership.decode(m.encode())
    # Decoding sorts by id; the same members, voters and learners kept apart.
    assert decoded == Membership((Member(1, "a:1"), Member(3, "c:1")), (Member(7, "g:1"),))
    assert decoded.voter_ids == {1, 3} and decoded.learner_ids == {7} and decoded.ids == {1, 3, 7}
    assert decoded.addresses() == {1: "a:1", 3: "c:1", 7: "g:1"}
    assert Membership.decode(decoded.encode()) == decoded


@pytest.mark.parametrize(
    "data",
    [
        b"",  # truncated
        b"\xc1",  # never valid msgpack
        b"garbage",  # trailing bytes after a small int
        msgpack.packb(5),
        msgpack.packb([[[1, ""]]]),  # one group only
        msgpack.packb([[], []]),  # no voters
        msgpack.packb([[[1, ""]], [[1, ""]]]),  # a voter that is also a learner
        msgpack.packb([[[1, ""], [1, "x"]], []]),  # a duplicate voter
        msgpack.packb([[[-1, ""]], []]),  # negative id
        msgpack.packb([[[True, ""]], []]),  # a bool is not an id
        msgpack.packb([[[1.0, ""]], []]),
        msgpack.packb([[[1, 2]], []]),  # address not a string
        msgpack.packb([[[1]], []]),  # a member without an address
        msgpack.packb([[1], []]),
        msgpack.packb([{"1": ""}, []]),
    ],
)
def test_decode_rejects_what_is_not_a_configuration(data: bytes) -> None:
    with pytest.raises(MembershipError):
        Membership.decode(data)


def test_with_learner_adds_one_new_member() -> None:
    m = FULL.with_learner(Member(5)).with_learner(Member(4))
    assert m.voter_ids == {1, 2, 3}
    assert [x.node_id for x in m.learners] == [4, 5]
    for existing in (2, 4):  # a voter or a learner already
        with pytest.raises(MembershipError, match="already a member"):
            m.with_learner(Member(existing))
    with pytest.raises(MembershipError, match="invalid"):
        FULL.with_learner(Member(-1))


def test_promoted_moves_a_learner_to_the_voters() -> None:
    m = FULL.with_learner(Member(4, "d:1")).promoted(4)
    assert m == Membership((Member(1), Member(2), Member(3), Member(4, "d:1")), ())
    assert m.quorum == 3
    for not_learner in (2, 9):
        with pytest.raises(MembershipError, match="not a learner"):
            FULL.with_learner(Member(4)).promoted(not_learner)


def test_without_removes_a_voter_or_learner_never_the_last_voter() -> None:
    m = FULL.with_learner(Member(4))
    assert m.without(4) == FULL
    assert m.without(2) == Membership((Member(1), Member(3)), (Member(4),))
    with pytest.raises(MembershipError, match="not a member"):
        m.without(9)
    lone = Membership.of_ids((1,)).with_learner(Member(2))
    assert lone.without(2) == Membership.of_ids((1,))
    with pytest.raises(MembershipError, match="last voter"):
        lone.without(1)


def test_quorum_counts_voters_only() -> None:
    m = FULL.with_learner(Member(4)).with_learner(Member(5))
    assert m.quorum == 2
    assert Membership.of_ids((1, 2, 3, 4)).quorum == 3


# ---------------------------------------------------------------- who may change it, and when


def test_new_leader_refuses_a_change_until_its_no_op_commits() -> None:
    """Thesis 4.1's fix of the single-server bug: a leader changes the configuration only
    after an entry of its own term has committed."""
    c = Cluster(3, seed=72)
    c.drop = lambda m: isinstance(m, AppendEntries)  # votes pass, the no-op does not
    c.campaign(1)
    c.stabilize()
    assert c[1].role is Role.LEADER and c[1].commit_index == 0
    last = c[1].log.last_index
    with pytest.raises(ConfigChangeInProgress, match="not committed an entry of its term"):
        c[1].add_learner(Member(4))
    with pytest.raises(ConfigChangeInProgress):
        c[1].remove_member(3)
    assert c[1].log.last_index == last and c[1].membership == FULL  # nothing appended
    c.down.add(4)
    c.heal()
    c.tick_all(2 * HEARTBEAT)  # the no-op goes out again with the next heartbeats
    assert c[1].commit_index == last
    index, term = c[1].add_learner(Member(4))
    assert (index, term) == (last + 1, c[1].term)


def test_leader_refuses_a_second_change_while_the_first_is_uncommitted() -> None:
    c = steady()
    c.down |= {2, 3, 4}
    first, _ = c[1].add_learner(Member(4))
    c.stabilize()
    assert c[1].commit_index < first
    changes: list[Change] = [
        lambda: c[1].remove_member(3),
        lambda: c[1].promote_learner(4),
        lambda: c[1].add_learner(Member(5)),
    ]
    for change in changes:
        with pytest.raises(ConfigChangeInProgress, match=f"index {first}"):
            change()
    assert c[1].log.last_index == first
    c.down -= {2, 3}
    c.tick_all(3 * HEARTBEAT)
    assert c[1].commit_index >= first
    second, _ = c[1].remove_member(4)
    assert second > first and c[1].membership == FULL


def test_followers_refuse_changes() -> None:
    c = steady()
    with_learner(c, 4)
    changes: list[Change] = [
        lambda: c[2].add_learner(Member(5)),
        lambda: c[2].remove_member(3),
        lambda: c[2].promote_learner(4),
    ]
    for change in changes:
        with pytest.raises(NotLeader) as refused:
            change()
        assert type(refused.value) is NotLeader and refused.value.leader_id == 1
    assert c[2].log.last_index == c[1].log.last_index
    fresh = Node.create(config(1, (1, 2, 3)))
    with pytest.raises(NoLeader):
        fresh.core.add_learner(Member(4))


# ---------------------------------------------------------------- in effect on append (4.1)


def test_removal_is_in_effect_on_the_leader_as_soon_as_appended() -> None:
    """Four voters need three acknowledgements; once the leader appends the removal of node 4,
    two of the remaining three suffice, for that very entry and for those before it."""
    c = steady(4)
    c.down |= {3, 4}
    x, _ = c.propose(1, b"x")
    c.stabilize()
    assert c[1].commit_index < x  # leader and node 2: two of four
    removal, _ = c[1].remove_member(4)
    assert c[1].membership.voter_ids == {1, 2, 3}  # before any fsync, let alone commit
    assert 4 not in c[1].match_indexes()
    c.stabilize()
    assert c[1].commit_index == removal  # leader and node 2: two of three


def test_promotion_is_in_effect_on_the_leader_as_soon_as_appended() -> None:
    """The entry making node 4 a voter needs three of the four voters, node 4's ack included."""
    c = steady()
    with_learner(c, 4)
    c.down |= {3, 4}
    promotion, _ = c[1].promote_learner(4)
    assert c[1].membership.voter_ids == {1, 2, 3, 4}
    c.stabilize()
    assert c[1].commit_index < promotion  # leader and node 2 would be two of three before
    c.down.discard(4)
    c.tick_all(3 * HEARTBEAT)
    assert c[1].commit_index >= promotion


def test_config_is_in_effect_on_a_follower_once_appended_before_it_is_durable() -> None:
    c = steady()
    with_learner(c, 4)
    promotion, _ = c[1].promote_learner(4)
    c.collect([1])
    c.deliver_queue(lambda m: m.dst == 2)
    c.queue.clear()
    follower = c[2]
    assert follower.log.last_index == promotion and follower.log.stable_index < promotion
    assert follower.commit_index < promotion
    assert follower.membership.voter_ids == {1, 2, 3, 4}
    # It acts on it: asked to campaign, it canvasses node 4 as well.
    c.down.add(1)
    c.campaign(2)
    asked = {v.dst for v in of_type(c.collect([2]), RequestVote)}
    assert asked == {1, 3, 4}


def test_truncated_config_entry_is_reverted() -> None:
    """Node 1 appends the removal of node 5 and gives it to node 2 only; nodes 3-5 elect node 3,
    whose no-op replaces the entry on both: their configuration is the old one again."""
    c = steady(5)
    removal, term = c[1].remove_member(5)
    c.collect([1])
    c.deliver_queue(lambda m: m.dst == 2)
    c.queue.clear()
    assert c[1].membership.voter_ids == c[2].membership.voter_ids == {1, 2, 3, 4}
    c.down |= {1, 2}
    new = await_leader(c)
    assert c[new].term > term and c[new].membership == Membership.of_ids((1, 2, 3, 4, 5))
    c.down.clear()
    c.tick_all(3 * HEARTBEAT)
    for i in (1, 2):
        entry = c.nodes[i].log[removal - 1]
        assert (entry.term, entry.kind) == (c[new].term, EntryKind.NOOP)
        assert c[i].membership == Membership.of_ids((1, 2, 3, 4, 5))
        assert c[i].membership_at(c[i].log.last_index) == c[i].membership
    assert c[1].role is Role.FOLLOWER and c.leaders() == [new]
    # The new leader replicates to node 5 again: it is a member after all.
    assert all(c.nodes[i].log == c.nodes[new].log for i in c.ids)


# ---------------------------------------------------------------- learners


def test_learner_replicates_but_is_never_asked_to_vote() -> None:
    c = steady()
    with_learner(c, 4)
    x, _ = c.propose(1, b"x")
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c.nodes[4].log == c.nodes[1].log
    assert c[4].commit_index == c[1].commit_index == x and c[4].leader_id == 1
    assert c[1].membership.learner_ids == {4}
    start = len(c.delivered)
    c.down.add(1)
    new = await_leader(c)
    votes = [m for m in sent_since(c, start) if isinstance(m, RequestVote)]
    assert votes and {(v.src, v.dst) for v in votes} <= {(2, 3), (3, 2)}
    c.tick_all(HEARTBEAT)
    assert c[4].leader_id == new  # the new leader replicates to it too


def test_learner_acks_never_count_with_a_single_voter() -> None:
    c = Cluster(1, seed=73)
    c.elect(1)
    for learner in (2, 3):
        with_learner(c, learner)
    assert c[1].membership.voter_ids == {1} and c[1].membership.learner_ids == {2, 3}
    index, _ = c.propose(1, b"y")
    c.collect([1], persist=False)
    c.deliver_queue()
    c.collect([2, 3])
    assert of_type(c.queue, AppendEntriesResponse)
    c.deliver_queue()
    assert c[1].commit_index < index  # both learners hold it durably: not enough
    c.nodes[1].persist()
    assert c[1].commit_index == index  # the one voter alone is


def test_learner_acks_never_count_with_three_voters() -> None:
    c = steady()
    with_learner(c, 4)
    index, _ = c.propose(1, b"z")
    c.collect([1])  # durable on the leader
    c.deliver_queue(lambda m: m.dst == 4)
    c.collect([4])
    c.deliver_queue(lambda m: m.src == 4)
    assert c[1].match_indexes()[4] == index
    assert c[1].commit_index < index  # leader and learner: one voter of three
    c.deliver_queue(lambda m: m.dst == 2)
    c.collect([2])
    c.deliver_queue(lambda m: m.src == 2)
    assert c[1].commit_index == index


@pytest.mark.parametrize("pre_vote", [True, False])
def test_learner_never_campaigns(pre_vote: bool) -> None:
    c = steady(pre_vote=pre_vote)
    with_learner(c, 4)
    c.down |= {1, 2, 3}
    term = c[4].term
    for _ in range(20 * ELECTION):
        c[4].tick()
        assert c.collect([4]) == []
    assert (c[4].role, c[4].term) == (Role.FOLLOWER, term)


def test_promoted_learner_acks_count() -> None:
    c = steady()
    with_learner(c, 4)
    promotion, _ = c[1].promote_learner(4)
    c.stabilize()
    c.tick_all(HEARTBEAT)
    assert c[1].commit_index >= promotion
    index, _ = c.propose(1, b"w")
    c.collect([1])
    c.deliver_queue(lambda m: m.dst == 2)
    c.collect([2])
    c.deliver_queue(lambda m: m.src == 2)
    assert c[1].commit_index < index  # two of four voters
    c.deliver_queue(lambda m: m.dst == 4)
    c.collect([4])
    c.deliver_queue(lambda m: m.src == 4)
    assert c[1].commit_index == index  # node 4's ack makes three


# ---------------------------------------------------------------- removals (4.2.2, 4.2.3)


def test_removed_follower_is_sent_nothing_and_never_counts() -> None:
    c = steady()
    start = len(c.delivered)
    removal, _ = c[1].remove_member(3)
    c.stabilize()
    assert c[1].commit_index == removal
    c.tick_all(3 * HEARTBEAT)
    assert all(m.dst != 3 for m in sent_since(c, start) if m.src == 1)
    # The new majority of {1, 2} is both: node 3's acknowledgement counts for nothing.
    c.down.add(2)
    index, _ = c.propose(1, b"v")
    c.collect([1])
    c[1].step(AppendEntriesResponse(3, 1, c[1].term, True, index))
    assert c[1].commit_index < index
    c.down.clear()
    c.tick_all(3 * HEARTBEAT)
    assert c[1].commit_index == index


def test_leader_removing_itself_leads_until_committed_then_hands_over_and_steps_down() -> None:
    c = steady()
    term = c[1].term
    removal, _ = c[1].remove_member(1)
    assert c[1].membership.voter_ids == {2, 3}
    assert c.leaders() == [1]
    c.propose(1, b"still leading")  # it keeps managing the cluster meanwhile
    last = c[1].log.last_index
    c.collect([1])  # everything durable on the leader
    c.deliver_queue(lambda m: m.dst == 2)
    c.collect([2])
    c.deliver_queue(lambda m: m.src == 2)
    # Leader and node 2 would be a majority of {1, 2, 3}; of {2, 3} it takes both.
    assert c[1].commit_index < removal and c.leaders() == [1]
    c.deliver_queue(lambda m: m.dst == 3)
    c.collect([3])
    c.deliver_queue(lambda m: m.src == 3)
    assert c[1].commit_index == last
    assert c[1].role is Role.FOLLOWER and c[1].leader_id is None
    (handover,) = of_type(c.collect([1]), TimeoutNow)
    assert handover.dst in (2, 3) and handover.term == term
    start = len(c.delivered)
    c.stabilize()
    assert c.leaders() == [handover.dst] and c[handover.dst].term == term + 1
    c.tick_all(10 * ELECTION)
    assert c.leaders() == [handover.dst]
    assert not any(isinstance(m, RequestVote) and m.src == 1 for m in sent_since(c, start))
    assert c[1].role is Role.FOLLOWER and c[1].term == term  # nobody talks to it any more


@pytest.mark.parametrize("pre_vote", [True, False])
def test_removed_server_does_not_disrupt_the_cluster(pre_vote: bool) -> None:
    """Thesis 4.2.3: node 3 never learns of its removal and times out over and over; the
    members drop its vote requests while they hear from their leader (leader stickiness)."""
    c = steady(pre_vote=pre_vote)
    term = c[1].term
    start = len(c.delivered)
    c[1].remove_member(3)
    c.stabilize()
    assert c[3].membership == FULL  # it never received the removal
    c.tick_all(10 * ELECTION)
    canvassed = [m for m in sent_since(c, start) if isinstance(m, RequestVote) and m.src == 3]
    assert {m.dst for m in canvassed} == {1, 2}  # it did try, more than once
    assert len(canvassed) > 2
    assert not any(isinstance(m, RequestVoteResponse) and m.dst == 3 for m in sent_since(c, start))
    assert c.leaders() == [1] and c[1].term == c[2].term == term and c[2].leader_id == 1


def test_learner_that_missed_its_promotion_still_votes_once_the_leader_is_gone() -> None:
    """The promotion of node 4 reaches nodes 2 and 3, not node 4, and the leader dies: three of
    the four voters live, so nodes 2 and 3 must win an election with node 4's vote.

    Leader stickiness (4.2.3) lasts an election timeout after hearing from the leader, for a
    learner too: its clock used to stand still, so it dropped every vote request forever."""
    c = steady()
    with_learner(c, 4)
    c[1].promote_learner(4)
    c.collect([1])
    c.deliver_queue(lambda m: m.dst in (2, 3))
    c.queue.clear()
    assert c[2].membership.voter_ids == c[3].membership.voter_ids == {1, 2, 3, 4}
    assert c[4].membership.voter_ids == {1, 2, 3}
    c.down.add(1)
    for _ in range(20 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    (leader,) = c.leaders()
    assert leader in (2, 3) and c[4].leader_id == leader
    assert c[4].membership.voter_ids == {1, 2, 3, 4}


# ---------------------------------------------------------------- ReadIndex, CheckQuorum


def test_read_index_is_confirmed_by_voters_only() -> None:
    c = steady()
    with_learner(c, 4)
    c.down |= {2, 3}
    c[1].read_index(7)
    c.stabilize()
    assert any(isinstance(m, AppendEntriesResponse) and m.src == 4 for m in c.delivered[-2:])
    assert c.nodes[1].read_states == []  # leader and learner answered the round
    c.down.clear()
    c.tick_all(HEARTBEAT)
    assert c.nodes[1].read_states == [ReadState(7, c[1].commit_index)]


def test_check_quorum_counts_voters_only() -> None:
    c = steady()
    with_learner(c, 4)
    c.down.add(3)
    c.tick_all(3 * ELECTION)
    assert c.leaders() == [1]  # node 2 answers: a majority of voters
    c.down.add(2)
    c.tick_all(3 * ELECTION)
    assert c[1].role is Role.FOLLOWER  # the learner keeps answering: not a majority
    assert c[4].role is Role.FOLLOWER


# ---------------------------------------------------------------- restart, snapshots, compaction


def history(c: Cluster) -> tuple[list[int], Membership]:
    """Add node 4 as a learner, promote it, remove node 3: the indexes of the three changes."""
    indexes = [with_learner(c, 4)]
    changes: list[Change] = [lambda: c[1].promote_learner(4), lambda: c[1].remove_member(3)]
    for change in changes:
        indexes.append(change()[0])
        c.stabilize()
        c.tick_all(HEARTBEAT)
    final = c[1].membership
    assert final.voter_ids == {1, 2, 4} and c[1].commit_index >= indexes[-1]
    return indexes, final


def test_restart_rebuilds_the_membership_from_config_entries() -> None:
    c = steady()
    (added, promoted, removed), final = history(c)
    for i in (2, 4):  # node 4's bootstrap configuration does not even list it
        c.nodes[i].restart()
        assert c[i].membership == final
        assert c[i].membership_at(added - 1) == FULL
        assert c[i].membership_at(added).learner_ids == {4}
        assert c[i].membership_at(promoted).voter_ids == {1, 2, 3, 4}
        assert c[i].membership_at(removed) == final
    # The restarted voter 4 wins with node 2's vote: two of {1, 2, 4}, node 3 is not asked.
    c.down.add(1)
    c.campaign(4)
    assert {m.dst for m in of_type(c.collect([4]), RequestVote)} == {1, 2}
    c.stabilize()
    assert c.leaders() == [4]


def test_restart_from_a_snapshot_takes_its_membership() -> None:
    held = Membership.of_ids((2, 4, 5))
    snapshot = SnapshotRef(5, 2)
    core = RaftCore(config(2, (1, 2, 3)), random.Random(1), HardState(2), snapshot=snapshot, membership=held)
    assert core.membership == held and core.membership_at(5) == held
    while core.role is Role.FOLLOWER:
        core.tick()
    assert {m.dst for m in of_type(core.ready().messages, RequestVote)} == {4, 5}
    # A CONFIG entry after the snapshot overrides it, from its index on.
    grown = held.with_learner(Member(6))
    after = [Entry(6, 2, EntryKind.CONFIG, grown.encode()), Entry(7, 2)]
    core = RaftCore(
        config(2, (1, 2, 3)), random.Random(1), HardState(2), after, snapshot=snapshot, membership=held
    )
    assert core.membership == grown
    assert core.membership_at(5) == held and core.membership_at(7) == grown
    with pytest.raises(ValueError, match="below the log's base"):
        core.membership_at(4)


def test_compact_folds_configs_into_the_base() -> None:
    c = steady()
    (added, promoted, removed), final = history(c)
    leader = c[1]
    leader.snapshot_saved(promoted, leader.log.term_at(promoted))
    leader.compact(promoted)
    assert leader.membership == final
    assert leader.membership_at(promoted).voter_ids == {1, 2, 3, 4}
    assert leader.membership_at(removed) == final
    with pytest.raises(ValueError):
        leader.membership_at(added)
    last = leader.log.last_index
    leader.snapshot_saved(last, leader.log.term_at(last))
    leader.compact(last)
    assert leader.membership == leader.membership_at(last) == final
    # What a snapshot at ``last`` must carry to restart into the same configuration.
    restarted = RaftCore(
        c.nodes[1].config,
        random.Random(2),
        HardState(leader.term, leader.voted_for),
        snapshot=SnapshotRef(last, leader.log.term_at(last)),
        membership=leader.membership_at(last),
    )
    assert restarted.membership == final


# ---------------------------------------------------------------- observers


def test_observer_follows_a_leader_it_hears_from_and_never_campaigns() -> None:
    observer = Node.create(config(4, (1, 2, 3)))
    for _ in range(20 * ELECTION):
        observer.core.tick()
        assert observer.ready() == []
    assert (observer.core.role, observer.core.term) == (Role.FOLLOWER, 0)
    entries = (
        Entry(1, 3, EntryKind.NOOP),
        Entry(2, 3, EntryKind.CONFIG, FULL.with_learner(Member(4)).encode()),
    )
    observer.core.step(AppendEntries(1, 4, 3, 0, 0, entries, 1, seq=1))
    assert observer.ready() == []  # acknowledged once durable
    (ack,) = of_type(observer.ready(), AppendEntriesResponse)
    assert (ack.dst, ack.term, ack.success, ack.match_index) == (1, 3, True, 2)
    assert (observer.core.term, observer.core.leader_id, observer.core.commit_index) == (3, 1, 1)
    assert observer.core.membership.learner_ids == {4}
    for _ in range(20 * ELECTION):
        observer.core.tick()
        assert observer.ready() == []
    assert observer.core.role is Role.FOLLOWER


def test_server_answers_a_vote_request_whatever_its_configuration() -> None:
    """Thesis 4.1: a candidate may know a configuration the voter has not seen yet."""
    observer = Node.create(config(4, (1, 2, 3), pre_vote=False))
    observer.core.step(RequestVote(2, 4, 5, 3, 2))
    (vote,) = of_type(observer.ready(), RequestVoteResponse)
    assert vote.granted and (vote.dst, vote.term) == (2, 5)
    assert observer.hard_state == HardState(5, 2)


def test_leader_that_steps_down_mid_self_removal_can_still_be_elected() -> None:
    """Its removal is appended only in its own log, the longest: the other voter of the old
    pair cannot win without its vote, which the more up-to-date log refuses. So a server
    removed by a change not yet committed may campaign, and finishes the change."""
    c = steady(size=2)
    c.isolate(1)
    removal, _ = c[1].remove_member(1)  # {1, 2} -> {2}, reaches nobody
    c.tick_all(3 * ELECTION)  # CheckQuorum: no answers, it steps down uncommitted
    assert c[1].role is not Role.LEADER and c[1].commit_index < removal
    assert c[1].membership.voter_ids == {2} and c[2].membership.voter_ids == {1, 2}
    c.heal()
    await_leader(c)
    c.tick_all(5 * ELECTION)
    assert c[2].membership.voter_ids == {2} and c[2].commit_index >= removal
    assert c.leaders() == [2] and c[1].role is Role.FOLLOWER


def test_a_leader_removing_itself_from_two_commits_before_the_other_node_campaigns() -> None:
    """The other node is the only voter of the new configuration as soon as it appends it, before
    the change commits; campaigning at once (the single-voter shortcut) would depose the leader
    before it learned of the commit, leaving the caller of the removal without an answer."""
    c = Cluster(2, seed=74)
    c.elect(1)
    c.stabilize()
    removal, _ = c[1].remove_member(1)
    c.collect([1])
    c.deliver_queue(lambda m: m.dst == 2)
    c.collect([2], persist=False)  # node 2 holds the new configuration, its fsync still running
    c.tick(2)
    assert c[2].role is Role.FOLLOWER and c[2].leader_id == 1
    c.stabilize()
    for _ in range(6 * ELECTION):
        c.tick_all()
    assert c[1].commit_index >= removal  # the leader saw its removal commit
    assert role_of(c[2]) is Role.LEADER and c[2].membership.voter_ids == {2}

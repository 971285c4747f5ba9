"""The Raft protocol as a pure state machine (sans-I/O, in the manner of etcd's raft.go and h11).

The core owns every Raft rule and nothing else: callers feed it messages
(``step``), time (``tick``) and requests (``propose``, ``forward``,
``read_index``, ``transfer_leadership``), report durability (``persisted``) and
drain the effects with ``ready()``. It never touches sockets, clocks, files or
global randomness, so a seeded simulation replays it exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import Enum

from pyraft.core.config import Config
from pyraft.core.errors import ConfigChangeInProgress, NoLeader, NotLeader, TransferInProgress
from pyraft.core.log import RaftLog
from pyraft.core.membership import Member, Membership
from pyraft.core.messages import (
    TERM_NEUTRAL,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ProposeRequest,
    ProposeResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from pyraft.core.progress import Progress
from pyraft.core.readindex import PendingRead, ReadQueue
from pyraft.core.ready import ProposalAccepted, ReadState, Ready, RequestFailed, SnapshotRef, SnapshotSend

# Reasons carried by RequestFailed.
NOT_LEADER = "not_leader"  # definite: the request was not taken
LEADER_CHANGED = "leader_changed"  # a forwarded proposal's outcome is unknown; a read simply failed


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class RaftCore:
    def __init__(
        self,
        config: Config,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotRef | None = None,
        membership: Membership | None = None,
    ) -> None:
        """Recover from durable state: the hard state, the latest snapshot (with the membership
        it holds) and the log after it. Without a snapshot, ``config.voters`` bootstrap the quorum."""
        self.config = config
        self.node_id = config.node_id
        self._rng = rng
        base = snapshot or SnapshotRef(0, 0)
        self.log = RaftLog(entries, base.index, base.term)
        hard_state = hard_state or HardState()
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self._emitted_hard_state = hard_state
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        # A snapshot holds only committed, applied state.
        self.commit_index = base.index
        self.applied_index = base.index
        self._snapshot = snapshot  # the newest snapshot the caller can send to a follower
        self._installing: SnapshotRef | None = None  # follower: last chunk handed out, not yet stored
        self._base_membership = membership or Membership.of_ids(config.voters)
        # CONFIG entries in the log above the snapshot: (index, term, membership), in index order.
        self._configs: list[tuple[int, int, Membership]] = []
        self._track_configs(self.log.slice(self.log.first_index, self.log.last_index + 1))
        self.membership = self._base_membership
        self._voters: frozenset[int] = frozenset()
        self._peers: tuple[int, ...] = ()
        self._voter_peers: tuple[int, ...] = ()
        self._votes: dict[int, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._progress: dict[int, Progress] = {}
        self._seq = 0
        self._verified_index = 0  # follower: last index known to match the current leader
        self._acked_index = 0  # follower: last match index reported to the leader
        self._leader_seq = 0  # follower: highest heartbeat round heard from the current leader
        self._answered_seq = -1  # follower: highest round already answered (-1: none yet)
        self._transferee: int | None = None
        self._transfer_elapsed = 0
        self._reads = ReadQueue()
        self._forwarded: dict[int, str] = {}  # follower: request_id -> "propose" | "read"
        self._out = Ready()
        self._apply_membership()
        self._reset_election_timer()

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def ticks_until_due(self) -> int | None:
        """How many more ``tick()`` calls until one acts (>= 1), or None if none ever can as things stand.

        Until then a tick only counts: the caller may call ``tick()`` that many times minus
        one without any effect but counters moving, so it need not wake up before. It
        changes with every input, so ask again after each. The exact mirror of
        ``_tick_leader`` and ``_tick_election``."""
        if self.role is Role.LEADER:
            cfg = self.config
            if not self._progress and self.node_id in self._voters:
                return None  # alone: no one to heartbeat, and a quorum of one is always active
            due = cfg.heartbeat_ticks - self._heartbeat_elapsed
            if cfg.check_quorum:
                due = min(due, cfg.election_ticks - self._election_elapsed)
            if self._transferee is not None:
                due = min(due, cfg.election_ticks - self._transfer_elapsed)
            return max(1, due)
        if self._installing is not None or not self._may_campaign():
            return None  # the learner's lease still runs out: it is counted whenever ticks are credited
        if self._sole_voter():
            return 1
        return max(1, self._randomized_timeout - self._election_elapsed)

    def step(self, msg: Message) -> None:
        # Requests are served whatever our configuration says (thesis 4.1): a newer
        # leader or candidate may know members we have not heard of yet.
        if msg.dst != self.node_id or msg.src == self.node_id:
            return
        if not isinstance(msg, TERM_NEUTRAL) and not self._check_term(msg):
            return
        if self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command as leader; returns (index, term) it was appended at."""
        if self.role is not Role.LEADER:
            raise NoLeader() if self.leader_id is None else NotLeader(self.leader_id)
        if self._transferee is not None:
            raise TransferInProgress(f"leadership is moving to node {self._transferee}")
        return self._append_new(EntryKind.COMMAND, data)

    def forward(self, request_id: int, data: bytes) -> None:
        """Propose from any node; the outcome arrives in a later Ready."""
        if self.role is Role.LEADER:
            index, term = self.propose(data)
            self._out.proposals.append(ProposalAccepted(request_id, index, term))
            return
        leader = self._require_leader()
        self._forwarded[request_id] = "propose"
        self._send(ProposeRequest(self.node_id, leader, self.term, request_id, data))

    def read_index(self, request_id: int) -> None:
        """Start a linearizable read (thesis 6.4); the index arrives in a later Ready."""
        if self.role is Role.LEADER:
            self._queue_read(request_id, self.node_id)
            return
        leader = self._require_leader()
        self._forwarded[request_id] = "read"
        self._send(ReadIndexRequest(self.node_id, leader, self.term, request_id))

    def transfer_leadership(self, target: int | None = None) -> None:
        """Hand leadership to ``target`` (or the most caught-up follower), thesis 3.10."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if not self._voter_peers:
            return
        if target is None:
            target = max(self._voter_peers, key=lambda p: self._progress[p].match)
        if target not in self._voter_peers:
            raise ValueError(f"node {target} is not another voter")
        self._transferee = target
        self._transfer_elapsed = 0
        self._maybe_send_timeout_now()

    def add_learner(self, member: Member) -> tuple[int, int]:
        """Leader: append a configuration with ``member`` as a learner (KIP-853's observer)."""
        return self._change_membership(self.membership.with_learner(member))

    def promote_learner(self, node_id: int) -> tuple[int, int]:
        """Leader: make a learner a voter; the caller decides when it has caught up."""
        return self._change_membership(self.membership.promoted(node_id))

    def remove_member(self, node_id: int) -> tuple[int, int]:
        """Leader: drop a voter or learner; a leader removing itself steps down once it commits."""
        return self._change_membership(self.membership.without(node_id))

    def membership_at(self, index: int) -> Membership:
        """The configuration in effect once the log held entries up to ``index`` (for snapshots)."""
        if index < self.log.snapshot_index:
            raise ValueError(f"index {index} is below the log's base {self.log.snapshot_index}")
        found = [m for i, _, m in self._configs if i <= index]
        return found[-1] if found else self._base_membership

    def persisted(self, index: int, term: int) -> None:
        if not self.log.stable_to(index, term):
            return
        if self.role is Role.LEADER:
            self._maybe_commit()
        elif self.role is Role.FOLLOWER:
            self._send_ack()

    def snapshot_saved(self, index: int, term: int) -> None:
        """The caller made a durable snapshot up to (index, term); it is what lagging followers get."""
        if self._snapshot is None or index > self._snapshot.index:
            self._snapshot = SnapshotRef(index, term)

    def compact(self, index: int) -> None:
        """Drop the log up to ``index`` (applied, durable, and covered by a saved snapshot)."""
        if self._snapshot is None or index > min(self._snapshot.index, self.applied_index):
            raise ValueError(f"cannot compact to {index}: not covered by a saved, applied snapshot")
        if index > self.log.stable_index:
            raise ValueError(f"cannot compact to {index}: durable here only up to {self.log.stable_index}")
        if index <= self.log.snapshot_index:
            return
        base = self.membership_at(index)
        self.log.compact(index)
        self._base_membership = base
        self._configs = [c for c in self._configs if c[0] > index]

    def snapshot_chunk_stored(
        self, chunk: InstallSnapshot, next_offset: int, installed: Membership | None
    ) -> None:
        """Storage took a chunk from ``snapshot_writes``: it wants ``next_offset`` next, or has
        installed the whole snapshot durably (``installed`` is then the membership it holds)."""
        if chunk.done and self._installing == SnapshotRef(chunk.last_index, chunk.last_term):
            self._installing = None
        if installed is not None:
            self._restore(SnapshotRef(chunk.last_index, chunk.last_term), installed)
        if chunk.term == self.term and self.role is Role.FOLLOWER:
            self._answer_snapshot(chunk, next_offset, installed is not None)

    def ready(self) -> Ready:
        if self.role is Role.LEADER:
            self._flush_leader()
        out, self._out = self._out, Ready()
        hard_state = HardState(self.term, self.voted_for)
        if hard_state != self._emitted_hard_state:
            out.hard_state = self._emitted_hard_state = hard_state
        out.entries = self.log.take_unpersisted()
        if out.restore is not None:
            self._snapshot = max(self._snapshot or out.restore, out.restore, key=_index_of)
        if self.commit_index > self.applied_index:
            out.committed = self.log.slice(self.applied_index + 1, self.commit_index + 1)
            self.applied_index = self.commit_index
        return out

    def match_indexes(self) -> dict[int, int]:
        """The leader's matchIndex for each follower (empty unless leading), for operators."""
        if self.role is not Role.LEADER:
            return {}
        return {peer: pr.match for peer, pr in self._progress.items()}

    def has_ready(self) -> bool:
        return bool(
            self._out
            or self.log.handed_out_index < self.log.last_index
            or self.commit_index > self.applied_index
            or HardState(self.term, self.voted_for) != self._emitted_hard_state
            or (self.role is Role.LEADER and self._leader_has_output())
        )

    # ------------------------------------------------------------ membership

    def _change_membership(self, new: Membership) -> tuple[int, int]:
        if self.role is not Role.LEADER:
            raise NoLeader() if self.leader_id is None else NotLeader(self.leader_id)
        if self._configs and self._configs[-1][0] > self.commit_index:
            raise ConfigChangeInProgress(f"the change at index {self._configs[-1][0]} is not committed yet")
        if not self._committed_in_term():
            # Thesis 4.1 (the fix of its single-server bug): a new leader first commits its no-op.
            raise ConfigChangeInProgress("the leader has not committed an entry of its term yet")
        if self._transferee is not None:
            raise TransferInProgress(f"leadership is moving to node {self._transferee}")
        return self._append_new(EntryKind.CONFIG, new.encode())

    def _track_configs(self, entries: Sequence[Entry]) -> None:
        """Note CONFIG entries just placed in the log (above any tracked already)."""
        last = self._configs[-1][0] if self._configs else self.log.snapshot_index
        for entry in entries:
            if entry.kind is EntryKind.CONFIG and entry.index > last:
                self._configs.append((entry.index, entry.term, Membership.decode(entry.data)))
                last = entry.index

    def _resync_configs(self, appended: Sequence[Entry]) -> None:
        """After the log changed: forget configurations truncated away, note new ones, take effect."""
        log = self.log
        self._configs = [c for c in self._configs if c[0] > log.snapshot_index and log.matches(c[0], c[1])]
        self._track_configs(
            [e for e in appended if e.index > log.snapshot_index and log.matches(e.index, e.term)]
        )
        self._apply_membership()

    def _apply_membership(self) -> None:
        membership = self._configs[-1][2] if self._configs else self._base_membership
        self.membership = membership
        self._voters = membership.voter_ids
        self._peers = tuple(sorted(membership.ids - {self.node_id}))
        self._voter_peers = tuple(p for p in self._peers if p in self._voters)
        if self.role is Role.LEADER:
            nxt = self.log.last_index + 1
            self._progress = {p: self._progress.get(p) or Progress(next=nxt) for p in self._peers}

    def _may_campaign(self) -> bool:
        """A voter may campaign, and so may a server removed by a change not yet committed:
        a leader that stepped down mid-removal may hold the only log the others can elect."""
        if self.node_id in self._voters:
            return True
        committed = [m for i, _, m in self._configs if i <= self.commit_index]
        return self.node_id in (committed[-1] if committed else self._base_membership).voter_ids

    def _step_down_if_removed(self) -> None:
        """A leader whose removal has committed hands over and steps down (thesis 4.2.2)."""
        if self.node_id in self._voters or not self._configs or self._configs[-1][0] > self.commit_index:
            return
        caught_up = [p for p in self._voter_peers if self._progress[p].match == self.log.last_index]
        if caught_up:
            self._send(TimeoutNow(self.node_id, caught_up[0], self.term))
        self._become_follower(self.term, None)

    # ------------------------------------------------------------ term rules

    def _check_term(self, msg: Message) -> bool:
        """Apply the term rules every message obeys; False drops the message."""
        if msg.term > self.term:
            if isinstance(msg, RequestVote) and self._in_lease(msg):
                return False  # leader stickiness (thesis 4.2.3): a live leader is not disrupted
            if isinstance(msg, RequestVote) and msg.pre_vote:
                return True  # a pre-vote never moves our term
            if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                return True
            leader = msg.src if isinstance(msg, AppendEntries | TimeoutNow) else None
            self._become_follower(msg.term, leader)
            return True
        if msg.term < self.term:
            self._answer_stale(msg)
            return False
        return True

    def _in_lease(self, msg: RequestVote) -> bool:
        return (
            self.config.check_quorum
            and not msg.transfer
            and self.leader_id is not None
            and self._election_elapsed < self.config.election_ticks
        )

    def _answer_stale(self, msg: Message) -> None:
        """Tell a sender of an old term that it is behind, so a deposed leader steps down."""
        if isinstance(msg, AppendEntries):
            self._send(AppendEntriesResponse(self.node_id, msg.src, self.term, False, msg.prev_log_index))
        elif isinstance(msg, RequestVote):
            self._send(RequestVoteResponse(self.node_id, msg.src, self.term, False, msg.pre_vote))
        elif isinstance(msg, InstallSnapshot):
            self._answer_snapshot(msg, 0, False)

    # --------------------------------------------------------- role changes

    def _become_follower(self, term: int, leader: int | None) -> None:
        if self.role is Role.LEADER:
            self._fail_pending_reads()
        if term > self.term or leader != self.leader_id or self.role is not Role.FOLLOWER:
            # What we verified against the old leader says nothing about the new one's log.
            self._fail_forwarded()
            self._verified_index = self._acked_index = 0
            self._leader_seq, self._answered_seq = 0, -1
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._transferee = None
        self._reset_election_timer()

    def _campaign(self, transfer: bool = False) -> None:
        if self.config.pre_vote and not transfer:
            self._start_election(Role.PRE_CANDIDATE, self.term + 1, transfer)
        else:
            self._start_election(Role.CANDIDATE, self.term + 1, transfer)

    def _start_election(self, role: Role, term: int, transfer: bool) -> None:
        if self.role is Role.FOLLOWER:
            self._fail_forwarded()
        self.role = role
        self.leader_id = None
        if role is Role.CANDIDATE:
            self.term = term
            self.voted_for = self.node_id
        self._votes = {self.node_id: True}
        self._reset_election_timer()
        if self._quorum_reached(self._votes):
            self._won_election()
            return
        pre = role is Role.PRE_CANDIDATE
        for peer in self._voter_peers:
            self._send(
                RequestVote(self.node_id, peer, term, self.log.last_index, self.log.last_term, pre, transfer)
            )

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._start_election(Role.CANDIDATE, self.term + 1, transfer=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self._transferee = None
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        nxt = self.log.last_index + 1
        self._progress = {p: Progress(next=nxt) for p in self._peers}
        self._append_new(EntryKind.NOOP, b"")  # commits the previous terms' entries (5.4.2)
        # The next flush probes every follower with this no-op: that announces us too.

    # ------------------------------------------------------------- elections

    def _tick_election(self) -> None:
        self._election_elapsed += 1  # runs for learners too: their leader lease must expire
        if self._installing is not None or not self._may_campaign():
            return  # a node rewriting its log, or a learner, must not campaign
        if self._election_elapsed >= self._randomized_timeout or self._sole_voter():
            self._campaign()

    def _sole_voter(self) -> bool:
        """The only voter, with no leader known, has no one to wait for or split a vote with, so it
        campaigns at its first tick (as KRaft's QuorumState does at startup) instead of sitting out
        a whole timeout: a restarted single-node quorum serves 150-300 ms sooner.

        Not while it follows a leader: a leader removing itself from a quorum of two makes the
        other node the only voter before the change commits, and a campaign then would depose
        the leader before it learns of the commit and answers the caller."""
        return self.leader_id is None and not self._voter_peers and self.node_id in self._voters

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        low = self.config.election_ticks
        self._randomized_timeout = self._rng.randrange(low, 2 * low)

    def _on_request_vote(self, msg: RequestVote) -> None:
        up_to_date = self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            granted = up_to_date and msg.term > self.term
            term = msg.term if granted else self.term
        else:
            free = self.voted_for in (None, msg.src)
            granted = up_to_date and free and msg.term == self.term and self.role is not Role.LEADER
            term = self.term
            if granted:
                self.voted_for = msg.src
                self._election_elapsed = 0
        self._send(RequestVoteResponse(self.node_id, msg.src, term, granted, msg.pre_vote))

    def _on_vote_response(self, msg: RequestVoteResponse) -> None:
        expect_pre = self.role is Role.PRE_CANDIDATE
        if msg.pre_vote != expect_pre:
            return
        self._votes[msg.src] = msg.granted
        if self._quorum_reached(self._votes):
            self._won_election()
        elif (
            sum(1 for n, ok in self._votes.items() if not ok and n in self._voters) >= self.membership.quorum
        ):
            self._become_follower(self.term, None)

    def _quorum_reached(self, votes: dict[int, bool]) -> bool:
        return sum(1 for n, ok in votes.items() if ok and n in self._voters) >= self.membership.quorum

    # ------------------------------------------------------ follower / candidate

    def _step_follower(self, msg: Message) -> None:
        match msg:
            case AppendEntries():
                self._on_append(msg)
            case InstallSnapshot():
                self._on_install_snapshot(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case TimeoutNow() if msg.src == self.leader_id:
                self._campaign(transfer=True)
            case ProposeRequest() | ReadIndexRequest():
                self._refuse_forward(msg)
            case ProposeResponse() | ReadIndexResponse():
                self._on_forward_response(msg)
            case _:
                pass

    def _step_candidate(self, msg: Message) -> None:
        match msg:
            case AppendEntries():
                self._become_follower(self.term, msg.src)
                self._on_append(msg)
            case InstallSnapshot():
                self._become_follower(self.term, msg.src)
                self._on_install_snapshot(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case RequestVoteResponse():
                self._on_vote_response(msg)
            case ProposeRequest() | ReadIndexRequest():
                self._refuse_forward(msg)
            case _:
                pass

    def _on_append(self, msg: AppendEntries) -> None:
        self.leader_id = msg.src
        self._reset_election_timer()
        if self._installing is not None:
            return  # the log is about to be replaced; the leader will ask again
        ok = self.log.try_append(msg.prev_log_index, msg.prev_log_term, msg.entries, self.commit_index)
        if not ok:
            self._reject_append(msg)
            return
        if self._configs or any(e.kind is EntryKind.CONFIG for e in msg.entries):
            self._resync_configs(msg.entries)
        self._verified_index = max(self._verified_index, msg.prev_log_index + len(msg.entries))
        self._leader_seq = max(self._leader_seq, msg.seq)
        self.commit_index = max(self.commit_index, min(msg.leader_commit, self._verified_index))
        if not msg.entries:
            # A new round (heartbeat, ReadIndex) is always answered; a bare commit
            # notice within a round already answered needs no reply.
            self._send_ack(force=msg.seq > self._answered_seq)
        elif self.log.stable_index >= self._verified_index:
            self._send_ack(force=True)  # all durable already: a resent probe, answer it now

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        self.leader_id = msg.src
        self._reset_election_timer()
        if self._installing is not None:
            return  # one install at a time; the leader resends what goes unanswered
        if msg.last_index <= self.commit_index:
            self._answer_snapshot(msg, 0, True)  # committed entries are in every leader's log, ours too
            return
        if msg.done:
            self._installing = SnapshotRef(msg.last_index, msg.last_term)
        self._out.snapshot_writes.append(msg)

    def _answer_snapshot(self, chunk: InstallSnapshot, next_offset: int, installed: bool) -> None:
        last_index, last_term = chunk.last_index, chunk.last_term
        reply = InstallSnapshotResponse(
            self.node_id, chunk.src, self.term, last_index, last_term, next_offset, installed
        )
        self._send(reply)

    def _restore(self, snapshot: SnapshotRef, membership: Membership) -> None:
        """Take an installed snapshot as our log's base (Figure 13, receiver steps 6-8)."""
        if snapshot.index <= self.log.snapshot_index:
            return
        self.log.restore(snapshot.index, snapshot.term)
        self._base_membership = membership
        self._resync_configs(())
        self.commit_index = max(self.commit_index, snapshot.index)
        # Committed entries match every leader's log, so the snapshot is verified too.
        self._verified_index = max(self._verified_index, snapshot.index)
        self._acked_index = max(self._acked_index, snapshot.index)
        if self.applied_index < snapshot.index:
            self.applied_index = snapshot.index
            self._out.restore = snapshot

    def _reject_append(self, msg: AppendEntries) -> None:
        prev = msg.prev_log_index
        if prev > self.log.last_index:
            hint_index, hint_term = self.log.last_index + 1, 0
        else:
            hint_term = self.log.term_at(prev)
            hint_index = self.log.first_index_of_term(hint_term)
        self._send(
            AppendEntriesResponse(
                self.node_id, msg.src, self.term, False, prev, hint_index, hint_term, msg.seq
            )
        )

    def _send_ack(self, force: bool = False) -> None:
        """Report the durable, verified prefix; entries are never acknowledged before fsync."""
        if self.leader_id is None:
            return
        match = min(self.log.stable_index, self._verified_index)
        if match <= self._acked_index and not force:
            return
        self._acked_index = max(self._acked_index, match)
        self._answered_seq = self._leader_seq
        self._send(
            AppendEntriesResponse(self.node_id, self.leader_id, self.term, True, match, seq=self._leader_seq)
        )

    def _refuse_forward(self, msg: ProposeRequest | ReadIndexRequest) -> None:
        kind = ProposeResponse if isinstance(msg, ProposeRequest) else ReadIndexResponse
        self._send(kind(self.node_id, msg.src, self.term, msg.request_id, False, leader_hint=self.leader_id))

    def _on_forward_response(self, msg: ProposeResponse | ReadIndexResponse) -> None:
        if self._forwarded.pop(msg.request_id, None) is None:
            return
        if not msg.ok:
            self._out.failed.append(RequestFailed(msg.request_id, NOT_LEADER, msg.leader_hint))
        elif isinstance(msg, ProposeResponse):
            self._out.proposals.append(ProposalAccepted(msg.request_id, msg.index, msg.entry_term))
        else:
            self._out.read_states.append(ReadState(msg.request_id, msg.read_index))

    def _fail_forwarded(self) -> None:
        for request_id in self._forwarded:
            self._out.failed.append(RequestFailed(request_id, LEADER_CHANGED))
        self._forwarded.clear()

    def _require_leader(self) -> int:
        if self.leader_id is None:
            raise NoLeader()
        return self.leader_id

    # ------------------------------------------------------------------ leader

    def _step_leader(self, msg: Message) -> None:
        match msg:
            case AppendEntriesResponse():
                self._on_append_response(msg)
            case InstallSnapshotResponse():
                self._on_snapshot_response(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case ProposeRequest():
                self._on_propose_request(msg)
            case ReadIndexRequest():
                self._queue_read(msg.request_id, msg.src)
            case _:
                pass

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self._transferee = None  # thesis 3.10: abort a transfer that takes too long
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)
                return
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = (self.node_id in self._voters) + sum(
            1 for p in self._voter_peers if self._progress[p].recent_active
        )
        for pr in self._progress.values():
            pr.recent_active = False
        return active >= self.membership.quorum

    def _append_new(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        entry = Entry(self.log.last_index + 1, self.term, kind, data)
        if kind is EntryKind.CONFIG:
            # In effect before it is appended, so a new member's first probe carries it.
            self._track_configs((entry,))
            self._apply_membership()
        self.log.append((entry,))
        if not self._voter_peers:
            self._maybe_commit()
        return entry.index, entry.term

    def _on_propose_request(self, msg: ProposeRequest) -> None:
        if self._transferee is not None:
            self._send(ProposeResponse(self.node_id, msg.src, self.term, msg.request_id, False))
            return
        index, term = self._append_new(EntryKind.COMMAND, msg.data)
        self._send(ProposeResponse(self.node_id, msg.src, self.term, msg.request_id, True, index, term))

    def _on_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return  # no longer a member
        pr.recent_active = True
        pr.acked_seq = max(pr.acked_seq, msg.seq)
        if msg.success:
            if pr.acknowledge(msg.match_index):
                self._maybe_commit()
            if pr.snapshot is not None and pr.match >= self.log.snapshot_index:
                pr.become_probe(pr.match + 1)  # caught up some other way: the log serves it again
            elif pr.probing and pr.snapshot is None and msg.match_index >= pr.next - 1:
                pr.become_replicate()  # the probe found where our logs agree
            self._maybe_send_timeout_now()
        elif pr.snapshot is None and msg.seq >= pr.floor_seq:
            self._on_append_rejected(pr, msg)
        self._release_reads()

    def _on_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if msg.installed:
            if pr.acknowledge(msg.last_index):
                self._maybe_commit()
            if pr.snapshot is not None and pr.match >= pr.snapshot[0]:
                pr.become_probe(pr.match + 1)
                # Rejections already on their way were about the log the snapshot replaced:
                # a new round tells them from answers to what we send from now on.
                self._seq += 1
                pr.floor_seq = self._seq
            self._maybe_send_timeout_now()
        elif pr.snapshot == (msg.last_index, msg.last_term):
            pr.snapshot_offset = msg.next_offset
            pr.paused = False
            pr.stalled_ticks = 0

    def _on_append_rejected(self, pr: Progress, msg: AppendEntriesResponse) -> None:
        rejected = msg.match_index
        if pr.probing and rejected > pr.next - 1:
            return  # answer to a probe from before nextIndex last moved down
        if rejected < pr.match:
            return  # an old rejection, overtaken by later acknowledgements
        # Anything else says the follower lacks entry ``rejected``: a probe, or a heartbeat
        # anchored above what it holds (the way a new member or one below the snapshot is found).
        hint = self._next_from_hint(msg)
        if hint <= pr.match:
            # The follower lost entries it had acknowledged (e.g. a corrupt tail
            # truncated on restart). Only lowers our estimate: never unsafe.
            pr.match = hint - 1
        pr.become_probe(hint)

    def _next_from_hint(self, msg: AppendEntriesResponse) -> int:
        """Skip a whole conflicting term at once (thesis 5.4.2 optimization)."""
        hint = min(msg.conflict_index, msg.match_index)
        if msg.conflict_term > 0:
            last = self.log.last_index_of_term(msg.conflict_term, msg.match_index)
            if last is not None and last >= msg.conflict_index:
                hint = last + 1
        return max(hint, 1)

    def _maybe_commit(self) -> None:
        """Commit the highest index stored on a quorum, if it is of this term (Figure 8)."""
        matches = [self._progress[p].match for p in self._voter_peers]
        if self.node_id in self._voters:
            matches.append(self.log.stable_index)
        matches.sort(reverse=True)
        candidate = matches[self.membership.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            self.commit_index = candidate
            self._admit_reads_waiting_commit()
            self._step_down_if_removed()

    def _maybe_send_timeout_now(self) -> None:
        target = self._transferee
        if target is not None and self._progress[target].match == self.log.last_index:
            self._send(TimeoutNow(self.node_id, target, self.term))

    def _broadcast_heartbeat(self) -> None:
        self._seq += 1
        for peer, pr in self._progress.items():
            if pr.snapshot is not None:
                self._check_snapshot_stall(pr)
            elif pr.probing:
                pr.paused = False
            elif pr.inflight:
                pr.stalled_ticks += self.config.heartbeat_ticks
                if pr.stalled_ticks >= 2 * self.config.heartbeat_ticks:
                    pr.become_probe(pr.match + 1)  # the pipeline seems lost: probe again
            # Always empty, so a follower answers at once: CheckQuorum and ReadIndex never
            # wait on a follower's fsync. A probe due now goes out with the next flush.
            self._send_empty_append(peer, pr)

    def _check_snapshot_stall(self, pr: Progress) -> None:
        """Resend a chunk that went unanswered for two heartbeats; restart an outdated snapshot."""
        if not pr.paused:
            return
        pr.stalled_ticks += self.config.heartbeat_ticks
        if pr.stalled_ticks < 2 * self.config.heartbeat_ticks:
            return
        pr.stalled_ticks = 0
        pr.paused = False
        latest = self._snapshot
        if latest is not None and pr.snapshot != (latest.index, latest.term):
            pr.become_snapshot((latest.index, latest.term))  # the old file may be gone

    def _flush_leader(self) -> None:
        """Send what accumulated during this batch of inputs: entries, commit, read rounds."""
        if self._reads.round_wanted:
            self._reads.round_wanted = False
            self._seq += 1  # a fresh round, sent after every read now waiting (thesis 6.4 step 3)
            for peer, pr in self._progress.items():
                self._send_empty_append(peer, pr)
        for peer, pr in self._progress.items():
            sent = False
            while self._send_append(peer, pr, require_entries=True):
                sent = True
            if not sent and pr.sent_commit < self.commit_index and not pr.inflight:
                self._send_empty_append(peer, pr)  # answers to messages in flight will flush again

    def _leader_has_output(self) -> bool:
        if self._reads.round_wanted:
            return True
        return any(
            (pr.next <= self.log.last_index and pr.can_send(self.config.max_inflight))
            or (pr.snapshot is not None and not pr.paused)
            or (pr.sent_commit < self.commit_index and not pr.inflight)
            for pr in self._progress.values()
        )

    def _send_append(self, peer: int, pr: Progress, require_entries: bool = False) -> bool:
        if not pr.can_send(self.config.max_inflight):
            return False
        if pr.snapshot is None and pr.next <= self.log.snapshot_index and self._snapshot is not None:
            pr.become_snapshot((self._snapshot.index, self._snapshot.term))  # its next entries are compacted
        if pr.snapshot is not None:
            self._send_snapshot_chunk(peer, pr)
            return True
        cfg = self.config
        entries = self.log.batch(pr.next, cfg.max_entries_per_message, cfg.max_bytes_per_message)
        if not entries and (require_entries or not pr.probing):
            return False
        prev = pr.next - 1
        self._send_append_message(peer, pr, prev, entries)
        pr.sent(entries[-1].index if entries else prev)
        return True

    def _send_snapshot_chunk(self, peer: int, pr: Progress) -> None:
        assert pr.snapshot is not None
        snapshot = SnapshotRef(*pr.snapshot)
        self._out.snapshot_sends.append(SnapshotSend(peer, self.term, snapshot, pr.snapshot_offset))
        pr.paused = True  # one chunk in flight
        pr.stalled_ticks = 0

    def _send_empty_append(self, peer: int, pr: Progress) -> None:
        """A heartbeat anchored at matchIndex, which the follower is known to hold.

        Below the log's start (the follower awaits a snapshot) it is anchored at
        the snapshot: a follower without it rejects, which still confirms the term."""
        anchor = max(pr.match, self.log.snapshot_index)
        self._send_append_message(peer, pr, min(anchor, self.log.last_index), ())

    def _send_append_message(self, peer: int, pr: Progress, prev: int, entries: tuple[Entry, ...]) -> None:
        term = self.log.term_at(prev)
        commit = self.commit_index
        self._send(AppendEntries(self.node_id, peer, self.term, prev, term, entries, commit, self._seq))
        pr.sent_commit = commit

    # ------------------------------------------------------------ ReadIndex

    def _queue_read(self, request_id: int, origin: int) -> None:
        read = PendingRead(request_id, origin, self.commit_index, self._seq + 1)
        if not self._voter_peers and self._committed_in_term():
            self._complete_read(read)  # a quorum of one confirms itself
            return
        self._reads.admit(read, committed_in_term=self._committed_in_term())

    def _committed_in_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

    def _admit_reads_waiting_commit(self) -> None:
        if not self._reads.before_commit or not self._committed_in_term():
            return
        self._reads.admit_waiting(self.commit_index, self._seq + 1)
        if not self._voter_peers:
            for read in self._reads.confirmed(self._seq + 1):
                self._complete_read(read)

    def _release_reads(self) -> None:
        if not self._reads.pending:
            return
        acked = [self._progress[p].acked_seq for p in self._voter_peers]
        if self.node_id in self._voters:
            acked.append(self._seq)
        acked.sort(reverse=True)
        for read in self._reads.confirmed(acked[self.membership.quorum - 1]):
            self._complete_read(read)

    def _complete_read(self, read: PendingRead) -> None:
        if read.origin == self.node_id:
            self._out.read_states.append(ReadState(read.request_id, read.index))
        else:
            msg = ReadIndexResponse(self.node_id, read.origin, self.term, read.request_id, True, read.index)
            self._send(msg)

    def _fail_pending_reads(self) -> None:
        for read in self._reads.take_all():
            if read.origin == self.node_id:
                self._out.failed.append(RequestFailed(read.request_id, LEADER_CHANGED))
            else:
                self._send(ReadIndexResponse(self.node_id, read.origin, self.term, read.request_id, False))

    # --------------------------------------------------------------- output

    def _send(self, msg: Message) -> None:
        self._out.messages.append(msg)


def _index_of(snapshot: SnapshotRef) -> int:
    return snapshot.index

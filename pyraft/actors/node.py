"""A Raft node: the core's owner task and the actors around it, in one nursery.

The raft loop is the only task that touches the core. Everything else talks
to it through the inbox channel (peer messages, timer wake-ups, persisted notices,
client requests) and gets effects back as data: messages go to the transport,
entries to the storage actor, committed entries to the applier. Time reaches the
core as ticks the raft loop credits itself (actors/timer.py).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import trio

from pyraft.actors.applier import Applied, Applier, ProposalLost, ProposalWaiter
from pyraft.actors.events import (
    MembershipCmd,
    Persisted,
    ProposeCmd,
    ProposeManyCmd,
    ReadCmd,
    SnapshotSaved,
    SnapshotStored,
    TimerWake,
    TransferCmd,
)
from pyraft.actors.heap import freeze_heap
from pyraft.actors.snapshots import SnapshotPolicy, Snapshotter
from pyraft.actors.storage import StorageActor, membership_of
from pyraft.actors.timer import TickClock, Timer
from pyraft.channels import hand_over
from pyraft.core.config import Config
from pyraft.core.errors import NotLeader, RaftError, RequestLost
from pyraft.core.membership import Member, Membership, MembershipError
from pyraft.core.messages import Entry, InstallSnapshot, Message
from pyraft.core.raft import LEADER_CHANGED, RaftCore, Role
from pyraft.core.ready import Ready, SnapshotRef, SnapshotSend
from pyraft.statemachine import StateMachine
from pyraft.storage.base import Storage
from pyraft.storage.snapshot import SnapshotMeta
from pyraft.transport.base import ClientHandler, Transport

log = logging.getLogger("pyraft.node")

INBOX_SIZE = 65536
MAX_EVENTS_PER_BATCH = 4096
SNAPSHOT_SENDS_QUEUED = 64  # chunk requests waiting to be read; more are dropped (the core resends)


class OutcomeUnknown(RaftError):
    """A forwarded proposal lost track of its leader: it may or may not be applied."""


class CatchUpTimeout(RaftError):
    """A new member did not catch up with the leader in time; it stays a learner."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock settings, turned into core ticks here (the core only counts ticks).

    ``tick_ms`` is the core's unit of time: the resolution of its timers. It is not a
    wake-up rate: a node wakes only when a timer can fire (actors/timer.py)."""

    tick_ms: float = 10.0
    election_timeout_ms: float = 150.0  # the timeout is drawn from [this, 2 * this)
    heartbeat_ms: float = 50.0

    def ticks(self) -> tuple[int, int]:
        election = max(2, round(self.election_timeout_ms / self.tick_ms))
        heartbeat = max(1, round(self.heartbeat_ms / self.tick_ms))
        if heartbeat >= election:
            raise ValueError("the heartbeat interval must be shorter than the election timeout")
        return election, heartbeat


@dataclass(slots=True)
class _Request:
    """One caller's requests (one, or a batch): ``done`` is set once every slot is settled."""

    done: trio.Event
    values: list[Any]
    errors: list[Exception | None]
    remaining: int

    @staticmethod
    def of(size: int) -> _Request:
        return _Request(trio.Event(), [None] * size, [None] * size, size)


class RaftNode:
    def __init__(
        self,
        node_id: int,
        voters: tuple[int, ...],
        storage: Storage,
        transport: Transport,
        state_machine: StateMachine,
        *,
        timing: Timing | None = None,
        rng: random.Random | None = None,
        offload_io: bool = True,
        snapshots: SnapshotPolicy | None = None,
        addresses: Mapping[int, str] | None = None,
    ) -> None:
        """``voters`` (with their raft ``addresses``) bootstrap the quorum until the log or a
        snapshot holds a configuration; a node outside them starts as an observer."""
        hard_state, entries, report = storage.load()
        self.recovery = report
        timing = timing or Timing()
        election, heartbeat = timing.ticks()
        config = Config(node_id, voters, election_ticks=election, heartbeat_ticks=heartbeat)
        base, membership = _restore_at_start(storage, state_machine)
        # Our own address book wins over addresses in configurations from other nodes:
        # they are as those nodes dial each other (behind proxies, NAT, other names).
        self._addresses = dict(addresses or {})
        if membership is None:
            known = self._addresses
            membership = Membership(tuple(Member(v, known.get(v, "")) for v in sorted(voters)))
        self.core = RaftCore(config, rng or random.Random(), hard_state, entries, base, membership)
        self.node_id = node_id
        self.timing = timing
        self.transport = transport
        self.storage = StorageActor(storage, offload=offload_io)
        self.applier = Applier(state_machine, self.storage.read_snapshot, offload=offload_io)
        self.applier.applied_index = self.core.applied_index
        self.state_machine = state_machine
        self.snapshotter = Snapshotter(self, snapshots or SnapshotPolicy(), base, offload=offload_io)
        self._requests: dict[int, tuple[_Request, int]] = {}  # request id -> (request, slot)
        self._ids = itertools.count(1)
        self._inbox_send, self._inbox = trio.open_memory_channel[object](INBOX_SIZE)
        self._to_apply, self._apply_batches = trio.open_memory_channel[list[Entry] | SnapshotRef](INBOX_SIZE)
        self._to_send_snapshot, self._snapshot_sends = trio.open_memory_channel[SnapshotSend](
            SNAPSHOT_SENDS_QUEUED
        )
        self.role_changed = trio.Event()  # replaced on every change; for waiting in tests and shutdown
        self.progressed = trio.Event()  # replaced after every Ready: wake-up for condition waiters
        self.membership_changed = trio.Event()  # replaced on every change of core.membership
        self._last_role = (self.core.role, self.core.leader_id, self.core.term)
        self._last_membership: tuple[Membership, int | None] | None = None
        self._timer = Timer(timing.tick_ms / 1000)
        self._clock: TickClock | None = None  # set when run() starts: it reads trio's clock

    # ---------------------------------------------------------------- running

    async def run(
        self,
        client_handler: ClientHandler | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            inbox = cast(trio.MemorySendChannel[Message], self._inbox_send)
            await nursery.start(self.transport.run, inbox, client_handler)
            nursery.start_soon(self.storage.run, self._inbox_send.clone())
            nursery.start_soon(self.applier.run, self._apply_batches)
            nursery.start_soon(self._send_snapshot_chunks)
            nursery.start_soon(self.snapshotter.run, self._inbox_send.clone())
            self._clock = TickClock(self._timer.interval, trio.current_time())
            self._timer.on_late = self._clock.running_late
            self._timer.plan(self._clock.deadline(self.core))
            nursery.start_soon(self._timer.run, self._inbox_send)
            nursery.start_soon(self._raft_loop)
            task_status.started()

    async def _raft_loop(self) -> None:
        clock = self._clock
        assert clock is not None
        async for event in self._inbox:
            # Ticks elapsed before these inputs come before them (a heartbeat must reset a
            # follower's timer after the time that passed, not before). Once per batch: every
            # input drained here was queued before the batch began (only this task runs meanwhile).
            now = trio.current_time()
            if now >= clock.next_at:
                clock.credit(self.core, now)
            self._handle(event)
            self._drain()
            # Let the tasks that are runnable now (client requests, peer readers) add
            # their events first: one Ready then carries many proposals, and one
            # AppendEntries per follower carries them all.
            await trio.lowlevel.cancel_shielded_checkpoint()
            now = trio.current_time()
            if now >= clock.next_at:
                clock.credit(self.core, now)
            self._drain()
            await self._process_ready()
            self._timer.plan(clock.deadline(self.core))

    def _drain(self) -> None:
        for _ in range(MAX_EVENTS_PER_BATCH):
            try:
                self._handle(self._inbox.receive_nowait())
            except trio.WouldBlock:
                return

    def _handle(self, event: object) -> None:
        core = self.core
        match event:
            case TimerWake(late=late):
                assert self._clock is not None
                self._clock.wake(core, trio.current_time(), late)
            case Persisted(index=index, term=term):
                core.persisted(index, term)
            case SnapshotStored(chunk=chunk, next_offset=next_offset, installed=installed):
                core.snapshot_chunk_stored(chunk, next_offset, installed)
            case SnapshotSaved(index=index, term=term, compact_to=compact_to):
                core.snapshot_saved(index, term)
                core.compact(compact_to)
            case ProposeCmd(request_id=rid, data=data):
                self._guard(rid, lambda: core.forward(rid, data))
            case ProposeManyCmd(items=items):
                for rid, data in items:
                    try:
                        core.forward(rid, data)
                    except (RaftError, ValueError) as exc:
                        self._finish(rid, error=exc)
            case ReadCmd(request_id=rid):
                self._guard(rid, lambda: core.read_index(rid))
            case MembershipCmd(request_id=rid, change=change):
                try:
                    index, term = change(core)
                except (RaftError, ValueError) as exc:
                    self._finish(rid, error=exc)
                else:
                    self._finish(rid, value=self.applier.watch_proposal(index, term))
            case TransferCmd(request_id=rid, target=target):
                if self._guard(rid, lambda: core.transfer_leadership(target)):
                    self._finish(rid, value=None)
            case _:
                core.step(cast(Message, event))

    def _guard(self, request_id: int, action: Any) -> bool:
        try:
            action()
        except (RaftError, ValueError) as exc:
            self._finish(request_id, error=exc)
            return False
        return True

    async def _process_ready(self) -> None:
        """Hand out the core's Ready; again at once if its entries were stored in this step
        (``StorageActor.append_now``), so the acknowledgement they allow goes out now."""
        while await self._process_one_ready():
            pass

    async def _process_one_ready(self) -> bool:
        ready = self.core.ready()
        if ready.hard_state is not None:
            await self.storage.save_hard_state(ready.hard_state)  # before any vote or term leaves
        self._note_membership()  # a new member's outbox must exist before its first message
        for msg in ready.messages:
            self.transport.send(msg)
        for send in ready.snapshot_sends:
            with contextlib.suppress(trio.WouldBlock):
                self._to_send_snapshot.send_nowait(send)
        stored = bool(ready.entries) and self.storage.append_now(ready.entries)
        if ready.entries and not stored:
            self.storage.submit(ready.entries)
        for chunk in ready.snapshot_writes:
            self.storage.submit(chunk)
        self._settle_requests(ready)
        if ready.restore is not None:
            self.snapshotter.installed(ready.restore)
            await hand_over(self._to_apply, ready.restore)
        if ready.committed:
            await hand_over(self._to_apply, ready.committed)
        self._note_role_change()
        self.progressed.set()
        self.progressed = trio.Event()
        if stored:
            last = ready.entries[-1]
            self.core.persisted(last.index, last.term)
        return stored

    def _note_membership(self) -> None:
        """Keep the transport linked to every member, and to the leader even when it is not one:
        a leader removing itself leads until that change commits, which takes our answers."""
        seen = (self.core.membership, self.core.leader_id)
        if seen == self._last_membership:
            return
        if self._last_membership is None or self._last_membership[0] != seen[0]:
            self.membership_changed.set()
            self.membership_changed = trio.Event()
        self._last_membership = seen
        membership, leader = seen
        listed = membership.addresses().items()
        peers = {i: self._addresses.get(i) or a for i, a in listed if i != self.node_id}
        if leader is not None and leader != self.node_id and leader not in peers:
            peers[leader] = self._addresses.get(leader, "")  # empty: the transport keeps what it knew
        self.transport.update_peers(peers)

    async def _send_snapshot_chunks(self) -> None:
        """Leader side of InstallSnapshot: read each chunk the core asks for and send it."""
        size = self.snapshotter.policy.chunk_bytes
        async for send in self._snapshot_sends:
            ref = send.snapshot
            read = self.storage.storage.read_snapshot_chunk
            chunk = await self.storage.call(read, ref.index, ref.term, send.offset, size)
            if chunk is None:
                continue  # replaced by a newer snapshot: the core restarts with that one
            data, done = chunk
            msg = InstallSnapshot(
                self.node_id, send.peer, send.term, ref.index, ref.term, send.offset, data, done
            )
            self.transport.send(msg)

    def _settle_requests(self, ready: Ready) -> None:
        for accepted in ready.proposals:  # the proposer hears when it is applied, not before
            waiter = self.applier.watch_proposal(accepted.index, accepted.term)
            if waiter.event.is_set():
                self._finish(accepted.request_id, value=waiter)
            else:
                waiter.then = functools.partial(self._finish, accepted.request_id, value=waiter)
        for read in ready.read_states:
            self._finish(read.request_id, value=read.index)
        for failed in ready.failed:
            if failed.reason == LEADER_CHANGED:
                error: RaftError = OutcomeUnknown("the leader changed while the request was in flight")
            else:
                error = RequestLost(f"request refused ({failed.reason}); leader hint {failed.leader_hint}")
            self._finish(failed.request_id, error=error)

    def _note_role_change(self) -> None:
        now = (self.core.role, self.core.leader_id, self.core.term)
        if now != self._last_role:
            log.info("node %d: role %s, term %d, leader %s", self.node_id, now[0].value, now[2], now[1])
            self._last_role = now
            self.role_changed.set()
            self.role_changed = trio.Event()

    # ------------------------------------------------------------ public API

    async def propose(self, command: bytes) -> Applied:
        """Replicate ``command``; returns once it is committed and applied on this node.

        Raises NotLeader/NoLeader (definitely not applied), RequestLost (not applied),
        OutcomeUnknown (may be applied: the leader changed mid-flight)."""
        waiter = await self._request(lambda rid: ProposeCmd(rid, command))  # returns it settled
        if waiter.error is not None:
            raise _proposal_error(waiter.error) from waiter.error
        assert waiter.result is not None
        return cast(Applied, waiter.result)

    async def propose_many(
        self, commands: Sequence[bytes], out: list[Applied | Exception | None] | None = None
    ) -> list[Applied | Exception | None]:
        """Replicate several commands, in order, as one event for the raft loop.

        Returns one outcome per command, in order: its Applied, or the exception
        ``propose`` would have raised for it. Outcomes are written into ``out`` (when
        given) as they become known, so a caller that is cancelled or times out can
        still tell which commands were settled (the rest stay None)."""
        results: list[Applied | Exception | None] = [None] * len(commands) if out is None else out
        if not commands:
            return results
        request = _Request.of(len(commands))
        ids = [next(self._ids) for _ in commands]
        for slot, request_id in enumerate(ids):
            self._requests[request_id] = (request, slot)
        try:
            await hand_over(self._inbox_send, ProposeManyCmd(tuple(zip(ids, commands, strict=True))))
            await request.done.wait()  # one wake-up, once every command is applied or refused
        finally:
            for request_id in ids:
                self._requests.pop(request_id, None)
            for slot, (waiter, error) in enumerate(zip(request.values, request.errors, strict=True)):
                results[slot] = _outcome(waiter, error)
        return results

    async def read(self, query: bytes) -> bytes:
        """A linearizable read: ReadIndex through the leader, then the local state machine."""
        index = await self.read_barrier()
        del index
        return self.state_machine.query(query)

    async def read_barrier(self) -> int:
        """Wait until this node has applied everything committed before the call began."""
        index = cast(int, await self._request(ReadCmd))
        await self.applier.wait_applied(index)
        return index

    async def add_voter(self, member: Member, *, catch_up_timeout: float = 30.0) -> Membership:
        """Add a voter as KIP-853's AddRaftVoter does: it joins as a learner, catches up
        (snapshot and log), and is promoted once its matchIndex reaches the commit index.
        Every step is a committed single-server change; this node must lead throughout."""
        current = self.core.membership
        if member.node_id in current.voter_ids:
            raise MembershipError(f"node {member.node_id} is already a voter")
        if member.node_id not in current.learner_ids:
            await self._change_membership(lambda core: core.add_learner(member))
        with trio.move_on_after(catch_up_timeout) as waiting:
            while not self._caught_up(member.node_id):
                await self.progressed.wait()
        if waiting.cancelled_caught:
            lag = self.core.commit_index - self.core.match_indexes().get(member.node_id, 0)
            raise CatchUpTimeout(f"node {member.node_id} is still {lag} entries behind; it stays a learner")
        await self._change_membership(lambda core: core.promote_learner(member.node_id))
        return self.core.membership

    async def remove_voter(self, node_id: int) -> Membership:
        """Remove a voter or learner (KIP-853's RemoveRaftVoter); the leader may remove itself:
        it steps down once the change commits, handing over to a caught-up voter."""
        await self._change_membership(lambda core: core.remove_member(node_id))
        return self.core.membership

    def _caught_up(self, node_id: int) -> bool:
        core = self.core
        if core.role is not Role.LEADER:
            raise NotLeader(core.leader_id)
        return core.match_indexes().get(node_id, 0) >= core.commit_index

    async def _change_membership(self, change: Callable[[RaftCore], tuple[int, int]]) -> None:
        waiter = await self._request(lambda rid: MembershipCmd(rid, change))
        await waiter.event.wait()
        if waiter.error is not None:
            raise _proposal_error(waiter.error) from waiter.error

    async def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """This node's latest durable snapshot (meta and the state machine's bytes), if any."""
        return await self.storage.read_snapshot()

    async def transfer_leadership(self, target: int | None = None) -> None:
        await self._request(lambda rid: TransferCmd(rid, target))

    async def _request(self, make: Any) -> Any:
        request_id = next(self._ids)
        request = _Request.of(1)
        self._requests[request_id] = (request, 0)
        try:
            await hand_over(self._inbox_send, make(request_id))
            await request.done.wait()
        finally:
            self._requests.pop(request_id, None)
        error = request.errors[0]
        if error is not None:
            raise error
        return request.values[0]

    def _finish(self, request_id: int, *, value: Any = None, error: Exception | None = None) -> None:
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return  # the caller gave up (timeout or cancellation)
        request, slot = entry
        request.values[slot], request.errors[slot] = value, error
        request.remaining -= 1
        if not request.remaining:
            request.done.set()

    # --------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "nodeId": self.node_id,
            "role": "candidate" if core.role in (Role.CANDIDATE, Role.PRE_CANDIDATE) else core.role.value,
            "term": core.term,
            "leaderId": core.leader_id,
            "commitIndex": core.commit_index,
            "lastApplied": self.applier.applied_index,
            "lastLogIndex": core.log.last_index,
            "durableIndex": core.log.stable_index,
            "logStartIndex": core.log.first_index,
            "snapshotIndex": self.snapshotter.latest.index if self.snapshotter.latest else 0,
            "votedFor": core.voted_for,
        }


def _restore_at_start(
    storage: Storage, state_machine: StateMachine
) -> tuple[SnapshotRef | None, Membership | None]:
    """Restart = the latest snapshot loaded into the state machine, then the log after it replayed."""
    loaded = storage.read_snapshot()
    if loaded is None:
        return None, None
    meta, data = loaded
    state_machine.restore(data)()
    freeze_heap()
    return SnapshotRef(meta.last_index, meta.last_term), membership_of(meta)


def _outcome(waiter: ProposalWaiter | None, error: Exception | None) -> Applied | Exception | None:
    """A proposal's outcome as ``propose_many`` reports it; None while it is not settled."""
    if error is not None:
        return error
    if waiter is None:  # not settled: ``_finish`` stores a proposal's waiter once it is
        return None
    if waiter.error is not None:
        return _proposal_error(waiter.error)
    return waiter.result


def _proposal_error(error: Exception) -> RaftError:
    if isinstance(error, ProposalLost):
        return RequestLost(str(error))
    return OutcomeUnknown(str(error))

"""A simulated quorum: pure Raft cores, durable stores, a faulty network and a clock, all seeded.

Time is an integer on an event heap; ties are broken by insertion order, and
every random choice comes from generators derived from one seed, so a seed
names one exact history. After every event the cluster drains the touched
cores' ``Ready`` batches the way a real node must (hard state durable before
messages leave, entries durable only after a simulated fsync) and feeds what
it saw to the ``SafetyMonitor``.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyraft.core.config import Config
from pyraft.core.errors import RaftError
from pyraft.core.membership import Member, Membership, MembershipError
from pyraft.core.messages import Entry, HardState, InstallSnapshot, Message
from pyraft.core.raft import RaftCore, Role
from pyraft.core.ready import Ready, SnapshotRef, SnapshotSend

from .invariants import (
    InvariantViolation,
    Log,
    SafetyMonitor,
    check_durable_before_send,
    check_log_shape,
    check_read_index,
)
from .network import Network, NetworkFaults
from .snapshots import Receiver, SimSnapshot

TICK = 10  # simulated time units per logical tick
FULL_CHECK_EVERY = 250  # events between whole-state re-checks
DEFAULT_FAULT_TICKS = 450
CLIENT_TIMEOUT = 50  # ticks before a client gives up on a calm-phase proposal and resubmits it

CoreFactory = Callable[
    [Config, random.Random, HardState, Sequence[Entry], SnapshotRef | None, Membership | None], RaftCore
]


def real_core(
    config: Config,
    rng: random.Random,
    hard_state: HardState,
    entries: Sequence[Entry],
    snapshot: SnapshotRef | None,
    membership: Membership | None,
) -> RaftCore:
    return RaftCore(config, rng, hard_state, entries, snapshot, membership)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulation: the seed decides everything else."""

    seed: int
    nodes: int = 3
    fault_ticks: int = DEFAULT_FAULT_TICKS  # length of the fault phase (``--sim-steps``)
    # Liveness bounds once faults stop (a run ends as soon as liveness is reached): the calm phase
    # fails if nothing is committed, applied or stored anywhere for ``stall_ticks``, or lasts ``calm_ticks``.
    # Progress, not a fixed deadline, because a seed with one-entry messages and one in flight
    # can legitimately need thousands of ticks to drain the fault phase's backlog.
    stall_ticks: int = 400
    calm_ticks: int = 20_000
    calm_proposals: int = 5

    def replay_command(self) -> str:
        return (
            f".venv/bin/pytest tests/sim/test_simulation.py --sim-seed {self.seed} "
            f"--sim-nodes {self.nodes} --sim-steps {self.fault_ticks}"
        )


FAULTS = (
    "crash",
    "crash_leader",
    "restart",
    "split",
    "isolate_leader",
    "one_way",
    "heal",
    "transfer",
    "reconfigure",
)


@dataclass(frozen=True, slots=True)
class Swarm:
    """Per-seed fault mix (swarm testing): one fixed mix explores one corner; varying it explores many."""

    fault_gap: tuple[int, int]  # ticks between fault actions
    weights: tuple[int, ...]  # one per FAULTS entry
    client_gap: int  # max time units between client requests
    read_ratio: float
    max_fsync: int  # max time units an fsync takes
    torn_crash: float  # chance that each pending write still lands when its node crashes
    strike_new_leader: float  # chance a fresh leader is crashed or cut off within a few ticks
    crash_on_commit: float  # chance a leader crashes right as it commits with its own tail not yet durable
    skew: int  # max ticks-period skew per node, in time units
    max_downtime: int  # ticks before a crashed node is restarted by its supervisor
    max_partition: int  # ticks before a partition heals by itself
    snapshot_every: int  # applied entries between a node's snapshots (0: never)
    snapshot_delay: int  # max time units a snapshot takes to write (a crash may cut it short)
    chunk_size: int  # bytes per InstallSnapshot chunk

    @staticmethod
    def draw(rng: random.Random) -> Swarm:
        weights = tuple(rng.choice((0, 1, 2, 4)) for _ in FAULTS)
        if weights[FAULTS.index("restart")] == 0:
            weights = tuple(w if f != "restart" else 2 for f, w in zip(FAULTS, weights, strict=True))
        return Swarm(
            fault_gap=rng.choice(((1, 8), (5, 40), (20, 80))),
            weights=weights,
            client_gap=rng.choice((10, 30, 100)),
            read_ratio=rng.choice((0.0, 0.2, 0.5)),
            max_fsync=rng.choice((2, 20, 60)),
            torn_crash=rng.choice((0.0, 0.5)),
            strike_new_leader=rng.choice((0.0, 0.0, 0.3, 0.7)),
            crash_on_commit=rng.choice((0.0, 0.0, 0.02, 0.1)),
            skew=rng.choice((1, 1, 3)),
            max_downtime=rng.choice((20, 100)),
            max_partition=rng.choice((20, 100)),
            snapshot_every=rng.choice((0, 3, 10, 40)),
            snapshot_delay=rng.choice((1, 30, 200)),
            chunk_size=rng.choice((64, 512, 1 << 16)),
        )


@dataclass(frozen=True, slots=True)
class CoreOptions:
    """Per-seed core configuration: batching, pipelining and election features reach different code."""

    pre_vote: bool
    check_quorum: bool
    election_ticks: int
    heartbeat_ticks: int
    max_inflight: int
    max_entries_per_message: int
    max_bytes_per_message: int

    @staticmethod
    def draw(rng: random.Random) -> CoreOptions:
        return CoreOptions(
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            election_ticks=rng.choice((10, 15)),
            heartbeat_ticks=rng.choice((2, 5)),
            max_inflight=rng.choice((1, 4, 32)),
            max_entries_per_message=rng.choice((1, 3, 4096)),
            max_bytes_per_message=rng.choice((64, 1 << 20)),
        )

    def config(self, node_id: int, voters: tuple[int, ...]) -> Config:
        return Config(
            node_id=node_id,
            voters=voters,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_inflight=self.max_inflight,
            max_entries_per_message=self.max_entries_per_message,
            max_bytes_per_message=self.max_bytes_per_message,
        )


class SimulationFailure(AssertionError):
    """A run failed; the message says how to replay it."""


@dataclass(slots=True)
class ClientOp:
    """A client request; calm-phase ops are retried until applied everywhere (the liveness goal)."""

    op_id: int
    data: bytes
    calm: bool
    done: bool = False
    attempt: int = 0  # a retry or timeout only acts if no newer attempt was made since


@dataclass(slots=True)
class Store:
    """What survives a crash: the hard state, the latest snapshot and the fsynced log after it."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SimSnapshot = field(default_factory=lambda: SimSnapshot(0, 0, ()))
    entries: list[Entry] = field(default_factory=list)  # indexes snapshot.index + 1, ...

    def full(self) -> list[Entry]:
        """The whole durable log as the invariants see it: the snapshot's prefix, then the log."""
        return [*self.snapshot.entries, *self.entries]

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot.index:
            return self.snapshot.term
        position = index - self.snapshot.index - 1
        return self.entries[position].term if 0 <= position < len(self.entries) else None


@dataclass(slots=True)
class SimNode:
    """One server: its store survives crashes, everything else is per incarnation."""

    node_id: int
    config: Config
    rng: random.Random
    store: Store = field(default_factory=Store)
    core: RaftCore | None = None
    incarnation: int = 0
    writes: deque[list[Entry] | InstallSnapshot] = field(default_factory=deque)
    receiver: Receiver = field(default_factory=Receiver)
    snapshotting: bool = False
    last_write_done: int = 0
    applied: list[Entry] = field(default_factory=list)
    commit_seen: int = 0
    was_leader_in: int = -1  # term in which this incarnation was last seen leading
    proposals: dict[int, ClientOp] = field(default_factory=dict)  # forwarded, by request id
    reads: dict[int, int] = field(default_factory=dict)  # request id -> commit floor
    accepted: dict[int, list[tuple[int, ClientOp]]] = field(default_factory=dict)  # index -> (term, op)

    def reset_volatile(self) -> None:
        self.writes.clear()
        self.receiver = Receiver()
        self.snapshotting = False
        self.applied = []
        self.commit_seen = 0
        self.was_leader_in = -1
        self.proposals.clear()
        self.reads.clear()
        self.accepted.clear()


@dataclass(slots=True)
class Event:
    time: int
    kind: str
    node: int
    payload: Any = None


@dataclass(frozen=True, slots=True)
class SimResult:
    trace_hash: str
    events: int
    committed: int
    elections: int
    stats: dict[str, int]  # what the run exercised, to see that seeds are fault-rich


class Cluster:
    """Runs one seeded simulation: a fault phase, then a calm phase that must reach liveness."""

    def __init__(self, sim: SimConfig, core_factory: CoreFactory = real_core) -> None:
        self.sim = sim
        self.rng = random.Random(sim.seed)
        self.core_factory = core_factory
        self.bootstrap = tuple(range(1, sim.nodes + 1))
        self.options = CoreOptions.draw(self.rng)
        # Spare servers start as observers (not in the bootstrap voters, so they never campaign);
        # reconfiguration adds, promotes and removes any server, so configurations wander away
        # from the bootstrap set and need not overlap a fixed majority of it.
        ids = self.bootstrap + tuple(range(sim.nodes + 1, sim.nodes + 1 + self.rng.choice((1, 2))))
        self.nodes: dict[int, SimNode] = {}
        for nid in ids:
            cfg = self.options.config(nid, self.bootstrap)
            self.nodes[nid] = SimNode(nid, cfg, random.Random(self.rng.getrandbits(64)))
        self.network = Network(random.Random(self.rng.getrandbits(64)), ids, NetworkFaults.hostile(self.rng))
        self.monitor = SafetyMonitor(voters=frozenset(self.bootstrap))
        self.swarm = Swarm.draw(self.rng)
        self.skew = {nid: self.rng.randint(-self.swarm.skew, self.swarm.skew) for nid in ids}
        self.heap: list[tuple[int, int, Event]] = []  # (time, insertion counter, event): no ties
        self.seq = 0
        self.now = 0
        self.events = 0
        self.calm = False
        self.calm_ops: list[ClientOp] = []
        self.next_request = 0
        self.trace = hashlib.sha256()
        self.recent: deque[str] = deque(maxlen=30)
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------ scheduling

    def schedule(self, delay: int, kind: str, node: int = 0, payload: Any = None) -> None:
        self.seq += 1
        time = self.now + delay
        heapq.heappush(self.heap, (time, self.seq, Event(time, kind, node, payload)))

    def run(self) -> SimResult:
        """Run to liveness or fail; every failure names the seed and the replay command."""
        try:
            self._start()
            self._loop()
            self._final_check()
        except (InvariantViolation, SimulationFailure) as exc:
            raise self._failure(str(exc)) from exc
        except Exception as exc:
            raise self._failure(f"unexpected {type(exc).__name__}: {exc}") from exc
        return SimResult(
            self.trace.hexdigest(),
            self.events,
            self.monitor.max_committed,
            len(self.monitor.leaders_by_term),
            dict(sorted(self.stats.items())),
        )

    def _failure(self, what: str) -> SimulationFailure:
        recent = "\n    ".join(self.recent)
        return SimulationFailure(
            f"seed {self.sim.seed} ({self.sim.nodes} nodes), event #{self.events} at t={self.now}: {what}\n"
            f"  replay: {self.sim.replay_command()}\n  last events:\n    {recent}"
        )

    def _start(self) -> None:
        for node in self.nodes.values():
            self._boot(node)
            self.schedule(self.rng.randrange(TICK), "tick", node.node_id)
        self.schedule(self.rng.randint(1, 5) * TICK, "fault")
        self.schedule(self.rng.randint(1, 3) * TICK, "client")
        self.schedule(self.sim.fault_ticks * TICK, "calm")

    def _loop(self) -> None:
        deadline = (self.sim.fault_ticks + self.sim.calm_ticks) * TICK
        progress, progress_at = (-1, -1, -1, -1), 0
        while True:
            event = heapq.heappop(self.heap)[2]
            self.now = event.time
            if self.calm and self._progress() != progress:
                progress, progress_at = self._progress(), self.now
            if self.now > deadline or (self.calm and self.now - progress_at > self.sim.stall_ticks * TICK):
                raise SimulationFailure(
                    f"Liveness: no progress for {self.sim.stall_ticks} ticks or not live "
                    f"{self.sim.calm_ticks} ticks after faults stopped; {self._liveness_gap()}"
                )
            self.events += 1
            touched = self._dispatch(event)
            self._after_event(touched)
            if self.calm and self._live():
                return

    # ------------------------------------------------------------ events

    def _dispatch(self, event: Event) -> Sequence[int]:
        handler: Callable[[Event], Sequence[int]] = getattr(self, f"_on_{event.kind}")
        touched = handler(event)
        line = f"{event.time} {event.kind} {event.node} {self._describe(event)}"
        self.trace.update(line.encode())
        self.recent.append(line)
        return touched

    @staticmethod
    def _describe(event: Event) -> str:
        if event.kind == "deliver":
            return repr(event.payload)
        return "" if event.payload is None else str(event.payload)

    def _on_tick(self, event: Event) -> Sequence[int]:
        node = self.nodes[event.node]
        self.schedule(TICK + self.skew[node.node_id], "tick", node.node_id)
        if node.core is None:
            return ()
        node.core.tick()
        return (node.node_id,)

    def _on_deliver(self, event: Event) -> Sequence[int]:
        msg: Message = event.payload
        node = self.nodes[msg.dst]
        sender_down = self.nodes[msg.src].core is None  # a restarted sender's old messages still arrive
        if node.core is None or sender_down or not self.network.connected(msg.src, msg.dst):
            return ()
        node.core.step(msg)
        return (node.node_id,)

    def _on_fsync(self, event: Event) -> Sequence[int]:
        node = self.nodes[event.node]
        if node.core is None or event.payload != node.incarnation:
            return ()  # the write died with the crashed incarnation
        item = node.writes.popleft()
        if isinstance(item, InstallSnapshot):
            next_offset, installed = self._store_chunk(node, item)
            node.core.snapshot_chunk_stored(item, next_offset, installed.membership if installed else None)
        else:
            self._store(node, item)
            node.core.persisted(item[-1].index, item[-1].term)
        return (node.node_id,)

    def _store_write(self, node: SimNode, item: list[Entry] | InstallSnapshot) -> None:
        if isinstance(item, InstallSnapshot):
            self._store_chunk(node, item)
        else:
            self._store(node, item)

    def _store(self, node: SimNode, entries: list[Entry]) -> None:
        """Make one Ready's entries durable the way storage does: truncate at the first, then append."""
        stored, base = node.store.entries, node.store.snapshot.index
        first = entries[0].index
        if first > base + len(stored) + 1 or first <= base:
            raise InvariantViolation(
                "Ready Contract",
                f"node {node.node_id} writes from {first}, store holds {base + 1}..{base + len(stored)}",
            )
        del stored[first - base - 1 :]
        stored.extend(entries)
        self.monitor.durable_changed(first, self._durable())

    def _store_chunk(self, node: SimNode, chunk: InstallSnapshot) -> tuple[int, SimSnapshot | None]:
        """Storage's InstallSnapshot half: take the chunk; a completed snapshot replaces the log's base."""
        ref = SnapshotRef(chunk.last_index, chunk.last_term)
        next_offset, snapshot = node.receiver.accept(ref, chunk.offset, chunk.data, chunk.done)
        self.stats["snapshot_bytes_taken"] += max(0, next_offset - chunk.offset) if snapshot is None else 1
        if snapshot is None:
            return next_offset, None
        store = node.store
        if snapshot.index > store.snapshot.index:
            # Figure 13: keep the log after the snapshot only if it holds the snapshot's last entry.
            keep = store.term_at(snapshot.index) == snapshot.term
            store.entries = store.entries[snapshot.index - store.snapshot.index :] if keep else []
            store.snapshot = snapshot
            self.stats["snapshot_installed"] += 1
            self.monitor.durable_changed(1, self._durable())
        return next_offset, snapshot

    def _on_client(self, event: Event) -> Sequence[int]:
        if not self.calm:
            self.schedule(self.rng.randint(1, self.swarm.client_gap), "client")
        nid = self.rng.choice(sorted(self.nodes))
        if self.rng.random() < self.swarm.read_ratio:
            return self._read(nid)
        return self._propose(nid, ClientOp(self.next_op(), f"f{self.events}".encode(), calm=False))

    def _on_retry(self, event: Event) -> Sequence[int]:
        op, attempt = event.payload
        if op.done or op.attempt != attempt:
            return ()
        return self._propose(self.rng.choice(sorted(self.nodes)), op)

    def _on_fault(self, event: Event) -> Sequence[int]:
        if self.calm:
            return ()
        self.schedule(self.rng.randint(*self.swarm.fault_gap) * TICK, "fault")
        action = self.rng.choices(FAULTS, weights=self.swarm.weights)[0]
        self.stats[action] += 1
        fault: Callable[[], Sequence[int]] = getattr(self, f"_fault_{action}")
        return fault()

    def _on_calm(self, event: Event) -> Sequence[int]:
        """Stop all faults: heal, restart, no loss; then ask for proposals that must all commit."""
        self.calm = True
        self.network.heal()
        self.network.faults = NetworkFaults.calm()
        for node in self.nodes.values():
            if node.core is None:
                self._boot(node)
        self.schedule(TICK, "rejoin")
        for i in range(self.sim.calm_proposals):
            op = ClientOp(self.next_op(), f"calm{i}".encode(), calm=True)
            self.calm_ops.append(op)
            self.schedule(self.rng.randint(1, 30) * TICK, "retry", payload=(op, 0))
        return tuple(self.nodes)

    def next_op(self) -> int:
        self.next_request += 1
        return self.next_request

    # ------------------------------------------------------------ faults

    def _up(self) -> list[int]:
        return [nid for nid, n in sorted(self.nodes.items()) if n.core is not None]

    def _leaders(self) -> list[int]:
        return [nid for nid in self._up() if self._core(nid).role is Role.LEADER]

    def _core(self, nid: int) -> RaftCore:
        core = self.nodes[nid].core
        assert core is not None
        return core

    def _fault_crash(self, victims: Sequence[int] | None = None) -> Sequence[int]:
        up = list(victims) if victims is not None else self._up()
        if not up:
            return ()
        node = self.nodes[self.rng.choice(up)]
        self._torn_writes(node)
        node.core = None
        node.incarnation += 1
        node.reset_volatile()
        self.recent.append(f"  crash {node.node_id}")
        # Servers come back on their own (a supervisor restarts them); explicit restarts come sooner.
        self.schedule(
            self.rng.randint(1, self.swarm.max_downtime) * TICK, "revive", node.node_id, node.incarnation
        )
        return ()

    def _on_revive(self, event: Event) -> Sequence[int]:
        node = self.nodes[event.node]
        if self.calm or node.core is not None or node.incarnation != event.payload:
            return ()
        self._boot(node)
        return (node.node_id,)

    def _torn_writes(self, node: SimNode) -> None:
        """Writes in flight at a crash may still land (in order) though the core never heard of it."""
        while node.writes and self.rng.random() < self.swarm.torn_crash:
            self._store_write(node, node.writes.popleft())
            self.stats["torn_write"] += 1

    def _fault_crash_leader(self) -> Sequence[int]:
        return self._fault_crash(self._leaders())

    def _fault_restart(self) -> Sequence[int]:
        down = [nid for nid in sorted(self.nodes) if self.nodes[nid].core is None]
        if not down:
            return ()
        nid = self.rng.choice(down)
        self._boot(self.nodes[nid])
        return (nid,)

    def _boot(self, node: SimNode) -> None:
        """A new incarnation sees only what its store made durable."""
        node.reset_volatile()
        store = node.store
        snapshot = store.snapshot.ref if store.snapshot.index else None
        node.core = self.core_factory(
            node.config, node.rng, store.hard_state, tuple(store.entries), snapshot, store.snapshot.membership
        )
        node.applied = list(store.snapshot.entries)  # a restart loads the snapshot, then replays the log
        node.commit_seen = store.snapshot.index

    def _fault_split(self) -> Sequence[int]:
        ids = sorted(self.nodes)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        self.network.partition([ids[:cut], ids[cut:]])
        self._heal_later()
        self.recent.append(f"  partition {self.network.describe()}")
        return ()

    def _fault_isolate_leader(self) -> Sequence[int]:
        leaders = self._leaders()
        if not leaders:
            return self._fault_split()
        lone = self.rng.choice(leaders)
        self.network.partition([[lone], [n for n in self.nodes if n != lone]])
        self._heal_later()
        self.recent.append(f"  partition {self.network.describe()}")
        return ()

    def _fault_one_way(self) -> Sequence[int]:
        src, dst = self.rng.sample(sorted(self.nodes), 2)
        self.network.cut_one_way(src, dst)
        self._heal_later()
        self.recent.append(f"  partition {self.network.describe()}")
        return ()

    def _heal_later(self) -> None:
        """Partitions end by themselves too; a heal due to an older partition may end a newer one early."""
        self.schedule(self.rng.randint(5, self.swarm.max_partition) * TICK, "heal")

    def _on_heal(self, event: Event) -> Sequence[int]:
        return () if self.calm else self._fault_heal()

    def _fault_heal(self) -> Sequence[int]:
        self.network.heal()
        return ()

    def _fault_reconfigure(self) -> Sequence[int]:
        """Single-server membership changes while everything else goes wrong: add any non-member
        as a learner, promote a learner once caught up, remove any member (the leader too) while
        at least one voter remains. Configurations wander over all servers, spares
        included. Sometimes a second change follows at once: it must be refused until the first
        commits, or two configurations without a common majority could both decide."""
        leaders = self._leaders()
        if not leaders:
            return ()
        nid = self.rng.choice(leaders)
        core = self._core(nid)
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            self._reconfigure_step(core)
        return (nid,)

    def _reconfigure_step(self, core: RaftCore) -> None:
        membership = core.membership
        outside = sorted(set(self.nodes) - membership.ids)
        match = core.match_indexes()
        caught_up = [n for n in sorted(membership.learner_ids) if match.get(n, 0) >= core.commit_index]
        # Down to one voter, the leader too (one that steps down before its removal commits
        # may still campaign: it can hold the only log the rest can elect).
        voters = membership.voter_ids
        keep = set(voters) if len(voters) < 2 else set()
        removable = sorted(membership.ids - keep)
        steps = [s for s, c in (("add", outside), ("promote", caught_up), ("remove", removable)) if c]
        if not steps:
            return
        step = self.rng.choice(steps)
        if step == "add":
            nid = self.rng.choice(outside)
            self.stats["add_learner"] += self._try_change(lambda: core.add_learner(Member(nid)))
        elif step == "promote":
            nid = self.rng.choice(caught_up)
            self.stats["promote_learner"] += self._try_change(lambda: core.promote_learner(nid))
        else:
            nid = self.rng.choice(removable)
            self.stats["remove_member"] += self._try_change(lambda: core.remove_member(nid))

    def _restore_step(self, core: RaftCore) -> None:
        """Calm phase: one step towards a configuration with at least the bootstrap's number of
        voters. Removed servers that still believe they vote (their removal never reached them)
        come back as learners first, so they learn their place and stop campaigning."""
        membership = core.membership
        outside = sorted(set(self.nodes) - membership.ids)
        stale = [n for n in outside if self._thinks_voter(n)]
        if stale:
            self.stats["add_learner"] += self._try_change(lambda: core.add_learner(Member(stale[0])))
            return
        if len(membership.voters) >= len(self.bootstrap):
            return
        match = core.match_indexes()
        caught_up = [n for n in sorted(membership.learner_ids) if match.get(n, 0) >= core.commit_index]
        if caught_up:
            self.stats["promote_learner"] += self._try_change(lambda: core.promote_learner(caught_up[0]))
        elif not membership.learner_ids and outside:
            self.stats["add_learner"] += self._try_change(lambda: core.add_learner(Member(outside[0])))

    def _thinks_voter(self, nid: int) -> bool:
        core = self.nodes[nid].core
        return core is not None and nid in core.membership.voter_ids

    def _restored(self, core: RaftCore) -> bool:
        """The leader's configuration is committed, has enough voters and leaves no one campaigning."""
        membership = core.membership
        return (
            len(membership.voters) >= len(self.bootstrap)
            and core.membership_at(core.commit_index) == membership
            and not any(self._thinks_voter(n) for n in set(self.nodes) - membership.ids)
        )

    @staticmethod
    def _try_change(change: Callable[[], object]) -> int:
        try:
            change()
        except (RaftError, MembershipError):
            return 0  # one change at a time, or no commit in this term yet
        return 1

    def _on_rejoin(self, event: Event) -> Sequence[int]:
        """Calm phase: restore a configuration with at least the bootstrap's number of voters,
        one step at a time (all servers are up, so they all are too)."""
        self.schedule(5 * TICK, "rejoin")
        leaders = self._leaders()
        if not leaders or self._restored(self._core(leaders[0])):
            return ()
        self._restore_step(self._core(leaders[0]))
        return (leaders[0],)

    def _fault_transfer(self) -> Sequence[int]:
        leaders = self._leaders()
        if not leaders:
            return ()
        nid = self.rng.choice(leaders)
        voters = self._core(nid).membership.voter_ids
        target = self.rng.choice([None, *[n for n in sorted(voters) if n != nid]])
        with contextlib.suppress(RaftError):
            self._core(nid).transfer_leadership(target)
        return (nid,)

    # ------------------------------------------------------------ clients

    def _propose(self, nid: int, op: ClientOp) -> Sequence[int]:
        """Leader: propose directly; follower: forward. Refusals are retried only for calm ops."""
        node = self.nodes[nid]
        op.attempt += 1
        if op.calm:  # a client times out: a leader's own proposal may vanish with no word
            self.schedule(CLIENT_TIMEOUT * TICK, "retry", payload=(op, op.attempt))
        if node.core is None:
            return self._retry_later(op)
        try:
            if node.core.role is Role.LEADER:
                index, term = node.core.propose(op.data)
                self._accepted(node, op, index, term)
            else:
                request = self.next_op()
                node.core.forward(request, op.data)
                node.proposals[request] = op
        except RaftError:
            return self._retry_later(op)
        return (nid,)

    def _retry_later(self, op: ClientOp) -> Sequence[int]:
        if op.calm and not op.done:
            self.schedule(self.rng.randint(1, 3) * TICK, "retry", payload=(op, op.attempt))
        return ()

    def _read(self, nid: int) -> Sequence[int]:
        node = self.nodes[nid]
        if node.core is None:
            return ()
        request = self.next_op()
        try:
            node.core.read_index(request)
        except RaftError:
            return ()
        node.reads[request] = self.monitor.max_committed
        return (nid,)

    def _accepted(self, node: SimNode, op: ClientOp, index: int, term: int) -> None:
        """The leader took ``op`` at (index, term); it is acknowledged once applied there with that term."""
        if index <= len(node.applied):
            self._settle(node, op, node.applied[index - 1], term)
        else:
            node.accepted.setdefault(index, []).append((term, op))

    def _settle(self, node: SimNode, op: ClientOp, applied: Entry, term: int) -> None:
        if applied.term != term:
            self.stats["proposal_lost"] += 1
            self._retry_later(op)  # overwritten: definitely not applied there
            return
        if applied.data != op.data:
            raise InvariantViolation(
                "Acknowledged Proposals",
                f"node {node.node_id} accepted {op.data!r} at ({applied.index}, {term}) "
                f"but applied {applied}",
            )
        op.done = True
        self.stats["proposal_acked"] += 1
        self.monitor.acknowledge(applied, self._core(node.node_id).term)

    # ------------------------------------------------------------ ready

    def _after_event(self, touched: Sequence[int]) -> None:
        for nid in touched:
            node = self.nodes[nid]
            if node.core is not None:
                self._handle_ready(node, node.core)
        self._check_roles()
        if self.events % FULL_CHECK_EVERY == 0:
            self._full_check()

    def _handle_ready(self, node: SimNode, core: RaftCore) -> None:
        """Drain one Ready in the order its contract demands, observing every effect."""
        ready = core.ready()
        if ready.entries:
            self._observe_write(node, core, ready.entries)
        self._observe_commit(node, core)
        if ready.hard_state is not None:
            node.store.hard_state = ready.hard_state
        if node.store.hard_state != HardState(core.term, core.voted_for):
            raise InvariantViolation(
                "Ready Contract",
                f"node {node.node_id} changed term/vote without a hard_state: "
                f"stored {node.store.hard_state}, core ({core.term}, {core.voted_for})",
            )
        self._send(node, ready.messages)
        self._send_snapshots(node, ready.snapshot_sends)
        if ready.entries:
            self._queue_write(node, list(ready.entries))
        for chunk in ready.snapshot_writes:
            self._queue_write(node, chunk)
        if ready.restore is not None:
            self._restore(node, ready.restore)
        for entry in ready.committed:
            self._apply(node, entry)
        self._complete_requests(node, ready)
        self._maybe_snapshot(node, core)

    def _queue_write(self, node: SimNode, item: list[Entry] | InstallSnapshot) -> None:
        """Writes complete in order, each after a random fsync delay."""
        node.writes.append(item)
        node.last_write_done = max(self.now + self.rng.randint(1, self.swarm.max_fsync), node.last_write_done)
        self.schedule(node.last_write_done - self.now, "fsync", node.node_id, node.incarnation)

    # ------------------------------------------------------------ snapshots

    def _send_snapshots(self, node: SimNode, sends: Sequence[SnapshotSend]) -> None:
        """A leader's chunk requests: read them from its stored snapshot (gone if it was replaced)."""
        for send in sends:
            snapshot = node.store.snapshot
            if snapshot.ref != send.snapshot:
                self.stats["snapshot_chunk_gone"] += 1
                continue
            data = snapshot.encode()
            chunk = data[send.offset : send.offset + self.swarm.chunk_size]
            done = send.offset + len(chunk) >= len(data)
            msg = InstallSnapshot(
                node.node_id, send.peer, send.term, snapshot.index, snapshot.term, send.offset, chunk, done
            )
            self.stats["snapshot_chunk_sent"] += 1
            self._send(node, [msg])

    def _restore(self, node: SimNode, ref: SnapshotRef) -> None:
        """The state machine loads the installed snapshot: its entries must be the committed prefix."""
        snapshot = node.store.snapshot
        if snapshot.ref != ref:
            raise InvariantViolation(
                "Ready Contract", f"node {node.node_id} restores {ref}, store has {snapshot.ref}"
            )
        for position, entry in enumerate(snapshot.entries):
            if position < len(node.applied):
                if node.applied[position] != entry:
                    raise InvariantViolation(
                        "State Machine Safety",
                        f"node {node.node_id} restores {entry} over applied {node.applied[position]}",
                    )
            else:
                self._apply(node, entry)
        self.stats["snapshot_restored"] += 1

    def _maybe_snapshot(self, node: SimNode, core: RaftCore) -> None:
        """Snapshot the applied state now and then; it becomes durable after a delay (a crash loses it)."""
        every = self.swarm.snapshot_every
        applied = len(node.applied)
        if not every or node.snapshotting or applied - node.store.snapshot.index < every:
            return
        if applied > core.log.stable_index:
            return  # a snapshot only ever covers entries this node holds durably
        snapshot = SimSnapshot(
            applied, core.log.term_at(applied), tuple(node.applied), core.membership_at(applied)
        )
        node.snapshotting = True
        self.schedule(
            self.rng.randint(1, self.swarm.snapshot_delay),
            "snapshot",
            node.node_id,
            (node.incarnation, snapshot),
        )

    def _on_snapshot(self, event: Event) -> Sequence[int]:
        node = self.nodes[event.node]
        incarnation, snapshot = event.payload
        if node.core is None or incarnation != node.incarnation:
            return ()  # the write died with the crash: the log still holds everything
        node.snapshotting = False
        store = node.store
        if snapshot.index <= store.snapshot.index:
            return ()  # an installed snapshot overtook it
        if store.term_at(snapshot.index) != snapshot.term:
            raise InvariantViolation(
                "Snapshot", f"node {node.node_id} snapshots {snapshot.ref} but its store disagrees there"
            )
        store.entries = store.entries[snapshot.index - store.snapshot.index :]
        store.snapshot = snapshot
        node.core.snapshot_saved(snapshot.index, snapshot.term)
        node.core.compact(snapshot.index)
        self.stats["snapshot_taken"] += 1
        return (node.node_id,)

    def _observe_write(self, node: SimNode, core: RaftCore, entries: Sequence[Entry]) -> None:
        first, last = entries[0].index, entries[-1].index
        if first <= core.log.snapshot_index:
            raise InvariantViolation(
                "Ready Contract", f"node {node.node_id} writes {first} below its snapshot"
            )
        if last != core.log.last_index or core.log.slice(first, last + 1) != list(entries):
            raise InvariantViolation(
                "Ready Contract",
                f"node {node.node_id}: Ready.entries {first}..{last} are not its log's suffix",
            )
        self.monitor.write(node.node_id, entries, core.log.term_at(first - 1))

    def _observe_commit(self, node: SimNode, core: RaftCore) -> None:
        commit = core.commit_index
        if commit < node.commit_seen or commit > core.log.last_index:
            raise InvariantViolation(
                "Commit Index",
                f"node {node.node_id} commit_index {commit} (was {node.commit_seen}, "
                f"log ends at {core.log.last_index})",
            )
        if commit > node.commit_seen:
            entries = self._log(node.node_id)[node.commit_seen : commit]
            # A leader commits by its own configuration (one it just left by committing its
            # removal included); followers only learn of commits, which the monitor has seen.
            leading = core.role is Role.LEADER or node.was_leader_in == core.term
            voters = core.membership.voter_ids if leading else None
            self.monitor.commit(node.node_id, core.term, entries, self._durable(), voters)
            node.commit_seen = commit
            self._maybe_crash_after_commit(node, core)

    def _send(self, node: SimNode, messages: Sequence[Message]) -> None:
        for msg in messages:
            if msg.src != node.node_id or msg.dst not in self.nodes or msg.dst == msg.src:
                raise InvariantViolation("Ready Contract", f"node {node.node_id} sends misaddressed {msg}")
            check_durable_before_send(msg, node.store.hard_state)
            for delay in self.network.delays(msg.src, msg.dst):
                self.schedule(delay, "deliver", msg.dst, msg)

    def _apply(self, node: SimNode, entry: Entry) -> None:
        self.monitor.apply(node.node_id, len(node.applied), entry)
        node.applied.append(entry)
        for term, op in node.accepted.pop(entry.index, ()):
            self._settle(node, op, entry, term)

    def _complete_requests(self, node: SimNode, ready: Ready) -> None:
        for read in ready.read_states:
            floor = node.reads.pop(read.request_id, None)
            if floor is None:
                raise InvariantViolation("Ready Contract", f"node {node.node_id}: unknown read {read}")
            check_read_index(node.node_id, read.request_id, read.index, floor)
            self.stats["read_served"] += 1
        for accepted in ready.proposals:
            op = node.proposals.pop(accepted.request_id, None)
            if op is None:
                raise InvariantViolation(
                    "Ready Contract", f"node {node.node_id}: unknown proposal {accepted}"
                )
            self._accepted(node, op, accepted.index, accepted.term)
        for failed in ready.failed:
            op = node.proposals.pop(failed.request_id, None)
            if op is not None:
                self._retry_later(op)
            elif node.reads.pop(failed.request_id, None) is None:
                raise InvariantViolation("Ready Contract", f"node {node.node_id}: unknown failure {failed}")

    # ------------------------------------------------------------ checks

    def _durable(self) -> dict[int, Log]:
        return {nid: node.store.full() for nid, node in self.nodes.items()}

    def _log(self, nid: int) -> list[Entry]:
        """The node's whole log: its snapshot's entries, then the in-memory log after it."""
        core = self._core(nid)
        snapshot = self.nodes[nid].store.snapshot
        if snapshot.index != core.log.snapshot_index:
            raise InvariantViolation(
                "Snapshot",
                f"node {nid}: core log starts after {core.log.snapshot_index}, store after {snapshot.index}",
            )
        return [*snapshot.entries, *core.log.slice(core.log.first_index, core.log.last_index + 1)]

    def _check_roles(self) -> None:
        """Election Safety for whoever leads now; Leader Completeness for whoever just became leader."""
        for nid in self._up():
            node = self.nodes[nid]
            core = self._core(nid)
            if core.role is not Role.LEADER:
                continue
            if node.was_leader_in != core.term:
                node.was_leader_in = core.term
                self.monitor.new_leader(nid, core.term, self._log(nid))
                self._maybe_strike(nid, core.term)
            else:
                self.monitor.leader(nid, core.term)

    def _maybe_strike(self, nid: int, term: int) -> None:
        """Sometimes hit a leader right after it wins, while its no-op is only partly replicated."""
        if not self.calm and self.rng.random() < self.swarm.strike_new_leader:
            delay = 0 if self.rng.random() < 0.3 else self.rng.randint(1, 3 * TICK)
            self.schedule(delay, "strike", nid, (term, self.rng.random() < 0.5))

    def _maybe_crash_after_commit(self, node: SimNode, core: RaftCore) -> None:
        """Sometimes crash a leader the moment it commits while its own newest entries are not durable."""
        if self.calm or core.role is not Role.LEADER or not node.writes:
            return
        if self.rng.random() < self.swarm.crash_on_commit:
            self.schedule(0, "strike", node.node_id, (core.term, True))

    def _on_strike(self, event: Event) -> Sequence[int]:
        node = self.nodes[event.node]
        term, crash = event.payload
        if self.calm or node.core is None or node.core.term != term:
            return ()
        if crash:
            self.stats["strike_crash"] += 1
            return self._fault_crash([event.node])
        self.stats["strike_isolate"] += 1
        self.network.partition([[event.node], [n for n in self.nodes if n != event.node]])
        self._heal_later()
        return ()

    def _full_check(self) -> None:
        up = self._up()
        logs = {nid: self._log(nid) for nid in up}
        leaders = {nid: self._core(nid).term for nid in self._leaders()}
        self.monitor.full_check(logs, leaders)

    # ------------------------------------------------------------ liveness

    def _progress(self) -> tuple[int, int, int, int]:
        """Changes whenever anything is committed, applied or made durable anywhere (snapshot chunks too).

        Durable writes count: a new leader may first have to replicate a long
        backlog, one small message at a time, before its no-op can commit."""
        nodes = self.nodes.values()
        applied = sum(len(node.applied) for node in nodes)
        durable = sum(len(node.store.full()) for node in nodes)
        return self.monitor.max_committed, applied, durable, self.stats["snapshot_bytes_taken"]

    def _live(self) -> bool:
        """A leader with a restored, committed configuration whose every member follows it and
        applied every calm proposal; servers outside the configuration may lag forever."""
        if not all(op.done for op in self.calm_ops):
            return False
        wanted = {op.data for op in self.calm_ops}
        for leader in self._leaders():
            core = self._core(leader)
            members = core.membership.ids
            if not self._restored(core) or leader not in members:
                continue
            followers = sorted(members - {leader})
            if any(self.nodes[n].core is None or self._core(n).leader_id != leader for n in followers):
                continue
            if all(wanted <= {e.data for e in self.nodes[n].applied} for n in members):
                return True
        return False

    def _liveness_gap(self) -> str:
        roles = {
            nid: (
                n.core.role.name,
                n.core.term,
                n.core.leader_id,
                n.core.commit_index,
                len(n.applied),
                sorted(n.core.membership.voter_ids),
                sorted(n.core.membership.learner_ids),
            )
            if n.core
            else None
            for nid, n in self.nodes.items()
        }
        pending = [op.data for op in self.calm_ops if not op.done]
        return (
            f"nodes (role, term, leader, commit, applied, voters, learners)={roles}; "
            f"calm proposals not acknowledged: {pending}"
        )

    def _final_check(self) -> None:
        """Whole-state check at the end; applied logs were compared entry by entry as they grew."""
        self._full_check()
        for nid in self._up():
            check_log_shape(nid, self._log(nid))

"""A hand-cranked harness for the sans-I/O core.

Nothing here runs by itself: a test builds cores with seeded ``random.Random``
instances, drains their ``Ready`` batches, chooses which messages to hand to
which core and when storage reports entries durable. ``Cluster`` adds the usual
conveniences (deliver everything until quiet, cut links, elect a node) so a
test can spell out only the steps that matter to the rule it checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyraft.core.config import Config
from pyraft.core.messages import Entry, EntryKind, HardState, Message
from pyraft.core.raft import RaftCore, Role
from pyraft.core.ready import ProposalAccepted, ReadState, Ready, RequestFailed

M = TypeVar("M")

ELECTION = 10
HEARTBEAT = 2


def config(node_id: int, voters: Sequence[int], **overrides: Any) -> Config:
    settings: dict[str, Any] = {"election_ticks": ELECTION, "heartbeat_ticks": HEARTBEAT}
    settings.update(overrides)
    return Config(node_id=node_id, voters=tuple(voters), **settings)


def role_of(core: RaftCore) -> Role:
    """The core's role now. Read through a call so that a type checker does not carry an
    earlier ``assert core.role is ...`` across a step that changed it."""
    return core.role


def log_of(*terms: int) -> list[Entry]:
    """A log whose entry at index i (from 1) has term ``terms[i - 1]``; data names index and term."""
    return [Entry(i, t, EntryKind.COMMAND, f"{i}@{t}".encode()) for i, t in enumerate(terms, start=1)]


def of_type(messages: Iterable[Message], kind: type[M]) -> list[M]:
    return [m for m in messages if isinstance(m, kind)]


def terms_of(entries: Iterable[Entry]) -> list[int]:
    return [e.term for e in entries]


@dataclass
class Node:
    """One core plus the durable store a real node would keep next to it."""

    config: Config
    seed: int
    core: RaftCore
    hard_state: HardState = field(default_factory=HardState)
    stored: list[Entry] = field(default_factory=list)
    # Ready.entries batches handed out and not yet reported durable.
    pending: list[list[Entry]] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    proposals: list[ProposalAccepted] = field(default_factory=list)
    failed: list[RequestFailed] = field(default_factory=list)
    readies: list[Ready] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        cfg: Config,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        *,
        seed: int = 0,
    ) -> Node:
        hs = hard_state or HardState()
        core = RaftCore(cfg, random.Random(seed), hard_state=hs, entries=list(entries))
        return cls(cfg, seed, core, hs, list(entries))

    @property
    def id(self) -> int:
        return self.config.node_id

    @property
    def log(self) -> list[Entry]:
        """The core's in-memory log (durable or not)."""
        return self.core.log.slice(1, self.core.log.last_index + 1)

    def ready(self, persist: bool = True) -> list[Message]:
        """Drain one Ready: hard state made durable, entries queued (and persisted if asked)."""
        rd = self.core.ready()
        self.readies.append(rd)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            self.pending.append(list(rd.entries))
        self.committed.extend(rd.committed)
        self.read_states.extend(rd.read_states)
        self.proposals.extend(rd.proposals)
        self.failed.extend(rd.failed)
        if persist:
            self.persist()
        return list(rd.messages)

    def persist(self, batches: int | None = None, upto: int | None = None) -> None:
        """Make pending batches durable, oldest first, and tell the core.

        ``upto`` persists only the prefix of the oldest batch ending at that index."""
        if upto is not None:
            batch = self.pending[0]
            head = [e for e in batch if e.index <= upto]
            self.pending[0] = [e for e in batch if e.index > upto]
            if not self.pending[0]:
                self.pending.pop(0)
            self._write(head)
            return
        done = 0
        while self.pending and (batches is None or done < batches):
            self._write(self.pending.pop(0))
            done += 1

    def _write(self, batch: list[Entry]) -> None:
        if not batch:
            return
        del self.stored[batch[0].index - 1 :]
        self.stored.extend(batch)
        self.core.persisted(batch[-1].index, batch[-1].term)

    def restart(self, seed: int | None = None) -> None:
        """Crash (losing everything not durable) and come back from the store."""
        self.pending.clear()
        self.seed = self.seed + 1000 if seed is None else seed
        self.core = RaftCore(
            self.config, random.Random(self.seed), hard_state=self.hard_state, entries=list(self.stored)
        )
        self.committed.clear()


Drop = Callable[[Message], bool]


class Cluster:
    """Several nodes and an explicit network: messages move only when a test says so."""

    def __init__(
        self,
        size: int = 3,
        seed: int = 0,
        logs: Mapping[int, Sequence[Entry]] | None = None,
        hard_states: dict[int, HardState] | None = None,
        **cfg: Any,
    ) -> None:
        ids = tuple(range(1, size + 1))
        logs = logs or {}
        hard_states = hard_states or {}
        self.nodes: dict[int, Node] = {
            i: Node.create(config(i, ids, **cfg), hard_states.get(i), logs.get(i, ()), seed=seed * 100 + i)
            for i in ids
        }
        self.queue: list[Message] = []
        self.delivered: list[Message] = []
        self.down: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self.drop: Drop | None = None

    def __getitem__(self, node_id: int) -> RaftCore:
        return self.nodes[node_id].core

    @property
    def ids(self) -> list[int]:
        return list(self.nodes)

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add(frozenset((node_id, other)))

    def heal(self) -> None:
        self.cut.clear()
        self.drop = None

    def _blocked(self, msg: Message) -> bool:
        if msg.src in self.down or msg.dst in self.down:
            return True
        if frozenset((msg.src, msg.dst)) in self.cut:
            return True
        return self.drop is not None and self.drop(msg)

    def collect(self, ids: Iterable[int] | None = None, persist: bool = True) -> list[Message]:
        """Drain the Ready of each node (persisting its entries) and queue the messages."""
        out: list[Message] = []
        for i in self.ids if ids is None else ids:
            if i in self.down:
                continue
            node = self.nodes[i]
            out.extend(node.ready(persist=persist))
            # Persisting may produce acknowledgements (or, on a leader, commits): send them too.
            while persist and node.core.has_ready():
                out.extend(node.ready(persist=persist))
        self.queue.extend(out)
        return out

    def deliver(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            if self._blocked(msg):
                continue
            self.delivered.append(msg)
            self.nodes[msg.dst].core.step(msg)

    def deliver_queue(self, where: Callable[[Message], bool] | None = None) -> list[Message]:
        """Deliver the queued messages matching ``where`` (all by default); keep the rest queued."""
        chosen = [m for m in self.queue if where is None or where(m)]
        self.queue = [m for m in self.queue if not (where is None or where(m))]
        self.deliver(chosen)
        return chosen

    def stabilize(self, max_rounds: int = 200, persist: bool = True) -> None:
        """Deliver and drain until no node has anything to say."""
        for _ in range(max_rounds):
            self.collect(persist=persist)
            if not self.queue:
                return
            self.deliver_queue()
        raise AssertionError("cluster did not go quiet")

    def tick(self, node_id: int, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node_id].core.tick()

    def tick_all(self, times: int = 1, stabilize: bool = True) -> None:
        for _ in range(times):
            for i in self.ids:
                if i not in self.down:
                    self.nodes[i].core.tick()
            if stabilize:
                self.stabilize()

    def campaign(self, node_id: int) -> None:
        """Tick one node until its election timer fires (it becomes a (pre-)candidate)."""
        core = self[node_id]
        was_follower = core.role is Role.FOLLOWER
        if not was_follower:
            self.collect([node_id])  # a (pre-)candidate: drain, then wait for its next election
        for _ in range(4 * core.config.election_ticks):
            core.tick()
            if core.role is not Role.FOLLOWER if was_follower else core.has_ready():
                return
        raise AssertionError(f"node {node_id} never campaigned")

    def elect(self, node_id: int) -> None:
        """Make ``node_id`` campaign and run the cluster until quiet; it must end up leader."""
        self.campaign(node_id)
        self.stabilize()
        assert self[node_id].role is Role.LEADER, f"node {node_id} is {self[node_id].role}"

    def leaders(self) -> list[int]:
        return [i for i in self.ids if i not in self.down and self[i].role is Role.LEADER]

    def propose(self, node_id: int, data: bytes) -> tuple[int, int]:
        return self[node_id].propose(data)

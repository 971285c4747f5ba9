"""Seeded random schedules over the message-level harness, checking the Raft safety
properties (Figure 3) after every step: election safety, log matching, leader
completeness, state machine safety; plus ReadIndex freshness and proposal identity."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from pyraft.core.errors import RaftError
from pyraft.core.messages import Entry
from pyraft.core.raft import Role

from .helpers import Cluster


@dataclass
class Checker:
    leaders: dict[int, int] = field(default_factory=dict)  # term -> leader id
    chosen: list[Entry] = field(default_factory=list)  # the committed log, as applied anywhere
    applied: dict[int, int] = field(default_factory=dict)  # node -> entries seen applied
    reads: dict[tuple[int, int], int] = field(default_factory=dict)  # (node, request) -> floor
    proposed: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (node, request) -> data

    def observe(self, c: Cluster) -> None:
        for i, node in c.nodes.items():
            core = node.core
            if core.role is Role.LEADER:
                seen = self.leaders.setdefault(core.term, i)
                assert seen == i, f"two leaders in term {core.term}: {seen} and {i}"
                # Leader completeness: every committed entry is in the leader's log.
                log = node.log
                assert log[: len(self.chosen)] == self.chosen, f"leader {i} lacks committed entries"
            # State machine safety: whatever a node applies is the one committed log.
            start = self.applied.get(i, 0)
            for entry in node.committed[start:]:
                if entry.index <= len(self.chosen):
                    assert self.chosen[entry.index - 1] == entry, f"node {i} applied a different {entry}"
                else:
                    assert entry.index == len(self.chosen) + 1, "applied out of order"
                    self.chosen.append(entry)
            self.applied[i] = len(node.committed)
            for rs in node.read_states:
                floor = self.reads.pop((i, rs.request_id), None)
                if floor is not None:
                    assert rs.index >= floor, f"stale read on node {i}: {rs.index} < {floor}"
            for pa in node.proposals:
                data = self.proposed.get((i, pa.request_id))
                if (
                    data is not None
                    and pa.index <= len(self.chosen)
                    and self.chosen[pa.index - 1].term == pa.term
                ):
                    assert self.chosen[pa.index - 1].data == data, "accepted proposal replaced by another"
        # Log matching: same index and term means identical prefixes.
        logs = [n.log for n in c.nodes.values()]
        for a in range(len(logs)):
            for b in range(a + 1, len(logs)):
                x, y = logs[a], logs[b]
                common = [k for k in range(min(len(x), len(y))) if x[k].term == y[k].term]
                if common:
                    top = common[-1] + 1
                    assert x[:top] == y[:top], "logs agree on a term but differ before it"


def run(seed: int, size: int, steps: int) -> Checker:
    rng = random.Random(seed)
    c = Cluster(
        size, seed=seed, election_ticks=10, heartbeat_ticks=2, max_entries_per_message=3, max_inflight=2
    )
    check = Checker()
    request = 0
    for _ in range(steps):
        roll = rng.random()
        alive = [i for i in c.ids if i not in c.down]
        node_id = rng.choice(alive)
        node = c.nodes[node_id]
        if roll < 0.25:
            node.core.tick()
        elif roll < 0.55 and c.queue:
            msg = c.queue.pop(rng.randrange(len(c.queue)))
            fate = rng.random()
            if fate < 0.08:
                pass  # lost
            else:
                if fate < 0.13:
                    c.queue.append(msg)  # duplicated
                c.deliver([msg])
        elif roll < 0.72:
            c.queue.extend(node.ready(persist=False))
        elif roll < 0.82:
            if node.pending:
                node.persist(batches=rng.randint(1, len(node.pending)))
        elif roll < 0.9:
            request += 1
            data = b"p%d" % request
            try:
                if rng.random() < 0.7:
                    node.core.forward(request, data)
                    check.proposed[(node_id, request)] = data
                else:
                    node.core.read_index(request)
                    check.reads[(node_id, request)] = len(check.chosen)
            except RaftError:
                pass
        elif roll < 0.93:
            if node.core.role is Role.LEADER and rng.random() < 0.3:
                target = rng.choice([i for i in c.ids if i != node_id])
                node.core.transfer_leadership(target)
        elif roll < 0.96:
            if len(c.down) < (size - 1) // 2:
                c.down.add(node_id)
        elif c.down:
            back = rng.choice(sorted(c.down))
            c.down.discard(back)
            c.nodes[back].restart(seed=rng.randrange(1 << 30))
            check.applied[back] = 0
            check.reads = {k: v for k, v in check.reads.items() if k[0] != back}
        check.observe(c)
    # Calm: every node back, no more faults. A leader must emerge and bring all logs together.
    for back in sorted(c.down):
        c.nodes[back].restart(seed=rng.randrange(1 << 30))
        check.applied[back] = 0
    c.down.clear()
    for node in c.nodes.values():
        node.persist()
    for _ in range(15 * c[1].config.election_ticks):
        c.tick_all()
        check.observe(c)
    (leader,) = c.leaders()
    c[leader].propose(b"calm")
    c.tick_all(3 * c[1].config.heartbeat_ticks)
    check.observe(c)
    assert all(n.log == c.nodes[leader].log for n in c.nodes.values()), "logs did not converge"
    assert all(c[i].commit_index == c[leader].log.last_index for i in c.ids), "not all committed"
    return check


@pytest.mark.parametrize(("seed", "size"), [(s, 3) for s in range(6)] + [(s, 5) for s in range(4)])
def test_safety_under_random_faults_then_liveness_when_calm(seed: int, size: int) -> None:
    check = run(seed + 1000 * size, size, 3000)
    # The schedule must actually have exercised leader changes and commits.
    assert len(check.leaders) >= 3
    assert check.chosen[-1].data == b"calm"


def test_checker_detects_divergent_applied_entries() -> None:
    c = Cluster(3, seed=1)
    check = Checker()
    c.nodes[1].committed.append(Entry(1, 1, data=b"a"))
    check.observe(c)
    c.nodes[2].committed.append(Entry(1, 1, data=b"b"))
    with pytest.raises(AssertionError, match="applied a different"):
        check.observe(c)


def test_checker_detects_log_matching_violation() -> None:
    c = Cluster(3, seed=1)
    c.nodes[1].core.log.append([Entry(1, 1, data=b"a"), Entry(2, 2)])
    c.nodes[2].core.log.append([Entry(1, 1, data=b"b"), Entry(2, 2)])
    with pytest.raises(AssertionError, match="logs agree"):
        Checker().observe(c)

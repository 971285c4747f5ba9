"""The simulator must catch known-broken nodes, or its green runs mean nothing.

Each mutant breaks one durability or membership rule through the core's public
API only, so these tests keep working whatever the core's internals become.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pyraft.core.config import Config
from pyraft.core.membership import Membership
from pyraft.core.messages import Entry, HardState
from pyraft.core.raft import RaftCore
from pyraft.core.ready import Ready, SnapshotRef

from .cluster import Cluster, CoreFactory, SimConfig, SimulationFailure

SEEDS = range(20)  # each mutant is caught well within these on both cluster sizes


class AcksBeforeFsync(RaftCore):
    """Reports entries durable as soon as they are handed out, like a disk that lies about fsync."""

    def ready(self) -> Ready:
        out = super().ready()
        if out.entries:
            self.persisted(out.entries[-1].index, out.entries[-1].term)
            out.messages += super().ready().messages
        return out


def acks_before_fsync(
    cfg: Config,
    rng: random.Random,
    hs: HardState,
    entries: Sequence[Entry],
    snapshot: SnapshotRef | None,
    membership: Membership | None,
) -> RaftCore:
    return AcksBeforeFsync(cfg, rng, hs, entries, snapshot, membership)


def loses_tail(
    cfg: Config,
    rng: random.Random,
    hs: HardState,
    entries: Sequence[Entry],
    snapshot: SnapshotRef | None,
    membership: Membership | None,
) -> RaftCore:
    """A store that drops its last few fsynced entries on every restart (a lying disk cache)."""
    return RaftCore(cfg, rng, hs, entries[:-5], snapshot, membership)


class StarvesLearners(RaftCore):
    """A leader that sends learners nothing (thesis 4.2.1: a new server catches up as a
    non-voting member): they never catch up, so they are never promoted nor apply anything."""

    def ready(self) -> Ready:
        out = super().ready()
        learners = self.membership.learner_ids
        out.messages = [m for m in out.messages if m.dst not in learners]
        out.snapshot_sends = [s for s in out.snapshot_sends if s.peer not in learners]
        return out


def starves_learners(
    cfg: Config,
    rng: random.Random,
    hs: HardState,
    entries: Sequence[Entry],
    snapshot: SnapshotRef | None,
    membership: Membership | None,
) -> RaftCore:
    return StarvesLearners(cfg, rng, hs, entries, snapshot, membership)


def assert_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    """Some seed in SEEDS fails, naming one of the ``|``-separated invariants and its replay."""
    for seed in SEEDS:
        try:
            Cluster(SimConfig(seed=seed, nodes=nodes), factory).run()
        except SimulationFailure as failure:
            assert f"--sim-seed {seed}" in str(failure), "the failure must say how to replay it"
            assert any(name in str(failure) for name in invariant.split("|")), str(failure)
            return
    pytest.fail(f"{factory.__name__} survived seeds {SEEDS}")


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize(
    ("factory", "invariant"),
    [(acks_before_fsync, "No Lost Commits"), (loses_tail, "Leader Completeness|No Lost Commits")],
    ids=["acks-before-fsync", "loses-tail"],
)
def test_broken_durability_is_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    assert_caught(factory, invariant, nodes)


# Not here, because no safety invariant catches them in seeds 0-299 on 3 and 5 nodes: a leader
# counting learners' acknowledgements, a second change before the first commits, a change before
# the leader's no-op commits, a configuration in effect only at commit (which fails some seeds,
# but only as Liveness: the calm phase's rejoin reads ``core.membership``, then the committed
# one). The simulation keeps every configuration within one server of the full cluster, where
# any two configurations' majorities overlap (and a learner counted as a voter makes the full
# cluster), so these mutants are safe in it.


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize(("factory", "invariant"), [(starves_learners, "Liveness")], ids=["starves-learners"])
def test_broken_membership_is_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    assert_caught(factory, invariant, nodes)

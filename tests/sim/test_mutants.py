"""The simulator must catch known-broken nodes, or its green runs mean nothing.

Each durability mutant breaks one rule through the core's public API only; the
membership safety mutants have to reach into two private hooks (``_maybe_commit``,
``_change_membership``), the only places those rules live.
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


class CountsLearnerAcks(RaftCore):
    """A leader that counts learners' acknowledgements towards commit, as if they voted."""

    def _maybe_commit(self) -> None:
        voter_peers = self._voter_peers
        self._voter_peers = self._peers
        try:
            super()._maybe_commit()
        finally:
            self._voter_peers = voter_peers


class ConcurrentChanges(RaftCore):
    """A leader that starts a membership change before the previous one commits (thesis 4.2:
    two uncommitted single-server steps can leave configurations with disjoint majorities)."""

    def _change_membership(self, new: Membership) -> tuple[int, int]:
        configs = self._configs
        self._configs = []  # hide the uncommitted change from the one-at-a-time check
        try:
            return super()._change_membership(new)
        finally:
            self._configs = configs + self._configs


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
    [(AcksBeforeFsync, "No Lost Commits"), (loses_tail, "Leader Completeness|No Lost Commits")],
    ids=["acks-before-fsync", "loses-tail"],
)
def test_broken_durability_is_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    assert_caught(factory, invariant, nodes)


# Spare servers let configurations wander away from the bootstrap set (e.g. {1,2,3} -> {1,2}
# -> {1}), where majorities of different configurations need not overlap, and the monitor
# checks durability against the configuration in effect; so counting learners' acks
# (No Lost Commits: 3 nodes seed 0, 5 nodes seed 2) and a second change before the first
# commits (3 nodes seed 9: Leader Completeness; 5 nodes seed 2: No Lost Commits) are caught.


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize(
    ("factory", "invariant"),
    [
        (StarvesLearners, "Liveness"),
        (CountsLearnerAcks, "No Lost Commits|Leader Completeness"),
        (ConcurrentChanges, "No Lost Commits|Leader Completeness|State Machine Safety"),
    ],
    ids=["starves-learners", "counts-learner-acks", "concurrent-changes"],
)
def test_broken_membership_is_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    assert_caught(factory, invariant, nodes)

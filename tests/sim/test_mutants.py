"""The simulator must catch known-broken nodes, or its green runs mean nothing.

Each mutant breaks one durability rule through the core's public API only, so
these tests keep working whatever the core's internals become.
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


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize(
    ("factory", "invariant"),
    [(acks_before_fsync, "No Lost Commits"), (loses_tail, "Leader Completeness|No Lost Commits")],
    ids=["acks-before-fsync", "loses-tail"],
)
def test_broken_durability_is_caught(factory: CoreFactory, invariant: str, nodes: int) -> None:
    for seed in SEEDS:
        try:
            Cluster(SimConfig(seed=seed, nodes=nodes), factory).run()
        except SimulationFailure as failure:
            assert f"--sim-seed {seed}" in str(failure), "the failure must say how to replay it"
            assert any(name in str(failure) for name in invariant.split("|")), str(failure)
            return
    pytest.fail(f"{factory.__name__} survived seeds {SEEDS}")

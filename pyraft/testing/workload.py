"""The seam for client workloads (registers, set, log: see :mod:`pyraft.testing.workloads`).

A workload owns its clients and its checker; the runner (:mod:`pyraft.testing.run`)
owns the cluster, the nemesis, the clock and the history file. The contract:

* :meth:`Workload.setup` runs once on the healthy cluster before any fault (e.g. registering
  the brokers whose hosts the clients then overwrite), recording what it does.
* :meth:`Workload.client` runs one client until ``stop_at`` (a ``trio.current_time()``),
  recording every operation through ``recorder`` as invoke then exactly one of
  ok / fail / info, with a timeout per request. After an ``info`` it must take a fresh
  process id from ``ids`` (its old request may still be in flight).
* :meth:`Workload.final` runs once after every fault is healed and every node has
  restarted: the final reads (set contents, each node's ``/metadata_fetch/`` log).
* :meth:`Workload.check` turns the whole history into named verdicts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Protocol

from pyraft.testing.harness import FaultCluster
from pyraft.testing.history import Event, HistoryRecorder
from pyraft.testing.linearizability import Verdict


class ProcessIds:
    """Hands out process ids that are never reused within a run."""

    def __init__(self) -> None:
        self._next = itertools.count()

    def fresh(self) -> int:
        return next(self._next)


class CheckOutcome(Protocol):
    """What every checker result offers (see :mod:`pyraft.testing.checkers`)."""

    @property
    def verdict(self) -> Verdict: ...

    def render(self) -> str: ...


class Workload(Protocol):
    name: str
    clients: int  # how many concurrent clients the runner starts

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None: ...

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None: ...

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None: ...

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]: ...

"""An in-memory, seeded, faulty network.

It only decides *whether* and *when* a message arrives; the cluster puts each
arrival on its event heap, so reordering falls out of the random delays and
the whole run stays a function of the seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """How hostile the network is; the calm phase swaps in ``NetworkFaults.calm()``."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 1
    max_delay: int = 8
    # A few messages are held back far longer, so stale ones arrive after later ones.
    long_delay_chance: float = 0.0
    max_long_delay: int = 200

    @staticmethod
    def calm() -> NetworkFaults:
        return NetworkFaults()

    @staticmethod
    def hostile(rng: random.Random) -> NetworkFaults:
        """Fault levels vary per seed so some seeds are mildly and some very lossy."""
        return NetworkFaults(
            drop=rng.choice((0.0, 0.02, 0.1, 0.25)),
            duplicate=rng.choice((0.0, 0.02, 0.1)),
            min_delay=1,
            max_delay=rng.choice((5, 15, 40)),
            long_delay_chance=rng.choice((0.0, 0.02, 0.05)),
            max_long_delay=rng.choice((200, 600)),  # up to 60 ticks: past any election timeout
        )


class Network:
    """Partitions plus per-message loss, duplication and delay."""

    def __init__(self, rng: random.Random, nodes: Sequence[int], faults: NetworkFaults) -> None:
        self._rng = rng
        self._nodes = tuple(nodes)
        self.faults = faults
        self._group: dict[int, int] = dict.fromkeys(self._nodes, 0)
        self._cut: set[tuple[int, int]] = set()  # one-way link failures (src, dst)

    def connected(self, a: int, b: int) -> bool:
        """``a`` can reach ``b``: same partition group and that direction not cut."""
        return self._group[a] == self._group[b] and (a, b) not in self._cut

    def cut_one_way(self, src: int, dst: int) -> None:
        """Asymmetric failure: ``src``'s messages to ``dst`` are lost, the reverse still flows."""
        self._cut.add((src, dst))

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split the nodes into the given groups; nodes not listed end up alone."""
        self._group = {node: -node for node in self._nodes}
        for gid, group in enumerate(groups, start=1):
            for node in group:
                self._group[node] = gid

    def heal(self) -> None:
        self._group = dict.fromkeys(self._nodes, 0)
        self._cut.clear()

    def describe(self) -> str:
        """Groups as text, for the event trace."""
        groups: dict[int, list[int]] = {}
        for node in self._nodes:
            groups.setdefault(self._group[node], []).append(node)
        cuts = "".join(f" {a}-/->{b}" for a, b in sorted(self._cut))
        return "|".join(",".join(map(str, g)) for g in groups.values()) + cuts

    def delays(self, src: int, dst: int) -> list[int]:
        """Delays of each copy of a message sent now: none if it is lost, two if duplicated."""
        if not self.connected(src, dst) or self._rng.random() < self.faults.drop:
            return []
        copies = 2 if self._rng.random() < self.faults.duplicate else 1
        return [self._delay() for _ in range(copies)]

    def _delay(self) -> int:
        f = self.faults
        if f.long_delay_chance and self._rng.random() < f.long_delay_chance:
            return self._rng.randint(f.max_delay, f.max_long_delay)
        return self._rng.randint(f.min_delay, f.max_delay)

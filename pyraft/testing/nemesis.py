"""The nemesis: a schedule of faults generated from a seed, so that a seed replays a run's faults.

A schedule is a list of timed :class:`Action` s, each the ``start`` or ``stop`` of one
fault window. Windows run one after another with quiet gaps between them (Jepsen's
"fault, heal, let it recover" rhythm): overlapping a disk fault with a kill of
another node could let two damaged voters out-vote the intact one, which no Raft
can survive, and would make a failure hard to attribute.

Targets that depend on who leads ("leader", "follower") stay symbolic in the
schedule and are resolved when the action runs, by :func:`resolve_target`, from
the leader at that moment and the action's seeded ``pick``. The schedule is thus a
pure function of (seed, nodes, duration, options); the harness records what each
action resolved to next to it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

Phase = Literal["start", "stop"]

# Every fault the nemesis knows, in a fixed order (the order matters for replay).
FAULTS: Final = (
    "kill",  # kill -9, then restart
    "pause",  # SIGSTOP, then SIGCONT: a long GC pause
    "partition-halves",  # a random majority and minority
    "isolate-leader",  # the leader alone on one side
    "bridge",  # two sides that only one node connects
    "slow",  # delay and jitter on some links
    "lossy",  # connection resets on some links
    "disk-truncate",  # kill, cut the log tail, restart
    "disk-flip",  # kill, flip a byte near the log's end, restart
)
LOG_HEADER_BYTES: Final = 12  # b"PYRAFTLG" + u32 version: never damaged, or the node refuses to start
FLIP_TAIL_BYTES: Final = 64  # flips hit the last records, like a torn or misdirected final write


@dataclass(frozen=True)
class Action:
    """``at`` seconds after the schedule starts, begin (``start``) or end (``stop``) window ``window``."""

    at: float
    phase: Phase
    fault: str
    window: int
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    seed: int
    nodes: int
    duration: float
    actions: tuple[Action, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        raw = json.loads(text)
        actions = tuple(Action(**a) for a in raw["actions"])
        return cls(raw["seed"], raw["nodes"], raw["duration"], actions)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Schedule:
        return cls.from_json(path.read_text(encoding="utf-8"))

    def windows(self) -> list[tuple[float, float, str]]:
        """(start, stop, fault) per window, for shading report plots."""
        starts = {a.window: a for a in self.actions if a.phase == "start"}
        return [(starts[a.window].at, a.at, a.fault) for a in self.actions if a.phase == "stop"]


@dataclass(frozen=True)
class NemesisOptions:
    faults: tuple[str, ...] = FAULTS
    first_at: float = 2.0  # let the cluster settle and clients warm up first
    fault_seconds: tuple[float, float] = (1.0, 5.0)
    quiet_seconds: tuple[float, float] = (1.0, 4.0)
    final_quiet: float = 3.0  # no fault in the last seconds: the end of a run is calm


def generate_schedule(
    seed: int, nodes: int, duration: float, options: NemesisOptions | None = None
) -> Schedule:
    """Windows of random faults until ``duration - final_quiet``; everything drawn from ``seed``."""
    opts = options or NemesisOptions()
    unknown = set(opts.faults) - set(FAULTS)
    if unknown or not opts.faults:
        raise ValueError(f"unknown faults {sorted(unknown)} (known: {', '.join(FAULTS)})")
    if nodes < 3:
        raise ValueError("the nemesis needs at least 3 nodes")
    rng = random.Random(seed)
    node_ids = list(range(1, nodes + 1))
    actions: list[Action] = []
    t, window = opts.first_at, 0
    while True:
        length = rng.uniform(*opts.fault_seconds)
        if t + length > duration - opts.final_quiet:
            break
        fault = rng.choice(opts.faults)
        args = _ARGS[fault](rng, node_ids)
        actions += [
            Action(round(t, 3), "start", fault, window, args),
            Action(round(t + length, 3), "stop", fault, window, args),
        ]
        t += length + rng.uniform(*opts.quiet_seconds)
        window += 1
    return Schedule(seed, nodes, duration, tuple(actions))


def _process_target(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    return {"target": rng.choice(("leader", "follower")), "pick": rng.randrange(1 << 16)}


def _halves(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    shuffled = rng.sample(node_ids, len(node_ids))
    majority = len(node_ids) // 2 + 1
    return {"groups": [sorted(shuffled[:majority]), sorted(shuffled[majority:])], "mode": _mode(rng)}


def _isolate_leader(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    return {"target": "leader", "pick": rng.randrange(1 << 16), "mode": _mode(rng)}


def _bridge(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    shuffled = rng.sample(node_ids, len(node_ids))
    side = (len(node_ids) - 1) // 2
    return {
        "left": sorted(shuffled[:side]),
        "middle": shuffled[side],
        "right": sorted(shuffled[side + 1 :]),
        "mode": _mode(rng),
    }


def _some_links(rng: random.Random, node_ids: list[int]) -> list[list[int]]:
    links = [[i, j] for i in node_ids for j in node_ids if i != j]
    return sorted(rng.sample(links, rng.randint(1, len(links))))


def _slow(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    delay = round(rng.uniform(0.005, 0.2), 4)
    return {"links": _some_links(rng, node_ids), "delay": delay, "jitter": round(rng.uniform(0, delay), 4)}


def _lossy(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    return {"links": _some_links(rng, node_ids), "rate": round(rng.uniform(0.01, 0.3), 3)}


def _truncate(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    return {
        "target": rng.choice(("leader", "follower")),
        "pick": rng.randrange(1 << 16),
        "bytes": rng.randint(1, 200),
    }


def _flip(rng: random.Random, node_ids: list[int]) -> dict[str, Any]:
    return {
        "target": rng.choice(("leader", "follower")),
        "pick": rng.randrange(1 << 16),
        "from_end": rng.randint(1, FLIP_TAIL_BYTES),
        "mask": rng.randint(1, 255),
    }


def _mode(rng: random.Random) -> str:
    return rng.choice(("reset", "blackhole"))


_ARGS: Final[dict[str, Callable[[random.Random, list[int]], dict[str, Any]]]] = {
    "kill": _process_target,
    "pause": _process_target,
    "partition-halves": _halves,
    "isolate-leader": _isolate_leader,
    "bridge": _bridge,
    "slow": _slow,
    "lossy": _lossy,
    "disk-truncate": _truncate,
    "disk-flip": _flip,
}


def resolve_target(target: str, pick: int, leader: int | None, node_ids: Sequence[int]) -> int:
    """The node a symbolic target means now. Without a known leader, ``pick`` chooses among all."""
    ordered = sorted(node_ids)
    if target == "leader" and leader is not None:
        return leader
    if target == "follower" and leader is not None:
        followers = [n for n in ordered if n != leader]
        return followers[pick % len(followers)]
    return ordered[pick % len(ordered)]


# ------------------------------------------------------------------ disk damage (node stopped)


def truncate_tail(path: Path, nbytes: int) -> int:
    """Cut up to ``nbytes`` off the end of the log, never into its header; returns bytes cut."""
    size = path.stat().st_size
    cut = max(0, min(nbytes, size - LOG_HEADER_BYTES))
    with path.open("r+b") as f:
        f.truncate(size - cut)
    return cut


def flip_byte(path: Path, from_end: int, mask: int) -> int | None:
    """XOR ``mask`` into the byte ``from_end`` bytes before the end (not in the header).

    Returns the offset flipped, or None when the log has no record bytes to damage.
    """
    data = bytearray(path.read_bytes())
    offset = max(len(data) - from_end, LOG_HEADER_BYTES)
    if offset >= len(data):
        return None
    data[offset] ^= mask or 0xFF
    path.write_bytes(bytes(data))
    return offset

"""Checkers for the set and log workloads, and a single entry point to the register checker.

The log workload's checkers read nodes that compact their logs into snapshots: the logs
are compared where two nodes both hold offsets (:func:`check_log`), the states each node's
snapshot and log give are compared at common offsets (:func:`check_states`), and an
acknowledged write may survive only in a snapshot, or be overwritten there (:func:`check_durable`).

Each checker returns a result with a ``verdict`` and a ``render()`` that says what
is wrong in terms a person can act on (which element, which node, which offset).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyraft.testing.history import Event, Operation, pair_operations
from pyraft.testing.linearizability import (
    KeyResult,
    LinearizabilityResult,
    Verdict,
    canonical,
    check_register,
    check_registers,
    render_window,
    shrink_window,
)

__all__ = [
    "DurabilityResult",
    "KeyResult",
    "LinearizabilityResult",
    "LogResult",
    "NodeWrites",
    "SetResult",
    "StateResult",
    "Verdict",
    "check_durable",
    "check_log",
    "check_register",
    "check_registers",
    "check_set",
    "check_states",
    "first_difference",
    "render_window",
    "shrink_window",
]


# ------------------------------------------------------------------ set


@dataclass(frozen=True)
class SetResult:
    """Per set key: what the final read lacked or had extra. Elements are canonical JSON strings."""

    key: str
    verdict: Verdict
    acknowledged: int
    lost: tuple[str, ...] = ()  # ok adds missing from the final read
    unexpected: tuple[str, ...] = ()  # read but never attempted
    failed_present: tuple[str, ...] = ()  # read although their add definitely failed
    recovered: tuple[str, ...] = ()  # info adds that did take effect (fine, reported for interest)
    reason: str = ""

    def render(self) -> str:
        text = f"set {self.key!r}: {self.verdict.value} ({self.acknowledged} acknowledged adds)"
        if self.reason:
            text += f": {self.reason}"
        for label, items in (
            ("lost", self.lost),
            ("never added", self.unexpected),
            ("add failed but present", self.failed_present),
        ):
            if items:
                text += f"\n  {label} ({len(items)}): {', '.join(items[:20])}"
        return text


def check_set(history: Iterable[Event] | Sequence[Operation]) -> dict[str, SetResult]:
    """Adds are ``f="add"`` with the element as ``value``; the final read is the last ok
    ``f="read"`` of the key, whose value is the list of elements. Without a final read the
    verdict is ``unknown``: nothing was lost that we could see, but nothing was seen."""
    ops = _operations(history)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return {
        key: _check_one_set(key, key_ops) for key, key_ops in sorted(by_key.items()) if _has_adds(key_ops)
    }


def _has_adds(ops: Sequence[Operation]) -> bool:
    return any(op.f == "add" for op in ops)


def _check_one_set(key: str, ops: Sequence[Operation]) -> SetResult:
    adds: dict[str, set[str]] = defaultdict(set)
    for op in ops:
        if op.f == "add":
            adds[op.type].add(canonical(op.value))
    ok = adds["ok"]
    reads = [op for op in ops if op.f == "read" and op.type == "ok"]
    if not reads:
        return SetResult(key, Verdict.UNKNOWN, len(ok), reason="no final read")
    final = reads[-1]
    if not isinstance(final.value, list):
        return SetResult(key, Verdict.VIOLATION, len(ok), reason=f"final read is not a list: {final.value!r}")
    seen = {canonical(v) for v in final.value}
    attempted = ok | adds["info"] | adds["fail"]
    lost = tuple(sorted(ok - seen))
    unexpected = tuple(sorted(seen - attempted))
    failed_present = tuple(sorted((adds["fail"] - ok - adds["info"]) & seen))
    bad = bool(lost or unexpected or failed_present)
    return SetResult(
        key,
        Verdict.VIOLATION if bad else Verdict.OK,
        len(ok),
        lost,
        unexpected,
        failed_present,
        tuple(sorted(adds["info"] & seen)),
    )


def _operations(history: Iterable[Event] | Sequence[Operation]) -> list[Operation]:
    items = list(history)
    if items and isinstance(items[0], Event):
        return pair_operations(e for e in items if isinstance(e, Event))
    return [op for op in items if isinstance(op, Operation)]


# ------------------------------------------------------------------ log


@dataclass(frozen=True)
class LogProblem:
    node: int
    offset: int | None
    what: str

    def render(self) -> str:
        where = "" if self.offset is None else f" at offset {self.offset}"
        return f"node {self.node}{where}: {self.what}"


@dataclass(frozen=True)
class LogResult:
    verdict: Verdict
    longest: int  # entries in the longest log
    lengths: dict[int, int] = field(default_factory=dict)
    problems: tuple[LogProblem, ...] = ()
    windows: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> (after, through)

    def render(self) -> str:
        text = f"log: {self.verdict.value} (longest {self.longest} entries; lengths {self.lengths})"
        if self.windows:
            text += f"; offsets held (after, through]: {self.windows}"
        return text + "".join(f"\n  {p.render()}" for p in self.problems[:50])


def check_log(
    logs: Mapping[int, Sequence[tuple[int, Hashable]]],
    *,
    dense: bool = True,
    identity: Callable[[Hashable], Hashable | None] | None = None,
    windows: Mapping[int, tuple[int, int]] | None = None,
) -> LogResult:
    """``logs`` maps a node to its committed log as (offset, record) pairs in its order.

    Committed entries never differ between nodes (Raft's State Machine Safety, seen from
    outside): wherever two nodes both hold a stretch of the log, they must hold the same
    records at the same offsets. No log may hold a record twice, and offsets must increase.

    ``windows`` says which offsets each node's log holds completely, as ``(after, through)``:
    every record with ``after < offset <= through`` and no other. A node that compacted its
    log into a snapshot holds only the offsets after the snapshot (``after`` = its end), up
    to the high watermark it answered with. Two nodes are compared on the offsets both
    hold, so a node that keeps older records is checked against one that compacted them,
    and a record one node has where the other has none is a disagreement. Without
    ``windows`` every log is taken to start at the lowest first offset of all of them and to
    end at its own last record: each must then be a prefix of every longer one (empty logs
    trivially are).

    ``dense=True`` also requires consecutive offsets (no gaps). ``dense=False`` is for logs
    that show only some entries (pyraft's ``/metadata_fetch/`` omits commands the store
    rejected): a hole that one node has and another does not still shows up as a mismatch.
    ``identity`` maps a record to what makes it unique (say its UUID), or None for records
    that may repeat (a no-op); without it the whole record is its identity.
    """
    problems: list[LogProblem] = []
    starts = {entries[0][0] for entries in logs.values() if entries}
    base = min(starts) if starts else 0
    held = dict(windows) if windows is not None else _prefix_windows(logs, base)
    for node, entries in sorted(logs.items()):
        first = held[node][0] + 1 if windows is not None else base
        problems += _gaps_and_duplicates(node, entries, first if dense else None, identity)
        problems += _outside_window(node, entries, held[node])
    nodes = sorted(logs)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            problems += _disagreement(a, logs[a], held[a], b, logs[b], held[b])
    lengths = {node: len(entries) for node, entries in sorted(logs.items())}
    verdict = Verdict.VIOLATION if problems else Verdict.OK
    shown = {node: held[node] for node in nodes} if windows is not None else {}
    return LogResult(verdict, max(lengths.values(), default=0), lengths, tuple(problems), shown)


def _prefix_windows(
    logs: Mapping[int, Sequence[tuple[int, Hashable]]], base: int
) -> dict[int, tuple[int, int]]:
    """Without snapshots every log starts at the common base and holds everything up to its last record."""
    return {node: (base - 1, entries[-1][0] if entries else base - 1) for node, entries in logs.items()}


def _gaps_and_duplicates(
    node: int,
    entries: Sequence[tuple[int, Hashable]],
    base: int | None,
    identity: Callable[[Hashable], Hashable | None] | None,
) -> list[LogProblem]:
    problems = []
    seen: dict[Hashable, int] = {}
    expected = base
    previous: int | None = None
    for offset, record in entries:
        if expected is not None and offset != expected:
            kind = "gap" if offset > expected else "offset repeated or out of order"
            problems.append(LogProblem(node, offset, f"{kind}: expected offset {expected}"))
        if expected is None and previous is not None and offset <= previous:
            problems.append(LogProblem(node, offset, f"offset repeated or out of order after {previous}"))
        ident = record if identity is None else identity(record)
        if ident is not None:
            if ident in seen:
                problems.append(LogProblem(node, offset, f"record {ident!r} duplicates offset {seen[ident]}"))
            seen.setdefault(ident, offset)
        previous = offset
        if expected is not None:
            expected = offset + 1
    return problems


def _outside_window(
    node: int, entries: Sequence[tuple[int, Hashable]], window: tuple[int, int]
) -> list[LogProblem]:
    """A record the node says it does not hold (before its snapshot's end, past its high watermark)."""
    after, through = window
    return [
        LogProblem(node, offset, f"record outside the offsets the node holds, ({after}, {through}]")
        for offset, _ in entries
        if not after < offset <= through
    ][:1]


def _disagreement(
    a: int,
    a_entries: Sequence[tuple[int, Hashable]],
    a_window: tuple[int, int],
    b: int,
    b_entries: Sequence[tuple[int, Hashable]],
    b_window: tuple[int, int],
) -> list[LogProblem]:
    """The first offset in the stretch both nodes hold where their records differ (or one has none).

    The problem is the shorter log's: it is the one that is not a prefix of the other."""
    after, through = max(a_window[0], b_window[0]), min(a_window[1], b_window[1])
    if through <= after:
        return []
    if a_window[1] > b_window[1]:
        a, a_entries, b, b_entries = b, b_entries, a, a_entries
    mine = dict(e for e in a_entries if after < e[0] <= through)
    theirs = dict(e for e in b_entries if after < e[0] <= through)
    for offset in sorted(mine.keys() | theirs.keys()):
        if offset not in mine or offset not in theirs or mine[offset] != theirs[offset]:
            what = (
                f"has {_show(mine, offset)} where node {b} has {_show(theirs, offset)}: "
                f"not a prefix of node {b}'s log (both hold offsets ({after}, {through}])"
            )
            return [LogProblem(a, offset, what)]
    return []


def _show(entries: Mapping[int, Any], offset: int) -> str:
    return json.dumps(entries[offset], default=repr) if offset in entries else "no record"


# ------------------------------------------------------------------ state agreement


@dataclass(frozen=True)
class StateProblem:
    point: str  # what was compared, e.g. "state at offset 301"
    sources: tuple[str, str]  # the first source and one that disagrees with it
    difference: str

    def render(self) -> str:
        first, other = self.sources
        return f"{self.point}: {other} differs from {first}: {self.difference}"


@dataclass(frozen=True)
class StateResult:
    """Whether every source of one state (a node's snapshot, another's log replayed, a live read) agrees."""

    verdict: Verdict
    compared: dict[str, int] = field(default_factory=dict)  # point -> how many sources were compared
    problems: tuple[StateProblem, ...] = ()
    reason: str = ""

    def render(self) -> str:
        text = f"state: {self.verdict.value} ({len(self.compared)} points compared)"
        if self.reason:
            text += f": {self.reason}"
        return text + "".join(f"\n  {p.render()}" for p in self.problems[:20])


def check_states(points: Mapping[str, Mapping[str, Any]]) -> StateResult:
    """``points`` maps what is compared (say "state at offset 301") to its sources (say
    "node 2 snapshot", "node 3 log replayed") and the JSON value each gives; at every point
    all sources must give the same value. A point with a single source compares nothing;
    with none compared at all the verdict is ``unknown``."""
    problems: list[StateProblem] = []
    compared = {point: len(sources) for point, sources in points.items() if len(sources) > 1}
    for point, sources in points.items():
        items = sorted(sources.items())
        if len(items) < 2:
            continue
        first, expected = items[0]
        for source, value in items[1:]:
            if canonical(value) != canonical(expected):
                problems.append(StateProblem(point, (first, source), first_difference(expected, value)))
    if problems:
        return StateResult(Verdict.VIOLATION, compared, tuple(problems))
    if not compared:
        return StateResult(Verdict.UNKNOWN, compared, reason="no point had two sources to compare")
    return StateResult(Verdict.OK, compared)


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON values first differ, and what each holds there (shortened)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys(), key=str):
            if key not in a or key not in b:
                side = "only the second" if key not in a else "only the first"
                return f"{path}/{key}: {side} has it"
            if canonical(a[key]) != canonical(b[key]):
                return first_difference(a[key], b[key], f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if canonical(x) != canonical(y):
                return first_difference(x, y, f"{path}[{i}]")
        if len(a) != len(b):
            return f"{path}: {len(a)} items against {len(b)}"
    return f"{path or '/'}: {canonical(a)[:200]} against {canonical(b)[:200]}"


# ------------------------------------------------------------------ durability


@dataclass(frozen=True)
class NodeWrites:
    """What one node's final metadata shows of the workloads' writes (see :func:`check_durable`).

    ``logged``: the (key, canonical value) pairs that records of the node's log tail write.
    ``registers``: per register key, the (canonical value, offset of the record that wrote it)
    the node's snapshot holds. ``members``: the (key, canonical element) pairs the snapshot
    holds for set keys. A node without a snapshot has both empty and its whole log in ``logged``.
    """

    logged: frozenset[tuple[str, str]]
    registers: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    members: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class DurabilityResult:
    """Acknowledged writes checked against what each node's final log and snapshot hold."""

    verdict: Verdict
    acknowledged: int
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)  # node -> "key=value" lost there
    reason: str = ""
    superseded: int = 0  # (write, node) pairs found only as overwritten by a later write
    unverified: dict[int, tuple[str, ...]] = field(default_factory=dict)  # node -> writes it cannot judge

    def render(self) -> str:
        text = f"durability: {self.verdict.value} ({self.acknowledged} acknowledged writes"
        text += f", {self.superseded} found overwritten in a snapshot)"
        if self.reason:
            text += f": {self.reason}"
        for node, lost in sorted(self.missing.items()):
            text += f"\n  node {node} lost {len(lost)}: {', '.join(lost[:20])}"
        for node, unknown in sorted(self.unverified.items()):
            text += f"\n  node {node} cannot show {len(unknown)} (overwritten by a concurrent write of "
            text += f"unknown offset): {', '.join(unknown[:10])}"
        return text


def check_durable(
    history: Iterable[Event] | Sequence[Operation],
    nodes: Mapping[int, NodeWrites],
    keys: Callable[[str], bool],
    offsets: Mapping[tuple[str, str], int] | None = None,
) -> DurabilityResult:
    """No acknowledged write lost: every ok ``write``/``add`` of a key that ``keys`` selects must
    have survived on every node. Without any node's view the verdict is ``unknown``.

    A node that compacted its log keeps only the latest value of each key in its snapshot,
    so an acknowledged write (key, value) counts as kept by a node when

    1. a record of the node's log tail writes it (witnessed), or
    2. the node's snapshot holds it: the key's value, or an element of the set (reflected;
       elements are never removed by the workloads), or
    3. (registers) the snapshot holds a value of the key written *after* it (superseded):
       at an offset above the write's acknowledged offset (``offsets`` maps (key, canonical
       value) to the offset the ok answer named), or, when that offset is unknown, by an
       operation invoked after the write's ok came back.

    Otherwise the write is lost there: in particular when the snapshot holds an older value
    (written at or below the acknowledged offset, or by an operation that ended before this
    write began) and the tail lacks the write. A write whose offset is unknown and whose
    key's snapshot value came from an overlapping operation cannot be placed before or after
    that value; it is reported as unverified, not lost (pyraft names the offset of every
    acknowledged write, so this happens only when an answer lacked it). What rule 3 cannot
    see is a write lost *and* overwritten before every node compacted past it: its trace is
    gone from every snapshot, and only the register reads (linearizability) can catch it.
    """
    ops = _operations(history)
    acked = [op for op in ops if op.type == "ok" and op.f in ("write", "add") and keys(op.key)]
    if not nodes:
        return DurabilityResult(Verdict.UNKNOWN, len(acked), reason="no node's log was read")
    writers = {(op.key, canonical(op.value)): op for op in ops if op.f == "write" and op.type != "fail"}
    missing: dict[int, list[str]] = defaultdict(list)
    unverified: dict[int, list[str]] = defaultdict(list)
    superseded = 0
    for node, view in sorted(nodes.items()):
        for op in acked:
            fate = _fate(op, view, writers, offsets or {})
            name = f"{op.key}={canonical(op.value)}"
            if fate == "lost":
                missing[node].append(name)
            elif fate == "unverified":
                unverified[node].append(name)
            superseded += fate == "superseded"
    return DurabilityResult(
        Verdict.VIOLATION if missing else Verdict.OK,
        len(acked),
        {node: tuple(sorted(lost)) for node, lost in missing.items()},
        superseded=superseded,
        unverified={node: tuple(sorted(names)) for node, names in unverified.items()},
    )


def _fate(
    op: Operation,
    view: NodeWrites,
    writers: Mapping[tuple[str, str], Operation],
    offsets: Mapping[tuple[str, str], int],
) -> str:
    """What one node shows of one acknowledged write: kept, superseded, lost or unverified."""
    write = (op.key, canonical(op.value))
    if write in view.logged:
        return "kept"
    if op.f == "add":
        return "kept" if write in view.members else "lost"
    held = view.registers.get(op.key)
    if held is None:
        return "lost"
    value, written_at = held
    if value == write[1]:
        return "kept"
    offset = offsets.get(write)
    if offset is not None:
        return "superseded" if written_at > offset else "lost"
    other = writers.get((op.key, value))
    if other is not None and op.complete is not None and other.invoke > op.complete:
        return "superseded"
    if other is not None and other.type == "ok" and other.complete is not None and other.complete < op.invoke:
        return "lost"
    return "unverified"

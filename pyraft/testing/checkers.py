"""Checkers for the set and log workloads, and a single entry point to the register checker.

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
    "SetResult",
    "Verdict",
    "check_durable",
    "check_log",
    "check_register",
    "check_registers",
    "check_set",
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

    def render(self) -> str:
        text = f"log: {self.verdict.value} (longest {self.longest} entries; lengths {self.lengths})"
        return text + "".join(f"\n  {p.render()}" for p in self.problems[:50])


def check_log(
    logs: Mapping[int, Sequence[tuple[int, Hashable]]],
    *,
    dense: bool = True,
    identity: Callable[[Hashable], Hashable | None] | None = None,
) -> LogResult:
    """``logs`` maps a node to its committed log as (offset, record) pairs in its order.

    Each log must have consecutive offsets from a common base (no gaps), no record twice, and
    be a prefix of the longest log: committed entries never differ between nodes (Raft's State
    Machine Safety, seen from outside). Empty logs are trivially prefixes.

    ``dense=False`` is for logs that show only some entries (pyraft's ``/metadata_fetch/``
    omits commands the store rejected): offsets must then strictly increase, and a hole that
    one node has and another does not still shows up as a prefix mismatch. ``identity`` maps
    a record to what makes it unique (say its UUID), or None for records that may repeat (a
    no-op); without it the whole record is its identity.
    """
    problems: list[LogProblem] = []
    starts = {entries[0][0] for entries in logs.values() if entries}
    base = min(starts) if starts else 0
    for node, entries in sorted(logs.items()):
        problems += _gaps_and_duplicates(node, entries, base if dense else None, identity)
    longest_node = max(logs, key=lambda n: len(logs[n]), default=None)
    longest = list(logs[longest_node]) if longest_node is not None else []
    for node, entries in sorted(logs.items()):
        problems += _prefix_problems(node, entries, longest, longest_node)
    lengths = {node: len(entries) for node, entries in sorted(logs.items())}
    verdict = Verdict.VIOLATION if problems else Verdict.OK
    return LogResult(verdict, len(longest), lengths, tuple(problems))


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


def _prefix_problems(
    node: int,
    entries: Sequence[tuple[int, Hashable]],
    longest: Sequence[tuple[int, Hashable]],
    longest_node: int | None,
) -> list[LogProblem]:
    for mine, theirs in zip(entries, longest, strict=False):
        if mine != theirs:
            what = f"has {_show(mine)} where node {longest_node} has {_show(theirs)}: not a prefix"
            return [LogProblem(node, mine[0], what)]
    return []


def _show(entry: tuple[int, Any]) -> str:
    return json.dumps(entry[1], default=repr)


# ------------------------------------------------------------------ durability


@dataclass(frozen=True)
class DurabilityResult:
    """Acknowledged writes checked against what each node's final log holds."""

    verdict: Verdict
    acknowledged: int
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)  # node -> "key=value" lost there
    reason: str = ""

    def render(self) -> str:
        text = f"durability: {self.verdict.value} ({self.acknowledged} acknowledged writes)"
        if self.reason:
            text += f": {self.reason}"
        for node, lost in sorted(self.missing.items()):
            text += f"\n  node {node} lost {len(lost)}: {', '.join(lost[:20])}"
        return text


def check_durable(
    history: Iterable[Event] | Sequence[Operation],
    witnessed: Mapping[int, set[tuple[str, str]]],
    keys: Callable[[str], bool],
) -> DurabilityResult:
    """No acknowledged write lost: every ok ``write``/``add`` of a key that ``keys`` selects must be
    in every node's final log. ``witnessed`` maps a node to the (key, canonical value) pairs its
    log holds. Without any node's log the verdict is ``unknown``."""
    acked = {
        (op.key, canonical(op.value))
        for op in _operations(history)
        if op.type == "ok" and op.f in ("write", "add") and keys(op.key)
    }
    if not witnessed:
        return DurabilityResult(Verdict.UNKNOWN, len(acked), reason="no node's log was read")
    missing = {
        node: tuple(sorted(f"{k}={v}" for k, v in acked - held))
        for node, held in sorted(witnessed.items())
        if acked - held
    }
    return DurabilityResult(Verdict.VIOLATION if missing else Verdict.OK, len(acked), missing)

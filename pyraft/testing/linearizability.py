"""Linearizability of a read/write register per key: the Wing-Gong search with Lowe's memoization.

The search walks the operations' call and return points in time order and tries
to place ("linearize") each call before the earliest pending return; when it
reaches a return whose operation is not yet placed it backtracks. Lowe's
improvement remembers every (set of placed operations, register state) it has
been in, so each configuration is explored at most once; this is what keeps
realistic histories, with a handful of concurrent clients, tractable.

Recording semantics, per operation type (an ``info`` write of a value no read returned is
dropped too: it may as well never have happened, see :func:`_without_unseen_info_writes`):

* ``ok``: took effect exactly once, between invoke and completion;
* ``fail``: never took effect, so it is dropped before the search;
* ``info``: may or may not have taken effect, at any time after its invoke (its
  return is at infinity), so the search may leave it out. An ``info`` read
  constrains nothing and is dropped.

A search that runs out of its budget answers ``unknown``, never ``ok``.

When a key is not linearizable, :func:`shrink_window` looks for a small
contiguous window of operations that is *by itself* not linearizable in a way
that proves the whole history is not: cuts that only remove evidence (see
:func:`cut_before` and :func:`drop_before`) and removal of single reads.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from pyraft.testing.history import Event, Operation, pair_operations

DEFAULT_MAX_STEPS: Final = 2_000_000
MAX_SHRINK_OPS: Final = 400  # beyond this, greedy read removal costs more than it clarifies


class Verdict(StrEnum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


class _Any:
    """The register state when the past is unknown: the first read decides it."""

    def __repr__(self) -> str:
        return "<any>"


ANY_STATE: Final = _Any()
UNSET: Final = "null"  # canonical form of ``None``: a key never written reads as None


def canonical(value: Any) -> str:
    """Values are compared by their canonical JSON, so lists and dicts from JSON are hashable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class _Entry:
    """One call or return point in the doubly linked list the search lifts operations out of."""

    op: int
    is_call: bool
    time: float
    prev: _Entry | None = None
    next: _Entry | None = None
    match: _Entry | None = None


@dataclass(frozen=True)
class SearchResult:
    verdict: Verdict
    steps: int
    deepest: int  # most operations ever linearized at once: how far the search got


def check_register(
    ops: Sequence[Operation],
    *,
    initial: str | _Any = UNSET,
    max_steps: int = DEFAULT_MAX_STEPS,
    deadline: float | None = None,
) -> SearchResult:
    """Is this one key's history linearizable for a register starting at ``initial``?

    ``deadline`` is a ``time.monotonic()`` value; with ``max_steps`` it bounds the search.
    """
    live = _without_unseen_info_writes([op for op in ops if _constrains(op)])
    head = _build_entries(live)
    return _search(head, live, initial, max_steps, deadline)


def _constrains(op: Operation) -> bool:
    if op.type == "fail":
        return False
    return not (op.f == "read" and op.type != "ok")


def _without_unseen_info_writes(ops: Sequence[Operation]) -> list[Operation]:
    """Drop ``info`` writes of values no ok read returned: an equivalent, smaller search.

    Such a write may be taken not to have happened: given a linearization that places it,
    the operations right after it up to the next write are writes or reads of its value,
    and there are no such reads, so removing it leaves a linearization. Each one dropped
    halves the space the search might otherwise explore (timeouts pile up under faults).
    """
    read = {canonical(op.value) for op in ops if op.f == "read"}
    return [
        op for op in ops if not (op.type == "info" and op.f == "write" and canonical(op.value) not in read)
    ]


def _build_entries(ops: Sequence[Operation]) -> _Entry:
    """Call and return points in time order; at equal times calls come first (treated as overlapping)."""
    points: list[_Entry] = []
    for i, op in enumerate(ops):
        call = _Entry(i, True, float(op.invoke))
        ret = _Entry(i, False, op.returns, match=call)
        call.match = ret
        points += [call, ret]
    points.sort(key=lambda e: (e.time, not e.is_call))
    head = _Entry(-1, False, float("-inf"))
    prev = head
    for entry in points:
        prev.next, entry.prev = entry, prev
        prev = entry
    return head


def _step(state: str | _Any, op: Operation) -> str | _Any | None:
    """The register model: the state after ``op``, or None if ``op`` cannot happen in ``state``."""
    value = canonical(op.value)
    if op.f == "write":
        return value
    if state is ANY_STATE or state == value:
        return value
    return None


def _lift(call: _Entry) -> None:
    for entry in (call, call.match):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry.next
        if entry.next is not None:
            entry.next.prev = entry.prev


def _unlift(call: _Entry) -> None:
    for entry in (call.match, call):
        assert entry is not None and entry.prev is not None
        entry.prev.next = entry
        if entry.next is not None:
            entry.next.prev = entry


def _search(
    head: _Entry, ops: Sequence[Operation], initial: str | _Any, max_steps: int, deadline: float | None
) -> SearchResult:
    state: str | _Any = initial
    placed = 0  # bitmask of linearized operations
    seen: set[tuple[int, str | _Any]] = set()
    stack: list[tuple[_Entry, str | _Any]] = []
    entry, steps, deepest = head.next, 0, 0
    while entry is not None and not (not entry.is_call and ops[entry.op].type == "info"):
        steps += 1
        if steps > max_steps or (deadline is not None and steps % 4096 == 0 and time.monotonic() > deadline):
            return SearchResult(Verdict.UNKNOWN, steps, deepest)
        if entry.is_call:
            after = _step(state, ops[entry.op])
            bits = placed | (1 << entry.op)
            if after is None or (bits, after) in seen:
                entry = entry.next  # cannot go here, or been here before: try a later call
                continue
            seen.add((bits, after))
            stack.append((entry, state))
            state, placed = after, bits
            deepest = max(deepest, len(stack))
            _lift(entry)
            entry = head.next
            continue
        if not stack:
            return SearchResult(Verdict.VIOLATION, steps, deepest)
        call, state = stack.pop()
        placed &= ~(1 << call.op)
        _unlift(call)
        entry = call.next
    return SearchResult(Verdict.OK, steps, deepest)


# ------------------------------------------------------------------ windows


def cut_before(ops: Sequence[Operation], t: float) -> list[Operation]:
    """The history as an observer at time ``t`` knows it: later invokes are gone, and operations
    still in flight at ``t`` become ``info``. If the whole history is linearizable, so is this
    (restrict a linearization to the operations placed before ``t``), so a failing cut proves a
    failing whole."""
    kept = []
    for op in ops:
        if op.invoke >= t:
            continue
        kept.append(op if op.returns <= t else replace(op, type="info"))
    return kept


def drop_before(ops: Sequence[Operation], t: float) -> list[Operation]:
    """Forget the ok operations that completed before ``t``; the rest is checked from :data:`ANY_STATE`.

    Sound only with care for what overlaps the forgotten part. Let ``b`` be the last return
    among the forgotten operations. A kept operation invoked after ``b`` is linearized after
    all of them; one invoked before ``b`` might be linearized among them, where the state is
    not the one the rest starts from. So such an ok read is dropped too (that only removes
    evidence) and such an ok write becomes ``info`` (it may then be left out). Given any
    linearization of the whole, the operations after the last forgotten one are then a
    linearization of the rest from the state there; a failure from every state therefore
    proves a failing whole.
    """
    forgotten = [op.returns for op in ops if op.type == "ok" and op.returns < t]
    if not forgotten:
        return list(ops)
    boundary = max(forgotten)
    kept = []
    for op in ops:
        if op.type == "ok" and op.returns < t:
            continue
        if op.type == "ok" and op.invoke < boundary:
            if op.f == "read":
                continue
            op = replace(op, type="info")
        kept.append(op)
    return kept


@dataclass(frozen=True)
class Window:
    ops: tuple[Operation, ...]
    initial: str | _Any


def shrink_window(ops: Sequence[Operation], max_steps: int = 200_000) -> Window:
    """A small window of ``ops`` (a non-linearizable history of one key) that still fails alone.

    Three sound reductions, each checked with a bounded search (``unknown`` counts as passing):
    the earliest cut time, then the latest start with the state unknown, then single reads removed.
    """
    live = [op for op in ops if _constrains(op)]
    live = _earliest_failing_cut(live, max_steps)
    window = _latest_failing_start(live, max_steps)
    return _drop_reads(window, max_steps)


def _fails(ops: Sequence[Operation], initial: str | _Any, max_steps: int) -> bool:
    return check_register(ops, initial=initial, max_steps=max_steps).verdict is Verdict.VIOLATION


def _earliest_failing_cut(ops: list[Operation], max_steps: int) -> list[Operation]:
    """Failing cuts are upward closed in time (a cut of a cut is a cut), so binary search works."""
    times = sorted({op.returns for op in ops if op.type == "ok"})
    lo, hi, best = 0, len(times) - 1, ops
    while lo <= hi:
        mid = (lo + hi) // 2
        cut = cut_before(ops, times[mid])
        if _fails(cut, UNSET, max_steps):
            best, hi = cut, mid - 1
        else:
            lo = mid + 1
    return [op for op in best if _constrains(op)]


def _latest_failing_start(ops: list[Operation], max_steps: int) -> Window:
    """If dropping up to ``t2`` fails from any state, so does dropping up to any ``t1 < t2`` (the
    former is a drop of the latter): failing starts form a prefix, so binary search the latest."""
    if not _fails(ops, ANY_STATE, max_steps):
        return Window(tuple(ops), UNSET)
    times = sorted({op.returns for op in ops if op.type == "ok"})
    lo, hi, best = 0, len(times) - 1, ops
    while lo <= hi:
        mid = (lo + hi) // 2
        rest = drop_before(ops, times[mid])
        if rest and _fails(rest, ANY_STATE, max_steps):
            best, lo = rest, mid + 1
        else:
            hi = mid - 1
    return Window(tuple(best), ANY_STATE)


def _drop_reads(window: Window, max_steps: int) -> Window:
    """Removing an ok read only removes evidence, so a window that still fails without it is sound."""
    ops = list(window.ops)
    if len(ops) > MAX_SHRINK_OPS:
        return window
    i = len(ops) - 1
    while i >= 0:
        if ops[i].f == "read":
            trial = ops[:i] + ops[i + 1 :]
            if _fails(trial, window.initial, max_steps):
                ops = trial
        i -= 1
    return Window(tuple(ops), window.initial)


# ------------------------------------------------------------------ per-key results


@dataclass(frozen=True)
class KeyResult:
    key: str
    verdict: Verdict
    operations: int
    steps: int
    window: Window | None = None

    def render(self) -> str:
        head = f"key {self.key!r}: {self.verdict.value} ({self.operations} operations, {self.steps} steps)"
        if self.window is None:
            return head
        return head + "\n" + render_window(self.window)


@dataclass(frozen=True)
class LinearizabilityResult:
    keys: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        """The worst over keys: one violation decides; else one unknown leaves it unknown."""
        verdicts = {r.verdict for r in self.keys.values()}
        for worst in (Verdict.VIOLATION, Verdict.UNKNOWN):
            if worst in verdicts:
                return worst
        return Verdict.OK

    def render(self) -> str:
        lines = [f"registers: {self.verdict.value} over {len(self.keys)} keys"]
        lines += [r.render() for r in self.keys.values() if r.verdict is not Verdict.OK]
        return "\n".join(lines)


def check_registers(
    history: Iterable[Event] | Sequence[Operation],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    timeout: float | None = None,
    shrink: bool = True,
) -> LinearizabilityResult:
    """Check every key of a read/write history on its own (linearizability is compositional)."""
    ops = _as_operations(history)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.f in ("read", "write"):
            by_key[op.key].append(op)
    deadline = None if timeout is None else time.monotonic() + timeout
    results = {}
    for key, key_ops in sorted(by_key.items()):
        found = check_register(key_ops, max_steps=max_steps, deadline=deadline)
        window = shrink_window(key_ops) if shrink and found.verdict is Verdict.VIOLATION else None
        results[key] = KeyResult(key, found.verdict, len(key_ops), found.steps, window)
    return LinearizabilityResult(results)


def _as_operations(history: Iterable[Event] | Sequence[Operation]) -> list[Operation]:
    items = list(history)
    if items and isinstance(items[0], Event):
        return pair_operations(e for e in items if isinstance(e, Event))
    return [op for op in items if isinstance(op, Operation)]


# ------------------------------------------------------------------ rendering

_BAR_WIDTH: Final = 40


def render_window(window: Window) -> str:
    """A table of the window's operations with a bar per operation on a shared time axis."""
    ops = sorted(window.ops, key=lambda op: op.invoke)
    start = min(op.invoke for op in ops)
    ends = [op.returns for op in ops if op.returns != float("inf")]
    end = max([*ends, *(op.invoke for op in ops)])
    span = max(end - start, 1)
    initial = "any (earlier history cut away)" if window.initial is ANY_STATE else window.initial
    lines = [
        f"  smallest failing window: {len(ops)} operations, initial value {initial}",
        f"  {'process':>7}  {'f':<5}  {'value':<16}  {'type':<4}  {'invoke ms':>10}  {'return ms':>10}"
        "  timeline",
    ]
    for op in ops:
        lines.append("  " + _render_op(op, start, span))
    written = {canonical(op.value) for op in ops if op.f == "write"}
    earlier = sorted({canonical(op.value) for op in ops if op.f == "read"} - written - {UNSET})
    if earlier and window.initial is ANY_STATE:
        lines.append(
            f"  read but not written within the window (written earlier, or never): {', '.join(earlier)}"
        )
    return "\n".join(lines)


def _render_op(op: Operation, start: int, span: float) -> str:
    invoke_ms = (op.invoke - start) / 1e6
    returns = "open" if op.returns == float("inf") else f"{(op.returns - start) / 1e6:10.3f}"
    value = canonical(op.value)
    value = value if len(value) <= 16 else value[:15] + "…"
    return (
        f"{op.process:>7}  {op.f:<5}  {value:<16}  {op.type:<4}  {invoke_ms:10.3f}  {returns:>10}  "
        f"{_bar(op, start, span)}"
    )


def _bar(op: Operation, start: int, span: float) -> str:
    first = int((op.invoke - start) / span * (_BAR_WIDTH - 1))
    last = (
        _BAR_WIDTH - 1 if op.returns == float("inf") else int((op.returns - start) / span * (_BAR_WIDTH - 1))
    )
    cells = [" "] * _BAR_WIDTH
    for i in range(first, last + 1):
        cells[i] = "="
    cells[first] = "["
    cells[last] = ">" if op.returns == float("inf") else "]"
    return "|" + "".join(cells) + "|"

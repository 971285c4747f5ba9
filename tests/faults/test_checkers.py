"""Self-tests of the checkers: hand-made histories whose verdict we know by reasoning.

Times are in abstract units (the checkers only compare them). ``op(p, f, value, start, end)``
is one operation of process ``p``; ``end=None`` leaves it open (``info`` with no completion).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pyraft.testing.checkers import (
    NodeWrites,
    Verdict,
    check_durable,
    check_log,
    check_register,
    check_registers,
    check_set,
    check_states,
)
from pyraft.testing.history import Event, Operation, pair_operations
from pyraft.testing.linearizability import ANY_STATE, cut_before, drop_before, render_window, shrink_window

Kind = Literal["ok", "fail", "info"]


def op(
    p: int, f: Literal["read", "write", "add"], value: Any, start: int, end: int | None, kind: Kind = "ok"
) -> list[Event]:
    events = [Event(p, "invoke", f, "x", None if f == "read" else value, start)]
    if end is not None:
        events.append(Event(p, kind, f, "x", value, end))
    return events


def history(*ops: list[Event]) -> list[Operation]:
    return pair_operations([e for events in ops for e in events])


def verdict(*ops: list[Event]) -> Verdict:
    return check_register(history(*ops)).verdict


# ------------------------------------------------------------------ linearizable


def test_sequential_writes_and_reads_are_linearizable() -> None:
    assert verdict(op(1, "write", 1, 0, 1), op(1, "read", 1, 2, 3), op(2, "write", 2, 4, 5)) is Verdict.OK


def test_read_of_unwritten_key_sees_none() -> None:
    assert verdict(op(1, "read", None, 0, 1), op(1, "write", 1, 2, 3)) is Verdict.OK


def test_concurrent_read_may_see_old_or_new_value() -> None:
    write = op(1, "write", 2, 10, 20)
    before = op(1, "write", 1, 0, 1)
    assert verdict(before, write, op(2, "read", 1, 11, 19)) is Verdict.OK
    assert verdict(before, write, op(2, "read", 2, 11, 19)) is Verdict.OK


def test_overlapping_writes_may_take_effect_in_either_order() -> None:
    a, b = op(1, "write", "a", 0, 10), op(2, "write", "b", 1, 11)
    assert verdict(a, b, op(3, "read", "a", 12, 13)) is Verdict.OK
    assert verdict(a, b, op(3, "read", "b", 12, 13)) is Verdict.OK


def test_read_order_must_be_consistent_among_overlapping_writes() -> None:
    a, b = op(1, "write", "a", 0, 10), op(2, "write", "b", 1, 11)
    # Reads during the overlap can see a then b: linearizable.
    assert verdict(a, b, op(3, "read", "a", 2, 3), op(3, "read", "b", 4, 5)) is Verdict.OK
    # After both completed, b then a would need a to take effect twice.
    assert verdict(a, b, op(3, "read", "b", 12, 13), op(3, "read", "a", 14, 15)) is Verdict.VIOLATION


def test_info_write_that_took_effect_late() -> None:
    """A timed-out write may be applied long after the client gave up."""
    assert (
        verdict(
            op(1, "write", 1, 0, 1),
            op(2, "write", 2, 2, 3, "info"),
            op(3, "read", 1, 4, 5),
            op(3, "read", 2, 6, 7),
        )
        is Verdict.OK
    )


def test_info_write_that_never_happened() -> None:
    assert verdict(op(1, "write", 1, 0, 1), op(2, "write", 2, 2, None), op(3, "read", 1, 9, 10)) is Verdict.OK


def test_failed_write_is_ignored_and_must_not_be_seen() -> None:
    assert (
        verdict(op(1, "write", 1, 0, 1), op(2, "write", 2, 2, 3, "fail"), op(3, "read", 1, 4, 5))
        is Verdict.OK
    )
    assert (
        verdict(op(1, "write", 1, 0, 1), op(2, "write", 2, 2, 3, "fail"), op(3, "read", 2, 4, 5))
        is Verdict.VIOLATION
    )


def test_json_values_compare_structurally() -> None:
    assert verdict(
        op(1, "write", {"host": "a", "port": 1}, 0, 1), op(1, "read", {"port": 1, "host": "a"}, 2, 3)
    ) is (Verdict.OK)


# ------------------------------------------------------------------ not linearizable


def test_stale_read() -> None:
    found = verdict(op(1, "write", 1, 0, 1), op(1, "write", 2, 2, 3), op(2, "read", 1, 4, 5))
    assert found is Verdict.VIOLATION


def test_lost_write() -> None:
    assert verdict(op(1, "write", 1, 0, 1), op(2, "read", None, 2, 3)) is Verdict.VIOLATION


def test_read_of_value_never_written() -> None:
    assert verdict(op(1, "write", 1, 0, 1), op(2, "read", 7, 2, 3)) is Verdict.VIOLATION


def test_write_that_takes_effect_twice() -> None:
    """A retried write applied again after a later write: 1, 2 and then 1 again."""
    found = verdict(
        op(1, "write", 1, 0, 1), op(1, "write", 2, 2, 3), op(2, "read", 2, 4, 5), op(2, "read", 1, 6, 7)
    )
    assert found is Verdict.VIOLATION


# ------------------------------------------------------------------ budget, windows, rendering


def _busy_history(n: int) -> list[Operation]:
    """Many concurrent writes of distinct values, then a read of a value never written: the search
    must try every order of the writes before it can say no."""
    events = [e for p in range(n) for e in op(p, "write", p, 0, 100)]
    return history(events, op(n, "read", "never", 200, 201))


def test_search_budget_yields_unknown_never_ok() -> None:
    ops = _busy_history(14)
    assert check_register(ops, max_steps=1_000).verdict is Verdict.UNKNOWN
    assert check_register(ops, max_steps=1_000, deadline=time.monotonic() - 1).verdict is Verdict.UNKNOWN


def test_memoization_makes_wide_concurrency_tractable() -> None:
    events = [e for p in range(16) for e in op(p, "write", p, 0, 100)]
    ops = history(events, op(99, "read", 15, 200, 201))
    found = check_register(ops, max_steps=500_000)
    assert found.verdict is Verdict.OK


def test_cut_turns_in_flight_operations_into_info() -> None:
    ops = history(op(1, "write", 1, 0, 5), op(2, "write", 2, 1, 2), op(3, "read", 2, 6, 7))
    cut = cut_before(ops, 3)
    assert [(o.value, o.type) for o in cut] == [(1, "info"), (2, "ok")]


def test_shrink_finds_the_stale_read_among_many_good_operations() -> None:
    good = [op(1, "write", i, 10 * i, 10 * i + 1) for i in range(30)]
    reads = [op(2, "read", i, 10 * i + 2, 10 * i + 3) for i in range(30)]
    stale = op(3, "read", 3, 200, 201)  # 20 was written by then
    tail = [op(1, "write", 100 + i, 400 + i * 10, 401 + i * 10) for i in range(10)]
    ops = history(*good, *reads, stale, *tail)
    assert check_register(ops).verdict is Verdict.VIOLATION
    window = shrink_window(ops)
    assert len(window.ops) <= 3
    assert any(o.f == "read" and o.value == 3 for o in window.ops)
    assert check_register(window.ops, initial=window.initial).verdict is Verdict.VIOLATION


def test_shrink_keeps_initial_state_when_the_violation_needs_it() -> None:
    ops = history(op(1, "read", 5, 0, 1), op(1, "write", 1, 2, 3))
    window = shrink_window(ops)
    assert window.initial is not ANY_STATE
    assert [o.value for o in window.ops] == [5]


def test_check_registers_reports_each_key_and_renders_the_window() -> None:
    events = [
        Event(1, "invoke", "write", "a", 1, 0),
        Event(1, "ok", "write", "a", 1, 1),
        Event(1, "invoke", "write", "b", 1, 2),
        Event(1, "ok", "write", "b", 1, 3),
        Event(2, "invoke", "read", "b", None, 4),
        Event(2, "ok", "read", "b", 9, 5_000_000),
    ]
    result = check_registers(events)
    assert result.verdict is Verdict.VIOLATION
    assert result.keys["a"].verdict is Verdict.OK
    text = result.render()
    assert "key 'b': violation" in text and "read" in text and "9" in text
    window = result.keys["b"].window
    assert window is not None
    assert "|" in render_window(window)


# ------------------------------------------------------------------ set


def _adds(*items: tuple[Any, Kind]) -> list[Event]:
    events: list[Event] = []
    for t, (value, kind) in enumerate(items):
        events += [Event(t, "invoke", "add", "s", value, 2 * t), Event(t, kind, "add", "s", value, 2 * t + 1)]
    return events


def _final_read(values: list[Any]) -> list[Event]:
    return [Event(99, "invoke", "read", "s", None, 1000), Event(99, "ok", "read", "s", values, 1001)]


def test_set_with_all_acknowledged_adds_and_optional_info_adds() -> None:
    events = _adds((1, "ok"), (2, "ok"), (3, "info"), (4, "info")) + _final_read([1, 2, 3])
    result = check_set(events)["s"]
    assert result.verdict is Verdict.OK
    assert result.recovered == ("3",)


def test_set_lost_add_and_element_never_added() -> None:
    result = check_set(_adds((1, "ok"), (2, "ok")) + _final_read([1, 5]))["s"]
    assert result.verdict is Verdict.VIOLATION
    assert result.lost == ("2",) and result.unexpected == ("5",)
    assert "lost (1): 2" in result.render()


def test_set_failed_add_must_not_appear() -> None:
    result = check_set(_adds((1, "ok"), (2, "fail")) + _final_read([1, 2]))["s"]
    assert result.verdict is Verdict.VIOLATION and result.failed_present == ("2",)


def test_set_without_final_read_is_unknown() -> None:
    assert check_set(_adds((1, "ok")))["s"].verdict is Verdict.UNKNOWN


# ------------------------------------------------------------------ log


def test_logs_that_are_prefixes_of_the_longest() -> None:
    full = [(1, "a"), (2, "b"), (3, "c")]
    result = check_log({1: full, 2: full[:2], 3: []})
    assert result.verdict is Verdict.OK and result.lengths == {1: 3, 2: 2, 3: 0}


def test_log_divergence_is_reported_with_node_and_offset() -> None:
    result = check_log({1: [(1, "a"), (2, "b"), (3, "c")], 2: [(1, "a"), (2, "x")]})
    assert result.verdict is Verdict.VIOLATION
    assert [(p.node, p.offset) for p in result.problems] == [(2, 2)]
    assert "not a prefix" in result.render()


def test_log_gap_and_duplicate_record() -> None:
    result = check_log({1: [(1, "a"), (3, "b"), (4, "a")]})
    whats = [p.what for p in result.problems]
    assert result.verdict is Verdict.VIOLATION
    assert any("gap" in w for w in whats) and any("duplicates" in w for w in whats)


def test_sparse_log_allows_holes_but_not_disorder_and_duplicates_by_identity() -> None:
    """``/metadata_fetch/`` skips rejected commands: holes are fine, order and uniqueness are not."""

    def ident(record: object) -> object:
        return None if record == "noop" else record

    logs = {1: [(1, "noop"), (4, "a"), (9, "noop"), (12, "b")], 2: [(1, "noop"), (4, "a")]}
    assert check_log(logs, dense=False, identity=ident).verdict is Verdict.OK
    assert check_log(logs).verdict is Verdict.VIOLATION  # dense: the holes are gaps
    bad = check_log({1: [(1, "a"), (5, "b"), (3, "c"), (7, "a")]}, dense=False, identity=ident)
    whats = [p.what for p in bad.problems]
    assert any("out of order" in w for w in whats) and any("duplicates offset 1" in w for w in whats)


def test_logs_compacted_at_different_points_are_compared_where_both_hold_offsets() -> None:
    """Node 1 kept its log from offset 1, node 2 compacted up to 4, node 3 up to 9 and is behind."""
    full = [(1, "noop"), (3, "a"), (4, "b"), (6, "c"), (9, "d"), (12, "e")]
    logs = {1: full, 2: full[3:], 3: [(12, "e")]}
    windows = {1: (0, 13), 2: (4, 13), 3: (9, 12)}
    result = check_log(logs, dense=False, windows=windows)
    assert result.verdict is Verdict.OK, result.render()
    assert "offsets held" in result.render()
    # A record missing inside the stretch two nodes hold is a disagreement, not a hole in coverage.
    holed = check_log({**logs, 2: [full[3], full[5]]}, dense=False, windows=windows)
    assert [p.offset for p in holed.problems] == [9]  # both logs end at 13: either may be the wrong one
    assert 'has "d" where node 2 has no record' in holed.render()
    # Node 3 holds offsets up to 12 only: a record past them is reported, not compared.
    past = check_log({**logs, 3: [(12, "e"), (13, "f")]}, dense=False, windows=windows)
    assert [p.what.split(",")[0] for p in past.problems] == ["record outside the offsets the node holds"]
    # A different record at an offset both hold; the node whose log ends first is the culprit.
    forked = check_log({**logs, 3: [(12, "x")]}, dense=False, windows=windows)
    assert {(p.node, p.offset) for p in forked.problems} == {(3, 12)}
    # Logs that hold no common offset are never compared.
    apart = check_log({1: full[:2], 2: [(12, "zzz")]}, dense=False, windows={1: (0, 3), 2: (9, 12)})
    assert apart.verdict is Verdict.OK


def test_state_agreement_names_the_point_the_sources_and_the_difference() -> None:
    same = {"brokers": [{"id": 1, "host": "h1"}], "topics": ["a"]}
    ok = check_states({"state at offset 4": {"node 1 log": same, "node 2 snapshot": dict(same)}})
    assert ok.verdict is Verdict.OK and ok.compared == {"state at offset 4": 2}
    stale = {"brokers": [{"id": 1, "host": "h0"}], "topics": ["a"]}
    bad = check_states(
        {"state at offset 4": {"node 1 log": same, "node 2 snapshot": stale}, "x": {"only": 1}}
    )
    assert bad.verdict is Verdict.VIOLATION
    assert 'node 2 snapshot differs from node 1 log: /brokers[0]/host: "h1" against "h0"' in bad.render()
    assert check_states({"x": {"only one source": 1}}).verdict is Verdict.UNKNOWN


def test_durability_of_acknowledged_writes_per_node() -> None:
    events = [
        *(e for e in op(1, "write", "h1", 0, 1)),
        *(e for e in op(2, "write", "h2", 2, 3, "info")),  # unknown: need not be anywhere
        *(e for e in op(3, "write", "h3", 4, 5, "fail")),
    ]
    both = {
        1: NodeWrites(frozenset({("x", '"h1"')})),
        2: NodeWrites(frozenset({("x", '"h1"'), ("x", '"h2"')})),
    }
    assert check_durable(events, both, lambda k: True).verdict is Verdict.OK
    lost = check_durable(events, {1: NodeWrites(frozenset()), 2: both[1]}, lambda k: True)
    assert lost.verdict is Verdict.VIOLATION and lost.missing == {1: ('x="h1"',)}
    assert "node 1 lost 1" in lost.render()
    assert check_durable(events, {}, lambda k: True).verdict is Verdict.UNKNOWN


def test_durability_through_a_snapshot_kept_superseded_or_lost() -> None:
    """h1 acknowledged at offset 10, h2 at 20; x's snapshot value names the offset that wrote it."""
    events = [*op(1, "write", "h1", 0, 1), *op(1, "write", "h2", 2, 3)]
    offsets = {("x", '"h1"'): 10, ("x", '"h2"'): 20}

    def judge(registers: dict[str, tuple[str, int]], logged: frozenset[tuple[str, str]] = frozenset()) -> Any:
        return check_durable(events, {1: NodeWrites(logged, registers)}, lambda k: True, offsets)

    kept = judge({"x": ('"h2"', 20)})  # h2 is the value; h1 was overwritten by it, later
    assert kept.verdict is Verdict.OK and kept.superseded == 1
    # The snapshot ends before h2: h1 is its value and h2 is in the log tail.
    assert judge({"x": ('"h1"', 10)}, frozenset({("x", '"h2"')})).verdict is Verdict.OK
    # The snapshot holds an older value and the tail lacks h2: lost, wherever it should have been.
    lost = judge({"x": ('"h1"', 10)})
    assert lost.verdict is Verdict.VIOLATION and lost.missing == {1: ('x="h2"',)}
    stale = judge({"x": ('"h0"', 5)})
    assert stale.missing == {1: ('x="h1"', 'x="h2"')}
    assert judge({}).missing == {1: ('x="h1"', 'x="h2"')}  # a snapshot without the key at all


def test_durability_through_a_snapshot_without_offsets_uses_real_time() -> None:
    """Without the offset an answer named, only operations ordered in real time can be ordered."""
    before, after = op(1, "write", "h0", 0, 1), op(1, "write", "h2", 10, 11)
    acked = op(2, "write", "h1", 2, 5)
    overlapping = op(3, "write", "h3", 4, 8, "info")
    events = [*before, *acked, *after, *overlapping]

    def fate_of_h1(value: str) -> Any:
        return check_durable(events, {1: NodeWrites(frozenset(), {"x": (f'"{value}"', 99)})}, lambda k: True)

    assert 'x="h1"' not in fate_of_h1("h2").missing.get(1, ())  # written after h1 returned
    assert 'x="h1"' in fate_of_h1("h0").missing[1]  # ended before h1 began: h1 should be there
    unverified = fate_of_h1("h3")
    assert 'x="h1"' not in unverified.missing.get(1, ()) and 'x="h1"' in unverified.unverified[1]
    assert "cannot show" in unverified.render()


def test_set_elements_survive_in_the_snapshot() -> None:
    events = [*op(1, "add", "a", 0, 1), *op(1, "add", "b", 2, 3)]
    in_snapshot = NodeWrites(frozenset({("x", '"b"')}), members=frozenset({("x", '"a"')}))
    assert check_durable(events, {1: in_snapshot}, lambda k: True).verdict is Verdict.OK
    gone = NodeWrites(frozenset({("x", '"b"')}), members=frozenset({("x", '"c"')}))
    assert check_durable(events, {1: gone}, lambda k: True).missing == {1: ('x="a"',)}


def test_unread_info_writes_are_pruned_but_read_ones_count() -> None:
    # 40 overlapping timed-out writes nobody read cannot hide a stale read, nor cost the search.
    info = [e for p in range(40) for e in op(10 + p, "write", 100 + p, 0, 50, "info")]
    stale = history(info, op(1, "write", 1, 1, 2), op(1, "write", 2, 3, 4), op(2, "read", 1, 5, 6))
    found = check_register(stale, max_steps=100)
    assert found.verdict is Verdict.VIOLATION and found.steps < 100
    # A timed-out write that someone read must be placeable.
    seen = history(op(1, "write", 1, 0, 1), op(2, "write", 2, 2, 3, "info"), op(3, "read", 2, 9, 10))
    assert check_register(seen).verdict is Verdict.OK


def test_dropping_a_prefix_never_makes_a_linearizable_history_fail() -> None:
    """A long read of x that overlaps the writes being forgotten must not be held against the rest.

    W(x) [0,5], R(x) [1,100], W(y) [10,20], R(y) [30,40] is linearizable (W(x) R(x) W(y) R(y)).
    Forgetting W(x) and W(y) naively leaves two reads of unwritten values, which no state allows.
    """
    ops = history(
        op(1, "write", "x", 0, 5),
        op(2, "read", "x", 1, 100),
        op(1, "write", "y", 10, 20),
        op(3, "read", "y", 30, 40),
    )
    assert check_register(ops).verdict is Verdict.OK
    for t in [*sorted({o.returns for o in ops}), float("inf")]:
        rest = drop_before(ops, t)
        assert check_register(rest, initial=ANY_STATE).verdict is Verdict.OK, (t, rest)

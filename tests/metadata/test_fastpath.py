"""The record codec's fast path (record_fastpath) against its checked path (fields.py converters).

``record_from_wire`` tries a decoder generated per record class and falls back to
``record_from_wire_checked`` whenever a fast check fails. Both must always agree:
the same record (with the same value types: True is not 1, a tuple is not a list)
or the same RecordError message, since a committed entry must apply identically on
every node. These tests feed both paths hand-picked and random wire records, valid
and not, so a change to one path that forgets the other fails here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyraft.metadata import commands as c
from pyraft.metadata import records
from pyraft.metadata.fields import (
    FAST_CHECKS,
    FAST_CONVERTERS,
    INT_RANGES,
    JSON_CONVERTERS,
    JSON_EXPRESSIONS,
    WIRE_CONVERTERS,
    BrokerEndpoint,
    fast_constructor,
    needs_conversion,
    to_json_value,
)
from pyraft.metadata.record_fastpath import wire_decoder
from pyraft.metadata.records import (
    RECORD_TYPES,
    Record,
    RecordError,
    record_from_wire,
    record_from_wire_checked,
    replacer,
)
from pyraft.metadata.store import MetadataStore
from pyraft.metadata.store_state import MetadataState, broker_status

TOPIC = "3f2a8d1e-7c4b-4e8a-9f10-2b3c4d5e6f70"
INCARNATION = "0b5e9c1a-1111-4222-8333-444455556666"


class Text(str):
    """A str subclass: only the checked path takes it (the fast path checks exact types)."""


class Items(list[Any]):
    """A list subclass, likewise."""


def valid_value(kind: str) -> Any:
    """A well-formed wire value of ``kind``."""
    return {
        "bool": True,
        "str": "name",
        "str?": "rack-a",
        "uuid": TOPIC,
        "int32[]": [1, 2],
        "int32[]?": [1],
        "endpoints": [["PLAINTEXT", "h1", 9092, 0]],
    }.get(kind, 1)


def valid_wire(cls: type[Record]) -> list[Any]:
    return [cls.API_KEY, cls.VERSION, *(valid_value(f.kind) for f in cls.FIELDS)]


def odd_values() -> list[Any]:
    """Values that probe each kind's edges: bools for ints, range ends, near-UUIDs, bad endpoints..."""
    ints = sorted({v for low, high in INT_RANGES.values() for v in (low - 1, low, high, high + 1)})
    near_uuids = [
        INCARNATION.upper(),
        INCARNATION + "\n",
        INCARNATION[:-1],
        INCARNATION + "0",
        INCARNATION.replace("-", "_"),
        INCARNATION[:-1] + "\u0663",
        Text(INCARNATION),
    ]
    endpoints = [
        [["n", "h", 1, 0], ["m", "h2", 65535, -1]],
        [["n", "h", 0, 0]],
        [["", "", 1, 0]],
        [["n", "h", 65536, 0]],
        [["n", "h", -1, 0]],
        [["n", "h", True, 0]],
        [["n", "h", 1, False]],
        [["n", "h", 1, 2**15]],
        [["n", "h", 1, -(2**15) - 1]],
        [["n", "h", 1]],
        [["n", "h", 1, 0, 0]],
        [("n", "h", 1, 0)],
        [Items(["n", "h", 1, 0])],
        [[Text("n"), "h", 1, 0]],
        [["n", b"h", 1, 0]],
        [["é🚀", "hôst", 9092, 3]],
        [{"name": "n", "host": "h", "port": 1, "securityProtocol": 0}],
        [["n", "h", 1, 0], None],
        [None],
        Items([["n", "h", 1, 0]]),
    ]
    int_lists = [[], [True], [1.0], [2**31], [-(2**31) - 1], [1, None], [[1]], Items([1, 2]), (1, 2)]
    scalars = [True, False, 0, 1, -1, 2**64 - 1, -(2**63) - 1, 1.0, float("nan"), "", "x", "é🚀", Text("t")]
    others = [None, b"", b"x", [], {}, {"a": 1}, {1: 2}, [None]]
    return [*ints, *near_uuids, *endpoints, *int_lists, *scalars, *others]


ODD = odd_values()


def packable(value: object) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError):
        return False
    return True


PACKABLE_ODD = [v for v in ODD if packable(v)]


def strict(value: Any) -> Any:
    """``value`` with the exact type of every part, so that True and 1, a list and a tuple, or a
    str and a str subclass compare unequal."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), tuple(strict(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, list | tuple):
        return (type(value), tuple(strict(v) for v in value))
    return (type(value), value)


def outcome(decode: Callable[[object], Record], wire: object) -> tuple[str, Any]:
    try:
        return ("record", strict(decode(wire)))
    except RecordError as exc:
        return ("error", str(exc))


def assert_paths_agree(wire: object) -> None:
    assert outcome(record_from_wire, wire) == outcome(record_from_wire_checked, wire), wire


def hand_picked() -> Iterator[object]:
    """Every field of every record class set to every odd value; then envelope-level faults."""
    for cls in RECORD_TYPES.values():
        good = valid_wire(cls)
        yield good
        yield Items(good)
        yield tuple(good)
        yield good[:-1]
        yield [*good, None]
        yield [cls.API_KEY]
        for version in (cls.VERSION + 1, True, float(cls.VERSION), None, str(cls.VERSION)):
            yield [cls.API_KEY, version, *good[2:]]
        for api_key in (float(cls.API_KEY), str(cls.API_KEY), [cls.API_KEY]):
            yield [api_key, *good[1:]]
        for i in range(2, len(good)):
            for odd in ODD:
                wire = list(good)
                wire[i] = odd
                yield wire
    yield from ([True, 0], [4, 0], [99], [], None, "record", 5, {})


@pytest.mark.parametrize("cls", RECORD_TYPES.values(), ids=lambda cls: cls.NAME)
def test_valid_records_take_the_fast_path(cls: type[Record]) -> None:
    """A well-formed record never reaches the checked path (else the fast path buys nothing)."""

    def refuse(wire: object) -> Record:
        raise AssertionError(f"checked path taken for {wire!r}")

    decode = wire_decoder(cls, fast_constructor(cls), refuse)
    assert strict(decode(valid_wire(cls))) == strict(record_from_wire_checked(valid_wire(cls)))


def test_hand_picked_wire_records_decode_identically_on_both_paths() -> None:
    cases = list(hand_picked())
    assert len(cases) > 2000
    for wire in cases:
        assert_paths_agree(wire)


def test_seeded_random_mutations_decode_identically_on_both_paths() -> None:
    """Several fields wrong at once: the checked path reports the first, the fast path must too."""
    rng = random.Random(20260521)
    classes = list(RECORD_TYPES.values())
    for _ in range(5000):
        wire = valid_wire(rng.choice(classes))
        for _ in range(rng.randrange(1, 4)):
            if len(wire) > 2:
                wire[rng.randrange(2, len(wire))] = rng.choice(ODD)
        assert_paths_agree(wire)


def kind_values(kind: str) -> st.SearchStrategy[Any]:
    """Mostly well-formed values of ``kind`` (so that whole records are often valid), near their
    edges; one in ten anything at all."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.sampled_from(ODD))
    endpoint = st.tuples(
        st.text(max_size=6), st.text(max_size=6), st.integers(-2, 2**16 + 1), st.integers(-(2**15) - 1, 2**15)
    ).map(list)
    good: dict[str, st.SearchStrategy[Any]] = {
        **{k: st.integers(min_value=low - 2, max_value=high + 2) for k, (low, high) in INT_RANGES.items()},
        "bool": st.booleans(),
        "str": st.text(max_size=8),
        "str?": st.one_of(st.none(), st.text(max_size=8)),
        "uuid": st.one_of(st.uuids().map(str), st.sampled_from(ODD)),
        "int32[]": st.lists(st.integers(min_value=-(2**31) - 1, max_value=2**31), max_size=4),
        "int32[]?": st.one_of(st.none(), st.lists(st.integers(min_value=-(2**31) - 1, max_value=2**31))),
        "endpoints": st.lists(st.one_of(endpoint, st.lists(scalars, max_size=5)), max_size=3),
    }
    return st.integers(0, 9).flatmap(lambda n: scalars if n == 0 else good[kind])


@st.composite
def wire_records(draw: st.DrawFn) -> list[Any]:
    cls = draw(st.sampled_from(list(RECORD_TYPES.values())))
    wire = [cls.API_KEY, draw(st.sampled_from([cls.VERSION, cls.VERSION, cls.VERSION, 0, 1, True]))]
    wire += [draw(kind_values(f.kind)) for f in cls.FIELDS]
    if draw(st.integers(0, 9)) == 0:
        del wire[draw(st.integers(0, len(wire) - 1))]
    return wire


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(wire_records())
def test_generated_wire_records_decode_identically_on_both_paths(wire: list[Any]) -> None:
    assert_paths_agree(wire)
    if packable(wire):  # what the store sees: msgpack's own lists, str and int
        assert_paths_agree(msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), strict_map_key=False))


def commands() -> Iterator[bytes]:
    """A command stream that registers, changes and rejects brokers, topics and partitions."""
    rng = random.Random(7)
    epochs: dict[int, int] = {}
    for index in range(1, 1501):
        broker = rng.randrange(6)
        roll = rng.random()
        if roll < 0.3:
            endpoints = rng.choice([[["PLAINTEXT", "h", 9092, 0]], [["A", "h", 1, 0], ["B", "h", 2, 1]], []])
            wire = [0, 1, broker, INCARNATION, rng.choice([-1, epochs.get(broker, -1), 3])]
            wire += [endpoints, rng.choice([None, "r", ""]), rng.random() < 0.5, rng.random() < 0.2]
            epochs[broker] = index
        elif roll < 0.6:
            wire = [
                17,
                1,
                broker,
                rng.choice([epochs.get(broker, 1), 2]),
                rng.choice([-1, 0, 1, 2]),
                rng.choice([0, 1]),
            ]
        elif roll < 0.7:
            wire = [2, 0, rng.choice(["orders", "bad name"]), TOPIC]
        elif roll < 0.8:
            wire = [3, 0, rng.randrange(3), TOPIC, [broker], [broker], [], [], broker, 0, 0]
        elif roll < 0.9:
            wire = [5, 0, rng.randrange(3), TOPIC, rng.choice([None, [broker]]), -2, None, None, None]
        else:
            wire = [1, 0, broker, -1]
        if rng.random() < 0.25:
            wire[rng.randrange(2, len(wire))] = rng.choice(PACKABLE_ODD)
        key = rng.choice([None, f"key-{index}", f"key-{index - 3}", 5])
        yield msgpack.packb([0, wire, key], use_bin_type=True)


def run_store(stream: list[bytes]) -> tuple[list[bytes], bytes, Any, Any]:
    store = MetadataStore(idempotency_keys=100)
    answers = [store.apply(i, command) for i, command in enumerate(stream, 1)]
    return answers, store.capture()(), store.dump(), store.remembered_outcomes()


def test_store_outcomes_are_byte_identical_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers, snapshot, state and idempotency memory of a store whose commands are decoded
    the fast way and of one whose commands are all decoded by the converters."""
    stream = list(commands())
    fast = run_store(stream)
    monkeypatch.setattr(c, "record_from_wire", record_from_wire_checked)
    checked = run_store(stream)
    assert fast == checked
    statuses = {msgpack.unpackb(answer)[0] for answer in fast[0]}
    assert statuses == {"created", "ok", "invalid", "not_found", "conflict"}


# --- the other generated pieces ------------------------------------------------------------------
def test_every_kind_has_a_fast_check_and_a_json_expression() -> None:
    kinds = set(WIRE_CONVERTERS)
    assert kinds == set(JSON_CONVERTERS)
    assert set(FAST_CHECKS) | set(FAST_CONVERTERS) == kinds
    assert not set(FAST_CHECKS) & set(FAST_CONVERTERS)
    assert set(JSON_EXPRESSIONS) == {k for k in kinds if needs_conversion(k)}
    assert {f.kind for cls in RECORD_TYPES.values() for f in cls.FIELDS} <= kinds


@pytest.mark.parametrize("cls", [*RECORD_TYPES.values(), BrokerEndpoint], ids=lambda cls: cls.__name__)
def test_fast_constructor_builds_what_init_builds(cls: type[Any]) -> None:
    wire = [["n", "h", 1, 0]] if cls is BrokerEndpoint else valid_wire(cls)
    built = record_from_wire_checked(wire) if cls is not BrokerEndpoint else BrokerEndpoint("n", "h", 1, 0)
    values = [getattr(built, f.name) for f in dataclasses.fields(cls)]
    made = fast_constructor(cls)(*values)
    assert type(made) is cls and made == cls(*values) and hash(made) == hash(cls(*values))
    assert strict(made) == strict(cls(*values)) and repr(made) == repr(cls(*values))
    if values:
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.__setattr__(dataclasses.fields(cls)[0].name, values[0])


def test_fast_constructor_refuses_what_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    for cls in (Checked, NoSlots):
        with pytest.raises(TypeError, match="make\\(\\) needs a slots dataclass"):
            fast_constructor(cls)


OTHER_VALUES: dict[str, Any] = {
    "bool": False,
    "str": "other",
    "str?": None,
    "uuid": INCARNATION,
    "int32[]": (3,),
    "int32[]?": None,
    "endpoints": (BrokerEndpoint("B", "h2", 2, 1),),
}


@pytest.mark.parametrize("cls", RECORD_TYPES.values(), ids=lambda cls: cls.NAME)
def test_replacer_equals_dataclasses_replace(cls: type[Record]) -> None:
    record = record_from_wire_checked(valid_wire(cls))
    replace = replacer(cls)
    assert strict(replace(record)) == strict(record)
    for f in cls.FIELDS:
        change = {f.attr: OTHER_VALUES.get(f.kind, 7)}
        expected = dataclasses.replace(record, **change)  # type: ignore[type-var]
        assert expected != record
        assert strict(replace(record, **change)) == strict(expected)
        assert strict(records.replaced(record, **change)) == strict(expected)


def sample_brokers() -> list[Any]:
    one = c.register_broker(1, "h1", 9092, "SSL", "rack-a", INCARNATION)
    two = dataclasses.replace(
        one, end_points=(BrokerEndpoint("A", "h", 1, 3), BrokerEndpoint("B", "h2", 2, 0)), rack=None
    )
    odd_protocol = dataclasses.replace(one, end_points=(BrokerEndpoint("X", "h", 1, 42),))
    none = dataclasses.replace(one, end_points=())
    flags = [(True, False), (False, False), (False, True), (True, True)]
    return [
        dataclasses.replace(b, fenced=f, in_controlled_shutdown=s)
        for b in (one, two, odd_protocol, none)
        for f, s in flags
    ]


@pytest.mark.parametrize("broker", sample_brokers())
def test_broker_view_keeps_its_keys_values_and_order(broker: Any) -> None:
    """The view is in every broker write's outcome: its msgpack bytes depend on the key order."""
    view = {f.json: to_json_value(f.kind, getattr(broker, f.attr)) for f in broker.FIELDS}
    first = broker.end_points[0] if broker.end_points else None
    view["internal_uuid"] = broker.incarnation_id
    view["status"] = broker_status(broker)
    view["brokerHost"] = first.host if first else None
    view["brokerPort"] = first.port if first else None
    view["securityProtocol"] = records.SECURITY_PROTOCOL_NAMES.get(first.security_protocol) if first else None
    view["rackId"] = broker.rack
    got = MetadataState().broker_view(broker)
    assert list(got.items()) == list(view.items())
    assert msgpack.packb(got, use_bin_type=True) == msgpack.packb(view, use_bin_type=True)

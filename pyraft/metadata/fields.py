"""Field kinds of the metadata records: value checks and wire/JSON conversions.

Split out of records.py so the record table there stays readable. Every check
raises RecordError naming the field (``Record.field[i]``) and what was expected;
bool is never accepted where an integer is, though Python treats it as one.

Every committed command is decoded and checked on every node, so this is the
hot path of the state machine (issue #5: 26-43% of a loaded leader's CPU).
Each kind therefore has its own converter, looked up once per record class
(records.py), instead of one generic function matching kind strings for every
value; error messages are only formatted when a check fails.

Those converters are the *checked path*: one call per field, naming the field
when a value is wrong. The *fast path* (the end of this module, assembled per
record class by record_fastpath.py) checks the common well-formed value of
each kind inline and hands anything else to the checked path, so it never
decides differently, only sooner (tests/metadata/test_fastpath.py pins that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

INT8 = (-(2**7), 2**7 - 1)
INT16 = (-(2**15), 2**15 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT16 = (0, 2**16 - 1)

# Kafka's SecurityProtocol ids (org.apache.kafka.common.security.auth.SecurityProtocol).
SECURITY_PROTOCOLS: dict[str, int] = {"PLAINTEXT": 0, "SSL": 1, "SASL_PLAINTEXT": 2, "SASL_SSL": 3}
SECURITY_PROTOCOL_NAMES: dict[int, str] = {v: k for k, v in SECURITY_PROTOCOLS.items()}


class RecordError(ValueError):
    """Bytes or a JSON object that are not a record this version of pyraft understands."""


@dataclass(frozen=True, slots=True)
class Field:
    """One record field: Python attribute, Kafka's JSON name, and its wire kind."""

    attr: str
    json: str
    kind: str  # int8 int16 int32 int64 uint16 bool str str? uuid int32[] int32[]? endpoints


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """A listener of a broker (RegisterBrokerRecord.EndPoints)."""

    name: str
    host: str
    port: int
    security_protocol: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "securityProtocol": self.security_protocol,
        }


Converter = Callable[[object, str], Any]
"""Checks one wire or JSON value against a kind and returns it as the record holds it; the
string names the field for the error message."""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(value: object) -> bool:
    """True for a canonical lowercase UUID string (the form pyraft stores, ``str(uuid.UUID(...))``)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


# --------------------------------------------------------------------------- record -> wire / JSON


def to_wire_value(kind: str, value: Any) -> Any:
    if kind == "endpoints":
        return [[e.name, e.host, e.port, e.security_protocol] for e in value]
    if kind.startswith("int32[]"):
        return None if value is None else list(value)
    return value


def to_json_value(kind: str, value: Any) -> Any:
    if kind == "endpoints":
        return [e.to_json() for e in value]
    if kind.startswith("int32[]"):
        return None if value is None else list(value)
    return value


JSON_EXPRESSIONS: dict[str, str] = {
    "endpoints": "[e.to_json() for e in {v}]",
    "int32[]": "(None if {v} is None else list({v}))",
    "int32[]?": "(None if {v} is None else list({v}))",
}
"""``to_json_value`` as a Python expression over the value ``{v}``, for each kind that
``needs_conversion``: the generated JSON views (record_fastpath.py) inline it."""


def needs_conversion(kind: str) -> bool:
    """Whether a value of this kind differs between the record and its wire / JSON form."""
    return kind == "endpoints" or kind.startswith("int32[]")


# --------------------------------------------------------------------------- wire / JSON -> record


def _int_kind(kind: str, low: int, high: int) -> Converter:
    def convert(value: object, where: str) -> int:
        if type(value) is int and low <= value <= high:
            return value
        raise RecordError(f"{where}: expected {kind}, got {value!r}")

    return convert


INT_RANGES = {"int8": INT8, "int16": INT16, "int32": INT32, "int64": INT64, "uint16": UINT16}
_INT_CONVERTERS: dict[str, Converter] = {k: _int_kind(k, *bounds) for k, bounds in INT_RANGES.items()}


def _bool(value: object, where: str) -> bool:
    if type(value) is bool:
        return value
    raise RecordError(f"{where}: expected bool, got {value!r}")


def _str(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    raise RecordError(f"{where}: expected string, got {value!r}")


def _optional_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _uuid(value: object, where: str) -> str:
    if isinstance(value, str) and _UUID.fullmatch(value) is not None:
        return value
    raise RecordError(f"{where}: expected a canonical lowercase UUID string, got {value!r}")


def _int_list(optional: bool) -> Converter:
    low, high = INT32
    int32 = _INT_CONVERTERS["int32"]

    def convert(value: object, where: str) -> tuple[int, ...] | None:
        if value is None and optional:
            return None
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list of int32, got {value!r}")
        if all(type(v) is int and low <= v <= high for v in value):
            return tuple(value)
        return tuple(int32(v, f"{where}[{i}]") for i, v in enumerate(value))  # raises, naming the item

    return convert


_ENDPOINT_KEYS = ("name", "host", "port", "securityProtocol")


def _endpoint(value: object, where: str, as_json: bool) -> BrokerEndpoint:
    if as_json:
        if not isinstance(value, Mapping) or set(value) != set(_ENDPOINT_KEYS):
            raise RecordError(f"{where}: expected an object with {list(_ENDPOINT_KEYS)}, got {value!r}")
        value = [value[k] for k in _ENDPOINT_KEYS]
    if not isinstance(value, list) or len(value) != 4:
        raise RecordError(f"{where}: expected [name, host, port, securityProtocol], got {value!r}")
    return BrokerEndpoint(
        _str(value[0], f"{where}.name"),
        _str(value[1], f"{where}.host"),
        _INT_CONVERTERS["uint16"](value[2], f"{where}.port"),
        _INT_CONVERTERS["int16"](value[3], f"{where}.securityProtocol"),
    )


def _endpoints(as_json: bool) -> Converter:
    def convert(value: object, where: str) -> tuple[BrokerEndpoint, ...]:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list of endpoints, got {value!r}")
        return tuple(_endpoint(v, f"{where}[{i}]", as_json) for i, v in enumerate(value))

    return convert


_SHARED: dict[str, Converter] = {
    **_INT_CONVERTERS,
    "bool": _bool,
    "str": _str,
    "str?": _optional_str,
    "uuid": _uuid,
    "int32[]": _int_list(False),
    "int32[]?": _int_list(True),
}
WIRE_CONVERTERS: dict[str, Converter] = {**_SHARED, "endpoints": _endpoints(False)}
JSON_CONVERTERS: dict[str, Converter] = {**_SHARED, "endpoints": _endpoints(True)}


def from_wire_value(kind: str, value: object, where: str) -> Any:
    return WIRE_CONVERTERS[kind](value, where)


def from_json_value(kind: str, value: object, where: str) -> Any:
    return JSON_CONVERTERS[kind](value, where)


# --------------------------------------------------------------------------- the fast path


def fast_constructor(cls: type) -> Callable[..., Any]:
    """``cls(*values)`` for a frozen slots dataclass, at a third of what its ``__init__`` costs.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its
    own ``__setattr__`` refuses): 1.2 us for the 7 fields of a RegisterBrokerRecord, and
    the apply path builds two or three records per command. ``make`` fills an instance of
    an unfrozen twin class with the same slots by plain attribute stores, then makes it a
    ``cls`` by ``__class__`` assignment, which Python allows between classes of the same
    layout: 0.4 us. Only for classes whose ``__init__`` does nothing else (no
    ``__post_init__``, every field a slot and an argument, in order); a test pins
    ``make(*values)`` to equal ``cls(*values)``, frozen, for each class it is used on."""
    attrs = [f.name for f in fields(cls)]
    slots = getattr(cls, "__slots__", None)
    if hasattr(cls, "__post_init__") or slots != tuple(attrs):
        raise TypeError(f"make() needs a slots dataclass without __post_init__, not {cls.__name__}")
    twin = type(f"Unfrozen{cls.__name__}", cls.__bases__, {"__slots__": slots})
    body = "".join(f"    self.{a} = {a}\n" for a in attrs)
    source = (
        f"def make({', '.join(attrs)}):\n    self = _new(_twin)\n{body}"
        "    self.__class__ = _cls\n    return self\n"
    )
    return compile_function("make", source, {"_new": object.__new__, "_twin": twin, "_cls": cls})


def compile_function(name: str, source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function ``name`` that ``source`` defines, with ``namespace`` as its globals (as
    ``dataclasses`` builds ``__init__``): how the fast path gets one straight-line function
    per record class instead of a loop over per-field calls."""
    namespace = dict(namespace)
    exec(compile(source, f"<pyraft fast path: {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


NOT_FAST: Final = object()
"""What a FAST_CONVERTERS function returns for a value it leaves to the checked path."""

FAST_CHECKS: dict[str, str] = {
    **{
        kind: f"(type({{v}}) is int and {low} <= {{v}} <= {high})" for kind, (low, high) in INT_RANGES.items()
    },
    "bool": "({v} is True or {v} is False)",
    "str": "type({v}) is str",
    "str?": "({v} is None or type({v}) is str)",
    "uuid": "(type({v}) is str and _uuid_match({v}) is not None)",
}
"""Per kind whose record value is its wire value: a Python expression over the value ``{v}``,
true only for values the kind's converter returns unchanged (exact types: a str subclass is
left to the converter). It may use the names in FAST_NAMESPACE."""

FAST_NAMESPACE: dict[str, Any] = {"_uuid_match": _UUID.fullmatch}

_new_endpoint = fast_constructor(BrokerEndpoint)
_PORT_LOW, _PORT_HIGH = UINT16  # the ranges _endpoint checks, as module constants (no indexing per call)
_PROTOCOL_LOW, _PROTOCOL_HIGH = INT16


def fast_int32_list(value: object) -> object:
    """The record's tuple for a wire list of int32, else NOT_FAST."""
    if type(value) is not list:
        return NOT_FAST
    low, high = INT32
    for v in value:  # a loop, not all(generator): lists are short and this runs per record
        if type(v) is not int or not low <= v <= high:
            return NOT_FAST
    return tuple(value)


def fast_optional_int32_list(value: object) -> object:
    """``fast_int32_list`` that also takes nil."""
    return None if value is None else fast_int32_list(value)


def fast_wire_endpoints(value: object) -> object:
    """The record's endpoints for a wire list of ``[name: str, host: str, port: uint16,
    securityProtocol: int16]``, else NOT_FAST (``_endpoint`` then names what is wrong)."""
    if type(value) is not list:
        return NOT_FAST
    made = []
    for v in value:  # a loop, not generators: most brokers have one endpoint
        if type(v) is not list or len(v) != 4:
            return NOT_FAST
        name, host, port, protocol = v
        if not (
            type(name) is str
            and type(host) is str
            and type(port) is int
            and _PORT_LOW <= port <= _PORT_HIGH
            and type(protocol) is int
            and _PROTOCOL_LOW <= protocol <= _PROTOCOL_HIGH
        ):
            return NOT_FAST
        made.append(_new_endpoint(name, host, port, protocol))
    return tuple(made)


FAST_CONVERTERS: dict[str, Callable[[object], object]] = {
    "int32[]": fast_int32_list,
    "int32[]?": fast_optional_int32_list,
    "endpoints": fast_wire_endpoints,
}
"""Per kind whose record value differs from its wire value: the record's value, or NOT_FAST for
anything the kind's converter would have to look at (or reject)."""

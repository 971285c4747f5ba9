"""Field kinds of the metadata records: value checks and wire/JSON conversions.

Split out of records.py so the record table there stays readable. Every check
raises RecordError naming the field (``Record.field[i]``) and what was expected;
bool is never accepted where an integer is, though Python treats it as one.

Every committed command is decoded and checked on every node, so this is the
hot path of the state machine (issue #5: 26-43% of a loaded leader's CPU).
Each kind therefore has its own converter, looked up once per record class
(records.py), instead of one generic function matching kind strings for every
value; error messages are only formatted when a check fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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


_INT_RANGES = {"int8": INT8, "int16": INT16, "int32": INT32, "int64": INT64, "uint16": UINT16}
_INT_CONVERTERS: dict[str, Converter] = {k: _int_kind(k, *bounds) for k, bounds in _INT_RANGES.items()}


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


def _well_formed_endpoint(value: object) -> bool:
    """The common case of a wire endpoint, checked without naming anything (``_endpoint`` explains a
    failure): ``[name: str, host: str, port: uint16, securityProtocol: int16]``."""
    if type(value) is not list or len(value) != 4:
        return False
    name, host, port, protocol = value
    return (
        type(name) is str
        and type(host) is str
        and type(port) is int
        and 0 <= port <= UINT16[1]
        and type(protocol) is int
        and INT16[0] <= protocol <= INT16[1]
    )


def _endpoints(as_json: bool) -> Converter:
    def convert(value: object, where: str) -> tuple[BrokerEndpoint, ...]:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list of endpoints, got {value!r}")
        if not as_json:
            fast = []
            for v in value:  # a loop, not generators: most brokers have one endpoint
                if not _well_formed_endpoint(v):
                    break
                fast.append(BrokerEndpoint(*v))
            else:
                return tuple(fast)
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

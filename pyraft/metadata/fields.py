"""Field kinds of the metadata records: value checks and wire/JSON conversions.

Split out of records.py so the record table there stays readable. Every check
raises RecordError naming the field (``Record.field[i]``) and what was expected;
bool is never accepted where an integer is, though Python treats it as one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
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


def is_uuid(value: object) -> bool:
    """True for a canonical lowercase UUID string (the form pyraft stores)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


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


_INT_RANGES = {"int8": INT8, "int16": INT16, "int32": INT32, "int64": INT64, "uint16": UINT16}


def _scalar(kind: str, value: object, where: str) -> Any:
    """Check one non-list value against its kind; bool is not accepted as an int."""
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if type(value) is not int or not low <= value <= high:
            raise RecordError(f"{where}: expected {kind}, got {value!r}")
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise RecordError(f"{where}: expected bool, got {value!r}")
        return value
    if kind == "str" or (kind == "str?" and value is not None):
        if not isinstance(value, str):
            raise RecordError(f"{where}: expected string, got {value!r}")
        return value
    if kind == "str?":
        return None
    if kind == "uuid":
        if not is_uuid(value):
            raise RecordError(f"{where}: expected a canonical lowercase UUID string, got {value!r}")
        return value
    raise RecordError(f"{where}: unknown field kind {kind}")  # pragma: no cover - table bug


def _int_list(kind: str, value: object, where: str) -> tuple[int, ...] | None:
    if value is None and kind.endswith("?"):
        return None
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list of int32, got {value!r}")
    return tuple(_scalar("int32", v, f"{where}[{i}]") for i, v in enumerate(value))


def _endpoint(value: object, where: str, as_json: bool) -> BrokerEndpoint:
    if as_json:
        keys = ("name", "host", "port", "securityProtocol")
        if not isinstance(value, Mapping) or set(value) != set(keys):
            raise RecordError(f"{where}: expected an object with {list(keys)}, got {value!r}")
        value = [value[k] for k in keys]
    if not isinstance(value, list) or len(value) != 4:
        raise RecordError(f"{where}: expected [name, host, port, securityProtocol], got {value!r}")
    return BrokerEndpoint(
        _scalar("str", value[0], f"{where}.name"),
        _scalar("str", value[1], f"{where}.host"),
        _scalar("uint16", value[2], f"{where}.port"),
        _scalar("int16", value[3], f"{where}.securityProtocol"),
    )


def _convert(kind: str, value: object, where: str, as_json: bool) -> Any:
    if kind.startswith("int32[]"):
        return _int_list(kind, value, where)
    if kind == "endpoints":
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list of endpoints, got {value!r}")
        return tuple(_endpoint(v, f"{where}[{i}]", as_json) for i, v in enumerate(value))
    return _scalar(kind, value, where)


def from_wire_value(kind: str, value: object, where: str) -> Any:
    return _convert(kind, value, where, as_json=False)


def from_json_value(kind: str, value: object, where: str) -> Any:
    return _convert(kind, value, where, as_json=True)

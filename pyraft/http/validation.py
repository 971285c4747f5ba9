"""Strict request validation against the same schema dicts the OpenAPI document publishes.

One source of truth keeps ``/openapi.json`` honest: a body the schema rejects is
exactly a body the server answers with 422. Only the JSON Schema subset the API
uses is supported, and it is stricter than Python's types: ``true`` is not an
integer, ``1.0`` is not an integer, and unknown fields are refused.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

Schema = dict[str, Any]


class InvalidBody(ValueError):
    """The request body or a parameter does not match its schema; HTTP answers 422."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_json_object(raw: bytes, schema: Schema) -> dict[str, Any]:
    """Decode ``raw`` as one JSON object and check it against ``schema``."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody("malformed_json", f"the body is not valid JSON: {exc}") from None
    check(schema, value, "body")
    assert isinstance(value, dict)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check(schema: Schema, value: Any, where: str) -> None:
    """Raise InvalidBody naming the first place where ``value`` breaks ``schema``."""
    if value is None:
        if schema.get("nullable"):
            return
        raise InvalidBody("invalid_type", f"{where} must not be null")
    kind = schema.get("type")
    checker = _CHECKERS.get(kind) if isinstance(kind, str) else None
    if checker is None:
        raise TypeError(f"unsupported schema type {kind!r}")
    checker(schema, value, where)
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(v) for v in schema["enum"])
        raise InvalidBody("invalid_value", f"{where} must be one of: {allowed}")


def _check_object(schema: Schema, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise InvalidBody("invalid_type", f"{where} must be a JSON object")
    properties: dict[str, Schema] = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(value) - set(properties))
        if unknown:
            raise InvalidBody("unknown_field", f"{where} has unknown field(s): {', '.join(unknown)}")
    for name, item in value.items():
        if name in properties:
            check(properties[name], item, f"{where}.{name}")
    for name in schema.get("required", []):
        if name not in value:
            raise InvalidBody("missing_field", f"{where}.{name} is required")


def _check_integer(schema: Schema, value: Any, where: str) -> None:
    if type(value) is not int:  # bool is an int subclass; floats are refused even when whole
        raise InvalidBody("invalid_type", f"{where} must be an integer")
    _check_range(schema, value, where)


def _check_range(schema: Schema, value: int, where: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and value < low:
        raise InvalidBody("out_of_range", f"{where} must be at least {low}")
    if high is not None and value > high:
        raise InvalidBody("out_of_range", f"{where} must be at most {high}")


def _check_string(schema: Schema, value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidBody("invalid_type", f"{where} must be a string")
    if len(value) < schema.get("minLength", 0):
        raise InvalidBody("invalid_value", f"{where} must have at least {schema['minLength']} character(s)")
    if len(value) > schema.get("maxLength", math.inf):
        raise InvalidBody("invalid_value", f"{where} must have at most {schema['maxLength']} characters")
    pattern = schema.get("pattern")
    if pattern is not None and re.search(pattern, value) is None:
        raise InvalidBody("invalid_value", f"{where} must match {pattern}")
    if schema.get("format") == "uuid" and not _is_uuid(value):
        raise InvalidBody(
            "invalid_value", f"{where} must be a UUID like 123e4567-e89b-12d3-a456-426614174000"
        )


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _check_array(schema: Schema, value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise InvalidBody("invalid_type", f"{where} must be an array")
    if len(value) < schema.get("minItems", 0):
        raise InvalidBody("invalid_value", f"{where} must have at least {schema['minItems']} item(s)")
    if len(value) > schema.get("maxItems", math.inf):
        raise InvalidBody("invalid_value", f"{where} must have at most {schema['maxItems']} items")
    for i, item in enumerate(value):
        check(schema["items"], item, f"{where}[{i}]")
    if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        raise InvalidBody("invalid_value", f"{where} must not repeat an item")


def _check_boolean(schema: Schema, value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise InvalidBody("invalid_type", f"{where} must be true or false")


_CHECKERS = {
    "object": _check_object,
    "integer": _check_integer,
    "string": _check_string,
    "array": _check_array,
    "boolean": _check_boolean,
}


def parse_int_param(text: str, schema: Schema, where: str) -> int:
    """A path or query integer: plain decimal digits (an optional minus), then the schema's range."""
    if re.fullmatch(r"-?[0-9]{1,19}", text) is None:
        raise InvalidBody("invalid_type", f"{where} must be an integer")
    value = int(text)
    _check_range(schema, value, where)
    return value

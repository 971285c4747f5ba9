"""The fast path of the record codec: a decoder and a JSON view generated per record class.

Every committed command is decoded on every node, and most outcomes carry a record's
JSON view, so both run once per applied command on each node. The checked path
(``records.record_from_wire_checked`` with fields.py's converters) calls one converter
per field from a list comprehension and builds the record through the frozen
dataclass's ``__init__``: ~7 us of the ~33 us a RegisterBrokerRecord apply took.

Here each record class gets one straight-line function, generated from its FIELDS as
``dataclasses`` generates ``__init__``: it unpacks the wire list, checks each field
with its kind's inline check (fields.FAST_CHECKS, FAST_CONVERTERS) and builds the
record with ``fields.fast_constructor``. The first check that fails hands the whole
wire list to the checked path, which raises the exact error, or builds the record
for the rare values only it accepts (a str subclass, say). So the two paths cannot
disagree; tests/metadata/test_fastpath.py pins that for many valid and invalid records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyraft.metadata.fields import (
    FAST_CHECKS,
    FAST_CONVERTERS,
    FAST_NAMESPACE,
    JSON_EXPRESSIONS,
    NOT_FAST,
    Field,
    compile_function,
)

WireDecoder = Callable[[list[Any]], Any]
"""Builds a record from its wire list; called only with an exact ``list`` whose apiKey is the class's."""


def wire_decoder(cls: Any, make: Callable[..., Any], checked: Callable[[object], Any]) -> WireDecoder:
    """``cls``'s fast decoder: ``make(*fields)`` when every field passes its fast check, else
    ``checked(wire)``. ``cls`` is a record class (API_KEY, VERSION, FIELDS)."""
    fields: tuple[Field, ...] = cls.FIELDS
    names = [f"f{i}" for i in range(len(fields))]
    namespace: dict[str, Any] = {**FAST_NAMESPACE, "_NOT_FAST": NOT_FAST, "_make": make, "_checked": checked}
    checks = [f"type(version) is int and version == {cls.VERSION}"]
    for name, field in zip(names, fields, strict=True):
        if field.kind in FAST_CHECKS:
            checks.append(FAST_CHECKS[field.kind].format(v=name))
        else:  # a kind whose record value is converted: keep the converted value under the same name
            namespace[f"_convert_{name}"] = FAST_CONVERTERS[field.kind]
            checks.append(f"({name} := _convert_{name}({name})) is not _NOT_FAST")
    condition = "\n            and ".join(checks)
    source = (
        "def decode(wire):\n"
        f"    if len(wire) == {len(fields) + 2}:\n"
        f"        _, version, {''.join(n + ', ' for n in names)}= wire\n"
        f"        if (\n            {condition}\n        ):\n"
        f"            return _make({', '.join(names)})\n"
        "    return _checked(wire)\n"
    )
    return compile_function("decode", source, namespace)


def json_view(cls: Any) -> Callable[[Any], dict[str, Any]]:
    """``cls``'s ``to_json``: one dict display in FIELDS order (the msgpack'd outcome depends on
    the order), each value as ``fields.to_json_value`` gives it."""
    items = []
    for field in cls.FIELDS:
        value = f"record.{field.attr}"
        expression = JSON_EXPRESSIONS[field.kind].format(v=value) if field.kind in JSON_EXPRESSIONS else value
        items.append(f"        {field.json!r}: {expression},\n")
    source = f"def to_json(record):\n    return {{\n{''.join(items)}    }}\n"
    return compile_function("to_json", source, {})


def field_replacer(cls: Any, make: Callable[..., Any]) -> Callable[..., Any]:
    """``cls``'s ``replaced``: ``replace(record, *, field=value...)``, each field left out keeping
    the record's value. Keyword-only parameters, not ``**changes``: no dict is built per call,
    and the apply path replaces a record or two per command."""
    attrs = [f.attr for f in cls.FIELDS]
    params = "".join(f", {a}=_SAME" for a in attrs)
    values = ", ".join(f"record.{a} if {a} is _SAME else {a}" for a in attrs)
    source = f"def replace(record{', *' if attrs else ''}{params}):\n    return _make({values})\n"
    return compile_function("replace", source, {"_SAME": object(), "_make": make})

"""Operation histories: the events clients record, as JSON Lines, and their pairing into operations.

The format is Jepsen's, flattened so that any external checker can read it: one
event a line, ``{"process", "type", "f", "key", "value", "time"}``. A client
records ``invoke`` before it sends a request and exactly one completion after:

``ok``
    the operation took effect (for a read, ``value`` is what it read);
``fail``
    the operation definitely did not take effect (the server said so);
``info``
    unknown: a timeout or a broken connection. It may take effect at any time
    after its invoke, even after the run ends, so checkers keep it open forever.

A process runs one operation at a time. After an ``info`` it should continue
under a fresh process id, because its old operation may still be in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, cast, get_args

EventType = Literal["invoke", "ok", "fail", "info"]
OpFunction = Literal["read", "write", "add"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
FUNCTIONS: tuple[str, ...] = get_args(OpFunction)


class HistoryError(ValueError):
    """A history that breaks the recording rules (not a consistency violation: a client bug)."""


@dataclass(frozen=True)
class Event:
    """One line of a history. ``time`` is monotonic nanoseconds (only differences mean anything)."""

    process: int
    type: EventType
    f: OpFunction
    key: str
    value: Any
    time: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """Validate one decoded line; a history is evidence, so a malformed one is rejected loudly."""
        try:
            process, type_, f, key, value, at = (
                raw["process"],
                raw["type"],
                raw["f"],
                raw["key"],
                raw.get("value"),
                raw["time"],
            )
        except KeyError as exc:
            raise HistoryError(f"event lacks field {exc}: {raw!r}") from None
        if type_ not in EVENT_TYPES or f not in FUNCTIONS:
            raise HistoryError(f"bad type or f in event {raw!r}")
        if not isinstance(process, int) or not isinstance(at, int) or not isinstance(key, str):
            raise HistoryError(f"bad process, key or time in event {raw!r}")
        return cls(process, cast(EventType, type_), cast(OpFunction, f), key, value, at)


@dataclass(frozen=True)
class Operation:
    """An invoke paired with its completion; ``complete`` is None if the run ended first.

    ``value`` is the written value for writes and adds, and the value read for an ok read.
    For ``info``, ``complete`` is when the client gave up (for latency plots); checkers use
    ``returns``, which keeps the operation open forever.
    """

    index: int
    process: int
    f: OpFunction
    key: str
    value: Any
    type: Literal["ok", "fail", "info"]
    invoke: int
    complete: int | None

    @property
    def returns(self) -> float:
        """When the operation certainly ended: its completion, or never for ``info``."""
        return float("inf") if self.type == "info" or self.complete is None else self.complete


def monotonic_ns() -> int:
    """The clock histories use: monotonic, so a wall-clock step cannot reorder operations."""
    return time.monotonic_ns()


class HistoryRecorder:
    """Appends events to a JSON Lines file, flushed per line so a crash of the runner loses nothing.

    Keeps the events in memory as well, so a run can check its history without re-reading it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.events: list[Event] = []
        self._file: TextIO | None = path.open("a", encoding="utf-8") if path is not None else None

    def record(self, process: int, type_: EventType, f: OpFunction, key: str, value: Any = None) -> Event:
        event = Event(process, type_, f, key, value, monotonic_ns())
        self.append(event)
        return event

    def invoke(self, process: int, f: OpFunction, key: str, value: Any = None) -> Event:
        return self.record(process, "invoke", f, key, value)

    def append(self, event: Event) -> None:
        self.events.append(event)
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> HistoryRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump_history(events: Iterable[Event], path: Path) -> None:
    path.write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")


def load_history(path: Path) -> list[Event]:
    """Read a JSON Lines history; blank lines are skipped, anything else malformed is an error."""
    return list(parse_history(path.read_text(encoding="utf-8").splitlines()))


def parse_history(lines: Iterable[str]) -> Iterator[Event]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"line {number}: not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise HistoryError(f"line {number}: not an object")
        yield Event.from_dict(raw)


def pair_operations(events: Iterable[Event]) -> list[Operation]:
    """Pair each invoke with the next completion of the same process, in invoke order.

    An invoke never completed becomes ``info``: the run ended while it was in flight.
    """
    open_ops: dict[int, tuple[int, Event]] = {}
    done: list[tuple[int, Operation]] = []
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1].time, pair[0]))
    for seq, event in ordered:
        if event.type == "invoke":
            if event.process in open_ops:
                raise HistoryError(f"process {event.process} invoked twice without completing: {event}")
            open_ops[event.process] = (seq, event)
            continue
        started = open_ops.pop(event.process, None)
        if started is None:
            raise HistoryError(f"completion without an invoke: {event}")
        done.append((started[0], _complete(started[1], event)))
    done += [(seq, _complete(invoke, None)) for seq, invoke in open_ops.values()]
    done.sort(key=lambda pair: (pair[1].invoke, pair[0]))
    return [_with_index(op, i) for i, (_, op) in enumerate(done)]


def _complete(invoke: Event, completion: Event | None) -> Operation:
    if completion is not None and (completion.f != invoke.f or completion.key != invoke.key):
        raise HistoryError(f"completion {completion} does not match invoke {invoke}")
    type_: Literal["ok", "fail", "info"] = "info" if completion is None else _completion_type(completion)
    value = invoke.value
    if invoke.f == "read":
        value = completion.value if completion is not None and type_ == "ok" else None
    complete = None if completion is None else completion.time
    return Operation(-1, invoke.process, invoke.f, invoke.key, value, type_, invoke.time, complete)


def _completion_type(event: Event) -> Literal["ok", "fail", "info"]:
    if event.type == "invoke":
        raise HistoryError(f"not a completion: {event}")
    return event.type


def _with_index(op: Operation, index: int) -> Operation:
    return Operation(index, op.process, op.f, op.key, op.value, op.type, op.invoke, op.complete)

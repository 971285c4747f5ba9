"""The seam between the Raft engine and what it replicates.

The engine hands committed commands to ``apply`` in log order on every node;
``apply`` must be deterministic, so that every node ends in the same state.
``query`` serves reads once the node has applied up to a linearizable read index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgpack


class StateMachine(Protocol):
    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed command; the result goes back to the proposer."""
        ...

    def apply_noop(self, index: int) -> None:
        """A new leader's no-op entry was committed at ``index`` (it changes no state)."""
        ...

    def query(self, query: bytes) -> bytes:
        """Answer a read against the applied state."""
        ...

    def capture(self) -> Callable[[], bytes]:
        """Freeze the state as applied so far and return a function that encodes it.

        Called in the event loop between applies, so it must be cheap (copy
        references, not contents); the returned function runs in a worker
        thread while later entries are applied, so it must not read live state.
        The bytes are deterministic: equal states encode equally."""
        ...

    def restore(self, data: bytes) -> Callable[[], None]:
        """Decode a snapshot made by ``capture`` and return a function that installs it.

        Decoding may run in a worker thread and must not touch the live state;
        the returned function swaps the decoded state in (event loop, fast).
        Raises CommandError for bytes that are not a snapshot of this kind."""
        ...

    def compact(self, index: int) -> None:
        """A durable snapshot now covers everything up to ``index``: history kept
        only for serving it (e.g. a fetchable record log) may be dropped."""
        ...


class CommandError(ValueError):
    """A command or query the state machine cannot interpret."""


class KVStore:
    """A small key-value state machine for the bare engine, its tests and benchmarks.

    Commands are msgpack ``["set", key, value]`` or ``["del", key]``; a query is
    a msgpack key. A malformed command is applied as a no-op whose result
    reports the error, because a committed entry must apply the same way
    everywhere and may never stop the applier."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.last_index = 0

    def apply(self, index: int, command: bytes) -> bytes:
        self.last_index = index
        try:
            op = msgpack.unpackb(command)
        except Exception:
            return _result(False, "command is not msgpack")
        if isinstance(op, list) and len(op) == 3 and op[0] == "set" and isinstance(op[1], str):
            value = op[2] if isinstance(op[2], bytes) else _pack(op[2])
            self.data[op[1]] = value
            return _result(True, "")
        if isinstance(op, list) and len(op) == 2 and op[0] == "del" and isinstance(op[1], str):
            self.data.pop(op[1], None)
            return _result(True, "")
        return _result(False, "unknown command")

    def apply_noop(self, index: int) -> None:
        self.last_index = index

    def capture(self) -> Callable[[], bytes]:
        data, index = dict(self.data), self.last_index  # values are immutable bytes
        return lambda: _pack([index, data])

    def restore(self, data: bytes) -> Callable[[], None]:
        try:
            index, contents = msgpack.unpackb(data)
        except Exception as exc:
            raise CommandError("not a KVStore snapshot") from exc
        if not isinstance(index, int) or not isinstance(contents, dict):
            raise CommandError("not a KVStore snapshot")

        def install() -> None:
            self.data, self.last_index = contents, index

        return install

    def compact(self, index: int) -> None:
        del index  # keeps no history beyond its current state

    def query(self, query: bytes) -> bytes:
        try:
            key = msgpack.unpackb(query)
        except Exception as exc:
            raise CommandError("query is not msgpack") from exc
        if not isinstance(key, str):
            raise CommandError("query must be a msgpack string key")
        return self.data.get(key, b"")


def set_command(key: str, value: bytes) -> bytes:
    return _pack(["set", key, value])


def get_query(key: str) -> bytes:
    return _pack(key)


def _result(ok: bool, error: str) -> bytes:
    return _pack([ok, error])


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed

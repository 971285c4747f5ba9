"""An in-memory ``Storage`` with the same rules as the file storage, for tests.

Everything it holds counts as durable, so a simulated crash is simply a new
``MemoryStorage`` built from the old one's contents (see ``crash()``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyraft.core.messages import Entry, HardState
from pyraft.storage.base import RecoveryReport, StorageClosed, check_batch, check_hard_state


class MemoryStorage:
    """The in-memory twin of ``FileStorage``: same validation, same errors, no disk."""

    def __init__(self, hard_state: HardState | None = None, entries: Sequence[Entry] = ()) -> None:
        """Start empty, or pre-seeded with a durable state (validated like an append)."""
        self._hs = HardState()
        self._entries: list[Entry] = []
        self._closed = False
        if hard_state is not None:
            self.save_hard_state(hard_state)
        if entries:
            self.append(entries)

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        self._check_open()
        report = RecoveryReport(len(self._entries), 0, None, None)
        return self._hs, list(self._entries), report

    def save_hard_state(self, hs: HardState) -> None:
        self._check_open()
        check_hard_state(self._hs, hs)
        self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        self._check_open()
        if not entries:
            return
        first = entries[0].index
        prev_term = self._entries[first - 2].term if 2 <= first <= len(self._entries) + 1 else 0
        check_batch(entries, len(self._entries), prev_term)
        del self._entries[first - 1 :]
        self._entries.extend(entries)

    def close(self) -> None:
        self._closed = True

    @property
    def last_index(self) -> int:
        return len(self._entries)

    def durable(self) -> tuple[HardState, tuple[Entry, ...]]:
        """What a crash right now would leave behind (all of it, by definition)."""
        return self._hs, tuple(self._entries)

    def crash(self) -> MemoryStorage:
        """Simulate a crash and restart: close this storage, return a fresh one with its durable contents.

        The old object refuses further use, like the file handle of a dead process."""
        hs, entries = self.durable()
        self.close()
        twin = MemoryStorage()
        twin._hs = hs
        twin._entries = list(entries)
        return twin

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("memory storage is closed")

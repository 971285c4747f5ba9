"""The in-memory view of the Raft log, with the durability watermarks the core needs.

Indexes start at 1; index 0 is the empty prefix with term 0. Terms in a Raft log
never decrease, which lets term lookups use binary search instead of scans.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from pyraft.core.messages import Entry

ENTRY_OVERHEAD = 24  # rough per-entry framing cost when sizing a batch


class LogError(Exception):
    """The caller asked the log for something that would break a Raft invariant."""


class RaftLog:
    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self._entries: list[Entry] = list(entries)
        for position, entry in enumerate(self._entries, start=1):
            if entry.index != position:
                raise LogError(f"recovered log is not contiguous at index {position}")
        # Entries up to stable_index are durable with their current contents.
        self.stable_index = len(self._entries)
        # Entries up to handed_out_index were given to storage (in a Ready) to persist.
        self.handed_out_index = len(self._entries)

    @property
    def last_index(self) -> int:
        return len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else 0

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index``; 0 for index 0. Raises for an index past the end."""
        if index == 0:
            return 0
        if not 0 < index <= len(self._entries):
            raise LogError(f"no entry at index {index} (last is {self.last_index})")
        return self._entries[index - 1].term

    def matches(self, index: int, term: int) -> bool:
        return 0 <= index <= self.last_index and self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        self.term_at(index)
        return self._entries[index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi."""
        return self._entries[max(lo, 1) - 1 : max(hi, 1) - 1]

    def batch(self, lo: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` on, bounded by count and size (at least one if any exist)."""
        out: list[Entry] = []
        size = 0
        for entry in self._entries[lo - 1 : lo - 1 + max_entries]:
            size += len(entry.data) + ENTRY_OVERHEAD
            if out and size > max_bytes:
                break
            out.append(entry)
        return tuple(out)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as ours (5.4.1)."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term(self, term: int) -> int:
        """First index whose term is >= ``term`` (terms never decrease along the log)."""
        return bisect_left(self._entries, term, key=_term) + 1

    def last_index_of_term(self, term: int, upto: int) -> int | None:
        """Last index <= ``upto`` whose entry has exactly ``term``, if any."""
        position = bisect_right(self._entries, term, hi=min(upto, self.last_index), key=_term)
        if position == 0 or self._entries[position - 1].term != term:
            return None
        return position

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader-side append of freshly created entries."""
        if entries and entries[0].index != self.last_index + 1:
            raise LogError(f"append at {entries[0].index} leaves a gap after {self.last_index}")
        self._entries.extend(entries)

    def try_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry], committed: int) -> bool:
        """Follower-side AppendEntries (Figure 2, receiver steps 2-4).

        Entries already present with the same term are kept, so a duplicated or
        reordered message never truncates anything it should not."""
        if not self.matches(prev_index, prev_term):
            return False
        for offset, entry in enumerate(entries):
            if entry.index > self.last_index:
                self.append(entries[offset:])
                break
            if self.term_at(entry.index) != entry.term:
                if entry.index <= committed:
                    raise LogError(f"leader tried to overwrite committed entry {entry.index}")
                self._truncate_from(entry.index)
                self.append(entries[offset:])
                break
        return True

    def _truncate_from(self, index: int) -> None:
        del self._entries[index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)
        self.handed_out_index = min(self.handed_out_index, index - 1)

    def take_unpersisted(self) -> list[Entry]:
        """Entries not yet handed to storage; from now on they count as handed out."""
        fresh = self._entries[self.handed_out_index :]
        self.handed_out_index = self.last_index
        return fresh

    def stable_to(self, index: int, term: int) -> bool:
        """Storage made entries up to ``index`` durable; ignored if they were since replaced."""
        if index <= self.stable_index or not self.matches(index, term):
            return False
        self.stable_index = index
        return True


def _term(entry: Entry) -> int:
    return entry.term

"""The in-memory view of the Raft log, with the durability watermarks the core needs.

Indexes start at 1; index 0 is the empty prefix with term 0. A snapshot may
replace a prefix (section 7): then the log starts after ``snapshot_index``,
whose term is still known, and anything below it is gone. Terms in a Raft log
never decrease, which lets term lookups use binary search instead of scans.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from pyraft.core.messages import Entry

ENTRY_OVERHEAD = 24  # rough per-entry framing cost when sizing a batch


class LogError(Exception):
    """The caller asked the log for something that would break a Raft invariant."""


class Compacted(LogError):
    """The entry asked for is inside the snapshot: only its state survives, not the entry."""


class RaftLog:
    def __init__(
        self, entries: Sequence[Entry] = (), snapshot_index: int = 0, snapshot_term: int = 0
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = list(entries)
        for position, entry in enumerate(self._entries, start=snapshot_index + 1):
            if entry.index != position:
                raise LogError(f"recovered log is not contiguous at index {position}")
        # Entries up to stable_index are durable with their current contents.
        self.stable_index = self.last_index
        # Entries up to handed_out_index were given to storage (in a Ready) to persist.
        self.handed_out_index = self.last_index

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (the snapshot's term at its index, 0 at 0).

        Raises Compacted below the snapshot and LogError past the end."""
        offset = index - self.snapshot_index
        if offset == 0:
            return self.snapshot_term
        if offset < 0:
            raise Compacted(f"entry {index} is compacted into the snapshot at {self.snapshot_index}")
        if offset > len(self._entries):
            raise LogError(f"no entry at index {index} (last is {self.last_index})")
        return self._entries[offset - 1].term

    def matches(self, index: int, term: int) -> bool:
        return self.snapshot_index <= index <= self.last_index and self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        if index == self.snapshot_index:
            raise Compacted(f"entry {index} is the snapshot's last included entry")
        self.term_at(index)
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi; ``lo`` must be above the snapshot."""
        if lo <= self.snapshot_index and hi > lo:
            raise Compacted(f"entries from {lo} are compacted (the log starts at {self.first_index})")
        base = self.snapshot_index + 1
        return self._entries[max(lo - base, 0) : max(hi - base, 0)]

    def batch(self, lo: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` on, bounded by count and size (at least one if any exist)."""
        if lo <= self.snapshot_index:
            raise Compacted(f"entries from {lo} are compacted (the log starts at {self.first_index})")
        out: list[Entry] = []
        size = 0
        start = lo - self.snapshot_index - 1
        for entry in self._entries[start : start + max_entries]:
            size += len(entry.data) + ENTRY_OVERHEAD
            if out and size > max_bytes:
                break
            out.append(entry)
        return tuple(out)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as ours (5.4.1)."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term(self, term: int) -> int:
        """First index above the snapshot whose term is >= ``term`` (terms never decrease along the log)."""
        return bisect_left(self._entries, term, key=_term) + self.first_index

    def last_index_of_term(self, term: int, upto: int) -> int | None:
        """Last index <= ``upto`` (and not below the snapshot) whose entry has exactly ``term``, if any."""
        if upto < self.snapshot_index:
            return None
        hi = min(upto, self.last_index) - self.snapshot_index
        position = bisect_right(self._entries, term, hi=hi, key=_term)
        if position and self._entries[position - 1].term == term:
            return position + self.snapshot_index
        if self.snapshot_term == term:
            return self.snapshot_index
        return None

    def compact(self, index: int) -> None:
        """Drop the entries up to ``index``, which a durable snapshot now covers."""
        if index <= self.snapshot_index:
            return
        if index > self.stable_index:
            raise LogError(f"cannot compact to {index}: entries are durable only up to {self.stable_index}")
        term = self.term_at(index)
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term

    def restore(self, index: int, term: int) -> None:
        """Start the log after an installed snapshot (Figure 13, receiver steps 6-7).

        A log that holds the snapshot's last entry keeps what follows it; any
        other log disagrees with the snapshot (or is shorter) and is dropped."""
        if index <= self.snapshot_index:
            return
        if self.matches(index, term):
            del self._entries[: index - self.snapshot_index]
            self.stable_index = max(self.stable_index, index)
            self.handed_out_index = max(self.handed_out_index, index)
        else:
            self._entries.clear()
            self.stable_index = self.handed_out_index = index
        self.snapshot_index, self.snapshot_term = index, term

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader-side append of freshly created entries."""
        if entries and entries[0].index != self.last_index + 1:
            raise LogError(f"append at {entries[0].index} leaves a gap after {self.last_index}")
        self._entries.extend(entries)

    def try_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry], committed: int) -> bool:
        """Follower-side AppendEntries (Figure 2, receiver steps 2-4).

        Entries already present with the same term are kept, so a duplicated or
        reordered message never truncates anything it should not."""
        if prev_index < self.snapshot_index:
            # The snapshot holds committed entries, which every leader has too: skip them.
            entries = entries[self.snapshot_index - prev_index :]
            prev_index, prev_term = self.snapshot_index, self.snapshot_term
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
        del self._entries[index - self.snapshot_index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)
        self.handed_out_index = min(self.handed_out_index, index - 1)

    def take_unpersisted(self) -> list[Entry]:
        """Entries not yet handed to storage; from now on they count as handed out."""
        fresh = self._entries[self.handed_out_index - self.snapshot_index :]
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

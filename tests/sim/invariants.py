"""Raft safety properties as checks over plain data.

Everything here works on ``Entry`` values, ints and dicts, never on a core,
so each check can be fed hand-made histories (tests/test_invariants_selftest.py)
and so the simulator can tell the core's bugs apart from its own.

The ``SafetyMonitor`` keeps the history the properties quantify over (every
leader ever seen, every entry ever observed committed, applied or
acknowledged) and is fed incrementally by the simulator after every event,
because re-checking whole logs after every event would make the seed budget
impossible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyraft.core.membership import Membership
from pyraft.core.messages import Entry, EntryKind, HardState, Message, RequestVote, RequestVoteResponse

# A log as plain data: ``log[i - 1]`` is the entry at index ``i``.
Log = Sequence[Entry]


class InvariantViolation(AssertionError):
    """A safety property failed; ``invariant`` names which one."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant}: {detail}")


def _same(a: Entry, b: Entry) -> bool:
    """Entries are the same when every field matches (kind and data included)."""
    return a is b or (a.index == b.index and a.term == b.term and a.kind == b.kind and a.data == b.data)


def check_log_shape(node: int, log: Log) -> None:
    """A log holds indexes 1..n in order with non-decreasing terms; the other checks rely on it."""
    prev_term = 0
    for pos, entry in enumerate(log, start=1):
        if entry.index != pos:
            raise InvariantViolation("Log Shape", f"node {node} holds index {entry.index} at position {pos}")
        if entry.term < prev_term:
            raise InvariantViolation(
                "Log Shape", f"node {node}: term drops from {prev_term} to {entry.term} at index {pos}"
            )
        prev_term = entry.term


def check_election_safety(leaders_by_term: dict[int, int], node: int, term: int) -> None:
    """Record ``node`` as leader of ``term``; fail if another node ever led that term.

    ``leaders_by_term`` is the whole history, so two leaders that never
    coexisted in time are still caught."""
    seen = leaders_by_term.setdefault(term, node)
    if seen != node:
        detail = f"nodes {seen} and {node} were both leader in term {term}"
        raise InvariantViolation("Election Safety", detail)


def check_log_matching(logs: Mapping[int, Log]) -> None:
    """Pairwise: logs that share an entry (same index and term) are identical up to it.

    Only the highest shared point of each pair needs comparing: the prefix
    comparison below it covers every lower shared point."""
    nodes = sorted(logs)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            _check_pair(a, logs[a], b, logs[b])


def _check_pair(a: int, log_a: Log, b: int, log_b: Log) -> None:
    """Compare one pair from their highest index with equal terms downwards."""
    top = min(len(log_a), len(log_b))
    while top > 0 and log_a[top - 1].term != log_b[top - 1].term:
        top -= 1
    if log_a[:top] == log_b[:top]:
        return  # the fast path: replicated entries are mostly the very same objects
    for k in range(top):
        if not _same(log_a[k], log_b[k]):
            raise InvariantViolation(
                "Log Matching",
                f"nodes {a} and {b} share (index {top}, term {log_a[top - 1].term}) "
                f"but differ at index {k + 1}: {log_a[k]} vs {log_b[k]}",
            )


def check_lineage(
    lineage: dict[tuple[int, int], tuple[Entry, int]], node: int, entries: Sequence[Entry], prev_term: int
) -> None:
    """Incremental Log Matching over the whole history.

    An (index, term) pair names one entry ever: same content and same
    predecessor term everywhere. By induction on the index, that is exactly
    what makes two logs sharing an entry identical below it, and it is cheap
    to check on each write. ``prev_term`` is the term of the entry just before
    ``entries[0]`` in the writer's log."""
    for entry in entries:
        key = (entry.index, entry.term)
        known = lineage.setdefault(key, (entry, prev_term))
        if not _same(known[0], entry) or known[1] != prev_term:
            raise InvariantViolation(
                "Log Matching",
                f"node {node} holds {entry} after term {prev_term}, but (index {entry.index}, "
                f"term {entry.term}) was seen as {known[0]} after term {known[1]}",
            )
        prev_term = entry.term


@dataclass(frozen=True, slots=True)
class Observed:
    """An entry seen committed or acknowledged, and an upper bound on the term in which that happened.

    Leaders of a *higher* term must hold it; a deposed leader of an older term
    may still win a stale election (delayed votes) and legitimately lack it."""

    entry: Entry
    term: int


def check_leader_completeness(node: int, term: int, log: Log, committed: Mapping[int, Observed]) -> None:
    """Every entry observed committed in a term below ``term`` is in the leader's log."""
    for index, seen in committed.items():
        if seen.term >= term:
            continue
        have = log[index - 1] if index <= len(log) else None
        if have is None or not _same(have, seen.entry):
            raise InvariantViolation(
                "Leader Completeness",
                f"node {node} leads term {term} without committed {seen.entry} (observed committed "
                f"by term {seen.term}); its log has {have}",
            )


def check_no_overwrite(node: int, entries: Sequence[Entry], committed: Mapping[int, Observed]) -> None:
    """No entry of a term at or above the commit term replaces a committed entry.

    An entry of such a term was created by a leader that must have held the
    committed one (Leader Completeness), so a different entry there means the
    committed entry is being lost. Older-term entries may differ: they come
    from stale leaders and can never commit."""
    for entry in entries:
        seen = committed.get(entry.index)
        if seen is not None and entry.term >= seen.term and not _same(entry, seen.entry):
            raise InvariantViolation(
                "Leader Completeness",
                f"node {node} writes {entry} over committed {seen.entry} "
                f"(observed committed by term {seen.term})",
            )


def check_commit(node: int, entries: Sequence[Entry], committed: Mapping[int, Observed]) -> None:
    """Entries a node now counts as committed must agree with every entry ever observed committed."""
    for entry in entries:
        seen = committed.get(entry.index)
        if seen is not None and not _same(seen.entry, entry):
            raise InvariantViolation(
                "State Machine Safety", f"node {node} commits {entry} but {seen.entry} was committed before"
            )


def check_apply(applied: dict[int, Entry], node: int, applied_count: int, entry: Entry) -> None:
    """Nodes apply indexes 1, 2, 3... with no gap, and all the same entry at each index."""
    if entry.index != applied_count + 1:
        raise InvariantViolation(
            "State Machine Safety",
            f"node {node} applies index {entry.index} after applying {applied_count} entries",
        )
    known = applied.setdefault(entry.index, entry)
    if not _same(known, entry):
        raise InvariantViolation(
            "State Machine Safety", f"node {node} applies {entry} but {known} was applied at that index"
        )


def check_durable_majority(
    entry: Entry, durable: Mapping[int, Log], quorum: int, voters: frozenset[int] | None = None
) -> None:
    """A committed entry sits in the durable store of at least a quorum of nodes.

    With ``voters``, only their stores count (the quorum is then a majority of those voters)."""
    holders = [
        node
        for node, log in durable.items()
        if (voters is None or node in voters)
        and entry.index <= len(log)
        and _same(log[entry.index - 1], entry)
    ]
    if len(holders) < quorum:
        among = "" if voters is None else f" of voters {sorted(voters)}"
        raise InvariantViolation(
            "No Lost Commits",
            f"committed {entry} is durable only on {holders}, quorum{among} is {quorum}",
        )


def check_acknowledged(node: int, term: int, log: Log, acked: Mapping[int, Observed]) -> None:
    """Every proposal acknowledged to a client in a lower term is in the new leader's log."""
    for index, seen in acked.items():
        if seen.term >= term:
            continue
        if index > len(log) or not _same(log[index - 1], seen.entry):
            raise InvariantViolation(
                "Acknowledged Proposals",
                f"node {node} leads term {term} without acknowledged {seen.entry} "
                f"(acked in term {seen.term})",
            )


def check_read_index(node: int, request_id: int, read_index: int, floor: int) -> None:
    """A linearizable read must not be served below what was committed when it was issued."""
    if read_index < floor:
        raise InvariantViolation(
            "Linearizable Read",
            f"node {node} read {request_id} got index {read_index}, "
            f"but {floor} was committed when it was issued",
        )


def check_durable_before_send(msg: Message, durable: HardState) -> None:
    """A message may only leave once the term it carries, and any vote it grants, are durable.

    Pre-vote traffic is exempt: it carries a prospective term and changes no state."""
    if isinstance(msg, RequestVote | RequestVoteResponse) and msg.pre_vote:
        return
    if msg.term > durable.term:
        raise InvariantViolation(
            "Durable Before Send", f"node {msg.src} sends {msg} while its durable term is {durable.term}"
        )
    if isinstance(msg, RequestVoteResponse) and msg.granted and durable.voted_for != msg.dst:
        raise InvariantViolation(
            "Durable Before Send", f"node {msg.src} grants {msg} but its durable vote is {durable.voted_for}"
        )


@dataclass
class SafetyMonitor:
    """The history the safety properties quantify over, fed by the simulator event by event.

    Durability is checked either against a fixed ``quorum`` of all stores, or, given the
    bootstrap ``voters``, against the configurations in effect: an entry must be durable on a
    majority of the committing leader's voters when it commits, and afterwards on a majority
    of the latest committed configuration's voters (entries above that configuration: of the
    voters they were committed under). A committed configuration sits durably on a majority
    of its own voters (it was in effect for its own commit: one change at a time), so they
    also hold every entry below it."""

    quorum: int = 0
    voters: frozenset[int] | None = None
    leaders_by_term: dict[int, int] = field(default_factory=dict)
    lineage: dict[tuple[int, int], tuple[Entry, int]] = field(default_factory=dict)
    committed: dict[int, Observed] = field(default_factory=dict)
    applied: dict[int, Entry] = field(default_factory=dict)
    acked: dict[int, Observed] = field(default_factory=dict)
    config_index: int = 0  # the latest committed CONFIG entry (0: the bootstrap voters)
    config_voters: frozenset[int] = frozenset()
    commit_voters: dict[int, frozenset[int]] = field(default_factory=dict)  # index -> voters at commit

    def __post_init__(self) -> None:
        if self.voters is not None and not self.config_voters:
            self.config_voters = self.voters

    @property
    def max_committed(self) -> int:
        return len(self.committed)

    def leader(self, node: int, term: int) -> None:
        """A node is leader of ``term`` right now."""
        check_election_safety(self.leaders_by_term, node, term)

    def new_leader(self, node: int, term: int, log: Log) -> None:
        """A node has just become leader: its log must hold everything committed and acknowledged before."""
        check_election_safety(self.leaders_by_term, node, term)
        check_log_shape(node, log)
        check_leader_completeness(node, term, log, self.committed)
        check_acknowledged(node, term, log, self.acked)

    def write(self, node: int, entries: Sequence[Entry], prev_term: int) -> None:
        """A node's in-memory log changed to hold ``entries`` after an entry of ``prev_term``."""
        check_lineage(self.lineage, node, entries, prev_term)
        check_no_overwrite(node, entries, self.committed)

    def commit(
        self,
        node: int,
        term: int,
        entries: Sequence[Entry],
        durable: Mapping[int, Log],
        voters: frozenset[int] | None = None,
    ) -> None:
        """``entries`` are those a node in ``term`` newly counts as committed; record the new ones.

        Entries become committed in index order, so ``committed`` stays the
        prefix 1..max_committed; each new one must already be durable on a quorum:
        of ``voters`` (the committing leader's), else of the latest committed configuration."""
        check_commit(node, entries, self.committed)
        for entry in entries:
            if entry.index == self.max_committed + 1:
                if self.voters is None:
                    check_durable_majority(entry, durable, self.quorum)
                else:
                    at = self.config_voters if voters is None else voters
                    check_durable_majority(entry, durable, len(at) // 2 + 1, at)
                    self.commit_voters[entry.index] = at
                    if entry.kind is EntryKind.CONFIG:
                        self.config_index = entry.index
                        self.config_voters = Membership.decode(entry.data).voter_ids
                self.committed[entry.index] = Observed(entry, term)

    def durable_changed(self, first_index: int, durable: Mapping[int, Log]) -> None:
        """A store truncated or appended from ``first_index``: committed entries there must keep a quorum."""
        for index in range(first_index, self.max_committed + 1):
            entry = self.committed[index].entry
            if self.voters is None:
                check_durable_majority(entry, durable, self.quorum)
                continue
            at = self.config_voters if index <= self.config_index else self.commit_voters[index]
            check_durable_majority(entry, durable, len(at) // 2 + 1, at)

    def apply(self, node: int, applied_count: int, entry: Entry) -> None:
        """A node applies ``entry`` as its ``applied_count + 1``-th entry."""
        check_apply(self.applied, node, applied_count, entry)
        seen = self.committed.get(entry.index)
        if seen is None or not _same(seen.entry, entry):
            raise InvariantViolation(
                "State Machine Safety", f"node {node} applies {entry} never observed committed ({seen})"
            )

    def acknowledge(self, entry: Entry, term: int) -> None:
        """A client was told its proposal ``entry`` succeeded by a node in ``term``."""
        self.acked.setdefault(entry.index, Observed(entry, term))

    def full_check(self, logs: Mapping[int, Log], leaders: Mapping[int, int]) -> None:
        """Whole-state re-check, run periodically: catches changes no Ready announced.

        ``leaders`` maps each current leader to its term."""
        check_log_matching(logs)
        for node, term in leaders.items():
            check_leader_completeness(node, term, logs[node], self.committed)
            check_acknowledged(node, term, logs[node], self.acked)

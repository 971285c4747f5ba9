"""Who is in the quorum: voters, and learners (KRaft's observers) that replicate without voting.

A configuration lives in the log as a CONFIG entry and takes effect on every
server as soon as the entry is in its log, committed or not (thesis 4.1);
truncating the entry reverts it. Changes go one server at a time, so any
majority of the old voters and any majority of the new ones overlap and no
joint consensus is needed (thesis 4.2). Addresses are carried for the actors
(who to dial); the core never interprets them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack


class MembershipError(ValueError):
    """A membership change that is not a single, valid step from the current configuration."""


@dataclass(frozen=True, slots=True)
class Member:
    node_id: int
    address: str = ""  # "host:port" of its raft port


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[Member, ...]
    learners: tuple[Member, ...] = ()

    @staticmethod
    def of_ids(voter_ids: tuple[int, ...]) -> Membership:
        return Membership(tuple(Member(i) for i in voter_ids))

    @property
    def voter_ids(self) -> frozenset[int]:
        return frozenset(m.node_id for m in self.voters)

    @property
    def learner_ids(self) -> frozenset[int]:
        return frozenset(m.node_id for m in self.learners)

    @property
    def ids(self) -> frozenset[int]:
        return self.voter_ids | self.learner_ids

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def addresses(self) -> dict[int, str]:
        return {m.node_id: m.address for m in (*self.voters, *self.learners)}

    # ------------------------------------------------------------ single-server steps

    def with_learner(self, member: Member) -> Membership:
        if member.node_id in self.ids:
            raise MembershipError(f"node {member.node_id} is already a member")
        if member.node_id < 0:
            raise MembershipError(f"invalid node id {member.node_id}")
        return Membership(self.voters, _sorted((*self.learners, member)))

    def promoted(self, node_id: int) -> Membership:
        learner = next((m for m in self.learners if m.node_id == node_id), None)
        if learner is None:
            raise MembershipError(f"node {node_id} is not a learner")
        learners = tuple(m for m in self.learners if m.node_id != node_id)
        return Membership(_sorted((*self.voters, learner)), learners)

    def without(self, node_id: int) -> Membership:
        if node_id not in self.ids:
            raise MembershipError(f"node {node_id} is not a member")
        voters = tuple(m for m in self.voters if m.node_id != node_id)
        if not voters:
            raise MembershipError("cannot remove the last voter")
        return Membership(voters, tuple(m for m in self.learners if m.node_id != node_id))

    # ------------------------------------------------------------ bytes (CONFIG entries, snapshots)

    def encode(self) -> bytes:
        rows = [[[m.node_id, m.address] for m in group] for group in (self.voters, self.learners)]
        packed: bytes = msgpack.packb(rows, use_bin_type=True)
        return packed

    @staticmethod
    def decode(data: bytes) -> Membership:
        try:
            voters, learners = msgpack.unpackb(data)
            membership = Membership(_members(voters), _members(learners))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise MembershipError(f"not a membership configuration: {exc}") from exc
        if not membership.voters or len(membership.ids) != len(voters) + len(learners):
            raise MembershipError("a configuration needs voters and distinct ids")
        return membership


def _members(rows: object) -> tuple[Member, ...]:
    if not isinstance(rows, list):
        raise TypeError("members must be a list")
    members = []
    for row in rows:
        node_id, address = row
        if type(node_id) is not int or node_id < 0 or not isinstance(address, str):
            raise TypeError(f"bad member {row!r}")
        members.append(Member(node_id, address))
    return _sorted(members)


def _sorted(members: tuple[Member, ...] | list[Member]) -> tuple[Member, ...]:
    return tuple(sorted(members, key=lambda m: m.node_id))

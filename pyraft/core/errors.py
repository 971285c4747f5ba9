"""Errors the core raises, each with one precise meaning (in the manner of h11)."""

from __future__ import annotations


class RaftError(Exception):
    """Base class for every error the Raft core or node reports to a caller."""


class NotLeader(RaftError):
    """This node cannot take the request because it is not the leader.

    ``leader_id`` is the leader this node knows of, or None when it knows none."""

    def __init__(self, leader_id: int | None) -> None:
        self.leader_id = leader_id
        where = f"leader is node {leader_id}" if leader_id is not None else "no leader is known"
        super().__init__(f"not the leader; {where}")


class NoLeader(NotLeader):
    """No leader is known (an election is running or there is no quorum)."""

    def __init__(self) -> None:
        super().__init__(None)


class TransferInProgress(RaftError):
    """The leader is handing leadership over and takes no new proposals meanwhile."""


class ConfigChangeInProgress(RaftError):
    """A membership change is not committed yet (or the leader has not committed in its term):
    one change at a time (thesis 4.1)."""


class RequestLost(RaftError):
    """A forwarded proposal or read was dropped (leader changed, entry overwritten).

    For a proposal the outcome is definite: the command was not and will not be applied."""

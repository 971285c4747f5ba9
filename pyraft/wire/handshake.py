"""The first exchange on every connection.

A connection carries either Raft traffic between two nodes or client requests;
the opener says which in its Hello so the listener can refuse a stranger before
reading anything else from it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bumped whenever the codec's tag table or a message's field list changes, so
# mismatched builds refuse each other instead of misreading each other.
PROTOCOL_VERSION = 2  # 2: InstallSnapshot


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent by the connecting side. ``node_id`` None marks a client connection."""

    protocol_version: int
    cluster_id: str
    node_id: int | None


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The listener's verdict; ``node_id`` is the listener's own id so clients learn who they reached."""

    ok: bool
    reason: str
    node_id: int

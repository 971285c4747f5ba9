"""pyraft: a Raft consensus quorum that keeps KRaft-style metadata."""

__version__ = "0.1.0"

"""Seeded deterministic simulation of a pyraft quorum (in the manner of a VOPR).

The pure Raft core is driven by a heap of timed events and an in-memory
network; safety invariants are checked after every event so that a bug is
caught at the first step where it becomes visible, with a seed that replays it.
"""

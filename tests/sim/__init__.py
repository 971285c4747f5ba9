"""Seeded deterministic simulation of a pyraft quorum (in the manner of a VOPR).

The pure Raft core is driven by a heap of timed events and an in-memory
network; safety invariants are checked after every event so that a bug is
caught at the first step where it becomes visible, with a seed that replays it.

Run (the options live in tests/sim/conftest.py, so name the directory)::

    .venv/bin/pytest tests/sim                                  # CI: 250 seeds x (3, 5) nodes
    .venv/bin/pytest tests/sim --sim-seeds 5000 --sim-first-seed 10000 --sim-steps 3000   # long
    .venv/bin/pytest tests/sim/test_simulation.py --sim-seed 17 --sim-nodes 5           # replay

Modules: ``cluster`` (event loop, nodes, stores, faults, clients), ``network``
(loss, duplication, delay, partitions), ``invariants`` (the safety checks, pure).
"""

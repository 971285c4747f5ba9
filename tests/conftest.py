"""Options for the whole suite. pytest reads ``pytest_addoption`` only from conftest files it
loads at startup, so the simulation's knobs live here, where ``pytest --sim-seeds N`` finds them
from the repository root as well as with ``tests/sim`` named."""

from __future__ import annotations

import pytest
from sim.cluster import DEFAULT_FAULT_TICKS

DEFAULT_SIM_SEEDS = 250  # per cluster size: 500 seeds in CI


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "deterministic Raft simulation")
    group.addoption("--sim-seeds", type=int, default=DEFAULT_SIM_SEEDS, help="seeds per cluster size")
    group.addoption("--sim-first-seed", type=int, default=0, help="first seed (explore fresh seeds)")
    group.addoption("--sim-seed", type=int, default=None, help="replay this one seed")
    group.addoption("--sim-nodes", type=int, default=None, help="only this cluster size")
    group.addoption(
        "--sim-steps", type=int, default=DEFAULT_FAULT_TICKS, help="ticks of the fault phase per seed"
    )

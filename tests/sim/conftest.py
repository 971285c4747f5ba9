"""Command-line knobs for the simulation, so a longer run or a replay is one flag away.

pytest only reads this file's options when it collects tests/sim directly, so
pass the path: ``.venv/bin/pytest tests/sim --sim-seeds 5000``.
"""

from __future__ import annotations

import pytest

from .cluster import DEFAULT_FAULT_TICKS, SimConfig

DEFAULT_SEEDS = 250  # per cluster size: 500 seeds in CI
CLUSTER_SIZES = (3, 5)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "deterministic Raft simulation")
    group.addoption("--sim-seeds", type=int, default=DEFAULT_SEEDS, help="seeds per cluster size")
    group.addoption("--sim-first-seed", type=int, default=0, help="first seed (explore fresh seeds)")
    group.addoption("--sim-seed", type=int, default=None, help="replay this one seed")
    group.addoption("--sim-nodes", type=int, default=None, help="only this cluster size")
    group.addoption(
        "--sim-steps", type=int, default=DEFAULT_FAULT_TICKS, help="ticks of the fault phase per seed"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``sim_config`` over (cluster size, seed)."""
    if "sim_config" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    sizes = (opt("--sim-nodes"),) if opt("--sim-nodes") else CLUSTER_SIZES
    if opt("--sim-seed") is not None:
        seeds = [opt("--sim-seed")]
    else:
        seeds = list(range(opt("--sim-first-seed"), opt("--sim-first-seed") + opt("--sim-seeds")))
    configs = [SimConfig(seed=s, nodes=n, fault_ticks=opt("--sim-steps")) for n in sizes for s in seeds]
    metafunc.parametrize("sim_config", configs, ids=[f"n{c.nodes}-seed{c.seed}" for c in configs])

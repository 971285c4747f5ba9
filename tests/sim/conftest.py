"""Parametrizes the simulation over (cluster size, seed) from the options in tests/conftest.py."""

from __future__ import annotations

import pytest

from .cluster import SimConfig

CLUSTER_SIZES = (3, 5)


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

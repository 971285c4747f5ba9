"""Fixtures for the operator tests: a real local cluster of node processes on free ports."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from pyraft.localcluster import LocalCluster, free_port_block


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three node processes with a leader, shared by a module's tests (starting one takes seconds)."""
    base = free_port_block(6)
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), 3, base, base + 3)
    cluster.start_all()
    try:
        cluster.wait_for_leader(timeout=20)
        yield cluster
    finally:
        cluster.stop_all(signal.SIGKILL)

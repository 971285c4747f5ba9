"""Helpers for tests against real node processes (the directory is not a package: ``operator`` is stdlib)."""

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


def servers(cluster: LocalCluster) -> str:
    return ",".join(f"127.0.0.1:{n.http_port}" for n in cluster.nodes.values())

"""Helpers for tests against real node processes (the directory is not a package: ``operator`` is stdlib)."""

from __future__ import annotations

from pyraft.localcluster import LocalCluster


def servers(cluster: LocalCluster) -> str:
    return ",".join(f"127.0.0.1:{n.http_port}" for n in cluster.nodes.values())

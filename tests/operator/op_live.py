"""Helpers for tests against real node processes (the directory is not a package: ``operator`` is stdlib)."""

from __future__ import annotations

import socket

from pyraft.localcluster import LocalCluster


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65000 and all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def servers(cluster: LocalCluster) -> str:
    return ",".join(f"127.0.0.1:{n.http_port}" for n in cluster.nodes.values())

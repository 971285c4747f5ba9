"""Start and watch a local quorum of ``python -m pyraft.node`` processes.

Used by ``python -m pyraft.localcluster`` (the quick start) and by the
multi-process tests, which need the same thing: real processes on loopback,
each with its own data directory, and a way to wait for conditions on them.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class NodeProcess:
    node_id: int
    http_port: int
    raft_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def status(self, timeout: float = 0.5) -> dict[str, Any] | None:
        """GET /status, or None when the node does not answer."""
        url = f"http://127.0.0.1:{self.http_port}/status"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    base_http_port: int = 8001
    base_raft_port: int = 9001
    extra_args: list[str] = field(default_factory=list)
    nodes: dict[int, NodeProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i in range(1, self.size + 1):
            self.nodes[i] = NodeProcess(
                i,
                self.base_http_port + i - 1,
                self.base_raft_port + i - 1,
                self.root / str(i),
                self.root / f"node-{i}.log",
            )

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.raft_port}" for n in self.nodes.values())

    @property
    def peer_http(self) -> str:
        """Every node's HTTP address, so each can point the dashboard and /quorum at the others."""
        return ",".join(f"{n.node_id}=127.0.0.1:{n.http_port}" for n in self.nodes.values())

    @property
    def raft_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.raft_port) for n in self.nodes.values()]

    def start(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pyraft.node",
            "--id",
            str(node_id),
            "--port",
            str(node.http_port),
            "--voters",
            self.voters,
            "--data-dir",
            str(node.data_dir),
            "--peer-http",
            self.peer_http,
            *self.extra_args,
        ]
        log = node.log_path.open("ab")
        node.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self) -> None:
        for node_id in self.nodes:
            self.start(node_id)

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[node_id]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            node.proc.wait(timeout=30)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        for node in self.nodes.values():
            if node.running:
                assert node.proc is not None
                node.proc.send_signal(sig)
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    def statuses(self) -> dict[int, dict[str, Any]]:
        found = {}
        for node in self.nodes.values():
            if node.running:
                status = node.status()
                if status is not None:
                    found[node.node_id] = status
        return found

    def leader(self) -> int | None:
        """The leader that every answering node agrees on in the highest term, if any."""
        statuses = self.statuses()
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        if not leaders:
            return None
        best = max(leaders, key=lambda s: s["term"])
        return int(best["nodeId"])

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}; statuses: {self.statuses()}")

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        return int(self.wait_for("a leader", self.leader, timeout))


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it (for tests and benchmarks)."""
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m pyraft.localcluster", description="Run a local pyraft quorum until Ctrl-C."
    )
    p.add_argument("--nodes", type=int, default=3, help="how many voters")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="one subdirectory per node")
    p.add_argument("--http-port", type=int, default=8001, help="HTTP port of node 1 (node i: +i-1)")
    p.add_argument("--raft-port", type=int, default=9001, help="raft port of node 1 (node i: +i-1)")
    args, extra = p.parse_known_args(argv)
    cluster = LocalCluster(args.data_dir, args.nodes, args.http_port, args.raft_port, extra)
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader()
        print(f"pyraft: {args.nodes} nodes up; node {leader} is the leader.")
        for node in cluster.nodes.values():
            print(
                f"  node {node.node_id}: http://127.0.0.1:{node.http_port}/status  "
                f"raft 127.0.0.1:{node.raft_port}  data {node.data_dir}  log {node.log_path}"
            )
        print(f"Dashboard: http://127.0.0.1:{cluster.nodes[1].http_port}/  (any node serves it)")
        print("Ctrl-C stops the cluster.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print("pyraft: stopping", flush=True)
        cluster.stop_all()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()

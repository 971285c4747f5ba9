"""Start and watch a local quorum of ``python -m pyraft.node`` processes.

Used by ``python -m pyraft.localcluster`` (the quick start) and by the
multi-process tests, which need the same thing: real processes on loopback,
each with its own data directory, and a way to wait for conditions on them.
Nodes ``1..size`` bootstrap the quorum; ``add_node`` makes another one that
starts outside it, as an observer waiting to be added (a membership change).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
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
        """GET /status, or None when the node does not answer.

        A garbled answer counts as none: polling the port of a node that is down can end
        in a TCP self-connection (the kernel picks that very port as our source port),
        which reads back our own request line."""
        try:
            status, body = self.call("GET", "/status", timeout=timeout)
        except (OSError, ValueError, http.client.HTTPException):
            return None
        return body if status == 200 else None

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        """One JSON request to this node's HTTP port: (status, body), error statuses included.
        Raises OSError when the node does not answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), json.load(response)
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.load(exc)

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

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
    bootstrap: list[int] = field(default_factory=list)  # the ids in every node's --voters

    def __post_init__(self) -> None:
        self.bootstrap = list(range(1, self.size + 1))
        for i in self.bootstrap:
            self.nodes[i] = NodeProcess(
                i,
                self.base_http_port + i - 1,
                self.base_raft_port + i - 1,
                self.root / str(i),
                self.root / f"node-{i}.log",
            )

    @property
    def voters(self) -> str:
        """The bootstrap quorum; nodes added later are not in it (their logs say who votes)."""
        return ",".join(f"{i}@127.0.0.1:{self.nodes[i].raft_port}" for i in self.bootstrap)

    @property
    def peer_http(self) -> str:
        """Every node's HTTP address, so each can point the dashboard and /quorum at the others."""
        return ",".join(f"{n.node_id}=127.0.0.1:{n.http_port}" for n in self.nodes.values())

    @property
    def raft_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.raft_port) for n in self.nodes.values()]

    def add_node(self, node_id: int) -> NodeProcess:
        """A node outside the bootstrap quorum: started, it is an observer waiting to be added.

        Its raft port is its HTTP port + 1000, the convention by which the nodes started
        before it (whose --peer-http does not name it) find its HTTP URL."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} exists already")
        taken = {p for n in self.nodes.values() for p in (n.http_port, n.raft_port)}
        http_port = free_port_pair(1000, avoid=taken)
        node = NodeProcess(
            node_id,
            http_port,
            http_port + 1000,
            self.root / str(node_id),
            self.root / f"node-{node_id}.log",
        )
        self.nodes[node_id] = node
        return node

    def start(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        own_port = [] if node_id in self.bootstrap else ["--raft-port", str(node.raft_port)]
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
            *own_port,
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

    def settled(self) -> int | None:
        """The leader, once every running node answers, follows it, and has applied what it
        committed: a membership change started then does not depend on a straggler."""
        statuses = self.statuses()
        leader = self.leader()
        running = [n.node_id for n in self.nodes.values() if n.running]
        if leader is None or leader not in statuses or sorted(statuses) != running:
            return None
        commit = statuses[leader]["commitIndex"]
        if all(s["leaderId"] == leader and s["lastApplied"] >= commit for s in statuses.values()):
            return leader
        return None

    def wait_settled(self, timeout: float = 30.0) -> int:
        return int(
            self.wait_for("every node to follow one leader and apply its commits", self.settled, timeout)
        )


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it (for tests and benchmarks).

    Drawn below the kernel's ephemeral range: a port from inside it can be taken, between
    this check and the node's bind, as the source port of some outgoing connection (the
    nodes dial each other), and the node then fails with "address already in use"."""
    return _free_ports(tuple(range(max(count, 1))), set())


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """One free port below the ephemeral range (see ``free_port_block``), never the same twice in
    this process: for tests that start listeners of their own."""
    port = free_port_pair(0, avoid=_HANDED_OUT)
    _HANDED_OUT.add(port)
    return port


def free_port_pair(offset: int, avoid: set[int] | None = None) -> int:
    """A free port ``p`` with ``p + offset`` free too (a node's HTTP and raft ports)."""
    return _free_ports((0, offset), avoid or set())


def _free_ports(offsets: tuple[int, ...], avoid: set[int]) -> int:
    low = _ephemeral_low() - max(offsets) - 1
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(FIRST_TEST_PORT, low) if low > FIRST_TEST_PORT else _kernel_port()
        ports = [base + o for o in offsets]
        if ports[-1] < 65000 and not avoid.intersection(ports) and all(_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free ports found")


FIRST_TEST_PORT = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the draw below is still outside the usual range


def _kernel_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

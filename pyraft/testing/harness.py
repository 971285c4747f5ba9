"""A cluster of real ``python -m pyraft.node`` processes with a fault proxy on every peer link.

Each node gets its own ``--voters``: its own entry is its real raft port, every
other voter is at the port of the proxy for the directed link from this node to
that voter (see :meth:`ProxyNetwork.voters_for`). HTTP is not proxied: the harness
and the clients always see a node's own answer (or its silence when it is paused).

Everything waits on conditions with deadlines. Every process the harness starts
is killed when :func:`open_cluster` exits, however it exits (exception,
cancellation, Ctrl-C), and an ``atexit`` hook catches what an abrupt interpreter
exit would leave behind.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from pyraft.localcluster import free_port_block
from pyraft.storage.file import last_segment
from pyraft.testing.conditions import ConditionTimeout, wait_until, wait_until_async
from pyraft.testing.nemesis import Action, Schedule, flip_byte, resolve_target, truncate_tail
from pyraft.testing.proxy import CutMode, ProxyNetwork

logger = logging.getLogger("pyraft.testing.harness")

HOST = "127.0.0.1"
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort: no node may outlive the process that started it."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


def _wait_stopped(pid: int, timeout: float = 1.0) -> None:
    """SIGSTOP is delivered asynchronously, thread by thread: wait until every thread of the
    process is stopped, so that a frozen node really writes nothing more (Linux /proc)."""
    deadline = time.monotonic() + timeout
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        try:
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
        except OSError:
            return  # gone, or no /proc: nothing more to wait for
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)


def free_ports(count: int) -> list[int]:
    """``count`` free ports for nodes, below the kernel's ephemeral range: a node restarted
    after a long absence rebinds its port, which must not meanwhile have become the source
    port of some outgoing connection (the proxies keep dialing it)."""
    base = free_port_block(count)
    return list(range(base, base + count))


@dataclass
class Node:
    node_id: int
    http_port: int
    raft_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_file(self) -> Path:
        """The log segment appends go to, where a crash leaves a torn tail (pyraft.storage.file)."""
        segment = last_segment(self.data_dir)
        if segment is None:
            raise FileNotFoundError(f"no log segment in {self.data_dir}")
        return segment


async def http_get_json(port: int, path: str, timeout: float = 0.5) -> Any | None:
    """GET ``path`` from a node's HTTP port; None on any failure (down, paused, not 200).

    A raw HTTP/1.1 request keeps the harness free of client-library behaviour (pools, retries).
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(HOST, port)
            async with stream:
                await stream.send_all(request)
                data = bytearray()
                while chunk := await stream.receive_some():
                    data += chunk
        except (OSError, trio.BrokenResourceError):
            return None
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None
    return None


@dataclass
class FaultCluster:
    """State and operations; use :func:`open_cluster` to run one."""

    root: Path
    size: int
    node_args: list[str] = field(default_factory=list)
    seed: int = 0
    env: dict[str, str] = field(default_factory=dict)  # added to every node's environment
    nodes: dict[int, Node] = field(default_factory=dict)
    network: ProxyNetwork = field(init=False)
    nemesis_log: list[dict[str, Any]] = field(default_factory=list)
    _resolved: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(1, self.size + 1):
            http_port, raft_port = ports[2 * i - 2], ports[2 * i - 1]
            self.nodes[i] = Node(i, http_port, raft_port, self.root / f"n{i}", self.root / f"node-{i}.log")
        self.network = ProxyNetwork({i: (HOST, n.raft_port) for i, n in self.nodes.items()}, self.seed)

    # ----------------------------------------------------------------- processes

    def command(self, node_id: int) -> list[str]:
        node = self.nodes[node_id]
        return [
            *(sys.executable, "-m", "pyraft.node", "--id", str(node_id), "--host", HOST),
            *("--port", str(node.http_port), "--raft-port", str(node.raft_port)),
            *("--voters", self.network.voters_for(node_id, node.raft_port, HOST)),
            *("--data-dir", str(node.data_dir)),
            *self.node_args,
        ]

    def start(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(
                self.command(node_id),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
        node.paused = False
        _LIVE.add(node.proc)

    async def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` and wait for the process to be gone (SIGKILL works on paused ones too)."""
        node = self.nodes[node_id]
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        if node.paused and sig != signal.SIGKILL:
            proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
        await wait_until(f"node {node_id} to exit", proc.poll, timeout)
        node.paused = False
        _LIVE.discard(proc)

    def pause(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.running and node.proc is not None and not node.paused:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True
            _wait_stopped(node.proc.pid)

    def resume(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.running and node.proc is not None and node.paused:
            node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    async def restart(self, node_id: int) -> None:
        await self.kill(node_id)
        self.start(node_id)

    def start_all(self) -> None:
        for node_id in self.nodes:
            self.start(node_id)

    async def stop_all(self) -> None:
        """Kill -9 every node and wait for each (data is fsynced, so nothing acknowledged is lost)."""
        for node in self.nodes.values():
            if node.running and node.proc is not None:
                node.proc.kill()
        for node_id in self.nodes:
            await self.kill(node_id)

    # ----------------------------------------------------------------- observing

    async def statuses(self) -> dict[int, dict[str, Any]]:
        """``/status`` of every running, unpaused node that answers, polled concurrently."""
        found: dict[int, dict[str, Any]] = {}

        async def one(node: Node) -> None:
            status = await http_get_json(node.http_port, "/status")
            if isinstance(status, dict):
                found[node.node_id] = status

        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                if node.running and not node.paused:
                    nursery.start_soon(one, node)
        return found

    async def agreed_leader(self, exclude: Sequence[int] = ()) -> int | None:
        """A leader that a majority of all voters (itself included) report, in its own term."""
        statuses = await self.statuses()
        leaders = [s for s in statuses.values() if s["role"] == "leader" and s["nodeId"] not in exclude]
        for status in sorted(leaders, key=lambda s: -int(s["term"])):
            term, leader = status["term"], status["nodeId"]
            backers = [s for s in statuses.values() if s["term"] == term and s["leaderId"] == leader]
            if len(backers) > self.size // 2:
                return int(leader)
        return None

    async def wait_for_leader(self, timeout: float = 20.0, exclude: Sequence[int] = ()) -> int:
        leader = await wait_until_async(
            "a leader backed by a majority",
            lambda: self.agreed_leader(exclude),
            timeout,
            describe=self.describe,
        )
        assert leader is not None
        return leader

    async def caught_up(self) -> bool:
        """Every node answers, one leader is agreed, and each applied what that leader committed."""
        statuses = await self.statuses()
        if len(statuses) != self.size:
            return False
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        if len(leaders) != 1 or len({s["leaderId"] for s in statuses.values()}) != 1:
            return False
        return all(s["lastApplied"] >= leaders[0]["commitIndex"] for s in statuses.values())

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        await wait_until_async("every node up and caught up", self.caught_up, timeout, describe=self.describe)

    def describe(self) -> str:
        procs = {i: ("paused" if n.paused else "up" if n.running else "down") for i, n in self.nodes.items()}
        return f"processes {procs}; faulty links {self.network.faults()}"

    # ----------------------------------------------------------------- faults

    async def heal_all(self) -> None:
        """Undo every fault: links clean, paused nodes continued, stopped nodes started."""
        self.network.heal()
        for node_id, node in self.nodes.items():
            self.resume(node_id)
            if not node.running:
                self.start(node_id)

    async def run_schedule(self, schedule: Schedule, start: float | None = None) -> None:
        """Apply every action at its time (``start`` is a ``trio.current_time()``; default now)."""
        t0 = trio.current_time() if start is None else start
        for action in schedule.actions:
            await trio.sleep_until(t0 + action.at)
            await self.apply(action, t0)

    async def apply(self, action: Action, t0: float = 0.0) -> dict[str, Any]:
        """Run one nemesis action and log it with what its symbolic targets resolved to."""
        if action.phase == "start":
            resolved = await self._start_fault(action)
            self._resolved[action.window] = resolved
        else:
            resolved = self._resolved.pop(action.window, {})
            await self._stop_fault(action, resolved)
        entry = {
            "at": action.at,
            "time": round(trio.current_time() - t0, 3),
            **_action_dict(action),
            **resolved,
        }
        self.nemesis_log.append(entry)
        logger.info("nemesis: %s", entry)
        return resolved

    async def _target(self, action: Action) -> int:
        leader = await self.agreed_leader()
        return resolve_target(str(action.args["target"]), int(action.args["pick"]), leader, list(self.nodes))

    async def _start_fault(self, action: Action) -> dict[str, Any]:
        fault, args = action.fault, action.args
        mode: CutMode = "blackhole" if args.get("mode") == "blackhole" else "reset"
        if fault in ("kill", "pause", "isolate-leader", "disk-truncate", "disk-flip"):
            if fault.startswith("disk"):
                # Damage only one node at a time, and never while another lags: a cut tail loses
                # fsynced entries, which Raft survives only if a majority still holds them.
                try:
                    await self.wait_healthy()
                except ConditionTimeout as exc:
                    return {"skipped": f"cluster not healthy, no disk damaged: {exc}"}
            node_id = await self._target(action)
            await self._start_node_fault(fault, node_id, args, mode)
            return {"node": node_id}
        if fault == "partition-halves":
            self.network.partition(args["groups"], mode)
        elif fault == "bridge":
            self.network.bridge(args["left"], args["middle"], args["right"], mode)
        elif fault == "slow":
            self.network.slow(_links(args["links"]), args["delay"], args["jitter"])
        elif fault == "lossy":
            self.network.lossy(_links(args["links"]), args["rate"])
        else:
            raise ValueError(f"unknown fault {fault!r}")
        return {}

    async def _start_node_fault(self, fault: str, node_id: int, args: dict[str, Any], mode: CutMode) -> None:
        if fault == "pause":
            self.pause(node_id)
        elif fault == "isolate-leader":
            self.network.isolate(node_id, mode)
        else:
            await self.kill(node_id)
            if fault == "disk-truncate":
                truncate_tail(self.nodes[node_id].log_file, int(args["bytes"]))
            elif fault == "disk-flip":
                flip_byte(self.nodes[node_id].log_file, int(args["from_end"]), int(args["mask"]))

    async def _stop_fault(self, action: Action, resolved: dict[str, Any]) -> None:
        node_id = resolved.get("node")
        if action.fault == "pause" and node_id is not None:
            self.resume(node_id)
        elif action.fault in ("kill", "disk-truncate", "disk-flip") and node_id is not None:
            self.start(node_id)
        else:
            self.network.heal()


def _links(raw: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    return [(int(i), int(j)) for i, j in raw]


def _action_dict(action: Action) -> dict[str, Any]:
    return {"phase": action.phase, "fault": action.fault, "window": action.window, "args": action.args}


@asynccontextmanager
async def open_cluster(
    root: Path,
    size: int = 3,
    node_args: Sequence[str] = (),
    *,
    seed: int = 0,
    start: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[FaultCluster]:
    """Proxies up, then nodes started; on exit, everything healed and every process killed."""
    cluster = FaultCluster(root, size, list(node_args), seed, dict(env or {}))
    try:
        async with trio.open_nursery() as nursery:
            try:
                await cluster.network.serve(nursery, HOST)
                if start:
                    cluster.start_all()
                yield cluster
            finally:
                with trio.CancelScope(shield=True):
                    cluster.network.heal()
                    await cluster.stop_all()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery only holds proxies, which do not fail: give the caller its own exception back.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise

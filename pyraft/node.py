"""Run one pyraft node: ``python -m pyraft.node --port 8001`` (see ``--help``).

A node whose ``--id`` is not among ``--voters`` joins an existing quorum: it starts
as an observer that knows the voters (to reach them) but is not one of them, and
waits for an operator to add it (``pyraft quorum add-voter``, KIP-853's
AddRaftVoter). Once its log holds a configuration, that configuration wins over
``--voters`` on every restart.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import trio

from pyraft.actors.node import RaftNode, Timing
from pyraft.actors.snapshots import DEFAULT_SNAPSHOT_BYTES, DEFAULT_SNAPSHOT_ENTRIES, SnapshotPolicy
from pyraft.core.membership import Membership
from pyraft.core.raft import Role
from pyraft.http.app import build_app
from pyraft.http.cluster import ClusterView
from pyraft.http.server import serve_http
from pyraft.logs import LOG_FORMATS, NodeContext, ObservedEventLog, configure_logging
from pyraft.metadata.events import NodeWatcher
from pyraft.metadata.service import DEFAULT_TIMEOUT, MetadataService
from pyraft.metadata.store import MetadataStore
from pyraft.metrics import MeteredRaftNode, NodeMetrics, ObservedTransport, PeerTracker, TimedStorage
from pyraft.service import NodeClientHandler
from pyraft.storage.file import FileStorage
from pyraft.transport.tcp import TcpTransport

log = logging.getLogger("pyraft.node")


@dataclass(frozen=True)
class Voter:
    node_id: int
    host: str
    port: int


def parse_voters(text: str) -> list[Voter]:
    """Parse KRaft's ``controller.quorum.voters`` form: ``1@host:9001,2@host:9002``."""
    voters = []
    for item in text.split(","):
        try:
            node_id, address = item.strip().split("@", 1)
            host, port = address.rsplit(":", 1)
            voters.append(Voter(int(node_id), host.strip("[]"), int(port)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad voter {item!r}: expected ID@HOST:PORT") from None
    ids = [v.node_id for v in voters]
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"duplicate voter ids in {text!r}")
    return voters


def parse_peer_http(text: str) -> dict[int, str]:
    """``2=127.0.0.1:8002,3=host:8003``: the HTTP address of other nodes, for /quorum and the dashboard."""
    urls: dict[int, str] = {}
    for item in text.split(","):
        try:
            node_id, address = item.strip().split("=", 1)
            host, port = address.rsplit(":", 1)
            urls[int(node_id)] = f"http://{host.strip()}:{int(port)}"
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=HOST:PORT") from None
    return urls


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyraft.node",
        description="Run one node of a pyraft quorum (Raft, with a KRaft-style metadata log).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--id",
        type=int,
        default=1,
        help="this node's id; an id outside --voters starts an observer that waits to be added",
    )
    p.add_argument(
        "--port", type=int, default=8001, help="HTTP port (the metadata REST API, GET /status, /docs)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on for HTTP and raft")
    p.add_argument(
        "--raft-port",
        type=int,
        default=None,
        help="port for peers and clients (default: our port in --voters, else --port + 1000, "
        "which is what a joining node outside --voters uses)",
    )
    p.add_argument(
        "--voters",
        type=parse_voters,
        default=None,
        help="the quorum as ID@HOST:PORT,... (as KRaft's controller.quorum.voters); omit for one node. "
        "Only bootstraps: once the log holds a configuration (after a membership change), that wins",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="where the log and vote live (default: data/<id>)"
    )
    p.add_argument("--cluster-id", default="pyraft", help="peers with another cluster id are refused")
    p.add_argument(
        "--election-timeout-ms",
        type=float,
        default=150.0,
        help="minimum election timeout; each timeout is drawn from [T, 2T)",
    )
    p.add_argument("--heartbeat-ms", type=float, default=50.0, help="leader heartbeat interval")
    p.add_argument(
        "--tick-ms", type=float, default=10.0, help="timer resolution of the election/heartbeat clock"
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="DANGEROUS, for benchmarks only: never fsync (a power cut can lose acknowledged writes)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds an HTTP request may wait for a leader and a quorum before it fails with 503",
    )
    p.add_argument(
        "--peer-http",
        type=parse_peer_http,
        default=None,
        help="other nodes' HTTP addresses as ID=HOST:PORT,... (default: each voter's raft port - 1000, "
        "the convention of the local cluster and of the examples)",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=DEFAULT_SNAPSHOT_ENTRIES,
        help="snapshot the metadata and compact the log after this many applied records (0: never)",
    )
    p.add_argument(
        "--snapshot-bytes",
        type=int,
        default=DEFAULT_SNAPSHOT_BYTES,
        help="... or after this many bytes of applied records, whichever comes first",
    )
    p.add_argument("--log-level", default="INFO", help="logging level")
    p.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="log lines as text or one JSON object each"
    )
    return p


@dataclass(frozen=True)
class NodeSettings:
    node_id: int
    host: str
    http_port: int
    raft_port: int
    voters: tuple[Voter, ...]
    data_dir: Path
    cluster_id: str
    timing: Timing
    fsync: bool
    request_timeout: float = DEFAULT_TIMEOUT
    peer_http: tuple[tuple[int, str], ...] = ()
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)

    @property
    def joining(self) -> bool:
        """Started outside ``--voters``: an observer until an operator adds it."""
        return all(v.node_id != self.node_id for v in self.voters)

    @property
    def raft_address(self) -> str:
        """Our raft ``host:port`` as others should dial it (a wildcard host names this machine)."""
        host = socket.gethostname() if self.host in ("", "0.0.0.0", "::") else self.host
        return f"{host}:{self.raft_port}"

    def raft_addresses(self) -> dict[int, str]:
        """Every voter's raft address, and ours (which a joining node is not among the voters with)."""
        addresses = {v.node_id: f"{v.host}:{v.port}" for v in self.voters}
        addresses.setdefault(self.node_id, self.raft_address)
        return addresses

    def http_urls(self) -> dict[int, str]:
        """Every voter's HTTP URL: ours, the given ones, else raft port - 1000 on the voter's host."""
        urls = {v.node_id: f"http://{v.host}:{v.port - 1000}" for v in self.voters if v.port > 1000}
        urls.update(dict(self.peer_http))
        urls[self.node_id] = f"http://{self.host}:{self.http_port}"
        return urls


def settings_from_args(args: argparse.Namespace) -> NodeSettings:
    voters: list[Voter] = args.voters or []
    own = next((v for v in voters if v.node_id == args.id), None)
    raft_port = args.raft_port or (own.port if own else args.port + 1000)
    if not voters:
        voters = [Voter(args.id, args.host, raft_port)]
    elif own is None:
        _check_joiner_port(voters, args.host, raft_port)
    timing = Timing(args.tick_ms, args.election_timeout_ms, args.heartbeat_ms)
    try:
        timing.ticks()
        snapshots = SnapshotPolicy(args.snapshot_entries, args.snapshot_bytes)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return NodeSettings(
        node_id=args.id,
        host=args.host,
        http_port=args.port,
        raft_port=raft_port,
        voters=tuple(voters),
        data_dir=args.data_dir or Path("data") / str(args.id),
        cluster_id=args.cluster_id,
        timing=timing,
        fsync=not args.no_fsync,
        request_timeout=args.request_timeout,
        peer_http=tuple(sorted((args.peer_http or {}).items())),
        snapshots=snapshots,
    )


def _check_joiner_port(voters: list[Voter], host: str, raft_port: int) -> None:
    """A joining node must listen somewhere else than the voters it will talk to."""
    for voter in voters:
        if voter.port == raft_port and voter.host in (host, "0.0.0.0", "::"):
            raise SystemExit(
                f"error: --raft-port {raft_port} is node {voter.node_id}'s port in --voters; "
                "a joining node needs a port of its own"
            )


async def run_node(settings: NodeSettings, context: NodeContext | None = None) -> None:
    """Assemble the node from observed parts (metrics see its storage and transport) and serve."""
    storage = FileStorage(settings.data_dir, fsync=settings.fsync)
    metrics = NodeMetrics()
    tracker = PeerTracker()
    peers = {v.node_id: (v.host, v.port) for v in settings.voters if v.node_id != settings.node_id}
    tcp = TcpTransport(settings.node_id, settings.cluster_id, settings.host, settings.raft_port, peers)
    store = MetadataStore()
    node = MeteredRaftNode(
        settings.node_id,
        tuple(v.node_id for v in settings.voters),
        TimedStorage(storage, metrics),
        ObservedTransport(tcp, metrics, tracker),
        store,
        timing=settings.timing,
        snapshots=settings.snapshots,
        addresses={v.node_id: f"{v.host}:{v.port}" for v in settings.voters},
    )
    tracker.log_end = lambda: node.core.log.last_index
    metrics.attach(node, tracker)
    if context is not None:
        context.node = node
    if node.recovery.reason:
        log.warning("recovered log: %s", node.recovery.reason)
    events = ObservedEventLog(metrics)
    service = MetadataService(
        node, store, timeout=settings.request_timeout, events=events, read_snapshot=node.read_snapshot
    )
    view = ClusterView(
        settings.node_id,
        settings.cluster_id,
        settings.raft_addresses(),
        settings.http_urls(),
        metrics,
        tracker,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run, NodeClientHandler(node))
            nursery.start_soon(NodeWatcher(node, events).run)
            nursery.start_soon(service.bootstrap_features)
            nursery.start_soon(announce_membership, node, settings)
            app = build_app(node, service, events, view)
            await nursery.start(serve_http, app, settings.host, settings.http_port)
            log.info(
                "node %d serving: http %s:%d, raft %s:%d, data %s",
                settings.node_id,
                settings.host,
                settings.http_port,
                settings.host,
                settings.raft_port,
                settings.data_dir,
            )
            await _wait_for_signal()
            await step_down(node)
            nursery.cancel_scope.cancel()
    finally:
        storage.close()


OUTSIDE = "outside the quorum (not added yet, or removed): it votes for nobody and is not replicated to"


def standing(membership: Membership, node_id: int) -> str:
    """What this node is in a configuration: voter, observer (a learner), or outside it."""
    if node_id in membership.voter_ids:
        return "a voter"
    if node_id in membership.learner_ids:
        return "an observer (a learner catching up; it becomes a voter once it holds the log)"
    return OUTSIDE


def waiting_message(settings: NodeSettings, membership: Membership) -> str:
    """What a node outside the configuration tells its operator: who the voters are and how to add it."""
    voters = ", ".join(str(i) for i in sorted(membership.voter_ids))
    urls = settings.http_urls()
    servers = ",".join(urls[i].removeprefix("http://") for i in sorted(membership.voter_ids) if i in urls)
    server = f" --server {servers}" if servers else ""
    add = f"pyraft{server} quorum add-voter --id {settings.node_id} --address {settings.raft_address}"
    return (
        f"node {settings.node_id} is an observer waiting to be added: it is not a voter of the quorum "
        f"(voters {voters}) and will follow the leader once added. Add it with: {add}"
    )


async def announce_membership(node: RaftNode, settings: NodeSettings) -> None:
    """Log this node's standing at start (with the command that adds it when it is outside the
    quorum) and every change of it after: without asking the API, the operator sees a join go
    from observer to voter, or a removal."""
    last = standing(node.core.membership, settings.node_id)
    if last == OUTSIDE:
        log.warning("%s", waiting_message(settings, node.core.membership))
    else:
        log.info("node %d is %s", settings.node_id, last)
    while True:
        await node.membership_changed.wait()
        now = standing(node.core.membership, settings.node_id)
        if now != last:
            log.info("node %d is now %s", settings.node_id, now)
            last = now


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def step_down(node: RaftNode) -> None:
    """A leader hands over before it stops (thesis 3.10), so the quorum does not wait out a timeout."""
    if node.core.role is not Role.LEADER or len(node.core.membership.voters) == 1:
        return
    with trio.move_on_after(4 * node.timing.election_timeout_ms / 1000):
        try:
            await node.transfer_leadership()
        except Exception as exc:  # a failed hand-over must not stop the shutdown
            log.warning("leadership transfer failed: %s", exc)
            return
        while node.core.role is Role.LEADER:
            await node.role_changed.wait()
        log.info("stepped down as leader (now term %d)", node.core.term)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    context = NodeContext(args.id)
    configure_logging(args.log_level, args.log_format, context)
    settings = settings_from_args(args)
    trio.run(run_node, settings, context)


if __name__ == "__main__":
    main()

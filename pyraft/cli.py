"""``pyraft``: the operator's command line (see ``pyraft --help``).

Talks to any node over HTTP. ``--server`` takes one address or several
(comma-separated); the first that answers is used, so the default (the local
cluster's three nodes, node 1 first) keeps working when a node is down. Output
is a rich table on a terminal, plain text when piped, JSON with ``--json``. An
error answer from the server is printed as one line on stderr and exits 1; no
server reachable exits 3. A membership change that was sent but got no answer
in time is not sent to the next server (it may be running): that exits 3 too,
saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pyraft.localcluster import LocalCluster

DEFAULT_SERVERS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
DEFAULT_CATCH_UP = 30.0  # the server's default wait for a new voter to catch up, in seconds
CHANGE_MARGIN = 25.0  # on top of the catch-up: probing the node, committing two configurations
EXIT_SERVER_ERROR = 1
EXIT_UNREACHABLE = 3
ROLE_STYLE = {"leader": "bold yellow", "follower": "cyan", "candidate": "magenta"}

out = Console()
err = Console(stderr=True)


class CliError(Exception):
    """One readable line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_SERVER_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """A tiny JSON-over-HTTP client that falls back to the next server when one is unreachable."""

    def __init__(self, servers: str, timeout: float) -> None:
        self.servers = [_url(s) for s in servers.split(",") if s.strip()]
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, repeatable: bool = True
    ) -> Any:
        """The server's JSON answer. ``repeatable=False``: a request that timed out after it was
        sent is not sent again to the next server, since the first may still carry it out."""
        failures = []
        for server in self.servers:
            try:
                status, answer = self._once(method, server + path, body)
            except TimeoutError as exc:
                if not repeatable:
                    raise CliError(
                        f"{server} did not answer within {self.timeout:g} s ({exc}); the change may still "
                        "be running: see pyraft quorum describe",
                        EXIT_UNREACHABLE,
                    ) from None
                failures.append(f"{server}: {exc}")
                continue
            except OSError as exc:
                failures.append(f"{server}: {getattr(exc, 'reason', exc)}")
                continue
            if status >= 400:
                raise CliError(_error_line(status, answer))
            return answer
        raise CliError("no server answered (" + "; ".join(failures) + ")", EXIT_UNREACHABLE)

    def _once(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return int(response.status), _decode(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), _decode(exc.read())


def _url(server: str) -> str:
    server = server.strip().rstrip("/")
    return server if "://" in server else f"http://{server}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace").strip()}


def _error_line(status: int, answer: Any) -> str:
    if isinstance(answer, dict):
        code, message = answer.get("error", "error"), answer.get("message", "")
        return f"error {status} {code}: {message}"
    return f"error {status}: {answer}"


# --------------------------------------------------------------------------- output


def show(args: argparse.Namespace, data: Any, table: Callable[[Any], Table] | None = None) -> None:
    """JSON with --json (or without a table), else the table (colored on a terminal)."""
    if args.json or table is None:
        print(json.dumps(data, indent=None if args.json else 2))
    else:
        out.print(table(data))


def make_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def quorum_table(q: dict[str, Any]) -> Table:
    title = (
        f"cluster {q['clusterId']}: leader {q['leaderId']}, epoch {q['leaderEpoch']}, "
        f"high watermark {q['highWatermark']} (answered by {q['answeredBy']}, {q['source']} view)"
    )
    members = [("voter", v) for v in q["voters"]] + [("observer", o) for o in q.get("observers", [])]
    rows = [
        (
            f"[bold yellow]{m['id']} *[/]" if m["id"] == q["leaderId"] else m["id"],
            role,
            m["address"],
            m["logEndOffset"],
            m["lag"],
            _age(m["lastFetchTimestamp"]),
            _age(m["lastCaughtUpTimestamp"]),
        )
        for role, m in members
    ]
    columns = ("id", "role", "address", "log end", "lag", "last fetch", "last caught up")
    return make_table(title, columns, rows)


def _age(ms: int | None) -> str | None:
    return None if ms is None else f"{max(0, time.time() * 1000 - ms):.0f} ms ago"


# ------------------------------------------------------------------------- commands


def cmd_quorum(args: argparse.Namespace, api: Api) -> None:
    show(args, api.call("GET", "/quorum"), quorum_table)


def cmd_quorum_add_voter(args: argparse.Namespace, api: Api) -> None:
    """KIP-853's AddRaftVoter: the node must already run as an observer; answers once it votes."""
    body: dict[str, Any] = {"id": args.id, "address": args.address}
    if args.catch_up_timeout is not None:
        body["timeoutMs"] = max(1, round(args.catch_up_timeout * 1000))
    catch_up = args.catch_up_timeout if args.catch_up_timeout is not None else DEFAULT_CATCH_UP
    api.timeout = max(api.timeout, catch_up + CHANGE_MARGIN)  # the answer comes after the catch-up
    answer = api.call("POST", "/quorum/voters", body, repeatable=False)
    _show_change(args, answer, f"node {args.id} is now a voter")


def cmd_quorum_remove_voter(args: argparse.Namespace, api: Api) -> None:
    api.timeout = max(api.timeout, CHANGE_MARGIN)
    answer = api.call("DELETE", f"/quorum/voters/{args.id}", repeatable=False)
    _show_change(args, answer, f"node {args.id} is no longer a member")


def _show_change(args: argparse.Namespace, answer: dict[str, Any], done: str) -> None:
    if args.json:
        show(args, answer)
        return
    out.print(f"[bold]{done}[/]", highlight=False)
    out.print(quorum_table(answer))


def cmd_brokers_list(args: argparse.Namespace, api: Api) -> None:
    def table(d: dict[str, Any]) -> Table:
        rows = [
            (
                b["brokerId"],
                f"{b['brokerHost']}:{b['brokerPort']}",
                b["securityProtocol"],
                b["rackId"],
                b["status"],
            )
            for b in d["brokers"]
        ]
        return make_table("brokers", ("id", "endpoint", "protocol", "rack", "status"), rows)

    show(args, api.call("GET", "/get_broker/"), table)


def cmd_brokers_register(args: argparse.Namespace, api: Api) -> None:
    body: dict[str, Any] = {
        "brokerId": args.id,
        "brokerHost": args.host,
        "brokerPort": args.port,
        "securityProtocol": args.protocol,
    }
    if args.rack:
        body["rackId"] = args.rack
    show(args, api.call("POST", "/register_broker/", body), _outcome("broker", "brokerId"))


def cmd_brokers_delete(args: argparse.Namespace, api: Api) -> None:
    show(args, api.call("DELETE", f"/delete_broker/{args.id}"), _outcome("deleted broker", "brokerId"))


def cmd_topics_list(args: argparse.Namespace, api: Api) -> None:
    def table(d: dict[str, Any]) -> Table:
        rows = [(t["name"], t["topicId"], len(t["partitions"])) for t in d["topics"]]
        return make_table("topics", ("name", "topic id", "partitions"), rows)

    show(args, api.call("GET", "/get_topic/"), table)


def cmd_topics_create(args: argparse.Namespace, api: Api) -> None:
    show(args, api.call("POST", "/register_topic/", {"name": args.name}), _outcome("topic", "name"))


def cmd_topics_delete(args: argparse.Namespace, api: Api) -> None:
    answer = api.call("DELETE", f"/delete_topic/{urllib.parse.quote(args.name, safe='')}")
    show(args, answer, _outcome("deleted topic", "name"))


def cmd_partitions_list(args: argparse.Namespace, api: Api) -> None:
    answer = api.call("GET", "/get_partition/")
    if args.topic:
        answer["partitions"] = [p for p in answer["partitions"] if p.get("topicName") == args.topic]

    def table(d: dict[str, Any]) -> Table:
        rows = [
            (p.get("topicName"), p["partitionId"], p["leader"], _ids(p["replicas"]), _ids(p["isr"]))
            for p in d["partitions"]
        ]
        return make_table("partitions", ("topic", "partition", "leader", "replicas", "isr"), rows)

    show(args, answer, table)


def cmd_partitions_create(args: argparse.Namespace, api: Api) -> None:
    topic = api.call("GET", f"/get_topic/{urllib.parse.quote(args.topic, safe='')}")
    body: dict[str, Any] = {
        "partitionId": args.id,
        "topicUUID": topic["topicUUID"],
        "replicas": args.replicas,
    }
    if args.isr is not None:
        body["ISR"] = args.isr
    if args.leader is not None:
        body["leader"] = args.leader
    show(args, api.call("POST", "/register_partition/", body), _outcome("partition", "partitionId"))


def cmd_events(args: argparse.Namespace, api: Api) -> None:
    since = args.since
    while True:
        page = api.call("GET", f"/events?since={since}&limit=1000")
        for event in page["events"]:
            _print_event(args, event)
        since = max(since, page["lastSeq"])
        if not args.follow:
            return
        time.sleep(0.5)


def _print_event(args: argparse.Namespace, event: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(event), flush=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    detail = " ".join(f"{k}={v}" for k, v in event["detail"].items())
    out.print(f"[dim]{stamp} #{event['seq']}[/] [bold]{event['kind']}[/] {detail}", highlight=False)


def cmd_leader_transfer(args: argparse.Namespace, api: Api) -> None:
    body = {"targetId": args.to} if args.to is not None else {}
    answer = api.call("POST", "/leader/transfer", body)
    if args.json:
        show(args, answer)
    else:
        out.print(
            f"leadership moved from node {answer['previousLeaderId']} to node "
            f"[bold yellow]{answer['leaderId']}[/] (term {answer['term']})"
        )


def _outcome(what: str, key: str) -> Callable[[Any], Table]:
    def table(answer: dict[str, Any]) -> Table:
        rows = [(k, json.dumps(v) if isinstance(v, list | dict) else v) for k, v in answer.items()]
        return make_table(
            f"{what} {answer.get(key)}: {answer.get('outcome', 'ok')}", ("field", "value"), rows
        )

    return table


def _ids(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


# ------------------------------------------------------------------------ cluster up


def cmd_cluster_up(args: argparse.Namespace, api: Api) -> None:
    """Run a local quorum in the foreground, report each leader change, stop cleanly on Ctrl-C."""
    cluster = LocalCluster(args.data_dir, args.nodes, args.http_port, args.raft_port)
    signal.signal(signal.SIGTERM, _interrupt)
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader()
        out.print(
            make_table(f"pyraft: {args.nodes} nodes up", ("node", "http", "raft", "data"), _rows(cluster))
        )
        out.print(f"Dashboard: http://127.0.0.1:{args.http_port}/   Ctrl-C stops the cluster.")
        _watch_leader(cluster, leader)
    except KeyboardInterrupt:
        pass
    finally:
        out.print("pyraft: stopping")
        cluster.stop_all()


def _rows(cluster: LocalCluster) -> list[tuple[Any, ...]]:
    return [
        (n.node_id, f"http://127.0.0.1:{n.http_port}", f"127.0.0.1:{n.raft_port}", n.data_dir)
        for n in cluster.nodes.values()
    ]


def _watch_leader(cluster: LocalCluster, leader: int | None) -> None:
    shown: tuple[int | None, Any] = (None, None)
    while True:
        statuses = cluster.statuses()
        leader = cluster.leader()
        term = statuses[leader]["term"] if leader in statuses else None
        if (leader, term) != shown:
            shown = (leader, term)
            text = f"node {leader} is the leader (term {term})" if leader else "no leader (election running)"
            out.print(f"[dim]{time.strftime('%H:%M:%S')}[/] [bold yellow]{text}[/]")
        time.sleep(0.2)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyraft", description="Operate a pyraft quorum.")
    p.add_argument(
        "--server",
        default=os.environ.get("PYRAFT_SERVER", DEFAULT_SERVERS),
        help="node HTTP address(es), comma-separated, tried in order (env PYRAFT_SERVER)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one answer")
    sub = p.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _cluster_parser(sub)
    _quorum_parser(sub)
    _broker_parser(sub)
    _topic_parser(sub)
    _partition_parser(sub)
    events = sub.add_parser("events", help="this node's event log")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--since", type=int, default=0, help="only events numbered above this")
    events.set_defaults(run=cmd_events)
    leader = sub.add_parser("leader", help="leadership").add_subparsers(dest="action", required=True)
    transfer = leader.add_parser("transfer", help="hand leadership to another voter")
    transfer.add_argument("--to", type=int, default=None, help="target node id (default: most caught up)")
    transfer.set_defaults(run=cmd_leader_transfer)
    return p


def _cluster_parser(sub: Any) -> None:
    cluster = sub.add_parser("cluster", help="local clusters").add_subparsers(dest="action", required=True)
    up = cluster.add_parser("up", help="run a local quorum in the foreground until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="how many voters")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="one subdirectory per node")
    up.add_argument("--http-port", type=int, default=8001, help="HTTP port of node 1 (node i: +i-1)")
    up.add_argument("--raft-port", type=int, default=9001, help="raft port of node 1 (node i: +i-1)")
    up.set_defaults(run=cmd_cluster_up)


def _quorum_parser(sub: Any) -> None:
    quorum = sub.add_parser("quorum", help="quorum status and membership").add_subparsers(
        dest="action", required=True
    )
    quorum.add_parser("describe", help="leader, epoch, high watermark, each member's lag").set_defaults(
        run=cmd_quorum
    )
    add = quorum.add_parser(
        "add-voter",
        help="add a running observer as a voter (it catches up first)",
        description="Add a node that already runs outside --voters (an observer): the leader makes it "
        "a learner, waits until it holds the log, then makes it a voter. One change at a time.",
    )
    add.add_argument("--id", type=int, required=True, help="the node's --id")
    add.add_argument("--address", required=True, help="HOST:PORT of its raft port")
    add.add_argument(
        "--timeout",
        dest="catch_up_timeout",
        type=float,
        default=None,
        help=f"seconds the leader waits for it to catch up (server default {DEFAULT_CATCH_UP:g})",
    )
    add.set_defaults(run=cmd_quorum_add_voter)
    remove = quorum.add_parser(
        "remove-voter", help="remove a voter or observer (the leader too: it hands over first)"
    )
    remove.add_argument("--id", type=int, required=True, help="the node to remove")
    remove.set_defaults(run=cmd_quorum_remove_voter)


def _broker_parser(sub: Any) -> None:
    brokers = sub.add_parser("brokers", help="broker registrations").add_subparsers(
        dest="action", required=True
    )
    brokers.add_parser("list", help="every registered broker").set_defaults(run=cmd_brokers_list)
    register = brokers.add_parser("register", help="register a broker")
    register.add_argument("--id", type=int, required=True)
    register.add_argument("--host", required=True)
    register.add_argument("--port", type=int, default=9092)
    register.add_argument("--protocol", default="PLAINTEXT", help="security protocol")
    register.add_argument("--rack", default=None)
    register.set_defaults(run=cmd_brokers_register)
    delete = brokers.add_parser("delete", help="unregister a broker")
    delete.add_argument("id", type=int)
    delete.set_defaults(run=cmd_brokers_delete)


def _topic_parser(sub: Any) -> None:
    topics = sub.add_parser("topics", help="topics").add_subparsers(dest="action", required=True)
    topics.add_parser("list", help="every topic").set_defaults(run=cmd_topics_list)
    for name, run, text in (("create", cmd_topics_create, "create"), ("delete", cmd_topics_delete, "delete")):
        command = topics.add_parser(name, help=f"{text} a topic")
        command.add_argument("name")
        command.set_defaults(run=run)


def _partition_parser(sub: Any) -> None:
    parts = sub.add_parser("partitions", help="partitions").add_subparsers(dest="action", required=True)
    listing = parts.add_parser("list", help="every partition")
    listing.add_argument("--topic", default=None, help="only this topic's")
    listing.set_defaults(run=cmd_partitions_list)
    create = parts.add_parser("create", help="create a partition of a topic")
    create.add_argument("--topic", required=True, help="topic name")
    create.add_argument("--id", type=int, required=True, help="partition id")
    create.add_argument("--replicas", type=_int_list, required=True, help="broker ids, e.g. 1,2,3")
    create.add_argument("--isr", type=_int_list, default=None, help="in-sync replicas (default: replicas)")
    create.add_argument("--leader", type=int, default=None, help="leader broker id")
    create.set_defaults(run=cmd_partitions_create)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--json" in argv:  # accepted anywhere, also after the subcommand
        argv = ["--json", *(a for a in argv if a != "--json")]
    args = build_parser().parse_args(argv)
    api = Api(args.server, args.timeout)
    try:
        args.run(args, api)
    except CliError as exc:
        err.print(f"[red]pyraft: {exc}[/]", highlight=False, soft_wrap=True)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

"""``pyraft quorum add-voter`` / ``remove-voter`` as subprocesses against real node processes,
and the CLI's rule that a membership change which timed out is not sent to another server."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pyraft import cli
from pyraft.localcluster import LocalCluster, NodeProcess, free_port_block


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, NodeProcess]]:
    """Three voters, and node 4 running outside them as an observer waiting to be added."""
    base = free_port_block(6)
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), 3, base, base + 3)
    cluster.start_all()
    try:
        cluster.wait_settled(timeout=20)
        joiner = cluster.add_node(4)
        cluster.start(4)
        cluster.wait_for("node 4 to serve", joiner.status)
        yield cluster, joiner
    finally:
        cluster.stop_all(signal.SIGKILL)


def pyraft(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    servers = ",".join(f"127.0.0.1:{cluster.nodes[i].http_port}" for i in cluster.bootstrap)
    cmd = [sys.executable, "-m", "pyraft.cli", "--server", servers, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def ok_json(cluster: LocalCluster, *args: str) -> Any:
    done = pyraft(cluster, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_add_voter_then_remove_voter(joined: tuple[LocalCluster, NodeProcess]) -> None:
    c, joiner = joined
    add = ["quorum", "add-voter", "--id", "4", "--address", joiner.raft_address, "--timeout", "20"]
    added = ok_json(c, *add)
    assert [v["id"] for v in added["voters"]] == [1, 2, 3, 4] and added["observers"] == []

    table = pyraft(c, "quorum", "describe")  # piped: a plain table with a role column
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if joiner.raft_address in line)
    assert "voter" in row and "observer" not in row

    removed = pyraft(c, "quorum", "remove-voter", "--id", "4")
    assert removed.returncode == 0, removed.stderr
    assert "node 4 is no longer a member" in removed.stdout
    assert [v["id"] for v in ok_json(c, "quorum", "describe")["voters"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["add-voter", "--id", "2", "--address", "{address_2}"], "error 409 already_voter"),
        (["add-voter", "--id", "7", "--address", "127.0.0.1:1"], "error 422 unreachable"),
        (["add-voter", "--id", "7", "--address", "no-port"], "error 422 invalid_value"),
        (["add-voter", "--id", "7", "--address", "{joiner}"], "error 422 wrong_node"),
        (["remove-voter", "--id", "9"], "error 404 not_found"),
    ],
)
def test_refused_changes_are_one_line_and_exit_1(
    joined: tuple[LocalCluster, NodeProcess], args: list[str], expected: str
) -> None:
    c, joiner = joined
    values = {"address_2": c.nodes[2].raft_address, "joiner": joiner.raft_address}
    done = pyraft(c, "quorum", *(a.format(**values) for a in args))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and expected in done.stderr


def test_timeout_flag_is_the_catch_up_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """``add-voter --timeout`` goes to the server as timeoutMs, and the CLI waits longer than it;
    the global --timeout stays the per-answer bound of every other command."""
    sent: list[tuple[str, str, Any]] = []
    answer: dict[str, Any] = {"voters": [], "observers": [], "leaderId": None}

    def call(method: str, path: str, body: Any = None, *, repeatable: bool = True) -> Any:
        sent.append((method, path, body))
        assert not repeatable
        return answer

    add = ["quorum", "add-voter", "--id", "4", "--address", "h:9004", "--timeout", "2.5"]
    args = cli.build_parser().parse_args(["--json", "--timeout", "3", *add])
    api = cli.Api("127.0.0.1:1", args.timeout)
    monkeypatch.setattr(api, "call", call)
    args.run(args, api)
    assert sent == [("POST", "/quorum/voters", {"id": 4, "address": "h:9004", "timeoutMs": 2500})]
    assert args.timeout == 3 and api.timeout >= 2.5 + cli.CHANGE_MARGIN


def test_a_change_without_an_answer_is_not_sent_to_the_next_server() -> None:
    """The first server takes the request and never answers: a GET moves on to the second
    server, a membership change stops there (exit 3), since the first may still carry it out."""
    with _silent_server() as first, _silent_server() as second:
        servers = f"127.0.0.1:{first.getsockname()[1]},127.0.0.1:{second.getsockname()[1]}"
        with pytest.raises(cli.CliError) as refused:
            cli.Api(servers, 0.3).call("DELETE", "/quorum/voters/4", repeatable=False)
        assert refused.value.code == cli.EXIT_UNREACHABLE and "may still be running" in str(refused.value)
        assert not _was_contacted(second)
        with pytest.raises(cli.CliError) as unanswered:
            cli.Api(servers, 0.3).call("GET", "/quorum")
        assert "no server answered" in str(unanswered.value)
        assert _was_contacted(second)


def _silent_server() -> socket.socket:
    """A listening socket that completes connections (the kernel does) but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def _was_contacted(server: socket.socket) -> bool:
    server.setblocking(False)
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True

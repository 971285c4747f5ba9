"""The ``pyraft`` CLI as a subprocess against a real 3-node local cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from op_live import servers

from pyraft.localcluster import LocalCluster


def pyraft(
    cluster: LocalCluster | None, *args: str, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    target = server or (servers(cluster) if cluster else "")
    cmd = [sys.executable, "-m", "pyraft.cli", "--server", target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def ok_json(cluster: LocalCluster, *args: str) -> Any:
    done = pyraft(cluster, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_metadata_commands_round_trip(live_cluster: LocalCluster) -> None:
    c = live_cluster
    assert ok_json(c, "brokers", "register", "--id", "1", "--host", "kafka-1")["outcome"] == "created"
    assert [b["brokerId"] for b in ok_json(c, "brokers", "list")["brokers"]] == [1]
    assert ok_json(c, "topics", "create", "orders")["outcome"] == "created"
    made = ok_json(c, "partitions", "create", "--topic", "orders", "--id", "0", "--replicas", "1")
    assert made["topicName"] == "orders"
    assert [
        p["partitionId"] for p in ok_json(c, "partitions", "list", "--topic", "orders")["partitions"]
    ] == [0]
    table = pyraft(c, "topics", "list")  # not a terminal: a plain table
    assert table.returncode == 0 and "orders" in table.stdout and "{" not in table.stdout
    assert ok_json(c, "topics", "delete", "orders")["outcome"] == "ok"
    assert ok_json(c, "topics", "list")["topics"] == []
    assert ok_json(c, "brokers", "delete", "1")["outcome"] == "ok"


def test_quorum_events_and_leader_transfer(live_cluster: LocalCluster) -> None:
    c = live_cluster
    quorum = ok_json(c, "quorum", "describe")
    assert quorum["source"] == "leader" and len(quorum["voters"]) == 3
    old = quorum["leaderId"]
    moved = ok_json(c, "leader", "transfer")
    assert moved["previousLeaderId"] == old and moved["leaderId"] != old
    events = pyraft(c, "--json", "events")
    kinds = {json.loads(line)["kind"] for line in events.stdout.splitlines()}
    assert "node_started" in kinds and "leader_changed" in kinds


def test_errors_are_one_line_with_an_exit_code(live_cluster: LocalCluster) -> None:
    missing = pyraft(live_cluster, "topics", "delete", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "404 not_found" in missing.stderr
    down = pyraft(None, "topics", "list", server="127.0.0.1:1")
    assert down.returncode == 3 and "no server answered" in down.stderr


def test_falls_back_to_the_next_server(live_cluster: LocalCluster) -> None:
    first = live_cluster.nodes[1]
    live_cluster.kill(1)
    done = pyraft(live_cluster, "--json", "quorum", "describe")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answeredBy"] != first.node_id

"""Failover: time from ``kill -9`` of the leader to the first write committed by a new leader.

    python -m bench.failover --trials 20
    python -m bench.failover --trials 100 --election-timeout-ms 20 --heartbeat-ms 5 --tick-ms 2

Each trial: wait until a leader is known and every node has applied the commit
index, SIGKILL the leader, and propose through the survivors until one write is
acknowledged (a follower forwards it; an unknown outcome is simply retried with
a fresh write). The killed node is restarted and caught up before the next trial.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from pyraft.client import ClientError, RaftClient
from pyraft.localcluster import LocalCluster
from pyraft.statemachine import set_command


def caught_up(cluster: LocalCluster) -> bool:
    statuses = cluster.statuses()
    if len(statuses) != len(cluster.nodes):
        return False
    commits = {s["commitIndex"] for s in statuses.values()}
    applied = {s["lastApplied"] for s in statuses.values()}
    leaders = {s["leaderId"] for s in statuses.values()}
    return len(commits) == 1 and commits == applied and len(leaders) == 1 and None not in leaders


async def first_write(addresses: list[tuple[str, int]], deadline: float) -> None:
    async with await RaftClient.connect(
        addresses, cluster_id="pyraft", timeout=deadline, backoff_initial=0.005, backoff_max=0.01
    ) as client:
        with trio.fail_after(deadline):
            while True:
                try:
                    await client.propose(set_command("failover", b"x"))
                    return
                except ClientError:
                    await trio.sleep(0.002)  # e.g. outcome unknown (leader died under it): write again


def one_trial(cluster: LocalCluster) -> float:
    cluster.wait_for("a settled cluster", lambda: caught_up(cluster))
    leader = cluster.wait_for_leader()
    survivors = [("127.0.0.1", n.raft_port) for i, n in cluster.nodes.items() if i != leader]
    proc = cluster.nodes[leader].proc
    assert proc is not None
    start = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    trio.run(first_write, survivors, 30.0)
    elapsed = time.monotonic() - start
    proc.wait()
    cluster.start(leader)
    return elapsed


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "min_ms": ordered[0] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def machine_info() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cores": __import__("os").cpu_count(),
        "commit": commit.strip(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--election-timeout-ms", type=float, default=150.0)
    p.add_argument("--heartbeat-ms", type=float, default=50.0)
    p.add_argument("--tick-ms", type=float, default=10.0)
    p.add_argument("--http-port", type=int, default=18001)
    p.add_argument("--raft-port", type=int, default=19001)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    timing = [
        "--election-timeout-ms", str(args.election_timeout_ms),
        "--heartbeat-ms", str(args.heartbeat_ms),
        "--tick-ms", str(args.tick_ms),
    ]  # fmt: skip
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pyraft-failover-") as root:
        cluster = LocalCluster(Path(root), 3, args.http_port, args.raft_port, timing)
        cluster.start_all()
        try:
            for trial in range(1, args.trials + 1):
                samples.append(one_trial(cluster))
                print(f"trial {trial:3d}/{args.trials}: {samples[-1] * 1000:7.1f} ms", flush=True)
        finally:
            cluster.stop_all(signal.SIGKILL)
    result = {
        "benchmark": "failover",
        "election_timeout_ms": [args.election_timeout_ms, 2 * args.election_timeout_ms],
        "heartbeat_ms": args.heartbeat_ms,
        "trials": len(samples),
        "samples_ms": [round(s * 1000, 2) for s in samples],
        **{k: round(v, 1) for k, v in summarize(samples).items()},
        "machine": machine_info(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples_ms"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

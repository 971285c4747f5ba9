"""Join: how long a fresh node takes to become a voter of a quorum that holds N records.

    python -m bench.join                          # 1,000,000 records, 3 trials
    python -m bench.join --records 100000 --runs 1

Three data directories are written the way nodes with snapshots leave them (see
bench.recovery: N RegisterBrokerRecord commands, snapshots at N - 150,000 and
N - 50,000), a 3-node quorum is started on them and settles (every node applied
N). Then node 4 starts empty, as an observer, and ``POST /quorum/voters`` is sent
to the leader: the leader adds it as a learner, streams it the snapshot
(InstallSnapshot, 1 MiB chunks) and the log after it, and promotes it once it has
caught up. We time the POST (until node 4 is a voter) and until node 4 has applied
everything the leader had committed, and read node 4's RSS.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, summarize, write_json
from bench.recovery import build_data_dir, rss_mb
from pyraft.localcluster import LocalCluster

VOTERS = (1, 2, 3)


def join_once(seed_dir: Path, root: Path, records: int, port: int) -> dict[str, float]:
    for i in VOTERS:
        shutil.copytree(seed_dir, root / str(i))
    cluster = LocalCluster(root, len(VOTERS), port, port + 100, ["--log-level", "WARNING"])
    try:
        cluster.start_all()
        cluster.wait_for("the quorum to apply everything", lambda: _applied_everywhere(cluster, records), 600)
        joiner = cluster.add_node(4)
        cluster.start(4)
        cluster.wait_for("node 4 to serve", joiner.status, timeout=120)
        start = time.monotonic()
        leader = _add_voter(cluster, 4, joiner.raft_address)
        voter_s = time.monotonic() - start
        top = cluster.statuses()[leader]["commitIndex"]
        cluster.wait_for("node 4 to apply", lambda: _applied(joiner.status(timeout=2.0), top), 1800)
        applied_s = time.monotonic() - start
        assert joiner.proc is not None
        return {"voter_s": voter_s, "applied_s": applied_s, "joiner_rss_mb": rss_mb(joiner.proc.pid)}
    finally:
        cluster.stop_all(signal.SIGKILL)


def _add_voter(cluster: LocalCluster, node_id: int, address: str) -> int:
    """POST /quorum/voters to the leader, again to the new one if leadership moved (a 503 that
    names no outcome means the change was not made); returns the leader that made it."""
    deadline = time.monotonic() + 1800
    while True:
        leader = cluster.wait_for_leader(timeout=600)
        body = {"id": node_id, "address": address}
        status, answer = cluster.nodes[leader].call("POST", "/quorum/voters", body, timeout=1800)
        if status in (200, 201):
            return leader
        if status != 503 or answer.get("error") not in ("not_leader", "no_leader"):
            raise RuntimeError(f"POST /quorum/voters answered {status}: {answer}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no leader took the change: {answer}")


def _applied(status: dict[str, Any] | None, index: int) -> bool:
    return status is not None and status["lastApplied"] >= index


def _applied_everywhere(cluster: LocalCluster, index: int) -> bool:
    statuses = cluster.statuses()
    return len(statuses) == len(VOTERS) and all(_applied(s, index) for s in statuses.values())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3, help="joins, each on a fresh copy of the quorum")
    p.add_argument("--port", type=int, default=26000)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="pyraft-join-") as tmp:
        seed_dir = Path(tmp) / "seed"
        build_data_dir(seed_dir, args.records, snapshots=True, voters=VOTERS)
        snapshot_bytes = max(f.stat().st_size for f in seed_dir.glob("snapshot-*.snap"))
        for run in range(args.runs):
            root = Path(tmp) / f"run{run}"
            runs.append(join_once(seed_dir, root, args.records, args.port))
            shutil.rmtree(root, ignore_errors=True)
            print(f"join {run + 1}/{args.runs}: {runs[-1]}", flush=True)
    result = {
        "benchmark": "join",
        "records": args.records,
        "snapshot_bytes": snapshot_bytes,
        "runs": runs,
        **{k: summarize([r[k] for r in runs]) for k in ("voter_s", "applied_s", "joiner_rss_mb")},
        "machine": machine_info(),
    }
    print(
        f"{args.records} records (snapshot {snapshot_bytes / 1e6:.0f} MB), median of {args.runs}: "
        f"node 4 a voter after {statistics.median(r['voter_s'] for r in runs):.2f} s, all applied after "
        f"{statistics.median(r['applied_s'] for r in runs):.2f} s, its RSS "
        f"{statistics.median(r['joiner_rss_mb'] for r in runs):.0f} MB"
    )
    write_json(args.out / "join.json", result)
    return result


if __name__ == "__main__":
    main()

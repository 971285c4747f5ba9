"""Recovery and memory: restart time and RSS of a node that has applied N records.

    python -m bench.recovery                      # 1,000,000 records, with snapshots
    python -m bench.recovery --records 100000 --runs 3
    python -m bench.recovery --log-only           # no snapshot: the whole log is replayed

The data directory is written straight through FileStorage (the node's own
on-disk format): N real RegisterBrokerRecord commands with distinct broker ids,
as a single-node quorum's log would hold them. By default the records are also
applied to a MetadataStore here and snapshots are saved the way a node with
``--snapshot-entries 100000`` leaves them (snapshots at N - 150,000 and
N - 50,000, the log compacted one snapshot behind; a tenth and a twentieth of N
for small N), so a restart loads the newest snapshot and replays the records
after it. Then ``python -m
pyraft.node`` is started on it, and we time two things: until GET /status
answers (snapshot loaded, log read and checked), and until the node has elected
itself and applied all N records. The node's RSS (from /proc) is read then.

Throughput from 3 to 5 nodes: ``python -m bench.throughput --nodes 5 --systems pyraft-fsync``.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Progress, broker_payload, machine_info, summarize, write_json
from pyraft.core.membership import Membership
from pyraft.core.messages import Entry, HardState
from pyraft.localcluster import LocalCluster
from pyraft.metadata.store import MetadataStore
from pyraft.storage.file import FileStorage
from pyraft.storage.snapshot import SnapshotMeta

BATCH = 10_000
SNAPSHOT_EVERY = 100_000  # the node's default --snapshot-entries
TAIL = 50_000  # records after the newest snapshot


def build_data_dir(data_dir: Path, records: int, *, snapshots: bool, voters: tuple[int, ...] = (1,)) -> float:
    """Write ``records`` command entries of term 1 (and snapshots); returns seconds taken."""
    start = time.monotonic()
    storage = FileStorage(data_dir, fsync=False)
    store = MetadataStore() if snapshots else None
    every, tail = min(SNAPSHOT_EVERY, records // 10), min(TAIL, records // 20)
    marks = {records - tail - every, records - tail} if snapshots else set()
    membership = Membership.of_ids(voters)
    try:
        storage.save_hard_state(HardState(1, 1))
        progress = Progress((records + BATCH - 1) // BATCH, "write log" + (" and apply" if store else ""))
        for first in range(1, records + 1, BATCH):
            last = min(records, first + BATCH - 1)
            entries = [Entry(i, 1, data=broker_payload(i)) for i in range(first, last + 1)]
            storage.append(entries)
            for entry in entries if store else ():
                assert store is not None
                store.apply(entry.index, entry.data)
                if entry.index in marks:
                    meta = SnapshotMeta(entry.index, 1, voters, config=membership.encode())
                    storage.save_snapshot(meta, store.capture()())
            progress.step(f"{last} records")
    finally:
        storage.close()
    return time.monotonic() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def restart_once(root: Path, records: int, port: int) -> dict[str, float]:
    cluster = LocalCluster(root, 1, port, port + 100, ["--log-level", "WARNING"])
    node = cluster.nodes[1]
    start = time.monotonic()
    cluster.start(1)
    try:
        cluster.wait_for("the node's /status", lambda: node.status() is not None, timeout=600)
        answering = time.monotonic() - start

        def applied() -> bool:
            status = node.status(timeout=2.0)
            return status is not None and status["lastApplied"] >= records

        cluster.wait_for("all records applied", applied, timeout=1800)
        replayed = time.monotonic() - start
        assert node.proc is not None
        return {"status_s": answering, "applied_s": replayed, "rss_mb": rss_mb(node.proc.pid)}
    finally:
        cluster.stop_all(signal.SIGKILL)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3, help="restarts of the same log")
    p.add_argument("--port", type=int, default=25000)
    p.add_argument("--log-only", action="store_true", help="no snapshots: replay the whole log")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build the data directory in KEEP (not a temp dir) and leave it there; a later run with the "
        "same KEEP, --records and --log-only restarts on it without building it again (for profiling)",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyraft-recovery-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        marker = root / f"built-{args.records}-{'log-only' if args.log_only else 'snapshots'}"
        if marker.exists():
            write_s = float(marker.read_text())
        else:
            if args.keep is not None and (root / "1").exists():
                raise SystemExit(f"{root / '1'} exists but was not built for these options; remove it")
            write_s = build_data_dir(root / "1", args.records, snapshots=not args.log_only)
            marker.write_text(f"{write_s:.2f}")
        log_bytes = sum(f.stat().st_size for f in (root / "1").rglob("*") if f.is_file())
        runs = []
        for run in range(args.runs):
            runs.append(restart_once(root, args.records, args.port))
            print(f"restart {run + 1}/{args.runs}: {runs[-1]}", flush=True)
    result = {
        "benchmark": "recovery",
        "records": args.records,
        "snapshots": not args.log_only,
        "log_bytes": log_bytes,
        "log_write_s": round(write_s, 2),
        "runs": runs,
        **{k: summarize([r[k] for r in runs]) for k in ("status_s", "applied_s", "rss_mb")},
        "machine": machine_info(),
    }
    print(
        f"{args.records} records ({log_bytes / 1e6:.0f} MB on disk), median (min-max) of {args.runs}: "
        f"/status answers after {statistics.median(r['status_s'] for r in runs):.2f} s, all applied after "
        f"{statistics.median(r['applied_s'] for r in runs):.2f} s, RSS "
        f"{statistics.median(r['rss_mb'] for r in runs):.0f} MB"
    )
    write_json(args.out / ("recovery-log-only.json" if args.log_only else "recovery.json"), result)
    return result


if __name__ == "__main__":
    main()

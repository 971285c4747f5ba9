"""One PySyncObj node for bench.throughput, driven over stdin/stdout by the benchmark.

    python -m bench.pso_node --self 127.0.0.1:7001 --partners 127.0.0.1:7002,127.0.0.1:7003 \
        --journal /tmp/x/journal [--no-batch]

The replicated state machine is the same MetadataStore pyraft runs, applied to the
same encoded RegisterBrokerRecord commands, so both systems do the same apply work.
PySyncObj has no client protocol: its API is a method call on the node object with
a callback, so the load runs inside the leader process (as its users run it).

stdin commands, one per line; each answer is one JSON line on stdout:
    role                      -> {"leader": bool, "leaderAddr": str|null}
    run CONC SECONDS WARMUP   -> RunResult.to_json() of the measured window (leader only)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from itertools import count
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from bench.common import RunResult, broker_payload
from pyraft.metadata.store import MetadataStore


class Metadata(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self._store = MetadataStore()
        self._index = 0

    @replicated  # type: ignore[untyped-decorator]
    def apply(self, command: bytes) -> bytes:
        self._index += 1
        return self._store.apply(self._index, command)


def run_load(node: Metadata, conc: int, seconds: float, warmup: float, ids: count[int]) -> dict[str, Any]:
    result = RunResult(0, seconds)
    lock = threading.Lock()
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + seconds
    outstanding = [0]
    finished = threading.Event()
    errors = [0]

    def issue() -> None:
        sent = time.perf_counter()

        def done(res: Any, err: Any) -> None:
            now = time.perf_counter()
            with lock:
                if err != FAIL_REASON.SUCCESS:
                    errors[0] += 1
                elif start <= now <= end:
                    result.committed += 1
                    result.histogram.record_value(max(1, int((now - sent) * 1e6)))
                if now < end:
                    issue()
                else:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        finished.set()

        node.apply(broker_payload(next(ids)), callback=done)

    with lock:
        outstanding[0] = conc
        for _ in range(conc):
            issue()
    finished.wait(seconds + warmup + 60)
    out = result.to_json()
    out["errors"] = errors[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--self", dest="self_addr", required=True)
    p.add_argument("--partners", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--no-batch", action="store_true", help="appendEntriesUseBatch=False")
    p.add_argument("--first-id", type=int, default=1)
    args = p.parse_args()
    conf = SyncObjConf(
        journalFile=args.journal,
        fullDumpFile=args.journal + ".dump",
        appendEntriesUseBatch=not args.no_batch,
        commandsQueueSize=1_000_000,
        dynamicMembershipChange=False,
    )
    node = Metadata(args.self_addr, args.partners.split(","), conf)
    ids = count(args.first_id)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "role":
            leader = node._getLeader()
            answer: dict[str, Any] = {
                "leader": node._isLeader(),
                "leaderAddr": None if leader is None else str(leader),
            }
        elif words[0] == "run":
            answer = run_load(node, int(words[1]), float(words[2]), float(words[3]), ids)
        else:
            answer = {"error": f"unknown command {words[0]!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

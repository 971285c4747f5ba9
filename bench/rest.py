"""REST end to end: the metadata HTTP API of a 3-node cluster under N concurrent clients.

    python -m bench.rest                          # 1, 16, 64, 256 clients; mixed 50/50 and write-only
    python -m bench.rest --clients 64 --mixes write --runs 5

Each client owns one broker (registered beforehand) and loops: a write is
``POST /register_broker_change/`` with the same endpoint and a status flipping
between ALIVE and FENCED (a BrokerRegistrationChangeRecord through Raft, fsynced);
a read is ``GET /get_broker/{id}`` (linearizable: a ReadIndex round on the leader).
Requests go to the leader, one keep-alive connection per client, from this process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import Progress, RunResult, fmt_range, machine_info, summarize, write_json
from pyraft.localcluster import LocalCluster

MIXES = {"mixed": 0.5, "write": 1.0}  # share of writes


async def drive(base: str, clients: int, write_share: float, seconds: float, warmup: float) -> RunResult:
    result = RunResult(0, seconds)
    failures = 0
    failed: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as http:
        t0 = time.perf_counter()
        start, end = t0 + warmup, t0 + warmup + seconds

        async def client(broker_id: int) -> None:
            nonlocal failures
            n = 0
            while (sent := time.perf_counter()) < end:
                n += 1
                try:
                    if (n * write_share) % 1 < write_share:  # deterministic interleave of writes, reads
                        body = {
                            "brokerId": broker_id, "brokerHost": f"b{broker_id}.bench", "brokerPort": 9092,
                            "securityProtocol": "PLAINTEXT", "brokerStatus": "ALIVE" if n % 2 else "FENCED",
                        }  # fmt: skip
                        response = await http.post("/register_broker_change/", json=body)
                    else:
                        response = await http.get(f"/get_broker/{broker_id}")
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                now = time.perf_counter()
                if status != 200:
                    failures += 1
                    failed[str(status)] = failed.get(str(status), 0) + 1
                elif start <= now <= end:
                    result.committed += 1
                    result.histogram.record_value(max(1, int((now - sent) * 1e6)))

        async with trio.open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(client, i + 1)
    if failures:
        print(f"rest: {failures} requests failed with {clients} clients: {failed}", file=sys.stderr)
    return result


async def register(base: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as http:
        for broker_id in range(1, count + 1):
            body = {
                "brokerId": broker_id, "brokerHost": f"b{broker_id}.bench", "brokerPort": 9092,
                "securityProtocol": "PLAINTEXT",
            }  # fmt: skip
            response = await http.post("/register_broker/", json=body)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"register_broker {broker_id}: {response.status_code} {response.text}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--port", type=int, default=26000)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    raw: dict[str, dict[int, list[RunResult]]] = {m: {c: [] for c in args.clients} for m in args.mixes}
    progress = Progress(args.runs * len(args.clients) * len(args.mixes), "rest")
    with tempfile.TemporaryDirectory(prefix="pyraft-rest-") as tmp:
        cluster = LocalCluster(Path(tmp), 3, args.port, args.port + 100, ["--log-level", "WARNING"])
        cluster.start_all()
        try:
            leader = cluster.wait_for_leader(30)
            base = f"http://127.0.0.1:{cluster.nodes[leader].http_port}"
            trio.run(register, base, max(args.clients))
            for run in range(args.runs):
                for clients in args.clients:
                    for mix in args.mixes:
                        r = trio.run(drive, base, clients, MIXES[mix], args.seconds, args.warmup)
                        raw[mix][clients].append(r)
                        progress.step(f"run {run + 1} {mix} {clients} clients: {r.rate:.0f}/s")
        finally:
            cluster.stop_all(signal.SIGKILL)
    results: dict[str, Any] = {"benchmark": "rest", "machine": machine_info(), "runs": args.runs, "mixes": {}}
    print(f"\nREST, 3 nodes (fsync), median (min-max) of {args.runs} runs of {args.seconds} s")
    print(f"{'mix':6s} {'clients':>7s} {'requests/s':>20s} {'p50 ms':>20s} {'p99 ms':>20s}")
    for mix, by_clients in raw.items():
        results["mixes"][mix] = {}
        for clients, rs in by_clients.items():
            row = {
                "rate": summarize([r.rate for r in rs]),
                "p50_ms": summarize([r.percentile_ms(50) for r in rs]),
                "p99_ms": summarize([r.percentile_ms(99) for r in rs]),
                "p999_ms": summarize([r.percentile_ms(99.9) for r in rs]),
            }
            results["mixes"][mix][str(clients)] = row
            print(
                f"{mix:6s} {clients:7d} {fmt_range(row['rate']):>20s} {fmt_range(row['p50_ms'], 1):>20s} "
                f"{fmt_range(row['p99_ms'], 1):>20s}"
            )
    write_json(args.out / "rest.json", results)


if __name__ == "__main__":
    main()

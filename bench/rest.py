"""REST end to end: the metadata HTTP API of a 3-node cluster under N concurrent clients.

    python -m bench.rest                          # 1, 16, 64, 256 clients; every target and mix
    python -m bench.rest --clients 64 --mixes write --targets leader --runs 5

Each client owns one broker (registered beforehand) and loops: a write is
``POST /register_broker_change/`` with the same endpoint and a status flipping
between ALIVE and FENCED (the node first makes a linearizable read of the broker
to choose the record, then a BrokerRegistrationChangeRecord goes through Raft,
fsynced on a majority before the answer); a read is ``GET /get_broker/{id}``
(linearizable: a ReadIndex round on the leader). Only 200 answers inside the
measured window count; other answers and connection errors inside it are
counted as failures and written to the results.

Targets, measured in the same command and interleaved run by run:

* ``leader``: every client talks to the leader.
* ``all``: clients are spread over the three nodes, followers first (client i
  on the i-th node of followers-then-leader, so one client talks to a follower);
  a follower forwards a write to the leader through Raft and answers once it has
  applied it, and a read asks the leader for a ReadIndex, so the HTTP work is
  spread over three processes.
* ``bare``: the same HTTP stack (Starlette on hypercorn's trio worker) with the
  same requests and no Raft at all (``bench.hello_app``): the ceiling the stack
  itself sets on this machine.

Clients are trio tasks in this process, each with one keep-alive connection and
a lean HTTP/1.1 client (``bench.http_load``), so the driver takes little of the
CPU it shares with the nodes.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.common import Progress, RunResult, fmt_range, machine_info, settle, summarize, write_json
from bench.http_load import Connection, HttpError, request_bytes
from pyraft.localcluster import LocalCluster

MIXES = {"mixed": 0.5, "write": 1.0}  # share of writes
TARGETS = ("leader", "all", "bare")
Address = tuple[str, int]


@dataclass(frozen=True)
class ClientRequests:
    """The three requests one client sends, built once."""

    alive: bytes
    fenced: bytes
    read: bytes

    @classmethod
    def for_broker(cls, broker_id: int, host: str) -> ClientRequests:
        def change(status: str) -> bytes:
            body = {
                "brokerId": broker_id, "brokerHost": f"b{broker_id}.bench", "brokerPort": 9092,
                "securityProtocol": "PLAINTEXT", "brokerStatus": status,
            }  # fmt: skip
            return request_bytes("POST", "/register_broker_change/", host, body)

        return cls(change("ALIVE"), change("FENCED"), request_bytes("GET", f"/get_broker/{broker_id}", host))

    def nth(self, n: int, write_share: float) -> bytes:
        """Request ``n`` (from 1) of the loop: writes and reads interleaved deterministically,
        the writes alternating ALIVE, FENCED, ALIVE, ..."""
        writes = int(n * write_share)  # writes among requests 1..n
        if writes > int((n - 1) * write_share):
            return self.alive if writes % 2 else self.fenced
        return self.read


async def drive(
    addresses: list[Address], clients: int, write_share: float, seconds: float, warmup: float
) -> tuple[RunResult, Counter[str]]:
    """One measured window; returns the 200s (rate, latency) and the failures by kind."""
    result = RunResult(0, seconds)
    failed: Counter[str] = Counter()
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + seconds

    async def client(index: int) -> None:
        host, port = addresses[index % len(addresses)]
        requests = ClientRequests.for_broker(index + 1, f"{host}:{port}")
        connection = await Connection.open(host, port)
        n = 0
        try:
            while (sent := time.perf_counter()) < end:
                n += 1
                try:
                    status, _ = await connection.call(requests.nth(n, write_share))
                except (HttpError, OSError, trio.BrokenResourceError) as exc:
                    if start <= time.perf_counter() <= end:
                        failed[type(exc).__name__] += 1
                    await connection.aclose()  # the next call connects again
                    continue
                now = time.perf_counter()
                if not start <= now <= end:
                    continue
                if status != 200:
                    failed[str(status)] += 1
                else:
                    result.committed += 1
                    result.histogram.record_value(max(1, int((now - sent) * 1e6)))
        finally:
            await connection.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    if failed:
        print(f"rest: requests failed with {clients} clients: {dict(failed)}", file=sys.stderr)
    return result, failed


async def register(address: Address, count: int) -> None:
    host, port = address
    connection = await Connection.open(host, port)
    try:
        for broker_id in range(1, count + 1):
            body = {
                "brokerId": broker_id, "brokerHost": f"b{broker_id}.bench", "brokerPort": 9092,
                "securityProtocol": "PLAINTEXT",
            }  # fmt: skip
            status, answer = await connection.call(request_bytes("POST", "/register_broker/", host, body))
            if status not in (200, 201):
                raise RuntimeError(f"register_broker {broker_id}: {status} {answer[:300]!r}")
    finally:
        await connection.aclose()


def start_bare(port: int) -> subprocess.Popen[bytes]:
    """``bench.hello_app`` on ``port``, answering; killed again if it does not come up."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.hello_app", "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                trio.run(_probe, ("127.0.0.1", port))
                return proc
            except (OSError, HttpError, trio.BrokenResourceError):
                time.sleep(0.1)  # not listening yet: poll again until the deadline
        raise RuntimeError(f"bench.hello_app did not start on port {port} (exit code {proc.poll()})")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


async def _probe(address: Address) -> None:
    connection = await Connection.open(*address)
    await connection.call(request_bytes("GET", "/get_broker/1", address[0]))
    await connection.aclose()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--port", type=int, default=26000)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    cells = [(t, m, c) for t in args.targets for m in args.mixes for c in args.clients]
    raw: dict[tuple[str, str, int], list[tuple[RunResult, Counter[str]]]] = {cell: [] for cell in cells}
    progress = Progress(args.runs * len(cells), "rest")
    bare: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="pyraft-rest-") as tmp:
        cluster = LocalCluster(Path(tmp), 3, args.port, args.port + 100, ["--log-level", "WARNING"])
        cluster.start_all()
        try:
            leader = cluster.wait_settled(30)
            everyone = {i: ("127.0.0.1", n.http_port) for i, n in cluster.nodes.items()}
            followers_first = sorted(everyone, key=lambda i: i == leader)
            where = {"leader": [everyone[leader]], "all": [everyone[i] for i in followers_first]}
            if "bare" in args.targets:
                bare = start_bare(args.port + 200)
                where["bare"] = [("127.0.0.1", args.port + 200)]
            trio.run(register, everyone[leader], max(args.clients))
            for run in range(args.runs):
                for target, mix, clients in cells:
                    settle()
                    r, failed = trio.run(drive, where[target], clients, MIXES[mix], args.seconds, args.warmup)
                    raw[target, mix, clients].append((r, failed))
                    progress.step(f"run {run + 1} {target} {mix} {clients} clients: {r.rate:.0f}/s")
            if cluster.leader() != leader:
                print(f"rest: the leader changed during the runs (node {leader} led first)", file=sys.stderr)
        finally:
            cluster.stop_all(signal.SIGKILL)
            if bare is not None:
                stop(bare)
    report(raw, args)


def report(
    raw: dict[tuple[str, str, int], list[tuple[RunResult, Counter[str]]]], args: argparse.Namespace
) -> None:
    results: dict[str, Any] = {
        "benchmark": "rest", "machine": machine_info(), "runs": args.runs, "seconds": args.seconds,
        "targets": {},
    }  # fmt: skip
    print(f"\nREST, 3 nodes (fsync), median (min-max) of {args.runs} runs of {args.seconds} s (200s only)")
    print(
        f"{'target':7s} {'mix':6s} {'clients':>7s} {'requests/s':>20s} {'p50 ms':>20s} {'p99 ms':>20s} "
        f"{'failed':>7s}"
    )
    for (target, mix, clients), runs in raw.items():
        rs = [r for r, _ in runs]
        row: dict[str, Any] = {
            "rate": summarize([r.rate for r in rs]),
            "p50_ms": summarize([r.percentile_ms(50) for r in rs]),
            "p99_ms": summarize([r.percentile_ms(99) for r in rs]),
            "p999_ms": summarize([r.percentile_ms(99.9) for r in rs]),
            "failures": [dict(failed) for _, failed in runs],
        }
        results["targets"].setdefault(target, {}).setdefault(mix, {})[str(clients)] = row
        print(
            f"{target:7s} {mix:6s} {clients:7d} {fmt_range(row['rate']):>20s} "
            f"{fmt_range(row['p50_ms'], 1):>20s} {fmt_range(row['p99_ms'], 1):>20s} "
            f"{sum(sum(f.values()) for _, f in runs):7d}"
        )
    write_json(args.out / "rest.json", results)


if __name__ == "__main__":
    main()

"""Engine throughput and latency: pyraft vs PySyncObj, 3 processes each, ~150-byte metadata records.

    python -m bench.throughput                       # full run (all systems, 1..1024 outstanding, 3 runs)
    python -m bench.throughput --conc 16 64 --runs 5 --seconds 5
    python -m bench.throughput --systems pyraft-fsync pysyncobj-batch

Systems (every cluster stays up for the whole command, and the measurements are
interleaved run by run, so machine noise hits every system alike):

* ``pyraft-fsync``   3 ``python -m pyraft.node`` processes, log fsynced per batch (group commit).
* ``pyraft-nofsync`` the same with ``--no-fsync`` (for the equal-durability comparison only).
* ``pysyncobj-batch``   PySyncObj 3 processes, FileJournal on, its default batching.
* ``pysyncobj-nobatch`` the same with ``appendEntriesUseBatch=False``.

PySyncObj's FileJournal writes records into an mmap and never calls fsync/msync
while running (``flush()`` exists but nothing calls it; ``_destroy`` flushes on a
clean close): its journal survives a process crash but not a power cut, which is
the durability of ``pyraft-nofsync``. The two pyraft modes differ, so both run.

The pyraft load driver is this process: one RaftClient connection with CONC
proposals in flight (each a real RegisterBrokerRecord command with a distinct
broker id), through the node's client protocol on its raft port. PySyncObj has
no client protocol, so its load runs inside its leader process with CONC calls
in flight through its callback API (no network hop from client to leader).
A measurement window of SECONDS follows WARMUP seconds of the same load;
throughput counts commits acknowledged inside the window, latency is the time
from call to acknowledgement of those commits (HdrHistogram, microseconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import trio

from bench.common import (
    Progress,
    RunResult,
    broker_payload,
    decode_histogram,
    fmt_range,
    machine_info,
    settle,
    summarize,
    write_json,
)
from pyraft.client import ClientError, RaftClient
from pyraft.localcluster import LocalCluster

DEFAULT_CONC = (1, 16, 64, 256, 1024)
SYSTEMS = ("pyraft-fsync", "pyraft-nofsync", "pysyncobj-batch", "pysyncobj-nobatch")
DURABILITY = {
    "pyraft-fsync": "fdatasync per batch before acknowledging (survives power loss)",
    "pyraft-nofsync": "written, never fsynced (survives a process crash, not a power cut)",
    "pysyncobj-batch": "mmap journal, never fsynced (survives a process crash, not a power cut)",
    "pysyncobj-nobatch": "mmap journal, never fsynced (survives a process crash, not a power cut)",
}


async def drive_pyraft(
    addresses: list[tuple[str, int]], conc: int, seconds: float, warmup: float, ids: count[int]
) -> RunResult:
    result = RunResult(0, seconds)
    errors = 0
    async with await RaftClient.connect(addresses, cluster_id="pyraft", timeout=30.0) as client:
        t0 = time.perf_counter()
        start, end = t0 + warmup, t0 + warmup + seconds

        async def worker() -> None:
            nonlocal errors
            while True:
                payload = broker_payload(next(ids))
                sent = time.perf_counter()
                if sent >= end:
                    return
                try:
                    await client.propose(payload)
                except ClientError:
                    errors += 1
                    continue
                now = time.perf_counter()
                if start <= now <= end:
                    result.committed += 1
                    result.histogram.record_value(max(1, int((now - sent) * 1e6)))

        async with trio.open_nursery() as nursery:
            for _ in range(conc):
                nursery.start_soon(worker)
    if errors:
        print(f"pyraft: {errors} proposals failed at conc {conc}", file=sys.stderr)
    return result


class System(Protocol):
    name: str

    def start(self) -> None: ...
    def measure(self, conc: int, seconds: float, warmup: float) -> RunResult: ...
    def stop(self) -> None: ...


@dataclass
class PyraftSystem:
    name: str
    root: Path
    base_port: int
    nodes: int = 3
    extra: list[str] = field(default_factory=list)
    cluster: LocalCluster | None = None
    ids: count[int] = field(default_factory=lambda: count(1))

    def start(self) -> None:
        args = ["--log-level", "WARNING", *self.extra]
        self.cluster = LocalCluster(
            self.root / self.name, self.nodes, self.base_port, self.base_port + 100, args
        )
        self.cluster.start_all()
        self.cluster.wait_settled(30)  # a leader whose first entry every node has applied

    def measure(self, conc: int, seconds: float, warmup: float) -> RunResult:
        assert self.cluster is not None
        leader = self.cluster.wait_for_leader(30)
        # The driver talks to the leader (a follower would forward every proposal to it).
        first = self.cluster.nodes[leader]
        addresses = [("127.0.0.1", first.raft_port)]
        addresses += [a for a in self.cluster.raft_addresses if a != addresses[0]]
        before = self.term()
        result = trio.run(drive_pyraft, addresses, conc, seconds, warmup, self.ids)
        result.new_terms = self.term() - before
        return result

    def term(self) -> int:
        assert self.cluster is not None
        return max((int(s["term"]) for s in self.cluster.statuses().values()), default=0)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all(signal.SIGKILL)


@dataclass
class PySyncObjSystem:
    name: str
    root: Path
    base_port: int
    batch: bool = True
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self) -> None:
        addrs = [f"127.0.0.1:{self.base_port + i}" for i in range(3)]
        folder = self.root / self.name
        folder.mkdir(parents=True, exist_ok=True)
        for i, addr in enumerate(addrs):
            cmd = [
                sys.executable, "-m", "bench.pso_node", "--self", addr,
                "--partners", ",".join(a for a in addrs if a != addr),
                "--journal", str(folder / f"journal-{i}"), "--first-id", str(1 + i * 100_000_000),
            ]  # fmt: skip
            if not self.batch:
                cmd.append("--no-batch")
            log = (folder / f"node-{i}.log").open("w")
            self.procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            )
        self.wait_committing(30)

    def wait_committing(self, timeout: float) -> None:
        """Until a write commits: a node that calls itself leader may not commit yet, and a first
        window of 0.5 s (the smoke test's) measured 0 records/s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ask(self.leader(timeout), "run 1 0.2 0")["committed"] > 0:
                return
        raise TimeoutError(f"{self.name}: nothing committed within {timeout} s")

    def _ask(self, proc: subprocess.Popen[str], line: str) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        answer: dict[str, Any] = json.loads(proc.stdout.readline())
        return answer

    def leader(self, timeout: float) -> subprocess.Popen[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if self._ask(proc, "role")["leader"]:
                    return proc
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no leader within {timeout} s")

    def measure(self, conc: int, seconds: float, warmup: float) -> RunResult:
        # Starved of CPU by the other clusters' windows, a PySyncObj follower can time out
        # (raftMinTimeout is 0.4 s) and the window would time its election: the smoke test's
        # 0.5 s window once measured 0/s so. Its windows start from a leader that commits.
        self.wait_committing(30)
        answer = self._ask(self.leader(30), f"run {conc} {seconds} {warmup}")
        if answer.get("errors"):
            print(f"{self.name}: {answer['errors']} calls failed at conc {conc}", file=sys.stderr)
        return RunResult(answer["committed"], seconds, decode_histogram(answer["histogram"]))

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


def make_system(name: str, root: Path, port: int, nodes: int) -> System:
    if name == "pyraft-fsync":
        return PyraftSystem(name, root, port, nodes)
    if name == "pyraft-nofsync":
        return PyraftSystem(name, root, port, nodes, ["--no-fsync"])
    if name == "pysyncobj-batch":
        return PySyncObjSystem(name, root, port, batch=True)
    if name == "pysyncobj-nobatch":
        return PySyncObjSystem(name, root, port, batch=False)
    raise ValueError(f"unknown system {name!r}; known: {SYSTEMS}")


def run_benchmark(
    systems: Sequence[str],
    concs: Sequence[int],
    runs: int,
    seconds: float,
    warmup: float,
    base_port: int = 21000,
    nodes: int = 3,
    root: Path | None = None,
) -> dict[str, Any]:
    """Every system up at once; measurements interleaved run by run, concurrency by concurrency."""
    tmp = Path(tempfile.mkdtemp(prefix="pyraft-bench-", dir=root))
    started: list[System] = []
    raw: dict[str, dict[int, list[RunResult]]] = {s: {c: [] for c in concs} for s in systems}
    progress = Progress(runs * len(concs) * len(systems), "throughput")
    try:
        for i, name in enumerate(systems):
            system = make_system(name, tmp, base_port + 200 * i, nodes)
            started.append(system)
            system.start()
        for run in range(runs):
            for conc in concs:
                for system in started:
                    settle()  # the previous window's background work (snapshots, compactions) ends first
                    r = system.measure(conc, seconds, warmup)
                    raw[system.name][conc].append(r)
                    terms = f", {r.new_terms} new term(s)" if r.new_terms else ""
                    progress.step(f"run {run + 1} {system.name} conc {conc}: {r.rate:.0f}/s{terms}")
    finally:
        for system in started:
            system.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return build_results(raw, runs, seconds, warmup, nodes)


def build_results(
    raw: dict[str, dict[int, list[RunResult]]], runs: int, seconds: float, warmup: float, nodes: int
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "throughput",
        "nodes": nodes,
        "runs": runs,
        "seconds": seconds,
        "warmup": warmup,
        "durability": {s: DURABILITY[s] for s in raw},
        "machine": machine_info(),
        "systems": {},
    }
    for name, by_conc in raw.items():
        rows = {}
        for conc, rs in by_conc.items():
            merged = decode_histogram("")
            for r in rs:
                merged.add(r.histogram)
            rows[str(conc)] = {
                "rate": summarize([r.rate for r in rs]),
                "p50_ms": summarize([r.percentile_ms(50) for r in rs]),
                "p99_ms": summarize([r.percentile_ms(99) for r in rs]),
                "p999_ms": summarize([r.percentile_ms(99.9) for r in rs]),
                "runs": [r.to_json() | {"histogram": ""} for r in rs],
                "new_terms": [r.new_terms for r in rs],
                "merged_histogram": merged.encode().decode() if merged.get_total_count() else "",
            }
        results["systems"][name] = rows
    return results


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """pyraft mode vs PySyncObj's better mode at each concurrency (by median rate)."""
    systems = results["systems"]
    pso = [s for s in systems if s.startswith("pysyncobj")]
    out = []
    for mine in (s for s in systems if s.startswith("pyraft")):
        if not pso:
            break
        for conc, row in systems[mine].items():
            best = max(pso, key=lambda s: systems[s][conc]["rate"]["median"])
            other = systems[best][conc]
            out.append(
                {
                    "conc": int(conc),
                    "pyraft": mine,
                    "pysyncobj": best,
                    "equal_durability": mine == "pyraft-nofsync",
                    "rate_ratio": row["rate"]["median"] / max(other["rate"]["median"], 1e-9),
                    "p99_ratio": row["p99_ms"]["median"] / max(other["p99_ms"]["median"], 1e-9),
                }
            )
    return out


def print_report(results: dict[str, Any]) -> None:
    print(f"\nthroughput, {results['nodes']} nodes, median (min-max) of {results['runs']} runs "
          f"of {results['seconds']} s; machine {results['machine']}")  # fmt: skip
    for name, text in results["durability"].items():
        print(f"  durability {name:18s} {text}")
    cols = ("records/s", "p50 ms", "p99 ms", "p99.9 ms")
    print(f"\n{'system':18s} {'conc':>5s} " + " ".join(f"{c:>22s}" for c in cols))
    for name, rows in results["systems"].items():
        for conc, row in rows.items():
            print(
                f"{name:18s} {conc:>5s} {fmt_range(row['rate']):>22s} {fmt_range(row['p50_ms'], 1):>22s} "
                f"{fmt_range(row['p99_ms'], 1):>22s} {fmt_range(row['p999_ms'], 1):>22s}"
            )
    rs = ratios(results)
    if rs:
        print("\nratios (pyraft / PySyncObj's better mode at that concurrency, medians):")
        for r in rs:
            eq = "equal durability" if r["equal_durability"] else "pyraft fsyncs, PySyncObj does not"
            print(
                f"  conc {r['conc']:5d} {r['pyraft']:15s} vs {r['pysyncobj']:17s} "
                f"throughput x{r['rate_ratio']:.2f}  p99 x{r['p99_ratio']:.2f}  ({eq})"
            )
    results["ratios"] = rs


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in results["systems"].items():
        concs = [int(c) for c in rows]
        med = [rows[c]["rate"]["median"] for c in rows]
        lo = [rows[c]["rate"]["median"] - rows[c]["rate"]["min"] for c in rows]
        hi = [rows[c]["rate"]["max"] - rows[c]["rate"]["median"] for c in rows]
        ax.errorbar(concs, med, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("proposals in flight")
    ax.set_ylabel("committed records/s (median, min-max)")
    ax.set_title(f"{results['nodes']} nodes, ~150-byte records, {results['machine']['cores']} cores")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    suffix = "" if results["nodes"] == 3 else f"-{results['nodes']}n"  # a 5-node run keeps the 3-node charts
    paths.append(out_dir / f"throughput{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    concs = list(next(iter(results["systems"].values())).keys())
    fig, axes = plt.subplots(1, len(concs), figsize=(3.2 * len(concs), 3.6), squeeze=False)
    for ax, conc in zip(axes[0], concs, strict=True):
        for name, rows in results["systems"].items():
            hist = decode_histogram(rows[conc]["merged_histogram"])
            total = hist.get_total_count()
            if not total:
                continue
            xs, ys = [], []
            seen = 0
            for item in hist.get_recorded_iterator():
                seen += item.count_added_in_this_iter_step
                xs.append(item.value_iterated_to / 1000)
                ys.append(100 * seen / total)
            ax.plot(xs, ys, label=name)
        ax.set_xscale("log")
        ax.set_title(f"{conc} in flight")
        ax.set_xlabel("latency ms")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("cumulative %")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / f"latency_cdf{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--conc", nargs="+", type=int, default=list(DEFAULT_CONC))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=1.0, help="load before the window, not measured")
    p.add_argument("--nodes", type=int, default=3, help="pyraft cluster size (PySyncObj: always 3)")
    p.add_argument("--port", type=int, default=21000, help="first port used")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for JSON and PNG")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    results = run_benchmark(
        args.systems, args.conc, args.runs, args.seconds, args.warmup, args.port, args.nodes
    )
    print_report(results)
    name = f"throughput-{args.nodes}n"
    write_json(args.out / f"{name}.json", results)
    print(f"\nresults: {args.out / (name + '.json')}")
    if not args.no_plot:
        for path in plot(results, args.out):
            print(f"chart: {path}")


if __name__ == "__main__":
    main()

"""Failover: time from ``kill -9`` of the leader to the first write committed by a new leader.

    python -m bench.failover                      # 100 trials each: default 150-300 ms and fast 20-40 ms
    python -m bench.failover --settings default --trials 20
    python -m bench.failover --settings custom --election-timeout-ms 50 --heartbeat-ms 10 --tick-ms 2

Each trial: wait until a leader is known, every node has applied the commit
index and the machine is quiet, SIGKILL the leader, and propose through the
survivors until one write is acknowledged (a follower forwards it; an unknown
outcome is simply retried with a fresh write). The killed node is restarted and
caught up before the next trial. Each trial also
records how many terms the election took (more than one means a split vote or a
failed pre-vote round), which is what the slow outliers are made of.

Writes JSON (samples, summary, machine info) and a cumulative distribution plot
in the style of the Raft paper's Figure 16, with the paper's reported numbers marked.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from pyraft.client import ClientError, RaftClient
from pyraft.localcluster import LocalCluster
from pyraft.metadata.commands import MetadataCommand, encode_command, register_broker

FAILOVER_WRITE = encode_command(MetadataCommand(register_broker(1, "failover", 9092, "PLAINTEXT")))


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
                    await client.propose(FAILOVER_WRITE)
                    return
                except ClientError:
                    await trio.sleep(0.002)  # e.g. outcome unknown (leader died under it): write again


SETTINGS: dict[str, tuple[float, float, float]] = {  # election timeout, heartbeat, tick (ms)
    "default": (150.0, 50.0, 10.0),
    "fast": (20.0, 5.0, 2.0),
}
# The Raft paper (Ongaro & Ousterhout, 2014), Figure 16: time to elect a leader after a crash.
PAPER_MARKS = {
    "default": [(513.0, "paper, 150-200 ms timeouts: worst of 1000 = 513 ms")],
    "fast": [(35.0, "paper, 12-24 ms: mean 35 ms"), (152.0, "paper, 12-24 ms: worst 152 ms")],
}


def max_term(cluster: LocalCluster) -> int:
    return max((int(s["term"]) for s in cluster.statuses().values()), default=0)


def one_trial(cluster: LocalCluster) -> tuple[float, int]:
    """Returns the failover time and how many terms the new leader's election took."""
    from bench.common import settle

    cluster.wait_for("a settled cluster", lambda: caught_up(cluster))
    settle()  # the restarted node's catch-up and start-up work done: the machine is quiet
    leader = cluster.wait_for_leader()
    term_before = max_term(cluster)
    survivors = [("127.0.0.1", n.raft_port) for i, n in cluster.nodes.items() if i != leader]
    proc = cluster.nodes[leader].proc
    assert proc is not None
    start = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    trio.run(first_write, survivors, 30.0)
    elapsed = time.monotonic() - start
    terms = max_term(cluster) - term_before
    proc.wait()
    cluster.start(leader)
    return elapsed, terms


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
    from bench.common import machine_info as info

    return info()


def run_setting(
    name: str, timing: tuple[float, float, float], trials: int, http_port: int, raft_port: int
) -> dict[str, Any]:
    from bench.common import Progress

    progress = Progress(trials, f"failover {name}")
    election, heartbeat, tick = timing
    args = [
        "--election-timeout-ms", str(election), "--heartbeat-ms", str(heartbeat), "--tick-ms", str(tick),
        "--log-level", "INFO",
    ]  # fmt: skip
    samples: list[float] = []
    terms: list[int] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="pyraft-failover-") as root:
        cluster = LocalCluster(Path(root), 3, http_port, raft_port, args)
        cluster.start_all()
        try:
            for trial in range(1, trials + 1):
                try:
                    elapsed, took = one_trial(cluster)
                except TimeoutError as exc:  # keep the trials done so far, and say why it stopped
                    error = f"trial {trial} stopped the run: {exc}"
                    print(f"\n{error}", file=sys.stderr, flush=True)  # after the progress bar's line
                    break
                samples.append(elapsed)
                terms.append(took)
                progress.step(f"{elapsed * 1000:7.1f} ms, {took} term(s)")
        finally:
            cluster.stop_all(signal.SIGKILL)
    cut = 2 * statistics.median(samples) if samples else 0.0
    slow = [t for s_, t in zip(samples, terms, strict=True) if s_ > cut]
    return {
        "setting": name,
        "election_timeout_ms": [election, 2 * election],
        "heartbeat_ms": heartbeat,
        "tick_ms": tick,
        "trials": len(samples),
        "error": error,
        "samples_ms": [round(x * 1000, 2) for x in samples],
        "terms": terms,
        "multi_term_elections": sum(1 for t in terms if t > 1),
        "terms_of_slow_trials": slow,
        **({k: round(v, 1) for k, v in summarize(samples).items()} if samples else {}),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(7, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        xs = sorted(r["samples_ms"])
        ys = [100 * (i + 1) / len(xs) for i in range(len(xs))]
        lo, hi = r["election_timeout_ms"]
        ax.step(xs, ys, where="post", label=f"pyraft, {lo:g}-{hi:g} ms ({len(xs)} trials)")
        ax.axvline(r["median_ms"], color="C0", ls=":", lw=1)
        ax.annotate(f"median {r['median_ms']:.0f} ms", (r["median_ms"], 50), fontsize=8, color="C0")
        ax.annotate(f"worst {r['max_ms']:.0f} ms", (r["max_ms"], 100), fontsize=8, color="C0", ha="right")
        for i, (x, label) in enumerate(PAPER_MARKS.get(r["setting"], [])):
            ax.axvline(x, color=f"C{i + 1}", ls="--", lw=1, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("time without a leader that commits (ms), kill -9 to first committed write")
        ax.set_ylabel("cumulative %")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--settings", nargs="+", default=["default", "fast"], choices=[*SETTINGS, "custom"])
    p.add_argument("--election-timeout-ms", type=float, default=150.0, help="for --settings custom")
    p.add_argument("--heartbeat-ms", type=float, default=50.0, help="for --settings custom")
    p.add_argument("--tick-ms", type=float, default=10.0, help="for --settings custom")
    p.add_argument("--http-port", type=int, default=18001)
    p.add_argument("--raft-port", type=int, default=19001)
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for JSON and PNG")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    results: list[dict[str, Any]] = []
    summary = {"benchmark": "failover", "machine": machine_info(), "settings": results}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.settings:
        timing = SETTINGS.get(name, (args.election_timeout_ms, args.heartbeat_ms, args.tick_ms))
        results.append(run_setting(name, timing, args.trials, args.http_port, args.raft_port))
        (args.out / "failover.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        shown = {k: v for k, v in r.items() if k not in ("samples_ms", "terms")}
        print(json.dumps(shown))
    print(f"results: {args.out / 'failover.json'}")
    if not args.no_plot:
        plot(results, args.out / "failover_cdf.png")
        print(f"chart: {args.out / 'failover_cdf.png'}")


if __name__ == "__main__":
    main()

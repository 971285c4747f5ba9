"""One fault-injection run: cluster, nemesis and clients for a while, then heal, restart, check, report.

A run writes one folder: ``nemesis.json`` (the schedule, from the seed),
``nemesis-log.json`` (what each action resolved to and when it ran), ``history.jsonl``,
``requests.jsonl`` (which node answered each operation), ``logs.json`` (each node's final
snapshot and log), ``verdicts.json`` (with the workloads' stats: snapshots taken and
installed per node), ``summary.txt`` and, when matplotlib is installed, ``latency.png``.
Node logs and data directories stay under ``cluster/`` for post-mortems.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from pyraft.testing.harness import FaultCluster, open_cluster
from pyraft.testing.history import HistoryRecorder, monotonic_ns, pair_operations
from pyraft.testing.linearizability import Verdict
from pyraft.testing.nemesis import FAULTS, NemesisOptions, Schedule, generate_schedule
from pyraft.testing.workload import ProcessIds, Workload

SETTLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class RunConfig:
    root: Path
    seed: int
    nodes: int = 3
    time: float = 60.0
    faults: tuple[str, ...] = FAULTS
    node_args: tuple[str, ...] = ()
    node_env: tuple[tuple[str, str], ...] = ()  # extra environment for every node process
    nemesis: NemesisOptions | None = None  # overrides ``faults`` with full timing options
    snapshot_entries: int | None = None  # the nodes' --snapshot-entries (None: their default; 0: off)

    @property
    def folder(self) -> Path:
        return self.root / f"run-seed{self.seed}-{self.nodes}n-{int(self.time)}s"

    @property
    def all_node_args(self) -> tuple[str, ...]:
        """``node_args`` plus the snapshot policy, which the runner sets so the report can name it."""
        if self.snapshot_entries is None:
            return self.node_args
        return ("--snapshot-entries", str(self.snapshot_entries), *self.node_args)


@dataclass
class RunReport:
    folder: Path
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # workload -> why not ok -> count
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> what it measured

    @property
    def valid(self) -> bool:
        return all(v == Verdict.OK.value for v in self.verdicts.values())

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {self.folder}",
            f"operations: {self.counts}",
            f"verdicts: {self.verdicts}",
            *(f"{name} not ok: {dict(sorted(why.items()))}" for name, why in self.reasons.items() if why),
            *_snapshot_lines(self.stats.get("log", {}).get("snapshots", {})),
        ]
        return "\n".join(lines + self.details)

    @property
    def snapshots(self) -> dict[str, dict[str, Any]]:
        """Per node (its id as a string), the snapshots it took and installed (LogWorkload's stats)."""
        found: dict[str, dict[str, Any]] = self.stats.get("log", {}).get("snapshots", {})
        return found


def _snapshot_lines(per_node: dict[str, dict[str, Any]]) -> list[str]:
    """One line per node: a reader sees whether snapshots, compaction and InstallSnapshot happened."""
    lines = []
    for node, s in sorted(per_node.items(), key=lambda item: int(item[0])):
        installed = s.get("installed") or []
        line = (
            f"node {node} snapshots: took {s.get('taken')}, installed {len(installed)}"
            + (f" (at {', '.join(map(str, installed[:10]))})" if installed else "")
            + f"; now snapshotIndex {s.get('snapshotIndex')}, logStartIndex {s.get('logStartIndex')}"
        )
        if s.get("unlogged"):
            line += f"; saved but never logged (crash right after saving?): {s['unlogged']}"
        if s.get("cutByKill"):
            line += f"; a kill cut snapshot writes/transfers: {s['cutByKill']}"
        lines.append(line)
    return lines


async def run(config: RunConfig, workloads: Sequence[Workload]) -> RunReport:
    """The whole run; the nemesis schedule depends only on (seed, nodes, time, faults)."""
    folder = config.folder
    if folder.exists():  # a replay of the same seed: old data directories and history must not leak in
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    options = config.nemesis or NemesisOptions(faults=config.faults)
    schedule = generate_schedule(config.seed, config.nodes, config.time, options)
    schedule.save(folder / "nemesis.json")
    print(
        f"pyraft fault run: seed {config.seed}, {config.nodes} nodes, {config.time:g}s -> {folder}",
        flush=True,
    )
    ids = ProcessIds()
    with HistoryRecorder(folder / "history.jsonl") as recorder:
        async with open_cluster(
            folder / "cluster",
            config.nodes,
            config.all_node_args,
            seed=config.seed,
            env=dict(config.node_env),
        ) as cluster:
            await cluster.wait_healthy(SETTLE_TIMEOUT)
            for workload in workloads:
                await workload.setup(cluster, recorder, ids)
            start, start_ns = trio.current_time(), monotonic_ns()  # trio's clock has its own offset
            (folder / "run.json").write_text(
                json.dumps({"start_ns": start_ns, **_config_dict(config)}) + "\n"
            )
            await _faults_and_clients(cluster, schedule, workloads, recorder, ids, start + config.time)
            await _heal_and_restart_everything(cluster)
            for workload in workloads:
                await workload.final(cluster, recorder, ids)
            nemesis_log = cluster.nemesis_log
    report = _check(folder, config.seed, workloads, recorder)
    (folder / "nemesis-log.json").write_text(json.dumps(nemesis_log, indent=1) + "\n")
    _plot(folder, recorder, schedule, start_ns)
    (folder / "summary.txt").write_text(report.summary() + "\n")
    return report


async def _faults_and_clients(
    cluster: FaultCluster,
    schedule: Schedule,
    workloads: Sequence[Workload],
    recorder: HistoryRecorder,
    ids: ProcessIds,
    stop_at: float,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.run_schedule, schedule, stop_at - schedule.duration)
        for workload in workloads:
            for _ in range(workload.clients):
                nursery.start_soon(workload.client, cluster, recorder, ids, stop_at)


async def _heal_and_restart_everything(cluster: FaultCluster) -> None:
    """After healing, kill -9 and restart every node at once: acknowledged data must survive that too."""
    await cluster.heal_all()
    await cluster.wait_healthy(SETTLE_TIMEOUT)
    await cluster.stop_all()
    cluster.start_all()
    await cluster.wait_healthy(SETTLE_TIMEOUT)


def _check(folder: Path, seed: int, workloads: Sequence[Workload], recorder: HistoryRecorder) -> RunReport:
    ops = pair_operations(recorder.events)
    report = RunReport(folder, seed, dict(Counter(op.type for op in ops)))
    report.counts["total"] = len(ops)
    report.counts.update(sorted(Counter(f"{op.f}:{op.type}" for op in ops).items()))
    for workload in workloads:
        reasons = getattr(workload, "reasons", None)
        if reasons:
            report.reasons[workload.name] = dict(reasons)
        stats = getattr(workload, "stats", None)  # optional: what the workload saw besides verdicts
        if callable(stats):
            report.stats[workload.name] = stats()
        for name, outcome in workload.check(recorder.events).items():
            report.verdicts[f"{workload.name}/{name}"] = outcome.verdict.value
            if outcome.verdict is not Verdict.OK:
                report.details.append(outcome.render())
    verdicts = {
        "verdicts": report.verdicts,
        "operations": report.counts,
        "not_ok": report.reasons,
        "stats": report.stats,
    }
    (folder / "verdicts.json").write_text(json.dumps(verdicts, indent=1, sort_keys=True) + "\n")
    return report


def _plot(folder: Path, recorder: HistoryRecorder, schedule: Schedule, start_ns: int) -> None:
    try:
        from pyraft.testing.plot import plot_latency
    except ImportError:  # matplotlib is optional: the run is still checked without its picture
        return
    plot_latency(pair_operations(recorder.events), schedule.windows(), folder / "latency.png", start_ns)


def _config_dict(config: RunConfig) -> dict[str, object]:
    return {
        "seed": config.seed,
        "nodes": config.nodes,
        "time": config.time,
        "faults": list(config.faults),
        "node_args": list(config.all_node_args),
        "snapshot_entries": config.snapshot_entries,
        "node_env": dict(config.node_env),
    }

"""The runner's plumbing, with a stand-in workload until the REST API exists.

The stand-in keeps its register in this process (so it is linearizable by
construction): what is tested is everything around it — schedule file, faults
applied to real processes, history file, heal and full restart, verdicts, plot.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from pyraft.testing.checkers import check_registers
from pyraft.testing.harness import FaultCluster
from pyraft.testing.history import Event, HistoryRecorder, Operation, load_history, pair_operations
from pyraft.testing.nemesis import NemesisOptions, Schedule
from pyraft.testing.plot import plot_latency
from pyraft.testing.run import RunConfig, run
from pyraft.testing.workload import CheckOutcome, ProcessIds


class LocalRegister:
    """Writes and reads of an in-process value, each held for a random few milliseconds."""

    name = "local-register"
    clients = 3

    def __init__(self) -> None:
        self.value: int | None = None
        self.rng = random.Random(5)

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        return None

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        process = ids.fresh()
        while trio.current_time() < stop_at:
            if self.rng.random() < 0.5:
                value = self.rng.randrange(5)
                recorder.invoke(process, "write", "r", value)
                await trio.sleep(self.rng.uniform(0, 0.01))
                self.value = value
                recorder.record(process, "ok", "write", "r", value)
            else:
                recorder.invoke(process, "read", "r")
                seen = self.value
                await trio.sleep(self.rng.uniform(0, 0.01))
                recorder.record(process, "ok", "read", "r", seen)

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        assert len(await cluster.statuses()) == cluster.size  # the runner healed and restarted all

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]:
        return {"linearizable": check_registers(events)}


async def test_short_run_writes_a_complete_report(tmp_path: Path) -> None:
    nemesis = NemesisOptions(
        faults=("kill", "isolate-leader"),
        first_at=0.3,
        fault_seconds=(1.0, 1.5),
        quiet_seconds=(0.3, 0.6),
        final_quiet=0.5,
    )
    config = RunConfig(tmp_path, seed=11, nodes=3, time=4.0, nemesis=nemesis)
    report = await run(config, [LocalRegister()])
    folder = config.folder
    assert report.valid and report.verdicts == {"local-register/linearizable": "ok"}
    assert report.counts["ok"] == report.counts["total"] > 50
    assert len(pair_operations(load_history(folder / "history.jsonl"))) == report.counts["total"]
    schedule = Schedule.load(folder / "nemesis.json")
    log = json.loads((folder / "nemesis-log.json").read_text())
    assert [(e["fault"], e["phase"]) for e in log] == [(a.fault, a.phase) for a in schedule.actions]
    assert all("node" in e for e in log)
    assert (folder / "latency.png").stat().st_size > 1000
    assert "seed 11" in (folder / "summary.txt").read_text()


def test_plot_of_a_synthetic_history(tmp_path: Path) -> None:
    ops = [
        Operation(
            i, i % 4, "write", "k", i, ("ok", "fail", "info")[i % 3], i * 10**8, i * 10**8 + (i + 1) * 10**6
        )
        for i in range(60)
    ]
    plot_latency(ops, [(1.0, 2.0, "kill"), (3.0, 4.5, "pause")], tmp_path / "latency.png", 0)
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"

"""The runner's latency plot on a synthetic history.

The runner itself (schedule file, faults on real processes, history, heal and full
restart, verdicts, report folder) is exercised end to end by test_workloads.py.
"""

from __future__ import annotations

from pathlib import Path

from pyraft.testing.history import Operation
from pyraft.testing.plot import plot_latency


def test_plot_of_a_synthetic_history(tmp_path: Path) -> None:
    ops = [
        Operation(
            i, i % 4, "write", "k", i, ("ok", "fail", "info")[i % 3], i * 10**8, i * 10**8 + (i + 1) * 10**6
        )
        for i in range(60)
    ]
    plot_latency(ops, [(1.0, 2.0, "kill"), (3.0, 4.5, "pause")], tmp_path / "latency.png", 0)
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"

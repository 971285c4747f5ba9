"""The latency timeline of a run, as Jepsen draws it: one dot per operation, faults shaded.

x is when the operation was invoked (seconds since the run began), y its latency
(log scale), colored by outcome. An ``info`` dot sits at the time the client gave
up; a spike of them under a shaded window is what a fault looks like from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt

from pyraft.testing.history import Operation

COLORS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef8f00"}
FAULT_COLORS = (
    "#90caf9",
    "#ce93d8",
    "#ffcc80",
    "#a5d6a7",
    "#f48fb1",
    "#b0bec5",
    "#fff59d",
    "#80cbc4",
    "#bcaaa4",
)


def plot_latency(
    ops: Sequence[Operation], windows: Sequence[tuple[float, float, str]], path: Path, start_ns: int
) -> None:
    """Write a PNG to ``path``; ``windows`` are (start s, stop s, fault) relative to ``start_ns``."""
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    fault_names = sorted({name for _, _, name in windows})
    for begin, end, name in windows:
        color = FAULT_COLORS[fault_names.index(name) % len(FAULT_COLORS)]
        ax.axvspan(begin, end, color=color, alpha=0.35, lw=0, label=name)
    for kind, color in COLORS.items():
        points = [
            ((op.invoke - start_ns) / 1e9, max((op.complete - op.invoke) / 1e6, 1e-3))
            for op in ops
            if op.type == kind and op.complete is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=6, color=color, label=f"{kind} ({len(points)})", zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(path.parent.name)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replot(folder: Path) -> Path:
    """Draw ``latency.png`` of a run folder again from its history, schedule and ``run.json``."""
    import json

    from pyraft.testing.history import load_history, pair_operations
    from pyraft.testing.nemesis import Schedule

    ops = pair_operations(load_history(folder / "history.jsonl"))
    start_ns = json.loads((folder / "run.json").read_text())["start_ns"]
    path = folder / "latency.png"
    plot_latency(ops, Schedule.load(folder / "nemesis.json").windows(), path, int(start_ns))
    return path


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(replot(Path(name)))

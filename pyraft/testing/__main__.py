"""``python -m pyraft.testing --time 600 --nodes 5 --seed N``: one fault-injection run.

Until the REST API lands there are no client workloads, so a run exercises the
nemesis and the recovery path only (cluster healthy after every fault, after a
full kill -9 and restart). Workloads plug in through :class:`pyraft.testing.workload.Workload`.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import trio

from pyraft.testing.nemesis import FAULTS
from pyraft.testing.run import RunConfig, run
from pyraft.testing.workload import Workload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyraft.testing", description=__doc__)
    p.add_argument("--time", type=float, default=60.0, help="seconds of faults and client load")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument(
        "--seed", type=int, default=None, help="replays a run's nemesis schedule (default: random)"
    )
    p.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of: {', '.join(FAULTS)}"
    )
    p.add_argument("--out", type=Path, default=Path("fault-runs"), help="one folder per run under here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    faults = tuple(f for f in args.faults.split(",") if f)
    config = RunConfig(args.out, seed, args.nodes, args.time, faults)
    workloads: list[Workload] = []  # registers, set and log arrive with the REST API
    report = trio.run(run, config, workloads)
    print(report.summary())
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m pyraft.testing --time 600 --nodes 5 --seed N``: one fault-injection run.

Starts the cluster behind fault proxies, runs the seeded nemesis schedule while the
register, set and log workloads (:mod:`pyraft.testing.workloads`) drive the REST API,
heals everything, kill -9s and restarts every node, reads the final state and checks
the history. Prints the seed first (the same seed replays the same schedule), then the
operation counts and verdicts, how many snapshots each node took and installed, and for
a violation the smallest failing window. Exit status 0 only when every verdict is ok.
The report folder is printed too.

The nodes snapshot and compact their logs every ``--snapshot-entries`` applied records
(200 by default, so that a one-minute run snapshots several times on every node, kills
land during snapshot writes, and a node kept down or cut off falls behind the leader's
log start and must be sent a snapshot); ``--snapshot-entries 0`` turns snapshots off.

``PYRAFT_UNSAFE_ACK_BEFORE_COMMIT=1`` in the environment (or ``--unsafe-ack-before-commit``)
starts the nodes in their test-only broken mode; such a run is expected to fail.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path

import trio

from pyraft.metadata.service import UNSAFE_ACK_ENV
from pyraft.testing.nemesis import FAULTS
from pyraft.testing.run import RunConfig, run
from pyraft.testing.workloads import ClientOptions, all_workloads


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (off) or a positive count")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyraft.testing", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--time", type=float, default=60.0, help="seconds of faults and client load")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument(
        "--seed", type=int, default=None, help="replays a run's nemesis schedule (default: random)"
    )
    p.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of: {', '.join(FAULTS)}"
    )
    p.add_argument("--out", type=Path, default=Path("fault-runs"), help="one folder per run under here")
    p.add_argument("--brokers", type=int, default=3, help="register keys (brokers whose host is written)")
    p.add_argument("--register-clients", type=int, default=4)
    p.add_argument("--set-clients", type=int, default=2)
    p.add_argument("--request-timeout", type=float, default=3.0, help="client timeout per request (s)")
    p.add_argument(
        "--node-request-timeout",
        type=float,
        default=2.0,
        help="the nodes' --request-timeout: they answer 503 before the client gives up",
    )
    p.add_argument(
        "--snapshot-entries",
        type=_non_negative,
        default=200,
        help="the nodes snapshot and compact their logs after this many applied records (0: never)",
    )
    p.add_argument(
        "--node-args",
        default="",
        help="more arguments for every node, e.g. '--election-timeout-ms 50 --heartbeat-ms 15'",
    )
    p.add_argument(
        "--unsafe-ack-before-commit",
        action="store_true",
        help=f"TEST-ONLY: start the nodes with {UNSAFE_ACK_ENV}=1 (writes acknowledged before commit)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"seed {seed}", flush=True)
    faults = tuple(f for f in args.faults.split(",") if f)
    env = ((UNSAFE_ACK_ENV, "1"),) if args.unsafe_ack_before_commit else ()
    config = RunConfig(
        args.out,
        seed,
        args.nodes,
        args.time,
        faults,
        node_args=("--request-timeout", str(args.node_request_timeout), *shlex.split(args.node_args)),
        node_env=env,
        snapshot_entries=args.snapshot_entries,
    )
    options = ClientOptions(request_timeout=args.request_timeout)
    workloads = all_workloads(
        seed,
        options,
        brokers=args.brokers,
        register_clients=args.register_clients,
        set_clients=args.set_clients,
    )
    report = trio.run(run, config, workloads)
    print(report.summary())
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(main())

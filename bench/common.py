"""Shared pieces of the benchmarks: payloads, histograms, summaries, machine info, progress, charts."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hdrh.histogram import HdrHistogram

from pyraft.metadata.commands import COMMAND_FORMAT, MetadataCommand, encode_command, register_broker

PAYLOAD_BYTES = 150
_HOST_BASE = "broker-{:09d}.kafka.bench.internal"


_TEMPLATE = register_broker(1, _HOST_BASE.format(1), 9092, "PLAINTEXT", rack="eu-west-1a-rack-07-row-3")


def broker_payload(broker_id: int) -> bytes:
    """A ~150-byte log entry: a real RegisterBrokerRecord command with a distinct broker id.

    The template's wire form with the id and host put in, packed: the same bytes as
    ``encode_command`` of the record (``slow_broker_payload``, tested), at a fifth of
    the cost. Both systems' drivers build one per call, PySyncObj's inside its leader,
    so a dear payload was load-driver work charged to the systems measured."""
    wire = _TEMPLATE_WIRE.copy()
    wire[2] = broker_id
    wire[5] = [[_NAME, _HOST_BASE.format(broker_id), _PORT, _PROTOCOL]]
    packed: bytes = _packb([COMMAND_FORMAT, wire, f"bench-{broker_id:012d}"], use_bin_type=True)
    return packed


def slow_broker_payload(broker_id: int) -> bytes:
    """``broker_payload`` the long way round, through the record classes (for the test)."""
    endpoint = dataclasses.replace(_TEMPLATE.end_points[0], host=_HOST_BASE.format(broker_id))
    record = dataclasses.replace(_TEMPLATE, broker_id=broker_id, end_points=(endpoint,))
    return encode_command(MetadataCommand(record, f"bench-{broker_id:012d}"))


_TEMPLATE_WIRE = _TEMPLATE.to_wire()
_NAME, _, _PORT, _PROTOCOL = _TEMPLATE_WIRE[5][0]
_packb = msgpack.packb


def new_histogram() -> HdrHistogram:
    """Latencies in microseconds, 1 us .. 100 s, 3 significant digits."""
    return HdrHistogram(1, 100_000_000, 3)


@dataclass
class RunResult:
    """One measured window: committed records and their latency histogram (microseconds)."""

    committed: int
    seconds: float
    histogram: HdrHistogram = field(default_factory=new_histogram)
    new_terms: int | None = None  # elections during the run (pyraft only), from the terms before/after

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return float(self.histogram.get_value_at_percentile(p)) / 1000.0

    def to_json(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "seconds": round(self.seconds, 4),
            "rate": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "p999_ms": round(self.percentile_ms(99.9), 3),
            "histogram": self.histogram.encode().decode() if self.committed else "",
            "new_terms": self.new_terms,
        }


def decode_histogram(encoded: str) -> HdrHistogram:
    if not encoded:
        return new_histogram()
    return HdrHistogram.decode(encoded.encode())


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def machine_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "commit": commit + ("-dirty" if dirty else ""),
        "loadavg_at_start": load,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def settle(max_wait: float = 10.0, busy_below: float = 0.5, window: float = 0.5) -> float:
    """Wait until the machine is quiet (under ``busy_below`` of all cores busy over ``window``
    seconds), at most ``max_wait`` seconds; returns the seconds waited.

    The bar is half the machine, not idle: a dozen idle nodes of the clusters kept up
    for the whole command already keep a quarter of two cores busy with their ticks
    and heartbeats, while a snapshot or a compaction takes a whole core or more.

    Run before each measured window: a system's background work from the previous load
    (a pyraft snapshot being written, a PySyncObj log compaction in its forked child) would
    otherwise land in the next system's window, and the interleaving that is meant to spread
    machine noise evenly would hand one system's housekeeping to the other."""
    start = time.monotonic()
    before = _cpu_times()
    if before is None:
        return 0.0
    while time.monotonic() - start < max_wait:
        time.sleep(window)  # a sampling period: the condition is read off /proc/stat after it
        after = _cpu_times()
        assert after is not None
        busy, total = after[0] - before[0], after[1] - before[1]
        if total > 0 and busy / total < busy_below:
            break
        before = after
    return time.monotonic() - start


class Progress:
    """A one-line progress bar on stderr (a plain line per step when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        frac = self.done / self.total
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = time.monotonic() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s  {what}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            if self.done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def fmt_range(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"

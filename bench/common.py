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

from hdrh.histogram import HdrHistogram

from pyraft.metadata.commands import MetadataCommand, encode_command, register_broker

PAYLOAD_BYTES = 150
_HOST_BASE = "broker-{:09d}.kafka.bench.internal"


_TEMPLATE = register_broker(1, _HOST_BASE.format(1), 9092, "PLAINTEXT", rack="eu-west-1a-rack-07-row-3")


def broker_payload(broker_id: int) -> bytes:
    """A ~150-byte log entry: a real RegisterBrokerRecord command with a distinct broker id.

    Built from one validated template (only the id and host change), so the load
    driver spends its time sending rather than validating records."""
    endpoint = dataclasses.replace(_TEMPLATE.end_points[0], host=_HOST_BASE.format(broker_id))
    record = dataclasses.replace(_TEMPLATE, broker_id=broker_id, end_points=(endpoint,))
    return encode_command(MetadataCommand(record, f"bench-{broker_id:012d}"))


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

"""Tiny runs of the benchmarks in bench/, so they keep working (the full runs are by hand).

They need the ``bench`` extra (hdrhistogram, pysyncobj); without it they are skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True
    )


def test_throughput_smoke(tmp_path: Path) -> None:
    pytest.importorskip("pysyncobj")
    out = run_module(
        "bench.throughput", "--systems", "pyraft-fsync", "pysyncobj-nobatch", "--conc", "1", "8",
        "--runs", "1", "--seconds", "0.5", "--warmup", "0.2", "--port", "24500", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "throughput-3n.json").read_text())
    for system in ("pyraft-fsync", "pysyncobj-nobatch"):
        for conc in ("1", "8"):
            row = results["systems"][system][conc]
            assert row["rate"]["median"] > 0, (system, conc, out.stderr[-2000:])
            assert row["p99_ms"]["median"] >= row["p50_ms"]["median"] > 0
    assert {r["conc"] for r in results["ratios"]} == {1, 8}
    assert results["machine"]["cores"]
    assert "ratios (pyraft / PySyncObj" in out.stdout
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0


def test_failover_smoke(tmp_path: Path) -> None:
    run_module(
        "bench.failover", "--settings", "fast", "--trials", "2", "--http-port", "24601",
        "--raft-port", "24701", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "failover.json").read_text())
    (fast,) = results["settings"]
    assert fast["trials"] == 2 and len(fast["samples_ms"]) == 2
    assert all(0 < s < 10_000 for s in fast["samples_ms"])
    assert (tmp_path / "failover_cdf.png").stat().st_size > 0


def test_recovery_smoke(tmp_path: Path) -> None:
    run_module(
        "bench.recovery", "--records", "3000", "--runs", "1", "--port", "24801", "--out", str(tmp_path)
    )
    results = json.loads((tmp_path / "recovery.json").read_text())
    assert results["records"] == 3000
    assert results["applied_s"]["median"] >= results["status_s"]["median"] > 0
    assert results["rss_mb"]["median"] > 10


def test_join_smoke(tmp_path: Path) -> None:
    run_module("bench.join", "--records", "3000", "--runs", "1", "--port", "25301", "--out", str(tmp_path))
    results = json.loads((tmp_path / "join.json").read_text())
    assert results["records"] == 3000 and results["snapshot_bytes"] > 0
    assert results["applied_s"]["median"] >= results["voter_s"]["median"] > 0
    assert results["joiner_rss_mb"]["median"] > 10


def test_rest_smoke(tmp_path: Path) -> None:
    run_module(
        "bench.rest", "--clients", "2", "--runs", "1", "--seconds", "0.5", "--warmup", "0.2",
        "--port", "24901", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "rest.json").read_text())
    for target in ("leader", "all", "bare"):
        for mix in ("mixed", "write"):
            assert results["targets"][target][mix]["2"]["rate"]["median"] > 0, (target, mix)

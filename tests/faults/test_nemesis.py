"""The nemesis schedule: a pure function of its seed, well formed, and sound in what it damages."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from pyraft.testing.nemesis import (
    FAULTS,
    LOG_HEADER_BYTES,
    NemesisOptions,
    Schedule,
    flip_byte,
    generate_schedule,
    resolve_target,
    truncate_tail,
)


def test_same_seed_replays_the_same_schedule() -> None:
    first = generate_schedule(42, 5, 600)
    again = generate_schedule(42, 5, 600)
    assert first == again
    assert first.to_json() == again.to_json()
    assert generate_schedule(43, 5, 600) != first


def test_schedule_round_trips_through_its_json_file(tmp_path: Path) -> None:
    schedule = generate_schedule(7, 3, 120)
    schedule.save(tmp_path / "nemesis.json")
    assert Schedule.load(tmp_path / "nemesis.json") == schedule


@pytest.mark.parametrize("nodes", [3, 5])
def test_windows_are_sequential_and_inside_the_run(nodes: int) -> None:
    opts = NemesisOptions()
    schedule = generate_schedule(3, nodes, 300, opts)
    windows = schedule.windows()
    assert len(windows) == len(schedule.actions) // 2 > 10
    assert all(start < stop for start, stop, _ in windows)
    assert all(stop <= next_start for (_, stop, _), (next_start, _, _) in pairwise(windows))
    assert windows[0][0] >= opts.first_at and windows[-1][1] <= 300 - opts.final_quiet
    assert [a.at for a in schedule.actions] == sorted(a.at for a in schedule.actions)


def test_long_run_uses_every_fault_and_disk_faults_stay_symbolic() -> None:
    schedule = generate_schedule(1, 5, 600)
    assert {a.fault for a in schedule.actions} == set(FAULTS)
    for action in schedule.actions:
        if action.fault.startswith("disk"):
            assert action.args["target"] in ("leader", "follower")
        if action.fault == "partition-halves":
            majority, minority = action.args["groups"]
            assert len(majority) == 3 and len(minority) == 2 and not set(majority) & set(minority)


def test_fault_selection_and_validation() -> None:
    only = generate_schedule(5, 3, 60, NemesisOptions(faults=("pause",)))
    assert {a.fault for a in only.actions} == {"pause"}
    with pytest.raises(ValueError):
        generate_schedule(5, 3, 60, NemesisOptions(faults=("meteor",)))
    with pytest.raises(ValueError):
        generate_schedule(5, 2, 60)


def test_resolve_target() -> None:
    assert resolve_target("leader", 5, 2, [1, 2, 3]) == 2
    assert resolve_target("follower", 0, 2, [1, 2, 3]) == 1
    assert resolve_target("follower", 1, 2, [1, 2, 3]) == 3
    assert resolve_target("leader", 4, None, [1, 2, 3]) == 2  # no leader: pick among all


def test_disk_damage_never_touches_the_header(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"H" * LOG_HEADER_BYTES + b"r" * 20)
    assert truncate_tail(log, 5) == 5 and log.stat().st_size == LOG_HEADER_BYTES + 15
    assert truncate_tail(log, 1000) == 15 and log.read_bytes() == b"H" * LOG_HEADER_BYTES
    assert flip_byte(log, 3, 0x01) is None
    log.write_bytes(b"H" * LOG_HEADER_BYTES + b"\x00" * 4)
    assert flip_byte(log, 100, 0x80) == LOG_HEADER_BYTES
    assert log.read_bytes()[LOG_HEADER_BYTES] == 0x80

"""Crash at every step of FileStorage's multi-step operations, then restart.

Every call that changes the disk (write, pwrite, ftruncate, fsync, fdatasync,
rename, replace, unlink) is a step. For each k, the operation runs until its
k-th step and then "crashes": either before that step or right after it, and
from then on every step fails, so nothing more reaches the disk (not even the
cleanup in exception handlers). The directory is then opened afresh, and it
must load, hold one of the outcomes the operation allows (the old state or the
new one, never a mix, never less than was acknowledged), and accept the next
append without a gap.

This models a process killed at any instant. It does not model a power cut
losing writes that were not yet fsynced; the fsync ordering that guards
against that is argued step by step in ``pyraft/storage/file.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pyraft.core.messages import Entry, HardState
from pyraft.storage import FileStorage
from pyraft.storage.snapshot import SnapshotMeta, encode_snapshot, write_snapshot

STEPS = ("write", "pwrite", "ftruncate", "fsync", "fdatasync", "rename", "replace", "unlink")
SMALL = 400  # bytes per segment: a dozen entries each, so operations cross segment boundaries

Outcome = tuple[int | None, list[Entry]]  # (snapshot index, entries load returns)


class Crash(Exception):
    """The simulated kill."""


@dataclass
class Steps:
    """Counts disk-changing calls; crashes at ``crash_at`` and fails every call after it."""

    crash_at: int | None = None
    after: bool = False
    seen: list[str] = field(default_factory=list)

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in STEPS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            k = len(self.seen)
            self.seen.append(name)
            if self.crash_at is not None and (k > self.crash_at or (k == self.crash_at and not self.after)):
                raise Crash(f"{name} (step {k})")
            result = real(*args, **kwargs)
            if k == self.crash_at:
                raise Crash(f"after {name} (step {k})")
            return result

        return step


def make(start: int, stop: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, data=f"entry {i} of term {term}".encode()) for i in range(start, stop)]


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, (1, 2, 3), config=msgpack.packb({"voters": [1, 2, 3]}))


def state(index: int, term: int = 1) -> bytes:
    return f"state machine up to ({index}, {term})".encode() * 20


def build(path: Path, log: list[Entry], snapshots: tuple[int, ...] = ()) -> None:
    """A data directory with ``log`` appended five entries at a time and snapshots taken along the way."""
    with FileStorage(path, segment_bytes=SMALL) as s:
        s.save_hard_state(HardState(2, None))
        s.load()
        for start in range(0, len(log), 5):
            s.append(log[start : start + 5])
            for index in snapshots:
                if s.last_index >= index > (s.snapshot() or meta(0)).last_index:
                    s.save_snapshot(meta(index), state(index))


def receive_all(s: FileStorage, snap: SnapshotMeta, payload: bytes) -> None:
    """The follower's side of a whole transfer, in three chunks."""
    whole = encode_snapshot(snap, payload)[1]
    third = len(whole) // 3
    for offset in (0, third, 2 * third):
        end = len(whole) if offset == 2 * third else offset + third
        s.receive_chunk(*snap.id, offset, whole[offset:end], end == len(whole))


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable[[Path], None]
    op: Callable[[FileStorage], None]  # runs on a freshly opened storage, load() included
    allowed: Callable[[], Sequence[Outcome]]
    segment_bytes: int = SMALL


OLD: Outcome = (40, make(41, 61))


def with_snapshots(path: Path) -> None:
    build(path, make(1, 61), (20, 40))


def short_log(path: Path) -> None:
    build(path, make(1, 31))


def interrupted_install(path: Path) -> None:
    """What a crash right after the installed snapshot's rename leaves: a log of another history."""
    with_snapshots(path)
    write_snapshot(path, meta(70, term=2), state(70, 2))


def single_file_log(path: Path) -> None:
    """A data directory from before segments (one ``log`` file, written here unsegmented)."""
    with FileStorage(path, segment_bytes=1 << 20) as s:
        s.save_hard_state(HardState(2, None))
        s.load()
        s.append(make(1, 31))
    (path / "log-00000000000000000001").rename(path / "log")


def save_55(s: FileStorage) -> None:
    s.load()
    s.save_snapshot(meta(55), state(55))


def save_25(s: FileStorage) -> None:
    s.load()
    s.save_snapshot(meta(25), state(25))


def install_55(s: FileStorage) -> None:
    s.load()
    receive_all(s, meta(55), state(55))


def install_25(s: FileStorage) -> None:
    s.load()
    receive_all(s, meta(25), state(25))


def install_conflicting_70(s: FileStorage) -> None:
    s.load()
    receive_all(s, meta(70, term=2), state(70, 2))


def truncate_at_43(s: FileStorage) -> None:
    s.load()
    s.append(make(43, 45, term=2))


def append_61_to_63(s: FileStorage) -> None:
    s.load()
    s.append(make(61, 64))


def load(s: FileStorage) -> None:
    s.load()


SCENARIOS = [
    Scenario("save-snapshot-compacting", with_snapshots, save_55, lambda: [OLD, (55, make(56, 61))]),
    Scenario("first-save-snapshot", short_log, save_25, lambda: [(None, make(1, 31)), (25, make(26, 31))]),
    Scenario("install-keeping-the-log", with_snapshots, install_55, lambda: [OLD, (55, make(56, 61))]),
    Scenario("install-discarding-the-log", with_snapshots, install_conflicting_70, lambda: [OLD, (70, [])]),
    Scenario(
        "install-without-a-snapshot", short_log, install_25, lambda: [(None, make(1, 31)), (25, make(26, 31))]
    ),
    Scenario(
        "truncation-across-segments",
        with_snapshots,
        truncate_at_43,
        lambda: [(40, make(41, k)) for k in range(43, 62)] + [(40, make(41, 43) + make(43, 45, term=2))],
    ),
    Scenario(
        "append-rolling-a-segment",
        with_snapshots,
        append_61_to_63,
        lambda: [OLD, (40, make(41, 64))],
        segment_bytes=1,
    ),
    Scenario("load-finishing-an-interrupted-install", interrupted_install, load, lambda: [(70, [])]),
    Scenario("load-migrating-the-single-file-log", single_file_log, load, lambda: [(None, make(1, 31))]),
]


@pytest.fixture(params=SCENARIOS, ids=[s.name for s in SCENARIOS])
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Scenario, Path]]:
    """The scenario and a template directory built once, copied for every crash point."""
    chosen: Scenario = request.param
    template = tmp_path / "template"
    chosen.setup(template)
    yield chosen, template


def run(
    scenario: Scenario, template: Path, where: Path, steps: Steps, monkeypatch: pytest.MonkeyPatch
) -> bool:
    """Run the operation on a copy of the template; True if it crashed."""
    shutil.copytree(template, where)
    s = FileStorage(where, segment_bytes=scenario.segment_bytes)
    crashed = False
    with monkeypatch.context() as m:
        steps.patch(m)
        try:
            scenario.op(s)
        except Crash:
            crashed = True
    s.close()  # what the kernel does for a dead process: its descriptors and its lock go
    return crashed


def check_restart(scenario: Scenario, path: Path, label: str) -> Outcome:
    """Reopen: it loads, holds an allowed outcome, and takes the next append without a gap."""
    with FileStorage(path) as s:
        hs, entries, _ = s.load()
        snap = s.snapshot()
        outcome: Outcome = (snap.last_index if snap else None, entries)
        assert hs == HardState(2, None), label
        assert outcome in scenario.allowed(), f"{label}: {outcome[0]} {[(e.index, e.term) for e in entries]}"
        if snap is not None:
            found = s.read_snapshot()
            assert found is not None and found[1] == state(snap.last_index, snap.last_term), label
        assert s.first_index == (snap.last_index + 1 if snap else 1), label
        after = Entry(s.last_index + 1, 5, data=b"after the restart")
        s.append([after])
    with FileStorage(path) as s:
        assert s.load()[1] == [*entries, after], label
    assert not [p.name for p in path.iterdir() if p.name.endswith((".tmp", ".partial"))], label
    return outcome


@pytest.mark.parametrize("after", [False, True], ids=["before-the-step", "after-the-step"])
def test_crash_at_every_step_loses_nothing_and_corrupts_nothing(
    scenario: tuple[Scenario, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    chosen, template = scenario
    dry = Steps()
    assert not run(chosen, template, tmp_path / "dry", dry, monkeypatch)
    assert dry.seen, "the operation changes nothing on disk?"
    outcomes = {repr(check_restart(chosen, tmp_path / "dry", "no crash"))}
    for k, name in enumerate(dry.seen):
        where = tmp_path / f"crash-{k}"
        assert run(chosen, template, where, Steps(k, after), monkeypatch)
        outcomes.add(
            repr(check_restart(chosen, where, f"crash {'after' if after else 'before'} {name} #{k}"))
        )
    if chosen.name.startswith(("save", "install", "append", "first")):
        assert len(outcomes) >= 2  # both the old and the new state really occur

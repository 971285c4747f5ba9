"""The Storage contract, checked against every implementation.

Each test runs on MemoryStorage and on FileStorage; ``reopen`` simulates a
restart (a crash of the in-memory twin, a close and reopen of the directory),
so whatever a test reads after it is what really survived. The snapshot tests
damage snapshots through each backend's own means (bytes of the file, or the
twin's ``damage_snapshot``) and expect the same fallback from both.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyraft.core.messages import Entry, EntryKind, HardState
from pyraft.storage import FileStorage, MemoryStorage, Storage, StorageClosed, StorageCorrupt
from pyraft.storage.snapshot import SnapshotMeta, encode_snapshot, list_snapshots, snapshot_path

Reopen = Callable[[Storage], Storage]


def make(start: int, stop: int, term: int = 1) -> list[Entry]:
    """Entries start..stop-1 in ``term`` with data that names them."""
    return [Entry(i, term, data=f"e{i}t{term}".encode()) for i in range(start, stop)]


@pytest.fixture(params=["memory", "file"])
def kind(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def opened(kind: str, tmp_path: Path) -> Iterator[tuple[Storage, Reopen]]:
    """A fresh storage (with term 1 saved, as a real node would first) and a restart function."""
    live: list[Storage] = []

    def reopen(old: Storage) -> Storage:
        if isinstance(old, MemoryStorage):
            new: Storage = old.crash()
        else:
            old.close()
            new = FileStorage(tmp_path / "data")
        live.append(new)
        return new

    first: Storage = MemoryStorage() if kind == "memory" else FileStorage(tmp_path / "data")
    live.append(first)
    first.save_hard_state(HardState(1, None))
    yield first, reopen
    for s in live:
        s.close()


def test_fresh_storage_is_empty(kind: str, tmp_path: Path) -> None:
    s: Storage = MemoryStorage() if kind == "memory" else FileStorage(tmp_path / "fresh")
    hs, entries, report = s.load()
    assert (hs, entries) == (HardState(), [])
    assert report.entries_loaded == 0 and not report.repaired
    s.close()


def test_append_then_load_round_trips(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    batch = [
        Entry(1, 1, EntryKind.NOOP),
        Entry(2, 1, data=b""),
        Entry(3, 1, data=bytes(range(256))),
        Entry(4, 2, data=b"x" * 100_000),
    ]
    s.append(batch[:2])
    s.append(batch[2:])
    hs, entries, report = reopen(s).load()
    assert hs == HardState(1, None)
    assert entries == batch
    assert all(type(e.kind) is EntryKind for e in entries)
    assert report.entries_loaded == 4 and not report.repaired


def test_conflicting_append_replaces_the_suffix(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 6, term=1))
    s.append(make(3, 5, term=2))
    assert s.load()[1] == make(1, 3, term=1) + make(3, 5, term=2)
    s = reopen(s)
    assert s.load()[1] == make(1, 3, term=1) + make(3, 5, term=2)
    s.append(make(5, 7, term=2))  # appending after a truncation continues from the new end
    assert reopen(s).load()[1] == make(1, 3, term=1) + make(3, 7, term=2)


def test_append_at_index_one_replaces_everything(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 4, term=1))
    s.append(make(1, 2, term=3))
    assert reopen(s).load()[1] == make(1, 2, term=3)


def test_empty_append_is_a_no_op(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    s.append(make(1, 3))
    s.append([])
    assert s.load()[1] == make(1, 3)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(make(5, 6), id="gap-after-last"),
        pytest.param(make(0, 2), id="index-zero"),
        pytest.param([Entry(2, 1), Entry(4, 1)], id="not-contiguous-and-would-truncate"),
        pytest.param([Entry(4, 1), Entry(4, 1)], id="repeated-index"),
        pytest.param([Entry(4, 2), Entry(5, 1)], id="term-goes-down-in-batch"),
        pytest.param([Entry(3, 1)], id="term-below-predecessor"),
        pytest.param([Entry(4, 2, data="text")], id="str-data"),  # type: ignore[arg-type]
        pytest.param([Entry(4, 2, kind=7)], id="unknown-kind"),  # type: ignore[arg-type]
    ],
)
def test_invalid_append_is_rejected_and_changes_nothing(
    opened: tuple[Storage, Reopen], bad: list[Entry]
) -> None:
    s, reopen = opened
    before = make(1, 2, term=1) + make(2, 4, term=2)
    s.append(before)
    with pytest.raises(ValueError):
        s.append(bad)
    assert s.load()[1] == before
    s = reopen(s)
    assert s.load()[1] == before
    s.append(make(4, 5, term=2))  # still usable
    assert s.load()[1] == [*before, *make(4, 5, term=2)]


def test_predecessor_term_is_checked_inside_the_log(opened: tuple[Storage, Reopen]) -> None:
    """A truncating append compares with the term of the entry it keeps, not the last one."""
    s, reopen = opened
    s.append(make(1, 3, term=1) + make(3, 5, term=3))
    s = reopen(s)
    s.load()
    with pytest.raises(ValueError, match="term"):
        s.append(make(4, 5, term=2))  # index 3 has term 3
    s.append(make(3, 4, term=2))  # index 2 has term 1: fine, replaces 3..4
    assert s.load()[1] == make(1, 3, term=1) + make(3, 4, term=2)


def test_hard_state_round_trips(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.save_hard_state(HardState(1, 3))
    s = reopen(s)
    assert s.load()[0] == HardState(1, 3)
    s.save_hard_state(HardState(1, 3))  # saving the same state again is fine
    s.save_hard_state(HardState(7, None))
    s.save_hard_state(HardState(7, 2))
    assert reopen(s).load()[0] == HardState(7, 2)


@pytest.mark.parametrize(
    "bad",
    [HardState(0, None), HardState(2, 1), HardState(2, None), HardState(-1, None)],
    ids=["term-back", "vote-changes", "vote-withdrawn", "negative-term"],
)
def test_hard_state_that_breaks_a_promise_is_rejected(opened: tuple[Storage, Reopen], bad: HardState) -> None:
    s, reopen = opened
    s.save_hard_state(HardState(2, 3))
    with pytest.raises(ValueError):
        s.save_hard_state(bad)
    assert reopen(s).load()[0] == HardState(2, 3)


def test_closed_storage_refuses_use(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageClosed):
        s.load()
    with pytest.raises(StorageClosed):
        s.append(make(1, 2))
    with pytest.raises(StorageClosed):
        s.save_hard_state(HardState(3, None))


def test_both_satisfy_the_protocol(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    assert isinstance(s, Storage)


# --------------------------------------------------------------------------- snapshots and compaction


def meta(index: int, term: int = 1, config: bytes = b"") -> SnapshotMeta:
    return SnapshotMeta(index, term, (1, 2, 3), config=config)


def state(index: int) -> bytes:
    """A state machine payload that names the index it was captured at."""
    return f"state machine up to {index}".encode()


def damage(s: Storage, snap: SnapshotMeta, mutate: Callable[[bytes], bytes]) -> None:
    """Change a stored snapshot's bytes the way a bad disk would (before the next load)."""
    if isinstance(s, MemoryStorage):
        s.damage_snapshot(snap.last_index, snap.last_term, mutate(s.durable_snapshots()[snap.id]))
    else:
        assert isinstance(s, FileStorage)
        path = snapshot_path(s.data_dir, snap.last_index, snap.last_term)
        path.write_bytes(mutate(path.read_bytes()))


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x40])


def test_fresh_storage_has_no_snapshot(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    assert s.snapshot() is None and s.read_snapshot() is None
    assert (s.first_index, s.last_index) == (1, 0)
    assert s.read_snapshot_chunk(0, 0, 0, 10) is None


def test_saved_snapshot_replaces_the_prefix_after_restart(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 11))
    saved = s.save_snapshot(meta(6, config=b"voters 1 2 3"), state(6))
    assert (saved.size, saved.crc32, saved.config) == (len(state(6)), zlib.crc32(state(6)), b"voters 1 2 3")
    assert s.snapshot() == saved and s.read_snapshot() == (saved, state(6))
    assert (s.first_index, s.last_index) == (7, 10)
    s = reopen(s)
    hs, entries, report = s.load()
    assert (hs, entries) == (HardState(1, None), make(7, 11))
    assert report.entries_loaded == 4 and not report.repaired and report.notes == ()
    assert s.snapshot() == saved
    assert s.read_snapshot() == (saved, state(6))
    assert s.read_snapshot() == (saved, state(6))  # as often as asked
    assert (s.first_index, s.last_index) == (7, 10)


def test_snapshot_of_the_whole_log_then_append(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 5))
    s.save_snapshot(meta(4), state(4))
    s = reopen(s)
    assert s.load()[1] == []
    assert (s.first_index, s.last_index) == (5, 4)
    s.append(make(5, 7, term=2))
    assert reopen(s).load()[1] == make(5, 7, term=2)


@pytest.mark.parametrize(
    ("index", "term", "match"),
    [(11, 1, "outside"), (3, 1, "outside"), (8, 2, "term 1 there"), (0, 0, "outside")],
    ids=["beyond-the-log", "behind-the-snapshot", "wrong-term", "index-zero-behind"],
)
def test_invalid_snapshot_is_refused_and_changes_nothing(
    opened: tuple[Storage, Reopen], index: int, term: int, match: str
) -> None:
    s, reopen = opened
    s.append(make(1, 11))
    first = s.save_snapshot(meta(5), state(5))
    with pytest.raises(ValueError, match=match):
        s.save_snapshot(meta(index, term), state(index))
    with pytest.raises(ValueError, match="size"):
        s.save_snapshot(SnapshotMeta(8, 1, (1,), size=3), b"four")
    assert s.snapshot() == first
    s = reopen(s)
    assert s.load()[1] == make(6, 11) and s.snapshot() == first


def test_a_prepared_snapshot_is_not_in_effect_until_saved(opened: tuple[Storage, Reopen]) -> None:
    """prepare_snapshot (the slow half, run beside appends) changes nothing anyone can read."""
    s, reopen = opened
    s.append(make(1, 11))
    prepared = s.prepare_snapshot(meta(6), state(6))
    assert (prepared.meta.size, prepared.meta.crc32) == (len(state(6)), zlib.crc32(state(6)))
    s.append(make(11, 13))  # the log goes on while the snapshot is being written
    assert s.snapshot() is None and (s.first_index, s.last_index) == (1, 12)
    saved = s.save_prepared_snapshot(prepared)
    assert saved == prepared.meta and s.read_snapshot() == (saved, state(6))
    s = reopen(s)
    assert s.load()[1] == make(7, 13) and s.snapshot() == saved


def test_a_prepared_snapshot_at_a_point_passed_meanwhile_is_refused(
    opened: tuple[Storage, Reopen], tmp_path: Path
) -> None:
    """An InstallSnapshot or a newer snapshot can overtake one being written: it is refused
    as save_snapshot would refuse it, and its staged bytes are dropped."""
    s, reopen = opened
    s.append(make(1, 11))
    prepared = s.prepare_snapshot(meta(5), state(5))
    newer = s.save_snapshot(meta(8), state(8))
    with pytest.raises(ValueError, match="outside"):
        s.save_prepared_snapshot(prepared)
    assert s.snapshot() == newer
    assert list((tmp_path / "data").glob(".snapshot-*")) == []  # no staged file left (file storage)
    s = reopen(s)
    assert s.snapshot() == newer and s.load()[1] == make(9, 11)


def test_snapshot_at_index_zero_before_any_entry(opened: tuple[Storage, Reopen]) -> None:
    """A bootstrap snapshot (KRaft's checkpoint 0-0) only carries the initial quorum configuration."""
    s, reopen = opened
    boot = s.save_snapshot(meta(0, 0, config=b"initial quorum"), b"")
    s.append(make(1, 3))
    s = reopen(s)
    assert s.load()[1] == make(1, 3) and s.snapshot() == boot


def test_append_at_or_below_the_snapshot_is_refused(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 11))
    s.save_snapshot(meta(8), state(8))
    for bad in (make(8, 9), make(1, 3), make(5, 12, term=2)):
        with pytest.raises(ValueError, match="snapshot"):
            s.append(bad)
    s.append(make(9, 10, term=2))  # the first index after the snapshot may be replaced
    s = reopen(s)
    assert s.load()[1] == make(9, 10, term=2)


def test_compaction_lags_one_snapshot(opened: tuple[Storage, Reopen]) -> None:
    """The log keeps everything after the previous snapshot, which is kept too: the fallback."""
    s, reopen = opened
    s.append(make(1, 41))
    metas = [s.save_snapshot(meta(n), state(n)) for n in (10, 20, 30)]
    if isinstance(s, MemoryStorage):
        assert set(s.durable_snapshots()) == {(20, 1), (30, 1)}
        assert s.durable()[1] == tuple(make(21, 41))
    else:
        assert isinstance(s, FileStorage)
        assert [i for i, _, _ in list_snapshots(s.data_dir)] == [20, 30]
    assert s.read_snapshot_chunk(10, 1, 0, 10) is None  # the oldest is gone
    assert s.read_snapshot_chunk(20, 1, 0, 10) is not None  # the previous one can still be served
    s = reopen(s)
    damage(s, metas[2], flip_last_byte)
    _, entries, report = s.load()
    assert s.snapshot() == metas[1] and s.read_snapshot() == (metas[1], state(20))
    assert entries == make(21, 41)
    assert any("skipped snapshot" in note and "CRC" in note for note in report.notes)


@pytest.mark.parametrize(
    "mutate",
    [flip_last_byte, lambda b: b[: len(b) // 2], lambda b: b[:10], lambda b: b"", lambda b: b + b"\0"],
    ids=["flipped-payload-byte", "truncated-half", "truncated-in-header", "empty", "extra-byte"],
)
def test_damaged_newest_snapshot_falls_back_to_the_previous(
    opened: tuple[Storage, Reopen], mutate: Callable[[bytes], bytes]
) -> None:
    s, reopen = opened
    s.append(make(1, 21))
    old = s.save_snapshot(meta(10), state(10))
    new = s.save_snapshot(meta(15), state(15))
    s.append(make(21, 23, term=2))
    s = reopen(s)
    damage(s, new, mutate)
    _, entries, report = s.load()
    assert s.snapshot() == old
    assert entries == make(11, 21) + make(21, 23, term=2)
    assert report.notes and "skipped snapshot" in report.notes[0]
    # a new snapshot replaces the damaged one; compaction keeps lagging behind the one in use
    again = s.save_snapshot(meta(18), state(18))
    s = reopen(s)
    assert s.load()[1] == make(19, 21) + make(21, 23, term=2)
    assert s.snapshot() == again
    assert s.read_snapshot_chunk(*new.id, 0, 10) is None


def test_damaged_snapshot_with_nothing_to_replace_it_is_an_error(opened: tuple[Storage, Reopen]) -> None:
    """Restarting with less than was durable could undo what this node acknowledged: refuse.

    After an install discarded the log, the installed snapshot is all there is."""
    s, reopen = opened
    s.append(make(1, 5))
    only = s.save_snapshot(meta(4), state(4))
    s.append(make(5, 6))
    s.save_snapshot(meta(5), state(5))  # drops nothing: entries after snapshot 4 are its fallback
    s = reopen(s)
    damage(s, only, flip_last_byte)
    assert s.load()[1] == []  # only the fallback was damaged: nothing is missing
    leader = MemoryStorage(HardState(1, None), make(1, 11))
    installed = leader.save_snapshot(meta(10), state(10))
    transfer(leader, s)  # the whole log conflicts or ends below: discarded
    assert s.snapshot() == installed and s.load()[1] == []
    s = reopen(s)
    damage(s, installed, flip_last_byte)
    with pytest.raises(StorageCorrupt, match=r"entries 1\.\.10 are missing .*snapshot.*CRC mismatch"):
        s.load()


def test_resaving_at_the_same_index_replaces_the_snapshot(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 6))
    s.save_snapshot(meta(5, config=b"old"), b"a")
    newer = s.save_snapshot(meta(5, config=b"new"), b"b")
    s = reopen(s)
    assert s.load()[1] == [] and s.read_snapshot() == (newer, b"b")


# --------------------------------------------------------------------------- InstallSnapshot


def leader_with_snapshot(
    index: int = 20, term: int = 2, size: int = 5000
) -> tuple[MemoryStorage, SnapshotMeta]:
    leader = MemoryStorage(HardState(term, None), make(1, 11) + make(11, 31, term=term))
    payload = random.Random(index).randbytes(size)
    return leader, leader.save_snapshot(meta(index, term, config=b"leader's quorum"), payload)


def transfer(leader: Storage, follower: Storage, chunk: int = 1000) -> SnapshotMeta:
    """Stream the leader's snapshot to the follower in order, as a well-behaved leader would."""
    snap = leader.snapshot()
    assert snap is not None
    offset = 0
    for _ in range(10_000):
        found = leader.read_snapshot_chunk(snap.last_index, snap.last_term, offset, chunk)
        assert found is not None
        data, done = found
        offset, installed = follower.receive_chunk(snap.last_index, snap.last_term, offset, data, done)
        if installed is not None:
            return installed
    raise AssertionError("transfer did not finish")


@pytest.mark.parametrize("seed", range(8))
def test_transfer_survives_loss_duplication_and_reordering(opened: tuple[Storage, Reopen], seed: int) -> None:
    """A leader that only ever acts on the follower's answers gets the snapshot across a bad network."""
    leader, snap = leader_with_snapshot()
    follower, reopen = opened
    rng = random.Random(seed)
    chunk = rng.choice([7, 100, 999])
    in_flight: list[tuple[int, bytes, bool]] = []  # the network holds a few chunks at a time
    wanted, installed = 0, None
    for _ in range(100_000):
        found = leader.read_snapshot_chunk(*snap.id, wanted, chunk)
        assert found is not None
        in_flight.append((wanted, *found))
        if rng.random() < 0.3:
            in_flight.append(in_flight[-1])  # duplicated
        rng.shuffle(in_flight)  # reordered
        del in_flight[:-6]
        offset, data, done = in_flight.pop()
        if rng.random() < 0.2:
            continue  # lost
        answer, installed = follower.receive_chunk(*snap.id, offset, data, done)
        if installed is not None:
            break
        wanted = answer
    assert installed == snap
    assert follower.snapshot() == snap and follower.read_snapshot() == leader.read_snapshot()
    for offset, data, done in in_flight:  # stragglers of a finished transfer change nothing
        follower.receive_chunk(*snap.id, offset, data, done)
    follower = reopen(follower)
    assert follower.load()[1] == [] and follower.read_snapshot() == leader.read_snapshot()


def test_install_keeps_the_log_after_a_matching_entry(opened: tuple[Storage, Reopen]) -> None:
    leader, snap = leader_with_snapshot(20, 2)
    follower, reopen = opened
    follower.save_hard_state(HardState(2, None))
    follower.append(make(1, 11) + make(11, 26, term=2))
    assert transfer(leader, follower) == snap
    assert follower.snapshot() == snap
    assert (follower.first_index, follower.last_index) == (21, 25)
    assert follower.load()[1] == make(21, 26, term=2)
    follower.append(make(26, 28, term=3))
    follower = reopen(follower)
    assert follower.load()[1] == make(21, 26, term=2) + make(26, 28, term=3)
    assert follower.read_snapshot() == leader.read_snapshot()


@pytest.mark.parametrize(
    "log",
    [make(1, 11) + make(11, 26, term=1), make(1, 11), []],
    ids=["other-term-at-the-snapshot", "ends-below-the-snapshot", "empty"],
)
def test_install_discards_a_log_that_does_not_match(opened: tuple[Storage, Reopen], log: list[Entry]) -> None:
    leader, snap = leader_with_snapshot(20, 2)
    follower, reopen = opened
    if log:
        follower.append(log)
    transfer(leader, follower)
    assert follower.load()[1] == []
    assert (follower.first_index, follower.last_index) == (21, 20)
    with pytest.raises(ValueError):
        follower.append(make(22, 23, term=2))  # a gap after the snapshot
    follower.append(make(21, 23, term=2))  # right after the install
    follower = reopen(follower)
    assert follower.load()[1] == make(21, 23, term=2)
    assert follower.snapshot() == snap


def test_install_of_an_older_snapshot_is_a_no_op(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 31))
    current = s.save_snapshot(meta(25), state(25))
    leader, older = leader_with_snapshot(20, 1)
    assert transfer(leader, s) == older
    assert s.snapshot() == current and s.load()[1] == make(26, 31)
    leader, same = leader_with_snapshot(25, 1)
    assert transfer(leader, s) == same
    assert s.snapshot() == current and reopen(s).load()[1] == make(26, 31)


def test_chunks_that_do_not_fit_change_nothing(opened: tuple[Storage, Reopen]) -> None:
    leader, snap = leader_with_snapshot()
    s, _ = opened
    whole = b"".join(chunk_of(leader, snap, offset) for offset in range(0, snap.file_size, 100))
    assert s.receive_chunk(*snap.id, 100, whole[100:200], False) == (0, None)  # nothing in progress
    assert s.receive_chunk(*snap.id, 0, whole[:100], False) == (100, None)
    assert s.receive_chunk(*snap.id, 300, whole[300:400], False) == (100, None)  # a gap
    assert s.receive_chunk(*snap.id, 0, whole[:100], False) == (100, None)  # a repeat
    assert s.receive_chunk(21, 2, 100, whole[100:200], False) == (0, None)  # another snapshot, mid-way
    assert s.receive_chunk(*snap.id, 100, whole[100:], True) == (snap.file_size, snap)


def test_offset_zero_of_another_snapshot_restarts_the_transfer(opened: tuple[Storage, Reopen]) -> None:
    old_leader, old = leader_with_snapshot(20, 2)
    new_leader, new = leader_with_snapshot(25, 2)
    s, _ = opened
    s.receive_chunk(*old.id, 0, chunk_of(old_leader, old, 0), False)
    assert s.receive_chunk(*new.id, 0, chunk_of(new_leader, new, 0), False) == (100, None)
    assert s.receive_chunk(*old.id, 100, chunk_of(old_leader, old, 100), False) == (0, None)  # abandoned
    assert transfer_from(new_leader, new, s, 100) == new
    assert s.snapshot() == new


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda whole: whole[:-1],  # done too early
        lambda whole: whole[:-1] + bytes([whole[-1] ^ 1]),  # payload damaged in flight
        lambda whole: b"NOTASNAP" + whole[8:],  # not a snapshot at all
        lambda whole: whole + b"x",  # more than the header announces
    ],
    ids=["short", "bad-payload", "bad-magic", "too-long"],
)
def test_invalid_bytes_are_dropped_with_a_warning(
    opened: tuple[Storage, Reopen], caplog: pytest.LogCaptureFixture, corrupt: Callable[[bytes], bytes]
) -> None:
    leader, snap = leader_with_snapshot()
    s, reopen = opened
    s.append(make(1, 5))
    whole = corrupt(b"".join(chunk_of(leader, snap, o) for o in range(0, snap.file_size, 100)))
    with caplog.at_level(logging.WARNING, logger="pyraft.storage"):
        answers = [
            s.receive_chunk(*snap.id, 0, whole[:50], False),
            s.receive_chunk(*snap.id, 50, whole[50:], True),
        ]
    assert (0, None) in answers
    assert "discarded InstallSnapshot transfer" in caplog.text
    assert s.snapshot() is None
    if isinstance(s, FileStorage):
        assert not [p for p in s.data_dir.iterdir() if "snapshot" in p.name]
    assert transfer(leader, s) == snap  # the next attempt starts over and succeeds
    assert reopen(s).load()[1] == []


def test_a_crash_mid_transfer_starts_it_over(opened: tuple[Storage, Reopen]) -> None:
    leader, snap = leader_with_snapshot()
    s, reopen = opened
    s.append(make(1, 5))
    assert s.receive_chunk(*snap.id, 0, chunk_of(leader, snap, 0), False) == (100, None)
    s = reopen(s)
    assert s.load()[1] == make(1, 5) and s.snapshot() is None
    if isinstance(s, FileStorage):
        assert not [p for p in s.data_dir.iterdir() if "snapshot" in p.name]  # the partial file is gone
    assert s.receive_chunk(*snap.id, 100, chunk_of(leader, snap, 100), False) == (0, None)
    assert transfer(leader, s) == snap


def test_read_snapshot_chunk_covers_the_whole_file(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    s.append(make(1, 3))
    snap = s.save_snapshot(meta(2), b"payload")
    assert s.read_snapshot_chunk(2, 1, 0, 10**6) == (encode_snapshot(meta(2), b"payload")[1], True)
    assert s.read_snapshot_chunk(2, 1, snap.file_size - 3, 2) == (b"oa", False)
    assert s.read_snapshot_chunk(2, 1, snap.file_size - 2, 5) == (b"ad", True)
    assert s.read_snapshot_chunk(2, 1, snap.file_size + 5, 5) == (b"", True)
    assert s.read_snapshot_chunk(2, 2, 0, 5) is None
    with pytest.raises(ValueError):
        s.read_snapshot_chunk(2, 1, -1, 5)


def chunk_of(leader: Storage, snap: SnapshotMeta, offset: int, size: int = 100) -> bytes:
    found = leader.read_snapshot_chunk(*snap.id, offset, size)
    assert found is not None
    return found[0]


def transfer_from(leader: Storage, snap: SnapshotMeta, follower: Storage, offset: int) -> SnapshotMeta | None:
    """Continue a transfer in order from ``offset``; the installed meta."""
    while True:
        found = leader.read_snapshot_chunk(*snap.id, offset, 100)
        assert found is not None
        offset, installed = follower.receive_chunk(*snap.id, offset, *found)
        if installed is not None or offset == 0:
            return installed

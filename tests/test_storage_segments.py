"""FileStorage's segmented log and snapshot files on a real directory.

Segments, the migration of the old single-file log, what load() does with
every arrangement of files a crash or a bad disk can leave, and which files
compaction removes (whole, never rewritten).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from pyraft.core.messages import Entry, HardState
from pyraft.storage import FileStorage, RecoveryReport, StorageCorrupt, StorageError
from pyraft.storage.file import _ChainScan, last_segment, list_segments, scan_records, segment_path
from pyraft.storage.snapshot import SnapshotMeta, list_snapshots, snapshot_path, write_snapshot

HEADER = b"PYRAFTLG" + struct.pack("<I", 1)
SMALL = 600  # bytes per segment in these tests: a few entries each


def make(start: int, stop: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, data=f"entry {i} of term {term}".encode()) for i in range(start, stop)]


def record(entry: Entry) -> bytes:
    payload: bytes = msgpack.packb([entry.index, entry.term, int(entry.kind), entry.data], use_bin_type=True)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def opened(path: Path, segment_bytes: int = SMALL) -> FileStorage:
    s = FileStorage(path, segment_bytes=segment_bytes)
    s.save_hard_state(HardState(1, None))
    s.load()
    return s


def fill(path: Path, entries: list[Entry], segment_bytes: int = SMALL) -> None:
    """Store entries one append each, so segments roll at the size limit."""
    with opened(path, segment_bytes) as s:
        for e in entries:
            s.append([e])


def reload(path: Path, segment_bytes: int = SMALL) -> tuple[HardState, list[Entry], RecoveryReport]:
    with FileStorage(path, segment_bytes=segment_bytes) as s:
        return s.load()


def firsts(path: Path) -> list[int]:
    return [first for first, _ in list_segments(path)]


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, (1,))


# --------------------------------------------------------------------------- segments


def test_segments_roll_at_the_size_limit(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    for (first, path), (after, _) in itertools.pairwise(segments):
        assert path.name == f"log-{first:020d}"
        assert SMALL <= path.stat().st_size < SMALL + 100  # full, and one small record past the limit at most
        data = path.read_bytes()
        assert data.startswith(HEADER + record(make(first, first + 1)[0]))
        assert data.endswith(record(make(after - 1, after)[0]))  # each continues where the one before ended
    assert reload(tmp_path)[1] == make(1, 101)


def test_a_batch_is_never_split_across_segments(tmp_path: Path) -> None:
    """One append is one write and one sync, even when it overflows the segment."""
    with opened(tmp_path) as s:
        s.append(make(1, 3))
        s.append(make(3, 60))  # far above SMALL, still in the first segment
        s.append(make(60, 61))
    assert firsts(tmp_path) == [1, 60]
    assert reload(tmp_path)[1] == make(1, 61)


def test_truncation_crosses_segments(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    before = firsts(tmp_path)
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.load()
        s.append(make(before[1] + 2, before[1] + 5, term=2))
    assert firsts(tmp_path) == before[:2]  # later segments deleted, the one holding the cut truncated
    expected = make(1, before[1] + 2) + make(before[1] + 2, before[1] + 5, term=2)
    assert reload(tmp_path)[1] == expected


def test_truncation_at_a_segment_start_keeps_that_segment_empty(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    before = firsts(tmp_path)
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.load()
        s.append(make(before[2], before[2] + 1, term=3))
    assert firsts(tmp_path) == before[:3]
    assert reload(tmp_path)[1] == make(1, before[2]) + make(before[2], before[2] + 1, term=3)
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:  # and again right at the start of the first
        s.load()
        s.append(make(1, 2, term=4))
    assert firsts(tmp_path) == [1]
    assert reload(tmp_path)[1] == make(1, 2, term=4)


def test_torn_tail_of_the_last_segment_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, make(1, 101))
    last = last_segment(tmp_path)
    assert last is not None
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(size - 3)
    with caplog.at_level(logging.WARNING, logger="pyraft.storage"):
        _, entries, report = reload(tmp_path)
    assert entries == make(1, 100)
    torn = len(record(make(100, 101)[0])) - 3
    assert report.truncated_bytes == torn
    assert report.first_bad_offset == last.stat().st_size == size - 3 - torn
    assert report.reason is not None and "torn" in report.reason
    assert last.name in caplog.text


def test_damage_in_a_segment_that_is_not_the_last_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    (_, second), *_ = list_segments(tmp_path)[1:]
    data = bytearray(second.read_bytes())
    data[len(HEADER) + 12] ^= 0x01
    second.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="not the last"):
        s.load()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing repaired, nothing lost


def test_a_torn_middle_segment_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    (_, second), *_ = list_segments(tmp_path)[1:]
    with open(second, "r+b") as f:
        f.truncate(second.stat().st_size - 1)
    with (
        FileStorage(tmp_path) as s,
        pytest.raises(StorageCorrupt, match=r"torn record payload.*not the last"),
    ):
        s.load()


def test_a_missing_segment_is_an_error_that_names_the_missing_entries(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    segments = list_segments(tmp_path)
    segments[1][1].unlink()
    missing = f"entries {segments[1][0]}..{segments[2][0] - 1} are missing"
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match=missing):
        s.load()


def test_a_log_that_starts_late_without_a_snapshot_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    _, path = list_segments(tmp_path)[0]
    path.unlink()
    after = firsts(tmp_path)[0]
    with (
        FileStorage(tmp_path) as s,
        pytest.raises(StorageCorrupt, match=f"entries 1..{after - 1} are missing"),
    ):
        s.load()


def test_a_snapshot_the_log_does_not_reach_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    segments = list_segments(tmp_path)
    write_snapshot(tmp_path, meta(segments[1][0] - 2), b"state")
    segments[0][1].unlink()
    segments[1][1].unlink()
    gap = f"entries {segments[1][0] - 1}..{segments[2][0] - 1} are missing"
    with (
        FileStorage(tmp_path) as s,
        pytest.raises(StorageCorrupt, match=f"ends at {segments[1][0] - 2}.*{gap}"),
    ):
        s.load()


def test_segments_below_the_snapshot_are_not_even_read(tmp_path: Path) -> None:
    """They are only the fallback's concern; a restart with a good snapshot does not pay for them."""
    fill(tmp_path, make(1, 101))
    segments = list_segments(tmp_path)
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.load()
        s.save_snapshot(meta(segments[2][0] + 1), b"state")
    segments[0][1].write_bytes(b"garbage that is not a log")
    _, entries, report = reload(tmp_path)
    assert entries == make(segments[2][0] + 2, 101) and not report.repaired


def two_snapshots(path: Path) -> Path:
    """Snapshots at 20 and 50 as a node leaves them; returns the segment holding 41..60 (not the last).

    Load with the snapshot at 50 reads from that segment on, but needs only
    entry 50 and later of it: 41..49 are the fallback's concern."""
    with opened(path, segment_bytes=1 << 20) as s:
        s.append(make(1, 41))
        s.save_snapshot(meta(20), b"at 20")
        s.append(make(41, 61))
        s.save_snapshot(meta(50), b"at 50")
    assert firsts(path) == [1, 41, 61]
    return segment_path(path, 41)


def record_offset(segment: Path, index: int) -> int:
    """Where the record of ``index`` starts in a segment of ``make`` entries from its first index."""
    first = int(segment.name[4:])
    return len(HEADER) + sum(len(record(e)) for e in make(first, index))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_entries_below_the_snapshot_are_stepped_over_until_the_fallback_needs_them(tmp_path: Path) -> None:
    """Damage below the chosen snapshot is not even decoded; falling back to the older snapshot finds it."""
    segment = two_snapshots(tmp_path)
    flip(segment, record_offset(segment, 45) + 12)  # inside entry 45's payload: its CRC no longer matches
    _, entries, report = reload(tmp_path, segment_bytes=1 << 20)
    assert entries == make(51, 61) and not report.repaired
    with FileStorage(tmp_path) as s:
        s.load()
        assert (s.first_index, s.last_index) == (51, 60)
        snapshot = s.read_snapshot()
        assert snapshot is not None and snapshot[0].id == (50, 1) and snapshot[1] == b"at 50"
    flip(snapshot_path(tmp_path, 50, 1), 60)  # now the fallback is taken: 21..49 are read in full
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match=r"checksum mismatch.*not the last"):
        s.load()


def test_a_damaged_newest_snapshot_falls_back_and_the_log_still_connects(tmp_path: Path) -> None:
    two_snapshots(tmp_path)
    flip(snapshot_path(tmp_path, 50, 1), 60)
    _, entries, report = reload(tmp_path, segment_bytes=1 << 20)
    assert entries == make(21, 61)
    assert report.notes and "skipped snapshot" in report.notes[0]
    with FileStorage(tmp_path) as s:
        s.load()
        snapshot = s.read_snapshot()
        assert snapshot is not None and snapshot[0].id == (20, 1) and snapshot[1] == b"at 20"


def test_stepping_over_records_finds_what_a_full_scan_finds() -> None:
    entries = make(7, 27, term=2) + make(27, 31, term=3)
    buf = HEADER + b"".join(record(e) for e in entries)
    full = scan_records(buf, 7, 1)
    assert full.entries == entries and full.reason is None
    for decode_from in range(0, 34):
        scan = scan_records(buf, 7, 1, decode_from=decode_from)
        assert (scan.offsets, scan.end, scan.last_term, scan.reason) == (
            full.offsets,
            full.end,
            full.last_term,
            full.reason,
        )
        kept = decode_from - 7 if 7 <= decode_from <= 30 else 0  # past the end: scanned in full
        assert scan.entries == entries[kept:]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_scan_made_for_a_snapshot_load_does_not_choose_is_closed_and_says_nothing(tmp_path: Path) -> None:
    """Load scans the log for the newest snapshot while that snapshot is being checked (in a thread).

    When the newest is damaged, that scan's files are closed and its errors
    dropped, and the log is read again from the snapshot load falls back to."""
    segment = two_snapshots(tmp_path)
    flip(snapshot_path(tmp_path, 50, 1), 60)
    before = open_fds()
    _, entries, _ = reload(tmp_path, segment_bytes=1 << 20)
    assert entries == make(21, 61) and open_fds() == before
    scan = _ChainScan(list_segments(tmp_path), 50, fsync=False)
    assert open_fds() != before
    scan.discard()
    assert open_fds() == before
    flip(segment, record_offset(segment, 55) + 12)  # damage after 50: both scans meet it
    scan = _ChainScan(list_segments(tmp_path), 50, fsync=False)  # kept, not raised
    assert open_fds() == before  # a failed scan closed what it opened
    with pytest.raises(StorageCorrupt, match="not the last"):
        scan.result()
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="not the last"):
        s.load()
    assert open_fds() == before


@pytest.mark.parametrize("delta", [1, -1, 1 << 30])
def test_a_bad_length_below_the_snapshot_is_found_as_without_the_shortcut(tmp_path: Path, delta: int) -> None:
    """Stepping over records follows length fields; one that leads astray sends load to a full scan."""
    segment = two_snapshots(tmp_path)
    at = record_offset(segment, 45)
    data = bytearray(segment.read_bytes())
    (length,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at, length + delta)
    segment.write_bytes(bytes(data))
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match=rf"offset {at}.*not the last"):
        s.load()


def test_damage_below_the_snapshot_in_the_last_segment_keeps_the_log_after_it(tmp_path: Path) -> None:
    """A crash between writing a snapshot and rolling the log leaves the snapshot inside the last segment.

    The entries after the snapshot check out (CRC, index, and the term at the
    snapshot's own index), so damage below it no longer cuts them away."""
    fill(tmp_path, make(1, 31), segment_bytes=1 << 20)
    write_snapshot(tmp_path, meta(20), b"state at 20")
    segment = segment_path(tmp_path, 1)
    flip(segment, record_offset(segment, 10) + 12)
    _, entries, report = reload(tmp_path)
    assert entries == make(21, 31) and not report.repaired and not report.notes
    with open(segment, "r+b") as f:  # and a torn tail after the snapshot is still cut
        f.truncate(segment.stat().st_size - 2)
    _, entries, report = reload(tmp_path)
    assert entries == make(21, 30) and report.reason is not None and "torn" in report.reason


def test_a_log_that_disagrees_at_the_snapshot_is_still_discarded_when_stepped_over(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 31), segment_bytes=1 << 20)
    write_snapshot(tmp_path, meta(20, term=2), b"leader's state")
    _, entries, report = reload(tmp_path)
    assert entries == [] and "log has term 1 at index 20" in report.notes[0]


# --------------------------------------------------------------------------- compaction


def test_compaction_deletes_whole_segments_and_rewrites_none(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 101))
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.load()
        files = {p.name: (p.stat().st_ino, p.read_bytes()) for _, p in list_segments(tmp_path)}
        s.save_snapshot(meta(50), b"at 50")
        assert set(firsts(tmp_path)) == {*(int(n[4:]) for n in files), 101}  # rolled, nothing dropped yet
        s.save_snapshot(meta(90), b"at 90")
        kept = list_segments(tmp_path)
        assert kept[0][0] <= 51 < kept[1][0]  # only whole segments at or below the previous snapshot went
        for _, path in kept:
            if path.name in files:
                assert (path.stat().st_ino, path.read_bytes()) == files[path.name]
        assert [i for i, _, _ in list_snapshots(tmp_path)] == [50, 90]
        s.append(make(101, 103, term=2))
    _, entries, _ = reload(tmp_path)
    assert entries == make(91, 101) + make(101, 103, term=2)


def test_every_snapshot_starts_a_segment(tmp_path: Path) -> None:
    with opened(tmp_path, segment_bytes=1 << 20) as s:
        for n in range(1, 6):
            s.append(make(10 * n - 9, 10 * n + 1))
            s.save_snapshot(meta(10 * n), b"x")
        # 41..50 follow the previous snapshot (40), 51 takes the next appends; 1..40 went file by file
        assert firsts(tmp_path) == [41, 51]
        s.save_snapshot(meta(50), b"y")  # nothing appended since: no empty segment piles up
        assert firsts(tmp_path) == [41, 51]


# --------------------------------------------------------------------------- what load repairs


def test_log_left_by_an_interrupted_install_is_discarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot was renamed into place, the crash came before the conflicting log was dropped."""
    fill(tmp_path, make(1, 31))
    write_snapshot(tmp_path, meta(20, term=2), b"leader's state")
    with caplog.at_level(logging.WARNING, logger="pyraft.storage"):
        _, entries, report = reload(tmp_path)
    assert entries == []
    assert report.notes and "interrupted snapshot install" in report.notes[0]
    assert "log has term 1 at index 20" in caplog.text
    assert firsts(tmp_path) == [21]
    with FileStorage(tmp_path) as s:
        s.load()
        assert (s.first_index, s.last_index) == (21, 20)
        s.append(make(21, 22, term=2))
    assert reload(tmp_path)[1] == make(21, 22, term=2)


def test_log_ending_below_the_snapshot_is_discarded(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 11))
    write_snapshot(tmp_path, meta(30), b"state")
    _, entries, report = reload(tmp_path)
    assert entries == [] and "ends at 10" in report.notes[0]
    assert firsts(tmp_path) == [31]


def test_a_damaged_snapshot_beyond_everything_held_is_an_error(tmp_path: Path) -> None:
    """A junk file named like a newer snapshot: the state it claims is nowhere else."""
    fill(tmp_path, make(1, 11))
    snapshot_path(tmp_path, 1000, 3).write_bytes(b"not a snapshot")
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="index 1000 is damaged"):
        s.load()
    snapshot_path(tmp_path, 1000, 3).unlink()
    snapshot_path(tmp_path, 5, 1).write_bytes(b"damaged, but the log holds everything it did")
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 11) and "skipped snapshot" in report.notes[0]


def test_temp_files_of_interrupted_writes_are_removed_on_open(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 3))
    leftovers = ["state.tmp", "log-00000000000000000003.tmp", ".snapshot-1-1.tmp", ".snapshot-2-1.partial"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half")
    assert reload(tmp_path)[1] == make(1, 3)
    assert not [name for name in leftovers if (tmp_path / name).exists()]


def test_missing_state_file_with_a_snapshot_is_an_error(tmp_path: Path) -> None:
    with opened(tmp_path) as s:
        s.append(make(1, 3))
        s.save_snapshot(meta(2), b"state")
        s.append(make(3, 4))
    (tmp_path / "state").unlink()
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="state file missing"):
        s.load()


def test_read_snapshot_hands_out_what_load_verified_then_reads_again(tmp_path: Path) -> None:
    with opened(tmp_path) as s:
        s.append(make(1, 3))
        saved = s.save_snapshot(meta(2), b"state")
    with FileStorage(tmp_path) as s:
        s.load()
        path = snapshot_path(tmp_path, 2, 1)
        path.write_bytes(path.read_bytes()[:-1] + b"X")  # damaged after load checked it
        assert s.read_snapshot() == (saved, b"state")
        with pytest.raises(StorageCorrupt, match="payload CRC mismatch"):
            s.read_snapshot()


def test_io_error_while_saving_a_snapshot_poisons_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened(tmp_path)
    s.append(make(1, 5))

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", broken)
        with pytest.raises(OSError):
            s.save_snapshot(meta(3), b"state")
    with pytest.raises(StorageError, match="failed earlier"):
        s.append(make(5, 6))
    s.close()
    assert reload(tmp_path)[1] == make(1, 5)
    assert not list(tmp_path.glob(".snapshot*"))  # its temp file went with the failure


def test_no_durability_mode_with_snapshots(tmp_path: Path) -> None:
    with FileStorage(tmp_path, fsync=False, segment_bytes=SMALL) as s:
        s.save_hard_state(HardState(1, None))
        s.append(make(1, 40))
        s.save_snapshot(meta(20), b"a")
        s.save_snapshot(meta(30), b"b")
    assert reload(tmp_path)[1] == make(31, 40)


# --------------------------------------------------------------------------- the old single-file log


def write_legacy_log(path: Path, entries: list[Entry]) -> None:
    """A data directory as versions before segments left it: state plus one ``log`` file."""
    path.mkdir(exist_ok=True)
    payload = msgpack.packb([1, None])
    (path / "state").write_bytes(b"PYRAFTHS" + struct.pack("<II", 1, zlib.crc32(payload)) + payload)
    (path / "log").write_bytes(HEADER + b"".join(record(e) for e in entries))


def test_single_file_log_becomes_the_first_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_legacy_log(tmp_path, make(1, 51))
    content = (tmp_path / "log").read_bytes()
    with caplog.at_level(logging.INFO, logger="pyraft.storage"):
        hs, entries, report = reload(tmp_path)
    assert (hs, entries, report) == (HardState(1, None), make(1, 51), RecoveryReport(50, 0, None, None))
    assert not (tmp_path / "log").exists()
    assert segment_path(tmp_path, 1).read_bytes() == content  # renamed, not rewritten
    assert "renamed the single-file log" in caplog.text
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.load()
        s.append(make(51, 53))
        s.save_snapshot(meta(52), b"state")
        s.append(make(53, 54))
    assert reload(tmp_path)[1] == make(53, 54)


def test_single_file_log_with_a_torn_tail_migrates_and_is_repaired(tmp_path: Path) -> None:
    write_legacy_log(tmp_path, make(1, 4))
    with open(tmp_path / "log", "ab") as f:
        f.write(record(make(4, 5)[0])[:-2])
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 4) and report.reason is not None and "torn" in report.reason


def test_a_foreign_single_file_log_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"NOTRAFT!" + struct.pack("<I", 1) + b"other data")
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="not a pyraft log"):
        s.load()
    assert (tmp_path / "log").exists() and list_segments(tmp_path) == []


def test_single_file_log_beside_a_first_segment_is_an_error(tmp_path: Path) -> None:
    write_legacy_log(tmp_path, make(1, 3))
    segment_path(tmp_path, 1).write_bytes(HEADER)
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="both"):
        s.load()

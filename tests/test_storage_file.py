"""FileStorage on a real directory: the on-disk format, crash recovery, corruption and locking.

Damage is made the way a crash or a bad disk would make it: by cutting or
flipping bytes of the files, then opening the directory afresh.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from pyraft.core.messages import Entry, EntryKind, HardState
from pyraft.storage import DirLock, FileStorage, RecoveryReport, StorageCorrupt, StorageError, StorageLocked
from pyraft.storage import file as file_module

HEADER = 12  # b"PYRAFTLG" + u32 version
LOG = "log-00000000000000000001"  # the first log segment


def make(start: int, stop: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, data=f"entry {i} of term {term}".encode()) for i in range(start, stop)]


def record(index: int, term: int, kind: int = 0, data: bytes = b"", *, payload: bytes | None = None) -> bytes:
    """A log record framed by hand, straight from the format description."""
    if payload is None:
        payload = msgpack.packb([index, term, kind, data], use_bin_type=True)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def fill(path: Path, entries: list[Entry]) -> list[int]:
    """Store entries (one append each) with term 1 saved; return each record's file offset."""
    offsets = []
    with FileStorage(path) as s:
        s.save_hard_state(HardState(1, None))
        s.load()
        for e in entries:
            offsets.append((path / LOG).stat().st_size)
            s.append([e])
    return offsets


def reload(path: Path) -> tuple[HardState, list[Entry], RecoveryReport]:
    with FileStorage(path) as s:
        return s.load()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- format and reopen


def test_files_follow_the_documented_format(tmp_path: Path) -> None:
    fill(tmp_path, [Entry(1, 1, EntryKind.NOOP), Entry(2, 1, data=b"hi")])
    log = (tmp_path / LOG).read_bytes()
    assert log == b"PYRAFTLG" + struct.pack("<I", 1) + record(1, 1, 1) + record(2, 1, 0, b"hi")
    state = (tmp_path / "state").read_bytes()
    payload = msgpack.packb([1, None])
    assert state == b"PYRAFTHS" + struct.pack("<II", 1, zlib.crc32(payload)) + payload
    assert not (tmp_path / "state.tmp").exists()


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    with FileStorage(tmp_path / "a" / "b") as s:  # missing parents are created
        s.load()
        s.save_hard_state(HardState(4, 2))
        s.append(make(1, 1001, term=1))
        s.append(make(1001, 1003, term=4))
    hs, entries, report = reload(tmp_path / "a" / "b")
    assert hs == HardState(4, 2)
    assert entries == make(1, 1001, term=1) + make(1001, 1003, term=4)
    assert report == RecoveryReport(1002, 0, None, None)


def test_no_durability_mode_still_stores(tmp_path: Path) -> None:
    with FileStorage(tmp_path, fsync=False) as s:
        s.save_hard_state(HardState(1, 1))
        s.append(make(1, 4))
    assert reload(tmp_path)[:2] == (HardState(1, 1), make(1, 4))


def test_append_is_one_write_and_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: a batch costs one write and one fdatasync; a conflicting one syncs its cut first."""
    calls: list[str] = []
    real_pwrite, real_sync = os.pwrite, file_module._sync_data

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append("write")
        return real_pwrite(fd, data, offset)

    def sync(fd: int) -> None:
        calls.append("sync")
        real_sync(fd)

    with FileStorage(tmp_path) as s:
        s.save_hard_state(HardState(1, None))
        s.load()
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(file_module, "_sync_data", sync)
        s.append(make(1, 1001))
        assert calls == ["write", "sync"]
        calls.clear()
        s.append(make(500, 600, term=2))
        assert calls == ["sync", "write", "sync"]
    assert reload(tmp_path)[1] == make(1, 500) + make(500, 600, term=2)


def test_append_before_load_finds_the_existing_log(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 4))
    with FileStorage(tmp_path) as s:
        assert s.last_index == 3
        with pytest.raises(ValueError, match="gap"):
            s.append(make(5, 6))
        s.append(make(4, 5))
    assert reload(tmp_path)[1] == make(1, 5)


def test_fast_entry_construction_matches_entry(tmp_path: Path) -> None:
    """The log scan fills Entry's slots directly; that is only right while these hold."""
    assert [f.name for f in dataclasses.fields(Entry)] == ["index", "term", "kind", "data"]
    assert not hasattr(Entry, "__post_init__")
    fill(tmp_path, [Entry(1, 1, EntryKind.NOOP, b"a")])
    (loaded,) = reload(tmp_path)[1]
    assert loaded == Entry(1, 1, EntryKind.NOOP, b"a")
    assert hash(loaded) == hash(Entry(1, 1, EntryKind.NOOP, b"a"))
    assert loaded.kind is EntryKind.NOOP
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.term = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- torn and corrupt logs


def test_torn_tail_at_every_byte_loads_the_prefix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    offsets = fill(tmp_path / "orig", make(1, 4))
    whole = (tmp_path / "orig" / LOG).read_bytes()
    state = (tmp_path / "orig" / "state").read_bytes()
    last = offsets[-1]
    for cut in range(last + 1, len(whole)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "state").write_bytes(state)
        (d / LOG).write_bytes(whole[:cut])
        with caplog.at_level(logging.WARNING, logger="pyraft.storage"):
            hs, entries, report = reload(d)
        assert (hs, entries) == (HardState(1, None), make(1, 3)), cut
        assert report.entries_loaded == 2
        assert report.truncated_bytes == cut - last
        assert report.first_bad_offset == last
        assert report.reason is not None and "torn" in report.reason
        assert (d / LOG).stat().st_size == last  # cut off for good
    assert caplog.records and all(r.name == "pyraft.storage" for r in caplog.records)
    assert "truncated 1 bytes at offset" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (lambda rec, size: rec + 8 + size - 1, "checksum mismatch"),  # last payload byte
        (lambda rec, size: rec + 8, "checksum mismatch"),  # first payload byte
        (lambda rec, size: rec + 5, "checksum mismatch"),  # the CRC field
        (lambda rec, size: rec + 3, "bad record length"),  # high byte of the length
        (lambda rec, size: rec, "torn record payload"),  # low byte of the length: runs past the end
    ],
    ids=["payload-end", "payload-start", "crc", "length-high", "length-low"],
)
def test_flipped_byte_in_last_record_is_cut(
    tmp_path: Path, where: Callable[[int, int], int], reason: str
) -> None:
    offsets = fill(tmp_path, make(1, 4))
    size = (tmp_path / LOG).stat().st_size
    flip(tmp_path / LOG, where(offsets[-1], size - offsets[-1] - 8))
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 3)
    assert report.first_bad_offset == offsets[-1]
    assert report.truncated_bytes == size - offsets[-1]
    assert report.reason is not None and report.reason.startswith(reason)
    assert f"at offset {offsets[-1]}" in report.reason


def test_corrupt_middle_record_cuts_from_there(tmp_path: Path) -> None:
    offsets = fill(tmp_path, make(1, 11))
    size = (tmp_path / LOG).stat().st_size
    flip(tmp_path / LOG, offsets[4] + 10)  # inside entry 5's payload
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 5)
    assert report == RecoveryReport(
        4, size - offsets[4], offsets[4], f"checksum mismatch at offset {offsets[4]}"
    )
    assert reload(tmp_path)[2] == RecoveryReport(4, 0, None, None)  # the repair itself was durable


def test_appends_after_recovery_reload_correctly(tmp_path: Path) -> None:
    offsets = fill(tmp_path, make(1, 6))
    with open(tmp_path / LOG, "r+b") as f:
        f.truncate(offsets[-1] + 5)
    with FileStorage(tmp_path) as s:
        assert s.load()[1] == make(1, 5)
        s.append(make(5, 8, term=2))
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 5) + make(5, 8, term=2)
    assert not report.repaired


def test_torn_file_header_is_rewritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """We create the header whole, so a short prefix of it is outside damage to an empty log of ours."""
    fill(tmp_path / "orig", [])
    header = (tmp_path / "orig" / LOG).read_bytes()
    assert len(header) == HEADER
    for cut in range(HEADER):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / LOG).write_bytes(header[:cut])
        with FileStorage(d) as s, caplog.at_level(logging.WARNING, logger="pyraft.storage"):
            _, entries, report = s.load()
            assert entries == []
            assert report == RecoveryReport(0, cut, 0, f"torn file header ({cut} of {HEADER} bytes)")
            s.save_hard_state(HardState(1, None))
            s.append(make(1, 3))
        assert reload(d)[1] == make(1, 3)
    assert "rewrote the header" in caplog.text


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (record(5, 1), "index gap at offset {at}: expected 4 got 5"),
        (record(3, 1), "index gap at offset {at}: expected 4 got 3"),
        (record(4, 0), "term regression at offset {at}: index 4 has term 0 after 1"),
        (record(0, 0, payload=b"\xc1"), "undecodable record at offset {at}"),
        (record(0, 0, payload=msgpack.packb([4, 1])), "undecodable record at offset {at}"),
        (record(4, 1, kind=9), "undecodable record at offset {at}"),
        (struct.pack("<II", 0, 0) + record(4, 1), "bad record length 0 at offset {at}"),
    ],
    ids=["gap", "repeat", "term-back", "not-msgpack", "short-array", "unknown-kind", "zero-length"],
)
def test_well_framed_but_wrong_records_are_cut(tmp_path: Path, bad: bytes, reason: str) -> None:
    """Records that pass their CRC can still break the log's rules; nothing after them is trusted."""
    fill(tmp_path, make(1, 4))
    at = (tmp_path / LOG).stat().st_size
    with open(tmp_path / LOG, "ab") as f:
        f.write(bad + record(5, 1))
    _, entries, report = reload(tmp_path)
    assert entries == make(1, 4)
    assert report.reason is not None and report.reason.startswith(reason.format(at=at))
    assert report.truncated_bytes == len(bad) + len(record(5, 1))


# --------------------------------------------------------------------------- files that are not ours


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: flip(p, 17),  # payload
        lambda p: flip(p, 13),  # crc
        lambda p: flip(p, 0),  # magic
        lambda p: flip(p, 8),  # version
        lambda p: p.write_bytes(p.read_bytes()[:10]),
        lambda p: p.write_bytes(p.read_bytes()[:-1]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["payload", "crc", "magic", "version", "short-header", "short-payload", "empty"],
)
def test_corrupt_state_file_is_an_error_not_term_zero(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    fill(tmp_path, [])
    with FileStorage(tmp_path) as s:
        s.save_hard_state(HardState(5, 2))
    damage(tmp_path / "state")
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="state"):
        s.load()
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt):
        s.save_hard_state(HardState(6, None))  # cannot check the promise it would replace


def test_state_values_of_the_wrong_type_are_corrupt(tmp_path: Path) -> None:
    payload = msgpack.packb(["5", None])
    (tmp_path / "state").write_bytes(b"PYRAFTHS" + struct.pack("<II", 1, zlib.crc32(payload)) + payload)
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="invalid state values"):
        s.load()


def test_missing_state_file_with_a_log_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 3, term=2))
    (tmp_path / "state").unlink()
    with FileStorage(tmp_path) as s, pytest.raises(StorageCorrupt, match="state file missing"):
        s.load()


def test_leftover_temp_state_file_is_ignored(tmp_path: Path) -> None:
    fill(tmp_path, make(1, 2))
    (tmp_path / "state.tmp").write_bytes(b"half-written")
    assert reload(tmp_path)[0] == HardState(1, None)
    assert not (tmp_path / "state.tmp").exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"NOTRAFT!" + struct.pack("<I", 1), "not a pyraft log"),
        (b"PYRAFTLG" + struct.pack("<I", 2), "unsupported log format version 2"),
        (b"PYRAFX", "shorter than its header"),
    ],
)
def test_foreign_log_file_raises_and_is_left_alone(tmp_path: Path, content: bytes, match: str) -> None:
    if len(content) >= HEADER:
        content += b"some data that is not ours"
    (tmp_path / LOG).write_bytes(content)
    with FileStorage(tmp_path) as s:
        with pytest.raises(StorageCorrupt, match=match):
            s.load()
        with pytest.raises(StorageCorrupt, match=match):
            s.append(make(1, 2))
    assert (tmp_path / LOG).read_bytes() == content


def test_oversized_entry_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyraft.storage.file.MAX_RECORD_BYTES", 100)
    with FileStorage(tmp_path) as s:
        s.save_hard_state(HardState(1, None))
        with pytest.raises(ValueError, match="above 100"):
            s.append([Entry(1, 1, data=b"x" * 50), Entry(2, 1, data=b"x" * 200)])
        assert s.last_index == 0
    assert (tmp_path / LOG).stat().st_size == HEADER


# --------------------------------------------------------------------------- locking and failures


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    first = FileStorage(tmp_path)
    with pytest.raises(StorageLocked, match=f"held by pid {os.getpid()}"):
        FileStorage(tmp_path)
    first.close()
    FileStorage(tmp_path).close()  # free again once closed


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pyraft.storage import FileStorage; "
            "s = FileStorage(sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        with pytest.raises(StorageLocked, match=f"pid {child.pid}"):
            FileStorage(tmp_path)
    finally:
        child.communicate("")  # EOF on stdin: the child exits, and the kernel drops its lock
    FileStorage(tmp_path).close()


def test_dir_lock_is_reentrant_only_after_release(tmp_path: Path) -> None:
    lock = DirLock(tmp_path / "lock")
    with lock:
        assert lock.held
        with pytest.raises(StorageLocked):
            DirLock(tmp_path / "lock").acquire()
    assert not lock.held
    with DirLock(tmp_path / "lock"):
        pass


def test_io_error_poisons_the_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed write nobody knows what reached the disk; only a reopen may say."""
    fill(tmp_path, make(1, 3))
    s = FileStorage(tmp_path)
    s.load()

    def disk_full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", disk_full)
        with pytest.raises(OSError):
            s.append(make(3, 4))
    with pytest.raises(StorageError, match="failed earlier"):
        s.append(make(3, 4))
    with pytest.raises(StorageError, match="failed earlier"):
        s.load()
    s.close()
    assert reload(tmp_path)[1] == make(1, 3)

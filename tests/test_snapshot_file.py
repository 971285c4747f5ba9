"""Snapshot files: round trips, pruning, any damage falls back to the previous snapshot, transfers.

Which snapshots a node keeps is FileStorage's policy (tests/test_storage_snapshots.py);
here is only the file format and the mechanics of writing, reading and receiving one."""

from __future__ import annotations

import logging
import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from pyraft.storage.snapshot import (
    MAX_CONFIG_BYTES,
    SNAPSHOT_MAGIC,
    BytesSink,
    ChunkRejected,
    FileSink,
    SnapshotCorrupt,
    SnapshotMeta,
    SnapshotReceiver,
    SnapshotTransferError,
    TransferFailed,
    TransferSlot,
    decode_header,
    decode_snapshot,
    delete_snapshots_except,
    encode_header,
    encode_snapshot,
    list_snapshots,
    load_latest_snapshot,
    read_chunk,
    read_snapshot,
    remove_temp_files,
    snapshot_path,
    write_snapshot,
)

OLD = SnapshotMeta(10, 2, (1, 2, 3))
NEW = SnapshotMeta(20, 3, (1, 2, 3, 4), config=b"\x93\x01\x02\x03quorum config")


def payload(seed: int, size: int = 3000) -> bytes:
    return random.Random(seed).randbytes(size)


def write(directory: Path, meta: SnapshotMeta, data: bytes) -> Path:
    written = write_snapshot(directory, meta, data)
    return snapshot_path(directory, written.last_index, written.last_term)


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    """An older and a newer valid snapshot; returns their paths."""
    return write(tmp_path, OLD, payload(1)), write(tmp_path, NEW, payload(2))


def assert_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture, reason: str = "") -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyraft.storage"):
        found = load_latest_snapshot(tmp_path)
    assert found is not None
    meta, data = found
    assert (meta.last_index, meta.last_term, meta.voters, data) == (10, 2, (1, 2, 3), payload(1))
    assert any("skipping snapshot" in r.message and reason in r.message for r in caplog.records), caplog.text


# --------------------------------------------------------------------------- writing and loading


def test_round_trip(tmp_path: Path) -> None:
    written = write_snapshot(tmp_path, NEW, payload(2))
    path = snapshot_path(tmp_path, 20, 3)
    assert path.name == "snapshot-00000000000000000020-00000000000000000003.snap"
    meta, data = read_snapshot(path)
    assert data == payload(2)
    assert meta == written == SnapshotMeta(20, 3, (1, 2, 3, 4), 3000, zlib.crc32(payload(2)), NEW.config)
    assert path.stat().st_size == meta.file_size
    assert load_latest_snapshot(tmp_path) == (meta, data)
    assert decode_snapshot(path.read_bytes()) == (meta, data)
    assert encode_snapshot(NEW, payload(2)) == (meta, path.read_bytes())


def test_empty_payload_no_voters_no_config(tmp_path: Path) -> None:
    write_snapshot(tmp_path, SnapshotMeta(0, 0, ()), b"")
    assert load_latest_snapshot(tmp_path) == (SnapshotMeta(0, 0, (), 0, 0, b""), b"")


def test_config_size_is_bounded(tmp_path: Path) -> None:
    """A config length read from a damaged header must never make a reader allocate or wait for it."""
    big = SnapshotMeta(1, 1, (1,), config=b"x" * MAX_CONFIG_BYTES)
    write_snapshot(tmp_path, big, b"data")
    assert load_latest_snapshot(tmp_path) == (encode_snapshot(big, b"data")[0], b"data")
    with pytest.raises(ValueError, match="config"):
        write_snapshot(tmp_path, SnapshotMeta(2, 1, (1,), config=b"x" * (MAX_CONFIG_BYTES + 1)), b"")
    with pytest.raises(ValueError, match="config"):
        encode_header(SnapshotMeta(2, 1, (1,), config="text"))  # type: ignore[arg-type]


def test_no_snapshot(tmp_path: Path) -> None:
    assert load_latest_snapshot(tmp_path) is None


def test_names_sort_by_index(tmp_path: Path) -> None:
    for index in (9, 100, 10):
        write_snapshot(tmp_path, SnapshotMeta(index, 1, (1,)), b"x")
    assert [i for (i, _, _) in list_snapshots(tmp_path)] == [9, 10, 100]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for (_, _, p) in list_snapshots(tmp_path)]


def test_writing_keeps_every_snapshot_and_deleting_is_explicit(tmp_path: Path) -> None:
    """Which snapshots to keep depends on the log, which only the storage knows."""
    for index in range(1, 6):
        write_snapshot(tmp_path, SnapshotMeta(index, 1, (1,)), b"x" * index)
    assert [i for (i, _, _) in list_snapshots(tmp_path)] == [1, 2, 3, 4, 5]
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".snap")]  # no temp file left
    (tmp_path / "unrelated").write_bytes(b"")
    gone = delete_snapshots_except(tmp_path, {(5, 1), (2, 1), (7, 7)}, fsync=True)
    assert sorted(p.name for p in gone) == [snapshot_path(tmp_path, i, 1).name for i in (1, 3, 4)]
    assert [i for (i, _, _) in list_snapshots(tmp_path)] == [2, 5]
    assert (tmp_path / "unrelated").exists()


def test_meta_that_disagrees_with_the_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        write_snapshot(tmp_path, SnapshotMeta(1, 1, (1,), size=5), b"1234")
    with pytest.raises(ValueError):
        write_snapshot(tmp_path, SnapshotMeta(-1, 1, (1,)), b"")
    assert list_snapshots(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_remove_temp_files(tmp_path: Path) -> None:
    leftovers = [tmp_path / ".snapshot-1-1.tmp", tmp_path / ".snapshot-2-1.partial"]
    for p in leftovers:
        p.write_bytes(b"half")
    keep = write(tmp_path, OLD, b"x")
    assert sorted(remove_temp_files(tmp_path)) == sorted(leftovers)
    assert list(tmp_path.iterdir()) == [keep]


# --------------------------------------------------------------------------- damage


def test_truncated_at_any_offset_falls_back(
    tmp_path: Path, two: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, new = two
    whole = new.read_bytes()
    header = NEW.header_size
    for cut in [*range(0, header + 2), header + 100, len(whole) // 2, len(whole) - 1]:
        new.write_bytes(whole[:cut])
        assert_falls_back(tmp_path, caplog)


def test_every_header_byte_flip_falls_back(
    tmp_path: Path, two: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, new = two
    whole = new.read_bytes()
    for pos in range(NEW.header_size):
        for mask in (0x01, 0x80):
            damaged = bytearray(whole)
            damaged[pos] ^= mask
            new.write_bytes(damaged)
            assert_falls_back(tmp_path, caplog)


def test_payload_byte_flips_fall_back(
    tmp_path: Path, two: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, new = two
    whole = new.read_bytes()
    for pos in [NEW.header_size, NEW.header_size + 1, len(whole) // 2, len(whole) - 1]:
        damaged = bytearray(whole)
        damaged[pos] ^= 0x10
        new.write_bytes(damaged)
        assert_falls_back(tmp_path, caplog, "payload CRC mismatch")


def test_extra_bytes_fall_back(
    tmp_path: Path, two: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, new = two
    new.write_bytes(new.read_bytes() + b"\0")
    assert_falls_back(tmp_path, caplog, "header says")


def rewrite_fixed(path: Path, fmt: str, **fields: object) -> None:
    """Change fixed header fields and re-seal the header CRC, so only the field check can object."""
    whole = bytearray(path.read_bytes())
    layout = struct.Struct("<8sIIQQQIII")
    names = ["magic", "version", "header_size", "index", "term", "size", "crc", "count", "config"]
    values = dict(zip(names, layout.unpack_from(whole), strict=True))
    values.update(fields)
    layout.pack_into(whole, 0, *values.values())
    end = int(str(values["header_size"])) - 4 if fmt == "reseal" else 0
    if end:
        struct.pack_into("<I", whole, end, zlib.crc32(whole[:end]))
    path.write_bytes(bytes(whole))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"magic": b"PYRAFTLG"}, "bad magic"),
        ({"version": 1}, "unsupported snapshot version 1"),
        ({"version": 3}, "unsupported snapshot version 3"),
        ({"count": 5}, "does not fit 5 voters"),
        ({"count": 2**31}, "announces 2147483648 voters"),
        ({"config": 3}, "does not fit 4 voters and 3 config bytes"),
        ({"config": 2**31}, "announces 4 voters and 2147483648 config bytes"),
        ({"size": 2999}, "header says"),
        ({"index": 21}, "not its name"),
        ({"crc": 12345}, "payload CRC mismatch"),
    ],
)
def test_wrong_fields_with_a_valid_header_crc_fall_back(
    tmp_path: Path,
    two: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, object],
    reason: str,
) -> None:
    rewrite_fixed(two[1], "reseal", **fields)
    assert_falls_back(tmp_path, caplog, reason)


def test_a_file_renamed_to_a_newer_name_is_not_trusted(
    tmp_path: Path, two: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    old, new = two
    new.unlink()
    snapshot_path(tmp_path, 30, 3).write_bytes(old.read_bytes())
    assert_falls_back(tmp_path, caplog, "not its name")


def test_nothing_valid_loads_nothing(tmp_path: Path, two: tuple[Path, Path]) -> None:
    for path in two:
        path.write_bytes(path.read_bytes()[:-1])
    assert load_latest_snapshot(tmp_path) is None


def test_header_codec(tmp_path: Path) -> None:
    meta = SnapshotMeta(2**63 - 1, 5, (0, 7, 2**40), 10, 2**32 - 1, b"\x00config\xff")
    header = encode_header(meta)
    assert header.startswith(SNAPSHOT_MAGIC) and len(header) == meta.header_size
    assert decode_header(header) == meta


def test_every_config_byte_is_covered_by_the_header_crc() -> None:
    meta, whole = encode_snapshot(NEW, b"payload")
    start = meta.header_size - 4 - len(meta.config)
    for pos in range(start, start + len(meta.config)):
        damaged = bytearray(whole)
        damaged[pos] ^= 0x04
        with pytest.raises(SnapshotCorrupt, match="header CRC mismatch"):
            decode_snapshot(bytes(damaged))


# --------------------------------------------------------------------------- transfers


def receiver_in(directory: Path, last_index: int, last_term: int) -> SnapshotReceiver:
    return SnapshotReceiver(last_index, last_term, FileSink(directory, last_index, last_term))


def send(receiver: SnapshotReceiver, path: Path, meta: SnapshotMeta, chunk: int) -> SnapshotMeta | None:
    """Stream ``path`` through ``receiver`` as a leader would; the verified meta."""
    total = os.path.getsize(path)
    offset, installed = 0, None
    while offset < total:
        data = read_chunk(path, offset, chunk)
        installed = receiver.accept(
            meta.last_index, meta.last_term, offset, data, offset + len(data) == total
        )
        offset += len(data)
    return installed


@pytest.mark.parametrize("chunk", [1, 7, 61, 62, 63, 95, 4096, 1 << 20])
def test_chunked_transfer_installs(tmp_path: Path, chunk: int) -> None:
    leader, follower = tmp_path / "leader", tmp_path / "follower"
    leader.mkdir()
    follower.mkdir()
    write_snapshot(follower, OLD, payload(1))
    path = write(leader, NEW, payload(2))
    meta, data = read_snapshot(path)
    receiver = receiver_in(follower, 20, 3)
    assert send(receiver, path, meta, chunk) == meta
    assert receiver.finished
    partial = follower / ".snapshot-00000000000000000020-00000000000000000003.partial"
    assert partial.read_bytes() == path.read_bytes()  # sealed, not yet a snapshot
    assert load_latest_snapshot(follower) == read_snapshot(snapshot_path(follower, 10, 2))
    assert isinstance(receiver.sink, FileSink)
    assert receiver.sink.install() == snapshot_path(follower, 20, 3)
    assert load_latest_snapshot(follower) == (meta, data)
    assert sorted(p.name for p in follower.iterdir()) == sorted(
        [path.name, snapshot_path(follower, 10, 2).name]
    )


def test_read_chunk_past_the_end(tmp_path: Path) -> None:
    path = write(tmp_path, OLD, b"abc")
    assert read_chunk(path, OLD.header_size + 1, 100) == b"bc"
    assert read_chunk(path, 10_000, 100) == b""
    with pytest.raises(ValueError):
        read_chunk(path, -1, 1)


def test_gaps_repeats_and_other_snapshots_are_rejected_without_harm(tmp_path: Path) -> None:
    path = write(tmp_path, NEW, payload(2))
    follower = tmp_path / "f"
    follower.mkdir()
    whole = path.read_bytes()
    receiver = receiver_in(follower, 20, 3)
    receiver.accept(20, 3, 0, whole[:100], False)
    with pytest.raises(ChunkRejected) as gap:
        receiver.accept(20, 3, 200, whole[200:300], False)
    assert gap.value.next_offset == 100
    with pytest.raises(ChunkRejected) as repeat:
        receiver.accept(20, 3, 0, whole[:100], False)
    assert repeat.value.next_offset == 100
    with pytest.raises(ChunkRejected, match="while receiving"):
        receiver.accept(21, 3, 100, whole[100:], True)
    with pytest.raises(ChunkRejected):
        receiver.accept(20, 4, 100, whole[100:], True)
    assert receiver.accept(20, 3, 100, whole[100:], True) is not None
    assert isinstance(receiver.sink, FileSink)
    receiver.sink.install()
    assert load_latest_snapshot(follower) == read_snapshot(path)


def failing_transfer(tmp_path: Path, whole: bytes, chunks: list[tuple[int, bytes, bool]]) -> SnapshotReceiver:
    """Send ``chunks`` until one fails; checks nothing was installed or left behind."""
    follower = tmp_path / "f"
    follower.mkdir(exist_ok=True)
    receiver = receiver_in(follower, 20, 3)
    with pytest.raises(TransferFailed):
        for offset, data, done in chunks:
            receiver.accept(20, 3, offset, data, done)
    assert receiver.finished
    assert list(follower.iterdir()) == []
    with pytest.raises(SnapshotTransferError):
        receiver.accept(20, 3, receiver.next_offset, b"", True)
    return receiver


@pytest.fixture
def whole(tmp_path: Path) -> bytes:
    return write(tmp_path, NEW, payload(2)).read_bytes()


def test_a_corrupted_payload_is_not_installed(tmp_path: Path, whole: bytes) -> None:
    bad = bytearray(whole)
    bad[-5] ^= 1
    failing_transfer(tmp_path, whole, [(0, bytes(bad[:1000]), False), (1000, bytes(bad[1000:]), True)])


def test_done_too_early_is_not_installed(tmp_path: Path, whole: bytes) -> None:
    failing_transfer(tmp_path, whole, [(0, whole[:-1], True)])
    failing_transfer(tmp_path, whole, [(0, whole[:10], True)])


def test_more_than_announced_is_not_installed(tmp_path: Path, whole: bytes) -> None:
    failing_transfer(tmp_path, whole, [(0, whole + b"x", False)])


def test_a_bad_header_fails_as_soon_as_it_arrives(tmp_path: Path, whole: bytes) -> None:
    receiver = failing_transfer(tmp_path, whole, [(0, b"NOTASNAP" + whole[8:60], False)])
    assert receiver.next_offset == 0
    bad = bytearray(whole)
    bad[64] ^= 1  # inside the voters: header CRC
    failing_transfer(tmp_path, whole, [(0, bytes(bad[:10]), False), (10, bytes(bad[10:200]), False)])


def test_a_header_for_another_snapshot_is_not_installed(tmp_path: Path) -> None:
    other = write(tmp_path, SnapshotMeta(21, 3, (1,)), b"data").read_bytes()
    failing_transfer(tmp_path, other, [(0, other, True)])


def test_abort_removes_the_partial_file(tmp_path: Path, whole: bytes) -> None:
    follower = tmp_path / "f"
    follower.mkdir()
    receiver = receiver_in(follower, 20, 3)
    receiver.accept(20, 3, 0, whole[:500], False)
    assert len(list(follower.iterdir())) == 1
    receiver.abort()
    receiver.abort()
    assert list(follower.iterdir()) == []


def test_transfer_slot_runs_one_transfer_at_a_time(whole: bytes) -> None:
    opened: list[tuple[int, int]] = []

    def open_sink(index: int, term: int) -> BytesSink:
        opened.append((index, term))
        return BytesSink()

    slot = TransferSlot(open_sink)
    assert slot.offer(20, 3, 10, whole[10:20], False) == (0, None)  # not a start: nothing opened
    assert slot.offer(20, 3, 0, whole[:10], False) == (10, None)
    assert slot.receiving == (20, 3)
    assert slot.offer(20, 3, 0, whole[:10], False) == (10, None)  # a repeat is not a restart
    assert slot.offer(21, 3, 0, b"", False) == (0, None)  # another snapshot's start replaces it
    assert opened == [(20, 3), (21, 3)]
    assert slot.offer(20, 3, 0, whole[:10], False) == (10, None)
    offset, completed = slot.offer(20, 3, 10, whole[10:], True)
    assert offset == len(whole) and completed is not None
    meta, sink = completed
    assert decode_snapshot(bytes(sink.data)) == (meta, whole[meta.header_size :])
    assert slot.receiving is None
    slot.offer(20, 3, 0, whole[:10], False)
    slot.cancel()
    assert slot.receiving is None and slot.offer(20, 3, 10, whole[10:], True) == (0, None)

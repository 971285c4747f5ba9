"""Snapshot files: their format, durable writing, verification, and receiving them in chunks.

A snapshot replaces the log up to ``last_index``; losing it after the log
prefix was dropped would lose committed state, and loading a damaged one would
silently diverge the node. So a snapshot is written to a temp file, fsynced,
renamed into place (the directory fsynced too) and only then counts; reading
one checks everything. Which snapshots to keep, and when the log may shrink,
is the storage's policy (``FileStorage``), not this module's.

File ``snapshot-<last_index:020d>-<last_term:020d>.snap`` (names sort by index)::

    [magic b"PYRAFTSN"][u32 version][u32 header length][u64 last_index][u64 last_term]
    [u64 payload size][u32 crc32(payload)][u32 voter count][u32 config length]
    [i64 voter]...[config bytes][u32 crc32(header so far)]
    [payload]

All integers little-endian. The header has its own CRC so that a flipped bit in
``last_index`` or in the quorum configuration cannot pass as a different
snapshot; the file's length must be exactly header + payload size, so a partial
copy is caught before the payload CRC is computed. Payload and ``config`` are
opaque here (the state machine's and the Raft core's msgpack). Version 1 had no
config; no release wrote it, so only version 2 is read.

Temp files start with a dot (``.snapshot-...tmp`` while writing,
``.snapshot-...partial`` while receiving) and never match a snapshot name;
``remove_temp_files`` clears what a crash left behind.

Everything is synchronous so the storage actor can run it on a worker thread.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Generic, Protocol, TypeVar

from pyraft.storage.base import StorageError

logger = logging.getLogger("pyraft.storage")

SNAPSHOT_MAGIC: Final = b"PYRAFTSN"
SNAPSHOT_VERSION: Final = 2
MAX_VOTERS: Final = 4096  # a larger count in a header is damage, not a quorum
MAX_CONFIG_BYTES: Final = 1 << 20  # likewise: a quorum configuration is a few KiB at most

_FIXED = struct.Struct("<8sIIQQQIII")
_VOTER = struct.Struct("<q")
_CRC = struct.Struct("<I")
_NAME = re.compile(r"snapshot-(\d{20})-(\d{20})\.snap")


class SnapshotCorrupt(StorageError):
    """A snapshot file that must not be loaded; ``reason`` says what check failed."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


class SnapshotTransferError(StorageError):
    """Base of the errors a ``SnapshotReceiver`` raises."""


class ChunkRejected(SnapshotTransferError):
    """The chunk was not written (a gap, a repeat, or another snapshot); the receiver is unchanged.

    ``next_offset`` is where the receiver wants the sender to continue."""

    def __init__(self, message: str, next_offset: int) -> None:
        super().__init__(message)
        self.next_offset = next_offset


class TransferFailed(SnapshotTransferError):
    """The received bytes are not a valid snapshot; the receiver discarded them and is finished."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers (log up to ``last_index``/``last_term``, the quorum) and its payload.

    ``voters`` is the plain voter list older callers use; ``config`` is the
    Raft core's own encoding of the full quorum configuration (voters,
    learners, addresses), opaque here. Both live in the checksummed header so a
    node can learn its quorum before it decodes the payload. ``size`` and
    ``crc32`` describe the payload; ``write_snapshot`` computes them, so
    callers leave them 0."""

    last_index: int
    last_term: int
    voters: tuple[int, ...]
    size: int = 0
    crc32: int = 0
    config: bytes = b""

    @property
    def header_size(self) -> int:
        return _FIXED.size + _VOTER.size * len(self.voters) + len(self.config) + _CRC.size

    @property
    def file_size(self) -> int:
        """Bytes of the whole file (what a sender streams)."""
        return self.header_size + self.size

    @property
    def id(self) -> tuple[int, int]:
        """(last_index, last_term): what names a snapshot in file names and in InstallSnapshot."""
        return self.last_index, self.last_term


# --------------------------------------------------------------------------- names and header


def snapshot_path(data_dir: Path | str, last_index: int, last_term: int) -> Path:
    """Where the snapshot up to (``last_index``, ``last_term``) lives; names sort by index."""
    return Path(data_dir) / f"snapshot-{last_index:020d}-{last_term:020d}.snap"


def list_snapshots(data_dir: Path | str) -> list[tuple[int, int, Path]]:
    """``(last_index, last_term, path)`` of every file named like a snapshot, oldest first (unchecked)."""
    found = []
    for path in Path(data_dir).iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


def encode_header(meta: SnapshotMeta) -> bytes:
    """The header for ``meta``, ending with its own CRC."""
    _check_meta(meta)
    fixed = _FIXED.pack(
        SNAPSHOT_MAGIC,
        SNAPSHOT_VERSION,
        meta.header_size,
        meta.last_index,
        meta.last_term,
        meta.size,
        meta.crc32,
        len(meta.voters),
        len(meta.config),
    )
    body = fixed + b"".join(_VOTER.pack(v) for v in meta.voters) + meta.config
    return body + _CRC.pack(zlib.crc32(body))


def header_size_needed(prefix: bytes, where: Path | str = "snapshot") -> int | None:
    """The full header length once ``prefix`` holds the fixed part (checked), else None.

    Raises ``SnapshotCorrupt`` as soon as the fixed part is wrong, so a reader
    never waits for, or allocates, a header length read from garbage."""
    if len(prefix) < _FIXED.size:
        return None
    magic, version, header_size, _, _, _, _, count, config_len = _FIXED.unpack_from(prefix)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorrupt(where, f"bad magic {magic!r}")
    if version != SNAPSHOT_VERSION:
        raise SnapshotCorrupt(where, f"unsupported snapshot version {version} (only {SNAPSHOT_VERSION})")
    if count > MAX_VOTERS or config_len > MAX_CONFIG_BYTES:
        raise SnapshotCorrupt(where, f"header announces {count} voters and {config_len} config bytes")
    if header_size != _FIXED.size + _VOTER.size * count + config_len + _CRC.size:
        raise SnapshotCorrupt(
            where, f"header length {header_size} does not fit {count} voters and {config_len} config bytes"
        )
    return int(header_size)


def decode_header(buf: bytes | bytearray, where: Path | str = "snapshot") -> SnapshotMeta:
    """Parse and verify a header at the start of ``buf``; ``SnapshotCorrupt`` says why not."""
    header_size = header_size_needed(bytes(buf[: _FIXED.size]), where)
    if header_size is None or len(buf) < header_size:
        raise SnapshotCorrupt(where, f"short header: {len(buf)} bytes")
    _, _, _, index, term, size, crc, count, _ = _FIXED.unpack_from(buf)
    body_end = header_size - _CRC.size
    if zlib.crc32(memoryview(buf)[:body_end]) != _CRC.unpack_from(buf, body_end)[0]:
        raise SnapshotCorrupt(where, "header CRC mismatch")
    voters_end = _FIXED.size + _VOTER.size * count
    voters = tuple(v for (v,) in _VOTER.iter_unpack(buf[_FIXED.size : voters_end]))
    return SnapshotMeta(index, term, voters, size, crc, bytes(buf[voters_end:body_end]))


def _check_meta(meta: SnapshotMeta) -> None:
    if meta.last_index < 0 or meta.last_term < 0 or meta.size < 0 or not 0 <= meta.crc32 < 2**32:
        raise ValueError(f"invalid snapshot meta {meta}")
    if len(meta.voters) > MAX_VOTERS:
        raise ValueError(f"{len(meta.voters)} voters is more than a snapshot header holds")
    if not isinstance(meta.config, bytes) or len(meta.config) > MAX_CONFIG_BYTES:
        raise ValueError(f"snapshot config must be bytes of at most {MAX_CONFIG_BYTES}")


def with_payload(meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
    """``meta`` with the payload's size and CRC filled in.

    Non-zero values that disagree with ``data`` raise ValueError: the caller
    mixed up payloads, and writing either would store a lie."""
    size, crc = len(data), zlib.crc32(data)
    if (meta.size and meta.size != size) or (meta.crc32 and meta.crc32 != crc):
        raise ValueError(f"meta says size {meta.size} crc {meta.crc32}, data has size {size} crc {crc}")
    meta = replace(meta, size=size, crc32=crc)
    _check_meta(meta)
    return meta


def encode_snapshot(meta: SnapshotMeta, data: bytes) -> tuple[SnapshotMeta, bytes]:
    """The completed meta and the whole file's bytes (for in-memory storage and tests)."""
    meta = with_payload(meta, data)
    return meta, encode_header(meta) + data


def decode_snapshot(buf: bytes, where: Path | str = "snapshot") -> tuple[SnapshotMeta, bytes]:
    """Verify a whole snapshot file held in memory; ``SnapshotCorrupt`` says what is wrong."""
    meta = decode_header(buf, where)
    if len(buf) != meta.file_size:
        raise SnapshotCorrupt(where, f"file has {len(buf)} bytes, header says {meta.file_size}")
    data = buf[meta.header_size :]
    if zlib.crc32(data) != meta.crc32:
        raise SnapshotCorrupt(where, "payload CRC mismatch")
    return meta, data


# --------------------------------------------------------------------------- OS helpers


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a renamed or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write may write less than asked; loop until all is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove_temp_files(data_dir: Path | str) -> list[Path]:
    """Delete the temp files of interrupted writes and transfers (call at startup); returns them."""
    removed = []
    for path in Path(data_dir).glob(".snapshot-*"):
        if path.suffix in (".tmp", ".partial"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def delete_snapshots_except(
    data_dir: Path | str, keep: Collection[tuple[int, int]], *, fsync: bool
) -> list[Path]:
    """Delete every snapshot file whose (index, term) is not in ``keep``; returns what went.

    Files the storage no longer trusts or needs go too (a damaged newer one
    included), so no later pruning can mistake them for a fallback."""
    directory = Path(data_dir)
    gone = [path for (index, term, path) in list_snapshots(directory) if (index, term) not in keep]
    for path in gone:
        path.unlink(missing_ok=True)
    if gone and fsync:
        fsync_dir(directory)
    return gone


# --------------------------------------------------------------------------- write and read


def write_snapshot(
    data_dir: Path | str, meta: SnapshotMeta, data: bytes, *, fsync: bool = True
) -> SnapshotMeta:
    """Durably write ``data`` as the snapshot ``meta`` describes; returns the completed meta.

    ``meta.size``/``meta.crc32`` are computed here (pass 0). Once this returns
    the file is in place and its name durable; older snapshots are untouched."""
    meta, tmp = stage_snapshot(data_dir, meta, data, fsync=fsync)
    publish_snapshot(data_dir, meta, tmp, fsync=fsync)
    return meta


def stage_snapshot(
    data_dir: Path | str, meta: SnapshotMeta, data: bytes, *, fsync: bool = True
) -> tuple[SnapshotMeta, Path]:
    """The slow half of ``write_snapshot``: the whole file, durable, under a temp name no reader
    looks at (startup removes it if we crash). Returns the completed meta and that name."""
    meta = with_payload(meta, data)
    header = encode_header(meta)
    tmp = Path(data_dir) / f".snapshot-{meta.last_index:020d}-{meta.last_term:020d}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, header)
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return meta, tmp


def publish_snapshot(data_dir: Path | str, meta: SnapshotMeta, tmp: Path, *, fsync: bool = True) -> None:
    """The quick half: rename a staged file into place and make its name durable."""
    _rename_into_place(tmp, snapshot_path(Path(data_dir), meta.last_index, meta.last_term), fsync=fsync)


def _rename_into_place(tmp: Path, final: Path, *, fsync: bool) -> None:
    os.replace(tmp, final)
    if fsync:
        fsync_dir(final.parent)


def read_snapshot(path: Path | str) -> tuple[SnapshotMeta, bytes]:
    """Read and fully verify one snapshot file; ``SnapshotCorrupt`` says what is wrong."""
    path = Path(path)
    with path.open("rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(_FIXED.size)
        needed = header_size_needed(head, path)
        if needed is not None:
            head += f.read(needed - len(head))
        meta = decode_header(head, path)
        _check_name(path, meta)
        if file_size != meta.file_size:
            raise SnapshotCorrupt(path, f"file has {file_size} bytes, header says {meta.file_size}")
        data = f.read(meta.size)
    if len(data) != meta.size:
        raise SnapshotCorrupt(path, f"payload is {len(data)} bytes, header says {meta.size}")
    if zlib.crc32(data) != meta.crc32:
        raise SnapshotCorrupt(path, "payload CRC mismatch")
    return meta, data


def _check_name(path: Path, meta: SnapshotMeta) -> None:
    match = _NAME.fullmatch(path.name)
    if match and (int(match[1]), int(match[2])) != meta.id:
        raise SnapshotCorrupt(path, f"header is for ({meta.last_index}, {meta.last_term}), not its name")


def load_latest_snapshot(data_dir: Path | str) -> tuple[SnapshotMeta, bytes] | None:
    """The newest snapshot that passes every check, or None; each skipped file is logged as a warning."""
    for _, _, path in reversed(list_snapshots(data_dir)):
        try:
            return read_snapshot(path)
        except SnapshotCorrupt as exc:
            logger.warning("skipping snapshot %s: %s", path.name, exc.reason)
        except OSError as exc:
            logger.warning("skipping snapshot %s: cannot read it: %s", path.name, exc)
    return None


def read_chunk(path: Path | str, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of the snapshot file from ``offset`` (b"" at the end), for InstallSnapshot."""
    check_chunk_request(offset, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def check_chunk_request(offset: int, size: int) -> None:
    if offset < 0 or size < 0:
        raise ValueError(f"offset and size must be >= 0, got {offset}, {size}")


# --------------------------------------------------------------------------- receiving


class ChunkSink(Protocol):
    """Where a ``SnapshotReceiver`` puts the bytes it accepted."""

    where: str

    def write(self, data: bytes) -> None:
        """Append ``data`` (already checked to be the next bytes of the file)."""
        ...

    def seal(self) -> None:
        """The bytes are complete and verified: make them durable."""
        ...

    def discard(self) -> None:
        """Throw the bytes away. Idempotent."""
        ...


SinkT = TypeVar("SinkT", bound=ChunkSink)


class FileSink:
    """A ``.partial`` temp file in the data directory; ``install`` renames it to its snapshot name.

    Nothing is fsynced before ``seal``: a crash mid-transfer restarts it anyway,
    and ``remove_temp_files`` clears the leftover."""

    def __init__(self, data_dir: Path, last_index: int, last_term: int, *, fsync: bool = True) -> None:
        self.path = data_dir / f".snapshot-{last_index:020d}-{last_term:020d}.partial"
        self.final = snapshot_path(data_dir, last_index, last_term)
        self.where = str(self.path)
        self._fsync = fsync
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, data: bytes) -> None:
        assert self._fd is not None, "write after seal or discard"
        _write_all(self._fd, data)

    def seal(self) -> None:
        assert self._fd is not None, "seal after seal or discard"
        fd, self._fd = self._fd, None
        try:
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def install(self) -> Path:
        """Rename the sealed file to its snapshot name; durable on return."""
        _rename_into_place(self.path, self.final, fsync=self._fsync)
        return self.final

    def discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self.path.unlink(missing_ok=True)


class BytesSink:
    """Collects the file in memory (the in-memory storage's receiver)."""

    def __init__(self) -> None:
        self.where = "snapshot transfer"
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def seal(self) -> None:
        pass

    def discard(self) -> None:
        self.data = bytearray()


class SnapshotReceiver:
    """Assembles one snapshot sent in chunks (InstallSnapshot) and verifies it as it arrives.

    Chunks are bytes of the sender's file, taken in order: a gap, a repeat or a
    chunk of another snapshot raises ``ChunkRejected`` (with the offset wanted
    next) and changes nothing, so a sender can resume after loss. Bytes that
    turn out not to be the announced snapshot raise ``TransferFailed``: the
    sink is discarded and this receiver is finished. The header is checked as
    soon as it is complete, so garbage never makes the receiver wait for, or
    store, a length read from it. Installing the sealed bytes is the caller's
    step, because only the storage knows what else must change with it."""

    def __init__(self, last_index: int, last_term: int, sink: ChunkSink) -> None:
        self.last_index = last_index
        self.last_term = last_term
        self.sink = sink
        self._open = True
        self._received = 0
        self._head = b""
        self._meta: SnapshotMeta | None = None
        self._crc = 0

    @property
    def next_offset(self) -> int:
        """Bytes received so far: the offset of the chunk expected next."""
        return self._received

    @property
    def finished(self) -> bool:
        return not self._open

    def accept(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> SnapshotMeta | None:
        """Take one chunk; on the ``done`` chunk verify and seal, returning the snapshot's meta."""
        self._check_chunk(last_index, last_term, offset)
        try:
            self._take(data)
            return self._complete() if done else None
        except SnapshotCorrupt as exc:
            self.abort()
            raise TransferFailed(f"snapshot ({last_index}, {last_term}) rejected: {exc.reason}") from exc
        except BaseException:
            self.abort()  # e.g. disk full: what reached the sink is unknown
            raise

    def abort(self) -> None:
        """Discard what was received; the receiver is finished. Idempotent."""
        self._open = False
        self.sink.discard()

    def _check_chunk(self, last_index: int, last_term: int, offset: int) -> None:
        if not self._open:
            raise SnapshotTransferError(f"receiver of ({self.last_index}, {self.last_term}) is finished")
        if (last_index, last_term) != (self.last_index, self.last_term):
            raise ChunkRejected(
                f"chunk of snapshot ({last_index}, {last_term}) while receiving "
                f"({self.last_index}, {self.last_term})",
                self._received,
            )
        if offset != self._received:
            raise ChunkRejected(f"chunk at offset {offset}, expected {self._received}", self._received)

    def _take(self, data: bytes) -> None:
        """Append ``data``, parsing the header as soon as it is complete and checksumming the payload."""
        start = self._received
        if self._meta is None:
            self._head += data
            self._parse_header()
        if self._meta is not None:
            limit = self._meta.file_size
            if start + len(data) > limit:
                raise SnapshotCorrupt(self.sink.where, f"more than the {limit} bytes the header announces")
            skip = max(0, self._meta.header_size - start)
            self._crc = zlib.crc32(memoryview(data)[skip:], self._crc)
        self.sink.write(data)
        self._received += len(data)

    def _parse_header(self) -> None:
        needed = header_size_needed(self._head, self.sink.where)
        if needed is None or len(self._head) < needed:
            return
        meta = decode_header(self._head, self.sink.where)
        if meta.id != (self.last_index, self.last_term):
            raise SnapshotCorrupt(self.sink.where, f"header is for ({meta.last_index}, {meta.last_term})")
        self._meta = meta
        self._head = b""

    def _complete(self) -> SnapshotMeta:
        meta = self._meta
        if meta is None or self._received != meta.file_size:
            expected = "?" if meta is None else meta.file_size
            raise SnapshotCorrupt(self.sink.where, f"ended after {self._received} of {expected} bytes")
        if self._crc != meta.crc32:
            raise SnapshotCorrupt(self.sink.where, "payload CRC mismatch")
        self.sink.seal()
        self._open = False
        return meta


class TransferSlot(Generic[SinkT]):
    """The one InstallSnapshot transfer a follower runs at a time, and the routing of chunks to it.

    A new transfer starts only at offset 0; offset 0 of another snapshot
    replaces the transfer in progress (the leader moved on to a newer
    snapshot, or restarted). Anything else that does not fit changes nothing
    and just answers with the offset wanted, so a leader that lost chunks, or
    whose chunks were duplicated or reordered, resumes from the right place.
    Bytes that are not a valid snapshot are discarded and logged, and the
    answer is offset 0: the leader must start over."""

    def __init__(self, open_sink: Callable[[int, int], SinkT]) -> None:
        self._open_sink = open_sink
        self._receiver: SnapshotReceiver | None = None
        self._sink: SinkT | None = None

    @property
    def receiving(self) -> tuple[int, int] | None:
        """(last_index, last_term) of the transfer in progress."""
        r = self._receiver
        return None if r is None else (r.last_index, r.last_term)

    def offer(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> tuple[int, tuple[SnapshotMeta, SinkT] | None]:
        """Route one chunk: (offset wanted next, the verified meta and its sealed sink once complete).

        The caller installs (or discards) a completed sink; this slot is then free."""
        receiver = self._receiver_for(last_index, last_term, offset)
        if receiver is None:
            return 0, None
        try:
            meta = receiver.accept(last_index, last_term, offset, data, done)
        except ChunkRejected as exc:
            return exc.next_offset, None
        except TransferFailed as exc:
            self._clear()
            logger.warning("discarded InstallSnapshot transfer: %s", exc)
            return 0, None
        except BaseException:
            self._clear()
            raise
        if meta is None:
            return receiver.next_offset, None
        sink = self._sink
        self._clear()
        assert sink is not None
        return receiver.next_offset, (meta, sink)

    def cancel(self) -> None:
        """Drop the transfer in progress, if any."""
        if self._receiver is not None:
            self._receiver.abort()
        self._clear()

    def _receiver_for(self, last_index: int, last_term: int, offset: int) -> SnapshotReceiver | None:
        current = self._receiver
        if current is not None and (current.last_index, current.last_term) == (last_index, last_term):
            return current
        if offset != 0:
            return None  # not the start of a transfer, and not the one in progress
        self.cancel()
        sink = self._open_sink(last_index, last_term)
        self._receiver, self._sink = SnapshotReceiver(last_index, last_term, sink), sink
        return self._receiver

    def _clear(self) -> None:
        self._receiver, self._sink = None, None

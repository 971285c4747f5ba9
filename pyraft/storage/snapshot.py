"""Snapshot files in a node's data directory: write, find the latest valid one, send and receive in chunks.

A snapshot replaces the log up to ``last_index``; losing it after the log
prefix was dropped would lose committed state, and loading a damaged one would
silently diverge the node. So a snapshot is written to a temp file, fsynced,
renamed into place (the directory fsynced too) and only then counts; loading
checks everything and falls back to the previous snapshot, which is kept for
exactly that case.

File ``snapshot-<last_index:020d>-<last_term:020d>.snap`` (names sort by index)::

    [magic b"PYRAFTSN"][u32 version][u32 header length][u64 last_index][u64 last_term]
    [u64 payload size][u32 crc32(payload)][u32 voter count][i64 voter]...[u32 crc32(header so far)]
    [payload]

All integers little-endian. The header has its own CRC so that a flipped bit in
``last_index`` cannot pass as a different snapshot; the file's length must be
exactly header + payload size, so a partial copy is caught before the payload
CRC is computed. The payload is opaque here (the metadata store's msgpack).

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from pyraft.storage.base import StorageError

logger = logging.getLogger("pyraft.storage")

SNAPSHOT_MAGIC: Final = b"PYRAFTSN"
SNAPSHOT_VERSION: Final = 1
MAX_VOTERS: Final = 4096  # a larger count in a header is damage, not a quorum

_FIXED = struct.Struct("<8sIIQQQII")
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
    """The received bytes are not a valid snapshot; the receiver deleted them and is finished."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers (log up to ``last_index``/``last_term``, quorum ``voters``) and its payload.

    ``size`` and ``crc32`` describe the payload; ``write_snapshot`` computes
    them, so callers leave them 0."""

    last_index: int
    last_term: int
    voters: tuple[int, ...]
    size: int = 0
    crc32: int = 0

    @property
    def header_size(self) -> int:
        return _FIXED.size + _VOTER.size * len(self.voters) + _CRC.size

    @property
    def file_size(self) -> int:
        """Bytes of the whole file (what a sender streams)."""
        return self.header_size + self.size


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
    )
    body = fixed + b"".join(_VOTER.pack(v) for v in meta.voters)
    return body + _CRC.pack(zlib.crc32(body))


def header_size_needed(prefix: bytes, where: Path | str = "snapshot") -> int | None:
    """The full header length once ``prefix`` holds the fixed part (checked), else None.

    Raises ``SnapshotCorrupt`` as soon as the fixed part is wrong, so a reader
    never waits for, or allocates, a header length read from garbage."""
    if len(prefix) < _FIXED.size:
        return None
    magic, version, header_size, _, _, _, _, count = _FIXED.unpack_from(prefix)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorrupt(where, f"bad magic {magic!r}")
    if version != SNAPSHOT_VERSION:
        raise SnapshotCorrupt(where, f"unsupported snapshot version {version} (only {SNAPSHOT_VERSION})")
    if count > MAX_VOTERS or header_size != _FIXED.size + _VOTER.size * count + _CRC.size:
        raise SnapshotCorrupt(where, f"header length {header_size} does not fit {count} voters")
    return int(header_size)


def decode_header(buf: bytes, where: Path | str = "snapshot") -> SnapshotMeta:
    """Parse and verify a header at the start of ``buf``; ``SnapshotCorrupt`` says why not."""
    header_size = header_size_needed(buf, where)
    if header_size is None or len(buf) < header_size:
        raise SnapshotCorrupt(where, f"short header: {len(buf)} bytes")
    _, _, _, index, term, size, crc, _ = _FIXED.unpack_from(buf)
    body_end = header_size - _CRC.size
    if zlib.crc32(memoryview(buf)[:body_end]) != _CRC.unpack_from(buf, body_end)[0]:
        raise SnapshotCorrupt(where, "header CRC mismatch")
    voters = tuple(v for (v,) in _VOTER.iter_unpack(buf[_FIXED.size : body_end]))
    return SnapshotMeta(index, term, voters, size, crc)


def _check_meta(meta: SnapshotMeta) -> None:
    if meta.last_index < 0 or meta.last_term < 0 or meta.size < 0 or not 0 <= meta.crc32 < 2**32:
        raise ValueError(f"invalid snapshot meta {meta}")
    if len(meta.voters) > MAX_VOTERS:
        raise ValueError(f"{len(meta.voters)} voters is more than a snapshot header holds")


# --------------------------------------------------------------------------- OS helpers


def _fsync_dir(path: Path) -> None:
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


def _install(tmp: Path, meta: SnapshotMeta, data_dir: Path) -> Path:
    """Rename a complete, fsynced temp file into place, make that durable, drop old snapshots."""
    final = snapshot_path(data_dir, meta.last_index, meta.last_term)
    os.replace(tmp, final)
    _fsync_dir(data_dir)
    _prune(data_dir, meta.last_index)
    return final


def _prune(data_dir: Path, installed: int) -> None:
    """Keep the snapshot just installed and the newest one below it (the fallback); delete older ones.

    Snapshots above ``installed`` are left alone: this call cannot tell
    whether they are valid, and ``load_latest_snapshot`` decides."""
    older = [path for (index, _, path) in list_snapshots(data_dir) if index < installed]
    for path in older[:-1]:
        path.unlink(missing_ok=True)
    if len(older) > 1:
        _fsync_dir(data_dir)


def remove_temp_files(data_dir: Path | str) -> list[Path]:
    """Delete the temp files of interrupted writes and transfers (call at startup); returns them."""
    removed = []
    for path in Path(data_dir).glob(".snapshot-*"):
        if path.suffix in (".tmp", ".partial"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------- write and load


def write_snapshot(data_dir: Path | str, meta: SnapshotMeta, data: bytes) -> Path:
    """Durably write ``data`` as the snapshot ``meta`` describes; returns its path.

    ``meta.size``/``meta.crc32`` are computed here (pass 0); non-zero values
    that disagree with ``data`` raise ValueError, as the caller mixed up payloads."""
    directory = Path(data_dir)
    meta = _with_payload(meta, data)
    header = encode_header(meta)
    tmp = directory / f".snapshot-{meta.last_index:020d}-{meta.last_term:020d}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, header)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return _install(tmp, meta, directory)


def _with_payload(meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
    size, crc = len(data), zlib.crc32(data)
    if (meta.size and meta.size != size) or (meta.crc32 and meta.crc32 != crc):
        raise ValueError(f"meta says size {meta.size} crc {meta.crc32}, data has size {size} crc {crc}")
    return replace(meta, size=size, crc32=crc)


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
        f.seek(meta.header_size)
        data = f.read(meta.size)
    if len(data) != meta.size:
        raise SnapshotCorrupt(path, f"payload is {len(data)} bytes, header says {meta.size}")
    if zlib.crc32(data) != meta.crc32:
        raise SnapshotCorrupt(path, "payload CRC mismatch")
    return meta, data


def _check_name(path: Path, meta: SnapshotMeta) -> None:
    match = _NAME.fullmatch(path.name)
    if match and (int(match[1]), int(match[2])) != (meta.last_index, meta.last_term):
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
    if offset < 0 or size < 0:
        raise ValueError(f"offset and size must be >= 0, got {offset}, {size}")
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- receiving


class SnapshotReceiver:
    """Assembles one snapshot sent in chunks (InstallSnapshot) and installs it once it verifies.

    Chunks are bytes of the sender's file, taken in order: a gap, a repeat or a
    chunk of another snapshot raises ``ChunkRejected`` (with the offset wanted
    next) and changes nothing, so a sender can resume after loss. Bytes that
    turn out not to be the announced snapshot raise ``TransferFailed``: the
    partial file is deleted and this receiver is finished. Nothing is fsynced
    until the last chunk, since a crash mid-transfer restarts it anyway."""

    def __init__(self, data_dir: Path | str, last_index: int, last_term: int) -> None:
        self.data_dir = Path(data_dir)
        self.last_index = last_index
        self.last_term = last_term
        self._tmp = self.data_dir / f".snapshot-{last_index:020d}-{last_term:020d}.partial"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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
        return self._fd is None

    def accept(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> SnapshotMeta | None:
        """Write one chunk; on the ``done`` chunk verify and install, returning the installed meta."""
        fd = self._check_chunk(last_index, last_term, offset)
        try:
            self._take(fd, data)
            return self._complete(fd) if done else None
        except SnapshotCorrupt as exc:
            self.abort()
            raise TransferFailed(f"snapshot ({last_index}, {last_term}) rejected: {exc.reason}") from exc
        except BaseException:
            self.abort()  # e.g. disk full: what reached the temp file is unknown
            raise

    def abort(self) -> None:
        """Drop the partial file; the receiver is finished. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._tmp.unlink(missing_ok=True)

    def _check_chunk(self, last_index: int, last_term: int, offset: int) -> int:
        if self._fd is None:
            raise SnapshotTransferError(f"receiver of ({self.last_index}, {self.last_term}) is finished")
        if (last_index, last_term) != (self.last_index, self.last_term):
            raise ChunkRejected(
                f"chunk of snapshot ({last_index}, {last_term}) while receiving "
                f"({self.last_index}, {self.last_term})",
                self._received,
            )
        if offset != self._received:
            raise ChunkRejected(f"chunk at offset {offset}, expected {self._received}", self._received)
        return self._fd

    def _take(self, fd: int, data: bytes) -> None:
        """Append ``data``, parsing the header as soon as it is complete and checksumming the payload."""
        start = self._received
        if self._meta is None:
            self._head += data
            self._parse_header()
        if self._meta is not None:
            limit = self._meta.file_size
            if start + len(data) > limit:
                raise SnapshotCorrupt(self._tmp, f"more than the {limit} bytes the header announces")
            skip = max(0, self._meta.header_size - start)
            self._crc = zlib.crc32(memoryview(data)[skip:], self._crc)
        _write_all(fd, data)
        self._received += len(data)

    def _parse_header(self) -> None:
        needed = header_size_needed(self._head, self._tmp)
        if needed is None or len(self._head) < needed:
            return
        meta = decode_header(self._head, self._tmp)
        if (meta.last_index, meta.last_term) != (self.last_index, self.last_term):
            raise SnapshotCorrupt(self._tmp, f"header is for ({meta.last_index}, {meta.last_term})")
        self._meta = meta
        self._head = b""

    def _complete(self, fd: int) -> SnapshotMeta:
        meta = self._meta
        if meta is None or self._received != meta.file_size:
            expected = "?" if meta is None else meta.file_size
            raise SnapshotCorrupt(self._tmp, f"ended after {self._received} of {expected} bytes")
        if self._crc != meta.crc32:
            raise SnapshotCorrupt(self._tmp, "payload CRC mismatch")
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        _install(self._tmp, meta, self.data_dir)
        return meta

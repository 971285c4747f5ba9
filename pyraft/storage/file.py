"""Crash-safe storage of the hard state, the Raft log and snapshots in one data directory.

Layout of ``data_dir``:

``state``
    The hard state: ``[magic b"PYRAFTHS"][u32 version][u32 crc32(payload)][payload]``
    with payload = msgpack ``[term, voted_for]``. Replaced atomically (temp file,
    fsync, rename, fsync of the directory), so it is always the old or the new
    state, never a mix. Damage to it is an error, never a reset to term 0.
``log-<first index:020d>``
    The log, in segments. Each segment is ``[magic b"PYRAFTLG"][u32 version]``
    then records ``[u32 payload length][u32 crc32(payload)][payload]`` with
    payload = msgpack ``[index, term, kind, data]``. Its first record has the
    index in its name, and indexes run on without gaps across segments. Only
    the last segment is ever written. A new one starts once the last passes
    ``SEGMENT_BYTES`` and at every snapshot, so that compaction deletes whole
    files and never rewrites a big one. A single-file ``log`` from before
    segments (same header and records, indexes from 1) is renamed to the first
    segment on open.
``snapshot-<last index:020d>-<last term:020d>.snap``
    Snapshots (format in ``pyraft.storage.snapshot``): the current one and the
    one before it, the fallback.
``lock``
    ``flock``-ed while a ``FileStorage`` is open, holding the owner's pid.

A crash can leave a torn or garbled tail on the last segment (the last write
was not fully on disk). ``load()`` cuts the log at the first record it cannot
trust and reports what it cut; such a tail was never acknowledged, because
``append()`` returns only after fsync. A segment cut inside its own header
(which we only ever create whole) is rewritten as empty and reported; any other
bad header means the file may not be ours, and ``load()`` raises
``StorageCorrupt`` untouched. Damage anywhere in a segment that is not the last
is ``StorageCorrupt`` too: no crash makes it (a segment is complete and synced
before the next one exists), and cutting there would drop acknowledged entries.

Compaction lags one snapshot. Saving or installing snapshot N keeps the
previous snapshot P and drops only whole segments at or below P, so that if N
is later found damaged, ``load()`` falls back to P and the log still connects
to it. Every step is ordered so that a crash between any two of them leaves
something ``load()`` reads correctly: the new snapshot is durable before the
log shrinks; segments are deleted one at a time, each deletion made durable
before the next, the oldest first when compacting (what is left is a suffix)
and the newest first when truncating or discarding (what is left is a prefix);
a log that an interrupted install should have discarded is recognised at load
(it ends below the snapshot, or has another term at its index) and discarded then.

Load reads the log from the segment holding the chosen snapshot's index, and
of that segment decodes only the entries from that index on: the ones before
it are stepped over by their length fields (see ``scan_records``), unchecked,
as are whole segments below it. They are the fallback's: should the newest
snapshot be found damaged on a later load, that load picks the older snapshot
and reads everything after it with every check.

All integers are little-endian.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import gc
import logging
import os
import re
import struct
import threading
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import msgpack

from pyraft.core.messages import Entry, EntryKind, HardState
from pyraft.storage.base import (
    MAX_RECORD_BYTES,
    PreparedSnapshot,
    RecoveryReport,
    StorageClosed,
    StorageCorrupt,
    StorageError,
    StorageLocked,
    check_batch,
    check_hard_state,
    check_snapshot_point,
    missing_before_log,
    why_log_does_not_follow,
)
from pyraft.storage.snapshot import (
    FileSink,
    SnapshotCorrupt,
    SnapshotMeta,
    TransferSlot,
    check_chunk_request,
    delete_snapshots_except,
    list_snapshots,
    publish_snapshot,
    read_chunk,
    read_snapshot,
    remove_temp_files,
    snapshot_path,
    stage_snapshot,
)

logger = logging.getLogger("pyraft.storage")

_T = TypeVar("_T")

LOG_MAGIC: Final = b"PYRAFTLG"
LOG_VERSION: Final = 1
STATE_MAGIC: Final = b"PYRAFTHS"
STATE_VERSION: Final = 1
# A segment this large gets no more records; the next append starts a new one.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
LEGACY_LOG_NAME: Final = "log"

_SEGMENT_NAME = re.compile(r"log-(\d{20})")
_LOG_HEADER = struct.Struct("<8sI")
_LOG_HEADER_BYTES = _LOG_HEADER.pack(LOG_MAGIC, LOG_VERSION)
_RECORD_HEADER = struct.Struct("<II")
_RECORD_LENGTH = struct.Struct("<I")  # the first field of a record header
_STATE_HEADER = struct.Struct("<8sII")
_KIND_BY_VALUE: dict[int, EntryKind] = {int(k): k for k in EntryKind}
_DECODE_ERRORS = (ValueError, TypeError, KeyError, struct.error, msgpack.UnpackException)

# Entry is a frozen slotted dataclass whose generated __init__ goes through
# object.__setattr__ once per field; for a million entries on restart that is
# about a second. Setting the slots through their descriptors builds the same
# object several times faster. tests/test_storage_file.py pins Entry's fields
# and checks it has no __post_init__ that this would skip.
_new_entry = (
    object.__new__,
    *(vars(Entry)[name].__set__ for name in ("index", "term", "kind", "data")),
)


# --------------------------------------------------------------------------- OS helpers


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a created or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_data(fd: int) -> None:
    """fdatasync where the OS has it: it skips flushing metadata such as mtime."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite may write less than asked (e.g. on a signal); loop until all is written."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_all(fd: int, size: int) -> bytes:
    """Read ``size`` bytes from offset 0, in as few system calls as the OS allows."""
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _write_file_atomically(path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace ``path`` so that after a crash it holds either the old or the new bytes."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _pwrite_all(fd, data, 0)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many objects that all stay alive.

    A million new entries would trigger repeated full collections that find
    nothing to free, costing about as much as the decoding itself. This pauses
    the collector process-wide for the duration of one scan (seconds at most)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- directory lock


class DirLock:
    """An exclusive ``flock`` on ``data_dir/lock``, so two nodes never share one directory.

    ``flock`` locks belong to the open file, so a second ``DirLock`` on the same
    path conflicts even inside one process, and the kernel drops the lock when
    the owner dies: no stale lock files to clean up after a crash. The file is
    never deleted (deleting a lock file lets two openers lock different inodes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``StorageLocked`` at once (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageLocked(
                    f"data directory {self.path.parent} is in use (lock {self.path} held by pid {holder})"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; safe to call when not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- hard state codec


def encode_hard_state(hs: HardState) -> bytes:
    payload: bytes = msgpack.packb([hs.term, hs.voted_for])
    return _STATE_HEADER.pack(STATE_MAGIC, STATE_VERSION, zlib.crc32(payload)) + payload


def decode_hard_state(data: bytes, where: str) -> HardState:
    """Parse a state file; any doubt raises ``StorageCorrupt`` rather than guessing."""
    if len(data) < _STATE_HEADER.size:
        raise StorageCorrupt(f"{where}: state file is {len(data)} bytes, shorter than its header")
    magic, version, crc = _STATE_HEADER.unpack_from(data)
    if magic != STATE_MAGIC:
        raise StorageCorrupt(f"{where}: not a pyraft state file (magic {magic!r})")
    if version != STATE_VERSION:
        raise StorageCorrupt(f"{where}: unsupported state format version {version}")
    payload = data[_STATE_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise StorageCorrupt(f"{where}: state file checksum mismatch; refusing to guess term and vote")
    try:
        term, voted_for = msgpack.unpackb(payload)
    except _DECODE_ERRORS as exc:
        raise StorageCorrupt(f"{where}: undecodable state payload ({exc})") from None
    if type(term) is not int or term < 0 or not (voted_for is None or type(voted_for) is int):
        raise StorageCorrupt(f"{where}: invalid state values term={term!r} voted_for={voted_for!r}")
    return HardState(term, voted_for)


# --------------------------------------------------------------------------- log codec


def encode_records(entries: Sequence[Entry], base: int, offsets: array[int]) -> bytes:
    """Frame ``entries`` as one buffer to be written at file offset ``base``.

    Appends each record's file offset to ``offsets``, which the caller adopts
    only once the write is durable."""
    pack = msgpack.Packer(use_bin_type=True).pack
    header = _RECORD_HEADER.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    pos = base
    for e in entries:
        payload = pack([e.index, e.term, e.kind, e.data])
        size = len(payload)
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"entry {e.index} is {size} bytes encoded, above {MAX_RECORD_BYTES}")
        parts.append(header(size, crc32(payload)))
        parts.append(payload)
        offsets.append(pos)
        pos += 8 + size
    return b"".join(parts)


class _Scan:
    """The trustworthy prefix of a segment, and why the scan stopped if it stopped early."""

    def __init__(self, prev_term: int) -> None:
        self.entries: list[Entry] = []
        self.offsets: array[int] = array("q")
        self.end = _LOG_HEADER.size
        self.last_term = prev_term
        self.reason: str | None = None


def scan_records(buf: bytes, first: int = 1, prev_term: int = 0, *, decode_from: int = 0) -> _Scan:
    """Decode records after the file header until the first one that cannot be trusted.

    ``first`` is the index the first record must have and ``prev_term`` the
    term of the entry before it (terms never go down along the log).

    Records before ``decode_from`` (load passes the index of the snapshot it
    chose) are only stepped over: their offsets are recorded from the length
    fields, but they are neither checksummed nor decoded, and no Entry is built
    for them. The snapshot stands for them; they matter only if that snapshot
    is found damaged on a later load, which then picks the older snapshot and
    reads them in full, with every check. The record at ``decode_from`` must
    then check out (CRC, index, decoding), which also shows the walk stayed on
    record boundaries; if it does not, or the walk cannot be followed, the
    whole buffer is scanned in full, so damage is reported exactly as without
    the shortcut.

    This loop is the restart hot path (a million records must load in
    seconds), so it only decides *where* to stop, with the least work per
    record: one unpack_from, one crc32 over a memoryview slice, one msgpack
    decode, and an Entry built without the frozen dataclass's slow __init__
    (see ``_new_entry``). ``_explain_stop`` works out *why* afterwards.

    It checks no types beyond what decoding and comparing imply: a record
    whose CRC matches was written by ``encode_records`` after ``check_batch``
    validated it, so the odds that damage yields a well-typed-looking but
    wrong record are those of a CRC32 collision *and* a valid msgpack array."""
    scan = _Scan(prev_term)
    size, pos = len(buf), _LOG_HEADER.size
    expected, last_term = first, prev_term
    if decode_from > first:
        pos = _step_over(buf, decode_from - first, scan.offsets)
        if pos < 0:
            return scan_records(buf, first, prev_term)
        expected, last_term = decode_from, 0  # the skipped terms are unknown; the snapshot checks this one
    append_entry, append_offset = scan.entries.append, scan.offsets.append
    view = memoryview(buf)
    unpack_header, crc32, unpackb = _RECORD_HEADER.unpack_from, zlib.crc32, msgpack.unpackb
    new, set_index, set_term, set_kind, set_data = _new_entry
    kinds = _KIND_BY_VALUE
    while pos < size:
        try:
            length, crc = unpack_header(buf, pos)
            stop = pos + 8 + length
            payload = view[pos + 8 : stop]
            if length == 0 or length > MAX_RECORD_BYTES or stop > size or crc32(payload) != crc:
                break
            index, term, kind, data = unpackb(payload)
            if index != expected or term < last_term:
                break
            entry = new(Entry)
            set_index(entry, index)
            set_term(entry, term)
            set_kind(entry, kinds[kind])
            set_data(entry, data)
        except _DECODE_ERRORS:
            break
        append_entry(entry)
        append_offset(pos)
        expected += 1
        last_term = term
        pos = stop
    if decode_from > first and not scan.entries:
        return scan_records(buf, first, prev_term)  # the record at decode_from did not check out
    scan.end, scan.last_term = pos, last_term
    if pos < size:
        scan.reason = _explain_stop(buf, pos, expected, last_term)
    return scan


def _step_over(buf: bytes, count: int, offsets: array[int]) -> int:
    """Follow ``count`` record length fields from the first record; append each record's offset.

    Returns where the next record starts, or -1 if a length field is
    impossible or the records run out before a next one starts: the caller
    then scans in full to say what is wrong. About 0.3 us a record against
    several for a full decode."""
    unpack_length, append = _RECORD_LENGTH.unpack_from, offsets.append
    size, pos = len(buf), _LOG_HEADER.size
    for _ in range(count):
        if pos + _RECORD_HEADER.size > size:
            return -1
        (length,) = unpack_length(buf, pos)
        if length == 0 or length > MAX_RECORD_BYTES:
            return -1
        append(pos)
        pos += _RECORD_HEADER.size + length
    return pos if pos < size else -1


def _explain_stop(buf: bytes, pos: int, expected: int, last_term: int) -> str:
    """Say why ``scan_records`` refused the record at ``pos`` (the slow, readable twin of its checks)."""
    rest = len(buf) - pos
    if rest < _RECORD_HEADER.size:
        return f"torn record header at offset {pos} ({rest} of {_RECORD_HEADER.size} bytes)"
    length, crc = _RECORD_HEADER.unpack_from(buf, pos)
    if length == 0 or length > MAX_RECORD_BYTES:
        return f"bad record length {length} at offset {pos}"
    if length > rest - _RECORD_HEADER.size:
        return f"torn record payload at offset {pos} ({rest - _RECORD_HEADER.size} of {length} bytes)"
    payload = buf[pos + _RECORD_HEADER.size : pos + _RECORD_HEADER.size + length]
    if zlib.crc32(payload) != crc:
        return f"checksum mismatch at offset {pos}"
    try:
        index, term, kind, _data = msgpack.unpackb(payload)
        _KIND_BY_VALUE[kind]
    except _DECODE_ERRORS as exc:
        return f"undecodable record at offset {pos} ({type(exc).__name__})"
    if type(index) is not int or index != expected:
        return f"index gap at offset {pos}: expected {expected} got {index!r}"
    if type(term) is not int or term < last_term:
        return f"term regression at offset {pos}: index {index} has term {term!r} after {last_term}"
    return f"record at offset {pos} rejected"  # pragma: no cover - the two checks disagree


def check_log_header(buf: bytes, where: str) -> None:
    """A wrong header means the file may not be ours: raise rather than truncate it."""
    if len(buf) < _LOG_HEADER.size:
        raise StorageCorrupt(f"{where}: log file is {len(buf)} bytes, shorter than its header")
    magic, version = _LOG_HEADER.unpack_from(buf)
    if magic != LOG_MAGIC:
        raise StorageCorrupt(f"{where}: not a pyraft log file (magic {magic!r})")
    if version != LOG_VERSION:
        raise StorageCorrupt(f"{where}: unsupported log format version {version}")


def _is_torn_header(buf: bytes) -> bool:
    """A file holding only a prefix of our header: ours (we write it whole), but cut by damage."""
    return len(buf) < _LOG_HEADER.size and _LOG_HEADER_BYTES.startswith(buf)


# --------------------------------------------------------------------------- segment names


def segment_path(data_dir: Path | str, first: int) -> Path:
    """The segment whose first record has index ``first``; names sort by index."""
    return Path(data_dir) / f"log-{first:020d}"


def list_segments(data_dir: Path | str) -> list[tuple[int, Path]]:
    """``(first index, path)`` of every log segment, in index order (contents unchecked)."""
    found = []
    for path in Path(data_dir).iterdir():
        match = _SEGMENT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match[1]), path))
    return sorted(found)


def last_segment(data_dir: Path | str) -> Path | None:
    """The segment appends go to (where a torn tail can be): for tools and fault tests."""
    segments = list_segments(data_dir)
    return segments[-1][1] if segments else None


def _chain_from(segments: list[tuple[int, Path]], base: int) -> int:
    """Position of the first segment load must read for a snapshot at ``base``.

    That is the one holding ``base`` itself (to check the log agrees with the
    snapshot there), or the first one after it. Segments before it hold only
    entries the snapshot covers; load leaves them unread (and steps over the
    ones before ``base`` in this one)."""
    return max(0, bisect.bisect_right([first for first, _ in segments], base) - 1)


# --------------------------------------------------------------------------- one segment


class _Segment:
    """One log file: the records ``first`` .. ``last_index`` and the file offset of each."""

    def __init__(self, path: Path, first: int, fd: int, prev_term: int, *, fsync: bool) -> None:
        self.path = path
        self.first = first
        self.fd = fd
        self.offsets: array[int] = array("q")  # offsets[i] = file offset of index first + i
        self.end = _LOG_HEADER.size
        self.last_term = prev_term  # of the last entry; while empty, of the entry before the segment
        self._fsync = fsync

    @classmethod
    def create(cls, path: Path, first: int, prev_term: int, *, fsync: bool) -> _Segment:
        """A new empty segment. Written whole and renamed into place, so no file exists without its header."""
        _write_file_atomically(path, _LOG_HEADER_BYTES, fsync=fsync)
        return cls(path, first, os.open(path, os.O_RDWR), prev_term, fsync=fsync)

    @property
    def last_index(self) -> int:
        return self.first + len(self.offsets) - 1

    def offset_of(self, index: int) -> int:
        """Where the record of ``index`` starts, or the end of the file for the next index."""
        position = index - self.first
        return self.offsets[position] if position < len(self.offsets) else self.end

    def term_at(self, index: int) -> int:
        """Term of a stored entry; read back from the file unless it is the last."""
        if index == self.last_index:
            return self.last_term
        offset = self.offsets[index - self.first]
        length, _crc = _RECORD_HEADER.unpack(os.pread(self.fd, _RECORD_HEADER.size, offset))
        payload = os.pread(self.fd, length, offset + _RECORD_HEADER.size)
        term: int = msgpack.unpackb(payload)[1]
        return term

    def cut(self, index: int, prev_term: int) -> None:
        """Durably drop the records from ``index`` on (before new ones land, or a crash could keep both)."""
        at = self.offset_of(index)
        os.ftruncate(self.fd, at)
        self.sync()
        del self.offsets[index - self.first :]
        self.end, self.last_term = at, prev_term

    def append(self, buf: bytes, offsets: array[int], last_term: int) -> None:
        """Write encoded records at the end in one write and one sync; adopt their offsets once durable."""
        _pwrite_all(self.fd, buf, self.end)
        self.sync()
        self.offsets.extend(offsets)
        self.end += len(buf)
        self.last_term = last_term

    def sync(self) -> None:
        if self._fsync:
            _sync_data(self.fd)

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class _TailRepair:
    """Damage found at the end of the last segment, repaired only once load has decided to keep it."""

    segment: _Segment
    size: int
    reason: str
    torn_header: bool

    def apply(self) -> tuple[int, int]:
        """Make the repair durable; returns (bytes removed, offset where they started)."""
        seg = self.segment
        if self.torn_header:
            _pwrite_all(seg.fd, _LOG_HEADER_BYTES, 0)
            seg.sync()
            logger.warning("%s: %s; rewrote the header, the segment is empty", seg.path, self.reason)
            return self.size, 0
        os.ftruncate(seg.fd, seg.end)
        seg.sync()
        logger.warning(
            "%s: %s; truncated %d bytes at offset %d, keeping %d entries up to index %d",
            seg.path,
            self.reason,
            self.size - seg.end,
            seg.end,
            len(seg.offsets),
            seg.last_index,
        )
        return self.size - seg.end, seg.end


def _scan_segment(
    path: Path, first: int, prev_term: int, *, last: bool, fsync: bool, decode_from: int = 0
) -> tuple[_Segment, list[Entry], _TailRepair | None]:
    """Read one segment in a single read and find its trustworthy records; changes nothing on disk.

    Records before ``decode_from`` are stepped over, not decoded (see ``scan_records``)."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        buf = _pread_all(fd, size)
        seg = _Segment(path, first, fd, prev_term, fsync=fsync)
        if _is_torn_header(buf):
            reason = f"torn file header ({size} of {_LOG_HEADER.size} bytes)"
            _refuse_unless_last(path, reason, last)
            return seg, [], _TailRepair(seg, size, reason, torn_header=True)
        check_log_header(buf, str(path))
        scan = scan_records(buf, first, prev_term, decode_from=decode_from)
        del buf
        seg.offsets, seg.end, seg.last_term = scan.offsets, scan.end, scan.last_term
        if scan.reason is None:
            return seg, scan.entries, None
        _refuse_unless_last(path, scan.reason, last)
        return seg, scan.entries, _TailRepair(seg, size, scan.reason, torn_header=False)
    except BaseException:
        os.close(fd)
        raise


def _refuse_unless_last(path: Path, reason: str, last: bool) -> None:
    if not last:
        raise StorageCorrupt(
            f"{path}: {reason} in a log segment that is not the last; no crash leaves that, "
            "and cutting the log there would drop acknowledged entries"
        )


# --------------------------------------------------------------------------- the segmented log


class _Log:
    """The chain of segments load found, and every change to it.

    ``base_index``/``base_term`` is the snapshot the visible log follows. The
    chain may still begin with entries at or below it (kept so the fallback
    snapshot still connects), and ``below`` lists segment files wholly below
    it that load did not read. The last segment always exists and takes the
    appends."""

    def __init__(
        self,
        data_dir: Path,
        segments: list[_Segment],
        below: list[Path],
        base: tuple[int, int],
        *,
        fsync: bool,
        segment_bytes: int,
    ) -> None:
        self.data_dir = data_dir
        self.segments = segments
        self.below = below
        self.base_index, self.base_term = base
        self._fsync = fsync
        self._segment_bytes = segment_bytes

    @property
    def last_index(self) -> int:
        return self.segments[-1].last_index

    @property
    def last_term(self) -> int:
        return self.segments[-1].last_term

    @property
    def first_stored(self) -> int:
        return self.segments[0].first

    def term_at(self, index: int) -> int:
        """Term at ``index`` in [base_index, last_index]; the snapshot answers for its own index."""
        if index == self.base_index:
            return self.base_term
        return self.stored_term(index)

    def stored_term(self, index: int) -> int:
        """Term of the entry the segments hold at ``index`` (which must be stored)."""
        segments = self.segments
        if index == segments[-1].last_index:
            return segments[-1].last_term
        return segments[self._position(index)].term_at(index)

    def holds(self, index: int, term: int) -> bool:
        """Whether the segments hold the entry (``index``, ``term``)."""
        return self.first_stored <= index <= self.last_index and self.stored_term(index) == term

    def write(self, entries: Sequence[Entry]) -> None:
        """Replace everything from ``entries[0].index`` on with ``entries`` (already validated).

        The records are encoded before anything changes, so an entry too
        large to store leaves the log as it was."""
        first = entries[0].index
        seg = self.segments[-1]
        cut = first != seg.first + len(seg.offsets)  # else extending the log: no search, nothing to cut
        if cut:
            position = self._position(first)
            seg = self.segments[position]
            at = seg.offset_of(first)
        else:
            at = seg.end
        roll = at >= self._segment_bytes and first > seg.first
        offsets: array[int] = array("q")
        buf = encode_records(entries, _LOG_HEADER.size if roll else at, offsets)
        if cut:
            self._truncate_from(first, position)
        if roll:
            seg = self._roll(first)
        seg.append(buf, offsets, entries[-1].term)

    def follow_snapshot(self, index: int, term: int) -> None:
        """The snapshot (``index``, ``term``) now stands for the log up to it; appends go to a new segment."""
        self.base_index, self.base_term = index, term
        if self.segments[-1].offsets:
            self._roll(self.last_index + 1)

    def drop_through(self, index: int) -> None:
        """Delete every segment holding only entries at or below ``index``, oldest first.

        Each deletion is durable before the next, so a crash leaves a suffix of
        the chain, never one with a hole. The last segment always stays."""
        while self.below:
            self._unlink(self.below.pop(0))
        while len(self.segments) > 1 and self.segments[0].last_index <= index:
            self._remove(self.segments.pop(0))

    def discard(self, index: int, term: int) -> None:
        """Delete the whole log (newest first); start an empty one after snapshot (``index``, ``term``)."""
        while self.segments:
            self._remove(self.segments.pop())
        while self.below:
            self._unlink(self.below.pop())
        self.base_index, self.base_term = index, term
        self._roll(index + 1)

    def close(self) -> None:
        for seg in self.segments:
            seg.close()
        self.segments = []

    def _position(self, index: int) -> int:
        """Position of the segment holding ``index`` (or that ``index`` would be appended to)."""
        return bisect.bisect_right([seg.first for seg in self.segments], index) - 1

    def _truncate_from(self, index: int, position: int) -> None:
        """Drop entries from ``index`` on: later segments (newest first), then the tail of the holder."""
        prev_term = self.term_at(index - 1) if index - 1 >= self.base_index else 0
        while len(self.segments) > position + 1:
            self._remove(self.segments.pop())
        self.segments[position].cut(index, prev_term)

    def _roll(self, first: int) -> _Segment:
        prev_term = self.segments[-1].last_term if self.segments else self.base_term
        seg = _Segment.create(segment_path(self.data_dir, first), first, prev_term, fsync=self._fsync)
        self.segments.append(seg)
        return seg

    def _remove(self, seg: _Segment) -> None:
        seg.close()
        self._unlink(seg.path)

    def _unlink(self, path: Path) -> None:
        os.unlink(path)
        if self._fsync:
            _fsync_dir(self.data_dir)


def _scan_chain(
    chain: list[tuple[int, Path]], *, fsync: bool, decode_from: int = 0
) -> tuple[list[_Segment], list[Entry], _TailRepair | None]:
    """Read the segments load needs, in order, checking that each continues the one before.

    Entries before ``decode_from`` (the chosen snapshot's index: only the
    first segment of the chain holds any) are stepped over, not decoded.

    The cyclic GC stays paused for the whole chain: re-enabled between
    segments, it could run a full collection over every entry decoded so far."""
    segments: list[_Segment] = []
    entries: list[Entry] = []
    repair = None
    try:
        with _gc_paused():
            for position, (first, path) in enumerate(chain):
                if segments and first != segments[-1].last_index + 1:
                    expected = segments[-1].last_index + 1
                    raise StorageCorrupt(
                        f"{path}: log segment starts at index {first} but the one before ends at "
                        f"{expected - 1}"
                        + (f": entries {expected}..{first - 1} are missing" if first > expected else "")
                    )
                prev_term = segments[-1].last_term if segments else 0
                last = position == len(chain) - 1
                seg, found, repair = _scan_segment(
                    path, first, prev_term, last=last, fsync=fsync, decode_from=decode_from
                )
                segments.append(seg)
                if entries:
                    entries.extend(found)
                else:
                    entries = found
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    return segments, entries, repair


class _SnapshotReader:
    """``read_snapshot(path)`` in a thread of its own; ``result()`` waits and returns or raises it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._result: tuple[SnapshotMeta, bytes] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name=f"read {path.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self._result = read_snapshot(self.path)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> tuple[SnapshotMeta, bytes]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class _ChainScan:
    """``_scan_chain`` of the segments load reads for a snapshot at ``base``, done at once.

    An error is kept, not raised, until ``result()``: a scan made for a
    snapshot that load then does not choose must change nothing and say
    nothing. ``discard()`` closes what an unused scan opened."""

    def __init__(self, segments: list[tuple[int, Path]], base: int, *, fsync: bool) -> None:
        self.start = _chain_from(segments, base)
        self._found: tuple[list[_Segment], list[Entry], _TailRepair | None] | None = None
        self._error: Exception | None = None
        try:
            self._found = _scan_chain(segments[self.start :], fsync=fsync, decode_from=base)
        except Exception as exc:
            self._error = exc

    def result(self) -> tuple[list[_Segment], list[Entry], _TailRepair | None]:
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found

    def discard(self) -> None:
        if self._found is not None:
            for seg in self._found[0]:
                seg.close()
            self._found = None


# --------------------------------------------------------------------------- the storage


@dataclass
class _Recovered:
    """What load decided, before anything on disk changes for it."""

    log: _Log
    entries: list[Entry]
    repair: _TailRepair | None
    discard_reason: str | None


class FileStorage:
    """``Storage`` in a directory: an atomically replaced state file, log segments and snapshots.

    Durability: ``save_hard_state``, ``append``, ``save_snapshot`` and an
    installing ``receive_chunk`` return only once their data is on disk.
    ``append`` is a group commit: all records of one call go out in one write
    and one fdatasync. A call that also drops a conflicting suffix first makes
    the truncation durable (one more fdatasync), because otherwise a crash
    could keep the new records *and* the old ones behind them, and recovery
    would splice two different histories into one log.

    ``load()`` should be the first call; any other call before it recovers
    the log anyway (it needs to know where records are), but only ``load()``
    checks that the hard state and the log belong together.

    After any I/O error the storage refuses further use (like PostgreSQL after a
    failed fsync, it cannot know what reached the disk); close it and open a new
    one to recover from what is really there.

    .. warning::
       ``fsync=False`` turns off every fsync and gives **no durability at all**:
       a power loss can lose or mangle acknowledged entries, votes and
       snapshots. It exists only to measure how much time fsync costs in
       benchmarks. Never use it for a node that takes part in a real quorum.
    """

    def __init__(
        self, data_dir: Path | str, *, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.data_dir = Path(data_dir)
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._state_path = self.data_dir / "state"
        self._create_dir()
        self._lock = DirLock(self.data_dir / "lock")
        self._lock.acquire()
        try:
            self._remove_temp_files()
        except BaseException:
            self._lock.release()
            raise
        self._closed = False
        self._failed: BaseException | None = None
        self._hs: HardState | None = None  # the durable hard state, once read or written
        self._log: _Log | None = None  # None until recovered
        self._snapshot: SnapshotMeta | None = None
        self._fallback: SnapshotMeta | None = None  # the previous snapshot, while this object knows it
        self._payload: bytes | None = None  # snapshot payload load verified, handed out once
        self._transfer = TransferSlot(lambda index, term: FileSink(self.data_dir, index, term, fsync=fsync))

    # ----------------------------------------------------------------- Storage API

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        """Read the hard state, pick the snapshot, scan the log after it, repair what a crash left; report.

        Raises ``StorageCorrupt`` if the state file is damaged, if a log file
        is not a pyraft log, if the log has a hole or damage a crash cannot
        explain, if no valid snapshot covers what the log no longer holds, or
        if the log or a snapshot exists but the state file is missing: entries
        are only ever stored after the term that produced them was saved, so
        the term and vote were lost and guessing could make this node vote
        twice in one term."""
        self._check_usable()
        state_found, hs = self._read_state()
        entries, report = self._guarded(self._recover)
        if not state_found and (entries or self._snapshot is not None):
            last_term = entries[-1].term if entries else self._snapshot.last_term if self._snapshot else 0
            raise StorageCorrupt(
                f"{self._state_path}: state file missing but the log holds {len(entries)} entries "
                f"and the snapshot is {self._snapshot and self._snapshot.id} (last term {last_term}); "
                "refusing to restart at term 0"
            )
        return hs, entries, report

    def snapshot(self) -> SnapshotMeta | None:
        self._check_usable()
        self._ensure_log()
        return self._snapshot

    def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The current snapshot, verified again unless load just did (its payload is then handed out once)."""
        meta = self.snapshot()
        if meta is None:
            return None
        if self._payload is not None:
            data, self._payload = self._payload, None
            return meta, data
        path = snapshot_path(self.data_dir, *meta.id)
        try:
            return self._guarded(lambda: read_snapshot(path))
        except SnapshotCorrupt as exc:
            raise StorageCorrupt(f"current snapshot damaged since it was checked: {exc}") from exc

    def save_hard_state(self, hs: HardState) -> None:
        """Atomically replace the state file (skipped if ``hs`` is already the durable state)."""
        self._check_usable()
        current = self._hs if self._hs is not None else self._read_state()[1]
        check_hard_state(current, hs)
        if hs != current:
            data = encode_hard_state(hs)
            self._guarded(lambda: _write_file_atomically(self._state_path, data, fsync=self._fsync))
            self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Drop stored entries at or after ``entries[0].index``, append ``entries``; durable on return.

        Raises ValueError, writing nothing, if the batch has a gap, starts at or
        below the snapshot, is not contiguous, lowers the term, or holds an
        invalid or oversized entry."""
        self._check_usable()
        if not entries:
            return
        log = self._log or self._ensure_log()
        first, last = entries[0].index, log.last_index
        if first == last + 1:  # the common case, kept cheap: extending the log
            prev_term = log.last_term
        elif log.base_index < first <= last:
            prev_term = self._guarded(lambda: log.term_at(first - 1))
        else:
            prev_term = 0  # check_batch refuses it
        check_batch(entries, last, prev_term, log.base_index + 1)
        self._guarded(lambda: log.write(entries))

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> SnapshotMeta:
        """Durably store a snapshot at ``meta.last_index``, then compact the log one snapshot behind.

        The snapshot file is durable before the log shrinks. Returns ``meta``
        with the payload's size and CRC filled in."""
        self._check_usable()
        self._check_snapshot_point(meta)  # before writing a file that would be refused
        return self.save_prepared_snapshot(self.prepare_snapshot(meta, data))

    def prepare_snapshot(self, meta: SnapshotMeta, data: bytes) -> PreparedSnapshot:
        """Writes and syncs the file under a temp name; reads and changes no log state."""
        self._check_usable()
        written, tmp = self._guarded(lambda: stage_snapshot(self.data_dir, meta, data, fsync=self._fsync))
        return PreparedSnapshot(written, tmp)

    def save_prepared_snapshot(self, prepared: PreparedSnapshot) -> SnapshotMeta:
        tmp: Path = prepared.staged
        try:
            self._check_usable()
            self._check_snapshot_point(prepared.meta)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written = prepared.meta
        self._guarded(lambda: publish_snapshot(self.data_dir, written, tmp, fsync=self._fsync))
        self._guarded(lambda: self._adopt(written, log_follows=True))
        return written

    def _check_snapshot_point(self, meta: SnapshotMeta) -> None:
        log = self._ensure_log()
        check_snapshot_point(
            meta.last_index,
            meta.last_term,
            self._snapshot.last_index if self._snapshot else 0,
            log.last_index,
            lambda i: self._guarded(lambda: log.term_at(i)),
        )

    def read_snapshot_chunk(
        self, last_index: int, last_term: int, offset: int, size: int
    ) -> tuple[bytes, bool] | None:
        """The current (or previous) snapshot file's bytes for a leader to stream; None once it is gone."""
        self._check_usable()
        check_chunk_request(offset, size)
        self._ensure_log()
        meta = next(
            (m for m in (self._snapshot, self._fallback) if m and m.id == (last_index, last_term)), None
        )
        if meta is None:
            return None
        try:
            data = read_chunk(snapshot_path(self.data_dir, last_index, last_term), offset, size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._failed = exc
            raise
        return data, offset + len(data) >= meta.file_size

    def receive_chunk(
        self, last_index: int, last_term: int, offset: int, data: bytes, done: bool
    ) -> tuple[int, SnapshotMeta | None]:
        """Take one InstallSnapshot chunk; install the snapshot (durably) when it completes one.

        See ``TransferSlot`` for how chunks that do not fit are answered."""
        self._check_usable()
        self._ensure_log()
        next_offset, completed = self._guarded(
            lambda: self._transfer.offer(last_index, last_term, offset, data, done)
        )
        if completed is None:
            return next_offset, None
        meta, sink = completed
        if self._snapshot is not None and meta.last_index <= self._snapshot.last_index:
            self._guarded(sink.discard)  # older than what we hold: nothing to install
        else:
            self._guarded(lambda: self._install(meta, sink))
        return next_offset, meta

    def close(self) -> None:
        """Drop any transfer in progress, close the log and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._transfer.cancel()
            if self._log is not None:
                self._log.close()
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- extras

    @property
    def syncs(self) -> bool:
        return self._fsync

    @property
    def first_index(self) -> int:
        """The lowest index ``append`` accepts: one after the snapshot."""
        self._check_usable()
        return self._ensure_log().base_index + 1

    @property
    def last_index(self) -> int:
        """Index of the last stored entry, or of the snapshot if the log holds nothing after it."""
        self._check_usable()
        return self._ensure_log().last_index

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- recovery

    def _ensure_log(self) -> _Log:
        if self._log is None:
            self._guarded(self._recover)
        assert self._log is not None
        return self._log

    def _recover(self) -> tuple[list[Entry], RecoveryReport]:
        """Decide what the durable state is, and only then repair the disk to match it."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._migrate_single_file_log()
        notes: list[str] = []
        found = self._recover_log(notes)
        log, entries = found.log, found.entries
        cut, first_bad, reason = 0, None, None
        if found.discard_reason is not None:
            note = f"discarded the log ({found.discard_reason}): an interrupted snapshot install left it"
            logger.warning("%s: %s", self.data_dir, note)
            notes.append(note)
            log.discard(log.base_index, log.base_term)
            entries = []
        elif found.repair is not None:
            cut, first_bad = found.repair.apply()
            reason = found.repair.reason
        if not log.segments:
            log.discard(log.base_index, log.base_term)  # no segment at all yet: start the first one
        skip = log.base_index + 1 - (entries[0].index if entries else 0)
        if entries and skip > 0:
            del entries[:skip]
        self._log = log
        return entries, RecoveryReport(len(entries), cut, first_bad, reason, tuple(notes))

    def _recover_log(self, notes: list[str]) -> _Recovered:
        """Pick the snapshot, read the segments after it, and decide; raises before changing anything.

        The newest snapshot file is read and checked in a thread (the read and
        the CRC of a payload of 100+ MB release the GIL) while this thread
        scans the log as if that snapshot will be chosen, which it nearly
        always is. Only once the choice is made is that scan used, or closed
        and done again from the snapshot actually chosen; an error it met is
        raised only if it is used. So the outcome is the sequential one."""
        segments = list_segments(self.data_dir)
        listed = list_snapshots(self.data_dir)
        newest = _SnapshotReader(listed[-1][2]) if listed else None
        guess = listed[-1][0] if listed else 0
        try:
            scanned = _ChainScan(segments, guess, fsync=self._fsync)
            try:
                chosen, damaged = self._choose_snapshot(segments, notes, newest)
            except BaseException:
                scanned.discard()
                raise
        finally:
            if newest is not None:
                newest.join()
        meta = chosen[0] if chosen else None
        base = meta.id if meta else (0, 0)
        if base[0] != guess:
            scanned.discard()
            scanned = _ChainScan(segments, base[0], fsync=self._fsync)
        start = scanned.start
        chain, entries, repair = scanned.result()
        log = _Log(
            self.data_dir,
            chain,
            [path for _, path in segments[:start]],
            base,
            fsync=self._fsync,
            segment_bytes=self._segment_bytes,
        )
        try:
            why = None
            if chain:
                why = why_log_does_not_follow(*base, log.last_index, log.stored_term, log.first_stored)
            held = base[0] if why or not chain else max(base[0], log.last_index)
            if damaged and max(damaged) > held:
                raise StorageCorrupt(
                    f"{self.data_dir}: snapshot at index {max(damaged)} is damaged and the log and "
                    f"older snapshots reach only index {held}; refusing to start with less than was "
                    f"durable ({'; '.join(notes)})"
                )
        except BaseException:
            log.close()
            raise
        self._snapshot, self._fallback = meta, None
        self._payload = chosen[1] if chosen else None
        return _Recovered(log, entries, repair, why)

    def _choose_snapshot(
        self, segments: list[tuple[int, Path]], notes: list[str], newest: _SnapshotReader | None = None
    ) -> tuple[tuple[SnapshotMeta, bytes] | None, list[int]]:
        """The newest valid snapshot the log connects to, and the indexes of damaged ones skipped.

        ``newest`` is the newest file already being read (``_recover_log``)."""
        damaged: list[int] = []
        newest_valid = 0  # of the valid snapshots the log does not connect to
        for index, _term, path in reversed(list_snapshots(self.data_dir)):
            try:
                meta, data = newest.result() if newest and newest.path == path else read_snapshot(path)
            except SnapshotCorrupt as exc:
                self._skip(notes, f"skipped snapshot {path.name}: {exc.reason}")
                damaged.append(index)
                continue
            if segments:
                start = segments[_chain_from(segments, index)][0]
                if start > index + 1:
                    self._skip(notes, f"skipped snapshot {path.name}: the log starts at {start}, after a gap")
                    newest_valid = max(newest_valid, index)
                    continue
            return (meta, data), damaged
        start = segments[_chain_from(segments, newest_valid)][0] if segments else 1
        if start > newest_valid + 1:
            raise StorageCorrupt(f"{self.data_dir}: {missing_before_log(start, newest_valid, notes)}")
        return None, damaged

    def _skip(self, notes: list[str], note: str) -> None:
        logger.warning("%s: %s", self.data_dir, note)
        notes.append(note)

    def _migrate_single_file_log(self) -> None:
        """Rename the single ``log`` file of older versions to the first segment (once, atomically).

        A file that is not a pyraft log is left where it is, and load fails."""
        legacy = self.data_dir / LEGACY_LOG_NAME
        try:
            with legacy.open("rb") as f:
                head = f.read(_LOG_HEADER.size)
        except FileNotFoundError:
            return
        if not _is_torn_header(head):
            check_log_header(head, str(legacy))
        target = segment_path(self.data_dir, 1)
        if target.exists():
            raise StorageCorrupt(f"{legacy}: both it and {target.name} exist; which log is this node's?")
        os.replace(legacy, target)
        if self._fsync:
            _fsync_dir(self.data_dir)
        logger.info("%s: renamed the single-file log to the first segment %s", self.data_dir, target.name)

    # ----------------------------------------------------------------- snapshots

    def _install(self, meta: SnapshotMeta, sink: FileSink) -> None:
        """Put a received snapshot in place; keep the log after it only if the log has its last entry."""
        log = self._ensure_log()
        follows = log.holds(meta.last_index, meta.last_term)
        sink.install()
        self._adopt(meta, log_follows=follows)

    def _adopt(self, meta: SnapshotMeta, *, log_follows: bool) -> None:
        """Make the durable snapshot ``meta`` current and compact one snapshot behind it.

        With a log that continues it, the previous snapshot stays as the
        fallback and the log keeps everything after the fallback. Without one
        (a discarded log), nothing older connects any more, so all of it goes."""
        log = self._ensure_log()
        previous = self._snapshot
        fallback = previous if previous and previous.last_index < meta.last_index else self._fallback
        if log_follows:
            log.follow_snapshot(*meta.id)
            if fallback is not None:
                log.drop_through(fallback.last_index)
        else:
            fallback = None
            log.discard(*meta.id)
        self._snapshot, self._fallback, self._payload = meta, fallback, None
        keep = {meta.id} | ({fallback.id} if fallback else set())
        delete_snapshots_except(self.data_dir, keep, fsync=self._fsync)

    # ----------------------------------------------------------------- internals

    def _create_dir(self) -> None:
        """Create the data directory if needed and make its existence durable."""
        missing: list[Path] = []
        path = self.data_dir.absolute()
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for path in reversed(missing):  # outermost first; each new entry is made durable in its parent
            path.mkdir()
            if self._fsync:
                _fsync_dir(path.parent)

    def _remove_temp_files(self) -> None:
        """Delete what interrupted writes left: they never counted, and their names would collide."""
        self._state_path.with_name("state.tmp").unlink(missing_ok=True)
        for path in self.data_dir.glob("log-*.tmp"):
            path.unlink()
        remove_temp_files(self.data_dir)

    def _read_state(self) -> tuple[bool, HardState]:
        """Return (found, hard state); a missing file is a fresh node at term 0."""
        try:
            data = self._state_path.read_bytes()
        except FileNotFoundError:
            hs, found = HardState(), False
        else:
            hs, found = decode_hard_state(data, str(self._state_path)), True
        self._hs = hs
        return found, hs

    def _guarded(self, action: Callable[[], _T]) -> _T:
        """Run an I/O action; on an OS error poison the storage, since disk contents are now unknown."""
        try:
            return action()
        except OSError as exc:
            self._failed = exc
            raise

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageClosed(f"storage at {self.data_dir} is closed")
        if self._failed is not None:
            raise StorageError(
                f"storage at {self.data_dir} failed earlier ({self._failed!r}); close and reopen it"
            )

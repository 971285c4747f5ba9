"""Crash-safe storage of the hard state and the Raft log in one data directory.

Layout of ``data_dir``:

``state``
    The hard state: ``[magic b"PYRAFTHS"][u32 version][u32 crc32(payload)][payload]``
    with payload = msgpack ``[term, voted_for]``. Replaced atomically (temp file,
    fsync, rename, fsync of the directory), so it is always the old or the new
    state, never a mix. Damage to it is an error, never a reset to term 0.
``log``
    ``[magic b"PYRAFTLG"][u32 version]`` then records
    ``[u32 payload length][u32 crc32(payload)][payload]`` with payload = msgpack
    ``[index, term, kind, data]``; indexes run 1, 2, 3... One file for now; log
    compaction will split it into segments, which is why all knowledge of record
    positions lives in ``_LogFile``.
``lock``
    ``flock``-ed while a ``FileStorage`` is open, holding the owner's pid.

A crash can leave a torn or garbled tail on the log (the last write was not
fully on disk). ``load()`` cuts the log at the first record it cannot trust and
reports what it cut; such a tail was never acknowledged, because ``append()``
returns only after fsync. A log cut inside its own header (which we only ever
create whole) is rewritten as empty and reported; any other bad header means
the file may not be ours, and ``load()`` raises ``StorageCorrupt`` untouched.

All integers are little-endian.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import msgpack

from pyraft.core.messages import Entry, EntryKind, HardState
from pyraft.storage.base import (
    MAX_RECORD_BYTES,
    RecoveryReport,
    StorageClosed,
    StorageCorrupt,
    StorageError,
    StorageLocked,
    check_batch,
    check_hard_state,
)

logger = logging.getLogger("pyraft.storage")

_T = TypeVar("_T")

LOG_MAGIC: Final = b"PYRAFTLG"
LOG_VERSION: Final = 1
STATE_MAGIC: Final = b"PYRAFTHS"
STATE_VERSION: Final = 1

_LOG_HEADER = struct.Struct("<8sI")
_LOG_HEADER_BYTES = _LOG_HEADER.pack(LOG_MAGIC, LOG_VERSION)
_RECORD_HEADER = struct.Struct("<II")
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
    """The trustworthy prefix of a log file, and why the scan stopped if it stopped early."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.offsets: array[int] = array("q")
        self.end = _LOG_HEADER.size
        self.last_term = 0
        self.reason: str | None = None


def scan_records(buf: bytes) -> _Scan:
    """Decode records after the file header until the first one that cannot be trusted.

    This loop is the restart hot path (a million records must load in
    seconds), so it only decides *where* to stop, with the least work per
    record: one unpack_from, one crc32 over a memoryview slice, one msgpack
    decode, and an Entry built without the frozen dataclass's slow __init__
    (see ``_new_entry``). ``_explain_stop`` works out *why* afterwards.

    It checks no types beyond what decoding and comparing imply: a record
    whose CRC matches was written by ``encode_records`` after ``check_batch``
    validated it, so the odds that damage yields a well-typed-looking but
    wrong record are those of a CRC32 collision *and* a valid msgpack array."""
    scan = _Scan()
    append_entry, append_offset = scan.entries.append, scan.offsets.append
    view = memoryview(buf)
    unpack_header, crc32, unpackb = _RECORD_HEADER.unpack_from, zlib.crc32, msgpack.unpackb
    new, set_index, set_term, set_kind, set_data = _new_entry
    kinds = _KIND_BY_VALUE
    size, pos = len(buf), _LOG_HEADER.size
    expected, last_term = 1, 0
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
    scan.end, scan.last_term = pos, last_term
    if pos < size:
        scan.reason = _explain_stop(buf, pos, expected, last_term)
    return scan


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


# --------------------------------------------------------------------------- the log file


class _LogFile:
    """The append-only log file and the in-memory index of where each record starts.

    Knows nothing of validation or hard state; ``FileStorage`` checks a batch
    before handing it here. Log segments (for compaction) will replace this
    class, which is why record positions are known nowhere else."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        if not path.exists():
            # Written whole and renamed into place: the file never exists without its header.
            _write_file_atomically(path, _LOG_HEADER_BYTES, fsync=fsync)
        self._fd = os.open(path, os.O_RDWR)
        self._offsets: array[int] | None = None  # offsets[i] = file offset of index i + 1
        self._end = _LOG_HEADER.size
        self._last_term = 0

    @property
    def last_index(self) -> int:
        return len(self._index())

    def recover(self) -> tuple[list[Entry], RecoveryReport]:
        """Scan the whole file in one read, cut any bad tail durably, rebuild the index."""
        size = os.fstat(self._fd).st_size
        buf = _pread_all(self._fd, size)
        if size < _LOG_HEADER.size and _LOG_HEADER_BYTES.startswith(buf):
            return [], self._repair_header(size)
        check_log_header(buf, str(self.path))
        with _gc_paused():
            scan = scan_records(buf)
        del buf
        cut = size - scan.end
        if cut:
            self._truncate_tail(scan, cut)
        self._offsets, self._end, self._last_term = scan.offsets, scan.end, scan.last_term
        report = RecoveryReport(len(scan.entries), cut, scan.end if cut else None, scan.reason)
        return scan.entries, report

    def _repair_header(self, size: int) -> RecoveryReport:
        """Rewrite a header cut short by outside damage (we only ever create it whole).

        What is left is a prefix of our own header, so the file is ours, and it
        cannot have held any entry: rewriting the header loses nothing more."""
        _pwrite_all(self._fd, _LOG_HEADER_BYTES, 0)
        self._sync()
        self._offsets, self._end, self._last_term = array("q"), _LOG_HEADER.size, 0
        reason = f"torn file header ({size} of {_LOG_HEADER.size} bytes)"
        logger.warning("%s: %s; rewrote the header, the log is empty", self.path, reason)
        return RecoveryReport(0, size, 0, reason)

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (0 for index 0); reads it back unless it is the last."""
        offsets = self._index()
        if index == len(offsets):
            return self._last_term
        if index == 0:
            return 0
        offset = offsets[index - 1]
        length, _crc = _RECORD_HEADER.unpack(os.pread(self._fd, _RECORD_HEADER.size, offset))
        payload = os.pread(self._fd, length, offset + _RECORD_HEADER.size)
        term: int = msgpack.unpackb(payload)[1]
        return term

    def write(self, entries: Sequence[Entry]) -> None:
        """Replace everything from ``entries[0].index`` on with ``entries`` (already validated)."""
        offsets = self._index()
        keep = entries[0].index - 1
        base = offsets[keep] if keep < len(offsets) else self._end
        new_offsets: array[int] = array("q")
        buf = encode_records(entries, base, new_offsets)
        if keep < len(offsets):
            # Durable before the new records land, or a crash could keep both histories.
            os.ftruncate(self._fd, base)
            self._sync()
        _pwrite_all(self._fd, buf, base)
        self._sync()
        del offsets[keep:]
        offsets.extend(new_offsets)
        self._end = base + len(buf)
        self._last_term = entries[-1].term

    def close(self) -> None:
        os.close(self._fd)

    def _index(self) -> array[int]:
        """The offset index, scanning the file first if ``recover`` has not run yet."""
        if self._offsets is None:
            self.recover()
        assert self._offsets is not None
        return self._offsets

    def _truncate_tail(self, scan: _Scan, cut: int) -> None:
        """Remove what the scan could not trust, so it can never be read or extended later."""
        os.ftruncate(self._fd, scan.end)
        self._sync()
        logger.warning(
            "%s: %s; truncated %d bytes at offset %d, keeping %d entries",
            self.path,
            scan.reason,
            cut,
            scan.end,
            len(scan.entries),
        )

    def _sync(self) -> None:
        if self._fsync:
            _sync_data(self._fd)


# --------------------------------------------------------------------------- the storage


class FileStorage:
    """``Storage`` in a directory: an atomically replaced state file and an append-only log.

    Durability: ``save_hard_state`` and ``append`` return only once their data
    is on disk. ``append`` is a group commit: all records of one call go out in
    one write and one fdatasync. A call that also drops a conflicting suffix
    first makes the truncation durable (one more fdatasync), because otherwise
    a crash could keep the new records *and* the old ones behind them, and
    recovery would splice two different histories into one log.

    ``load()`` should be the first call; ``append`` before it scans the log
    anyway (it needs to know where records are), but only ``load()`` checks
    that the hard state and log belong together.

    After any I/O error the storage refuses further use (like PostgreSQL after a
    failed fsync, it cannot know what reached the disk); close it and open a new
    one to recover from what is really there.

    .. warning::
       ``fsync=False`` turns off every fsync and gives **no durability at all**:
       a power loss can lose or mangle acknowledged entries and votes. It exists
       only to measure how much time fsync costs in benchmarks. Never use it for
       a node that takes part in a real quorum.
    """

    def __init__(self, data_dir: Path | str, *, fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self._fsync = fsync
        self._state_path = self.data_dir / "state"
        self._create_dir()
        self._lock = DirLock(self.data_dir / "lock")
        self._lock.acquire()
        try:
            self._log = _LogFile(self.data_dir / "log", fsync=fsync)
            self._state_path.with_name("state.tmp").unlink(missing_ok=True)
        except BaseException:
            self._lock.release()
            raise
        self._closed = False
        self._failed: BaseException | None = None
        self._hs: HardState | None = None  # the durable hard state, once read or written

    # ----------------------------------------------------------------- Storage API

    def load(self) -> tuple[HardState, list[Entry], RecoveryReport]:
        """Read the hard state, scan the log, cut off any untrustworthy tail, and report.

        Raises ``StorageCorrupt`` if the state file is damaged, if the log file
        is not a pyraft log, or if the log holds entries but the state file is
        missing: entries are only ever appended after the term that produced
        them was saved, so the term and vote were lost and guessing could make
        this node vote twice in one term."""
        self._check_usable()
        state_found, hs = self._read_state()
        entries, report = self._guarded(self._log.recover)
        if not state_found and entries:
            raise StorageCorrupt(
                f"{self._state_path}: state file missing but the log holds {len(entries)} entries "
                f"(last term {entries[-1].term}); refusing to restart at term 0"
            )
        return hs, entries, report

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

        Raises ValueError, writing nothing, if the batch has a gap, is not
        contiguous, lowers the term, or holds an invalid or oversized entry."""
        self._check_usable()
        if not entries:
            return
        first = entries[0].index
        last = self._guarded(lambda: self._log.last_index)
        prev_term = self._guarded(lambda: self._log.term_at(first - 1)) if 1 <= first <= last + 1 else 0
        check_batch(entries, last, prev_term)
        self._guarded(lambda: self._log.write(entries))

    def close(self) -> None:
        """Close the log and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._log.close()
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- extras

    @property
    def last_index(self) -> int:
        """Index of the last stored entry (scans the log if it was not loaded yet)."""
        self._check_usable()
        return self._guarded(lambda: self._log.last_index)

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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

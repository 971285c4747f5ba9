"""The storage actor sends a write to the worker thread only when the write waits for the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from pyraft.actors.events import Persisted
from pyraft.actors.storage import DiskItem, StorageActor
from pyraft.core.messages import Entry, HardState
from pyraft.metrics import NodeMetrics, TimedStorage
from pyraft.storage.base import Storage
from pyraft.storage.file import FileStorage
from pyraft.storage.memory import MemoryStorage


def _count_thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    return calls


async def _write_through(actor: StorageActor) -> list[object]:
    """Save a hard state and append two batches through the actor; returns what it reported."""
    items, items_rx = trio.open_memory_channel[DiskItem](10)
    inbox, inbox_rx = trio.open_memory_channel[object](10)
    await actor.save_hard_state(HardState(1, 1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run, items_rx, inbox)
        await items.send([Entry(1, 1, data=b"a"), Entry(2, 1, data=b"b")])
        first = await inbox_rx.receive()
        await items.send([Entry(3, 1, data=b"c")])
        second = await inbox_rx.receive()
        await items.aclose()
    return [first, second]


@pytest.mark.parametrize("fsync", [True, False])
async def test_only_writes_that_fsync_go_to_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    calls = _count_thread_calls(monkeypatch)
    file_storage = FileStorage(tmp_path, fsync=fsync)
    storage: Storage = TimedStorage(file_storage, NodeMetrics())  # as the node wraps it
    file_storage.load()
    try:
        assert storage.syncs is fsync
        reported = await _write_through(StorageActor(storage))
    finally:
        storage.close()
    assert reported == [Persisted(2, 1), Persisted(3, 1)]
    assert calls == (["save_hard_state", "append", "append"] if fsync else [])
    reopened = FileStorage(tmp_path)
    try:
        hard_state, entries, _ = reopened.load()
    finally:
        reopened.close()
    assert hard_state == HardState(1, 1)
    assert [e.data for e in entries] == [b"a", b"b", b"c"]


async def test_memory_storage_never_needs_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_thread_calls(monkeypatch)
    storage = MemoryStorage()
    storage.load()
    assert storage.syncs is False
    await _write_through(StorageActor(storage))
    assert calls == []

"""The storage actor sends a write to the worker thread only when the write waits for the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pyraft.actors.events import Persisted
from pyraft.actors.storage import StorageActor
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
    inbox, inbox_rx = trio.open_memory_channel[object](10)
    await actor.save_hard_state(HardState(1, 1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run, inbox)
        actor.submit([Entry(1, 1, data=b"a"), Entry(2, 1, data=b"b")])
        first = await inbox_rx.receive()
        actor.submit([Entry(3, 1, data=b"c")])
        second = await inbox_rx.receive()
        actor.close()
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


async def test_append_now_keeps_the_queue_order() -> None:
    """The raft loop may store a batch itself only when nothing is queued, being written, or
    holding the storage: otherwise the batch would pass one handed out before it."""
    storage = MemoryStorage()
    storage.load()
    actor = StorageActor(storage)
    inbox, inbox_rx = trio.open_memory_channel[object](10)
    assert not actor.append_now([Entry(1, 1, data=b"a")])  # ``run`` not parked: it may be busy
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run, inbox)
        await trio.testing.wait_all_tasks_blocked()
        assert actor.append_now([Entry(1, 1, data=b"a")])
        assert storage.last_index == 1
        actor.submit([Entry(2, 1, data=b"b")])  # handed to ``run``, not yet written
        assert not actor.append_now([Entry(3, 1, data=b"c")])
        assert await inbox_rx.receive() == Persisted(2, 1)
        await trio.testing.wait_all_tasks_blocked()
        async with actor._lock:  # a snapshot save or a chunk read holds the storage
            assert not actor.append_now([Entry(3, 1, data=b"c")])
        assert actor.append_now([Entry(3, 1, data=b"c")])
        actor.close()
    assert [e.data for e in storage.durable()[1]] == [b"a", b"b", b"c"]
    assert actor.entries_written == 3


async def test_append_now_never_for_a_storage_that_fsyncs(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=True)
    storage.load()
    actor = StorageActor(storage)
    inbox, _inbox_rx = trio.open_memory_channel[object](10)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, inbox)
            await trio.testing.wait_all_tasks_blocked()
            assert not actor.append_now([Entry(1, 1, data=b"a")])  # the fsync belongs in the thread
            actor.close()
    finally:
        storage.close()

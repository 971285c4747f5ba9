"""What MemoryStorage offers beyond the shared contract: seeding and simulated crashes."""

from __future__ import annotations

import pytest

from pyraft.core.messages import Entry, HardState
from pyraft.storage import MemoryStorage, SnapshotMeta, StorageClosed


def test_crash_hands_the_durable_state_to_a_fresh_twin() -> None:
    s = MemoryStorage()
    s.save_hard_state(HardState(2, 1))
    s.append([Entry(1, 1), Entry(2, 2, data=b"x")])
    assert s.durable() == (HardState(2, 1), (Entry(1, 1), Entry(2, 2, data=b"x")))
    twin = s.crash()
    with pytest.raises(StorageClosed):
        s.append([Entry(3, 2)])  # the dead process's handle is gone
    hs, entries, report = twin.load()
    assert (hs, entries) == (HardState(2, 1), [Entry(1, 1), Entry(2, 2, data=b"x")])
    assert report.entries_loaded == 2 and not report.repaired
    twin.append([Entry(3, 2)])
    assert s.durable()[1] == (Entry(1, 1), Entry(2, 2, data=b"x"))  # the two do not share a list


def test_a_closed_storage_can_still_be_restarted() -> None:
    s = MemoryStorage(HardState(1, None), [Entry(1, 1)])
    s.close()
    assert s.crash().load()[1] == [Entry(1, 1)]


def test_loaded_entries_are_a_copy() -> None:
    s = MemoryStorage(HardState(1, None), [Entry(1, 1)])
    s.load()[1].append(Entry(2, 1))
    assert s.last_index == 1


def test_seeding_is_validated_like_an_append() -> None:
    with pytest.raises(ValueError):
        MemoryStorage(HardState(1, None), [Entry(2, 1)])
    with pytest.raises(ValueError):
        MemoryStorage(HardState(-1, None))


def test_crash_carries_snapshots_but_not_a_transfer_in_progress() -> None:
    s = MemoryStorage(HardState(1, None), [Entry(i, 1) for i in range(1, 6)])
    saved = s.save_snapshot(SnapshotMeta(3, 1, (1,)), b"state at 3")
    leader = MemoryStorage(HardState(2, None), [Entry(i, 2) for i in range(1, 11)])
    sent = leader.save_snapshot(SnapshotMeta(9, 2, (1,)), b"leader state")
    chunk = leader.read_snapshot_chunk(*sent.id, 0, 20)
    assert chunk is not None and s.receive_chunk(*sent.id, 0, chunk[0], False) == (20, None)
    twin = s.crash()
    assert twin.durable_snapshots() == s.durable_snapshots() and list(twin.durable_snapshots()) == [(3, 1)]
    assert twin.snapshot() == saved and twin.read_snapshot() == (saved, b"state at 3")
    assert twin.receive_chunk(*sent.id, 20, b"rest", True) == (0, None)  # the partial transfer died with s
    with pytest.raises(KeyError):
        twin.damage_snapshot(9, 2, b"")

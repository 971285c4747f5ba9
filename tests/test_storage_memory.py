"""What MemoryStorage offers beyond the shared contract: seeding and simulated crashes."""

from __future__ import annotations

import pytest

from pyraft.core.messages import Entry, HardState
from pyraft.storage import MemoryStorage, StorageClosed


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

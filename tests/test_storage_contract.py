"""The Storage contract, checked against every implementation.

Each test runs on MemoryStorage and on FileStorage; ``reopen`` simulates a
restart (a crash of the in-memory twin, a close and reopen of the directory),
so whatever a test reads after it is what really survived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyraft.core.messages import Entry, EntryKind, HardState
from pyraft.storage import FileStorage, MemoryStorage, Storage, StorageClosed

Reopen = Callable[[Storage], Storage]


def make(start: int, stop: int, term: int = 1) -> list[Entry]:
    """Entries start..stop-1 in ``term`` with data that names them."""
    return [Entry(i, term, data=f"e{i}t{term}".encode()) for i in range(start, stop)]


@pytest.fixture(params=["memory", "file"])
def kind(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def opened(kind: str, tmp_path: Path) -> Iterator[tuple[Storage, Reopen]]:
    """A fresh storage (with term 1 saved, as a real node would first) and a restart function."""
    live: list[Storage] = []

    def reopen(old: Storage) -> Storage:
        if isinstance(old, MemoryStorage):
            new: Storage = old.crash()
        else:
            old.close()
            new = FileStorage(tmp_path / "data")
        live.append(new)
        return new

    first: Storage = MemoryStorage() if kind == "memory" else FileStorage(tmp_path / "data")
    live.append(first)
    first.save_hard_state(HardState(1, None))
    yield first, reopen
    for s in live:
        s.close()


def test_fresh_storage_is_empty(kind: str, tmp_path: Path) -> None:
    s: Storage = MemoryStorage() if kind == "memory" else FileStorage(tmp_path / "fresh")
    hs, entries, report = s.load()
    assert (hs, entries) == (HardState(), [])
    assert report.entries_loaded == 0 and not report.repaired
    s.close()


def test_append_then_load_round_trips(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    batch = [
        Entry(1, 1, EntryKind.NOOP),
        Entry(2, 1, data=b""),
        Entry(3, 1, data=bytes(range(256))),
        Entry(4, 2, data=b"x" * 100_000),
    ]
    s.append(batch[:2])
    s.append(batch[2:])
    hs, entries, report = reopen(s).load()
    assert hs == HardState(1, None)
    assert entries == batch
    assert all(type(e.kind) is EntryKind for e in entries)
    assert report.entries_loaded == 4 and not report.repaired


def test_conflicting_append_replaces_the_suffix(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 6, term=1))
    s.append(make(3, 5, term=2))
    assert s.load()[1] == make(1, 3, term=1) + make(3, 5, term=2)
    s = reopen(s)
    assert s.load()[1] == make(1, 3, term=1) + make(3, 5, term=2)
    s.append(make(5, 7, term=2))  # appending after a truncation continues from the new end
    assert reopen(s).load()[1] == make(1, 3, term=1) + make(3, 7, term=2)


def test_append_at_index_one_replaces_everything(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.append(make(1, 4, term=1))
    s.append(make(1, 2, term=3))
    assert reopen(s).load()[1] == make(1, 2, term=3)


def test_empty_append_is_a_no_op(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    s.append(make(1, 3))
    s.append([])
    assert s.load()[1] == make(1, 3)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(make(5, 6), id="gap-after-last"),
        pytest.param(make(0, 2), id="index-zero"),
        pytest.param([Entry(2, 1), Entry(4, 1)], id="not-contiguous-and-would-truncate"),
        pytest.param([Entry(4, 1), Entry(4, 1)], id="repeated-index"),
        pytest.param([Entry(4, 2), Entry(5, 1)], id="term-goes-down-in-batch"),
        pytest.param([Entry(3, 1)], id="term-below-predecessor"),
        pytest.param([Entry(4, 2, data="text")], id="str-data"),  # type: ignore[arg-type]
        pytest.param([Entry(4, 2, kind=7)], id="unknown-kind"),  # type: ignore[arg-type]
    ],
)
def test_invalid_append_is_rejected_and_changes_nothing(
    opened: tuple[Storage, Reopen], bad: list[Entry]
) -> None:
    s, reopen = opened
    before = make(1, 2, term=1) + make(2, 4, term=2)
    s.append(before)
    with pytest.raises(ValueError):
        s.append(bad)
    assert s.load()[1] == before
    s = reopen(s)
    assert s.load()[1] == before
    s.append(make(4, 5, term=2))  # still usable
    assert s.load()[1] == [*before, *make(4, 5, term=2)]


def test_predecessor_term_is_checked_inside_the_log(opened: tuple[Storage, Reopen]) -> None:
    """A truncating append compares with the term of the entry it keeps, not the last one."""
    s, reopen = opened
    s.append(make(1, 3, term=1) + make(3, 5, term=3))
    s = reopen(s)
    s.load()
    with pytest.raises(ValueError, match="term"):
        s.append(make(4, 5, term=2))  # index 3 has term 3
    s.append(make(3, 4, term=2))  # index 2 has term 1: fine, replaces 3..4
    assert s.load()[1] == make(1, 3, term=1) + make(3, 4, term=2)


def test_hard_state_round_trips(opened: tuple[Storage, Reopen]) -> None:
    s, reopen = opened
    s.save_hard_state(HardState(1, 3))
    s = reopen(s)
    assert s.load()[0] == HardState(1, 3)
    s.save_hard_state(HardState(1, 3))  # saving the same state again is fine
    s.save_hard_state(HardState(7, None))
    s.save_hard_state(HardState(7, 2))
    assert reopen(s).load()[0] == HardState(7, 2)


@pytest.mark.parametrize(
    "bad",
    [HardState(0, None), HardState(2, 1), HardState(2, None), HardState(-1, None)],
    ids=["term-back", "vote-changes", "vote-withdrawn", "negative-term"],
)
def test_hard_state_that_breaks_a_promise_is_rejected(opened: tuple[Storage, Reopen], bad: HardState) -> None:
    s, reopen = opened
    s.save_hard_state(HardState(2, 3))
    with pytest.raises(ValueError):
        s.save_hard_state(bad)
    assert reopen(s).load()[0] == HardState(2, 3)


def test_closed_storage_refuses_use(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageClosed):
        s.load()
    with pytest.raises(StorageClosed):
        s.append(make(1, 2))
    with pytest.raises(StorageClosed):
        s.save_hard_state(HardState(3, None))


def test_both_satisfy_the_protocol(opened: tuple[Storage, Reopen]) -> None:
    s, _ = opened
    assert isinstance(s, Storage)

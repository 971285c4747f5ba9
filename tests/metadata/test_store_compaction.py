"""compact(): the fetchable log loses what a snapshot covers; fetches below it get the snapshot's end
offset, and a broker that loads the snapshot and fetches on ends equal to the store it fetched from."""

from __future__ import annotations

import pytest

from pyraft.metadata.records import NoOpRecord
from pyraft.metadata.snapshot import SECTION_TYPES, snapshot_records, snapshot_store
from pyraft.metadata.store import MetadataStore, replay, replay_snapshot

from .test_store_snapshot import feed, history


def offsets(page: dict[str, object]) -> list[int]:
    records = page["records"]
    assert isinstance(records, list)
    return [r["offset"] for r in records]


def test_compact_drops_what_the_snapshot_covers_and_fetch_points_at_it() -> None:
    entries, _, _ = history(31, 200)
    store = MetadataStore(idempotency_keys=8)
    feed(store, entries, 1)
    logged = offsets(store.fetch(0))
    store.compact(120)
    assert store.snapshot_end_offset == 120 and store.log_start_offset == 121
    assert offsets(store.fetch(120)) == [o for o in logged if o > 120]
    assert offsets(store.fetch(150, 3)) == [o for o in logged if o > 150][:3]
    for below in (0, 1, 119):
        assert store.fetch(below) == {
            "records": [],
            "highWatermark": 200,
            "more": True,
            "snapshotEndOffset": 120,
        }
    assert [r["offset"] for r in store.dump()["log"]] == [o for o in logged if o > 120]


def test_an_older_snapshot_changes_nothing_and_a_later_one_drops_more() -> None:
    entries, _, _ = history(32, 200)
    store = MetadataStore(idempotency_keys=8)
    feed(store, entries, 1)
    store.compact(150)
    kept = store.dump()
    store.compact(100)
    assert store.dump() == kept and store.snapshot_end_offset == 150
    store.compact(200)
    assert store.dump()["log"] == [] and store.fetch(200)["more"] is False


def test_compact_past_what_is_applied_is_a_bug() -> None:
    store = MetadataStore()
    store.apply_noop(1)
    with pytest.raises(ValueError):
        store.compact(2)


def test_the_log_goes_on_after_a_compaction_and_refuses_records_it_covers() -> None:
    store = MetadataStore()
    for i in range(1, 6):
        store.apply_noop(i)
    store.compact(5)
    store.apply_noop(6)
    assert offsets(store.fetch(5)) == [6]
    broker = MetadataStore()
    broker.load_snapshot([], 5)
    with pytest.raises(ValueError):
        broker.replay_record(5, NoOpRecord())
    broker.replay_record(6, NoOpRecord())
    assert broker.dump() == store.dump()


@pytest.mark.parametrize("seed", [33, 34, 35])
def test_a_broker_catches_up_through_the_snapshot_then_the_tail(seed: int) -> None:
    """A broker at offset 0 after the prefix was compacted: snapshot records, then the log after it."""
    entries, _, _ = history(seed, 400)
    leader = MetadataStore(idempotency_keys=8)
    feed(leader, entries[:250], 1)
    encode = leader.capture()
    feed(leader, entries[250:], 251)  # applies go on while the snapshot is written
    data = encode()
    leader.compact(250)

    answer = leader.fetch(0, 10)
    assert answer["records"] == [] and answer["snapshotEndOffset"] == 250
    end, records = snapshot_records(data)
    assert end == 250
    as_json = [
        {"apiKey": r.API_KEY, "version": r.VERSION, "type": r.NAME, "record": r.to_json()} for r in records
    ]
    broker = replay_snapshot(as_json, end)
    offset, high = end, 0
    while True:
        page = leader.fetch(offset, 7)
        replay(page["records"], page["highWatermark"], store=broker)
        high = page["highWatermark"]
        if not page["more"]:
            break
        offset = page["records"][-1]["offset"]
    assert high == 400
    assert broker.dump() == leader.dump()
    assert broker.snapshot_end_offset == leader.snapshot_end_offset == 250


def test_snapshot_records_are_the_state_in_install_order() -> None:
    _, _, store = history(36, 300)
    end, records = snapshot_records(snapshot_store(store))
    assert end == 300
    kinds = [r.NAME for r in records]
    order = [cls.NAME for cls in SECTION_TYPES]
    assert kinds == sorted(kinds, key=order.index)
    loaded = MetadataStore()
    loaded.load_snapshot(records, end)
    assert loaded.dump() == {**store.dump(), "log": []}

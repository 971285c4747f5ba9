"""The log workload's view of nodes that compacted their logs, on stores built in-process.

A real ``MetadataStore`` applies a short history; one node is shown as a broker fetching
it would see it without a snapshot, the other with a snapshot (pyraft's own encoding,
paged as ``/metadata_snapshot/`` pages it) and the log after it. The end-to-end runs in
test_workloads.py cover the HTTP side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyraft.metadata import commands as c
from pyraft.metadata.commands import MetadataCommand
from pyraft.metadata.records import Record
from pyraft.metadata.snapshot import snapshot_records
from pyraft.metadata.snapshot_serving import snapshot_record_json
from pyraft.metadata.store import MetadataStore
from pyraft.testing.checkers import Verdict, check_durable, check_states
from pyraft.testing.history import Event
from pyraft.testing.workloads import FetchedSnapshot, NodeLog, SnapshotWatch, snapshots_taken, state_points

INCARNATIONS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 4)]
TOPICS = [f"{n}{n}{n}{n}{n}{n}{n}{n}-1111-4111-8111-111111111111" for n in range(1, 4)]


def history() -> list[Record]:
    """What the set and register workloads do: a broker whose host changes, topics created."""
    store = MetadataStore()
    first = c.register_broker(1, "h1", 9092, "PLAINTEXT", incarnation_id=INCARNATIONS[0])
    apply_all(store, [c.metadata_version(), first])
    current = store.broker(1)
    assert current is not None
    moved = c.change_broker(current, "h2", 9092, "PLAINTEXT", "UNFENCED", INCARNATIONS[1])
    return [
        c.metadata_version(),
        first,  # offset 2
        c.create_topic("a", TOPICS[0]),  # 3
        moved,  # 4: h2, brokerEpoch 4
        c.create_topic("b", TOPICS[1]),  # 5
    ]


def apply_all(store: MetadataStore, records: list[Record], start: int = 1) -> MetadataStore:
    for offset, record in enumerate(records, start):
        store.apply(offset, c.encode_command(MetadataCommand(record, None)))
    return store


def node_without_snapshot(records: list[Record]) -> NodeLog:
    store = apply_all(MetadataStore(), records)
    fetched = store.fetch(0)
    return NodeLog(None, tuple(fetched["records"]), fetched["highWatermark"], store.client_metadata())


def node_with_snapshot_at(records: list[Record], end: int) -> NodeLog:
    """The node snapshotted at ``end`` and compacted its log there, as pyraft does."""
    store = apply_all(MetadataStore(), records[:end])
    payload = store.capture()()
    applied, snapshot = snapshot_records(payload)
    assert applied == end
    apply_all(store, records[end:], end + 1)
    store.compact(end)
    fetched = store.fetch(end)
    pages = tuple(snapshot_record_json(r) for r in snapshot)
    return NodeLog(
        FetchedSnapshot(end, 1, pages),
        tuple(fetched["records"]),
        fetched["highWatermark"],
        store.client_metadata(),
    )


def test_a_snapshot_is_compared_with_the_log_it_replaced_and_final_states_agree() -> None:
    records = history()
    nodes = {1: node_without_snapshot(records), 2: node_with_snapshot_at(records, 4)}
    assert nodes[2].window == (4, 5) and [r["offset"] for r in nodes[2].records] == [5]
    points = state_points(nodes)
    assert set(points["state at offset 4"]) == {"node 1 log", "node 2 snapshot"}
    assert set(points["state at offset 5"]) == {"node 1 log", "node 2 snapshot 4 + log"}
    result = check_states(points)
    assert result.verdict is Verdict.OK, result.render()
    assert result.compared == {
        "state at offset 4": 2,
        "state at offset 5": 2,
        "node 1 serving at offset 5": 2,
        "node 2 serving at offset 5": 2,
    }


def test_a_snapshot_that_lost_a_change_is_caught_where_another_log_holds_it() -> None:
    records = history()
    good = node_with_snapshot_at(records, 4)
    assert good.snapshot is not None
    stale_broker = _with_host(good.snapshot.records, "h1")
    bad = NodeLog(FetchedSnapshot(4, 1, stale_broker), good.records, good.high_watermark, good.live)
    result = check_states(state_points({1: node_without_snapshot(records), 2: bad}))
    assert result.verdict is Verdict.VIOLATION
    text = result.render()
    assert "state at offset 4: node 2 snapshot differs from node 1 log: /brokers[0]/" in text
    # The store it serves still has h2: its snapshot is not what it serves either.
    assert "node 2 serving at offset 5" in text


def test_writes_in_a_snapshot_count_for_durability() -> None:
    """h1 (offset 2) was overwritten by h2 (offset 4) inside node 2's snapshot; topic a is in it."""
    records = history()
    node = node_with_snapshot_at(records, 4)
    writes = node.writes()
    assert writes.registers == {"broker-1": ('"h2"', 4)}
    assert writes.members == frozenset({("topics", '"a"')})
    assert writes.logged == frozenset({("topics", '"b"')})
    events = [
        Event(1, "invoke", "write", "broker-1", "h1", 0),
        Event(1, "ok", "write", "broker-1", "h1", 1),
        Event(1, "invoke", "write", "broker-1", "h2", 2),
        Event(1, "ok", "write", "broker-1", "h2", 3),
        *(
            Event(2, t, "add", "topics", name, at)
            for name, at in (("a", 4), ("b", 6))
            for t in ("invoke", "ok")
        ),
    ]
    offsets = {("broker-1", '"h1"'): 2, ("broker-1", '"h2"'): 4}
    result = check_durable(events, {2: writes}, lambda k: True, offsets)
    assert result.verdict is Verdict.OK and result.superseded == 1, result.render()
    # Had h2 been acknowledged at 4 but the snapshot still held h1 (epoch 2), h2 would be lost.
    stale = NodeLog(
        FetchedSnapshot(4, 1, _with_host(node.snapshot.records if node.snapshot else (), "h1", epoch=2)),
        node.records,
        node.high_watermark,
    )
    lost = check_durable(events, {2: stale.writes()}, lambda k: True, offsets)
    assert lost.missing == {2: ('broker-1="h2"',)}


def test_snapshot_watch_tells_taken_from_installed(tmp_path: Path) -> None:
    log = tmp_path / "node-3.log"
    log.write_text(
        "... INFO node=3 pyraft.snapshot: node 3: snapshot at index 200 (4629 bytes), log compacted to 100\n"
        "... INFO node=3 pyraft.snapshot: node 13: snapshot at index 999 (1 bytes), log compacted to 0\n"
    )
    assert snapshots_taken(log, 3) == {200}
    watch = SnapshotWatch()
    watch.note({3: {"snapshotIndex": 102, "logStartIndex": 103}})  # the log starts right after it
    watch.note({3: {"snapshotIndex": 200, "logStartIndex": 103}})  # an own one, compacted one behind
    watch.note({3: {"snapshotIndex": 250, "logStartIndex": 201}})  # saved, never logged
    assert watch.seen[3] == {102, 200, 250} and watch.replaced[3] == {102}
    assert watch.last[3]["snapshotIndex"] == 250


def _with_host(
    records: tuple[dict[str, Any], ...], host: str, epoch: int | None = None
) -> tuple[dict[str, Any], ...]:
    """The snapshot's records with broker 1's endpoint host (and epoch) replaced."""
    out = []
    for item in records:
        item = json.loads(json.dumps(item))
        if item["type"] == "RegisterBrokerRecord":
            item["record"]["endPoints"][0]["host"] = host
            if epoch is not None:
                item["record"]["brokerEpoch"] = epoch
        out.append(item)
    return tuple(out)

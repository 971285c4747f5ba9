"""Fetching across a compaction point: ``/metadata_fetch/`` names a snapshot, ``/metadata_snapshot/``
serves it in pages, and a broker that loads it and fetches on ends equal to the leader's store."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from pyraft.http import schemas as s
from pyraft.http.validation import check
from pyraft.metadata import snapshot_serving
from pyraft.metadata.snapshot import snapshot_records
from pyraft.metadata.store import MetadataStore, replay, replay_snapshot

from .harness import ApiNode, api_cluster, brokers, created, post, topic
from .test_fetch_events_docs import build_history


async def fetch(api: ApiNode, offset: int, page: int | None = None, path: str = "/metadata_fetch/") -> Any:
    body = {"offset": offset} if page is None else {"offset": offset, "maxRecords": page}
    response = await post(api, path, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    check(s.FETCH_RESULT, answer, "fetch answer")  # what /openapi.json promises
    return answer


async def snapshot_page(api: ApiNode, path: str) -> Any:
    response = await api.http.get(path)
    assert response.status_code == 200, response.text
    page = response.json()
    check(s.SNAPSHOT_PAGE, page, "snapshot page")
    return page


async def catch_up(api: ApiNode, page: int) -> MetadataStore:
    """A broker from offset 0: the snapshot the fetch names, page by page, then the log after it."""
    first = await fetch(api, 0, page)
    assert first["records"] == [] and first["more"] is True
    snapshot_id = first["snapshotId"]
    records: list[dict[str, Any]] = []
    path = first["snapshotPath"]
    while True:
        body = await snapshot_page(api, f"{path}&maxRecords={page}")
        assert body["snapshotId"] == snapshot_id and body["position"] == len(records)
        assert len(body["records"]) <= page
        records += body["records"]
        assert body["nextPosition"] == len(records)
        if not body["more"]:
            assert len(records) == body["totalRecords"]
            break
        path = f"/metadata_snapshot/?endOffset={snapshot_id['endOffset']}&epoch={snapshot_id['epoch']}"
        path += f"&position={body['nextPosition']}"
    assert body["nextFetchOffset"] == snapshot_id["endOffset"]
    broker = replay_snapshot(records, snapshot_id["endOffset"])
    offset = body["nextFetchOffset"]
    while True:
        tail = await fetch(api, offset, page)
        assert "snapshotId" not in tail
        replay(tail["records"], tail["highWatermark"], store=broker)
        if not tail["more"]:
            return broker
        offset = tail["records"][-1]["offset"]


async def test_a_broker_catches_up_through_the_snapshot_then_the_tail(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(leader)
        meta = await leader.snapshots.take(leader.node)
        assert leader.store.log_start_offset == meta.last_index + 1
        await brokers(leader, 7, 8)  # the log goes on after the snapshot
        await created(leader, "/register_topic/", {"name": "after"})
        for page in (1, 3, 1000):
            broker = await catch_up(leader, page)
            assert broker.dump() == leader.store.dump()
            assert broker.applied_index == leader.store.applied_index
        below = await fetch(leader, meta.last_index - 1, path="/metadata_fetch")  # the slash-less twin
        assert below["snapshotId"] == {"endOffset": meta.last_index, "epoch": meta.last_term}
        assert (await fetch(leader, meta.last_index))["records"]  # at the snapshot's end: the log


async def test_a_snapshot_that_was_replaced_is_not_found(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(leader)
        await leader.snapshots.take(leader.node)
        old = (await fetch(leader, 0))["snapshotPath"]
        await snapshot_page(leader, old)
        await topic(leader, "newer")
        newer = await leader.snapshots.take(leader.node)
        response = await leader.http.get(old)
        assert response.status_code == 404
        assert response.json()["error"] == "snapshot_not_found"
        assert "fetch again from offset 0" in response.json()["message"]
        again = await fetch(leader, 0)
        assert again["snapshotId"] == {"endOffset": newer.last_index, "epoch": newer.last_term}
        assert (await snapshot_page(leader, again["snapshotPath"]))["records"]


async def test_the_latest_snapshot_is_read_and_decoded_once(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    decode = snapshot_records

    def counting(data: bytes) -> Any:
        decoded.append(len(data))
        return decode(data)

    monkeypatch.setattr(snapshot_serving, "snapshot_records", counting)
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(leader)
        await leader.snapshots.take(leader.node)
        answer = await fetch(leader, 0)
        reads = leader.snapshots.reads
        base = answer["snapshotPath"]
        for position in range(0, 6):
            await snapshot_page(leader, base.replace("position=0", f"position={position}") + "&maxRecords=1")
        await fetch(leader, 0)
        assert len(decoded) == 1 and leader.snapshots.reads == reads


async def test_paging_bounds_and_bad_parameters(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(leader)
        meta = await leader.snapshots.take(leader.node)
        base = f"/metadata_snapshot/?endOffset={meta.last_index}&epoch={meta.last_term}"
        total = (await snapshot_page(leader, base))["totalRecords"]
        assert total > 3
        end = await snapshot_page(leader, f"{base}&position={total}")
        assert end["records"] == [] and end["more"] is False and end["nextPosition"] == total
        last = await snapshot_page(leader, f"{base}&position={total - 1}&maxRecords=10000")
        assert len(last["records"]) == 1 and last["more"] is False
        bad = {
            f"{base}&position={total + 1}": "out_of_range",
            f"{base}&maxRecords=0": "out_of_range",
            f"{base}&maxRecords=10001": "out_of_range",
            f"{base}&position=-1": "out_of_range",
            f"{base}&position=x": "invalid_type",
            f"/metadata_snapshot/?epoch={meta.last_term}": "missing_field",
            f"/metadata_snapshot/?endOffset={meta.last_index}": "missing_field",
            f"/metadata_snapshot?endOffset=1.5&epoch={meta.last_term}": "invalid_type",
        }
        for path, code in bad.items():
            response = await leader.http.get(path)
            assert (response.status_code, response.json()["error"]) == (422, code), path


async def test_without_a_snapshot(autojump_clock: trio.abc.Clock) -> None:
    async with api_cluster() as c:
        leader = await c.wait_ready()
        await build_history(leader)
        response = await leader.http.get("/metadata_snapshot/?endOffset=3&epoch=1")
        assert (response.status_code, response.json()["error"]) == (404, "no_snapshot")
        leader.store.compact(leader.store.applied_index)  # compacted, but no snapshot to name
        response = await post(leader, "/metadata_fetch/", {"offset": 0})
        assert (response.status_code, response.json()["error"]) == (503, "snapshot_unavailable")
        assert response.headers["Retry-After"] == "1"

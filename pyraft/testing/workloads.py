"""The client workloads, driving the metadata REST API of real nodes (see :mod:`pyraft.testing.workload`).

``registers``
    A few brokers are registered at setup; concurrent clients overwrite a broker's
    ``brokerHost`` with ``/register_broker_change/`` (every value unique, so a read
    names the write it saw) and read it back with ``/get_broker/{id}`` (linearizable
    reads, the default). Each broker is one register key, ``broker-<id>``. Two
    concurrent changes of one broker race on its epoch and one gets 409: a definite
    ``fail``, which the register model allows. After the full restart every node
    reads every broker once more, so a write lost in the restart breaks linearizability.
``set``
    Clients create topics with unique names through ``/register_topic/`` (``add`` to
    the key ``topics``); after the full restart every node lists ``/get_topic/``.
``log``
    One client watches every node's ``/status`` (which snapshots it took or installed).
    After the full restart every node is read as a KRaft broker would read it: from
    offset 0, following a ``snapshotId`` (its pages from ``/metadata_snapshot/``, then
    ``/metadata_fetch/`` on from its ``endOffset``). Where two nodes both hold log
    offsets their records must agree (no record twice); the state each snapshot holds
    must equal what the other nodes' logs give at that offset, every node's final state
    must be the same, and the store a node serves must equal its snapshot plus its log;
    and every acknowledged write of the other workloads must have survived on every
    node (see :func:`pyraft.testing.checkers.check_durable` for what survives a snapshot).

No request is retried under the same operation and no ``Idempotency-Key`` is sent:
each recorded operation is exactly one HTTP request. After an ``info`` a client
continues under a fresh process id, since its request may still take effect.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pyraft.metadata.records import RecordError
from pyraft.metadata.store import MetadataStore, replay, replay_snapshot
from pyraft.testing.api import Reply, request
from pyraft.testing.checkers import (
    DurabilityResult,
    LogResult,
    NodeWrites,
    SetResult,
    StateResult,
    Verdict,
    check_durable,
    check_log,
    check_registers,
    check_set,
    check_states,
)
from pyraft.testing.harness import FaultCluster
from pyraft.testing.history import Event, HistoryRecorder, OpFunction
from pyraft.testing.linearizability import canonical
from pyraft.testing.workload import CheckOutcome, ProcessIds, Workload

Call = Callable[[], Awaitable[Reply]]  # one request, ready to send
SET_KEY = "topics"
BROKER_PREFIX = "broker-"
FINAL_TIMEOUT = 60.0  # how long the final reads may keep trying on the healed cluster
PAGE = 500
STATUS_POLL = 0.2  # how often the log workload's watcher asks every node for its /status


@dataclass(frozen=True)
class ClientOptions:
    request_timeout: float = 3.0  # per request; a little above the node's own --request-timeout
    backoff: float = 0.05  # pause after a fail or info, so a leaderless cluster is not hammered
    check_timeout: float = 300.0  # budget of the linearizability search over all keys


class AckLedger:
    """The log offset each acknowledged write's answer named, shared by the workloads of a run.

    The history keeps only the value written; the durability check needs the offset too,
    to tell a write overwritten inside a snapshot by a later one from a write that was lost
    (:func:`pyraft.testing.checkers.check_durable`)."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, str], int] = {}

    def note(self, key: str, value: Any, reply: Reply) -> None:
        """Keep the offset of an ok write's answer (an answer without a positive one teaches nothing)."""
        offset = reply.body.get("offset") if isinstance(reply.body, dict) else None
        if type(offset) is int and offset > 0:
            self.offsets[(key, canonical(value))] = offset


def broker_key(broker_id: int) -> str:
    return f"{BROKER_PREFIX}{broker_id}"


def _ports(cluster: FaultCluster) -> list[int]:
    return [node.http_port for node in cluster.nodes.values()]


class _Client:
    """One logical client: a process id, a random source, and the run's recorder."""

    def __init__(
        self,
        recorder: HistoryRecorder,
        ids: ProcessIds,
        rng: random.Random,
        reasons: Counter[str] | None = None,
        trace: RequestTrace | None = None,
        acks: AckLedger | None = None,
    ) -> None:
        self.recorder = recorder
        self.trace = trace
        self.acks = acks
        self.reasons: Counter[str] = Counter() if reasons is None else reasons
        self.ids = ids
        self.rng = rng
        self.process = ids.fresh()
        self.count = 0

    @classmethod
    def for_run(
        cls,
        cluster: FaultCluster,
        recorder: HistoryRecorder,
        ids: ProcessIds,
        seed: int | str,
        reasons: Counter[str],
        acks: AckLedger | None = None,
    ) -> _Client:
        """A client of a workload in a fault run: its requests are traced beside the history."""
        return cls(recorder, ids, random.Random(seed), reasons, RequestTrace.of(cluster, recorder), acks)

    def unique(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.process}-{self.count}"

    async def perform(
        self,
        f: OpFunction,
        key: str,
        value: Any,
        port: int,
        call: Call,
        read_value: Callable[[Reply], Any] | None = None,
    ) -> Reply:
        """Record invoke, run ``call`` (a request to ``port``), record its completion; returns the reply."""
        invoked = self.recorder.invoke(self.process, f, key, value)
        reply = await call()
        if read_value is not None:
            reply = _as_read(reply)
            completed = None
            if reply.outcome == "ok":
                try:
                    completed = read_value(reply)
                except MalformedAnswer as exc:  # an ok status with a body we cannot read: unknown
                    reply = Reply("info", reply.status, reply.body, f"malformed answer: {exc}")
        else:
            completed = value
            if reply.outcome == "ok" and self.acks is not None:
                self.acks.note(key, value, reply)
        self.recorder.record(self.process, reply.outcome, f, key, completed)
        if self.trace is not None:
            self.trace.note(invoked, port, reply)
        if reply.outcome != "ok":
            why = reply.code or (str(reply.body)[:60] if reply.body is not None else "(empty body)")
            self.reasons[f"{f} {reply.outcome} {reply.status or ''} {why}".replace("  ", " ")] += 1
        if reply.outcome == "info":
            self.process = self.ids.fresh()  # the old request may still be in flight
        return reply


class RequestTrace:
    """``requests.jsonl`` beside the history: for each operation, which node answered and how.

    The history format has no room for it, and a post-mortem needs it: a strange read is
    explained by the node that served it. One line per completed operation, keyed by the
    operation's process and invoke time.
    """

    def __init__(self, path: Path, nodes: dict[int, int]) -> None:
        self.path = path
        self.nodes = nodes

    @classmethod
    def of(cls, cluster: FaultCluster, recorder: HistoryRecorder) -> RequestTrace | None:
        if recorder.path is None:
            return None
        nodes = {n.http_port: i for i, n in cluster.nodes.items()}
        return cls(recorder.path.parent / "requests.jsonl", nodes)

    def note(self, invoked: Event, port: int, reply: Reply) -> None:
        line = {
            "process": invoked.process,
            "invoke": invoked.time,
            "f": invoked.f,
            "key": invoked.key,
            "node": self.nodes.get(port),
            "outcome": reply.outcome,
            "status": reply.status,
            "error": reply.code,
            "body": reply.body if reply.outcome != "ok" or reply.status >= 300 else None,
        }
        with self.path.open("a", encoding="utf-8") as file:  # one short append: no handle outlives it
            file.write(json.dumps(line, default=str) + "\n")


def _as_read(reply: Reply) -> Reply:
    """A 404 ``not_found`` read saw that the thing is absent: an ok read of nothing, not a failure
    (any other 404, say a route the server does not know, stays a fail)."""
    if reply.status == 404 and isinstance(reply.body, dict) and reply.body.get("error") == "not_found":
        return Reply("ok", 404, reply.body)
    return reply


# ------------------------------------------------------------------ registers


@dataclass
class RegisterWorkload:
    brokers: int = 3
    clients: int = 4
    seed: int = 0
    options: ClientOptions = field(default_factory=ClientOptions)
    name: str = "registers"
    reasons: Counter[str] = field(default_factory=Counter)  # why operations were not ok
    acks: AckLedger = field(default_factory=AckLedger)

    def _change(self, port: int, broker_id: int, host: str) -> Call:
        body = {
            "brokerId": broker_id,
            "brokerHost": host,
            "brokerPort": 9092,
            "securityProtocol": "PLAINTEXT",
            "brokerStatus": "UNFENCED",
        }
        return partial(
            request, port, "POST", "/register_broker_change/", body, timeout=self.options.request_timeout
        )

    def _read(self, port: int, broker_id: int) -> Call:
        return partial(request, port, "GET", f"/get_broker/{broker_id}", timeout=self.options.request_timeout)

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        """Register brokers 1..n (each a first write of its key), trying until each is acknowledged."""
        client = _Client.for_run(cluster, recorder, ids, self.seed, self.reasons, self.acks)
        deadline = trio.current_time() + FINAL_TIMEOUT
        for broker_id in range(1, self.brokers + 1):
            host = f"init-{broker_id}"
            body = {
                "brokerId": broker_id,
                "brokerHost": host,
                "brokerPort": 9092,
                "securityProtocol": "PLAINTEXT",
            }
            while True:
                port = client.rng.choice(_ports(cluster))
                reply = await client.perform(
                    "write",
                    broker_key(broker_id),
                    host,
                    port,
                    partial(
                        request, port, "POST", "/register_broker/", body, timeout=self.options.request_timeout
                    ),
                )
                if reply.outcome == "ok":
                    break
                if trio.current_time() > deadline:
                    raise RuntimeError(f"could not register broker {broker_id}: {reply}")
                await trio.sleep(self.options.backoff)

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        client = _Client.for_run(
            cluster, recorder, ids, f"{self.seed}-{ids.fresh()}", self.reasons, self.acks
        )
        ports = _ports(cluster)
        while trio.current_time() < stop_at:
            broker_id = client.rng.randint(1, self.brokers)
            port = client.rng.choice(ports)
            key = broker_key(broker_id)
            if client.rng.random() < 0.5:
                host = client.unique("h")
                reply = await client.perform("write", key, host, port, self._change(port, broker_id, host))
            else:
                reply = await client.perform(
                    "read", key, None, port, self._read(port, broker_id), _broker_host
                )
            if reply.outcome != "ok":
                await trio.sleep(self.options.backoff)

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        """Every node reads every broker (linearizable) once it answers."""
        client = _Client.for_run(cluster, recorder, ids, self.seed, self.reasons)
        for port in _ports(cluster):
            for broker_id in range(1, self.brokers + 1):
                await _until_ok(
                    partial(
                        client.perform,
                        "read",
                        broker_key(broker_id),
                        None,
                        port,
                        self._read(port, broker_id),
                        _broker_host,
                    ),
                    self.options.backoff,
                )

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]:
        mine = [e for e in events if e.key.startswith(BROKER_PREFIX)]
        return {"linearizable": check_registers(mine, timeout=self.options.check_timeout)}


class MalformedAnswer(ValueError):
    """A 2xx read answer whose body does not hold what the read asked for."""


def _broker_host(reply: Reply) -> Any:
    """The host a broker read saw: None for 404 (no such broker), else the body's ``brokerHost``."""
    if reply.status == 404 and isinstance(reply.body, dict) and reply.body.get("error") == "not_found":
        return None
    if not isinstance(reply.body, dict) or "brokerHost" not in reply.body:
        raise MalformedAnswer(f"{reply.status} {str(reply.body)[:80]}")
    return reply.body["brokerHost"]


async def _until_ok(attempt: Call, backoff: float) -> Reply:
    deadline = trio.current_time() + FINAL_TIMEOUT
    while True:
        reply = await attempt()
        if reply.outcome == "ok":
            return reply
        if trio.current_time() > deadline:
            raise RuntimeError(f"final read still failing after {FINAL_TIMEOUT}s: {reply}")
        await trio.sleep(backoff)


# ------------------------------------------------------------------ set


@dataclass
class SetWorkload:
    clients: int = 2
    seed: int = 0
    options: ClientOptions = field(default_factory=ClientOptions)
    name: str = "set"
    reasons: Counter[str] = field(default_factory=Counter)
    acks: AckLedger = field(default_factory=AckLedger)

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        return None

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        client = _Client.for_run(
            cluster, recorder, ids, f"set-{self.seed}-{ids.fresh()}", self.reasons, self.acks
        )
        ports = _ports(cluster)
        while trio.current_time() < stop_at:
            name = client.unique("t")
            port = client.rng.choice(ports)
            reply = await client.perform(
                "add",
                SET_KEY,
                name,
                port,
                partial(
                    request,
                    port,
                    "POST",
                    "/register_topic/",
                    {"name": name},
                    timeout=self.options.request_timeout,
                ),
            )
            if reply.outcome != "ok":
                await trio.sleep(self.options.backoff)

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        """Every node lists the topics; the checker judges the last list read."""
        client = _Client.for_run(cluster, recorder, ids, self.seed, self.reasons)
        for port in _ports(cluster):
            await _until_ok(
                partial(
                    client.perform,
                    "read",
                    SET_KEY,
                    None,
                    port,
                    partial(request, port, "GET", "/get_topic/", timeout=self.options.request_timeout),
                    _topic_names,
                ),
                self.options.backoff,
            )

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]:
        found = check_set([e for e in events if e.key == SET_KEY])
        result = found.get(SET_KEY) or SetResult(SET_KEY, Verdict.UNKNOWN, 0, reason="no adds recorded")
        return {"set": result}


def _topic_names(reply: Reply) -> Any:
    if not isinstance(reply.body, dict) or not isinstance(reply.body.get("topics"), list):
        raise MalformedAnswer(f"{reply.status} {str(reply.body)[:80]}")
    return sorted(t["name"] for t in reply.body["topics"])


# ------------------------------------------------------------------ log


class _StartOver(Exception):
    """The node's snapshot changed while it was being read: read the node again from offset 0."""


@dataclass(frozen=True)
class FetchedSnapshot:
    """A node's latest snapshot as ``/metadata_snapshot/`` pages it: the whole state at ``end_offset``."""

    end_offset: int
    epoch: int
    records: tuple[dict[str, Any], ...]  # {apiKey, version, type, record}, in install order


@dataclass(frozen=True)
class NodeLog:
    """One node's committed metadata as a broker fetching from it sees it.

    ``records`` are the fetched log records after the snapshot's end (after offset 0 without
    a snapshot), every one of them up to ``high_watermark``. ``live`` is what the node's own
    store served (``/metadata_fetch_client/``) while its log stood at ``high_watermark``.
    """

    snapshot: FetchedSnapshot | None
    records: tuple[dict[str, Any], ...]
    high_watermark: int
    live: dict[str, Any] | None = None

    @property
    def after(self) -> int:
        """The offset the records start after: the snapshot's end, or 0."""
        return 0 if self.snapshot is None else self.snapshot.end_offset

    @property
    def window(self) -> tuple[int, int]:
        """The offsets whose records this node's log holds completely, as (after, through]."""
        return (self.after, self.high_watermark)

    def entries(self) -> list[tuple[int, tuple[str, str]]]:
        """The records as the log checker compares them: (offset, (type, canonical record))."""
        return [(r["offset"], (r["type"], canonical(r["record"]))) for r in self.records]

    def writes(self) -> NodeWrites:
        """What the durability check needs: the workloads' writes in the log tail and in the snapshot."""
        logged = frozenset(w for _, entry in self.entries() if (w := _write_in(entry)) is not None)
        registers: dict[str, tuple[str, int]] = {}
        members: set[tuple[str, str]] = set()
        for record in self.snapshot.records if self.snapshot is not None else ():
            write = _write_in((record["type"], canonical(record["record"])))
            if write is None:
                continue
            if record["type"] == "RegisterBrokerRecord":
                registers[write[0]] = (write[1], int(record["record"]["brokerEpoch"]))
            else:
                members.add(write)
        return NodeWrites(logged, registers, frozenset(members))

    def to_json(self) -> dict[str, Any]:
        snapshot = self.snapshot
        return {
            "snapshot": None
            if snapshot is None
            else {
                "endOffset": snapshot.end_offset,
                "epoch": snapshot.epoch,
                "records": list(snapshot.records),
            },
            "highWatermark": self.high_watermark,
            "records": [[r["offset"], r["type"], r["record"]] for r in self.records],
        }


class _NodeReader:
    """Reads one node's metadata as a KRaft broker does, following a snapshot when the log is compacted."""

    def __init__(self, port: int, options: ClientOptions) -> None:
        self.port = port
        self.options = options
        self.deadline = trio.current_time() + FINAL_TIMEOUT

    async def read(self) -> NodeLog:
        """The snapshot (if any), the records after it, and the store's state at their end.

        The live state is confirmed to belong to ``high_watermark``: after reading it, a
        fetch from ``high_watermark`` must find no new record; otherwise the node moved on
        and is read again, as it is when a new snapshot replaces the one being read."""
        while True:
            if trio.current_time() > self.deadline:
                raise RuntimeError(f"node :{self.port} kept moving: no stable read in {FINAL_TIMEOUT}s")
            try:
                log = await self._log()
                live = await self._call("GET", "/metadata_fetch_client/?consistency=stale")
                after = await self._fetch(log.high_watermark, 1)
                if "snapshotId" in after or after["records"]:
                    raise _StartOver
                return NodeLog(log.snapshot, log.records, log.high_watermark, live)
            except _StartOver:
                continue

    async def _log(self) -> NodeLog:
        answer = await self._fetch(0, PAGE)
        snapshot = None
        records: list[dict[str, Any]] = []
        if "snapshotId" in answer:
            snapshot = await self._snapshot(answer["snapshotId"])
            offset = snapshot.end_offset
        else:
            records += answer["records"]
            if not answer["more"] or not records:
                return NodeLog(None, tuple(records), int(answer["highWatermark"]))
            offset = records[-1]["offset"]
        while True:
            answer = await self._fetch(offset, PAGE)
            if "snapshotId" in answer:  # compacted past us meanwhile
                raise _StartOver
            records += answer["records"]
            if not answer["more"] or not answer["records"]:
                return NodeLog(snapshot, tuple(records), int(answer["highWatermark"]))
            offset = answer["records"][-1]["offset"]

    async def _snapshot(self, snapshot_id: dict[str, int]) -> FetchedSnapshot:
        end, epoch = int(snapshot_id["endOffset"]), int(snapshot_id["epoch"])
        records: list[dict[str, Any]] = []
        position = 0
        while True:
            query = f"endOffset={end}&epoch={epoch}&position={position}&maxRecords={PAGE}"
            page = await self._call("GET", f"/metadata_snapshot/?{query}")
            if page.get("snapshotId") != {"endOffset": end, "epoch": epoch}:
                raise _StartOver
            records += page["records"]
            if not page["more"]:
                return FetchedSnapshot(end, epoch, tuple(records))
            position = int(page["nextPosition"])

    async def _fetch(self, offset: int, max_records: int) -> dict[str, Any]:
        return await self._call("POST", "/metadata_fetch/", {"offset": offset, "maxRecords": max_records})

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One answer's body, retrying what a healed cluster may still refuse for a moment.

        A 404 saying the snapshot is gone (a newer one replaced it) starts the read over."""
        while True:
            reply = await request(self.port, method, path, body, timeout=10.0)
            if reply.outcome == "ok" and isinstance(reply.body, dict):
                return reply.body
            if reply.status == 404 and reply.code in ("snapshot_not_found", "no_snapshot"):
                raise _StartOver
            if trio.current_time() > self.deadline:
                raise RuntimeError(f"reading node :{self.port}: {method} {path} still failing: {reply}")
            await trio.sleep(self.options.backoff)


_TAKEN = "node {node}: snapshot at index "  # the snapshot actor's line for a snapshot it saved


@dataclass
class SnapshotWatch:
    """Which snapshots each node's ``/status`` named over the run, to tell own ones from installed ones.

    A node logs every snapshot it takes (``node N: snapshot at index I``). An installed
    snapshot replaces the log up to it, so ``/status`` then shows ``logStartIndex`` right
    after ``snapshotIndex``; an own snapshot does not while the node runs (the log is
    compacted one snapshot behind). A status poll can miss a snapshot that a newer one
    replaced within ``STATUS_POLL``, so the installs counted are a lower bound.

    While a node is down, its data directory shows whether the kill cut a snapshot write
    (a ``.snapshot-*.tmp`` left behind) or a snapshot transfer (``.partial``): the node
    deletes them when it starts again."""

    seen: dict[int, set[int]] = field(default_factory=dict)  # node -> snapshotIndex values
    replaced: dict[int, set[int]] = field(default_factory=dict)  # node -> those that replaced the log
    last: dict[int, dict[str, Any]] = field(default_factory=dict)  # node -> latest /status
    cut: dict[int, set[str]] = field(default_factory=dict)  # node -> temp files a kill left behind

    def note(self, statuses: Mapping[int, Mapping[str, Any]]) -> None:
        for node, status in statuses.items():
            self.last[node] = dict(status)
            index, start = status.get("snapshotIndex"), status.get("logStartIndex")
            if type(index) is not int or index <= 0:
                continue
            self.seen.setdefault(node, set()).add(index)
            if start == index + 1:
                self.replaced.setdefault(node, set()).add(index)

    def note_cut_writes(self, cluster: FaultCluster) -> None:
        """Record the snapshot temp files in the data directories of nodes that are down now."""
        for node_id, node in cluster.nodes.items():
            if node.running or not node.data_dir.is_dir():
                continue
            for path in node.data_dir.glob(".snapshot-*"):
                if path.suffix in (".tmp", ".partial"):
                    self.cut.setdefault(node_id, set()).add(path.name)

    def stats(self, cluster: FaultCluster) -> dict[str, dict[str, Any]]:
        """Per node: snapshots taken (its log lines), installed (seen replacing its log, not taken),
        seen but neither (a snapshot saved just before a crash cut its log line), and the final status."""
        out: dict[str, dict[str, Any]] = {}
        for node_id, node in sorted(cluster.nodes.items()):
            taken = snapshots_taken(node.log_path, node_id)
            installed = sorted(self.replaced.get(node_id, set()) - taken)
            unlogged = sorted(self.seen.get(node_id, set()) - taken - set(installed))
            status = self.last.get(node_id, {})
            out[str(node_id)] = {
                "taken": len(taken),
                "installed": installed,
                "unlogged": unlogged,
                "cutByKill": sorted(self.cut.get(node_id, set())),
                "snapshotIndex": status.get("snapshotIndex"),
                "logStartIndex": status.get("logStartIndex"),
                "lastApplied": status.get("lastApplied"),
            }
        return out


def snapshots_taken(log_path: Path, node_id: int) -> set[int]:
    """The indices of the snapshots a node logged taking, over all its restarts (the log is appended)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    pattern = re.compile(re.escape(_TAKEN.format(node=node_id)) + r"(\d+)")
    return {int(m.group(1)) for m in pattern.finditer(text)}


@dataclass
class LogWorkload:
    """Watches snapshots during the run; reads every node's snapshot and log at the end and checks
    log agreement, state agreement and the durability of acknowledged writes (module docstring)."""

    options: ClientOptions = field(default_factory=ClientOptions)
    acks: AckLedger = field(default_factory=AckLedger)  # shared with the workloads that write
    clients: int = 1  # the /status watcher
    name: str = "log"
    nodes: dict[int, NodeLog] = field(default_factory=dict)
    watch: SnapshotWatch = field(default_factory=SnapshotWatch)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        return None

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        """Poll every node's /status (nothing is recorded in the history: these are not operations)."""
        while trio.current_time() < stop_at:
            self.watch.note(await cluster.statuses())
            self.watch.note_cut_writes(cluster)
            await trio.sleep(STATUS_POLL)

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        self.watch.note(await cluster.statuses())
        for node_id, node in cluster.nodes.items():
            self.nodes[node_id] = await _NodeReader(node.http_port, self.options).read()
        self.watch.note(await cluster.statuses())
        for node_id, log in self.nodes.items():
            if log.snapshot is not None:  # the snapshot it served is one it holds, as /status would say
                self.watch.seen.setdefault(node_id, set()).add(log.after)
        self.snapshots = self.watch.stats(cluster)
        if recorder.path is not None:
            dump = {str(n): log.to_json() for n, log in sorted(self.nodes.items())}
            (recorder.path.parent / "logs.json").write_text(json.dumps(dump) + "\n", encoding="utf-8")

    def stats(self) -> dict[str, Any]:
        """For the run report: per node, the snapshots it took and installed, and where its log starts."""
        return {"snapshots": self.snapshots}

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]:
        entries = {node: log.entries() for node, log in self.nodes.items()}
        windows = {node: log.window for node, log in self.nodes.items()}
        log: LogResult = check_log(entries, dense=False, identity=_identity, windows=windows)
        states: StateResult = check_states(state_points(self.nodes))
        durable: DurabilityResult = check_durable(
            events,
            {node: log.writes() for node, log in self.nodes.items()},
            lambda key: key == SET_KEY or key.startswith(BROKER_PREFIX),
            self.acks.offsets,
        )
        return {"prefix": log, "state": states, "acknowledged-durable": durable}


def state_points(nodes: Mapping[int, NodeLog]) -> dict[str, dict[str, Any]]:
    """The states :func:`check_states` compares, each from several sources.

    * At each node's snapshot end: that snapshot's state, and every other node's state
      there (its own snapshot plus its log replayed up to that offset), if its log holds it.
      This is where a snapshot is checked against the log it replaced.
    * At the lowest high watermark: every node's final state.
    * Per node: the store it serves (its live ``/metadata_fetch_client/``) against its
      snapshot plus log replayed to its high watermark.

    States are compared whole (features, brokers, topics, partitions, producers): the
    log's records are replayed into a ``MetadataStore`` as a broker would (``replay``).
    """
    if not nodes:
        return {}
    ends = {log.after for log in nodes.values() if log.snapshot is not None}
    final = min(log.high_watermark for log in nodes.values())
    points: dict[str, dict[str, Any]] = {}
    for node_id, log in sorted(nodes.items()):
        replayed = _replayed(log, ends | {final, log.high_watermark})
        for offset, state in sorted(replayed.items()):
            if offset in ends or offset == final:
                points.setdefault(f"state at offset {offset}", {})[_source(node_id, log, offset)] = state
        if log.live is not None:
            mine = replayed[log.high_watermark]
            points[f"node {node_id} serving at offset {log.high_watermark}"] = {
                "its snapshot + log replayed": {k: mine.get(k) for k in ("brokers", "topics", "partitions")},
                "its store (/metadata_fetch_client/)": log.live,
            }
    return points


def _source(node_id: int, log: NodeLog, offset: int) -> str:
    if log.snapshot is None:
        return f"node {node_id} log"
    if offset == log.after:
        return f"node {node_id} snapshot"
    return f"node {node_id} snapshot {log.after} + log"


def _replayed(log: NodeLog, points: set[int]) -> dict[int, dict[str, Any]]:
    """The node's state at each of ``points`` it can show (between its snapshot and its high watermark)."""
    out: dict[int, dict[str, Any]] = {}
    try:
        store = (
            MetadataStore()
            if log.snapshot is None
            else replay_snapshot(log.snapshot.records, log.snapshot.end_offset)
        )
    except (RecordError, ValueError, KeyError, TypeError) as exc:
        return {p: {"unreadable snapshot": str(exc)} for p in points if log.after <= p <= log.high_watermark}
    done = 0
    broken: dict[str, Any] | None = None  # once a record cannot be replayed, no later state is known
    for point in sorted(p for p in points if log.after <= p <= log.high_watermark):
        upto = done
        while upto < len(log.records) and log.records[upto]["offset"] <= point:
            upto += 1
        if broken is None:
            try:
                replay(log.records[done:upto], store=store)
            except (RecordError, ValueError, KeyError, TypeError) as exc:
                broken = {"unreplayable log": f"{type(exc).__name__}: {exc}"}
        if broken is not None:
            out[point] = broken
            continue
        done = upto
        state = store.dump()
        del state["log"], state["appliedIndex"]
        out[point] = state
    return out


def _identity(entry: Any) -> Any:
    """Records carrying a UUID are unique in a correct log; no-ops and status changes may repeat."""
    kind, raw = entry
    record = json.loads(raw)
    for field_name in ("incarnationId", "topicId"):
        if kind in ("RegisterBrokerRecord", "TopicRecord") and field_name in record:
            return (kind, record[field_name])
    return None


def _write_in(entry: tuple[str, str]) -> tuple[str, str] | None:
    """The (key, canonical value) a record writes for the register and set workloads, if any."""
    kind, raw = entry
    record = json.loads(raw)
    if kind == "RegisterBrokerRecord":
        hosts = [e["host"] for e in record.get("endPoints", []) if isinstance(e, dict)]
        return (broker_key(record["brokerId"]), canonical(hosts[0])) if hosts else None
    if kind == "TopicRecord":
        return (SET_KEY, canonical(record["name"]))
    return None


def all_workloads(
    seed: int,
    options: ClientOptions | None = None,
    *,
    brokers: int = 3,
    register_clients: int = 4,
    set_clients: int = 2,
) -> list[Workload]:
    """The three workloads of a run, sharing one ledger of acknowledged offsets."""
    opts = options or ClientOptions()
    acks = AckLedger()
    return [
        RegisterWorkload(brokers, register_clients, seed, opts, acks=acks),
        SetWorkload(set_clients, seed, opts, acks=acks),
        LogWorkload(opts, acks),
    ]

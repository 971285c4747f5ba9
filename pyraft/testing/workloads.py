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
    No clients: after the full restart, every node's ``/metadata_fetch/`` is paged
    from offset 0. The logs must agree (prefixes of the longest, no record twice),
    and every acknowledged write of the other workloads must be in every node's log
    (no acknowledged write lost after all faults heal and every node restarts).

No request is retried under the same operation and no ``Idempotency-Key`` is sent:
each recorded operation is exactly one HTTP request. After an ``info`` a client
continues under a fresh process id, since its request may still take effect.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pyraft.testing.api import Reply, request
from pyraft.testing.checkers import (
    DurabilityResult,
    LogResult,
    SetResult,
    Verdict,
    check_durable,
    check_log,
    check_registers,
    check_set,
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


@dataclass(frozen=True)
class ClientOptions:
    request_timeout: float = 3.0  # per request; a little above the node's own --request-timeout
    backoff: float = 0.05  # pause after a fail or info, so a leaderless cluster is not hammered
    check_timeout: float = 300.0  # budget of the linearizability search over all keys


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
    ) -> None:
        self.recorder = recorder
        self.trace = trace
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
    ) -> _Client:
        """A client of a workload in a fault run: its requests are traced beside the history."""
        return cls(recorder, ids, random.Random(seed), reasons, RequestTrace.of(cluster, recorder))

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
        client = _Client.for_run(cluster, recorder, ids, self.seed, self.reasons)
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
        client = _Client.for_run(cluster, recorder, ids, f"{self.seed}-{ids.fresh()}", self.reasons)
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

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        return None

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        client = _Client.for_run(cluster, recorder, ids, f"set-{self.seed}-{ids.fresh()}", self.reasons)
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


@dataclass
class LogWorkload:
    """Reads every node's committed metadata log at the end; checks agreement and durability."""

    options: ClientOptions = field(default_factory=ClientOptions)
    clients: int = 0
    name: str = "log"
    logs: dict[int, list[tuple[int, tuple[str, str]]]] = field(default_factory=dict)

    async def setup(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        return None

    async def client(
        self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds, stop_at: float
    ) -> None:
        return None

    async def final(self, cluster: FaultCluster, recorder: HistoryRecorder, ids: ProcessIds) -> None:
        for node_id, node in cluster.nodes.items():
            self.logs[node_id] = await self._fetch_all(node.http_port)
        if recorder.path is not None:
            dump = {str(n): [[o, t, json.loads(r)] for o, (t, r) in log] for n, log in self.logs.items()}
            (recorder.path.parent / "logs.json").write_text(json.dumps(dump) + "\n", encoding="utf-8")

    async def _fetch_all(self, port: int) -> list[tuple[int, tuple[str, str]]]:
        entries: list[tuple[int, tuple[str, str]]] = []
        offset = 0
        while True:
            body = {"offset": offset, "maxRecords": PAGE}
            page = partial(request, port, "POST", "/metadata_fetch/", body, timeout=10.0)
            reply = await _until_ok(page, self.options.backoff)
            records = reply.body["records"]
            entries += [(r["offset"], (r["type"], canonical(r["record"]))) for r in records]
            if not reply.body["more"] or not records:
                return entries
            offset = records[-1]["offset"]

    def witnessed(self) -> dict[int, set[tuple[str, str]]]:
        """Per node, the (key, canonical value) writes its log holds: broker hosts and topic names."""
        return {
            node: {w for _, entry in log if (w := _write_in(entry)) is not None}
            for node, log in self.logs.items()
        }

    def check(self, events: Sequence[Event]) -> Mapping[str, CheckOutcome]:
        log: LogResult = check_log(self.logs, dense=False, identity=_identity)
        durable: DurabilityResult = check_durable(
            events, self.witnessed(), lambda key: key == SET_KEY or key.startswith(BROKER_PREFIX)
        )
        return {"prefix": log, "acknowledged-durable": durable}


def _identity(entry: Any) -> Any:
    """Records carrying a UUID are unique in a correct log; no-ops and status changes may repeat."""
    kind, raw = entry
    record = json.loads(raw)
    for field_name in ("incarnationId", "topicId"):
        if kind in ("RegisterBrokerRecord", "TopicRecord") and field_name in record:
            return (kind, record[field_name])
    return None


def _write_in(entry: tuple[str, str]) -> tuple[str, str] | None:
    kind, raw = entry
    record = json.loads(raw)
    if kind == "RegisterBrokerRecord":
        hosts = [e["host"] for e in record.get("endPoints", []) if isinstance(e, dict)]
        return (broker_key(record["brokerId"]), canonical(hosts[0])) if hosts else None
    if kind == "TopicRecord":
        return (SET_KEY, canonical(record["name"]))
    return None


def all_workloads(seed: int, options: ClientOptions | None = None) -> list[Workload]:
    """The three workloads of a run, with their default client counts."""
    opts = options or ClientOptions()
    return [
        RegisterWorkload(seed=seed, options=opts),
        SetWorkload(seed=seed, options=opts),
        LogWorkload(opts),
    ]

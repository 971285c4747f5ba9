"""A trio client for the node's client protocol.

It talks to one node at a time over one TCP connection with any number of
requests in flight, follows "not_leader" hints to the leader, and fails over
to other nodes when one is unreachable, all within one overall timeout.

Retries and exactly-once: a proposal is retried automatically only when the
server says it was definitely not applied (not_leader, no_leader, lost,
shutting_down) or when it never left this process. If the connection dies
after the proposal was sent, the outcome is unknown and ``propose`` raises
``ClientError("unknown", ...)`` instead of retrying, since a retry could apply
the command twice. Callers that need to retry anyway must make commands
idempotent (the metadata layer provides idempotency keys for that). Reads have
no side effects, so they are retried on connection loss and on "timeout" too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from itertools import count
from types import TracebackType
from typing import Any, Final, Self

import trio

from pyraft.transport.backoff import Backoff
from pyraft.transport.framed import FramedStream
from pyraft.wire.client_protocol import (
    BAD_REQUEST,
    DEFINITELY_NOT_APPLIED,
    NOT_LEADER,
    OP_PROPOSE,
    OP_READ,
    TIMEOUT,
    ClientRequest,
    ClientResponse,
)
from pyraft.wire.codec import CodecError, encode
from pyraft.wire.frames import DEFAULT_MAX_FRAME_SIZE, FrameError, encode_frame
from pyraft.wire.handshake import PROTOCOL_VERSION, Hello, HelloReply

Address = tuple[str, int]

DEFAULT_TIMEOUT: Final = 10.0
UNKNOWN: Final = "unknown"  # the connection broke after a proposal was sent
_IO_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, FrameError, CodecError)


class ClientError(Exception):
    """A request failed for good. ``code`` is a server error code, "timeout" when
    the overall deadline passed, or "unknown" when a proposal's fate is unknown."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _ConnectFailed(Exception):
    pass


class _Call:
    """One request awaiting its response; ``response`` stays None if the connection dies.
    ``sent`` turns True once its bytes are handed to the socket."""

    __slots__ = ("done", "response", "sent")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: ClientResponse | None = None
        self.sent = False


class _Connection:
    def __init__(self, framed: FramedStream, index: int, node_id: int) -> None:
        self.framed = framed
        self.index = index
        self.node_id = node_id
        self.pending: dict[int, _Call] = {}
        # Requests waiting for the writer task, which sends all of them in one write.
        self.queued: list[tuple[bytes, _Call]] = []
        self.wakeup = trio.Event()
        self.scope = trio.CancelScope()  # cancels the reader, which closes the stream
        self.broken: str | None = None
        self.retired = False

    def retire(self) -> None:
        """Stop using this connection, but let the requests already on it finish."""
        self.retired = True
        if not self.pending:
            self.scope.cancel()


class RaftClient:
    """Use as ``async with await RaftClient.connect(nodes, cluster_id=...) as client``.

    ``nodes`` may be a list of addresses or a mapping of node id to address; with
    a list the ids are learned from the handshake, which is what leader hints need.
    """

    def __init__(
        self,
        nodes: Sequence[Address] | Mapping[int, Address],
        *,
        cluster_id: str,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 2.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backoff_initial: float = 0.02,
        backoff_max: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(nodes, Mapping):
            self._addresses = list(nodes.values())
            self._ids: dict[int, int] = {index: node for index, node in enumerate(nodes)}
        else:
            self._addresses = list(nodes)
            self._ids = {}
        if not self._addresses:
            raise ValueError("need at least one node address")
        self.cluster_id = cluster_id
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self._backoff = Backoff(backoff_initial, backoff_max, rng)
        self._cursor = 0  # index of the next address to try
        self._request_ids = count(1)
        self._current: _Connection | None = None
        self._connect_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._stack = AsyncExitStack()
        self._last_error = "no attempt made"

    @classmethod
    async def connect(
        cls, nodes: Sequence[Address] | Mapping[int, Address], *, cluster_id: str, **options: Any
    ) -> RaftClient:
        """Connect to the first reachable node; raise ClientError("timeout") if none is.
        ``options`` are those of the constructor."""
        client = cls(nodes, cluster_id=cluster_id, **options)
        with trio.move_on_after(client.timeout):
            await client._connection()
            return client
        raise ClientError(TIMEOUT, f"no node reachable within {client.timeout} s: {client._last_error}")

    async def __aenter__(self) -> Self:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        if self._current is not None:
            self._nursery.start_soon(self._read_responses, self._current)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
            await self._stack.aclose()
        elif self._current is not None:
            await self._current.framed.aclose()
        self._current = None

    @property
    def node_id(self) -> int | None:
        """The node this client currently talks to, if connected."""
        return self._current.node_id if self._current is not None else None

    # ------------------------------------------------------------------ API

    async def propose(self, data: bytes) -> tuple[int, bytes]:
        """Returns the log index the command was committed at and its result."""
        response = await self._call(OP_PROPOSE, data)
        return response.index, response.result

    async def read(self, query: bytes) -> bytes:
        """A linearizable read, answered by the leader."""
        return (await self._call(OP_READ, query)).result

    # ------------------------------------------------------------ retry loop

    async def _call(self, op: str, data: bytes) -> ClientResponse:
        if self._nursery is None:
            raise ClientError("closed", "the client is not open: use it in 'async with'")
        retryable = DEFINITELY_NOT_APPLIED if op == OP_PROPOSE else DEFINITELY_NOT_APPLIED | {TIMEOUT}
        with trio.move_on_after(self.timeout):
            while True:
                conn = await self._connection()
                response = await self._attempt(conn, op, data)
                if response is None:
                    continue
                if response.ok:
                    return response
                if response.error not in retryable:
                    raise ClientError(response.error, f"node {conn.node_id} refused the {op}")
                await self._move_on(conn, response)
        raise ClientError(TIMEOUT, f"{op} not done within {self.timeout} s; last problem: {self._last_error}")

    async def _attempt(self, conn: _Connection, op: str, data: bytes) -> ClientResponse | None:
        """None means: the request surely did not reach the server (or is a read), try again."""
        sent, response = await self._request_on(conn, op, data)
        if response is not None:
            return response
        self._last_error = f"connection to node {conn.node_id} lost: {conn.broken}"
        self._drop(conn)
        if sent and op == OP_PROPOSE:
            raise ClientError(
                UNKNOWN, f"{self._last_error} after sending; the proposal may have been applied"
            )
        await trio.sleep(self._backoff.next_delay())
        return None

    async def _move_on(self, conn: _Connection, response: ClientResponse) -> None:
        hint = response.leader_hint
        self._last_error = f"node {conn.node_id} answered {response.error}"
        if response.error == NOT_LEADER and hint is not None and hint != conn.node_id:
            self._last_error += f" (leader is node {hint})"
            self._aim_at(hint)
        else:
            self._cursor = conn.index + 1
        self._drop(conn)
        await trio.sleep(self._backoff.next_delay())

    def _aim_at(self, node_id: int) -> None:
        """Point the cursor at node_id's address, or at an address whose id we don't know yet."""
        for index, known in self._ids.items():
            if known == node_id:
                self._cursor = index
                return
        unknown = [i for i in range(len(self._addresses)) if i not in self._ids]
        if unknown:
            self._cursor = min(unknown, key=lambda i: (i - self._cursor) % len(self._addresses))

    def _drop(self, conn: _Connection) -> None:
        if self._current is conn:
            self._current = None
        conn.retire()

    # ------------------------------------------------------------ connection

    async def _connection(self) -> _Connection:
        """The current connection, opening one (trying each node in turn) if needed."""
        current = self._current
        if current is not None and current.broken is None:
            return current  # the common case: no lock, no checkpoint
        async with self._connect_lock:
            while self._current is None or self._current.broken is not None:
                index = self._cursor % len(self._addresses)
                try:
                    conn = await self._open(index)
                except _ConnectFailed as exc:
                    self._last_error = str(exc)
                    self._cursor = index + 1
                    await trio.sleep(self._backoff.next_delay())
                    continue
                self._current = conn
                if self._nursery is not None:
                    self._nursery.start_soon(self._read_responses, conn)
            return self._current

    async def _open(self, index: int) -> _Connection:
        host, port = self._addresses[index]
        try:
            with trio.fail_after(self.connect_timeout):
                framed = FramedStream(await trio.open_tcp_stream(host, port), self.max_frame_size)
                try:
                    await framed.send(Hello(PROTOCOL_VERSION, self.cluster_id, None))
                    reply = await framed.receive()
                except BaseException:
                    await framed.aclose()
                    raise
        except (*_IO_ERRORS, trio.TooSlowError) as exc:
            raise _ConnectFailed(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from exc
        if not isinstance(reply, HelloReply) or not reply.ok:
            await framed.aclose()
            why = reply.reason if isinstance(reply, HelloReply) else "no handshake reply"
            raise _ConnectFailed(f"{host}:{port} refused the connection: {why}")
        self._ids[index] = reply.node_id
        self._backoff.reset()
        return _Connection(framed, index, reply.node_id)

    async def _request_on(
        self, conn: _Connection, op: str, data: bytes
    ) -> tuple[bool, ClientResponse | None]:
        """Returns whether the request was handed to the socket, and the response if one came."""
        request_id = next(self._request_ids)
        call = conn.pending[request_id] = _Call()
        try:
            if conn.broken is None:
                try:
                    frame = encode_frame(encode(ClientRequest(request_id, op, data)), self.max_frame_size)
                except (CodecError, FrameError) as exc:
                    raise ClientError(BAD_REQUEST, f"cannot send this {op}: {exc}") from exc
                conn.queued.append((frame, call))
                conn.wakeup.set()
                await call.done.wait()
        finally:
            del conn.pending[request_id]
            if conn.retired and not conn.pending:
                conn.scope.cancel()
        return call.sent, call.response

    async def _read_responses(self, conn: _Connection) -> None:
        """Owns the connection's stream: a writer sends queued requests, this task hands
        responses out and, whatever ends it, wakes every waiter."""
        reason = "closed by the client"
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_requests, conn)
                    reason = await self._dispatch(conn)
                    nursery.cancel_scope.cancel()
        finally:
            conn.broken = conn.broken or reason
            for call in conn.pending.values():
                call.done.set()
            await conn.framed.aclose()

    async def _write_requests(self, conn: _Connection) -> None:
        """Sends every request queued since the last write in one ``send_all``."""
        try:
            while True:
                while not conn.queued:
                    conn.wakeup = trio.Event()
                    await conn.wakeup.wait()
                batch, conn.queued = conn.queued, []
                for _, call in batch:
                    call.sent = True  # from here on a proposal's outcome is unknown if the link dies
                await conn.framed.stream.send_all(b"".join(frame for frame, _ in batch))
        except _IO_ERRORS as exc:
            conn.broken = f"write failed: {exc}"
            conn.scope.cancel()

    async def _dispatch(self, conn: _Connection) -> str:
        try:
            while (msg := await conn.framed.receive()) is not None:
                if not isinstance(msg, ClientResponse):
                    return f"server sent {type(msg).__name__}"
                call = conn.pending.get(msg.request_id)
                if call is not None:
                    call.response = msg
                    call.done.set()
        except _IO_ERRORS as exc:
            return str(exc)
        return "closed by the server"

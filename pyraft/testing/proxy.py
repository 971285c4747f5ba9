"""A fault-injecting TCP proxy (trio) for one directed peer link, and a network of them.

pyraft's transport keeps one outbound connection per peer and sends Raft messages
only in the direction of the dial (see :mod:`pyraft.transport.tcp`), so the
directed link i->j is exactly "the connections node i opens to node j". Putting
one :class:`LinkProxy` on each directed link lets a test cut i->j while j->i
still works, which is what asymmetric partitions need.

Where the proxies live: in the test (or runner) process, as trio tasks. That
process is the one thing no fault touches, it already drives the nemesis, and a
method call changes a link synchronously, so a fault is in force the moment the
nemesis records it. No control channel is needed; a helper process would only add
a second thing that can die.

What each fault does to a byte stream (TCP has no packets to lose, so "lossy" has
to mean what a lossy network does to a TCP connection from the application's view):

``cut(mode="reset")``
    Close every open connection and accept-then-close new ones: the sender sees
    a broken pipe or a failed handshake at once, as with an ICMP "unreachable".
``cut(mode="blackhole")``
    Keep connections open but read and discard everything, both ways: the sender's
    writes succeed and nothing arrives, as when packets are silently dropped. A
    connection that lost bytes can never be resumed (the receiver would see half a
    frame), so :meth:`LinkProxy.heal` closes every such connection.
``slow(delay, jitter)``
    Hold each chunk for ``delay`` plus a uniform ``[0, jitter)`` before writing it
    on; chunks keep their order (a later chunk never overtakes an earlier one).
``lossy(rate)``
    For each chunk read, with probability ``rate``, drop the chunk and reset the
    connection: a lossy link looks like retransmission timeouts ending in resets,
    and the sender must reconnect and let Raft resend.
``heal()``
    Back to a clean, instant link.

Delay and loss apply to both byte directions of a proxied connection (data i->j
and the handshake reply j->i), because both cross the same imagined network path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import trio

logger = logging.getLogger("pyraft.testing.proxy")

CutMode = Literal["reset", "blackhole"]
Chunk = bytes | bytearray
Connector = Callable[[], Awaitable[trio.abc.Stream]]
_CHUNK = 65536
_BUFFERED_CHUNKS = 256
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass
class LinkFaults:
    """The faults currently in force on one link; all off is a clean link."""

    cut: CutMode | None = None
    delay: float = 0.0
    jitter: float = 0.0
    reset_rate: float = 0.0

    @property
    def clean(self) -> bool:
        return self.cut is None and self.delay == 0 and self.jitter == 0 and self.reset_rate == 0


@dataclass
class LinkStats:
    accepted: int = 0
    refused: int = 0
    resets: int = 0
    bytes_forwarded: int = 0
    bytes_discarded: int = 0


@dataclass(eq=False)
class _Connection:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    lost_bytes: bool = False  # tainted: it can only be closed, never resumed


class LinkProxy:
    """Forwards connections to ``connect()``'s stream, applying :attr:`faults` per chunk.

    ``connect`` dials the real target; tests may pass one that returns an in-memory stream,
    which lets the delay logic run on trio's mock clock.
    """

    def __init__(self, name: str, connect: Connector, rng: random.Random | None = None) -> None:
        self.name = name
        self.faults = LinkFaults()
        self.stats = LinkStats()
        self.port: int | None = None
        self._connect = connect
        self._rng = rng if rng is not None else random.Random()
        self._connections: set[_Connection] = set()

    # ----------------------------------------------------------------- control

    def cut(self, mode: CutMode = "reset") -> None:
        self.faults.cut = mode
        if mode == "reset":
            self._reset_all(lambda conn: True)

    def slow(self, delay: float, jitter: float = 0.0) -> None:
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self.faults.delay, self.faults.jitter = delay, jitter

    def lossy(self, rate: float) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.faults.reset_rate = rate

    def heal(self) -> None:
        """Clear every fault; connections that lost bytes in a black hole are closed for good."""
        self.faults = LinkFaults()
        self._reset_all(lambda conn: conn.lost_bytes)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _reset_all(self, which: Callable[[_Connection], bool]) -> None:
        for conn in list(self._connections):
            if which(conn):
                self.stats.resets += 1
                conn.scope.cancel()

    # ----------------------------------------------------------------- serving

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) and report the bound port to ``nursery.start``."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, self.handle, listeners))
            task_status.started(self.port)

    async def handle(self, client: trio.abc.Stream) -> None:
        """Proxy one accepted connection until either side hangs up or a fault resets it."""
        if self.faults.cut == "reset":
            self.stats.refused += 1
            await trio.aclose_forcefully(client)
            return
        if self.faults.cut == "blackhole":
            await self._swallow(client)
            return
        try:
            upstream = await self._connect()
        except _STREAM_ERRORS as exc:
            logger.debug("%s: cannot reach target: %s", self.name, exc)
            await trio.aclose_forcefully(client)
            return
        self.stats.accepted += 1
        conn = _Connection()
        self._connections.add(conn)
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, client, upstream, conn)
                    nursery.start_soon(self._direction, upstream, client, conn)
        finally:
            self._connections.discard(conn)
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)

    async def _swallow(self, client: trio.abc.Stream) -> None:
        """A connection made into a black hole: never reaches the target, read and discarded
        until :meth:`heal` resets it (as a SYN into a black hole would time out)."""
        self.stats.accepted += 1
        conn = _Connection(lost_bytes=True)
        self._connections.add(conn)
        try:
            with conn.scope:
                while chunk := await client.receive_some(_CHUNK):
                    self.stats.bytes_discarded += len(chunk)
                await trio.sleep_forever()
        except _STREAM_ERRORS:
            pass
        finally:
            self._connections.discard(conn)
            await trio.aclose_forcefully(client)

    # ----------------------------------------------------------------- pumping

    async def _direction(self, source: trio.abc.Stream, sink: trio.abc.Stream, conn: _Connection) -> None:
        """One byte direction: a reader stamps chunks with their due time, a writer waits for it."""
        send, receive = trio.open_memory_channel[tuple[float, Chunk]](_BUFFERED_CHUNKS)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_side, source, send, conn)
                await self._write_side(sink, receive)
        except* _STREAM_ERRORS:
            conn.scope.cancel()  # one side broke: the connection is over in both directions

    async def _read_side(
        self, source: trio.abc.Stream, send: trio.MemorySendChannel[tuple[float, Chunk]], conn: _Connection
    ) -> None:
        async with send:
            due = 0.0
            while chunk := await source.receive_some(_CHUNK):
                if self._discard(chunk, conn):
                    continue
                due = max(due, trio.current_time() + self._delay())
                await send.send((due, chunk))
            if conn.lost_bytes:
                await trio.sleep_forever()  # a hang-up must not cross a black hole either

    def _discard(self, chunk: Chunk, conn: _Connection) -> bool:
        """Apply loss and black holes to one chunk; True if it must not be forwarded."""
        if self.faults.reset_rate and self._rng.random() < self.faults.reset_rate:
            self.stats.resets += 1
            self.stats.bytes_discarded += len(chunk)
            conn.scope.cancel()
            return True
        if self.faults.cut is not None:
            conn.lost_bytes = True
            self.stats.bytes_discarded += len(chunk)
            return True
        return False

    def _delay(self) -> float:
        jitter = self._rng.uniform(0, self.faults.jitter) if self.faults.jitter else 0.0
        return self.faults.delay + jitter

    async def _write_side(
        self, sink: trio.abc.Stream, receive: trio.MemoryReceiveChannel[tuple[float, Chunk]]
    ) -> None:
        async with receive:
            async for due, chunk in receive:
                if due > trio.current_time():
                    await trio.sleep_until(due)
                await sink.send_all(chunk)
                self.stats.bytes_forwarded += len(chunk)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()  # pass the hang-up on, after everything delayed has been sent
        else:
            await sink.aclose()


def tcp_connector(host: str, port: int) -> Connector:
    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    return connect


Link = tuple[int, int]


class ProxyNetwork:
    """One :class:`LinkProxy` per directed link among ``node_ids``, and partitions in node terms."""

    def __init__(self, targets: dict[int, tuple[str, int]], seed: int = 0) -> None:
        self.node_ids = sorted(targets)
        rng = random.Random(seed)
        self.links: dict[Link, LinkProxy] = {
            (i, j): LinkProxy(f"{i}->{j}", tcp_connector(*targets[j]), random.Random(rng.random()))
            for i in self.node_ids
            for j in self.node_ids
            if i != j
        }

    async def serve(self, nursery: trio.Nursery, host: str = "127.0.0.1") -> None:
        for proxy in self.links.values():
            await nursery.start(partial(proxy.serve, host))

    def port(self, src: int, dst: int) -> int:
        port = self.links[(src, dst)].port
        if port is None:
            raise RuntimeError("proxies are not serving yet")
        return port

    def voters_for(self, node: int, own_port: int, host: str = "127.0.0.1") -> str:
        """The ``--voters`` string node ``node`` sees: its peers at its own proxy ports."""
        parts = [f"{j}@{host}:{own_port if j == node else self.port(node, j)}" for j in self.node_ids]
        return ",".join(parts)

    def partition(self, groups: Iterable[Iterable[int]], mode: CutMode = "reset") -> None:
        """Cut every link between different groups (both directions); nodes in no group are alone."""
        group_of: dict[int, int] = {}
        for g, members in enumerate(groups):
            group_of.update(dict.fromkeys(members, g))
        for (i, j), proxy in self.links.items():
            if group_of.get(i, -1 - i) != group_of.get(j, -1 - j):
                proxy.cut(mode)

    def isolate(self, node: int, mode: CutMode = "reset") -> None:
        self.partition([[n for n in self.node_ids if n != node]], mode)

    def bridge(self, left: Iterable[int], middle: int, right: Iterable[int], mode: CutMode = "reset") -> None:
        """``middle`` talks to everyone; ``left`` and ``right`` only to their own side and ``middle``."""
        left_set, right_set = set(left), set(right)
        for (i, j), proxy in self.links.items():
            if (i in left_set and j in right_set) or (i in right_set and j in left_set):
                proxy.cut(mode)

    def cut_links(self, links: Iterable[Link], mode: CutMode = "reset") -> None:
        for link in links:
            self.links[link].cut(mode)

    def slow(self, links: Iterable[Link], delay: float, jitter: float = 0.0) -> None:
        for link in links:
            self.links[link].slow(delay, jitter)

    def lossy(self, links: Iterable[Link], rate: float) -> None:
        for link in links:
            self.links[link].lossy(rate)

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def faults(self) -> dict[str, Any]:
        """The links that are not clean, for logs and reports."""
        return {p.name: vars(p.faults).copy() for p in self.links.values() if not p.faults.clean}

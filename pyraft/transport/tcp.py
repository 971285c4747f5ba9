"""Raft traffic and client requests over raw TCP.

Each node listens on one port. For every peer it keeps one outbound link (the
"replicator" connection) fed from a bounded outbox; traffic from a peer
arrives on the connection that peer opened to us. Connections are one-way for
Raft messages, so a link only has to care about its own writes.

A message for a link that is connected and has nothing queued is written to
its socket at once, inside ``send``, with one non-blocking write: the raft loop's
answer then leaves before any other task runs (a follower's apply, the next
read), and without a hop through the link task. Whatever that write cannot take
(a full socket buffer, a link busy or down) queues in the outbox as before, and
the link task writes the rest in order.

Overflow policy: when a peer's outbox is full the *oldest* queued message is
dropped. Raft messages carry the sender's current view (term, commit index,
log position); after a peer has been unreachable, the queue's head is the
stalest part, while the newest message is the one that will let the peer
catch up or reject quickly. Any loss is repaired by Raft's own retries.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any, Final

import trio

from pyraft.channels import hand_over
from pyraft.core.messages import Message
from pyraft.transport.backoff import Backoff
from pyraft.transport.base import BatchClientHandler, ClientHandler, TransportStats
from pyraft.transport.framed import FramedStream
from pyraft.wire.client_protocol import BAD_REQUEST, OP_PROPOSE, OPS, ClientRequest, ClientResponse
from pyraft.wire.codec import CodecError, WireMessage, encode, is_raft_message
from pyraft.wire.frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, FrameError, encode_frame
from pyraft.wire.handshake import PROTOCOL_VERSION, Hello, HelloReply

logger = logging.getLogger("pyraft.transport")

# Frames queued per peer before the oldest is dropped. Large enough that a burst of
# forwarded proposals (one ProposeRequest each, which nothing resends) never overflows
# it while the peer is alive; the leader's entry traffic is bounded by max_inflight.
DEFAULT_OUTBOX_SIZE: Final = 16384
# One send_all per batch; past this many bytes the rest waits for the next write.
MAX_BATCH_BYTES: Final = 4 << 20
_CONNECTION_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
write_fd = os.write  # the direct write (a name of its own so tests can make it write less)


class _Reject(Exception):
    """The remote side broke the protocol. ``code`` keys the stats, ``detail`` goes to the log
    (and to the remote in a HelloReply when ``reply`` is set, i.e. during the handshake)."""

    def __init__(self, code: str, detail: str, *, reply: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.reply = reply


class TcpTransport:
    """See the module docstring. ``peers`` lists the *other* voters and their addresses."""

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        listen_host: str,
        listen_port: int,
        peers: dict[int, tuple[str, int]],
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        outbox_size: int = DEFAULT_OUTBOX_SIZE,
        hello_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 1.0,
        max_client_inflight: int = 1024,
        rng: random.Random | None = None,
    ) -> None:
        if node_id in peers:
            raise ValueError(f"peers must not include this node ({node_id})")
        if outbox_size < 1:
            raise ValueError(f"outbox_size must be >= 1, got {outbox_size}")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.peers = dict(peers)
        self.max_frame_size = max_frame_size
        self.hello_timeout = hello_timeout
        self.connect_timeout = connect_timeout
        self.max_client_inflight = max_client_inflight
        self.stats = TransportStats()
        self.port: int | None = None  # the bound port once running (differs from listen_port 0)
        self._backoff = (backoff_initial, backoff_max)
        self._rng = rng if rng is not None else random.Random()
        self._outbox_size = outbox_size
        self._outboxes = {peer: trio.open_memory_channel[bytes](outbox_size) for peer in peers}
        self._links: dict[int, trio.CancelScope] = {}
        # Links parked on an empty outbox: ``send`` may write to these sockets itself.
        self._idle: dict[int, FramedStream] = {}
        # The tail of a frame a direct write left half sent: the link writes it first.
        self._unsent: dict[int, bytes] = {}
        self._last_refusal: dict[int, str] = {}
        self._nursery: trio.Nursery | None = None
        self._running = False

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """Dial members that joined, hang up on members that left (thesis 4.1: on append).

        An empty address keeps what we knew (the bootstrap voters come with theirs)."""
        wanted: dict[int, tuple[str, int] | None] = {}
        for peer, address in peers.items():
            if peer == self.node_id:
                continue
            known = self.peers.get(peer)
            wanted[peer] = _parse_address(address) if address else known
        for peer in [p for p in self.peers if p not in wanted]:
            self._drop_peer(peer)
        for peer, target in wanted.items():
            if target is None:
                logger.warning("node %d: no address for new member %d", self.node_id, peer)
            elif self.peers.get(peer) != target or peer not in self._outboxes:
                self._drop_peer(peer)
                self.peers[peer] = target
                self._outboxes[peer] = trio.open_memory_channel[bytes](self._outbox_size)
                if self._nursery is not None:
                    self._nursery.start_soon(self._link, peer, name=f"pyraft-link-{self.node_id}->{peer}")

    def _drop_peer(self, peer: int) -> None:
        scope = self._links.pop(peer, None)
        if scope is not None:
            scope.cancel()
        self.peers.pop(peer, None)
        self._outboxes.pop(peer, None)

    # ----------------------------------------------------------------- sending

    def send(self, msg: Message) -> None:
        outbox = self._outboxes.get(msg.dst)
        if outbox is None:
            self.stats.dropped[msg.dst] += 1
            logger.debug(
                "node %d: dropping %s for unknown node %d", self.node_id, type(msg).__name__, msg.dst
            )
            return
        payload = encode(msg)
        if len(payload) > self.max_frame_size:
            self.stats.dropped[msg.dst] += 1
            logger.warning(
                "node %d: dropping %s of %d bytes for node %d: above max frame size %d",
                *(self.node_id, type(msg).__name__, len(payload), msg.dst, self.max_frame_size),
            )
            return
        frame = len(payload).to_bytes(HEADER_SIZE, "big") + payload
        if self._write_now(msg.dst, frame):
            return
        self._idle.pop(msg.dst, None)  # queued frames go first: later ones must not pass them
        tx, rx = outbox
        try:
            tx.send_nowait(frame)
        except trio.WouldBlock:
            with suppress(trio.WouldBlock):
                rx.receive_nowait()  # drop-oldest; see the module docstring
                self.stats.dropped[msg.dst] += 1
            tx.send_nowait(frame)

    def _write_now(self, peer: int, frame: bytes) -> bool:
        """Write ``frame`` on an idle link's socket without waiting; False to queue it instead.

        A partial write keeps the rest in ``_unsent`` and wakes the link with an empty
        frame, so it is written next; the drop-oldest policy never sees a frame's tail."""
        framed = self._idle.get(peer)
        if framed is None:
            return False
        try:
            written = write_fd(framed.stream.socket.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:
            return False  # the link is dying: the frame queues, and the link task sorts it out
        if written < len(frame):
            del self._idle[peer]
            if written:
                self._unsent[peer] = frame[written:]
                self._outboxes[peer][0].send_nowait(b"")
                return True
            return False
        self.stats.sent[peer] += 1
        return True

    # ----------------------------------------------------------------- running

    async def run(
        self,
        inbox: trio.MemorySendChannel[Message],
        client_handler: ClientHandler | None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind errors surface as a plain OSError before ``started()``."""
        if self._running:
            raise RuntimeError(f"transport of node {self.node_id} is already running")
        self._running = True
        listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_host)
        try:
            self.port = listeners[0].socket.getsockname()[1]
            handler = partial(self._serve_inbound, inbox, client_handler)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, handler, listeners)
                self._nursery = nursery
                for peer in self.peers:
                    nursery.start_soon(self._link, peer, name=f"pyraft-link-{self.node_id}->{peer}")
                logger.info("node %d: listening on %s:%d", self.node_id, self.listen_host, self.port)
                task_status.started(self.port)
        finally:
            self._running = False
            self._nursery = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    # ------------------------------------------------------ outbound peer link

    async def _link(self, peer: int) -> None:
        """Keep one connection to ``peer`` alive while the transport runs and it is a member."""
        outbox = self._outboxes.get(peer)
        if outbox is None:
            return  # it left the quorum before this task got going
        with trio.CancelScope() as scope:
            self._links[peer] = scope
            await self._keep_linked(peer, outbox[1])

    async def _keep_linked(self, peer: int, outbox: trio.MemoryReceiveChannel[bytes]) -> None:
        backoff = Backoff(*self._backoff, rng=self._rng)
        while True:
            framed = await self._dial(peer)
            if framed is not None:
                backoff.reset()
                self.stats.connects[peer] += 1
                try:
                    await self._pump(peer, framed, outbox)
                finally:
                    await framed.aclose()
            await trio.sleep(backoff.next_delay())

    async def _dial(self, peer: int) -> FramedStream | None:
        host, port = self.peers[peer]
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (*_CONNECTION_ERRORS, trio.TooSlowError) as exc:
            logger.debug(
                "node %d: cannot connect to node %d at %s:%d: %s", self.node_id, peer, host, port, exc
            )
            return None
        framed = FramedStream(stream, self.max_frame_size)
        try:
            with trio.fail_after(self.hello_timeout):
                await framed.send(Hello(PROTOCOL_VERSION, self.cluster_id, self.node_id))
                reply = await framed.receive()
            _check_reply(reply, peer)
        except (*_CONNECTION_ERRORS, trio.TooSlowError, FrameError, CodecError, _Reject) as exc:
            # Said once per peer and reason: an observer not yet added is refused every retry.
            repeated = self._last_refusal.get(peer) == str(exc)
            self._last_refusal[peer] = str(exc)
            level = logging.DEBUG if repeated else logging.WARNING
            logger.log(level, "node %d: handshake with node %d failed: %s", self.node_id, peer, exc)
            await framed.aclose()
            return None
        self._last_refusal.pop(peer, None)
        logger.info("node %d: connected to node %d at %s:%d", self.node_id, peer, host, port)
        return framed

    async def _pump(self, peer: int, framed: FramedStream, outbox: trio.MemoryReceiveChannel[bytes]) -> None:
        """Write until the connection breaks; a watcher ends it early if the peer hangs up."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_hangup, peer, framed, nursery.cancel_scope)
            await self._write_batches(peer, framed, outbox)
            nursery.cancel_scope.cancel()

    async def _write_batches(
        self, peer: int, framed: FramedStream, outbox: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        if self._unsent.pop(peer, None) is not None:  # a tail from the last connection: it is lost
            self.stats.dropped[peer] += 1
        try:
            await self._write_queued(peer, framed, outbox)
        finally:
            if self._idle.get(peer) is framed:
                del self._idle[peer]  # before the socket closes: ``send`` must never write to it

    async def _write_queued(
        self, peer: int, framed: FramedStream, outbox: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        while True:
            if not outbox.statistics().current_buffer_used:
                self._idle[peer] = framed
            first = await outbox.receive()
            self._idle.pop(peer, None)
            batch = [self._unsent.pop(peer, b""), first]
            size = len(first)
            while size < MAX_BATCH_BYTES:
                try:
                    frame = outbox.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(frame)
                size += len(frame)
            messages = sum(1 for part in batch if part)  # b"" only wakes us for a tail
            try:
                await framed.stream.send_all(b"".join(batch))
            except _CONNECTION_ERRORS as exc:
                self.stats.dropped[peer] += messages
                logger.info("node %d: link to node %d broke while writing: %s", self.node_id, peer, exc)
                return
            self.stats.sent[peer] += messages

    async def _watch_hangup(self, peer: int, framed: FramedStream, scope: trio.CancelScope) -> None:
        """A peer never writes on our link, so any read result means the link is over:
        noticing now lets us reconnect before the next write would have failed."""
        try:
            data = await framed.stream.receive_some(1)
        except _CONNECTION_ERRORS as exc:
            why = str(exc)
        else:
            why = "closed by peer" if not data else "peer wrote unexpected data"
        logger.info("node %d: link to node %d ended: %s", self.node_id, peer, why)
        if self._idle.get(peer) is framed:
            del self._idle[peer]  # ``send`` queues from now on: the next connection takes it
        scope.cancel()

    # ----------------------------------------------------- inbound connections

    async def _serve_inbound(
        self,
        inbox: trio.MemorySendChannel[Message],
        client_handler: ClientHandler | None,
        stream: trio.SocketStream,
    ) -> None:
        """Every failure of one connection ends here, so it can never reach the node's nursery."""
        framed = FramedStream(stream, self.max_frame_size)
        where = framed.peer_name()
        try:
            hello = await self._receive_hello(framed)
            await framed.send(HelloReply(True, "", self.node_id))
            if hello.node_id is None:
                await self._serve_client(framed, client_handler)
            else:
                await self._serve_peer(framed, hello.node_id, inbox)
        except _Reject as rejection:
            await self._reject(framed, where, rejection)
        except _CONNECTION_ERRORS as exc:
            logger.info("node %d: connection from %s lost: %s", self.node_id, where, exc)
        except Exception:
            # A bug in serving one connection must not take down the listener and the node.
            self.stats.rejected["internal_error"] += 1
            logger.exception("node %d: internal error serving %s", self.node_id, where)
        finally:
            await framed.aclose()

    async def _reject(self, framed: FramedStream, where: str, rejection: _Reject) -> None:
        self.stats.rejected[rejection.code] += 1
        # A node not (yet) in our configuration is usually an observer waiting to be added.
        level = logging.INFO if rejection.code == "unknown_node" else logging.WARNING
        logger.log(level, "node %d: closing connection from %s: %s", self.node_id, where, rejection.detail)
        if rejection.reply:
            with trio.move_on_after(1.0), suppress(*_CONNECTION_ERRORS):
                await framed.send(HelloReply(False, rejection.detail, self.node_id))

    async def _receive_hello(self, framed: FramedStream) -> Hello:
        with trio.move_on_after(self.hello_timeout):
            msg = await _receive_or_reject(framed)
            if not isinstance(msg, Hello):
                what = "closed" if msg is None else f"sent {type(msg).__name__}"
                raise _Reject("bad_handshake", f"{what} before Hello")
            self._check_hello(msg)
            return msg
        raise _Reject("hello_timeout", f"no Hello within {self.hello_timeout} s")

    def _check_hello(self, hello: Hello) -> None:
        if hello.protocol_version != PROTOCOL_VERSION:
            raise _Reject(
                "bad_version",
                f"protocol version {hello.protocol_version} (this node speaks {PROTOCOL_VERSION})",
                reply=True,
            )
        if hello.cluster_id != self.cluster_id:
            raise _Reject(
                "wrong_cluster", f"cluster id {hello.cluster_id!r} (this is {self.cluster_id!r})", reply=True
            )
        if hello.node_id is not None and hello.node_id not in self.peers:
            raise _Reject("unknown_node", f"node id {hello.node_id} is not a peer of this node", reply=True)

    async def _serve_peer(
        self, framed: FramedStream, peer: int, inbox: trio.MemorySendChannel[Message]
    ) -> None:
        while (msg := await _receive_or_reject(framed)) is not None:
            if not is_raft_message(msg):
                raise _Reject("unexpected_message", f"node {peer} sent {type(msg).__name__}")
            if msg.src != peer:
                raise _Reject("wrong_src", f"node {peer} sent a message from node {msg.src}")
            if msg.dst != self.node_id:
                raise _Reject("wrong_dst", f"node {peer} sent a message for node {msg.dst}")
            try:
                await hand_over(inbox, msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the node stopped reading: it is shutting down
            self.stats.received[peer] += 1

    # --------------------------------------------------------- client requests

    async def _serve_client(self, framed: FramedStream, handler: ClientHandler | None) -> None:
        """Requests run concurrently; the reader stops taking more past max_client_inflight."""
        session = _ClientSession(framed, handler, self.max_client_inflight)
        rejection: _Reject | None = None  # stays None if a failed answer cancels the reader
        async with trio.open_nursery() as nursery:
            rejection = await session.read_requests(nursery)
            if rejection is not None:
                nursery.cancel_scope.cancel()
        if rejection is not None:
            raise rejection


class _ClientSession:
    """One client connection: a reader, and tasks that compute answers and write them.

    The reader takes every request that one read brought in; with a
    BatchClientHandler the proposals among them go to the handler as one batch
    (one task, one trip through the raft loop). Answers are encoded by the task
    that computed them and queued; the first such task to find no write going on
    writes, and goes on writing whatever others queue meanwhile: a burst of commits
    is answered with one write, and no writer task has to be woken for it."""

    def __init__(self, framed: FramedStream, handler: ClientHandler | None, max_inflight: int) -> None:
        self.framed = framed
        self.handler = handler
        self.batch_handler = handler if isinstance(handler, BatchClientHandler) else None
        self.slots = trio.Semaphore(max_inflight)
        self._queued: list[bytes] = []
        self._writing = False  # a task is in ``_write``: it sends what is queued

    async def read_requests(self, nursery: trio.Nursery) -> _Reject | None:
        """Returns (never raises) so the nursery around it stays free of exception groups.
        On a clean EOF the requests in flight still finish and are answered."""
        scope = nursery.cancel_scope
        while True:
            try:
                msg = await _receive_or_reject(self.framed)
                burst: list[ClientRequest] = []
                while msg is not None:
                    if not isinstance(msg, ClientRequest):
                        return _Reject("unexpected_message", f"client sent {type(msg).__name__}")
                    burst.append(msg)
                    msg = _buffered_or_reject(self.framed)
            except _Reject as rejection:
                return rejection
            except _CONNECTION_ERRORS as exc:
                return _Reject("client_lost", f"client connection lost: {exc}")
            if not burst:
                return None
            await self._dispatch(burst, nursery, scope)

    async def _dispatch(
        self, burst: list[ClientRequest], nursery: trio.Nursery, scope: trio.CancelScope
    ) -> None:
        """Start tasks for ``burst`` without a checkpoint while there is room: the requests of
        one read then reach the raft loop together and share one Ready."""
        proposals: list[ClientRequest] = []
        for request in burst:
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                if proposals:
                    nursery.start_soon(self.answer_batch, proposals, scope)
                    proposals = []
                await self.slots.acquire()
            if self.batch_handler is not None and request.op == OP_PROPOSE:
                proposals.append(request)
            else:
                nursery.start_soon(self.answer, request, scope)
        if proposals:
            nursery.start_soon(self.answer_batch, proposals, scope)

    async def answer(self, request: ClientRequest, scope: trio.CancelScope) -> None:
        await self._answer_all([request], self._respond, scope)

    async def answer_batch(self, requests: list[ClientRequest], scope: trio.CancelScope) -> None:
        await self._answer_all(requests, self._respond_batch, scope)

    async def _answer_all(
        self,
        requests: list[ClientRequest],
        respond: Callable[[list[ClientRequest]], Awaitable[list[ClientResponse]]],
        scope: trio.CancelScope,
    ) -> None:
        try:
            responses = await respond(requests)
            frames = [encode_frame(encode(r), self.framed.max_frame_size) for r in responses]
        except (CodecError, FrameError) as exc:
            logger.info("cannot answer client requests %s: %s", _ids(requests), exc)
            scope.cancel()
            return
        except Exception:
            # A handler bug: the outcome is unknown, and closing the connection is
            # the one answer that tells the client exactly that.
            logger.exception("client handler failed on requests %s", _ids(requests))
            scope.cancel()
            return
        finally:
            for _ in requests:
                self.slots.release()
        self._queued.extend(frames)
        if not self._writing:
            await self._write(scope)

    async def _write(self, scope: trio.CancelScope) -> None:
        """Send everything queued, including what other answers queue during the send."""
        self._writing = True
        try:
            while self._queued:
                data = b"".join(self._queued)
                self._queued.clear()
                await self.framed.stream.send_all(data)
        except _CONNECTION_ERRORS as exc:
            logger.info("cannot answer client requests: %s", exc)
            scope.cancel()
        finally:
            self._writing = False

    async def _respond(self, requests: list[ClientRequest]) -> list[ClientResponse]:
        (request,) = requests
        if self.handler is None or request.op not in OPS:
            return [ClientResponse.failure(request.request_id, BAD_REQUEST)]
        return [_matched(request, await self.handler(request))]

    async def _respond_batch(self, requests: list[ClientRequest]) -> list[ClientResponse]:
        assert self.batch_handler is not None
        responses = await self.batch_handler.handle_batch(requests)
        if len(responses) != len(requests):
            raise RuntimeError(f"handle_batch answered {len(responses)} of {len(requests)} requests")
        return [_matched(q, r) for q, r in zip(requests, responses, strict=True)]


def _matched(request: ClientRequest, response: ClientResponse) -> ClientResponse:
    if response.request_id != request.request_id:
        logger.error("client handler answered request %d with id %d", request.request_id, response.request_id)
        response = dataclasses.replace(response, request_id=request.request_id)
    return response


def _ids(requests: list[ClientRequest]) -> str:
    return ",".join(str(r.request_id) for r in requests[:8]) + ("..." if len(requests) > 8 else "")


def _buffered_or_reject(framed: FramedStream) -> WireMessage | None:
    try:
        return framed.receive_buffered()
    except CodecError as exc:
        raise _Reject("bad_message", f"undecodable message: {exc}") from exc


async def _receive_or_reject(framed: FramedStream) -> WireMessage | None:
    try:
        return await framed.receive()
    except FrameError as exc:
        raise _Reject("bad_frame", f"bad frame: {exc}") from exc
    except CodecError as exc:
        raise _Reject("bad_message", f"undecodable message: {exc}") from exc


def _parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad member address {address!r}: expected HOST:PORT")
    return host, int(port)


def _check_reply(reply: WireMessage | None, peer: int) -> None:
    if not isinstance(reply, HelloReply):
        what = "closed" if reply is None else f"sent {type(reply).__name__}"
        raise _Reject("bad_handshake", f"node {peer} {what} instead of HelloReply")
    if not reply.ok:
        raise _Reject("refused", f"node {peer} refused us: {reply.reason}")
    if reply.node_id != peer:
        raise _Reject("wrong_node", f"expected node {peer} at that address, found node {reply.node_id}")

"""A single-node metadata quorum serving real HTTP from a background thread (for schemathesis).

Schemathesis drives a server synchronously over HTTP; running the node in its
own trio loop on a thread, with hypercorn bound to a free port, keeps the
whole run in-process and fast, with nothing to clean up but the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from pyraft.actors.node import RaftNode
from pyraft.http.app import build_app
from pyraft.http.server import serve_http
from pyraft.metadata.events import EventLog, NodeWatcher
from pyraft.metadata.service import MetadataService
from pyraft.metadata.store import MetadataStore
from pyraft.storage.memory import MemoryStorage
from pyraft.transport.memory import MemoryNetwork, MemoryTransport


async def _serve(ready: list[str], started: threading.Event, stop: trio.Event) -> None:
    store = MetadataStore()
    node = RaftNode(1, (1,), MemoryStorage(), MemoryTransport(MemoryNetwork(), 1), store, offload_io=False)
    events = EventLog()
    service = MetadataService(node, store, timeout=2.0, events=events)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        nursery.start_soon(NodeWatcher(node, events).run)
        nursery.start_soon(service.bootstrap_features)
        urls = await nursery.start(serve_http, build_app(node, service, events), "127.0.0.1", 0)
        with trio.fail_after(20):
            while not store.has_feature_level():  # elected, and metadata.version bootstrapped
                await trio.sleep(0.01)
        ready.append(urls[0])
        started.set()
        await stop.wait()
        nursery.cancel_scope.cancel()


@contextmanager
def live_node() -> Iterator[str]:
    """Yield the base URL of a running single-node quorum; stop it on exit."""
    urls: list[str] = []
    started = threading.Event()
    token: list[trio.lowlevel.TrioToken] = []
    stop: list[trio.Event] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        stop.append(trio.Event())
        await _serve(urls, started, stop[0])

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True, name="pyraft-live-node")
    thread.start()
    if not started.wait(timeout=30):
        raise RuntimeError("the live node did not start within 30 s")
    try:
        yield urls[0]
    finally:
        trio.from_thread.run_sync(stop[0].set, trio_token=token[0])
        thread.join(timeout=10)

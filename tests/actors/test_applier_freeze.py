"""The applier freezes the heap as applied state accumulates (heap.freeze_heap, FREEZE_EVERY)."""

from __future__ import annotations

import pytest
import trio

from pyraft.actors import applier as applier_module
from pyraft.actors.applier import FREEZE_EVERY, Applier
from pyraft.core.messages import Entry
from pyraft.statemachine import KVStore, set_command


async def test_the_heap_is_frozen_every_freeze_every_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it, every full pass of the cyclic GC walked the whole applied state again
    (140-230 ms at 100k-200k brokers, every few seconds): long enough for an election."""
    frozen_at: list[int] = []
    applier = Applier(KVStore(), offload=False)
    monkeypatch.setattr(applier_module, "freeze_heap", lambda: frozen_at.append(applier.applied_index))
    half = FREEZE_EVERY // 2
    send, receive = trio.open_memory_channel[list[Entry]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(applier.run, receive)
        for first in range(1, 5 * half + 1, half):
            batch = [Entry(i, 1, data=set_command(f"k{i}", b"v")) for i in range(first, first + half)]
            await send.send(batch)
        await applier.wait_applied(5 * half)
        nursery.cancel_scope.cancel()
    assert frozen_at == [2 * half, 4 * half]

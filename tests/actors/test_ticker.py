"""The ticker on trio's MockClock: a steady schedule, and no burst after a stall."""

from __future__ import annotations

import trio
import trio.testing

from pyraft.actors.events import Tick
from pyraft.actors.ticker import run_ticker

INTERVAL = 0.01


async def count_ticks(receive: trio.MemoryReceiveChannel[Tick], seconds: float) -> int:
    """Ticks that arrive within the next ``seconds`` of (virtual) time."""
    count = 0
    with trio.move_on_after(seconds):
        async for _ in receive:
            count += 1
    return count


async def test_ticks_come_at_the_interval(autojump_clock: trio.testing.MockClock) -> None:
    send, receive = trio.open_memory_channel[Tick](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_ticker, INTERVAL, send)
        assert await count_ticks(receive, 1.0 + INTERVAL / 2) == 100
        nursery.cancel_scope.cancel()


async def test_late_wake_ups_do_not_shift_the_schedule(autojump_clock: trio.testing.MockClock) -> None:
    """A busy neighbour makes the ticker wake up to 0.3 intervals late, again and again: it still
    ticks 100 times a second (a ticker that sleeps one interval after each tick would drift)."""

    async def busy_neighbour() -> None:
        while True:
            await trio.sleep(INTERVAL * 0.45)
            autojump_clock.jump(INTERVAL * 0.3)  # time passes while this task "runs"

    send, receive = trio.open_memory_channel[Tick](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_ticker, INTERVAL, send)
        nursery.start_soon(busy_neighbour)
        assert 99 <= await count_ticks(receive, 1.0) <= 100
        nursery.cancel_scope.cancel()


async def test_ticks_missed_during_a_stall_are_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """A second passes with no task running: the ticker fires once, late, then resumes its
    schedule; it does not deliver the hundred ticks it missed (that would time out the
    leader before this node could read the leader's heartbeats)."""
    send, receive = trio.open_memory_channel[Tick](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_ticker, INTERVAL, send)
        assert await count_ticks(receive, 0.1 + INTERVAL / 2) == 10
        autojump_clock.jump(1.0)
        assert await count_ticks(receive, INTERVAL / 2) == 1
        assert await count_ticks(receive, 0.1) == 10
        nursery.cancel_scope.cancel()

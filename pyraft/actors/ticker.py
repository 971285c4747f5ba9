"""The clock of the core: wall-clock time turned into ``tick()`` calls."""

from __future__ import annotations

import trio

from pyraft.actors.events import TICK, Tick


async def run_ticker(interval: float, inbox: trio.MemorySendChannel[Tick]) -> None:
    """Send a tick every ``interval`` seconds, on a fixed schedule that does not drift.

    Ticks missed while this process could not run (a long GC pass, a worker thread
    holding the GIL, a paused process) are dropped, not sent in a burst. A burst would
    run out a follower's election timeout before it has read the heartbeats that
    arrived meanwhile, blaming the leader for our own stall: under load that started
    elections at every snapshot. Go's time.Ticker drops them for the same reason.

    Dropping ticks is safe because no safety property counts them: linearizable reads
    wait for a quorum's answer to a heartbeat round (ReadIndex), never for a lease, and
    CheckQuorum and the vote-refusing lease only decide when to act (liveness). A lease
    read added later must time its lease on a monotonic clock: counted in ticks, a lease
    would outlive a stall."""
    deadline = trio.current_time() + interval
    while True:
        await trio.sleep_until(deadline)
        await inbox.send(TICK)
        deadline += interval
        now = trio.current_time()
        if deadline < now:  # a whole interval or more was missed: start afresh from now
            deadline = now + interval

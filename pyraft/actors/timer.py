"""The clock of the core: monotonic time turned into ``tick()`` calls, only when they matter.

The core counts ticks (``Timing.tick_ms`` each) and never reads a clock. A ticker that
delivered every tick woke each node 100 times a second to count, which cost an idle
node 6-8% of a core here (a trio timed wake-up costs 150-400 us of CPU on this VM).
Instead the raft loop credits the ticks that have elapsed, on a fixed grid from a
monotonic clock, before it handles each batch of inputs (``TickClock.credit``), and a
timer task sleeps until the tick at which ``core.ticks_until_due()`` says a tick will
act: a heartbeat, a campaign, a CheckQuorum check, a transfer's abort (``Timer``).
An idle follower that hears heartbeats wakes only when its stale plan runs out; an
idle leader once per heartbeat.

Stalls. This process sometimes cannot run for a while: a long GC pass, a worker thread
holding the GIL, a paused process, a long batch of the raft loop itself. The peers'
messages that arrived meanwhile wait in socket buffers or the inbox, and crediting all
the ticks of the stall at once would run out a follower's election timeout before it
has read the heartbeats that arrived meanwhile, blaming the leader for our own stall
(under load that started elections at every snapshot). Hence the rule:

* a credit made before handling inputs never brings the core to its due tick: it counts
  at most ``ticks_until_due() - 1`` ticks and drops the rest (inputs that waited
  through a stall are taken as having arrived before the timeout);
* only the timer's own wake-up (``TickClock.wake``) may credit the due tick, so timeouts
  fire from the timer alone. If it was held back by the cap above while the timer was on
  time (the raft loop merely handled a queued input first), the wake credits it anyway;
* a wake-up more than one interval late means this process is running late (stalled
  across the deadline, or overloaded: its tasks wait longer than a tick for their turn).
  From then until a wake-up is on time again, time moves as the old ticker moved it: one
  tick per wake-up of the timer (planned every interval), none for inputs, and the ticks
  the process could not run for are dropped. The first late wake-up gives none at all if
  the next tick would act, so the readers get to queue what arrived during the stall
  first. A busy or stalled node thus counts its own slowness against nobody (under load,
  wall-clock timeouts started elections on every node at 1024 proposals in flight), and
  under sustained overload its timeouts stretch with the load instead of never firing.

Dropping ticks is safe because no safety property counts them: linearizable reads
wait for a quorum's answer to a heartbeat round (ReadIndex), never for a lease, and
CheckQuorum and the vote-refusing lease only decide when to act (liveness). A lease
read added later must time its lease on a monotonic clock: counted in ticks, a lease
would outlive a stall.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from pyraft.actors.events import TimerWake
from pyraft.core.raft import RaftCore

_EPSILON = 1e-6  # of a tick


class TickClock:
    """Which ticks the core has been given, on a grid of ``interval`` seconds. Used by the raft
    loop only (it alone touches the core)."""

    __slots__ = ("counted", "grace", "held", "interval", "late", "next_at", "origin")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.origin = now  # tick n falls due at origin + n * interval
        self.counted = 0  # ticks credited or dropped so far
        self.next_at = now + interval  # when tick counted + 1 falls due
        self.held = False  # an input's credit stopped short of the due tick: the next wake may give it
        self.late = False  # the timer's last wake-up was late: one tick per wake-up until on time
        self.grace = False  # the first late wake-up in a row is still to be handled

    def _take(self, now: float) -> int:
        """How many ticks fell due up to ``now``; they are accounted for from here on."""
        # Rounded so that waking at exactly ``deadline()`` finds the tick it was planned for.
        due = math.floor((now - self.origin) / self.interval + _EPSILON) - self.counted
        if due <= 0:
            return 0
        self.counted += due
        self.next_at = self.origin + (self.counted + 1) * self.interval
        return due

    def credit(self, core: RaftCore, now: float) -> None:
        """Before inputs: count the ticks elapsed, but never up to a timer (see the module's doc).
        The caller may skip the call while ``now < next_at`` (nothing is due)."""
        ticks = self._take(now)
        if not ticks:
            return
        due = core.ticks_until_due()
        if self.late and due is not None:
            return  # running late: only the timer's wake-ups move time on (see ``wake``)
        if due is not None and ticks >= due:
            ticks = due - 1
            self.held = True
        _tick(core, ticks)

    def running_late(self) -> None:
        """Called by the timer the moment it wakes late, before the raft loop hears of it: the
        inputs handled before its ``TimerWake`` waited through the same stall, and must not
        credit it either."""
        if not self.late:
            self.late = self.grace = True

    def wake(self, core: RaftCore, now: float, late: bool) -> None:
        """The timer's wake-up: credit every tick due, timers included; when it is ``late``,
        one tick at most (see the module's doc)."""
        if late:
            self.running_late()
            first, self.grace = self.grace, False
            self.held = False
            self._take(now)  # the ticks of the stall are dropped
            if first and core.ticks_until_due() == 1:
                # A whole interval for the readers: the grid moves so the next tick is due then.
                self.origin = now - self.counted * self.interval
                self.next_at = now + self.interval
                return
            _tick(core, 1)
            return
        self.late = self.grace = False
        ticks = self._take(now)
        if self.held:
            self.held = False
            if not ticks and core.ticks_until_due() == 1:
                ticks = 1  # the due tick an input's credit held back: the timer was on time
        _tick(core, ticks)

    def deadline(self, core: RaftCore) -> float:
        """When the timer must wake: the time of the tick ``ticks_until_due()`` names, or never."""
        due = core.ticks_until_due()
        if due is None:
            return math.inf
        if self.late:
            return self.next_at  # every tick, as long as the process runs late
        return self.next_at + (due - 1) * self.interval


def _tick(core: RaftCore, ticks: int) -> None:
    """Give the core ``ticks`` ticks, but at most two election timeouts' worth: only a stall or a
    node with no timer to wait for (an idle single-node quorum, an observer) owes more, and past
    that many no tick changes what the core does, so the rest are dropped, not run one by one
    (a day of an idle quorum is 8.6 million ticks)."""
    for _ in range(min(ticks, 2 * core.config.election_ticks)):
        core.tick()


class Timer:
    """The task that sleeps until the planned deadline, then puts a ``TimerWake`` in the inbox."""

    def __init__(self, interval: float, on_late: Callable[[], None] | None = None) -> None:
        self.interval = interval
        self.on_late = on_late  # told at once when a wake-up is late (``TickClock.running_late``)
        self._scope = trio.CancelScope()  # deadline: inf until planned
        self.wakes = 0  # how often it woke the raft loop (for tests and metrics)

    def plan(self, deadline: float) -> None:
        """Wake by ``deadline``. Only ever moves the current sleep earlier: a later wish is met
        by waking at the old deadline, finding nothing due and planning again. A deadline
        already past counts from now, so the wake it causes is not mistaken for a stall."""
        deadline = max(deadline, trio.current_time())
        if deadline < self._scope.deadline:
            self._scope.deadline = deadline

    async def run(self, inbox: trio.MemorySendChannel[TimerWake]) -> None:
        while True:
            scope = self._scope
            with scope:
                await trio.sleep_forever()
            # The next sleep's scope exists before the raft loop hears of this wake-up, so its
            # plan after handling it lands there, not in the scope that just expired.
            self._scope = trio.CancelScope()
            late = trio.current_time() - scope.deadline >= self.interval
            if late and self.on_late is not None:
                self.on_late()
            self.wakes += 1
            await inbox.send(TimerWake(late))

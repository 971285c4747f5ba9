"""Waiting on conditions with deadlines: the only way the fault suite waits for anything.

A fixed sleep is either too short on a loaded machine or wastes time on a fast one;
polling a condition with a deadline is neither, and its timeout message says what
was awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")
POLL_INTERVAL = 0.02


class ConditionTimeout(TimeoutError):
    pass


async def wait_until(
    what: str, condition: Callable[[], T], timeout: float, *, describe: Callable[[], object] | None = None
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises :class:`ConditionTimeout` naming ``what`` (and ``describe()``, if given) after ``timeout``.
    """

    async def check() -> T:
        return condition()

    return await wait_until_async(what, check, timeout, describe=describe)


async def wait_until_async(
    what: str,
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    describe: Callable[[], object] | None = None,
) -> T:
    """:func:`wait_until` for a condition that has to await (e.g. an HTTP status poll)."""
    deadline = trio.current_time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if trio.current_time() >= deadline:
            extra = f"; {describe()}" if describe is not None else ""
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {what}{extra}")
        await trio.sleep(POLL_INTERVAL)

"""Keeping the cyclic garbage collector off a large, long-lived state."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``).

    A metadata store of a million records is millions of long-lived objects; a full
    collection walks them all (150-350 ms measured), stalling the event loop long enough
    to miss heartbeats. After a snapshot or a restore, and every few thousand applied
    entries (applier.FREEZE_EVERY), that state is old, so it is frozen: reference counting
    still frees it when replaced, only garbage cycles among it would wait, and the store
    builds none. The young generations are collected first, so the cycles that do come
    and go (trio's tracebacks, say) are freed rather than frozen."""
    gc.collect(1)
    gc.freeze()

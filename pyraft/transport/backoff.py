"""Reconnect pacing shared by the peer links and the client."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter.

    Jitter spreads reconnect attempts so a restarted node is not hit by every
    peer and client in the same instant; the cap keeps a recovered peer from
    waiting long before someone notices it is back.
    """

    def __init__(self, initial: float = 0.02, maximum: float = 1.0, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial} and {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """Each call doubles the ceiling; the delay is drawn from its upper half."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

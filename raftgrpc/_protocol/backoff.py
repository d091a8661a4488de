"""Reconnect delays: exponential with full jitter, capped."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays before successive redials of one peer.

    The first delay is at most ``initial``; each failure doubles the ceiling up to ``maximum``;
    a delay is drawn uniformly from [ceiling/2, ceiling] so that nodes restarted together do
    not redial in lockstep. :meth:`reset` after a successful handshake.

    >>> b = Backoff(0.05, 2.0, rng=random.Random(1))
    >>> [round(b.next_delay(), 3) <= 2.0 for _ in range(10)]
    [True, True, True, True, True, True, True, True, True, True]
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._ceiling = initial
        self._rng = rng if rng is not None else random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; raises the ceiling for the one after."""
        ceiling = self._ceiling
        self._ceiling = min(self._maximum, self._ceiling * 2)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``initial`` (call after a successful handshake)."""
        self._ceiling = self._initial

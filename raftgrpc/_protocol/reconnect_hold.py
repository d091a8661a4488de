"""Holding back a peer's new stream until SyncObj has seen the old one lost (pure code).

SyncObj cancels a chunked transfer (a snapshot) only if it sees the peer disconnected when
an append-entries round starts. Reporting a redialled stream before such a round would let
the transfer continue mid-way on the new stream, where the receiver drops it
(:mod:`raftgrpc._protocol.chunks`) and it must start over. So once a peer's stream was lost,
its next stream is reported from the tick callback, and no sooner than two append-entries
periods after the loss. SyncObj runs its Raft logic (append-entries rounds included) before
its tick callbacks: a stream whose due time passed before the previous tick is reported in
this tick's callback, after this tick's round, which then started after the due time too.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

__all__ = ["ReconnectHold"]

T = TypeVar("T")


class ReconnectHold(Generic[T]):
    """The streams established but not yet reported, and when each may be.

    >>> hold = ReconnectHold[str](hold_s=0.2)
    >>> hold.admit("first stream", lost_at=-math.inf)  # never lost: report it now
    True
    >>> hold.admit("redialled", lost_at=10.0)
    False
    >>> hold.tick(now=10.1), hold.tick(now=10.3), hold.tick(now=10.4)
    ([], [], ['redialled'])
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        """How long after a loss the next stream is held (two append-entries periods)."""
        self._held: list[tuple[float, T]] = []
        self._last_tick = -math.inf

    def admit(self, item: T, lost_at: float) -> bool:
        """A stream ``item`` was established to a peer last lost at ``lost_at`` (-inf:
        never): True to report it now, False if it is held until :meth:`tick` gives it."""
        if lost_at == -math.inf:
            return True
        self._held.append((lost_at + self.hold_s, item))
        return False

    def tick(self, now: float) -> list[T]:
        """A tick callback at ``now``: the held streams to report now, in the order held
        (those due by the previous tick)."""
        previous, self._last_tick = self._last_tick, now
        held = self._held
        if not held or all(due > previous for due, _ in held):
            return []
        self._held = [(due, item) for due, item in held if due > previous]
        return [item for due, item in held if due <= previous]

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        """Forget every held stream (the transport is shutting down)."""
        self._held.clear()

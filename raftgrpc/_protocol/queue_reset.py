"""When a peer's send queue is dropped whole and its stream reset (pure code, clock passed in).

``send()`` never blocks PySyncObj's tick thread, so a peer that takes messages slower than
the leader sends them makes its queue grow. Two things end that, each by resetting the
stream (the queue goes with it, never partly, so no chunked transfer is split) and letting
PySyncObj resend from where the follower is once it reconnects, as after a TCP reset:

* the queue is full (its memory and spill file, ``queue_memory_bytes`` +
  ``queue_spool_bytes``): nothing more can be queued in order;
* the message at its head has waited longer than ``queue_max_age_s``: what waits behind it
  is stale, and a PySyncObj follower fed old append-entries truncates its log back to them
  and asks for everything after again, which can keep it behind for good. Snapshot chunks
  never go stale (a big snapshot on a slow link may take longer than that to leave), and
  time spent waiting behind one does not count
  (:attr:`raftgrpc._transport.outbox.Outbox.head_stamp`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["QUEUE_FULL", "QueueReset", "QueueResetPolicy"]


@dataclass(frozen=True)
class QueueReset:
    """Why a stream's queue is dropped and the stream reset."""

    reason: str
    """For people, and :class:`raftgrpc.PeerUnreachable`'s ``reason``."""
    age_s: float | None = None
    """How long the head waited, when the queue is stale (None: it is full)."""


QUEUE_FULL = QueueReset("send queue full")


@dataclass(frozen=True)
class QueueResetPolicy:
    """Decides, each time a message is queued, whether the stream must be reset instead.

    >>> policy = QueueResetPolicy(max_age_s=10.0)
    >>> policy.judge(True, head_stamp=100.0, now=105.0) is None
    True
    >>> policy.judge(True, head_stamp=100.0, now=111.0).reason
    'send queue stale (11.0 s)'
    """

    max_age_s: float
    """TransportConfig.queue_max_age_s (0: a queue never goes stale)."""

    @staticmethod
    def stamp(snapshot_chunk: bool, now: float) -> float:
        """The stamp of a message queued at ``now``: +inf for a snapshot chunk, which never
        goes stale."""
        return math.inf if snapshot_chunk else now

    def judge(self, queued: bool, head_stamp: float, now: float) -> QueueReset | None:
        """After a message was offered to the queue at ``now`` (``queued``: whether it took
        it; ``head_stamp``: the queue's head stamp then): None, or why to reset."""
        if not queued:
            return QUEUE_FULL
        age, limit = now - head_stamp, self.max_age_s
        if limit and age > limit:
            return QueueReset(f"send queue stale ({age:.1f} s)", age)
        return None

"""Keeps a leader from sending a follower, on one stream, entries that stream already carries.

PySyncObj's leader advances a follower's ``nextIndex`` as it sends, and every fresh
acknowledgement sets it back to the acknowledged index + 1: the next append-entries round
sends again every entry that is still on its way. With one entry in flight nothing is sent
twice; with a hundred entries of 64 KiB in flight, each acknowledgement re-sends up to
6.4 MiB, the copies queue behind the originals, the acknowledgements come later still, and
throughput collapses (TCPTransport fails that load outright; docs/performance.md).

A stream is ordered and reliable while it lives, so a copy of what it already carries tells
the follower nothing. Worse, PySyncObj's follower truncates its log after a copy's
``prevLogIdx`` before appending the copy's entries: a late copy removes entries it has
already acknowledged until the originals' copies arrive again.

A :class:`ResendFilter` lives for exactly one stream (one :class:`raftgrpc.link.Link`) and
remembers which entries of the sender's current term that stream has carried, as the
contiguous range the follower's log will hold once it has read the stream: it drops an
append-entries message whose entries all lie in that range. Everything else passes:
heartbeats, snapshot chunks (which also clear the memory: the follower replaces its log),
entries outside the range, and everything of another term.

Dropping is what a lossy network may do to any message, so Raft stays safe; it stays live
because every way the follower can lose or refuse what the stream carried makes it answer
with a reset (``next_node_idx`` with ``reset``), which clears the memory
(:meth:`ResendFilter.forget`), and the leader's heartbeats, never dropped, point past the
follower's log and draw that reset within an append-entries period. A broken stream takes
its filter with it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ResendFilter"]


class ResendFilter:
    """Per-stream memory of the log entries sent on it (pure: no I/O, one thread)."""

    __slots__ = ("_base", "_term", "_through", "_unit", "dropped")

    def __init__(self) -> None:
        self._term: Any = None  # the term of the entries remembered; None: nothing
        self._base = 0  # the prevLogIdx the remembered range starts after
        self._through = 0  # the last index of the remembered range
        # The big entry whose chunks are being sent: (term, prevLogIdx, dropping it).
        self._unit: tuple[Any, Any, bool] | None = None
        self.dropped = 0
        """Messages dropped so far."""

    def forget(self) -> None:
        """Remember nothing: the follower may lack what the stream carried."""
        self._term = None
        self._unit = None

    def redundant(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` (about to be sent) repeats entries the stream carries; notes
        what passes."""
        if message.get("type") != "append_entries":
            return False
        prev = message.get("prevLogIdx")
        if prev is None:  # a snapshot chunk: the follower's log will be replaced
            self.forget()
            return False
        term = message.get("term")
        transmission = message.get("transmission")
        if transmission is not None and transmission != "start":
            # A later chunk of a big entry shares its first chunk's fate: the follower
            # glues chunks together, a lone tail would corrupt the next entry it builds.
            unit = self._unit
            if unit is not None and unit[0] == term and unit[1] == prev:
                if unit[2]:
                    self.dropped += 1
                return unit[2]
            self._unit = None
            self.forget()  # a tail whose head this filter did not see: trust nothing
            return False
        if transmission == "start":
            last = prev + 1
        else:
            entries = message.get("entries")
            last = entries[-1][1] if entries else prev
        drop = last > prev and term == self._term and self._base <= prev and last <= self._through
        self._unit = (term, prev, drop) if transmission == "start" else None
        if drop:
            self.dropped += 1
            return True
        if term != self._term or prev < self._base or prev > self._through:
            # Not contiguous with what is remembered: start over from this message.
            self._term, self._base = term, prev
        # The follower, having this message, holds the range up to ``last`` and nothing
        # after it (it truncates after prevLogIdx), whether ``last`` extends the range or not.
        self._through = last
        return False

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
already acknowledged (and applied) until the copy's own entries put them back.

A :class:`ResendFilter` lives for exactly one stream (one :class:`raftgrpc._transport.link.Link`)
and
remembers which entries of the sender's current term that stream has carried, as the
contiguous range the follower's log will hold once it has read the stream. An
append-entries message whose entries all lie in that range is dropped; one that starts
inside it and reaches past it is trimmed to the entries past it (``prevLogIdx`` the range's
end, ``prevLogTerm`` that entry's term: what the leader would have sent had it not gone
back). Everything else passes: heartbeats (which shorten the range: the follower truncates
after their ``prevLogIdx``), snapshot chunks (which clear the memory: the follower replaces
its log), entries outside the range, and everything of another term.

Dropping is what a lossy network may do to any message, so Raft stays safe; it stays live
because every way the follower can lose or refuse what the stream carried makes it answer
with a reset (``next_node_idx`` with ``reset``) to the next message that passes, which
clears the memory (:meth:`ResendFilter.forget`); heartbeats and entries past the range
always pass. A broken stream takes its filter with it. And should a reset not reach the
filter (a transport wrapping this one that does not forward it), the memory is trusted only
while the follower acknowledges: with no success for ``stale_after_s`` the filter forgets
before it would drop or trim (a leader goes back only when acknowledged or refused, so a
healthy follower's acknowledgements always precede the repeats they cause).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ResendFilter"]


class ResendFilter:
    """Per-stream memory of the log entries sent on it (pure: no I/O, the clock passed in,
    one thread)."""

    __slots__ = ("_base", "_confirmed_at", "_stale_after", "_term", "_through", "_unit")

    def __init__(self, stale_after_s: float = 1.0) -> None:
        self._stale_after = stale_after_s
        self._term: Any = None  # the term of the messages remembered; None: nothing
        self._base = 0  # the prevLogIdx the remembered range starts after
        self._through = 0  # the last index of the remembered range
        self._confirmed_at = -math.inf  # when the follower last acknowledged something
        # The big entry whose chunks are being sent: (term, prevLogIdx, dropping it).
        self._unit: tuple[Any, Any, bool] | None = None

    def forget(self) -> None:
        """Remember nothing: the follower may lack what the stream carried."""
        self._term = None
        self._unit = None

    def confirmed(self, now: float) -> None:
        """The follower acknowledged something (``next_node_idx`` with ``success``) at
        monotonic time ``now``: it is reading the stream, and what it refused it answered
        with a reset, so what is remembered stays trusted for ``stale_after_s``."""
        self._confirmed_at = now

    def filter(self, message: dict[str, Any], now: float) -> dict[str, Any] | None:
        """What to send for ``message`` (about to be sent at monotonic time ``now``):
        ``message`` itself, a trimmed copy, or None to send nothing; notes what is sent.
        If the send then fails, call :meth:`forget`."""
        if message.get("type") != "append_entries":
            return message
        prev = message.get("prevLogIdx")
        if prev is None:
            # A snapshot chunk, or PySyncObj's entry-less message when nextIndex is past its
            # log: the follower's log will be replaced or is unknown.
            self.forget()
            return message
        term = message.get("term")
        transmission = message.get("transmission")
        if transmission is not None and transmission != "start":
            # A later chunk of a big entry shares its first chunk's fate: the follower
            # glues chunks together, a lone tail would corrupt the next entry it builds.
            unit = self._unit
            if unit is not None and unit[0] == term and unit[1] == prev:
                return None if unit[2] else message
            self.forget()  # a tail whose head this filter did not see: trust nothing
            return message
        entries: list[Any] | None = None
        if transmission == "start":
            last = prev + 1
        else:
            entries = message.get("entries")
            last = entries[-1][1] if entries else prev
        inside = term == self._term and self._base <= prev <= self._through
        if inside and prev < self._through and now - self._confirmed_at >= self._stale_after:
            # It would drop or trim, yet the follower acknowledged nothing for a while: it
            # may be refusing everything and its resets not reach this filter.
            self.forget()
            inside = False
        if inside and prev < last <= self._through:
            self._unit = (term, prev, True) if transmission == "start" else None
            return None
        self._unit = (term, prev, False) if transmission == "start" else None
        if not inside:  # not contiguous with what is remembered: start over from here
            self._term, self._base, self._through = term, prev, prev
        elif entries and prev < self._through:  # it reaches past the range: trim it
            cut = self._through - prev  # entries[:cut] are carried, the last at ``through``
            if cut <= len(entries) and entries[cut - 1][1] == self._through:  # contiguous
                message = {
                    **message,
                    "prevLogIdx": self._through,
                    "prevLogTerm": entries[cut - 1][2],
                    "entries": entries[cut:],
                }
        # The follower, having this message, holds the range up to ``last`` and nothing
        # after it (it truncates after prevLogIdx), whether ``last`` extends the range or not.
        self._through = last
        return message

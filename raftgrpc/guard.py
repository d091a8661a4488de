"""Keeps chunked transfers whole on one stream.

PySyncObj sends snapshots and big entries as a run of chunks and the receiver appends each
chunk to what came before. If a stream breaks mid-transfer and the sender's next chunk
arrives on the new stream, the receiver would glue the tail of one attempt to the head of
another and build a corrupt snapshot. A :class:`ChunkGuard` lives for exactly one stream and
drops every continuation chunk until that stream has carried the first chunk of a transfer.
PySyncObj then restarts the transfer by itself (the follower answers with a reset), as
after a TCP reset.

Once a first chunk has passed, everything on the stream passes, in order, exactly as
TCPTransport would deliver it: every later transfer on the same stream starts with its own
first chunk. (PySyncObj 0.3.17 may label more than one chunk of a big entry 'finish'; the
follower fails on the early one and completes on the next, so nothing may be dropped there.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChunkGuard"]


class ChunkGuard:
    """Per-stream filter of continuation chunks (pure, no I/O)."""

    def __init__(self) -> None:
        self._snapshot_started = False
        self._big_entry_started = False
        self.dropped = 0
        """Messages dropped so far."""

    def admit(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` may be delivered; notes the first chunks it sees."""
        if message["type"] != "append_entries":
            return True
        transmission = message.get("transmission")
        if transmission is not None:
            if transmission == "start":
                self._big_entry_started = True
            elif not self._big_entry_started:
                self.dropped += 1
                return False
            return True
        serialized = message.get("serialized")
        if isinstance(serialized, tuple):
            if serialized[1]:  # first chunk
                self._snapshot_started = True
            elif not self._snapshot_started:
                self.dropped += 1
                return False
        return True

"""Keeps chunked transfers whole on one stream.

PySyncObj sends snapshots and big entries as a run of chunks and the receiver appends each
chunk to what came before. If a stream breaks mid-transfer and the sender's next chunk
arrives on the new stream, the receiver would glue the tail of one attempt to the head of
another and build a corrupt snapshot. A :class:`ChunkGuard` lives for exactly one stream and
drops any continuation chunk whose transfer did not start on that stream. PySyncObj then
restarts the transfer by itself (the follower answers with a reset), as after a TCP reset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChunkGuard"]


class ChunkGuard:
    """Per-stream filter of continuation chunks (pure, no I/O)."""

    def __init__(self) -> None:
        self._snapshot_open = False
        self._big_entry_open = False
        self.dropped = 0
        """Messages dropped so far."""

    def admit(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` may be delivered; updates the transfer state."""
        if message["type"] != "append_entries":
            return True
        transmission = message.get("transmission")
        if transmission is not None:
            if transmission == "start":
                self._big_entry_open = True
                return True
            if not self._big_entry_open:
                self.dropped += 1
                return False
            if transmission == "finish":
                self._big_entry_open = False
            return True
        serialized = message.get("serialized")
        if isinstance(serialized, tuple):
            first, last = serialized[1], serialized[2]
            if first:
                self._snapshot_open = not last
                return True
            if not self._snapshot_open:
                self.dropped += 1
                return False
            if last:
                self._snapshot_open = False
        return True

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
first chunk.

PySyncObj 0.3.17 labels a big entry's chunk 'finish' as soon as the *command's* length is
reached, but it chunks the entry's pickle, which is longer (up to 1.5 times for binary data
pickled with protocol 2): the last few chunks of a big entry are all labelled 'finish'. The
follower unpickles on each of them; every early one raises (twice, with the pure-Python
retry of ``pysyncobj.pickle``) and leaves the data appended, and the last one succeeds. A
pickle always ends with its STOP opcode (``b"."``), and a strict prefix of a pickle never
loads, so a 'finish' chunk whose data does not end with it cannot complete the entry: the
guard relabels it 'process', which has the follower's state effect of the failing attempt
(the data is appended) without the exceptions, plus the reply PySyncObj sends for every
'process' chunk (next_node_idx, neither success nor reset: the leader only notes that the
follower answered). The early chunk is not dropped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChunkGuard"]

_PICKLE_STOP = b"."


class ChunkGuard:
    """Per-stream filter of continuation chunks (pure, no I/O)."""

    def __init__(self) -> None:
        self._snapshot_started = False
        self._big_entry_started = False
        self.dropped = 0
        """Messages dropped so far."""
        self.relabelled = 0
        """Early 'finish' chunks relabelled 'process' so far."""

    def admit(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` may be delivered; notes the first chunks it sees, and relabels
        an early 'finish' chunk of a big entry 'process' (in place)."""
        if message["type"] != "append_entries":
            return True
        transmission = message.get("transmission")
        if transmission is not None:
            if transmission == "start":
                self._big_entry_started = True
            elif not self._big_entry_started:
                self.dropped += 1
                return False
            elif transmission == "finish" and _cannot_complete(message.get("data")):
                message["transmission"] = "process"
                self.relabelled += 1
            return True
        serialized = message.get("serialized")
        if isinstance(serialized, tuple):
            if serialized[1]:  # first chunk
                self._snapshot_started = True
            elif not self._snapshot_started:
                self.dropped += 1
                return False
        return True


def _cannot_complete(data: object) -> bool:
    return isinstance(data, bytes | bytearray) and not data.endswith(_PICKLE_STOP)

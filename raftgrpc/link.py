"""One established stream between this node and a peer, and the reading of its frames."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from raftgrpc import codec
from raftgrpc.guard import ChunkGuard
from raftgrpc.outbox import Outbox
from raftgrpc.v1 import transport_pb2 as pb

__all__ = ["PROTOCOL_VERSION", "FrameError", "Link", "read_frames"]

PROTOCOL_VERSION = 1
"""Wire protocol version sent in Hello and Welcome."""

_ids = itertools.count(1)


class FrameError(Exception):
    """A peer sent something that is not a valid frame; the stream must be closed."""


class Link:
    """One stream to or from a peer.

    ``outbox`` holds what is waiting to be sent on it (None for a stream that only receives).
    A link is *broken* once its stream failed or was reset; it is never reused: the next
    stream to the same peer is a new link, so nothing queued for a broken stream can leak
    onto its successor.
    """

    def __init__(self, peer: Any, outbox: Outbox | None) -> None:
        self.id = next(_ids)
        self.peer = peer
        self.outbox = outbox
        self._broken = threading.Event()
        self._cancel: Callable[[], Any] | None = None

    @property
    def broken(self) -> bool:
        """Whether the stream failed or was reset."""
        return self._broken.is_set()

    def set_canceller(self, cancel: Callable[[], Any]) -> None:
        """Register how to tear the underlying stream down."""
        self._cancel = cancel

    def break_(self) -> None:
        """Mark broken, drop what is queued, and tear the stream down. Idempotent."""
        self._broken.set()
        if self.outbox is not None:
            self.outbox.close()
        cancel = self._cancel
        if cancel is not None:
            cancel()

    def __repr__(self) -> str:
        return f"Link(id={self.id}, peer={self.peer!r}, broken={self.broken})"


def read_frames(
    raw_messages: Iterable[bytes],
    parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse],
    deliver: Callable[[list[dict[str, Any]], int], bool],
) -> int:
    """Decode every frame of a stream and hand its messages to ``deliver``.

    ``deliver(messages, nbytes)`` returns False to stop reading. Continuation chunks whose
    transfer did not start on this stream are dropped (see :mod:`raftgrpc.guard`). Returns
    the number of messages dropped that way. Raises :class:`FrameError` for anything that is
    not a frame of well-formed messages; nothing of such a frame is delivered.
    """
    guard = ChunkGuard()
    for raw in raw_messages:
        try:
            envelope = parse(raw)
        except DecodeError as exc:
            raise FrameError(f"malformed frame ({len(raw)} bytes): {exc}") from exc
        if envelope.WhichOneof("kind") != "frame":
            raise FrameError("expected a frame, got a handshake message")
        try:
            messages = codec.decode_frame_messages(envelope.frame)
        except codec.CodecError as exc:
            raise FrameError(f"malformed message: {exc}") from exc
        admitted = [m for m in messages if guard.admit(m)]
        if admitted and not deliver(admitted, len(raw)):
            break
    return guard.dropped

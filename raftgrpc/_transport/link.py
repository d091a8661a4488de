"""One established stream between this node and a peer, and the reading of its frames."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from raftgrpc._errors import FrameError
from raftgrpc._protocol import codec
from raftgrpc._protocol.chunks import ChunkGuard
from raftgrpc._protocol.handshake import PROTOCOL_VERSION
from raftgrpc._protocol.resend import ResendFilter
from raftgrpc._transport.outbox import Outbox
from raftgrpc.v1 import transport_pb2 as pb

__all__ = [
    "PROTOCOL_VERSION",
    "PULSE_REQUEST",
    "PULSE_RESPONSE",
    "FrameError",
    "FrameReader",
    "Link",
    "decoded_size",
    "read_frames",
]


PULSE_REQUEST = pb.StreamRequest(pulse=pb.Pulse()).SerializeToString()
PULSE_RESPONSE = pb.StreamResponse(pulse=pb.Pulse()).SerializeToString()

_ids = itertools.count(1)

# Python objects cost far more than their wire bytes: a decoded 10-byte entry is a tuple, a
# bytes object and two ints. Inbound memory is accounted with these estimates.
_MESSAGE_OVERHEAD = 400
_ENTRY_OVERHEAD = 160


def _footprint(raw_bytes: int, messages: int, entries: int) -> int:
    return raw_bytes + _MESSAGE_OVERHEAD * messages + _ENTRY_OVERHEAD * entries


def decoded_size(raw_bytes: int, messages: list[dict[str, Any]]) -> int:
    """Estimated memory of ``messages`` decoded from a frame of ``raw_bytes``."""
    entries = sum(len(m.get("entries") or ()) for m in messages)
    return _footprint(raw_bytes, len(messages), entries)


class Link:
    """One stream to or from a peer.

    ``outbox`` holds what is waiting to be sent on it. A link is *broken* once its stream
    failed or was reset; it is never reused: the next stream to the same peer is a new link,
    so nothing queued for a broken stream can leak onto its successor. ``last_seen`` is the
    monotonic time anything last arrived on it (see :mod:`raftgrpc._transport.liveness`);
    ``resends``
    what entries it carries (:mod:`raftgrpc._protocol.resend`).

    The stream's writer (a coroutine on the transport's event loop) waits in
    :meth:`wait_for_work` when there is nothing to send; :meth:`kick` (anything queued,
    the stream broken, a pulse due) wakes it. Both run on the event loop's thread.
    """

    __slots__ = (
        "_broken",
        "_cancel",
        "_waiter",
        "id",
        "last_seen",
        "outbox",
        "peer",
        "pulse_due",
        "resends",
    )

    def __init__(self, peer: Any, outbox: Outbox) -> None:
        self.id = next(_ids)
        self.peer = peer
        self.outbox = outbox
        self.last_seen = time.monotonic()
        self.pulse_due = False
        self.resends = ResendFilter()
        self._broken = False
        self._cancel: Callable[[], Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def touch(self) -> None:
        """Record that something arrived on this stream."""
        self.last_seen = time.monotonic()

    @property
    def broken(self) -> bool:
        """Whether the stream failed or was reset."""
        return self._broken

    def set_canceller(self, cancel: Callable[[], Any]) -> None:
        """Register how to tear the underlying stream down."""
        self._cancel = cancel

    def break_(self) -> None:
        """Mark broken and drop what is queued; the sending side then ends. Idempotent."""
        self._broken = True
        self.outbox.close()
        self.kick()

    def cancel(self) -> None:
        """Cancel the RPC under the link and break it. Idempotent.

        An outbound stream's call is cancelled at once (``call.cancel()``). An inbound one
        is ended by its handler, with CANCELLED, as soon as the handler runs again (at once
        when it waits for something to send; grpc.aio has no server-side cancel, so a
        handler held by HTTP/2 flow control, a read-only follower that stopped reading,
        ends when keepalive closes the connection)."""
        # The RPC first: a server handler whose queue closes first may end the call with OK
        # before the cancel lands, and the peer would not learn that it was refused.
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
        self.break_()

    def kick(self) -> None:
        """Wake the stream's writer if it waits (event loop thread)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_work(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until :meth:`kick` (the writer found nothing to send)."""
        waiter = self._waiter = loop.create_future()
        await waiter

    def __repr__(self) -> str:
        return f"Link(id={self.id}, peer={self.peer!r}, broken={self.broken})"


def frame_budget(raw_bytes: int, inbound_budget: int) -> int:
    """The most a frame of ``raw_bytes`` may decode to: the inbound buffer, or 32 times its
    wire size if that is more (a frame of real PySyncObj entries decodes to at most ~15x)."""
    return max(inbound_budget, 32 * raw_bytes)


def _estimated_size(raw_bytes: int, frame: pb.Frame) -> int:
    """:func:`decoded_size` from the parsed frame, before anything is decoded."""
    entries = 0
    for message in frame.messages:
        if message.HasField("append_entries"):
            entries += len(message.append_entries.entries.lengths)
    return _footprint(raw_bytes, len(frame.messages), entries)


class FrameReader:
    """Decodes the frames of one stream (pure: no I/O, no threads).

    :meth:`feed` takes each raw message the stream carries, in order. Pulses carry nothing.
    Continuation chunks whose transfer did not start on this stream are dropped (see
    :mod:`raftgrpc._protocol.chunks`; ``dropped`` counts them). :class:`FrameError` is raised for
    anything that is not a frame of well-formed messages, and for a frame that would decode
    to more than :func:`frame_budget` (a small frame of many empty entries would otherwise
    cost ~150 times its size before anything accounts for it); nothing of such a frame is
    returned, and the stream must be closed.
    """

    def __init__(
        self,
        parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse],
        traced: bool = False,
        inbound_budget: int = 32 * 1024 * 1024,
    ) -> None:
        self._parse = parse
        self._traced = traced
        self._inbound_budget = inbound_budget
        self._guard = ChunkGuard()

    @property
    def dropped(self) -> int:
        """Orphaned continuation chunks dropped so far."""
        return self._guard.dropped

    def feed(
        self, raw: bytes
    ) -> tuple[list[dict[str, Any]], int, list[dict[str, str] | None] | None] | None:
        """The messages of one raw stream message to deliver, their estimated decoded size
        (:func:`decoded_size`) and, when traced and some message carries one, each message's
        W3C trace context; None when there is nothing to deliver (a pulse, or only dropped
        chunks)."""
        try:
            envelope = self._parse(raw)
        except DecodeError as exc:
            raise FrameError(f"malformed frame ({len(raw)} bytes): {exc}") from exc
        kind = envelope.WhichOneof("kind")
        if kind == "pulse":
            return None
        if kind is None:
            # Empty, or only fields this version does not know (a newer peer's kind).
            raise FrameError("expected a frame, got a message of no known kind")
        if kind != "frame":
            raise FrameError(f"expected a frame, got a handshake message ({kind})")
        estimate = _estimated_size(len(raw), envelope.frame)
        if estimate > frame_budget(len(raw), self._inbound_budget):
            raise FrameError(
                f"a frame of {len(raw)} bytes would decode to about {estimate} bytes, above "
                f"the inbound budget"
            )
        try:
            messages = codec.decode_frame_messages(envelope.frame)
        except codec.CodecError as exc:
            raise FrameError(f"malformed message: {exc}") from exc
        carriers = codec.trace_carriers(envelope.frame) if self._traced else None
        admit = self._guard.admit
        keep = [admit(m) for m in messages]
        if not all(keep):
            messages = [m for m, k in zip(messages, keep, strict=True) if k]
            if carriers is not None:
                carriers = [c for c, k in zip(carriers, keep, strict=True) if k]
        # After the guard: the only traced messages may have been dropped.
        if carriers is not None and not any(carriers):
            carriers = None
        if not messages:
            return None
        return messages, decoded_size(len(raw), messages), carriers


def read_frames(
    link: Link,
    raw_messages: Iterable[bytes],
    parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse],
    deliver: Callable[[list[dict[str, Any]], int, list[dict[str, str] | None] | None], bool],
    traced: bool = False,
    inbound_budget: int = 32 * 1024 * 1024,
) -> int:
    """Decode every frame of ``raw_messages`` with a :class:`FrameReader` and hand each
    batch to ``deliver(messages, nbytes, carriers)``, which returns False to stop reading;
    every message refreshes ``link.last_seen``. Returns how many orphaned chunks were
    dropped; raises :class:`FrameError` as :meth:`FrameReader.feed` does."""
    reader = FrameReader(parse, traced, inbound_budget)
    for raw in raw_messages:
        link.last_seen = time.monotonic()
        batch = reader.feed(raw)
        if batch is not None and not deliver(*batch):
            break
    return reader.dropped

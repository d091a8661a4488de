"""Reading a stream's frames (pure code): what arrives is checked, sized and decoded here.

Each direction of a Raft stream carries, after its handshake, raw messages that are either a
``Frame`` of coalesced Raft messages or a ``Pulse`` (a keep-alive that carries nothing). A
:class:`FrameReader` takes them one by one, in order, and says what to deliver; it does no
I/O and keeps no time, so the gRPC shell (:mod:`raftgrpc._transport.stream_io`) only moves
the bytes, and the fuzz oracles (``fuzz/oracles.py``) feed it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from raftgrpc._errors import FrameError
from raftgrpc._protocol import codec
from raftgrpc._protocol.chunks import ChunkGuard
from raftgrpc.v1 import transport_pb2 as pb

__all__ = [
    "DEFAULT_INBOUND_BUDGET",
    "PULSE_REQUEST",
    "PULSE_RESPONSE",
    "Batch",
    "FrameError",
    "FrameReader",
    "decoded_size",
    "frame_budget",
    "read_frames",
]

PULSE_REQUEST = pb.StreamRequest(pulse=pb.Pulse()).SerializeToString()
"""A Pulse as the dialling side sends it."""
PULSE_RESPONSE = pb.StreamResponse(pulse=pb.Pulse()).SerializeToString()
"""A Pulse as the accepting side sends it."""

DEFAULT_INBOUND_BUDGET = 32 * 1024 * 1024
"""TransportConfig.inbound_buffer_bytes' default, for readers made without a config."""

Batch = tuple[list[dict[str, Any]], int, list[dict[str, str] | None] | None]
"""What one frame delivers: its messages, their estimated decoded size, and each message's
W3C trace context (None when no message of the frame carries one, or untraced)."""

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
    """Decodes the frames of one stream (pure: no I/O, no threads, no clock).

    :meth:`feed` takes each raw message the stream carries, in order. Pulses carry nothing.
    Continuation chunks whose transfer did not start on this stream are dropped (see
    :mod:`raftgrpc._protocol.chunks`; ``dropped`` counts them). :class:`FrameError` is raised
    for anything that is not a frame of well-formed messages, and for a frame that would
    decode to more than :func:`frame_budget` (a small frame of many empty entries would
    otherwise cost ~150 times its size before anything accounts for it); nothing of such a
    frame is returned, and the stream must be closed.
    """

    def __init__(
        self,
        parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse],
        traced: bool = False,
        inbound_budget: int = DEFAULT_INBOUND_BUDGET,
    ) -> None:
        self._parse = parse
        self._traced = traced
        self._inbound_budget = inbound_budget
        self._guard = ChunkGuard()

    @property
    def dropped(self) -> int:
        """Orphaned continuation chunks dropped so far."""
        return self._guard.dropped

    def feed(self, raw: bytes) -> Batch | None:
        """The :data:`Batch` one raw stream message delivers; None when there is nothing to
        deliver (a pulse, or only dropped chunks)."""
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
    raw_messages: Iterable[bytes],
    parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse],
    deliver: Callable[[list[dict[str, Any]], int, list[dict[str, str] | None] | None], bool],
    traced: bool = False,
    inbound_budget: int = DEFAULT_INBOUND_BUDGET,
) -> int:
    """Decode every frame of ``raw_messages`` with a :class:`FrameReader` and hand each
    batch to ``deliver(messages, nbytes, carriers)``, which returns False to stop reading.
    Returns how many orphaned chunks were dropped; raises :class:`FrameError` as
    :meth:`FrameReader.feed` does. (A whole stream at once: what the fuzz oracles check.)"""
    reader = FrameReader(parse, traced, inbound_budget)
    for raw in raw_messages:
        batch = reader.feed(raw)
        if batch is not None and not deliver(*batch):
            break
    return reader.dropped

"""The two loops every Raft stream runs once its handshake is done, whichever side dialled.

A stream sends what is queued on its :class:`~raftgrpc._transport.link.Link` (coalesced into
frames, a Pulse when it has been quiet) and reads frames, which a pure
:class:`~raftgrpc._protocol.frames.FrameReader` decodes, into its transport. Only how bytes
get in and out differs between the dialling side (:mod:`raftgrpc._transport.outbound`:
``call.write`` / ``call.read``) and the accepting side (:mod:`raftgrpc._transport.inbound`:
an async generator's ``yield`` / the request iterator), so both take the loops from here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from raftgrpc._protocol.frames import DEFAULT_INBOUND_BUDGET, FrameReader
from raftgrpc._transport.link import Link
from raftgrpc._transport.liveness import LivenessMonitor
from raftgrpc._transport.outbox import Outbox
from raftgrpc.v1 import transport_pb2 as pb

__all__ = ["Carriers", "Deliver", "Messages", "StreamSetup", "outgoing", "read_into"]

Messages = list[dict[str, Any]]
Carriers = list[dict[str, str] | None] | None
Deliver = Callable[[Link, Messages, int, Carriers], bool]
"""``deliver(link, messages, nbytes, carriers)``: hand a frame's messages to the transport;
False once the link is no longer wanted (the stream then stops reading)."""

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what call.read() returns at the end


@dataclass(frozen=True)
class StreamSetup:
    """What every stream of one transport shares, outbound and inbound alike."""

    monitor: LivenessMonitor
    """Judges every stream's silence; its clock is every link's clock."""
    frame_bytes: int
    """About how many bytes of queued messages one frame carries (TransportConfig)."""
    handshake_timeout_s: float
    """How long the other side has for its Hello or Welcome (TransportConfig)."""
    traced: bool = False
    """Whether frames are read with their trace contexts (a frame observer is set)."""
    inbound_budget: int = DEFAULT_INBOUND_BUDGET
    """The most one received frame may decode to (TransportConfig.inbound_buffer_bytes)."""

    def new_link(self, peer: Any, outbox: Outbox) -> Link:
        """A link to or from ``peer`` on the monitor's clock."""
        return Link(peer, outbox, self.monitor.clock)

    def frame_reader(
        self, parse: Callable[[bytes], pb.StreamRequest | pb.StreamResponse]
    ) -> FrameReader:
        """A reader of one stream's frames (``parse``: the envelope of that direction)."""
        return FrameReader(parse, self.traced, self.inbound_budget)


async def outgoing(
    link: Link, setup: StreamSetup, frame_of: Callable[[list[bytes]], bytes], pulse: bytes
) -> AsyncGenerator[bytes, None]:
    """What a stream sends after its handshake: ``frame_of`` what is queued on ``link``, up
    to ``setup.frame_bytes`` at a time, and ``pulse`` when the monitor asks for one; ends
    when the link breaks. A message counts as sent (:meth:`LivenessMonitor.sent`) when the
    consumer asks for the next one, that is once it has written it."""
    outbox, frame_bytes, monitor = link.outbox, setup.frame_bytes, setup.monitor
    loop = asyncio.get_running_loop()
    while True:
        items = outbox.take(frame_bytes, 0)
        if items:
            yield frame_of(items)
            monitor.sent(link)
        elif link.broken:
            return
        elif link.pulse_due:
            link.pulse_due = False
            yield pulse
            monitor.sent(link)
        else:
            await link.wait_for_work(loop)


async def read_into(
    link: Link, receive: Callable[[], Awaitable[Any]], reader: FrameReader, deliver: Deliver
) -> bool:
    """Feed what ``receive()`` returns to ``reader`` and hand each batch to ``deliver``;
    every message received refreshes the link's ``last_seen``.

    True once the stream ended (``receive`` returned gRPC's EOF or raised
    StopAsyncIteration), False once ``deliver`` refused a batch. Raises
    :class:`~raftgrpc._protocol.frames.FrameError` for a bad frame, and whatever
    ``receive`` raises.
    """
    touch, feed = link.touch, reader.feed
    try:
        while True:
            raw = await receive()
            if raw is _EOF:
                return True
            touch()
            batch = feed(raw)
            if batch is not None and not deliver(link, *batch):
                return False
    except StopAsyncIteration:
        return True

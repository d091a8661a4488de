"""One established stream between this node and a peer: its queue, its state, its clock.

How its frames are read is :mod:`raftgrpc._protocol.frames`' (pure); the loops that move them
are :mod:`raftgrpc._transport.stream_io`'s.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from raftgrpc._protocol.resend import ResendFilter
from raftgrpc._transport.outbox import Outbox

__all__ = ["Link"]

_ids = itertools.count(1)


class Link:
    """One stream to or from a peer.

    ``outbox`` holds what is waiting to be sent on it. A link is *broken* once its stream
    failed or was reset; it is never reused: the next stream to the same peer is a new link,
    so nothing queued for a broken stream can leak onto its successor. ``last_seen`` is the
    time (on ``clock``) anything last arrived on it (see :mod:`raftgrpc._transport.liveness`);
    ``resends`` what entries it carries (:mod:`raftgrpc._protocol.resend`).

    ``clock`` must be the one its transport's liveness monitor judges ``last_seen`` by: a
    link that read another clock would look silent, or forever fresh, to the monitor.

    The stream's writer (a coroutine on the transport's event loop) waits in
    :meth:`wait_for_work` when there is nothing to send; :meth:`kick` (anything queued,
    the stream broken, a pulse due) wakes it. Both run on the event loop's thread.
    """

    __slots__ = (
        "_broken",
        "_cancel",
        "_clock",
        "_waiter",
        "id",
        "last_seen",
        "outbox",
        "peer",
        "pulse_due",
        "resends",
    )

    def __init__(self, peer: Any, outbox: Outbox, clock: Callable[[], float]) -> None:
        self.id = next(_ids)
        self.peer = peer
        self.outbox = outbox
        self._clock = clock
        self.last_seen = clock()
        self.pulse_due = False
        self.resends = ResendFilter()
        self._broken = False
        self._cancel: Callable[[], Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def touch(self) -> None:
        """Record that something arrived on this stream (now, on the link's clock)."""
        self.last_seen = self._clock()

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

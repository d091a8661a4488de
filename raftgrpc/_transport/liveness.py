"""Closes streams on which nothing has arrived for too long, and keeps quiet streams talking.

HTTP/2 keepalive cannot see a peer that is hung but whose kernel still acknowledges TCP (a
stopped or deadlocked process): while this side keeps writing, gRPC skips its pings. So each
side of a stream sends a Pulse after a short silence of its own (``pulse_interval`` without
sending anything), every received message refreshes the stream's ``last_seen``, and this
monitor cancels a stream silent for ``timeout`` seconds; the transport then reports the peer
disconnected and redials.

Silence is judged only while this process runs: when the monitor itself runs far later than
it asked to (the process was stopped, swapped out or starved, or its tick thread was busy),
every stream would look silent although its peer kept sending into the socket, so the time
it did not run is not counted as anyone's silence, instead of closing healthy streams (and
making the resumed node start over with all its peers at once).

:meth:`LivenessMonitor.check` is the whole policy, given the time; a task on the transport's
event loop calls it every :attr:`LivenessMonitor.interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from raftgrpc._transport.link import Link

__all__ = ["LivenessMonitor"]

logger = logging.getLogger("raftgrpc.liveness")


class LivenessMonitor:
    """Watches the ``last_seen`` and ``last_sent`` of every established link of a transport."""

    def __init__(
        self,
        timeout: float,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        pulse_interval: float | None = None,
    ) -> None:
        self._timeout = timeout
        self._name = name
        self.clock = clock
        """The clock silence is measured by: every link watched must read it too
        (:class:`~raftgrpc._transport.link.Link` takes it)."""
        self.pulse_interval = timeout / 3 if pulse_interval is None else pulse_interval
        """A link that sent nothing for this long is made to send a Pulse."""
        self.interval = min(0.25, timeout / 8)
        """How often :meth:`check` runs."""
        self._links: dict[Link, float] = {}  # link -> last time something was sent on it
        self._last_check: float | None = None
        self._task: asyncio.Task[None] | None = None

    def watch(self, link: Link) -> None:
        """Watch ``link`` from now on (it counts as just heard from and just written to)."""
        now = self.clock()
        link.last_seen = now
        self._links[link] = now

    def unwatch(self, link: Link) -> None:
        """Stop watching ``link``."""
        self._links.pop(link, None)

    def sent(self, link: Link) -> None:
        """Record that something was written on ``link`` (no Pulse is due for a while)."""
        if link in self._links:
            self._links[link] = self.clock()

    def check(self, now: float | None = None) -> list[Link]:
        """One round: cancel the links silent for longer than the timeout and ask the quiet
        ones for a Pulse; returns the links it cancelled."""
        now = self.clock() if now is None else now
        last, self._last_check = self._last_check, now
        if last is not None:
            gap = now - last
            if gap > self.interval + self._timeout / 2:
                self._forgive(now, gap - self.interval)
        stale = {
            link: now - link.last_seen
            for link in self._links
            if now - link.last_seen > self._timeout
        }
        for link, silent in stale.items():
            del self._links[link]
            logger.warning(
                "raftgrpc: nothing from %s for %.1f s; closing its stream", link.peer, silent
            )
            link.cancel()
        for link, sent_at in self._links.items():
            if now - sent_at >= self.pulse_interval and not link.pulse_due:
                link.pulse_due = True
                link.kick()
        return list(stale)

    def _forgive(self, now: float, lost: float) -> None:
        """Take the ``lost`` seconds this process did not run off every stream's silence."""
        for link in self._links:
            link.last_seen = min(link.last_seen + lost, now)
        logger.info("raftgrpc: this process did not run for %.1f s; not counted as silence", lost)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check every :attr:`interval` seconds on ``loop``."""
        self._task = loop.create_task(self._run(), name=f"raftgrpc-liveness-{self._name}")

    def stop(self) -> None:
        """Stop checking (event loop thread)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._links.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:
                logger.exception("raftgrpc: the liveness check failed")

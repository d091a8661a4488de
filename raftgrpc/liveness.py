"""Closes streams on which nothing has arrived for too long.

HTTP/2 keepalive cannot see a peer that is hung but whose kernel still acknowledges TCP (a
stopped or deadlocked process): while this side keeps writing, gRPC skips its pings. So each
side of a stream sends a Pulse after a short silence, every received message refreshes the
stream's ``last_seen``, and this monitor cancels a stream silent for ``timeout`` seconds; the
transport then reports the peer disconnected and redials.

Silence is judged only while this process runs: when the monitor itself wakes up far later
than it asked to (the process was stopped, swapped out or starved), every stream would look
silent although its peer kept sending into the socket, so the time it did not run is not
counted as anyone's silence, instead of closing healthy streams (and making the resumed node
start over with all its peers at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from raftgrpc.link import Link

__all__ = ["LivenessMonitor"]

logger = logging.getLogger("raftgrpc.liveness")


class LivenessMonitor:
    """One thread per transport that watches the ``last_seen`` of every established link."""

    def __init__(
        self, timeout: float, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = timeout
        self._clock = clock
        self._links: set[Link] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"raftgrpc-liveness-{name}", daemon=True
        )

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def watch(self, link: Link) -> None:
        """Watch ``link`` from now on."""
        link.touch()
        with self._lock:
            self._links.add(link)

    def unwatch(self, link: Link) -> None:
        """Stop watching ``link``."""
        with self._lock:
            self._links.discard(link)

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        interval = min(0.25, self._timeout / 8)
        last = self._clock()
        while not self._stop.wait(interval):
            now = self._clock()
            gap, last = now - last, now
            if gap > interval + self._timeout / 2:
                self._forgive(now, gap - interval)
            else:
                self._close_silent(now)

    def _forgive(self, now: float, lost: float) -> None:
        """Take the ``lost`` seconds this process did not run off every stream's silence."""
        with self._lock:
            for link in self._links:
                link.last_seen = min(link.last_seen + lost, now)
        logger.info("raftgrpc: this process did not run for %.1f s; not counted as silence", lost)

    def _close_silent(self, now: float) -> None:
        with self._lock:
            stale = {link: now - link.last_seen for link in self._links}
            stale = {link: silent for link, silent in stale.items() if silent > self._timeout}
            self._links.difference_update(stale)
        for link, silent in stale.items():
            logger.warning(
                "raftgrpc: nothing from %s for %.1f s; closing its stream", link.peer, silent
            )
            link.cancel()

"""Closes streams on which nothing has arrived for too long.

HTTP/2 keepalive cannot see a peer that is hung but whose kernel still acknowledges TCP (a
stopped or deadlocked process): while this side keeps writing, gRPC skips its pings. So each
side of a stream sends a Pulse after a short silence, every received message refreshes the
stream's ``last_seen``, and this monitor cancels a stream silent for ``timeout`` seconds; the
transport then reports the peer disconnected and redials.
"""

from __future__ import annotations

import logging
import threading
import time

from raftgrpc.link import Link

__all__ = ["LivenessMonitor"]

logger = logging.getLogger("raftgrpc.liveness")


class LivenessMonitor:
    """One thread per transport that watches the ``last_seen`` of every established link."""

    def __init__(self, timeout: float, name: str) -> None:
        self._timeout = timeout
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
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                stale = [link for link in self._links if now - link.last_seen > self._timeout]
                self._links.difference_update(stale)
            for link in stale:
                logger.warning(
                    "raftgrpc: nothing from %s for %.1f s; closing its stream",
                    link.peer,
                    now - link.last_seen,
                )
                link.cancel()

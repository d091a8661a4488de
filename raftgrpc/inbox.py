"""Hands work from gRPC threads to PySyncObj's tick thread.

SyncObj's state has no locks: every callback into it must run on the thread that ticks it.
gRPC threads ``post`` callables here; a byte written to a socket pair wakes SyncObj's poller,
whose callback (and a tick callback, as a backstop) runs them in order on the tick thread.
Without the wake-up each hop would wait up to ``autoTickPeriod``.

Posted work may carry a byte size. While more than ``capacity`` bytes wait, posting threads
block (never the tick thread, which only drains), so a slow tick thread slows the senders
through HTTP/2 flow control instead of filling memory.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from raftgrpc.meter import ByteMeter

__all__ = ["Inbox"]

logger = logging.getLogger("raftgrpc.inbox")

_POLL_READ = 1  # pysyncobj.poller.POLL_EVENT_TYPE.READ


class Inbox:
    """An ordered queue of callables that run on PySyncObj's tick thread."""

    def __init__(self, capacity: int, meter: ByteMeter | None = None) -> None:
        self._capacity = capacity
        self.meter = meter if meter is not None else ByteMeter()
        self._queue: collections.deque[tuple[Callable[[], None], int]] = collections.deque()
        self._space = threading.Condition(threading.Lock())
        self._signalled = False
        self._closed = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._poller: Any = None

    def attach(self, poller: Any) -> None:
        """Subscribe the wake-up socket to SyncObj's poller (call on the constructing thread)."""
        self._poller = poller
        poller.subscribe(self._reader.fileno(), self._on_readable, _POLL_READ)

    def post(
        self,
        work: Callable[[], None],
        nbytes: int = 0,
        abandon: Callable[[], bool] | None = None,
    ) -> bool:
        """Queue ``work`` for the tick thread; False if the inbox is closed.

        Blocks while the inbox holds more than its capacity in bytes and ``nbytes`` > 0,
        until there is room, the inbox closes, or ``abandon()`` (polled) turns true.
        """
        if nbytes:
            with self._space:
                while self.meter.current > 0 and self.meter.current + nbytes > self._capacity:
                    if self._closed or (abandon is not None and abandon()):
                        return False
                    self._space.wait(0.05)
                self.meter.add(nbytes)
        if self._closed:
            if nbytes:
                self.meter.sub(nbytes)
            return False
        self._queue.append((work, nbytes))
        if not self._signalled:
            self._signalled = True
            try:
                self._writer.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # a wake-up is already pending, or the inbox is closing
        return True

    def drain(self) -> None:
        """Run every queued callable, in order. Call only on the tick thread."""
        # Reset the flag before popping, so that a post racing with this drain either is
        # popped below or writes a fresh wake-up byte.
        self._signalled = False
        released = 0
        queue = self._queue
        while queue:
            work, nbytes = queue.popleft()
            try:
                work()
            except Exception:
                # Never raise into PySyncObj's tick thread; the rest must still run.
                logger.exception("raftgrpc: error while delivering to SyncObj")
            if nbytes:
                released += nbytes
        if released:
            with self._space:
                self.meter.sub(released)
                self._space.notify_all()

    def close(self) -> None:
        """Drop queued work, release blocked posters and the sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.unsubscribe(self._reader.fileno())
            self._poller = None
        with self._space:
            for _work, nbytes in self._queue:
                self.meter.sub(nbytes)
            self._queue.clear()
            self._space.notify_all()
        self._reader.close()
        self._writer.close()

    def _on_readable(self, _fd: int, _events: int) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self.drain()

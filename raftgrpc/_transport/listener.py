"""A node's server: bound when PySyncObj asks its transport to get ready, retried as
TCPTransport retries, stopped at destroy.

PySyncObj polls ``tryGetReady()`` on every tick until the transport is ready (and neither
polls nor ticks its callbacks before); TCPTransport tries to bind every ``bindRetryTime``
seconds and gives up after ``maxBindRetries`` attempts (0: never) with
``TransportNotReadyError``, which ``waitReady()`` raises too. A read-only node listens
nowhere and is ready at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from collections.abc import Callable

import grpc
from pysyncobj.transport import TransportNotReadyError

from raftgrpc._transport.aio_server import Serving

__all__ = ["Listener"]

logger = logging.getLogger("raftgrpc.transport")


class Listener:
    """Binds ``target`` with ``start(executor)`` on :meth:`try_bind`, at most every
    ``retry_s`` seconds on ``clock`` and ``max_attempts`` times (0: without end)."""

    def __init__(
        self,
        node_id: str,
        target: str | None,
        start: Callable[[concurrent.futures.ThreadPoolExecutor], Serving],
        retry_s: float,
        max_attempts: int,
        clock: Callable[[], float],
    ) -> None:
        self._node_id = node_id
        self.target = target
        """The ``host:port`` listened on (None on a read-only node)."""
        self._start = start
        self._retry_s = retry_s
        self._max_attempts = max_attempts
        self._clock = clock
        self.ready = target is None
        """Whether the server is bound (always True on a read-only node)."""
        self._over = threading.Event()  # bound, given up, or closed
        if self.ready:
            self._over.set()
        self._attempts = 0
        self._last_attempt = -math.inf
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        """The port the server listens on, once bound."""

    def try_bind(self) -> None:
        """Bind unless bound or too soon after the last attempt; raises
        TransportNotReadyError once ``max_attempts`` attempts failed."""
        if self.ready:
            return
        now = self._clock()
        if now < self._last_attempt + self._retry_s:
            return
        self._last_attempt = now
        try:
            self._bind()
        except Exception as exc:
            self._attempts += 1
            logger.warning(
                "raftgrpc: cannot listen (attempt %d): %s",
                self._attempts,
                exc,
                extra={"event": "server.bind_failed", "attempt": self._attempts},
            )
            if self._max_attempts and self._attempts >= self._max_attempts:
                self._over.set()
                raise TransportNotReadyError from exc
        else:
            self.ready = True
            self._over.set()

    def wait(self) -> None:
        """Block until bound; TransportNotReadyError if binding gave up (or was closed)."""
        self._over.wait()
        if not self.ready:
            raise TransportNotReadyError

    def _bind(self) -> None:
        assert self.target is not None  # read-only nodes never bind
        if self._executor is None:
            # Runs the handlers of user services written for grpcio's synchronous API; no
            # thread starts unless one is called (raftgrpc's own handlers are coroutines).
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="raftgrpc-sync-handler"
            )
        serving = self._start(self._executor)
        self._server = serving.server
        self.port = serving.port
        logger.info(
            "raftgrpc: node %s listening on %s",
            self._node_id,
            self.target,
            extra={"event": "server.listening", "node": self._node_id, "address": self.target},
        )

    async def stop(self, grace_s: float) -> None:
        """Stop the server, giving in-flight RPCs ``grace_s`` (on the transport's loop)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace_s)

    def close(self) -> None:
        """Release the handler threads and wake whoever waits (after :meth:`stop`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._over.set()

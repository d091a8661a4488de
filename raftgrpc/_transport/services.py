"""Extra gRPC services a node serves next to the Raft stream (health, admin).

A :data:`ServiceFactory` is called once per transport, when the transport is created, with
a :class:`NodeContext`; the :class:`NodeService` it returns contributes handlers to the
node's server, is ticked on PySyncObj's tick thread, and is closed when the transport is
destroyed. The transport never raises into the tick thread because of a service: errors in
``on_tick`` are logged.

The node's server is a ``grpc.aio`` server on the transport's event loop (:attr:`NodeContext.loop`),
which the tick thread runs: a coroutine handler runs on the tick thread and may call SyncObj
directly; a handler of grpcio's synchronous API runs in a small thread pool and must hand
work to the tick thread with :meth:`NodeContext.run_on_tick`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc

__all__ = ["NodeContext", "NodeService", "ServiceFactory"]


class NodeContext(Protocol):
    """What a service may use of its node. Attributes are read-only."""

    node_id: str
    """The node's Raft id ("" on a read-only node)."""

    syncobj: Any
    """The SyncObj; call its methods only on the tick thread (see :meth:`run_on_tick`)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The transport's event loop (run by the tick thread); create tasks on it only from
        the tick thread or the loop itself."""

    @property
    def ready(self) -> bool:
        """Whether the node's server is bound (always True on a read-only node)."""

    def run_on_tick(self, work: Callable[[], None]) -> bool:
        """Run ``work`` on the tick thread soon; False if the transport is closing."""

    def utility_callbacks(self) -> Mapping[str, Callable[[list[Any], Any], None]]:
        """PySyncObj's utility message callbacks (status, add, remove, set_version, transfer),
        as registered with ``setOnUtilityMessageCallback``; call them on the tick thread."""

    def stats(self) -> dict[str, int]:
        """The transport's counters (``GrpcTransport.stats()``)."""


class NodeService(Protocol):
    """One service of a node."""

    def handlers(self) -> Sequence[grpc.GenericRpcHandler[Any, Any]]:
        """The handlers to add to the node's server."""

    def on_tick(self) -> None:
        """Called on every tick of PySyncObj (on the tick thread); must be cheap.

        A service may also have ``async def start(self)``: the transport awaits it on its
        event loop when it is made, before SyncObj ticks (e.g. to bind a port)."""

    def on_closing(self) -> None:
        """Called first thing in ``destroy()``: e.g. report NOT_SERVING."""

    def close(self) -> Awaitable[None] | None:
        """Called once the server has stopped; release threads and ports. May return an
        awaitable, which the transport awaits on its event loop (e.g. to stop a server)."""


ServiceFactory = Callable[[NodeContext], NodeService]
"""Makes a node's service from its context."""

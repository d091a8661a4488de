"""The services a node hosts next to the Raft stream: made once, ticked, told, closed.

Health (unless the middleware brings its own), admin and users' services
(:mod:`raftgrpc._transport.services`) share the node's server. A service's failure never
reaches PySyncObj's tick thread: what a service raises while ticking or closing is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raftgrpc._ops import health
from raftgrpc._pysyncobj import guarded
from raftgrpc._transport.config import TransportConfig
from raftgrpc._transport.services import NodeContext, NodeService, ServiceFactory

__all__ = ["HostedServices", "ServiceContext"]

logger = logging.getLogger("raftgrpc.transport")


@dataclass
class ServiceContext:
    """The :class:`~raftgrpc._transport.services.NodeContext` a transport gives its services:
    each ability handed over as a callable, so that services see nothing else of it."""

    node_id: str
    syncobj: Any
    loop: asyncio.AbstractEventLoop
    run_on_tick: Callable[[Callable[[], None]], bool]
    is_ready: Callable[[], bool]
    utility_callbacks: Callable[[], Mapping[str, Callable[[list[Any], Any], None]]]
    stats: Callable[[], dict[str, int]]

    @property
    def ready(self) -> bool:
        return bool(self.is_ready())


class HostedServices:
    """A node's services, in the order they were made (the default health service first)."""

    def __init__(self, config: TransportConfig, factories: Sequence[ServiceFactory]) -> None:
        factories = list(factories)
        if config.health and not any(isinstance(f, health.HealthServiceFactory) for f in factories):
            factories.insert(
                0,
                health.service(
                    max_commit_lag=config.raft_health_max_commit_lag,
                    listen_address=config.health_listen_address,
                    reflection=config.reflection,
                ),
            )
        self._factories = factories
        self._services: list[NodeService] = []
        self._closing = False

    def make(self, context: NodeContext) -> None:
        """Make every service (once); those made before a factory raised are kept, so that
        :meth:`close` releases them."""
        for make in self._factories:
            self._services.append(make(context))

    def __iter__(self) -> Iterator[NodeService]:
        return iter(self._services)

    def handlers(self) -> list[Any]:
        """Every service's handlers, for the node's server."""
        return [h for service in self._services for h in service.handlers()]

    async def start(self) -> None:
        """What services start on the event loop before the node ticks (their ``start()``,
        if they have one: the health service binds its separate port)."""
        for service in self._services:
            start = getattr(service, "start", None)
            if start is not None:
                await start()

    def tick(self) -> None:
        """Tick every service (tick thread)."""
        for service in self._services:
            guarded(logger, service.on_tick, "ticking a service")

    def begin_closing(self) -> None:
        """Tell every service, once, that the node is shutting down."""
        if self._closing:
            return
        self._closing = True
        for service in self._services:
            guarded(logger, service.on_closing, "closing a service")

    async def close(self) -> None:
        """Close every service, awaiting those whose ``close()`` returns an awaitable."""
        for service in self._services:
            closing = guarded(logger, service.close, "closing a service")
            if asyncio.iscoroutine(closing) or isinstance(closing, asyncio.Future):
                try:
                    await asyncio.wait_for(closing, 5.0)
                except Exception:
                    logger.exception("raftgrpc: error while closing a service")

"""The standard gRPC health service (``grpc.health.v1.Health``) for a node.

Every :class:`~raftgrpc.GrpcTransport` serves it by default (``TransportConfig.health``), on
the node's own port, where the JWT interceptor lets ``Check`` and ``Watch`` through without a
token. It reports three services:

``""`` (the server)
    SERVING while the transport is up; NOT_SERVING from the start of its shutdown
    (``destroy()``, or :func:`raftgrpc.graceful_shutdown`). Use it for liveness.
``"raftgrpc.v1.RaftTransport"``
    SERVING once the node's server is bound and ticking, NOT_SERVING when it shuts down. A
    read-only node has no server, so it does not report this service (NOT_FOUND).
``"raft"``
    SERVING while the node takes part in a working cluster: it knows a leader that it heard
    from within an election timeout (a follower: PySyncObj's own election deadline has not
    passed), or it is that leader and a majority of the cluster (itself included) answered it
    within ``raftMaxTimeout`` and is connected; and its commit index is at most
    ``max_commit_lag`` entries behind the leader's. Use it for readiness. A leader cut off from
    the majority keeps its LEADER state in PySyncObj until ``leaderFallbackTimeout`` (30 s by
    default), and its streams may look connected for ``liveness_timeout_s``; it is reported
    NOT_SERVING about ``raftMaxTimeout`` after the majority stopped answering, which is about
    when the majority elects a new leader.

Statuses are computed on PySyncObj's tick thread at most every ``check_interval_s`` and set
only when they change, so ``Watch`` streams see each change once. The servicer is
grpcio-health-checking's ``grpc.aio`` one, on the transport's event loop: a ``Watch`` holds
no thread.

With ``listen_address`` the health service (and nothing else: no Raft, no reflection, no
interceptors, plaintext) is also served on a separate port, for Kubernetes gRPC probes, which
support neither TLS nor metadata.

Both servers run on the transport's event loop, which SyncObj's tick thread runs: a node
answers health while it ticks, so a stuck tick thread shows as a node that does not answer
(what a liveness probe should see), and a tick thread held for a while delays the answers
by as much (size probe timeouts for the longest pause SyncObj may take).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from raftgrpc._errors import ConfigError
from raftgrpc._protocol.address import grpc_target
from raftgrpc._pysyncobj import LEADER, election_deadline, last_response_times
from raftgrpc._transport.aio_server import start_server
from raftgrpc._transport.services import NodeContext

__all__ = [
    "OVERALL",
    "RAFT",
    "TRANSPORT",
    "HealthService",
    "HealthServiceFactory",
    "raft_health",
    "service",
]

logger = logging.getLogger("raftgrpc.health")

OVERALL = ""
"""The server as a whole (liveness)."""

TRANSPORT = "raftgrpc.v1.RaftTransport"
"""The Raft transport's gRPC service (not reported by read-only nodes)."""

RAFT = "raft"
"""The node's part in the Raft cluster (readiness)."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_BIND_RETRY_S = 1.0


def raft_health(syncobj: Any, max_commit_lag: int, now: float | None = None) -> tuple[bool, str]:
    """Whether ``syncobj`` counts as SERVING for the ``raft`` health service, and why.

    Call on PySyncObj's tick thread. Uses ``getStatus()``, plus two private fields of
    PySyncObj 0.3.x where present: the follower's election deadline (reset by every
    append-entries from the leader) and the leader's time of each follower's last answer.
    """
    now = time.monotonic() if now is None else now
    status = syncobj.getStatus()
    if status.get("leader") is None:
        return False, "no leader known"
    commit_idx = int(status.get("commit_idx", 0))
    if status.get("state") == LEADER:
        if not status.get("has_quorum"):
            return False, "leader without a connected majority"
        answered = last_response_times(syncobj)
        others = getattr(syncobj, "otherNodes", None)
        conf = getattr(syncobj, "conf", None)
        window = getattr(conf, "raftMaxTimeout", None)
        if answered is not None and others is not None and window is not None:
            since = now - float(window)
            members = list(others)
            fresh = 1 + sum(1 for n in members if answered.get(n, float("-inf")) > since)
            if fresh <= (len(members) + 1) / 2:
                return False, f"leader answered by {fresh} of {len(members) + 1} nodes lately"
        return True, f"leader, commit index {commit_idx}"
    deadline = election_deadline(syncobj)
    if deadline is not None and deadline < now:
        return False, "nothing heard from the leader within the election timeout"
    lag = int(status.get("leader_commit_idx", commit_idx)) - commit_idx
    if lag > max_commit_lag:
        return False, f"commit index {lag} entries behind the leader"
    return True, f"follower, commit index {commit_idx} ({lag} behind the leader)"


class _Collector:
    """Stands in for a grpc.Server to collect what a generated ``add_*_to_server`` adds."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, name: str, handlers: Any) -> None:
        pass  # the generic handler serves the same methods


class HealthService:
    """A node's health service (see the module docstring); made by :func:`service`."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        max_commit_lag: int,
        listen_address: str | None,
        reflection: bool,
        reflection_services: Sequence[str],
        check_interval_s: float,
    ) -> None:
        self._ctx = ctx
        self._max_commit_lag = max_commit_lag
        self._listen_address = listen_address
        self._reflection = reflection
        self._reflection_services = tuple(reflection_services)
        self._check_interval_s = check_interval_s
        self._has_transport = bool(ctx.node_id)
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        """The grpcio-health-checking servicer (``grpc.aio``; it lives on the transport's
        event loop: ``await`` its ``set`` there, e.g. from ``ctx.run_on_tick``)."""
        self._lock = threading.Lock()
        self._statuses: dict[str, int] = {}
        self._closing = False
        self._next_check = float("-inf")
        self._server: grpc.aio.Server | None = None
        self._binding = False
        self._bind_failures = 0
        self._next_bind = float("-inf")
        self.health_port: int | None = None
        """The bound port of the separate health server (``listen_address``), once bound."""
        self._set(OVERALL, _SERVING)
        self._set(RAFT, _NOT_SERVING)
        if self._has_transport:
            self._set(TRANSPORT, _NOT_SERVING)

    # -- NodeService --------------------------------------------------------------------

    def handlers(self) -> Sequence[grpc.GenericRpcHandler[Any, Any]]:
        handlers = self._health_handlers()
        if self._reflection:
            handlers += self._reflection_handlers()
        return handlers

    async def start(self) -> None:
        """Bind the separate health port, if any (the transport awaits this when it is made;
        a port that cannot be bound yet is retried on ticks)."""
        if self._listen_address is not None and self._server is None and not self._binding:
            self._binding = True
            await self._start_server()

    def on_tick(self) -> None:
        now = time.monotonic()
        if now < self._next_check or self._closing:
            return
        self._next_check = now + self._check_interval_s
        if (
            self._listen_address is not None
            and self._server is None
            and not self._binding
            and now >= self._next_bind
        ):
            # On the tick thread: the server starts on the event loop in this tick's run.
            self._binding = True
            self._ctx.loop.create_task(self._start_server())
        if self._has_transport:
            ready = bool(getattr(self._ctx, "ready", True))
            self._set(TRANSPORT, _SERVING if ready else _NOT_SERVING)
        try:
            serving, why = raft_health(self._ctx.syncobj, self._max_commit_lag, now)
        except Exception as exc:  # a host without getStatus, or a SyncObj in a bad state
            serving, why = False, f"status unavailable: {type(exc).__name__}: {exc}"
        self._set(RAFT, _SERVING if serving else _NOT_SERVING, why)

    def on_closing(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            # Every status to NOT_SERVING (pushed to Watch streams), and no later set() counts.
            self._publish(self.servicer.enter_graceful_shutdown)
            self._statuses = dict.fromkeys(self._statuses, _NOT_SERVING)
        logger.info(
            "raftgrpc: health NOT_SERVING: shutting down",
            extra={"event": "health.closing", "node": self._ctx.node_id},
        )

    def close(self) -> Awaitable[None]:
        """Stop the separate health server (the transport awaits this on its event loop)."""
        self.on_closing()
        return self._stop_server()

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # A short grace: Watch streams have been sent NOT_SERVING; let it leave.
            await server.stop(0.1)

    # -- introspection ------------------------------------------------------------------

    def status(self, name: str) -> str | None:
        """The current status of service ``name`` ("SERVING", "NOT_SERVING"), or None."""
        with self._lock:
            value = self._statuses.get(name)
        return None if value is None else health_pb2.HealthCheckResponse.ServingStatus.Name(value)

    # -- internals ----------------------------------------------------------------------

    def _set(self, name: str, status: int, why: str = "") -> None:
        with self._lock:
            if self._closing or self._statuses.get(name) == status:
                return
            self._statuses[name] = status
            self._publish(self.servicer.set, name, cast(Any, status))
        logger.info(
            "raftgrpc: health %r %s%s",
            name,
            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
            f": {why}" if why else "",
            extra={
                "event": "health.changed",
                "node": self._ctx.node_id,
                "service": name,
                "status": health_pb2.HealthCheckResponse.ServingStatus.Name(status),
            },
        )

    def _publish(self, update: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run the servicer's coroutine ``update(*args)`` on the event loop, in order."""

        def spawn() -> None:
            self._ctx.loop.create_task(update(*args))

        self._ctx.run_on_tick(spawn)

    def _health_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        collector = _Collector()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, cast(Any, collector))
        return collector.handlers

    def _reflection_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        from grpc_reflection.v1alpha import _async as reflection_aio
        from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

        import raftgrpc.v1.transport_pb2  # noqa: F401  # its descriptors, for reflection

        names = [health.SERVICE_NAME, reflection.SERVICE_NAME, *self._reflection_services]
        if self._has_transport:
            names.insert(0, TRANSPORT)
        collector = _Collector()
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection_aio.ReflectionServicer(names), cast(Any, collector)
        )
        return collector.handlers

    async def _start_server(self) -> None:
        assert self._listen_address is not None
        self._next_bind = time.monotonic() + _BIND_RETRY_S
        target = grpc_target(self._listen_address)
        try:
            serving = await start_server(
                target,
                handlers=self._health_handlers(),
                options=[("grpc.so_reuseport", 0)],
                max_concurrent_rpcs=64,
            )
        except Exception as exc:
            # Retried about every second: an ERROR line the first time, then DEBUG.
            self._bind_failures += 1
            logger.log(
                logging.ERROR if self._bind_failures == 1 else logging.DEBUG,
                "raftgrpc: health server cannot listen on %s (retrying): %s",
                target,
                exc,
                extra={
                    "event": "health.bind_failed",
                    "address": target,
                    "attempt": self._bind_failures,
                },
            )
            return
        finally:
            self._binding = False
        if self._closing:
            await serving.server.stop(None)
            return
        self._server = serving.server
        self.health_port = serving.port
        logger.info(
            "raftgrpc: health served on %s",
            target,
            extra={"event": "health.listening", "node": self._ctx.node_id, "address": target},
        )


class HealthServiceFactory:
    """The :data:`~raftgrpc._transport.services.ServiceFactory` :func:`service` returns; a transport
    recognises it, and adds no default health service when its middleware has one."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def __call__(self, ctx: NodeContext) -> HealthService:
        return HealthService(ctx, **self.options)


def service(
    *,
    max_commit_lag: int = 100,
    listen_address: str | None = None,
    reflection: bool = False,
    reflection_services: Sequence[str] = (),
    check_interval_s: float = 0.25,
) -> HealthServiceFactory:
    """The health service of a node, for ``Middleware.services``.

    ``max_commit_lag``: entries a node's commit index may trail the leader's while ``raft``
    is SERVING. ``listen_address``: also serve health alone, in plaintext and without
    interceptors, on this ``host:port`` (port 0 picks one: see ``health_port``).
    ``reflection``: add server reflection (``grpc.reflection.v1alpha``) to the node's port,
    listing the Raft, health and reflection services and ``reflection_services``.
    ``check_interval_s``: how often the statuses are recomputed on the tick thread.
    """
    if max_commit_lag < 0:
        raise ConfigError(f"max_commit_lag must be >= 0, got {max_commit_lag!r}")
    if check_interval_s <= 0:
        raise ConfigError(f"check_interval_s must be > 0, got {check_interval_s!r}")
    if listen_address is not None:
        grpc_target(listen_address)  # a ConfigError now rather than at bind time
    return HealthServiceFactory(
        max_commit_lag=max_commit_lag,
        listen_address=listen_address,
        reflection=reflection,
        reflection_services=tuple(reflection_services),
        check_interval_s=check_interval_s,
    )

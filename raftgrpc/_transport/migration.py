"""MigrationTransport: move a running TCPTransport cluster to gRPC without stopping it.

A :class:`MigrationTransport` runs two transports side by side, a *primary* (the one being
moved to, normally :class:`~raftgrpc.GrpcTransport`) and a *secondary* (the one being moved
from, normally PySyncObj's ``TCPTransport``). It listens on both, so peers that run either
one, or a MigrationTransport themselves, reach it; it sends to each peer over the primary
and falls back to the secondary when the primary cannot reach that peer and
``should_fallback(error)`` says so. Rolling restarts then take a cluster from TCP to
Migration to gRPC, and back (see the README's runbook).

Unlike a request/response transport, PySyncObj's messages are a per-peer ordered stream:
a follower truncates its log when an append_entries arrives behind one it already took, and
snapshots travel as chunks that must arrive in order. So messages to a peer never alternate
between the paths. Each peer's traffic *sticks* to one path; it moves to the other only

- when its path is lost (fallback), or when the primary has been back for
  ``upgrade_after_s`` while no snapshot is in flight (upgrade), and
- through a disconnect that PySyncObj sees: the peer is reported disconnected, nothing is
  sent to it for ``switch_hold_s`` (at least two append-entries periods), then it is
  reported connected on the new path. PySyncObj restarts any chunked transfer after such a
  disconnect, and the pause lets what is in flight on the old path arrive first.

On the receiving side a peer is heard on one path at a time: a message arriving on the
other path is taken (and the peer's path switched) only once the current one has been
silent for half of ``switch_hold_s``, so a straggler from an abandoned path can never
overtake, or follow, what the peer sends on its new one; such stragglers are dropped and
counted, and PySyncObj resends.

The decisions are :class:`raftgrpc._protocol.routing.Router`'s (pure, the clock passed in);
this module wires it to the two inner transports and to SyncObj, and logs what it decided.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.node import Node
from pysyncobj.transport import TCPTransport, Transport

from raftgrpc._abilities import (
    HasListenTarget,
    HasStats,
    HostsServices,
    Redials,
    ReportsPeerErrors,
    ShutsDownGracefully,
    TracksResends,
)
from raftgrpc._errors import ConfigError, PeerUnreachable
from raftgrpc._log_limit import RateLimiter
from raftgrpc._protocol.address import split_host_port
from raftgrpc._protocol.routing import (
    Connected,
    Disconnected,
    EvaluationFailed,
    Event,
    FallbackRefused,
    Heard,
    MigrationConfig,
    Path,
    PredicateFailed,
    RedialPrimary,
    RedialSecondary,
    Router,
    expected_fallback,
    fallback_unless_refused,
)
from raftgrpc._pysyncobj import drop_callbacks, forget_connect_attempts, guarded, utility_callbacks

__all__ = [
    "PRIMARY",
    "SECONDARY",
    "MigrationConfig",
    "MigrationTransport",
    "fallback_unless_refused",
]

logger = logging.getLogger("raftgrpc.migration")

PRIMARY = Path.PRIMARY.label
SECONDARY = Path.SECONDARY.label

TransportFactory = Callable[[Any, Any, Any], Any]
"""What SyncObj takes as ``transportClass``: ``(syncObj, selfNode, otherNodes) -> Transport``."""


class MigrationTransport(
    Transport,  # type: ignore[misc]  # pysyncobj is untyped
    ShutsDownGracefully,
    HostsServices,
    HasStats,
):
    """Two transports as one: send over ``primary``, fall back to ``secondary`` per peer.

    Usually built with :meth:`factory` and given to SyncObj as ``transportClass``::

        grpc_side = functools.partial(
            GrpcTransport, config=TransportConfig(address_of=PortOffset(1000))
        )
        node = MyStore("10.0.0.1:4321", partners,
                       transportClass=MigrationTransport.factory(primary=grpc_side))

    ``primary`` and ``secondary`` are transport factories (classes, ``functools.partial``
    objects, ``TransportBuilder.build()``), called as SyncObj calls ``transportClass``.
    ``should_fallback(error)`` gets a :class:`~raftgrpc.PeerUnreachable` describing why the
    primary has no connection to a peer (its ``peer_error``, :class:`~raftgrpc.ReportsPeerErrors`)
    and decides whether the secondary may carry that peer meanwhile.

    A peer counts as connected while its current path is; read-only followers and
    PySyncObj's utility commands (``TcpUtility``, ``raftgrpc admin``) work on both.
    """

    def __init__(
        self,
        syncObj: Any,
        selfNode: Any | None,
        otherNodes: Any,
        *,
        primary: TransportFactory,
        secondary: TransportFactory = TCPTransport,
        should_fallback: Callable[[PeerUnreachable], bool] = fallback_unless_refused,
        config: MigrationConfig | None = None,
    ) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._syncobj = syncObj
        self.node_id: str = selfNode.id if selfNode is not None else ""
        self._router = Router(
            config if config is not None else MigrationConfig(),
            float(syncObj.conf.appendEntriesPeriod),
            should_fallback,
            self._primary_error,
            read_only=selfNode is None,
        )
        now = time.monotonic()
        for node in otherNodes:
            self._router.add(node, now)
        self._readonly_outer: dict[tuple[Path, Any], Any] = {}  # (path, inner node) -> ours
        self._readonly_inner: dict[Any, tuple[Path, Any]] = {}  # ours -> (path, inner node)
        self._readonly_ids = itertools.count()
        self._transports: list[Any] = []
        self._trackers: list[TracksResends | None] = []  # per path: its memory of what it sent
        self._ticking = False
        self._destroyed = False
        self._log_limiter = RateLimiter(limit=5, interval_s=10.0)
        try:
            for path in Path:
                transport = (primary, secondary)[path](syncObj, selfNode, otherNodes)
                self._transports.append(transport)
                self._trackers.append(transport if isinstance(transport, TracksResends) else None)
                self._wire(path, transport)
            self._check_ports(selfNode)
            syncObj.addOnTickCallback(self._on_tick)
            self._ticking = True
        except BaseException:
            self.destroy()
            raise

    @classmethod
    def factory(
        cls,
        primary: TransportFactory,
        secondary: TransportFactory = TCPTransport,
        *,
        should_fallback: Callable[[PeerUnreachable], bool] = fallback_unless_refused,
        config: MigrationConfig | None = None,
    ) -> TransportFactory:
        """A ``transportClass`` for SyncObj that builds this transport."""
        return functools.partial(
            cls,
            primary=primary,
            secondary=secondary,
            should_fallback=should_fallback,
            config=config,
        )

    # -- PySyncObj's Transport contract ----------------------------------------------------

    @property
    def primary(self) -> Any:
        """The primary transport (the one being moved to)."""
        return self._transports[Path.PRIMARY]

    @property
    def secondary(self) -> Any:
        """The secondary transport (the one being moved from)."""
        return self._transports[Path.SECONDARY]

    @property
    def ready(self) -> bool:
        """Whether both transports are ready (listening)."""
        return all(t.ready for t in self._transports)

    def tryGetReady(self) -> None:
        """Get both transports ready; TransportNotReadyError if either gave up binding."""
        for transport in self._transports:
            if not transport.ready:
                transport.tryGetReady()

    def waitReady(self) -> None:
        """Block until both transports are ready."""
        for transport in self._transports:
            transport.waitReady()

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:
        """Utility commands are answered on both transports (TcpUtility and raftgrpc admin)."""
        super().setOnUtilityMessageCallback(message, callback)
        for transport in self._transports:
            transport.setOnUtilityMessageCallback(message, callback)

    def addNode(self, node: Any) -> None:
        """A new member: both transports start connecting to it."""
        if self._destroyed:
            return
        self._router.add(node, time.monotonic())
        for transport in self._transports:
            guarded(logger, functools.partial(transport.addNode, node), "adding a node")

    def dropNode(self, node: Any) -> None:
        """A member left (or a read-only follower is dropped)."""
        inner = self._readonly_inner.get(node)
        if inner is not None:
            path, inner_node = inner
            guarded(logger, lambda: self._transports[path].dropNode(inner_node), "dropping")
            self._readonly_gone(path, inner_node)
            return
        was_connected = self._router.drop(node)
        for transport in self._transports:
            guarded(logger, functools.partial(transport.dropNode, node), "dropping a node")
        if was_connected:
            self._onNodeDisconnected(node)

    def send(self, node: Any, message: Any) -> bool:
        """Send over the peer's current path; never blocks, never raises."""
        if node not in self._router:
            inner = self._readonly_inner.get(node)
            if inner is None:
                return False
            return self._send_on(inner[0], inner[1], message)
        path = self._router.send_path(node, message, time.monotonic())
        if path is None:
            return False
        # A path that failed while sending reported the peer lost before this returns.
        return self._send_on(path, node, message) and self._router.path_of(node) == path

    def destroy(self) -> None:
        """Destroy both transports."""
        if self._destroyed:
            return
        for transport in self._transports:
            guarded(logger, transport.destroy, "destroying a transport")
        self._destroyed = True
        if self._ticking:
            self._ticking = False
            self._syncobj.removeOnTickCallback(self._on_tick)
        drop_callbacks(self)
        self._router.clear()
        self._readonly_inner.clear()
        self._readonly_outer.clear()

    def begin_shutdown(self) -> None:
        """Forwarded to the transports that have it (health reports NOT_SERVING)."""
        for transport in self._transports:
            if isinstance(transport, ShutsDownGracefully):
                guarded(logger, transport.begin_shutdown, "beginning the shutdown")

    # -- introspection ------------------------------------------------------------------------

    @property
    def services(self) -> tuple[Any, ...]:
        """The primary's services (health, admin), if it has any."""
        primary = self.primary
        return tuple(primary.services) if isinstance(primary, HostsServices) else ()

    @property
    def switches(self) -> int:
        """Times a peer's traffic was moved from one path to the other."""
        return self._router.switches

    @property
    def dropped_stragglers(self) -> int:
        """Messages dropped because they arrived on a path the peer had left."""
        return self._router.dropped_stragglers

    def paths(self) -> dict[str, str | None]:
        """Each member's current path, ``"primary"``, ``"secondary"`` or None (disconnected).

        Read from the tick thread, or accept a slightly stale view.
        """
        paths = self._router.paths()
        return {node.id: None if path is None else path.label for node, path in paths.items()}

    def stats(self) -> dict[str, Any]:
        """Paths, switch and straggler counters, and the primary's own stats if it has any."""
        out: dict[str, Any] = {
            "paths": self.paths(),
            "switches": self.switches,
            "dropped_stragglers": self.dropped_stragglers,
        }
        if self._transports and isinstance(self.primary, HasStats):
            out["primary"] = self.primary.stats()
        return out

    # -- inner transports' callbacks (tick thread) ----------------------------------------------

    def _wire(self, path: Path, transport: Any) -> None:
        transport.setOnMessageReceivedCallback(
            lambda node, message: self._received(path, node, message)
        )
        transport.setOnNodeConnectedCallback(lambda node: self._path_up(path, node))
        transport.setOnNodeDisconnectedCallback(lambda node: self._path_down(path, node))
        transport.setOnReadonlyNodeConnectedCallback(lambda node: self._readonly_came(path, node))
        transport.setOnReadonlyNodeDisconnectedCallback(
            lambda node: self._readonly_gone(path, node)
        )
        for name, callback in utility_callbacks(self).items():
            transport.setOnUtilityMessageCallback(name, callback)

    def _path_up(self, path: Path, node: Any) -> None:
        if not self._destroyed:
            self._act(self._router.path_up(node, path, time.monotonic()))

    def _path_down(self, path: Path, node: Any) -> None:
        if not self._destroyed:
            self._act(self._router.path_down(node, path, time.monotonic()))

    def _received(self, path: Path, node: Any, message: Any) -> None:
        if self._destroyed:
            return
        outer = self._readonly_outer.get((path, node))
        if outer is not None:
            self._onMessageReceived(outer, message)
            return
        arrival = self._router.received(node, path, message, time.monotonic())
        if arrival.switched:
            logger.info(
                "raftgrpc: now hearing %s on the %s path",
                node.id,
                path.label,
                extra={"event": "migration.inbound", "peer": node.id, "path": path.label},
            )
        if arrival.heard is Heard.IGNORE:
            return
        if arrival.heard is Heard.STRAGGLER:
            assert arrival.heard_on is not None
            self._log_limited(
                f"straggler:{node.id}",
                logging.INFO,
                "raftgrpc: dropped a %s message from %s on the %s path (heard on the "
                "%s path %.0f ms ago)",
                message.get("type"),
                node.id,
                path.label,
                arrival.heard_on.label,
                1000 * arrival.silent_s,
            )
            return
        if arrival.heard is Heard.ORPHAN:
            self._log_limited(
                f"orphan:{node.id}",
                logging.INFO,
                "raftgrpc: dropped a chunk from %s on the %s path that continues a "
                "transfer begun elsewhere",
                node.id,
                path.label,
            )
            return
        if message.get("type") == "next_node_idx" and node in self._router:
            # The follower answers what was sent to it, perhaps on the path it did not
            # answer on: both paths hear of it (raftgrpc._protocol.resend).
            for tracker in self._trackers:
                if tracker is not None:
                    tracker.heard_reply(node, message)
        self._onMessageReceived(node, message)

    def _readonly_came(self, path: Path, inner_node: Any) -> None:
        if self._destroyed:
            return
        # Both transports number their read-only followers from 0: give SyncObj our own.
        outer = Node(f"readonly-{next(self._readonly_ids)}")
        self._readonly_outer[(path, inner_node)] = outer
        self._readonly_inner[outer] = (path, inner_node)
        self._onReadonlyNodeConnected(outer)

    def _readonly_gone(self, path: Path, inner_node: Any) -> None:
        outer = self._readonly_outer.pop((path, inner_node), None)
        if outer is None:
            return
        self._readonly_inner.pop(outer, None)
        self._onReadonlyNodeDisconnected(outer)

    def _on_tick(self) -> None:
        events = guarded(
            logger, functools.partial(self._router.tick, time.monotonic()), "choosing a path"
        )
        self._act(events or [])

    # -- what the router decided ---------------------------------------------------------------

    def _act(self, events: list[Event]) -> None:
        """Carry out the router's decisions, in order; none may raise into the tick thread."""
        for event in events:
            guarded(logger, functools.partial(self._act_on, event), "acting on a path change")

    def _act_on(self, event: Event) -> None:
        if isinstance(event, Connected):
            self._connected(event)
        elif isinstance(event, Disconnected):
            logger.info(
                "raftgrpc: %s leaves the %s path: %s",
                event.node.id,
                event.path.label,
                event.why,
                extra={"event": "migration.leave", "peer": event.node.id, "reason": event.why},
            )
            self._onNodeDisconnected(event.node)
        elif isinstance(event, FallbackRefused):
            logger.error(
                "raftgrpc: not falling back to the secondary for %s: %s",
                event.node.id,
                event.error,
                extra={"event": "migration.fallback_refused", "peer": event.node.id},
            )
        elif isinstance(event, EvaluationFailed):
            self._log_limited(
                f"evaluate:{event.node.id}",
                logging.ERROR,
                "raftgrpc: error while choosing a path for %s (%r); it keeps its path",
                event.node.id,
                event.error,
            )
        elif isinstance(event, PredicateFailed):
            self._log_limited(
                f"predicate:{event.node.id}",
                logging.ERROR,
                "raftgrpc: should_fallback failed for %s (%r); not falling back",
                event.node.id,
                event.error,
            )
        elif isinstance(event, RedialPrimary):
            if isinstance(self.primary, Redials):
                self.primary.redial(event.node)
        elif isinstance(event, RedialSecondary):
            # A peer restarted on TCPTransport that is heard by some nodes but not yet by
            # the leader times out and starts an election that deposes the leader
            # (PySyncObj has no pre-vote): redialling it soon shortens that window. Other
            # secondaries are left alone.
            forget_connect_attempts(self.secondary, event.nodes)

    def _connected(self, event: Connected) -> None:
        tracker = self._trackers[event.path]
        if tracker is not None:
            # The path may have been idle while the other one carried entries, some of them
            # repeats that made the follower drop what this path carried before.
            tracker.forget_sent(event.node)
        level, why = logging.INFO, ""
        extra = {"event": "migration.path", "peer": event.node.id, "path": event.path.label}
        if event.primary_error is not None:
            # Falling back is visible: a certificate the primary rejects looks like an
            # unreachable peer to its client (UNAVAILABLE), so say what the primary said.
            error = event.primary_error
            if not expected_fallback(error):
                level = logging.WARNING
            why = f" (primary: {error.reason})"
            extra["primary_error"] = error.reason
        logger.log(
            level,
            "raftgrpc: %s via the %s path%s",
            event.node.id,
            event.path.label,
            why,
            extra=extra,
        )
        self._onNodeConnected(event.node)

    # -- helpers -------------------------------------------------------------------------------

    def _send_on(self, path: Path, node: Any, message: Any) -> bool:
        try:
            return bool(self._transports[path].send(node, message))
        except Exception:
            logger.exception("raftgrpc: the %s transport failed to send", path.label)
            return False

    def _primary_error(self, node: Any) -> PeerUnreachable:
        """What the primary says about ``node``; a PeerUnreachable of no kind if it says
        nothing (the router asks only while the primary has no connection to it)."""
        primary = self.primary
        if isinstance(primary, ReportsPeerErrors):
            try:
                error = primary.peer_error(node)
            except Exception:
                logger.exception("raftgrpc: peer_error failed")
            else:
                if isinstance(error, PeerUnreachable):
                    if error.failed_at is None or isinstance(error.failed_at, int | float):
                        return error
                    # The router compares failed_at with its clock: keep the error, not
                    # a time it cannot use.
                    return PeerUnreachable(
                        error.node_id, error.reason, error.code, None, kind=error.kind
                    )
        return PeerUnreachable(node.id, "not connected")

    def _check_ports(self, self_node: Any | None) -> None:
        """Refuse a primary that would listen on the secondary's port (both default to the
        node's own address)."""
        primary = self.primary
        target = primary.listen_target if isinstance(primary, HasListenTarget) else None
        if self_node is None or not isinstance(target, str):
            return
        bind = getattr(self._syncobj.conf, "bindAddress", None) or self_node.id
        if split_host_port(target)[1] == split_host_port(bind)[1]:
            raise ConfigError(
                f"the primary would listen on {target}, the port the secondary uses; give "
                "the primary another port (TransportConfig.address_of, e.g. PortOffset(1000))"
            )

    def _log_limited(self, key: str, level: int, msg: str, *args: Any) -> None:
        suppressed = self._log_limiter.admit(key)
        if suppressed is None:
            return
        if suppressed:
            msg += f" ({suppressed} more suppressed)"
        logger.log(level, msg, *args)

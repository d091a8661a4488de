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
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import grpc
from pysyncobj.node import Node
from pysyncobj.transport import TCPTransport, Transport

from raftgrpc._errors import ConfigError, PeerUnreachable
from raftgrpc._log_limit import RateLimiter
from raftgrpc._protocol.address import split_host_port
from raftgrpc._protocol.chunks import ChunkGuard
from raftgrpc._pysyncobj import drop_callbacks, guarded

__all__ = [
    "PRIMARY",
    "SECONDARY",
    "MigrationConfig",
    "MigrationTransport",
    "fallback_unless_refused",
]

logger = logging.getLogger("raftgrpc.migration")

PRIMARY = "primary"
SECONDARY = "secondary"
_NAMES = (PRIMARY, SECONDARY)
_P, _S = 0, 1

# The primary answered, and said no: falling back would hide a misconfiguration (wrong
# tokens, certificates, roles) until the secondary is removed, and then cause an outage.
_REFUSALS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# What gRPC and raftgrpc say when a TLS handshake fails (the client does not trust the
# server's certificate) or a peer says it is another node: configuration errors.
_HANDSHAKE_FAILURES = ("handshake", "ssl", "certificate")

_MAX_UPGRADE_AFTER_S = 60.0  # the longest wait before retrying the primary after losing it
_STABLE_S = 30.0  # a primary this long in use resets that wait

TransportFactory = Callable[[Any, Any, Any], Any]
"""What SyncObj takes as ``transportClass``: ``(syncObj, selfNode, otherNodes) -> Transport``."""


def fallback_unless_refused(error: PeerUnreachable) -> bool:
    """The default ``should_fallback``: fall back unless the primary refused us
    (UNAUTHENTICATED, PERMISSION_DENIED, a failed TLS or raftgrpc handshake).

    A peer that does not serve the primary yet (connection refused: UNAVAILABLE), or cannot
    be reached over it, is served by the secondary. A peer whose primary rejects this node's
    credentials, or whose certificate this node does not trust, is not: the link stays down
    and the error is logged, so the misconfiguration shows up while the secondary still
    carries the rest of the cluster, not when the secondary is switched off. (A server that
    rejects this node's client certificate closes the connection without saying why; that
    looks like an unreachable peer and does fall back, with a warning.)
    """
    if error.code in _REFUSALS:
        return False
    reason = error.reason.lower()
    return not any(word in reason for word in _HANDSHAKE_FAILURES)


def _expected_fallback(error: PeerUnreachable) -> bool:
    """Whether falling back is the normal case (the peer does not serve the primary yet)."""
    reason = error.reason.lower()
    return "connection refused" in reason or "no stream established yet" in reason


@dataclass(frozen=True)
class MigrationConfig:
    """Timing of a :class:`MigrationTransport`; every node of a cluster should share one."""

    primary_grace_s: float = 0.5
    """How long a peer waits for the primary before the secondary may carry it, when both
    are down (at start, after a peer restarts). The primary usually connects in
    milliseconds; this avoids starting on the secondary only to move at once."""

    switch_hold_s: float = 0.2
    """Pause between leaving one path and using the other for a peer (raised to two
    ``appendEntriesPeriod`` if that is longer). Receivers take a peer's new path once the
    old one was silent for half of it."""

    upgrade_after_s: float = 1.0
    """A peer on the secondary moves to the primary once the primary has been connected to
    it (and the peer on the secondary) for this long, and no snapshot is being sent."""

    secondary_redial_s: float = 0.25
    """While a peer is unreachable on both paths, a TCPTransport secondary redials it this
    often instead of every ``SyncObjConf.connectionRetryTime`` (5 s by default)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"MigrationConfig.{f.name} must be >= 0, got {value!r}")
        for name in ("switch_hold_s", "secondary_redial_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"MigrationConfig.{name} must be > 0")


class _Route:
    """Tick-thread state of one member peer."""

    __slots__ = (
        "activated_at",
        "active",
        "connected",
        "guard",
        "in_snapshot",
        "inbound",
        "inbound_at",
        "lost_at",
        "node",
        "refused",
        "snapshot_at",
        "up_since",
        "upgrade_after",
    )

    def __init__(self, node: Any, now: float, upgrade_after: float) -> None:
        self.node = node
        self.active: int | None = None  # the path SyncObj was told the peer is connected on
        self.activated_at = now
        self.lost_at = float("-inf")  # when SyncObj was last told of a disconnect
        self.connected = [False, False]  # each inner transport's view
        self.up_since = [now, now]  # when each path last came up
        self.in_snapshot = False  # a snapshot is being sent to the peer on the active path
        self.snapshot_at = float("-inf")  # when its last chunk went out
        self.inbound: int | None = None  # the path the peer is heard on
        self.inbound_at = float("-inf")  # when it was last heard on it
        # Chunked transfers heard from the peer must start on the path they are heard on:
        # a new guard for every path (and every reconnect of it) drops continuations until
        # a first chunk, so two attempts are never glued together.
        self.guard = ChunkGuard()
        self.upgrade_after = upgrade_after  # upgrade_after_s, doubled per primary lost
        self.refused: str | None = None  # the last primary error should_fallback turned down


class MigrationTransport(Transport):  # type: ignore[misc]  # pysyncobj is untyped
    """Two transports as one: send over ``primary``, fall back to ``secondary`` per peer.

    Usually built with :meth:`factory` and given to SyncObj as ``transportClass``::

        grpc_side = functools.partial(
            GrpcTransport, config=TransportConfig(address_of=PortOffset(1000))
        )
        node = MyStore("10.0.0.1:4321", partners,
                       transportClass=MigrationTransport.factory(primary=grpc_side))

    ``primary`` and ``secondary`` are transport factories (classes, ``functools.partial``
    objects, ``TransportBuilder.build()``), called as SyncObj calls ``transportClass``.
    ``should_fallback(error)`` gets a :class:`~raftgrpc._errors.PeerUnreachable` describing
    why the primary has no connection to a peer (``GrpcTransport.peer_error``) and decides
    whether the secondary may carry that peer meanwhile.

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
        self._config = config if config is not None else MigrationConfig()
        self._should_fallback = should_fallback
        period = float(syncObj.conf.appendEntriesPeriod)
        self._hold_s = max(self._config.switch_hold_s, 2 * period)
        self._quiet_s = self._hold_s / 2
        self._last_upgrade_at = float("-inf")
        self.node_id: str = selfNode.id if selfNode is not None else ""
        now = time.monotonic()
        self._routes: dict[Any, _Route] = {node: self._new_route(node, now) for node in otherNodes}
        self._readonly_outer: dict[tuple[int, Any], Any] = {}  # (path, inner node) -> ours
        self._readonly_inner: dict[Any, tuple[int, Any]] = {}  # ours -> (path, inner node)
        self._readonly_ids = itertools.count()
        self._transports: list[Any] = []
        self._last_tick_at = float("-inf")
        self._next_secondary_redial = float("-inf")
        self._ticking = False
        self._destroyed = False
        self.switches = 0
        """Times a peer's traffic was moved from one path to the other."""
        self.dropped_stragglers = 0
        """Messages dropped because they arrived on a path the peer had left."""
        self._log_limiter = RateLimiter(limit=5, interval_s=10.0)
        try:
            for index, make in enumerate((primary, secondary)):
                transport = make(syncObj, selfNode, otherNodes)
                self._transports.append(transport)
                self._wire(index, transport)
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
        return self._transports[_P]

    @property
    def secondary(self) -> Any:
        """The secondary transport (the one being moved from)."""
        return self._transports[_S]

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
        if node not in self._routes:
            self._routes[node] = self._new_route(node, time.monotonic())
        for transport in self._transports:
            guarded(logger, functools.partial(transport.addNode, node), "adding a node")

    def dropNode(self, node: Any) -> None:
        """A member left (or a read-only follower is dropped)."""
        inner = self._readonly_inner.get(node)
        if inner is not None:
            index, inner_node = inner
            guarded(logger, lambda: self._transports[index].dropNode(inner_node), "dropping")
            self._readonly_gone(index, inner_node)
            return
        route = self._routes.pop(node, None)
        for transport in self._transports:
            guarded(logger, functools.partial(transport.dropNode, node), "dropping a node")
        if route is not None and route.active is not None:
            route.active = None
            self._onNodeDisconnected(node)

    def send(self, node: Any, message: Any) -> bool:
        """Send over the peer's current path; never blocks, never raises."""
        route = self._routes.get(node)
        if route is None:
            inner = self._readonly_inner.get(node)
            if inner is None:
                return False
            return self._send_on(inner[0], inner[1], message)
        index = route.active
        if index is None:
            return False
        if message.get("type") == "append_entries":
            # A snapshot is being sent from a non-last chunk until its last one, or until
            # SyncObj goes back to entries (or stops sending, see _should_upgrade).
            chunk = message.get("serialized")
            route.in_snapshot = isinstance(chunk, tuple) and len(chunk) > 2 and not chunk[2]
            if route.in_snapshot:
                route.snapshot_at = time.monotonic()
        return self._send_on(index, node, message) and route.active == index

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
        self._routes.clear()
        self._readonly_inner.clear()
        self._readonly_outer.clear()

    def begin_shutdown(self) -> None:
        """Forwarded to the transports that have it (health reports NOT_SERVING)."""
        for transport in self._transports:
            begin = getattr(transport, "begin_shutdown", None)
            if callable(begin):
                guarded(logger, begin, "beginning the shutdown")

    # -- introspection ------------------------------------------------------------------------

    @property
    def services(self) -> tuple[Any, ...]:
        """The primary's services (health, admin), if it has any."""
        return tuple(getattr(self.primary, "services", ()))

    def paths(self) -> dict[str, str | None]:
        """Each member's current path, ``"primary"``, ``"secondary"`` or None (disconnected).

        Read from the tick thread, or accept a slightly stale view.
        """
        routes = list(self._routes.values())
        return {r.node.id: None if r.active is None else _NAMES[r.active] for r in routes}

    def stats(self) -> dict[str, Any]:
        """Paths, switch and straggler counters, and the primary's own stats if it has any."""
        out: dict[str, Any] = {
            "paths": self.paths(),
            "switches": self.switches,
            "dropped_stragglers": self.dropped_stragglers,
        }
        primary_stats = getattr(self.primary, "stats", None) if self._transports else None
        if callable(primary_stats):
            out["primary"] = primary_stats()
        return out

    # -- inner transports' callbacks (tick thread) ----------------------------------------------

    def _wire(self, index: int, transport: Any) -> None:
        transport.setOnMessageReceivedCallback(
            lambda node, message: self._received(index, node, message)
        )
        transport.setOnNodeConnectedCallback(lambda node: self._path_up(index, node))
        transport.setOnNodeDisconnectedCallback(lambda node: self._path_down(index, node))
        transport.setOnReadonlyNodeConnectedCallback(lambda node: self._readonly_came(index, node))
        transport.setOnReadonlyNodeDisconnectedCallback(
            lambda node: self._readonly_gone(index, node)
        )
        for name, callback in self._onUtilityMessageCallbacks.items():
            transport.setOnUtilityMessageCallback(name, callback)

    def _path_up(self, index: int, node: Any) -> None:
        route = self._routes.get(node)
        if route is None or self._destroyed:
            return
        now = time.monotonic()
        if not route.connected[index]:
            route.connected[index] = True
            route.up_since[index] = now
        if index == _S and not route.connected[_P]:
            # The peer is up: have the primary try it now, not when its backoff ends.
            redial = getattr(self.primary, "redial", None)
            if callable(redial):
                guarded(logger, functools.partial(redial, node), "redialling")
        self._evaluate(route, now, None)

    def _path_down(self, index: int, node: Any) -> None:
        route = self._routes.get(node)
        if route is None or self._destroyed:
            return
        now = time.monotonic()
        route.connected[index] = False
        if route.inbound == index:
            route.guard = ChunkGuard()  # a reconnect of this path starts afresh
        if route.active == index:
            if index == _P:
                # Lost the primary: wait longer before the next upgrade (a flapping
                # primary would otherwise cost a disconnect every upgrade_after_s).
                route.upgrade_after = min(route.upgrade_after * 2, _MAX_UPGRADE_AFTER_S)
            self._leave(route, now, f"{_NAMES[index]} lost")
        self._evaluate(route, now, None)

    def _received(self, index: int, node: Any, message: Any) -> None:
        if self._destroyed:
            return
        outer = self._readonly_outer.get((index, node))
        if outer is not None:
            self._onMessageReceived(outer, message)
            return
        route = self._routes.get(node)
        if route is not None:
            now = time.monotonic()
            if self.node_id == "" and route.active is not None and index != route.active:
                # A read-only node is a separate follower on each of a member's paths, fed
                # by both: it takes what comes on the path it sends on (the member answers
                # there) and ignores its other identity's copy.
                return
            if route.inbound != index:
                if route.inbound is not None and now - route.inbound_at < self._quiet_s:
                    # The peer was heard on its other path a moment ago: this is either a
                    # straggler from a path it left, or the first message of a path it moved
                    # to too soon. Either way, taking it could reorder its stream.
                    self.dropped_stragglers += 1
                    self._log_limited(
                        f"straggler:{node.id}",
                        logging.INFO,
                        "raftgrpc: dropped a %s message from %s on the %s path (heard on the "
                        "%s path %.0f ms ago)",
                        message.get("type"),
                        node.id,
                        _NAMES[index],
                        _NAMES[route.inbound],
                        1000 * (now - route.inbound_at),
                    )
                    return
                if route.inbound is not None:
                    logger.info(
                        "raftgrpc: now hearing %s on the %s path",
                        node.id,
                        _NAMES[index],
                        extra={
                            "event": "migration.inbound",
                            "peer": node.id,
                            "path": _NAMES[index],
                        },
                    )
                route.inbound = index
                route.guard = ChunkGuard()
            route.inbound_at = now
            if not route.guard.admit(message):
                self._log_limited(
                    f"orphan:{node.id}",
                    logging.INFO,
                    "raftgrpc: dropped a chunk from %s on the %s path that continues a "
                    "transfer begun elsewhere",
                    node.id,
                    _NAMES[index],
                )
                return
            if message.get("type") == "next_node_idx":
                # The follower answers what was sent to it, perhaps on the path it did not
                # answer on: both paths hear of it (raftgrpc._protocol.resend).
                for transport in self._transports:
                    _heard_reply(transport, node, message)
        self._onMessageReceived(node, message)

    def _readonly_came(self, index: int, inner_node: Any) -> None:
        if self._destroyed:
            return
        # Both transports number their read-only followers from 0: give SyncObj our own.
        outer = Node(f"readonly-{next(self._readonly_ids)}")
        self._readonly_outer[(index, inner_node)] = outer
        self._readonly_inner[outer] = (index, inner_node)
        self._onReadonlyNodeConnected(outer)

    def _readonly_gone(self, index: int, inner_node: Any) -> None:
        outer = self._readonly_outer.pop((index, inner_node), None)
        if outer is None:
            return
        self._readonly_inner.pop(outer, None)
        self._onReadonlyNodeDisconnected(outer)

    # -- path choice (tick thread) ------------------------------------------------------------

    def _on_tick(self) -> None:
        previous, self._last_tick_at = self._last_tick_at, time.monotonic()
        if self._last_tick_at >= self._next_secondary_redial:
            self._next_secondary_redial = self._last_tick_at + self._config.secondary_redial_s
            guarded(logger, self._hurry_secondary, "redialling the secondary")
        for route in list(self._routes.values()):
            guarded(
                logger,
                functools.partial(self._evaluate, route, self._last_tick_at, previous),
                "choosing a path",
            )

    def _new_route(self, node: Any, now: float) -> _Route:
        return _Route(node, now, self._config.upgrade_after_s)

    def _hurry_secondary(self) -> None:
        """Have TCPTransport redial peers unreachable on both paths at once, not after
        ``connectionRetryTime`` (5 s by default). A peer restarted on TCPTransport that is
        heard by some nodes but not yet by the leader times out and starts an election that
        deposes the leader (PySyncObj has no pre-vote); redialling it soon shortens that
        window. Uses TCPTransport's retry bookkeeping; other secondaries are left alone."""
        attempts = getattr(self.secondary, "_lastConnectAttempt", None)
        if not isinstance(attempts, dict):
            return
        for route in self._routes.values():
            if route.active is None and not route.connected[_S]:
                attempts.pop(route.node, None)

    def _evaluate(self, route: _Route, now: float, previous_tick: float | None) -> None:
        """Keep, leave or take a path for ``route``. A path is taken at once only for a
        peer never connected before; after a disconnect, only from a tick whose previous
        tick ran after the hold (so an append-entries round saw the peer disconnected)."""
        if route.active is not None:
            if not self._should_upgrade(route, now):
                return
            self._leave(route, now, "primary is back")
        choice = self._choose(route, now)
        if choice is None:
            return
        if route.lost_at > float("-inf"):
            due = route.lost_at + self._hold_s
            if previous_tick is None or previous_tick < due:
                return
        self._take(route, choice, now)

    def _should_upgrade(self, route: _Route, now: float) -> bool:
        if route.active == _P and now - route.activated_at >= _STABLE_S:
            route.upgrade_after = self._config.upgrade_after_s  # the primary holds again
        upgrade_after = route.upgrade_after
        if not (
            route.active == _S
            and route.connected[_P]
            and not (route.in_snapshot and now - route.snapshot_at < self._hold_s * 2)
            and now - route.up_since[_P] >= upgrade_after
            and now - route.activated_at >= upgrade_after
            # One peer at a time: a leader whose links all heal at once must not drop
            # every follower for the same hold.
            and now - self._last_upgrade_at >= 2 * self._hold_s
        ):
            return False
        self._last_upgrade_at = now
        return True

    def _choose(self, route: _Route, now: float) -> int | None:
        if route.connected[_P]:
            return _P
        if not route.connected[_S]:
            return None
        error = self._primary_error(route.node)
        # The secondary just came up (start, the peer restarted): unless the primary failed
        # since, give it a moment (it was asked to redial when the secondary came up).
        failed_since = error.failed_at is not None and error.failed_at >= route.up_since[_S]
        if not failed_since and now - route.up_since[_S] < self._config.primary_grace_s:
            return None
        try:
            allowed = bool(self._should_fallback(error))
        except Exception as exc:
            self._log_limited(
                f"predicate:{route.node.id}",
                logging.ERROR,
                "raftgrpc: should_fallback failed for %s (%r); not falling back",
                route.node.id,
                exc,
            )
            allowed = False
        if allowed:
            return _S
        if route.refused != str(error):
            route.refused = str(error)
            logger.error(
                "raftgrpc: not falling back to the secondary for %s: %s",
                route.node.id,
                error,
                extra={"event": "migration.fallback_refused", "peer": route.node.id},
            )
        return None

    def _take(self, route: _Route, index: int, now: float) -> None:
        # The path may have been idle while the other one carried entries, some of them
        # repeats that made the follower drop what this path carried before.
        _forget_sent(self._transports[index], route.node)
        route.active = index
        route.activated_at = now
        route.in_snapshot = False
        route.refused = None
        level, why = logging.INFO, ""
        extra = {"event": "migration.path", "peer": route.node.id, "path": _NAMES[index]}
        if index == _S:
            # Falling back is visible: a certificate the primary rejects looks like an
            # unreachable peer to its client (UNAVAILABLE), so say what the primary said.
            error = self._primary_error(route.node)
            if not _expected_fallback(error):
                level = logging.WARNING
            why = f" (primary: {error.reason})"
            extra["primary_error"] = error.reason
        logger.log(
            level, "raftgrpc: %s via the %s path%s", route.node.id, _NAMES[index], why, extra=extra
        )
        self._onNodeConnected(route.node)

    def _leave(self, route: _Route, now: float, why: str) -> None:
        assert route.active is not None
        logger.info(
            "raftgrpc: %s leaves the %s path: %s",
            route.node.id,
            _NAMES[route.active],
            why,
            extra={"event": "migration.leave", "peer": route.node.id, "reason": why},
        )
        route.active = None
        route.lost_at = now
        route.in_snapshot = False
        self.switches += 1
        self._onNodeDisconnected(route.node)

    # -- helpers -------------------------------------------------------------------------------

    def _send_on(self, index: int, node: Any, message: Any) -> bool:
        try:
            return bool(self._transports[index].send(node, message))
        except Exception:
            logger.exception("raftgrpc: the %s transport failed to send", _NAMES[index])
            return False

    def _primary_error(self, node: Any) -> PeerUnreachable:
        getter = getattr(self.primary, "peer_error", None)
        if callable(getter):
            try:
                error = getter(node)
            except Exception:
                logger.exception("raftgrpc: peer_error failed")
            else:
                if isinstance(error, PeerUnreachable):
                    return error
        return PeerUnreachable(node.id, "not connected")

    def _check_ports(self, self_node: Any | None) -> None:
        """Refuse a primary that would listen on the secondary's port (both default to the
        node's own address)."""
        target = getattr(self.primary, "listen_target", None)
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


def _heard_reply(transport: Any, node: Any, message: dict[str, Any]) -> None:
    """Tell ``transport`` (if it filters repeats, :mod:`raftgrpc._protocol.resend`) what ``node``
    answered."""
    heard = getattr(transport, "heard_reply", None)
    if heard is not None:
        heard(node, message)


def _forget_sent(transport: Any, node: Any) -> None:
    """Have ``transport`` (if it filters repeats, :mod:`raftgrpc._protocol.resend`) send ``node``
    everything again."""
    forget = getattr(transport, "forget_sent", None)
    if forget is not None:
        forget(node)

"""Which of a MigrationTransport's two paths carries each peer's messages (pure code).

PySyncObj's messages to a peer are one ordered stream (a follower truncates its log when an
append_entries arrives behind one it already took; snapshots travel as ordered chunks), so a
peer's traffic sticks to one path, the *primary* or the *secondary*, and moves only

- when its path is lost (fallback, if ``should_fallback`` allows it), or when the primary
  has been back for ``upgrade_after_s`` while no snapshot is in flight (upgrade), and
- through a disconnect PySyncObj sees: the peer is reported disconnected, left alone for
  the *hold*, then reported connected on the new path, from a tick whose previous tick ran
  after the hold (so an append-entries round saw the disconnect).

Receiving, a peer is heard on one path at a time: a message on the other path is taken (and
the peer's path switched) only once the current one has been silent for half the hold.

:class:`Router` holds that state machine. It reads no clock (every input carries ``now``),
starts no thread and logs nothing: what it decided comes back as events, which the shell
(:mod:`raftgrpc._transport.migration`) logs and reports to PySyncObj.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import grpc

from raftgrpc._errors import ConfigError, PeerUnreachable, UnreachableKind
from raftgrpc._protocol.chunks import ChunkGuard

__all__ = [
    "Arrival",
    "Connected",
    "Disconnected",
    "EvaluationFailed",
    "Event",
    "FallbackRefused",
    "Heard",
    "MigrationConfig",
    "Path",
    "PredicateFailed",
    "RedialPrimary",
    "RedialSecondary",
    "Router",
    "expected_fallback",
    "fallback_unless_refused",
]

# The primary answered, and said no: falling back would hide a misconfiguration (wrong
# tokens, certificates, roles) until the secondary is removed, and then cause an outage.
_REFUSALS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# A failed TLS handshake (this node does not trust the server's certificate) or raftgrpc
# handshake (the peer says it is another node): configuration errors too.
_MISCONFIGURED = frozenset({UnreachableKind.TLS_FAILED, UnreachableKind.HANDSHAKE_FAILED})
# The peer does not serve the primary yet: the normal case while a cluster migrates.
_EXPECTED = frozenset({UnreachableKind.CONNECTION_REFUSED, UnreachableKind.NOT_DIALLED})

_MAX_UPGRADE_AFTER_S = 60.0  # the longest wait before retrying the primary after losing it
_STABLE_S = 30.0  # a primary this long in use resets that wait


def fallback_unless_refused(error: PeerUnreachable) -> bool:
    """The default ``should_fallback``: fall back unless the primary refused us
    (UNAUTHENTICATED, PERMISSION_DENIED, a failed TLS or raftgrpc handshake).

    A peer that does not serve the primary yet (connection refused), or cannot be reached
    over it, is served by the secondary. A peer whose primary rejects this node's
    credentials, or whose certificate this node does not trust, is not: the link stays down
    and the error is logged, so the misconfiguration shows up while the secondary still
    carries the rest of the cluster, not when the secondary is switched off. (A server that
    rejects this node's client certificate closes the connection without saying why; that
    looks like an unreachable peer and does fall back, with a warning; so does an unexpected
    error of this node while dialling, ``UnreachableKind.INTERNAL``, and an error of no
    kind.) Decides on ``error.code`` and ``error.kind`` only.
    """
    return error.code not in _REFUSALS and error.kind not in _MISCONFIGURED


def expected_fallback(error: PeerUnreachable) -> bool:
    """Whether falling back for ``error`` is the normal case (the peer does not serve the
    primary yet), worth no warning."""
    return error.kind in _EXPECTED


@dataclass(frozen=True)
class MigrationConfig:
    """Timing of a :class:`~raftgrpc.MigrationTransport`; every node of a cluster should
    share one."""

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


class Path(enum.IntEnum):
    """One of the two inner transports (its index in the shell's list)."""

    PRIMARY = 0
    SECONDARY = 1

    @property
    def label(self) -> str:
        """``"primary"`` or ``"secondary"``, as logs and ``paths()`` say it."""
        return self.name.lower()


# -- what the router decided (the shell acts on these, in order) -------------------------------


@dataclass(frozen=True)
class Connected:
    """Report ``node`` connected, on ``path`` (after telling that path to send it everything
    again: it may have been idle while the other path carried repeats)."""

    node: Any
    path: Path
    primary_error: PeerUnreachable | None = None
    """Why the primary was passed over (a fallback to the secondary only)."""


@dataclass(frozen=True)
class Disconnected:
    """Report ``node`` disconnected: it left ``path``, for the reason ``why``."""

    node: Any
    path: Path
    why: str


@dataclass(frozen=True)
class FallbackRefused:
    """``should_fallback`` turned the secondary down for ``node`` (reported once per error)."""

    node: Any
    error: PeerUnreachable


@dataclass(frozen=True)
class PredicateFailed:
    """``should_fallback`` raised ``error`` for ``node``; taken as a refusal."""

    node: Any
    error: Exception


@dataclass(frozen=True)
class EvaluationFailed:
    """Deciding the path of ``node`` at a tick raised ``error`` (a primary whose
    ``peer_error`` fails, a bug): that peer keeps its path until the next tick; the other
    peers' decisions of the same tick stand."""

    node: Any
    error: Exception


@dataclass(frozen=True)
class RedialPrimary:
    """The secondary just reached ``node`` and the primary has not: have it dial now."""

    node: Any


@dataclass(frozen=True)
class RedialSecondary:
    """``nodes`` are unreachable on both paths: have the secondary redial them now."""

    nodes: tuple[Any, ...]


Event = (
    Connected
    | Disconnected
    | EvaluationFailed
    | FallbackRefused
    | PredicateFailed
    | RedialPrimary
    | RedialSecondary
)


class Heard(enum.Enum):
    """What to do with a message received from a peer."""

    DELIVER = "deliver"
    IGNORE = "ignore"
    """A read-only node's copy from its other identity (the member answers on the path the
    node sends on)."""
    STRAGGLER = "straggler"
    """It came on a path other than the one the peer was heard on a moment ago: a straggler
    from a path it left, or a first message of a path it moved to too soon."""
    ORPHAN = "orphan"
    """A chunk continuing a transfer begun on another path (or stream)."""


@dataclass(frozen=True)
class Arrival:
    """The verdict on one received message."""

    heard: Heard
    switched: bool = False
    """The peer is now heard on this path, after another one."""
    heard_on: Path | None = None
    """The path the peer was heard on before (for a straggler)."""
    silent_s: float = 0.0
    """How long that path had been silent (for a straggler)."""


class _Route:
    """State of one member peer."""

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
        self.active: Path | None = None  # the path SyncObj was told the peer is connected on
        self.activated_at = now
        self.lost_at = float("-inf")  # when SyncObj was last told of a disconnect
        self.connected = [False, False]  # each inner transport's view
        self.up_since = [now, now]  # when each path last came up
        self.in_snapshot = False  # a snapshot is being sent to the peer on the active path
        self.snapshot_at = float("-inf")  # when its last chunk went out
        self.inbound: Path | None = None  # the path the peer is heard on
        self.inbound_at = float("-inf")  # when it was last heard on it
        # Chunked transfers heard from the peer must start on the path they are heard on:
        # a new guard for every path (and every reconnect of it) drops continuations until
        # a first chunk, so two attempts are never glued together.
        self.guard = ChunkGuard()
        self.upgrade_after = upgrade_after  # upgrade_after_s, doubled per primary lost
        self.refused: str | None = None  # the last primary error should_fallback turned down


class Router:
    """The per-peer path state machine of a :class:`~raftgrpc.MigrationTransport`.

    ``hold_s`` is ``switch_hold_s`` raised to two ``append_entries_period_s``.
    ``primary_error(node)`` says why the primary has no connection to ``node`` (it must not
    raise); ``should_fallback(error)`` decides whether the secondary may carry it meanwhile
    (it may raise: that counts as no).

    >>> router = Router(MigrationConfig(), 0.1, fallback_unless_refused,
    ...                 lambda node: PeerUnreachable(node, "down"))
    >>> router.add("b", now=0.0)
    >>> router.path_up("b", Path.PRIMARY, now=0.0)  # never connected: taken at once
    [Connected(node='b', path=<Path.PRIMARY: 0>, primary_error=None)]
    >>> router.send_path("b", {"type": "append_entries"}, now=0.1)
    <Path.PRIMARY: 0>
    """

    def __init__(
        self,
        config: MigrationConfig,
        append_entries_period_s: float,
        should_fallback: Callable[[PeerUnreachable], bool],
        primary_error: Callable[[Any], PeerUnreachable],
        *,
        read_only: bool = False,
    ) -> None:
        self._config = config
        self._should_fallback = should_fallback
        self._primary_error = primary_error
        self._read_only = read_only
        self.hold_s = max(config.switch_hold_s, 2 * append_entries_period_s)
        """The pause between leaving a path and taking the other."""
        self.quiet_s = self.hold_s / 2
        """How long a peer's path must be silent before its other path is heard."""
        self._routes: dict[Any, _Route] = {}
        self._last_upgrade_at = float("-inf")
        self._last_tick_at = float("-inf")
        self._next_secondary_redial = float("-inf")
        self.switches = 0
        """Times a peer's traffic was moved from one path to the other."""
        self.dropped_stragglers = 0
        """Messages dropped because they arrived on a path the peer had left."""

    # -- membership -------------------------------------------------------------------------

    def __contains__(self, node: object) -> bool:
        return node in self._routes

    def add(self, node: Any, now: float) -> None:
        """A member to route (a no-op for one already known)."""
        if node not in self._routes:
            self._routes[node] = _Route(node, now, self._config.upgrade_after_s)

    def drop(self, node: Any) -> bool:
        """Forget a member; whether it was connected (report it disconnected, then)."""
        route = self._routes.pop(node, None)
        return route is not None and route.active is not None

    def clear(self) -> None:
        """Forget every member (at destroy)."""
        self._routes.clear()

    def paths(self) -> dict[Any, Path | None]:
        """Each member's path (None: reported disconnected)."""
        return {route.node: route.active for route in list(self._routes.values())}

    # -- inputs -----------------------------------------------------------------------------

    def path_up(self, node: Any, path: Path, now: float) -> list[Event]:
        """``path``'s transport connected to ``node``."""
        route = self._routes.get(node)
        if route is None:
            return []
        events: list[Event] = []
        if not route.connected[path]:
            route.connected[path] = True
            route.up_since[path] = now
        if path == Path.SECONDARY and not route.connected[Path.PRIMARY]:
            # The peer is up: have the primary try it now, not when its backoff ends.
            events.append(RedialPrimary(node))
        self._evaluate_one(route, now, None, events)
        return events

    def path_down(self, node: Any, path: Path, now: float) -> list[Event]:
        """``path``'s transport lost ``node``."""
        route = self._routes.get(node)
        if route is None:
            return []
        events: list[Event] = []
        route.connected[path] = False
        if route.inbound == path:
            route.guard = ChunkGuard()  # a reconnect of this path starts afresh
        if route.active == path:
            if path == Path.PRIMARY:
                # Lost the primary: wait longer before the next upgrade (a flapping
                # primary would otherwise cost a disconnect every upgrade_after_s).
                route.upgrade_after = min(route.upgrade_after * 2, _MAX_UPGRADE_AFTER_S)
            self._leave(route, now, f"{path.label} lost", events)
        self._evaluate_one(route, now, None, events)
        return events

    def tick(self, now: float) -> list[Event]:
        """A tick of SyncObj: holds that passed end, upgrades that are due happen."""
        previous, self._last_tick_at = self._last_tick_at, now
        events: list[Event] = []
        if now >= self._next_secondary_redial:
            self._next_secondary_redial = now + self._config.secondary_redial_s
            stranded = tuple(
                r.node
                for r in self._routes.values()
                if r.active is None and not r.connected[Path.SECONDARY]
            )
            if stranded:
                events.append(RedialSecondary(stranded))
        for route in list(self._routes.values()):
            self._evaluate_one(route, now, previous, events)
        return events

    def send_path(self, node: Any, message: dict[str, Any], now: float) -> Path | None:
        """The path to send ``message`` to the member ``node`` on; None while it is reported
        disconnected (or unknown). Notes snapshot chunks: no upgrade in mid-snapshot."""
        route = self._routes.get(node)
        if route is None or route.active is None:
            return None
        if message.get("type") == "append_entries":
            # A snapshot is being sent from a non-last chunk until its last one, or until
            # SyncObj goes back to entries (or stops sending, see _should_upgrade).
            route.in_snapshot = _mid_snapshot(message)
            if route.in_snapshot:
                route.snapshot_at = now
        return route.active

    def path_of(self, node: Any) -> Path | None:
        """The path ``node`` is reported connected on, if any."""
        route = self._routes.get(node)
        return None if route is None else route.active

    def received(self, node: Any, path: Path, message: dict[str, Any], now: float) -> Arrival:
        """What to do with ``message`` from ``node``, heard on ``path``."""
        route = self._routes.get(node)
        if route is None:
            return Arrival(Heard.DELIVER)
        if self._read_only and route.active is not None and path != route.active:
            # A read-only node is a separate follower on each of a member's paths, fed by
            # both: it takes what comes on the path it sends on (the member answers there)
            # and ignores its other identity's copy.
            return Arrival(Heard.IGNORE)
        switched = False
        if route.inbound != path:
            if route.inbound is not None and now - route.inbound_at < self.quiet_s:
                # Taking it could reorder the peer's stream.
                self.dropped_stragglers += 1
                return Arrival(Heard.STRAGGLER, False, route.inbound, now - route.inbound_at)
            switched = route.inbound is not None
            route.inbound = path
            route.guard = ChunkGuard()
        route.inbound_at = now
        if not route.guard.admit(message):
            return Arrival(Heard.ORPHAN, switched)
        return Arrival(Heard.DELIVER, switched)

    # -- the decision -----------------------------------------------------------------------

    def _evaluate_one(
        self, route: _Route, now: float, previous: float | None, events: list[Event]
    ) -> None:
        """:meth:`_evaluate`, its failure an event: one peer's failure (a primary whose
        ``peer_error`` fails, a bug) must not cost the other peers their decisions, nor
        SyncObj the events already decided."""
        try:
            self._evaluate(route, now, previous, events)
        except Exception as exc:
            events.append(EvaluationFailed(route.node, exc))

    def _evaluate(
        self, route: _Route, now: float, previous_tick: float | None, events: list[Event]
    ) -> None:
        """Keep, leave or take a path for ``route``. A path is taken at once only for a
        peer never connected before; after a disconnect, only from a tick whose previous
        tick ran after the hold (so an append-entries round saw the peer disconnected)."""
        if route.active is not None:
            if not self._should_upgrade(route, now):
                return
            self._leave(route, now, "primary is back", events)
        choice = self._choose(route, now, events)
        if choice is None:
            return
        path, error = choice
        if route.lost_at > float("-inf"):
            due = route.lost_at + self.hold_s
            if previous_tick is None or previous_tick < due:
                return
        route.active = path
        route.activated_at = now
        route.in_snapshot = False
        route.refused = None
        events.append(Connected(route.node, path, error))

    def _should_upgrade(self, route: _Route, now: float) -> bool:
        if route.active == Path.PRIMARY and now - route.activated_at >= _STABLE_S:
            route.upgrade_after = self._config.upgrade_after_s  # the primary holds again
        upgrade_after = route.upgrade_after
        if not (
            route.active == Path.SECONDARY
            and route.connected[Path.PRIMARY]
            and not (route.in_snapshot and now - route.snapshot_at < self.hold_s * 2)
            and now - route.up_since[Path.PRIMARY] >= upgrade_after
            and now - route.activated_at >= upgrade_after
            # One peer at a time: a leader whose links all heal at once must not drop
            # every follower for the same hold.
            and now - self._last_upgrade_at >= 2 * self.hold_s
        ):
            return False
        self._last_upgrade_at = now
        return True

    def _choose(
        self, route: _Route, now: float, events: list[Event]
    ) -> tuple[Path, PeerUnreachable | None] | None:
        """The path to take (with the primary's error, for a fallback), or None."""
        if route.connected[Path.PRIMARY]:
            return Path.PRIMARY, None
        if not route.connected[Path.SECONDARY]:
            return None
        error = self._primary_error(route.node)
        # The secondary just came up (start, the peer restarted): unless the primary failed
        # since, give it a moment (it was asked to redial when the secondary came up).
        up_since = route.up_since[Path.SECONDARY]
        failed_since = error.failed_at is not None and error.failed_at >= up_since
        if not failed_since and now - up_since < self._config.primary_grace_s:
            return None
        try:
            allowed = bool(self._should_fallback(error))
        except Exception as exc:
            events.append(PredicateFailed(route.node, exc))
            allowed = False
        if allowed:
            return Path.SECONDARY, error
        if route.refused != str(error):
            route.refused = str(error)
            events.append(FallbackRefused(route.node, error))
        return None

    def _leave(self, route: _Route, now: float, why: str, events: list[Event]) -> None:
        assert route.active is not None
        events.append(Disconnected(route.node, route.active, why))
        route.active = None
        route.lost_at = now
        route.in_snapshot = False
        self.switches += 1


def _mid_snapshot(message: dict[str, Any]) -> bool:
    """Whether an append_entries carries a snapshot chunk other than the last."""
    chunk = message.get("serialized")
    return isinstance(chunk, tuple) and len(chunk) > 2 and not chunk[2]

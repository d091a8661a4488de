"""The optional abilities of a transport, beyond PySyncObj's ``Transport`` contract.

PySyncObj needs only ``send``, ``addNode``, ``dropNode``, ``destroy`` and the callbacks.
What raftgrpc's own code asks of a transport on top of that is declared here, one small
``Protocol`` per ability (as hashicorp/raft declares ``WithClose`` and ``WithPeers`` beside
its ``Transport``), instead of being found with ``getattr``: a transport that has an ability
declares it by subclassing, mypy checks the signatures, and callers test for it with
``isinstance``. :class:`~raftgrpc.GrpcTransport` has them all;
:class:`~raftgrpc.MigrationTransport` has those it can forward; PySyncObj's
``TCPTransport`` has none, and every caller copes with that.

The checks are ``runtime_checkable``: ``isinstance`` looks for the names only, so a
transport that does not subclass a protocol but has the method passes too (and mypy checks
it where it is used as one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from raftgrpc._errors import PeerUnreachable

__all__ = [
    "HasListenTarget",
    "HasStats",
    "HostsServices",
    "Redials",
    "ReportsPeerErrors",
    "ShutsDownGracefully",
    "TracksResends",
]


@runtime_checkable
class ReportsPeerErrors(Protocol):
    """Says why it has no connection to a peer.

    :class:`~raftgrpc.MigrationTransport` asks its primary on the tick thread, each time it
    considers the secondary for a peer, and hands the answer to ``should_fallback``.
    """

    def peer_error(self, node: Any) -> PeerUnreachable | None:
        """Why there is no connection to ``node``; None while one is established."""
        ...


@runtime_checkable
class Redials(Protocol):
    """Can dial a peer at once instead of when its reconnect backoff ends.

    :class:`~raftgrpc.MigrationTransport` asks its primary when the secondary has just
    connected to a peer the primary has not: the peer is known to be back.
    """

    def redial(self, node: Any) -> None:
        """Dial ``node`` now if it is not connected (any thread)."""
        ...


@runtime_checkable
class ShutsDownGracefully(Protocol):
    """Can announce a shutdown before ``destroy()``.

    :func:`raftgrpc.graceful_shutdown` calls it first, so health reports NOT_SERVING while
    leadership is handed over; :class:`~raftgrpc.MigrationTransport` forwards it.
    """

    def begin_shutdown(self) -> None:
        """Tell the node's services that it is shutting down (any thread)."""
        ...


@runtime_checkable
class HasListenTarget(Protocol):
    """Says where it listens.

    :class:`~raftgrpc.MigrationTransport` reads its primary's at construction, to refuse a
    primary that would listen on the secondary's port.
    """

    @property
    def listen_target(self) -> str | None:
        """The ``host:port`` it listens on; None on a read-only node."""
        ...


@runtime_checkable
class HasStats(Protocol):
    """Keeps counters for tests and monitoring.

    Tests and monitoring read them, on any thread (a node's services through
    ``NodeContext.stats``); :meth:`raftgrpc.MigrationTransport.stats` nests its primary's.
    """

    def stats(self) -> Mapping[str, Any]:
        """A snapshot of the counters, by name."""
        ...


@runtime_checkable
class HostsServices(Protocol):
    """Serves extra services (health, admin) beside the Raft stream.

    Tests and operators find a node's health service through it;
    :class:`~raftgrpc.MigrationTransport` offers its primary's.
    """

    @property
    def services(self) -> tuple[Any, ...]:
        """The services, the default health service first."""
        ...


@runtime_checkable
class TracksResends(Protocol):
    """Remembers what it sent a peer, so as not to send it twice
    (:mod:`raftgrpc._protocol.resend`).

    :class:`~raftgrpc.MigrationTransport` calls both on the tick thread: ``heard_reply`` on
    every inner transport for each answer a follower sends (on whichever path it arrives),
    ``forget_sent`` on a path it is about to use again for a peer.
    """

    def heard_reply(self, node: Any, message: dict[str, Any]) -> None:
        """``node`` answered with ``message`` (a ``next_node_idx``)."""
        ...

    def forget_sent(self, node: Any) -> None:
        """Let everything the stream to ``node`` carried be sent on it again."""
        ...

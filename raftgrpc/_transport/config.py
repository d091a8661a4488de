"""Configuration of :class:`~raftgrpc.GrpcTransport`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from raftgrpc._errors import ConfigError

__all__ = ["TransportConfig", "check_syncobj_password"]

logger = logging.getLogger("raftgrpc.transport")

_MIB = 1024 * 1024
_MAY_BE_ZERO = frozenset({"raft_health_max_commit_lag", "queue_max_age_s"})


@dataclass(frozen=True)
class TransportConfig:
    """Settings of a :class:`~raftgrpc.GrpcTransport`; every node of a cluster may share one.

    The defaults suit a cluster on a LAN or loopback and behave like PySyncObj's TCPTransport
    where TCPTransport has an equivalent. Pass one with ``functools.partial``::

        transport = functools.partial(GrpcTransport, config=TransportConfig(keepalive_time_s=2.0))
        node = MyStore("10.0.0.1:4321", partners, transportClass=transport)
    """

    listen_address: str | None = None
    """Address the server binds, ``host:port``. None: ``SyncObjConf.bindAddress`` if set, else
    the node's own address. Unlike TCPTransport, which binds every interface, the default exposes
    the port only where the node says it lives."""

    address_of: Callable[[str], str] | None = None
    """Where a node serves gRPC, given its Raft id (``host:port``, the address PySyncObj
    knows it by). None: at that very address. Set it when the Raft ids stay TCP addresses
    while gRPC listens elsewhere, as during a migration from TCPTransport
    (:class:`raftgrpc.PortOffset`, :class:`raftgrpc.AddressMap`, or any
    function). It is applied to every peer's id and to this node's own id; the node listens
    on the mapped port of its own id, on ``SyncObjConf.bindAddress``'s host if that is set
    (``listen_address`` wins over both). Every node must use the same mapping."""

    max_message_bytes: int = 256 * _MIB
    """Largest frame accepted or sent. PySyncObj sends a command as one message whatever its
    size (20 MB commands exist in its tests) while gRPC's own default is 4 MiB; a frame above
    this closes the stream with RESOURCE_EXHAUSTED."""

    frame_bytes: int = 1 * _MIB
    """Messages queued for a peer are coalesced into one frame up to about this many bytes.
    One gRPC message costs ~100 µs in grpcio, so batching is where the throughput comes from;
    1 MiB keeps each frame well below HTTP/2 flow-control windows' worth of latency."""

    queue_memory_bytes: int = 32 * _MIB
    """Bytes of encoded messages a peer's queue keeps in memory. Beyond this the queue spills
    to a temporary file, in order, so that ``send()`` never blocks PySyncObj's tick thread and
    a snapshot of any size streams with bounded memory."""

    queue_spool_bytes: int = 8 * 1024 * _MIB
    """Bytes a peer's queue may spill to disk. Beyond this the peer is declared disconnected:
    its queue is dropped whole (never partly, so no chunked transfer is split) and PySyncObj
    resends from its own state after the reconnect, as it does after a TCP reset."""

    queue_max_age_s: float = 10.0
    """A peer whose queue has had the same message at its head for longer than this when
    this node sends it another is reset like an overflowing one (0: never). It takes messages
    slower than this node sends them; what waits is stale, and a PySyncObj follower fed old
    append-entries truncates its log back to them and asks for everything after again, which
    can keep it behind for good. After the reset the leader resends from where the follower
    is. Snapshot chunks never go stale, and time spent waiting behind one does not count: a
    big snapshot on a slow link may take longer than this to leave the queue."""

    inbound_buffer_bytes: int = 32 * _MIB
    """The most one received frame may decode to (estimated size of its Python objects; or 32
    times its wire size if that is more): a frame beyond it closes its stream before it is
    decoded. Nothing else waits for the tick thread: frames are read as it runs the event
    loop and delivered at once, so a slow tick thread reads less and HTTP/2 flow control
    pushes back on senders."""

    liveness_timeout_s: float = 3.0
    """A stream on which nothing arrived for this long is closed and its peer reported through
    ``onNodeDisconnected``; each side sends a Pulse after a third of it without traffic. So a
    hung or cut-off peer is reported within 3 s plus at most 0.25 s of monitoring delay
    (TCPTransport's connectionTimeout is 3.5 s). A crashed process on a reachable host is
    reported at once: its kernel resets the connection."""

    keepalive_time_s: float = 10.0
    """Interval of HTTP/2 keepalive pings (both sides configured to send and accept them).
    They keep idle connections through middleboxes and find dead connections below the
    streams; they cannot find a hung peer while this side writes (gRPC then skips its pings),
    which is why liveness_timeout_s exists."""

    keepalive_timeout_s: float = 5.0
    """An HTTP/2 ping unanswered this long closes the connection."""

    reconnect_initial_s: float = 0.05
    """First delay before redialling a peer after a failure; doubles up to reconnect_max_s."""

    reconnect_max_s: float = 2.0
    """Longest delay between redials (TCPTransport waits a flat connectionRetryTime, 5 s)."""

    handshake_timeout_s: float = 5.0
    """Time a dialled peer has to answer Hello with Welcome, and an accepted stream has to
    send its Hello, before the stream is cancelled (a silent stream holds one of the
    ``max_concurrent_streams``)."""

    connection_idle_s: float = 300.0
    """A connection that carried no stream for this long is closed by the server. Peers keep
    a stream open, so only idle clients (probes, tools, or a flood of silent connections)
    are affected; gRPC clients reconnect on their next call."""

    max_concurrent_streams: int = 64
    """Inbound calls served at once; more get RESOURCE_EXHAUSTED. A node needs one per peer
    plus read-only followers (and its health and admin calls)."""

    shutdown_grace_s: float = 0.5
    """Time ``destroy()`` lets in-flight RPCs finish before cancelling them."""

    health: bool = True
    """Serve the standard gRPC health service (:mod:`raftgrpc._ops.health`) on the node's port:
    ``""`` (liveness), ``"raftgrpc.v1.RaftTransport"`` and ``"raft"`` (readiness: a leader is
    known and this node's commit index is close to it). Not added when the middleware's
    ``services`` already hold a ``raftgrpc._ops.health.service(...)``."""

    health_listen_address: str | None = None
    """Also serve health, alone, in plaintext and without interceptors, on this ``host:port``
    (Kubernetes gRPC probes support neither TLS nor metadata). None: only on the node's port."""

    raft_health_max_commit_lag: int = 100
    """Entries this node's commit index may trail the leader's while ``"raft"`` is SERVING
    (0: none)."""

    use_http_proxy: bool = False
    """Let peer connections go through the proxy named by ``grpc_proxy``/``https_proxy``/
    ``http_proxy`` (gRPC's default). Off: Raft peers are cluster-internal, and a proxy
    variable set for other traffic (common on CI runners and corporate hosts) would
    otherwise keep the cluster from ever forming."""

    reflection: bool = False
    """Serve gRPC server reflection (grpcurl, grpcui) on the node's port, next to health."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            may_be_zero = field.name in _MAY_BE_ZERO
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and (value < 0 or (value == 0 and not may_be_zero))
            ):
                raise ConfigError(f"TransportConfig.{field.name} must be > 0, got {value!r}")
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ConfigError("TransportConfig.reconnect_initial_s must be <= reconnect_max_s")
        if self.frame_bytes > self.max_message_bytes // 2:
            # A frame is frame_bytes of messages plus up to 6 bytes of framing each (tiny
            # messages nearly double in the worst case); it must stay below gRPC's limit.
            raise ConfigError("TransportConfig.frame_bytes must be <= max_message_bytes / 2")


def check_syncobj_password(syncobj_conf: Any, tls: bool, call_credentials: bool) -> None:
    """Refuse (ConfigError) or warn about a ``SyncObjConf.password`` given to GrpcTransport.

    TCPTransport encrypts with the password; silently ignoring it would send what the user
    meant to protect in plaintext, so without TLS (``tls``) it is refused. With TLS (a
    cluster migrating from a password-protected TCPTransport) the password only serves the
    TCP path, but it also authenticated TCPTransport's peers: without per-call credentials
    (``call_credentials``) that is said in a warning.
    """
    if not getattr(syncobj_conf, "password", None):
        return
    if not tls:
        raise ConfigError(
            "SyncObjConf.password is TCPTransport's encryption and GrpcTransport does not "
            "use it; secure the cluster at the gRPC layer (TransportBuilder.with_tls) or "
            "remove it from SyncObjConf"
        )
    if not call_credentials:
        logger.warning(
            "raftgrpc: SyncObjConf.password also authenticated TCPTransport's peers; over "
            "gRPC only mTLS with node identities or JWT (TransportBuilder.with_jwt) does",
            extra={"event": "config.password_with_tls"},
        )

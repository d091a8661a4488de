"""GrpcTransport: PySyncObj's Transport over gRPC streams."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import logging
import math
import pickle
import sys
import threading
import time
from typing import Any

import grpc
from pysyncobj.node import Node
from pysyncobj.transport import Transport, TransportNotReadyError

from raftgrpc import _grpcenv as grpcenv
from raftgrpc._abilities import (
    HasListenTarget,
    HasStats,
    HostsServices,
    Redials,
    ReportsPeerErrors,
    ShutsDownGracefully,
    TracksResends,
)
from raftgrpc._errors import ConfigError, PeerUnreachable, UnreachableKind
from raftgrpc._ops import health
from raftgrpc._protocol import codec
from raftgrpc._protocol.address import grpc_target, split_host_port
from raftgrpc._protocol.backoff import Backoff
from raftgrpc._protocol.encoder import BatchEncoder
from raftgrpc._protocol.handshake import hello_bytes
from raftgrpc._pysyncobj import drop_callbacks, guarded
from raftgrpc._transport.aio_server import start_server
from raftgrpc._transport.config import TransportConfig
from raftgrpc._transport.inbound import RaftStreamServicer
from raftgrpc._transport.link import Link
from raftgrpc._transport.liveness import LivenessMonitor
from raftgrpc._transport.meter import ByteMeter
from raftgrpc._transport.middleware import Middleware, dial_aio
from raftgrpc._transport.outbound import PeerEvents, PeerStream
from raftgrpc._transport.outbox import Outbox
from raftgrpc._transport.tickloop import TickLoop

__all__ = ["GrpcTransport"]

logger = logging.getLogger("raftgrpc.transport")


# What a read-only follower sends: acknowledgements of entries, and commands it forwards.
_READONLY_SENDS = frozenset({"next_node_idx", "apply_command"})
_told_event_engine: list[bool] = []  # the EventEngine setting is logged once per process


class _Peer:
    """Tick-thread state of one peer: the stream SyncObj currently considers connected."""

    __slots__ = ("error", "link", "lost_at", "node", "reset", "stream")

    def __init__(self, node: Any, stream: PeerStream | None) -> None:
        self.node = node
        self.stream = stream
        self.link: Link | None = None
        self.error: PeerUnreachable | None = None  # set when the peer cannot be dialled at all
        self.reset: PeerUnreachable | None = None  # the last reset of its stream by this node
        self.lost_at = float("-inf")  # monotonic time SyncObj was last told of a disconnect


class GrpcTransport(
    Transport,  # type: ignore[misc]  # pysyncobj is untyped
    ReportsPeerErrors,
    Redials,
    ShutsDownGracefully,
    HasListenTarget,
    HasStats,
    HostsServices,
    TracksResends,
):
    """A drop-in replacement for PySyncObj's ``TCPTransport`` that speaks gRPC.

    >>> from pysyncobj import SyncObj, replicated
    >>> class Counter(SyncObj):
    ...     def __init__(self, me, partners):
    ...         super().__init__(me, partners, transportClass=GrpcTransport)
    ...         self.value = 0
    ...     @replicated
    ...     def incr(self):
    ...         self.value += 1

    Each node serves ``raftgrpc.v1.RaftTransport`` on its own address (or
    ``SyncObjConf.bindAddress``, or ``TransportConfig.listen_address``) and opens one ordered
    stream to each peer; messages queued for a peer are coalesced into frames. Every
    callback into SyncObj runs on SyncObj's tick thread. To configure it, bind a
    :class:`~raftgrpc.TransportConfig` with ``functools.partial(GrpcTransport, config=...)``.
    """

    def __init__(
        self,
        syncObj: Any,
        selfNode: Any | None,
        otherNodes: Any,
        config: TransportConfig | None = None,
        middleware: Middleware | None = None,
    ) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._config = config if config is not None else TransportConfig()
        self._middleware = middleware if middleware is not None else Middleware()
        if getattr(syncObj.conf, "password", None) and self._middleware.server_credentials is None:
            # TCPTransport encrypts with the password; silently ignoring it would send what
            # the user meant to protect in plaintext. With TLS (a cluster migrating from a
            # password-protected TCPTransport) the password only serves the TCP path.
            raise ConfigError(
                "SyncObjConf.password is TCPTransport's encryption and GrpcTransport does not "
                "use it; secure the cluster at the gRPC layer (TransportBuilder.with_tls) or "
                "remove it from SyncObjConf"
            )
        if getattr(syncObj.conf, "password", None) and self._middleware.call_credentials is None:
            logger.warning(
                "raftgrpc: SyncObjConf.password also authenticated TCPTransport's peers; over "
                "gRPC only mTLS with node identities or JWT (TransportBuilder.with_jwt) does",
                extra={"event": "config.password_with_tls"},
            )
        if not _told_event_engine:
            _told_event_engine.append(True)
            logger.info(
                "raftgrpc: gRPC EventEngine %s (raftgrpc._grpcenv)",
                grpcenv.event_engine(),
                extra={"event": "grpc.event_engine", "state": grpcenv.event_engine()},
            )
        self._address_of = self._config.address_of or _same_address
        self._syncobj_conf_bind: str | None = getattr(syncObj.conf, "bindAddress", None)
        # Validated before anything starts: a mapping that fails here fails the constructor.
        self._listen_target = None if selfNode is None else self._listen_address(selfNode)
        self._observer = self._middleware.frame_observer
        self._syncobj = syncObj
        self._conf = syncObj.conf
        self._self_node = selfNode
        self.node_id: str = selfNode.id if selfNode is not None else ""
        self._members: dict[str, Any] = {}  # id -> Node; read by the servicer (on the loop)
        self._peers: dict[Any, _Peer] = {}  # members; tick thread only
        self._readonly: dict[Any, _Peer] = {}  # read-only followers; tick thread only
        self._inbound: dict[Any, Link] = {}  # peer -> stream whose messages are delivered
        self._retired: list[PeerStream] = []
        # Streams established too soon after a disconnect (see _on_established).
        self._deferred: list[tuple[float, _Peer, Link]] = []
        self._readonly_ids = itertools.count()
        self._encoder = BatchEncoder()
        self.outbound_meter = ByteMeter()
        """Bytes queued in memory for all peers (``peak`` is the most ever held)."""
        self._inbound_meter = ByteMeter()
        # Every gRPC call of this transport runs on this loop, which SyncObj's tick thread
        # runs (raftgrpc._transport.tickloop): frames are read and written on the tick thread.
        self._tickloop = TickLoop(self.node_id or "read-only")
        self._loop = self._tickloop.loop
        self._ticking = False  # whether _on_tick is registered with SyncObj
        self._last_tick_at = float("-inf")
        self._monitor = LivenessMonitor(
            self._config.liveness_timeout_s,
            self.node_id or "ro",
            pulse_interval=self._pulse_interval_s,
        )
        self._servicer = RaftStreamServicer(
            self,
            self._monitor,
            self._config.frame_bytes,
            self._config.handshake_timeout_s,
            traced=self._observer is not None,
            inbound_budget=self._config.inbound_buffer_bytes,
        )
        factories = list(self._middleware.services)
        if self._config.health and not any(
            isinstance(f, health.HealthServiceFactory) for f in factories
        ):
            factories.insert(
                0,
                health.service(
                    max_commit_lag=self._config.raft_health_max_commit_lag,
                    listen_address=self._config.health_listen_address,
                    reflection=self._config.reflection,
                ),
            )
        self._services: list[Any] = []
        self._services_closing = False
        self._server: grpc.aio.Server | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._ready = selfNode is None
        self._bind_over = threading.Event()
        self._bind_attempts = 0
        self._last_bind_attempt = float("-inf")
        self._closing = False
        self._redundant_sends = 0  # append entries not sent: their stream carries them
        self._trimmed_sends = 0  # append entries sent without the entries the stream carries
        self._destroy_deferred = False  # destroy() was called from inside the event loop
        self._destroyed = False
        self.bound_port: int | None = None
        """The port the server listens on, once bound."""
        if self._ready:
            self._bind_over.set()
        try:
            self._tickloop.attach(syncObj._poller)
            syncObj.addOnTickCallback(self._on_tick)
            self._ticking = True
            self._monitor.start(self._loop)
            for make in factories:
                self._services.append(make(_Context(self)))
            self._tickloop.run_until_complete(self._start_services(), timeout=10.0)
            for node in otherNodes:
                self.addNode(node)
        except BaseException:
            self.destroy()  # release what started (monitor, services, streams)
            raise

    # -- PySyncObj's Transport contract ----------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the server is bound (always True on a read-only node)."""
        return self._ready

    def tryGetReady(self) -> None:
        """Bind the server unless bound, following SyncObjConf's bind retry settings.

        Raises TransportNotReadyError once ``maxBindRetries`` attempts failed.
        """
        if self._ready or self._destroyed:
            return
        now = time.monotonic()
        if now < self._last_bind_attempt + self._conf.bindRetryTime:
            return
        self._last_bind_attempt = now
        try:
            self._bind()
        except Exception as exc:
            self._bind_attempts += 1
            logger.warning(
                "raftgrpc: cannot listen (attempt %d): %s",
                self._bind_attempts,
                exc,
                extra={"event": "server.bind_failed", "attempt": self._bind_attempts},
            )
            if self._conf.maxBindRetries and self._bind_attempts >= self._conf.maxBindRetries:
                self._bind_over.set()
                raise TransportNotReadyError from exc
        else:
            self._ready = True
            self._bind_over.set()

    def waitReady(self) -> None:
        """Block until the server is bound; TransportNotReadyError if binding gave up."""
        self._bind_over.wait()
        if not self._ready:
            raise TransportNotReadyError

    def addNode(self, node: Any) -> None:
        """Start streaming to a new member (on membership change or at start)."""
        if self._destroyed or node in self._peers:
            return
        self._members[node.id] = node
        try:
            target = grpc_target(self._address_of(node.id))
        except Exception as exc:
            # addNode runs on the tick thread (membership changes): never raise there. The
            # member is known (it may still dial us) but cannot be dialled.
            logger.error(
                "raftgrpc: no gRPC address for %s (TransportConfig.address_of): %s",
                node.id,
                exc,
                extra={"event": "peer.no_address", "peer": node.id},
            )
            unreachable = _Peer(node, None)
            unreachable.error = PeerUnreachable(
                node.id, f"no gRPC address: {exc}", kind=UnreachableKind.NO_ADDRESS
            )
            self._peers[node] = unreachable
            return
        peer = _Peer(node, None)
        stream = PeerStream(
            peer=node,
            target=target,
            new_channel=lambda: self._dial(target),
            inbound_budget=self._config.inbound_buffer_bytes,
            hello=hello_bytes(None if self._self_node is None else self.node_id),
            expected_node_id=node.id,
            new_outbox=self._new_outbox,
            events=PeerEvents(
                established=lambda link: self._on_established(peer, link),
                lost=lambda link: self._on_lost(peer, link),
                deliver=self.deliver,
            ),
            backoff=Backoff(self._config.reconnect_initial_s, self._config.reconnect_max_s),
            monitor=self._monitor,
            frame_bytes=self._config.frame_bytes,
            handshake_timeout_s=self._config.handshake_timeout_s,
            traced=self._observer is not None,
        )
        peer.stream = stream
        self._peers[node] = peer
        stream.start(self._loop)

    def dropNode(self, node: Any) -> None:
        """Stop streaming to a member that left the cluster."""
        peer = self._peers.pop(node, None)
        if peer is None:
            peer = self._readonly.get(node)
            if peer is not None and peer.link is not None:
                peer.link.cancel()
                self._disconnected(peer, peer.link)
            return
        self._members.pop(node.id, None)
        link = peer.link
        if link is not None:
            self._disconnected(peer, link)
        if peer.stream is not None:
            peer.stream.stop()  # its task ends on the event loop; destroy() waits for it
            self._retired = [s for s in self._retired if s.alive]
            self._retired.append(peer.stream)
        inbound = self._inbound.pop(node, None)
        if inbound is not None:
            inbound.cancel()  # the former member learns at once that it is no longer heard

    def send(self, node: Any, message: Any) -> bool:
        """Queue ``message`` for ``node``; never blocks and never raises.

        Returns False if no stream to the node is established. A stream found broken here
        is reported through ``onNodeDisconnected`` before this returns, as TCPTransport does.
        """
        peer = self._peers.get(node) or self._readonly.get(node)
        if peer is None or peer.link is None or self._closing:
            return False
        link = peer.link
        if link.broken:
            self._disconnected(peer, link)
            return False
        # Entries this stream already carries, sent again after an acknowledgement set the
        # follower's nextIndex back, are not sent twice (raftgrpc._protocol.resend).
        trimmed = link.resends.filter(message, time.monotonic())
        if trimmed is None:
            self._redundant_sends += 1
            return True
        if trimmed is not message:
            self._trimmed_sends += 1
            message = trimmed
        try:
            data = self._encoder.encode(message)
        except codec.CodecError as exc:
            link.resends.forget()  # what it noted was not sent
            logger.error("raftgrpc: cannot encode a message for %s: %s", node, exc)
            return False
        if self._observer is not None:
            try:
                carrier = self._observer.on_send(node.id, message, len(data))
                if carrier is not None:
                    data = codec.with_trace(data, carrier)
            except Exception:
                logger.exception("raftgrpc: the frame observer failed; sending untraced")
        if len(data) > self._max_item_bytes:
            # gRPC would refuse the frame and reset the stream each time SyncObj resends it.
            link.resends.forget()
            logger.error(
                "raftgrpc: dropping a %s message of %d bytes for %s: above max_message_bytes",
                message.get("type"),
                len(data),
                node,
            )
            return False
        refusal = self._enqueue(node, link, data, message.get("serialized") is not None)
        if refusal is None:
            link.kick()  # its writer runs in this tick's run of the event loop
            return True
        peer.reset = PeerUnreachable(
            node.id, refusal, None, time.monotonic(), kind=UnreachableKind.RESET
        )
        link.cancel()
        self._disconnected(peer, link)
        return False

    def _enqueue(self, node: Any, link: Link, data: bytes, snapshot_chunk: bool) -> str | None:
        """Queue ``data`` on ``link``; or say (and log) why the stream must be reset instead:
        its queue is full, or its head is stale (TransportConfig.queue_max_age_s; snapshot
        chunks never go stale)."""
        outbox = link.outbox
        now = time.monotonic()
        try:
            queued = outbox.put(data, math.inf if snapshot_chunk else now)
        except OSError as exc:
            logger.error("raftgrpc: cannot spill the send queue for %s: %s", node, exc)
            return f"cannot spill the send queue: {exc}"
        if not queued:
            if not link.broken:
                logger.warning(
                    "raftgrpc: send queue for %s is full (%d bytes spilled); resetting the stream",
                    node,
                    outbox.spilled_bytes_total,
                    extra={
                        "event": "stream.queue_overflow",
                        "peer": node.id,
                        "spilled_bytes": outbox.spilled_bytes_total,
                    },
                )
            return "send queue full"
        age, limit = now - outbox.head_stamp, self._config.queue_max_age_s
        if limit and age > limit:
            logger.warning(
                "raftgrpc: send queue for %s holds messages %.1f s old (%d queued): the peer "
                "takes them slower than this node sends; resetting the stream",
                node,
                age,
                len(outbox),
                extra={"event": "stream.queue_stale", "peer": node.id, "age_s": round(age, 1)},
            )
            return f"send queue stale ({age:.1f} s)"
        return None

    def destroy(self) -> None:
        """Close every stream, stop the server, and release ports and threads.

        Runs the transport's event loop on the calling thread until everything is closed
        (the tick thread, when SyncObj destroys it; call it yourself only when SyncObj does
        not tick concurrently)."""
        if self._closing:
            return
        if self._tickloop.owns_current_thread():
            # From a SyncObj callback that runs inside this transport's event loop (a message
            # it delivers: with autoTick off, SyncObj.destroy() runs right there). The loop
            # cannot be run to its end from inside it, nor tick callbacks changed while
            # SyncObj runs them: finish when the poller next returns, which it does at once
            # (as long as the node is still ticked).
            if not self._destroy_deferred:
                self._destroy_deferred = True
                self.begin_shutdown()
                self._tickloop.before_poll_run = self.destroy
                self._tickloop.wake()
            return
        self._closing = True
        self.begin_shutdown()
        try:
            self._tickloop.run_until_complete(
                self._shutdown(), timeout=2 * self._config.shutdown_grace_s + 10.0
            )
        except Exception:
            logger.exception("raftgrpc: error while destroying the transport")
        finally:
            self._tickloop.close()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._bind_over.set()

    async def _start_services(self) -> None:
        """What services start on the event loop before the node ticks (their ``start()``,
        if they have one: the health service binds its separate port)."""
        for service in self._services:
            start = getattr(service, "start", None)
            if start is not None:
                await start()

    async def _shutdown(self) -> None:
        grace = self._config.shutdown_grace_s
        # Still delivering while queued frames leave: a stream whose reader stopped would
        # be cancelled, queue and all.
        await self._drain_outboxes(grace)
        self._destroyed = True
        drop_callbacks(self)
        if self._ticking:
            self._ticking = False
            self._syncobj.removeOnTickCallback(self._on_tick)
        streams = [p.stream for p in self._peers.values() if p.stream is not None]
        streams += self._retired
        for stream in streams:
            stream.stop()
        # End accepted streams first: their handlers then return at once instead of holding
        # server.stop() for the whole grace period.
        self._servicer.close_all()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
        if streams:
            await asyncio.wait(
                [asyncio.ensure_future(s.wait_stopped()) for s in streams], timeout=5.0
            )
        self._monitor.stop()
        for service in self._services:
            closing = guarded(logger, service.close, "closing a service")
            if asyncio.iscoroutine(closing) or isinstance(closing, asyncio.Future):
                try:
                    await asyncio.wait_for(closing, 5.0)
                except Exception:
                    logger.exception("raftgrpc: error while closing a service")
        for close in self._middleware.on_close:
            guarded(logger, close, "closing middleware")
        self._peers.clear()
        self._readonly.clear()
        self._members.clear()
        self._inbound.clear()
        self._retired.clear()
        self._deferred.clear()

    def begin_shutdown(self) -> None:
        """Tell the node's services that it is shutting down (health: NOT_SERVING) before
        ``destroy()`` does; any thread. :func:`raftgrpc.graceful_shutdown` calls it."""
        if self._services_closing:
            return
        self._services_closing = True
        for service in self._services:
            guarded(logger, service.on_closing, "closing a service")

    # -- introspection ------------------------------------------------------------------------

    @property
    def listen_target(self) -> str | None:
        """The ``host:port`` this node listens on (None on a read-only node)."""
        return self._listen_target

    def peer_error(self, node: Any) -> PeerUnreachable | None:
        """Why there is no stream to ``node`` (None when one is established); tick thread.

        :class:`raftgrpc.MigrationTransport` hands this to its ``should_fallback``.
        """
        peer = self._peers.get(node)
        if peer is None:
            node_id = getattr(node, "id", str(node))
            return PeerUnreachable(node_id, "not a member", kind=UnreachableKind.NOT_A_MEMBER)
        if peer.link is not None:
            return None
        if peer.error is not None:
            return peer.error
        failure = peer.stream.last_failure if peer.stream is not None else None
        reset = peer.reset
        if reset is not None and (failure is None or failure[1] == grpc.StatusCode.CANCELLED):
            return reset  # this node reset the stream (the cancel is its doing), not redialled yet
        if failure is None:
            return PeerUnreachable(
                node.id, "no stream established yet", kind=UnreachableKind.NOT_DIALLED
            )
        kind, code, reason, failed_at = failure
        return PeerUnreachable(node.id, reason, code, failed_at, kind=kind)

    def heard_reply(self, node: Any, message: dict[str, Any]) -> None:
        """Tell the stream to ``node`` what ``node`` answered (a ``next_node_idx``; tick
        thread): a reset lets what the stream carried be sent again, a success keeps it
        trusted (:mod:`raftgrpc._protocol.resend`)."""
        if message.get("reset"):
            self.forget_sent(node)  # the follower lacks what we sent it, or refused it
        elif message.get("success") and (link := self._link_to(node)) is not None:
            link.resends.confirmed(time.monotonic())

    def forget_sent(self, node: Any) -> None:
        """Let the entries the stream to ``node`` carried be sent on it again (tick thread):
        the node may lack them (:mod:`raftgrpc._protocol.resend`)."""
        link = self._link_to(node)
        if link is not None:
            link.resends.forget()

    def _link_to(self, node: Any) -> Link | None:
        """The stream to ``node`` (a member or a read-only follower), if one is up."""
        peer = self._peers.get(node) or self._readonly.get(node)
        return None if peer is None else peer.link

    def redial(self, node: Any) -> None:
        """Dial ``node`` now if no stream to it is established, instead of when the current
        backoff ends (the peer is known to be back); any thread."""
        if not self._tickloop.owns_current_thread():
            self._tickloop.post(lambda: self.redial(node))  # on the loop, whoever runs it
            return
        peer = self._peers.get(node)
        if peer is not None and peer.link is None and peer.stream is not None:
            peer.stream.redial_now()

    @property
    def services(self) -> tuple[Any, ...]:
        """The node's services (:mod:`raftgrpc._transport.services`), the default health service
        first."""
        return tuple(self._services)

    def stats(self) -> dict[str, int]:
        """Counters for tests and monitoring (bytes are encoded message bytes)."""
        peers = list(self._peers.values())  # a copy: this may run on any thread
        return {
            "outbound_memory_bytes": self.outbound_meter.current,
            "peak_outbound_memory_bytes": self.outbound_meter.peak,
            "inbound_buffered_bytes": self._inbound_meter.current,
            "peak_inbound_buffered_bytes": self._inbound_meter.peak,
            "connected_peers": sum(1 for p in peers if p.link is not None),
            "readonly_peers": len(self._readonly),
            "redundant_sends_dropped": self._redundant_sends,
            "redundant_sends_trimmed": self._trimmed_sends,
        }

    # -- InboundSink, called by the servicer on the event loop (the tick thread) -------------

    def accept_member(self, node_id: str) -> Any | None:
        """The member whose id is ``node_id``, or None."""
        return self._members.get(node_id)

    def open_inbound(self, peer: Any | None, cancel: Any = None) -> Link:
        """Register an inbound stream; ``peer`` None is a new read-only follower. ``cancel``
        ends the stream's RPC: set before the tick thread can refuse the link."""
        link = Link(
            Node(str(next(self._readonly_ids))) if peer is None else peer, self._new_outbox()
        )
        if cancel is not None:
            link.set_canceller(cancel)
        if peer is None:
            self._on_readonly_open(link)
        else:
            self._on_inbound_open(link)
        return link

    def close_inbound(self, link: Link) -> None:
        """An inbound stream ended."""
        link.break_()
        self._on_inbound_close(link)

    def deliver(
        self,
        link: Link,
        messages: list[dict[str, Any]],
        nbytes: int,
        carriers: list[dict[str, str] | None] | None = None,
    ) -> bool:
        """Hand messages received on ``link`` to SyncObj, now (event loop, tick thread);
        False once the link is no longer wanted.

        ``nbytes`` is the estimated memory of the decoded messages; ``carriers`` their trace
        contexts, if any carries one.
        """
        if link.broken or self._destroyed:
            return False
        meter = self._inbound_meter
        meter.add(nbytes)
        try:
            # In a context of its own: the stream's coroutine runs in its RPC's context, where
            # the tracing layer's span for the whole stream is current; SyncObj's reactions
            # to a message must not be taken for a traced message's (FrameTracer.on_send).
            with self._tickloop.calling_syncobj():
                contextvars.Context().run(self._deliver, link, messages, carriers)
        finally:
            meter.sub(nbytes)
        self._tickloop.note_syncobj_work()
        return not link.broken

    # -- tick thread ---------------------------------------------------------------------------

    def _on_tick(self) -> None:
        # SyncObj runs its Raft logic (append-entries rounds included) before its tick
        # callbacks: when the previous tick's callbacks ran after a deferred link's due
        # time, this tick's round started after it too, and saw the peer disconnected.
        if self._destroy_deferred:
            return  # destroy() finishes from the poller, outside SyncObj's tick callbacks
        previous, self._last_tick_at = self._last_tick_at, time.monotonic()
        for service in self._services:
            guarded(logger, service.on_tick, "ticking a service")
        if self._deferred and any(d[0] <= previous for d in self._deferred):
            due = [d for d in self._deferred if d[0] <= previous]
            self._deferred = [d for d in self._deferred if d[0] > previous]
            for _, peer, link in due:
                guarded(logger, functools.partial(self._report_connected, peer, link), "connecting")
        # What SyncObj's tick queued (append entries, votes, replies) is written now; what
        # has arrived since the last poll is delivered.
        self._tickloop.run_from_tick()

    def _deliver(
        self,
        link: Link,
        messages: list[dict[str, Any]],
        carriers: list[dict[str, str] | None] | None,
    ) -> None:
        node = link.peer
        if self._inbound.get(node) is not link:
            # Superseded by a newer stream from this peer, or from a node that is no longer
            # a member: end it, so the sender learns that these messages were not taken.
            link.cancel()
            return
        if node in self._readonly and not _READONLY_SENDS.issuperset(
            m.get("type") for m in messages
        ):
            # A read-only Hello binds no identity: whoever holds any valid credential may
            # open one. Only what a read-only follower sends is taken: acknowledgements, and
            # commands it forwards (which the leader appends like any client's, membership
            # changes included). Votes, entries and timeout_now, which would move the term
            # or overwrite the log as if from a voter, are refused with their stream.
            kinds = sorted({str(m.get("type")) for m in messages} - _READONLY_SENDS)
            logger.warning(
                "raftgrpc: closing read-only stream %s: it sent %s",
                node,
                ", ".join(kinds),
                extra={"event": "stream.refused", "peer": str(node), "reason": "read-only sender"},
            )
            link.cancel()
            return
        for message in messages:
            if message["type"] == "next_node_idx":
                self.heard_reply(node, message)
        if carriers is not None and self._observer is not None:
            self._deliver_traced(node, messages, carriers)
            return
        for message in messages:
            try:
                self._onMessageReceived(node, message)
            except Exception:
                _log_syncobj_failure(message)

    def _deliver_traced(
        self,
        node: Any,
        messages: list[dict[str, Any]],
        carriers: list[dict[str, str] | None],
    ) -> None:
        observer = self._observer
        assert observer is not None
        for message, carrier in zip(messages, carriers, strict=True):
            if carrier is None:  # most messages of a frame that carries some trace context
                try:
                    self._onMessageReceived(node, message)
                except Exception:
                    _log_syncobj_failure(message)
                continue
            try:
                span = observer.on_receive(node.id, message, carrier, 0)
                span.__enter__()
            except Exception:
                logger.exception("raftgrpc: the frame observer failed; delivering untraced")
                span = None
            error: Exception | None = None
            try:
                self._onMessageReceived(node, message)
            except Exception as exc:
                _log_syncobj_failure(message)
                error = exc
            if span is not None:
                try:
                    span.__exit__(type(error) if error else None, error, None)
                except Exception:
                    logger.exception("raftgrpc: the frame observer failed to end a span")

    def _on_established(self, peer: _Peer, link: Link) -> None:
        if self._destroyed or self._peers.get(peer.node) is not peer or link.broken:
            return
        if self._self_node is None:
            # A read-only node hears back on the stream it opened.
            self._inbound[peer.node] = link
        # SyncObj cancels a chunked transfer (a snapshot) only if it sees the peer
        # disconnected when an append-entries round starts. Reporting a redialled stream
        # before such a round would let the transfer continue mid-way on the new stream,
        # where the receiver drops it (raftgrpc._protocol.chunks) and it must start over. So after a
        # loss, the next stream is reported from _on_tick, two periods on at the earliest.
        if peer.lost_at > float("-inf"):
            self._deferred.append((peer.lost_at + self._conf.appendEntriesPeriod * 2, peer, link))
            return
        self._report_connected(peer, link)

    def _report_connected(self, peer: _Peer, link: Link) -> None:
        if self._destroyed or self._peers.get(peer.node) is not peer or link.broken:
            return
        peer.link = link
        peer.reset = None
        self._tickloop.note_syncobj_work()
        with self._tickloop.calling_syncobj():
            self._onNodeConnected(peer.node)

    def _on_lost(self, peer: _Peer, link: Link) -> None:
        self._disconnected(peer, link)

    def _on_inbound_open(self, link: Link) -> None:
        # Registered even if the stream has ended since: what it delivered before its end
        # is queued behind this and is a valid prefix; its close event unregisters it.
        if not self._destroyed and self._members.get(link.peer.id) is link.peer:
            self._inbound[link.peer] = link
            # The peer dialled us, so it is up: dial it back now rather than when a backoff
            # (up to reconnect_max_s) ends, or it may time out waiting for the leader's
            # heartbeats and start an election that deposes a healthy leader.
            self.redial(link.peer)
        else:
            link.cancel()  # no longer a member (dropNode raced with the handshake)

    def _on_readonly_open(self, link: Link) -> None:
        if self._destroyed or link.broken:
            link.break_()
            return
        peer = _Peer(link.peer, None)
        peer.link = link
        self._readonly[link.peer] = peer
        self._inbound[link.peer] = link
        self._tickloop.note_syncobj_work()
        with self._tickloop.calling_syncobj():
            self._onReadonlyNodeConnected(link.peer)

    def _on_inbound_close(self, link: Link) -> None:
        node = link.peer
        if self._inbound.get(node) is link:
            del self._inbound[node]
        peer = self._readonly.get(node)
        if peer is not None:
            self._disconnected(peer, link)

    def _disconnected(self, peer: _Peer, link: Link) -> None:
        """Report the end of ``link`` to SyncObj, once, if it is the peer's current link."""
        if peer.link is not link:
            return
        peer.link = None
        peer.lost_at = time.monotonic()
        self._tickloop.note_syncobj_work()
        node = peer.node
        if self._inbound.get(node) is link:
            del self._inbound[node]
        with self._tickloop.calling_syncobj():
            if self._readonly.get(node) is peer:
                del self._readonly[node]
                self._onReadonlyNodeDisconnected(node)
            else:
                self._onNodeDisconnected(node)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _pulse_interval_s(self) -> float:
        return self._config.liveness_timeout_s / 3

    async def _drain_outboxes(self, grace_s: float) -> None:
        """Give what is queued for peers up to ``grace_s`` to leave (graceful shutdown)."""
        deadline = time.monotonic() + grace_s
        links = [p.link for p in [*self._peers.values(), *self._readonly.values()]]
        pending = [link for link in links if link is not None and not link.broken]
        while pending and time.monotonic() < deadline:
            pending = [link for link in pending if len(link.outbox) and not link.broken]
            if pending:
                await asyncio.sleep(0.005)

    @property
    def _max_item_bytes(self) -> int:
        # Room for the frame envelope around one encoded message.
        return self._config.max_message_bytes - 1024

    def _new_outbox(self) -> Outbox:
        return Outbox(
            self._config.queue_memory_bytes, self._config.queue_spool_bytes, self.outbound_meter
        )

    def _bind(self) -> None:
        assert self._listen_target is not None  # read-only nodes never bind
        target = self._listen_target
        if self._executor is None:
            # Runs the handlers of user services written for grpcio's synchronous API; no
            # thread starts unless one is called (raftgrpc's own handlers are coroutines).
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="raftgrpc-sync-handler"
            )
        serving = self._tickloop.run_until_complete(
            start_server(
                target,
                handlers=[
                    self._servicer.handler(),
                    *(h for service in self._services for h in service.handlers()),
                ],
                interceptors=self._middleware.server_interceptors,
                options=self._server_options(),
                max_concurrent_rpcs=self._config.max_concurrent_streams,
                credentials=self._middleware.server_credentials,
                executor=self._executor,
            ),
            timeout=10.0,
        )
        self._server = serving.server
        self.bound_port = serving.port
        logger.info(
            "raftgrpc: node %s listening on %s",
            self.node_id,
            target,
            extra={"event": "server.listening", "node": self.node_id, "address": target},
        )

    def _listen_address(self, node: Any) -> str:
        if self._config.listen_address:
            return grpc_target(self._config.listen_address)
        bind = self._syncobj_conf_bind
        try:
            mapped = self._address_of(node.id)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"TransportConfig.address_of failed on {node.id!r}: {exc}") from exc
        if bind is None or self._address_of is _same_address:
            return grpc_target(bind or mapped)
        # SyncObjConf.bindAddress names the interface; the mapping names the port.
        host, _ = split_host_port(bind)
        return grpc_target(f"{host}:{split_host_port(mapped)[1]}")

    def _dial(self, target: str) -> grpc.aio.Channel:
        # A read-only node asks for tokens as "" and gets whatever the factory gives it.
        return dial_aio(target, self._middleware, self.node_id, self._channel_options())

    def _common_options(self) -> list[tuple[str, Any]]:
        cfg = self._config
        return [
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def _channel_options(self) -> list[tuple[str, Any]]:
        cfg = self._config
        return [
            *self._common_options(),
            # Raft messages are never retried by gRPC: PySyncObj resends from its own state.
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", int(cfg.reconnect_initial_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(cfg.reconnect_initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(cfg.reconnect_max_s * 1000)),
            # One connection per transport, even when nodes share a process (tests, demos).
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_http_proxy", int(cfg.use_http_proxy)),
        ]

    def _server_options(self) -> list[tuple[str, Any]]:
        cfg = self._config
        return [
            *self._common_options(),
            # grpcio sets SO_REUSEPORT by default: a second node would share the port silently.
            ("grpc.so_reuseport", 0),
            # Accept the clients' keepalive pings (the default allows one per 5 minutes and
            # answers faster pings with GOAWAY too_many_pings).
            ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.keepalive_time_s * 500)),
            ("grpc.http2.max_ping_strikes", 0),
            # A connection that never completes its HTTP/2 (or TLS) handshake is closed
            # after handshake_timeout_s instead of gRPC's 120 s; one without any stream
            # for connection_idle_s is closed too (clients reconnect transparently).
            ("grpc.server_handshake_timeout_ms", int(cfg.handshake_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", int(cfg.connection_idle_s * 1000)),
        ]


def _same_address(node_id: str) -> str:
    return node_id


class _Context:
    """The :class:`raftgrpc._transport.services.NodeContext` a transport gives its services."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport
        self.node_id = transport.node_id
        self.syncobj = transport._syncobj

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._transport._loop

    def run_on_tick(self, work: Any) -> bool:
        if self._transport._destroyed:
            return False
        return self._transport._tickloop.post(work)

    @property
    def ready(self) -> bool:
        return bool(self._transport.ready)

    def utility_callbacks(self) -> dict[str, Any]:
        return dict(self._transport._onUtilityMessageCallbacks)

    def stats(self) -> dict[str, int]:
        return self._transport.stats()


def _log_syncobj_failure(message: dict[str, Any]) -> None:
    """Log the exception SyncObj raised on ``message`` (called from an except block)."""
    error = sys.exc_info()[1]
    if message.get("transmission") == "finish" and _unpickling_failed(error):
        # PySyncObj labels a big entry's last few chunks 'finish'; raftgrpc._protocol.chunks
        # relabels
        # those that cannot end a pickle, and one that ends like one by chance (1 in ~256)
        # remains: SyncObj fails to unpickle there and completes the entry on a later chunk.
        logger.info(
            "raftgrpc: SyncObj could not unpickle a big entry at a chunk labelled 'finish' "
            "(expected now and then: a later chunk completes it): %s",
            error,
        )
        return
    logger.exception("raftgrpc: SyncObj failed on a %s message", message.get("type"))


def _unpickling_failed(error: BaseException | None) -> bool:
    # pysyncobj.pickle.loads retries a failed C unpickling in pure Python: the C error is
    # then the context of what the retry raised.
    while error is not None:
        if isinstance(error, pickle.UnpicklingError):
            return True
        error = error.__context__
    return False

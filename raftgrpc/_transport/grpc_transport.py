"""GrpcTransport: PySyncObj's Transport over gRPC streams."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import logging
import time
from typing import Any

import grpc
from pysyncobj.node import Node
from pysyncobj.transport import Transport

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
from raftgrpc._errors import PeerUnreachable, UnreachableKind
from raftgrpc._protocol import codec
from raftgrpc._protocol.address import grpc_target, listen_target
from raftgrpc._protocol.backoff import Backoff
from raftgrpc._protocol.encoder import BatchEncoder
from raftgrpc._protocol.handshake import hello_bytes
from raftgrpc._protocol.queue_reset import QueueResetPolicy
from raftgrpc._protocol.readonly import refused_from_readonly
from raftgrpc._protocol.reconnect_hold import ReconnectHold
from raftgrpc._pysyncobj import drop_callbacks, guarded, poller_of, utility_callbacks
from raftgrpc._transport.aio_server import Serving, start_server
from raftgrpc._transport.config import TransportConfig, check_syncobj_password
from raftgrpc._transport.delivery import deliver_each, deliver_traced
from raftgrpc._transport.hosting import HostedServices, ServiceContext
from raftgrpc._transport.inbound import RaftStreamServicer
from raftgrpc._transport.link import Link
from raftgrpc._transport.listener import Listener
from raftgrpc._transport.liveness import LivenessMonitor
from raftgrpc._transport.meter import ByteMeter
from raftgrpc._transport.middleware import Middleware, dial_aio
from raftgrpc._transport.options import channel_options, server_options
from raftgrpc._transport.outbound import OutboundEvents, OutboundStream
from raftgrpc._transport.outbox import Outbox
from raftgrpc._transport.stream_io import Carriers, Messages, StreamSetup
from raftgrpc._transport.tickloop import TickLoop

__all__ = ["GrpcTransport"]

logger = logging.getLogger("raftgrpc.transport")

_told_event_engine: list[bool] = []  # the EventEngine setting is logged once per process


class _Partner:
    """Tick-thread state of one partner node (PySyncObj's word for a peer): the stream SyncObj
    currently considers connected."""

    __slots__ = ("error", "link", "lost_at", "node", "reset", "stream")

    def __init__(self, node: Any, stream: OutboundStream | None) -> None:
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
        check_syncobj_password(
            syncObj.conf,
            tls=self._middleware.server_credentials is not None,
            call_credentials=self._middleware.call_credentials is not None,
        )
        if not _told_event_engine:
            _told_event_engine.append(True)
            logger.info(
                "raftgrpc: gRPC EventEngine %s (raftgrpc._grpcenv)",
                grpcenv.event_engine(),
                extra={"event": "grpc.event_engine", "state": grpcenv.event_engine()},
            )
        self._address_of = self._config.address_of or _same_address
        # Validated before anything starts: a mapping that fails here fails the constructor.
        self._listen_target = (
            None
            if selfNode is None
            else listen_target(
                selfNode.id,
                self._config.listen_address,
                getattr(syncObj.conf, "bindAddress", None),
                self._config.address_of,
            )
        )
        # The one clock of every time this transport keeps: its streams' silence, its
        # queues' ages, its holds and retries (raftgrpc._protocol's policies are given it).
        self._clock = time.monotonic
        self._observer = self._middleware.frame_observer
        self._syncobj = syncObj
        self._self_node = selfNode
        self.node_id: str = selfNode.id if selfNode is not None else ""
        self._members: dict[str, Any] = {}  # id -> Node; read by the servicer (on the loop)
        self._peers: dict[Any, _Partner] = {}  # members; tick thread only
        self._readonly: dict[Any, _Partner] = {}  # read-only followers; tick thread only
        self._inbound: dict[Any, Link] = {}  # peer -> stream whose messages are delivered
        self._retired: list[OutboundStream] = []
        # Streams established too soon after a disconnect (raftgrpc._protocol.reconnect_hold).
        self._hold = ReconnectHold[tuple[_Partner, Link]](syncObj.conf.appendEntriesPeriod * 2)
        self._queue_policy = QueueResetPolicy(self._config.queue_max_age_s)
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
        self._monitor = LivenessMonitor(
            self._config.liveness_timeout_s,
            self.node_id or "ro",
            clock=self._clock,
            pulse_interval=self._pulse_interval_s,
        )
        self._setup = StreamSetup(
            self._monitor,
            self._config.frame_bytes,
            self._config.handshake_timeout_s,
            traced=self._observer is not None,
            inbound_budget=self._config.inbound_buffer_bytes,
        )
        self._servicer = RaftStreamServicer(self, self._setup)
        self._hosted = HostedServices(self._config, self._middleware.services)
        self._listener = Listener(
            self.node_id,
            self._listen_target,
            self._serve,
            syncObj.conf.bindRetryTime,
            syncObj.conf.maxBindRetries,
            self._clock,
        )
        self._closing = False
        self._redundant_sends = 0  # append entries not sent: their stream carries them
        self._trimmed_sends = 0  # append entries sent without the entries the stream carries
        self._destroy_deferred = False  # destroy() was called from inside the event loop
        self._destroyed = False
        try:
            self._tickloop.attach(poller_of(syncObj))
            syncObj.addOnTickCallback(self._on_tick)
            self._ticking = True
            self._monitor.start(self._loop)
            self._hosted.make(self._service_context())
            self._tickloop.run_until_complete(self._hosted.start(), timeout=10.0)
            for node in otherNodes:
                self.addNode(node)
        except BaseException:
            self.destroy()  # release what started (monitor, services, streams)
            raise

    # -- PySyncObj's Transport contract ----------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the server is bound (always True on a read-only node)."""
        return self._listener.ready

    def tryGetReady(self) -> None:
        """Bind the server unless bound, following SyncObjConf's bind retry settings.

        Raises TransportNotReadyError once ``maxBindRetries`` attempts failed.
        """
        if not self._destroyed:
            self._listener.try_bind()

    def waitReady(self) -> None:
        """Block until the server is bound; TransportNotReadyError if binding gave up."""
        self._listener.wait()

    @property
    def bound_port(self) -> int | None:
        """The port the server listens on, once bound."""
        return self._listener.port

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
            unreachable = _Partner(node, None)
            unreachable.error = PeerUnreachable(
                node.id, f"no gRPC address: {exc}", kind=UnreachableKind.NO_ADDRESS
            )
            self._peers[node] = unreachable
            return
        peer = _Partner(node, None)
        stream = OutboundStream(
            peer=node,
            target=target,
            new_channel=lambda: self._dial(target),
            hello=hello_bytes(None if self._self_node is None else self.node_id),
            expected_node_id=node.id,
            new_outbox=self._new_outbox,
            events=OutboundEvents(
                established=lambda link: self._on_established(peer, link),
                lost=lambda link: self._on_lost(peer, link),
                deliver=self.deliver,
            ),
            backoff=Backoff(self._config.reconnect_initial_s, self._config.reconnect_max_s),
            setup=self._setup,
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
        trimmed = link.resends.filter(message, self._clock())
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
            node.id, refusal, None, self._clock(), kind=UnreachableKind.RESET
        )
        link.cancel()
        self._disconnected(peer, link)
        return False

    def _enqueue(self, node: Any, link: Link, data: bytes, snapshot_chunk: bool) -> str | None:
        """Queue ``data`` on ``link``; or say (and log) why the stream must be reset instead
        (:mod:`raftgrpc._protocol.queue_reset`)."""
        outbox, policy = link.outbox, self._queue_policy
        now = self._clock()
        try:
            queued = outbox.put(data, policy.stamp(snapshot_chunk, now))
        except OSError as exc:
            logger.error("raftgrpc: cannot spill the send queue for %s: %s", node, exc)
            return f"cannot spill the send queue: {exc}"
        reset = policy.judge(queued, outbox.head_stamp, now)
        if reset is None:
            return None
        if reset.age_s is None:  # full
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
            return reset.reason
        age = reset.age_s
        logger.warning(
            "raftgrpc: send queue for %s holds messages %.1f s old (%d queued): the peer "
            "takes them slower than this node sends; resetting the stream",
            node,
            age,
            len(outbox),
            extra={"event": "stream.queue_stale", "peer": node.id, "age_s": round(age, 1)},
        )
        return reset.reason

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
            self._listener.close()

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
        await self._listener.stop(grace)
        if streams:
            await asyncio.wait(
                [asyncio.ensure_future(s.wait_stopped()) for s in streams], timeout=5.0
            )
        self._monitor.stop()
        await self._hosted.close()
        for close in self._middleware.on_close:
            guarded(logger, close, "closing middleware")
        self._peers.clear()
        self._readonly.clear()
        self._members.clear()
        self._inbound.clear()
        self._retired.clear()
        self._hold.clear()

    def begin_shutdown(self) -> None:
        """Tell the node's services that it is shutting down (health: NOT_SERVING) before
        ``destroy()`` does; any thread. :func:`raftgrpc.graceful_shutdown` calls it."""
        self._hosted.begin_closing()

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
            link.resends.confirmed(self._clock())

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
        return tuple(self._hosted)

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
        link = self._setup.new_link(
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
        self, link: Link, messages: Messages, nbytes: int, carriers: Carriers = None
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
        if self._destroy_deferred:
            return  # destroy() finishes from the poller, outside SyncObj's tick callbacks
        now = self._clock()
        self._hosted.tick()
        for peer, link in self._hold.tick(now):  # streams held since a loss, now due
            guarded(logger, functools.partial(self._report_connected, peer, link), "connecting")
        # What SyncObj's tick queued (append entries, votes, replies) is written now; what
        # has arrived since the last poll is delivered.
        self._tickloop.run_from_tick()

    def _deliver(self, link: Link, messages: Messages, carriers: Carriers) -> None:
        node = link.peer
        if self._inbound.get(node) is not link:
            # Superseded by a newer stream from this peer, or from a node that is no longer
            # a member: end it, so the sender learns that these messages were not taken.
            link.cancel()
            return
        if node in self._readonly and (kinds := refused_from_readonly(messages)):
            # Votes, entries and timeout_now from a read-only Hello, which binds no identity
            # (raftgrpc._protocol.readonly), are refused with their stream.
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
            deliver_traced(self._onMessageReceived, self._observer, node, messages, carriers)
        else:
            deliver_each(self._onMessageReceived, node, messages)

    def _on_established(self, peer: _Partner, link: Link) -> None:
        if self._destroyed or self._peers.get(peer.node) is not peer or link.broken:
            return
        if self._self_node is None:
            # A read-only node hears back on the stream it opened.
            self._inbound[peer.node] = link
        # After a loss, SyncObj must see the peer disconnected by an append-entries round
        # before the next stream is reported (raftgrpc._protocol.reconnect_hold): _on_tick
        # reports it then.
        if self._hold.admit((peer, link), peer.lost_at):
            self._report_connected(peer, link)

    def _report_connected(self, peer: _Partner, link: Link) -> None:
        if self._destroyed or self._peers.get(peer.node) is not peer or link.broken:
            return
        peer.link = link
        peer.reset = None
        self._tickloop.note_syncobj_work()
        with self._tickloop.calling_syncobj():
            self._onNodeConnected(peer.node)

    def _on_lost(self, peer: _Partner, link: Link) -> None:
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
        peer = _Partner(link.peer, None)
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

    def _disconnected(self, peer: _Partner, link: Link) -> None:
        """Report the end of ``link`` to SyncObj, once, if it is the peer's current link."""
        if peer.link is not link:
            return
        peer.link = None
        peer.lost_at = self._clock()
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
        deadline = self._clock() + grace_s
        links = [p.link for p in [*self._peers.values(), *self._readonly.values()]]
        pending = [link for link in links if link is not None and not link.broken]
        while pending and self._clock() < deadline:
            pending = [link for link in pending if len(link.outbox) and not link.broken]
            if pending:
                await asyncio.sleep(0.005)

    def _service_context(self) -> ServiceContext:
        return ServiceContext(
            self.node_id,
            self._syncobj,
            self._loop,
            run_on_tick=self._run_on_tick,
            is_ready=lambda: bool(self.ready),
            utility_callbacks=lambda: utility_callbacks(self),
            stats=self.stats,
        )

    def _run_on_tick(self, work: Any) -> bool:
        if self._destroyed:
            return False
        return self._tickloop.post(work)

    @property
    def _max_item_bytes(self) -> int:
        # Room for the frame envelope around one encoded message.
        return self._config.max_message_bytes - 1024

    def _new_outbox(self) -> Outbox:
        cfg = self._config
        return Outbox(
            cfg.queue_memory_bytes, cfg.queue_spool_bytes, self.outbound_meter, clock=self._clock
        )

    def _serve(self, executor: concurrent.futures.ThreadPoolExecutor) -> Serving:
        """Start the node's server (for raftgrpc._transport.listener): the Raft stream and
        the hosted services."""
        assert self._listen_target is not None  # read-only nodes never bind
        return self._tickloop.run_until_complete(
            start_server(
                self._listen_target,
                handlers=[self._servicer.handler(), *self._hosted.handlers()],
                interceptors=self._middleware.server_interceptors,
                options=server_options(self._config),
                max_concurrent_rpcs=self._config.max_concurrent_streams,
                credentials=self._middleware.server_credentials,
                executor=executor,
            ),
            timeout=10.0,
        )

    def _dial(self, target: str) -> grpc.aio.Channel:
        # A read-only node asks for tokens as "" and gets whatever the factory gives it.
        return dial_aio(target, self._middleware, self.node_id, channel_options(self._config))


def _same_address(node_id: str) -> str:
    return node_id

"""The server side of the Raft stream: handshake, then frames in, and out to read-only peers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from raftgrpc import codec
from raftgrpc.link import PROTOCOL_VERSION, PULSE_RESPONSE, FrameError, Link, read_frames
from raftgrpc.liveness import LivenessMonitor
from raftgrpc.v1 import transport_pb2 as pb

__all__ = [
    "SERVICE_NAME",
    "STREAM_METHOD",
    "InboundSink",
    "RaftStreamServicer",
    "claimed_node_id",
]

logger = logging.getLogger("raftgrpc.server")

SERVICE_NAME = "raftgrpc.v1.RaftTransport"
STREAM_METHOD = f"/{SERVICE_NAME}/Stream"


class InboundSink(Protocol):
    """What the servicer needs from its transport. Every method is called on gRPC threads."""

    node_id: str

    def accept_member(self, node_id: str) -> Any | None:
        """The member Node whose id is ``node_id``, or None if it is not a member."""

    def open_inbound(self, peer: Any | None, cancel: Callable[[], Any]) -> Link:
        """Register a new inbound stream from ``peer`` (None: a read-only node); ``cancel``
        ends its RPC (set on the link before anything can refuse it)."""

    def deliver(
        self,
        link: Link,
        messages: list[dict[str, Any]],
        nbytes: int,
        carriers: list[dict[str, str] | None] | None = None,
    ) -> bool:
        """Queue decoded messages for SyncObj; False once the link is no longer wanted."""

    def close_inbound(self, link: Link) -> None:
        """The inbound stream ended."""


def claimed_node_id(raw: bytes) -> str | None:
    """The node id a stream's first request claims, if it is a Hello naming a node.

    Used by the auth and mTLS layers to bind a credential to the identity a peer speaks as;
    anything else (a read-only Hello, a malformed message) claims nothing here and is judged
    by the servicer's own handshake checks.
    """
    try:
        request = pb.StreamRequest.FromString(raw)
    except DecodeError:
        return None
    if request.WhichOneof("kind") != "hello" or request.hello.WhichOneof("identity") != "node_id":
        return None
    node_id: str = request.hello.node_id
    return node_id


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, detail: str) -> NoReturn:
    logger.warning(
        "raftgrpc: refusing stream from %s: %s (%s)",
        context.peer(),
        detail,
        code.name,
        extra={
            "event": "stream.refused",
            "peer": context.peer(),
            "code": code.name,
            "reason": detail,
        },
    )
    context.abort(code, detail)
    raise AssertionError("unreachable")  # context.abort raises


class RaftStreamServicer:
    """Serves ``raftgrpc.v1.RaftTransport/Stream`` for one transport.

    Each accepted stream gets two threads: gRPC's handler thread sends (the Welcome, then
    frames to a read-only peer, or a Pulse after each idle ``pulse_interval_s``), and a reader
    thread delivers the frames the peer sends.
    """

    def __init__(
        self,
        sink: InboundSink,
        monitor: LivenessMonitor,
        frame_bytes: int,
        handshake_timeout_s: float,
        pulse_interval_s: float,
        traced: bool = False,
        inbound_budget: int = 32 * 1024 * 1024,
    ) -> None:
        self._sink = sink
        self._inbound_budget = inbound_budget
        self._traced = traced
        self._monitor = monitor
        self._frame_bytes = frame_bytes
        self._handshake_timeout_s = handshake_timeout_s
        self._pulse_interval_s = pulse_interval_s
        self._active: set[Link] = set()
        self._active_lock = threading.Lock()
        self._welcome = pb.StreamResponse(
            welcome=pb.Welcome(protocol_version=PROTOCOL_VERSION, node_id=sink.node_id)
        ).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        """The generic handler to add to a ``grpc.Server``; frames travel as raw bytes."""
        method = grpc.stream_stream_rpc_method_handler(self.stream)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Stream": method})

    def close_all(self) -> None:
        """End every accepted stream (their handlers return at once)."""
        with self._active_lock:
            links = list(self._active)
        for link in links:
            link.break_()

    def stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """One inbound stream: Hello, Welcome, then frames until either side ends it."""
        # Each stream holds a server thread: one that never says Hello must not hold it forever.
        # The peer is read now: once the call is cancelled, context.peer() returns "".
        remote = context.peer()
        timed_out = threading.Event()
        cancel: Callable[[], Any] = context.cancel

        def expire() -> None:
            timed_out.set()
            cancel()

        watchdog = threading.Timer(self._handshake_timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            raw = next(requests)
        except (StopIteration, grpc.RpcError):
            # Cancelled by the watchdog or by gRPC, the request iterator may end
            # (StopIteration) rather than raise, depending on which of gRPC's events it sees
            # first: either way the stream is over.
            if timed_out.is_set():
                logger.warning(
                    "raftgrpc: no Hello from %s in time, stream cancelled",
                    remote,
                    extra={"event": "stream.handshake_timeout", "peer": remote},
                )
            else:
                logger.info(
                    "raftgrpc: stream from %s ended before its Hello: closed or cancelled by "
                    "the peer, disconnected, or refused by gRPC (a message above "
                    "max_message_bytes: RESOURCE_EXHAUSTED)",
                    remote,
                    extra={"event": "stream.ended", "peer": remote, "reason": "before Hello"},
                )
            return
        finally:
            watchdog.cancel()
        peer = self._handshake(raw, context)
        link = self._sink.open_inbound(peer, context.cancel)
        failure: list[str] = []
        reader = threading.Thread(
            target=self._read,
            args=(requests, link, failure),
            name="raftgrpc-stream-reader",
            daemon=True,
        )
        with self._active_lock:
            self._active.add(link)
        try:
            yield self._welcome
            self._monitor.watch(link)
            reader.start()
            outbox = link.outbox
            while True:
                items = outbox.take(self._frame_bytes, self._pulse_interval_s)
                if items:
                    yield codec.response_frame_bytes(items)
                elif outbox.closed:
                    break
                else:
                    yield PULSE_RESPONSE
        finally:
            self._monitor.unwatch(link)
            with self._active_lock:
                self._active.discard(link)
            link.break_()
            self._sink.close_inbound(link)
        # The reader records a failure before it breaks the link, so it is visible here.
        if failure:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, failure[0])

    def _handshake(self, raw: bytes, context: grpc.ServicerContext) -> Any | None:
        try:
            request = pb.StreamRequest.FromString(raw)
        except DecodeError:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed Hello")
        if request.WhichOneof("kind") != "hello":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        hello = request.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"unsupported protocol version {hello.protocol_version}, "
                f"this node speaks {PROTOCOL_VERSION}",
            )
        identity = hello.WhichOneof("identity")
        if identity == "read_only":
            return None
        if identity != "node_id":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Hello names no node")
        member = self._sink.accept_member(hello.node_id)
        if member is None:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {hello.node_id[:200]!r} is not a member of this cluster",
            )
        return member

    def _read(self, requests: Iterator[bytes], link: Link, failure: list[str]) -> None:
        try:
            read_frames(
                link,
                requests,
                pb.StreamRequest.FromString,
                lambda messages, nbytes, carriers: self._sink.deliver(
                    link, messages, nbytes, carriers
                ),
                traced=self._traced,
                inbound_budget=self._inbound_budget,
            )
        except FrameError as exc:
            failure.append(str(exc))
        except grpc.RpcError as exc:
            self._log_ended(link, str(exc))
        except Exception as exc:
            # A layer that ends the call while reading (the auth layer aborts a stream whose
            # token expired) raises from the request iterator; the call already has its
            # status, so the stream just ends here.
            logger.info(
                "raftgrpc: stream from %s ended by a layer: %s",
                link.peer,
                exc,
                extra={"event": "stream.ended", "peer": str(link.peer), "link": link.id},
            )
        else:
            # The requests ended: the peer closed its side, or gRPC ended the call (cancelled,
            # it may end the request iterator rather than raise).
            self._log_ended(link, "")
        finally:
            link.break_()

    @staticmethod
    def _log_ended(link: Link, error: str) -> None:
        # Unless this node broke the link itself: the peer went away, the stream was
        # cancelled, or gRPC refused a message (one above max_message_bytes ends the stream
        # with RESOURCE_EXHAUSTED). gRPC's server-side RpcError carries no status.
        if link.broken:
            return
        logger.info(
            "raftgrpc: stream from %s ended: closed or cancelled by the peer, disconnected, or "
            "refused by gRPC (a message above max_message_bytes: RESOURCE_EXHAUSTED)%s",
            link.peer,
            f": {error}" if error else "",
            extra={
                "event": "stream.ended",
                "peer": str(link.peer),
                "link": link.id,
                "reason": "ended by the peer or gRPC",
            },
        )

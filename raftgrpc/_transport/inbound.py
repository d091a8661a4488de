"""The server side of the Raft stream: handshake, then frames in, and out to read-only peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Protocol

import grpc

from raftgrpc._protocol import codec
from raftgrpc._protocol.frames import PULSE_RESPONSE, FrameError
from raftgrpc._protocol.handshake import (
    HelloFailure,
    ReadOnlyHello,
    claimed_node_id,
    judge_hello,
    not_a_member,
    welcome_bytes,
)
from raftgrpc._transport.link import Link
from raftgrpc._transport.stream_io import Carriers, Messages, StreamSetup, outgoing, read_into
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
    """What the servicer needs from its transport. Called on the event loop's thread (the
    tick thread)."""

    node_id: str

    def accept_member(self, node_id: str) -> Any | None:
        """The member Node whose id is ``node_id``, or None if it is not a member."""

    def open_inbound(self, peer: Any | None, cancel: Callable[[], Any]) -> Link:
        """Register a new inbound stream from ``peer`` (None: a read-only node); ``cancel``
        ends its RPC (set on the link before anything can refuse it)."""

    def deliver(self, link: Link, messages: Messages, nbytes: int, carriers: Carriers) -> bool:
        """Hand decoded messages to SyncObj; False once the link is no longer wanted
        (:data:`raftgrpc._transport.stream_io.Deliver`)."""

    def close_inbound(self, link: Link) -> None:
        """The inbound stream ended."""


def _log_refusal(remote: str, code: grpc.StatusCode, detail: str) -> None:
    logger.warning(
        "raftgrpc: refusing stream from %s: %s (%s)",
        remote,
        detail,
        code.name,
        extra={"event": "stream.refused", "peer": remote, "code": code.name, "reason": detail},
    )


class _Ending:
    """How an accepted stream ends, decided by whoever ends it first."""

    __slots__ = ("cancelled", "failure", "layer_ended")

    def __init__(self) -> None:
        self.cancelled = False  # this node cancelled it (link.cancel())
        self.failure: str | None = None  # the peer sent something that is not a frame
        self.layer_ended = False  # a server layer ended the call while reading (its status)


class RaftStreamServicer:
    """Serves ``raftgrpc.v1.RaftTransport/Stream`` for one transport, on its event loop.

    Each accepted stream is one coroutine (an async generator: the form every ``grpc.aio``
    server interceptor can wrap) that sends the Welcome, then frames to a read-only peer
    and Pulses when it has been quiet; a task beside it reads the frames the peer sends and
    hands them to the transport, on the same thread.
    """

    def __init__(self, sink: InboundSink, setup: StreamSetup) -> None:
        self._sink = sink
        self._setup = setup
        self._monitor = setup.monitor
        self._active: set[Link] = set()
        self._welcome = welcome_bytes(sink.node_id)

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        """The generic handler to add to a ``grpc.aio`` server; frames travel as raw bytes."""
        method = grpc.stream_stream_rpc_method_handler(self.stream)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Stream": method})

    def close_all(self) -> None:
        """End every accepted stream (their handlers return at once)."""
        for link in list(self._active):
            link.break_()

    async def stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """One inbound stream: Hello, Welcome, then frames until either side ends it."""
        # The peer is read now: once the call is cancelled, context.peer() returns "".
        remote = context.peer()
        try:
            # A stream that never says Hello must not be held open forever.
            raw = await asyncio.wait_for(requests.__anext__(), self._setup.handshake_timeout_s)
        except asyncio.TimeoutError:
            logger.warning(
                "raftgrpc: no Hello from %s in time, stream cancelled",
                remote,
                extra={"event": "stream.handshake_timeout", "peer": remote},
            )
            await context.abort(grpc.StatusCode.CANCELLED, "no Hello in time")
            return
        except StopAsyncIteration:
            logger.info(
                "raftgrpc: stream from %s ended before its Hello: closed or cancelled by "
                "the peer, disconnected, or refused by gRPC (a message above "
                "max_message_bytes: RESOURCE_EXHAUSTED)",
                remote,
                extra={"event": "stream.ended", "peer": remote, "reason": "before Hello"},
            )
            return
        judged = judge_hello(raw)
        if isinstance(judged, HelloFailure):
            _log_refusal(remote, judged.code, judged.detail)
            await context.abort(judged.code, judged.detail)
            return
        peer: Any | None = None
        if not isinstance(judged, ReadOnlyHello):
            peer = self._sink.accept_member(judged)
            if peer is None:
                refusal = not_a_member(judged)
                _log_refusal(remote, refusal.code, refusal.detail)
                await context.abort(refusal.code, refusal.detail)
                return
        ending = _Ending()

        def cancel() -> None:
            ending.cancelled = True

        link = self._sink.open_inbound(peer, cancel)
        self._active.add(link)
        reader: asyncio.Task[None] | None = None
        try:
            yield self._welcome
            self._monitor.watch(link)
            reader = asyncio.get_running_loop().create_task(self._read(requests, link, ending))
            # Frames queued for a read-only peer, and Pulses; until the link breaks.
            responses = outgoing(link, self._setup, codec.response_frame_bytes, PULSE_RESPONSE)
            async with aclosing(responses):
                async for response in responses:
                    yield response
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
            self._monitor.unwatch(link)
            self._active.discard(link)
            link.break_()
            self._sink.close_inbound(link)
        if ending.layer_ended:
            return  # the layer has ended the call with its own status
        if ending.failure is not None:
            _log_refusal(remote, grpc.StatusCode.INVALID_ARGUMENT, ending.failure)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ending.failure)
        elif ending.cancelled:
            await context.abort(grpc.StatusCode.CANCELLED, "Cancelled")

    async def _read(self, requests: AsyncIterator[bytes], link: Link, ending: _Ending) -> None:
        reader = self._setup.frame_reader(pb.StreamRequest.FromString)
        try:
            if await read_into(link, requests.__anext__, reader, self._sink.deliver):
                # The peer closed its side, or gRPC ended the call.
                self._log_ended(link, "")
        except FrameError as exc:
            ending.failure = str(exc)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._log_ended(link, str(exc))
        except Exception as exc:
            # A layer that ends the call while reading (the auth layer aborts a stream whose
            # token expired) raises from the request iterator; the call already has its
            # status, so the stream just ends here.
            ending.layer_ended = True
            logger.info(
                "raftgrpc: stream from %s ended by a layer: %s",
                link.peer,
                exc,
                extra={"event": "stream.ended", "peer": str(link.peer), "link": link.id},
            )
        finally:
            link.break_()

    @staticmethod
    def _log_ended(link: Link, error: str) -> None:
        # Unless this node broke the link itself: the peer went away, the stream was
        # cancelled, or gRPC refused a message (one above max_message_bytes ends the stream
        # with RESOURCE_EXHAUSTED).
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

"""The client side: one coroutine per peer that dials, holds and redials its stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import grpc

from raftgrpc._errors import UnreachableKind, status_kind
from raftgrpc._protocol import codec
from raftgrpc._protocol.backoff import Backoff
from raftgrpc._protocol.failures import stream_failure_level
from raftgrpc._protocol.frames import PULSE_REQUEST, FrameError
from raftgrpc._protocol.handshake import WelcomeFailure, judge_welcome
from raftgrpc._transport.inbound import STREAM_METHOD
from raftgrpc._transport.link import Link
from raftgrpc._transport.outbox import Outbox
from raftgrpc._transport.stream_io import Deliver, StreamSetup, outgoing, read_into
from raftgrpc.v1 import transport_pb2 as pb

__all__ = ["OutboundEvents", "OutboundStream"]

logger = logging.getLogger("raftgrpc.peer")

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what read() returns at a stream's end


class OutboundEvents:
    """What an :class:`OutboundStream` reports to its transport (on the event loop's thread)."""

    def __init__(
        self, established: Callable[[Link], None], lost: Callable[[Link], None], deliver: Deliver
    ) -> None:
        self.established = established
        self.lost = lost
        self.deliver = deliver


class OutboundStream:
    """Keeps one outbound stream to a peer open, redialling with backoff.

    Each successful handshake yields a fresh :class:`~raftgrpc._transport.link.Link` with its own
    outbox, reported through ``events.established``; its end is reported through
    ``events.lost`` before the next dial starts. The transport reports the next stream to
    PySyncObj no sooner than two append-entries periods after the loss, so SyncObj sees the
    disconnect and restarts any chunked transfer.

    Everything runs on the transport's event loop: :meth:`start`, :meth:`stop` and
    :meth:`redial_now` are called on its thread (the tick thread).
    """

    def __init__(
        self,
        peer: Any,
        target: str,
        new_channel: Callable[[], grpc.aio.Channel],
        hello: bytes,
        expected_node_id: str | None,
        new_outbox: Callable[[], Outbox],
        events: OutboundEvents,
        backoff: Backoff,
        setup: StreamSetup,
    ) -> None:
        self.peer = peer
        self.target = target
        self._new_channel = new_channel
        self._channel: grpc.aio.Channel | None = None
        self._renew = False
        self._hello = hello
        self._expected_node_id = expected_node_id
        self._new_outbox = new_outbox
        self._events = events
        self._backoff = backoff
        self._setup = setup
        self._monitor = setup.monitor
        self._stopped = False
        self._waker: asyncio.Future[None] | None = None
        self._current: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_failure: tuple[UnreachableKind, grpc.StatusCode | None, str, float] | None = None
        """Why the last attempt ended without a stream (kind, status code or None, reason,
        monotonic time); None while a stream is established or before an attempt ended."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start dialling (the first attempt runs when the loop next runs)."""
        self._task = loop.create_task(self._run(), name=f"raftgrpc-peer-{self.target}")

    def stop(self) -> None:
        """Stop dialling and end the current stream; the channel closes as the task ends."""
        self._stopped = True
        link = self._current
        if link is not None:
            link.cancel()
        self._wake()

    async def wait_stopped(self) -> None:
        """Wait until the dialling task ended (after :meth:`stop`)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    @property
    def alive(self) -> bool:
        """Whether the dialling task still runs."""
        return self._task is not None and not self._task.done()

    def redial_now(self) -> None:
        """Cut the current backoff short: the peer is known to be back.

        The next attempt also gets a fresh channel: a channel whose connection attempts
        failed keeps its own reconnect backoff (up to reconnect_max_s), and would fail the
        attempt at once without trying the peer."""
        self._backoff.reset()
        self._renew = True
        self._wake()

    def _wake(self) -> None:
        waker, self._waker = self._waker, None
        if waker is not None and not waker.done():
            waker.set_result(None)

    async def _sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        waker = self._waker = loop.create_future()
        timer = loop.call_later(delay, _settle, waker)
        try:
            await waker
        finally:
            timer.cancel()

    async def _run(self) -> None:
        try:
            while not self._stopped:
                try:
                    if self._channel is None or (self._renew and self._current is None):
                        await self._replace_channel()
                    await self._attempt()
                except asyncio.CancelledError:
                    if self._stopped:
                        raise
                except Exception as exc:
                    # A bug, or a channel that cannot be made (a bad client interceptor):
                    # it must not end the dialling for good: log it and try again.
                    self._failed(
                        UnreachableKind.INTERNAL,
                        None,
                        f"unexpected error: {type(exc).__name__}: {exc}",
                    )
                    logger.exception("raftgrpc: unexpected error on the stream to %s", self.target)
                if self._stopped:
                    break
                await self._sleep(self._backoff.next_delay())
        finally:
            channel, self._channel = self._channel, None
            if channel is not None:
                await channel.close(None)

    async def _replace_channel(self) -> None:
        self._renew = False
        stale, self._channel = self._channel, self._new_channel()
        if stale is not None:
            await stale.close(None)

    async def _attempt(self) -> None:
        assert self._channel is not None
        link = self._setup.new_link(self.peer, self._new_outbox())
        # No request iterator: frames are written with call.write() as they are queued.
        call: Any = self._channel.stream_stream(
            STREAM_METHOD, request_serializer=None, response_deserializer=None
        )(None)
        link.set_canceller(call.cancel)
        self._current = link
        established = False
        reader: asyncio.Task[int] | None = None
        try:
            await call.write(self._hello)
            raw = await asyncio.wait_for(call.read(), self._setup.handshake_timeout_s)
            if raw is _EOF:
                self._failed(
                    UnreachableKind.HANDSHAKE_FAILED, None, "the stream ended during the handshake"
                )
                logger.debug("raftgrpc: stream to %s ended during the handshake", self.target)
                await _raise_status(call)
                return
            welcome = judge_welcome(raw, self._expected_node_id)
            if isinstance(welcome, WelcomeFailure):
                self._log_handshake_failure(welcome.reason, welcome.level)
                return
            established = True
            self.last_failure = None
            self._backoff.reset()
            logger.info(
                "raftgrpc: stream to %s established",
                self.target,
                extra={"event": "stream.established", "peer": self.target, "link": link.id},
            )
            self._monitor.watch(link)
            self._events.established(link)
            reader = asyncio.get_running_loop().create_task(self._read(call, link))
            reader.add_done_callback(lambda _task: link.cancel())
            await self._write(call, link)
            await asyncio.wait({reader})
            dropped = reader.result()
            if dropped:
                logger.info(
                    "raftgrpc: dropped %d orphaned chunks from %s",
                    dropped,
                    self.target,
                    extra={
                        "event": "stream.orphaned_chunks",
                        "peer": self.target,
                        "count": dropped,
                    },
                )
        except asyncio.TimeoutError:
            self._log_handshake_failure("no Welcome in time")
        except asyncio.CancelledError:
            if self._stopped:
                raise
            # grpc.aio raises CancelledError from a call this node cancelled (its liveness
            # monitor, a queue reset, a redial): the stream ended here, by this node.
            self._failed(UnreachableKind.RESET, grpc.StatusCode.CANCELLED, "cancelled by this node")
        except grpc.aio.AioRpcError as exc:
            self._log_failure(exc, established)
        except FrameError as exc:
            self._failed(UnreachableKind.PROTOCOL_ERROR, None, f"bad frame: {exc}")
            logger.warning(
                "raftgrpc: closing stream to %s: %s",
                self.target,
                exc,
                extra={"event": "stream.bad_frame", "peer": self.target, "reason": str(exc)},
            )
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
            self._monitor.unwatch(link)
            link.cancel()
            self._current = None
            if established:
                logger.info(
                    "raftgrpc: stream to %s lost",
                    self.target,
                    extra={"event": "stream.lost", "peer": self.target, "link": link.id},
                )
                self._events.lost(link)

    async def _write(self, call: Any, link: Link) -> None:
        """Write what :func:`~raftgrpc._transport.stream_io.outgoing` gives until the link
        breaks or the call ends."""
        frames = outgoing(link, self._setup, codec.request_frame_bytes, PULSE_REQUEST)
        try:
            async with aclosing(frames):
                async for data in frames:
                    if call.done():
                        return  # ended: the reader reports its status (a write would not)
                    await call.write(data)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.CancelledError):
            # The call ended (the reader learns how) or this node cancelled it.
            if self._stopped:
                raise
            return

    async def _read(self, call: Any, link: Link) -> int:
        """Deliver what the peer sends on the response side (frames to a read-only node,
        Pulses); returns the orphaned chunks dropped. Raises the call's error."""
        reader = self._setup.frame_reader(pb.StreamResponse.FromString)
        if await read_into(link, call.read, reader, self._events.deliver):
            await _raise_status(call)
        return reader.dropped

    def _failed(self, kind: UnreachableKind, code: grpc.StatusCode | None, reason: str) -> None:
        self.last_failure = (kind, code, reason, self._monitor.clock())

    def _log_handshake_failure(self, reason: str, level: int = logging.WARNING) -> None:
        self._failed(UnreachableKind.HANDSHAKE_FAILED, None, f"handshake failed: {reason}")
        logger.log(
            level,
            "raftgrpc: handshake with %s failed: %s",
            self.target,
            reason,
            extra={"event": "stream.handshake_failed", "peer": self.target, "reason": reason},
        )

    def _log_failure(self, exc: grpc.aio.AioRpcError, established: bool) -> None:
        code = exc.code()
        detail = exc.details()
        self._failed(status_kind(str(detail)), code, str(detail))
        if self._stopped or code == grpc.StatusCode.CANCELLED:
            return
        level, event = stream_failure_level(code, established)
        logger.log(
            level,
            "raftgrpc: stream to %s failed: %s %s",
            self.target,
            code,
            detail,
            extra={
                "event": event,
                "peer": self.target,
                "code": code.name if code is not None else None,
                "details": detail,
            },
        )


def _settle(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


async def _raise_status(call: Any) -> None:
    """Raise the status of an ended call as AioRpcError unless it is OK."""
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            code,
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
            None,
        )

"""The client side: one thread per peer that dials, holds and redials its stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from raftgrpc import codec
from raftgrpc.backoff import Backoff
from raftgrpc.link import PROTOCOL_VERSION, PULSE_REQUEST, FrameError, Link, read_frames
from raftgrpc.liveness import LivenessMonitor
from raftgrpc.outbox import Outbox
from raftgrpc.server import STREAM_METHOD
from raftgrpc.v1 import transport_pb2 as pb

__all__ = ["PeerEvents", "PeerStream"]

logger = logging.getLogger("raftgrpc.peer")


class PeerEvents:
    """What a :class:`PeerStream` reports to its transport, from its own thread."""

    def __init__(
        self,
        established: Callable[[Link], None],
        lost: Callable[[Link], None],
        deliver: Callable[
            [Link, list[dict[str, Any]], int, list[dict[str, str] | None] | None], bool
        ],
    ) -> None:
        self.established = established
        self.lost = lost
        self.deliver = deliver


class PeerStream:
    """Keeps one outbound stream to a peer open, redialling with backoff.

    Each successful handshake yields a fresh :class:`~raftgrpc.link.Link` with its own
    outbox, reported through ``events.established``; its end is reported through
    ``events.lost`` before the next dial starts. The transport reports the next stream to
    PySyncObj no sooner than two append-entries periods after the loss, so SyncObj sees the
    disconnect and restarts any chunked transfer.
    """

    def __init__(
        self,
        peer: Any,
        target: str,
        channel: grpc.Channel,
        hello: pb.Hello,
        expected_node_id: str | None,
        new_outbox: Callable[[], Outbox],
        events: PeerEvents,
        backoff: Backoff,
        monitor: LivenessMonitor,
        frame_bytes: int,
        handshake_timeout_s: float,
        pulse_interval_s: float,
        traced: bool = False,
        new_channel: Callable[[], grpc.Channel] | None = None,
        inbound_budget: int = 32 * 1024 * 1024,
    ) -> None:
        self._inbound_budget = inbound_budget
        self.peer = peer
        self._traced = traced
        self.target = target
        self._channel = channel
        self._call_stream = self._stream_method(channel)
        # redial_now() replaces the channel (its connection backoff with it) when it can.
        self._new_channel = new_channel
        self._renew = False
        self._channel_lock = threading.Lock()
        self._hello = pb.StreamRequest(hello=hello).SerializeToString()
        self._expected_node_id = expected_node_id
        self._new_outbox = new_outbox
        self._events = events
        self._backoff = backoff
        self._frame_bytes = frame_bytes
        self._handshake_timeout_s = handshake_timeout_s
        self._monitor = monitor
        self._pulse_interval_s = pulse_interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and redial_now()
        self._current: Link | None = None
        self.last_failure: tuple[grpc.StatusCode | None, str, float] | None = None
        """Why the last attempt ended without a stream (status code or None, reason,
        monotonic time); None while a stream is established or before an attempt ended."""
        self._thread = threading.Thread(
            target=self._run, name=f"raftgrpc-peer-{target}", daemon=True
        )

    def start(self) -> None:
        """Start dialling in the background."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dialling, end the current stream, close the channel, and join the thread."""
        with self._channel_lock:
            self._stop.set()
        self._wake.set()
        link = self._current
        if link is not None:
            link.cancel()
        self._channel.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def redial_now(self) -> None:
        """Cut the current backoff short: the peer is known to be back (any thread).

        The next attempt also gets a fresh channel: a channel whose connection attempts
        failed keeps its own reconnect backoff (up to reconnect_max_s), and would fail the
        attempt at once without trying the peer."""
        self._backoff.reset()
        self._renew = True
        self._wake.set()

    @staticmethod
    def _stream_method(channel: grpc.Channel) -> Any:
        # Frames travel as raw bytes: they are built and parsed by raftgrpc.codec.
        return channel.stream_stream(
            STREAM_METHOD, request_serializer=None, response_deserializer=None
        )

    def _renew_channel(self) -> None:
        self._renew = False
        if self._new_channel is None or self._current is not None:
            return
        fresh = self._new_channel()
        with self._channel_lock:
            if self._stop.is_set():
                fresh.close()
                return
            stale, self._channel = self._channel, fresh
            self._call_stream = self._stream_method(fresh)
        stale.close()

    @property
    def alive(self) -> bool:
        """Whether the dialling thread still runs."""
        return self._thread.is_alive()

    def _requests(self, outbox: Outbox) -> Iterator[bytes]:
        yield self._hello
        while True:
            items = outbox.take(self._frame_bytes, self._pulse_interval_s)
            if items:
                yield codec.request_frame_bytes(items)
            elif outbox.closed:
                return
            else:
                yield PULSE_REQUEST

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._renew:
                    self._renew_channel()
                self._attempt()
            except Exception:
                # A bug here must not end the dialling for good: log it and redial.
                logger.exception("raftgrpc: unexpected error on the stream to %s", self.target)
            self._wake.wait(self._backoff.next_delay())
            self._wake.clear()
            if self._stop.is_set():
                break

    def _attempt(self) -> None:
        link = Link(self.peer, self._new_outbox())
        try:
            call: Any = self._call_stream(self._requests(link.outbox))
        except ValueError:  # the channel was closed by stop()
            link.break_()
            return
        link.set_canceller(call.cancel)
        self._current = link
        if self._stop.is_set():  # stop() may have run before _current was set
            link.cancel()
        watchdog = threading.Timer(self._handshake_timeout_s, call.cancel)
        watchdog.daemon = True
        watchdog.start()
        established = False
        try:
            welcome = self._handshake(next(call))
            watchdog.cancel()
            if welcome is None:
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
            dropped = read_frames(
                link,
                call,
                pb.StreamResponse.FromString,
                lambda messages, nbytes, carriers: self._events.deliver(
                    link, messages, nbytes, carriers
                ),
                traced=self._traced,
                inbound_budget=self._inbound_budget,
            )
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
        except StopIteration:
            self._failed(None, "the stream ended during the handshake")
            logger.debug("raftgrpc: stream to %s ended during the handshake", self.target)
        except grpc.RpcError as exc:
            self._log_failure(exc, established)
        except FrameError as exc:
            self._failed(None, f"bad frame: {exc}")
            logger.warning(
                "raftgrpc: closing stream to %s: %s",
                self.target,
                exc,
                extra={"event": "stream.bad_frame", "peer": self.target, "reason": str(exc)},
            )
        finally:
            watchdog.cancel()
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

    def _handshake(self, raw: bytes) -> pb.Welcome | None:
        try:
            response = pb.StreamResponse.FromString(raw)
        except DecodeError:
            self._log_handshake_failure("malformed Welcome")
            return None
        if response.WhichOneof("kind") != "welcome":
            self._log_handshake_failure("answered Hello with something else")
            return None
        welcome: pb.Welcome = response.welcome
        if welcome.protocol_version != PROTOCOL_VERSION:
            self._log_handshake_failure(
                f"speaks protocol version {welcome.protocol_version}, this node {PROTOCOL_VERSION}",
                logging.ERROR,
            )
            return None
        if self._expected_node_id is not None and welcome.node_id != self._expected_node_id:
            self._log_handshake_failure(
                f"says it is node {welcome.node_id[:200]!r}, expected "
                f"{self._expected_node_id!r}; check the cluster's addresses",
                logging.ERROR,
            )
            return None
        return welcome

    def _failed(self, code: grpc.StatusCode | None, reason: str) -> None:
        self.last_failure = (code, reason, time.monotonic())

    def _log_handshake_failure(self, reason: str, level: int = logging.WARNING) -> None:
        self._failed(None, f"handshake failed: {reason}")
        logger.log(
            level,
            "raftgrpc: handshake with %s failed: %s",
            self.target,
            reason,
            extra={"event": "stream.handshake_failed", "peer": self.target, "reason": reason},
        )

    def _log_failure(self, exc: grpc.RpcError, established: bool) -> None:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        self._failed(code, str(detail))
        if self._stop.is_set() or code == grpc.StatusCode.CANCELLED:
            return
        if established or code not in (grpc.StatusCode.UNAVAILABLE,):
            level = logging.WARNING if code != grpc.StatusCode.UNAVAILABLE else logging.INFO
            event = "stream.failed"
        else:
            level, event = logging.DEBUG, "peer.unreachable"
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

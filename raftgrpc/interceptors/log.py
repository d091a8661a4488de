"""Structured logs of the RPC lifecycle, and a JSON formatter for them.

Each RPC logs two records through stdlib ``logging`` (logger ``raftgrpc.rpc`` by default):
a short readable message, and the facts as fields of the record (``extra``), which a
structured formatter such as :class:`JsonFormatter` renders:

===================  ====================================================================
field                meaning
===================  ====================================================================
``event``            ``"rpc.start"``, ``"rpc.end"``; ``"rpc.message"`` (DEBUG, each
                     streamed message, rate-limited) and ``"rpc.suppressed"``
``side``             ``"server"`` or ``"client"``
``method``           the full method, ``/raftgrpc.v1.RaftTransport/Stream``
``peer``             the client (``ipv4:10.0.0.2:51234``), on the server; None on the
                     client (gRPC Python's call objects do not tell it)
``code``             the status code's name, ``"OK"``, ``"CANCELLED"``... (at the end)
``duration_ms``      from the start of the handler (server) or of the call (client)
``messages_in``      messages received: requests (server) or responses (client)
``messages_out``     messages handed to gRPC to send
===================  ====================================================================

Streaming calls are wrapped so that each message is counted. On the server everything runs
in the handler's own thread (nothing in ``intercept_service``, which runs on gRPC's
dispatch thread). On the client, the end of a call is logged from its done callback (on
gRPC's channel thread: attach handlers that do not block, e.g. a ``QueueHandler``, to a
logger that does slow I/O), except the successful end of a call with streamed responses:
that is logged when the caller reads past the last response (or drops the call), so that
``messages_in`` counts the responses still buffered when the status arrived.

The module is named ``log`` (not ``logging``) so that it never shadows the standard
library's ``logging``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from raftgrpc._log_limit import RateLimiter
from raftgrpc.interceptors._client import (
    AnyKindAioClientInterceptor,
    AnyKindClientInterceptor,
    method_name,
)
from raftgrpc.interceptors._skeleton import CallHooks, CallKind, Flavor, ServerLayer

__all__ = [
    "JsonFormatter",
    "aio_client_interceptor",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
]

_DEFAULT_LOGGER = "raftgrpc.rpc"


def server_interceptor(
    logger: logging.Logger | None = None,
    *,
    level: int = logging.INFO,
    message_limit: int = 10,
    message_interval_s: float = 1.0,
) -> grpc.ServerInterceptor[Any, Any]:
    """Logs each served RPC's start and end (``level``) and, at DEBUG, its messages: at most
    ``message_limit`` per method and direction every ``message_interval_s``."""
    return _ServerLog(
        _Events(logger, level, "server", RateLimiter(message_limit, message_interval_s))
    )


def aio_server_interceptor(
    logger: logging.Logger | None = None,
    *,
    level: int = logging.INFO,
    message_limit: int = 10,
    message_interval_s: float = 1.0,
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """:func:`server_interceptor` for a ``grpc.aio`` server (a node's own server)."""
    return _ServerLog(
        _Events(logger, level, "server", RateLimiter(message_limit, message_interval_s))
    ).aio()


def client_interceptor(
    logger: logging.Logger | None = None,
    *,
    level: int = logging.INFO,
    message_limit: int = 10,
    message_interval_s: float = 1.0,
) -> _ClientInterceptor:
    """Logs each call's start and end, and its messages (DEBUG, rate-limited), on the client
    side (all four ``grpc`` client interceptor kinds, for ``grpc.intercept_channel``)."""
    return _ClientInterceptor(
        _Events(logger, level, "client", RateLimiter(message_limit, message_interval_s))
    )


# --------------------------------------------------------------------------- events


class _Rpc:
    __slots__ = ("messages_in", "messages_out", "method", "peer", "start")

    def __init__(self, method: str, peer: str | None) -> None:
        self.method = method
        self.peer = peer
        self.start = time.monotonic()
        self.messages_in = 0
        self.messages_out = 0


class _Events:
    def __init__(
        self, logger: logging.Logger | None, level: int, side: str, limiter: RateLimiter
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(_DEFAULT_LOGGER)
        self.level = level
        self.side = side
        self.limiter = limiter

    def start(self, method: str, peer: str | None) -> _Rpc:
        rpc = _Rpc(method, peer)
        if self.logger.isEnabledFor(self.level):
            extra = {"event": "rpc.start", "side": self.side, "method": method, "peer": peer}
            if peer:
                self.logger.log(self.level, "rpc start %s from %s", method, peer, extra=extra)
            else:
                self.logger.log(self.level, "rpc start %s", method, extra=extra)
        return rpc

    def end(self, rpc: _Rpc, code: grpc.StatusCode, details: str | None = None) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        duration_ms = round((time.monotonic() - rpc.start) * 1000.0, 3)
        extra: dict[str, Any] = {
            "event": "rpc.end",
            "side": self.side,
            "method": rpc.method,
            "peer": rpc.peer,
            "code": code.name,
            "duration_ms": duration_ms,
            "messages_in": rpc.messages_in,
            "messages_out": rpc.messages_out,
        }
        if details:
            extra["details"] = details
        self.logger.log(
            self.level,
            "rpc end %s %s %.1f ms",
            rpc.method,
            code.name,
            duration_ms,
            extra=extra,
        )

    def message(self, rpc: _Rpc, direction: str, item: Any, index: int) -> None:
        """A streamed message (DEBUG), at most ``limiter.limit`` per method and direction."""
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        key = (rpc.method, direction)
        suppressed = self.limiter.admit(key)
        if suppressed is None:
            return
        fields = {"side": self.side, "method": rpc.method, "direction": direction}
        if suppressed:
            self.logger.debug(
                "rpc %s: suppressed %d message events",
                rpc.method,
                suppressed,
                extra={"event": "rpc.suppressed", "suppressed": suppressed, **fields},
            )
        size = len(item) if isinstance(item, (bytes, bytearray, memoryview)) else None
        self.logger.debug(
            "rpc message %s %s #%d",
            rpc.method,
            direction,
            index,
            extra={
                "event": "rpc.message",
                "index": index,
                "bytes": size,
                "peer": rpc.peer,
                **fields,
            },
        )


def _count_out(iterator: Iterator[Any], rpc: _Rpc, events: _Events) -> Iterator[Any]:
    for item in iterator:
        rpc.messages_out += 1
        events.message(rpc, "out", item, rpc.messages_out)
        yield item


# --------------------------------------------------------------------------- server


class _ServerLog(ServerLayer[str]):
    """Every served call, with the messages of its streams counted."""

    def __init__(self, events: _Events) -> None:
        self._events = events

    def select(self, details: grpc.HandlerCallDetails) -> str:
        return str(details.method)

    def open(self, plan: str, context: Any, kind: CallKind) -> CallHooks:
        return _LoggedCall(self._events, plan, context, kind)


class _LoggedCall(CallHooks):
    __slots__ = ("_context", "_events", "_flavor", "_rpc", "_streaming")

    def __init__(self, events: _Events, method: str, context: Any, kind: CallKind) -> None:
        self._events = events
        self._context = context
        self._streaming = kind.response_streaming
        self._flavor = kind.flavor
        self._rpc = events.start(method, context.peer())

    def check_request(self, request: Any) -> None:
        self._rpc.messages_in = 1

    def on_request(self, request: Any, index: int) -> None:
        self._rpc.messages_in = index
        self._events.message(self._rpc, "in", request, index)

    def on_response(self, response: Any, index: int) -> None:
        self._rpc.messages_out = index
        self._events.message(self._rpc, "out", response, index)

    def on_end(self, exc: BaseException | None) -> None:
        context = self._context
        if exc is None and not self._streaming:
            self._rpc.messages_out = 1
        code = _server_code(context, exc, self._flavor)
        self._events.end(self._rpc, code, _context_details(context))


def _server_code(context: Any, exc: BaseException | None, flavor: Flavor) -> grpc.StatusCode:
    code = _context_code(context)
    if code is not None:
        return code
    if flavor.gone(context, exc):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


def _context_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()  # type: ignore[attr-defined]  # None until abort()/set_code()
    except (AttributeError, RuntimeError):
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _context_details(context: grpc.ServicerContext) -> str | None:
    try:
        details = context.details()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return None
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details if isinstance(details, str) else None


# --------------------------------------------------------------------------- client


class _ClientInterceptor(AnyKindClientInterceptor):
    def __init__(self, events: _Events) -> None:
        self._events = events

    def intercept(
        self,
        continuation: Callable[[Any, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
        client_stream: bool,
        server_stream: bool,
    ) -> Any:
        events = self._events
        rpc = events.start(method_name(details), None)
        if client_stream:
            request = _count_out(request, rpc, events)
        else:
            rpc.messages_out = 1
        try:
            call = continuation(details, request)
        except BaseException:
            events.end(rpc, grpc.StatusCode.UNKNOWN)
            raise

        ending = _Ending(rpc, events, call)
        if server_stream:
            # Responses still buffered when the status arrives are read after it: the end is
            # logged when the caller sees it (or when the call is dropped), so that
            # messages_in counts them; failures are logged as soon as they happen.
            counted = _CountingCall(call, rpc, events, ending)
            finalizer = weakref.finalize(counted, ending.finish)
            finalizer.atexit = False
            call.add_done_callback(ending.on_done_streaming)
            return counted
        call.add_done_callback(ending.on_done_unary)
        return call


def aio_client_interceptor(
    logger: logging.Logger | None = None, *, level: int = logging.INFO
) -> _AioClientInterceptor:
    """:func:`client_interceptor` for ``grpc.aio`` channels (a node's own channels): each
    call's start and end (code, duration); streamed messages are not counted."""
    return _AioClientInterceptor(_Events(logger, level, "client", RateLimiter(10, 1.0)))


class _AioClientInterceptor(AnyKindAioClientInterceptor):
    def __init__(self, events: _Events) -> None:
        self._events = events

    async def intercept(
        self,
        continuation: Any,
        details: Any,
        request: Any,
        request_streaming: bool,
        response_streaming: bool,
    ) -> Any:
        rpc = self._events.start(method_name(details), None)
        if not request_streaming:
            rpc.messages_out = 1  # streamed requests are not counted on grpc.aio channels
        try:
            call = await continuation(details, request)
        except BaseException:
            self._events.end(rpc, grpc.StatusCode.UNKNOWN)
            raise
        call.add_done_callback(lambda done: asyncio.ensure_future(self._end(rpc, done)))
        return call

    async def _end(self, rpc: _Rpc, call: Any) -> None:
        try:
            code = await call.code()
            details = None if code == grpc.StatusCode.OK else await call.details()
        except Exception:
            code, details = grpc.StatusCode.UNKNOWN, None
        self._events.end(rpc, code, details)


def _call_code(call: Any) -> grpc.StatusCode:
    try:
        code = call.code()
    except Exception:
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class _Ending:
    """Logs the end of one client call, once."""

    __slots__ = ("_call", "_events", "_lock", "_logged", "_rpc")

    def __init__(self, rpc: _Rpc, events: _Events, call: Any) -> None:
        self._rpc = rpc
        self._events = events
        self._call = call
        self._lock = threading.Lock()
        self._logged = False

    def on_done_unary(self, finished: Any) -> None:
        if _call_code(finished) == grpc.StatusCode.OK:
            self._rpc.messages_in = 1
        self.finish()

    def on_done_streaming(self, finished: Any) -> None:
        if _call_code(finished) != grpc.StatusCode.OK:
            self.finish()

    def finish(self) -> None:
        with self._lock:
            if self._logged:
                return
            self._logged = True
        call = self._call
        code = _call_code(call) if call.done() else grpc.StatusCode.CANCELLED
        details = None
        if code != grpc.StatusCode.OK:
            try:
                details = call.details()
            except Exception:
                pass
        self._events.end(self._rpc, code, details)


class _CountingCall(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """A streaming call whose responses are counted; otherwise the call itself (it stays a
    ``grpc.Call`` and ``grpc.Future`` for the interceptors around it and the caller)."""

    def __init__(self, call: Any, rpc: _Rpc, events: _Events, ending: _Ending) -> None:
        self._call = call
        self._rpc = rpc
        self._events = events
        self._ending = ending

    def __iter__(self) -> _CountingCall:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._call)
        except (StopIteration, grpc.RpcError):
            self._ending.finish()
            raise
        rpc = self._rpc
        rpc.messages_in += 1
        self._events.message(rpc, "in", item, rpc.messages_in)
        return item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    # grpc.RpcContext
    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> Any:
        return self._call.time_remaining()

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._call.add_callback(callback))

    # grpc.Call
    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> Any:
        return self._call.code()

    def details(self) -> Any:
        return self._call.details()

    # grpc.Future
    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def running(self) -> bool:
        return bool(self._call.running())

    def done(self) -> bool:
        return bool(self._call.done())

    def result(self, timeout: float | None = None) -> Any:
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._call.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _call: fn(self))


# --------------------------------------------------------------------------- formatter

_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Renders each record as one JSON object per line: ``ts`` (UTC, ISO 8601), ``level``,
    ``logger``, ``msg`` (the formatted message), ``thread``, then every ``extra`` field of
    the record, and ``exc`` / ``stack`` when present. Values JSON cannot encode are
    rendered with ``str()``.

    >>> handler = logging.StreamHandler()
    >>> handler.setFormatter(JsonFormatter())
    >>> logging.getLogger("raftgrpc").addHandler(handler)
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc)
        obj: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in obj:
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, default=str, ensure_ascii=False)

"""OpenTelemetry tracing for raftgrpc: RPC-level spans and per-Raft-message spans.

Two layers:

* :func:`server_interceptor` / :func:`client_interceptor`: one span per RPC, from
  ``opentelemetry-instrumentation-grpc``, with its W3C context in the call's metadata so that
  the server span is a child of the client span. Health checks are excluded by default. For
  the Raft stream this is one span per *connection*, which lasts (and is exported) only when
  the stream ends: useful for connection churn, useless for following a message.
* :class:`FrameTracer`: raftgrpc's own spans for a sampled share of the Raft messages on the
  long-lived stream. The sender's span context travels inside the message (a W3C
  ``traceparent`` carrier in the frame), the receiver's span joins that trace, and messages
  SyncObj sends in reaction become children of the receive span: a trace follows a Raft
  exchange across nodes.

Behaviour of the upstream instrumentation (0.66b2) on raftgrpc's raw-bytes generic handlers,
and what this module does about it:

* Raw bytes are fine: it never touches message fields (it does not use the request or the
  response unless hooks are given, and we give none).
* Its client interceptor is *not* a ``grpc`` client interceptor: it implements the
  instrumentation's own ``grpcext`` interface and ``grpc.intercept_channel`` refuses it
  (``TypeError``). :func:`client_interceptor` adapts it to the four standard ``grpc``
  client interceptor interfaces, so it composes with other interceptors.
* Client, unary-stream calls: upstream returns a generator that starts the RPC (and the span)
  only when first iterated and loses the ``grpc.Call`` / ``grpc.Future`` interface
  (``cancel()``, ``code()``...). The adapter routes these calls through the same path as
  the others, which returns the call object itself and ends the span in a done callback.
* Client, stream-stream calls (the Raft stream): the span ends when the call terminates (a
  done callback), correctly for a long-lived stream. A stream ended by ``call.cancel()``
  (how raftgrpc closes its streams) ends with status ERROR and ``rpc.grpc.status_code`` 1,
  as OpenTelemetry's gRPC conventions say for client spans; left as is.
* Server, streaming responses: the span is opened inside the response generator. When the
  client cancels, gRPC abandons the generator and the span ends with status UNSET and
  ``rpc.grpc.status_code`` 0 (OK), and a handler that raises (gRPC answers UNKNOWN) also
  leaves code 0 and UNSET. :func:`server_interceptor` adds an inner layer that records
  CANCELLED (code 1, left UNSET as the server conventions say) and UNKNOWN (code 2, ERROR).
* Server, ``context.abort()``: recorded with its code, plus an ``exception`` event of type
  ``Exception`` (how gRPC implements abort); harmless, left as is.
* Server, ``context.disable_next_message_compression()`` raises ``AttributeError`` through
  upstream's context wrapper (a typo upstream); raftgrpc does not call it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors as _otel_aio_client
from opentelemetry.instrumentation.grpc import aio_server_interceptor as _otel_aio_server
from opentelemetry.instrumentation.grpc import client_interceptor as _otel_client_interceptor
from opentelemetry.instrumentation.grpc import server_interceptor as _otel_server_interceptor
from opentelemetry.instrumentation.grpc.filters import health_check, negate
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.semconv._incubating.attributes.rpc_attributes import RPC_GRPC_STATUS_CODE
from opentelemetry.trace import SpanKind, Status, StatusCode

from raftgrpc._errors import ConfigError
from raftgrpc.interceptors._client import AnyKindClientInterceptor, CallDetails, method_name
from raftgrpc.interceptors._handlers import AioContinuation, Continuation, is_async
from raftgrpc.interceptors._skeleton import CallHooks, CallKind, ServerLayer

__all__ = [
    "FrameTracer",
    "aio_client_interceptors",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
    "tracer_provider_from_env",
]

_INSTRUMENTATION = "raftgrpc"


# --------------------------------------------------------------------------- RPC spans


def server_interceptor(
    tracer_provider: trace.TracerProvider | None = None, *, exclude_health: bool = True
) -> grpc.ServerInterceptor[Any, Any]:
    """A server interceptor making one SERVER span per RPC (the upstream instrumentation's),
    parented by the caller's context from the metadata. ``tracer_provider`` None: the global
    one. ``exclude_health``: no spans for ``grpc.health.v1.Health`` calls."""
    filter_ = negate(health_check()) if exclude_health else None
    upstream = _otel_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=filter_
    )
    return _ServerInterceptor(upstream, filter_)


def aio_server_interceptor(
    tracer_provider: trace.TracerProvider | None = None, *, exclude_health: bool = True
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """:func:`server_interceptor` for a ``grpc.aio`` server (a node's own server): upstream's
    ``grpc.aio`` interceptor with the same status fix; handlers of grpcio's synchronous API
    (run in ``grpc.aio``'s thread pool) get the synchronous interceptor's spans."""
    filter_ = negate(health_check()) if exclude_health else None
    upstream = _otel_aio_server(tracer_provider=tracer_provider, filter_=filter_)  # type: ignore[no-untyped-call]
    return _AioServerInterceptor(
        upstream, server_interceptor(tracer_provider, exclude_health=exclude_health), filter_
    )


def aio_client_interceptors(
    tracer_provider: trace.TracerProvider | None = None, *, exclude_health: bool = True
) -> Sequence[Any]:
    """:func:`client_interceptor` for ``grpc.aio`` channels (a node's own channels): the
    upstream instrumentation's ``grpc.aio`` interceptors (one per call kind)."""
    filter_ = negate(health_check()) if exclude_health else None
    interceptors: Sequence[Any] = _otel_aio_client(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=filter_
    )
    return tuple(interceptors)


def client_interceptor(
    tracer_provider: trace.TracerProvider | None = None, *, exclude_health: bool = True
) -> _ClientInterceptor:
    """A client interceptor (all four ``grpc`` kinds, for ``grpc.intercept_channel``) making
    one CLIENT span per RPC and injecting its context into the call's metadata."""
    filter_ = negate(health_check()) if exclude_health else None
    upstream = _otel_client_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=filter_
    )
    return _ClientInterceptor(upstream)


class _ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Upstream's interceptor, with an inner layer fixing the status of streams that end by
    cancellation or an unhandled exception (see the module docstring)."""

    def __init__(self, upstream: Any, filter_: Callable[[Any], bool] | None) -> None:
        self._upstream = upstream
        self._filter = filter_

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if self._filter is not None and not self._filter(handler_call_details):
            return continuation(handler_call_details)
        inner = functools.partial(_SPAN_STATUS.intercept_service, continuation)
        result: grpc.RpcMethodHandler[Any, Any] | None = self._upstream.intercept_service(
            inner, handler_call_details
        )
        return result


class _AioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, upstream: Any, sync: grpc.ServerInterceptor[Any, Any], filter_: Any) -> None:
        self._upstream = upstream
        self._sync = sync
        self._filter = filter_

    async def intercept_service(
        self, continuation: AioContinuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        if self._filter is not None and not self._filter(handler_call_details):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if not is_async(handler):
            return self._sync.intercept_service(lambda _details: handler, handler_call_details)

        async def inner(_details: grpc.HandlerCallDetails) -> Any:
            return _SPAN_STATUS.wrap_async(handler, handler_call_details)

        return await self._upstream.intercept_service(inner, handler_call_details)


class _SpanStatus(ServerLayer[bool]):
    """The inner layer: runs inside upstream's span, which is current when a call starts."""

    def select(self, details: grpc.HandlerCallDetails) -> bool:
        return True

    def open(self, plan: bool, context: Any, kind: CallKind) -> CallHooks:
        return _SpanStatusCall(trace.get_current_span(), context, kind)


_SPAN_STATUS = _SpanStatus()


class _SpanStatusCall(CallHooks):
    __slots__ = ("_context", "_flavor", "_span", "_streaming")

    def __init__(self, span: trace.Span, context: Any, kind: CallKind) -> None:
        self._span = span
        self._context = context
        self._streaming = kind.response_streaming
        self._flavor = kind.flavor

    def on_end(self, exc: BaseException | None) -> None:
        flavor, streaming = self._flavor, self._streaming
        if exc is None:
            # A stream the client cancelled may still end "normally" on the server.
            if streaming and flavor.cancelled(self._context):
                _mark(self._span, grpc.StatusCode.CANCELLED, error=False)
        elif streaming and flavor.is_cancellation(exc):
            _mark(self._span, grpc.StatusCode.CANCELLED, error=False)
        elif isinstance(exc, Exception) and not flavor.is_abort(exc):
            _mark(self._span, grpc.StatusCode.UNKNOWN, error=True)  # gRPC answers UNKNOWN


def _mark(span: trace.Span, code: grpc.StatusCode, *, error: bool) -> None:
    if span.is_recording():
        span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
        if error:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}"))


class _ClientInfo(NamedTuple):
    """What upstream's interceptor reads of a call (its grpcext ``*ClientInfo``)."""

    full_method: str
    is_client_stream: bool
    is_server_stream: bool
    timeout: float | None


class _ClientInterceptor(AnyKindClientInterceptor):
    """Upstream's grpcext client interceptor behind the standard ``grpc`` interfaces."""

    def __init__(self, upstream: Any) -> None:
        self._upstream = upstream

    def intercept(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
        client_stream: bool,
        server_stream: bool,
    ) -> Any:
        info = _ClientInfo(method_name(details), client_stream, server_stream, details.timeout)

        def invoker(request_or_iterator: Any, metadata: Any) -> Any:
            return continuation(CallDetails(details, metadata), request_or_iterator)

        if client_stream:
            return self._upstream.intercept_stream(request, details.metadata, info, invoker)
        # Unary requests, streamed responses too: upstream's unary path returns the call
        # itself and ends the span when it is done (its server-stream path would return a
        # lazy generator; see the module docstring).
        return self._upstream.intercept_unary(request, details.metadata, info, invoker)


# --------------------------------------------------------------------------- Raft messages


class FrameTracer:
    """raftgrpc's spans for Raft messages on the long-lived streams (a ``FrameObserver``).

    ``on_send`` samples a ``sample_ratio`` share of the messages, and every message sent while
    one of its receive spans is current (a reaction to a traced message); for those it
    records a PRODUCER span ``raftgrpc.send <type>`` and returns the W3C carrier to put in the
    message.
    ``on_receive`` turns a received carrier into a CONSUMER span ``raftgrpc.receive <type>``,
    current while SyncObj handles the message, so its replies continue the trace.
    """

    __slots__ = ("_node", "_propagator", "_random", "_ratio", "_receiving", "_tracer")

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        sample_ratio: float = 0.01,
        node_id: str = "",
        propagator: TextMapPropagator | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ConfigError(f"sample_ratio must be within [0, 1], got {sample_ratio!r}")
        from raftgrpc import __version__

        self._tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider)
        self._ratio = float(sample_ratio)
        self._node = node_id
        self._propagator = propagator
        self._random = (rng if rng is not None else random.Random()).random
        self._receiving = 0  # receive spans current now (SyncObj reacting to a traced message)

    def on_send(self, peer: str, message: dict[str, Any], nbytes: int) -> dict[str, str] | None:
        """Called for each Raft message sent; returns the W3C carrier of its span, or None
        when the message is not traced (the common case: one ``random()`` call)."""
        if self._random() >= self._ratio:
            if not self._receiving:
                return None  # the common case: one random() call
            current = trace.get_current_span()
            if not current.is_recording() or not current.get_span_context().trace_flags.sampled:
                return None
        span = self._tracer.start_span(
            f"raftgrpc.send {message.get('type', 'unknown')}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(peer, message, nbytes),
        )
        span.end()
        if not span.get_span_context().trace_flags.sampled:
            return None  # the SDK's sampler dropped it: no trace to continue
        carrier: dict[str, str] = {}
        context = trace.set_span_in_context(span)
        if self._propagator is None:
            propagate.inject(carrier, context=context)
        else:
            self._propagator.inject(carrier, context=context)
        return carrier or None

    def on_receive(
        self,
        peer: str,
        message: dict[str, Any],
        carrier: Mapping[str, str] | None,
        nbytes: int,
    ) -> contextlib.AbstractContextManager[None]:
        """Wraps the delivery of one received message: nothing without a carrier, else a
        CONSUMER span, child of the sender's, current during the block (exceptions raised
        in the block are recorded on it and re-raised)."""
        if carrier is None:
            return _NOTHING
        return self._receive(peer, message, carrier, nbytes)

    @contextlib.contextmanager
    def _receive(
        self, peer: str, message: dict[str, Any], carrier: Mapping[str, str], nbytes: int
    ) -> Iterator[None]:
        if self._propagator is None:
            parent = propagate.extract(carrier)
        else:
            parent = self._propagator.extract(carrier)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            yield  # a malformed carrier: do not start a new trace for it
            return
        with self._tracer.start_as_current_span(
            f"raftgrpc.receive {message.get('type', 'unknown')}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(peer, message, nbytes),
            record_exception=True,
            set_status_on_exception=True,
        ):
            self._receiving += 1
            try:
                yield
            finally:
                self._receiving -= 1

    def _attributes(self, peer: str, message: dict[str, Any], nbytes: int) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "raftgrpc.message.type": str(message.get("type", "unknown")),
            "raftgrpc.bytes": nbytes,
            "raftgrpc.peer": str(peer),
            "raftgrpc.node": self._node,
        }
        term = message.get("term")
        if isinstance(term, int):
            attributes["raftgrpc.term"] = term
        entries = message.get("entries")
        if entries is not None:
            try:
                attributes["raftgrpc.entries"] = len(entries)
            except TypeError:
                pass
        return attributes


_NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


# --------------------------------------------------------------------------- provider


def tracer_provider_from_env(service_name: str, *, node_id: str = "") -> TracerProvider:
    """An SDK ``TracerProvider`` configured by the standard environment variables.

    * Resource: ``service.name`` (``OTEL_SERVICE_NAME`` wins if set), ``raftgrpc.node``
      (when given) and ``OTEL_RESOURCE_ATTRIBUTES``.
    * Exporters: ``OTEL_TRACES_EXPORTER``, a comma-separated list of ``otlp``, ``console``,
      ``none``; unset, ``otlp`` if ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
      ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else none. Each behind a batch span
      processor. The OTLP exporter (gRPC; the ``otlp`` extra) reads its own
      ``OTEL_EXPORTER_OTLP_*`` variables.
    * Sampler: ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, as the SDK does.

    The caller owns the provider: call ``shutdown()`` on exit to flush the batches. It is
    not made the global provider.
    """
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service_name
    if node_id:
        attributes["raftgrpc.node"] = node_id
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in _exporters_from_env():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporters_from_env() -> list[SpanExporter]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console or none)"
            )
    return exporters


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "OTLP trace export needs opentelemetry-exporter-otlp-proto-grpc: "
            "pip install 'raft-grpc-transport[otlp]' (or set OTEL_TRACES_EXPORTER=none)"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter

"""Client interceptors for every call kind: a concern writes one ``intercept`` method.

grpcio has four client interceptor interfaces (unary or streamed requests, times unary or
streamed responses), in a synchronous and a ``grpc.aio`` flavour. A raftgrpc layer treats the
kinds alike but for two flags, so these bases route the four methods to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = [
    "AnyKindAioClientInterceptor",
    "AnyKindClientInterceptor",
    "CallDetails",
    "method_name",
]


class CallDetails(grpc.ClientCallDetails):
    """A copy of a call's ``ClientCallDetails`` with other metadata."""

    def __init__(self, base: grpc.ClientCallDetails, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def method_name(details: grpc.ClientCallDetails) -> str:
    """The call's full method (``/package.Service/Method``), which gRPC may hand over as bytes."""
    method: Any = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class _OneMethod:
    intercept: Callable[..., Any]
    """``intercept(continuation, details, request, request_streaming, response_streaming)``
    intercepts one call of any kind (a coroutine function for ``grpc.aio``); ``request`` is
    the request, or the request iterator."""


def _route(request_streaming: bool, response_streaming: bool) -> Callable[..., Any]:
    def intercept_kind(self: _OneMethod, continuation: Any, details: Any, request: Any) -> Any:
        return self.intercept(continuation, details, request, request_streaming, response_streaming)

    return intercept_kind


def _route_async(request_streaming: bool, response_streaming: bool) -> Callable[..., Any]:
    async def intercept_kind(
        self: _OneMethod, continuation: Any, details: Any, request: Any
    ) -> Any:
        return await self.intercept(
            continuation, details, request, request_streaming, response_streaming
        )

    return intercept_kind


class AnyKindClientInterceptor(
    _OneMethod,
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A client interceptor for the four call kinds that routes them all to :meth:`intercept`."""

    intercept_unary_unary = _route(False, False)
    intercept_unary_stream = _route(False, True)
    intercept_stream_unary = _route(True, False)
    intercept_stream_stream = _route(True, True)


class AnyKindAioClientInterceptor(
    _OneMethod,
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """:class:`AnyKindClientInterceptor` for ``grpc.aio`` channels: the four call kinds are
    routed to :meth:`intercept`, a coroutine function here."""

    intercept_unary_unary = _route_async(False, False)
    intercept_unary_stream = _route_async(False, True)
    intercept_stream_unary = _route_async(True, False)
    intercept_stream_stream = _route_async(True, True)

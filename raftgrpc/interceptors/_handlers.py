"""Rewrapping a grpc RpcMethodHandler's behavior, whatever its streaming kind.

A server interceptor that must see calls (or their messages) on the handler's worker thread,
not on gRPC's dispatch thread where ``intercept_service`` runs, replaces the handler's
behavior with a wrapper and rebuilds a handler of the same kind with the same serializers.

On a ``grpc.aio`` server (a node's own server) a behavior is a coroutine function, an async
generator function (streamed responses), or a function of grpcio's synchronous API, which
``grpc.aio`` runs in its thread pool. Each raftgrpc layer has both flavors: its ``grpc.aio``
interceptor (:class:`AioLayer`) wraps coroutines with its async wrapper and leaves the
functions of the synchronous API to its synchronous wrapper, so one layer serves both.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = [
    "AioLayer",
    "AnyKindClientInterceptor",
    "CallDetails",
    "as_async_stream",
    "behavior_of",
    "is_async",
    "is_non_blocking",
    "rewrap",
    "wrap_handler",
]

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def behavior_of(handler: grpc.RpcMethodHandler[Any, Any]) -> Behavior:
    """The handler's behavior function (the one its streaming kind uses)."""
    if handler.request_streaming:
        behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    if behavior is None:
        raise ValueError("RpcMethodHandler without a behavior for its kind")
    return behavior


def is_non_blocking(handler: grpc.RpcMethodHandler[Any, Any]) -> bool:
    """Whether the handler's behavior uses grpcio's experimental non-blocking mode (it answers
    through a callback instead of holding a server thread, like grpc_health's Watch).

    Wrapping such a behavior would make it blocking again; observers (logging, tracing,
    retry logs) pass these handlers through untouched. Security layers still wrap them.
    """
    try:
        return bool(getattr(behavior_of(handler), "experimental_non_blocking", False))
    except ValueError:
        return False


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: Behavior
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of ``handler``'s kind and serializers whose behavior is ``behavior``."""
    factory: Callable[..., Any]
    if handler.request_streaming:
        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
        )
    else:
        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
    rewrapped: grpc.RpcMethodHandler[Any, Any] = factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return rewrapped


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap: Callable[[Behavior], Behavior],
    *,
    keep_non_blocking: bool,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behavior replaced by ``wrap(behavior)`` (same kind, same
    serializers).

    ``keep_non_blocking``: return a non-blocking handler (health Watch) as it is, since
    wrapping would make it hold a server thread; layers that only observe pass True, layers
    that must check every call (auth) pass False.
    """
    if keep_non_blocking and is_non_blocking(handler):
        return handler
    return rewrap(handler, wrap(behavior_of(handler)))


def is_async(handler: grpc.RpcMethodHandler[Any, Any]) -> bool:
    """Whether the handler's behavior is a coroutine or async generator function."""
    try:
        behavior = behavior_of(handler)
    except ValueError:
        return False
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def as_async_stream(behavior: Any, request: Any, context: Any) -> AsyncIterator[Any]:
    """The responses of a ``grpc.aio`` streaming behavior as an async iterator, whether it
    yields them (an async generator) or writes them with ``context.write`` (a coroutine: the
    iterator then yields nothing and ends when the coroutine returns)."""
    if inspect.isasyncgenfunction(behavior):
        iterator: AsyncIterator[Any] = behavior(request, context)
        return iterator
    return _await_writes(behavior(request, context))


async def _await_writes(done: Awaitable[Any]) -> AsyncIterator[Any]:
    await done
    return
    yield  # an async generator that yields nothing


class AioLayer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The ``grpc.aio`` flavor of a raftgrpc server layer.

    ``rewrap(handler, details)`` (the layer's synchronous logic, also used by its
    ``grpc.ServerInterceptor``) wraps handlers of grpcio's synchronous API;
    ``rewrap_async(handler, details)`` wraps coroutine handlers. Either may return the
    handler untouched.
    """

    def __init__(
        self,
        rewrap: Callable[[Any, grpc.HandlerCallDetails], Any],
        rewrap_async: Callable[[Any, grpc.HandlerCallDetails], Any],
    ) -> None:
        self._rewrap = rewrap
        self._rewrap_async = rewrap_async

    @classmethod
    def of(cls, layer: Any) -> AioLayer:
        """The ``grpc.aio`` flavor of a layer that has ``rewrap`` and ``rewrap_async``."""
        return cls(layer.rewrap, layer.rewrap_async)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if is_async(handler):
            return self._rewrap_async(handler, handler_call_details)
        return self._rewrap(handler, handler_call_details)


class CallDetails(grpc.ClientCallDetails):
    """A copy of a call's ``ClientCallDetails`` with other metadata."""

    def __init__(self, base: grpc.ClientCallDetails, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class AnyKindClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A client interceptor for the four call kinds that routes them all to :meth:`intercept`."""

    def intercept(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
        request_streaming: bool,
        response_streaming: bool,
    ) -> Any:
        """Intercept one call; ``request`` is the request, or the request iterator."""
        raise NotImplementedError

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self.intercept(continuation, client_call_details, request, False, False)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self.intercept(continuation, client_call_details, request, False, True)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self.intercept(continuation, client_call_details, request_iterator, True, False)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self.intercept(continuation, client_call_details, request_iterator, True, True)

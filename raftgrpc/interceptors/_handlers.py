"""Taking a grpc ``RpcMethodHandler`` apart and putting it back together, whatever its kind.

A server interceptor that must see calls (or their messages) on the handler's worker thread,
not on gRPC's dispatch thread where ``intercept_service`` runs, replaces the handler's
behavior with a wrapper and rebuilds a handler of the same kind with the same serializers
(:mod:`raftgrpc.interceptors._skeleton` does that for every raftgrpc layer).

On a ``grpc.aio`` server (a node's own server) a behavior is a coroutine function, an async
generator function (streamed responses), or a function of grpcio's synchronous API, which
``grpc.aio`` runs in its thread pool: :func:`is_async` tells them apart.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = [
    "AioContinuation",
    "Behavior",
    "Continuation",
    "as_async_stream",
    "behavior_of",
    "is_async",
    "is_non_blocking",
    "rewrap",
]

Behavior = Callable[[Any, grpc.ServicerContext], Any]
Continuation = Callable[[grpc.HandlerCallDetails], "grpc.RpcMethodHandler[Any, Any] | None"]
"""What a synchronous server interceptor is given to get the method's handler."""
AioContinuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]
"""The same for a ``grpc.aio`` server interceptor (it awaits the handler)."""


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

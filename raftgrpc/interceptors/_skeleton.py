"""The server-interceptor skeleton every raftgrpc server layer stands on.

A server layer (RPC logs, retry logs, span status, JWT auth, TLS identity) has to choose the
calls it applies to, get the method's handler, and replace its behavior, for each of
grpcio's four handler kinds, with a wrapper that does the work on the handler's own thread
(never on gRPC's dispatch thread, where ``intercept_service`` runs); and all of that twice,
for grpcio's synchronous API and for ``grpc.aio`` (a node's own server). This module does
that once; a concern writes only its policy:

* :meth:`ServerLayer.select`, on the dispatch thread: does the layer apply to this call (from
  its method and metadata; cheap, no I/O)? It returns the call's plan, or None to leave the
  handler untouched.
* :meth:`ServerLayer.open`, on the handler's thread when the call starts: the call's
  :class:`CallHooks`.
* :class:`CallHooks`: what to do before the handler runs (admit or refuse), with the request
  of a unary call, with each request and each response of a stream, at the end, and what to
  make current while the handler runs. A hook that refuses returns a :class:`Refusal`; the
  skeleton ends the call with it in each API's way (``context.abort`` raises in the
  synchronous API and is awaited in ``grpc.aio``), so the handler never sees what was
  refused.

For instance, a layer that counts the requests of every stream but health checks::

    class _Counter(ServerLayer[str]):
        def select(self, details):
            return None if details.method.startswith("/grpc.health.") else details.method

        def open(self, plan, context, kind):
            return _Counted(plan)

    class _Counted(CallHooks):
        def on_request(self, request, index): ...
        def on_end(self, exc): ...

    server = grpc.server(pool, interceptors=[_Counter()])      # grpcio's synchronous API
    server = grpc.aio.server(interceptors=[_Counter().aio()])  # grpc.aio

The hooks are one piece of code for both APIs. What the two APIs tell differently (what an
abort raises, how a client that went away shows) the hooks ask of the :class:`Flavor` they
are given. The shells at the end of this module are the thin await / no-await parts.

A hook a policy does not override costs nothing per message: request streams are wrapped only
for policies with request hooks, and in the synchronous API the handler's own response
iterator is returned when nothing watches responses or the end and nothing is made current.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import grpc

from raftgrpc.interceptors._handlers import (
    AioContinuation,
    Behavior,
    Continuation,
    as_async_stream,
    behavior_of,
    is_async,
    is_non_blocking,
    rewrap,
)

__all__ = [
    "AIO",
    "NO_HOOKS",
    "SYNC",
    "AioLayer",
    "CallHooks",
    "CallKind",
    "Flavor",
    "Refusal",
    "ServerLayer",
]

PlanT = TypeVar("PlanT")
Scope = contextlib.AbstractContextManager[Any]
_NO_SCOPE: Scope = contextlib.nullcontext()


class Refusal(NamedTuple):
    """Why a call ends before its handler sees it: the status the client gets."""

    code: grpc.StatusCode
    details: str


class CallKind(NamedTuple):
    """What a layer may want to know of a call that starts, besides its context."""

    request_streaming: bool
    response_streaming: bool
    flavor: Flavor


# --------------------------------------------------------------------------- flavors


class Flavor:
    """One of grpcio's two server APIs, as far as a policy needs to tell them apart."""

    name: ClassVar[str]

    def is_abort(self, exc: BaseException) -> bool:
        """Whether ``exc`` is what ``context.abort()`` raised (the call has its status)."""
        raise NotImplementedError

    def is_cancellation(self, exc: BaseException | None) -> bool:
        """Whether ``exc`` is how the API stops a handler whose client went away."""
        raise NotImplementedError

    def cancelled(self, context: Any) -> bool:
        """Whether the call was cancelled (or ran out of time) by now."""
        raise NotImplementedError

    def gone(self, context: Any, exc: BaseException | None) -> bool:
        """Whether a call that just ended (``exc`` None: it returned) ended because its client
        went away rather than by the handler's doing, as far as the API tells."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name} flavor>"


class _Sync(Flavor):
    name = "sync"

    def is_abort(self, exc: BaseException) -> bool:
        return type(exc) is Exception  # grpc's context.abort() raises a bare Exception

    def is_cancellation(self, exc: BaseException | None) -> bool:
        return isinstance(exc, GeneratorExit)  # gRPC abandons (closes) the response iterator

    def cancelled(self, context: Any) -> bool:
        return not context.is_active()

    def gone(self, context: Any, exc: BaseException | None) -> bool:
        return self.is_cancellation(exc) or self.cancelled(context)


class _Aio(Flavor):
    name = "aio"

    def is_abort(self, exc: BaseException) -> bool:
        return isinstance(exc, grpc.aio.AbortError)

    def is_cancellation(self, exc: BaseException | None) -> bool:
        return isinstance(exc, asyncio.CancelledError | GeneratorExit)

    def cancelled(self, context: Any) -> bool:
        return bool(context.cancelled())

    def gone(self, context: Any, exc: BaseException | None) -> bool:
        # grpc.aio cancels the handler's task when the client goes away: the exception says so.
        return self.is_cancellation(exc)


SYNC: Flavor = _Sync()
"""grpcio's synchronous API (also what ``grpc.aio`` runs in its thread pool)."""

AIO: Flavor = _Aio()
"""``grpc.aio`` coroutine and async generator handlers."""


# --------------------------------------------------------------------------- policy


class CallHooks:
    """One call as a layer sees it. A concern overrides the hooks it needs; the defaults do
    nothing, and a hook that is not overridden is never called per message.

    Order: :meth:`admit`; then :meth:`check_request` (unary requests) or, for each request
    of a stream as the handler reads it, :meth:`before_request` and :meth:`on_request`; the
    handler runs inside :meth:`scope`; :meth:`on_response` for each streamed response;
    :meth:`on_end` once the handler returned, raised, or its response stream was abandoned.
    """

    __slots__ = ()

    watches_requests: ClassVar[bool] = False
    """Set for subclasses that override :meth:`before_request` or :meth:`on_request`."""
    checks_before_request: ClassVar[bool] = False
    watches_responses: ClassVar[bool] = False
    watches_end: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.checks_before_request = _overrides(cls, "before_request")
        cls.watches_requests = cls.checks_before_request or _overrides(cls, "on_request")
        cls.watches_responses = _overrides(cls, "on_response")
        cls.watches_end = _overrides(cls, "on_end")

    def admit(self) -> Refusal | None:
        """Before anything else: refuse the call, or None to go on."""
        return None

    def check_request(self, request: Any) -> Refusal | None:
        """The request of a call with a unary request, before the handler gets it."""
        return None

    def before_request(self) -> Refusal | None:
        """Before each read of a request stream (the handler asks for the next request)."""
        return None

    def on_request(self, request: Any, index: int) -> Refusal | None:
        """Request ``index`` (1, 2, ...) of a stream, before the handler gets it."""
        return None

    def on_response(self, response: Any, index: int) -> None:
        """Response ``index`` (1, 2, ...) of a response stream, on its way to gRPC."""

    def on_end(self, exc: BaseException | None) -> None:
        """The handler returned (``exc`` None), raised ``exc``, or its response stream was
        closed (``exc`` the API's cancellation: see :meth:`Flavor.is_cancellation`)."""

    def scope(self) -> Scope | None:
        """What to enter while the handler runs (a context variable, for instance), or None.

        Synchronous API: entered around the handler call and around each step of its response
        iterator, which gRPC may finish on another thread, or never; ``grpc.aio``: around the
        whole call (one task). The same object is entered once per step, never nested.
        """
        return None


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(CallHooks, name)


NO_HOOKS = CallHooks()
"""Hooks of a call a layer only had to see start (in :meth:`ServerLayer.open`)."""


class ServerLayer(grpc.ServerInterceptor, Generic[PlanT]):  # type: ignore[type-arg]
    """A server interceptor made of a policy: :meth:`select` and :meth:`open`.

    An instance is the ``grpc.ServerInterceptor``; :meth:`aio` is the same layer for a
    ``grpc.aio`` server.
    """

    keep_non_blocking: ClassVar[bool] = True
    """Return a handler of grpcio's experimental non-blocking mode (health Watch) as it is:
    wrapping would make it hold a server thread. Layers that only observe keep it; a layer
    that must check every call sets False (such handlers then become blocking)."""

    @abc.abstractmethod
    def select(self, details: grpc.HandlerCallDetails) -> PlanT | None:
        """The plan for a call (what :meth:`open` needs of its method and metadata), or None
        to leave its handler untouched. Runs on gRPC's dispatch thread: keep it cheap."""

    @abc.abstractmethod
    def open(self, plan: PlanT, context: Any, kind: CallKind) -> CallHooks:
        """The hooks of a call that starts (``context`` is its ``ServicerContext``), on the
        handler's thread."""

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        return None if handler is None else self.wrap(handler, handler_call_details)

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` (of grpcio's synchronous API) under this layer, if it applies."""
        plan = self.select(details)
        if plan is None or (self.keep_non_blocking and is_non_blocking(handler)):
            return handler
        return rewrap(handler, _sync_behavior(self, plan, handler, _kind(handler, SYNC)))

    def wrap_async(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` (a ``grpc.aio`` coroutine or async generator) under this layer."""
        plan = self.select(details)
        if plan is None:
            return handler
        return rewrap(handler, _aio_behavior(self, plan, handler, _kind(handler, AIO)))

    def aio(self) -> AioLayer:
        """This layer for a ``grpc.aio`` server."""
        return AioLayer(self)


class AioLayer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A :class:`ServerLayer` on a ``grpc.aio`` server: coroutine handlers get its async
    shell; handlers of grpcio's synchronous API (run in ``grpc.aio``'s thread pool) its
    synchronous one."""

    def __init__(self, layer: ServerLayer[Any]) -> None:
        self._layer = layer

    async def intercept_service(
        self, continuation: AioContinuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if is_async(handler):
            return self._layer.wrap_async(handler, handler_call_details)
        return self._layer.wrap(handler, handler_call_details)


# --------------------------------------------------------------------------- shells


def _kind(handler: Any, flavor: Flavor) -> CallKind:
    return CallKind(handler.request_streaming, handler.response_streaming, flavor)


def _start(
    layer: ServerLayer[PlanT], plan: PlanT, kind: CallKind, request: Any, context: Any
) -> tuple[CallHooks, Any, Refusal | None]:
    """A call's hooks, its request (a stream wrapped if the hooks watch it), and the refusal
    to end it with before the handler runs, if any. The same for both APIs."""
    call = layer.open(plan, context, kind)
    refusal = call.admit()
    if refusal is None:
        if not kind.request_streaming:
            refusal = call.check_request(request)
        elif call.watches_requests:
            stream = _AsyncRequests if kind.flavor is AIO else _Requests
            request = stream(request, call, context)
    return call, request, refusal


class _Ending:
    """Calls ``on_end`` with how the block ended (also when a generator is closed in it)."""

    __slots__ = ("_call",)

    def __init__(self, call: CallHooks) -> None:
        self._call = call

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._call.on_end(exc)


# The synchronous API: context.abort() raises.


def _abort_if(context: grpc.ServicerContext, refusal: Refusal | None) -> None:
    if refusal is not None:
        context.abort(refusal.code, refusal.details)
        raise AssertionError("unreachable: context.abort raises")


def _sync_behavior(
    layer: ServerLayer[PlanT], plan: PlanT, handler: Any, kind: CallKind
) -> Behavior:
    inner = behavior_of(handler)

    if kind.response_streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
            call, request, refusal = _start(layer, plan, kind, request, context)
            _abort_if(context, refusal)
            scope = call.scope()
            if scope is None and not (call.watches_responses or call.watches_end):
                return inner(request, context)  # type: ignore[no-any-return]
            try:
                responses = _run(inner, request, context, scope)
            except BaseException as exc:
                call.on_end(exc)
                raise
            return _responses(call, responses, scope)

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        call, request, refusal = _start(layer, plan, kind, request, context)
        _abort_if(context, refusal)
        with _Ending(call):
            return _run(inner, request, context, call.scope())

    return unary


def _run(inner: Behavior, request: Any, context: Any, scope: Scope | None) -> Any:
    if scope is None:
        return inner(request, context)
    with scope:
        return inner(request, context)


def _responses(call: CallHooks, responses: Iterable[Any], scope: Scope | None) -> Iterator[Any]:
    iterator = responses if scope is None else _in_scope(scope, responses)
    with _Ending(call):
        if call.watches_responses:
            for index, response in enumerate(iterator, 1):
                call.on_response(response, index)
                yield response
        else:
            yield from iterator


def _in_scope(scope: Scope, responses: Iterable[Any]) -> Iterator[Any]:
    # Entered around each step only: gRPC may finish the iterator on another thread, or never.
    iterator = iter(responses)
    try:
        while True:
            with scope:
                try:
                    response = next(iterator)
                except StopIteration:
                    return
            yield response
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # a cancelled call: let the handler's generator clean up now


class _RequestStream:
    """A request stream whose requests pass the call's hooks before the handler gets them.
    Read when the handler asks, on its thread, so its own deadline for a request holds."""

    __slots__ = ("_call", "_context", "_index", "_requests")

    def __init__(self, requests: Any, call: CallHooks, context: Any) -> None:
        self._requests = requests
        self._call = call
        self._context = context
        self._index = 0

    def _before(self) -> Refusal | None:
        call = self._call
        return call.before_request() if call.checks_before_request else None

    def _after(self, request: Any) -> Refusal | None:
        self._index += 1
        return self._call.on_request(request, self._index)


class _Requests(_RequestStream):
    __slots__ = ()

    def __init__(self, requests: Iterable[Any], call: CallHooks, context: Any) -> None:
        super().__init__(iter(requests), call, context)

    def __iter__(self) -> _Requests:
        return self

    def __next__(self) -> Any:
        _abort_if(self._context, self._before())
        request = next(self._requests)
        _abort_if(self._context, self._after(request))
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._requests, name)  # the request iterator's own API


# grpc.aio: context.abort() is awaited (and raises).


async def _aio_abort(context: Any, refusal: Refusal) -> None:
    await context.abort(refusal.code, refusal.details)
    raise AssertionError("unreachable: context.abort raises")


def _aio_behavior(layer: ServerLayer[PlanT], plan: PlanT, handler: Any, kind: CallKind) -> Behavior:
    inner = behavior_of(handler)

    if kind.response_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            call, request, refusal = _start(layer, plan, kind, request, context)
            if refusal is not None:
                await _aio_abort(context, refusal)
            watches, index = call.watches_responses, 0
            with call.scope() or _NO_SCOPE, _Ending(call):
                async for response in as_async_stream(inner, request, context):
                    if watches:
                        index += 1
                        call.on_response(response, index)
                    yield response

        return stream

    async def unary(request: Any, context: Any) -> Any:
        call, request, refusal = _start(layer, plan, kind, request, context)
        if refusal is not None:
            await _aio_abort(context, refusal)
        with call.scope() or _NO_SCOPE, _Ending(call):
            return await inner(request, context)

    return unary


class _AsyncRequests(_RequestStream):
    __slots__ = ()

    def __aiter__(self) -> _AsyncRequests:
        return self

    async def __anext__(self) -> Any:
        refusal = self._before()
        if refusal is not None:
            await _aio_abort(self._context, refusal)
        request = await self._requests.__anext__()
        refusal = self._after(request)
        if refusal is not None:  # (no coroutine per request when all is well)
            await _aio_abort(self._context, refusal)
        return request

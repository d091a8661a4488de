"""The server side: the interceptor that verifies tokens, roles and identities."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import grpc

from raftgrpc._errors import ConfigError
from raftgrpc._security import tls
from raftgrpc.interceptors._handlers import (
    AioLayer,
    Behavior,
    as_async_stream,
    behavior_of,
    rewrap,
    wrap_handler,
)
from raftgrpc.interceptors.auth._common import (
    DEFAULT_EXEMPT_METHODS,
    DEFAULT_METHOD_ROLES,
    AuthError,
    AuthMode,
    Claims,
    _current_claims,
    _unauthenticated,
    logger,
    required_role_for,
)
from raftgrpc.interceptors.auth._verify import (
    TokenVerifier,
)


def _peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:5678`` -> ``ipv4:1.2.3.4`` (a reconnecting client keeps its bucket)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class _DenialLogLimiter:
    """At most ``limit`` denial log lines per peer host per ``window_s``; the rest are
    counted and reported in one summary line when the window ends."""

    _OVERFLOW = "<other peers>"

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float], max_peers: int = 1024
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._max_peers = max_peers
        self._lock = threading.Lock()
        self._peers: dict[str, list[float]] = {}  # host -> [window start, logged, suppressed]
        self._next_sweep = clock() + window_s

    def admit(self, peer: str) -> tuple[bool, list[tuple[str, int]]]:
        """Whether to log a denial from ``peer``, and (host, count) summaries now due."""
        host = _peer_host(peer)
        summaries: list[tuple[str, int]] = []
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._next_sweep = now + self._window_s
                for key, old in list(self._peers.items()):
                    if now - old[0] >= self._window_s:
                        if old[2]:
                            summaries.append((key, int(old[2])))
                        del self._peers[key]
            if host not in self._peers and len(self._peers) >= self._max_peers:
                host = self._OVERFLOW
            entry = self._peers.get(host)
            if entry is None or now - entry[0] >= self._window_s:
                if entry is not None and entry[2]:
                    summaries.append((host, int(entry[2])))
                self._peers[host] = [now, 1, 0]
                return True, summaries
            if entry[1] < self._limit:
                entry[1] += 1
                return True, summaries
            entry[2] += 1
            return False, summaries


class _Interceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        verifier: TokenVerifier,
        mode: AuthMode,
        identity_of: Callable[[Any], str | None] | None,
        exempt_methods: Collection[str],
        required_role: str | None,
        limiter: _DenialLogLimiter,
        method_roles: Mapping[str, str] = DEFAULT_METHOD_ROLES,
        bind_unclaimed: Callable[[Any], bool] | None = None,
    ) -> None:
        self._bind_unclaimed = bind_unclaimed
        self._verifier = verifier
        self._mode = mode
        self._identity_of = identity_of
        self._exempt = frozenset(exempt_methods)
        self._required_role = required_role
        self._method_roles: Mapping[str, str] = MappingProxyType(dict(method_roles))
        self._limiter = limiter
        self._window_s = limiter._window_s

    # Runs on gRPC's dispatch thread: only rewraps the handler; all checks run in the
    # wrapped behavior, on the handler's worker thread.
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        return None if handler is None else self.rewrap(handler, handler_call_details)

    def _checked(self, details: grpc.HandlerCallDetails) -> tuple[str, str | None] | None:
        """The method and the role it needs, or None if calls to it are not checked."""
        if self._mode is AuthMode.OFF:
            return None
        method = details.method
        if method in self._exempt:
            return None
        return method, required_role_for(method, self._method_roles, self._required_role)

    def rewrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        checked = self._checked(details)
        if checked is None:
            return handler
        method, role = checked
        streaming_response = handler.response_streaming
        make = self._stream_behavior if handler.request_streaming else self._unary_behavior
        # Every call is checked, non-blocking ones too (they become blocking).
        return wrap_handler(
            handler,
            lambda inner: make(inner, method, role, streaming_response=streaming_response),
            keep_non_blocking=False,
        )

    def rewrap_async(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """:meth:`rewrap` for a coroutine handler (a ``grpc.aio`` server)."""
        checked = self._checked(details)
        if checked is None:
            return handler
        method, role = checked
        inner, request_streaming = behavior_of(handler), handler.request_streaming

        async def admitted(request: Any, context: Any) -> _Call:
            """The call's checks before the handler runs; aborts what is refused."""
            call = _Call(self, context, method, role)
            await _aio_refuse(context, call.authenticate())
            if not request_streaming:
                await _aio_refuse(context, call.check_identity(request))
            return call

        def guarded(request: Any, call: _Call) -> Any:
            return _AsyncGuardedRequests(request, call) if request_streaming else request

        wrapped: Behavior
        if handler.response_streaming:

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                call = await admitted(request, context)
                reset = _current_claims.set(call.claims)
                try:
                    async for response in as_async_stream(inner, guarded(request, call), context):
                        yield response
                finally:
                    _current_claims.reset(reset)

            wrapped = stream
        else:

            async def unary(request: Any, context: Any) -> Any:
                call = await admitted(request, context)
                reset = _current_claims.set(call.claims)
                try:
                    return await inner(guarded(request, call), context)
                finally:
                    _current_claims.reset(reset)

            wrapped = unary
        return rewrap(handler, wrapped)

    # -- behaviors --

    def _unary_behavior(
        self, inner: Any, method: str, role: str | None, *, streaming_response: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(self, context, method, role)
            call.abort_if(call.authenticate())
            call.abort_if(call.check_identity(request))
            return _run(inner, request, context, call.claims, streaming_response)

        return behavior

    def _stream_behavior(
        self, inner: Any, method: str, role: str | None, *, streaming_response: bool
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            call = _Call(self, context, method, role)
            call.abort_if(call.authenticate())
            guarded = _GuardedRequests(iter(requests), call)
            return _run(inner, guarded, context, call.claims, streaming_response)

        return behavior

    # -- logging --

    def log_denied(self, call: _Call, error: AuthError, subject: str | None) -> None:
        event = "auth.audit" if self._mode is AuthMode.AUDIT else "auth.denied"
        peer = call.context.peer()
        admitted, summaries = self._limiter.admit(peer)
        for host, count in summaries:
            logger.warning(
                "raftgrpc: suppressed %d auth denial log lines from %s in the last %.0f s",
                count,
                host,
                self._window_s,
                extra={"event": "auth.suppressed", "peer": host, "count": count},
            )
        if not admitted:
            return
        verb = "would refuse (audit mode)" if event == "auth.audit" else "refused"
        logger.warning(
            "raftgrpc: %s %s from %s%s: %s (%s)",
            verb,
            call.method,
            peer,
            f" as {subject!r}" if subject else "",
            error.reason,
            error.code.name,
            extra={
                "event": event,
                "method": call.method,
                "peer": peer,
                "subject": subject,
                "reason": error.reason,
                "code": error.code.name,
            },
        )

    def log_accepted(self, call: _Call, claims: Claims) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        peer = call.context.peer()
        logger.debug(
            "raftgrpc: accepted %s from %s as %r (role %s, key %s)",
            call.method,
            peer,
            claims.subject,
            claims.role,
            claims.key_id,
            extra={
                "event": "auth.accepted",
                "method": call.method,
                "peer": peer,
                "subject": claims.subject,
                "reason": None,
                "code": grpc.StatusCode.OK.name,
            },
        )


def _run(
    inner: Any, argument: Any, context: grpc.ServicerContext, claims: Claims | None, stream: bool
) -> Any:
    """Call the original behavior with the claims visible through current_claims()."""
    reset = _current_claims.set(claims)
    try:
        result = inner(argument, context)
    finally:
        _current_claims.reset(reset)
    return _with_claims(iter(result), claims) if stream else result


def _with_claims(responses: Iterator[Any], claims: Claims | None) -> Iterator[Any]:
    # Set around each step only: the generator may be finished on another thread or never.
    try:
        while True:
            reset = _current_claims.set(claims)
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                _current_claims.reset(reset)
            yield response
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()  # a cancelled call: let the handler's generator clean up now


class _Call:
    """The auth state of one call, on its handler's thread."""

    __slots__ = ("audit_logged", "claims", "context", "interceptor", "method", "refused", "role")

    def __init__(
        self,
        interceptor: _Interceptor,
        context: grpc.ServicerContext,
        method: str,
        role: str | None = None,
    ) -> None:
        self.interceptor = interceptor
        self.context = context
        self.method = method
        self.role = role
        self.claims: Claims | None = None
        self.audit_logged = False
        self.refused: AuthError | None = None

    # The checks return the error to end the call with (ENFORCE), or None (accepted, or
    # AUDIT mode: logged and let through); the caller aborts, in its API's way.

    def fail(self, error: AuthError, subject: str | None = None) -> AuthError | None:
        """Log; the error to abort with in ENFORCE mode, None in AUDIT mode."""
        self.interceptor.log_denied(self, error, subject)
        if self.interceptor._mode is AuthMode.ENFORCE:
            self.refused = error
            return error
        return None

    def abort_if(self, error: AuthError | None) -> None:
        """End the call (grpcio's synchronous API) if ``error``."""
        if error is not None:
            self.context.abort(error.code, error.reason)
            raise AssertionError("unreachable")  # context.abort raises

    def authenticate(self) -> AuthError | None:
        try:
            token = _bearer_token(self.context.invocation_metadata())
            claims = self.interceptor._verifier.verify(token)
        except AuthError as error:
            return self.fail(error)
        except Exception as exc:  # a bug or a broken key; never let details escape
            logger.exception("raftgrpc: token verification failed unexpectedly")
            return self.fail(_unauthenticated(f"verification error ({type(exc).__name__})"))
        self.claims = claims  # verified, even if the role is refused below (AUDIT mode)
        role = self.role
        if role is not None and claims.role != role:
            return self.fail(
                AuthError(grpc.StatusCode.PERMISSION_DENIED, f"role {role!r} required"),
                claims.subject,
            )
        self.interceptor.log_accepted(self, claims)
        return None

    def check_identity(self, request: Any) -> AuthError | None:
        """Bind the identity ``request`` claims to the token's subject."""
        identity_of = self.interceptor._identity_of
        if identity_of is None or self.claims is None:
            return None
        try:
            claimed = identity_of(request)
        except Exception as exc:
            return self.fail(
                AuthError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"cannot read the claimed identity ({type(exc).__name__})",
                ),
                self.claims.subject,
            )
        if claimed is not None and claimed != self.claims.subject:
            return self.fail(
                AuthError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "token subject does not match the claimed identity",
                ),
                self.claims.subject,
            )
        bind = self.interceptor._bind_unclaimed
        if claimed is None and bind is not None and bind(request):
            # A request that claims no identity (a read-only follower's Hello) is bound by
            # the token alone; over mTLS, the token must then be the certificate holder's
            # own, or a captured token would open such a stream from any certificate.
            identities = tls.peer_identities(self.context)
            if identities and not tls.default_match(self.claims.subject, identities):
                return self.fail(
                    AuthError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        "token subject does not match the client certificate",
                    ),
                    self.claims.subject,
                )
        return None

    def check_fresh(self) -> AuthError | None:
        """A stream cannot outlive its token."""
        claims = self.claims
        if claims is None or not self.interceptor._verifier.expired(claims):
            return None
        if self.interceptor._mode is AuthMode.AUDIT:
            if self.audit_logged:
                return None
            self.audit_logged = True
        return self.fail(_unauthenticated("token expired"), claims.subject)


class _GuardedRequests:
    """A request iterator that checks the first request's identity and, on every request,
    that the token has not expired; the handler never sees a refused request."""

    __slots__ = ("_call", "_first", "_requests")

    def __init__(self, requests: Iterator[Any], call: _Call) -> None:
        self._requests = requests
        self._call = call
        self._first = True

    def __iter__(self) -> _GuardedRequests:
        return self

    def __next__(self) -> Any:
        call = self._call
        call.abort_if(call.refused)  # the handler swallowed the abort and reads on
        request = next(self._requests)
        if self._first:
            self._first = False
            call.abort_if(call.check_identity(request))
        call.abort_if(call.check_fresh())
        return request


class _AsyncGuardedRequests:
    """:class:`_GuardedRequests` for a ``grpc.aio`` request stream."""

    __slots__ = ("_call", "_first", "_requests")

    def __init__(self, requests: AsyncIterator[Any], call: _Call) -> None:
        self._requests = requests
        self._call = call
        self._first = True

    def __aiter__(self) -> _AsyncGuardedRequests:
        return self

    async def __anext__(self) -> Any:
        call = self._call
        context = call.context
        await _aio_refuse(context, call.refused)
        request = await self._requests.__anext__()
        if self._first:
            self._first = False
            await _aio_refuse(context, call.check_identity(request))
        await _aio_refuse(context, call.check_fresh())
        return request


async def _aio_refuse(context: Any, error: AuthError | None) -> None:
    """End a ``grpc.aio`` call if ``error`` (``context.abort`` raises)."""
    if error is not None:
        await context.abort(error.code, error.reason)


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        raise _unauthenticated("missing authorization metadata")
    if len(values) > 1:
        raise _unauthenticated("more than one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        raise _unauthenticated("malformed authorization metadata")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("malformed authorization metadata")
    return token.strip()


def server_interceptor(
    verifier: TokenVerifier,
    mode: AuthMode | str = AuthMode.ENFORCE,
    identity_of: Callable[[Any], str | None] | None = None,
    exempt_methods: Collection[str] = DEFAULT_EXEMPT_METHODS,
    required_role: str | None = None,
    *,
    method_roles: Mapping[str, str] = DEFAULT_METHOD_ROLES,
    denial_log_limit: int = 5,
    denial_log_window_s: float = 10.0,
    monotonic: Callable[[], float] = time.monotonic,
    bind_unclaimed: Callable[[Any], bool] | None = None,
) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
    """A server interceptor that authenticates every call by its bearer token.

    The token is taken from the ``authorization: Bearer <token>`` metadata and verified by
    ``verifier``; a missing or malformed entry, or an invalid token, ends the call with
    ``UNAUTHENTICATED`` and a short reason.

    Roles (the ``raftgrpc_role`` claim, "node" when absent): a method requires the role that
    ``method_roles`` gives the longest prefix of its path (:data:`DEFAULT_METHOD_ROLES`: the
    Raft stream ``/raftgrpc.v1.RaftTransport/`` needs "node", the admin service
    ``/raftgrpc.v1.Admin/`` needs "admin"); a method no prefix matches requires
    ``required_role``, or any role when that is None. A valid token with another role ends
    the call with ``PERMISSION_DENIED`` ("role 'admin' required"). Pass ``method_roles={}``
    to check roles by ``required_role`` alone. Methods in ``exempt_methods`` (health and
    reflection by default) are served without a token.

    Identity binding: ``identity_of(request)`` is applied to the request of a unary call and
    to the first request of a request stream; if it returns an identity other than the
    token's ``sub``, the call ends with ``PERMISSION_DENIED`` ("token subject does not match
    the claimed identity") and the handler never sees that request (if it raises:
    ``INVALID_ARGUMENT``). On every request of a stream, a token that has expired (``exp``
    plus the leeway) ends the stream with ``UNAUTHENTICATED`` ("token expired"): a stream
    cannot outlive its token, the client redials with a fresh one.

    Inside the handler, :func:`current_claims` returns the verified claims.

    ``mode``: ``ENFORCE`` refuses; ``AUDIT`` logs what it would refuse and serves the call;
    ``OFF`` returns every handler unchanged.

    The checks run on the handler's worker thread (the wrapped handler keeps the method's
    serializers and streaming kind); gRPC's dispatch thread only rewraps the handler.

    Each decision is logged on ``raftgrpc.auth`` with ``extra`` keys ``event``
    (``auth.accepted`` at DEBUG; ``auth.denied``, or ``auth.audit`` in AUDIT mode, at
    WARNING), ``method``, ``peer``, ``subject``, ``reason`` and ``code``. Denial lines are
    limited to ``denial_log_limit`` per peer host per ``denial_log_window_s``; the rest are
    counted, and reported in one ``auth.suppressed`` line (``peer``, ``count``) with the
    first denial after the window. ``monotonic`` is injectable for tests.

    ``bind_unclaimed(request)``: for a request that claims no identity (``identity_of``
    returns None) and for which this returns true, a caller that presented a verified client
    certificate must hold a token whose subject that certificate names
    (:func:`raftgrpc._security.tls.default_match`), else ``PERMISSION_DENIED`` ("token subject does
    not
    match the client certificate"). The builder binds read-only Hellos this way.
    """
    mode = AuthMode(mode)
    if denial_log_limit < 1 or denial_log_window_s <= 0:
        raise ConfigError("denial_log_limit must be >= 1 and denial_log_window_s > 0")
    limiter = _DenialLogLimiter(denial_log_limit, denial_log_window_s, monotonic)
    for prefix, role in method_roles.items():
        if not prefix.startswith("/") or not role:
            raise ConfigError(
                f"method_roles: {prefix!r} -> {role!r}: a prefix starts with '/' and a role "
                "is non-empty"
            )
    return _Interceptor(
        verifier,
        mode,
        identity_of,
        exempt_methods,
        required_role,
        limiter,
        method_roles,
        bind_unclaimed=bind_unclaimed,
    )


def aio_server_interceptor(*args: Any, **kwargs: Any) -> grpc.aio.ServerInterceptor[Any, Any]:
    """The layer :func:`server_interceptor` makes (same arguments), for a ``grpc.aio`` server
    (a node's own server): coroutine handlers are checked by its async wrapper, handlers of
    grpcio's synchronous API (run in ``grpc.aio``'s thread pool) by its synchronous one."""
    return AioLayer.of(server_interceptor(*args, **kwargs))

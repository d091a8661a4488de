"""The server side: the interceptor that verifies tokens, roles and identities."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, cast

import grpc

from raftgrpc._errors import ConfigError
from raftgrpc._security import tls
from raftgrpc.interceptors._skeleton import CallHooks, CallKind, Refusal, ServerLayer
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


class _Interceptor(ServerLayer[tuple[str, str | None]]):
    # Every call is checked, non-blocking ones too (they become blocking).
    keep_non_blocking = False

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

    def select(self, details: grpc.HandlerCallDetails) -> tuple[str, str | None] | None:
        """The method and the role it needs, or None if calls to it are not checked."""
        if self._mode is AuthMode.OFF:
            return None
        method = details.method
        if method in self._exempt:
            return None
        return method, required_role_for(method, self._method_roles, self._required_role)

    def open(self, plan: tuple[str, str | None], context: Any, kind: CallKind) -> CallHooks:
        method, role = plan
        return _Call(self, context, method, role)

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


class _Call(CallHooks):
    """The auth state of one call, on its handler's thread."""

    __slots__ = (
        "_scope",
        "audit_logged",
        "claims",
        "context",
        "interceptor",
        "method",
        "refused",
        "role",
    )

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
        self._scope = _ClaimsScope(self)

    # -- the hooks: a unary request's identity is checked with the call; a stream's first
    # request is checked for its identity, and every request for the token's expiry.

    def admit(self) -> Refusal | None:
        return _refusal(self.authenticate())

    def check_request(self, request: Any) -> Refusal | None:
        return _refusal(self.check_identity(request))

    def before_request(self) -> Refusal | None:
        return _refusal(self.refused)  # the handler swallowed the abort and reads on

    def on_request(self, request: Any, index: int) -> Refusal | None:
        if index == 1:
            refused = self.check_identity(request)
            if refused is not None:
                return _refusal(refused)
        return _refusal(self.check_fresh())

    def scope(self) -> _ClaimsScope:
        """The verified claims, visible to the handler through current_claims()."""
        return self._scope

    # The checks return the error to end the call with (ENFORCE), or None (accepted, or
    # AUDIT mode: logged and let through); the skeleton aborts, in its API's way.

    def fail(self, error: AuthError, subject: str | None = None) -> AuthError | None:
        """Log; the error to abort with in ENFORCE mode, None in AUDIT mode."""
        self.interceptor.log_denied(self, error, subject)
        if self.interceptor._mode is AuthMode.ENFORCE:
            self.refused = error
            return error
        return None

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


class _ClaimsScope:
    """Makes a call's claims current; entered once per step of the call (see
    :meth:`raftgrpc.interceptors._skeleton.CallHooks.scope`)."""

    __slots__ = ("_call", "_reset")

    def __init__(self, call: _Call) -> None:
        self._call = call

    def __enter__(self) -> None:
        self._reset = _current_claims.set(self._call.claims)

    def __exit__(self, *exc_info: object) -> None:
        _current_claims.reset(self._reset)


def _refusal(error: AuthError | None) -> Refusal | None:
    return None if error is None else Refusal(error.code, error.reason)


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
    return cast(_Interceptor, server_interceptor(*args, **kwargs)).aio()

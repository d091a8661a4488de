"""mTLS identity binding: the node id a peer claims must be one its certificate names.

A peer says who it is in the first message of its stream (the Hello's node id); TLS says
what its *verified* client certificate names (:func:`peer_identities`). The server layer
here refuses a claim the certificate does not back (:func:`default_match` is the rule, see
:mod:`raftgrpc._security.tls`), before the handler reads the message::

    server = grpc.server(pool, interceptors=[identity_interceptor(hello_node_id)])
    server.add_secure_port(address, tls.server_credentials(cfg))  # require_client_cert

``TransportBuilder.with_tls`` adds it to the chain for mTLS configurations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from raftgrpc._security.tls import default_match, peer_identities
from raftgrpc.interceptors._skeleton import CallHooks, CallKind, Refusal, ServerLayer

__all__ = [
    "aio_identity_interceptor",
    "default_match",
    "identity_interceptor",
    "peer_identities",
]

_logger = logging.getLogger("raftgrpc.tls")

# Claimed ids are attacker-controlled: this much of one reaches logs and status details.
_CLAIM_LOG_CHARS = 200


def identity_interceptor(
    identity_of: Callable[[Any], str | None],
    *,
    match: Callable[[str, list[str]], bool] = default_match,
    allow_unclaimed: bool = True,
) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
    """A server interceptor that binds a claimed node id to the client certificate (mTLS).

    For every call the peer must have presented a verified client certificate, otherwise the
    call ends with ``UNAUTHENTICATED``. The first request (of a request stream; the request
    of a unary call) is passed to ``identity_of``, which returns the node id it claims (e.g.
    the Hello's ``"127.0.0.1:4321"``) or None. The claim is accepted if
    ``match(claimed, peer_identities(context))`` is true (:func:`default_match` by default);
    otherwise the call ends with ``PERMISSION_DENIED`` ("client certificate does not match the
    claimed node") and the handler never receives that message. A first message that claims
    no node (``identity_of`` returns None: a read-only follower's Hello, or a message it cannot
    read) is passed on, from a verified certificate holder, for the handler to judge; with
    ``allow_unclaimed=False`` it is refused with ``PERMISSION_DENIED`` instead. If
    ``identity_of`` raises, the call ends with ``INVALID_ARGUMENT``.

    Denials are logged on ``raftgrpc.tls`` with ``extra`` ``event="tls.denied"``, ``peer``,
    ``claimed`` and ``reason``.

    The checks run on the handler's worker thread, never on gRPC's dispatch thread. For a
    request stream the first request is read when the handler first asks for a request, so
    anything the handler sends before reading is not gated. A handler of grpcio's
    non-blocking mode (health Watch) is left as it is: the TLS handshake already required
    the client's certificate, and it reads no claim.
    """
    return _IdentityLayer(identity_of, match, allow_unclaimed)


def aio_identity_interceptor(
    identity_of: Callable[[Any], str | None],
    *,
    match: Callable[[str, list[str]], bool] = default_match,
    allow_unclaimed: bool = True,
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """:func:`identity_interceptor` for a ``grpc.aio`` server (a node's own server)."""
    return _IdentityLayer(identity_of, match, allow_unclaimed).aio()


class _IdentityLayer(ServerLayer[str]):
    def __init__(
        self,
        identity_of: Callable[[Any], str | None],
        match: Callable[[str, list[str]], bool],
        allow_unclaimed: bool,
    ) -> None:
        self.identity_of = identity_of
        self.match = match
        self.allow_unclaimed = allow_unclaimed

    def select(self, details: grpc.HandlerCallDetails) -> str:
        return details.method

    def open(self, plan: str, context: Any, kind: CallKind) -> CallHooks:
        return _IdentityCall(self, context, plan)


class _IdentityCall(CallHooks):
    """One call: the certificate's identities, then the first request's claim."""

    __slots__ = ("_context", "_identities", "_layer", "_method")

    def __init__(self, layer: _IdentityLayer, context: Any, method: str) -> None:
        self._layer = layer
        self._context = context
        self._method = method
        self._identities: list[str] = []

    def admit(self) -> Refusal | None:
        self._identities = peer_identities(self._context)
        if self._identities:
            return None
        return self._deny(
            grpc.StatusCode.UNAUTHENTICATED,
            "a client certificate is required",
            "no verified client certificate",
        )

    def check_request(self, request: Any) -> Refusal | None:
        return self._check(request)

    def on_request(self, request: Any, index: int) -> Refusal | None:
        return self._check(request) if index == 1 else None

    def _check(self, request: Any) -> Refusal | None:
        """None if the first request's claim is allowed; why the call is refused otherwise."""
        layer = self._layer
        try:
            claimed = layer.identity_of(request)
        except Exception as exc:
            return self._deny(
                grpc.StatusCode.INVALID_ARGUMENT,
                "cannot read the claimed node id",
                f"identity_of raised {type(exc).__name__}",
            )
        if claimed is None:
            if layer.allow_unclaimed:
                return None
            return self._deny(
                grpc.StatusCode.PERMISSION_DENIED,
                "the first message claims no node id",
                "no node claimed",
            )
        try:
            ok = layer.match(claimed, self._identities)
        except Exception:
            _logger.exception("raftgrpc: TLS identity match function failed")
            ok = False
        if ok:
            return None
        return self._deny(
            grpc.StatusCode.PERMISSION_DENIED,
            "client certificate does not match the claimed node",
            f"certificate identities {self._identities} do not allow the claimed node id",
            claimed[:_CLAIM_LOG_CHARS],
        )

    def _deny(
        self, code: grpc.StatusCode, detail: str, reason: str, claimed: str | None = None
    ) -> Refusal:
        """Log a refusal (``reason`` for the log only) and return it (``detail`` for the
        client)."""
        peer = self._context.peer()
        _logger.warning(
            "raftgrpc: refused %s from %s (claimed %r): %s",
            self._method,
            peer,
            claimed,
            reason,
            extra={"event": "tls.denied", "peer": peer, "claimed": claimed, "reason": reason},
        )
        return Refusal(code, detail)

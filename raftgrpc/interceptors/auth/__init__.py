"""JWT authentication for raftgrpc's gRPC traffic.

Server side
    :class:`KeySet` holds the verification keys (a JWKS file, re-read when it changes, so
    keys can be rotated without a restart), :class:`TokenVerifier` checks a token against it
    and :func:`server_interceptor` checks the ``authorization: Bearer <token>`` metadata of
    every call, in one of three :class:`AuthMode`\\ s (``OFF``, ``AUDIT``, ``ENFORCE``) so that
    auth can be switched on in a running cluster by rolling restarts: first every node sends
    tokens, then every node audits, then every node enforces.

Client side
    A :class:`TokenSource` supplies the token: :class:`SigningTokenSource` mints (and
    refreshes) its own, :class:`FileTokenSource` reads one minted by an operator
    (``raftgrpc token mint``), :class:`StaticTokenSource` holds a fixed one.
    :func:`call_credentials` attaches it to calls.

Tokens never travel on an insecure channel unless that is explicitly allowed for loopback
development: gRPC sends call credentials (:func:`call_credentials`) only on channels whose
credentials give privacy and integrity, i.e. TLS, or ``grpc.local_channel_credentials()``,
which gRPC accepts on loopback (or Unix socket) connections only. On a plaintext channel
the call fails instead of sending the token. :func:`client_interceptor` is the one way to
attach a token to a plaintext channel and requires ``allow_insecure=True``.

Verification never makes a network call (``jku``/``x5u`` headers are ignored) and rejects
unsigned tokens (``alg: none``), HMAC tokens unless HMAC is explicitly configured with
``oct`` keys, and any algorithm that does not fit the key its ``kid`` selects (algorithm
confusion). Neither error details nor log lines ever contain a token or key material.
"""

from __future__ import annotations

from raftgrpc.interceptors.auth._common import (
    ADMIN_ROLE,
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_ALGORITHMS,
    DEFAULT_EXEMPT_METHODS,
    DEFAULT_METHOD_ROLES,
    DEFAULT_ROLE,
    HMAC_ALGORITHMS,
    ROLE_CLAIM,
    AuthError,
    AuthMode,
    Claims,
    current_claims,
    required_role_for,
)
from raftgrpc.interceptors.auth._keys import KeySet
from raftgrpc.interceptors.auth._server import aio_server_interceptor, server_interceptor
from raftgrpc.interceptors.auth._tokens import (
    FileTokenSource,
    SigningTokenSource,
    StaticTokenSource,
    TokenSource,
    call_credentials,
    client_interceptor,
)
from raftgrpc.interceptors.auth._verify import TokenVerifier

__all__ = [
    "ADMIN_ROLE",
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_EXEMPT_METHODS",
    "DEFAULT_METHOD_ROLES",
    "DEFAULT_ROLE",
    "HMAC_ALGORITHMS",
    "ROLE_CLAIM",
    "AuthError",
    "AuthMode",
    "Claims",
    "FileTokenSource",
    "KeySet",
    "SigningTokenSource",
    "StaticTokenSource",
    "TokenSource",
    "TokenVerifier",
    "aio_server_interceptor",
    "call_credentials",
    "client_interceptor",
    "current_claims",
    "required_role_for",
    "server_interceptor",
]

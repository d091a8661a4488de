"""Names shared by the auth modules: roles, algorithms, errors, modes, claims."""

from __future__ import annotations

import contextvars
import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import grpc

from raftgrpc._errors import AuthError as AuthError  # re-exported: the auth modules raise it

logger = logging.getLogger("raftgrpc.auth")

ROLE_CLAIM = "raftgrpc_role"
"""The custom claim that carries a token's role ("node" when absent; "admin" for operators)."""

DEFAULT_ROLE = "node"

DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "ES256",
    "ES384",
    "EdDSA",
)
"""What a :class:`TokenVerifier` accepts by default: asymmetric algorithms only."""

ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset({*DEFAULT_ALGORITHMS, "PS384", "PS512", "ES512"})
"""Every asymmetric algorithm a verifier may be configured with."""

HMAC_ALGORITHMS: frozenset[str] = frozenset({"HS256", "HS384", "HS512"})
"""Symmetric algorithms: accepted only when listed explicitly and the key is an ``oct`` key."""

DEFAULT_EXEMPT_METHODS: frozenset[str] = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }
)
"""Methods :func:`server_interceptor` serves without a token: health checks and reflection."""

ADMIN_ROLE = "admin"

DEFAULT_METHOD_ROLES: Mapping[str, str] = MappingProxyType(
    {
        "/raftgrpc.v1.RaftTransport/": DEFAULT_ROLE,
        "/raftgrpc.v1.Admin/": ADMIN_ROLE,
    }
)
"""The role :func:`server_interceptor` requires per method-path prefix: the Raft stream is
for node tokens only, the admin service (:mod:`raftgrpc._ops.admin_service`) for admin tokens
only."""


def required_role_for(
    method: str, method_roles: Mapping[str, str], default: str | None = None
) -> str | None:
    """The role ``method`` (``/package.Service/Method``) requires: that of the longest prefix
    of it in ``method_roles``, else ``default`` (None: any role)."""
    best: tuple[int, str] | None = None
    for prefix, role in method_roles.items():
        if method.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), role)
    return default if best is None else best[1]


_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]

# Which algorithms fit which key type (and, for EC, curve). A token's alg must fit the key
# its kid selects; this is what stops algorithm confusion (an RSA public key used as an
# HMAC secret) independently of PyJWT's own checks.
_ALGORITHMS_BY_KTY: Mapping[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
    "oct": HMAC_ALGORITHMS,
}
_EC_CURVE_OF = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})

_MAX_TOKEN_CHARS = 8192
_MAX_JWKS_BYTES = 1 << 20
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


# -- errors, modes, claims -----------------------------------------------------------------


def _unauthenticated(reason: str) -> AuthError:
    return AuthError(grpc.StatusCode.UNAUTHENTICATED, reason)


class AuthMode(enum.Enum):
    """How :func:`server_interceptor` treats calls.

    ``OFF``: no checks at all (the interceptor passes every call through untouched).
    ``AUDIT``: tokens are verified and failures logged (``event="auth.audit"``), but every
    call is accepted: the step between "all nodes send tokens" and "all nodes enforce".
    ``ENFORCE``: calls without a valid token are refused.

    ``AuthMode("audit")`` (any case) works, for configuration files.
    """

    OFF = "off"
    AUDIT = "audit"
    ENFORCE = "enforce"

    @classmethod
    def _missing_(cls, value: object) -> AuthMode | None:
        if isinstance(value, str):
            for member in cls:
                if member.value == value.strip().lower():
                    return member
        return None


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token.

    ``audience`` holds every audience the token names (one of them is the verifier's).
    ``expires_at`` and ``issued_at`` are Unix times. ``role`` is the ``raftgrpc_role``
    claim ("node" when absent). ``raw`` is the whole (read-only) payload.
    """

    subject: str
    issuer: str
    audience: tuple[str, ...]
    expires_at: float
    issued_at: float
    key_id: str
    role: str = DEFAULT_ROLE
    raw: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False, repr=False
    )


_current_claims: contextvars.ContextVar[Claims | None] = contextvars.ContextVar(
    "raftgrpc_auth_claims", default=None
)


def current_claims() -> Claims | None:
    """The verified claims of the call being handled, inside a handler behind
    :func:`server_interceptor`; None elsewhere, for exempt methods, in ``OFF`` mode, and in
    ``AUDIT`` mode when the call's token was not valid."""
    return _current_claims.get()


# -- keys --------------------------------------------------------------------------------

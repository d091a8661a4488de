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

import contextvars
import enum
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, runtime_checkable

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from raftgrpc.errors import ConfigError, RaftGrpcError
from raftgrpc.interceptors._handlers import (
    AnyKindClientInterceptor,
    CallDetails,
    behavior_of,
    rewrap,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_EXEMPT_METHODS",
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
    "call_credentials",
    "client_interceptor",
    "current_claims",
    "server_interceptor",
]

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


class AuthError(RaftGrpcError):
    """A call's credentials were refused.

    ``code`` is the gRPC status the call ends with (``UNAUTHENTICATED`` for every problem
    with the token itself, ``PERMISSION_DENIED`` for a valid token that may not do what it
    tries). ``reason`` is short, safe to show to the client and to log: it never contains
    the token or any key material.
    """

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"AuthError({self.code.name}, {self.reason!r})"


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


@dataclass(frozen=True)
class _Key:
    kid: str
    kty: str
    jwk: Mapping[str, Any]
    default: PyJWK
    by_alg: dict[str, PyJWK] = field(default_factory=dict, compare=False)

    def for_algorithm(self, alg: str) -> PyJWK:
        """The key bound to ``alg``; raises AuthError if ``alg`` does not fit this key."""
        pinned = self.jwk.get("alg")
        if alg not in _ALGORITHMS_BY_KTY.get(self.kty, ()) or (pinned and pinned != alg):
            raise _unauthenticated("algorithm does not match the key")
        if self.kty == "EC" and self.jwk.get("crv") != _EC_CURVE_OF.get(alg):
            raise _unauthenticated("algorithm does not match the key")
        if alg == self.default.algorithm_name:
            return self.default
        key = self.by_alg.get(alg)
        if key is None:
            try:
                key = PyJWK(dict(self.jwk), algorithm=alg)
            except PyJWTError:
                raise _unauthenticated("algorithm does not match the key") from None
            self.by_alg[alg] = key  # a benign race: both threads build an equal key
        return key


def _parse_jwks(document: Any, where: str) -> dict[str, _Key]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{where}: a JWKS must be a JSON object with a 'keys' list")
    keys: dict[str, _Key] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            raise ConfigError(f"{where}: key #{index} is not a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue  # an encryption key, not ours to use
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{where}: key #{index} has no 'kid'")
        if kid in keys:
            raise ConfigError(f"{where}: key id {kid!r} appears twice")
        kty = jwk.get("kty")
        if not isinstance(kty, str) or kty not in _ALGORITHMS_BY_KTY:
            raise ConfigError(f"{where}: key {kid!r} has an unsupported kty {kty!r}")
        alg = jwk.get("alg")
        if alg is not None and alg not in _ALGORITHMS_BY_KTY[kty]:
            raise ConfigError(f"{where}: key {kid!r} ({kty}) cannot be used with alg {alg!r}")
        if kty != "oct" and "d" in jwk:
            raise ConfigError(
                f"{where}: key {kid!r} holds private key material; publish public keys only"
            )
        if kty == "OKP" and jwk.get("crv") not in _OKP_CURVES:
            raise ConfigError(f"{where}: key {kid!r} has an unsupported curve")
        try:
            default = PyJWK(dict(jwk))
        except PyJWTError as exc:
            # PyJWT's messages can quote the JWK (a private oct key); name the type only.
            raise ConfigError(
                f"{where}: key {kid!r} is not a usable JWK ({type(exc).__name__})"
            ) from None
        keys[kid] = _Key(kid=kid, kty=kty, jwk=MappingProxyType(dict(jwk)), default=default)
    return keys


def _file_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class KeySet:
    """The keys that verify tokens, by key id (``kid``).

    Several keys can be valid at once: that is how keys are rotated (add the new key, move
    every node to tokens signed with it, then remove the old key). A key set read from a
    file (:meth:`from_file`) follows the file: at most every ``reload_interval_s`` a
    verification ``os.stat``\\ s it, and re-reads it only when its mtime, size or inode
    changed. A reload never blocks another thread (threads that find a reload in progress
    go on with the current keys), and a file that fails to parse (e.g. half written) is
    logged and leaves the current keys in place. There is never a network fetch.
    """

    def __init__(self, jwks: Iterable[Mapping[str, Any]] = ()) -> None:
        """A fixed key set from public JWKs (dicts), each with a ``kid``; see
        :meth:`from_jwks` for a JWKS document and :meth:`from_file` for a file."""
        self._setup(_parse_jwks({"keys": list(jwks)}, "KeySet"), None, None, 0.0, time.monotonic)

    def _setup(
        self,
        keys: Mapping[str, _Key],
        path: Path | None,
        signature: tuple[int, int, int, int] | None,
        reload_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        if reload_interval_s < 0:
            raise ConfigError("reload_interval_s must be >= 0")
        self._keys: Mapping[str, _Key] = MappingProxyType(dict(keys))
        self._path = path
        self._signature = signature
        self._failed_signature: tuple[int, int, int, int] | None = None
        self._reload_interval_s = float(reload_interval_s)
        self._clock = clock
        self._next_check = clock() + self._reload_interval_s
        self._reload_lock = threading.Lock()

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """A fixed key set from a JWKS document (``{"keys": [...]}``). Every key needs a
        ``kid``; keys with ``use`` other than ``sig`` are skipped. Each key is loaded as a
        PyJWT ``PyJWK``; ConfigError if one cannot be."""
        key_set = cls.__new__(cls)
        key_set._setup(_parse_jwks(jwks, "JWKS"), None, None, 0.0, time.monotonic)
        return key_set

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        reload_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> KeySet:
        """A key set that follows the JWKS file at ``path`` (see the class docstring).

        ``clock`` (monotonic seconds) is injectable for tests. Raises ConfigError if the file
        cannot be read or parsed now.
        """
        file = Path(path)
        try:
            keys, signature = cls._read(file)
        except OSError as exc:
            raise ConfigError(f"cannot read JWKS file {file}: {exc.strerror or exc}") from None
        key_set = cls.__new__(cls)
        key_set._setup(keys, file, signature, reload_interval_s, clock)
        return key_set

    @staticmethod
    def _read(file: Path) -> tuple[dict[str, _Key], tuple[int, int, int, int]]:
        with file.open("rb") as stream:
            signature = _file_signature(os.fstat(stream.fileno()))
            data = stream.read(_MAX_JWKS_BYTES + 1)
        if len(data) > _MAX_JWKS_BYTES:
            raise ConfigError(f"{file}: JWKS file larger than {_MAX_JWKS_BYTES} bytes")
        try:
            document = json.loads(data)
        except ValueError:
            raise ConfigError(f"{file}: not valid JSON") from None
        return _parse_jwks(document, str(file)), signature

    @property
    def path(self) -> Path | None:
        """The JWKS file this key set follows, or None for a fixed key set."""
        return self._path

    def key_ids(self) -> frozenset[str]:
        """The ids of the current keys."""
        self._maybe_reload()
        return frozenset(self._keys)

    def has_symmetric_keys(self) -> bool:
        """Whether the current keys include an ``oct`` (HMAC) key."""
        return any(key.kty == "oct" for key in self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, kid: str, algorithm: str) -> PyJWK:
        """The key with id ``kid``, bound to ``algorithm``.

        Raises :class:`AuthError` (UNAUTHENTICATED) "unknown key id" if there is no such key,
        or "algorithm does not match the key" if ``algorithm`` does not fit it.
        """
        self._maybe_reload()
        key = self._keys.get(kid)
        if key is None:
            raise _unauthenticated("unknown key id")
        return key.for_algorithm(algorithm)

    def reload(self) -> bool:
        """Re-read the file now if it changed; True if the keys were replaced. Blocks until
        any reload in progress ends. A fixed key set returns False."""
        with self._reload_lock:
            return self._reload_locked()

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = self._clock()
        if now < self._next_check:
            return
        if not self._reload_lock.acquire(blocking=False):
            return  # another thread is at it; use the current keys
        try:
            self._next_check = now + self._reload_interval_s
            self._reload_locked()
        finally:
            self._reload_lock.release()

    def _reload_locked(self) -> bool:
        if self._path is None:
            return False
        try:
            signature = _file_signature(os.stat(self._path))
        except OSError as exc:
            self._reload_failed(None, f"cannot stat it: {exc.strerror or exc}")
            return False
        if signature == self._signature:
            return False
        try:
            keys, signature = self._read(self._path)
        except (OSError, ConfigError) as exc:
            self._reload_failed(signature, str(exc))
            return False
        old = set(self._keys)
        self._keys = MappingProxyType(keys)
        self._signature = signature
        self._failed_signature = None
        logger.info(
            "raftgrpc: reloaded JWKS %s: keys %s (added %s, removed %s)",
            self._path,
            sorted(keys),
            sorted(set(keys) - old),
            sorted(old - set(keys)),
            extra={"event": "auth.keys_reloaded", "key_ids": sorted(keys)},
        )
        return True

    def _reload_failed(self, signature: tuple[int, int, int, int] | None, why: str) -> None:
        # Log once per version of the file; the next check retries.
        if signature is not None and signature == self._failed_signature:
            return
        self._failed_signature = signature
        logger.warning(
            "raftgrpc: keeping the current keys, JWKS %s did not load: %s",
            self._path,
            why,
            extra={"event": "auth.keys_reload_failed", "reason": why},
        )


# -- verification --------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """``value`` as a finite float if it is a JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class TokenVerifier:
    """Verifies tokens: signature (by the key their ``kid`` names), audience, issuer, expiry.

    ``audience`` and ``issuer`` must match the token's ``aud`` (or one of them) and ``iss``.
    ``exp``, ``iat``, ``sub``, ``aud`` and ``iss`` are required; ``exp``, ``iat`` and (if
    present) ``nbf`` are checked against ``clock()`` with ``leeway_s`` of tolerance.
    ``algorithms`` defaults to :data:`DEFAULT_ALGORITHMS` (asymmetric only). HMAC
    (``HS256``...) is accepted only if listed here *and* the token's key is an ``oct`` key.
    """

    def __init__(
        self,
        keys: KeySet,
        audience: str,
        issuer: str,
        leeway_s: float = 30.0,
        algorithms: Sequence[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience or not issuer:
            raise ConfigError("TokenVerifier needs a non-empty audience and issuer")
        if leeway_s < 0:
            raise ConfigError("leeway_s must be >= 0")
        algs = tuple(DEFAULT_ALGORITHMS if algorithms is None else algorithms)
        if not algs:
            raise ConfigError("TokenVerifier needs at least one algorithm")
        unknown = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS]
        if unknown:
            raise ConfigError(f"unsupported or insecure algorithms: {unknown}")
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = float(leeway_s)
        self._algorithms = algs
        self._clock = clock

    @property
    def keys(self) -> KeySet:
        """The verification keys."""
        return self._keys

    @property
    def audience(self) -> str:
        """The audience a token must name."""
        return self._audience

    @property
    def issuer(self) -> str:
        """The issuer a token must name."""
        return self._issuer

    @property
    def leeway_s(self) -> float:
        """Tolerated clock skew, in seconds."""
        return self._leeway_s

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The accepted signature algorithms."""
        return self._algorithms

    def now(self) -> float:
        """The current Unix time, as this verifier sees it."""
        return self._clock()

    def expired(self, claims: Claims, now: float | None = None) -> bool:
        """Whether ``claims`` have expired (``exp`` plus the leeway is past)."""
        current = self._clock() if now is None else now
        return current > claims.expires_at + self._leeway_s

    def verify(self, token: str) -> Claims:
        """The claims of ``token`` if it is valid; raises :class:`AuthError` (always
        UNAUTHENTICATED) with a short reason otherwise."""
        if not isinstance(token, str) or not token:
            raise _unauthenticated("missing token")
        if len(token) > _MAX_TOKEN_CHARS or _TOKEN_SHAPE.fullmatch(token) is None:
            raise _unauthenticated("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise _unauthenticated("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _unauthenticated("algorithm not allowed")
        if alg in HMAC_ALGORITHMS and not self._keys.has_symmetric_keys():
            raise _unauthenticated("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("missing key id")
        key = self._keys.lookup(kid, alg)
        try:
            payload = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    # Times are checked below, against this verifier's clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except Exception as exc:
            raise _unauthenticated(_reason(exc)) from None
        return self._claims(payload, kid)

    def _claims(self, payload: dict[str, Any], kid: str) -> Claims:
        exp, iat, nbf = _number(payload["exp"]), _number(payload["iat"]), None
        if exp is None:
            raise _unauthenticated("invalid exp claim")
        if iat is None:
            raise _unauthenticated("invalid iat claim")
        if "nbf" in payload:
            nbf = _number(payload["nbf"])
            if nbf is None:
                raise _unauthenticated("invalid nbf claim")
        now = self._clock()
        if now > exp + self._leeway_s:
            raise _unauthenticated("token expired")
        if iat > now + self._leeway_s:
            raise _unauthenticated("token issued in the future")
        if nbf is not None and nbf > now + self._leeway_s:
            raise _unauthenticated("token not yet valid")
        subject = payload.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _unauthenticated("invalid sub claim")
        role = payload.get(ROLE_CLAIM, DEFAULT_ROLE)
        if not isinstance(role, str) or not role:
            raise _unauthenticated("invalid role claim")
        aud = payload.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud or ())
        return Claims(
            subject=subject,
            issuer=str(payload.get("iss")),
            audience=audience,
            expires_at=exp,
            issued_at=iat,
            key_id=kid,
            role=role,
            raw=MappingProxyType(dict(payload)),
        )


def _reason(exc: BaseException) -> str:
    """A short, token-free reason for a PyJWT error (order matters: subclasses first)."""
    if isinstance(exc, ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, MissingRequiredClaimError):
        claim = exc.claim if exc.claim in _REQUIRED_CLAIMS else "required"
        return f"missing {claim} claim"
    if isinstance(exc, InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, InvalidIssuedAtError):
        return "invalid iat claim"
    if isinstance(exc, InvalidSubjectError):
        return "invalid sub claim"
    if isinstance(exc, InvalidKeyError):
        return "unusable key"
    if isinstance(exc, DecodeError):
        return "malformed token"
    return "invalid token"


# -- client side ---------------------------------------------------------------------------


@runtime_checkable
class TokenSource(Protocol):
    """Supplies the bearer token a client attaches to its calls."""

    def token(self) -> str:
        """The token to send now (cheap: sources cache)."""


def _checked_token(token: str, where: str) -> str:
    token = token.strip()
    if len(token) > _MAX_TOKEN_CHARS or _TOKEN_SHAPE.fullmatch(token) is None:
        raise ConfigError(f"{where} does not hold a JWT (header.payload.signature)")
    return token


class StaticTokenSource:
    """Always the same token (tests, or a token handed over by other means)."""

    def __init__(self, token: str) -> None:
        self._token = _checked_token(token, "the token")

    def token(self) -> str:
        """The token."""
        return self._token

    def __repr__(self) -> str:
        return "StaticTokenSource(<token>)"


class FileTokenSource:
    """The token in a file, re-read when the file changes (for tokens an operator mints with
    ``raftgrpc token mint --out`` and replaces before they expire).

    At most every ``reload_interval_s`` a call ``os.stat``\\ s the file; if it changed, it is
    read again. A file that cannot be read, or does not hold a token, is logged and the
    previous token kept. Raises ConfigError at construction if there is no token yet.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reload_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path)
        self._reload_interval_s = float(reload_interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._token, self._signature = self._read()
        except OSError as exc:
            raise ConfigError(
                f"cannot read token file {self._path}: {exc.strerror or exc}"
            ) from None
        self._next_check = clock() + self._reload_interval_s

    def _read(self) -> tuple[str, tuple[int, int, int, int]]:
        with self._path.open("r", encoding="ascii", errors="replace") as stream:
            signature = _file_signature(os.fstat(stream.fileno()))
            text = stream.read(_MAX_TOKEN_CHARS + 2)
        return _checked_token(text, f"token file {self._path}"), signature

    def token(self) -> str:
        """The token in the file (as of the last check)."""
        now = self._clock()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return self._token
        try:
            self._next_check = now + self._reload_interval_s
            try:
                if _file_signature(os.stat(self._path)) != self._signature:
                    self._token, self._signature = self._read()
            except (OSError, ConfigError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                logger.warning(
                    "raftgrpc: keeping the previous token, %s did not load: %s",
                    self._path,
                    why,
                    extra={"event": "auth.token_reload_failed", "reason": why},
                )
            return self._token
        finally:
            self._lock.release()

    def __repr__(self) -> str:
        return f"FileTokenSource({str(self._path)!r})"


_EC_CURVE_NAMES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def _signing_key(private_key: bytes | str | os.PathLike[str] | PyJWK, algorithm: str) -> Any:
    """The key object jwt.encode() signs ``algorithm`` with; ConfigError if it does not fit."""
    if algorithm not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
        raise ConfigError(f"unsupported signing algorithm {algorithm!r}")
    if isinstance(private_key, PyJWK):
        if private_key.algorithm_name != algorithm:
            raise ConfigError(f"the key is for {private_key.algorithm_name}, not {algorithm}")
        return private_key.key
    if algorithm in HMAC_ALGORITHMS:
        raise ConfigError("HMAC signing needs an 'oct' PyJWK, not a PEM key")
    if isinstance(private_key, bytes):
        pem, where = private_key, "the private key"
    else:
        where = f"private key file {os.fspath(private_key)}"
        try:
            pem = Path(private_key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        key = load_pem_private_key(pem, password=None)
    except (TypeError, ValueError) as exc:
        # Never quote the PEM; name what went wrong only.
        hint = "it is encrypted" if isinstance(exc, TypeError) else "not a PEM private key"
        raise ConfigError(f"cannot load {where}: {hint}") from None
    fits = (
        (algorithm[:2] in ("RS", "PS") and isinstance(key, rsa.RSAPrivateKey))
        or (
            algorithm in _EC_CURVE_NAMES
            and isinstance(key, ec.EllipticCurvePrivateKey)
            and key.curve.name == _EC_CURVE_NAMES[algorithm]
        )
        or (
            algorithm == "EdDSA"
            and isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        )
    )
    if not fits:
        raise ConfigError(f"{where} is not a key for {algorithm}")
    return key


class SigningTokenSource:
    """Mints its own tokens with a private key, and caches them.

    ``private_key`` is PEM bytes, the path of a PEM file, or a ``PyJWK`` (an ``oct`` PyJWK
    for HMAC). Tokens carry ``iss``, ``sub``, ``aud``, ``iat``, ``exp`` (``ttl_s`` later), a
    random ``jti``, the ``raftgrpc_role`` claim and a ``kid`` header. A new token is minted
    before the cached one expires: when less than 20% of ``ttl_s`` (at least 60 s, at most
    half the ttl) remains. ``clock`` returns Unix time (injectable for tests).
    """

    def __init__(
        self,
        private_key: bytes | str | os.PathLike[str] | PyJWK,
        kid: str,
        algorithm: str,
        subject: str,
        audience: str,
        issuer: str,
        ttl_s: float = 3600.0,
        role: str = DEFAULT_ROLE,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not kid or not subject or not audience or not issuer or not role:
            raise ConfigError("kid, subject, audience, issuer and role must be non-empty")
        if ttl_s < 2:
            raise ConfigError("ttl_s must be at least 2 seconds")
        self._key = _signing_key(private_key, algorithm)
        self._kid = kid
        self._algorithm = algorithm
        self._subject = subject
        self._audience = audience
        self._issuer = issuer
        self._ttl_s = float(ttl_s)
        self._role = role
        self._clock = clock
        self._margin_s = min(max(0.2 * self._ttl_s, 60.0), 0.5 * self._ttl_s)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    @property
    def refresh_margin_s(self) -> float:
        """How long before its expiry a cached token is replaced."""
        return self._margin_s

    def mint(self) -> str:
        """A new token (not cached)."""
        now = self._clock()
        issued = int(now)
        payload = {
            "iss": self._issuer,
            "sub": self._subject,
            "aud": self._audience,
            "iat": issued,
            "exp": int(now + self._ttl_s),
            "jti": uuid.uuid4().hex,
            ROLE_CLAIM: self._role,
        }
        return jwt.encode(payload, self._key, algorithm=self._algorithm, headers={"kid": self._kid})

    def token(self) -> str:
        """The cached token, or a fresh one if it is close to expiry."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._refresh_at:
                self._token = self.mint()
                self._refresh_at = now + self._ttl_s - self._margin_s
            return self._token

    def __repr__(self) -> str:
        return (
            f"SigningTokenSource(kid={self._kid!r}, algorithm={self._algorithm!r}, "
            f"subject={self._subject!r})"
        )


class _BearerPlugin(grpc.AuthMetadataPlugin):
    """Adds ``authorization: Bearer <token>``; errors go to the callback, never up."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            metadata: grpc.Metadata = (("authorization", f"Bearer {self._source.token()}"),)
            error: Exception | None = None
        except Exception as exc:
            logger.warning(
                "raftgrpc: no token for %s: %s",
                getattr(context, "method_name", "?"),
                type(exc).__name__,
                extra={"event": "auth.token_unavailable", "reason": type(exc).__name__},
            )
            metadata, error = (), RuntimeError(f"no token available ({type(exc).__name__})")
        try:
            callback(metadata, error)
        except Exception:
            logger.exception("raftgrpc: the gRPC metadata callback failed")


def call_credentials(source: TokenSource) -> grpc.CallCredentials:
    """Call credentials that send ``authorization: Bearer <source.token()>`` with each call.

    gRPC only sends call credentials on channels that give privacy and integrity: TLS
    (``grpc.ssl_channel_credentials``) or, for loopback development,
    ``grpc.local_channel_credentials()`` (which only connects over loopback or Unix
    sockets); on a plaintext channel the call fails with ``UNAUTHENTICATED`` ("Established
    channel does not have a sufficient security level...") and the token is not sent.

    Combine with ``grpc.composite_channel_credentials(channel_creds, call_credentials(src))``
    or pass per call as ``credentials=``. If the source fails, the call fails
    (``UNAVAILABLE``); the error is logged, the plugin never raises.
    """
    return grpc.metadata_call_credentials(_BearerPlugin(source), name="raftgrpc-jwt")


class _BearerClientInterceptor(AnyKindClientInterceptor):
    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [(k, v) for k, v in details.metadata or () if k.lower() != "authorization"]
        metadata.append(("authorization", f"Bearer {self._source.token()}"))
        return CallDetails(details, tuple(metadata))

    def intercept(
        self,
        continuation: Any,
        details: grpc.ClientCallDetails,
        request: Any,
        request_streaming: bool,
        response_streaming: bool,
    ) -> Any:
        return continuation(self._details(details), request)


def client_interceptor(source: TokenSource, *, allow_insecure: bool = False) -> Any:
    """A client interceptor (all four call kinds) that adds ``authorization: Bearer <token>``.

    **Warning:** unlike :func:`call_credentials`, this does not check the channel's security:
    on a plaintext channel the token travels in clear text and anyone on the path can replay
    it. It exists for plaintext test and development setups and refuses to be built unless
    ``allow_insecure=True`` is passed (ConfigError). Prefer :func:`call_credentials`.
    Use with ``grpc.intercept_channel(channel, client_interceptor(source, allow_insecure=True))``;
    if the source raises, the call raises at the call site.
    """
    if not allow_insecure:
        raise ConfigError(
            "client_interceptor() sends tokens whatever the channel's security; pass "
            "allow_insecure=True to opt in, or use call_credentials() on a TLS channel"
        )
    return _BearerClientInterceptor(source)


# -- server side ---------------------------------------------------------------------------


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
    ) -> None:
        self._verifier = verifier
        self._mode = mode
        self._identity_of = identity_of
        self._exempt = frozenset(exempt_methods)
        self._required_role = required_role
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
        if handler is None or self._mode is AuthMode.OFF:
            return handler
        method = handler_call_details.method
        if method in self._exempt:
            return handler
        inner = behavior_of(handler)
        streaming_response = handler.response_streaming
        if handler.request_streaming:
            return rewrap(
                handler,
                self._stream_behavior(inner, method, streaming_response=streaming_response),
            )
        return rewrap(
            handler, self._unary_behavior(inner, method, streaming_response=streaming_response)
        )

    # -- behaviors --

    def _unary_behavior(
        self, inner: Any, method: str, *, streaming_response: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(self, context, method)
            call.authenticate()
            call.check_identity(request)
            return _run(inner, request, context, call.claims, streaming_response)

        return behavior

    def _stream_behavior(
        self, inner: Any, method: str, *, streaming_response: bool
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            call = _Call(self, context, method)
            call.authenticate()
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

    __slots__ = ("audit_logged", "claims", "context", "interceptor", "method", "refused")

    def __init__(self, interceptor: _Interceptor, context: grpc.ServicerContext, method: str):
        self.interceptor = interceptor
        self.context = context
        self.method = method
        self.claims: Claims | None = None
        self.audit_logged = False
        self.refused: AuthError | None = None

    def fail(self, error: AuthError, subject: str | None = None) -> None:
        """Log; abort in ENFORCE mode, return in AUDIT mode."""
        self.interceptor.log_denied(self, error, subject)
        if self.interceptor._mode is AuthMode.ENFORCE:
            self.refused = error
            self.abort(error)

    def abort(self, error: AuthError) -> NoReturn:
        self.context.abort(error.code, error.reason)
        raise AssertionError("unreachable")  # context.abort raises

    def authenticate(self) -> None:
        try:
            token = _bearer_token(self.context.invocation_metadata())
            claims = self.interceptor._verifier.verify(token)
        except AuthError as error:
            self.fail(error)
            return
        except Exception as exc:  # a bug or a broken key; never let details escape
            logger.exception("raftgrpc: token verification failed unexpectedly")
            self.fail(_unauthenticated(f"verification error ({type(exc).__name__})"))
            return
        self.claims = claims  # verified, even if the role is refused below (AUDIT mode)
        role = self.interceptor._required_role
        if role is not None and claims.role != role:
            self.fail(
                AuthError(grpc.StatusCode.PERMISSION_DENIED, f"role {role!r} required"),
                claims.subject,
            )
            return
        self.interceptor.log_accepted(self, claims)

    def check_identity(self, request: Any) -> None:
        """Bind the identity ``request`` claims to the token's subject."""
        identity_of = self.interceptor._identity_of
        if identity_of is None or self.claims is None:
            return
        try:
            claimed = identity_of(request)
        except Exception as exc:
            self.fail(
                AuthError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"cannot read the claimed identity ({type(exc).__name__})",
                ),
                self.claims.subject,
            )
            return
        if claimed is not None and claimed != self.claims.subject:
            self.fail(
                AuthError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "token subject does not match the claimed identity",
                ),
                self.claims.subject,
            )

    def check_fresh(self) -> None:
        """A stream cannot outlive its token."""
        claims = self.claims
        if claims is None or not self.interceptor._verifier.expired(claims):
            return
        if self.interceptor._mode is AuthMode.AUDIT:
            if self.audit_logged:
                return
            self.audit_logged = True
        self.fail(_unauthenticated("token expired"), claims.subject)


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
        if call.refused is not None:  # the handler swallowed the abort and reads on
            call.abort(call.refused)
        request = next(self._requests)
        if self._first:
            self._first = False
            call.check_identity(request)
        call.check_fresh()
        return request


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
    denial_log_limit: int = 5,
    denial_log_window_s: float = 10.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
    """A server interceptor that authenticates every call by its bearer token.

    The token is taken from the ``authorization: Bearer <token>`` metadata and verified by
    ``verifier``; a missing or malformed entry, or an invalid token, ends the call with
    ``UNAUTHENTICATED`` and a short reason. With ``required_role``, a valid token with
    another role ends it with ``PERMISSION_DENIED``. Methods in ``exempt_methods`` (health
    and reflection by default) are served without a token.

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
    """
    mode = AuthMode(mode)
    if denial_log_limit < 1 or denial_log_window_s <= 0:
        raise ConfigError("denial_log_limit must be >= 1 and denial_log_window_s > 0")
    limiter = _DenialLogLimiter(denial_log_limit, denial_log_window_s, monotonic)
    return _Interceptor(verifier, mode, identity_of, exempt_methods, required_role, limiter)

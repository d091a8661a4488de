"""The client side: token sources, call credentials and the bearer client interceptor."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt import PyJWK

from raftgrpc._errors import ConfigError
from raftgrpc._security._filestamp import FileStamp, stamp, stamp_open
from raftgrpc.interceptors._client import AnyKindClientInterceptor, CallDetails
from raftgrpc.interceptors.auth._common import (
    _MAX_TOKEN_CHARS,
    _TOKEN_SHAPE,
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_ROLE,
    HMAC_ALGORITHMS,
    ROLE_CLAIM,
    logger,
)


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

    def _read(self) -> tuple[str, FileStamp]:
        with self._path.open("r", encoding="ascii", errors="replace") as stream:
            signature = stamp_open(stream)
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
                if stamp(self._path) != self._signature:
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

"""Token verification: signature, algorithm, claims, roles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import jwt
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

from raftgrpc._errors import ConfigError
from raftgrpc.interceptors.auth._common import (
    _MAX_TOKEN_CHARS,
    _REQUIRED_CLAIMS,
    _TOKEN_SHAPE,
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_ALGORITHMS,
    DEFAULT_ROLE,
    HMAC_ALGORITHMS,
    ROLE_CLAIM,
    Claims,
    _unauthenticated,
)
from raftgrpc.interceptors.auth._keys import (
    KeySet,
)


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

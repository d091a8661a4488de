"""Verification keys: a JWKS key set, reloaded from its file when it changes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jwt import PyJWK
from jwt.exceptions import (
    PyJWTError,
)

from raftgrpc._errors import ConfigError
from raftgrpc._security._filestamp import FileStamp, stamp, stamp_open
from raftgrpc.interceptors.auth._common import (
    _ALGORITHMS_BY_KTY,
    _EC_CURVE_OF,
    _MAX_JWKS_BYTES,
    _OKP_CURVES,
    _unauthenticated,
    logger,
)


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


class KeySet:
    """The keys that verify tokens, by key id (``kid``).

    Several keys can be valid at once: that is how keys are rotated (add the new key, move
    every node to tokens signed with it, then remove the old key). A key set read from a
    file (:meth:`from_file`) follows the file: at most every ``reload_interval_s`` a
    verification ``os.stat``\\ s it, and re-reads it only when its mtime, size, inode or
    device changed (:mod:`raftgrpc._security._filestamp`). A reload never blocks another
    thread (threads that find a reload in progress go on with the current keys), and a file
    that fails to parse (e.g. half written) is logged and leaves the current keys in place.
    There is never a network fetch.
    """

    def __init__(self, jwks: Iterable[Mapping[str, Any]] = ()) -> None:
        """A fixed key set from public JWKs (dicts), each with a ``kid``; see
        :meth:`from_jwks` for a JWKS document and :meth:`from_file` for a file."""
        self._setup(_parse_jwks({"keys": list(jwks)}, "KeySet"), None, None, 0.0, time.monotonic)

    def _setup(
        self,
        keys: Mapping[str, _Key],
        path: Path | None,
        signature: FileStamp | None,
        reload_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        if reload_interval_s < 0:
            raise ConfigError("reload_interval_s must be >= 0")
        self._keys: Mapping[str, _Key] = MappingProxyType(dict(keys))
        self._path = path
        self._signature = signature
        self._failed_signature: FileStamp | None = None
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
    def _read(file: Path) -> tuple[dict[str, _Key], FileStamp]:
        with file.open("rb") as stream:
            signature = stamp_open(stream)
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
            signature = stamp(self._path)
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

    def _reload_failed(self, signature: FileStamp | None, why: str) -> None:
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

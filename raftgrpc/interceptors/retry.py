"""Retries for idempotent unary calls, configured through gRPC's service config.

gRPC retries calls itself when a channel has a service config with a ``retryPolicy``: it
re-sends the request after a failure with one of the retryable codes, with exponential
backoff and jitter, up to ``maxAttempts`` attempts in all, and only while the server has not
started answering (no response headers or messages "committed" yet). This is the right tool
for idempotent unary calls such as admin calls and handshakes::

    options = retry.channel_options([("raftgrpc.v1.Admin", "Status")], max_attempts=4)
    channel = grpc.insecure_channel("10.0.0.2:4321", options=options)

There is no client retry interceptor here: one that re-invokes the continuation would retry
outside gRPC's budget and throttling, and could not know whether the server had already
acted on the request; the service config is gRPC's own, documented mechanism.
(``TransportBuilder.with_retries`` passes these options to the channels it dials.) On the
server, :func:`server_interceptor` makes retries visible: gRPC marks each retried attempt
with a ``grpc-previous-rpc-attempts`` header, and the interceptor logs it.

The Raft messages on the bidirectional ``/raftgrpc.v1.RaftTransport/Stream`` are never
retried, and :func:`service_config` refuses a policy that names that method:

* PySyncObj keeps the replication state (``nextIndex`` and ``matchIndex`` per follower,
  votes, terms). After a disconnect it resends what a peer still lacks from that state,
  newer than any frame that was in flight, so a transport-level retry has nothing to add.
* A retried frame could be delivered twice, or after frames sent later on a new stream
  (out of order); Raft tolerates that, but it costs work and muddles the trace of what
  happened.
* gRPC cannot retry a stream anyway once data was committed on it (the server sent its
  Welcome): a retry policy would only apply to the handshake, and the transport already
  redials with its own backoff.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import grpc

from raftgrpc._errors import ConfigError
from raftgrpc._log_limit import RateLimiter
from raftgrpc.interceptors._skeleton import NO_HOOKS, CallHooks, CallKind, ServerLayer

__all__ = [
    "aio_server_interceptor",
    "channel_options",
    "server_interceptor",
    "service_config",
]

_log = logging.getLogger("raftgrpc.retry")
_PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"

# gRPC ignores maxAttempts above this (it clamps to 5); we refuse it instead.
_MAX_ATTEMPTS = 5

_RAFT_SERVICE = "raftgrpc.v1.RaftTransport"
_RAFT_STREAM = "Stream"
_CODES = {code.name: code for code in grpc.StatusCode}


def service_config(
    methods: Iterable[tuple[str, str | None]],
    *,
    max_attempts: int = 4,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    backoff_multiplier: float = 2.0,
    retryable_codes: Iterable[str | grpc.StatusCode] = ("UNAVAILABLE",),
    timeout_s: float | None = None,
) -> str:
    """A gRPC service config (JSON) retrying ``methods``: ``(service, method)`` pairs, method
    None for every method of the service (e.g. ``("grpc.health.v1.Health", "Check")``).

    ``max_attempts`` counts the first attempt (2..5). The n-th retry waits a random delay in
    ``[0, min(initial_backoff_s * backoff_multiplier**(n-1), max_backoff_s)]``.
    ``timeout_s``: a deadline for the whole call, retries included (None: the caller's).
    Raises :class:`~raftgrpc.ConfigError` for values gRPC would reject or ignore.
    """
    names = _method_names(methods)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise ConfigError(f"max_attempts must be an integer, got {max_attempts!r}")
    if not 2 <= max_attempts <= _MAX_ATTEMPTS:
        raise ConfigError(
            f"max_attempts must be within 2..{_MAX_ATTEMPTS} (gRPC's limit), got {max_attempts}"
        )
    if not initial_backoff_s > 0:
        raise ConfigError(f"initial_backoff_s must be positive, got {initial_backoff_s!r}")
    if not max_backoff_s > 0:
        raise ConfigError(f"max_backoff_s must be positive, got {max_backoff_s!r}")
    if max_backoff_s < initial_backoff_s:
        raise ConfigError(
            f"max_backoff_s ({max_backoff_s}) must not be below initial_backoff_s "
            f"({initial_backoff_s})"
        )
    if not backoff_multiplier > 0:
        raise ConfigError(f"backoff_multiplier must be positive, got {backoff_multiplier!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
    codes = _code_names(retryable_codes)

    method_config: dict[str, Any] = {
        "name": names,
        "retryPolicy": {
            "maxAttempts": max_attempts,
            "initialBackoff": _duration(initial_backoff_s),
            "maxBackoff": _duration(max_backoff_s),
            "backoffMultiplier": float(backoff_multiplier),
            "retryableStatusCodes": codes,
        },
    }
    if timeout_s is not None:
        method_config["timeout"] = _duration(timeout_s)
    return json.dumps({"methodConfig": [method_config]}, separators=(",", ":"))


def channel_options(
    methods: Iterable[tuple[str, str | None]], **policy: Any
) -> list[tuple[str, Any]]:
    """Channel options enabling retries with :func:`service_config` ``(methods, **policy)``:
    pass them as ``options=`` to ``grpc.insecure_channel`` / ``grpc.secure_channel``."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config(methods, **policy))]


class _RetryLog(ServerLayer[tuple[str, str | bytes]]):
    """Logs the retried attempts of calls: they carry gRPC's previous-attempts header."""

    def __init__(self, logger: logging.Logger, limiter: RateLimiter) -> None:
        self._logger = logger
        self._limiter = limiter

    def select(self, details: grpc.HandlerCallDetails) -> tuple[str, str | bytes] | None:
        # Only reads the call's metadata; the line is written on the handler's thread.
        previous = _previous_attempts(details)
        return None if previous is None else (details.method, previous)

    def open(self, plan: tuple[str, str | bytes], context: Any, kind: CallKind) -> CallHooks:
        method, previous = plan
        self.log(method, context.peer(), previous)
        return NO_HOOKS

    def log(self, method: str, peer: str, previous: str | bytes) -> None:
        suppressed = self._limiter.admit(method)
        if suppressed is not None:
            self._logger.info(
                "raftgrpc: retried call %s from %s, attempt %s",
                method,
                peer,
                _attempt(previous),
                extra={
                    "event": "rpc.retried",
                    "method": method,
                    "peer": peer,
                    "attempt": _attempt(previous),
                    "suppressed": suppressed,
                },
            )


def _previous_attempts(details: grpc.HandlerCallDetails) -> str | bytes | None:
    return next(
        (v for k, v in details.invocation_metadata or () if k == _PREVIOUS_ATTEMPTS),
        None,
    )


def _attempt(previous: str | bytes) -> int | None:
    try:
        return int(previous) + 1
    except (TypeError, ValueError):
        return None


def server_interceptor(
    logger: logging.Logger | None = None, *, limit: int = 10, interval_s: float = 10.0
) -> grpc.ServerInterceptor[Any, Any]:
    """A server interceptor logging each retried attempt of a call (``event="rpc.retried"``,
    ``method``, ``peer``, ``attempt``), at most ``limit`` lines per method every
    ``interval_s`` (the count of the others goes in the next line's ``suppressed``)."""
    return _RetryLog(logger or _log, RateLimiter(limit, interval_s))


def aio_server_interceptor(
    logger: logging.Logger | None = None, *, limit: int = 10, interval_s: float = 10.0
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """:func:`server_interceptor` for a ``grpc.aio`` server (a node's own server)."""
    return _RetryLog(logger or _log, RateLimiter(limit, interval_s)).aio()


def _method_names(methods: Iterable[tuple[str, str | None]]) -> list[dict[str, str]]:
    names: list[dict[str, str]] = []
    for entry in methods:
        try:
            service, method = entry
        except (TypeError, ValueError):
            raise ConfigError(f"methods: expected (service, method) pairs, got {entry!r}") from None
        if not isinstance(service, str) or not service or service.startswith("/"):
            raise ConfigError(f"methods: invalid service name {service!r} (e.g. 'pkg.Service')")
        if method is not None and (not isinstance(method, str) or not method or "/" in method):
            raise ConfigError(f"methods: invalid method name {method!r} (e.g. 'Get', or None)")
        if service == _RAFT_SERVICE and method in (None, _RAFT_STREAM):
            raise ConfigError(
                "the Raft stream is never retried: PySyncObj resends from its own state "
                "after a disconnect (see raftgrpc.interceptors.retry)"
            )
        names.append(
            {"service": service} if method is None else {"service": service, "method": method}
        )
    if not names:
        raise ConfigError("methods: name at least one (service, method) to retry")
    return names


def _code_names(codes: Iterable[str | grpc.StatusCode]) -> list[str]:
    names: list[str] = []
    for code in codes:
        name = code.name if isinstance(code, grpc.StatusCode) else str(code).upper()
        if name not in _CODES:
            raise ConfigError(f"retryable_codes: unknown status code {code!r}")
        if name == "OK":
            raise ConfigError("retryable_codes: OK cannot be retried")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("retryable_codes: name at least one status code")
    return names


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration ("0.1s"), to the nanosecond."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    if text == "0":
        raise ConfigError(f"durations must be at least 1 ns, got {seconds!r}")
    return f"{text}s"

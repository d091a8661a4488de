"""The exceptions raftgrpc raises: one hierarchy, all exported by :mod:`raftgrpc`.

Hierarchy::

    RaftGrpcError
    ├── ConfigError             a configuration value is invalid (also a ValueError)
    ├── CodecError              a message cannot be encoded or decoded (also a ValueError)
    ├── FrameError              a peer sent something that is not a valid frame
    ├── PeerUnreachable         why a transport has no connection to a peer (a value handed
    │                           to MigrationTransport's should_fallback, never raised); its
    │                           ``kind`` (an UnreachableKind) is what to decide on
    ├── AuthError               a token or key cannot be made or used (raftgrpc.interceptors.auth)
    ├── CliError                a usage or input problem of the ``raftgrpc`` command line
    └── GrpcUtilityException    an admin command failed (GrpcUtility; also PySyncObj's
                                UtilityException, so code written for TcpUtility still catches it)

The transport never lets CodecError or FrameError reach PySyncObj: a message it cannot encode
is logged and not sent, and a frame it cannot decode closes that stream with
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

__all__ = [
    "AuthError",
    "CliError",
    "CodecError",
    "ConfigError",
    "FrameError",
    "PeerUnreachable",
    "RaftGrpcError",
    "UnreachableKind",
    "status_kind",
]


class RaftGrpcError(Exception):
    """Base class of every raftgrpc exception."""


class ConfigError(RaftGrpcError, ValueError):
    """A configuration value is invalid."""


class CodecError(RaftGrpcError, ValueError):
    """A message could not be encoded or decoded.

    The message text says what is wrong (a key, a field, a type name); it never contains
    payload bytes.
    """


class FrameError(RaftGrpcError):
    """A peer sent something that is not a valid frame; the stream must be closed."""


class UnreachableKind(enum.Enum):
    """Why a transport has no connection to a peer, as a value to decide on.

    A ``should_fallback`` (:class:`raftgrpc.MigrationTransport`) decides on this and on the
    gRPC ``code``, never on :attr:`PeerUnreachable.reason`, whose wording may change.
    """

    UNKNOWN = "unknown"
    """The transport gave no details (a primary without ``peer_error``, or a
    :class:`PeerUnreachable` built without a kind)."""
    NOT_DIALLED = "not dialled"
    """No attempt to reach the peer has ended yet (it was just added, or its first dial is
    still in flight)."""
    NO_ADDRESS = "no address"
    """The peer's gRPC address could not be derived (``TransportConfig.address_of`` failed)."""
    NOT_A_MEMBER = "not a member"
    """The transport does not know the peer (never added, or dropped)."""
    CONNECTION_REFUSED = "connection refused"
    """Nothing listens at the peer's address: it does not serve this transport (yet), or is
    down. The normal case while a cluster migrates."""
    TLS_FAILED = "TLS failed"
    """The TLS handshake failed, e.g. this node does not trust the peer's certificate: a
    configuration error."""
    HANDSHAKE_FAILED = "handshake failed"
    """The raftgrpc handshake failed: no Welcome (in time), another protocol version, or the
    peer says it is another node: a configuration error."""
    STREAM_FAILED = "stream failed"
    """The dial or the stream ended with the gRPC status ``code``: the peer is unreachable
    (UNAVAILABLE), went away, or refused this node (UNAUTHENTICATED, PERMISSION_DENIED)."""
    RESET = "reset"
    """This node ended the stream: its send queue overflowed or went stale, could not be
    spilled, or the peer fell silent (liveness)."""
    PROTOCOL_ERROR = "protocol error"
    """The peer sent a frame this node cannot read."""
    INTERNAL = "internal"
    """An unexpected error in this node while dialling (a bug, a failing client interceptor)."""


# What gRPC's status details say when a TLS handshake fails (CERTIFICATE_VERIFY_FAILED,
# "Ssl handshake failed", "Tls handshake failed (TSI_PROTOCOL_FAILURE)"), and when nothing
# listens at the address. gRPC reports both as UNAVAILABLE: its text is all there is.
_TLS_WORDS = ("handshake", "ssl", "certificate")
_REFUSED_WORDS = ("connection refused",)


def status_kind(details: str) -> UnreachableKind:
    """The kind of a dial or stream that ended with a gRPC status whose details are
    ``details``: the one place where gRPC's wording is read, so that nothing downstream
    matches text."""
    text = details.lower()
    if any(word in text for word in _TLS_WORDS):
        return UnreachableKind.TLS_FAILED
    if any(word in text for word in _REFUSED_WORDS):
        return UnreachableKind.CONNECTION_REFUSED
    return UnreachableKind.STREAM_FAILED


class PeerUnreachable(RaftGrpcError):
    """A transport has no usable connection to a peer.

    ``kind`` says why (an :class:`UnreachableKind`: decide on it); ``reason`` says it for a
    human (a log line), in words that may change. ``code`` is the gRPC status of the last
    failed attempt (a ``grpc.StatusCode``) when there was one, else None (not dialled yet,
    refused handshake, transport without details); ``failed_at`` the ``time.monotonic()``
    of that attempt's end, when known.
    """

    def __init__(
        self,
        node_id: str,
        reason: str,
        code: Any = None,
        failed_at: float | None = None,
        *,
        kind: UnreachableKind = UnreachableKind.UNKNOWN,
    ) -> None:
        super().__init__(f"no connection to {node_id}: {reason}")
        self.node_id = node_id
        self.reason = reason
        self.code = code
        self.failed_at = failed_at
        self.kind = kind


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


class CliError(RaftGrpcError):
    """A usage or input problem: printed as ``raftgrpc: error: ...``, exit status 2."""

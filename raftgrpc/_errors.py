"""The exceptions raftgrpc raises: one hierarchy, all exported by :mod:`raftgrpc`.

Hierarchy::

    RaftGrpcError
    ├── ConfigError             a configuration value is invalid (also a ValueError)
    ├── CodecError              a message cannot be encoded or decoded (also a ValueError)
    ├── FrameError              a peer sent something that is not a valid frame
    ├── PeerUnreachable         why a transport has no connection to a peer (a value handed
    │                           to MigrationTransport's should_fallback, never raised)
    ├── AuthError               a token or key cannot be made or used (raftgrpc.interceptors.auth)
    ├── CliError                a usage or input problem of the ``raftgrpc`` command line
    └── GrpcUtilityException    an admin command failed (GrpcUtility; also PySyncObj's
                                UtilityException, so code written for TcpUtility still catches it)

The transport never lets CodecError or FrameError reach PySyncObj: a message it cannot encode
is logged and not sent, and a frame it cannot decode closes that stream with
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

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


class PeerUnreachable(RaftGrpcError):
    """A transport has no usable connection to a peer.

    ``code`` is the gRPC status of the last failed attempt (a ``grpc.StatusCode``) when there
    was one, else None (not dialled yet, refused handshake, transport without details);
    ``failed_at`` the ``time.monotonic()`` of that attempt's end, when known.
    """

    def __init__(
        self, node_id: str, reason: str, code: Any = None, failed_at: float | None = None
    ) -> None:
        super().__init__(f"no connection to {node_id}: {reason}")
        self.node_id = node_id
        self.reason = reason
        self.code = code
        self.failed_at = failed_at


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

"""The exceptions raftgrpc raises.

Hierarchy::

    RaftGrpcError
    ├── ConfigError             a configuration value is invalid (also a ValueError)
    └── PeerUnreachable         why a transport has no connection to a peer (a value handed
                                to MigrationTransport's should_fallback, never raised)

``raftgrpc.CodecError`` (a ``ValueError``) is raised by the codec for messages that
cannot be encoded or decoded. The transport never lets it reach PySyncObj: a message it
cannot encode is logged and not sent, and a frame it cannot decode closes that stream with
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "PeerUnreachable", "RaftGrpcError"]


class RaftGrpcError(Exception):
    """Base class of every raftgrpc exception."""


class ConfigError(RaftGrpcError, ValueError):
    """A configuration value is invalid."""


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

"""The exceptions raftgrpc raises.

Hierarchy::

    RaftGrpcError
    ├── TransportError          a transport could not do what was asked
    │   ├── TransportClosed     the transport was destroyed
    │   └── PeerUnavailable     no stream to that peer is established
    └── ConfigError             a configuration value is invalid (also a ValueError)

``raftgrpc.codec.CodecError`` (a ``ValueError``) is raised for messages that cannot be
encoded or decoded; the transport turns it into a closed stream, never into an exception
on PySyncObj's tick thread.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PeerUnavailable", "RaftGrpcError", "TransportClosed", "TransportError"]


class RaftGrpcError(Exception):
    """Base class of every raftgrpc exception."""


class TransportError(RaftGrpcError):
    """A transport operation failed."""


class TransportClosed(TransportError):
    """The transport has been destroyed."""


class PeerUnavailable(TransportError):
    """No stream to the peer is established."""


class ConfigError(RaftGrpcError, ValueError):
    """A configuration value is invalid."""

"""The exceptions raftgrpc raises.

Hierarchy::

    RaftGrpcError
    └── ConfigError             a configuration value is invalid (also a ValueError)

``raftgrpc.codec.CodecError`` (a ``ValueError``) is raised by the codec for messages that
cannot be encoded or decoded. The transport never lets it reach PySyncObj: a message it
cannot encode is logged and not sent, and a frame it cannot decode closes that stream with
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RaftGrpcError"]


class RaftGrpcError(Exception):
    """Base class of every raftgrpc exception."""


class ConfigError(RaftGrpcError, ValueError):
    """A configuration value is invalid."""

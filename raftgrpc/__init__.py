"""raftgrpc: a gRPC transport for PySyncObj, the Raft library for Python.

from raftgrpc import GrpcTransport
node = MyStore("127.0.0.1:4321", ["127.0.0.1:4322", "127.0.0.1:4323"],
               transportClass=GrpcTransport)
"""

from __future__ import annotations

from raftgrpc.config import TransportConfig
from raftgrpc.errors import (
    ConfigError,
    PeerUnavailable,
    RaftGrpcError,
    TransportClosed,
    TransportError,
)
from raftgrpc.transport import GrpcTransport

__all__ = [
    "ConfigError",
    "GrpcTransport",
    "PeerUnavailable",
    "RaftGrpcError",
    "TransportClosed",
    "TransportConfig",
    "TransportError",
]

__version__ = "0.1.0"

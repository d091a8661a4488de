"""raftgrpc: a gRPC transport for PySyncObj, the Raft library for Python.

from raftgrpc import GrpcTransport
node = MyStore("127.0.0.1:4321", ["127.0.0.1:4322", "127.0.0.1:4323"],
               transportClass=GrpcTransport)
"""

from __future__ import annotations

from raftgrpc import grpcenv

# Before anything imports grpc: gRPC's C core reads these when it is first imported.
grpcenv.apply()

from raftgrpc.addressing import AddressMap, PortOffset  # noqa: E402
from raftgrpc.builder import TransportBuilder  # noqa: E402
from raftgrpc.config import TransportConfig  # noqa: E402
from raftgrpc.errors import ConfigError, PeerUnreachable, RaftGrpcError  # noqa: E402
from raftgrpc.middleware import Middleware  # noqa: E402
from raftgrpc.migration import MigrationConfig, MigrationTransport  # noqa: E402
from raftgrpc.transport import GrpcTransport  # noqa: E402

__all__ = [
    "AddressMap",
    "ConfigError",
    "GrpcTransport",
    "Middleware",
    "MigrationConfig",
    "MigrationTransport",
    "PeerUnreachable",
    "PortOffset",
    "RaftGrpcError",
    "TransportBuilder",
    "TransportConfig",
]

__version__ = "0.1.0"

"""raftgrpc: a gRPC transport for PySyncObj, the Raft library for Python.

from raftgrpc import GrpcTransport
node = MyStore("127.0.0.1:4321", ["127.0.0.1:4322", "127.0.0.1:4323"],
               transportClass=GrpcTransport)
"""

from __future__ import annotations

from raftgrpc import _grpcenv as grpcenv

# Before anything imports grpc: gRPC's C core reads these when it is first imported.
grpcenv.apply()

from raftgrpc._abilities import (  # noqa: E402
    HasListenTarget,
    HasStats,
    HostsServices,
    Redials,
    ReportsPeerErrors,
    ShutsDownGracefully,
)
from raftgrpc._builder import TransportBuilder  # noqa: E402
from raftgrpc._errors import (  # noqa: E402
    ConfigError,
    PeerUnreachable,
    RaftGrpcError,
    UnreachableKind,
)
from raftgrpc._protocol.addressing import AddressMap, PortOffset  # noqa: E402
from raftgrpc._transport.config import TransportConfig  # noqa: E402
from raftgrpc._transport.grpc_transport import GrpcTransport  # noqa: E402
from raftgrpc._transport.middleware import Middleware  # noqa: E402
from raftgrpc._transport.migration import MigrationConfig, MigrationTransport  # noqa: E402

__all__ = [
    "AddressMap",
    "ConfigError",
    "GrpcTransport",
    "HasListenTarget",
    "HasStats",
    "HostsServices",
    "Middleware",
    "MigrationConfig",
    "MigrationTransport",
    "PeerUnreachable",
    "PortOffset",
    "RaftGrpcError",
    "Redials",
    "ReportsPeerErrors",
    "ShutsDownGracefully",
    "TransportBuilder",
    "TransportConfig",
    "UnreachableKind",
]

__version__ = "0.1.0"

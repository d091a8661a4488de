"""raftgrpc: a gRPC transport for PySyncObj, the Raft library for Python.

from raftgrpc import GrpcTransport
node = MyStore("127.0.0.1:4321", ["127.0.0.1:4322", "127.0.0.1:4323"],
               transportClass=GrpcTransport)
"""

from __future__ import annotations

import os

# PySyncObj forks (useFork=True, the default) to write its dump file while gRPC threads run.
# gRPC's fork handlers then run in that child and abort it ("Other threads are currently
# calling into gRPC"); the child only pickles to a file and never touches gRPC, so the
# handlers are not needed. Set before grpc is first imported; an explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from raftgrpc.addressing import AddressMap, PortOffset
from raftgrpc.builder import TransportBuilder
from raftgrpc.config import TransportConfig
from raftgrpc.errors import ConfigError, PeerUnreachable, RaftGrpcError
from raftgrpc.middleware import Middleware
from raftgrpc.migration import MigrationConfig, MigrationTransport
from raftgrpc.transport import GrpcTransport

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

"""raftgrpc: a gRPC transport for PySyncObj, the Raft library for Python.

>>> from raftgrpc import GrpcTransport
>>> node = MyStore("127.0.0.1:4321", ["127.0.0.1:4322", "127.0.0.1:4323"],
...                transportClass=GrpcTransport)  # doctest: +SKIP

The public API is what this module exports (``__all__``), plus the public subpackages:
:mod:`raftgrpc.interceptors` (``auth``, ``tracing``, ``log``, ``retry``, ``identity``),
:mod:`raftgrpc.testing` (an in-memory transport, the contract suite, a development CA, the
wire names) and the generated :mod:`raftgrpc.v1`. Modules whose names begin with an
underscore are internal and may change in any release; a test pins the exported names.
"""

from __future__ import annotations

from raftgrpc import _grpcenv

# Before anything imports grpc: gRPC's C core reads these when it is first imported.
_grpcenv.apply()

from raftgrpc._abilities import (  # noqa: E402
    HasListenTarget,
    HasStats,
    HostsServices,
    Redials,
    ReportsPeerErrors,
    ShutsDownGracefully,
    TracksResends,
)
from raftgrpc._builder import TransportBuilder  # noqa: E402
from raftgrpc._errors import (  # noqa: E402
    AuthError,
    CliError,
    CodecError,
    ConfigError,
    FrameError,
    PeerUnreachable,
    RaftGrpcError,
    UnreachableKind,
)
from raftgrpc._ops.admin_client import GrpcUtility, GrpcUtilityException  # noqa: E402
from raftgrpc._ops.admin_service import service as admin_service  # noqa: E402
from raftgrpc._ops.health import service as health_service  # noqa: E402
from raftgrpc._ops.shutdown import ShutdownReport, graceful_shutdown  # noqa: E402
from raftgrpc._protocol.address import AddressMap, PortOffset  # noqa: E402
from raftgrpc._protocol.routing import fallback_unless_refused  # noqa: E402
from raftgrpc._security.tls import TlsConfig  # noqa: E402
from raftgrpc._transport.config import TransportConfig  # noqa: E402
from raftgrpc._transport.grpc_transport import GrpcTransport  # noqa: E402
from raftgrpc._transport.middleware import Middleware  # noqa: E402
from raftgrpc._transport.migration import MigrationConfig, MigrationTransport  # noqa: E402
from raftgrpc._transport.services import NodeContext, NodeService, ServiceFactory  # noqa: E402

__all__ = [
    "AddressMap",
    "AuthError",
    "CliError",
    "CodecError",
    "ConfigError",
    "FrameError",
    "GrpcTransport",
    "GrpcUtility",
    "GrpcUtilityException",
    "HasListenTarget",
    "HasStats",
    "HostsServices",
    "Middleware",
    "MigrationConfig",
    "MigrationTransport",
    "NodeContext",
    "NodeService",
    "PeerUnreachable",
    "PortOffset",
    "RaftGrpcError",
    "Redials",
    "ReportsPeerErrors",
    "ServiceFactory",
    "ShutdownReport",
    "ShutsDownGracefully",
    "TlsConfig",
    "TracksResends",
    "TransportBuilder",
    "TransportConfig",
    "UnreachableKind",
    "admin_service",
    "fallback_unless_refused",
    "graceful_shutdown",
    "health_service",
]

__version__ = "0.1.0"

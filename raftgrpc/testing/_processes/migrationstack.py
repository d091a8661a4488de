"""node.py's transports for the migration tests: ``grpc-mapped`` and ``migration``.

PySyncObj names nodes by their TCP addresses; while a cluster migrates, gRPC listens on
other ports. The harness gives every node the same table, Raft id -> gRPC address, in
``$RAFTGRPC_ADDRESS_MAP`` (JSON), and both transports find peers through it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from raftgrpc import AddressMap, GrpcTransport, MigrationTransport, TransportConfig


def address_map() -> AddressMap:
    """The cluster's table from the environment."""
    return AddressMap(json.loads(os.environ["RAFTGRPC_ADDRESS_MAP"]))


def grpc(syncObj: Any, selfNode: Any, otherNodes: Any) -> GrpcTransport:
    """GrpcTransport on the mapped ports (the last step of a migration)."""
    config = TransportConfig(address_of=address_map())
    return GrpcTransport(syncObj, selfNode, otherNodes, config=config)


def migration(syncObj: Any, selfNode: Any, otherNodes: Any) -> MigrationTransport:
    """GrpcTransport (mapped) first, TCPTransport as the fallback."""
    make = MigrationTransport.factory(primary=functools.partial(grpc))
    transport: MigrationTransport = make(syncObj, selfNode, otherNodes)
    return transport

"""What users' tests and tools need from raftgrpc, under names that stay stable.

* :class:`InMemoryTransport` on a :class:`MemoryNetwork`: a whole SyncObj cluster in one
  process without sockets, with links a test can cut (the transport contract, kept).
* :mod:`raftgrpc.testing.contract`: the contract suite every transport passes, to run over
  your own (it needs pytest).
* :class:`LocalCluster` of :class:`KV` nodes, and :func:`wait_until`, :func:`free_port`:
  the helpers that suite (and raftgrpc's own tests) are written with.
* :data:`STREAM_METHOD`, :data:`SERVICE_NAME` and :data:`PROTOCOL_VERSION` name the Raft
  stream on the wire (for raw gRPC clients, interceptor selectors, firewall rules).
* :class:`CertificateAuthority` is a throwaway development CA that writes the certificates a
  TLS or mTLS cluster needs (never for production: those come from your PKI).

>>> network = MemoryNetwork()
>>> cluster = LocalCluster(network.transport_class)
>>> nodes = cluster.start_all(["a:1", "b:1", "c:1"])
>>> put(wait_leader(nodes), "key", "value")
>>> cluster.close()
"""

from __future__ import annotations

from raftgrpc._protocol.handshake import PROTOCOL_VERSION
from raftgrpc._transport.inbound import SERVICE_NAME, STREAM_METHOD
from raftgrpc.testing._ca import CertFiles, CertificateAuthority, file_stem
from raftgrpc.testing._cluster import (
    KV,
    LocalCluster,
    put,
    status,
    wait_leader,
    wait_replicated,
)
from raftgrpc.testing._memory import InMemoryTransport, MemoryNetwork
from raftgrpc.testing._ports import addresses, free_port, free_ports
from raftgrpc.testing._waiting import WaitTimeout, wait_until

__all__ = [
    "KV",
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "STREAM_METHOD",
    "CertFiles",
    "CertificateAuthority",
    "InMemoryTransport",
    "LocalCluster",
    "MemoryNetwork",
    "WaitTimeout",
    "addresses",
    "file_stem",
    "free_port",
    "free_ports",
    "put",
    "status",
    "wait_leader",
    "wait_replicated",
    "wait_until",
]

"""What users' tests and tools need from raftgrpc, under names that stay stable.

* :data:`STREAM_METHOD`, :data:`SERVICE_NAME` and :data:`PROTOCOL_VERSION` name the Raft
  stream on the wire (for raw gRPC clients, interceptor selectors, firewall rules).
* :class:`CertificateAuthority` is a throwaway development CA that writes the certificates a
  TLS or mTLS cluster needs (never for production: those come from your PKI).
"""

from __future__ import annotations

from raftgrpc._protocol.handshake import PROTOCOL_VERSION
from raftgrpc._transport.inbound import SERVICE_NAME, STREAM_METHOD
from raftgrpc.testing._ca import CertFiles, CertificateAuthority, file_stem

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "STREAM_METHOD",
    "CertFiles",
    "CertificateAuthority",
    "file_stem",
]

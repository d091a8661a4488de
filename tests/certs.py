"""Real certificates for TLS tests: a thin, pytest-friendly wrapper over :mod:`raftgrpc.testing`.

>>> ca = make_ca(tmp_path)
>>> files = node_cert(ca, "127.0.0.1:4321")
>>> cfg = tls_config(files, require_client_cert=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raftgrpc._security.tls import TlsConfig
from raftgrpc.testing._ca import CertFiles, CertificateAuthority

__all__ = ["CA", "CertFiles", "make_ca", "node_cert", "tls_config"]


class CA:
    """A test CA in its own directory below ``tmp_path``; ECDSA P-256 keys throughout."""

    def __init__(self, authority: CertificateAuthority) -> None:
        self.authority = authority

    @property
    def ca_file(self) -> Path:
        return self.authority.ca_file

    @property
    def directory(self) -> Path:
        return self.authority.directory

    def issue(self, name: str, **sans_and_usage: Any) -> CertFiles:
        """A leaf certificate with CN ``name``: CertificateAuthority.issue's keywords (dns,
        ips, uris, client, server, days, directory)."""
        return self.authority.issue(name, **sans_and_usage)


def make_ca(tmp_path: Path, name: str = "test-ca") -> CA:
    """A new CA whose files live in ``tmp_path / name``."""
    return CA(CertificateAuthority.create(tmp_path / name, name=name))


def node_cert(ca: CA, node_id: str, *, directory: Path | None = None) -> CertFiles:
    """The certificate of node ``host:port``: SAN IP/DNS of the host, URI raftgrpc://host:port."""
    return ca.authority.issue_node(node_id, directory=directory)


def tls_config(files: CertFiles, **kwargs: Any) -> TlsConfig:
    """A TlsConfig over ``files`` (kwargs: require_client_cert, server_name_override)."""
    return TlsConfig(
        cert_file=files.cert_file, key_file=files.key_file, ca_file=files.ca_file, **kwargs
    )

"""A throwaway certificate authority for development clusters and tests.

This is for development and tests; production certificates come from your PKI (your
organisation's CA, cert-manager, Vault, ...). It writes PEM files that
:class:`raftgrpc.TlsConfig` loads: an ECDSA P-256 CA, and leaf certificates that can be
used both as a server certificate and as an mTLS client certificate.

A node's certificate (:meth:`CertificateAuthority.issue_node`) names the node id it may
claim as a SAN URI ``raftgrpc://<host>:<port>`` (see :func:`raftgrpc._security.tls.node_uri`), plus
the host as a SAN IP address or DNS name, so that peers dialling ``host:port`` can verify it
by hostname::

    from raftgrpc.testing import _ca as pki

    ca = pki.CertificateAuthority.create("certs")
    files = ca.issue_node("127.0.0.1:4321")      # certs/127.0.0.1_4321.{crt,key}
    # files.cert_file, files.key_file, files.ca_file -> raftgrpc.TlsConfig(...)

Private keys are written with mode 0600 and are not encrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftgrpc._errors import ConfigError
from raftgrpc._protocol.address import split_host_port
from raftgrpc._security.tls import _canonical_host, canonical_node_id, node_uri

__all__ = ["CertFiles", "CertificateAuthority", "file_stem", "node_uri"]

# Certificates are back-dated by this much so that small clock skew between the machine that
# issues them and the machines that verify them does not make them "not yet valid".
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertFiles:
    """PEM files for one identity: its certificate, its private key and the CA bundle."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class CertificateAuthority:
    """A self-signed CA whose certificate and key live in ``directory``.

    Create one with :meth:`create` (new key) or :meth:`load` (files written earlier).
    """

    def __init__(
        self,
        directory: Path,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        ca_file: Path,
    ) -> None:
        self.directory = directory
        self.cert = cert
        self.key = key
        self.ca_file = ca_file

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], name: str = "raftgrpc-dev-ca", days: int = 365
    ) -> CertificateAuthority:
        """Generate a new CA; writes ``<name>.crt`` and ``<name>.key`` into ``directory``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        stem = file_stem(name)
        ca_file = path / f"{stem}.crt"
        _write(ca_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(path / f"{stem}.key", _key_pem(key), private=True)
        return cls(path, cert, key, ca_file)

    @classmethod
    def load(
        cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
    ) -> CertificateAuthority:
        """A CA from files written by :meth:`create`; new leaves go next to ``cert_file``."""
        cert_path = Path(cert_file)
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load CA from {cert_path} / {key_file}: {type(exc).__name__}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"CA key {key_file} is not an EC key")
        return cls(cert_path.parent, cert, key, cert_path)

    def issue(
        self,
        name: str,
        *,
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        uris: Iterable[str] = (),
        client: bool = True,
        server: bool = True,
        days: int = 1,
        directory: str | os.PathLike[str] | None = None,
    ) -> CertFiles:
        """Issue a leaf certificate with common name ``name`` and the given SANs.

        ``client``/``server`` select the extended key usages (clientAuth, serverAuth). The
        files are ``<name>.crt`` and ``<name>.key`` (characters unsafe in file names become
        ``_``) in ``directory`` (default: the CA's directory); existing files are replaced.
        """
        if not (client or server):
            raise ConfigError("a certificate needs client or server usage (or both)")
        san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        san += [x509.UniformResourceIdentifier(u) for u in uris]
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        out = Path(directory) if directory is not None else self.directory
        out.mkdir(parents=True, exist_ok=True)
        stem = file_stem(name)
        cert_file, key_file = out / f"{stem}.crt", out / f"{stem}.key"
        # Key first: a reader that sees the new certificate then finds the matching key.
        _write(key_file, _key_pem(key), private=True)
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
        return CertFiles(cert_file=cert_file, key_file=key_file, ca_file=self.ca_file)

    def issue_node(
        self,
        node_id: str,
        *,
        days: int = 1,
        directory: str | os.PathLike[str] | None = None,
    ) -> CertFiles:
        """Issue the certificate of Raft node ``node_id`` (``host:port``).

        SANs: URI :func:`node_uri` (``raftgrpc://host:port``, the identity the node may claim)
        and the host, as an IP address SAN if it is one, otherwise as a DNS SAN (``localhost``
        also gets IP SANs 127.0.0.1 and ::1). Usable as server and client certificate.
        """
        host, _port = split_host_port(node_id)
        host = _canonical_host(host)
        dns: list[str] = []
        ips: list[str] = []
        try:
            ipaddress.ip_address(host)
            ips.append(host)
        except ValueError:
            dns.append(host)
            if host == "localhost":
                ips += ["127.0.0.1", "::1"]
        return self.issue(
            canonical_node_id(node_id),
            dns=dns,
            ips=ips,
            uris=[node_uri(node_id)],
            days=days,
            directory=directory,
        )


def file_stem(name: str) -> str:
    """The file name stem used for ``name`` (a node id such as ``127.0.0.1:4321`` gives
    ``127.0.0.1_4321``): what :meth:`CertificateAuthority.issue_node` writes."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically (temp file + rename), so a reloading reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)

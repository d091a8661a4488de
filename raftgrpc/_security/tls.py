"""TLS and mutual TLS (mTLS) for the gRPC transport.

* :class:`TlsConfig` names this node's certificate chain and key (PEM) and the CA bundle that
  verifies peers. The same certificate is the server certificate and, when dialling peers, the
  client certificate, so one file pair per node serves both TLS and mTLS.
* :func:`server_credentials`, :func:`channel_credentials` and :func:`channel_options` turn it
  into gRPC credentials. The server credentials reload the files when they change on disk.
* :func:`peer_identities` reads the identities in a peer's *verified* client certificate and
  :func:`default_match` says which node ids they entitle it to claim; the server layer that
  binds the node id a peer claims (in the first message of its stream) to them is
  :func:`raftgrpc.interceptors.identity.identity_interceptor`.

Identities. gRPC (1.85) puts these keys in ``ServicerContext.auth_context()`` for a TLS
connection; each value is a list of ``bytes``:

``transport_security_type``        ``[b"ssl"]`` (``[b"insecure"]`` on a plaintext port)
``security_level``                 ``[b"TSI_PRIVACY_AND_INTEGRITY"]``
``ssl_tls_version``, ``ssl_session_reused``, ``ssl_negotiated_key_exchange_group``
and, only when the client presented a certificate (mTLS):
``x509_subject``                   ``[b"CN=..."]``
``x509_common_name``               the subject CN
``x509_subject_alternative_name``  every SAN (DNS, IP, URI) in certificate order
``peer_dns``, ``peer_ip``, ``peer_uri``  the same SANs split by type
``x509_pem_cert``                  the client's leaf certificate, PEM

``ssl_server_credentials`` either does not request a client certificate
(``require_client_auth=False``) or requires *and verifies* one, so the ``x509_*`` keys only
ever describe a certificate that chains to ``ca_file``.

Node-id rule (:func:`default_match`): a certificate that carries a ``raftgrpc://`` SAN URI
may claim exactly the node ids named by such URIs (``raftgrpc://127.0.0.1:4321``; compared
after canonicalisation, see :func:`canonical_node_id`). Only a certificate without any
``raftgrpc://`` URI falls back to the host rule: the claimed id's host must equal one of its
SAN DNS names / IP addresses (or its CN), which lets any port on that host be claimed.
Prefer the URI form: node ids are ``host:port`` and several nodes may share a host.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import grpc

from raftgrpc._errors import ConfigError
from raftgrpc._protocol.address import join_host_port, split_host_port
from raftgrpc._security._filestamp import FileStamp, stamp

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "NODE_URI_SCHEME",
    "TlsConfig",
    "canonical_node_id",
    "channel_credentials",
    "channel_options",
    "default_match",
    "node_uri",
    "peer_identities",
    "server_credentials",
]

logger = logging.getLogger("raftgrpc.tls")

NODE_URI_SCHEME = "raftgrpc"
_URI_PREFIX = f"{NODE_URI_SCHEME}://"


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsConfig:
    """Where this node's TLS material lives. Validated when constructed.

    ``cert_file``: PEM certificate chain, leaf first. Used as the server certificate and, when
    dialling peers, as the client certificate (mTLS).
    ``key_file``: its PEM private key (unencrypted).
    ``ca_file``: PEM CA bundle that verifies peers' certificates.
    ``require_client_cert``: mTLS; the server refuses clients without a certificate signed by
    ``ca_file``.
    ``server_name_override``: the name to verify the server certificate against instead of
    the dialled host (tests, clusters addressed by IP whose certificates name a DNS host).

    Raises :class:`~raftgrpc._errors.ConfigError` naming the file if a file is missing or
    unreadable, does not parse, or the key does not belong to the certificate. The message
    never contains key material.
    """

    cert_file: str | os.PathLike[str]
    key_file: str | os.PathLike[str]
    ca_file: str | os.PathLike[str]
    require_client_cert: bool = False
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if self.server_name_override is not None and not self.server_name_override.strip():
            raise ConfigError("server_name_override must be a non-empty name or None")
        _load(self)


class _Material(NamedTuple):
    cert_chain: bytes
    key: bytes
    ca: bytes


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"TLS {what} file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} file {path}: {exc.strerror}") from None


def _certificates(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    from cryptography import x509  # when certificates are loaded: not at import raftgrpc

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"TLS {what} file {path} contains no valid PEM certificate")
    return certs


def _load(cfg: TlsConfig) -> _Material:
    """Read and check the three files; ConfigError (without key material) if they are bad."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path, ca_path = Path(cfg.cert_file), Path(cfg.key_file), Path(cfg.ca_file)
    chain = _read(cert_path, "certificate")
    key_pem = _read(key_path, "key")
    ca = _read(ca_path, "CA")
    leaf = _certificates(chain, cert_path, "certificate")[0]
    _certificates(ca, ca_path, "CA")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        # Never include the exception text: it may quote the key's contents.
        raise ConfigError(
            f"TLS key file {key_path} is encrypted; an unencrypted key is needed"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"TLS key file {key_path} contains no valid PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(f"TLS key file {key_path} does not match the certificate in {cert_path}")
    return _Material(chain, key_pem, ca)


# --- credentials -----------------------------------------------------------------------------


def _stamps(cfg: TlsConfig) -> tuple[FileStamp, ...] | None:
    """The stamps of the three files (:mod:`raftgrpc._security._filestamp`); None if one
    cannot be stat'ed."""
    try:
        return tuple(stamp(name) for name in (cfg.cert_file, cfg.key_file, cfg.ca_file))
    except OSError:
        return None


class _Reloader:
    """The certificate-configuration fetcher of ``grpc.dynamic_ssl_server_credentials``.

    gRPC calls it (on its own threads) before every TLS handshake; it returns a new
    configuration when the files changed since the last load, and None (keep the current
    one) otherwise. Files caught half-rotated (e.g. the new certificate with the old key) are
    not loaded; the next handshake tries again.
    """

    def __init__(self, cfg: TlsConfig, stamps: tuple[FileStamp, ...] | None) -> None:
        self._cfg = cfg
        self._stamps = stamps
        self._failed_stamps: tuple[FileStamp, ...] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            with self._lock:
                stamps = _stamps(self._cfg)
                if stamps is None or stamps == self._stamps:
                    return None
                try:
                    material = _load(self._cfg)
                except ConfigError as exc:
                    if stamps != self._failed_stamps:
                        self._failed_stamps = stamps
                        logger.warning(
                            "raftgrpc: TLS files changed but cannot be loaded, "
                            "keeping the current certificate: %s",
                            exc,
                            extra={"event": "tls.reload_failed", "reason": str(exc)},
                        )
                    return None
                # Stamp taken before reading: a change during the read is seen next time.
                self._stamps = stamps
                logger.info(
                    "raftgrpc: TLS certificate reloaded from %s",
                    self._cfg.cert_file,
                    extra={"event": "tls.reloaded"},
                )
                return _certificate_configuration(material)
        except Exception:  # never let an exception escape into gRPC's handshake path
            logger.exception("raftgrpc: TLS certificate reload failed")
            return None


def _certificate_configuration(material: _Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert_chain)], root_certificates=material.ca
    )


def server_credentials(cfg: TlsConfig, *, reload: bool = True) -> grpc.ServerCredentials:
    """Server credentials for ``grpc.Server.add_secure_port``.

    ``cfg.require_client_cert`` requires and verifies a client certificate signed by
    ``cfg.ca_file`` (mTLS). With ``reload`` (the default) the credentials are dynamic: before
    each TLS handshake the three files are stat'ed, and when one changed (mtime, size, inode or
    device) they are loaded again, so renewing a certificate needs no restart. New connections
    get the new certificate (and the new CA bundle); established connections keep theirs.
    Replace the files atomically (write, then rename), key before certificate; a pair that
    does not match is skipped, with a warning, until it does.
    """
    stamps = _stamps(cfg)
    material = _load(cfg)
    if not reload:
        return grpc.ssl_server_credentials(
            [(material.key, material.cert_chain)],
            root_certificates=material.ca,
            require_client_auth=cfg.require_client_cert,
        )
    fetcher = _Reloader(cfg, stamps)
    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(material),
        cast(Callable[[], grpc.ServerCertificateConfiguration], fetcher),
        require_client_authentication=cfg.require_client_cert,
    )


def channel_credentials(cfg: TlsConfig) -> grpc.ChannelCredentials:
    """Channel credentials for dialling peers: trust ``ca_file``, present this node's certificate.

    The files are read when this is called: a channel keeps the certificate it was created
    with, so after a rotation only new channels present the new client certificate.
    """
    material = _load(cfg)
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert_chain,
    )


def channel_options(cfg: TlsConfig) -> list[tuple[str, Any]]:
    """Channel options that go with :func:`channel_credentials`.

    ``grpc.ssl_target_name_override`` when ``cfg.server_name_override`` is set: the server
    certificate is verified against (and SNI names) that name instead of the dialled host.
    """
    if cfg.server_name_override is None:
        return []
    return [("grpc.ssl_target_name_override", cfg.server_name_override)]


# --- identities ------------------------------------------------------------------------------


def canonical_node_id(node_id: str) -> str:
    """``host:port`` with an IPv6 host bracketed, an IP normalised, a DNS name lowercased.

    Raises :class:`~raftgrpc._errors.ConfigError` if ``node_id`` is not ``host:port``.

    >>> canonical_node_id("::1:4321")
    '[::1]:4321'
    >>> canonical_node_id("[0:0::1]:4321")
    '[::1]:4321'
    >>> canonical_node_id("Node-1.Example.:80")
    'node-1.example:80'
    """
    host, port = split_host_port(node_id)
    return join_host_port(_canonical_host(host), port)


def node_uri(node_id: str) -> str:
    """The SAN URI that entitles a certificate to claim ``node_id``.

    >>> node_uri("127.0.0.1:4321")
    'raftgrpc://127.0.0.1:4321'
    >>> node_uri("::1:4321")
    'raftgrpc://[::1]:4321'
    """
    return _URI_PREFIX + canonical_node_id(node_id)


def _canonical_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def peer_identities(context: grpc.ServicerContext) -> list[str]:
    """The identities in the peer's verified client certificate; [] if it presented none.

    Every subject alternative name (DNS names, IP addresses and URIs, as text, in certificate
    order), then the subject common name if it is not already listed. Empty on a plaintext
    connection, and on a TLS connection to a server that does not require client certificates.
    """
    auth = cast(dict[str, list[bytes]], context.auth_context())
    if b"ssl" not in auth.get("transport_security_type", []):
        return []
    identities: list[str] = []
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        for raw in auth.get(key, []):
            text = raw.decode("utf-8", "replace")
            if text and text not in identities:
                identities.append(text)
    return identities


def default_match(claimed: str, identities: list[str]) -> bool:
    """Whether a certificate with ``identities`` may claim node id ``claimed``.

    If any identity is a ``raftgrpc://`` URI, ``claimed`` must equal the ``host:port`` of one
    of them (both canonicalised: IPv6 bracketed, IPs normalised, DNS names lowercased); other
    identities are then ignored. Otherwise the host of ``claimed`` must equal one of the
    identities that is not a URI (a SAN DNS name or IP address, or the CN); wildcard names
    are not expanded.

    >>> default_match("127.0.0.1:1111", ["127.0.0.1", "raftgrpc://127.0.0.1:1111"])
    True
    >>> default_match("127.0.0.1:2222", ["127.0.0.1", "raftgrpc://127.0.0.1:1111"])
    False
    >>> default_match("::1:2222", ["::1"])
    True
    """
    try:
        wanted = canonical_node_id(claimed)
    except ConfigError:
        return False
    uris = [i for i in identities if i[: len(_URI_PREFIX)].lower() == _URI_PREFIX]
    if uris:
        for uri in uris:
            try:
                if canonical_node_id(uri[len(_URI_PREFIX) :]) == wanted:
                    return True
            except ConfigError:
                continue
        return False
    host, _port = split_host_port(wanted)
    return any(_canonical_host(i) == host for i in identities if "://" not in i)

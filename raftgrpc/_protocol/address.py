"""Node addresses as PySyncObj writes them, and as gRPC wants them."""

from __future__ import annotations

from collections.abc import Callable

from raftgrpc._errors import ConfigError

__all__ = ["grpc_target", "listen_target", "split_host_port"]


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` on the last colon, as PySyncObj's TCPNode does.

    IPv6 hosts may be bracketed or not: ``[::1]:4321`` and ``::1:4321`` both give ``::1``.

    >>> split_host_port("[::1]:4321")
    ('::1', 4321)
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"expected an address 'host:port', got {address!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def grpc_target(address: str) -> str:
    """The gRPC target (``host:port``, IPv6 bracketed) for a PySyncObj node address.

    >>> grpc_target("::1:4321")
    '[::1]:4321'
    >>> grpc_target("localhost:4321")
    'localhost:4321'
    """
    host, port = split_host_port(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def listen_target(
    node_id: str,
    listen_address: str | None = None,
    bind_address: str | None = None,
    address_of: Callable[[str], str] | None = None,
) -> str:
    """The gRPC target a node listens on, from TransportConfig and SyncObjConf.

    ``listen_address`` (TransportConfig) wins. Otherwise the node listens where
    ``address_of`` (TransportConfig; None: the identity) maps its own id, on
    ``bind_address``'s host (SyncObjConf.bindAddress, which names the interface) if that is
    set; without a mapping, ``bind_address`` is taken whole, as TCPTransport does. A mapping
    that fails raises :class:`~raftgrpc.ConfigError`.

    >>> listen_target("10.0.0.1:4321", bind_address="0.0.0.0:4321",
    ...               address_of=lambda node: node.replace(":4321", ":5321"))
    '0.0.0.0:5321'
    """
    if listen_address:
        return grpc_target(listen_address)
    if address_of is None:
        return grpc_target(bind_address or node_id)
    try:
        mapped = address_of(node_id)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"TransportConfig.address_of failed on {node_id!r}: {exc}") from exc
    if bind_address is None:
        return grpc_target(mapped)
    host, _ = split_host_port(bind_address)
    return grpc_target(f"{host}:{split_host_port(mapped)[1]}")

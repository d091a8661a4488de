"""Node addresses as PySyncObj writes them, and as gRPC wants them."""

from __future__ import annotations

from raftgrpc._errors import ConfigError

__all__ = ["grpc_target", "split_host_port"]


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

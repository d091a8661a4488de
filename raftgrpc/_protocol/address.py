"""Node addresses as PySyncObj writes them, as gRPC wants them, and maps between the two.

PySyncObj names a node by its TCP address (``"10.0.0.1:4321"``) and writes that name into
its log and membership, so the name outlives the transport. A cluster that moves from
TCPTransport to gRPC keeps those names, while gRPC must listen on another port for as long
as both transports run (:class:`raftgrpc.MigrationTransport`). Give a :class:`PortOffset`,
an :class:`AddressMap` (or any ``Callable[[str], str]``) as ``TransportConfig.address_of``;
every node must use the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from raftgrpc._errors import ConfigError

__all__ = [
    "AddressMap",
    "PortOffset",
    "grpc_target",
    "join_host_port",
    "listen_target",
    "split_host_port",
]


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
    return join_host_port(host, port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host bracketed (the inverse of :func:`split_host_port`).

    >>> join_host_port("::1", 4321)
    '[::1]:4321'
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PortOffset:
    """gRPC listens on the node's host at its Raft port plus ``offset``.

    >>> PortOffset(1000)("10.0.0.1:4321")
    '10.0.0.1:5321'
    >>> PortOffset(1000)("::1:4321")
    '[::1]:5321'
    """

    def __init__(self, offset: int) -> None:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset == 0:
            raise ConfigError(f"PortOffset needs a non-zero integer offset, got {offset!r}")
        self.offset = offset

    def __call__(self, node_id: str) -> str:
        host, port = split_host_port(node_id)
        mapped = port + self.offset
        if not 0 < mapped <= 65535:
            raise ConfigError(f"{node_id!r} plus a port offset of {self.offset} is out of range")
        return join_host_port(host, mapped)

    def __repr__(self) -> str:
        return f"PortOffset({self.offset})"


class AddressMap:
    """An explicit table: Raft id -> gRPC ``host:port``. An id missing from it is a
    :class:`~raftgrpc.ConfigError` (a node added later needs a new table on every node, or
    use a ``fallback`` mapping such as :class:`PortOffset`).

    >>> AddressMap({"10.0.0.1:4321": "10.0.0.1:9000"})("10.0.0.1:4321")
    '10.0.0.1:9000'
    """

    def __init__(self, table: Mapping[str, str], fallback: PortOffset | None = None) -> None:
        for key, value in table.items():
            split_host_port(key)
            split_host_port(value)
        self.table = dict(table)
        self.fallback = fallback

    def __call__(self, node_id: str) -> str:
        found = self.table.get(node_id)
        if found is not None:
            return found
        if self.fallback is not None:
            return self.fallback(node_id)
        raise ConfigError(f"no gRPC address for node {node_id!r} in the AddressMap")

    def __repr__(self) -> str:
        return f"AddressMap({len(self.table)} nodes, fallback={self.fallback!r})"


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

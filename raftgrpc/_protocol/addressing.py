"""Mappings from a node's Raft id to the address it serves gRPC on.

PySyncObj names a node by its TCP address (``"10.0.0.1:4321"``) and writes that name into
its log and membership, so the name outlives the transport. A cluster that moves from
TCPTransport to gRPC keeps those names, while gRPC must listen on another port for as long
as both transports run (:class:`raftgrpc.MigrationTransport`). Give one of these (or any
``Callable[[str], str]``) as ``TransportConfig.address_of``; every node must use the same.
"""

from __future__ import annotations

from collections.abc import Mapping

from raftgrpc._errors import ConfigError
from raftgrpc._protocol.address import split_host_port

__all__ = ["AddressMap", "PortOffset"]


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
        return f"[{host}]:{mapped}" if ":" in host else f"{host}:{mapped}"

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

"""Loopback ports and addresses for test clusters.

Ports are found by binding port 0 and releasing it, so a port can be taken again before the
node that gets it binds; handing no port out twice in one process, and checking the IPv6
twin of an IPv4 port (TCPTransport listens on the wildcard address), keeps that rare.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["HAS_IPV6", "addresses", "free_port", "free_ports", "port_of"]

_handed_out: set[int] = set()
_lock = threading.Lock()


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()
"""Whether the IPv6 loopback ``::1`` can be bound here."""


def free_port() -> int:
    """A port free on every IPv4 (and IPv6) address a moment ago, never handed out before
    by this process."""
    for _ in range(200):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
                s4.bind(("0.0.0.0", 0))
                port = int(s4.getsockname()[1])
                if HAS_IPV6:
                    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        s6.bind(("::", port))
        except OSError:
            continue  # the IPv6 twin is taken: try another port
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


def addresses(count: int, host: str = "127.0.0.1") -> list[str]:
    """``count`` node addresses ``host:port`` on fresh ports (``host`` as written: ``::1``
    and ``[::1]`` give different Raft ids)."""
    return [f"{host}:{free_port()}" for _ in range(count)]


def port_of(address: str) -> int:
    """The port of a ``host:port`` address (the host may be IPv6, bracketed or not)."""
    return int(address.rsplit(":", 1)[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports, each as :func:`free_port` finds them."""
    return [free_port() for _ in range(count)]

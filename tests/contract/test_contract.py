"""The transport contract (raftgrpc.testing.contract) over every transport raftgrpc knows:
PySyncObj's TCPTransport, GrpcTransport, MigrationTransport (gRPC first, TCPTransport behind
it, as examples/migration.py builds it) and the in-memory transport.

What is not a transport's contract but this suite's own machinery is checked here too: that
the leak check sees what is left behind, and why TCPTransport cannot take bracketed IPv6 ids.
"""

from __future__ import annotations

import socket
import threading

import pytest
from pysyncobj.node import TCPNode

from raftgrpc.testing.contract import STANDARD_KINDS, Resources, TransportContract, TransportKind


@pytest.fixture(params=STANDARD_KINDS, ids=[k.name for k in STANDARD_KINDS])
def transport_kind(request: pytest.FixtureRequest) -> TransportKind:
    kind: TransportKind = request.param
    return kind


class TestContract(TransportContract):
    """Every test of the contract, once per transport."""


def test_the_leak_check_sees_a_thread_and_a_socket_left_behind() -> None:
    before = Resources()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-behind", daemon=True)
    with socket.socket() as sock:
        with pytest.raises(AssertionError, match=r"left-behind.*socket:\["):
            thread.start()
            before.wait_released(timeout=0.1)
        stop.set()
        thread.join()
        with pytest.raises(AssertionError, match=r"threads still alive: \[\]; .*socket:"):
            before.wait_released(timeout=0.1)
        assert sock.fileno() in before.added()[1]
    assert before.wait_released(timeout=1.0) == {}


@pytest.mark.timeout(10)
def test_tcpnode_cannot_resolve_a_bracketed_ipv6_host() -> None:
    """Why TCPTransport (and MigrationTransport, which includes it) declare
    ``bracketed_ipv6=False``."""
    node = TCPNode("[::1]:4321")
    assert node.host == "[::1]"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(node.host, node.port)

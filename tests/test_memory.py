"""The in-memory transport's own promises, beyond the contract suite (tests/contract): copies
instead of shared messages, links a test cuts and heals, and callbacks on the tick thread only.

Nodes are hosted by tests/host.py's stand-in for SyncObj, which records every callback and
checks that it runs on the thread that ticks the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.transport import TransportNotReadyError

from raftgrpc import TransportConfig
from raftgrpc.testing import MemoryNetwork
from tests.host import Host, destroy_all

pytestmark = pytest.mark.timeout(30)

A, B = "10.0.0.1:1", "10.0.0.2:1"


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
def two(network: MemoryNetwork) -> Iterator[tuple[Host, Host]]:
    made: list[Host] = []
    try:
        for me, other in ((A, B), (B, A)):
            made.append(Host(me, [other], TransportConfig(), factory=network.transport_class))
        a, b = made
        a.tick_until(lambda: ("connected", B) in a.events, 5, "a connected", also=(b,))
        b.tick_until(lambda: ("connected", A) in b.events, 5, "b connected", also=(a,))
        yield a, b
    finally:
        destroy_all(made)


def test_the_receiver_gets_a_copy_of_what_was_sent(two: tuple[Host, Host]) -> None:
    a, b = two
    message = {"type": "append_entries", "term": 1, "entries": [(b"x", 1, 1)]}
    assert a.transport.send(TCPNode(B), message)
    message["entries"].append((b"changed after send", 2, 1))
    b.tick_until(lambda: b.messages, 5, "the message at b", also=(a,))
    ((sender, received),) = b.messages
    assert sender == A
    assert received == {"type": "append_entries", "term": 1, "entries": [(b"x", 1, 1)]}
    assert received is not message and received["entries"] is not message["entries"]


def test_a_cut_link_disconnects_both_sides_until_healed(
    network: MemoryNetwork, two: tuple[Host, Host]
) -> None:
    a, b = two
    network.cut(A, B)
    a.tick_until(lambda: ("disconnected", B) in a.events, 5, "a sees b gone", also=(b,))
    b.tick_until(lambda: ("disconnected", A) in b.events, 5, "b sees a gone", also=(a,))
    assert not a.transport.send(TCPNode(B), {"type": "request_vote", "term": 2})
    a.events.clear()
    b.events.clear()
    network.heal()
    a.tick_until(lambda: ("connected", B) in a.events, 5, "a redialled b", also=(b,))
    b.tick_until(lambda: ("connected", A) in b.events, 5, "b accepted a", also=(a,))


def test_a_second_node_on_an_id_does_not_get_ready(network: MemoryNetwork) -> None:
    first = Host(A, [], TransportConfig(), factory=network.transport_class)
    built: list[Any] = []

    def keep(*args: Any) -> Any:
        built.append(network.transport_class(*args))
        return built[-1]

    conf = SyncObjConf(maxBindRetries=1, bindRetryTime=0.01)
    with pytest.raises(TransportNotReadyError):
        Host(A, [], TransportConfig(), conf=conf, factory=keep)
    (second,) = built
    assert not second.ready and first.transport.ready
    second.destroy()
    destroy_all([first])

"""Raft id -> gRPC address mappings (raftgrpc._protocol.address) and how GrpcTransport uses them
(TransportConfig.address_of, listen_target, peer_error)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode

from raftgrpc import (
    AddressMap,
    ConfigError,
    PeerUnreachable,
    PortOffset,
    TransportBuilder,
    TransportConfig,
)
from tests.certs import make_ca, node_cert, tls_config
from tests.helpers import BEAT, free_ports, thread_ids, wait_until
from tests.host import Host

pytestmark = pytest.mark.timeout(60)


def assert_free(port: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(reply.status)


# -- PortOffset --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "offset", "expected"),
    [
        ("10.0.0.1:4321", 1000, "10.0.0.1:5321"),
        ("node-a.example.com:4321", 1000, "node-a.example.com:5321"),
        ("localhost:4321", -321, "localhost:4000"),
        ("::1:4321", 1000, "[::1]:5321"),
        ("[::1]:4321", 1000, "[::1]:5321"),
        ("fe80::a:b:4321", 1, "[fe80::a:b]:4322"),
        ("[2001:db8::7]:80", 8000, "[2001:db8::7]:8080"),
        ("h:1", 65534, "h:65535"),
        ("h:65535", -65534, "h:1"),
    ],
)
def test_port_offset_maps_the_port_and_keeps_the_host(
    node_id: str, offset: int, expected: str
) -> None:
    assert PortOffset(offset)(node_id) == expected


@pytest.mark.parametrize(
    ("node_id", "offset"),
    [("h:65000", 1000), ("h:65535", 1), ("h:4321", -4321), ("h:10", -11), ("::1:4321", 70000)],
)
def test_port_offset_out_of_range_is_a_config_error(node_id: str, offset: int) -> None:
    with pytest.raises(ConfigError, match="out of range"):
        PortOffset(offset)(node_id)


@pytest.mark.parametrize("offset", [0, True, False, 1.5, 1000.0, "1000", None])
def test_port_offset_needs_a_non_zero_integer(offset: Any) -> None:
    with pytest.raises(ConfigError, match="non-zero integer"):
        PortOffset(offset)


@pytest.mark.parametrize("node_id", ["nohost", "h:", ":4321", "h:port", "h:-1", "h:70000"])
def test_port_offset_refuses_an_invalid_node_id(node_id: str) -> None:
    with pytest.raises(ConfigError):
        PortOffset(1000)(node_id)


# -- AddressMap --------------------------------------------------------------------------------


def test_address_map_hit_and_miss() -> None:
    amap = AddressMap({"10.0.0.1:4321": "10.0.0.1:9000", "10.0.0.2:4321": "[::1]:9001"})
    assert amap("10.0.0.1:4321") == "10.0.0.1:9000"
    assert amap("10.0.0.2:4321") == "[::1]:9001"
    with pytest.raises(ConfigError, match=r"no gRPC address for node '10\.0\.0\.3:4321'"):
        amap("10.0.0.3:4321")


def test_address_map_falls_back_only_for_missing_ids() -> None:
    amap = AddressMap({"10.0.0.1:4321": "10.0.0.1:9000"}, fallback=PortOffset(1000))
    assert amap("10.0.0.1:4321") == "10.0.0.1:9000"
    assert amap("10.0.0.3:4321") == "10.0.0.3:5321"
    with pytest.raises(ConfigError, match="out of range"):
        amap("10.0.0.3:65000")


def test_address_map_keeps_its_own_copy_of_the_table() -> None:
    table = {"10.0.0.1:4321": "10.0.0.1:9000"}
    amap = AddressMap(table)
    table["10.0.0.2:4321"] = "10.0.0.2:9000"
    with pytest.raises(ConfigError):
        amap("10.0.0.2:4321")


@pytest.mark.parametrize(
    "table",
    [
        {"no-port": "10.0.0.1:9000"},
        {"10.0.0.1:4321": "no-port"},
        {"10.0.0.1:4321": "10.0.0.1:99999"},
        {"10.0.0.1:4321": ":9000"},
        {"10.0.0.1:x": "10.0.0.1:9000"},
    ],
)
def test_address_map_refuses_invalid_entries_at_construction(table: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        AddressMap(table)


# -- GrpcTransport with address_of ------------------------------------------------------------


def test_grpc_listens_on_the_mapped_port_not_on_the_raft_id(hosts: list[Host]) -> None:
    raft_port, grpc_port = free_ports(2)
    me = f"127.0.0.1:{raft_port}"
    config = TransportConfig(address_of=AddressMap({me: f"127.0.0.1:{grpc_port}"}))
    h = Host(me, [], config, background=True)  # it answers while it ticks
    hosts.append(h)
    assert h.transport.listen_target == f"127.0.0.1:{grpc_port}"
    assert h.transport.bound_port == grpc_port
    assert health_status(grpc_port) == health_pb2.HealthCheckResponse.SERVING
    assert_free(raft_port)


def test_grpc_listens_at_a_port_offset(hosts: list[Host]) -> None:
    raft_port, grpc_port = free_ports(2)
    me = f"127.0.0.1:{raft_port}"
    h = Host(me, [], TransportConfig(address_of=PortOffset(grpc_port - raft_port)), background=True)
    hosts.append(h)
    assert h.transport.listen_target == f"127.0.0.1:{grpc_port}"
    assert health_status(grpc_port) == health_pb2.HealthCheckResponse.SERVING
    assert_free(raft_port)


@pytest.mark.parametrize("bind_host", ["0.0.0.0", "127.0.0.1"])
def test_the_bind_address_gives_the_host_and_the_mapping_the_port(
    hosts: list[Host], bind_host: str
) -> None:
    """SyncObjConf.bindAddress (typically 0.0.0.0 and the Raft port) is not a node id: an
    AddressMap need not know it. The node listens on its host, at its own id's mapped port."""
    raft_port, grpc_port = free_ports(2)
    me = f"127.0.0.1:{raft_port}"
    config = TransportConfig(address_of=AddressMap({me: f"127.0.0.1:{grpc_port}"}))
    h = Host(me, [], config, conf=SyncObjConf(bindAddress=f"{bind_host}:{raft_port}"))
    hosts.append(h)
    assert h.transport.listen_target == f"{bind_host}:{grpc_port}"
    assert h.transport.bound_port == grpc_port
    assert_free(raft_port)


def test_listen_address_wins_over_address_of(hosts: list[Host]) -> None:
    raft_port, mapped_port, listen_port = free_ports(3)
    me = f"127.0.0.1:{raft_port}"
    config = TransportConfig(
        listen_address=f"127.0.0.1:{listen_port}",
        address_of=AddressMap({me: f"127.0.0.1:{mapped_port}"}),
    )
    h = Host(me, [], config)
    hosts.append(h)
    assert h.transport.listen_target == f"127.0.0.1:{listen_port}"
    assert h.transport.bound_port == listen_port
    assert_free(mapped_port)
    # And an address_of that does not know the node is then never asked about it.
    other = Host(
        f"127.0.0.1:{free_ports(1)[0]}",
        [],
        TransportConfig(listen_address=f"127.0.0.1:{mapped_port}", address_of=AddressMap({})),
    )
    hosts.append(other)
    assert other.transport.bound_port == mapped_port


def _unmappable(node_id: str) -> str:
    raise KeyError(node_id)


@pytest.mark.parametrize(
    ("address_of", "match"),
    [(AddressMap({}), "no gRPC address"), (_unmappable, "address_of failed")],
)
def test_an_address_of_failing_for_the_node_itself_fails_construction_cleanly(
    address_of: Any, match: str
) -> None:
    raft_port, health_port = free_ports(2)
    before = thread_ids()
    config = TransportConfig(
        address_of=address_of, health_listen_address=f"127.0.0.1:{health_port}"
    )
    with pytest.raises(ConfigError, match=match):
        Host(f"127.0.0.1:{raft_port}", ["127.0.0.1:1"], config)
    wait_until(lambda: thread_ids() <= before, 10, "threads to end")
    assert_free(health_port)
    assert_free(raft_port)


def test_a_member_the_map_does_not_know_is_logged_not_raised(
    hosts: list[Host], caplog: pytest.LogCaptureFixture
) -> None:
    raft_port, grpc_port, other_port = free_ports(3)
    me, other = f"127.0.0.1:{raft_port}", f"127.0.0.1:{other_port}"
    h = Host(me, [], TransportConfig(address_of=AddressMap({me: f"127.0.0.1:{grpc_port}"})))
    hosts.append(h)
    node = TCPNode(other)
    with caplog.at_level(logging.ERROR, logger="raftgrpc.transport"):
        h.transport.addNode(node)  # as SyncObj does on a membership change: no raise
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("no gRPC address" in m and other in m for m in errors), errors
    error = h.transport.peer_error(node)
    assert isinstance(error, PeerUnreachable)
    assert "no gRPC address" in str(error)
    assert error.node_id == other and error.code is None
    for _ in range(10):
        h.tick(0.005)
    assert h.transport.send(node, BEAT) is False
    assert h.events == []
    h.tick_thread = threading.current_thread()
    h.transport.dropNode(node)  # and it can leave again
    assert "not a member" in str(h.transport.peer_error(node))


# -- peer_error ------------------------------------------------------------------------------


@pytest.fixture
def mapped_pair(hosts: list[Host]) -> Iterator[tuple[Host, Host, str, str]]:
    ports = free_ports(4)
    a_id, b_id = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    config = TransportConfig(
        address_of=AddressMap({a_id: f"127.0.0.1:{ports[2]}", b_id: f"127.0.0.1:{ports[3]}"})
    )
    a = Host(a_id, [b_id], config)
    hosts.append(a)
    b = Host(b_id, [a_id], config)
    hosts.append(b)
    a.tick_until(lambda: ("connected", b_id) in a.events, 10, "a connected to b", (b,))
    b.tick_until(lambda: ("connected", a_id) in b.events, 10, "b connected to a", (a,))
    yield a, b, a_id, b_id


def test_peer_error_is_none_for_a_connected_peer(mapped_pair: tuple[Host, Host, str, str]) -> None:
    a, b, a_id, b_id = mapped_pair
    assert a.transport.peer_error(TCPNode(b_id)) is None
    assert b.transport.peer_error(TCPNode(a_id)) is None
    a.tick_thread = threading.current_thread()
    assert a.transport.send(TCPNode(b_id), BEAT) is True
    b.tick_until(lambda: b.messages, 10, "b to receive over the mapped ports", also=(a,))
    assert b.messages == [(a_id, BEAT)]
    stranger = a.transport.peer_error(TCPNode("127.0.0.1:1"))
    assert isinstance(stranger, PeerUnreachable) and "not a member" in str(stranger)


def test_peer_error_tells_unavailable_for_a_peer_without_a_server(hosts: list[Host]) -> None:
    raft_port, grpc_port, other_port, other_grpc = free_ports(4)
    me, other = f"127.0.0.1:{raft_port}", f"127.0.0.1:{other_port}"
    amap = AddressMap({me: f"127.0.0.1:{grpc_port}", other: f"127.0.0.1:{other_grpc}"})
    h = Host(me, [other], TransportConfig(address_of=amap))
    hosts.append(h)
    node = TCPNode(other)
    first = h.transport.peer_error(node)
    assert isinstance(first, PeerUnreachable)  # no attempt ended yet, or it failed already

    def unavailable() -> bool:
        h.tick(0.005)
        error = h.transport.peer_error(node)
        return error is not None and error.code == grpc.StatusCode.UNAVAILABLE

    wait_until(unavailable, 15, "peer_error to report UNAVAILABLE")
    error = h.transport.peer_error(node)
    assert isinstance(error, PeerUnreachable)
    assert error.node_id == other and error.reason
    assert other in str(error)
    assert ("connected", other) not in h.events


# -- SyncObjConf.password --------------------------------------------------------------------


def test_a_password_is_accepted_when_the_grpc_side_uses_tls(
    hosts: list[Host], tmp_path: Path
) -> None:
    """A cluster migrating from a password-protected TCPTransport keeps its password (for the
    TCP side) while gRPC is secured by TLS. (Without TLS it is refused: test_transport.py.)"""
    ca = make_ca(tmp_path)

    def tls(node_id: str) -> Any:
        return tls_config(
            node_cert(ca, node_id, directory=tmp_path / "certs"), require_client_cert=True
        )

    factory = TransportBuilder().with_tls(tls).build()
    ports = free_ports(2)
    a_id, b_id = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    conf = SyncObjConf(password="s3cret")
    a = Host(a_id, [b_id], TransportConfig(), conf=conf, factory=factory)
    hosts.append(a)
    b = Host(b_id, [a_id], TransportConfig(), conf=SyncObjConf(password="s3cret"), factory=factory)
    hosts.append(b)
    a.tick_until(lambda: ("connected", b_id) in a.events, 10, "a connected to b over mTLS", (b,))
    b.tick_until(lambda: ("connected", a_id) in b.events, 10, "b connected to a over mTLS", (a,))

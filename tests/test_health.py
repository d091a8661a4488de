"""raftgrpc._ops.health on a real transport, through the standard grpc.health.v1 stub: the three
services, Watch, the separate plaintext port, JWT exemption, reflection, shutdown."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftgrpc import GrpcTransport, Middleware, TransportBuilder, TransportConfig
from raftgrpc._ops import health
from raftgrpc.testing import PROTOCOL_VERSION, STREAM_METHOD
from raftgrpc.v1 import transport_pb2 as pb
from tests.helpers import auth_files, free_port, wait_until
from tests.host import Host

pytestmark = pytest.mark.timeout(60)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
RPC_S = 5.0

LEADER_STATUS = {"leader": "me", "state": 2, "has_quorum": True, "commit_idx": 7}


def follower_status(commit_idx: int, leader_commit_idx: int) -> dict[str, Any]:
    return {
        "leader": "other",
        "state": 0,
        "has_quorum": True,
        "commit_idx": commit_idx,
        "leader_commit_idx": leader_commit_idx,
    }


class StatusHost(Host):
    """A Host whose ``getStatus()`` returns what the test sets (None: no getStatus)."""

    raft_status: dict[str, Any] | None = None

    def getStatus(self) -> dict[str, Any]:  # SyncObj's name
        if self.raft_status is None:
            raise RuntimeError("no status yet")
        return dict(self.raft_status)


def new_host(
    hosts: list[Host],
    config: TransportConfig | None = None,
    me: str | None = "auto",
    factory: Any = None,
    **health_options: Any,
) -> StatusHost:
    """A host with no peers; health checked every 10 ms unless ``health_options`` say."""
    config = config if config is not None else TransportConfig()
    if factory is None:
        options = {"check_interval_s": 0.01, **health_options}
        mw = Middleware(services=[health.service(**options)])
        factory = functools.partial(GrpcTransport, config=config, middleware=mw)
    addr = f"127.0.0.1:{free_port()}" if me == "auto" else me
    others = [] if addr is not None else [f"127.0.0.1:{free_port()}"]
    # Ticked by a thread of its own, as SyncObj ticks a node: the node answers health RPCs
    # only while it ticks.
    host = StatusHost(addr, others, config, factory=factory, background=True)
    hosts.append(host)
    return host


def health_of(host: Host) -> health.HealthService:
    found = [s for s in host.transport.services if isinstance(s, health.HealthService)]
    assert len(found) == 1, host.transport.services
    return found[0]


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    made: list[grpc.Channel] = []
    yield made
    for c in made:
        c.close()


def plain(channels: list[grpc.Channel], port: int) -> health_pb2_grpc.HealthStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    channels.append(channel)
    return health_pb2_grpc.HealthStub(channel)


def check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_S)
    return int(reply.status)


def tick_until_status(host: Host, stub: Any, service: str, want: int, timeout: float = 5) -> None:
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(want)
    host.tick_until(lambda: check(stub, service) == want, timeout, f"{service!r} {name}")


class Watcher:
    """Consumes a Watch stream on a thread; statuses arrive on ``updates``, then None."""

    def __init__(self, stub: health_pb2_grpc.HealthStub, service: str) -> None:
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
        self.updates: queue.Queue[tuple[float, int | None]] = queue.Queue()
        self.ended: grpc.StatusCode | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for reply in self.call:
                self.updates.put((time.monotonic(), int(reply.status)))
        except grpc.RpcError as exc:
            self.ended = exc.code()
        self.updates.put((time.monotonic(), None))

    def next(self, host: Host | None = None, timeout: float = 5) -> int | None:
        """The next update; ticks ``host`` meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host is not None:
                host.tick()
            try:
                return self.updates.get(timeout=0.01)[1]
            except queue.Empty:
                continue
        raise AssertionError("no Watch update in time")

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)
        assert not self.thread.is_alive()


# -- the three services -------------------------------------------------------------------------


def test_check_reports_the_server_the_transport_and_raft(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    host = new_host(hosts)
    stub = plain(channels, host.transport.bound_port)
    assert check(stub, "") == SERVING
    tick_until_status(host, stub, "raftgrpc.v1.RaftTransport", SERVING)
    # No status from SyncObj yet (or no leader): not ready.
    assert check(stub, "raft") == NOT_SERVING
    host.raft_status = {**follower_status(5, 5), "leader": None}
    host.tick()
    assert check(stub, "raft") == NOT_SERVING
    host.raft_status = follower_status(95, 100)
    tick_until_status(host, stub, "raft", SERVING)
    host.raft_status = follower_status(95, 196)  # 101 behind: too far
    tick_until_status(host, stub, "raft", NOT_SERVING)
    host.raft_status = LEADER_STATUS
    tick_until_status(host, stub, "raft", SERVING)
    host.raft_status = {**LEADER_STATUS, "has_quorum": False}
    tick_until_status(host, stub, "raft", NOT_SERVING)
    with pytest.raises(grpc.RpcError) as unknown:
        check(stub, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_on_by_default_with_config_options(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    config = TransportConfig(raft_health_max_commit_lag=3)
    host = new_host(hosts, config, factory=functools.partial(GrpcTransport, config=config))
    service = health_of(host)
    assert service._max_commit_lag == 3
    stub = plain(channels, host.transport.bound_port)
    assert check(stub, "") == SERVING
    host.raft_status = follower_status(10, 13)
    tick_until_status(host, stub, "raft", SERVING)  # the default interval: 0.25 s
    # Off: no health service at all.
    off = TransportConfig(health=False)
    bare = new_host(hosts, off, factory=functools.partial(GrpcTransport, config=off))
    assert bare.transport.services == ()
    with pytest.raises(grpc.RpcError) as unimplemented:
        check(plain(channels, bare.transport.bound_port), "")
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_watch_sees_each_change_once(hosts: list[Host], channels: list[grpc.Channel]) -> None:
    host = new_host(hosts)
    stub = plain(channels, host.transport.bound_port)
    watcher = Watcher(stub, "raft")
    try:
        assert watcher.next(host) == NOT_SERVING
        host.raft_status = LEADER_STATUS
        assert watcher.next(host) == SERVING
        for _ in range(30):  # no change: nothing sent
            host.tick()
        assert watcher.updates.empty()
        host.raft_status = {**LEADER_STATUS, "leader": None}
        assert watcher.next(host) == NOT_SERVING
    finally:
        watcher.close()
    assert watcher.ended == grpc.StatusCode.CANCELLED
    unknown = Watcher(stub, "no.such.Service")
    try:
        assert unknown.next() == SERVICE_UNKNOWN
    finally:
        unknown.close()


def test_shutdown_reports_not_serving_to_watchers_before_the_port_closes(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    host = new_host(hosts)
    host.raft_status = LEADER_STATUS
    stub = plain(channels, host.transport.bound_port)
    tick_until_status(host, stub, "raft", SERVING)
    tick_until_status(host, stub, "raftgrpc.v1.RaftTransport", SERVING)
    watchers = {name: Watcher(stub, name) for name in ("", "raft")}
    for w in watchers.values():
        assert w.next() == SERVING
    host.transport.begin_shutdown()  # any thread; the statuses change at once
    for w in watchers.values():
        assert w.next() == NOT_SERVING
    for name in ("", "raft", "raftgrpc.v1.RaftTransport"):
        assert check(stub, name) == NOT_SERVING
    host.tick()  # later ticks cannot bring it back
    assert check(stub, "raft") == NOT_SERVING
    host.stop_ticking()
    host.tick_thread = threading.current_thread()
    host.transport.destroy()
    hosts.remove(host)
    for w in watchers.values():
        assert w.next() is None  # then the stream ends with the server
        assert w.ended in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        w.thread.join(5)


# -- the separate port, auth, reflection --------------------------------------------------------


def test_separate_plaintext_port_serves_health_only(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    host = new_host(hosts, listen_address="127.0.0.1:0", reflection=True)
    service = health_of(host)
    assert service.health_port is not None and service.health_port != host.transport.bound_port
    stub = plain(channels, service.health_port)
    host.raft_status = LEADER_STATUS
    tick_until_status(host, stub, "raft", SERVING)
    assert check(stub, "") == SERVING
    assert check(stub, "raftgrpc.v1.RaftTransport") == SERVING
    channel = channels[-1]
    hello = pb.StreamRequest(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id="x"))
    with pytest.raises(grpc.RpcError) as raft:
        list(channel.stream_stream(STREAM_METHOD)(iter([hello.SerializeToString()]), timeout=RPC_S))
    assert raft.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as refl:
        _list_services(channel)
    assert refl.value.code() == grpc.StatusCode.UNIMPLEMENTED
    port = service.health_port
    host.stop_ticking()
    host.tick_thread = threading.current_thread()
    host.transport.destroy()
    hosts.remove(host)
    with pytest.raises(grpc.RpcError) as gone:
        check(plain(channels, port), "")
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not [t.name for t in threading.enumerate() if t.name.startswith("raftgrpc-health")]


def test_read_only_node_serves_health_on_its_own_port(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    host = new_host(hosts, me=None, listen_address="127.0.0.1:0")
    port = health_of(host).health_port
    assert port is not None and host.transport.bound_port is None
    stub = plain(channels, port)
    assert check(stub, "") == SERVING
    assert check(stub, "raft") == NOT_SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        check(stub, "raftgrpc.v1.RaftTransport")  # a read-only node has no Raft server
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _auth_builder(tmp_path: Path) -> TransportBuilder:
    verifier, tokens = auth_files(tmp_path)
    return (
        TransportBuilder()
        .with_logging()
        .with_jwt(verifier=verifier, tokens=tokens, mode="enforce", allow_insecure_loopback=True)
    )


def test_health_needs_no_token_on_a_jwt_enforcing_node(
    hosts: list[Host], channels: list[grpc.Channel], tmp_path: Path
) -> None:
    builder = _auth_builder(tmp_path)
    builder.with_config(TransportConfig(reflection=True))
    host = new_host(hosts, factory=builder.build())
    local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    channel = grpc.secure_channel(f"127.0.0.1:{host.transport.bound_port}", local)  # no token
    channels.append(channel)
    stub = health_pb2_grpc.HealthStub(channel)
    assert check(stub, "") == SERVING
    tick_until_status(host, stub, "raftgrpc.v1.RaftTransport", SERVING)
    watcher = Watcher(stub, "")
    try:
        assert watcher.next() == SERVING
    finally:
        watcher.close()
    assert "grpc.health.v1.Health" in _list_services(channel)  # reflection is exempt too
    hello = pb.StreamRequest(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id="x"))
    with pytest.raises(grpc.RpcError) as refused:
        list(channel.stream_stream(STREAM_METHOD)(iter([hello.SerializeToString()]), timeout=RPC_S))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _list_services(channel: grpc.Channel) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(stub.ServerReflectionInfo(iter([request]), timeout=RPC_S))
    return [s.name for s in replies[0].list_services_response.service]


def test_reflection_lists_the_services_when_enabled(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    host = new_host(hosts, reflection=True, reflection_services=["example.Admin"])
    plain(channels, host.transport.bound_port)
    assert sorted(_list_services(channels[-1])) == [
        "example.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "raftgrpc.v1.RaftTransport",
    ]
    without = new_host(hosts)
    plain(channels, without.transport.bound_port)
    with pytest.raises(grpc.RpcError) as off:
        _list_services(channels[-1])
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- the raft status, as computed from SyncObj --------------------------------------------------


class FakeSyncObj:
    """The parts of a PySyncObj 0.3.17 SyncObj that raft_health reads."""

    def __init__(self, status: dict[str, Any], **private: Any) -> None:
        self.status = status
        self.otherNodes = ["b", "c"]
        self.conf = type("Conf", (), {"raftMaxTimeout": 1.4})()
        for name, value in private.items():
            setattr(self, f"_SyncObj__{name}", value)

    def getStatus(self) -> dict[str, Any]:
        return self.status


def test_a_leader_cut_off_from_the_majority_is_not_serving() -> None:
    now = 100.0
    fresh = {"b": now - 0.1, "c": now - 0.2}
    assert health.raft_health(FakeSyncObj(LEADER_STATUS, lastResponseTime=fresh), 100, now)[0]
    one_fresh = {"b": now - 0.1, "c": now - 5.0}  # itself and b: still a majority of 3
    assert health.raft_health(FakeSyncObj(LEADER_STATUS, lastResponseTime=one_fresh), 100, now)[0]
    # Connected streams, has_quorum still true, PySyncObj still LEADER: nobody answered.
    stale = {"b": now - 1.5, "c": now - 5.0}
    serving, why = health.raft_health(FakeSyncObj(LEADER_STATUS, lastResponseTime=stale), 100, now)
    assert not serving and "answered by 1 of 3" in why


def test_a_follower_that_stopped_hearing_from_its_leader_is_not_serving() -> None:
    now = 100.0
    status = follower_status(10, 10)
    assert health.raft_health(FakeSyncObj(status, raftElectionDeadline=now + 0.3), 100, now)[0]
    # Not connected to anyone, PySyncObj keeps the old leader; its election deadline passed.
    serving, why = health.raft_health(FakeSyncObj(status, raftElectionDeadline=now - 0.1), 100, now)
    assert not serving and "election timeout" in why
    lagging = follower_status(10, 111)
    assert not health.raft_health(FakeSyncObj(lagging), 100, now)[0]
    assert health.raft_health(FakeSyncObj(lagging), 101, now)[0]


def test_service_options_are_checked() -> None:
    from raftgrpc import ConfigError

    with pytest.raises(ConfigError):
        health.service(max_commit_lag=-1)
    with pytest.raises(ConfigError):
        health.service(check_interval_s=0)
    with pytest.raises(ConfigError):
        health.service(listen_address="no-port")


def test_a_taken_health_port_is_retried_not_fatal(
    hosts: list[Host], channels: list[grpc.Channel]
) -> None:
    first = new_host(hosts, listen_address="127.0.0.1:0")
    taken = health_of(first).health_port
    second = new_host(hosts, listen_address=f"127.0.0.1:{taken}")
    assert health_of(second).health_port is None  # logged, retried on ticks, node unharmed
    stub = plain(channels, second.transport.bound_port)
    tick_until_status(second, stub, "raftgrpc.v1.RaftTransport", SERVING)
    wait_until(lambda: health_of(first).health_port == taken, 1, "first keeps its port")


def test_watch_streams_hold_no_server_thread_behind_the_logging_layer() -> None:
    """grpc_health's Watch is non-blocking; observers must not make it blocking again."""
    from concurrent import futures

    from grpc_health.v1.health import HealthServicer

    from raftgrpc.interceptors import log

    servicer = HealthServicer(experimental_non_blocking=True)
    servicer.set("raft", SERVING)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), interceptors=[log.server_interceptor()]
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    watches = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(4):  # twice the server's threads
                call = stub.Watch(health_pb2.HealthCheckRequest(service="raft"), timeout=RPC_S)
                watches.append(call)
                assert next(call).status == SERVING
            reply = stub.Check(health_pb2.HealthCheckRequest(service="raft"), timeout=RPC_S)
            assert reply.status == SERVING
    finally:
        for call in watches:
            call.cancel()
        server.stop(None).wait(5)

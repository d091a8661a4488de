"""Health checks and graceful shutdown on a cluster of real node processes (transport grpc).

A partition is made with node.py's ``block_peers`` hook: the other nodes drop every Raft
message to and from the cut-off node while the gRPC streams stay up, so the node's own health
server keeps answering (a stopped process would stop answering health checks too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftgrpc.testing._processes.harness import Cluster, CtlError, NodeProc

pytestmark = pytest.mark.timeout(120)

ELECTION_MIN_S = 0.4  # SyncObjConf's default raftMinTimeout, which node.py keeps
ELECTION_MAX_S = 1.4  # ... and raftMaxTimeout
CHECK_INTERVAL_S = 0.25  # raftgrpc._ops.health's default
NAMES = health_pb2.HealthCheckResponse.ServingStatus.Name


@pytest.fixture
def grpc_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster("grpc", tmp_path)
    yield c
    rep = getattr(request.node, "rep_call", None)
    c.close(dump_logs=rep is None or rep.failed)


@pytest.fixture
def channels() -> Iterator[dict[str, grpc.Channel]]:
    made: dict[str, grpc.Channel] = {}
    yield made
    for channel in made.values():
        channel.close()


def status_of(channels: dict[str, grpc.Channel], node: NodeProc, service: str) -> str | None:
    """The node's health status for ``service`` ("SERVING", ...), or None if unreachable."""
    addr = str(node.addr)
    if addr not in channels:
        channels[addr] = grpc.insecure_channel(addr)
    stub = health_pb2_grpc.HealthStub(channels[addr])
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
    except grpc.RpcError:
        return None
    return NAMES(reply.status)


def wait_status(
    c: Cluster,
    channels: dict[str, grpc.Channel],
    nodes: list[NodeProc],
    service: str,
    want: str,
    timeout: float,
) -> float:
    """Wait until every node reports ``want`` for ``service``; returns the time it took."""
    start = time.monotonic()
    c.wait_until(
        lambda: all(status_of(channels, n, service) == want for n in nodes),
        timeout,
        f"{service!r} {want} on {[n.name for n in nodes]}",
        interval=0.01,
        observe=lambda: {n.name: status_of(channels, n, service) for n in nodes},
    )
    return time.monotonic() - start


def block(nodes: list[NodeProc], peers: list[NodeProc]) -> None:
    for n in nodes:
        reply = n.ctl("block_peers", peers=[str(p.addr) for p in peers])
        assert reply["ok"], reply


def test_raft_health_follows_the_election_and_a_partitioned_follower(
    grpc_cluster: Cluster, channels: dict[str, grpc.Channel]
) -> None:
    c = grpc_cluster
    nodes = c.start_cluster(3, start=1)
    first = next(n for n in nodes if n.alive)
    # Alone, the first node cannot elect anyone: up, transport bound, but not ready.
    wait_status(c, channels, [first], "raftgrpc.v1.RaftTransport", "SERVING", 10)
    assert status_of(channels, first, "") == "SERVING"
    assert status_of(channels, first, "raft") == "NOT_SERVING"
    for n in nodes:
        if not n.alive:
            c.start(n)
    c.wait_leader()
    wait_status(c, channels, nodes, "raft", "SERVING", 10)

    leader = c.leader()
    follower = next(n for n in nodes if n is not leader)
    others = [n for n in nodes if n is not follower]
    block(others, [follower])
    cut_off = wait_status(c, channels, [follower], "raft", "NOT_SERVING", 10)
    print(f"isolated follower NOT_SERVING after {cut_off:.2f} s")
    # The follower only stopped hearing its leader; the process itself is fine.
    assert cut_off < ELECTION_MAX_S + CHECK_INTERVAL_S + 0.5
    assert status_of(channels, follower, "") == "SERVING"
    assert all(status_of(channels, n, "raft") == "SERVING" for n in others)

    block(others, [])
    healed = wait_status(c, channels, nodes, "raft", "SERVING", 20)
    print(f"all SERVING {healed:.2f} s after healing")


def test_a_leader_cut_off_from_the_majority_stops_serving(
    grpc_cluster: Cluster, channels: dict[str, grpc.Channel]
) -> None:
    c = grpc_cluster
    nodes = c.start_cluster(3)
    old = c.wait_leader()
    wait_status(c, channels, nodes, "raft", "SERVING", 10)
    majority = [n for n in nodes if n is not old]
    block(majority, [old])
    cut_off = wait_status(c, channels, [old], "raft", "NOT_SERVING", 10)
    print(f"partitioned leader NOT_SERVING after {cut_off:.2f} s")
    assert cut_off < ELECTION_MAX_S + CHECK_INTERVAL_S + 0.5
    # PySyncObj itself still calls it the leader (until leaderFallbackTimeout, 30 s), with a
    # quorum of connected streams: health is what tells the world it is not.
    st = old.status()
    assert st["is_leader"] and st["has_quorum"]
    new = c.wait_leader(majority, timeout=10)
    assert new is not old
    wait_status(c, channels, majority, "raft", "SERVING", 10)
    assert status_of(channels, old, "") == "SERVING"


class LeaderMonitor(threading.Thread):
    """Polls every node's status and records, per round, who claims leadership."""

    def __init__(self, nodes: list[NodeProc], leaving: NodeProc) -> None:
        super().__init__(daemon=True)
        self.nodes, self.leaving = nodes, leaving
        self.rounds: list[tuple[float, list[str]]] = []
        self.exited_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            at = time.monotonic()
            claims = []
            for n in self.nodes:
                try:
                    st = n.status(timeout=1.0) if n.alive else None
                except CtlError:
                    st = None
                if st and st.get("is_leader") and st.get("has_quorum"):
                    claims.append(n.name)
            if self.exited_at is None and not self.leaving.alive:
                self.exited_at = time.monotonic()
            self.rounds.append((at, claims))

    def longest_gap(self) -> float:
        """The longest time between a round with a leader and the next one with a leader."""
        gap, last_led = 0.0, None
        for at, claims in self.rounds:
            if claims:
                if last_led is not None:
                    gap = max(gap, at - last_led)
                last_led = at
        return gap

    def first_round_led_by(self, names: set[str]) -> float | None:
        return next((at for at, claims in self.rounds if set(claims) & names), None)


class HealthWatch(threading.Thread):
    def __init__(self, addr: str, service: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(addr)
        stub = health_pb2_grpc.HealthStub(self.channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        self.updates: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self.code: Any = None

    def run(self) -> None:
        try:
            for reply in self.call:
                self.updates.append((time.monotonic(), NAMES(reply.status)))
        except grpc.RpcError as exc:
            self.code = exc.code()
        self.ended_at = time.monotonic()


def test_graceful_shutdown_of_the_leader_hands_over_without_an_election_gap(
    grpc_cluster: Cluster, channels: dict[str, grpc.Channel]
) -> None:
    c = grpc_cluster
    nodes = c.start_cluster(3)
    leader = c.wait_leader()
    c.write_many(leader, {f"k{i}": i for i in range(20)})
    wait_status(c, channels, nodes, "raft", "SERVING", 10)
    survivors = [n for n in nodes if n is not leader]
    watch = HealthWatch(str(leader.addr), "raft")
    watch.start()
    c.wait_until(lambda: watch.updates, 5, "the Watch stream's first update")
    monitor = LeaderMonitor(nodes, leaving=leader)
    monitor.start()
    c.wait_until(lambda: len(monitor.rounds) >= 3, 5, "the leader monitor to start")
    try:
        reply = leader.ctl("graceful_quit", timeout=30, drain_s=0.5)
        assert reply["ok"], reply
        assert leader.proc is not None
        leader.proc.wait(timeout=15)
        c.wait_until(lambda: monitor.exited_at is not None, 5, "the monitor to see the exit")
        new = c.wait_leader(survivors, timeout=10)
        c.wait_until(
            lambda: monitor.first_round_led_by({new.name}) is not None, 5, "a round led by new"
        )
    finally:
        monitor.stop.set()
        monitor.join(10)
        watch.join(10)
        watch.channel.close()
    report = reply["report"]
    print(f"graceful shutdown report: {report}")
    print(f"longest leaderless gap {monitor.longest_gap() * 1000:.0f} ms")
    assert report["was_leader"] and report["stopped"]
    assert report["transferred_to"] == new.addr
    # Another node led before the process exited, and the cluster never waited an election out.
    led_by_new = monitor.first_round_led_by({new.name})
    assert led_by_new is not None and monitor.exited_at is not None
    assert led_by_new < monitor.exited_at
    assert monitor.longest_gap() < ELECTION_MIN_S
    # Its health said NOT_SERVING (at once) before its port closed.
    assert [s for _, s in watch.updates] == ["SERVING", "NOT_SERVING"]
    assert watch.ended_at is not None and watch.updates[-1][0] < watch.ended_at
    c.write(new, "after", "handover")
    c.wait_converged(survivors, {**{f"k{i}": i for i in range(20)}, "after": "handover"})

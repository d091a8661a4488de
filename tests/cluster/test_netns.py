"""Several hosts: a 3-node cluster across 3 network namespaces joined by veth links to a
bridge (tests/cluster/netns.py), one node per namespace, on GrpcTransport and on TCPTransport
for comparison. A partition takes the node's link down: its packets are lost silently, as when
a cable is pulled, and each side has to find out by itself that the other is gone.

Skipped, with the reason, unless run as root on Linux with ``ip`` and the right to create
namespaces, veth pairs and bridges (``netns.unavailable``). Run one with ``-s`` to see its
figures (election time after the partition, writes checked, convergence time after the heal).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftgrpc.testing._processes.harness import CtlError, NodeProc, Writer
from raftgrpc.testing._processes.rolling import caught_up, verify
from tests.cluster import netns
from tests.cluster.netns import Netns, NetnsCluster, NetnsNode, partitioned

pytestmark = pytest.mark.timeout(180)

INIT_KEYS = 30


@pytest.fixture
def net() -> Iterator[Netns]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Netns(3) as n:
        yield n


@pytest.fixture
def ncluster(
    transport: str, net: Netns, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[NetnsCluster]:
    c = NetnsCluster(transport, tmp_path, net)
    yield c
    rep = getattr(request.node, "rep_call", None)
    c.close(dump_logs=rep is None or rep.failed)


def namespace_of(pid: int) -> str:
    return subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True
    ).stdout.strip()


def start(c: NetnsCluster) -> tuple[list[NodeProc], NodeProc]:
    """Start 3 nodes, one per namespace; wait for a leader; write INIT_KEYS keys through a
    follower and check them on every node."""
    nodes = c.start_cluster(3)
    for n in nodes:
        assert isinstance(n, NetnsNode) and n.proc is not None
        assert namespace_of(n.proc.pid) == n.host.ns, f"{n.name} runs outside {n.host.ns}"
        assert str(n.addr).startswith(n.host.ip + ":")
    leader = c.wait_leader(timeout=60.0)
    follower = next(n for n in nodes if n is not leader)
    init = {f"init-{i}": i for i in range(INIT_KEYS)}
    c.write_many(follower, init, timeout=60.0)
    c.wait_converged(nodes, init, prefix="init-", timeout=60.0)
    return nodes, leader


def first_ack_after(w: Writer, t: float) -> float | None:
    later = [at for at, _, _ in list(w.acks) if at > t]
    return min(later) - t if later else None


def converged_state(c: NetnsCluster, nodes: list[NodeProc], w: Writer) -> dict[str, Any]:
    """After the writer stopped: every acknowledged write on every node (rolling.verify), and
    every node's whole store identical."""
    verify(c, w, timeout=60.0)
    states: list[dict[str, Any]] = []

    def identical() -> bool:
        states[:] = [n.get_all() for n in nodes]
        return all(s == states[0] for s in states)

    c.wait_until(identical, 60.0, "identical stores on every node")
    return states[0]


class Stranded(threading.Thread):
    """A client inside the partition: keeps writing fresh keys (``s<N>``) through one node
    and records every reply."""

    def __init__(self, node: NodeProc) -> None:
        super().__init__(name=f"stranded-{node.name}", daemon=True)
        self.node = node
        self.replies: list[tuple[str, dict[str, Any]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self._halt.is_set():
            key = f"s{seq}"
            try:
                reply = self.node.ctl("set", timeout=10.0, key=key, value=seq, timeout_s=1.0)
            except CtlError as e:
                reply = {"ok": False, "reason": f"ctl: {e}"}
            self.replies.append((key, reply))
            seq += 1
            self._halt.wait(0.05)  # pacing: a deposed leader answers at once

    def finish(self) -> None:
        self._halt.set()
        self.join(30.0)
        assert not self.is_alive(), "the stranded client did not stop"


def report(title: str, figures: dict[str, Any]) -> None:
    text = ", ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[netns] {title}: {text}")


def test_links_carry_traffic_only_while_up_and_nothing_is_left(net: Netns) -> None:
    """The plumbing itself: each namespace reaches the others over its veth, not while its
    link is down, again once it is up; the namespaces (and with them every link) are gone
    after close, and the root namespace never had any of them."""
    before = netns.root_links()
    h0, h1, h2 = net.hosts
    server = h1.run(socket.create_server, (h1.ip, 0))
    port = server.getsockname()[1]

    def connect(host: netns.Host, timeout: float) -> bool:
        def attempt() -> bool:
            try:
                with socket.create_connection((h1.ip, port), timeout=timeout):
                    return True
            except OSError:
                return False

        return host.run(attempt)

    try:
        assert connect(h0, 5.0) and connect(h2, 5.0)
        with net.cut_off(h1):
            assert not h1.is_up
            assert not connect(h0, 1.0)
        assert h1.is_up
        assert connect(h0, 5.0)
    finally:
        server.close()
    names = net.namespaces
    assert set(names) <= set(netns.list_netns())
    net.close()
    assert not set(names) & set(netns.list_netns())
    assert netns.root_links() <= before


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid is dead (and unlikely to be reused within this test)
    stale = f"{netns.PREFIX}-{dead.pid}-0-hub"
    netns.ip("netns", "add", stale)
    try:
        assert stale in netns.list_netns()
        assert stale in netns.cleanup_stale()
        assert stale not in netns.list_netns()
    finally:
        netns.ip("netns", "del", stale, check=False)


def test_leader_partition_under_load_then_heal(ncluster: NetnsCluster) -> None:
    c = ncluster
    t0 = time.monotonic()
    nodes, old = start(c)
    majority = [n for n in nodes if n is not old]
    old_term = int(old.status()["raft_term"])
    stranded = Stranded(old)

    with Writer(c) as w:
        w.wait_acks(20, timeout=60.0)
        # Clients on the majority side lose the old leader with the partition: from now on
        # the writer writes through the followers (which forward to the leader).
        w.drain(old)
        w.wait_acks(1, timeout=60.0)
        with partitioned(c, old):
            t_cut = time.monotonic()
            stranded.start()
            new = c.wait_leader(majority, timeout=60.0)
            election_s = time.monotonic() - t_cut
            new_term = int(new.status()["raft_term"])
            assert new_term > old_term
            # The majority keeps committing.
            w.wait_acks(30, timeout=60.0)
            # The old leader finds out it lost its followers, and commits nothing more.
            c.wait_until(
                lambda: not old.status()["has_quorum"], 60.0, f"{old.name} to lose its quorum"
            )
            old_commit = old.status()["commit_idx"]
            stranded_before = len(stranded.replies)
            c.wait_until(
                lambda: len(stranded.replies) >= stranded_before + 2,
                60.0,
                "two more stranded writes through the old leader",
            )
            assert old.status()["commit_idx"] == old_commit
            stranded.finish()  # before the heal: after it, the old node forwards to the leader
            acks_in_partition = sum(1 for at, _, _ in list(w.acks) if at > t_cut)
            first_ack_s = first_ack_after(w, t_cut)
            t_heal = time.monotonic()
        # Healed: the old leader rejoins as a follower of the new one and catches up.
        leader_after = c.wait_leader(nodes, timeout=60.0)
        assert leader_after is not old
        st = old.status()
        assert not st["is_leader"] and int(st["raft_term"]) >= new_term, st
        c.wait_until(lambda: caught_up(c, old), 60.0, f"{old.name} to catch up")
        converge_s = time.monotonic() - t_heal
        w.undrain(old)
        w.wait_acks(10, timeout=60.0)

    acked_through_old = [(k, r) for k, r in stranded.replies if r.get("ok")]
    assert not acked_through_old, f"writes acknowledged in the minority: {acked_through_old}"
    state = converged_state(c, nodes, w)
    leaked = sorted(k for k in state if k.startswith("s"))
    assert not leaked, f"writes made in the minority survived the heal: {leaked[:10]}"
    assert all(state.get(f"init-{i}") == i for i in range(INIT_KEYS))
    report(
        f"leader partition, {c.transport}",
        {
            "election_s": election_s,
            "first_ack_after_cut_s": first_ack_s or -1.0,
            "acks_in_partition": acks_in_partition,
            "stranded_writes": len(stranded.replies),
            "stranded_reasons": dict(Counter(str(r.get("reason")) for _, r in stranded.replies)),
            "converge_s": converge_s,
            "writes_checked": len(w.acknowledged()) + INIT_KEYS,
            "longest_gap_s": max(w.outages(), default=0.0),
            "terms": f"{old_term}->{new_term}->{leader_after.status()['raft_term']}",
            "total_s": time.monotonic() - t0,
        },
    )


def test_follower_partition_under_load_then_heal(ncluster: NetnsCluster) -> None:
    c = ncluster
    t0 = time.monotonic()
    nodes, leader = start(c)
    cut = next(n for n in nodes if n is not leader)
    majority = [n for n in nodes if n is not cut]
    term = int(leader.status()["raft_term"])

    with Writer(c) as w:
        w.wait_acks(20, timeout=60.0)
        w.drain(cut)
        w.wait_acks(1, timeout=60.0)
        with partitioned(c, cut):
            t_cut = time.monotonic()
            # The majority keeps its leader (and commits) without the cut-off follower.
            w.wait_acks(30, timeout=60.0)
            during = c.wait_leader(majority, timeout=60.0)
            c.wait_until(
                lambda: not cut.status()["has_quorum"], 60.0, f"{cut.name} to see it is cut off"
            )
            # Nothing reaches the cut-off follower: it applies nothing while the others commit.
            frozen = cut.status()["last_applied"]
            w.wait_acks(10, timeout=60.0)
            assert cut.status()["last_applied"] == frozen
            assert not cut.status()["is_leader"]
            cut_term = int(cut.status()["raft_term"])
            acks_in_partition = sum(1 for at, _, _ in list(w.acks) if at > t_cut)
            t_heal = time.monotonic()
        after = c.wait_leader(nodes, timeout=60.0)
        c.wait_until(lambda: caught_up(c, cut), 60.0, f"{cut.name} to catch up")
        converge_s = time.monotonic() - t_heal
        w.undrain(cut)
        w.wait_acks(10, timeout=60.0)

    state = converged_state(c, nodes, w)
    assert all(state.get(f"init-{i}") == i for i in range(INIT_KEYS))
    report(
        f"follower partition, {c.transport}",
        {
            "leader_kept_in_partition": during is leader,
            "acks_in_partition": acks_in_partition,
            "cut_follower_term": f"{term}->{cut_term}",
            "converge_s": converge_s,
            "leader_after_heal": "same" if after is leader else "re-elected",
            "term_after_heal": after.status()["raft_term"],
            "writes_checked": len(w.acknowledged()) + INIT_KEYS,
            "longest_gap_s": max(w.outages(), default=0.0),
            "total_s": time.monotonic() - t0,
        },
    )

"""Rolling restarts of a live cluster from one transport to another, under a write load.

Used by tests/cluster/test_migration.py (and bench/migration.py for the longer runs): each
step drains one node from the client, stops it gracefully (a leader hands leadership over
first), starts it again with the same id, journal and dump on another transport, and waits
until it is back: every node connected to every partner, on the path its transports should
agree on, and the new node caught up. A :class:`harness.Writer` keeps writing throughout;
every step records the longest gap between acknowledged writes while it ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raftgrpc.testing._processes.harness import Cluster, NodeProc, Writer

# The path a MigrationTransport should settle on towards a peer running each transport.
_EXPECTED_PATH = {"tcp": "secondary", "migration": "primary", "grpc-mapped": "primary"}


@dataclass
class Step:
    node: str
    transport: str
    seconds: float
    """From draining the node until it was back and caught up."""
    longest_gap_s: float
    """Longest time between two acknowledged writes that ended during the step."""
    acks: int
    was_leader: bool


def restart_order(cluster: Cluster, nodes: list[NodeProc], to: str) -> list[NodeProc]:
    """The runbook's order for one phase. TCPTransport dials only peers whose address sorts
    lower, and redials every connectionRetryTime (5 s): a node restarted while a TCP-only
    peer above it has to redial it is heard by the others (over gRPC) but not by that peer
    for up to 5 s, and if that peer is the leader it times out and deposes it (PySyncObj has
    no pre-vote). So towards MigrationTransport, restart from the highest address down (each
    restarted node dials the TCP-only nodes, all below it); towards TCPTransport, from the
    lowest up (each dials the TCP-only nodes, all below it). Towards gRPC only: followers
    first, the leader last."""
    if to == "migration" and any(transport_of(cluster, n) == "tcp" for n in nodes):
        return sorted(nodes, key=lambda n: str(n.addr), reverse=True)
    if to == "tcp":
        return sorted(nodes, key=lambda n: str(n.addr))
    leader = cluster.leader()
    return [n for n in nodes if n is not leader] + [leader]


def transport_of(cluster: Cluster, node: NodeProc) -> str:
    return node.transport or cluster.transport


def settled(cluster: Cluster) -> bool:
    """Every live node sees every partner connected, MigrationTransports use the path their
    peer's transport calls for, and one leader is agreed on."""
    nodes = cluster.alive_nodes()
    kinds = {str(n.addr): transport_of(cluster, n) for n in nodes}
    for n in nodes:
        st = n.status(timeout=3.0)
        for partner in st["partners"]:
            if st.get(f"partner_node_status_server_{partner}") != 2:
                return False
        if transport_of(cluster, n) == "migration":
            paths = n.ctl("transport_stats")["stats"]["paths"]
            for partner, path in paths.items():
                if path != _EXPECTED_PATH[kinds[partner]]:
                    return False
    cluster.wait_leader(nodes, timeout=10.0)
    return True


def caught_up(cluster: Cluster, node: NodeProc) -> bool:
    leader = cluster.leader(timeout=10.0)
    target = leader.status()["commit_idx"]
    return bool(node.status()["last_applied"] >= target)


def restart_as(
    cluster: Cluster, writer: Writer, node: NodeProc, transport: str, timeout: float = 60.0
) -> Step:
    """One rolling-restart step (see the module docstring)."""
    start = time.monotonic()
    acks_before = len(writer.acks)
    was_leader = bool(node.status().get("is_leader"))
    writer.drain(node)
    reply = node.ctl("graceful_quit", timeout=20.0, transfer_timeout_s=5.0, drain_s=0.5)
    assert reply.get("ok"), f"graceful quit of {node.name} failed: {reply}"
    assert node.proc is not None
    node.proc.wait(15.0)
    node.transport = transport
    cluster.restart(node)
    cluster.wait_until(lambda: settled(cluster), timeout, f"{node.name} back on {transport}")
    cluster.wait_until(lambda: caught_up(cluster, node), timeout, f"{node.name} caught up")
    writer.undrain(node)
    end = time.monotonic()
    return Step(
        node=node.name,
        transport=transport,
        seconds=end - start,
        longest_gap_s=max(writer.outages(since=start, until=end), default=0.0),
        acks=len(writer.acks) - acks_before,
        was_leader=was_leader,
    )


def verify(cluster: Cluster, writer: Writer, timeout: float = 60.0) -> dict[str, Any]:
    """After the writer stopped: every acknowledged write is on every node with its value,
    and every node holds the same state. Returns the common state."""
    acked = writer.acknowledged()
    nodes = cluster.alive_nodes()
    common: dict[str, Any] = {}

    def identical() -> bool:
        states = [n.get_all(prefix=writer.prefix) for n in nodes]
        missing = {
            n.name: [k for k, v in acked.items() if state.get(k) != v][:5]
            for n, state in zip(nodes, states, strict=True)
        }
        assert not any(missing.values()) or len(states) > 0, missing
        if any(missing.values()) or any(s != states[0] for s in states):
            return False
        common.update(states[0])
        return True

    cluster.wait_until(identical, timeout, "every node to hold every acknowledged write")
    return common


def table(steps: list[Step]) -> str:
    rows = [
        f"{'node':<5} {'to':<12} {'leader':<6} {'step s':>7} {'acks':>6} {'longest gap ms':>15}"
    ]
    for s in steps:
        rows.append(
            f"{s.node:<5} {s.transport:<12} {'yes' if s.was_leader else 'no':<6} "
            f"{s.seconds:>7.2f} {s.acks:>6} {1000 * s.longest_gap_s:>15.0f}"
        )
    return "\n".join(rows)

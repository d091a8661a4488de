"""Migrating a live 3-process cluster between TCPTransport and gRPC with rolling restarts.

Forward: TCPTransport -> MigrationTransport -> GrpcTransport, one node at a time; back: the
same in reverse. A client writes throughout; every acknowledged write must be on every node
at the end, the nodes' states identical, and no step may stop writes for longer than one
election timeout (SyncObjConf.raftMaxTimeout).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftgrpc.testing._processes.harness import Cluster, Writer
from raftgrpc.testing._processes.rolling import restart_as, restart_order, settled, table, verify

ELECTION_TIMEOUT_S = 1.4  # SyncObjConf.raftMaxTimeout's default, which the nodes run with


def _migrate(cluster: Cluster, plan: list[str], start: str) -> None:
    nodes = cluster.start_cluster(3, journal=True, dump=True, transport=start)
    cluster.wait_until(lambda: settled(cluster), 30.0, f"a settled {start} cluster")
    steps = []
    with Writer(cluster) as writer:
        writer.wait_acks(20)
        for transport in plan:
            for node in restart_order(cluster, nodes, transport):
                steps.append(restart_as(cluster, writer, node, transport))
                writer.wait_acks(20)
    state = verify(cluster, writer)
    print(f"\n{start} -> {' -> '.join(plan)}\n{table(steps)}")
    print(f"acknowledged {len(writer.acks)} writes, {len(state)} keys on every node")
    assert len(state) >= len(writer.acks) > 0
    worst = max(steps, key=lambda s: s.longest_gap_s)
    assert worst.longest_gap_s < ELECTION_TIMEOUT_S, (
        f"writes stopped for {worst.longest_gap_s:.2f}s while {worst.node} moved to "
        f"{worst.transport}\n{table(steps)}"
    )


def test_migrate_tcp_to_grpc_under_load(tmp_path: Path) -> None:
    cluster = Cluster("tcp", tmp_path)
    try:
        _migrate(cluster, ["migration", "grpc-mapped"], start="tcp")
    finally:
        cluster.close()


def test_roll_back_grpc_to_tcp_under_load(tmp_path: Path) -> None:
    cluster = Cluster("grpc-mapped", tmp_path)
    try:
        _migrate(cluster, ["migration", "tcp"], start="grpc-mapped")
    finally:
        cluster.close()


@pytest.mark.parametrize("first", ["migration"])
def test_abandon_a_migration_half_way(tmp_path: Path, first: str) -> None:
    """Roll back before finishing: TCP -> Migration on every node -> TCP again."""
    cluster = Cluster("tcp", tmp_path)
    try:
        _migrate(cluster, [first, "tcp"], start="tcp")
    finally:
        cluster.close()

"""Multi-process cluster tests: node processes (raftgrpc.testing._processes.node) talking over the
transport under test, "tcp" (PySyncObj's TCPTransport, the reference) or "grpc"
(raftgrpc.GrpcTransport; skipped while it cannot be imported).

Run: ``.venv/bin/python -m pytest -q tests/cluster`` (``-k tcp`` / ``-k grpc`` for one
transport, ``-m slow`` for the 200 MB snapshot transfer, ``-s`` to see its memory report).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from raftgrpc.testing._processes.harness import Cluster, NodeProc, digest, gen_bytes, gen_text

MiB = 1 << 20


def items(prefix: str, n: int) -> dict[str, Any]:
    return {f"{prefix}{i}": f"{prefix}-value-{i}" for i in range(n)}


def followers(cluster: Cluster, leader: NodeProc) -> list[NodeProc]:
    return [n for n in cluster.alive_nodes() if n is not leader]


@pytest.mark.timeout(90)
def test_one_leader_and_writes_from_every_node_commit_everywhere(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3)
    leader = cluster.wait_leader()

    # Exactly one node claims leadership, the others follow it, all in the same term.
    statuses = [n.status() for n in nodes]
    assert [n for n, st in zip(nodes, statuses, strict=True) if st["is_leader"]] == [leader]
    assert {st["leader"] for st in statuses} == {leader.addr}
    assert len({st["raft_term"] for st in statuses}) == 1, statuses

    expected: dict[str, Any] = {}
    for n in nodes:  # every node, followers included, accepts writes
        cluster.write(n, f"single-{n.name}", n.name)
        expected[f"single-{n.name}"] = n.name
        batch = items(f"{n.name}-", 40)
        cluster.write_many(n, batch)
        expected.update(batch)
    cluster.wait_converged(nodes, expected)


@pytest.mark.timeout(120)
def test_leader_kill9_failover_and_rejoin_from_journal(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3, journal=True)
    old = cluster.wait_leader()
    expected = items("before-", 50)
    cluster.write_many(followers(cluster, old)[0], expected)
    cluster.wait_converged(nodes, expected)
    old_term = old.status()["raft_term"]

    cluster.kill(old)
    survivors = [n for n in nodes if n is not old]
    new = cluster.wait_leader(survivors)
    assert new is not old
    assert new.status()["raft_term"] > old_term

    for n in survivors:  # writes continue, through the new leader and its follower
        batch = items(f"after-{n.name}-", 30)
        cluster.write_many(n, batch)
        expected.update(batch)
    cluster.wait_converged(survivors, expected)

    cluster.restart(old)  # same address, same journal file
    cluster.wait_converged(nodes, expected, timeout=40.0)
    assert old.status()["keys"] == len(expected)

    cluster.write(old, "from-rejoined", "yes")
    expected["from-rejoined"] = "yes"
    cluster.wait_converged(nodes, expected)
    cluster.wait_leader(nodes)


@pytest.mark.timeout(120)
def test_follower_with_empty_journal_catches_up_through_snapshot(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3, journal=True)
    leader = cluster.wait_leader()
    lagging, other = followers(cluster, leader)
    expected = items("early-", 20)
    cluster.write_many(leader, expected)
    cluster.wait_converged(nodes, expected)

    cluster.stop(lagging)
    cluster.wipe(lagging)
    survivors = [leader, other]
    for n in survivors:
        batch = items(f"while-down-{n.name}-", 300)
        cluster.write_many(n, batch)
        expected.update(batch)
    cluster.wait_converged(survivors, expected)

    # Compact the survivors' logs: the entries the lagging node misses are gone from them.
    for n in survivors:
        n.ctl("force_compaction")
    cluster.wait_until(
        lambda: all(n.status()["log_len"] <= 10 for n in survivors),
        30.0,
        "log compaction on the survivors",
    )
    for n in survivors:
        n.ctl("force_compaction")  # a leader change in between may have left entries behind
    cluster.wait_until(
        lambda: all(n.status()["log_len"] <= 10 for n in survivors),
        30.0,
        "log compaction on the survivors",
    )

    cluster.restart(lagging)  # empty journal
    cluster.wait_converged(nodes, expected, timeout=40.0)
    st = lagging.status()
    # It got there by loading a snapshot, not by replaying the log: it applied (far) fewer
    # set commands than there are keys, and its last_applied jumped with the dump.
    assert st["snapshots_loaded"] >= 1, st
    assert st["applied_cmds"] < len(expected), st
    assert st["log_len"] < len(expected), st

    cluster.write(lagging, "after-snapshot", "1")
    expected["after-snapshot"] = "1"
    cluster.wait_converged(nodes, expected)


@pytest.mark.timeout(150)
def test_membership_add_then_remove_node(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3, dynamic=True)
    leader = cluster.wait_leader()
    expected = items("base-", 50)
    cluster.write_many(leader, expected)
    cluster.wait_converged(nodes, expected)

    fourth = cluster.new_node("n3", dynamic=True)
    fourth.partners = [str(n.addr) for n in nodes]
    cluster.start_fresh(fourth)
    cluster.change_membership("add_node", str(fourth.addr), present=True)
    members = [*nodes, fourth]
    cluster.wait_converged(members, expected, timeout=40.0)
    cluster.wait_until(
        lambda: all(len(n.status()["partners"]) == 3 for n in members),
        30.0,
        "every member to know 4 nodes",
    )

    batch = items("via-new-", 20)
    cluster.write_many(fourth, batch)
    expected.update(batch)
    cluster.wait_converged(members, expected)

    leader = cluster.leader()
    victim = next(n for n in nodes if n is not leader)
    cluster.change_membership("remove_node", str(victim.addr), present=False)
    cluster.stop(victim)
    remaining = [n for n in members if n is not victim]
    cluster.wait_until(
        lambda: all(
            victim.addr not in n.status()["partners"] and len(n.status()["partners"]) == 2
            for n in remaining
        ),
        30.0,
        f"{victim.name} to be dropped by every remaining member",
    )

    cluster.wait_leader(remaining)
    for n in remaining:  # the 3-node cluster keeps committing without the removed node
        batch = items(f"after-remove-{n.name}-", 20)
        cluster.write_many(n, batch)
        expected.update(batch)
    cluster.wait_converged(remaining, expected)


@pytest.mark.timeout(90)
def test_readonly_node_follows_the_cluster(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3)
    cluster.wait_leader()
    expected = items("pre-", 30)
    cluster.write_many(nodes[0], expected)

    ro = cluster.new_node("ro", readonly=True)
    ro.partners = [str(n.addr) for n in nodes]
    cluster.start_fresh(ro)
    for n in nodes:
        batch = items(f"post-{n.name}-", 30)
        cluster.write_many(n, batch)
        expected.update(batch)
    cluster.wait_converged([*nodes, ro], expected)

    st = ro.status()
    leader = cluster.leader()
    assert st["self"] is None and not st["is_leader"], st
    assert st["leader"] == leader.addr, st
    assert leader.status()["readonly_nodes_count"] == 1


@pytest.mark.timeout(150)
def test_20mb_command_from_a_follower_commits_everywhere(cluster: Cluster) -> None:
    nodes = cluster.start_cluster(3)
    leader = cluster.wait_leader()
    follower = followers(cluster, leader)[0]
    # The value is generated inside the follower's process; only its sha256 travels back.
    # It is ASCII text: PySyncObj 0.3.17 labels every chunk past len(command) 'finish', and
    # protocol-2 pickling inflates bytes >= 0x80, so a 20 MB random value would make the
    # follower unpickle a truncated ~20 MB entry once per extra 'finish' chunk before the last
    # completes it. That quirk is covered, at 100 kB, by test_big_random_commands_commit_...;
    # this test is about size.
    nbytes, seed = 20_000_000, 20
    gen = {"nbytes": nbytes, "seed": seed, "kind": "text"}
    cluster.write(follower, "big", timeout=90.0, gen=gen, timeout_s=60.0)
    expected: dict[str, Any] = {"big": digest(gen_text(nbytes, seed))}
    cluster.wait_converged(nodes, expected, timeout=60.0)

    cluster.write(follower, "after-big", "ok")
    expected["after-big"] = "ok"
    cluster.wait_converged(nodes, expected, timeout=30.0)


@pytest.mark.timeout(120)
def test_big_random_commands_commit_everywhere(cluster: Cluster) -> None:
    """100 kB random values: bigger than a batch, so PySyncObj sends each in chunks, and (as
    above) labels two chunks 'finish'. The follower fails on the first, completes on the
    second; the transport must deliver both, in order, as TCPTransport does."""
    nodes = cluster.start_cluster(3)
    leader = cluster.wait_leader()
    expected: dict[str, Any] = {}
    for i in range(3):
        gen = {"nbytes": 100_000, "seed": 100 + i, "kind": "bytes"}
        cluster.write(leader, f"random-{i}", timeout=60.0, gen=gen, timeout_s=30.0)
        expected[f"random-{i}"] = digest(gen_bytes(100_000, 100 + i))
    cluster.wait_converged(nodes, expected, timeout=60.0, prefix="random-")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200mb_snapshot_to_a_new_follower(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    if cluster.transport == "tcp":
        # Observed with PySyncObj 0.3.17's TCPTransport (with the longer timeouts below, term
        # stays 1): the received dump is exactly one 64 KiB chunk short, "failed to load full
        # dump" (CRC check failed / invalid block type), and the leader resends it forever.
        # Strict: should the reference ever pass, this marker is wrong and must go.
        request.applymarker(
            pytest.mark.xfail(
                reason="TCPTransport reference loses a 64 KiB snapshot chunk at this size",
                strict=True,
            )
        )
    # fullDumpFile on every node: PySyncObj's file mode (the in-memory mode concatenates the
    # received chunks quadratically). The third node is started only after compaction, so
    # that it can only get the state as a ~250 MB snapshot.
    # TCPTransport buffers without bound and copies its whole buffers on every send/receive;
    # pushing ~250 MB through it stalls tick threads past the default election timeouts and
    # every resulting leader change restarts the transfer (livelock, term > 70 seen with the
    # defaults). The reference run therefore gets longer Raft timeouts; grpc keeps defaults.
    conf: dict[str, Any] = {}
    if cluster.transport == "tcp":
        conf = {"raftMinTimeout": 5.0, "raftMaxTimeout": 10.0, "connectionTimeout": 15.0}
    nodes = cluster.start_cluster(3, start=2, dump=True, conf=conf)
    running, newcomer = nodes[:2], nodes[2]
    leader = cluster.wait_leader(running)
    nbytes, seed = 200 * MiB, 200
    reply: dict[str, Any] = {}

    def filled() -> bool:
        reply.update(
            cluster.leader(timeout=30.0).ctl(
                "fill", timeout=200.0, name="blob", nbytes=nbytes, seed=seed, timeout_s=180.0
            )
        )
        return bool(reply.get("ok"))

    cluster.wait_until(filled, 400.0, "the 200 MiB fill to commit", observe=lambda: reply)
    expected: dict[str, Any] = items("small-", 20)
    cluster.write_many(running[0], expected)
    expected["blob"] = digest(gen_bytes(nbytes, seed))

    for n in running:
        n.ctl("force_compaction")
    cluster.wait_until(
        lambda: (
            all(n.status()["log_len"] <= 3 for n in running)
            and all(n.dump is not None and n.dump.exists() for n in running)
        ),
        300.0,
        "log compaction (a 200 MiB dump) on both running nodes",
        interval=0.1,
    )

    cluster.restart(newcomer)
    target = max(n.status()["commit_idx"] for n in running)
    cluster.wait_until(
        lambda: (st := newcomer.status())["snapshots_loaded"] >= 1 and st["last_applied"] >= target,
        300.0,
        "the newcomer to load the snapshot",
        interval=0.1,
    )
    cluster.wait_converged(nodes, expected, timeout=120.0)
    assert newcomer.status()["applied_cmds"] == 0  # everything came with the snapshot

    leader = cluster.leader()
    report: dict[str, Any] = {"transport": cluster.transport}
    for role, n in (("sender", leader), ("receiver", newcomer)):
        report[role] = {
            "rss": n.ctl("rss"),
            "transport_stats": n.ctl("transport_stats"),
        }
    print("\n200 MiB snapshot transfer report:\n" + json.dumps(report, indent=2))

    for role in ("sender", "receiver"):
        stats = report[role]["transport_stats"].get("stats") or {}
        for key in ("peak_outbound_memory_bytes", "peak_inbound_buffered_bytes"):
            if key in stats:
                assert stats[key] <= 64 * MiB, f"{role} {key}={stats[key]} > 64 MiB: {report}"


@pytest.mark.timeout(90)
def test_a_silent_follower_is_reported_disconnected_within_the_documented_bound(
    cluster: Cluster,
) -> None:
    """SIGSTOP keeps the follower's sockets open but silent: only liveness checks can see it.

    Documented bounds: GrpcTransport keepalive_time_s + keepalive_timeout_s = 3 s;
    TCPTransport connectionTimeout = 3.5 s. One second of slack for polling and scheduling.
    """
    nodes = cluster.start_cluster(3)
    leader = cluster.wait_leader()
    victim = followers(cluster, leader)[0]
    key = f"partner_node_status_server_{victim.addr}"
    assert leader.status()[key] == 2
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        cluster.wait_until(lambda: leader.status()[key] == 0, 10.0, f"{victim.name} disconnected")
        elapsed = time.monotonic() - stopped
        print(f"\n{cluster.transport}: silent follower reported disconnected after {elapsed:.2f} s")
        bound = 3.0 if cluster.transport == "grpc" else 3.5
        assert elapsed < bound + 1.0
        # Two of three still commit.
        cluster.write(leader, "while-silent", 1)
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    # Once it speaks again it is reconnected and catches up.
    cluster.wait_until(lambda: leader.status()[key] == 2, 15.0, f"{victim.name} reconnected")
    cluster.wait_converged(nodes, {"while-silent": 1}, prefix="while-")


@pytest.mark.timeout(120)
def test_fifty_big_entries_in_flight_commit_once_everywhere(cluster: Cluster) -> None:
    """Unbatched, 50 commands of 64 KiB outstanding: each acknowledgement makes PySyncObj's
    leader send the follower its in-flight entries again (raftgrpc._protocol.resend). GrpcTransport
    sends each entry once per stream; before it did, throughput fell to a quarter and the
    followers truncated entries they had already applied."""
    if cluster.transport == "tcp":
        pytest.skip("TCPTransport does not complete this load (docs/performance.md)")
    nodes = cluster.start_cluster(3, batch=0)
    leader = cluster.wait_leader()
    result = leader.ctl(
        "bench_load",
        timeout=60.0,
        seconds=2.0,
        inflight=50,
        payload_bytes=64 << 10,
        payload_kind="random",
        prefix="p",
        drain_timeout=30.0,
    )
    assert result["ok"] and result["outstanding"] == 0, result
    assert result["outcomes"] == {"SUCCESS": result["issued"]}, result
    assert result["committed"] >= 50, result
    expected = leader.get_all(prefix="p")
    assert len(expected) == result["committed"]
    cluster.wait_converged(nodes, expected, prefix="p", timeout=60.0)
    stats = leader.ctl("transport_stats")["stats"]
    assert stats["redundant_sends_dropped"] > 0, stats
    for n in followers(cluster, leader):
        assert "truncating already-applied" not in n.log_tail(2000), n.name
    dropped = stats["redundant_sends_dropped"]
    print(f"\n{result['committed']} commits of 64 KiB; {dropped} resends dropped")

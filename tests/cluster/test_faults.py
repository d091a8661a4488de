"""Fault injection under load with real node processes, checked for exactly-once application.

Each scenario starts a cluster of raftgrpc.testing._processes nodes, runs a :class:`faults.Load`
(clients recording op ids, never retrying one), injects its fault (kill -9, SIGSTOP, restart,
a partition made with node.py's ``block_peers``, membership changes), waits on conditions
with deadlines, stops the load and checks with :func:`faults.verify` that every acknowledged
op is on every live node exactly once, no op that definitely failed is anywhere, no op is
applied twice, and all live nodes hold the same ops and data.

Every scenario runs on GrpcTransport, and on TCPTransport as a baseline (the cheap ones by
default, the others and the longer variants ``slow``: ``-m slow``). Choices come from one
seed, printed first: repeat a run with ``RAFTGRPC_FAULT_SEED=<seed>``.
``RAFTGRPC_FAULT_REPORT=<path>`` writes the figures as JSON, and
``python tests/cluster/faults.py <path>`` turns that into a markdown table.

Run: ``python -m pytest tests/cluster/test_faults.py -q -s`` (``-m slow`` for the rest).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftgrpc.testing._processes.harness import CtlError, NodeProc, digest, gen_bytes
from tests.cluster import faults
from tests.cluster.faults import (
    BulkLoad,
    Load,
    Scenario,
    block,
    fetch_ops,
    others,
    scenario,
    wait_caught_up,
    wait_new_leader,
)

MiB = 1 << 20


def acks(s: Scenario, quick: int) -> int:
    """How many acknowledged writes to wait for at a step: ``quick`` (±25%, drawn from the
    seed), three times as many in the long variants."""
    n = s.rng.randint(quick * 3 // 4, quick * 5 // 4)
    return 3 * n if s.long else n


def started(s: Scenario, n: int = 3, **opts: Any) -> list[NodeProc]:
    nodes = s.cluster.start_cluster(n, **opts)
    s.cluster.wait_leader(timeout=45.0)
    return nodes


def compact(s: Scenario, nodes: list[NodeProc]) -> None:
    """Force a log compaction on every node and wait for each one's dump file."""
    for n in nodes:
        n.ctl("force_compaction")
    s.cluster.wait_until(
        lambda: all(n.dump is not None and n.dump.exists() for n in nodes),
        45.0,
        "a dump file on every node",
    )
    s.note("compacted every log")


def followers(s: Scenario, nodes: list[NodeProc]) -> list[NodeProc]:
    leader = s.cluster.leader(nodes, timeout=30.0)
    return others(nodes, leader)


# -- 1, 2: kill -9 under load -----------------------------------------------------------------


def leader_kill9(s: Scenario) -> None:
    """Asserts: a survivor is elected, writes are acknowledged again, and the survivors hold
    every acknowledged write exactly once."""
    c = s.cluster
    nodes = started(s)
    with s.load() as load:
        load.wait_acks(acks(s, 120))
        victim = c.leader(nodes)
        survivors = others(nodes, victim)
        t = s.fault(f"kill -9 of the leader {victim.name}")
        c.kill(victim)
        new = wait_new_leader(c, survivors, victim)
        s.result.extra["new_leader_s"] = time.monotonic() - t
        s.note(f"new leader {new.name}")
        load.wait_acks(acks(s, 120), what="after the kill")
    s.finish(survivors)


def follower_kill9(s: Scenario) -> None:
    """Asserts: the leader commits with the remaining follower (whether it kept its
    leadership is reported); the two survivors hold every acknowledged write exactly once."""
    c = s.cluster
    nodes = started(s)
    with s.load() as load:
        load.wait_acks(acks(s, 120))
        leader = c.leader(nodes)
        victim = s.rng.choice(others(nodes, leader))
        s.fault(f"kill -9 of the follower {victim.name}")
        c.kill(victim)
        load.wait_acks(acks(s, 120), what="after the kill")
        # Not asserted: on a loaded machine a stalled tick thread may still cost an election.
        s.result.extra["leader_kept"] = c.leader(others(nodes, victim)) is leader
    s.finish(others(nodes, victim))


# -- 3: restart with the same id ----------------------------------------------------------------


def restart_same_id(s: Scenario) -> None:
    """kill -9 of a node the seed picks (leader or follower), writes go on, the node restarts
    with its journal and dump and catches up. Every node compacted its log first, so the
    victim starts from its dump plus the journal written since. Asserts: it loaded its dump,
    caught up, and all three nodes hold every acknowledged write exactly once and the same
    state."""
    c = s.cluster
    nodes = started(s, journal=True, dump=True)
    with s.load() as load:
        load.wait_acks(acks(s, 60))
        victim = s.rng.choice(nodes)
        compact(s, nodes)
        load.wait_acks(acks(s, 60), what="after the compaction")
        role = "leader" if victim is c.leader(nodes) else "follower"
        s.result.extra["victim"] = role
        survivors = others(nodes, victim)
        s.fault(f"kill -9 of the {role} {victim.name}")
        c.kill(victim)
        c.wait_leader(survivors, timeout=45.0)
        load.wait_acks(acks(s, 100), what="while the victim is down")
        t = time.monotonic()
        c.restart(victim)
        s.note(f"{victim.name} restarted from its journal")
        wait_caught_up(c, [victim], nodes)
        assert victim.status()["snapshots_loaded"] >= 1, "the victim did not load its dump"
        s.result.extra["catch_up_s"] = time.monotonic() - t
        load.wait_acks(acks(s, 60), what="after the restart")
    s.finish(nodes)


# -- 4: restart in the middle of a snapshot -----------------------------------------------------


def snapshot_interrupted(s: Scenario) -> None:
    """A follower loses its files while the others compact a multi-MB state away, so that it
    can only catch up by a snapshot; it is killed -9 while the snapshot arrives (its partial
    dump file, ``<dump>.1.tmp``, is between 5% and 80% of the leader's dump) and restarted.
    Asserts: it loads a snapshot in the end and holds the full state: the big values (by
    digest), every acknowledged write exactly once, the others' data."""
    c = s.cluster
    nodes = started(s, journal=True, dump=True)
    blobs = 4 if s.long else 3
    blob_bytes = (16 if s.long else 4) * MiB
    expected: dict[str, Any] = {}
    with s.load() as load:
        load.wait_acks(acks(s, 60))
        for i in range(blobs):
            seed = s.rng.randrange(2**31)
            name = f"blob{i}"
            c.wait_until(
                lambda name=name, seed=seed: (
                    c.leader(timeout=20.0)
                    .ctl(
                        "fill",
                        timeout=70.0,
                        name=name,
                        nbytes=blob_bytes,
                        seed=seed,
                        timeout_s=60.0,
                    )
                    .get("ok")
                ),
                120.0,
                f"fill {name}",
            )
            expected[name] = digest(gen_bytes(blob_bytes, seed))
        victim = s.rng.choice(followers(s, nodes))
        survivors = others(nodes, victim)
        s.fault(f"kill -9 of {victim.name} and wipe of its journal and dump")
        c.kill(victim)
        c.wipe(victim)
        c.wait_leader(survivors, timeout=45.0)
        load.wait_acks(acks(s, 60), what="while the victim is down")

        forced = [float("-inf")]

        def compacted() -> bool:
            # The log is compacted once it starts well after index 1 (writes go on, so it
            # never gets short): the victim's empty log then needs a snapshot.
            statuses = [n.status() for n in survivors]
            if all(st["commit_idx"] - st["log_len"] > 100 for st in statuses):
                return True
            if time.monotonic() - forced[0] > 5.0:  # a dump of the whole state takes a while
                forced[0] = time.monotonic()
                for n in survivors:
                    n.ctl("force_compaction")
            return False

        c.wait_until(compacted, 90.0, "log compaction on the survivors", interval=0.1)
        s.note("survivors compacted")
        leader = c.leader(survivors)
        assert leader.dump is not None and victim.dump is not None
        c.wait_until(leader.dump.exists, 30.0, "the leader's dump file")
        total = leader.dump.stat().st_size
        frac = s.rng.uniform(0.05, 0.8)
        partial = victim.dump.with_name(victim.dump.name + ".1.tmp")
        if partial.exists():
            partial.unlink()
        c.restart(victim)
        s.note(f"{victim.name} restarted with no files; the leader's dump is {total} B")
        seen: dict[str, Any] = {}

        def mid_transfer() -> bool:
            size = partial.stat().st_size if partial.exists() else 0
            seen["size"] = size
            return size >= frac * total

        c.wait_until(
            mid_transfer,
            60.0,
            f"{victim.name} to receive {frac:.0%} of the {total} B snapshot",
            interval=0.002,
            observe=lambda: seen,
        )
        c.kill(victim)
        got = partial.stat().st_size if partial.exists() else 0
        st_loaded = victim.dump.exists()
        s.fault(f"kill -9 of {victim.name} with {got} of {total} B of the snapshot received")
        assert not st_loaded and got < total, (
            f"{victim.name} finished the snapshot before it could be killed ({got}/{total} B)"
        )
        s.result.extra.update(snapshot_bytes=total, killed_at_bytes=got)
        t = time.monotonic()
        c.restart(victim)
        c.wait_until(
            lambda: victim.status()["snapshots_loaded"] >= 1,
            90.0,
            f"{victim.name} to load the snapshot",
            interval=0.05,
        )
        s.result.extra["snapshot_s"] = time.monotonic() - t
        wait_caught_up(c, [victim], nodes)
        s.result.extra["catch_up_s"] = time.monotonic() - t
        load.wait_acks(acks(s, 60), what="after the snapshot")
    s.finish(nodes, timeout=90.0)
    for name, want in expected.items():
        assert victim.ctl("get", key=name)["value"] == want, f"{victim.name}: {name} differs"


# -- 5: a slow peer whose queue fills -----------------------------------------------------------

QUEUE_MEMORY = 256 * 1024
"""GrpcTransport's in-memory send queue per peer in scenario 5 (default 32 MiB): small, so
that a few seconds of big writes to a stopped peer spill it to disk."""


def slow_peer(s: Scenario) -> None:
    """SIGSTOP of a follower for a few seconds while big values (256 KiB each) and the ops are
    written. Asserts: the other two keep committing; on GrpcTransport the leader's queue to the
    stopped peer spills to disk (outbox stats) while its memory stays bounded
    (transport_stats); after SIGCONT the follower catches up and holds everything exactly
    once."""
    c = s.cluster
    grpc = s.transport == "grpc"
    if grpc:
        c.grpc_config = {"queue_memory_bytes": QUEUE_MEMORY}
    nodes = started(s)
    stop_s = s.rng.uniform(3.0, 5.0) * (2 if s.long else 1)
    peak: dict[str, int] = {"queued": 0, "spilled": 0}
    with s.load() as load, BulkLoad(load, 256 * 1024, s.rng.randrange(2**31)) as bulk:
        load.wait_acks(acks(s, 60))
        leader = c.leader(nodes)
        victim = s.rng.choice(others(nodes, leader))
        load.paused.add(victim.name)
        before = load.ledger.acked_count
        bulk_before = bulk.bytes_acked
        s.fault(f"SIGSTOP of the follower {victim.name} for {stop_s:.1f}s")
        s.sigstop(victim)
        t_stop = time.monotonic()
        try:
            while time.monotonic() - t_stop < stop_s:
                out = leader.ctl("outbox_stats", timeout=5.0)["peers"].get(str(victim.addr))
                if out:
                    peak["queued"] = max(peak["queued"], out["queued"])
                    peak["spilled"] = max(peak["spilled"], out["spilled_bytes_total"])
                time.sleep(0.05)  # sampling period of the queue, not a synchronisation
        finally:
            s.sigcont(victim)
        s.note(f"SIGCONT {victim.name}")
        load.paused.discard(victim.name)
        during = load.ledger.acked_count - before
        s.result.extra.update(
            stopped_s=stop_s,
            acked_while_stopped=during,
            bulk_mib_while_stopped=(bulk.bytes_acked - bulk_before) // MiB,
            peak_queued_items=peak["queued"],
            peak_spilled_bytes=peak["spilled"],
        )
        assert during > 0, "no write was acknowledged while a follower was stopped"
        wait_caught_up(c, [victim], nodes, timeout=60.0)
        load.wait_acks(acks(s, 60), what="after SIGCONT")
    stats = leader.ctl("transport_stats")["stats"]
    s.result.extra["peak_outbound_memory"] = stats.get("peak_outbound_memory_bytes")
    s.finish(nodes, timeout=90.0)
    expected = {k: digest(gen_bytes(bulk.nbytes, seed)) for k, seed in bulk.acked.items()}
    data = victim.get_all(prefix=bulk.prefix)
    assert all(data.get(k) == v for k, v in expected.items()), "a bulk value is missing"
    if grpc:
        assert peak["spilled"] > 0, f"the queue to the stopped peer never spilled: {peak}"
        # Memory stays bounded: one queue's worth per peer, plus the item that overflowed it
        # and the frame being sent.
        limit = 2 * QUEUE_MEMORY + 2 * MiB
        assert stats["peak_outbound_memory_bytes"] <= limit, stats


# -- 6: repeated leader changes -----------------------------------------------------------------


def leader_churn(s: Scenario) -> None:
    """Several leader changes in a row under load, each by a graceful transfer of leadership
    (SyncObj.transferLeadership) or a kill -9 and restart of the leader (the seed picks).
    Asserts: a different leader each time, writes acknowledged after each change, every
    node holding every acknowledged write exactly once in the end."""
    c = s.cluster
    nodes = started(s, journal=True, dump=True)
    rounds = 8 if s.long else 3
    how: list[str] = []
    with s.load() as load:
        load.wait_acks(acks(s, 60))
        for r in range(rounds):
            old = c.wait_leader(nodes, timeout=45.0)
            kind = s.rng.choice(["transfer", "kill"])
            how.append(kind)
            s.fault(f"round {r}: {kind} leader {old.name}")
            if kind == "transfer":

                def moved(old: NodeProc = old) -> NodeProc | None:
                    if old.status()["is_leader"]:
                        old.ctl("transfer_leadership", timeout=10.0, timeout_s=5.0)
                    leader = c.leader(nodes, timeout=10.0)
                    return leader if leader is not old else None

                new = c.wait_until(moved, 45.0, f"leadership to leave {old.name}", interval=0.2)
            else:
                c.kill(old)
                new = wait_new_leader(c, others(nodes, old), old)
                c.restart(old)
            # The change is what was waited for: later elections may give the old leader
            # back its leadership (a busy 2-core machine can starve the new one's heartbeats).
            print(f"  round {r}: {new.name} leads", flush=True)
            load.wait_acks(acks(s, 40), what=f"after round {r}")
        wait_caught_up(c, nodes, nodes)
    s.result.extra["changes"] = ",".join(how)
    s.finish(nodes)


# -- 7, 8: partitions ---------------------------------------------------------------------------


def probe_isolated(s: Scenario, old: NodeProc) -> None:
    """Five records sent straight to the isolated leader, which still believes it leads."""
    probe = [f"probe-{i}" for i in range(5)]
    s.ledger.submit(probe, old.name, {"isolated"})
    try:
        reply = old.ctl("record_many", timeout=10.0, ops=probe, timeout_s=3.0)
        results = reply["results"]
    except CtlError:
        results = dict.fromkeys(probe, "CTL_ERROR")
    s.ledger.resolve(results, time.monotonic())


def heal(s: Scenario, load: Load, nodes: list[NodeProc], isolated: NodeProc) -> None:
    """End a partition of ``isolated``: its writes settle first (tagged "isolated"), then
    every link comes back and the cluster must catch up and commit again."""
    load.quiesce(isolated, "isolated")
    block(nodes, [])
    load.resume(isolated)
    s.note("healed")
    wait_caught_up(s.cluster, nodes, nodes)
    load.wait_acks(acks(s, 60), what="after the heal")


def partition_leader(s: Scenario) -> None:
    """The leader is cut off from both followers (block_peers on all three). Asserts: the
    majority elects a new leader in a higher term and commits; no write sent to the old
    leader after the cut (by the clients, and a probe batch) is acknowledged, and after the
    heal none of them is applied anywhere; then every node converges."""
    c = s.cluster
    nodes = started(s)
    with s.load() as load:
        load.wait_acks(acks(s, 100))
        old = c.leader(nodes)
        old_term = old.status()["raft_term"]
        majority = others(nodes, old)
        block(majority, [old])
        block([old], majority)
        t = s.fault(f"partition: leader {old.name} | {[n.name for n in majority]}")
        load.tag_node(old, "isolated")
        probe = threading.Thread(target=probe_isolated, args=(s, old), daemon=True)
        probe.start()
        new = wait_new_leader(c, majority, old)
        s.result.extra["new_leader_s"] = time.monotonic() - t
        assert new.status()["raft_term"] > old_term
        load.wait_acks(acks(s, 100), what="during the partition")
        probe.join(15.0)
        assert not probe.is_alive(), "the probe of the isolated leader did not return"
        heal(s, load, nodes, old)
    isolated = s.ledger.tagged("isolated")
    assert not isolated & s.ledger.ops_where("acked"), "the isolated leader acknowledged a write"
    s.finish(nodes)
    ops, _ = fetch_ops(nodes[0])
    applied = isolated & set(ops)
    s.result.extra["isolated_ops"] = len(isolated)
    assert not applied, f"writes sent to the isolated leader were applied: {sorted(applied)[:5]}"


def partition_follower(s: Scenario) -> None:
    """A follower is cut off from the others, then healed. Asserts: the majority keeps
    committing during the partition; writes sent through the cut-off follower are not
    acknowledged; after the heal (which may cost an election: PySyncObj has no pre-vote)
    every node converges. Writes sent through the cut-off follower may be applied after the
    heal (it queues them until it knows a leader again), at most once."""
    nodes = started(s)
    with s.load() as load:
        load.wait_acks(acks(s, 100))
        victim = s.rng.choice(followers(s, nodes))
        rest = others(nodes, victim)
        block(rest, [victim])
        block([victim], rest)
        s.fault(f"partition: follower {victim.name} cut off")
        load.tag_node(victim, "isolated")
        load.wait_acks(acks(s, 150), what="during the partition")
        heal(s, load, nodes, victim)
    isolated = s.ledger.tagged("isolated")
    assert not isolated & s.ledger.ops_where("acked"), "a write through the cut-off was acked"
    s.result.extra["isolated_ops"] = len(isolated)
    s.finish(nodes)


# -- 9: full restart ----------------------------------------------------------------------------


def full_restart(s: Scenario) -> None:
    """kill -9 of all three nodes under load (in an order the seed picks), then all restart
    (in another order) from their files: the seed decides whether every log was compacted
    first (dump + journal) or not (journal alone). Asserts: a leader is elected, writes are
    acknowledged again, every write acknowledged before the crash survived, exactly once."""
    c = s.cluster
    nodes = started(s, journal=True, dump=True)
    with s.load() as load:
        load.wait_acks(acks(s, 75))
        s.result.extra["compacted"] = s.rng.random() < 0.5
        if s.result.extra["compacted"]:  # restart from dump + journal, else journal only
            compact(s, nodes)
        load.wait_acks(acks(s, 75))
        order = list(nodes)
        s.rng.shuffle(order)
        s.fault(f"kill -9 of all: {[n.name for n in order]}")
        for n in order:
            c.kill(n)
        s.rng.shuffle(order)
        t = time.monotonic()
        for n in order:
            c.restart(n)
        c.wait_leader(nodes, timeout=45.0)
        s.result.extra["leader_after_restart_s"] = time.monotonic() - t
        load.wait_acks(acks(s, 100), what="after the restart")
    s.finish(nodes)


# -- 10: membership change ----------------------------------------------------------------------


def membership(s: Scenario) -> None:
    """Under load, a fourth node joins (add_node) and catches up, then a follower the seed
    picks is removed (remove_node) and stopped. Asserts: the new node holds every write,
    including those acknowledged before it joined; the three remaining members agree."""
    c = s.cluster
    nodes = started(s, dynamic=True)
    with s.load() as load:
        load.wait_acks(acks(s, 100))
        fourth = c.new_node("n3", dynamic=True)
        fourth.partners = [str(n.addr) for n in nodes]
        c.start_fresh(fourth)
        s.fault(f"add {fourth.name}")
        c.change_membership("add_node", str(fourth.addr), present=True)
        members = [*nodes, fourth]
        wait_caught_up(c, [fourth], members)
        load.wait_acks(acks(s, 100), what="with four members")
        victim = s.rng.choice(others(followers(s, nodes), fourth))
        s.fault(f"remove {victim.name}")
        load.avoid.add(victim.name)
        c.change_membership("remove_node", str(victim.addr), present=False)
        c.stop(victim)
        remaining = others(members, victim)
        c.wait_until(
            lambda: all(victim.addr not in n.status()["partners"] for n in remaining),
            45.0,
            f"{victim.name} dropped by every member",
        )
        c.wait_leader(remaining, timeout=45.0)
        load.wait_acks(acks(s, 100), what="after the removal")
    s.finish(remaining)


# -- 11: a hung leader --------------------------------------------------------------------------


def hung_leader(s: Scenario) -> None:
    """SIGSTOP of the leader (a hung process: its sockets stay open) long enough for an
    election, then SIGCONT. Asserts: the other two elect a leader and commit; the old leader
    steps down when it resumes and every node converges."""
    c = s.cluster
    nodes = started(s)
    with s.load() as load:
        load.wait_acks(acks(s, 100))
        old = c.leader(nodes)
        majority = others(nodes, old)
        load.paused.add(old.name)
        t = s.fault(f"SIGSTOP of the leader {old.name}")
        s.sigstop(old)
        try:
            new = wait_new_leader(c, majority, old)
            s.result.extra["new_leader_s"] = time.monotonic() - t
            load.wait_acks(acks(s, 100), what="while the old leader hangs")
        finally:
            s.sigcont(old)
        s.note(f"SIGCONT {old.name}; new leader {new.name}")
        load.paused.discard(old.name)
        wait_caught_up(c, nodes, nodes)
        c.wait_leader(nodes, timeout=45.0)
        load.wait_acks(acks(s, 60), what="after SIGCONT")
    s.finish(nodes)


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "leader_kill9": leader_kill9,
    "follower_kill9": follower_kill9,
    "restart_same_id": restart_same_id,
    "snapshot_interrupted": snapshot_interrupted,
    "slow_peer": slow_peer,
    "leader_churn": leader_churn,
    "partition_leader": partition_leader,
    "partition_follower": partition_follower,
    "full_restart": full_restart,
    "membership": membership,
    "hung_leader": hung_leader,
}

# TCPTransport failures that come from PySyncObj's own transport, not from the scenario.
# TCPTransport failures that come from PySyncObj's own transport, not from the scenario.
TCP_XFAIL: dict[str, str] = {}

# TCPTransport baselines cheap enough for the default run; the others are slow.
TCP_DEFAULT = {"leader_kill9", "follower_kill9", "restart_same_id", "full_restart", "membership"}


def _params() -> Iterator[Any]:
    for name in SCENARIOS:
        yield pytest.param(name, "grpc", id=f"{name}-grpc")
        marks = [] if name in TCP_DEFAULT else [pytest.mark.slow]
        yield pytest.param(name, "tcp", id=f"{name}-tcp", marks=marks)


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = faults.summary()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and faults.RESULTS:
        reporter.write_line("")
        for r in faults.RESULTS:
            reporter.write_line(r.line())
        reporter.write_line(line)
    faults.write_report()


def _run(
    name: str, transport: str, tmp_path: Path, request: pytest.FixtureRequest, long: bool
) -> None:
    if transport == "tcp" and name in TCP_XFAIL:
        request.applymarker(pytest.mark.xfail(reason=TCP_XFAIL[name], strict=True))
    slow = request.node.get_closest_marker("slow") is not None
    with scenario(name, transport, tmp_path, request.node.nodeid, long=long, slow=slow) as s:
        SCENARIOS[name](s)


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("name", "transport"), list(_params()))
def test_fault(name: str, transport: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _run(name, transport, tmp_path, request, long=False)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("transport", ["grpc", "tcp"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_long(
    name: str, transport: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Three times the writes at every step, more leader changes, a bigger snapshot, a
    longer stop."""
    _run(name, transport, tmp_path, request, long=True)


# -- the checker itself -------------------------------------------------------------------------


class _FakeNode:
    """Answers ``ops`` and ``get_all`` like node.py, from a fixed list."""

    def __init__(self, name: str, ops: list[str]) -> None:
        self.name, self.ops, self.alive, self.readonly = name, ops, True, False

    def ctl(self, cmd: str, timeout: float = 0.0, **params: Any) -> dict[str, Any]:
        assert cmd == "ops"
        return {"ok": True, "ops": list(self.ops), "applied": 100}

    def get_all(self, prefix: str | None = None) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("lists", "error"),
    [
        ([["a1", "u1", "a2"], ["a1", "u1", "a2"]], None),
        ([["a1", "a2"], ["a1", "a2"]], None),
        ([["a1", "a2", "a1"], ["a1", "a2", "a1"]], "applied twice"),
        ([["a1", "u1", "a2", "u1"], ["a1", "u1", "a2", "u1"]], "applied twice"),
        ([["a1", "a2", "f1"], ["a1", "a2", "f1"]], "failed definitely but applied"),
        ([["a1", "a2", "zz"], ["a1", "a2", "zz"]], "never issued"),
        ([["a1"], ["a1"]], "timed out"),  # an acknowledged write lost
        ([["a1", "a2"], ["a2", "a1"]], "timed out"),  # diverged
    ],
)
def test_the_checker_catches_violations(
    tmp_path: Path, lists: list[list[str]], error: str | None
) -> None:
    ledger = faults.Ledger()
    ledger.submit(["a1", "a2", "f1", "u1"], "n0")
    ledger.resolve({"a1": "SUCCESS", "a2": "SUCCESS", "f1": "NOT_LEADER"}, 1.0)
    ledger.resolve({"u1": "TIMEOUT"}, 2.0)
    cluster = faults.FaultCluster("grpc", tmp_path)
    nodes: Any = [_FakeNode(f"n{i}", ops) for i, ops in enumerate(lists)]
    if error is None:
        assert faults.verify(cluster, ledger, nodes, timeout=0.3) == {
            n.name: len(n.ops) for n in nodes
        }
    else:
        with pytest.raises(AssertionError, match=error):
            faults.verify(cluster, ledger, nodes, timeout=0.3)

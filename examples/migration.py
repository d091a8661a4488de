"""Move a live 3-node PySyncObj cluster from TCPTransport to gRPC, with rolling restarts.

Run it with ``python examples/migration.py [--workdir DIR]``. It is the migration runbook of
the README, end to end, around :class:`raftgrpc.MigrationTransport`:

1. it starts 3 node processes of a small replicated key-value store on PySyncObj's
   ``TCPTransport``, each with a journal and a dump file (a restarted node keeps its log);
2. a thread of this process keeps writing (one write at a time, a fresh key each, through
   the leader) and records every write a node acknowledged;
3. phase 1 restarts the nodes one at a time on ``MigrationTransport``, which serves both TCP
   and gRPC, sends over gRPC, and falls back to TCP towards nodes still on TCPTransport;
4. phase 2 restarts them one at a time on ``GrpcTransport`` alone;
5. at the end it checks that every acknowledged write is on every node with its value, and
   that the three nodes hold the same state.

The Raft ids stay TCP addresses all along (PySyncObj writes them into its log); gRPC listens
on each node's Raft port plus 1000 (``PortOffset(1000)``, the same mapping on every node).
Every restart is graceful: the client stops writing through the node, a leader hands its
leadership over before it stops (``raftgrpc.graceful_shutdown``), and the node is
back (connected to every partner, and caught up) before the next one goes. For each step
the demo prints how long it took, the writes acknowledged meanwhile, the longest gap between
two of them, and the path every MigrationTransport uses towards each peer.

Journals, dumps and the nodes' logs go to the work directory (a temporary one by default).
Finishes by itself in about half a minute.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import multiprocessing as mp
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import SyncObjException
from pysyncobj.transport import TCPTransport

from raftgrpc import (
    GrpcTransport,
    MigrationTransport,
    PortOffset,
    TransportConfig,
    graceful_shutdown,
)

OFFSET = 1000
"""gRPC listens on a node's Raft port plus this (``PortOffset(OFFSET)``)."""

LABELS = {"tcp": "TCP", "migration": "Migration", "grpc": "gRPC"}
PROTOCOL = {"primary": "gRPC", "secondary": "TCP"}  # what each MigrationTransport path is

# Why each phase restarts the nodes in the order it does (the README's runbook).
WHY_PHASE_1 = """\
  TCPTransport only dials peers whose address sorts lower, and redials them every
  connectionRetryTime (5 s). In this order each restarted node dials the TCP-only nodes
  itself (they are all below it). The other way round, a TCP-only leader above it would
  reach it up to 5 s later; until then the restarted node hears no leader, times out, and
  the higher term of its election deposes that leader (PySyncObj has no pre-vote)."""
WHY_PHASE_2 = """\
  It starts once every node runs MigrationTransport: a gRPC-only node cannot reach a TCP-only
  one. Every node serves gRPC by then, so any order keeps the cluster connected; restarting
  the leader last moves leadership once instead of up to three times."""

PER_TRY_S = 2.0
"""How long the client waits for one write through one node before trying another."""

FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}


# --------------------------------------------------------------------------- a node process


def transport_class(kind: str) -> Any:
    """What SyncObj gets as ``transportClass`` on each leg of the migration."""
    grpc_transport = functools.partial(
        GrpcTransport, config=TransportConfig(address_of=PortOffset(OFFSET))
    )
    if kind == "tcp":
        return TCPTransport
    if kind == "migration":
        # Listens on both; sends over gRPC (primary), falls back to TCP (secondary) per peer.
        return MigrationTransport.factory(primary=grpc_transport, secondary=TCPTransport)
    return grpc_transport


class KeepTransport:
    """A ``transportClass`` that remembers the transport SyncObj builds with it (to ask a
    MigrationTransport which path it uses towards each peer)."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.transport: Any = None

    def __call__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> Any:
        self.transport = self.make(syncObj, selfNode, otherNodes)
        return self.transport


class KeyValueStore(SyncObj):  # type: ignore[misc]
    """A replicated dict whose log survives restarts (journal and dump files)."""

    def __init__(self, me: str, partners: list[str], files: Path, transport: Any) -> None:
        conf = SyncObjConf(
            dynamicMembershipChange=False,
            journalFile=f"{files}.journal",
            fullDumpFile=f"{files}.dump",
        )
        super().__init__(me, partners, conf, transportClass=transport)
        self.data: dict[str, int] = {}

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: int) -> None:
        self.data[key] = value


class NodeServer:
    """A node process: the store, and the commands the parent sends it."""

    def __init__(self, me: str, partners: list[str], kind: str, files: Path) -> None:
        # TCPTransport retries a port in use forever (maxBindRetries=0): fail at once instead.
        port = int(me.rsplit(":", 1)[1])
        ports = {"tcp": [port], "migration": [port, port + OFFSET], "grpc": [port + OFFSET]}
        for needed in ports[kind]:
            if not port_free(needed, reuse=True):
                raise RuntimeError(f"port {needed} is in use")
        self.kind = kind
        self.keep = KeepTransport(transport_class(kind))
        self.store = KeyValueStore(me, partners, files, self.keep)
        self.store.waitBinded()  # returns once the transport listens

    def leader(self) -> str | None:
        leader = self.store._getLeader()
        return None if leader is None else str(leader.id)

    def cmd_ping(self) -> bool:
        return True

    def cmd_put(self, key: str, value: int, timeout: float) -> dict[str, Any]:
        """Write and wait for the commit; the reply names the leader as this node knows it."""
        error = None
        try:
            self.store.set(key, value, sync=True, timeout=timeout)
        except SyncObjException as exc:
            error = FAIL_NAMES.get(exc.errorCode, str(exc.errorCode))
        return {"error": error, "leader": self.leader()}

    def cmd_status(self) -> dict[str, Any]:
        store = self.store
        transport = self.keep.transport
        paths = transport.paths() if isinstance(transport, MigrationTransport) else None
        return {
            "leader": self.leader(),
            "connected": {str(n.id): store.isNodeConnected(n) for n in store.otherNodes},
            "paths": paths,
            "commit_idx": store.raftCommitIndex,
            "last_applied": store.raftLastApplied,
        }

    def cmd_state(self) -> dict[str, int]:
        return dict(self.store.data)

    def cmd_stop(self) -> dict[str, Any]:
        """Stop gracefully: a leader hands leadership over first."""
        report = graceful_shutdown(self.store, drain_s=0.5)
        return {
            "was_leader": report.was_leader,
            "transferred_to": report.transferred_to,
            "seconds": report.total_s,
        }

    def cmd_exit(self) -> None:
        """Stop at once (the demo is over)."""
        self.store.destroy()
        thread = getattr(self.store, "_SyncObj__thread", None)
        if thread is not None:
            thread.join(10)


def serve(conn: Connection, server: NodeServer) -> None:
    """Answer ``(seq, command, args)`` requests with ``(seq, ok, result)`` until the parent
    closes its end, or after a ``stop`` or ``exit``."""
    while True:
        try:
            seq, command, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (seq, True, getattr(server, f"cmd_{command}")(*args))
        except Exception as exc:
            reply = (seq, False, f"{type(exc).__name__}: {exc}")
        conn.send(reply)
        if command in ("stop", "exit"):
            return


def exit_with_parent() -> None:
    """Exit at once when the parent dies, however it dies (even by SIGKILL)."""
    parent = mp.parent_process()

    def watch() -> None:
        if parent is not None:
            parent.join()  # returns once the parent is gone
            os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def run_node(
    name: str, me: str, partners: list[str], kind: str, workdir: str, control: Any, writes: Any
) -> None:
    """A node process's entry point (multiprocessing, 'spawn')."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    exit_with_parent()
    logging.basicConfig(
        filename=str(Path(workdir) / f"{name}.log"),
        level=logging.INFO,
        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("demo").info("starting %s on %s as %s", name, LABELS[kind], me)
    code = 0
    try:
        server = NodeServer(me, partners, kind, Path(workdir) / name)
        # Writes get their own pipe and thread: a write may wait for a commit for a while.
        threading.Thread(target=serve, args=(writes, server), daemon=True).start()
        serve(control, server)  # on this thread: SyncObj stops ticking when it ends
    except BaseException:
        logging.getLogger("demo").exception("%s failed", name)
        traceback.print_exc()
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)  # without waiting for threads the transports may leave behind


# --------------------------------------------------------------------------- the parent


class DemoFailed(Exception):
    """The migration did not go as it should; the message says what happened."""


class NodeUnavailable(Exception):
    """A node did not answer (it is down, starting, or slow)."""


class Channel:
    """The parent's end of a pipe to a node, used by one thread. Requests are numbered, so
    a reply that arrives after its caller gave up is skipped, not taken for the next one."""

    def __init__(self, name: str, conn: Connection) -> None:
        self.name = name
        self._conn = conn
        self._seq = itertools.count(1)

    def call(self, command: str, *args: Any, timeout: float) -> Any:
        seq = next(self._seq)
        deadline = time.monotonic() + timeout
        try:
            self._conn.send((seq, command, args))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    raise NodeUnavailable(f"{self.name} did not answer {command!r} in {timeout} s")
                got, ok, result = self._conn.recv()
                if got == seq:
                    break
        except (EOFError, OSError) as exc:
            raise NodeUnavailable(f"{self.name} is down") from exc
        if not ok:
            raise DemoFailed(f"{self.name}: {command} failed: {result}")
        return result


class Node:
    """One node; its name, address, journal and dump survive restarts, its process does not."""

    def __init__(self, name: str, address: str, workdir: Path) -> None:
        self.name = name
        self.address = address
        self.workdir = workdir
        self.kind = "tcp"
        self.process: BaseProcess | None = None
        self.control: Channel | None = None  # used by the main thread
        self.writes: Channel | None = None  # used by the client's thread

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self, kind: str, partners: list[str], ctx: Any) -> float:
        """Start the process on ``kind`` and wait until it is listening; returns the time it
        took."""
        started = time.monotonic()
        self.kind = kind
        control, control_child = ctx.Pipe()
        writes, writes_child = ctx.Pipe()
        self.process = ctx.Process(
            target=run_node,
            args=(self.name, self.address, partners, kind, str(self.workdir)),
            kwargs={"control": control_child, "writes": writes_child},
            name=self.name,
            daemon=True,
        )
        self.process.start()
        control_child.close()  # the child has its own copies: EOF here when it exits
        writes_child.close()
        self.control = Channel(self.name, control)
        self.writes = Channel(self.name, writes)
        try:
            self.call("ping", timeout=60)
        except NodeUnavailable as exc:
            self.join(timeout=5)
            log = self.workdir / f"{self.name}.log"
            raise DemoFailed(
                f"{self.name} did not start on {LABELS[kind]} ({exc}, exit code "
                f"{self.process.exitcode}); see {log}"
            ) from exc
        return time.monotonic() - started

    def call(self, command: str, *args: Any, timeout: float = 5.0) -> Any:
        if self.control is None:
            raise NodeUnavailable(f"{self.name} is not running")
        return self.control.call(command, *args, timeout=timeout)

    def stop_gracefully(self) -> dict[str, Any]:
        try:
            report: dict[str, Any] = self.call("stop", timeout=30)
        except NodeUnavailable as exc:
            raise DemoFailed(f"{self.name} did not stop: {exc}") from exc
        self.join(timeout=15)
        return report

    def join(self, timeout: float) -> None:
        """Wait for the process to end; kill it if it does not."""
        if self.process is None:
            return
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.control = None


@dataclass
class Step:
    number: int
    node: str
    before: str
    after: str
    was_leader: bool
    seconds: float
    acks: int
    longest_gap_s: float


class Cluster:
    """The parent's handle on the three node processes."""

    def __init__(self, addresses: list[str], workdir: Path) -> None:
        self.ctx = mp.get_context("spawn")
        self.workdir = workdir
        self.nodes = [Node(f"n{i}", a, workdir) for i, a in enumerate(addresses)]
        self.by_address = {n.address: n for n in self.nodes}

    def name(self, address: str | None) -> str:
        node = self.by_address.get(address or "")
        return node.name if node is not None else str(address)

    def start(self, node: Node, kind: str) -> float:
        partners = [n.address for n in self.nodes if n is not node]
        return node.start(kind, partners, self.ctx)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until it holds; DemoFailed after ``timeout`` seconds or as soon
        as a node process died."""
        deadline = time.monotonic() + timeout
        while True:
            for n in self.nodes:
                if n.process is not None and not n.alive and n.control is not None:
                    log = self.workdir / f"{n.name}.log"
                    raise DemoFailed(
                        f"{n.name} exited (code {n.process.exitcode}) while waiting for {what}; "
                        f"see {log}"
                    )
            try:
                if predicate():
                    return
            except NodeUnavailable:
                pass  # a node is busy or starting: ask again
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {n.name: n.call("status") for n in self.nodes}

    def leader(self, timeout: float = 60) -> Node:
        """The leader, once every node agrees on one."""
        found: list[Node] = []

        def agreed() -> bool:
            leaders = {st["leader"] for st in self.statuses().values()}
            if len(leaders) == 1 and None not in leaders:
                found.append(self.by_address[leaders.pop()])
            return bool(found)

        self.wait_until(agreed, timeout, "the nodes to agree on a leader")
        return found[0]

    def settled(self) -> bool:
        """Every node sees every partner connected, each MigrationTransport uses the path its
        peer calls for (TCP towards a node on TCPTransport, gRPC towards the others), and
        all agree on one leader."""
        statuses = self.statuses()
        for st in statuses.values():
            if not all(st["connected"].values()):
                return False
            for peer, path in (st["paths"] or {}).items():
                expected = "secondary" if self.by_address[peer].kind == "tcp" else "primary"
                if path != expected:
                    return False
        leaders = {st["leader"] for st in statuses.values()}
        return len(leaders) == 1 and None not in leaders

    def describe_paths(self) -> list[str]:
        """How each node reaches its partners, one line per node."""
        lines = []
        for node in self.nodes:
            st = node.call("status")
            label = f"{node.name} ({LABELS[node.kind]})"
            if st["paths"] is not None:
                views = [
                    f"{self.name(peer)} via {path} ({PROTOCOL[path]})"
                    if path
                    else f"{self.name(peer)} disconnected"
                    for peer, path in sorted(st["paths"].items(), key=lambda p: self.name(p[0]))
                ]
                lines.append(f"{label:<16} {', '.join(views)}")
            else:
                peers = sorted(self.name(p) for p, up in st["connected"].items() if up)
                over = "TCP" if node.kind == "tcp" else "gRPC"
                lines.append(f"{label:<16} {', '.join(peers)} connected over {over}")
        return lines

    def close(self) -> None:
        """Stop every node process still running: ask first, then kill."""
        for n in self.nodes:
            if n.alive and n.control is not None:
                try:
                    n.call("exit", timeout=10)
                except (NodeUnavailable, DemoFailed):
                    pass
        for n in self.nodes:
            n.join(timeout=10)


class Writer:
    """The client: keeps writing, one write at a time, and records what was acknowledged.

    Each write is a fresh key (``k<N>`` = N), retried with the same key and value until a
    node acknowledges it (a write applied twice leaves the same value). It goes through the
    leader, as the last reply named it, or else through any other node that is up; never
    through a drained node (one about to restart), as a load balancer would do.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acks: list[tuple[float, str, int]] = []
        self.failed_attempts = 0
        self._leader: str | None = None
        self._drained: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> bool:
        """Stop writing; whether the thread ended (it waits for one write at most)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(PER_TRY_S + 10)
        return not self._thread.is_alive()

    def drain(self, node: Node) -> None:
        with self._lock:
            self._drained.add(node.name)

    def undrain(self, node: Node) -> None:
        with self._lock:
            self._drained.discard(node.name)

    def acknowledged(self) -> dict[str, int]:
        return {key: value for _, key, value in list(self.acks)}

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an acknowledged write between ``since`` and ``until``
        (a gap that began earlier counts whole)."""
        times = [t for t, _, _ in list(self.acks)]
        before = [t for t in times if t < since]
        inside = [t for t in times if since <= t <= until]
        edges = before[-1:] + inside + [until]
        return max((b - a for a, b in itertools.pairwise(edges)), default=until - since)

    def wait_acks(self, count: int, timeout: float = 30) -> None:
        target = len(self.acks) + count
        self.cluster.wait_until(
            lambda: len(self.acks) >= target, timeout, f"{count} more acknowledged writes"
        )

    def _targets(self) -> list[Node]:
        with self._lock:
            nodes = [n for n in self.cluster.nodes if n.name not in self._drained and n.alive]
        return sorted(nodes, key=lambda n: n.address != self._leader)  # the leader first

    def _run(self) -> None:
        for seq in itertools.count():
            while not self._write(f"k{seq}", seq):
                if self._stop.wait(0.02):  # no node took it: try again shortly
                    return
            if self._stop.is_set():
                return

    def _write(self, key: str, value: int) -> bool:
        for node in self._targets():
            if self._stop.is_set():
                return False
            channel = node.writes
            if channel is None:
                continue
            try:
                reply = channel.call("put", key, value, PER_TRY_S, timeout=PER_TRY_S + 3)
            except (NodeUnavailable, DemoFailed):
                self.failed_attempts += 1
                continue
            if reply["leader"] is not None:
                self._leader = reply["leader"]
            if reply["error"] is None:
                self.acks.append((time.monotonic(), key, value))
                return True
            self.failed_attempts += 1
        return False


# --------------------------------------------------------------------------- the migration


def restart(cluster: Cluster, writer: Writer, node: Node, kind: str, number: int) -> Step:
    """One rolling-restart step: drain, stop gracefully, start on ``kind``, wait until the
    node is back and caught up, undrain."""
    before = LABELS[node.kind]
    total = 2 * len(cluster.nodes)
    print(f"\n  step {number}/{total}: {node.name} {before} -> {LABELS[kind]}")
    started = time.monotonic()
    acks_before = len(writer.acks)
    writer.drain(node)
    report = node.stop_gracefully()
    took = f"{report['seconds']:.2f} s"
    if not report["was_leader"]:
        print(f"    a follower: drained, stopped gracefully in {took}")
    elif report["transferred_to"]:
        handed = cluster.name(report["transferred_to"])
        print(f"    the leader: drained, handed leadership to {handed}, stopped in {took}")
    else:
        print(f"    the leader: drained, no other node took over in time, stopped in {took}")
    up = cluster.start(node, kind)
    print(f"    started on {LABELS[kind]}, same id and journal, listening after {up:.2f} s")
    cluster.wait_until(cluster.settled, 60, f"{node.name} to be back on {LABELS[kind]}")
    target = cluster.leader().call("status")["commit_idx"]
    cluster.wait_until(
        lambda: node.call("status")["last_applied"] >= target, 60, f"{node.name} to catch up"
    )
    writer.undrain(node)
    ended = time.monotonic()
    step = Step(
        number=number,
        node=node.name,
        before=before,
        after=LABELS[kind],
        was_leader=bool(report["was_leader"]),
        seconds=ended - started,
        acks=len(writer.acks) - acks_before,
        longest_gap_s=writer.longest_gap(started, ended),
    )
    print(f"    back, connected to all and caught up: the step took {step.seconds:.2f} s")
    print(
        f"    {step.acks} writes acknowledged during the step, "
        f"longest gap between two: {1000 * step.longest_gap_s:.0f} ms"
    )
    for line in cluster.describe_paths():
        print(f"      {line}")
    return step


def table(steps: list[Step]) -> str:
    rows = [
        f"  {'step':>4}  {'node':<4}  {'from -> to':<18}  {'leader':<6}  {'seconds':>7}  "
        f"{'writes':>6}  {'longest gap':>11}"
    ]
    for s in steps:
        rows.append(
            f"  {s.number:>4}  {s.node:<4}  {s.before + ' -> ' + s.after:<18}  "
            f"{'yes' if s.was_leader else 'no':<6}  {s.seconds:>7.2f}  {s.acks:>6}  "
            f"{1000 * s.longest_gap_s:>8.0f} ms"
        )
    return "\n".join(rows)


def verify(cluster: Cluster, acked: dict[str, int]) -> int:
    """Every acknowledged write on every node with its value, and identical states; returns
    the number of keys."""
    states: dict[str, dict[str, int]] = {}

    def converged() -> bool:
        states.clear()
        states.update({n.name: n.call("state", timeout=10) for n in cluster.nodes})
        first = states[cluster.nodes[0].name]
        complete = all(all(s.get(k) == v for k, v in acked.items()) for s in states.values())
        return complete and all(s == first for s in states.values())

    try:
        cluster.wait_until(converged, 30, "every node to hold every acknowledged write")
    except DemoFailed:
        for name, state in states.items():
            wrong = [k for k, v in acked.items() if state.get(k) != v]
            print(f"  {name}: {len(state)} keys, {len(wrong)} acknowledged writes missing or wrong")
        raise
    return len(states[cluster.nodes[0].name])


def migrate(cluster: Cluster, writer: Writer) -> None:
    nodes = cluster.nodes
    print(f"starting {', '.join(n.name for n in nodes)} on TCPTransport, lowest address first")
    print("  (each TCPTransport dials the nodes whose address sorts lower: they already listen)")
    started = time.monotonic()
    for node in nodes:
        cluster.start(node, "tcp")
    cluster.wait_until(cluster.settled, 60, "the TCP cluster to connect and elect a leader")
    print(f"  leader: {cluster.leader().name}, {time.monotonic() - started:.2f} s in")

    writer.start()
    writer.wait_acks(20)
    print("client writing: one write at a time, a fresh key each, through the leader")
    print(f"  {len(writer.acks)} writes acknowledged so far")
    steps: list[Step] = []
    migration_started = time.monotonic()

    order = sorted(nodes, key=lambda n: n.address, reverse=True)
    print("\nphase 1: TCPTransport -> MigrationTransport (serves TCP and gRPC, sends over gRPC)")
    print(f"  order: {', '.join(n.name for n in order)}, the highest address first.")
    print(WHY_PHASE_1)
    for node in order:
        steps.append(restart(cluster, writer, node, "migration", len(steps) + 1))
        writer.wait_acks(10)

    print("\nphase 2: MigrationTransport -> GrpcTransport (gRPC only)")
    print(f"  order: the followers first, the leader ({cluster.leader().name}) last.")
    print(WHY_PHASE_2)
    remaining = list(nodes)
    while remaining:
        leader = cluster.leader()
        node = next((n for n in remaining if n is not leader), remaining[0])
        remaining.remove(node)
        steps.append(restart(cluster, writer, node, "grpc", len(steps) + 1))
        writer.wait_acks(10)
    migration_ended = time.monotonic()

    if not writer.stop():
        raise DemoFailed("the client did not stop writing")
    acked = writer.acknowledged()
    print(f"\nsteps\n{table(steps)}")
    print(
        f"\nclient: {len(acked)} writes acknowledged (k0..k{len(acked) - 1}), "
        f"{writer.failed_attempts} attempts refused or timed out and retried"
    )
    keys = verify(cluster, acked)
    print(
        f"every acknowledged write is on every node with its value; the three states are "
        f"identical ({keys} keys)"
    )
    outage = writer.longest_gap(migration_started, migration_ended)
    worst = max(steps, key=lambda s: s.longest_gap_s)
    where = "between two steps"
    if worst.longest_gap_s >= outage:
        role = "the leader" if worst.was_leader else "a follower"
        where = f"step {worst.number}: {worst.node}, {role}, {worst.before} -> {worst.after}"
    print(f"longest write outage during the migration: {1000 * outage:.0f} ms ({where})")
    print(
        f"migration complete: TCP -> Migration -> gRPC in {len(steps)} rolling restarts, "
        f"{len(acked)} writes acknowledged, none lost, longest outage {1000 * outage:.0f} ms"
    )


# --------------------------------------------------------------------------- ports and main


def port_free(port: int, reuse: bool = False) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 (``reuse``: as servers bind, SO_REUSEADDR,
    which a port still in TIME_WAIT after a restart does not prevent)."""
    with socket.socket() as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, offset: int) -> list[int]:
    """``count`` Raft ports P, with P + ``offset`` free as well (for ``PortOffset``).

    They are picked below the ephemeral range (32768 and up on Linux, 49152 and up
    elsewhere), from which the system hands out ports to ``bind(0)`` and to outgoing
    connections: nothing else takes a node's ports while it restarts.
    """
    chosen: list[int] = []
    for _ in range(1000):
        port = random.randrange(20000, 30000)
        pair = (port, port + offset)
        taken = {p for c in chosen for p in (c, c + offset)}
        if not taken & set(pair) and all(port_free(p) for p in pair):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise DemoFailed(f"found no {count} free port pairs (P, P + {offset})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="journals, dumps and node logs (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="raftgrpc-migration-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("n0", "n1", "n2"):  # a fresh cluster: no journal or dump from an earlier run
        for suffix in (".journal", ".journal.meta", ".dump", ".dump.tmp"):
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)
    started = time.monotonic()
    ok = False
    cluster: Cluster | None = None
    writer: Writer | None = None
    try:
        # Sorted as TCPTransport compares them, as strings: n0 < n1 < n2.
        addresses = sorted(f"127.0.0.1:{p}" for p in free_port_pairs(3, OFFSET))
        cluster = Cluster(addresses, workdir)
        print(
            "cluster: "
            + ", ".join(f"{n.name}={n.address}" for n in cluster.nodes)
            + f"; gRPC on each Raft port + {OFFSET} (PortOffset({OFFSET}))"
        )
        writer = Writer(cluster)
        migrate(cluster, writer)
        ok = True
    except (DemoFailed, NodeUnavailable) as exc:
        print(f"\nFAILED: {exc}")
    except KeyboardInterrupt:
        print("\ninterrupted")
    finally:
        if writer is not None:
            writer.stop()
        if cluster is not None:
            cluster.close()
    elapsed = time.monotonic() - started
    print(f"\nnode logs, journals and dumps: {workdir}; finished in {elapsed:.1f} s")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Start, stop, kill and query node processes (:mod:`raftgrpc.testing._processes.node`) of a
local Raft cluster.

Synchronisation is by polling a condition with a deadline (``Cluster.wait_until``), never by
sleeping for a fixed time. Every process a ``Cluster`` starts is killed by ``Cluster.close``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from raftgrpc.testing._ports import free_port
from raftgrpc.testing._waiting import wait_until

NODE_MODULE = "raftgrpc.testing._processes.node"
"""What ``python -m`` runs for each node."""
REPO = Path(__file__).resolve().parents[3]
"""The working directory of node processes (the source tree, when raftgrpc runs from one)."""

EXIT_PORT_IN_USE = 3  # node.py: the Raft or the control port could not be bound

# Failures of an idempotent set that a retry can fix: no leader (yet), the leader moved, the
# command was dropped or its outcome is unknown, or we did not hear back in time.
RETRIABLE = {
    "MISSING_LEADER",
    "NOT_LEADER",
    "LEADER_CHANGED",
    "DISCARDED",
    "UNKNOWN_OUTCOME",
    "TIMEOUT",
    "QUEUE_FULL",
}

T = TypeVar("T")


def digest(value: bytes | str) -> dict[str, Any]:
    """What get_all reports for a big value."""
    raw = value.encode() if isinstance(value, str) else value
    return {"sha256": hashlib.sha256(raw).hexdigest(), "len": len(raw)}


def gen_bytes(nbytes: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(nbytes)


def gen_text(nchars: int, seed: int) -> str:
    """Deterministic ASCII text (hex digits); node.py builds the same."""
    return random.Random(seed).randbytes((nchars + 1) // 2).hex()[:nchars]


class CtlError(Exception):
    """The control port did not answer (node down, starting, or too slow)."""


class PortInUse(Exception):
    pass


class NodeProc:
    """One node: its identity (addresses, files) survives restarts; ``proc`` does not."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        *,
        readonly: bool = False,
        journal: bool = False,
        dump: bool = False,
        dynamic: bool = False,
        batch: int = 1,
        conf: dict[str, Any] | None = None,
        transport: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.transport = transport
        """This node's transport (node.py TRANSPORTS); None: the cluster's."""
        self.readonly = readonly
        self.dynamic = dynamic
        self.batch = batch
        self.conf = dict(conf or {})
        self.partners: list[str] = []
        self.journal: Path | None = cluster.workdir / f"{name}.journal" if journal else None
        self.dump: Path | None = cluster.workdir / f"{name}.dump" if dump else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.log_path: Path | None = None
        self.raft_port = 0
        self.grpc_port = 0
        self.ctl_port = 0
        self.realloc_ports()

    def realloc_ports(self) -> None:
        self.raft_port = 0 if self.readonly else free_port()
        # Where the mapped transports (migrationstack.py) serve gRPC for this node.
        self.grpc_port = 0 if self.readonly else free_port()
        self.ctl_port = free_port()

    @property
    def addr(self) -> str | None:
        return None if self.readonly else f"127.0.0.1:{self.raft_port}"

    def __repr__(self) -> str:
        return f"<{self.name} {self.addr or 'readonly'} ctl={self.ctl_port} alive={self.alive}>"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- control protocol --------------------------------------------------------------------

    def ctl(self, cmd: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        """Send one control command and return its reply; CtlError if there is none."""
        req = dict(params, cmd=cmd)
        try:
            with socket.create_connection(("127.0.0.1", self.ctl_port), timeout=2.0) as s:
                s.settimeout(timeout)
                s.sendall((json.dumps(req) + "\n").encode())
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        raise CtlError(f"{self.name}: connection closed during {cmd}")
                    buf += chunk
        except OSError as e:
            raise CtlError(f"{self.name}: {cmd}: {type(e).__name__}: {e}") from e
        reply: dict[str, Any] = json.loads(buf)
        return reply

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        reply = self.ctl("status", timeout=timeout)
        if not reply.get("ok"):
            raise CtlError(f"{self.name}: status: {reply}")
        st: dict[str, Any] = reply["status"]
        return st

    def try_status(self) -> dict[str, Any] | None:
        if not self.alive:
            return None
        try:
            return self.status()
        except CtlError:
            return None

    def get_all(self, prefix: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        reply = self.ctl("get_all", timeout=timeout, prefix=prefix)
        if not reply.get("ok"):
            raise CtlError(f"{self.name}: get_all: {reply}")
        data: dict[str, Any] = reply["data"]
        return data

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Cluster:
    def __init__(self, transport: str, workdir: Path | str) -> None:
        self.transport = transport
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[NodeProc] = []
        self._counter = 0
        self.log_level = os.environ.get("RAFTGRPC_NODE_LOG_LEVEL", "WARNING")
        """node.py's --log-level for nodes started from now on ($RAFTGRPC_NODE_LOG_LEVEL)."""

    # -- processes ---------------------------------------------------------------------------

    def new_node(self, name: str | None = None, **opts: Any) -> NodeProc:
        if name is None:
            name = f"n{self._counter}"
        self._counter += 1
        node = NodeProc(self, name, **opts)
        self.nodes.append(node)
        return node

    def _argv(self, node: NodeProc) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            NODE_MODULE,
            "--transport",
            node.transport or self.transport,
            "--ctl-port",
            str(node.ctl_port),
            "--partners",
            ",".join(node.partners),
            "--batch",
            str(node.batch),
            "--log-level",
            self.log_level,
        ]
        if node.readonly:
            argv.append("--readonly")
        else:
            argv += ["--self", str(node.addr)]
        if node.journal is not None:
            argv += ["--journal", str(node.journal)]
        if node.dump is not None:
            argv += ["--dump", str(node.dump)]
        if node.dynamic:
            argv.append("--dynamic")
        for key, value in node.conf.items():
            argv += ["--conf", f"{key}={json.dumps(value)}"]
        return argv

    def start(self, node: NodeProc, ready_timeout: float = 30.0) -> NodeProc:
        """Start the node's process and wait until its control port answers."""
        assert not node.alive, f"{node.name} is already running"
        node.generation += 1
        node.log_path = self.workdir / f"{node.name}.{node.generation}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", RAFTGRPC_ADDRESS_MAP=self.address_map())
        with open(node.log_path, "wb") as log:
            node.proc = subprocess.Popen(
                self._argv(node),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
                env=env,
            )
        deadline = time.monotonic() + ready_timeout
        while True:
            rc = node.proc.poll()
            if rc is not None:
                if rc == EXIT_PORT_IN_USE:
                    raise PortInUse(node.log_tail(5))
                raise AssertionError(
                    f"{node.name} exited with {rc} during start-up:\n{node.log_tail()}"
                )
            with contextlib.suppress(CtlError):
                if node.ctl("ping", timeout=2.0).get("ok"):
                    return node
            if time.monotonic() > deadline:
                self.kill(node)
                raise AssertionError(
                    f"{node.name} not ready in {ready_timeout}s:\n{node.log_tail()}"
                )
            time.sleep(0.02)

    def address_map(self) -> str:
        """Raft id -> gRPC address of every node, as JSON (migrationstack.py reads it)."""
        return json.dumps(
            {str(n.addr): f"127.0.0.1:{n.grpc_port}" for n in self.nodes if not n.readonly}
        )

    def start_fresh(self, node: NodeProc, attempts: int = 5) -> NodeProc:
        """Start a node nobody knows the address of yet: on a port collision, pick new ports."""
        for i in range(attempts):
            try:
                return self.start(node)
            except PortInUse:
                if i == attempts - 1:
                    raise
                node.realloc_ports()
        raise AssertionError("unreachable")

    def restart(self, node: NodeProc, timeout: float = 20.0) -> NodeProc:
        """Start a node again with the same addresses (retrying while a port is still held)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(node)
            except PortInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def start_cluster(
        self, n: int, attempts: int = 5, start: int | None = None, **opts: Any
    ) -> list[NodeProc]:
        """Create n nodes that know each other and start the first ``start`` (default: all)
        of them. Nodes are started in ascending address order, each once its predecessor
        listens, so that TCPTransport's outgoing connections (the higher address dials the
        lower one) do not hit a port that is not bound yet and wait out connectionRetryTime."""
        nodes = [self.new_node(**opts) for _ in range(n)]
        to_start = nodes if start is None else nodes[:start]
        for attempt in range(attempts):
            addrs = [str(x.addr) for x in nodes]
            for x in nodes:
                x.partners = [a for a in addrs if a != x.addr]
            try:
                for x in sorted(to_start, key=lambda y: str(y.addr)):
                    self.start(x)
                return nodes
            except PortInUse:
                for x in nodes:
                    self.kill(x)
                if attempt == attempts - 1:
                    raise
                for x in nodes:
                    x.realloc_ports()
        raise AssertionError("unreachable")

    def kill(self, node: NodeProc) -> None:
        """kill -9 and reap."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
        if node.proc is not None:
            node.proc.wait()

    def stop(self, node: NodeProc, timeout: float = 10.0) -> None:
        """Graceful quit, then kill -9 if it does not exit in time."""
        if node.alive:
            with contextlib.suppress(CtlError):
                node.ctl("quit", timeout=2.0)
            assert node.proc is not None
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(node)
        self.kill(node)

    @staticmethod
    def wipe(node: NodeProc) -> None:
        """Delete the node's journal and dump files (and their temporaries)."""
        for path in (node.journal, node.dump):
            if path is None:
                continue
            for p in path.parent.glob(path.name + "*"):
                p.unlink()

    def close(self, dump_logs: bool = False) -> None:
        for node in self.nodes:
            self.kill(node)
        leftover = [n.name for n in self.nodes if n.alive]
        if dump_logs:
            for node in self.nodes:
                print(f"----- {node.name} ({node.addr}) log, last lines -----")
                print(node.log_tail(60))
        assert not leftover, f"processes still alive: {leftover}"

    # -- observation ---------------------------------------------------------------------------

    def alive_nodes(self, include_readonly: bool = False) -> list[NodeProc]:
        return [n for n in self.nodes if n.alive and (include_readonly or not n.readonly)]

    def summary(self) -> str:
        rows = []
        for n in self.nodes:
            st = n.try_status()
            if st is None:
                rows.append(f"  {n.name} {n.addr}: {'no answer' if n.alive else 'down'}")
                continue
            rows.append(
                f"  {n.name} {n.addr}: state={st.get('state')} leader={st.get('leader')} "
                f"term={st.get('raft_term')} commit={st.get('commit_idx')} "
                f"applied={st.get('last_applied')} log_len={st.get('log_len')} "
                f"keys={st.get('keys')} quorum={st.get('has_quorum')} "
                f"partners={st.get('partners')}"
            )
            rows.append(f"    {self._pipeline(n, st)}")
        return "\n".join(rows)

    @staticmethod
    def _pipeline(node: NodeProc, st: dict[str, Any]) -> str:
        """What a leader believes of each follower (next/match index) and the transport's
        queues (GrpcTransport): enough to tell a follower that lags from one that is stuck."""
        followers = [k.removeprefix("next_node_idx_server_") for k in st]
        indexes = {
            f: (st[f"next_node_idx_server_{f}"], st.get(f"match_idx_server_{f}"))
            for f in followers
            if f"next_node_idx_server_{f}" in st
        }
        parts = [f"next/match={indexes}"] if indexes else []
        with contextlib.suppress(CtlError, KeyError, OSError):
            stats = node.ctl("transport_stats", timeout=2.0)["stats"]
            queues = node.ctl("outbox_stats", timeout=2.0)["peers"]
            if stats:
                parts.append(f"transport={stats}")
            if queues:
                parts.append(f"queues={queues}")
        return " ".join(parts) or "(nothing more)"

    def change_membership(self, op: str, addr: str, present: bool) -> None:
        """add_node/remove_node through the current leader until the leader's configuration
        has (present=True) or lacks (present=False) ``addr``. A denied request is retried:
        PySyncObj denies a change while the previous one or the leader's no-op is not
        committed yet."""
        last: list[Any] = []

        def done() -> bool:
            leader = self.leader(timeout=20.0)
            if (addr in leader.status()["partners"]) == present:
                return True
            reply = leader.ctl(op, timeout=15.0, node=addr, timeout_s=10.0)
            last[:] = [reply]
            return (addr in leader.status()["partners"]) == present

        self.wait_until(done, 60.0, f"{op} {addr}", interval=0.1, observe=lambda: last)

    def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float,
        what: str,
        interval: float = 0.02,
        observe: Callable[[], Any] | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that. A node that
        does not answer (CtlError) or a check that fails inside ``predicate`` is "not yet". On
        the deadline raise AssertionError with the last value/exception seen and the cluster
        state."""
        seen: list[Any] = [None]

        def attempt() -> T | None:
            try:
                value = predicate()
            except (CtlError, AssertionError, KeyError) as e:
                seen[0] = f"{type(e).__name__}: {e}"
                return None
            seen[0] = value
            return value

        def describe() -> str:
            observed = seen[0] if observe is None else {"observed": observe(), "last": seen[0]}
            return f"{what}\nlast observed: {observed!r}\ncluster:\n{self.summary()}"

        found = wait_until(attempt, timeout, describe, interval=interval)
        assert found is not None  # wait_until returns only a truthy value
        return found

    def leaders(self, nodes: Iterable[NodeProc] | None = None) -> list[NodeProc]:
        """Nodes that currently claim leadership."""
        nodes = self.alive_nodes() if nodes is None else list(nodes)
        out = []
        for n in nodes:
            st = n.try_status()
            if st is not None and st.get("is_leader"):
                out.append(n)
        return out

    def wait_leader(
        self, nodes: Iterable[NodeProc] | None = None, timeout: float = 30.0
    ) -> NodeProc:
        """Wait until every given node (default: every live voting node) names the same leader,
        that leader is one of them, says it is the leader and has a quorum."""
        group = self.alive_nodes() if nodes is None else list(nodes)
        by_addr = {n.addr: n for n in group}

        def agreed() -> NodeProc | None:
            statuses = {n.name: n.status(timeout=2.0) for n in group}
            named = {st.get("leader") for st in statuses.values()}
            if len(named) != 1:
                return None
            (addr,) = named
            if addr not in by_addr:
                return None
            leader = by_addr[addr]
            st = statuses[leader.name]
            if st.get("is_leader") and st.get("has_quorum"):
                return leader
            return None

        return self.wait_until(
            agreed, timeout, f"one agreed leader among {[n.name for n in group]}"
        )

    def leader(self, nodes: Iterable[NodeProc] | None = None, timeout: float = 30.0) -> NodeProc:
        """The node that claims leadership with a quorum (the highest term wins if, briefly,
        a deposed leader still claims it); unlike wait_leader, nodes that do not know the
        leader (a joining node, a read-only node) do not hold this up."""
        group = self.alive_nodes() if nodes is None else list(nodes)

        def claimed() -> NodeProc | None:
            best: tuple[int, NodeProc] | None = None
            for n in group:
                st = n.try_status()
                claims = bool(st and st.get("is_leader") and st.get("has_quorum"))
                if st and claims and (best is None or st["raft_term"] > best[0]):
                    best = (st["raft_term"], n)
            return None if best is None else best[1]

        return self.wait_until(claimed, timeout, "a node to claim leadership with a quorum")

    # -- writes --------------------------------------------------------------------------------

    def write(
        self, node: NodeProc, key: str, value: Any = None, timeout: float = 30.0, **extra: Any
    ) -> None:
        """A synchronous, idempotent set through ``node``; retried while the cluster settles."""
        deadline = time.monotonic() + timeout
        last: Any = None
        cap = float(extra.pop("timeout_s", 20.0))
        while time.monotonic() < deadline:
            per_try = max(1.0, min(cap, deadline - time.monotonic()))
            try:
                reply = node.ctl(
                    "set", timeout=per_try + 5.0, key=key, value=value, timeout_s=per_try, **extra
                )
            except CtlError as e:
                last = str(e)
            else:
                if reply.get("ok"):
                    return
                last = reply
                if reply.get("reason") not in RETRIABLE:
                    raise AssertionError(f"set {key!r} via {node.name} failed: {reply}")
            time.sleep(0.05)
        raise AssertionError(
            f"set {key!r} via {node.name} did not commit in {timeout}s; last: {last}\n"
            f"cluster:\n{self.summary()}"
        )

    def write_many(self, node: NodeProc, items: dict[str, Any], timeout: float = 60.0) -> None:
        """Many sets through ``node`` at once (async on the node side); failed ones retried."""
        deadline = time.monotonic() + timeout
        pending = dict(items)
        last: Any = None
        while pending and time.monotonic() < deadline:
            per_try = max(1.0, min(20.0, deadline - time.monotonic()))
            try:
                reply = node.ctl(
                    "set_many", timeout=per_try + 5.0, items=pending, timeout_s=per_try
                )
            except CtlError as e:
                last = str(e)
                time.sleep(0.05)
                continue
            failed: dict[str, str] = reply.get("failed", {})
            bad = {k: r for k, r in failed.items() if r not in RETRIABLE}
            if bad:
                raise AssertionError(f"set_many via {node.name}: non-retriable failures {bad}")
            pending = {k: pending[k] for k in failed}
            last = failed
            if pending:
                time.sleep(0.05)
        if pending:
            raise AssertionError(
                f"{len(pending)} of {len(items)} sets via {node.name} did not commit in "
                f"{timeout}s; last failures: {dict(list((last or {}).items())[:5])}\n"
                f"cluster:\n{self.summary()}"
            )

    def wait_converged(
        self,
        nodes: Iterable[NodeProc],
        expected: dict[str, Any],
        timeout: float = 30.0,
        prefix: str | None = None,
    ) -> None:
        """Wait until every node's store (or its keys under ``prefix``) equals ``expected``."""
        group = list(nodes)
        last: dict[str, Any] = {}

        def converged() -> bool:
            done = True
            for n in group:
                data = n.get_all(prefix=prefix)
                if data != expected:
                    done = False
                    missing = [k for k in expected if k not in data]
                    extra = [k for k in data if k not in expected]
                    differ = [k for k in expected if k in data and data[k] != expected[k]]
                    last[n.name] = (
                        f"{len(data)} keys, missing {len(missing)} {missing[:3]}, "
                        f"extra {len(extra)} {extra[:3]}, differing {len(differ)} {differ[:3]}"
                    )
                else:
                    last[n.name] = "equal"
            return done

        self.wait_until(
            converged,
            timeout,
            f"{[n.name for n in group]} to converge on {len(expected)} keys",
            observe=lambda: dict(last),
        )


class Writer:
    """A client that keeps writing, one set at a time, and records what was acknowledged.

    Each write is a fresh key (``w<N>`` = N), retried with the same key and value through
    another node until a node acknowledges it; ``acks`` holds (monotonic time, key, value)
    of every acknowledged write. Nodes named in ``avoid`` are not written through (a client
    behind a load balancer that drains a node before it restarts); the others are tried in
    turn, the leader (checked twice a second) or else the one that last succeeded first.
    ``outages()`` are the gaps between consecutive acknowledgements.
    """

    def __init__(self, cluster: Cluster, per_try_s: float = 2.0, prefix: str = "w") -> None:
        self.cluster = cluster
        self.per_try_s = per_try_s
        self.prefix = prefix
        self.acks: list[tuple[float, str, int]] = []
        self.failures = 0
        self.avoid: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._preferred: NodeProc | None = None
        self._next_leader_check = float("-inf")

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.per_try_s + 10.0)
        assert not self._thread.is_alive(), "the writer did not stop"

    def drain(self, node: NodeProc) -> None:
        """Stop writing through ``node`` (before it is stopped)."""
        with self._lock:
            self.avoid.add(node.name)

    def undrain(self, node: NodeProc) -> None:
        with self._lock:
            self.avoid.discard(node.name)

    def wait_acks(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` more writes than now were acknowledged."""
        target = len(self.acks) + count
        self.cluster.wait_until(
            lambda: len(self.acks) >= target, timeout, f"{count} more acknowledged writes"
        )

    def acknowledged(self) -> dict[str, int]:
        return {key: value for _, key, value in list(self.acks)}

    def outages(self, since: float = float("-inf"), until: float = float("inf")) -> list[float]:
        """Gaps between consecutive acknowledgements that ended in [since, until]."""
        times = [t for t, _, _ in list(self.acks)]
        return [b - a for a, b in itertools.pairwise(times) if since <= b <= until]

    def _candidates(self) -> list[NodeProc]:
        with self._lock:
            nodes = [
                n
                for n in self.cluster.nodes
                if n.alive and not n.readonly and n.name not in self.avoid
            ]
        now = time.monotonic()
        if now >= self._next_leader_check:
            # Writes through a follower wait for the next heartbeat to learn they committed:
            # write through the leader, so the gaps measure the cluster, not that wait.
            self._next_leader_check = now + 0.5
            for n in nodes:
                st = n.try_status()
                if st is not None and st.get("is_leader"):
                    self._preferred = n
                    break
        preferred = self._preferred
        if preferred in nodes:
            assert preferred is not None
            nodes.remove(preferred)
            nodes.insert(0, preferred)
        return nodes

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            key, value = f"{self.prefix}{seq}", seq
            while not self._stop.is_set():
                if self._write_once(key, value):
                    seq += 1
                    break
                time.sleep(0.01)

    def _write_once(self, key: str, value: int) -> bool:
        for node in self._candidates():
            try:
                reply = node.ctl(
                    "set",
                    timeout=self.per_try_s + 2.0,
                    key=key,
                    value=value,
                    timeout_s=self.per_try_s,
                )
            except CtlError:
                self.failures += 1
                continue
            if reply.get("ok"):
                self.acks.append((time.monotonic(), key, value))
                self._preferred = node
                return True
            self.failures += 1
        return False

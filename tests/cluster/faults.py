"""Fault injection on a live multi-process cluster, and a checker of what the clients were told.

A :class:`Load` runs a few clients against the cluster. Each client submits batches of
``record(op_id)`` commands (node.py's ``record_many``: the node appends each op id to a
replicated list, so an op applied twice is visible twice) and the :class:`Ledger` files every
op id under what the client learnt:

- *acked*: the node answered SUCCESS. It must end up on every live node exactly once.
- *failed*: a failure after which the command cannot be in the log (QUEUE_FULL,
  MISSING_LEADER, NOT_LEADER, DISCARDED, REQUEST_DENIED). It must be on no node.
- *unknown*: a timeout, a lost control connection, LEADER_CHANGED, UNKNOWN_OUTCOME. It may be
  applied, but at most once.

A client never retries an op id: the next attempt, through whichever node, carries new ids,
so any op id seen twice in a node's list was applied twice. Op ids nobody issued must not
appear at all. :func:`verify` waits until every live node holds the same list (and the same
key-value data) and then checks those rules on each node.

Every scenario draws its choices (victims, timings, batch sizes, routing) from one seed:
``RAFTGRPC_FAULT_SEED`` if set, else a fresh one that is printed (and printed again with the
command to repeat the run when the scenario fails). ``RAFTGRPC_FAULT_REPORT=path`` writes
the figures of every scenario run by the process as JSON to ``path``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raftgrpc.testing._processes.harness import Cluster, CtlError, NodeProc

SEED_ENV = "RAFTGRPC_FAULT_SEED"
REPORT_ENV = "RAFTGRPC_FAULT_REPORT"

# Failures after which the command is known not to be in any log (PySyncObj 0.3.17): the
# queue refused it, no leader was known, the node asked was not the leader, the entry at its
# log index was committed with another term, or the leader refused a membership change.
DEFINITE_FAILURES = {"QUEUE_FULL", "MISSING_LEADER", "NOT_LEADER", "DISCARDED", "REQUEST_DENIED"}


def scenario_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    if raw:
        return int(raw)
    return random.SystemRandom().randrange(1, 2**31)


# -- what the clients were told ----------------------------------------------------------------


class Ledger:
    """Every op id issued, and the outcome its client saw (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.issued: dict[str, str] = {}  # op id -> name of the node it was sent through
        self.outcome: dict[str, str] = {}  # op id -> "acked" | "failed:R" | "unknown:R"
        self.ack_times: list[float] = []  # monotonic time of every acked op (batch reply time)
        self.resolved_at: dict[str, float] = {}  # op id -> when its outcome was known
        self.tags: dict[str, set[str]] = {}  # tag -> op ids (e.g. sent to an isolated leader)

    def submit(self, ops: list[str], node: str, tags: set[str] | None = None) -> None:
        with self._lock:
            for op in ops:
                assert op not in self.issued, f"op id {op} issued twice"
                self.issued[op] = node
            for tag in tags or ():
                self.tags.setdefault(tag, set()).update(ops)

    def resolve(self, results: dict[str, str], at: float) -> int:
        """File each op's outcome ("SUCCESS" or a failure reason); returns how many acked."""
        acked = 0
        with self._lock:
            for op, reason in results.items():
                self.resolved_at[op] = at
                if reason == "SUCCESS":
                    self.outcome[op] = "acked"
                    self.ack_times.append(at)
                    acked += 1
                elif reason in DEFINITE_FAILURES:
                    self.outcome[op] = f"failed:{reason}"
                else:
                    self.outcome[op] = f"unknown:{reason}"
        return acked

    def ops_where(self, kind: str) -> set[str]:
        with self._lock:
            return {op for op, o in self.outcome.items() if o.split(":", 1)[0] == kind}

    def tagged(self, tag: str) -> set[str]:
        with self._lock:
            return set(self.tags.get(tag, ()))

    def unresolved(self, ops: set[str]) -> set[str]:
        with self._lock:
            return {op for op in ops if op not in self.outcome}

    @property
    def acked_count(self) -> int:
        with self._lock:
            return len(self.ack_times)

    def reasons(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(self.outcome.values()))

    def longest_gap(self, since: float = float("-inf"), until: float = float("inf")) -> float:
        """The longest time between two consecutive acknowledgements that ended in
        [since, until] (acks of one batch share a time)."""
        with self._lock:
            times = sorted(set(self.ack_times))
        return max(
            (b - a for a, b in itertools.pairwise(times) if since <= b <= until), default=0.0
        )


# -- the clients --------------------------------------------------------------------------------


class Load:
    """``clients`` threads writing ``record`` batches; see the module docstring.

    Client 0 writes through the leader (as a client that follows redirects would), the others
    through a node chosen at random (the seed decides), so that commands are also forwarded
    by followers. A node whose control port failed is avoided for ``suspect_s``; nodes in
    ``paused`` (SIGSTOPped on purpose) are skipped by the leader monitor only, not by the
    clients, which find out by timing out as real clients would.
    """

    def __init__(
        self,
        cluster: Cluster,
        ledger: Ledger,
        rng: random.Random,
        clients: int = 2,
        batch: tuple[int, int] = (1, 8),
        per_try_s: float = 2.0,
        suspect_s: float = 2.0,
        prefix: str = "op",
    ) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.batch = batch
        self.per_try_s = per_try_s
        self.suspect_s = suspect_s
        self.prefix = prefix
        self.paused: set[str] = set()
        self.avoid: set[str] = set()
        self.tags: dict[str, set[str]] = {}  # node name -> tags for ops sent through it
        self.leader_name: str | None = None
        self._suspect: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rngs = [random.Random(rng.randrange(2**32)) for _ in range(clients)]
        self._threads = [
            threading.Thread(target=self._client, args=(i,), name=f"client{i}", daemon=True)
            for i in range(clients)
        ]
        self._monitor = threading.Thread(target=self._watch_leader, name="monitor", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> Load:
        self._monitor.start()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(check=exc_type is None)  # do not hide the scenario's own failure

    def stop(self, check: bool = True) -> None:
        self._stop.set()
        for t in [*self._threads, self._monitor]:
            if t.is_alive():
                t.join(self.per_try_s + 15.0)
        if check:
            alive = [t.name for t in [*self._threads, self._monitor] if t.is_alive()]
            assert not alive, f"load threads did not stop: {alive}"
            assert not self.errors, f"load clients failed: {self.errors}"

    def wait_acks(self, count: int, timeout: float = 45.0, what: str = "") -> None:
        """Wait until ``count`` more ops than now were acknowledged."""
        target = self.ledger.acked_count + count
        self.cluster.wait_until(
            lambda: self.ledger.acked_count >= target,
            timeout,
            f"{count} more acknowledged writes {what}".strip(),
            interval=0.05,
            observe=lambda: {"acked": self.ledger.acked_count, "reasons": self.ledger.reasons()},
        )

    def quiesce(self, node: NodeProc, tag: str, timeout: float = 30.0) -> None:
        """Stop tagging and writing through ``node`` and wait until every op tagged ``tag``
        has its outcome (a partition heals only then: an op still in flight could otherwise
        succeed after the heal, and its client would rightly be told so)."""
        self.tag_node(node, None)
        with self._lock:
            self.avoid.add(node.name)
        self.cluster.wait_until(
            lambda: not self.ledger.unresolved(self.ledger.tagged(tag)),
            timeout,
            f"the outcome of every op sent through {node.name}",
            interval=0.05,
        )

    def resume(self, node: NodeProc) -> None:
        with self._lock:
            self.avoid.discard(node.name)

    def tag_node(self, node: NodeProc, tag: str | None) -> None:
        """Tag every op sent through ``node`` from now on (None: stop tagging)."""
        with self._lock:
            if tag is None:
                self.tags.pop(node.name, None)
            else:
                self.tags[node.name] = {tag}

    # -- internals ---------------------------------------------------------------------------

    def _usable(self) -> list[NodeProc]:
        now = time.monotonic()
        with self._lock:
            return [
                n
                for n in self.cluster.nodes
                if n.alive
                and not n.readonly
                and n.name not in self.avoid
                and self._suspect.get(n.name, 0.0) <= now
            ]

    def _watch_leader(self) -> None:
        while not self._stop.is_set():
            best: tuple[int, str] | None = None
            for n in list(self.cluster.nodes):
                if n.name in self.paused or not n.alive or n.readonly:
                    continue
                try:
                    st = n.status(timeout=1.0)
                except CtlError:
                    continue
                if st.get("is_leader") and (best is None or st["raft_term"] > best[0]):
                    best = (int(st["raft_term"]), n.name)
            self.leader_name = None if best is None else best[1]
            self._stop.wait(0.2)

    def _client(self, index: int) -> None:
        rng = self._rngs[index]
        seq = 0
        try:
            while not self._stop.is_set():
                nodes = self._usable()
                if not nodes:
                    self._stop.wait(0.05)
                    continue
                if index == 0:
                    node = next((n for n in nodes if n.name == self.leader_name), nodes[0])
                else:
                    node = rng.choice(nodes)
                size = rng.randint(*self.batch)
                ops = [f"{self.prefix}{index}-{seq + i}" for i in range(size)]
                seq += size
                with self._lock:
                    tags = set(self.tags.get(node.name, ()))
                self.ledger.submit(ops, node.name, tags)
                try:
                    reply = node.ctl(
                        "record_many",
                        timeout=self.per_try_s + 1.0,
                        ops=ops,
                        timeout_s=self.per_try_s,
                    )
                except CtlError:
                    self.ledger.resolve(dict.fromkeys(ops, "CTL_ERROR"), time.monotonic())
                    with self._lock:
                        self._suspect[node.name] = time.monotonic() + self.suspect_s
                    continue
                results: dict[str, str] = dict(reply.get("results") or {})
                for op in ops:
                    results.setdefault(op, "NO_REPLY")
                acked = self.ledger.resolve(results, time.monotonic())
                if acked < len(ops):
                    self._stop.wait(0.02)  # the cluster is settling: do not spin
        except Exception as e:  # a bug in the client itself must fail the test
            self.errors.append(f"client{index}: {type(e).__name__}: {e}")
            raise


class BulkLoad:
    """One client writing big random values (``set`` with a value generated by the node) one
    at a time through the leader, to make a queue towards a stopped peer grow quickly."""

    def __init__(self, load: Load, nbytes: int, seed: int, prefix: str = "bulk") -> None:
        self.load, self.nbytes, self.seed, self.prefix = load, nbytes, seed, prefix
        self.acked: dict[str, int] = {}  # key -> seed of its value
        self.bytes_acked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bulk", daemon=True)

    def __enter__(self) -> BulkLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30.0)
        assert not self._thread.is_alive(), "the bulk writer did not stop"

    def _run(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            name = self.load.leader_name
            node = next((n for n in self.load._usable() if n.name == name), None)
            if node is None:
                self._stop.wait(0.05)
                continue
            key, seed = f"{self.prefix}{i}", self.seed + i
            gen = {"nbytes": self.nbytes, "seed": seed, "kind": "bytes"}
            try:
                reply = node.ctl("set", timeout=8.0, key=key, gen=gen, timeout_s=5.0)
            except CtlError:
                continue
            if reply.get("ok"):
                self.acked[key] = seed
                self.bytes_acked += self.nbytes


# -- the checker --------------------------------------------------------------------------------


def fetch_ops(node: NodeProc) -> tuple[list[str], int]:
    reply = node.ctl("ops", timeout=20.0)
    if not reply.get("ok"):
        raise CtlError(f"{node.name}: ops: {reply}")
    return list(reply["ops"]), int(reply["applied"])


def verify(
    cluster: Cluster, ledger: Ledger, nodes: list[NodeProc], timeout: float = 60.0
) -> dict[str, int]:
    """Wait until ``nodes`` agree, then check every op's count on each of them.

    Agreement: identical op lists (same ops, same order), every acked op present, the same
    key-value data, the same last applied index. Then, on each node: every acked op exactly
    once, every definitely failed op absent, every unknown op at most once, no op nobody
    issued. Returns, per node, how many ops it holds.
    """
    acked = ledger.ops_where("acked")
    observed: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}

    def agreed() -> bool:
        lists.clear()
        applied: dict[str, int] = {}
        for n in nodes:
            lists[n.name], applied[n.name] = fetch_ops(n)
        counts = {name: Counter(ops) for name, ops in lists.items()}
        for name, c in counts.items():
            missing = [op for op in acked if op not in c]
            observed[name] = {"ops": len(lists[name]), "applied": applied[name]}
            if missing:
                observed[name]["missing_acked"] = f"{len(missing)} e.g. {sorted(missing)[:3]}"
        first = lists[nodes[0].name]
        if any(lists[n.name] != first for n in nodes) or len(set(applied.values())) != 1:
            return False
        if any("missing_acked" in o for o in observed.values()):
            return False
        data = [n.get_all() for n in nodes]
        if any(d != data[0] for d in data):
            observed["data"] = {n.name: len(d) for n, d in zip(nodes, data, strict=True)}
            return False
        return True

    cluster.wait_until(
        agreed,
        timeout,
        f"{[n.name for n in nodes]} to agree on the recorded ops and the data",
        interval=0.2,
        observe=lambda: dict(observed),
    )
    failed = ledger.ops_where("failed")
    issued = set(ledger.issued)
    checked: dict[str, int] = {}
    for name, ops in lists.items():
        c = Counter(ops)
        problems = {
            "applied twice or more": sorted(op for op, k in c.items() if k > 1),
            "acked but absent": sorted(op for op in acked if c[op] == 0),
            "failed definitely but applied": sorted(
                f"{op} ({ledger.outcome[op]})" for op in failed if c[op]
            ),
            "never issued": sorted(op for op in c if op not in issued),
        }
        problems = {k: v for k, v in problems.items() if v}
        assert not problems, f"{name}: exactly-once violated: " + "; ".join(
            f"{k}: {len(v)} e.g. {v[:5]}" for k, v in problems.items()
        )
        checked[name] = len(ops)
    return checked


def unknown_applied(ledger: Ledger, ops: list[str]) -> int:
    present = set(ops)
    return sum(1 for op in ledger.ops_where("unknown") if op in present)


# -- scenario bookkeeping -----------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    transport: str
    seed: int
    duration_s: float = 0.0
    acked: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_applied: int = 0
    checked: dict[str, int] = field(default_factory=dict)
    longest_gap_s: float = 0.0
    recovery_s: float = 0.0
    """The longest gap between acknowledged writes that ended after the first fault."""
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        checked = " ".join(f"{k}={v}" for k, v in self.checked.items())
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.extra.items())
        return (
            f"[fault] {self.scenario} transport={self.transport} seed={self.seed} "
            f"acked={self.acked} failed={self.failed} unknown={self.unknown} "
            f"(applied {self.unknown_applied}) checked[{checked}] "
            f"recovery={self.recovery_s:.2f}s longest_gap={self.longest_gap_s:.2f}s "
            f"took={self.duration_s:.1f}s {extra}".rstrip()
        )


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


RESULTS: list[Result] = []
FAILURES: list[str] = []  # "scenario/transport seed=N" of every failed run


def write_report() -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    doc = {
        "results": [asdict(r) for r in RESULTS],
        "failures": list(FAILURES),
        "summary": summary(),
        "table": markdown_table([asdict(r) for r in RESULTS]),
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def summary() -> str:
    failed = f", {len(FAILURES)} FAILED: {'; '.join(FAILURES)}" if FAILURES else ""
    if not RESULTS:
        return f"[fault] summary: no scenario passed{failed}"
    acked = sum(r.acked for r in RESULTS)
    worst = max(RESULTS, key=lambda r: r.recovery_s)
    return (
        f"[fault] summary: {len(RESULTS)} scenarios passed{failed}; {acked} acknowledged "
        f"writes checked exactly once on every live node; worst recovery "
        f"{worst.recovery_s:.2f}s ({worst.scenario}/{worst.transport})"
    )


def markdown_table(results: list[dict[str, Any]]) -> str:
    """A README table of report results (``python tests/cluster/faults.py report.json``)."""
    rows = [
        "| scenario | transport | seed | acked | unknown (applied) | checked per node "
        "| recovery s | took s | details |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        checked = ", ".join(f"{k} {v}" for k, v in r["checked"].items())
        rows.append(
            f"| {r['scenario']} | {r['transport']} | {r['seed']} | {r['acked']} "
            f"| {r['unknown']} ({r['unknown_applied']}) | {checked} "
            f"| {r['recovery_s']:.2f} | {r['duration_s']:.1f} "
            f"| {', '.join(f'{k} {_fmt(v)}' for k, v in r['extra'].items())} |"
        )
    return "\n".join(rows)


class FaultCluster(Cluster):
    """A Cluster whose GrpcTransport nodes may get TransportConfig fields (node.py
    --grpc-config), e.g. a small in-memory send queue."""

    def __init__(self, transport: str, workdir: Path | str) -> None:
        super().__init__(transport, workdir)
        self.grpc_config: dict[str, Any] = {}

    def _argv(self, node: NodeProc) -> list[str]:
        argv = super()._argv(node)
        if (node.transport or self.transport) == "grpc":
            for key, value in self.grpc_config.items():
                argv += ["--grpc-config", f"{key}={json.dumps(value)}"]
        return argv


class Scenario:
    """One run: its cluster, seed, ledger, load and figures."""

    def __init__(self, name: str, transport: str, workdir: Path, seed: int, long: bool) -> None:
        self.name = name
        self.seed = seed
        self.long = long
        self.rng = random.Random(seed)
        self.cluster = FaultCluster(transport, workdir)
        self.ledger = Ledger()
        self.result = Result(name, transport, seed)
        self.fault_at: float | None = None
        self.started = time.monotonic()
        self._stopped: set[int] = set()

    @property
    def transport(self) -> str:
        return self.cluster.transport

    def load(self, **kw: Any) -> Load:
        return Load(self.cluster, self.ledger, self.rng, **kw)

    def fault(self, what: str) -> float:
        """Mark the injection of a fault (the first one starts the recovery window)."""
        now = time.monotonic()
        if self.fault_at is None:
            self.fault_at = now
        print(f"  +{now - self.started:6.2f}s {what}", flush=True)
        return now

    def note(self, what: str) -> None:
        print(f"  +{time.monotonic() - self.started:6.2f}s {what}", flush=True)

    def sigstop(self, node: NodeProc) -> None:
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGSTOP)
        self._stopped.add(node.proc.pid)

    def sigcont(self, node: NodeProc) -> None:
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGCONT)
        self._stopped.discard(node.proc.pid)

    def finish(self, nodes: list[NodeProc], timeout: float = 60.0) -> Result:
        """Verify (the load must have stopped) and fill in the figures."""
        checked = verify(self.cluster, self.ledger, nodes, timeout)
        ops, _ = fetch_ops(nodes[0])
        r = self.result
        r.checked = checked
        r.acked = len(self.ledger.ops_where("acked"))
        r.failed = len(self.ledger.ops_where("failed"))
        r.unknown = len(self.ledger.ops_where("unknown"))
        r.unknown_applied = unknown_applied(self.ledger, ops)
        r.longest_gap_s = self.ledger.longest_gap()
        if self.fault_at is not None:
            r.recovery_s = self.ledger.longest_gap(since=self.fault_at)
        r.duration_s = time.monotonic() - self.started
        return r

    def close(self, failed: bool) -> None:
        for pid in list(self._stopped):  # a SIGSTOPped process ignores nothing but SIGKILL,
            with contextlib.suppress(ProcessLookupError):  # still: let it run to die cleanly
                os.kill(pid, signal.SIGCONT)
        self.cluster.close(dump_logs=failed)


@contextlib.contextmanager
def scenario(
    name: str, transport: str, workdir: Path, nodeid: str, long: bool = False, slow: bool = False
) -> Iterator[Scenario]:
    """Run one scenario: print its seed first, the command that repeats it on failure, its
    figures on success; always kill every process it started."""
    seed = scenario_seed()
    print(f"\n[fault] {name} transport={transport} seed={seed}", flush=True)
    s = Scenario(name, transport, workdir, seed, long)
    failed = True
    try:
        yield s
        failed = False
    except BaseException:
        FAILURES.append(f"{name}/{transport} seed={seed}")
        flags = " -m slow" if slow or long else ""
        write_report()
        print(
            f"[fault] FAILED {name} transport={transport} seed={seed}; repeat with:\n"
            f"  {SEED_ENV}={seed} python -m pytest '{nodeid}' -q -s{flags}",
            flush=True,
        )
        raise
    finally:
        s.close(failed)
    RESULTS.append(s.result)
    print(s.result.line(), flush=True)
    write_report()


# -- small helpers shared by the scenarios --------------------------------------------------------


def others(nodes: list[NodeProc], *excluded: NodeProc) -> list[NodeProc]:
    return [n for n in nodes if n not in excluded]


def block(nodes: list[NodeProc], peers: list[NodeProc]) -> None:
    """node.py's block_peers on each of ``nodes`` (an empty ``peers`` heals)."""
    for n in nodes:
        reply = n.ctl("block_peers", peers=[str(p.addr) for p in peers])
        assert reply.get("ok"), reply


def wait_new_leader(
    cluster: Cluster, group: list[NodeProc], old: NodeProc | None, timeout: float = 45.0
) -> NodeProc:
    """Wait until ``group`` agrees on a leader other than ``old``."""

    def agreed() -> NodeProc | None:
        leader = cluster.wait_leader(group, timeout=5.0)
        return leader if leader is not old else None

    return cluster.wait_until(agreed, timeout, f"a new leader among {[n.name for n in group]}")


def wait_caught_up(
    cluster: Cluster, nodes: list[NodeProc], group: list[NodeProc], timeout: float = 45.0
) -> None:
    """Wait until each of ``nodes`` applied what the leader of ``group`` had committed when
    this started (writes go on: a moving target would never be reached)."""
    target = cluster.wait_until(
        lambda: cluster.leader(group, timeout=10.0).status()["commit_idx"],
        timeout,
        "the leader's commit index",
    )
    cluster.wait_until(
        lambda: all(n.status()["last_applied"] >= target for n in nodes),
        timeout,
        f"{[n.name for n in nodes]} to apply up to index {target}",
        interval=0.05,
    )


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/cluster/faults.py REPORT.json  (a markdown table)")
    print(markdown_table(json.loads(Path(sys.argv[1]).read_text())["results"]))

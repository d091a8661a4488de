"""A SyncObj cluster in this process: a replicated key-value store on any transport.

:class:`LocalCluster` starts :class:`KV` nodes (SyncObj's own tick threads, or a ticker
thread per node when ``autoTick`` is off), runs code on a node's tick thread when SyncObj's
lock-free state requires it, and destroys every node it started, joining its tick thread, so
that threads, descriptors and ports are released before the next test. The functions beside
it read nodes' status and wait, with a deadline, for what a test expects of them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from pysyncobj import SyncObj, SyncObjConf, SyncObjException, replicated

from raftgrpc._pysyncobj import FOLLOWER, LEADER, destroy_here, tick_thread_of
from raftgrpc.testing._waiting import wait_until

__all__ = [
    "BASE_CONF",
    "COMMIT_S",
    "ELECTION_S",
    "KV",
    "STOP_S",
    "LocalCluster",
    "agreed_leader",
    "describe_nodes",
    "partner_status",
    "put",
    "status",
    "wait_all_connected",
    "wait_commit_indexes_agree",
    "wait_leader",
    "wait_replicated",
]

T = TypeVar("T")

BASE_CONF: dict[str, Any] = {
    "raftMinTimeout": 0.3,
    "raftMaxTimeout": 0.6,
    "appendEntriesPeriod": 0.05,
    "connectionRetryTime": 0.3,
    "connectionTimeout": 3.5,
}
"""SyncObjConf of test nodes: short Raft timeouts keep elections fast (appendEntriesPeriod * 3
< raftMinTimeout, as SyncObjConf validates); connectionRetryTime is TCPTransport's flat
redial delay (5 s by default) and the in-memory transport's."""

ELECTION_S = 10.0
"""Bound for electing a leader, or re-establishing one."""
COMMIT_S = 10.0
"""Bound for a write to commit and reach every node."""
STOP_S = 10.0
"""Bound for a destroyed node's tick thread to end."""


class KV(SyncObj):  # type: ignore[misc]  # pysyncobj is untyped
    """A replicated key-value store: the smallest useful SyncObj.

    ``data`` is the replicated (and dumped) state: SyncObj dumps the attributes set after
    its ``__init__``.
    """

    def __init__(
        self,
        self_address: str | None,
        partners: Iterable[str],
        transport: Any = None,
        conf: SyncObjConf | None = None,
    ) -> None:
        kwargs = {} if transport is None else {"transportClass": transport}
        super().__init__(self_address, list(partners), conf, **kwargs)
        self.data: dict[str, Any] = {}

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: Any) -> Any:
        self.data[key] = value
        return value

    def snapshot(self) -> dict[str, Any]:
        """A copy of ``data`` (one C call: atomic under the GIL, whatever the tick thread does)."""
        return dict(self.data)

    @property
    def name(self) -> str:
        """The node's id, or ``<read-only>``."""
        return str(self.selfNode.id) if self.selfNode is not None else "<read-only>"


# -- reading nodes -----------------------------------------------------------------------------


def status(node: KV) -> dict[str, Any]:
    """``node.getStatus()``, read from this thread (retried if the tick thread races it)."""
    for _ in range(100):
        try:
            return node.getStatus()  # type: ignore[no-any-return]
        except RuntimeError:  # "changed size during iteration"
            continue
    return node.getStatus()  # type: ignore[no-any-return]


def _node_state(node: KV) -> str:
    try:
        st = status(node)
    except Exception as exc:
        return f"{node.name}: <status failed: {exc!r}>"
    leader = st["leader"].id if st["leader"] is not None else None
    partners = {
        k.removeprefix("partner_node_status_server_"): v
        for k, v in st.items()
        if k.startswith("partner_node_status_server_")
    }
    return (
        f"{node.name}: state={st['state']} leader={leader} term={st['raft_term']} "
        f"commit={st['commit_idx']} applied={st['last_applied']} partners={partners} "
        f"readonly={st['readonly_nodes_count']} data={node.snapshot()}"
    )


def describe_nodes(nodes: Iterable[KV]) -> Callable[[], str]:
    """A description of ``nodes``' states, made when called (for a failed wait)."""
    group = list(nodes)
    return lambda: "\n  " + "\n  ".join(_node_state(n) for n in group)


def agreed_leader(nodes: list[KV]) -> KV | None:
    """The node every node of ``nodes`` names as leader and that is in state LEADER."""
    statuses = [status(n) for n in nodes if n.selfNode is not None]
    ids = {st["leader"].id if st["leader"] is not None else None for st in statuses}
    if len(ids) != 1 or None in ids:
        return None
    (leader_id,) = ids
    leader = next((n for n in nodes if n.selfNode is not None and n.name == leader_id), None)
    if leader is None or status(leader)["state"] != LEADER:
        return None
    return leader


def partner_status(observer: KV, peer_address: str) -> int | None:
    """What ``observer`` reports of its link to ``peer_address`` (2: connected, 0: not)."""
    value = status(observer).get("partner_node_status_server_" + peer_address)
    return value if value is None else int(value)


# -- waiting on nodes --------------------------------------------------------------------------


def _wait(pred: Callable[[], T], timeout: float, describe: Callable[[], str]) -> T:
    # Status reads race the tick thread (a set changing size under us): not yet, not failed.
    return wait_until(pred, timeout, describe, interval=0.02, retry_on=(Exception,))


def wait_leader(nodes: list[KV], timeout: float = ELECTION_S) -> KV:
    """Wait until ``nodes`` agree on a leader; the others must be followers."""
    leader = _wait(lambda: agreed_leader(nodes), timeout, describe_nodes(nodes))
    assert leader is not None  # wait_until returns only a truthy value
    others = [n for n in nodes if n is not leader and n.selfNode is not None]
    assert all(status(n)["state"] == FOLLOWER for n in others), describe_nodes(nodes)()
    return leader


def put(node: KV, key: str, value: Any, timeout: float = COMMIT_S) -> None:
    """Commit ``key = value`` through ``node``; retried (it is idempotent) until it commits."""
    deadline = time.monotonic() + timeout
    errors: list[Any] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"put({key!r}) through {node.name} did not commit in {timeout}s; "
                f"errors: {errors[-5:]}{describe_nodes([node])()}"
            )
        try:
            assert node.put(key, value, sync=True, timeout=min(2.0, remaining)) == value
            return
        except SyncObjException as exc:  # NOT_LEADER, LEADER_CHANGED, Timeout, ...
            errors.append(exc.errorCode)
            time.sleep(0.05)  # the back-off of a client retrying


def wait_replicated(nodes: list[KV], expected: dict[str, Any], timeout: float = COMMIT_S) -> None:
    """Wait until every node's store equals ``expected``."""
    _wait(
        lambda: all(n.snapshot() == expected for n in nodes),
        timeout,
        lambda: f"expected {expected} on every node:{describe_nodes(nodes)()}",
    )


def wait_all_connected(nodes: list[KV], timeout: float = ELECTION_S) -> None:
    """Wait until every voting node reports every other one connected."""
    members = [n for n in nodes if n.selfNode is not None]

    def connected() -> bool:
        return all(partner_status(a, b.name) == 2 for a in members for b in members if a is not b)

    _wait(connected, timeout, describe_nodes(nodes))


def wait_commit_indexes_agree(nodes: list[KV], timeout: float = COMMIT_S) -> None:
    """Wait until every node has committed and applied the same index."""

    def agree() -> bool:
        sts = [status(n) for n in nodes]
        return len({(s["commit_idx"], s["last_applied"]) for s in sts}) == 1 and all(
            s["commit_idx"] == s["last_applied"] for s in sts
        )

    _wait(agree, timeout, describe_nodes(nodes))


# -- the cluster -------------------------------------------------------------------------------


class _TickRunner:
    """Runs callables on a node's tick thread (SyncObj's state has no locks)."""

    def __init__(self) -> None:
        self.pending: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()

    def __call__(self) -> None:  # an on-tick callback
        while True:
            try:
                fn, future = self.pending.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class _Ticker(threading.Thread):
    """Drives a node whose autoTick is off: doTick(0.01) in a loop; destroys it on stop."""

    def __init__(self, node: KV) -> None:
        super().__init__(name=f"contract-ticker-{node.name}", daemon=True)
        self.node = node
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.node.doTick(0.01)
                except Exception as exc:
                    self.errors.append(exc)
        finally:
            self.node.destroy()  # on the thread that ticks it, as the state requires


class LocalCluster:
    """The :class:`KV` nodes of one test, on one ``transportClass``; :meth:`close` destroys
    every one of them.

    >>> from raftgrpc.testing import MemoryNetwork
    >>> cluster = LocalCluster(MemoryNetwork().transport_class)
    >>> nodes = cluster.start_all(["a:1", "b:1", "c:1"])
    >>> put(wait_leader(nodes), "k", 1)
    >>> cluster.close()
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        """The ``transportClass`` every node gets."""
        self.nodes: list[KV] = []
        """Every node started and not yet stopped."""
        self.tick_errors: list[BaseException] = []
        """What ``doTick`` raised on the ticker threads of manually ticked nodes."""
        self._runners: dict[int, _TickRunner] = {}
        self._tickers: dict[int, _Ticker] = {}

    def start(self, address: str | None, partners: Iterable[str], **conf: Any) -> KV:
        """Start a node (``address`` None: read-only) with :data:`BASE_CONF` updated by
        ``conf``; on the calling thread, which must outlive it (SyncObj's autoTick)."""
        sync_conf = SyncObjConf(**{**BASE_CONF, **conf})
        node = KV(address, [p for p in partners if p != address], self.transport, sync_conf)
        self.nodes.append(node)
        runner = _TickRunner()
        self._runners[id(node)] = runner
        node.addOnTickCallback(runner)
        if not sync_conf.autoTick:
            ticker = _Ticker(node)
            self._tickers[id(node)] = ticker
            ticker.start()
        return node

    def start_all(self, addrs: list[str], **conf: Any) -> list[KV]:
        """A node on each of ``addrs``, all partners of each other."""
        return [self.start(a, addrs, **conf) for a in addrs]

    def on_tick(self, node: KV, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on ``node``'s tick thread and return its result."""
        future: Future[T] = Future()
        self._runners[id(node)].pending.put((fn, future))
        return future.result(timeout)

    def stop(self, *nodes: KV) -> None:
        """Destroy ``nodes`` (in parallel) and wait until their tick threads ended."""
        threads: list[tuple[KV, threading.Thread]] = []
        for node in nodes:
            if node not in self.nodes:
                continue
            self.nodes.remove(node)
            ticker = self._tickers.pop(id(node), None)
            if ticker is not None:
                ticker.stopping.set()
                threads.append((node, ticker))
                continue
            thread = tick_thread_of(node)
            assert thread is not None  # autoTick: manually ticked nodes have a ticker
            if not thread.is_alive():
                # The tick thread gave up (a bind failure) without destroying the node, and
                # destroy() only asks that thread to do it: release the transport here.
                destroy_here(node)
                continue
            node.destroy()
            threads.append((node, thread))
        deadline = time.monotonic() + STOP_S
        stuck = []
        for node, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(node.name)
            if isinstance(thread, _Ticker):
                self.tick_errors += thread.errors
        for node in nodes:
            self._runners.pop(id(node), None)
        assert not stuck, f"tick threads of {stuck} still alive {STOP_S}s after destroy()"

    def close(self) -> None:
        """Stop every node still running."""
        self.stop(*list(self.nodes))

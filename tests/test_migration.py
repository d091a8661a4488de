"""MigrationTransport (raftgrpc._transport.migration): the wiring of its router.

Which path carries a peer, the holds and the fallback decision are the router's, tested with
an injected clock in tests/test_routing.py. Part A here drives the shell deterministically:
two stub inner transports whose callbacks the test fires itself, hosted by a stand-in for
SyncObj that records what it is told (with the time, and whether it happened inside a tick).
Part B runs real in-process SyncObj clusters mixing TCPTransport, GrpcTransport and
MigrationTransport nodes.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from pysyncobj import SyncObj, SyncObjConf, SyncObjException
from pysyncobj.node import Node, TCPNode
from pysyncobj.transport import Transport
from pysyncobj.utility import TcpUtility

from raftgrpc import (
    AddressMap,
    ConfigError,
    GrpcTransport,
    HasStats,
    HostsServices,
    MigrationConfig,
    MigrationTransport,
    PeerUnreachable,
    ReportsPeerErrors,
    ShutsDownGracefully,
    TransportBuilder,
    TransportConfig,
    UnreachableKind,
)
from raftgrpc._ops.admin_client import GrpcUtility
from raftgrpc._transport.migration import PRIMARY, SECONDARY, fallback_unless_refused
from tests import helpers
from tests.helpers import BEAT, free_ports, thread_ids, wait_until

pytestmark = pytest.mark.timeout(60)

ME, PEER = "127.0.0.1:7001", "127.0.0.1:7002"
FAST = MigrationConfig(primary_grace_s=0.05, switch_hold_s=0.05, upgrade_after_s=0.1)
# No grace: the secondary may carry a peer as soon as it is up, so the fallback decision is
# taken inside the test's own calls, without waiting.
NO_GRACE = MigrationConfig(primary_grace_s=0, switch_hold_s=0.05, upgrade_after_s=0.1)
CONNECTED, DISCONNECTED = ("connected", PEER), ("disconnected", PEER)


def chunk(data: bytes, first: bool, last: bool) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "serialized": (data, first, last),
    }


def assert_alternating(events: list[tuple[str, str]], node_id: str) -> None:
    """Never two connects (or two disconnects) of a member without the other in between,
    and the first one is a connect."""
    kinds = [kind for kind, nid in events if nid == node_id]
    for i, kind in enumerate(kinds):
        assert kind == ("connected" if i % 2 == 0 else "disconnected"), kinds


# -- Part A: the wiring, over stub transports -------------------------------------------------


class Stub(Transport):  # type: ignore[misc]  # pysyncobj is untyped
    """An inner transport the test drives: it records what it is asked to do, and the test
    fires its callbacks (``up``, ``down``, ``receive``, ``ro_up``, ``ro_down``). It reports
    peer errors and tracks resends, as GrpcTransport does."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any, name: str) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self.name = name
        self.sent: list[tuple[Any, dict[str, Any]]] = []
        self.result = True
        self.on_send: Callable[[Any, dict[str, Any]], None] | None = None
        self.added: list[Any] = list(otherNodes)
        self.dropped: list[Any] = []
        self.destroyed = 0
        self.error: PeerUnreachable | None = None
        self.readonly: set[Any] = set()
        self.forgotten: list[Any] = []
        self.replies: list[tuple[Any, bool, bool]] = []

    # the Transport contract
    def send(self, node: Any, message: Any) -> bool:
        self.sent.append((node, message))
        if self.on_send is not None:
            self.on_send(node, message)
        return self.result

    def addNode(self, node: Any) -> None:
        self.added.append(node)

    def dropNode(self, node: Any) -> None:
        self.dropped.append(node)
        if node in self.readonly:  # as GrpcTransport does: the follower is reported gone
            self.ro_down(node)

    def destroy(self) -> None:
        self.destroyed += 1

    def peer_error(self, node: Any) -> PeerUnreachable | None:
        return self.error

    def forget_sent(self, node: Any) -> None:  # as GrpcTransport's (raftgrpc._protocol.resend)
        self.forgotten.append(node)

    def heard_reply(self, node: Any, message: dict[str, Any]) -> None:
        self.replies.append((node, message["success"], message["reset"]))

    # what the test fires
    def up(self, node: Any) -> None:
        self._onNodeConnected(node)

    def down(self, node: Any) -> None:
        self._onNodeDisconnected(node)

    def receive(self, node: Any, message: Any) -> None:
        self._onMessageReceived(node, message)

    def ro_up(self, node: Any) -> None:
        self.readonly.add(node)
        self._onReadonlyNodeConnected(node)

    def ro_down(self, node: Any) -> None:
        self.readonly.discard(node)
        self._onReadonlyNodeDisconnected(node)


class CapableStub(Stub):
    """A stub with the rest of GrpcTransport's optional abilities (raftgrpc._abilities)."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any, name: str) -> None:
        super().__init__(syncObj, selfNode, otherNodes, name)
        self.redialled: list[Any] = []
        self.shutting_down = 0
        self.services = ("health", "admin")

    def redial(self, node: Any) -> None:
        self.redialled.append(node)

    def begin_shutdown(self) -> None:
        self.shutting_down += 1

    def stats(self) -> dict[str, int]:
        return {"connected_peers": 1}


@dataclass
class Event:
    kind: str
    node_id: str
    at: float
    in_tick: bool


class MiniHost:
    """The parts of SyncObj a MigrationTransport uses; records its callbacks."""

    def __init__(self, conf: SyncObjConf) -> None:
        self.conf = conf
        self.tick_callbacks: list[Any] = []
        self.log: list[Event] = []
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.in_tick = False

    def addOnTickCallback(self, cb: Any) -> None:
        self.tick_callbacks.append(cb)

    def removeOnTickCallback(self, cb: Any) -> None:
        self.tick_callbacks.remove(cb)

    @property
    def events(self) -> list[tuple[str, str]]:
        return [(e.kind, e.node_id) for e in self.log]

    def attach(self, transport: Any) -> None:
        for kind, setter in (
            ("connected", transport.setOnNodeConnectedCallback),
            ("disconnected", transport.setOnNodeDisconnectedCallback),
            ("ro-connected", transport.setOnReadonlyNodeConnectedCallback),
            ("ro-disconnected", transport.setOnReadonlyNodeDisconnectedCallback),
        ):
            setter(functools.partial(self._record, kind))
        transport.setOnMessageReceivedCallback(
            lambda node, message: self.messages.append((node.id, message))
        )

    def _record(self, kind: str, node: Any) -> None:
        self.log.append(Event(kind, node.id, time.monotonic(), self.in_tick))

    def tick(self) -> None:
        self.in_tick = True
        try:
            for cb in list(self.tick_callbacks):
                cb()
        finally:
            self.in_tick = False


class Rig:
    """A MigrationTransport over two stubs, for member ME with one peer, PEER."""

    def __init__(
        self,
        config: MigrationConfig = FAST,
        should_fallback: Callable[[PeerUnreachable], bool] = fallback_unless_refused,
        append_period: float = 0.01,
        read_only: bool = False,
        primary: type[Stub] = Stub,
    ) -> None:
        self.host = MiniHost(SyncObjConf(appendEntriesPeriod=append_period))
        made: dict[str, Stub] = {}

        def maker(name: str, kind: type[Stub]) -> Callable[..., Stub]:
            def make(syncObj: Any, selfNode: Any, otherNodes: Any) -> Stub:
                made[name] = kind(syncObj, selfNode, otherNodes, name)
                return made[name]

            return make

        factory = MigrationTransport.factory(
            primary=maker(PRIMARY, primary),
            secondary=maker(SECONDARY, Stub),
            should_fallback=should_fallback,
            config=config,
        )
        me = None if read_only else TCPNode(ME)
        self.m: MigrationTransport = factory(self.host, me, [TCPNode(PEER)])
        self.host.attach(self.m)
        self.p, self.s = made[PRIMARY], made[SECONDARY]
        self.node = TCPNode(PEER)
        self.config = config

    @property
    def events(self) -> list[tuple[str, str]]:
        return self.host.events

    @property
    def log(self) -> list[Event]:
        return self.host.log

    @property
    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return self.host.messages

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.host.tick()

    def tick_until(self, predicate: Callable[[], Any], what: str, timeout: float = 10) -> None:
        def step() -> Any:
            self.tick()
            return predicate()

        wait_until(step, timeout, what)


@pytest.fixture
def rigs() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.m.destroy()


@pytest.mark.parametrize("primary_first", [True, False])
def test_both_paths_up_at_start_connect_once_on_the_primary(
    rigs: Callable[..., Rig], primary_first: bool
) -> None:
    r = rigs()
    order = [r.p, r.s] if primary_first else [r.s, r.p]
    order[0].up(r.node)
    order[1].up(r.node)
    # A peer never connected before is taken at once, inside the primary's callback.
    assert r.events == [CONNECTED]
    assert r.log[0].in_tick is False
    r.tick(5)
    assert r.events == [CONNECTED]
    assert r.m.paths() == {PEER: PRIMARY}
    assert r.p.forgotten == [r.node] and r.s.forgotten == []  # a path taken starts afresh
    assert r.m.send(r.node, BEAT) is True
    assert r.m.send(r.node, {"type": "response_vote", "term": 1}) is True
    assert [m["type"] for _, m in r.p.sent] == ["append_entries", "response_vote"]
    assert all(n == r.node for n, _ in r.p.sent)
    assert r.s.sent == []
    assert r.m.switches == 0


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (None, logging.WARNING),  # the primary says nothing: worth a warning
        (
            PeerUnreachable(PEER, "Connection refused", kind=UnreachableKind.CONNECTION_REFUSED),
            logging.INFO,  # the peer does not serve the primary yet: the normal case
        ),
    ],
)
def test_losing_the_primary_moves_the_peer_to_the_secondary_from_a_tick_after_the_hold(
    rigs: Callable[..., Rig],
    caplog: pytest.LogCaptureFixture,
    error: PeerUnreachable | None,
    level: int,
) -> None:
    r = rigs(config=NO_GRACE)
    r.p.up(r.node)
    r.s.up(r.node)
    r.p.error = error
    with caplog.at_level(logging.INFO, logger="raftgrpc.migration"):
        r.p.down(r.node)
        # Reported inside the primary's own callback, before it returned.
        assert r.events == [CONNECTED, DISCONNECTED]
        assert r.log[-1].in_tick is False
        lost_at = r.log[-1].at
        assert r.m.send(r.node, BEAT) is False  # nothing goes out during the hold
        r.tick_until(lambda: len(r.events) == 3, "the peer reported on the secondary")
    assert r.events == [CONNECTED, DISCONNECTED, CONNECTED]
    assert r.log[-1].in_tick is True
    assert r.log[-1].at - lost_at >= NO_GRACE.switch_hold_s
    assert r.m.paths() == {PEER: SECONDARY}
    assert r.s.forgotten == [r.node]
    assert r.m.send(r.node, BEAT) is True
    assert r.s.sent == [(r.node, BEAT)] and r.p.sent == []
    assert r.m.switches == 1
    [left] = [rec for rec in caplog.records if getattr(rec, "event", None) == "migration.leave"]
    assert "primary lost" in left.getMessage()
    [took] = [rec for rec in caplog.records if getattr(rec, "event", None) == "migration.path"]
    assert took.levelno == level and "via the secondary path (primary: " in took.getMessage()


def test_a_peer_on_the_secondary_moves_to_the_primary_once_it_is_back(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs(config=NO_GRACE)
    r.s.up(r.node)
    assert r.events == [CONNECTED] and r.m.paths() == {PEER: SECONDARY}
    r.p.up(r.node)
    assert r.events == [CONNECTED]  # not at once: the primary must stay up for a while
    r.tick_until(lambda: len(r.events) == 3, "the upgrade to the primary")
    assert r.events == [CONNECTED, DISCONNECTED, CONNECTED]
    assert r.log[1].in_tick and r.log[2].in_tick
    assert r.m.paths() == {PEER: PRIMARY}
    assert r.p.forgotten == [r.node]
    r.s.sent.clear()
    assert r.m.send(r.node, BEAT) is True
    assert r.p.sent == [(r.node, BEAT)] and r.s.sent == []
    assert r.m.stats() == {"paths": {PEER: PRIMARY}, "switches": 1, "dropped_stragglers": 0}


@pytest.mark.parametrize("inner_result", [False, True])
def test_a_send_whose_path_fails_returns_false_after_the_disconnect(
    rigs: Callable[..., Rig], inner_result: bool
) -> None:
    r = rigs()
    r.p.up(r.node)
    assert r.events == [CONNECTED]

    def fail(node: Any, message: Any) -> None:
        r.p.down(node)  # as TCPTransport/GrpcTransport do for a broken connection

    r.p.on_send = fail
    r.p.result = inner_result
    assert r.m.send(r.node, BEAT) is False
    assert r.events == [CONNECTED, DISCONNECTED]  # SyncObj saw it before send returned
    assert r.log[-1].in_tick is False
    assert r.m.paths() == {PEER: None}
    assert r.m.send(r.node, BEAT) is False
    assert len(r.p.sent) == 1 and r.s.sent == []


@pytest.mark.parametrize(
    ("code", "falls_back"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.UNAVAILABLE, True),
    ],
)
def test_the_default_predicate_decides_on_the_primarys_error(
    rigs: Callable[..., Rig], code: Any, falls_back: bool
) -> None:
    r = rigs(config=NO_GRACE)
    r.p.error = PeerUnreachable(
        PEER, "the primary said so", code, kind=UnreachableKind.STREAM_FAILED
    )
    r.s.up(r.node)
    r.tick(3)
    assert r.events == ([CONNECTED] if falls_back else [])


def test_a_refusing_should_fallback_keeps_the_peer_down_and_logs_once(
    rigs: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []

    def never(error: PeerUnreachable) -> bool:
        seen.append(error)
        return False

    r = rigs(config=NO_GRACE, should_fallback=never)
    r.p.error = PeerUnreachable(PEER, "token refused", grpc.StatusCode.UNAUTHENTICATED)
    with caplog.at_level(logging.INFO, logger="raftgrpc.migration"):
        r.s.up(r.node)
        r.tick(20)
    assert r.events == []
    assert r.m.paths() == {PEER: None}
    assert r.m.send(r.node, BEAT) is False
    assert len(seen) > 1, "should_fallback was not asked again on each tick"
    assert all(e is r.p.error for e in seen)  # it gets the primary's own PeerUnreachable
    refusals = [
        rec
        for rec in caplog.records
        if rec.levelno == logging.ERROR and "not falling back" in rec.getMessage()
    ]
    assert len(refusals) == 1, [rec.getMessage() for rec in refusals]
    assert PEER in refusals[0].getMessage() and "token refused" in refusals[0].getMessage()
    # The primary still carries the peer once it connects (and at once: never connected).
    r.p.up(r.node)
    assert r.events == [CONNECTED]
    assert r.m.paths() == {PEER: PRIMARY}


def test_should_fallback_gets_a_peer_unreachable_when_the_primary_has_no_details(
    rigs: Callable[..., Rig],
) -> None:
    seen: list[Any] = []

    def record(error: PeerUnreachable) -> bool:
        seen.append(error)
        return True

    r = rigs(config=NO_GRACE, should_fallback=record)
    r.p.error = None  # the primary's peer_error gives nothing (as a connected path would)
    r.s.up(r.node)
    assert r.events == [CONNECTED]
    assert len(seen) == 1
    assert isinstance(seen[0], PeerUnreachable)
    assert seen[0].node_id == PEER and seen[0].code is None
    assert seen[0].kind is UnreachableKind.UNKNOWN


def test_a_raising_should_fallback_means_no_fallback_and_nothing_escapes(
    rigs: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    def boom(error: PeerUnreachable) -> bool:
        calls.append(error)
        raise RuntimeError("the predicate is broken")

    r = rigs(config=NO_GRACE, should_fallback=boom)
    with caplog.at_level(logging.ERROR, logger="raftgrpc.migration"):
        r.s.up(r.node)
        r.tick(10)  # a raise would fail the test here
    assert calls
    assert r.events == []
    failed = [rec for rec in caplog.records if "should_fallback failed" in rec.getMessage()]
    assert 1 <= len(failed) <= 5  # rate-limited
    r.p.up(r.node)
    assert r.events == [CONNECTED]


@pytest.mark.parametrize(("append_period", "hold"), [(0.01, 2.0), (0.3, 0.05)])
def test_a_straggler_on_the_other_path_is_dropped_counted_and_logged(
    rigs: Callable[..., Rig], caplog: pytest.LogCaptureFixture, append_period: float, hold: float
) -> None:
    """The quiet time is half the hold, which is at least two append periods: 1 s, then
    0.3 s (not switch_hold_s / 2): either way a straggler right after is dropped."""
    config = MigrationConfig(primary_grace_s=0.05, switch_hold_s=hold, upgrade_after_s=0.1)
    r = rigs(config=config, append_period=append_period)
    msgs = [dict(BEAT, commit_index=i) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="raftgrpc.migration"):
        r.p.receive(r.node, msgs[0])
        r.p.receive(r.node, msgs[1])
        r.s.receive(r.node, msgs[2])  # within the quiet time: a straggler
    assert r.messages == [(PEER, msgs[0]), (PEER, msgs[1])]
    assert r.m.dropped_stragglers == 1
    assert r.m.stats()["dropped_stragglers"] == 1
    [dropped] = [rec for rec in caplog.records if "dropped a append_entries" in rec.getMessage()]
    assert "on the secondary path (heard on the primary path" in dropped.getMessage()


def test_an_answer_heard_on_either_path_reaches_both_paths_memory_of_what_they_sent(
    rigs: Callable[..., Rig],
) -> None:
    """The leader sends on the primary; the follower answers on the secondary: its reset
    (and its acknowledgements) must reach the primary's memory of what it carried
    (raftgrpc._protocol.resend), or the primary would keep dropping the entries the follower
    asks for (or stop trusting what it acknowledges)."""
    r = rigs()
    r.p.up(r.node)
    assert r.events == [CONNECTED]
    success = {"type": "next_node_idx", "next_node_idx": 4, "reset": False, "success": True}
    reset = {"type": "next_node_idx", "next_node_idx": 3, "reset": True, "success": False}
    r.s.receive(r.node, success)
    r.s.receive(r.node, reset)
    assert r.messages == [(PEER, success), (PEER, reset)]
    heard = [(r.node, True, False), (r.node, False, True)]
    assert r.p.replies == heard and r.s.replies == heard


def test_a_reconnect_of_the_heard_path_restarts_its_chunk_guard(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    r.s.up(r.node)
    first, nxt = chunk(b"a", True, False), chunk(b"b", False, False)
    r.s.receive(r.node, first)
    r.s.down(r.node)  # the TCP connection broke mid-transfer...
    r.s.up(r.node)
    r.s.receive(r.node, nxt)  # ...and the tail of the old attempt arrives on the new one
    assert r.messages == [(PEER, first)]


def test_a_read_only_node_hears_a_member_only_on_the_path_it_sends_on(
    rigs: Callable[..., Rig],
) -> None:
    """A member sees a read-only MigrationTransport node as two followers and feeds both;
    the member answers (apply_command_response, entries after a reset) on the one the node
    spoke on, so the node must listen there and ignore the other copy."""
    r = rigs(read_only=True)
    r.p.up(r.node)
    r.s.up(r.node)
    assert r.m.paths() == {PEER: PRIMARY}
    r.s.receive(r.node, dict(BEAT, commit_index=1))  # the copy fed to its TCP identity
    r.p.receive(r.node, dict(BEAT, commit_index=2))
    r.s.receive(r.node, dict(BEAT, commit_index=3))
    assert r.messages == [(PEER, dict(BEAT, commit_index=2))]


def test_the_inner_transports_abilities_are_used_when_they_have_them(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs(primary=CapableStub)
    p = r.p
    assert isinstance(p, CapableStub)
    r.s.up(r.node)  # the peer is back, the primary is not connected: it is asked to redial
    assert p.redialled == [r.node]
    r.m.begin_shutdown()  # forwarded to the primary; the secondary cannot
    assert p.shutting_down == 1
    assert r.m.services == ("health", "admin")
    assert r.m.stats()["primary"] == {"connected_peers": 1}
    for ability in (ShutsDownGracefully, HostsServices, HasStats):
        assert isinstance(r.m, ability)
    assert not isinstance(r.m, ReportsPeerErrors)


def test_abilities_an_inner_transport_lacks_are_skipped(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    r.s.up(r.node)  # Stub cannot redial: nothing to ask, nothing raised
    r.m.begin_shutdown()
    assert r.m.services == ()
    assert "primary" not in r.m.stats()


def test_read_only_followers_of_both_transports_are_distinct_nodes(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    inner = Node("0")  # both transports number their read-only followers from 0
    r.p.ro_up(inner)
    r.s.ro_up(Node("0"))
    ro = [nid for kind, nid in r.events if kind == "ro-connected"]
    assert len(ro) == 2 and ro[0] != ro[1], ro
    assert PEER not in ro
    via_p, via_s = Node(ro[0]), Node(ro[1])
    to_p, to_s = dict(BEAT, commit_index=10), dict(BEAT, commit_index=20)
    assert r.m.send(via_p, to_p) is True
    assert r.m.send(via_s, to_s) is True
    assert r.p.sent == [(inner, to_p)] and r.s.sent == [(inner, to_s)]
    assert all(node.id == "0" for node, _ in r.p.sent + r.s.sent)
    ack = {"type": "next_node_idx", "next_node_idx": 2, "reset": False, "success": True}
    r.p.receive(Node("0"), ack)
    r.s.receive(Node("0"), dict(ack, next_node_idx=3))
    assert r.messages == [(ro[0], ack), (ro[1], dict(ack, next_node_idx=3))]
    # A disconnect on one transport maps back to its own follower.
    r.p.ro_down(Node("0"))
    assert r.events[-1] == ("ro-disconnected", ro[0])
    assert r.m.send(via_p, to_p) is False
    # SyncObj dropping the other follower drops the inner node, on its transport only.
    r.m.dropNode(via_s)
    assert r.s.dropped == [inner] and r.p.dropped == []
    assert r.events.count(("ro-disconnected", ro[1])) == 1
    assert r.m.send(via_s, to_s) is False
    assert [kind for kind, _ in r.events] == ["ro-connected"] * 2 + ["ro-disconnected"] * 2
    assert r.m.paths() == {PEER: None}  # the member is untouched


def test_utility_callbacks_reach_both_transports(rigs: Callable[..., Rig]) -> None:
    r = rigs()

    def status(args: Any, reply: Any) -> None:
        reply("ok", None)

    def add(args: Any, reply: Any) -> None:
        reply("added", None)

    r.m.setOnUtilityMessageCallback("status", status)
    r.m.setOnUtilityMessageCallback("add", add)
    for stub in (r.p, r.s):
        assert stub._onUtilityMessageCallbacks == {"status": status, "add": add}
    r.m.setOnUtilityMessageCallback("status", None)
    for stub in (r.p, r.s):
        assert stub._onUtilityMessageCallbacks == {"add": add}


def test_a_dropped_member_is_reported_once_and_then_ignored(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    r.p.up(r.node)
    r.m.dropNode(r.node)
    assert r.events == [CONNECTED, DISCONNECTED]
    assert r.p.dropped == [r.node] and r.s.dropped == [r.node]
    r.p.down(r.node)
    r.p.up(r.node)
    r.s.up(r.node)
    r.tick(5)
    assert r.events == [CONNECTED, DISCONNECTED]
    assert r.m.send(r.node, BEAT) is False
    assert r.m.paths() == {}
    # Added again (a later membership change), it is a fresh member.
    r.m.addNode(r.node)
    assert r.p.added.count(r.node) == 2 and r.s.added.count(r.node) == 2
    r.p.up(r.node)
    assert r.events == [CONNECTED, DISCONNECTED, CONNECTED]
    assert_alternating(r.events, PEER)


def test_dropping_a_member_that_is_not_connected_reports_nothing(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    r.m.dropNode(r.node)
    assert r.events == []
    assert r.p.dropped == [r.node] and r.s.dropped == [r.node]


def test_destroy_destroys_both_transports_once(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    r.p.up(r.node)
    assert r.host.tick_callbacks == [r.m._on_tick]
    r.m.destroy()
    assert (r.p.destroyed, r.s.destroyed) == (1, 1)
    assert r.host.tick_callbacks == []
    r.m.destroy()  # idempotent (removeOnTickCallback would raise on a second removal)
    assert (r.p.destroyed, r.s.destroyed) == (1, 1)
    r.p.down(r.node)
    r.s.up(r.node)
    r.p.receive(r.node, BEAT)
    assert r.events == [CONNECTED]
    assert r.messages == []
    assert r.m.send(r.node, BEAT) is False


def test_a_failing_secondary_constructor_destroys_the_primary() -> None:
    host = MiniHost(SyncObjConf(appendEntriesPeriod=0.01))
    made: list[Stub] = []

    def primary(syncObj: Any, selfNode: Any, otherNodes: Any) -> Stub:
        made.append(Stub(syncObj, selfNode, otherNodes, PRIMARY))
        return made[-1]

    def secondary(syncObj: Any, selfNode: Any, otherNodes: Any) -> Stub:
        raise RuntimeError("the secondary cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        MigrationTransport(host, TCPNode(ME), [TCPNode(PEER)], primary=primary, secondary=secondary)
    assert len(made) == 1 and made[0].destroyed == 1
    assert host.tick_callbacks == []


def test_a_primary_listening_on_the_secondarys_port_is_refused() -> None:
    host = MiniHost(SyncObjConf(appendEntriesPeriod=0.01))
    made: list[Stub] = []

    def stub(name: str, listen: str | None) -> Callable[..., Stub]:
        def make(syncObj: Any, selfNode: Any, otherNodes: Any) -> Stub:
            made.append(Stub(syncObj, selfNode, otherNodes, name))
            made[-1].listen_target = listen
            return made[-1]

        return make

    with pytest.raises(ConfigError, match="address_of"):
        MigrationTransport(
            host,
            TCPNode(ME),
            [TCPNode(PEER)],
            primary=stub(PRIMARY, ME),
            secondary=stub(SECONDARY, None),
        )
    assert [t.destroyed for t in made] == [1, 1]
    assert host.tick_callbacks == []
    # Another port is fine.
    made.clear()
    m = MigrationTransport(
        host,
        TCPNode(ME),
        [TCPNode(PEER)],
        primary=stub(PRIMARY, "127.0.0.1:8001"),
        secondary=stub(SECONDARY, None),
    )
    m.destroy()
    assert [t.destroyed for t in made] == [1, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"primary_grace_s": -0.1},
        {"switch_hold_s": -1},
        {"upgrade_after_s": -0.5},
        {"switch_hold_s": 0},
        {"switch_hold_s": 0.0},
        {"primary_grace_s": True},
        {"upgrade_after_s": "1"},
        {"switch_hold_s": None},
    ],
)
def test_migration_config_refuses_invalid_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        MigrationConfig(**kwargs)


def test_migration_config_accepts_zero_grace_and_upgrade() -> None:
    config = MigrationConfig(primary_grace_s=0, switch_hold_s=0.01, upgrade_after_s=0)
    assert (config.primary_grace_s, config.switch_hold_s, config.upgrade_after_s) == (0, 0.01, 0)


# -- Part B: real SyncObj clusters ---------------------------------------------------------


class KV(helpers.KV):
    """The tests' replicated store, redialling every 0.5 s (TCPTransport's default: 5 s)."""

    def __init__(
        self, me: str, partners: list[str], transport: Any | None = None, retry_s: float = 0.5
    ) -> None:
        super().__init__(me, partners, transport, SyncObjConf(connectionRetryTime=retry_s))


def stopped(node: SyncObj) -> bool:
    return not node.tick_thread_alive()


@pytest.fixture
def nodes() -> Iterator[list[SyncObj]]:
    made: list[SyncObj] = []
    yield made
    for node in made:
        node.destroy()
    for node in made:
        wait_until(functools.partial(stopped, node), 15, "a node's tick thread to end")


def recording(factory: Callable[..., Any], into: dict[str, Any]) -> Callable[..., Any]:
    """``factory``, keeping each transport it builds under its node's id."""

    def make(syncObj: Any, selfNode: Any, otherNodes: Any) -> Any:
        transport = factory(syncObj, selfNode, otherNodes)
        into[selfNode.id] = transport
        return transport

    return make


def try_put(node: KV, key: str, value: str) -> bool:
    try:
        node.put(key, value, sync=True, timeout=5)
    except SyncObjException:
        return False
    return True


def write_through_every_node(cluster: list[KV]) -> None:
    def one_leader() -> bool:
        leaders = {n._getLeader() for n in cluster}
        return len(leaders) == 1 and None not in leaders

    wait_until(one_leader, 20, "every node to know the same leader")
    expected = {}
    for i, node in enumerate(cluster):
        key, value = f"k{i}", f"written through {node.selfNode.id}"
        wait_until(functools.partial(try_put, node, key, value), 20, f"{key} committed")
        expected[key] = value
    wait_until(lambda: all(n.data == expected for n in cluster), 20, "every write on every node")


MIGRATION = MigrationConfig(primary_grace_s=0.3, switch_hold_s=0.3, upgrade_after_s=0.5)


def migration_factory(
    address_of: Any, primary: Callable[..., Any] | None = None
) -> Callable[..., Any]:
    if primary is None:
        primary = functools.partial(GrpcTransport, config=TransportConfig(address_of=address_of))
    return MigrationTransport.factory(primary=primary, config=MIGRATION)


def test_a_tcp_node_and_two_migration_nodes_replicate(nodes: list[SyncObj]) -> None:
    ports = free_ports(6)
    ids = [f"127.0.0.1:{p}" for p in ports[:3]]
    amap = AddressMap({i: f"127.0.0.1:{p}" for i, p in zip(ids, ports[3:], strict=True)})
    built: dict[str, MigrationTransport] = {}
    factory = recording(migration_factory(amap), built)
    for i, me in enumerate(ids):
        others = [o for o in ids if o != me]
        nodes.append(KV(me, others) if i == 0 else KV(me, others, factory))
    write_through_every_node(nodes)
    n0, n1, n2 = ids
    want = {n1: {n0: SECONDARY, n2: PRIMARY}, n2: {n0: SECONDARY, n1: PRIMARY}}
    wait_until(
        lambda: {me: built[me].paths() for me in (n1, n2)} == want, 20, f"paths to be {want}"
    )
    # The gRPC side of a Migration node listens on its mapped port, TCP on its Raft port.
    assert built[n1].primary.bound_port == ports[4]
    # What the primary says about the TCP-only node: nothing listens there (gRPC's words,
    # read once into a kind), the normal case while migrating.
    error = built[n1].primary.peer_error(TCPNode(n0))
    assert error is not None and error.kind is UnreachableKind.CONNECTION_REFUSED, error


def test_a_grpc_node_and_two_migration_nodes_replicate(nodes: list[SyncObj]) -> None:
    ports = free_ports(6)
    ids = [f"127.0.0.1:{p}" for p in ports[:3]]
    amap = AddressMap({i: f"127.0.0.1:{p}" for i, p in zip(ids, ports[3:], strict=True)})
    built: dict[str, MigrationTransport] = {}
    factory = recording(migration_factory(amap), built)
    grpc_only = functools.partial(GrpcTransport, config=TransportConfig(address_of=amap))
    for i, me in enumerate(ids):
        others = [o for o in ids if o != me]
        nodes.append(KV(me, others, grpc_only if i == 0 else factory))
    write_through_every_node(nodes)
    n0, n1, n2 = ids
    want = {n1: {n0: PRIMARY, n2: PRIMARY}, n2: {n0: PRIMARY, n1: PRIMARY}}
    wait_until(
        lambda: {me: built[me].paths() for me in (n1, n2)} == want, 20, f"paths to be {want}"
    )
    with socket.socket() as probe:  # the gRPC-only node serves nothing on its Raft port
        probe.bind(("127.0.0.1", ports[0]))


def test_utility_commands_work_through_a_migration_node(nodes: list[SyncObj]) -> None:
    raft_port, grpc_port = free_ports(2)
    me, grpc_address = f"127.0.0.1:{raft_port}", f"127.0.0.1:{grpc_port}"
    amap = AddressMap({me: grpc_address})
    admin_side = (
        TransportBuilder(TransportConfig(address_of=amap))
        .with_admin(allow_unauthenticated=True)  # loopback callers only
        .build()
    )
    node = KV(me, [], migration_factory(amap, primary=admin_side))
    nodes.append(node)
    wait_until(node._isLeader, 10, "the single node to lead")
    with GrpcUtility(timeout=10.0) as utility:  # plaintext, loopback, no token
        status = utility.executeCommand(grpc_address, ["status"])
    assert status["self"].id == me
    assert status["state"] == 2  # leader
    tcp_status = TcpUtility(timeout=10.0).executeCommand(me, ["status"])
    assert tcp_status is not None
    assert tcp_status["self"].id == me
    assert tcp_status["state"] == 2


def test_a_primary_on_the_tcp_port_fails_the_syncobj_constructor_and_leaks_nothing() -> None:
    raft_port, other_port, health_port = free_ports(3)
    me, other = f"127.0.0.1:{raft_port}", f"127.0.0.1:{other_port}"
    before = thread_ids()
    # No address_of: gRPC would listen on the Raft id, where TCPTransport listens.
    config = TransportConfig(health_listen_address=f"127.0.0.1:{health_port}")
    factory = MigrationTransport.factory(
        primary=functools.partial(GrpcTransport, config=config), config=MIGRATION
    )
    with pytest.raises(ConfigError, match="address_of"):
        KV(me, [other], factory)
    wait_until(lambda: thread_ids() <= before, 10, "transport threads to end")
    for port in (raft_port, health_port):  # neither the gRPC, health nor TCP port is held
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_primary_reaching_another_node_is_not_fallen_back_from(
    nodes: list[SyncObj], caplog: pytest.LogCaptureFixture
) -> None:
    """A's gRPC address for B is C's: the raftgrpc handshake fails (C says it is C), a
    configuration error, so A keeps B disconnected although TCP reaches it, and says why."""
    a_port, b_port, c_port, a_grpc, c_grpc = free_ports(5)
    a, b, c = (f"127.0.0.1:{p}" for p in (a_port, b_port, c_port))
    amap = AddressMap(
        {a: f"127.0.0.1:{a_grpc}", b: f"127.0.0.1:{c_grpc}", c: f"127.0.0.1:{c_grpc}"}
    )
    built: dict[str, MigrationTransport] = {}
    grpc_only = functools.partial(GrpcTransport, config=TransportConfig(address_of=amap))
    with caplog.at_level(logging.ERROR, logger="raftgrpc.migration"):
        nodes.append(KV(a, [b, c], recording(migration_factory(amap), built)))
        nodes.append(KV(b, [a, c]))
        nodes.append(KV(c, [a, b], grpc_only))

        def refused() -> bool:
            return any(
                getattr(rec, "event", None) == "migration.fallback_refused"
                and getattr(rec, "peer", None) == b
                for rec in caplog.records
            )

        wait_until(refused, 20, "A to refuse the fallback for B")
    error = built[a].primary.peer_error(TCPNode(b))
    assert error is not None and error.kind is UnreachableKind.HANDSHAKE_FAILED, error
    assert built[a].paths()[b] is None


def test_a_tcp_secondary_redials_a_peer_down_on_both_paths_sooner_than_its_retry_time(
    nodes: list[SyncObj],
) -> None:
    """TCPTransport redials every connectionRetryTime (5 s here); while a peer is down on
    both paths MigrationTransport has it redial every secondary_redial_s (0.25 s)."""
    ports = free_ports(4)
    ids = sorted(f"127.0.0.1:{p}" for p in ports[:2])
    low, high = ids  # TCPTransport: only the node with the greater address dials
    amap = AddressMap({i: f"127.0.0.1:{p}" for i, p in zip(ids, ports[2:], strict=True)})
    built: dict[str, MigrationTransport] = {}
    nodes.append(KV(high, [low], recording(migration_factory(amap), built), retry_s=5.0))

    def dialled_and_failed() -> bool:
        error = built[high].primary.peer_error(TCPNode(low))
        return error is not None and error.code == grpc.StatusCode.UNAVAILABLE

    wait_until(dialled_and_failed, 10, "the first attempts to fail")
    started = time.monotonic()
    nodes.append(KV(low, [high], retry_s=5.0))  # TCP only: it waits to be dialled
    wait_until(lambda: built[high].paths() == {low: SECONDARY}, 10, "the TCP path")
    assert time.monotonic() - started < 3.0

"""GrpcTransport on its own, hosted by a stand-in for SyncObj's tick loop (tests/host.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import socket
import threading
import time
from typing import Any

import grpc
import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj.node import TCPNode

from raftgrpc import ConfigError, GrpcTransport, Middleware, TransportConfig
from tests.helpers import free_port, thread_ids, wait_until
from tests.host import Host, pair

pytestmark = pytest.mark.timeout(120)


def chunk_message(i: int, size: int) -> dict[str, Any]:
    data = i.to_bytes(4, "big") * (size // 4)
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "serialized": (data, i == 0, False),
    }


def test_a_broken_stream_is_reported_inside_send(hosts: list[Host]) -> None:
    a, _b, _, b_addr = pair(hosts, TransportConfig())
    peer = a.transport._peers[TCPNode(b_addr)]
    assert peer.link is not None
    # The link breaks outside a run of a's event loop (the liveness monitor cancels it, or a
    # queue reset does) and SyncObj has not been told yet: the stream's coroutine would
    # report it when a's loop runs next; a send() before that reports it at once.
    peer.link.cancel()
    assert ("disconnected", b_addr) not in a.events
    a.tick_thread = threading.current_thread()
    vote = {"type": "request_vote", "term": 2, "last_log_index": 1, "last_log_term": 1}
    assert a.transport.send(TCPNode(b_addr), vote) is False
    assert a.events[-1] == ("disconnected", b_addr)  # reported before send returned
    # The queued 'lost' event must not report it a second time.
    for _ in range(20):
        a.tick(0.005)
    assert a.events.count(("disconnected", b_addr)) == 1


def test_send_never_blocks_and_memory_stays_bounded_behind_a_stalled_peer(
    hosts: list[Host],
) -> None:
    """b's tick thread stands still: b's inbox fills, its readers stop, HTTP/2 flow control
    stalls a's stream, and a's queue spills to disk. a's send() stays fast throughout; then b
    ticks again and receives every message, in order."""
    config = TransportConfig(
        queue_memory_bytes=4 << 20, inbound_buffer_bytes=4 << 20, frame_bytes=1 << 20
    )
    a, b, _, b_addr = pair(hosts, config)
    a.tick_thread = threading.current_thread()
    count, size = 1200, 64 << 10  # 75 MiB of snapshot-sized chunks
    slowest = 0.0
    for i in range(count):
        started = time.perf_counter()
        assert a.transport.send(TCPNode(b_addr), chunk_message(i, size))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5, f"a send() took {slowest:.3f} s"
    link = a.transport._peers[TCPNode(b_addr)].link
    assert link is not None
    assert link.outbox.spilled_bytes_total > 20 << 20  # the stall really pushed back
    stats = a.transport.stats()
    assert stats["peak_outbound_memory_bytes"] <= 4 << 20
    # Now let b's tick thread run (and a's, which writes): everything arrives, in order.
    b.tick_until(lambda: len(b.messages) >= count, 120, "all chunks at b", also=(a,))
    received = [m["serialized"][0][:4] for _, m in b.messages]
    assert received == [i.to_bytes(4, "big") for i in range(count)]
    assert b.transport.stats()["peak_inbound_buffered_bytes"] <= (4 << 20) + (2 << 20)
    print(
        f"\nslowest send {slowest * 1000:.2f} ms; peak in memory: "
        f"sender {stats['peak_outbound_memory_bytes'] >> 20} MiB, "
        f"receiver {b.transport.stats()['peak_inbound_buffered_bytes'] >> 20} MiB"
    )


def entries_message(i: int, size: int) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "prevLogIdx": i,
        "prevLogTerm": 1,
        "entries": [(b"e" * size, i + 1, 1)],
    }


@pytest.mark.parametrize("kind", ["entries", "snapshot"])
def test_a_queue_of_stale_messages_is_reset_but_a_slow_snapshot_is_not(
    hosts: list[Host], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """b's tick thread stands still, so a's queue to b stops moving. Once its oldest
    append-entries waited longer than queue_max_age_s, a resets the stream (the leader will
    resend from where b is); snapshot chunks wait as long as they must."""
    max_age = 1.5
    config = TransportConfig(
        queue_memory_bytes=1 << 20,
        inbound_buffer_bytes=1 << 20,
        frame_bytes=256 << 10,
        queue_max_age_s=max_age,
    )
    a, _, _, b_addr = pair(hosts, config)
    a.tick_thread = threading.current_thread()
    make = entries_message if kind == "entries" else chunk_message
    node = TCPNode(b_addr)
    # 12 MiB: more than b's inbox and the HTTP/2 windows between them hold.
    stalled_at = time.monotonic()
    sent = [a.transport.send(node, make(i, 64 << 10)) for i in range(200)]
    assert all(sent)
    with caplog.at_level("WARNING", logger="raftgrpc.transport"):
        i = len(sent)
        while time.monotonic() - stalled_at < 2.5 * max_age:
            if not a.transport.send(node, make(i, 1024)):
                break
            i += 1
            time.sleep(0.05)  # paced, not a synchronisation: the queue's age is what is measured
        reset_after = time.monotonic() - stalled_at
    stale = [r for r in caplog.records if getattr(r, "event", None) == "stream.queue_stale"]
    if kind == "entries":
        assert a.events[-1] == ("disconnected", b_addr)
        assert max_age < reset_after < 2.5 * max_age
        assert len(stale) == 1 and "s old" in stale[0].getMessage()
        error = a.transport.peer_error(node)  # what MigrationTransport would be told
        assert error is not None and "send queue stale" in error.reason
    else:
        assert ("disconnected", b_addr) not in a.events
        assert stale == []
        link = a.transport._peers[node].link
        assert link is not None and not link.broken


def test_read_only_follower_hears_back_on_its_own_stream(hosts: list[Host]) -> None:
    member = f"127.0.0.1:{free_port()}"
    m = Host(member, [], TransportConfig())
    hosts.append(m)
    ro = Host(None, [member], TransportConfig())
    hosts.append(ro)
    ro.tick_until(lambda: ("connected", member) in ro.events, 10, "read-only connected", (m,))
    m.tick_until(lambda: any(k == "ro-connected" for k, _ in m.events), 10, "member sees it")
    ro_id = next(n for k, n in m.events if k == "ro-connected")
    ro_node = next(iter(m.transport._readonly))
    assert ro_node.id == ro_id
    m.tick_thread = threading.current_thread()
    beat = {
        "type": "append_entries",
        "term": 3,
        "commit_index": 5,
        "prevLogIdx": 5,
        "prevLogTerm": 3,
        "entries": [(b"x", 6, 3)],
    }
    assert m.transport.send(ro_node, beat)
    ro.tick_until(lambda: ro.messages, 10, "the read-only node to receive", also=(m,))
    assert ro.messages == [(member, beat)]
    ack = {"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True}
    ro.tick_thread = threading.current_thread()
    assert ro.transport.send(TCPNode(member), ack)
    m.tick_until(lambda: m.messages, 10, "the member to receive the ack", also=(ro,))
    assert m.messages == [(ro_id, ack)]
    # When the read-only node leaves, the member is told once.
    ro.transport.destroy()
    hosts.remove(ro)
    m.tick_until(lambda: ("ro-disconnected", ro_id) in m.events, 10, "read-only gone")
    assert m.transport.send(ro_node, beat) is False


def test_destroy_releases_port_and_threads(hosts: list[Host]) -> None:
    before = thread_ids()
    a_addr = pair(hosts, TransportConfig())[2]
    for h in list(hosts):
        h.tick_thread = threading.current_thread()
        h.transport.destroy()
        hosts.remove(h)
    wait_until(lambda: thread_ids() <= before, 10, "transport threads to end")
    again = Host(a_addr, [], TransportConfig())  # the port can be bound again
    hosts.append(again)
    assert again.transport.bound_port == int(a_addr.rsplit(":", 1)[1])


def test_a_password_is_refused_rather_than_ignored() -> None:
    before = thread_ids()
    health_port = free_port()
    conf = SyncObjConf(password="s3cret")
    config = TransportConfig(health_listen_address=f"127.0.0.1:{health_port}")
    with pytest.raises(ConfigError, match="password") as info:
        Host(f"127.0.0.1:{free_port()}", ["127.0.0.1:1"], config, conf=conf)
    assert "s3cret" not in str(info.value)
    # Refused before anything started: no thread, and the health port is free.
    assert thread_ids() <= before
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", health_port))


def test_a_dropped_member_learns_at_once_that_it_is_not_heard(hosts: list[Host]) -> None:
    a, b, a_addr, b_addr = pair(hosts, TransportConfig(liveness_timeout_s=30))
    a.tick_thread = threading.current_thread()
    a.transport.dropNode(TCPNode(b_addr))
    started = time.monotonic()
    # b's stream to a is cancelled by a (not found by a 30 s liveness timeout), and a refuses
    # b's redials: b stays disconnected and nothing b sends reaches a.
    b.tick_until(lambda: ("disconnected", a_addr) in b.events, 5, "b told of the drop", (a,))
    assert time.monotonic() - started < 5
    vote = {"type": "request_vote", "term": 9, "last_log_index": 1, "last_log_term": 1}
    b.tick_thread = threading.current_thread()
    b.transport.send(TCPNode(a_addr), vote)
    for _ in range(50):
        a.tick(0.005)
        b.tick(0.005)
    assert a.messages == []
    assert b.events.count(("connected", a_addr)) == 1


def test_a_redialled_stream_is_reported_two_append_entries_periods_after_the_loss(
    hosts: list[Host],
) -> None:
    """So that SyncObj's next replication round sees the peer disconnected."""
    a, _b, _, b_addr = pair(hosts, TransportConfig())
    period = a.conf.appendEntriesPeriod
    link = a.transport._peers[TCPNode(b_addr)].link
    assert link is not None
    link.cancel()
    times: dict[str, float] = {}

    def seen() -> bool:
        for kind in ("disconnected", "connected"):
            if kind not in times and a.events.count((kind, b_addr)) == (
                2 if kind == "connected" else 1
            ):
                times[kind] = time.monotonic()
        return len(times) == 2

    a.tick_until(seen, 10, "a reconnected to b", also=(_b,))
    gap = times["connected"] - times["disconnected"]
    assert gap >= 2 * period * 0.95, gap
    assert a.events[-2:] == [("disconnected", b_addr), ("connected", b_addr)]


def test_a_failing_service_releases_what_the_transport_had_started() -> None:
    def broken(ctx: Any) -> Any:
        raise RuntimeError("this service cannot start")

    before = thread_ids()
    health_port = free_port()
    config = TransportConfig(health_listen_address=f"127.0.0.1:{health_port}")
    factory = functools.partial(
        GrpcTransport, config=config, middleware=Middleware(services=(broken,))
    )
    with pytest.raises(RuntimeError, match="cannot start"):
        Host(f"127.0.0.1:{free_port()}", ["127.0.0.1:1"], config, factory=factory)
    wait_until(lambda: thread_ids() <= before, 10, "its threads to end")
    with socket.socket() as probe:  # the health server it had started is gone
        probe.bind(("127.0.0.1", health_port))


def test_redial_reaches_a_peer_that_came_back_without_waiting_out_any_backoff(
    hosts: list[Host],
) -> None:
    """A peer that was down leaves both raftgrpc's backoff and the gRPC channel's own
    reconnect backoff running; ``redial`` (called when the peer dials us, or by
    MigrationTransport when its TCP side sees the peer) must reach it at once."""
    config = TransportConfig(reconnect_initial_s=4.0, reconnect_max_s=8.0)
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    a = Host(a_addr, [b_addr], config)
    hosts.append(a)
    node_b = next(iter(a.transport._peers))
    a.tick_until(
        lambda: (
            (e := a.transport.peer_error(node_b)) is not None
            and e.code == grpc.StatusCode.UNAVAILABLE
        ),
        10,
        "a's first attempt to fail",
    )
    started = time.monotonic()
    b = Host(b_addr, [a_addr], config)  # b dials a at once: a redials b when it sees that
    hosts.append(b)
    a.tick_until(lambda: ("connected", b_addr) in a.events, 3.5, "a connected to b", (b,))
    assert time.monotonic() - started < 3.5  # both backoffs were at least 4 s


def test_peers_connect_directly_when_a_proxy_is_set_for_other_traffic(
    hosts: list[Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC follows http_proxy and friends by default; a Raft cluster must not (a proxy
    variable meant for other traffic would keep it from ever forming)."""
    for name in ("http_proxy", "https_proxy", "grpc_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    a, b, a_addr, b_addr = pair(hosts, TransportConfig())
    assert ("connected", b_addr) in a.events
    assert ("connected", a_addr) in b.events


def test_syncobj_failures_are_errors_except_unpickling_a_big_entrys_finish_chunk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from raftgrpc._transport.delivery import log_syncobj_failure

    finish = {"type": "append_entries", "transmission": "finish", "data": b"x."}
    truncated = pickle.dumps(("x" * 100, 1, 2), 2)[:-20]

    def failing(message: dict[str, Any], fail: Any) -> None:
        try:
            fail()
        except Exception:
            log_syncobj_failure(message)

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with caplog.at_level("INFO", logger="raftgrpc.transport"):
        failing(finish, lambda: pysyncobj_pickle.loads(truncated))  # C error, then Python retry
        failing(finish, disk_full)  # the entry completed; appending it failed
        failing({"type": "request_vote"}, lambda: pysyncobj_pickle.loads(truncated))
    quiet, loud, vote = caplog.records
    assert (quiet.levelname, quiet.exc_info) == ("INFO", None)
    assert "'finish'" in quiet.getMessage()
    assert loud.levelname == "ERROR" and loud.exc_info is not None
    assert vote.levelname == "ERROR" and "request_vote" in vote.getMessage()


class _Value(SyncObj):  # type: ignore[misc]
    def __init__(self, me: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(me, others, conf, transportClass=GrpcTransport)
        self.value = None

    @replicated  # type: ignore[misc]
    def set(self, value: Any) -> None:
        self.value = value


def test_a_program_running_its_own_asyncio_loop_builds_ticks_and_is_called_back_in_it() -> None:
    """The transport's event loop is its own: a program that builds and ticks its nodes
    (autoTick off) inside asyncio.run works, and SyncObj's callbacks see the program's loop
    as the running one, as they would on TCPTransport (found by review)."""
    seen: list[Any] = []

    async def main() -> None:
        mine = asyncio.get_running_loop()
        a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

        def conf() -> SyncObjConf:
            return SyncObjConf(
                autoTick=False,
                onStateChanged=lambda old, new: seen.append(asyncio.get_running_loop() is mine),
            )

        nodes = [_Value(a_addr, [b_addr], conf()), _Value(b_addr, [a_addr], conf())]
        try:
            deadline = time.monotonic() + 20
            while not any(n._isLeader() for n in nodes):
                assert time.monotonic() < deadline, "no leader"
                for n in nodes:
                    n.doTick(0.001)
            leader = next(n for n in nodes if n._isLeader())
            leader.set(7, callback=lambda res, err: None)
            while not all(n.value == 7 for n in nodes):
                assert time.monotonic() < deadline, "not committed"
                for n in nodes:
                    n.doTick(0.001)
        finally:
            for n in nodes:
                n.destroy()

    asyncio.run(main())
    assert seen and all(seen), seen  # state changes, some of them inside a delivery


def test_destroy_from_a_callback_inside_the_event_loop_finishes_at_the_next_poll() -> None:
    """With autoTick off SyncObj.destroy() runs where it is called: a callback that runs
    inside the transport's event loop (a message being delivered). It cannot finish there
    (nor remove a tick callback while SyncObj runs them): it finishes when the node is next
    ticked, and releases everything (found by review: it deadlocked the tick thread)."""
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    destroyed: list[Any] = []

    def on_state(node: list[Any]) -> Any:
        def changed(old: int, new: int) -> None:
            if new == 2 and not destroyed:  # became leader: on receiving a vote, in the loop
                transport = node[0]._SyncObj__transport
                assert transport._tickloop.owns_current_thread()
                destroyed.append(node[0])
                node[0].destroy()

        return changed

    holders: list[list[Any]] = [[], []]
    nodes = []
    for holder, (me, other) in zip(holders, [(a_addr, b_addr), (b_addr, a_addr)], strict=True):
        node = _Value(me, [other], SyncObjConf(autoTick=False, onStateChanged=on_state(holder)))
        holder.append(node)
        nodes.append(node)
    try:
        deadline = time.monotonic() + 20
        while not destroyed:
            assert time.monotonic() < deadline, "no leader"
            for n in nodes:
                n.doTick(0.001)
        gone = destroyed[0]._SyncObj__transport
        port = gone.bound_port
        for _ in range(10):  # the next ticks finish the destroy (no deadlock)
            destroyed[0].doTick(0.001)
        assert gone._destroyed and gone._tickloop.closed
        with socket.socket() as probe:  # nothing listens on its port any more
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
    finally:
        for n in nodes:
            if n is not (destroyed[0] if destroyed else None):
                n.destroy()


def test_a_channel_that_cannot_be_made_is_retried_not_the_end_of_the_peer(
    hosts: list[Host], caplog: pytest.LogCaptureFixture
) -> None:
    """A failure while making a peer's channel is logged and retried with backoff (found by
    review: it ended the peer's dialling for good, silently)."""
    failures = [RuntimeError("no channel this time")]

    class Flaky(GrpcTransport):
        def _dial(self, target: str) -> Any:
            if failures:
                raise failures.pop()
            return super()._dial(target)

    with caplog.at_level(logging.ERROR, logger="raftgrpc.peer"):
        a, _b, _, b_addr = pair(hosts, TransportConfig(), factory=Flaky)
    assert not failures  # the first channel failed...
    assert ("connected", b_addr) in a.events  # ...and the peer was dialled again
    assert any("unexpected error on the stream" in r.getMessage() for r in caplog.records)


def test_client_interceptors_of_the_synchronous_api_are_refused_for_the_nodes_channels() -> None:
    class Sync(grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
        def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(details, requests)

    with pytest.raises(ConfigError, match=r"not a grpc\.aio client interceptor"):
        Middleware(client_interceptors=(Sync(),))


def test_entries_a_stream_carries_are_sent_once_until_the_follower_asks_again(
    hosts: list[Host],
) -> None:
    """A leader rewinds after every acknowledgement and sends its in-flight entries again
    (raftgrpc._protocol.resend): the follower gets each entry once, in order, and the repeats are
    counted; once the follower answers with a reset, the same entries go out again."""
    a, b, a_addr, b_addr = pair(hosts, TransportConfig())
    node, leader = TCPNode(b_addr), TCPNode(a_addr)

    def answer(message: dict[str, Any]) -> None:
        b.tick_thread = threading.current_thread()
        heard = len(a.messages)
        assert b.transport.send(leader, {"type": "next_node_idx", **message})
        a.tick_until(lambda: len(a.messages) > heard, 10, "the answer at a", also=(b,))
        a.tick_thread = threading.current_thread()

    def ack(index: int) -> None:
        answer({"next_node_idx": index + 1, "reset": False, "success": True})

    a.tick_thread = threading.current_thread()
    for i in range(10):  # entries 1..10, each sent after the previous one
        assert a.transport.send(node, entries_message(i, 100))
    ack(3)  # an acknowledgement of entry 3: PySyncObj sends entries 4..10 again
    for i in range(3, 10):
        assert a.transport.send(node, entries_message(i, 100))
    heartbeat = {**entries_message(10, 0), "entries": []}  # never dropped
    assert a.transport.send(node, heartbeat)
    b.tick_until(lambda: len(b.messages) >= 11, 10, "ten entries and a heartbeat at b", also=(a,))
    assert [m["prevLogIdx"] for _, m in b.messages] == list(range(11))
    assert a.transport.stats()["redundant_sends_dropped"] == 7
    # b lost entries 6..10 (say it truncated them): it asks for them from 6.
    answer({"next_node_idx": 6, "reset": True, "success": False})
    for i in range(5, 10):
        assert a.transport.send(node, entries_message(i, 100))
    b.tick_until(lambda: len(b.messages) >= 16, 10, "the entries again at b", also=(a,))
    assert [m["prevLogIdx"] for _, m in b.messages[11:]] == list(range(5, 10))
    assert a.transport.stats()["redundant_sends_dropped"] == 7
    # A batch reaching past what the stream carries goes out trimmed to what is new.
    ack(7)
    batch = {**entries_message(7, 0), "entries": [(b"e", i, 1) for i in range(8, 13)]}
    assert a.transport.send(node, batch)
    b.tick_until(lambda: len(b.messages) >= 17, 10, "the batch at b", also=(a,))
    got = b.messages[16][1]
    assert got["prevLogIdx"] == 10 and [e[1] for e in got["entries"]] == [11, 12]
    assert a.transport.stats()["redundant_sends_trimmed"] == 1
    # A message that cannot be sent is not taken as carried.
    bad = {**entries_message(12, 100), "unknown": 1}
    assert a.transport.send(node, bad) is False  # the codec refuses it
    assert a.transport.send(node, entries_message(12, 100))
    b.tick_until(lambda: len(b.messages) >= 18, 10, "entry 13 at b", also=(a,))
    assert b.messages[17][1]["prevLogIdx"] == 12

"""Pure parts: chunk guard, backoff, addresses, the tick-thread event loop, liveness,
configuration."""

from __future__ import annotations

import asyncio
import pickle
import random
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftgrpc import ConfigError, TransportConfig
from raftgrpc._protocol.address import grpc_target, split_host_port
from raftgrpc._protocol.backoff import Backoff
from raftgrpc._protocol.chunks import ChunkGuard
from raftgrpc._transport.link import Link
from raftgrpc._transport.liveness import LivenessMonitor
from raftgrpc._transport.outbox import Outbox
from raftgrpc._transport.tickloop import MAX_ROUNDS, TickLoop


def snap(first: bool, last: bool, data: bytes = b"d") -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "serialized": (data, first, last),
    }


def big(transmission: str, data: bytes = b"c.") -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "prevLogIdx": 1,
        "prevLogTerm": 1,
        "transmission": transmission,
        "data": data,
    }


def pysyncobj_chunks(entry: tuple[bytes, int, int], batch: int) -> list[dict[str, Any]]:
    """The chunk messages PySyncObj 0.3.17 sends for a big entry (syncobj.py, ~line 1276):
    chunks of the entry's protocol-2 pickle, labelled 'finish' by the command's length."""
    pickled = pickle.dumps(entry, 2)
    out = []
    for pos in range(0, len(pickled), batch):
        if pos == 0:
            label = "start"
        elif pos + batch >= len(entry[0]):
            label = "finish"
        else:
            label = "process"
        out.append(big(label, pickled[pos : pos + batch]))
    return out


def test_guard_admits_whole_transfers() -> None:
    guard = ChunkGuard()
    messages = [snap(True, False), snap(False, False), snap(False, True)]
    messages += [big("start"), big("process"), big("finish")]
    assert all(guard.admit(m) for m in messages)
    assert guard.dropped == 0


def test_guard_passes_pysyncobjs_repeated_finish_chunks() -> None:
    # PySyncObj 0.3.17 labels a chunk 'finish' by the command's length, so a big entry whose
    # pickle is longer than the command ends with several 'finish' chunks: none may be
    # dropped, and those that cannot end a pickle are relabelled 'process'.
    guard = ChunkGuard()
    labels = ["start", "process", "finish", "finish", "finish"]
    messages = [big(t, b"xyz") for t in labels[:-1]] + [big("finish", b"xy.")]
    assert all(guard.admit(m) for m in messages)
    relabelled = ["start", "process", "process", "process", "finish"]
    assert [m["transmission"] for m in messages] == relabelled
    assert (guard.dropped, guard.relabelled) == (0, 2)
    assert guard.admit(big("start"))
    assert guard.admit(big("finish"))
    assert guard.dropped == 0


def check_pysyncobj_big_entry(payload: bytes, batch: int) -> int:
    """Feed PySyncObj's chunks of a big entry through a guard: the appended data is
    unchanged, only 'finish' chunks whose prefix cannot load become 'process', and the last
    chunk still completes the entry. Returns how many were relabelled."""
    command = pickle.dumps(("set", ("key", payload), {}), 2)
    entry = (command, 7, 3)
    sent = pysyncobj_chunks(entry, batch)
    messages = [dict(m) for m in sent]
    guard = ChunkGuard()
    assert all(guard.admit(m) for m in messages)
    assert [m["data"] for m in messages] == [m["data"] for m in sent]
    assert messages[-1]["transmission"] == "finish"
    prefix = b""
    for before, after in zip(sent[:-1], messages[:-1], strict=True):
        prefix += after["data"]
        if after["transmission"] != before["transmission"]:
            assert (before["transmission"], after["transmission"]) == ("finish", "process")
            with pytest.raises(Exception):  # noqa: B017 - any error: a prefix never loads
                pickle.loads(prefix)
    assert pickle.loads(prefix + messages[-1]["data"]) == entry
    return guard.relabelled


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=64, max_size=3000), batch=st.integers(16, 64))
def test_guard_leaves_finish_only_where_a_big_entry_can_complete(
    payload: bytes, batch: int
) -> None:
    check_pysyncobj_big_entry(payload, batch)


def test_guard_relabels_the_early_finish_chunks_of_a_random_256_kib_value() -> None:
    # 256 KiB of random bytes pickle (protocol 2) to ~1.5x their size: with 64 KiB chunks the
    # last ~3 full chunks were early 'finish' chunks, each an exception in the follower.
    assert check_pysyncobj_big_entry(random.Random(1).randbytes(256 * 1024), 2**16) >= 3


def test_guard_drops_a_transfer_tail_that_started_on_another_stream() -> None:
    guard = ChunkGuard()  # a new stream: it never saw the first chunks
    assert not guard.admit(snap(False, False))
    assert not guard.admit(snap(False, True))
    assert not guard.admit(big("process"))
    assert not guard.admit(big("finish"))
    assert guard.dropped == 4
    # A restarted transfer is admitted from its first chunk on.
    assert guard.admit(snap(True, False))
    assert guard.admit(snap(False, True))
    assert guard.admit(big("start"))
    assert guard.admit(big("finish"))
    # Other messages always pass.
    assert guard.admit({"type": "request_vote", "term": 1, "last_log_index": 1, "last_log_term": 1})
    none_snapshot = {"type": "append_entries", "term": 1, "commit_index": 1, "serialized": None}
    assert guard.admit(none_snapshot)


def test_backoff_first_retry_and_cap() -> None:
    backoff = Backoff(0.05, 2.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(20)]
    assert delays[0] <= 0.05
    assert max(delays) <= 2.0
    assert delays[-1] >= 1.0  # reached the cap region
    backoff.reset()
    assert backoff.next_delay() <= 0.05


@pytest.mark.parametrize(
    ("address", "target", "host", "port"),
    [
        ("127.0.0.1:4321", "127.0.0.1:4321", "127.0.0.1", 4321),
        ("localhost:4321", "localhost:4321", "localhost", 4321),
        ("::1:4321", "[::1]:4321", "::1", 4321),
        ("[::1]:4321", "[::1]:4321", "::1", 4321),
        ("[fe80::1]:1", "[fe80::1]:1", "fe80::1", 1),
    ],
)
def test_addresses(address: str, target: str, host: str, port: int) -> None:
    assert grpc_target(address) == target
    assert split_host_port(address) == (host, port)


@pytest.mark.parametrize("bad", ["4321", "host:", ":4321", "host:port", "host:70000"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        grpc_target(bad)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="keepalive_time_s"):
        TransportConfig(keepalive_time_s=0)
    with pytest.raises(ConfigError, match="frame_bytes"):
        TransportConfig(frame_bytes=10, max_message_bytes=5)
    with pytest.raises(ConfigError, match="frame_bytes"):  # no room left for the framing
        TransportConfig(frame_bytes=3 << 20, max_message_bytes=4 << 20)
    assert TransportConfig(frame_bytes=2 << 20, max_message_bytes=4 << 20).frame_bytes == 2 << 20
    assert TransportConfig(raft_health_max_commit_lag=0).raft_health_max_commit_lag == 0
    with pytest.raises(ConfigError, match="raft_health_max_commit_lag"):
        TransportConfig(raft_health_max_commit_lag=-1)
    assert TransportConfig().liveness_timeout_s == 3.0


class FakePoller:
    """The poller methods a TickLoop uses, with a real select on the subscribed fds."""

    def __init__(self) -> None:
        self.callbacks: dict[int, Any] = {}

    def subscribe(self, fd: int, callback: Any, _mask: int) -> None:
        self.callbacks[fd] = callback

    def unsubscribe(self, fd: int) -> None:
        self.callbacks.pop(fd, None)

    def poll(self, timeout: float) -> bool:
        """One poll; whether any fd was ready."""
        import select

        ready, _, _ = select.select(list(self.callbacks), [], [], timeout)
        for fd in ready:
            self.callbacks[fd](fd, 1)
        return bool(ready)


def test_tick_loop_runs_on_the_polling_thread_woken_by_other_threads() -> None:
    poller = FakePoller()
    tl = TickLoop("test")
    tl.attach(poller)
    ran: list[tuple[int, str]] = []
    posters = [
        threading.Thread(
            target=lambda n=n: [
                tl.post(lambda i=i: ran.append((n * 1000 + i, threading.current_thread().name)))
                for i in range(200)
            ]
        )
        for n in range(3)
    ]
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    polls = 0
    while len(ran) < 600 and polls < 100:
        assert poller.poll(1.0)  # the loop's self-pipe makes the poll return at once
        polls += 1
    assert len(ran) == 600
    assert {name for _, name in ran} == {threading.current_thread().name}
    for n in range(3):
        mine = [i for i, _ in ran if i // 1000 == n]
        assert mine == sorted(mine)  # per-poster order kept
    tl.close()
    assert poller.callbacks == {}
    assert not tl.post(lambda: None)


def test_tick_loop_run_never_blocks_nor_raises_and_yields_after_a_bounded_run() -> None:
    poller = FakePoller()
    tl = TickLoop("test")
    tl.attach(poller)
    steps: list[int] = []

    async def forever() -> None:  # always ready: a run must still end
        while True:
            steps.append(1)
            await asyncio.sleep(0)

    async def failing() -> None:
        raise RuntimeError("a failing task")

    tl.loop.create_task(failing())
    task = tl.loop.create_task(forever())
    started = time.monotonic()
    tl.run()  # no exception reaches the caller (the failure is logged)
    assert time.monotonic() - started < 1.0
    first = len(steps)
    assert 0 < first <= MAX_ROUNDS
    # Work was left: the poller is asked to come back at once.
    assert poller.poll(0.5)
    assert len(steps) > first
    task.cancel()
    tl.close()


def test_tick_loop_takes_its_fast_path_on_this_python() -> None:
    """run_rounds() sets the loop up once per run using asyncio internals, checked at start;
    if a Python changed them it would fall back to run_forever() (slower), not break."""
    tl = TickLoop("test")
    assert tl.loop.fast  # type: ignore[attr-defined]
    seen: list[Any] = []

    async def inside() -> None:
        seen.append(asyncio.get_running_loop())

    tl.loop.create_task(inside())
    tl.run()
    assert seen == [tl.loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # not left set after the run
    tl.close()


def test_tick_loop_makes_the_poll_return_after_handing_syncobj_work_from_a_tick() -> None:
    poller = FakePoller()
    tl = TickLoop("test")
    tl.attach(poller)

    async def deliver() -> None:
        tl.note_syncobj_work()

    tl.run_from_tick()
    assert not poller.poll(0.05)  # nothing happened: the poll sleeps its timeout
    tl.loop.create_task(deliver())
    tl.run_from_tick()
    assert poller.poll(2.0)  # SyncObj was handed something: the poll returns at once
    tl.close()


def test_tick_loop_run_until_complete_is_exclusive_and_refused_from_inside() -> None:
    tl = TickLoop("test")

    async def inside() -> None:
        tl.run()  # a no-op from inside: nothing nests
        with pytest.raises(RuntimeError, match="inside"):
            tl.run_until_complete(asyncio.sleep(0), timeout=1.0)

    tl.run_until_complete(inside(), timeout=5.0)
    with pytest.raises(asyncio.TimeoutError):
        tl.run_until_complete(asyncio.sleep(10), timeout=0.05)
    tl.close()
    with pytest.raises(RuntimeError, match="closed"):
        tl.run_until_complete(asyncio.sleep(0), timeout=1.0)


class _Clock:
    """A clock a test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_closes_a_silent_stream_but_not_after_its_own_process_was_paused() -> None:
    clock = _Clock()
    monitor = LivenessMonitor(3.0, "test", clock=clock)
    fresh = Link("peer", Outbox(1024, 1024), clock)
    monitor.watch(fresh)
    for _ in range(4):
        clock.now += monitor.interval
        assert monitor.check() == []
    # The monitor's next round comes 30 s late, as after a SIGSTOP of this process: every
    # stream looks silent, but nothing was judged while the process was away.
    clock.now += 30.0
    assert monitor.check() == []
    assert not fresh.broken
    # Silence measured while the process runs is still found: nothing arrives from now on.
    closed: list[Link] = []
    for _ in range(int(3.0 / monitor.interval) + 2):
        clock.now += monitor.interval
        closed += monitor.check()
    assert closed == [fresh] and fresh.broken


def test_liveness_asks_a_quiet_stream_for_a_pulse_and_not_a_busy_one() -> None:
    clock = _Clock()
    monitor = LivenessMonitor(3.0, "test", clock=clock)
    quiet, busy = Link("q", Outbox(1024, 1024), clock), Link("b", Outbox(1024, 1024), clock)
    monitor.watch(quiet)
    monitor.watch(busy)
    while clock.now < 1000.0 + monitor.pulse_interval + monitor.interval:
        clock.now += monitor.interval
        monitor.sent(busy)
        quiet.touch()  # both hear from their peer: nobody is closed
        busy.touch()
        monitor.check()
    assert quiet.pulse_due and not busy.pulse_due


def test_tick_loop_logs_a_completion_for_a_closed_loop_at_debug_other_errors_as_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """grpcio's shared completion queue may hand a completion of a transport destroyed
    meanwhile to its closed loop: nothing waits for it. Any other loop error is an error."""
    tl = TickLoop("test")
    handler = tl.loop.get_exception_handler()
    assert handler is not None
    late = "Exception in callback PollerCompletionQueue._handle_events(<_Loop>)()"
    with caplog.at_level("DEBUG", logger="raftgrpc.tickloop"):
        handler(tl.loop, {"message": late, "exception": RuntimeError("Event loop is closed")})
        handler(tl.loop, {"message": late, "exception": RuntimeError("something else")})
        handler(
            tl.loop,
            {"message": "Task exception", "exception": RuntimeError("Event loop is closed")},
        )
    levels = [(r.levelname, "closed event loop" in r.getMessage()) for r in caplog.records]
    assert levels == [("DEBUG", True), ("ERROR", False), ("ERROR", False)]
    tl.close()

"""Outbox: order, spill to disk, bounded memory, never blocking, whole-or-nothing drops."""

from __future__ import annotations

import math
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from raftgrpc._transport.meter import ByteMeter
from raftgrpc._transport.outbox import Outbox


def drain(box: Outbox, max_bytes: int = 1 << 20) -> list[bytes]:
    out: list[bytes] = []
    while True:
        items = box.take(max_bytes, timeout=0)
        if not items:
            return out
        out.extend(items)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.binary(max_size=300), max_size=60),
    memory=st.integers(min_value=1, max_value=2000),
    take_sizes=st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=5),
)
def test_items_come_out_in_order_whatever_spills(
    items: list[bytes], memory: int, take_sizes: list[int]
) -> None:
    meter = ByteMeter()
    box = Outbox(memory_bytes=memory, spool_bytes=1 << 30, meter=meter)
    out: list[bytes] = []
    for i, item in enumerate(items):
        assert box.put(item)
        if i % 7 == 3:  # interleave consumption with production
            out.extend(box.take(take_sizes[i % len(take_sizes)], timeout=0))
        assert meter.current <= memory
    out.extend(drain(box))
    assert out == items
    assert meter.peak <= memory
    assert meter.current == 0
    box.close()


def test_memory_stays_bounded_while_megabytes_spill() -> None:
    meter = ByteMeter()
    box = Outbox(memory_bytes=256 * 1024, spool_bytes=1 << 30, meter=meter)
    chunk = bytes(range(256)) * 256  # 64 KiB, like a PySyncObj snapshot chunk
    for i in range(800):  # 50 MiB
        assert box.put(chunk[:-1] + bytes([i % 256]))
    assert meter.peak <= 256 * 1024
    assert box.spilled_bytes_total >= 49 * 1024 * 1024
    got = drain(box, max_bytes=1 << 20)
    assert len(got) == 800
    assert [g[-1] for g in got] == [i % 256 for i in range(800)]
    box.close()


def test_full_spool_refuses_and_queue_is_dropped_whole_on_close() -> None:
    box = Outbox(memory_bytes=10, spool_bytes=100)
    assert box.put(b"x" * 10)  # memory
    assert box.put(b"y" * 40)  # spool: 8-byte header + 40
    assert not box.put(b"z" * 60)  # would exceed the spool
    assert len(box) == 2
    box.close()
    assert len(box) == 0
    assert box.take(100, timeout=0) == []
    assert not box.put(b"late")


def test_put_never_waits_for_a_consumer() -> None:
    box = Outbox(memory_bytes=1024, spool_bytes=1 << 30)
    start = time.monotonic()
    for _ in range(2000):
        assert box.put(b"p" * 4096)
    assert time.monotonic() - start < 5.0  # 8 MiB with no consumer at all
    box.close()


def test_take_wakes_on_put_and_on_close() -> None:
    box = Outbox(memory_bytes=1024, spool_bytes=1024)
    results: list[list[bytes]] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        results.append(box.take(100, timeout=10))
        results.append(box.take(100, timeout=10))

    thread = threading.Thread(target=consume)
    thread.start()
    started.wait(5)
    box.put(b"hello")
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.001)
    box.close()
    thread.join(5)
    assert not thread.is_alive()
    assert results == [[b"hello"], []]


def test_spill_space_is_freed_while_the_queue_never_drains() -> None:
    """A queue that always holds something must not grow its spill file forever."""
    box = Outbox(memory_bytes=0, spool_bytes=1 << 30, segment_bytes=4096)
    item = b"q" * 1000
    for _ in range(3):
        assert box.put(item)
    for n in range(2000):
        assert box.put(item)
        assert box.take(max_bytes=1000, timeout=0) == [item]
        # Live data is 3 items; at most the segments holding them plus the one being written.
        assert box.spool_segments <= 2, n
    assert len(box) == 3
    box.close()
    assert box.spool_segments == 0


def test_spilled_items_respect_the_frame_size() -> None:
    box = Outbox(memory_bytes=0, spool_bytes=1 << 20, segment_bytes=4096)
    for size in (100, 100, 5000, 100):
        assert box.put(b"s" * size)
    assert [len(i) for i in box.take(max_bytes=300, timeout=0)] == [100, 100]
    assert [len(i) for i in box.take(max_bytes=300, timeout=0)] == [5000]  # alone, oversize
    assert [len(i) for i in box.take(max_bytes=300, timeout=0)] == [100]
    box.close()


@settings(max_examples=100, deadline=None)
@given(
    stamps=st.lists(st.floats(min_value=0, max_value=1e6), max_size=40),  # all long ago
    memory=st.integers(min_value=0, max_value=200),
    take_sizes=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=5),
)
def test_head_stamp_is_the_stamp_of_the_oldest_queued_item(
    stamps: list[float], memory: int, take_sizes: list[int]
) -> None:
    box = Outbox(memory_bytes=memory, spool_bytes=1 << 30)
    queued: list[float] = []
    for i, stamp in enumerate(stamps):
        assert box.put(b"x" * 30, stamp)
        queued.append(stamp)
        if i % 3 == 2:
            queued = queued[len(box.take(take_sizes[i % len(take_sizes)], timeout=0)) :]
        assert box.head_stamp == (queued[0] if queued else math.inf)
    drain(box)
    assert box.head_stamp == math.inf
    assert box.put(b"y", 5.0) and box.head_stamp == 5.0
    box.close()
    assert box.head_stamp == math.inf


def test_waiting_behind_a_snapshot_chunk_does_not_count() -> None:
    # A snapshot's chunks (never stale) may take minutes to leave; what was queued behind them
    # is timed from when the last one left, whether it waits in memory or on disk.
    for memory in (1 << 20, 0):
        box = Outbox(memory_bytes=memory, spool_bytes=1 << 30)
        long_ago = time.monotonic() - 600
        box.put(b"chunk")  # never stale
        box.put(b"entries", long_ago)
        box.put(b"heartbeat", long_ago)
        assert box.head_stamp == math.inf
        before = time.monotonic()
        assert box.take(5, timeout=0) == [b"chunk"]
        assert before <= box.head_stamp <= time.monotonic()
        assert box.take(7, timeout=0) == [b"entries"]
        assert box.head_stamp >= before  # still timed from when the chunk left
        box.close()

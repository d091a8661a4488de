"""The ordered queue of encoded messages waiting to be sent to one peer.

``put`` is called on PySyncObj's tick thread and never blocks on the network: messages stay
in memory up to a limit, then spill, in order, to an anonymous temporary file. A snapshot of
any size therefore streams with bounded memory while the tick thread keeps ticking. Only when
the spill file is full does ``put`` refuse, and the caller then resets the whole stream: a
queue is dropped whole or delivered whole, never with a hole in the middle.

The spill file is a chain of segments of at most ``segment_bytes`` each; a segment is closed
(and its disk space freed) as soon as it has been read, so the disk used stays below the
queued bytes plus one segment even when the queue never drains completely.

Each item carries a stamp, a time on the queue's clock (the transport stamps Raft messages with the
time they were queued) or +inf for an item that never goes stale (a snapshot chunk), and
:attr:`Outbox.head_stamp` tells how long the item at the head has been waiting, without any
per-item memory for what spilled. Waiting behind a never-stale item does not count: an item
queued behind one is timed from when the last never-stale item left.
"""

from __future__ import annotations

import collections
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable

from raftgrpc._transport.meter import ByteMeter

__all__ = ["Outbox"]

_HEADER = struct.Struct(">Qd")  # size, stamp
_SEGMENT_BYTES = 64 * 1024 * 1024


class _Segment:
    """One anonymous spill file of records ``[size][stamp][bytes]``, appended and read in
    order."""

    __slots__ = ("fd", "read", "write")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.read = 0
        self.write = 0


class Outbox:
    """An ordered, bounded-memory, never-blocking queue of byte strings.

    >>> box = Outbox(memory_bytes=8, spool_bytes=1024)
    >>> box.put(b"abcdef") and box.put(b"ghijkl")   # the second one spills to disk
    True
    >>> box.take(max_bytes=100, timeout=0)
    [b'abcdef', b'ghijkl']
    >>> box.close()
    """

    def __init__(
        self,
        memory_bytes: int,
        spool_bytes: int,
        meter: ByteMeter | None = None,
        spool_dir: str | None = None,
        segment_bytes: int = _SEGMENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._memory_limit = memory_bytes
        self._spool_limit = spool_bytes
        self._segment_limit = segment_bytes
        self._meter = meter if meter is not None else ByteMeter()
        self._spool_dir = spool_dir
        self._clock = clock  # the one the stamps are read on (the transport's)
        self._cond = threading.Condition(threading.Lock())
        self._memory: collections.deque[bytes] = collections.deque()
        self._memory_stamps: collections.deque[float] = collections.deque()
        self.head_stamp = math.inf
        """When the item at the head started waiting: its stamp, or when the last item that
        never goes stale left, if later; +inf when empty or when the head never goes stale."""
        self._resumed_at = -math.inf  # when the last never-stale item left
        self._memory_bytes = 0
        self._segments: collections.deque[_Segment] = collections.deque()
        self._spool_bytes = 0  # records written and not yet read, headers included
        self._spool_items = 0
        self._closed = False
        self.spilled_bytes_total = 0
        """Bytes ever written to the spill file (for tests and stats)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._memory) + self._spool_items

    @property
    def spool_segments(self) -> int:
        """How many spill files are open (for tests)."""
        return len(self._segments)

    def put(self, item: bytes, stamp: float = math.inf) -> bool:
        """Append ``item`` stamped ``stamp``; False if the queue is closed or its spill file
        is full.

        Raises OSError if the spill file cannot be written (disk full); nothing is queued then.
        """
        size = len(item)
        with self._cond:
            if self._closed:
                return False
            empty = not self._memory and not self._spool_items
            if self._spool_items == 0 and self._memory_bytes + size <= self._memory_limit:
                # Memory only while nothing waits on disk, so that order is kept.
                self._memory.append(item)
                self._memory_stamps.append(stamp)
                self._memory_bytes += size
                self._meter.add(size)
                if empty:
                    self.head_stamp = max(stamp, self._resumed_at)
                self._cond.notify()
                return True
            record = _HEADER.pack(size, stamp) + item
            if self._spool_bytes + len(record) > self._spool_limit:
                return False
            segment = self._segments[-1] if self._segments else None
            if segment is None or segment.write >= self._segment_limit:
                segment = _Segment(self._open_spool())
                self._segments.append(segment)
            self._write_all(segment.fd, record, segment.write)
            segment.write += len(record)
            self._spool_bytes += len(record)
            self._spool_items += 1
            self.spilled_bytes_total += size
            if empty:
                self.head_stamp = max(stamp, self._resumed_at)
            self._cond.notify()
            return True

    def take(self, max_bytes: int, timeout: float | None) -> list[bytes]:
        """Remove and return the oldest items, at least one and about ``max_bytes`` at most.

        Waits up to ``timeout`` seconds (None: forever) for an item; returns [] on timeout or
        once the queue is closed.
        """
        with self._cond:
            if not self._memory and not self._spool_items and not self._closed:
                self._cond.wait(timeout)
            if self._closed:
                return []
            out: list[bytes] = []
            total = 0
            while self._memory and (not out or total + len(self._memory[0]) <= max_bytes):
                item = self._memory.popleft()
                if self._memory_stamps.popleft() == math.inf:
                    self._resumed_at = self._clock()
                total += len(item)
                out.append(item)
            self._memory_bytes -= total
            self._meter.sub(total)
            if not self._memory:
                while self._spool_items:
                    spooled = self._read_spooled(max_bytes - total if out else None)
                    if spooled is None:
                        break
                    total += len(spooled)
                    out.append(spooled)
            self._update_head_stamp()
            return out

    def close(self) -> None:
        """Drop every queued item, release the spill file, and wake a waiting ``take``."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._meter.sub(self._memory_bytes)
            self._memory.clear()
            self._memory_stamps.clear()
            self.head_stamp = math.inf
            self._memory_bytes = 0
            self._spool_items = 0
            self._spool_bytes = 0
            while self._segments:
                os.close(self._segments.popleft().fd)
            self._cond.notify_all()

    def _open_spool(self) -> int:
        fd, path = tempfile.mkstemp(prefix="raftgrpc-outbox-", dir=self._spool_dir)
        os.unlink(path)  # anonymous: the space is freed when the fd closes, even on a crash
        return fd

    @staticmethod
    def _write_all(fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def _update_head_stamp(self) -> None:
        if self._memory_stamps:
            stamp = self._memory_stamps[0]
        elif self._spool_items:
            segment = self._segments[0]
            _, stamp = _HEADER.unpack(os.pread(segment.fd, _HEADER.size, segment.read))
        else:
            stamp = math.inf
        self.head_stamp = max(stamp, self._resumed_at)

    def _read_spooled(self, room: int | None) -> bytes | None:
        """Pop the oldest spilled item, or None if it is larger than ``room`` bytes."""
        segment = self._segments[0]
        size, stamp = _HEADER.unpack(os.pread(segment.fd, _HEADER.size, segment.read))
        if room is not None and size > room:
            return None
        if stamp == math.inf:
            self._resumed_at = self._clock()
        item = os.pread(segment.fd, size, segment.read + _HEADER.size)
        if len(item) != size:
            raise OSError(f"spill file truncated: read {len(item)} of {size} bytes")
        segment.read += _HEADER.size + size
        self._spool_bytes -= _HEADER.size + size
        self._spool_items -= 1
        if segment.read == segment.write:
            # Fully read: free its space now (the next spill opens a fresh segment).
            os.close(self._segments.popleft().fd)
        return item

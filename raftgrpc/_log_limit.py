"""A per-key rate limiter for log events: at most ``limit`` events per key per interval.

>>> limiter = RateLimiter(limit=2, interval_s=1.0)
>>> for i in range(5):
...     suppressed = limiter.admit("stream")
...     if suppressed is None:
...         continue  # over the limit: drop this event (it is counted)
...     if suppressed:
...         log.debug("suppressed %d events", suppressed)  # doctest: +SKIP
...     log.debug("event %d", i)  # doctest: +SKIP

Fixed windows per key: the first event of a key opens a window of ``interval_s``; the first
``limit`` events in it are admitted, the rest are counted and dropped. The first admitted
event of a later window carries the count of the events dropped since the last admitted one,
so that one summary line ("suppressed K events") can be written before it. Counts still
pending when events stop can be collected with :meth:`RateLimiter.drain`.

Keys are kept in least-recently-used order and at most ``max_keys`` of them are remembered
(a key forgotten this way loses its pending count). Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["RateLimiter"]


class _Window:
    __slots__ = ("admitted", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.admitted = 0
        self.suppressed = 0


class RateLimiter:
    """At most ``limit`` events per key in each window of ``interval_s`` seconds."""

    def __init__(
        self,
        limit: int = 10,
        interval_s: float = 1.0,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.limit = limit
        self.interval_s = float(interval_s)
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None: drop this event (over the limit; it is counted). Otherwise emit it, after a
        summary of the returned number of events of ``key`` dropped before it, if not 0."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now)
                if len(self._windows) > self._max_keys:
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end(key)
                if now - window.start >= self.interval_s:
                    window.start = now
                    window.admitted = 0
            if window.admitted >= self.limit:
                window.suppressed += 1
                return None
            window.admitted += 1
            suppressed, window.suppressed = window.suppressed, 0
            return suppressed

    def drain(self, key: Hashable | None = None) -> dict[Hashable, int]:
        """The pending dropped-event counts (of ``key``, or of every key), reset to 0."""
        with self._lock:
            keys = list(self._windows) if key is None else [key]
            counts: dict[Hashable, int] = {}
            for k in keys:
                window = self._windows.get(k)
                if window is not None and window.suppressed:
                    counts[k] = window.suppressed
                    window.suppressed = 0
            return counts

    def forget(self, key: Hashable) -> int:
        """Stop tracking ``key``; returns its pending dropped-event count."""
        with self._lock:
            window = self._windows.pop(key, None)
            return 0 if window is None else window.suppressed

"""raftgrpc._log_limit.RateLimiter."""

from __future__ import annotations

import threading

import pytest

from raftgrpc._log_limit import RateLimiter

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_admits_the_limit_then_counts_and_reports_once() -> None:
    clock = Clock()
    limiter = RateLimiter(limit=3, interval_s=1.0, clock=clock)
    assert [limiter.admit("k") for _ in range(3)] == [0, 0, 0]
    assert [limiter.admit("k") for _ in range(5)] == [None] * 5
    clock.now += 0.999
    assert limiter.admit("k") is None
    clock.now += 0.001  # a new window
    assert limiter.admit("k") == 6  # the summary: 6 dropped since the last admitted
    assert limiter.admit("k") == 0
    assert limiter.admit("k") == 0
    assert limiter.admit("k") is None


def test_keys_are_independent() -> None:
    limiter = RateLimiter(limit=1, interval_s=10.0, clock=Clock())
    assert limiter.admit("a") == 0
    assert limiter.admit("b") == 0
    assert limiter.admit("a") is None
    assert limiter.admit(("m", "in")) == 0


def test_drain_and_forget_return_pending_counts() -> None:
    limiter = RateLimiter(limit=1, interval_s=10.0, clock=Clock())
    for _ in range(4):
        limiter.admit("a")
    limiter.admit("b")
    limiter.admit("b")
    assert limiter.drain("a") == {"a": 3}
    assert limiter.drain("a") == {}
    assert limiter.drain() == {"b": 1}
    limiter.admit("b")
    assert limiter.forget("b") == 1
    assert limiter.admit("b") == 0  # a fresh window after forget
    assert limiter.forget("missing") == 0


def test_least_recently_used_keys_are_evicted() -> None:
    limiter = RateLimiter(limit=1, interval_s=10.0, max_keys=2, clock=Clock())
    limiter.admit("a")
    limiter.admit("b")
    limiter.admit("a")  # a is now the most recent
    limiter.admit("c")  # evicts b
    assert limiter.admit("b") == 0  # forgotten, so admitted again (this evicts a)
    assert limiter.admit("b") is None  # remembered now: over its limit


def test_thread_safe_admission_count() -> None:
    limiter = RateLimiter(limit=50, interval_s=60.0)
    admitted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        mine = sum(limiter.admit("k") is not None for _ in range(1000))
        with lock:
            admitted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sum(admitted) == 50
    assert limiter.drain() == {"k": 8000 - 50}


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"interval_s": 0}, {"interval_s": -1.0}, {"max_keys": 0}]
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]

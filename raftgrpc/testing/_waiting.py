"""Waiting on a condition with a deadline: how every raftgrpc test synchronises.

A fixed sleep is either too short on a busy machine (a flaky test) or too long everywhere (a
slow one); polling a condition until a deadline is neither, and its failure says what was
awaited and what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold by its deadline (an AssertionError: a test failure)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.005,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``what`` names the condition (or is called, on failure only, to describe the state seen
    last). An exception of a type in ``retry_on`` raised by ``predicate`` counts as "not
    yet" (a status read racing the tick thread) and is shown if the wait fails. Raises
    :class:`WaitTimeout` after ``timeout`` seconds.

    >>> wait_until(lambda: 42, 1.0, "the answer")
    42
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            extra = f" (last error: {last_error!r})" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {described}{extra}")
        time.sleep(interval)

"""An asyncio event loop that PySyncObj's own tick thread runs.

Every gRPC call of a :class:`~raftgrpc.GrpcTransport` (its server, its channels) lives on one
``grpc.aio`` event loop, and that loop has no thread of its own: the selector's file
descriptor is subscribed to SyncObj's poller, so the thread that ticks SyncObj also runs the
loop, whenever gRPC has an event for it and once per tick. A message received is handed to
SyncObj by the very coroutine that read it, on the tick thread; a message sent is written by
the tick thread itself. TCPTransport reads and writes its sockets on the tick thread too;
what gRPC adds per message is one wake-up of the tick thread by grpcio's completion-queue
thread, instead of the four thread hand-offs of grpcio's synchronous API (docs/performance.md).

Rules that follow, and that the transport keeps:

* Nothing of SyncObj's runs while the loop is run by another thread: only :meth:`run`,
  called from the poller and from the tick callback, runs it on the tick thread, and the
  blocking :meth:`run_until_complete` (binding, destroying) is used only where SyncObj is
  not ticking concurrently. A lock makes them exclusive.
* :meth:`run` never blocks (the selector is asked with a zero timeout) and never raises. It
  stops after :data:`MAX_ROUNDS` rounds or :data:`MAX_RUN_S` seconds, so that a flood of
  frames cannot keep SyncObj's own timers (elections, heartbeats) from running, and then
  makes the poller come back at once (a byte on a wake-up socket) for the rest.
* Work that SyncObj must see before its next tick (a message delivered from the tick
  callback's run, where no poll follows) calls :meth:`note_syncobj_work`; the poll that
  follows then returns at once instead of sleeping ``autoTickPeriod``.
* Other threads hand work over with :meth:`post` (``call_soon_threadsafe``: it writes to the
  loop's self-pipe, which wakes the poller).
* The loop is nobody else's business: whatever event loop the calling thread has running
  (a program that builds or ticks its SyncObj inside ``asyncio.run``) is set aside while this
  one runs and restored after, and SyncObj is called with no running loop
  (:meth:`calling_syncobj`), so its callbacks see the thread as they would on TCPTransport.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import sys
import threading
import time
from asyncio import events
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["MAX_ROUNDS", "MAX_RUN_S", "TickLoop"]

logger = logging.getLogger("raftgrpc.tickloop")

T = TypeVar("T")

MAX_ROUNDS = 64
"""Loop iterations one :meth:`TickLoop.run` may take (each runs every ready callback)."""

MAX_RUN_S = 0.02
"""Seconds one :meth:`TickLoop.run` may take before it yields back to SyncObj."""

_POLL_READ = 1  # pysyncobj.poller.POLL_EVENT_TYPE.READ


# The parts of asyncio's BaseEventLoop that _Loop.run_rounds uses (CPython 3.10 to 3.13).
_LOOP_INTERNALS = (
    "_ready",
    "_stopping",
    "_thread_id",
    "_run_once",
    "_check_closed",
    "_check_running",
    "_asyncgen_firstiter_hook",
    "_asyncgen_finalizer_hook",
)


class _Loop(asyncio.SelectorEventLoop):
    """A selector event loop that runs a bounded number of iterations without blocking."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        super().__init__(selector)
        # run_forever() sets the loop up for each call (running loop, async generator
        # hooks, coroutine origin tracking): ~2 µs per iteration when it is asked for one
        # iteration at a time. run_rounds() sets it up once per run, where asyncio's
        # internals are as expected; otherwise it falls back to stop() + run_forever().
        self.fast = all(hasattr(self, name) for name in _LOOP_INTERNALS) and not self.get_debug()

    def has_ready(self) -> bool:
        """Whether a callback is scheduled to run in the next iteration."""
        return bool(self._ready)  # type: ignore[attr-defined]

    def run_rounds(self, rounds: int, deadline: float) -> bool:
        """Run up to ``rounds`` iterations, each polling the selector with a zero timeout,
        until nothing is ready or ``deadline`` (monotonic) passed; True if work is left."""
        if not self.fast:
            for _ in range(rounds):
                self.stop()
                self.run_forever()
                if not self.has_ready():
                    return False
                if time.monotonic() > deadline:
                    break
            return True
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        hooks = sys.get_asyncgen_hooks()
        self._thread_id: int | None = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
            finalizer=self._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
        )
        events._set_running_loop(self)
        run_once = self._run_once  # type: ignore[attr-defined]
        try:
            for _ in range(rounds):
                self._stopping = True  # as stop() would: the selector is polled, not waited on
                run_once()
                if not self._ready:  # type: ignore[attr-defined]
                    return False
                if time.monotonic() > deadline:
                    break
            return True
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            sys.set_asyncgen_hooks(*hooks)


@contextmanager
def _aside() -> Iterator[None]:
    """The calling thread's running event loop (if any) set aside for the block."""
    outer = events._get_running_loop()
    if outer is None:
        yield
        return
    events._set_running_loop(None)
    try:
        yield
    finally:
        events._set_running_loop(outer)


class TickLoop:
    """An asyncio loop run by the thread that ticks SyncObj (see the module docstring).

    >>> tl = TickLoop("doc")
    >>> tl.run_until_complete(asyncio.sleep(0, result=42), timeout=1.0)
    42
    >>> tl.close()
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        self.loop: asyncio.AbstractEventLoop = _Loop(self._selector)
        self.loop.set_exception_handler(self._on_loop_error)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller: Any = None
        self._owner: int | None = None  # the thread running the loop now, if any
        self._outer: asyncio.AbstractEventLoop | None = None  # its own loop, set aside
        self.before_poll_run: Callable[[], None] | None = None
        """Called when the poller finds the loop's descriptors readable, before the loop runs
        (outside the loop and outside SyncObj's tick callbacks)."""
        self._syncobj_work = False
        self._closed = False
        self.runs = 0
        """How many times :meth:`run` ran the loop (for tests and stats)."""

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, poller: Any) -> None:
        """Subscribe the loop to SyncObj's poller (call before SyncObj ticks)."""
        self._poller = poller
        poller.subscribe(self._selector.fileno(), self._on_readable, _POLL_READ)
        poller.subscribe(self._wake_r.fileno(), self._on_wake, _POLL_READ)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def owns_current_thread(self) -> bool:
        """Whether the calling code runs inside a run of this loop (a coroutine, a loop
        callback, or SyncObj called from one of them)."""
        return self._owner == threading.get_ident()

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run whatever is ready, without blocking; never raises. A no-op when another
        thread runs the loop, or when called from inside the loop itself."""
        if self._closed or not self._lock.acquire(blocking=False):
            return
        outer = self._outer = events._get_running_loop()
        if outer is not None:
            events._set_running_loop(None)  # the caller's own loop (see the module docstring)
        self._owner = threading.get_ident()
        try:
            self._run_rounds()
        except Exception:  # never into SyncObj's tick thread
            logger.exception("raftgrpc: the event loop failed")
        finally:
            self._owner = self._outer = None
            if outer is not None:
                events._set_running_loop(outer)
            self._lock.release()

    def run_from_tick(self) -> None:
        """:meth:`run` for SyncObj's tick callback: if SyncObj was handed anything during
        it, the poll that follows returns at once (SyncObj acts on it in its next tick)."""
        self._syncobj_work = False
        self.run()
        if self._syncobj_work:
            self._wake()

    def note_syncobj_work(self) -> None:
        """Record that a callback into SyncObj ran in this run (see :meth:`run_from_tick`)."""
        self._syncobj_work = True

    def _run_rounds(self) -> None:
        self.runs += 1
        loop: _Loop = self.loop  # type: ignore[assignment]
        if loop.run_rounds(MAX_ROUNDS, time.monotonic() + MAX_RUN_S):
            self._wake()  # more is ready: the poller comes back for it at once

    def run_until_complete(self, awaitable: Awaitable[T], timeout: float) -> T:
        """Run the loop on the calling thread until ``awaitable`` is done (at most ``timeout``
        seconds: asyncio.TimeoutError). For binding and shutting down, where SyncObj does not
        tick concurrently; waits while the tick thread is running the loop."""
        refusal = None
        if self.owns_current_thread():
            refusal = "run_until_complete() called from inside the event loop"
        elif self._closed:
            refusal = "the event loop is closed"
        if refusal is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited: say so without a warning
            raise RuntimeError(refusal)
        with self._lock, _aside():
            self._owner = threading.get_ident()
            try:
                return self.loop.run_until_complete(asyncio.wait_for(awaitable, timeout))
            finally:
                self._owner = None

    @contextmanager
    def calling_syncobj(self) -> Iterator[None]:
        """Around a call into SyncObj from inside the loop: the thread shows the running loop
        it had when it started this run (usually none), as it would on TCPTransport; so a
        callback of the application may run its own (``asyncio.run`` in an
        ``onStateChanged`` callback)."""
        running = events._get_running_loop()
        if running is not self.loop:
            yield
            return
        events._set_running_loop(self._outer)
        try:
            yield
        finally:
            events._set_running_loop(running)

    def post(self, work: Callable[[], Any]) -> bool:
        """Run ``work`` on the loop soon (any thread); False once the loop is closed."""
        if self._closed:
            return False
        try:
            self.loop.call_soon_threadsafe(work)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def close(self) -> None:
        """Unsubscribe from the poller and close the loop. Idempotent; the loop must not be
        running (call from :meth:`run_until_complete`'s thread after it returned)."""
        if self._closed:
            return
        with self._lock, _aside():
            self._closed = True
            if self._poller is not None:
                for sock in (self._selector, self._wake_r):
                    try:
                        self._poller.unsubscribe(sock.fileno())
                    except Exception:  # a poller that no longer knows the fd
                        logger.debug("raftgrpc: cannot unsubscribe fd", exc_info=True)
                self._poller = None
            loop = self.loop
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                logger.debug("raftgrpc: error while closing the event loop", exc_info=True)
            finally:
                loop.close()
                self._wake_r.close()
                self._wake_w.close()

    # -- internals ---------------------------------------------------------------------------

    def _on_readable(self, _fd: int, _events: int) -> None:
        self._before_poll_run()
        self.run()

    def _on_wake(self, _fd: int, _events: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._before_poll_run()
        self.run()

    def _before_poll_run(self) -> None:
        hook = self.before_poll_run
        if hook is not None:
            try:
                hook()
            except Exception:  # never into SyncObj's tick thread
                logger.exception("raftgrpc: error before running the event loop")

    def wake(self) -> None:
        """Make the poller come back at once (any thread)."""
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the loop is closing

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, BlockingIOError):
            # grpcio's completion-queue socket is shared by every loop of the process (one
            # per node in a test process): a loop woken for a byte another loop took.
            return
        if (
            isinstance(error, RuntimeError)
            and str(error) == "Event loop is closed"
            and "_handle_events" in str(context.get("message"))
        ):
            # grpcio's completion queue hands each loop the completions of its own calls;
            # one of a transport destroyed meanwhile finds its loop closed: nothing waits
            # for it any more.
            logger.debug("raftgrpc: a completion for a closed event loop (%s)", self.name)
            return
        logger.error(
            "raftgrpc: %s (event loop of %s)",
            context.get("message", "error in the event loop"),
            self.name,
            exc_info=error if isinstance(error, BaseException) else None,
        )

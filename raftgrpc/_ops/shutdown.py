"""Graceful shutdown of a node: NOT_SERVING first, leadership handed over, then destroy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysyncobj.config import FAIL_REASON

from raftgrpc._abilities import ShutsDownGracefully
from raftgrpc._pysyncobj import is_leader, leader_of, tick_thread_of, transport_of

__all__ = ["ShutdownReport", "graceful_shutdown"]

logger = logging.getLogger("raftgrpc.shutdown")


@dataclass(frozen=True)
class ShutdownReport:
    """What :func:`graceful_shutdown` did. Durations are in seconds."""

    node: str | None
    """The node's id (None for a read-only node)."""
    was_leader: bool
    """Whether the node led the cluster when the shutdown began."""
    transferred_to: str | None
    """The node that led the cluster once this one stepped down; None if it did not lead, or
    if no other leader was seen in time."""
    transfer_attempts: int
    """``transferLeadership`` calls (a request is denied while no follower is caught up)."""
    not_serving_s: float
    """Time to report NOT_SERVING on the node's health services."""
    transfer_s: float
    """Time from the start of the transfer until another node led (or the timeout)."""
    drained_s: float
    """Time waited after the transfer so that NOT_SERVING lasts ``drain_s`` before closing."""
    destroy_s: float
    """Time from ``destroy()`` until the tick thread (and with it the transport) ended."""
    stopped: bool
    """Whether the tick thread ended within ``stop_timeout_s``."""
    total_s: float

    @property
    def transferred(self) -> bool:
        return self.transferred_to is not None


class _TickProbe:
    """A tick callback: runs submitted work on the tick thread and records who leads."""

    def __init__(self, syncobj: Any) -> None:
        self._syncobj = syncobj
        self._changed = threading.Condition()
        self._work: list[Callable[[], None]] = []
        self.ticks = 0
        self.is_leader = False
        self.leader: str | None = None

    def submit(self, work: Callable[[], None]) -> None:
        with self._changed:
            self._work.append(work)

    def __call__(self) -> None:  # on the tick thread
        with self._changed:
            work, self._work = self._work, []
        for item in work:
            try:
                item()
            except Exception:
                logger.exception("raftgrpc: graceful shutdown: error on the tick thread")
        leader = leader_of(self._syncobj)
        leads = is_leader(self._syncobj)
        with self._changed:
            self.leader = None if leader is None else str(leader.id)
            self.is_leader = leads
            self.ticks += 1
            self._changed.notify_all()


def graceful_shutdown(
    syncobj: Any,
    *,
    transfer_timeout_s: float = 5.0,
    drain_s: float = 1.0,
    stop_timeout_s: float = 10.0,
) -> ShutdownReport:
    """Shut a node down without costing its cluster an election timeout; call instead of
    ``syncobj.destroy()``.

    PySyncObj's ``destroy()`` is asynchronous: it only flags the tick thread, which then runs
    the transport's ``destroy()``. Destroying a leader that way leaves the cluster leaderless
    until its followers' election timeouts fire. This function, bounded at every step:

    1. reports NOT_SERVING on the node's health services at once
       (``begin_shutdown()``, :class:`raftgrpc.ShutsDownGracefully`; skipped for transports
       without it, such as TCPTransport), so probes and load balancers stop sending clients
       here;
    2. if the node leads, hands leadership over with ``syncobj.transferLeadership()`` (Raft's
       TimeoutNow, to the most caught-up connected follower), retrying while the request is
       denied (no follower caught up yet), and waits up to ``transfer_timeout_s`` until
       another node leads;
    3. waits until NOT_SERVING has been reported for ``drain_s`` (for clients and probes to
       notice while the port still answers);
    4. calls ``syncobj.destroy()`` and waits up to ``stop_timeout_s`` for the tick thread to
       end, the transport's ``destroy()`` having sent what was queued for peers (for up to
       ``TransportConfig.shutdown_grace_s``) and stopped its servers.

    Call it from any thread but the tick thread. With ``autoTick`` off it ticks the node
    itself (``doTick``) while it waits.
    """
    started = time.monotonic()
    self_node = getattr(syncobj, "selfNode", None)
    node_id = None if self_node is None else str(self_node.id)
    transport = transport_of(syncobj)
    if isinstance(transport, ShutsDownGracefully):
        transport.begin_shutdown()
    not_serving_at = time.monotonic()
    manual = not getattr(syncobj.conf, "autoTick", True)
    probe = _TickProbe(syncobj)

    def wait(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with probe._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if manual:
                    probe._changed.release()
                    try:
                        syncobj.doTick(min(remaining, 0.01))
                    finally:
                        probe._changed.acquire()
                else:
                    probe._changed.wait(remaining)
            return True

    syncobj.addOnTickCallback(probe)
    was_leader = False
    transferred_to: str | None = None
    attempts = 0
    transfer_started = time.monotonic()
    try:
        ticked = probe.ticks
        if wait(lambda: probe.ticks > ticked, min(transfer_timeout_s, 2.0)):
            was_leader = probe.is_leader
        transfer_started = time.monotonic()
        if was_leader:
            attempts, transferred_to = _transfer(syncobj, probe, wait, node_id, transfer_timeout_s)
        transfer_s = time.monotonic() - transfer_started
    finally:
        syncobj.removeOnTickCallback(probe)
    drain_started = time.monotonic()
    remaining = drain_s - (drain_started - not_serving_at)
    if remaining > 0:
        threading.Event().wait(remaining)
    drained_s = time.monotonic() - drain_started
    destroy_started = time.monotonic()
    syncobj.destroy()
    thread = tick_thread_of(syncobj)
    stopped = True
    if thread is not None and thread is not threading.current_thread():
        thread.join(stop_timeout_s)
        stopped = not thread.is_alive()
    report = ShutdownReport(
        node=node_id,
        was_leader=was_leader,
        transferred_to=transferred_to,
        transfer_attempts=attempts,
        not_serving_s=not_serving_at - started,
        transfer_s=transfer_s,
        drained_s=drained_s,
        destroy_s=time.monotonic() - destroy_started,
        stopped=stopped,
        total_s=time.monotonic() - started,
    )
    logger.info(
        "raftgrpc: node %s shut down: %s",
        node_id,
        report,
        extra={"event": "node.shutdown", "node": node_id},
    )
    return report


def _transfer(
    syncobj: Any,
    probe: _TickProbe,
    wait: Callable[[Callable[[], bool], float], bool],
    node_id: str | None,
    timeout_s: float,
) -> tuple[int, str | None]:
    """Ask for leadership transfers until another node leads; (attempts, new leader)."""
    deadline = time.monotonic() + timeout_s
    conf = syncobj.conf
    # A TimeoutNow that got through makes the target win within about one round trip; one
    # that was lost (the target disconnected meanwhile) is retried after an election timeout.
    settle_s = float(getattr(conf, "raftMaxTimeout", 1.4))
    retry_s = float(getattr(conf, "appendEntriesPeriod", 0.1))
    attempts = 0

    def moved() -> bool:
        return not probe.is_leader and probe.leader not in (None, node_id)

    while time.monotonic() < deadline and not moved():
        attempts += 1
        outcome = _request_transfer(syncobj, probe)

        def answered(o: list[int] = outcome) -> bool:
            return bool(o) or moved()

        if not wait(answered, deadline - time.monotonic()) or moved():
            break
        if outcome[0] == FAIL_REASON.SUCCESS:
            wait(moved, min(settle_s, deadline - time.monotonic()))
        elif outcome[0] == FAIL_REASON.NOT_LEADER:
            wait(moved, deadline - time.monotonic())  # it stepped down: see who leads
            break
        else:  # denied: no follower caught up (or connected) yet; retry after a heartbeat

            def heartbeat(after: int = probe.ticks + 1) -> bool:
                return moved() or probe.ticks > after

            wait(heartbeat, min(retry_s, deadline - time.monotonic()))
    with probe._changed:
        return attempts, probe.leader if moved() else None


def _request_transfer(syncobj: Any, probe: _TickProbe) -> list[int]:
    """Ask for a transfer on the tick thread; the list gets the callback's FAIL_REASON."""
    outcome: list[int] = []
    probe.submit(lambda: syncobj.transferLeadership(callback=lambda _r, err: outcome.append(err)))
    return outcome

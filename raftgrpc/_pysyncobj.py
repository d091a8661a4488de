"""Everything raftgrpc knows about PySyncObj beyond its documented API, in one place.

PySyncObj (``pysyncobj`` on PyPI) has no public API for some of what a transport, a health
check or an admin service needs: its tick-thread poller, its leader, private fields behind
name mangling, the values of its enums. Every such access is a function here, so that a new
PySyncObj release is checked in one module (tests/test_pysyncobj.py fails if a name moved).
Checked against pysyncobj 0.3.17 (pyproject.toml requires >= 0.3.17).

It also holds what every raftgrpc transport owes PySyncObj's tick thread, whatever carries
its messages: PySyncObj calls a transport on its tick thread and does not expect it to raise
(:func:`guarded`); and once a transport is destroyed, nothing it still does may reach SyncObj
through a callback (:func:`drop_callbacks`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pysyncobj.config import FAIL_REASON

__all__ = [
    "CANDIDATE",
    "FAIL_REASON_NAMES",
    "FOLLOWER",
    "LEADER",
    "NOT_LEADER",
    "RAFT_STATE_NAMES",
    "SUCCESS",
    "destroy_here",
    "drop_callbacks",
    "election_deadline",
    "forget_connect_attempts",
    "guarded",
    "is_leader",
    "last_response_times",
    "leader_of",
    "poller_of",
    "tick_thread_of",
    "transport_of",
    "utility_callbacks",
]

# -- enums -------------------------------------------------------------------------------

FAIL_REASON_NAMES: Mapping[int, str] = {
    value: name
    for name, value in vars(FAIL_REASON).items()
    if not name.startswith("_") and isinstance(value, int)
}
"""``pysyncobj.config.FAIL_REASON`` by value (``{0: "SUCCESS", 1: "QUEUE_FULL", ...}``): the
names are part of raftgrpc's admin wire contract (trailing metadata ``raftgrpc-fail-reason``)."""
SUCCESS: int = FAIL_REASON.SUCCESS
NOT_LEADER: int = FAIL_REASON.NOT_LEADER

# pysyncobj.syncobj._RAFT_STATE (private): the ``state`` of getStatus().
FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
RAFT_STATE_NAMES: Mapping[int, str] = {
    FOLLOWER: "follower",
    CANDIDATE: "candidate",
    LEADER: "leader",
}
"""Each Raft state of ``getStatus()['state']`` by its lower-case name."""


# -- private state of a SyncObj ----------------------------------------------------------


def leader_of(syncobj: Any) -> Any:
    """The node the SyncObj believes leads (a ``pysyncobj.Node``), or None."""
    return syncobj._getLeader()


def is_leader(syncobj: Any) -> bool:
    """Whether the SyncObj leads now."""
    return bool(syncobj._isLeader())


def last_response_times(syncobj: Any) -> Mapping[Any, float] | None:
    """On a leader: the monotonic time each follower last answered, by node (None if the
    field is absent in this PySyncObj)."""
    answered = getattr(syncobj, "_SyncObj__lastResponseTime", None)
    return answered if isinstance(answered, Mapping) else None


def election_deadline(syncobj: Any) -> float | None:
    """On a follower: the monotonic time at which it starts an election unless the leader
    is heard from (reset by every append-entries), or None if the field is absent."""
    deadline = getattr(syncobj, "_SyncObj__raftElectionDeadline", None)
    return float(deadline) if isinstance(deadline, int | float) else None


def transport_of(syncobj: Any) -> Any:
    """The SyncObj's transport (``SyncObj.__transport``), or None if the field is absent."""
    return getattr(syncobj, "_SyncObj__transport", None)


def tick_thread_of(syncobj: Any) -> threading.Thread | None:
    """The SyncObj's own tick thread (``SyncObj.__thread``; None with ``autoTick`` off)."""
    thread = getattr(syncobj, "_SyncObj__thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def destroy_here(syncobj: Any) -> None:
    """Destroy the SyncObj on the calling thread (``SyncObj._doDestroy``): for a node whose
    tick thread has ended without destroying it (``destroy()`` only asks that thread)."""
    syncobj._doDestroy()


# -- the tick thread ---------------------------------------------------------------------


def guarded(log: logging.Logger, work: Callable[[], Any], what: str) -> Any:
    """Run ``work`` and return what it returns; log on ``log`` (with ``what`` it was doing)
    rather than raise (then None)."""
    try:
        return work()
    except Exception:
        log.exception("raftgrpc: error while %s", what)
        return None


def drop_callbacks(transport: Any) -> None:
    """Unset the SyncObj callbacks of a ``pysyncobj.transport.Transport`` (at destroy)."""
    for setter in (
        transport.setOnMessageReceivedCallback,
        transport.setOnNodeConnectedCallback,
        transport.setOnNodeDisconnectedCallback,
        transport.setOnReadonlyNodeConnectedCallback,
        transport.setOnReadonlyNodeDisconnectedCallback,
    ):
        setter(None)


def forget_connect_attempts(transport: Any, nodes: Iterable[Any]) -> bool:
    """Have a ``TCPTransport`` redial ``nodes`` on its next tick instead of after
    ``SyncObjConf.connectionRetryTime``; False (and nothing done) for any other transport.

    ``TCPTransport`` keeps the time of each node's last connection attempt in
    ``_lastConnectAttempt`` and skips a node until ``connectionRetryTime`` has passed since;
    dropping the entry makes the node due at once. Checked against pysyncobj 0.3.17.
    """
    attempts = getattr(transport, "_lastConnectAttempt", None)
    if not isinstance(attempts, dict):
        return False
    for node in nodes:
        attempts.pop(node, None)
    return True


def poller_of(syncobj: Any) -> Any:
    """SyncObj's poller (``SyncObj._poller``, a ``pysyncobj.poller.Poller``): what its tick
    thread waits in, and so where a transport subscribes the fds that must wake it."""
    return syncobj._poller


def utility_callbacks(transport: Any) -> dict[str, Callable[[list[Any], Any], None]]:
    """The utility message callbacks (status, add, remove, set_version, transfer) SyncObj
    registered on ``transport`` with ``setOnUtilityMessageCallback``
    (``Transport._onUtilityMessageCallbacks``), as a copy."""
    return dict(transport._onUtilityMessageCallbacks)

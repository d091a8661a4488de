"""What every raftgrpc transport owes PySyncObj's tick thread, whatever carries its messages.

PySyncObj calls a transport on its tick thread and does not expect it to raise; and once a
transport is destroyed, nothing it still does may reach SyncObj through a callback.

This is also the one module that reads PySyncObj's internals (checked against pysyncobj
0.3.17): what a transport needs of them is a function here, so that a PySyncObj upgrade is
checked in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["drop_callbacks", "guarded", "poller_of", "utility_callbacks"]


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


def poller_of(syncobj: Any) -> Any:
    """SyncObj's poller (``SyncObj._poller``, a ``pysyncobj.poller.Poller``): what its tick
    thread waits in, and so where a transport subscribes the fds that must wake it."""
    return syncobj._poller


def utility_callbacks(transport: Any) -> dict[str, Callable[[list[Any], Any], None]]:
    """The utility message callbacks (status, add, remove, set_version, transfer) SyncObj
    registered on ``transport`` with ``setOnUtilityMessageCallback``
    (``Transport._onUtilityMessageCallbacks``), as a copy."""
    return dict(transport._onUtilityMessageCallbacks)

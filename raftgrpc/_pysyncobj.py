"""What every raftgrpc transport owes PySyncObj's tick thread, whatever carries its messages.

PySyncObj calls a transport on its tick thread and does not expect it to raise; and once a
transport is destroyed, nothing it still does may reach SyncObj through a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["drop_callbacks", "guarded"]


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

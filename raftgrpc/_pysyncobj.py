"""What every raftgrpc transport owes PySyncObj's tick thread, whatever carries its messages.

PySyncObj calls a transport on its tick thread and does not expect it to raise; and once a
transport is destroyed, nothing it still does may reach SyncObj through a callback.

The functions that reach into PySyncObj's internals live here, so that an upgrade of
PySyncObj has one module to check; each says which versions it was checked against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["drop_callbacks", "forget_connect_attempts", "guarded"]


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

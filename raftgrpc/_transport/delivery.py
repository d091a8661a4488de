"""Handing received messages to SyncObj, one by one, traced or not, never raising.

SyncObj's ``_onMessageReceived`` may raise on a message (a bug, a full disk, a big entry
that does not unpickle yet): that is logged and the next message is delivered, as
TCPTransport would go on reading. With a frame observer (tracing), each message that
carries a trace context is delivered inside the observer's span.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from raftgrpc._protocol.failures import expected_syncobj_failure
from raftgrpc._transport.middleware import FrameObserver

__all__ = ["deliver_each", "deliver_traced", "log_syncobj_failure"]

logger = logging.getLogger("raftgrpc.transport")

Receive = Callable[[Any, dict[str, Any]], None]
"""SyncObj's message callback as a transport holds it (``Transport._onMessageReceived``)."""


def deliver_each(receive: Receive, node: Any, messages: list[dict[str, Any]]) -> None:
    """``receive(node, message)`` for each message; what SyncObj raises is logged."""
    for message in messages:
        try:
            receive(node, message)
        except Exception:
            log_syncobj_failure(message)


def deliver_traced(
    receive: Receive,
    observer: FrameObserver,
    node: Any,
    messages: list[dict[str, Any]],
    carriers: list[dict[str, str] | None],
) -> None:
    """:func:`deliver_each`, each message that carries a trace context inside the span
    ``observer`` makes for it; an observer that fails costs its span, never the message."""
    for message, carrier in zip(messages, carriers, strict=True):
        if carrier is None:  # most messages of a frame that carries some trace context
            try:
                receive(node, message)
            except Exception:
                log_syncobj_failure(message)
            continue
        try:
            span = observer.on_receive(node.id, message, carrier, 0)
            span.__enter__()
        except Exception:
            logger.exception("raftgrpc: the frame observer failed; delivering untraced")
            span = None
        error: Exception | None = None
        try:
            receive(node, message)
        except Exception as exc:
            log_syncobj_failure(message)
            error = exc
        if span is not None:
            try:
                span.__exit__(type(error) if error else None, error, None)
            except Exception:
                logger.exception("raftgrpc: the frame observer failed to end a span")


def log_syncobj_failure(message: dict[str, Any]) -> None:
    """Log the exception SyncObj raised on ``message`` (called from an except block)."""
    error = sys.exc_info()[1]
    if expected_syncobj_failure(message, error):
        logger.info(
            "raftgrpc: SyncObj could not unpickle a big entry at a chunk labelled 'finish' "
            "(expected now and then: a later chunk completes it): %s",
            error,
        )
        return
    logger.exception("raftgrpc: SyncObj failed on a %s message", message.get("type"))

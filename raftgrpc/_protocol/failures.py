"""How loud a failure is in the log (pure code): the shell logs, this decides the level.

A cluster whose peers come and go must not flood its log with what is routine (a peer that
is down refuses every redial), nor hide what is not (an established stream that fails, a
message SyncObj could not take).
"""

from __future__ import annotations

import logging
import pickle

import grpc

__all__ = ["expected_syncobj_failure", "stream_failure_level"]


def stream_failure_level(code: grpc.StatusCode | None, established: bool) -> tuple[int, str]:
    """The log level and event name of an outbound stream that ended with ``code``.

    A dial that finds the peer UNAVAILABLE is routine while the peer is down (debug,
    ``peer.unreachable``); an established stream lost to UNAVAILABLE is news (info); any
    other status means something is wrong (warning). CANCELLED, this node's own doing, is
    not logged at all (the caller's to skip).

    >>> stream_failure_level(grpc.StatusCode.UNAVAILABLE, established=False)
    (10, 'peer.unreachable')
    """
    if established or code != grpc.StatusCode.UNAVAILABLE:
        level = logging.WARNING if code != grpc.StatusCode.UNAVAILABLE else logging.INFO
        return level, "stream.failed"
    return logging.DEBUG, "peer.unreachable"


def expected_syncobj_failure(message: dict[str, object], error: BaseException | None) -> bool:
    """Whether SyncObj raising ``error`` on ``message`` is expected now and then (log it at
    info), rather than a failure to log with its traceback.

    PySyncObj labels a big entry's last few chunks 'finish'; :mod:`raftgrpc._protocol.chunks`
    relabels those that cannot end a pickle, and one that ends like one by chance (1 in
    ~256) remains: SyncObj fails to unpickle there and completes the entry on a later chunk.
    """
    return message.get("transmission") == "finish" and _unpickling_failed(error)


def _unpickling_failed(error: BaseException | None) -> bool:
    # pysyncobj.pickle.loads retries a failed C unpickling in pure Python: the C error is
    # then the context of what the retry raised.
    while error is not None:
        if isinstance(error, pickle.UnpicklingError):
            return True
        error = error.__context__
    return False

"""Settings of gRPC's C core that take effect only if made before ``grpc`` is imported.

``import raftgrpc`` applies them (:func:`apply`); an explicit setting in the environment wins.

``GRPC_ENABLE_FORK_SUPPORT=0``
    PySyncObj forks (``useFork=True``, the default) to write its dump file while gRPC
    threads run. gRPC's fork handlers then run in that child and abort it ("Other threads
    are currently calling into gRPC"); the child only pickles to a file and never touches
    gRPC, so the handlers are not needed.

``GRPC_EXPERIMENTS=`` :data:`EVENT_ENGINE_OFF`
    gRPC's EventEngine (the default I/O engine of grpcio 1.85) hands each read and write to
    its own threads; with it off, the C core writes on the calling thread (SyncObj's tick
    thread) and reads on the one thread that polls the completion queue. Measured on the
    same cluster (docs/performance.md, bench/prototypes): commit latency at one command in
    flight 16% lower, CPU per commit 12% lower, and 100 commands in flight 15-20% more
    commits per second. These are internal experiment flags of grpcio and may
    vanish in a later release; ``tests/test_grpcenv.py`` fails if they stop taking effect.
    ``RAFTGRPC_EVENT_ENGINE=on`` keeps gRPC's default (it is process-wide: other gRPC
    channels and servers of the process use the same engine). gRPC reads the variable when
    it is imported, so :func:`apply` imports it then and puts the environment back as it
    was: child processes do not inherit the setting (one that imports raftgrpc makes it
    itself).
"""

from __future__ import annotations

import os
import sys

__all__ = ["EVENT_ENGINE_OFF", "apply", "event_engine"]

EVENT_ENGINE_OFF = (
    "-event_engine_client,-event_engine_listener,"
    "-event_engine_for_all_other_endpoints,-event_engine_callback_cq"
)
"""The ``GRPC_EXPERIMENTS`` value that turns gRPC's EventEngine off for sockets."""

_state = {"event_engine": "unknown"}


def apply() -> None:
    """Make the settings (once, at ``import raftgrpc``)."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    wanted = os.environ.get("RAFTGRPC_EVENT_ENGINE", "off").strip().lower()
    if wanted == "on":
        _state["event_engine"] = "on (RAFTGRPC_EVENT_ENGINE=on)"
    elif "GRPC_EXPERIMENTS" in os.environ:
        _state["event_engine"] = f"as GRPC_EXPERIMENTS={os.environ['GRPC_EXPERIMENTS']!r} says"
    elif "grpc" in sys.modules:
        # Too late for this process: gRPC read its experiments when it was imported.
        _state["event_engine"] = "on (grpc was imported before raftgrpc)"
    else:
        os.environ["GRPC_EXPERIMENTS"] = EVENT_ENGINE_OFF
        try:
            import grpc  # noqa: F401  # reads its experiments now
        finally:
            del os.environ["GRPC_EXPERIMENTS"]
        _state["event_engine"] = "off"


def event_engine() -> str:
    """What :func:`apply` found: ``"off"``, or why gRPC's EventEngine is on (or unknown)."""
    return _state["event_engine"]

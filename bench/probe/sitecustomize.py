"""Latency probes for bench/breakdown.py, loaded into each node process through PYTHONPATH.

Active only when ``RAFTGRPC_PROBE_DIR`` is set: stamps (``time.perf_counter_ns``, one clock
for every process of the machine) are taken where a Raft message passes each point of its
path, kept in memory, and written to ``$RAFTGRPC_PROBE_DIR/<pid>.json`` on SIGUSR1. The
points are the transports' own functions, wrapped (nothing of raftgrpc or PySyncObj is
changed), so the same points exist for TCPTransport and GrpcTransport:

``submit``        the client calls a replicated method (client thread)
``cb``            SyncObj calls the command's callback (tick thread)
``send``          SyncObj calls ``transport.send`` (tick thread), per message
``wire_out``      the transport hands bytes to the socket / to gRPC's ``call.write``
``wire_in``       the transport has bytes from the peer (the tick thread runs with them)
``deliver``       the transport calls SyncObj with a message (tick thread)

Each stamp keeps the thread's name; messages are keyed by the log index they concern (an
append_entries by its last entry, a next_node_idx by the index it acknowledges).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

_DIR = os.environ.get("RAFTGRPC_PROBE_DIR")
_stamps: list[tuple[str, object, int, str]] = []


def _stamp(name: str, key: object = None) -> None:
    _stamps.append((name, key, time.perf_counter_ns(), threading.current_thread().name))


def _key(message: dict) -> tuple[str, int] | None:
    kind = message.get("type")
    if kind == "append_entries" and message.get("entries"):
        return ("ae", message["entries"][-1][1])
    if kind == "next_node_idx":
        return ("nni", message["next_node_idx"] - 1)
    return None


def _dump(_signum: int, _frame: object) -> None:
    path = os.path.join(_DIR or ".", f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(list(_stamps), out)
    os.replace(path + ".tmp", path)


def _wrap_transport(cls: type) -> None:
    send, received = cls.send, cls._onMessageReceived

    def probed_send(self, node, message):  # type: ignore[no-untyped-def]
        key = _key(message)
        if key is not None:
            _stamp("send", key)
        return send(self, node, message)

    def probed_received(self, node, message):  # type: ignore[no-untyped-def]
        key = _key(message)
        if key is not None:
            _stamp("deliver", key)
        return received(self, node, message)

    cls.send = probed_send
    cls._onMessageReceived = probed_received


def _install() -> None:
    from pysyncobj import syncobj, tcp_connection, transport

    apply = syncobj.SyncObj._applyCommand

    def probed_apply(self, command, callback, commandType=None):  # type: ignore[no-untyped-def]
        _stamp("submit")
        if callback is not None and not isinstance(callback, tuple):
            inner = callback

            def callback(res, err):  # type: ignore[no-untyped-def]
                _stamp("cb")
                inner(res, err)

        return apply(self, command, callback, commandType)

    syncobj.SyncObj._applyCommand = probed_apply
    _wrap_transport(transport.TCPTransport)

    # TCPTransport: bytes go out in TcpConnection.send, come in in its read handler.
    conn = tcp_connection.TcpConnection
    conn_send = conn.send

    def probed_conn_send(self, message):  # type: ignore[no-untyped-def]
        result = conn_send(self, message)
        _stamp("wire_out")
        return result

    conn.send = probed_conn_send
    read_name = "_TcpConnection__processRead"
    process_read = getattr(conn, read_name)

    def probed_read(self):  # type: ignore[no-untyped-def]
        _stamp("wire_in")
        return process_read(self)

    setattr(conn, read_name, probed_read)

    # GrpcTransport: frames are built right before call.write / the yield to gRPC, and fed
    # to the frame reader as soon as the event loop (the tick thread) has them.
    import raftgrpc._protocol.frames
    from raftgrpc._transport.grpc_transport import GrpcTransport

    _wrap_transport(GrpcTransport)
    feed = raftgrpc._protocol.frames.FrameReader.feed

    def probed_feed(self, raw):  # type: ignore[no-untyped-def]
        _stamp("wire_in")
        return feed(self, raw)

    raftgrpc._protocol.frames.FrameReader.feed = probed_feed
    _patch_frame_builders()


def _patch_frame_builders() -> None:
    # peer.py and server.py call codec.request_frame_bytes / codec.response_frame_bytes
    # through the codec module: wrapping the module's functions reaches both.
    from raftgrpc._protocol import codec

    for name in ("request_frame_bytes", "response_frame_bytes"):
        built = getattr(codec, name)

        def probed_frame(items, built=built):  # type: ignore[no-untyped-def]
            data = built(items)
            _stamp("wire_out")
            return data

        setattr(codec, name, probed_frame)


if _DIR:
    _install()
    signal.signal(signal.SIGUSR1, _dump)

"""Prototype B: grpcio's synchronous API, a server-streaming call opened by the receiver.

Each node subscribes to each peer (``unary_stream``, with
``grpc.experimental.ChannelOptions.SingleThreadedUnaryStream``: the reading thread polls the
call's own completion queue) and delivers what it reads to SyncObj's tick thread through a
deque and a socket pair byte; the sender's server handler thread yields frames from a
per-subscriber queue that ``send()`` fills. The best synchronous shape of the latency floor
table (DESIGN.md §6). No security or liveness: for latency only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.experimental
from pysyncobj.transport import Transport

from raftgrpc._protocol import codec
from raftgrpc.v1 import transport_pb2 as pb

SERVICE = "raftgrpc.prototype.Subscribe"
log = logging.getLogger("prototype.sync_streaming")


class SyncStreamingTransport(Transport):  # type: ignore[misc]
    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._self = selfNode
        self._others = list(otherNodes)
        self._members = {n.id: n for n in otherNodes}
        self._out: dict[Any, tuple[collections.deque[bytes], threading.Condition]] = {}
        self._bound = False
        self._work: collections.deque[Any] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        syncObj._poller.subscribe(self._wake_r.fileno(), self._on_wake, 1)
        syncObj.addOnTickCallback(self._drain)

    @property
    def ready(self) -> bool:
        return self._bound

    def _post(self, work: Any) -> None:
        self._work.append(work)
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass

    def _on_wake(self, fd: int, ev: int) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        self._drain()

    def _drain(self) -> None:
        while self._work:
            try:
                self._work.popleft()()
            except Exception:
                log.exception("work failed")

    def tryGetReady(self) -> None:
        if self._bound:
            return
        executor = concurrent.futures.ThreadPoolExecutor(16)
        self._server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_stream_rpc_method_handler(self._handle)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Subscribe": handler}),)
        )
        self._server.add_insecure_port(self._self.id)
        self._server.start()
        self._bound = True
        for node in self._others:
            threading.Thread(target=self._subscribe, args=(node,), daemon=True).start()

    def _handle(self, request: bytes, context: Any) -> Iterator[bytes]:
        node = self._members[request.decode()]
        queue: collections.deque[bytes] = collections.deque()
        ready = threading.Condition()
        self._post(lambda: self._connected(node, queue, ready))
        while context.is_active():
            with ready:
                while not queue:
                    ready.wait(1.0)
                    if not context.is_active():
                        return
                items = list(queue)
                queue.clear()
            yield codec.response_frame_bytes(items)

    def _connected(self, node: Any, queue: Any, ready: Any) -> None:
        self._out[node] = (queue, ready)
        self._onNodeConnected(node)

    def _subscribe(self, node: Any) -> None:
        options = [(grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]
        while True:
            try:
                channel = grpc.insecure_channel(node.id, options=options)
                responses = channel.unary_stream(f"/{SERVICE}/Subscribe")(self._self.id.encode())
                for raw in responses:
                    messages = codec.decode_frame_messages(pb.StreamResponse.FromString(raw).frame)
                    self._post(lambda messages=messages: self._deliver(node, messages))
            except Exception as exc:
                log.info("subscription to %s: %r", node, exc)
            time.sleep(0.2)

    def _deliver(self, node: Any, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            try:
                self._onMessageReceived(node, message)
            except Exception:
                log.exception("SyncObj failed")

    def send(self, node: Any, message: Any) -> bool:
        out = self._out.get(node)
        if out is None:
            return False
        queue, ready = out
        data = codec.encode_message(message)
        with ready:
            queue.append(data)
            ready.notify()
        return True

    def addNode(self, node: Any) -> None:
        pass

    def dropNode(self, node: Any) -> None:
        pass

    def destroy(self) -> None:
        pass

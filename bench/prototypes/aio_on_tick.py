"""Prototype A: one grpc.aio event loop per transport, run by SyncObj's tick thread.

The loop's selector is subscribed to SyncObj's poller; the tick thread runs the loop when
gRPC has an event and after each tick; frames are written with ``call.write`` and read by a
coroutine that hands them to SyncObj on the spot. One bidirectional stream per direction,
raftgrpc's codec. No handshake checks, liveness, queues or security: the shortest path this
design allows, for latency only. GrpcTransport (raftgrpc._transport.grpc_transport) is this design
finished.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import selectors
import socket
from typing import Any

import grpc
from pysyncobj.transport import Transport

from raftgrpc._protocol import codec
from raftgrpc.v1 import transport_pb2 as pb

METHOD = "/raftgrpc.v1.RaftTransport/Stream"
log = logging.getLogger("prototype.aio_on_tick")


class AioOnTickTransport(Transport):  # type: ignore[misc]
    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._sel = selectors.EpollSelector()
        self._loop = asyncio.SelectorEventLoop(self._sel)
        self._self = selfNode
        self._others = list(otherNodes)
        self._members = {n.id: n for n in otherNodes}
        self._out: dict[Any, tuple[collections.deque[bytes], asyncio.Event]] = {}
        self._connected: set[Any] = set()
        self._bound = False
        self._delivered = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        syncObj._poller.subscribe(self._sel.fileno(), lambda fd, ev: self._run(), 1)
        syncObj._poller.subscribe(self._wake_r.fileno(), self._on_wake, 1)
        syncObj.addOnTickCallback(self._on_tick)

    @property
    def ready(self) -> bool:
        return self._bound

    def _on_wake(self, fd: int, ev: int) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        self._run()

    def _on_tick(self) -> None:
        self._delivered = False
        self._run()
        if self._delivered:  # SyncObj has work: the poll that follows must not sleep
            self._wake_w.send(b"x")

    def _run(self) -> None:
        loop = self._loop
        for _ in range(64):
            loop.stop()
            loop.run_forever()
            if not loop._ready:  # type: ignore[attr-defined]
                break

    def tryGetReady(self) -> None:
        if self._bound:
            return
        self._loop.run_until_complete(self._serve())
        self._bound = True
        for n in self._others:
            self._loop.create_task(self._dial(n))

    async def _serve(self) -> None:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.stream_stream_rpc_method_handler(self._handle)
        generic = grpc.method_handlers_generic_handler(
            "raftgrpc.v1.RaftTransport", {"Stream": handler}
        )
        self._server.add_generic_rpc_handlers((generic,))
        self._server.add_insecure_port(self._self.id)
        await self._server.start()

    async def _handle(self, requests: Any, context: Any) -> None:
        raw = await context.read()
        node = self._members[pb.StreamRequest.FromString(raw).hello.node_id]
        welcome = pb.Welcome(protocol_version=1, node_id=self._self.id)
        await context.write(pb.StreamResponse(welcome=welcome).SerializeToString())
        while True:
            raw = await context.read()
            if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
                return
            envelope = pb.StreamRequest.FromString(raw)
            if envelope.WhichOneof("kind") != "frame":
                continue
            for message in codec.decode_frame_messages(envelope.frame):
                self._delivered = True
                try:
                    self._onMessageReceived(node, message)
                except Exception:
                    log.exception("SyncObj failed")

    async def _dial(self, node: Any) -> None:
        while True:
            try:
                channel = grpc.aio.insecure_channel(node.id)
                call = channel.stream_stream(METHOD)()
                hello = pb.Hello(protocol_version=1, node_id=self._self.id)
                await call.write(pb.StreamRequest(hello=hello).SerializeToString())
                await call.read()
                queue: collections.deque[bytes] = collections.deque()
                event = asyncio.Event()
                self._out[node] = (queue, event)
                self._connected.add(node)
                self._onNodeConnected(node)
                while True:
                    if not queue:
                        event.clear()
                        await event.wait()
                    items = list(queue)
                    queue.clear()
                    await call.write(codec.request_frame_bytes(items))
            except Exception as exc:
                log.info("dial %s: %r", node, exc)
                self._out.pop(node, None)
                if node in self._connected:
                    self._connected.discard(node)
                    self._onNodeDisconnected(node)
                await asyncio.sleep(0.2)

    def send(self, node: Any, message: Any) -> bool:
        out = self._out.get(node)
        if out is None:
            return False
        out[0].append(codec.encode_message(message))
        out[1].set()
        return True

    def addNode(self, node: Any) -> None:
        pass

    def dropNode(self, node: Any) -> None:
        pass

    def destroy(self) -> None:
        pass

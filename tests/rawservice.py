"""A raw-bytes gRPC service for interceptor tests, shaped like raftgrpc's own.

Generic handlers whose methods carry bytes (no (de)serializers), including a long-lived
bidirectional ``/raftgrpc.v1.RaftTransport/Stream`` whose requests are read by a separate
thread, as in ``raftgrpc._transport.inbound``, and a ``grpc.health.v1.Health/Check``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

STREAM = "/raftgrpc.v1.RaftTransport/Stream"
ECHO = "/raftgrpc.test.Echo/Unary"
FAIL = "/raftgrpc.test.Echo/Fail"
COUNT = "/raftgrpc.test.Echo/Count"
HOLD = "/raftgrpc.test.Echo/Hold"
HEALTH = "/grpc.health.v1.Health/Check"

_END = object()


def _stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    # Like raftgrpc._transport.inbound: a reader thread takes the requests, the handler yields
    # answers.
    answers: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        try:
            for request in requests:
                answers.put(request.upper())
        except grpc.RpcError:
            pass
        finally:
            answers.put(_END)

    threading.Thread(target=read, name="rawservice-reader", daemon=True).start()
    while True:
        answer = answers.get()
        if answer is _END:
            return
        yield answer


def _hold(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    # Answers the first request, then holds the stream until the RPC ends (the client
    # cancels): the handler ends after gRPC knows of the cancellation, deterministically.
    # (A handler that ends by itself while the cancellation is in flight ends with OK as far
    # as the server knows.)
    ended = threading.Event()
    context.add_callback(ended.set)
    yield next(requests).upper()
    ended.wait(10)


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"abort":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
    if request == b"raise":
        raise RuntimeError("handler bug")
    return request[::-1]


def _fail(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise RuntimeError("stream handler bug")


def _count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()


def _health(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"\x08\x01"  # HealthCheckResponse(status=SERVING)


def handlers() -> list[grpc.GenericRpcHandler]:  # type: ignore[type-arg]
    return [
        grpc.method_handlers_generic_handler(
            "raftgrpc.v1.RaftTransport",
            {"Stream": grpc.stream_stream_rpc_method_handler(_stream)},
        ),
        grpc.method_handlers_generic_handler(
            "raftgrpc.test.Echo",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(_echo),
                "Fail": grpc.unary_stream_rpc_method_handler(_fail),
                "Count": grpc.unary_stream_rpc_method_handler(_count),
                "Hold": grpc.stream_stream_rpc_method_handler(_hold),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(_health)}
        ),
    ]


class Running:
    """A started server on 127.0.0.1:0 and the channels made to it; ``close()`` ends all."""

    def __init__(self, server_interceptors: list[Any], extra: list[Any] | None = None) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            handlers=[*handlers(), *(extra or [])],
            interceptors=server_interceptors,
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        assert self.port
        self.server.start()
        self._channels: list[grpc.Channel] = []

    def channel(self, *client_interceptors: Any, options: Any = None) -> grpc.Channel:
        raw = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        self._channels.append(raw)
        return grpc.intercept_channel(raw, *client_interceptors) if client_interceptors else raw

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.server.stop(None).wait(5)


class Feed:
    """A request iterator fed from the test: ``put`` messages, then ``close`` to end it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def put(self, item: bytes) -> None:
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(_END)

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> bytes:
        item = self._queue.get()
        if item is _END:
            raise StopIteration
        assert isinstance(item, bytes)
        return item

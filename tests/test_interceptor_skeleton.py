"""The server-interceptor skeleton (raftgrpc.interceptors._skeleton): one policy, the same
hooks in the same order for the four handler kinds, on grpcio's synchronous server and on a
grpc.aio server, over real servers and a real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from raftgrpc.interceptors._skeleton import CallHooks, CallKind, Refusal, ServerLayer

pytestmark = pytest.mark.timeout(60)

SERVICE = "raftgrpc.test.Kinds"
TIMEOUT_S = 10.0


class Recorder(ServerLayer[str]):
    """Records every hook; refuses a call with metadata ``refuse`` and a request ``b"bad"``."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def select(self, details: grpc.HandlerCallDetails) -> str | None:
        return None if details.method.endswith("/Skipped") else details.method.rsplit("/")[-1]

    def open(self, plan: str, context: Any, kind: CallKind) -> CallHooks:
        self.events.append(("open", plan, kind.flavor.name))
        return Recorded(self.events, context)


class Recorded(CallHooks):
    __slots__ = ("_context", "_events")

    def __init__(self, events: list[tuple[Any, ...]], context: Any) -> None:
        self._events = events
        self._context = context

    def admit(self) -> Refusal | None:
        self._events.append(("admit",))
        if any(key == "refuse" for key, _ in self._context.invocation_metadata()):
            return Refusal(grpc.StatusCode.PERMISSION_DENIED, "refused by the layer")
        return None

    def check_request(self, request: Any) -> Refusal | None:
        self._events.append(("request", request))
        return self._judge(request)

    def on_request(self, request: Any, index: int) -> Refusal | None:
        self._events.append(("request", request, index))
        return self._judge(request)

    def on_response(self, response: Any, index: int) -> None:
        self._events.append(("response", response, index))

    def on_end(self, exc: BaseException | None) -> None:
        self._events.append(("end", None if exc is None else type(exc).__name__))

    @staticmethod
    def _judge(request: Any) -> Refusal | None:
        if request == b"bad":
            return Refusal(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        return None


class Handlers:
    """The four kinds, for both servers; ``seen`` is what reached the handlers."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def sync(self) -> grpc.GenericRpcHandler:
        seen = self.seen

        def unary(request: bytes, context: Any) -> bytes:
            seen.append(request)
            return b"u:" + request

        def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
            seen.append(request)
            yield b"s1:" + request
            yield b"s2:" + request

        def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
            got = []
            for request in requests:
                seen.append(request)
                got.append(request)
            return b"c:" + b"+".join(got)

        def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            for request in requests:
                seen.append(request)
                yield b"b:" + request

        return self._generic(unary, server_stream, client_stream, bidi)

    def aio(self) -> grpc.GenericRpcHandler:
        seen = self.seen

        async def unary(request: bytes, context: Any) -> bytes:
            seen.append(request)
            return b"u:" + request

        async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            seen.append(request)
            yield b"s1:" + request
            yield b"s2:" + request

        async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
            got = []
            async for request in requests:
                seen.append(request)
                got.append(request)
            return b"c:" + b"+".join(got)

        async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for request in requests:
                seen.append(request)
                yield b"b:" + request

        return self._generic(unary, server_stream, client_stream, bidi)

    @staticmethod
    def _generic(*behaviors: Callable[..., Any]) -> grpc.GenericRpcHandler:
        unary, server_stream, client_stream, bidi = behaviors
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
                "Skipped": grpc.unary_unary_rpc_method_handler(unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            },
        )


def run(flavor: str, calls: Callable[[grpc.Channel], Any]) -> tuple[Any, Recorder, Handlers]:
    """``calls(channel)`` against a server of ``flavor`` under a Recorder layer."""
    layer, handlers = Recorder(), Handlers()
    if flavor == "sync":
        server = grpc.server(ThreadPoolExecutor(4), interceptors=[layer])
        server.add_generic_rpc_handlers((handlers.sync(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                return calls(channel), layer, handlers
        finally:
            server.stop(None)

    async def main() -> Any:
        server = grpc.aio.server(interceptors=[layer.aio()])
        server.add_generic_rpc_handlers((handlers.aio(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, calls, channel)
        finally:
            await server.stop(None)

    return asyncio.run(main()), layer, handlers


def method(channel: grpc.Channel, kind: str, name: str) -> Any:
    factory = {
        "unary_unary": channel.unary_unary,
        "unary_stream": channel.unary_stream,
        "stream_unary": channel.stream_unary,
        "stream_stream": channel.stream_stream,
    }[kind]
    return factory(f"/{SERVICE}/{name}")


FLAVORS = ["sync", "aio"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_hooks_of_each_kind_in_order(flavor: str) -> None:
    def calls(channel: grpc.Channel) -> list[Any]:
        return [
            method(channel, "unary_unary", "Unary")(b"a", timeout=TIMEOUT_S),
            list(method(channel, "unary_stream", "ServerStream")(b"b", timeout=TIMEOUT_S)),
            method(channel, "stream_unary", "ClientStream")(iter([b"c", b"d"]), timeout=TIMEOUT_S),
            list(method(channel, "stream_stream", "Bidi")(iter([b"e", b"f"]), timeout=TIMEOUT_S)),
        ]

    results, layer, _ = run(flavor, calls)
    assert results == [b"u:a", [b"s1:b", b"s2:b"], b"c:c+d", [b"b:e", b"b:f"]]
    assert layer.events == [
        ("open", "Unary", flavor),
        ("admit",),
        ("request", b"a"),
        ("end", None),
        ("open", "ServerStream", flavor),
        ("admit",),
        ("request", b"b"),
        ("response", b"s1:b", 1),
        ("response", b"s2:b", 2),
        ("end", None),
        ("open", "ClientStream", flavor),
        ("admit",),
        ("request", b"c", 1),
        ("request", b"d", 2),
        ("end", None),
        ("open", "Bidi", flavor),
        ("admit",),
        ("request", b"e", 1),
        ("response", b"b:e", 1),
        ("request", b"f", 2),
        ("response", b"b:f", 2),
        ("end", None),
    ]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_refusal_ends_the_call_before_the_handler_sees_it(flavor: str) -> None:
    def calls(channel: grpc.Channel) -> list[tuple[grpc.StatusCode, str]]:
        outcomes = []
        attempts = [
            lambda: method(channel, "unary_unary", "Unary")(
                b"a", metadata=(("refuse", "1"),), timeout=TIMEOUT_S
            ),
            lambda: method(channel, "unary_unary", "Unary")(b"bad", timeout=TIMEOUT_S),
            lambda: list(
                method(channel, "stream_stream", "Bidi")(iter([b"ok", b"bad"]), timeout=TIMEOUT_S)
            ),
        ]
        for attempt in attempts:
            with pytest.raises(grpc.RpcError) as refused:
                attempt()
            outcomes.append((refused.value.code(), refused.value.details()))
        return outcomes

    outcomes, _, handlers = run(flavor, calls)
    assert outcomes == [
        (grpc.StatusCode.PERMISSION_DENIED, "refused by the layer"),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad request"),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad request"),
    ]
    assert handlers.seen == [b"ok"]  # never a refused request


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_method_the_layer_does_not_select_is_left_alone(flavor: str) -> None:
    def calls(channel: grpc.Channel) -> bytes:
        response: bytes = method(channel, "unary_unary", "Skipped")(b"x", timeout=TIMEOUT_S)
        return response

    response, layer, _ = run(flavor, calls)
    assert response == b"u:x" and layer.events == []

"""TransportBuilder: chain order, and the middleware it gives every node."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftgrpc import ConfigError, TransportBuilder, TransportConfig
from raftgrpc._transport.middleware import Middleware
from tests.certs import make_ca, node_cert, tls_config
from tests.helpers import auth_files, free_port, wait_until
from tests.host import Host, pair

pytestmark = pytest.mark.timeout(60)


class Recording(grpc.aio.ServerInterceptor):
    """Records its name each time a call reaches it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.log.append(self.name)
        return await continuation(details)


class RecordingClient(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        self.log.append(self.name)
        return await continuation(details, requests)


class SyncClient(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


class SyncRecording(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        return continuation(details)


def test_first_added_layer_is_outermost_on_both_sides(hosts: list[Host]) -> None:
    server_log: list[str] = []
    client_log: list[str] = []
    builder = (
        TransportBuilder()
        .with_server_interceptor(Recording("outer", server_log))
        .with_client_interceptor(RecordingClient("outer", client_log))
        .with_server_interceptor(Recording("inner", server_log))
        .with_client_interceptor(RecordingClient("inner", client_log))
    )
    assert builder.layers == ["user", "user", "user", "user"]
    pair(hosts, TransportConfig(), factory=builder.build())
    # Two streams (one per direction), each passing both layers, outer first.
    assert server_log[:4] == ["outer", "inner", "outer", "inner"]
    assert client_log[:4] == ["outer", "inner", "outer", "inner"]


def test_a_built_factory_keeps_its_layers_when_the_builder_changes_later(
    hosts: list[Host],
) -> None:
    """build() freezes the chain: layers added to the builder afterwards, or a second
    build, do not reach the transports of a factory built before."""
    server_log: list[str] = []
    builder = TransportBuilder().with_server_interceptor(Recording("built", server_log))
    factory = builder.build()
    builder.with_server_interceptor(Recording("later", server_log)).with_logging()
    assert builder.layers == ["user", "user", "logging"]
    pair(hosts, TransportConfig(), factory=factory)
    assert server_log.count("built") >= 2  # one stream per direction passed the layer
    assert "later" not in server_log
    # The builder itself (and what it builds next) has the new layers.
    assert len(builder.middleware("127.0.0.1:1").server_interceptors) == 3


def test_the_builder_refuses_inputs_of_the_wrong_type_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="TransportConfig"):
        TransportBuilder().with_config({"connect_timeout_s": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="TlsConfig or a function"):
        TransportBuilder().with_tls("certs/")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="function of the node id"):
        TransportBuilder().with_jwt(tokens="token")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="service factory"):
        TransportBuilder().with_service(42)  # type: ignore[arg-type]


def test_a_server_interceptor_of_the_synchronous_api_is_refused_with_the_reason() -> None:
    """A node's server is a grpc.aio server: a grpc.ServerInterceptor could not run there."""
    with pytest.raises(ConfigError, match=r"SyncRecording is not a grpc\.aio\.ServerInterceptor"):
        TransportBuilder().with_server_interceptor(SyncRecording())
    with pytest.raises(ConfigError, match=r"grpc\.aio"):
        Middleware(server_interceptors=(SyncRecording(),))


def test_client_interceptors_of_the_synchronous_api_apply_to_dialled_channels_only() -> None:
    sync_client = SyncClient()
    aio_client = RecordingClient("x", [])
    mw = (
        TransportBuilder()
        .with_client_interceptor(sync_client, aio_client)
        .middleware("127.0.0.1:1")
    )
    assert mw.dial_interceptors == (sync_client,)
    assert mw.client_interceptors == (aio_client,)


def test_the_factory_gives_each_node_its_own_middleware_from_one_configuration(
    hosts: list[Host],
) -> None:
    seen: list[str] = []

    def tokens(node_id: str) -> Any:
        seen.append(node_id)
        return _Static("t")

    builder = TransportBuilder().with_jwt(tokens=tokens, allow_insecure_loopback=True)
    a, _b, a_addr, b_addr = pair(hosts, TransportConfig(), factory=builder.build())
    assert sorted(set(seen)) == sorted({a_addr, b_addr})
    assert a.transport.__class__.__name__ == "GrpcTransport"


class _Static:
    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


def test_tokens_without_a_secure_channel_are_refused_at_build_time() -> None:
    builder = TransportBuilder().with_jwt(tokens=lambda node_id: _Static("t"))
    with pytest.raises(ConfigError, match="secure channels"):
        builder.middleware("127.0.0.1:1")
    with pytest.raises(ConfigError, match="channel credentials"):
        Middleware(call_credentials=lambda node_id: grpc.access_token_call_credentials("t"))


@pytest.mark.parametrize("mode", ["audit", "enforce"])
def test_rolling_auth_on_audit_accepts_old_nodes_and_enforce_refuses_them(
    hosts: list[Host], tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Node a restarted with JWT, node b not yet (both on TLS, as the rollout requires)."""
    ca = make_ca(tmp_path)

    def tls(node_id: str) -> Any:
        return tls_config(
            node_cert(ca, node_id, directory=tmp_path / "certs"), require_client_cert=True
        )

    verifier, tokens = auth_files(tmp_path)
    new = TransportBuilder().with_tls(tls).with_jwt(verifier=verifier, tokens=tokens, mode=mode)
    old = TransportBuilder().with_tls(tls)
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="raftgrpc.auth"):
        a = Host(a_addr, [b_addr], TransportConfig(), factory=new.build())
        hosts.append(a)
        b = Host(b_addr, [a_addr], TransportConfig(), factory=old.build())
        hosts.append(b)
        # a -> b always works: b ignores the token it does not check.
        a.tick_until(lambda: ("connected", b_addr) in a.events, 10, "a connected to b", (b,))
        if mode == "audit":
            b.tick_until(lambda: ("connected", a_addr) in b.events, 10, "b connected to a", (a,))
            wait_until(
                lambda: any(getattr(r, "event", "") == "auth.audit" for r in caplog.records),
                5,
                "an auth.audit line",
            )
        else:
            b.tick_until(
                lambda: any(getattr(r, "event", "") == "auth.denied" for r in caplog.records),
                10,
                "b's stream refused",
                also=(a,),
            )
            for _ in range(20):
                a.tick(0.005)
                b.tick(0.005)
            assert ("connected", a_addr) not in b.events


def test_dial_gives_unary_calls_the_same_security_and_identity(tmp_path: Path) -> None:
    from concurrent import futures

    from raftgrpc.interceptors import auth

    verifier, tokens = auth_files(tmp_path)
    builder = (
        TransportBuilder()
        .with_jwt(verifier=verifier, tokens=tokens, allow_insecure_loopback=True)
        .with_retries([("raftgrpc.test.Admin", None)])
    )
    assert builder.layers == ["jwt", "retry"]
    mw = builder.middleware("127.0.0.1:1")
    # A service of the user's own, on a server of grpcio's synchronous API: the sync flavor
    # of the same layer checks what dial() sends.
    sync_auth = auth.server_interceptor(verifier)

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        claims = auth.current_claims()
        return (claims.subject if claims else "nobody").encode()

    handler = grpc.method_handlers_generic_handler(
        "raftgrpc.test.Admin", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(2), handlers=[handler], interceptors=[sync_auth]
    )
    assert mw.server_credentials is not None
    port = server.add_secure_port("127.0.0.1:0", mw.server_credentials)
    server.start()
    try:
        with builder.dial(f"127.0.0.1:{port}", node_id="10.0.0.7:4321") as channel:
            reply = channel.unary_unary("/raftgrpc.test.Admin/WhoAmI")(b"", timeout=10)
        assert reply == b"10.0.0.7:4321"
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as plain,
            pytest.raises(grpc.RpcError) as refused,
        ):
            plain.unary_unary("/raftgrpc.test.Admin/WhoAmI")(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(None).wait(5)


def test_traces_cross_the_wire_between_two_transports(hosts: list[Host]) -> None:
    """raftgrpc's message spans and the RPC spans both join one trace across two nodes."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    builder = TransportBuilder().with_tracing(provider, sample_ratio=1.0)
    a, b, a_addr, b_addr = pair(hosts, TransportConfig(), factory=builder.build())
    vote = {"type": "request_vote", "term": 5, "last_log_index": 1, "last_log_term": 1}
    a.tick_thread = threading.current_thread()
    assert a.transport.send(a.transport._peers[next(iter(a.transport._peers))].node, vote)
    b.tick_until(lambda: b.messages, 10, "b to receive the vote", also=(a,))
    assert b.messages == [(a_addr, vote)]  # the trace context is not part of the message
    spans = exporter.get_finished_spans()
    sent = [s for s in spans if s.name == "raftgrpc.send request_vote"]
    received = [s for s in spans if s.name == "raftgrpc.receive request_vote"]
    assert len(sent) == 1 and len(received) == 1
    assert sent[0].attributes is not None and received[0].attributes is not None
    assert sent[0].attributes["raftgrpc.node"] == a_addr
    assert received[0].attributes["raftgrpc.node"] == b_addr
    assert received[0].context.trace_id == sent[0].context.trace_id
    assert received[0].parent is not None
    assert received[0].parent.span_id == sent[0].context.span_id
    # RPC-level spans end with their streams: close both nodes, then pair them up.
    for h in list(hosts):
        h.tick_thread = threading.current_thread()
        h.transport.destroy()
        hosts.remove(h)
    rpc = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "/raftgrpc.v1.RaftTransport/Stream" or s.name.endswith("RaftTransport/Stream")
    ]
    clients = {s.context.trace_id for s in rpc if s.kind.name == "CLIENT"}
    servers = {s.context.trace_id for s in rpc if s.kind.name == "SERVER"}
    # One accepted stream per direction (dials that found no server yet have client spans
    # only); each server span joined the trace of the client span that opened it.
    assert len(servers) == 2
    assert servers <= clients


def test_what_syncobj_sends_in_reaction_to_an_untraced_message_is_not_traced(
    hosts: list[Host],
) -> None:
    """A stream's coroutine runs in its RPC's context, where the RPC span is current; SyncObj
    reacting to a message delivered there must not look like a reaction to a traced one
    (found by the middleware benchmark: every reply got a span of its own)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    builder = TransportBuilder().with_tracing(provider, sample_ratio=0.0)  # RPC spans on
    a, b, _a_addr, b_addr = pair(hosts, TransportConfig(), factory=builder.build())
    vote = {"type": "request_vote", "term": 5, "last_log_index": 1, "last_log_term": 1}
    answer = {"type": "response_vote", "term": 5}
    replies: list[bool] = []

    def react(node: Any, message: dict[str, Any]) -> None:  # as SyncObj answers a vote
        replies.append(b.transport.send(node, answer))

    b.transport.setOnMessageReceivedCallback(react)
    a.tick_thread = threading.current_thread()
    assert a.transport.send(a.transport._peers[next(iter(a.transport._peers))].node, vote)
    a.tick_until(lambda: a.messages, 10, "a to receive b's answer", also=(b,))
    assert replies == [True] and a.messages == [(b_addr, answer)]
    names = [s.name for s in exporter.get_finished_spans()]
    assert not [n for n in names if n.startswith("raftgrpc.")], names

"""raftgrpc.interceptors.tracing: RPC spans over raw-bytes generic handlers, FrameTracer."""

from __future__ import annotations

import random
import threading
import timeit
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.grpc import client_interceptor as upstream_client_interceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from raftgrpc._errors import ConfigError
from raftgrpc.interceptors import tracing
from tests.rawservice import COUNT, ECHO, FAIL, HEALTH, HOLD, STREAM, Feed, Running

pytestmark = pytest.mark.timeout(30)


class Exporter(InMemorySpanExporter):  # type: ignore[misc]
    """In-memory exporter that can wait for spans (no sleeps)."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with self._cond:
            self._cond.notify_all()
        return result

    def wait(self, count: int, timeout: float = 5.0) -> list[ReadableSpan]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.get_finished_spans()) >= count, timeout)
        spans = list(self.get_finished_spans())
        assert ok, f"expected {count} spans, got {[s.name for s in spans]}"
        return spans


def _provider() -> tuple[TracerProvider, Exporter]:
    exporter = Exporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def traced() -> Iterator[tuple[Running, grpc.Channel, Exporter]]:
    provider, exporter = _provider()
    running = Running([tracing.server_interceptor(provider)])
    channel = running.channel(tracing.client_interceptor(provider))
    yield running, channel, exporter
    running.close()
    provider.shutdown()


def _by_kind(spans: list[ReadableSpan]) -> dict[SpanKind, ReadableSpan]:
    return {s.kind: s for s in spans}


def _assert_parent_child(client: ReadableSpan, server: ReadableSpan) -> None:
    assert client.context is not None and server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id


# --------------------------------------------------------------------------- RPC spans


def test_unary_client_and_server_spans_share_a_trace(traced: Any) -> None:
    _, channel, exporter = traced
    assert channel.unary_unary(ECHO)(b"abc", timeout=5) == b"cba"
    spans = _by_kind(exporter.wait(2))
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    _assert_parent_child(client, server)
    assert client.name == server.name == ECHO
    assert server.attributes is not None and server.attributes["rpc.grpc.status_code"] == 0


def test_bidi_raw_bytes_stream_spans_share_a_trace(traced: Any) -> None:
    _, channel, exporter = traced
    feed = Feed()
    call = channel.stream_stream(STREAM)(feed, timeout=10)
    assert isinstance(call, grpc.Call) and isinstance(call, grpc.Future)
    for word in (b"hello", b"append", b"entries"):
        feed.put(word)
        assert next(call) == word.upper()
    # A long-lived stream: no span ends while it is open.
    assert exporter.get_finished_spans() == ()
    feed.close()
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK
    spans = _by_kind(exporter.wait(2))
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    _assert_parent_child(client, server)
    assert client.status.status_code == StatusCode.UNSET
    assert server.attributes is not None and server.attributes["rpc.method"] == "Stream"


def test_cancelled_stream_ends_both_spans_with_cancelled(traced: Any) -> None:
    _, channel, exporter = traced
    feed = Feed()
    call = channel.stream_stream(HOLD)(feed, timeout=10)
    feed.put(b"hello")
    assert next(call) == b"HELLO"
    call.cancel()
    feed.close()
    spans = _by_kind(exporter.wait(2))
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    _assert_parent_child(client, server)
    assert client.attributes is not None and client.attributes["rpc.grpc.status_code"] == 1
    assert client.status.status_code == StatusCode.ERROR  # client conventions: non-OK = error
    # Upstream alone leaves 0 (OK) here; our inner layer records CANCELLED.
    assert server.attributes is not None and server.attributes["rpc.grpc.status_code"] == 1
    assert server.status.status_code == StatusCode.UNSET


def test_aborted_and_failing_calls(traced: Any) -> None:
    _, channel, exporter = traced
    with pytest.raises(grpc.RpcError) as denied:
        channel.unary_unary(ECHO)(b"abort", timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    spans = _by_kind(exporter.wait(2))
    assert spans[SpanKind.SERVER].attributes["rpc.grpc.status_code"] == 7  # type: ignore[index]
    assert spans[SpanKind.CLIENT].attributes["rpc.grpc.status_code"] == 7  # type: ignore[index]
    exporter.clear()

    with pytest.raises(grpc.RpcError) as failed:
        list(channel.unary_stream(FAIL)(b"", timeout=5))
    assert failed.value.code() == grpc.StatusCode.UNKNOWN
    spans = _by_kind(exporter.wait(2))
    server = spans[SpanKind.SERVER]
    assert server.attributes is not None and server.attributes["rpc.grpc.status_code"] == 2
    assert server.status.status_code == StatusCode.ERROR


def test_unary_stream_returns_the_call_and_ends_the_span(traced: Any) -> None:
    _, channel, exporter = traced
    call = channel.unary_stream(COUNT)(b"3", timeout=5)
    # Upstream would return a lazy generator here; the adapter keeps the grpc.Call.
    assert isinstance(call, grpc.Call)
    assert list(call) == [b"0", b"1", b"2"]
    _assert_parent_child(
        *(_by_kind(exporter.wait(2))[k] for k in (SpanKind.CLIENT, SpanKind.SERVER))
    )


def test_health_checks_are_excluded(traced: Any) -> None:
    _, channel, exporter = traced
    assert channel.unary_unary(HEALTH)(b"", timeout=5) == b"\x08\x01"
    assert channel.unary_unary(ECHO)(b"x", timeout=5) == b"x"
    spans = exporter.wait(2)
    assert {s.name for s in spans} == {ECHO}


def test_health_checks_traced_when_asked() -> None:
    provider, exporter = _provider()
    running = Running([tracing.server_interceptor(provider, exclude_health=False)])
    try:
        channel = running.channel(tracing.client_interceptor(provider, exclude_health=False))
        channel.unary_unary(HEALTH)(b"", timeout=5)
        assert {s.name for s in exporter.wait(2)} == {HEALTH}
    finally:
        running.close()
        provider.shutdown()


def test_upstream_client_interceptor_is_not_a_grpc_interceptor() -> None:
    # Why client_interceptor() adapts it: grpc.intercept_channel refuses upstream's object.
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        with pytest.raises(TypeError):
            grpc.intercept_channel(channel, upstream_client_interceptor(TracerProvider()))
    finally:
        channel.close()


# --------------------------------------------------------------------------- FrameTracer

APPEND = {"type": "append_entries", "term": 3, "entries": [1, 2, 3], "commit_index": 7}
REPLY = {"type": "next_node_idx", "term": 3, "next_node_idx": 8, "success": True}


def test_frame_send_then_receive_on_another_node() -> None:
    provider_a, spans_a = _provider()
    provider_b, spans_b = _provider()
    sender = sampling(provider_a, "a:1")
    receiver = sampling(provider_b, "b:2")

    carrier = sender.on_send("b:2", APPEND, 120)
    assert carrier is not None and carrier["traceparent"].startswith("00-")
    (send,) = spans_a.wait(1)
    assert send.name == "raftgrpc.send append_entries" and send.kind == SpanKind.PRODUCER
    assert dict(send.attributes or {}) == {
        "raftgrpc.message.type": "append_entries",
        "raftgrpc.term": 3,
        "raftgrpc.entries": 3,
        "raftgrpc.bytes": 120,
        "raftgrpc.peer": "b:2",
        "raftgrpc.node": "a:1",
    }

    ran = []
    with receiver.on_receive("a:1", APPEND, carrier, 120):
        ran.append(True)
    assert ran == [True]
    (receive,) = spans_b.wait(1)
    assert receive.name == "raftgrpc.receive append_entries"
    assert receive.kind == SpanKind.CONSUMER
    assert receive.context is not None and send.context is not None
    assert receive.context.trace_id == send.context.trace_id
    assert receive.parent is not None and receive.parent.span_id == send.context.span_id
    assert receive.attributes is not None
    assert receive.attributes["raftgrpc.node"] == "b:2"
    assert receive.attributes["raftgrpc.peer"] == "a:1"
    provider_a.shutdown()
    provider_b.shutdown()


def test_a_send_inside_a_receive_continues_the_chain() -> None:
    provider_a, spans_a = _provider()
    provider_b, spans_b = _provider()
    a = tracing.FrameTracer(provider_a, sample_ratio=1.0, node_id="a")
    b = tracing.FrameTracer(provider_b, sample_ratio=0.0, node_id="b")  # never samples alone
    assert b.on_send("a", REPLY, 10) is None

    carrier = a.on_send("b", APPEND, 100)
    assert carrier is not None
    with b.on_receive("a", APPEND, carrier, 100):
        reply_carrier = b.on_send("a", REPLY, 10)  # SyncObj answering, on the tick thread
    assert reply_carrier is not None
    with a.on_receive("b", REPLY, reply_carrier, 10):
        pass

    send_a, receive_a = sorted(spans_a.wait(2), key=lambda s: s.start_time or 0)
    receive_b, send_b = sorted(spans_b.wait(2), key=lambda s: s.start_time or 0)
    assert receive_b.name == "raftgrpc.receive append_entries"
    assert send_b.name == "raftgrpc.send next_node_idx"
    assert send_b.parent is not None and receive_b.context is not None
    assert send_b.parent.span_id == receive_b.context.span_id
    assert receive_a.parent is not None and send_b.context is not None
    assert receive_a.parent.span_id == send_b.context.span_id
    trace_ids = {s.context.trace_id for s in (send_a, receive_a, receive_b, send_b) if s.context}
    assert len(trace_ids) == 1
    provider_a.shutdown()
    provider_b.shutdown()


def test_receive_records_and_reraises_exceptions() -> None:
    provider, spans = _provider()
    frames = sampling(provider, "a")
    carrier = frames.on_send("b", APPEND, 1)
    assert carrier is not None
    with pytest.raises(KeyError), frames.on_receive("b", APPEND, carrier, 1):
        raise KeyError("boom")
    receive = next(s for s in spans.wait(2) if s.kind == SpanKind.CONSUMER)
    assert receive.status.status_code == StatusCode.ERROR
    assert [e.name for e in receive.events] == ["exception"]
    provider.shutdown()


def test_receive_without_or_with_bad_carrier_makes_no_span() -> None:
    provider, spans = _provider()
    frames = sampling(provider, "a")
    ran = []
    with frames.on_receive("b", APPEND, None, 1):
        ran.append(1)
    with frames.on_receive("b", APPEND, {"traceparent": "garbage"}, 1):
        ran.append(2)
    assert ran == [1, 2]
    assert spans.get_finished_spans() == ()
    provider.shutdown()


def test_ratio_zero_makes_no_spans() -> None:
    provider, spans = _provider()
    frames = tracing.FrameTracer(provider, sample_ratio=0.0, node_id="a")
    assert all(frames.on_send("b", APPEND, 10) is None for _ in range(1000))
    assert spans.get_finished_spans() == ()
    provider.shutdown()


def test_ratio_samples_about_that_share() -> None:
    provider, spans = _provider()
    frames = tracing.FrameTracer(provider, sample_ratio=0.01, rng=random.Random(42))
    carriers = [frames.on_send("b", APPEND, 10) for _ in range(10_000)]
    sampled = sum(c is not None for c in carriers)
    assert 60 <= sampled <= 140, sampled
    assert len(spans.get_finished_spans()) == sampled
    provider.shutdown()


def test_sdk_sampler_dropping_means_no_carrier() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    frames = tracing.FrameTracer(provider, sample_ratio=1.0)
    assert frames.on_send("b", APPEND, 10) is None
    provider.shutdown()


def test_invalid_ratio_is_refused() -> None:
    with pytest.raises(ConfigError):
        tracing.FrameTracer(TracerProvider(), sample_ratio=1.5)


def test_unsampled_send_is_cheap(capsys: pytest.CaptureFixture[str]) -> None:
    provider, _ = _provider()
    frames = tracing.FrameTracer(provider, sample_ratio=0.0)
    number = 50_000
    best = min(timeit.repeat(lambda: frames.on_send("b", APPEND, 10), number=number, repeat=5))
    per_call_us = best / number * 1e6
    with capsys.disabled():
        print(f"\nFrameTracer.on_send unsampled: {per_call_us:.3f} us per call")
    assert per_call_us < 10.0  # ~0.3-0.5 us on a laptop; generous for slow CI machines
    provider.shutdown()


def sampling(provider: TracerProvider, node: str) -> tracing.FrameTracer:
    return tracing.FrameTracer(provider, sample_ratio=1.0, node_id=node)


# --------------------------------------------------------------------------- provider


def _processors(provider: TracerProvider) -> list[Any]:
    return list(provider._active_span_processor._span_processors)


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_provider_from_env_defaults_to_no_exporter(otel_env: pytest.MonkeyPatch) -> None:
    provider = tracing.tracer_provider_from_env("svc", node_id="n1")
    try:
        assert _processors(provider) == []
        assert provider.resource.attributes["service.name"] == "svc"
        assert provider.resource.attributes["raftgrpc.node"] == "n1"
    finally:
        provider.shutdown()


def test_provider_from_env_console_and_sampler(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "console")
    otel_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = tracing.tracer_provider_from_env("svc")
    try:
        (processor,) = _processors(provider)
        assert isinstance(processor, BatchSpanProcessor)
        assert isinstance(processor._batch_processor._exporter, ConsoleSpanExporter)
        assert "0.25" in provider.sampler.get_description()
    finally:
        provider.shutdown()


def test_provider_from_env_otlp_when_endpoint_set(otel_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    provider = tracing.tracer_provider_from_env("svc")
    try:
        (processor,) = _processors(provider)
        assert isinstance(processor._batch_processor._exporter, OTLPSpanExporter)
    finally:
        provider.shutdown()


def test_provider_from_env_rejects_unknown_exporter(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="zipkin"):
        tracing.tracer_provider_from_env("svc")

"""raftgrpc.interceptors.log: structured RPC lifecycle logs, JsonFormatter."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from raftgrpc.interceptors import log, tracing
from tests.rawservice import COUNT, ECHO, HOLD, STREAM, Feed, Running

pytestmark = pytest.mark.timeout(30)

_names = itertools.count()


class Records(logging.Handler):
    """Collects records; tests wait on a condition for the ones made on gRPC threads."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def events(self, event: str, side: str | None = None) -> list[logging.LogRecord]:
        with self._cond:
            return [
                r
                for r in self.records
                if getattr(r, "event", None) == event
                and (side is None or getattr(r, "side", None) == side)
            ]

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), [r.__dict__ for r in self.records]

    def end(self, side: str) -> logging.LogRecord:
        self.wait(lambda: bool(self.events("rpc.end", side)))
        (record,) = self.events("rpc.end", side)
        return record


def _logger(level: int = logging.INFO) -> tuple[logging.Logger, Records]:
    logger = logging.getLogger(f"tests.rpclog.{next(_names)}")
    logger.setLevel(level)
    logger.propagate = False
    records = Records()
    logger.addHandler(records)
    return logger, records


@pytest.fixture
def logged() -> Iterator[tuple[grpc.Channel, Records]]:
    logger, records = _logger()
    running = Running([log.server_interceptor(logger)])
    channel = running.channel(log.client_interceptor(logger))
    yield channel, records
    running.close()


def test_unary_start_and_end_fields(logged: Any) -> None:
    channel, records = logged
    assert channel.unary_unary(ECHO)(b"abc", timeout=5) == b"cba"
    server, client = records.end("server"), records.end("client")
    (start,) = records.events("rpc.start", "server")
    assert start.method == ECHO and start.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    assert start.getMessage().startswith("rpc start " + ECHO)
    for end in (server, client):
        fields = end.__dict__
        assert fields["method"] == ECHO
        assert fields["code"] == "OK"
        assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] >= 0
        assert (fields["messages_in"], fields["messages_out"]) == (1, 1)
        assert end.levelno == logging.INFO
        assert len(end.getMessage()) < 100  # short text, facts in the fields
    assert client.peer is None  # type: ignore[attr-defined]  # gRPC's client calls do not tell it


def test_aborted_call_logs_its_code(logged: Any) -> None:
    channel, records = logged
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(ECHO)(b"abort", timeout=5)
    server, client = records.end("server"), records.end("client")
    assert server.code == client.code == "PERMISSION_DENIED"  # type: ignore[attr-defined]
    assert server.details == client.details == "denied"  # type: ignore[attr-defined]
    assert (server.messages_in, server.messages_out) == (1, 0)  # type: ignore[attr-defined]
    assert client.messages_in == 0  # type: ignore[attr-defined]


def test_handler_exception_logs_unknown(logged: Any) -> None:
    channel, records = logged
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(ECHO)(b"raise", timeout=5)
    assert records.end("server").code == "UNKNOWN"  # type: ignore[attr-defined]
    assert records.end("client").code == "UNKNOWN"  # type: ignore[attr-defined]


def test_bidi_stream_counts_messages(logged: Any) -> None:
    channel, records = logged
    feed = Feed()
    call = channel.stream_stream(STREAM)(feed, timeout=10)
    assert isinstance(call, grpc.Call) and isinstance(call, grpc.Future)
    for i in range(5):
        feed.put(b"m%d" % i)
        assert next(call) == b"M%d" % i
    feed.close()
    assert list(call) == []
    server, client = records.end("server"), records.end("client")
    assert server.code == client.code == "OK"  # type: ignore[attr-defined]
    assert (server.messages_in, server.messages_out) == (5, 5)  # type: ignore[attr-defined]
    assert (client.messages_in, client.messages_out) == (5, 5)  # type: ignore[attr-defined]


def test_unary_stream_counts_responses(logged: Any) -> None:
    channel, records = logged
    assert len(list(channel.unary_stream(COUNT)(b"4", timeout=5))) == 4
    server, client = records.end("server"), records.end("client")
    assert (server.messages_in, server.messages_out) == (1, 4)  # type: ignore[attr-defined]
    assert (client.messages_in, client.messages_out) == (4, 1)  # type: ignore[attr-defined]


def test_cancelled_stream_logs_cancelled(logged: Any) -> None:
    channel, records = logged
    feed = Feed()
    call = channel.stream_stream(HOLD)(feed, timeout=10)
    feed.put(b"hello")
    assert next(call) == b"HELLO"
    call.cancel()
    feed.close()
    assert records.end("client").code == "CANCELLED"  # type: ignore[attr-defined]
    server = records.end("server")
    assert server.code == "CANCELLED"  # type: ignore[attr-defined]
    assert server.messages_in == 1  # type: ignore[attr-defined]


def test_message_events_are_rate_limited() -> None:
    logger, records = _logger(logging.DEBUG)
    running = Running([log.server_interceptor(logger, message_limit=3, message_interval_s=60)])
    try:
        channel = running.channel()
        requests = [b"x" * 10] * 20
        answers = list(channel.stream_stream(STREAM)(iter(requests), timeout=10))
        assert len(answers) == 20
        server = records.end("server")
        assert (server.messages_in, server.messages_out) == (20, 20)  # type: ignore[attr-defined]
        messages = records.events("rpc.message", "server")
        assert sorted((r.direction, r.index) for r in messages) == [  # type: ignore[attr-defined]
            ("in", 1),
            ("in", 2),
            ("in", 3),
            ("out", 1),
            ("out", 2),
            ("out", 3),
        ]
        assert {r.bytes for r in messages} == {10}  # type: ignore[attr-defined]
        assert all(r.levelno == logging.DEBUG for r in messages)
    finally:
        running.close()


def test_nothing_is_logged_on_the_dispatch_thread() -> None:
    # intercept_service only wraps: the start event comes from the handler's own thread.
    logger, records = _logger(logging.DEBUG)
    interceptor = log.server_interceptor(logger)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    class Details(grpc.HandlerCallDetails):  # type: ignore[misc]
        method = ECHO
        invocation_metadata = ()

    wrapped = interceptor.intercept_service(lambda details: handler, Details())
    assert wrapped is not None and wrapped.unary_unary is not None
    assert records.records == []
    assert interceptor.intercept_service(lambda details: None, Details()) is None


@pytest.mark.parametrize("logging_outermost", [True, False])
def test_composes_with_tracing_on_streams(logging_outermost: bool) -> None:
    # The logging proxy must stay a grpc.Future, or the tracing interceptor around it
    # would end the stream's span at once.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    logger, records = _logger()
    layers = [log.client_interceptor(logger), tracing.client_interceptor(provider)]
    if not logging_outermost:
        layers.reverse()
    running = Running([tracing.server_interceptor(provider), log.server_interceptor(logger)])
    try:
        channel = running.channel(*layers)
        feed = Feed()
        call = channel.stream_stream(STREAM)(feed, timeout=10)
        feed.put(b"a")
        assert next(call) == b"A"
        assert not [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
        feed.close()
        assert list(call) == []
        assert records.end("client").messages_in == 1  # type: ignore[attr-defined]
        records.end("server")
        records.wait(lambda: len(exporter.get_finished_spans()) == 2)
        client = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT)
        assert client.status.status_code == StatusCode.UNSET
    finally:
        running.close()
        provider.shutdown()


# --------------------------------------------------------------------------- JsonFormatter


def test_json_formatter_renders_extra_fields() -> None:
    formatter = log.JsonFormatter()
    record = logging.LogRecord(
        "raftgrpc.rpc", logging.INFO, __file__, 1, "rpc end %s", ("m",), None
    )
    record.__dict__.update(
        {"event": "rpc.end", "code": "OK", "duration_ms": 1.5, "obj": object(), "_private": 1}
    )
    line = formatter.format(record)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["msg"] == "rpc end m"
    assert obj["level"] == "INFO" and obj["logger"] == "raftgrpc.rpc"
    assert obj["event"] == "rpc.end" and obj["code"] == "OK" and obj["duration_ms"] == 1.5
    assert obj["obj"].startswith("<object object")
    assert obj["ts"].endswith("Z")
    assert "_private" not in obj and "args" not in obj and "levelno" not in obj


def test_json_formatter_includes_exceptions() -> None:
    formatter = log.JsonFormatter()
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    obj = json.loads(formatter.format(record))
    assert "ValueError: bad" in obj["exc"]

"""Bad input on a node's port: refused with the right status and a log line, nothing reaches
SyncObj, and the node keeps serving."""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from pysyncobj import SyncObj, SyncObjConf

from raftgrpc import GrpcTransport, TransportConfig
from raftgrpc._protocol import codec
from raftgrpc._transport.inbound import STREAM_METHOD
from raftgrpc.v1 import transport_pb2 as pb
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.timeout(60)

VOTE = {"type": "request_vote", "term": 7, "last_log_index": 3, "last_log_term": 2}


class Target:
    """A real SyncObj node on GrpcTransport whose only partner is impersonated by the test."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.partner = f"127.0.0.1:{free_port()}"
        config = TransportConfig(
            max_message_bytes=1 << 20, frame_bytes=256 << 10, handshake_timeout_s=0.5
        )
        self.node = SyncObj(
            self.address,
            [self.partner],
            SyncObjConf(raftMinTimeout=30, raftMaxTimeout=31, connectionTimeout=40),  # no elections
            transportClass=functools.partial(GrpcTransport, config=config),
        )
        self.node.waitBinded()
        transport = self.node._SyncObj__transport
        self.received: list[tuple[str, dict[str, Any]]] = []
        original = transport._onMessageReceivedCallback

        def spy(node: Any, message: dict[str, Any]) -> None:
            self.received.append((node.id, message))
            original(node, message)

        transport.setOnMessageReceivedCallback(spy)
        self.channel = grpc.insecure_channel(self.address)

    def close(self) -> None:
        self.channel.close()
        self.node.destroy()
        thread = self.node._SyncObj__thread
        if thread is not None:
            thread.join(10)


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def hello(node_id: str, version: int = 1) -> bytes:
    return pb.StreamRequest(
        hello=pb.Hello(protocol_version=version, node_id=node_id)
    ).SerializeToString()


def frame(*messages: dict[str, Any]) -> bytes:
    return codec.request_frame_bytes([codec.encode_message(m) for m in messages])


def raw_frame(*messages: pb.RaftMessage) -> bytes:
    return codec.request_frame_bytes([m.SerializeToString() for m in messages])


def run_stream(target: Target, requests: list[bytes], hold_open: threading.Event | None = None):
    """Send ``requests`` on one stream; return (responses, status code, details)."""
    pending: queue.Queue[bytes | None] = queue.Queue()
    for r in requests:
        pending.put(r)

    def gen() -> Iterator[bytes]:
        while True:
            item = pending.get()
            if item is None:
                return
            yield item

    call = target.channel.stream_stream(STREAM_METHOD)(gen(), timeout=20)
    responses: list[bytes] = []
    if hold_open is None:
        pending.put(None)
    try:
        for r in call:
            responses.append(r)
            if hold_open is not None and hold_open.is_set():
                pending.put(None)
        return responses, call.code(), call.details()
    except grpc.RpcError as exc:
        return responses, exc.code(), exc.details()
    finally:
        pending.put(None)


def test_a_member_is_welcomed_and_its_messages_reach_syncobj(target: Target) -> None:
    responses, code, _ = run_stream(target, [hello(target.partner), frame(VOTE)])
    assert code == grpc.StatusCode.OK
    welcome = pb.StreamResponse.FromString(responses[0]).welcome
    assert welcome.node_id == target.address
    wait_until(lambda: target.received, 5, "the vote request to reach SyncObj")
    assert target.received == [(target.partner, VOTE)]


BAD_FRAMES = {
    "garbage instead of a frame": (b"\xff\xfe\xfd not protobuf", "malformed frame"),
    "a second hello": (hello("x"), "expected a frame"),
    "an unknown message type": (raw_frame(pb.RaftMessage()), "malformed message"),
    "entries whose lengths do not add up": (
        raw_frame(
            pb.RaftMessage(
                append_entries=pb.AppendEntries(
                    term=1,
                    commit_index=1,
                    prev_log_idx=1,
                    prev_log_term=1,
                    entries=pb.Entries(
                        first_index=2, lengths=[5], data=b"abc", term_values=[1], term_runs=[1]
                    ),
                )
            )
        ),
        "malformed message",
    ),
    "a valid message followed by an invalid one in the same frame": (
        codec.request_frame_bytes(
            [codec.encode_message(VOTE), pb.RaftMessage().SerializeToString()]
        ),
        "malformed message",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_a_bad_frame_closes_the_stream_with_invalid_argument(
    target: Target, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload, detail = BAD_FRAMES[case]
    with caplog.at_level(logging.WARNING, logger="raftgrpc.server"):
        _, code, details = run_stream(target, [hello(target.partner), payload])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in details
    refused = [r for r in caplog.records if getattr(r, "event", None) == "stream.refused"]
    assert refused and "refusing stream" in refused[0].getMessage()
    assert refused[0].code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert detail in refused[0].reason  # type: ignore[attr-defined]
    assert target.received == []
    # The node keeps serving: the next, valid stream is delivered.
    _, code, _ = run_stream(target, [hello(target.partner), frame(VOTE)])
    assert code == grpc.StatusCode.OK
    wait_until(lambda: target.received, 5, "the valid message after the bad one")
    assert target.received == [(target.partner, VOTE)]


@pytest.mark.parametrize(
    ("first", "code", "detail"),
    [
        (b"\x0a\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "malformed Hello"),
        (frame(VOTE), grpc.StatusCode.INVALID_ARGUMENT, "must be a Hello"),
        (hello("127.0.0.1:1"), grpc.StatusCode.PERMISSION_DENIED, "not a member"),
        (
            pb.StreamRequest(hello=pb.Hello(protocol_version=1)).SerializeToString(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "names no node",
        ),
    ],
    ids=["garbage", "frame-first", "stranger", "anonymous"],
)
def test_bad_handshakes_are_refused(
    target: Target, first: bytes, code: grpc.StatusCode, detail: str
) -> None:
    _, got, details = run_stream(target, [first, frame(VOTE)])
    assert got == code
    assert detail in details
    assert target.received == []


def test_a_newer_protocol_version_is_refused(target: Target) -> None:
    _, code, details = run_stream(target, [hello(target.partner, version=2), frame(VOTE)])
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol version 2" in details
    assert target.received == []


def test_an_oversize_frame_is_refused_with_resource_exhausted(target: Target) -> None:
    huge = {"type": "apply_command", "command": b"x" * (2 << 20), "request_id": 1}
    _, code, _ = run_stream(target, [hello(target.partner), frame(huge)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert target.received == []
    _, code, _ = run_stream(target, [hello(target.partner), frame(VOTE)])
    assert code == grpc.StatusCode.OK
    wait_until(lambda: target.received, 5, "the valid message after the oversize one")


def test_a_stream_that_never_says_hello_is_cancelled(target: Target) -> None:
    silent = threading.Event()

    def nothing() -> Iterator[bytes]:
        silent.wait(20)
        return
        yield b""

    call = target.channel.stream_stream(STREAM_METHOD)(nothing(), timeout=20)
    with pytest.raises(grpc.RpcError) as failure:
        next(call)
    silent.set()
    assert failure.value.code() == grpc.StatusCode.CANCELLED
    assert target.received == []
    _, code, _ = run_stream(target, [hello(target.partner), frame(VOTE)])
    assert code == grpc.StatusCode.OK
    wait_until(lambda: target.received, 5, "a valid stream after the silent one")


READ_ONLY_HELLO = pb.StreamRequest(
    hello=pb.Hello(protocol_version=1, read_only=pb.ReadOnly())
).SerializeToString()


@pytest.mark.parametrize(
    "message",
    [
        VOTE,
        {"type": "response_vote", "term": 9},
        {"type": "timeout_now", "term": 9},
        {
            "type": "append_entries",
            "term": 9,
            "commit_index": 5,
            "prevLogIdx": 5,
            "prevLogTerm": 3,
            "entries": [(b"x", 6, 9)],
        },
    ],
    ids=lambda m: m["type"],
)
def test_a_read_only_stream_cannot_speak_for_a_voter(
    target: Target, message: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only Hello binds no identity, so what such a stream may deliver is limited to
    what a read-only follower sends; anything that could move the term or the log is refused
    with the stream."""
    term = target.node.raftCurrentTerm
    with caplog.at_level(logging.WARNING, logger="raftgrpc.transport"):
        # Held open by the client: only the node's refusal ends it (else the 20 s deadline).
        _, code, _ = run_stream(target, [READ_ONLY_HELLO, frame(message)], threading.Event())
    assert code == grpc.StatusCode.CANCELLED
    assert target.received == []
    assert target.node.raftCurrentTerm == term
    assert any(getattr(r, "event", None) == "stream.refused" for r in caplog.records)


def test_a_read_only_stream_delivers_what_a_read_only_follower_sends(target: Target) -> None:
    ack = {"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True}
    done = threading.Event()
    outcome: list[Any] = []
    stream = threading.Thread(
        target=lambda: outcome.append(run_stream(target, [READ_ONLY_HELLO, frame(ack)], done))
    )
    stream.start()
    try:
        wait_until(lambda: target.received, 5, "the read-only follower's ack")
    finally:
        done.set()  # the client ends the stream at the next message from the node
        stream.join(10)
    assert [m for _, m in target.received] == [ack]
    assert outcome and outcome[0][1] == grpc.StatusCode.OK

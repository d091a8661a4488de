"""The transport's pure policies (raftgrpc._protocol), fed inputs and times: no sockets, no
threads, no clock of their own.

Queue resets, the reconnect hold, read-only filtering, listen-address derivation, the log
levels of failures, the frame reader's size budget, and the bind retries.
"""

from __future__ import annotations

import logging
import math
import pickle
from typing import Any

import grpc
import pytest
from pysyncobj.transport import TransportNotReadyError

from raftgrpc import ConfigError
from raftgrpc._protocol import codec
from raftgrpc._protocol.address import listen_target
from raftgrpc._protocol.failures import expected_syncobj_failure, stream_failure_level
from raftgrpc._protocol.frames import (
    PULSE_REQUEST,
    PULSE_RESPONSE,
    FrameError,
    FrameReader,
    decoded_size,
)
from raftgrpc._protocol.queue_reset import QUEUE_FULL, QueueResetPolicy
from raftgrpc._protocol.readonly import refused_from_readonly
from raftgrpc._protocol.reconnect_hold import ReconnectHold
from raftgrpc._transport.aio_server import Serving
from raftgrpc._transport.listener import Listener
from raftgrpc.v1 import transport_pb2 as pb

# --------------------------------------------------------------------------- queue resets


def test_a_full_queue_is_reset_whatever_its_age() -> None:
    policy = QueueResetPolicy(max_age_s=10.0)
    assert policy.judge(False, head_stamp=100.0, now=100.0) is QUEUE_FULL
    assert QUEUE_FULL.reason == "send queue full" and QUEUE_FULL.age_s is None


def test_a_queue_is_reset_once_its_head_waited_longer_than_the_limit() -> None:
    policy = QueueResetPolicy(max_age_s=10.0)
    assert policy.judge(True, head_stamp=100.0, now=110.0) is None  # exactly the limit
    stale = policy.judge(True, head_stamp=100.0, now=112.25)
    assert stale is not None and stale.age_s == pytest.approx(12.25)
    assert stale.reason == "send queue stale (12.2 s)"


def test_snapshot_chunks_never_go_stale_and_zero_means_never() -> None:
    policy = QueueResetPolicy(max_age_s=10.0)
    stamp = policy.stamp(snapshot_chunk=True, now=100.0)
    assert stamp == math.inf
    # A queue whose head is a snapshot chunk (the outbox's head_stamp is then +inf).
    assert policy.judge(True, head_stamp=stamp, now=1e9) is None
    assert policy.stamp(snapshot_chunk=False, now=100.0) == 100.0
    assert QueueResetPolicy(max_age_s=0).judge(True, head_stamp=0.0, now=1e9) is None


# --------------------------------------------------------------------------- reconnect hold


def test_a_first_stream_is_reported_at_once() -> None:
    hold = ReconnectHold[str](hold_s=0.2)
    assert hold.admit("first", lost_at=-math.inf)
    assert len(hold) == 0 and hold.tick(now=0.0) == []


def test_a_stream_after_a_loss_waits_for_a_tick_after_its_due_time() -> None:
    """Due at loss + hold; given by the first tick whose previous tick came after that
    (SyncObj's round of that previous tick already saw the peer disconnected)."""
    hold = ReconnectHold[str](hold_s=0.2)
    assert not hold.admit("redialled", lost_at=10.0)  # due at 10.2
    assert hold.tick(now=10.1) == []
    assert hold.tick(now=10.25) == []  # due now, but the previous tick (10.1) was before
    assert hold.tick(now=10.3) == ["redialled"]  # the previous tick (10.25) was after
    assert len(hold) == 0 and hold.tick(now=11.0) == []


def test_a_loss_long_ago_still_goes_through_the_tick() -> None:
    hold = ReconnectHold[str](hold_s=0.2)
    hold.tick(now=100.0)
    assert not hold.admit("late", lost_at=1.0)  # due long ago: still not reported inline
    assert hold.tick(now=100.05) == ["late"]


def test_held_streams_come_out_in_order_and_clear_forgets_them() -> None:
    hold = ReconnectHold[str](hold_s=1.0)
    for name, lost_at in (("a", 5.0), ("b", 1.0), ("c", 3.0)):
        assert not hold.admit(name, lost_at)
    hold.tick(now=4.5)  # b (due 2) and c (due 4) are due by this tick
    assert hold.tick(now=4.6) == ["b", "c"]
    assert len(hold) == 1
    hold.clear()
    assert hold.tick(now=100.0) == [] and hold.tick(now=200.0) == []


# --------------------------------------------------------------------------- read-only senders


def test_a_read_only_follower_may_only_acknowledge_and_forward_commands() -> None:
    allowed = [{"type": "next_node_idx"}, {"type": "apply_command"}]
    assert refused_from_readonly(allowed) == []
    assert refused_from_readonly([]) == []
    mixed = [*allowed, {"type": "timeout_now"}, {"type": "append_entries"}, {"type": "x"}]
    assert refused_from_readonly(mixed) == ["append_entries", "timeout_now", "x"]
    assert refused_from_readonly([{}]) == ["None"]


# --------------------------------------------------------------------------- listen address


def offset(node_id: str) -> str:
    host, port = node_id.rsplit(":", 1)
    return f"{host}:{int(port) + 1000}"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "127.0.0.1:4321"),
        ({"bind_address": "0.0.0.0:4321"}, "0.0.0.0:4321"),
        ({"address_of": offset}, "127.0.0.1:5321"),
        ({"address_of": offset, "bind_address": "0.0.0.0:4321"}, "0.0.0.0:5321"),
        ({"address_of": offset, "bind_address": "::1:4321"}, "[::1]:5321"),
        ({"listen_address": "::1:7000", "address_of": offset}, "[::1]:7000"),
    ],
)
def test_where_a_node_listens(kwargs: dict[str, Any], expected: str) -> None:
    assert listen_target("127.0.0.1:4321", **kwargs) == expected


def test_a_failing_address_mapping_is_a_config_error() -> None:
    def broken(node_id: str) -> str:
        raise KeyError(node_id)

    with pytest.raises(ConfigError, match="address_of failed on"):
        listen_target("127.0.0.1:4321", address_of=broken)
    with pytest.raises(ConfigError, match="expected an address"):
        listen_target("127.0.0.1:4321", address_of=lambda _: "no port")


# --------------------------------------------------------------------------- failure levels


def test_stream_failures_are_as_loud_as_they_are_news() -> None:
    unavailable, denied = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED
    assert stream_failure_level(unavailable, established=False) == (
        logging.DEBUG,
        "peer.unreachable",
    )
    assert stream_failure_level(unavailable, established=True) == (logging.INFO, "stream.failed")
    assert stream_failure_level(denied, established=False) == (logging.WARNING, "stream.failed")
    assert stream_failure_level(None, established=True) == (logging.WARNING, "stream.failed")


def test_only_an_unpickling_failure_at_a_finish_chunk_is_expected() -> None:
    finish = {"type": "append_entries", "transmission": "finish"}
    try:
        pickle.loads(b"\x80\x02garbage")
    except Exception as exc:
        unpickling: BaseException = exc
    try:  # a retry whose context is the C unpickler's error, as pysyncobj.pickle does
        try:
            raise pickle.UnpicklingError("C")
        except pickle.UnpicklingError:
            raise ValueError("pure Python") from None
    except ValueError as exc:
        retried: BaseException = exc
    assert retried.__context__ is not None
    assert expected_syncobj_failure(finish, unpickling)
    assert expected_syncobj_failure(finish, retried)
    assert not expected_syncobj_failure(finish, OSError(28, "No space left on device"))
    assert not expected_syncobj_failure({"type": "request_vote"}, unpickling)
    assert not expected_syncobj_failure(finish, None)


# --------------------------------------------------------------------------- frame reader


def vote(term: int) -> bytes:
    return codec.encode_message(
        {"type": "request_vote", "term": term, "last_log_index": 1, "last_log_term": 1}
    )


def test_the_frame_reader_passes_pulses_and_decodes_frames() -> None:
    reader = FrameReader(pb.StreamRequest.FromString)
    assert reader.feed(PULSE_REQUEST) is None
    raw = codec.request_frame_bytes([vote(1), vote(2)])
    batch = reader.feed(raw)
    assert batch is not None
    messages, nbytes, carriers = batch
    assert [m["term"] for m in messages] == [1, 2] and carriers is None
    assert nbytes == decoded_size(len(raw), messages)
    with pytest.raises(FrameError, match="handshake message"):
        FrameReader(pb.StreamResponse.FromString).feed(
            pb.StreamResponse(welcome=pb.Welcome(protocol_version=1)).SerializeToString()
        )
    assert FrameReader(pb.StreamResponse.FromString).feed(PULSE_RESPONSE) is None


def test_the_frame_reader_refuses_a_frame_above_its_budget_before_decoding() -> None:
    entries = {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "prevLogIdx": 0,
        "prevLogTerm": 1,
        "entries": [(b"", i + 1, 1) for i in range(2000)],  # tiny on the wire, big decoded
    }
    raw = codec.request_frame_bytes([codec.encode_message(entries)])
    with pytest.raises(FrameError, match="inbound budget"):
        FrameReader(pb.StreamRequest.FromString, inbound_budget=0).feed(raw)
    batch = FrameReader(pb.StreamRequest.FromString).feed(raw)  # the default 32 MiB
    assert batch is not None and len(batch[0][0]["entries"]) == 2000


# --------------------------------------------------------------------------- bind retries


def test_binding_is_retried_as_syncobjconf_says_on_the_transports_clock() -> None:
    """raftgrpc._transport.listener with a start that fails, then one that succeeds: no
    socket is opened (the real binding is tests/contract's)."""
    now = [0.0]
    attempts: list[float] = []
    succeed = [False]

    def start(executor: Any) -> Serving:
        attempts.append(now[0])
        if not succeed[0]:
            raise OSError("address in use")
        return Serving(None, 4321)  # type: ignore[arg-type]  # never stopped here

    listener = Listener("n", "127.0.0.1:4321", start, 1.0, 3, lambda: now[0])
    try:
        for t in (0.0, 0.5, 1.0, 1.5):
            now[0] = t
            listener.try_bind()
        assert attempts == [0.0, 1.0] and not listener.ready
        now[0] = 2.0
        with pytest.raises(TransportNotReadyError):
            listener.try_bind()  # the third failure gives up
        with pytest.raises(TransportNotReadyError):
            listener.wait()
    finally:
        listener.close()

    succeed[0] = True
    listener = Listener("n", "127.0.0.1:4321", start, 1.0, 0, lambda: now[0])
    try:
        listener.try_bind()
        listener.wait()  # bound: returns at once
        assert listener.ready and listener.port == 4321
    finally:
        listener.close()
    assert Listener("ro", None, start, 1.0, 0, lambda: 0.0).ready  # a read-only node

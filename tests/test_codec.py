"""Tests of raftgrpc._protocol.codec: lossless round trips, frame assembly, strict rejection."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftgrpc._protocol import codec
from raftgrpc._protocol.codec import (
    CodecError,
    decode_frame_messages,
    decode_message,
    encode_message,
    frame_bytes,
    request_frame_bytes,
    response_frame_bytes,
)
from raftgrpc.v1 import transport_pb2 as pb

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

int64 = st.integers(INT64_MIN, INT64_MAX)
# Mostly realistic small values, sometimes the extremes.
raft_int = st.one_of(st.integers(0, 10**6), int64, st.sampled_from([0, INT64_MAX, INT64_MIN]))
payload = st.binary(max_size=64)


# --------------------------------------------------------------------------- strategies


@st.composite
def consecutive_entries(draw: st.DrawFn) -> list[tuple[bytes, int, int]]:
    datas = draw(st.lists(payload, max_size=40))
    count = len(datas)
    first = draw(st.integers(INT64_MIN, INT64_MAX - count))
    term_values = draw(st.lists(raft_int, min_size=1, max_size=5))
    terms = sorted(draw(st.sampled_from(term_values)) for _ in range(count))
    return [(d, first + i, t) for i, (d, t) in enumerate(zip(datas, terms, strict=True))]


arbitrary_entries = st.lists(st.tuples(payload, raft_int, raft_int), max_size=40)
entries_strategy: st.SearchStrategy[list[tuple[bytes, int, int]]] = st.one_of(
    st.just([]), consecutive_entries(), arbitrary_entries
)


Strategies = dict[str, st.SearchStrategy[Any]]


def _fixed(
    type_: str, required: Strategies, optional: Strategies | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    mapping: Strategies = {"type": st.just(type_), **required}
    return st.fixed_dictionaries(mapping, optional=optional or {})


prev: Strategies = {
    "term": raft_int,
    "commit_index": raft_int,
    "prevLogIdx": raft_int,
    "prevLogTerm": raft_int,
}

request_vote = _fixed(
    "request_vote", {"term": raft_int, "last_log_index": raft_int, "last_log_term": raft_int}
)
response_vote = _fixed("response_vote", {"term": raft_int})
timeout_now = _fixed("timeout_now", {"term": raft_int})
append_regular = _fixed("append_entries", {**prev, "entries": entries_strategy})
append_big = _fixed(
    "append_entries",
    {**prev, "transmission": st.sampled_from(["start", "process", "finish"]), "data": payload},
)
serialized = st.one_of(st.none(), st.just(False), st.tuples(payload, st.booleans(), st.booleans()))
append_snapshot = _fixed(
    "append_entries", {"term": raft_int, "commit_index": raft_int, "serialized": serialized}
)
next_node_idx = _fixed(
    "next_node_idx",
    {"next_node_idx": raft_int, "reset": st.booleans(), "success": st.booleans()},
)
apply_command = _fixed("apply_command", {"command": payload}, optional={"request_id": raft_int})
response_position = _fixed(
    "apply_command_response",
    {"request_id": raft_int, "log_idx": raft_int, "log_term": raft_int},
)
response_error = _fixed(
    "apply_command_response",
    {"request_id": raft_int, "error": st.one_of(st.just(0), st.integers(0, 7), int64)},
)

any_message = st.one_of(
    request_vote,
    response_vote,
    timeout_now,
    append_regular,
    append_big,
    append_snapshot,
    next_node_idx,
    apply_command,
    response_position,
    response_error,
)


def _type_shape(value: Any) -> Any:
    """Python types of a value, recursively, to check that decoding keeps them."""
    if isinstance(value, (list, tuple)):
        return (type(value), [_type_shape(v) for v in value])
    return type(value)


def roundtrip(message: dict[str, Any]) -> dict[str, Any]:
    encoded = encode_message(message)
    assert isinstance(encoded, bytes)
    decoded = decode_message(pb.RaftMessage.FromString(encoded))
    assert decoded == message
    assert decoded.keys() == message.keys()
    assert {k: _type_shape(v) for k, v in decoded.items()} == {
        k: _type_shape(v) for k, v in message.items()
    }
    return decoded


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(request_vote, id="request_vote"),
        pytest.param(response_vote, id="response_vote"),
        pytest.param(timeout_now, id="timeout_now"),
        pytest.param(append_regular, id="append_entries-regular"),
        pytest.param(append_big, id="append_entries-big"),
        pytest.param(append_snapshot, id="append_entries-snapshot"),
        pytest.param(next_node_idx, id="next_node_idx"),
        pytest.param(apply_command, id="apply_command"),
        pytest.param(response_position, id="apply_command_response-position"),
        pytest.param(response_error, id="apply_command_response-error"),
    ],
)
@SETTINGS
@given(data=st.data())
def test_roundtrip_property(strategy: Any, data: st.DataObject) -> None:
    message = data.draw(strategy)
    decoded = roundtrip(message)
    if "entries" in message:
        assert type(decoded["entries"]) is list
        assert all(type(e) is tuple and len(e) == 3 for e in decoded["entries"])


ENTRY = (b"x", 1, 1)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            {
                "type": "append_entries",
                "term": 1,
                "commit_index": 0,
                "prevLogIdx": 0,
                "prevLogTerm": 0,
                "entries": [],
            },
            id="heartbeat",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": 3,
                "commit_index": 2,
                "prevLogIdx": 1,
                "prevLogTerm": 1,
                "entries": [(b"", 5, 1), (b"a", 9, 1), (b"", 7, 2), (b"bc", 8, 3)],
            },
            id="non-consecutive-empty-bytes",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": 9,
                "commit_index": 2,
                "prevLogIdx": 1,
                "prevLogTerm": 1,
                "entries": [(bytes([i % 256]) * (i % 7), 2 + i, i // 3) for i in range(300)],
            },
            id="many-terms",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": 9,
                "commit_index": 2,
                "prevLogIdx": 1,
                "prevLogTerm": 1,
                "entries": [(b"a", 1, 5), (b"b", 2, 4), (b"c", 3, 5)],
            },
            id="terms-repeat-after-change",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": INT64_MAX,
                "commit_index": INT64_MAX,
                "prevLogIdx": INT64_MIN,
                "prevLogTerm": INT64_MAX,
                "entries": [(b"z", INT64_MAX - 1, INT64_MAX), (b"", INT64_MAX, INT64_MAX)],
            },
            id="int64-extremes",
        ),
        pytest.param(
            {"type": "apply_command_response", "request_id": 3, "error": 0}, id="error-zero"
        ),
        pytest.param(
            {"type": "apply_command_response", "request_id": 0, "log_idx": 0, "log_term": 0},
            id="position-zero",
        ),
        pytest.param({"type": "apply_command", "command": b""}, id="no-request-id"),
        pytest.param(
            {"type": "apply_command", "command": b"\x00", "request_id": 0}, id="request-id-zero"
        ),
        pytest.param(
            {"type": "append_entries", "term": 1, "commit_index": 0, "serialized": None},
            id="serialized-none",
        ),
        pytest.param(
            {"type": "append_entries", "term": 1, "commit_index": 0, "serialized": False},
            id="serialized-false",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": 1,
                "commit_index": 0,
                "serialized": (b"", False, False),
            },
            id="serialized-empty-tuple-data",
        ),
        pytest.param(
            {
                "type": "append_entries",
                "term": 1,
                "commit_index": 0,
                "prevLogIdx": 0,
                "prevLogTerm": 0,
                "transmission": "start",
                "data": b"",
            },
            id="big-entry-empty",
        ),
        pytest.param(
            {"type": "next_node_idx", "next_node_idx": 0, "reset": False, "success": False},
            id="next-node-idx-defaults",
        ),
        pytest.param({"type": "timeout_now", "term": 0}, id="timeout-now-zero"),
    ],
)
def test_roundtrip_edge_cases(message: dict[str, Any]) -> None:
    roundtrip(message)


def test_entries_are_packed_columns() -> None:
    base = {"type": "append_entries", "term": 2, "commit_index": 1, "prevLogIdx": 9}
    consecutive = {
        **base,
        "prevLogTerm": 1,
        "entries": [(b"ab", 10, 1), (b"", 11, 1), (b"cde", 12, 2)],
    }
    entries = pb.RaftMessage.FromString(encode_message(consecutive)).append_entries.entries
    assert entries.first_index == 10
    assert list(entries.indexes) == []
    assert list(entries.lengths) == [2, 0, 3]
    assert entries.data == b"abcde"
    assert list(entries.term_values) == [1, 2]
    assert list(entries.term_runs) == [2, 1]

    gappy = {**consecutive, "entries": [(b"a", 10, 1), (b"b", 12, 1)]}
    entries = pb.RaftMessage.FromString(encode_message(gappy)).append_entries.entries
    assert list(entries.indexes) == [10, 12]
    assert list(entries.term_values) == [1]
    assert list(entries.term_runs) == [2]

    heartbeat = {**consecutive, "entries": []}
    body = pb.RaftMessage.FromString(encode_message(heartbeat)).append_entries
    assert body.WhichOneof("payload") == "entries"


def test_bools_accepted_where_ints_expected() -> None:
    decoded = decode_message(
        pb.RaftMessage.FromString(encode_message({"type": "response_vote", "term": True}))
    )
    assert decoded == {"type": "response_vote", "term": 1}
    assert type(decoded["term"]) is int
    message = {
        "type": "append_entries",
        "term": 1,
        "commit_index": 0,
        "prevLogIdx": 0,
        "prevLogTerm": 0,
        "entries": [(b"a", True, False), (b"b", 2, 0)],
    }
    decoded = decode_message(pb.RaftMessage.FromString(encode_message(message)))
    assert decoded["entries"] == [(b"a", 1, 0), (b"b", 2, 0)]


# --------------------------------------------------------------------------- frames


def _sample_messages() -> list[dict[str, Any]]:
    return [
        {"type": "request_vote", "term": 4, "last_log_index": 10, "last_log_term": 3},
        {"type": "apply_command", "command": b"c" * 200, "request_id": 7},  # > 127 bytes
        {"type": "apply_command", "command": b"C" * 20000},  # > 16384 bytes
        {
            "type": "append_entries",
            "term": 4,
            "commit_index": 9,
            "prevLogIdx": 9,
            "prevLogTerm": 3,
            "entries": [(b"e%d" % i, 10 + i, 4) for i in range(3000)],
        },
        {"type": "apply_command_response", "request_id": 7, "error": 0},
        {"type": "timeout_now", "term": 4},
    ]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 6])
def test_frame_bytes_parse_back(count: int) -> None:
    messages = _sample_messages()[:count] if count != 1 else [_sample_messages()[2]]
    encoded = [encode_message(m) for m in messages]

    frame = pb.Frame.FromString(frame_bytes(encoded))
    assert decode_frame_messages(frame) == messages
    # Byte-identical to what protobuf itself serializes for the same messages.
    expected = pb.Frame(messages=[pb.RaftMessage.FromString(e) for e in encoded])
    assert frame_bytes(encoded) == expected.SerializeToString()

    request = pb.StreamRequest.FromString(request_frame_bytes(encoded))
    assert request.WhichOneof("kind") == "frame"
    assert decode_frame_messages(request.frame) == messages
    assert request_frame_bytes(encoded) == pb.StreamRequest(frame=expected).SerializeToString()

    response = pb.StreamResponse.FromString(response_frame_bytes(encoded))
    assert response.WhichOneof("kind") == "frame"
    assert decode_frame_messages(response.frame) == messages
    assert response_frame_bytes(encoded) == pb.StreamResponse(frame=expected).SerializeToString()


@SETTINGS
@given(st.lists(any_message, max_size=8))
def test_frame_property(messages: list[dict[str, Any]]) -> None:
    encoded = [encode_message(m) for m in messages]
    request = pb.StreamRequest.FromString(request_frame_bytes(encoded))
    assert request.WhichOneof("kind") == "frame"
    assert decode_frame_messages(request.frame) == messages


@pytest.mark.parametrize(
    "n", [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21 - 1, 2**21, 2**35 + 5, 2**64 - 1]
)
def test_varint_matches_protobuf(n: int) -> None:
    # An Entries message with a single `lengths` element: tag 0x1A, packed length, varint.
    varint = codec._varint(n)
    expected = pb.Entries(lengths=[n]).SerializeToString()
    assert expected == b"\x1a" + bytes([len(varint)]) + varint


def test_decode_frame_is_all_or_nothing() -> None:
    good = pb.RaftMessage.FromString(encode_message({"type": "timeout_now", "term": 1}))
    frame = pb.Frame(messages=[good, pb.RaftMessage(), good])
    with pytest.raises(CodecError, match=r"frame message 1: RaftMessage has no body"):
        decode_frame_messages(frame)


# --------------------------------------------------------------------------- decode rejections


def _append(**kwargs: Any) -> pb.RaftMessage:
    return pb.RaftMessage(append_entries=pb.AppendEntries(term=1, commit_index=1, **kwargs))


def _entries(**kwargs: Any) -> pb.RaftMessage:
    return _append(prev_log_idx=0, prev_log_term=0, entries=pb.Entries(**kwargs))


BIG = pb.BigEntryChunk(transmission=pb.TRANSMISSION_START, data=b"x")


def _unknown_transmission() -> pb.RaftMessage:
    # BigEntryChunk{transmission: 9, data: b"x"} on the wire; proto3 enums are open.
    chunk = pb.BigEntryChunk.FromString(b"\x08\x09\x12\x01x")
    return _append(prev_log_idx=0, prev_log_term=0, big_entry=chunk)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        pytest.param(pb.RaftMessage(), "no body", id="no-body"),
        pytest.param(
            _append(prev_log_term=0, entries=pb.Entries()),
            "lacks prev_log_idx",
            id="entries-no-prev-idx",
        ),
        pytest.param(
            _append(prev_log_idx=0, entries=pb.Entries()),
            "lacks prev_log_idx or prev_log_term",
            id="entries-no-prev-term",
        ),
        pytest.param(_append(big_entry=BIG), "lacks prev_log_idx", id="big-no-prev"),
        pytest.param(
            _append(prev_log_idx=0, snapshot=pb.SnapshotChunk(data=b"s")),
            "must not have prev_log_idx",
            id="snapshot-with-prev",
        ),
        pytest.param(
            _append(prev_log_term=0, snapshot_absent=pb.SnapshotAbsent()),
            "must not have prev_log_idx",
            id="absent-with-prev",
        ),
        pytest.param(_append(), "no payload", id="no-payload"),
        pytest.param(
            _append(prev_log_idx=0, prev_log_term=0), "no payload", id="no-payload-with-prev"
        ),
        pytest.param(
            _append(prev_log_idx=0, prev_log_term=0, big_entry=pb.BigEntryChunk(data=b"x")),
            "transmission",
            id="transmission-unspecified",
        ),
        pytest.param(_unknown_transmission(), "transmission", id="transmission-unknown"),
        pytest.param(
            _entries(lengths=[1, 1], data=b"ab", term_values=[1], term_runs=[1]),
            "term_runs do not add up",
            id="fewer-terms-than-lengths",
        ),
        pytest.param(
            _entries(lengths=[1], data=b"a", term_values=[1], term_runs=[2]),
            "term_runs do not add up",
            id="more-terms-than-lengths",
        ),
        pytest.param(
            _entries(lengths=[1], data=b"a", term_values=[1, 2], term_runs=[1]),
            "term_values and term_runs",
            id="values-runs-mismatch",
        ),
        pytest.param(
            _entries(lengths=[1], data=b"a", term_values=[1, 2], term_runs=[1, 0]),
            "empty term run",
            id="zero-run",
        ),
        pytest.param(
            _entries(lengths=[1, 2], data=b"ab", term_values=[1], term_runs=[2]),
            "size of data",
            id="data-too-short",
        ),
        pytest.param(
            _entries(lengths=[1], data=b"ab", term_values=[1], term_runs=[1]),
            "size of data",
            id="data-too-long",
        ),
        pytest.param(
            _entries(data=b"ab"),
            "size of data",
            id="data-without-entries",
        ),
        pytest.param(
            _entries(lengths=[1, 1], data=b"ab", indexes=[5], term_values=[1], term_runs=[2]),
            "number of indexes",
            id="indexes-too-short",
        ),
        pytest.param(
            _entries(lengths=[1], data=b"a", indexes=[5, 6], term_values=[1], term_runs=[1]),
            "number of indexes",
            id="indexes-too-long",
        ),
        pytest.param(
            _entries(
                first_index=INT64_MAX, lengths=[0, 0], data=b"", term_values=[1], term_runs=[2]
            ),
            "overflows int64",
            id="first-index-overflow",
        ),
        pytest.param(
            pb.RaftMessage(apply_command_response=pb.ApplyCommandResponse(request_id=1)),
            "no result",
            id="response-no-result",
        ),
    ],
)
def test_decode_rejects(message: pb.RaftMessage, match: str) -> None:
    # Also through the wire, to make sure the malformation survives serialization.
    wire = pb.RaftMessage.FromString(message.SerializeToString())
    for candidate in (message, wire):
        with pytest.raises(CodecError, match=match):
            decode_message(candidate)
        with pytest.raises(CodecError, match=match):
            decode_frame_messages(pb.Frame(messages=[candidate]))


# --------------------------------------------------------------------------- encode rejections

VOTE = {"type": "request_vote", "term": 1, "last_log_index": 2, "last_log_term": 3}
REGULAR = {
    "type": "append_entries",
    "term": 1,
    "commit_index": 1,
    "prevLogIdx": 0,
    "prevLogTerm": 0,
    "entries": [(b"a", 1, 1)],
}
BIG_ENTRY = {
    "type": "append_entries",
    "term": 1,
    "commit_index": 1,
    "prevLogIdx": 0,
    "prevLogTerm": 0,
    "transmission": "start",
    "data": b"d",
}
SNAPSHOT = {"type": "append_entries", "term": 1, "commit_index": 1, "serialized": None}


@pytest.mark.parametrize(
    ("message", "match"),
    [
        pytest.param([("type", "timeout_now")], "must be a mapping", id="not-a-mapping"),
        pytest.param({"term": 1}, "unknown message type", id="no-type"),
        pytest.param({"type": "gossip", "term": 1}, "unknown message type 'gossip'", id="bad-type"),
        pytest.param({"type": b"timeout_now", "term": 1}, "unknown message type", id="bytes-type"),
        pytest.param({"type": "timeout_now"}, r"missing keys \['term'\]", id="missing-key"),
        pytest.param({**VOTE, "extra": 1}, r"unexpected keys \['extra'\]", id="extra-key"),
        pytest.param({**VOTE, "term": "1"}, "'term' must be an int, not str", id="str-int"),
        pytest.param({**VOTE, "term": 1.0}, "'term' must be an int, not float", id="float-int"),
        pytest.param({**VOTE, "term": None}, "'term' must be an int", id="none-int"),
        pytest.param({**VOTE, "term": 2**63}, "int64 range", id="int-too-big"),
        pytest.param({**VOTE, "last_log_term": -(2**63) - 1}, "int64 range", id="int-too-small"),
        pytest.param({**BIG_ENTRY, "transmission": "middle"}, "'transmission'", id="bad-tx"),
        pytest.param({**BIG_ENTRY, "transmission": None}, "'transmission'", id="none-tx"),
        pytest.param({**BIG_ENTRY, "data": "text"}, "'data' must be bytes", id="str-data"),
        pytest.param({**BIG_ENTRY, "entries": []}, "unexpected keys", id="big-and-entries"),
        pytest.param({**REGULAR, "serialized": None}, "unexpected keys", id="entries-and-snap"),
        pytest.param(
            {k: v for k, v in REGULAR.items() if k != "prevLogTerm"},
            r"missing keys \['prevLogTerm'\]",
            id="entries-no-prev-term",
        ),
        pytest.param({**SNAPSHOT, "prevLogIdx": 1}, "unexpected keys", id="snapshot-with-prev"),
        pytest.param(
            {"type": "append_entries", "term": 1, "commit_index": 1},
            "none of 'entries'",
            id="append-no-payload",
        ),
        pytest.param({**REGULAR, "entries": ((b"a", 1, 1),)}, "must be a list", id="tuple-list"),
        pytest.param({**REGULAR, "entries": [[b"a", 1, 1]]}, "tuple", id="entry-is-list"),
        pytest.param({**REGULAR, "entries": [(b"a", 1)]}, "tuple", id="entry-2-tuple"),
        pytest.param({**REGULAR, "entries": [(b"a", 1, 1, 1)]}, "tuple", id="entry-4-tuple"),
        pytest.param(
            {**REGULAR, "entries": [(b"a", 1, 1), (b"b", 2)]}, "tuple", id="entry-mixed-shape"
        ),
        pytest.param({**REGULAR, "entries": [("a", 1, 1)]}, "data must be bytes", id="str-entry"),
        pytest.param(
            {**REGULAR, "entries": [(bytearray(b"a"), 1, 1)]},
            "data must be bytes",
            id="bytearray-entry",
        ),
        pytest.param(
            {**REGULAR, "entries": [(b"a", "1", 1)]}, "index must be an int", id="str-index"
        ),
        pytest.param(
            {**REGULAR, "entries": [(b"a", 1, 1.5)]}, "term must be an int", id="float-term"
        ),
        pytest.param(
            {**REGULAR, "entries": [(b"a", 1, 2**63)]}, "term is outside", id="term-too-big"
        ),
        pytest.param(
            {**REGULAR, "entries": [(b"a", -(2**63) - 1, 1)]},
            "index is outside",
            id="index-too-small",
        ),
        pytest.param({**SNAPSHOT, "serialized": True}, "'serialized' must be", id="snap-true"),
        pytest.param({**SNAPSHOT, "serialized": 0}, "'serialized' must be", id="snap-zero"),
        pytest.param(
            {**SNAPSHOT, "serialized": [b"", True, True]}, "'serialized' must be", id="snap-list"
        ),
        pytest.param(
            {**SNAPSHOT, "serialized": (b"", True)}, "'serialized' must be", id="snap-2-tuple"
        ),
        pytest.param(
            {**SNAPSHOT, "serialized": ("s", True, True)}, "data must be bytes", id="snap-str"
        ),
        pytest.param(
            {**SNAPSHOT, "serialized": (b"", 1, True)}, "must be bools", id="snap-int-flag"
        ),
        pytest.param(
            {"type": "next_node_idx", "next_node_idx": 1, "reset": 0, "success": True},
            "'reset' must be a bool",
            id="int-reset",
        ),
        pytest.param(
            {"type": "apply_command", "command": "text"},
            "'command' must be bytes, not str",
            id="str-command",
        ),
        pytest.param(
            {"type": "apply_command", "command": b"c", "request_id": None},
            "'request_id' must be an int",
            id="none-request-id",
        ),
        pytest.param(
            {"type": "apply_command_response", "request_id": 1, "error": 0, "log_idx": 1},
            "unexpected keys",
            id="response-both-forms",
        ),
        pytest.param(
            {"type": "apply_command_response", "request_id": 1, "log_idx": 1},
            r"missing keys \['log_term'\]",
            id="response-half-position",
        ),
        pytest.param(
            {"type": "apply_command_response", "request_id": 1},
            "missing keys",
            id="response-no-result",
        ),
    ],
)
def test_encode_rejects(message: Any, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        encode_message(message)


def test_errors_never_include_payload_bytes() -> None:
    secret = b"SECRET-PAYLOAD"
    bad: list[dict[Any, Any]] = [
        {**REGULAR, "entries": [(secret, "1", 1)]},
        {**REGULAR, "entries": [(secret, 1, 1), (secret,)]},
        {**BIG_ENTRY, "data": secret, "transmission": "nope"},
        {"type": "apply_command", "command": secret, "request_id": "x"},
        {"type": secret, "command": secret},
        {**SNAPSHOT, "serialized": (secret, 1, 1)},
    ]
    for message in bad:
        with pytest.raises(CodecError) as info:
            encode_message(message)
        assert "SECRET" not in str(info.value)
    chunk = pb.BigEntryChunk(data=secret)
    with pytest.raises(CodecError) as info:
        decode_message(_append(prev_log_idx=0, prev_log_term=0, big_entry=chunk))
    assert "SECRET" not in str(info.value)


def test_codec_error_is_value_error() -> None:
    assert issubclass(CodecError, ValueError)


# --------------------------------------------------------------------------- hygiene


def test_codec_never_imports_pickle_or_marshal() -> None:
    assert "pickle" not in codec.__dict__
    assert "marshal" not in codec.__dict__
    source = inspect.getsource(codec)
    assert "pickle.loads" not in source
    assert "marshal.loads" not in source
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"pickle", "marshal", "cPickle", "dill", "shelve"})


def test_protobuf_errors_become_codec_errors() -> None:
    class Stubborn(int):
        def __int__(self) -> int:
            raise TypeError("no")

    with pytest.raises(CodecError, match="cannot encode response_vote message") as info:
        encode_message({"type": "response_vote", "term": Stubborn(1)})
    assert isinstance(info.value.__cause__, TypeError)

"""Fuzzing of every decoder of bytes from a peer: codec, frames, handshakes.

The oracles (what each entry point may do) are in ``fuzz/oracles.py``, shared with the
atheris harnesses in ``fuzz/``. Round trips of valid messages through the codec alone are
``tests/test_codec.py``'s; here the inputs are hostile:

* arbitrary bytes, and bytes shaped like protobuf (valid tags, nested messages, bad wire
  types, overlong lengths), into every entry point;
* ``RaftMessage``\\ s built field by field with any combination of fields present, the
  entry columns often inconsistent;
* valid frames and handshakes, mutated (bit flips, truncations, deletions, insertions,
  duplications, splices with another frame), at the envelope and at the message level;
* valid message dicts with a value, key or entry broken, into the encoders;
* valid streams (frames, pulses, trace contexts) through ``read_frames``, which must
  deliver exactly the messages sent.

Example counts: ``EXAMPLES`` per test in the default run (3,800 in all, about 15 s on a
2-core machine); the ``slow`` variants run ``LONG_FACTOR`` times as many (95,000, about 7
minutes): ``python -m pytest tests/test_fuzz.py -m slow``. The two atheris harnesses run
``ATHERIS_RUNS`` executions each (about 10 s) when atheris is installed
(``pip install -e '.[fuzz]'``), and are skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fuzz import oracles
from raftgrpc._protocol import codec
from raftgrpc._protocol.frames import PULSE_REQUEST, PULSE_RESPONSE, read_frames
from raftgrpc._protocol.handshake import (
    ReadOnlyHello,
    WelcomeFailure,
    hello_bytes,
    judge_hello,
    judge_welcome,
    welcome_bytes,
)
from raftgrpc.v1 import transport_pb2 as pb
from tests.test_codec import any_message

ROOT = Path(__file__).resolve().parent.parent

EXAMPLES = {
    "bytes": 1200,
    "structured": 600,
    "mutated": 600,
    "stream": 200,
    "encode": 600,
    "handshake": 600,
}
"""Examples per test in the default run."""
LONG_FACTOR = 25
"""The slow variants (-m slow) run LONG_FACTOR times EXAMPLES."""
ATHERIS_RUNS = 20_000
"""Executions per atheris harness in the default run."""

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request: pytest.FixtureRequest) -> None:
    """The slow variants run only with -m (tests/conftest.py does this for tests/cluster)."""
    if request.node.get_closest_marker("slow") and not request.config.option.markexpr:
        pytest.skip("slow: run with -m slow")


def fuzz_test(kind: str, *strategies: st.SearchStrategy[Any]) -> Callable[[Any], Any]:
    """Make ``test_<name>`` (EXAMPLES[kind]) and ``test_<name>_long`` (slow) of one body."""

    def make(body: Callable[..., None]) -> Any:
        name = body.__name__
        module = sys.modules[body.__module__]
        for suffix, count, marks in (
            ("", EXAMPLES[kind], []),
            ("_long", LONG_FACTOR * EXAMPLES[kind], [pytest.mark.slow, pytest.mark.timeout(3600)]),
        ):
            test = settings(max_examples=count, deadline=None, suppress_health_check=_HEALTH)(
                given(*strategies)(body)
            )
            for mark in marks:
                test = mark(test)
            # Two tests of one body: they share its hypothesis database (failures replay in both).
            test.__name__ = test.__qualname__ = f"test_{name}{suffix}"
            setattr(module, test.__name__, test)
        return body

    return make


# --------------------------------------------------------------------------- strategies


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


field_number = st.one_of(
    st.integers(1, 8), st.just(15), st.integers(0, 2**29 + 5), st.integers(2**29, 2**32)
)
varint_value = st.one_of(
    st.integers(0, 300),
    st.integers(0, 2**64 - 1),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(2**64, 2**72),  # more than ten bytes: malformed
)
packed = st.lists(varint_value, max_size=6).map(lambda vs: b"".join(map(_varint, vs)))


def _fields(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    payload = st.one_of(
        children, packed, st.binary(max_size=16), st.text(max_size=8).map(str.encode)
    )
    field = st.one_of(
        st.builds(lambda n, v: _tag(n, 0) + _varint(v), field_number, varint_value),
        st.builds(lambda n, b: _tag(n, 1) + b, field_number, st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, b: _tag(n, 5) + b, field_number, st.binary(min_size=4, max_size=4)),
        st.builds(lambda n, b: _tag(n, 2) + _varint(len(b)) + b, field_number, payload),
        # Lengths that overrun the input, wire types protobuf never accepts here, junk.
        st.builds(
            lambda n, b, extra: _tag(n, 2) + _varint(len(b) + extra) + b,
            field_number,
            payload,
            st.one_of(st.integers(1, 4), st.just(2**31), st.just(2**63)),
        ),
        st.builds(_tag, field_number, st.sampled_from([3, 4, 6, 7])),
        st.binary(min_size=1, max_size=3),
    )
    return st.lists(field, max_size=6).map(b"".join)


protobuf_like = st.recursive(st.binary(max_size=12), _fields, max_leaves=24)
"""Bytes shaped like protobuf: mostly well-formed fields at any depth, with some damage."""

hostile_bytes = st.one_of(st.binary(max_size=256), protobuf_like)

# -- RaftMessage field by field

int64 = st.one_of(
    st.integers(-3, 20), st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX])
)
uint64 = st.one_of(st.integers(0, 6), st.integers(0, 2**64 - 1))


@st.composite
def entries_pb(draw: st.DrawFn) -> pb.Entries:
    """Entry columns, consistent or not (each column independently honest or arbitrary)."""
    datas = draw(st.lists(st.binary(max_size=4), max_size=6))
    count = len(datas)
    entries = pb.Entries(first_index=draw(int64))
    if draw(st.booleans()):
        entries.lengths.extend(map(len, datas))
    else:
        entries.lengths.extend(draw(st.lists(uint64, max_size=6)))
    entries.data = b"".join(datas) if draw(st.booleans()) else draw(st.binary(max_size=12))
    if draw(st.booleans()):
        entries.indexes.extend(draw(st.lists(int64, min_size=count, max_size=count)))
    elif draw(st.booleans()):
        entries.indexes.extend(draw(st.lists(int64, max_size=6)))
    if draw(st.booleans()) and count:
        inner = st.integers(1, max(1, count - 1))
        cut = sorted(draw(st.lists(inner, max_size=min(3, count - 1), unique=True)))
        bounds = [0, *cut, count]
        entries.term_runs.extend(b - a for a, b in pairwise(bounds))
        entries.term_values.extend(
            draw(st.lists(int64, min_size=len(cut) + 1, max_size=len(cut) + 1))
        )
    else:
        entries.term_runs.extend(draw(st.lists(uint64, max_size=4)))
        entries.term_values.extend(draw(st.lists(int64, max_size=4)))
    return entries


def _maybe(draw: st.DrawFn, value: st.SearchStrategy[Any]) -> Any:
    return draw(value) if draw(st.booleans()) else None


@st.composite
def append_entries_pb(draw: st.DrawFn) -> pb.AppendEntries:
    body = pb.AppendEntries(term=draw(int64), commit_index=draw(int64))
    for name in ("prev_log_idx", "prev_log_term"):
        value = _maybe(draw, int64)
        if value is not None:
            setattr(body, name, value)
    payload = draw(st.sampled_from(["entries", "big_entry", "snapshot", "snapshot_absent", None]))
    if payload == "entries":
        body.entries.CopyFrom(draw(entries_pb()))
    elif payload == "big_entry":
        # proto3 enums are open: unknown values parse, and must be refused by the codec.
        body.big_entry.transmission = draw(st.integers(0, 5))  # type: ignore[assignment]
        body.big_entry.data = draw(st.binary(max_size=8))
        body.big_entry.SetInParent()
    elif payload == "snapshot":
        body.snapshot.data = draw(st.binary(max_size=8))
        body.snapshot.first = draw(st.booleans())
        body.snapshot.last = draw(st.booleans())
        body.snapshot.SetInParent()
    elif payload == "snapshot_absent":
        body.snapshot_absent.read_error = draw(st.booleans())
        body.snapshot_absent.SetInParent()
    return body


@st.composite
def raft_message_pb(draw: st.DrawFn) -> pb.RaftMessage:
    message = pb.RaftMessage()
    kind = draw(
        st.sampled_from(
            [
                "append_entries",
                "request_vote",
                "response_vote",
                "timeout_now",
                "next_node_idx",
                "apply_command",
                "apply_command_response",
                None,
            ]
        )
    )
    if kind == "append_entries":
        message.append_entries.CopyFrom(draw(append_entries_pb()))
    elif kind == "request_vote":
        message.request_vote.term = draw(int64)
        message.request_vote.last_log_index = draw(int64)
        message.request_vote.last_log_term = draw(int64)
        message.request_vote.SetInParent()
    elif kind in ("response_vote", "timeout_now"):
        getattr(message, kind).term = draw(int64)
        getattr(message, kind).SetInParent()
    elif kind == "next_node_idx":
        nni = message.next_node_idx
        nni.next_node_idx = draw(int64)
        nni.reset = draw(st.booleans())
        nni.success = draw(st.booleans())
        nni.SetInParent()
    elif kind == "apply_command":
        message.apply_command.command = draw(st.binary(max_size=8))
        if draw(st.booleans()):
            message.apply_command.request_id = draw(int64)
        message.apply_command.SetInParent()
    elif kind == "apply_command_response":
        response = message.apply_command_response
        response.request_id = draw(int64)
        result = draw(st.sampled_from(["position", "error", None]))
        if result == "position":
            response.position.log_idx = draw(int64)
            response.position.log_term = draw(int64)
            response.position.SetInParent()
        elif result == "error":
            response.error = draw(int64)
        response.SetInParent()
    if draw(st.booleans()):
        message.trace.traceparent = draw(st.text(max_size=8))
        message.trace.tracestate = draw(st.text(max_size=4))
    return message


# -- valid messages, frames and handshakes, and their mutations

carrier = st.fixed_dictionaries(
    {"traceparent": st.text(min_size=1, max_size=60)},
    optional={"tracestate": st.text(min_size=1, max_size=20)},
)


@st.composite
def encoded_valid(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, dict[str, str] | None]:
    """A valid message, its encoding, and the trace context the encoding carries (if any)."""
    message = draw(any_message)
    encoded = codec.encode_message(message)
    trace = draw(st.none() | carrier)
    if trace is not None:
        encoded = codec.with_trace(encoded, trace)
    return message, encoded, trace


@st.composite
def mutated(draw: st.DrawFn, data: bytes, donors: list[bytes]) -> bytes:
    """``data`` after one to four edits: bit flips, truncations, splices, ..."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(["flip", "byte", "truncate", "delete", "insert", "duplicate", "splice"])
        )
        at = draw(st.integers(0, len(buf)))
        if op == "flip" and buf:
            at = min(at, len(buf) - 1)
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and buf:
            at = min(at, len(buf) - 1)
            buf[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif op == "truncate":
            del buf[at:]
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "duplicate":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
        elif op == "splice" and donors:
            donor = draw(st.sampled_from(donors))
            cut = draw(st.integers(0, len(donor)))
            buf[at:] = donor[cut:]
    return bytes(buf)


@st.composite
def mutated_frame(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(a valid request frame, the same frame mutated at the envelope or the message level)."""
    items = draw(st.lists(encoded_valid(), min_size=1, max_size=3))
    encoded = [e for _, e, _ in items]
    frame = codec.request_frame_bytes(encoded)
    if draw(st.booleans()):
        return frame, draw(mutated(frame, encoded))
    # Inside one message, framed correctly: aims at the codec rather than the parser.
    at = draw(st.integers(0, len(encoded) - 1))
    broken = list(encoded)
    broken[at] = draw(mutated(encoded[at], encoded))
    return frame, codec.request_frame_bytes(broken)


hello = st.builds(
    pb.Hello,
    protocol_version=st.sampled_from([0, 1, 1, 2, 2**32 - 1]),
    node_id=st.sampled_from([*oracles.MEMBERS, oracles.SELF_NODE_ID, "", "x" * 300])
    | st.text(max_size=12),
)
hello_request = st.one_of(
    hello.map(lambda h: pb.StreamRequest(hello=h)),
    st.builds(
        lambda v: pb.StreamRequest(hello=pb.Hello(protocol_version=v, read_only=pb.ReadOnly())),
        st.sampled_from([0, 1, 2]),
    ),
    st.builds(
        lambda v: pb.StreamRequest(hello=pb.Hello(protocol_version=v)), st.sampled_from([0, 1])
    ),
    st.just(pb.StreamRequest(pulse=pb.Pulse())),
    st.just(pb.StreamRequest(frame=pb.Frame())),
).map(lambda m: m.SerializeToString())
welcome_response = st.one_of(
    st.builds(
        lambda v, n: pb.StreamResponse(welcome=pb.Welcome(protocol_version=v, node_id=n)),
        st.sampled_from([0, 1, 2]),
        st.sampled_from([oracles.SELF_NODE_ID, *oracles.MEMBERS, ""]) | st.text(max_size=12),
    ),
    st.just(pb.StreamResponse(pulse=pb.Pulse())),
    st.just(pb.StreamResponse(frame=pb.Frame())),
).map(lambda m: m.SerializeToString())


# --------------------------------------------------------------------------- tests


@fuzz_test("bytes", hostile_bytes)
def arbitrary_bytes_into_every_decoder(raw: bytes) -> None:
    oracles.every_decoder(raw)
    event("as a message: " + ("decoded" if oracles.decode_single(raw) else "rejected"))
    # The same bytes as the body of a frame (Frame.messages) and as a whole frame.
    framed = codec.request_frame_bytes([raw])
    oracles.read_stream([PULSE_REQUEST, framed], traced=True)
    oracles.read_stream([codec.response_frame_bytes([raw])], response=True)
    oracles.decode_frame(codec.frame_bytes([raw]))


budgets = st.sampled_from([None, 0, 1024])
"""read_frames' inbound budget: its default (32 MiB), or only the floor of 32x a frame's size."""


@fuzz_test(
    "structured", st.lists(raft_message_pb(), min_size=1, max_size=4), st.booleans(), budgets
)
def raft_messages_of_any_fields_decode_or_are_rejected(
    messages: list[pb.RaftMessage], response: bool, budget: int | None
) -> None:
    encoded = [m.SerializeToString() for m in messages]
    for raw in encoded:
        event("message: " + ("decoded" if oracles.decode_single(raw) else "rejected"))
    oracles.decode_frame(codec.frame_bytes(encoded))
    wrap = codec.response_frame_bytes if response else codec.request_frame_bytes
    # One message per frame, then all in one: the good ones before a bad one are delivered.
    oracles.read_stream([wrap([e]) for e in encoded], response, True, budget)
    oracles.read_stream([wrap(encoded)], response, False, budget)


@fuzz_test("mutated", mutated_frame(), st.booleans())
def mutated_valid_frames_decode_or_are_rejected(frames: tuple[bytes, bytes], traced: bool) -> None:
    valid, broken = frames
    oracles.every_decoder(broken)
    outcome = oracles.read_stream([broken])
    event("mutated frame: " + ("rejected" if outcome.error else "accepted"))
    # A broken frame between good ones: the first is delivered, nothing after the bad one.
    oracles.read_stream([valid, broken, valid], traced=traced)
    # Request and response frames are the same bytes (field 2 of either envelope).
    oracles.read_stream([broken, valid], response=True)


@fuzz_test(
    "stream",
    st.lists(
        st.one_of(st.lists(encoded_valid(), min_size=1, max_size=4), st.just("pulse")),
        max_size=5,
    ),
    st.booleans(),
    st.booleans(),
    budgets,
)
def valid_streams_are_delivered_exactly(
    frames: list[Any], response: bool, traced: bool, budget: int | None
) -> None:
    wrap = codec.response_frame_bytes if response else codec.request_frame_bytes
    pulse = PULSE_RESPONSE if response else PULSE_REQUEST
    raws = [pulse if f == "pulse" else wrap([e for _, e, _ in f]) for f in frames]
    outcome = oracles.read_stream(raws, response, traced, budget)
    if outcome.error is not None:
        # Valid frames are refused only by the budget's floor (32 times a frame's size), when
        # they hold many tiny entries (the oracle checked the refusal).
        assert budget is not None and "budget" in str(outcome.error), outcome.error
        event("refused by the budget's floor")
        return
    sent = [m for f in frames if f != "pulse" for m, _, _ in f]
    delivered = [m for _, batch in outcome.delivered for m in batch]
    # Continuation chunks before their transfer's first chunk are dropped
    # (raftgrpc._protocol.chunks).
    assert len(delivered) + (outcome.dropped or 0) == len(sent)
    started = {"big": False, "snapshot": False}
    kept = [m for m, k in zip(sent, oracles._guard_model(sent, started), strict=True) if k]
    assert delivered == kept


def _junk_values() -> st.SearchStrategy[Any]:
    class Int(int):
        pass

    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.binary(max_size=4).map(bytearray),
        st.builds(Int, st.integers(-5, 5)),
        st.lists(st.integers(0, 3), max_size=3),
        st.tuples(st.binary(max_size=2), st.integers(), st.integers()),
        st.tuples(st.binary(max_size=2), st.booleans(), st.booleans()),
        st.sampled_from(["start", "process", "finish", "middle"]),
    )


@st.composite
def broken_message(draw: st.DrawFn) -> Any:
    """A valid message dict with one to three things wrong (or none)."""
    message: dict[Any, Any] = dict(draw(any_message))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["value", "drop", "add", "type", "entry"]))
        keys = sorted(message, key=repr)
        if op == "value" and keys:
            message[draw(st.sampled_from(keys))] = draw(_junk_values())
        elif op == "drop" and keys:
            del message[draw(st.sampled_from(keys))]
        elif op == "add":
            key = draw(
                st.sampled_from(
                    ["entries", "serialized", "transmission", "prevLogIdx", "request_id", "error"]
                )
                | st.text(max_size=3)
                | st.integers()
            )
            message[key] = draw(_junk_values())
        elif op == "type":
            message["type"] = draw(
                st.sampled_from(
                    ["request_vote", "append_entries", "apply_command_response", "gossip"]
                )
                | _junk_values()
            )
        elif op == "entry" and isinstance(message.get("entries"), list) and message["entries"]:
            entries = list(message["entries"])
            at = draw(st.integers(0, len(entries) - 1))
            entry = list(entries[at])
            entry[draw(st.integers(0, 2))] = draw(_junk_values())
            entries[at] = tuple(entry) if draw(st.booleans()) else entry
            message["entries"] = entries
    return message


@fuzz_test("encode", broken_message())
def broken_message_dicts_encode_or_are_rejected(message: Any) -> None:
    event("encoded" if oracles.encode_or_reject(message) is not None else "rejected")


@fuzz_test(
    "handshake",
    st.one_of(hello_request, welcome_response).flatmap(
        lambda raw: st.one_of(st.just(raw), mutated(raw, [raw]))
    ),
)
def handshakes_accept_exactly_what_the_protocol_allows(raw: bytes) -> None:
    for candidate in (raw, raw[:-1], raw + b"\x00"):
        oracles.server_handshake(candidate)
        oracles.claimed(candidate)
        oracles.peer_handshake(candidate)
        oracles.peer_handshake(candidate, expected_node_id=None)
        # After a good handshake, a second Hello or Welcome is not a frame.
        oracles.read_stream([candidate], response=False)
        oracles.read_stream([candidate], response=True)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_the_handshake_a_node_sends_is_the_one_its_peer_accepts(node_id: str | None) -> None:
    """hello_bytes / welcome_bytes (what a node sends) against judge_hello / judge_welcome
    (what its peer accepts), through the pure API alone."""
    hello = hello_bytes(node_id)
    judged = judge_hello(hello)
    if node_id is None:
        assert isinstance(judged, ReadOnlyHello)
    else:
        assert judged == node_id and oracles.claimed(hello) == node_id
        welcome = judge_welcome(welcome_bytes(node_id), node_id)
        assert isinstance(welcome, pb.Welcome) and welcome.node_id == node_id
        assert oracles.peer_handshake(welcome_bytes(node_id), expected_node_id=node_id)
        other = judge_welcome(welcome_bytes(node_id + "x"), node_id)
        assert isinstance(other, WelcomeFailure) and "expected" in other.reason
    oracles.server_handshake(hello)


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x12\x00", id="empty-frame"),
        pytest.param(b"\x12\x02\x0a\x00", id="frame-of-an-empty-message"),
        pytest.param(b"\x0a\x00", id="hello-without-version"),
        pytest.param(b"\x1a\x00", id="pulse"),
        pytest.param(b"\x22\x00", id="unknown-kind"),
        pytest.param(b"\x12\x05\x0a\x03\x1a\x01\x2a", id="append-entries-truncated-inside"),
        pytest.param(b"\x12\xff\xff\xff\xff\x0f", id="overlong-length"),
        pytest.param(b"\x12\x03\x7a\x01\xff", id="trace-invalid-utf8"),
        pytest.param(b"\x80" * 11, id="varint-too-long"),
        pytest.param(b"\x0b" * 200 + b"\x0c" * 200, id="deep-groups"),
        pytest.param(b"\x1a\x80\x01" * 100, id="deeply-nested-lengths"),
    ],
)
def test_hand_picked_hostile_inputs(raw: bytes) -> None:
    oracles.every_decoder(raw)


def test_carriers_are_none_when_the_guard_dropped_every_traced_message() -> None:
    """Found by test_valid_streams_are_delivered_exactly: read_frames tested "no carrier"
    before the guard dropped messages, so a frame whose only traced message was an orphaned
    chunk delivered [None, ...] instead of None (fixed in what is now
    raftgrpc/_protocol/frames.py)."""
    vote = codec.encode_message(
        {"type": "request_vote", "term": 0, "last_log_index": 0, "last_log_term": 0}
    )
    orphan = codec.encode_message(
        {
            "type": "append_entries",
            "term": 0,
            "commit_index": 0,
            "prevLogIdx": 0,
            "prevLogTerm": 0,
            "transmission": "process",
            "data": b"",
        }
    )
    frame = codec.request_frame_bytes([vote, codec.with_trace(orphan, {"traceparent": "0"})])
    seen: list[Any] = []

    def deliver(messages: list[dict[str, Any]], nbytes: int, carriers: Any) -> bool:
        seen.append((messages, carriers))
        return True

    dropped = read_frames([frame], pb.StreamRequest.FromString, deliver, traced=True)
    assert dropped == 1
    assert seen == [([codec.decode_message(pb.RaftMessage.FromString(vote))], None)]


def test_entry_columns_that_look_consistent_but_are_not() -> None:
    """Runs summing to the count with term_values one short; more indexes than lengths."""
    bad = [
        pb.Entries(lengths=[1, 1], data=b"ab", term_values=[1], term_runs=[1, 1]),
        pb.Entries(lengths=[1], data=b"a", indexes=[1, 2], term_values=[1], term_runs=[1]),
        pb.Entries(lengths=[2**64 - 1, 1], data=b"a", term_values=[1], term_runs=[2]),
        pb.Entries(lengths=[0], first_index=INT64_MAX, indexes=[], term_values=[1], term_runs=[1]),
        pb.Entries(lengths=[0, 0], first_index=INT64_MAX, term_values=[1], term_runs=[2]),
    ]
    for entries in bad:
        message = pb.RaftMessage(
            append_entries=pb.AppendEntries(prev_log_idx=0, prev_log_term=0, entries=entries)
        )
        decoded = oracles.decode_single(message.SerializeToString())
        if entries.first_index == INT64_MAX and len(entries.lengths) == 1:
            assert decoded is not None and decoded["entries"] == [(b"", INT64_MAX, 1)]
        else:
            assert decoded is None, entries


# --------------------------------------------------------------------------- atheris

HARNESSES = sorted((ROOT / "fuzz").glob("fuzz_*.py"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("harness", HARNESSES, ids=[h.stem for h in HARNESSES])
def test_atheris_harness_finds_no_crash(harness: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed: pip install -e '.[fuzz]'")
    corpus = tmp_path / "corpus"
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(harness),
            str(corpus),
            f"-atheris_runs={ATHERIS_RUNS}",
            "-seed=1",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    elapsed = time.monotonic() - started
    tail = "\n".join(result.stderr.splitlines()[-40:])
    assert result.returncode == 0, f"{harness.name} failed ({result.returncode}):\n{tail}"
    assert "Done" in result.stderr or "DONE" in result.stderr, tail
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("timeout-*"))
    assert not crashes, crashes
    print(f"{harness.name}: {ATHERIS_RUNS} runs in {elapsed:.1f}s")

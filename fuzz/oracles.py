"""What each of raftgrpc's wire decoders may do with bytes from a peer, checked.

Every function here feeds bytes to one decode entry point of the transport and checks its
contract; anything else escapes as an exception (a test failure, an atheris crash):

* the only errors are the documented ones: ``google.protobuf.message.DecodeError`` from
  parsing, :class:`raftgrpc.CodecError` from the codec, :class:`raftgrpc.FrameError`
  from :func:`raftgrpc._protocol.frames.read_frames`, an abort with a status code from the server's
  handshake, and None from the client's handshake; their texts are bounded whatever the
  input's size;
* every decoded message has one of the shapes PySyncObj sends (``DESIGN.md`` §3, checked by
  :func:`check_message` independently of the codec's own tables), encodes again, and decodes
  to itself;
* ``read_frames`` delivers exactly what the frames it read hold, all or nothing per frame,
  minus the continuation chunks of transfers that did not start on the stream, and stops at
  the first bad frame;
* the handshakes accept exactly the Hello / Welcome messages the protocol allows.

Every entry point is pure (:mod:`raftgrpc._protocol`): nothing here opens a stream, builds a
link or reads a clock.

Shared by ``tests/test_fuzz.py`` (hypothesis) and the atheris harnesses in this directory.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from raftgrpc._protocol import codec
from raftgrpc._protocol.codec import CodecError
from raftgrpc._protocol.encoder import BatchEncoder
from raftgrpc._protocol.frames import (
    FrameError,
    decoded_size,
    frame_budget,
    read_frames,
)
from raftgrpc._protocol.handshake import (
    PROTOCOL_VERSION,
    HelloFailure,
    ReadOnlyHello,
    WelcomeFailure,
    claimed_node_id,
    judge_hello,
    judge_welcome,
    not_a_member,
)
from raftgrpc.v1 import transport_pb2 as pb

__all__ = [
    "MEMBERS",
    "SELF_NODE_ID",
    "ShapeError",
    "StreamOutcome",
    "check_message",
    "claimed",
    "decode_frame",
    "decode_single",
    "encode_or_reject",
    "peer_handshake",
    "read_stream",
    "server_handshake",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_ERROR_TEXT = 4096
"""Bound on any error text or abort detail: a peer's input must not grow the logs."""

SELF_NODE_ID = "127.0.0.1:4321"
MEMBERS = ("127.0.0.1:4322", "[::1]:4323", "node-c.example:4324")
"""The node ids the fuzzed server's handshake accepts."""


class ShapeError(AssertionError):
    """A decoded message is not one PySyncObj could have sent (DESIGN.md §3)."""


# --------------------------------------------------------------------------- shapes


def _fail(message: Any, why: str) -> None:
    raise ShapeError(f"{why}: {message!r:.300}")


def _ints(message: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = message[key]
        # Exactly int: a bool (or a subclass) is not what the decoder should produce.
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            _fail(message, f"{key!r} is not an int64")


def _keys(message: dict[str, Any], *keys: str) -> None:
    if set(message) != {"type", *keys}:
        _fail(message, f"keys are not {sorted({'type', *keys})}")


def check_message(message: Any) -> None:
    """Raise :class:`ShapeError` unless ``message`` has a shape of DESIGN.md §3.

    The table there, plus what PySyncObj 0.3.17 also sends: ``serialized`` may be False (the
    leader could not read its snapshot).
    """
    if type(message) is not dict:
        _fail(message, "not a dict")
    kind = message.get("type")
    if kind == "request_vote":
        _keys(message, "term", "last_log_index", "last_log_term")
        _ints(message, "term", "last_log_index", "last_log_term")
    elif kind in ("response_vote", "timeout_now"):
        _keys(message, "term")
        _ints(message, "term")
    elif kind == "append_entries":
        _check_append_entries(message)
    elif kind == "next_node_idx":
        _keys(message, "next_node_idx", "reset", "success")
        _ints(message, "next_node_idx")
        if type(message["reset"]) is not bool or type(message["success"]) is not bool:
            _fail(message, "reset and success must be bools")
    elif kind == "apply_command":
        if "request_id" in message:
            _keys(message, "command", "request_id")
            _ints(message, "request_id")
        else:
            _keys(message, "command")
        if type(message["command"]) is not bytes:
            _fail(message, "command must be bytes")
    elif kind == "apply_command_response":
        if "error" in message:
            _keys(message, "request_id", "error")
            _ints(message, "request_id", "error")
        else:
            _keys(message, "request_id", "log_idx", "log_term")
            _ints(message, "request_id", "log_idx", "log_term")
    else:
        _fail(message, "unknown type")


def _check_append_entries(message: dict[str, Any]) -> None:
    if "entries" in message:
        _keys(message, "term", "commit_index", "prevLogIdx", "prevLogTerm", "entries")
        _ints(message, "term", "commit_index", "prevLogIdx", "prevLogTerm")
        entries = message["entries"]
        if type(entries) is not list:
            _fail(message, "entries must be a list")
        for entry in entries:
            if (
                type(entry) is not tuple
                or len(entry) != 3
                or type(entry[0]) is not bytes
                or type(entry[1]) is not int
                or type(entry[2]) is not int
                or not INT64_MIN <= entry[1] <= INT64_MAX
                or not INT64_MIN <= entry[2] <= INT64_MAX
            ):
                _fail(message, "an entry is not a (bytes, int64, int64) tuple")
    elif "transmission" in message:
        _keys(message, "term", "commit_index", "prevLogIdx", "prevLogTerm", "transmission", "data")
        _ints(message, "term", "commit_index", "prevLogIdx", "prevLogTerm")
        if message["transmission"] not in ("start", "process", "finish"):
            _fail(message, "transmission must be start, process or finish")
        if type(message["transmission"]) is not str or type(message["data"]) is not bytes:
            _fail(message, "transmission must be a str and data bytes")
    else:
        # The snapshot form: no prevLogIdx, which PySyncObj tests by key presence.
        _keys(message, "term", "commit_index", "serialized")
        _ints(message, "term", "commit_index")
        serialized = message["serialized"]
        if serialized is None or serialized is False:
            return
        if (
            type(serialized) is not tuple
            or len(serialized) != 3
            or type(serialized[0]) is not bytes
            or type(serialized[1]) is not bool
            or type(serialized[2]) is not bool
        ):
            _fail(message, "serialized must be None, False or (bytes, bool, bool)")


def _type_shape(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return (type(value), [_type_shape(v) for v in value])
    return type(value)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, with the same keys and the same Python types all the way down."""
    return a == b and {k: _type_shape(v) for k, v in a.items()} == {
        k: _type_shape(v) for k, v in b.items()
    }


def _check_error_text(exc: BaseException) -> None:
    text = str(exc)
    if len(text) > MAX_ERROR_TEXT:
        raise AssertionError(f"{type(exc).__name__} text of {len(text)} characters")


def _check_reencodes(message: dict[str, Any]) -> None:
    """A decoded message is a valid one: it encodes, and decodes back to itself."""
    encoded = codec.encode_message(message)  # CodecError here is a bug: it is not allowed
    again = codec.decode_message(pb.RaftMessage.FromString(encoded))
    if not _same(again, message):
        raise AssertionError(f"re-encoding changed the message: {message!r:.300}")
    if BatchEncoder().encode(message) != encoded:
        raise AssertionError("BatchEncoder and encode_message disagree")


# --------------------------------------------------------------------------- codec


def decode_single(raw: bytes) -> dict[str, Any] | None:
    """Bytes as one serialized ``RaftMessage``: the decoded message, or None if rejected."""
    try:
        parsed = pb.RaftMessage.FromString(raw)
    except DecodeError as exc:
        _check_error_text(exc)
        return None
    try:
        message = codec.decode_message(parsed)
    except CodecError as exc:
        _check_error_text(exc)
        return None
    check_message(message)
    _check_reencodes(message)
    return message


def decode_frame(raw: bytes) -> list[dict[str, Any]] | None:
    """Bytes as one serialized ``Frame``: its messages, or None if rejected (all or nothing)."""
    try:
        frame = pb.Frame.FromString(raw)
    except DecodeError as exc:
        _check_error_text(exc)
        return None
    carriers = codec.trace_carriers(frame)
    _check_carriers(carriers, len(frame.messages))
    try:
        messages = codec.decode_frame_messages(frame)
    except CodecError as exc:
        _check_error_text(exc)
        # All or nothing: some message of the frame must be one decode_message rejects.
        if all(_decodes(m) for m in frame.messages):
            raise AssertionError("decode_frame_messages rejected valid messages") from exc
        return None
    if len(messages) != len(frame.messages):
        raise AssertionError("decode_frame_messages lost or added messages")
    for message, one in zip(messages, frame.messages, strict=True):
        check_message(message)
        if not _same(message, codec.decode_message(one)):
            raise AssertionError("a frame decodes its messages differently from one by one")
    return messages


def _decodes(message: pb.RaftMessage) -> bool:
    try:
        codec.decode_message(message)
    except CodecError:
        return False
    return True


def _check_carriers(carriers: Any, count: int) -> None:
    if type(carriers) is not list or len(carriers) != count:
        raise AssertionError("trace_carriers does not give one entry per message")
    for carrier in carriers:
        if carrier is None:
            continue
        if type(carrier) is not dict or not {"traceparent"} <= set(carrier) <= {
            "traceparent",
            "tracestate",
        }:
            raise AssertionError(f"bad trace carrier {carrier!r:.200}")
        if not all(type(v) is str for v in carrier.values()):
            raise AssertionError(f"trace carrier values must be str: {carrier!r:.200}")


def encode_or_reject(message: Any) -> bytes | None:
    """``encode_message`` of anything: bytes that decode to an equal message, or CodecError.

    Returns None when rejected. A message with bools where ints belong decodes with ints
    (equal values), which is what PySyncObj compares.
    """
    try:
        encoded = codec.encode_message(message)
    except CodecError as exc:
        _check_error_text(exc)
        try:
            BatchEncoder().encode(message)
        except CodecError:
            return None
        raise AssertionError("BatchEncoder accepted what encode_message rejects") from None
    if BatchEncoder().encode(message) != encoded:
        raise AssertionError("BatchEncoder and encode_message disagree")
    decoded = codec.decode_message(pb.RaftMessage.FromString(encoded))
    check_message(decoded)
    if decoded != dict(message) or decoded.keys() != message.keys():
        raise AssertionError(f"round trip changed the message: {message!r:.300}")
    return encoded


# --------------------------------------------------------------------------- streams


_DEFAULT_BUDGET: int = inspect.signature(read_frames).parameters["inbound_budget"].default


@dataclass
class StreamOutcome:
    """What :func:`read_stream` saw ``read_frames`` do."""

    delivered: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)
    """(index of the raw message, the messages delivered for it), in order."""
    error: FrameError | None = None
    dropped: int | None = None
    consumed: int = 0


def _guard_model(messages: list[dict[str, Any]], state: dict[str, bool]) -> list[bool]:
    """Which messages a fresh stream may deliver; a kept 'finish' chunk that cannot end a
    pickle (its data does not end with STOP, b".") is relabelled 'process' in place
    (guard.py's rules, restated)."""
    keep = []
    for m in messages:
        if m["type"] == "append_entries" and "transmission" in m:
            if m["transmission"] == "start":
                state["big"] = True
            elif state["big"] and m["transmission"] == "finish" and not m["data"].endswith(b"."):
                m["transmission"] = "process"
            keep.append(state["big"])
        elif m["type"] == "append_entries" and isinstance(m.get("serialized"), tuple):
            if m["serialized"][1]:
                state["snapshot"] = True
            keep.append(state["snapshot"])
        else:
            keep.append(True)
    return keep


def read_stream(
    raws: Sequence[bytes],
    response: bool = False,
    traced: bool = False,
    inbound_budget: int | None = None,
) -> StreamOutcome:
    """Feed ``raws`` as one stream's messages to ``read_frames`` and check what it does.

    ``response``: as the client reads them (``StreamResponse``), else as the server does.
    ``inbound_budget``: read_frames' (its default if None); 0 leaves only the floor of
    :func:`raftgrpc._protocol.frames.frame_budget`, 32 times a frame's size.
    """
    parse = pb.StreamResponse.FromString if response else pb.StreamRequest.FromString
    outcome = StreamOutcome()
    carriers_seen: list[list[dict[str, str] | None] | None] = []

    def counted() -> Iterator[bytes]:
        for raw in raws:
            outcome.consumed += 1
            yield raw

    def deliver(
        messages: list[dict[str, Any]], nbytes: int, carriers: list[dict[str, str] | None] | None
    ) -> bool:
        index = outcome.consumed - 1
        if not messages:
            raise AssertionError("read_frames delivered an empty batch")
        if nbytes != decoded_size(len(raws[index]), messages) or nbytes < len(raws[index]):
            raise AssertionError("read_frames misreported the size of a batch")
        if carriers is not None:
            if not traced or not any(carriers):
                raise AssertionError("carriers delivered untraced, or all empty")
            _check_carriers(carriers, len(messages))
        outcome.delivered.append((index, messages))
        carriers_seen.append(carriers)
        return True

    try:
        if inbound_budget is None:
            outcome.dropped = read_frames(counted(), parse, deliver, traced=traced)
        else:
            outcome.dropped = read_frames(
                counted(), parse, deliver, traced=traced, inbound_budget=inbound_budget
            )
    except FrameError as exc:
        _check_error_text(exc)
        outcome.error = exc
    budget = _DEFAULT_BUDGET if inbound_budget is None else inbound_budget
    _check_stream(raws, parse, outcome, carriers_seen, traced, budget)
    return outcome


def _check_stream(
    raws: Sequence[bytes],
    parse: Any,
    outcome: StreamOutcome,
    carriers_seen: list[list[dict[str, str] | None] | None],
    traced: bool,
    budget: int,
) -> None:
    """Compare ``outcome`` with what the raw messages hold, decoded one by one."""
    expected: list[tuple[int, list[dict[str, Any]]]] = []
    expected_carriers: list[list[dict[str, str] | None] | None] = []
    state = {"big": False, "snapshot": False}
    dropped = 0
    bad_at: int | None = None
    for index, raw in enumerate(raws[: outcome.consumed]):
        try:
            envelope = parse(raw)
        except DecodeError:
            bad_at = index
            break
        kind = envelope.WhichOneof("kind")
        if kind == "pulse":
            continue
        if kind != "frame":
            bad_at = index
            break
        try:
            messages = codec.decode_frame_messages(envelope.frame)
        except CodecError:
            bad_at = index
            break
        # Refused before decoding: what it decodes to (estimated as for the inbound buffer)
        # is above the budget.
        if decoded_size(len(raw), messages) > frame_budget(len(raw), budget):
            if outcome.error is None or "budget" not in str(outcome.error):
                raise AssertionError(f"read_frames did not refuse a frame above {budget}")
            bad_at = index
            break
        keep = _guard_model(messages, state)
        dropped += keep.count(False)
        kept = [m for m, k in zip(messages, keep, strict=True) if k]
        carriers = codec.trace_carriers(envelope.frame)
        kept_carriers = [c for c, k in zip(carriers, keep, strict=True) if k]
        if kept:
            expected.append((index, kept))
            expected_carriers.append(kept_carriers if traced and any(kept_carriers) else None)
    if (outcome.error is not None) != (bad_at is not None):
        raise AssertionError(f"read_frames raised {outcome.error!r}, a bad frame at {bad_at}")
    if bad_at is not None and bad_at != outcome.consumed - 1:
        raise AssertionError("read_frames read on past a bad frame")
    if bad_at is None and outcome.consumed != len(raws):
        raise AssertionError("read_frames stopped before the end of a good stream")
    if bad_at is None and outcome.dropped != dropped:
        raise AssertionError(f"read_frames dropped {outcome.dropped}, expected {dropped}")
    for _, messages in outcome.delivered:
        for message in messages:
            check_message(message)
    if len(outcome.delivered) != len(expected) or not all(
        i == j and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        for (i, a), (j, b) in zip(outcome.delivered, expected, strict=True)
    ):
        raise AssertionError("read_frames delivered something other than the frames hold")
    if carriers_seen != expected_carriers:
        raise AssertionError("read_frames delivered other trace carriers than the frames hold")


# --------------------------------------------------------------------------- handshakes


def _expected_hello(raw: bytes) -> tuple[str, Any]:
    """What the server's handshake must answer to ``raw``, per the protocol."""
    try:
        request = pb.StreamRequest.FromString(raw)
    except DecodeError:
        return ("abort", grpc.StatusCode.INVALID_ARGUMENT)
    if request.WhichOneof("kind") != "hello":
        return ("abort", grpc.StatusCode.INVALID_ARGUMENT)
    hello = request.hello
    if hello.protocol_version != PROTOCOL_VERSION:
        return ("abort", grpc.StatusCode.FAILED_PRECONDITION)
    identity = hello.WhichOneof("identity")
    if identity == "read_only":
        return ("accept", None)
    if identity != "node_id":
        return ("abort", grpc.StatusCode.INVALID_ARGUMENT)
    if hello.node_id not in MEMBERS:
        return ("abort", grpc.StatusCode.PERMISSION_DENIED)
    return ("accept", hello.node_id)


def server_handshake(raw: bytes) -> tuple[str, Any]:
    """The server's handshake on a first request (:func:`raftgrpc._protocol.handshake.judge_hello`,
    then membership as the servicer checks it): ("accept", member or None for read-only) or
    ("abort", status code)."""
    judged = judge_hello(raw)
    if isinstance(judged, str) and judged not in MEMBERS:
        judged = not_a_member(judged)
    got: tuple[str, Any]
    if isinstance(judged, HelloFailure):
        _check_error_text(Exception(judged.detail))
        got = ("abort", judged.code)
    elif isinstance(judged, ReadOnlyHello):
        got = ("accept", None)
    else:
        got = ("accept", judged)
    expected = _expected_hello(raw)
    if got != expected:
        raise AssertionError(f"server handshake answered {got}, the protocol says {expected}")
    return got


def peer_handshake(raw: bytes, expected_node_id: str | None = SELF_NODE_ID) -> pb.Welcome | None:
    """The client's handshake on the server's first response
    (:func:`raftgrpc._protocol.handshake.judge_welcome`): the Welcome, or None."""
    judged = judge_welcome(raw, expected_node_id)
    welcome = None if isinstance(judged, WelcomeFailure) else judged
    try:
        response = pb.StreamResponse.FromString(raw)
        accept = (
            response.WhichOneof("kind") == "welcome"
            and response.welcome.protocol_version == PROTOCOL_VERSION
            and (expected_node_id is None or response.welcome.node_id == expected_node_id)
        )
    except DecodeError:
        accept = False
    if (welcome is not None) != accept:
        raise AssertionError(f"client handshake {'accepted' if welcome else 'refused'} {raw!r}")
    if isinstance(judged, WelcomeFailure):
        _check_error_text(Exception(judged.reason))
    return welcome


def claimed(raw: bytes) -> str | None:
    """``claimed_node_id`` (used by the auth and mTLS layers), checked against the protocol."""
    got = claimed_node_id(raw)
    try:
        request = pb.StreamRequest.FromString(raw)
    except DecodeError:
        expected = None
    else:
        is_hello = request.WhichOneof("kind") == "hello"
        named = is_hello and request.hello.WhichOneof("identity") == "node_id"
        expected = request.hello.node_id if named else None
    if got != expected or (got is not None and type(got) is not str):
        raise AssertionError(f"claimed_node_id gave {got!r}, expected {expected!r}")
    return got


def every_decoder(raw: bytes) -> None:
    """``raw`` through every entry point that reads bytes from a peer."""
    decode_single(raw)
    decode_frame(raw)
    read_stream([raw], response=False, traced=True)
    read_stream([raw], response=True, traced=False)
    server_handshake(raw)
    peer_handshake(raw)
    claimed(raw)


# --------------------------------------------------------------------------- seeds


def sample_messages() -> list[dict[str, Any]]:
    """One valid message of every shape of DESIGN.md §3 (seeds for the harnesses)."""
    prev = {"term": 3, "commit_index": 7, "prevLogIdx": 7, "prevLogTerm": 2}
    return [
        {"type": "request_vote", "term": 3, "last_log_index": 9, "last_log_term": 2},
        {"type": "response_vote", "term": 3},
        {"type": "timeout_now", "term": 4},
        {"type": "append_entries", **prev, "entries": []},
        {"type": "append_entries", **prev, "entries": [(b"a", 8, 2), (b"bc", 9, 3)]},
        {"type": "append_entries", **prev, "entries": [(b"x", 5, 1), (b"", 9, 1)]},
        {"type": "append_entries", **prev, "transmission": "start", "data": b"chunk"},
        {"type": "append_entries", **prev, "transmission": "finish", "data": b"end"},
        {"type": "append_entries", "term": 3, "commit_index": 7, "serialized": None},
        {"type": "append_entries", "term": 3, "commit_index": 7, "serialized": False},
        {"type": "append_entries", "term": 3, "commit_index": 7, "serialized": (b"s", True, False)},
        {"type": "next_node_idx", "next_node_idx": 8, "reset": False, "success": True},
        {"type": "apply_command", "command": b"cmd"},
        {"type": "apply_command", "command": b"cmd", "request_id": 12},
        {"type": "apply_command_response", "request_id": 12, "log_idx": 8, "log_term": 3},
        {"type": "apply_command_response", "request_id": 12, "error": 2},
    ]


def sample_encoded() -> list[bytes]:
    """The serialized RaftMessages of :func:`sample_messages`, and one with a trace context."""
    encoded = [codec.encode_message(m) for m in sample_messages()]
    traced = codec.with_trace(
        encoded[0], {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    return [*encoded, traced]


def sample_handshakes() -> list[bytes]:
    """A Hello of a member, a read-only Hello, and the Welcome the client expects."""
    return [
        pb.StreamRequest(
            hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id=MEMBERS[0])
        ).SerializeToString(),
        pb.StreamRequest(
            hello=pb.Hello(protocol_version=PROTOCOL_VERSION, read_only=pb.ReadOnly())
        ).SerializeToString(),
        pb.StreamResponse(
            welcome=pb.Welcome(protocol_version=PROTOCOL_VERSION, node_id=SELF_NODE_ID)
        ).SerializeToString(),
    ]

"""Conversion between PySyncObj message dicts and ``raftgrpc.v1`` protobuf messages.

PySyncObj hands its transport plain dicts with a ``'type'`` key. Every shape it sends maps to
one :class:`~raftgrpc.v1.transport_pb2.RaftMessage` (see ``proto/raftgrpc/v1/transport.proto``)
and decodes back to a dict equal to the one that was sent, with the same keys. Log entries are
carried as packed columns so that a batch of thousands of small entries costs a handful of
C-level operations rather than one protobuf object per entry.

The codec is pure: no I/O and no unpickling. Payload bytes (entries, chunks, commands) are
opaque. Anything that cannot be encoded or decoded raises :class:`CodecError`, whose message
names the offending key or field but never includes payload bytes.

Frames are assembled from already-serialized messages by byte concatenation
(:func:`frame_bytes`, :func:`request_frame_bytes`, :func:`response_frame_bytes`), so a message
is serialized once however it is batched.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate, pairwise, repeat
from typing import Any

from raftgrpc._errors import CodecError
from raftgrpc.v1 import transport_pb2

__all__ = [
    "CodecError",
    "decode_frame_messages",
    "decode_message",
    "encode_message",
    "frame_bytes",
    "request_frame_bytes",
    "response_frame_bytes",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_RaftMessage = transport_pb2.RaftMessage

_TRANSMISSION_TO_PB: dict[str, int] = {
    "start": transport_pb2.TRANSMISSION_START,
    "process": transport_pb2.TRANSMISSION_PROCESS,
    "finish": transport_pb2.TRANSMISSION_FINISH,
}
_TRANSMISSION_FROM_PB: dict[int, str] = {v: k for k, v in _TRANSMISSION_TO_PB.items()}

_KEYS_REQUEST_VOTE = frozenset({"type", "term", "last_log_index", "last_log_term"})
_KEYS_TERM_ONLY = frozenset({"type", "term"})
_KEYS_ENTRIES = frozenset({"type", "term", "commit_index", "prevLogIdx", "prevLogTerm", "entries"})
_KEYS_BIG_ENTRY = frozenset(
    {"type", "term", "commit_index", "prevLogIdx", "prevLogTerm", "transmission", "data"}
)
_KEYS_SNAPSHOT = frozenset({"type", "term", "commit_index", "serialized"})
_KEYS_NEXT_NODE_IDX = frozenset({"type", "next_node_idx", "reset", "success"})
_KEYS_APPLY_COMMAND = frozenset({"type", "command"})
_KEYS_APPLY_COMMAND_ID = frozenset({"type", "command", "request_id"})
_KEYS_RESPONSE_POSITION = frozenset({"type", "request_id", "log_idx", "log_term"})
_KEYS_RESPONSE_ERROR = frozenset({"type", "request_id", "error"})


# --------------------------------------------------------------------------- helpers


def _varint(n: int) -> bytes:
    """Return the protobuf base-128 varint encoding of the non-negative integer ``n``."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _describe_type(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    if isinstance(kind, str):
        return repr(kind[:40])
    return f"of Python type {type(kind).__name__}"


def _check_keys(message: Mapping[str, Any], expected: frozenset[str], what: str) -> None:
    keys = set(message.keys())
    if keys == expected:
        return
    missing = sorted(expected - keys)
    extra = sorted(repr(k)[:40] for k in keys - expected)
    parts = []
    if missing:
        parts.append(f"missing keys {missing}")
    if extra:
        parts.append(f"unexpected keys [{', '.join(extra)}]")
    raise CodecError(f"{what} message has {' and '.join(parts)}")


def _int(message: Mapping[str, Any], key: str) -> int:
    value = message[key]
    if not isinstance(value, int):
        raise CodecError(f"{key!r} must be an int, not {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise CodecError(f"{key!r} is outside the int64 range")
    return int(value)


def _bool(message: Mapping[str, Any], key: str) -> bool:
    value = message[key]
    if not isinstance(value, bool):
        raise CodecError(f"{key!r} must be a bool, not {type(value).__name__}")
    return value


def _bytes(message: Mapping[str, Any], key: str) -> bytes:
    value = message[key]
    if not isinstance(value, bytes):
        raise CodecError(f"{key!r} must be bytes, not {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- encoding


def _encode_request_vote(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    _check_keys(message, _KEYS_REQUEST_VOTE, "request_vote")
    body = pb.request_vote
    body.term = _int(message, "term")
    body.last_log_index = _int(message, "last_log_index")
    body.last_log_term = _int(message, "last_log_term")


def _encode_response_vote(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    _check_keys(message, _KEYS_TERM_ONLY, "response_vote")
    pb.response_vote.term = _int(message, "term")


def _encode_timeout_now(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    _check_keys(message, _KEYS_TERM_ONLY, "timeout_now")
    pb.timeout_now.term = _int(message, "term")


def _int64_column(values: tuple[Any, ...], what: str) -> array[int]:
    """Return ``values`` as a signed 64-bit array, rejecting non-ints and out-of-range ints.

    ``array('q', ...)`` does the type and range checks in one C-level pass, and its items are
    plain ints even when the input held bools (which protobuf refuses in integer fields).
    """
    try:
        return array("q", values)
    except OverflowError:
        raise CodecError(f"an entry {what} is outside the int64 range") from None
    except TypeError:
        raise CodecError(f"every entry {what} must be an int") from None


def _encode_entries(entries: Any, pb_entries: transport_pb2.Entries) -> None:
    if not isinstance(entries, list):
        raise CodecError(f"'entries' must be a list, not {type(entries).__name__}")
    pb_entries.SetInParent()
    count = len(entries)
    if not count:
        return
    if set(map(type, entries)) != {tuple}:
        raise CodecError("every entry must be a (bytes data, int index, int term) tuple")
    try:
        # strict=True rejects tuples of different sizes; unpacking rejects a common size != 3.
        datas, raw_indexes, raw_terms = zip(*entries, strict=True)
    except ValueError:
        raise CodecError("every entry must be a (bytes data, int index, int term) tuple") from None
    if set(map(type, datas)) != {bytes}:
        raise CodecError("every entry data must be bytes")
    indexes = _int64_column(raw_indexes, "index")
    terms = _int64_column(raw_terms, "term")

    first = indexes[0]
    pb_entries.first_index = first
    # Comparing the original tuple is cheaper than comparing arrays; the array has already
    # vetted its items, and an int-equal bool is as good as the int it equals.
    if raw_indexes != tuple(range(first, first + count)):
        pb_entries.indexes.extend(indexes)
    pb_entries.lengths.extend(map(len, datas))
    pb_entries.data = b"".join(datas)

    first_term = terms[0]
    if terms.count(first_term) == count:
        pb_entries.term_values.append(first_term)
        pb_entries.term_runs.append(count)
        return
    starts = [0]
    starts.extend([i for i in range(1, count) if terms[i] != terms[i - 1]])
    pb_entries.term_values.extend([terms[i] for i in starts])
    starts.append(count)
    pb_entries.term_runs.extend([b - a for a, b in pairwise(starts)])


def _encode_append_entries(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    body = pb.append_entries
    if "entries" in message:
        _check_keys(message, _KEYS_ENTRIES, "append_entries (entries)")
    elif "transmission" in message:
        _check_keys(message, _KEYS_BIG_ENTRY, "append_entries (big entry)")
    elif "serialized" in message:
        _check_keys(message, _KEYS_SNAPSHOT, "append_entries (snapshot)")
    else:
        raise CodecError(
            "append_entries message has none of 'entries', 'transmission' or 'serialized'"
        )
    body.term = _int(message, "term")
    body.commit_index = _int(message, "commit_index")

    if "serialized" in message:
        serialized = message["serialized"]
        if serialized is None:
            body.snapshot_absent.read_error = False
            body.snapshot_absent.SetInParent()
        elif serialized is False:
            body.snapshot_absent.read_error = True
        elif isinstance(serialized, tuple) and len(serialized) == 3:
            data, first, last = serialized
            if not isinstance(data, bytes):
                raise CodecError(f"'serialized' data must be bytes, not {type(data).__name__}")
            if not isinstance(first, bool) or not isinstance(last, bool):
                raise CodecError("'serialized' first and last flags must be bools")
            chunk = body.snapshot
            chunk.data = data
            chunk.first = first
            chunk.last = last
            chunk.SetInParent()
        else:
            raise CodecError(
                "'serialized' must be None, False or a (bytes, bool, bool) tuple, "
                f"not {type(serialized).__name__}"
            )
        return

    body.prev_log_idx = _int(message, "prevLogIdx")
    body.prev_log_term = _int(message, "prevLogTerm")
    if "entries" in message:
        _encode_entries(message["entries"], body.entries)
        return
    transmission = message["transmission"]
    code = _TRANSMISSION_TO_PB.get(transmission) if isinstance(transmission, str) else None
    if code is None:
        raise CodecError("'transmission' must be one of 'start', 'process', 'finish'")
    big = body.big_entry
    big.transmission = code  # type: ignore[assignment]
    big.data = _bytes(message, "data")


def _encode_next_node_idx(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    _check_keys(message, _KEYS_NEXT_NODE_IDX, "next_node_idx")
    body = pb.next_node_idx
    body.next_node_idx = _int(message, "next_node_idx")
    body.reset = _bool(message, "reset")
    body.success = _bool(message, "success")
    body.SetInParent()


def _encode_apply_command(message: Mapping[str, Any], pb: transport_pb2.RaftMessage) -> None:
    has_id = "request_id" in message
    _check_keys(message, _KEYS_APPLY_COMMAND_ID if has_id else _KEYS_APPLY_COMMAND, "apply_command")
    body = pb.apply_command
    body.command = _bytes(message, "command")
    if has_id:
        body.request_id = _int(message, "request_id")
    body.SetInParent()


def _encode_apply_command_response(
    message: Mapping[str, Any], pb: transport_pb2.RaftMessage
) -> None:
    body = pb.apply_command_response
    if "error" in message:
        _check_keys(message, _KEYS_RESPONSE_ERROR, "apply_command_response (error)")
        body.request_id = _int(message, "request_id")
        body.error = _int(message, "error")
    else:
        _check_keys(message, _KEYS_RESPONSE_POSITION, "apply_command_response (position)")
        body.request_id = _int(message, "request_id")
        position = body.position
        position.log_idx = _int(message, "log_idx")
        position.log_term = _int(message, "log_term")
        position.SetInParent()


_ENCODERS: dict[str, Callable[[Mapping[str, Any], transport_pb2.RaftMessage], None]] = {
    "request_vote": _encode_request_vote,
    "response_vote": _encode_response_vote,
    "append_entries": _encode_append_entries,
    "next_node_idx": _encode_next_node_idx,
    "apply_command": _encode_apply_command,
    "apply_command_response": _encode_apply_command_response,
    "timeout_now": _encode_timeout_now,
}


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Encode one PySyncObj message dict as a serialized ``RaftMessage``.

    Raises :class:`CodecError` for an unknown ``'type'``, missing or extra keys, values of the
    wrong type, integers outside int64, an unknown ``'transmission'`` or malformed entries.
    """
    if not isinstance(message, Mapping):
        raise CodecError(f"a message must be a mapping, not {type(message).__name__}")
    kind = message.get("type")
    encoder = _ENCODERS.get(kind) if isinstance(kind, str) else None
    if encoder is None:
        raise CodecError(f"unknown message type {_describe_type(message)}")
    pb = _RaftMessage()
    try:
        encoder(message, pb)
        encoded: bytes = pb.SerializeToString()
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {kind} message: {type(exc).__name__}") from exc
    return encoded


# --------------------------------------------------------------------------- decoding


def _decode_entries(pb_entries: transport_pb2.Entries) -> list[tuple[bytes, int, int]]:
    lengths = list(pb_entries.lengths)
    runs = list(pb_entries.term_runs)
    values = list(pb_entries.term_values)
    count = len(lengths)
    if len(values) != len(runs):
        raise CodecError("entries have different numbers of term_values and term_runs")
    if 0 in runs:
        raise CodecError("entries have an empty term run")
    if sum(runs) != count:
        raise CodecError("entries term_runs do not add up to the number of lengths")
    data = pb_entries.data
    offsets = list(accumulate(lengths, initial=0))
    if offsets[-1] != len(data):
        raise CodecError("entries lengths do not add up to the size of data")
    if not count:
        return []
    raw_indexes = pb_entries.indexes
    indexes: Sequence[int]
    if raw_indexes:
        if len(raw_indexes) != count:
            raise CodecError("entries have a number of indexes different from their lengths")
        indexes = list(raw_indexes)
    else:
        first = pb_entries.first_index
        if first + count - 1 > _INT64_MAX:
            raise CodecError("entries first_index overflows int64")
        indexes = range(first, first + count)
    chunks = [data[a:b] for a, b in pairwise(offsets)]
    if len(values) == 1:
        return list(zip(chunks, indexes, repeat(values[0], count), strict=True))
    terms: list[int] = []
    for value, run in zip(values, runs, strict=True):
        terms += [value] * run
    return list(zip(chunks, indexes, terms, strict=True))


def _decode_append_entries(body: transport_pb2.AppendEntries) -> dict[str, Any]:
    payload = body.WhichOneof("payload")
    has_prev = body.HasField("prev_log_idx"), body.HasField("prev_log_term")
    message: dict[str, Any] = {
        "type": "append_entries",
        "term": body.term,
        "commit_index": body.commit_index,
    }
    if payload == "entries" or payload == "big_entry":
        if not all(has_prev):
            raise CodecError(f"append_entries with {payload} lacks prev_log_idx or prev_log_term")
        message["prevLogIdx"] = body.prev_log_idx
        message["prevLogTerm"] = body.prev_log_term
        if payload == "entries":
            message["entries"] = _decode_entries(body.entries)
        else:
            big = body.big_entry
            transmission = _TRANSMISSION_FROM_PB.get(big.transmission)
            if transmission is None:
                raise CodecError("append_entries big_entry has no valid transmission")
            message["transmission"] = transmission
            message["data"] = big.data
        return message
    if payload is None:
        raise CodecError("append_entries has no payload")
    if any(has_prev):
        raise CodecError(f"append_entries with {payload} must not have prev_log_idx/prev_log_term")
    if payload == "snapshot":
        chunk = body.snapshot
        message["serialized"] = (chunk.data, chunk.first, chunk.last)
    else:
        message["serialized"] = False if body.snapshot_absent.read_error else None
    return message


def decode_message(pb: transport_pb2.RaftMessage) -> dict[str, Any]:
    """Decode one ``RaftMessage`` into the PySyncObj message dict it was encoded from.

    Strict: a message that no PySyncObj dict could have produced (no body, no payload, a
    missing or misplaced presence field, an unspecified transmission, inconsistent entry
    columns, a response without a result) raises :class:`CodecError`.
    """
    kind = pb.WhichOneof("body")
    if kind == "append_entries":
        return _decode_append_entries(pb.append_entries)
    if kind == "request_vote":
        vote = pb.request_vote
        return {
            "type": "request_vote",
            "term": vote.term,
            "last_log_index": vote.last_log_index,
            "last_log_term": vote.last_log_term,
        }
    if kind == "response_vote":
        return {"type": "response_vote", "term": pb.response_vote.term}
    if kind == "timeout_now":
        return {"type": "timeout_now", "term": pb.timeout_now.term}
    if kind == "next_node_idx":
        nni = pb.next_node_idx
        return {
            "type": "next_node_idx",
            "next_node_idx": nni.next_node_idx,
            "reset": nni.reset,
            "success": nni.success,
        }
    if kind == "apply_command":
        command = pb.apply_command
        message: dict[str, Any] = {"type": "apply_command", "command": command.command}
        if command.HasField("request_id"):
            message["request_id"] = command.request_id
        return message
    if kind == "apply_command_response":
        response = pb.apply_command_response
        result = response.WhichOneof("result")
        if result == "position":
            return {
                "type": "apply_command_response",
                "request_id": response.request_id,
                "log_idx": response.position.log_idx,
                "log_term": response.position.log_term,
            }
        if result == "error":
            return {
                "type": "apply_command_response",
                "request_id": response.request_id,
                "error": response.error,
            }
        raise CodecError("apply_command_response has no result")
    raise CodecError("RaftMessage has no body")


def decode_frame_messages(frame: transport_pb2.Frame) -> list[dict[str, Any]]:
    """Decode every message of ``frame``, in order; all or nothing.

    Raises :class:`CodecError` (naming the position) on the first message that cannot be
    decoded.
    """
    result: list[dict[str, Any]] = []
    for position, pb in enumerate(frame.messages):
        try:
            result.append(decode_message(pb))
        except CodecError as exc:
            raise CodecError(f"frame message {position}: {exc}") from exc
    return result


def trace_carriers(frame: transport_pb2.Frame) -> list[dict[str, str] | None]:
    """The W3C trace context of each message of ``frame`` (None where it carries none)."""
    carriers: list[dict[str, str] | None] = []
    for pb in frame.messages:
        if pb.HasField("trace"):
            carrier = {"traceparent": pb.trace.traceparent}
            if pb.trace.tracestate:
                carrier["tracestate"] = pb.trace.tracestate
            carriers.append(carrier)
        else:
            carriers.append(None)
    return carriers


_TRACE_TAG = b"\x7a"  # RaftMessage.trace, field 15, length-delimited


def with_trace(encoded_message: bytes, carrier: Mapping[str, str]) -> bytes:
    """``encoded_message`` with a ``trace`` field holding ``carrier``'s W3C headers.

    Appending a field to serialized protobuf bytes sets it, so the (possibly shared) encoding
    of the message itself is reused as is.
    """
    trace = transport_pb2.TraceContext(
        traceparent=carrier.get("traceparent", ""), tracestate=carrier.get("tracestate", "")
    ).SerializeToString()
    return b"".join((encoded_message, _TRACE_TAG, _varint(len(trace)), trace))


# --------------------------------------------------------------------------- framing

_FRAME_MESSAGES_TAG = b"\x0a"  # Frame.messages, field 1, length-delimited
_KIND_FRAME_TAG = b"\x12"  # StreamRequest.frame / StreamResponse.frame, field 2


def frame_bytes(encoded_messages: Sequence[bytes]) -> bytes:
    """Return the serialized ``Frame`` holding the given serialized ``RaftMessage``\\ s.

    Built by concatenation; the messages are not parsed again.
    """
    parts: list[bytes] = []
    for encoded in encoded_messages:
        parts += (_FRAME_MESSAGES_TAG, _varint(len(encoded)), encoded)
    return b"".join(parts)


def _wrap_frame(encoded_messages: Sequence[bytes]) -> bytes:
    frame = frame_bytes(encoded_messages)
    return b"".join((_KIND_FRAME_TAG, _varint(len(frame)), frame))


def request_frame_bytes(encoded_messages: Sequence[bytes]) -> bytes:
    """Return the serialized ``StreamRequest`` whose ``frame`` holds the given messages."""
    return _wrap_frame(encoded_messages)


def response_frame_bytes(encoded_messages: Sequence[bytes]) -> bytes:
    """Return the serialized ``StreamResponse`` whose ``frame`` holds the given messages."""
    return _wrap_frame(encoded_messages)

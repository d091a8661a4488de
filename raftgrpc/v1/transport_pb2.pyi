from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Transmission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSMISSION_UNSPECIFIED: _ClassVar[Transmission]
    TRANSMISSION_START: _ClassVar[Transmission]
    TRANSMISSION_PROCESS: _ClassVar[Transmission]
    TRANSMISSION_FINISH: _ClassVar[Transmission]
TRANSMISSION_UNSPECIFIED: Transmission
TRANSMISSION_START: Transmission
TRANSMISSION_PROCESS: Transmission
TRANSMISSION_FINISH: Transmission

class StreamRequest(_message.Message):
    __slots__ = ("hello", "frame", "pulse")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PULSE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    frame: Frame
    pulse: Pulse
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., pulse: _Optional[_Union[Pulse, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("welcome", "frame", "pulse")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PULSE_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    frame: Frame
    pulse: Pulse
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., pulse: _Optional[_Union[Pulse, _Mapping]] = ...) -> None: ...

class Pulse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "node_id", "read_only")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    read_only: ReadOnly
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ..., read_only: _Optional[_Union[ReadOnly, _Mapping]] = ...) -> None: ...

class ReadOnly(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "node_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("request_vote", "response_vote", "append_entries", "next_node_idx", "apply_command", "apply_command_response", "timeout_now", "trace")
    REQUEST_VOTE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_VOTE_FIELD_NUMBER: _ClassVar[int]
    APPEND_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_IDX_FIELD_NUMBER: _ClassVar[int]
    APPLY_COMMAND_FIELD_NUMBER: _ClassVar[int]
    APPLY_COMMAND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    request_vote: RequestVote
    response_vote: ResponseVote
    append_entries: AppendEntries
    next_node_idx: NextNodeIdx
    apply_command: ApplyCommand
    apply_command_response: ApplyCommandResponse
    timeout_now: TimeoutNow
    trace: TraceContext
    def __init__(self, request_vote: _Optional[_Union[RequestVote, _Mapping]] = ..., response_vote: _Optional[_Union[ResponseVote, _Mapping]] = ..., append_entries: _Optional[_Union[AppendEntries, _Mapping]] = ..., next_node_idx: _Optional[_Union[NextNodeIdx, _Mapping]] = ..., apply_command: _Optional[_Union[ApplyCommand, _Mapping]] = ..., apply_command_response: _Optional[_Union[ApplyCommandResponse, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class RequestVote(_message.Message):
    __slots__ = ("term", "last_log_index", "last_log_term")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_log_index: int
    last_log_term: int
    def __init__(self, term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ...) -> None: ...

class ResponseVote(_message.Message):
    __slots__ = ("term",)
    TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    def __init__(self, term: _Optional[int] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ("term",)
    TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    def __init__(self, term: _Optional[int] = ...) -> None: ...

class AppendEntries(_message.Message):
    __slots__ = ("term", "commit_index", "prev_log_idx", "prev_log_term", "entries", "big_entry", "snapshot", "snapshot_absent")
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_IDX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BIG_ENTRY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ABSENT_FIELD_NUMBER: _ClassVar[int]
    term: int
    commit_index: int
    prev_log_idx: int
    prev_log_term: int
    entries: Entries
    big_entry: BigEntryChunk
    snapshot: SnapshotChunk
    snapshot_absent: SnapshotAbsent
    def __init__(self, term: _Optional[int] = ..., commit_index: _Optional[int] = ..., prev_log_idx: _Optional[int] = ..., prev_log_term: _Optional[int] = ..., entries: _Optional[_Union[Entries, _Mapping]] = ..., big_entry: _Optional[_Union[BigEntryChunk, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., snapshot_absent: _Optional[_Union[SnapshotAbsent, _Mapping]] = ...) -> None: ...

class Entries(_message.Message):
    __slots__ = ("first_index", "indexes", "lengths", "data", "term_values", "term_runs")
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TERM_VALUES_FIELD_NUMBER: _ClassVar[int]
    TERM_RUNS_FIELD_NUMBER: _ClassVar[int]
    first_index: int
    indexes: _containers.RepeatedScalarFieldContainer[int]
    lengths: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    term_values: _containers.RepeatedScalarFieldContainer[int]
    term_runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, first_index: _Optional[int] = ..., indexes: _Optional[_Iterable[int]] = ..., lengths: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., term_values: _Optional[_Iterable[int]] = ..., term_runs: _Optional[_Iterable[int]] = ...) -> None: ...

class BigEntryChunk(_message.Message):
    __slots__ = ("transmission", "data")
    TRANSMISSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    transmission: Transmission
    data: bytes
    def __init__(self, transmission: _Optional[_Union[Transmission, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("data", "first", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    first: bool
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., first: _Optional[bool] = ..., last: _Optional[bool] = ...) -> None: ...

class SnapshotAbsent(_message.Message):
    __slots__ = ("read_error",)
    READ_ERROR_FIELD_NUMBER: _ClassVar[int]
    read_error: bool
    def __init__(self, read_error: _Optional[bool] = ...) -> None: ...

class NextNodeIdx(_message.Message):
    __slots__ = ("next_node_idx", "reset", "success")
    NEXT_NODE_IDX_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    next_node_idx: int
    reset: bool
    success: bool
    def __init__(self, next_node_idx: _Optional[int] = ..., reset: _Optional[bool] = ..., success: _Optional[bool] = ...) -> None: ...

class ApplyCommand(_message.Message):
    __slots__ = ("command", "request_id")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    command: bytes
    request_id: int
    def __init__(self, command: _Optional[bytes] = ..., request_id: _Optional[int] = ...) -> None: ...

class ApplyCommandResponse(_message.Message):
    __slots__ = ("request_id", "position", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    position: LogPosition
    error: int
    def __init__(self, request_id: _Optional[int] = ..., position: _Optional[_Union[LogPosition, _Mapping]] = ..., error: _Optional[int] = ...) -> None: ...

class LogPosition(_message.Message):
    __slots__ = ("log_idx", "log_term")
    LOG_IDX_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    log_idx: int
    log_term: int
    def __init__(self, log_idx: _Optional[int] = ..., log_term: _Optional[int] = ...) -> None: ...

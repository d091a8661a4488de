from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RAFT_STATE_UNSPECIFIED: _ClassVar[RaftState]
    RAFT_STATE_FOLLOWER: _ClassVar[RaftState]
    RAFT_STATE_CANDIDATE: _ClassVar[RaftState]
    RAFT_STATE_LEADER: _ClassVar[RaftState]
RAFT_STATE_UNSPECIFIED: RaftState
RAFT_STATE_FOLLOWER: RaftState
RAFT_STATE_CANDIDATE: RaftState
RAFT_STATE_LEADER: RaftState

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartnerNode(_message.Message):
    __slots__ = ("node_id", "connected")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    connected: bool
    def __init__(self, node_id: _Optional[str] = ..., connected: _Optional[bool] = ...) -> None: ...

class ReadonlyNode(_message.Message):
    __slots__ = ("node_id", "connected")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    connected: bool
    def __init__(self, node_id: _Optional[str] = ..., connected: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("self_node", "state", "leader", "has_quorum", "partners", "readonly_nodes", "log_len", "last_applied", "commit_idx", "leader_commit_idx", "raft_term", "next_node_idx", "match_idx", "uptime_s", "self_code_version", "enabled_code_version", "version", "extra")
    class NextNodeIdxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class MatchIdxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SELF_NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    PARTNERS_FIELD_NUMBER: _ClassVar[int]
    READONLY_NODES_FIELD_NUMBER: _ClassVar[int]
    LOG_LEN_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_IDX_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_IDX_FIELD_NUMBER: _ClassVar[int]
    RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_IDX_FIELD_NUMBER: _ClassVar[int]
    MATCH_IDX_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    SELF_CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    self_node: str
    state: RaftState
    leader: str
    has_quorum: bool
    partners: _containers.RepeatedCompositeFieldContainer[PartnerNode]
    readonly_nodes: _containers.RepeatedCompositeFieldContainer[ReadonlyNode]
    log_len: int
    last_applied: int
    commit_idx: int
    leader_commit_idx: int
    raft_term: int
    next_node_idx: _containers.ScalarMap[str, int]
    match_idx: _containers.ScalarMap[str, int]
    uptime_s: int
    self_code_version: int
    enabled_code_version: int
    version: str
    extra: _containers.ScalarMap[str, str]
    def __init__(self, self_node: _Optional[str] = ..., state: _Optional[_Union[RaftState, str]] = ..., leader: _Optional[str] = ..., has_quorum: _Optional[bool] = ..., partners: _Optional[_Iterable[_Union[PartnerNode, _Mapping]]] = ..., readonly_nodes: _Optional[_Iterable[_Union[ReadonlyNode, _Mapping]]] = ..., log_len: _Optional[int] = ..., last_applied: _Optional[int] = ..., commit_idx: _Optional[int] = ..., leader_commit_idx: _Optional[int] = ..., raft_term: _Optional[int] = ..., next_node_idx: _Optional[_Mapping[str, int]] = ..., match_idx: _Optional[_Mapping[str, int]] = ..., uptime_s: _Optional[int] = ..., self_code_version: _Optional[int] = ..., enabled_code_version: _Optional[int] = ..., version: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AddNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class AddNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SetVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

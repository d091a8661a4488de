"""The admin service: PySyncObj's utility commands over authenticated gRPC.

``raftgrpc.v1.Admin`` (proto/raftgrpc/v1/admin.proto) serves what PySyncObj's
``syncobj_admin`` sends over TCPTransport's utility protocol: ``Status``, ``AddNode``,
``RemoveNode``, ``SetVersion`` and ``TransferLeadership``. Each call is a coroutine on the
transport's event loop, which the tick thread runs: it calls PySyncObj's utility callback
there and then awaits PySyncObj's answer without blocking anything, at most ``timeout_s`` or
the call's deadline. A node serves it when its middleware lists :func:`service`
(``TransportBuilder.with_admin()``); clients are :class:`raftgrpc._ops.admin_client.GrpcUtility` and
``raftgrpc admin ...``.

Failures end the call with a gRPC status, a readable message, and trailing metadata:
``raftgrpc-fail-reason`` (a PySyncObj ``FAIL_REASON`` name; ``EXCEPTION`` when PySyncObj
raised, e.g. "dynamicMembershipChange is disabled"; ``TIMEOUT``) and ``raftgrpc-leader`` (the
leader the node knows). ``NOT_LEADER`` is ``FAILED_PRECONDITION`` ("not the leader; the
leader is HOST:PORT"), ``REQUEST_DENIED`` ``FAILED_PRECONDITION``, ``QUEUE_FULL``
``RESOURCE_EXHAUSTED``, ``MISSING_LEADER`` ``UNAVAILABLE``, ``DISCARDED`` and
``LEADER_CHANGED`` ``ABORTED``, ``UNKNOWN_OUTCOME`` ``UNKNOWN``, no answer in time
``DEADLINE_EXCEEDED``, a malformed address ``INVALID_ARGUMENT``.

Authorization is the auth interceptor's: with :func:`raftgrpc.interceptors.auth.server_interceptor`
(``DEFAULT_METHOD_ROLES``) every ``/raftgrpc.v1.Admin/`` method needs a token whose
``raftgrpc_role`` is ``admin``. :func:`require_authorization` is the check a builder makes
before serving the service.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, cast

import grpc

from raftgrpc._errors import ConfigError, RaftGrpcError
from raftgrpc._protocol.address import split_host_port
from raftgrpc._pysyncobj import (
    FAIL_REASON_NAMES,
    RAFT_STATE_NAMES,
    SUCCESS,
    leader_of,
)
from raftgrpc._transport.services import NodeContext, NodeService, ServiceFactory
from raftgrpc.v1 import admin_pb2 as pb

__all__ = [
    "FAIL_REASON_KEY",
    "LEADER_KEY",
    "METHOD_PREFIX",
    "SERVICE_NAME",
    "AdminService",
    "check_node_address",
    "raft_state_name",
    "require_authorization",
    "service",
    "status_dict",
    "status_response",
]

logger = logging.getLogger("raftgrpc.admin")

SERVICE_NAME = "raftgrpc.v1.Admin"
METHOD_PREFIX = f"/{SERVICE_NAME}/"
"""The prefix of the admin methods' paths (what auth's ``DEFAULT_METHOD_ROLES`` maps to
the "admin" role)."""

FAIL_REASON_KEY = "raftgrpc-fail-reason"
"""Trailing metadata: why the call failed (a FAIL_REASON name, ``EXCEPTION``, ``TIMEOUT``)."""
LEADER_KEY = "raftgrpc-leader"
"""Trailing metadata: the leader the node knows, when a call failed and it knows one."""

_FAIL_CODES: Mapping[str, tuple[grpc.StatusCode, str]] = {
    "QUEUE_FULL": (grpc.StatusCode.RESOURCE_EXHAUSTED, "the node's command queue is full"),
    "MISSING_LEADER": (
        grpc.StatusCode.UNAVAILABLE,
        "no leader: an election is in progress, or the node is cut off",
    ),
    "DISCARDED": (
        grpc.StatusCode.ABORTED,
        "discarded: a new leader committed another command in its place",
    ),
    "NOT_LEADER": (grpc.StatusCode.FAILED_PRECONDITION, "not the leader"),
    "LEADER_CHANGED": (
        grpc.StatusCode.ABORTED,
        "the leader changed before the command was committed",
    ),
    "REQUEST_DENIED": (grpc.StatusCode.FAILED_PRECONDITION, "denied"),
    "UNKNOWN_OUTCOME": (grpc.StatusCode.UNKNOWN, "the outcome is unknown"),
}
_DENIED_BECAUSE = {
    "add": "the previous membership change (or the leader's first entry) is not committed "
    "yet, or the node is a member already",
    "remove": "a node cannot remove itself; or the previous membership change (or the "
    "leader's first entry) is not committed yet, or the node is not a member",
    "transfer": "the target must be a connected member that has every entry of the leader's log",
    "set_version": "the request was refused",
}
# getStatus()'s state -> the wire's RaftState, by name (RAFT_STATE_FOLLOWER for "follower").
_STATE_BY_RAFT: Mapping[int, pb.RaftState] = {
    state: cast("pb.RaftState", pb.RaftState.Value(f"RAFT_STATE_{name.upper()}"))
    for state, name in RAFT_STATE_NAMES.items()
}
_RAFT_BY_STATE: Mapping[int, int] = {v: k for k, v in _STATE_BY_RAFT.items()}


def raft_state_name(state: int) -> str:
    """The lower-case name (``"leader"``) of a StatusResponse's ``RaftState``; ``"unknown"``
    for RAFT_STATE_UNSPECIFIED or a value this version does not know."""
    raft = _RAFT_BY_STATE.get(state)
    return "unknown" if raft is None else RAFT_STATE_NAMES[raft]


_MAX_MESSAGE_CHARS = 500
_MAX_ADDRESS_CHARS = 300


# -- configuration checks ----------------------------------------------------------------------


def require_authorization(jwt_mode: Any, *, allow_unauthenticated: bool = False) -> bool:
    """Check that the admin service may be served; returns whether it must be loopback-only.

    ``jwt_mode`` is the ``AuthMode`` of the node's JWT verifier (``with_jwt(verifier=...)``),
    or None when the node verifies no tokens. The service is served to admin tokens only
    when auth is enforced; otherwise anyone who reaches the port could change the cluster,
    so this raises ConfigError unless ``allow_unauthenticated`` (loopback development), in
    which case the service refuses every caller that is not on a loopback address (returns
    True: pass it as ``service(loopback_only=True)``).
    """
    from raftgrpc.interceptors.auth import AuthMode

    enforced = jwt_mode is not None and AuthMode(jwt_mode) is AuthMode.ENFORCE
    if enforced:
        return False
    if not allow_unauthenticated:
        raise ConfigError(
            "the admin service changes the cluster: enable it with JWT auth in enforce mode "
            "(with_jwt(verifier=...)), or pass allow_unauthenticated=True for a loopback-only "
            "development node"
        )
    return True


def check_node_address(address: str, *, allow_empty: bool = False) -> str:
    """``address`` if it is a node id ``host:port`` (port 1..65535); ConfigError otherwise."""
    if not isinstance(address, str):
        raise ConfigError(f"expected a node address 'host:port', got {type(address).__name__}")
    if allow_empty and address == "":
        return address
    if len(address) > _MAX_ADDRESS_CHARS or not address.isprintable() or address != address.strip():
        raise ConfigError(f"expected a node address 'host:port', got {address[:80]!r}")
    host, port = split_host_port(address)
    if port == 0 or any(c.isspace() for c in host) or "/" in host:
        raise ConfigError(f"expected a node address 'host:port', got {address!r}")
    return address


# -- status conversion -------------------------------------------------------------------------

_PARTNER = "partner_node_status_server_"
_READONLY = "readonly_node_status_server_"
_NEXT = "next_node_idx_server_"
_MATCH = "match_idx_server_"
_DERIVED = frozenset(
    {"partner_nodes_count", "readonly_nodes_count", "next_node_idx_count", "match_idx_count"}
)
_INT_FIELDS = {
    "log_len": "log_len",
    "last_applied": "last_applied",
    "commit_idx": "commit_idx",
    "raft_term": "raft_term",
    "uptime": "uptime_s",
    "self_code_version": "self_code_version",
    "enabled_code_version": "enabled_code_version",
}


def _node_id(node: Any) -> str:
    if node is None:
        return ""
    node_id = getattr(node, "id", node)
    return str(node_id)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def status_response(status: Mapping[str, Any]) -> pb.StatusResponse:
    """PySyncObj's ``getStatus()`` dict as a StatusResponse (keys it does not know go to
    ``extra``, as text)."""
    response = pb.StatusResponse()
    for key, value in status.items():
        if not isinstance(key, str):
            response.extra[str(key)] = str(value)
            continue
        if key == "self":
            response.self_node = _node_id(value)
        elif key == "leader":
            response.leader = _node_id(value)
        elif key == "state" and _as_int(value) in _STATE_BY_RAFT:
            response.state = _STATE_BY_RAFT[value]
        elif key == "has_quorum" and isinstance(value, bool):
            response.has_quorum = value
        elif key == "version" and isinstance(value, str):
            response.version = value
        elif key == "leader_commit_idx" and (value is None or _as_int(value) is not None):
            if value is not None:
                response.leader_commit_idx = value
        elif key in _INT_FIELDS and _as_int(value) is not None:
            setattr(response, _INT_FIELDS[key], value)
        elif key.startswith(_PARTNER) and _as_int(value) is not None:
            response.partners.add(node_id=key[len(_PARTNER) :], connected=value == 2)
        elif key.startswith(_READONLY) and _as_int(value) is not None:
            response.readonly_nodes.add(node_id=key[len(_READONLY) :], connected=value == 2)
        elif key.startswith(_NEXT) and _as_int(value) is not None:
            response.next_node_idx[key[len(_NEXT) :]] = value
        elif key.startswith(_MATCH) and _as_int(value) is not None:
            response.match_idx[key[len(_MATCH) :]] = value
        elif key not in _DERIVED:
            response.extra[key] = str(value)
    return response


def status_dict(
    response: pb.StatusResponse, node_class: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """A StatusResponse as the dict PySyncObj's ``getStatus()`` (and ``TcpUtility``'s
    ``status`` command) gives: the same keys, ``self`` and ``leader`` as ``node_class``
    objects (``TCPNode`` by default), ``extra`` entries as text."""
    if node_class is None:
        from pysyncobj.node import TCPNode

        node_class = TCPNode
    status: dict[str, Any] = {}
    if response.version:
        status["version"] = response.version
    status.update(response.extra)
    status["self"] = node_class(response.self_node) if response.self_node else None
    status["state"] = _RAFT_BY_STATE.get(response.state, 0)
    status["leader"] = node_class(response.leader) if response.leader else None
    status["has_quorum"] = response.has_quorum
    status["partner_nodes_count"] = len(response.partners)
    for partner in response.partners:
        status[_PARTNER + partner.node_id] = 2 if partner.connected else 0
    status["readonly_nodes_count"] = len(response.readonly_nodes)
    for readonly in response.readonly_nodes:
        status[_READONLY + readonly.node_id] = 2 if readonly.connected else 0
    status["log_len"] = response.log_len
    status["last_applied"] = response.last_applied
    status["commit_idx"] = response.commit_idx
    status["raft_term"] = response.raft_term
    status["next_node_idx_count"] = len(response.next_node_idx)
    for node_id, idx in response.next_node_idx.items():
        status[_NEXT + node_id] = idx
    status["match_idx_count"] = len(response.match_idx)
    for node_id, idx in response.match_idx.items():
        status[_MATCH + node_id] = idx
    status["leader_commit_idx"] = (
        response.leader_commit_idx if response.HasField("leader_commit_idx") else None
    )
    status["uptime"] = response.uptime_s
    status["self_code_version"] = response.self_code_version
    status["enabled_code_version"] = response.enabled_code_version
    return status


# -- the service ---------------------------------------------------------------------------------


class _Refused(RaftGrpcError):
    """How a call ends: a status code, a message and trailing metadata."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str | None = None, leader: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.leader = leader


class _Outcome:
    """PySyncObj's answer to one utility command, settled on the tick thread (the event
    loop's). Only the first answer counts; late answers are dropped."""

    def __init__(self, syncobj: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._syncobj = syncobj
        self.done: asyncio.Future[None] = loop.create_future()
        self.result: Any = None
        self.error: Any = None
        self.refused: _Refused | None = None
        self.leader = ""

    def _settle(self, result: Any, error: Any, refused: _Refused | None) -> None:
        if self.done.done():
            return
        self.result, self.error, self.refused = result, error, refused
        self.done.set_result(None)

    def answer(self, result: Any, error: Any) -> None:
        """PySyncObj's ``callback(result, error)``; runs on the tick thread, never raises."""
        try:
            if error is not None and error != SUCCESS:
                self.leader = _node_id(leader_of(self._syncobj))
        except Exception:
            self.leader = ""
        self._settle(result, error, None)

    def refuse(self, refused: _Refused) -> None:
        self._settle(None, None, refused)

    @property
    def settled(self) -> bool:
        """Whether the call has its outcome (an answer, or a refusal such as a timeout)."""
        return self.done.done()


def _is_loopback(peer: str) -> bool:
    """Whether a gRPC peer string (``ipv4:127.0.0.1:5678``, ``ipv6:[::1]:5678``, ``unix:...``)
    is on this host."""
    if peer.startswith("unix:"):
        return True
    if peer.startswith("ipv4:"):
        return peer[5:].startswith("127.")
    if peer.startswith("ipv6:"):
        host = peer[5:].rpartition(":")[0].strip("[]").lower()
        return host in ("::1", "0:0:0:0:0:0:0:1") or host.startswith("::ffff:127.")
    return False


class AdminService:
    """The admin service of one node (made by :func:`service`)."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        timeout_s: float,
        loopback_only: bool,
        max_concurrent_calls: int,
    ) -> None:
        self._ctx = ctx
        self._timeout_s = timeout_s
        self._loopback_only = loopback_only
        self._max_calls = max_concurrent_calls
        self._calls = 0
        self._waiting: set[_Outcome] = set()
        self._closing = False

    # -- NodeService --

    def handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        def unary(behavior: Any, request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return [
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    "Status": unary(self._status, pb.StatusRequest, pb.StatusResponse),
                    "AddNode": unary(self._add, pb.AddNodeRequest, pb.AddNodeResponse),
                    "RemoveNode": unary(self._remove, pb.RemoveNodeRequest, pb.RemoveNodeResponse),
                    "SetVersion": unary(
                        self._set_version, pb.SetVersionRequest, pb.SetVersionResponse
                    ),
                    "TransferLeadership": unary(
                        self._transfer,
                        pb.TransferLeadershipRequest,
                        pb.TransferLeadershipResponse,
                    ),
                },
            )
        ]

    def on_tick(self) -> None:
        pass

    def on_closing(self) -> None:
        """Answer every waiting call UNAVAILABLE, so that stopping the server does not wait
        (any thread: the answers are given on the event loop)."""
        self._closing = True
        self._ctx.run_on_tick(self._refuse_waiting)

    def _refuse_waiting(self) -> None:
        for outcome in list(self._waiting):
            outcome.refuse(_Refused(grpc.StatusCode.UNAVAILABLE, "the node is shutting down"))

    def close(self) -> None:
        self._closing = True
        self._refuse_waiting()

    # -- RPCs --

    async def _status(self, request: pb.StatusRequest, context: Any) -> Any:
        outcome = await self._run(context, "status", [])
        if not isinstance(outcome.result, Mapping):
            await self._abort(
                context, _Refused(grpc.StatusCode.INTERNAL, "no status from PySyncObj")
            )
        return status_response(outcome.result)

    async def _add(self, request: pb.AddNodeRequest, context: Any) -> Any:
        node = await self._address(context, request.node_id, "node_id")
        await self._run(context, "add", [node])
        return pb.AddNodeResponse()

    async def _remove(self, request: pb.RemoveNodeRequest, context: Any) -> Any:
        node = await self._address(context, request.node_id, "node_id")
        await self._run(context, "remove", [node])
        return pb.RemoveNodeResponse()

    async def _set_version(self, request: pb.SetVersionRequest, context: Any) -> Any:
        if request.version < 0:
            await self._abort(
                context,
                _Refused(grpc.StatusCode.INVALID_ARGUMENT, "version must be >= 0"),
            )
        await self._run(context, "set_version", [int(request.version)])
        return pb.SetVersionResponse()

    async def _transfer(self, request: pb.TransferLeadershipRequest, context: Any) -> Any:
        node = await self._address(context, request.node_id, "node_id", allow_empty=True)
        await self._run(context, "transfer", [node])
        return pb.TransferLeadershipResponse()

    # -- plumbing --

    async def _address(
        self, context: Any, value: str, field: str, allow_empty: bool = False
    ) -> str:
        try:
            return check_node_address(value, allow_empty=allow_empty)
        except ConfigError as exc:
            await self._abort(
                context, _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {exc}")
            )

    async def _abort(self, context: Any, refused: _Refused) -> NoReturn:
        metadata = []
        if refused.reason:
            metadata.append((FAIL_REASON_KEY, refused.reason))
        if refused.leader:
            metadata.append((LEADER_KEY, refused.leader))
        if metadata:
            context.set_trailing_metadata(tuple(metadata))
        await context.abort(refused.code, refused.message)
        raise AssertionError("unreachable")  # context.abort raises

    async def _run(self, context: Any, command: str, args: list[Any]) -> _Outcome:
        """Run the utility command and await PySyncObj's answer; abort the call unless it
        succeeded."""
        if self._loopback_only and not _is_loopback(context.peer()):
            await self._abort(
                context,
                _Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this node serves admin calls without authentication, from loopback only",
                ),
            )
        if self._calls >= self._max_calls:
            await self._abort(
                context,
                _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many admin calls in progress"),
            )
        self._calls += 1
        try:
            outcome = await self._wait(context, command, args)
        finally:
            self._calls -= 1
        refused = outcome.refused or self._failure(command, outcome)
        if refused is not None:
            if refused.code is not grpc.StatusCode.CANCELLED:
                logger.info(
                    "raftgrpc: admin %s %s failed: %s (%s)",
                    command,
                    " ".join(map(str, args)),
                    refused.message,
                    refused.code.name,
                    extra={
                        "event": "admin.failed",
                        "command": command,
                        "code": refused.code.name,
                        "reason": refused.reason,
                    },
                )
            await self._abort(context, refused)
        logger.info(
            "raftgrpc: admin %s %s done",
            command,
            " ".join(map(str, args)),
            extra={"event": "admin.done", "command": command},
        )
        return outcome

    async def _wait(self, context: Any, command: str, args: list[Any]) -> _Outcome:
        outcome = _Outcome(self._ctx.syncobj, asyncio.get_running_loop())
        if self._closing:
            outcome.refuse(_Refused(grpc.StatusCode.UNAVAILABLE, "the node is shutting down"))
            return outcome
        self._waiting.add(outcome)
        try:
            self._start(outcome, command, args)
            remaining = context.time_remaining()
            limit = self._timeout_s if remaining is None else min(self._timeout_s, remaining)
            wait = max(0.0, limit) if math.isfinite(limit) else self._timeout_s
            try:
                await asyncio.wait_for(asyncio.shield(outcome.done), wait)
            except asyncio.TimeoutError:
                outcome.refuse(
                    _Refused(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no answer from the Raft node within {limit:.3g} s",
                        "TIMEOUT",
                    )
                )
            return outcome
        finally:
            # The call ended early (cancelled by the client, or past its deadline): a late
            # answer is dropped.
            outcome.refuse(_Refused(grpc.StatusCode.CANCELLED, "the call ended"))
            self._waiting.discard(outcome)

    def _start(self, outcome: _Outcome, command: str, args: list[Any]) -> None:
        """Call PySyncObj's utility callback (this coroutine runs on the tick thread)."""
        try:
            callback = self._ctx.utility_callbacks().get(command)
            if callback is None:
                outcome.refuse(
                    _Refused(
                        grpc.StatusCode.UNIMPLEMENTED,
                        f"this node has no {command!r} utility command",
                    )
                )
                return
            callback(list(args), outcome.answer)
        except Exception as exc:
            # What TCPTransport sends back as text: e.g. "dynamicMembershipChange is
            # disabled", "wrong version, current version is 0, requested version is 3".
            text = str(exc) or type(exc).__name__
            outcome.refuse(
                _Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    text[:_MAX_MESSAGE_CHARS],
                    "EXCEPTION",
                )
            )

    @staticmethod
    def _failure(command: str, outcome: _Outcome) -> _Refused | None:
        error = outcome.error
        if error is None or error == SUCCESS:
            return None
        name = FAIL_REASON_NAMES.get(error, str(error)) if isinstance(error, int) else str(error)
        code, text = _FAIL_CODES.get(name, (grpc.StatusCode.UNKNOWN, f"failed ({name})"))
        if name == "NOT_LEADER":
            text += (
                f"; the leader is {outcome.leader}" if outcome.leader else "; no leader is known"
            )
        elif name == "REQUEST_DENIED":
            text += f": {_DENIED_BECAUSE.get(command, 'the request was refused')}"
        return _Refused(code, text, name, outcome.leader)


def service(
    *,
    timeout_s: float = 10.0,
    loopback_only: bool = False,
    max_concurrent_calls: int = 4,
) -> ServiceFactory:
    """A :data:`~raftgrpc._transport.services.ServiceFactory` serving ``raftgrpc.v1.Admin`` on a
    node.

    ``timeout_s`` bounds how long a call waits for PySyncObj's answer (a membership change
    answers once committed), within the call's own deadline. ``loopback_only`` refuses
    callers that are not on a loopback address (PERMISSION_DENIED): for a node that serves
    admin calls without enforced authentication (see :func:`require_authorization`).
    ``max_concurrent_calls`` caps the calls waiting at once; more are refused with
    RESOURCE_EXHAUSTED.

    Authorization is not done here: serve it behind the JWT interceptor, whose default
    method roles give ``/raftgrpc.v1.Admin/`` to admin tokens only.
    """
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if max_concurrent_calls < 1:
        raise ConfigError(f"max_concurrent_calls must be >= 1, got {max_concurrent_calls!r}")

    def make(ctx: NodeContext) -> NodeService:
        return AdminService(
            ctx,
            timeout_s=timeout_s,
            loopback_only=loopback_only,
            max_concurrent_calls=max_concurrent_calls,
        )

    return make

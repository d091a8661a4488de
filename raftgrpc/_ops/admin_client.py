"""GrpcUtility: PySyncObj's ``Utility`` over the admin service (:mod:`raftgrpc._ops.admin_service`).

Code written for ``pysyncobj.utility.TcpUtility`` switches by one line::

    # util = TcpUtility(password, timeout=10.0)
    util = GrpcUtility(timeout=10.0, tls=tls, tokens=FileTokenSource("admin.token"))
    status = util.executeCommand("10.0.0.1:4321", ["status"])        # the getStatus() dict
    util.executeCommand("10.0.0.1:4321", ["add", "10.0.0.4:4321"])   # 'SUCCESS ADD 10.0.0.4:4321'

``executeCommand`` keeps TcpUtility's contract: ``['status']`` returns the status dict
(``self`` and ``leader`` as ``TCPNode`` objects, the same keys); ``['add', addr]``,
``['remove', addr]``, ``['set_version', n]`` and ``['transfer', addr or '']`` return
``'SUCCESS ADD addr'`` or ``'FAIL ADD addr'`` (PySyncObj answered, with a FAIL_REASON), or
PySyncObj's own message when it raised (``'dynamicMembershipChange is disabled'``); no
answer, an unreachable node, a refused token raise :class:`UtilityException`
(:class:`GrpcUtilityException`, which also tells the gRPC code). Unlike TcpUtility, an
invalid address or a node that cannot be reached raise instead of returning None.

:meth:`GrpcUtility.run` is the strict form: every failure raises, with the FAIL_REASON name
and the leader the node knows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import grpc
from pysyncobj.utility import Utility, UtilityException

from raftgrpc._errors import ConfigError, RaftGrpcError
from raftgrpc._ops.admin_service import (
    FAIL_REASON_KEY,
    LEADER_KEY,
    SERVICE_NAME,
    check_node_address,
    status_dict,
)
from raftgrpc._protocol.address import grpc_target
from raftgrpc._pysyncobj import FAIL_REASON_NAMES
from raftgrpc.v1 import admin_pb2 as pb

__all__ = ["COMMANDS", "GrpcUtility", "GrpcUtilityException", "UtilityException"]

COMMANDS = ("status", "add", "remove", "set_version", "transfer")
"""The commands ``executeCommand`` understands (PySyncObj's utility commands)."""

# What a failed command's trailer may name besides EXCEPTION and TIMEOUT: PySyncObj's own
# failures, reported to the caller as UtilityException's message.
_FAIL_REASONS = frozenset(FAIL_REASON_NAMES.values()) - {"SUCCESS"}
_LOCAL = grpc.LocalConnectionType.LOCAL_TCP


class GrpcUtilityException(RaftGrpcError, UtilityException):  # type: ignore[misc]  # pysyncobj is untyped
    """A command failed. ``code`` is the call's gRPC status, ``details`` its message,
    ``fail_reason`` the PySyncObj FAIL_REASON name (``EXCEPTION`` if PySyncObj raised,
    ``TIMEOUT``, or None for failures outside PySyncObj: unreachable, refused token...) and
    ``leader`` the leader the node knows ("" if none)."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        details: str = "",
        fail_reason: str | None = None,
        leader: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.fail_reason = fail_reason
        self.leader = leader


def _trailer(error: grpc.RpcError, key: str) -> str:
    trailing = getattr(error, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except Exception:
        metadata = None
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return ""


def _failure(error: grpc.RpcError) -> GrpcUtilityException:
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (error.details() if callable(getattr(error, "details", None)) else None) or ""
    reason = _trailer(error, FAIL_REASON_KEY) or None
    leader = _trailer(error, LEADER_KEY)
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return GrpcUtilityException(f"{name}: {details}", code, details, reason, leader)


class GrpcUtility(Utility):  # type: ignore[misc]  # pysyncobj is untyped
    """PySyncObj's ``Utility`` over gRPC: see the module docstring.

    ``password`` is refused (TCPTransport's encryption; secure the channel with ``tls``).
    ``timeout``: the deadline of each call, in seconds (TcpUtility's default, 900, is kept;
    a node answers a membership change once committed, within its own admin ``timeout_s``).

    Channel security, one of:
    ``tls`` (:class:`raftgrpc.TlsConfig`: its CA verifies the node, its certificate is the
    client certificate for mTLS); ``channel_credentials`` (any ``grpc.ChannelCredentials``,
    e.g. ``grpc.ssl_channel_credentials(ca)`` without a client certificate);
    ``insecure_loopback=True`` (gRPC's local credentials, loopback connections only: for
    nodes built with ``with_jwt(..., allow_insecure_loopback=True)``); or none of them, a
    plaintext channel, on which no token can be sent.

    ``tokens`` (a ``TokenSource``, e.g. ``FileTokenSource("admin.token")``, or a token string)
    is sent with every call as ``authorization: Bearer`` call credentials; it needs an
    admin-role token. ``status_attempts`` (1..5): gRPC retries Status (idempotent) on
    UNAVAILABLE up to that many attempts in all; other commands are never retried.
    ``options``: extra channel options.

    One channel per node is kept open: :meth:`close` (or ``with GrpcUtility(...) as util``)
    closes them. Thread-safe.
    """

    def __init__(
        self,
        password: str | None = None,
        timeout: float = 900.0,
        *,
        tls: Any | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        tokens: Any | None = None,
        insecure_loopback: bool = False,
        status_attempts: int = 3,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if password:
            raise ConfigError(
                "password is TCPTransport's encryption; GrpcUtility secures the channel with "
                "tls= (or insecure_loopback=True on one host) and authenticates with tokens="
            )
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive, got {timeout!r}")
        if sum(x is not None for x in (tls, channel_credentials)) + bool(insecure_loopback) > 1:
            raise ConfigError("give one of tls, channel_credentials and insecure_loopback")
        self._timeout = float(timeout)
        extra: list[tuple[str, Any]] = []
        credentials: grpc.ChannelCredentials | None = channel_credentials
        if tls is not None:
            from raftgrpc._security import tls as tls_module

            credentials = tls_module.channel_credentials(tls)
            extra += tls_module.channel_options(tls)
        elif insecure_loopback:
            credentials = grpc.local_channel_credentials(_LOCAL)
        if tokens is not None:
            from raftgrpc.interceptors import auth

            if isinstance(tokens, str):
                tokens = auth.StaticTokenSource(tokens)
            if credentials is None:
                raise ConfigError(
                    "tokens are only sent on secure channels: give tls= (or "
                    "channel_credentials=), or insecure_loopback=True for a node on this host"
                )
            credentials = grpc.composite_channel_credentials(
                credentials, auth.call_credentials(tokens)
            )
        if status_attempts > 1:
            from raftgrpc.interceptors import retry

            extra += retry.channel_options([(SERVICE_NAME, "Status")], max_attempts=status_attempts)
        self._credentials = credentials
        self._options = [*extra, *options]
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- TcpUtility's contract --

    def executeCommand(self, node: Any, command: list[Any]) -> Any:
        """Run ``command`` on ``node`` (a Node or ``'host:port'``), as TcpUtility does."""
        try:
            return self.run(node, command)
        except GrpcUtilityException as exc:
            if exc.fail_reason in _FAIL_REASONS:
                return " ".join(map(str, ["FAIL", str(command[0]).upper(), *command[1:]]))
            if exc.fail_reason == "EXCEPTION":
                return exc.details
            raise

    # -- the strict form --

    def run(self, node: Any, command: list[Any]) -> Any:
        """Like :meth:`executeCommand`, but every failure raises GrpcUtilityException."""
        if not isinstance(command, (list, tuple)) or not command:
            raise GrpcUtilityException("invalid command")
        name = command[0]
        if name == "status":
            return status_dict(self.status(node))
        if name in ("add", "remove", "set_version"):
            if len(command) != 2:
                raise GrpcUtilityException(f"invalid command: {name} takes one argument")
        elif name == "transfer":
            if len(command) > 2:
                raise GrpcUtilityException("invalid command: transfer takes at most one argument")
        else:
            raise GrpcUtilityException(f"invalid command {name!r}")
        channel = self._channel(node)
        method: str
        request: Any
        reply: Any
        if name == "add":
            method, request, reply = (
                "AddNode",
                pb.AddNodeRequest(node_id=self._address(command[1], "add")),
                pb.AddNodeResponse,
            )
        elif name == "remove":
            method, request, reply = (
                "RemoveNode",
                pb.RemoveNodeRequest(node_id=self._address(command[1], "remove")),
                pb.RemoveNodeResponse,
            )
        elif name == "set_version":
            try:
                version = int(command[1])
            except (TypeError, ValueError):
                raise GrpcUtilityException("invalid version to command set_version") from None
            method, request, reply = (
                "SetVersion",
                pb.SetVersionRequest(version=version),
                pb.SetVersionResponse,
            )
        else:
            target = command[1] if len(command) > 1 and command[1] else ""
            method, request, reply = (
                "TransferLeadership",
                pb.TransferLeadershipRequest(
                    node_id=self._address(target, "transfer", allow_empty=True)
                ),
                pb.TransferLeadershipResponse,
            )
        self._invoke(channel, method, request, reply)
        return " ".join(map(str, ["SUCCESS", str(name).upper(), *command[1:]]))

    def status(self, node: Any) -> pb.StatusResponse:
        """The node's status as the typed StatusResponse."""
        response: pb.StatusResponse = self._invoke(
            self._channel(node), "Status", pb.StatusRequest(), pb.StatusResponse
        )
        return response

    def close(self) -> None:
        """Close the channels."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> GrpcUtility:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --

    @staticmethod
    def _address(value: Any, what: str, allow_empty: bool = False) -> str:
        text = _node_text(value)
        try:
            return check_node_address(text, allow_empty=allow_empty)
        except ConfigError:
            raise GrpcUtilityException(f"invalid address to command {what}") from None

    def _channel(self, node: Any) -> grpc.Channel:
        address = _node_text(node)
        try:
            target = grpc_target(check_node_address(address))
        except ConfigError:
            raise GrpcUtilityException("invalid address to connect") from None
        with self._lock:
            if self._closed:
                raise GrpcUtilityException("the utility is closed")
            channel = self._channels.get(target)
            if channel is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(target, options=self._options)
                else:
                    channel = grpc.secure_channel(target, self._credentials, options=self._options)
                self._channels[target] = channel
        return channel

    def _invoke(self, channel: grpc.Channel, method: str, request: Any, reply: Any) -> Any:
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        try:
            return call(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise _failure(error) from None


def _node_text(node: Any) -> str:
    node_id = getattr(node, "id", node)
    return node_id if isinstance(node_id, str) else str(node_id)

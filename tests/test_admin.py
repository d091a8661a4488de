"""The admin service (raftgrpc._ops.admin_service), GrpcUtility and ``raftgrpc admin``, against real
in-process SyncObj clusters: three GrpcTransport nodes with JWT auth in enforce mode over
loopback local credentials, and TCPTransport nodes as the reference for status."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.utility import TcpUtility, UtilityException

from raftgrpc import ConfigError, GrpcTransport, TransportBuilder
from raftgrpc._ops import admin_service as admin
from raftgrpc._ops import cli
from raftgrpc._ops.admin_client import GrpcUtility, GrpcUtilityException
from raftgrpc.interceptors import auth
from raftgrpc.testing import PROTOCOL_VERSION, STREAM_METHOD
from raftgrpc.v1 import admin_pb2 as apb
from raftgrpc.v1 import transport_pb2 as pb
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.timeout(60)

AUD, ISS, KID = "raftgrpc-admin-tests", "raftgrpc-admin-tests", "admin-1"
_LOCAL = grpc.LocalConnectionType.LOCAL_TCP


@dataclasses.dataclass
class Keys:
    directory: Path
    pem: bytes

    def token(self, subject: str, **overrides: Any) -> str:
        params: dict[str, Any] = {"audience": AUD, "issuer": ISS}
        params.update(overrides)
        return auth.SigningTokenSource(self.pem, KID, "ES256", subject, **params).token()

    def verifier(self) -> auth.TokenVerifier:
        return auth.TokenVerifier(
            auth.KeySet.from_file(self.directory / "jwks.json"), audience=AUD, issuer=ISS
        )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("admin-keys")
    pem = directory / "signing.pem"
    argv = ["token", "keygen", "--kid", KID, "--private-out", str(pem)]
    assert cli.main([*argv, "--jwks", str(directory / "jwks.json")]) == 0
    return Keys(directory, pem.read_bytes())


def _factory(keys: Keys, timeout_s: float = 5.0) -> Callable[..., GrpcTransport]:
    """GrpcTransport with JWT enforce (loopback local credentials) and the admin service."""
    builder = TransportBuilder().with_jwt(
        verifier=keys.verifier(),
        tokens=lambda node_id: auth.StaticTokenSource(keys.token(node_id)),
        allow_insecure_loopback=True,
    )

    def make(syncObj: Any, selfNode: Any, otherNodes: Any) -> GrpcTransport:
        middleware = builder.middleware(selfNode.id if selfNode is not None else "")
        loopback_only = admin.require_authorization(auth.AuthMode.ENFORCE)
        service = admin.service(timeout_s=timeout_s, loopback_only=loopback_only)
        middleware = dataclasses.replace(middleware, services=(service,))
        return GrpcTransport(syncObj, selfNode, otherNodes, middleware=middleware)

    return make


def _conf() -> SyncObjConf:
    return SyncObjConf(dynamicMembershipChange=True, connectionRetryTime=0.5)


def _start(n: int, transport: Callable[..., Any] | None) -> tuple[list[SyncObj], list[str]]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    kwargs = {} if transport is None else {"transportClass": transport}
    objs = [SyncObj(a, [b for b in addrs if b != a], _conf(), **kwargs) for a in addrs]
    return objs, addrs


def _leader(objs: list[SyncObj]) -> SyncObj:
    def settled() -> SyncObj | None:
        leaders = [o for o in objs if o._isLeader()]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        st = leader.getStatus()
        # Every follower connected and caught up (match index at the leader's log end).
        matched = [v for k, v in st.items() if k.startswith("match_idx_server_")]
        caught_up = len(matched) == len(objs) - 1 and set(matched) == {st["log_len"]}
        return leader if st["has_quorum"] and caught_up and st["commit_idx"] else None

    found: SyncObj = wait_until(settled, 20.0, "a leader with every follower caught up")
    return found


def _destroy(objs: list[SyncObj]) -> None:
    for o in objs:
        o.destroy()
    for o in objs:
        wait_until(lambda o=o: not o.tick_thread_alive(), 10, "a node's tick thread to end")


@dataclasses.dataclass
class GrpcCluster:
    objs: list[SyncObj]
    addrs: list[str]
    keys: Keys

    @property
    def leader(self) -> SyncObj:
        return _leader(self.objs)

    def follower(self) -> SyncObj:
        return next(o for o in self.objs if o is not self.leader)

    def utility(self, token: str | None = "admin", **kwargs: Any) -> GrpcUtility:
        tokens = self.keys.token("operator", role="admin") if token == "admin" else token
        return GrpcUtility(timeout=10.0, tokens=tokens, insecure_loopback=True, **kwargs)


@pytest.fixture(scope="module")
def cluster(keys: Keys) -> Iterator[GrpcCluster]:
    objs, addrs = _start(3, _factory(keys))
    try:
        _leader(objs)
        yield GrpcCluster(objs, addrs, keys)
    finally:
        _destroy(objs)


def _shape(status: dict[str, Any], addrs: list[str]) -> dict[str, type]:
    """Status keys with the peers' addresses replaced by their rank, and each value's type."""
    peers = sorted(a for a in addrs if a != status["self"].id)
    out = {}
    for key, value in status.items():
        for rank, addr in enumerate(peers):
            key = key.replace(addr, f"<peer{rank}>")
        out[key] = type(value)
    return out


# -- status ---------------------------------------------------------------------------------------


def test_status_through_grpc_matches_tcputility_on_an_equivalent_tcp_cluster(
    cluster: GrpcCluster,
) -> None:
    tcp_objs, tcp_addrs = _start(3, None)
    try:
        tcp_leader = _leader(tcp_objs)
        expected = TcpUtility(timeout=10.0).executeCommand(tcp_leader.selfNode.id, ["status"])
    finally:
        _destroy(tcp_objs)
    leader = cluster.leader
    with cluster.utility() as utility:
        status = utility.executeCommand(leader.selfNode.id, ["status"])
        assert isinstance(status, dict)
        # Same keys, same value types (ranks stand for the clusters' different addresses).
        assert _shape(status, cluster.addrs) == _shape(expected, tcp_addrs)
        # The values are the node's.
        truth = leader.getStatus()
        assert status["self"] == TCPNode(leader.selfNode.id) == status["leader"]
        assert isinstance(status["self"], TCPNode)
        for key in ("state", "has_quorum", "raft_term", "self_code_version", "version"):
            assert status[key] == truth[key], key
        for key in ("partner_node_status_server_", "match_idx_server_"):
            assert {k: v for k, v in status.items() if k.startswith(key)} == {
                k: v for k, v in truth.items() if k.startswith(key)
            }
        # The typed form.
        typed = utility.status(cluster.follower().selfNode.id)
        assert typed.state == apb.RAFT_STATE_FOLLOWER
        assert typed.leader == leader.selfNode.id
        assert sorted(p.node_id for p in typed.partners) == sorted(
            a for a in cluster.addrs if a != typed.self_node
        )
        assert all(p.connected for p in typed.partners)
        assert typed.extra["revision"] == "deprecated"


def test_status_dict_round_trips_getstatus(cluster: GrpcCluster) -> None:
    truth = cluster.leader.getStatus()
    truth["something_new"] = 7  # a key a newer PySyncObj might add: kept, as text
    back = admin.status_dict(admin.status_response(truth))
    assert back.pop("something_new") == "7"
    truth.pop("something_new")
    assert back == truth


# -- commands and errors ---------------------------------------------------------------------------


def test_errors_map_to_grpc_statuses_and_to_tcputility_results(cluster: GrpcCluster) -> None:
    leader, follower = cluster.leader, cluster.follower()
    at_leader, at_follower = leader.selfNode.id, follower.selfNode.id
    with cluster.utility() as utility:
        # Transfer asked of a follower: NOT_LEADER, with the leader in the message.
        with pytest.raises(GrpcUtilityException) as failed:
            utility.run(at_follower, ["transfer", at_leader])
        e = failed.value
        assert (e.code, e.fail_reason, e.leader) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_LEADER",
            at_leader,
        )
        assert e.details == f"not the leader; the leader is {at_leader}"
        # TcpUtility's contract: the same command gives 'FAIL TRANSFER <node>'.
        got = utility.executeCommand(at_follower, ["transfer", at_leader])
        assert got == f"FAIL TRANSFER {at_leader}"
        # Denied by Raft: a node cannot remove itself; a non-member cannot lead.
        with pytest.raises(GrpcUtilityException) as failed:
            utility.run(at_leader, ["remove", at_leader])
        assert (failed.value.code, failed.value.fail_reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "REQUEST_DENIED",
        )
        assert (
            utility.executeCommand(at_leader, ["remove", at_leader]) == f"FAIL REMOVE {at_leader}"
        )
        with pytest.raises(GrpcUtilityException) as failed:
            utility.run(at_leader, ["transfer", "127.0.0.1:1"])
        assert failed.value.fail_reason == "REQUEST_DENIED"
        # PySyncObj raised: its message, as TCPTransport sends it back.
        wrong = "wrong version, current version is 0, requested version is 5"
        assert utility.executeCommand(at_leader, ["set_version", 5]) == wrong
        with pytest.raises(GrpcUtilityException) as failed:
            utility.run(at_follower, ["set_version", 5])
        assert (failed.value.code, failed.value.fail_reason, failed.value.details) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "EXCEPTION",
            wrong,
        )
        # Success, through a follower too (PySyncObj forwards it to the leader).
        assert utility.executeCommand(at_follower, ["set_version", 0]) == "SUCCESS SET_VERSION 0"
        # Client-side checks, as TcpUtility/syncobj_admin make them.
        for node, command, message in [
            ("nonsense", ["status"], "invalid address to connect"),
            (at_leader, ["add", "no-port"], "invalid address to command add"),
            (at_leader, ["frobnicate"], "invalid command 'frobnicate'"),
        ]:
            with pytest.raises(UtilityException, match=message):
                utility.executeCommand(node, command)
        # An unreachable node raises UtilityException (TcpUtility returns None).
        with pytest.raises(GrpcUtilityException) as failed:
            utility.executeCommand(f"127.0.0.1:{free_port()}", ["status"])
        assert failed.value.code is grpc.StatusCode.UNAVAILABLE


def test_the_server_validates_addresses(cluster: GrpcCluster) -> None:
    token = cluster.keys.token("operator", role="admin")
    credentials = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(_LOCAL),
        auth.call_credentials(auth.StaticTokenSource(token)),
    )
    with grpc.secure_channel(cluster.addrs[0], credentials) as channel:
        add = channel.unary_unary(
            "/raftgrpc.v1.Admin/AddNode",
            request_serializer=apb.AddNodeRequest.SerializeToString,
            response_deserializer=apb.AddNodeResponse.FromString,
        )
        for bad in ["", "no-port", "host:0", "host:99999", "a b:1", "x" * 400 + ":1"]:
            with pytest.raises(grpc.RpcError) as refused:
                add(apb.AddNodeRequest(node_id=bad), timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        version = channel.unary_unary(
            "/raftgrpc.v1.Admin/SetVersion",
            request_serializer=apb.SetVersionRequest.SerializeToString,
            response_deserializer=apb.SetVersionResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            version(apb.SetVersionRequest(version=-1), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_answer_in_time_is_deadline_exceeded_and_leaves_the_tick_thread_alone(
    keys: Keys,
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    node = SyncObj(addr, [], _conf(), transportClass=_factory(keys, timeout_s=0.3))
    transport = node._SyncObj__transport
    late: list[Any] = []

    def never_answers(args: list[Any], reply: Any) -> None:
        late.append(reply)  # PySyncObj's answer does not come in time

    try:
        wait_until(lambda: node._isLeader(), 10.0, "the single node to lead")
        utility = GrpcUtility(
            timeout=10.0,
            tokens=keys.token("operator", role="admin"),
            insecure_loopback=True,
        )
        status = transport._onUtilityMessageCallbacks["status"]
        transport.setOnUtilityMessageCallback("status", never_answers)
        started = time.monotonic()
        with pytest.raises(GrpcUtilityException) as failed:
            utility.run(addr, ["status"])
        assert (failed.value.code, failed.value.fail_reason) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "TIMEOUT",
        )
        assert time.monotonic() - started < 5.0  # the node's timeout_s, not the caller's
        assert late and node._isLeader()  # the tick thread kept ticking
        late[0](node.getStatus(), None)  # the late answer is dropped...
        transport.setOnUtilityMessageCallback("status", status)
        # ...and the node answers the next call.
        assert utility.executeCommand(addr, ["status"])["self"] == TCPNode(addr)
        utility.close()
    finally:
        _destroy([node])


# -- authorization ------------------------------------------------------------------------------


def test_admin_calls_need_a_valid_admin_token(cluster: GrpcCluster) -> None:
    at = cluster.addrs[0]
    long_ago = time.time() - 7200
    node_token = cluster.keys.token(cluster.addrs[1])  # a member's own token
    cases = {
        "node token": (node_token, grpc.StatusCode.PERMISSION_DENIED),
        "expired admin token": (
            cluster.keys.token("operator", role="admin", ttl_s=600, clock=lambda: long_ago),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "admin token, wrong audience": (
            cluster.keys.token("operator", role="admin", audience="other"),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "no token": (None, grpc.StatusCode.UNAUTHENTICATED),
    }
    commands = [["status"], ["add", "127.0.0.1:1"], ["remove", cluster.addrs[2]]]
    commands += [["set_version", 0], ["transfer", ""]]
    before = cluster.objs[0].getStatus()
    for name, (token, expected) in cases.items():
        with cluster.utility(token) as utility:
            for command in commands:
                with pytest.raises(GrpcUtilityException) as refused:
                    utility.executeCommand(at, command)
                assert refused.value.code == expected, (name, command)
                assert refused.value.fail_reason is None
    with cluster.utility(node_token) as utility, pytest.raises(GrpcUtilityException) as e:
        utility.run(at, ["status"])
    assert e.value.details == "role 'admin' required"
    after = cluster.objs[0].getStatus()
    assert after["partner_nodes_count"] == before["partner_nodes_count"] == 2


def test_an_admin_token_cannot_open_the_raft_stream(cluster: GrpcCluster) -> None:
    def open_stream(token: str, claim: str) -> tuple[grpc.StatusCode, str]:
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(_LOCAL),
            auth.call_credentials(auth.StaticTokenSource(token)),
        )
        hello = pb.StreamRequest(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id=claim))
        with grpc.secure_channel(cluster.addrs[0], credentials) as channel:
            call = channel.stream_stream(STREAM_METHOD)(iter([hello.SerializeToString()]))
            try:
                next(iter(call))
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""
            call.cancel()
            return grpc.StatusCode.OK, ""

    member = cluster.addrs[1]
    admin_as_member = cluster.keys.token(member, role="admin")
    assert open_stream(admin_as_member, member) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "role 'node' required",
    )
    # The control: the member's node token opens it (the Welcome arrives).
    assert open_stream(cluster.keys.token(member), member) == (grpc.StatusCode.OK, "")


def test_serving_admin_needs_enforced_auth_unless_loopback_development() -> None:
    assert admin.require_authorization(auth.AuthMode.ENFORCE) is False
    assert admin.require_authorization("enforce") is False
    for mode in (None, auth.AuthMode.AUDIT, auth.AuthMode.OFF):
        with pytest.raises(ConfigError, match="allow_unauthenticated"):
            admin.require_authorization(mode)
        assert admin.require_authorization(mode, allow_unauthenticated=True) is True


def test_a_loopback_only_node_serves_local_callers_without_a_token() -> None:
    addr = f"127.0.0.1:{free_port()}"
    service = admin.service(
        loopback_only=admin.require_authorization(None, allow_unauthenticated=True)
    )
    transport = functools.partial(
        GrpcTransport,
        middleware=dataclasses.replace(TransportBuilder().middleware(addr), services=(service,)),
    )
    node = SyncObj(addr, [], _conf(), transportClass=transport)
    try:
        wait_until(lambda: node._isLeader(), 10.0, "the single node to lead")
        with GrpcUtility(timeout=10.0) as utility:  # plaintext, no token
            assert utility.executeCommand(addr, ["status"])["state"] == 2
    finally:
        _destroy([node])


def test_method_roles_pick_the_longest_prefix() -> None:
    roles = {"/a.B/": "admin", "/a.B/Special": "ops"}
    assert auth.required_role_for("/a.B/Special", roles) == "ops"
    assert auth.required_role_for("/a.B/Other", roles) == "admin"
    assert auth.required_role_for("/c.D/X", roles, "node") == "node"
    assert auth.required_role_for("/raftgrpc.v1.Admin/Status", auth.DEFAULT_METHOD_ROLES) == "admin"
    stream = "/raftgrpc.v1.RaftTransport/Stream"
    assert auth.required_role_for(stream, auth.DEFAULT_METHOD_ROLES) == "node"
    with pytest.raises(ConfigError):
        auth.server_interceptor(
            auth.TokenVerifier(auth.KeySet(), AUD, ISS), method_roles={"Admin": "admin"}
        )


# -- the command line ---------------------------------------------------------------------------


def test_cli_status_table_json_and_refusal(
    cluster: GrpcCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leader = cluster.leader.selfNode.id
    token_file = tmp_path / "admin.token"
    token_file.write_text(cluster.keys.token("operator", role="admin") + "\n")
    common = ["--node", leader, "--insecure-loopback", "--token-file", str(token_file)]

    assert cli.main(["admin", "status", *common, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["node"], status["state"], status["leader"]) == (leader, "leader", leader)
    assert sorted(p["node"] for p in status["partners"]) == sorted(
        a for a in cluster.addrs if a != leader
    )
    assert all(p["connected"] and p["match_idx"] >= 1 for p in status["partners"])

    assert cli.main(["admin", "status", *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "NODE", "STATE", "LEADER", "TERM", "COMMIT", "APPLIED", "LOG", "QUORUM", "UPTIME"
    ]  # fmt: skip
    assert table[1].split()[:3] == [leader, "leader", leader]
    assert table[3].split() == ["PARTNER", "CONNECTED", "MATCH", "NEXT"]
    assert {row.split()[0] for row in table[4:6]} == {a for a in cluster.addrs if a != leader}

    assert cli.main(["admin", "set-version", *common, "0"]) == 0
    assert capsys.readouterr().out.startswith("code version 0 enabled")
    # Refused: exit status 1, the reason on stderr (or in the JSON).
    node_file = tmp_path / "node.token"
    node_file.write_text(cluster.keys.token(leader))
    refused = ["--node", leader, "--insecure-loopback", "--token-file", str(node_file)]
    assert cli.main(["admin", "transfer", *refused]) == 1
    assert "PERMISSION_DENIED: role 'admin' required" in capsys.readouterr().err
    follower = cluster.follower().selfNode.id
    assert cli.main(["admin", "transfer", *common[2:], "--node", follower, "--json"]) == 1
    failure = json.loads(capsys.readouterr().out)
    assert (failure["ok"], failure["fail_reason"], failure["leader"]) == (
        False,
        "NOT_LEADER",
        leader,
    )
    # Usage errors: exit status 2.
    assert cli.main(["admin", "add", *common, "not-an-address"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["admin", "status"])
    assert usage.value.code == 2

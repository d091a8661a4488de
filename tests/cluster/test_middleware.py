"""A cluster of real node processes with the full middleware (``grpc-full``: logging,
tracing, JWT auth in enforce mode), and intruders with bad credentials that it refuses
without any effect on Raft (no election triggered, no entry appended)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import pytest

from raftgrpc._protocol import codec
from raftgrpc._protocol.address import grpc_target
from raftgrpc.interceptors import auth
from raftgrpc.testing import PROTOCOL_VERSION, STREAM_METHOD
from raftgrpc.testing._processes import fullstack
from raftgrpc.testing._processes.harness import Cluster
from raftgrpc.v1 import transport_pb2 as pb

pytestmark = pytest.mark.timeout(240)

_LOCAL = grpc.LocalConnectionType.LOCAL_TCP


def items(prefix: str, n: int) -> dict[str, Any]:
    return {f"{prefix}{i}": f"{prefix}-value-{i}" for i in range(n)}


def test_full_middleware_cluster_elects_replicates_and_fails_over(full_cluster: Cluster) -> None:
    c = full_cluster
    nodes = c.start_cluster(3)
    leader = c.wait_leader()
    expected = items("a", 40)
    c.write_many(leader, expected)
    follower = next(n for n in nodes if n is not leader)
    c.write(follower, "via-follower", "forwarded to the leader")
    expected["via-follower"] = "forwarded to the leader"
    c.wait_converged(nodes, expected)
    c.kill(leader)
    survivors = [n for n in nodes if n is not leader]
    new_leader = c.wait_leader(survivors)
    more = items("b", 20)
    c.write_many(new_leader, more)
    expected.update(more)
    c.wait_converged(survivors, expected)
    # Every stream was authenticated: nothing was refused along the way.
    for n in survivors:
        assert "refused /raftgrpc.v1.RaftTransport/Stream" not in n.log_tail(2000)


def _none_token(subject: str) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "sub": subject,
        "aud": fullstack.AUDIENCE,
        "iss": fullstack.ISSUER,
        "iat": now,
        "exp": now + 600,
    }
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': fullstack.KID})}.{b64(claims)}."


def _intrude(target: str, token: str | None, claim: str) -> grpc.StatusCode:
    """Speak as node ``claim``: a Hello, then a vote request of a huge term and an entry."""
    credentials = grpc.local_channel_credentials(_LOCAL)
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, auth.call_credentials(auth.StaticTokenSource(token))
        )
    hello = pb.StreamRequest(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id=claim))
    disruptive = [
        {"type": "request_vote", "term": 10_000, "last_log_index": 10**6, "last_log_term": 9_999},
        {
            "type": "append_entries",
            "term": 10_000,
            "commit_index": 10**6,
            "prevLogIdx": 10**6,
            "prevLogTerm": 9_999,
            "entries": [(b"evil", 10**6 + 1, 10_000)],
        },
    ]
    frame = codec.request_frame_bytes([codec.encode_message(m) for m in disruptive])
    with grpc.secure_channel(grpc_target(target), credentials) as channel:
        call = channel.stream_stream(STREAM_METHOD)(iter([hello.SerializeToString(), frame]))
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_intruders_are_refused_and_cannot_disturb_the_cluster(full_cluster: Cluster) -> None:
    c = full_cluster
    nodes = c.start_cluster(3)
    leader = c.wait_leader()
    c.write_many(leader, items("k", 10))
    follower = next(n for n in nodes if n is not leader)
    member = str(leader.addr)
    before = {n.name: n.status() for n in nodes}
    wrong_key = auth.SigningTokenSource(
        _fresh_key_pem(),
        fullstack.KID,
        "ES256",
        subject=member,
        audience=fullstack.AUDIENCE,
        issuer=fullstack.ISSUER,
    ).token()
    long_ago = time.time() - 7200
    code = grpc.StatusCode
    cases = {
        "no token": (None, member, code.UNAUTHENTICATED),
        "forged (unknown key)": (wrong_key, member, code.UNAUTHENTICATED),
        "expired": (
            fullstack.mint(member, ttl_s=600, clock=lambda: long_ago),
            member,
            code.UNAUTHENTICATED,
        ),
        "wrong audience": (fullstack.mint(member, audience="other"), member, code.UNAUTHENTICATED),
        "wrong issuer": (fullstack.mint(member, issuer="other"), member, code.UNAUTHENTICATED),
        "unsigned (alg none)": (_none_token(member), member, code.UNAUTHENTICATED),
        "impersonating": (fullstack.mint("127.0.0.1:1"), member, code.PERMISSION_DENIED),
        "valid token, not a member": (
            fullstack.mint("127.0.0.1:1"),
            "127.0.0.1:1",
            code.PERMISSION_DENIED,
        ),
    }
    outcomes = {
        name: _intrude(str(follower.addr), t, claim) for name, (t, claim, _) in cases.items()
    }
    assert outcomes == {name: want for name, (_, _, want) in cases.items()}
    # Nothing reached Raft: same term, same leader, same log on every node.
    after = {n.name: n.status() for n in nodes}
    for n in nodes:
        for key in ("raft_term", "leader", "log_len", "commit_idx"):
            assert after[n.name][key] == before[n.name][key], (n.name, key)
    # The control: the same messages with a member's real credentials do reach Raft.
    assert _intrude(str(follower.addr), fullstack.mint(member), member) == code.OK
    c.wait_until(
        lambda: follower.status()["raft_term"] >= 10_000, 10, "the accepted vote request to land"
    )
    log = follower.log_tail(400)
    assert "refused /raftgrpc.v1.RaftTransport/Stream" in log  # an auth denial line
    for name, (token, _, _) in cases.items():
        if token:
            assert token not in log, f"{name}: the token leaked into the log"


def _fresh_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

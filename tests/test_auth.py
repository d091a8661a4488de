"""JWT authentication (raftgrpc.interceptors.auth) against real gRPC servers on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from raftgrpc._errors import ConfigError
from raftgrpc.interceptors.auth import (
    AuthError,
    AuthMode,
    Claims,
    FileTokenSource,
    KeySet,
    SigningTokenSource,
    StaticTokenSource,
    TokenVerifier,
    call_credentials,
    client_interceptor,
    current_claims,
    server_interceptor,
)

pytestmark = pytest.mark.timeout(20)

AUD = "raft-test"
ISS = "test-ops"
LOCAL = grpc.LocalConnectionType.LOCAL_TCP
UNARY = "/test.Echo/Unary"
CHAT = "/test.Echo/Chat"
SWALLOW = "/test.Echo/Swallow"
COUNT = "/test.Echo/Count"
HEALTH = "/grpc.health.v1.Health/Check"
DROP = object()  # leave this claim out


# -- keys and tokens -----------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    @property
    def pem(self) -> bytes:
        pem: bytes = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem

    @property
    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def sign(self, payload: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            payload, self.private, algorithm=self.alg, headers={"kid": kid or self.kid}
        )


def _ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return SigningKey(kid, "ES256", private, jwk)


@pytest.fixture(scope="module")
def keys() -> SimpleNamespace:
    """k1 and r1 are in the servers' key set; k2 is not (a forger's key)."""
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True)
    rsa_jwk.update({"kid": "r1", "alg": "RS256", "use": "sig"})
    return SimpleNamespace(
        k1=_ec_key("k1"), k2=_ec_key("k2"), r1=SigningKey("r1", "RS256", rsa_private, rsa_jwk)
    )


def payload(sub: str = "node-a", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISS, "sub": sub, "aud": AUD, "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not DROP}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], body: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"


def alg_none_token(kid: str) -> str:
    return _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, payload()) + "."


def hmac_token(secret: bytes, kid: str, body: dict[str, Any] | None = None) -> str:
    """An HS256 token made by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, body or payload())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def verifier_for(*signing_keys: SigningKey, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(
        KeySet.from_jwks({"keys": [k.jwk for k in signing_keys]}), AUD, ISS, **kwargs
    )


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_jwks(path: Path, *signing_keys: SigningKey, bump_s: int = 0) -> None:
    path.write_text(json.dumps({"keys": [k.jwk for k in signing_keys]}))
    if bump_s:  # a distinct mtime without sleeping
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_s * 1_000_000_000))


# -- a real gRPC service -------------------------------------------------------------------


def identity_of(message: bytes) -> str | None:
    """Test messages claim an identity as b"<node>|<text>"."""
    return message.split(b"|", 1)[0].decode() if b"|" in message else None


class Echo:
    """Raw-bytes unary and streaming methods that record what they saw, and as whom."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.claims: list[Claims | None] = []

    def _record(self, request: bytes) -> Claims | None:
        claims = current_claims()
        self.seen.append(request)
        self.claims.append(claims)
        return claims

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        claims = self._record(request)
        return b"ok:" + (claims.subject.encode() if claims else b"-")

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            self._record(request)
            yield b"echo:" + request

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(2):
            claims = self._record(request)
            yield f"{i}:{claims.subject if claims else '-'}".encode()

    def swallow(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """A careless handler that swallows errors while reading its requests."""
        for _ in range(3):
            try:
                self._record(next(requests))
            except StopIteration:
                break
            except Exception:
                continue
        return b"done"

    def handlers(self) -> list[Any]:
        return [
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                    "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
                    "Swallow": grpc.stream_unary_rpc_method_handler(self.swallow),
                    "Count": grpc.unary_stream_rpc_method_handler(self.count),
                },
            ),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": grpc.unary_unary_rpc_method_handler(lambda r, c: b"SERVING")},
            ),
        ]


@dataclass
class Served:
    echo: Echo
    port: int
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, source: Any = None) -> grpc.Channel:
        """A plaintext channel; with ``source``, through client_interceptor."""
        channel = grpc.insecure_channel(self.target)
        self.channels.append(channel)
        if source is not None:
            channel = grpc.intercept_channel(
                channel, client_interceptor(source, allow_insecure=True)
            )
        return channel

    def local_channel(self, source: Any) -> grpc.Channel:
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(LOCAL), call_credentials(source)
        )
        channel = grpc.secure_channel(self.target, credentials)
        self.channels.append(channel)
        return channel

    def unary(self, request: bytes, token: str | None = None, channel: Any = None) -> bytes:
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        call = (channel or self.channel()).unary_unary(UNARY)
        response: bytes = call(request, timeout=5, metadata=metadata)
        return response


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    servers: list[grpc.Server] = []
    served: list[Served] = []

    def start(interceptor: Any = None, *, local: bool = False) -> Served:
        echo = Echo()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            handlers=echo.handlers(),
            interceptors=[interceptor] if interceptor is not None else [],
        )
        if local:
            port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials(LOCAL))
        else:
            port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        served.append(Served(echo, port))
        return served[-1]

    yield start
    for s in served:
        for channel in s.channels:
            channel.close()
    for server in servers:
        server.stop(None)


class Chat:
    """A bidi stream driven one message at a time (no sleeps: each send waits for its echo)."""

    def __init__(self, channel: grpc.Channel, token: str | None = None) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._responses = channel.stream_stream(CHAT)(
            self._requests(), timeout=5, metadata=metadata
        )

    def _requests(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, message: bytes) -> bytes:
        self._queue.put(message)
        response: bytes = next(self._responses)
        return response

    def close(self) -> None:
        self._queue.put(None)


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# -- accepted --------------------------------------------------------------------------------


def test_valid_token_is_accepted_and_claims_are_visible(
    keys: SimpleNamespace, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="raftgrpc.auth")
    served = serve(server_interceptor(verifier_for(keys.k1), identity_of=identity_of))
    source = SigningTokenSource(keys.k1.pem, "k1", "ES256", "node-a", AUD, ISS, role="node")
    channel = served.channel(source)

    assert channel.unary_unary(UNARY)(b"node-a|hi", timeout=5) == b"ok:node-a"
    chat = Chat(channel)
    try:
        assert chat.send(b"node-a|one") == b"echo:node-a|one"
        assert chat.send(b"two") == b"echo:two"
    finally:
        chat.close()

    assert list(channel.unary_stream(COUNT)(b"node-a|n", timeout=5)) == [b"0:node-a", b"1:node-a"]

    assert served.echo.seen == [b"node-a|hi", b"node-a|one", b"two", b"node-a|n", b"node-a|n"]
    claims = served.echo.claims[0]
    assert claims is not None
    assert (claims.subject, claims.issuer, claims.audience) == ("node-a", ISS, (AUD,))
    assert (claims.key_id, claims.role) == ("k1", "node")
    assert claims.expires_at - claims.issued_at == 3600
    assert claims.raw["raftgrpc_role"] == "node"
    assert all(c is not None and c.subject == "node-a" for c in served.echo.claims)
    assert current_claims() is None  # never leaks out of the handler
    accepted = events(caplog, "auth.accepted")
    assert len(accepted) == 3
    assert accepted[0].levelno == logging.DEBUG
    assert (accepted[0].method, accepted[0].subject, accepted[0].code) == (
        UNARY,
        "node-a",
        "OK",
    )
    assert accepted[0].peer.startswith("ipv4:127.0.0.1:")


def test_tokens_are_verified_on_the_handler_thread_not_the_dispatch_thread(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    verify_threads: list[threading.Thread] = []
    handler_threads: list[threading.Thread] = []

    class RecordingVerifier(TokenVerifier):
        def verify(self, token: str) -> Claims:
            verify_threads.append(threading.current_thread())
            return super().verify(token)

    verifier = RecordingVerifier(KeySet.from_jwks({"keys": [keys.k1.jwk]}), AUD, ISS)
    served = serve(server_interceptor(verifier, identity_of=identity_of))
    original = served.echo._record

    def record(request: bytes) -> Claims | None:
        handler_threads.append(threading.current_thread())
        return original(request)

    served.echo._record = record  # type: ignore[method-assign]
    assert served.unary(b"node-a|x", keys.k1.sign(payload())) == b"ok:node-a"
    assert verify_threads == handler_threads
    assert verify_threads[0] is not threading.current_thread()


def test_call_credentials_flow_on_local_loopback_credentials(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    served = serve(server_interceptor(verifier_for(keys.k1)), local=True)
    source = SigningTokenSource(keys.k1.pem, "k1", "ES256", "node-a", AUD, ISS)
    channel = served.local_channel(source)
    assert channel.unary_unary(UNARY)(b"x", timeout=5) == b"ok:node-a"
    chat = Chat(channel)
    try:
        assert chat.send(b"y") == b"echo:y"
    finally:
        chat.close()


def test_call_credentials_are_never_sent_on_a_plaintext_channel(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    served = serve()  # no interceptor: the handler would see any metadata
    token = keys.k1.sign(payload())
    with pytest.raises(grpc.RpcError) as refused:
        served.channel().unary_unary(UNARY)(
            b"x", timeout=5, credentials=call_credentials(StaticTokenSource(token))
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "security level" in (refused.value.details() or "")
    assert served.echo.seen == []


def test_a_failing_token_source_fails_the_call_without_raising_into_grpc(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def token(self) -> str:
            raise OSError("/secret/path unreadable")

    served = serve(local=True)
    with pytest.raises(grpc.RpcError) as refused:
        served.local_channel(Broken()).unary_unary(UNARY)(b"x", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert served.echo.seen == []
    assert events(caplog, "auth.token_unavailable")


def test_health_and_reflection_are_exempt(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    served = serve(server_interceptor(verifier_for(keys.k1)))
    assert served.channel().unary_unary(HEALTH)(b"", timeout=5) == b"SERVING"


# -- refused ---------------------------------------------------------------------------------

BAD_TOKENS: list[tuple[str, Callable[[SimpleNamespace], str], str]] = [
    ("forged", lambda k: k.k2.sign(payload(), kid="k1"), "bad signature"),
    (
        "expired",
        lambda k: k.k1.sign(payload(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "token expired",
    ),
    ("wrong_audience", lambda k: k.k1.sign(payload(aud="other")), "wrong audience"),
    ("wrong_issuer", lambda k: k.k1.sign(payload(iss="evil")), "wrong issuer"),
    ("missing_exp", lambda k: k.k1.sign(payload(exp=DROP)), "missing exp claim"),
    ("missing_iat", lambda k: k.k1.sign(payload(iat=DROP)), "missing iat claim"),
    ("missing_sub", lambda k: k.k1.sign(payload(sub=DROP)), "missing sub claim"),
    ("missing_aud", lambda k: k.k1.sign(payload(aud=DROP)), "missing aud claim"),
    ("missing_iss", lambda k: k.k1.sign(payload(iss=DROP)), "missing iss claim"),
    (
        "issued_in_future",
        lambda k: k.k1.sign(payload(iat=int(time.time()) + 3600)),
        "token issued in the future",
    ),
    ("alg_none", lambda k: alg_none_token("k1"), "algorithm not allowed"),
    (
        "hs256_signed_with_rsa_public_pem",
        lambda k: hmac_token(k.r1.public_pem, "r1"),
        "algorithm not allowed",
    ),
    (
        "rsa_token_for_ec_key",
        lambda k: k.r1.sign(payload(), kid="k1"),
        "algorithm does not match the key",
    ),
    ("unknown_kid", lambda k: k.k1.sign(payload(), kid="nope"), "unknown key id"),
    (
        "missing_kid",
        lambda k: jwt.encode(payload(), k.k1.private, algorithm="ES256"),
        "missing key id",
    ),
    ("garbage", lambda k: "not-a-jwt", "malformed token"),
    ("bad_base64", lambda k: "e30.@@@.abc", "malformed token"),
]


@pytest.mark.parametrize(
    ("make_token", "reason"), [c[1:] for c in BAD_TOKENS], ids=[c[0] for c in BAD_TOKENS]
)
def test_bad_tokens_are_unauthenticated(
    keys: SimpleNamespace,
    serve: Callable[..., Served],
    caplog: pytest.LogCaptureFixture,
    make_token: Callable[[SimpleNamespace], str],
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="raftgrpc.auth")
    served = serve(server_interceptor(verifier_for(keys.k1, keys.r1), identity_of=identity_of))
    token = make_token(keys)
    with pytest.raises(grpc.RpcError) as refused:
        served.unary(b"node-a|x", token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == reason
    assert served.echo.seen == []
    [denied] = events(caplog, "auth.denied")
    assert denied.levelno == logging.WARNING
    assert (denied.reason, denied.code, denied.method) == (reason, "UNAUTHENTICATED", UNARY)
    secret_part = token.rsplit(".", 1)[-1] or token
    assert token not in caplog.text
    assert secret_part not in caplog.text and secret_part not in reason


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "missing authorization metadata"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "malformed authorization metadata"),
        ((("authorization", "Bearer"),), "malformed authorization metadata"),
        (
            (("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")),
            "more than one authorization metadata entry",
        ),
    ],
    ids=["none", "basic", "empty_bearer", "two"],
)
def test_missing_or_malformed_metadata_is_unauthenticated(
    keys: SimpleNamespace, serve: Callable[..., Served], metadata: Any, reason: str
) -> None:
    served = serve(server_interceptor(verifier_for(keys.k1)))
    for method in (UNARY, CHAT):
        with pytest.raises(grpc.RpcError) as refused:
            if method == UNARY:
                served.channel().unary_unary(UNARY)(b"x", timeout=5, metadata=metadata)
            else:
                list(
                    served.channel().stream_stream(CHAT)(iter([b"x"]), timeout=5, metadata=metadata)
                )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == reason
    assert served.echo.seen == []


def test_a_token_for_node_a_cannot_speak_as_node_b(
    keys: SimpleNamespace, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(server_interceptor(verifier_for(keys.k1), identity_of=identity_of))
    token = keys.k1.sign(payload(sub="node-a"))
    channel = served.channel(StaticTokenSource(token))
    expected = "token subject does not match the claimed identity"

    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(UNARY)(b"node-b|x", timeout=5)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        expected,
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(channel.stream_stream(CHAT)(iter([b"node-b|hello", b"node-a|later"]), timeout=5))
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        expected,
    )
    # A handler that swallows the abort and reads on still never gets a message.
    with pytest.raises(grpc.RpcError) as refused:
        channel.stream_unary(SWALLOW)(iter([b"node-b|x", b"node-a|y", b"z"]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert served.echo.seen == []
    denied = events(caplog, "auth.denied")
    assert [(r.subject, r.code) for r in denied] == [("node-a", "PERMISSION_DENIED")] * 3


def test_a_wrong_role_is_permission_denied(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    served = serve(server_interceptor(verifier_for(keys.k1), required_role="admin"))
    with pytest.raises(grpc.RpcError) as refused:
        served.unary(b"x", keys.k1.sign(payload()))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "role 'admin' required"
    assert served.echo.seen == []
    admin = keys.k1.sign(payload(sub="operator", raftgrpc_role="admin"))
    assert served.unary(b"x", admin) == b"ok:operator"
    claims = served.echo.claims[0]
    assert claims is not None and claims.role == "admin"


def test_a_stream_is_aborted_on_the_next_message_once_its_token_expires(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    clock = FakeClock(time.time())
    verifier = verifier_for(keys.k1, leeway_s=30.0, clock=clock)
    served = serve(server_interceptor(verifier, identity_of=identity_of))
    token = SigningTokenSource(keys.k1.pem, "k1", "ES256", "node-a", AUD, ISS, ttl_s=120).token()
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]

    chat = Chat(served.channel(), token)
    try:
        assert chat.send(b"node-a|1") == b"echo:node-a|1"
        clock.now = expires_at + 29  # within the leeway
        assert chat.send(b"2") == b"echo:2"
        clock.now = expires_at + 31
        with pytest.raises(grpc.RpcError) as refused:
            chat.send(b"3")
    finally:
        chat.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "token expired"
    assert served.echo.seen == [b"node-a|1", b"2"]


# -- modes -----------------------------------------------------------------------------------


def test_audit_mode_logs_failures_and_accepts(
    keys: SimpleNamespace, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="raftgrpc.auth")
    served = serve(
        server_interceptor(verifier_for(keys.k1), mode=AuthMode.AUDIT, identity_of=identity_of)
    )
    expired = keys.k1.sign(payload(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))

    assert served.unary(b"x") == b"ok:-"
    assert served.unary(b"x", expired) == b"ok:-"
    assert served.unary(b"node-b|x", keys.k1.sign(payload())) == b"ok:node-a"
    assert served.unary(b"node-a|x", keys.k1.sign(payload())) == b"ok:node-a"

    assert served.echo.seen == [b"x", b"x", b"node-b|x", b"node-a|x"]
    audits = events(caplog, "auth.audit")
    assert [(r.reason, r.code) for r in audits] == [
        ("missing authorization metadata", "UNAUTHENTICATED"),
        ("token expired", "UNAUTHENTICATED"),
        ("token subject does not match the claimed identity", "PERMISSION_DENIED"),
    ]
    assert all(r.levelno == logging.WARNING and r.method == UNARY for r in audits)
    assert not events(caplog, "auth.denied")
    assert expired not in caplog.text
    assert len(events(caplog, "auth.accepted")) == 2


def test_off_mode_passes_everything_through_untouched(
    keys: SimpleNamespace, serve: Callable[..., Served]
) -> None:
    interceptor = server_interceptor(verifier_for(keys.k1), mode="off")
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
    details = SimpleNamespace(method=UNARY, invocation_metadata=())
    assert interceptor.intercept_service(lambda d: handler, details) is handler

    served = serve(interceptor)
    assert served.unary(b"x") == b"ok:-"
    assert served.unary(b"y", "not-even-a-token") == b"ok:-"
    assert served.echo.claims == [None, None]


def test_auth_mode_parses_configuration_strings() -> None:
    assert AuthMode("AUDIT") is AuthMode.AUDIT
    assert AuthMode(" enforce ") is AuthMode.ENFORCE
    assert AuthMode(AuthMode.OFF) is AuthMode.OFF
    with pytest.raises(ValueError):
        AuthMode("sometimes")


def test_denial_log_lines_are_rate_limited_per_peer(
    keys: SimpleNamespace, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(1000.0)
    served = serve(
        server_interceptor(
            verifier_for(keys.k1), denial_log_limit=3, denial_log_window_s=10.0, monotonic=clock
        )
    )
    for _ in range(5):  # two channels: a reconnecting attacker keeps its bucket
        for channel in (served.channel(), served.channel()):
            with pytest.raises(grpc.RpcError):
                served.unary(b"x", channel=channel)
    assert len(events(caplog, "auth.denied")) == 3
    assert not events(caplog, "auth.suppressed")

    clock.advance(11.0)
    with pytest.raises(grpc.RpcError):
        served.unary(b"x")
    [summary] = events(caplog, "auth.suppressed")
    assert summary.count == 7
    assert summary.peer == "ipv4:127.0.0.1"
    assert len(events(caplog, "auth.denied")) == 4
    assert served.echo.seen == []


# -- key rotation ----------------------------------------------------------------------------


def test_key_rotation_through_the_jwks_file(
    keys: SimpleNamespace, serve: Callable[..., Served], tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, keys.k1)
    key_set = KeySet.from_file(path, reload_interval_s=0.0)
    served = serve(server_interceptor(TokenVerifier(key_set, AUD, ISS)))
    old = keys.k1.sign(payload())
    new = keys.k2.sign(payload(sub="node-b"))

    assert served.unary(b"x", old) == b"ok:node-a"
    with pytest.raises(grpc.RpcError) as refused:
        served.unary(b"x", new)
    assert refused.value.details() == "unknown key id"

    write_jwks(path, keys.k1, keys.k2, bump_s=1)  # add the new key
    assert served.unary(b"x", new) == b"ok:node-b"
    assert served.unary(b"x", old) == b"ok:node-a"  # old tokens keep working

    write_jwks(path, keys.k2, bump_s=2)  # retire the old key
    with pytest.raises(grpc.RpcError) as refused:
        served.unary(b"x", old)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown key id",
    )
    assert served.unary(b"x", new) == b"ok:node-b"


def test_key_file_is_checked_at_most_every_reload_interval(
    keys: SimpleNamespace, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, keys.k1)
    clock = FakeClock(0.0)
    key_set = KeySet.from_file(path, reload_interval_s=5.0, clock=clock)
    write_jwks(path, keys.k2, bump_s=1)
    clock.advance(4.9)
    assert key_set.key_ids() == {"k1"}
    clock.advance(0.2)
    assert key_set.key_ids() == {"k2"}


def test_a_broken_key_file_keeps_the_current_keys(
    keys: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, keys.k1)
    key_set = KeySet.from_file(path, reload_interval_s=0.0)
    verifier = TokenVerifier(key_set, AUD, ISS)
    path.write_text('{"keys": [')  # half written
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    assert verifier.verify(keys.k1.sign(payload())).subject == "node-a"
    assert verifier.verify(keys.k1.sign(payload())).subject == "node-a"
    assert len(events(caplog, "auth.keys_reload_failed")) == 1  # once per file version
    with pytest.raises(ConfigError):
        KeySet.from_file(path)


def test_a_jwks_must_name_every_key() -> None:
    with pytest.raises(ConfigError, match="no 'kid'"):
        KeySet.from_jwks({"keys": [{"kty": "oct", "k": _b64(b"x" * 32)}]})
    with pytest.raises(ConfigError, match="private key material"):
        private_jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
        KeySet.from_jwks({"keys": [{**private_jwk, "kid": "oops"}]})
    with pytest.raises(ConfigError, match="twice"):
        oct_key = {"kty": "oct", "k": _b64(b"x" * 32), "kid": "h"}
        KeySet.from_jwks({"keys": [oct_key, oct_key]})


# -- HMAC and algorithm confusion ------------------------------------------------------------


def test_hmac_needs_an_explicit_algorithm_and_an_oct_key(keys: SimpleNamespace) -> None:
    secret = secrets.token_bytes(32)
    oct_jwk = {"kty": "oct", "k": _b64(secret), "kid": "h1", "alg": "HS256", "use": "sig"}
    key_set = KeySet.from_jwks({"keys": [keys.r1.jwk, oct_jwk]})
    hs_token = hmac_token(secret, "h1")

    with pytest.raises(AuthError) as error:  # not listed: refused
        TokenVerifier(key_set, AUD, ISS).verify(hs_token)
    assert error.value.reason == "algorithm not allowed"

    with_hmac = TokenVerifier(key_set, AUD, ISS, algorithms=["RS256", "HS256"])
    assert with_hmac.verify(hs_token).key_id == "h1"
    # Even with HMAC allowed, an RSA key's public PEM is never an HMAC secret.
    with pytest.raises(AuthError) as error:
        with_hmac.verify(hmac_token(keys.r1.public_pem, "r1"))
    assert (error.value.code, error.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "algorithm does not match the key",
    )
    # HMAC listed, but no oct key in the set.
    with pytest.raises(AuthError) as error:
        verifier_for(keys.r1, algorithms=["HS256"]).verify(hmac_token(keys.r1.public_pem, "r1"))
    assert error.value.reason == "algorithm not allowed"


def test_verifier_rejects_insecure_configuration(keys: SimpleNamespace) -> None:
    with pytest.raises(ConfigError):
        verifier_for(keys.k1, algorithms=["none"])
    with pytest.raises(ConfigError):
        verifier_for(keys.k1, algorithms=["ES256", "HS1"])
    with pytest.raises(ConfigError):
        TokenVerifier(KeySet.from_jwks({"keys": [keys.k1.jwk]}), "", ISS)


# -- token sources ---------------------------------------------------------------------------


def test_signing_token_source_refreshes_before_expiry(keys: SimpleNamespace) -> None:
    clock = FakeClock(1_800_000_000.0)
    source = SigningTokenSource(
        keys.k1.pem, "k1", "ES256", "node-a", AUD, ISS, ttl_s=100, clock=clock
    )
    verifier = verifier_for(keys.k1, leeway_s=0, clock=clock)
    assert source.refresh_margin_s == 50  # 60 s, but at most half the ttl

    first = source.token()
    clock.advance(49)
    assert source.token() == first
    assert verifier.verify(first).expires_at == 1_800_000_100
    clock.advance(2)  # 49 s of validity left: below the margin
    second = source.token()
    assert second != first
    assert verifier.verify(second).issued_at == 1_800_000_051
    assert source.token() == second

    hourly = SigningTokenSource(keys.k1.pem, "k1", "ES256", "node-a", AUD, ISS, clock=clock)
    assert hourly.refresh_margin_s == 720  # 20% of an hour


def test_signing_token_source_checks_its_key(keys: SimpleNamespace, tmp_path: Path) -> None:
    pem_file = tmp_path / "k1.pem"
    pem_file.write_bytes(keys.k1.pem)
    source = SigningTokenSource(str(pem_file), "k1", "ES256", "node-a", AUD, ISS)
    assert verifier_for(keys.k1).verify(source.token()).subject == "node-a"
    with pytest.raises(ConfigError, match="not a key for RS256"):
        SigningTokenSource(keys.k1.pem, "k1", "RS256", "node-a", AUD, ISS)
    with pytest.raises(ConfigError, match="HMAC"):
        SigningTokenSource(keys.r1.public_pem, "r1", "HS256", "node-a", AUD, ISS)
    with pytest.raises(ConfigError) as error:
        SigningTokenSource(b"-----BEGIN PRIVATE KEY-----\nsecret\n", "k", "ES256", "n", AUD, ISS)
    assert "secret" not in str(error.value)


def test_file_token_source_follows_the_file(
    keys: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    first, second = keys.k1.sign(payload()), keys.k1.sign(payload(sub="node-z"))
    path.write_text(first + "\n")
    source = FileTokenSource(path, reload_interval_s=0.0)
    assert source.token() == first
    path.write_text(second + "\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    assert source.token() == second
    path.write_text("garbage")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    assert source.token() == second  # the previous token is kept
    assert events(caplog, "auth.token_reload_failed")
    with pytest.raises(ConfigError):
        FileTokenSource(tmp_path / "missing")


def test_client_interceptor_needs_an_explicit_opt_in(keys: SimpleNamespace) -> None:
    source = StaticTokenSource(keys.k1.sign(payload()))
    with pytest.raises(ConfigError, match="allow_insecure"):
        client_interceptor(source)
    with pytest.raises(ConfigError):
        StaticTokenSource("not a token")
    assert "eyJ" not in repr(source)

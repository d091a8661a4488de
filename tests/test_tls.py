"""TLS, mTLS (raftgrpc._security.tls) and certificate identity binding
(raftgrpc.interceptors.identity), over real gRPC servers."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftgrpc import ConfigError
from raftgrpc._security._filestamp import stamp, stamp_open
from raftgrpc._security.tls import (
    TlsConfig,
    canonical_node_id,
    channel_credentials,
    channel_options,
    default_match,
    node_uri,
    peer_identities,
    server_credentials,
)
from raftgrpc.interceptors.identity import identity_interceptor
from raftgrpc.testing._ca import CertFiles
from raftgrpc.testing._ports import HAS_IPV6
from tests.certs import CA, make_ca, node_cert, tls_config

pytestmark = pytest.mark.timeout(30)

SERVICE = "raftgrpc.test.Echo"
CALL_TIMEOUT_S = 10.0
DENIED = "client certificate does not match the claimed node"


class Recorder:
    """The test service: raw-bytes Unary and bidi Stream methods that record what they see."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[bytes] = []
        self.calls = 0
        self.identities: list[list[str]] = []

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls += 1
            self.identities.append(peer_identities(context))

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._enter(context)
        with self.lock:
            self.received.append(request)
        return b"echo:" + request

    def stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._enter(context)
        for request in requests:
            with self.lock:
                self.received.append(request)
            yield b"echo:" + request

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Stream": grpc.stream_stream_rpc_method_handler(self.stream),
            },
        )


@contextmanager
def serve(
    creds: grpc.ServerCredentials,
    host: str = "127.0.0.1",
    interceptors: Sequence[Any] = (),
) -> Iterator[tuple[str, Recorder]]:
    """A started server on an ephemeral port; yields its target and its recorder."""
    recorder = Recorder()
    executor = ThreadPoolExecutor(max_workers=4)
    server = grpc.server(executor, interceptors=list(interceptors))
    server.add_generic_rpc_handlers((recorder.handler(),))
    port = server.add_secure_port(f"{host}:0" if ":" not in host else f"[{host}]:0", creds)
    assert port
    server.start()
    try:
        yield (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), recorder
    finally:
        server.stop(None).wait()
        executor.shutdown(wait=True)


@contextmanager
def dial(
    target: str, creds: grpc.ChannelCredentials, options: Sequence[tuple[str, Any]] = ()
) -> Iterator[grpc.Channel]:
    # A private subchannel pool: every channel makes its own connection and TLS handshake.
    opts = [("grpc.use_local_subchannel_pool", 1), *options]
    channel = grpc.secure_channel(target, creds, options=opts)
    try:
        yield channel
    finally:
        channel.close()


def unary(channel: grpc.Channel, request: bytes = b"ping") -> bytes:
    call = channel.unary_unary(f"/{SERVICE}/Unary", None, None)
    response: bytes = call(request, timeout=CALL_TIMEOUT_S)
    return response


def stream(channel: grpc.Channel, requests: list[bytes]) -> list[bytes]:
    call = channel.stream_stream(f"/{SERVICE}/Stream", None, None)
    return list(call(iter(requests), timeout=CALL_TIMEOUT_S))


def rpc_error(fn: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def trusting_only(ca_file: Path) -> grpc.ChannelCredentials:
    """TLS client credentials without a client certificate."""
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())


def claim(raw: Any) -> str | None:
    """identity_of for the tests: the first message is the claimed node id (b"": none)."""
    return raw.decode() if raw else None


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path, "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path, "other-ca")


# --- TLS --------------------------------------------------------------------------------------


def test_tls_call_with_the_right_ca(ca: CA, tmp_path: Path) -> None:
    server_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:2222"))
    with (
        serve(server_credentials(server_cfg)) as (target, recorder),
        dial(target, channel_credentials(client_cfg), channel_options(client_cfg)) as channel,
    ):
        assert unary(channel) == b"echo:ping"
        assert stream(channel, [b"a", b"b"]) == [b"echo:a", b"echo:b"]
    # Plain TLS: the server does not ask for a client certificate, so there is no identity.
    assert recorder.identities == [[], []]


def test_client_trusting_another_ca_is_refused(ca: CA, other_ca: CA) -> None:
    server_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    with (
        serve(server_credentials(server_cfg)) as (target, recorder),
        dial(target, trusting_only(other_ca.ca_file)) as channel,
    ):
        assert rpc_error(lambda: unary(channel)).code() == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == 0


def test_server_name_override(ca: CA) -> None:
    # The certificate names a DNS host only; the cluster is dialled by IP.
    server_files = ca.issue("raft-1", dns=["raft-1.internal"])
    client_files = node_cert(ca, "127.0.0.1:2222")
    plain = tls_config(client_files)
    override = tls_config(client_files, server_name_override="raft-1.internal")
    assert channel_options(plain) == []
    assert channel_options(override) == [("grpc.ssl_target_name_override", "raft-1.internal")]
    with serve(server_credentials(tls_config(server_files))) as (target, _):
        with dial(target, channel_credentials(plain), channel_options(plain)) as channel:
            assert rpc_error(lambda: unary(channel)).code() == grpc.StatusCode.UNAVAILABLE
        with dial(target, channel_credentials(override), channel_options(override)) as channel:
            assert unary(channel) == b"echo:ping"


# --- mTLS -------------------------------------------------------------------------------------


def test_mtls_exposes_the_client_certificate_identities(ca: CA) -> None:
    server_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"), require_client_cert=True)
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:2222"))
    with (
        serve(server_credentials(server_cfg)) as (target, recorder),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        assert unary(channel) == b"echo:ping"
    # SANs in certificate order (IP, URI), then the CN.
    assert recorder.identities == [["127.0.0.1", "raftgrpc://127.0.0.1:2222", "127.0.0.1:2222"]]


def test_mtls_refuses_a_client_without_certificate(ca: CA) -> None:
    server_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"), require_client_cert=True)
    with (
        serve(server_credentials(server_cfg)) as (target, recorder),
        dial(target, trusting_only(ca.ca_file)) as channel,
    ):
        assert rpc_error(lambda: unary(channel)).code() == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == 0


def test_mtls_refuses_a_client_certificate_from_another_ca(ca: CA, other_ca: CA) -> None:
    server_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"), require_client_cert=True)
    stranger = node_cert(other_ca, "127.0.0.1:2222")
    # The stranger trusts the server's CA but presents a certificate of its own CA.
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_file.read_bytes(),
        private_key=stranger.key_file.read_bytes(),
        certificate_chain=stranger.cert_file.read_bytes(),
    )
    with serve(server_credentials(server_cfg)) as (target, recorder), dial(target, creds) as ch:
        assert rpc_error(lambda: unary(ch)).code() == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == 0


# --- identity binding -------------------------------------------------------------------------


@contextmanager
def mtls_server(
    ca: CA, node_id: str = "127.0.0.1:1111", host: str = "127.0.0.1", **kwargs: Any
) -> Iterator[tuple[str, Recorder]]:
    cfg = tls_config(node_cert(ca, node_id), require_client_cert=True)
    with serve(server_credentials(cfg), host, [identity_interceptor(claim, **kwargs)]) as s:
        yield s


def test_identity_accepts_the_node_its_certificate_names(ca: CA) -> None:
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    with (
        mtls_server(ca, "127.0.0.1:9999") as (target, recorder),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        assert stream(channel, [b"127.0.0.1:1111", b"m2"]) == [b"echo:127.0.0.1:1111", b"echo:m2"]
        assert unary(channel, b"127.0.0.1:1111") == b"echo:127.0.0.1:1111"
    assert recorder.received == [b"127.0.0.1:1111", b"m2", b"127.0.0.1:1111"]


def test_identity_refuses_another_node_on_the_same_host(
    ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    # The certificate also carries SAN IP 127.0.0.1, but its URI names port 1111 only.
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    caplog.set_level(logging.WARNING, logger="raftgrpc.tls")
    with (
        mtls_server(ca) as (target, recorder),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        err = rpc_error(lambda: stream(channel, [b"127.0.0.1:2222", b"m2"]))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == DENIED
        err = rpc_error(lambda: unary(channel, b"127.0.0.1:2222"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # The stream handler ran but never received a message; the unary handler never ran.
    assert recorder.received == []
    assert recorder.calls == 1
    denials = [r for r in caplog.records if getattr(r, "event", None) == "tls.denied"]
    assert len(denials) == 2
    for record in denials:
        assert record.__dict__["claimed"] == "127.0.0.1:2222"
        assert "127.0.0.1" in record.__dict__["peer"]
        assert "do not allow the claimed node id" in record.__dict__["reason"]


def test_identity_without_client_certificate_is_unauthenticated(ca: CA) -> None:
    # TLS without client certificates: nothing to bind the claim to.
    cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    interceptors = [identity_interceptor(claim)]
    with (
        serve(server_credentials(cfg), interceptors=interceptors) as (target, recorder),
        dial(target, trusting_only(ca.ca_file)) as channel,
    ):
        err = rpc_error(lambda: stream(channel, [b"127.0.0.1:1111"]))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        err = rpc_error(lambda: unary(channel, b"127.0.0.1:1111"))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert recorder.calls == 0


def test_identity_unclaimed_first_message(ca: CA) -> None:
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))
    # By default a message that claims nothing goes to the handler (e.g. a read-only Hello).
    with (
        mtls_server(ca) as (target, recorder),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        assert stream(channel, [b"", b"m2"]) == [b"echo:", b"echo:m2"]
    assert recorder.received == [b"", b"m2"]
    with (
        mtls_server(ca, allow_unclaimed=False) as (target, recorder),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        err = rpc_error(lambda: stream(channel, [b"", b"m2"]))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        # An empty stream claims nothing either, and reaches the handler as one.
        assert stream(channel, []) == []
    assert recorder.received == []


def test_identity_of_failure_is_invalid_argument(ca: CA) -> None:
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:1111"))

    def broken(raw: Any) -> str | None:
        raise ValueError("unreadable")

    cfg = tls_config(node_cert(ca, "127.0.0.1:9999"), require_client_cert=True)
    with (
        serve(server_credentials(cfg), interceptors=[identity_interceptor(broken)]) as (t, rec),
        dial(t, channel_credentials(client_cfg)) as channel,
    ):
        err = rpc_error(lambda: stream(channel, [b"127.0.0.1:1111"]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rec.received == []


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_identity_with_ipv6_node_ids(ca: CA) -> None:
    client_cfg = tls_config(node_cert(ca, "::1:3333"))  # PySyncObj's unbracketed form
    with mtls_server(ca, "[::1]:1111", host="::1") as (target, recorder):
        assert target.startswith("[::1]:")
        with dial(target, channel_credentials(client_cfg)) as channel:
            assert stream(channel, [b"[::1]:3333"]) == [b"echo:[::1]:3333"]
            assert stream(channel, [b"::1:3333"]) == [b"echo:::1:3333"]
            err = rpc_error(lambda: stream(channel, [b"[::1]:4444"]))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert recorder.received == [b"[::1]:3333", b"::1:3333"]
    assert recorder.identities[0] == ["::1", "raftgrpc://[::1]:3333", "[::1]:3333"]


def test_default_match_rule() -> None:
    node = ["127.0.0.1", "raftgrpc://127.0.0.1:1111", "127.0.0.1:1111"]
    assert default_match("127.0.0.1:1111", node)
    assert not default_match("127.0.0.1:2222", node)  # URI present: the host rule is off
    assert not default_match("10.0.0.1:1111", node)
    assert not default_match("not-an-address", node)
    assert not default_match("", node)
    # Canonical forms: brackets, IPv6 spelling, DNS case, trailing dot.
    assert default_match("::1:5", ["raftgrpc://[::1]:5"])
    assert default_match("[0::1]:5", ["raftgrpc://[::1]:5"])
    assert default_match("Raft-1.Example.:5", ["RAFTGRPC://raft-1.example:5"])
    # Without a raftgrpc URI: the claimed host must be a SAN DNS/IP (or the CN).
    assert default_match("raft-1.example:7", ["Raft-1.Example", "spiffe://x/y"])
    assert default_match("[::1]:7", ["0:0::1"])
    assert not default_match("raft-2.example:7", ["raft-1.example", "spiffe://raft-2.example"])
    assert not default_match("raft-1.example:7", ["*.example"])
    assert not default_match("127.0.0.1:1", [])
    assert node_uri("::1:4321") == "raftgrpc://[::1]:4321"
    assert canonical_node_id("LOCALHOST:1") == "localhost:1"


# --- configuration errors ---------------------------------------------------------------------


def files_of(files: CertFiles, **changes: Path) -> dict[str, Any]:
    args = {"cert_file": files.cert_file, "key_file": files.key_file, "ca_file": files.ca_file}
    args.update(changes)
    return args


def test_config_error_names_a_missing_file(ca: CA, tmp_path: Path) -> None:
    files = node_cert(ca, "127.0.0.1:1111")
    missing = tmp_path / "nope.pem"
    for field in ("cert_file", "key_file", "ca_file"):
        with pytest.raises(ConfigError, match="does not exist") as info:
            TlsConfig(**files_of(files, **{field: missing}))
        assert str(missing) in str(info.value)


def test_config_error_for_files_that_do_not_parse(ca: CA, tmp_path: Path) -> None:
    files = node_cert(ca, "127.0.0.1:1111")
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    with pytest.raises(ConfigError, match="no valid PEM certificate"):
        TlsConfig(**files_of(files, cert_file=junk))
    with pytest.raises(ConfigError, match="no valid PEM certificate"):
        TlsConfig(**files_of(files, ca_file=junk))
    with pytest.raises(ConfigError, match="no valid PEM private key"):
        TlsConfig(**files_of(files, key_file=junk))
    # A key where the certificate belongs.
    with pytest.raises(ConfigError, match="no valid PEM certificate"):
        TlsConfig(**files_of(files, cert_file=files.key_file))


def test_config_error_for_a_key_of_another_certificate(ca: CA) -> None:
    ours = node_cert(ca, "127.0.0.1:1111")
    theirs = node_cert(ca, "127.0.0.1:2222")
    with pytest.raises(ConfigError, match="does not match the certificate") as info:
        TlsConfig(**files_of(ours, key_file=theirs.key_file))
    message = str(info.value)
    assert str(theirs.key_file) in message and str(ours.cert_file) in message
    key_pem = theirs.key_file.read_text()
    body = "".join(key_pem.splitlines()[1:-1])
    assert "PRIVATE KEY" not in message
    assert not any(chunk in message for chunk in (body[:16], body[16:32], body[-16:]))


def test_config_error_for_an_encrypted_key(ca: CA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    files = node_cert(ca, "127.0.0.1:1111")
    key = serialization.load_pem_private_key(files.key_file.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        TlsConfig(**files_of(files, key_file=encrypted))


def test_config_error_for_an_empty_server_name_override(ca: CA) -> None:
    with pytest.raises(ConfigError, match="server_name_override"):
        tls_config(node_cert(ca, "127.0.0.1:1111"), server_name_override=" ")


def test_pki_files(ca: CA) -> None:
    files = node_cert(ca, "localhost:1111")
    assert files.cert_file.name == "localhost_1111.crt"
    assert files.ca_file == ca.ca_file
    if os.name == "posix":
        assert files.key_file.stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["raftgrpc://localhost:1111"]
    with pytest.raises(ConfigError):
        ca.issue("nothing", client=False, server=False)


# --- rotation ---------------------------------------------------------------------------------


def test_server_certificate_rotation(
    ca: CA, other_ca: CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node_dir = tmp_path / "node"
    files = ca.authority.issue_node("127.0.0.1:1111", directory=node_dir)
    server_cfg = tls_config(files)
    trusts_old, trusts_new = trusting_only(ca.ca_file), trusting_only(other_ca.ca_file)
    staging = tmp_path / "staging"
    caplog.set_level(logging.INFO, logger="raftgrpc.tls")
    with serve(server_credentials(server_cfg)) as (target, _), dial(target, trusts_old) as kept:
        assert unary(kept) == b"echo:ping"
        with dial(target, trusts_new) as channel:
            assert rpc_error(lambda: unary(channel)).code() == grpc.StatusCode.UNAVAILABLE

        # Half-rotated: the new certificate is in place, its key not yet. Not loaded.
        new = other_ca.authority.issue_node("127.0.0.1:1111", directory=staging)
        shutil.copyfile(new.cert_file, files.cert_file)
        with dial(target, trusts_old) as channel:
            assert unary(channel) == b"echo:ping"
        assert any(getattr(r, "event", None) == "tls.reload_failed" for r in caplog.records)

        # Rotation complete: new connections get the new certificate.
        shutil.copyfile(new.key_file, files.key_file)
        with dial(target, trusts_new) as channel:
            assert unary(channel) == b"echo:ping"
        with dial(target, trusts_old) as channel:
            assert rpc_error(lambda: unary(channel)).code() == grpc.StatusCode.UNAVAILABLE
        assert any(getattr(r, "event", None) == "tls.reloaded" for r in caplog.records)
        # The connection made before the rotation keeps working.
        assert unary(kept) == b"echo:ping"


def test_a_file_stamp_sees_every_replacement_but_not_metadata(tmp_path: Path) -> None:
    """The change stamp the TLS reloader and the JWKS / token files share."""
    path = tmp_path / "node.crt"
    path.write_bytes(b"a" * 64)
    first = stamp(path)
    os.chmod(path, 0o600)
    assert stamp(path) == first  # metadata only: the same version
    with path.open("rb") as stream:
        assert stamp_open(stream) == first
    # Replaced atomically by a copy of the same size that kept the old mtime (cp -p).
    staged = tmp_path / "staged.crt"
    staged.write_bytes(b"b" * 64)
    os.utime(staged, ns=(first.mtime_ns, first.mtime_ns))
    os.replace(staged, path)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (first.size, first.mtime_ns)
    assert stamp(path) != first
    # Rewritten in place, same size: the mtime tells.
    before = stamp(path)
    path.write_bytes(b"c" * 64)
    os.utime(path, ns=(before.mtime_ns + 10**9, before.mtime_ns + 10**9))
    assert stamp(path) not in (first, before)


def test_static_server_credentials(ca: CA) -> None:
    files = ca.authority.issue_node("127.0.0.1:1111", directory=ca.directory / "node")
    server_cfg = tls_config(files, require_client_cert=True)
    client_cfg = tls_config(node_cert(ca, "127.0.0.1:2222"))
    with (
        serve(server_credentials(server_cfg, reload=False)) as (target, _),
        dial(target, channel_credentials(client_cfg)) as channel,
    ):
        assert unary(channel) == b"echo:ping"

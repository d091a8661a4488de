"""Small test utilities shared by the top-level tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BEAT: dict[str, Any] = {
    "type": "append_entries",
    "term": 1,
    "commit_index": 1,
    "prevLogIdx": 1,
    "prevLogTerm": 1,
    "entries": [],
}
"""A heartbeat as PySyncObj sends it (append_entries without entries)."""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def grpc_owned(thread: threading.Thread) -> bool:
    """Whether ``thread`` is gRPC's own, shared by the whole process rather than by a
    transport: its C-core threads (listed as threading._DummyThread once they call into
    Python: TLS reloads, call-credential callbacks) and grpc.aio's completion-queue poller,
    which gRPC starts at the first grpc.aio object of the process and keeps."""
    return isinstance(thread, threading._DummyThread) or thread.name.endswith("(_poll_wrapper)")


def thread_ids() -> set[int]:
    """The idents of this process's threads but grpc.aio's completion-queue poller (one per
    process, started by the first grpc.aio object and kept by gRPC)."""
    return {
        t.ident
        for t in threading.enumerate()
        if not t.name.endswith("(_poll_wrapper)") and t.ident is not None
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0 and release)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def auth_files(directory: Path) -> tuple[Any, Callable[[str], Any]]:
    """A fresh ES256 signing key and key set in ``directory`` (made with ``raftgrpc token
    keygen``): a TokenVerifier for audience and issuer "test", and a node token factory."""
    from raftgrpc._ops import cli
    from raftgrpc.interceptors import auth

    pem, jwks = directory / "signing.pem", directory / "jwks.json"
    argv = ["token", "keygen", "--alg", "ES256", "--kid", "k1"]
    assert cli.main([*argv, "--private-out", str(pem), "--jwks", str(jwks)]) == 0
    verifier = auth.TokenVerifier(auth.KeySet.from_file(jwks), audience="test", issuer="test")

    def tokens(node_id: str) -> Any:
        return auth.SigningTokenSource(
            pem.read_bytes(), "k1", "ES256", subject=node_id, audience="test", issuer="test"
        )

    return verifier, tokens

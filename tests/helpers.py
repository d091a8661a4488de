"""The test helpers of raftgrpc's own tests, in one place.

Ports, waits with a deadline, the KV store and the in-process cluster are raftgrpc.testing's
(users' tests get the same ones); what only these tests need is here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftgrpc.testing import KV, LocalCluster, free_port, free_ports, wait_until
from raftgrpc.testing.contract import _process_wide as grpc_poller

__all__ = [
    "BEAT",
    "KV",
    "LocalCluster",
    "auth_files",
    "free_port",
    "free_ports",
    "grpc_owned",
    "thread_ids",
    "wait_until",
]

BEAT: dict[str, Any] = {
    "type": "append_entries",
    "term": 1,
    "commit_index": 1,
    "prevLogIdx": 1,
    "prevLogTerm": 1,
    "entries": [],
}
"""A heartbeat as PySyncObj sends it (append_entries without entries)."""


def grpc_owned(thread: threading.Thread) -> bool:
    """Whether ``thread`` is gRPC's own, shared by the whole process rather than by a
    transport: its C-core threads (listed as threading._DummyThread once they call into
    Python: TLS reloads, call-credential callbacks) and grpc.aio's completion-queue poller,
    which gRPC starts at the first grpc.aio object of the process and keeps."""
    return isinstance(thread, threading._DummyThread) or grpc_poller(thread)


def thread_ids() -> set[int]:
    """The idents of this process's threads but grpc.aio's completion-queue poller (one per
    process, started by the first grpc.aio object and kept by gRPC)."""
    return {t.ident for t in threading.enumerate() if not grpc_poller(t) and t.ident is not None}


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

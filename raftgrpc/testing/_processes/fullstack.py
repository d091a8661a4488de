"""GrpcTransport with the full middleware, as node.py's ``grpc-full`` transport.

The layers a production cluster would run: structured logging, OpenTelemetry tracing (RPC
spans and raftgrpc's message spans at a 1% sample ratio, exported in batches to an exporter
that only counts), and JWT auth in enforce mode with ES256 node tokens bound to the node
identity, sent over gRPC's local (loopback-only) credentials. Each node also serves the admin
service (raftgrpc._ops.admin_service) to admin-role tokens.

The signing key and key set live in ``$RAFTGRPC_FULL_KEYS`` (default: a directory in the
temp dir); the first process to need them creates them under a file lock, so every node of
a cluster, and a test minting tokens for intruders, share them.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from raftgrpc import GrpcTransport, TransportBuilder
from raftgrpc._ops import cli
from raftgrpc.interceptors import auth

AUDIENCE = "raftgrpc-tests"
ISSUER = "raftgrpc-tests"
KID = "full-1"
SAMPLE_RATIO = 0.01


def key_dir() -> Path:
    """Where the shared signing key and key set are."""
    configured = os.environ.get("RAFTGRPC_FULL_KEYS")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"raftgrpc-full-{os.getuid()}"


def ensure_keys() -> Path:
    """Create the signing key and key set once, whoever asks first; returns the directory."""
    directory = key_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "jwks.json").exists():
            code = cli.main(
                [
                    "token",
                    "keygen",
                    "--alg",
                    "ES256",
                    "--kid",
                    KID,
                    "--private-out",
                    str(directory / "signing.pem"),
                    "--jwks",
                    str(directory / "jwks.json"),
                ]
            )
            if code != 0:
                raise RuntimeError(f"raftgrpc token keygen failed ({code})")
    return directory


def mint(subject: str, **overrides: Any) -> str:
    """A token for ``subject`` signed with the cluster's key: a node token, or an operator's
    with ``role="admin"``; ``overrides`` are SigningTokenSource's parameters."""
    directory = ensure_keys()
    params: dict[str, Any] = {
        "kid": KID,
        "algorithm": "ES256",
        "subject": subject,
        "audience": AUDIENCE,
        "issuer": ISSUER,
    }
    params.update(overrides)
    return auth.SigningTokenSource((directory / "signing.pem").read_bytes(), **params).token()


class CountingExporter(SpanExporter):
    """Drops spans after counting them: the cost of export stays out of the measurement."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def builder() -> TransportBuilder:
    """The full middleware configuration (the same for every node)."""
    directory = ensure_keys()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
    verifier = auth.TokenVerifier(
        auth.KeySet.from_file(directory / "jwks.json"), audience=AUDIENCE, issuer=ISSUER
    )
    signing_key = (directory / "signing.pem").read_bytes()

    def tokens(node_id: str) -> auth.TokenSource:
        return auth.SigningTokenSource(
            signing_key, KID, "ES256", subject=node_id, audience=AUDIENCE, issuer=ISSUER
        )

    return (
        TransportBuilder()
        .with_logging()
        .with_tracing(provider, sample_ratio=SAMPLE_RATIO)
        .with_jwt(verifier=verifier, tokens=tokens, allow_insecure_loopback=True)
        .with_admin()
        .on_close(provider.shutdown)
    )


def transport(syncObj: Any, selfNode: Any, otherNodes: Any) -> GrpcTransport:
    """node.py's transportClass for ``grpc-full``: the full middleware, and the admin service
    (raftgrpc.v1.Admin) for admin-role tokens (``mint("operator", role="admin")``)."""
    return builder().build()(syncObj, selfNode, otherNodes)

"""The public surface of raftgrpc, pinned: a name added to or removed from it is a decision
made in this file, not an accident of a refactor.

Public are the names in ``__all__`` of the modules in PUBLIC; every other module has a
leading underscore somewhere in its dotted name (or is generated code in raftgrpc.v1), and
examples use nothing else.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import raftgrpc

ROOT = Path(__file__).resolve().parent.parent

PUBLIC: dict[str, list[str]] = {
    "raftgrpc": [
        "AddressMap",
        "AuthError",
        "CliError",
        "CodecError",
        "ConfigError",
        "FrameError",
        "GrpcTransport",
        "GrpcUtility",
        "GrpcUtilityException",
        "HasListenTarget",
        "HasStats",
        "HostsServices",
        "Middleware",
        "MigrationConfig",
        "MigrationTransport",
        "NodeContext",
        "NodeService",
        "PeerUnreachable",
        "PortOffset",
        "RaftGrpcError",
        "Redials",
        "ReportsPeerErrors",
        "ServiceFactory",
        "ShutdownReport",
        "ShutsDownGracefully",
        "TlsConfig",
        "TracksResends",
        "TransportBuilder",
        "TransportConfig",
        "UnreachableKind",
        "admin_service",
        "fallback_unless_refused",
        "graceful_shutdown",
        "health_service",
    ],
    "raftgrpc.testing": [
        "KV",
        "PROTOCOL_VERSION",
        "SERVICE_NAME",
        "STREAM_METHOD",
        "CertFiles",
        "CertificateAuthority",
        "InMemoryTransport",
        "LocalCluster",
        "MemoryNetwork",
        "WaitTimeout",
        "addresses",
        "file_stem",
        "free_port",
        "free_ports",
        "put",
        "status",
        "wait_leader",
        "wait_replicated",
        "wait_until",
    ],
    "raftgrpc.testing.contract": [
        "STANDARD_KINDS",
        "Resources",
        "TransportContract",
        "TransportKind",
        "bindable",
        "listening_sockets",
    ],
    "raftgrpc.interceptors": [],
    "raftgrpc.interceptors.auth": [
        "ADMIN_ROLE",
        "ASYMMETRIC_ALGORITHMS",
        "DEFAULT_ALGORITHMS",
        "DEFAULT_EXEMPT_METHODS",
        "DEFAULT_METHOD_ROLES",
        "DEFAULT_ROLE",
        "HMAC_ALGORITHMS",
        "ROLE_CLAIM",
        "AuthError",
        "AuthMode",
        "Claims",
        "FileTokenSource",
        "KeySet",
        "SigningTokenSource",
        "StaticTokenSource",
        "TokenSource",
        "TokenVerifier",
        "aio_server_interceptor",
        "call_credentials",
        "client_interceptor",
        "current_claims",
        "required_role_for",
        "server_interceptor",
    ],
    "raftgrpc.interceptors.identity": [
        "aio_identity_interceptor",
        "default_match",
        "identity_interceptor",
        "peer_identities",
    ],
    "raftgrpc.interceptors.log": [
        "JsonFormatter",
        "aio_client_interceptor",
        "aio_server_interceptor",
        "client_interceptor",
        "server_interceptor",
    ],
    "raftgrpc.interceptors.retry": [
        "aio_server_interceptor",
        "channel_options",
        "server_interceptor",
        "service_config",
    ],
    "raftgrpc.interceptors.tracing": [
        "FrameTracer",
        "aio_client_interceptors",
        "aio_server_interceptor",
        "client_interceptor",
        "server_interceptor",
        "tracer_provider_from_env",
    ],
}


def _all_modules() -> list[str]:
    names = ["raftgrpc"]
    for info in pkgutil.walk_packages(raftgrpc.__path__, "raftgrpc."):
        if info.name != "raftgrpc.__main__":
            names.append(info.name)
    return names


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_each_public_module_exports_exactly_the_pinned_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(getattr(module, "__all__", [])) == sorted(PUBLIC[module_name])
    for name in PUBLIC[module_name]:
        value = getattr(module, name)  # every exported name exists
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module_name}.{name} has no docstring"


def test_every_other_module_is_private_or_generated() -> None:
    public = [
        name
        for name in _all_modules()
        if not _is_private(name) and not name.startswith("raftgrpc.v1")
    ]
    assert sorted(public) == sorted(PUBLIC)


def test_the_examples_use_only_the_public_api() -> None:
    used: list[str] = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("raftgrpc")
            ):
                used += [f"{path.name}: {node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                used += [
                    f"{path.name}: {a.name}" for a in node.names if a.name.startswith("raftgrpc")
                ]
    private = [u for u in used if _is_private(u.split(": ")[1])]
    assert used and not private, private

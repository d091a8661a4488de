"""Fixtures of the multi-process cluster tests: ``transport`` (tcp, grpc) and ``cluster``."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftgrpc.testing._processes.harness import Cluster

HERE = Path(__file__).resolve().parent

TRANSPORTS = ["tcp", "grpc"]


def grpc_unavailable() -> str | None:
    """Why ``raftgrpc.GrpcTransport`` cannot be imported, or None when it can. Only an
    ImportError counts: any other error in the package must fail the tests, not skip them."""
    try:
        from raftgrpc import GrpcTransport  # noqa: F401
    except ImportError as e:
        return f"raftgrpc.GrpcTransport is not importable: {e}"
    return None


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "grpc":
        reason = grpc_unavailable()
        if reason is not None:
            pytest.skip(reason)
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[Any]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def cluster(transport: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(transport, tmp_path)
    yield c
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed
    c.close(dump_logs=failed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow variants run only when asked for with -m (e.g. -m slow, -m "slow or not slow")."""
    if config.option.markexpr:
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture
def full_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A cluster on ``grpc-full`` (raftgrpc.testing._processes.fullstack), keys in ``tmp_path``."""
    from raftgrpc.testing._processes import fullstack

    monkeypatch.setenv("RAFTGRPC_FULL_KEYS", str(tmp_path / "keys"))
    fullstack.ensure_keys()
    c = Cluster("grpc-full", tmp_path)
    yield c
    rep = getattr(request.node, "rep_call", None)
    c.close(dump_logs=rep is None or rep.failed)

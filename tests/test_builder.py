"""TransportBuilder: chain order, and the middleware it gives every node."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from raftgrpc import ConfigError, TransportBuilder, TransportConfig
from raftgrpc.middleware import Middleware
from tests.host import Host, pair

pytestmark = pytest.mark.timeout(60)


class Recording(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records its name each time a call reaches it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.log.append(self.name)
        return continuation(details)


class RecordingClient(grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.lock = threading.Lock()

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        with self.lock:
            self.log.append(self.name)
        return continuation(details, requests)


def test_first_added_layer_is_outermost_on_both_sides(hosts: list[Host]) -> None:
    server_log: list[str] = []
    client_log: list[str] = []
    builder = (
        TransportBuilder()
        .with_server_interceptor(Recording("outer", server_log))
        .with_client_interceptor(RecordingClient("outer", client_log))
        .with_server_interceptor(Recording("inner", server_log))
        .with_client_interceptor(RecordingClient("inner", client_log))
    )
    assert builder.layers == ["user", "user", "user", "user"]
    pair(hosts, TransportConfig(), factory=builder.build())
    # Two streams (one per direction), each passing both layers, outer first.
    assert server_log[:4] == ["outer", "inner", "outer", "inner"]
    assert client_log[:4] == ["outer", "inner", "outer", "inner"]


def test_the_factory_gives_each_node_its_own_middleware_from_one_configuration(
    hosts: list[Host],
) -> None:
    seen: list[str] = []

    def tokens(node_id: str) -> Any:
        seen.append(node_id)
        return _Static("t")

    builder = TransportBuilder().with_jwt(tokens=tokens, allow_insecure_loopback=True)
    a, _b, a_addr, b_addr = pair(hosts, TransportConfig(), factory=builder.build())
    assert sorted(set(seen)) == sorted({a_addr, b_addr})
    assert a.transport.__class__.__name__ == "GrpcTransport"


class _Static:
    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


def test_tokens_without_a_secure_channel_are_refused_at_build_time() -> None:
    builder = TransportBuilder().with_jwt(tokens=lambda node_id: _Static("t"))
    with pytest.raises(ConfigError, match="secure channels"):
        builder.middleware("127.0.0.1:1")
    with pytest.raises(ConfigError, match="channel credentials"):
        Middleware(call_credentials=lambda node_id: grpc.access_token_call_credentials("t"))

"""raftgrpc.interceptors.retry: the service config, and gRPC retrying with it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from raftgrpc._errors import ConfigError
from raftgrpc.interceptors import retry
from tests.rawservice import Running

pytestmark = pytest.mark.timeout(30)

SERVICE = "raftgrpc.test.Admin"


class Flaky:
    """Fails the first ``failures`` attempts of each request with ``code``, counting attempts."""

    def __init__(self) -> None:
        self.attempts: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def handle(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        code_name, failures = request.decode().split(":")
        with self._lock:
            attempt = self.attempts[request] = self.attempts.get(request, 0) + 1
        if attempt <= int(failures):
            context.abort(grpc.StatusCode[code_name], f"attempt {attempt} fails")
        return b"ok after %d" % attempt


@pytest.fixture
def flaky() -> Iterator[tuple[Running, Flaky]]:
    service = Flaky()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Apply": grpc.unary_unary_rpc_method_handler(service.handle)}
    )
    running = Running([], extra=[handler])
    yield running, service
    running.close()


def _options(**policy: Any) -> list[tuple[str, Any]]:
    return retry.channel_options([(SERVICE, "Apply")], initial_backoff_s=0.01, **policy)


def test_unavailable_is_retried_until_success(flaky: Any) -> None:
    running, service = flaky
    channel = running.channel(options=_options(max_attempts=4))
    request = b"UNAVAILABLE:2"
    assert channel.unary_unary(f"/{SERVICE}/Apply")(request, timeout=10) == b"ok after 3"
    assert service.attempts[request] == 3


def test_attempts_are_bounded(flaky: Any) -> None:
    running, service = flaky
    channel = running.channel(options=_options(max_attempts=2))
    request = b"UNAVAILABLE:3"
    with pytest.raises(grpc.RpcError) as failed:
        channel.unary_unary(f"/{SERVICE}/Apply")(request, timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert service.attempts[request] == 2


def test_non_retryable_code_is_not_retried(flaky: Any) -> None:
    running, service = flaky
    channel = running.channel(options=_options(max_attempts=4))
    request = b"INTERNAL:2"
    with pytest.raises(grpc.RpcError) as failed:
        channel.unary_unary(f"/{SERVICE}/Apply")(request, timeout=10)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert service.attempts[request] == 1


def test_other_methods_are_not_retried(flaky: Any) -> None:
    running, service = flaky
    options = retry.channel_options([(SERVICE, "Other")], initial_backoff_s=0.01)
    channel = running.channel(options=options)
    request = b"UNAVAILABLE:1"
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(f"/{SERVICE}/Apply")(request, timeout=10)
    assert service.attempts[request] == 1


def test_service_config_json() -> None:
    config = json.loads(
        retry.service_config(
            [("pkg.Admin", None), ("grpc.health.v1.Health", "Check")],
            max_attempts=5,
            initial_backoff_s=0.25,
            max_backoff_s=3,
            backoff_multiplier=1.5,
            retryable_codes=("unavailable", grpc.StatusCode.RESOURCE_EXHAUSTED, "UNAVAILABLE"),
            timeout_s=2.5,
        )
    )
    assert config == {
        "methodConfig": [
            {
                "name": [
                    {"service": "pkg.Admin"},
                    {"service": "grpc.health.v1.Health", "method": "Check"},
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.25s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 1.5,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
                "timeout": "2.5s",
            }
        ]
    }
    options = dict(retry.channel_options([("pkg.Admin", None)]))
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"])["methodConfig"][0]["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }


@pytest.mark.parametrize(
    ("methods", "policy", "match"),
    [
        ([("pkg.A", None)], {"max_attempts": 1}, "2..5"),
        ([("pkg.A", None)], {"max_attempts": 6}, "2..5"),
        ([("pkg.A", None)], {"max_attempts": 3.0}, "integer"),
        ([("pkg.A", None)], {"initial_backoff_s": 0}, "initial_backoff_s"),
        ([("pkg.A", None)], {"max_backoff_s": 0.05}, "max_backoff_s"),
        ([("pkg.A", None)], {"backoff_multiplier": 0}, "backoff_multiplier"),
        ([("pkg.A", None)], {"timeout_s": -1}, "timeout_s"),
        ([("pkg.A", None)], {"retryable_codes": ("OK",)}, "OK"),
        ([("pkg.A", None)], {"retryable_codes": ("NOPE",)}, "NOPE"),
        ([("pkg.A", None)], {"retryable_codes": ()}, "at least one"),
        ([], {}, "at least one"),
        ([("", None)], {}, "service"),
        ([("/pkg.A", "B")], {}, "service"),
        ([("pkg.A", "x/y")], {}, "method"),
        ([("raftgrpc.v1.RaftTransport", "Stream")], {}, "never retried"),
        ([("raftgrpc.v1.RaftTransport", None)], {}, "never retried"),
    ],
)
def test_invalid_policies_are_refused(
    methods: list[tuple[str, str | None]], policy: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        retry.service_config(methods, **policy)


def test_the_server_interceptor_logs_each_retried_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Flaky()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Apply": grpc.unary_unary_rpc_method_handler(service.handle)}
    )
    running = Running([retry.server_interceptor()], extra=[handler])
    try:
        channel = running.channel(options=_options(max_attempts=4))
        with caplog.at_level(logging.INFO, logger="raftgrpc.retry"):
            reply = channel.unary_unary(f"/{SERVICE}/Apply")(b"UNAVAILABLE:2", timeout=10)
    finally:
        running.close()
    assert reply == b"ok after 3"
    retried = [r for r in caplog.records if getattr(r, "event", None) == "rpc.retried"]
    # The first attempt is not a retry; the second and third are.
    assert [r.attempt for r in retried] == [2, 3]  # type: ignore[attr-defined]
    assert {r.method for r in retried} == {f"/{SERVICE}/Apply"}  # type: ignore[attr-defined]

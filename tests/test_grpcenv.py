"""gRPC settings made at ``import raftgrpc``: the EventEngine flags must really take effect."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

# A connection on a fresh process; gRPC's "tcp" tracer names the source file of the
# endpoint that carries it: tcp_posix.cc (the poll engine), or files under event_engine/.
PROGRAM = """
import asyncio, os, sys
if sys.argv[1] == "grpc-first":
    import grpc
import raftgrpc
import grpc
import grpc.aio

async def connect():  # the API the transport uses
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
    await server.stop(None)

asyncio.run(connect())
print(raftgrpc._grpcenv.event_engine())
print(os.environ.get("GRPC_EXPERIMENTS", "unset"))
"""


def run(mode: str, **env: str) -> tuple[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GRPC_EXPERIMENTS",)}
    environ.pop("RAFTGRPC_EVENT_ENGINE", None)
    environ.update(GRPC_TRACE="tcp", GRPC_VERBOSITY="debug", **env)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    state, environment = done.stdout.strip().splitlines()
    assert environment == env.get("GRPC_EXPERIMENTS", "unset")  # children inherit nothing
    return state, done.stderr


def test_import_raftgrpc_turns_the_event_engine_off() -> None:
    state, trace = run("raftgrpc-first")
    assert state == "off"
    assert "tcp_posix.cc" in trace  # the poll engine's endpoints carry the connection


@pytest.mark.parametrize(
    ("mode", "env", "said"),
    [
        ("raftgrpc-first", {"RAFTGRPC_EVENT_ENGINE": "on"}, "on (RAFTGRPC_EVENT_ENGINE=on)"),
        ("grpc-first", {}, "on (grpc was imported before raftgrpc)"),
    ],
)
def test_the_event_engine_stays_on_when_asked_or_when_it_is_too_late(
    mode: str, env: dict[str, str], said: str
) -> None:
    state, trace = run(mode, **env)
    assert state == said
    assert "event_engine/posix_engine" in trace  # the control: EventEngine's endpoints
    assert "tcp_posix.cc" not in trace


def test_an_explicit_grpc_experiments_setting_wins() -> None:
    state, _ = run("raftgrpc-first", GRPC_EXPERIMENTS="-event_engine_client")
    assert state == "as GRPC_EXPERIMENTS='-event_engine_client' says"

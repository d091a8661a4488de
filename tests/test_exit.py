"""A program that ends without destroy() exits, as one on TCPTransport does (issue 12).

Each case runs a program in a fresh process: it starts a 2-node cluster (autoTick), commits
a value on both nodes, prints ``committed`` and returns from its main thread without calling
``destroy()``. PySyncObj's tick threads stop when the main thread has ended; nothing of
raftgrpc may keep the interpreter waiting after that (before the I/O ran on the tick
thread, grpcio's server thread pool held every stream and the process never exited).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

PROGRAM = """
import json, os, sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated
from raftgrpc.testing import free_ports
kind = sys.argv[1]
ports = free_ports(4)
addrs = [f"127.0.0.1:{{p}}" for p in ports[:2]]
# MigrationTransport: its gRPC side on other ports than the Raft ids (TCPTransport's).
os.environ["RAFTGRPC_ADDRESS_MAP"] = json.dumps(
    {{a: f"127.0.0.1:{{p}}" for a, p in zip(addrs, ports[2:])}}
)
if kind == "tcp":
    from pysyncobj.transport import TCPTransport as transport
elif kind == "grpc":
    from raftgrpc import GrpcTransport as transport
elif kind == "migration":
    from raftgrpc.testing._processes.migrationstack import migration as transport
else:
    from raftgrpc.testing._processes.fullstack import transport


class Value(SyncObj):
    def __init__(self, me, others):
        super().__init__(me, others, SyncObjConf(), transportClass=transport)
        self.value = None

    @replicated
    def set(self, value):
        self.value = value


nodes = [Value(a, [b for b in addrs if b != a]) for a in addrs]
deadline = time.monotonic() + 30
while not any(n._isLeader() for n in nodes):
    assert time.monotonic() < deadline, "no leader"
    time.sleep(0.01)
leader = next(n for n in nodes if n._isLeader())
leader.set(42, sync=True, timeout=10)
while not all(n.value == 42 for n in nodes):
    assert time.monotonic() < deadline, "not committed on every node"
    time.sleep(0.01)
print("committed", flush=True)
"""


@pytest.mark.parametrize("kind", ["tcp", "grpc", "migration", "grpc-full"])
def test_a_program_that_never_calls_destroy_exits(kind: str, tmp_path: Path) -> None:
    program = tmp_path / "never_destroys.py"
    program.write_text(PROGRAM.format())
    env = dict(os.environ, RAFTGRPC_FULL_KEYS=str(tmp_path / "keys"))
    proc = subprocess.Popen(
        [sys.executable, str(program), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the commit (or the program's end)
            if line.strip() == "committed":
                break
        else:
            pytest.fail(f"{kind}: nothing committed: {proc.communicate(timeout=30)[1][-3000:]}")
        committed_at = time.monotonic()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{kind}: the process did not exit within 10 s after its main returned")
        exited_after = time.monotonic() - committed_at
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
    # PySyncObj's tick thread notices the end of the main thread within autoTickPeriod.
    assert exited_after < 3.0, f"{kind}: exited {exited_after:.2f} s after main returned"

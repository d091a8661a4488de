"""The examples run end to end (their short default mode) and report success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("local_cluster.py", "all three nodes hold the same data"),
        ("traced_cluster.py", "raftgrpc spans cross nodes: yes"),
        ("secure_cluster.py", "node 1's credentials claiming node 2     -> PERMISSION_DENIED"),
        ("migration.py", "migration complete: TCP -> Migration -> gRPC"),
    ],
)
def test_example_runs_and_succeeds(script: str, expected: str, tmp_path: Path) -> None:
    args = [sys.executable, str(EXAMPLES / script)]
    if script != "local_cluster.py":
        args += ["--workdir", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert expected in done.stdout, output[-4000:]
    assert done.stdout.rstrip().endswith("OK") or script == "local_cluster.py", output[-4000:]

"""The committed generated code in raftgrpc/v1 must match what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "proto").rglob("*.proto"))
GENERATED = tuple(
    f"{Path(proto).stem}{suffix}"
    for proto in PROTOS
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *PROTOS,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stdout}\n{result.stderr}"
    return out / "raftgrpc" / "v1"


@pytest.mark.parametrize("name", GENERATED)
def test_generated_code_is_up_to_date(regenerated: Path, name: str) -> None:
    committed = REPO_ROOT / "raftgrpc" / "v1" / name
    fresh = regenerated / name
    assert fresh.is_file(), f"protoc did not produce {name}"
    assert committed.is_file(), f"raftgrpc/v1/{name} is missing: run `make proto`"
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"raftgrpc/v1/{name} is out of date with proto/ (or was edited by hand): "
        "run `make proto` and commit the result"
    )

"""The ``raftgrpc token`` command line: keygen -> mint -> verify, in a temporary directory."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from raftgrpc._ops.cli import build_parser, main
from raftgrpc.interceptors.auth import FileTokenSource, KeySet, TokenVerifier

pytestmark = pytest.mark.timeout(20)

AUD = "raft-test"
ISS = "test-ops"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def keygen(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kid: str, alg: str = "ES256"
) -> Path:
    private = tmp_path / f"{kid}.pem"
    code, _, err = run(
        capsys,
        "token",
        "keygen",
        "--alg",
        alg,
        "--kid",
        kid,
        "--private-out",
        str(private),
        "--jwks",
        str(tmp_path / "jwks.json"),
    )
    assert code == 0, err
    return private


def mint(
    capsys: pytest.CaptureFixture[str], key: Path, kid: str, alg: str = "ES256", *extra: str
) -> str:
    code, out, err = run(
        capsys,
        "token",
        "mint",
        "--key",
        str(key),
        "--kid",
        kid,
        "--alg",
        alg,
        "--sub",
        "127.0.0.1:4321",
        "--aud",
        AUD,
        "--iss",
        ISS,
        *extra,
    )
    assert code == 0, err
    return out.strip()


def verify(capsys: pytest.CaptureFixture[str], jwks: Path, token: str, aud: str = AUD) -> int:
    code, _, _ = run(
        capsys, "token", "verify", "--jwks", str(jwks), "--aud", aud, "--iss", ISS, token
    )
    return code


def test_keygen_mint_verify_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    private = keygen(capsys, tmp_path, "k1")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    document = json.loads(jwks.read_text())
    [public] = document["keys"]
    assert (public["kid"], public["alg"], public["use"], public["kty"]) == (
        "k1",
        "ES256",
        "sig",
        "EC",
    )
    assert "d" not in public  # public half only

    token = mint(capsys, private, "k1", "ES256", "--ttl", "600", "--role", "admin")
    assert verify(capsys, jwks, token) == 0
    assert verify(capsys, jwks, token, aud="someone-else") == 1
    assert verify(capsys, jwks, token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")) == 1

    claims = TokenVerifier(KeySet.from_file(jwks), AUD, ISS).verify(token)
    assert (claims.subject, claims.role, claims.key_id) == ("127.0.0.1:4321", "admin", "k1")
    assert claims.expires_at - claims.issued_at == 600


def test_verify_prints_claims_and_reasons(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = keygen(capsys, tmp_path, "k1")
    token = mint(capsys, private, "k1")
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))  # TOKEN "-" reads stdin
    jwks = str(tmp_path / "jwks.json")
    code, out, _ = run(capsys, "token", "verify", "--jwks", jwks, "--aud", AUD, "--iss", ISS, "-")
    assert code == 0
    result = json.loads(out)
    assert result["verified"] is True
    assert (result["subject"], result["role"]) == ("127.0.0.1:4321", "node")

    code, out, err = run(
        capsys, "token", "verify", "--jwks", jwks, "--aud", AUD, "--iss", "x", token
    )
    assert code == 1
    assert "wrong issuer" in err
    assert token not in out + err


def test_jwks_accumulates_keys_for_rotation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    old = keygen(capsys, tmp_path, "2024-old", "ES256")
    new = keygen(capsys, tmp_path, "2025-new", "EdDSA")
    rsa = keygen(capsys, tmp_path, "rsa", "RS256")
    kids = [k["kid"] for k in json.loads(jwks.read_text())["keys"]]
    assert kids == ["2024-old", "2025-new", "rsa"]
    assert KeySet.from_file(jwks).key_ids() == {"2024-old", "2025-new", "rsa"}

    assert verify(capsys, jwks, mint(capsys, old, "2024-old", "ES256")) == 0
    assert verify(capsys, jwks, mint(capsys, new, "2025-new", "EdDSA")) == 0
    assert verify(capsys, jwks, mint(capsys, rsa, "rsa", "RS256")) == 0
    # A token signed by one key but naming another's kid does not verify.
    assert verify(capsys, jwks, mint(capsys, old, "2025-new", "ES256")) == 1


def test_keygen_refuses_duplicates_and_overwrites(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private = keygen(capsys, tmp_path, "k1")
    before = private.read_bytes()
    jwks = tmp_path / "jwks.json"
    code, _, err = run(
        capsys,
        "token",
        "keygen",
        "--kid",
        "k1",
        "--private-out",
        str(tmp_path / "other.pem"),
        "--jwks",
        str(jwks),
    )
    assert code == 2 and "already has a key with kid 'k1'" in err
    assert not (tmp_path / "other.pem").exists()
    code, _, err = run(
        capsys, "token", "keygen", "--kid", "k9", "--private-out", str(private), "--jwks", str(jwks)
    )
    assert code == 2 and "refusing to overwrite" in err
    assert private.read_bytes() == before
    assert len(json.loads(jwks.read_text())["keys"]) == 1


def test_mint_out_writes_a_private_token_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private = keygen(capsys, tmp_path, "k1")
    out = tmp_path / "node.token"
    assert mint(capsys, private, "k1", "ES256", "--out", str(out)).startswith("wrote token")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = FileTokenSource(out).token()
    assert verify(capsys, tmp_path / "jwks.json", token) == 0


def test_inspect_is_labelled_unverified(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    private = keygen(capsys, tmp_path, "k1")
    token = mint(capsys, private, "k1")
    code, out, _ = run(capsys, "token", "inspect", token)
    assert code == 0
    shown = json.loads(out)
    assert shown["verified"] is False and "UNVERIFIED" in shown
    assert shown["header"] == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert shown["claims"]["sub"] == "127.0.0.1:4321"
    assert shown["claims"]["raftgrpc_role"] == "node"
    assert set(shown["times_utc"]) == {"iat", "exp"}
    assert run(capsys, "token", "inspect", "garbage")[0] == 1


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["token"])
    capsys.readouterr()
    code, _, err = run(
        capsys,
        "token",
        "mint",
        "--key",
        str(tmp_path / "missing.pem"),
        "--kid",
        "k",
        "--sub",
        "n",
        "--aud",
        AUD,
        "--iss",
        ISS,
    )
    assert code == 2 and "missing.pem" in err
    assert "token" in build_parser().format_help()

"""The ``raftgrpc`` command line.

``raftgrpc token ...`` manages JWT authentication (:mod:`raftgrpc.interceptors.auth`):

``keygen``   make a signing key pair: the private key PEM (mode 0600) and its public JWK,
             added to a JWKS file that the servers verify with (existing keys are kept:
             that is how keys are rotated)
``mint``     sign a token for a node (or an operator, ``--role admin``)
``inspect``  print a token's header and claims WITHOUT verifying them
``verify``   verify a token against a JWKS file (exit status 0 valid, 1 invalid)

Every command that takes a TOKEN also reads it from standard input when TOKEN is ``-``
(command-line arguments are visible to other local users in the process list).

``raftgrpc admin ...`` operates a cluster through a node's admin service
(:mod:`raftgrpc._ops.admin_service`), like PySyncObj's ``syncobj_admin``: ``status`` (a table, or
``--json``), ``add``, ``remove``, ``transfer`` and ``set-version``, with an admin-role token
(``--token-file``), TLS (``--tls-ca``, ``--tls-cert``/``--tls-key``) or
``--insecure-loopback``. Exit codes: 0 done, 1 refused or failed, 2 a usage error.

The parser is a dispatcher: each command group is added by one ``_add_*_commands``
function in :data:`COMMAND_GROUPS`, and each command sets ``func`` (``args -> exit code``).
Exit codes: 0 success, 1 a token did not verify (or an admin command was refused or failed),
2 a usage or input error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raftgrpc._errors import CliError

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

_KEYGEN_ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
_MINT_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "EdDSA")


# -- files ---------------------------------------------------------------------------------


def _write_new_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb", closefd=False) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` (a reader sees the old or the new file, never half)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_token(value: str) -> str:
    token = sys.stdin.read() if value == "-" else value
    return token.strip()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _utc(timestamp: Any) -> str | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


# -- token commands ------------------------------------------------------------------------


def _generate_key(alg: str, rsa_bits: int) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg in ("RS256", "PS256"):
        if rsa_bits < 2048:
            raise CliError("--rsa-bits must be at least 2048")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise CliError(f"unsupported algorithm {alg}")


def _cmd_keygen(args: argparse.Namespace) -> int:
    import jwt.algorithms
    from cryptography.hazmat.primitives import serialization

    from raftgrpc.interceptors.auth import KeySet

    private_out = Path(args.private_out)
    if private_out.exists():
        raise CliError(f"{private_out} exists; refusing to overwrite a key")
    jwks_path = Path(args.jwks) if args.jwks else None
    document: dict[str, Any] = {"keys": []}
    mode = 0o644
    if jwks_path is not None and jwks_path.exists():
        try:
            document = json.loads(jwks_path.read_text(encoding="utf-8"))
        except ValueError:
            raise CliError(f"{jwks_path} is not valid JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise CliError(f"{jwks_path} is not a JWKS (an object with a 'keys' list)")
        if any(isinstance(k, dict) and k.get("kid") == args.kid for k in document["keys"]):
            raise CliError(f"{jwks_path} already has a key with kid {args.kid!r}")
        mode = jwks_path.stat().st_mode & 0o777

    key = _generate_key(args.alg, args.rsa_bits)
    algorithm = jwt.algorithms.get_default_algorithms()[args.alg]
    public_jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    public_jwk.update({"kid": args.kid, "alg": args.alg, "use": "sig"})
    document["keys"].append(public_jwk)
    KeySet.from_jwks(document)  # what the servers will load must load

    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _write_new_secret(private_out, pem)
    print(f"wrote private key {private_out} (mode 0600, {args.alg}, kid {args.kid})")
    if jwks_path is not None:
        _replace_file(jwks_path, (_json(document) + "\n").encode(), mode)
        count = len(document["keys"])
        print(f"added public key {args.kid!r} to {jwks_path}; it holds {count} key(s)")
    else:
        print(_json(public_jwk))
    return 0


def _cmd_mint(args: argparse.Namespace) -> int:
    from raftgrpc.interceptors.auth import SigningTokenSource

    source = SigningTokenSource(
        args.key,
        kid=args.kid,
        algorithm=args.alg,
        subject=args.sub,
        audience=args.aud,
        issuer=args.iss,
        ttl_s=args.ttl,
        role=args.role,
    )
    token = source.mint()
    if args.out:
        _replace_file(Path(args.out), (token + "\n").encode("ascii"), 0o600)
        print(f"wrote token for {args.sub!r} (role {args.role}, ttl {args.ttl:g} s) to {args.out}")
    else:
        print(token)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import jwt

    token = _read_token(args.token)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        print("raftgrpc: not a readable JWT", file=sys.stderr)
        return 1
    times = {
        name: _utc(claims.get(name)) for name in ("iat", "nbf", "exp") if _utc(claims.get(name))
    }
    print(
        _json(
            {
                "UNVERIFIED": "decoded without checking signature, audience, issuer or expiry",
                "verified": False,
                "header": header,
                "claims": claims,
                "times_utc": times,
            }
        )
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from raftgrpc.interceptors.auth import AuthError, KeySet, TokenVerifier

    verifier = TokenVerifier(
        KeySet.from_file(args.jwks),
        audience=args.aud,
        issuer=args.iss,
        leeway_s=args.leeway,
        algorithms=args.alg or None,
    )
    try:
        claims = verifier.verify(_read_token(args.token))
    except AuthError as error:
        print(f"raftgrpc: invalid token: {error.reason}", file=sys.stderr)
        return 1
    print(
        _json(
            {
                "verified": True,
                "subject": claims.subject,
                "role": claims.role,
                "key_id": claims.key_id,
                "expires_at_utc": _utc(claims.expires_at),
                "claims": dict(claims.raw),
            }
        )
    )
    return 0


def _add_token_commands(groups: Any) -> None:
    token = groups.add_parser(
        "token",
        help="JWT authentication: keys and tokens",
        description="Make signing keys, mint, inspect and verify node tokens.",
    )
    commands = token.add_subparsers(dest="token_command", metavar="TOKEN_COMMAND", required=True)

    keygen = commands.add_parser(
        "keygen",
        help="make a signing key; add its public key to a JWKS file",
        description="Write a new private key (PEM, mode 0600) and add its public JWK to the "
        "JWKS file the servers verify with; existing keys are kept (key rotation).",
    )
    keygen.add_argument("--alg", choices=_KEYGEN_ALGORITHMS, default="ES256")
    keygen.add_argument("--kid", required=True, help="key id (named in every token's header)")
    keygen.add_argument("--private-out", required=True, metavar="PATH")
    keygen.add_argument("--jwks", metavar="PATH", help="JWKS file to add the public key to")
    keygen.add_argument("--rsa-bits", type=int, default=3072, help="RSA key size (RS/PS)")
    keygen.set_defaults(func=_cmd_keygen)

    mint = commands.add_parser("mint", help="sign a token", description="Sign a token.")
    mint.add_argument("--key", required=True, metavar="PATH", help="private key PEM")
    mint.add_argument("--kid", required=True)
    mint.add_argument("--alg", choices=_MINT_ALGORITHMS, default="ES256")
    mint.add_argument("--sub", required=True, metavar="NODE_ID", help="subject (a node id)")
    mint.add_argument("--aud", required=True)
    mint.add_argument("--iss", required=True)
    mint.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS")
    mint.add_argument("--role", choices=("node", "admin"), default="node")
    mint.add_argument("--out", metavar="PATH", help="write the token here (mode 0600)")
    mint.set_defaults(func=_cmd_mint)

    inspect = commands.add_parser(
        "inspect",
        help="print a token's header and claims, UNVERIFIED",
        description="Decode a token WITHOUT verifying it and print its header and claims.",
    )
    inspect.add_argument("token", metavar="TOKEN", help="the token, or - to read stdin")
    inspect.set_defaults(func=_cmd_inspect)

    verify = commands.add_parser(
        "verify",
        help="verify a token (exit 0 valid, 1 invalid)",
        description="Verify a token against a JWKS file, audience and issuer.",
    )
    verify.add_argument("--jwks", required=True, metavar="PATH")
    verify.add_argument("--aud", required=True)
    verify.add_argument("--iss", required=True)
    verify.add_argument("--leeway", type=float, default=30.0, metavar="SECONDS")
    verify.add_argument(
        "--alg", action="append", metavar="ALG", help="accepted algorithm (repeatable)"
    )
    verify.add_argument("token", metavar="TOKEN", help="the token, or - to read stdin")
    verify.set_defaults(func=_cmd_verify)


# -- admin commands ------------------------------------------------------------------------


def _admin_utility(args: argparse.Namespace) -> Any:
    """The GrpcUtility the admin options describe."""
    import grpc

    from raftgrpc._ops.admin_client import GrpcUtility
    from raftgrpc.interceptors.auth import FileTokenSource, StaticTokenSource

    tokens: Any = None
    if args.token is not None and args.token_file is not None:
        raise CliError("give --token or --token-file, not both")
    if args.token is not None:
        tokens = StaticTokenSource(_read_token(args.token))
    elif args.token_file is not None:
        tokens = FileTokenSource(args.token_file)
    tls: Any = None
    credentials: Any = None
    options: list[tuple[str, Any]] = []
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            raise CliError("a client certificate needs --tls-cert, --tls-key and --tls-ca")
        from raftgrpc._security.tls import TlsConfig

        tls = TlsConfig(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            ca_file=args.tls_ca,
            server_name_override=args.tls_server_name,
        )
    elif args.tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(args.tls_ca).read_bytes())
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    elif args.tls_server_name:
        raise CliError("--tls-server-name needs --tls-ca")
    if args.insecure_loopback and (tls is not None or credentials is not None):
        raise CliError("--insecure-loopback and --tls-* exclude each other")
    if tokens is not None and tls is None and credentials is None and not args.insecure_loopback:
        raise CliError(
            "tokens are only sent on secure channels: give --tls-ca (and --tls-cert/--tls-key "
            "for mTLS), or --insecure-loopback for a node on this host"
        )
    if not args.timeout > 0:
        raise CliError("--timeout must be positive")
    return GrpcUtility(
        timeout=args.timeout,
        tls=tls,
        channel_credentials=credentials,
        tokens=tokens,
        insecure_loopback=args.insecure_loopback,
        options=options,
    )


def _checked_address(value: str, what: str, allow_empty: bool = False) -> str:
    from raftgrpc._errors import ConfigError
    from raftgrpc._ops.admin_service import check_node_address

    try:
        return check_node_address(value, allow_empty=allow_empty)
    except ConfigError:
        raise CliError(f"{what}: expected HOST:PORT, got {value!r}") from None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _status_json(response: Any) -> dict[str, Any]:
    from raftgrpc._ops.admin_service import raft_state_name

    match, next_idx = dict(response.match_idx), dict(response.next_node_idx)
    return {
        "node": response.self_node,
        "state": raft_state_name(response.state),
        "leader": response.leader or None,
        "has_quorum": response.has_quorum,
        "raft_term": response.raft_term,
        "log_len": response.log_len,
        "commit_idx": response.commit_idx,
        "last_applied": response.last_applied,
        "leader_commit_idx": (
            response.leader_commit_idx if response.HasField("leader_commit_idx") else None
        ),
        "partners": [
            {
                "node": p.node_id,
                "connected": p.connected,
                "match_idx": match.get(p.node_id),
                "next_idx": next_idx.get(p.node_id),
            }
            for p in sorted(response.partners, key=lambda p: p.node_id)
        ],
        "readonly_nodes": [
            {"node": r.node_id, "connected": r.connected}
            for r in sorted(response.readonly_nodes, key=lambda r: r.node_id)
        ],
        "uptime_s": response.uptime_s,
        "self_code_version": response.self_code_version,
        "enabled_code_version": response.enabled_code_version,
        "pysyncobj_version": response.version,
        "extra": dict(sorted(response.extra.items())),
    }


def _status_table(status: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    node = [
        ["NODE", "STATE", "LEADER", "TERM", "COMMIT", "APPLIED", "LOG", "QUORUM", "UPTIME"],
        [
            text(status["node"] or "(read-only)"),
            status["state"],
            text(status["leader"]),
            text(status["raft_term"]),
            text(status["commit_idx"]),
            text(status["last_applied"]),
            text(status["log_len"]),
            text(status["has_quorum"]),
            f"{status['uptime_s']}s",
        ],
    ]
    parts = [_table(node)]
    if status["partners"]:
        partners = [["PARTNER", "CONNECTED", "MATCH", "NEXT"]]
        partners += [
            [p["node"], text(p["connected"]), text(p["match_idx"]), text(p["next_idx"])]
            for p in status["partners"]
        ]
        parts.append(_table(partners))
    if status["readonly_nodes"]:
        readonly = [["READ-ONLY", "CONNECTED"]]
        readonly += [[r["node"], text(r["connected"])] for r in status["readonly_nodes"]]
        parts.append(_table(readonly))
    parts.append(
        f"code version {status['self_code_version']} (enabled "
        f"{status['enabled_code_version']}), pysyncobj {status['pysyncobj_version'] or '?'}"
    )
    return "\n\n".join(parts)


def _admin_failed(args: argparse.Namespace, what: str, exc: Any) -> int:
    if args.json:
        print(
            _json(
                {
                    "ok": False,
                    "command": args.admin_command,
                    "node": args.node,
                    "code": exc.code.name if exc.code is not None else None,
                    "fail_reason": exc.fail_reason,
                    "leader": exc.leader or None,
                    "message": exc.details or str(exc),
                }
            )
        )
    else:
        print(f"raftgrpc: {what} failed: {exc}", file=sys.stderr)
    return 1


def _cmd_admin_status(args: argparse.Namespace) -> int:
    from raftgrpc._ops.admin_client import GrpcUtilityException

    node = _checked_address(args.node, "--node")
    with _admin_utility(args) as utility:
        try:
            response = utility.status(node)
        except GrpcUtilityException as exc:
            return _admin_failed(args, f"status of {node}", exc)
    status = _status_json(response)
    print(_json(status) if args.json else _status_table(status))
    return 0


def _cmd_admin_change(args: argparse.Namespace) -> int:
    from raftgrpc._ops.admin_client import GrpcUtilityException

    node = _checked_address(args.node, "--node")
    command = args.admin_command
    target: Any = None
    if command in ("add", "remove"):
        target = _checked_address(args.target, command.upper())
        message = [command, target]
        done = f"{'added' if command == 'add' else 'removed'} {target} (via {node})"
    elif command == "transfer":
        target = _checked_address(args.target or "", "TARGET", allow_empty=True)
        message = ["transfer", target]
        done = (
            f"leadership transfer from {node} to {target or 'the most caught-up follower'} "
            "started: run `raftgrpc admin status` to see the new leader"
        )
    else:
        if args.version < 0:
            raise CliError("VERSION must be >= 0")
        target = args.version
        message = ["set_version", args.version]
        done = f"code version {args.version} enabled (via {node})"
    with _admin_utility(args) as utility:
        try:
            result = utility.run(node, message)
        except GrpcUtilityException as exc:
            return _admin_failed(args, f"{command} via {node}", exc)
    if args.json:
        print(
            _json(
                {"ok": True, "command": command, "node": node, "target": target, "result": result}
            )
        )
    else:
        print(done)
    return 0


def _add_admin_commands(groups: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--node", required=True, metavar="HOST:PORT", help="the node to ask (its Raft address)"
    )
    who = common.add_argument_group("authentication (an admin-role token)")
    who.add_argument("--token-file", metavar="PATH", help="file holding the token (re-read)")
    who.add_argument("--token", metavar="TOKEN", help="the token, or - to read stdin")
    sec = common.add_argument_group("channel security")
    sec.add_argument("--tls-ca", metavar="PATH", help="CA bundle that verifies the node")
    sec.add_argument("--tls-cert", metavar="PATH", help="client certificate (mTLS)")
    sec.add_argument("--tls-key", metavar="PATH", help="its private key (mTLS)")
    sec.add_argument("--tls-server-name", metavar="NAME", help="verify the node as NAME")
    sec.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="gRPC local credentials: loopback only, for nodes built with "
        "allow_insecure_loopback (development)",
    )
    common.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    common.add_argument("--json", action="store_true", help="print JSON")

    admin = groups.add_parser(
        "admin",
        help="operate a cluster: status, membership, leadership, code version",
        description="PySyncObj's syncobj_admin over the authenticated admin service "
        "(raftgrpc.v1.Admin). Exit status: 0 done, 1 refused or failed, 2 usage error.",
    )
    commands = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)
    status = commands.add_parser(
        "status",
        parents=[common],
        help="the node's view of the cluster",
        description=("Print the node's status: a table (or --json)."),
    )
    status.set_defaults(func=_cmd_admin_status)
    add = commands.add_parser(
        "add",
        parents=[common],
        help="add a member (dynamicMembershipChange)",
        description="Add a member; done once the change is committed. Start the new node "
        "first, with the current members as its partners.",
    )
    add.add_argument("target", metavar="NEW_NODE", help="HOST:PORT of the node to add")
    add.set_defaults(func=_cmd_admin_change)
    remove = commands.add_parser(
        "remove",
        parents=[common],
        help="remove a member (dynamicMembershipChange)",
        description="Remove a member; done once the change is committed. A node cannot "
        "remove itself: ask another one.",
    )
    remove.add_argument("target", metavar="NODE", help="HOST:PORT of the member to remove")
    remove.set_defaults(func=_cmd_admin_change)
    transfer = commands.add_parser(
        "transfer",
        parents=[common],
        help="hand leadership to a caught-up follower (ask the leader)",
        description="Ask the leader (--node) to hand leadership to TARGET, or to the most "
        "caught-up follower when TARGET is omitted.",
    )
    transfer.add_argument("target", metavar="TARGET", nargs="?", default="")
    transfer.set_defaults(func=_cmd_admin_change)
    version = commands.add_parser(
        "set-version",
        parents=[common],
        help="enable a code version on the cluster",
        description="Switch the cluster to code VERSION (every node must have it).",
    )
    version.add_argument("version", metavar="VERSION", type=int)
    version.set_defaults(func=_cmd_admin_change)


COMMAND_GROUPS: list[Callable[[Any], None]] = [_add_token_commands, _add_admin_commands]
"""Functions that each add one command group to the top-level subparsers."""


def build_parser() -> argparse.ArgumentParser:
    """The ``raftgrpc`` argument parser, with every group in :data:`COMMAND_GROUPS`."""
    parser = argparse.ArgumentParser(prog="raftgrpc", description="raftgrpc tools.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for add_group in COMMAND_GROUPS:
        add_group(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as exc:
        print(f"raftgrpc: error: {exc}", file=sys.stderr)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        print(f"raftgrpc: error: {detail}{where}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

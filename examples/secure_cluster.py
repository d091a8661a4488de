"""A 3-node cluster secured with mTLS and JWT (enforce), and intruders it refuses.

Run it with ``python examples/secure_cluster.py``. It creates a development CA, one
certificate per node (``raftgrpc.testing``) and a token signing key (``raftgrpc token keygen``),
starts 3 node processes from one ``TransportBuilder`` configuration (see
``examples/traced_cluster.py``, ``node_builder``), commits writes, and then lets four intruders
try to speak to a node:

* a client whose certificate comes from another CA: the TLS handshake fails;
* a client with a valid certificate but no token: UNAUTHENTICATED;
* a client with node 1's certificate and token that claims to be node 2: PERMISSION_DENIED;
* a client with a valid certificate and a token signed by an unknown key: UNAUTHENTICATED.

Finally it checks that the cluster kept its leader and its data. Finishes by itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from raftgrpc import TlsConfig, TransportBuilder
from raftgrpc import testing as pki
from raftgrpc.interceptors import auth
from raftgrpc.testing import PROTOCOL_VERSION, STREAM_METHOD
from raftgrpc.v1 import transport_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from traced_cluster import AUDIENCE, ISSUER, KID, Cluster, free_addresses, prepare


def probe(
    target: str, tls: TlsConfig, token: str | None, claim: str, timeout: float = 5.0
) -> grpc.StatusCode:
    """Open a Raft stream to ``target`` as an intruder would, claiming node ``claim``."""
    builder = TransportBuilder().with_tls(tls, bind_identity=False)
    if token is not None:
        builder.with_jwt(tokens=lambda _node_id: auth.StaticTokenSource(token))
    hello = pb.StreamRequest(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id=claim))
    with builder.dial(target, claim) as channel:
        call = channel.stream_stream(STREAM_METHOD)(iter([hello.SerializeToString()]))
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where keys and certificates go (default: temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="raftgrpc-secure-"))
    addresses = free_addresses(3)
    prepare(workdir, addresses, secure=True)
    print(f"starting 3 nodes with mTLS + JWT (enforce): {', '.join(addresses)}")
    cluster = Cluster(addresses, workdir, secure=True)
    ok = True
    try:
        leader = cluster.leader(addresses)
        for i, a in enumerate(addresses):
            cluster.ask(a, "put", f"secure/{i}", f"written on {a}")
        print(f"  leader {leader}; 3 writes committed over mTLS with JWTs")

        node1, node2 = addresses[0], addresses[1]
        stem = pki.file_stem(node1)
        own = TlsConfig(
            cert_file=workdir / f"{stem}.crt",
            key_file=workdir / f"{stem}.key",
            ca_file=workdir / "ca.crt",
        )
        signing = (workdir / "signing.pem").read_bytes()
        node1_token = auth.SigningTokenSource(
            signing, KID, "ES256", subject=node1, audience=AUDIENCE, issuer=ISSUER
        ).token()
        rogue_dir = workdir / "rogue"
        rogue_ca = pki.CertificateAuthority.create(rogue_dir, name="rogue-ca")
        rogue_files = rogue_ca.issue_node(node1, directory=rogue_dir)
        rogue_tls = TlsConfig(
            cert_file=rogue_files.cert_file,
            key_file=rogue_files.key_file,
            ca_file=workdir / "ca.crt",  # it trusts the cluster; the cluster does not trust it
        )
        # Same kid, same claims, but a key the cluster's key set does not hold.
        unknown_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        forged = auth.SigningTokenSource(
            unknown_key, KID, "ES256", subject=node1, audience=AUDIENCE, issuer=ISSUER
        ).token()
        code = grpc.StatusCode
        cases = [
            ("certificate from another CA", rogue_tls, node1_token, node1, code.UNAVAILABLE),
            ("valid certificate, no token", own, None, node1, code.UNAUTHENTICATED),
            (
                "node 1's credentials claiming node 2",
                own,
                node1_token,
                node2,
                code.PERMISSION_DENIED,
            ),
            ("token signed by an unknown key", own, forged, node1, code.UNAUTHENTICATED),
        ]
        print("  intruders, against", node2)
        for title, tls, token, claim, expected in cases:
            got = probe(node2, tls, token, claim)
            verdict = "refused as expected" if got == expected else f"UNEXPECTED, wanted {expected}"
            ok &= got == expected
            print(f"    {title:<40} -> {got.name:<18} {verdict}")
        after = cluster.leader(addresses)
        # Followers apply a commit when the leader's next heartbeat tells them of it.
        deadline = time.monotonic() + 10
        while True:
            data = {a: cluster.ask(a, "state")[1] for a in addresses}
            same = all(len(d) == 3 and d == data[addresses[0]] for d in data.values())
            if same or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(f"  leader after the intruders: {after} ({'same' if after == leader else 'CHANGED'})")
        print(f"  every node holds the same 3 writes: {'yes' if same else 'NO'}")
        ok &= same and after == leader
    finally:
        cluster.stop()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

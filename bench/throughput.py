"""Committed ops/s of a 3-node PySyncObj cluster over TCPTransport and over GrpcTransport.

    python bench/throughput.py [--rounds 3] [--seconds 5] [--inflight 2000] [--payload 16]

Each round starts, for each transport in turn (the order alternates between rounds), a fresh
3-node cluster of node processes (tests/cluster/node.py, appendEntriesUseBatch=True). The load
runs inside the leader process (the ``bench_load`` control command): it keeps ``--inflight``
async ``set`` calls outstanding for ``--seconds`` and counts the ones whose callback reports
success, with their submit-to-callback latency. Before a round counts, every node must hold
exactly the committed keys. The medians over rounds and the grpc/tcp ratio are printed as a
markdown table and written to bench/results/throughput-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(ROOT))

from harness import Cluster  # noqa: E402

TRANSPORTS = ["tcp", "grpc"]
PREFIX = "b"


def grpc_unavailable() -> str | None:
    try:
        from raftgrpc import GrpcTransport  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def run_one(transport: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = Cluster(transport, workdir)
    try:
        nodes = cluster.start_cluster(3, batch=1)
        leader = cluster.wait_leader()
        cluster.write_many(leader, {f"warmup-{i}": i for i in range(200)})
        reply = leader.ctl(
            "bench_load",
            timeout=args.seconds + 120.0,
            seconds=args.seconds,
            inflight=args.inflight,
            payload_bytes=args.payload,
            prefix=PREFIX,
        )
        if not reply.get("ok"):
            raise RuntimeError(f"bench_load failed on {transport}: {reply}")
        committed = int(reply["committed"])
        counts: dict[str, int] = {}

        def same_count() -> bool:
            for n in nodes:
                counts[n.name] = int(n.ctl("count", prefix=PREFIX)["count"])
            return len(set(counts.values())) == 1 and counts[leader.name] >= committed

        cluster.wait_until(same_count, 60.0, "every node to hold the benchmark keys")
        clean = set(reply["outcomes"]) <= {"SUCCESS"} and reply["outstanding"] == 0
        verified = counts[leader.name] == committed if clean else None
        if verified is False:
            raise RuntimeError(f"{transport}: nodes hold {counts}, committed {committed}")
        return {
            "transport": transport,
            "ops_per_sec": reply["ops_per_sec"],
            "committed": committed,
            "issued": reply["issued"],
            "outcomes": reply["outcomes"],
            "outstanding": reply["outstanding"],
            "window_seconds": reply["window_seconds"],
            "p50_ms": reply["p50_ms"],
            "p99_ms": reply["p99_ms"],
            "node_key_counts": counts,
            # None: a leader change or a failure made the exact count unknowable; the nodes
            # still agreed with each other.
            "verified_exact": verified,
        }
    finally:
        cluster.close()


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--inflight", type=int, default=2000)
    p.add_argument("--payload", type=int, default=16, help="value size in bytes")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()

    transports = list(TRANSPORTS)
    skipped = {}
    reason = grpc_unavailable()
    if reason is not None:
        transports.remove("grpc")
        skipped["grpc"] = reason
        print(f"grpc skipped: {reason}", file=sys.stderr)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raftgrpc-bench-") as tmp:
        for r in range(args.rounds):
            order = transports if r % 2 == 0 else list(reversed(transports))
            for t in order:
                res = run_one(t, args, Path(tmp) / f"r{r}-{t}")
                res["round"] = r
                runs.append(res)
                print(
                    f"round {r} {t}: {res['ops_per_sec']:.0f} ops/s, p50 {fmt(res['p50_ms'])} ms,"
                    f" p99 {fmt(res['p99_ms'])} ms",
                    file=sys.stderr,
                )

    summary: dict[str, dict[str, float | None]] = {}
    for t in transports:
        mine = [x for x in runs if x["transport"] == t]
        summary[t] = {
            "median_ops_per_sec": statistics.median(x["ops_per_sec"] for x in mine),
            "median_p50_ms": statistics.median(x["p50_ms"] or 0.0 for x in mine),
            "median_p99_ms": statistics.median(x["p99_ms"] or 0.0 for x in mine),
        }
    ratio = None
    if "tcp" in summary and "grpc" in summary:
        tcp_ops = summary["tcp"]["median_ops_per_sec"] or 0.0
        if tcp_ops:
            ratio = (summary["grpc"]["median_ops_per_sec"] or 0.0) / tcp_ops

    lines = [
        f"3 nodes, {args.seconds:g} s per run, {args.inflight} in flight, "
        f"{args.payload} B values, {os.cpu_count()} CPUs",
        "",
        "| round | transport | committed ops/s | p50 ms | p99 ms | committed | exact |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for x in runs:
        lines.append(
            f"| {x['round']} | {x['transport']} | {fmt(x['ops_per_sec'], 0)} | "
            f"{fmt(x['p50_ms'])} | {fmt(x['p99_ms'])} | {x['committed']} | "
            f"{x['verified_exact']} |"
        )
    lines += [
        "",
        "| transport | median ops/s | median p50 ms | median p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for t, s in summary.items():
        lines.append(
            f"| {t} | {fmt(s['median_ops_per_sec'], 0)} | {fmt(s['median_p50_ms'])} | "
            f"{fmt(s['median_p99_ms'])} |"
        )
    if ratio is not None:
        lines += ["", f"grpc/tcp (median ops/s): **{ratio:.2f}**"]
    print("\n".join(lines))

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    now = datetime.datetime.now()
    result = {
        "date": now.isoformat(timespec="seconds"),
        "params": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "inflight": args.inflight,
            "payload_bytes": args.payload,
            "appendEntriesUseBatch": True,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pysyncobj": version("pysyncobj"),
            "grpcio": version("grpcio"),
        },
        "skipped": skipped,
        "runs": runs,
        "summary": summary,
        "ratio_grpc_over_tcp": ratio,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"throughput-{now.date().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The I/O cores prototyped for issue 12, against TCPTransport and GrpcTransport, same run.

    python bench/prototypes/run.py                      # 5 rounds x 3 s
    python bench/prototypes/run.py --rounds 3 --seconds 2

Each configuration is a transport and gRPC's EventEngine setting (raftgrpc._grpcenv):

* ``aio-on-tick``: prototype A (bench/prototypes/aio_on_tick.py), one grpc.aio event loop per
  transport run by SyncObj's tick thread;
* ``sync-streaming``: prototype B (bench/prototypes/sync_streaming.py), grpcio's synchronous
  API with server-streaming calls opened by the receiver and SingleThreadedUnaryStream;
* ``grpc``: GrpcTransport as shipped (design A, finished: queues, liveness, handshakes);

each with EventEngine off (``EE off``, raftgrpc's default) and on (``RAFTGRPC_EVENT_ENGINE=on``),
and ``tcp``, PySyncObj's TCPTransport. Three node processes, unbatched, one 10-byte command in
flight (the latency scenario of bench/run.py); configurations interleaved, their order
rotating between rounds; medians over rounds of each run's p50 and p99, and the CPU time of
the three processes per commit. Results: bench/results/<date>-prototypes.json and
docs/prototypes.md.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (str(ROOT / "bench"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import argparse  # noqa: E402

from run import latency_cluster, machine_info, measured_load  # noqa: E402

CONFIGS: list[tuple[str, str, bool]] = [
    # name, node.py transport spec, EventEngine on
    ("tcp", "tcp", False),
    ("grpc, EE off", "grpc", False),
    ("grpc, EE on", "grpc", True),
    ("aio-on-tick, EE off", "prototypes.aio_on_tick:AioOnTickTransport", False),
    ("aio-on-tick, EE on", "prototypes.aio_on_tick:AioOnTickTransport", True),
    ("sync-streaming, EE off", "prototypes.sync_streaming:SyncStreamingTransport", False),
    ("sync-streaming, EE on", "prototypes.sync_streaming:SyncStreamingTransport", True),
]


def run_once(spec: str, event_engine: bool, seconds: float, workdir: Path) -> dict[str, Any]:
    saved = {k: os.environ.get(k) for k in ("RAFTGRPC_EVENT_ENGINE", "PYTHONPATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "bench"), *filter(None, [saved["PYTHONPATH"]])]
    )
    os.environ["RAFTGRPC_EVENT_ENGINE"] = "on" if event_engine else "off"
    cluster, nodes, leader = latency_cluster(spec, workdir)
    try:
        reply, cpu = measured_load(nodes, leader, seconds, inflight=1, payload=10)
        if not reply.get("committed"):
            raise RuntimeError(f"nothing committed: {reply}")
        return {
            "p50_ms": reply["p50_ms"],
            "p99_ms": reply["p99_ms"],
            "ops_per_sec": reply["ops_per_sec"],
            "cpu_ms_per_commit": 1000.0 * cpu / reply["committed"],
        }
    finally:
        cluster.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    now = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raftgrpc-prototypes-") as tmp:
        for r in range(args.rounds):
            k = r % len(CONFIGS)
            for name, spec, ee in CONFIGS[k:] + CONFIGS[:k]:
                try:
                    res = run_once(spec, ee, args.seconds, Path(tmp) / f"r{r}-{len(runs)}")
                except Exception as exc:
                    res = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                res.update(config=name, round=r)
                runs.append(res)
                print(f"round {r} {name:24} {res}", file=sys.stderr, flush=True)
    rows = []
    for name, _spec, _ee in CONFIGS:
        ok = [r for r in runs if r["config"] == name and "error" not in r]
        if not ok:
            rows.append((name, None))
            continue
        rows.append(
            (
                name,
                {
                    key: statistics.median(r[key] for r in ok)
                    for key in ("p50_ms", "p99_ms", "ops_per_sec", "cpu_ms_per_commit")
                }
                | {"runs": len(ok)},
            )
        )
    tcp = dict(rows)["tcp"]
    m = machine_info()
    lines = [
        f"### I/O core prototypes, {now.isoformat(timespec='seconds')}",
        "",
        f"* command: `python bench/prototypes/run.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"* machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB; Python "
        f"{m['python']}; grpcio {m['packages'].get('grpcio')}; git {m['git_commit']}",
        f"* {args.rounds} rounds x {args.seconds:g} s; 3 node processes, unbatched, 1 command "
        "of 10 B in flight; medians over rounds",
        "",
        "| configuration | p50 ms | p50 / tcp | p99 ms | CPU ms per commit | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows:
        if row is None:
            lines.append(f"| {name} | failed | | | | 0 |")
            continue
        ratio = row["p50_ms"] / tcp["p50_ms"] if tcp else float("nan")
        lines.append(
            f"| {name} | {row['p50_ms']:.3f} | {ratio:.2f} | {row['p99_ms']:.2f} "
            f"| {row['cpu_ms_per_commit']:.3f} | {row['runs']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    out = {"date": now.isoformat(timespec="seconds"), "machine": m, "runs": runs}
    (args.results / f"{now.strftime('%Y-%m-%d')}-prototypes.json").write_text(
        json.dumps(out, indent=2) + "\n"
    )
    if not args.no_docs:
        (args.docs / "prototypes.md").write_text(
            "# I/O core prototypes\n\nGenerated by `bench/prototypes/run.py`; do not edit by "
            "hand. Why the transport's I/O core is what it is: docs/performance.md.\n\n" + text
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

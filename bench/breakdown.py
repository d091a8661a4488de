"""Where a commit's time goes, hop by hop, on TCPTransport and GrpcTransport in the same run.

    python bench/breakdown.py                    # 5 rounds x 4 s, transports interleaved
    python bench/breakdown.py --rounds 3 --seconds 3 --transports tcp,grpc

Three node processes on loopback (raftgrpc/testing/_processes/harness.py), unbatched, one 10-byte
command in flight from a client thread in the leader's process (node.py's bench_load), as the
latency benchmark. Each node process loads ``bench/probe/sitecustomize.py`` (through
PYTHONPATH), which stamps every message at the points of its path that both transports have (see
that module); the stamps of one commit are joined across processes by log index. For each round
and transport the median of every hop over the commits of the run is taken; the table shows the
median over rounds, and the CPU time of the three processes per commit.

The hops, for a commit at log index i:

* ``submit -> leader send``: the client thread's command reaches SyncObj's tick thread (one
  thread hand-off), SyncObj appends it and calls ``send`` (append_entries with entry i);
* ``leader send -> out``: the transport encodes and queues it and has bytes to write (TCP:
  pickled, compressed and written to the socket; gRPC: the frame is built for
  ``call.write``, which writes it on the same thread);
* ``out -> follower in``: until the follower's tick thread runs with the bytes (TCP: the
  socket, poll() returns; gRPC: the write, HTTP/2, grpcio's completion-queue thread, which
  wakes the tick thread: one thread hand-off);
* ``follower in -> SyncObj``: decode and hand to SyncObj;
* ``follower SyncObj -> reply send``: SyncObj appends and answers next_node_idx;
* ``reply send -> out``, ``out -> leader in``, ``leader in -> SyncObj``: the same, back;
* ``leader SyncObj -> callback``: the leader's SyncObj commits and applies, and calls the
  command's callback (the next tick: no wait, poll() returns at once after a delivery);
* ``callback -> next submit``: the tick thread wakes the client thread, which submits the
  next command (one thread hand-off, plus the benchmark loop).

For the commit the follower whose answer came first counts (with 3 nodes, one answer is a
majority). Results: bench/results/<date>-breakdown.json and docs/breakdown.md.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT / "bench"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import psutil  # noqa: E402
from run import TRANSPORTS, latency_cluster, machine_info, measured_load  # noqa: E402

PROBE_DIR = ROOT / "bench" / "probe"
HOPS = [
    ("submit", "submit -> leader send"),
    ("leader_out", "leader send -> out"),
    ("to_follower", "out -> follower in"),
    ("follower_in", "follower in -> SyncObj"),
    ("follower_syncobj", "follower SyncObj -> reply send"),
    ("follower_out", "reply send -> out"),
    ("to_leader", "out -> leader in"),
    ("leader_in", "leader in -> SyncObj"),
    ("commit", "leader SyncObj -> callback"),
    ("wake_client", "callback -> next submit"),
]


def _index(stamps: list[list[Any]], name: str, kind: str) -> dict[int, int]:
    """First stamp ``name`` for each log index of messages of ``kind``."""
    out: dict[int, int] = {}
    for stamp, key, t, _thread in stamps:
        if stamp == name and key is not None and key[0] == kind and key[1] not in out:
            out[key[1]] = t
    return out


def _times(stamps: list[list[Any]], name: str) -> list[int]:
    return sorted(t for stamp, _key, t, _thread in stamps if stamp == name)


def _after(times: list[int], t: int) -> int | None:
    i = bisect.bisect_right(times, t)
    return times[i] if i < len(times) else None


def _before(times: list[int], t: int) -> int | None:
    i = bisect.bisect_left(times, t)
    return times[i - 1] if i > 0 else None


def analyze(processes: list[list[list[Any]]]) -> dict[str, list[float]]:
    """Hop durations (µs) of every commit found in the stamps of one run's processes."""
    leaders = [p for p in processes if any(s[0] == "submit" for s in p)]
    if len(leaders) != 1:
        raise RuntimeError(f"expected one process with client submits, found {len(leaders)}")
    leader = leaders[0]
    followers = [p for p in processes if p is not leader]
    l_send, l_deliver = _index(leader, "send", "ae"), _index(leader, "deliver", "nni")
    l_out, l_in = _times(leader, "wire_out"), _times(leader, "wire_in")
    submits, callbacks = _times(leader, "submit"), _times(leader, "cb")
    f_views = [
        (
            _index(f, "deliver", "ae"),
            _index(f, "send", "nni"),
            _times(f, "wire_in"),
            _times(f, "wire_out"),
        )
        for f in followers
    ]
    sends = sorted((t, i) for i, t in l_send.items())
    hops: dict[str, list[float]] = {name: [] for name, _ in HOPS}
    hops["total"] = []
    for submit in submits[len(submits) // 10 :]:  # the first tenth warms up
        j = bisect.bisect_left(sends, (submit, -1))
        if j >= len(sends):
            continue
        sent, index = sends[j]
        delivered = l_deliver.get(index)
        out = _after(l_out, sent)
        if delivered is None or out is None:
            continue
        best = None
        for f_deliver, f_send, f_in, f_out in f_views:
            if index in f_deliver and index in f_send:
                arrived = _before(f_in, f_deliver[index] + 1)
                replied_out = _after(f_out, f_send[index])
                if arrived is None or replied_out is None:
                    continue
                view = (f_send[index], f_deliver[index], arrived, replied_out)
                if best is None or view[0] < best[0]:
                    best = view
        callback = _after(callbacks, delivered)
        if best is None or callback is None:
            continue
        next_submit = _after(submits, callback)
        f_send_t, f_deliver_t, f_in_t, f_out_t = best
        l_in_t = _before(l_in, delivered + 1)
        if l_in_t is None or next_submit is None:
            continue
        values = {
            "submit": sent - submit,
            "leader_out": out - sent,
            "to_follower": f_in_t - out,
            "follower_in": f_deliver_t - f_in_t,
            "follower_syncobj": f_send_t - f_deliver_t,
            "follower_out": f_out_t - f_send_t,
            "to_leader": l_in_t - f_out_t,
            "leader_in": delivered - l_in_t,
            "commit": callback - delivered,
            "wake_client": next_submit - callback,
            "total": callback - submit,
        }
        if min(values.values()) < 0:
            continue  # stamps of another message in between: not this commit's path
        for name, ns in values.items():
            hops[name].append(ns / 1000.0)
    return hops


def run_once(spec: str, seconds: float, workdir: Path) -> dict[str, Any]:
    probes = workdir / "probes"
    probes.mkdir(parents=True)
    saved = {k: os.environ.get(k) for k in ("RAFTGRPC_PROBE_DIR", "PYTHONPATH")}
    os.environ["RAFTGRPC_PROBE_DIR"] = str(probes)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PROBE_DIR), *filter(None, [saved["PYTHONPATH"]])]
    )
    cluster, nodes, leader = latency_cluster(spec, workdir)
    try:
        reply, cpu = measured_load(nodes, leader, seconds, inflight=1, payload=10)
        procs = [psutil.Process(n.proc.pid) for n in nodes if n.proc is not None]
        for p in procs:
            p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        files = []
        while time.monotonic() < deadline:
            files = [probes / f"{p.pid}.json" for p in procs]
            if all(f.exists() for f in files):
                break
            time.sleep(0.05)
        stamps = [json.loads(f.read_text()) for f in files]
        hops = analyze(stamps)
        return {
            "committed": reply["committed"],
            "p50_ms": reply["p50_ms"],
            "cpu_ms_per_commit": 1000.0 * cpu / max(1, reply["committed"]),
            "commits_joined": len(hops["total"]),
            "hops_p50_us": {
                name: statistics.median(values) for name, values in hops.items() if values
            },
        }
    finally:
        cluster.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def markdown(result: dict[str, Any]) -> str:
    transports = result["transports"]
    summary = result["summary"]
    m = result["machine"]
    head = " | ".join(transports)
    lines = [
        f"### Commit latency, hop by hop ({result['date']})",
        "",
        f"* command: `{result['command']}`",
        f"* machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB; Python "
        f"{m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        f"* git {m['git_commit']}; {result['params']['rounds']} rounds x "
        f"{result['params']['seconds']:g} s, transports interleaved; 3 node processes, "
        "unbatched, 1 command of 10 B in flight; values: median over rounds of each round's "
        "median (µs)",
        "",
        f"| hop | {head} |",
        "|---|" + "---:|" * len(transports),
    ]
    for name, title in [*HOPS, ("total", "**submit -> callback (commit)**")]:
        cells = [f"{summary[t]['hops_p50_us'].get(name, float('nan')):,.0f}" for t in transports]
        lines.append(f"| {title} | {' | '.join(cells)} |")
    cells = [f"{summary[t]['p50_ms']:.3f}" for t in transports]
    lines.append(f"| client-measured p50 commit, ms | {' | '.join(cells)} |")
    cells = [f"{summary[t]['cpu_ms_per_commit']:.3f}" for t in transports]
    lines.append(f"| CPU per commit, 3 processes, ms | {' | '.join(cells)} |")
    cells = [f"{summary[t]['commits_joined']:,}" for t in transports]
    lines.append(f"| commits joined (all rounds) | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--transports", default="tcp,grpc")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    transports = args.transports.split(",")
    now = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raftgrpc-breakdown-") as tmp:
        for r in range(args.rounds):
            order = transports if r % 2 == 0 else list(reversed(transports))
            for t in order:
                res = run_once(TRANSPORTS[t], args.seconds, Path(tmp) / f"r{r}-{t}")
                res.update(round=r, transport=t)
                runs.append(res)
                print(
                    f"round {r} {t:6} p50 {res['p50_ms']:.3f} ms  cpu "
                    f"{res['cpu_ms_per_commit']:.3f} ms/commit  "
                    f"joined {res['commits_joined']}",
                    file=sys.stderr,
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for t in transports:
        mine = [r for r in runs if r["transport"] == t]
        names = {name for r in mine for name in r["hops_p50_us"]}
        summary[t] = {
            "hops_p50_us": {
                n: statistics.median(r["hops_p50_us"][n] for r in mine if n in r["hops_p50_us"])
                for n in names
            },
            "p50_ms": statistics.median(r["p50_ms"] for r in mine),
            "cpu_ms_per_commit": statistics.median(r["cpu_ms_per_commit"] for r in mine),
            "commits_joined": sum(r["commits_joined"] for r in mine),
        }
    result = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/breakdown.py", *sys.argv[1:]]),
        "params": {"rounds": args.rounds, "seconds": args.seconds},
        "transports": transports,
        "machine": machine_info(),
        "runs": runs,
        "summary": summary,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{now.strftime('%Y-%m-%d')}-breakdown.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    if not args.no_docs:
        (args.docs / "breakdown.md").write_text(
            "# Commit latency, hop by hop\n\nGenerated by `bench/breakdown.py` (see its "
            "docstring for what each hop covers); do not edit by hand.\n\n" + text
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rolling migrations of a live cluster under a write load, repeated: how long do writes stop?

    python bench/migration.py                  # 3 rounds of each plan
    python bench/migration.py --rounds 5 --plans forward,wrong-order

Each round starts a 3-node cluster of real processes (raftgrpc/testing/_processes/node.py,
journal and dump files, PySyncObj's default timing: election timeout 0.4-1.4 s), keeps one
client writing (raftgrpc/testing/_processes/harness.py: Writer, one key at a time, through the
leader) and restarts the nodes one at a time onto other transports
(raftgrpc/testing/_processes/rolling.py, the README's runbook order unless the plan says
otherwise). Per step it records the longest gap between two acknowledged writes; at the end it
checks that every acknowledged write is on every node and that the states are identical (a round
that fails this is reported as failed).

Plans: forward (TCP -> Migration -> gRPC), rollback (gRPC -> Migration -> TCP), abandon
(TCP -> Migration -> TCP), tcp-restart (TCP -> TCP: the baseline, a plain rolling restart),
wrong-order (TCP -> Migration from the lowest address up, against the runbook).

Writes bench/results/<date>-migration.json and prints a table per plan: the gap's median and
maximum over rounds for each phase.
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
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from raftgrpc.testing._processes.harness import Cluster, NodeProc, Writer  # noqa: E402
from raftgrpc.testing._processes.rolling import (  # noqa: E402
    restart_as,
    restart_order,
    settled,
    verify,
)

PLANS: dict[str, tuple[str, list[str]]] = {
    "forward": ("tcp", ["migration", "grpc-mapped"]),
    "rollback": ("grpc-mapped", ["migration", "tcp"]),
    "abandon": ("tcp", ["migration", "tcp"]),
    "tcp-restart": ("tcp", ["tcp"]),
    "wrong-order": ("tcp", ["migration"]),
}


def _order(cluster: Cluster, nodes: list[NodeProc], plan: str, to: str) -> list[NodeProc]:
    if plan == "wrong-order":
        return sorted(nodes, key=lambda n: str(n.addr))
    if plan == "tcp-restart":
        leader = cluster.leader()
        return [n for n in nodes if n is not leader] + [leader]
    return restart_order(cluster, nodes, to)


def run_round(plan: str, workdir: Path) -> dict[str, Any]:
    start, phases = PLANS[plan]
    cluster = Cluster(start, workdir)
    try:
        nodes = cluster.start_cluster(3, journal=True, dump=True, transport=start)
        cluster.wait_until(lambda: settled(cluster), 30.0, "a settled cluster")
        steps = []
        with Writer(cluster) as writer:
            writer.wait_acks(20)
            for to in phases:
                for node in _order(cluster, nodes, plan, to):
                    step = restart_as(cluster, writer, node, to)
                    steps.append(dict(asdict(step), phase=f"{transport_name(start, to)}"))
                    writer.wait_acks(20)
                start = to
        state = verify(cluster, writer)
        return {"ok": True, "steps": steps, "acks": len(writer.acks), "keys": len(state)}
    except Exception as exc:
        traceback.print_exc()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        cluster.close()


def transport_name(frm: str, to: str) -> str:
    short = {"tcp": "TCP", "migration": "Migration", "grpc-mapped": "gRPC"}
    return f"{short[frm]} -> {short[to]}"


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_phase: dict[str, list[float]] = {}
    for r in rounds:
        if not r["ok"]:
            continue
        worst: dict[str, float] = {}
        for s in r["steps"]:
            worst[s["phase"]] = max(worst.get(s["phase"], 0.0), s["longest_gap_s"])
        for phase, gap in worst.items():
            by_phase.setdefault(phase, []).append(gap)
    return {
        p: {"median_ms": 1000 * statistics.median(g), "max_ms": 1000 * max(g), "rounds": len(g)}
        for p, g in by_phase.items()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--plans", default="forward,rollback,abandon,tcp-restart,wrong-order")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    plans = args.plans.split(",")
    unknown = set(plans) - set(PLANS)
    if unknown:
        p.error(f"unknown plans {sorted(unknown)}")
    started = time.monotonic()
    now = datetime.datetime.now()
    out: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/migration.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "plans": {},
    }
    with tempfile.TemporaryDirectory(prefix="raftgrpc-migration-") as tmp:
        for rnd in range(args.rounds):
            for plan in plans:  # interleaved: every plan once per round
                print(f"round {rnd + 1}/{args.rounds}: {plan}", flush=True)
                result = run_round(plan, Path(tmp) / f"{plan}-{rnd}")
                out["plans"].setdefault(plan, {"rounds": []})["rounds"].append(result)
    for plan, data in out["plans"].items():
        data["summary"] = summarize(data["rounds"])
        failed = sum(1 for r in data["rounds"] if not r["ok"])
        print(f"\n{plan}: {len(data['rounds']) - failed} rounds ok, {failed} failed")
        for phase, s in data["summary"].items():
            print(
                f"  {phase:<20} longest gap per round: median {s['median_ms']:6.0f} ms, "
                f"max {s['max_ms']:6.0f} ms ({s['rounds']} rounds)"
            )
    out["seconds"] = time.monotonic() - started
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{now.date().isoformat()}-migration.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {path} ({out['seconds'] / 60:.1f} min)")
    return 0 if all(r["ok"] for d in out["plans"].values() for r in d["rounds"]) else 1


if __name__ == "__main__":
    sys.exit(main())

"""A local 3-node PySyncObj cluster over GrpcTransport, one process per node.

Run it with ``make demo`` (or ``python examples/local_cluster.py``). Each node joins the
cluster, waits for a leader, writes three keys of its own, and waits until it has applied
every node's writes; the parent prints what each node saw. Finishes by itself.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import sys
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

from raftgrpc import GrpcTransport


class KeyValueStore(SyncObj):  # type: ignore[misc]
    """A replicated dict."""

    def __init__(self, self_address: str, partners: list[str]) -> None:
        super().__init__(self_address, partners, SyncObjConf(), transportClass=GrpcTransport)
        self.data: dict[str, str] = {}

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: str) -> None:
        self.data[key] = value


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def run_node(me: str, partners: list[str], writes: int, report: Any) -> None:
    store = KeyValueStore(me, partners)
    try:
        started = time.monotonic()
        if not wait_for(lambda: store._getLeader() is not None, 20):
            report.put((me, "error", "no leader within 20 s"))
            return
        report.put((me, "leader", f"{store._getLeader()} after {time.monotonic() - started:.2f} s"))
        for i in range(writes):
            store.set(f"{me}/key{i}", f"value {i} written on {me}", sync=True, timeout=10)
        expected = writes * (len(partners) + 1)
        if not wait_for(lambda: len(store.data) == expected, 20):
            report.put((me, "error", f"applied {len(store.data)} of {expected} writes"))
            return
        report.put((me, "data", dict(sorted(store.data.items()))))
        # Stay up until every node has reported, so nobody loses its quorum early.
        wait_for(lambda: False, 2.0)
    finally:
        store.destroy()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3, help="keys each node writes")
    args = parser.parse_args()
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    print(f"starting 3 nodes over GrpcTransport: {', '.join(addresses)}")
    processes = [
        ctx.Process(
            target=run_node,
            args=(me, [a for a in addresses if a != me], args.writes, report),
            name=me,
        )
        for me in addresses
    ]
    for p in processes:
        p.start()
    results: dict[str, dict[str, Any]] = {a: {} for a in addresses}
    ok = True
    deadline = time.monotonic() + 60
    while any(len(r) < 2 for r in results.values()) and time.monotonic() < deadline:
        try:
            node, kind, value = report.get(timeout=1)
        except Exception:
            if not any(p.is_alive() for p in processes):
                break
            continue
        results[node][kind] = value
        if kind == "leader":
            print(f"  {node}: leader is {value}")
        elif kind == "error":
            print(f"  {node}: ERROR {value}")
            ok = False
            results[node]["data"] = None
    for p in processes:
        p.join(30)
        if p.is_alive():
            p.kill()
    stores = [results[a].get("data") for a in addresses]
    same = ok and all(s == stores[0] for s in stores) and bool(stores[0])
    for address, data in zip(addresses, stores, strict=True):
        print(f"  {address} applied {len(data or {})} writes")
    print("\ncommitted data (as applied on every node):" if same else "\ndata on the first node:")
    for key, value in (stores[0] or {}).items():
        print(f"  {key} = {value}")
    print("\nall three nodes hold the same data" if same else "\nFAILED: the nodes disagree")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

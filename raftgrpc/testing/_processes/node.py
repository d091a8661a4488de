"""One Raft node process for the multi-process cluster tests and the throughput bench.

Run as::

    python -m raftgrpc.testing._processes.node --self 127.0.0.1:P --partners A,B \
        --transport tcp|grpc --ctl-port C [--journal F] [--dump F] [--readonly] \
        [--batch 0|1] [--dynamic]

The node replicates a small key-value store (``KV``) and answers a line-based JSON control
protocol on 127.0.0.1:C: one JSON object per line in, one JSON object per line out. Every
request has a ``cmd``; every reply has ``ok`` (and ``reason`` or ``error`` when it is false).

Exit codes: 0 after ``quit``, 3 when the Raft or the control port cannot be bound (the harness
then retries with other ports), 4 when the parent process died, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import os
import random
import resource
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import SyncObjException

from raftgrpc._pysyncobj import is_leader, transport_of

EXIT_PORT_IN_USE = 3
EXIT_ORPHANED = 4

# Values at least this long are reported by get_all as {"sha256": ..., "len": ...}.
BIG_VALUE = 1024

# The transports a node can run on: name -> "module:attribute", the attribute being the class
# (or a factory such as a functools.partial) given to SyncObj as transportClass. Adding a
# transport is one line here; bench/run.py and bench/micro.py read this table too.
TRANSPORTS: dict[str, str] = {
    "tcp": "pysyncobj.transport:TCPTransport",
    "grpc": "raftgrpc:GrpcTransport",
    # GrpcTransport with logging, tracing (1% of messages) and JWT auth (fullstack.py).
    "grpc-full": "raftgrpc.testing._processes.fullstack:transport",
    # GrpcTransport on ports other than the Raft ids' (migrationstack.py), and
    # MigrationTransport: that GrpcTransport first, TCPTransport as the fallback.
    "grpc-mapped": "raftgrpc.testing._processes.migrationstack:grpc",
    "migration": "raftgrpc.testing._processes.migrationstack:migration",
}


def transport_class(name: str) -> Any:
    """The transportClass for ``name``: a key of TRANSPORTS, or any ``module:attribute``
    importable in the node process (bench/prototypes/run.py runs prototypes that way),
    imported on demand."""
    module, _, attr = TRANSPORTS.get(name, name).partition(":")
    return getattr(importlib.import_module(module), attr)


FAIL_NAMES = {
    getattr(FAIL_REASON, name): name for name in dir(FAIL_REASON) if not name.startswith("_")
}


def fail_name(err: Any) -> str:
    if isinstance(err, int):
        return FAIL_NAMES.get(err, str(err))
    return str(err).upper()


def digest(value: bytes | str) -> dict[str, Any]:
    raw = value.encode() if isinstance(value, str) else value
    return {"sha256": hashlib.sha256(raw).hexdigest(), "len": len(raw)}


def is_big(value: Any) -> bool:
    return isinstance(value, bytes | bytearray) or (
        isinstance(value, str) and len(value) >= BIG_VALUE
    )


def gen_bytes(nbytes: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(nbytes)


def gen_text(nchars: int, seed: int) -> str:
    """Deterministic ASCII text (hex digits)."""
    return random.Random(seed).randbytes((nchars + 1) // 2).hex()[:nchars]


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray):
        return digest(bytes(v))
    if isinstance(v, dict):
        return {str(jsonable(k)): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [jsonable(x) for x in v]
    node_id = getattr(v, "id", None)
    if isinstance(node_id, str):
        return node_id
    return str(v)


class KV(SyncObjConsumer):  # type: ignore[misc]
    """The replicated store. Only ``data`` is part of a snapshot."""

    def __init__(self) -> None:
        # Attributes assigned before SyncObjConsumer.__init__ are excluded from snapshots:
        # they count what this process did, not what the cluster agreed on.
        self.applied = 0
        self.snapshots_loaded = 0
        super().__init__()
        self.data: dict[str, Any] = {}
        # Every ``record`` in the order applied (tests/cluster/faults.py): a command applied
        # twice shows up twice here, where ``set`` would hide it.
        self.ops: list[str] = []

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.applied += 1

    @replicated  # type: ignore[untyped-decorator]
    def record(self, op_id: str) -> int:
        self.ops.append(op_id)
        self.applied += 1
        return len(self.ops)

    @replicated  # type: ignore[untyped-decorator]
    def fill(self, name: str, nbytes: int, seed: int) -> int:
        self.data[name] = gen_bytes(nbytes, seed)
        self.applied += 1
        return nbytes

    def _deserialize(self, data: Any) -> None:
        # Called when a full dump (a snapshot received from the leader, or the dump file at
        # start-up) replaces the state.
        self.snapshots_loaded += 1
        super()._deserialize(data)


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.res: Any = None
        self.err: Any = None

    def __call__(self, res: Any, err: Any) -> None:
        self.res, self.err = res, err
        self.event.set()

    def wait(self, timeout: float) -> dict[str, Any]:
        if not self.event.wait(timeout):
            return {"ok": False, "reason": "TIMEOUT"}
        if self.err == FAIL_REASON.SUCCESS:
            return {"ok": True, "result": jsonable(self.res)}
        return {"ok": False, "reason": fail_name(self.err)}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kv = KV()
        conf = SyncObjConf(
            dynamicMembershipChange=args.dynamic,
            appendEntriesUseBatch=bool(args.batch),
            journalFile=args.journal,
            fullDumpFile=args.dump,
            **args.conf,
        )
        kwargs: dict[str, Any] = {"consumers": [self.kv]}
        if args.transport not in TRANSPORTS and ":" not in args.transport:
            raise SystemExit(f"unknown transport {args.transport!r}")
        kwargs["transportClass"] = transport_class(args.transport)
        grpc_config = getattr(args, "grpc_config", None)
        if grpc_config:  # TransportConfig fields for "grpc" (tests/cluster/faults.py)
            if args.transport != "grpc":
                raise SystemExit("--grpc-config applies to --transport grpc only")
            import functools

            from raftgrpc import GrpcTransport, TransportConfig

            config = TransportConfig(**grpc_config)
            kwargs["transportClass"] = functools.partial(GrpcTransport, config=config)
        self_addr = None if args.readonly else args.self_addr
        self.obj = SyncObj(self_addr, args.partners, conf, **kwargs)
        self.quit = threading.Event()
        self.started = time.monotonic()

    # -- helpers -----------------------------------------------------------------------------

    @property
    def transport(self) -> Any:
        return transport_of(self.obj)

    def status(self) -> dict[str, Any]:
        for _ in range(20):
            try:
                st = self.obj.getStatus()
                partners = sorted(n.id for n in self.obj.otherNodes)
                break
            except RuntimeError:  # a set/dict changed size under us (tick thread); retry
                time.sleep(0.001)
        else:
            raise RuntimeError("getStatus kept racing with the tick thread")
        out = jsonable(st)
        out["partners"] = partners
        out["is_leader"] = is_leader(self.obj)
        out["applied_cmds"] = self.kv.applied
        out["snapshots_loaded"] = self.kv.snapshots_loaded
        out["keys"] = len(self.kv.data)
        out["pid"] = os.getpid()
        out["readonly"] = bool(self.args.readonly)
        return {"ok": True, "status": out}

    def _sync(self, start: Callable[[_Waiter], None], timeout: float) -> dict[str, Any]:
        waiter = _Waiter()
        try:
            start(waiter)
        except SyncObjException as e:
            return {"ok": False, "reason": fail_name(e.errorCode)}
        return waiter.wait(timeout)

    # -- commands ----------------------------------------------------------------------------

    def cmd_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid()}

    def cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def cmd_set(self, req: dict[str, Any]) -> dict[str, Any]:
        value: Any = req.get("value")
        gen = req.get("gen")
        if gen is not None:  # a big value built here, so that the control socket stays small
            make = gen_text if gen.get("kind") == "text" else gen_bytes
            value = make(int(gen["nbytes"]), int(gen["seed"]))
        key = req["key"]
        timeout = float(req.get("timeout_s", 10.0))
        return self._sync(lambda w: self.kv.set(key, value, callback=w), timeout)

    def cmd_set_many(self, req: dict[str, Any]) -> dict[str, Any]:
        """Issue many async sets at once; report the keys whose set did not succeed."""
        items: dict[str, Any] = req["items"]
        timeout = float(req.get("timeout_s", 20.0))
        waiters: dict[str, _Waiter] = {}
        for key, value in items.items():
            waiters[key] = w = _Waiter()
            self.kv.set(key, value, callback=w)
        deadline = time.monotonic() + timeout
        failed: dict[str, str] = {}
        for key, w in waiters.items():
            r = w.wait(max(0.0, deadline - time.monotonic()))
            if not r["ok"]:
                failed[key] = r["reason"]
        return {"ok": not failed, "failed": failed}

    def cmd_fill(self, req: dict[str, Any]) -> dict[str, Any]:
        name, nbytes, seed = req["name"], int(req["nbytes"]), int(req["seed"])
        timeout = float(req.get("timeout_s", 60.0))
        return self._sync(lambda w: self.kv.fill(name, nbytes, seed, callback=w), timeout)

    def cmd_get(self, req: dict[str, Any]) -> dict[str, Any]:
        key = req["key"]
        if key not in self.kv.data:
            return {"ok": True, "found": False}
        value = self.kv.data[key]
        if is_big(value):
            value = digest(value)
        return {"ok": True, "found": True, "value": value}

    def cmd_get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        prefix = req.get("prefix")
        snapshot = self.kv.data.copy()  # dict.copy holds the GIL: a consistent view
        out: dict[str, Any] = {}
        for k, v in snapshot.items():
            if prefix is not None and not str(k).startswith(prefix):
                continue
            if is_big(v):
                out[k] = digest(v)
            else:
                out[k] = jsonable(v)
        return {"ok": True, "data": out, "applied": self.obj.raftLastApplied}

    def cmd_count(self, req: dict[str, Any]) -> dict[str, Any]:
        prefix = req.get("prefix", "")
        keys = list(self.kv.data.keys())
        return {"ok": True, "count": sum(1 for k in keys if str(k).startswith(prefix))}

    def cmd_add_node(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = req["node"]
        timeout = float(req.get("timeout_s", 10.0))
        return self._sync(lambda w: self.obj.addNodeToCluster(addr, callback=w), timeout)

    def cmd_remove_node(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = req["node"]
        timeout = float(req.get("timeout_s", 10.0))
        return self._sync(lambda w: self.obj.removeNodeFromCluster(addr, callback=w), timeout)

    def cmd_force_compaction(self, req: dict[str, Any]) -> dict[str, Any]:
        self.obj.forceLogCompaction()
        return {"ok": True}

    def cmd_rss(self, req: dict[str, Any]) -> dict[str, Any]:
        import psutil  # type: ignore[import-untyped]  # a dev dependency, as this command

        rss = psutil.Process().memory_info().rss
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {"ok": True, "rss": rss, "peak_rss": peak}

    def cmd_transport_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        stats = getattr(self.transport, "stats", None)
        if not callable(stats):
            return {"ok": True, "stats": {}, "has_stats": False}
        return {"ok": True, "stats": jsonable(stats()), "has_stats": True}

    def cmd_bench_load(self, req: dict[str, Any]) -> dict[str, Any]:
        """Keep ``inflight`` async sets outstanding for ``seconds``; report what committed.

        ``payload_kind`` "repeat" (default) sends the string "x" * payload_bytes; "random" sends
        distinct incompressible bytes for each command (TCPTransport zlib-compresses every
        message, so repeated bytes would measure its compressor, not the transport). A command
        is outstanding from its submission until its callback; ``max_outstanding`` reports the
        most ever outstanding at once, which never exceeds ``inflight``.
        """
        seconds = float(req.get("seconds", 5.0))
        inflight = int(req.get("inflight", 2000))
        nbytes = int(req.get("payload_bytes", 16))
        kind = str(req.get("payload_kind", "repeat"))
        prefix = str(req.get("prefix", "b"))
        drain_timeout = float(req.get("drain_timeout", 30.0))
        if kind == "random":
            pool = os.urandom(max(8 << 20, 64 * (nbytes + 1)))
            slots = (len(pool) - nbytes) // (nbytes + 1)

            def payload(i: int) -> Any:
                off = (i % slots) * (nbytes + 1)  # adjacent slices never overlap
                return pool[off : off + nbytes]
        elif kind == "repeat":
            fixed = "x" * nbytes

            def payload(i: int) -> Any:
                return fixed
        else:
            return {"ok": False, "error": f"unknown payload_kind {kind!r}"}

        sem = threading.Semaphore(inflight)
        lock = threading.Lock()
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        last_commit = [0.0]
        outstanding = [0, 0]  # now, most ever

        def make_cb(t0: float) -> Callable[[Any, Any], None]:
            def cb(res: Any, err: Any) -> None:
                now = time.monotonic()
                with lock:
                    outstanding[0] -= 1
                    outcomes[fail_name(err)] += 1
                    if err == FAIL_REASON.SUCCESS:
                        latencies.append(now - t0)
                        last_commit[0] = now
                sem.release()

            return cb

        issued = 0
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            if not sem.acquire(timeout=0.05):
                continue
            value = payload(issued)
            with lock:
                outstanding[0] += 1
                outstanding[1] = max(outstanding[1], outstanding[0])
            self.kv.set(f"{prefix}{issued}", value, callback=make_cb(time.monotonic()))
            issued += 1
        issue_end = time.monotonic()
        drained = 0
        drain_deadline = issue_end + drain_timeout
        while drained < inflight and time.monotonic() < drain_deadline:
            if sem.acquire(timeout=0.05):
                drained += 1
        end = time.monotonic()
        with lock:
            lat = sorted(latencies)
            committed = outcomes.get("SUCCESS", 0)
            window = (last_commit[0] or end) - start
            result = {
                "ok": True,
                "issued": issued,
                "committed": committed,
                "outcomes": dict(outcomes),
                "outstanding": inflight - drained,
                "max_outstanding": outstanding[1],
                "payload_kind": kind,
                "issue_seconds": issue_end - start,
                "window_seconds": window,
                "ops_per_sec": committed / window if window > 0 else 0.0,
                "p50_ms": None if not lat else 1000 * (_percentile(lat, 0.50) or 0.0),
                "p99_ms": None if not lat else 1000 * (_percentile(lat, 0.99) or 0.0),
            }
        return result

    def cmd_quit(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "quitting": True}  # the handler sets self.quit once this is sent

    # -- fault-injection hooks (tests/cluster/faults.py) ---------------------------------------

    def cmd_record_many(self, req: dict[str, Any]) -> dict[str, Any]:
        """Submit ``record(op)`` for every op id in ``ops`` at once; ``results`` maps each op id
        to "SUCCESS" or its failure reason (TIMEOUT: no outcome within ``timeout_s``)."""
        ops: list[str] = list(req["ops"])
        timeout = float(req.get("timeout_s", 5.0))
        waiters: dict[str, _Waiter] = {}
        results: dict[str, str] = {}
        for op in ops:
            waiters[op] = w = _Waiter()
            try:
                self.kv.record(op, callback=w)
            except SyncObjException as e:
                results[op] = fail_name(e.errorCode)
                del waiters[op]
        deadline = time.monotonic() + timeout
        for op, w in waiters.items():
            r = w.wait(max(0.0, deadline - time.monotonic()))
            results[op] = "SUCCESS" if r["ok"] else r["reason"]
        return {"ok": True, "results": results}

    def cmd_ops(self, req: dict[str, Any]) -> dict[str, Any]:
        """The recorded op ids, in the order applied, and how far this node applied."""
        ops = list(self.kv.ops)  # list() holds the GIL: a consistent view
        return {"ok": True, "ops": ops, "applied": self.obj.raftLastApplied}

    def cmd_transfer_leadership(self, req: dict[str, Any]) -> dict[str, Any]:
        """SyncObj.transferLeadership (to ``node``, or the most caught-up follower)."""
        node = req.get("node")
        timeout = float(req.get("timeout_s", 5.0))
        return self._sync(lambda w: self.obj.transferLeadership(node, callback=w), timeout)

    def cmd_outbox_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        """GrpcTransport's per-peer send queues: items queued, bytes ever spilled to disk and
        spill files open, for the stream to each connected peer (empty on other transports)."""
        peers = getattr(self.transport, "_peers", None)
        out: dict[str, Any] = {}
        if isinstance(peers, dict):
            for node, peer in list(peers.items()):
                link = getattr(peer, "link", None)
                outbox = getattr(link, "outbox", None)
                if outbox is None:
                    continue
                out[str(node.id)] = {
                    "queued": len(outbox),
                    "spilled_bytes_total": outbox.spilled_bytes_total,
                    "spool_segments": outbox.spool_segments,
                }
        return {"ok": True, "peers": out, "has_outbox": isinstance(peers, dict)}

    def cmd_block_peers(self, req: dict[str, Any]) -> dict[str, Any]:
        """Test hook (health tests): drop every Raft message to and from the nodes in
        ``peers`` (an empty list heals). The streams stay up (the transport's own pulses still
        flow), so only Raft sees the partition."""
        blocked: set[str] = getattr(self, "_blocked", set())
        if not hasattr(self, "_blocked"):
            self._blocked = blocked
            transport = self.transport
            send, deliver = transport.send, transport._onMessageReceivedCallback

            def filtered_send(node: Any, message: Any) -> bool:
                return False if node.id in blocked else bool(send(node, message))

            def filtered_deliver(node: Any, message: Any) -> None:
                if node.id not in blocked:
                    deliver(node, message)

            transport.send = filtered_send
            transport._onMessageReceivedCallback = filtered_deliver
        blocked.clear()
        blocked.update(req.get("peers", []))
        return {"ok": True, "blocked": sorted(blocked)}

    def cmd_graceful_quit(self, req: dict[str, Any]) -> dict[str, Any]:
        """raftgrpc.graceful_shutdown, then quit; the reply holds its report."""
        from dataclasses import asdict

        from raftgrpc._ops.shutdown import graceful_shutdown

        report = graceful_shutdown(
            self.obj,
            transfer_timeout_s=float(req.get("transfer_timeout_s", 5.0)),
            drain_s=float(req.get("drain_s", 1.0)),
        )
        return {"ok": True, "quitting": True, "report": asdict(report)}

    def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, "cmd_" + str(req.get("cmd")), None)
        if handler is None:
            return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}
        result: dict[str, Any] = handler(req)
        return result


class _CtlServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    node: Node | None = None


class _CtlHandler(socketserver.StreamRequestHandler):
    server: _CtlServer

    def handle(self) -> None:
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                node = self.server.node
                if node is None:
                    reply: dict[str, Any] = {"ok": False, "error": "starting"}
                else:
                    reply = node.dispatch(json.loads(line))
            except Exception as e:
                logging.exception("control command failed")
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()
            if reply.get("quitting") and self.server.node is not None:
                self.server.node.quit.set()
                return


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(EXIT_ORPHANED)
        time.sleep(0.2)


def _parse_conf(items: list[str]) -> dict[str, Any]:
    conf: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        conf[key] = json.loads(raw)
    return conf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--self", dest="self_addr", default=None)
    p.add_argument("--partners", default="")
    p.add_argument(
        "--transport", default="tcp", help=f"{', '.join(sorted(TRANSPORTS))}, or module:attribute"
    )
    p.add_argument("--ctl-port", type=int, required=True)
    p.add_argument("--journal", default=None)
    p.add_argument("--dump", default=None)
    p.add_argument("--readonly", action="store_true")
    p.add_argument("--batch", type=int, choices=[0, 1], default=1)
    p.add_argument("--dynamic", action="store_true")
    p.add_argument("--conf", action="append", default=[], help="extra SyncObjConf key=<json value>")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument(
        "--grpc-config", action="append", default=[], help="TransportConfig key=<json value>"
    )
    args = p.parse_args(argv)
    args.partners = [x for x in args.partners.split(",") if x]
    args.conf = _parse_conf(args.conf)
    args.grpc_config = _parse_conf(args.grpc_config)
    if not args.readonly and not args.self_addr:
        p.error("--self is required unless --readonly")

    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    if not args.readonly:
        raft_port = int(args.self_addr.rsplit(":", 1)[1])
        if not _port_free(raft_port):
            print(f"raft port {raft_port} is in use", file=sys.stderr, flush=True)
            return EXIT_PORT_IN_USE
    try:
        server = _CtlServer(("127.0.0.1", args.ctl_port), _CtlHandler)
    except OSError as e:
        print(f"control port {args.ctl_port}: {e}", file=sys.stderr, flush=True)
        return EXIT_PORT_IN_USE

    node = Node(args)
    server.node = node
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    print(f"node ready pid={os.getpid()} self={args.self_addr}", file=sys.stderr, flush=True)

    node.quit.wait()
    # Shut down without waiting on anything that could hang (a busy tick thread, transport
    # threads): destroy with a bounded wait, then leave with os._exit.
    with contextlib.suppress(Exception):
        node.obj.destroy()
        deadline = time.monotonic() + 5.0
        while node.obj.tick_thread_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    with contextlib.suppress(Exception):
        server.server_close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

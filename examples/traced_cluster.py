"""A traced 3-node key-value cluster over raftgrpc, with JWT auth and a leader failover.

Run it with ``make demo`` (or ``python examples/traced_cluster.py``). It

1. creates a signing key and a key set (what ``raftgrpc token keygen`` writes),
2. starts 3 node processes whose transports come from one ``TransportBuilder``: structured
   logging, OpenTelemetry tracing (every Raft message sampled, for the demo), JWT auth in
   enforce mode (``--secure``: mTLS too),
3. writes keys from every node, kills the leader with SIGKILL, shows the failover, writes
   again through the survivors and checks that they hold the same data,
4. prints a trace summary: one client write followed across the nodes, and one Raft
   message followed from its sender to its receiver and back.

Each node appends its spans to ``spans-<n>.jsonl`` and its JSON log to ``node-<n>.log`` in
the work directory (printed at the end). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans are
also exported over OTLP (e.g. to Jaeger: ``docker run -p 4317:4317 -p 16686:16686
jaegertracing/all-in-one``). Finishes by itself within a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from pysyncobj import SyncObj, SyncObjConf, replicated

from raftgrpc import TlsConfig, TransportBuilder
from raftgrpc import testing as pki
from raftgrpc.interceptors import auth, tracing
from raftgrpc.interceptors.log import JsonFormatter

AUDIENCE = "raftgrpc-demo"
ISSUER = "raftgrpc-demo-ca"
KID = "demo-1"


# --------------------------------------------------------------------------- a node


class KeyValueStore(SyncObj):  # type: ignore[misc]
    """A replicated dict whose writes carry the writer's trace context."""

    def __init__(self, me: str, partners: list[str], transport: Any, node_tracer: Any) -> None:
        conf = SyncObjConf(dynamicMembershipChange=False, commandsWaitLeader=True)
        super().__init__(me, partners, conf, transportClass=transport)
        self.data: dict[str, str] = {}
        self._tracer = node_tracer
        self._me = me

    def put(self, key: str, value: str) -> None:
        """Write ``key`` from this node inside a client span, and wait for the commit."""
        with self._tracer.start_as_current_span(
            "kv.put", kind=trace.SpanKind.CLIENT, attributes={"kv.key": key}
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            self._apply_put(key, value, carrier, sync=True, timeout=10)

    @replicated  # type: ignore[untyped-decorator]
    def _apply_put(self, key: str, value: str, carrier: dict[str, str]) -> None:
        # Runs on every node, on its tick thread, once the entry is committed. Its span joins
        # the writer's trace: the writer's context travelled inside the command.
        with self._tracer.start_as_current_span(
            "kv.apply",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.CONSUMER,
            attributes={"kv.key": key, "raftgrpc.node": self._me},
        ):
            self.data[key] = value


class JsonLinesExporter(SpanExporter):  # type: ignore[misc]
    """Appends finished spans to a file, one JSON object per line (for the summary)."""

    def __init__(self, path: Path, node: str) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._node = node

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.context
            record = {
                "node": self._node,
                "name": span.name,
                "trace": f"{ctx.trace_id:032x}",
                "span": f"{ctx.span_id:016x}",
                "parent": f"{span.parent.span_id:016x}" if span.parent else None,
                "start": span.start_time,
                "end": span.end_time,
                "attributes": dict(span.attributes or {}),
            }
            self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def node_builder(workdir: Path, me: str, provider: Any, secure: bool) -> TransportBuilder:
    """The one builder configuration of the cluster, as each node makes it."""
    log = logging.getLogger("raftgrpc")
    builder = TransportBuilder().with_logging(log).with_tracing(provider, sample_ratio=1.0)
    if secure:
        # One configuration for every node: each finds its own certificate by its id.
        builder.with_tls(
            lambda node_id: TlsConfig(
                cert_file=workdir / f"{pki.file_stem(node_id)}.crt",
                key_file=workdir / f"{pki.file_stem(node_id)}.key",
                ca_file=workdir / "ca.crt",
                require_client_cert=True,
            )
        )
    verifier = auth.TokenVerifier(
        auth.KeySet.from_file(workdir / "jwks.json"), audience=AUDIENCE, issuer=ISSUER
    )
    private_key = (workdir / "signing.pem").read_bytes()

    def tokens(node_id: str) -> auth.TokenSource:
        return auth.SigningTokenSource(
            private_key, KID, "ES256", subject=node_id, audience=AUDIENCE, issuer=ISSUER
        )

    return builder.with_jwt(
        verifier=verifier, tokens=tokens, mode=auth.AuthMode.ENFORCE, allow_insecure_loopback=True
    )


def run_node(
    me: str, partners: list[str], workdir: Path, secure: bool, commands: Any, replies: Any
) -> None:
    """A node process: serve commands from the parent until told to stop."""
    index = Path(me.replace(":", "_")).name
    handler = logging.FileHandler(workdir / f"node-{index}.log")
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    provider = tracing.tracer_provider_from_env("raftgrpc-demo", node_id=me)
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(workdir / f"spans-{index}.jsonl", me))
    )
    transport = node_builder(workdir, me, provider, secure).build()
    store = KeyValueStore(me, partners, transport, provider.get_tracer("demo.kv"))
    try:
        while True:
            command, args = commands.get()
            if command == "stop":
                break
            try:
                if command == "put":
                    store.put(*args)
                    replies.put((me, "ok", None))
                elif command == "state":
                    leader = store._getLeader()
                    replies.put((me, "state", (leader.id if leader else None, dict(store.data))))
            except Exception as exc:  # reported to the parent, which decides
                replies.put((me, "error", repr(exc)))
    finally:
        store.destroy()  # asynchronous: the tick thread closes the transport
        tick_thread = getattr(store, "_SyncObj__thread", None)
        if tick_thread is not None:
            tick_thread.join(10)
        provider.shutdown()  # then flush the last spans


# --------------------------------------------------------------------------- the parent


class Cluster:
    """The parent's handle on the node processes."""

    def __init__(self, addresses: list[str], workdir: Path, secure: bool) -> None:
        ctx = mp.get_context("spawn")
        self.addresses = addresses
        # One pair of queues per node: a process killed while it writes to a queue leaves
        # that queue's lock taken, so no queue is shared between nodes.
        self.commands = {a: ctx.Queue() for a in addresses}
        self.replies = {a: ctx.Queue() for a in addresses}
        self.procs = {
            a: ctx.Process(
                target=run_node,
                args=(a, [p for p in addresses if p != a], workdir, secure),
                kwargs={"commands": self.commands[a], "replies": self.replies[a]},
                name=a,
                daemon=True,
            )
            for a in addresses
        }
        for p in self.procs.values():
            p.start()

    def ask(self, node: str, command: str, *args: Any, timeout: float = 15) -> Any:
        self.commands[node].put((command, args))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, kind, value = self.replies[node].get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "error":
                raise RuntimeError(f"{node}: {value}")
            return value
        raise TimeoutError(f"{node} did not answer {command!r} in {timeout} s")

    def leader(self, among: list[str], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = {a: self.ask(a, "state")[0] for a in among}
            agreed = set(views.values())
            if len(agreed) == 1 and None not in agreed and agreed <= set(among):
                return agreed.pop()  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise TimeoutError(f"no leader among {among} in {timeout} s")

    def stop(self) -> None:
        for a, p in self.procs.items():
            if p.is_alive():
                self.commands[a].put(("stop", ()))
        for p in self.procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def prepare(workdir: Path, addresses: list[str], secure: bool) -> None:
    """Keys (and certificates) as an operator would make them: with the ``raftgrpc`` command."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "raftgrpc",
            "token",
            "keygen",
            "--alg",
            "ES256",
            "--kid",
            KID,
            "--private-out",
            str(workdir / "signing.pem"),
            "--jwks",
            str(workdir / "jwks.json"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if secure:
        ca = pki.CertificateAuthority.create(workdir, name="ca")
        for address in addresses:
            ca.issue_node(address, directory=workdir)


def free_addresses(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return [f"127.0.0.1:{port}" for port in ports]


def load_spans(workdir: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(workdir.glob("spans-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(json.loads(line))
    return spans


def short(node: str, names: Mapping[str, str]) -> str:
    return names.get(node, node)


def print_tree(
    spans: list[dict[str, Any]], trace_id: str, names: Mapping[str, str], keep: Callable[..., bool]
) -> int:
    in_trace = [s for s in spans if s["trace"] == trace_id and keep(s)]
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["span"] for s in in_trace}
    for s in in_trace:
        parent = s["parent"] if s["parent"] in ids else None
        by_parent.setdefault(parent, []).append(s)
    t0 = min(s["start"] for s in in_trace)

    def show(span: dict[str, Any], depth: int) -> None:
        attrs = span["attributes"]
        detail = ", ".join(
            f"{k.split('.')[-1]}={short(v, names) if k == 'raftgrpc.peer' else v}"
            for k, v in attrs.items()
            if k in ("kv.key", "raftgrpc.peer", "raftgrpc.term", "raftgrpc.entries")
        )
        start_ms = (span["start"] - t0) / 1e6
        took_ms = (span["end"] - span["start"]) / 1e6
        print(
            f"    {'  ' * depth}{span['name']:<38} on {short(span['node'], names):<6}"
            f" +{start_ms:7.2f} ms {took_ms:6.2f} ms  {detail}"
        )
        for child in sorted(by_parent.get(span["span"], []), key=lambda s: s["start"]):
            show(child, depth + 1)

    for root in sorted(by_parent.get(None, []), key=lambda s: s["start"]):
        show(root, 0)
    return len(in_trace)


def summarize(workdir: Path, names: Mapping[str, str], key: str) -> bool:
    spans = load_spans(workdir)
    print(f"\ntrace summary ({len(spans)} spans in {workdir}/spans-*.jsonl)")
    put = next(
        (s for s in spans if s["name"] == "kv.put" and s["attributes"].get("kv.key") == key), None
    )
    if put is None:
        print("  FAILED: the client span of the write is missing")
        return False
    print(f"\n  1. the client write of {key!r}, followed across the nodes (trace {put['trace']}):")
    applied = {s["node"] for s in spans if s["trace"] == put["trace"] and s["name"] == "kv.apply"}
    print_tree(spans, put["trace"], names, lambda s: s["name"].startswith("kv."))
    # A Raft message that crossed nodes and got an answer inside the same trace.
    receives = [
        s for s in spans if s["name"].startswith("raftgrpc.receive") and s["parent"] is not None
    ]
    chains = {}
    for s in receives:
        chains.setdefault(s["trace"], set()).add(s["node"])
    chain = next((t for t, nodes in chains.items() if len(nodes) >= 2), None)
    if chain is not None:
        print(f"\n  2. a Raft message and the answer it caused (trace {chain}):")
        print_tree(spans, chain, names, lambda s: s["name"].startswith("raftgrpc."))
    ok = len(applied) >= 2 and chain is not None
    print(
        f"\n  the write was applied under its trace on {len(applied)} nodes; "
        f"raftgrpc spans cross nodes: {'yes' if chain else 'no'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3, help="keys each node writes per phase")
    parser.add_argument("--secure", action="store_true", help="mTLS as well as JWT")
    parser.add_argument("--workdir", help="where keys, logs and spans go (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="raftgrpc-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    addresses = free_addresses(3)
    names = {a: f"node{i + 1}" for i, a in enumerate(addresses)}
    prepare(workdir, addresses, args.secure)
    security = "mTLS + JWT (enforce)" if args.secure else "JWT (enforce, loopback)"
    print(f"starting 3 nodes: {', '.join(f'{names[a]}={a}' for a in addresses)}; {security}")
    started = time.monotonic()
    cluster = Cluster(addresses, workdir, args.secure)
    acknowledged: dict[str, str] = {}
    ok = False
    try:
        leader = cluster.leader(addresses)
        print(f"  leader elected: {names[leader]} after {time.monotonic() - started:.2f} s")
        for i in range(args.writes):
            for a in addresses:
                key, value = f"{names[a]}/k{i}", f"v{i}"
                cluster.ask(a, "put", key, value)
                acknowledged[key] = value
        print(f"  {len(acknowledged)} writes committed, from every node")
        print(f"  killing the leader {names[leader]} (SIGKILL)")
        killed_at = time.monotonic()
        pid = cluster.procs[leader].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        cluster.procs[leader].join(5)
        survivors = [a for a in addresses if a != leader]
        new_leader = cluster.leader(survivors)
        failover = time.monotonic() - killed_at
        print(f"  new leader: {names[new_leader]}, {failover:.2f} s after the kill")
        for i in range(args.writes):
            for a in survivors:
                key, value = f"{names[a]}/after-failover-{i}", f"w{i}"
                cluster.ask(a, "put", key, value)
                acknowledged[key] = value
        # Follow a write made on a follower: it travels to the leader and back out.
        follower = next(a for a in survivors if a != new_leader)
        traced_key = f"{names[follower]}/after-failover-0"
        deadline = time.monotonic() + 10
        states = {}
        while time.monotonic() < deadline:
            states = {a: cluster.ask(a, "state")[1] for a in survivors}
            if all(s == acknowledged for s in states.values()):
                break
            time.sleep(0.05)
        same = all(s == acknowledged for s in states.values())
        print(
            f"  survivors hold all {len(acknowledged)} acknowledged writes: "
            f"{'yes' if same else 'NO'}"
        )
        cluster.stop()
        traced = summarize(workdir, names, traced_key)
        ok = same and traced
    finally:
        cluster.stop()
    elapsed = time.monotonic() - started
    print(f"\nlogs: {workdir}/node-*.log (JSON lines); finished in {elapsed:.1f} s")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

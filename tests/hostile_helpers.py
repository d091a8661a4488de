"""Helpers for tests/test_hostile_suite.py: a live in-process PySyncObj cluster on GrpcTransport
that keeps committing writes, spies on the nodes' SyncObj callbacks, a resource sampler, and
raw TCP / HTTP/2 clients for input that no gRPC client would send."""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from pysyncobj import SyncObjConf

from raftgrpc._transport.inbound import STREAM_METHOD
from tests.helpers import KV, free_port, wait_until

EVIL_TERM = 10**6
"""Every Raft message an attacker sends has a term (or index) at least this large, or carries
:data:`EVIL_BYTES`: the spy recognises anything of the attacker's that reached SyncObj."""
EVIL_BYTES = b"EVIL"


# --------------------------------------------------------------------------- the cluster


def _is_evil(message: dict[str, Any]) -> bool:
    for key in ("term", "last_log_index", "commit_index", "prevLogIdx", "next_node_idx"):
        value = message.get(key)
        if isinstance(value, int) and value >= EVIL_TERM:
            return True
    for key in ("command", "data"):
        value = message.get(key)
        if isinstance(value, bytes) and EVIL_BYTES in value:
            return True
    for entry in message.get("entries") or ():
        if EVIL_BYTES in entry[0] or entry[1] >= EVIL_TERM or entry[2] >= EVIL_TERM:
            return True
    serialized = message.get("serialized")
    return isinstance(serialized, tuple) and EVIL_BYTES in serialized[0]


class Spy:
    """Wraps a node's transport callbacks into SyncObj (they run on its tick thread): counts
    every delivered message, and records the attacker's (:func:`_is_evil`) and every
    read-only connect and peer disconnect."""

    def __init__(self, node: KV) -> None:
        transport = node._SyncObj__transport
        self.lock = threading.Lock()
        self.delivered = 0
        self.evil: list[str] = []
        self.readonly_connected: list[str] = []
        self.disconnected: list[str] = []
        on_message = transport._onMessageReceivedCallback
        on_readonly = transport._onReadonlyNodeConnectedCallback
        on_disconnect = transport._onNodeDisconnectedCallback

        def message(node: Any, msg: dict[str, Any]) -> None:
            with self.lock:
                self.delivered += 1
                if _is_evil(msg):
                    self.evil.append(f"{node.id}: {msg.get('type')}")
            on_message(node, msg)

        def readonly(node: Any) -> None:
            with self.lock:
                self.readonly_connected.append(node.id)
            on_readonly(node)

        def disconnected(node: Any) -> None:
            with self.lock:
                self.disconnected.append(node.id)
            on_disconnect(node)

        transport.setOnMessageReceivedCallback(message)
        transport.setOnReadonlyNodeConnectedCallback(readonly)
        transport.setOnNodeDisconnectedCallback(disconnected)

    def mark(self) -> tuple[int, int, int, int]:
        with self.lock:
            return (
                self.delivered,
                len(self.evil),
                len(self.readonly_connected),
                len(self.disconnected),
            )


class Writer:
    """Writes ``w<i>`` = i in a loop, through each node in turn (followers forward to the
    leader), and counts what committed."""

    def __init__(self, nodes: Sequence[KV], timeout_s: float = 10.0) -> None:
        self._nodes = list(nodes)
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self.committed = 0
        self.last_key: str | None = None
        self.commit_times: list[float] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="hostile-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            node = self._nodes[i % len(self._nodes)]
            key = f"w{i}"
            try:
                node.put(key, i, sync=True, timeout=self._timeout_s)
            except Exception as exc:  # SyncObjException: timeout, no leader...
                self.errors.append(f"{key} via {node.selfNode.id}: {exc!r}")
                self._stop.wait(0.05)
            else:
                self.last_key = key
                self.committed += 1
                self.commit_times.append(time.monotonic())
            i += 1

    def commits_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.commit_times) if start <= t <= end)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout_s + 5)


@dataclass
class RaftState:
    term: int
    leader: str | None


class LiveCluster:
    """Three KV nodes on GrpcTransport in this process, a writer that keeps them busy, and a
    spy on each node."""

    def __init__(
        self,
        addresses: list[str],
        transport_of: Callable[[str], Any],
        conf: Callable[[], SyncObjConf],
    ) -> None:
        self.addresses = addresses
        self.nodes: list[KV] = []
        try:
            for me in addresses:
                partners = [a for a in addresses if a != me]
                self.nodes.append(KV(me, partners, transport_of(me), conf()))
            for node in self.nodes:
                node.waitBinded()
        except BaseException:
            self.destroy()
            raise
        self.spies = {node.selfNode.id: Spy(node) for node in self.nodes}
        self.writer = Writer(self.nodes)

    def node(self, address: str) -> KV:
        return next(n for n in self.nodes if n.selfNode.id == address)

    def wait_leader(self, timeout: float = 30.0) -> KV:
        def agreed() -> KV | None:
            leaders = {n._getLeader() for n in self.nodes}
            if len(leaders) != 1:
                return None
            (leader,) = leaders
            if leader is None:
                return None
            node = self.node(leader.id)
            return node if node._isLeader() else None

        found: KV = wait_until(agreed, timeout, "the cluster to agree on a leader")
        return found

    def leader(self) -> KV:
        return self.wait_leader()

    def followers(self) -> list[KV]:
        leader = self.leader()
        return [n for n in self.nodes if n is not leader]

    def state(self) -> dict[str, RaftState]:
        """Each node's term and the leader it follows."""
        return {
            n.selfNode.id: RaftState(n.raftCurrentTerm, getattr(n._getLeader(), "id", None))
            for n in self.nodes
        }

    def wait_converged(self, timeout: float = 20.0) -> str:
        """Wait until the writer's last committed key is applied on every node."""
        key = wait_until(lambda: self.writer.last_key, timeout, "a committed write")
        wait_until(
            lambda: all(key in n.data for n in self.nodes),
            timeout,
            f"write {key} to be applied on every node",
        )
        return str(key)

    def destroy(self) -> None:
        with contextlib.suppress(AttributeError):
            self.writer.stop()
        for node in self.nodes:
            node.destroy()
        for node in self.nodes:
            thread = node._SyncObj__thread
            if thread is not None:
                thread.join(15)


def cluster_addresses(n: int = 3) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(n)]


def port_is_free(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As gRPC binds: connections in TIME_WAIT do not hold the port, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
            sock.listen()
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- resources


@dataclass
class Usage:
    py_threads: int
    os_threads: int
    rss: int
    fds: int
    server_threads: int = 0
    """Python threads of raftgrpc's (named raftgrpc-*: the pool that runs services written
    for grpcio's synchronous API; a node serves its streams on its tick thread)."""


@dataclass
class Figures:
    before: Usage
    peak: Usage
    after: Usage | None = None

    def as_dict(self) -> dict[str, Any]:
        after = self.after or self.peak
        return {
            "py_threads": (self.before.py_threads, self.peak.py_threads, after.py_threads),
            "os_threads": (self.before.os_threads, self.peak.os_threads, after.os_threads),
            "rss_mib": tuple(round(u.rss / 2**20, 1) for u in (self.before, self.peak, after)),
            "fds": (self.before.fds, self.peak.fds, after.fds),
            "server_threads": (
                self.before.server_threads,
                self.peak.server_threads,
                after.server_threads,
            ),
        }


def usage() -> Usage:
    proc = psutil.Process()
    threads = threading.enumerate()
    return Usage(
        len(threads),
        proc.num_threads(),
        proc.memory_info().rss,
        proc.num_fds(),
        sum(1 for t in threads if t.name.startswith("raftgrpc-")),
    )


class Sampler:
    """Samples this process's threads, RSS and file descriptors every ``period_s``; keeps the
    first sample and the peak of each."""

    def __init__(self, period_s: float = 0.01) -> None:
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-sampler", daemon=True)
        self.figures: Figures | None = None

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._sample()

    def _sample(self) -> None:
        now = usage()
        assert self.figures is not None
        peak = self.figures.peak
        self.figures.peak = Usage(
            max(peak.py_threads, now.py_threads),
            max(peak.os_threads, now.os_threads),
            max(peak.rss, now.rss),
            max(peak.fds, now.fds),
            max(peak.server_threads, now.server_threads),
        )

    def __enter__(self) -> Sampler:
        self._thread.start()
        first = usage()
        self.figures = Figures(first, first)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


# --------------------------------------------------------------------------- raw clients


def raw_exchange(address: str, data: bytes, timeout: float = 10.0) -> tuple[str, float]:
    """Send ``data`` on a new TCP connection and read until the server closes it.

    Returns ("closed" | "reset" | "open", seconds): "open" if the server still held the
    connection after ``timeout``.
    """
    host, port = address.rsplit(":", 1)
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            while sock.recv(65536):
                pass
        except TimeoutError:
            return "open", time.monotonic() - start
        except (ConnectionResetError, BrokenPipeError):
            return "reset", time.monotonic() - start
    return "closed", time.monotonic() - start


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 3, 4, 6, 7
H2_WINDOW_UPDATE = 8
H2_CANCEL = 8
_END_HEADERS = 0x4
_ACK = 0x1


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _hpack_string(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 127
    return bytes((len(data),)) + data


def grpc_headers(authority: str, path: str = STREAM_METHOD) -> bytes:
    """An HPACK block of literal headers (never indexed, no Huffman) for a gRPC call."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    return b"".join(b"\x00" + _hpack_string(k) + _hpack_string(v) for k, v in headers)


class RawH2:
    """A hand-driven plaintext HTTP/2 connection: what a gRPC client library never sends."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.address = address
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._buffer = b""
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.closed = False

    def handshake(self) -> None:
        """Preface and SETTINGS, then ACK the server's SETTINGS."""
        self.sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
        self.wait_for(lambda f: f[0] == H2_SETTINGS and not f[1] & _ACK, 10, "server SETTINGS")
        self.sock.sendall(h2_frame(H2_SETTINGS, _ACK, 0))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            head, payload = self._buffer[:9], self._buffer[9 : 9 + length]
            self._buffer = self._buffer[9 + length :]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            frame = (head[3], head[4], stream, payload)
            self.frames.append(frame)
            if frame[0] == H2_PING and not frame[1] & _ACK:
                self.sock.sendall(h2_frame(H2_PING, _ACK, 0, payload))
        return True

    def wait_for(
        self, predicate: Callable[[tuple[int, int, int, bytes]], bool], timeout: float, what: str
    ) -> tuple[int, int, int, bytes]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s (frames: {self.frames})")
            self._read(deadline)

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- gRPC streams


@dataclass
class StreamOutcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes] = field(default_factory=list)
    seconds: float = 0.0


def run_stream(
    channel: grpc.Channel,
    requests: Sequence[bytes],
    *,
    metadata: Sequence[tuple[str, str]] | None = None,
    hold_open: bool = False,
    timeout: float = 20.0,
    method: str = STREAM_METHOD,
) -> StreamOutcome:
    """Send ``requests`` on one Raft stream and read it to its end.

    ``hold_open``: the client never half-closes, so only the server can end the stream
    (else the deadline does), and the client cancels after the first response.
    """
    pending: queue.Queue[bytes | None] = queue.Queue()
    for r in requests:
        pending.put(r)
    if not hold_open:
        pending.put(None)

    def gen() -> Iterator[bytes]:
        while (item := pending.get()) is not None:
            yield item

    start = time.monotonic()
    call = channel.stream_stream(method, None, None)(
        gen(), timeout=timeout, metadata=tuple(metadata) if metadata else None
    )
    responses: list[bytes] = []
    try:
        for response in call:
            responses.append(response)
            if hold_open:
                call.cancel()  # type: ignore[no-untyped-call]
        code, details = call.code(), call.details() or ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    finally:
        pending.put(None)
    return StreamOutcome(code, details, responses, time.monotonic() - start)


def insecure_channel(address: str) -> grpc.Channel:
    # A private subchannel pool: a connection of its own, never shared with the cluster's.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def random_garbage(size: int, seed: int) -> bytes:
    """Reproducible random bytes that cannot start an HTTP/2 preface or a TLS record."""
    data = bytearray(random.Random(seed).randbytes(size))
    if data and data[0] in (ord("P"), 0x16):
        data[0] = 0xFF
    return bytes(data)


def literal_header(block: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` in an HPACK block, if it is there as a literal without
    Huffman coding (how gRPC sends grpc-status and grpc-message); None otherwise."""
    at = block.find(bytes((len(name),)) + name)
    if at < 0:
        return None
    start = at + 1 + len(name)
    if start >= len(block) or block[start] & 0x80:  # Huffman-coded or a long value
        return None
    return block[start + 1 : start + 1 + block[start]]

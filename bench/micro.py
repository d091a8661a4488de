"""Transport micro-benchmark: messages/s and bytes/s between two transports, without SyncObj.

Each side runs in its own process and hosts one transport (any name of node.py's TRANSPORTS
table) in ``Host``, a stand-in for the parts of SyncObj a transport uses: its poller, its
SyncObjConf, ``encryptor`` and the tick callbacks. The sender sends ``append_entries`` messages
as fast as its tick loop can, with at most ``--window`` messages not yet acknowledged (the
receiver answers every ``--ack-every`` messages with a ``next_node_idx`` message, as a Raft
follower answers a leader; without a window both transports would only queue in memory and the
benchmark would measure the sender's buffer). After ``--seconds`` it sends an end marker (a
``request_vote`` with term 2 whose ``last_log_index`` is the number of messages sent) and the
receiver reports what arrived: one JSON line on stdout.

Kinds of message (payloads are random, so TCPTransport's zlib compression gains nothing):

* ``entries``: 100 log entries of 10 B each per message (a batched append_entries);
* ``chunks``: 64 KiB snapshot chunks (``serialized`` append_entries).

Run a pair from Python with ``run_pair`` (bench/run.py does), or by hand::

    python bench/micro.py --role recv --transport grpc --me 127.0.0.1:5001 --peer 127.0.0.1:5002
    python bench/micro.py --role send --transport grpc --me 127.0.0.1:5002 --peer 127.0.0.1:5001
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

KINDS = {
    # kind: (description, payload bytes per message)
    "entries": ("append_entries, 100 entries x 10 B", 100 * 10),
    "chunks": ("snapshot chunks, 64 KiB", 64 * 1024),
}
RING = 64  # distinct pre-built messages the sender cycles through


class Host:
    """The parts of SyncObj a transport uses, with a tick loop driven by the caller."""

    def __init__(self, transport: str, me: str, peer: str) -> None:
        from pysyncobj import SyncObjConf
        from pysyncobj.node import TCPNode
        from pysyncobj.poller import createPoller

        from raftgrpc.testing._processes.node import transport_class

        self.conf = SyncObjConf()
        self._poller = createPoller("auto")
        self.encryptor = None
        self._tick_callbacks: list[Any] = []
        self.connected = False
        self.peer = TCPNode(peer)
        self.on_message: Any = None
        self.transport = transport_class(transport)(self, TCPNode(me), [self.peer])
        t = self.transport
        t.setOnNodeConnectedCallback(lambda n: setattr(self, "connected", True))
        t.setOnNodeDisconnectedCallback(lambda n: setattr(self, "connected", False))
        t.setOnMessageReceivedCallback(lambda n, m: self.on_message(m))
        while not t.ready:
            t.tryGetReady()
            self.tick(0.01)

    def addOnTickCallback(self, cb: Any) -> None:
        self._tick_callbacks.append(cb)

    def removeOnTickCallback(self, cb: Any) -> None:
        self._tick_callbacks.remove(cb)

    def tick(self, timeout: float) -> None:
        for cb in list(self._tick_callbacks):
            cb()
        self._poller.poll(timeout)


def _entries_message(i: int) -> dict[str, Any]:
    first = i * 100 + 1
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": first - 1,
        "entries": [(os.urandom(10), first + k, 1) for k in range(100)],
        "prevLogIdx": first - 1,
        "prevLogTerm": 1,
    }


def _chunk_message(i: int) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "serialized": (os.urandom(64 * 1024), i == 0, False),
    }


def _payload_len(m: dict[str, Any]) -> int:
    if "entries" in m:
        return sum(len(e[0]) for e in m["entries"])
    return len(m["serialized"][0])


def run_sender(args: argparse.Namespace) -> dict[str, Any]:
    host = Host(args.transport, args.me, args.peer)
    build = _entries_message if args.kind == "entries" else _chunk_message
    ring = [build(i + 1) for i in range(RING)]  # none of them opens a transfer
    acked = [-1]

    def on_message(m: dict[str, Any]) -> None:
        if m.get("type") == "next_node_idx":
            acked[0] = max(acked[0], int(m["next_node_idx"]))

    host.on_message = on_message
    # Start once both directions work: ping (a request_vote with term 3) until the receiver
    # answers with an acknowledgement of 0 messages.
    deadline = time.monotonic() + 30.0
    last_ping = 0.0
    while acked[0] < 0:
        if time.monotonic() > deadline:
            return {"ok": False, "error": "no answer from the receiver in 30 s"}
        if host.connected and time.monotonic() - last_ping > 0.05:
            ping = {"type": "request_vote", "term": 3, "last_log_index": 0, "last_log_term": 0}
            host.transport.send(host.peer, ping)
            last_ping = time.monotonic()
        host.tick(0.01)
    sent = 0
    failed_sends = 0
    start = time.monotonic()
    end = start + args.seconds
    while time.monotonic() < end:
        host.tick(0.0)
        room = min(args.window - (sent - acked[0]), args.per_tick)
        for _ in range(room):
            # The first chunk opens the transfer; later ones are continuations.
            m = ring[sent % RING] if sent else build(0)
            if not host.transport.send(host.peer, m):
                failed_sends += 1
            sent += 1
        if room <= 0:
            host.tick(0.001)  # wait for an acknowledgement
    send_seconds = time.monotonic() - start
    host.transport.send(
        host.peer, {"type": "request_vote", "term": 2, "last_log_index": sent, "last_log_term": 1}
    )
    result = {
        "ok": True,
        "role": "send",
        "sent": sent,
        "failed_sends": failed_sends,
        "send_seconds": send_seconds,
    }
    print(json.dumps(result), flush=True)
    # Keep the transport running (it may still hold queued data) until the parent says stop.
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    hard = time.monotonic() + args.seconds + 120.0
    while not stop.is_set() and time.monotonic() < hard:
        host.tick(0.01)
    _destroy(host)
    return result


def run_receiver(args: argparse.Namespace) -> dict[str, Any]:
    host = Host(args.transport, args.me, args.peer)
    state: dict[str, Any] = {"count": 0, "bytes": 0, "first": None, "last": None, "expected": None}

    acks = {"sent": -1, "at": 0.0}

    def ack() -> None:
        msg = {"type": "next_node_idx", "next_node_idx": state["count"], "reset": False}
        msg["success"] = True
        if host.transport.send(host.peer, msg):
            acks["sent"], acks["at"] = state["count"], time.monotonic()

    def on_message(m: dict[str, Any]) -> None:
        now = time.monotonic()
        if m.get("type") == "request_vote" and m.get("term") == 3:  # the sender's ping
            ack()
            return
        if m.get("type") == "request_vote" and m.get("term") == 2:
            state["expected"] = int(m["last_log_index"])
            state["end_at"] = now
            return
        state["count"] += 1
        state["bytes"] += _payload_len(m)
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        if state["count"] % args.ack_every == 0:
            ack()

    host.on_message = on_message
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + args.seconds + 60.0
    while time.monotonic() < deadline:
        host.tick(0.01)
        if (
            acks["sent"] >= 0
            and state["count"] > acks["sent"]
            and time.monotonic() > acks["at"] + 0.05
        ):
            ack()  # an acknowledgement the transport refused (reconnecting) is repeated
        exp = state["expected"]
        if exp is not None and (state["count"] >= exp or time.monotonic() > state["end_at"] + 10):
            break
    first, last = state["first"], state["last"]
    window = (last - first) if first is not None and last is not None else 0.0
    # The first message is not part of the window: rate = (count - 1) / window.
    n = state["count"]
    result = {
        "ok": state["expected"] is not None and n == state["expected"],
        "role": "recv",
        "received": n,
        "expected": state["expected"],
        "payload_bytes": state["bytes"],
        "window_seconds": window,
        "msgs_per_sec": (n - 1) / window if window > 0 else 0.0,
        "mb_per_sec": (state["bytes"] * (n - 1) / n) / window / 1e6 if window > 0 else 0.0,
    }
    if state["expected"] is None:
        result["error"] = "end marker never arrived"
    elif n != state["expected"]:
        result["error"] = f"received {n} of {state['expected']} messages"
    print(json.dumps(result), flush=True)
    _destroy(host)
    return result


def _destroy(host: Host) -> None:
    try:
        host.transport.destroy()
    except Exception as e:  # reported, never fatal: the numbers are already out
        print(f"destroy: {type(e).__name__}: {e}", file=sys.stderr)


def run_pair(
    transport: str,
    kind: str,
    seconds: float,
    workdir: Path,
    *,
    window: int = 128,
    ack_every: int = 16,
    per_tick: int = 16,
) -> dict[str, Any]:
    """Run a receiver and a sender process on loopback; return the receiver's report."""
    from raftgrpc.testing import free_port

    # The sender gets the higher address: TCPTransport's higher address dials, so the sender
    # connects to a receiver that already listens instead of waiting out connectionRetryTime.
    a, b = sorted([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
    common = [
        "--transport",
        transport,
        "--kind",
        kind,
        "--seconds",
        str(seconds),
        "--window",
        str(window),
        "--ack-every",
        str(ack_every),
        "--per-tick",
        str(per_tick),
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    stack = contextlib.ExitStack()
    logs = {
        r: stack.enter_context((workdir / f"micro-{transport}-{kind}-{r}.log").open("w"))
        for r in "rs"
    }
    try:
        recv = subprocess.Popen(
            [sys.executable, __file__, "--role", "recv", "--me", a, "--peer", b, *common],
            stdout=subprocess.PIPE,
            stderr=logs["r"],
            stdin=subprocess.DEVNULL,
            text=True,
        )
        procs.append(recv)
        assert recv.stdout is not None
        line = recv.stdout.readline()
        if not line:
            return {"ok": False, "error": "receiver died at start-up (see its log)"}
        send = subprocess.Popen(
            [sys.executable, __file__, "--role", "send", "--me", b, "--peer", a, *common],
            stdout=subprocess.PIPE,
            stderr=logs["s"],
            stdin=subprocess.PIPE,
            text=True,
        )
        procs.append(send)
        assert send.stdout is not None and send.stdin is not None
        sent_line = send.stdout.readline()
        report_line = recv.stdout.readline()
        send.stdin.close()
        res: dict[str, Any] = (
            json.loads(report_line)
            if report_line
            else {"ok": False, "error": "receiver died (see its log)"}
        )
        res["sender"] = json.loads(sent_line) if sent_line else {"ok": False}
        if not res["sender"].get("ok"):
            res["ok"] = False
            res.setdefault("error", f"sender: {res['sender']}")
        return res
    finally:
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        stack.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--role", choices=["send", "recv"], required=True)
    p.add_argument("--transport", required=True)
    p.add_argument("--me", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--kind", choices=sorted(KINDS), default="entries")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--window", type=int, default=128, help="messages sent but not acknowledged")
    p.add_argument("--ack-every", type=int, default=16)
    p.add_argument("--per-tick", type=int, default=16, help="messages sent per tick at most")
    args = p.parse_args()
    res = run_sender(args) if args.role == "send" else run_receiver(args)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

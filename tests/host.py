"""A minimal stand-in for SyncObj's tick loop that hosts a GrpcTransport in-process.

The host owns what SyncObj gives a transport (its real poller and SyncObjConf, tick
callbacks) and records every callback, so tests can hold the tick thread still and look at
exactly what the transport tells SyncObj, and when. As in SyncObj, the transport's gRPC I/O
(its server and its streams) runs only while the host ticks: a test ticks it by hand, or
lets a thread of its own tick it (``background=True``, as SyncObj's autoTick does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.poller import createPoller

from raftgrpc import GrpcTransport, TransportConfig
from tests.helpers import free_port, wait_until


class Host:
    """Stands in for SyncObj: ticks on demand and records the transport's callbacks."""

    def __init__(
        self,
        me: str | None,
        others: list[str],
        config: TransportConfig,
        conf: SyncObjConf | None = None,
        factory: Callable[..., GrpcTransport] | None = None,
        background: bool = False,
    ) -> None:
        self.conf = conf if conf is not None else SyncObjConf()
        self._ticker: threading.Thread | None = None
        self._ticking = threading.Event()
        self._ticks = 0
        self._tick_done = threading.Condition()
        self._poller = createPoller("auto")
        self._tick_callbacks: list[Any] = []
        self.events: list[tuple[str, str]] = []
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.tick_thread: threading.Thread | None = None
        self.node = TCPNode(me) if me else None
        others_nodes = [TCPNode(o) for o in others]
        if factory is None:
            self.transport = GrpcTransport(self, self.node, others_nodes, config=config)
        else:
            self.transport = factory(self, self.node, others_nodes)
        t = self.transport
        t.setOnNodeConnectedCallback(lambda n: self._event("connected", n))
        t.setOnNodeDisconnectedCallback(lambda n: self._event("disconnected", n))
        t.setOnReadonlyNodeConnectedCallback(lambda n: self._event("ro-connected", n))
        t.setOnReadonlyNodeDisconnectedCallback(lambda n: self._event("ro-disconnected", n))
        t.setOnMessageReceivedCallback(self._message)
        while not t.ready:
            t.tryGetReady()
        if background:
            self._ticking.set()
            self._ticker = threading.Thread(target=self._tick_forever, daemon=True)
            self._ticker.start()

    def _tick_forever(self) -> None:
        while self._ticking.is_set():
            self._tick_once(0.01)

    def stop_ticking(self) -> None:
        """End the background ticking (before the test thread ticks or destroys)."""
        self._ticking.clear()
        if self._ticker is not None:
            self._ticker.join(10)
            self._ticker = None

    # the parts of SyncObj a transport uses
    def addOnTickCallback(self, cb: Any) -> None:
        self._tick_callbacks.append(cb)

    def removeOnTickCallback(self, cb: Any) -> None:
        self._tick_callbacks.remove(cb)

    def _event(self, kind: str, node: Any) -> None:
        self._check_thread()
        self.events.append((kind, node.id))

    def _message(self, node: Any, message: dict[str, Any]) -> None:
        self._check_thread()
        self.messages.append((node.id, message))

    def _check_thread(self) -> None:
        assert threading.current_thread() is self.tick_thread, "callback off the tick thread"

    def tick(self, timeout: float = 0.01) -> None:
        """One tick; with background ticking, wait for the next one instead."""
        if self._ticker is not None:
            with self._tick_done:
                seen = self._ticks
                self._tick_done.wait_for(lambda: self._ticks > seen, 5.0)
            return
        self._tick_once(timeout)

    def _tick_once(self, timeout: float) -> None:
        self.tick_thread = threading.current_thread()
        for cb in list(self._tick_callbacks):
            cb()
        self._poller.poll(timeout)
        with self._tick_done:
            self._ticks += 1
            self._tick_done.notify_all()

    def tick_until(
        self, predicate: Any, timeout: float, what: str, also: tuple[Host, ...] = ()
    ) -> None:
        """Tick this host, and the hosts ``also`` (their gRPC I/O runs only while they
        tick, as in SyncObj), until ``predicate()`` holds."""

        def step() -> Any:
            for other in also:
                other.tick(0.001)
            self.tick(0.005 if also else 0.01)
            return predicate()

        wait_until(step, timeout, what)


def destroy_all(made: list[Host]) -> None:
    """Destroy every host's transport (as its tick thread)."""
    for h in made:
        h.stop_ticking()
        h.tick_thread = threading.current_thread()
        h.transport.destroy()


def pair(
    hosts: list[Host],
    config: TransportConfig,
    factory: Callable[..., GrpcTransport] | None = None,
) -> tuple[Host, Host, str, str]:
    """Two connected hosts, appended to ``hosts``; returns them and their addresses."""
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    a = Host(a_addr, [b_addr], config, factory=factory)
    hosts.append(a)
    b = Host(b_addr, [a_addr], config, factory=factory)
    hosts.append(b)
    a.tick_until(lambda: ("connected", b_addr) in a.events, 10, "a connected to b", also=(b,))
    b.tick_until(lambda: ("connected", a_addr) in b.events, 10, "b connected to a", also=(a,))
    return a, b, a_addr, b_addr

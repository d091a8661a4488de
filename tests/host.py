"""A minimal stand-in for SyncObj's tick loop that hosts a GrpcTransport in-process.

The host owns what SyncObj gives a transport (its real poller and SyncObjConf, tick
callbacks) and records every callback, so tests can hold the tick thread still and look at
exactly what the transport tells SyncObj, and when.
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
    ) -> None:
        self.conf = conf if conf is not None else SyncObjConf()
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
        self.tick_thread = threading.current_thread()
        for cb in list(self._tick_callbacks):
            cb()
        self._poller.poll(timeout)

    def tick_until(self, predicate: Any, timeout: float, what: str) -> None:
        def step() -> Any:
            self.tick()
            return predicate()

        wait_until(step, timeout, what)


def destroy_all(made: list[Host]) -> None:
    """Destroy every host's transport (as its tick thread)."""
    for h in made:
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
    a.tick_until(lambda: ("connected", b_addr) in a.events, 10, "a connected to b")
    b.tick_until(lambda: ("connected", a_addr) in b.events, 10, "b connected to a")
    return a, b, a_addr, b_addr

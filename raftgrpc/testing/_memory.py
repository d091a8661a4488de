"""An in-memory PySyncObj transport: a whole cluster in one process, without sockets.

:class:`InMemoryTransport` is to raftgrpc what hashicorp/raft's ``InmemTransport`` is to
``NetworkTransport``: a test double that keeps the transport contract (the one the contract
suite in :mod:`raftgrpc.testing.contract` checks for every transport) so that tests of code
built on SyncObj run fast and deterministically, and can cut links that a real network would
lose. The nodes of one test share a :class:`MemoryNetwork`, the wire they are plugged into::

    network = MemoryNetwork()
    a = SyncObj("a:1", ["b:1"], conf, transportClass=network.transport_class)
    b = SyncObj("b:1", ["a:1"], conf, transportClass=network.transport_class)
    network.partition(["a:1"], ["b:1"])  # both see the other disconnected; redials fail
    network.heal()

What it keeps of the contract, as TCPTransport does:

* A node "listens" on its id: a second live node with the same id fails to get ready
  (``TransportNotReadyError`` after ``maxBindRetries``, one attempt per ``bindRetryTime``).
* One link per pair of nodes: the node whose id sorts higher dials (a read-only node dials
  everyone), at most once per ``connectionRetryTime``; the dialer reports the peer connected
  at once, the listener when the dialer's identity arrives (a read-only dialer is a fresh
  ``Node("0")``, ``Node("1")``... to it, reported through the read-only callbacks); an
  unknown identity is hung up on.
* Every callback into SyncObj runs on the receiving node's tick thread: events are queued
  for it and a byte on a socket pair subscribed to its poller wakes it (so a hop costs a
  wake-up, not an ``autoTickPeriod``).
* ``send`` returns False when there is no link; when the link was lost meanwhile it reports
  the peer disconnected first, synchronously, as TcpConnection does. Messages are deep
  copies: sender and receiver never share a mutable object, as on a real network.
* ``destroy`` hangs up every link (peers see the disconnect on their next tick) and releases
  the socket pair; nothing of it reaches SyncObj afterwards.
"""

from __future__ import annotations

import collections
import copy
import functools
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from pysyncobj.node import Node
from pysyncobj.transport import Transport, TransportNotReadyError

from raftgrpc._pysyncobj import drop_callbacks, poller_of

__all__ = ["InMemoryTransport", "MemoryNetwork"]

_POLL_READ = 1  # pysyncobj.poller.POLL_EVENT_TYPE.READ

_READONLY = "readonly"  # the identity a read-only node dials with (TCPTransport's too)


class _Link:
    """One connection between two transports; ``closed`` is set once, by either side or by
    the network (under the network's lock), and never cleared."""

    __slots__ = ("closed", "ends")

    def __init__(self, dialer: InMemoryTransport, listener: InMemoryTransport) -> None:
        self.ends = (dialer, listener)
        self.closed = False

    def other(self, end: InMemoryTransport) -> InMemoryTransport:
        return self.ends[1] if self.ends[0] is end else self.ends[0]


class MemoryNetwork:
    """The wire the :class:`InMemoryTransport` nodes of one test share: who listens on which
    id, the links between them, and which pairs are cut off from each other.

    Thread-safe: nodes tick on their own threads, and a test cuts or heals links from its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listening: dict[str, InMemoryTransport] = {}
        self._links: set[_Link] = set()
        self._cut: set[frozenset[str]] = set()

    @property
    def transport_class(self) -> Any:
        """What SyncObj takes as ``transportClass``: builds an :class:`InMemoryTransport` on
        this network (SyncObj calls it as ``transportClass(syncObj, selfNode, otherNodes)``)."""
        return functools.partial(InMemoryTransport, network=self)

    # -- faults a test injects -----------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Cut the link between the nodes with ids ``a`` and ``b``: both sides see the other
        disconnected, and redials fail until :meth:`heal`."""
        self.partition([a], [b])

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different ``groups`` (node ids)."""
        sets = [set(g) for g in groups]
        with self._lock:
            for i, left in enumerate(sets):
                for right in sets[i + 1 :]:
                    self._cut.update(frozenset((x, y)) for x in left for y in right if x != y)
            doomed = [link for link in self._links if self._is_cut(*link.ends)]
            for link in doomed:
                self._close(link, by=None)

    def heal(self) -> None:
        """Allow every link again (the nodes redial by themselves)."""
        with self._lock:
            self._cut.clear()

    # -- the transports' side (every method below is called with the lock held) ----------------

    def _is_cut(self, a: InMemoryTransport, b: InMemoryTransport) -> bool:
        if a.address is None or b.address is None:
            return False
        return frozenset((a.address, b.address)) in self._cut

    def _listen(self, transport: InMemoryTransport) -> bool:
        assert transport.address is not None
        holder = self._listening.get(transport.address)
        if holder is not None and holder is not transport:
            return False
        self._listening[transport.address] = transport
        return True

    def _dial(self, dialer: InMemoryTransport, address: str) -> _Link | None:
        listener = self._listening.get(address)
        if listener is None or listener is dialer or self._is_cut(dialer, listener):
            return None
        link = _Link(dialer, listener)
        self._links.add(link)
        identity = _READONLY if dialer.address is None else dialer.address
        listener._post(("accept", link, identity))
        return link

    def _deliver(self, link: _Link, sender: InMemoryTransport, message: Any) -> bool:
        if link.closed:
            return False
        link.other(sender)._post(("message", link, message))
        return True

    def _close(self, link: _Link, by: InMemoryTransport | None) -> None:
        """Close ``link``; every end but ``by`` (which knows) hears of it."""
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        for end in link.ends:
            if end is not by:
                end._post(("closed", link, None))

    def _leave(self, transport: InMemoryTransport) -> None:
        if transport.address is not None and self._listening.get(transport.address) is transport:
            del self._listening[transport.address]
        for link in [link for link in self._links if transport in link.ends]:
            self._close(link, by=transport)


class InMemoryTransport(Transport):  # type: ignore[misc]  # pysyncobj is untyped
    """A ``pysyncobj.transport.Transport`` whose wire is a :class:`MemoryNetwork`.

    Build it through :attr:`MemoryNetwork.transport_class` (or
    ``functools.partial(InMemoryTransport, network=net)``); node ids are any strings, usually
    the ``host:port`` addresses the same cluster would have on a real transport.
    """

    def __init__(
        self, syncObj: Any, selfNode: Any, otherNodes: Iterable[Any], *, network: MemoryNetwork
    ) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._syncObj = syncObj
        self._network = network
        self.address: str | None = None if selfNode is None else str(selfNode.id)
        """This node's id on the network (None: a read-only node)."""
        self._nodes: dict[str, Any] = {}  # id -> Node SyncObj gave us
        self._links: dict[Any, _Link] = {}  # peer Node -> its current link
        self._peer_of: dict[_Link, Any] = {}  # current link -> peer Node
        self._readonly_peers: set[Any] = set()
        self._readonly_counter = 0
        self._last_dial: dict[str, float] = {}
        self._ready = self.address is None
        self._bind_attempts = 0
        self._last_bind = float("-inf")
        self._bind_over = threading.Event()
        if self._ready:
            self._bind_over.set()
        self._destroyed = False
        # Events for the tick thread; deque appends and pops are atomic.
        self._inbox: collections.deque[tuple[str, _Link, Any]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._syncobj = syncObj
        self._poller = poller_of(syncObj)  # the one PySyncObj internal this transport needs
        self._poller.subscribe(self._wake_r.fileno(), self._on_wake, _POLL_READ)
        for node in otherNodes:
            self.addNode(node)
        syncObj.addOnTickCallback(self._on_tick)

    # -- PySyncObj's Transport contract ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether this node listens on its id (a read-only node always is)."""
        return self._ready

    def tryGetReady(self) -> None:
        """Listen on this node's id, at most once per ``bindRetryTime``; raise
        TransportNotReadyError once ``maxBindRetries`` attempts found the id taken."""
        conf = self._syncObj.conf
        if self._ready or time.monotonic() < self._last_bind + conf.bindRetryTime:
            return
        self._last_bind = time.monotonic()
        with self._network._lock:
            self._ready = not self._destroyed and self._network._listen(self)
        if self._ready:
            self._bind_over.set()
            return
        self._bind_attempts += 1
        if conf.maxBindRetries and self._bind_attempts >= conf.maxBindRetries:
            self._bind_over.set()
            raise TransportNotReadyError

    def waitReady(self) -> None:
        """Block (off the tick thread) until listening, or raise TransportNotReadyError once
        binding gave up."""
        self._bind_over.wait()
        if not self._ready:
            raise TransportNotReadyError

    def addNode(self, node: Any) -> None:
        """Know ``node``: dial it (if this side dials) from the next tick on."""
        self._nodes[str(node.id)] = node

    def dropNode(self, node: Any) -> None:
        """Forget ``node``: hang up on it (reported disconnected now) and stop dialing it."""
        self._nodes.pop(str(node.id), None)
        self._last_dial.pop(str(node.id), None)
        link = self._links.get(node)
        if link is not None:
            with self._network._lock:
                self._network._close(link, by=self)
            self._lost(link)

    def send(self, node: Any, message: Any) -> bool:
        """Queue a copy of ``message`` for ``node``; False if there is no link to it (a link
        lost meanwhile is reported disconnected first)."""
        link = self._links.get(node)
        if link is None:
            return False
        copied = copy.deepcopy(message)
        with self._network._lock:
            sent = self._network._deliver(link, self, copied)
        if not sent:
            self._lost(link)
        return sent

    def destroy(self) -> None:
        """Hang up every link, leave the network and release the wake-up socket pair."""
        if self._destroyed:
            return
        drop_callbacks(self)
        self._syncobj.removeOnTickCallback(self._on_tick)
        with self._network._lock:
            self._destroyed = True
            self._network._leave(self)
        self._links.clear()
        self._peer_of.clear()
        self._inbox.clear()
        self._bind_over.set()
        try:
            self._poller.unsubscribe(self._wake_r.fileno())
        finally:
            self._wake_r.close()
            self._wake_w.close()

    # -- the tick thread's side ------------------------------------------------------------------

    def _post(self, event: tuple[str, _Link, Any]) -> None:
        """Queue ``event`` for this node's tick thread and wake it (any thread; the network's
        lock is held, so a destroyed transport is never woken)."""
        if self._destroyed:
            return
        self._inbox.append(event)
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:  # the pair is full of wake-ups already
            pass

    def _on_wake(self, descr: int, event_type: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._drain()

    def _on_tick(self) -> None:
        if self._destroyed:
            return
        self._drain()
        if self._ready:
            self._dial_missing()

    def _drain(self) -> None:
        # An exception from SyncObj's callback propagates out of its tick, as it would from
        # TCPTransport; the event was popped first, the rest wait for the next drain.
        while self._inbox and not self._destroyed:
            kind, link, payload = self._inbox.popleft()
            if kind == "message":
                node = self._peer_of.get(link)
                if node is not None:
                    self._onMessageReceived(node, payload)
            elif kind == "accept":
                self._accept(link, payload)
            else:  # "closed"
                self._lost(link)

    def _dial_missing(self) -> None:
        retry_s = self._syncObj.conf.connectionRetryTime
        now = time.monotonic()
        for node_id, node in list(self._nodes.items()):
            if node in self._links or not self._dials(node_id):
                continue
            if now - self._last_dial.get(node_id, float("-inf")) < retry_s:
                continue
            self._last_dial[node_id] = now
            with self._network._lock:
                link = self._network._dial(self, node_id)
            if link is not None:
                self._links[node] = link
                self._peer_of[link] = node
                self._onNodeConnected(node)

    def _dials(self, node_id: str) -> bool:
        """One link per pair: the higher id dials (TCPTransport's rule); read-only nodes dial."""
        return self.address is None or self.address > node_id

    def _accept(self, link: _Link, identity: str) -> None:
        if link.closed:
            return
        if identity == _READONLY:
            node = Node(str(self._readonly_counter))
            self._readonly_counter += 1
            self._readonly_peers.add(node)
        else:
            node = self._nodes.get(identity)
            if node is None:  # a stranger: hang up
                with self._network._lock:
                    self._network._close(link, by=self)
                return
            stale = self._links.get(node)
            if stale is not None:  # the peer restarted before its hang-up arrived
                with self._network._lock:
                    self._network._close(stale, by=self)
                del self._peer_of[stale]
        self._links[node] = link
        self._peer_of[link] = node
        if node in self._readonly_peers:
            self._onReadonlyNodeConnected(node)
        else:
            self._onNodeConnected(node)

    def _lost(self, link: _Link) -> None:
        """Forget ``link`` if it is current and tell SyncObj its peer is gone."""
        node = self._peer_of.pop(link, None)
        if node is None:
            return
        if self._links.get(node) is link:
            del self._links[node]
        if node in self._readonly_peers:
            self._readonly_peers.discard(node)
            self._onReadonlyNodeDisconnected(node)
        else:
            self._onNodeDisconnected(node)

"""A cluster of real node processes spread over Linux network namespaces, one node per
namespace, so that a partition is a link taken down, not a hook inside the nodes.

Topology (one :class:`Netns` context)::

    rgtest-<pid>-<k>-n0    rgtest-<pid>-<k>-n1    ...     (one node each)
      lo 127.0.0.1           lo 127.0.0.1                 control port (node.py binds 127.0.0.1)
      eth0 10.213.0.2        eth0 10.213.0.3              Raft port
        |                      |
        v0 -------- br0 ------ v1 ...                     rgtest-<pid>-<k>-hub (a bridge)

Nothing is created in the root namespace: the veth pairs are made directly between the hub
and each node's namespace, so the subnet cannot clash with the host's routes or with a
concurrent run (each run has its own hub), and deleting the namespaces deletes every link.
Raft traffic uses only the namespaces' addresses; the harness reaches a node's control port on
that namespace's loopback from threads that entered the namespace (``setns``; network
namespaces are per thread), so the control channel survives a partition and a partitioned node
can still be asked for its state and given writes.

``cut(host)`` takes the hub's end of the host's veth down: the node's carrier drops, packets
to and from it are lost silently (no reset), as when a cable is pulled; ``heal(host)`` brings
it back up.

Cleanup: ``Netns.close`` (the context exit) deletes the namespaces and checks that they are
gone; an ``atexit`` hook deletes any this process still holds; namespaces of earlier runs whose
process is dead (a ``kill -9`` of pytest) are deleted when the next ``Netns`` is created.
:func:`unavailable` says why the tests cannot run here (not root, no ``ip``, no permission to
create namespaces, veth pairs or bridges), for ``pytest.skip``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from raftgrpc.testing._processes.harness import Cluster, CtlError, NodeProc

T = TypeVar("T")

PREFIX = "rgtest"
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-")
SUBNET = "10.213.0"
"""/24 of the node addresses. It exists only inside the namespaces of one run (the hub has no
link to the root namespace), so any private range works and runs cannot clash."""
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_counter = itertools.count()
_live: set[str] = set()  # namespaces this process created and has not deleted yet
_live_lock = threading.Lock()


class NetnsError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip args...``; NetnsError with its stderr when it fails and ``check``."""
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def root_links() -> set[str]:
    """Names of the links of the calling thread's namespace (``ip link``)."""
    out = ip("-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line}


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_path(ns: str) -> Path:
    for base in (NETNS_DIR, Path("/var/run/netns")):
        if (base / ns).exists():
            return base / ns
    raise NetnsError(f"network namespace {ns!r} not found under {NETNS_DIR}")


def enter(ns: str) -> None:
    """Move the calling thread (only it) into the network namespace ``ns``."""
    fd = os.open(_netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12+
        if setns is not None:
            setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _delete(names: Iterable[str]) -> list[str]:
    """Delete namespaces (their links go with them); the names that could not be deleted."""
    failed = []
    for ns in names:
        proc = ip("netns", "del", ns, check=False)
        if proc.returncode != 0 and ns in list_netns():
            failed.append(f"{ns}: {proc.stderr.strip()}")
        with _live_lock:
            _live.discard(ns)
    return failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose process is dead; return their names."""
    stale = []
    for ns in list_netns():
        m = _NAME_RE.match(ns)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            stale.append(ns)
    _delete(stale)
    return stale


@atexit.register
def _cleanup_at_exit() -> None:
    with _live_lock:
        names = sorted(_live)
    if names:
        _delete(names)


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can. Probes for real:
    a namespace, a veth pair, a bridge and entering the namespace from a thread."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add, veth, bridge)"
    if shutil.which("ip") is None:
        return "network namespace tests need the `ip` command (iproute2)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        cleanup_stale()
        ip("netns", "add", probe)
        with _live_lock:
            _live.add(probe)
        ip("-n", probe, "link", "add", "name", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "name", "pa", "type", "veth", "peer", "name", "pb")
        ip("-n", probe, "link", "set", "pa", "master", "br0")
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: _try(errors, enter, probe))
        t.start()
        t.join()
        if errors:
            raise NetnsError(f"setns into {probe}: {errors[0]}")
    except (NetnsError, OSError, subprocess.SubprocessError) as e:
        return f"cannot create network namespaces, veth pairs or bridges here: {e}"
    finally:
        _delete([probe])
    return None


def _try(errors: list[BaseException], fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as e:
        errors.append(e)


class Host:
    """One node's namespace: its name, address and hub-side link."""

    def __init__(self, net: Netns, index: int) -> None:
        self.net = net
        self.index = index
        self.ns = f"{net.name}-n{index}"
        self.ip = f"{SUBNET}.{index + 2}"
        self.hub_link = f"v{index}"
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Host {self.ns} {self.ip}>"

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on a thread that lives in this namespace (sockets it creates are
        this namespace's: 127.0.0.1 is the namespace's loopback)."""
        with self._pool_lock:
            if self._closed:
                raise NetnsError(f"{self.ns} is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=6,
                    thread_name_prefix=f"netns-{self.ns}",
                    initializer=enter,
                    initargs=(self.ns,),
                )
            pool = self._pool
        return pool.submit(fn, *args, **kwargs).result()

    def close_pool(self) -> None:
        with self._pool_lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def is_up(self) -> bool:
        """Whether the hub's end of this host's link is up."""
        out = ip("-n", self.net.hub, "-o", "link", "show", "dev", self.hub_link).stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
        return "UP" in flags


class Netns:
    """``n`` node namespaces joined by veth links to a bridge in a hub namespace (see the
    module docstring). Use as a context manager."""

    def __init__(self, n: int) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.hub = f"{self.name}-hub"
        self.hosts = [Host(self, i) for i in range(n)]
        self.stale_removed: list[str] = []

    def __enter__(self) -> Netns:
        self.stale_removed = cleanup_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def namespaces(self) -> list[str]:
        return [self.hub] + [h.ns for h in self.hosts]

    def _add_ns(self, ns: str) -> None:
        with _live_lock:
            _live.add(ns)  # before creating it: a failure half-way is cleaned up too
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def _create(self) -> None:
        self._add_ns(self.hub)
        ip("-n", self.hub, "link", "add", "name", "br0", "type", "bridge", "stp_state", "0")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for h in self.hosts:
            self._add_ns(h.ns)
            # The pair is born with one end in the hub and the other in the node's namespace.
            ip(
                "-n",
                self.hub,
                "link",
                "add",
                "name",
                h.hub_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                h.ns,
            )
            ip("-n", self.hub, "link", "set", h.hub_link, "master", "br0")
            ip("-n", self.hub, "link", "set", h.hub_link, "up")
            ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            ip("-n", h.ns, "link", "set", "eth0", "up")

    def cut(self, host: Host) -> None:
        """Partition ``host``: the hub's end of its link goes down."""
        ip("-n", self.hub, "link", "set", host.hub_link, "down")

    def heal(self, host: Host) -> None:
        ip("-n", self.hub, "link", "set", host.hub_link, "up")

    @contextlib.contextmanager
    def cut_off(self, host: Host) -> Iterator[None]:
        """``host`` is partitioned for the duration of the block, healed on exit."""
        self.cut(host)
        try:
            yield
        finally:
            self.heal(host)

    def close(self) -> None:
        """Stop the control threads, delete every namespace, and check they are gone."""
        for h in self.hosts:
            h.close_pool()
        failed = _delete(self.namespaces)
        left = [ns for ns in list_netns() if ns in self.namespaces]
        if failed or left:
            raise NetnsError(f"namespaces left behind: {left} ({failed})")


class NetnsNode(NodeProc):
    """A NodeProc that runs in ``host``'s namespace, its Raft id on the namespace's address
    and its control port on the namespace's loopback."""

    def __init__(self, cluster: Cluster, name: str, host: Host, **opts: Any) -> None:
        self.host = host
        super().__init__(cluster, name, **opts)

    @property
    def addr(self) -> str | None:
        return None if self.readonly else f"{self.host.ip}:{self.raft_port}"

    def ctl(self, cmd: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        ctl = super().ctl
        try:
            return self.host.run(lambda: ctl(cmd, timeout=timeout, **params))
        except NetnsError as e:  # the namespace is gone: as unreachable as a dead node
            raise CtlError(f"{self.name}: {cmd}: {e}") from e


class NetnsCluster(Cluster):
    """A Cluster whose i-th node runs in ``net.hosts[i]`` (``ip netns exec``)."""

    def __init__(self, transport: str, workdir: Path | str, net: Netns) -> None:
        super().__init__(transport, workdir)
        self.net = net

    def new_node(self, name: str | None = None, **opts: Any) -> NodeProc:
        index = len(self.nodes)
        if index >= len(self.net.hosts):
            raise NetnsError(f"only {len(self.net.hosts)} namespaces for {index + 1} nodes")
        if name is None:
            name = f"n{self._counter}"
        self._counter += 1
        node = NetnsNode(self, name, self.net.hosts[index], **opts)
        self.nodes.append(node)
        return node

    def _argv(self, node: NodeProc) -> list[str]:
        assert isinstance(node, NetnsNode)
        return ["ip", "netns", "exec", node.host.ns, *super()._argv(node)]

    def host_of(self, node: NodeProc) -> Host:
        assert isinstance(node, NetnsNode)
        return node.host

    def cut(self, node: NodeProc) -> None:
        self.net.cut(self.host_of(node))

    def heal(self, node: NodeProc) -> None:
        self.net.heal(self.host_of(node))


@contextlib.contextmanager
def partitioned(cluster: NetnsCluster, node: NodeProc) -> Iterator[None]:
    """``node`` is cut off for the duration of the block; healed on exit, whatever happens."""
    with cluster.net.cut_off(cluster.host_of(node)):
        yield

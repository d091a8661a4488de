"""raftgrpc._pysyncobj: every PySyncObj internal raftgrpc relies on exists in the installed
PySyncObj and means what raftgrpc assumes. A PySyncObj release that moves one fails here,
not in a running cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pysyncobj.syncobj
import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.transport import TCPTransport

from raftgrpc import _pysyncobj
from raftgrpc.testing.contract import bindable
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def lone_leader() -> Iterator[SyncObj]:
    """A one-node cluster ticked by hand: it elects itself."""
    node = SyncObj(f"127.0.0.1:{free_port()}", [], conf=SyncObjConf(autoTick=False))
    try:
        for _ in range(200):
            node.doTick(0.01)
            if _pysyncobj.is_leader(node):
                break
        yield node
    finally:
        node.destroy()


def test_the_enums_match_the_installed_pysyncobj() -> None:
    assert _pysyncobj.FAIL_REASON_NAMES[FAIL_REASON.QUEUE_FULL] == "QUEUE_FULL"
    assert _pysyncobj.FAIL_REASON_NAMES[_pysyncobj.SUCCESS] == "SUCCESS"
    assert _pysyncobj.NOT_LEADER == FAIL_REASON.NOT_LEADER
    assert len(_pysyncobj.FAIL_REASON_NAMES) == 8
    states = pysyncobj.syncobj._RAFT_STATE
    assert (_pysyncobj.FOLLOWER, _pysyncobj.CANDIDATE, _pysyncobj.LEADER) == (
        states.FOLLOWER,
        states.CANDIDATE,
        states.LEADER,
    )
    assert _pysyncobj.RAFT_STATE_NAMES[states.LEADER] == "leader"


def test_the_private_state_reads_what_a_real_syncobj_holds(lone_leader: SyncObj) -> None:
    assert _pysyncobj.is_leader(lone_leader)
    assert lone_leader.getStatus()["state"] == _pysyncobj.LEADER
    assert _pysyncobj.leader_of(lone_leader) == lone_leader.selfNode
    assert _pysyncobj.last_response_times(lone_leader) is not None
    assert isinstance(_pysyncobj.election_deadline(lone_leader), float)
    assert isinstance(_pysyncobj.transport_of(lone_leader), TCPTransport)
    assert _pysyncobj.tick_thread_of(lone_leader) is None  # autoTick off: no thread of its own
    assert callable(_pysyncobj.poller_of(lone_leader).subscribe)
    callbacks = _pysyncobj.utility_callbacks(_pysyncobj.transport_of(lone_leader))
    assert {"status", "add", "remove", "set_version"} <= set(callbacks)


def test_a_tcp_transport_forgets_its_connect_attempts() -> None:
    # TCPTransport dials only the partners whose address sorts below its own.
    partner, me = sorted(f"127.0.0.1:{free_port()}" for _ in range(2))
    node = SyncObj(me, [partner], conf=SyncObjConf(autoTick=False))
    try:
        transport = _pysyncobj.transport_of(node)
        for _ in range(5):
            node.doTick(0.01)
        assert transport._lastConnectAttempt  # it tried the partner
        assert _pysyncobj.forget_connect_attempts(transport, list(transport._lastConnectAttempt))
        assert not transport._lastConnectAttempt
        assert not _pysyncobj.forget_connect_attempts(object(), [])
    finally:
        node.destroy()


def test_destroy_here_destroys_on_the_calling_thread() -> None:
    port = free_port()
    node = SyncObj(f"127.0.0.1:{port}", [], conf=SyncObjConf(autoTick=False))
    node.doTick(0.01)  # binds the port
    assert not bindable(port)
    _pysyncobj.destroy_here(node)
    assert bindable(port)  # its transport let go of the port


def test_missing_private_fields_read_as_unknown_not_as_an_error() -> None:
    """A future PySyncObj without the fields: the health check then skips those checks."""
    assert _pysyncobj.last_response_times(object()) is None
    assert _pysyncobj.election_deadline(object()) is None

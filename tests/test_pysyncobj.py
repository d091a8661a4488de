"""raftgrpc._pysyncobj: every PySyncObj internal raftgrpc relies on exists in the installed
PySyncObj and means what raftgrpc assumes. A PySyncObj release that moves one fails here,
not in a running cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pysyncobj.syncobj
import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON

from raftgrpc import _pysyncobj
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


def test_missing_private_fields_read_as_unknown_not_as_an_error() -> None:
    """A future PySyncObj without the fields: the health check then skips those checks."""
    assert _pysyncobj.last_response_times(object()) is None
    assert _pysyncobj.election_deadline(object()) is None

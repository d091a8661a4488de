"""raftgrpc.graceful_shutdown on in-process nodes: every wait is bounded."""

from __future__ import annotations

import pytest
from pysyncobj import SyncObj, SyncObjConf

from raftgrpc import GrpcTransport
from raftgrpc._ops.health import HealthService
from raftgrpc._ops.shutdown import graceful_shutdown
from tests.helpers import free_port, thread_ids, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_lone_leader_cannot_hand_over_and_still_shuts_down_in_bounded_time() -> None:
    before = thread_ids()
    me = f"127.0.0.1:{free_port()}"
    node = SyncObj(me, [], SyncObjConf(), transportClass=GrpcTransport)
    transport = node._SyncObj__transport
    health = next(s for s in transport.services if isinstance(s, HealthService))
    wait_until(lambda: node._isLeader(), 10, "the lone node to lead")
    wait_until(lambda: health.status("raft") == "SERVING", 10, "raft SERVING")
    report = graceful_shutdown(node, transfer_timeout_s=0.3, drain_s=0.0)
    assert report.was_leader and report.transferred_to is None  # nobody to hand over to
    assert report.transfer_attempts >= 2  # denied, retried each heartbeat until the timeout
    assert 0.3 <= report.transfer_s < 1.0
    assert report.stopped and report.total_s < 5.0
    assert health.status("raft") == "NOT_SERVING" and health.status("") == "NOT_SERVING"
    assert not node.tick_thread_alive()
    wait_until(
        lambda: not (thread_ids() - before),
        5,
        "the node's threads to end",
    )

"""The admin service on a cluster of real node processes with the full middleware
(``grpc-full``: logging, tracing, JWT enforce): GrpcUtility and ``raftgrpc admin`` add a
fourth node, transfer leadership, remove a node and set the code version, with an admin
token; without one (or with a node's token) every command is refused and nothing changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftgrpc._ops.admin_client import GrpcUtility, GrpcUtilityException
from raftgrpc.testing._processes import fullstack
from raftgrpc.testing._processes.harness import REPO, Cluster, NodeProc

pytestmark = pytest.mark.timeout(180)

# Failures worth retrying while a cluster settles (PySyncObj denies a membership change
# while the previous one, or the new leader's first entry, is not committed yet).
_RETRY = {"REQUEST_DENIED", "MISSING_LEADER", "NOT_LEADER", "LEADER_CHANGED", "TIMEOUT"}


def _utility(token: str | None) -> GrpcUtility:
    return GrpcUtility(timeout=15.0, tokens=token, insecure_loopback=True)


def _admin(c: Cluster, utility: GrpcUtility, command: list[Any], done: Any) -> None:
    """Send ``command`` to the current leader until ``done()``; retry what settling explains."""
    last: list[Any] = []

    def attempt() -> bool:
        if done():
            return True
        leader = c.leader(timeout=20.0)
        try:
            last[:] = [utility.run(str(leader.addr), command)]
        except GrpcUtilityException as exc:
            last[:] = [exc]
            if exc.fail_reason not in _RETRY:
                raise AssertionError(f"{command}: {exc}") from exc
        return bool(done())

    c.wait_until(attempt, 60.0, f"admin {command}", interval=0.1, observe=lambda: last)


def test_admin_commands_change_a_live_cluster(full_cluster: Cluster, tmp_path: Path) -> None:
    c = full_cluster
    nodes = c.start_cluster(3, dynamic=True)
    leader = c.wait_leader()
    c.write(leader, "before", "1")
    operator = fullstack.mint("operator", role="admin")
    utility = _utility(operator)

    # Refused without a valid admin token, and nothing changes.
    fourth = c.new_node("n3", dynamic=True)
    fourth.partners = [str(n.addr) for n in nodes]
    c.start_fresh(fourth)
    member = str(nodes[0].addr)
    refused = {
        "no token": (None, grpc.StatusCode.UNAUTHENTICATED),
        "a node's token": (fullstack.mint(member), grpc.StatusCode.PERMISSION_DENIED),
        "admin token, other issuer": (
            fullstack.mint("operator", role="admin", issuer="other"),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
    }
    commands = [["add", str(fourth.addr)], ["remove", str(nodes[1].addr)]]
    commands += [["transfer", ""], ["set_version", 0], ["status"]]
    for name, (token, code) in refused.items():
        with _utility(token) as intruder:
            for command in commands:
                with pytest.raises(GrpcUtilityException) as failed:
                    intruder.executeCommand(str(leader.addr), command)
                assert failed.value.code == code, (name, command)
    assert all(len(n.status()["partners"]) == 2 for n in nodes)
    assert c.leader() is leader

    # Status, from every node, through the admin service.
    for n in nodes:
        status = utility.executeCommand(str(n.addr), ["status"])
        assert status["leader"].id == str(leader.addr)
        assert status["partner_nodes_count"] == 2

    # Add the fourth node.
    _admin(
        c,
        utility,
        ["add", str(fourth.addr)],
        lambda: str(fourth.addr) in c.leader().status()["partners"],
    )
    members = [*nodes, fourth]
    c.wait_until(
        lambda: all(len(n.status()["partners"]) == 3 for n in members),
        30.0,
        "every member to know 4 nodes",
    )
    c.wait_converged(members, {"before": "1"})

    # Transfer leadership to the new node.
    def led_by_fourth() -> bool:
        return c.leader(timeout=20.0) is fourth

    _admin(c, utility, ["transfer", str(fourth.addr)], led_by_fourth)
    c.wait_leader(members)
    assert c.leader() is fourth

    # Remove a former member (asked of the new leader).
    victim = nodes[1]
    _admin(
        c,
        utility,
        ["remove", str(victim.addr)],
        lambda: str(victim.addr) not in c.leader().status()["partners"],
    )
    c.stop(victim)
    remaining = [n for n in members if n is not victim]
    c.wait_until(
        lambda: all(len(n.status()["partners"]) == 2 for n in remaining),
        30.0,
        f"{victim.name} to be dropped by every remaining member",
    )
    c.write(c.wait_leader(remaining), "after", "2")
    c.wait_converged(remaining, {"before": "1", "after": "2"})

    # The code version: 0 is the node's only version; 1 is refused by PySyncObj.
    at = str(c.leader().addr)
    assert utility.executeCommand(at, ["set_version", 0]) == "SUCCESS SET_VERSION 0"
    assert utility.executeCommand(at, ["set_version", 1]) == (
        "wrong version, current version is 0, requested version is 1"
    )
    utility.close()

    # The command line, as a separate process, against the live cluster.
    token_file = tmp_path / "operator.token"
    token_file.write_text(operator)
    _cli_status(c, remaining, token_file)


def _cli(token_file: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    auth = ["--insecure-loopback", "--token-file", str(token_file)]
    return subprocess.run(
        [sys.executable, "-m", "raftgrpc", "admin", *argv, *auth],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _cli_status(c: Cluster, members: list[NodeProc], token_file: Path) -> None:
    leader = c.wait_leader(members)
    follower = next(n for n in members if n is not leader)
    run = _cli(token_file, "status", "--node", str(follower.addr), "--json")
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    assert (status["node"], status["state"]) == (str(follower.addr), "follower")
    assert status["leader"] == str(leader.addr)
    assert sorted(p["node"] for p in status["partners"]) == sorted(
        str(n.addr) for n in members if n is not follower
    )

    run = _cli(token_file, "status", "--node", str(leader.addr))
    assert run.returncode == 0, run.stderr
    print(run.stdout)  # the table, for the README (-s)
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "STATE", "LEADER"]
    assert lines[1].split()[:3] == [str(leader.addr), "leader", str(leader.addr)]
    partners = {line.split()[0]: line.split()[1] for line in lines[4:6]}
    assert partners == {str(n.addr): "yes" for n in members if n is not leader}
    # Refused: exit status 1 (a transfer asked of a follower names the leader).
    run = _cli(token_file, "transfer", "--node", str(follower.addr))
    assert run.returncode == 1
    assert f"not the leader; the leader is {leader.addr}" in run.stderr

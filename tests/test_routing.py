"""The migration router (raftgrpc._protocol.routing): pure, driven with an injected clock.

Every test feeds the router inputs stamped with a time it chooses and asserts the events
that come back; nothing waits, nothing runs on another thread. The wiring of these events
to real transports and to SyncObj is tests/test_migration.py's.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from raftgrpc import PeerUnreachable, UnreachableKind
from raftgrpc._errors import status_kind
from raftgrpc._protocol.routing import (
    Connected,
    Disconnected,
    EvaluationFailed,
    Event,
    FallbackRefused,
    Heard,
    MigrationConfig,
    Path,
    PredicateFailed,
    RedialPrimary,
    RedialSecondary,
    Router,
    expected_fallback,
    fallback_unless_refused,
)
from tests.helpers import BEAT

P, S = Path.PRIMARY, Path.SECONDARY
PEER, OTHER = "peer", "other"
FAST = MigrationConfig(primary_grace_s=0.05, switch_hold_s=0.05, upgrade_after_s=0.1)
TICK = 0.005  # SyncObj ticks this often in these tests


def chunk(data: bytes, first: bool, last: bool) -> dict[str, Any]:
    return {"type": "append_entries", "term": 1, "serialized": (data, first, last)}


class Drive:
    """A router for one or more peers, a clock the test moves, and SyncObj's view (what the
    Connected/Disconnected events told it), each event stamped with its time."""

    def __init__(
        self,
        config: MigrationConfig = FAST,
        period: float = 0.01,
        should_fallback: Callable[[PeerUnreachable], bool] = fallback_unless_refused,
        read_only: bool = False,
        peers: tuple[str, ...] = (PEER,),
    ) -> None:
        self.now = 0.0
        self.errors: dict[Any, PeerUnreachable] = {}
        self.router = Router(config, period, should_fallback, self.error_of, read_only=read_only)
        for peer in peers:
            self.router.add(peer, self.now)
        self.events: list[tuple[float, Event]] = []

    def error_of(self, node: Any) -> PeerUnreachable:
        """What the primary says about ``node`` (one value per node unless a test sets it)."""
        if node not in self.errors:
            self.errors[node] = PeerUnreachable(
                node, "no stream yet", kind=UnreachableKind.NOT_DIALLED
            )
        return self.errors[node]

    def _record(self, events: list[Event]) -> list[Event]:
        self.events.extend((self.now, e) for e in events)
        return events

    def up(self, path: Path, node: Any = PEER) -> list[Event]:
        return self._record(self.router.path_up(node, path, self.now))

    def down(self, path: Path, node: Any = PEER) -> list[Event]:
        return self._record(self.router.path_down(node, path, self.now))

    def tick(self) -> list[Event]:
        return self._record(self.router.tick(self.now))

    def run(self, seconds: float) -> None:
        """Tick every TICK for ``seconds`` of the test's clock."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += TICK
            self.tick()

    def run_until(self, predicate: Callable[[], bool], limit: float = 120.0) -> float:
        """Tick until ``predicate``; the clock's time then (fails past ``limit`` seconds)."""
        end = self.now + limit
        while not predicate():
            assert self.now < end, "never happened"
            self.now += TICK
            self.tick()
        return self.now

    def view(self, node: Any = PEER) -> list[tuple[str, Path]]:
        """What SyncObj was told about ``node``, in order."""
        told: list[tuple[str, Path]] = []
        for _, e in self.events:
            if isinstance(e, Connected) and e.node == node:
                told.append(("connected", e.path))
            elif isinstance(e, Disconnected) and e.node == node:
                told.append(("disconnected", e.path))
        return told

    def told_at(self, kind: type, node: Any = PEER) -> list[float]:
        return [
            t for t, e in self.events if isinstance(e, kind) and getattr(e, "node", None) == node
        ]

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]


def alternates(view: list[tuple[str, Path]]) -> bool:
    kinds = [kind for kind, _ in view]
    return all(
        kind == ("connected" if i % 2 == 0 else "disconnected") for i, kind in enumerate(kinds)
    )


# -- taking a path --------------------------------------------------------------------------


@pytest.mark.parametrize("primary_first", [True, False])
def test_a_peer_never_connected_is_taken_at_once_on_the_primary(primary_first: bool) -> None:
    d = Drive()
    order = (P, S) if primary_first else (S, P)
    told = {path: d.up(path) for path in order}
    assert Connected(PEER, P) in told[P]  # inside the primary's own callback
    d.run(3 * FAST.upgrade_after_s)
    assert d.view() == [("connected", P)]
    assert d.router.send_path(PEER, BEAT, d.now) is P
    assert d.router.paths() == {PEER: P}
    assert d.router.switches == 0


def test_only_the_secondary_up_is_taken_once_the_primary_grace_is_over() -> None:
    d = Drive()
    assert d.up(S) == [RedialPrimary(PEER)]  # the peer is back: the primary should try now
    taken = d.run_until(lambda: bool(d.view()))
    assert d.view() == [("connected", S)]
    assert FAST.primary_grace_s <= taken < FAST.primary_grace_s + 2 * TICK
    assert d.of(Connected)[0].primary_error is d.error_of(PEER)  # why it fell back
    d.run(3 * FAST.upgrade_after_s)  # the primary stays down: nothing else happens
    assert d.view() == [("connected", S)]
    assert d.router.send_path(PEER, BEAT, d.now) is S


def test_a_primary_that_failed_since_the_secondary_came_up_cuts_the_grace_short() -> None:
    d = Drive()
    d.up(S)
    d.now = 0.01
    d.errors[PEER] = PeerUnreachable(
        PEER, "refused", grpc.StatusCode.UNAVAILABLE, 0.005, kind=UnreachableKind.CONNECTION_REFUSED
    )
    d.tick()
    assert d.view() == [("connected", S)]  # well before primary_grace_s (0.05)


def test_no_path_while_neither_is_up() -> None:
    d = Drive()
    d.run(1.0)
    assert d.view() == []
    assert d.router.send_path(PEER, BEAT, d.now) is None


# -- losing a path: the hold ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "hold"),
    [(0.01, FAST.switch_hold_s), (0.1, 0.2)],  # the hold is at least two append periods
)
def test_losing_the_primary_disconnects_at_once_and_reconnects_two_ticks_after_the_hold(
    period: float, hold: float
) -> None:
    d = Drive(period=period)
    d.up(S)
    d.up(P)
    d.run(2 * FAST.primary_grace_s)  # the secondary is a valid fallback by now
    assert d.router.hold_s == pytest.approx(hold)
    lost_at = d.now
    assert d.down(P) == [Disconnected(PEER, P, "primary lost")]  # in the primary's callback
    assert d.router.send_path(PEER, BEAT, d.now) is None
    d.up(S)  # inner events do not end the hold early
    ticks_during_hold = 0
    while d.now + TICK < lost_at + hold:
        d.now += TICK
        d.tick()
        ticks_during_hold += 1
    assert ticks_during_hold > 0 and d.view() == [("connected", P), ("disconnected", P)]
    # The first tick after the hold: the tick before it (and its append round) ran during
    # the hold, so the peer is not reported yet. The next one reports it.
    d.now = lost_at + hold
    assert not d.tick()
    d.now += TICK
    assert d.tick() == [Connected(PEER, S, d.error_of(PEER))]
    assert d.view()[-1] == ("connected", S)
    assert d.router.send_path(PEER, BEAT, d.now) is S
    assert d.router.switches == 1


def test_a_tick_arriving_late_still_waits_for_a_tick_after_the_hold() -> None:
    """SyncObj may tick seldom (a busy machine): what counts is that a whole tick, and so
    an append-entries round, ran after the hold, not that time passed."""
    d = Drive()
    d.up(P)
    d.up(S)
    d.now = 1.0
    d.down(P)
    d.now = 5.0  # the first tick after the loss comes long after the hold
    assert d.tick() == []
    d.now = 5.001
    assert [type(e) for e in d.tick()] == [Connected]


# -- upgrading back to the primary ------------------------------------------------------------


def test_a_peer_on_the_secondary_moves_to_the_primary_once_it_was_back_long_enough() -> None:
    d = Drive()
    d.up(S)
    d.run_until(lambda: bool(d.view()))
    back_at = d.now
    assert d.up(P) == []  # not at once: the primary must stay up for a while
    d.run_until(lambda: len(d.view()) == 3)
    assert d.view() == [("connected", S), ("disconnected", S), ("connected", P)]
    left_at, took_at = d.told_at(Disconnected)[0], d.told_at(Connected)[1]
    assert d.of(Disconnected)[0].why == "primary is back"
    assert left_at - back_at >= FAST.upgrade_after_s
    assert took_at - left_at >= d.router.hold_s
    d.run(3 * FAST.upgrade_after_s)
    assert len(d.view()) == 3
    assert d.router.switches == 1


def test_no_upgrade_while_a_snapshot_is_being_sent() -> None:
    d = Drive()
    d.up(S)
    d.run_until(lambda: bool(d.view()))
    assert d.router.send_path(PEER, chunk(b"x", True, False), d.now) is S
    d.up(P)
    for _ in range(100):  # 5 x upgrade_after_s, a chunk every round
        assert d.router.send_path(PEER, chunk(b"y", False, False), d.now) is S
        d.run(0.005)
    assert d.view() == [("connected", S)]  # the snapshot holds the peer on the secondary
    assert d.router.send_path(PEER, chunk(b"", False, True), d.now) is S
    d.run_until(lambda: len(d.view()) == 3)
    assert d.view()[-1] == ("connected", P)


@pytest.mark.parametrize("then", ["entries", "silence"])
def test_an_abandoned_snapshot_does_not_hold_the_peer_on_the_secondary(then: str) -> None:
    """SyncObj may leave a snapshot unfinished: it goes back to entries, or stops sending
    (it stepped down). Neither may keep the peer off the primary for good."""
    d = Drive()
    d.up(S)
    d.run_until(lambda: bool(d.view()))
    d.router.send_path(PEER, chunk(b"x", True, False), d.now)
    if then == "entries":
        d.router.send_path(PEER, BEAT, d.now)
    d.up(P)
    upgraded = d.run_until(lambda: len(d.view()) == 3)
    assert d.view()[-1] == ("connected", P)
    assert upgraded - d.told_at(Connected)[0] < 1.0


def test_a_flapping_primary_waits_longer_before_each_upgrade_and_forgives_a_stable_one() -> None:
    d = Drive()
    d.up(S)
    d.run_until(lambda: bool(d.view()))

    def upgrade() -> float:
        back = d.now
        d.up(P)
        d.run_until(lambda: d.router.path_of(PEER) is P)
        return d.told_at(Disconnected)[-1] - back

    assert upgrade() == pytest.approx(0.1, abs=2 * TICK)
    for expected in (0.2, 0.4, 0.8):  # upgrade_after_s doubled per primary lost
        d.down(P)
        d.run_until(lambda: d.router.path_of(PEER) is S)
        assert upgrade() == pytest.approx(expected, abs=2 * TICK)
    d.now += 30.0  # a primary in use this long holds again: the wait starts over
    d.tick()
    d.down(P)
    d.run_until(lambda: d.router.path_of(PEER) is S)
    assert upgrade() == pytest.approx(0.2, abs=2 * TICK)  # 0.1, doubled for this loss


def test_the_wait_before_an_upgrade_is_capped() -> None:
    d = Drive(config=MigrationConfig(primary_grace_s=0, switch_hold_s=0.05, upgrade_after_s=16))
    d.up(S)
    d.run_until(lambda: bool(d.view()))
    for _ in range(4):
        d.up(P)
        d.run_until(lambda: d.router.path_of(PEER) is P, limit=300)
        d.down(P)
        d.run_until(lambda: d.router.path_of(PEER) is S)
    back = d.now
    d.up(P)
    d.run_until(lambda: d.router.path_of(PEER) is P, limit=300)
    assert d.told_at(Disconnected)[-1] - back == pytest.approx(60.0, abs=2 * TICK)


def test_peers_upgrade_one_at_a_time() -> None:
    """A leader whose links all heal at once must not drop every follower for one hold."""
    d = Drive(peers=(PEER, OTHER))
    for peer in (PEER, OTHER):
        d.up(S, peer)
    d.run_until(lambda: all(d.router.path_of(p) is S for p in (PEER, OTHER)))
    for peer in (PEER, OTHER):
        d.up(P, peer)
    d.run_until(lambda: all(d.router.path_of(p) is P for p in (PEER, OTHER)))
    first, second = sorted(t for t, e in d.events if isinstance(e, Disconnected))
    assert second - first >= 2 * d.router.hold_s


# -- the fallback decision ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code", "falls_back"),
    [
        (UnreachableKind.CONNECTION_REFUSED, grpc.StatusCode.UNAVAILABLE, True),
        (UnreachableKind.STREAM_FAILED, grpc.StatusCode.UNAVAILABLE, True),
        (UnreachableKind.STREAM_FAILED, grpc.StatusCode.UNAUTHENTICATED, False),
        (UnreachableKind.STREAM_FAILED, grpc.StatusCode.PERMISSION_DENIED, False),
        (UnreachableKind.TLS_FAILED, grpc.StatusCode.UNAVAILABLE, False),
        (UnreachableKind.HANDSHAKE_FAILED, None, False),
        (UnreachableKind.NOT_DIALLED, None, True),
        (UnreachableKind.NO_ADDRESS, None, True),
        (UnreachableKind.RESET, None, True),
        (UnreachableKind.RESET, grpc.StatusCode.CANCELLED, True),
        (UnreachableKind.PROTOCOL_ERROR, None, True),
        (UnreachableKind.INTERNAL, None, True),
        (UnreachableKind.UNKNOWN, None, True),
        (UnreachableKind.UNKNOWN, grpc.StatusCode.UNAUTHENTICATED, False),
    ],
)
def test_fallback_unless_refused_decides_on_the_kind_and_the_code(
    kind: UnreachableKind, code: Any, falls_back: bool
) -> None:
    # The reason says the opposite of the kind: only the kind and the code count.
    reason = "connection refused" if not falls_back else "Tls handshake failed: certificate"
    error = PeerUnreachable(PEER, reason, code, kind=kind)
    assert fallback_unless_refused(error) is falls_back


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (UnreachableKind.CONNECTION_REFUSED, True),
        (UnreachableKind.NOT_DIALLED, True),
        (UnreachableKind.STREAM_FAILED, False),
        (UnreachableKind.RESET, False),
        (UnreachableKind.UNKNOWN, False),
    ],
)
def test_only_a_peer_that_does_not_serve_the_primary_yet_is_an_expected_fallback(
    kind: UnreachableKind, expected: bool
) -> None:
    assert expected_fallback(PeerUnreachable(PEER, "why", kind=kind)) is expected


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        (
            "failed to connect to all addresses; last error: Connection refused",
            "CONNECTION_REFUSED",
        ),
        (
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED",
            "TLS_FAILED",
        ),
        ("Ssl handshake failed: SSL_ERROR_SSL", "TLS_FAILED"),
        ("Socket closed", "STREAM_FAILED"),
        ("node '10.0.0.9:4321' is not a member of this cluster", "STREAM_FAILED"),
        ("", "STREAM_FAILED"),
    ],
)
def test_status_kind_reads_grpcs_details_once(details: str, kind: str) -> None:
    assert status_kind(details) is UnreachableKind[kind]


@pytest.mark.parametrize(
    ("code", "falls_back"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.UNAVAILABLE, True),
    ],
)
def test_the_primarys_error_decides_the_fallback(code: Any, falls_back: bool) -> None:
    d = Drive()
    d.errors[PEER] = PeerUnreachable(
        PEER, "the primary said so", code, kind=UnreachableKind.STREAM_FAILED
    )
    d.up(S)
    d.run(6 * FAST.primary_grace_s)
    assert d.view() == ([("connected", S)] if falls_back else [])
    assert len(d.of(FallbackRefused)) == (0 if falls_back else 1)


def test_a_refusal_is_reported_once_per_error_and_the_primary_still_carries_the_peer() -> None:
    seen: list[PeerUnreachable] = []

    def never(error: PeerUnreachable) -> bool:
        seen.append(error)
        return False

    d = Drive(should_fallback=never)
    token = PeerUnreachable(PEER, "token refused", grpc.StatusCode.UNAUTHENTICATED, 0.0)
    d.errors[PEER] = token
    d.up(S)
    d.run(8 * FAST.primary_grace_s)
    assert len(seen) > 10 and all(e is token for e in seen)  # the primary's own value
    assert d.of(FallbackRefused) == [FallbackRefused(PEER, token)]
    d.errors[PEER] = PeerUnreachable(PEER, "now a certificate", kind=UnreachableKind.TLS_FAILED)
    d.run(0.1)
    assert len(d.of(FallbackRefused)) == 2  # another error: said again
    assert d.router.send_path(PEER, BEAT, d.now) is None
    assert d.up(P) == [Connected(PEER, P)]  # and at once: never connected


def test_a_raising_predicate_is_a_refusal_reported_as_such() -> None:
    def boom(error: PeerUnreachable) -> bool:
        raise RuntimeError("the predicate is broken")

    d = Drive(should_fallback=boom)
    d.up(S)
    d.run(8 * FAST.primary_grace_s)
    assert d.view() == []
    failures = d.of(PredicateFailed)
    assert failures and all(str(f.error) == "the predicate is broken" for f in failures)
    assert d.up(P) == [Connected(PEER, P)]


def test_a_peer_whose_evaluation_fails_costs_the_other_peers_nothing() -> None:
    """Found in review: one peer's failure (here its primary's error cannot be had) used to
    throw away the whole tick's events, so SyncObj was never told of another peer's path."""

    class Broken(Drive):
        def error_of(self, node: Any) -> PeerUnreachable:
            if node == OTHER:
                raise RuntimeError("peer_error is broken")
            return super().error_of(node)

    d = Broken(peers=(OTHER, PEER))
    d.up(S, OTHER)
    d.up(S, PEER)
    d.run(8 * FAST.primary_grace_s)
    assert d.view(PEER) == [("connected", S)]  # PEER fell back as usual
    assert d.view(OTHER) == []
    failures = d.of(EvaluationFailed)
    assert failures and {f.node for f in failures} == {OTHER}
    assert all(str(f.error) == "peer_error is broken" for f in failures)
    assert d.up(P, OTHER) == [Connected(OTHER, P)]  # and it recovers with its primary


# -- redials --------------------------------------------------------------------------------


def test_the_primary_is_asked_to_redial_only_when_the_secondary_sees_the_peer_first() -> None:
    d = Drive()
    assert d.up(S) == [RedialPrimary(PEER)]
    d.up(P)
    d.down(S)
    assert RedialPrimary(PEER) not in d.up(S)  # the primary is connected already


def test_the_secondary_redials_peers_down_on_both_paths_every_secondary_redial_s() -> None:
    d = Drive(peers=(PEER, OTHER))
    d.up(S, OTHER)
    d.run(1.0)
    asked = [t for t, e in d.events if isinstance(e, RedialSecondary)]
    assert all(e.nodes == (PEER,) for e in d.of(RedialSecondary))
    assert len(asked) == pytest.approx(1.0 / FAST.secondary_redial_s, abs=1)
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert all(g >= FAST.secondary_redial_s - 1e-9 for g in gaps)
    d.up(S)
    before = len(d.of(RedialSecondary))
    d.run(1.0)
    assert len(d.of(RedialSecondary)) == before  # nobody is stranded any more


# -- receiving ------------------------------------------------------------------------------


def test_a_straggler_on_the_other_path_is_dropped_until_the_first_path_is_quiet() -> None:
    d = Drive(config=MigrationConfig(switch_hold_s=2.0))  # quiet time: 1 s
    r = d.router
    assert r.received(PEER, P, BEAT, 0.0).heard is Heard.DELIVER
    assert r.received(PEER, P, BEAT, 0.1).heard is Heard.DELIVER
    straggler = r.received(PEER, S, BEAT, 1.09)
    assert (straggler.heard, straggler.heard_on) == (Heard.STRAGGLER, P)
    assert straggler.silent_s == pytest.approx(0.99)
    moved = r.received(PEER, S, BEAT, 1.11)  # the primary was quiet for 1 s: taken
    assert (moved.heard, moved.switched) == (Heard.DELIVER, True)
    again = r.received(PEER, S, BEAT, 1.2)
    assert (again.heard, again.switched) == (Heard.DELIVER, False)
    assert r.received(PEER, P, BEAT, 1.3).heard is Heard.STRAGGLER  # now the stale path
    assert r.dropped_stragglers == 2


def test_the_quiet_time_follows_the_raised_hold() -> None:
    d = Drive(period=0.3)  # hold 0.6 s (not switch_hold_s, 0.05), quiet 0.3 s
    r = d.router
    r.received(PEER, P, BEAT, 0.0)
    assert r.received(PEER, S, BEAT, 0.29).heard is Heard.STRAGGLER
    assert r.received(PEER, S, BEAT, 0.59).heard is Heard.DELIVER


def test_a_transfer_begun_on_one_path_is_never_continued_from_the_other() -> None:
    """The first chunk of a restarted transfer may be dropped as a straggler; its
    continuations, arriving once the old path is quiet, must not be glued onto the half
    transfer the old path delivered (a corrupt snapshot would replace the dump file)."""
    d = Drive(config=MigrationConfig(switch_hold_s=0.4))  # quiet time: 0.2 s
    r = d.router
    assert r.received(PEER, S, chunk(b"a", True, False), 0.0).heard is Heard.DELIVER
    assert r.received(PEER, S, chunk(b"b", False, False), 0.01).heard is Heard.DELIVER
    assert r.received(PEER, P, chunk(b"A", True, False), 0.02).heard is Heard.STRAGGLER
    assert r.received(PEER, P, chunk(b"B", False, False), 0.3).heard is Heard.ORPHAN
    assert r.received(PEER, P, chunk(b"C", False, True), 0.31).heard is Heard.ORPHAN
    assert r.received(PEER, P, chunk(b"A", True, False), 0.32).heard is Heard.DELIVER
    assert r.received(PEER, P, chunk(b"B", False, False), 0.33).heard is Heard.DELIVER


def test_a_reconnect_of_the_heard_path_restarts_its_chunk_guard() -> None:
    d = Drive()
    r = d.router
    assert r.received(PEER, S, chunk(b"a", True, False), 0.0).heard is Heard.DELIVER
    d.down(S)  # the TCP connection broke mid-transfer...
    d.up(S)
    assert r.received(PEER, S, chunk(b"b", False, False), 0.0).heard is Heard.ORPHAN


def test_a_read_only_node_hears_a_member_only_on_the_path_it_sends_on() -> None:
    d = Drive(read_only=True)
    d.up(P)
    d.up(S)
    r = d.router
    assert r.path_of(PEER) is P
    assert r.received(PEER, S, BEAT, 0.0).heard is Heard.IGNORE  # its TCP identity's copy
    assert r.received(PEER, P, BEAT, 0.0).heard is Heard.DELIVER
    assert r.received(PEER, S, BEAT, 5.0).heard is Heard.IGNORE  # however quiet P is
    assert r.dropped_stragglers == 0


def test_a_stranger_is_delivered_untouched() -> None:
    d = Drive()
    assert d.router.received("stranger", S, BEAT, 0.0).heard is Heard.DELIVER


# -- membership -----------------------------------------------------------------------------


def test_a_dropped_member_is_forgotten() -> None:
    d = Drive()
    d.up(P)
    assert d.router.drop(PEER) is True  # it was connected: SyncObj is told by the shell
    assert PEER not in d.router
    assert d.down(P) == [] and d.up(S) == []
    d.run(0.5)
    assert d.router.paths() == {}
    assert d.router.drop(PEER) is False
    d.router.add(PEER, d.now)  # added again: a fresh member, taken at once
    assert d.up(P) == [Connected(PEER, P)]


# -- the whole machine ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_random_path_flaps_keep_syncobjs_view_consistent(seed: int) -> None:
    """Random ups and downs of both paths with random pauses: SyncObj's view always
    alternates, a send goes out on exactly the path reported, and that path is up."""
    rng = random.Random(seed)
    d = Drive()
    up = {P: False, S: False}
    for _ in range(200):
        path = rng.choice([P, S])
        if up[path]:
            d.down(path)
        else:
            d.up(path)
        up[path] = not up[path]
        d.run(rng.choice([0.0, 0.0, 0.02, 0.06, 0.12, 0.3]))
        view = d.view()
        assert alternates(view), view
        current = d.router.path_of(PEER)
        assert (current is not None) == (bool(view) and view[-1][0] == "connected")
        if current is not None:
            assert up[current], f"reported on {current.label}, which is down"
            assert view[-1] == ("connected", current)
        assert d.router.send_path(PEER, BEAT, d.now) is current
    assert [k for k, _ in d.view()].count("connected") >= 5

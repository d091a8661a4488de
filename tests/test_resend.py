"""raftgrpc.resend: a stream does not carry the same entries twice.

The property tests replay what a PySyncObj follower does with each append-entries message
(truncate after prevLogIdx, append, or refuse with a reset when it lacks prevLogIdx) and
check the filter against it: whatever the filter drops is already in the follower's log
when it would have arrived, unless the follower has refused something since the filter
last heard of a reset; and the follower ends with the log it would have had without the
filter, once the resets are heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftgrpc.resend import ResendFilter

pytestmark = pytest.mark.timeout(60)


def ae(prev: int, last: int | None = None, term: int = 1) -> dict[str, Any]:
    """An append-entries message with entries prev+1..last (none: a heartbeat)."""
    last = prev if last is None else last
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": 0,
        "prevLogIdx": prev,
        "prevLogTerm": term,
        "entries": [(b"x", i, term) for i in range(prev + 1, last + 1)],
    }


def chunks(prev: int, labels: tuple[str, ...] = ("start", "finish", "finish")) -> list[Any]:
    """A big entry prev+1 as PySyncObj sends it (it labels the last chunks 'finish')."""
    return [
        {
            "type": "append_entries",
            "transmission": label,
            "data": b"c",
            "term": 1,
            "commit_index": 0,
            "prevLogIdx": prev,
            "prevLogTerm": 1,
        }
        for label in labels
    ]


def sent(f: ResendFilter, messages: list[dict[str, Any]]) -> list[bool]:
    """Which of ``messages`` pass."""
    return [not f.redundant(m) for m in messages]


def test_entries_sent_again_after_an_acknowledgement_are_dropped_new_ones_pass() -> None:
    f = ResendFilter()
    assert sent(f, [ae(0, 1), ae(1, 2), ae(2, 3), ae(3, 4)]) == [True] * 4
    # An acknowledgement of 2 set nextIndex back to 3: the leader sends 3 and 4 again, then 5.
    assert sent(f, [ae(2, 3), ae(3, 4), ae(4, 5)]) == [False, False, True]
    assert sent(f, [ae(2, 5)]) == [False]  # a batch of repeats
    assert f.dropped == 3


def test_heartbeats_and_other_messages_always_pass() -> None:
    f = ResendFilter()
    assert sent(f, [ae(0, 3), ae(3), ae(3)]) == [True, True, True]
    others = [
        {"type": "next_node_idx", "next_node_idx": 4, "reset": False, "success": True},
        {"type": "request_vote", "term": 2, "last_log_index": 3, "last_log_term": 1},
        {"type": "apply_command", "command": b"c"},
    ]
    assert sent(f, others) == [True] * 3


def test_a_batch_reaching_past_what_the_stream_carries_passes() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 4)])
    assert sent(f, [ae(2, 6), ae(3, 6), ae(6, 7)]) == [True, False, True]


def test_a_message_that_truncates_shortens_the_range() -> None:
    """The follower truncates after prevLogIdx: entries the stream carried past the end of
    a message that passes are gone from its log and must pass again."""
    f = ResendFilter()
    sent(f, [ae(0, 10)])
    f.forget()  # e.g. the follower refused something; then the leader starts again at 2
    assert sent(f, [ae(1, 2), ae(2, 3), ae(2, 3)]) == [True, True, False]
    assert sent(f, [ae(3, 4)]) == [True]  # was carried before the forget, not since


def test_a_gap_or_a_step_back_below_the_range_starts_it_over() -> None:
    f = ResendFilter()
    sent(f, [ae(5, 6)])  # the leader believed the follower had 5
    assert sent(f, [ae(9, 10), ae(5, 6)]) == [True, True]  # a gap; below the new range
    assert sent(f, [ae(5, 6)]) == [False]


def test_another_term_passes() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3, term=1)])
    assert sent(f, [ae(0, 3, term=2), ae(0, 3, term=2)]) == [True, False]


def test_forget_lets_everything_pass_once_more() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3)])
    f.forget()
    assert sent(f, [ae(0, 3), ae(0, 3)]) == [True, False]


def test_a_snapshot_chunk_passes_and_clears_the_memory() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3)])
    snapshot = {"type": "append_entries", "term": 1, "commit_index": 3,
                "serialized": (b"s", True, True)}  # fmt: skip
    assert sent(f, [snapshot, ae(0, 3)]) == [True, True]


def test_a_big_entry_is_dropped_or_sent_whole() -> None:
    f = ResendFilter()
    assert sent(f, chunks(0) + chunks(1)) == [True] * 6
    assert sent(f, chunks(0) + chunks(1, ("start", "process", "finish"))) == [False] * 6
    assert sent(f, chunks(2)) == [True] * 3
    assert f.dropped == 6


def test_a_tail_whose_first_chunk_this_filter_did_not_see_passes_and_trusts_nothing() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3)])
    assert sent(f, chunks(1)[1:]) == [True, True]  # the receiver's ChunkGuard drops them
    assert sent(f, [ae(0, 3)]) == [True]


# -- the filter against a model of PySyncObj's follower -------------------------------------


@dataclass
class Follower:
    """A PySyncObj follower's log, reduced to what append-entries do to it (one term)."""

    last: int = 0  # entries 1..last
    refused: int = 0  # messages refused since the leader last heard of a reset

    def take(self, message: dict[str, Any]) -> bool:
        """Apply ``message``; False if refused (the follower lacks prevLogIdx: a reset)."""
        prev = message["prevLogIdx"]
        if prev > self.last:
            return False
        entries = message["entries"]
        self.last = entries[-1][1] if entries else prev  # truncate after prev, append
        return True


# What the leader does: send entries from an optimistic nextIndex, send a heartbeat, or set
# nextIndex back (an acknowledgement or a reset), all within a log it appends to.
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("heartbeat"), st.just(0)),
        st.tuples(st.just("back"), st.integers(0, 12)),
    ),
    max_size=80,
)


def _run(steps: list[tuple[str, int]], delay: int, use_filter: bool) -> tuple[Follower, list[Any]]:
    """Leader and follower over one ordered stream; the follower's resets reach the
    leader (and the filter) ``delay`` messages later. Returns the follower and, for every
    message the filter dropped, whether the follower held its entries and how many of its
    refusals the filter had not heard of at that point."""
    log_last, next_index = 5, 1
    follower, f = Follower(), ResendFilter()
    pending: list[tuple[int, int]] = []  # (position the reset arrives at, follower's next)
    drops: list[Any] = []
    position = 0

    def deliver(message: dict[str, Any]) -> None:
        nonlocal position, next_index
        position += 1
        for due, nxt in [p for p in pending if p[0] <= position]:
            pending.remove((due, nxt))
            follower.refused = 0
            f.forget()
            next_index = nxt  # PySyncObj: a reset sets nextIndex to what the follower has
        if use_filter and f.redundant(message):
            last = message["entries"][-1][1]
            drops.append((last <= follower.last, follower.refused))
            return
        if not follower.take(message):
            follower.refused += 1
            pending.append((position + delay, follower.last + 1))

    for kind, n in steps:
        if kind == "append":
            log_last += n
        elif kind == "send":
            while n and next_index <= log_last:
                last = min(log_last, next_index + n - 1)
                deliver(ae(next_index - 1, last))
                next_index = last + 1
                n = 0
        elif kind == "heartbeat":
            if next_index > log_last:
                deliver(ae(next_index - 1))
        else:
            next_index = max(1, next_index - n)
    # The leader then repeats rounds until the follower has everything (liveness).
    for _ in range(4 * (log_last + delay + 2)):
        if follower.last == log_last and not pending:
            break
        if next_index <= log_last:
            deliver(ae(next_index - 1, log_last))
            next_index = log_last + 1
        else:
            deliver(ae(next_index - 1))
    return follower, [*drops, ("log_last", log_last)]


@settings(max_examples=300, deadline=None)
@given(_steps, st.integers(1, 4))
def test_what_the_filter_drops_the_follower_holds_unless_a_reset_is_on_its_way(
    steps: list[tuple[str, int]], delay: int
) -> None:
    follower, drops = _run(steps, delay, use_filter=True)
    *dropped, (_, log_last) = drops
    for held, unheard_refusals in dropped:
        assert held or unheard_refusals > 0
    assert follower.last == log_last  # and everything arrives in the end


@settings(max_examples=300, deadline=None)
@given(_steps, st.integers(1, 4))
def test_the_follower_ends_with_the_log_it_would_have_without_the_filter(
    steps: list[tuple[str, int]], delay: int
) -> None:
    with_filter, _ = _run(steps, delay, use_filter=True)
    without, _ = _run(steps, delay, use_filter=False)
    assert with_filter.last == without.last

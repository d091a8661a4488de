"""raftgrpc._protocol.resend: a stream does not carry the same entries twice.

The example tests pin each rule. The property tests run the filter between a model of
PySyncObj's leader and follower (tests/resend_model.py: the leader starts from its own log's
end after an election, rewinds on every fresh acknowledgement and on resets, batches
entries; the follower checks prevLogIdx/prevLogTerm, refuses with a reset, truncates after
prevLogIdx and appends; it may have a divergent tail of an older term and may lose what it
receives) and check: what the filter drops the follower holds when it would have read it;
without losses the follower never truncates entries it acknowledged; the follower catches
up with the filter whenever it does without it; and a filter that never hears of a reset
still lets it catch up, once ``stale_after_s`` passed without an acknowledgement.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftgrpc._protocol.resend import ResendFilter
from tests.resend_model import Model, actions

pytestmark = pytest.mark.timeout(120)


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


def sent(
    f: ResendFilter, messages: list[dict[str, Any]], now: float = 0.0, acked: bool = True
) -> list[Any]:
    """What is sent for each of ``messages``: True (the message), False (nothing), or the
    (prevLogIdx, last index) of a trimmed copy. ``acked``: the follower has just
    acknowledged something (the leader goes back on acknowledgements)."""
    out: list[Any] = []
    for m in messages:
        if acked:
            f.confirmed(now)
        got = f.filter(m, now)
        if got is None or got is m:
            out.append(got is m)
            continue
        assert got["entries"] and got["prevLogTerm"] == got["term"]
        out.append((got["prevLogIdx"], got["entries"][-1][1]))
    return out


def test_entries_sent_again_after_an_acknowledgement_are_dropped_new_ones_pass() -> None:
    f = ResendFilter()
    assert sent(f, [ae(0, 1), ae(1, 2), ae(2, 3), ae(3, 4)]) == [True] * 4
    # An acknowledgement of 2 set nextIndex back to 3: the leader sends 3 and 4 again, then 5.
    assert sent(f, [ae(2, 3), ae(3, 4), ae(4, 5)]) == [False, False, True]
    assert sent(f, [ae(2, 5)]) == [False]  # a batch of repeats


def test_heartbeats_and_other_messages_always_pass() -> None:
    f = ResendFilter()
    assert sent(f, [ae(0, 3), ae(3), ae(3)]) == [True, True, True]
    others = [
        {"type": "next_node_idx", "next_node_idx": 4, "reset": False, "success": True},
        {"type": "request_vote", "term": 2, "last_log_index": 3, "last_log_term": 1},
        {"type": "apply_command", "command": b"c"},
    ]
    assert sent(f, others) == [True] * 3


def test_a_batch_reaching_past_what_the_stream_carries_is_trimmed_to_what_is_new() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 4)])
    assert sent(f, [ae(2, 6), ae(3, 6), ae(6, 7), ae(4, 9)]) == [(4, 6), False, True, (7, 9)]
    f.confirmed(0.0)
    trimmed = f.filter(ae(5, 11), 0.0)
    assert trimmed is not None and trimmed["prevLogIdx"] == 9
    assert [e[1] for e in trimmed["entries"]] == [10, 11]


def test_a_trimmed_batch_names_the_term_of_the_entry_it_now_follows() -> None:
    """A leader of term 2 catching a follower up sends entries of term 1 too."""
    f = ResendFilter()
    first = {**ae(0, 2, term=2), "entries": [(b"x", 1, 1), (b"x", 2, 1)]}
    assert f.filter(first, 0.0) is first
    batch = {**ae(1, 4, term=2), "entries": [(b"x", 2, 1), (b"x", 3, 2), (b"x", 4, 2)]}
    f.confirmed(0.0)
    got = f.filter(batch, 0.0)
    assert got is not None and got is not batch
    assert (got["prevLogIdx"], got["prevLogTerm"], got["term"]) == (2, 1, 2)
    assert got["entries"] == [(b"x", 3, 2), (b"x", 4, 2)]
    assert batch["prevLogIdx"] == 1 and len(batch["entries"]) == 3  # PySyncObj's, untouched


def test_a_message_that_truncates_shortens_the_range() -> None:
    """The follower truncates after prevLogIdx: entries the stream carried past the end of
    a message that passes are gone from its log and must pass again."""
    f = ResendFilter()
    sent(f, [ae(0, 10)])
    assert sent(f, [ae(4)]) == [True]  # a heartbeat at 4: the follower holds 1..4 only
    assert sent(f, [ae(3, 4), ae(4, 6)]) == [False, True]
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


def test_what_is_remembered_is_trusted_while_the_follower_acknowledges() -> None:
    f = ResendFilter(stale_after_s=1.0)
    assert sent(f, [ae(0, 3)], now=10.0, acked=False) == [True]
    f.confirmed(10.0)
    assert sent(f, [ae(1, 3)], now=10.9, acked=False) == [False]
    f.confirmed(11.5)  # a long tail of acknowledgements: still trusted
    assert sent(f, [ae(2, 3), ae(3, 4)], now=12.4, acked=False) == [False, True]
    assert sent(f, [ae(4)], now=20.0, acked=False) == [
        True
    ]  # an idle stream's heartbeat: nothing to judge
    # No acknowledgement for stale_after_s, yet the leader goes back: it was refused, and
    # this filter may have missed the reset.
    assert sent(f, [ae(1, 4)], now=20.0, acked=False) == [True]
    f.confirmed(20.1)
    assert sent(f, [ae(1, 4)], now=20.2, acked=False) == [False]  # from then on it is trusted again


def test_a_snapshot_chunk_or_an_entry_less_message_passes_and_clears_the_memory() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3)])
    snapshot = {"type": "append_entries", "term": 1, "commit_index": 3,
                "serialized": (b"s", True, True)}  # fmt: skip
    assert sent(f, [snapshot, ae(0, 3)]) == [True, True]
    beyond = {"type": "append_entries", "term": 1, "commit_index": 3, "entries": [],
              "prevLogIdx": None, "prevLogTerm": None}  # fmt: skip
    assert sent(f, [beyond, ae(0, 3)]) == [True, True]


def test_a_big_entry_is_dropped_or_sent_whole() -> None:
    f = ResendFilter()
    assert sent(f, chunks(0) + chunks(1)) == [True] * 6
    assert sent(f, chunks(0) + chunks(1, ("start", "process", "finish"))) == [False] * 6
    assert sent(f, chunks(2)) == [True] * 3
    assert sent(f, [ae(1, 4)]) == [(3, 4)]


def test_a_tail_whose_first_chunk_this_filter_did_not_see_passes_and_trusts_nothing() -> None:
    f = ResendFilter()
    sent(f, [ae(0, 3)])
    assert sent(f, chunks(1)[1:]) == [True, True]  # the receiver's ChunkGuard drops them
    assert sent(f, [ae(0, 3)]) == [True]


# -- the filter between models of PySyncObj's leader and follower (tests/resend_model.py) --


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_what_the_filter_drops_the_follower_holds_and_acknowledged_entries_stay(
    data: st.DataObject,
) -> None:
    """A follower in step with its leader, no losses (so it never refuses anything): every
    dropped message's entries are in its log (same terms) when it would have read it, and
    it never truncates an acknowledged entry (without the filter it does: PySyncObj's
    stale copies; after a reset, stale resets make it do so with or without the filter)."""
    model = data.draw(Model.strategy(lossy=False))
    model.run(data.draw(actions(lossy=False)))
    assert model.catch_up() is not None, model.describe()
    assert model.drops_not_held == 0, model.describe()
    assert model.acked_truncations == 0, model.describe()
    assert model.mismatches == 0, model.describe()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_follower_catches_up_with_the_filter_whenever_it_does_without(
    data: st.DataObject,
) -> None:
    """Losses (the receiver's chunk guard, a straggler frame), a divergent tail: the
    follower's log ends equal to the leader's with the filter whenever it does without it,
    within two more rounds."""
    params = data.draw(Model.params(lossy=True))
    steps = data.draw(actions(lossy=True))
    without = Model(**params, use_filter=False)
    without.run(steps)
    rounds_without = without.catch_up()
    with_filter = Model(**params, use_filter=True)
    with_filter.run(steps)
    rounds_with = with_filter.catch_up()
    if rounds_without is not None:  # (PySyncObj can livelock on its own: see the model)
        assert rounds_with is not None, with_filter.describe()
        assert rounds_with <= rounds_without + 2, with_filter.describe()
    assert with_filter.mismatches == 0, with_filter.describe()


@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans())
def test_a_filter_that_never_hears_of_a_reset_still_lets_the_follower_catch_up(
    data: st.DataObject, steady_load: bool
) -> None:
    """A transport wrapping GrpcTransport that would not forward resets to it: the memory
    is trusted only ``stale_after_s`` past the last acknowledgement, and the follower
    catches up, also while the leader keeps appending."""
    params = data.draw(Model.params(lossy=True))
    steps = data.draw(actions(lossy=True))
    reference = Model(**params, use_filter=False)
    reference.run(steps)
    model = Model(**params, use_filter=True, forward_resets=False)
    model.run(steps)
    if reference.catch_up(grow=steady_load) is not None:
        assert model.catch_up(rounds=80, grow=steady_load) is not None, model.describe()
    assert model.mismatches == 0


def test_the_model_sees_the_problem_the_filter_solves() -> None:
    """Without the filter the same model truncates acknowledged entries, and with 64 KiB
    entries sends far more than it must (the filter's reason to exist)."""
    params = {"common": 0, "follower_tail": 0, "leader_tail": 0, "batch": 1}
    steps: list[tuple[str, int]] = []
    for _ in range(20):  # appends, rounds, and acknowledgements that come late
        steps += [("append", 3), ("round", 0), ("to_f", 0), ("to_f", 0), ("to_l", 0)]
        steps += [("round", 0)]
    runs = {}
    for use_filter in (False, True):
        model = Model(**params, use_filter=use_filter)
        model.run(steps)
        assert model.catch_up() is not None
        runs[use_filter] = model
    assert runs[False].acked_truncations > 0 and runs[True].acked_truncations == 0
    assert runs[True].entries_sent * 2 < runs[False].entries_sent

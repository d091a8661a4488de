"""A model of PySyncObj's leader and follower around one stream, for tests/test_resend.py.

Reduced from pysyncobj/syncobj.py 0.3.17 to what decides which entries travel:

* the leader (term 2) starts, as after its election, with ``nextIndex`` its log's end + 1
  and ``matchIndex`` 0 (``__onBecomeLeader``); a round (``__sendAppendEntries``) sends from
  ``nextIndex`` to its log's end in batches of ``batch`` entries, advancing ``nextIndex``,
  or one heartbeat when there is nothing to send;
* the leader, on ``next_node_idx``: a reset sets ``nextIndex``; a success whose index is
  above ``matchIndex`` sets both (the rewind that makes it send in-flight entries again);
* the follower refuses with a reset when it lacks ``prevLogIdx`` (``next_node_idx`` its
  log's end + 1) or holds another term there (``next_node_idx`` = prevLogIdx); otherwise it
  truncates after ``prevLogIdx``, appends, and answers success with its new end + 1;
* the follower starts with entries of term 1: a prefix shared with the leader and a tail of
  its own; it may lose what it receives (what raftgrpc's chunk guard or a straggler frame
  drops).

One ordered channel each way. The filter sits where GrpcTransport.send() runs it; the clock
is the count of steps taken. PySyncObj itself can livelock in this model (several messages
of one round each refused with a different ``next_node_idx``, the last one winning every
round); tests compare against the same run without the filter for that reason.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import strategies as st

from raftgrpc._protocol.resend import ResendFilter

TERM = 2


def actions(lossy: bool) -> st.SearchStrategy[list[tuple[str, int]]]:
    """What happens, step by step: the leader appends entries or runs a round; the
    follower reads (or loses) a message; the leader reads an answer."""
    kinds = [
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("round"), st.just(0)),
        st.tuples(st.just("to_f"), st.just(0)),
        st.tuples(st.just("to_l"), st.just(0)),
    ]
    if lossy:
        kinds.append(st.tuples(st.just("lose"), st.just(0)))
    return st.lists(st.one_of(kinds), max_size=120)


class Model:
    """The leader, the follower and the stream between them."""

    def __init__(
        self,
        common: int,
        follower_tail: int,
        leader_tail: int,
        batch: int,
        use_filter: bool = True,
        forward_resets: bool = True,
        stale_after_s: float = 5.0,
    ) -> None:
        self.leader = [0] + [1] * common + [TERM] * leader_tail  # terms; [0]: no entry
        self.follower = [0] + [1] * (common + follower_tail)
        self.batch = batch
        self.next_index = len(self.leader)
        self.match = 0
        self.filter = ResendFilter(stale_after_s) if use_filter else None
        self.forward_resets = forward_resets
        self.to_f: deque[tuple[str, dict[str, Any]]] = deque()
        self.to_l: deque[tuple[bool, int]] = deque()  # (reset, next_node_idx)
        self.now = 0.0
        self.acked = 0  # the highest index the follower acknowledged
        self.acked_truncations = 0  # messages that made it truncate acknowledged entries
        self.drops_not_held = 0  # dropped messages whose entries it lacked at their turn
        self.entries_sent = 0
        self.mismatches = 0

    @staticmethod
    def params(lossy: bool) -> st.SearchStrategy[dict[str, int]]:
        return st.fixed_dictionaries(
            {
                "common": st.integers(0, 5),
                "follower_tail": st.integers(0, 6) if lossy else st.just(0),
                "leader_tail": st.integers(1, 5) if lossy else st.just(0),
                "batch": st.integers(1, 4),
            }
        )

    @classmethod
    def strategy(cls, lossy: bool) -> st.SearchStrategy[Model]:
        return cls.params(lossy).map(lambda p: cls(**p))

    # -- the leader ---------------------------------------------------------------------

    def round(self) -> None:
        last = len(self.leader) - 1
        single = True
        while self.next_index <= last or single:
            single = False
            prev = self.next_index - 1
            entries = []
            if self.next_index <= last:
                end = min(last, self.next_index + self.batch - 1)
                entries = [(b"x", i, self.leader[i]) for i in range(self.next_index, end + 1)]
                self.next_index = end + 1
            self._send(
                {
                    "type": "append_entries",
                    "term": TERM,
                    "commit_index": 0,
                    "prevLogIdx": prev,
                    "prevLogTerm": self.leader[prev],
                    "entries": entries,
                }
            )

    def _send(self, message: dict[str, Any]) -> None:
        if self.filter is not None:
            out = self.filter.filter(message, self.now)
            if out is None:
                self.to_f.append(("dropped", message))
                return
            message = out
        self.entries_sent += len(message["entries"])
        self.to_f.append(("sent", message))

    def leader_reads(self) -> None:
        reset, index = self.to_l.popleft()
        if self.filter is not None and not reset:
            self.filter.confirmed(self.now)
        if reset:
            if self.filter is not None and self.forward_resets:
                self.filter.forget()
            self.next_index = index
        elif self.match < index - 1:
            self.match = index - 1
            self.next_index = index

    # -- the follower -------------------------------------------------------------------

    def follower_reads(self, lose: bool = False) -> None:
        kind, message = self.to_f.popleft()
        if kind == "dropped":
            held = all(
                i < len(self.follower) and self.follower[i] == t for _, i, t in message["entries"]
            )
            self.drops_not_held += not held
            return
        if lose:
            return
        prev = message["prevLogIdx"]
        if prev >= len(self.follower):
            self.to_l.append((True, len(self.follower)))
            return
        if self.follower[prev] != message["prevLogTerm"]:
            self.to_l.append((True, prev))
            return
        if len(self.follower) - 1 > prev and self.acked > prev:
            self.acked_truncations += 1
        self.follower = self.follower[: prev + 1] + [t for _, _, t in message["entries"]]
        if self.follower != self.leader[: len(self.follower)]:
            self.mismatches += 1  # Log Matching broken: it accepted what it must not
        self.acked = max(self.acked, len(self.follower) - 1)
        self.to_l.append((False, len(self.follower)))

    # -- runs ---------------------------------------------------------------------------

    def step(self, kind: str, n: int) -> None:
        if kind == "append":
            self.leader += [TERM] * n
        elif kind == "round":
            self.now += 1.0  # the clock counts rounds (PySyncObj's appendEntriesPeriod)
            self.round()
        elif kind in ("to_f", "lose") and self.to_f:
            self.follower_reads(lose=kind == "lose")
        elif kind == "to_l" and self.to_l:
            self.leader_reads()

    def run(self, steps: list[tuple[str, int]]) -> None:
        for kind, n in steps:
            self.step(kind, n)

    def caught_up(self) -> bool:
        return self.follower == self.leader and self.match == len(self.leader) - 1

    def catch_up(self, rounds: int = 40, grow: bool = False) -> int | None:
        """Rounds without losses, each read to the end, until the follower holds the
        leader's log: how many it took, or None. ``grow``: the leader appends an entry
        before each round (a steady load)."""
        for i in range(rounds):
            if self.caught_up():
                return i
            self.now += 1.0
            if grow:
                self.leader.append(TERM)
            self.round()
            while self.to_f or self.to_l:
                if self.to_f:
                    self.follower_reads()
                if self.to_l:
                    self.leader_reads()
        return rounds if self.caught_up() else None

    def describe(self) -> str:
        return (
            f"leader {self.leader} follower {self.follower} next {self.next_index} "
            f"match {self.match} acked truncations {self.acked_truncations} "
            f"drops not held {self.drops_not_held} mismatches {self.mismatches}"
        )

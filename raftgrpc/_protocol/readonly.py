"""What a read-only follower may send (pure code).

A read-only Hello binds no identity: whoever holds any valid credential may open one. So
only what a read-only follower sends is taken from it: acknowledgements of entries
(``next_node_idx``), and commands it forwards (``apply_command``, which the leader appends
like any client's, membership changes included). Votes, entries and ``timeout_now``, which
would move the term or overwrite the log as if from a voter, are refused with their stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["READONLY_SENDS", "refused_from_readonly"]

READONLY_SENDS = frozenset({"next_node_idx", "apply_command"})
"""The message types a read-only follower sends."""


def refused_from_readonly(messages: Iterable[dict[str, Any]]) -> list[str]:
    """The types among ``messages`` that a read-only follower may not send, sorted ([]:
    every message may be taken).

    >>> refused_from_readonly([{"type": "next_node_idx"}, {"type": "request_vote"}])
    ['request_vote']
    """
    kinds = {str(m.get("type")) for m in messages}
    if READONLY_SENDS.issuperset(kinds):
        return []
    return sorted(kinds - READONLY_SENDS)

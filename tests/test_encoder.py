"""BatchEncoder: a memo hit gives exactly what a fresh encoding gives, and only then."""

from __future__ import annotations

from typing import Any

from raftgrpc._protocol.codec import encode_message
from raftgrpc._protocol.encoder import BatchEncoder

LOG = [(b"cmd%d" % i, i + 1, 3) for i in range(100)]


def batch(entries: list[Any], commit: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 3,
        "commit_index": commit,
        "prevLogIdx": entries[0][1] - 1,
        "prevLogTerm": 3,
        "entries": entries,
        **extra,
    }


def test_the_same_batch_for_another_follower_is_encoded_once() -> None:
    encoder = BatchEncoder()
    first = encoder.encode(batch(LOG[10:60]))
    second = encoder.encode(batch(LOG[10:60]))  # a new slice of the same tuples
    assert encoder.hits == 1
    assert first == second == encode_message(batch(LOG[10:60]))


def test_anything_different_is_encoded_afresh() -> None:
    encoder = BatchEncoder()
    encoder.encode(batch(LOG[10:60]))
    equal_copies = [(bytes(d), i, t) for d, i, t in LOG[10:60]]
    variants = [
        batch(equal_copies),  # equal values, other objects
        batch(LOG[10:60], commit=6),
        batch(LOG[10:59]),
        batch(LOG[11:61]),
    ]
    for message in variants:
        assert encoder.encode(message) == encode_message(message)
    assert encoder.hits == 0

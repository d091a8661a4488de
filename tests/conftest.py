"""Fixtures shared by the in-process transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.host import Host, destroy_all


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    """Hosts a test creates; their transports are destroyed afterwards."""
    made: list[Host] = []
    yield made
    destroy_all(made)

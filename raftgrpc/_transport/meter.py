"""Byte accounting shared by a transport's queues, so that memory bounds can be measured."""

from __future__ import annotations

import threading

__all__ = ["ByteMeter"]


class ByteMeter:
    """A thread-safe count of bytes held, and the most ever held at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes as held."""
        with self._lock:
            self.current += nbytes
            if self.current > self.peak:
                self.peak = self.current

    def sub(self, nbytes: int) -> None:
        """Count ``nbytes`` bytes as released."""
        with self._lock:
            self.current -= nbytes

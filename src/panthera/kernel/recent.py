"""A map that keeps only its newest entries: what a process remembers of its own writes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Up to ``most`` entries; putting one past that drops the one put longest ago.

    For memory that saves a read when it holds and costs nothing but that read when
    it does not: the entries of a busy process's last few minutes, never all of them.
    """

    def __init__(self, most: int = 10_000) -> None:
        self._most = most
        self._entries: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._most:
            self._entries.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

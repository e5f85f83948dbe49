"""A small in-process least-recently-used cache. Long-lived workers keep their recent
experiments warm with it (loaded baselines, the baselines' evaluation and geometry), so a run
after the first pays only for its own work, and memory stays bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LRU(Generic[T]):
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[Hashable, T] = OrderedDict()
        self.hits = self.misses = 0

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key]
        self.misses += 1
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        self.items.clear()

"""The waiting queue both engines keep: arrival order (preempted requests at the front) plus sorted copies
kept incrementally for each order a policy asks for, so an SPF policy costs O(log n) per change, not a sort
per batch. The simulated engine owns its queue; the vLLM plugin keeps one in step with vLLM's."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

Key = Callable[[Any], tuple]  # over a request with an int `id`, unique while queued


class WaitQueue:
    def __init__(self) -> None:
        self.fcfs: list[Any] = []
        self._ids: set[int] = set()
        self._sorted: dict[Key, tuple[list[tuple], list[Any]]] = {}

    def __len__(self) -> int:
        return len(self.fcfs)

    def __contains__(self, r: Any) -> bool:
        return r.id in self._ids

    def append(self, r: Any) -> None:
        self.fcfs.append(r)
        self._ids.add(r.id)
        self._insort(r)

    def push_front(self, r: Any) -> None:
        self.fcfs.insert(0, r)
        self._ids.add(r.id)
        self._insort(r)

    def remove(self, r: Any) -> None:
        self.fcfs.remove(r)
        self._ids.discard(r.id)
        for key, (keys, reqs) in self._sorted.items():
            i = bisect.bisect_left(keys, (*key(r), r.id))
            del keys[i], reqs[i]

    def by(self, key: Key) -> list[Any]:
        if key not in self._sorted:
            pairs = sorted(((*key(r), r.id), r) for r in self.fcfs)
            self._sorted[key] = ([k for k, _ in pairs], [r for _, r in pairs])
        return self._sorted[key][1]

    def _insort(self, r: Any) -> None:
        for key, (keys, reqs) in self._sorted.items():
            k = (*key(r), r.id)
            i = bisect.bisect_left(keys, k)
            keys.insert(i, k)
            reqs.insert(i, r)

"""The waiting queue: arrival order (preempted requests at the front) plus sorted copies kept
incrementally for each order a policy asks for, so an SPF policy costs O(log n) per change, not a sort
per batch."""

from __future__ import annotations

import bisect
from collections.abc import Callable

from llmsched.workload.request import Request

Key = Callable[[Request], tuple]


class WaitQueue:
    def __init__(self) -> None:
        self.fcfs: list[Request] = []
        self._sorted: dict[Key, tuple[list[tuple], list[Request]]] = {}

    def __len__(self) -> int:
        return len(self.fcfs)

    def append(self, r: Request) -> None:
        self.fcfs.append(r)
        self._insort(r)

    def push_front(self, r: Request) -> None:
        self.fcfs.insert(0, r)
        self._insort(r)

    def remove(self, r: Request) -> None:
        self.fcfs.remove(r)
        for key, (keys, reqs) in self._sorted.items():
            i = bisect.bisect_left(keys, (*key(r), r.id))
            del keys[i], reqs[i]

    def by(self, key: Key) -> list[Request]:
        if key not in self._sorted:
            pairs = sorted(((*key(r), r.id), r) for r in self.fcfs)
            self._sorted[key] = ([k for k, _ in pairs], [r for _, r in pairs])
        return self._sorted[key][1]

    def _insort(self, r: Request) -> None:
        for key, (keys, reqs) in self._sorted.items():
            k = (*key(r), r.id)
            i = bisect.bisect_left(keys, k)
            keys.insert(i, k)
            reqs.insert(i, r)

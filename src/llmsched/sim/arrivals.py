"""A closed-loop workload's pending arrivals, earliest first, as an engine or cluster loop consumes them."""

from __future__ import annotations

import heapq
import math

from llmsched.workload.request import Request
from llmsched.workload.source import Workload


class Arrivals:
    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.heap: list[tuple[float, int, Request]] = []
        self.issued: list[Request] = []  # every request popped, in arrival order
        self._push(workload.initial())

    def done(self, r: Request, t: float) -> None:
        self._push(self.workload.on_done(r, t))

    def next_time(self) -> float:
        return self.heap[0][0] if self.heap else math.inf

    def pop(self) -> Request:
        r = heapq.heappop(self.heap)[2]
        self.issued.append(r)
        return r

    def _push(self, requests: list[Request]) -> None:
        for r in requests:
            heapq.heappush(self.heap, (r.arrival, r.id, r))

"""Decodes in order of their deadlines (EDF): the queue SLAI keeps of every decode, keyed by its last schedulable
time (LST).

A heap of (deadline, arrival, id, request) with lazy deletion: `deadline[id]` holds each queued request's current
deadline, and an entry whose deadline is no longer its request's is skipped when it reaches the head. After a batch
that ran every decode, the queue is rebuilt whole from that batch (`requeue` into an empty queue); the next batch
usually takes it whole again (`take_all`), so it is heapified only when something is first popped.
"""

from __future__ import annotations

import heapq
from operator import eq, itemgetter

from llmsched.policies.interface import EngineView
from llmsched.policies.plan import Req

Entry = tuple[float, float, int, Req]  # (deadline, arrival, request id, request): heap order
_request_of = itemgetter(3)
_deadline_of, _id_of = itemgetter(0), itemgetter(2)


class DeadlineQueue:
    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self.deadline: dict[int, float] = {}  # queued request id -> its current deadline
        self._clean = True  # no stale entries in the heap (it was rebuilt whole since the last change)
        self._heaped = True  # the list is a heap; else it is in `_order`'s order, not yet heapified
        self._order: list[Req] = []  # while not heaped: the queued requests, in entry order

    def __bool__(self) -> bool:
        """Entries are left (stale ones included: they are dropped as they reach the head)."""
        return bool(self._heap)

    def head(self) -> float:
        """The deadline of the head entry (which may be stale)."""
        if not self._heaped:
            self._heapify()
        return self._heap[0][0]

    def pop(self) -> Req | None:
        """The head's request, or None for a stale entry."""
        self._heapify()
        deadline, _, rid, r = heapq.heappop(self._heap)
        return r if self.deadline.get(rid) == deadline else None

    def head_request(self) -> Req | None:
        """The request with the earliest deadline (stale entries at the head are dropped), or None."""
        self._heapify()
        heap = self._heap
        while heap and self.deadline.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][3] if heap else None

    def push_back(self, entries: list[Entry]) -> None:
        """Return popped entries, unchanged (their requests stay queued with the same deadlines)."""
        self._heapify()
        for e in entries:
            heapq.heappush(self._heap, e)

    def live(self) -> int:
        """How many requests are queued (stale entries not counted)."""
        if self._clean:
            return len(self._heap)
        heap = self._heap  # the count of entries whose deadline is their request's, with C-level iteration
        return sum(map(eq, map(self.deadline.get, map(_id_of, heap)), map(_deadline_of, heap)))

    def take_all(self) -> list[Req]:
        """Every queued request, emptying the queue (their deadlines stay until `requeue` or `forget`)."""
        if not self._heaped:
            taken = self._order
        elif self._clean:
            taken = list(map(_request_of, self._heap))
        else:
            taken = [e[3] for e in self._heap if self.deadline.get(e[2]) == e[0]]
        self._heap, self._heaped = [], True
        return taken

    def deadline_requests(self) -> list[Req]:
        """The queued requests, in no particular order."""
        if self._clean:
            return self._order if not self._heaped else list(map(_request_of, self._heap))
        return [e[3] for e in self._heap if self.deadline.get(e[2]) == e[0]]

    def latest(self) -> float:
        """The latest deadline of a queued request (-inf if none is queued)."""
        return max(self.deadline.values(), default=-float("inf"))

    def take_in_order(self) -> list[Req]:
        """Every queued request in deadline order (the order `pop` gives), emptying the queue."""
        if self._clean:
            entries = sorted(self._heap)
        else:
            entries = sorted(e for e in self._heap if self.deadline.get(e[2]) == e[0])
        self._heap, self._heaped = [], True
        return list(map(_request_of, entries))

    def forget(self, rid: int) -> None:
        """The request left the queue for good (finished or preempted); its entry goes stale."""
        self.deadline.pop(rid, None)

    def requeue(self, entries: list[Entry], requests: list[Req]) -> None:
        """Queue (again) each entry's request with the entry's deadline (`requests`: theirs, in the same order); an
        older entry of the same request goes stale."""
        self.deadline.update(zip(map(_id_of, entries), map(_deadline_of, entries), strict=True))  # a later one wins
        if self._heap:  # entries left in it may have gone stale above
            self._heapify()
            self._clean = False
            for e in entries:
                heapq.heappush(self._heap, e)
            if len(self._heap) > 2 * len(self.deadline) + 16:
                # Mostly stale: drop them. Every reader skips a stale entry (pops return None, counts and takes
                # filter), and live ones pop in their keys' order, so nothing a policy reads changes.
                self._heap = [e for e in self._heap if self.deadline.get(e[2]) == e[0]]
                heapq.heapify(self._heap)
        else:  # every decode ran: fresh entries only, heapified when first popped
            self._heap, self._clean, self._heaped, self._order = entries, True, False, requests

    def pass_over(self, first: float, last: float) -> None:
        """What batches that take no decode do to the queue, the first starting at `first` and the last at `last`: as
        SLAI's `schedule` looks for critical decodes, each drops the (stale) entries at the head due by its start,
        then its `on_batch_done` requeues none. Every entry due by `last` must be stale."""
        for t in (first, last):
            while self and self.head() <= t:
                if self.pop() is not None:
                    raise RuntimeError("a decode due within batches that took none")
            self.requeue([], [])

    def _heapify(self) -> None:
        if not self._heaped:
            heapq.heapify(self._heap)
            self._heaped = True


def kv_offset(view: EngineView, memory_limit: float, below: float, above: float) -> float:
    """SLAI's LST offset, in mean batch durations: `above` once the share of KV blocks in use reaches
    `memory_limit`, else `below`."""
    return offset_at(view.free_blocks, view.total_blocks, memory_limit, below, above)


def offset_at(free_blocks: int, total_blocks: int, memory_limit: float, below: float, above: float) -> float:
    """`kv_offset` with these many blocks free."""
    used = 1 - free_blocks / total_blocks
    return above if used >= memory_limit else below

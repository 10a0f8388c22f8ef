"""Several simulated replicas behind a router, on one simulated clock.

Arrivals are taken in time order. Before each arrival every replica runs the batches that start before
it; the router, which has been told of every completion up to that instant, picks a replica and books
the request there. A replica that cannot report a departure by then (`SimEngine.quiet_until`) runs them
later, in one go, with the same batches: the router has heard all it would have. The result is the union
of the replicas' requests; the batch log is the replicas' batches by start time with a `replica` column,
where `waiting` and `running` count the whole cluster (each replica's latest count), so a queue that
grows anywhere shows in them.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from llmsched.records import BatchLog, RunResult
from llmsched.routers import Router
from llmsched.sim.arrivals import Arrivals
from llmsched.sim.engine import SimEngine
from llmsched.workload.request import FINISHED, REJECTED, Request
from llmsched.workload.source import Workload


@dataclass
class ClusterResult(RunResult):
    replicas: list[RunResult] = field(default_factory=list)

    def replica_summary(self) -> list[dict]:
        """Per replica: requests routed there, completed, batches."""
        return [
            {
                "replica": i,
                "requests": len(r.requests),
                "completed": sum(q.state == FINISHED for q in r.requests),
                "num_batches": len(r.batches),
                "kv_blocks": r.num_blocks,
            }
            for i, r in enumerate(self.replicas)
        ]


class Cluster:
    def __init__(self, engines: list[SimEngine], router: Router) -> None:
        if len(engines) != len(router.loads):
            raise ValueError("one router slot per engine")
        self.engines, self.router = engines, router
        self._left: list[tuple[float, int, Request]] = []  # (time, id, request): completions to report
        self._arrivals: Arrivals | None = None  # a closed loop's, while it runs
        self._routed_at = -math.inf  # the arrival routed last
        for i, e in enumerate(engines):
            e.replica = i
            e.on_done = self._done

    def _done(self, r: Request, t: float) -> None:
        if t < self._routed_at:  # a replica run late (`run`) reports a departure its router should have heard of
            raise RuntimeError(f"request {r.id} left at {t}, before the arrival routed at {self._routed_at}")
        heapq.heappush(self._left, (t, r.id, r))
        if self._arrivals is not None:
            self._arrivals.done(r, t)

    def run(self, requests: list[Request] | Workload) -> ClusterResult:
        """Serve a list of requests (an open loop), or a closed-loop workload whose arrivals follow completions."""
        if not isinstance(requests, list):
            return self._run_closed(Arrivals(requests))
        pending = sorted(requests, key=lambda r: (r.arrival, r.id))
        routed: list[list[Request]] = [[] for _ in self.engines]
        engines = self.engines
        quiet = [0.0] * len(engines)  # per replica: no request leaves it before then (`SimEngine.quiet_until`)
        for r in pending:
            t = r.arrival
            # Only the replicas that may report a departure by `t` run up to it now (the router must hear of every
            # departure before it routes); the others run later, with the same batches.
            for i, e in enumerate(engines):
                if quiet[i] <= t:
                    e.advance(t)
                    quiet[i] = e.quiet_until()
            i = self._route(r, routed, engines)
            if i is not None:
                quiet[i] = engines[i].quiet_until()
        return self._finish(pending, routed)

    def _run_closed(self, arrivals: Arrivals) -> ClusterResult:
        # Batches start in time order across replicas (the replica furthest behind runs next, one batch at a
        # time), so an arrival a completion causes never lands before a batch already run anywhere.
        routed: list[list[Request]] = [[] for _ in self.engines]
        self._arrivals = arrivals
        try:
            while True:
                t = arrivals.next_time()
                behind = min((e for e in self.engines if e.active), key=lambda e: e.now, default=None)
                if behind is not None and behind.now < t:
                    behind.step()
                elif t < math.inf:
                    self._route(arrivals.pop(), routed)
                else:
                    break
        finally:
            self._arrivals = None
        return self._finish(arrivals.issued, routed)

    def _route(self, r: Request, routed: list[list[Request]], behind: list[SimEngine] | None = None) -> int | None:
        """Book an arrival on the router's replica (its index; None if it was refused on arrival). Every replica
        has reported its departures up to the arrival; `behind`: the replicas that may not have run the batches
        that start before it yet (the chosen one does before it takes the request)."""
        left, t = self._left, r.arrival
        while left and left[0][0] <= t:
            self.router.settle(heapq.heappop(left)[1])
        self._routed_at = t
        if r.state == REJECTED:  # refused on arrival (longer than the model's context): never routed
            if self._arrivals is not None:
                self._arrivals.done(r, t)
            return None
        i = self.router.route(r.id, r.prompt_len, r.decode_len, r.prefix_ids, r.prefix_block)
        routed[i].append(r)
        if behind is not None:
            behind[i].advance(t)
        self.engines[i].add(r)
        return i

    def _finish(self, requests: list[Request], routed: list[list[Request]]) -> ClusterResult:
        for e in self.engines:
            e.advance(math.inf)
        while self._left:
            self.router.settle(heapq.heappop(self._left)[1])
        parts = [e.finish(rs) for e, rs in zip(self.engines, routed, strict=True)]
        blocks, end = sum(p.num_blocks for p in parts), max(p.end_time for p in parts)
        first = parts[0]
        return ClusterResult(
            requests, _merge([p.batches for p in parts]), blocks, end, first.block_size, first.prefix_caching, parts
        )


def _merge(logs: list[BatchLog]) -> BatchLog:
    """The replicas' batches by start (ties by replica, then batch); waiting and running summed over the replicas'
    latest counts."""
    cols = ("start", "duration", "prefill_tokens", "prefills", "decodes", "kv_blocks_used", "preempted")
    whole = {c: np.concatenate([np.asarray(getattr(log, c)) for log in logs]) for c in cols}
    replica = np.concatenate([np.full(len(log), k) for k, log in enumerate(logs)])
    index = np.concatenate([np.arange(len(log)) for log in logs])
    order = np.lexsort((index, replica, whole["start"]))
    out = BatchLog(**{c: whole[c][order].tolist() for c in cols}, replica=replica[order].tolist())
    for c in ("waiting", "running"):  # each replica's change since its previous batch, summed in merged order
        change = np.concatenate([np.diff(np.asarray(getattr(log, c), dtype=np.int64), prepend=0) for log in logs])
        setattr(out, c, np.cumsum(change[order]).tolist())
    return out

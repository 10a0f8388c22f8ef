"""SLAI (SLO-Aware LLM Inference), as the paper's released code implements it (reference section 3).

Each decode has a last schedulable time, LST = end of its last batch + its TBT - offset x mean batch
duration. A batch takes, in order, up to the token budget:
  1. critical decodes (LST <= now), earliest LST first, at most `limit_total_decodes`;
  2. paused prefills (started, not finished), FIFO;
  3. new prefills, FCFS or shortest-prompt-first (optionally paying tier first, optionally aged);
  4. the other decodes by LST, while critical + these stay under `limit_total_decodes`.
When a decode needs a KV block and none is free, the most recently paused prefill that this batch does not
continue is preempted; if there is none, the decode itself is. The offset is fixed, or `below` / `above` the
memory limit of KV use.
The mean batch duration is the cumulative mean of every batch's start-to-end time seen so far; the reference
measures it on the wall clock, CPU overhead included, which the simulator's calibrated per-batch overhead stands
for (docs/slai.md).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from operator import itemgetter

from llmsched.policies import order as orders
from llmsched.policies.batch import BatchBuilder
from llmsched.policies.interface import EngineView, Policy, Req
from llmsched.policies.plan import Plan


@dataclass(frozen=True)
class SLAIConfig:
    fcfs: bool = False
    user_priority: bool = True  # paying tier first among waiting prefills
    fixed_offset: bool = False
    below_memory_limit_offset: float = 5.0  # delta, in mean batch durations (the fixed delta if fixed)
    above_memory_limit_offset: float = 10.0
    memory_limit: float = 0.96  # fraction of KV blocks in use that switches to the larger offset
    limit_total_decodes: int = 128  # beta
    aging: float = 0.0  # tokens of prompt forgiven per second waited (0: plain SPF); anti-starvation


PRESETS: dict[str, SLAIConfig] = {
    "slai-fcfs-fixed": SLAIConfig(fcfs=True, user_priority=False, fixed_offset=True, below_memory_limit_offset=10),
    "slai-spf-fixed": SLAIConfig(user_priority=False, fixed_offset=True, below_memory_limit_offset=10),
    "slai-spf-dynamic": SLAIConfig(user_priority=False),
    "slai": SLAIConfig(),
    # Anti-starvation (ours): long prompts starve when stretched decodes hold the KV they need; above 60% KV
    # use every decode runs each batch (an offset beyond any TBT), so KV drains and long prompts get in.
    "slai-kv-guard": SLAIConfig(memory_limit=0.6, above_memory_limit_offset=100.0),
}


_request_of = itemgetter(3)  # of a decode-queue entry (LST, arrival, id, request)


class SLAI(Policy):
    name = "slai"
    defaults = {"token_budget": 512, "max_num_seqs": 128}

    def __init__(self, preset: str = "slai", **knobs: object) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown SLAI preset {preset!r}")
        base = PRESETS[preset]
        self.cfg = SLAIConfig(**{**base.__dict__, **knobs})  # type: ignore[arg-type]
        self.name = preset
        self.decode_queue: list[tuple[float, float, int, Req]] = []  # (LST, arrival, id, request)
        self.lst: dict[int, float] = {}  # valid heap entries: request id -> its current LST
        self.clean = True  # no stale entries in decode_queue (it was rebuilt whole since the last change)
        # decode_queue is a heap only when `heaped`: a batch that ran every decode rebuilds it whole, and the next
        # batch usually takes it whole again (`_take_all_if_they_fit`), so it is heapified only when popped.
        self.heaped = True
        self.requeued: list[Req] = []  # while not `heaped`: the requests of decode_queue, in its order
        self.paused: list[Req] = []
        self.mean_batch = 0.0
        self.batches = 0
        self.offset = self.cfg.below_memory_limit_offset if self.cfg.fixed_offset else 0.0
        if self.cfg.fcfs:
            self.order = None
        elif self.cfg.aging > 0:
            self.order = orders.aged(1.0, self.cfg.aging, self.cfg.user_priority)
        else:
            self.order = orders.tier_spf if self.cfg.user_priority else orders.spf

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view)
        now, beta = view.clock, self.cfg.limit_total_decodes
        # No prefill can run (none paused, none admissible): critical and relaxed decodes take the batch alone,
        # so when all of them fit, their order does not matter and one pass takes them.
        if not self.paused and (b.seqs >= view.max_num_seqs or not view.waiting) and self._take_all_if_they_fit(b, 0):
            return b.plan
        self._heapify()
        critical = 0
        while self.decode_queue and b.room > 0 and critical < beta and self.decode_queue[0][0] <= now:
            r = self._pop()
            if r is not None:
                critical += 1
                if not self._add_decode(b, r):
                    critical -= 1
        for r in list(self.paused):
            if b.room <= 0:
                break
            if r.id not in b.preempted:
                b.add_chunk(r)
        b.admit_waiting(view.waiting if self.order is None else view.waiting_by(self.order))
        relaxed = 0
        if self._take_all_if_they_fit(b, critical):
            return b.plan
        while self.decode_queue and b.room > 0 and critical + relaxed < beta:
            lst = self.decode_queue[0][0]
            r = self._pop()
            if r is not None and self._add_decode(b, r) and now < lst:
                relaxed += 1
        return b.plan

    def _take_all_if_they_fit(self, b: BatchBuilder, taken: int) -> bool:
        """The common steady state: every queued decode fits the budget, beta and KV (each needs at most one
        block), so the loop below would take them all, whatever their order; take them in one pass."""
        q = self.decode_queue
        live = q if self.clean else [e for e in q if self.lst.get(e[2]) == e[0]]
        if not live or len(live) > min(b.room, b.free) or taken + len(live) > self.cfg.limit_total_decodes:
            return False
        b.plan.decodes.extend(self.requeued if not self.heaped else map(_request_of, live))
        self.decode_queue, self.heaped = [], True
        b.tokens += len(live)
        return True

    def _heapify(self) -> None:
        if not self.heaped:
            heapq.heapify(self.decode_queue)
            self.heaped = True

    def _pop(self) -> Req | None:
        lst, _, rid, r = heapq.heappop(self.decode_queue)
        return r if self.lst.get(rid) == lst else None  # stale entries were superseded or removed

    def _add_decode(self, b: BatchBuilder, r: Req) -> bool:
        """Slot for one decode; out of KV, preempt the last paused prefill, else the decode itself."""
        need = b.decode_blocks(r)
        while need > b.free:
            # A prefill continued in this batch is no longer paused (the reference pops it from the list).
            busy = {p.id for p, _ in b.plan.prefills}
            victim = next((p for p in reversed(self.paused) if p.id not in b.preempted and p.id not in busy), None)
            if victim is None:
                b.preempt(r)
                return False
            b.preempt(victim)
        return b.add_decode(r, need)

    def on_batch_done(self, view: EngineView, plan: Plan, start: float, end: float) -> None:
        self.batches += 1
        self.mean_batch += (end - start - self.mean_batch) / self.batches
        for r in plan.preempt:
            self.lst.pop(r.id, None)
            if r in self.paused:
                self.paused.remove(r)
        if not self.cfg.fixed_offset:
            used = 1 - view.free_blocks / view.total_blocks
            c = self.cfg
            self.offset = c.above_memory_limit_offset if used >= c.memory_limit else c.below_memory_limit_offset
        early = self.offset * self.mean_batch
        requeue = []
        for r, _ in plan.prefills:
            if r in self.paused:
                self.paused.remove(r)
            if r.finished:
                continue
            if r.is_decoding:
                requeue.append(r)
            else:
                self.paused.append(r)
        preempted = {p.id for p in plan.preempt}
        for r in plan.decodes:
            if r.finished or r.id in preempted:
                self.lst.pop(r.id, None)
            else:
                requeue.append(r)
        lsts = self.lst
        again = [(end + r.tbt - early, r.arrival, r.id, r) for r in requeue]  # the hot path: every decode
        for e in again:
            lsts[e[2]] = e[0]
        if self.decode_queue:  # entries left in it may have gone stale above
            self._heapify()
            self.clean = False
            for e in again:
                heapq.heappush(self.decode_queue, e)
        else:  # every decode ran: fresh entries only, heapified when first popped
            self.decode_queue, self.clean, self.heaped, self.requeued = again, True, False, requeue

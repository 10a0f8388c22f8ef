"""SLAI (SLO-Aware LLM Inference), as the paper's released code implements it (reference section 3).

Each decode has a last schedulable time, LST = end of its last batch + its TBT - offset x mean batch
duration (`DeadlineQueue`). A batch takes, in order, up to the token budget:
  1. critical decodes (LST <= now), earliest LST first, at most `limit_total_decodes`;
  2. paused prefills (started, not finished), FIFO;
  3. new prefills, FCFS or shortest-prompt-first (optionally paying tier first, optionally aged); with a prefix
     cache, SPF may measure only the uncached part of each prompt (`length="uncached"`), or the longest cached
     prefix may go first (`lpm`, SGLang's order; ties in the SPF or FCFS order);
  4. the other decodes by LST, while critical + these stay under `limit_total_decodes`.
When a decode needs a KV block and none is free, the most recently paused prefill that this batch does not
continue is preempted; if there is none, the decode itself is. The offset is fixed, or `below` / `above` the
memory limit of KV use.
The mean batch duration is the cumulative mean of every batch's start-to-end time seen so far; the reference
measures it on the wall clock, CPU overhead included, which the simulator's calibrated per-batch overhead stands
for (docs/slai.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmsched.policies import order as orders
from llmsched.policies.batch import BatchBuilder, admits_nothing
from llmsched.policies.deadlines import DeadlineQueue, kv_offset, offset_at
from llmsched.policies.interface import CacheKey, EngineView, OrderKey, Policy, Req
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
    length: str = "prompt"  # what SPF measures: the whole prompt, or its part not in the prefix cache ("uncached")
    lpm: bool = False  # longest cached prefix first (SGLang's lpm), ties in the SPF (or FCFS) order


PRESETS: dict[str, SLAIConfig] = {
    "slai-fcfs-fixed": SLAIConfig(fcfs=True, user_priority=False, fixed_offset=True, below_memory_limit_offset=10),
    "slai-spf-fixed": SLAIConfig(user_priority=False, fixed_offset=True, below_memory_limit_offset=10),
    "slai-spf-dynamic": SLAIConfig(user_priority=False),
    "slai": SLAIConfig(),
    # Anti-starvation (ours): long prompts starve when stretched decodes hold the KV they need; above 60% KV
    # use every decode runs each batch (an offset beyond any TBT), so KV drains and long prompts get in.
    "slai-kv-guard": SLAIConfig(memory_limit=0.6, above_memory_limit_offset=100.0),
    # With prefix caching (ours): SPF on the prompt's uncached part; or the longest cached prefix first.
    "slai-uncached": SLAIConfig(length="uncached"),
    "slai-lpm": SLAIConfig(lpm=True),
}


class SLAI(Policy):
    name = "slai"
    sarathi_rules = True
    defaults = {"token_budget": 512, "max_num_seqs": 128}

    def __init__(self, preset: str = "slai", **knobs: object) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown SLAI preset {preset!r}")
        base = PRESETS[preset]
        self.cfg = SLAIConfig(**{**base.__dict__, **knobs})  # type: ignore[arg-type]
        self.name = preset
        self.decodes = DeadlineQueue()  # every decode, by LST
        self.paused: list[Req] = []
        self.mean_batch = 0.0
        self.batches = 0
        self.offset = self.cfg.below_memory_limit_offset if self.cfg.fixed_offset else 0.0
        self._bulk: tuple[int, float, float, int] | None = None  # batches, mean, largest TBT, KV blocks in a stretch
        rules = self.sarathi_rules
        c = self.cfg
        if c.length not in ("prompt", "uncached"):
            raise ValueError(f"length is {c.length!r}, expected prompt or uncached")
        if c.length == "uncached" and (c.fcfs or c.lpm):
            raise ValueError("length='uncached' is what shortest-prompt-first measures; it needs SPF, not fcfs or lpm")
        by_tier = c.user_priority and not c.fcfs
        self.order: OrderKey | None = None  # a fixed order (None: FCFS)
        self.cache_order: CacheKey | None = None  # or one that sees the prefix cache
        if c.lpm:
            base = None if c.fcfs else orders.aged(1.0, c.aging, False, rules) if c.aging > 0 else orders.spf_key(rules)
            self.cache_order = orders.longest_prefix(base, by_tier)
        elif c.length == "uncached":
            aged = orders.aged_uncached(c.aging, by_tier, rules) if c.aging > 0 else None
            self.cache_order = aged or orders.uncached_key(rules, by_tier)
        elif not c.fcfs:
            aged = orders.aged(1.0, c.aging, by_tier, rules) if c.aging > 0 else None
            self.order = aged or (orders.tier_spf_key(rules) if by_tier else orders.spf_key(rules))

    @property
    def lst(self) -> dict[int, float]:
        """Each queued decode's last schedulable time, by request id."""
        return self.decodes.deadline

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view, sarathi_rules=self.sarathi_rules)
        now = view.clock
        # No prefill can run (none paused, none admissible): when every decode fits, their order does not matter.
        if not self.paused and (b.seqs >= view.max_num_seqs or not view.waiting) and self._take_all(b, 0):
            return b.plan
        critical = self._critical_decodes(b, now)  # 1.
        for r in list(self.paused):  # 2.
            if b.room <= 0:
                break
            if r.id not in b.preempted:
                b.add_chunk(r)
        b.admit_waiting(self._waiting(view))  # 3.
        if not self._take_all(b, critical):  # 4.
            self._relaxed_decodes(b, now, critical)
        return b.plan

    def _waiting(self, view: EngineView) -> Iterable[Req]:
        if self.cache_order is not None:
            return orders.by_cache(view, self.cache_order)
        return view.waiting if self.order is None else view.waiting_by(self.order)

    def _critical_decodes(self, b: BatchBuilder, now: float) -> int:
        critical, q = 0, self.decodes
        n = q.live() if q.latest() <= now else 0  # latest first: the cheaper test, mostly False
        if n and n <= min(b.room, self.cfg.limit_total_decodes):
            # Every decode is critical and, if KV has a block for each that needs one, all fit: the loop below
            # would take them all in LST order, one pop at a time.
            bs = b.view.block_size
            need = sum([r.computed >= r.blocks * bs for r in q.deadline_requests()])
            if need + b.decode_floor <= b.free:
                b.plan.decodes.extend(q.take_in_order())
                b.tokens += n
                b.free -= need
                return n
        while q and b.room > 0 and critical < self.cfg.limit_total_decodes and q.head() <= now:
            r = q.pop()
            if r is not None and b.add_decode_preempting(r, self._victim):
                critical += 1
        return critical

    def _relaxed_decodes(self, b: BatchBuilder, now: float, critical: int) -> None:
        relaxed, q = 0, self.decodes
        while q and b.room > 0 and critical + relaxed < self.cfg.limit_total_decodes:
            lst = q.head()
            r = q.pop()
            if r is not None and b.add_decode_preempting(r, self._victim) and now < lst:
                relaxed += 1  # an overdue decode popped here does not count against beta (as the reference)

    def _take_all(self, b: BatchBuilder, taken: int) -> bool:
        """The common steady state: every queued decode fits the budget, beta and KV (each needs at most one
        block; with a free block for each, every decode also sees one free, as `sarathi_rules` asks), so the loops
        would take them all, whatever their order; take them in one pass."""
        if b.room <= 0:  # no decode fits (a full batch: the count below need not be taken)
            return False
        n = self.decodes.live()
        if not n or n > min(b.room, b.free) or taken + n > self.cfg.limit_total_decodes:
            return False
        b.plan.decodes.extend(self.decodes.take_all())
        b.tokens += n
        return True

    def _victim(self, b: BatchBuilder) -> Req | None:
        """Out of KV: the last paused prefill this batch does not continue (the reference pops a continued prefill
        from its paused list); None, and the decode itself goes."""
        busy = {p.id for p, _ in b.plan.prefills}
        return next((p for p in reversed(self.paused) if p.id not in b.preempted and p.id not in busy), None)

    def repeats(self, view: EngineView) -> bool:
        """With nothing paused or admissible, `schedule` takes every decode (`_take_all`) while they fit the budget,
        beta and KV (the engine keeps a block to spare for each); their deadlines are then not read.
        With one prefill paused, every decode critical (`_critical_decodes` takes them all in LST order, the paused
        prefill a chunk of the rest, a full batch admits nothing, no decode is left for step 4): the same batch, as
        long as every decode is critical again when the next batch starts (`bulk_batch_done`)."""
        self._bulk = None
        # Bulk finishes and completions keep every decode within beta: max_num_seqs bounds them.
        self.bulk_finishes = view.max_num_seqs <= self.cfg.limit_total_decodes
        if not self.paused:
            if not admits_nothing(view):
                return False
            n = self.decodes.live()
            return n == len(view.running) and n <= min(view.token_budget, self.cfg.limit_total_decodes)
        if len(self.paused) > 1 or self.decodes.latest() > view.clock:
            return False
        n = self.decodes.live()
        if n + 1 != len(view.running) or n > min(view.token_budget, self.cfg.limit_total_decodes):
            return False
        tbt = max([r.tbt for r in view.running if r.is_decoding], default=0.0)
        self._bulk = (self.batches, self.mean_batch, tbt, view.total_blocks)
        return True

    def bulk_batch_done(self, free_blocks: int, start: float, end: float) -> bool:
        """After a batch run in bulk: is every decode critical at the next batch (its start is this one's end)? The
        mean batch and the offset move as `on_batch_done` moves them (same operations, so the same floats); each
        decode's LST is then end + its TBT - offset x mean, the largest the one of the largest TBT."""
        if self._bulk is None:
            return True  # every decode runs whatever its deadline
        batches, mean, tbt, total = self._bulk
        batches += 1
        mean += (end - start - mean) / batches
        self._bulk = (batches, mean, tbt, total)
        c = self.cfg
        offset = (
            self.offset
            if c.fixed_offset
            else offset_at(free_blocks, total, c.memory_limit, c.below_memory_limit_offset, c.above_memory_limit_offset)
        )
        return end + tbt - offset * mean <= end

    def holds(self, view: EngineView) -> tuple[list[Req], float] | None:
        """No decode critical and the first paused prefill has more than the token budget left: `schedule` gives it a
        chunk of the whole budget (a full batch admits nothing and takes no relaxed decode) and `on_batch_done` moves
        it to the end of `paused`, so the paused prefills take the batches in turn until a decode turns critical (the
        earliest deadline) or the one whose turn it is has the budget or less left."""
        if not self.paused or self.paused[0].remaining_prefill <= view.token_budget:
            return None
        due = min(self.decodes.deadline.values(), default=math.inf)
        return (list(self.paused), due) if due > view.clock else None

    def on_chunks_done(
        self, view: EngineView, chunked: Sequence[Req], starts: Sequence[float], ends: Sequence[float]
    ) -> None:
        for start, end in zip(starts, ends, strict=True):
            self.batches += 1
            self.mean_batch += (end - start - self.mean_batch) / self.batches
        for r in chunked:
            self.paused.remove(r)
            self.paused.append(r)
        if not self.cfg.fixed_offset:
            self.offset = kv_offset(
                view, self.cfg.memory_limit, self.cfg.below_memory_limit_offset, self.cfg.above_memory_limit_offset
            )
        self.decodes.pass_over(starts[0], starts[-1])

    def on_batches_done(
        self,
        view: EngineView,
        plan: Plan,
        starts: Sequence[float],
        ends: Sequence[float],
        finished: Sequence[Req] = (),
    ) -> None:
        """Every batch but the last only moves the mean batch duration: each requeue of a batch that took every
        decode replaces the one before, and the offset is read from the view after the last. A decode that finished
        in them leaves the queue, and a prefill whose prompt completed leaves `paused`, as the `on_batch_done` of
        their batch would have let them."""
        for r in finished:
            self.decodes.forget(r.id)
        if self.paused:
            self.paused = [r for r in self.paused if not r.is_decoding]
        for start, end in zip(starts[:-1], ends[:-1], strict=True):
            self.batches += 1
            self.mean_batch += (end - start - self.mean_batch) / self.batches
        self.decodes.take_all()  # as the last batch's `schedule` did
        self.on_batch_done(view, plan, starts[-1], ends[-1])

    def on_batch_done(self, view: EngineView, plan: Plan, start: float, end: float) -> None:
        self.batches += 1
        self.mean_batch += (end - start - self.mean_batch) / self.batches
        for r in plan.preempt:
            self.decodes.forget(r.id)
            if r in self.paused:
                self.paused.remove(r)
        if not self.cfg.fixed_offset:
            self.offset = kv_offset(
                view, self.cfg.memory_limit, self.cfg.below_memory_limit_offset, self.cfg.above_memory_limit_offset
            )
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
                self.decodes.forget(r.id)
            else:
                requeue.append(r)
        entries = [(end + r.tbt - early, r.arrival, r.id, r) for r in requeue]  # the hot path: every decode
        self.decodes.requeue(entries, requeue)

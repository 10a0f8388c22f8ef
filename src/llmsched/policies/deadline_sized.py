"""Deadline-sized batching (ours, beyond SLAI; docs/deadline-sized.md).

SLAI's decode deadlines and tiers are kept: each decode's last schedulable time LST = end of its last batch + its
TBT - offset x mean batch duration, the dynamic offset and beta (`slai.py`). Three rules change:
1. A batch is sized by TIME, not tokens. Its predicted time (the engine's batch-time model: every prefill chunk
   with its attention and KV reads, every decode with its KV reads) stays within the budget
       T = min(cap_s, safety x (D - now), safety x (D' - now) - t_critical)
   where D is the earliest TBT deadline (its last token + its TBT) among the decodes the batch runs, D' that of the
   first decode it leaves out (the next batch must still serve it) and t_critical the time of the critical
   decodes alone. The token budget stays only as the engine's hard limit.
2. Paused and new prefills are one queue: shortest remaining prompt first (SRPT), paying tier first.
3. Starvation is bounded two ways (knobs): aging (a prefill's remaining tokens count `aging` fewer for every second
   since it arrived) and a wait cap (a prefill seen waiting for `wait_cap_s` goes before all others, oldest first).
A batch takes, in order:
  a. critical decodes (LST <= now), earliest LST first, at most `limit_total_decodes` (KV short: the paused prefill
     last in the order is preempted, else the decode itself), which fix T;
  b. prefills in order, each chunk the largest whose predicted batch time stays within T (the time is monotone in
     the chunk: binary search); a new request needs its whole prompt's KV, and the first that cannot get it stops
     admissions (head of line) while paused prefills continue;
  c. the other decodes in LST order while the time stays within T and within safety x their own deadline.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from llmsched.perf.base import BatchShape, PerfModel
from llmsched.policies.batch import BatchBuilder
from llmsched.policies.deadlines import DeadlineQueue, kv_offset
from llmsched.policies.interface import EngineView, Policy, Req
from llmsched.policies.plan import Plan


@dataclass(frozen=True)
class DeadlineSizedConfig:
    safety: float = 0.9  # share of the time to the earliest deadline a batch may fill (margin for model error)
    cap_s: float = 0.25  # longest batch (s), whatever the deadlines
    by_time: bool = True  # False: the token budget alone bounds a batch (SLAI's sizing; for comparison)
    srpt: bool = True  # False: SLAI's order, paused prefills FIFO, then new ones shortest prompt first
    user_priority: bool = True  # paying tier first among prefills
    aging: float = 0.0  # prompt tokens forgiven per second since arrival (0: plain SRPT)
    wait_cap_s: float = 0.0  # a prefill seen waiting this long goes first, oldest first (0: off)
    fixed_offset: bool = False  # SLAI's offset rule, as `SLAIConfig`
    below_memory_limit_offset: float = 5.0
    above_memory_limit_offset: float = 10.0
    memory_limit: float = 0.8  # SLAI's is 0.96: above 80% KV in use decodes stop holding KV that prompts wait for
    limit_total_decodes: int = 128  # beta


PRESETS: dict[str, DeadlineSizedConfig] = {
    "deadline-sized": DeadlineSizedConfig(aging=50.0),
    "deadline-sized-wait-cap": DeadlineSizedConfig(wait_cap_s=20.0),
}


def default_perf_model() -> PerfModel:
    """The paper's setting (Mistral-7B on an RTX 6000 Ada, calibrated roofline): the model when none is given."""
    from llmsched.perf import analytic_model, get_gpu, get_model

    return analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))


class _Shape:
    """The batch being planned, as running sums of `BatchShape`'s fields."""

    __slots__ = ("perf", "p_tokens", "p_pairs", "p_ctx", "prefills", "decodes", "d_ctx")

    def __init__(self, perf: PerfModel) -> None:
        self.perf = perf
        self.p_tokens, self.p_pairs, self.p_ctx, self.prefills, self.decodes, self.d_ctx = 0, 0.0, 0, 0, 0, 0

    def time(self, chunk: int = 0, ctx: int = 0, decodes: int = 0, d_ctx: int = 0) -> float:
        """Predicted time of the batch plus a chunk of `chunk` tokens after `ctx` cached ones and `decodes` more
        decodes holding `d_ctx` cached tokens in all."""
        new = chunk > 0
        return self.perf.batch_time(
            BatchShape(
                self.p_tokens + chunk,
                self.p_pairs + (chunk * (ctx + (chunk + 1) / 2) if new else 0.0),
                self.p_ctx + (ctx if new else 0),
                self.prefills + new,
                self.decodes + decodes,
                self.d_ctx + d_ctx,
            )
        )

    def add_chunk(self, chunk: int, ctx: int) -> None:
        self.p_tokens += chunk
        self.p_pairs += chunk * (ctx + (chunk + 1) / 2)
        self.p_ctx += ctx
        self.prefills += 1

    def add_decodes(self, n: int, ctx: int) -> None:
        self.decodes += n
        self.d_ctx += ctx


class DeadlineSized(Policy):
    name = "deadline-sized"
    sarathi_rules = True  # SLAI's engine rules (interface.Policy), so the two compare on the same KV rules
    needs_perf = True  # engines pass their batch-time model as `perf`
    # The time budget bounds a batch; the token budget is only the engine's hard limit.
    defaults = {"token_budget": 2048, "max_num_seqs": 128}

    def __init__(self, preset: str = "deadline-sized", perf: PerfModel | None = None, **knobs: object) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown deadline-sized preset {preset!r}")
        self.cfg = c = DeadlineSizedConfig(**{**PRESETS[preset].__dict__, **knobs})  # type: ignore[arg-type]
        if not 0 < c.safety <= 1 or not c.cap_s > 0 or c.aging < 0 or c.wait_cap_s < 0:
            raise ValueError("safety must be in (0, 1], cap_s positive, aging and wait_cap_s >= 0")
        self.name = preset
        self.perf = perf if perf is not None else default_perf_model()
        self.decodes = DeadlineQueue()  # every decode, by LST
        self.due: dict[int, float] = {}  # queued decode id -> its TBT deadline (its last token + its TBT)
        self.paused: list[Req] = []
        # request id -> (the clock when first seen waiting, the request), in that order, until its first token
        self.seen: dict[int, tuple[float, Req]] = {}
        self.mean_batch = 0.0
        self.batches = 0
        self.offset = c.below_memory_limit_offset if c.fixed_offset else 0.0
        self.budget = math.inf  # the last plan's T and the time of its critical decodes alone (tests read them)
        self.critical_time = 0.0
        prio, aging = c.user_priority, c.aging

        def waiting_key(r: Req) -> tuple:  # fixed while queued: a waiting request's remaining prefill is its prompt
            score = r.num_prompt + aging * r.arrival
            return (r.priority, score, r.arrival) if prio else (score, r.arrival)

        self._waiting_key = waiting_key

    @property
    def lst(self) -> dict[int, float]:
        return self.decodes.deadline

    def _key(self, r: Req) -> tuple:
        """A prefill's place in the order, as `waiting_key` would give it if it were waiting."""
        score = r.remaining_prefill + self.cfg.aging * r.arrival
        return (r.priority, score, r.arrival, r.id) if self.cfg.user_priority else (score, r.arrival, r.id)

    # --- a batch ----------------------------------------------------------------------------------------------
    def schedule(self, view: EngineView) -> Plan:
        b, now, c = BatchBuilder(view, sarathi_rules=self.sarathi_rules), view.clock, self.cfg
        shape = _Shape(self.perf)
        if c.wait_cap_s:
            self._see(view, now)
        critical, earliest = self._critical_decodes(b, shape, now)  # a.
        self.critical_time = shape.time() if critical else 0.0
        budget = math.inf
        if c.by_time:
            budget = c.cap_s if earliest is None else min(c.cap_s, c.safety * (earliest - now))
            nxt = self._next_due()
            if nxt is not None:
                budget = min(budget, c.safety * (nxt - now) - self.critical_time)
        self.budget = budget
        if not self._prefills(b, shape, view, now, budget):  # b.
            self._relaxed_decodes(b, shape, now, critical, budget)  # c.
        if c.wait_cap_s:
            for r, _ in b.plan.reject:
                self.seen.pop(r.id, None)
            for r in b.plan.preempt:  # back to waiting (a paused prefill keeps the time it was first seen)
                self.seen.setdefault(r.id, (now, r))
        return b.plan

    def _critical_decodes(self, b: BatchBuilder, shape: _Shape, now: float) -> tuple[int, float | None]:
        critical, earliest, q, ctx = 0, None, self.decodes, 0
        while q and b.room > 0 and critical < self.cfg.limit_total_decodes and q.head() <= now:
            r = q.pop()
            if r is not None and b.add_decode_preempting(r, self._victim):
                critical += 1
                ctx += r.computed
                d = self.due[r.id]
                earliest = d if earliest is None or d < earliest else earliest
        shape.add_decodes(critical, ctx)
        return critical, earliest

    def _next_due(self) -> float | None:
        r = self.decodes.head_request()
        return None if r is None else self.due[r.id]

    def _prefills(self, b: BatchBuilder, shape: _Shape, view: EngineView, now: float, budget: float) -> bool:
        """Chunks in the prefill order until the time budget, the token budget or the queues run out; True if a
        budget ran out (no time or tokens left for other decodes)."""
        admitting = True
        for r, paused in self._order(b, view, now):
            if b.room <= 0:
                return True
            if not paused:
                if not admitting:
                    continue
                reason = b.never_fits(r)
                if reason:
                    b.plan.reject.append((r, reason))
                    continue
                if not b.can_admit(r):
                    admitting = False  # head of line: a later prompt must not take the blocks this one waits for
                    continue
            k = self._chunk(shape, min(r.remaining_prefill, b.room), r.computed, budget)
            if k <= 0:
                return True
            if paused:
                b.add_chunk(r, k)
            else:
                b.admit(r, k)
            shape.add_chunk(k, r.computed)
            if k < r.remaining_prefill:
                return True
        return b.room <= 0

    def _chunk(self, shape: _Shape, most: int, ctx: int, budget: float) -> int:
        """The largest chunk (<= most) whose batch stays within the budget: the time is monotone in the chunk."""
        if budget == math.inf or shape.time(most, ctx) <= budget:
            return most
        lo, hi = 0, most  # time(lo) fits (or lo = 0), time(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if shape.time(mid, ctx) <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    def _order(self, b: BatchBuilder, view: EngineView, now: float) -> Iterator[tuple[Req, bool]]:
        """(prefill, paused?) in the order they get time: overdue ones (wait cap) oldest first, then paused and
        waiting merged by the order's key (SRPT, paying tier first, aged), or SLAI's (paused FIFO, then waiting)."""
        paused = [r for r in self.paused if r.id not in b.preempted]
        ids = {r.id for r in paused}
        taken: set[int] = set()
        if self.cfg.wait_cap_s:
            late = now - self.cfg.wait_cap_s
            for t, r in self.seen.values():  # in the order first seen
                if t > late:
                    break
                if r.id in ids or not (r.is_decoding or r.finished or r.blocks):
                    taken.add(r.id)
                    yield r, r.id in ids
        waiting = view.waiting_by(self._waiting_key)
        if not self.cfg.srpt:
            yield from ((r, True) for r in paused if r.id not in taken)
            yield from ((r, False) for r in waiting if r.id not in taken)
            return
        paused = sorted((r for r in paused if r.id not in taken), key=self._key)
        i, key = 0, self._waiting_key
        for w in waiting:
            if w.id in taken:
                continue
            wk = (*key(w), w.id)
            while i < len(paused) and self._key(paused[i]) < wk:
                yield paused[i], True
                i += 1
            yield w, False
        yield from ((r, True) for r in paused[i:])

    def _relaxed_decodes(self, b: BatchBuilder, shape: _Shape, now: float, critical: int, budget: float) -> None:
        """The other decodes in LST order: the longest prefix whose batch stays within the budget (and within safety
        x the earliest deadline among them), KV and beta allowing. Usually all of them fit: one check; else a
        binary search over the prefix."""
        q = self.decodes
        limit = min(self.cfg.limit_total_decodes - critical, b.room)
        if not q or limit <= 0:
            return
        rest = q.take_all()
        bs, due, safety = b.view.block_size, self.due, self.cfg.safety if self.cfg.by_time else math.inf
        if len(rest) <= limit:
            ctx = sum(r.computed for r in rest)
            need = sum(r.computed >= r.blocks * bs for r in rest)  # batch.needs_block, inlined
            earliest = min(due[r.id] for r in rest)
            limit_s = min(budget, safety * (earliest - now))
            if need + b.decode_floor <= b.free and shape.time(decodes=len(rest), d_ctx=ctx) <= limit_s:
                b.plan.decodes.extend(rest)
                b.tokens += len(rest)
                b.free -= need
                shape.add_decodes(len(rest), ctx)
                return
        lst = q.deadline
        cands = sorted((lst[r.id], r.arrival, r.id, r) for r in rest)
        n = min(len(cands), limit)
        ctxs, needs, dues = [0], [0], [math.inf]
        for e in cands[:n]:
            r = e[3]
            ctxs.append(ctxs[-1] + r.computed)
            needs.append(needs[-1] + (r.computed >= r.blocks * bs))
            dues.append(min(dues[-1], due[r.id]))
        while n and (needs[n] > b.free or needs[n - 1] + b.decode_floor > b.free):
            n -= 1  # `BatchBuilder.decode_fits` for each decode in turn

        def fits(m: int) -> bool:
            return shape.time(decodes=m, d_ctx=ctxs[m]) <= min(budget, safety * (dues[m] - now))

        lo, hi = 0, n + 1  # fits(lo) (or lo = 0); hi does not fit or is past the end
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        b.plan.decodes.extend(e[3] for e in cands[:lo])
        b.tokens += lo
        b.free -= needs[lo]
        shape.add_decodes(lo, ctxs[lo])
        q.push_back(cands[lo:])

    def _victim(self, b: BatchBuilder) -> Req | None:
        """Out of KV: the paused prefill last in the order that this batch does not continue; None, and the decode
        itself goes."""
        busy = {p.id for p, _ in b.plan.prefills}
        left = [p for p in self.paused if p.id not in b.preempted and p.id not in busy]
        return max(left, key=self._key) if left else None

    def _see(self, view: EngineView, now: float) -> None:
        """Stamp the requests that joined the waiting queue since the last batch (arrivals join at its end)."""
        waiting, seen = view.waiting, self.seen
        i = len(waiting) - 1
        while i >= 0 and waiting[i].id not in seen:
            seen[waiting[i].id] = (now, waiting[i])
            i -= 1

    # --- after a batch ----------------------------------------------------------------------------------------
    def on_batch_done(self, view: EngineView, plan: Plan, start: float, end: float) -> None:
        self.batches += 1
        self.mean_batch += (end - start - self.mean_batch) / self.batches
        due, seen = self.due, self.seen
        for r in plan.preempt:
            self.decodes.forget(r.id)
            due.pop(r.id, None)
            if r in self.paused:
                self.paused.remove(r)
        c = self.cfg
        if not c.fixed_offset:
            self.offset = kv_offset(view, c.memory_limit, c.below_memory_limit_offset, c.above_memory_limit_offset)
        early = self.offset * self.mean_batch
        requeue = []
        for r, _ in plan.prefills:
            if r in self.paused:
                self.paused.remove(r)
            if r.finished:
                seen.pop(r.id, None)
            elif r.is_decoding:
                seen.pop(r.id, None)
                requeue.append(r)
            else:
                self.paused.append(r)
        preempted = {p.id for p in plan.preempt}
        for r in plan.decodes:
            if r.finished or r.id in preempted:
                self.decodes.forget(r.id)
                due.pop(r.id, None)
            else:
                requeue.append(r)
        for r in requeue:
            due[r.id] = end + r.tbt
        entries = [(end + r.tbt - early, r.arrival, r.id, r) for r in requeue]
        self.decodes.requeue(entries, requeue)

"""The simulated engine: iteration-level batching on a simulated clock.

Each iteration: arrivals up to the clock join the waiting queue; the policy plans a batch from this
engine (which is the policy's `EngineView`); the engine applies preemptions and rejections, admits new
requests (allocating the whole prompt's KV blocks, or max_model_len for reserving policies), and runs
the batch for the perf model's time. A request's first token is stamped at the end of the batch holding
its last prefill chunk (TTFT), each decode token at the end of its batch.

With prefix caching (`enable_prefix_caching`, `kv_cache.PrefixCache`) an admitted request first reuses the cached
prefix of its prompt (every admission of the batch holds its hit before any allocates, so one admission cannot evict
another's hit) and prefills only the rest: its first chunk's context is the cached tokens, which the batch-time model
charges as attention context. Full prompt blocks are cached as chunks complete.

With a CPU tier under it (`kv_offloading_blocks`, `sim.offload`: vLLM's `--kv-offloading-size`), an admission whose
GPU hit is followed by blocks the tier holds loads them over the host link instead of prefilling them, as vLLM's
OffloadingConnector does: the request takes GPU blocks for them and waits, out of the batch, while other requests
run (vLLM's WAITING_FOR_REMOTE_KVS); its loads queue on the replica's one host link (`load_s_per_block` each). The
first batch that starts once its load is done sees it waiting again, at the queue's head, its prompt now cached on
the GPU up to the end of the load. Nothing is charged to the batches for the load.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import sub

from llmsched.perf.base import BatchShape, PerfModel
from llmsched.policies.batch import blocks_for
from llmsched.policies.interface import NO_HIT, CacheKey, OrderKey, Policy, PrefixHit
from llmsched.policies.plan import Plan
from llmsched.policies.request_queue import WaitQueue
from llmsched.records import BatchLog, RunResult
from llmsched.sim.arrivals import Arrivals
from llmsched.sim.kv_cache import PrefixCache
from llmsched.sim.offload import OffloadingCache
from llmsched.workload.request import FINISHED, REJECTED, RUNNING, UNFINISHED, WAITING, Request
from llmsched.workload.source import Workload


@dataclass(frozen=True)
class EngineConfig:
    num_blocks: int
    token_budget: int = 512
    max_num_seqs: int = 128
    block_size: int = 16
    watermark: float = 0.01  # fraction of the pool a new admission must leave free
    max_model_len: int = 8192
    time_limit: float | None = None  # stop at this simulated time (seconds); the rest is unfinished
    # Added to every batch: host-side time (scheduling, output processing) outside the perf model. The
    # calibrated models already include the measured engine's fixed per-batch cost; use this for what-ifs.
    batch_overhead_s: float = 0.0
    enable_prefix_caching: bool = False  # reuse cached prompt blocks across requests (vLLM's automatic prefix caching)
    kv_offloading_blocks: int = 0  # with prefix caching: a CPU tier of this many blocks (vLLM's --kv-offloading-size)
    load_s_per_block: float = 0.0  # seconds to load one block from the CPU tier over the host link


class SimEngine:
    """One replica. Also the `EngineView` its policy reads (attributes below are the view)."""

    def __init__(self, cfg: EngineConfig, policy: Policy, perf: PerfModel) -> None:
        self.cfg, self.policy, self.perf = cfg, policy, perf
        self.clock = 0.0
        self.queue = WaitQueue()
        self.running: list[Request] = []
        self.total_blocks = cfg.num_blocks
        self.free_blocks = cfg.num_blocks
        self.block_size = cfg.block_size
        self.watermark_blocks = int(cfg.watermark * cfg.num_blocks)
        self.token_budget = cfg.token_budget
        self.max_num_seqs = cfg.max_num_seqs
        self.max_model_len = cfg.max_model_len
        self.log = BatchLog()
        self._reserve = blocks_for(cfg.max_model_len, cfg.block_size) if policy.reserve_max_len else 0
        self.now = 0.0  # the loop's clock: the end of the last batch, or the arrival that woke the engine
        self._stalled = True  # idle or blocked: waits for the next arrival
        self._stopped = False  # the time limit was reached
        self.replica = 0  # this engine's index in a cluster (the batch log's replica column)
        self.on_done: Callable[[Request, float], None] | None = None  # called when a request leaves
        self.enable_prefix_caching = cfg.enable_prefix_caching
        self.kv = PrefixCache(cfg.num_blocks, cfg.block_size) if cfg.enable_prefix_caching else None
        self._offload = cfg.enable_prefix_caching and cfg.kv_offloading_blocks > 0
        if self._offload:
            self.kv = OffloadingCache(cfg.num_blocks, cfg.block_size, cfg.kv_offloading_blocks)
        self._loading: list[tuple[float, int, Request]] = []  # (load done, id, request), a heap
        self._link_free = 0.0  # when the host link has finished the loads queued on it
        self._idle_from: float | None = None  # idle until a load is done: the clock an arrival may take back
        self._repeats = getattr(policy, "repeats", None)
        self._holds = getattr(policy, "holds", None)
        floor = getattr(perf, "min_batch_time", None)
        # Slightly under the model's floor, so that rounding in a sum of batch times never undercuts it
        self._min_batch_s = (floor() + cfg.batch_overhead_s) * (1 - 1e-9) if floor is not None else 0.0

    # --- the view -------------------------------------------------------------------------------------
    @property
    def waiting(self) -> Sequence[Request]:
        return self.queue.fcfs

    def waiting_by(self, key: OrderKey) -> Sequence[Request]:
        return self.queue.by(key)

    def waiting_by_cache(self, key: CacheKey) -> Sequence[Request]:
        """Sorted per call: a lookup per waiting request (O(1) while its memoised hit stands, else O(log prompt
        blocks)), then a sort."""
        if self.kv is None:
            return self.queue.by(lambda r: key(r, 0))
        hit, bs = self.kv.hit_blocks, self.block_size
        return sorted(self.queue.fcfs, key=lambda r: (*key(r, hit(r) * bs), r.id))

    @property
    def loading(self) -> list[Request]:
        """Admitted requests waiting for their CPU tier loads (out of the queue and the batch)."""
        return [x[2] for x in self._loading]

    def prefix_hit(self, r: Request) -> PrefixHit:
        return NO_HIT if self.kv is None else self.kv.hit(r)

    def cached_prefix(self, r: Request) -> int:
        return 0 if self.kv is None else self.kv.hit_blocks(r) * self.block_size

    def exclusive_blocks(self, r: Request) -> int:
        return r.blocks if self.kv is None else self.kv.exclusive_blocks(r)

    # --- the loop -------------------------------------------------------------------------------------
    def run(self, requests: list[Request] | Workload) -> RunResult:
        """Serve a list of requests (an open loop), or a closed-loop workload whose arrivals follow completions."""
        if not isinstance(requests, list):
            return self._run_closed(Arrivals(requests))
        pending = sorted(requests, key=lambda r: (r.arrival, r.id))
        for r in pending:
            self.advance(r.arrival)
            self.add(r)
        self.advance(math.inf)
        return self.finish(pending)

    @property
    def active(self) -> bool:
        """Has a batch to run before any further arrival (not idle, blocked or past the time limit)."""
        return not self._stalled and not self._stopped

    def quiet_until(self) -> float:
        """A time before which no request leaves this replica (finishes or is rejected) unless one is added: each
        running request needs that many more batches for its last token, and every batch takes at least the perf
        model's floor (`min_batch_time`). `now` where that cannot be told: a request waits (it may be rejected at
        the next step), prefix caching is on, the model has no floor, or the decodes could run short of free blocks
        (a preemption puts a request back to wait)."""
        if self._stalled or self._stopped:
            return math.inf
        floor, running = self._min_batch_s, self.running
        if self.queue.fcfs or self.kv is not None or floor <= 0 or not running:
            return self.now
        left = min([r.decode_len - r.generated for r in running])
        if self.free_blocks < len(running) * (left // self.block_size + 2):
            return self.now
        return self.now + max(left, 1) * floor

    def step(self) -> None:
        """Run one batch (and the rejections or preemptions planned before it), or stall."""
        self.advance(math.nextafter(self.now, math.inf))

    def _run_closed(self, arrivals: Arrivals) -> RunResult:
        # One batch at a time: a completion's next arrival can come before the next known one.
        outer = self.on_done

        def done(r: Request, t: float) -> None:
            arrivals.done(r, t)
            if outer is not None:
                outer(r, t)

        self.on_done = done
        try:
            while True:
                t = arrivals.next_time()
                if self.active and self.now < t:
                    self.step()
                elif t < math.inf:
                    self.add(arrivals.pop())
                else:
                    break
        finally:
            self.on_done = outer
        return self.finish(arrivals.issued)

    def add(self, r: Request) -> None:
        """A request arrives. Arrivals come in time order, none before the start of the batch in progress;
        an idle (or blocked) engine's clock moves to the arrival. A request rejected before it arrived (longer
        than the model's context) is answered at once, as vLLM's server does."""
        if r.state == REJECTED:
            if self.on_done is not None:
                self.on_done(r, r.arrival)
            return
        if self._stopped:  # past the time limit: it stays waiting, reported at `finish` as never served
            return
        if self._stalled:
            self.now = max(self.now, r.arrival)
            self._stalled = False
        elif self._idle_from is not None:  # idle until a load is done: the arrival comes first
            self.now = max(self._idle_from, r.arrival)
            self._idle_from = None
        self.queue.append(r)

    def advance(self, until: float) -> None:
        """Run the batches that start before `until`. Every arrival before `until` must have been added."""
        limit = self.cfg.time_limit
        while not self._stalled and not self._stopped:
            if limit is not None and self.now >= limit:
                self._stopped = True
                return
            if self._loading and self._loading[0][0] <= self.now:
                self._loaded()
            if not self.queue.fcfs and not self.running:
                if self._loading:
                    if self._idle(until):
                        continue
                    return
                self._stalled = True  # idle until the next arrival
                return
            if self.now >= until:
                return
            self.clock = self.now
            plan = self.policy.schedule(self)
            self._reject(plan)
            self._preempt(plan)
            if not plan.prefills and not plan.decodes:
                if plan.reject or plan.preempt:
                    continue
                if self._loading:
                    if self._idle(until):
                        continue
                    return
                self._stalled = True  # nothing can run until the next arrival (or ever, if none comes)
                return
            self._idle_from = None
            self.now = self._run_batch(plan, self.now)
            # A stretch runs batches the policy did not plan: none may start once a load is done.
            stop = until if not self._loading else min(until, self._loading[0][0])
            while self.running and self.now < stop:
                if self._repeats is not None and self._repeats(self):
                    t = self._repeat(stop)
                elif self._holds is not None and (held := self._holds(self)) is not None:
                    t = self._hold(stop, *held)
                else:
                    break
                if t == self.now:
                    break
                self.now = t

    def finish(self, requests: list[Request]) -> RunResult:
        """Close the run: requests still waiting or running are reported unfinished, with the reason."""
        self._close(requests, self.now)
        return RunResult(requests, self.log, self.total_blocks, self.now, self.block_size, self.kv is not None)

    def _run_batch(self, plan: Plan, start: float) -> float:
        kv = self.kv
        if kv is not None:  # every admission holds its cached prefix before any allocates
            admitted = [r for r, _ in plan.prefills if r.state == WAITING]
            for r in admitted:
                self._reuse(r, kv)
            if self._offload and admitted and self._start_loads(plan, admitted, start):
                admitted = [r for r, _ in plan.prefills if r.state == WAITING]
                if not plan.prefills and not plan.decodes:
                    return start  # every admission waits for its load: no batch
            for r in admitted:
                self._admit(r)
        chunks, prefill_tokens = [], 0
        for r, k in plan.prefills:
            if r.state == WAITING:
                self._admit(r)
            chunks.append((k, r.computed))
            prefill_tokens += k
        decodes = plan.decodes
        shape = BatchShape(  # positional: this runs once per simulated batch
            prefill_tokens,
            sum(k * (ctx + (k + 1) / 2) for k, ctx in chunks) if chunks else 0.0,
            sum(ctx for _, ctx in chunks) if chunks else 0,
            len(chunks),
            len(decodes),
            sum([r.computed for r in decodes]),
        )
        end = start + self.perf.batch_time(shape) + self.cfg.batch_overhead_s
        finished = False
        for r, k in plan.prefills:
            r.prefilled += k
            r.computed += k
            if r.prefilled > r.num_prompt or r.blocks * self.block_size < r.computed:
                raise RuntimeError(f"{self.policy.name}: request {r.id} prefilled past its prompt or KV")
            if kv is not None:
                kv.cache(r)
                self.free_blocks = kv.free
            if r.prefilled == r.num_prompt:
                r.is_decoding = True
                finished |= self._emit(r, end)
        # The decode loop is the simulator's hot path: one token per running decode per batch, inlined.
        bs = self.block_size
        if kv is not None:
            finished |= self._decode_cached(decodes, end, kv)
        else:
            for r in decodes:
                if r.computed >= r.blocks * bs:  # policies.batch.needs_block, inlined
                    if self.free_blocks < 1:
                        raise RuntimeError(f"{self.policy.name}: decode of request {r.id} without a free KV block")
                    self.free_blocks -= 1
                    r.blocks += 1
                r.computed += 1
                g = r.generated + 1
                r.generated = g
                r.token_times.append(end)
                if g >= r.decode_len:
                    self._finish(r, end)
                    finished = True
        if finished:
            self.running = [r for r in self.running if r.state == RUNNING]
        log = self.log
        log.start.append(start)
        log.duration.append(end - start)
        log.prefill_tokens.append(prefill_tokens)
        log.prefills.append(len(chunks))
        log.decodes.append(len(plan.decodes))
        log.kv_blocks_used.append(self.total_blocks - self.free_blocks)
        log.waiting.append(len(self.queue))
        log.running.append(len(self.running))
        log.preempted.append(len(plan.preempt))
        log.replica.append(self.replica)
        self.clock = end
        self.policy.on_batch_done(self, plan, start, end)
        return end

    def _decode_cached(self, decodes: list[Request], end: float, kv: PrefixCache) -> bool:
        """`_run_batch`'s decode loop with prefix caching: each decode takes a block when it needs one, and one that
        fills a block of an answer with ids (`Request.answer_ids`) caches it. Returns whether a decode finished."""
        bs, finished = self.block_size, False
        for r in decodes:
            if r.computed >= r.blocks * bs:
                if self.free_blocks < 1:
                    raise RuntimeError(f"{self.policy.name}: decode of request {r.id} without a free KV block")
                self.free_blocks -= 1
                r.blocks += 1
                kv.take(1)
            c = r.computed + 1
            r.computed = c
            if r.answer_ids and c % bs == 0:
                kv.cache(r)
                self.free_blocks = kv.free
            g = r.generated + 1
            r.generated = g
            r.token_times.append(end)
            if g >= r.decode_len:
                self._finish(r, end)
                finished = True
        return finished

    @staticmethod
    def _answer_phases(decodes: list[Request], firsts: list[int], bs: int) -> tuple[list[list[int]], list[list[int]]]:
        """For a bulk stretch with prefix caching and answers with ids: per batch phase (batch mod bs), the decodes
        (indices, in running order) that fill a block of such an answer then, and those that take a block then (from
        their first take on). Empty lists if no decode has answer ids."""
        if not any(r.answer_ids for r in decodes):
            return [], []
        fills: list[list[int]] = [[] for _ in range(bs)]
        takes: list[list[int]] = [[] for _ in range(bs)]
        for i, r in enumerate(decodes):
            if r.answer_ids:
                fills[-(r.computed + 1) % bs].append(i)
            takes[firsts[i] % bs].append(i)
        return fills, takes

    @staticmethod
    def _bulk_answer_batch(
        decodes: list[Request], firsts: list[int], fills: list[int], takes: list[int], j: int, kv: PrefixCache
    ) -> None:
        """Bulk batch j's KV changes where answers with ids fill blocks: takes and caches in running order, as
        `_decode_cached` makes them. A decode's `computed` is the batch's only while its block is cached."""
        pending, k = 0, 0
        for i in fills:
            while k < len(takes) and takes[k] < i:
                pending += firsts[takes[k]] <= j
                k += 1
            if pending:
                kv.take(pending)
                pending = 0
            r = decodes[i]
            c = r.computed
            r.computed = c + j + 1
            kv.cache(r)
            r.computed = c
        pending += sum(firsts[i] <= j for i in takes[k:])
        if pending:
            kv.take(pending)

    def _repeat(self, until: float) -> float:
        """Run the batches the policy would plan next without asking it: it said (`Policy.repeats`) that, until
        something changes, it gives every running decode its token and continues every prefill in progress (in
        running order) with a chunk of what the token budget leaves. Each batch runs if it starts before `until` and
        the time limit and every decode has a free block to spare before it. Those in which no decode finishes and
        no prompt completes run here in bulk, each the batch `_run_batch` would run (same shape, times, token stamps,
        KV blocks and log row); the next one, which changes what runs after it, runs through `_run_batch`. While
        requests wait, only batches that the decodes and chunks fill run so (one with room would admit). A policy with
        `bulk_batch_done` is asked after each batch whether the next would be the same. With prefix
        caching each bulk batch caches its chunks' newly full blocks, then takes its decodes' new blocks, in
        `_run_batch`'s order, so the cache's books are those of batch-by-batch runs.
        A policy with `bulk_finishes` also has batches in which decodes finish and prompts complete run in bulk, while
        nothing waits and without prefix caching (where the order of a batch's releases and takes would matter): as
        in `_run_batch`, a completed prompt's first token (and its decode's next ones) and a finished decode's last
        token come at the end of their batch, and a finished request leaves then. Returns the clock after them
        (unchanged if none ran)."""
        running = self.running
        decodes = [r for r in running if r.is_decoding]
        n, bs, budget, limit = len(decodes), self.block_size, self.token_budget, self.cfg.time_limit
        if n > budget:
            return self.now
        # List comprehensions, not maps of attrgetters: Python 3.11 reads slots faster in its own loop.
        lefts = [r.decode_len - r.generated for r in decodes]  # the batch each finishes in, + 1
        m = min(lefts, default=1 << 62) - 1  # the first batch in which a decode finishes
        prefills = [[r, r.num_prompt - r.prefilled, r.computed] for r in running if not r.is_decoding]
        # The batch (from 0) in which each decode first takes a block: when every block it holds is full. It then
        # takes one every `bs` batches, so a batch's takes are counted by that first batch modulo bs (`per_phase`);
        # a decode holding more than a block to spare (reserving policies) starts later and is counted apart.
        computeds = [r.computed for r in decodes]
        firsts = [r.blocks * bs - c for r, c in zip(decodes, computeds, strict=True)]
        per_phase = [0] * bs
        late: dict[int, int] = {}  # batch -> takes of the decodes whose first is beyond the first bs batches
        for j in firsts:
            if j < bs:
                per_phase[j] += 1
            else:
                while j < m:
                    late[j] = late.get(j, 0) + 1
                    j += bs
        batch_time, extra, total, kv = self.perf.batch_time, self.cfg.batch_overhead_s, self.total_blocks, self.kv
        fill_at, take_at = self._answer_phases(decodes, firsts, bs) if kv is not None else ([], [])
        ctx = sum(computeds)
        free, t = self.free_blocks, self.now
        waiting = bool(self.queue.fcfs)
        # Finishes and completions in bulk: only where every decode holds at most the block it fills (`per_phase`
        # counts them all); the decodes a completed prompt adds join from the next batch (`since`).
        fold = self.policy.bulk_finishes and kv is None and not waiting and max(firsts, default=0) < bs
        since = [0] * n if fold else []
        ask = self.policy.bulk_batch_done
        starts: list[float] = []
        ends: list[float] = []
        used: list[int] = []
        tokens: list[int] = []
        counts: list[int] = []
        ns: list[int] = []  # decodes per batch, and running requests after it (they change as requests finish)
        runs: list[int] = []
        left_running = len(running)
        finished: list[Request] = []
        chunks: list[tuple[int, int]] = []
        last_prefills, last_chunks, last_decodes = prefills, chunks, decodes  # the last batch run in bulk
        edge = True  # the loop stopped at a batch that finishes a decode or completes a prompt
        for j in range((1 << 62) if fold else max(m, 0)):
            if t >= until or (limit is not None and t >= limit) or free <= n or n > budget:
                edge = False
                break
            room, chunks, completed = budget - n, [], 0
            for p in prefills:
                if room <= 0:
                    break
                c = min(p[1], room)
                if c == p[1]:  # completes its prompt: the edge, unless its decode can join (fills its last block)
                    if not fold or not 0 <= p[0].blocks * bs - p[2] - c < bs:
                        room = -1
                        break
                    completed += 1
                chunks.append((c, p[2]))
                room -= c
            if room < 0:
                break
            if waiting and room > 0:  # a batch with room left would admit what waits
                edge = False
                break
            for p, (c, _) in zip(prefills, chunks, strict=False):
                p[1] -= c
                p[2] += c
                if kv is not None:
                    r = p[0]
                    r.prefilled, r.computed = r.num_prompt - p[1], p[2]
                    kv.cache(r)
            take = (per_phase[j % bs] if j >= bs else per_phase[j]) + (late.get(j, 0) if late else 0)
            if kv is None:
                free -= take
            else:
                if fill_at and fill_at[j % bs]:
                    self._bulk_answer_batch(decodes, firsts, fill_at[j % bs], take_at[j % bs], j, kv)
                elif take:
                    kv.take(take)
                free = kv.free
            if chunks:
                shape = BatchShape(  # as `_run_batch` builds it, term for term
                    sum(c for c, _ in chunks),
                    sum(c * (cx + (c + 1) / 2) for c, cx in chunks),
                    sum(cx for _, cx in chunks),
                    len(chunks),
                    n,
                    ctx,
                )
            else:
                shape = BatchShape(0, 0.0, 0, 0, n, ctx)
            end = t + batch_time(shape) + extra
            starts.append(t)
            ends.append(end)
            tokens.append(shape.prefill_tokens)
            counts.append(len(chunks))
            ns.append(n)
            ctx += n
            last_prefills, last_chunks, last_decodes = prefills, chunks, decodes
            if completed or j == m:  # (folding) requests leave and decodes join at the end of this batch
                self.free_blocks = free
                joined: list[Request] = []
                for p, _ in zip(prefills, chunks, strict=False):
                    if not p[1]:  # its prompt completed: its first token, as `_run_batch` gives it
                        r = p[0]
                        r.prefilled, r.computed, r.is_decoding = r.num_prompt, p[2], True
                        if self._emit(r, end):
                            finished.append(r)
                        else:
                            joined.append(r)
                if completed:
                    prefills = [p for p in prefills if p[1]]
                if j == m:
                    keep = []
                    for i, r in enumerate(decodes):
                        if lefts[i] != j + 1:
                            keep.append(i)
                            continue
                        first, s = firsts[i], since[i]
                        if first <= j:
                            r.blocks += 1 + (j - first) // bs
                        per_phase[first % bs] -= 1
                        r.computed += j + 1 - s
                        r.generated += j + 1 - s
                        r.token_times.extend(ends[s:] if s else ends)
                        ctx -= r.computed
                        self._finish(r, end)
                        finished.append(r)
                    decodes = [decodes[i] for i in keep]
                    firsts = [firsts[i] for i in keep]
                    lefts = [lefts[i] for i in keep]
                    since = [since[i] for i in keep]
                for r in joined:
                    first = j + 1 + r.blocks * bs - r.computed
                    per_phase[first % bs] += 1
                    ctx += r.computed
                    decodes = [*decodes, r]
                    firsts.append(first)
                    lefts.append(j + 1 + r.decode_len - r.generated)
                    since.append(j + 1)
                free = self.free_blocks
                left_running = len(running) - len(finished)
                n = len(decodes)
                m = min(lefts, default=1 << 62) - 1
            used.append(total - free)
            runs.append(left_running)
            if ask is not None and not ask(free, t, end):  # the policy would plan the next batch otherwise
                t = end
                edge = False
                break
            t = end
            if not n and not prefills:  # (folding) every request left
                edge = False
                break
        k = len(ends)
        if k:
            if since:
                for r, first, s in zip(decodes, firsts, since, strict=True):
                    if first < k:
                        r.blocks += 1 + (k - 1 - first) // bs
                    r.computed += k - s
                    r.generated += k - s
                    r.token_times.extend(ends[s:] if s else ends)
            else:
                for r, first in zip(decodes, firsts, strict=True):
                    if first < k:
                        r.blocks += 1 + (k - 1 - first) // bs
                    r.computed += k
                    r.generated += k
                    r.token_times.extend(ends)
            for r, rem, computed in prefills:
                r.prefilled = r.num_prompt - rem
                r.computed = computed
            if finished:
                self.running = [r for r in running if r.state == RUNNING]
            self.free_blocks = free
            log = self.log
            log.start.extend(starts)
            log.duration.extend(map(sub, ends, starts))
            log.prefill_tokens.extend(tokens)
            log.prefills.extend(counts)
            log.decodes.extend(ns)
            log.kv_blocks_used.extend(used)
            log.waiting.extend([len(self.queue)] * k)
            log.running.extend(runs)
            log.preempted.extend([0] * k)
            log.replica.extend([self.replica] * k)
            self.clock = t
            last = Plan(
                prefills=[(p[0], c) for p, (c, _) in zip(last_prefills, last_chunks, strict=False)],
                decodes=last_decodes,
            )
            if finished:
                self.policy.on_batches_done(self, last, starts, ends, finished)
            else:
                self.policy.on_batches_done(self, last, starts, ends)
        if not edge or waiting or t >= until or (limit is not None and t >= limit) or free <= n:
            return t
        plan = Plan(decodes=decodes)
        room = budget - n
        for p in prefills:
            if room <= 0:
                break
            c = min(p[1], room)
            plan.prefills.append((p[0], c))
            room -= c
        self.clock = t
        return self._run_batch(plan, t)

    def _hold(self, until: float, order: Sequence[Request], due: float) -> float:
        """Run the batches the policy would plan next without asking it (`Policy.holds`): chunks only, of the whole
        token budget, to the prefills of `order` in turn, every decode held back; each runs if it starts before
        `due`, `until` and the time limit and the prefill whose turn it is has more than the budget left. Each is
        the batch `_run_batch` would run (same shape, times, KV and log row); with prefix caching it caches its
        chunk's newly full blocks. Returns the clock after them (unchanged if none ran)."""
        budget, limit, kv, total = self.token_budget, self.cfg.time_limit, self.kv, self.total_blocks
        stop = min(until, due, math.inf if limit is None else limit)
        batch_time, extra, half = self.perf.batch_time, self.cfg.batch_overhead_s, (budget + 1) / 2
        t, free, turn = self.now, self.free_blocks, 0
        starts: list[float] = []
        ends: list[float] = []
        used: list[int] = []
        chunked: list[Request] = []
        while t < stop:
            r = order[turn]
            if r.num_prompt - r.prefilled <= budget:
                break
            cx = r.computed
            end = t + batch_time(BatchShape(budget, budget * (cx + half), cx, 1, 0, 0)) + extra  # as `_run_batch`
            r.prefilled += budget
            r.computed += budget
            if kv is not None:
                kv.cache(r)
                free = kv.free
            starts.append(t)
            ends.append(end)
            used.append(total - free)
            chunked.append(r)
            t = end
            turn = (turn + 1) % len(order)
        k = len(ends)
        if k:
            self.free_blocks = free
            log = self.log
            log.start.extend(starts)
            log.duration.extend(map(sub, ends, starts))
            log.prefill_tokens.extend([budget] * k)
            log.prefills.extend([1] * k)
            log.decodes.extend([0] * k)
            log.kv_blocks_used.extend(used)
            log.waiting.extend([len(self.queue)] * k)
            log.running.extend([len(self.running)] * k)
            log.preempted.extend([0] * k)
            log.replica.extend([self.replica] * k)
            self.clock = t
            self.policy.on_chunks_done(self, chunked, starts, ends)
        return t

    def _emit(self, r: Request, t: float) -> bool:
        r.generated += 1
        r.token_times.append(t)
        if r.generated < r.decode_len:
            return False
        self._finish(r, t)
        return True

    def _finish(self, r: Request, t: float) -> None:
        r.state = FINISHED
        self._release(r)
        if self.kv is not None:
            self.kv.forget(r)
        if self.on_done is not None:
            self.on_done(r, t)

    def _release(self, r: Request) -> None:
        if self.kv is None:
            self.free_blocks += r.blocks
        else:
            self.kv.release(r)
            self.free_blocks = self.kv.free
        r.blocks = 0

    def _reuse(self, r: Request, kv: PrefixCache) -> None:
        """Admission, first step with prefix caching: hold the cached prefix; it counts as prefilled and computed."""
        r.blocks = kv.reuse(r)
        hit = r.blocks * self.block_size
        r.prefilled = r.computed = hit
        if r.cached_tokens is None:
            r.cached_tokens = hit
        self.free_blocks = kv.free

    def _start_loads(self, plan: Plan, admitted: list[Request], start: float) -> bool:
        """Admissions whose GPU hit the CPU tier continues: each takes blocks for the rest of the hit and waits for
        its load, out of this batch (its prefill planned here is dropped). Returns whether any did."""
        kv = self.kv
        assert isinstance(kv, OffloadingCache)
        bs, started = self.block_size, set()
        for r in admitted:
            gpu = r.blocks
            c = kv.cpu_hit(r, gpu)
            if r.external_cached_tokens is None:
                r.external_cached_tokens = c * bs  # counted at the first admission, as vLLM's connector stats are
            if not c:
                continue
            kv.load(r, c)
            self.free_blocks = kv.free
            r.prefilled = r.computed
            self.queue.remove(r)
            begin = max(start, self._link_free)
            self._link_free = ready = begin + c * self.cfg.load_s_per_block
            heapq.heappush(self._loading, (ready, r.id, r))
            started.add(r.id)
        if started:
            plan.prefills = [(r, k) for r, k in plan.prefills if r.id not in started]
        return bool(started)

    def _loaded(self) -> None:
        """Loads done by now: their requests wait again at the queue's head, their loaded blocks cached on the GPU
        (freed, as vLLM frees a waiting request's blocks: the next admission reuses them as its GPU hit)."""
        done = []
        while self._loading and self._loading[0][0] <= self.now:
            done.append(heapq.heappop(self._loading)[2])
        kv = self.kv
        assert kv is not None
        for r in reversed(done):
            kv.release(r)
            r.blocks = 0
            r.prefilled = r.computed = 0
            self.queue.push_front(r)
        self.free_blocks = kv.free

    def _idle(self, until: float) -> bool:
        """Nothing can run before the next load is done: idle to it if it is done before `until` (returns True),
        else stop at it, the clock an arrival before it takes back (`add`)."""
        if self._idle_from is None:
            self._idle_from = self.now
        ready = self._loading[0][0]
        self.now = max(self.now, ready)
        return ready < until

    def _admit(self, r: Request) -> None:
        need = (self._reserve or blocks_for(r.num_prompt, self.block_size)) - r.blocks
        if len(self.running) >= self.max_num_seqs or need > self.free_blocks:
            raise RuntimeError(f"{self.policy.name}: admitted request {r.id} beyond max_num_seqs or KV")
        self.queue.remove(r)
        self.free_blocks -= need
        if self.kv is not None:
            self.kv.take(need)
        r.blocks += need
        r.state = RUNNING
        self.running.append(r)

    def _preempt(self, plan: Plan) -> None:
        for r in plan.preempt:
            if r.state != RUNNING:
                raise RuntimeError(f"{self.policy.name}: preempted request {r.id} that is not running")
            self.running.remove(r)
            self._release(r)
            r.prefilled = r.computed = 0
            r.is_decoding = False
            r.num_prompt = r.prompt_len + r.generated
            r.preemptions += 1
            r.state = WAITING
            self.queue.push_front(r)

    def _reject(self, plan: Plan) -> None:
        for r, reason in plan.reject:
            self.queue.remove(r)
            if self.kv is not None:
                self.kv.forget(r)
            r.state, r.reason = REJECTED, reason
            if self.on_done is not None:
                self.on_done(r, self.clock)

    def _close(self, pending: list[Request], clock: float) -> None:
        for r in pending:
            if r.state in (WAITING, RUNNING):
                r.reason = (
                    "not arrived before the time limit"
                    if r.arrival > clock
                    else "time limit reached"
                    if self.cfg.time_limit is not None and clock >= self.cfg.time_limit
                    else "the policy could not schedule it"
                )
                r.state = UNFINISHED

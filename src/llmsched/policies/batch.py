"""Budget accounting every policy shares while it builds a plan: tokens, sequences and free KV blocks, admission,
chunking and preemption by recompute. Each policy file holds only its own order on top of these."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from llmsched.policies.interface import NO_HIT, EngineView, PrefixHit, Req
from llmsched.policies.plan import Plan


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def needs_block(r: Req, block_size: int) -> bool:
    """This decode's next token starts a new KV block: every block it holds is full."""
    return r.computed >= r.blocks * block_size


class BatchBuilder:
    """Budget accounting shared by all policies: tokens, sequences and free KV blocks while a plan is built.

    Checks mirror the reference engines: a new request needs its whole prompt's blocks (or max_model_len
    for reserving policies) plus the watermark; a decode needs one block when its last block is full and, under
    Sarathi-Serve's rule (`sarathi_rules`), at least one free block even when it needs none. Reserving policies hold
    every block their decodes will use, and the reference's ports of them never check a decode's slot.

    With prefix caching (`view.enable_prefix_caching`) admission reuses the view's `prefix_hit`: the first chunk is
    at most the uncached part, and the hit blocks running requests hold cost no free block. A preemption frees only
    the victim's blocks no other request holds. Within one plan the engine preempts before it admits, so the two
    are counted so that the plan never promises blocks the engine lacks: an admission after a preemption is charged as
    if none of its hit were held, and a preemption after admissions is credited less the hit blocks those admissions
    took as held (the victim may have been their only holder).
    """

    def __init__(
        self, view: EngineView, budget: int | None = None, reserve_max_len: bool = False, sarathi_rules: bool = False
    ) -> None:
        self.view = view
        self.budget = view.token_budget if budget is None else budget
        self.tokens = 0
        self.free = view.free_blocks
        self.seqs = len(view.running)
        self.reserve_max_len = reserve_max_len
        self.decode_floor = 1 if sarathi_rules and not reserve_max_len else 0  # free blocks any decode needs
        self.plan = Plan()
        self.preempted: set[int] = set()
        self.caching = view.enable_prefix_caching
        self._held_hits = 0  # hit blocks this plan's admissions took as held by running requests

    @property
    def room(self) -> int:
        return self.budget - self.tokens

    def decode_blocks(self, r: Req) -> int:
        return 1 if needs_block(r, self.view.block_size) else 0

    def decode_fits(self, need: int) -> bool:
        """KV allows a decode that takes `need` new blocks (0 or 1)."""
        return max(need, self.decode_floor) <= self.free

    def add_decode(self, r: Req, need: int | None = None) -> bool:
        """One decode token; `need` is `decode_blocks(r)` when the caller has it already."""
        if need is None:
            need = self.decode_blocks(r)
        if self.room < 1 or not self.decode_fits(need):
            return False
        self.free -= need
        self.tokens += 1
        self.plan.decodes.append(r)
        return True

    def add_decode_preempting(self, r: Req, victim: Callable[[BatchBuilder], Req | None]) -> bool:
        """One decode token; while KV lacks the block it needs, preempt `victim(self)` by recompute, or the decode
        itself when there is none. False if the decode did not get its token (no room, or preempted)."""
        if self.add_decode(r):  # the common case: the block it needs (if any) is free
            return True
        if self.room < 1:
            return False
        need = self.decode_blocks(r)
        while not self.decode_fits(need):
            v = victim(self)
            if v is None:
                self.preempt(r)
                return False
            self.preempt(v)
        return self.add_decode(r, need)

    def add_chunk(self, r: Req, limit: int | None = None) -> int:
        """Next chunk of a request that already holds its blocks; returns the tokens taken (0: none)."""
        n = min(r.remaining_prefill, self.room, limit if limit is not None else self.room)
        if n > 0:
            self.tokens += n
            self.plan.prefills.append((r, n))
        return n

    def hit(self, r: Req) -> PrefixHit:
        """What admitting waiting request `r` now would reuse (nothing without prefix caching)."""
        return self.view.prefix_hit(r) if self.caching else NO_HIT

    def admission_blocks(self, r: Req, hit: PrefixHit = NO_HIT) -> int:
        tokens = self.view.max_model_len if self.reserve_max_len else r.num_prompt
        held = hit.held_blocks if not self.plan.preempt else 0
        return blocks_for(tokens, self.view.block_size) - held

    def can_admit(self, r: Req, hit: PrefixHit = NO_HIT) -> bool:
        return (
            self.seqs < self.view.max_num_seqs
            and self.free - self.admission_blocks(r, hit) >= self.view.watermark_blocks
        )

    def never_fits(self, r: Req) -> str:
        """A reason if this request can never be admitted on this engine, else ''."""
        if r.num_prompt > self.view.max_model_len:
            return f"prompt of {r.num_prompt} tokens exceeds max_model_len {self.view.max_model_len}"
        if self.admission_blocks(r) > self.view.total_blocks - self.view.watermark_blocks:
            return f"needs {self.admission_blocks(r)} KV blocks, the pool has {self.view.total_blocks}"
        return ""

    def admit(self, r: Req, limit: int | None = None, hit: PrefixHit | None = None) -> int:
        """Admit a waiting request and schedule its first chunk (after its cached prefix); 0 if it does not fit
        now. `hit`: `self.hit(r)` when the caller has it already."""
        if hit is None:
            hit = self.hit(r)
        if self.room < 1 or not self.can_admit(r, hit):
            return 0
        cost = self.admission_blocks(r, hit)
        self.free -= cost
        self.seqs += 1
        if not self.plan.preempt:
            self._held_hits += hit.held_blocks
        n = min(r.remaining_prefill - hit.tokens, self.room, limit if limit is not None else self.room)
        if n > 0:
            self.tokens += n
            self.plan.prefills.append((r, n))
        return n

    def admit_waiting(self, queue: Iterable[Req], whole: bool = False, limit: int | None = None) -> None:
        """Admit from the head of `queue` until one does not fit (head-of-line blocking, as the reference
        engines). Requests that can never fit are rejected rather than left to block the queue.
        whole: admit only prompts that fit the remaining budget entirely (no chunking). A full batch or engine
        looks at no waiting request, as vLLM's scheduler (a request that can never fit is rejected later)."""
        if self.tokens >= self.budget or self.seqs >= self.view.max_num_seqs:
            return
        for r in queue:
            if r.id in self.preempted:
                continue
            reason = self.never_fits(r)
            if reason:
                self.plan.reject.append((r, reason))
                continue
            hit = self.hit(r)
            if whole and r.remaining_prefill - hit.tokens > self.room:
                return
            if not self.admit(r, limit, hit):
                return

    def preempt(self, r: Req) -> None:
        if self.caching:
            self.free += max(0, self.view.exclusive_blocks(r) - self._held_hits)
        else:
            self.free += r.blocks
        self.seqs -= 1
        self.preempted.add(r.id)
        self.plan.preempt.append(r)


def admits_nothing(view: EngineView) -> bool:
    """No waiting request can be admitted, whatever KV is free: none waits, or max_num_seqs requests run."""
    return not view.waiting or len(view.running) >= view.max_num_seqs


def newest_of(queue: deque[Req]) -> Callable[[BatchBuilder], Req | None]:
    """The preemption victim of vLLM and Sarathi-Serve: the newest running request not yet scheduled (taken off the
    end of `queue`)."""
    return lambda _: queue.pop() if queue else None


def add_decodes_preempting(b: BatchBuilder, running: Sequence[Req]) -> None:
    """Give every running decode its token, in the given (FCFS) order. When KV runs out, preempt the
    newest running request (the end of the list) by recompute, as vLLM v0 and Sarathi-Serve do; if none
    is left but the decode itself, preempt it."""
    decodes = [r for r in running if r.is_decoding]
    bs = b.view.block_size
    need = sum([r.computed >= r.blocks * bs for r in decodes])  # needs_block, inlined: this runs every batch
    # The common case: everything fits, no preemption (with a block to spare, every decode saw one free)
    if len(decodes) <= b.room and need + b.decode_floor <= b.free:
        b.plan.decodes.extend(decodes)
        b.tokens += len(decodes)
        b.free -= need
        return
    queue = deque(running)
    newest = newest_of(queue)
    while queue and b.room > 0:
        r = queue.popleft()
        if r.is_decoding:
            b.add_decode_preempting(r, newest)


def fill_decode_first(b: BatchBuilder, view: EngineView, queue: Iterable[Req]) -> Plan:
    """Stall-free batching: every running decode, then prefills in progress (in admission order), then new
    requests from `queue`, each up to what the budget, KV and max_num_seqs leave."""
    add_decodes_preempting(b, view.running)
    for r in view.running:
        if not r.is_decoding and r.id not in b.preempted and b.room > 0:
            b.add_chunk(r)
    b.admit_waiting(queue)
    return b.plan
